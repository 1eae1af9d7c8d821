//! The compose files of a release as compose reads them on the host: those
//! `[app] compose_files` lists (the `-f` files) and every file they include
//! or extend, each with the directory its relative paths resolve from and the
//! variables it is interpolated with. compose's rules (compose-go's loader):
//!
//! - a listed file: the project directory (`--project-directory`: the
//!   release), whichever directory the file is in; the variables of the env
//!   files deploy passes (`interpolate`);
//! - `include: [PATH]` or `{ path, project_directory, env_file }`: paths from
//!   the including file's directory; the included file's directory is its
//!   `project_directory`, else the directory it is in; its variables are its
//!   includer's, and beneath them its `env_file`s (by default the `.env` in
//!   its directory);
//! - `extends: { file }`: from the extending file's directory; the extended
//!   file's paths resolve from the directory it is in, with the extender's
//!   variables.
//!
//! What vpsup reads of each file is interpolated in `doc` (`RESOLVED`): the
//! port guard (`network_mode`, `ports`, `include`, `extends`) and deploy's
//! data handling (`volumes`, `env_file`); the rest is compose's business on
//! the host.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::interpolate::{self, Env};

/// A service's keys vpsup reads, interpolated.
const RESOLVED: &[&str] = &["network_mode", "ports", "volumes", "env_file", "extends"];

/// One compose file as compose reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposeFile {
    /// Its path in the release.
    pub path: String,
    /// Named in `[app] compose_files` (compose gets it with `-f`).
    pub listed: bool,
    /// Where its relative paths resolve from, in the release ("": the top).
    pub dir: String,
    /// The file, with the parts vpsup reads interpolated.
    pub doc: Value,
    /// The variables it was interpolated with.
    pub env: Env,
    /// The env files among them that are its own (an include's `env_file`,
    /// or the `.env` of its directory), as release paths.
    pub env_files: Vec<String>,
}

/// What makes a release's compose files unreadable.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("{path}: not a compose file: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    /// A file compose would read, named by `by`, that is not in the release.
    #[error("{path} ({by}) {why}")]
    Missing {
        path: String,
        by: String,
        why: String,
    },
}

/// Where a path a compose file names lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// In the release, at this (normalised) path.
    Release(String),
    /// Absolute: a path on the host.
    Host,
    /// Relative, but climbing out of the project.
    Outside,
}

impl ComposeFile {
    /// Where `path`, as written in this file (relative to its directory), is.
    pub fn locate(&self, path: &str) -> Located {
        if path.starts_with('/') || path.starts_with('~') {
            return Located::Host;
        }
        join(&self.dir, path).map_or(Located::Outside, Located::Release)
    }

    /// The file as uploaded once vpsup changed `doc`: its interpolated parts
    /// escaped again (`$$`), so that compose reads them as they are.
    pub fn text(&self) -> Vec<u8> {
        let mut doc = self.doc.clone();
        for_each_resolved(&mut doc, &mut |_, part| {
            interpolate::escape_all(part);
            Ok(())
        })
        .expect("escaping never fails");
        let mut out = serde_json::to_vec_pretty(&doc).expect("a JSON value serializes");
        out.push(b'\n');
        out
    }
}

/// `dir`/`path`, lexically normalised; `None` when it climbs out.
pub fn join(dir: &str, path: &str) -> Option<String> {
    let out = super::local_release::normalize(&Path::new(dir).join(path))?;
    Some(
        out.components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"),
    )
}

/// Runs `f` on each part of `doc` vpsup reads (`include`, and each service's
/// `RESOLVED` keys), with a label for messages.
fn for_each_resolved(
    doc: &mut Value,
    f: &mut dyn FnMut(&str, &mut Value) -> Result<(), String>,
) -> Result<(), String> {
    if let Some(include) = doc.get_mut("include") {
        f("include", include)?;
    }
    let services = doc.get_mut("services").and_then(Value::as_object_mut);
    for (name, service) in services.into_iter().flatten() {
        let Some(service) = service.as_object_mut() else {
            continue;
        };
        for key in RESOLVED {
            if let Some(part) = service.get_mut(*key) {
                f(&format!("service {name}: {key}"), part)?;
            }
        }
    }
    Ok(())
}

