//! Where what containers write lives: never in a release.
//!
//! The one rule: no deploy, rollback or prune may delete or hide data a
//! container wrote. A release directory is compose's project directory, so a
//! bind mount such as `./data:/var/lib/postgresql/data` would put the
//! database inside `releases/<id>/`, which the next release does not carry
//! and pruning deletes. So every *writable* bind mount whose source is inside
//! the project is the app's data: its source becomes
//! `/srv/vpsup/<app>/data/<path>`, created once and kept across releases and
//! rollbacks (never hashed, uploaded or pruned). Read-only mounts (`:ro`,
//! `read_only: true`) are configuration and stay in the release, unless they
//! lie inside a data path (a sidecar reading the data), which follows it.
//!
//! What the project holds under a data path seeds the data directory on the
//! first deploy only (it travels as `.vpsup/seed/<path>`). A release that an
//! older vpsup made kept the data in the release itself: the first deploy
//! moves it to the data directory and leaves a symlink behind, so that
//! release still sees it on a rollback.
//!
//! Named volumes are Docker's and survive every deploy; their names must not
//! change either (see `pin_override`).

use serde_json::{json, Value};

use super::compose_model;

use crate::transport::script::quote;

/// Inside a release: the project's files under data paths, for seeding.
pub const SEED_DIR: &str = ".vpsup/seed";

/// One bind mount of a service, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub service: String,
    pub source: String,
    pub read_only: bool,
    /// Where a relative `source` resolves from, in the release ("": its
    /// top; an included file's own directory: `compose_model`).
    pub dir: String,
}

/// One entry of a service's `volumes`, as compose reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Volume {
    Bind {
        source: String,
        read_only: bool,
    },
    Named {
        name: String,
        read_only: bool,
    },
    /// A lone container path: a fresh volume for each container.
    Anonymous {
        target: String,
    },
    /// tmpfs (and kinds that hold nothing across containers).
    Other,
}

/// Each service's `volumes` entries of a compose document, parsed.
fn service_volumes(compose: &Value) -> Result<Vec<(String, Volume)>, String> {
    let mut out = Vec::new();
    let Some(services) = compose.get("services").and_then(Value::as_object) else {
        return Ok(out);
    };
    for (service, definition) in services {
        let Some(volumes) = definition.get("volumes") else {
            continue;
        };
        let volumes = volumes
            .as_array()
            .ok_or_else(|| format!("service {service}: `volumes` is not a list"))?;
        for volume in volumes {
            let parsed = parse_volume(volume)
                .map_err(|why| format!("service {service}: volume {volume}: {why}"))?;
            out.push((service.clone(), parsed));
        }
    }
    Ok(out)
}

/// Every bind mount of every service (named volumes and tmpfs left out) of
/// a compose file whose relative paths resolve from `dir`.
pub fn bind_mounts(compose: &Value, dir: &str) -> Result<Vec<BindMount>, String> {
    Ok(service_volumes(compose)?
        .into_iter()
        .filter_map(|(service, volume)| match volume {
            Volume::Bind { source, read_only } => Some(BindMount {
                service,
                source,
                read_only,
                dir: dir.to_string(),
            }),
            _ => None,
        })
        .collect())
}

/// `(service, what it writes to)` for every volume a service can write:
/// a writable bind mount (its source), named volume (its name) or
/// anonymous volume; such a service holds state that two instances of it
/// would share or lose.
pub fn writable_mounts(compose: &Value) -> Result<Vec<(String, String)>, String> {
    Ok(service_volumes(compose)?
        .into_iter()
        .filter_map(|(service, volume)| match volume {
            Volume::Bind {
                source,
                read_only: false,
            } => Some((service, source)),
            Volume::Named {
                name,
                read_only: false,
            } => Some((service, format!("volume {name}"))),
            Volume::Anonymous { target } => {
                Some((service, format!("an anonymous volume at {target}")))
            }
            _ => None,
        })
        .collect())
}

/// `(service, volume)` for every named volume a service mounts, read-only
/// or not.
pub fn named_mounts(compose: &Value) -> Result<Vec<(String, String)>, String> {
    Ok(service_volumes(compose)?
        .into_iter()
        .filter_map(|(service, volume)| match volume {
            Volume::Named { name, .. } => Some((service, name)),
            _ => None,
        })
        .collect())
}

