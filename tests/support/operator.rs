//! The real `vpsup` binary, run as an operator would: its own HOME (so
//! ~/.ssh/config and known_hosts are the test's) and project directory.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{describe_output, ssh_budget, TestSshd};

/// A throwaway operator: its own HOME (so ~/.ssh/config and known_hosts are
/// ours) and project directory.
pub struct Operator {
    pub home: tempfile::TempDir,
    pub project: tempfile::TempDir,
    /// Its runs face a VM whose firewall rate-limits SSH (`ssh_budget`).
    facing_vm: bool,
}

impl Operator {
    pub fn new() -> Operator {
        let op = Operator {
            home: tempfile::tempdir().unwrap(),
            project: tempfile::tempdir().unwrap(),
            facing_vm: false,
        };
        std::fs::create_dir(op.home.path().join(".ssh")).unwrap();
        op
    }

    /// An operator of the test VM: each run waits for room in the VM's SSH
    /// rate limit (`ssh_budget`).
    pub fn facing_vm() -> Operator {
        Operator {
            facing_vm: true,
            ..Operator::new()
        }
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
        self.vpsup_with_env(args, stdin, &[])
    }

    /// vpsup with `env` set too (a PATH with a stand-in, say).
    pub fn vpsup_with_env(&self, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
        let run = || self.start(args, stdin, env).wait_with_output().unwrap();
        if self.facing_vm {
            ssh_budget::spend(connections(args), run)
        } else {
            run()
        }
    }

    /// Starts vpsup without waiting for it (to interrupt it, say).
    pub fn spawn(&self, args: &[&str], stdin: &[u8]) -> Child {
        if self.facing_vm {
            // It connects within seconds of starting.
            ssh_budget::spend_ahead(connections(args), Duration::from_secs(5));
        }
        self.start(args, stdin, &[])
    }

    fn start(&self, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vpsup"))
            .args(args)
            .envs(env.iter().copied())
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

/// The most SSH connections one vpsup run opens: init may try root and then
/// the admin, and proves the admin's access on the current port and on the
/// one it moves sshd to; the others reuse one connection.
fn connections(args: &[&str]) -> usize {
    if args.first() == Some(&"init") {
        4
    } else {
        1
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
