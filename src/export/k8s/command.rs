//! A service's `entrypoint`, `command` and healthcheck `test` as the
//! container and its probe get them, under `env`'s rule: a secret's value
//! is never text in a manifest.
//!
//! Compose interpolates them when it reads the file (`$$` is a `$`,
//! `${VAR:-default}`, ...: `deploy::interpolate`) and splits a string
//! `command` or `entrypoint` into words, with no shell. Kubelet then reads
//! `$(VAR)` in `command` and `args` as the container's variable, in an exec
//! probe only as one of its plain values, and `$$` as `$` in all three: the
//! text compose would pass is escaped for it (`env::kubelet_text`). A
//! variable set nowhere is empty, as compose leaves it, with a note. A
//! secret (generated, or from an env file) is, when the container's env has
//! it under its own name (`NAME: ${NAME}` in `environment`):
//! - in `command`/`args`: `$(NAME)`, which kubelet expands;
//! - in a CMD-SHELL test: `${NAME}`, which the container's shell expands,
//!   quoted so that it stays one word as the text around it is quoted;
//! - in a CMD test: refused (nothing would expand it there);
//!
//! and refused when the env does not have it, saying what to add.

use serde_json::Value;

use super::env::{kubelet_text, unset_note, EnvVar, SecretKeys};
use super::probes::Test;
use crate::deploy::interpolate::Piece;

const TEST: &str = "healthcheck test";

/// The service whose words these are.
pub struct Context<'a> {
    pub service: &'a str,
    pub secrets: &'a SecretKeys,
    /// The container's env (`env::container_env`).
    pub env: &'a [EnvVar],
}

impl Context<'_> {
    /// Whether the container's variable `var` holds the secret `var`.
    fn has(&self, var: &str) -> bool {
        self.env
            .iter()
            .any(|v| matches!(v, EnvVar::FromSecret { name, key, .. } if name == var && key == var))
    }

    /// `text` of `field` interpolated; what is set nowhere becomes a note.
    fn pieces(
        &self,
        field: &str,
        text: &str,
        notes: &mut Vec<String>,
    ) -> Result<Vec<Piece>, String> {
        let pieces = self
            .secrets
            .pieces(text)
            .map_err(|why| format!("service {}: its {field}: {why}", self.service))?;
        for var in &pieces.unset {
            let note = unset_note(field, var);
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
        Ok(pieces.pieces)
    }

    fn not_in_env(&self, field: &str, var: &str, read_as: &str) -> String {
        format!(
            "service {s}: its {field} uses the secret {var} (never written into a manifest): give {s} `{var}: ${{{var}}}` in its environment, and the {field} reads it from there as {read_as}",
            s = self.service
        )
    }
}

/// `entrypoint` or `command` (`field`) as the container's `command` or
/// `args`; `None` for a null.
pub fn words(
    field: &str,
    value: &Value,
    cx: &Context,
    notes: &mut Vec<String>,
) -> Result<Option<Vec<String>>, String> {
    let words = match value {
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let text = item
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| item.to_string());
                cx.pieces(field, &text, notes)
            })
            .collect::<Result<Vec<_>, _>>()?,
        // Interpolated first, then split: as compose does.
        Value::String(line) => split(&cx.pieces(field, line, notes)?)
            .map_err(|why| format!("service {}: its {field} {why}", cx.service))?,
        _ => return Ok(None),
    };
    let mut out = Vec::new();
    for word in words {
        let mut parts = Vec::new();
        for piece in word {
            match piece {
                Piece::Text(text) => parts.push((text, true)),
                Piece::Secret(var) if cx.has(&var) => parts.push((format!("$({var})"), false)),
                Piece::Secret(var) => return Err(cx.not_in_env(field, &var, &format!("$({var})"))),
            }
        }
        out.push(kubelet_text(&parts));
    }
    Ok(Some(out))
}

