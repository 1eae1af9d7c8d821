//! The engines' inner dump and restore scripts against REAL servers: a
//! PostgreSQL cluster, a Redis and a MariaDB, each started by the test in a
//! temporary directory (unix socket or loopback, as an unprivileged user),
//! never the machine's own services. There is no Docker here, so each inner
//! script runs with `sh -c` the way the container would run it: with the
//! container's environment (POSTGRES_USER, POSTGRES_PASSWORD, …) and clients
//! pointed at the test server (PGHOST, a `~/.my.cnf`, a `redis-cli` on PATH
//! that adds the port).
//!
//! Each test seeds real data, dumps it to a file, destroys part of it,
//! restores, and compares row counts and checksums with what was there.
//! Needs root and `bash tests/setup` (postgresql, redis-server, mariadb).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vpsup::backup::engines::{mysql, postgres, redis, DumpPart};
use vpsup::transport::sections::Sections;

/// Runs an inner script as the container would, with `env` added to ours,
/// stdin from `stdin` (or nothing) and stdout into `stdout` (or captured).
fn run_inner(
    inner: &str,
    env: &[(String, String)],
    stdin: Option<&Path>,
    stdout: Option<&Path>,
) -> Output {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", inner])
        .envs(env.iter().map(|(k, v)| (k, v)));
    cmd.stdin(match stdin {
        Some(path) => Stdio::from(fs::File::open(path).unwrap()),
        None => Stdio::null(),
    });
    if let Some(path) = stdout {
        cmd.stdout(Stdio::from(fs::File::create(path).unwrap()));
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// Dumps one part into `dir/<file>`, checks it succeeded and is at least
/// its engine's plausible size, and returns its path and stderr.
fn dump(part: &DumpPart, env: &[(String, String)], dir: &Path) -> (PathBuf, String) {
    let path = dir.join(&part.file);
    let out = ok(
        run_inner(&part.inner, env, None, Some(&path)),
        &format!("dump of {}", part.file),
    );
    let size = fs::metadata(&path).unwrap().len();
    assert!(
        size >= part.min_bytes,
        "{}: {size} bytes, below {}",
        part.file,
        part.min_bytes
    );
    (path, text(&out.stderr))
}

fn chown(path: &Path, user: &str) {
    ok(
        Command::new("chown")
            .args(["-R", &format!("{user}:"), &path.display().to_string()])
            .output()
            .unwrap(),
        "chown",
    );
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not come up in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn random_password() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("pw-{nanos:x}-{}", std::process::id())
}

// ---------------------------------------------------------------- PostgreSQL

/// A cluster of our own: initdb as `postgres` (it refuses root), a unix
/// socket in its directory only, password authentication everywhere (so a
/// script that does not pass the container's password fails).
struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    password: String,
}

impl Pg {
    fn start() -> Pg {
        let bin = fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is not installed: run `bash tests/setup`")
            .map(|e| e.unwrap().path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("no initdb under /usr/lib/postgresql");
        let dir = tempfile::tempdir().unwrap();
        let password = random_password();
        let pwfile = dir.path().join("pwfile");
        fs::write(&pwfile, format!("{password}\n")).unwrap();
        chown(dir.path(), "postgres");
        let data = dir.path().join("data");
        let as_postgres = |args: &[&str]| {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .output()
                .unwrap()
        };
        ok(
            as_postgres(&[
                &bin.join("initdb").display().to_string(),
                "-D",
                &data.display().to_string(),
                "-U",
                "vpsadmin",
                &format!("--pwfile={}", pwfile.display()),
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]),
            "initdb",
        );
        fs::remove_file(&pwfile).unwrap();
        ok(
            as_postgres(&[
                &bin.join("pg_ctl").display().to_string(),
                "-D",
                &data.display().to_string(),
                "-l",
                &dir.path().join("log").display().to_string(),
                "-o",
                &format!(
                    "-k {} -c listen_addresses='' -p 5432 -c fsync=off",
                    dir.path().display()
                ),
                "-w",
                "start",
            ]),
            "pg_ctl start",
        );
        Pg { dir, bin, password }
    }

    /// The container's environment, as the official image has it.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), self.dir.path().display().to_string()),
            ("PGPORT".into(), "5432".into()),
            ("POSTGRES_USER".into(), "vpsadmin".into()),
            ("POSTGRES_PASSWORD".into(), self.password.clone()),
        ]
    }

    fn env_with(&self, key: &str, value: &str) -> Vec<(String, String)> {
        let mut env = self.env();
        env.retain(|(k, _)| k != key);
        env.push((key.into(), value.into()));
        env
    }

    /// Runs SQL (on stdin) in `db` as the admin; its tuples, unaligned.
    fn sql(&self, db: &str, sql: &str) -> String {
        let mut child = Command::new("psql")
            .args([
                "-qXAt",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "vpsadmin",
                "-d",
                &format!("dbname='{}'", db.replace('\'', "\\'")),
            ])
            .envs(self.env().into_iter().map(|(k, v)| {
                if k == "POSTGRES_PASSWORD" {
                    ("PGPASSWORD".to_string(), v)
                } else {
                    (k, v)
                }
            }))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .unwrap();
        text(
            &ok(
                child.wait_with_output().unwrap(),
                &format!("psql in {db}: {sql}"),
            )
            .stdout,
        )
    }

    /// Every user table of `db`: `schema.table` → (rows, md5 of all rows).
    fn fingerprint(&self, db: &str) -> BTreeMap<String, (u64, String)> {
        let tables = self.sql(db, "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1");
        tables
            .lines()
            .map(|table| {
                let row = self.sql(db, &format!("SELECT count(*) || '|' || md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {table} t"));
                let (n, md5) = row.trim().split_once('|').unwrap();
                (table.to_string(), (n.parse().unwrap(), md5.to_string()))
            })
            .collect()
    }

    fn counts(&self, db: &str) -> BTreeMap<String, u64> {
        self.fingerprint(db)
            .into_iter()
            .map(|(t, (n, _))| (t, n))
            .collect()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args([
                "-D",
                &self.dir.path().join("data").display().to_string(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}

const ODD_DB: &str = "it's a db";

/// Roles, several databases (one with a name that needs quoting), schemas,
/// thousands of rows, grants, a foreign key, a sequence.
fn seed_postgres(pg: &Pg) {
    pg.sql("postgres", "CREATE ROLE app LOGIN PASSWORD 'app-pw'; CREATE ROLE reporter NOLOGIN; CREATE DATABASE shop OWNER app; CREATE DATABASE blog; CREATE DATABASE \"it's a db\"; CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 10) g;");
    pg.sql(
        "shop",
        "CREATE SCHEMA sales AUTHORIZATION app;
         CREATE TABLE public.customers (id int PRIMARY KEY, name text NOT NULL, email text);
         INSERT INTO public.customers SELECT g, 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 3000) g;
         CREATE TABLE sales.orders (id bigserial PRIMARY KEY, customer int REFERENCES public.customers, total numeric(10,2), placed timestamptz);
         INSERT INTO sales.orders (customer, total, placed) SELECT 1 + g % 3000, (g * 7 % 10000) / 100.0, '2026-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 5000) g;
         ALTER TABLE public.customers OWNER TO app; ALTER TABLE sales.orders OWNER TO app;
         GRANT USAGE ON SCHEMA sales TO reporter; GRANT SELECT ON public.customers, sales.orders TO reporter;",
    );
    // `notes` again, with other rows: a drill tells the two apart.
    pg.sql("blog", "CREATE TABLE posts (id serial PRIMARY KEY, title text, body text); INSERT INTO posts (title, body) SELECT 'Ünïcødé post ' || g, repeat('lorem ipsum ', g % 50) FROM generate_series(1, 2000) g; CREATE TABLE notes (id int); INSERT INTO notes VALUES (1), (2), (3);");
    pg.sql(ODD_DB, "CREATE TABLE \"Odd Table\" (id int, \"Value|x\" text); INSERT INTO \"Odd Table\" SELECT g, md5(g::text) FROM generate_series(1, 1500) g;");
}

#[test]
fn postgres_databases_are_dumped_and_restored_with_roles_counts_and_checksums() {
    let pg = Pg::start();
    seed_postgres(&pg);
    let env = pg.env();
    let out = tempfile::tempdir().unwrap();

    let listed = postgres::parse_databases(&text(
        &ok(
            run_inner(&postgres::list_databases(), &env, None, None),
            "list",
        )
        .stdout,
    ));
    assert_eq!(listed, ["blog", ODD_DB, "postgres", "shop"]);
    let before: BTreeMap<String, _> = listed
        .iter()
        .map(|db| (db.clone(), pg.fingerprint(db)))
        .collect();
    assert_eq!(before["shop"]["sales.orders"].0, 5000);
    assert_eq!(before[ODD_DB]["public.\"Odd Table\""].0, 1500);

    // Dump: the globals, then each database with its row counts.
    let mut files = Vec::new();
    for part in postgres::dump_parts(&listed) {
        let (path, stderr) = dump(&part, &env, out.path());
        if let Some(db) = &part.database {
            let counts = postgres::parse_counts(&stderr);
            let expected: BTreeMap<String, u64> = before[db]
                .iter()
                .map(|(t, (n, _))| (t.clone(), *n))
                .collect();
            assert_eq!(counts, expected, "{db}: the counts the dump printed");
        }
        files.push((part.database.clone(), path));
    }
    assert!(fs::read_to_string(&files[0].1)
        .unwrap()
        .contains("CREATE ROLE reporter;"));

    // Destroy: a dropped table and changed rows, two dropped databases, a dropped role.
    pg.sql("shop", "DROP TABLE sales.orders; UPDATE public.customers SET name = 'gone' WHERE id < 100; REVOKE ALL ON public.customers FROM reporter; REVOKE ALL ON SCHEMA sales FROM reporter;");
    pg.sql(
        "postgres",
        "DROP DATABASE blog; DROP DATABASE \"it's a db\"; DROP ROLE reporter; DELETE FROM notes;",
    );
    assert_ne!(pg.fingerprint("shop"), before["shop"]);

    // Restore: globals first (the owners and grantees), then each database.
    for (database, path) in &files {
        let script = match database {
            None => postgres::restore_globals(),
            Some(db) => postgres::restore_database(db),
        };
        ok(
            run_inner(&script, &env, Some(path), None),
            &format!("restore of {}", path.display()),
        );
    }
    for db in &listed {
        assert_eq!(pg.fingerprint(db), before[db], "{db} after the restore");
    }
    // What a drill runs: every database's counts again, in one script,
    // compared per database with the dump's.
    let sections = Sections::random();
    let databases: Vec<&str> = listed.iter().map(String::as_str).collect();
    let counted = ok(
        run_inner(
            &postgres::count_databases(&sections, &databases),
            &env,
            None,
            None,
        ),
        "count",
    );
    let found =
        postgres::parse_database_counts(&sections, &databases, &text(&counted.stdout)).unwrap();
    let expected: postgres::DatabaseCounts = before
        .iter()
        .map(|(db, tables)| {
            let counts = tables.iter().map(|(t, (n, _))| (t.clone(), *n)).collect();
            (db.clone(), counts)
        })
        .collect();
    assert_eq!(found["blog"]["public.notes"], 3);
    assert_eq!(found["postgres"]["public.notes"], 10);
    assert_eq!(postgres::database_mismatches(&expected, &found), []);
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop'"
        )
        .trim(),
        "app"
    );
    assert_eq!(
        pg.sql(
            "shop",
            "SELECT has_table_privilege('reporter', 'sales.orders', 'SELECT')"
        )
        .trim(),
        "t"
    );
    assert_eq!(
        pg.sql("shop", "SELECT nextval('sales.orders_id_seq')")
            .trim(),
        "5001"
    );
}

/// The counts come from the same snapshot as the dump: rows inserted while
/// it runs are in neither, and the restore holds exactly the counted rows.
#[test]
fn postgres_counts_match_the_dump_while_the_app_writes() {
    let pg = Pg::start();
    seed_postgres(&pg);
    let env = pg.env();
    let out = tempfile::tempdir().unwrap();
    let writer = {
        let env: Vec<(String, String)> = pg
            .env()
            .into_iter()
            .map(|(k, v)| {
                if k == "POSTGRES_PASSWORD" {
                    ("PGPASSWORD".to_string(), v)
                } else {
                    (k, v)
                }
            })
            .collect();
        Command::new("psql")
            .args(["-qXAt", "-U", "vpsadmin", "-d", "shop", "-c"])
            .arg("DO $$ BEGIN FOR i IN 1..1000 LOOP INSERT INTO sales.orders (customer, total) VALUES (1, 1); COMMIT; PERFORM pg_sleep(0.005); END LOOP; END $$")
            .envs(env)
            .spawn()
            .unwrap()
    };
    wait_until("the writer", || pg.counts("shop")["sales.orders"] > 5000);
    let part = postgres::dump_parts(&["shop".to_string()]).remove(1);
    let (path, stderr) = dump(&part, &env, out.path());
    ok(writer.wait_with_output().unwrap(), "writer");
    let dumped = postgres::parse_counts(&stderr)["sales.orders"];
    assert!(dumped > 5000 && dumped < 6000, "{dumped}");
    assert_eq!(pg.counts("shop")["sales.orders"], 6000);

    ok(
        run_inner(&postgres::restore_database("shop"), &env, Some(&path), None),
        "restore",
    );
    assert_eq!(pg.counts("shop")["sales.orders"], dumped);
}

#[test]
fn postgres_cluster_mode_restores_every_database_and_role() {
    let pg = Pg::start();
    seed_postgres(&pg);
    let env = pg.env();
    let out = tempfile::tempdir().unwrap();
    let dbs = ["blog", ODD_DB, "postgres", "shop"];
    let before: Vec<_> = dbs.iter().map(|db| pg.fingerprint(db)).collect();

    let (path, _) = dump(&postgres::cluster_part(), &env, out.path());
    pg.sql("shop", "DROP TABLE sales.orders;");
    pg.sql(
        "postgres",
        "DROP DATABASE \"it's a db\"; CREATE DATABASE added_later; DELETE FROM notes;",
    );

    ok(
        run_inner(&postgres::restore_cluster(), &env, Some(&path), None),
        "cluster restore",
    );
    let after: Vec<_> = dbs.iter().map(|db| pg.fingerprint(db)).collect();
    assert_eq!(after, before);
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1"
        ),
        "blog\nit's a db\npostgres\nshop\n"
    );
    assert_eq!(
        pg.sql(
            "shop",
            "SELECT has_table_privilege('reporter', 'sales.orders', 'SELECT')"
        )
        .trim(),
        "t"
    );
}

