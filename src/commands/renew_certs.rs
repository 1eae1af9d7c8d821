//! `vpsup renew-certs`: for every host in vpsup.toml (or `--limit`), every
//! certificate in its store: renew when due (or `--force`), install, make the
//! web server use it (`[acme] reload`, by default `nginx -t` then a reload),
//! and print names / issuer / expiry / days left / action. `--local` does the
//! same on the host itself, through the local transport: what its timer runs.
//!
//! Several apps may share the host's store, each with its own `[acme]`
//! (`acme::host_settings`). Each certificate is renewed with the settings of
//! the app that claims it: on the host, every app's; from an operator's
//! project, its own app's and the unclaimed ones, and another app's
//! certificates are left to that app's settings (reported, not failed).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::OffsetDateTime;

use crate::acme::certinfo::short_issuer;
use crate::acme::certinfo::CertInfo;
use crate::acme::certs::{AcmeSettings, Action, CertOutcome, Certs};
use crate::acme::host_settings::{
    self, AppSettings, Claim, HostFile, HostSettingsError, Renewer, Runner,
};
use crate::acme::renewal_lock;
use crate::acme::settings::acme_settings;
use crate::acme::store::{self, Store, StoredCert};
use crate::acme::AcmeError;
use crate::fleet::{self, Connection, Failures, HostJob, HostResult, Turn};
use crate::settings::{project_dir, Settings};
use crate::transport::sections::Sections;
use crate::transport::{ExecRequest, LocalTransport, Transport};

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("renew-certs needs an [acme] section with your email in {}", .0.display())]
    NoAcme(std::path::PathBuf),
    #[error("[acme]: {0}")]
    HostFiles(#[from] HostSettingsError),
}

impl crate::exit::ExitStatus for RenewError {
    fn exit_code(&self) -> u8 {
        crate::exit::BAD_INPUT
    }
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

    fn add_error(&mut self, error: String) {
        self.error = Some(match self.error.take() {
            Some(first) => format!("{first}; {error}"),
            None => error,
        });
    }
}

impl HostResult for HostRow {
    fn set_error(&mut self, error: String) {
        self.add_error(error);
    }
    fn failed(&self) -> bool {
        self.error.is_some() || self.certificates.iter().any(|c| c.error.is_some())
    }
}

/// Where `renew-certs --local` finds its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// `--config` (by default the default store's `renew.toml`), with the
    /// apps' settings in its store.
    Config(PathBuf),
    /// No `renew.toml`, but apps keep their settings in this store: only
    /// theirs renew.
    AppsOnly(String),
}

/// The settings a run brings with it: the project's, or the host's renew.toml.
struct OwnSettings {
    /// Built from the config; on the host, a failure fails only the
    /// certificates they renew, never the apps' own.
    acme: Result<AcmeSettings, String>,
    reload: String,
    /// Its app's certificates (a project with `[app]`).
    claim: Option<Claim>,
}

/// `local`: on the host itself (`--local`), with its settings.
pub async fn run(
    settings: &Settings,
    force: bool,
    local: Option<&Local>,
) -> crate::exit::Result<()> {
    let project = project_dir(settings);
    let (own, store_dir, host_files) = match local {
        Some(Local::AppsOnly(store)) => (None, store.clone(), Vec::new()),
        _ => {
            let config = settings
                .config
                .as_ref()
                .filter(|c| c.acme.is_some())
                .ok_or_else(|| RenewError::NoAcme(settings.config_path.clone()))?;
            let acme_config = config.acme.as_ref().expect("filtered on [acme]");
            let acme = match acme_settings(acme_config, &project) {
                Err(e) if local.is_some() => Err(e.to_string()),
                built => Ok(built?),
            };
            let host_files = if local.is_some() || settings.check {
                Vec::new()
            } else {
                // What the host's own timer needs, refreshed by every real run.
                host_settings::files(config, &project)?
            };
            let own = OwnSettings {
                acme,
                reload: acme_config.reload.clone(),
                claim: Claim::of(config),
            };
            (Some(own), acme_config.store.to_string(), host_files)
        }
    };
    let run = RenewRun {
        settings,
        own: own.as_ref(),
        store_dir,
        force,
        host_files: &host_files,
        local: local.is_some(),
        lock_owner: lock_owner(local.is_some()),
    };
    let rows = if local.is_some() {
        vec![renew_on(&LocalTransport::current(), local_host_name(), &run).await]
    } else {
        fleet::for_each_host(settings, &settings.targets(None)?, &run).await
    };
    if settings.json {
        let doc = serde_json::json!({"check": settings.check, "hosts": rows});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_table(&rows);
    }
    if let Some(failures) = Failures::of(&rows) {
        return Err(crate::exit::Error::failed(format!(
            "renewal failed on {failures}; certificates that failed keep their previous version"
        )));
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
        crate::hostlock::owner("renew-certs")
    }
}

