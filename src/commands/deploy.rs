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
//! 6. with the app's backup lock (an app with backups; a scheduled backup
//!    waits meanwhile), `[backup] before_deploy`'s snapshot, then `docker
//!    compose up --wait`, then each site's health path on its loopback port;
//! 7. nginx site files (put back if `nginx -t` or the reload fails), reload,
//!    `current` switched, old releases pruned; a failure in 6 or 7 starts
//!    the previous release again and reports the failing services' last log
//!    lines; the backup lock is given back;
//!    then the host's copy of the app's backup and watch settings (its own
//!    checks and alerts, `crate::watch`), when they differ;
//! 8. from here: each site over HTTPS (status, certificate names, days left).
//!
//! And `vpsup rollback`: under the lock, the release before `current`
//! through the same health gate and activation.
//!
//! This file only orders the steps; each lives in `crate::deploy`.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use serde_json::json;
use time::OffsetDateTime;

use crate::acme::certs::{AcmeSettings, Certs};
use crate::acme::dns01::Rfc2136;
use crate::acme::host_settings::{self, HostFile};
use crate::acme::renewal_lock;
use crate::acme::settings::acme_settings;
use crate::acme::store::{self, ChallengeKind};
use crate::backup::host::AppBackup;
use crate::backup::host_settings as backup_settings;
use crate::backup::{self, timers};
use crate::config::{AppConfig, Config, DnsRecords, PrivateFile, SiteConfig, DEFAULT_WEBROOT};
use crate::deploy::dns::{self, PreflightError};
use crate::deploy::error::{DeployError, NotLive, Restored, RunsAgain, StepError};
use crate::deploy::local_release::{self, Release};
use crate::deploy::plan::{BackupWanted, BackupWork, DeployPlan, Wanted};
use crate::deploy::probe::{self, Probed};
use crate::deploy::remote::AppPaths;
use crate::deploy::remote::ReleaseMeta;
use crate::deploy::report::{self, HostReport, RollbackRow, SwitchReport};
use crate::deploy::start;
use crate::deploy::switch::{InPlace, Launch, LaunchFailed, Retiring, Slot};
use crate::deploy::{host_releases, https_check, secrets, volumes};
use crate::engine::assets::Assets;
use crate::engine::render::Renderer;
use crate::exit;
use crate::fleet::{self, Connection, Failures, HostJob, Turn};
use crate::hostlock;
use crate::settings::{project_dir, HostTarget, Settings};
use crate::transport::{ExecRequest, Transport};
use crate::watch::host_settings as watch_settings;

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
    /// `[backup]`: per host (restic's `--host` and the timers' times are the
    /// host's), what it needs to back up by itself.
    backup: BTreeMap<String, BackupWanted>,
    /// Per host (its name is in every alert), the watch settings files.
    watch: BTreeMap<String, Vec<HostFile>>,
}

impl DeployRun<'_> {
    fn store_dir(&self) -> &str {
        self.acme
            .as_ref()
            .map_or(store::DEFAULT_DIR, |a| a.store_dir.as_str())
    }

    fn wanted(&self, host: &str) -> Wanted<'_> {
        Wanted {
            backup: self.backup.get(host),
            watch: self.watch.get(host).map_or(&[], Vec::as_slice),
            app: self.app,
            sites: self.sites,
            release: &self.release,
            renderer: &self.renderer,
            store_dir: self.store_dir(),
            webroot: self
                .acme
                .as_ref()
                .map_or(DEFAULT_WEBROOT, |a| a.webroot.as_str()),
        }
    }
}

/// The project's config and its `[app]` section, or what to add.
fn app_config(settings: &Settings) -> Result<(&Config, &AppConfig), DeployError> {
    let no_app = || DeployError::NoApp(settings.config_path.clone());
    let config = settings.config.as_ref().ok_or_else(no_app)?;
    let app = config.app.as_ref().ok_or_else(no_app)?;
    Ok((config, app))
}

