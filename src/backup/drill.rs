//! `vpsup backup verify`, the restore drill on one host: each service's
//! latest manifest restored into a throwaway container of its image on no
//! network (volumes into a scratch directory) and checked against the
//! manifest (row counts, keys), everything removed again; then `check` on a
//! tenth of the data and the prune; the drill recorded in `last-drill.json`.

use std::time::Instant;

use super::engines;
use super::host::{
    make_plan, now_rfc3339, preflight, restic_or_shell, restic_run, run_record, service_record,
    AppBackup,
};
use super::host_settings::{self, RunKind, RunRecord, ServiceRecord, SnapshotRecord};
use super::manifest::{self, Manifest};
use super::plan::ServicePlan;
use super::restic::{ReadData, SHORT_TIMEOUT};
use super::restore::{self, RestoreInto};
use super::{Engine, RunId};
use crate::transport::script::quote;
use crate::transport::sections::Sections;
use crate::transport::{ExecRequest, Transport};

/// The restore drill: each service's latest manifest restored into a
/// throwaway container of its image on no network (volumes into a scratch
/// directory) and checked against the manifest, everything removed again;
/// then `check` on a tenth of the data (rotating weekly) and the prune.
pub async fn verify(transport: &dyn Transport, job: &AppBackup) -> RunRecord {
    let mut record = run_record(RunKind::Drill, &RunId::now());
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
        "docker ps -aq --filter label={} | xargs -r docker rm -f -v >/dev/null\n",
        quote(&label)
    );
    restic_or_shell(transport, cleanup.clone()).await?;
    for service in &plan.services {
        let started = Instant::now();
        let mut rec = service_record(service);
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
    // PostgreSQL's counts come back per database.
    let sections = Sections::random();
    let databases: Vec<&str> = manifest.pg_counts.keys().map(String::as_str).collect();
    let name = format!(
        "vpsup-drill-{}-{}-{}",
        job.app(),
        service.service,
        &manifest.run.to_ascii_lowercase()
    );
    let restore_into = |manifest: &Manifest| {
        restore::service_script(
            &job.repo,
            manifest,
            RestoreInto::Container(&name),
            &[],
            pw,
            job.timeout(),
        )
    };
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
            body.push_str(&restore_into(&manifest)?);
            body
        }
        engine => {
            let (run_args, ready, check) = match engine {
                Engine::Postgres { .. } => (
                    format!(
                        "-e POSTGRES_PASSWORD {} postgres -c fsync=off -c shared_buffers=32MB",
                        quote(&manifest.image)
                    ),
                    engines::postgres::ready(),
                    engines::postgres::count_databases(&sections, &databases),
                ),
                Engine::Redis => (
                    format!("--entrypoint sleep {} infinity", quote(&manifest.image)),
                    String::new(),
                    engines::redis::keyspace(None),
                ),
                Engine::Mysql => (
                    format!(
                        "-e MARIADB_ROOT_PASSWORD -e MYSQL_ROOT_PASSWORD {}",
                        quote(&manifest.image)
                    ),
                    engines::mysql::ready(),
                    String::new(),
                ),
                _ => (
                    format!("-e MONGO_INITDB_ROOT_PASSWORD {}", quote(&manifest.image)),
                    engines::mongo::ready(),
                    String::new(),
                ),
            };
            let mut body = format!(
                "POSTGRES_PASSWORD=$(head -c 18 /dev/urandom | base64); MARIADB_ROOT_PASSWORD=$POSTGRES_PASSWORD; MYSQL_ROOT_PASSWORD=$POSTGRES_PASSWORD; MONGO_INITDB_ROOT_PASSWORD=$POSTGRES_PASSWORD\nexport POSTGRES_PASSWORD MARIADB_ROOT_PASSWORD MYSQL_ROOT_PASSWORD MONGO_INITDB_ROOT_PASSWORD\ndocker run -d --network none --label {label} --name {n} {run_args} >/dev/null || exit 1\n",
                label = quote(label),
                n = quote(&name),
            );
            if !ready.is_empty() {
                body.push_str(&wait_until(
                    &name,
                    &ready,
                    120,
                    "the drill container did not come up",
                ));
            }
            // The RDB goes where the server had it, as a restore puts it.
            let (rdb_dir, rdb_file) = manifest.redis.place();
            if engine == Engine::Redis {
                body.push_str(&format!(
                    "docker exec {} mkdir -p {} || exit 1\n",
                    quote(&name),
                    quote(rdb_dir)
                ));
            }
            body.push_str(&restore_into(&manifest)?);
            if engine == Engine::Redis {
                body.push_str(&format!(
                    "docker exec -d {} sh -c {} || exit 1\n",
                    quote(&name),
                    quote(&engines::redis::drill_serve(rdb_dir, rdb_file))
                ));
                // Keys counted while it loads are a part of them. A large RDB
                // loads for a while: as long as a dump may take.
                body.push_str(&wait_until(
                    &name,
                    &engines::redis::drill_loaded(rdb_dir),
                    job.timeout().as_secs(),
                    "the drill's redis did not load the RDB",
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
    if !manifest.pg_counts.is_empty() {
        let found = engines::postgres::parse_database_counts(&sections, &databases, &stdout)
            .map_err(|e| e.to_string())?;
        let mismatches = engines::postgres::database_mismatches(&manifest.pg_counts, &found);
        if !mismatches.is_empty() {
            let listed: Vec<String> = mismatches.iter().map(|m| m.to_string()).collect();
            return Err(format!(
                "row counts differ from the backup's: {}",
                listed.join("; ")
            ));
        }
    }
    if manifest.engine == Engine::Redis {
        let loaded = engines::redis::parse_keyspace(&stdout);
        if !manifest.redis.plausible(loaded) {
            return Err(format!(
                "{loaded} keys loaded, the backup had {} ({} of them with an expiry)",
                manifest.redis.keys.unwrap_or_default(),
                manifest
                    .redis
                    .expires
                    .map_or("any".to_string(), |n| n.to_string())
            ));
        }
    }
    Ok(manifest)
}

/// Shell that waits, at most about `seconds`, until `ready` succeeds in
/// drill container `name`, and no longer once it exits `NEVER_READY`; exits
/// 1 otherwise, saying `what` and what `ready` and the container said last.
fn wait_until(name: &str, ready: &str, seconds: u64, what: &str) -> String {
    format!(
        "i=0
until said=$(docker exec {n} sh -c {r} 2>&1); do
  rc=$? i=$((i+1))
  if [ $rc -eq {never} ] || [ $i -ge {seconds} ]; then
    echo {w} >&2; printf '%s\\n' \"$said\" | tail -n 20 >&2; docker logs --tail 20 {n} >&2; exit 1
  fi
  sleep 1
done
",
        n = quote(name),
        r = quote(ready),
        never = engines::NEVER_READY,
        w = quote(&format!("vpsup: {what}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::engines::testing::fake_docker;

    #[test]
    fn waiting_ends_when_ready_or_never_ready() {
        let dir = tempfile::tempdir().unwrap();
        let docker = fake_docker(dir.path());
        let run = |ready: &str| {
            std::process::Command::new("sh")
                .args([
                    "-c",
                    &format!("{docker}\n{}", wait_until("c", ready, 30, "it did not")),
                ])
                .output()
                .unwrap()
        };
        // Ready on the second try.
        let tries = dir.path().join("tries");
        let second = format!("echo x >>{t}; [ $(wc -l <{t}) -ge 2 ]", t = tries.display());
        assert!(run(&second).status.success());
        // Never: at once, with what it said.
        let started = std::time::Instant::now();
        let never = run("echo 'Bad file format' >&2; exit 100");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(never.status.code(), Some(1));
        let said = String::from_utf8_lossy(&never.stderr);
        assert!(
            said.contains("vpsup: it did not\nBad file format"),
            "{said}"
        );
    }
}
