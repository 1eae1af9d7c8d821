//! Benchmarks, not tests: they print figures and ratios and assert nothing about
//! time. Run them with
//!     cargo test --release --test bench -- --ignored --nocapture
//! (the README explains the figures).

// The VM test's backup stage: the benchmark uses its parts, not the stage.
#[allow(dead_code)]
#[path = "vm/backups.rs"]
mod backups;
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const RUNS: usize = 20;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time_runs(run: impl FnMut()) -> Duration {
    time_n_runs(RUNS, run)
}

fn time_n_runs(runs: usize, mut run: impl FnMut()) -> Duration {
    run(); // warm-up: page cache, first known_hosts write
    median(
        (0..runs)
            .map(|_| {
                let started = Instant::now();
                run();
                started.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `vpsup facts` end to end (process start, connect, auth, one probe) against
/// OpenSSH's own client doing a bare connect + `true`, and connect + the same probe.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn facts_overhead_against_openssh() {
    let sshd = TestSshd::start();
    let home = tempfile::tempdir().unwrap();
    let known_hosts = home.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("{}\n", sshd.known_hosts_line)).unwrap();
    std::fs::create_dir(home.path().join(".ssh")).unwrap();
    std::fs::copy(&known_hosts, home.path().join(".ssh/known_hosts")).unwrap();
    let port = sshd.port.to_string();
    let ssh = |remote: &str| {
        let status = Command::new("ssh")
            .args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o"])
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .arg("-i")
            .arg(&sshd.client_key)
            .args(["-p", &port, "root@127.0.0.1", remote])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    };
    let probe = format!(
        "sh -c {}",
        vpsup::transport::script::quote(vpsup::facts::PROBE_SCRIPT)
    );

    let openssh_true = time_runs(|| ssh("true"));
    let openssh_probe = time_runs(|| ssh(&probe));
    let vpsup = time_runs(|| {
        let out = Command::new(env!("CARGO_BIN_EXE_vpsup"))
            .args(["facts", "--json", "-i"])
            .arg(&sshd.client_key)
            .arg(format!("root@127.0.0.1:{port}"))
            .env("HOME", home.path())
            .env_remove("SSH_AUTH_SOCK")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe_output(&out));
    });

    println!("\nvpsup facts against a loopback sshd, median of {RUNS} runs:");
    println!(
        "  ssh connect + true            {:7.1} ms",
        ms(openssh_true)
    );
    println!(
        "  ssh connect + facts probe     {:7.1} ms",
        ms(openssh_probe)
    );
    println!("  vpsup facts (whole command)   {:7.1} ms", ms(vpsup));
    println!(
        "  vpsup / ssh+probe = {:.2}x; vpsup's own overhead beyond a bare ssh+probe: {:+.1} ms",
        vpsup.as_secs_f64() / openssh_probe.as_secs_f64(),
        ms(vpsup) - ms(openssh_probe)
    );
}

/// A 30-task playbook that has nothing to do: the engine's fixed cost. Target:
/// one connection plus one probe exec, well under 0.5 s on loopback.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn noop_playbook_of_30_tasks() {
    let sshd = TestSshd::start();
    let op = Operator::new();
    let dir = tempfile::tempdir().unwrap();
    write_noop_playbook(&op);
    let target = format!("root@127.0.0.1:{}", sshd.port);
    let dir_var = format!("dir={}", dir.path().display());
    let key = key_arg(&sshd);
    let play = || {
        let out = op.vpsup(&[
            "play", "noop.yml", &target, "-i", &key, "-e", &dir_var, "--json",
        ]);
        assert!(out.status.success(), "{}", describe_output(&out));
        json(&out)["hosts"][0]["plays"][0].clone()
    };
    let first = play();
    assert_eq!(first["recap"]["changed"], 30);
    let mut round_trips = 0;
    let wall = time_runs(|| {
        let report = play();
        assert_eq!(report["recap"]["ok"], 30);
        round_trips = report["round_trips"].as_u64().unwrap();
    });
    println!(
        "\nvpsup play: 30-task no-op playbook against a loopback sshd, median of {RUNS} runs:"
    );
    println!(
        "  first run (30 changes)     {} round trips",
        first["round_trips"]
    );
    println!("  no-op run wall time        {:7.1} ms (whole command: start, connect, probe, plan, recap)", ms(wall));
    println!("  no-op run round trips      {round_trips} (target: 1 probe exec)");
}

