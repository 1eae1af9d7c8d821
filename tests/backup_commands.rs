//! `commands::backup`'s host-side steps through `LocalTransport` where they
//! need no Docker: the host settings written 0600 and read back, `backup
//! init` and `list` against a real local restic repository, the repository
//! id guard, the app's backup lock (an operator refused at once, the timer
//! waiting for it, or recording that it never got it), and `restore`'s
//! refusal without `--yes`.
//! (The VM test covers backups of real containers.)

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use vpsup::backup::host::{self as backup, Action, AppBackup, HostReport};
use vpsup::backup::host_settings::{self, Changed, HostSettings, RunKind};
use vpsup::backup::lock::Runner;
use vpsup::backup::pipe::{stdin_path, Pipeline};
use vpsup::backup::restic::{HostFiles, HostKeys, Repository, SnapshotMeta};
use vpsup::config::Config;
use vpsup::hostlock::Wait;
use vpsup::transport::sections::Sections;
use vpsup::transport::{ExecRequest, LocalTransport, Transport};

fn unique_app(word: &str) -> String {
    format!("t{word}{}", std::process::id())
}

fn config(app: &str, repo: &str) -> Config {
    Config::parse(
        &format!("[app]\nname = \"{app}\"\n\n[backup]\nrepository = \"{repo}\"\n"),
        Path::new("vpsup.toml"),
    )
    .unwrap()
}

/// Removes what a test left in the host's standard places.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let app = &self.0;
        let _ = std::fs::remove_file(host_settings::settings_path(app));
        let _ = std::fs::remove_dir_all(format!("/etc/vpsup/backup/{app}"));
        let _ = std::fs::remove_dir_all(host_settings::state_dir(app));
    }
}

#[tokio::test]
async fn host_settings_are_written_private_once_and_read_back() {
    let app = unique_app("hs");
    let _cleanup = Cleanup(app.clone());
    let project = tempfile::tempdir().unwrap();
    let config = config(&app, "/srv/backups/x");
    let backup = config.backup.as_ref().unwrap();
    assert!(host_settings::ensure_password(backup, project.path()).unwrap());
    let files = host_settings::files(&config, project.path(), "web-1").unwrap();
    let transport = LocalTransport::new("test", true);
    let first = host_settings::write(&transport, &files).await.unwrap();
    assert!(
        matches!(&first, Changed::Written(paths) if paths.len() == 3),
        "{first:?}"
    );
    assert_eq!(
        host_settings::write(&transport, &files).await.unwrap(),
        Changed::Unchanged
    );
    for file in &files {
        let mode = std::fs::metadata(&file.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.path);
    }
    let read = host_settings::read(Path::new(&host_settings::settings_path(&app))).unwrap();
    assert_eq!(
        (read.app.as_str(), read.host.as_str()),
        (app.as_str(), "web-1")
    );
    let password = std::fs::read_to_string(format!("/etc/vpsup/backup/{app}/password")).unwrap();
    let local = std::fs::read_to_string(project.path().join(".vpsup/backup-password")).unwrap();
    assert_eq!(password, local);
    assert!(!std::fs::read_to_string(host_settings::settings_path(&app))
        .unwrap()
        .contains(password.trim()));
}

/// An app whose repository files live in a temp dir, run by `runner`.
fn job(app: &str, dir: &Path, repo_path: &Path, runner: Runner) -> AppBackup {
    let files = HostFiles::under(&dir.display().to_string());
    let repo = Repository::new(
        &repo_path.display().to_string(),
        files.clone(),
        HostKeys::AcceptNew,
    )
    .unwrap();
    std::fs::write(&files.password, "correct horse battery staple\n").unwrap();
    std::fs::write(&files.env, repo.env_file(None).unwrap()).unwrap();
    let config = config(app, &repo_path.display().to_string());
    let settings = HostSettings {
        app: app.to_string(),
        host: "web-1".to_string(),
        backup: config.backup.unwrap(),
    };
    let mut job = AppBackup::new(settings, "a test (cargo test)".to_string(), runner).unwrap();
    job.repo = repo;
    job.lock_path = dir.join("backup.lock").display().to_string();
    job
}

