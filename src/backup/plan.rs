//! What one backup of an app does, as data: from `[backup]`, the compose
//! document of the release that runs (its files as deployed, merged) and the
//! `docker compose` prefix that reaches its project, to one `ServicePlan`
//! per service with the engine, the streams to dump or the directories to
//! copy. PostgreSQL in `databases` mode takes two steps: its plan first
//! lists the databases (`Work::ListDatabases`), and `databases_listed` turns
//! the host's answer into one dump per database.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::detect::{self, DataSource};
use super::engines::{self, mongo, mysql, postgres, redis, DumpPart};
use super::restic::{Repository, Retention};
use super::{Engine, PostgresMode};
use crate::config::{BackupConfig, BackupEngine, BackupServiceConfig};

/// The facts a plan is made from.
pub struct PlanInput<'a> {
    pub app: &'a str,
    pub backup: &'a BackupConfig,
    /// The compose files of the running release, merged (`merge_compose`).
    pub compose: &'a Value,
    /// The compose project the release runs as (`vpsup-<app>`).
    pub project: &'a str,
    /// `docker compose …` naming that project, its files and env files.
    pub compose_cli: &'a str,
    /// The app's bind-mounted data (`/srv/vpsup/<app>/data`).
    pub data_dir: &'a str,
    pub repository: Repository,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPlan {
    pub app: String,
    pub repository: Repository,
    pub retention: Retention,
    /// For each stream (a service's whole backup may take as long per stream).
    pub timeout: Duration,
    pub compose_cli: String,
    pub services: Vec<ServicePlan>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    pub service: String,
    pub engine: Engine,
    /// The image as the compose file names it (recorded in the manifest).
    pub image: String,
    pub password_env: Option<String>,
    pub work: Work,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// PostgreSQL `databases` mode, step one: run `script` in the service and
    /// hand its output to `ServicePlan::databases_listed`.
    ListDatabases {
        script: String,
        only: Vec<String>,
        exclude: Vec<String>,
    },
    /// Streams, each into its own snapshot (inner scripts, run with `engines::exec_in`).
    Dump(Vec<DumpPart>),
    /// Directories copied as files, the service stopped around it when `stop`.
    Files { dirs: Vec<Dir>, stop: bool },
}

/// A directory a backup copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dir {
    /// A Docker volume by its real name (`vpsup-shop_uploads`): its
    /// mountpoint comes from `engines::volume::mountpoint`.
    Volume(String),
    /// A path on the host.
    Path(String),
}

impl Dir {
    /// The word after `volume=` in tags and the file name in reports.
    pub fn label(&self) -> String {
        match self {
            Dir::Volume(name) => name.clone(),
            Dir::Path(path) => path.trim_start_matches('/').replace('/', "_"),
        }
    }
}

impl ServicePlan {
    /// Step two of `Work::ListDatabases`: the dumps of the databases the
    /// service listed, narrowed by `databases`/`exclude`. A database named in
    /// `databases` that does not exist is an error (a typo must not back up
    /// nothing of it silently).
    pub fn databases_listed(&mut self, stdout: &str) -> Result<(), String> {
        let Work::ListDatabases { only, exclude, .. } = &self.work else {
            return Ok(());
        };
        let listed = postgres::parse_databases(stdout);
        if let Some(missing) = only.iter().find(|d| !listed.contains(d)) {
            return Err(format!(
                "{}: database {missing:?} from [backup.services.{}] databases does not exist (it has {})",
                self.service,
                self.service,
                listed.join(", ")
            ));
        }
        let chosen: Vec<String> = listed
            .into_iter()
            .filter(|d| (only.is_empty() || only.contains(d)) && !exclude.contains(d))
            .collect();
        self.work = Work::Dump(postgres::dump_parts(&chosen));
        Ok(())
    }
}

