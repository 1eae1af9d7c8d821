//! Tier 1: vpsup's restic scripts (src/backup/restic.rs, pipe.rs, manifest.rs)
//! run under dash through `LocalTransport` with the real `restic`, against a
//! local repository, SFTP to a real sshd and S3 on a real SeaweedFS. Faults
//! (failing, killed and empty dumps, wrong password, unreachable repository,
//! a tampered pack) must fail loudly and leave earlier snapshots intact.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{TestSeaweedFs, TestSshd};
use vpsup::backup::manifest::{self, Manifest, Part, MANIFEST_VERSION};
use vpsup::backup::pipe::{stdin_path, PipeError, Pipeline, Snapshot};
use vpsup::backup::restic::{
    check_passed, classify, parse_config, parse_forget, parse_snapshots, parse_summary, HostFiles,
    HostKeys, ReadData, RepoError, Repository, Retention, S3Credentials, SnapshotFilter,
    SnapshotId, SnapshotInfo, SnapshotMeta, SHORT_TIMEOUT,
};
use vpsup::backup::Engine;
use vpsup::transport::sections::Sections;
use vpsup::transport::{ExecOutput, ExecRequest, LocalTransport, Transport};

const APP: &str = "shop";
const HOST: &str = "web-1";
const PASSWORD: &str = "vpsup-test-repo-password-7731";
const LONG: Duration = Duration::from_secs(300);

/// One repository, the host files that reach it, and the server behind it.
struct Fixture {
    repo: Repository,
    dir: tempfile::TempDir,
    /// Where the repository's files are on this machine (local and SFTP).
    store: Option<PathBuf>,
    sshd: Option<TestSshd>,
    weed: Option<TestSeaweedFs>,
    s3: Option<S3Credentials>,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Local,
    Sftp,
    S3,
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

impl Fixture {
    /// A fresh, initialised repository of `kind`.
    async fn new(kind: Kind) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("vpsup-backup-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path().display().to_string();
        let files = HostFiles::under(&d);
        let store = dir.path().join("repo");
        let (mut sshd, mut weed, mut s3) = (None, None, None);
        let (url, host_keys) = match kind {
            Kind::Local => (store.display().to_string(), HostKeys::Pinned),
            Kind::Sftp => {
                let server = TestSshd::start();
                std::fs::copy(&server.client_key, &files.ssh_key).unwrap();
                write_private(
                    Path::new(&files.known_hosts),
                    &format!("{}\n", server.known_hosts_line),
                );
                let url = format!("sftp://root@127.0.0.1:{}/{}", server.port, store.display());
                sshd = Some(server);
                (url, HostKeys::Pinned)
            }
            Kind::S3 => {
                let server = TestSeaweedFs::start();
                s3 = Some(
                    S3Credentials::parse(&format!(
                        "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
                        server.access_key, server.secret_key
                    ))
                    .unwrap(),
                );
                let url = server.repository(&format!("{APP}-{}", std::process::id()));
                weed = Some(server);
                (url, HostKeys::Pinned)
            }
        };
        let repo = Repository::new(&url, files, host_keys).unwrap();
        write_private(Path::new(&repo.files.password), &format!("{PASSWORD}\n"));
        let fixture = Fixture {
            dir,
            store: (!matches!(kind, Kind::S3)).then_some(store),
            sshd,
            weed,
            s3,
            repo,
        };
        fixture.write_env();
        fixture.init().await;
        fixture
    }

    fn write_env(&self) {
        let env = self.repo.env_file(self.s3.as_ref()).unwrap();
        write_private(Path::new(&self.repo.files.env), &env);
    }

