//! Backups: vpsup drives the distribution's `restic` through shell scripts it
//! builds here.
//!
//! The parts, pure (builders return scripts, parsers read their output):
//! `detect.rs` (which services hold what), `engines/` (per-engine dump,
//! restore and drill scripts), `plan.rs` (the plan from the compose files),
//! `pipe.rs` (a dump streamed into restic), `restic.rs` (the repository's
//! commands and their output), `manifest.rs` (what a run wrote per
//! service), `restore.rs` (restore scripts), `schedule.rs` and `timers.rs`
//! (the host's systemd timers).
//!
//! The steps on one host, through a `Transport`: `host_settings.rs` (the
//! settings and records the host keeps), `lock.rs` (the app's backup lock),
//! `host.rs` (the session: one action under the lock, preflight and
//! repository id, `init`, `list`, the deployed release's plan), `run.rs` (a
//! backup run, the snapshot before a deploy), `drill.rs` (`verify`, the
//! restore drill), `restore_run.rs` (a restore after a safety snapshot).
//! `commands/backup.rs` runs them on the fleet and prints.

pub mod detect;
pub mod drill;
pub mod engines;
pub mod host;
pub mod host_settings;
pub mod lock;
pub mod manifest;
pub mod pipe;
pub mod plan;
pub mod restic;
pub mod restore;
pub mod restore_run;
pub mod run;
pub mod schedule;
pub mod status;
pub mod timers;

use serde::{Deserialize, Serialize};

/// How one service's data is copied out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "engine", rename_all = "lowercase")]
pub enum Engine {
    Postgres {
        mode: PostgresMode,
    },
    Mysql,
    Mongo,
    Redis,
    /// The service's volumes as files; `stop` stops it around the copy.
    Volume {
        stop: bool,
    },
}

/// PostgreSQL: one `pg_dump -Fc` per database plus the globals, or one
/// `pg_dumpall` of the whole cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PostgresMode {
    #[default]
    Databases,
    Cluster,
}

impl Engine {
    /// The word in snapshot tags (`engine=postgres`) and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Postgres { .. } => "postgres",
            Engine::Mysql => "mysql",
            Engine::Mongo => "mongo",
            Engine::Redis => "redis",
            Engine::Volume { .. } => "volume",
        }
    }
}

/// One backup run: every snapshot it writes carries `run=<id>`, so a run's
/// parts and its manifest are found together. UTC time to the second, which
/// sorts and reads as a date: `20261205T031700Z`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    pub fn at(time: time::OffsetDateTime) -> RunId {
        let t = time.to_offset(time::UtcOffset::UTC);
        RunId(format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ))
    }

    pub fn now() -> RunId {
        RunId::at(time::OffsetDateTime::now_utc())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_serialize_as_their_tag_word() {
        let pg = Engine::Postgres {
            mode: PostgresMode::Cluster,
        };
        assert_eq!(
            serde_json::to_string(&pg).unwrap(),
            r#"{"engine":"postgres","mode":"cluster"}"#
        );
        assert_eq!(pg.name(), "postgres");
        let volume: Engine = serde_json::from_str(r#"{"engine":"volume","stop":true}"#).unwrap();
        assert_eq!(volume, Engine::Volume { stop: true });
        assert_eq!(volume.name(), "volume");
    }

    #[test]
    fn run_ids_are_utc_seconds() {
        let t = time::macros::datetime!(2026-12-05 04:17:09 +01:00);
        assert_eq!(RunId::at(t).as_str(), "20261205T031709Z");
    }
}
