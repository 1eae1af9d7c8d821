//! The SSH transport against a real OpenSSH server on loopback.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use vpsup::transport::ssh::{Credentials, SshError, SshTarget, SshTransport};
use vpsup::transport::{ExecRequest, FileMeta, OutputStream, Transport, TransportError};

fn target(sshd: &TestSshd, user: &str, home: &Path) -> SshTarget {
    SshTarget {
        host: "127.0.0.1".into(),
        port: sshd.port,
        user: user.into(),
        identity_files: vec![sshd.client_key.clone()],
        identities_only: false,
        known_hosts: home.join("known_hosts"),
        connect_timeout: Duration::from_secs(10),
    }
}

/// The error of a login that must fail.
async fn refused(target: &SshTarget, creds: &Credentials) -> SshError {
    match SshTransport::connect(target, creds).await {
        Ok(_) => panic!("{} logged in, but must not", target.describe()),
        Err(e) => e,
    }
}

async fn connect(target: &SshTarget) -> SshTransport {
    match SshTransport::connect(target, &Credentials::default()).await {
        Ok((t, _)) => t,
        Err(e) => panic!("connect to {}: {e}", target.describe()),
    }
}

#[tokio::test]
async fn key_auth_learns_the_host_then_knows_it_and_reports_exit_status_and_stderr() {
    let sshd = TestSshd::start();
    let home = tempfile::tempdir().unwrap();
    let t = target(&sshd, "root", home.path());

    let (ssh, report) = SshTransport::connect(&t, &Credentials::default())
        .await
        .unwrap();
    assert!(report
        .learned_host_key
        .as_deref()
        .unwrap()
        .starts_with("ED25519 SHA256:"));
    assert!(report
        .auth_method
        .contains(&sshd.client_key.display().to_string()));
    let known = std::fs::read_to_string(home.path().join("known_hosts")).unwrap();
    assert_eq!(known.trim_end(), sshd.known_hosts_line.trim_end());

    let out = ssh
        .exec(ExecRequest::new("echo to-out; echo to-err >&2; exit 7"))
        .await
        .unwrap();
    assert_eq!(out.exit_status, Some(7));
    assert_eq!(out.stdout, b"to-out\n");
    assert_eq!(out.stderr, b"to-err\n");
    let err = ssh
        .run_ok(
            "a failing step",
            ExecRequest::new("echo 'disk full' >&2; exit 2"),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a failing step failed (exit 2): disk full"),
        "{err}"
    );

    // Second connection: the key is known, nothing is learned or rewritten.
    let (_, report) = SshTransport::connect(&t, &Credentials::default())
        .await
        .unwrap();
    assert_eq!(report.learned_host_key, None);
    assert_eq!(
        std::fs::read_to_string(home.path().join("known_hosts")).unwrap(),
        known
    );
}

#[tokio::test]
async fn a_changed_host_key_is_refused_with_both_fingerprints_and_never_overwritten() {
    let mut sshd = TestSshd::start();
    let home = tempfile::tempdir().unwrap();
    let t = target(&sshd, "root", home.path());
    connect(&t).await;
    let before = std::fs::read_to_string(home.path().join("known_hosts")).unwrap();

    sshd.regenerate_host_key_and_restart();
    let err = match SshTransport::connect(&t, &Credentials::default()).await {
        Err(SshError::HostKeyChanged(m)) => m,
        Err(other) => panic!("expected HostKeyChanged, got {other}"),
        Ok(_) => panic!("connected despite a changed host key"),
    };
    assert_eq!(err.recorded.len(), 1);
    assert_ne!(err.recorded[0].1, err.offered);
    let text = err.to_string();
    assert!(
        text.contains("HOST KEY CHANGED")
            && text.contains(&err.offered)
            && text.contains(&err.recorded[0].1)
    );
    assert_eq!(
        std::fs::read_to_string(home.path().join("known_hosts")).unwrap(),
        before
    );
}

