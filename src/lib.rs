//! vpsup: an agentless VPS provisioner in one binary. See README.md.

pub mod acme;
pub mod alerts;
pub mod backup;
pub mod cli;
pub mod commands;
pub mod config;
pub mod deploy;
pub mod engine;
pub mod exit;
pub mod export;
pub mod facts;
pub mod fleet;
pub mod host_binary;
pub mod hostlock;
pub mod layout;
pub mod modules;
pub mod report;
pub mod scripts;
pub mod settings;
pub mod ssh_config;
pub mod sshd_algorithms;
pub mod terminal;
pub mod transport;
pub mod watch;
