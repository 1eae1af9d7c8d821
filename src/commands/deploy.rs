//! `vpsup deploy`: the project's compose stack on every host, each site at
//! its domain over HTTPS through the host's nginx. In order, per host:
//!
//! 1. one probe exec (facts, current release, secrets, sites, containers,
//!    certificates); a deploy that would change nothing stops here;
//! 2. the DNS preflight: every domain must point at the host before any ACME
//!    order (the exact record to create otherwise);
//! 3. the deploy lock (a lease this run renews) and a second probe in one
//!    exec: the deploy is planned again from that; a first Ctrl-C stops
//!    between steps, a second leaves the lock to expire;
//! 4. certificates, under the host's renewal lock (a failure changes nothing
//!    else);
//! 5. the new release directory (only changed files travel), the app's data
//!    directories (never in a release), the secrets;
//! 6. `docker compose up --wait`, then each site's health path on its
//!    loopback port;
//! 7. nginx site files (put back if `nginx -t` or the reload fails), reload,
//!    `current` switched, old releases pruned; a failure in 6 or 7 starts
//!    the previous release again and reports the failing services' last log
//!    lines;
//! 8. from here: each site over HTTPS (status, certificate names, days left).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::ControlFlow;

use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::acme::certinfo::CertInfo;
use crate::acme::certs::{AcmeSettings, Certs};
use crate::acme::dns01::Rfc2136;
use crate::acme::host_settings::{self, HostFile};
use crate::acme::policy::{self, Decision};
use crate::acme::renewal_lock;
use crate::acme::settings::acme_settings;
use crate::acme::store::{self, cert_name, ChallengeKind, Store};
use crate::config::{AppConfig, Config, DnsRecords, SiteConfig, DEFAULT_WEBROOT};
use crate::deploy::https_check;
use crate::deploy::release::{self, Release};
use crate::deploy::remote::{self, AppPaths, Container, Deployed, ReleaseMeta};
use crate::deploy::stack::{self, Stack};
use crate::deploy::upload::{self, ReleaseFile};
use crate::deploy::{dns, ports, releases, secrets, volumes};
use crate::engine::assets::Assets;
use crate::engine::render::{Renderer, Vars};
use crate::facts::{self, HostFacts};
use crate::fleet::{self, Connection, Failures, HostJob, HostResult, Turn};
use crate::hostlock::{self, HostLock, LockRequest, LockTiming};
use crate::settings::{project_dir, HostTarget, Settings};
use crate::transport::{ExecRequest, Transport};

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("deploy needs an [app] section in {0} (name, compose files, sites): see the README")]
    NoApp(std::path::PathBuf),
    #[error("[[sites]] need certificates: add an [acme] section with your email to {0}")]
    NoAcme(std::path::PathBuf),
    #[error("[app] dns = \"update\" sets records through [acme.dns]: add that section to {0} (or drop dns = \"update\")")]
    NoDnsProvider(std::path::PathBuf),
    #[error("site {0}: a wildcard certificate is validated through DNS: add an [acme.dns] section to {1}")]
    WildcardWithoutDns(String, std::path::PathBuf),
    #[error("{0}")]
    Release(String),
}

/// What the deploy did on one host.
#[derive(Debug, Default, Serialize)]
struct HostReport {
    host: String,
    /// The release now current.
    release: Option<String>,
    /// Whether anything changed on the host.
    changed: bool,
    uploaded: usize,
    /// What the deploy found to change (with --check: would change).
    pending: Vec<String>,
    /// DNS records the deploy set ([app] dns = "update").
    dns_updated: Vec<String>,
    /// Commands run on the host (the probe included); the final check is not one.
    round_trips: usize,
    /// From connecting to the end of the final check.
    elapsed_ms: u128,
    secrets_created: Vec<String>,
    certificates: Vec<String>,
    sites: Vec<SiteReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct SiteReport {
    url: String,
    status: Option<u16>,
    names: Vec<String>,
    days_left: Option<i64>,
    redirect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Everything every host's deploy shares.
struct DeployRun<'a> {
    settings: &'a Settings,
    config: &'a Config,
    app: &'a AppConfig,
    sites: &'a [SiteConfig],
    release: Release,
    acme: Option<AcmeSettings>,
    host_files: Vec<HostFile>,
    renderer: Renderer,
    owner: String,
    /// Sets a site's record that does not point at the host ([app] dns = "update").
    dns_update: Option<Rfc2136>,
}

/// The project's config and its `[app]` section, or what to add.
fn app_config(settings: &Settings) -> Result<(&Config, &AppConfig), DeployError> {
    let no_app = || DeployError::NoApp(settings.config_path.clone());
    let config = settings.config.as_ref().ok_or_else(no_app)?;
    let app = config.app.as_ref().ok_or_else(no_app)?;
    Ok((config, app))
}

/// Who holds the deploy lock, as other operators will read it.
fn lock_owner(command: &str) -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".to_string());
    let here = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string());
    format!("{user}@{here} (vpsup {command})")
}

