//! One app's backups on one host, through a `Transport` (an operator's run
//! over SSH and the host's own timer run do the same steps): the session
//! (`AppBackup`), one action under the app's backup lock (`on_host`), the
//! preflight and the repository-id guard, `backup init`, `backup list`, and
//! the plan of the release deployed there. A backup run is in `run.rs`, the
//! restore drill in `drill.rs`, a restore in `restore_run.rs`.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::drill::verify;
use super::host_settings::{self, HostSettings, RunKind, RunRecord, ServiceRecord};
use super::lock::{self, Runner};
use super::plan::{self, BackupPlan, PlanInput, ServicePlan};
use super::restic::{
    self, classify, parse_snapshots, RepoError, Repository, SnapshotFilter, SHORT_TIMEOUT,
};
use super::run::{backup, BackupScope};
use super::RunId;
use crate::config::Config;
use crate::deploy::remote::{AppPaths, ReleaseMeta, META_FILE};
use crate::deploy::start::stack_for;
use crate::fleet::HostResult;
use crate::transport::script::quote;
use crate::transport::{ExecOutput, ExecRequest, Transport};

/// What `vpsup backup …` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Backup,
    List,
    Init,
    Verify,
}

/// Why a job cannot start: its settings, or a refusal.
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
    /// An operator's run, or the host's own (the timer), which waits for the lock.
    pub runner: Runner,
}

impl AppBackup {
    pub fn new(
        settings: HostSettings,
        owner: String,
        runner: Runner,
    ) -> Result<AppBackup, BackupError> {
        let repo = settings
            .repository()
            .map_err(|e| BackupError::Refused(format!("[backup] {e}")))?;
        Ok(AppBackup {
            lock_path: lock::path(&settings.app),
            repo,
            settings,
            owner,
            runner,
        })
    }

    /// The job of an operator's run (`backup`, `restore`, a deploy's
    /// snapshot) on host `host`: `config`'s `[backup]`, the lock's owner
    /// `owner` (`hostlock::owner`).
    pub fn for_operator(
        config: &Config,
        host: &str,
        owner: String,
    ) -> Result<AppBackup, BackupError> {
        AppBackup::new(
            host_settings::for_operator(config, host)?,
            owner,
            Runner::Operator,
        )
    }

    /// The job of the host's own run (`--local`) from the app's settings
    /// there: it waits for the lock up to `[backup] timeout`.
    pub fn for_timer(settings: HostSettings, owner: String) -> Result<AppBackup, BackupError> {
        let runner = Runner::timer(settings.backup.timeout.0);
        AppBackup::new(settings, owner, runner)
    }

    pub(super) fn app(&self) -> &str {
        &self.settings.app
    }

    pub(super) fn timeout(&self) -> Duration {
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
    /// Adds `error` to the host's errors.
    pub fn add_error(&mut self, error: String) {
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

impl Action {
    /// The state file a run of this action is recorded in, if any.
    fn recorded_as(&self) -> Option<RunKind> {
        match self {
            Action::Backup => Some(RunKind::Backup),
            Action::Verify => Some(RunKind::Drill),
            Action::List | Action::Init => None,
        }
    }
}

/// One action on one host, holding the app's backup lock. A timer's backup
/// or drill that does not get the lock is recorded as failed, so that
/// `status` shows it (an operator reads the refusal).
pub async fn on_host(
    transport: &dyn Transport,
    job: &AppBackup,
    action: &Action,
    report: &mut HostReport,
) {
    let unlocked = action
        .recorded_as()
        .map(|kind| run_record(kind, &RunId::now()));
    let work = async {
        match action {
            Action::Init => init(transport, job)
                .await
                .map(|id| report.repository = Some(id)),
            Action::List => list(transport, job).await.map(|s| report.snapshots = s),
            Action::Backup => {
                let scope = BackupScope {
                    record: true,
                    ..BackupScope::default()
                };
                let record = backup(transport, job, &scope).await;
                report.run = Some(record);
                Ok(())
            }
            Action::Verify => {
                report.run = Some(verify(transport, job).await);
                Ok(())
            }
        }
    };
    match lock::hold(transport, &job.lock_path, &job.owner, job.runner, work).await {
        Err(e) => {
            let error = e.to_string();
            if let (Runner::Timer(_), Some(mut record)) = (job.runner, unlocked) {
                record.finished = now_rfc3339();
                record.error = Some(error.clone());
                if let Err(e) = host_settings::store_record(transport, job.app(), &record).await {
                    report.add_error(format!("the failed run could not be recorded: {e}"));
                }
                report.run = Some(record);
            }
            report.add_error(error);
        }
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
pub(super) async fn restic_run(
    transport: &dyn Transport,
    script: String,
) -> Result<String, String> {
    stdout_or(transport, script, |out| {
        classify(out.exit_status, &out.stderr_str()).to_string()
    })
    .await
}

/// Runs a script as root; its stdout, or the tail of its stderr.
pub(super) async fn restic_or_shell(
    transport: &dyn Transport,
    script: String,
) -> Result<String, String> {
    stdout_or(transport, script, |out| out.stderr_tail(5)).await
}

/// Runs `script` as root; its stdout, or `error` of what it said.
async fn stdout_or(
    transport: &dyn Transport,
    script: String,
    error: impl FnOnce(&ExecOutput) -> String,
) -> Result<String, String> {
    let out = transport
        .exec(ExecRequest::new(script).become_root(true))
        .await
        .map_err(|e| e.to_string())?;
    if out.success() {
        Ok(out.stdout_str())
    } else {
        Err(error(&out))
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

// ---------------------------------------------------------------- the deployed release

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
pub(super) async fn make_plan(
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

/// A service's record before its work starts.
pub(super) fn service_record(service: &ServicePlan) -> ServiceRecord {
    ServiceRecord {
        service: service.service.clone(),
        engine: service.engine.name().to_string(),
        snapshots: Vec::new(),
        duration_ms: 0,
        error: None,
    }
}

/// Run `run`, of `kind`, starting now: failed until it says otherwise.
pub(super) fn run_record(kind: RunKind, run: &RunId) -> RunRecord {
    RunRecord {
        kind,
        run: run.to_string(),
        started: now_rfc3339(),
        finished: String::new(),
        ok: false,
        error: None,
        services: Vec::new(),
    }
}

pub(super) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_leave_manifests_out_and_put_the_newest_first() {
        let text = r#"[
 {"time":"2026-12-04T03:17:00Z","hostname":"web-1","paths":["/shop+db+shop.pgdump"],"tags":["vpsup","app=shop","service=db","run=a"],"id":"aa"},
 {"time":"2026-12-05T03:17:00Z","hostname":"web-1","paths":["/shop+db+manifest.json"],"tags":["vpsup","app=shop","service=db","kind=manifest"],"id":"bb"},
 {"time":"2026-12-05T03:17:00Z","hostname":"web-1","paths":["/shop+db+shop.pgdump"],"tags":["vpsup","app=shop","service=db","release=r7"],"id":"cc","summary":{"total_bytes_processed":900}}
]"#;
        let rows = listed(parse_snapshots(text).unwrap());
        let ids: Vec<(&str, Option<u64>, Option<&str>)> = rows
            .iter()
            .map(|r| (r.id.as_str(), r.bytes, r.release.as_deref()))
            .collect();
        assert_eq!(ids, [("cc", Some(900), Some("r7")), ("aa", None, None)]);
    }
}
