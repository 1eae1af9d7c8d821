//! `vpsup backup` (every host, or `--local` on the host itself: what its
//! timer runs), `backup list`, `backup init`, `backup verify` (the restore
//! drill) and `vpsup restore`. One implementation over `Transport`: an
//! operator's run and the host's own run do the same steps.
//!
//! Steps of a backup: the host's settings up to date (operator runs), the
//! app's backup lock, the preflight (`cat config`: reachable, password
//! right, the same repository as before), the plan from the deployed compose
//! files, then per service the pipelines and the manifest; `forget` with the
//! retention after a run where every service succeeded; the run recorded in
//! `last-backup.json`. Never silently green: any failure fails the run,
//! naming the service, in restic's or the engine's own words.

use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::backup::engines::{self, volume};
use crate::backup::host_settings::{
    self, HostSettings, RunKind, RunRecord, ServiceRecord, SnapshotRecord,
};
use crate::backup::manifest::{self, Manifest, Part, MANIFEST_VERSION};
use crate::backup::pipe::{stdin_path, Pipeline};
use crate::backup::plan::{self, BackupPlan, Dir, PlanInput, ServicePlan, Work};
use crate::backup::restic::{
    self, classify, parse_snapshots, ReadData, RepoError, Repository, SnapshotFilter, SnapshotId,
    SnapshotMeta, SHORT_TIMEOUT,
};
use crate::backup::restore::{self, RestoreInto};
use crate::backup::{lock, Engine, RunId};
use crate::deploy::remote::{AppPaths, ReleaseMeta, META_FILE};
use crate::deploy::start::stack_for;
use crate::fleet::{self, Connection, Failures, HostJob, HostResult, Turn};
use crate::layout::BACKUP_SETTINGS_DIR;
use crate::settings::{project_dir, Settings};
use crate::transport::script::quote;
use crate::transport::sections::Sections;
use crate::transport::{ExecRequest, LocalTransport, Transport};

/// What `vpsup backup …` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Backup,
    List,
    Init,
    Verify,
}

/// `vpsup restore SERVICE …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreRequest {
    pub service: String,
    /// An id or `latest`.
    pub snapshot: Option<String>,
    /// The snapshot `before_deploy` took before release `release`.
    pub release: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Settings(#[from] host_settings::SettingsError),
    #[error("{0}")]
    Refused(String),
}

impl crate::exit::ExitStatus for BackupError {
    fn exit_code(&self) -> u8 {
        match self {
            BackupError::Settings(e) => e.exit_code(),
            BackupError::Refused(_) => crate::exit::BAD_INPUT,
        }
    }
}

/// One app's backups as one host runs them.
#[derive(Debug, Clone)]
pub struct AppBackup {
    pub settings: HostSettings,
    pub repo: Repository,
    /// The lock's path (`lock::path`, another in tests).
    pub lock_path: String,
    /// Who holds the lock, for whoever is refused it.
    pub owner: String,
    /// On the host itself (the timer).
    pub local: bool,
}

impl AppBackup {
    pub fn new(
        settings: HostSettings,
        owner: String,
        local: bool,
    ) -> Result<AppBackup, BackupError> {
        let repo = settings
            .repository()
            .map_err(|e| BackupError::Refused(format!("[backup] {e}")))?;
        Ok(AppBackup {
            lock_path: lock::path(&settings.app),
            repo,
            settings,
            owner,
            local,
        })
    }

    fn app(&self) -> &str {
        &self.settings.app
    }

    fn timeout(&self) -> Duration {
        self.settings.backup.timeout.0
    }
}

