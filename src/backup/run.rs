//! A backup run on one host: the preflight, the plan from the deployed
//! compose files, then per service its pipelines and its manifest; `forget`
//! with the retention after a run where every service succeeded; the run
//! recorded in `last-backup.json`. Never silently green: any failure fails
//! the run, naming the service, in restic's or the engine's own words. Also
//! the snapshot a deploy takes first (`snapshot_before_deploy`).

use std::time::Instant;

use super::engines::{self, volume};
use super::host::{
    make_plan, now_rfc3339, preflight, restic_or_shell, restic_run, run_record, service_record,
    AppBackup,
};
use super::host_settings::{self, RunKind, RunRecord, ServiceRecord, SnapshotRecord};
use super::manifest::{Manifest, Part, MANIFEST_VERSION};
use super::pipe::{stdin_path, Pipeline};
use super::plan::{BackupPlan, Dir, ServicePlan, Work};
use super::restic::{self, Repository, SnapshotId, SnapshotMeta, SHORT_TIMEOUT};
use super::{Engine, RunId};
use crate::config::Config;
use crate::transport::sections::Sections;
use crate::transport::{ExecRequest, Transport};

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
    /// Kept apart from the retention policy (a restore's safety snapshot,
    /// the snapshot before a deploy): such a run forgets nothing, and no
    /// `forget` ever counts its snapshots, so it can neither take a day's
    /// place from a scheduled backup nor be forgotten by one.
    pub apart: bool,
}

impl BackupScope {
    /// The tags every snapshot of this run carries beside its own.
    fn tags(&self) -> impl Iterator<Item = String> + '_ {
        let retained = (!self.apart).then(|| restic::RETAINED_TAG.to_string());
        self.tags.iter().cloned().chain(retained)
    }
}

/// A backup run: preflight, plan, every service, forget, record. Failures
/// are in the record (`ok: false`, the error and each service's).
pub async fn backup(transport: &dyn Transport, job: &AppBackup, scope: &BackupScope) -> RunRecord {
    let run = RunId::now();
    let mut record = run_record(RunKind::Backup, &run);
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
        let mut rec = service_record(&service);
        if let Err(e) = back_up_service(transport, job, &plan, service, scope, run, &mut rec).await
        {
            eprintln!("vpsup: {}: {}: FAILED: {e}", job.settings.host, rec.service);
            // The parts this service did write have no manifest: forgotten,
            // so no day's retention can keep them in place of a whole run.
            let ids: Vec<SnapshotId> = rec
                .snapshots
                .iter()
                .filter_map(|s| SnapshotId::parse(&s.id).ok())
                .collect();
            let e = if ids.is_empty() {
                e
            } else {
                match restic_run(transport, job.repo.forget_ids(&ids)).await {
                    Ok(_) => e,
                    Err(f) => format!("{e}; its partial snapshots could not be forgotten: {f}"),
                }
            };
            rec.snapshots.clear();
            rec.error = Some(e);
        }
        rec.duration_ms = started.elapsed().as_millis() as u64;
        services.push(rec);
    }
    if !scope.apart && services.iter().all(|s| s.error.is_none()) {
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
    meta.tags.extend(scope.tags());
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
        redis: Default::default(),
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
                    manifest
                        .pg_counts
                        .insert(db.clone(), engines::postgres::parse_counts(&dump_report));
                }
                if service.engine == Engine::Redis {
                    manifest.redis = engines::redis::parse_dump_report(&dump_report);
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
    store.meta.tags.extend(scope.tags());
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

/// Runs a pipeline; its snapshot and the dump's stderr (counts, keys).
async fn run_pipeline(
    transport: &dyn Transport,
    repo: &Repository,
    pipeline: &Pipeline,
    stdin: Option<Vec<u8>>,
) -> Result<(super::pipe::Snapshot, String), String> {
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
/// Call it holding the deploy lock and, within it, the app's backup lock
/// (`deploy::start::holding_backups`: the deploy keeps it until the release
/// serves).
pub async fn snapshot_before_deploy(
    transport: &dyn Transport,
    config: &Config,
    host: &str,
    release_id: &str,
) -> Result<RunRecord, String> {
    check_tag_value(release_id)?;
    let job = AppBackup::for_operator(
        config,
        host,
        crate::hostlock::owner("deploy (snapshot before deploy)"),
    )
    .map_err(|e| e.to_string())?;
    let scope = BackupScope {
        databases_only: true,
        tags: vec![format!("release={release_id}")],
        record: true,
        apart: true,
        ..BackupScope::default()
    };
    let record = backup(transport, &job, &scope).await;
    if record.ok {
        Ok(record)
    } else {
        Err(format!(
            "the snapshot before the deploy failed: {}",
            record.error.unwrap_or_default()
        ))
    }
}

fn check_tag_value(value: &str) -> Result<(), String> {
    if restic::is_tag_word(value) {
        Ok(())
    } else {
        Err(format!("{value:?} cannot be a snapshot tag"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_tags_are_plain_words() {
        assert!(check_tag_value("20261205T031700Z").is_ok());
        assert!(check_tag_value("a,b").is_err());
        assert!(check_tag_value("").is_err());
    }
}
