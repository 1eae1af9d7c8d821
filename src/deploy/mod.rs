//! `vpsup deploy`, piece by piece: what the compose file exposes (`compose`).
//! The command itself is not built yet (see the README's status).

pub mod compose;