/// A healthcheck test as an exec probe's command.
pub fn probe(test: &Test, cx: &Context, notes: &mut Vec<String>) -> Result<Vec<String>, String> {
    match test {
        Test::Exec(words) => {
            let mut out = Vec::new();
            for word in words {
                let mut parts = Vec::new();
                for piece in cx.pieces(TEST, word, notes)? {
                    match piece {
                        Piece::Text(text) => parts.push((text, true)),
                        Piece::Secret(var) => return Err(format!(
                            "service {s}: its {TEST} uses the secret {var} (never written into a manifest), and nothing expands a secret in an exec-form (CMD) test on Kubernetes: make it CMD-SHELL, reading the container's variable (\"$${var}\" in compose), with `{var}: ${{{var}}}` in {s}'s environment",
                            s = cx.service
                        )),
                    }
                }
                out.push(kubelet_text(&parts));
            }
            Ok(out)
        }
        Test::Shell(script) => {
            let mut parts = Vec::new();
            let mut quotes = Quotes::default();
            for piece in cx.pieces(TEST, script, notes)? {
                match piece {
                    Piece::Text(text) => {
                        quotes.read(&text);
                        parts.push((text, true));
                    }
                    Piece::Secret(var) if !cx.has(&var) => {
                        return Err(cx.not_in_env(TEST, &var, &format!("${var}")))
                    }
                    Piece::Secret(var) => match quotes.reference(&var) {
                        Some(reference) => parts.push((reference, false)),
                        None => return Err(format!(
                            "service {}: its {TEST} has the secret {var} right after a `\\`: the shell cannot read it there; drop the backslash",
                            cx.service
                        )),
                    },
                }
            }
            Ok(vec!["sh".into(), "-c".into(), kubelet_text(&parts)])
        }
    }
}

/// Where `sh` is, quote-wise, after the script read so far.
#[derive(Default)]
struct Quotes {
    single: bool,
    double: bool,
    escaped: bool,
}

impl Quotes {
    fn read(&mut self, text: &str) {
        for c in text.chars() {
            if self.escaped {
                self.escaped = false;
                continue;
            }
            match c {
                '\\' if !self.single => self.escaped = true,
                '\'' if !self.double => self.single = !self.single,
                '"' if !self.single => self.double = !self.double,
                _ => {}
            }
        }
    }

    /// The shell's reference to `var` here, its value one word (compose
    /// put the value itself there; a generated secret is letters and
    /// digits, so that is the same); `None` right after a backslash.
    fn reference(&self, var: &str) -> Option<String> {
        Some(match (self.escaped, self.single, self.double) {
            (true, _, _) => return None,
            (_, true, _) => format!("'\"${{{var}}}\"'"),
            (_, _, true) => format!("${{{var}}}"),
            _ => format!("\"${{{var}}}\""),
        })
    }
}

