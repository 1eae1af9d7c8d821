//! Tier 2: real "fresh VPSes" (Debian 13 under QEMU, see tests/support/vm.rs),
//! driven by the real binary and checked from outside with real clients.
//! Minutes, not seconds: `tests/run` runs these after the tier-1 tests,
//! side by side, each in its own process (`cargo test --test vm --
//! --ignored --exact NAME`).
//!
//! Two things on a hardened host shape these tests: ufw rate-limits SSH (the
//! 6th new connection from one address within 30 s is dropped), so checks
//! share connections and every connection waits for room under that limit
//! (tests/support/ssh_budget.rs); fail2ban bans after 5 failed logins, so the
//! refused-login checks come last and are few.

#[path = "vm/backups.rs"]
mod backups;
#[path = "vm/export.rs"]
mod export;
#[path = "vm/ipv6_firewall.rs"]
mod ipv6_firewall;
#[path = "vm/ssh_audit.rs"]
mod ssh_audit;
mod support;
#[path = "vm/ubuntu_like.rs"]
mod ubuntu_like;
#[path = "vm/watch.rs"]
mod watch;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::*;

/// Prints how long each stage of a long test took (to stderr, which
/// `--nocapture` shows), so the README's CI figures come from real runs.
struct Stages(std::cell::Cell<std::time::Instant>);

impl Stages {
    fn start() -> Stages {
        Stages(std::cell::Cell::new(std::time::Instant::now()))
    }

    fn done(&self, stage: &str) {
        let now = std::time::Instant::now();
        eprintln!("stage {stage}: {:.0} s", (now - self.0.get()).as_secs_f64());
        self.0.set(now);
    }
}

/// The play report of a `--json` run of one host.
fn play_report(out: &Output) -> Value {
    json(out)["hosts"][0]["plays"][0].clone()
}

/// `curl` from this machine (the internet's side of the VM).
fn curl(args: &[&str]) -> Output {
    std::process::Command::new("curl")
        .args(["-sS", "--max-time", "8"])
        .args(args)
        .output()
        .expect("curl runs")
}

/// `ufw_rules` of a converged host: SSH (rate-limited), HTTP and HTTPS, both families.
const ONLY_SSH_HTTP_HTTPS: [&str; 6] = [
    "22/tcp LIMIT",
    "80/tcp ALLOW",
    "443/tcp ALLOW",
    "22/tcp (v6) LIMIT",
    "80/tcp (v6) ALLOW",
    "443/tcp (v6) ALLOW",
];

/// The firewall's rules as `To Action` pairs, from `ufw status`.
fn ufw_rules(status: &str) -> Vec<String> {
    status
        .lines()
        .skip_while(|l| !l.starts_with("--"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            // "22/tcp (v6) LIMIT IN Anywhere (v6) # ssh" -> "22/tcp (v6) LIMIT"
            match words.get(1) {
                Some(&"(v6)") => words[..3].join(" "),
                _ => words[..2].join(" "),
            }
        })
        .collect()
}

/// Everything about the admin's view of the host, in ONE connection.
const ADMIN_CHECKS: &str = r#"PATH=$PATH:/usr/sbin:/sbin
sudo -n true && echo "sudo ok"
echo "groups: $(id -nG)"
sudo sshd -T | grep -E '^(port|permitrootlogin|passwordauthentication|kbdinteractiveauthentication|maxauthtries|x11forwarding) '
sudo ufw status verbose
sudo fail2ban-client status sshd | head -1
docker version --format 'docker server {{.Server.Version}}'
docker compose version
sudo nginx -t 2>&1
echo "worker shutdown timeout: $(sudo nginx -T 2>/dev/null | grep -c '^worker_shutdown_timeout 5m;$')"
curl -s -o /dev/null -w 'unknown host on :80 -> %{http_code}\n' -H 'Host: unknown.example' http://127.0.0.1/ || true
echo "active: $(sudo systemctl is-active fail2ban nginx docker systemd-timesyncd | tr '\n' ' ')"
echo "boot revert: $(sudo systemctl is-enabled vpsup-sshd-boot-revert)"
echo "swap: $(swapon --show=NAME --noheadings)"
echo "ip_forward=$(sysctl -n net.ipv4.ip_forward) kptr_restrict=$(sysctl -n kernel.kptr_restrict)"
sudo grep -c 'VPSUP DOCKER-USER' /etc/ufw/after.rules | sed 's/^/docker-user markers: /'
"#;

/// An image `vpsup-probe` whose busybox httpd serves "hello from the
/// container" from /www (no registry here: made from busybox-static).
pub const IMPORT_PROBE_IMAGE: &str = r#"sudo apt-get install -y -qq -o DPkg::Lock::Timeout=300 busybox-static >/dev/null 2>&1
root=$(mktemp -d); mkdir -p "$root/bin" "$root/www"
cp /bin/busybox "$root/bin/"; echo "hello from the container" > "$root/www/index.html"
tar -C "$root" -c . | docker import - vpsup-probe >/dev/null
"#;

/// A container publishing 5432 on all interfaces, as a careless compose file
/// would (the image from IMPORT_PROBE_IMAGE).
const PUBLISH_A_PORT: &str = r#"docker run -d --name probe -p 5432:5432 vpsup-probe /bin/busybox httpd -f -p 5432 -h /www >/dev/null
for i in $(seq 20); do curl -fsS http://127.0.0.1:5432/ && exit 0; sleep 1; done
exit 1
"#;

