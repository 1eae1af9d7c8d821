//! Every built-in template, rendered with fixed variables and compared with its
//! golden file in tests/golden/ (VPSUP_BLESS=1 rewrites them after a deliberate
//! change: review the diff), then checked by the program that will read it:
//! `sshd -t`, `nginx -t`, a JSON parser.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::{
    describe_output, free_port, mozilla_intermediate_problems, ssh_audit, Finding, NginxProcess,
    SshdOptions, TestSshd, TEST_CERTIFICATE_CHECKS,
};
use vpsup::engine::assets::Assets;
use vpsup::engine::render::{Renderer, Vars};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The facts of a host running `os_id` `os_version` with nginx `nginx`
/// (`None`: not installed yet).
fn host_facts(os_id: &str, os_version: &str, nginx: Option<&str>) -> vpsup::facts::HostFacts {
    let nginx = nginx.map_or(String::new(), |v| {
        format!("nginx=nginx version: nginx/{v}\n")
    });
    vpsup::facts::parse(&format!(
        "os_id={os_id}\nos_version={os_version}\nkernel=6.12\narch=x86_64\ncpus=2\nmem_kb=2000000\nswap_kb=0\nroot_free_kb=8000000\nhostname=vps\nuser=root\nsudo=root\ninit=systemd\n{nginx}"
    ))
    .unwrap()
}

/// The supported systems with the nginx each ships (as nginx.org documents
/// when each directive came: the rules `each_distribution_gets_nginx_files_its_nginx_reads`
/// checks).
const DISTRIBUTIONS: &[(&str, &str, &str)] = &[
    ("ubuntu", "22.04", "1.18.0"),
    ("ubuntu", "24.04", "1.24.0"),
    ("debian", "12", "1.22.1"),
    ("debian", "13", "1.26.3"),
];

/// Templates rendered a second time for another host, each compared with
/// its own golden file `NAME.VARIANT.out`.
fn variants() -> Vec<(&'static str, &'static str, Vars)> {
    let mut old_nginx = vars();
    old_nginx.with_facts(&host_facts("ubuntu", "22.04", None));
    // [init] ssh_classical_kex: curve25519-sha256 after the hybrids where
    // OpenSSH (10.0 here) would offer hybrids only; once where it has it.
    let mut classical = vars();
    classical
        .base
        .insert("ssh_classical_kex".into(), json!(true));
    let mut classical_old = old_nginx.clone();
    classical_old
        .base
        .insert("ssh_classical_kex".into(), json!(true));
    vec![
        ("nginx_default.conf.tera", "ubuntu-22.04", old_nginx.clone()),
        ("sshd_hardening.conf.tera", "ubuntu-22.04", old_nginx),
        ("sshd_hardening.conf.tera", "classical-kex", classical),
        (
            "sshd_hardening.conf.tera",
            "ubuntu-22.04-classical-kex",
            classical_old,
        ),
    ]
}

fn vars() -> Vars {
    // The host layout's paths and unit names, as `init` passes them.
    let mut vars = Vars {
        base: vpsup::layout::vars(),
        ..Default::default()
    };
    vars.with_facts(&host_facts("debian", "13", Some("1.26.3")));
    for (name, value) in [
        ("ssh_port", json!(2222)),
        ("admin_user", json!("deploy")),
        ("acme_webroot", json!("/var/lib/vpsup/acme")),
        ("sshd_dropin", json!("/etc/ssh/sshd_config.d/00-vpsup.conf")),
        ("sshd_revert_dir", json!("/var/lib/vpsup/sshd-revert")),
        ("host_binary_path", json!("/usr/local/bin/vpsup")),
        ("acme_store", json!("/etc/vpsup/acme")),
        ("app", json!("doctor")),
        // The backup units (src/backup/timers.rs): the backup run of app doctor.
        ("what", json!("backup")),
        ("subcommand", json!("")),
        ("schedule", json!("daily")),
        ("schedule_key", json!("schedule")),
        ("on_calendar", json!("*-*-* 03:17:00")),
        ("nginx_http2_on", json!(true)),
        (
            "site",
            json!({
                "domain": "doctor.example.com",
                "cert_dir": "/etc/vpsup/acme/certs/doctor.example.com",
                "max_body": "25m",
                "routes": [
                    {"path": "/api/", "port": 20101, "websockets": false},
                    {"path": "/ws/", "port": 20101, "websockets": true},
                    {"path": "/", "port": 20100, "websockets": false}
                ]
            }),
        ),
    ] {
        vars.base.insert(name.to_string(), value);
    }
    vars
}

