//! Backups (issue 12). Placeholder with the core helper's two enums, so the
//! engines half compiles on its own; the core's mod.rs replaces this file.

use serde::{Deserialize, Serialize};

pub mod detect;
pub mod engines;

/// What a service's data is, and so how it is dumped and restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres { mode: PostgresMode },
    Mysql,
    Mongo,
    Redis,
    Volume { stop: bool },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PostgresMode {
    Databases,
    Cluster,
}