pub async fn run(settings: &Settings) -> exit::Result<()> {
    let (config, app) = app_config(settings)?;
    let project = project_dir(settings);
    let (acme, host_files) = match &config.acme {
        Some(acme) => (
            Some(acme_settings(acme, &project)?),
            host_settings::files(config, &project)?,
        ),
        None if !config.sites.is_empty() => {
            return Err(DeployError::NoAcme(settings.config_path.clone()).into())
        }
        None => (None, Vec::new()),
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
    let targets = settings.targets(None)?;
    let release =
        local_release::collect(&project, app, &config.sites, &kept_home(config, &targets))
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
    let backup = match &config.backup {
        None => BTreeMap::new(),
        Some(backup) if settings.check && !project.join(&backup.password_file).exists() => {
            eprintln!("vpsup: --check: [backup] password_file does not exist yet; a deploy generates it (and installs the backup settings and timers)");
            BTreeMap::new()
        }
        Some(backup) => {
            if backup_settings::ensure_password(backup, &project)? {
                backup_settings::warn_new_password(&project.join(&backup.password_file));
            }
            let mut wanted = BTreeMap::new();
            for target in &targets {
                let units = timers::unit_files(&renderer, app.name.as_str(), backup, &target.name)
                    .map_err(anyhow::Error::msg)?;
                let settings = backup_settings::files(config, &project, &target.name)?;
                wanted.insert(target.name.clone(), BackupWanted { settings, units });
            }
            wanted
        }
    };
    let mut watch = BTreeMap::new();
    for target in &targets {
        watch.insert(
            target.name.clone(),
            watch_settings::files(config, &project, &target.name)?,
        );
    }
    let run = DeployRun {
        settings,
        config,
        app,
        sites: &config.sites,
        release,
        acme,
        host_files,
        renderer,
        owner: hostlock::owner("deploy"),
        dns_update,
        backup,
        watch,
    };
    let reports = fleet::for_each_host(settings, &targets, &run).await;
    if settings.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"hosts": reports}))?
        );
    } else {
        report::print(&reports, settings.check);
    }
    if let Some(failures) = Failures::of(&reports) {
        return Err(exit::Error::failed(format!("deploy failed on {failures}")));
    }
    Ok(())
}

/// The files no release may carry: the private files vpsup.toml names, the
/// keys vpsup logs in to `targets` with (`--identity`, `identity_file`,
/// ~/.ssh/config's), and `[acme] extra_root` (the host gets its own copy).
fn kept_home(config: &Config, targets: &[HostTarget]) -> Vec<PrivateFile> {
    let mut files = config.private_files();
    for target in targets {
        files.extend(target.ssh.identity_files.iter().map(|key| PrivateFile {
            named_by: format!("the SSH key vpsup logs in to host {} with", target.name),
            path: key.clone(),
        }));
    }
    if let Some(root) = config.acme.as_ref().and_then(|a| a.extra_root.as_ref()) {
        files.push(PrivateFile {
            named_by: "[acme] extra_root".to_string(),
            path: root.clone(),
        });
    }
    files
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

    async fn on_host(&self, turn: &Turn<'_>, connection: &Connection, report: &mut HostReport) {
        let transport = &connection.transport;
        if let Err(e) = deploy_on(transport, turn.target, self, report).await {
            report.error = Some(e.to_string());
        }
        report.round_trips = transport.round_trips();
    }

    async fn end(&self, turn: &Turn<'_>, report: &mut HostReport) {
        // After a Ctrl-C (answered by the lock, which keeps its handler), no
        // final check: the user wants to leave.
        if report.error.is_none() && !self.settings.check && !hostlock::stop_requested() {
            let host = self.config.host(&turn.target.name);
            report.sites = https_check::check_sites(
                self.sites,
                &turn.target.ssh.host,
                host.and_then(|h| h.https_port).map_or(443, |p| p.0),
                host.and_then(|h| h.http_port).map_or(80, |p| p.0),
                self.acme.as_ref().and_then(|a| a.extra_root.as_deref()),
            )
            .await;
        }
        report.elapsed_ms = turn.started.elapsed().as_millis();
    }
}