/// What a restore reads first, before it drops anything: a whole dump
/// passes, one cut short fails (`pg_restore --list` would pass it).
#[test]
fn postgres_dumps_are_read_through_before_a_restore() {
    let pg = Pg::start();
    seed_postgres(&pg);
    let env = pg.env();
    let out = tempfile::tempdir().unwrap();
    let database = postgres::dump_parts(&["shop".to_string()]).remove(1);
    for (part, check) in [
        (database, postgres::check_database_dump()),
        (postgres::cluster_part(), postgres::check_cluster_dump()),
    ] {
        let (whole, _) = dump(&part, &env, out.path());
        ok(run_inner(&check, &env, Some(&whole), None), &part.file);
        let bytes = fs::read(&whole).unwrap();
        let cut = out.path().join(format!("cut-{}", part.file));
        fs::write(&cut, &bytes[..bytes.len() * 9 / 10]).unwrap();
        let failed = run_inner(&check, &env, Some(&cut), None);
        assert!(
            !failed.status.success(),
            "{}: a dump cut short passed",
            part.file
        );
    }
}

#[test]
fn postgres_dumps_fail_loudly() {
    let pg = Pg::start();
    let out = tempfile::tempdir().unwrap();
    let part = &postgres::dump_parts(&["postgres".to_string()])[1];
    // The container's password is what lets the script in.
    let wrong = run_inner(
        &part.inner,
        &pg.env_with("POSTGRES_PASSWORD", "wrong"),
        None,
        Some(&out.path().join("x")),
    );
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("password authentication failed"),
        "{}",
        text(&wrong.stderr)
    );
    let missing = &postgres::dump_parts(&["nope".to_string()])[1];
    let gone = run_inner(&missing.inner, &pg.env(), None, Some(&out.path().join("y")));
    assert!(!gone.status.success());
    assert!(
        text(&gone.stderr).contains("database \"nope\" does not exist"),
        "{}",
        text(&gone.stderr)
    );
}