fn render(name: &str) -> String {
    render_with(name, &vars())
}

fn render_with(name: &str, vars: &Vars) -> String {
    let assets = Assets::load(None).unwrap();
    let renderer = Renderer::new(&assets.templates).unwrap();
    renderer
        .template(name, vars)
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_template_matches_its_golden_file() {
    let assets = Assets::load(None).unwrap();
    assert!(!assets.templates.is_empty());
    let bless = std::env::var_os("VPSUP_BLESS").is_some();
    let usual = assets
        .templates
        .keys()
        .map(|name| (name.as_str(), format!("{name}.out"), render(name)));
    let others = variants().into_iter().map(|(name, variant, vars)| {
        (
            name,
            format!("{name}.{variant}.out"),
            render_with(name, &vars),
        )
    });
    for (name, golden, rendered) in usual.chain(others) {
        let golden = golden_dir().join(golden);
        if bless {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&golden, &rendered).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
            panic!(
                "no golden file {} for template {name}: run with VPSUP_BLESS=1 and review it",
                golden.display()
            )
        });
        assert_eq!(
            rendered,
            expected,
            "{name} differs from {}",
            golden.display()
        );
    }
}

#[test]
fn the_host_scripts_are_valid_sh() {
    let assets = Assets::load(None).unwrap();
    let scripts: Vec<&String> = assets
        .templates
        .keys()
        .filter(|n| n.ends_with(".sh.tera"))
        .collect();
    assert!(scripts.len() >= 3, "{scripts:?}");
    for name in scripts {
        let rendered = render(name);
        assert!(rendered.starts_with("#!/bin/sh\n"), "{name}");
        let out = Command::new("sh")
            .args(["-n", "-c", &rendered])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", describe_output(&out));
    }
}

/// shellcheck on every shell script vpsup sends to hosts: the `.sh` templates
/// and src/scripts/ (filled with sample values). Installed by tests/setup.
#[test]
fn the_host_scripts_pass_shellcheck() {
    // Findings in templates that are meant (a directive in the template would
    // land in the host's file): `$(echo $ports)` puts sshd's ports on one line;
    // `mkdir -p -m` only creates the revert state directory, whose parent exists.
    let meant: &[(&str, &str)] = &[
        ("sshd_apply.sh.tera", "SC2086,SC2116"),
        ("sshd_arm.sh.tera", "SC2174"),
    ];
    let assets = Assets::load(None).unwrap();
    let mut scripts: Vec<(String, String)> = assets
        .templates
        .keys()
        .filter(|n| n.ends_with(".sh.tera"))
        .map(|name| (name.clone(), render(name)))
        .collect();
    scripts.extend(
        vpsup::scripts::ALL
            .iter()
            .map(|s| (format!("src/scripts/{}", s.file), s.lint_sample())),
    );
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in scripts {
        let path = dir.path().join(name.replace('/', "_"));
        std::fs::write(&path, &text).unwrap();
        let mut shellcheck = Command::new("shellcheck");
        shellcheck.args(["--shell=sh", "--norc"]);
        if let Some((_, codes)) = meant.iter().find(|(n, _)| *n == name) {
            shellcheck.args(["--exclude", codes]);
        }
        let out = shellcheck
            .arg(&path)
            .output()
            .expect("shellcheck is not installed: run tests/setup");
        assert!(
            out.status.success(),
            "{name}:\n{text}\n{}",
            describe_output(&out)
        );
    }
}

