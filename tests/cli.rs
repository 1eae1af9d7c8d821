//! The real `vpsup` binary, run as a user would, against a real sshd.

mod support;

use std::process::Command;

use support::*;

fn local(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn facts_json_reports_this_machine_truthfully_in_one_round_trip() {
    let sshd = TestSshd::start();
    let op = Operator::new();
    let target = format!("root@127.0.0.1:{}", sshd.port);
    let out = op.vpsup(&["facts", &target, "-i", &key_arg(&sshd), "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(
        stderr(&out).contains("new host, learned its key ED25519 SHA256:"),
        "{}",
        stderr(&out)
    );

    let report = json(&out);
    let host = &report["hosts"][0];
    assert_eq!(host["target"], target.as_str());
    let f = &host["facts"];
    // The sshd runs on this machine, so the facts must be this machine's.
    assert_eq!(f["os_id"], local(". /etc/os-release; echo $ID").as_str());
    assert_eq!(
        f["os_version"],
        local(". /etc/os-release; echo $VERSION_ID").as_str()
    );
    assert_eq!(
        f["os_codename"],
        local(". /etc/os-release; echo $VERSION_CODENAME").as_str()
    );
    assert_eq!(f["kernel"], local("uname -r").as_str());
    assert_eq!(f["arch"], local("uname -m").as_str());
    assert_eq!(f["cpus"].as_u64().unwrap().to_string(), local("nproc"));
    assert_eq!(f["hostname"], local("hostname").as_str());
    let mem_kb: u64 = local("awk '/^MemTotal:/ {print $2}' /proc/meminfo")
        .parse()
        .unwrap();
    assert_eq!(f["memory_mib"].as_u64().unwrap(), mem_kb / 1024);
    assert!(f["root_disk_free_mib"].as_u64().unwrap() > 0);
    assert!(f["swap_mib"].is_u64());
    assert_eq!(f["user"], "root");
    assert_eq!(f["sudo"], "root");
    assert!(f["init_system"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(f["ipv4_addresses"].is_array());
    assert!(f.get("public_ipv4").is_some());
    let has = |tool: &str| !local(&format!("PATH=$PATH:/usr/sbin command -v {tool}")).is_empty();
    for (key, tool) in [("docker", "docker"), ("nginx", "nginx"), ("ufw", "ufw")] {
        assert_eq!(!f[key].is_null(), has(tool), "{key}: {f}");
    }
    assert!(f.get("compose_v2").is_some());
    assert_eq!(host["timing"]["round_trips"], 1, "facts must cost one exec");

    // A second run knows the host and says nothing about keys.
    let out = op.vpsup(&["facts", &target, "-i", &key_arg(&sshd), "--json"]);
    assert!(
        out.status.success() && !stderr(&out).contains("learned"),
        "{}",
        describe_output(&out)
    );
}

#[test]
fn facts_table_for_config_hosts_shows_sudo_access_per_user() {
    let sshd = TestSshd::start();
    let op = Operator::new();
    let (sudoer, plain) = (sudo_user(), plain_user());
    op.write_config(&format!(
        "[hosts.good]\naddress = \"127.0.0.1\"\nport = {port}\nuser = \"{}\"\nidentity_file = \"{key}\"\n\n\
         [hosts.plain]\naddress = \"127.0.0.1\"\nport = {port}\nuser = \"{}\"\nidentity_file = \"{key}\"\n",
        sudoer.name,
        plain.name,
        port = sshd.port,
        key = key_arg(&sshd)
    ));
    let out = op.vpsup(&["facts", "-v"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("good ({}@127.0.0.1:{})", sudoer.name, sshd.port)),
        "{text}"
    );
    assert!(text.contains("Sudo            passwordless"), "{text}");
    assert!(
        text.contains("Sudo            asks for a password"),
        "{text}"
    );
    assert!(
        text.contains("1 round trip(s)"),
        "-v shows the round trips: {text}"
    );

    let out = op.vpsup(&["facts", "--limit", "plain", "--json"]);
    let hosts = json(&out)["hosts"].as_array().unwrap().clone();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0]["facts"]["sudo"], "needs_password");
}

#[test]
fn ssh_config_aliases_are_honoured() {
    let sshd = TestSshd::start();
    let op = Operator::new();
    std::fs::write(
        op.ssh_dir().join("config"),
        format!(
            "Host myvps\n  HostName 127.0.0.1\n  Port {}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n",
            sshd.port,
            key_arg(&sshd)
        ),
    )
    .unwrap();
    let out = op.vpsup(&["facts", "myvps", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(
        json(&out)["hosts"][0]["target"],
        format!("root@127.0.0.1:{}", sshd.port).as_str()
    );
}

#[test]
fn password_from_stdin_logs_in_and_never_shows_up() {
    let sshd = TestSshd::start();
    let op = Operator::new();
    let user = sudo_user();
    let target = format!("{}@127.0.0.1:{}", user.name, sshd.port);
    let input = format!("{}\n", user.password);
    let out = op.vpsup_with_stdin(
        &["facts", &target, "--password-stdin", "--json", "-v"],
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(json(&out)["hosts"][0]["facts"]["user"], user.name.as_str());
    assert!(!describe_output(&out).contains(&user.password));

    let out = op.vpsup_with_stdin(&["facts", &target, "--password-stdin"], b"wrong\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("authentication failed; tried password"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_changed_host_key_stops_the_cli_and_keeps_known_hosts() {
    let mut sshd = TestSshd::start();
    let op = Operator::new();
    let target = format!("root@127.0.0.1:{}", sshd.port);
    assert!(op
        .vpsup(&["facts", &target, "-i", &key_arg(&sshd)])
        .status
        .success());
    let known_hosts = op.ssh_dir().join("known_hosts");
    let before = std::fs::read_to_string(&known_hosts).unwrap();

    sshd.regenerate_host_key_and_restart();
    let out = op.vpsup(&["facts", &target, "-i", &key_arg(&sshd)]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains("HOST KEY CHANGED"),
        "{}",
        describe_output(&out)
    );
    assert!(text.contains("known:   ED25519 SHA256:") && text.contains("offered: ED25519 SHA256:"));
    assert!(text.contains("ssh-keygen -R"));
    assert_eq!(std::fs::read_to_string(&known_hosts).unwrap(), before);
}

#[test]
fn unreachable_host_times_out_with_a_clear_message() {
    let op = Operator::new();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("root@127.0.0.1:{}", silent.local_addr().unwrap().port());
    let out = op.vpsup(&["facts", &target, "--connect-timeout", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        describe_output(&out).contains("no SSH answer within 1 s"),
        "{}",
        describe_output(&out)
    );
}

#[test]
fn malformed_config_reports_file_line_and_column_and_exits_2() {
    let op = Operator::new();
    op.write_config("[hosts.web]\naddress = \"203.0.113.42\"\nadress = \"typo\"\n");
    let out = op.vpsup(&["facts"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("vpsup.toml:3:1: unknown field `adress`"),
        "{err}"
    );
    assert!(err.contains("   3 | adress = \"typo\""), "{err}");

    op.write_config("[hosts.web]\naddress = \"h\"\nport = \"22\"\n");
    let err = stderr(&op.vpsup(&["facts"]));
    assert!(err.contains("vpsup.toml:3:8: invalid type"), "{err}");

    let missing = op.vpsup(&["facts", "--config", "nope.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("cannot read nope.toml"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn no_host_and_unknown_limit_are_bad_input() {
    let op = Operator::new();
    let out = op.vpsup(&["facts"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no host given"), "{}", stderr(&out));

    op.write_config("[hosts.web]\naddress = \"203.0.113.42\"\n");
    let out = op.vpsup(&["facts", "--limit", "db"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--limit db: no such host"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn deploy_and_rollback_without_an_app_say_what_to_add() {
    let op = Operator::new();
    op.write_config("[hosts.web]\naddress = \"203.0.113.42\"\n");
    for args in [&["deploy"][..], &["rollback"]] {
        let out = op.vpsup(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains("deploy needs an [app] section in"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// A private key in the project stops a deploy before anything is
/// contacted (exit 2, naming the file); the same key named as the host's
/// `identity_file`, or given with `-i`, is simply left out of the release
/// (the run goes on to connect: here, to a closed port).
#[test]
fn deploy_keeps_private_keys_off_the_hosts() {
    let op = Operator::new();
    let p = op.project.path();
    std::fs::create_dir(p.join("keys")).unwrap();
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(p.join("keys/id_ed25519"))
        .status()
        .unwrap();
    assert!(keygen.success());
    std::fs::write(
        p.join("compose.yml"),
        "services:\n  web:\n    image: nginx\n",
    )
    .unwrap();
    let config = |extra: &str| {
        format!(
            "[hosts.web]\naddress = \"127.0.0.1\"\nport = {}\n{extra}\n[app]\nname = \"shop\"\n",
            free_port()
        )
    };
    op.write_config(&config(""));
    let out = op.vpsup(&["deploy"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert!(
        stderr(&out).contains("the release holds keys/id_ed25519 (OPENSSH PRIVATE KEY)"),
        "{}",
        describe_output(&out)
    );

    op.write_config(&config("identity_file = \"keys/id_ed25519\""));
    let out = op.vpsup(&["deploy"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(
        describe_output(&out).contains("Connection refused"),
        "{}",
        describe_output(&out)
    );

    op.write_config(&config(""));
    let out = op.vpsup(&["deploy", "-i", "keys/id_ed25519"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
}

/// Mistakes `init` catches before connecting anywhere (the address is
/// unroutable documentation space: nothing may be contacted).
#[test]
fn init_refuses_bad_input_before_connecting() {
    let op = Operator::new();
    let out = op.vpsup(&["init"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no host given"), "{}", stderr(&out));

    let out = op.vpsup(&["init", "root@203.0.113.42", "--admin-user", "root"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot be root"), "{}", stderr(&out));

    // No key in ~/.ssh and no agent: nothing to give the admin.
    let out = op.vpsup(&["init", "root@203.0.113.42"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no public key of yours to install for the admin user deploy")
            && err.contains("ssh-keygen -t ed25519"),
        "{err}"
    );

    op.write_config("[init]\nswap = \"lots\"\n");
    let out = op.vpsup(&["init", "root@203.0.113.42"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("vpsup.toml:2:8: invalid size"),
        "{}",
        stderr(&out)
    );
}

/// A re-run of `init root@HOST` on a host vpsup.toml records (an earlier
/// init's admin) logs in as that admin first: sshd refuses root there
/// (AllowGroups) and fail2ban counts every refusal, one per key tried. A
/// host it does not record gets root first. (This sshd refuses both, so
/// nothing runs here; the error names who was tried, in order.)
#[test]
fn init_tries_the_recorded_admin_before_root() {
    let sshd = TestSshd::start_with(SshdOptions {
        extra_config: "DenyUsers root deploy\n".into(),
        ..SshdOptions::default()
    });
    let op = Operator::new();
    std::fs::write(
        op.ssh_dir().join("known_hosts"),
        format!("{}\n", sshd.known_hosts_line),
    )
    .unwrap();
    let key = key_arg(&sshd);
    let public = format!("{key}.pub");
    let at = |user: &str| format!("{user}@127.0.0.1:{}", sshd.port);
    let init = || {
        let out = op.vpsup(&["init", &at("root"), "-i", &key, "--key", &public]);
        assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
        describe_output(&out)
    };
    let err = init();
    assert!(
        err.contains(&format!("{} (and {}", at("root"), at("deploy")))
            && err.contains("Root's login was refused too."),
        "{err}"
    );
    op.write_config(&format!(
        "[hosts.web]\naddress = \"127.0.0.1\"\nport = {}\nuser = \"deploy\"\n",
        sshd.port
    ));
    let err = init();
    assert!(
        err.contains(&format!("{} (and {}", at("deploy"), at("root")))
            && err.contains("The admin's login was refused too."),
        "{err}"
    );
}

#[test]
fn renew_certs_without_acme_config_says_what_is_missing() {
    let op = Operator::new();
    op.write_config("[hosts.web]\naddress = \"203.0.113.42\"\n");
    let out = op.vpsup(&["renew-certs"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("needs an [acme] section with your email"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_lists_every_command_and_common_flag() {
    let out = Operator::new().vpsup(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "init",
        "deploy",
        "renew-certs",
        "status",
        "facts",
        "alerts",
        "--check",
        "--diff",
        "--json",
        "--config",
        "--limit",
        "--yes",
        "--verbose",
        "--quiet",
    ] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
}

/// `status` over a real sshd: this machine's facts, the certificate in the
/// store with its days left, and that nothing renews it on the "host".
#[test]
fn status_shows_facts_certificates_and_who_renews_them() {
    let sshd = TestSshd::start();
    let op = Operator::new();
    let store = tempfile::tempdir().unwrap();
    let cert_dir = store.path().join("certs/app.example.test");
    std::fs::create_dir_all(&cert_dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["app.example.test".to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(10);
    params.not_after = now + time::Duration::days(20) + time::Duration::hours(1);
    std::fs::write(
        cert_dir.join("fullchain.pem"),
        params.self_signed(&key).unwrap().pem(),
    )
    .unwrap();
    std::fs::write(
        cert_dir.join("cert.json"),
        r#"{"names":["app.example.test"],"challenge":"http-01","directory":"https://ca.example/dir"}"#,
    )
    .unwrap();
    op.write_config(&format!(
        "[hosts.local]\naddress = \"127.0.0.1\"\nport = {}\nuser = \"root\"\nidentity_file = \"{}\"\n\n[acme]\nemail = \"ops@example.test\"\nstore = \"{}\"\n",
        sshd.port,
        key_arg(&sshd),
        store.path().display()
    ));

    let out = op.vpsup(&["status", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let host = json(&out)["hosts"][0].clone();
    assert_eq!(
        host["facts"]["hostname"],
        local("hostname").as_str(),
        "{host}"
    );
    assert!(host["uptime_days"].as_f64().is_some(), "{host}");
    assert_eq!(
        host["certificates"][0]["names"][0], "app.example.test",
        "{host}"
    );
    assert_eq!(host["certificates"][0]["days_left"], 20, "{host}");
    assert_eq!(host["renewal"]["mode"], "elsewhere", "{host}");

    let out = op.vpsup(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("app.example.test: 20 days left"), "{text}");
    assert!(text.contains("renewal      NOT on the host"), "{text}");
}
