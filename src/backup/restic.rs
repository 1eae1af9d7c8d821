//! The restic repository: where it is, the host files that reach it, the
//! script for every restic operation vpsup runs, and parsers for what restic
//! prints (0.14 and 0.18 shapes; fields newer versions add are optional).
//!
//! The rule this file never breaks: secrets travel only through files and the
//! environment. Every script starts by sourcing the 0600 env file
//! (`RESTIC_PASSWORD_FILE`, `AWS_*`); nothing secret is ever a process argument,
//! where `ps` would show it.

use std::time::Duration;

use serde::Deserialize;

use crate::transport::script::quote;

/// Where the repository is, as the user wrote it in `[backup] repository`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An absolute path on the host (same disk, same fate: allowed, warned about).
    Local(String),
    /// `sftp:user@host:/path` or `sftp://user@host:port//path`.
    Sftp(SftpTarget),
    /// `s3:https://endpoint/bucket/prefix` (any S3-compatible store).
    S3(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpTarget {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub path: String,
}

impl Location {
    pub fn parse(s: &str) -> Result<Location, String> {
        let bad = |why: &str| {
            format!(
                "invalid repository {s:?}: {why}; use sftp:user@host:/path, s3:https://host/bucket or an absolute path"
            )
        };
        if s.chars().any(|c| c.is_control()) {
            return Err(bad("control characters"));
        }
        if let Some(rest) = s.strip_prefix("s3:") {
            let ok = (rest.starts_with("https://") || rest.starts_with("http://"))
                && rest.split("://").nth(1).is_some_and(|r| r.contains('/'));
            return if ok || (!rest.contains("://") && rest.contains('/')) {
                Ok(Location::S3(s.to_string()))
            } else {
                Err(bad("an S3 repository needs an endpoint and a bucket"))
            };
        }
        if let Some(rest) = s.strip_prefix("sftp://") {
            // sftp://[user@]host[:port]//absolute or /relative-to-home
            let (authority, path) = rest
                .split_once('/')
                .ok_or_else(|| bad("no path after the host"))?;
            let (user, hostport) = split_user(authority);
            let (host, port) = match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| bad("bad port"))?)),
                None => (hostport, None),
            };
            return sftp(user, host, port, path).ok_or_else(|| bad("bad host or path"));
        }
        if let Some(rest) = s.strip_prefix("sftp:") {
            let (authority, path) = rest
                .split_once(':')
                .ok_or_else(|| bad("no `:` between host and path"))?;
            let (user, host) = split_user(authority);
            return sftp(user, host, None, path).ok_or_else(|| bad("bad host or path"));
        }
        if s.starts_with('/') {
            return Ok(Location::Local(s.to_string()));
        }
        Err(bad("unknown kind"))
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Location::Local(_))
    }
}

fn split_user(authority: &str) -> (Option<&str>, &str) {
    match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, authority),
    }
}

/// Host and user become words of an ssh command restic splits itself, so they
/// are plain words; the path stays inside restic.
fn sftp(user: Option<&str>, host: &str, port: Option<u16>, path: &str) -> Option<Location> {
    let word = |w: &str| {
        !w.is_empty()
            && !w.starts_with('-')
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-[]:".contains(&b))
    };
    (word(host) && user.is_none_or(word) && !path.is_empty()).then(|| {
        Location::Sftp(SftpTarget {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    })
}

/// The files on the host that reach one app's repository (all 0600).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFiles {
    /// Sourced by every script: `RESTIC_REPOSITORY`, `RESTIC_PASSWORD_FILE`, ...
    pub env: String,
    pub password: String,
    pub cache: String,
    pub ssh_key: String,
    pub known_hosts: String,
}

impl HostFiles {
    /// The standard places for app `app`.
    pub fn for_app(app: &str) -> HostFiles {
        let mut files = HostFiles::under(&crate::backup::host_settings::files_dir(app));
        files.cache = format!("/var/cache/vpsup/restic/{app}");
        files
    }

    /// Everything in `dir` (tests, and the standard layout's base).
    pub fn under(dir: &str) -> HostFiles {
        HostFiles {
            env: format!("{dir}/env"),
            password: format!("{dir}/password"),
            cache: format!("{dir}/cache"),
            ssh_key: format!("{dir}/ssh_key"),
            known_hosts: format!("{dir}/known_hosts"),
        }
    }
}

/// What ssh does with an SFTP server's host key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeys {
    /// `known_hosts` holds the key (`sftp_known_hosts` in the config): anything else is refused.
    Pinned,
    /// The first key seen is recorded in `known_hosts` and required from then on.
    AcceptNew,
}

/// S3 credentials from `s3_credentials_file` (`KEY=value` lines).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .field("region", &self.region)
            .finish()
    }
}