/// At boot the revert runs before ssh.service: it must put the previous
/// drop-in back without asking systemd to reload sshd (that waits on sshd's
/// own start job, which waits on the revert: sshd would never start).
#[test]
fn the_boot_revert_restores_the_drop_in_without_touching_sshd() {
    let dir = tempfile::tempdir().unwrap();
    let dropin = dir.path().join("00-vpsup.conf");
    let state = dir.path().join("sshd-revert");
    let mut vars = vars();
    vars.base.insert("sshd_dropin".into(), json!(dropin));
    vars.base.insert("sshd_revert_dir".into(), json!(state));
    let assets = Assets::load(None).unwrap();
    let script = Renderer::new(&assets.templates)
        .unwrap()
        .template("sshd_revert.sh.tera", &vars)
        .unwrap();
    let unit = render("sshd_boot_revert.service.tera");
    assert!(
        unit.contains("\nExecStart=/usr/local/lib/vpsup/sshd-revert --boot\n"),
        "{unit}"
    );
    let path = dir.path().join("sshd-revert.sh");
    std::fs::write(&path, script).unwrap();
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("saved"), "Port 22\n").unwrap();
    std::fs::write(&dropin, "Port 2222\n").unwrap();
    // No systemctl on the path: the boot mode must not need it.
    let out = Command::new("sh")
        .arg(&path)
        .arg("--boot")
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(std::fs::read_to_string(&dropin).unwrap(), "Port 22\n");
    assert!(!state.exists());
    // Nothing awaiting confirmation: nothing to do.
    let out = Command::new("sh")
        .arg(&path)
        .arg("--boot")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
}

/// The drop-in as init writes it for this machine's sshd (the algorithms
/// follow its release), read by that sshd.
#[test]
fn the_sshd_drop_in_passes_sshd_t_and_hardens_what_it_should() {
    let dir = tempfile::tempdir().unwrap();
    let host_key = dir.path().join("host_key");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&host_key)
        .status()
        .unwrap();
    assert!(keygen.success());
    let mut vars = vars();
    vars.with_facts(&this_machines_facts());
    vars.base.insert("sshd_host_key".into(), json!(host_key));
    let drop_in = dir.path().join("00-vpsup.conf");
    std::fs::write(&drop_in, render_with("sshd_hardening.conf.tera", &vars)).unwrap();
    // Like Debian's sshd_config: the drop-ins first, then settings they
    // override (no HostKey: sshd would load all three default keys).
    let config = dir.path().join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Include {}\nPermitRootLogin yes\nPasswordAuthentication yes\nPort 22\n",
            drop_in.display(),
        ),
    )
    .unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let check = Command::new("/usr/sbin/sshd")
        .arg("-t")
        .arg("-f")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "sshd -t: {}",
        describe_output(&check)
    );
    let effective = Command::new("/usr/sbin/sshd")
        .args([
            "-T",
            "-C",
            "user=deploy,host=client.example,addr=203.0.113.9",
            "-f",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        effective.status.success(),
        "sshd -T: {}",
        describe_output(&effective)
    );
    let effective = String::from_utf8_lossy(&effective.stdout);
    for line in [
        "port 2222",
        "permitrootlogin no",
        "passwordauthentication no",
        "kbdinteractiveauthentication no",
        "maxauthtries 3",
        "logingracetime 30",
        "x11forwarding no",
        "authenticationmethods publickey",
        "allowtcpforwarding no",
        "allowstreamlocalforwarding no",
        "loglevel VERBOSE",
        "allowgroups vpsup-ssh",
        "hostkeyalgorithms ssh-ed25519",
    ] {
        assert!(
            effective.lines().any(|l| l == line),
            "sshd -T lacks {line:?}:\n{effective}"
        );
    }
    assert!(
        !effective.contains("hmac-sha1"),
        "no SHA-1 MACs:\n{effective}"
    );
}

