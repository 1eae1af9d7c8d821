//! The SSH transport on russh: one connection per host, one channel per command,
//! any number of commands in parallel over it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use russh::client::{self, AuthResult, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, MethodKind};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::known_hosts::{self, HostKeyMismatch, HostKeyVerdict};
use super::{check_sudo, script, ExecOutput, ExecRequest, OutputStream, Transport, TransportError};

/// Everything needed to reach and log in to one host, fully resolved
/// (CLI over vpsup.toml over ~/.ssh/config over defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// Address or DNS name to connect to.
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Private keys to offer, in order.
    pub identity_files: Vec<PathBuf>,
    /// Only offer agent keys that match `identity_files` (OpenSSH's IdentitiesOnly).
    pub identities_only: bool,
    pub known_hosts: PathBuf,
    pub connect_timeout: Duration,
}

impl SshTarget {
    pub fn describe(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// Asks the person at the terminal for a secret (key passphrase, password).
/// Returns `None` when nobody can answer.
pub type SecretPrompt = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Credentials beyond key files: resolved by the command layer, not read here.
#[derive(Clone, Default)]
pub struct Credentials {
    /// ssh-agent socket (from SSH_AUTH_SOCK).
    pub agent_socket: Option<PathBuf>,
    /// Password given up front (`--password-stdin`).
    pub password: Option<String>,
    /// Ask for passphrases of encrypted keys, and for a password as a last resort.
    pub prompt: Option<SecretPrompt>,
}

/// How the connection went, for the command layer to report.
#[derive(Debug, Clone)]
pub struct ConnectReport {
    /// Set when the host key was new and has just been recorded.
    pub learned_host_key: Option<String>,
    /// "publickey (~/.ssh/id_ed25519)", "publickey (agent: comment)", "password".
    pub auth_method: String,
    pub handshake: Duration,
    pub auth: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// `reached_before`: known_hosts holds the host's key (see `turned_away`).
    #[error("cannot connect to {addr}: {cause}. {}", refused_hint(cause, *reached_before))]
    Connect {
        addr: String,
        cause: std::io::Error,
        reached_before: bool,
    },
    #[error("{addr}: no SSH answer within {secs} s{}", timeout_hint(*reached_before))]
    Timeout {
        addr: String,
        secs: u64,
        reached_before: bool,
    },
    #[error("{0}")]
    HostKeyChanged(Box<HostKeyMismatch>),
    #[error("cannot use known_hosts file {}: {detail}", path.display())]
    KnownHosts { path: PathBuf, detail: String },
    #[error("{target}: authentication failed; tried {tried}. {hint}")]
    AuthFailed {
        target: String,
        tried: String,
        hint: String,
    },
    #[error("{addr}: SSH error: {cause}")]
    Protocol { addr: String, cause: russh::Error },
}

/// ufw's `limit` rule, which `vpsup init` puts on SSH: ufw refuses a new
/// connection from an address that opened this many in the window.
const UFW_LIMIT_CONNECTIONS: u32 = 6;
const UFW_LIMIT_WINDOW_SECS: u32 = 30;
/// The sshd jail of templates/fail2ban_sshd.local.tera.
const FAIL2BAN_MAXRETRY: u32 = 5;
const FAIL2BAN_FINDTIME: &str = "10m";
const FAIL2BAN_BANTIME: &str = "1h";

/// Why a host whose sshd answered this machine before (its key is in
/// known_hosts) refuses or ignores it now, most likely: the firewall and
/// fail2ban that `vpsup init` set up, and how long each lasts.
fn turned_away() -> String {
    format!(
        "This machine has reached sshd there before (its key is in known_hosts), so on a host `vpsup init` set up the likely cause is that the host turns this address away: ufw refuses a {UFW_LIMIT_CONNECTIONS}th new SSH connection from one address within {UFW_LIMIT_WINDOW_SECS} s (wait {UFW_LIMIT_WINDOW_SECS} s, then try again), and fail2ban bans an address for {FAIL2BAN_BANTIME} after {FAIL2BAN_MAXRETRY} failed logins within {FAIL2BAN_FINDTIME} (wait {FAIL2BAN_BANTIME}, or lift the ban from another address: sudo fail2ban-client set sshd unbanip YOUR_ADDRESS)"
    )
}

fn refused_hint(cause: &std::io::Error, reached_before: bool) -> String {
    if reached_before && cause.kind() == std::io::ErrorKind::ConnectionRefused {
        format!(
            "{}. Else sshd is not running, or listens on another port",
            turned_away()
        )
    } else {
        "Is the host up and sshd listening on that port?".to_string()
    }
}

fn timeout_hint(reached_before: bool) -> String {
    if reached_before {
        format!(
            ". {}. Else the host is down or too busy to answer: raise --connect-timeout",
            turned_away()
        )
    } else {
        " (host down, port filtered by a firewall, or not an SSH server). Check the address and port, or raise --connect-timeout".to_string()
    }
}

/// A live, authenticated SSH connection to one host.
pub struct SshTransport {
    handle: Arc<Handle<HostKeyChecker>>,
    target: SshTarget,
    round_trips: AtomicUsize,
}

impl SshTransport {
    /// Connects, verifies the host key, and authenticates.
    pub async fn connect(
        target: &SshTarget,
        creds: &Credentials,
    ) -> Result<(SshTransport, ConnectReport), SshError> {
        let addr = format!("{}:{}", target.host, target.port);
        let reached_before =
            !known_hosts::recorded_algorithms(&target.known_hosts, &target.host, target.port)
                .is_empty();
        let started = Instant::now();
        let verdict = Arc::new(Mutex::new(None));
        let checker = HostKeyChecker {
            host: target.host.clone(),
            port: target.port,
            known_hosts: target.known_hosts.clone(),
            verdict: verdict.clone(),
        };
        let config = Arc::new(client::Config {
            // No inactivity timeout: a quiet `apt-get` may run for many minutes.
            // Keepalives find a dead peer instead (4 unanswered x 15 s).
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 4,
            preferred: known_types_first(target),
            ..Default::default()
        });
        let handshake = async {
            let tcp = TcpStream::connect(&addr)
                .await
                .map_err(|cause| SshError::Connect {
                    addr: addr.clone(),
                    cause,
                    reached_before,
                })?;
            let _ = tcp.set_nodelay(true);
            client::connect_stream(config, tcp, checker)
                .await
                .map_err(|source| {
                    host_key_error(&verdict).unwrap_or(SshError::Protocol {
                        addr: addr.clone(),
                        cause: source,
                    })
                })
        };
        let mut handle = tokio::time::timeout(target.connect_timeout, handshake)
            .await
            .map_err(|_| SshError::Timeout {
                addr: addr.clone(),
                secs: target.connect_timeout.as_secs(),
                reached_before,
            })??;
        let handshake_time = started.elapsed();
        let learned_host_key = match verdict.lock().map(|v| v.clone()) {
            Ok(Some(HostKeyVerdict::Learned { fingerprint })) => Some(fingerprint),
            _ => None,
        };

        let auth_started = Instant::now();
        let auth_method = Authenticator::new(&mut handle, target, creds).run().await?;
        let report = ConnectReport {
            learned_host_key,
            auth_method,
            handshake: handshake_time,
            auth: auth_started.elapsed(),
        };
        let transport = SshTransport {
            handle: Arc::new(handle),
            target: target.clone(),
            round_trips: AtomicUsize::new(0),
        };
        Ok((transport, report))
    }

    /// Says goodbye to the server; dropping the transport also closes it.
    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }

    fn lost(&self, e: impl std::fmt::Display) -> TransportError {
        TransportError::ConnectionLost {
            host: self.target.describe(),
            detail: e.to_string(),
        }
    }
}

#[async_trait]
impl Transport for SshTransport {
    fn describe(&self) -> String {
        self.target.describe()
    }

