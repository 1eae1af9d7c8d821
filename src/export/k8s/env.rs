//! A service's `environment:` as container env vars, with the one rule the
//! export must never break: a value that comes from a secret (a variable
//! `[app.secrets] generate` lists, or one set in the project's `.env` or
//! `[app] env_files`) is a `secretKeyRef`, never text in a manifest.
//!
//! Compose interpolates `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `$VAR` and `$$`. Here a variable from a secret becomes a reference (a
//! value that only *embeds* it, like `postgresql://app:${PW}@db/app`, gets
//! the variable first from the Secret and then `$(PW)`, Kubernetes' own
//! expansion); any other variable takes its default, or nothing (as compose
//! would, with a note).

use std::collections::BTreeSet;

/// Where secret variables live: each Secret's name and its keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretKeys {
    /// `(Secret name, keys)`, the first holding a key wins.
    pub sources: Vec<(String, BTreeSet<String>)>,
}

impl SecretKeys {
    pub fn secret_of(&self, key: &str) -> Option<&str> {
        self.sources
            .iter()
            .find(|(_, keys)| keys.contains(key))
            .map(|(name, _)| name.as_str())
    }
}

/// One container env var.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvVar {
    Literal {
        name: String,
        value: String,
    },
    FromSecret {
        name: String,
        secret: String,
        key: String,
    },
}

impl EnvVar {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            EnvVar::Literal { name, value } => serde_json::json!({ "name": name, "value": value }),
            EnvVar::FromSecret { name, secret, key } => serde_json::json!({
                "name": name,
                "valueFrom": { "secretKeyRef": { "name": secret, "key": key } },
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var {
        name: String,
        default: Option<String>,
    },
}

/// Splits a compose value into text and variables.
fn pieces(value: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            text.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                text.push_str(&rest[at..]);
                rest = "";
                break;
            };
            let inner = &body[..end];
            let (name, default) = match inner.find([':', '-', '?', '+']) {
                Some(i) => {
                    let op = &inner[i..];
                    let default = op
                        .strip_prefix(":-")
                        .or_else(|| op.strip_prefix('-'))
                        .map(str::to_string);
                    (&inner[..i], default)
                }
                None => (inner, None),
            };
            flush(&mut text, &mut out);
            out.push(Piece::Var {
                name: name.to_string(),
                default,
            });
            rest = &body[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                text.push('$');
            } else {
                flush(&mut text, &mut out);
                out.push(Piece::Var {
                    name: after[..len].to_string(),
                    default: None,
                });
            }
            rest = &after[len..];
        }
    }
    text.push_str(rest);
    flush(&mut text, &mut out);
    out
}

fn flush(text: &mut String, out: &mut Vec<Piece>) {
    if !text.is_empty() {
        out.push(Piece::Text(std::mem::take(text)));
    }
}

/// A value with no secret in it, interpolated as compose would with nothing
/// set but defaults (an image tag `postgres:${PG:-16}`). `Err`: it names a
/// secret (never resolved into a manifest).
pub fn plain(value: &str, secrets: &SecretKeys) -> Result<String, String> {
    let mut out = String::new();
    for piece in pieces(value) {
        match piece {
            Piece::Text(t) => out.push_str(&t),
            Piece::Var { name, default } => {
                if secrets.secret_of(&name).is_some() {
                    return Err(name);
                }
                out.push_str(default.as_deref().unwrap_or(""));
            }
        }
    }
    Ok(out)
}