/// The facts `init` gathers on this machine (its real sshd among them).
fn this_machines_facts() -> vpsup::facts::HostFacts {
    let out = Command::new("sh")
        .args(["-c", vpsup::facts::PROBE_SCRIPT])
        .output()
        .unwrap();
    vpsup::facts::parse(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

/// The drop-in init writes for this machine's sshd (Debian 12: OpenSSH
/// 9.2), served by a real sshd on loopback that also holds an RSA and an
/// ECDSA host key, like a stock host: ssh-audit finds nothing to fail, and
/// warns only about the classical key exchange vpsup's own client needs
/// where sshd has no ML-KEM (before OpenSSH 9.9; from 9.9, nothing at all).
/// Before vpsup chose per release: 1 failure and 5 warnings here.
#[test]
fn ssh_audit_finds_the_drop_in_clean() {
    let facts = this_machines_facts();
    let mut vars = vars();
    vars.with_facts(&facts);
    let drop_in = render_with("sshd_hardening.conf.tera", &vars);
    let keys = tempfile::tempdir().unwrap();
    let mut extra: String = drop_in
        .lines()
        // The harness owns the port and its Ed25519 host key stands in for
        // the host's.
        .filter(|l| !l.starts_with("Port ") && !l.starts_with("HostKey "))
        .map(|l| format!("{l}\n"))
        .collect();
    for (kind, bits) in [("rsa", "3072"), ("ecdsa", "256")] {
        let key = keys.path().join(kind);
        let keygen = Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-b", bits, "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(keygen.success());
        extra.push_str(&format!("HostKey {}\n", key.display()));
    }
    let sshd = TestSshd::start_with(SshdOptions {
        extra_config: extra,
        ..SshdOptions::default()
    });
    let report = ssh_audit(sshd.port);
    assert_eq!(report.failures, [], "{:#}", report.json);
    let expected: Vec<Finding> = facts
        .sshd_algorithms
        .kex
        .iter()
        .filter(|k| !vpsup::sshd_algorithms::is_post_quantum(k))
        .map(|k| Finding {
            section: "kex".into(),
            algorithm: k.to_string(),
            note: "does not provide protection against post-quantum attacks".into(),
        })
        .collect();
    assert_eq!(
        report.warnings, expected,
        "OpenSSH {:?}: {:#}",
        facts.sshd_version, report.json
    );
    assert_eq!(report.offered("key"), ["ssh-ed25519"]);
    eprintln!(
        "ssh-audit, OpenSSH {:?}: {} failures, {} warnings (kex {:?})",
        facts.sshd_version,
        report.failures.len(),
        report.warnings.len(),
        report.offered("kex")
    );
}

/// Whether this machine's nginx knows `http2 on;` (1.25.1 and later).
fn local_nginx_has_http2_on() -> bool {
    let out = Command::new("/usr/sbin/nginx").arg("-v").output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let version: Vec<u32> = text
        .split('/')
        .nth(1)
        .unwrap_or("")
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .filter_map(|n| n.parse().ok())
        .collect();
    version >= vec![1, 25, 1]
}

/// Writes the TLS snippet, the worker shutdown timeout, the WebSocket map,
/// the default server and a site (with a real certificate and key for
/// doctor.example.com) into `dir`, as init and deploy put them, each passed
/// through `place` (which may move their `listen`s), and an nginx.conf
/// including them (the shutdown timeout in the main context, as Debian's
/// includes modules-enabled); returns its path.
fn write_nginx_files(dir: &Path, vars: &Vars, place: &dyn Fn(String) -> String) -> PathBuf {
    let snippets = dir.join("snippets");
    std::fs::create_dir(&snippets).unwrap();
    let assets = Assets::load(None).unwrap();
    let renderer = Renderer::new(&assets.templates).unwrap();
    std::fs::write(
        snippets.join("vpsup-tls.conf"),
        renderer.template("nginx_tls.conf.tera", vars).unwrap(),
    )
    .unwrap();
    let cert_dir = dir.join("cert");
    std::fs::create_dir(&cert_dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["doctor.example.com".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(cert_dir.join("fullchain.pem"), cert.pem()).unwrap();
    std::fs::write(cert_dir.join("privkey.pem"), key.serialize_pem()).unwrap();
    // The default server's throwaway certificate, as init makes it where
    // nginx cannot refuse handshakes.
    let throwaway = rcgen::KeyPair::generate().unwrap();
    let default_cert = rcgen::CertificateParams::new(vec!["invalid".to_string()])
        .unwrap()
        .self_signed(&throwaway)
        .unwrap();
    std::fs::write(dir.join("default-cert.pem"), default_cert.pem()).unwrap();
    std::fs::write(dir.join("default-key.pem"), throwaway.serialize_pem()).unwrap();
    let mut vars = vars.clone();
    vars.base
        .insert("nginx_http2_on".into(), json!(local_nginx_has_http2_on()));
    vars.base["site"]["cert_dir"] = json!(cert_dir.display().to_string());
    vars.base.insert(
        "default_tls_cert".into(),
        json!(dir.join("default-cert.pem")),
    );
    vars.base
        .insert("default_tls_key".into(), json!(dir.join("default-key.pem")));
    // Main context, as Debian's and Ubuntu's nginx.conf include
    // /etc/nginx/modules-enabled/*.conf.
    let shutdown = dir.join("vpsup-shutdown.conf");
    std::fs::write(
        &shutdown,
        renderer
            .template("nginx_shutdown.conf.tera", &vars)
            .unwrap(),
    )
    .unwrap();
    let mut includes = String::new();
    for name in [
        "nginx_websocket_map.conf.tera",
        "nginx_default.conf.tera",
        "nginx_site.conf.tera",
    ] {
        let file = dir.join(name.trim_end_matches(".tera"));
        std::fs::write(&file, place(renderer.template(name, &vars).unwrap())).unwrap();
        includes.push_str(&format!("  include {};\n", file.display()));
    }
    let config = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &config,
        format!(
            "include {};\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n{includes}}}\n",
            shutdown.display()
        ),
    )
    .unwrap();
    config
}

/// The TLS snippet, the worker shutdown timeout, the default server, the
/// WebSocket map and a site load together, as init and deploy put them: the default server as a current nginx
/// gets it, and as nginx before 1.19.4 gets it (this nginx reads both).
#[test]
fn the_nginx_files_pass_nginx_t_together() {
    let mut usual = vec![("", vars())];
    usual.extend(
        variants()
            .into_iter()
            .map(|(_, variant, vars)| (variant, vars)),
    );
    for (variant, vars) in usual {
        let dir = tempfile::tempdir().unwrap();
        let config = write_nginx_files(dir.path(), &vars, &|text| text);
        eprintln!("nginx -t, {variant}");
        nginx_t(&config);
    }
}

/// nginx directives vpsup writes that not every nginx knows, with the first
/// version that does (nginx.org's documentation).
const DIRECTIVES_SINCE: &[(&str, &[u32])] = &[
    ("ssl_reject_handshake", &[1, 19, 4]),
    ("http2 on;", &[1, 25, 1]),
    ("ssl_protocols TLSv1.2 TLSv1.3;", &[1, 13, 0]),
    ("ssl_ecdh_curve X25519:prime256v1:secp384r1;", &[1, 11, 0]),
    ("worker_shutdown_timeout", &[1, 11, 11]),
];

/// On each supported system, on a fresh host (nginx not installed yet: init
/// renders from the distribution's version) and after init (deploy renders
/// from the installed one), the nginx files use only what that nginx reads.
#[test]
fn each_distribution_gets_nginx_files_its_nginx_reads() {
    for (os_id, os_version, nginx) in DISTRIBUTIONS {
        for installed in [None, Some(*nginx)] {
            let facts = host_facts(os_id, os_version, installed);
            let mut vars = vars();
            vars.with_facts(&facts);
            vars.base.insert(
                "nginx_http2_on".into(),
                json!(vpsup::deploy::nginx::http2_on(facts.nginx.as_deref())),
            );
            for name in [
                "nginx_default.conf.tera",
                "nginx_tls.conf.tera",
                "nginx_site.conf.tera",
                "nginx_shutdown.conf.tera",
            ] {
                let text = render_with(name, &vars);
                for (directive, since) in DIRECTIVES_SINCE {
                    assert!(
                        !text.contains(directive) || vpsup::facts::version_at_least(nginx, since),
                        "{os_id} {os_version} (nginx {nginx}, installed: {}): {name} uses {directive:?}, which needs nginx {since:?}",
                        installed.is_some()
                    );
                }
            }
        }
    }
}

fn nginx_t(config: &Path) {
    let check = Command::new("/usr/sbin/nginx")
        .arg("-t")
        .arg("-c")
        .arg(config)
        .args(["-e", "stderr"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nginx -t: {}",
        describe_output(&check)
    );
}

/// The files with their `listen`s moved to loopback ports (IPv6 ones dropped).
fn on_loopback(text: String, http: u16, https: u16) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("listen [::]"))
        .map(|l| {
            l.replace("listen 80", &format!("listen 127.0.0.1:{http}"))
                .replace("listen 443", &format!("listen 127.0.0.1:{https}"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `openssl s_client` to `port` asking for `name` with `args`: the
/// negotiated protocol and cipher (`TLSv1.3, Cipher is ...`) and the
/// server's temporary key, or `None` when the handshake failed.
fn handshake(port: u16, name: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", name])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let said = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::to_string))
    };
    let negotiated = said("New, ").filter(|n| !n.contains("(NONE)"))?;
    Some(format!(
        "{negotiated}; {}",
        said("Server Temp Key: ").unwrap_or_default()
    ))
}

/// What curl gets from `url` (`--resolve` to loopback, any certificate):
/// the response headers and body.
fn curl(url: &str, resolve: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sk",
            "-D",
            "-",
            "--max-time",
            "10",
            "--resolve",
            resolve,
            url,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// vpsup's nginx files served by a real nginx: what a browser, or sslyze
/// with Mozilla's intermediate profile, finds on :443 and :80. nginx takes
/// a connection's protocols and curves from the default server of its
/// address, before the name selects the site: the site's TLS is only what
/// the snippet says because the default server includes it too (without,
/// X448 and secp521r1 were accepted, and TLS 1.3 was off on nginx < 1.23.4).
#[test]
fn the_served_tls_is_mozilla_intermediate_and_nameless() {
    let snippet = render("nginx_tls.conf.tera");
    let ciphers = snippet
        .lines()
        .find_map(|l| l.strip_prefix("ssl_ciphers "))
        .unwrap()
        .trim_end_matches(';');
    assert!(
        ciphers.split(':').all(|c| c.starts_with("ECDHE-")),
        "no DHE suites without ssl_dhparam: {ciphers}"
    );
    serve_and_check(&vars(), true);
}

/// As above, with the default server nginx before 1.19.4 gets: it
/// completes the handshake for an unknown name with its throwaway
/// certificate, then closes the connection without an answer.
#[test]
fn an_old_nginx_default_server_answers_unknown_names_with_nothing() {
    let (_, _, old_nginx) = variants().remove(0);
    serve_and_check(&old_nginx, false);
}

/// The check above can fail: with the curves Mozilla rejects added back
/// (as nginx's default offered them), sslyze names them.
#[test]
fn sslyze_names_curves_mozilla_rejects() {
    let (http, https) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = write_nginx_files(dir.path(), &vars(), &|text| on_loopback(text, http, https));
    let snippet = dir.path().join("snippets/vpsup-tls.conf");
    let tls = std::fs::read_to_string(&snippet).unwrap();
    assert!(
        tls.contains("ssl_ecdh_curve X25519:prime256v1:secp384r1;"),
        "{tls}"
    );
    std::fs::write(
        &snippet,
        tls.replace(
            "ssl_ecdh_curve X25519:prime256v1:secp384r1;",
            "ssl_ecdh_curve X25519:prime256v1:secp384r1:secp521r1:X448;",
        ),
    )
    .unwrap();
    nginx_t(&config);
    let _nginx = NginxProcess::start(&config, &[http, https]);
    let problems = mozilla_intermediate_problems(https, "doctor.example.com");
    assert!(
        problems.iter().any(|(check, words)| check == "tls_curves"
            && words.contains("X448")
            && words.contains("secp521r1")),
        "{problems:?}"
    );
}

/// Serves the files rendered with `vars` on loopback and checks the TLS, the
/// versions shown, and what an unknown name gets (`rejects`: the handshake
/// is refused, else completed with the throwaway certificate).
fn serve_and_check(vars: &Vars, rejects: bool) {
    let (http, https) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = write_nginx_files(dir.path(), vars, &|text| on_loopback(text, http, https));
    nginx_t(&config);
    let _nginx = NginxProcess::start(&config, &[http, https]);
    let site = "doctor.example.com";

    let tls13 = handshake(https, site, &["-tls1_3", "-groups", "X25519"]);
    assert!(
        tls13
            .as_deref()
            .is_some_and(|t| t.starts_with("TLSv1.3") && t.contains("X25519")),
        "{tls13:?}"
    );
    for group in ["X448", "secp521r1"] {
        let refused = handshake(https, site, &["-tls1_3", "-groups", group]);
        assert_eq!(refused, None, "TLS 1.3 with {group}");
    }
    // TLS 1.2 with ECDSA needs the certificate's curve offered too: the
    // server must pick that one over X448.
    let tls12 = handshake(https, site, &["-tls1_2", "-groups", "X448:prime256v1"]).unwrap();
    assert!(
        tls12.contains("ECDHE-ECDSA-") && tls12.contains("prime256v1"),
        "{tls12}"
    );
    assert_eq!(handshake(https, site, &["-tls1_1"]), None, "TLS 1.1");

    // The auditor's view: sslyze finds nothing against Mozilla's
    // intermediate profile but this test's own certificate (self-signed,
    // valid for centuries), which the served TLS does not choose.
    let problems = mozilla_intermediate_problems(https, site);
    assert!(
        problems
            .iter()
            .all(|(check, _)| TEST_CERTIFICATE_CHECKS.contains(&check.as_str())),
        "{problems:?}"
    );

    // No version on any page or header, HTTP or HTTPS.
    let resolve = |name: &str, port: u16| format!("{name}:{port}:127.0.0.1");
    for (url, port) in [
        (format!("http://{site}:{http}/"), http),
        (format!("https://{site}:{https}/"), https),
        (
            format!("http://{site}:{http}/.well-known/acme-challenge/none"),
            http,
        ),
    ] {
        let got = curl(&url, &resolve(site, port));
        let server = got
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("server:"));
        assert!(
            server.is_some_and(|s| s.trim_end().eq_ignore_ascii_case("server: nginx")),
            "{url}: {got}"
        );
        assert!(!got.contains("nginx/"), "{url}: {got}");
    }

    // A name no site serves gets nothing, on either port.
    let other = "unknown.example.com";
    let unknown = handshake(https, other, &[]);
    assert_eq!(unknown.is_none(), rejects, "{unknown:?}");
    if let Some(negotiated) = unknown {
        assert!(negotiated.starts_with("TLSv1.3"), "{negotiated}");
    }
    for (url, port) in [
        (format!("http://{other}:{http}/"), http),
        (format!("https://{other}:{https}/"), https),
    ] {
        assert_eq!(curl(&url, &resolve(other, port)), "", "{url}");
    }
}

/// The script Docker's service runs after each start
/// (docker_user_first.sh.tera), run for real in a network namespace of its
/// own: where a Docker restarted with containers running left FORWARD
/// without the jump to DOCKER-USER (IPv6 here) or below its own rules,
/// twice (IPv4), the jump ends up first, once; `--check` tells before and after;
/// a second run changes nothing.
#[test]
fn docker_user_first_puts_the_jump_first_in_each_family() {
    let script = render("docker_user_first.sh.tera");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker-user-first");
    std::fs::write(&path, &script).unwrap();
    let run = format!(
        "set -e
iptables -N DOCKER-USER; iptables -N DOCKER
iptables -A FORWARD -o br-1 -j DOCKER; iptables -A FORWARD -j DOCKER-USER; iptables -A FORWARD -j DOCKER-USER
ip6tables -N DOCKER-USER; ip6tables -N DOCKER; ip6tables -A FORWARD -o br-1 -j DOCKER
before=0; sh {s} --check || before=$?
sh {s}
after=0; sh {s} --check || after=$?
sh {s}
echo \"check: $before $after\"
iptables -S FORWARD; ip6tables -S FORWARD",
        s = path.display()
    );
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c", &run])
        .output()
        .expect("unshare and iptables (tests/setup)");
    assert!(out.status.success(), "{}", describe_output(&out));
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(seen.contains("check: 1 0"), "{seen}");
    let forward: Vec<&str> = seen
        .lines()
        .filter(|l| l.starts_with("-A FORWARD"))
        .collect();
    assert_eq!(
        forward,
        [
            "-A FORWARD -j DOCKER-USER",
            "-A FORWARD -o br-1 -j DOCKER",
            "-A FORWARD -j DOCKER-USER",
            "-A FORWARD -o br-1 -j DOCKER",
        ],
        "{seen}"
    );
}

#[test]
fn docker_daemon_json_is_json_with_log_rotation() {
    let value: serde_json::Value =
        serde_json::from_str(&render("docker_daemon.json.tera")).unwrap();
    assert_eq!(value["log-driver"], "json-file");
    assert_eq!(value["log-opts"]["max-size"], "10m");
    assert_eq!(value["log-opts"]["max-file"], "3");
}

/// The DOCKER-USER blocks init adds to ufw's after.rules and after6.rules
/// load into the kernel, each with its family's restore tool and on top of
/// what is there (`--noflush`, as ufw loads them), in a network namespace of
/// their own that ends with the command: this machine's firewall is never
/// touched. IPv6 gets the same rules, jumping to ufw's IPv6 chain.
#[test]
fn the_docker_user_rules_load_over_ipv4_and_ipv6() {
    let v4 = render("ufw_docker_user.rules.tera");
    let v6 = render("ufw_docker_user6.rules.tera");
    assert!(
        v6.contains("\n-A DOCKER-USER -j ufw6-user-forward\n"),
        "{v6}"
    );
    assert!(!v6.contains("ufw-user-forward"), "{v6}");
    assert_eq!(v6.replace("ufw6-", "ufw-"), v4);
    for (rules, tables) in [(&v4, "iptables"), (&v6, "ip6tables")] {
        let script = format!("{tables}-restore --noflush && {tables} -S DOCKER-USER");
        let mut load = Command::new("unshare")
            .args(["--net", "sh", "-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("unshare and iptables (tests/setup)");
        use std::io::Write as _;
        load.stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        let out = load.wait_with_output().unwrap();
        assert!(out.status.success(), "{tables}: {}", describe_output(&out));
        let loaded = String::from_utf8_lossy(&out.stdout);
        let expected: Vec<&str> = rules
            .lines()
            .filter(|l| l.starts_with("-A DOCKER-USER "))
            .collect();
        let listed: Vec<&str> = loaded
            .lines()
            .filter(|l| l.starts_with("-A DOCKER-USER "))
            .collect();
        assert_eq!(listed.len(), expected.len(), "{tables}:\n{loaded}");
    }
}
