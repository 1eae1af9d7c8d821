//! `vpsup deploy` and `vpsup rollback`, piece by piece; `commands::deploy`
//! runs them in order. Before connecting: the release (`local_release`: the
//! project's files, the guard on what the compose file publishes
//! (`port_guard`), how nginx reaches services on loopback (`ports`), the
//! app's data (`volumes`)). On each host: the one probe (`probe`), the plan
//! made from it (`plan`), the DNS preflight (`dns`), uploading only what
//! changed (`upload`), the secrets the host generates (`secrets`), the health
//! gate, serving and going back (`start`, on the `docker compose` command
//! lines of `compose_cli` and the host scripts of `remote`), the nginx files
//! (`nginx`), the releases kept on the host (`host_releases`); then the final
//! check (`https_check`) and the report (`report`). What stops a deploy:
//! `error`. Zero-downtime (docs/zero-downtime.md): which service switches
//! blue/green and which is recreated in place (`strategy`), and the host's
//! side: the launch beside what serves, the drain, the stop, the recovery
//! (`switch`).

pub mod compose_cli;
pub mod compose_model;
pub mod current;
pub mod dns;
pub mod error;
pub mod host_releases;
pub mod https_check;
pub mod interpolate;
pub mod local_release;
pub mod nginx;
pub mod plan;
pub mod port_guard;
pub mod ports;
pub mod probe;
pub mod remote;
pub mod report;
pub mod secrets;
pub mod start;
pub mod strategy;
pub mod switch;
pub mod upload;
pub mod volumes;