#[tokio::test]
async fn init_creates_only_once_list_shows_data_and_a_changed_repository_is_refused() {
    let app = unique_app("init");
    let _cleanup = Cleanup(app.clone());
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let job = job(&app, dir.path(), &repo_dir, Runner::Operator);
    let transport = LocalTransport::new("test", true);

    // No repository yet: a backup's preflight says so and creates nothing.
    let refused = backup::preflight(&transport, &job).await.unwrap_err();
    assert!(refused.contains("no restic repository"), "{refused}");
    assert!(!repo_dir.join("config").exists());

    let mut report = HostReport::default();
    backup::on_host(&transport, &job, &Action::Init, &mut report).await;
    assert_eq!(report.error, None);
    let id = report.repository.clone().unwrap();
    assert_eq!(id.len(), 64);
    assert!(repo_dir.join("config").exists());
    let recorded = std::fs::read_to_string(host_settings::repository_id_path(&app)).unwrap();
    assert_eq!(recorded.trim(), id);
    // Again: the same repository, not a new one.
    let mut again = HostReport::default();
    backup::on_host(&transport, &job, &Action::Init, &mut again).await;
    assert_eq!(again.repository.as_deref(), Some(id.as_str()));

    // One data snapshot and its manifest: the listing shows the data only.
    for (file, kind) in [("shop.pgdump", None), ("manifest.json", Some("manifest"))] {
        let meta = match kind {
            None => SnapshotMeta::data("web-1", &app, "db", "postgres", "r1").unwrap(),
            Some(_) => SnapshotMeta::manifest("web-1", &app, "db", "r1").unwrap(),
        };
        let pipeline = Pipeline {
            producer: "head -c 4096 /dev/urandom".to_string(),
            filename: stdin_path(&app, "db", file),
            meta,
            timeout: std::time::Duration::from_secs(60),
            min_bytes: 16,
        };
        let sections = Sections::random();
        let out = transport
            .exec(ExecRequest::new(pipeline.script(&job.repo, &sections)))
            .await
            .unwrap();
        pipeline.parse(&sections, &out.stdout_str()).unwrap();
    }
    let mut listing = HostReport::default();
    backup::on_host(&transport, &job, &Action::List, &mut listing).await;
    assert_eq!(listing.error, None);
    let paths: Vec<(&str, &str)> = listing
        .snapshots
        .iter()
        .map(|s| (s.service.as_str(), s.path.as_str()))
        .collect();
    assert_eq!(paths, [("db", format!("/{app}+db+shop.pgdump").as_str())]);

    // Another repository at the same place: refused, naming the id file.
    std::fs::write(host_settings::repository_id_path(&app), "f".repeat(64)).unwrap();
    let mut refused = HostReport::default();
    backup::on_host(&transport, &job, &Action::List, &mut refused).await;
    let error = refused.error.unwrap();
    assert!(
        error.contains("is not the one app") && error.contains("repository-id"),
        "{error}"
    );
    assert!(refused.snapshots.is_empty());
}

/// The app's lock as another live run holds it: `owner`, taken 30 s ago,
/// leased for 10 min, by process `pid` on this host.
fn hold_lock(lock: &Path, owner: &str, pid: u32) {
    std::fs::create_dir(lock).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(lock.join("since"), format!("{}\n", now - 30)).unwrap();
    std::fs::write(lock.join("lease"), format!("{}\n", now + 600)).unwrap();
    std::fs::write(lock.join("pid"), format!("{pid}\n")).unwrap();
    std::fs::write(lock.join("token"), "theirs\n").unwrap();
    std::fs::write(lock.join("owner"), format!("{owner}\n")).unwrap();
}

/// A timer's run that waits at most `up_to`, trying every 200 ms.
fn timer(up_to: std::time::Duration) -> Runner {
    Runner::Timer(Wait {
        up_to,
        every: std::time::Duration::from_millis(200),
    })
}

