//! `vpsup deploy` and `vpsup rollback`, piece by piece; `commands::deploy`
//! runs them in order. Before connecting: the release (`release`: the
//! project's files, what the compose file exposes (`compose`), how nginx
//! reaches services on loopback (`ports`), the app's data (`volumes`)). On
//! each host: the one probe (`probe`), the plan made from it (`plan`), the
//! DNS preflight (`dns`), uploading only what changed (`upload`), the
//! secrets the host generates (`secrets`), the health gate, serving and
//! going back (`start`, on the compose command lines of `stack` and the
//! host scripts of `remote`), the nginx files (`nginx`), the releases kept
//! (`releases`); then the final check (`https_check`) and the report
//! (`report`). What stops a deploy: `error`.

pub mod compose;
pub mod dns;
pub mod error;
pub mod https_check;
pub mod nginx;
pub mod plan;
pub mod ports;
pub mod probe;
pub mod release;
pub mod releases;
pub mod remote;
pub mod report;
pub mod secrets;
pub mod stack;
pub mod start;
pub mod upload;
pub mod volumes;