    fn is_root(&self) -> bool {
        self.target.user == "root"
    }

    fn round_trips(&self) -> usize {
        self.round_trips.load(Ordering::Relaxed)
    }

    async fn exec(&self, req: ExecRequest) -> super::Result<ExecOutput> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let use_sudo = req.become_root && !self.is_root();
        let (argv, stdin) = req.program(use_sudo);
        let command = script::command_line(&argv);
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.lost(e))?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| self.lost(e))?;
        let (mut reader, writer) = channel.split();

        // Feed stdin while reading output: a command that talks while it reads
        // must not deadlock against a full window.
        let feed = async {
            if let Some(stdin) = stdin {
                writer.data(stdin).await?;
            }
            writer.eof().await
        };
        let collect = async {
            let mut out = ExecOutput::default();
            while let Some(msg) = reader.wait().await {
                match msg {
                    ChannelMsg::Data { data } => {
                        if let Some(sink) = &req.stream {
                            sink(OutputStream::Stdout, &data);
                        }
                        out.stdout.extend_from_slice(&data);
                    }
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        if let Some(sink) = &req.stream {
                            sink(OutputStream::Stderr, &data);
                        }
                        out.stderr.extend_from_slice(&data);
                    }
                    ChannelMsg::ExitStatus { exit_status } => out.exit_status = Some(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        out.exit_signal = Some(format!("{signal_name:?}"))
                    }
                    _ => {}
                }
            }
            out
        };
        let (fed, out) = tokio::join!(feed, collect);
        if out.exit_status.is_none() && out.exit_signal.is_none() {
            let detail = match fed {
                Err(e) => e.to_string(),
                Ok(()) => "the channel closed without an exit status".to_string(),
            };
            return Err(self.lost(detail));
        }
        check_sudo(out, use_sudo, &self.target.user, &self.target.host)
    }
}