/// The container env of `environment` (`(name, compose value)`, in order;
/// `None`: `- NAME` without a value, taken from the environment compose ran
/// in). Notes say what took a default or nothing.
pub fn container_env(
    environment: &[(String, Option<String>)],
    secrets: &SecretKeys,
    notes: &mut Vec<String>,
) -> Vec<EnvVar> {
    let mut helpers: Vec<EnvVar> = Vec::new();
    let mut vars = Vec::new();
    let names: BTreeSet<&str> = environment.iter().map(|(n, _)| n.as_str()).collect();
    for (name, value) in environment {
        let value = value.clone().unwrap_or_else(|| format!("${{{name}}}"));
        let pieces = pieces(&value);
        // One secret variable and nothing else: a reference of its own.
        if let [Piece::Var { name: var, .. }] = pieces.as_slice() {
            if let Some(secret) = secrets.secret_of(var) {
                vars.push(EnvVar::FromSecret {
                    name: name.clone(),
                    secret: secret.to_string(),
                    key: var.clone(),
                });
                continue;
            }
        }
        let mut out = String::new();
        for piece in pieces {
            match piece {
                // `$(` is Kubernetes' own expansion: kept as text with `$$(`.
                Piece::Text(t) => out.push_str(&t.replace("$(", "$$(")),
                Piece::Var { name: var, default } => match secrets.secret_of(&var) {
                    Some(secret) => {
                        let helper = EnvVar::FromSecret {
                            name: var.clone(),
                            secret: secret.to_string(),
                            key: var.clone(),
                        };
                        if !names.contains(var.as_str()) && !helpers.contains(&helper) {
                            helpers.push(helper);
                        }
                        out.push_str(&format!("$({var})"));
                    }
                    None => {
                        match &default {
                            Some(d) => out.push_str(d),
                            None => notes.push(format!(
                                "{name}: ${{{var}}} is set nowhere vpsup knows (not generated, not in an env file): it is empty here, as compose would leave it"
                            )),
                        }
                    }
                },
            }
        }
        vars.push(EnvVar::Literal {
            name: name.clone(),
            value: out,
        });
    }
    helpers.sort_by(|a, b| env_name(a).cmp(env_name(b)));
    // A variable the value refers to must come first (Kubernetes expands
    // `$(X)` only from earlier entries): references before literals.
    let (refs, literals): (Vec<EnvVar>, Vec<EnvVar>) = vars
        .into_iter()
        .partition(|v| matches!(v, EnvVar::FromSecret { .. }));
    helpers.into_iter().chain(refs).chain(literals).collect()
}

fn env_name(var: &EnvVar) -> &str {
    match var {
        EnvVar::Literal { name, .. } | EnvVar::FromSecret { name, .. } => name,
    }
}

/// A compose `environment:` (mapping or `KEY=value` list) as pairs, in order.
pub fn environment_of(definition: &serde_json::Value) -> Vec<(String, Option<String>)> {
    use serde_json::Value;
    match definition.get("environment") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                };
                (k.clone(), value)
            })
            .collect(),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (item.to_string(), None),
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> SecretKeys {
        SecretKeys {
            sources: vec![
                (
                    "doctor-generated".into(),
                    BTreeSet::from(["POSTGRES_PASSWORD".to_string(), "SECRET_KEY".to_string()]),
                ),
                (
                    "doctor-env".into(),
                    BTreeSet::from(["GREETING".to_string()]),
                ),
            ],
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    #[test]
    fn a_secret_is_a_reference_never_its_value() {
        let mut notes = Vec::new();
        let vars = container_env(
            &env(&[
                ("SECRET_KEY", "${SECRET_KEY}"),
                ("GREETING", "${GREETING:-hello}"),
                ("MODE", "production"),
            ]),
            &secrets(),
            &mut notes,
        );
        assert_eq!(
            vars,
            [
                EnvVar::FromSecret {
                    name: "SECRET_KEY".into(),
                    secret: "doctor-generated".into(),
                    key: "SECRET_KEY".into()
                },
                EnvVar::FromSecret {
                    name: "GREETING".into(),
                    secret: "doctor-env".into(),
                    key: "GREETING".into()
                },
                EnvVar::Literal {
                    name: "MODE".into(),
                    value: "production".into()
                },
            ]
        );
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn a_value_embedding_a_secret_expands_it_in_the_cluster() {
        let mut notes = Vec::new();
        let vars = container_env(
            &env(&[(
                "DATABASE_URL",
                "postgresql://app:${POSTGRES_PASSWORD}@db:5432/app",
            )]),
            &secrets(),
            &mut notes,
        );
        assert_eq!(
            vars,
            [
                EnvVar::FromSecret {
                    name: "POSTGRES_PASSWORD".into(),
                    secret: "doctor-generated".into(),
                    key: "POSTGRES_PASSWORD".into()
                },
                EnvVar::Literal {
                    name: "DATABASE_URL".into(),
                    value: "postgresql://app:$(POSTGRES_PASSWORD)@db:5432/app".into()
                },
            ]
        );
    }

    #[test]
    fn unset_variables_take_their_default_or_nothing_with_a_note() {
        let mut notes = Vec::new();
        let vars = container_env(
            &env(&[
                ("A", "${X:-fallback}"),
                ("B", "x${NOPE}y"),
                ("C", "$$HOME and $(x)"),
            ]),
            &secrets(),
            &mut notes,
        );
        let values: Vec<String> = vars
            .iter()
            .map(|v| match v {
                EnvVar::Literal { value, .. } => value.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(values, ["fallback", "xy", "$HOME and $$(x)"]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("${NOPE}"));
    }

    #[test]
    fn plain_values_refuse_secrets() {
        assert_eq!(
            plain("postgres:${PG:-16}", &secrets()).unwrap(),
            "postgres:16"
        );
        assert_eq!(
            plain("x-${SECRET_KEY}", &secrets()).unwrap_err(),
            "SECRET_KEY"
        );
    }
}
