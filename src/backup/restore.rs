//! Restoring a service from its manifest's snapshots, as scripts: into the
//! running service (`vpsup restore`) or into a throwaway container (the
//! drill). A restore streams `restic dump` into the engine's restore script;
//! without pipefail, each side's status is kept apart so a failed dump never
//! passes for a restore. A database's dumps are streamed through a check
//! once first, as nothing else reads them whole before data is replaced.

use std::time::Duration;

use super::engines::{self, mongo, mysql, postgres, redis, volume};
use super::manifest::{Manifest, Part};
use super::restic::{Repository, SnapshotId};
use super::{Engine, PostgresMode};
use crate::transport::script::quote;

/// Shell that pipes file `path` of `snapshot` into `consumer` (a command
/// reading stdin, `doing` what: `restoring`) and exits non-zero, naming the
/// side, when either failed. Runs in a script that has run the repository's
/// prelude.
pub fn stream_into(
    repo: &Repository,
    snapshot: &SnapshotId,
    path: &str,
    consumer: &str,
    doing: &str,
    timeout: Duration,
) -> String {
    format!(
        "st=$(mktemp) || exit 1
{{ {dump}; echo $? >\"$st\"; }} | {consumer}
crc=$?; drc=$(cat \"$st\"); rm -f \"$st\"
if [ \"$drc\" != 0 ]; then echo \"vpsup: reading \"{p}\" from the repository failed (exit $drc)\" >&2; exit 1; fi
if [ \"$crc\" != 0 ]; then echo \"vpsup: {doing} \"{p}\" failed (exit $crc)\" >&2; exit 1; fi
",
        dump = repo.dump_command(snapshot, path, timeout),
        p = quote(path),
    )
}

/// The database a `databases`-mode part holds: its file name
/// (`shop.pgdump`, `%XX` for other bytes) decoded.
pub fn database_of(path: &str) -> Option<String> {
    let file = path.rsplit(['/', '+']).next()?.strip_suffix(".pgdump")?;
    let bytes = file.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(file.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn snapshot_of(part: &Part) -> Result<SnapshotId, String> {
    SnapshotId::parse(&part.snapshot)
}

/// Where the restore of one part goes, as a command reading stdin.
#[derive(Debug, Clone, Copy)]
pub enum RestoreInto<'a> {
    /// The app's running service: `docker compose … exec -T` / `run`.
    Service { compose: &'a str, service: &'a str },
    /// A drill container by name (`docker exec -i`).
    Container(&'a str),
}

impl RestoreInto<'_> {
    fn exec(&self, inner: &str) -> String {
        match self {
            RestoreInto::Service { compose, service } => engines::exec_in(compose, service, inner),
            RestoreInto::Container(name) => {
                format!("docker exec -i {} sh -c {}", quote(name), quote(inner))
            }
        }
    }
}

/// The script that restores `manifest`'s data (after the repository's
/// prelude). Databases are replaced from their dumps with `others` (the
/// app's other services) stopped; Redis and volumes with the service itself
/// stopped. Volumes go back where they were copied from.
pub fn service_script(
    repo: &Repository,
    manifest: &Manifest,
    into: RestoreInto<'_>,
    others: &[String],
    password_env: Option<&str>,
    timeout: Duration,
) -> Result<String, String> {
    let mut body = String::new();
    let stream_doing = |part: &Part, consumer: &str, doing: &str| -> Result<String, String> {
        Ok(stream_into(
            repo,
            &snapshot_of(part)?,
            &part.path,
            consumer,
            doing,
            timeout,
        ))
    };
    let stream = |part: &Part, consumer: &str| stream_doing(part, consumer, "restoring");
    let (stop, compose, service) = match into {
        RestoreInto::Service { compose, service } => (true, compose, service),
        RestoreInto::Container(_) => (false, "", ""),
    };
    let pw = password_env;
    // A database's dump, replayed by a check that reads it through first
    // (`None`: the roles, replayed into a cluster that keeps its own).
    let replays: Vec<(Option<String>, String)> = match manifest.engine {
        Engine::Postgres { mode } => manifest
            .parts
            .iter()
            .map(|part| match (mode, database_of(&part.path)) {
                (PostgresMode::Cluster, _) => (
                    Some(postgres::check_cluster_dump()),
                    postgres::restore_cluster(),
                ),
                (_, Some(db)) => (
                    Some(postgres::check_database_dump()),
                    postgres::restore_database(&db),
                ),
                (_, None) => (None, postgres::restore_globals()),
            })
            .collect(),
        Engine::Mysql => manifest
            .parts
            .iter()
            .map(|_| (Some(mysql::check_dump()), mysql::restore(pw)))
            .collect(),
        Engine::Mongo => manifest
            .parts
            .iter()
            .map(|_| (Some(mongo::check_archive(pw)), mongo::restore(pw)))
            .collect(),
        Engine::Redis | Engine::Volume { .. } => Vec::new(),
    };
    match manifest.engine {
        Engine::Postgres { .. } | Engine::Mysql | Engine::Mongo => {
            // Nothing is replaced before every dump was read through whole:
            // one more read of each, streamed like the restore, while the
            // app still runs. (A drill replaces nothing: it skips them.)
            let mut checks = String::new();
            for (part, (check, inner)) in manifest.parts.iter().zip(replays) {
                if let (true, Some(check)) = (stop, check) {
                    checks.push_str(&stream_doing(part, &into.exec(&check), "checking")?);
                }
                body.push_str(&stream(part, &into.exec(&inner))?);
            }
            if stop {
                return Ok(format!(
                    "{checks}{}",
                    engines::with_stopped(compose, others, &body)
                ));
            }
        }
        Engine::Redis => {
            let (dir, file) = manifest.redis.place();
            let inner = redis::restore(dir, file);
            for part in &manifest.parts {
                let consumer = match into {
                    RestoreInto::Service { .. } => engines::run_oneoff(compose, service, &inner),
                    RestoreInto::Container(_) => into.exec(&inner),
                };
                body.push_str(&stream(part, &consumer)?);
            }
            if stop {
                return Ok(engines::with_stopped(
                    compose,
                    &[service.to_string()],
                    &body,
                ));
            }
        }
        Engine::Volume { .. } => {
            for part in &manifest.parts {
                body.push_str(&volume::empty_dir(&part.path)?);
                body.push_str(&format!(
                    "{} {} restore {} --target {} --verify >&2 || exit 1\n",
                    super::restic::timeout_prefix(timeout),
                    repo.restic(),
                    snapshot_of(part)?.as_str(),
                    quote(&part.path)
                ));
            }
            if stop {
                return Ok(engines::with_stopped(
                    compose,
                    &[service.to_string()],
                    &body,
                ));
            }
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::engines::redis::RdbReport;
    use crate::backup::engines::testing::fake_docker;
    use crate::backup::restic::{HostFiles, HostKeys};
    use crate::transport::script::testing::{sh_ok, write_executable};

    #[test]
    fn database_names_come_back_from_their_file_names() {
        assert_eq!(database_of("/shop+db+shop.pgdump").as_deref(), Some("shop"));
        assert_eq!(
            database_of("/shop+db+my%20db%2F1.pgdump").as_deref(),
            Some("my db/1")
        );
        assert_eq!(database_of("/shop+db+globals.sql"), None);
    }

    /// A stand-in `restic` whose `dump` prints $DUMP (DATA by default) and
    /// exits $DUMP_RC.
    fn fake_restic(dir: &std::path::Path) -> Repository {
        write_executable(
            &dir.join("restic"),
            "#!/bin/sh\nprintf '%b' \"${DUMP:-DATA\\n}\"\nexit ${DUMP_RC:-0}\n",
        );
        std::fs::write(dir.join("env"), "").unwrap();
        Repository::new(
            "/srv/backups/shop",
            HostFiles::under(&dir.display().to_string()),
            HostKeys::AcceptNew,
        )
        .unwrap()
    }

    fn run(dir: &std::path::Path, env: &str, script: &str) -> std::process::Output {
        std::process::Command::new("sh")
            .args([
                "-c",
                &format!("export PATH={}:$PATH {env}\n{script}", dir.display()),
            ])
            .output()
            .unwrap()
    }

    #[test]
    fn a_failed_read_or_restore_fails_the_stream_naming_its_side() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fake_restic(dir.path());
        let id = SnapshotId::parse("e05c84ae").unwrap();
        let out_file = dir.path().join("got");
        let consumer = format!("cat >{}; exit ${{RESTORE_RC:-0}}", out_file.display());
        let script = stream_into(
            &repo,
            &id,
            "/shop+db+shop.pgdump",
            &format!("sh -c '{consumer}'"),
            "restoring",
            Duration::from_secs(30),
        );
        let ok = run(dir.path(), "", &script);
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "DATA\n");
        let failed = run(dir.path(), "DUMP_RC=3", &script);
        assert!(!failed.status.success());
        assert!(String::from_utf8_lossy(&failed.stderr)
            .contains("reading /shop+db+shop.pgdump from the repository failed (exit 3)"));
        let failed = run(dir.path(), "RESTORE_RC=4", &script);
        assert!(!failed.status.success());
        assert!(String::from_utf8_lossy(&failed.stderr)
            .contains("restoring /shop+db+shop.pgdump failed (exit 4)"));
    }

    /// A manifest of app shop's `service` with one part per file.
    fn manifest(service: &str, engine: Engine, files: &[&str]) -> Manifest {
        Manifest {
            version: 1,
            run: "r1".into(),
            app: "shop".into(),
            service: service.into(),
            engine,
            image: "image:1".into(),
            parts: files
                .iter()
                .map(|f| Part {
                    path: format!("/shop+{service}+{f}"),
                    snapshot: "e05c84ae".into(),
                    bytes: 900,
                })
                .collect(),
            pg_counts: Default::default(),
            redis: Default::default(),
        }
    }

    #[test]
    fn postgres_restores_globals_then_databases_with_the_app_stopped() {
        let repo =
            Repository::new("/srv/b", HostFiles::for_app("shop"), HostKeys::AcceptNew).unwrap();
        let manifest = manifest(
            "db",
            Engine::Postgres {
                mode: PostgresMode::Databases,
            },
            &["globals.sql", "shop.pgdump"],
        );
        let script = service_script(
            &repo,
            &manifest,
            RestoreInto::Service {
                compose: "docker compose -p vpsup-shop",
                service: "db",
            },
            &["web".to_string()],
            None,
            Duration::from_secs(60),
        )
        .unwrap();
        let check = script.find("/shop+db+shop.pgdump").unwrap();
        let stop = script.find(" stop web ").unwrap();
        let globals = script.find("/shop+db+globals.sql").unwrap();
        let shop = script.rfind("/shop+db+shop.pgdump").unwrap();
        let start = script.rfind("start").unwrap();
        assert!(
            check < stop && stop < globals && globals < shop && shop < start,
            "{script}"
        );
        assert!(script.contains("DROP DATABASE IF EXISTS"), "{script}");
    }

    /// A server with its own `dir` and `dbfilename` gets its RDB back there,
    /// not in the official image's /data/dump.rdb.
    #[test]
    fn redis_goes_back_where_the_dump_found_it() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fake_restic(dir.path());
        let docker = fake_docker(dir.path());
        let data = dir.path().join("var lib redis");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("other.rdb"), "old").unwrap();
        let mut manifest = manifest("cache", Engine::Redis, &["dump.rdb"]);
        manifest.redis = RdbReport {
            dir: Some(data.display().to_string()),
            file: Some("other.rdb".into()),
            ..RdbReport::default()
        };
        let script = service_script(
            &repo,
            &manifest,
            RestoreInto::Service {
                compose: "docker compose",
                service: "cache",
            },
            &[],
            None,
            Duration::from_secs(60),
        )
        .unwrap();
        sh_ok(&format!("{docker}\n{script}"));
        assert_eq!(
            std::fs::read_to_string(data.join("other.rdb")).unwrap(),
            "DATA\n"
        );
        assert!(!data.join("dump.rdb").exists());
    }

    /// A dump that does not read through whole (here `pg_restore` says so)
    /// fails the restore before the app is stopped or a database dropped.
    #[test]
    fn postgres_drops_nothing_before_every_dump_read_through() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fake_restic(dir.path());
        let docker = fake_docker(dir.path());
        write_executable(
            &dir.path().join("pg_restore"),
            "#!/bin/sh\ncat >/dev/null\necho \"pg_restore $*\" >>\"$LOG\"\n[ \"$1\" != -f ] || exit ${CHECK_RC:-0}\n",
        );
        write_executable(
            &dir.path().join("psql"),
            "#!/bin/sh\ncat >/dev/null\necho psql >>\"$LOG\"\n",
        );
        let manifest = manifest(
            "db",
            Engine::Postgres {
                mode: PostgresMode::Databases,
            },
            &["globals.sql", "shop.pgdump", "blog.pgdump"],
        );
        let script = service_script(
            &repo,
            &manifest,
            RestoreInto::Service {
                compose: "docker compose",
                service: "db",
            },
            &["web".to_string()],
            None,
            Duration::from_secs(60),
        )
        .unwrap();
        let log = dir.path().join("log");
        let run = |env: &str| {
            let _ = std::fs::remove_file(&log);
            let out = std::process::Command::new("sh")
                .args([
                    "-c",
                    &format!("{docker} PS='web\\trunning\\n' {env}\n{script}"),
                ])
                .output()
                .unwrap();
            let calls = std::fs::read_to_string(&log).unwrap();
            (out, calls)
        };
        let (out, calls) = run("CHECK_RC=1");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr)
            .contains("checking /shop+db+shop.pgdump failed (exit 1)"));
        assert_eq!(
            calls, "docker compose exec -T db\npg_restore -f /dev/null\n",
            "nothing stopped, nothing dropped"
        );
        let (out, calls) = run("");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let calls: Vec<&str> = calls
            .lines()
            .filter(|l| !l.starts_with("docker compose exec"))
            .collect();
        assert_eq!(
            calls,
            [
                "pg_restore -f /dev/null",
                "pg_restore -f /dev/null",
                "docker compose ps -a --format",
                "docker compose stop web",
                "psql",
                "psql",
                "pg_restore -U postgres --create --exit-on-error -d postgres",
                "psql",
                "pg_restore -U postgres --create --exit-on-error -d postgres",
                "docker compose start web",
            ]
        );
    }

    /// MySQL's dump must end with its closing line, and MongoDB's archive
    /// must read through (mongorestore says so): otherwise the restore fails
    /// before the app is stopped or anything replayed.
    #[test]
    fn mysql_and_mongo_replace_nothing_before_their_dump_reads_through() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fake_restic(dir.path());
        let docker = fake_docker(dir.path());
        for tool in ["mariadb", "mongorestore"] {
            write_executable(
                &dir.path().join(tool),
                &format!("#!/bin/sh\ncat >/dev/null\necho \"{tool} $*\" >>\"$LOG\"\ncase \"$*\" in *nsExclude*) exit ${{CHECK_RC:-0}};; esac\n"),
            );
        }
        let whole = "INSERT INTO t VALUES (1);\\n-- Dump completed on 2026-12-05 03:17:00\\n";
        let cases = [
            (
                Engine::Mysql,
                "all-databases.sql",
                "DUMP='INSERT INTO t VALUES (1'".to_string(),
                format!("DUMP='{whole}'"),
                "mariadb -uroot",
            ),
            (
                Engine::Mongo,
                "mongo.archive",
                "CHECK_RC=1".to_string(),
                String::new(),
                "mongorestore --archive --drop",
            ),
        ];
        for (engine, file, bad, good, restore) in cases {
            let script = service_script(
                &repo,
                &manifest("db", engine, &[file]),
                RestoreInto::Service {
                    compose: "docker compose",
                    service: "db",
                },
                &["web".to_string()],
                None,
                Duration::from_secs(60),
            )
            .unwrap();
            let log = dir.path().join("log");
            let run = |env: &str| {
                let _ = std::fs::remove_file(&log);
                let out = std::process::Command::new("sh")
                    .args([
                        "-c",
                        &format!("{docker} PS='web\\trunning\\n' {env}\n{script}"),
                    ])
                    .output()
                    .unwrap();
                let calls = std::fs::read_to_string(&log).unwrap();
                let calls: Vec<String> = calls
                    .lines()
                    .filter(|l| !l.starts_with("docker compose exec"))
                    .map(str::to_string)
                    .collect();
                (out, calls)
            };
            let (out, calls) = run(&bad);
            assert!(!out.status.success(), "{engine:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains(&format!("checking /shop+db+{file} failed (exit 1)")),
                "{stderr}"
            );
            assert!(
                calls
                    .iter()
                    .all(|c| !c.contains(" stop ") && !c.starts_with(restore)),
                "{engine:?}: nothing stopped, nothing replayed: {calls:?}"
            );
            let (out, calls) = run(&good);
            assert!(
                out.status.success(),
                "{engine:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stop = calls.iter().position(|c| c == "docker compose stop web");
            let replayed = calls.iter().position(|c| c.starts_with(restore));
            assert!(
                matches!((stop, replayed), (Some(s), Some(r)) if s < r),
                "{engine:?}: {calls:?}"
            );
        }
    }
}
