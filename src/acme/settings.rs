//! The ACME settings a run uses, from a project's `[acme]`: what `deploy` and
//! `renew-certs` issue and renew with.

use std::path::Path;

use super::certs::AcmeSettings;
use super::dns01::{self, Rfc2136};
use crate::config::AcmeConfig;

/// `[acme]` names something that cannot be used (bad input: exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum AcmeSettingsError {
    #[error("[acme.dns]: {0}")]
    Dns(String),
}

impl crate::exit::ExitStatus for AcmeSettingsError {
    fn exit_code(&self) -> u8 {
        crate::exit::BAD_INPUT
    }
}

/// The ACME settings from vpsup.toml; relative paths are from its directory.
pub fn acme_settings(acme: &AcmeConfig, project: &Path) -> Result<AcmeSettings, AcmeSettingsError> {
    let dns = match &acme.dns {
        None => None,
        Some(dns) => {
            let path = project.join(&dns.secret_file);
            let secret = std::fs::read_to_string(&path).map_err(|e| {
                AcmeSettingsError::Dns(format!("cannot read secret_file {}: {e}", path.display()))
            })?;
            let server = dns_server_address(&dns.server)?;
            Some(Rfc2136 {
                server,
                zone: dns.zone.0.clone(),
                key_name: dns.key_name.clone(),
                algorithm: dns01::algorithm(&dns.algorithm).map_err(AcmeSettingsError::Dns)?,
                secret: secret.trim().to_string(),
            })
        }
    };
    Ok(AcmeSettings {
        directory: acme.directory.url().to_string(),
        email: acme.email.0.clone(),
        extra_root: acme.extra_root.as_ref().map(|p| project.join(p)),
        profile: acme.profile.clone(),
        store_dir: acme.store.to_string(),
        webroot: acme.webroot.to_string(),
        dns,
    })
}

/// `host:port` (port 53 when left out) to one socket address.
fn dns_server_address(server: &str) -> Result<std::net::SocketAddr, AcmeSettingsError> {
    use std::net::ToSocketAddrs;
    let with_port = if server
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        server.to_string()
    } else {
        format!("{server}:53")
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| AcmeSettingsError::Dns(format!("server {server:?} does not resolve")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_servers_default_to_port_53() {
        assert_eq!(dns_server_address("127.0.0.1").unwrap().port(), 53);
        assert_eq!(dns_server_address("127.0.0.1:5353").unwrap().port(), 5353);
        assert!(dns_server_address("no.such.host.invalid").is_err());
    }
}
