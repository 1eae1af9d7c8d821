//! The watch stage of the VM tests: on the deployed shop stack, the host's
//! own checks (`vpsup watch --local`) find a stopped container, a
//! crash-looping one, a disk filled past its threshold, a site whose
//! upstream is a dead port and a certificate closer to its end than the
//! threshold; each gives exactly one email at a real SMTP
//! server on this machine (aiosmtpd over implicit TLS, reached from the VM
//! at 198.51.100.2), a second run none, the fix one "resolved". Then the
//! host's timer runs the checks by itself.
//! It needs the shop app deployed (the operator's project): its containers
//! run and its site is served.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::backups::HOST_FROM_VM;
use crate::support::*;

/// Runs `command` as root on the VM (through the admin's sudo); its stdout.
fn root(vm: &TestVm, key: &Path, command: &str) -> String {
    let out = vm.ssh(
        "deploy",
        key,
        &format!("sudo sh -c '{}'", command.replace('\'', r"'\''")),
        &[],
    );
    assert!(out.status.success(), "{command}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One run of the host's checks, as its timer runs them; its JSON report.
fn watch(vm: &TestVm, key: &Path) -> Value {
    let out = vm.ssh(
        "deploy",
        key,
        "sudo /usr/local/bin/vpsup watch --local --json",
        &[],
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// The mails received so far, and the bodies of those after the first `seen`.
fn new_mails(smtp: &Receiver, seen: &mut usize) -> Vec<String> {
    let all = smtp.received();
    let new: Vec<String> = all[*seen..]
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_string())
        .collect();
    *seen = all.len();
    new
}

/// Exactly one new mail, holding `line`.
fn one_mail_with(smtp: &Receiver, seen: &mut usize, line: &str, report: &Value) {
    let mails = new_mails(smtp, seen);
    assert_eq!(
        mails.len(),
        1,
        "want one mail with {line:?}: {mails:?}\n{report}"
    );
    assert!(
        mails[0].contains(line),
        "{line:?} not in {}\n{report}",
        mails[0]
    );
}

fn no_mail(smtp: &Receiver, seen: &mut usize, report: &Value) {
    let mails = new_mails(smtp, seen);
    assert!(mails.is_empty(), "a second run sent {mails:?}\n{report}");
}

/// Waits until `check` holds (at most `limit`).
fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

pub fn watch_alerts_on_the_host(vm: &TestVm, op: &Operator, key: &Path) {
    let ca = TestCa::for_vm();
    let smtp = Receiver::smtp("tls", Some(&ca), None);
    // The disk threshold just above what / uses now: the fill crosses it.
    let used: u32 = root(vm, key, "df --output=pcent / | tail -n 1 | tr -dc 0-9")
        .parse()
        .unwrap();
    let threshold = used + 3;
    let config_path = op.project.path().join("vpsup.toml");
    let mut config = std::fs::read_to_string(&config_path).unwrap();
    config.push_str(&format!(
        "\n[watch]\ndisk_percent = {threshold}\n\n[alerts]\nsmtp_server = \"{HOST_FROM_VM}:{port}\"\nsmtp_tls = \"tls\"\nemail_from = \"vpsup@example.test\"\nemail_to = [\"ops@example.test\"]\nca_file = \"{ca}\"\nremind_every = \"1d\"\n",
        port = smtp.port,
        ca = ca.root.display()
    ));
    std::fs::write(&config_path, config).unwrap();

    // Deploy hands the host its watch settings (0600, the CA beside them).
    let out = op.vpsup(&["deploy", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(
        describe_output(&out).contains("watch settings to install"),
        "{}",
        describe_output(&out)
    );
    assert_eq!(
        root(
            vm,
            key,
            "stat -c %a /etc/vpsup/watch/shop.toml /etc/vpsup/watch/shop/ca.pem"
        ),
        "600\n600"
    );
    let out = op.vpsup(&["deploy", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(
        !describe_output(&out).contains("watch settings"),
        "a second deploy rewrites nothing"
    );

    // The timer init installed is on; it stays off while the runs below
    // are counted (it would take their messages), and proves itself last.
    assert_eq!(
        root(vm, key, "systemctl is-enabled vpsup-watch.timer"),
        "enabled"
    );
    root(vm, key, "systemctl stop vpsup-watch.timer");

    // A baseline: whatever this VM has to say (a pending reboot...) is said
    // once; a second run says nothing.
    let mut seen = 0;
    let report = watch(vm, key);
    assert_eq!(report["ok"], true, "{report}");
    // Every app deployed so far, the one rolled back to an earlier vpsup's
    // release (its bare project name) too.
    for app in report["apps"].as_array().unwrap() {
        assert!(
            !app["problems"].as_array().unwrap().iter().any(|p| {
                let check = p["check"].as_str().unwrap();
                ["site ", "certificate ", "container"]
                    .iter()
                    .any(|c| check.starts_with(c))
                    || ["disk /", "docker"].contains(&check)
            }),
            "the deployed apps have problems before the test makes any: {report}"
        );
    }
    new_mails(&smtp, &mut seen);
    let report = watch(vm, key);
    no_mail(&smtp, &mut seen, &report);

    // 1. A stopped container.
    root(vm, key, "docker stop vpsup-shop-backend-1");
    let report = watch(vm, key);
    one_mail_with(
        &smtp,
        &mut seen,
        "PROBLEM container backend: exited",
        &report,
    );
    let report = watch(vm, key);
    no_mail(&smtp, &mut seen, &report);
    root(vm, key, "docker start vpsup-shop-backend-1");
    wait_for("the backend healthy again", Duration::from_secs(60), || {
        root(
            vm,
            key,
            "docker inspect -f {{.State.Health.Status}} vpsup-shop-backend-1",
        ) == "healthy"
    });
    let report = watch(vm, key);
    one_mail_with(
        &smtp,
        &mut seen,
        "RESOLVED container backend: exited",
        &report,
    );

    // 2. A crash loop: a container of the app's compose project that exits
    // at once, restarted by Docker again and again.
    let image = root(
        vm,
        key,
        "docker inspect -f {{.Config.Image}} vpsup-shop-backend-1",
    );
    root(
        vm,
        key,
        &format!(
            "docker run -d --name vpsup-shop-crash-1 --label com.docker.compose.project=vpsup-shop --label com.docker.compose.service=crash --restart=always --entrypoint /bin/busybox {image} sh -c \"exit 3\""
        ),
    );
    wait_for("three restarts", Duration::from_secs(60), || {
        root(
            vm,
            key,
            "docker inspect -f {{.RestartCount}} vpsup-shop-crash-1",
        )
        .parse::<u32>()
        .unwrap_or(0)
            >= 3
    });
    let report = watch(vm, key);
    one_mail_with(
        &smtp,
        &mut seen,
        "PROBLEM container crash: crash loop",
        &report,
    );
    let report = watch(vm, key);
    no_mail(&smtp, &mut seen, &report);
    root(vm, key, "docker rm -f vpsup-shop-crash-1");
    let report = watch(vm, key);
    one_mail_with(
        &smtp,
        &mut seen,
        "RESOLVED container crash: crash loop",
        &report,
    );

    // 3. The disk past its threshold: a file of 5% of /.
    root(
        vm,
        key,
        "fallocate -l $(( $(df --output=size -k / | tail -n 1) * 5 / 100 ))K /var/tmp/vpsup-fill",
    );
    let report = watch(vm, key);
    one_mail_with(&smtp, &mut seen, "PROBLEM disk /: ", &report);
    let report = watch(vm, key);
    no_mail(&smtp, &mut seen, &report);
    root(vm, key, "rm -f /var/tmp/vpsup-fill");
    let report = watch(vm, key);
    one_mail_with(&smtp, &mut seen, "RESOLVED disk /", &report);

    // 4. The site's upstream moved to a dead port (port 9: nothing listens).
    let site = root(
        vm,
        key,
        "ls /etc/nginx/sites-enabled/vpsup-shop.*.conf | head -n 1",
    );
    let domain = site
        .trim_start_matches("/etc/nginx/sites-enabled/vpsup-shop.")
        .trim_end_matches(".conf")
        .to_string();
    root(
        vm,
        key,
        &format!("cp {site} /root/site.saved && sed -i \"s|proxy_pass http://127.0.0.1:[0-9]*|proxy_pass http://127.0.0.1:9|\" {site} && nginx -t -q && systemctl reload nginx"),
    );
    let report = watch(vm, key);
    one_mail_with(
        &smtp,
        &mut seen,
        &format!("PROBLEM site {domain}: "),
        &report,
    );
    let report = watch(vm, key);
    no_mail(&smtp, &mut seen, &report);
    root(
        vm,
        key,
        &format!("cp /root/site.saved {site} && nginx -t -q && systemctl reload nginx"),
    );
    let report = watch(vm, key);
    one_mail_with(
        &smtp,
        &mut seen,
        &format!("RESOLVED site {domain}: "),
        &report,
    );

    // 5. The certificate nginx serves closer to its end than the threshold:
    // a threshold above its lifetime, handed to the host by a deploy.
    let with_days = |days: u32| {
        let config = std::fs::read_to_string(&config_path).unwrap();
        let config = match config.find("certificate_days = ") {
            Some(at) => {
                let end = at + config[at..].find('\n').unwrap();
                format!(
                    "{}certificate_days = {days}{}",
                    &config[..at],
                    &config[end..]
                )
            }
            None => config.replace(
                "[watch]\n",
                &format!("[watch]\ncertificate_days = {days}\n"),
            ),
        };
        std::fs::write(&config_path, config).unwrap();
        let out = op.vpsup(&["deploy"]);
        assert!(out.status.success(), "{}", describe_output(&out));
    };
    with_days(100_000);
    let report = watch(vm, key);
    one_mail_with(
        &smtp,
        &mut seen,
        &format!("PROBLEM certificate {domain}: "),
        &report,
    );
    let report = watch(vm, key);
    no_mail(&smtp, &mut seen, &report);
    with_days(14);
    let report = watch(vm, key);
    one_mail_with(
        &smtp,
        &mut seen,
        &format!("RESOLVED certificate {domain}"),
        &report,
    );

    // `vpsup status` shows a problem the checks found, with since when.
    root(vm, key, "docker stop vpsup-shop-backend-1");
    watch(vm, key);
    new_mails(&smtp, &mut seen);
    let out = op.vpsup(&["status"]);
    assert!(
        text(&out).contains("PROBLEM      shop: container backend: exited"),
        "{}",
        text(&out)
    );
    root(vm, key, "docker start vpsup-shop-backend-1");

    // 6. The timer by itself: the fix is told without any run from here.
    root(vm, key, "systemctl start vpsup-watch.timer");
    let started = Instant::now();
    wait_for("the timer's run", Duration::from_secs(400), || {
        smtp.received().len() > seen
    });
    let mails = new_mails(&smtp, &mut seen);
    assert!(
        mails
            .iter()
            .any(|m| m.contains("RESOLVED container backend")),
        "{mails:?}"
    );
    eprintln!(
        "the host's own timer told the fix {} s after it was started",
        started.elapsed().as_secs()
    );
    // What a run costs, as systemd accounts vpsup-watch.service: the
    // timer's run above (it sent a message), runs that send nothing, and
    // the run once an hour (Docker's data root and build cache asked again).
    let cost = |before: &str| {
        accounting(&root(
            vm,
            key,
            &format!("{before}systemctl show {ACCOUNTING} vpsup-watch.service"),
        ))
    };
    let sent = cost("");
    let quiet: Vec<_> = (0..3)
        .map(|_| cost("systemctl start vpsup-watch.service && "))
        .collect();
    let hourly = cost(
        "rm -f /run/vpsup/watch/docker-api && systemctl start vpsup-watch.service && \
         test -s /run/vpsup/watch/docker-api && ",
    );
    eprintln!("vpsup watch --local on the VM (CPU, wall, peak memory):");
    eprintln!("  the timer's run, one message sent: {sent}");
    for run in &quiet {
        eprintln!("  a run that sends nothing: {run}");
    }
    eprintln!("  the hourly run (Docker's /info and /system/df too): {hourly}");
}

/// What `systemctl show` prints of a service's last run.
const ACCOUNTING: &str = "-p ExecMainStartTimestampMonotonic -p ExecMainExitTimestampMonotonic -p CPUUsageNSec -p MemoryPeak";

/// A run's cost, from `systemctl show ACCOUNTING`.
struct Cost {
    cpu_s: f64,
    wall_s: f64,
    peak_mib: f64,
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} s CPU, {:.2} s wall, {:.1} MiB",
            self.cpu_s, self.wall_s, self.peak_mib
        )
    }
}

fn accounting(shown: &str) -> Cost {
    let value = |key: &str| -> f64 {
        shown
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {shown}"))
    };
    Cost {
        cpu_s: value("CPUUsageNSec") / 1e9,
        wall_s: (value("ExecMainExitTimestampMonotonic")
            - value("ExecMainStartTimestampMonotonic"))
            / 1e6,
        peak_mib: value("MemoryPeak") / 1048576.0,
    }
}