/// This machine's name, for the report of a `--local` run.
fn local_host_name() -> String {
    crate::hostlock::this_machine()
}

/// Where `renew-certs --local` finds its settings: `config` (`--config`),
/// by default the default store's `renew.toml`; a missing `renew.toml` whose
/// store holds apps' settings (`renew.d/`) leaves those alone to renew. `None`
/// when the host has nothing to renew yet (said on stderr; an empty report
/// under `--json`). Certificates without any settings are an error: the
/// timer would otherwise succeed every day while they expire.
pub fn find_local(config: Option<&Path>, json: bool) -> anyhow::Result<Option<Local>> {
    let path = config.map_or_else(
        || PathBuf::from(host_settings::config_path(store::DEFAULT_DIR)),
        Path::to_path_buf,
    );
    if path.exists() {
        return Ok(Some(Local::Config(path)));
    }
    if let Some(store) = host_settings::store_with_only_apps(&path) {
        return Ok(Some(Local::AppsOnly(store)));
    }
    if config.is_some() {
        // Loading it says that it is missing (a mistyped --config is bad input).
        return Ok(Some(Local::Config(path)));
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
            "{certs} certificate(s) in {}, but no {} and no app's settings in {}: this host cannot renew them on its own. Run `vpsup deploy` (or `vpsup renew-certs`) once from the project's machine, which writes them",
            store::DEFAULT_DIR,
            path.display(),
            host_settings::apps_dir(store::DEFAULT_DIR)
        );
    }
    eprintln!(
        "no certificates to renew on this host yet: the first `vpsup deploy` or `vpsup renew-certs` with an [acme] section writes the settings the timer reads ({})",
        path.display()
    );
    if json {
        println!("{}", serde_json::json!({"check": false, "hosts": []}));
    }
    Ok(None)
}

/// Over SSH: each host's store, through the fleet runner.
impl HostJob for RenewRun<'_> {
    type Report = HostRow;

    fn begin(&self, turn: &Turn<'_>) -> ControlFlow<HostRow, HostRow> {
        ControlFlow::Continue(HostRow::new(turn.target.name.clone()))
    }

    async fn on_host(&self, turn: &Turn<'_>, connection: &Connection, row: &mut HostRow) {
        *row = renew_on(&connection.transport, turn.target.name.clone(), self).await;
    }
}

/// One `renew-certs` run, as every host sees it.
struct RenewRun<'a> {
    settings: &'a Settings,
    /// None on a host with only the apps' settings.
    own: Option<&'a OwnSettings>,
    /// The certificate store on each host.
    store_dir: String,
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
        &run.store_dir,
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

