//! `vpsup init`: runs playbooks/init.yml on fresh hosts, with the two steps a
//! playbook cannot express (fresh logins as the admin, see `InitHooks`), then
//! records in vpsup.toml how to reach each host from now on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use crate::cli::InitArgs;
use crate::config::{Config, DockerSource, InitConfig, PortRule, Size};
use crate::engine::assets::Assets;
use crate::engine::on_hosts::{run_on_hosts, HostRun};
use crate::engine::playbook;
use crate::engine::render::Renderer;
use crate::engine::{Hooks, RunOptions, Status};
use crate::facts::HostFacts;
use crate::fleet::{connect, Connection, Failures, HostResult};
use crate::host_binary::HostBinary;
use crate::layout;
use crate::report::HostOutcome;
use crate::settings::{project_dir, HostTarget, Settings, SettingsError};
use crate::transport::known_hosts;
use crate::transport::ssh::{Credentials, SshError, SshTarget, SshTransport};
use crate::transport::{ExecRequest, FileMeta, Transport};

const DEFAULT_ADMIN: &str = "deploy";
/// Hosts with less RAM than this get a swap file.
const DEFAULT_SWAP: Size = Size(1 << 30);
/// How long the sshd revert timer waits for the admin's login to be proven.
/// Between arming and confirming there are a few seconds of work; the margin
/// is for slow hosts and networks.
const REVERT_SECONDS: u32 = 300;

/// `init`'s options: the command line over vpsup.toml's [init] over defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    pub admin_user: String,
    pub ssh_port: u16,
    pub extra_keys: Vec<String>,
    pub docker: DockerSource,
    pub swap: Size,
    pub allow_ports: Vec<PortRule>,
    /// [init] ssh_users: who may log in over SSH besides the admin.
    pub ssh_users: Vec<String>,
    /// [init] ssh_classical_kex: `curve25519-sha256` for old clients too.
    pub ssh_classical_kex: bool,
    /// `--host-binary` (as given) or [init] host_binary (from the project
    /// directory); none: this vpsup.
    pub host_binary: Option<PathBuf>,
}

impl InitOptions {
    pub fn resolve(args: &InitArgs, config: Option<&InitConfig>, project: &Path) -> InitOptions {
        let empty = InitConfig::default();
        let config = config.unwrap_or(&empty);
        InitOptions {
            admin_user: args
                .admin_user
                .as_ref()
                .or(config.admin_user.as_ref())
                .map_or(DEFAULT_ADMIN.to_string(), |u| u.0.clone()),
            ssh_port: args.ssh_port.or(config.ssh_port.map(|p| p.0)).unwrap_or(22),
            extra_keys: cli_or_file(&args.extra_keys, &config.extra_keys),
            docker: args
                .docker
                .or(config.docker)
                .unwrap_or(DockerSource::Official),
            swap: args.swap.or(config.swap).unwrap_or(DEFAULT_SWAP),
            allow_ports: cli_or_file(&args.allow_ports, &config.allow_ports),
            ssh_users: config.ssh_users.iter().map(|u| u.0.clone()).collect(),
            ssh_classical_kex: config.ssh_classical_kex,
            host_binary: args
                .host_binary
                .clone()
                .or_else(|| config.host_binary.as_ref().map(|p| project.join(p))),
        }
    }

    /// ufw rules: SSH (rate-limited), HTTP, HTTPS and the extra ports.
    fn firewall_rules(&self) -> Value {
        let mut rules = vec![
            json!({"port": self.ssh_port, "proto": "tcp", "action": "limit", "comment": "ssh"}),
            json!({"port": 80, "proto": "tcp", "action": "allow", "comment": "http"}),
            json!({"port": 443, "proto": "tcp", "action": "allow", "comment": "https"}),
        ];
        for rule in &self.allow_ports {
            let proto = if rule.udp { "udp" } else { "tcp" };
            rules.push(json!({"port": rule.port, "proto": proto, "action": "allow", "comment": ALLOW_COMMENT}));
        }
        Value::Array(rules)
    }

    /// The members of the SSH login group (`layout::SSH_GROUP`), in the
    /// order `gpasswd -M` keeps them: the admin, then `ssh_users`.
    fn ssh_login_users(&self) -> Vec<&str> {
        let mut users = vec![self.admin_user.as_str()];
        for user in &self.ssh_users {
            if !users.contains(&user.as_str()) {
                users.push(user);
            }
        }
        users
    }

    /// The playbook's variables: the host layout and these options.
    pub fn vars(&self, admin_keys: &[String]) -> Map<String, Value> {
        let mut vars = layout::vars();
        vars.insert("admin_user".into(), json!(self.admin_user));
        vars.insert("admin_keys".into(), json!(admin_keys));
        vars.insert("ssh_port".into(), json!(self.ssh_port));
        vars.insert("docker_source".into(), json!(self.docker.as_str()));
        vars.insert("swap_mib".into(), json!(self.swap.mib()));
        vars.insert("firewall_rules".into(), self.firewall_rules());
        vars.insert("allow_comment".into(), json!(ALLOW_COMMENT));
        vars.insert("revert_seconds".into(), json!(REVERT_SECONDS));
        vars.insert("ssh_login_users".into(), json!(self.ssh_login_users()));
        vars.insert("ssh_classical_kex".into(), json!(self.ssh_classical_kex));
        vars
    }
}

/// The ufw comment on the rules `allow_ports` adds: a port dropped from the
/// list is closed by the next init, and no rule without it is touched.
const ALLOW_COMMENT: &str = "vpsup init allow";

/// A list given on the command line replaces the one in vpsup.toml.
fn cli_or_file<T: Clone>(cli: &[T], file: &[T]) -> Vec<T> {
    if cli.is_empty() { file } else { cli }.to_vec()
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("no public key of yours to install for the admin user {admin}: looked for {looked}. Create one with `ssh-keygen -t ed25519`, or pass --key FILE.pub")]
    NoOperatorKey { admin: String, looked: String },
    #[error("--key {0:?}: {1}")]
    BadKey(String, String),
    #[error("cannot update {}: {cause}", path.display())]
    Record { path: PathBuf, cause: String },
    /// `from`: `--host-binary` or where in vpsup.toml the path was set.
    #[error("{from}: {why}")]
    HostBinary { from: String, why: String },
}

impl crate::exit::ExitStatus for InitError {
    fn exit_code(&self) -> u8 {
        crate::exit::BAD_INPUT
    }
}

pub async fn run(
    settings: &Settings,
    target: Option<&str>,
    args: &InitArgs,
) -> crate::exit::Result<()> {
    let init_config = settings.config.as_ref().and_then(|c| c.init.as_ref());
    let options = InitOptions::resolve(args, init_config, &project_dir(settings));
    let targets = settings.targets(target)?;
    let assets = Assets::load(Some(&project_dir(settings)))?;
    let asset = assets.playbook("init")?;
    let plays = playbook::parse(&asset.text, &asset.origin)?;
    playbook::check_arguments(&plays)?;
    let renderer = Renderer::new(&assets.templates).map_err(anyhow::Error::msg)?;

    // Every host gets the same keys: found once, before connecting anywhere.
    let first = targets
        .first()
        .ok_or_else(|| SettingsError::NoHosts(settings.config_path.clone()))?;
    let keys = admin_keys(settings, &first.ssh, &options).await?;
    let run_options = RunOptions {
        check: settings.check,
        diff: settings.diff,
        tags: Vec::new(),
    };
    let (host_binary, no_binary_reason) = match &options.host_binary {
        Some(path) => (
            Some(HostBinary::load(path).map_err(|why| InitError::HostBinary {
                from: if args.host_binary.is_some() {
                    "--host-binary".to_string()
                } else {
                    format!("[init] host_binary in {}", settings.config_path.display())
                },
                why,
            })?),
            None,
        ),
        None => match std::env::current_exe()
            .map_err(|e| e.to_string())
            .and_then(|p| HostBinary::load(&p))
        {
            Ok(me) => (Some(me), None),
            Err(why) => (None, Some(why)),
        },
    };
    let mut vars = options.vars(&keys);
    vars.extend(HostBinary::vars(host_binary.as_ref()));
    // Where the renewal timer finds its settings: the project's certificate store.
    let store = settings
        .config
        .as_ref()
        .and_then(|c| c.acme.as_ref())
        .map_or(crate::acme::store::DEFAULT_DIR, |a| a.store.as_str());
    vars.insert("acme_store".into(), json!(store));
    let init = InitRun {
        options: options.clone(),
        ssh_ports: Mutex::new(BTreeMap::new()),
        host_binary,
    };
    let outcomes = run_on_hosts(
        settings,
        &targets,
        &plays,
        &renderer,
        &vars,
        &run_options,
        &init,
    )
    .await;
    // The name each host has in vpsup.toml after the run (for messages).
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    if !settings.check {
        let ports = init
            .ssh_ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (target, outcome) in targets.iter().zip(&outcomes) {
            // Once the admin's login on the new configuration is proven, that
            // is how the host is reached, even if a later step failed.
            if outcome.failed() && !ports.contains_key(&target.name) {
                continue;
            }
            let port = ports.get(&target.name).copied().unwrap_or(target.ssh.port);
            let record = Record {
                path: &settings.config_path,
                config: settings.config.as_ref(),
                identity: settings.identity(),
            };
            let (name, note) = record.host(target, port, &options, args)?;
            if let Some(note) = note {
                eprintln!("vpsup: {note}");
            }
            names.insert(target.name.clone(), name);
        }
    }
    for (target, outcome) in targets.iter().zip(&outcomes) {
        if !outcome.failed() && task_skipped(outcome, HOST_BINARY_TASK) {
            let name = names.get(&target.name).unwrap_or(&target.name);
            if !task_skipped(outcome, EARLIER_TIMER_TASK) {
                eprintln!("vpsup: {name}: this vpsup does not run on the host's CPU; the certificate renewal timer an earlier init set up keeps running the vpsup installed then");
                continue;
            }
            warn_no_host_renewal(
                settings,
                name,
                init.host_binary.as_ref(),
                no_binary_reason.as_deref(),
            );
        }
    }
    if let Some(failures) = Failures::of(&outcomes) {
        return Err(crate::exit::Error::failed(format!("{failures} failed")));
    }
    Ok(())
}

