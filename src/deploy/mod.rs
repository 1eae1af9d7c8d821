//! `vpsup deploy`, piece by piece: what the compose file exposes (`compose`),
//! how nginx reaches services on loopback (`ports`), the releases kept on the
//! host (`releases`), the secrets the host generates (`secrets`), the DNS
//! preflight (`dns`), uploading only what changed (`upload`), the compose
//! command lines and the health probe (`stack`).
//! The command itself is not built yet (see the README's status).

pub mod compose;
pub mod dns;
pub mod https_check;
pub mod ports;
pub mod release;
pub mod releases;
pub mod remote;
pub mod secrets;
pub mod stack;
pub mod upload;
pub mod volumes;