#[tokio::test]
async fn a_host_with_several_key_types_is_known_by_the_recorded_one() {
    // The server has an ED25519 and an ECDSA host key; known_hosts records only
    // the ECDSA one. OpenSSH connects; so must we, without calling it "changed".
    let keys = tempfile::tempdir().unwrap();
    let ecdsa = keys.path().join("host_ecdsa");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ecdsa", "-N", "", "-f"])
        .arg(&ecdsa)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::set_permissions(keys.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sshd = TestSshd::start_with(SshdOptions {
        extra_config: format!("HostKey {}\n", ecdsa.display()),
        ..Default::default()
    });
    let home = tempfile::tempdir().unwrap();
    let t = target(&sshd, "root", home.path());
    let ecdsa_pub = std::fs::read_to_string(ecdsa.with_extension("pub")).unwrap();
    let mut fields = ecdsa_pub.split_whitespace();
    let line = format!(
        "[127.0.0.1]:{} {} {}\n",
        sshd.port,
        fields.next().unwrap(),
        fields.next().unwrap()
    );
    std::fs::write(&t.known_hosts, &line).unwrap();
    let (_, report) = SshTransport::connect(&t, &Credentials::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.learned_host_key, None);
    assert_eq!(std::fs::read_to_string(&t.known_hosts).unwrap(), line);
}

#[tokio::test]
async fn an_unreadable_key_file_does_not_stop_the_agent() {
    let sshd = TestSshd::start();
    let agent = TestAgent::start();
    agent.add(&sshd.client_key);
    let home = tempfile::tempdir().unwrap();
    let garbage = home.path().join("id_ecdsa");
    std::fs::write(&garbage, "not a key").unwrap();
    let mut t = target(&sshd, "root", home.path());
    t.identity_files = vec![garbage.clone()];
    let creds = Credentials {
        agent_socket: Some(agent.sock.clone()),
        ..Default::default()
    };
    let (_, report) = SshTransport::connect(&t, &creds)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.auth_method.contains("agent"),
        "{}",
        report.auth_method
    );
    // Without the agent, the failure says why the key was not used.
    let text = refused(&t, &Credentials::default()).await.to_string();
    assert!(
        text.contains(&format!("{} (unreadable", garbage.display())),
        "{text}"
    );
}

#[tokio::test]
async fn agent_auth_works_without_any_key_file() {
    let sshd = TestSshd::start();
    let agent = TestAgent::start();
    agent.add(&sshd.client_key);
    let home = tempfile::tempdir().unwrap();
    let mut t = target(&sshd, "root", home.path());
    t.identity_files = vec![home.path().join("no-such-key")];
    let creds = Credentials {
        agent_socket: Some(agent.sock.clone()),
        ..Default::default()
    };
    let (ssh, report) = SshTransport::connect(&t, &creds).await.unwrap();
    assert!(
        report.auth_method.starts_with("publickey (agent"),
        "{}",
        report.auth_method
    );
    assert!(ssh.exec(ExecRequest::new("true")).await.unwrap().success());
}

#[tokio::test]
async fn identities_only_keeps_unrelated_agent_keys_back() {
    let sshd = TestSshd::start();
    let agent = TestAgent::start();
    agent.add(&sshd.client_key);
    let home = tempfile::tempdir().unwrap();
    let other = generate_key(home.path(), "other", None);
    let mut t = target(&sshd, "root", home.path());
    t.identity_files = vec![other];
    t.identities_only = true;
    let creds = Credentials {
        agent_socket: Some(agent.sock.clone()),
        ..Default::default()
    };
    let err = refused(&t, &creds).await.to_string();
    assert!(err.contains("0 agent key(s)"), "{err}");
}

