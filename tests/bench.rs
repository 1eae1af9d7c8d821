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

fn time_runs(mut run: impl FnMut()) -> Duration {
    run(); // warm-up: page cache, first known_hosts write
    median(
        (0..RUNS)
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
    // Ten each of file, copy and command: directory, content and a one-time step.
    let tasks: String = (0..10)
        .map(|i| {
            r#"
    - name: dir I
      file: { path: "{{ dir }}/dI", state: directory, mode: "0755" }
    - name: file I
      copy: { dest: "{{ dir }}/dI/f", content: "content I\n", mode: "0644" }
    - name: once I
      command: { run: "touch {{ dir }}/dI/once", creates: "{{ dir }}/dI/once" }"#
                .replace('I', &i.to_string())
        })
        .collect();
    std::fs::write(
        op.project.path().join("noop.yml"),
        format!("- name: thirty\n  tasks:{tasks}\n"),
    )
    .unwrap();
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

/// Fan-out: `vpsup facts` on 8 hosts (8 sshds on loopback) at once, against
/// one host. With hosts in parallel the 8-host run should cost far less than 8x.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn facts_fan_out_over_8_hosts() {
    let hosts: Vec<TestSshd> = (0..8).map(|_| TestSshd::start()).collect();
    let op = Operator::new();
    let config: String = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            format!(
                "[hosts.h{i}]\naddress = \"127.0.0.1\"\nport = {}\nidentity_file = \"{}\"\n\n",
                h.port,
                key_arg(h)
            )
        })
        .collect();
    op.write_config(&config);
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