/// A host's report.
#[derive(Debug, Default, Serialize)]
pub struct HostReport {
    pub host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_settings: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunRecord>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<ListedSnapshot>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HostReport {
    fn add_error(&mut self, error: String) {
        self.error = Some(match self.error.take() {
            Some(first) => format!("{first}; {error}"),
            None => error,
        });
    }
}

impl HostResult for HostReport {
    fn set_error(&mut self, error: String) {
        self.add_error(error);
    }
    fn failed(&self) -> bool {
        self.error.is_some() || self.run.as_ref().is_some_and(|r| !r.ok)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListedSnapshot {
    pub service: String,
    pub path: String,
    pub time: String,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

// ---------------------------------------------------------------- entry points

/// `vpsup backup [list|init|verify]`; `local`: on the host, for app `app`
/// (every app with settings here when `None`).
pub async fn run(
    settings: &Settings,
    action: Action,
    local: bool,
    app: Option<&str>,
) -> crate::exit::Result<()> {
    let reports = if local {
        run_local(Path::new(BACKUP_SETTINGS_DIR), &action, app).await?
    } else {
        run_fleet(settings, &action).await?
    };
    finish(settings.json, &action, &reports)
}

/// On this host: each app's settings from `dir`.
pub async fn run_local(
    dir: &Path,
    action: &Action,
    app: Option<&str>,
) -> Result<Vec<HostReport>, BackupError> {
    let apps = match app {
        Some(app) => vec![app.to_string()],
        None => host_settings::apps_in(dir),
    };
    if apps.is_empty() {
        return Err(BackupError::Refused(format!(
            "no app's backup settings in {}: `vpsup deploy` with [backup] writes them",
            dir.display()
        )));
    }
    let transport = LocalTransport::current();
    let owner = format!(
        "the backup timer on {} (vpsup backup --local)",
        crate::hostlock::this_machine()
    );
    let mut reports = Vec::new();
    for app in apps {
        let settings = host_settings::read(&dir.join(format!("{app}.toml")))?;
        let job = AppBackup::new(settings, owner.clone(), true)?;
        let mut report = HostReport {
            host: job.settings.host.clone(),
            ..HostReport::default()
        };
        on_host(&transport, &job, action, &mut report).await;
        reports.push(report);
    }
    Ok(reports)
}

struct FleetRun<'a> {
    config: &'a crate::config::Config,
    project: PathBuf,
    action: &'a Action,
}

impl HostJob for FleetRun<'_> {
    type Report = HostReport;

    fn begin(&self, turn: &Turn<'_>) -> ControlFlow<HostReport, HostReport> {
        ControlFlow::Continue(HostReport {
            host: turn.target.name.clone(),
            ..HostReport::default()
        })
    }

    async fn on_host(&self, turn: &Turn<'_>, connection: &Connection, report: &mut HostReport) {
        let transport = &connection.transport;
        let files = match host_settings::files(self.config, &self.project, &turn.target.name) {
            Ok(files) => files,
            Err(e) => return report.add_error(e.to_string()),
        };
        match host_settings::write(transport, &files).await {
            Ok(host_settings::Changed::Unchanged) => report.host_settings = Some("unchanged"),
            Ok(host_settings::Changed::Written(_)) => report.host_settings = Some("written"),
            Err(e) => return report.add_error(e.to_string()),
        }
        let settings = match operator_settings(self.config, &turn.target.name) {
            Ok(s) => s,
            Err(e) => return report.add_error(e.to_string()),
        };
        match AppBackup::new(settings, crate::hostlock::owner("backup"), false) {
            Ok(job) => on_host(transport, &job, self.action, report).await,
            Err(e) => report.add_error(e.to_string()),
        }
    }
}

/// The settings an operator's run uses on host `host`: the project's
/// `[backup]`, its files as the host keeps them.
fn operator_settings(
    config: &crate::config::Config,
    host: &str,
) -> Result<HostSettings, BackupError> {
    use host_settings::SettingsError;
    let app = config
        .app
        .as_ref()
        .ok_or(SettingsError::NoApp)?
        .name
        .to_string();
    let backup = config.backup.clone().ok_or(SettingsError::NoBackup)?;
    Ok(HostSettings {
        app,
        host: host.to_string(),
        backup,
    })
}

async fn run_fleet(
    settings: &Settings,
    action: &Action,
) -> Result<Vec<HostReport>, crate::exit::Error> {
    let config = settings
        .config
        .as_ref()
        .ok_or_else(|| crate::exit::Error::failed("backups need vpsup.toml"))?;
    let project = project_dir(settings);
    if let Some(backup) = &config.backup {
        if !settings.check
            && host_settings::ensure_password(backup, &project).map_err(BackupError::from)?
        {
            eprintln!(
                "vpsup: GENERATED a new backup password in {}.\n  KEEP A COPY OUTSIDE THIS MACHINE AND THE HOST (a password manager): without it no backup can be read.",
                project.join(&backup.password_file).display()
            );
        }
    }
    let job = FleetRun {
        config,
        project,
        action,
    };
    Ok(fleet::for_each_host(settings, &settings.targets(None)?, &job).await)
}

fn finish(json: bool, action: &Action, reports: &[HostReport]) -> crate::exit::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "hosts": reports }))?
        );
    } else {
        print_reports(action, reports);
    }
    match Failures::of(reports) {
        Some(failures) => Err(crate::exit::Error::failed(format!(
            "backup failed on {failures}; earlier snapshots are untouched"
        ))),
        None => Ok(()),
    }
}

fn print_reports(action: &Action, reports: &[HostReport]) {
    for r in reports {
        if let Some(repo) = &r.repository {
            println!("{}: repository {repo}", r.host);
        }
        if let Some(run) = &r.run {
            println!(
                "{}: {} {} {}",
                r.host,
                kind_word(run.kind),
                run.run,
                if run.ok { "ok" } else { "FAILED" }
            );
            println!(
                "  {:<12} {:<9} {:<10} {:>12} {:>9}  path",
                "service", "engine", "snapshot", "bytes", "seconds"
            );
            for s in &run.services {
                for snap in &s.snapshots {
                    println!(
                        "  {:<12} {:<9} {:<10} {:>12} {:>9.1}  {}",
                        s.service,
                        s.engine,
                        snap.id.get(..8).unwrap_or(&snap.id),
                        snap.bytes,
                        s.duration_ms as f64 / 1000.0,
                        snap.path
                    );
                }
                if let Some(e) = &s.error {
                    println!("  {:<12} {:<9} FAILED: {e}", s.service, s.engine);
                }
            }
        }
        if *action == Action::List {
            println!(
                "  {:<12} {:<26} {:<10} {:>12}  path",
                "service", "time", "snapshot", "bytes"
            );
            for s in &r.snapshots {
                let bytes = s.bytes.map_or_else(|| "-".to_string(), |b| b.to_string());
                println!(
                    "  {:<12} {:<26} {:<10} {:>12}  {}",
                    s.service,
                    s.time.get(..19).unwrap_or(&s.time),
                    s.id.get(..8).unwrap_or(&s.id),
                    bytes,
                    s.path
                );
            }
        }
        if let Some(e) = &r.error {
            println!("{}: FAILED: {e}", r.host);
        }
    }
}

fn kind_word(kind: RunKind) -> &'static str {
    match kind {
        RunKind::Backup => "backup",
        RunKind::Drill => "drill",
    }
}

/// One action on one host, holding the app's backup lock.
pub async fn on_host(
    transport: &dyn Transport,
    job: &AppBackup,
    action: &Action,
    report: &mut HostReport,
) {
    let work = async {
        match action {
            Action::Init => init(transport, job)
                .await
                .map(|id| report.repository = Some(id)),
            Action::List => list(transport, job).await.map(|s| report.snapshots = s),
            Action::Backup => {
                let record = backup(transport, job, &BackupScope::default()).await;
                report.run = Some(record);
                Ok(())
            }
            Action::Verify => {
                report.run = Some(verify(transport, job).await);
                Ok(())
            }
        }
    };
    match lock::hold(transport, &job.lock_path, &job.owner, job.local, work).await {
        Err(e) => report.add_error(e.to_string()),
        Ok(held) => {
            match &held.outcome {
                None => report.add_error("interrupted before it finished".to_string()),
                Some(Err(e)) => report.add_error(e.clone()),
                Some(Ok(())) => {}
            }
            if let Some(problem) = held.release_problem("backup") {
                report.add_error(problem);
            }
        }
    }
}