/// Makes the plan. Services `[backup.services]` marks `skip` are left out;
/// its `engine` wins over detection.
pub fn plan(input: PlanInput<'_>) -> Result<BackupPlan, String> {
    let settings = |service: &str| -> BackupServiceConfig {
        input
            .backup
            .services
            .iter()
            .find(|(name, _)| name.0 == service)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    };
    let configured = configured_engines(input.backup);
    let mut services = Vec::new();
    let compose = with_project_data_binds(input.compose, input.data_dir);
    for target in detect::targets(&compose, &configured)? {
        let config = settings(&target.service);
        if config.skip {
            continue;
        }
        let engine = adjusted(target.engine, &config);
        let password_env = config.password_env.as_ref().map(|e| e.0.clone());
        if let Some(var) = &password_env {
            engines::env_name(var)?;
        }
        let pw = password_env.as_deref();
        let work = match engine {
            Engine::Postgres {
                mode: PostgresMode::Databases,
            } => Work::ListDatabases {
                script: postgres::list_databases(),
                only: config.databases.iter().map(|d| d.0.clone()).collect(),
                exclude: config.exclude.iter().map(|d| d.0.clone()).collect(),
            },
            Engine::Postgres {
                mode: PostgresMode::Cluster,
            } => Work::Dump(vec![postgres::cluster_part()]),
            Engine::Mysql => Work::Dump(vec![mysql::dump_part(pw)]),
            Engine::Mongo => Work::Dump(vec![mongo::dump_part(pw)]),
            Engine::Redis => Work::Dump(vec![redis::dump_part(pw)]),
            Engine::Volume { stop } => Work::Files {
                dirs: target
                    .data
                    .iter()
                    .map(|source| dir_of(source, &input))
                    .collect(),
                stop,
            },
        };
        if matches!(&work, Work::Files { dirs, .. } if dirs.is_empty()) {
            continue;
        }
        let image = input.compose["services"][&target.service]["image"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        services.push(ServicePlan {
            service: target.service,
            engine,
            image,
            password_env,
            work,
        });
    }
    Ok(BackupPlan {
        app: input.app.to_string(),
        repository: input.repository,
        retention: input.backup.retention(),
        timeout: input.backup.timeout.0,
        compose_cli: input.compose_cli.to_string(),
        services,
    })
}

/// The engines `[backup.services]` sets, by service (they win over detection).
pub fn configured_engines(backup: &BackupConfig) -> BTreeMap<String, Engine> {
    backup
        .services
        .iter()
        .filter_map(|(name, s)| Some((name.0.clone(), configured_engine(s)?)))
        .collect()
}

fn configured_engine(config: &BackupServiceConfig) -> Option<Engine> {
    Some(match config.engine? {
        BackupEngine::Postgres => Engine::Postgres {
            mode: config.mode.unwrap_or_default(),
        },
        BackupEngine::Mysql => Engine::Mysql,
        BackupEngine::Mongo => Engine::Mongo,
        BackupEngine::Redis => Engine::Redis,
        BackupEngine::Volume => Engine::Volume {
            stop: config.stop.unwrap_or(false),
        },
    })
}

/// A detected engine with the service's `mode` and `stop` applied.
fn adjusted(engine: Engine, config: &BackupServiceConfig) -> Engine {
    match engine {
        Engine::Postgres { mode } => Engine::Postgres {
            mode: config.mode.unwrap_or(mode),
        },
        Engine::Volume { stop } => Engine::Volume {
            stop: config.stop.unwrap_or(stop),
        },
        other => other,
    }
}

/// Where a data source lives on the host: a named volume under its real
/// name (`volumes.<key>.name`, else `<project>_<key>`), a project path
/// under the app's data directory.
fn dir_of(source: &DataSource, input: &PlanInput<'_>) -> Dir {
    match source {
        DataSource::Named(key) => Dir::Volume(
            input.compose["volumes"][key]["name"]
                .as_str()
                .map_or_else(|| format!("{}_{key}", input.project), str::to_string),
        ),
        DataSource::Project(path) => Dir::Path(format!(
            "{}/{}",
            input.data_dir.trim_end_matches('/'),
            path.trim_start_matches("./")
        )),
    }
}

/// The deployed compose file points the project's writable binds at the
/// app's data directory (`./state` became `/srv/vpsup/<app>/data/state`);
/// detection knows them by their project path, so give them that back.
fn with_project_data_binds(compose: &Value, data_dir: &str) -> Value {
    let prefix = format!("{}/", data_dir.trim_end_matches('/'));
    let relative = |source: &str| source.strip_prefix(&prefix).map(|rel| format!("./{rel}"));
    let mut compose = compose.clone();
    let services = compose.get_mut("services").and_then(Value::as_object_mut);
    for definition in services.into_iter().flat_map(|s| s.values_mut()) {
        let mounts = definition.get_mut("volumes").and_then(Value::as_array_mut);
        for mount in mounts.into_iter().flatten() {
            match mount {
                Value::String(spec) => {
                    if let Some((source, rest)) = spec.split_once(':') {
                        if let Some(rel) = relative(source) {
                            *spec = format!("{rel}:{rest}");
                        }
                    }
                }
                Value::Object(long) => {
                    if let Some(rel) = long
                        .get("source")
                        .and_then(Value::as_str)
                        .and_then(relative)
                    {
                        long.insert("source".into(), Value::String(rel));
                    }
                }
                _ => {}
            }
        }
    }
    compose
}

/// Compose files merged as compose does for what a plan reads: a later
/// file's service, volume or top-level key replaces or extends the earlier's
/// (one level deep: a service's keys are replaced whole).
pub fn merge_compose(files: &[Value]) -> Value {
    let mut merged = serde_json::Map::new();
    for file in files {
        let Some(top) = file.as_object() else {
            continue;
        };
        for (key, value) in top {
            match (merged.get_mut(key), value) {
                (Some(Value::Object(have)), Value::Object(more))
                    if key == "services" || key == "volumes" =>
                {
                    for (name, def) in more {
                        match (have.get_mut(name), def) {
                            (Some(Value::Object(old)), Value::Object(new)) => {
                                for (k, v) in new {
                                    old.insert(k.clone(), v.clone());
                                }
                            }
                            _ => {
                                have.insert(name.clone(), def.clone());
                            }
                        }
                    }
                }
                _ => {
                    merged.insert(key.clone(), value.clone());
                }
            }
        }
    }
    Value::Object(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::restic::{HostFiles, HostKeys};
    use serde_json::json;

    fn backup_of(extra: &str) -> BackupConfig {
        let text = format!("[backup]\nrepository = \"/srv/backups/shop\"\n{extra}");
        crate::config::Config::parse(&text, std::path::Path::new("vpsup.toml"))
            .unwrap()
            .backup
            .unwrap()
    }

    fn compose() -> Value {
        json!({
            "services": {
                "db": {"image": "postgres:17", "volumes": ["pgdata:/var/lib/postgresql/data"]},
                "cache": {"image": "redis:8", "volumes": ["redisdata:/data"]},
                "web": {"image": "shop/web:1", "volumes": ["uploads:/app/uploads", "./data/files:/files"]},
                "search": {"image": "mongo:7"},
            },
            "volumes": {"pgdata": {}, "redisdata": {}, "uploads": {"name": "shop-uploads"}}
        })
    }

    fn make(backup: &BackupConfig, compose: &Value) -> BackupPlan {
        plan(PlanInput {
            app: "shop",
            backup,
            compose,
            project: "vpsup-shop",
            compose_cli: "docker compose -p vpsup-shop",
            data_dir: "/srv/vpsup/shop/data",
            repository: Repository::new(
                "/srv/backups/shop",
                HostFiles::for_app("shop"),
                HostKeys::AcceptNew,
            )
            .unwrap(),
        })
        .unwrap()
    }

    fn summary(plan: &BackupPlan) -> Vec<(String, &'static str, String)> {
        plan.services
            .iter()
            .map(|s| {
                let work = match &s.work {
                    Work::ListDatabases { .. } => "list databases".to_string(),
                    Work::Dump(parts) => parts
                        .iter()
                        .map(|p| p.file.clone())
                        .collect::<Vec<_>>()
                        .join(" "),
                    Work::Files { dirs, stop } => format!("{dirs:?} stop={stop}"),
                };
                (s.service.clone(), s.engine.name(), work)
            })
            .collect()
    }

    #[test]
    fn each_service_gets_its_engines_work() {
        let backup = backup_of("");
        let plan = make(&backup, &compose());
        assert_eq!(
            summary(&plan),
            [
                ("cache".into(), "redis", "dump.rdb".into()),
                ("db".into(), "postgres", "list databases".into()),
                ("search".into(), "mongo", "mongo.archive".into()),
                (
                    "web".into(),
                    "volume",
                    r#"[Path("/srv/vpsup/shop/data/data/files"), Volume("shop-uploads")] stop=false"#
                        .into()
                ),
            ]
        );
        assert_eq!(plan.retention, backup.retention());
        assert_eq!(plan.timeout, Duration::from_secs(6 * 3600));
        assert_eq!(plan.services[1].image, "postgres:17");
    }

    #[test]
    fn deployed_data_binds_are_found_as_project_data() {
        // What deploy uploads: `./data/files` pointed at the data directory.
        let mut deployed = compose();
        deployed["services"]["web"]["volumes"] = json!([
            "uploads:/app/uploads",
            "/srv/vpsup/shop/data/data/files:/files",
            {"type": "bind", "source": "/srv/vpsup/shop/data/state", "target": "/state"},
            "/etc/ssl/certs:/certs:ro"
        ]);
        let plan = make(&backup_of(""), &deployed);
        assert_eq!(
            summary(&plan)[3].2,
            r#"[Path("/srv/vpsup/shop/data/data/files"), Path("/srv/vpsup/shop/data/state"), Volume("shop-uploads")] stop=false"#
        );
    }

    #[test]
    fn config_overrides_skip_mode_stop_and_password() {
        let backup = backup_of(
            "[backup.services.search]\nskip = true\n[backup.services.db]\nmode = \"cluster\"\n[backup.services.web]\nengine = \"volume\"\nstop = true\n[backup.services.cache]\npassword_env = \"REDIS_PASSWORD\"\n",
        );
        let plan = make(&backup, &compose());
        let s = summary(&plan);
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[1], ("db".into(), "postgres", "cluster.sql".into()));
        assert!(s[2].2.ends_with("stop=true"), "{s:?}");
        assert_eq!(
            plan.services[0].password_env.as_deref(),
            Some("REDIS_PASSWORD")
        );
        let Work::Dump(parts) = &plan.services[0].work else {
            panic!()
        };
        assert!(
            parts[0].inner.contains("REDIS_PASSWORD"),
            "{}",
            parts[0].inner
        );
    }

    #[test]
    fn postgres_databases_are_listed_then_narrowed() {
        let backup = backup_of("[backup.services.db]\nexclude = [\"scratch\"]\n");
        let mut db = make(&backup, &compose()).services.remove(1);
        db.databases_listed("postgres\nshop\nscratch\n").unwrap();
        let Work::Dump(parts) = &db.work else {
            panic!()
        };
        let files: Vec<&str> = parts.iter().map(|p| p.file.as_str()).collect();
        assert_eq!(files, ["globals.sql", "postgres.pgdump", "shop.pgdump"]);

        let backup2 = backup_of("[backup.services.db]\ndatabases = [\"shop\", \"shopp\"]\n");
        let mut db = make(&backup2, &compose()).services.remove(1);
        let e = db.databases_listed("postgres\nshop\n").unwrap_err();
        assert!(
            e.contains("\"shopp\"") && e.contains("does not exist"),
            "{e}"
        );
    }

    #[test]
    fn volumes_without_a_name_get_the_projects_prefix() {
        let compose = json!({
            "services": {"files": {"image": "nginx", "volumes": ["media:/m"]}},
            "volumes": {"media": {}}
        });
        let plan = make(&backup_of(""), &compose);
        assert_eq!(
            plan.services[0].work,
            Work::Files {
                dirs: vec![Dir::Volume("vpsup-shop_media".into())],
                stop: false
            }
        );
        assert_eq!(
            Dir::Path("/srv/vpsup/shop/data/x".into()).label(),
            "srv_vpsup_shop_data_x"
        );
    }

    #[test]
    fn later_compose_files_extend_earlier_ones() {
        let merged = merge_compose(&[
            json!({"services": {"db": {"image": "postgres:16", "ports": ["5432"]}}, "volumes": {"pgdata": {}}}),
            json!({"services": {"db": {"image": "postgres:17"}, "web": {"image": "w"}}, "volumes": {"pgdata": {"name": "shop_pgdata"}}}),
        ]);
        assert_eq!(
            merged,
            json!({
                "services": {"db": {"image": "postgres:17", "ports": ["5432"]}, "web": {"image": "w"}},
                "volumes": {"pgdata": {"name": "shop_pgdata"}}
            })
        );
    }
}
