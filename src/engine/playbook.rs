//! The playbook format: YAML, a list of plays, each a list of tasks and handlers.
//!
//! ```yaml
//! - name: Harden SSH
//!   become: true                # default true: tasks run as root (sudo -n when needed)
//!   vars: { admin_user: deploy }
//!   tasks:
//!     - name: Admin user exists
//!       user: { name: "{{ admin_user }}", groups: [sudo] }
//!       notify: [reload ssh]
//!       when: facts.os_id == "debian"
//!       tags: [users]
//!     - meta: flush_handlers
//!   handlers:
//!     - name: reload ssh
//!       service: { name: ssh, state: reloaded }
//! ```
//! Parsing is two-staged: the YAML parser gives every task as a map with its
//! line number; the known keys are taken out and exactly one module key must
//! remain. Module arguments are checked when the task is built.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use crate::modules;

#[derive(Debug, Clone, PartialEq)]
pub struct Play {
    pub name: String,
    pub become_root: bool,
    pub vars: Map<String, Value>,
    pub tasks: Vec<Task>,
    pub handlers: Vec<Task>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub name: String,
    pub action: Action,
    /// A Tera expression; the task is skipped when it is false.
    pub when: Option<String>,
    pub notify: Vec<String>,
    /// Overrides the play's `become`.
    pub become_root: Option<bool>,
    pub tags: Vec<String>,
    /// Name under which the result is available to later `when:` as `results.NAME`.
    pub register: Option<String>,
    /// A hook of the running command (see `engine::Hooks`) that must succeed
    /// right before this task's change is applied.
    pub before: Option<String>,
    /// Where the task starts, for messages: `playbooks/init.yml:12`.
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A module with its (not yet rendered) arguments.
    Module { module: String, args: Value },
    /// `meta: flush_handlers`: run the handlers notified so far, now.
    FlushHandlers,
}

#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    #[error("{file}: {message}")]
    Yaml { file: String, message: String },
    #[error("{origin}: {message}")]
    Task { origin: String, message: String },
    #[error("{file}: play {play:?}: {message}")]
    Play {
        file: String,
        play: String,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlay {
    name: String,
    #[serde(default = "yes", rename = "become")]
    become_root: bool,
    #[serde(default)]
    vars: Map<String, Value>,
    #[serde(default)]
    tasks: Vec<Spanned<Map<String, Value>>>,
    #[serde(default)]
    handlers: Vec<Spanned<Map<String, Value>>>,
}

fn yes() -> bool {
    true
}

/// Keys a task may have besides its one module.
const TASK_KEYS: &[&str] = &[
    "name", "when", "notify", "become", "tags", "register", "before", "meta",
];

/// Parses a playbook; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Vec<Play>, PlaybookError> {
    let raw: Vec<RawPlay> = serde_saphyr::from_str(text).map_err(|e| PlaybookError::Yaml {
        file: file.to_string(),
        message: e.to_string(),
    })?;
    if raw.is_empty() {
        return Err(PlaybookError::Yaml {
            file: file.to_string(),
            message: "the playbook has no plays (expected a list: `- name: ...`)".to_string(),
        });
    }
    raw.into_iter().map(|p| play(p, file)).collect()
}

/// Builds every module whose arguments use no template, so mistakes in them
/// (an unknown key, a bad mode) are found before connecting to any host.
pub fn check_arguments(plays: &[Play]) -> Result<(), PlaybookError> {
    let tasks = plays.iter().flat_map(|p| p.tasks.iter().chain(&p.handlers));
    for task in tasks {
        if let Action::Module { module, args } = &task.action {
            if !super::render::mentions(args, "") {
                modules::build(module, args.clone()).map_err(|e| PlaybookError::Task {
                    origin: task.origin.clone(),
                    message: format!("task {:?}: {module}: {e}", task.name),
                })?;
            }
        }
    }
    Ok(())
}