// ---------------------------------------------------------------- repository

/// Runs a restic script as root; its stdout, or restic's classified error.
async fn restic_run(transport: &dyn Transport, script: String) -> Result<String, String> {
    let out = transport
        .exec(ExecRequest::new(script).become_root(true))
        .await
        .map_err(|e| e.to_string())?;
    if out.success() {
        Ok(out.stdout_str())
    } else {
        Err(classify(out.exit_status, &out.stderr_str()).to_string())
    }
}

/// `cat config`: the repository's id, or why it cannot be used.
async fn repository_id(
    transport: &dyn Transport,
    repo: &Repository,
) -> Result<Result<String, RepoError>, String> {
    let out = transport
        .exec(ExecRequest::new(repo.cat_config(SHORT_TIMEOUT)).become_root(true))
        .await
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Ok(Err(classify(out.exit_status, &out.stderr_str())));
    }
    restic::parse_config(&out.stdout_str())
        .map(|c| Ok(c.id))
        .map_err(|e| e.to_string())
}

/// The id the host recorded, and a script to record one.
async fn recorded_id(transport: &dyn Transport, app: &str) -> Result<Option<String>, String> {
    let bytes = transport
        .read_file(&host_settings::repository_id_path(app), true)
        .await
        .map_err(|e| e.to_string())?;
    Ok(bytes
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|s| !s.is_empty()))
}