/// One `volumes` entry, short (`src:target[:mode]`, a lone path) or long.
fn parse_volume(volume: &Value) -> Result<Volume, String> {
    match volume {
        Value::String(spec) => {
            let mut parts = spec.splitn(3, ':');
            let source = parts.next().unwrap_or_default();
            if parts.next().is_none() {
                return Ok(Volume::Anonymous {
                    target: source.to_string(),
                });
            }
            let read_only = parts
                .next()
                .is_some_and(|mode| mode.split(',').any(|m| m == "ro"));
            let source = source.to_string();
            Ok(if is_path(&source) {
                Volume::Bind { source, read_only }
            } else {
                Volume::Named {
                    name: source,
                    read_only,
                }
            })
        }
        Value::Object(long) => {
            let kind = long.get("type").and_then(Value::as_str).unwrap_or("volume");
            let source = long.get("source").and_then(Value::as_str).unwrap_or("");
            let read_only = long.get("read_only").and_then(Value::as_bool) == Some(true);
            let target = long.get("target").and_then(Value::as_str).unwrap_or("");
            match kind {
                "bind" if source.is_empty() => Err("a bind mount needs `source`".to_string()),
                "bind" => Ok(Volume::Bind {
                    source: source.to_string(),
                    read_only,
                }),
                "volume" if source.is_empty() => Ok(Volume::Anonymous {
                    target: target.to_string(),
                }),
                "volume" if is_path(source) => Ok(Volume::Bind {
                    source: source.to_string(),
                    read_only,
                }),
                "volume" => Ok(Volume::Named {
                    name: source.to_string(),
                    read_only,
                }),
                _ => Ok(Volume::Other),
            }
        }
        _ => Err("not a volume".to_string()),
    }
}

/// Compose reads a source as a host path when it starts like one; anything
/// else names a volume.
fn is_path(source: &str) -> bool {
    source.starts_with(['.', '/', '~'])
}

/// In the release (resolved from `dir`), normalised: `None` when it is
/// absolute (a host path, left alone), `Err` when it climbs out.
fn project_path(dir: &str, source: &str) -> Result<Option<String>, ()> {
    if !source.starts_with('.') {
        return Ok(None);
    }
    compose_model::join(dir, source).map(Some).ok_or(())
}

fn under(path: &str, dir: &str) -> bool {
    path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// Why a compose file's mounts cannot be deployed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("service {service} mounts {path:?}, outside the project: it would not exist on the host. Move it into the project, or use a named volume")]
    Outside { service: String, path: String },
    #[error("service {service} mounts the whole project ({path:?}) writable: vpsup keeps what containers write outside releases, and the project's code cannot be that. Mount it read-only (:ro), or mount only the directory it writes to (./data)")]
    WholeProject { service: String, path: String },
}

/// The project paths that are data: sources of writable bind mounts inside
/// the project, sorted, an inner path dropped when an outer one covers it.
pub fn data_paths(mounts: &[BindMount]) -> Result<Vec<String>, MountError> {
    let mut paths: Vec<String> = Vec::new();
    for mount in mounts {
        let rel = project_path(&mount.dir, &mount.source).map_err(|()| MountError::Outside {
            service: mount.service.clone(),
            path: mount.source.clone(),
        })?;
        let Some(rel) = rel else { continue };
        if mount.read_only {
            continue;
        }
        if rel.is_empty() {
            return Err(MountError::WholeProject {
                service: mount.service.clone(),
                path: mount.source.clone(),
            });
        }
        paths.push(rel);
    }
    paths.sort();
    paths.dedup();
    let all = paths.clone();
    paths.retain(|p| !all.iter().any(|outer| outer != p && under(p, outer)));
    Ok(paths)
}

/// Whether a project file lies in one of `data` (then it only seeds it).
pub fn in_data(path: &str, data: &[String]) -> bool {
    data.iter().any(|d| under(path, d))
}