/// A string `command` or `entrypoint` in words, as compose splits it
/// (go-shellwords: blanks between words; '...', "..." and `\` quote;
/// nothing expanded, no shell). Where compose would silently stop reading
/// (an unquoted `;`, `&`, `|`, `<`, `>`) or fail (`(`, `)`, a backquote),
/// this refuses: the command is not what it looks like.
fn split(pieces: &[Piece]) -> Result<Vec<Vec<Piece>>, String> {
    fn push(word: &mut Vec<Piece>, c: char) {
        match word.last_mut() {
            Some(Piece::Text(t)) => t.push(c),
            _ => word.push(Piece::Text(c.to_string())),
        }
    }
    let mut words = Vec::new();
    let mut word = Vec::new();
    // A word has begun (`''` is an empty word).
    let mut started = false;
    let (mut single, mut double, mut escaped) = (false, false, false);
    for piece in pieces {
        let text = match piece {
            Piece::Text(text) => text,
            Piece::Secret(_) => {
                word.push(piece.clone());
                started = true;
                continue;
            }
        };
        for c in text.chars() {
            if escaped {
                escaped = false;
                push(
                    &mut word,
                    match c {
                        't' => '\t',
                        'n' => '\n',
                        c => c,
                    },
                );
                started = true;
                continue;
            }
            match c {
                '\\' if !single => escaped = true,
                '"' if !single => {
                    started |= double;
                    double = !double;
                }
                '\'' if !double => {
                    started |= single;
                    single = !single;
                }
                ' ' | '\t' | '\r' | '\n' if !single && !double => {
                    if started {
                        words.push(std::mem::take(&mut word));
                        started = false;
                    }
                }
                ';' | '&' | '|' | '<' | '>' | '(' | ')' | '`' if !single && !double => {
                    return Err(format!(
                        "has an unquoted `{c}`: compose splits a string into words without a shell (and stops reading at `;`, `&`, `|`, `<`, `>`); write it as a list ([\"sh\", \"-c\", \"...\"] for a shell)"
                    ))
                }
                c => {
                    push(&mut word, c);
                    started = true;
                }
            }
        }
    }
    if single || double || escaped {
        return Err("has a quote it never closes (or ends with `\\`)".into());
    }
    if started {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;

    fn secrets() -> SecretKeys {
        SecretKeys {
            sources: vec![(
                "doctor-generated".into(),
                BTreeSet::from(["PW".to_string(), "TOKEN".to_string()]),
            )],
        }
    }

    /// A container whose env has PW from the Secret (and TOKEN only under
    /// another name).
    fn env() -> Vec<EnvVar> {
        vec![
            EnvVar::FromSecret {
                name: "PW".into(),
                secret: "doctor-generated".into(),
                key: "PW".into(),
            },
            EnvVar::FromSecret {
                name: "API_TOKEN".into(),
                secret: "doctor-generated".into(),
                key: "TOKEN".into(),
            },
        ]
    }

    fn command(value: Value) -> (Result<Option<Vec<String>>, String>, Vec<String>) {
        let (secrets, env) = (secrets(), env());
        let cx = Context {
            service: "worker",
            secrets: &secrets,
            env: &env,
        };
        let mut notes = Vec::new();
        (words("command", &value, &cx, &mut notes), notes)
    }

    fn test(test: Test) -> Result<Vec<String>, String> {
        let (secrets, env) = (secrets(), env());
        let cx = Context {
            service: "worker",
            secrets: &secrets,
            env: &env,
        };
        probe(&test, &cx, &mut Vec::new())
    }

    /// `$$` is compose's literal `$`: the container gets `$HOME` as text
    /// (a `$X` is not kubelet's syntax, so it needs no escape).
    #[test]
    fn a_literal_dollar_reaches_the_container_as_one_dollar() {
        let (words, notes) = command(json!(["echo", "$$HOME", "cost: 5$$"]));
        assert_eq!(words.unwrap().unwrap(), ["echo", "$HOME", "cost: 5$"]);
        assert!(notes.is_empty(), "{notes:?}");
    }

    /// `$$(date)` is the text `$(date)` for the container: kubelet would
    /// expand it (to itself, or to a variable named `date`), so it is
    /// written `$$(date)`; a `$$` the container must get is `$$$`.
    #[test]
    fn a_literal_dollar_paren_is_escaped_from_kubelet() {
        let (words, _) = command(json!(["sh", "-c", "echo $$(date) $$$$"]));
        assert_eq!(words.unwrap().unwrap(), ["sh", "-c", "echo $$(date) $$$"]);
    }

    /// A variable set nowhere but with a default is what compose knows it
    /// to be: substituted, like `${X:+...}` of a secret (set, not empty).
    #[test]
    fn a_known_plain_variable_is_substituted() {
        let (words, notes) = command(json!([
            "gunicorn",
            "--workers=${WORKERS:-4}",
            "${PW:+--auth}"
        ]));
        assert_eq!(
            words.unwrap().unwrap(),
            ["gunicorn", "--workers=4", "--auth"]
        );
        assert!(notes.is_empty(), "{notes:?}");
    }

    /// Set nowhere, no default: empty, as compose leaves it, with a note.
    #[test]
    fn an_unknown_variable_is_empty_with_a_note() {
        let (words, notes) = command(json!(["serve", "--level=${LEVEL}"]));
        assert_eq!(words.unwrap().unwrap(), ["serve", "--level="]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("command: ${LEVEL} is set nowhere"),
            "{notes:?}"
        );
    }

    /// A secret in `command`/`args` is kubelet's `$(NAME)` when the
    /// container's own `NAME` holds it; otherwise refused, naming the
    /// service, the field and the variable, never a value.
    #[test]
    fn a_secret_in_a_command_is_a_kubelet_reference_or_refused() {
        let (words, _) = command(json!(["migrate", "--password=${PW}", "a$$${PW}"]));
        assert_eq!(
            words.unwrap().unwrap(),
            ["migrate", "--password=$(PW)", "a$$$(PW)"]
        );
        let (err, _) = command(json!(["sync", "--token", "${TOKEN}"]));
        let err = err.unwrap_err();
        assert_eq!(
            err,
            "service worker: its command uses the secret TOKEN (never written into a manifest): give worker `TOKEN: ${TOKEN}` in its environment, and the command reads it from there as $(TOKEN)"
        );
    }

    /// A CMD-SHELL test runs in the container's shell: a secret is the
    /// shell's `${NAME}`, quoted as one word wherever it stands; a CMD test
    /// has no shell and kubelet expands no secret there: refused.
    #[test]
    fn a_secret_in_a_healthcheck_is_the_shells_variable_or_refused() {
        let shell = test(Test::Shell(
            "redis-cli -a ${PW} ping && x=\"${PW}\" && y='${PW}' && echo $$PW $$(id)".into(),
        ))
        .unwrap();
        assert_eq!(
            shell,
            [
                "sh",
                "-c",
                "redis-cli -a \"${PW}\" ping && x=\"${PW}\" && y=''\"${PW}\"'' && echo $PW $$(id)"
            ]
        );
        let err = test(Test::Exec(vec![
            "redis-cli".into(),
            "-a".into(),
            "${PW}".into(),
        ]))
        .unwrap_err();
        assert!(
            err.starts_with("service worker: its healthcheck test uses the secret PW (never written into a manifest), and nothing expands a secret in an exec-form (CMD) test"),
            "{err}"
        );
        let err = test(Test::Shell("check --token ${TOKEN}".into())).unwrap_err();
        assert!(
            err.contains("give worker `TOKEN: ${TOKEN}` in its environment, and the healthcheck test reads it from there as $TOKEN"),
            "{err}"
        );
        assert_eq!(
            test(Test::Exec(vec!["check".into(), "$$(x)".into()])).unwrap(),
            ["check", "$$(x)"]
        );
    }

    /// A string is split into words as compose splits it (no shell), and
    /// what compose would cut short is refused.
    #[test]
    fn a_string_command_is_split_as_compose_splits_it() {
        let (words, _) = command(json!(
            "serve --name 'a b' \"c \\\"d\\\"\" '' e\\ f --pw=${PW} $$HOME"
        ));
        assert_eq!(
            words.unwrap().unwrap(),
            [
                "serve",
                "--name",
                "a b",
                "c \"d\"",
                "",
                "e f",
                "--pw=$(PW)",
                "$HOME"
            ]
        );
        let (err, _) = command(json!("migrate && serve"));
        assert!(err
            .unwrap_err()
            .starts_with("service worker: its command has an unquoted `&`"),);
        let (err, _) = command(json!("echo 'open"));
        assert!(err.unwrap_err().contains("never closes"));
        let (err, _) = command(json!("pw=hunter2$5"));
        let err = err.unwrap_err();
        assert!(
            err.starts_with("service worker: its command: ") && !err.contains("hunter2"),
            "{err}"
        );
    }
}