async fn deploy_on(
    transport: &dyn Transport,
    target: &HostTarget,
    run: &DeployRun<'_>,
    report: &mut HostReport,
) -> Result<(), StepError> {
    let paths = AppPaths::new(run.app.name.as_str());
    // A first look, without the lock: an unchanged host (and --check) end here.
    let probed = probe::probe(transport, &paths, run.store_dir()).await?;
    if probed.facts.compose_v2.is_none() {
        return Err(StepError::NoCompose);
    }
    let plan = DeployPlan::new(
        &run.wanted(&target.name),
        &paths,
        &probed,
        OffsetDateTime::now_utc(),
    )?;
    report.release = probed.current.release.clone();
    report.pending = plan.pending();
    if report.pending.is_empty() {
        return Ok(());
    }

    // Every domain must point here before the CA is asked to validate it.
    preflight(run, target, &probed, report).await?;
    if run.settings.check {
        return Ok(());
    }

    // The lock and a second probe in one exec: the deploy is planned again
    // from what the host holds under the lock (another operator's deploy may
    // have landed since the first look).
    let (lock, probed) =
        probe::lock_and_probe(transport, &paths, run.store_dir(), &run.owner, &target.name).await?;
    let locked = lock.transport(transport);
    let work = async {
        let plan = DeployPlan::new(
            &run.wanted(&target.name),
            &paths,
            &probed,
            OffsetDateTime::now_utc(),
        )?;
        report.release = probed.current.release.clone();
        report.pending = plan.pending();
        if report.pending.is_empty() {
            return Ok(());
        }
        change(transport, &locked, run, &paths, &probed, &plan, report).await
    };
    let held = lock.hold(transport, work).await;
    held.into_result(
        "deploy",
        "interrupted: the host keeps the release `current` names, unless this stopped while the new release's containers were starting; `vpsup status` shows what runs, and `vpsup deploy` again finishes the job",
    )
}

/// The DNS preflight of every site against the host's addresses.
async fn preflight(
    run: &DeployRun<'_>,
    target: &HostTarget,
    probed: &Probed,
    report: &mut HostReport,
) -> Result<(), StepError> {
    if run.sites.is_empty() {
        return Ok(());
    }
    let resolver = dns::socket_addr(&run.app.dns_resolver, 53)
        .ok_or_else(|| PreflightError::Resolver(run.app.dns_resolver.clone()))?;
    let host = dns::host_addresses(
        &target.ssh.host,
        probed.facts.public_ipv4.as_deref(),
        resolver,
    )
    .await;
    let preflight = dns::Preflight {
        resolver,
        host: &host,
        update: run.dns_update.as_ref(),
        check: run.settings.check,
    };
    let domains = run.sites.iter().map(|s| s.domain.0.as_str());
    preflight
        .check(domains, &mut report.pending, &mut report.dns_updated)
        .await?;
    Ok(())
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
    plan: &DeployPlan<'_>,
    report: &mut HostReport,
) -> Result<(), StepError> {
    let keeps = match &probed.current.release {
        Some(id) => format!("the host keeps release {id}"),
        None => "nothing was started".to_string(),
    };
    let stop_before = |step: &'static str| {
        if hostlock::stop_requested() {
            Err(StepError::Interrupted {
                step,
                keeps: keeps.clone(),
            })
        } else {
            Ok(())
        }
    };
    report.changed = true;
    // The release: certificates, the release directory, secrets, then up,
    // healthy and served, or back to the previous release.
    if plan.release_work() {
        stop_before("ordering certificates")?;
        // Certificates first: a CA that refuses changes nothing else.
        if let Some(acme) = &run.acme {
            certificates(plain, transport, run, acme, report).await?;
        }

        // The release: a copy of the current one with only the changes sent;
        // the app's data directories made (never inside a release).
        let id = plan.release_id(OffsetDateTime::now_utc());
        stop_before("writing the release")?;
        let (script, uploaded) = plan.release_script(paths, &id);
        report.uploaded = uploaded;
        if !script.is_empty() {
            transport
                .run_ok(
                    "writing the new release",
                    ExecRequest::piped(script).become_root(true),
                )
                .await?;
        }
        report.secrets_created =
            secrets::ensure(transport, &paths.secrets(), &run.app.secrets.generate).await?;

        // `[backup] before_deploy`: the databases as they are, tagged with the
        // release about to replace them (`vpsup restore db --release ID`).
        let before_deploy = run.config.backup.as_ref().is_some_and(|b| b.before_deploy);
        // (Not before the host has its backup settings: the first deploy with
        // [backup] installs them after the release.)
        let backup_ready = !matches!(plan.backup, BackupWork::Install { settings: true, .. });
        if before_deploy && !backup_ready && probed.current.release.is_some() {
            eprintln!(
                "{}: no snapshot before this deploy: the host gets its backup settings with it",
                report.host
            );
        }
        let snapshot = before_deploy
            && backup_ready
            && probed.current.release.is_some()
            && !plan.upload().is_noop();
        // From the snapshot to the release serving (or the previous one
        // again), the app's backup lock: a scheduled backup waits for the
        // restart rather than meet it.
        let backups_here = run.config.backup.is_some() || plan.backup == BackupWork::StopTimers;
        let backup_lock = backups_here.then(|| backup::lock::path(&paths.app));
        let host = report.host.clone();
        let restart = async {
            if snapshot {
                stop_before("the snapshot before the deploy")?;
                let record = backup::run::snapshot_before_deploy(transport, run.config, &host, &id)
                    .await
                    .map_err(|e| StepError::Backup(format!("{e}; nothing was deployed")))?;
                eprintln!(
                    "{host}: snapshot of the databases before release {id}: run {}",
                    record.run
                );
            }
            stop_before("starting the release")?;
            go_live(transport, run, paths, probed, plan, &id, &host).await
        };
        report.switches =
            start::holding_backups(plain, backup_lock.as_deref(), &run.owner, restart).await?;
        report.release = Some(id);
    }
    stop_before("installing the backup setup")?;
    install_backups(transport, run, &report.host, &paths.app, plan.backup).await?;
    if plan.watch_settings {
        // Written after the release: the timer's next run checks what it serves.
        let files = run.watch.get(&report.host).map_or(&[][..], Vec::as_slice);
        watch_settings::write(transport, files, &plan.watch_stale)
            .await
            .map_err(|e| StepError::Watch(e.to_string()))?;
    }
    Ok(())
}