impl S3Credentials {
    /// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally
    /// `AWS_DEFAULT_REGION`; `#` comments, blank lines, `export ` and quotes
    /// around values are allowed. The error never shows a value.
    pub fn parse(text: &str) -> Result<S3Credentials, String> {
        let (mut id, mut secret, mut region) = (None, None, None);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {}: expected KEY=value", n + 1));
            };
            let value = value.trim();
            let value = [('"', '"'), ('\'', '\'')]
                .iter()
                .find_map(|(a, b)| value.strip_prefix(*a)?.strip_suffix(*b))
                .unwrap_or(value)
                .to_string();
            match key.trim() {
                "AWS_ACCESS_KEY_ID" => id = Some(value),
                "AWS_SECRET_ACCESS_KEY" => secret = Some(value),
                "AWS_DEFAULT_REGION" => region = Some(value),
                other => {
                    return Err(format!(
                        "line {}: unknown key {other:?} (expected AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION)",
                        n + 1
                    ))
                }
            }
        }
        match (id, secret) {
            (Some(access_key_id), Some(secret_access_key))
                if !access_key_id.is_empty() && !secret_access_key.is_empty() =>
            {
                Ok(S3Credentials {
                    access_key_id,
                    secret_access_key,
                    region,
                })
            }
            _ => Err("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are both required".to_string()),
        }
    }
}

/// One app's repository as a host reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub location: Location,
    /// The text of `[backup] repository`, as restic reads it.
    pub url: String,
    pub files: HostFiles,
    pub host_keys: HostKeys,
}

/// Operations that only talk to the repository (listing, forget, the
/// preflight) get this long; restic retries S3 errors for minutes.
pub const SHORT_TIMEOUT: Duration = Duration::from_secs(120);

impl Repository {
    pub fn new(url: &str, files: HostFiles, host_keys: HostKeys) -> Result<Repository, String> {
        Ok(Repository {
            location: Location::parse(url)?,
            url: url.to_string(),
            files,
            host_keys,
        })
    }

    /// The env file's text (0600 on the host). S3 needs `s3`.
    pub fn env_file(&self, s3: Option<&S3Credentials>) -> Result<String, String> {
        let mut vars = vec![
            ("RESTIC_REPOSITORY", self.url.clone()),
            ("RESTIC_PASSWORD_FILE", self.files.password.clone()),
            ("RESTIC_CACHE_DIR", self.files.cache.clone()),
        ];
        match (&self.location, s3) {
            (Location::S3(_), Some(c)) => {
                vars.push(("AWS_ACCESS_KEY_ID", c.access_key_id.clone()));
                vars.push(("AWS_SECRET_ACCESS_KEY", c.secret_access_key.clone()));
                if let Some(region) = &c.region {
                    vars.push(("AWS_DEFAULT_REGION", region.clone()));
                }
            }
            (Location::S3(_), None) => {
                return Err(format!(
                    "repository {} is S3: set [backup] s3_credentials_file",
                    self.url
                ))
            }
            _ => {}
        }
        Ok(vars
            .iter()
            .map(|(k, v)| format!("{k}={}\n", quote(v)))
            .collect())
    }

    /// `restic`, with the ssh command for SFTP: our key, our known_hosts,
    /// never a prompt. (restic splits this option into words itself.)
    pub fn restic(&self) -> String {
        let Location::Sftp(t) = &self.location else {
            return "restic".to_string();
        };
        let strict = match self.host_keys {
            HostKeys::Pinned => "yes",
            HostKeys::AcceptNew => "accept-new",
        };
        let port = t.port.map(|p| format!(" -p {p}")).unwrap_or_default();
        let target = match &t.user {
            Some(user) => format!("{user}@{}", t.host),
            None => t.host.clone(),
        };
        let command = format!(
            "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking={strict} -o BatchMode=yes -o ConnectTimeout=30 -o ServerAliveInterval=30{port} {target} -s sftp",
            self.files.ssh_key, self.files.known_hosts
        );
        format!("restic -o {}", quote(&format!("sftp.command={command}")))
    }

    /// Loads the env file: the first lines of every script (also of the
    /// pipeline's and the manifest's, built elsewhere).
    pub fn script_prelude(&self) -> String {
        format!("set -a; . {}; set +a\n", quote(&self.files.env))
    }

    /// `prelude` + one restic command under `timeout`, with args already quoted.
    fn command(&self, timeout: Duration, args: &str) -> String {
        format!(
            "{}exec {} {} {args}\n",
            self.script_prelude(),
            timeout_prefix(timeout),
            self.restic()
        )
    }

    /// Preflight: reachable, password right, and which repository it is.
    /// Prints `cat config --json` (parse with `parse_config`).
    pub fn cat_config(&self, timeout: Duration) -> String {
        self.command(timeout, "cat config --json")
    }

    /// Creates the repository, then prints its config like `cat_config`. Run
    /// only after `cat_config` failed with `RepoError::NoRepository`.
    pub fn init(&self, timeout: Duration) -> String {
        format!(
            "{prelude}mkdir -p -m 700 {cache}\n{t} {restic} init >&2 || exit\nexec {t} {restic} cat config --json\n",
            prelude = self.script_prelude(),
            cache = quote(&self.files.cache),
            t = timeout_prefix(timeout),
            restic = self.restic()
        )
    }

    /// Backs up directory `dir` (its contents, recorded from `.`). Prints the
    /// JSON lines of `backup --json` (parse with `parse_summary`).
    pub fn backup_dir(&self, dir: &str, meta: &SnapshotMeta, timeout: Duration) -> String {
        format!(
            "{}cd {} || exit\nexec {} {} backup . {} --json\n",
            self.script_prelude(),
            quote(dir),
            timeout_prefix(timeout),
            self.restic(),
            meta.args()
        )
    }

