//! What to back up in an app, read from its compose file: each database
//! service by its image's name, and every other piece of data the app keeps
//! (named volumes, writable project mounts) as files.
//!
//! The one rule: a database's files are never copied as files. A live
//! database's data directory copied file by file is not a backup (it may not
//! start, or start with torn pages), so whatever a detected database mounts
//! belongs to its dump, and a mount that would copy part of it is an error.
//!
//! Detection goes by the image's repository name only (registry, tag and
//! digest stripped), against a list of names, never by guessing from
//! substrings: `postgrest`, `mongo-express` and `redis-commander` are not
//! databases. A service with `build:` is unknown: its image is whatever the
//! project builds. Config (`[backup.services.<name>] engine`) overrides both.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Engine, PostgresMode};
use crate::deploy::volumes;

/// The engine an image runs, by its repository name; `None`: not a
/// database vpsup knows (its volumes are then backed up as files).
pub fn detect(image: &str) -> Option<Engine> {
    let (namespace, name) = repository(image);
    let postgres = Engine::Postgres {
        mode: PostgresMode::Databases,
    };
    // Images whose namespace says it all (postgis/postgis, timescale/timescaledb-ha).
    match namespace {
        Some("postgis") => return Some(postgres),
        Some("timescale") if name.starts_with("timescaledb") => return Some(postgres),
        _ => {}
    }
    match name {
        "postgres" | "postgresql" | "pgvector" => Some(postgres),
        "mysql" | "mysql-server" | "mariadb" | "percona" | "percona-server" => Some(Engine::Mysql),
        "mongo"
        | "mongodb"
        | "mongodb-community-server"
        | "mongodb-enterprise-server"
        | "percona-server-mongodb" => Some(Engine::Mongo),
        "redis" | "redis-stack" | "redis-stack-server" | "valkey" | "keydb" => Some(Engine::Redis),
        _ => None,
    }
}

/// `(namespace, name)` of an image reference, lowercased by the caller's
/// registry rules (references are lowercase): `docker.io/library/postgres:17`
/// gives `(Some("library"), "postgres")`, `redis` gives `(None, "redis")`.
fn repository(image: &str) -> (Option<&str>, &str) {
    let image = image.split('@').next().unwrap_or(image);
    let mut path: Vec<&str> = image.split('/').collect();
    // A first component with a dot or a port, or `localhost`, is a registry.
    if path.len() > 1 && (path[0].contains(['.', ':']) || path[0] == "localhost") {
        path.remove(0);
    }
    let last = path.pop().unwrap_or_default();
    let name = last.split(':').next().unwrap_or(last);
    (path.last().copied(), name)
}

/// Where data lives, as the compose file names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum DataSource {
    /// A named volume: the key under the top-level `volumes:`.
    Named(String),
    /// A writable bind mount inside the project, normalised (`data/uploads`):
    /// on the host it is `/srv/vpsup/<app>/data/<path>` (see `deploy::volumes`).
    Project(String),
}

/// One thing a backup of the app covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub service: String,
    pub engine: Engine,
    /// For a database, what its dump covers (never copied as files); for
    /// `Engine::Volume`, what is copied.
    pub data: Vec<DataSource>,
}

/// Every backup target of a compose file, by service name. `configured`
/// holds the engines `[backup.services]` sets; it wins over detection. A
/// volume mounted by several services is backed up once, with the first
/// service (by name) that mounts it.
pub fn targets(
    compose: &Value,
    configured: &BTreeMap<String, Engine>,
) -> Result<Vec<Target>, String> {
    let services = match compose.get("services") {
        Some(Value::Object(s)) => s,
        Some(_) => return Err("`services` is not a mapping".to_string()),
        None => return Err("the compose file has no `services`".to_string()),
    };
    let declared = declared_volumes(compose);
    let mut mounts = BTreeMap::new();
    for (service, definition) in services {
        mounts.insert(
            service.as_str(),
            data_sources(service, definition, &declared)?,
        );
    }

    let engine_of = |service: &str, definition: &Value| {
        configured.get(service).cloned().or_else(|| {
            if definition.get("build").is_some() {
                return None;
            }
            definition
                .get("image")
                .and_then(Value::as_str)
                .and_then(detect)
        })
    };
    let mut databases = Vec::new();
    let mut others = Vec::new();
    for (service, definition) in services {
        let data = mounts[service.as_str()].clone();
        match engine_of(service, definition) {
            Some(Engine::Volume { stop }) => others.push((service.clone(), stop, data)),
            Some(engine) => databases.push(Target {
                service: service.clone(),
                engine,
                data,
            }),
            None => others.push((service.clone(), false, data)),
        }
    }

    let owned: Vec<&DataSource> = databases.iter().flat_map(|t| &t.data).collect();
    let mut taken: Vec<DataSource> = Vec::new();
    let mut out = databases.clone();
    for (service, stop, data) in others {
        let mut mine = Vec::new();
        for source in data {
            if let Some(db) = owned.iter().find(|o| overlaps(o, &source)) {
                if let (DataSource::Project(p), DataSource::Project(d)) = (&source, db) {
                    if p != d && volumes::in_data(d, std::slice::from_ref(p)) {
                        return Err(format!(
                            "service {service} mounts ./{p}, which holds a database's files (./{d}): a backup would copy them while the database runs. Mount a narrower path, or set [backup.services.{service}] skip = true"
                        ));
                    }
                }
                continue;
            }
            if taken.contains(&source) {
                continue;
            }
            taken.push(source.clone());
            mine.push(source);
        }
        if !mine.is_empty() {
            out.push(Target {
                service,
                engine: Engine::Volume { stop },
                data: mine,
            });
        }
    }
    out.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(out)
}