// --------------------------------------------------------------------- Redis

/// A redis-server of our own on a loopback port, as user `redis`, with AOF
/// on (the restore trap) and a password.
struct Redis {
    dir: tempfile::TempDir,
    port: u16,
    password: String,
    server: Option<Child>,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let password = random_password();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        chown(&data, "redis");
        fs::write(
            dir.path().join("redis.conf"),
            format!("port {port}\nbind 127.0.0.1\ndir {}\nappendonly yes\nsave \"\"\nrequirepass {password}\nenable-debug-command yes\nlogfile {}\n", data.display(), data.join("log").display()),
        )
        .unwrap();
        // The container's redis-cli talks to its own server on the default
        // port: this one adds ours.
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let cli = bin.join("redis-cli");
        fs::write(
            &cli,
            format!("#!/bin/sh\nexec /usr/bin/redis-cli -p {port} \"$@\"\n"),
        )
        .unwrap();
        ok(
            Command::new("chmod").arg("755").arg(&cli).output().unwrap(),
            "chmod",
        );
        let mut redis = Redis {
            dir,
            port,
            password,
            server: None,
        };
        redis.run_server();
        redis
    }

    fn run_server(&mut self) {
        let conf = self.dir.path().join("redis.conf");
        // setpriv execs: the child is redis-server itself, ours to kill.
        self.server = Some(
            Command::new("setpriv")
                .args([
                    "--reuid=redis",
                    "--regid=redis",
                    "--init-groups",
                    "redis-server",
                ])
                .arg(&conf)
                .spawn()
                .unwrap(),
        );
        wait_until("redis", || {
            self.try_cli(&["PING"]).is_some_and(|o| o.trim() == "PONG")
        });
    }

    fn stop(&mut self) {
        let _ = self.try_cli(&["SHUTDOWN"]);
        if let Some(mut server) = self.server.take() {
            server.wait().unwrap();
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap()
        );
        vec![
            ("PATH".into(), path),
            ("REDIS_PASSWORD".into(), self.password.clone()),
        ]
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .env("REDISCLI_AUTH", &self.password)
            .output()
            .unwrap();
        out.status.success().then(|| text(&out.stdout))
    }

    fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    fn keys(&self) -> u64 {
        let out = run_inner(&redis::keyspace(None), &self.env(), None, None);
        redis::parse_keyspace(&text(&ok(out, "keyspace").stdout))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

#[test]
fn redis_is_saved_checked_and_restored_over_its_aof() {
    let mut redis = Redis::start();
    let mut commands = String::new();
    for i in 0..5000 {
        commands.push_str(&format!("SET key:{i} value-{i}\n"));
    }
    for i in 0..200 {
        commands.push_str(&format!(
            "HSET hash:{i} a {i} b x{i}\nRPUSH list:{i} one two three\n"
        ));
    }
    for i in 0..50 {
        commands.push_str(&format!("SET session:{i} s EX 86400\n"));
    }
    commands.push_str("SELECT 2\n");
    for i in 0..10 {
        commands.push_str(&format!("SET other:{i} {i}\n"));
    }
    let mut seed = Command::new("redis-cli")
        .arg("-p")
        .arg(redis.port.to_string())
        .env("REDISCLI_AUTH", &redis.password)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    seed.stdin
        .take()
        .unwrap()
        .write_all(commands.as_bytes())
        .unwrap();
    assert!(seed.wait().unwrap().success());
    let total = 5000 + 400 + 50 + 10;
    assert_eq!(redis.keys(), total);
    let digest = redis.cli(&["DEBUG", "DIGEST"]);

    let out = tempfile::tempdir().unwrap();
    let part = redis::dump_part(None);
    let (path, stderr) = dump(&part, &redis.env(), out.path());
    let report = redis::parse_dump_report(&stderr);
    let data = redis.dir.path().join("data").display().to_string();
    assert_eq!(report.dir.as_deref(), Some(data.as_str()));
    assert_eq!(report.file.as_deref(), Some("dump.rdb"));
    assert_eq!(
        (report.keys, report.expires),
        (Some(total), Some(50)),
        "{stderr}"
    );
    assert_eq!(
        redis
            .cli(&["INFO", "persistence"])
            .lines()
            .find(|l| l.starts_with("rdb_saves:"))
            .map(str::trim),
        Some("rdb_saves:1")
    );

    // Destroy (the flush goes into the AOF too), stop, restore, start.
    redis.cli(&["FLUSHALL"]);
    assert_eq!(redis.keys(), 0);
    redis.stop();
    // Where the dump found it (not /data): what the manifest records.
    let (dir, file) = report.place();
    ok(
        run_inner(&redis::restore(dir, file), &[], Some(&path), None),
        "restore",
    );
    redis.run_server();
    // What a drill waits for before it counts.
    ok(
        run_inner(&redis::ready(None), &redis.env(), None, None),
        "ready",
    );
    assert_eq!(redis.keys(), total);
    assert!(report.plausible(redis.keys()));
    assert_eq!(redis.cli(&["DEBUG", "DIGEST"]), digest);
    // The data is the AOF's now: it survives the next restart.
    redis.cli(&["SET", "after", "restore"]);
    redis.stop();
    redis.run_server();
    assert_eq!(redis.keys(), total + 1);
}

#[test]
fn a_redis_dump_with_the_wrong_password_fails() {
    let redis = Redis::start();
    let mut env = redis.env();
    env.retain(|(k, _)| k != "REDIS_PASSWORD");
    env.push(("REDIS_PASSWORD".into(), "wrong".into()));
    let out = tempfile::tempdir().unwrap();
    let run = run_inner(
        &redis::dump_part(None).inner,
        &env,
        None,
        Some(&out.path().join("x")),
    );
    assert!(!run.status.success());
    let stderr = text(&run.stderr);
    assert!(
        stderr.contains("BGSAVE refused") && stderr.contains("WRONGPASS"),
        "{stderr}"
    );
    assert_eq!(fs::metadata(out.path().join("x")).unwrap().len(), 0);
}

// ------------------------------------------------------------------- MariaDB

/// A mariadbd of our own: its own data directory and socket, no network,
/// root with a password only (no socket auth), so the script must pass the
/// container's password to get in.
struct Maria {
    dir: tempfile::TempDir,
    server: Child,
    password: String,
}

impl Maria {
    fn start() -> Maria {
        let dir = tempfile::tempdir().unwrap();
        // mariadbd runs as mysql: its data, socket and logs in a directory of mysql's.
        let run = dir.path().join("run");
        let data = run.join("data");
        fs::create_dir_all(&data).unwrap();
        chown(&run, "mysql");
        // On a machine loaded far past its cores, mariadb-install-db's
        // bootstrap has failed now and then (twice in dozens of runs, not
        // reproduced quiet): it is this fixture's setup, not vpsup under
        // test, so a failed one is shown and tried afresh, twice at most.
        let install = || {
            Command::new("mariadb-install-db")
                .args([
                    "--no-defaults",
                    "--user=mysql",
                    "--auth-root-authentication-method=normal",
                ])
                .arg(format!("--datadir={}", data.display()))
                .output()
                .unwrap()
        };
        let mut installed = install();
        for _ in 0..2 {
            if installed.status.success() {
                break;
            }
            eprintln!(
                "mariadb-install-db failed, trying again: {}{}",
                text(&installed.stdout),
                text(&installed.stderr)
            );
            fs::remove_dir_all(&data).unwrap();
            fs::create_dir_all(&data).unwrap();
            installed = install();
        }
        ok(installed, "mariadb-install-db");
        let sock = run.join("sock");
        let server = Command::new("mariadbd")
            .args(["--no-defaults", "--user=mysql", "--skip-networking"])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", sock.display()))
            .arg(format!("--pid-file={}", run.join("pid").display()))
            .arg(format!("--log-error={}", run.join("err").display()))
            // What it says before its log is open (max_open_files) is noise.
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The clients find the socket through ~/.my.cnf (the container's
        // would use its default socket).
        let home = dir.path().join("home");
        fs::create_dir(&home).unwrap();
        fs::write(
            home.join(".my.cnf"),
            format!("[client]\nsocket={}\n", sock.display()),
        )
        .unwrap();
        let mut maria = Maria {
            dir,
            server,
            password: String::new(),
        };
        wait_until("mariadbd", || {
            if let Ok(Some(status)) = maria.server.try_wait() {
                let log = fs::read_to_string(run.join("err")).unwrap_or_default();
                panic!("mariadbd exited ({status}): {log}");
            }
            maria.try_sql("SELECT 1").is_ok()
        });
        let password = random_password();
        maria.sql(&format!("ALTER USER root@localhost IDENTIFIED BY '{password}'; DELETE FROM mysql.global_priv WHERE user = ''; FLUSH PRIVILEGES;"));
        maria.password = password;
        maria
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "HOME".into(),
                self.dir.path().join("home").display().to_string(),
            ),
            ("MARIADB_ROOT_PASSWORD".into(), self.password.clone()),
        ]
    }

    fn try_sql(&self, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new("mariadb");
        cmd.args(["-uroot", "-N", "-B", "-e", sql])
            .env("HOME", self.dir.path().join("home"));
        if !self.password.is_empty() {
            cmd.env("MYSQL_PWD", &self.password);
        }
        let out = cmd.output().unwrap();
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            Err(text(&out.stderr))
        }
    }

    fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("mariadb: {sql}: {e}"))
    }

    /// Rows and `CHECKSUM TABLE` of each table.
    fn fingerprint(&self, tables: &[&str]) -> Vec<String> {
        tables
            .iter()
            .map(|t| {
                format!(
                    "{} {}",
                    self.sql(&format!("SELECT COUNT(*) FROM {t}")).trim(),
                    self.sql(&format!("CHECKSUM TABLE {t}")).trim()
                )
            })
            .collect()
    }
}