/// A terminal on the host for an attached command, as `ssh -t` asks for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pty {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
}

/// How a command is attached to the operator (`SshTransport::attach`).
pub struct Attach {
    /// A terminal on the host (then stdout and stderr arrive as one stream).
    pub pty: Option<Pty>,
    /// What the command reads, chunk by chunk; its stdin ends with the
    /// receiver. `None`: nothing, and stdin ends at once (or on `stop`).
    pub input: Option<mpsc::Receiver<Vec<u8>>>,
    /// Becomes true when the operator stops the command (Ctrl-C): its stdin
    /// ends then (a script that follows reads it to know, see
    /// `compose_cli::until_stdin_closes`), and the channel is closed if the
    /// command has not ended within `STOP_GRACE`.
    pub stop: Option<watch::Receiver<bool>>,
    /// Receives the output as it arrives (it is not collected).
    pub output: super::OutputSink,
    /// The operator's terminal's new `(columns, rows)` whenever it is
    /// resized, passed on to the `pty`.
    pub resized: Option<mpsc::Receiver<(u32, u32)>>,
}

/// The next size from `resized`; never when there is none.
async fn next_size(resized: &mut Option<mpsc::Receiver<(u32, u32)>>) -> (u32, u32) {
    if let Some(rx) = resized {
        if let Some(size) = rx.recv().await {
            return size;
        }
    }
    std::future::pending().await
}

