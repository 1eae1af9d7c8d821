//! `vpsup renew-certs`: for every host in vpsup.toml (or `--limit`), every
//! certificate in its store: renew when due (or `--force`), install, make the
//! web server use it (`[acme] reload`, by default `nginx -t` then a reload),
//! and print names / issuer / expiry / days left / action. `--local` does the
//! same on the host itself, through the local transport: what its timer runs.

use std::path::Path;

use serde::Serialize;
use time::OffsetDateTime;

use super::play::project_dir;
use super::{connect, MAX_PARALLEL_HOSTS};
use crate::acme::certs::{AcmeSettings, Action, CertOutcome, Certs};
use crate::acme::dns01::{self, Rfc2136};
use crate::acme::host_settings::{self, HostFile, HostSettingsError};
use crate::config::AcmeConfig;
use crate::hostlock::HostLock;
use crate::settings::Settings;
use crate::transport::{ExecRequest, LocalTransport, Transport};

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("renew-certs needs an [acme] section with your email in {}", .0.display())]
    NoAcme(std::path::PathBuf),
    #[error("[acme.dns]: {0}")]
    Dns(String),
    #[error("[acme]: {0}")]
    HostFiles(#[from] HostSettingsError),
}

/// The ACME settings from vpsup.toml; relative paths are from its directory.
pub fn acme_settings(acme: &AcmeConfig, project: &Path) -> Result<AcmeSettings, RenewError> {
    let dns = match &acme.dns {
        None => None,
        Some(dns) => {
            let path = project.join(&dns.secret_file);
            let secret = std::fs::read_to_string(&path).map_err(|e| {
                RenewError::Dns(format!("cannot read secret_file {}: {e}", path.display()))
            })?;
            let server = tokio_lookup(&dns.server)?;
            Some(Rfc2136 {
                server,
                zone: dns.zone.0.clone(),
                key_name: dns.key_name.clone(),
                algorithm: dns01::algorithm(&dns.algorithm).map_err(RenewError::Dns)?,
                secret: secret.trim().to_string(),
            })
        }
    };
    Ok(AcmeSettings {
        directory: acme.directory.url().to_string(),
        email: acme.email.0.clone(),
        extra_root: acme.extra_root.as_ref().map(|p| project.join(p)),
        profile: acme.profile.clone(),
        store_dir: acme.store.clone(),
        webroot: acme.webroot.clone(),
        dns,
    })
}

/// `host:port` (port 53 when left out) to one socket address.
fn tokio_lookup(server: &str) -> Result<std::net::SocketAddr, RenewError> {
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
        .ok_or_else(|| RenewError::Dns(format!("server {server:?} does not resolve")))
}