#[tokio::test]
async fn password_auth_and_wrong_password_or_key_errors() {
    let sshd = TestSshd::start();
    let user = sudo_user();
    let home = tempfile::tempdir().unwrap();
    let mut t = target(&sshd, &user.name, home.path());
    t.identity_files = vec![];
    let with_password = |p: &str| Credentials {
        password: Some(p.to_string()),
        ..Default::default()
    };

    let (ssh, report) = SshTransport::connect(&t, &with_password(&user.password))
        .await
        .unwrap();
    assert_eq!(report.auth_method, "password");
    assert_eq!(
        ssh.exec(ExecRequest::new("id -un"))
            .await
            .unwrap()
            .stdout_str()
            .trim(),
        user.name
    );

    let err = refused(&t, &with_password("wrong")).await;
    let text = err.to_string();
    assert!(matches!(err, SshError::AuthFailed { .. }), "{text}");
    assert!(
        text.contains("authentication failed; tried password"),
        "{text}"
    );
    assert!(
        !text.contains("wrong"),
        "the password must never be printed: {text}"
    );

    let wrong_key = generate_key(home.path(), "not-authorized", None);
    t.identity_files = vec![wrong_key.clone()];
    let text = refused(&t, &Credentials::default()).await.to_string();
    assert!(
        text.contains(&format!("key {}", wrong_key.display())),
        "{text}"
    );
    assert!(
        text.contains("publickey"),
        "names what the server accepts: {text}"
    );
}

#[tokio::test]
async fn an_encrypted_key_without_a_terminal_says_to_use_the_agent() {
    let sshd = TestSshd::start();
    let home = tempfile::tempdir().unwrap();
    let locked = generate_key(home.path(), "locked", Some("correct horse"));
    let mut t = target(&sshd, "root", home.path());
    t.identity_files = vec![locked];
    let text = refused(&t, &Credentials::default()).await.to_string();
    assert!(
        text.contains("encrypted") && text.contains("ssh-add"),
        "{text}"
    );

    // With someone to ask, the passphrase unlocks it and the key logs in.
    let mut keys = std::fs::OpenOptions::new()
        .append(true)
        .open(sshd.dir.path().join("authorized_keys"))
        .unwrap();
    std::io::Write::write_all(
        &mut keys,
        &std::fs::read(home.path().join("locked.pub")).unwrap(),
    )
    .unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let creds = Credentials {
        prompt: Some(Arc::new(move |question: &str| {
            log.lock().unwrap().push(question.to_string());
            Some("correct horse".to_string())
        })),
        ..Default::default()
    };
    let (_, report) = SshTransport::connect(&t, &creds).await.unwrap();
    assert!(
        report.auth_method.contains("locked"),
        "{}",
        report.auth_method
    );
    assert_eq!(asked.lock().unwrap().len(), 1);
    assert!(asked.lock().unwrap()[0].starts_with("Enter passphrase for key"));
}

#[tokio::test]
async fn eight_commands_run_in_parallel_over_one_connection() {
    let sshd = TestSshd::start();
    let home = tempfile::tempdir().unwrap();
    let ssh = Arc::new(connect(&target(&sshd, "root", home.path())).await);
    let meeting = tempfile::tempdir().unwrap();
    let dir = meeting.path().display().to_string();
    // Each command checks in, then waits until all eight have: this can only
    // succeed if the eight run at the same time.
    let runs = (0..8).map(|i| {
        let ssh = ssh.clone();
        let script = format!(
            "touch {dir}/{i}; n=0; while [ $(ls {dir} | wc -l) -lt 8 ]; do n=$((n+1)); [ $n -gt 300 ] && exit 9; sleep 0.1; done; echo {i}"
        );
        tokio::spawn(async move { ssh.exec(ExecRequest::new(script)).await })
    });
    let results = futures::future::join_all(runs).await;
    for (i, r) in results.into_iter().enumerate() {
        let out = r.unwrap().unwrap();
        assert_eq!(
            out.exit_status,
            Some(0),
            "command {i}: {}",
            out.stderr_str()
        );
        assert_eq!(out.stdout_str().trim(), i.to_string());
    }
    assert_eq!(ssh.round_trips(), 8);
}

