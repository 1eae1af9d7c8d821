//! Variables and Tera: rendering task arguments and templates, evaluating `when`.
//!
//! The context a template sees:
//! - every play variable and command-supplied variable at the top level;
//! - `host` (name, address, user, port), `config` (vpsup.toml), `facts` (the
//!   host facts, once probed) and `results` (registered task results).

use serde_json::{Map, Value};
use tera::{Context, Tera};

use super::assets::Asset;
use crate::facts::HostFacts;

pub struct Renderer {
    tera: Tera,
}

/// Everything a template or expression can refer to, for one host.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    /// Play vars overlaid by command vars, plus `host` and `config`.
    pub base: Map<String, Value>,
    pub facts: Option<Value>,
    pub results: Map<String, Value>,
}

impl Vars {
    pub fn with_facts(&mut self, facts: &HostFacts) {
        self.facts = serde_json::to_value(facts).ok();
    }

    fn all(&self) -> Value {
        let mut all = self.base.clone();
        if let Some(facts) = &self.facts {
            all.insert("facts".to_string(), facts.clone());
        }
        all.insert("results".to_string(), Value::Object(self.results.clone()));
        Value::Object(all)
    }

    fn context(&self) -> Result<Context, String> {
        Context::from_value(self.all()).map_err(|e| chain(&e))
    }
}

impl Renderer {
    /// Loads the templates; a template with a syntax error fails here, naming it.
    pub fn new<'a>(
        templates: impl IntoIterator<Item = (&'a String, &'a Asset)>,
    ) -> Result<Renderer, String> {
        let mut tera = Tera::default();
        tera.autoescape_on(vec![]); // we write config files, not HTML
        for (name, asset) in templates {
            tera.add_raw_template(name, &asset.text)
                .map_err(|e| format!("{}: {}", asset.origin, chain(&e)))?;
        }
        Ok(Renderer { tera })
    }

    pub fn template(&self, name: &str, vars: &Vars) -> Result<String, String> {
        if !self.tera.get_template_names().any(|n| n == name) {
            return Err(format!(
                "no template named {name:?} (built-in or in the project's templates/)"
            ));
        }
        self.tera
            .render(name, &vars.context()?)
            .map_err(|e| format!("template {name}: {}", chain(&e)))
    }

    /// Renders every string in `args` that contains `{{` or `{%`. A string that
    /// is only `{{ name.path }}` naming a list or a map becomes that value (a
    /// list stays a list, as in Ansible); everything else renders to text.
    pub fn args(&self, args: &Value, vars: &Vars) -> Result<Value, String> {
        let context = vars.context()?;
        render_value(args, &vars.all(), &context)
    }

    /// Evaluates a `when:` expression (Tera syntax: `facts.memory_mib < 2048 and not x`).
    pub fn when(&self, expression: &str, vars: &Vars) -> Result<bool, String> {
        let source = format!("{{% if {expression} %}}true{{% else %}}false{{% endif %}}");
        let out = Tera::one_off(&source, &vars.context()?, false)
            .map_err(|e| format!("when: {expression}: {}", chain(&e)))?;
        Ok(out == "true")
    }
}

/// Whether `args` refers to `name` (e.g. `facts`) inside a template expression;
/// with an empty `name`, whether it has any template expression at all.
pub fn mentions(args: &Value, name: &str) -> bool {
    match args {
        Value::String(s) => is_template(s) && s.contains(name),
        Value::Array(items) => items.iter().any(|v| mentions(v, name)),
        Value::Object(map) => map.values().any(|v| mentions(v, name)),
        _ => false,
    }
}

fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

fn render_value(value: &Value, all: &Value, context: &Context) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) if is_template(s) => match whole_variable(s, all) {
            Some(v) if v.is_array() || v.is_object() => v.clone(),
            _ => Value::String(
                Tera::one_off(s, context, false).map_err(|e| format!("{s:?}: {}", chain(&e)))?,
            ),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(v, all, context))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_value(v, all, context)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// The value of `{{ a.b.c }}` when `s` is exactly that (and it exists).
