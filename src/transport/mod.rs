//! How vpsup runs things on a host. Every remote action is a shell script built
//! by a pure function (see `script`), run through one `exec` primitive. The file
//! operations (`put_file`, `read_file`, `exists`) are such scripts too, so the SSH
//! and the local transport share one tested implementation of them.

pub mod known_hosts;
pub mod local;
pub mod script;
pub mod sections;
pub mod ssh;

use std::sync::Arc;

use async_trait::async_trait;

pub use local::LocalTransport;
pub use ssh::{SshTarget, SshTransport};

/// Which output stream a chunk came from, for streaming callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Called with each chunk of output as it arrives (e.g. to show a long apt-get).
pub type OutputSink = Arc<dyn Fn(OutputStream, &[u8]) + Send + Sync>;

/// One command to run on the host.
#[derive(Clone, Default)]
pub struct ExecRequest {
    /// POSIX shell script, run by `sh -c`. Never put secrets here: the script is
    /// a process argument and visible in `ps`. Secrets go through `stdin`.
    pub script: String,
    /// Bytes fed to the script's standard input, then EOF.
    pub stdin: Option<Vec<u8>>,
    /// Run as root: through `sudo -n` when the login user is not root.
    pub become_root: bool,
    /// Receives output chunks as they arrive, in addition to the collected output.
    pub stream: Option<OutputSink>,
    /// Send `script` on stdin to `sh -s` instead of as an argument: for long
    /// scripts and scripts that carry file content or secrets (never in `ps`).
    pub script_on_stdin: bool,
}

impl ExecRequest {
    pub fn new(script: impl Into<String>) -> Self {
        ExecRequest {
            script: script.into(),
            ..Default::default()
        }
    }

    /// A script sent on stdin (see `script_on_stdin`); it cannot also take input.
    /// The script becomes the body of a function called on its last line: the
    /// shell parses the whole body before running any of it, so a connection
    /// cut mid-upload runs nothing instead of the first half of a change.
    pub fn piped(script: impl Into<String>) -> Self {
        ExecRequest {
            // `:` keeps an empty script a valid function body.
            script: format!(
                "vpsup_script() {{\n:\n{}\n}}\nvpsup_script\n",
                script.into()
            ),
            script_on_stdin: true,
            ..Default::default()
        }
    }

    /// The argv to run and what to feed its stdin.
    pub(crate) fn program(&self, use_sudo: bool) -> (Vec<String>, Option<&[u8]>) {
        if self.script_on_stdin {
            (script::argv_stdin(use_sudo), Some(self.script.as_bytes()))
        } else {
            (script::argv(&self.script, use_sudo), self.stdin.as_deref())
        }
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn become_root(mut self, yes: bool) -> Self {
        self.become_root = yes;
        self
    }

    pub fn stream(mut self, sink: OutputSink) -> Self {
        self.stream = Some(sink);
        self
    }
}

/// What a finished command left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Exit status; `None` when the command was killed by a signal.
    pub exit_status: Option<u32>,
    /// Name of the signal that killed the command, if any.
    pub exit_signal: Option<String>,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.exit_status == Some(0)
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The last `lines` lines of stderr, for error messages.
    /// Terminal codes removed (see `plain_text`).
    pub fn stderr_tail(&self, lines: usize) -> String {
        let text = plain_text(&self.stderr_str());
        let all: Vec<&str> = text.trim_end().lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// "exit 3" or "killed by signal TERM", for messages.
    pub fn status_text(&self) -> String {
        match (&self.exit_status, &self.exit_signal) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => "no exit status (connection lost?)".to_string(),
        }
    }
}

/// `text` as a reader of a log sees it: terminal escape sequences (`ESC[2K`,
/// colours) removed, and of a line redrawn with `\r`, its last state.
pub fn plain_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ parameters, ended by a letter (0x40..=0x7e);
                // any other escape is ESC and one character.
                if chars.next_if_eq(&'[').is_some() {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' if chars.peek() != Some(&'\n') => {
                let line_start = out.rfind('\n').map_or(0, |i| i + 1);
                out.truncate(line_start);
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Ownership and permissions of a file written on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// Octal permission bits, e.g. 0o644. Always set explicitly, never left to umask.
    pub mode: u32,
    /// `user` or `user:group`; `None` keeps the writer's own.
    pub owner: Option<String>,
}

impl FileMeta {
    pub fn mode(mode: u32) -> Self {
        FileMeta { mode, owner: None }
    }

    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{user}@{host}: sudo asks for a password, and vpsup never types one. Give {user} passwordless sudo (`{user} ALL=(ALL) NOPASSWD:ALL` in /etc/sudoers.d/{user}) or connect as root")]
    SudoNeedsPassword { user: String, host: String },
    #[error("{user}@{host}: {user} is not root and sudo is not installed, so vpsup cannot become root. Connect as root (for init: vpsup init root@{host}), or install sudo and give {user} passwordless sudo")]
    SudoAbsent { user: String, host: String },
    #[error("{host}: {what} failed ({status}): {stderr}")]
    Remote {
        host: String,
        what: String,
        status: String,
        stderr: String,
    },
    #[error("{host}: connection lost while running a command ({detail}); the host may have rebooted or the network dropped")]
    ConnectionLost { host: String, detail: String },
    #[error("local command failed to start: {0}")]
    Spawn(#[from] std::io::Error),
}

pub type Result<T, E = TransportError> = std::result::Result<T, E>;

/// A way to run commands on one host. Implementations only provide `exec`;
/// everything else is built on it.
#[async_trait]
pub trait Transport: Send + Sync {
    /// `user@host:port` or `local`, for messages.
    fn describe(&self) -> String;