/// `noop.yml` in the operator's project: ten each of file, copy and command
/// (directory, content and a one-time step) under `{{ dir }}/<host name>/`:
/// 30 changes on the first run, none after.
fn write_noop_playbook(op: &Operator) {
    let tasks: String = (0..10)
        .map(|i| {
            r#"
    - name: dir I
      file: { path: "{{ dir }}/{{ host.name }}/dI", state: directory, mode: "0755" }
    - name: file I
      copy: { dest: "{{ dir }}/{{ host.name }}/dI/f", content: "content I\n", mode: "0644" }
    - name: once I
      command: { run: "touch {{ dir }}/{{ host.name }}/dI/once", creates: "{{ dir }}/{{ host.name }}/dI/once" }"#
                .replace('I', &i.to_string())
        })
        .collect();
    std::fs::write(
        op.project.path().join("noop.yml"),
        format!("- name: thirty\n  tasks:{tasks}\n"),
    )
    .unwrap();
}

/// vpsup.toml listing `hosts` as h0, h1, ...
fn hosts_config(hosts: &[TestSshd]) -> String {
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            format!(
                "[hosts.h{i}]\naddress = \"{}\"\nport = {}\nidentity_file = \"{}\"\n\n",
                h.addr,
                h.port,
                key_arg(h)
            )
        })
        .collect()
}

/// Fan-out: `vpsup facts` on 8 hosts (8 sshds on loopback) at once, against
/// one host. With hosts in parallel the 8-host run should cost far less than 8x.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn facts_fan_out_over_8_hosts() {
    let hosts: Vec<TestSshd> = (0..8).map(|_| TestSshd::start()).collect();
    let op = Operator::new();
    op.write_config(&hosts_config(&hosts));
    let facts = |extra: &[&str]| {
        let out = op.vpsup(&[&["facts", "--json"], extra].concat());
        assert!(out.status.success(), "{}", describe_output(&out));
    };
    let one = time_runs(|| facts(&["--limit", "h0"]));
    let eight = time_runs(|| facts(&[]));
    println!("\nvpsup facts fan-out over loopback sshds, median of {RUNS} runs:");
    println!("  1 host                     {:7.1} ms", ms(one));
    println!("  8 hosts in parallel        {:7.1} ms", ms(eight));
    println!(
        "  8 hosts / 1 host = {:.2}x (8.00x would be one host after another)",
        eight.as_secs_f64() / one.as_secs_f64()
    );
}

const FAR_HOSTS: usize = 50;
/// Added to every packet each way between vpsup and the far hosts.
const ONE_WAY_DELAY: Duration = Duration::from_millis(50);
const FAR_RUNS: usize = 5;