fn play(raw: RawPlay, file: &str) -> Result<Play, PlaybookError> {
    let parse_tasks = |list: Vec<Spanned<Map<String, Value>>>| -> Result<Vec<Task>, PlaybookError> {
        list.into_iter()
            .map(|spanned| {
                let origin = format!("{file}:{}", spanned.referenced.line());
                task(spanned.value, origin)
            })
            .collect()
    };
    let tasks = parse_tasks(raw.tasks)?;
    let handlers = parse_tasks(raw.handlers)?;
    let play_error = |message: String| PlaybookError::Play {
        file: file.to_string(),
        play: raw.name.clone(),
        message,
    };
    if let Some(h) = handlers.iter().find(|h| h.action == Action::FlushHandlers) {
        return Err(play_error(format!(
            "{}: a handler cannot be `meta: flush_handlers`",
            h.origin
        )));
    }
    if let Some(h) = handlers.iter().find(|h| !h.notify.is_empty()) {
        return Err(play_error(format!(
            "{}: handler {:?} notifies other handlers; handlers run once at the end, so list them on the task instead",
            h.origin, h.name
        )));
    }
    let handler_names: BTreeSet<&str> = handlers.iter().map(|h| h.name.as_str()).collect();
    if handler_names.len() != handlers.len() {
        return Err(play_error("two handlers have the same name".to_string()));
    }
    for t in &tasks {
        if let Some(unknown) = t
            .notify
            .iter()
            .find(|n| !handler_names.contains(n.as_str()))
        {
            return Err(PlaybookError::Task {
                origin: t.origin.clone(),
                message: format!(
                    "task {:?} notifies {unknown:?}, but the play has no handler of that name (it has: {})",
                    t.name,
                    handler_names.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    Ok(Play {
        name: raw.name,
        become_root: raw.become_root,
        vars: raw.vars,
        tasks,
        handlers,
    })
}

fn task(mut map: Map<String, Value>, origin: String) -> Result<Task, PlaybookError> {
    let err = |message: String| PlaybookError::Task {
        origin: origin.clone(),
        message,
    };
    let string = |v: Value, key: &str| match v {
        Value::String(s) => Ok(s),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(err(format!("`{key}` must be a string, got {other}"))),
    };
    let strings = |v: Value, key: &str| match v {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(s),
                other => Err(err(format!("`{key}` must list strings, got {other}"))),
            })
            .collect(),
        other => Err(err(format!(
            "`{key}` must be a string or a list, got {other}"
        ))),
    };

    let meta = map.remove("meta").map(|v| string(v, "meta")).transpose()?;
    let name = map.remove("name").map(|v| string(v, "name")).transpose()?;
    let when = map.remove("when").map(|v| string(v, "when")).transpose()?;
    let notify = map
        .remove("notify")
        .map(|v| strings(v, "notify"))
        .transpose()?
        .unwrap_or_default();
    let tags = map
        .remove("tags")
        .map(|v| strings(v, "tags"))
        .transpose()?
        .unwrap_or_default();
    let register = map
        .remove("register")
        .map(|v| string(v, "register"))
        .transpose()?;
    let before = map
        .remove("before")
        .map(|v| string(v, "before"))
        .transpose()?;
    let become_root = match map.remove("become") {
        None => None,
        Some(Value::Bool(b)) => Some(b),
        Some(other) => return Err(err(format!("`become` must be true or false, got {other}"))),
    };

    let action = match meta {
        Some(m) if m == "flush_handlers" => {
            if let Some(extra) = map.keys().next() {
                return Err(err(format!(
                    "`meta: flush_handlers` takes no other key, found `{extra}`"
                )));
            }
            Action::FlushHandlers
        }
        Some(other) => {
            return Err(err(format!(
                "unknown meta action {other:?} (only flush_handlers)"
            )))
        }
        None => {
            let mut keys = map.keys().cloned().collect::<Vec<_>>();
            let module = match keys.len() {
                1 => keys.remove(0),
                0 => {
                    return Err(err(format!(
                        "the task has no module; use one of: {}",
                        modules::NAMES.join(", ")
                    )))
                }
                _ => {
                    let unknown: Vec<String> = keys
                        .into_iter()
                        .filter(|k| !modules::NAMES.contains(&k.as_str()))
                        .map(|k| format!("`{k}`"))
                        .collect();
                    return Err(err(if unknown.is_empty() {
                        "a task has exactly one module".to_string()
                    } else {
                        format!(
                            "unknown task key(s) {}; a task has one module and may have: {}",
                            unknown.join(", "),
                            TASK_KEYS.join(", ")
                        )
                    }));
                }
            };
            if !modules::NAMES.contains(&module.as_str()) {
                return Err(err(format!(
                    "unknown module or task key `{module}`; modules: {}",
                    modules::NAMES.join(", ")
                )));
            }
            let args = map.remove(&module).unwrap_or(Value::Null);
            Action::Module { module, args }
        }
    };
    let name = match (name, &action) {
        (Some(n), _) => n,
        (None, Action::FlushHandlers) => "flush handlers".to_string(),
        (None, Action::Module { .. }) => return Err(err("every task needs a `name`".to_string())),
    };
    Ok(Task {
        name,
        action,
        when,
        notify,
        become_root,
        tags,
        register,
        before,
        origin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
- name: web
  vars:
    admin: deploy
  tasks:
    - name: app dir
      file: { path: /srv/app, state: directory }
      notify: restart app
      tags: [files]
    - name: only on debian
      command: { run: "true" }
      when: facts.os_id == "debian"
      become: false
      register: probe
    - meta: flush_handlers
  handlers:
    - name: restart app
      service: { name: app, state: restarted }
"#;

    #[test]
    fn parses_plays_tasks_and_handlers() {
        let plays = parse(SAMPLE, "site.yml").unwrap();
        let p = &plays[0];
        assert_eq!(p.name, "web");
        assert!(p.become_root);
        assert_eq!(p.vars["admin"], "deploy");
        assert_eq!(p.tasks.len(), 3);
        let t = &p.tasks[0];
        assert_eq!(t.notify, ["restart app"]);
        assert_eq!(t.tags, ["files"]);
        assert_eq!(t.origin, "site.yml:6");
        match &t.action {
            Action::Module { module, args } => {
                assert_eq!(module, "file");
                assert_eq!(args["path"], "/srv/app");
            }
            other => panic!("{other:?}"),
        }
        let t = &p.tasks[1];
        assert_eq!(t.when.as_deref(), Some("facts.os_id == \"debian\""));
        assert_eq!(t.become_root, Some(false));
        assert_eq!(t.register.as_deref(), Some("probe"));
        assert_eq!(p.tasks[2].action, Action::FlushHandlers);
        assert_eq!(p.handlers[0].name, "restart app");
    }

    fn error(yaml: &str) -> String {
        parse(yaml, "p.yml").unwrap_err().to_string()
    }

    #[test]
    fn mistakes_are_named_with_file_and_line() {
        let e = error("- name: x\n  tasks:\n    - name: a\n      fiel: { path: /x }\n");
        assert!(
            e.starts_with("p.yml:3: ") && e.contains("unknown module or task key `fiel`"),
            "{e}"
        );
        let e =
            error("- name: x\n  tasks:\n    - name: a\n      file: { path: /x }\n      whne: x\n");
        assert!(e.contains("unknown task key(s) `whne`"), "{e}");
        let e = error("- name: x\n  tasks:\n    - file: { path: /x }\n");
        assert!(e.contains("needs a `name`"), "{e}");
        let e = error("- name: x\n  tasks:\n    - name: a\n      file: {}\n      notify: nope\n");
        assert!(e.contains("notifies \"nope\""), "{e}");
        let e = error("- name: x\n  taks: []\n");
        assert!(e.starts_with("p.yml: ") && e.contains("taks"), "{e}");
        let e = error("- name: x\n  tasks:\n    - meta: reboot\n");
        assert!(e.contains("unknown meta action"), "{e}");
        let e = error("- name: x\n  tasks: []\n  handlers:\n    - name: a\n      file: {}\n      notify: b\n    - name: b\n      file: {}\n");
        assert!(e.contains("handler \"a\" notifies other handlers"), "{e}");
        assert!(error("[]").contains("no plays"));
    }

    #[test]
    fn module_arguments_without_templates_are_checked_up_front() {
        let plays = parse("- name: x\n  tasks:\n    - name: a\n      file: { path: /x, state: directory, mode: \"999\" }\n", "p.yml").unwrap();
        let e = check_arguments(&plays).unwrap_err().to_string();
        assert!(
            e.starts_with("p.yml:3: task \"a\": file: ") && e.contains("invalid mode"),
            "{e}"
        );
        // Templated arguments are checked per host, once rendered.
        let plays = parse("- name: x\n  tasks:\n    - name: a\n      file: { path: \"{{ d }}\", state: directory }\n", "p.yml").unwrap();
        assert!(check_arguments(&plays).is_ok());
    }

    #[test]
    fn yaml_is_parsed_safely() {
        // Billion laughs: nine levels of nine-fold aliases would be 9^9 nodes;
        // the parser's budget must refuse it rather than expand it.
        let mut bomb = String::from(
            "- name: x\n  tasks: []\n  vars:\n    l0: &l0 [x, x, x, x, x, x, x, x, x]\n",
        );
        for level in 1..9 {
            let prev = format!("*l{}", level - 1);
            bomb.push_str(&format!(
                "    l{level}: &l{level} [{}]\n",
                vec![prev; 9].join(", ")
            ));
        }
        let err = parse(&bomb, "bomb.yml").unwrap_err().to_string();
        assert!(err.starts_with("bomb.yml: "), "{err}");
    }
}