/// Whether two sources share files (a project path inside the other counts).
fn overlaps(a: &DataSource, b: &DataSource) -> bool {
    match (a, b) {
        (DataSource::Named(x), DataSource::Named(y)) => x == y,
        (DataSource::Project(x), DataSource::Project(y)) => {
            volumes::in_data(x, std::slice::from_ref(y))
                || volumes::in_data(y, std::slice::from_ref(x))
        }
        _ => false,
    }
}

/// Top-level volumes compose manages for the app (an `external` one belongs
/// to something else).
fn declared_volumes(compose: &Value) -> Vec<String> {
    let Some(declared) = compose.get("volumes").and_then(Value::as_object) else {
        return Vec::new();
    };
    declared
        .iter()
        .filter(|(_, v)| v.get("external").and_then(Value::as_bool) != Some(true))
        .map(|(k, _)| k.clone())
        .collect()
}

/// The named volumes and writable project paths one service mounts.
fn data_sources(
    service: &str,
    definition: &Value,
    declared: &[String],
) -> Result<Vec<DataSource>, String> {
    let one = serde_json::json!({ "services": { service: definition } });
    let binds = volumes::bind_mounts(&one, "")?;
    let project = volumes::data_paths(&binds).map_err(|e| e.to_string())?;
    let mut out: Vec<DataSource> = project.into_iter().map(DataSource::Project).collect();
    for volume in definition
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = volume_name(volume) {
            if declared.iter().any(|d| d == name) {
                out.push(DataSource::Named(name.to_string()));
            }
        }
    }
    Ok(out)
}