    /// Creates the repository only after the preflight said "none there", as
    /// deploy will; S3 may need a few seconds after its port opened.
    async fn init(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = exec(&self.repo.cat_config(SHORT_TIMEOUT), None).await;
            if out.success() {
                panic!(
                    "a fresh location already holds a repository: {}",
                    out.stdout_str()
                );
            }
            match classify(out.exit_status, &out.stderr_str()) {
                RepoError::NoRepository { .. } => break,
                other if Instant::now() > deadline => {
                    panic!("preflight never saw an empty location: {other}")
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        let out = exec(&self.repo.init(SHORT_TIMEOUT), None).await;
        assert!(out.success(), "init: {}", out.stderr_str());
        let created = parse_config(&out.stdout_str()).unwrap();
        assert_eq!(created.id.len(), 64);
        // The preflight now names the same repository.
        assert_eq!(self.preflight().await.unwrap().id, created.id);
    }

    async fn preflight(&self) -> Result<vpsup::backup::restic::RepoConfig, RepoError> {
        let out = exec(&self.repo.cat_config(Duration::from_secs(20)), None).await;
        if out.success() {
            Ok(parse_config(&out.stdout_str()).unwrap())
        } else {
            Err(classify(out.exit_status, &out.stderr_str()))
        }
    }

    fn pipeline(&self, service: &str, producer: &str, min_bytes: u64) -> Pipeline {
        Pipeline {
            producer: producer.to_string(),
            filename: stdin_path(APP, service, "dump"),
            meta: {
                // As a scheduled backup's: subject to the retention policy.
                let mut meta = SnapshotMeta::data(HOST, APP, service, "postgres", "run1").unwrap();
                meta.tags
                    .push(vpsup::backup::restic::RETAINED_TAG.to_string());
                meta
            },
            timeout: LONG,
            min_bytes,
        }
    }

    async fn run_pipeline(
        &self,
        pipeline: &Pipeline,
        stdin: Option<&[u8]>,
    ) -> Result<Snapshot, PipeError> {
        let sections = Sections::random();
        let out = exec(&pipeline.script(&self.repo, &sections), stdin).await;
        let result = pipeline.parse(&sections, &out.stdout_str());
        assert_eq!(
            out.success(),
            result.is_ok(),
            "exit status and report disagree: {result:?}\n{}",
            out.stderr_str()
        );
        result
    }

    async fn snapshots(&self) -> Vec<SnapshotInfo> {
        let out = exec(&self.repo.snapshots(&SnapshotFilter::app(APP)), None).await;
        assert!(out.success(), "snapshots: {}", out.stderr_str());
        parse_snapshots(&out.stdout_str()).unwrap()
    }

    async fn dump(&self, id: &str, path: &str) -> Vec<u8> {
        let script = self
            .repo
            .dump(&SnapshotId::parse(id).unwrap(), path, SHORT_TIMEOUT);
        let out = exec(&script, None).await;
        assert!(out.success(), "dump: {}", out.stderr_str());
        out.stdout
    }

    async fn check(&self) -> ExecOutput {
        exec(&self.repo.check(&ReadData::All, LONG), None).await
    }

    /// Stale locks a crashed restic would leave behind.
    async fn locks(&self) -> String {
        let script = format!(
            "{}exec {} list locks --no-lock\n",
            self.repo.script_prelude(),
            self.repo.restic()
        );
        let out = exec(&script, None).await;
        assert!(out.success(), "list locks: {}", out.stderr_str());
        out.stdout_str()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

async fn exec(script: &str, stdin: Option<&[u8]>) -> ExecOutput {
    let mut req = ExecRequest::new(script);
    if let Some(bytes) = stdin {
        req = req.stdin(bytes.to_vec());
    }
    LocalTransport::current().exec(req).await.unwrap()
}

/// Incompressible bytes, so restic's sizes are the data's own.
fn random_file(path: &Path, bytes: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(bytes);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ bytes as u64;
    while data.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(bytes);
    std::fs::write(path, &data).unwrap();
    data
}

/// Everything a backup run does, on one repository.
async fn round_trip(f: &Fixture) {
    // A dump streamed through the pipeline comes back byte for byte.
    let source = f.path("db.dump");
    let data = random_file(&source, 300_000);
    let producer = format!("cat {}", source.display());
    let snap = f
        .run_pipeline(&f.pipeline("db", &producer, 512), None)
        .await
        .unwrap();
    assert_eq!(snap.bytes, 300_000);
    assert!(snap.data_added >= 300_000, "{snap:?}");
    let listed = f.snapshots().await;
    assert_eq!(listed.len(), 1);
    let s = &listed[0];
    assert!(s.id.starts_with(&snap.id) && s.hostname == HOST, "{s:?}");
    assert_eq!(s.paths, ["/shop+db+dump"]);
    assert_eq!(
        (
            s.tag("app"),
            s.tag("service"),
            s.tag("engine"),
            s.tag("run")
        ),
        (Some(APP), Some("db"), Some("postgres"), Some("run1"))
    );
    assert!(s.tags.contains(&"vpsup".to_string()));
    assert_eq!(f.dump(&snap.id, "/shop+db+dump").await, data);

    // The manifest is a snapshot of its own, found by its tags.
    let m = Manifest {
        version: MANIFEST_VERSION,
        run: "run1".into(),
        app: APP.into(),
        service: "db".into(),
        engine: Engine::Postgres {
            mode: Default::default(),
        },
        image: "postgres:17".into(),
        parts: vec![Part {
            path: "/shop+db+dump".into(),
            snapshot: snap.id.clone(),
            bytes: snap.bytes,
        }],
        pg_counts: Default::default(),
        redis: Default::default(),
    };
    let store = m.store(HOST, LONG).unwrap();
    f.run_pipeline(&store, Some(m.to_json().as_bytes()))
        .await
        .unwrap();
    let out = exec(
        &manifest::fetch(&f.repo, APP, "db", Some("run1"), SHORT_TIMEOUT),
        None,
    )
    .await;
    assert!(out.success(), "fetch manifest: {}", out.stderr_str());
    assert_eq!(Manifest::from_json(&out.stdout_str()).unwrap(), m);
    let mut only_manifests = SnapshotFilter::app(APP);
    only_manifests.manifests_only = true;
    let out = exec(&f.repo.snapshots(&only_manifests), None).await;
    assert_eq!(parse_snapshots(&out.stdout_str()).unwrap().len(), 1);

    // A volume: backed up from its directory, restored and verified elsewhere.
    let volume = f.path("volume");
    std::fs::create_dir_all(volume.join("sub")).unwrap();
    let photo = random_file(&volume.join("sub/photo.jpg"), 50_000);
    std::fs::write(volume.join("notes.txt"), "hello\n").unwrap();
    let meta = SnapshotMeta::data(HOST, APP, "uploads", "volume", "run1").unwrap();
    let out = exec(
        &f.repo
            .backup_dir(&volume.display().to_string(), &meta, LONG),
        None,
    )
    .await;
    assert!(out.success(), "backup_dir: {}", out.stderr_str());
    let summary = parse_summary(&out.stdout_str()).unwrap();
    assert_eq!(summary.total_bytes_processed, 50_006);
    let target = f.path("restored");
    let id = SnapshotId::parse(&summary.snapshot_id).unwrap();
    let out = exec(
        &f.repo.restore(&id, &target.display().to_string(), LONG),
        None,
    )
    .await;
    assert!(out.success(), "restore: {}", out.stderr_str());
    assert!(
        out.stdout_str().contains("verifying"),
        "{}",
        out.stdout_str()
    );
    assert_eq!(std::fs::read(target.join("sub/photo.jpg")).unwrap(), photo);
    assert_eq!(
        std::fs::read_to_string(target.join("notes.txt")).unwrap(),
        "hello\n"
    );

    // Retention: a second run of db, then keep one daily per path. The run's
    // volume and manifest are other paths, so they stay.
    let second = f
        .run_pipeline(&f.pipeline("db", &producer, 512), None)
        .await
        .unwrap();
    assert!(
        second.data_added < 100_000,
        "the unchanged dump dedups: {second:?}"
    );
    let keep = Retention {
        hourly: 0,
        daily: 1,
        weekly: 0,
        monthly: 0,
        yearly: 0,
    };
    let out = exec(&f.repo.forget(APP, HOST, &keep, true, LONG), None).await;
    assert!(out.success(), "forget: {}", out.stderr_str());
    let groups = parse_forget(&out.stdout_str()).unwrap();
    let removed: Vec<&str> = groups
        .iter()
        .flat_map(|g| g.remove.iter().flatten())
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(removed.len(), 1, "{groups:?}");
    assert!(
        removed[0].starts_with(&snap.id),
        "the older db snapshot goes: {removed:?}"
    );
    let left = f.snapshots().await;
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.iter().any(|s| s.id.starts_with(&second.id)));

    let out = f.check().await;
    assert!(
        check_passed(out.exit_status, &out.stdout_str()),
        "check: {}{}",
        out.stdout_str(),
        out.stderr_str()
    );
    assert_eq!(f.locks().await, "");
}

/// Producers that fail in every way leave no snapshot, keep the earlier one,
/// and leave no lock behind.
async fn faults(f: &Fixture) {
    let source = f.path("db.dump");
    let data = random_file(&source, 200_000);
    let good = f
        .run_pipeline(
            &f.pipeline("db", &format!("cat {}", source.display()), 512),
            None,
        )
        .await
        .unwrap();

    let half = format!(
        "head -c 100000 {}; echo 'pg_dump: error: boom' >&2; exit 2",
        source.display()
    );
    match f.run_pipeline(&f.pipeline("db", &half, 512), None).await {
        Err(PipeError::DumpFailed { exit: 2, tail }) => assert!(tail.contains("boom"), "{tail}"),
        other => panic!("a dump that failed halfway: {other:?}"),
    }
    let killed = format!("head -c 100000 {}; kill -9 $$", source.display());
    match f.run_pipeline(&f.pipeline("db", &killed, 512), None).await {
        Err(e @ PipeError::DumpFailed { exit: 137, .. }) => {
            assert!(e.to_string().contains("killed"), "{e}")
        }
        other => panic!("a killed dump: {other:?}"),
    }
    match f.run_pipeline(&f.pipeline("db", "true", 512), None).await {
        // restic refuses an empty stdin file itself ("snapshot is empty",
        // exit 1) or writes one that vpsup forgets (exit 3, or too small).
        Err(PipeError::TooSmall { bytes: 0, .. })
        | Err(PipeError::ResticFailed { exit: 1 | 3, .. }) => {}
        other => panic!("an empty dump: {other:?}"),
    }
    match f
        .run_pipeline(&f.pipeline("db", "echo tiny", 512), None)
        .await
    {
        Err(
            e @ PipeError::TooSmall {
                bytes: 5, min: 512, ..
            },
        ) => {
            assert!(e.to_string().contains("below the 512"), "{e}")
        }
        other => panic!("a tiny dump: {other:?}"),
    }
    let listed = f.snapshots().await;
    assert_eq!(listed.len(), 1, "only the good snapshot: {listed:?}");
    assert!(listed[0].id.starts_with(&good.id));
    assert_eq!(f.dump(&good.id, "/shop+db+dump").await, data);
    assert_eq!(
        f.locks().await,
        "",
        "an interrupted restic removes its lock"
    );
    let out = f.check().await;
    assert!(
        check_passed(out.exit_status, &out.stdout_str()),
        "{}",
        out.stderr_str()
    );

    // A wrong password is named as such, by the preflight and by a backup.
    write_private(Path::new(&f.repo.files.password), "not-the-password\n");
    assert!(matches!(
        f.preflight().await,
        Err(RepoError::WrongPassword { .. })
    ));
    match f
        .run_pipeline(
            &f.pipeline("db", &format!("cat {}", source.display()), 512),
            None,
        )
        .await
    {
        Err(PipeError::ResticFailed {
            error: RepoError::WrongPassword { .. },
            ..
        }) => {}
        other => panic!("a backup with the wrong password: {other:?}"),
    }
    write_private(Path::new(&f.repo.files.password), &format!("{PASSWORD}\n"));
    assert_eq!(f.snapshots().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn local_repository_round_trip() {
    round_trip(&Fixture::new(Kind::Local).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sftp_repository_round_trip() {
    round_trip(&Fixture::new(Kind::Sftp).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_repository_round_trip() {
    round_trip(&Fixture::new(Kind::S3).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_on_a_local_repository_leave_earlier_snapshots_intact() {
    faults(&Fixture::new(Kind::Local).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_on_an_sftp_repository_leave_earlier_snapshots_intact() {
    faults(&Fixture::new(Kind::Sftp).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_sftp_server_or_a_changed_host_key_is_named() {
    let mut f = Fixture::new(Kind::Sftp).await;
    let sshd = f.sshd.as_mut().unwrap();
    sshd.regenerate_host_key_and_restart();
    match f.preflight().await {
        Err(e @ RepoError::Unreachable { .. }) => {
            assert!(e.to_string().contains("host key"), "{e}")
        }
        other => panic!("a changed host key: {other:?}"),
    }
    let closed = support::free_port();
    let url = format!(
        "sftp://root@127.0.0.1:{closed}/{}",
        f.store.as_ref().unwrap().display()
    );
    f.repo = Repository::new(&url, f.repo.files.clone(), HostKeys::Pinned).unwrap();
    f.write_env();
    match f.preflight().await {
        Err(e @ RepoError::Unreachable { .. }) => {
            assert!(e.to_string().contains("Connection refused"), "{e}")
        }
        other => panic!("a closed port: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_faults_wrong_secret_unreachable_and_secrets_never_in_argv() {
    let mut f = Fixture::new(Kind::S3).await;
    let source = f.path("db.dump");
    random_file(&source, 100_000);

    // While a slow backup runs, no process argument holds a secret.
    let slow = Pipeline {
        producer: format!("cat {}; sleep 3", source.display()),
        ..f.pipeline("db", "", 512)
    };
    let sections = Sections::random();
    let script = slow.script(&f.repo, &sections);
    let running = tokio::spawn(async move { exec(&script, None).await });
    let secrets = [
        PASSWORD.to_string(),
        f.weed.as_ref().unwrap().secret_key.clone(),
    ];
    let (mut seen_restic, started) = (false, Instant::now());
    while !running.is_finished() && started.elapsed() < Duration::from_secs(30) {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            seen_restic |= text.contains("restic") && text.contains("--stdin-filename");
            for secret in &secrets {
                assert!(!text.contains(secret.as_str()), "a secret in argv: {text}");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_restic, "the scan saw the running restic");
    let out = running.await.unwrap();
    slow.parse(&sections, &out.stdout_str()).unwrap();

    // A wrong secret is not "no repository" (init must never run on it).
    let good = f.s3.clone().unwrap();
    f.s3 = Some(S3Credentials {
        secret_access_key: "wrong-secret".into(),
        ..good.clone()
    });
    f.write_env();
    match f.preflight().await {
        Err(RepoError::Denied { .. }) => {}
        other => panic!("a wrong S3 secret: {other:?}"),
    }
    f.s3 = Some(good);
    f.write_env();
    assert_eq!(f.snapshots().await.len(), 1);

    // The store goes away.
    let port = f.weed.as_ref().unwrap().s3_port;
    drop(f.weed.take());
    match f.preflight().await {
        Err(e @ RepoError::Unreachable { .. }) => {
            assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}")
        }
        other => panic!("a stopped S3 store: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_pack_fails_check_and_dump() {
    let f = Fixture::new(Kind::Sftp).await;
    let source = f.path("db.dump");
    random_file(&source, 200_000);
    let snap = f
        .run_pipeline(
            &f.pipeline("db", &format!("cat {}", source.display()), 512),
            None,
        )
        .await
        .unwrap();
    // Flip one byte in the middle of the largest data pack.
    let data = f.store.as_ref().unwrap().join("data");
    let pack = walk(&data)
        .into_iter()
        .max_by_key(|p| p.metadata().unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&pack, bytes).unwrap();

    let out = f.check().await;
    assert!(
        !check_passed(out.exit_status, &out.stdout_str()),
        "check missed it:\n{}",
        out.stdout_str()
    );
    let script = f.repo.dump(
        &SnapshotId::parse(&snap.id).unwrap(),
        "/shop+db+dump",
        SHORT_TIMEOUT,
    );
    let out = exec(&script, None).await;
    assert!(!out.success(), "dump of a tampered pack succeeded");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