    /// `snapshots --json` of one app (parse with `parse_snapshots`).
    pub fn snapshots(&self, filter: &SnapshotFilter) -> String {
        self.command(
            SHORT_TIMEOUT,
            &format!("snapshots --json {}", filter.args()),
        )
    }

    /// Applies the retention policy to app `app`'s snapshots from host `host`
    /// only. Groups by host and path, so each service's (and each database's)
    /// history is kept on its own. `prune` needs an exclusive lock.
    pub fn forget(
        &self,
        app: &str,
        host: &str,
        keep: &Retention,
        prune: bool,
        timeout: Duration,
    ) -> String {
        let prune = if prune { " --prune" } else { "" };
        self.command(
            timeout,
            &format!(
                "forget --tag {} --host {} --group-by host,paths {}{prune} --json",
                // Only the app's snapshots that the policy applies to (not a
                // restore's safety snapshot nor the one before a deploy).
                quote(&format!("app={app},{RETAINED_TAG}")),
                quote(host),
                keep.args()
            ),
        )
    }

    /// Forgets exactly these snapshots (a failed run's leftovers).
    pub fn forget_ids(&self, ids: &[SnapshotId]) -> String {
        let ids: Vec<&str> = ids.iter().map(SnapshotId::as_str).collect();
        self.command(SHORT_TIMEOUT, &format!("forget {}", ids.join(" ")))
    }

    /// Reads the repository's structure and `subset` of its data.
    pub fn check(&self, subset: &ReadData, timeout: Duration) -> String {
        self.command(timeout, &format!("check {}", subset.arg()))
    }

    /// One shell command that writes file `path` of `snapshot` to stdout, for
    /// a restore pipeline in a script that ran `prelude` (see `dump`).
    pub fn dump_command(&self, snapshot: &SnapshotId, path: &str, timeout: Duration) -> String {
        format!(
            "{} {} dump {} {}",
            timeout_prefix(timeout),
            self.restic(),
            snapshot.as_str(),
            quote(path)
        )
    }

    /// A whole script: file `path` of `snapshot` on stdout.
    pub fn dump(&self, snapshot: &SnapshotId, path: &str, timeout: Duration) -> String {
        format!(
            "{}exec {}\n",
            self.script_prelude(),
            self.dump_command(snapshot, path, timeout)
        )
    }

    /// Restores `snapshot`'s contents into `target` and reads every file back.
    /// restic 0.14 has no `--delete`: the caller empties `target` first.
    pub fn restore(&self, snapshot: &SnapshotId, target: &str, timeout: Duration) -> String {
        self.command(
            timeout,
            &format!(
                "restore {} --target {} --verify",
                snapshot.as_str(),
                quote(target)
            ),
        )
    }
}

/// `timeout` that interrupts restic the way Ctrl-C does (it removes its lock
/// and writes no snapshot), and kills it a minute later if it still runs.
///
/// `--foreground`: only restic gets the signal. Without it `timeout` signals
/// its whole process group, which kills restic's ssh for SFTP before restic
/// can remove its lock over it.
pub fn timeout_prefix(timeout: Duration) -> String {
    format!(
        "timeout --foreground -s INT -k 60 {}",
        timeout.as_secs().max(1)
    )
}

/// A snapshot id (8 hex from 0.14's summaries, 64 from listings) or `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotId(String);