/// Reads the compose files `listed` (release paths, in order) and every file
/// they include or extend, from the release's files: `read` gives a
/// project path's content, or why compose could not read it. Each file is
/// read once per directory and set of variables; `env` is what the listed
/// files are interpolated with.
pub fn load(
    listed: &[String],
    env: &Env,
    read: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<Vec<ComposeFile>, ComposeError> {
    let mut queue: Vec<Queued> = listed
        .iter()
        .map(|path| Queued {
            path: path.clone(),
            listed: true,
            dir: String::new(),
            env: env.clone(),
            env_files: Vec::new(),
            by: "in [app] compose_files".to_string(),
        })
        .collect();
    let mut seen: BTreeSet<(String, String, Env)> = BTreeSet::new();
    let mut out = Vec::new();
    while !queue.is_empty() {
        let Queued {
            path,
            listed,
            dir,
            env,
            env_files: own_env_files,
            by,
        } = queue.remove(0);
        if !seen.insert((path.clone(), dir.clone(), env.clone())) {
            continue;
        }
        let content = read(&path).map_err(|why| ComposeError::Missing {
            path: path.clone(),
            by,
            why,
        })?;
        let mut doc = parse(&path, &content)?;
        let invalid = |message: String| ComposeError::Invalid {
            path: path.clone(),
            message,
        };
        for_each_resolved(&mut doc, &mut |label, part| {
            interpolate::interpolate_all(part, &env).map_err(|e| format!("{label}: {e}"))
        })
        .map_err(invalid)?;
        let file = ComposeFile {
            path: path.clone(),
            listed,
            dir: dir.clone(),
            doc,
            env: env.clone(),
            env_files: own_env_files,
        };
        for reference in references(&file.doc).map_err(invalid)? {
            let by = format!("{} in {path}", reference.key);
            let in_release = |p: &str| {
                match file.locate(p) {
                Located::Release(path) => Ok(path),
                Located::Host | Located::Outside => Err(ComposeError::Missing {
                        path: p.to_string(),
                        by: by.clone(),
                    why: "is outside the project: only files inside it are uploaded; move it into the project".to_string(),
                }),
            }
            };
            let files = reference
                .paths
                .iter()
                .map(|p| in_release(p))
                .collect::<Result<Vec<_>, _>>()?;
            let (dir, env, env_files) = match &reference.project_directory {
                // extends: the extended file's own directory, the same variables.
                None if reference.key == "extends" => (parent(&files[0]), env.clone(), Vec::new()),
                project_directory => {
                    let dir = match project_directory {
                        Some(d) => in_release(d)?,
                        None => parent(&files[0]),
                    };
                    let mut own = Env::default();
                    let mut read_files = Vec::new();
                    let env_files: Vec<(String, bool)> = if reference.env_files.is_empty() {
                        vec![(join(&dir, ".env").unwrap_or_default(), false)]
                    } else {
                        reference
                            .env_files
                            .iter()
                            .map(|f| in_release(f).map(|p| (p, true)))
                            .collect::<Result<_, _>>()?
                    };
                    for (env_file, required) in env_files {
                        match read(&env_file) {
                            Ok(text) => {
                                own.read_env_file(&String::from_utf8_lossy(&text)).map_err(
                                    |message| ComposeError::Invalid {
                                        path: env_file.clone(),
                                        message,
                                    },
                                )?;
                                read_files.push(env_file);
                            }
                            Err(why) if required => {
                                return Err(ComposeError::Missing {
                                    path: env_file,
                                    by: format!("env_file of the include in {path}"),
                                    why,
                                })
                            }
                            Err(_) => {}
                        }
                    }
                    let mut env = env.clone();
                    env.fill_from(&own);
                    (dir, env, read_files)
                }
            };
            for file in files {
                queue.push(Queued {
                    path: file,
                    listed: false,
                    dir: dir.clone(),
                    env: env.clone(),
                    env_files: env_files.clone(),
                    by: by.clone(),
                });
            }
        }
        out.push(file);
    }
    Ok(out)
}

/// A file waiting to be read, with how compose reads it and who named it.
struct Queued {
    path: String,
    listed: bool,
    dir: String,
    env: Env,
    env_files: Vec<String>,
    by: String,
}

fn parent(path: &str) -> String {
    path.rsplit_once('/').map_or("", |(dir, _)| dir).to_string()
}

/// Parses a compose file (YAML) into a mapping.
pub fn parse(path: &str, content: &[u8]) -> Result<Value, ComposeError> {
    let bad = |message: String| ComposeError::Parse {
        path: path.to_string(),
        message,
    };
    let text = std::str::from_utf8(content).map_err(|_| bad("not UTF-8 text".to_string()))?;
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| bad(e.to_string()))?;
    if !doc.is_object() {
        return Err(bad(
            "expected a mapping (services: ...) at the top".to_string()
        ));
    }
    Ok(doc)
}