/// Fan-out at internet distance: 50 hosts, each an sshd in its own network
/// namespace, every packet delayed 50 ms each way (100 ms round trip).
/// `vpsup facts` and a no-op 30-task `vpsup play` on all 50 against one host
/// behind the same delay, and against OpenSSH's client doing connect + the
/// facts probe to all 50 at once. Target: 50 hosts < 3x one host.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn fan_out_over_50_hosts_100ms_away() {
    let far = FarHosts::new(FAR_HOSTS, ONE_WAY_DELAY);
    // Declared after `far`, so dropped before it: servers leave the namespaces first.
    let hosts: Vec<TestSshd> = far
        .hosts
        .iter()
        .map(|host| {
            TestSshd::start_with(SshdOptions {
                namespace: Some(host.clone()),
                ..Default::default()
            })
        })
        .collect();
    let op = Operator::new();
    let known_hosts = op.ssh_dir().join("known_hosts");
    let lines: String = hosts
        .iter()
        .map(|h| format!("{}\n", h.known_hosts_line))
        .collect();
    std::fs::write(&known_hosts, lines).unwrap();
    op.write_config(&hosts_config(&hosts));
    write_noop_playbook(&op);
    let dir = tempfile::tempdir().unwrap();
    let dir_var = format!("dir={}", dir.path().display());

    let vpsup = |args: &[&str]| {
        let out = op.vpsup(args);
        assert!(out.status.success(), "{}", describe_output(&out));
        json(&out)
    };
    let facts = |extra: &[&str]| vpsup(&[&["facts", "--json"], extra].concat());
    let play = |extra: &[&str]| {
        let report = vpsup(&[&["play", "noop.yml", "-e", &dir_var, "--json"], extra].concat());
        for host in report["hosts"].as_array().unwrap() {
            assert_eq!(host["plays"][0]["recap"]["changed"], 0, "{host}");
        }
    };
    let probe = format!(
        "sh -c {}",
        vpsup::transport::script::quote(vpsup::facts::PROBE_SCRIPT)
    );
    let ssh = |host: &TestSshd, remote: &str| {
        Command::new("ssh")
            .args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o"])
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .arg("-i")
            .arg(&host.client_key)
            .arg(format!("root@{}", host.addr))
            .arg(remote)
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let ssh_all = |hosts: &[TestSshd], remote: &str| {
        let children: Vec<_> = hosts.iter().map(|host| ssh(host, remote)).collect();
        for mut child in children {
            assert!(child.wait().unwrap().success());
        }
    };

    // The first run makes the 30 changes on every host.
    vpsup(&["play", "noop.yml", "-e", &dir_var, "--json"]);
    let timed = |run: &dyn Fn()| time_n_runs(FAR_RUNS, run);
    let all = FAR_HOSTS.to_string();
    let rows = [
        (
            "ssh connect + facts probe, 1 host",
            timed(&|| ssh_all(&hosts[..1], &probe)),
        ),
        (
            "ssh connect + facts probe, 50 at once",
            timed(&|| ssh_all(&hosts, &probe)),
        ),
        (
            "vpsup facts, 1 host",
            timed(&|| drop(facts(&["--limit", "h0"]))),
        ),
        (
            "vpsup facts, 50 hosts (default: 32 at once)",
            timed(&|| drop(facts(&[]))),
        ),
        (
            "vpsup facts, 50 hosts --forks 50",
            timed(&|| drop(facts(&["--forks", &all]))),
        ),
        (
            "vpsup play no-op 30 tasks, 1 host",
            timed(&|| play(&["--limit", "h0"])),
        ),
        ("vpsup play no-op, 50 hosts (default)", timed(&|| play(&[]))),
        (
            "vpsup play no-op, 50 hosts --forks 50",
            timed(&|| play(&["--forks", &all])),
        ),
        // What sshd alone costs this machine per connection.
        (
            "ssh connect + true, 1 host",
            timed(&|| ssh_all(&hosts[..1], "true")),
        ),
        (
            "ssh connect + true, 50 at once",
            timed(&|| ssh_all(&hosts, "true")),
        ),
    ];
    println!(
        "\n{FAR_HOSTS} hosts, each an sshd in its own network namespace, {} ms added each way; median of {FAR_RUNS} runs:",
        ONE_WAY_DELAY.as_millis()
    );
    for (what, wall) in &rows {
        println!("  {what:<46} {:7.0} ms", ms(*wall));
    }
    let ratio = |many: usize, one: usize| rows[many].1.as_secs_f64() / rows[one].1.as_secs_f64();
    println!("  50 / 1 host: ssh {:.2}x; facts {:.2}x (--forks 50: {:.2}x); play {:.2}x (--forks 50: {:.2}x); target < 3x",
        ratio(1, 0), ratio(3, 2), ratio(4, 2), ratio(6, 5), ratio(7, 5));
    println!(
        "  vpsup facts / ssh + probe, 50 hosts: {:.2}x; ssh + true 50 / 1: {:.2}x",
        ratio(4, 1),
        ratio(9, 8)
    );

    // Where a 50-host run's time goes: one run's per-host timings, and CPU.
    let cpu_before = (machine_cpu(), children_cpu());
    let started = Instant::now();
    let report = facts(&["--forks", &all]);
    let wall = started.elapsed();
    let (machine, own) = (machine_cpu() - cpu_before.0, children_cpu() - cpu_before.1);
    let timings: Vec<&serde_json::Value> = report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["timing"])
        .collect();
    let slowest = timings
        .iter()
        .max_by_key(|t| t["total_ms"].as_u64())
        .unwrap();
    let one = facts(&["--limit", "h0"]);
    println!("  one vpsup facts --forks 50 run: {:.0} ms wall; vpsup used {:.0} ms CPU, the whole machine (sshds, probes, relay) {:.0} ms of {:.0} ms on {} cores",
        ms(wall), ms(own), ms(machine), ms(wall) * cores() as f64, cores());
    println!(
        "    per host: vpsup {:.1} ms CPU, the machine {:.0} ms",
        ms(own) / FAR_HOSTS as f64,
        ms(machine) / FAR_HOSTS as f64
    );
    println!("    one host alone: {}", one["hosts"][0]["timing"]);
    println!("    slowest of 50:  {slowest}");
}