/// Takes app's deploy lock (one deploy or rollback at a time), taking over
/// one whose run died and saying so, and probes the host in the same exec,
/// once the lock is ours.
async fn lock_and_probe(
    transport: &dyn Transport,
    paths: &AppPaths,
    store_dir: &str,
    owner: &str,
    host: &str,
) -> Result<(HostLock, Probed), String> {
    let (lock, text) = HostLock::acquire_then(
        transport,
        &LockRequest {
            path: &paths.lock(),
            what: &format!("app {}", paths.app),
            owner,
            take_over_after: None,
            local_pid: None,
            timing: LockTiming::STANDARD,
        },
        &paths.probe_script(store_dir),
    )
    .await
    .map_err(|e| e.to_string())?;
    if let Some(dead) = &lock.taken_over {
        eprintln!("vpsup: {host}: took over the deploy lock of a run that died: {dead}");
    }
    match parse_probe(&text) {
        Ok(probed) => Ok((lock, probed)),
        Err(e) => {
            let _ = lock.release(transport).await;
            Err(e)
        }
    }
}

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let (config, app) = app_config(settings)?;
    let project = project_dir(settings);
    let (acme, host_files, exclude) = match &config.acme {
        Some(acme) => {
            let mut exclude = Vec::new();
            exclude.extend(acme.extra_root.clone());
            exclude.extend(acme.dns.as_ref().map(|d| d.secret_file.clone()));
            (
                Some(acme_settings(acme, &project)?),
                host_settings::files(config, &project)?,
                exclude,
            )
        }
        None if !config.sites.is_empty() => {
            return Err(DeployError::NoAcme(settings.config_path.clone()).into())
        }
        None => (None, Vec::new(), Vec::new()),
    };
    if let Some(site) = config.sites.iter().find(|s| s.domain.0.starts_with("*.")) {
        if acme.as_ref().is_none_or(|a| a.dns.is_none()) {
            return Err(DeployError::WildcardWithoutDns(
                site.domain.0.clone(),
                settings.config_path.clone(),
            )
            .into());
        }
    }
    for site in &config.sites {
        site.check_name().map_err(|e| {
            DeployError::Release(format!("{e} (in {})", settings.config_path.display()))
        })?;
    }
    let dns_update = match (app.dns, acme.as_ref().and_then(|a| a.dns.clone())) {
        (DnsRecords::Check, _) => None,
        (DnsRecords::Update, Some(rfc2136)) => Some(rfc2136),
        (DnsRecords::Update, None) => {
            return Err(DeployError::NoDnsProvider(settings.config_path.clone()).into())
        }
    };
    let release = release::collect(&project, app, &config.sites, &exclude)
        .map_err(|e| DeployError::Release(e.to_string()))?;
    for note in &release.rewritten {
        eprintln!("vpsup: bound to 127.0.0.1 ([app] public_ports = \"loopback\"): {note}");
    }
    let data_dir = AppPaths::new(app.name.as_str()).data_dir();
    for path in &release.data {
        if release
            .seeded
            .iter()
            .any(|f| volumes::in_data(f, std::slice::from_ref(path)))
        {
            eprintln!(
                "vpsup: ./{path} is mounted writable, so it is the app's data: it lives on the host in {data_dir}/{path}, kept across deploys and rollbacks. The project's files there seed it on the first deploy only; mount it read-only (:ro) if it is configuration that each deploy should update"
            );
        }
    }
    let assets = Assets::load(Some(&project))?;
    let renderer = Renderer::new(&assets.templates).map_err(anyhow::Error::msg)?;
    let run = DeployRun {
        settings,
        config,
        app,
        sites: &config.sites,
        release,
        acme,
        host_files,
        renderer,
        owner: lock_owner("deploy"),
        dns_update,
    };
    let reports = fleet::run(settings, &settings.targets(None)?, &run).await;
    if settings.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"hosts": reports}))?
        );
    } else {
        print_reports(&reports, settings.check);
    }
    if let Some(failures) = Failures::of(&reports) {
        anyhow::bail!("deploy failed on {failures}");
    }
    Ok(())
}

impl HostResult for HostReport {
    fn set_error(&mut self, error: String) {
        self.error = Some(error);
    }
    fn failed(&self) -> bool {
        self.error.is_some() || self.sites.iter().any(|s| s.error.is_some())
    }
}

/// Each host in turn of the fleet runner: the deploy, then the final check.
impl HostJob for DeployRun<'_> {
    type Report = HostReport;

    fn begin(&self, turn: &Turn<'_>) -> ControlFlow<HostReport, HostReport> {
        let report = HostReport {
            host: turn.target.name.clone(),
            ..Default::default()
        };
        if hostlock::stop_requested() {
            return ControlFlow::Break(HostReport {
                error: Some("not started: interrupted (Ctrl-C)".to_string()),
                ..report
            });
        }
        ControlFlow::Continue(report)
    }

    async fn run(&self, turn: &Turn<'_>, connection: &Connection, report: &mut HostReport) {
        let transport = &connection.transport;
        if let Err(e) = deploy_on(transport, turn.target, self, report).await {
            report.error = Some(e);
        }
        report.round_trips = transport.round_trips();
    }

    async fn end(&self, turn: &Turn<'_>, report: &mut HostReport) {
        // After a Ctrl-C (answered by the lock, which keeps its handler), no
        // final check: the user wants to leave.
        if report.error.is_none() && !self.settings.check && !hostlock::stop_requested() {
            report.sites = final_check(self, turn.target).await;
        }
        report.elapsed_ms = turn.started.elapsed().as_millis();
    }
}

/// What the probe found.
struct Probed {
    facts: HostFacts,
    current: upload::Current,
    meta: Option<ReleaseMeta>,
    releases: Vec<String>,
    secrets: Vec<String>,
    /// `file name -> sha256` of the app's installed site files.
    sites: Vec<(String, String)>,
    containers: Vec<Container>,
    certificates: Vec<store::StoredCert>,
}

async fn probe(
    transport: &dyn Transport,
    paths: &AppPaths,
    store_dir: &str,
) -> Result<Probed, String> {
    let out = transport
        .run_ok(
            "probing the host",
            ExecRequest::piped(paths.probe_script(store_dir)).become_root(true),
        )
        .await
        .map_err(|e| e.to_string())?;
    parse_probe(&out.stdout_str())
}

/// What `AppPaths::probe_script` printed.
fn parse_probe(text: &str) -> Result<Probed, String> {
    let parts = facts::sections(text);
    let facts_text = parts.first().map(|(_, t)| t.as_str()).unwrap_or("");
    let mut probed = Probed {
        facts: facts::parse(facts_text)?,
        current: Default::default(),
        meta: None,
        releases: Vec::new(),
        secrets: Vec::new(),
        sites: Vec::new(),
        containers: Vec::new(),
        certificates: Vec::new(),
    };
    for (name, text) in parts {
        match name {
            "release" => probed.current = upload::parse_probe(&text),
            "meta" => probed.meta = serde_json::from_str(&text).ok(),
            "releases" => probed.releases = text.lines().map(str::to_string).collect(),
            "secrets" => probed.secrets = text.lines().map(str::to_string).collect(),
            "sites" => {
                probed.sites = text
                    .lines()
                    .filter_map(|l| l.split_once(' '))
                    .map(|(h, f)| (f.to_string(), h.to_string()))
                    .collect()
            }
            "containers" => probed.containers = remote::parse_containers(&text),
            "certificates" => probed.certificates = store::parse_listing(&text)?,
            _ => {}
        }
    }
    Ok(probed)
}