#[derive(Debug, Serialize)]
struct CertRow {
    name: String,
    names: Vec<String>,
    issuer: String,
    #[serde(with = "time::serde::rfc3339::option")]
    expires: Option<OffsetDateTime>,
    days_left: Option<i64>,
    action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct HostRow {
    host: String,
    certificates: Vec<CertRow>,
    /// Whether the settings the host's own timer reads were `written` or `unchanged`.
    #[serde(skip_serializing_if = "Option::is_none")]
    host_settings: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl HostRow {
    fn new(host: String) -> HostRow {
        HostRow {
            host,
            certificates: Vec::new(),
            host_settings: None,
            error: None,
        }
    }

    fn unreachable(host: &str, error: String) -> HostRow {
        HostRow {
            error: Some(error),
            ..HostRow::new(host.to_string())
        }
    }

    fn failed(&self) -> bool {
        self.error.is_some() || self.certificates.iter().any(|c| c.error.is_some())
    }
}

pub async fn run(settings: &Settings, force: bool, local: bool) -> anyhow::Result<()> {
    let acme_config = settings
        .config
        .as_ref()
        .and_then(|c| c.acme.as_ref())
        .ok_or_else(|| RenewError::NoAcme(settings.config_path.clone()))?;
    let project = project_dir(settings);
    let acme = acme_settings(acme_config, &project)?;
    let rows = if local {
        let transport = LocalTransport::current();
        let owner = lock_owner(true);
        vec![
            renew_on(
                &transport,
                local_host_name(),
                settings,
                &acme,
                force,
                &[],
                &owner,
            )
            .await,
        ]
    } else {
        let owner = lock_owner(false);
        // What the host's own timer needs, refreshed by every real run.
        let host_files = if settings.check {
            Vec::new()
        } else {
            host_settings::files(acme_config, &project)?
        };
        let targets = settings.targets(None)?;
        let limit = tokio::sync::Semaphore::new(MAX_PARALLEL_HOSTS);
        futures::future::join_all(targets.iter().map(|target| async {
            let _slot = limit.acquire().await;
            match connect(settings, target).await {
                Err(e) => HostRow::unreachable(&target.name, e.to_string()),
                Ok((transport, _)) => {
                    let row = renew_on(
                        &transport,
                        target.name.clone(),
                        settings,
                        &acme,
                        force,
                        &host_files,
                        &owner,
                    )
                    .await;
                    transport.close().await;
                    row
                }
            }
        }))
        .await
    };
    if settings.json {
        let doc = serde_json::json!({"check": settings.check, "hosts": rows});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_table(&rows);
    }
    let failed = rows.iter().filter(|r| r.failed()).count();
    if failed > 0 {
        anyhow::bail!("renewal failed on {failed} of {} host(s); certificates that failed keep their previous version", rows.len());
    }
    Ok(())
}

/// Who holds the renewal lock, for whoever is refused it.
fn lock_owner(local: bool) -> String {
    if local {
        format!(
            "the renewal timer on {} (vpsup renew-certs --local)",
            local_host_name()
        )
    } else {
        let user = std::env::var("USER").unwrap_or_else(|_| "someone".to_string());
        format!("{user}@{} (vpsup renew-certs)", local_host_name())
    }
}

/// This machine's name, for the report of a `--local` run.
fn local_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// Renews on one host; then, when `host_files` are given, brings the host
/// timer's settings up to date.
async fn renew_on(
    transport: &dyn Transport,
    host: String,
    settings: &Settings,
    acme: &AcmeSettings,
    force: bool,
    host_files: &[HostFile],
    lock_owner: &str,
) -> HostRow {
    let mut row = HostRow::new(host);
    // One renewal at a time per host: the timer and an operator (or two
    // operators) would otherwise both order the same certificates.
    let lock = if settings.check {
        None
    } else {
        let path = format!("{}/renew.lock", acme.store_dir.trim_end_matches('/'));
        match HostLock::acquire(transport, &path, lock_owner, "certificate renewal").await {
            Ok(lock) => Some(lock),
            Err(e) => {
                row.error = Some(e.to_string());
                return row;
            }
        }
    };
    let certs = Certs::new(transport, acme);
    match certs.renew_all(force, settings.check).await {
        Err(e) => row.error = Some(e.to_string()),
        Ok(outcomes) => {
            let changed = outcomes
                .iter()
                .any(|o| o.as_ref().is_ok_and(|o| o.action.changed()));
            row.certificates = outcomes.into_iter().map(cert_row).collect();
            if (changed || certs.reload_pending()) && !settings.check {
                let script = certs.store().reload_script(&acme_reload(settings));
                if let Err(e) = reload(transport, script).await {
                    row.error = Some(e);
                }
            }
        }
    }
    if let Some(lock) = lock {
        if let Err(e) = lock.release(transport).await {
            row.error
                .get_or_insert(format!("releasing the renewal lock: {e}"));
        }
    }
    // Only settings that just worked are handed to the host's timer.
    if !host_files.is_empty() && !row.failed() {
        match host_settings::sync(transport, &acme.store_dir, host_files).await {
            Ok(written) => {
                row.host_settings = Some(if written.is_empty() {
                    "unchanged"
                } else {
                    "written"
                })
            }
            Err(e) => {
                let e = format!("the host's renewal timer settings were not updated: {e}");
                row.error = Some(
                    row.error
                        .take()
                        .map_or(e.clone(), |first| format!("{first}; {e}")),
                );
            }
        }
    }
    row
}

fn acme_reload(settings: &Settings) -> String {
    settings
        .config
        .as_ref()
        .and_then(|c| c.acme.as_ref())
        .map(|a| a.reload.clone())
        .unwrap_or_default()
}

/// Makes the web server use the new certificates. `nginx -t` first (in the
/// default command): a configuration that fails it is never loaded.
async fn reload(transport: &dyn Transport, script: String) -> Result<(), String> {
    transport
        .run_ok(
            "reloading the web server for the new certificates",
            ExecRequest::new(script).become_root(true),
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            format!(
                "{e} (the new certificates are installed; nginx still serves the previous ones, and every later run retries the reload)"
            )
        })
}

fn cert_row(outcome: Result<CertOutcome, (String, crate::acme::AcmeError)>) -> CertRow {
    let now = OffsetDateTime::now_utc();
    match outcome {
        Ok(o) => CertRow {
            name: o.name,
            names: o.info.as_ref().map(|i| i.names.clone()).unwrap_or_default(),
            issuer: o
                .info
                .as_ref()
                .map(|i| short_issuer(&i.issuer))
                .unwrap_or_default(),
            expires: o.info.as_ref().map(|i| i.not_after),
            days_left: o.info.as_ref().map(|i| i.days_left(now)),
            action: match &o.action {
                Action::Kept { renew_from } => format!("ok (renews from {})", renew_from.date()),
                Action::Issued => "issued".to_string(),
                Action::Renewed { why } => format!("renewed ({why})"),
                Action::WouldRenew { why } => format!("would renew ({why})"),
            },
            error: None,
        },
        Err((name, e)) => CertRow {
            name,
            names: Vec::new(),
            issuer: String::new(),
            expires: None,
            days_left: None,
            action: "failed".to_string(),
            error: Some(e.to_string()),
        },
    }
}

/// `CN=R11, O=Let's Encrypt, C=US` -> `R11`.
fn short_issuer(issuer: &str) -> String {
    issuer
        .split(',')
        .find_map(|part| part.trim().strip_prefix("CN="))
        .unwrap_or(issuer)
        .to_string()
}

fn print_table(rows: &[HostRow]) {
    for row in rows {
        if let Some(e) = &row.error {
            println!("{}: {e}", row.host);
        }
        if row.certificates.is_empty() && row.error.is_none() {
            println!("{}: no certificates in the store yet", row.host);
        }
        if row.host_settings == Some("written") {
            println!(
                "{}: the settings the host's own renewal timer reads were updated",
                row.host
            );
        }
        for c in &row.certificates {
            match &c.error {
                Some(e) => println!("{} | {} | failed: {e}", row.host, c.name),
                None => println!(
                    "{} | {} | {} | issuer {} | expires {} | {} days left | {}",
                    row.host,
                    c.name,
                    c.names.join(" "),
                    c.issuer,
                    c.expires.map(|t| t.date().to_string()).unwrap_or_default(),
                    c.days_left.unwrap_or_default(),
                    c.action
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_are_shortened_to_their_common_name() {
        assert_eq!(short_issuer("CN=R11, O=Let's Encrypt, C=US"), "R11");
        assert_eq!(short_issuer("O=Nobody"), "O=Nobody");
    }

    #[test]
    fn dns_servers_default_to_port_53() {
        assert_eq!(tokio_lookup("127.0.0.1").unwrap().port(), 53);
        assert_eq!(tokio_lookup("127.0.0.1:5353").unwrap().port(), 5353);
        assert!(tokio_lookup("no.such.host.invalid").is_err());
    }
}