async fn record_id(transport: &dyn Transport, app: &str, id: &str) -> Result<(), String> {
    let script = format!(
        "set -e\numask 077\nmkdir -p {}\nprintf '%s\\n' {} >{}\n",
        quote(&host_settings::state_dir(app)),
        quote(id),
        quote(&host_settings::repository_id_path(app))
    );
    transport
        .run_ok(
            "recording the repository id",
            ExecRequest::new(script).become_root(true),
        )
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The preflight of every run but `init`: the repository answers, the
/// password opens it, and it is the one this app has been writing to.
pub async fn preflight(transport: &dyn Transport, job: &AppBackup) -> Result<String, String> {
    let id = repository_id(transport, &job.repo)
        .await?
        .map_err(|e| e.to_string())?;
    match recorded_id(transport, job.app()).await? {
        Some(known) if known != id => Err(format!(
            "the repository at {} is not the one app {} has been backing up to (its id was {}, now {}): refusing to write to it; if this is intended, remove {} on the host",
            job.repo.url,
            job.app(),
            short(&known),
            short(&id),
            host_settings::repository_id_path(job.app())
        )),
        Some(_) => Ok(id),
        None => {
            record_id(transport, job.app(), &id).await?;
            Ok(id)
        }
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// `backup init`: creates the repository only where restic said, in so many
/// words, that there is none; records its id either way.
pub async fn init(transport: &dyn Transport, job: &AppBackup) -> Result<String, String> {
    let id = match repository_id(transport, &job.repo).await? {
        Ok(id) => {
            eprintln!(
                "vpsup: {}: repository {} exists ({})",
                job.settings.host,
                job.repo.url,
                short(&id)
            );
            id
        }
        Err(RepoError::NoRepository { .. }) => {
            let out = restic_run(transport, job.repo.init(SHORT_TIMEOUT)).await?;
            let id = restic::parse_config(&out).map_err(|e| e.to_string())?.id;
            eprintln!(
                "vpsup: {}: created repository {} ({})",
                job.settings.host,
                job.repo.url,
                short(&id)
            );
            id
        }
        Err(e) => return Err(e.to_string()),
    };
    match recorded_id(transport, job.app()).await? {
        Some(known) if known != id => {
            return Err(format!(
                "the repository at {} is not the one app {} recorded ({}): refusing",
                job.repo.url,
                job.app(),
                short(&known)
            ))
        }
        Some(_) => {}
        None => record_id(transport, job.app(), &id).await?,
    }
    Ok(id)
}

/// `backup list`: the app's data snapshots, newest first.
pub async fn list(
    transport: &dyn Transport,
    job: &AppBackup,
) -> Result<Vec<ListedSnapshot>, String> {
    preflight(transport, job).await?;
    let out = restic_run(
        transport,
        job.repo.snapshots(&SnapshotFilter::app(job.app())),
    )
    .await?;
    let snapshots = parse_snapshots(&out).map_err(|e| e.to_string())?;
    Ok(listed(snapshots))
}

/// The listing's rows: data snapshots only (manifests are bookkeeping), newest first.
pub fn listed(snapshots: Vec<restic::SnapshotInfo>) -> Vec<ListedSnapshot> {
    let mut rows: Vec<ListedSnapshot> = snapshots
        .into_iter()
        .filter(|s| s.tag("kind") != Some("manifest"))
        .map(|s| ListedSnapshot {
            service: s.tag("service").unwrap_or("?").to_string(),
            path: s.paths.first().cloned().unwrap_or_default(),
            time: s.time.clone(),
            bytes: s.summary.as_ref().and_then(|x| x.total_bytes_processed),
            release: s.tag("release").map(str::to_string),
            id: s.id,
        })
        .collect();
    rows.sort_by(|a, b| b.time.cmp(&a.time).then(a.service.cmp(&b.service)));
    rows
}

// ---------------------------------------------------------------- backup

/// Which services a run covers and the extra tags its snapshots carry.
#[derive(Debug, Clone, Default)]
pub struct BackupScope {
    /// Only these services (all when empty).
    pub services: Vec<String>,
    /// Only database engines (the snapshot before a deploy).
    pub databases_only: bool,
    /// `release=<id>`, `reason=safety`, …
    pub tags: Vec<String>,
    /// Record the run in last-backup.json (not for a restore's safety snapshot).
    pub record: bool,
}

/// The release that runs: its meta and its compose files, merged.
async fn deployed(
    transport: &dyn Transport,
    app: &str,
) -> Result<(ReleaseMeta, Value, String), String> {
    let paths = AppPaths::new(app);
    let current = format!("{}/current", paths.dir);
    let meta_text = transport
        .read_file(&format!("{current}/{META_FILE}"), true)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!("app {app} is not deployed on this host ({current} has no release)")
        })?;
    let meta: ReleaseMeta =
        serde_json::from_slice(&meta_text).map_err(|e| format!("{current}/{META_FILE}: {e}"))?;
    let mut docs = Vec::new();
    for file in &meta.compose_files {
        let path = format!("{current}/{file}");
        let text = transport
            .read_file(&path, true)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{path} is missing"))?;
        let doc: Value = serde_saphyr::from_str(&String::from_utf8_lossy(&text))
            .map_err(|e| format!("{path}: {e}"))?;
        docs.push(doc);
    }
    // The prefix every compose command of the release starts with (compose_cli
    // keeps it private; `down` is it plus one word).
    let compose_cli = stack_for(app, &current, &meta, &paths.secrets()).base();
    Ok((meta, plan::merge_compose(&docs), compose_cli))
}

/// The plan for this host's release.
async fn make_plan(
    transport: &dyn Transport,
    job: &AppBackup,
) -> Result<(BackupPlan, Vec<String>), String> {
    let (meta, compose, compose_cli) = deployed(transport, job.app()).await?;
    let all: Vec<String> = compose["services"]
        .as_object()
        .map(|s| s.keys().cloned().collect())
        .unwrap_or_default();
    let plan = plan::plan(PlanInput {
        app: job.app(),
        backup: &job.settings.backup,
        compose: &compose,
        project: meta.project(job.app()),
        compose_cli: &compose_cli,
        data_dir: &AppPaths::new(job.app()).data_dir(),
        repository: job.repo.clone(),
    })?;
    Ok((plan, all))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A backup run: preflight, plan, every service, forget, record. Failures
/// are in the record (`ok: false`, the error and each service's).
pub async fn backup(transport: &dyn Transport, job: &AppBackup, scope: &BackupScope) -> RunRecord {
    let run = RunId::now();
    let mut record = RunRecord {
        kind: RunKind::Backup,
        run: run.to_string(),
        started: now_rfc3339(),
        finished: String::new(),
        ok: false,
        error: None,
        services: Vec::new(),
    };
    let outcome = backup_steps(transport, job, scope, &run, &mut record.services).await;
    record.finished = now_rfc3339();
    let failed: Vec<&str> = record
        .services
        .iter()
        .filter(|s| s.error.is_some())
        .map(|s| s.service.as_str())
        .collect();
    record.ok = outcome.is_ok() && failed.is_empty();
    record.error = match outcome {
        Err(e) => Some(e),
        Ok(()) if !failed.is_empty() => Some(format!("failed: {}", failed.join(", "))),
        Ok(()) => None,
    };
    if scope.record {
        if let Err(e) = host_settings::store_record(transport, job.app(), &record).await {
            record.ok = false;
            record.error = Some(format!(
                "{}; and the run could not be recorded: {e}",
                record.error.clone().unwrap_or_default()
            ));
        }
    }
    record
}

async fn backup_steps(
    transport: &dyn Transport,
    job: &AppBackup,
    scope: &BackupScope,
    run: &RunId,
    services: &mut Vec<ServiceRecord>,
) -> Result<(), String> {
    preflight(transport, job).await?;
    let (plan, _) = make_plan(transport, job).await?;
    let chosen: Vec<ServicePlan> = plan
        .services
        .iter()
        .filter(|s| scope.services.is_empty() || scope.services.contains(&s.service))
        .filter(|s| !scope.databases_only || !matches!(s.engine, Engine::Volume { .. }))
        .cloned()
        .collect();
    if let Some(missing) = scope
        .services
        .iter()
        .find(|s| !chosen.iter().any(|c| &c.service == *s))
    {
        return Err(format!("service {missing} has nothing to back up (not in the deployed compose files, or skipped)"));
    }
    for service in chosen {
        let started = Instant::now();
        eprintln!(
            "vpsup: {}: {}: backing up ({})",
            job.settings.host,
            service.service,
            service.engine.name()
        );
        let mut rec = ServiceRecord {
            service: service.service.clone(),
            engine: service.engine.name().to_string(),
            snapshots: Vec::new(),
            duration_ms: 0,
            error: None,
        };
        if let Err(e) = back_up_service(transport, job, &plan, service, scope, run, &mut rec).await
        {
            eprintln!("vpsup: {}: {}: FAILED: {e}", job.settings.host, rec.service);
            rec.error = Some(e);
        }
        rec.duration_ms = started.elapsed().as_millis() as u64;
        services.push(rec);
    }
    if services.iter().all(|s| s.error.is_none()) {
        let forget = job.repo.forget(
            job.app(),
            &job.settings.host,
            &plan.retention,
            false,
            SHORT_TIMEOUT * 5,
        );
        restic_run(transport, forget)
            .await
            .map_err(|e| format!("retention (forget): {e}"))?;
    }
    Ok(())
}

fn meta_for(
    job: &AppBackup,
    service: &str,
    engine: &Engine,
    run: &RunId,
    scope: &BackupScope,
) -> Result<SnapshotMeta, String> {
    let mut meta = SnapshotMeta::data(
        &job.settings.host,
        job.app(),
        service,
        engine.name(),
        run.as_str(),
    )?;
    meta.tags.extend(scope.tags.iter().cloned());
    Ok(meta)
}

async fn back_up_service(
    transport: &dyn Transport,
    job: &AppBackup,
    plan: &BackupPlan,
    mut service: ServicePlan,
    scope: &BackupScope,
    run: &RunId,
    rec: &mut ServiceRecord,
) -> Result<(), String> {
    let compose = &plan.compose_cli;
    if let Work::ListDatabases { script, .. } = &service.work {
        let out = transport
            .exec(
                ExecRequest::new(engines::exec_in(compose, &service.service, script))
                    .become_root(true),
            )
            .await
            .map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(format!(
                "listing its databases failed: {}",
                out.stderr_tail(5)
            ));
        }
        service.databases_listed(&out.stdout_str())?;
    }
    let meta = meta_for(job, &service.service, &service.engine, run, scope)?;
    let mut manifest = Manifest {
        version: MANIFEST_VERSION,
        run: run.to_string(),
        app: job.app().to_string(),
        service: service.service.clone(),
        engine: service.engine,
        image: service.image.clone(),
        parts: Vec::new(),
        pg_counts: Default::default(),
        redis_keys: None,
    };
    match &service.work {
        Work::ListDatabases { .. } => unreachable!("listed above"),
        Work::Dump(parts) => {
            for part in parts {
                let pipeline = Pipeline {
                    producer: engines::exec_in(compose, &service.service, &part.inner),
                    filename: stdin_path(job.app(), &service.service, &part.file),
                    meta: meta.clone(),
                    timeout: plan.timeout,
                    min_bytes: part.min_bytes,
                };
                let (snapshot, dump_report) = run_pipeline(transport, &job.repo, &pipeline, None)
                    .await
                    .map_err(|e| format!("{}: {e}", part.file))?;
                eprintln!(
                    "vpsup: {}: {}: {} {} bytes, snapshot {}",
                    job.settings.host, service.service, part.file, snapshot.bytes, snapshot.id
                );
                if let Some(db) = &part.database {
                    manifest.pg_counts.insert(
                        db.clone(),
                        crate::backup::engines::postgres::parse_counts(&dump_report),
                    );
                }
                if service.engine == Engine::Redis {
                    manifest.redis_keys =
                        crate::backup::engines::redis::parse_dump_report(&dump_report).keys;
                }
                add_part(
                    rec,
                    &mut manifest,
                    format!("/{}", pipeline.filename),
                    snapshot.id,
                    snapshot.bytes,
                );
            }
        }
        Work::Files { dirs, stop } => {
            for dir in dirs {
                let path = match dir {
                    Dir::Path(p) => p.clone(),
                    Dir::Volume(name) => {
                        let out = restic_or_shell(transport, volume::mountpoint(name)).await?;
                        volume::parse_mountpoint(&out)?
                    }
                };
                let mut script = job.repo.backup_dir(&path, &meta, plan.timeout);
                if *stop {
                    script = engines::with_stopped(
                        compose,
                        std::slice::from_ref(&service.service),
                        &script,
                    );
                }
                let out = restic_run(transport, script)
                    .await
                    .map_err(|e| format!("{}: {e}", dir.label()))?;
                let summary = restic::parse_summary(&out).map_err(|e| e.to_string())?;
                add_part(
                    rec,
                    &mut manifest,
                    path,
                    summary.snapshot_id,
                    summary.total_bytes_processed,
                );
            }
        }
    }
    let store = manifest.store(&job.settings.host, SHORT_TIMEOUT)?;
    let mut store = store;
    store.meta.tags.extend(scope.tags.iter().cloned());
    run_pipeline(
        transport,
        &job.repo,
        &store,
        Some(manifest.to_json().into_bytes()),
    )
    .await
    .map_err(|e| format!("storing the manifest: {e}"))?;
    Ok(())
}

fn add_part(
    rec: &mut ServiceRecord,
    manifest: &mut Manifest,
    path: String,
    id: String,
    bytes: u64,
) {
    rec.snapshots.push(SnapshotRecord {
        path: path.clone(),
        id: id.clone(),
        bytes,
    });
    manifest.parts.push(Part {
        path,
        snapshot: id,
        bytes,
    });
}

async fn restic_or_shell(transport: &dyn Transport, script: String) -> Result<String, String> {
    let out = transport
        .exec(ExecRequest::new(script).become_root(true))
        .await
        .map_err(|e| e.to_string())?;
    if out.success() {
        Ok(out.stdout_str())
    } else {
        Err(out.stderr_tail(5))
    }
}

/// Runs a pipeline; its snapshot and the dump's stderr (counts, keys).
async fn run_pipeline(
    transport: &dyn Transport,
    repo: &Repository,
    pipeline: &Pipeline,
    stdin: Option<Vec<u8>>,
) -> Result<(crate::backup::pipe::Snapshot, String), String> {
    let sections = Sections::random();
    let mut request = ExecRequest::new(pipeline.script(repo, &sections)).become_root(true);
    if let Some(bytes) = stdin {
        request = request.stdin(bytes);
    }
    let out = transport.exec(request).await.map_err(|e| e.to_string())?;
    let stdout = out.stdout_str();
    let snapshot = pipeline
        .parse(&sections, &stdout)
        .map_err(|e| e.to_string())?;
    let dump_report = sections
        .parse(&stdout)
        .optional("dump-report")
        .unwrap_or_default()
        .to_string();
    Ok((snapshot, dump_report))
}

/// `[backup] before_deploy`: snapshots of the app's database services,
/// tagged `release=<release_id>`, before a deploy switches to that release.
/// Call it holding the deploy lock; it takes the backup lock within it.
pub async fn snapshot_before_deploy(
    transport: &dyn Transport,
    config: &crate::config::Config,
    host: &str,
    release_id: &str,
) -> Result<RunRecord, String> {
    check_tag_value(release_id)?;
    let settings = operator_settings(config, host).map_err(|e| e.to_string())?;
    let job = AppBackup::new(
        settings,
        crate::hostlock::owner("deploy (snapshot before deploy)"),
        false,
    )
    .map_err(|e| e.to_string())?;
    let scope = BackupScope {
        databases_only: true,
        tags: vec![format!("release={release_id}")],
        record: true,
        ..BackupScope::default()
    };
    let held = lock::hold_within(
        transport,
        &job.lock_path,
        &job.owner,
        backup(transport, &job, &scope),
    )
    .await
    .map_err(|e| e.to_string())?;
    let problem = held.release_problem("backup");
    let record = held
        .outcome
        .ok_or("interrupted before the snapshot finished")?;
    match (record.ok, problem) {
        (true, None) => Ok(record),
        (true, Some(p)) => Err(p),
        (false, _) => Err(format!(
            "the snapshot before the deploy failed: {}",
            record.error.unwrap_or_default()
        )),
    }
}

fn check_tag_value(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("{value:?} cannot be a snapshot tag"))
    }
}