/// The init.yml task that installs vpsup on the host (skipped when no binary
/// fits the host's CPU).
const HOST_BINARY_TASK: &str = "vpsup on the host, for the certificate renewal timer";

/// The init.yml task that notices a renewal timer an earlier init installed
/// (skipped when there is none, or when this run installs one).
const EARLIER_TIMER_TASK: &str =
    "certificate renewal timer from an earlier init is kept (this vpsup does not fit the host's CPU)";

fn task_skipped(outcome: &HostOutcome, name: &str) -> bool {
    outcome
        .plays
        .iter()
        .flat_map(|p| &p.tasks)
        .any(|t| t.name == name && t.status == Status::Skipped)
}

/// Loud: without the timer, certificates expire unless something else renews them.
fn warn_no_host_renewal(
    settings: &Settings,
    host: &str,
    binary: Option<&HostBinary>,
    why: Option<&str>,
) {
    let why = match (binary, why) {
        (Some(b), _) => format!(
            "{} runs on {} and this host's CPU is another",
            b.source.display(),
            b.arches.join("/")
        ),
        (None, Some(why)) => why.to_string(),
        (None, None) => "no vpsup binary for it".to_string(),
    };
    let project = std::path::absolute(project_dir(settings)).unwrap_or_default();
    eprintln!(
        "vpsup: WARNING: {host}: certificate renewal is NOT scheduled on the host ({why}).\n\
         vpsup: Certificates will expire unless `vpsup renew-certs` runs from elsewhere, e.g. this cron line on a machine that is always on:\n\
         vpsup:     17 3 * * * cd {project} && vpsup renew-certs --limit {host}\n\
         vpsup: or re-run init with --host-binary PATH, a vpsup built for the host (a static musl build runs on any Linux).",
        project = project.display()
    );
}

/// `init`'s side of the run: connecting (root's login may already be closed)
/// and the hooks.
struct InitRun {
    options: InitOptions,
    /// The SSH port each host answers on after the run, by host name.
    ssh_ports: Mutex<BTreeMap<String, u16>>,
    /// What `install_vpsup` uploads.
    host_binary: Option<HostBinary>,
}

#[async_trait]
impl HostRun for InitRun {
    /// A host initialised before refuses root: go on as the admin, as the
    /// operator would have to. When vpsup.toml records that admin for the
    /// host (an earlier init's), the admin goes first: sshd refuses root
    /// (AllowGroups) and fail2ban counts each refusal, so a re-run with
    /// several keys in the agent could lock the operator out.
    async fn connect(
        &self,
        settings: &Settings,
        target: &HostTarget,
    ) -> Result<Connection, SshError> {
        if target.ssh.user != "root" {
            return connect(settings, target).await;
        }
        let admin = HostTarget {
            ssh: SshTarget {
                user: self.options.admin_user.clone(),
                ..target.ssh.clone()
            },
            ..target.clone()
        };
        let recorded = recorded_admin(settings, target) == Some(self.options.admin_user.as_str());
        let (first, second) = if recorded {
            (&admin, target)
        } else {
            (target, &admin)
        };
        match connect(settings, first).await {
            Err(SshError::AuthFailed { .. }) => {}
            other => return other,
        }
        let (refused, other) = if recorded {
            (
                "the admin's login, which vpsup.toml records, is refused",
                "The admin's",
            )
        } else {
            (
                "root's login is refused (closed by an earlier init?)",
                "Root's",
            )
        };
        eprintln!(
            "vpsup: {}: {refused}; trying {}",
            first.ssh.describe(),
            second.ssh.describe()
        );
        match connect(settings, second).await {
            Ok(connection) => Ok(connection),
            // Neither got in: both reasons matter (a wrong root password on
            // a fresh host is the likelier story).
            Err(SshError::AuthFailed {
                target: who,
                tried,
                hint,
            }) => Err(SshError::AuthFailed {
                target: format!("{} (and {who})", first.ssh.describe()),
                tried,
                hint: format!("{hint} {other} login was refused too."),
            }),
            Err(other) => Err(other),
        }
    }

    fn hooks<'a>(
        &'a self,
        settings: &'a Settings,
        target: &HostTarget,
        connected: SshTarget,
    ) -> Box<dyn Hooks + 'a> {
        Box::new(InitHooks {
            run: self,
            host: target.name.clone(),
            credentials: Credentials {
                // Proves the key, never a password: the password is what closes.
                agent_socket: settings.credentials.agent_socket.clone(),
                password: None,
                prompt: None,
            },
            connected,
        })
    }
}

/// The admin user vpsup.toml records for `target`'s host (an earlier
/// init's), found by the host's name, or by its address and SSH port
/// (hosts behind one address differ by port).
fn recorded_admin<'a>(settings: &'a Settings, target: &HostTarget) -> Option<&'a str> {
    let config = settings.config.as_ref()?;
    let (_, host) = config.hosts.iter().find(|(name, host)| {
        name.as_str() == target.name
            || ([target.name.as_str(), target.ssh.host.as_str()].contains(&host.address.as_str())
                && host.port.map_or(22, |p| p.0) == target.ssh.port)
    })?;
    host.user.as_deref().filter(|user| *user != "root")
}

/// The hooks init.yml names. The two logins each log in afresh as the admin,
/// on their own connection, with the operator's keys only (never a password:
/// password login is what is being closed), and run `sudo -n true`.
/// `install_vpsup` uploads the binary for the renewal timer.
struct InitHooks<'a> {
    run: &'a InitRun,
    host: String,
    connected: SshTarget,
    credentials: Credentials,
}

const BEFORE_HARDENING: &str = "admin_login";
const AFTER_RELOAD: &str = "admin_login_after_reload";
const INSTALL_VPSUP: &str = "install_vpsup";

