//! Benchmarks, not tests: they print figures and ratios and assert nothing about
//! time. Run them with
//!     cargo test --release --test bench -- --ignored --nocapture
//! (the README explains the figures).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