fn whole_variable<'v>(s: &str, all: &'v Value) -> Option<&'v Value> {
    let path = s.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let simple = |part: &str| {
        !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    if !path.split('.').all(simple) {
        return None;
    }
    path.split('.').try_fold(all, |v, key| match v {
        Value::Object(map) => map.get(key),
        Value::Array(items) => items.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// Tera's errors hide the useful part in their sources, and name one-off
/// templates by an internal name the user never wrote.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts
        .join(": ")
        .replace("Failed to render '__tera_one_off': ", "")
        .replace(" while rendering '__tera_one_off'", "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn renderer(templates: &[(&str, &str)]) -> Result<Renderer, String> {
        let map: BTreeMap<String, Asset> = templates
            .iter()
            .map(|(n, t)| {
                (
                    n.to_string(),
                    Asset {
                        origin: format!("templates/{n}"),
                        text: t.to_string(),
                    },
                )
            })
            .collect();
        Renderer::new(&map)
    }

    fn vars() -> Vars {
        let mut v = Vars::default();
        v.base.insert("admin_user".into(), json!("deploy"));
        v.base.insert("ports".into(), json!([22, 80]));
        v.with_facts(&crate::modules::testing::facts());
        v.results
            .insert("probe".into(), json!({"changed": true, "rc": 0}));
        v
    }

    #[test]
    fn args_are_rendered_recursively_and_plain_values_kept() {
        let r = renderer(&[]).unwrap();
        let args = json!({"name": "{{ admin_user }}", "groups": ["sudo", "{{ facts.os_id }}"], "n": 5, "plain": "x"});
        assert_eq!(
            r.args(&args, &vars()).unwrap(),
            json!({"name": "deploy", "groups": ["sudo", "debian"], "n": 5, "plain": "x"})
        );
        let err = r.args(&json!({"x": "{{ nope }}"}), &vars()).unwrap_err();
        assert!(err.contains("nope") && !err.contains("__tera"), "{err}");
        // A lone list variable stays a list; anything else is text.
        assert_eq!(
            r.args(&json!({"a": "{{ ports }}", "b": "{{ ports.1 }}", "c": "{{ ports.0 }}/tcp", "d": "{{admin_user}}"}), &vars())
                .unwrap(),
            json!({"a": [22, 80], "b": "80", "c": "22/tcp", "d": "deploy"})
        );
        let err = r
            .args(&json!({"x": "{{ nope.deeper }}"}), &vars())
            .unwrap_err();
        assert!(err.contains("nope") && !err.contains("__tera"), "{err}");
    }

    #[test]
    fn when_expressions() {
        let r = renderer(&[]).unwrap();
        let v = vars();
        assert!(r.when("facts.os_id == \"debian\"", &v).unwrap());
        assert!(r
            .when("facts.memory_mib < 2048 and 80 in ports", &v)
            .unwrap());
        assert!(!r.when("results.probe.changed == false", &v).unwrap());
        assert!(
            r.when("not facts.docker", &v).unwrap(),
            "a null fact is falsy"
        );
        assert!(r.when("facts.os_id ==", &v).is_err());
    }

    #[test]
    fn templates_render_with_the_same_context_and_errors_name_the_template() {
        let r =
            renderer(&[("motd.tera", "Hi {{ admin_user }} on {{ facts.hostname }}\n")]).unwrap();
        assert_eq!(
            r.template("motd.tera", &vars()).unwrap(),
            "Hi deploy on vps\n"
        );
        assert!(r
            .template("missing.tera", &vars())
            .unwrap_err()
            .contains("no template named"));
        let err = renderer(&[("bad.tera", "{% if %}")]).err().unwrap();
        assert!(err.starts_with("templates/bad.tera: "), "{err}");
    }

    #[test]
    fn mentions_looks_only_inside_expressions() {
        assert!(mentions(&json!({"a": ["{{ facts.arch }}"]}), "facts"));
        assert!(!mentions(
            &json!({"a": "facts are plain text here"}),
            "facts"
        ));
    }
}
