//! The "fresh VPS": a Debian 13 VM booted under QEMU (software emulation) from
//! the cached image `tests/vm/build-image` makes, on a throwaway copy-on-write
//! overlay. Its network is a documentation range (198.51.100.0/24), so the guest
//! sees the test's connections coming from a public-looking address, as an
//! internet client's would; nothing leaves this machine.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::free_port;

pub struct TestVm {
    /// Host ports forwarded to the guest's 22, 80, 443 and 5432.
    pub ssh_port: u16,
    pub http_port: u16,
    pub https_port: u16,
    pub probe_port: u16,
    /// The cached image directory (root key, password, kernel).
    pub image: PathBuf,
    dir: tempfile::TempDir,
}

/// How long the guest may take to answer SSH (about 30-40 s measured under TCG).
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

impl TestVm {
    pub fn boot() -> TestVm {
        let image = build_image();
        let dir = tempfile::Builder::new()
            .prefix("vpsup-vm.")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let overlay = dir.path().join("run.qcow2");
        run_checked(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(image.join("disk.raw"))
                .arg(&overlay),
        );
        let (ssh_port, http_port, https_port, probe_port) =
            (free_port(), free_port(), free_port(), free_port());
        let netdev = format!(
            "user,id=n0,net=198.51.100.0/24,host=198.51.100.2,dns=198.51.100.3,\
             hostfwd=tcp:127.0.0.1:{ssh_port}-:22,hostfwd=tcp:127.0.0.1:{http_port}-:80,\
             hostfwd=tcp:127.0.0.1:{https_port}-:443,hostfwd=tcp:127.0.0.1:{probe_port}-:5432"
        );
        run_checked(
            Command::new("qemu-system-x86_64")
                .args([
                    "-accel",
                    "tcg,thread=multi",
                    "-cpu",
                    "max",
                    "-smp",
                    "2",
                    "-m",
                    "2048",
                ])
                .arg("-kernel")
                .arg(image.join("vmlinuz"))
                .arg("-initrd")
                .arg(image.join("initrd.img"))
                .args(["-append", "root=/dev/vda rw console=ttyS0 net.ifnames=0"])
                .arg("-drive")
                .arg(format!("file={},format=qcow2,if=virtio", overlay.display()))
                .args([
                    "-netdev",
                    &netdev,
                    "-device",
                    "virtio-net-pci,netdev=n0",
                    "-display",
                    "none",
                ])
                .arg("-serial")
                .arg(format!("file:{}", dir.path().join("serial.log").display()))
                .args(["-daemonize", "-pidfile"])
                .arg(dir.path().join("qemu.pid")),
        );
        let vm = TestVm {
            ssh_port,
            http_port,
            https_port,
            probe_port,
            image,
            dir,
        };
        vm.wait_for_ssh();
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
            .args(["-p", &self.ssh_port.to_string()])
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

    fn wait_for_ssh(&self) {
        let started = Instant::now();
        while started.elapsed() < BOOT_TIMEOUT {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.ssh_port)) {
                use std::io::Read;
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut banner = [0u8; 8];
                if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0-" {
                    return;
                }
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        panic!(
            "the VM did not answer SSH within {BOOT_TIMEOUT:?}; serial log:\n{}",
            self.serial_log()
        );
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("qemu.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// The cached image directory, built on first use (minutes).
fn build_image() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/build-image");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .expect("build-image runs");
    assert!(
        out.status.success(),
        "tests/vm/build-image failed: {}",
        super::describe_output(&out)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn run_checked(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}",
        super::describe_output(&out)
    );
}
