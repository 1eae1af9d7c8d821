//! What a host needs to back an app up without the operator, and what its
//! runs leave behind. Every operator run that uses `[backup]` (`backup`,
//! `backup init`, `deploy`) brings the settings up to date; `vpsup backup
//! --local` (the app's timer) reads them.
//!
//! ```text
//! /etc/vpsup/backup/<app>.toml              0600  app, host name, [backup] (paths pointing below)
//! /etc/vpsup/backup/<app>/env               0600  RESTIC_REPOSITORY, RESTIC_PASSWORD_FILE, AWS_* (S3)
//! /etc/vpsup/backup/<app>/password          0600  the repository password
//! /etc/vpsup/backup/<app>/ssh_key           0600  SFTP: the key the host logs in with
//! /etc/vpsup/backup/<app>/known_hosts       0600  SFTP: the server's keys (pinned, or learned on first use)
//! /var/lib/vpsup/backup/<app>/last-backup.json    the last backup run (`RunRecord`)
//! /var/lib/vpsup/backup/<app>/last-drill.json     the last restore drill
//! /var/lib/vpsup/backup/<app>/history.jsonl       every run, one line each
//! /var/lib/vpsup/backup/<app>/repository-id       the repository this app writes to
//! ```
//!
//! Secrets travel on stdin (`acme::host_settings::sync_files`), never in a
//! process argument, and the settings file names them by path only.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::restic::{HostFiles, HostKeys, Location, Repository, S3Credentials};
use crate::acme::host_settings::{sync_files, HostFile};
use crate::config::{BackupConfig, Config};
use crate::layout::{BACKUP_SETTINGS_DIR, BACKUP_STATE_DIR};
use crate::transport::script::quote;
use crate::transport::{ExecRequest, Transport, TransportError};

/// `/etc/vpsup/backup/<app>.toml`.
pub fn settings_path(app: &str) -> String {
    format!("{BACKUP_SETTINGS_DIR}/{app}.toml")
}

/// The directory of an app's repository files (env, password, ssh key).
pub fn files_dir(app: &str) -> String {
    format!("{BACKUP_SETTINGS_DIR}/{app}")
}

/// The directory of an app's state files.
pub fn state_dir(app: &str) -> String {
    format!("{BACKUP_STATE_DIR}/{app}")
}

/// Which run a state file records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Backup,
    Drill,
}

/// `last-backup.json` or `last-drill.json`.
pub fn last_run_path(app: &str, kind: RunKind) -> String {
    let name = match kind {
        RunKind::Backup => "last-backup.json",
        RunKind::Drill => "last-drill.json",
    };
    format!("{}/{name}", state_dir(app))
}

pub fn history_path(app: &str) -> String {
    format!("{}/history.jsonl", state_dir(app))
}

pub fn repository_id_path(app: &str) -> String {
    format!("{}/repository-id", state_dir(app))
}

/// What the host keeps for an app's backups (`<app>.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    pub app: String,
    /// vpsup's name for the host: restic's `--host`, stable when the machine is renamed.
    pub host: String,
    /// The project's `[backup]`, its file keys pointing at the host's copies.
    pub backup: BackupConfig,
}

impl HostSettings {
    /// The repository as this host reaches it.
    pub fn repository(&self) -> Result<Repository, String> {
        repository(&self.app, &self.backup)
    }
}

/// App `app`'s repository, with the standard host files.
pub fn repository(app: &str, backup: &BackupConfig) -> Result<Repository, String> {
    let keys = if backup.sftp_known_hosts.is_some() {
        HostKeys::Pinned
    } else {
        HostKeys::AcceptNew
    };
    Repository::new(&backup.repository.0, HostFiles::for_app(app), keys)
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("backups need [app] (its name keeps each app's backups apart)")]
    NoApp,
    #[error("no [backup] section in vpsup.toml")]
    NoBackup,
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("[backup] {0}")]
    Invalid(String),
    #[error("{}: {cause}", path.display())]
    Unreadable { path: PathBuf, cause: String },
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl crate::exit::ExitStatus for SettingsError {
    fn exit_code(&self) -> u8 {
        match self {
            SettingsError::Transport(_) => crate::exit::FAILED,
            _ => crate::exit::BAD_INPUT,
        }
    }
}

/// Says, loudly, that `ensure_password` made a new password at `path`.
pub fn warn_new_password(path: &Path) {
    eprintln!(
        "vpsup: GENERATED a new backup password in {}.\n  KEEP A COPY OUTSIDE THIS MACHINE AND THE HOST (a password manager): without it no backup can be read.",
        path.display()
    );
}