#[test]
#[ignore = "tier 2: boots a VM (minutes); tests/run runs it"]
fn init_hardens_a_fresh_vps_end_to_end() {
    let clock = Stages::start();
    let vm = TestVm::boot();
    clock.done("boot");
    let op = Operator::facing_vm();
    let target = format!("root@127.0.0.1:{}", vm.ssh_port);
    let key = vm.root_key().display().to_string();

    // Facts of a real systemd host, in one round trip: with the key, then with
    // the root password as a provider's welcome mail gives it.
    let out = op.vpsup(&["facts", &target, "-i", &key, "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let f = json(&out)["hosts"][0]["facts"].clone();
    assert_eq!(
        (
            f["os_id"].as_str(),
            f["os_version"].as_str(),
            f["os_codename"].as_str()
        ),
        (Some("debian"), Some("13"), Some("trixie"))
    );
    assert_eq!(f["init_system"], "systemd");
    assert_eq!(f["public_ipv4"], "198.51.100.15");
    assert_eq!(f["sudo"], "root");
    assert!(
        f["docker"].is_null() && f["nginx"].is_null() && f["ufw"].is_null(),
        "{f}"
    );
    let password = format!("{}\n", vm.root_password());
    let out = op.vpsup_with_stdin(
        &["facts", &target, "--password-stdin", "--json"],
        password.as_bytes(),
    );
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(json(&out)["hosts"][0]["facts"]["hostname"], "vps");

    // A user whose sudo asks for a password, or who has no sudo at all,
    // cannot init, and is told why and what to do; nothing changes.
    vm.root(
        "useradd -m -s /bin/sh plain && mkdir -p ~plain/.ssh && cp /root/.ssh/authorized_keys ~plain/.ssh/ && chown -R plain: ~plain/.ssh",
    );
    let plain = format!("plain@127.0.0.1:{}", vm.ssh_port);
    let out = op.vpsup(&["init", &plain, "-i", &key]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(
        text(&out).contains("plain@127.0.0.1: sudo asks for a password, and vpsup never types one"),
        "{}",
        text(&out)
    );
    vm.root("mv /usr/bin/sudo /usr/bin/sudo.away");
    let out = op.vpsup(&["init", &plain, "-i", &key]);
    vm.root("mv /usr/bin/sudo.away /usr/bin/sudo");
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(
        text(&out).contains("plain is not root and sudo is not installed, so vpsup cannot become root. Connect as root"),
        "{}",
        text(&out)
    );
    assert!(!op.project.path().join("vpsup.toml").exists());

    // The real thing.
    let out = op.vpsup(&["init", &target, "-i", &key, "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let first = play_report(&out);
    assert_eq!(first["recap"]["failed"], 0, "{first}");
    assert!(first["recap"]["changed"].as_u64().unwrap() > 20, "{first}");
    assert!(
        stderr(&out).contains("created vpsup.toml"),
        "{}",
        stderr(&out)
    );
    let config = std::fs::read_to_string(op.project.path().join("vpsup.toml")).unwrap();
    assert!(
        config.contains("user = \"deploy\"") && config.contains(&format!("port = {}", vm.ssh_port)),
        "{config}"
    );
    eprintln!(
        "first init: {} ms, {} round trips",
        first["elapsed_ms"], first["round_trips"]
    );

    // The admin's view, with real clients, in one connection.
    let root_key = vm.root_key();
    let out = vm.ssh("deploy", &root_key, ADMIN_CHECKS, &[]);
    let seen = text(&out);
    assert!(out.status.success(), "{seen}");
    for expected in [
        "sudo ok",
        "permitrootlogin no",
        "passwordauthentication no",
        "kbdinteractiveauthentication no",
        "maxauthtries 3",
        "x11forwarding no",
        "Status: active",
        "Default: deny (incoming), allow (outgoing), deny (routed)",
        "Status for the jail: sshd",
        "Docker Compose version",
        "nginx: configuration file /etc/nginx/nginx.conf test is successful",
        "worker shutdown timeout: 1",
        "unknown host on :80 -> 000",
        "active: active active active active",
        "boot revert: enabled",
        "swap: /swapfile",
        "ip_forward=1 kptr_restrict=2",
        "docker-user markers: 2",
    ] {
        assert!(seen.contains(expected), "missing {expected:?} in:\n{seen}");
    }
    assert!(
        seen.contains("groups: deploy") && seen.contains(" sudo") && seen.contains(" docker"),
        "{seen}"
    );
    assert_eq!(
        ufw_rules(&seen),
        ONLY_SSH_HTTP_HTTPS,
        "only SSH, HTTP and HTTPS are open:\n{seen}"
    );

    // From outside: an unknown Host gets no site.
    let out = curl(&[
        "-H",
        "Host: unknown.example",
        &format!("http://127.0.0.1:{}/", vm.http_port),
    ]);
    assert_eq!(
        out.status.code(),
        Some(52),
        "empty reply expected: {}",
        text(&out)
    );

    // Docker's ufw bypass is closed: a container publishing 5432 on 0.0.0.0
    // answers inside the VM but not from outside...
    let out = vm.ssh(
        "deploy",
        &root_key,
        &format!("set -e\n{IMPORT_PROBE_IMAGE}{PUBLISH_A_PORT}"),
        &[],
    );
    assert!(
        text(&out).contains("hello from the container"),
        "{}",
        text(&out)
    );
    let probe_url = format!("http://127.0.0.1:{}/", vm.probe_port);
    let out = curl(&[&probe_url]);
    assert!(
        !out.status.success() && !text(&out).contains("hello"),
        "reachable from outside: {}",
        text(&out)
    );
    // ...until the port is explicitly routed (so the block above is the firewall's doing).
    let out = vm.ssh(
        "deploy",
        &root_key,
        "sudo ufw route allow proto tcp from any to any port 5432 >/dev/null && echo routed",
        &[],
    );
    assert!(text(&out).contains("routed"), "{}", text(&out));
    let out = curl(&[&probe_url]);
    assert!(
        text(&out).contains("hello from the container"),
        "{}",
        text(&out)
    );

    // The safety net, for real: armed with a short delay, a tampered drop-in
    // is put back and sshd reloaded when nobody confirms.
    let out = vm.ssh(
        "deploy",
        &root_key,
        r#"sudo ufw route delete allow proto tcp from any to any port 5432 >/dev/null
docker rm -f probe >/dev/null
f=/etc/ssh/sshd_config.d/00-vpsup.conf; before=$(sudo sha256sum $f)
sudo /usr/local/lib/vpsup/sshd-arm 3
echo "armed: $(sudo systemctl is-active vpsup-sshd-revert.timer)"
echo 'MaxAuthTries 2' | sudo tee -a $f >/dev/null
sleep 12
[ "$(sudo sha256sum $f)" = "$before" ] && echo "drop-in restored"
sudo test -e /var/lib/vpsup/sshd-revert || echo "saved copy removed"
echo "timer after: $(sudo systemctl is-active vpsup-sshd-revert.timer)"
sudo sshd -T | grep '^maxauthtries'"#,
        &[],
    );
    let seen = text(&out);
    for expected in [
        "armed: active",
        "drop-in restored",
        "saved copy removed",
        "timer after: inactive",
        "maxauthtries 3",
    ] {
        assert!(seen.contains(expected), "missing {expected:?} in:\n{seen}");
    }

    clock.done("init and the admin's checks");

    // Certificates: issued through the VM's nginx, then renewed by the host's
    // own timer, without the operator.
    let pebble = certificates_renew_on_the_host(&vm, &op, &root_key);
    clock.done("certificates");

    // Converged: a second init (from vpsup.toml, as the admin) changes
    // nothing, in one connection and one probe; --check agrees.
    let out = op.vpsup(&["init", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let second = play_report(&out);
    assert_eq!(second["recap"]["changed"], 0, "{second}");
    assert_eq!(second["round_trips"], 1, "{second}");
    eprintln!(
        "no-op init: {} ms, {} round trip",
        second["elapsed_ms"], second["round_trips"]
    );
    let out = op.vpsup(&["init", "--check", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(play_report(&out)["recap"]["changed"], 0);

    // An extra port opens with --allow (remembered in vpsup.toml), and closes
    // again once it is dropped from there; SSH, 80 and 443 stay.
    let open_ports = || {
        let out = vm.ssh("deploy", &root_key, "sudo ufw status", &[]);
        assert!(out.status.success(), "{}", text(&out));
        ufw_rules(&text(&out))
    };
    let out = op.vpsup(&["init", "--allow", "8443", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(play_report(&out)["recap"]["changed"], 1);
    assert!(open_ports().contains(&"8443/tcp ALLOW".to_string()));
    let config_path = op.project.path().join("vpsup.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    assert!(config.contains("allow_ports = [\"8443/tcp\"]"), "{config}");
    std::fs::write(
        &config_path,
        config.replace("allow_ports = [\"8443/tcp\"]\n", ""),
    )
    .unwrap();
    let out = op.vpsup(&["init", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(play_report(&out)["recap"]["changed"], 1);
    assert_eq!(open_ports(), ONLY_SSH_HTTP_HTTPS);

    // [init] ssh_users naming someone with no account on the host: refused
    // before anything changes, and the config says so.
    let config = std::fs::read_to_string(&config_path).unwrap();
    let with_alice = match config.contains("[init]\n") {
        true => config.replacen("[init]\n", "[init]\nssh_users = [\"alice\"]\n", 1),
        false => format!("{config}\n[init]\nssh_users = [\"alice\"]\n"),
    };
    std::fs::write(&config_path, with_alice).unwrap();
    let out = op.vpsup(&["init", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let refused = play_report(&out);
    assert_eq!(
        (
            refused["recap"]["changed"].as_u64(),
            refused["recap"]["failed"].as_u64()
        ),
        (Some(0), Some(1)),
        "{refused}"
    );
    assert!(
        describe_output(&out)
            .contains("[init] ssh_users names alice, who has no account on this host"),
        "{}",
        describe_output(&out)
    );
    std::fs::write(&config_path, config).unwrap();

    // The main job: the compose stack behind nginx over HTTPS.
    let bind = TestBind::start("vpsup.test");
    clock.done("init converged, --allow");
    deploy_serves_the_stack_over_https(&vm, &op, &root_key, &pebble, &bind);
    clock.done("deploy");
    two_apps_share_one_host(&vm, &op, &root_key, &pebble);
    clock.done("two apps");
    an_earlier_layout_is_taken_over(&vm, &op, &root_key, &pebble);
    clock.done("an earlier layout");

    // The shop stack as Kubernetes manifests, measured on the host: see
    // tests/vm/export.rs.
    export::export_reads_the_deployed_stack(&vm, &op, &root_key);
    clock.done("export");

    // The host's own checks and alerts, by hand and by its timer: see
    // tests/vm/watch.rs. (Its deploys still need the DNS server.)
    watch::watch_alerts_on_the_host(&vm, &op, &root_key);
    clock.done("watch");
    drop(bind);

    // Backups of a real PostgreSQL, Redis and MariaDB beside those apps: see
    // tests/vm/backups.rs.
    backups::backups_are_proven_by_restores(&vm, &op, &root_key);
    clock.done("backups");

    // Root and password logins are closed (last: fail2ban counts failures).
    let out = vm.ssh("root", &root_key, "true", &[]);
    assert!(!out.status.success(), "root logged in: {}", text(&out));
    assert!(
        text(&out).contains("Permission denied (publickey)"),
        "{}",
        text(&out)
    );
    let out = vm.ssh(
        "root",
        &root_key,
        "true",
        &[
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
        ],
    );
    assert!(
        text(&out).contains("Permission denied (publickey)"),
        "sshd must offer no password method: {}",
        text(&out)
    );
}

/// After init: a certificate issued over SSH through the VM's nginx (HTTP-01,
/// Pebble validating from outside), `renew-certs` from the operator (which
/// hands the host its settings), then the host's timer service and a forced
/// `renew-certs --local` on the host itself; `status` reports it.
fn certificates_renew_on_the_host(vm: &TestVm, op: &Operator, key: &Path) -> TestPebble {
    // Pebble resolves every name to 127.0.0.1 and validates on the port that
    // QEMU forwards to the VM's :80.
    let pebble = TestPebble::start(vm.http_port);
    let pebble_port = pebble
        .directory
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/dir");
    let config_path = op.project.path().join("vpsup.toml");
    let mut config = std::fs::read_to_string(&config_path).unwrap();
    config.push_str(&format!(
        "\n[acme]\nemail = \"ops@example.test\"\ndirectory = \"{}\"\nextra_root = \"{}\"\n",
        pebble.directory,
        pebble.tls_root.display()
    ));
    std::fs::write(&config_path, config).unwrap();
    let acme = vpsup::acme::certs::AcmeSettings {
        directory: pebble.directory.clone(),
        email: "ops@example.test".into(),
        extra_root: Some(pebble.tls_root.clone()),
        profile: None,
        store_dir: "/etc/vpsup/acme".into(),
        webroot: "/var/lib/vpsup/acme".into(),
        dns: None,
    };
    let names = vec!["app.vpsup.test".to_string()];
    let issued = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let target = vpsup::transport::ssh::SshTarget {
            host: "127.0.0.1".into(),
            port: vm.ssh_port,
            user: "deploy".into(),
            identity_files: vec![key.to_path_buf()],
            identities_only: true,
            known_hosts: op.ssh_dir().join("known_hosts"),
            connect_timeout: Duration::from_secs(10),
        };
        let (transport, _) =
            vpsup::transport::ssh::SshTransport::connect(&target, &Default::default())
                .await
                .unwrap();
        let certs = vpsup::acme::certs::Certs::new(&transport, &acme);
        let outcome = certs
            .ensure(&names, vpsup::acme::store::ChallengeKind::Http01, false)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", pebble.log()));
        transport.close().await;
        outcome
    });
    assert_eq!(issued.action, vpsup::acme::certs::Action::Issued);

    // Certificates, but no settings for the timer yet: the host's own run
    // fails (rather than "succeeding" while they expire), and status says why
    // the host does not renew by itself.
    let out = vm.ssh(
        "deploy",
        key,
        "sudo /usr/local/bin/vpsup renew-certs --local; echo \"exit=$?\"",
        &[],
    );
    assert!(
        text(&out).contains("exit=1") && text(&out).contains("cannot renew them on its own"),
        "{}",
        text(&out)
    );
    let out = op.vpsup(&["status", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let renewal = json(&out)["hosts"][0]["renewal"].clone();
    assert_eq!(renewal["mode"], "elsewhere", "{renewal}");
    assert!(
        renewal["why_not"]
            .as_str()
            .unwrap_or("")
            .contains("no settings"),
        "{renewal}"
    );

    // The operator's run keeps it and hands the host the settings its timer needs.
    let out = op.vpsup(&["renew-certs", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let host = json(&out)["hosts"][0].clone();
    assert_eq!(host["host_settings"], "written", "{host}");
    assert!(
        host["certificates"][0]["action"]
            .as_str()
            .unwrap()
            .starts_with("ok (renews from"),
        "{host}"
    );

    // On the host: the CA is reached at the same URL as from here (a test
    // proxy stands in for the internet), the timer is on, its service renews.
    let chain = format!("/etc/vpsup/acme/certs/{}/fullchain.pem", issued.name);
    let script = format!(
        r#"printf '[Socket]\nListenStream=127.0.0.1:{pebble_port}\n' | sudo tee /etc/systemd/system/test-ca.socket >/dev/null
printf '[Service]\nExecStart=/usr/lib/systemd/systemd-socket-proxyd 198.51.100.2:{pebble_port}\n' | sudo tee /etc/systemd/system/test-ca.service >/dev/null
sudo systemctl daemon-reload && sudo systemctl start test-ca.socket
echo "timer: $(sudo systemctl is-enabled vpsup-renew-certs.timer) $(sudo systemctl is-active vpsup-renew-certs.timer)"
sudo systemctl show -p RandomizedDelayUSec -p Persistent vpsup-renew-certs.timer
sudo systemctl start vpsup-renew-certs.service
echo "service result: $(sudo systemctl show -p Result --value vpsup-renew-certs.service)"
sudo journalctl -u vpsup-renew-certs.service --no-pager -o cat | grep -i 'app.vpsup.test'
before=$(sudo sha256sum {chain})
sudo /usr/local/bin/vpsup renew-certs --local --force && echo "local run ok"
[ "$(sudo sha256sum {chain})" != "$before" ] && echo "renewed on the host"
echo '--- chain'
sudo cat {chain}"#
    );
    let out = vm.ssh("deploy", key, &script, &[]);
    let seen = text(&out);
    for expected in [
        "timer: enabled active",
        "RandomizedDelayUSec=1d",
        "Persistent=yes",
        "service result: success",
        "local run ok",
        "renewed (--force)",
        "renewed on the host",
    ] {
        assert!(
            seen.contains(expected),
            "missing {expected:?} in:\n{seen}\n{}",
            pebble.log()
        );
    }
    // The renewed chain verifies against Pebble's issuing root.
    let chain_pem = seen.split("--- chain\n").nth(1).unwrap();
    let renewed = vpsup::acme::certinfo::CertInfo::from_pem_chain(chain_pem).unwrap();
    assert_eq!(renewed.names, names);
    assert_ne!(renewed.serial, issued.info.unwrap().serial);
    let dir = tempfile::tempdir().unwrap();
    let chain_file = dir.path().join("fullchain.pem");
    std::fs::write(&chain_file, chain_pem).unwrap();
    let verify = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(pebble.issuing_root())
        .arg("-untrusted")
        .arg(&chain_file)
        .arg(&chain_file)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify));

    // `status` says the host renews by itself, and what it holds.
    let out = op.vpsup(&["status", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let host = json(&out)["hosts"][0].clone();
    assert_eq!(host["renewal"]["mode"], "host-timer", "{host}");
    assert_eq!(host["renewal"]["last_result"], "success", "{host}");
    assert!(host["renewal"]["next_run"].is_string(), "{host}");
    assert_eq!(
        host["certificates"][0]["names"][0], "app.vpsup.test",
        "{host}"
    );
    assert_eq!(host["firewall"]["active"], true, "{host}");
    assert_eq!(host["facts"]["os_id"], "debian", "{host}");
    pebble
}

/// The test stack (tests/vm/stack: frontend, backend and a "database", each
/// built on the VM FROM scratch around a static busybox) as a project.
fn stack_project(op: &Operator) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/stack");
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", source.display()))
        .arg(op.project.path())
        .status()
        .unwrap();
    assert!(copy.success());
    for service in ["frontend", "backend", "db"] {
        std::fs::copy(
            "/bin/busybox",
            op.project.path().join(service).join("busybox"),
        )
        .expect("the static busybox (Debian package busybox-static; tests/setup installs it)");
    }
}

/// `vpsup deploy` end to end: DNS preflight through a real BIND, a
/// certificate from Pebble, three services built on the host, nginx routing
/// `/` and `/api/`, a generated secret, an unchanged redeploy, a one-file
/// redeploy, a broken release rolled back by the health gate, `vpsup
/// rollback`, and the deploy lock.
fn deploy_serves_the_stack_over_https(
    vm: &TestVm,
    op: &Operator,
    key: &Path,
    pebble: &TestPebble,
    bind: &TestBind,
) {
    stack_project(op);
    let config_path = op.project.path().join("vpsup.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let host_table = config
        .lines()
        .find(|l| l.starts_with("[hosts."))
        .unwrap()
        .to_string();
    let config = config.replace(
        &host_table,
        &format!(
            "{host_table}\nhttp_port = {}\nhttps_port = {}",
            vm.http_port, vm.https_port
        ),
    ) + &format!(
        r#"
[app]
name = "shop"
public_ports = "loopback"
dns_resolver = "127.0.0.1:{}"
health_timeout = 180
drain = "10s"

[app.secrets]
generate = ["DB_PASSWORD"]

[[sites]]
domain = "app.vpsup.test"
service = "frontend"
port = 8080
routes = [{{ path = "/api/", service = "backend", port = 8000, websockets = true }}]
"#,
        bind.port
    );
    // The final check verifies the chain: trust Pebble's issuing root too.
    let root = pebble.issuing_root();
    let roots = op.project.path().join("test-ca-roots.pem");
    let bundle = std::fs::read_to_string(&pebble.tls_root).unwrap()
        + &std::fs::read_to_string(&root).unwrap();
    std::fs::write(&roots, bundle).unwrap();
    let config = config.replace(
        &format!("extra_root = \"{}\"", pebble.tls_root.display()),
        &format!("extra_root = \"{}\"", roots.display()),
    );
    assert!(config.contains("test-ca-roots.pem"), "{config}");
    std::fs::write(&config_path, config).unwrap();
    let resolve = format!("app.vpsup.test:{}:127.0.0.1", vm.https_port);
    // Visitors: the page and the API back to back, and a 3 s request
    // always in flight.
    let site_addr: std::net::SocketAddr = format!("127.0.0.1:{}", vm.https_port).parse().unwrap();
    let visit = || {
        load::Load::start(
            site_addr,
            "app.vpsup.test",
            &root,
            &["/", "/api/", "/api/slow"],
            Duration::from_millis(100),
        )
    };
    let https = |path: &str| {
        let out = curl(&[
            "--cacert",
            root.to_str().unwrap(),
            "--resolve",
            &resolve,
            &format!("https://app.vpsup.test:{}{path}", vm.https_port),
        ]);
        text(&out)
    };

    // --check: what a first deploy would do, and nothing done (the first
    // deploy below still creates the secret). The certificate issued above
    // is not due: it is reused, not ordered again.
    let out = op.vpsup(&["deploy", "--check", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let pending = json(&out)["hosts"][0]["pending"].to_string();
    assert!(!pending.contains("certificate to issue"), "{pending}");
    for expected in [
        "new release",
        "secrets to generate: DB_PASSWORD",
        "nginx site files to install",
        "containers to start",
    ] {
        assert!(pending.contains(expected), "{expected:?} not in {pending}");
    }

    // First deploy: everything is built, issued and wired.
    let started = std::time::Instant::now();
    let out = op.vpsup(&["deploy", "--json"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        describe_output(&out),
        pebble.log()
    );
    let first = json(&out)["hosts"][0].clone();
    eprintln!(
        "first deploy: {:?} (whole command), {} round trips",
        started.elapsed(),
        first["round_trips"]
    );
    assert_eq!(first["changed"], true, "{first}");
    assert_eq!(
        first["secrets_created"],
        serde_json::json!(["DB_PASSWORD"]),
        "{first}"
    );
    let site = first["sites"][0].clone();
    assert_eq!(site["status"], 200, "{first}");
    assert_eq!(
        site["names"],
        serde_json::json!(["app.vpsup.test"]),
        "{first}"
    );
    assert!(site["days_left"].as_i64().unwrap() > 30, "{first}");
    let release_1 = first["release"].as_str().unwrap().to_string();
    assert!(https("/").contains("release: v1"), "{}", https("/"));
    let api = https("/api/");
    assert!(
        api.contains("vpsup test backend")
            && api.contains("db_password_set=yes")
            && api.contains("greeting=from-dotenv"),
        "{api}"
    );
    let redirect = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "-H",
        "Host: app.vpsup.test",
        &format!("http://127.0.0.1:{}/", vm.http_port),
    ]);
    assert!(
        text(&redirect).starts_with("301 https://app.vpsup.test/"),
        "{}",
        text(&redirect)
    );

    // The auditor's view of the deployed site (issue 14, finding 7): sslyze
    // finds it Mozilla-intermediate but for the test CA's certificate
    // (untrusted, and Pebble's lifetime is years), which vpsup does not choose.
    let problems = mozilla_intermediate_problems(vm.https_port, "app.vpsup.test");
    eprintln!("sslyze, Mozilla intermediate, on the VM's site: {problems:?}");
    assert!(
        problems
            .iter()
            .all(|(check, _)| TEST_CERTIFICATE_CHECKS.contains(&check.as_str())),
        "{problems:?}"
    );

    // The secret stays on the host: never in vpsup's output. The database
    // listens on loopback only.
    assert!(
        stderr(&out).contains("./state is mounted writable, so it is the app's data"),
        "{}",
        stderr(&out)
    );
    let seen = text(&vm.ssh(
        "deploy",
        key,
        "sudo cat /srv/vpsup/shop/shared/secrets.env; sudo ss -Hltn 'sport = :5432'; echo '--- state'; sudo cat /srv/vpsup/shop/data/state/seed.txt /srv/vpsup/shop/data/state/starts",
        &[],
    ));
    let first_starts: String = seen
        .split_once("--- state\n")
        .unwrap()
        .1
        .lines()
        .filter(|l| l.starts_with("started "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        seen.contains("seeded from the project") && first_starts.lines().count() == 1,
        "{seen}"
    );
    let secret = seen
        .lines()
        .find_map(|l| l.strip_prefix("DB_PASSWORD="))
        .unwrap()
        .to_string();
    assert_eq!(secret.len(), 40);
    assert!(!text(&out).contains(&secret));
    assert!(
        seen.contains("127.0.0.1:5432") && !seen.contains("0.0.0.0:5432"),
        "{seen}"
    );

    // Unchanged: one probe, nothing uploaded, changed=0.
    let started = std::time::Instant::now();
    let out = op.vpsup(&["deploy", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    eprintln!(
        "unchanged redeploy: {:?} (whole command)",
        started.elapsed()
    );
    let again = json(&out)["hosts"][0].clone();
    assert_eq!(
        (again["changed"].clone(), again["uploaded"].clone()),
        (false.into(), 0.into()),
        "{again}"
    );
    assert_eq!(
        again["round_trips"], 1,
        "one connection, one probe: {again}"
    );
    assert_eq!(again["release"], release_1.as_str());
    assert!(!text(&out).contains(&secret));

    // A changed release, under load: the page and the backend's version
    // travel (and release.json, whose fingerprints record them). Visitors
    // (the page, the API, a 3 s request in flight) see no failure: every
    // answer is a 200 from the old or the new release; a WebSocket opened
    // before stays open through the switch and is closed once the drain
    // period (10 s) ends, when the old instances stop.
    let index = op.project.path().join("frontend/www/index.html");
    let page = std::fs::read_to_string(&index).unwrap();
    std::fs::write(&index, page.replace("release: v1", "release: v2")).unwrap();
    let version = op.project.path().join("backend/srv/version");
    std::fs::write(&version, "v2\n").unwrap();
    let ws = load::websocket(site_addr, "app.vpsup.test", &root, "/api/ws");
    let visitors = visit();
    let out = op.vpsup(&["deploy", "--json"]);
    let seen = visitors.stop();
    assert!(out.status.success(), "{}", describe_output(&out));
    let ws = ws.join().unwrap().expect("the WebSocket opened");
    let second = json(&out)["hosts"][0].clone();
    eprintln!(
        "changed redeploy under load: {} ms, {} round trips; visitors: {}; switch: {}",
        second["elapsed_ms"],
        second["round_trips"],
        seen.summary(),
        second["switches"]
    );
    assert_eq!(second["uploaded"], 3, "{second}");
    let release_2 = second["release"].as_str().unwrap().to_string();
    assert_ne!(release_2, release_1);
    no_failed_visit(&seen, &describe_output(&out));
    assert!(seen.saw("/", "release: v1") && seen.saw("/", "release: v2"));
    assert!(seen.saw("/api/", "version=v1") && seen.saw("/api/", "version=v2"));
    assert!(
        seen.saw("/api/slow", "slow answer"),
        "no slow answer came back"
    );
    assert!(https("/").contains("release: v2"));
    // The switch: the first answer of the new release.
    let switched = seen
        .samples
        .iter()
        .find(|s| s.body.contains("release: v2"))
        .unwrap()
        .at;
    let after: Vec<&String> = ws
        .messages
        .iter()
        .filter(|(at, _)| *at > switched)
        .map(|(_, m)| m)
        .collect();
    assert!(
        after.len() >= 5 && after.iter().all(|m| m.ends_with("version=v1")),
        "the WebSocket to the old backend kept going after the switch: {after:?}"
    );
    assert!(
        ws.closed.duration_since(switched) >= Duration::from_secs(9),
        "closed {:?} after the switch, before the 10 s drain",
        ws.closed.duration_since(switched)
    );
    let switch = second["switches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["domain"] == "app.vpsup.test")
        .cloned()
        .unwrap_or_else(|| panic!("no switch reported: {second}"));
    assert!(switch["cut"].as_u64().unwrap() >= 1, "{switch}");
    assert!(switch["drain_ms"].as_u64().unwrap() >= 9_500, "{switch}");

    // A backend that fails its health check, under load: never served, v2
    // keeps serving, no visitor sees a failure.
    std::fs::write(op.project.path().join("backend/srv/FAIL"), "").unwrap();
    let visitors = visit();
    let out = op.vpsup(&["deploy"]);
    let seen = visitors.stop();
    eprintln!("failing release under load: visitors: {}", seen.summary());
    no_failed_visit(&seen, &describe_output(&out));
    assert!(
        !seen.saw("/api/", "version=v1"),
        "the old release answered again"
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(
        text(&out).contains("is not healthy")
            && text(&out).contains(&format!("release {release_2} runs again")),
        "{}",
        describe_output(&out)
    );
    let (page, api) = (https("/"), https("/api/"));
    assert!(
        page.contains("release: v2") && api.contains("vpsup test backend"),
        "{page}\n{api}\nafter:\n{}",
        describe_output(&out)
    );
    std::fs::remove_file(op.project.path().join("backend/srv/FAIL")).unwrap();

    // A release whose containers replaced v2's but that cannot be served
    // (the reload fails): v2's containers run again and stay current.
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        config.replace(
            "[acme]\n",
            "[acme]\nreload = \"echo reload refused >&2; exit 3\"\n",
        ),
    )
    .unwrap();
    let v2_page = std::fs::read_to_string(&index).unwrap();
    assert!(v2_page.contains("release: v2"), "{v2_page}");
    std::fs::write(&index, v2_page.replace("release: v2", "release: v9")).unwrap();
    let out = op.vpsup(&["deploy"]);
    std::fs::write(&config_path, &config).unwrap();
    std::fs::write(&index, &v2_page).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(
        text(&out).contains("could not be served")
            && text(&out).contains("reload refused")
            && text(&out).contains(&format!("release {release_2} runs again")),
        "{}",
        describe_output(&out)
    );
    assert!(https("/").contains("release: v2"), "{}", https("/"));

    // `vpsup rollback`, under load: v1 again, no visitor sees a failure.
    let visitors = visit();
    let out = op.vpsup(&["rollback"]);
    let seen = visitors.stop();
    eprintln!("rollback under load: visitors: {}", seen.summary());
    no_failed_visit(&seen, &describe_output(&out));
    assert!(seen.saw("/", "release: v1") && seen.saw("/", "release: v2"));
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(
        text(&out).contains(&format!(
            "rolled back from release {release_2} to {release_1}"
        )),
        "{}",
        text(&out)
    );
    assert!(https("/").contains("release: v1"), "{}", https("/"));

    // Two deploys at once: the second is refused by the lock.
    let first = op.spawn(&["deploy"], b"");
    let second = op.spawn(&["deploy"], b"");
    let outs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    let refused = outs
        .iter()
        .filter(|o| text(o).contains("app shop is locked by"))
        .count();
    let ok = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(
        (ok, refused),
        (1, 1),
        "{}\n---\n{}",
        text(&outs[0]),
        text(&outs[1])
    );
    assert!(https("/").contains("release: v2"));

    // `status` shows the last deploy, the app's containers, and --check
    // finds nothing to change.
    let out = op.vpsup(&["status", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let host = json(&out)["hosts"][0].clone();
    assert_eq!(host["deploys"][0]["app"], "shop", "{host}");
    assert!(
        host["deploys"][0]["by"]
            .as_str()
            .unwrap()
            .contains("(vpsup deploy)"),
        "{host}"
    );
    let containers = host["containers"].to_string();
    assert!(
        containers.contains("shop-backend-1") && containers.contains("shop-db-1"),
        "{host}"
    );
    let out = op.vpsup(&["deploy", "--check", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let check = json(&out)["hosts"][0].clone();
    assert_eq!(check["pending"], serde_json::json!([]), "{check}");

    // The db's bind mount ./state is the app's data: after two more
    // deploys that restart the db and a rollback, what it wrote is all
    // there, and no release holds any of it.
    let start = op.project.path().join("db/start");
    let script = std::fs::read_to_string(&start).unwrap();
    std::fs::write(&start, format!("{script}# v2\n")).unwrap();
    let out = op.vpsup(&["deploy"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    std::fs::write(&start, format!("{script}# v3\n")).unwrap();
    let out = op.vpsup(&["deploy"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let out = op.vpsup(&["rollback"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let seen = text(&vm.ssh(
        "deploy",
        key,
        "sudo cat /srv/vpsup/shop/data/state/starts; echo '--- in releases:'; sudo find /srv/vpsup/shop/releases -name starts",
        &[],
    ));
    let (starts, in_releases) = seen.split_once("--- in releases:").unwrap();
    assert!(
        starts.starts_with(&first_starts)
            && starts.lines().count() >= first_starts.lines().count() + 3,
        "first:\n{first_starts}\nnow:\n{seen}"
    );
    assert!(in_releases.trim().is_empty(), "{seen}");

    // The app moves to `strategy = "recreate"` (the site's services
    // replaced in place, as before blue/green): the stages after this one
    // run the in-place path. With VPSUP_VM_BENCH=1 (two more deploys, so
    // not in CI), the benchmark (README, "Zero-downtime deploys"): the same
    // changed deploy under the same load, blue/green and then in place.
    let bench = std::env::var("VPSUP_VM_BENCH").is_ok_and(|v| v == "1");
    let changed_deploy = |marker: &str| {
        let page = std::fs::read_to_string(&index).unwrap();
        let page: String = page
            .lines()
            .map(|l| {
                if l.starts_with("release: ") {
                    format!("release: {marker}")
                } else {
                    l.to_string()
                }
            })
            .map(|l| l + "\n")
            .collect();
        std::fs::write(&index, page).unwrap();
        let visitors = visit();
        let out = op.vpsup(&["deploy", "--json"]);
        let seen = visitors.stop();
        assert!(out.status.success(), "{}", describe_output(&out));
        assert!(https("/").contains(&format!("release: {marker}")));
        (json(&out)["hosts"][0]["elapsed_ms"].clone(), seen)
    };
    let blue_green = bench.then(|| changed_deploy("b1"));
    if let Some((_, seen)) = &blue_green {
        no_failed_visit(seen, "a blue/green deploy");
    }
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        format!("{config}\n[app.services.frontend]\nstrategy = \"recreate\"\n\n[app.services.backend]\nstrategy = \"recreate\"\n"),
    )
    .unwrap();
    // The first deploy on "recreate" moves the services from the slot to
    // the app's project on their own ports: served once healthy, like a
    // switch. The second replaces them in place, as every deploy did before.
    let (moved_ms, moved) = changed_deploy("r0");
    eprintln!(
        "moved from the slot to in place: {moved_ms} ms, visitors: {}",
        moved.summary()
    );
    no_failed_visit(&moved, "the move from the slot to in place");
    if let Some((blue_green_ms, blue_green)) = blue_green {
        let (recreate_ms, recreate) = changed_deploy("r1");
        eprintln!(
            "benchmark: a changed deploy under load: blue/green {blue_green_ms} ms, visitors: {}; recreate (as before) {recreate_ms} ms, visitors: {}",
            blue_green.summary(),
            recreate.summary()
        );
    }
}

/// Every visitor's answer was a 200 (else the failures and `context`).
fn no_failed_visit(seen: &load::LoadReport, context: &str) {
    let failed = seen.failed();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}\n{}",
        failed.len(),
        seen.samples.len(),
        failed.iter().take(10).collect::<Vec<_>>(),
        context
    );
}

/// `curl` over HTTPS to `domain` on the VM, trusting Pebble's issuing root
/// (the name must be on the certificate served).
fn https_to(vm: &TestVm, pebble: &TestPebble, domain: &str, path: &str) -> String {
    let out = curl(&[
        "--cacert",
        pebble.issuing_root().to_str().unwrap(),
        "--resolve",
        &format!("{domain}:{}:127.0.0.1", vm.https_port),
        &format!("https://{domain}:{}{path}", vm.https_port),
    ]);
    text(&out)
}

/// Writes `dir`/vpsup.toml for another project on the shop's host: the
/// shop's hosts and [acme], its DNS resolver, and `app` (the rest of an [app]
/// section, then its [[sites]]). Its path, for `--config`.
fn another_project(op: &Operator, dir: &Path, app: &str) -> String {
    let shop = std::fs::read_to_string(op.project.path().join("vpsup.toml")).unwrap();
    let (common, shop_app) = shop.split_once("\n[app]").unwrap();
    let resolver = shop_app
        .lines()
        .find(|l| l.starts_with("dns_resolver"))
        .unwrap();
    let path = dir.join("vpsup.toml");
    std::fs::write(
        &path,
        format!("{common}\n[app]\n{resolver}\nhealth_timeout = 180\n{app}"),
    )
    .unwrap();
    path.display().to_string()
}

/// A second project on the same host, as a portfolio beside an app: its own
/// app (`shop--eu`, whose name starts like `shop`'s site files once did),
/// site and certificate. Deploys and rollbacks of either leave the other
/// serving; a stack started by hand under the compose project `shop` is
/// never an orphan of vpsup's; the host renews both certificates.
fn two_apps_share_one_host(vm: &TestVm, op: &Operator, key: &Path, pebble: &TestPebble) {
    let eu = tempfile::tempdir().unwrap();
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(op.project.path().join("frontend"))
        .arg(eu.path())
        .status()
        .unwrap();
    assert!(copy.success());
    let index = eu.path().join("frontend/www/index.html");
    std::fs::write(&index, "eu shop: v1\n").unwrap();
    std::fs::write(
        eu.path().join("compose.yml"),
        "services:\n  web:\n    build: ./frontend\n    stop_grace_period: 1s\n",
    )
    .unwrap();
    let eu_config = another_project(
        op,
        eu.path(),
        "name = \"shop--eu\"\n\n[[sites]]\ndomain = \"eu.vpsup.test\"\nservice = \"web\"\nport = 8080\n",
    );
    let eu_config = eu_config.as_str();
    let shop_page = || https_to(vm, pebble, "app.vpsup.test", "/");
    let eu_page = || https_to(vm, pebble, "eu.vpsup.test", "/");
    let before = shop_page();
    // (The deploy stage left shop on its last release, "r0" or "r1".)
    assert!(before.contains("release: r"), "{before}");

    // A stack someone started by hand under the compose project `shop`.
    vm.ssh(
        "deploy",
        key,
        "docker run -d --name handmade --label com.docker.compose.project=shop vpsup-probe /bin/busybox sleep 100000",
        &[],
    );
    let out = op.vpsup(&["deploy", "--config", eu_config]);
    assert!(
        out.status.success(),
        "{}\n{}",
        describe_output(&out),
        pebble.log()
    );
    assert!(eu_page().contains("eu shop: v1"), "{}", eu_page());
    assert_eq!(shop_page(), before);

    // shop changes: eu's site and containers stay.
    let shop_index = op.project.path().join("frontend/www/index.html");
    let page = std::fs::read_to_string(&shop_index).unwrap();
    std::fs::write(&shop_index, format!("{page}shop v4\n")).unwrap();
    let out = op.vpsup(&["deploy"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(shop_page().contains("shop v4"), "{}", shop_page());
    assert!(eu_page().contains("eu shop: v1"), "{}", eu_page());

    // eu changes and rolls back: shop stays.
    std::fs::write(&index, "eu shop: v2\n").unwrap();
    let out = op.vpsup(&["deploy", "--config", eu_config]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(eu_page().contains("eu shop: v2"), "{}", eu_page());
    let out = op.vpsup(&["rollback", "--config", eu_config]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(eu_page().contains("eu shop: v1"), "{}", eu_page());
    assert!(shop_page().contains("shop v4"), "{}", shop_page());

    // shop rolls back: eu stays.
    let out = op.vpsup(&["rollback"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(!shop_page().contains("shop v4"), "{}", shop_page());
    assert!(eu_page().contains("eu shop: v1"), "{}", eu_page());

    // The host's renewal renews both, and both keep serving their own.
    let seen = text(&vm.ssh(
        "deploy",
        key,
        "sudo /usr/local/bin/vpsup renew-certs --local --force; echo \"exit=$?\"; docker ps -a --format '{{.Names}}' | sort; sudo ls /etc/vpsup/acme/renew.d",
        &[],
    ));
    assert!(seen.contains("exit=0"), "{seen}\n{}", pebble.log());
    for name in ["app.vpsup.test", "eu.vpsup.test"] {
        assert!(seen.contains(name), "{name} not renewed:\n{seen}");
    }
    // Each app's settings are kept apart for the host's timer.
    for settings in ["shop.toml", "shop--eu.toml"] {
        assert!(
            seen.lines().any(|l| l == settings),
            "{settings} missing:\n{seen}"
        );
    }
    // eu's web switches blue/green (its slot's project); shop's run in place.
    for containers in [
        &["handmade"][..],
        &["vpsup_blue-shop--eu-web-1", "vpsup_green-shop--eu-web-1"],
        &["vpsup-shop-db-1"],
        &["vpsup-shop-frontend-1"],
    ] {
        assert!(
            seen.lines().any(|l| containers.contains(&l)),
            "{containers:?} missing:\n{seen}"
        );
    }
    assert!(eu_page().contains("eu shop: v1"), "{}", eu_page());
    assert_eq!(shop_page(), before, "shop's page changed");
}

/// An app deployed by an earlier vpsup, made here by hand as it left them:
/// data in a bind mount inside the release, the compose project named as the
/// app, a named volume `legacy_vol`, the site file `vpsup-legacy--<domain>.conf`.
/// The next deploy moves the data out of the release, keeps the volume, retires
/// the old containers and renames the site; a rollback to the old release
/// still finds both.
fn an_earlier_layout_is_taken_over(vm: &TestVm, op: &Operator, key: &Path, pebble: &TestPebble) {
    let port = vpsup::deploy::ports::loopback_ports("legacy", &[("web".to_string(), 8080)])
        [&("web".to_string(), 8080)];
    let compose = "services:\n  web:\n    image: vpsup-probe\n    stop_grace_period: 1s\n    command: [\"/bin/busybox\", \"sh\", \"-c\", \"echo started >> /state/starts; exec /bin/busybox httpd -f -p 8080 -h /state\"]\n    volumes: [\"./state:/state\", \"vol:/vol\"]\nvolumes:\n  vol:\n";
    let release = "/srv/vpsup/legacy/releases/20260101T000000Z-00000000";
    let setup = format!(
        r#"set -e
sudo mkdir -p {release}/.vpsup
printf '%s' '{compose}' | sudo tee {release}/compose.yml >/dev/null
printf '%s' '{{"services":{{"web":{{"ports":["127.0.0.1:{port}:8080"]}}}}}}' | sudo tee {release}/vpsup.override.json >/dev/null
printf '%s' '{{"compose_files":["compose.yml","vpsup.override.json"],"env_files":[],"health":[["/starts",{port}]],"secrets":false}}' | sudo tee {release}/.vpsup/release.json >/dev/null
sudo ln -sfn releases/20260101T000000Z-00000000 /srv/vpsup/legacy/current
sudo docker compose -p legacy --project-directory {release} -f {release}/compose.yml -f {release}/vpsup.override.json up -d --wait
sudo docker compose -p legacy --project-directory {release} -f {release}/compose.yml exec -T web /bin/busybox sh -c 'echo kept > /vol/keep'
printf '# Managed by vpsup (templates/nginx_site.conf.tera): legacy.vpsup.test for app\n# legacy. Written by `vpsup deploy`; checked with `nginx -t` before any reload.\nserver {{ listen 80; server_name legacy.vpsup.test; location ^~ /.well-known/acme-challenge/ {{ root /var/lib/vpsup/acme; }} location / {{ return 404; }} }}\n' | sudo tee /etc/nginx/sites-enabled/vpsup-legacy--legacy.vpsup.test.conf >/dev/null
sudo nginx -t 2>&1 && sudo systemctl reload nginx
sudo cat {release}/state/starts
"#
    );
    let out = vm.ssh("deploy", key, &setup, &[]);
    assert!(out.status.success(), "{}", text(&out));

    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("compose.yml"), compose).unwrap();
    let config = another_project(
        op,
        project.path(),
        "name = \"legacy\"\n\n[app.services.web]\nstrategy = \"recreate\"\n\n[[sites]]\ndomain = \"legacy.vpsup.test\"\nservice = \"web\"\nport = 8080\nhealth = \"/starts\"\n",
    );
    let config = config.as_str();
    let out = op.vpsup(&["deploy", "--config", config]);
    assert!(
        out.status.success(),
        "{}\n{}",
        describe_output(&out),
        pebble.log()
    );
    let check = r#"echo "starts: $(sudo cat /srv/vpsup/legacy/data/state/starts | wc -l)"
echo "old release: $(sudo readlink /srv/vpsup/legacy/releases/20260101T000000Z-00000000/state)"
echo "volume: $(docker run --rm -v legacy_vol:/vol vpsup-probe /bin/busybox cat /vol/keep)"
echo "containers: $(docker ps -a --format '{{.Names}}' | grep legacy | sort | tr '\n' ' ')"
echo "sites: $(ls /etc/nginx/sites-enabled | grep legacy | tr '\n' ' ')"
"#;
    // What the earlier vpsup had rendered for that release (the same site).
    let old_site = format!(
        "sudo mkdir -p {release}/.vpsup/nginx && sudo cp /srv/vpsup/legacy/current/.vpsup/nginx/legacy.vpsup.test.conf {release}/.vpsup/nginx/\n{check}"
    );
    let seen = text(&vm.ssh("deploy", key, &old_site, &[]));
    for expected in [
        "starts: 2",
        "old release: /srv/vpsup/legacy/data/state",
        "volume: kept",
        "containers: vpsup-legacy-web-1 \n",
        "sites: vpsup-legacy.legacy.vpsup.test.conf \n",
    ] {
        assert!(seen.contains(expected), "{expected:?} in:\n{seen}");
    }
    let page = https_to(vm, pebble, "legacy.vpsup.test", "/starts");
    assert_eq!(page.lines().count(), 2, "{page}");

    // Back to the release the earlier vpsup made: its project, the same data.
    let out = op.vpsup(&["rollback", "--config", config]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let seen = text(&vm.ssh("deploy", key, check, &[]));
    for expected in ["starts: 3", "volume: kept", "containers: legacy-web-1 \n"] {
        assert!(seen.contains(expected), "{expected:?} in:\n{seen}");
    }
    let page = https_to(vm, pebble, "legacy.vpsup.test", "/starts");
    assert_eq!(page.lines().count(), 3, "{page}");
}

#[test]
#[ignore = "tier 2: boots a VM (minutes); tests/run runs it"]
fn init_by_password_survives_an_interruption_and_moves_ssh() {
    let vm = TestVm::boot();
    let op = Operator::facing_vm();
    // The operator's own key, found where ssh-keygen puts it by default.
    let operator_key = generate_key(&op.ssh_dir(), "id_ed25519", None);
    let target = format!("root@127.0.0.1:{}", vm.ssh_port);
    let new_port = vm.alt_ssh_port.to_string();
    // A vpsup built for another CPU (an arm64 ELF header is all init reads
    // before deciding): the host cannot run it, and init says so loudly.
    let arm64 = op.project.path().join("vpsup-aarch64");
    let mut header = b"\x7fELF\x02\x01\x01".to_vec();
    header.resize(18, 0);
    header.extend([183, 0]);
    header.resize(64, 0);
    std::fs::write(&arm64, header).unwrap();
    let args = [
        "init",
        target.as_str(),
        "--password-stdin",
        "--ssh-port",
        new_port.as_str(),
        "--host-binary",
        "vpsup-aarch64",
    ];
    let password = format!("{}\n", vm.root_password());
    // This VM behaves like an Ubuntu cloud image (tests/vm/ubuntu_like.rs):
    // socket-activated sshd, ufw inactive, a default user with the
    // operator's key and passwordless sudo, and, while init starts,
    // unattended-upgrades installing needrestart.
    ubuntu_like::make(&vm, &operator_key);

    // known_hosts as an older OpenSSH client leaves it: the host's ECDSA key
    // alone, for the port sshd is on and the one it moves to. Once hardened,
    // sshd offers its Ed25519 key alone; init records that one through its
    // checked session first, so no login meets a "changed" key.
    let scanned = ssh_budget::spend(1, || {
        Command::new("ssh-keyscan")
            .args(["-t", "ecdsa", "-p", &vm.ssh_port.to_string(), "127.0.0.1"])
            .output()
            .unwrap()
    });
    let ecdsa = String::from_utf8_lossy(&scanned.stdout)
        .lines()
        .find_map(|l| {
            l.split_once(" ecdsa-sha2-nistp256 ")
                .map(|(_, key)| key.to_string())
        })
        .unwrap_or_else(|| panic!("no ECDSA host key: {}", text(&scanned)));
    std::fs::write(
        op.ssh_dir().join("known_hosts"),
        format!(
            "[127.0.0.1]:{} ecdsa-sha2-nistp256 {ecdsa}\n[127.0.0.1]:{new_port} ecdsa-sha2-nistp256 {ecdsa}\n",
            vm.ssh_port
        ),
    )
    .unwrap();

    // Interrupted halfway (a dropped laptop lid, Ctrl-C): packages are being
    // installed when it dies.
    ubuntu_like::upgrades_start(&vm);
    let mut child = op.spawn(&args, password.as_bytes());
    std::thread::sleep(Duration::from_secs(45));
    child.kill().unwrap();
    let interrupted = child.wait_with_output().unwrap();
    eprintln!("interrupted run:\n{}", text(&interrupted));
    ubuntu_like::upgrades_done(&vm);

    // The same command again completes the job.
    let out = op.vpsup_with_stdin(&args, password.as_bytes());
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(text(&out).contains("RECAP"), "{}", text(&out));
    assert!(
        stderr(&out).contains("certificate renewal is NOT scheduled on the host")
            && stderr(&out).contains("vpsup renew-certs --limit 127-0-0-1"),
        "{}",
        stderr(&out)
    );
    let config = std::fs::read_to_string(op.project.path().join("vpsup.toml")).unwrap();
    for expected in [
        format!("port = {new_port}"),
        "user = \"deploy\"".to_string(),
        format!("ssh_port = {new_port}"),
        // Relative to the project: vpsup.toml is shared with other checkouts.
        "host_binary = \"vpsup-aarch64\"".to_string(),
    ] {
        assert!(
            config.contains(&expected),
            "{expected} missing from:\n{config}"
        );
    }

    // sshd moved, the firewall followed, the admin gets in with the operator's key.
    let port = vm.alt_ssh_port;
    let out = vm.ssh_on(
        port,
        "deploy",
        &operator_key,
        "sudo -n true && echo 'sudo ok'; sudo sshd -T | grep '^port '; sudo ufw status",
        &[],
    );
    let seen = text(&out);
    assert!(
        seen.contains("sudo ok") && seen.contains(&format!("port {port}")),
        "{seen}"
    );
    let rules = ufw_rules(&seen);
    assert!(rules.contains(&format!("{port}/tcp LIMIT")), "{seen}");
    assert!(
        !rules.iter().any(|r| r.starts_with("22/tcp")),
        "the old port stays open: {seen}"
    );
    let out = vm.ssh(
        "deploy",
        &operator_key,
        "true",
        &["-o", "ConnectTimeout=10"],
    );
    assert!(
        !out.status.success(),
        "sshd still answers on 22: {}",
        text(&out)
    );

    ubuntu_like::ssh_socket_moved(&vm, port, &operator_key);

    // Converged.
    let out = op.vpsup(&["init", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let again = play_report(&out);
    assert_eq!(
        (
            again["recap"]["changed"].as_u64(),
            again["round_trips"].as_u64()
        ),
        (Some(0), Some(1)),
        "{again}"
    );

    let known = std::fs::read_to_string(op.ssh_dir().join("known_hosts")).unwrap();
    assert!(
        known
            .lines()
            .any(|l| l.starts_with(&format!("[127.0.0.1]:{new_port} ssh-ed25519 "))),
        "{known}"
    );

    ubuntu_like::deploys(&vm, &op, port, &operator_key);

    // The password that opened the door no longer does.
    let out = vm.ssh_on(
        port,
        "root",
        Path::new("/dev/null"),
        "true",
        &[
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
        ],
    );
    assert!(
        text(&out).contains("Permission denied (publickey)"),
        "{}",
        text(&out)
    );

    // Issue 14: only the SSH login group gets in, published ports are
    // closed over IPv6 too, and the auditor's tool finds nothing (last: its
    // connections end before authentication and count toward fail2ban).
    ssh_audit::only_the_ssh_group_logs_in(&vm, port, &operator_key, ubuntu_like::DEFAULT_USER);
    ipv6_firewall::after6_rules_close_published_ports(&vm, port, &operator_key);
    ipv6_firewall::published_ports_are_closed_over_ipv6(&vm, port, &operator_key);
    ssh_audit::ssh_audit_is_clean(port);
}
