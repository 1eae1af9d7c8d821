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