/// CPU time of this process's waited-for children (the vpsup runs).
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// CPU time the whole machine spent busy, from /proc/stat (USER_HZ = 100).
fn machine_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let ticks: u64 = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .enumerate()
        // user nice system idle iowait irq softirq steal: all but idle and iowait
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum();
    Duration::from_millis(ticks * 10)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `vpsup init` on a fresh VM: the first run, then the no-op re-run against
/// what OpenSSH's client pays for one connect plus the very probe vpsup sends
/// (captured through the library from a --check run). ufw rate-limits SSH on
/// the hardened VM (6 new connections per 30 s), so groups of runs are
/// separated by pauses and each takes the median of 3.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn init_on_a_fresh_vm() {
    let vm = TestVm::boot();
    let op = Operator::new();
    let key = vm.root_key();
    let target = format!("root@127.0.0.1:{}", vm.ssh_port);
    let init = |args: &[&str]| {
        let started = Instant::now();
        let out = op.vpsup(args);
        assert!(out.status.success(), "{}", describe_output(&out));
        (
            started.elapsed(),
            json(&out)["hosts"][0]["plays"][0].clone(),
        )
    };
    let (first_wall, first) = init(&["init", &target, "-i", key.to_str().unwrap(), "--json"]);
    let pause = || std::thread::sleep(Duration::from_secs(31));
    pause();
    let probe = capture_init_probe(&vm, &op);
    pause();
    let mut round_trips = 0;
    let noop = median3(|| {
        let (wall, report) = init(&["init", "--json"]);
        assert_eq!(report["recap"]["changed"], 0, "{report}");
        round_trips = report["round_trips"].as_u64().unwrap();
        wall
    });
    pause();
    let ssh = |command: &str, stdin: &[u8]| {
        let started = Instant::now();
        let mut child = Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
            ])
            .args([
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-i",
            ])
            .arg(&key)
            .args(["-p", &vm.ssh_port.to_string(), "deploy@127.0.0.1", command])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin).unwrap();
        assert!(child.wait().unwrap().success());
        started.elapsed()
    };
    let ssh_probe = median3(|| ssh("sudo -n sh -s", probe.as_bytes()));
    pause();
    let ssh_true = median3(|| ssh("true", b""));
    println!("\nvpsup init on a fresh Debian 13 VM under QEMU emulation:");
    println!(
        "  first run                  {:7.1} s, {} changed, {} round trips",
        first_wall.as_secs_f64(),
        first["recap"]["changed"],
        first["round_trips"]
    );
    println!(
        "  no-op re-run (median of 3) {:7.1} s, {round_trips} round trip(s) (target: 1)",
        noop.as_secs_f64()
    );
    println!(
        "  ssh connect + `true`       {:7.1} s",
        ssh_true.as_secs_f64()
    );
    println!(
        "  ssh connect + init's probe {:7.1} s ({} bytes of script)",
        ssh_probe.as_secs_f64(),
        probe.len()
    );
    println!(
        "  no-op re-run / (ssh + the same probe) = {:.2}x (target: at most about 2x)",
        noop.as_secs_f64() / ssh_probe.as_secs_f64()
    );
}

