//! The backup stage of the VM tests: a real PostgreSQL and Redis (the image
//! tests/vm/build-db-image makes, imported on the VM), backed up with vpsup
//! into an SFTP repository on this machine (a real sshd, reached from the VM
//! through QEMU's user network at 198.51.100.2), destroyed, restored, drilled,
//! and backed up again by the host's own timer.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// The guest's name for this machine's loopback (tests/vm/boot).
const HOST_FROM_VM: &str = "198.51.100.2";

/// Runs `sql` in the app's PostgreSQL as postgres, on database `db`.
pub fn psql(vm: &TestVm, key: &Path, db: &str, sql: &str) -> String {
    // `vm.ssh` gives the remote command no stdin: the SQL travels quoted.
    let out = vm.ssh(
        "deploy",
        key,
        &format!(
            "printf '%s\\n' {} | docker exec -i vpsup-data-db-1 psql -X -q -A -t -v ON_ERROR_STOP=1 -U postgres -d {db}",
            shell_word(sql)
        ),
        &[],
    );
    assert!(out.status.success(), "psql {sql}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What the databases hold, as the restore must give it back: per table its
/// row count and an md5 of its rows in order; the databases; the roles.
fn fingerprint(vm: &TestVm, key: &Path) -> String {
    let mut seen = psql(
        vm,
        key,
        "postgres",
        "select string_agg(datname, ',' order by datname) from pg_database where not datistemplate; select string_agg(rolname, ',' order by rolname) from pg_roles where rolname like 'app%';",
    );
    for db in ["shop", "blog"] {
        seen.push('\n');
        seen.push_str(&psql(
            vm,
            key,
            db,
            "select string_agg(format('%s=%s', t.relname, (xpath('/row/c/text()', query_to_xml(format('select count(*) as c, md5(coalesce(string_agg(x::text, '','' order by x::text), '''')) as m from %I.%I x', n.nspname, t.relname), false, true, '')))[1]::text), ' ' order by t.relname) from pg_class t join pg_namespace n on n.oid = t.relnamespace where t.relkind = 'r' and n.nspname = 'public';",
        ));
    }
    seen
}

pub fn vpsup_json(op: &Operator, args: &[&str]) -> (bool, Value, String) {
    let out = op.vpsup(args);
    let value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), value, text(&out))
}

/// The data stack's project (tests/vm/data-stack) for the host in `op`'s
/// vpsup.toml, with `[backup]` into a repository that is a directory behind a
/// real sshd on this machine, its host key pinned on the VM.
pub struct DataProject {
    /// The repository's server: it serves while this lives.
    _sftp: TestSshd,
    store: tempfile::TempDir,
    dir: tempfile::TempDir,
    /// The project's vpsup.toml.
    pub config: String,
}