/// The named volume a mount uses (`pgdata:/var/lib/postgresql/data`, or the
/// long syntax), `None` for binds, tmpfs and anonymous volumes.
fn volume_name(volume: &Value) -> Option<&str> {
    let source = match volume {
        Value::String(spec) => {
            let (source, _target) = spec.split_once(':')?;
            source
        }
        Value::Object(long) => {
            let kind = long.get("type").and_then(Value::as_str).unwrap_or("volume");
            if kind != "volume" {
                return None;
            }
            long.get("source").and_then(Value::as_str)?
        }
        _ => return None,
    };
    (!source.is_empty() && !source.starts_with(['.', '/', '~'])).then_some(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: Engine = Engine::Postgres {
        mode: PostgresMode::Databases,
    };

    #[test]
    fn images_are_known_by_their_repository_name() {
        let cases: &[(&str, Option<Engine>)] = &[
            ("postgres", Some(PG)),
            ("postgres:17-alpine", Some(PG)),
            ("docker.io/library/postgres:17-alpine", Some(PG)),
            ("localhost:5000/postgres:16", Some(PG)),
            ("postgres:${PG_VERSION:-16}", Some(PG)),
            ("ghcr.io/acme/postgres@sha256:0123abcd", Some(PG)),
            ("bitnami/postgresql:16", Some(PG)),
            ("postgis/postgis:16-3.4", Some(PG)),
            ("timescale/timescaledb-ha:pg16", Some(PG)),
            ("pgvector/pgvector:pg16", Some(PG)),
            ("mysql:8", Some(Engine::Mysql)),
            ("mariadb:11", Some(Engine::Mysql)),
            (
                "registry.example.com:5000/team/mariadb:11.4",
                Some(Engine::Mysql),
            ),
            ("percona/percona-server:8.0", Some(Engine::Mysql)),
            ("mongo:7", Some(Engine::Mongo)),
            (
                "mongodb/mongodb-community-server:7.0-ubi8",
                Some(Engine::Mongo),
            ),
            ("percona/percona-server-mongodb:7.0", Some(Engine::Mongo)),
            ("redis:7-alpine", Some(Engine::Redis)),
            ("valkey/valkey:8", Some(Engine::Redis)),
            ("eqalpha/keydb", Some(Engine::Redis)),
            ("redis/redis-stack-server:latest", Some(Engine::Redis)),
            // Tools around databases are not databases.
            ("postgrest/postgrest", None),
            ("prometheuscommunity/postgres-exporter", None),
            ("mongo-express", None),
            ("rediscommander/redis-commander", None),
            ("oliver006/redis_exporter", None),
            ("timescale/promscale", None),
            ("adminer", None),
            ("nginx:1.27", None),
            ("${DB_IMAGE}", None),
        ];
        for (image, want) in cases {
            assert_eq!(&detect(image), want, "{image}");
        }
    }

    fn compose(yaml: &str) -> Value {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn target(service: &str, engine: Engine, data: &[DataSource]) -> Target {
        Target {
            service: service.into(),
            engine,
            data: data.to_vec(),
        }
    }

    fn named(n: &str) -> DataSource {
        DataSource::Named(n.into())
    }

    fn project(p: &str) -> DataSource {
        DataSource::Project(p.into())
    }

    #[test]
    fn databases_own_their_volumes_and_the_rest_is_copied_once() {
        let doc = compose(
            "services:
  db:
    image: postgres:17
    volumes: [pgdata:/var/lib/postgresql/data]
  cache:
    image: redis:7
    volumes: [{ type: volume, source: redisdata, target: /data }]
  web:
    build: .
    volumes:
      - uploads:/app/uploads
      - ./data/media:/app/media
      - ./config:/app/config:ro
      - /etc/localtime:/etc/localtime:ro
      - pgdata:/backup:ro
      - shared:/shared
      - type: tmpfs
        target: /tmp
  worker:
    image: shop-web
    volumes: [uploads:/app/uploads, ext:/ext]
volumes:
  pgdata:
  redisdata:
  uploads:
  ext: { external: true }
",
        );
        assert_eq!(
            targets(&doc, &BTreeMap::new()).unwrap(),
            [
                target("cache", Engine::Redis, &[named("redisdata")]),
                target("db", PG, &[named("pgdata")]),
                // `shared` is not declared: compose would refuse it, and
                // it is nothing vpsup makes.
                target(
                    "web",
                    Engine::Volume { stop: false },
                    &[project("data/media"), named("uploads")]
                ),
            ]
        );
    }

    #[test]
    fn configuration_wins_over_the_image_and_names_built_services() {
        let doc = compose(
            "services:
  db:
    build: ./db
    volumes: [dbdata:/var/lib/mysql]
  cache:
    image: redis
  files:
    image: redis
    volumes: [./data/files:/srv]
volumes:
  dbdata:
",
        );
        assert_eq!(
            targets(&doc, &BTreeMap::new()).unwrap(),
            [
                // A database with nothing mounted is still dumped.
                target("cache", Engine::Redis, &[]),
                // Built: unknown, so its volume is copied as files.
                target("db", Engine::Volume { stop: false }, &[named("dbdata")]),
                target("files", Engine::Redis, &[project("data/files")]),
            ]
        );
        let configured = BTreeMap::from([
            ("db".to_string(), Engine::Mysql),
            ("files".to_string(), Engine::Volume { stop: true }),
        ]);
        assert_eq!(
            targets(&doc, &configured).unwrap(),
            [
                target("cache", Engine::Redis, &[]),
                target("db", Engine::Mysql, &[named("dbdata")]),
                target(
                    "files",
                    Engine::Volume { stop: true },
                    &[project("data/files")]
                ),
            ]
        );
    }

    #[test]
    fn a_mount_over_a_databases_files_is_refused() {
        let doc = compose(
            "services:
  db:
    image: postgres
    volumes: [./data/pg:/var/lib/postgresql/data]
  app:
    image: shop
    volumes: [./data:/data]
",
        );
        let err = targets(&doc, &BTreeMap::new()).unwrap_err();
        assert!(
            err.contains("service app mounts ./data, which holds a database's files (./data/pg)"),
            "{err}"
        );
        // A mount inside the database's directory is its: skipped, not copied.
        let inside = compose(
            "services:
  db:
    image: postgres
    volumes: [./data:/var/lib/postgresql/data]
  app:
    image: shop
    volumes: [./data/pg/log:/log]
",
        );
        assert_eq!(
            targets(&inside, &BTreeMap::new()).unwrap(),
            [target("db", PG, &[project("data")])]
        );
    }
}