impl InitHooks<'_> {
    /// The port to reach sshd on once its new configuration is loaded: the
    /// same as now unless init moves it. (Compared with the port sshd listens
    /// on, not the one connected to, which may be forwarded.)
    fn port_after_reload(&self, facts: &HostFacts) -> u16 {
        let listening = facts.sshd_ports.first().copied().unwrap_or(22);
        if self.run.options.ssh_port == listening {
            self.connected.port
        } else {
            self.run.options.ssh_port
        }
    }

    /// Once the drop-in is live sshd offers its Ed25519 key alone. It is
    /// recorded now, read through this session (whose host key checked out),
    /// for the port sshd is reached on now and after the reload: the next
    /// login meets a known key, never an unknown one or, where known_hosts
    /// holds another type (an older client wrote ECDSA), a "changed" one.
    async fn record_host_key(
        &self,
        transport: &dyn Transport,
        facts: &HostFacts,
    ) -> Result<(), String> {
        let read = format!("cat {}.pub", layout::SSHD_HOST_KEY);
        let out = transport
            .run_ok("reading sshd's Ed25519 host key", ExecRequest::new(read))
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        let key = russh::keys::PublicKey::from_openssh(text.trim())
            .map_err(|e| format!("{}.pub is not a public key ({e})", layout::SSHD_HOST_KEY))?;
        let target = &self.connected;
        for port in [target.port, self.port_after_reload(facts)] {
            known_hosts::record_alongside(&target.known_hosts, &target.host, port, &key).map_err(
                |e| {
                    format!(
                        "cannot record the host key in {}: {e}",
                        target.known_hosts.display()
                    )
                },
            )?;
        }
        Ok(())
    }

    async fn prove(&self, port: u16) -> Result<(), String> {
        let target = SshTarget {
            user: self.run.options.admin_user.clone(),
            port,
            ..self.connected.clone()
        };
        let who = target.describe();
        let (transport, _) = SshTransport::connect(&target, &self.credentials)
            .await
            .map_err(|e| format!("a fresh login as {who} failed: {e}"))?;
        let sudo = transport
            .run_ok("sudo -n true", ExecRequest::new("true").become_root(true))
            .await;
        transport.close().await;
        sudo.map(|_| ())
            .map_err(|e| format!("{who} logs in but cannot use sudo: {e}"))
    }
}

#[async_trait]
impl Hooks for InitHooks<'_> {
    fn provides(&self, name: &str) -> bool {
        name == BEFORE_HARDENING || name == AFTER_RELOAD || name == INSTALL_VPSUP
    }

    async fn step(
        &self,
        name: &str,
        transport: &dyn Transport,
        facts: &HostFacts,
    ) -> Result<(), String> {
        if name == INSTALL_VPSUP {
            let Some(binary) = &self.run.host_binary else {
                return Err("no vpsup binary to install".to_string());
            };
            return transport
                .put_file(
                    &format!("{}.new", layout::HOST_BINARY),
                    &binary.content,
                    &FileMeta::mode(0o755).owner("root:root"),
                    true,
                )
                .await
                .map_err(|e| e.to_string());
        }
        if name == BEFORE_HARDENING {
            self.prove(self.connected.port).await.map_err(|e| {
                format!("{e}. Root and password logins stay open until the admin's login works")
            })?;
            self.record_host_key(transport, facts).await?;
            // Armed before the drop-in is written: a run that dies right after
            // writing it (or a reboot) still gets the previous configuration back.
            let arm = format!("{}/sshd-arm {REVERT_SECONDS}", layout::HELPERS_DIR);
            transport
                .run_ok(
                    "arming the sshd revert timer",
                    ExecRequest::new(arm).become_root(true),
                )
                .await
                .map_err(|e| e.to_string())?;
            return Ok(());
        }
        let port = self.port_after_reload(facts);
        self.prove(port).await.map_err(|e| {
            format!("after sshd reloaded its new configuration, {e}. The revert timer puts the previous sshd configuration back within {REVERT_SECONDS} s; this session stays open")
        })?;
        self.run
            .ssh_ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.host.clone(), port);
        Ok(())
    }
}