/// Creates the repository password file when it is missing: 32 random bytes
/// from the kernel, base64, 0600. Returns whether it did, for the caller to
/// say loudly that the user must keep a copy elsewhere.
pub fn ensure_password(config: &BackupConfig, project: &Path) -> Result<bool, SettingsError> {
    use base64::Engine;
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let path = project_file(project, &config.password_file);
    if path.exists() {
        return Ok(false);
    }
    let failed = |cause| SettingsError::Read {
        path: path.clone(),
        cause,
    };
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(failed)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let text = base64::engine::general_purpose::STANDARD.encode(bytes) + "\n";
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
        .map_err(failed)?;
    Ok(true)
}

/// Where a `[backup]` file is on this machine: relative to the project, or
/// under the operator's home for `~/…` (as the README's examples write a
/// storage box key), like `identity_file`.
pub fn project_file(project: &Path, path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => Path::new(&home).join(rest),
        _ => project.join(path),
    }
}

/// `config`'s app name: backups need one.
fn app_name(config: &Config) -> Result<String, SettingsError> {
    Ok(config
        .app
        .as_ref()
        .ok_or(SettingsError::NoApp)?
        .name
        .to_string())
}

/// The settings an operator's run uses on host `host`: the project's
/// `[backup]`, its files as the host keeps them.
pub fn for_operator(config: &Config, host: &str) -> Result<HostSettings, SettingsError> {
    let app = app_name(config)?;
    let backup = config.backup.clone().ok_or(SettingsError::NoBackup)?;
    Ok(HostSettings {
        app,
        host: host.to_string(),
        backup,
    })
}

/// The files for `config`'s app on host `host` (paths in `[backup]` relative
/// to `project`), the settings file last (it names the others).
pub fn files(config: &Config, project: &Path, host: &str) -> Result<Vec<HostFile>, SettingsError> {
    let app = app_name(config)?;
    let backup = config.backup.as_ref().ok_or(SettingsError::NoBackup)?;
    let read = |relative: &Path| {
        let path = project_file(project, relative);
        std::fs::read(&path).map_err(|cause| SettingsError::Read { path, cause })
    };
    let repo = repository(&app, backup).map_err(SettingsError::Invalid)?;
    let host_files = &repo.files;
    let secret = |path: &str, content: Vec<u8>| HostFile {
        path: path.to_string(),
        content,
        mode: 0o600,
    };
    let s3 = match &backup.s3_credentials_file {
        Some(file) => {
            let text = String::from_utf8_lossy(&read(file)?).into_owned();
            Some(
                S3Credentials::parse(&text).map_err(|cause| SettingsError::Unreadable {
                    path: project_file(project, file),
                    cause,
                })?,
            )
        }
        None => None,
    };
    let env = repo.env_file(s3.as_ref()).map_err(SettingsError::Invalid)?;
    let mut on_host = backup.clone();
    on_host.password_file = PathBuf::from(&host_files.password);
    let mut out = vec![
        secret(&host_files.env, env.into_bytes()),
        secret(&host_files.password, read(&backup.password_file)?),
    ];
    if s3.is_some() {
        // The credentials are in the env file; the copy names where.
        on_host.s3_credentials_file = Some(PathBuf::from(&host_files.env));
    }
    if let Some(key) = &backup.sftp_identity_file {
        out.push(secret(&host_files.ssh_key, read(key)?));
        on_host.sftp_identity_file = Some(PathBuf::from(&host_files.ssh_key));
    }
    // Without pinned keys the host learns the server's key into its own
    // known_hosts (accept-new): never overwritten from here.
    if let Some(known) = &backup.sftp_known_hosts {
        out.push(secret(&host_files.known_hosts, read(known)?));
        on_host.sftp_known_hosts = Some(PathBuf::from(&host_files.known_hosts));
    }
    let settings = HostSettings {
        app: app.clone(),
        host: host.to_string(),
        backup: on_host,
    };
    let body = toml::to_string(&settings).map_err(|e| SettingsError::Invalid(e.to_string()))?;
    let doc = format!(
        "# Managed by vpsup: app {app}'s [backup] settings, as its project's last\n\
         # `vpsup deploy` or `vpsup backup` left them. `vpsup backup --local --app {app}`\n\
         # (the {unit}@{app} timer) backs up with them. Edits here are overwritten.\n\n{body}",
        unit = crate::layout::BACKUP_UNIT
    );
    out.push(secret(&settings_path(&app), doc.into_bytes()));
    Ok(out)
}

/// Whether `write` changed anything on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    Unchanged,
    /// These paths were written.
    Written(Vec<String>),
}