/// How long a stopped command has to end before its channel is closed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Resolves once `stop` turns true; never when there is no `stop` (or its
/// sender is gone without stopping).
async fn stopped(stop: &mut Option<watch::Receiver<bool>>) {
    if let Some(rx) = stop {
        if rx.wait_for(|s| *s).await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

impl SshTransport {
    /// Runs `req` (its `stdin` unused) attached to the operator: `attach`'s
    /// input as it comes, output as it comes, a terminal when asked.
    /// Returns the exit status or signal; the output is not collected.
    pub async fn attach(&self, req: &ExecRequest, attach: Attach) -> super::Result<ExecOutput> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let use_sudo = req.become_root && !self.is_root();
        let (argv, _) = req.program(use_sudo);
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.lost(e))?;
        if let Some(pty) = &attach.pty {
            channel
                .request_pty(true, &pty.term, pty.cols, pty.rows, 0, 0, &[])
                .await
                .map_err(|e| self.lost(e))?;
        }
        channel
            .exec(true, script::command_line(&argv))
            .await
            .map_err(|e| self.lost(e))?;
        let (mut reader, writer) = channel.split();
        let Attach {
            input,
            stop,
            output,
            mut resized,
            ..
        } = attach;

        let mut feed_stop = stop.clone();
        let feed = async {
            match input {
                Some(mut input) => loop {
                    tokio::select! {
                        () = stopped(&mut feed_stop) => break,
                        (cols, rows) = next_size(&mut resized) => {
                            writer.window_change(cols, rows, 0, 0).await?
                        }
                        chunk = input.recv() => match chunk {
                            Some(chunk) => writer.data(&chunk[..]).await?,
                            None => break,
                        },
                    }
                },
                None if feed_stop.is_some() => stopped(&mut feed_stop).await,
                None => {}
            }
            writer.eof().await
        };
        let stopped_flag = stop.clone();
        let mut grace_stop = stop;
        let grace = async {
            stopped(&mut grace_stop).await;
            tokio::time::sleep(STOP_GRACE).await;
        };
        let collect = async {
            let mut out = ExecOutput::default();
            while let Some(msg) = reader.wait().await {
                match msg {
                    ChannelMsg::Data { data } => output(OutputStream::Stdout, &data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        output(OutputStream::Stderr, &data)
                    }
                    ChannelMsg::ExitStatus { exit_status } => out.exit_status = Some(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        out.exit_signal = Some(format!("{signal_name:?}"))
                    }
                    _ => {}
                }
            }
            out
        };
        tokio::pin!(feed, collect, grace);
        let mut feeding = true;
        let out = loop {
            tokio::select! {
                // A failed write (the command closed its stdin) ends the feed only.
                _ = &mut feed, if feeding => feeding = false,
                out = &mut collect => break out,
                () = &mut grace => break ExecOutput::default(),
            }
        };
        if out.exit_status.is_none() && out.exit_signal.is_none() && !grace_stopped(&stopped_flag) {
            return Err(self.lost("the channel closed without an exit status"));
        }
        check_sudo(out, use_sudo, &self.target.user, &self.target.host)
    }
}

fn grace_stopped(stop: &Option<watch::Receiver<bool>>) -> bool {
    stop.as_ref().is_some_and(|s| *s.borrow())
}

/// The russh handler: checks the server's host key against known_hosts and
/// leaves its verdict where `connect` can turn it into a clear error.
struct HostKeyChecker {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    verdict: Arc<Mutex<Option<HostKeyVerdict>>>,
}

impl client::Handler for HostKeyChecker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let verdict = match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                known_hosts::verify(&self.known_hosts, &self.host, self.port, key)
            }
            PublicKeyOrCertificate::Certificate(_) => HostKeyVerdict::Unusable {
                path: self.known_hosts.clone(),
                detail: "the server offered a host certificate; vpsup checks plain host keys only"
                    .to_string(),
            },
        };
        let accepted = matches!(
            verdict,
            HostKeyVerdict::Known | HostKeyVerdict::Learned { .. }
        );
        if let Ok(mut slot) = self.verdict.lock() {
            *slot = Some(verdict);
        }
        Ok(accepted)
    }
}

/// russh's algorithm preferences with the host key types already recorded for
/// this host first, so a server with several host keys shows the one we know.
fn known_types_first(target: &SshTarget) -> russh::Preferred {
    let defaults = russh::Preferred::default();
    let recorded = known_hosts::recorded_algorithms(&target.known_hosts, &target.host, target.port);
    let (mut known, other): (Vec<_>, Vec<_>) = defaults
        .key
        .iter()
        .cloned()
        .partition(|a| recorded.iter().any(|r| known_hosts::same_family(r, a)));
    known.extend(other);
    russh::Preferred {
        key: std::borrow::Cow::Owned(known),
        ..defaults
    }
}

