//! A service's `environment:` as container env vars, with the one rule the
//! export must never break: a value that comes from a secret (a variable
//! `[app.secrets] generate` lists, or one set in the project's `.env` or
//! `[app] env_files`) is a `secretKeyRef`, never text in a manifest.
//!
//! Values are interpolated as compose does it (`deploy::interpolate`, with
//! every secret set, its value unknown here). A variable from a secret
//! becomes a reference (a value that only *embeds* it, like
//! `postgresql://app:${PW}@db/app`, gets the variable first from the
//! Secret and then `$(PW)`, Kubernetes' own expansion); any other variable
//! takes its default, or nothing (as compose would, with a note).

use std::collections::BTreeSet;

use crate::deploy::interpolate::{Env, Piece, Pieces};

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

    /// `text` interpolated as compose does it, each secret a place: a
    /// secret is set and not empty, its value unknown here. Errors never
    /// show the text.
    pub fn pieces(&self, text: &str) -> Result<Pieces, String> {
        let mut env = Env::default();
        for key in self.sources.iter().flat_map(|(_, keys)| keys) {
            env.set_secret(key);
        }
        env.pieces(text)
    }
}

/// The note for a variable set nowhere, read by `place` (an env var, `command`).
pub fn unset_note(place: &str, var: &str) -> String {
    format!(
        "{place}: ${{{var}}} is set nowhere vpsup knows (not generated, not in an env file): it is empty here, as compose would leave it"
    )
}

/// Text for a field kubelet expands (`env` values, `command`, `args`, and
/// an exec probe, with the container's plain values): `(text, literal)`
/// parts joined, each literal `$` that starts `$$` or `$(` doubled, as
/// kubelet reads `$$` as `$` and `$(X)` as X's value.
pub fn kubelet_text(parts: &[(String, bool)]) -> String {
    let chars: Vec<(char, bool)> = parts
        .iter()
        .flat_map(|(text, literal)| text.chars().map(move |c| (c, *literal)))
        .collect();
    let mut out = String::new();
    for (i, &(c, literal)) in chars.iter().enumerate() {
        out.push(c);
        if literal && c == '$' && matches!(chars.get(i + 1), Some(('$' | '(', _))) {
            out.push('$');
        }
    }
    out
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

/// A value with no secret in it, interpolated as compose would with nothing
/// set but the secrets (an image tag `postgres:${PG:-16}`). `Err` says what
/// is wrong: it names a secret (never resolved into a manifest), or is not
/// compose's syntax.
pub fn plain(value: &str, secrets: &SecretKeys) -> Result<String, String> {
    let mut out = String::new();
    for piece in secrets
        .pieces(value)
        .map_err(|why| format!("is not compose's syntax: {why}"))?
        .pieces
    {
        match piece {
            Piece::Text(t) => out.push_str(&t),
            Piece::Secret(name) => return Err(format!("names the secret {name}")),
        }
    }
    Ok(out)
}

/// The container env of `environment` (`(name, compose value)`, in order;
/// `None`: `- NAME` without a value, taken from the environment compose ran
/// in). Notes say what took nothing. `Err`: a value compose would refuse.
pub fn container_env(
    environment: &[(String, Option<String>)],
    secrets: &SecretKeys,
    notes: &mut Vec<String>,
) -> Result<Vec<EnvVar>, String> {
    let mut helpers: Vec<EnvVar> = Vec::new();
    let mut vars = Vec::new();
    let names: BTreeSet<&str> = environment.iter().map(|(n, _)| n.as_str()).collect();
    for (name, value) in environment {
        let value = value.clone().unwrap_or_else(|| format!("${{{name}}}"));
        let Pieces { pieces, unset } = secrets
            .pieces(&value)
            .map_err(|why| format!("environment {name}: {why}"))?;
        notes.extend(unset.iter().map(|var| unset_note(name, var)));
        // One secret variable and nothing else: a reference of its own.
        if let [Piece::Secret(var)] = pieces.as_slice() {
            if let Some(secret) = secrets.secret_of(var) {
                vars.push(EnvVar::FromSecret {
                    name: name.clone(),
                    secret: secret.to_string(),
                    key: var.clone(),
                });
                continue;
            }
        }
        let mut parts = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Text(t) => parts.push((t, true)),
                Piece::Secret(var) => {
                    if let Some(secret) = secrets.secret_of(&var) {
                        let helper = EnvVar::FromSecret {
                            name: var.clone(),
                            secret: secret.to_string(),
                            key: var.clone(),
                        };
                        if !names.contains(var.as_str()) && !helpers.contains(&helper) {
                            helpers.push(helper);
                        }
                    }
                    parts.push((format!("$({var})"), false));
                }
            }
        }
        vars.push(EnvVar::Literal {
            name: name.clone(),
            value: kubelet_text(&parts),
        });
    }
    helpers.sort_by(|a, b| env_name(a).cmp(env_name(b)));
    // A variable the value refers to must come first (Kubernetes expands
    // `$(X)` only from earlier entries): references before literals.
    let (refs, literals): (Vec<EnvVar>, Vec<EnvVar>) = vars
        .into_iter()
        .partition(|v| matches!(v, EnvVar::FromSecret { .. }));
    Ok(helpers.into_iter().chain(refs).chain(literals).collect())
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
        )
        .unwrap();
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
        )
        .unwrap();
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
                ("C", "$$HOME and $$(x) $$$$"),
            ]),
            &secrets(),
            &mut notes,
        )
        .unwrap();
        let values: Vec<String> = vars
            .iter()
            .map(|v| match v {
                EnvVar::Literal { value, .. } => value.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        // Kubelet reads `$$` as `$` and `$(x)` as x's value: both escaped.
        assert_eq!(values, ["fallback", "xy", "$HOME and $$(x) $$$"]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("${NOPE}"));
    }

    /// What compose would refuse is refused, naming the variable, never
    /// showing the value (it may be a password written in the file).
    #[test]
    fn a_value_compose_refuses_is_an_error_without_the_value() {
        let err =
            container_env(&env(&[("PW", "hunter2$(x)")]), &secrets(), &mut Vec::new()).unwrap_err();
        assert!(err.starts_with("environment PW: "), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_literal_dollar_before_a_reference_stays_a_dollar() {
        let parts = [("a$".to_string(), true), ("$(PW)".to_string(), false)];
        assert_eq!(kubelet_text(&parts), "a$$$(PW)");
    }

    #[test]
    fn plain_values_refuse_secrets() {
        assert_eq!(
            plain("postgres:${PG:-16}", &secrets()).unwrap(),
            "postgres:16"
        );
        assert_eq!(
            plain("x-${SECRET_KEY}", &secrets()).unwrap_err(),
            "names the secret SECRET_KEY"
        );
    }
}