/// Brings the host's copy of `files` up to date (one exec compares hashes,
/// one more writes what differs, contents on stdin).
pub async fn write(
    transport: &dyn Transport,
    files: &[HostFile],
) -> Result<Changed, SettingsError> {
    let written = sync_files(transport, BACKUP_SETTINGS_DIR, files, "the backup settings").await?;
    Ok(if written.is_empty() {
        Changed::Unchanged
    } else {
        Changed::Written(written.into_iter().map(str::to_string).collect())
    })
}

/// Reads an app's settings file (on the host, for `--local`).
pub fn read(path: &Path) -> Result<HostSettings, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|cause| SettingsError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<HostSettings, SettingsError> {
    let settings: HostSettings = toml::from_str(text).map_err(|e| SettingsError::Unreadable {
        path: path.to_path_buf(),
        cause: e.message().trim_end().to_string(),
    })?;
    Location::parse(&settings.backup.repository.0).map_err(SettingsError::Invalid)?;
    Ok(settings)
}

/// The apps with settings in `dir` (`<app>.toml`), by name.
pub fn apps_in(dir: &Path) -> Vec<String> {
    let mut apps: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".toml").map(str::to_string)
        })
        .collect();
    apps.sort();
    apps
}

/// One run, as the state files record it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub kind: RunKind,
    pub run: String,
    /// RFC 3339, UTC.
    pub started: String,
    pub finished: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub services: Vec<ServiceRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub service: String,
    pub engine: String,
    #[serde(default)]
    pub snapshots: Vec<SnapshotRecord>,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// As restic lists it: `/shop+db+shop.pgdump`.
    pub path: String,
    pub id: String,
    pub bytes: u64,
}

/// `last-*.json`.
pub fn parse_record(text: &str) -> Result<RunRecord, String> {
    serde_json::from_str(text.trim()).map_err(|e| format!("unreadable backup state: {e}"))
}

/// `history.jsonl`: every line a record; a bad line is an error naming it.
pub fn parse_history(text: &str) -> Result<Vec<RunRecord>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| parse_record(l).map_err(|e| format!("history line {}: {e}", n + 1)))
        .collect()
}

/// A script (as root) that stores `record` as the app's last run of its kind
/// and appends it to the history; the record is its stdin (`record_stdin`).
/// Its temporary file is its own (`.$$`): a timer's run that did not get the
/// lock records its failure while the holder may record its own run.
pub fn record_script(app: &str, kind: RunKind) -> String {
    let dir = quote(&state_dir(app));
    let last = quote(&last_run_path(app, kind));
    format!(
        "set -e\numask 077\nmkdir -p {dir}\nIFS= read -r line\n\
         printf '%s\\n' \"$line\" >{last}.$$\nmv -f {last}.$$ {last}\n\
         printf '%s\\n' \"$line\" >>{history}\n",
        history = quote(&history_path(app))
    )
}

/// The stdin of `record_script`: one JSON line.
pub fn record_stdin(record: &RunRecord) -> Vec<u8> {
    let mut line = serde_json::to_string(record).expect("a record always serializes");
    line.push('\n');
    line.into_bytes()
}

