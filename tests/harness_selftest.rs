//! Checks the test harness itself (tests/support) against the stock OpenSSH client, so a
//! failing vpsup test can be blamed on vpsup rather than on its test server.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::*;
use tempfile::TempDir;

/// A client-side scratch dir holding a known_hosts file.
struct ClientDir {
    dir: TempDir,
    known_hosts: PathBuf,
}

impl ClientDir {
    /// Trusts exactly `known_hosts_line` (may be empty).
    fn trusting(known_hosts_line: &str) -> ClientDir {
        let dir = tempfile::tempdir().expect("client temp dir");
        let known_hosts = dir.path().join("known_hosts");
        let content = if known_hosts_line.is_empty() {
            String::new()
        } else {
            format!("{known_hosts_line}\n")
        };
        fs::write(&known_hosts, content).expect("write known_hosts");
        ClientDir { dir, known_hosts }
    }
}

/// `ssh` with no user config, no agent, strict host key checking, talking to `sshd`.
fn ssh_base(sshd: &TestSshd, known_hosts: &Path) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.arg("-F")
        .arg("/dev/null")
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .args(["-o", "ConnectTimeout=10", "-p", &sshd.port.to_string()])
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null());
    cmd
}

/// Runs `remote` as `user` with the harness client key.
fn ssh_key(sshd: &TestSshd, known_hosts: &Path, user: &str, remote: &str) -> Output {
    ssh_base(sshd, known_hosts)
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
        ])
        .arg("-i")
        .arg(&sshd.client_key)
        .arg(format!("{user}@127.0.0.1"))
        .arg(remote)
        .output()
        .expect("run ssh")
}

fn assert_ok(out: &Output, sshd: &TestSshd, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n--- sshd log ---\n{}",
        out.status,
        describe_output(out),
        sshd.log()
    );
}

fn assert_fails_with(out: &Output, needle: &str, sshd: &TestSshd, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(needle),
        "{what}: expected failure mentioning {needle:?}, got {}:\n{}\n--- sshd log ---\n{}",
        out.status,
        describe_output(out),
        sshd.log()
    );
}

#[test]
fn root_logs_in_with_the_client_key() {
    let sshd = TestSshd::start();
    let client = ClientDir::trusting(&sshd.known_hosts_line);
    let out = ssh_key(&sshd, &client.known_hosts, "root", "id -un");
    assert_ok(&out, &sshd, "key login as root");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "root");
}

#[test]
fn sudo_user_logs_in_with_key_and_has_passwordless_sudo() {
    let user = sudo_user();
    let sshd = TestSshd::start();
    let client = ClientDir::trusting(&sshd.known_hosts_line);
    let out = ssh_key(
        &sshd,
        &client.known_hosts,
        &user.name,
        "id -un && sudo -n true && sudo -n id -u",
    );
    assert_ok(&out, &sshd, "key login + sudo -n as the sudo user");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n0\n", user.name)
    );
}

#[test]
fn plain_user_logs_in_but_sudo_needs_a_password() {
    let user = plain_user();
    let sshd = TestSshd::start();
    let client = ClientDir::trusting(&sshd.known_hosts_line);
    assert_ok(
        &ssh_key(&sshd, &client.known_hosts, &user.name, "true"),
        &sshd,
        "key login as the plain user",
    );
    let out = ssh_key(&sshd, &client.known_hosts, &user.name, "sudo -n true");
    assert_fails_with(
        &out,
        "a password is required",
        &sshd,
        "sudo -n as the plain user",
    );
}

/// Password login through SSH_ASKPASS (ssh never reads passwords from stdin).
fn ssh_password(sshd: &TestSshd, client: &ClientDir, user: &TestUser) -> Output {
    ssh_base(sshd, &client.known_hosts)
        .args([
            "-o",
            "BatchMode=no",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "IdentityAgent=none",
        ])
        .args([
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "NumberOfPasswordPrompts=1",
        ])
        .arg(format!("{}@127.0.0.1", user.name))
        .arg("id -un")
        .env("SSH_ASKPASS", write_askpass(client.dir.path()))
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env(ASKPASS_SECRET_VAR, &user.password)
        .output()
        .expect("run ssh")
}

#[test]
fn password_auth_follows_the_option() {
    let user = plain_user();
    let on = TestSshd::start();
    let client = ClientDir::trusting(&on.known_hosts_line);
    let out = ssh_password(&on, &client, &user);
    assert_ok(&out, &on, "password login with password_auth: true");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), user.name);

    let wrong = TestUser {
        password: "not-the-password".into(),
        ..user.clone()
    };
    assert_fails_with(
        &ssh_password(&on, &client, &wrong),
        "Permission denied",
        &on,
        "wrong password",
    );

    let off = TestSshd::start_with(SshdOptions {
        password_auth: false,
        ..Default::default()
    });
    let client = ClientDir::trusting(&off.known_hosts_line);
    assert_fails_with(
        &ssh_password(&off, &client, &user),
        "Permission denied",
        &off,
        "password login with password_auth: false",
    );
}