impl SnapshotId {
    pub fn parse(s: &str) -> Result<SnapshotId, String> {
        let hex = (8..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
        if hex || s == "latest" {
            Ok(SnapshotId(s.to_ascii_lowercase()))
        } else {
            Err(format!(
                "invalid snapshot id {s:?}: expected 8 to 64 hex digits or `latest`"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `full` (a listing's 64-hex id) is this id or starts with it.
    pub fn matches(&self, full: &str) -> bool {
        full.starts_with(&self.0)
    }
}

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The tag of the snapshots a retention policy applies to: `forget` counts
/// and forgets only these (scheduled and operator backups), never a
/// restore's safety snapshot or the snapshot before a deploy.
pub const RETAINED_TAG: &str = "keep=policy";

/// Who wrote a snapshot and what it holds: a stable `--host` (vpsup's host
/// name, so a renamed machine keeps its history) and the tags `vpsup`,
/// `app=`, `service=`, `engine=` or `kind=`, and `run=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub host: String,
    pub tags: Vec<String>,
}

impl SnapshotMeta {
    /// A data snapshot of one service.
    pub fn data(
        host: &str,
        app: &str,
        service: &str,
        engine: &str,
        run: &str,
    ) -> Result<SnapshotMeta, String> {
        SnapshotMeta::new(
            host,
            &[
                ("app", app),
                ("service", service),
                ("engine", engine),
                ("run", run),
            ],
        )
    }

    /// The manifest of one service's run.
    pub fn manifest(
        host: &str,
        app: &str,
        service: &str,
        run: &str,
    ) -> Result<SnapshotMeta, String> {
        SnapshotMeta::new(
            host,
            &[
                ("app", app),
                ("service", service),
                ("kind", "manifest"),
                ("run", run),
            ],
        )
    }

    fn new(host: &str, pairs: &[(&str, &str)]) -> Result<SnapshotMeta, String> {
        tag_word("host", host)?;
        let mut tags = vec!["vpsup".to_string()];
        for (key, value) in pairs {
            tag_word(key, value)?;
            tags.push(format!("{key}={value}"));
        }
        Ok(SnapshotMeta {
            host: host.to_string(),
            tags,
        })
    }

    /// `--host H --tag T ...`, quoted.
    pub fn args(&self) -> String {
        let mut args = format!("--host {}", quote(&self.host));
        for tag in &self.tags {
            args.push_str(&format!(" --tag {}", quote(tag)));
        }
        args
    }
}

/// restic splits tags on `,`; a tag value is one plain word: letters,
/// digits, `.`, `_` and `-`.
pub fn is_tag_word(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn tag_word(what: &str, value: &str) -> Result<(), String> {
    if is_tag_word(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} {value:?} for a snapshot tag: use letters, digits, '.', '_' and '-'"
        ))
    }
}

/// Which snapshots `snapshots` lists: always one app's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotFilter {
    pub app: String,
    pub service: Option<String>,
    pub run: Option<String>,
    pub manifests_only: bool,
    pub host: Option<String>,
    /// The newest N of each group (host + path).
    pub latest: Option<u32>,
    /// Only runs under the retention policy (not a restore's safety
    /// snapshot nor the one before a deploy): what "the latest backup" means.
    pub retained: bool,
}

impl SnapshotFilter {
    pub fn app(app: &str) -> SnapshotFilter {
        SnapshotFilter {
            app: app.to_string(),
            ..SnapshotFilter::default()
        }
    }

    /// `--tag a=b,c=d`: one --tag with commas, so a snapshot must carry all
    /// of them (`dump latest` takes it too).
    pub fn tag_args(&self) -> String {
        let mut tags = vec![format!("app={}", self.app)];
        if let Some(service) = &self.service {
            tags.push(format!("service={service}"));
        }
        if let Some(run) = &self.run {
            tags.push(format!("run={run}"));
        }
        if self.manifests_only {
            tags.push("kind=manifest".to_string());
        }
        if self.retained {
            tags.push(RETAINED_TAG.to_string());
        }
        format!("--tag {}", quote(&tags.join(",")))
    }

    fn args(&self) -> String {
        let mut args = self.tag_args();
        if let Some(host) = &self.host {
            args.push_str(&format!(" --host {}", quote(host)));
        }
        if let Some(n) = self.latest {
            args.push_str(&format!(" --latest {n}"));
        }
        args
    }
}

/// GFS retention: how many of the newest hourly, daily, ... snapshots stay.
/// Zero means none of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
}

impl Retention {
    /// restic's `--keep-*` flags (the kinds kept at all).
    pub fn args(&self) -> String {
        [
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(kind, n)| format!("--keep-{kind} {n}"))
        .collect::<Vec<_>>()
        .join(" ")
    }
}

/// How much data `check` reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadData {
    /// Structure only.
    None,
    /// Part `n` of `of` (rotate `n` weekly: every pack is read every `of` weeks).
    Part {
        n: u32,
        of: u32,
    },
    Percent(u8),
    All,
}

impl ReadData {
    fn arg(&self) -> String {
        match self {
            ReadData::None => String::new(),
            ReadData::Part { n, of } => format!("--read-data-subset={n}/{of}"),
            ReadData::Percent(p) => format!("--read-data-subset={p}%"),
            ReadData::All => "--read-data".to_string(),
        }
    }
}

/// Why a repository operation failed, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoError {
    #[error("wrong backup password for this repository (restic: {detail}): the password file on the host must hold the repository's password; restore it from your copy")]
    WrongPassword { detail: String },
    #[error("there is no restic repository at that location (restic: {detail}): `vpsup deploy` creates it; a backup never does")]
    NoRepository { detail: String },
    #[error("the repository refused the credentials (restic: {detail}): check [backup] s3_credentials_file")]
    Denied { detail: String },
    #[error("the backup repository cannot be reached ({detail}): check the address, the network, and for SFTP the key and the server's host key")]
    Unreachable { detail: String },
    #[error("the backup repository is locked by another restic (restic: {detail}): wait for it to finish; if it died, run `restic unlock` with the repository's password")]
    Locked { detail: String },
    #[error("restic failed{}: {detail}", exit_text(*.exit))]
    Other { exit: Option<u32>, detail: String },
}

fn exit_text(exit: Option<u32>) -> String {
    exit.map(|e| format!(" (exit {e})")).unwrap_or_default()
}