fn median3(mut run: impl FnMut() -> Duration) -> Duration {
    median((0..3).map(|_| run()).collect())
}

/// The probe script of init's re-run: init.yml in check mode through the
/// library, on a transport that records what it is asked to run.
fn capture_init_probe(vm: &TestVm, op: &Operator) -> String {
    use std::sync::Mutex;
    use vpsup::commands::init::InitOptions;
    use vpsup::engine::assets::Assets;
    use vpsup::engine::render::{Renderer, Vars};
    use vpsup::engine::{playbook, run_play, Hooks, RunOptions, Silent};
    use vpsup::facts::HostFacts;
    use vpsup::transport::ssh::{Credentials, SshTarget, SshTransport};
    use vpsup::transport::{ExecOutput, ExecRequest, Transport};

    struct Recording {
        inner: SshTransport,
        scripts: Mutex<Vec<String>>,
    }
    #[async_trait::async_trait]
    impl Transport for Recording {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn is_root(&self) -> bool {
            self.inner.is_root()
        }
        fn round_trips(&self) -> usize {
            self.inner.round_trips()
        }
        async fn exec(&self, req: ExecRequest) -> vpsup::transport::Result<ExecOutput> {
            self.scripts.lock().unwrap().push(req.script.clone());
            self.inner.exec(req).await
        }
    }
    /// Check mode never runs hooks; they only need to exist.
    struct Present;
    #[async_trait::async_trait]
    impl Hooks for Present {
        fn provides(&self, _: &str) -> bool {
            true
        }
        async fn step(&self, _: &str, _: &dyn Transport, _: &HostFacts) -> Result<(), String> {
            Ok(())
        }
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let target = SshTarget {
            host: "127.0.0.1".into(),
            port: vm.ssh_port,
            user: "deploy".into(),
            identity_files: vec![vm.root_key()],
            identities_only: true,
            known_hosts: op.ssh_dir().join("known_hosts"),
            connect_timeout: Duration::from_secs(20),
        };
        let (inner, _) = SshTransport::connect(&target, &Credentials::default())
            .await
            .unwrap();
        let transport = Recording {
            inner,
            scripts: Mutex::new(Vec::new()),
        };
        let assets = Assets::load(None).unwrap();
        let plays = playbook::parse(&assets.playbook("init").unwrap().text, "init.yml").unwrap();
        let renderer = Renderer::new(&assets.templates).unwrap();
        let admin_key = std::fs::read_to_string(vm.root_key().with_extension("pub")).unwrap();
        let options = InitOptions::resolve(&Default::default(), None, std::path::Path::new("."));
        let vars = Vars {
            base: options.vars(&[admin_key.trim().to_string()]),
            ..Default::default()
        };
        let check = RunOptions {
            check: true,
            ..Default::default()
        };
        let report = run_play(
            &transport, &plays[0], &renderer, vars, &check, &Present, &Silent,
        )
        .await;
        assert_eq!(
            (report.recap.changed, report.round_trips),
            (0, 1),
            "{report:?}"
        );
        let scripts = transport.scripts.lock().unwrap();
        scripts[0].clone()
    })
}

/// The size of the benchmark's database in MiB (default 1024), so a small
/// run can show that it works.
const PG_MB_VAR: &str = "VPSUP_BENCH_PG_MB";
/// Rows the fill adds between two looks at the database's size.
const FILL_BATCH: u64 = 100_000;

