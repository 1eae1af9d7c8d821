//! System test users, created on demand and idempotently.
//!
//! Tests within one binary run on parallel threads and several test binaries (or nextest
//! processes) may run at once, so all changes to /etc/passwd, /etc/shadow and
//! /etc/sudoers.d happen under an exclusive `flock` on a file in /tmp. Every step checks
//! the current state first, so a second run (or a second process) changes nothing.

use super::{describe_output, set_mode};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// A local account that the test sshd accepts with the harness's client key (one shared
/// `AuthorizedKeysFile`) and, when password auth is on, with `password`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestUser {
    pub name: String,
    pub password: String,
}

const SUDO_USER: &str = "vpsup-sudo";
const SUDO_PASSWORD: &str = "vpsup-sudo-test-Pw-4271";
const PLAIN_USER: &str = "vpsup-plain";
const PLAIN_PASSWORD: &str = "vpsup-plain-test-Pw-8836";

const SUDOERS_FILE: &str = "/etc/sudoers.d/vpsup-test-sudo";
/// Serialises user and sudoers changes across threads and processes.
const LOCK_FILE: &str = "/tmp/vpsup-test-users.lock";

/// "vpsup-sudo": may run anything with `sudo -n`, without a password, through
/// /etc/sudoers.d/vpsup-test-sudo.
pub fn sudo_user() -> TestUser {
    // Once per process is enough; the lock covers other processes.
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        with_users_lock(|| {
            ensure_user(SUDO_USER, SUDO_PASSWORD);
            ensure_sudoers_entry();
        })
    });
    TestUser {
        name: SUDO_USER.into(),
        password: SUDO_PASSWORD.into(),
    }
}

/// "vpsup-plain": not in sudoers, so `sudo -n true` fails with "a password is required".
pub fn plain_user() -> TestUser {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| with_users_lock(|| ensure_user(PLAIN_USER, PLAIN_PASSWORD)));
    TestUser {
        name: PLAIN_USER.into(),
        password: PLAIN_PASSWORD.into(),
    }
}

fn with_users_lock<T>(f: impl FnOnce() -> T) -> T {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .unwrap_or_else(|e| panic!("cannot open lock file {LOCK_FILE}: {e}"));
    // flock: exclusive between processes and between separately opened handles in one
    // process; released when `file` is dropped, even if `f` panics.
    file.lock()
        .unwrap_or_else(|e| panic!("cannot lock {LOCK_FILE}: {e}"));
    f()
}

/// Creates `name` with a home directory and bash if missing, then (re)sets its password.
fn ensure_user(name: &str, password: &str) {
    if !user_exists(name) {
        let out = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/bash", name])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run useradd: {e}"));
        // Exit 9 = "already exists": another harness outside our lock (an older copy)
        // won the race, which is just as good.
        if !out.status.success() && out.status.code() != Some(9) {
            panic!(
                "useradd {name} failed ({}):\n{}",
                out.status,
                describe_output(&out)
            );
        }
    }
    set_password(name, password);
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .args(["-u", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run id: {e}"))
        .success()
}

/// Setting the same password again is harmless, and it also unlocks an account that
/// was created without one (sshd with `UsePAM no` refuses even key logins to accounts
/// whose shadow entry starts with "!").
fn set_password(name: &str, password: &str) {
    // The password goes through stdin, never argv, so it does not show up in `ps`.
    let mut child = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run chpasswd: {e}"));
    {
        let mut stdin = child.stdin.take().expect("chpasswd stdin is piped");
        writeln!(stdin, "{name}:{password}")
            .unwrap_or_else(|e| panic!("cannot write to chpasswd: {e}"));
    } // closing stdin lets chpasswd finish
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("chpasswd: {e}"));
    if !out.status.success() {
        panic!(
            "chpasswd for {name} failed ({}):\n{}",
            out.status,
            describe_output(&out)
        );
    }
}

/// Installs the NOPASSWD rule atomically, and only after `visudo` accepted it: a broken
/// file in /etc/sudoers.d would break sudo for the whole machine.
fn ensure_sudoers_entry() {
    let wanted = format!(
        "# Written by vpsup's integration-test harness (tests/support); safe to delete.\n\
         {SUDO_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n"
    );
    let target = Path::new(SUDOERS_FILE);
    let up_to_date = fs::read_to_string(target).is_ok_and(|c| c == wanted)
        && fs::metadata(target).is_ok_and(|m| m.permissions().mode() & 0o7777 == 0o440);
    if up_to_date {
        return;
    }
    // sudo skips names containing '.', so the staging file is never read half-written.
    let staging = target.with_file_name(format!(".vpsup-test-sudo.{}.tmp", std::process::id()));
    {
        let mut f = File::create(&staging)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", staging.display()));
        f.write_all(wanted.as_bytes())
            .and_then(|()| f.sync_all())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", staging.display()));
    }
    set_mode(&staging, 0o440);
    let check = Command::new("visudo")
        .arg("-cf")
        .arg(&staging)
        .stdin(Stdio::null())
        .output();
    match check {
        Ok(out) if out.status.success() => {}
        other => {
            let _ = fs::remove_file(&staging);
            match other {
                Ok(out) => panic!(
                    "visudo rejected the test sudoers rule:\n{}",
                    describe_output(&out)
                ),
                Err(e) => panic!("cannot run visudo: {e}"),
            }
        }
    }
    fs::rename(&staging, target).unwrap_or_else(|e| {
        let _ = fs::remove_file(&staging);
        panic!("cannot install {SUDOERS_FILE}: {e}")
    });
}