impl Drop for Maria {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Two databases, a user and a procedure; the tables `fingerprint` reads.
const MARIA_TABLES: [&str; 3] = ["shop.customers", "shop.orders", "blog.posts"];

fn seed_mariadb(maria: &Maria) {
    maria.sql(
        "CREATE DATABASE shop; CREATE DATABASE blog; USE shop;
         CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(100), email VARCHAR(100)) ENGINE=InnoDB;
         INSERT INTO shop.customers SELECT seq, CONCAT('customer ', seq), CONCAT('c', seq, '@example.com') FROM seq_1_to_3000;
         CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, customer INT, total DECIMAL(10,2), FOREIGN KEY (customer) REFERENCES shop.customers(id)) ENGINE=InnoDB;
         INSERT INTO shop.orders (customer, total) SELECT 1 + seq % 3000, (seq * 7 % 10000) / 100 FROM seq_1_to_5000;
         CREATE TABLE blog.posts (id INT PRIMARY KEY, title VARCHAR(200) CHARACTER SET utf8mb4, body BLOB);
         INSERT INTO blog.posts SELECT seq, CONCAT('Ünïcødé post ', seq), UNHEX(MD5(seq)) FROM seq_1_to_2000;
         CREATE USER app@'%' IDENTIFIED BY 'app-pw'; GRANT ALL ON shop.* TO app@'%';
         CREATE PROCEDURE shop.order_count() SELECT COUNT(*) FROM shop.orders;",
    );
}