/// Points every bind mount inside a data path at the app's data directory
/// `data_dir` (relative sources resolve from `dir`, as in `bind_mounts`).
/// Returns whether the document changed.
pub fn rewrite_sources(compose: &mut Value, dir: &str, data: &[String], data_dir: &str) -> bool {
    let mut changed = false;
    let Some(services) = compose.get_mut("services").and_then(Value::as_object_mut) else {
        return false;
    };
    for definition in services.values_mut() {
        let Some(volumes) = definition.get_mut("volumes").and_then(Value::as_array_mut) else {
            continue;
        };
        for volume in volumes.iter_mut() {
            let Ok(Volume::Bind { source, .. }) = parse_volume(volume) else {
                continue;
            };
            let Ok(Some(rel)) = project_path(dir, &source) else {
                continue;
            };
            if !in_data(&rel, data) {
                continue;
            }
            let host = format!("{data_dir}/{rel}");
            match volume {
                Value::String(spec) => {
                    *spec = format!("{host}{}", &spec[source.len()..]);
                }
                Value::Object(long) => {
                    long.insert("source".into(), Value::String(host));
                }
                _ => continue,
            }
            changed = true;
        }
    }
    changed
}

/// The top-level named volumes compose creates (not `external`, no `name`).
pub fn named_volumes(compose: &Value) -> Vec<String> {
    project_scoped(compose, "volumes")
}