async fn deploy_on(
    transport: &dyn Transport,
    target: &HostTarget,
    run: &DeployRun<'_>,
    report: &mut HostReport,
) -> Result<(), String> {
    let paths = AppPaths::new(run.app.name.as_str());
    let store_dir = run
        .acme
        .as_ref()
        .map_or(store::DEFAULT_DIR.to_string(), |a| a.store_dir.clone());
    // A first look, without the lock: an unchanged host (and --check) end here.
    let probed = probe(transport, &paths, &store_dir).await?;
    if probed.facts.compose_v2.is_none() {
        return Err(
            "docker compose (v2) is missing on the host: run `vpsup init` first".to_string(),
        );
    }
    let files = release_files(run, &probed, &store_dir)?;
    report.release = probed.current.release.clone();
    report.pending = pending_changes(run, &paths, &probed, &files);
    if report.pending.is_empty() {
        return Ok(());
    }

    // Every domain must point here before the CA is asked to validate it.
    preflight(run, target, &probed.facts, report).await?;
    if run.settings.check {
        return Ok(());
    }

    // The lock and a second probe in one exec: the deploy is planned again
    // from what the host holds under the lock (another operator's deploy may
    // have landed since the first look).
    let (lock, probed) =
        lock_and_probe(transport, &paths, &store_dir, &run.owner, &target.name).await?;
    let locked = lock.transport(transport);
    let work = async {
        let files = release_files(run, &probed, &store_dir)?;
        report.release = probed.current.release.clone();
        report.pending = pending_changes(run, &paths, &probed, &files);
        if report.pending.is_empty() {
            return Ok(());
        }
        change(transport, &locked, run, &paths, &probed, &files, report).await
    };
    let held = lock.hold(transport, work).await;
    held.into_result(
        "deploy",
        "interrupted: the host keeps the release `current` names, unless this stopped while the new release's containers were starting; `vpsup status` shows what runs, and `vpsup deploy` again finishes the job",
    )
}

/// What a deploy would change on the host `probed`, one line each (empty:
/// nothing).
fn pending_changes(
    run: &DeployRun<'_>,
    paths: &AppPaths,
    probed: &Probed,
    files: &[ReleaseFile],
) -> Vec<String> {
    let plan = upload::plan(files, &probed.current, &run.release.data);
    let mut pending = Vec::new();
    if !plan.is_noop() {
        let mut names: Vec<&str> = plan.upload.iter().map(|f| f.path.as_str()).collect();
        names.extend(plan.removed.iter().map(|f| f.as_str()));
        pending.push(format!(
            "new release: {} file(s) to upload, {} gone ({})",
            plan.upload.len(),
            plan.removed.len(),
            names.join(", ")
        ));
    }
    let missing_secrets: Vec<&str> = run
        .app
        .secrets
        .generate
        .iter()
        .filter(|n| !probed.secrets.contains(&n.0))
        .map(|n| n.0.as_str())
        .collect();
    if !missing_secrets.is_empty() {
        pending.push(format!(
            "secrets to generate: {}",
            missing_secrets.join(", ")
        ));
    }
    for site in run.sites {
        if !cert_fresh(&probed.certificates, &site.domain.0) {
            pending.push(format!("certificate to issue or renew: {}", site.domain.0));
        }
    }
    let sites_current = run.sites.iter().all(|site| {
        let installed = probed
            .sites
            .iter()
            .find(|(f, _)| *f == paths.site_file_name(&site.domain.0));
        let wanted = files
            .iter()
            .find(|f| f.path == format!("{}/{}.conf", remote::NGINX_DIR, site.domain.0));
        matches!((installed, wanted), (Some((_, h)), Some(f)) if *h == f.sha256())
    }) && probed.sites.len() == run.sites.len();
    if !sites_current {
        pending.push("nginx site files to install".to_string());
    }
    let services_up =
        !probed.containers.is_empty() && probed.containers.iter().all(Container::is_up);
    if !services_up {
        pending.push("containers to start (some are missing, stopped or unhealthy)".to_string());
    }
    pending
}