/// Release `id` up, healthy and served, or the previous release again (a
/// first release's containers stopped) with the failing services' logs.
async fn go_live(
    transport: &dyn Transport,
    run: &DeployRun<'_>,
    paths: &AppPaths,
    probed: &Probed,
    plan: &DeployPlan<'_>,
    id: &str,
    host: &str,
) -> Result<Vec<SwitchReport>, StepError> {
    let current = probed.current.release.as_deref();
    let previous = current.map(|id| (id, probed.meta.as_ref()));
    let serve = Serve {
        config: run.config,
        app: run.app,
        paths,
        releases: &probed.releases,
        keep: run.app.releases.0 as usize,
        owner: &run.owner,
        host,
    };
    serve
        .serve(transport, id, &plan.meta, previous, probed.serving(), true)
        .await
        .map_err(|failed| {
            let after = match (current, failed.restored) {
                (Some(previous), Ok(())) => Restored::Previous(previous.to_string()),
                (Some(previous), Err(error)) => Restored::PreviousFailed {
                    previous: previous.to_string(),
                    error,
                },
                (None, Ok(())) => Restored::FirstStopped,
                (None, Err(e)) => Restored::FirstNotStopped(e),
            };
            StepError::NotLive {
                id: id.to_string(),
                why: Box::new(failed.why),
                after,
                logs: failed.logs,
            }
        })
}

/// What serving a release needs besides the release: deploy's and
/// rollback's common path.
struct Serve<'a> {
    config: &'a Config,
    app: &'a AppConfig,
    paths: &'a AppPaths,
    releases: &'a [String],
    keep: usize,
    owner: &'a str,
    host: &'a str,
}

/// A release that did not go live, and what runs instead.
struct ServeFailed {
    why: NotLive,
    logs: String,
    /// The previous state back (`Err`: what went wrong restoring it).
    restored: Result<(), String>,
}

