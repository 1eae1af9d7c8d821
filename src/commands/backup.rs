//! `vpsup backup` (every host, or `--local` on the host itself: what its
//! timer runs), `backup list`, `backup init`, `backup verify` (the restore
//! drill) and `vpsup restore`. The steps on one host are `crate::backup`'s
//! (`host`, `run`, `drill`, `restore_run`), one implementation over
//! `Transport`: an operator's run and the host's own run do the same steps.
//!
//! In order:
//! 1. `run`: `--local` reads each app's settings on this host
//!    (`run_local`); otherwise the project's `[backup]` (its password
//!    generated once when missing) and, per host (`FleetRun`), the host's
//!    settings brought up to date.
//! 2. Per host, the action under the app's backup lock
//!    (`backup::host::on_host`): preflight, then `init`, `list`, a backup
//!    run or the drill.
//! 3. `restore`: asks first (`confirm`), then per host (`RestoreRun`) the
//!    restore under the deploy and backup locks, after a safety snapshot.
//! 4. `finish`: the reports as JSON or lines; any failure fails the command.

use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::backup::host::{on_host, Action, AppBackup, BackupError, HostReport};
use crate::backup::host_settings::{self, RunKind};
use crate::backup::restore_run::{self, RestoreRequest};
use crate::config::Config;
use crate::fleet::{self, Connection, Failures, HostJob, Turn};
use crate::layout::BACKUP_SETTINGS_DIR;
use crate::settings::{project_dir, Settings};
use crate::transport::LocalTransport;

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
    // What another run refused by the lock is told is running.
    let (run, command) = match action {
        Action::Backup => ("backup run", "vpsup backup --local"),
        Action::Verify => ("restore drill", "vpsup backup verify --local"),
        Action::Init => ("repository setup", "vpsup backup init --local"),
        Action::List => ("snapshot listing", "vpsup backup list --local"),
    };
    let owner = format!(
        "the host's own {run} on {} ({command})",
        crate::hostlock::this_machine()
    );
    let mut reports = Vec::new();
    for app in apps {
        let settings = host_settings::read(&dir.join(format!("{app}.toml")))?;
        let job = AppBackup::for_timer(settings, owner.clone())?;
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
    config: &'a Config,
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
        let owner = crate::hostlock::owner("backup");
        match AppBackup::for_operator(self.config, &turn.target.name, owner) {
            Ok(job) => on_host(transport, &job, self.action, report).await,
            Err(e) => report.add_error(e.to_string()),
        }
    }
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
            host_settings::warn_new_password(&project.join(&backup.password_file));
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
    config: &'a Config,
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
        let owner = crate::hostlock::owner("restore");
        let job = match AppBackup::for_operator(self.config, &turn.target.name, owner) {
            Ok(job) => job,
            Err(e) => return report.add_error(e.to_string()),
        };
        match restore_run::restore(transport, &job, self.request).await {
            Ok(record) => report.run = Some(record),
            Err(e) => report.add_error(e),
        }
    }
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
}
