//! `vpsup watch --local` on this machine, as a host's timer runs it, against
//! a real nginx (a site proxied to an upstream, TLS with a real certificate)
//! and the real alert receivers: problems made here without Docker (a dead
//! upstream, a certificate closer to expiry than the threshold, a disk
//! threshold below what is used) give exactly one message per channel, a
//! second run none, the fix one "resolved". A channel that refuses is told
//! again on the next run; the others are not.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use support::*;

/// nginx in a temp dir: `shop.test` over TLS, proxied to `upstream`; a live
/// upstream on `live` answering 200.
struct SiteNginx {
    dir: tempfile::TempDir,
    https: u16,
    live: u16,
    child: std::process::Child,
}

impl SiteNginx {
    fn start(upstream_alive: bool) -> SiteNginx {
        let dir = tempfile::tempdir().unwrap();
        // A certificate for shop.test, valid 30 days from now.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["shop.test".to_string()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        std::fs::write(
            dir.path().join("cert.pem"),
            params.self_signed(&key).unwrap().pem(),
        )
        .unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let (https, live) = (free_port(), free_port());
        write_config(dir.path(), https, live, upstream_alive);
        let child = Command::new("nginx")
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx runs");
        let nginx = SiteNginx {
            child,
            dir,
            https,
            live,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", https)).is_err() {
            assert!(std::time::Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        nginx
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    fn point_upstream(&self, alive: bool) {
        write_config(self.dir.path(), self.https, self.live, alive);
        let out = Command::new("nginx")
            .arg("-c")
            .arg(self.conf())
            .args(["-s", "reload"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe_output(&out));
        // The reload is asynchronous: wait until the new workers answer,
        // several times in a row (the old ones may still take one).
        let want = if alive { "200" } else { "502" };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut in_a_row = 0;
        while in_a_row < 5 {
            let out = Command::new("curl")
                .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--resolve"])
                .arg(format!("shop.test:{}:127.0.0.1", self.https))
                .arg(format!("https://shop.test:{}/healthz", self.https))
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout) == want {
                in_a_row += 1;
                continue;
            }
            in_a_row = 0;
            assert!(std::time::Instant::now() < deadline, "nginx did not reload");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for SiteNginx {
    fn drop(&mut self) {
        let _ = Command::new("nginx")
            .arg("-c")
            .arg(self.conf())
            .args(["-s", "stop"])
            .output();
        let _ = self.child.wait();
    }
}

/// The config: the site proxies to the live upstream, or to a port nothing
/// listens on.
fn write_config(dir: &Path, https: u16, live: u16, upstream_alive: bool) {
    let d = dir.display();
    let upstream = if upstream_alive { live } else { dead_port() };
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n  server {{ listen 127.0.0.1:{live}; location / {{ return 200 \"ok\\n\"; }} }}\n  server {{ listen 127.0.0.1:{https} ssl; server_name shop.test; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;\n    location / {{ proxy_pass http://127.0.0.1:{upstream}; }} }}\n}}\n"
        ),
    )
    .unwrap();
}

/// A port nothing listens on: bound and released (nobody else takes it
/// within a test run, as `free_port` assumes too).
fn dead_port() -> u16 {
    free_port()
}

/// The host's settings file, as deploy would write it, pointed at this
/// machine's test nginx and a temp state file.
fn settings(dir: &Path, nginx: Option<&SiteNginx>, watch: &str, alerts: &str) -> PathBuf {
    let (nginx_key, sites) = match nginx {
        Some(n) => (
            format!("nginx = \"127.0.0.1:{}\"\n", n.https),
            "[[sites]]\nname = \"shop.test\"\nhealth = \"/healthz\"\n",
        ),
        None => (String::new(), ""),
    };
    let path = dir.join("shop.toml");
    std::fs::write(
        &path,
        format!(
            "app = \"shop\"\nhost = \"test-host\"\n{nginx_key}state = \"{}\"\n{sites}[watch]\n{watch}\n[alerts]\n{alerts}",
            dir.join("state/shop.json").display()
        ),
    )
    .unwrap();
    path
}

fn channels(http: &Receiver, smtp: &Receiver, hook_path: &str) -> String {
    format!(
        "webhook = \"http://127.0.0.1:{}{hook_path}\"\nsmtp_server = \"127.0.0.1:{}\"\nsmtp_tls = \"none\"\nemail_from = \"vpsup@example.com\"\nemail_to = [\"ops@example.com\"]\n",
        http.port, smtp.port
    )
}

fn watch(op: &Operator, settings: &Path) -> (bool, Value) {
    watch_with_env(op, settings, &[])
}

fn watch_with_env(op: &Operator, settings: &Path, env: &[(&str, &str)]) -> (bool, Value) {
    let out = op.vpsup_with_env(
        &[
            "watch",
            "--local",
            "--json",
            "--config",
            settings.to_str().unwrap(),
        ],
        b"",
        env,
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", describe_output(&out)));
    (out.status.success(), report)
}

/// The webhook messages' problems as `(state, check)`, ours only (this
/// machine may have its own, such as a pending reboot).
fn ours(message: &Value) -> Vec<(String, String)> {
    let body: Value = serde_json::from_str(message["body"].as_str().unwrap()).unwrap();
    body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["state"].as_str().unwrap().to_string(),
                p["check"].as_str().unwrap().to_string(),
            )
        })
        .filter(|(_, check)| {
            ["site shop.test", "certificate shop.test", "disk /"].contains(&check.as_str())
        })
        .collect()
}

/// The text of the first app's open problem `check`.
fn problem_text(report: &Value, check: &str) -> String {
    report["apps"][0]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["check"] == check)
        .unwrap_or_else(|| panic!("no {check} in {report}"))["text"]
        .as_str()
        .unwrap()
        .to_string()
}

/// What a run finds at SiteNginx with a dead upstream and a 60-day
/// certificate threshold: the health path answered 502, the certificate
/// (30 days from now) has 29 full days left.
fn site_answers_502_and_the_certificate_has_29_days(report: &Value) {
    assert_eq!(
        problem_text(report, "site shop.test"),
        "/healthz answered 502"
    );
    assert!(
        problem_text(report, "certificate shop.test")
            .starts_with("the certificate nginx serves expires in 29 day(s), on "),
        "{report}"
    );
}

#[test]
fn each_problem_is_told_once_then_not_again_then_resolved_once() {
    let http = Receiver::http();
    let smtp = Receiver::smtp("plain", None, None);
    let nginx = SiteNginx::start(false);
    let op = Operator::new();
    let dir = tempfile::tempdir().unwrap();
    let alerts = channels(&http, &smtp, "/hook");
    // The certificate has 30 days left: a 60-day threshold is above it; the
    // disk is surely more than 1% used.
    let file = settings(
        dir.path(),
        Some(&nginx),
        "disk_percent = 1\ncertificate_days = 60\n",
        &alerts,
    );

    let (ok, report) = watch(&op, &file);
    assert!(ok, "{report}");
    site_answers_502_and_the_certificate_has_29_days(&report);
    let text = |check: &str| problem_text(&report, check);
    assert!(text("disk /").contains("% used (threshold 1%)"), "{report}");
    let hooks = http.received();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(
        ours(&hooks[0]),
        [
            ("started".to_string(), "certificate shop.test".to_string()),
            ("started".to_string(), "disk /".to_string()),
            ("started".to_string(), "site shop.test".to_string()),
        ]
    );
    let mails = smtp.received();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let body = mails[0]["body"].as_str().unwrap();
    assert!(
        body.contains("PROBLEM site shop.test: /healthz answered 502"),
        "{body}"
    );
    assert!(mails[0]["subject"]
        .as_str()
        .unwrap()
        .starts_with("vpsup test-host (shop): "));

    // A second run: the same problems, nothing new to say.
    let (ok, report) = watch(&op, &file);
    assert!(ok, "{report}");
    assert_eq!(report["apps"][0]["sent"], serde_json::json!([]), "{report}");
    assert_eq!(http.received().len(), 1);
    assert_eq!(smtp.received().len(), 1);

    // Fixed: the upstream answers, the thresholds are below what is.
    nginx.point_upstream(true);
    let file = settings(
        dir.path(),
        Some(&nginx),
        "disk_percent = 100\ncertificate_days = 7\n",
        &alerts,
    );
    let (ok, report) = watch(&op, &file);
    assert!(ok, "{report}");
    let hooks = http.received();
    assert_eq!(hooks.len(), 2, "{hooks:?} {report}");
    assert_eq!(
        ours(&hooks[1]),
        [
            ("resolved".to_string(), "certificate shop.test".to_string()),
            ("resolved".to_string(), "disk /".to_string()),
            ("resolved".to_string(), "site shop.test".to_string()),
        ]
    );
    let mails = smtp.received();
    assert_eq!(mails.len(), 2);
    assert!(mails[1]["body"]
        .as_str()
        .unwrap()
        .contains("RESOLVED site shop.test: /healthz answered 502"));
    // And then quiet again.
    let (ok, _) = watch(&op, &file);
    assert!(ok);
    assert_eq!(http.received().len(), 2);
    assert_eq!(smtp.received().len(), 2);
}

/// A curl older than 7.88 (Ubuntu 22.04's 7.81) cannot write the chain it
/// was served: the run asks openssl for each site's certificate instead,
/// and judges it the same. (A stand-in that says it is 7.81 and runs the
/// real curl.)
#[test]
fn an_older_curl_has_the_certificate_from_openssl() {
    let nginx = SiteNginx::start(false);
    let op = Operator::new();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let curl = bin.join("curl");
    std::fs::write(
        &curl,
        "#!/bin/sh
if [ \"$1\" = -V ]; then echo 'curl 7.81.0 (x86_64-pc-linux-gnu) libcurl/7.81.0 OpenSSL/3.0.2'; exit 0; fi\nexec /usr/bin/curl \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&curl, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let file = settings(dir.path(), Some(&nginx), "certificate_days = 60\n", "");
    let (ok, report) = watch_with_env(&op, &file, &[("PATH", &path)]);
    assert!(ok, "{report}");
    site_answers_502_and_the_certificate_has_29_days(&report);
}

#[test]
fn a_refused_message_is_sent_again_next_run_and_the_others_are_not() {
    let http = Receiver::http();
    let smtp = Receiver::smtp("plain", None, None);
    let op = Operator::new();
    let dir = tempfile::tempdir().unwrap();
    // The receiver answers 500 on /fail.
    let file = settings(
        dir.path(),
        None,
        "disk_percent = 1\n",
        &channels(&http, &smtp, "/fail"),
    );

    let (ok, report) = watch(&op, &file);
    assert!(!ok, "a refused message fails the run: {report}");
    let sent = report["apps"][0]["sent"].as_array().unwrap();
    let by = |name: &str| sent.iter().find(|s| s["channel"] == name).unwrap().clone();
    assert_eq!(by("webhook")["ok"], false);
    assert_eq!(by("email")["ok"], true);
    assert_eq!(http.received().len(), 1);
    assert_eq!(smtp.received().len(), 1);

    let (_, report) = watch(&op, &file);
    let sent = report["apps"][0]["sent"].as_array().unwrap();
    assert_eq!(sent.len(), 1, "only the webhook is owed: {report}");
    assert_eq!(sent[0]["channel"], "webhook");
    assert_eq!(http.received().len(), 2, "the webhook is told again");
    assert_eq!(smtp.received().len(), 1, "email is not told twice");
    // The state file is whole JSON, and holds the open problem since the first run.
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("state/shop.json")).unwrap())
            .unwrap();
    assert!(state["open"]["disk:/"]["since"].is_string(), "{state}");
    assert!(
        state["open"]["disk:/"]["told"]["email"].is_number(),
        "{state}"
    );
    assert!(
        state["open"]["disk:/"]["told"].get("webhook").is_none(),
        "{state}"
    );
}

/// A channel whose file does not read (the SMTP password is missing) is
/// reported by name; the other channels still send.
#[test]
fn a_channel_that_does_not_read_leaves_the_others_sending() {
    let http = Receiver::http();
    let smtp = Receiver::smtp("plain", None, None);
    let op = Operator::new();
    let dir = tempfile::tempdir().unwrap();
    let alerts = format!(
        "{}smtp_user = \"ops\"\nsmtp_password_file = \"{}\"\n",
        channels(&http, &smtp, "/hook"),
        dir.path().join("no-such-password").display()
    );
    let file = settings(dir.path(), None, "disk_percent = 1\n", &alerts);

    let (ok, report) = watch(&op, &file);
    assert!(!ok, "a channel that cannot send fails the run: {report}");
    let app = &report["apps"][0];
    assert!(
        app["errors"].as_array().unwrap().iter().any(|e| e
            .as_str()
            .unwrap()
            .starts_with("the email channel: [alerts] smtp_password_file ")),
        "{report}"
    );
    let sent = app["sent"].as_array().unwrap();
    let by = |name: &str| sent.iter().find(|s| s["channel"] == name).unwrap().clone();
    assert_eq!(by("webhook")["ok"], true, "{report}");
    assert_eq!(by("email")["ok"], false, "{report}");
    assert_eq!(http.received().len(), 1);
    assert!(smtp.received().is_empty());
}

/// A tmpfs of a few KiB, filled: writes there fail with "No space left".
struct FullDisk {
    dir: PathBuf,
}

impl FullDisk {
    fn mount(dir: PathBuf) -> FullDisk {
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "mount -t tmpfs -o size=16k tmpfs '{d}' && mkdir '{d}/state' && {{ dd if=/dev/zero of='{d}/fill' bs=1k count=64 2>/dev/null || true; }}",
                d = dir.display()
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe_output(&out));
        FullDisk { dir }
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.join("fill")).unwrap();
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// The state file's disk is full: the run keeps its state in the fallback
/// (memory on a host), so the next run does not tell the same problem
/// again; once the disk has room, the state is back in its place and the
/// fallback gone.
#[test]
fn a_full_disk_keeps_the_state_in_memory_so_nothing_is_told_twice() {
    let http = Receiver::http();
    let smtp = Receiver::smtp("plain", None, None);
    let op = Operator::new();
    let dir = tempfile::tempdir().unwrap();
    let full = FullDisk::mount(dir.path().join("full"));
    let state = full.dir.join("state/shop.json");
    let fallback = dir.path().join("run/shop.json");
    let file = settings(
        dir.path(),
        None,
        "disk_percent = 1\n",
        &channels(&http, &smtp, "/hook"),
    );
    let text = std::fs::read_to_string(&file).unwrap().replace(
        &format!(
            "state = \"{}\"",
            dir.path().join("state/shop.json").display()
        ),
        &format!(
            "state = \"{}\"\nstate_fallback = \"{}\"",
            state.display(),
            fallback.display()
        ),
    );
    std::fs::write(&file, text).unwrap();

    let (ok, report) = watch(&op, &file);
    assert!(!ok, "a state not saved in its place is an error: {report}");
    let errors = report["apps"][0]["errors"].to_string();
    assert!(
        errors.contains("No space left on device") && errors.contains("kept in"),
        "{report}"
    );
    assert!(!state.exists());
    assert!(fallback.exists());
    assert_eq!(http.received().len(), 1);

    // The next run reads the fallback: the open problem is not told again.
    watch(&op, &file);
    assert_eq!(http.received().len(), 1, "told twice");
    assert_eq!(smtp.received().len(), 1, "told twice");

    full.free();
    let (ok, report) = watch(&op, &file);
    assert!(ok, "{report}");
    assert_eq!(http.received().len(), 1, "told twice");
    assert!(state.exists(), "the state is back in its place");
    assert!(!fallback.exists(), "the fallback is gone once not needed");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert!(saved["open"]["disk:/"]["since"].is_string(), "{saved}");
}