impl Serve<'_> {
    /// Release `id` (how `meta` runs it) started beside what serves (its
    /// site services in the slot nginx does not send to, `serving` being the
    /// one it does), its stateful services recreated only when changed,
    /// then served (nginx switched), then the old instances drained and
    /// stopped. On a failure, what served keeps serving, and what the
    /// release recreated runs as `old` (`(id, how it runs)`: the release
    /// `current` names) ran it; `forget`: the failed release's directory goes.
    async fn serve(
        &self,
        transport: &dyn Transport,
        id: &str,
        meta: &ReleaseMeta,
        old: Option<(&str, Option<&ReleaseMeta>)>,
        serving: Option<Slot>,
        forget: bool,
    ) -> Result<Vec<SwitchReport>, ServeFailed> {
        let slot = meta.slots.as_ref().map(|_| Slot::next(serving));
        let old_meta = old.and_then(|(_, m)| m);
        let launch = Launch {
            paths: self.paths,
            id,
            meta,
            slot,
            split: InPlace::split(meta, old_meta),
            timeout: self.app.health_timeout.0,
            forget,
        };
        if old.is_some() {
            for note in launch.split.notes() {
                eprintln!("{}: {note}", self.host);
            }
        }
        // No stop between the start and serving (or restoring): either way,
        // the host must end with one release serving.
        let failure = match launch.start(transport).await {
            Err(failed) => Err((NotLive::Unhealthy(failed.why.text.clone()), failed)),
            Ok(()) => start::activate(
                transport,
                self.config,
                self.paths,
                id,
                slot,
                self.releases,
                self.keep,
                self.owner,
            )
            .await
            .map_err(|e| {
                (
                    NotLive::NotServed(e),
                    LaunchFailed {
                        why: start::Unhealthy {
                            text: String::new(),
                            services: Vec::new(),
                        },
                        in_slot: slot.is_some(),
                    },
                )
            }),
        };
        let switched = match failure {
            Ok(switched) => switched,
            Err((why, failed)) => {
                let (logs, restored) = launch.recover(transport, &failed, old).await;
                return Err(ServeFailed {
                    why,
                    logs,
                    restored,
                });
            }
        };
        let Some((old_id, Some(old_meta))) = old else {
            return Ok(Vec::new());
        };
        let retiring = Retiring {
            paths: self.paths,
            id: old_id,
            meta: old_meta,
            serving,
        };
        match retiring
            .retire(transport, &launch, self.app.drain.0.as_secs())
            .await
        {
            Ok(drained) => Ok(drained
                .into_iter()
                .map(|d| SwitchReport {
                    domain: d.domain,
                    switch_ms: switched.unwrap_or_default(),
                    drain_ms: d.ms,
                    cut: d.open,
                })
                .collect()),
            Err(e) => {
                eprintln!("{}: the new release serves; {e}", self.host);
                Ok(Vec::new())
            }
        }
    }
}

/// `[backup]`: the host's copy of the settings and its timers, as the plan
/// found them lacking; the repository is created the first time (a backup
/// never creates one). `[backup]` gone: the app's timers stop (its
/// repository and settings stay: they are the user's).
async fn install_backups(
    transport: &dyn Transport,
    run: &DeployRun<'_>,
    host: &str,
    app: &str,
    work: BackupWork,
) -> Result<(), StepError> {
    let failed = |e: &dyn std::fmt::Display| {
        StepError::Backup(format!(
            "{e} (the release is live; `vpsup deploy` again retries this step)"
        ))
    };
    match work {
        BackupWork::Nothing => Ok(()),
        BackupWork::StopTimers => {
            transport
                .run_ok(
                    "stopping the backup timers",
                    ExecRequest::new(timers::remove_script(app)).become_root(true),
                )
                .await?;
            Ok(())
        }
        BackupWork::Install {
            settings,
            timers: units,
        } => {
            let want = &run.backup[host];
            if settings {
                backup_settings::write(transport, &want.settings)
                    .await
                    .map_err(|e| failed(&e))?;
                let job = AppBackup::for_operator(run.config, host, run.owner.clone())
                    .map_err(|e| failed(&e))?;
                backup::host::init(transport, &job)
                    .await
                    .map_err(|e| failed(&e))?;
            }
            if units {
                transport
                    .run_ok(
                        "installing the backup timers",
                        ExecRequest::new(timers::install_script(app, &want.units))
                            .become_root(true),
                    )
                    .await?;
            }
            Ok(())
        }
    }
}