/// Deterministic pseudo-random bytes (xorshift), so a corrupted byte anywhere shows.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn a_20_mb_upload_arrives_byte_identical_with_mode_and_owner_and_replaces_atomically() {
    let sshd = TestSshd::start();
    let home = tempfile::tempdir().unwrap();
    let ssh = connect(&target(&sshd, "root", home.path())).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let remote = path.to_str().unwrap();

    let data = noise(20 * 1024 * 1024);
    ssh.put_file(remote, &data, &FileMeta::mode(0o640), false)
        .await
        .unwrap();
    assert!(
        std::fs::read(&path).unwrap() == data,
        "uploaded bytes differ"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o640
    );

    // Replacing keeps the path valid throughout and leaves no temp file behind.
    let plain = plain_user();
    ssh.put_file(
        remote,
        b"small\n",
        &FileMeta::mode(0o600).owner(&plain.name),
        false,
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"small\n");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    let uid = ssh
        .exec(ExecRequest::new(format!("id -u {}", plain.name)))
        .await
        .unwrap();
    assert_eq!(meta.uid().to_string(), uid.stdout_str().trim());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "temp files left behind"
    );

    assert_eq!(
        ssh.read_file(remote, false).await.unwrap().unwrap(),
        b"small\n"
    );
    assert!(ssh.exists(remote, false).await.unwrap());
    assert_eq!(
        ssh.read_file(&format!("{remote}.nope"), false)
            .await
            .unwrap(),
        None
    );
    assert!(!ssh.exists(&format!("{remote}.nope"), false).await.unwrap());
}