// ---------------------------------------------------------------- restore

/// Asks before a restore overwrites data; refuses without a terminal unless
/// `--yes`. `what` names what is overwritten.
pub fn confirm(yes: bool, interactive: bool, what: &str) -> Result<(), BackupError> {
    if yes {
        return Ok(());
    }
    if !interactive {
        return Err(BackupError::Refused(format!(
            "restore would overwrite {what}; there is no terminal to confirm on: run again with --yes"
        )));
    }
    eprint!("This overwrites {what} (a safety snapshot is taken first). Continue? [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| BackupError::Refused(e.to_string()))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(BackupError::Refused("restore cancelled".to_string()))
    }
}

/// `vpsup restore SERVICE`.
pub async fn restore(settings: &Settings, request: &RestoreRequest) -> crate::exit::Result<()> {
    let config = settings
        .config
        .as_ref()
        .ok_or_else(|| crate::exit::Error::failed("restore needs vpsup.toml"))?;
    let app = config
        .app
        .as_ref()
        .map(|a| a.name.to_string())
        .unwrap_or_default();
    let from = match (&request.release, &request.snapshot) {
        (Some(r), _) => format!("the snapshot taken before release {r}"),
        (None, Some(s)) => format!("snapshot {s}"),
        (None, None) => "the latest snapshot".to_string(),
    };
    let hosts: Vec<String> = settings
        .targets(None)?
        .into_iter()
        .map(|t| t.name)
        .collect();
    confirm(
        settings.yes,
        std::io::stdin().is_terminal(),
        &format!(
            "the data of service {} of app {app} on {} with {from}",
            request.service,
            hosts.join(", ")
        ),
    )?;
    let job = RestoreRun { config, request };
    let reports = fleet::for_each_host(settings, &settings.targets(None)?, &job).await;
    finish(settings.json, &Action::Backup, &reports)
}