impl DataProject {
    pub fn new(op: &Operator) -> DataProject {
        let sftp = TestSshd::start();
        let store = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/data-stack/compose.yml"),
            p.join("compose.yml"),
        )
        .unwrap();
        std::fs::copy(&sftp.client_key, p.join("sftp_key")).unwrap();
        std::fs::write(
            p.join("sftp_known_hosts"),
            format!("[{HOST_FROM_VM}]:{} {}", sftp.port, sftp.host_key_pub),
        )
        .unwrap();
        let common = std::fs::read_to_string(op.project.path().join("vpsup.toml")).unwrap();
        let common = common.split("\n[app]").next().unwrap();
        let config = p.join("vpsup.toml");
        std::fs::write(
            &config,
            format!(
                r#"{common}
[app]
name = "data"
health_timeout = 300

[app.secrets]
generate = ["DB_PASSWORD"]

[backup]
repository = "sftp://root@{HOST_FROM_VM}:{port}/{repo}"
sftp_identity_file = "sftp_key"
sftp_known_hosts = "sftp_known_hosts"
before_deploy = true
"#,
                port = sftp.port,
                repo = store.path().join("repo").display(),
            ),
        )
        .unwrap();
        let config = config.display().to_string();
        DataProject {
            _sftp: sftp,
            store,
            dir,
            config,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The repository's directory on this machine.
    pub fn repository(&self) -> std::path::PathBuf {
        self.store.path().join("repo")
    }

    /// `--config` and the project's vpsup.toml, for vpsup's arguments.
    pub fn cfg(&self) -> [&str; 2] {
        ["--config", self.config.as_str()]
    }
}

pub fn backups_are_proven_by_restores(vm: &TestVm, op: &Operator, key: &Path) {
    vm.import_db_images("deploy", key);
    cool_down();

    let project = DataProject::new(op);
    let p = project.dir();
    let config = &project.config;
    let cfg = project.cfg();

    // The first deploy: the stack, the backup settings and timers, the
    // repository (created: nothing was there), and the password, made on
    // this machine with a loud warning.
    let out = op.vpsup(&["deploy", cfg[0], cfg[1]]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let said = text(&out);
    assert!(said.contains("GENERATED a new backup password"), "{said}");
    assert!(said.contains("created repository"), "{said}");
    // ...here, off the host.
    assert!(project.repository().join("config").exists(), "{said}");
    assert!(
        p.join(".vpsup/backup-password").exists() || said.contains("backup-password"),
        "{said}"
    );
    let (ok, second, said) = vpsup_json(op, &["deploy", cfg[0], cfg[1], "--json"]);
    assert!(ok, "{said}");
    assert_eq!(
        second["hosts"][0]["pending"],
        serde_json::json!([]),
        "{said}"
    );
    cool_down();

    // Real data: two databases, 25 tables (more than a tail of the dump's
    // report holds), thousands of rows, a role that owns a table.
    psql(
        vm,
        key,
        "postgres",
        "create role app_owner login; create database shop; create database blog owner app_owner;",
    );
    let mut tables = String::new();
    for i in 0..24 {
        tables.push_str(&format!(
            "create table t{i:02} (id int primary key, v text); insert into t{i:02} select g, md5(g::text) from generate_series(1, {}) g;",
            100 + i * 37
        ));
    }
    psql(vm, key, "shop", &format!("create table items (id int primary key, name text, price numeric); insert into items select g, 'item ' || g, g * 1.5 from generate_series(1, 5000) g; {tables}"));
    psql(vm, key, "blog", "set role app_owner; create table posts (id serial primary key, body text); insert into posts (body) select repeat('post ', g % 50) from generate_series(1, 3000) g;");
    cool_down();
    let out = vm.ssh(
        "deploy",
        key,
        "seq 1 3000 | sed 's/.*/SET key:& value:&/' | docker exec -i vpsup-data-cache-1 redis-cli >/dev/null && docker exec vpsup-data-cache-1 redis-cli dbsize",
        &[],
    );
    assert_eq!(text(&out).trim(), "3000", "{}", describe_output(&out));
    let before = fingerprint(vm, key);
    assert!(
        before.contains("items=5000") && before.contains("posts=3000"),
        "{before}"
    );
    cool_down();

    // A backup now: a snapshot per database (and the roles), the RDB.
    let started = Instant::now();
    let (ok, report, said) = vpsup_json(op, &["backup", cfg[0], cfg[1], "--json"]);
    assert!(ok, "{said}");
    let run = &report["hosts"][0]["run"];
    assert_eq!(run["ok"], true, "{report}");
    let services: Vec<&str> = run["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["cache", "db"], "{report}");
    eprintln!("backup of db and cache: {:?}", started.elapsed());
    let first_run = run["run"].as_str().unwrap().to_string();

    // Disaster: a table dropped, a database dropped, the cache flushed.
    psql(vm, key, "shop", "drop table items; delete from t03;");
    psql(vm, key, "postgres", "drop database blog;");
    let out = vm.ssh(
        "deploy",
        key,
        "docker exec vpsup-data-cache-1 redis-cli flushall",
        &[],
    );
    assert!(out.status.success(), "{}", describe_output(&out));
    cool_down();

    // Restore, each after a safety snapshot of what is there now.
    for service in ["db", "cache"] {
        let out = op.vpsup(&["restore", service, "--yes", cfg[0], cfg[1]]);
        assert!(
            out.status.success(),
            "restore {service}: {}",
            describe_output(&out)
        );
    }
    assert_eq!(fingerprint(vm, key), before);
    let out = vm.ssh(
        "deploy",
        key,
        "docker exec vpsup-data-cache-1 redis-cli dbsize",
        &[],
    );
    assert_eq!(text(&out).trim(), "3000", "{}", describe_output(&out));
    cool_down();

    // The drill: the latest snapshots restored into throwaway containers,
    // counts compared, everything removed again.
    let (ok, report, said) = vpsup_json(op, &["backup", "verify", cfg[0], cfg[1], "--json"]);
    assert!(ok, "{said}");
    assert_eq!(report["hosts"][0]["run"]["ok"], true, "{report}");
    let manual_drill = report["hosts"][0]["run"]["run"]
        .as_str()
        .unwrap()
        .to_string();
    let out = vm.ssh(
        "deploy",
        key,
        "docker ps -a --filter label=vpsup.drill --format '{{.Names}}'",
        &[],
    );
    assert_eq!(text(&out).trim(), "", "drill containers left behind");

    // The list: the first run's snapshots and the safety snapshots.
    let (ok, listed, said) = vpsup_json(op, &["backup", "list", cfg[0], cfg[1], "--json"]);
    assert!(ok, "{said}");
    let snapshots = listed["hosts"][0]["snapshots"].as_array().unwrap().clone();
    assert!(snapshots.len() >= 4, "{listed}");
    cool_down();

    // A database that is down fails the backup loudly, naming it; the
    // snapshots already there stay.
    let out = vm.ssh("deploy", key, "docker stop vpsup-data-db-1 >/dev/null", &[]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let (ok, report, said) = vpsup_json(op, &["backup", cfg[0], cfg[1], "--json"]);
    assert!(!ok, "a backup with its database down succeeded: {said}");
    let failed: Vec<&Value> = report["hosts"][0]["run"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["error"].is_string())
        .collect();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["service"], "db", "{report}");
    let out = vm.ssh(
        "deploy",
        key,
        "docker start vpsup-data-db-1 >/dev/null",
        &[],
    );
    assert!(out.status.success(), "{}", describe_output(&out));
    // (The cache, backed up before the db failed, added one.)
    let (ok, listed, said) = vpsup_json(op, &["backup", "list", cfg[0], cfg[1], "--json"]);
    assert!(ok, "{said}");
    let still: Vec<&Value> = listed["hosts"][0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["id"])
        .collect();
    for s in &snapshots {
        assert!(still.contains(&&s["id"]), "{} is gone: {listed}", s["id"]);
    }
    cool_down();

    // The host's own timers: every 4 minutes (the drill 2 minutes later),
    // with nobody connected; `status` reports them. (Only now: a timer's run
    // holds the app's backup lock, which the steps above need.) The deploy
    // changes nothing but the backup settings and timers.
    let toml = std::fs::read_to_string(config).unwrap();
    std::fs::write(
        config,
        toml.replace(
            "before_deploy = true\n",
            "before_deploy = true\nschedule = \"*:0/4\"\nverify_schedule = \"*:2/4\"\nmax_age = \"1h\"\n",
        ),
    )
    .unwrap();
    let (ok, report, said) = vpsup_json(op, &["deploy", cfg[0], cfg[1], "--json"]);
    assert!(ok, "{said}");
    assert_eq!(
        report["hosts"][0]["pending"],
        serde_json::json!(["backup settings and timers to install"]),
        "{said}"
    );
    assert_eq!(report["hosts"][0]["uploaded"], 0, "{said}");
    let deadline = Instant::now() + Duration::from_secs(900);
    let backups = loop {
        let (ok, status, said) = vpsup_json(op, &["status", cfg[0], cfg[1], "--json"]);
        assert!(ok, "{said}");
        let backups = status["hosts"][0]["backups"][0].clone();
        let by_timer = backups["last"]["run"]
            .as_str()
            .is_some_and(|r| r != first_run)
            && backups["last"]["ok"] == true
            && backups["drill"]["ok"] == true
            && backups["drill"]["run"]
                .as_str()
                .is_some_and(|r| r != manual_drill);
        if by_timer {
            break backups;
        }
        assert!(
            Instant::now() < deadline,
            "the host's timers never ran a good backup and drill: {backups}"
        );
        std::thread::sleep(Duration::from_secs(40));
    };
    assert_eq!(backups["app"], "data", "{backups}");
    assert_eq!(backups["problems"], serde_json::json!([]), "{backups}");
    assert!(backups["next"].is_string(), "{backups}");
    drop(project);
}
