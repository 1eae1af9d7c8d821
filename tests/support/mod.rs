//! Shared harness for vpsup's integration tests.
//!
//! Every test talks to a REAL OpenSSH server (`/usr/sbin/sshd`) on 127.0.0.1, started
//! per test in its own temporary directory, never to a mock. The harness expects to run
//! as root on Debian with `openssh-server`, `openssh-client` and `sudo` installed (see
//! `tests/setup`). It never touches the machine's own sshd or `/etc/ssh`; the only
//! system-wide state it creates is two test users and one sudoers drop-in (see `users`),
//! and for the fan-out benchmark alone, network namespaces it removes again (`netns`).
//!
//! Use it from a test file with `mod support;` and `use support::*;`.

// Each integration test binary compiles this module on its own and uses only part of it.
#![allow(dead_code, unused_imports)]

mod agent;
mod bind;
pub mod load;
mod netns;
mod operator;
mod pebble;
mod receivers;
mod seaweedfs;
mod ssh_audit;
pub mod ssh_budget;
mod sshd;
mod sslyze;
mod users;
mod vm;

pub use agent::TestAgent;
pub use bind::TestBind;
pub use netns::FarHosts;
pub use operator::{json, key_arg, stderr, Operator};
pub use pebble::{NginxProcess, TestNginx, TestPebble};
pub use receivers::{Receiver, TestCa};
pub use seaweedfs::TestSeaweedFs;
pub use ssh_audit::{ssh_audit, Finding, SshAuditReport, SSH_AUDIT};
pub use sshd::{SshdOptions, TestSshd};
pub use sslyze::{mozilla_intermediate_problems, SSLYZE, TEST_CERTIFICATE_CHECKS};
pub use users::{plain_user, sudo_user, TestUser};
pub use vm::TestVm;

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Environment variable read by the script from [`write_askpass`].
pub const ASKPASS_SECRET_VAR: &str = "VPSUP_TEST_ASKPASS_SECRET";

/// A loopback port that was free a moment ago: bind 127.0.0.1:0, read the port, drop.
///
/// Another process may grab it before the caller binds it; [`TestSshd`] retries for that.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("free_port: cannot bind 127.0.0.1:0: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("free_port: cannot read the bound address: {e}"))
        .port()
}

/// Generates an ed25519 key pair at `dir/name` (+ `dir/name.pub`) and returns the private
/// key path. `passphrase: None` gives an unencrypted key; the comment is `name`. An
/// existing pair of that name is replaced.
pub fn generate_key(dir: &Path, name: &str, passphrase: Option<&str>) -> PathBuf {
    let path = dir.join(name);
    keygen(&path, name, passphrase.unwrap_or(""));
    path
}

/// `ssh-keygen -t ed25519` to `path`, replacing an existing pair (ssh-keygen would
/// otherwise stop at its "Overwrite?" prompt). An empty passphrase means unencrypted.
fn keygen(path: &Path, comment: &str, passphrase: &str) {
    remove_key_pair(path);
    run_checked(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-C", comment, "-N", passphrase])
            .arg("-f")
            .arg(path),
        &format!("ssh-keygen for {}", path.display()),
    );
}

/// Writes an executable `SSH_ASKPASS` helper into `dir` and returns its path.
///
/// It prints the value of [`ASKPASS_SECRET_VAR`] from its environment, so the secret is
/// never stored in the script or passed in argv. Use it with `SSH_ASKPASS=<path>`,
/// `SSH_ASKPASS_REQUIRE=force` and the secret in `VPSUP_TEST_ASKPASS_SECRET`, e.g. to make
/// `ssh` log in with a password or `ssh-add` unlock an encrypted key without a terminal.
pub fn write_askpass(dir: &Path) -> PathBuf {
    let path = dir.join("askpass.sh");
    let script = format!("#!/bin/sh\nprintf '%s\\n' \"${ASKPASS_SECRET_VAR}\"\n");
    fs::write(&path, script)
        .unwrap_or_else(|e| panic!("cannot write askpass script {}: {e}", path.display()));
    set_mode(&path, 0o755);
    path
}

/// Removes `path` and `path.pub` if present.
fn remove_key_pair(path: &Path) {
    for p in [path.to_path_buf(), path.with_file_name(pub_name(path))] {
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove old key file {}: {e}", p.display()),
        }
    }
}

fn pub_name(path: &Path) -> String {
    let name = path.file_name().expect("key path has a file name");
    format!("{}.pub", name.to_string_lossy())
}

/// Reads a whole text file or panics naming it.
fn read_text(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {:o} {}: {e}", mode, path.display()));
}

/// Runs `cmd` with stdin closed (so no tool can sit waiting on a prompt) and panics,
/// showing its output, unless it exits 0.
pub fn run_checked(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!("{what} failed ({}):\n{}", out.status, describe_output(&out));
    }
    out
}

/// stdout + stderr of a finished command, for panic messages.
pub fn describe_output(out: &Output) -> String {
    format!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// stdout then stderr of a finished command, as one text to search.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Sends `signal` (e.g. "TERM") to `pid` with the `kill` command; std has no signal API
/// and the only dev-dependency is tempfile. Errors are ignored: the process may be gone.
fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