#[tokio::test]
async fn a_failed_upload_leaves_the_old_file_untouched() {
    let sshd = TestSshd::start();
    let home = tempfile::tempdir().unwrap();
    let ssh = connect(&target(&sshd, "root", home.path())).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.conf");
    std::fs::write(&path, "old\n").unwrap();
    // An owner that does not exist makes the script fail after the data arrived.
    let err = ssh
        .put_file(
            path.to_str().unwrap(),
            b"new\n",
            &FileMeta::mode(0o644).owner("no-such-user-xyz"),
            false,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("writing") && err.contains("no-such-user-xyz"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\n");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "temp file left behind"
    );
}

#[tokio::test]
async fn stdin_carries_secrets_and_output_streams_as_it_comes() {
    let sshd = TestSshd::start();
    let home = tempfile::tempdir().unwrap();
    let ssh = connect(&target(&sshd, "root", home.path())).await;
    type Chunks = Vec<(OutputStream, Vec<u8>)>;
    let chunks: Arc<Mutex<Chunks>> = Arc::default();
    let sink = chunks.clone();
    let out = ssh
        .exec(
            ExecRequest::new("read -r secret; printf '%s' \"$secret\" | wc -c; echo done >&2")
                .stdin(b"s3cret-value\n".to_vec())
                .stream(Arc::new(move |which, data| {
                    sink.lock().unwrap().push((which, data.to_vec()))
                })),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_str().trim(), "12");
    let chunks = chunks.lock().unwrap();
    let streamed_out: Vec<u8> = chunks
        .iter()
        .filter(|c| c.0 == OutputStream::Stdout)
        .flat_map(|c| c.1.clone())
        .collect();
    let streamed_err: Vec<u8> = chunks
        .iter()
        .filter(|c| c.0 == OutputStream::Stderr)
        .flat_map(|c| c.1.clone())
        .collect();
    assert_eq!(streamed_out, out.stdout);
    assert_eq!(streamed_err, b"done\n");
}

#[tokio::test]
async fn sudo_is_used_for_root_steps_and_a_password_prompt_is_a_clear_error() {
    let sshd = TestSshd::start();
    let home = tempfile::tempdir().unwrap();

    let sudoer = sudo_user();
    let ssh = connect(&target(&sshd, &sudoer.name, home.path())).await;
    assert!(!ssh.is_root());
    let out = ssh
        .run_ok("id", ExecRequest::new("id -u").become_root(true))
        .await
        .unwrap();
    assert_eq!(out.stdout_str().trim(), "0");
    let out = ssh.run_ok("id", ExecRequest::new("id -u")).await.unwrap();
    assert_ne!(out.stdout_str().trim(), "0");
    // Root-only files are written through sudo too.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("root-only");
    ssh.put_file(
        path.to_str().unwrap(),
        b"x",
        &FileMeta::mode(0o600).owner("root"),
        true,
    )
    .await
    .unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().uid(), 0);

    let plain = plain_user();
    let ssh = connect(&target(&sshd, &plain.name, home.path())).await;
    match ssh.exec(ExecRequest::new("id -u").become_root(true)).await {
        Err(e @ TransportError::SudoNeedsPassword { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&plain.name) && text.contains("NOPASSWD"),
                "{text}"
            );
        }
        other => panic!("expected SudoNeedsPassword, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_or_silent_host_fails_fast_and_clearly() {
    let home = tempfile::tempdir().unwrap();
    let sshd = TestSshd::start();
    let mut t = target(&sshd, "root", home.path());

    // Nothing listening: refused at once.
    t.port = free_port();
    let err = refused(&t, &Credentials::default()).await;
    assert!(matches!(err, SshError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("Connection refused"), "{err}");

    // Something that accepts but never speaks SSH: the connect timeout fires.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    t.port = silent.local_addr().unwrap().port();
    t.connect_timeout = Duration::from_secs(1);
    let err = refused(&t, &Credentials::default()).await;
    assert!(matches!(err, SshError::Timeout { secs: 1, .. }), "{err}");
    assert!(
        err.to_string()
            .contains("no SSH answer within 1 s (host down"),
        "{err}"
    );
    assert!(!err.to_string().contains("fail2ban"), "{err}");
}

/// A host whose sshd answered before (its key is in known_hosts) and now
/// refuses this machine or ignores it: the likely cause, on a host init set
/// up, is its firewall's SSH rate limit or fail2ban, said with how long
/// each lasts.
#[tokio::test]
async fn a_host_that_answered_before_and_turns_us_away_names_the_firewall_and_fail2ban() {
    let home = tempfile::tempdir().unwrap();
    let sshd = TestSshd::start();
    let mut t = target(&sshd, "root", home.path());
    connect(&t).await.close().await;
    let known = std::fs::read_to_string(&t.known_hosts).unwrap();
    let key = known
        .lines()
        .find_map(|l| l.strip_prefix(&format!("[127.0.0.1]:{} ", sshd.port)))
        .unwrap_or_else(|| panic!("sshd's key recorded in:\n{known}"))
        .to_string();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (closed, quiet) = (free_port(), silent.local_addr().unwrap().port());
    std::fs::write(
        &t.known_hosts,
        format!("{known}[127.0.0.1]:{closed} {key}\n[127.0.0.1]:{quiet} {key}\n"),
    )
    .unwrap();

    t.port = closed;
    let err = refused(&t, &Credentials::default()).await.to_string();
    assert!(err.contains("Connection refused"), "{err}");
    for said in [
        "This machine has reached sshd there before",
        "ufw refuses a 6th new SSH connection from one address within 30 s (wait 30 s, then try again)",
        "fail2ban bans an address for 1h after 5 failed logins within 10m (wait 1h, or lift the ban from another address: sudo fail2ban-client set sshd unbanip",
        "Else sshd is not running, or listens on another port",
    ] {
        assert!(err.contains(said), "{said}: {err}");
    }

    t.port = quiet;
    t.connect_timeout = Duration::from_secs(1);
    let err = refused(&t, &Credentials::default()).await.to_string();
    assert!(
        err.contains("no SSH answer within 1 s. This machine has reached sshd there before"),
        "{err}"
    );
    assert!(err.contains("fail2ban bans an address for 1h"), "{err}");
    assert!(
        err.ends_with("Else the host is down or too busy to answer: raise --connect-timeout"),
        "{err}"
    );
}