/// The public keys the admin gets: `--key`/[init] extra_keys, plus the
/// operator's own, as ssh-copy-id finds them: the `.pub` beside each identity
/// file (or the public half of an unencrypted key), else the agent's keys.
async fn admin_keys(
    settings: &Settings,
    target: &SshTarget,
    options: &InitOptions,
) -> Result<Vec<String>, InitError> {
    let base = project_dir(settings);
    let mut keys = Vec::new();
    for extra in &options.extra_keys {
        keys.extend(extra_key(extra, &base, settings.home())?);
    }
    let mut looked = Vec::new();
    let mut own = Vec::new();
    for file in &target.identity_files {
        looked.push(file.display().to_string());
        if let Some(key) = public_half(file) {
            own.push(key);
        }
    }
    if own.is_empty() {
        match &settings.credentials.agent_socket {
            Some(socket) => {
                looked.push("ssh-agent".to_string());
                own.extend(agent_keys(socket).await);
            }
            None => looked.push("ssh-agent (SSH_AUTH_SOCK is not set)".to_string()),
        }
    }
    if own.is_empty() {
        return Err(InitError::NoOperatorKey {
            admin: options.admin_user.clone(),
            looked: looked.join(", "),
        });
    }
    for key in own {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// A key line as given, or the key lines of a `.pub` file.
pub(crate) fn extra_key(spec: &str, base: &Path, home: &Path) -> Result<Vec<String>, InitError> {
    let spec = spec.trim();
    if is_key_line(spec) {
        return Ok(vec![spec.to_string()]);
    }
    let path = match spec.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None => base.join(spec),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        InitError::BadKey(
            spec.to_string(),
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    match lines.iter().find(|l| !is_key_line(l)) {
        Some(bad) => Err(InitError::BadKey(
            spec.to_string(),
            format!(
                "{} has a line that is not an OpenSSH public key: {bad:?}",
                path.display()
            ),
        )),
        None if lines.is_empty() => Err(InitError::BadKey(
            spec.to_string(),
            format!("{} holds no public key", path.display()),
        )),
        None => Ok(lines),
    }
}

fn is_key_line(s: &str) -> bool {
    russh::keys::PublicKey::from_openssh(s.trim()).is_ok()
}

/// The public key of an identity file: its `.pub`, else derived from the
/// private key when that is not encrypted.
fn public_half(private: &Path) -> Option<String> {
    let mut pub_path = private.as_os_str().to_owned();
    pub_path.push(".pub");
    if let Ok(text) = std::fs::read_to_string(PathBuf::from(pub_path)) {
        let line = text.lines().next().unwrap_or("").trim().to_string();
        if is_key_line(&line) {
            return Some(line);
        }
    }
    let key = russh::keys::load_secret_key(private, None).ok()?;
    key.public_key().to_openssh().ok()
}

async fn agent_keys(socket: &Path) -> Vec<String> {
    let Ok(mut agent) = russh::keys::agent::client::AgentClient::connect_uds(socket).await else {
        return Vec::new();
    };
    let identities = agent.request_identities().await.unwrap_or_default();
    identities
        .iter()
        .filter_map(|id| match id {
            russh::keys::agent::AgentIdentity::PublicKey { key, .. } => key.to_openssh().ok(),
            _ => None,
        })
        .collect()
}

/// Records in vpsup.toml how to reach the host from now on (as the admin, on
/// the port sshd answers) and the init options given on the command line, so
/// a re-run (and `deploy`) needs no flags. Creates the file when the project
/// has none; edits keep its comments and layout. Says what it did, if anything.
struct Record<'a> {
    path: &'a Path,
    config: Option<&'a Config>,
    /// The `-i` key, recorded for a new host.
    identity: Option<&'a Path>,
}

impl Record<'_> {
    fn host(
        &self,
        target: &HostTarget,
        port: u16,
        options: &InitOptions,
        args: &InitArgs,
    ) -> Result<(String, Option<String>), InitError> {
        let path = self.path;
        let failed = |cause: String| InitError::Record {
            path: path.to_path_buf(),
            cause,
        };
        let before = match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(failed(e.to_string())),
        };
        let mut doc: toml_edit::DocumentMut = before
            .as_deref()
            .unwrap_or("# vpsup project configuration (see the README for every key).\n")
            .parse()
            .map_err(|e: toml_edit::TomlError| failed(e.to_string()))?;
        let configured = self.config.is_some_and(|c| c.host(&target.name).is_some());
        let name = if configured {
            target.name.clone()
        } else {
            let taken: Vec<&str> = self
                .config
                .map(|c| c.hosts.keys().map(|n| n.as_str()).collect())
                .unwrap_or_default();
            host_name_for(&target.name, &taken)
        };

        let hosts = table_in(doc.as_table_mut(), "hosts", true);
        let host = table_in(hosts, &name, false);
        if !configured {
            host["address"] = toml_edit::value(target.name.as_str());
            if let Some(identity) = self.identity {
                let absolute =
                    std::path::absolute(identity).unwrap_or_else(|_| identity.to_path_buf());
                host["identity_file"] = toml_edit::value(absolute.display().to_string());
            }
        }
        if port != target.ssh.port || (!configured && port != 22) {
            host["port"] = toml_edit::value(i64::from(port));
        }
        let recorded_user = host
            .get("user")
            .and_then(|u| u.as_str())
            .map(str::to_string);
        // An earlier admin left out of the SSH login group loses SSH on
        // this run (AllowGroups): said, not done quietly.
        let left_out = recorded_user.filter(|user| {
            user != "root" && *user != options.admin_user && !options.ssh_users.contains(user)
        });
        if host.get("user").and_then(|u| u.as_str()) != Some(options.admin_user.as_str()) {
            host["user"] = toml_edit::value(options.admin_user.as_str());
        }

        // Flags are remembered: a re-run must not create another admin or move SSH back.
        let given: Vec<(&str, toml_edit::Item)> = [
            args.admin_user
                .as_ref()
                .map(|u| ("admin_user", toml_edit::value(u.0.as_str()))),
            args.ssh_port
                .map(|p| ("ssh_port", toml_edit::value(i64::from(p)))),
            args.docker
                .map(|d| ("docker", toml_edit::value(d.as_str()))),
            args.swap
                .map(|s| ("swap", toml_edit::value(String::from(s)))),
            (!args.allow_ports.is_empty()).then(|| {
                let ports: toml_edit::Array =
                    args.allow_ports.iter().map(|p| String::from(*p)).collect();
                ("allow_ports", toml_edit::value(ports))
            }),
            (!args.extra_keys.is_empty()).then(|| {
                let keys: toml_edit::Array = args.extra_keys.iter().map(String::as_str).collect();
                ("extra_keys", toml_edit::value(keys))
            }),
            args.host_binary.as_ref().map(|p| {
                // Relative to the project when inside it: vpsup.toml is shared
                // with teammates and CI, whose checkouts live elsewhere.
                let absolute = std::path::absolute(p).unwrap_or_else(|_| p.clone());
                let project = path
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .map_or_else(|| std::path::absolute("."), std::path::absolute)
                    .ok();
                let recorded = project
                    .and_then(|d| absolute.strip_prefix(d).ok().map(Path::to_path_buf))
                    .unwrap_or(absolute);
                (
                    "host_binary",
                    toml_edit::value(recorded.display().to_string()),
                )
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !given.is_empty() {
            let init = table_in(doc.as_table_mut(), "init", false);
            for (key, item) in given {
                init[key] = item;
            }
        }

        let after = doc.to_string();
        if before.as_deref() == Some(after.as_str()) {
            return Ok((name, None));
        }
        // Written beside, then renamed: never a half-written config.
        let temporary = path.with_extension("toml.vpsup-new");
        std::fs::write(&temporary, &after)
            .and_then(|()| std::fs::rename(&temporary, path))
            .map_err(|e| failed(e.to_string()))?;
        let verb = if before.is_some() {
            "updated"
        } else {
            "created"
        };
        let mut note = format!(
            "{verb} {}: host {name} is reached as {}@{}:{port} from now on",
            path.display(),
            options.admin_user,
            target.ssh.host
        );
        if let Some(user) = left_out {
            note.push_str(&format!(
                ". {user}, its admin before, no longer logs in over SSH (sshd lets in the admin and [init] ssh_users only): add it to [init] ssh_users to keep its access"
            ));
        }
        Ok((name, Some(note)))
    }
}

/// The table `key` in `parent`, created when missing (`implicit`: written
/// only through its sub-tables, as `[hosts.web]` without a bare `[hosts]`).
fn table_in<'t>(
    parent: &'t mut toml_edit::Table,
    key: &str,
    implicit: bool,
) -> &'t mut toml_edit::Table {
    let item = parent.entry(key).or_insert_with(|| {
        let mut table = toml_edit::Table::new();
        table.set_implicit(implicit);
        toml_edit::Item::Table(table)
    });
    if !item.is_table() {
        // An inline table (`hosts = { ... }`) becomes a normal one.
        if let Some(inline) = item.as_inline_table().cloned() {
            *item = toml_edit::Item::Table(inline.into_table());
        }
    }
    item.as_table_mut().expect("a table")
}

/// A vpsup.toml host name for an address as typed: `web` stays `web`,
/// `203.0.113.42` becomes `203-0-113-42`; a taken name gets a number.
fn host_name_for(address: &str, taken: &[&str]) -> String {
    let mut name: String = address
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name.trim_matches('-').chars().take(50).collect();
    if name.is_empty() {
        name = "vps".to_string();
    }
    let mut candidate = name.clone();
    let mut n = 2;
    while taken.contains(&candidate.as_str()) {
        candidate = format!("{name}-{n}");
        n += 1;
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Port, UserName};
    use crate::engine::playbook::Action;
    use crate::engine::render::Vars;
    use crate::transport::ssh::SshTarget;

    fn target(name: &str, user: &str, port: u16) -> HostTarget {
        HostTarget {
            name: name.to_string(),
            sudo: true,
            ssh: SshTarget {
                host: name.to_string(),
                port,
                user: user.to_string(),
                identity_files: vec![],
                identities_only: false,
                known_hosts: PathBuf::from("/dev/null"),
                connect_timeout: std::time::Duration::from_secs(5),
            },
        }
    }

    #[test]
    fn options_come_from_flags_then_config_then_defaults() {
        let defaults = InitOptions::resolve(&InitArgs::default(), None, Path::new("."));
        assert_eq!(
            (
                defaults.admin_user.as_str(),
                defaults.ssh_port,
                defaults.docker,
                defaults.swap.mib()
            ),
            ("deploy", 22, DockerSource::Official, 1024)
        );
        let config = InitConfig {
            admin_user: Some(UserName("ops".into())),
            ssh_port: Some(Port(2222)),
            allow_ports: vec!["8443".parse().unwrap()],
            ..Default::default()
        };
        let args = InitArgs {
            ssh_port: Some(2200),
            ..Default::default()
        };
        let o = InitOptions::resolve(&args, Some(&config), Path::new("."));
        assert_eq!((o.admin_user.as_str(), o.ssh_port), ("ops", 2200));
        assert_eq!(o.allow_ports.len(), 1);
        let rules = o.firewall_rules();
        assert_eq!(rules[0]["port"], 2200);
        assert_eq!(rules[0]["action"], "limit");
        assert_eq!(rules[3]["port"], 8443);
    }

    #[test]
    fn host_names_from_addresses() {
        assert_eq!(host_name_for("web", &[]), "web");
        assert_eq!(host_name_for("203.0.113.42", &[]), "203-0-113-42");
        assert_eq!(
            host_name_for("Web.Example.com", &["web-example-com"]),
            "web-example-com-2"
        );
        assert_eq!(host_name_for("::1", &[]), "1");
        assert_eq!(host_name_for("---", &[]), "vps");
    }

    #[test]
    fn a_new_host_is_recorded_in_a_new_file_then_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vpsup.toml");
        let options = InitOptions::resolve(&InitArgs::default(), None, Path::new("."));
        let args = InitArgs {
            allow_ports: vec!["51820/udp".parse().unwrap()],
            // Inside the project: recorded relative to it.
            host_binary: Some(dir.path().join("bin/vpsup-aarch64")),
            ..Default::default()
        };
        let record = Record {
            path: &path,
            config: None,
            identity: Some(Path::new("/keys/id_vps")),
        };
        let note = record
            .host(&target("203.0.113.42", "root", 22), 22, &options, &args)
            .unwrap()
            .1
            .unwrap();
        assert!(
            note.starts_with("created ") && note.contains("deploy@203.0.113.42:22"),
            "{note}"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let config = Config::parse(&text, &path).unwrap();
        let host = config.host("203-0-113-42").unwrap();
        assert_eq!(host.address, "203.0.113.42");
        assert_eq!(host.user.as_deref(), Some("deploy"));
        assert_eq!(host.port, None, "22 goes without saying");
        assert_eq!(
            host.identity_file.as_deref(),
            Some(Path::new("/keys/id_vps"))
        );
        assert_eq!(config.init.as_ref().unwrap().allow_ports[0].port, 51820);
        assert_eq!(
            config.init.as_ref().unwrap().host_binary.as_deref(),
            Some(Path::new("bin/vpsup-aarch64"))
        );

        // Re-run: the host is now configured, and already right.
        let record = Record {
            config: Some(&config),
            ..record
        };
        let again = record
            .host(&target("203-0-113-42", "deploy", 22), 22, &options, &args)
            .unwrap();
        assert_eq!(again, ("203-0-113-42".to_string(), None));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn a_configured_host_is_updated_in_place_keeping_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vpsup.toml");
        let text = "# my project\n[hosts.web]\naddress = \"203.0.113.9\" # the droplet\nuser = \"root\"\n\n[app]\nname = \"doctor\"\n";
        std::fs::write(&path, text).unwrap();
        let config = Config::parse(text, &path).unwrap();
        let options = InitOptions::resolve(
            &InitArgs {
                ssh_port: Some(2222),
                ..Default::default()
            },
            None,
            Path::new("."),
        );
        let record = Record {
            path: &path,
            config: Some(&config),
            identity: None,
        };
        let args = InitArgs {
            ssh_port: Some(2222),
            ..Default::default()
        };
        record
            .host(&target("web", "root", 22), 2222, &options, &args)
            .unwrap()
            .1
            .unwrap();
        let after = std::fs::read_to_string(&path).unwrap();
        assert!(
            after.starts_with(
                "# my project\n[hosts.web]\naddress = \"203.0.113.9\" # the droplet\n"
            ),
            "{after}"
        );
        let config = Config::parse(&after, &path).unwrap();
        let web = config.host("web").unwrap();
        assert_eq!(
            (web.user.as_deref(), web.port),
            (Some("deploy"), Some(Port(2222)))
        );
        assert_eq!(config.init.unwrap().ssh_port, Some(Port(2222)));
        assert_eq!(config.app.unwrap().name.as_str(), "doctor");

        // Another admin: the one before loses SSH (the login group is the
        // admin and ssh_users), and is told so, unless ssh_users keeps it.
        let config_before_ops = Config::parse(&after, &path).unwrap();
        let ops = |ssh_users: &[&str]| {
            let init = InitConfig {
                ssh_users: ssh_users.iter().map(|u| UserName(u.to_string())).collect(),
                ..InitConfig::default()
            };
            let args = InitArgs {
                admin_user: Some(UserName("ops".into())),
                ..InitArgs::default()
            };
            let options = InitOptions::resolve(&args, Some(&init), Path::new("."));
            std::fs::write(&path, &after).unwrap();
            let record = Record {
                path: &path,
                config: Some(&config_before_ops),
                identity: None,
            };
            record
                .host(&target("web", "deploy", 2222), 2222, &options, &args)
                .unwrap()
                .1
                .unwrap()
        };
        let note = ops(&[]);
        assert!(
            note.contains("deploy, its admin before, no longer logs in over SSH")
                && note.contains("add it to [init] ssh_users"),
            "{note}"
        );
        let note = ops(&["deploy"]);
        assert!(!note.contains("no longer logs in"), "{note}");
    }

    #[test]
    fn keys_from_lines_files_and_identity_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_test");
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "op@laptop", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success());
        let pub_line = std::fs::read_to_string(dir.path().join("id_test.pub")).unwrap();
        assert_eq!(public_half(&key).as_deref(), Some(pub_line.trim()));
        // Without the .pub, the public half is derived from the private key.
        std::fs::remove_file(dir.path().join("id_test.pub")).unwrap();
        let derived = public_half(&key).unwrap();
        assert_eq!(
            derived.split_whitespace().nth(1),
            pub_line.split_whitespace().nth(1)
        );
        assert_eq!(public_half(&dir.path().join("missing")), None);

        std::fs::write(dir.path().join("team.pub"), format!("# team\n{pub_line}\n")).unwrap();
        let lines = extra_key("team.pub", dir.path(), dir.path()).unwrap();
        assert_eq!(lines, [pub_line.trim()]);
        assert_eq!(
            extra_key(pub_line.trim(), dir.path(), dir.path())
                .unwrap()
                .len(),
            1
        );
        let err = extra_key("nope.pub", dir.path(), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
        std::fs::write(dir.path().join("bad.pub"), "hello\n").unwrap();
        let err = extra_key("bad.pub", dir.path(), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an OpenSSH public key"), "{err}");
    }

    /// init.yml, rendered for a host described by `facts` (and, when given,
    /// what the Docker probe printed): the names of the tasks that would run.
    fn selected_tasks(
        facts: &str,
        docker_from: Option<&str>,
        options: &InitOptions,
    ) -> Vec<String> {
        selected(facts, docker_from, options)
            .into_iter()
            .map(|t| t.name)
            .collect()
    }

    /// A task init would run, with its arguments rendered for the host.
    struct Selected {
        name: String,
        module: String,
        args: Value,
    }

    /// init.yml's variables on a host described by `facts`, the Docker probe
    /// having printed `docker_from`.
    fn init_vars(facts: &str, docker_from: Option<&str>, options: &InitOptions) -> Vars {
        let mut vars = Vars::default();
        vars.base.extend(options.vars(&["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk4Cz6ZlMbDcj6ZgvjKOPhv1gKPtcCHJmBb6yMd0pD5 op".to_string()]));
        // This test binary stands in for vpsup: an x86_64 (or whatever runs
        // the tests) Linux executable.
        let me = HostBinary::load(&std::env::current_exe().unwrap()).unwrap();
        vars.base.extend(HostBinary::vars(Some(&me)));
        vars.with_facts(&crate::facts::parse(facts).unwrap());
        vars.results.insert(
            "docker_from".into(),
            json!({"stdout": docker_from.unwrap_or(""), "skipped": docker_from.is_none()}),
        );
        vars
    }

    /// The tasks (and handlers) of init.yml that would run on a host described
    /// by `facts`. Every selected task's arguments render and build into a module.
    fn selected(facts: &str, docker_from: Option<&str>, options: &InitOptions) -> Vec<Selected> {
        let assets = Assets::load(None).unwrap();
        let asset = assets.playbook("init").unwrap();
        let plays = playbook::parse(&asset.text, &asset.origin).unwrap();
        playbook::check_arguments(&plays).unwrap();
        let renderer = Renderer::new(&assets.templates).unwrap();
        let mut vars = init_vars(facts, docker_from, options);
        let mut base = plays[0].vars.clone();
        base.append(&mut vars.base);
        vars.base = base;
        let mut selected = Vec::new();
        for task in plays[0].tasks.iter().chain(&plays[0].handlers) {
            let Action::Module { module, args } = &task.action else {
                continue;
            };
            if let Some(when) = &task.when {
                if !renderer
                    .when(when, &vars)
                    .unwrap_or_else(|e| panic!("{}: {e}", task.name))
                {
                    continue;
                }
            }
            let rendered = renderer
                .args(args, &vars)
                .unwrap_or_else(|e| panic!("{}: {e}", task.name));
            let built = crate::modules::build(module, rendered.clone());
            assert!(built.is_ok(), "{}: {:?}", task.name, built.err());
            selected.push(Selected {
                name: task.name.clone(),
                module: module.clone(),
                args: rendered,
            });
        }
        for name in [
            "sshd_apply.sh.tera",
            "sshd_arm.sh.tera",
            "sshd_revert.sh.tera",
            "ufw_docker_user.rules.tera",
        ] {
            renderer.template(name, &vars).unwrap();
        }
        selected
    }

    const DEFAULT_TLS_TASK: &str =
        "throwaway certificate for nginx's default HTTPS server (nginx before 1.19.4)";

    /// Ubuntu 22.04's nginx (1.18) cannot refuse a TLS handshake: there the
    /// default HTTPS server gets a throwaway certificate, made by init once
    /// (the task below, run here on a temp dir: a 0600 key, a certificate,
    /// and nothing to do the second time); elsewhere it refuses handshakes.
    #[test]
    fn the_default_https_server_suits_each_distributions_nginx() {
        let options = InitOptions::resolve(&InitArgs::default(), None, Path::new("."));
        let assets = Assets::load(None).unwrap();
        let renderer = Renderer::new(&assets.templates).unwrap();
        for (os_id, os_version, codename, rejects) in [
            ("ubuntu", "22.04", "jammy", false),
            ("ubuntu", "24.04", "noble", true),
            ("debian", "12", "bookworm", true),
            ("debian", "13", "trixie", true),
        ] {
            let host = format!("{os_id} {os_version}");
            let facts = FRESH_DEBIAN
                .replace("os_id=debian", &format!("os_id={os_id}"))
                .replace("os_version=13", &format!("os_version={os_version}"))
                .replace("os_codename=trixie", &format!("os_codename={codename}"));
            let tasks = selected(&facts, Some("official\n"), &options);
            let certificate = tasks.iter().find(|t| t.name == DEFAULT_TLS_TASK);
            assert_eq!(certificate.is_none(), rejects, "{host}");
            let default = renderer
                .template(
                    "nginx_default.conf.tera",
                    &init_vars(&facts, None, &options),
                )
                .unwrap();
            assert_eq!(
                default.contains("\n    ssl_reject_handshake on;\n"),
                rejects,
                "{host}:\n{default}"
            );
            assert_eq!(
                default.contains(&format!(
                    "\n    ssl_certificate {};\n    ssl_certificate_key {};\n    return 444;\n",
                    layout::DEFAULT_TLS_CERT,
                    layout::DEFAULT_TLS_KEY
                )),
                !rejects,
                "{host}:\n{default}"
            );
            let Some(task) = certificate else { continue };

            let dir = tempfile::tempdir().unwrap();
            let here = dir.path().join("default-tls");
            let args: Value = serde_json::from_str(
                &task
                    .args
                    .to_string()
                    .replace("/etc/vpsup/default-tls", &here.display().to_string()),
            )
            .unwrap();
            let command = crate::modules::build(&task.module, args).unwrap();
            let probe = command.probe(&crate::modules::testing::probe_options());
            let sh = |script: &str| crate::transport::script::testing::sh_ok(script).stdout;
            let first = crate::modules::testing::plan(
                command.as_ref(),
                &String::from_utf8_lossy(&sh(&probe)),
            )
            .unwrap();
            sh(&first.changes[0].script);
            use std::os::unix::fs::PermissionsExt;
            let mode = |name: &str| {
                std::fs::metadata(here.join(name))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777
            };
            assert_eq!((mode("key.pem"), mode("cert.pem")), (0o600, 0o644));
            let cert = std::fs::read(here.join("cert.pem")).unwrap();
            let subject = sh(&format!(
                "openssl x509 -noout -subject -in {}",
                here.join("cert.pem").display()
            ));
            assert!(String::from_utf8_lossy(&subject).contains("CN = invalid"));
            let again = crate::modules::testing::plan(
                command.as_ref(),
                &String::from_utf8_lossy(&sh(&probe)),
            )
            .unwrap();
            assert!(again.is_ok(), "made once, never changed");
            assert_eq!(std::fs::read(here.join("cert.pem")).unwrap(), cert);
        }
    }

    const FRESH_DEBIAN: &str = "os_id=debian\nos_version=13\nos_codename=trixie\nos_name=Debian GNU/Linux 13 (trixie)\nkernel=6.12\narch=x86_64\ncpus=2\nmem_kb=2000000\nswap_kb=0\nroot_free_kb=8000000\nhostname=vps\nipv4=198.51.100.15/24\nuser=root\nsudo=root\ninit=systemd\nsshd_ports=22\ntime_sync=\n";

    /// A module whose arguments mention `facts` is built after the probe and
    /// costs a second exec on every run: the no-op re-run stays at one exec
    /// only if no task a usual host runs does that (`assert` probes nothing).
    #[test]
    fn no_usual_task_argument_reads_facts() {
        let options = InitOptions::resolve(&InitArgs::default(), None, Path::new("."));
        // A converged host, as a re-run finds it.
        let converged = FRESH_DEBIAN
            .replace("arch=x86_64", &format!("arch={}", std::env::consts::ARCH))
            .replace("time_sync=", "time_sync=systemd-timesyncd")
            + "docker_package=docker.io\n";
        let usual = selected_tasks(&converged, None, &options);
        let assets = Assets::load(None).unwrap();
        let asset = assets.playbook("init").unwrap();
        let plays = playbook::parse(&asset.text, &asset.origin).unwrap();
        for task in plays[0].tasks.iter().filter(|t| usual.contains(&t.name)) {
            if let Action::Module { module, args } = &task.action {
                if module == "assert" {
                    continue;
                }
                assert!(
                    !args.to_string().contains("facts."),
                    "{}: its arguments read facts",
                    task.name
                );
            }
        }
    }

    #[test]
    fn the_renewal_timer_comes_with_a_binary_for_the_hosts_cpu_only() {
        let options = InitOptions::resolve(&InitArgs::default(), None, Path::new("."));
        let renewal = [
            HOST_BINARY_TASK,
            "certificate renewal service",
            "certificate renewal timer on",
        ];
        let here = FRESH_DEBIAN.replace("arch=x86_64", &format!("arch={}", std::env::consts::ARCH));
        let tasks = selected_tasks(&here, Some("distro\n"), &options);
        for expected in renewal {
            assert!(
                tasks.iter().any(|t| t == expected),
                "{expected} missing from {tasks:?}"
            );
        }
        let other = FRESH_DEBIAN.replace("arch=x86_64", "arch=s390x");
        let tasks = selected_tasks(&other, Some("distro\n"), &options);
        assert!(
            !tasks.iter().any(|t| renewal.contains(&t.as_str())),
            "{tasks:?}"
        );
        assert!(!tasks.iter().any(|t| t == EARLIER_TIMER_TASK), "{tasks:?}");
        // A timer an earlier init set up is noticed (no false warning), and
        // only when this run cannot install one.
        let earlier = format!("{other}renewal_timer=yes\n");
        let tasks = selected_tasks(&earlier, Some("distro\n"), &options);
        assert!(tasks.iter().any(|t| t == EARLIER_TIMER_TASK), "{tasks:?}");
        let here_earlier = format!("{here}renewal_timer=yes\n");
        let tasks = selected_tasks(&here_earlier, Some("distro\n"), &options);
        assert!(!tasks.iter().any(|t| t == EARLIER_TIMER_TASK), "{tasks:?}");
    }

    #[test]
    fn a_fresh_small_debian_gets_everything_with_docker_as_probed() {
        let options = InitOptions::resolve(&InitArgs::default(), None, Path::new("."));
        let tasks = selected_tasks(FRESH_DEBIAN, Some("distro\n"), &options);
        for expected in [
            "time sync daemon (when none is installed)",
            "choose where Docker comes from",
            "Docker Engine and compose v2 from the distribution (Debian 13)",
            "swap file (RAM under 2 GiB, no swap yet)",
            "SSH hardening drop-in (sorts before cloud-init's; checked with sshd -t)",
        ] {
            assert!(
                tasks.iter().any(|t| t == expected),
                "{expected} missing from {tasks:?}"
            );
        }
        assert!(!tasks.iter().any(|t| t.contains("Docker's repository")));
        assert!(
            !tasks
                .iter()
                .any(|t| t == "the users [init] ssh_users names have accounts here"),
            "none named"
        );
        assert!(!tasks.iter().any(|t| t == "the old SSH port is closed"));
        assert!(!tasks.iter().any(|t| t.starts_with("SSH stays open")));
        let official = selected_tasks(FRESH_DEBIAN, Some("official\n"), &options);
        assert!(official
            .iter()
            .any(|t| t == "Docker Engine and compose v2 from Docker's repository (Debian)"));
    }

    /// sshd's AllowGroups lets in the group's members only: the admin (and
    /// [init] ssh_users) must be in it before the drop-in that requires it,
    /// which comes with the host key it names.
    #[test]
    fn the_admin_joins_the_ssh_group_before_the_drop_in_requires_it() {
        let config = InitConfig {
            ssh_users: vec![UserName("alice".into()), UserName("ops".into())],
            ..InitConfig::default()
        };
        let args = InitArgs {
            admin_user: Some(UserName("ops".into())),
            ..InitArgs::default()
        };
        let options = InitOptions::resolve(&args, Some(&config), Path::new("."));
        assert_eq!(options.ssh_login_users(), ["ops", "alice"]);
        let tasks = selected(FRESH_DEBIAN, Some("distro\n"), &options);
        let at = |name: &str| {
            tasks
                .iter()
                .position(|t| t.name == name)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        let group = at("SSH login group (the admin and [init] ssh_users)");
        assert!(at("admin user, in the sudo and docker groups") < group);
        assert!(group < at("Ed25519 host key (the one sshd offers)"));
        assert!(
            at("Ed25519 host key (the one sshd offers)")
                < at("SSH hardening drop-in (sorts before cloud-init's; checked with sshd -t)")
        );
        // ssh_users (not the admin, made by init) are looked for before
        // anything changes.
        let accounts = at("the users [init] ssh_users names have accounts here");
        assert!(accounts < at("base packages"));
        let unless = tasks[accounts].args["unless"].as_str().unwrap();
        assert!(unless.starts_with("for user in alice; do"), "{unless}");
        let args = &tasks[group].args;
        let run = args["run"].as_str().unwrap();
        assert!(run.contains("gpasswd -M ops,alice vpsup-ssh"), "{run}");
        let unless = args["unless"].as_str().unwrap();
        assert!(
            unless.ends_with("getent group vpsup-ssh | cut -d: -f4)\" = ops,alice ]"),
            "{unless}"
        );
    }

    #[test]
    fn a_converged_host_keeps_its_docker_and_a_port_move_closes_the_old_port() {
        let converged = FRESH_DEBIAN
            .replace("mem_kb=2000000", "mem_kb=4000000")
            .replace("time_sync=", "time_sync=chrony")
            + "docker_package=docker-ce\n";
        let mut options = InitOptions::resolve(&InitArgs::default(), None, Path::new("."));
        options.ssh_port = 2222;
        let tasks = selected_tasks(&converged, None, &options);
        assert!(tasks
            .iter()
            .any(|t| t == "Docker Engine and compose v2 from Docker's repository (Debian)"));
        for skipped in [
            "choose where Docker comes from",
            "time sync running",
            "Docker Engine and compose v2 from the distribution (Debian 13)",
        ] {
            assert!(
                !tasks.iter().any(|t| t == skipped),
                "{skipped} ran: {tasks:?}"
            );
        }
        assert!(!tasks.iter().any(|t| t.starts_with("swap file")));
        assert!(tasks.iter().any(|t| t == "the old SSH port is closed"));
        assert!(tasks.iter().any(|t| t.starts_with("SSH stays open")));

        // sshd's ports unknown: the move is from 22, which stays open meanwhile.
        let unknown = converged.replace("sshd_ports=22\n", "");
        let tasks = selected_tasks(&unknown, None, &options);
        assert!(tasks.iter().any(|t| t.starts_with("SSH stays open")));
    }

    /// The message of the first precondition init.yml checks before changing
    /// anything that fails on a host described by `facts`, if any.
    fn first_refusal(facts: &str, options: &InitOptions) -> Option<String> {
        let assets = Assets::load(None).unwrap();
        let renderer = Renderer::new(&assets.templates).unwrap();
        let plays = playbook::parse(&assets.playbook("init").unwrap().text, "init.yml").unwrap();
        let mut vars = Vars::default();
        vars.base = options.vars(&[]);
        vars.with_facts(&crate::facts::parse(facts).unwrap());
        plays[0]
            .tasks
            .iter()
            .take_while(
                |t| matches!(&t.action, Action::Module { module, .. } if module == "assert"),
            )
            .find_map(|task| {
                let Action::Module { module, args } = &task.action else {
                    unreachable!()
                };
                let m = crate::modules::build(module, renderer.args(args, &vars).unwrap()).unwrap();
                crate::modules::testing::plan(m.as_ref(), "")
                    .err()
                    .map(|e| e.to_string())
            })
    }

    /// Hosts init must refuse before changing anything, each with a reason
    /// that names what is wrong: the first failing precondition's message.
    #[test]
    fn hosts_init_cannot_serve_are_refused_by_name() {
        let options = InitOptions::resolve(&InitArgs::default(), None, Path::new("."));
        let first_refusal = |facts: &str| first_refusal(facts, &options);
        assert_eq!(
            first_refusal(FRESH_DEBIAN),
            None,
            "a fresh Debian 13 passes"
        );
        let ubuntu = FRESH_DEBIAN
            .replace("os_id=debian", "os_id=ubuntu")
            .replace("os_version=13", "os_version=24.04");
        assert_eq!(first_refusal(&ubuntu), None, "Ubuntu 24.04 passes");
        let cases = [
            (
                FRESH_DEBIAN
                    .replace("os_id=debian", "os_id=centos")
                    .replace("os_version=13", "os_version=9")
                    .replace("Debian GNU/Linux 13 (trixie)", "CentOS Stream 9"),
                "CentOS Stream 9 (centos 9) is not supported: vpsup init supports Ubuntu 22.04 and 24.04, Debian 12 and 13",
            ),
            (
                FRESH_DEBIAN
                    .replace("os_version=13", "os_version=11")
                    .replace("Debian GNU/Linux 13 (trixie)", "Debian GNU/Linux 11 (bullseye)"),
                "Debian GNU/Linux 11 (bullseye) (debian 11) is not supported",
            ),
            (
                FRESH_DEBIAN
                    .replace("os_id=debian", "os_id=ubuntu")
                    .replace("os_version=13", "os_version=20.04")
                    .replace("Debian GNU/Linux 13 (trixie)", "Ubuntu 20.04.6 LTS"),
                "Ubuntu 20.04.6 LTS (ubuntu 20.04) is not supported",
            ),
            (
                FRESH_DEBIAN.replace("init=systemd", "init=init"),
                "init needs systemd (this host runs init)",
            ),
            (
                FRESH_DEBIAN.replace("os_codename=trixie", "os_codename=trixie$(reboot)"),
                "Debian GNU/Linux 13 (trixie): /etc/os-release has no VERSION_CODENAME of lowercase letters and digits",
            ),
        ];
        for (facts, expected) in cases {
            let refusal = first_refusal(&facts).unwrap_or_else(|| panic!("not refused: {facts}"));
            assert!(refusal.contains(expected), "{refusal}");
        }
    }

    /// /etc/os-release is the host's word: root's commands get only its
    /// checked words (ID, the codename), never its free-text PRETTY_NAME.
    #[test]
    fn root_commands_never_carry_the_hosts_free_text_name() {
        let options = InitOptions::resolve(&InitArgs::default(), None, Path::new("."));
        let facts = fresh("debian 12").replace(
            "os_name=Debian GNU/Linux 12 (bookworm)",
            "os_name=Debian \"$(touch /tmp/vpsup-pwned)\" `id`",
        );
        let tasks = selected(&facts, None, &options);
        let choose = tasks
            .iter()
            .find(|t| t.name == "choose where Docker comes from")
            .expect("the Docker choice runs on a fresh host");
        let run = choose.args["run"].as_str().unwrap();
        assert!(
            run.contains("/linux/debian/dists/bookworm/Release"),
            "{run}"
        );
        assert!(
            run.contains("and debian 12 (bookworm) has no compose v2 package"),
            "{run}"
        );
        assert!(!run.contains("pwned") && !run.contains('`'), "{run}");
    }

    /// A fresh host of a supported release ("debian 12"), as the probe describes it.
    fn fresh(release: &str) -> String {
        let (os_id, os_version, codename, name) = match release {
            "ubuntu 22.04" => ("ubuntu", "22.04", "jammy", "Ubuntu 22.04.5 LTS"),
            "ubuntu 24.04" => ("ubuntu", "24.04", "noble", "Ubuntu 24.04.1 LTS"),
            "debian 12" => ("debian", "12", "bookworm", "Debian GNU/Linux 12 (bookworm)"),
            "debian 13" => ("debian", "13", "trixie", "Debian GNU/Linux 13 (trixie)"),
            other => panic!("no sample facts for {other}"),
        };
        FRESH_DEBIAN
            .replace("os_id=debian", &format!("os_id={os_id}"))
            .replace("os_version=13", &format!("os_version={os_version}"))
            .replace("os_codename=trixie", &format!("os_codename={codename}"))
            .replace("Debian GNU/Linux 13 (trixie)", name)
    }

    /// What init installs for Docker on a host described by `facts`, given
    /// what the Docker probe printed: the packages of each selected apt task
    /// that installs a Docker package, with the repository they come from
    /// (none: the distribution's).
    fn docker_installs(
        facts: &str,
        docker_from: Option<&str>,
        options: &InitOptions,
    ) -> Vec<(Vec<String>, Option<String>)> {
        selected(facts, docker_from, options)
            .into_iter()
            .filter(|t| t.module == "apt")
            .map(|t| {
                let packages: Vec<String> =
                    serde_json::from_value(t.args["packages"].clone()).unwrap();
                let uri = t.args["repository"]["uri"].as_str().map(String::from);
                (packages, uri)
            })
            .filter(|(packages, _)| packages.iter().any(|p| p.starts_with("docker")))
            .collect()
    }

    fn installs(packages: &[&str], uri: Option<&str>) -> Vec<(Vec<String>, Option<String>)> {
        vec![(
            packages.iter().map(|p| p.to_string()).collect(),
            uri.map(String::from),
        )]
    }

    const DOCKER_CE: [&str; 5] = [
        "docker-ce",
        "docker-ce-cli",
        "containerd.io",
        "docker-buildx-plugin",
        "docker-compose-plugin",
    ];

    /// compose v2 from Docker's repository everywhere; from the distribution
    /// where it has a package of it (Ubuntu: docker-compose-v2, Debian 13:
    /// docker-compose), never Debian 12's docker-compose, which is compose v1.
    #[test]
    fn each_release_gets_docker_with_compose_v2_from_where_it_has_it() {
        let options = InitOptions::resolve(&InitArgs::default(), None, Path::new("."));
        let ubuntu_repo = Some("https://download.docker.com/linux/ubuntu");
        let debian_repo = Some("https://download.docker.com/linux/debian");
        let cases = [
            (
                "ubuntu 22.04",
                "official",
                installs(&DOCKER_CE, ubuntu_repo),
            ),
            (
                "ubuntu 24.04",
                "official",
                installs(&DOCKER_CE, ubuntu_repo),
            ),
            ("debian 12", "official", installs(&DOCKER_CE, debian_repo)),
            ("debian 13", "official", installs(&DOCKER_CE, debian_repo)),
            (
                "ubuntu 22.04",
                "distro",
                installs(&["docker.io", "docker-compose-v2"], None),
            ),
            (
                "ubuntu 24.04",
                "distro",
                installs(&["docker.io", "docker-compose-v2"], None),
            ),
            (
                "debian 13",
                "distro",
                installs(&["docker.io", "docker-compose"], None),
            ),
            // The probe never says so on Debian 12 (it fails instead), and
            // even then nothing installs compose v1.
            ("debian 12", "distro", vec![]),
        ];
        for (release, docker_from, expected) in cases {
            assert_eq!(
                docker_installs(&fresh(release), Some(docker_from), &options),
                expected,
                "{release}, Docker from {docker_from}"
            );
        }
    }

    /// A host an earlier init gave the distribution's Docker Engine and
    /// compose v1 (`docker-compose` on Ubuntu or Debian 12) gets compose v2 on
    /// the next run: the distribution's on Ubuntu, Docker's repository's
    /// plugin on Debian 12 (asking the probe first whether it is reachable).
    #[test]
    fn a_rerun_replaces_compose_v1_with_v2() {
        let options = InitOptions::resolve(&InitArgs::default(), None, Path::new("."));
        let probe = "choose where Docker comes from";
        let v1_only = |release: &str| {
            format!(
                "{}docker=Docker version 20.10.24+dfsg1, build 297e128\ndocker_package=docker.io\n",
                fresh(release)
            )
        };

        let ubuntu = v1_only("ubuntu 22.04");
        assert!(!selected_tasks(&ubuntu, None, &options)
            .iter()
            .any(|t| t == probe));
        assert_eq!(
            docker_installs(&ubuntu, None, &options),
            installs(&["docker.io", "docker-compose-v2"], None)
        );

        let bookworm = v1_only("debian 12");
        assert!(selected_tasks(&bookworm, None, &options)
            .iter()
            .any(|t| t == probe));
        assert_eq!(
            docker_installs(&bookworm, Some("official\n"), &options),
            installs(
                &["docker-compose-plugin"],
                Some("https://download.docker.com/linux/debian")
            ),
            "the engine stays the distribution's docker.io"
        );

        // Once compose v2 is there, the Debian 12 host is left as it is.
        let fixed = format!("{bookworm}compose=2.29.7\n");
        assert!(!selected_tasks(&fixed, None, &options)
            .iter()
            .any(|t| t == probe));
        assert_eq!(docker_installs(&fixed, None, &options), vec![]);
    }

    /// The Docker probe as the host runs it, with a `curl` that reaches
    /// Docker's repository or not: (succeeded, stdout, stderr).
    fn run_docker_probe(
        facts: &str,
        source: DockerSource,
        reachable: bool,
    ) -> (bool, String, String) {
        let mut options = InitOptions::resolve(&InitArgs::default(), None, Path::new("."));
        options.docker = source;
        let task = selected(facts, None, &options)
            .into_iter()
            .find(|t| t.name == "choose where Docker comes from")
            .expect("the Docker probe runs on a host without Docker");
        let bin = tempfile::tempdir().unwrap();
        let curl = bin.path().join("curl");
        // 28: curl's time-out.
        let status = if reachable { 0 } else { 28 };
        std::fs::write(&curl, format!("#!/bin/sh\nexit {status}\n")).unwrap();
        std::fs::set_permissions(&curl, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = format!(
            "{}:{}",
            bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::process::Command::new("sh")
            .args(["-c", task.args["run"].as_str().unwrap()])
            .env("PATH", path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn docker_from_the_distribution_when_its_repository_is_unreachable_except_on_debian_12() {
        use DockerSource::{Distro, Official};
        let (ok, out, err) = run_docker_probe(&fresh("debian 12"), Official, true);
        assert_eq!((ok, out.as_str(), err.as_str()), (true, "official\n", ""));

        for (release, package) in [
            ("ubuntu 22.04", "docker-compose-v2"),
            ("ubuntu 24.04", "docker-compose-v2"),
            ("debian 13", "docker-compose"),
        ] {
            let (ok, out, err) = run_docker_probe(&fresh(release), Official, false);
            assert_eq!((ok, out.as_str()), (true, "distro\n"), "{release}: {err}");
            assert!(
                err.contains("unreachable from the host")
                    && err.contains(&format!("docker.io and {package}\n")),
                "{release}: {err}"
            );
            let (ok, out, err) = run_docker_probe(&fresh(release), Distro, false);
            assert_eq!(
                (ok, out.as_str(), err.as_str()),
                (true, "distro\n", ""),
                "{release}"
            );
        }

        // Debian 12's only compose v2 is Docker's: no fallback to its v1.
        let (ok, out, err) = run_docker_probe(&fresh("debian 12"), Official, false);
        assert!(!ok && out.is_empty(), "{out}");
        assert_eq!(
            err,
            "cannot install compose v2: Docker's repository (download.docker.com) is unreachable from the host, and debian 12 (bookworm) has no compose v2 package of its own (its docker-compose is compose v1, which vpsup deploy cannot use). Make https://download.docker.com reachable from the host, then run init again\n"
        );
    }

    /// `--docker distro` ([init] docker = "distro") cannot give Debian 12
    /// compose v2: refused before anything changes, also on a host an earlier
    /// init left with compose v1. A host that has compose v2 already, or
    /// Docker's docker-ce, passes.
    #[test]
    fn docker_distro_on_debian_12_is_refused_before_any_change() {
        let mut distro = InitOptions::resolve(&InitArgs::default(), None, Path::new("."));
        distro.docker = DockerSource::Distro;
        let official = InitOptions::resolve(&InitArgs::default(), None, Path::new("."));
        let bookworm = fresh("debian 12");
        let refusal = first_refusal(&bookworm, &distro).expect("refused");
        assert_eq!(
            refusal,
            "Debian GNU/Linux 12 (bookworm) has no compose v2 package (its docker-compose is compose v1, which vpsup deploy cannot use), so Docker cannot come from the distribution here (--docker distro, or docker = \"distro\" in vpsup.toml's [init]): nothing was changed. Drop that option to install Docker and compose v2 from Docker's repository, which the host must reach at https://download.docker.com"
        );
        let with_v1 = format!("{bookworm}docker=Docker version 20.10.24+dfsg1, build 297e128\ndocker_package=docker.io\n");
        assert_eq!(first_refusal(&with_v1, &distro), Some(refusal));
        assert_eq!(first_refusal(&bookworm, &official), None);
        assert_eq!(
            first_refusal(&format!("{with_v1}compose=2.29.7\n"), &distro),
            None
        );
        let docker_ce = format!("{bookworm}docker_package=docker-ce\n");
        assert_eq!(first_refusal(&docker_ce, &distro), None);
        for release in ["ubuntu 22.04", "ubuntu 24.04", "debian 13"] {
            assert_eq!(first_refusal(&fresh(release), &distro), None, "{release}");
        }
    }
}