/// Each site's certificate, and the renewal timer's settings, under the
/// host's renewal lock: its timer must not order the same certificates
/// meanwhile.
async fn certificates(
    plain: &dyn Transport,
    transport: &dyn Transport,
    run: &DeployRun<'_>,
    acme: &AcmeSettings,
    report: &mut HostReport,
) -> Result<(), StepError> {
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
                Err(error) => {
                    ensured = Err(StepError::Certificate {
                        domain: site.domain.0.clone(),
                        error,
                    });
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
                .map_err(StepError::RenewalSettings)?;
        }
        Ok(())
    };
    renewal_lock::hold_within(plain, &acme.store_dir, &run.owner, &host, issue)
        .await?
        .into_result(
            "renewal",
            "interrupted while ordering certificates; nothing else changed",
        )
}

/// `vpsup rollback`: the release before `current` runs again and is served,
/// on every host, after the same health gate as a deploy.
pub async fn rollback(settings: &Settings) -> exit::Result<()> {
    let (config, app) = app_config(settings)?;
    let job = RollbackRun {
        config,
        app,
        owner: hostlock::owner("rollback"),
    };
    let rows = fleet::for_each_host(settings, &settings.targets(None)?, &job).await;
    report::print_rollback(&rows);
    if let Some(failures) = Failures::of(&rows) {
        return Err(exit::Error::failed(format!(
            "rollback failed on {failures}"
        )));
    }
    Ok(())
}

/// Everything every host's rollback shares.
struct RollbackRun<'a> {
    config: &'a Config,
    app: &'a AppConfig,
    owner: String,
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

    async fn on_host(&self, turn: &Turn<'_>, connection: &Connection, row: &mut RollbackRow) {
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
            Err(e) => row.error = Some(e.to_string()),
        }
    }
}

async fn rollback_on(
    transport: &dyn Transport,
    config: &Config,
    app: &AppConfig,
    owner: &str,
    host: &str,
) -> Result<(String, String), StepError> {
    let paths = AppPaths::new(app.name.as_str());
    let store_dir = config
        .acme
        .as_ref()
        .map_or(store::DEFAULT_DIR, |a| a.store.as_str());
    // Under the lock from the first look: a deploy finishing meanwhile
    // changes what "previous" is.
    let (lock, probed) = probe::lock_and_probe(transport, &paths, store_dir, owner, host).await?;
    let plain = transport;
    let transport = &lock.transport(plain);
    let work = async {
        let current = probed
            .current
            .release
            .clone()
            .ok_or_else(|| StepError::NeverDeployed(paths.app.clone()))?;
        let previous = host_releases::previous(&probed.releases, &current)
            .ok_or_else(|| StepError::NothingToRollBackTo(current.clone()))?
            .to_string();
        let meta = start::read_meta(transport, &paths, &previous).await?;
        let backup_lock = config
            .backup
            .is_some()
            .then(|| backup::lock::path(&paths.app));
        let serve = Serve {
            config,
            app,
            paths: &paths,
            releases: &probed.releases,
            keep: usize::MAX,
            owner,
            host,
        };
        let restart = async {
            serve
                .serve(
                    transport,
                    &previous,
                    &meta,
                    Some((current.as_str(), probed.meta.as_ref())),
                    probed.serving(),
                    false,
                )
                .await
                .map_err(|failed| StepError::RollbackNotLive {
                    previous: previous.clone(),
                    why: Box::new(failed.why),
                    after: match failed.restored {
                        Ok(()) => RunsAgain::Yes(current.clone()),
                        Err(error) => RunsAgain::Failed {
                            current: current.clone(),
                            error,
                        },
                    },
                })
        };
        start::holding_backups(plain, backup_lock.as_deref(), owner, restart).await?;
        Ok((current, previous))
    };
    let held = lock.hold(plain, work).await;
    held.into_result("deploy", "interrupted; the host keeps the release it had")
}