/// Renews what is due, each certificate with the settings of the app that
/// claims it, reloads the web server when something changed (or a reload is
/// owed), and hands the host's timer its settings.
async fn renew_and_hand_over(transport: &dyn Transport, run: &RenewRun<'_>, row: &mut HostRow) {
    let store = Store {
        transport,
        dir: run.store_dir.clone(),
    };
    let (stored, reload_pending, apps) = match read_host(transport, &run.store_dir).await {
        Ok(read) => read,
        Err(e) => return row.add_error(e),
    };
    let apps: Vec<AppSettings> = apps
        .into_iter()
        .filter_map(|app| {
            app.map_err(|e| row.add_error(format!("an app's renewal settings on the host: {e}")))
                .ok()
        })
        .collect();
    let claims: Vec<Claim> = apps.iter().map(|a| a.claim.clone()).collect();
    let runner = Runner {
        settings: run.own.is_some(),
        claim: run.own.and_then(|o| o.claim.as_ref()),
        others: run.local,
    };
    let mut by_renewer: BTreeMap<Renewer, Vec<&StoredCert>> = BTreeMap::new();
    for cert in &stored {
        let renewer = host_settings::renewer(&cert.name, runner, &claims);
        by_renewer.entry(renewer).or_default().push(cert);
    }

    let mut outcomes = Vec::new();
    let mut reloads: Vec<&str> = run.own.iter().map(|o| o.reload.as_str()).collect();
    for (renewer, certs) in &by_renewer {
        let (renewed, reload) = renew_group(transport, run, renewer, certs, &apps, &row.host).await;
        outcomes.extend(renewed);
        reloads.extend(reload.filter(|r| !reloads.contains(r)));
    }
    // In the store's order, whoever renewed them.
    let position = |name: &str| stored.iter().position(|c| c.name == name);
    outcomes.sort_by_key(|o| position(o.as_ref().map_or_else(|(n, _)| n, |o| &o.name)));

    let changed = outcomes
        .iter()
        .any(|o| o.as_ref().is_ok_and(|o| o.action.changed()));
    row.certificates = outcomes.into_iter().map(cert_row).collect();
    reloads.retain(|r| !r.trim().is_empty());
    if (changed || reload_pending) && !run.settings.check && !reloads.is_empty() {
        if let Err(e) = reload(transport, store.reload_script(&all_of(&reloads))).await {
            row.add_error(e);
        }
    }
    // The store was read with these settings: the timer gets them even when
    // a certificate failed (the CA may be down today), so that it keeps
    // trying on its own.
    if !run.host_files.is_empty() {
        match host_settings::sync(transport, &run.store_dir, run.host_files).await {
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

/// The store's certificates, whether a reload is owed, and the apps'
/// settings, in one exec.
async fn read_host(
    transport: &dyn Transport,
    store_dir: &str,
) -> Result<(Vec<StoredCert>, bool, Vec<Result<AppSettings, String>>), String> {
    let sections = Sections::random();
    let script = sections.script([
        ("store", store::listing_script(store_dir).as_str()),
        ("apps", &host_settings::apps_script(store_dir)),
    ]);
    let out = transport
        .run_ok(
            "reading the certificate store and the apps' renewal settings",
            ExecRequest::new(script).become_root(true),
        )
        .await
        .map_err(|e| e.to_string())?;
    let text = out.stdout_str();
    let parts = sections.parse(&text);
    let listing = parts.get("store").map_err(|e| e.to_string())?;
    Ok((
        store::parse_listing(listing)?,
        store::reload_owed(listing),
        host_settings::parse_apps(parts.get("apps").map_err(|e| e.to_string())?),
    ))
}

type Outcome = Result<CertOutcome, (String, AcmeError)>;

/// Renews `certs` with the settings `renewer` names (each on its own), or
/// says why not. Returns the web server's reload command of those settings.
async fn renew_group<'r>(
    transport: &dyn Transport,
    run: &'r RenewRun<'_>,
    renewer: &Renewer,
    certs: &[&StoredCert],
    apps: &'r [AppSettings],
    host: &str,
) -> (Vec<Outcome>, Option<&'r str>) {
    let failed = |why: String| {
        let fail = |cert: &&StoredCert| Err((cert.name.clone(), AcmeError::Other(why.clone())));
        (certs.iter().map(fail).collect(), None)
    };
    let (settings, reload) = match (renewer, run.own) {
        (Renewer::Own, Some(own)) => (own.acme.clone(), own.reload.as_str()),
        (Renewer::App(app), _) => match apps.iter().find(|a| a.claim.app == *app) {
            Some(on_host) => (
                app_acme_settings(on_host, &run.store_dir)
                    .map_err(|e| format!("app {app}'s settings on the host: {e}")),
                on_host.acme.as_ref().map_or("", |a| a.reload.as_str()),
            ),
            None => return failed(format!("app {app}'s settings are gone from the host")),
        },
        (Renewer::LeftTo(app), _) => {
            return (
                certs.iter().map(|cert| Ok(left_to(cert, app))).collect(),
                None,
            )
        }
        (Renewer::Own | Renewer::Nobody, _) => return failed(no_settings(&run.store_dir)),
    };
    let settings = match settings {
        Ok(settings) => settings,
        Err(e) => return failed(e),
    };
    let renewing = Certs::new(transport, &settings);
    let outcomes = renewing
        .renew_each(certs.iter().copied(), run.force, run.settings.check)
        .await;
    for note in renewing.notes() {
        eprintln!("{host}: {note}");
    }
    (outcomes, Some(reload))
}

/// Why a certificate no settings claim cannot be renewed, and what to do.
fn no_settings(store_dir: &str) -> String {
    format!(
        "no settings on this host renew it: no app claims it ({}) and there is no {}. Run `vpsup deploy` (or `vpsup renew-certs`) once from the project that uses it",
        host_settings::apps_dir(store_dir),
        host_settings::config_path(store_dir)
    )
}

/// The settings an app keeps on the host (its paths are absolute, in the
/// store), for the store `store_dir` that holds them.
fn app_acme_settings(on_host: &AppSettings, store_dir: &str) -> Result<AcmeSettings, String> {
    let config = on_host.acme.as_ref().map_err(Clone::clone)?;
    let mut settings = acme_settings(config, Path::new(store_dir))
        .map_err(|e| format!("{}: {e}", on_host.path))?;
    settings.store_dir = store_dir.to_string();
    Ok(settings)
}

/// A certificate another app's settings renew, as it stands.
fn left_to(cert: &StoredCert, app: &str) -> CertOutcome {
    CertOutcome {
        name: cert.name.clone(),
        info: CertInfo::from_pem_chain(&cert.chain_pem).ok(),
        action: Action::LeftTo {
            app: app.to_string(),
        },
    }
}

/// One shell command that runs each of `commands` in turn, stopping at the
/// first that fails.
fn all_of(commands: &[&str]) -> String {
    match commands {
        [one] => one.to_string(),
        many => many
            .iter()
            .map(|c| format!("{{ {c}\n}}"))
            .collect::<Vec<_>>()
            .join(" && "),
    }
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