#[test]
fn mariadb_is_dumped_in_one_transaction_and_restored_with_its_users() {
    let maria = Maria::start();
    seed_mariadb(&maria);
    let tables = MARIA_TABLES;
    let before = maria.fingerprint(&tables);
    assert!(before[1].starts_with("5000 "), "{before:?}");

    let out = tempfile::tempdir().unwrap();
    let part = mysql::dump_part(None);
    let (path, _) = dump(&part, &maria.env(), out.path());

    maria.sql("DROP TABLE shop.orders; DELETE FROM shop.customers WHERE id > 100; DROP DATABASE blog; DROP USER app@'%'; DROP PROCEDURE shop.order_count;");
    assert_ne!(maria.fingerprint(&tables[..1]), before[..1]);

    ok(
        run_inner(&mysql::restore(None), &maria.env(), Some(&path), None),
        "restore",
    );
    maria.sql("FLUSH PRIVILEGES");
    assert_eq!(maria.fingerprint(&tables), before);
    assert_eq!(
        maria
            .sql("SELECT COUNT(*) FROM mysql.user WHERE user = 'app'")
            .trim(),
        "1"
    );
    assert_eq!(
        maria
            .sql("SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = 'shop'")
            .trim(),
        "1"
    );
}

/// What a restore reads first, before it replays anything: a whole dump
/// passes, one cut short fails, and then nothing is dropped (replayed
/// unchecked, the cut dump would have replaced the tables before the cut,
/// then stopped at it).
#[test]
fn mariadb_dumps_are_read_through_before_a_restore() {
    let maria = Maria::start();
    seed_mariadb(&maria);
    let dumped = maria.fingerprint(&MARIA_TABLES);
    let env = maria.env();
    let out = tempfile::tempdir().unwrap();
    let (whole, _) = dump(&mysql::dump_part(None), &env, out.path());
    let bytes = fs::read(&whole).unwrap();
    let cut = out.path().join("cut.sql");
    fs::write(&cut, &bytes[..bytes.len() * 6 / 10]).unwrap();
    // The app wrote since the backup.
    maria.sql("DELETE FROM blog.posts WHERE id > 1000; UPDATE shop.customers SET name = 'changed' WHERE id = 1;");
    let now = maria.fingerprint(&MARIA_TABLES);
    // As `restore::service_script` orders them: the check, then the replay.
    let restore = |dump: &Path| {
        let check = run_inner(&mysql::check_dump(), &env, Some(dump), None);
        if !check.status.success() {
            return check;
        }
        run_inner(&mysql::restore(None), &env, Some(dump), None)
    };

    let failed = restore(&cut);
    assert!(!failed.status.success(), "a dump cut short passed");
    assert!(
        text(&failed.stderr).contains("it was cut short"),
        "{}",
        text(&failed.stderr)
    );
    assert_eq!(maria.fingerprint(&MARIA_TABLES), now, "nothing dropped");

    let unchecked = run_inner(&mysql::restore(None), &env, Some(&cut), None);
    assert!(!unchecked.status.success());
    assert_ne!(maria.fingerprint(&MARIA_TABLES), now);
    ok(restore(&whole), "restore of the whole dump");
    assert_eq!(maria.fingerprint(&MARIA_TABLES), dumped);
}

#[test]
fn a_mariadb_dump_needs_the_containers_password() {
    let maria = Maria::start();
    let out = tempfile::tempdir().unwrap();
    let mut env = maria.env();
    env.retain(|(k, _)| k != "MARIADB_ROOT_PASSWORD");
    let without = run_inner(
        &mysql::dump_part(None).inner,
        &env,
        None,
        Some(&out.path().join("x")),
    );
    assert!(!without.status.success());
    assert!(
        text(&without.stderr).contains("Access denied"),
        "{}",
        text(&without.stderr)
    );
    // The image's other name for it, and a configured one, work.
    env.push(("MYSQL_ROOT_PASSWORD".into(), maria.password.clone()));
    ok(
        run_inner(
            &mysql::dump_part(None).inner,
            &env,
            None,
            Some(&out.path().join("y")),
        ),
        "MYSQL_ROOT_PASSWORD",
    );
    env.push(("DB_ROOT".into(), maria.password.clone()));
    env.retain(|(k, _)| k != "MYSQL_ROOT_PASSWORD");
    ok(
        run_inner(
            &mysql::dump_part(Some("DB_ROOT")).inner,
            &env,
            None,
            Some(&out.path().join("z")),
        ),
        "password_env",
    );
}