/// Reads restic's exit status and stderr (0.14 exits 1 for everything, so the
/// words decide; 0.17+ also has distinct codes). A missing repository is
/// reported only when restic said so and nothing points at the network or the
/// credentials: "Is there a repository" also follows S3 connection and
/// signature errors, and `init` must never run on those.
pub fn classify(exit: Option<u32>, stderr: &str) -> RepoError {
    let detail = error_detail(stderr);
    let has = |needles: &[&str]| needles.iter().any(|n| stderr.contains(n));
    let denied = has(&[
        "signature we calculated does not match",
        "InvalidAccessKeyId",
        "Access Denied",
        "AccessDenied",
        "SignatureDoesNotMatch",
    ]);
    let unreachable = exit == Some(124)
        || has(&[
            "connection refused",
            "Connection refused",
            "no such host",
            "Could not resolve hostname",
            "i/o timeout",
            "Connection timed out",
            "No route to host",
            "network is unreachable",
            "Network is unreachable",
            "Host key verification failed",
            "Permission denied (publickey",
            "unable to start the sftp session",
            "connection reset",
        ]);
    let missing = has(&[
        "no such file or directory",
        "file does not exist",
        "does not exist",
        "NoSuchBucket",
        "NoSuchKey",
    ]);
    if exit == Some(12) || stderr.contains("wrong password or no key found") {
        RepoError::WrongPassword { detail }
    } else if exit == Some(11) || stderr.contains("repository is already locked") {
        RepoError::Locked { detail }
    } else if denied {
        RepoError::Denied { detail }
    } else if unreachable {
        let detail = if exit == Some(124) {
            format!("no answer before the timeout; {detail}")
        } else {
            detail
        };
        RepoError::Unreachable { detail }
    } else if exit == Some(10) || (stderr.contains("Is there a repository") && missing) {
        RepoError::NoRepository { detail }
    } else {
        RepoError::Other { exit, detail }
    }
}

/// The lines that say what went wrong: restic's last `Fatal:` line (else the
/// last non-empty one), after ssh's own last words for SFTP (restic's line
/// then only says the session ended).
fn error_detail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(|l| l.trim().trim_start_matches("\u{1b}[2K"))
        .filter(|l| !l.is_empty())
        .collect();
    let fatal = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("Fatal:"))
        .or(lines.last())
        .map_or_else(|| "no message".to_string(), |l| l.to_string());
    let ssh = lines.iter().rev().find_map(|l| {
        let said = l.strip_prefix("subprocess ssh:")?.trim();
        (!said.is_empty() && !said.starts_with('@')).then_some(said)
    });
    match ssh {
        Some(said) => format!("ssh: {said}; {fatal}"),
        None => fatal,
    }
}

/// `cat config --json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RepoConfig {
    pub version: u32,
    /// 64 hex: the repository's identity, recorded on the host; a change means
    /// the location now holds another repository.
    pub id: String,
}

/// The last line of `backup --json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BackupSummary {
    /// 8 hex before 0.17, 64 after: treat as a prefix.
    pub snapshot_id: String,
    pub total_bytes_processed: u64,
    /// Bytes new to the repository before compression.
    #[serde(default)]
    pub data_added: u64,
    /// After compression (0.17+).
    #[serde(default)]
    pub data_added_packed: Option<u64>,
    #[serde(default)]
    pub total_duration: f64,
}

/// One entry of `snapshots --json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SnapshotInfo {
    pub id: String,
    #[serde(default)]
    pub short_id: Option<String>,
    /// RFC 3339 with nanoseconds.
    pub time: String,
    pub hostname: String,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// 0.17+: what the backup processed.
    #[serde(default)]
    pub summary: Option<SnapshotSummary>,
    #[serde(default)]
    pub program_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SnapshotSummary {
    #[serde(default)]
    pub total_bytes_processed: Option<u64>,
    #[serde(default)]
    pub data_added: Option<u64>,
    #[serde(default)]
    pub data_added_packed: Option<u64>,
}

impl SnapshotInfo {
    /// The value of tag `key=`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
    }
}

/// One group of `forget --json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ForgetGroup {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    #[serde(default)]
    pub keep: Option<Vec<SnapshotInfo>>,
    #[serde(default)]
    pub remove: Option<Vec<SnapshotInfo>>,
}

/// restic printed something vpsup does not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read restic's {what}: {cause}")]
pub struct ParseError {
    pub what: &'static str,
    pub cause: String,
}

fn json<T: serde::de::DeserializeOwned>(what: &'static str, text: &str) -> Result<T, ParseError> {
    serde_json::from_str(text.trim()).map_err(|e| ParseError {
        what,
        cause: e.to_string(),
    })
}

pub fn parse_config(stdout: &str) -> Result<RepoConfig, ParseError> {
    json("repository config", stdout)
}

/// The summary line among `backup --json`'s status lines.
pub fn parse_summary(stdout: &str) -> Result<BackupSummary, ParseError> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains(r#""message_type":"summary""#))
        .ok_or(ParseError {
            what: "backup summary",
            cause: "no summary line".to_string(),
        })?;
    json("backup summary", line)
}

pub fn parse_snapshots(stdout: &str) -> Result<Vec<SnapshotInfo>, ParseError> {
    json("snapshot list", stdout)
}

/// `forget --json` prints `null` or the groups.
pub fn parse_forget(stdout: &str) -> Result<Vec<ForgetGroup>, ParseError> {
    // Without --prune it is one JSON line; prune's progress may follow it.
    let line = stdout
        .lines()
        .find(|l| l.starts_with('[') || l.trim() == "null")
        .unwrap_or("null");
    json::<Option<Vec<ForgetGroup>>>("forget result", line).map(Option::unwrap_or_default)
}