struct RestoreRun<'a> {
    config: &'a crate::config::Config,
    request: &'a RestoreRequest,
}

impl HostJob for RestoreRun<'_> {
    type Report = HostReport;

    fn begin(&self, turn: &Turn<'_>) -> ControlFlow<HostReport, HostReport> {
        ControlFlow::Continue(HostReport {
            host: turn.target.name.clone(),
            ..HostReport::default()
        })
    }

    async fn on_host(&self, turn: &Turn<'_>, connection: &Connection, report: &mut HostReport) {
        let transport = &connection.transport;
        let job = match operator_settings(self.config, &turn.target.name)
            .and_then(|s| AppBackup::new(s, crate::hostlock::owner("restore"), false))
        {
            Ok(job) => job,
            Err(e) => return report.add_error(e.to_string()),
        };
        // The deploy lock too: a deploy must not start the app mid-restore.
        let deploy_lock = crate::hostlock::LockRequest {
            path: &AppPaths::new(job.app()).lock(),
            what: "deploys",
            owner: &job.owner,
            take_over_after: None,
            local_pid: None,
            timing: crate::hostlock::LockTiming::STANDARD,
        };
        let deploy = match crate::hostlock::HostLock::acquire(transport, &deploy_lock).await {
            Ok(lock) => lock,
            Err(e) => return report.add_error(e.to_string()),
        };
        let work = lock::hold_within(
            transport,
            &job.lock_path,
            &job.owner,
            restore_on(transport, &job, self.request),
        );
        let held = deploy.hold(transport, work).await;
        match held.outcome {
            None => report.add_error("interrupted".to_string()),
            Some(Err(e)) => report.add_error(e.to_string()),
            Some(Ok(inner)) => match inner.outcome {
                None => report.add_error("interrupted".to_string()),
                Some(Err(e)) => report.add_error(e),
                Some(Ok(record)) => report.run = Some(record),
            },
        }
    }
}

/// The manifest to restore from: of the run that wrote `snapshot`, of the
/// snapshot taken before `release`, or the newest.
async fn chosen_manifest(
    transport: &dyn Transport,
    job: &AppBackup,
    request: &RestoreRequest,
) -> Result<Manifest, String> {
    let run = match (&request.release, request.snapshot.as_deref()) {
        (None, None | Some("latest")) => None,
        (release, snapshot) => {
            let filter = SnapshotFilter {
                service: Some(request.service.clone()),
                ..SnapshotFilter::app(job.app())
            };
            let all = parse_snapshots(&restic_run(transport, job.repo.snapshots(&filter)).await?)
                .map_err(|e| e.to_string())?;
            let wanted = snapshot.map(SnapshotId::parse).transpose()?;
            let found = all.iter().rev().find(|s| match (release, &wanted) {
                (Some(r), _) => s.tag("release") == Some(r.as_str()),
                (None, Some(id)) => id.matches(&s.id),
                (None, None) => false,
            });
            let found = found.ok_or_else(|| {
                format!(
                    "no snapshot of service {} matches {}",
                    request.service,
                    release
                        .clone()
                        .or(snapshot.map(str::to_string))
                        .unwrap_or_default()
                )
            })?;
            Some(
                found
                    .tag("run")
                    .ok_or("that snapshot has no run tag (not vpsup's)")?
                    .to_string(),
            )
        }
    };
    let text = restic_run(
        transport,
        manifest::fetch(
            &job.repo,
            job.app(),
            &request.service,
            run.as_deref(),
            SHORT_TIMEOUT,
        ),
    )
    .await?;
    Manifest::from_json(&text).map_err(|e| e.to_string())
}