    /// Whether the transport already runs as root (then `become_root` needs no sudo).
    fn is_root(&self) -> bool;

    /// Number of commands run so far: the round trips this transport cost.
    fn round_trips(&self) -> usize;

    /// Run one command and wait for it; streams output to `req.stream` as it comes.
    async fn exec(&self, req: ExecRequest) -> Result<ExecOutput>;

    /// The error for a command that did not succeed: what it was, its status, stderr's tail.
    fn failure(&self, what: &str, out: &ExecOutput) -> TransportError {
        TransportError::Remote {
            host: self.describe(),
            what: what.to_string(),
            status: out.status_text(),
            stderr: out.stderr_tail(5),
        }
    }

    /// Run a command that must succeed; a failure becomes `TransportError::Remote`
    /// naming `what` with the command's status and stderr tail.
    async fn run_ok(&self, what: &str, req: ExecRequest) -> Result<ExecOutput> {
        let out = self.exec(req).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(self.failure(what, &out))
        }
    }

    /// Write `content` to `path` atomically: a temp file beside it, checked for
    /// size and hash, given its mode/owner, then renamed over `path`. A dropped
    /// connection leaves the old file intact, never a half-written one.
    async fn put_file(
        &self,
        path: &str,
        content: &[u8],
        meta: &FileMeta,
        become_root: bool,
    ) -> Result<()> {
        let req = ExecRequest::new(script::put_file(path, content, meta))
            .stdin(content.to_vec())
            .become_root(become_root);
        self.run_ok(&format!("writing {path}"), req).await?;
        Ok(())
    }

    /// Contents of `path`, or `None` when it does not exist.
    async fn read_file(&self, path: &str, become_root: bool) -> Result<Option<Vec<u8>>> {
        let req = ExecRequest::new(script::read_file(path)).become_root(become_root);
        let out = self.exec(req).await?;
        match out.exit_status {
            Some(0) => Ok(Some(out.stdout)),
            Some(script::ABSENT_EXIT) => Ok(None),
            _ => Err(self.failure(&format!("reading {path}"), &out)),
        }
    }

    /// Whether `path` exists (any file type).
    async fn exists(&self, path: &str, become_root: bool) -> Result<bool> {
        let req = ExecRequest::new(script::exists(path)).become_root(become_root);
        let out = self.exec(req).await?;
        match out.exit_status {
            Some(0) => Ok(true),
            Some(script::ABSENT_EXIT) => Ok(false),
            _ => Err(self.failure(&format!("checking {path}"), &out)),
        }
    }
}

/// Turns the output of a `sudo -n` wrapped command into a clear error when sudo
/// refused because it wanted a password, or is not installed. Shared by both
/// transports.
pub(crate) fn check_sudo(
    out: ExecOutput,
    used_sudo: bool,
    user: &str,
    host: &str,
) -> Result<ExecOutput> {
    if used_sudo && out.exit_status == Some(1) && script::sudo_wants_password(&out.stderr) {
        return Err(TransportError::SudoNeedsPassword {
            user: user.to_string(),
            host: host.to_string(),
        });
    }
    if used_sudo && script::sudo_missing(out.exit_status, &out.stderr) {
        return Err(TransportError::SudoAbsent {
            user: user.to_string(),
            host: host.to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `docker compose up` writes on a terminal (erase-line codes,
    /// colours, a redrawn progress line) reads as plain lines.
    #[test]
    fn terminal_codes_are_stripped_from_what_hosts_said() {
        let said = "\u{1b}[2K\r Container shop-db-1  Creating\r\u{1b}[2K Container shop-db-1  \u{1b}[32mStarted\u{1b}[0m\r\nError response from daemon: port is already allocated\n";
        assert_eq!(
            plain_text(said),
            " Container shop-db-1  Started\nError response from daemon: port is already allocated\n"
        );
        let out = ExecOutput {
            stdout: Vec::new(),
            stderr: said.as_bytes().to_vec(),
            exit_status: Some(1),
            exit_signal: None,
        };
        assert!(!out.stderr_tail(5).contains('\u{1b}'));
    }

    /// The exact command line the transports run through sudo, on a host
    /// without sudo (a PATH that holds none): the real `env`'s complaint
    /// becomes an error that says what to do.
    #[test]
    fn a_host_without_sudo_gets_a_clear_error() {
        let argv = script::argv("true", true);
        assert_eq!(argv[0], "env");
        let out = std::process::Command::new("/usr/bin/env")
            .env_clear()
            .env("PATH", "/nonexistent")
            .args(&argv[1..])
            .output()
            .unwrap();
        let out = ExecOutput {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_status: out.status.code().map(|c| c as u32),
            exit_signal: None,
        };
        let err = check_sudo(out, true, "debian", "203.0.113.42").unwrap_err();
        assert!(
            err.to_string().starts_with(
                "debian@203.0.113.42: debian is not root and sudo is not installed, so vpsup cannot become root. Connect as root (for init: vpsup init root@203.0.113.42)"
            ),
            "{err}"
        );
    }
}