#[tokio::test]
async fn an_operators_backup_is_refused_at_once_while_another_holds_the_apps_lock() {
    let app = unique_app("lock");
    let _cleanup = Cleanup(app.clone());
    let dir = tempfile::tempdir().unwrap();
    let job = job(&app, dir.path(), &dir.path().join("repo"), Runner::Operator);
    hold_lock(
        Path::new(&job.lock_path),
        "alice@laptop (vpsup restore)",
        std::process::id(),
    );
    let mut report = HostReport::default();
    let started = std::time::Instant::now();
    backup::on_host(
        &LocalTransport::new("test", true),
        &job,
        &Action::Backup,
        &mut report,
    )
    .await;
    let error = report.error.unwrap();
    assert!(
        error.contains("locked by alice@laptop (vpsup restore)"),
        "{error}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(report.run.is_none(), "nothing ran");
    assert!(!Path::new(&host_settings::last_run_path(&app, RunKind::Backup)).exists());
}

/// The host's own run (the timer) waits while another live process holds
/// the lock, and runs once it is given back.
#[tokio::test]
async fn a_timer_run_waits_for_the_apps_lock_then_runs() {
    let app = unique_app("wait");
    let _cleanup = Cleanup(app.clone());
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let job = job(
        &app,
        dir.path(),
        &repo_dir,
        timer(std::time::Duration::from_secs(60)),
    );
    let mut holder = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let lock = Path::new(&job.lock_path).to_path_buf();
    hold_lock(&lock, "the drill timer on web-1", holder.id());
    let released = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        // As the holder gives it back, still alive.
        std::fs::remove_dir_all(&lock).unwrap();
        let _ = holder.kill();
        holder.wait().unwrap();
    });
    let mut report = HostReport::default();
    let started = std::time::Instant::now();
    backup::on_host(
        &LocalTransport::new("test", true),
        &job,
        &Action::Init,
        &mut report,
    )
    .await;
    released.join().unwrap();
    assert_eq!(report.error, None);
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    assert!(
        repo_dir.join("config").exists(),
        "it ran once the lock was free"
    );
    assert!(
        !Path::new(&job.lock_path).exists(),
        "and gave the lock back"
    );
}

/// A timer's run that waited as long as it may is recorded as failed,
/// naming the holder, where `status` reads it; the holder's lock stays.
#[tokio::test]
async fn a_timer_run_that_never_gets_the_lock_is_recorded_as_failed() {
    let app = unique_app("waited");
    let _cleanup = Cleanup(app.clone());
    let dir = tempfile::tempdir().unwrap();
    let job = job(
        &app,
        dir.path(),
        &dir.path().join("repo"),
        timer(std::time::Duration::from_secs(1)),
    );
    hold_lock(
        Path::new(&job.lock_path),
        "the backup timer on web-1 (vpsup backup --local)",
        std::process::id(),
    );
    let transport = LocalTransport::new("test", true);
    for (action, kind) in [
        (Action::Backup, RunKind::Backup),
        (Action::Verify, RunKind::Drill),
    ] {
        let mut report = HostReport::default();
        backup::on_host(&transport, &job, &action, &mut report).await;
        let error = report.error.clone().unwrap();
        assert!(
            error.contains("stayed locked by the backup timer on web-1 (vpsup backup --local)")
                && error.ends_with("it did not run"),
            "{error}"
        );
        let run = report.run.unwrap();
        assert!(!run.ok && run.kind == kind);
        let stored = std::fs::read_to_string(host_settings::last_run_path(&app, kind)).unwrap();
        let stored = host_settings::parse_record(&stored).unwrap();
        assert_eq!(stored, run);
        assert_eq!(stored.error.as_deref(), Some(error.as_str()));
        assert!(stored.services.is_empty() && !stored.finished.is_empty());
    }
    let history = std::fs::read_to_string(host_settings::history_path(&app)).unwrap();
    assert_eq!(host_settings::parse_history(&history).unwrap().len(), 2);
    let owner = std::fs::read_to_string(Path::new(&job.lock_path).join("owner")).unwrap();
    assert!(owner.starts_with("the backup timer on web-1"));
}

#[test]
fn restore_without_a_terminal_and_without_yes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vpsup.toml"),
        "[hosts.web]\naddress = \"127.0.0.1\"\n\n[app]\nname = \"shop\"\n\n[backup]\nrepository = \"/srv/backups/shop\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpsup"))
        .current_dir(dir.path())
        .args(["restore", "db"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("service db of app shop on web") && stderr.contains("--yes"),
        "{stderr}"
    );
}