async fn restore_on(
    transport: &dyn Transport,
    job: &AppBackup,
    request: &RestoreRequest,
) -> Result<RunRecord, String> {
    preflight(transport, job).await?;
    let manifest = chosen_manifest(transport, job, request).await?;
    let (plan, all) = make_plan(transport, job).await?;
    eprintln!(
        "vpsup: {}: {}: taking a safety snapshot first",
        job.settings.host, request.service
    );
    let safety = backup(
        transport,
        job,
        &BackupScope {
            services: vec![request.service.clone()],
            tags: vec!["reason=safety".to_string()],
            ..BackupScope::default()
        },
    )
    .await;
    if !safety.ok {
        return Err(format!(
            "the safety snapshot failed, nothing was restored: {}",
            safety.error.unwrap_or_default()
        ));
    }
    let others: Vec<String> = all.into_iter().filter(|s| s != &request.service).collect();
    let password_env = plan
        .services
        .iter()
        .find(|s| s.service == request.service)
        .and_then(|s| s.password_env.clone());
    let body = restore::service_script(
        &job.repo,
        &manifest,
        RestoreInto::Service {
            compose: &plan.compose_cli,
            service: &request.service,
        },
        &others,
        password_env.as_deref(),
        job.timeout(),
    )?;
    eprintln!(
        "vpsup: {}: {}: restoring run {}",
        job.settings.host, request.service, manifest.run
    );
    restic_or_shell(transport, format!("{}{body}", job.repo.script_prelude()))
        .await
        .map_err(|e| {
            format!(
                "the restore of {} failed (the safety snapshot is run {}): {e}",
                request.service, safety.run
            )
        })?;
    Ok(safety)
}

// ---------------------------------------------------------------- verify

/// The restore drill: each service's latest manifest restored into a
/// throwaway container of its image on no network (volumes into a scratch
/// directory) and checked against the manifest, everything removed again;
/// then `check` on a tenth of the data (rotating weekly) and the prune.
pub async fn verify(transport: &dyn Transport, job: &AppBackup) -> RunRecord {
    let mut record = RunRecord {
        kind: RunKind::Drill,
        run: RunId::now().to_string(),
        started: now_rfc3339(),
        finished: String::new(),
        ok: false,
        error: None,
        services: Vec::new(),
    };
    let outcome = verify_steps(transport, job, &mut record.services).await;
    record.finished = now_rfc3339();
    let failed = record.services.iter().any(|s| s.error.is_some());
    record.ok = outcome.is_ok() && !failed;
    record.error = outcome
        .err()
        .or_else(|| failed.then(|| "a drill failed".to_string()));
    if let Err(e) = host_settings::store_record(transport, job.app(), &record).await {
        record.ok = false;
        record.error = Some(format!("the drill could not be recorded: {e}"));
    }
    record
}

async fn verify_steps(
    transport: &dyn Transport,
    job: &AppBackup,
    services: &mut Vec<ServiceRecord>,
) -> Result<(), String> {
    preflight(transport, job).await?;
    let (plan, _) = make_plan(transport, job).await?;
    let label = format!("vpsup.drill={}", job.app());
    let cleanup = format!(
        "docker ps -aq --filter label={} | xargs -r docker rm -f >/dev/null\n",
        quote(&label)
    );
    restic_or_shell(transport, cleanup.clone()).await?;
    for service in &plan.services {
        let started = Instant::now();
        let mut rec = ServiceRecord {
            service: service.service.clone(),
            engine: service.engine.name().to_string(),
            snapshots: Vec::new(),
            duration_ms: 0,
            error: None,
        };
        let drilled = drill(transport, job, service, &label).await;
        let _ = restic_or_shell(transport, cleanup.clone()).await;
        match drilled {
            Ok(manifest) => {
                rec.snapshots = manifest
                    .parts
                    .iter()
                    .map(|p| SnapshotRecord {
                        path: p.path.clone(),
                        id: p.snapshot.clone(),
                        bytes: p.bytes,
                    })
                    .collect()
            }
            Err(e) => {
                eprintln!(
                    "vpsup: {}: {}: drill FAILED: {e}",
                    job.settings.host, service.service
                );
                rec.error = Some(e)
            }
        }
        rec.duration_ms = started.elapsed().as_millis() as u64;
        services.push(rec);
    }
    let week = time::OffsetDateTime::now_utc().iso_week() as u32;
    let subset = ReadData::Part {
        n: week % 10 + 1,
        of: 10,
    };
    restic_run(transport, job.repo.check(&subset, job.timeout()))
        .await
        .map_err(|e| format!("restic check: {e}"))?;
    let prune = job.repo.forget(
        job.app(),
        &job.settings.host,
        &plan.retention,
        true,
        job.timeout(),
    );
    restic_run(transport, prune)
        .await
        .map_err(|e| format!("prune: {e}"))?;
    Ok(())
}

