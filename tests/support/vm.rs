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
        self.ssh_command(port, user, key, extra)
            .arg(command)
            .output()
            .expect("ssh runs")
    }

    /// `ssh` to `user` on the VM's `port`, with `key` only, trusting any host
    /// key (a fresh VM each run); the command follows.
    fn ssh_command(&self, port: u16, user: &str, key: &Path, extra: &[&str]) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.args(["-F", "/dev/null", "-o", "BatchMode=yes"])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20"])
            .args(["-o", "IdentitiesOnly=yes", "-i"])
            .arg(key)
            .args(extra)
            .args(["-p", &port.to_string()])
            .arg(format!("{user}@127.0.0.1"));
        ssh
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

/// Waits out ufw's SSH rate limit on a VM that `vpsup init` hardened (the 6th
/// new connection within 30 s is dropped) before another group of connections.
pub fn cool_down() {
    std::thread::sleep(std::time::Duration::from_secs(31));
}

/// What `import_db_images` tags, as compose files name them: the image, the
/// entrypoint's command (tests/vm/db-entrypoint), and the official image's
/// settings that matter (not STOPSIGNAL: `docker commit` does not take it).
const DB_TAGS: [(&str, &str, &[&str]); 3] = [
    (
        "postgres:17",
        "postgres",
        &["VOLUME /var/lib/postgresql/data", "EXPOSE 5432"],
    ),
    (
        "redis:8",
        "redis-server",
        &["VOLUME /data", "WORKDIR /data", "EXPOSE 6379"],
    ),
    (
        "mariadb:11",
        "mariadbd",
        &["VOLUME /var/lib/mysql", "EXPOSE 3306"],
    ),
];

/// The imported rootfs every tag is made from.
const DB_BASE: &str = "vpsup-test/debian-db:trixie";

impl TestVm {
    /// Builds the database image (`tests/vm/build-db-image`: about 1.5 minutes
    /// the first time on this machine, cached after) and returns its directory.
    /// Only the backup stage needs it; `import_db_images` calls it.
    pub fn build_db_image() -> PathBuf {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/build-db-image");
        let out = Command::new("bash").arg(&script).output();
        let out = succeeded("tests/vm/build-db-image", out);
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    }

    /// Makes `postgres:17`, `redis:8` and `mariadb:11` exist on the VM without
    /// a registry: streams the database image's rootfs.tar over ssh into
    /// `docker import`, then tags it once per engine with the command and
    /// settings of the official image (`docker commit` of a created container
    /// adds only an empty layer). Compose's default `pull_policy: missing` then
    /// uses them. `user` must be in the docker group: after `vpsup init`, the
    /// admin user ("deploy") with the key it logs in with. Panics on failure.
    pub fn import_db_images(&self, user: &str, key: &Path) {
        let tar = Self::build_db_image().join("rootfs.tar");
        // PATH as tests/vm/check-db-image sets it: pg_dump & co. of version 17.
        let mut script = format!(
            "set -e\ndocker import --change 'ENTRYPOINT [\"/usr/local/bin/vpsup-test-db\"]' \
             --change 'ENV PATH=/usr/lib/postgresql/17/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
             - {DB_BASE} >/dev/null\n"
        );
        for (tag, command, settings) in DB_TAGS {
            let changes: String = settings
                .iter()
                .map(|s| format!(" --change '{s}'"))
                .collect();
            script.push_str(&format!(
                "c=$(docker create {DB_BASE})\n\
                 docker commit --change 'ENV VPSUP_TEST_DB_ENGINE={command}' --change 'CMD [\"{command}\"]'{changes} \"$c\" {tag} >/dev/null\n\
                 docker rm \"$c\" >/dev/null\n"
            ));
        }
        let out = self
            .ssh_command(self.ssh_port, user, key, &[])
            .arg(script)
            .stdin(std::fs::File::open(&tar).expect("rootfs.tar opens"))
            .output();
        succeeded("importing the database image", out);
    }
}

/// `out` of a command that must have succeeded; panics with its output otherwise.
fn succeeded(what: &str, out: std::io::Result<Output>) -> Output {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        super::describe_output(&out)
    );
    out
}