/// The entries of a top-level `section` (`volumes`, `networks`) that
/// compose names `<project>_<key>` (not `external`, no `name`).
pub fn project_scoped(compose: &Value, section: &str) -> Vec<String> {
    let Some(entries) = compose.get(section).and_then(Value::as_object) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|(_, v)| {
            v.get("name").is_none() && v.get("external").and_then(Value::as_bool) != Some(true)
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// Compose names a volume `<project>_<volume>`. An app first deployed under
/// the compose project `<app>` (an earlier vpsup) keeps its volumes' names
/// when its project becomes `vpsup-<app>`: this override names each one as
/// it was, so the database finds its data.
pub fn pin_override(volumes: &[String], prefix: &str) -> Value {
    let pinned: serde_json::Map<String, Value> = volumes
        .iter()
        .map(|v| (v.clone(), json!({ "name": format!("{prefix}_{v}") })))
        .collect();
    json!({ "volumes": pinned })
}

/// Moves each data path that a release an earlier vpsup made holds out of
/// it, leaving a symlink to the app's data behind (so a rollback to it finds
/// the data): `current`'s (where its container wrote) becomes the data
/// directory; an `older` kept release's copy (a stale snapshot, as the
/// earlier vpsup copied each release from the last) goes to
/// `data/.legacy/<release>/`, never deleted. Runs before the new release is
/// copied from `current`. A data directory that exists is never touched.
pub fn migrate_script(
    data_dir: &str,
    current: &str,
    older: &[(String, String)],
    data: &[String],
) -> String {
    let mut script = String::new();
    for rel in data {
        let dest = quote(&format!("{data_dir}/{rel}"));
        let old = quote(&format!("{current}/{rel}"));
        script.push_str(&format!(
            "if [ ! -e {dest} ] && [ -e {old} ] && [ ! -L {old} ]; then\n  \
             mkdir -p \"$(dirname -- {dest})\" && mv -- {old} {dest} && ln -s {dest} {old}\nfi\n"
        ));
        for (id, dir) in older {
            let stale = quote(&format!("{dir}/{rel}"));
            let kept = quote(&format!("{data_dir}/.legacy/{id}/{rel}"));
            script.push_str(&format!(
                "if [ -e {stale} ] && [ ! -L {stale} ] && [ ! -e {kept} ]; then\n  \
                 mkdir -p \"$(dirname -- {kept})\" && mv -- {stale} {kept} && ln -s {dest} {stale}\nfi\n"
            ));
        }
    }
    script
}

/// Makes each data path's directory that does not exist yet: seeded from
/// release `new`'s `.vpsup/seed`, else empty (as Docker would make it).
pub fn seed_script(data_dir: &str, new: &str, data: &[String]) -> String {
    let mut script = String::new();
    for rel in data {
        let dest = quote(&format!("{data_dir}/{rel}"));
        let seed = quote(&format!("{new}/{SEED_DIR}/{rel}"));
        script.push_str(&format!(
            "if [ ! -e {dest} ]; then
  mkdir -p \"$(dirname -- {dest})\"
               if [ -e {seed} ]; then cp -a -- {seed} {dest}; else mkdir -p {dest}; fi
fi
"
        ));
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::script::testing::sh_ok;

    fn compose(yaml: &str) -> Value {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn writable_project_mounts_are_data_read_only_ones_configuration() {
        let doc = compose(
            "services:\n  db:\n    volumes:\n      - ./data/pg:/var/lib/postgresql/data\n      - ./initdb:/docker-entrypoint-initdb.d:ro\n      - dbsock:/run\n      - /etc/localtime:/etc/localtime:ro\n  app:\n    volumes:\n      - type: bind\n        source: ./state\n        target: /state\n      - { type: bind, source: ./data/pg, target: /backup, read_only: true }\n      - ./data:/all\n      - type: tmpfs\n        target: /tmp\n",
        );
        let mounts = bind_mounts(&doc, "").unwrap();
        assert_eq!(mounts.len(), 6, "{mounts:?}");
        // ./data covers ./data/pg; ./initdb is read-only configuration.
        assert_eq!(data_paths(&mounts).unwrap(), ["data", "state"]);
    }

    /// What a service can write, which two instances of it would share.
    #[test]
    fn writable_mounts_are_binds_named_and_anonymous_volumes() {
        let doc = compose(
            "services:\n  web:\n    volumes:\n      - ./conf:/etc/web:ro\n      - assets:/srv/assets:ro\n      - { type: tmpfs, target: /tmp }\n  cms:\n    volumes:\n      - uploads:/app/uploads\n      - /cache\n      - { type: bind, source: ./media, target: /media }\n      - { type: volume, target: /scratch }\n",
        );
        assert_eq!(
            writable_mounts(&doc).unwrap(),
            [
                ("cms".to_string(), "volume uploads".to_string()),
                (
                    "cms".to_string(),
                    "an anonymous volume at /cache".to_string()
                ),
                ("cms".to_string(), "./media".to_string()),
                (
                    "cms".to_string(),
                    "an anonymous volume at /scratch".to_string()
                ),
            ]
        );
    }

    #[test]
    fn mounts_outside_the_project_or_of_all_of_it_are_refused() {
        let outside = compose("services:\n  a:\n    volumes: [\"../shared:/x\"]\n");
        assert!(matches!(
            data_paths(&bind_mounts(&outside, "").unwrap()),
            Err(MountError::Outside { .. })
        ));
        let whole = compose("services:\n  a:\n    volumes: [\".:/app\"]\n");
        let err = data_paths(&bind_mounts(&whole, "").unwrap()).unwrap_err();
        assert!(err.to_string().contains("Mount it read-only"), "{err}");
        let whole_ro = compose("services:\n  a:\n    volumes: [\"./:/app:ro\"]\n");
        assert!(data_paths(&bind_mounts(&whole_ro, "").unwrap())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn sources_inside_data_point_at_the_data_directory() {
        let mut doc = compose(
            "services:\n  db:\n    volumes:\n      - ./data/pg:/var/lib/postgresql/data:rw\n      - ./conf:/etc/x:ro\n  side:\n    volumes:\n      - { type: bind, source: ./data, target: /d, read_only: true }\n",
        );
        assert!(rewrite_sources(
            &mut doc,
            "",
            &["data".into()],
            "/srv/vpsup/shop/data"
        ));
        assert_eq!(
            doc["services"]["db"]["volumes"],
            json!([
                "/srv/vpsup/shop/data/data/pg:/var/lib/postgresql/data:rw",
                "./conf:/etc/x:ro"
            ])
        );
        assert_eq!(
            doc["services"]["side"]["volumes"][0]["source"],
            "/srv/vpsup/shop/data/data"
        );
        assert!(in_data("data/pg/PG_VERSION", &["data".into()]));
        assert!(!in_data("database.yml", &["data".into()]));
    }

    /// In a file compose reads from a subdirectory (an `include`), `./data`
    /// is that directory's, and `../x` may still be inside the project.
    #[test]
    fn relative_sources_resolve_from_the_files_directory() {
        let mut doc = compose(
            "services:\n  db:\n    volumes: [\"./data:/var/lib/db\", \"../shared:/shared\", \"../../x:/x:ro\"]\n",
        );
        let at_top = bind_mounts(&doc, "").unwrap();
        assert!(matches!(
            data_paths(&at_top),
            Err(MountError::Outside { ref path, .. }) if path == "../shared"
        ));
        let mounts = bind_mounts(&doc, "stacks/db").unwrap();
        assert_eq!(
            data_paths(&mounts).unwrap(),
            ["stacks/db/data", "stacks/shared"]
        );
        let data = ["stacks/db/data".to_string()];
        assert!(!rewrite_sources(
            &mut doc.clone(),
            "",
            &data,
            "/srv/vpsup/shop/data"
        ));
        assert!(rewrite_sources(
            &mut doc,
            "stacks/db",
            &data,
            "/srv/vpsup/shop/data"
        ));
        assert_eq!(
            doc["services"]["db"]["volumes"][0],
            "/srv/vpsup/shop/data/stacks/db/data:/var/lib/db"
        );
    }

    #[test]
    fn named_volumes_are_pinned_to_their_old_names() {
        let doc =
            compose("volumes:\n  dbdata:\n  ext: { external: true }\n  fixed: { name: mine }\n");
        let volumes = named_volumes(&doc);
        assert_eq!(volumes, ["dbdata"]);
        assert_eq!(
            pin_override(&volumes, "shop"),
            json!({"volumes": {"dbdata": {"name": "shop_dbdata"}}})
        );
    }

    /// The scripts, run here: an older release's data moves out (a symlink
    /// stays), a seed is copied once, a missing path is created, and an
    /// existing data directory is never touched.
    #[test]
    fn data_directories_are_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let data_dir = root.join("data").display().to_string();
        let current = root.join("releases/r1");
        let new = root.join("releases/r2");
        std::fs::create_dir_all(current.join("pg")).unwrap();
        std::fs::write(current.join("pg/PG_VERSION"), "16").unwrap();
        // An older release holds a stale copy, as the earlier vpsup left it.
        let r0 = root.join("releases/r0");
        std::fs::create_dir_all(r0.join("pg")).unwrap();
        std::fs::write(r0.join("pg/PG_VERSION"), "15").unwrap();
        std::fs::create_dir_all(new.join(SEED_DIR).join("uploads")).unwrap();
        std::fs::write(new.join(SEED_DIR).join("uploads/seed.txt"), "seed").unwrap();
        let data = ["pg".to_string(), "uploads".to_string(), "state".to_string()];
        let run = || {
            let older = [(
                "r0".to_string(),
                root.join("releases/r0").display().to_string(),
            )];
            let script = migrate_script(&data_dir, &current.display().to_string(), &older, &data)
                + &seed_script(&data_dir, &new.display().to_string(), &data);
            sh_ok(&script);
        };
        run();
        let data = root.join("data");
        assert_eq!(
            std::fs::read_to_string(data.join("pg/PG_VERSION")).unwrap(),
            "16"
        );
        assert_eq!(
            std::fs::read_to_string(current.join("pg/PG_VERSION")).unwrap(),
            "16"
        );
        assert!(std::fs::symlink_metadata(current.join("pg"))
            .unwrap()
            .is_symlink());
        // The stale copy is kept aside; a rollback to r0 finds today's data.
        assert_eq!(
            std::fs::read_to_string(data.join(".legacy/r0/pg/PG_VERSION")).unwrap(),
            "15"
        );
        assert_eq!(
            std::fs::read_to_string(r0.join("pg/PG_VERSION")).unwrap(),
            "16"
        );
        assert_eq!(
            std::fs::read_to_string(data.join("uploads/seed.txt")).unwrap(),
            "seed"
        );
        assert!(data.join("state").is_dir());
        // What the containers wrote since stays as it is on the next run.
        std::fs::write(data.join("uploads/seed.txt"), "written by the app").unwrap();
        std::fs::write(data.join("state/x"), "x").unwrap();
        run();
        assert_eq!(
            std::fs::read_to_string(data.join("uploads/seed.txt")).unwrap(),
            "written by the app"
        );
        assert_eq!(std::fs::read_to_string(data.join("state/x")).unwrap(), "x");
    }
}