/// One service's drill.
async fn drill(
    transport: &dyn Transport,
    job: &AppBackup,
    service: &ServicePlan,
    label: &str,
) -> Result<Manifest, String> {
    let text = restic_run(
        transport,
        manifest::fetch(&job.repo, job.app(), &service.service, None, SHORT_TIMEOUT),
    )
    .await?;
    let mut manifest = Manifest::from_json(&text).map_err(|e| e.to_string())?;
    let pw = service.password_env.as_deref();
    let name = format!(
        "vpsup-drill-{}-{}-{}",
        job.app(),
        service.service,
        &manifest.run.to_ascii_lowercase()
    );
    let script = match manifest.engine {
        Engine::Volume { .. } => {
            // Into a scratch directory: never over the live data.
            let scratch = format!("/var/tmp/{name}");
            for part in &mut manifest.parts {
                part.path = format!("{scratch}{}", part.path);
            }
            let mut body = format!("rm -rf {s}; trap 'rm -rf {s}' EXIT\n", s = quote(&scratch));
            for part in &manifest.parts {
                body.push_str(&format!("mkdir -p {}\n", quote(&part.path)));
            }
            body.push_str(&restore::service_script(
                &job.repo,
                &manifest,
                RestoreInto::Container(&name),
                &[],
                pw,
                job.timeout(),
            )?);
            body
        }
        engine => {
            let (run_args, ready, check) = match engine {
                Engine::Postgres { .. } => (
                    format!("-e POSTGRES_PASSWORD {} postgres -c fsync=off -c shared_buffers=32MB", quote(&manifest.image)),
                    crate::backup::engines::postgres::ready(),
                    manifest
                        .pg_counts
                        .keys()
                        .map(|db| crate::backup::engines::postgres::count_rows(db))
                        .collect::<Vec<_>>()
                        .join(""),
                ),
                Engine::Redis => (
                    format!("--entrypoint sleep {} infinity", quote(&manifest.image)),
                    String::new(),
                    String::new(),
                ),
                _ => (format!("-e MARIADB_ROOT_PASSWORD -e MYSQL_ROOT_PASSWORD -e MONGO_INITDB_ROOT_PASSWORD {}", quote(&manifest.image)), "true".to_string(), String::new()),
            };
            let mut body = format!(
                "POSTGRES_PASSWORD=$(head -c 18 /dev/urandom | base64); MARIADB_ROOT_PASSWORD=$POSTGRES_PASSWORD; MYSQL_ROOT_PASSWORD=$POSTGRES_PASSWORD; MONGO_INITDB_ROOT_PASSWORD=$POSTGRES_PASSWORD\nexport POSTGRES_PASSWORD MARIADB_ROOT_PASSWORD MYSQL_ROOT_PASSWORD MONGO_INITDB_ROOT_PASSWORD\ndocker run -d --network none --label {label} --name {n} {run_args} >/dev/null || exit 1\n",
                label = quote(label),
                n = quote(&name),
            );
            if !ready.is_empty() {
                body.push_str(&format!(
                    "i=0; until docker exec {n} sh -c {r} >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 120 ] || {{ echo 'vpsup: the drill container did not come up' >&2; docker logs --tail 20 {n} >&2; exit 1; }}; sleep 1; done\n",
                    n = quote(&name),
                    r = quote(&ready)
                ));
            }
            body.push_str(&restore::service_script(
                &job.repo,
                &manifest,
                RestoreInto::Container(&name),
                &[],
                pw,
                job.timeout(),
            )?);
            if engine == Engine::Redis {
                body.push_str(&format!(
                    "docker exec -d {n} redis-server --dir /data --appendonly no --save ''\nsleep 2\ndocker exec {n} sh -c {k}\n",
                    n = quote(&name),
                    k = quote(&crate::backup::engines::redis::keyspace(None))
                ));
            }
            if !check.is_empty() {
                body.push_str(&format!(
                    "docker exec {} sh -c {}\n",
                    quote(&name),
                    quote(&check)
                ));
            }
            body
        }
    };
    let out = transport
        .exec(ExecRequest::new(format!("{}{script}", job.repo.script_prelude())).become_root(true))
        .await
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(out.stderr_tail(8));
    }
    let stdout = out.stdout_str();
    let found = format!("{stdout}{}", out.stderr_str());
    if !manifest.pg_counts.is_empty() {
        let mut expected = std::collections::BTreeMap::new();
        for counts in manifest.pg_counts.values() {
            expected.extend(counts.clone());
        }
        let mismatches = crate::backup::engines::postgres::count_mismatches(
            &expected,
            &crate::backup::engines::postgres::parse_counts(&found),
        );
        if !mismatches.is_empty() {
            return Err(format!(
                "row counts differ from the backup's: {mismatches:?}"
            ));
        }
    }
    if let (Engine::Redis, Some(keys)) = (manifest.engine, manifest.redis_keys) {
        let loaded = crate::backup::engines::redis::parse_keyspace(&stdout);
        if loaded > keys || loaded == 0 && keys > 0 {
            return Err(format!("{loaded} keys loaded, the backup had {keys}"));
        }
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_without_a_terminal_needs_yes() {
        let refused = confirm(false, false, "the data of service db")
            .unwrap_err()
            .to_string();
        assert!(refused.contains("run again with --yes"), "{refused}");
        assert!(confirm(true, false, "x").is_ok());
    }

    #[test]
    fn listings_leave_manifests_out_and_put_the_newest_first() {
        let text = r#"[
 {"time":"2026-12-04T03:17:00Z","hostname":"web-1","paths":["/shop/db/shop.pgdump"],"tags":["vpsup","app=shop","service=db","run=a"],"id":"aa"},
 {"time":"2026-12-05T03:17:00Z","hostname":"web-1","paths":["/shop/db/manifest.json"],"tags":["vpsup","app=shop","service=db","kind=manifest"],"id":"bb"},
 {"time":"2026-12-05T03:17:00Z","hostname":"web-1","paths":["/shop/db/shop.pgdump"],"tags":["vpsup","app=shop","service=db","release=r7"],"id":"cc","summary":{"total_bytes_processed":900}}
]"#;
        let rows = listed(parse_snapshots(text).unwrap());
        let ids: Vec<(&str, Option<u64>, Option<&str>)> = rows
            .iter()
            .map(|r| (r.id.as_str(), r.bytes, r.release.as_deref()))
            .collect();
        assert_eq!(ids, [("cc", Some(900), Some("r7")), ("aa", None, None)]);
    }

    #[test]
    fn release_tags_are_plain_words() {
        assert!(check_tag_value("20261205T031700Z").is_ok());
        assert!(check_tag_value("a,b").is_err());
        assert!(check_tag_value("").is_err());
    }
}
