//! A private `ssh-agent` per test, so tests never see (or pollute) a developer's agent.

use super::{describe_output, run_checked, write_askpass, ASKPASS_SECRET_VAR};
use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// `ssh-agent -D -a <sock>` in its own temporary directory; killed on Drop.
/// Point code under test at it with `SSH_AUTH_SOCK=<sock>`.
pub struct TestAgent {
    pub sock: PathBuf,
    child: Child,
    // Dropped after `Drop::drop` has killed the agent.
    dir: TempDir,
}

impl TestAgent {
    pub fn start() -> TestAgent {
        let dir = tempfile::Builder::new()
            .prefix("vpsup-agent-")
            // Not $TMPDIR: a long path would exceed the 108-byte unix socket path limit.
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("cannot create a temp dir for ssh-agent: {e}"));
        let sock = dir.path().join("agent.sock");
        let stderr_path = dir.path().join("agent.stderr");
        let stderr = File::create(&stderr_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", stderr_path.display()));
        let mut child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null()) // only the "SSH_AUTH_SOCK=...; export" lines we already know
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start ssh-agent: {e}"));

        // Ready once the socket accepts a connection: the socket file appears at bind(),
        // before listen(), so its mere existence is not enough (connects get refused).
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&sock).is_err() {
            let log = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
            if let Ok(Some(status)) = child.try_wait() {
                panic!("ssh-agent exited early ({status}); stderr:\n{}", log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ssh-agent did not accept connections on {} within 10 s; stderr:\n{}",
                    sock.display(),
                    log()
                );
            }
            sleep(Duration::from_millis(10));
        }
        TestAgent { sock, child, dir }
    }

    /// Adds an unencrypted private key (`ssh-add <key>`).
    pub fn add(&self, key: &Path) {
        run_checked(
            self.ssh_add().arg(key),
            &format!(
                "ssh-add {} (encrypted keys need add_with_passphrase)",
                key.display()
            ),
        );
    }

    /// Adds a passphrase-protected key, answering ssh-add's prompt through SSH_ASKPASS.
    pub fn add_with_passphrase(&self, key: &Path, passphrase: &str) {
        let askpass = write_askpass(self.dir.path());
        run_checked(
            self.ssh_add()
                .arg(key)
                .env("SSH_ASKPASS", askpass)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env(ASKPASS_SECRET_VAR, passphrase),
            &format!("ssh-add {} with passphrase", key.display()),
        );
    }

    /// `ssh-add -l`: one fingerprint line per key, or "" when the agent holds none.
    pub fn list(&self) -> String {
        let out: Output = self
            .ssh_add()
            .arg("-l")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run ssh-add -l: {e}"));
        match out.status.code() {
            Some(0) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Some(1) => String::new(), // "The agent has no identities."
            _ => panic!(
                "ssh-add -l failed ({}):\n{}",
                out.status,
                describe_output(&out)
            ),
        }
    }

    /// ssh-add talking to this agent only, never prompting on a terminal.
    fn ssh_add(&self) -> Command {
        let mut cmd = Command::new("ssh-add");
        cmd.env("SSH_AUTH_SOCK", &self.sock)
            .env_remove("SSH_AGENT_PID")
            .env_remove("SSH_ASKPASS")
            .env_remove("DISPLAY");
        cmd
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