/// Whether `check` found the repository sound, from its status and output.
pub fn check_passed(exit: Option<u32>, stdout: &str) -> bool {
    exit == Some(0) && stdout.contains("no errors were found")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Repository {
        Repository::new(
            "/srv/backups/shop",
            HostFiles::for_app("shop"),
            HostKeys::AcceptNew,
        )
        .unwrap()
    }

    #[test]
    fn locations_parse_by_kind() {
        assert_eq!(
            Location::parse("/srv/b").unwrap(),
            Location::Local("/srv/b".into())
        );
        assert_eq!(
            Location::parse("sftp:u123@u123.your-storagebox.de:/vpsup/shop").unwrap(),
            Location::Sftp(SftpTarget {
                user: Some("u123".into()),
                host: "u123.your-storagebox.de".into(),
                port: None,
                path: "/vpsup/shop".into()
            })
        );
        assert_eq!(
            Location::parse("sftp://backup@10.0.0.2:2222//srv/repo").unwrap(),
            Location::Sftp(SftpTarget {
                user: Some("backup".into()),
                host: "10.0.0.2".into(),
                port: Some(2222),
                path: "/srv/repo".into()
            })
        );
        assert!(matches!(
            Location::parse("s3:https://s3.example.com/bucket/shop").unwrap(),
            Location::S3(_)
        ));
        for bad in [
            "relative/path",
            "s3:https://s3.example.com",
            "sftp:host-without-path",
            "sftp:-oProxyCommand=x:/p",
            "rest:http://x/",
            "/a\nb",
        ] {
            let err = Location::parse(bad).unwrap_err();
            assert!(err.contains("use sftp:"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_env_file_holds_paths_and_s3_keys_quoted() {
        let files = HostFiles::for_app("shop");
        let repo =
            Repository::new("s3:https://s3.example.com/b/shop", files, HostKeys::Pinned).unwrap();
        let creds = S3Credentials::parse(
            "# keys\nexport AWS_ACCESS_KEY_ID=AKIA1\nAWS_SECRET_ACCESS_KEY='s3cr$t x'\n",
        )
        .unwrap();
        assert_eq!(
            repo.env_file(Some(&creds)).unwrap(),
            "RESTIC_REPOSITORY=s3:https://s3.example.com/b/shop\n\
             RESTIC_PASSWORD_FILE=/etc/vpsup/backup/shop/password\n\
             RESTIC_CACHE_DIR=/var/cache/vpsup/restic/shop\n\
             AWS_ACCESS_KEY_ID=AKIA1\n\
             AWS_SECRET_ACCESS_KEY='s3cr$t x'\n"
        );
        assert!(repo
            .env_file(None)
            .unwrap_err()
            .contains("s3_credentials_file"));
        assert!(!format!("{creds:?}").contains("s3cr"));
        assert!(local().env_file(None).is_ok());
    }

    #[test]
    fn s3_credential_files_are_checked_without_echoing_values() {
        for (text, expected) in [
            ("AWS_ACCESS_KEY_ID=a\n", "both required"),
            ("AWS_SECRET=hunter2\n", "unknown key \"AWS_SECRET\""),
            ("hunter2\n", "line 1: expected KEY=value"),
        ] {
            let err = S3Credentials::parse(text).unwrap_err();
            assert!(err.contains(expected) && !err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn sftp_uses_our_key_and_known_hosts_and_never_prompts() {
        let repo = Repository::new(
            "sftp://backup@10.0.0.2:2222//srv/repo",
            HostFiles::for_app("shop"),
            HostKeys::Pinned,
        )
        .unwrap();
        assert_eq!(
            repo.restic(),
            "restic -o 'sftp.command=ssh -F /dev/null -i /etc/vpsup/backup/shop/ssh_key -o IdentitiesOnly=yes -o UserKnownHostsFile=/etc/vpsup/backup/shop/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=30 -o ServerAliveInterval=30 -p 2222 backup@10.0.0.2 -s sftp'"
        );
        assert_eq!(local().restic(), "restic");
    }

    #[test]
    fn every_script_sources_the_env_file_and_runs_under_timeout() {
        let repo = local();
        let meta =
            SnapshotMeta::data("web-1", "shop", "uploads", "volume", "20261205T031700Z").unwrap();
        let keep = Retention {
            hourly: 0,
            daily: 7,
            weekly: 4,
            monthly: 12,
            yearly: 0,
        };
        let id = SnapshotId::parse("e05c84ae").unwrap();
        let scripts = [
            (repo.cat_config(SHORT_TIMEOUT), "exec timeout --foreground -s INT -k 60 120 restic cat config --json\n"),
            (
                repo.backup_dir("/var/lib/docker/volumes/shop_up/_data", &meta, Duration::from_secs(3600)),
                "cd /var/lib/docker/volumes/shop_up/_data || exit\nexec timeout --foreground -s INT -k 60 3600 restic backup . --host web-1 --tag vpsup --tag app=shop --tag service=uploads --tag engine=volume --tag run=20261205T031700Z --json\n",
            ),
            (
                repo.forget("shop", "web-1", &keep, false, SHORT_TIMEOUT),
                "exec timeout --foreground -s INT -k 60 120 restic forget --tag app=shop,keep=policy --host web-1 --group-by host,paths --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --json\n",
            ),
            (
                repo.check(&ReadData::Part { n: 3, of: 10 }, SHORT_TIMEOUT),
                "exec timeout --foreground -s INT -k 60 120 restic check --read-data-subset=3/10\n",
            ),
            (
                repo.dump(&id, "/shop+db+shop.pgdump", SHORT_TIMEOUT),
                "exec timeout --foreground -s INT -k 60 120 restic dump e05c84ae /shop+db+shop.pgdump\n",
            ),
            (
                repo.restore(&id, "/tmp/t x", SHORT_TIMEOUT),
                "exec timeout --foreground -s INT -k 60 120 restic restore e05c84ae --target '/tmp/t x' --verify\n",
            ),
            (
                repo.forget_ids(std::slice::from_ref(&id)),
                "exec timeout --foreground -s INT -k 60 120 restic forget e05c84ae\n",
            ),
        ];
        for (script, body) in scripts {
            assert_eq!(
                script,
                format!("set -a; . /etc/vpsup/backup/shop/env; set +a\n{body}")
            );
        }
        assert!(repo.init(SHORT_TIMEOUT).contains(
            "mkdir -p -m 700 /var/cache/vpsup/restic/shop\ntimeout --foreground -s INT -k 60 120 restic init >&2 || exit\nexec timeout --foreground -s INT -k 60 120 restic cat config --json\n"
        ));
    }

    #[test]
    fn listing_filters_by_app_and_more_tags_at_once() {
        let repo = local();
        let mut filter = SnapshotFilter::app("shop");
        assert!(repo
            .snapshots(&filter)
            .ends_with("restic snapshots --json --tag app=shop\n"));
        filter.service = Some("db".into());
        filter.manifests_only = true;
        filter.host = Some("web-1".into());
        filter.latest = Some(1);
        assert!(repo.snapshots(&filter).ends_with(
            "restic snapshots --json --tag app=shop,service=db,kind=manifest --host web-1 --latest 1\n"
        ));
    }

    #[test]
    fn tags_are_plain_words() {
        let meta = SnapshotMeta::manifest("web-1", "shop", "db", "r1").unwrap();
        assert_eq!(
            meta.tags,
            ["vpsup", "app=shop", "service=db", "kind=manifest", "run=r1"]
        );
        for (host, service) in [
            ("web 1", "db"),
            ("web", "db,x"),
            ("web", ""),
            ("web", "$(x)"),
        ] {
            assert!(SnapshotMeta::data(host, "shop", service, "redis", "r").is_err());
        }
    }

    #[test]
    fn snapshot_ids_are_hex_or_latest() {
        assert!(SnapshotId::parse("latest").is_ok());
        assert!(SnapshotId::parse("E05C84AE").unwrap().matches("e05c84ae55"));
        for bad in ["e05c84a", "e05c84ag", "--help", ""] {
            assert!(SnapshotId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_are_classified_from_restic_words() {
        let cases: [(Option<u32>, &str, &str); 11] = [
            (Some(1), "Fatal: wrong password or no key found\n", "WrongPassword"),
            (Some(12), "Fatal: unknown\n", "WrongPassword"),
            (
                Some(1),
                "Fatal: unable to open config file: stat /srv/r/config: no such file or directory\nIs there a repository at the following location?\n/srv/r\n",
                "NoRepository",
            ),
            (
                Some(1),
                "Fatal: unable to open config file: Stat: Get \"http://127.0.0.1:1/bucket/?location=\": dial tcp 127.0.0.1:1: connect: connection refused\nIs there a repository at the following location?\ns3:http://127.0.0.1:1/bucket\n",
                "Unreachable",
            ),
            (
                Some(1),
                "Fatal: unable to open config file: Stat: The request signature we calculated does not match the signature you provided.\nIs there a repository at the following location?\n",
                "Denied",
            ),
            (
                Some(1),
                "subprocess ssh: ssh: connect to host 127.0.0.1 port 1: Connection refused\nFatal: unable to open repository at sftp:x@h:/r: unable to start the sftp session, error: EOF\n",
                "Unreachable",
            ),
            (
                Some(1),
                "subprocess ssh: Host key verification failed.\nFatal: unable to open repository\n",
                "Unreachable",
            ),
            (Some(124), "", "Unreachable"),
            (
                Some(1),
                "unable to create lock in backend: repository is already locked exclusively by PID 11 on h by root (UID 0, GID 0)\n",
                "Locked",
            ),
            (Some(10), "Fatal: repository does not exist\n", "NoRepository"),
            (Some(3), "Fatal: something else\nwarning\n", "Other"),
        ];
        for (exit, stderr, kind) in cases {
            let err = classify(exit, stderr);
            assert!(format!("{err:?}").starts_with(kind), "{stderr}: {err:?}");
        }
        let text = classify(Some(1), "Fatal: wrong password or no key found\n").to_string();
        assert!(text.contains("restore it from your copy"), "{text}");
        assert_eq!(
            classify(Some(3), "a\nFatal: boom\nafter\n").to_string(),
            "restic failed (exit 3): Fatal: boom"
        );
    }

    #[test]
    fn config_and_summary_parse_from_014_and_018() {
        let config = parse_config(
            "{\n  \"version\": 2,\n  \"id\": \"8b0901d93f84262ac6253c70b6242e22c3f9c8a41dcb1cc2487243bc3bef3eef\",\n  \"chunker_polynomial\": \"3e1716b8b876e1\"\n}\n",
        )
        .unwrap();
        assert_eq!((config.version, &config.id[..8]), (2, "8b0901d9"));

        let v014 = "{\"message_type\":\"status\",\"percent_done\":0}\n{\"message_type\":\"summary\",\"files_new\":1,\"files_changed\":0,\"files_unmodified\":0,\"dirs_new\":2,\"dirs_changed\":0,\"dirs_unmodified\":0,\"data_blobs\":1,\"tree_blobs\":3,\"data_added\":852,\"total_files_processed\":1,\"total_bytes_processed\":4,\"total_duration\":0.24229304,\"snapshot_id\":\"c8f40ce5\"}\n";
        let s = parse_summary(v014).unwrap();
        assert_eq!(
            (
                s.snapshot_id.as_str(),
                s.total_bytes_processed,
                s.data_added,
                s.data_added_packed
            ),
            ("c8f40ce5", 4, 852, None)
        );
        let v018 = "{\"message_type\":\"summary\",\"files_new\":1,\"files_changed\":0,\"files_unmodified\":0,\"dirs_new\":2,\"dirs_changed\":0,\"dirs_unmodified\":0,\"data_blobs\":1,\"tree_blobs\":3,\"data_added\":1289836,\"data_added_packed\":40211,\"total_files_processed\":1,\"total_bytes_processed\":1288895,\"total_duration\":0.23,\"backup_start\":\"2026-12-05T03:17:00.1+00:00\",\"backup_end\":\"2026-12-05T03:17:00.3+00:00\",\"snapshot_id\":\"e05c84ae55d3b8b91a640d421e01d64ae2b2a330476153ca29b3b2dea4014fbac\"}\n";
        let s = parse_summary(v018).unwrap();
        assert_eq!(
            (s.data_added_packed, s.total_bytes_processed),
            (Some(40211), 1288895)
        );
        assert!(parse_summary("{\"message_type\":\"status\"}\n").is_err());
    }

    #[test]
    fn snapshot_lists_parse_from_014_and_018() {
        let v014 = r#"[{"time":"2026-12-05T11:39:36.99692455Z","tree":"5840","paths":["/shop+db+shop.pgdump"],"hostname":"web-1","username":"root","tags":["vpsup","app=shop","service=db"],"id":"c8f40ce55d3b8b91a640d421e01d64ae2b2a330476153ca29b3b2dea4014fbac","short_id":"c8f40ce5"}]"#;
        let list = parse_snapshots(v014).unwrap();
        assert_eq!(list[0].tag("service"), Some("db"));
        assert_eq!(list[0].tag("app"), Some("shop"));
        assert_eq!(list[0].tag("ap"), None);
        assert_eq!(list[0].summary, None);
        let v018 = r#"[{"time":"2026-12-05T03:17:00.3+00:00","parent":"aa","tree":"bb","paths":["/shop+db+shop.pgdump"],"hostname":"web-1","username":"root","tags":["vpsup"],"program_version":"restic 0.18.0","summary":{"backup_start":"2026-12-05T03:17:00.1+00:00","backup_end":"2026-12-05T03:17:00.3+00:00","files_new":1,"data_added":1289836,"data_added_packed":40211,"total_files_processed":1,"total_bytes_processed":1288895},"id":"e05c84ae55d3b8b91a640d421e01d64ae2b2a330476153ca29b3b2dea4014fbac","short_id":"e05c84ae"}]"#;
        let list = parse_snapshots(v018).unwrap();
        let summary = list[0].summary.as_ref().unwrap();
        assert_eq!(summary.total_bytes_processed, Some(1288895));
        assert_eq!(list[0].program_version.as_deref(), Some("restic 0.18.0"));
        assert!(parse_snapshots("[]").unwrap().is_empty());
        assert!(parse_snapshots("Fatal").is_err());
    }

    #[test]
    fn forget_results_parse_with_or_without_removals() {
        let out = r#"[{"tags":null,"host":"web-1","paths":["/shop+db+x"],"keep":[{"time":"2026-12-05T11:39:36Z","paths":["/shop+db+x"],"hostname":"web-1","id":"aa11aa11"}],"remove":null,"reasons":[]},{"host":"web-1","paths":["/shop+db+y"],"keep":[],"remove":[{"time":"2026-12-04T11:39:36Z","paths":["/shop+db+y"],"hostname":"web-1","id":"bb22bb22"}]}]"#;
        let groups = parse_forget(&format!("{out}\nloading indexes...\n")).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].remove, None);
        assert_eq!(groups[1].remove.as_ref().unwrap()[0].id, "bb22bb22");
        assert!(parse_forget("null\n").unwrap().is_empty());
        assert!(parse_forget("").unwrap().is_empty());
    }

    #[test]
    fn check_passes_only_on_its_own_words_and_status() {
        assert!(check_passed(
            Some(0),
            "check snapshots, trees and blobs\nno errors were found\n"
        ));
        assert!(!check_passed(Some(1), "no errors were found\n"));
        assert!(!check_passed(
            Some(0),
            "Fatal: repository contains errors\n"
        ));
    }
}