#[test]
fn extra_config_overrides_harness_defaults() {
    let sshd = TestSshd::start_with(SshdOptions {
        extra_config: "PermitRootLogin no\nMatch User nobody\n  PermitTTY no\n".into(),
        max_sessions: 3,
        ..Default::default()
    });
    let config = fs::read_to_string(sshd.config_path()).expect("read sshd_config");
    assert!(config.contains("MaxSessions 3\n"), "config:\n{config}");
    assert!(!config.contains("PermitRootLogin yes"), "config:\n{config}");
    let client = ClientDir::trusting(&sshd.known_hosts_line);
    let out = ssh_key(&sshd, &client.known_hosts, "root", "true");
    assert_fails_with(
        &out,
        "Permission denied",
        &sshd,
        "root login with PermitRootLogin no",
    );
}

#[test]
fn known_hosts_line_is_what_openssh_writes() {
    let sshd = TestSshd::start();
    let client = ClientDir::trusting("");
    let out = ssh_key_accept_new(&sshd, &client.known_hosts);
    assert_ok(
        &out,
        &sshd,
        "first login with StrictHostKeyChecking=accept-new",
    );
    let written = fs::read_to_string(&client.known_hosts).expect("read known_hosts");
    assert_eq!(written.trim_end(), sshd.known_hosts_line);
    assert!(
        sshd.host_key_pub.starts_with("ssh-ed25519 AAAA"),
        "{:?}",
        sshd.host_key_pub
    );
}

fn ssh_key_accept_new(sshd: &TestSshd, known_hosts: &Path) -> Output {
    Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "HashKnownHosts=no",
        ])
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-i")
        .arg(&sshd.client_key)
        .args(["-p", &sshd.port.to_string(), "root@127.0.0.1", "true"])
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .expect("run ssh")
}

#[test]
fn regenerated_host_key_trips_strict_checking() {
    let mut sshd = TestSshd::start();
    let (port, old_line) = (sshd.port, sshd.known_hosts_line.clone());
    let old_client = ClientDir::trusting(&old_line);
    assert_ok(
        &ssh_key(&sshd, &old_client.known_hosts, "root", "true"),
        &sshd,
        "login before the key change",
    );

    sshd.regenerate_host_key_and_restart();
    assert_eq!(sshd.port, port, "restart must keep the port");
    assert_ne!(sshd.known_hosts_line, old_line, "host key must change");

    let out = ssh_key(&sshd, &old_client.known_hosts, "root", "true");
    assert_fails_with(
        &out,
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        &sshd,
        "login with the stale known_hosts",
    );

    let new_client = ClientDir::trusting(&sshd.known_hosts_line);
    assert_ok(
        &ssh_key(&sshd, &new_client.known_hosts, "root", "true"),
        &sshd,
        "login with the new known_hosts line",
    );
}

#[test]
fn agent_holds_keys_and_serves_logins() {
    let sshd = TestSshd::start();
    let agent = TestAgent::start();
    assert_eq!(agent.list(), "", "a fresh agent is empty");

    agent.add(&sshd.client_key);
    let keys_dir = tempfile::tempdir().expect("temp dir");
    let locked = generate_key(keys_dir.path(), "locked_ed25519", Some("s3cret phrase"));
    agent.add_with_passphrase(&locked, "s3cret phrase");

    let listed = agent.list();
    for key in [&sshd.client_key, &locked] {
        let fp = fingerprint(key);
        assert!(
            listed.contains(&fp),
            "ssh-add -l should list {fp}; got:\n{listed}"
        );
    }

    // Log in with the agent only: no -i, IdentityAgent pointing at the test agent.
    let client = ClientDir::trusting(&sshd.known_hosts_line);
    let out = ssh_base(&sshd, &client.known_hosts)
        .args(["-o", "BatchMode=yes"])
        .arg("-o")
        .arg(format!("IdentityAgent={}", agent.sock.display()))
        .args(["root@127.0.0.1", "true"])
        .output()
        .expect("run ssh");
    assert_ok(&out, &sshd, "login through the agent");
}

/// SHA256 fingerprint of a key pair, as `ssh-add -l` prints it.
fn fingerprint(private_key: &Path) -> String {
    let public_key = private_key.with_extension("pub");
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&public_key)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen -lf");
    assert!(
        out.status.success(),
        "ssh-keygen -lf:\n{}",
        describe_output(&out)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint field")
        .to_string()
}

#[test]
fn free_port_is_bindable() {
    let port = free_port();
    std::net::TcpListener::bind(("127.0.0.1", port))
        .expect("port from free_port() should be bindable");
}

#[test]
fn dropping_the_server_stops_it_and_removes_its_dir() {
    let sshd = TestSshd::start();
    let (port, dir) = (sshd.port, sshd.dir.path().to_path_buf());
    drop(sshd);
    assert!(!dir.exists(), "{} should be removed on drop", dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing should listen on {port} after drop"
    );
}
