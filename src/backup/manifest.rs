//! The manifest of one service's backup run: which snapshots hold its parts
//! and what the data looked like when it was dumped (PostgreSQL row counts,
//! Redis keys and where the server keeps its RDB). It is stored in the repository itself, as a snapshot of its
//! own (`/<app>/<service>/manifest.json`, tag `kind=manifest`), so a restore
//! drill can check a restore even after the host is gone.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::engines::redis::RdbReport;
use super::pipe::{stdin_path, Pipeline};
use super::restic::{Repository, SnapshotFilter, SnapshotMeta};
use super::Engine;

/// Raised when the format changes incompatibly; readers refuse newer ones.
pub const MANIFEST_VERSION: u32 = 1;

pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub run: String,
    pub app: String,
    pub service: String,
    #[serde(flatten)]
    pub engine: Engine,
    /// The service's image when it was dumped (the drill starts the same one).
    pub image: String,
    pub parts: Vec<Part>,
    /// PostgreSQL: database → `schema.table` → rows, from the dump's own
    /// MVCC snapshot.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pg_counts: BTreeMap<String, BTreeMap<String, u64>>,
    /// Redis: where the RDB lived and the keys in it, as the dump reported.
    #[serde(flatten)]
    pub redis: RdbReport,
}

/// One snapshot of the run: a database's dump, the globals, a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// As restic lists it: `/shop+db+shop.pgdump`.
    pub path: String,
    pub snapshot: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read the backup manifest: {0}")]
    Invalid(String),
    #[error("the backup manifest has version {0}; this vpsup reads up to {MANIFEST_VERSION}: update vpsup")]
    TooNew(u32),
}

impl Manifest {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest always serializes") + "\n"
    }

    pub fn from_json(text: &str) -> Result<Manifest, ManifestError> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let version: Version =
            serde_json::from_str(text).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        if version.version > MANIFEST_VERSION {
            return Err(ManifestError::TooNew(version.version));
        }
        serde_json::from_str(text).map_err(|e| ManifestError::Invalid(e.to_string()))
    }

    /// The pipeline that stores this manifest: run it with `to_json()` on the
    /// script's stdin.
    pub fn store(&self, host: &str, timeout: Duration) -> Result<Pipeline, String> {
        Ok(Pipeline {
            producer: "cat".to_string(),
            filename: stdin_path(&self.app, &self.service, MANIFEST_FILE),
            meta: SnapshotMeta::manifest(host, &self.app, &self.service, &self.run)?,
            timeout,
            // `{}` is not a manifest.
            min_bytes: 16,
        })
    }
}

/// A script that prints the newest manifest of `service` (or of run `run`).
pub fn fetch(
    repo: &Repository,
    app: &str,
    service: &str,
    run: Option<&str>,
    timeout: Duration,
) -> String {
    let filter = SnapshotFilter {
        service: Some(service.to_string()),
        run: run.map(str::to_string),
        manifests_only: true,
        // "The newest" is the newest backup, never a restore's safety
        // snapshot of what it was about to overwrite.
        retained: run.is_none(),
        ..SnapshotFilter::app(app)
    };
    let path = format!("/{}", stdin_path(app, service, MANIFEST_FILE));
    // `dump latest` takes the same filters as `snapshots`.
    format!(
        "{}exec {} {} dump latest {} {}\n",
        repo.script_prelude(),
        super::restic::timeout_prefix(timeout),
        repo.restic(),
        crate::transport::script::quote(&path),
        filter.tag_args()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::restic::{HostFiles, HostKeys};
    use crate::backup::PostgresMode;

    fn manifest() -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            run: "20261205T031700Z".into(),
            app: "shop".into(),
            service: "db".into(),
            engine: Engine::Postgres {
                mode: PostgresMode::Databases,
            },
            image: "postgres:17".into(),
            parts: vec![Part {
                path: "/shop+db+shop.pgdump".into(),
                snapshot: "e05c84ae".into(),
                bytes: 1288895,
            }],
            pg_counts: BTreeMap::from([(
                "shop".to_string(),
                BTreeMap::from([("public.orders".to_string(), 1200)]),
            )]),
            redis: RdbReport::default(),
        }
    }

    #[test]
    fn a_manifest_round_trips_with_its_engine_flat() {
        let m = manifest();
        let json = m.to_json();
        assert!(
            json.contains("\"engine\": \"postgres\",\n  \"mode\": \"databases\""),
            "{json}"
        );
        assert!(!json.contains("redis_"), "{json}");
        assert_eq!(Manifest::from_json(&json).unwrap(), m);
        let redis = Manifest {
            engine: Engine::Redis,
            redis: RdbReport {
                dir: Some("/var/lib/redis".into()),
                file: Some("other.rdb".into()),
                keys: Some(5460),
                expires: Some(50),
                already_expired: Some(0),
            },
            ..m
        };
        let json = redis.to_json();
        assert!(
            json.contains("\"redis_dir\": \"/var/lib/redis\",\n  \"redis_file\": \"other.rdb\""),
            "{json}"
        );
        assert_eq!(Manifest::from_json(&json).unwrap(), redis);
    }

    /// What vpsup wrote before it recorded where the RDB lives: the keys
    /// only, and the place is the official image's.
    #[test]
    fn an_older_redis_manifest_restores_to_data_dump_rdb() {
        let old = r#"{
  "version": 1,
  "run": "20261205T031700Z",
  "app": "shop",
  "service": "cache",
  "engine": "redis",
  "image": "redis:7",
  "parts": [{"path": "/shop+cache+dump.rdb", "snapshot": "e05c84ae", "bytes": 4096}],
  "redis_keys": 5460
}"#;
        let m = Manifest::from_json(old).unwrap();
        assert_eq!(m.redis.keys, Some(5460));
        assert_eq!(m.redis.place(), ("/data", "dump.rdb"));
    }

    #[test]
    fn newer_or_broken_manifests_are_refused() {
        let newer = manifest()
            .to_json()
            .replace("\"version\": 1", "\"version\": 2");
        assert_eq!(Manifest::from_json(&newer), Err(ManifestError::TooNew(2)));
        assert!(matches!(
            Manifest::from_json("{\"version\":1}"),
            Err(ManifestError::Invalid(_))
        ));
    }

    #[test]
    fn it_is_stored_and_fetched_by_its_own_tags() {
        let m = manifest();
        let p = m.store("web-1", Duration::from_secs(60)).unwrap();
        assert_eq!(p.filename, "shop+db+manifest.json");
        assert_eq!(p.producer, "cat");
        assert!(p.meta.tags.contains(&"kind=manifest".to_string()));
        assert!(p.meta.tags.contains(&"run=20261205T031700Z".to_string()));
        let repo = Repository::new("/srv/b", HostFiles::for_app("shop"), HostKeys::Pinned).unwrap();
        assert!(fetch(&repo, "shop", "db", Some("r1"), Duration::from_secs(60)).ends_with(
            "restic dump latest /shop+db+manifest.json --tag app=shop,service=db,run=r1,kind=manifest\n"
        ));
    }
}