/// Stores `record` on the host.
pub async fn store_record(
    transport: &dyn Transport,
    app: &str,
    record: &RunRecord,
) -> Result<(), TransportError> {
    transport
        .run_ok(
            "recording the backup run on the host",
            ExecRequest::new(record_script(app, record.kind))
                .stdin(record_stdin(record))
                .become_root(true),
        )
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_the_projects_or_under_home() {
        let project = Path::new("/work/shop");
        assert_eq!(
            project_file(project, Path::new("keys/box")),
            Path::new("/work/shop/keys/box")
        );
        assert_eq!(
            project_file(project, Path::new("/etc/box")),
            Path::new("/etc/box")
        );
        let home = std::env::var_os("HOME").expect("tests run with a HOME");
        assert_eq!(
            project_file(project, Path::new("~/.ssh/storagebox")),
            Path::new(&home).join(".ssh/storagebox")
        );
    }

    fn config(backup: &str) -> Config {
        Config::parse(
            &format!("[app]\nname = \"shop\"\n\n[backup]\n{backup}"),
            Path::new("vpsup.toml"),
        )
        .unwrap()
    }

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn sftp_settings_carry_the_key_and_point_at_the_hosts_copies() {
        let project = project(&[
            (".vpsup/backup-password", "hunter2-long\n"),
            ("keys/box", "PRIVATE KEY\n"),
            ("keys/box_known", "[box]:23 ssh-ed25519 AAAA\n"),
        ]);
        let config = config(
            "repository = \"sftp:u1@box:/vpsup/shop\"\nsftp_identity_file = \"keys/box\"\nsftp_known_hosts = \"keys/box_known\"\nkeep_daily = 3\n",
        );
        let files = files(&config, project.path(), "web-1").unwrap();
        let placed: Vec<(&str, u32)> = files.iter().map(|f| (f.path.as_str(), f.mode)).collect();
        assert_eq!(
            placed,
            [
                ("/etc/vpsup/backup/shop/env", 0o600),
                ("/etc/vpsup/backup/shop/password", 0o600),
                ("/etc/vpsup/backup/shop/ssh_key", 0o600),
                ("/etc/vpsup/backup/shop/known_hosts", 0o600),
                ("/etc/vpsup/backup/shop.toml", 0o600),
            ]
        );
        assert_eq!(files[1].content, b"hunter2-long\n");
        let doc = String::from_utf8(files[4].content.clone()).unwrap();
        assert!(
            !doc.contains("hunter2") && !doc.contains("PRIVATE"),
            "{doc}"
        );
        let back = parse(Path::new("shop.toml"), &doc).unwrap();
        assert_eq!((back.app.as_str(), back.host.as_str()), ("shop", "web-1"));
        assert_eq!(back.backup.keep_daily, 3);
        assert_eq!(
            back.backup.sftp_identity_file,
            Some(PathBuf::from("/etc/vpsup/backup/shop/ssh_key"))
        );
        assert_eq!(
            back.backup.password_file,
            PathBuf::from("/etc/vpsup/backup/shop/password")
        );
        assert_eq!(back.repository().unwrap().host_keys, HostKeys::Pinned);
    }

    #[test]
    fn s3_credentials_go_only_into_the_env_file() {
        let project = project(&[
            (".vpsup/backup-password", "pw\n"),
            (
                "s3.env",
                "AWS_ACCESS_KEY_ID=AKID\nAWS_SECRET_ACCESS_KEY=topsecret\n",
            ),
        ]);
        let config = config(
            "repository = \"s3:http://127.0.0.1:9000/backups/shop\"\ns3_credentials_file = \"s3.env\"\n",
        );
        let files = files(&config, project.path(), "web-1").unwrap();
        assert_eq!(files.len(), 3);
        let env = String::from_utf8(files[0].content.clone()).unwrap();
        assert!(env.contains("AWS_SECRET_ACCESS_KEY=topsecret"), "{env}");
        let doc = String::from_utf8(files[2].content.clone()).unwrap();
        assert!(!doc.contains("topsecret"), "{doc}");
        let back = parse(Path::new("shop.toml"), &doc).unwrap();
        assert_eq!(back.repository().unwrap().host_keys, HostKeys::AcceptNew);
    }

    #[test]
    fn a_missing_password_is_generated_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let project = tempfile::tempdir().unwrap();
        let config = config("repository = \"/srv/backups/shop\"\n");
        let backup = config.backup.as_ref().unwrap();
        assert!(ensure_password(backup, project.path()).unwrap());
        let path = project.path().join(".vpsup/backup-password");
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(first.trim().len() >= 40, "{first}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!ensure_password(backup, project.path()).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
    }

    #[test]
    fn records_are_stored_last_and_appended_to_the_history() {
        let record = RunRecord {
            kind: RunKind::Backup,
            run: "20261205T031700Z".into(),
            started: "2026-12-05T03:17:00Z".into(),
            finished: "2026-12-05T03:17:09Z".into(),
            ok: true,
            error: None,
            services: vec![ServiceRecord {
                service: "db".into(),
                engine: "postgres".into(),
                snapshots: vec![SnapshotRecord {
                    path: "/shop+db+shop.pgdump".into(),
                    id: "e05c84ae".into(),
                    bytes: 1288895,
                }],
                duration_ms: 8200,
                error: None,
            }],
        };
        let root = tempfile::tempdir().unwrap();
        let script = record_script("shop", RunKind::Backup)
            .replace(BACKUP_STATE_DIR, &root.path().display().to_string());
        for _ in 0..2 {
            let mut child = std::process::Command::new("sh")
                .args(["-c", &script])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), &record_stdin(&record))
                .unwrap();
            assert!(child.wait().unwrap().success());
        }
        let dir = root.path().join("shop");
        let last = std::fs::read_to_string(dir.join("last-backup.json")).unwrap();
        assert_eq!(parse_record(&last).unwrap(), record);
        let history = std::fs::read_to_string(dir.join("history.jsonl")).unwrap();
        assert_eq!(
            parse_history(&history).unwrap(),
            vec![record.clone(), record]
        );
        assert!(parse_history("{}\n")
            .unwrap_err()
            .starts_with("history line 1"));
    }
}