/// The changing part of a deploy, under the lock: every host step through
/// `transport` (the deploy lock's, which records each step on the host, so
/// the lock is never taken over while one runs); `plain` keeps the renewal
/// lock's lease. A first Ctrl-C stops between steps.
async fn change(
    plain: &dyn Transport,
    transport: &dyn Transport,
    run: &DeployRun<'_>,
    paths: &AppPaths,
    probed: &Probed,
    files: &[ReleaseFile],
    report: &mut HostReport,
) -> Result<(), String> {
    let keeps = match &probed.current.release {
        Some(id) => format!("the host keeps release {id}"),
        None => "nothing was started".to_string(),
    };
    let stop_before = |step: &str| {
        if hostlock::stop_requested() {
            Err(format!("interrupted before {step}; {keeps}"))
        } else {
            Ok(())
        }
    };
    stop_before("ordering certificates")?;
    report.changed = true;
    // Certificates first: a CA that refuses changes nothing else.
    if let Some(acme) = &run.acme {
        let host = report.host.clone();
        let issue = async {
            let certs = Certs::new(transport, acme);
            let mut ensured = Ok(());
            for site in run.sites {
                // A wildcard can only be validated through DNS.
                let challenge = if site.domain.0.starts_with("*.") {
                    ChallengeKind::Dns01
                } else {
                    ChallengeKind::Http01
                };
                match certs
                    .ensure(std::slice::from_ref(&site.domain.0), challenge, false)
                    .await
                {
                    Ok(outcome) => report
                        .certificates
                        .push(format!("{}: {}", outcome.name, outcome.action)),
                    Err(e) => {
                        ensured = Err(format!("certificate for {}: {e}", site.domain.0));
                        break;
                    }
                }
            }
            for note in certs.notes() {
                eprintln!("{}: {note}", report.host);
            }
            ensured?;
            if !run.host_files.is_empty() {
                host_settings::sync(transport, &acme.store_dir, &run.host_files)
                    .await
                    .map_err(|e| format!("the renewal timer's settings: {e}"))?;
            }
            Ok(())
        };
        // Under the renewal lock: the host's timer must not order the same
        // certificates meanwhile.
        renewal_lock::hold_within(plain, &acme.store_dir, &run.owner, &host, issue)
            .await
            .map_err(|e| e.to_string())?
            .into_result(
                "renewal",
                "interrupted while ordering certificates; nothing else changed",
            )?;
    }

    // The release: a copy of the current one with only the changes sent;
    // the app's data directories made (never inside a release).
    let plan = upload::plan(files, &probed.current, &run.release.data);
    let id = if plan.is_noop() {
        probed.current.release.clone()
    } else {
        None
    }
    .unwrap_or_else(|| {
        releases::release_id(OffsetDateTime::now_utc(), &release::content_hash(files))
    });
    stop_before("writing the release")?;
    let data = &run.release.data;
    let mut script = String::new();
    if let Some(current) = &probed.current.release {
        let older: Vec<(String, String)> = probed
            .releases
            .iter()
            .filter(|r| *r != current && releases::is_release_id(r))
            .map(|r| (r.clone(), paths.release(r)))
            .collect();
        script.push_str(&volumes::migrate_script(
            &paths.data_dir(),
            &paths.release(current),
            &older,
            data,
        ));
    }
    if probed.current.release.as_deref() != Some(id.as_str()) {
        script.push_str(&upload::release_script(&paths.dir, &id, &plan));
        report.uploaded = plan.upload.len();
    }
    script.push_str(&volumes::seed_script(
        &paths.data_dir(),
        &paths.release(&id),
        data,
    ));
    if !script.is_empty() {
        transport
            .run_ok(
                "writing the new release",
                ExecRequest::piped(script).become_root(true),
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    report.secrets_created =
        secrets::ensure(transport, &paths.secrets(), &run.app.secrets.generate)
            .await
            .map_err(|e| e.to_string())?;

    // Up, healthy and served, or back to the previous release: from `up`
    // on, the previous release's containers are replaced, so any failure
    // restarts them.
    stop_before("starting the release")?;
    let meta = release_meta(run, probed);
    let timeout = run.app.health_timeout.0;
    // No stop between `up` and serving (or restoring): either way, the host
    // must end with one release serving.
    let failure = match start(transport, paths, &id, &meta, &run.release.ports, timeout).await {
        Err(why) => Some((format!("is not healthy ({})", why.text), why.services)),
        Ok(()) => activate(
            transport,
            run.config,
            paths,
            &id,
            &probed.releases,
            run.app.releases.0 as usize,
            &run.owner,
        )
        .await
        .err()
        .map(|e| (format!("could not be served ({e})"), Vec::new())),
    };
    if let Some((what, services)) = failure {
        let secrets_path = paths.secrets();
        let release_dir = paths.release(&id);
        let failed = stack_for(&paths.app, &release_dir, &meta, &secrets_path);
        let (logs, restored) =
            roll_back(transport, paths, probed, &failed, &services, timeout).await;
        let after = match (&probed.current.release, restored) {
            (Some(previous), Ok(())) => format!("release {previous} runs again and keeps serving"),
            (Some(previous), Err(e)) => format!(
                "starting release {previous} again failed too, check `vpsup status` and the host: {e}"
            ),
            (None, Ok(())) => "it was the first release: its containers were stopped".to_string(),
            (None, Err(e)) => format!("it was the first release; stopping its containers failed: {e}"),
        };
        return Err(format!("release {id} {what}; {after}\n{logs}"));
    }
    report.release = Some(id);
    Ok(())
}

/// Starts release `id` and waits until it is healthy: compose's own
/// healthchecks (`up --wait`), then each site's health path on its
/// loopback port.
async fn start(
    transport: &dyn Transport,
    paths: &AppPaths,
    id: &str,
    meta: &ReleaseMeta,
    ports: &BTreeMap<ports::Target, u16>,
    timeout: u32,
) -> Result<(), Unhealthy> {
    let release_dir = paths.release(id);
    let secrets_path = paths.secrets();
    let stack = stack_for(&paths.app, &release_dir, meta, &secrets_path);
    // The app's containers under its other project name would hold its ports.
    let other = if stack.project == paths.app {
        remote::project_name(&paths.app)
    } else {
        paths.app.clone()
    };
    let gate = format!(
        "{retire}if ! {up} >&2; then echo '@@failed compose'; {ps}; exit 1; fi\n{health}",
        retire = paths.retire_script(&other),
        up = stack.up(timeout),
        ps = stack.ps(),
        health = stack::health_probe_script(&meta.health, timeout),
    );
    let out = transport
        .exec(ExecRequest::piped(gate).become_root(true))
        .await
        .map_err(|e| Unhealthy {
            text: e.to_string(),
            services: Vec::new(),
        })?;
    if out.success() {
        Ok(())
    } else {
        Err(unhealthy(&out.stdout_str(), &out.stderr_tail(8), ports))
    }
}

/// Makes release `id` the one nginx serves and `current` points at, and
/// prunes releases beyond `keep`.
async fn activate(
    transport: &dyn Transport,
    config: &Config,
    paths: &AppPaths,
    id: &str,
    known: &[String],
    keep: usize,
    owner: &str,
) -> Result<(), String> {
    let mut all = known.to_vec();
    if !all.iter().any(|r| r == id) {
        all.push(id.to_string());
    }
    all.sort();
    let prune = releases::to_prune(&all, id, keep);
    let reload = match &config.acme {
        Some(acme) => Store {
            transport,
            dir: acme.store.clone(),
        }
        .reload_script(&acme.reload),
        None => "nginx -t && systemctl reload nginx".to_string(),
    };
    let now = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let record = Deployed::record(id, &now, owner);
    transport
        .run_ok(
            "serving the new release",
            ExecRequest::piped(paths.activate_script(id, &reload, &prune, &record))
                .become_root(true),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// What failed in the health gate.
struct Unhealthy {
    text: String,
    services: Vec<String>,
}

/// `compose_stderr`: the end of `docker compose up`'s own messages (a port
/// already taken, a failed build), shown when compose itself failed.
fn unhealthy(
    stdout: &str,
    compose_stderr: &str,
    ports: &BTreeMap<ports::Target, u16>,
) -> Unhealthy {
    let mut services = Vec::new();
    let mut text = Vec::new();
    if let Some((_, ps)) = stdout.split_once("@@failed compose\n") {
        for c in remote::parse_containers(ps) {
            if !c.is_up() {
                let health = if c.status.is_empty() {
                    String::new()
                } else {
                    format!(", {}", c.status)
                };
                text.push(format!("{}: {}{health}", c.name, c.state));
                services.push(c.name);
            }
        }
        let said = compose_stderr.trim();
        text.push(if said.is_empty() {
            "docker compose up failed".to_string()
        } else {
            format!("docker compose up said: {said}")
        });
    }
    for line in stdout.lines().filter(|l| l.starts_with("fail ")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let [_, port, path, code] = parts[..] {
            let port: u16 = port.parse().unwrap_or(0);
            let service = ports
                .iter()
                .find(|(_, p)| **p == port)
                .map(|((s, _), _)| s.clone())
                .unwrap_or_default();
            text.push(format!("{service} answers {path} with HTTP {code}"));
            services.push(service);
        }
    }
    services.sort();
    services.dedup();
    Unhealthy {
        text: text.join("; "),
        services,
    }
}

/// The failing services' last log lines, then the previous release up again
/// (or, for a first release, its containers stopped) and the failed release's
/// directory removed, so `vpsup rollback` never picks it: the logs, and
/// whether that worked (else the end of what compose said).
async fn roll_back(
    transport: &dyn Transport,
    paths: &AppPaths,
    probed: &Probed,
    failed: &Stack<'_>,
    services: &[String],
    timeout: u32,
) -> (String, Result<(), String>) {
    let mut script = String::new();
    for service in services {
        script.push_str(&format!(
            "echo '--- {service} (last 30 lines)'\nlog=$({} 2>&1); printf '%s\\n' \"${{log:-(nothing logged)}}\"\n",
            failed.logs(service, 30)
        ));
    }
    let previous_dir = probed.current.release.as_ref().map(|id| paths.release(id));
    let secrets_path = paths.secrets();
    let restart = match (&previous_dir, &probed.meta) {
        (Some(dir), Some(meta)) => {
            let previous = stack_for(&paths.app, dir, meta, &secrets_path);
            // Under another project name (a release an earlier vpsup made), the
            // failed release's containers go first: they hold the ports.
            let first = if previous.project == failed.project {
                String::new()
            } else {
                format!("{} 2>&1; ", failed.down())
            };
            Ok(format!("{first}{}", previous.up(timeout)))
        }
        // Never `down` an app that has a previous release: leave it as it is.
        (Some(dir), None) => Err(format!(
            "how it runs ({dir}/{}) could not be read, so the failed release's containers were left as they are",
            remote::META_FILE
        )),
        (None, _) => Ok(failed.down()),
    };
    // A redeploy of the current release (its containers had stopped) keeps its directory.
    let forget_failed = match previous_dir.as_deref() {
        Some(dir) if dir == failed.dir => String::new(),
        _ => format!(
            "rm -rf -- {}; ",
            crate::transport::script::quote(failed.dir)
        ),
    };
    if let Ok(restart) = &restart {
        script.push_str(&format!(
            "if out=$({restart} 2>&1); then {forget_failed}echo @@restored; else echo @@not-restored; printf '%s\\n' \"$out\" | tail -n 12; fi\n"
        ));
    }
    let out = match transport
        .exec(ExecRequest::piped(script).become_root(true))
        .await
    {
        Ok(out) => out,
        Err(e) => return (String::new(), Err(e.to_string())),
    };
    let text = crate::transport::plain_text(&out.stdout_str());
    if let Err(why) = restart {
        return (text, Err(why));
    }
    match text.split_once("@@restored\n") {
        Some((logs, _)) => (logs.to_string(), Ok(())),
        None => match text.split_once("@@not-restored\n") {
            Some((logs, said)) => (logs.to_string(), Err(said.trim().to_string())),
            None => (
                text.clone(),
                Err(format!(
                    "the rollback script did not finish: {}",
                    out.stderr_tail(5)
                )),
            ),
        },
    }
}

fn stack_for<'a>(app: &'a str, dir: &'a str, meta: &'a ReleaseMeta, secrets: &'a str) -> Stack<'a> {
    Stack {
        project: meta.project(app),
        dir,
        files: &meta.compose_files,
        env_files: &meta.env_files,
        secrets_env: meta.secrets.then_some(secrets),
        dot_env: meta.dot_env,
    }
}

/// The compose file naming the app's volumes as an earlier vpsup made them.
const VOLUME_PINS: &str = ".vpsup/volumes.json";

/// Whether the app's named volumes keep the names of its first deploys under
/// the compose project `<app>` (an earlier vpsup): then once, then always.
fn volumes_pinned(probed: &Probed) -> bool {
    probed
        .meta
        .as_ref()
        .is_some_and(|m| m.project.is_none() || m.volumes_pinned)
}

fn release_meta(run: &DeployRun<'_>, probed: &Probed) -> ReleaseMeta {
    let mut compose_files = run.release.compose_files.clone();
    let pinned = volumes_pinned(probed);
    if pinned && !run.release.named_volumes.is_empty() {
        compose_files.push(VOLUME_PINS.to_string());
    }
    ReleaseMeta {
        compose_files,
        env_files: run.release.env_files.clone(),
        health: run
            .sites
            .iter()
            .filter_map(|s| {
                run.release
                    .ports
                    .get(&(s.service.clone(), s.port.0))
                    .map(|p| (s.health.0.clone(), *p))
            })
            .collect(),
        secrets: !run.app.secrets.generate.is_empty(),
        dot_env: run.release.dot_env,
        project: Some(remote::project_name(run.app.name.as_str())),
        volumes_pinned: pinned,
    }
}

/// The project's files plus what vpsup adds for this host: how the release
/// runs, and its nginx site files (rendered for the host's nginx).
fn release_files(
    run: &DeployRun<'_>,
    probed: &Probed,
    store_dir: &str,
) -> Result<Vec<ReleaseFile>, String> {
    let facts = &probed.facts;
    let mut files = run.release.files.clone();
    let mut meta = serde_json::to_vec_pretty(&release_meta(run, probed)).unwrap_or_default();
    meta.push(b'\n');
    files.push(ReleaseFile {
        path: remote::META_FILE.to_string(),
        content: meta,
        mode: 0o644,
    });
    if volumes_pinned(probed) && !run.release.named_volumes.is_empty() {
        let pins = volumes::pin_override(&run.release.named_volumes, run.app.name.as_str());
        let mut content = serde_json::to_vec_pretty(&pins).unwrap_or_default();
        content.push(b'\n');
        files.push(ReleaseFile {
            path: VOLUME_PINS.to_string(),
            content,
            mode: 0o644,
        });
    }
    let nginx = NginxSites {
        app: run.app.name.as_str(),
        sites: run.sites,
        ports: &run.release.ports,
        store_dir,
        webroot: run
            .acme
            .as_ref()
            .map_or(DEFAULT_WEBROOT, |a| a.webroot.as_str()),
        http2_on: facts
            .nginx
            .as_deref()
            .is_some_and(|v| version_at_least(v, &[1, 25, 1])),
    };
    files.extend(nginx.render(&run.renderer)?);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// What the app's nginx files are rendered from.
struct NginxSites<'a> {
    app: &'a str,
    sites: &'a [SiteConfig],
    ports: &'a BTreeMap<ports::Target, u16>,
    store_dir: &'a str,
    /// The ACME webroot kept on :80 for renewals.
    webroot: &'a str,
    /// nginx 1.25.1 and later: `http2 on;` instead of `listen ... http2`.
    http2_on: bool,
}

impl NginxSites<'_> {
    /// The WebSocket map and one server file per site, as release files.
    fn render(&self, renderer: &Renderer) -> Result<Vec<ReleaseFile>, String> {
        let mut vars = Vars::default();
        vars.base.insert("app".into(), json!(self.app));
        vars.base
            .insert("nginx_http2_on".into(), json!(self.http2_on));
        vars.base.insert("acme_webroot".into(), json!(self.webroot));
        let render = |template: &str, vars: &Vars| {
            renderer
                .template(template, vars)
                .map(String::into_bytes)
                .map_err(|e| e.to_string())
        };
        let mut files = vec![ReleaseFile {
            path: remote::MAP_FILE.to_string(),
            content: render("nginx_websocket_map.conf.tera", &vars)?,
            mode: 0o644,
        }];
        let port = |service: &str, port: u16| {
            self.ports
                .get(&(service.to_string(), port))
                .copied()
                .unwrap_or_default()
        };
        for site in self.sites {
            let mut routes: Vec<serde_json::Value> = site
                .routes
                .iter()
                .map(|r| json!({"path": r.path.0, "port": port(&r.service, r.port.0), "websockets": r.websockets}))
                .collect();
            routes.push(json!({"path": "/", "port": port(&site.service, site.port.0), "websockets": site.websockets}));
            let mut vars = vars.clone();
            vars.base.insert(
                "site".into(),
                json!({
                    "domain": site.domain.0,
                    "cert_dir": format!("{}/certs/{}", self.store_dir.trim_end_matches('/'), cert_name(std::slice::from_ref(&site.domain.0))),
                    "max_body": site.max_body.0,
                    "routes": routes,
                }),
            );
            files.push(ReleaseFile {
                path: format!("{}/{}.conf", remote::NGINX_DIR, site.domain.0),
                content: render("nginx_site.conf.tera", &vars)?,
                mode: 0o644,
            });
        }
        Ok(files)
    }
}

fn version_at_least(version: &str, wanted: &[u32]) -> bool {
    let have: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    have.as_slice() >= wanted
}

/// The store holds a certificate for `domain` that is not due.
fn cert_fresh(certificates: &[store::StoredCert], domain: &str) -> bool {
    let name = cert_name(&[domain.to_string()]);
    certificates.iter().any(|c| {
        c.name == name
            && CertInfo::from_pem_chain(&c.chain_pem).is_ok_and(|info| {
                matches!(
                    policy::decide(
                        info.not_before,
                        info.not_after,
                        OffsetDateTime::now_utc(),
                        None
                    ),
                    Decision::Keep { .. }
                )
            })
    })
}

/// The host's addresses as the world should see them: its address in
/// vpsup.toml when that is an IP (else what the resolver says it is), and
/// its public IPv4 from the facts.
async fn host_addresses(
    target: &HostTarget,
    facts: &HostFacts,
    resolver: SocketAddr,
) -> Vec<IpAddr> {
    let mut addresses = Vec::new();
    match target.ssh.host.parse::<IpAddr>() {
        Ok(ip) => addresses.push(ip),
        Err(_) => addresses.extend(
            dns::resolve(resolver, &target.ssh.host)
                .await
                .unwrap_or_default(),
        ),
    }
    if let Some(ip) = facts
        .public_ipv4
        .as_deref()
        .and_then(|a| a.split('/').next()?.parse().ok())
    {
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    addresses
}

async fn preflight(
    run: &DeployRun<'_>,
    target: &HostTarget,
    facts: &HostFacts,
    report: &mut HostReport,
) -> Result<(), String> {
    if run.sites.is_empty() {
        return Ok(());
    }
    let resolver = socket_addr(&run.app.dns_resolver, 53).ok_or_else(|| {
        format!(
            "[app] dns_resolver {:?} does not resolve",
            run.app.dns_resolver
        )
    })?;
    let host = host_addresses(target, facts, resolver).await;
    let mut problems = Vec::new();
    for site in run.sites {
        let domain = &site.domain.0;
        let resolved = dns::resolve(resolver, domain)
            .await
            .map_err(|e| format!("DNS preflight for {domain}: {e}"))?;
        let verdict = dns::judge(domain, &host, &resolved);
        if verdict.ok() {
            continue;
        }
        match (&run.dns_update, host.first()) {
            (Some(_), Some(ip)) if run.settings.check => report.pending.push(format!(
                "DNS record to set: {}",
                dns::record_for(domain, *ip)
            )),
            (Some(rfc2136), Some(ip)) => {
                rfc2136.set_address(domain, *ip).await?;
                report.dns_updated.push(dns::record_for(domain, *ip));
                if !resolves_here(resolver, domain, &host).await {
                    problems.push(format!(
                        "{domain}: the record was set ({}), but {resolver} does not answer it yet; run deploy again in a few minutes",
                        dns::record_for(domain, *ip)
                    ));
                }
            }
            _ => problems.push(verdict.describe(domain, &resolver)),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "DNS preflight: {}. Nothing was changed and no certificate was ordered (Let's Encrypt allows 5 failed validations per name per hour)",
            problems.join("; ")
        ))
    }
}

/// Asks `resolver` for a record just set until it points at the host (a
/// recursive resolver may still hold the old answer): at most a minute.
async fn resolves_here(resolver: SocketAddr, domain: &str, host: &[IpAddr]) -> bool {
    for _ in 0..30 {
        if let Ok(resolved) = dns::resolve(resolver, domain).await {
            if dns::judge(domain, host, &resolved).ok() {
                return true;
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    false
}

/// `host[:port]` to one socket address.
fn socket_addr(text: &str, default_port: u16) -> Option<SocketAddr> {
    let with_port = if text.parse::<IpAddr>().is_ok() || !text.contains(':') {
        format!("{text}:{default_port}")
    } else {
        text.to_string()
    };
    with_port.to_socket_addrs().ok()?.next()
}

/// Each site from here, as a visitor sees it.
async fn final_check(run: &DeployRun<'_>, target: &HostTarget) -> Vec<SiteReport> {
    let host = run.config.host(&target.name);
    let https_port = host.and_then(|h| h.https_port).map_or(443, |p| p.0);
    let http_port = host.and_then(|h| h.http_port).map_or(80, |p| p.0);
    let extra_root = run.acme.as_ref().and_then(|a| a.extra_root.clone());
    let mut out = Vec::new();
    for site in run.sites {
        // Validated before the deploy began.
        let domain = &site.check_name().unwrap_or_else(|_| site.domain.0.clone());
        let url = format!("https://{domain}{}", site.health.0);
        let (Some(https), Some(http)) = (
            socket_addr(&target.ssh.host, https_port).map(|a| SocketAddr::new(a.ip(), https_port)),
            socket_addr(&target.ssh.host, http_port).map(|a| SocketAddr::new(a.ip(), http_port)),
        ) else {
            out.push(SiteReport {
                url,
                status: None,
                names: Vec::new(),
                days_left: None,
                redirect: None,
                error: Some(format!("{} does not resolve from here", target.ssh.host)),
            });
            continue;
        };
        let checked =
            https_check::check_https(https, domain, &site.health.0, extra_root.as_deref()).await;
        let redirect = https_check::check_redirect(http, domain).await;
        let mut report = SiteReport {
            url,
            status: None,
            names: Vec::new(),
            days_left: None,
            redirect: redirect.as_ref().ok().and_then(|(_, l)| l.clone()),
            error: None,
        };
        match checked {
            Ok(c) => {
                report.status = Some(c.status);
                report.names = c.names;
                report.days_left = Some(c.days_left);
                if !(200..400).contains(&c.status) {
                    report.error = Some(format!("answers HTTP {}", c.status));
                }
            }
            Err(e) => report.error = Some(e),
        }
        out.push(report);
    }
    out
}

fn print_reports(reports: &[HostReport], check: bool) {
    for r in reports {
        if check && r.error.is_none() {
            if r.pending.is_empty() {
                println!(
                    "{}: nothing to change (release {})",
                    r.host,
                    r.release.as_deref().unwrap_or("?")
                );
            }
            for p in &r.pending {
                println!("{}: would change: {p}", r.host);
            }
            continue;
        }
        match (&r.error, r.changed) {
            (Some(e), _) => println!("{}: FAILED: {e}", r.host),
            (None, false) => println!(
                "{}: unchanged (release {}), changed=0",
                r.host,
                r.release.as_deref().unwrap_or("?")
            ),
            (None, true) => println!(
                "{}: release {} is live ({} file(s) uploaded{})",
                r.host,
                r.release.as_deref().unwrap_or("?"),
                r.uploaded,
                if r.secrets_created.is_empty() {
                    String::new()
                } else {
                    format!(", secrets generated: {}", r.secrets_created.join(", "))
                }
            ),
        }
        for record in &r.dns_updated {
            println!("{}: DNS record set: {record}", r.host);
        }
        for c in &r.certificates {
            println!("{}: certificate {c}", r.host);
        }
        for s in &r.sites {
            match &s.error {
                Some(e) => println!("{}: {} FAILED: {e}", r.host, s.url),
                None => println!(
                    "{}: {} -> HTTP {} | certificate for {} | {} days left",
                    r.host,
                    s.url,
                    s.status.unwrap_or_default(),
                    s.names.join(" "),
                    s.days_left.unwrap_or_default()
                ),
            }
        }
    }
}

/// `vpsup rollback`: the release before `current` runs again and is served,
/// on every host, after the same health gate as a deploy.
pub async fn rollback(settings: &Settings) -> anyhow::Result<()> {
    let (config, app) = app_config(settings)?;
    let job = RollbackRun {
        config,
        app,
        owner: lock_owner("rollback"),
    };
    let rows = fleet::run(settings, &settings.targets(None)?, &job).await;
    for row in &rows {
        match (&row.error, &row.rolled_back) {
            (Some(e), _) => println!("{}: FAILED: {e}", row.host),
            (None, Some((from, to))) => {
                println!("{}: rolled back from release {from} to {to}", row.host)
            }
            (None, None) => {}
        }
    }
    if let Some(failures) = Failures::of(&rows) {
        anyhow::bail!("rollback failed on {failures}");
    }
    Ok(())
}

/// Everything every host's rollback shares.
struct RollbackRun<'a> {
    config: &'a Config,
    app: &'a AppConfig,
    owner: String,
}

/// What the rollback did on one host.
struct RollbackRow {
    host: String,
    /// From which release to which.
    rolled_back: Option<(String, String)>,
    error: Option<String>,
}

impl HostResult for RollbackRow {
    fn set_error(&mut self, error: String) {
        self.error = Some(error);
    }
    fn failed(&self) -> bool {
        self.error.is_some()
    }
}

impl HostJob for RollbackRun<'_> {
    type Report = RollbackRow;

    fn begin(&self, turn: &Turn<'_>) -> ControlFlow<RollbackRow, RollbackRow> {
        ControlFlow::Continue(RollbackRow {
            host: turn.target.name.clone(),
            rolled_back: None,
            error: None,
        })
    }

    async fn run(&self, turn: &Turn<'_>, connection: &Connection, row: &mut RollbackRow) {
        let host = &turn.target.name;
        match rollback_on(
            &connection.transport,
            self.config,
            self.app,
            &self.owner,
            host,
        )
        .await
        {
            Ok(from_to) => row.rolled_back = Some(from_to),
            Err(e) => row.error = Some(e),
        }
    }
}

async fn rollback_on(
    transport: &dyn Transport,
    config: &Config,
    app: &AppConfig,
    owner: &str,
    host: &str,
) -> Result<(String, String), String> {
    let paths = AppPaths::new(app.name.as_str());
    let store_dir = config
        .acme
        .as_ref()
        .map_or(store::DEFAULT_DIR, |a| a.store.as_str());
    // Under the lock from the first look: a deploy finishing meanwhile
    // changes what "previous" is.
    let (lock, probed) = lock_and_probe(transport, &paths, store_dir, owner, host).await?;
    let plain = transport;
    let transport = &lock.transport(plain);
    let work = async {
        let current = probed
            .current
            .release
            .clone()
            .ok_or_else(|| format!("app {} was never deployed here", paths.app))?;
        let previous = releases::previous(&probed.releases, &current)
            .ok_or_else(|| {
                format!("release {current} is the only one kept: there is nothing to roll back to")
            })?
            .to_string();
        let out = transport
            .run_ok(
                "reading the previous release",
                ExecRequest::new(format!(
                    "cat {}",
                    crate::transport::script::quote(&format!(
                        "{}/{}",
                        paths.release(&previous),
                        remote::META_FILE
                    ))
                ))
                .become_root(true),
            )
            .await
            .map_err(|e| e.to_string())?;
        let meta: ReleaseMeta = serde_json::from_str(&out.stdout_str()).map_err(|e| {
            format!(
                "release {previous} has no readable {}: {e}",
                remote::META_FILE
            )
        })?;
        let timeout = app.health_timeout.0;
        let no_ports = BTreeMap::new();
        let failure = match start(transport, &paths, &previous, &meta, &no_ports, timeout).await {
            Err(why) => Some(format!("release {previous} is not healthy ({})", why.text)),
            Ok(()) => activate(
                transport,
                config,
                &paths,
                &previous,
                &probed.releases,
                usize::MAX,
                owner,
            )
            .await
            .err()
            .map(|e| format!("release {previous} could not be served ({e})")),
        };
        if let Some(what) = failure {
            let again = match &probed.meta {
                Some(current_meta) => start(
                    transport,
                    &paths,
                    &current,
                    current_meta,
                    &no_ports,
                    timeout,
                )
                .await
                .map_err(|why| why.text),
                None => Err(format!("its {} is unreadable", remote::META_FILE)),
            };
            return Err(match again {
                Ok(()) => format!("{what}; release {current} runs again"),
                Err(e) => format!(
                    "{what}; starting release {current} again failed too ({e}): check `vpsup status` and the host"
                ),
            });
        }
        Ok((current, previous))
    };
    let held = lock.hold(plain, work).await;
    held.into_result("deploy", "interrupted; the host keeps the release it had")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::transport::LocalTransport;

    #[test]
    fn an_unhealthy_gate_names_services_and_what_compose_said() {
        let ports = BTreeMap::from([(("backend".to_string(), 8000), 22000)]);
        let why = unhealthy(
            "@@failed compose\nbackend\trunning\tunhealthy\ndb\tcreated\t\nfrontend\trunning\thealthy\n",
            "Error response from daemon: port 5432 is already allocated",
            &ports,
        );
        assert_eq!(why.services, ["backend", "db"]);
        assert_eq!(
            why.text,
            "backend: running, unhealthy; db: created; docker compose up said: Error response from daemon: port 5432 is already allocated"
        );
        let why = unhealthy("ok 21000 /\nfail 22000 /health 500\n", "", &ports);
        assert_eq!(
            (why.services, why.text),
            (
                vec!["backend".to_string()],
                "backend answers /health with HTTP 500".to_string()
            )
        );
    }

    /// The real probe, run here against a release whose files end without a
    /// newline: every section still reads back (a meta file glued to the next
    /// marker once made a failed deploy's rollback stop the whole app).
    #[tokio::test]
    async fn the_probe_reads_a_release_back() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AppPaths {
            sites_dir: dir.path().join("sites").display().to_string(),
            ..AppPaths::new("shop")
        };
        let paths = AppPaths {
            dir: dir.path().display().to_string(),
            ..paths
        };
        let release = dir.path().join("releases/r1");
        std::fs::create_dir_all(release.join(".vpsup")).unwrap();
        std::fs::create_dir_all(dir.path().join("releases/r0")).unwrap();
        std::fs::create_dir_all(dir.path().join("shared")).unwrap();
        let meta = ReleaseMeta {
            compose_files: vec!["compose.yml".into()],
            env_files: vec![],
            health: vec![("/".into(), 21000)],
            secrets: true,
            dot_env: false,
            project: Some("vpsup-shop".into()),
            volumes_pinned: false,
        };
        std::fs::write(
            release.join(remote::META_FILE),
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
        std::fs::write(release.join("compose.yml"), "services: {}").unwrap();
        std::fs::write(dir.path().join("shared/secrets.env"), "DB_PASSWORD=x").unwrap();
        std::os::unix::fs::symlink("releases/r1", dir.path().join("current")).unwrap();

        let probed = probe(
            &LocalTransport::new("test", true),
            &paths,
            "/nonexistent/vpsup-store",
        )
        .await
        .unwrap();
        assert_eq!(probed.meta, Some(meta));
        assert_eq!(probed.current.release.as_deref(), Some("r1"));
        assert_eq!(probed.current.files.len(), 2);
        assert_eq!(probed.releases, ["r0", "r1"]);
        assert_eq!(probed.secrets, ["DB_PASSWORD"]);
    }

    /// Every variable the site template reads is given (a missing one fails
    /// the deploy on the host, as the VM test once found), and the file says
    /// what nginx needs.
    #[test]
    fn the_site_files_render_with_the_real_templates() {
        let config: Config = toml::from_str(
            "[[sites]]\ndomain = \"doctor.example.com\"\nservice = \"frontend\"\nport = 80\nwebsockets = true\nroutes = [{ path = \"/api/\", service = \"backend\", port = 8000 }]\n",
        )
        .unwrap();
        let ports = BTreeMap::from([
            (("frontend".to_string(), 80), 21000),
            (("backend".to_string(), 8000), 22000),
        ]);
        let assets = Assets::load(None).unwrap();
        let renderer = Renderer::new(&assets.templates).unwrap();
        for http2_on in [false, true] {
            let files = NginxSites {
                app: "doctor",
                sites: &config.sites,
                ports: &ports,
                store_dir: "/etc/vpsup/acme",
                webroot: "/var/lib/vpsup/acme",
                http2_on,
            }
            .render(&renderer)
            .unwrap();
            let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
            assert_eq!(
                paths,
                [remote::MAP_FILE, ".vpsup/nginx/doctor.example.com.conf"]
            );
            let site = String::from_utf8(files[1].content.clone()).unwrap();
            for expected in [
                "server_name doctor.example.com;",
                "root /var/lib/vpsup/acme;",
                "return 301 https://$host$request_uri;",
                "ssl_certificate /etc/vpsup/acme/certs/doctor.example.com/fullchain.pem;",
                "location /api/ {\n        proxy_pass http://127.0.0.1:22000;",
                "location / {\n        proxy_pass http://127.0.0.1:21000;",
                "Connection $vpsup_connection_upgrade;",
            ] {
                assert!(site.contains(expected), "{expected:?} in:\n{site}");
            }
            assert_eq!(site.contains("http2 on;"), http2_on);
        }
    }
}