/// Another compose file a compose file makes compose read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    /// `include` or `extends`.
    key: &'static str,
    /// As written (relative to the file's directory); an include may name
    /// several, the first being the main one.
    paths: Vec<String>,
    /// An include's `project_directory`.
    project_directory: Option<String>,
    /// An include's `env_file`s.
    env_files: Vec<String>,
}

/// The files `doc`'s `include:` names, as written (relative to its
/// directory), each entry's main one first.
pub fn include_paths(doc: &Value) -> Result<Vec<String>, String> {
    Ok(references(doc)?
        .into_iter()
        .filter(|r| r.key == "include")
        .flat_map(|r| r.paths)
        .collect())
}

/// `include:` (a path, or `{ path, project_directory, env_file }`, path and
/// env_file being one or a list) and each service's `extends: { file }`.
fn references(doc: &Value) -> Result<Vec<Reference>, String> {
    let strings = |v: Option<&Value>, what: &str| -> Result<Vec<String>, String> {
        match v {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("{what}: {i} is not a path"))
                })
                .collect(),
            Some(other) => Err(format!("{what}: {other} is not a path or a list of paths")),
        }
    };
    let mut found = Vec::new();
    match doc.get("include") {
        None => {}
        Some(Value::Array(entries)) => {
            for entry in entries {
                let reference = match entry {
                    Value::String(path) => Reference {
                        key: "include",
                        paths: vec![path.clone()],
                        project_directory: None,
                        env_files: Vec::new(),
                    },
                    Value::Object(long) => Reference {
                        key: "include",
                        paths: strings(long.get("path"), "include path")?,
                        project_directory: long
                            .get("project_directory")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        env_files: strings(long.get("env_file"), "include env_file")?,
                    },
                    other => return Err(format!("include: {other} is not a path")),
                };
                if reference.paths.is_empty() {
                    return Err(format!("include: {entry} names no path"));
                }
                found.push(reference);
            }
        }
        Some(other) => return Err(format!("`include` must be a list, got {other}")),
    }
    let services = doc.get("services").and_then(Value::as_object);
    for definition in services.into_iter().flat_map(|s| s.values()) {
        if let Some(file) = definition.get("extends").and_then(|e| e.get("file")) {
            found.push(Reference {
                key: "extends",
                paths: strings(Some(file), "extends file")?,
                project_directory: None,
                env_files: Vec::new(),
            });
        }
    }
    Ok(found)
}

