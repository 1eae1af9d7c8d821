//! The real `vpsup` binary, run as an operator would: its own HOME (so
//! ~/.ssh/config and known_hosts are the test's) and project directory.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

use super::{describe_output, TestSshd};

/// A throwaway operator: its own HOME (so ~/.ssh/config and known_hosts are
/// ours) and project directory.
pub struct Operator {
    pub home: tempfile::TempDir,
    pub project: tempfile::TempDir,
}

impl Operator {
    pub fn new() -> Operator {
        let op = Operator {
            home: tempfile::tempdir().unwrap(),
            project: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(op.home.path().join(".ssh")).unwrap();
        op
    }

    pub fn ssh_dir(&self) -> PathBuf {
        self.home.path().join(".ssh")
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.project.path().join("vpsup.toml"), text).unwrap();
    }

    pub fn vpsup(&self, args: &[&str]) -> Output {
        self.vpsup_with_stdin(args, b"")
    }

    pub fn vpsup_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        self.spawn(args, stdin).wait_with_output().unwrap()
    }

    /// Starts vpsup without waiting for it (to interrupt it, say).
    pub fn spawn(&self, args: &[&str], stdin: &[u8]) -> Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vpsup"))
            .args(args)
            .current_dir(self.project.path())
            .env("HOME", self.home.path())
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe_output(out)))
}

pub fn key_arg(sshd: &TestSshd) -> String {
    sshd.client_key.display().to_string()
}
