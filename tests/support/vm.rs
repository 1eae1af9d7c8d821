//! The "fresh VPS": a Debian 13 VM that `tests/vm/boot` starts under QEMU from
//! the cached image, on a throwaway overlay (see the script for the network).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct TestVm {
    /// Host ports forwarded to the guest's 22, 80, 443 and 5432.
    pub ssh_port: u16,
    pub http_port: u16,
    pub https_port: u16,
    pub probe_port: u16,
    /// Forwarded to the same port number in the guest (for moving sshd).
    pub alt_ssh_port: u16,
    /// The cached image directory (root key, password, kernel).
    pub image: PathBuf,
    dir: tempfile::TempDir,
}

impl TestVm {
    /// Boots a VM with `tests/vm/boot` (which builds the image on first use).
    pub fn boot() -> TestVm {
        let dir = tempfile::Builder::new()
            .prefix("vpsup-vm.")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/boot");
        let boot = || {
            Command::new("bash")
                .arg(&script)
                .arg(dir.path())
                .output()
                .expect("tests/vm/boot runs")
        };
        let mut out = boot();
        // Software emulation (TCG) on a busy machine now and then panics the
        // guest kernel in early boot (seen once in CI: "Fatal exception in
        // interrupt" 1.8 s in). That is the emulator, not vpsup: boot once more.
        if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Kernel panic") {
            eprintln!("the guest kernel panicked while booting; booting again");
            for stale in ["run.qcow2", "serial.log", "env", "qemu.pid"] {
                let _ = std::fs::remove_file(dir.path().join(stale));
            }
            out = boot();
        }
        let env = String::from_utf8_lossy(&out.stdout).into_owned();
        let value = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| {
                    panic!(
                        "tests/vm/boot did not report {key}: {}",
                        super::describe_output(&out)
                    )
                })
                .to_string()
        };
        let port = |key: &str| value(key).parse::<u16>().expect("a port number");
        let vm = TestVm {
            ssh_port: port("SSH_PORT"),
            http_port: port("HTTP_PORT"),
            https_port: port("HTTPS_PORT"),
            probe_port: port("PROBE_PORT"),
            alt_ssh_port: port("ALT_SSH_PORT"),
            image: PathBuf::from(value("IMAGE")),
            dir,
        };
        assert!(
            out.status.success(),
            "tests/vm/boot failed: {}",
            super::describe_output(&out)
        );
        vm
    }

    pub fn root_key(&self) -> PathBuf {
        self.image.join("root_key")
    }

    pub fn root_password(&self) -> String {
        std::fs::read_to_string(self.image.join("root_password"))
            .expect("root password file")
            .trim()
            .to_string()
    }

    pub fn serial_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serial.log")).unwrap_or_default()
    }

    /// Runs `command` on the guest with the OpenSSH client, as `user` with `key`
    /// (or any other `-o` options), never touching the caller's known_hosts.
    pub fn ssh(&self, user: &str, key: &Path, command: &str, extra: &[&str]) -> Output {
        self.ssh_on(self.ssh_port, user, key, command, extra)
    }

    /// `ssh` to another forwarded port.
    pub fn ssh_on(
        &self,
        port: u16,
        user: &str,
        key: &Path,
        command: &str,
        extra: &[&str],
    ) -> Output {
        Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
            ])
            .args([
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=20",
            ])
            .args(["-o", "IdentitiesOnly=yes", "-i"])
            .arg(key)
            .args(extra)
            .args(["-p", &port.to_string()])
            .arg(format!("{user}@127.0.0.1"))
            .arg(command)
            .output()
            .expect("ssh runs")
    }

    /// `ssh` as root with the image's key; panics when the command fails.
    pub fn root(&self, command: &str) -> String {
        let out = self.ssh("root", &self.root_key(), command, &[]);
        assert!(
            out.status.success(),
            "root@vm: {command}: {}",
            super::describe_output(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("qemu.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}
