//! `vpsup renew-certs`: for every host in vpsup.toml (or `--limit`), every
//! certificate in its store: renew when due (or `--force`), install, make the
//! web server use it (`[acme] reload`, by default `nginx -t` then a reload),
//! and print names / issuer / expiry / days left / action. `--local` does the
//! same on the host itself, through the local transport: what its timer runs.

use std::path::{Path, PathBuf};

use serde::Serialize;
use time::OffsetDateTime;

use super::play::project_dir;
use super::{connect, MAX_PARALLEL_HOSTS};
use crate::acme::certinfo::short_issuer;
use crate::acme::certs::{AcmeSettings, CertOutcome, Certs};
use crate::acme::dns01::{self, Rfc2136};
use crate::acme::host_settings::{self, HostFile, HostSettingsError};
use crate::acme::renewal_lock;
use crate::acme::store;
use crate::config::AcmeConfig;
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

    fn add_error(&mut self, error: String) {
        self.error = Some(match self.error.take() {
            Some(first) => format!("{first}; {error}"),
            None => error,
        });
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
    let host_files = if local || settings.check {
        Vec::new()
    } else {
        // What the host's own timer needs, refreshed by every real run.
        host_settings::files(acme_config, &project)?
    };
    let run = RenewRun {
        settings,
        acme: &acme,
        force,
        host_files: &host_files,
        local,
        lock_owner: lock_owner(local),
    };
    let rows = if local {
        vec![renew_on(&LocalTransport::current(), local_host_name(), &run).await]
    } else {
        let targets = settings.targets(None)?;
        let limit = tokio::sync::Semaphore::new(MAX_PARALLEL_HOSTS);
        futures::future::join_all(targets.iter().map(|target| async {
            let _slot = limit.acquire().await;
            match connect(settings, target).await {
                Err(e) => HostRow::unreachable(&target.name, e.to_string()),
                Ok((transport, _)) => {
                    let row = renew_on(&transport, target.name.clone(), &run).await;
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

/// For `renew-certs --local` without `--config`: the settings file the
/// operator's runs leave in the default store. `None` when the host has
/// nothing to renew yet (said on stderr; an empty report under `--json`).
/// Certificates without that file are an error: the timer would otherwise
/// succeed every day while they expire.
pub fn host_settings_file(json: bool) -> anyhow::Result<Option<PathBuf>> {
    let path = PathBuf::from(host_settings::config_path(store::DEFAULT_DIR));
    if path.exists() {
        return Ok(Some(path));
    }
    let certs = std::fs::read_dir(Path::new(store::DEFAULT_DIR).join("certs"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0);
    if certs > 0 {
        anyhow::bail!(
            "{certs} certificate(s) in {}, but no {}: this host cannot renew them on its own. Run `vpsup renew-certs` (or `vpsup deploy`) once from the project's machine, which writes it",
            store::DEFAULT_DIR,
            path.display()
        );
    }
    eprintln!(
        "no certificates to renew on this host yet: {} is written by the first `vpsup renew-certs` or `vpsup deploy` with an [acme] section",
        path.display()
    );
    if json {
        println!("{}", serde_json::json!({"check": false, "hosts": []}));
    }
    Ok(None)
}

/// One `renew-certs` run, as every host sees it.
struct RenewRun<'a> {
    settings: &'a Settings,
    acme: &'a AcmeSettings,
    force: bool,
    /// What the host's own timer reads, brought up to date on each host
    /// (none for `--local` and `--check`).
    host_files: &'a [HostFile],
    /// On the host itself (the timer's run), not over SSH.
    local: bool,
    /// Who holds the renewal lock, for whoever is refused it.
    lock_owner: String,
}

/// Renews on one host, holding its renewal lock: the timer and an operator
/// (or two operators, or a deploy) would otherwise order the same
/// certificates at once.
async fn renew_on(transport: &dyn Transport, host: String, run: &RenewRun<'_>) -> HostRow {
    let mut row = HostRow::new(host.clone());
    if run.settings.check {
        renew_and_hand_over(transport, run, &mut row).await;
        return row;
    }
    let held = renewal_lock::hold(
        transport,
        &run.acme.store_dir,
        &run.lock_owner,
        run.local,
        &host,
        renew_and_hand_over(transport, run, &mut row),
    )
    .await;
    match held {
        Err(e) => row.add_error(e.to_string()),
        Ok(held) => {
            if held.outcome.is_none() {
                row.add_error("interrupted before it finished; certificates not yet renewed keep their previous version".to_string());
            }
            if let Some(problem) = held.release_problem("renewal") {
                row.add_error(problem);
            }
        }
    }
    row
}

/// Renews what is due, reloads the web server when something changed (or a
/// reload is owed), and hands the host's timer its settings.
async fn renew_and_hand_over(transport: &dyn Transport, run: &RenewRun<'_>, row: &mut HostRow) {
    let certs = Certs::new(transport, run.acme);
    let renewed = certs.renew_all(run.force, run.settings.check).await;
    for note in certs.notes() {
        eprintln!("{}: {note}", row.host);
    }
    let outcomes = match renewed {
        Ok(outcomes) => outcomes,
        Err(e) => {
            row.add_error(e.to_string());
            return;
        }
    };
    let changed = outcomes
        .iter()
        .any(|o| o.as_ref().is_ok_and(|o| o.action.changed()));
    row.certificates = outcomes.into_iter().map(cert_row).collect();
    if (changed || certs.reload_pending()) && !run.settings.check {
        let script = certs.store().reload_script(&acme_reload(run.settings));
        if let Err(e) = reload(transport, script).await {
            row.add_error(e);
        }
    }
    // The store was read with these settings: the timer gets them even when
    // a certificate failed (the CA may be down today), so that it keeps
    // trying on its own.
    if !run.host_files.is_empty() {
        match host_settings::sync(transport, &run.acme.store_dir, run.host_files).await {
            Ok(written) => {
                row.host_settings = Some(if written.is_empty() {
                    "unchanged"
                } else {
                    "written"
                })
            }
            Err(e) => row.add_error(format!(
                "the host's renewal timer settings were not updated: {e}"
            )),
        }
    }
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
            action: o.action.to_string(),
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
    fn dns_servers_default_to_port_53() {
        assert_eq!(tokio_lookup("127.0.0.1").unwrap().port(), 53);
        assert_eq!(tokio_lookup("127.0.0.1:5353").unwrap().port(), 5353);
        assert!(tokio_lookup("no.such.host.invalid").is_err());
    }
}