fn host_key_error(verdict: &Mutex<Option<HostKeyVerdict>>) -> Option<SshError> {
    match verdict.lock().ok()?.clone()? {
        HostKeyVerdict::Changed(mismatch) => Some(SshError::HostKeyChanged(mismatch)),
        HostKeyVerdict::Unusable { path, detail } => Some(SshError::KnownHosts { path, detail }),
        HostKeyVerdict::Known | HostKeyVerdict::Learned { .. } => None,
    }
}

/// Tries, in order: the identity files, the agent's keys, passphrase-protected
/// identity files (asking for the passphrase), then a password. Remembers what
/// it tried so a failure can say so.
struct Authenticator<'a> {
    handle: &'a mut Handle<HostKeyChecker>,
    target: &'a SshTarget,
    creds: &'a Credentials,
    tried: Vec<String>,
    /// Methods the server still accepts, from its last refusal.
    server_methods: Option<Vec<MethodKind>>,
}

impl<'a> Authenticator<'a> {
    fn new(
        handle: &'a mut Handle<HostKeyChecker>,
        target: &'a SshTarget,
        creds: &'a Credentials,
    ) -> Self {
        Authenticator {
            handle,
            target,
            creds,
            tried: Vec::new(),
            server_methods: None,
        }
    }

    async fn run(mut self) -> Result<String, SshError> {
        let user = self.target.user.clone();
        let mut encrypted = Vec::new();
        for path in &self.target.identity_files {
            match russh::keys::load_secret_key(path, None) {
                Ok(key) => {
                    if self.try_key(key, path).await? {
                        return Ok(format!("publickey ({})", path.display()));
                    }
                }
                Err(russh::keys::Error::KeyIsEncrypted) => encrypted.push(path.clone()),
                // A default key file that does not exist is simply not offered.
                Err(russh::keys::Error::IO(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                // An unreadable key is one fewer way in, not the end: the agent
                // or another key may still work. The failure message lists it.
                Err(e) => self
                    .tried
                    .push(format!("{} (unreadable: {e})", path.display())),
            }
        }

        if let Some(socket) = self.creds.agent_socket.clone() {
            if let Some(comment) = self.try_agent(&socket).await? {
                return Ok(format!("publickey (agent: {comment})"));
            }
        }

        for path in encrypted {
            let Some(prompt) = &self.creds.prompt else {
                self.tried.push(format!(
                    "{} (encrypted, and no terminal to ask its passphrase: add it to ssh-agent with `ssh-add {}`)",
                    path.display(),
                    path.display()
                ));
                continue;
            };
            // Three tries at the passphrase, as ssh does.
            for _ in 0..3 {
                let question = format!("Enter passphrase for key '{}': ", path.display());
                let Some(passphrase) = prompt(&question) else {
                    break;
                };
                match russh::keys::load_secret_key(&path, Some(&passphrase)) {
                    Ok(key) => {
                        if self.try_key(key, &path).await? {
                            return Ok(format!("publickey ({})", path.display()));
                        }
                        break;
                    }
                    Err(_) => self
                        .tried
                        .push(format!("{} (wrong passphrase)", path.display())),
                }
            }
        }

        if self.server_accepts(MethodKind::Password) {
            let password = match (&self.creds.password, &self.creds.prompt) {
                (Some(p), _) => Some(p.clone()),
                (None, Some(prompt)) => prompt(&format!("{}'s password: ", self.target.describe())),
                (None, None) => None,
            };
            if let Some(password) = password {
                self.tried.push("password".to_string());
                let result = self
                    .handle
                    .authenticate_password(&user, password)
                    .await
                    .map_err(|e| self.protocol(e))?;
                if self.accepted(result) {
                    return Ok("password".to_string());
                }
            }
        }
        Err(self.failure())
    }

    async fn try_key(&mut self, key: PrivateKey, path: &Path) -> Result<bool, SshError> {
        self.tried.push(format!("key {}", path.display()));
        let hash = self.rsa_hash().await?;
        let result = self
            .handle
            .authenticate_publickey(
                &self.target.user,
                PrivateKeyWithHashAlg::new(Arc::new(key), hash),
            )
            .await
            .map_err(|e| self.protocol(e))?;
        Ok(self.accepted(result))
    }

    /// Offers the agent's keys (only those matching identity files under
    /// IdentitiesOnly). Returns the accepted key's comment.
    async fn try_agent(&mut self, socket: &Path) -> Result<Option<String>, SshError> {
        let Ok(mut agent) = AgentClient::connect_uds(socket).await else {
            self.tried
                .push(format!("agent at {} (not reachable)", socket.display()));
            return Ok(None);
        };
        let identities = agent.request_identities().await.unwrap_or_default();
        let wanted: Vec<PublicKey> = self
            .target
            .identity_files
            .iter()
            .filter_map(|p| russh::keys::load_public_key(format!("{}.pub", p.display())).ok())
            .collect();
        let mut offered = 0;
        for identity in identities {
            let AgentIdentity::PublicKey { key, comment } = identity else {
                continue; // certificates are not supported yet
            };
            if self.target.identities_only && !wanted.iter().any(|w| w.key_data() == key.key_data())
            {
                continue;
            }
            offered += 1;
            let hash = self.rsa_hash().await?;
            let result = self
                .handle
                .authenticate_publickey_with(&self.target.user, key, hash, &mut agent)
                .await;
            match result {
                Ok(result) => {
                    if self.accepted(result) {
                        return Ok(Some(comment));
                    }
                }
                Err(e) => self
                    .tried
                    .push(format!("agent key {comment} (agent error: {e})")),
            }
        }
        self.tried.push(format!("{offered} agent key(s)"));
        Ok(None)
    }

    async fn rsa_hash(&self) -> Result<Option<russh::keys::HashAlg>, SshError> {
        Ok(self
            .handle
            .best_supported_rsa_hash()
            .await
            .map_err(|e| self.protocol(e))?
            .flatten())
    }

    fn accepted(&mut self, result: AuthResult) -> bool {
        match result {
            AuthResult::Success => true,
            AuthResult::Failure {
                remaining_methods, ..
            } => {
                self.server_methods = Some(remaining_methods.iter().copied().collect());
                false
            }
        }
    }

    /// Before any refusal we do not know what the server accepts: assume it may.
    fn server_accepts(&self, method: MethodKind) -> bool {
        self.server_methods
            .as_ref()
            .is_none_or(|m| m.contains(&method))
    }

    fn protocol(&self, source: russh::Error) -> SshError {
        SshError::Protocol {
            addr: format!("{}:{}", self.target.host, self.target.port),
            cause: source,
        }
    }

    fn failure(&self) -> SshError {
        let accepts = match &self.server_methods {
            Some(methods) => format!(
                "The server accepts: {}. ",
                methods
                    .iter()
                    .map(<&str>::from)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => String::new(),
        };
        let tried = if self.tried.is_empty() {
            "nothing (no key file, agent or password available)".to_string()
        } else {
            self.tried.join(", ")
        };
        let hint = format!(
            "{accepts}Check the user name ({}), that your public key is in its ~/.ssh/authorized_keys, or pass a key with --identity / a password with --password-stdin",
            self.target.user
        );
        SshError::AuthFailed {
            target: self.target.describe(),
            tried,
            hint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hint states what init installs: its fail2ban jail, and ufw's
    /// `limit` (whose numbers ufw fixes) on the SSH port.
    #[test]
    fn the_turned_away_hint_states_what_init_installs() {
        let jail = include_str!("../../templates/fail2ban_sshd.local.tera");
        for line in [
            format!("maxretry = {FAIL2BAN_MAXRETRY}"),
            format!("findtime = {FAIL2BAN_FINDTIME}"),
            format!("bantime = {FAIL2BAN_BANTIME}"),
        ] {
            assert!(jail.lines().any(|l| l == line), "{line} not in:\n{jail}");
        }
        let init = include_str!("../../playbooks/init.yml");
        assert!(init.contains("proto: tcp, action: limit, comment: ssh"));
    }
}