/// The env files a service's `env_file` names (compose reads them on `up`),
/// as release paths, with whether compose requires them (`required: false`
/// in the long syntax lets one be missing). Absolute paths (on the host)
/// are left out; `Err` names one that climbs out of the release.
pub fn service_env_files(file: &ComposeFile) -> Result<Vec<(String, String, bool)>, String> {
    let mut out = Vec::new();
    let services = file.doc.get("services").and_then(Value::as_object);
    for (service, definition) in services.into_iter().flatten() {
        let entries = match definition.get("env_file") {
            None => continue,
            Some(Value::Array(items)) => items.clone(),
            Some(one) => vec![one.clone()],
        };
        for entry in entries {
            let (path, required) = match &entry {
                Value::String(p) => (p.clone(), true),
                Value::Object(long) => (
                    long.get("path")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    long.get("required").and_then(Value::as_bool) != Some(false),
                ),
                other => return Err(format!("service {service}: env_file {other} is not a path")),
            };
            match file.locate(&path) {
                Located::Release(p) => out.push((p, service.clone(), required)),
                Located::Host => {}
                Located::Outside => {
                    return Err(format!(
                        "service {service}: env_file {path:?} is outside the project: only files inside it are uploaded; move it into the project"
                    ))
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect()
    }

    fn load_from(
        files: &BTreeMap<String, Vec<u8>>,
        listed: &[&str],
        env: &Env,
    ) -> Result<Vec<ComposeFile>, ComposeError> {
        let listed: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
        load(&listed, env, &|p| {
            files
                .get(p)
                .cloned()
                .ok_or_else(|| "does not exist".to_string())
        })
    }

    fn find<'a>(loaded: &'a [ComposeFile], path: &str) -> &'a ComposeFile {
        loaded.iter().find(|f| f.path == path).unwrap()
    }

    /// Paths in an include resolve from the includer's directory, which for
    /// a listed file is the project's, wherever the file is; the included
    /// file's own paths resolve from its directory; an extended one's from
    /// its own, with the extender's variables.
    #[test]
    fn each_file_resolves_from_the_directory_compose_uses() {
        let f = files(&[
            ("deploy/compose.yml", "include: [db/compose.yml]\nservices:\n  web:\n    extends: { file: common/base.yml, service: base }\n"),
            ("db/compose.yml", "include: [cache.yml]\nservices:\n  db:\n    volumes: [./data:/var/lib/db]\n"),
            ("db/cache.yml", "services:\n  cache:\n    image: redis\n"),
            ("common/base.yml", "services:\n  base:\n    image: nginx\n"),
        ]);
        let loaded = load_from(&f, &["deploy/compose.yml"], &Env::default()).unwrap();
        let dirs: Vec<(&str, &str, bool)> = loaded
            .iter()
            .map(|c| (c.path.as_str(), c.dir.as_str(), c.listed))
            .collect();
        assert_eq!(
            dirs,
            [
                ("deploy/compose.yml", "", true),
                ("db/compose.yml", "db", false),
                ("common/base.yml", "common", false),
                ("db/cache.yml", "db", false),
            ]
        );
        let db = find(&loaded, "db/compose.yml");
        assert_eq!(db.locate("./data"), Located::Release("db/data".into()));
        assert_eq!(db.locate("../shared"), Located::Release("shared".into()));
        assert_eq!(db.locate("../../x"), Located::Outside);
        assert_eq!(db.locate("/srv/x"), Located::Host);

        let project_dir = files(&[
            (
                "compose.yml",
                "include:\n  - path: stacks/db.yml\n    project_directory: stacks/db\n",
            ),
            ("stacks/db.yml", "services: {}\n"),
        ]);
        let loaded = load_from(&project_dir, &["compose.yml"], &Env::default()).unwrap();
        assert_eq!(find(&loaded, "stacks/db.yml").dir, "stacks/db");

        let missing = load_from(
            &files(&[("compose.yml", "include: [nope.yml]\n")]),
            &["compose.yml"],
            &Env::default(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(missing, "nope.yml (include in compose.yml) does not exist");
        let outside = load_from(
            &files(&[("compose.yml", "include: [../x.yml]\n")]),
            &["compose.yml"],
            &Env::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            outside.starts_with("../x.yml (include in compose.yml) is outside the project"),
            "{outside}"
        );
    }

    /// `network_mode: "${NET:-host}"` is host networking unless the
    /// variables say otherwise: an included file sees its includer's
    /// variables, then its own `.env`; an extended file its extender's.
    #[test]
    fn what_the_guard_reads_is_interpolated_with_each_files_variables() {
        let f = files(&[
            ("compose.yml", "include: [db/compose.yml]\nservices:\n  web:\n    network_mode: \"${NET:-host}\"\n    ports: [\"${PORT}:80\"]\n    environment: { X: \"${NOT_READ:?left to compose}\" }\n"),
            ("db/compose.yml", "services:\n  db:\n    network_mode: $DB_NET\n    volumes: [\"${DATA:-./data}:/var/lib/db\"]\n"),
            ("db/.env", "DB_NET=host\nNET=bridge\nDATA=./pg\n"),
        ]);
        let mut env = Env::default();
        env.set("PORT", "8080");
        let loaded = load_from(&f, &["compose.yml"], &env).unwrap();
        let top = &find(&loaded, "compose.yml").doc["services"]["web"];
        assert_eq!(top["network_mode"], "host");
        assert_eq!(top["ports"][0], "8080:80");
        assert_eq!(top["environment"]["X"], "${NOT_READ:?left to compose}");
        let db = &find(&loaded, "db/compose.yml").doc["services"]["db"];
        assert_eq!(db["network_mode"], "host");
        assert_eq!(db["volumes"][0], "./pg:/var/lib/db");

        // The includer's variables win over the included file's .env.
        env.set("DB_NET", "bridge");
        let loaded = load_from(&f, &["compose.yml"], &env).unwrap();
        assert_eq!(
            find(&loaded, "db/compose.yml").doc["services"]["db"]["network_mode"],
            "bridge"
        );

        let bad = files(&[(
            "compose.yml",
            "services:\n  web:\n    network_mode: \"${NET:?set NET}\"\n",
        )]);
        let err = load_from(&bad, &["compose.yml"], &Env::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("compose.yml: service web: network_mode: "),
            "{err}"
        );
        assert!(err.contains("NET is required: set NET"), "{err}");
    }

    #[test]
    fn an_includes_own_env_file_is_read_from_the_includers_directory() {
        let f = files(&[
            (
                "compose.yml",
                "include:\n  - path: db/compose.yml\n    env_file: [db.env]\n",
            ),
            (
                "db/compose.yml",
                "services:\n  db:\n    network_mode: $MODE\n",
            ),
            ("db.env", "MODE=host\n"),
        ]);
        let loaded = load_from(&f, &["compose.yml"], &Env::default()).unwrap();
        assert_eq!(
            find(&loaded, "db/compose.yml").doc["services"]["db"]["network_mode"],
            "host"
        );
        let missing = files(&[
            (
                "compose.yml",
                "include:\n  - path: db/compose.yml\n    env_file: db.env\n",
            ),
            ("db/compose.yml", "services: {}\n"),
        ]);
        let err = load_from(&missing, &["compose.yml"], &Env::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "db.env (env_file of the include in compose.yml) does not exist"
        );
    }

    #[test]
    fn references_in_every_form() {
        let doc = serde_json::json!({
            "include": ["db.yml", {"path": "cache/compose.yml"}, {"path": ["a.yml", "b.yml"], "env_file": "x.env"}],
            "services": {
                "web": {"extends": {"file": "common.yml", "service": "base"}},
                "api": {"extends": {"service": "web"}},
                "worker": {"extends": "web"}
            }
        });
        let found: Vec<(&str, Vec<String>)> = references(&doc)
            .unwrap()
            .into_iter()
            .map(|r| (r.key, r.paths))
            .collect();
        let paths = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            found,
            [
                ("include", paths(&["db.yml"])),
                ("include", paths(&["cache/compose.yml"])),
                ("include", paths(&["a.yml", "b.yml"])),
                ("extends", paths(&["common.yml"])),
            ]
        );
        assert!(references(&serde_json::json!({"services": {}}))
            .unwrap()
            .is_empty());
        assert!(references(&serde_json::json!({"include": "db.yml"})).is_err());
        assert!(references(&serde_json::json!({"include": [{"env_file": "x"}]})).is_err());
    }

    #[test]
    fn uploaded_text_keeps_dollars_literal() {
        let f = files(&[(
            "compose.yml",
            "services:\n  web:\n    volumes: [\"${DIR}:/x\"]\n    command: echo $$HOME ${USER}\n",
        )]);
        let mut env = Env::default();
        env.set("DIR", "/srv/$weird");
        let loaded = load_from(&f, &["compose.yml"], &env).unwrap();
        let text = String::from_utf8(loaded[0].text()).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["services"]["web"]["volumes"][0], "/srv/$$weird:/x");
        assert_eq!(back["services"]["web"]["command"], "echo $$HOME ${USER}");
    }

    #[test]
    fn service_env_files_resolve_from_the_files_directory() {
        let f = files(&[
            ("compose.yml", "include: [db/compose.yml]\n"),
            ("db/compose.yml", "services:\n  db:\n    env_file: [db.env, {path: ./opt.env, required: false}, /etc/x.env]\n  cache:\n    env_file: ../cache.env\n"),
        ]);
        let loaded = load_from(&f, &["compose.yml"], &Env::default()).unwrap();
        let mut found = service_env_files(find(&loaded, "db/compose.yml")).unwrap();
        found.sort();
        assert_eq!(
            found,
            [
                ("cache.env".to_string(), "cache".to_string(), true),
                ("db/db.env".to_string(), "db".to_string(), true),
                ("db/opt.env".to_string(), "db".to_string(), false),
            ]
        );
    }
}
