//! The backup stage of the VM tests: a real PostgreSQL, Redis and MariaDB
//! (the image tests/vm/build-db-image makes, imported on the VM), backed up
//! with vpsup into an SFTP repository on this machine (a real sshd, reached
//! from the VM through QEMU's user network at 198.51.100.2), destroyed and
//! restored; then backed up and drilled by the host's own units, as its
//! timers run them; then drilled against a tampered repository.

use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use crate::support::*;

/// The guest's name for this machine's loopback (tests/vm/boot).
pub const HOST_FROM_VM: &str = "198.51.100.2";

/// Runs `sql` in the app's PostgreSQL as postgres, on database `db`.
pub fn psql(vm: &TestVm, key: &Path, db: &str, sql: &str) -> String {
    sql_client(
        vm,
        key,
        &format!("vpsup-data-db-1 psql -X -q -A -t -v ON_ERROR_STOP=1 -U postgres -d {db}"),
        sql,
    )
}

/// Runs `sql` in the app's MariaDB as root (over its socket), on database
/// `orders`; tab-separated rows without a header.
fn mariadb(vm: &TestVm, key: &Path, sql: &str) -> String {
    sql_client(vm, key, "vpsup-data-sql-1 mariadb -uroot -N -B orders", sql)
}

/// Feeds `sql` to `client` (a container and the SQL client to run in it) and
/// returns what it printed, trimmed; panics when it fails.
fn sql_client(vm: &TestVm, key: &Path, client: &str, sql: &str) -> String {
    // `vm.ssh` gives the remote command no stdin: the SQL travels quoted.
    let out = vm.ssh(
        "deploy",
        key,
        &format!(
            "printf '%s\\n' {} | docker exec -i {client}",
            shell_word(sql)
        ),
        &[],
    );
    assert!(out.status.success(), "{client}: {sql}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What the databases hold, as the restore must give it back: per table its
/// row count and an md5 of its rows in order; the databases; the roles; and
/// the same of MariaDB's tables.
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
    seen.push('\n');
    seen.push_str(&mariadb(
        vm,
        key,
        "set session group_concat_max_len = 100000000; \
         select 'orders', count(*), md5(group_concat(id, ':', customer, ':', total order by id)) from orders; \
         select 'order_lines', count(*), md5(group_concat(order_id, ':', sku order by order_id, sku)) from order_lines;",
    ));
    seen
}

/// What the host says of its backup timers and their runs.
const TIMER_DIAGNOSIS: &str = "sudo systemctl list-timers --all 'vpsup-backup*' --no-pager; \
    sudo systemctl status --no-pager 'vpsup-backup*' 2>&1 | tail -n 60; \
    sudo journalctl --no-pager -n 80 -u 'vpsup-backup*'; \
    sudo ls -la /var/lib/vpsup/backup/data; sudo tail -n 5 /var/lib/vpsup/backup/data/history.jsonl";

/// A drill, passed or failed, removes every container it made.
fn assert_no_drill_containers(vm: &TestVm, key: &Path) {
    let out = vm.ssh(
        "deploy",
        key,
        "docker ps -a --filter label=vpsup.drill --format '{{.Names}}'",
        &[],
    );
    assert_eq!(text(&out).trim(), "", "drill containers left behind");
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
generate = ["DB_PASSWORD", "SQL_PASSWORD"]

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
    let out = vm.ssh(
        "deploy",
        key,
        "seq 1 3000 | sed 's/.*/SET key:& value:&/' | docker exec -i vpsup-data-cache-1 redis-cli >/dev/null && docker exec vpsup-data-cache-1 redis-cli dbsize",
        &[],
    );
    assert_eq!(text(&out).trim(), "3000", "{}", describe_output(&out));
    mariadb(
        vm,
        key,
        "create table orders (id int primary key, customer varchar(64), total decimal(10,2)); \
         insert into orders select seq, concat('customer ', seq % 97), seq * 2.5 from seq_1_to_4000; \
         create table order_lines (order_id int, sku varchar(16), primary key (order_id, sku)); \
         insert into order_lines select seq div 3 + 1, concat('sku-', seq % 3) from seq_0_to_5999;",
    );
    let before = fingerprint(vm, key);
    assert!(
        before.contains("items=5000")
            && before.contains("posts=3000")
            && before.contains("orders\t4000")
            && before.contains("order_lines\t6000"),
        "{before}"
    );

    // A backup now: a snapshot per PostgreSQL database (and the roles), the
    // RDB, MariaDB's dump.
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
    assert_eq!(services, ["cache", "db", "sql"], "{report}");
    eprintln!("backup of db, cache and sql: {:?}", started.elapsed());
    let first_run = run["run"].as_str().unwrap().to_string();

    // Disaster: tables dropped, a database dropped, the cache flushed.
    psql(vm, key, "shop", "drop table items; delete from t03;");
    psql(vm, key, "postgres", "drop database blog;");
    mariadb(
        vm,
        key,
        "drop table orders; delete from order_lines where order_id < 100;",
    );
    let out = vm.ssh(
        "deploy",
        key,
        "docker exec vpsup-data-cache-1 redis-cli flushall",
        &[],
    );
    assert!(out.status.success(), "{}", describe_output(&out));

    // Restore, each after a safety snapshot of what is there now.
    for service in ["db", "cache", "sql"] {
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

    // (The drill, restoring the latest snapshots into throwaway containers,
    // is the host's own below: a drill here too would only repeat it, at
    // minutes of emulated CPU.)

    // The list: the first run's snapshots and the safety snapshots.
    let (ok, listed, said) = vpsup_json(op, &["backup", "list", cfg[0], cfg[1], "--json"]);
    assert!(ok, "{said}");
    let snapshots = listed["hosts"][0]["snapshots"].as_array().unwrap().clone();
    assert!(snapshots.len() >= 4, "{listed}");

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
    // `status` says so: the last backup failed, naming the db.
    let (ok, status, said) = vpsup_json(op, &["status", cfg[0], cfg[1], "--json"]);
    assert!(ok, "{said}");
    let backups = &status["hosts"][0]["backups"][0];
    assert_eq!(backups["last"]["ok"], false, "{backups}");
    assert!(
        backups["problems"].to_string().contains("the last backup"),
        "{backups}"
    );

    // The host's own timers, with nobody connected: a backup about 100 s
    // from now and a drill 110 s later (times of day, read from the VM's
    // clock; a drill that finds the backup still running waits for its lock,
    // and a time already past when the timer starts fires at once, as
    // Persistent= does for a missed run). The deploy changes nothing but the
    // backup settings and timers, and `status` reports the runs. (Only now:
    // a run holds the app's backup lock, which the steps above need.)
    let out = vm.ssh(
        "deploy",
        key,
        "now=$(date +%s); date -d @$((now + 100)) +%H:%M:%S; date -d @$((now + 210)) +%H:%M:%S",
        &[],
    );
    let times: Vec<String> = text(&out).lines().map(str::to_string).collect();
    assert_eq!(times.len(), 2, "{}", text(&out));
    let toml = std::fs::read_to_string(config).unwrap();
    std::fs::write(
        config,
        toml.replace(
            "before_deploy = true\n",
            &format!(
                "before_deploy = true\nschedule = \"*-*-* {}\"\nverify_schedule = \"*-*-* {}\"\nmax_age = \"3h\"\n",
                times[0], times[1]
            ),
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
    let deadline = Instant::now() + std::time::Duration::from_secs(900);
    let out = loop {
        std::thread::sleep(std::time::Duration::from_secs(30));
        let out = vm.ssh(
            "deploy",
            key,
            "for u in vpsup-backup@data vpsup-backup-verify@data; do \
             echo \"$u $(sudo systemctl show -p ExecMainStartTimestampMonotonic --value $u.service) $(sudo systemctl is-active $u.service)\"; done",
            &[],
        );
        // Each has started (a non-zero start time) and is no longer running.
        // (As root: the image has no D-Bus, so only root's systemctl reaches
        // systemd, through its private socket.)
        let seen = text(&out);
        let done = seen.lines().filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 3 && f[1] != "0" && f[2] != "activating" && f[2] != "active"
        });
        if done.count() == 2 {
            break out;
        }
        if Instant::now() > deadline {
            let diagnosis = vm.ssh("deploy", key, TIMER_DIAGNOSIS, &[]);
            panic!(
                "the host's timers did not run both: {}\n{}",
                text(&out),
                text(&diagnosis)
            );
        }
    };
    eprintln!("the host's own runs: {}", text(&out));
    let (ok, status, said) = vpsup_json(op, &["status", cfg[0], cfg[1], "--json"]);
    assert!(ok, "{said}");
    let backups = &status["hosts"][0]["backups"][0];
    assert_eq!(backups["app"], "data", "{backups}");
    assert_eq!(backups["last"]["ok"], true, "{backups}");
    assert_ne!(
        backups["last"]["run"].as_str(),
        Some(first_run.as_str()),
        "{backups}"
    );
    // The drill: the latest snapshots restored into throwaway containers,
    // counts compared, everything removed again.
    assert_eq!(backups["drill"]["ok"], true, "{backups}");
    assert_no_drill_containers(vm, key);
    assert_eq!(backups["problems"], serde_json::json!([]), "{backups}");
    assert!(backups["next"].is_string(), "{backups}");

    // Tampered with: one byte changed in every data pack of the repository.
    // The drill fails, loudly, and `status` says so.
    let mut packs = 0;
    for dir in std::fs::read_dir(project.repository().join("data")).unwrap() {
        for pack in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = pack.unwrap().path();
            let mut bytes = std::fs::read(&path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x55;
            std::fs::write(&path, bytes).unwrap();
            packs += 1;
        }
    }
    assert!(packs > 0);
    let (ok, report, said) = vpsup_json(op, &["backup", "verify", cfg[0], cfg[1], "--json"]);
    assert!(!ok, "a drill of a tampered repository passed: {said}");
    assert_eq!(report["hosts"][0]["run"]["ok"], false, "{report}");
    let (_, status, said) = vpsup_json(op, &["status", cfg[0], cfg[1], "--json"]);
    let problems = status["hosts"][0]["backups"][0]["problems"].to_string();
    assert!(problems.contains("the last restore drill"), "{said}");
    assert_no_drill_containers(vm, key);
    drop(project);
}