/// Backup and restore of a PostgreSQL database of about 1 GiB on the
/// emulated VM, into an SFTP repository on this machine (off the host, as a
/// real one would be): the first backup, a second one after 1% of the rows
/// changed, the restore (after its safety snapshot), and a plain `pg_dump`
/// and `pg_dumpall | gzip` to a file on the VM in the same run. Prints the
/// figures; asserts only that the restore gives the data back.
#[test]
#[ignore = "benchmark: boots a VM and moves a 1 GiB database; run with --ignored --nocapture"]
fn backup_and_restore_1gb_postgres_on_a_vm() {
    let target_mib: u64 = std::env::var(PG_MB_VAR).map_or(1024, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{PG_MB_VAR}={v}: not a number of MiB"))
    });
    let vm = TestVm::boot();
    let op = Operator::facing_vm();
    let key = vm.root_key();
    let target = format!("root@127.0.0.1:{}", vm.ssh_port);
    let out = op.vpsup(&["init", &target, "-i", &key.display().to_string(), "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    vm.import_db_images("deploy", &key);
    let project = backups::DataProject::new(&op);
    let cfg = project.cfg();
    let out = op.vpsup(&["deploy", cfg[0], cfg[1]]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let mut figures = Figures::default();

    // The data, made in the container: no gigabyte crosses the network.
    let started = Instant::now();
    let filled = backups::psql(&vm, &key, "postgres", &fill_sql(target_mib << 20));
    let fill_time = started.elapsed();
    let (rows, db_bytes) = filled
        .split_once('|')
        .unwrap_or_else(|| panic!("rows|bytes expected: {filled}"));
    let db_bytes: u64 = db_bytes.parse().unwrap();
    figures.add(
        "database (pg_database_size)",
        format!("{}, {rows} rows (asked: {target_mib} MiB)", mib(db_bytes)),
    );
    figures.add(
        "filling it (generate_series, vacuum)",
        format!("{:.1} s", fill_time.as_secs_f64()),
    );

    // The first backup: the whole dump goes to the repository.
    ssh_budget::make_room(1);
    let first = timed_backup(&op, cfg, &["backup"]);
    let repo_first = du(&project.repository());
    figures.add(
        "vpsup backup, first: whole command",
        format!("{:.1} s", first.wall.as_secs_f64()),
    );
    figures.add(
        "  of which the db service (dump into restic)",
        format!("{:.1} s", first.db_seconds),
    );
    figures.add("  repository size afterwards (du -sb)", mib(repo_first));

    // The plain way on the same data, timed on the VM itself.
    let plain = plain_dumps(&vm, &key);
    figures.add(
        "pg_dump -Fc -Z0 > /dev/null (the stream vpsup backs up)",
        format!("{:.1} s", plain.raw_seconds),
    );
    figures.add(
        "pg_dump -Fc > file",
        format!("{:.1} s, {}", plain.custom_seconds, mib(plain.custom_bytes)),
    );
    figures.add(
        "pg_dumpall | gzip > file",
        format!("{:.1} s, {}", plain.gzip_seconds, mib(plain.gzip_bytes)),
    );

    // A small change: 1% of the rows, spread over the table, updated.
    let changed = backups::psql(
        &vm,
        &key,
        "bench",
        &format!(
            "update events set kind = 'edited', body = body || ' edited' where id % 100 = 0; {FINGERPRINT}"
        ),
    );
    ssh_budget::make_room(1);
    let second = timed_backup(&op, cfg, &["backup"]);
    let repo_second = du(&project.repository());
    figures.add(
        "vpsup backup after 1% of rows updated: whole command",
        format!("{:.1} s", second.wall.as_secs_f64()),
    );
    figures.add(
        "  of which the db service",
        format!("{:.1} s", second.db_seconds),
    );
    figures.add(
        "  repository growth (the incremental cost)",
        mib(repo_second - repo_first),
    );

    // Disaster (1% of the rows deleted), then the restore of the second
    // backup, after a safety snapshot of what is there now.
    backups::psql(&vm, &key, "bench", "delete from events where id % 100 = 1;");
    ssh_budget::make_room(1);
    let restore = timed_backup(&op, cfg, &["restore", "db", "--yes"]);
    let repo_restored = du(&project.repository());
    figures.add(
        "vpsup restore db --yes: whole command",
        format!("{:.1} s", restore.wall.as_secs_f64()),
    );
    figures.add(
        "  of which its safety snapshot (db service)",
        format!("{:.1} s", restore.db_seconds),
    );
    figures.add(
        "  the restore itself (whole command - safety snapshot)",
        format!("{:.1} s", restore.wall.as_secs_f64() - restore.db_seconds),
    );
    figures.add(
        "  repository growth (the safety snapshot)",
        mib(repo_restored - repo_second),
    );
    assert_eq!(
        backups::psql(&vm, &key, "bench", FINGERPRINT),
        changed,
        "the restore did not give back what the second backup held"
    );

    // What `backup list` says the snapshots hold (restic's bytes read).
    let (ok, listed, said) =
        backups::vpsup_json(&op, &["backup", "list", cfg[0], cfg[1], "--json"]);
    assert!(ok, "{said}");
    for (what, run) in [("first", &first), ("second", &second), ("safety", &restore)] {
        figures.add(
            &format!("{what} snapshot of db (backup list, bytes read)"),
            mib(listed_bytes(&listed, &run.db_snapshots)),
        );
    }

    let ratio = |a: f64, b: f64| format!("{:.2}x", a / b);
    figures.add(
        "repository after the first backup / pg_database_size",
        ratio(repo_first as f64, db_bytes as f64),
    );
    figures.add(
        "repository after the first backup / pg_dump -Fc file",
        ratio(repo_first as f64, plain.custom_bytes as f64),
    );
    figures.add(
        "repository after the first backup / pg_dumpall | gzip file",
        ratio(repo_first as f64, plain.gzip_bytes as f64),
    );
    figures.add(
        "second backup's growth / first backup's",
        ratio((repo_second - repo_first) as f64, repo_first as f64),
    );
    figures.add(
        "first backup's db service / pg_dumpall | gzip",
        ratio(first.db_seconds, plain.gzip_seconds),
    );
    println!(
        "\nBackup and restore of PostgreSQL on the emulated Debian 13 VM (QEMU TCG, 2 vCPUs, 2 GiB), \
         restic repository over SFTP on this machine; restored data checked:"
    );
    figures.print();
}

/// `name value` lines, printed as a table.
#[derive(Default)]
struct Figures(Vec<(String, String)>);

impl Figures {
    fn add(&mut self, name: &str, value: String) {
        self.0.push((name.to_string(), value));
    }

    fn print(&self) {
        let width = self.0.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, value) in &self.0 {
            println!("  {name:<width$}  {value}");
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Creates database `bench` and fills its table `events` with rows made by
/// `generate_series` (md5 hex and repeated words: text that compresses
/// somewhat, as real rows do) until the database holds `bytes`; then
/// `VACUUM (FREEZE)`, so no later reader pays for the hint bits.
/// Prints `rows|bytes`.
fn fill_sql(bytes: u64) -> String {
    format!(
        r#"create database bench;
\c bench
create table events (id bigint primary key, account int not null, at timestamptz not null, kind text not null, body text not null);
do $$
declare n bigint := 0;
begin
  while pg_database_size(current_database()) < {bytes} loop
    insert into events
      select g, (g * 7919) % 100000, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second',
             (array['order', 'login', 'view', 'refund', 'signup'])[1 + (g % 5)::int],
             md5(g::text) || ' ' || repeat(substr(md5((g * 31)::text), 1, 8) || ' ', 1 + (g % 12)::int) || md5((g * 17)::text)
      from generate_series(n + 1, n + {FILL_BATCH}) g;
    n := n + {FILL_BATCH};
  end loop;
end $$;
vacuum (freeze, analyze) events;
select count(*) || '|' || pg_database_size(current_database()) from events;"#
    )
}

/// What `events` holds, as the restore must give it back: the row count, a
/// hash of every row, and an md5 of every 1000th row in order.
const FINGERPRINT: &str = "select count(*) || '|' || sum(hashtextextended(e::text, 0)) || '|' || \
     (select md5(string_agg(s::text, ',' order by s.id)) from events s where s.id % 1000 = 0) from events e;";

/// One timed vpsup run that backs up (a backup, or a restore and its
/// safety snapshot): the whole command, and what its report says of `db`.
struct TimedRun {
    wall: Duration,
    db_seconds: f64,
    db_snapshots: Vec<String>,
}

fn timed_backup(op: &Operator, cfg: [&str; 2], command: &[&str]) -> TimedRun {
    let args = [command, &cfg, &["--json"]].concat();
    let started = Instant::now();
    let (ok, report, said) = backups::vpsup_json(op, &args);
    let wall = started.elapsed();
    assert!(ok, "{}: {said}", args.join(" "));
    let run = &report["hosts"][0]["run"];
    assert_eq!(run["ok"], true, "{report}");
    let db = run["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "db")
        .unwrap_or_else(|| panic!("no db service in {report}"));
    TimedRun {
        wall,
        db_seconds: db["duration_ms"].as_u64().unwrap() as f64 / 1000.0,
        db_snapshots: db["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect(),
    }
}

/// The bytes `backup list` gives for the snapshots `ids` (ids or prefixes).
fn listed_bytes(listed: &Value, ids: &[String]) -> u64 {
    let snapshots = listed["hosts"][0]["snapshots"].as_array().unwrap();
    ids.iter()
        .map(|id| {
            let s = snapshots
                .iter()
                .find(|s| s["id"].as_str().unwrap().starts_with(id.as_str()))
                .unwrap_or_else(|| panic!("snapshot {id} is not listed: {listed}"));
            s["bytes"]
                .as_u64()
                .unwrap_or_else(|| panic!("no bytes: {s}"))
        })
        .sum()
}

/// Bytes under `path` (`du -sb`: the files' sizes).
fn du(path: &Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(path).output().unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// The plain way, timed on the VM: seconds and file sizes.
struct PlainDumps {
    raw_seconds: f64,
    custom_seconds: f64,
    custom_bytes: u64,
    gzip_seconds: f64,
    gzip_bytes: u64,
}

/// Dumps `bench` the plain way into a directory on the VM (removed after):
/// `NAME MILLISECONDS BYTES` per line.
const PLAIN_DUMPS: &str = r#"set -euo pipefail
dir=$(mktemp -d /var/tmp/plain-dump.XXXXXX)
trap 'rm -rf "$dir"' EXIT
ms() { echo $(( $(date +%s%N) / 1000000 )); }
db=vpsup-data-db-1
s=$(ms); docker exec $db pg_dump -U postgres -Fc -Z0 bench > /dev/null
echo "raw $(( $(ms) - s )) 0"
s=$(ms); docker exec $db pg_dump -U postgres -Fc bench > "$dir/bench.dump"
echo "custom $(( $(ms) - s )) $(stat -c %s "$dir/bench.dump")"
s=$(ms); docker exec $db pg_dumpall -U postgres | gzip > "$dir/all.sql.gz"
echo "gzip $(( $(ms) - s )) $(stat -c %s "$dir/all.sql.gz")"
"#;

fn plain_dumps(vm: &TestVm, key: &Path) -> PlainDumps {
    let out = vm.ssh("deploy", key, PLAIN_DUMPS, &[]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| -> (f64, u64) {
        let fields: Vec<&str> = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} line: {}", describe_output(&out)))
            .split_whitespace()
            .collect();
        (
            fields[1].parse::<f64>().unwrap() / 1000.0,
            fields[2].parse().unwrap(),
        )
    };
    let (raw_seconds, _) = line("raw");
    let (custom_seconds, custom_bytes) = line("custom");
    let (gzip_seconds, gzip_bytes) = line("gzip");
    PlainDumps {
        raw_seconds,
        custom_seconds,
        custom_bytes,
        gzip_seconds,
        gzip_bytes,
    }
}
