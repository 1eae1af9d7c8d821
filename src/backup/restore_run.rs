//! `vpsup restore SERVICE` on one host: under the deploy lock (a deploy
//! must not start the app mid-restore) and the app's backup lock, the
//! preflight, the manifest chosen (by snapshot, by release, or the newest),
//! a safety snapshot of the service, then the restore into the running
//! service (the scripts are `restore.rs`'s).

use super::host::{make_plan, preflight, restic_or_shell, restic_run, AppBackup};
use super::host_settings::RunRecord;
use super::lock;
use super::manifest::{self, Manifest};
use super::restic::{parse_snapshots, SnapshotFilter, SnapshotId, SHORT_TIMEOUT};
use super::restore::{self, RestoreInto};
use super::run::{backup, BackupScope};
use crate::deploy::remote::AppPaths;
use crate::hostlock::{HostLock, LockRequest, LockTiming};
use crate::transport::Transport;

/// `vpsup restore SERVICE …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreRequest {
    pub service: String,
    /// An id or `latest`.
    pub snapshot: Option<String>,
    /// The snapshot `before_deploy` took before release `release`.
    pub release: Option<String>,
}

/// Restores `request` on the host, holding the deploy lock and the app's
/// backup lock; the safety snapshot's run record.
pub async fn restore(
    transport: &dyn Transport,
    job: &AppBackup,
    request: &RestoreRequest,
) -> Result<RunRecord, String> {
    let deploy_lock = LockRequest {
        path: &AppPaths::new(job.app()).lock(),
        what: "deploys",
        owner: &job.owner,
        take_over_after: None,
        local_pid: None,
        timing: LockTiming::STANDARD,
    };
    let deploy = HostLock::acquire(transport, &deploy_lock)
        .await
        .map_err(|e| e.to_string())?;
    let work = lock::hold_within(
        transport,
        &job.lock_path,
        &job.owner,
        restore_on(transport, job, request),
    );
    let held = deploy.hold(transport, work).await;
    match held.outcome {
        None => Err("interrupted".to_string()),
        Some(Err(e)) => Err(e.to_string()),
        Some(Ok(inner)) => match inner.outcome {
            None => Err("interrupted".to_string()),
            Some(result) => result,
        },
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
            apart: true,
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
