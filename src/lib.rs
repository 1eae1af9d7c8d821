//! vpsup: an agentless VPS provisioner in one binary. See README.md.

pub mod acme;
pub mod backup;
pub mod cli;
pub mod commands;
pub mod config;
pub mod deploy;
pub mod engine;
pub mod facts;
pub mod fleet;
pub mod hostlock;
pub mod modules;
pub mod report;
pub mod settings;
pub mod ssh_config;
pub mod transport;
