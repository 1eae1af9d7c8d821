//! Resolves the command line, vpsup.toml, ~/.ssh/config and the environment into
//! plain settings, once. Nothing below the command layer sees raw CLI arguments
//! or reads the environment.

use std::io::{BufRead, IsTerminal};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cli::GlobalArgs;
use crate::config::{self, Config, ConfigError};
use crate::ssh_config::{SshConfig, SshConfigError};
use crate::transport::ssh::{Credentials, SshTarget};

/// Most hosts worked on at once unless `--forks` says otherwise. Each host in
/// flight holds a connection (a socket, its buffers, an open channel) and its
/// key exchange and signature cost CPU here at the same moment; 32 hides the
/// latency of hosts far away (a host is mostly waiting on round trips) without
/// a large fleet turning into a burst of hundreds of handshakes from one
/// machine, which jump hosts, NAT gateways and the operator's own CPU and
/// file-descriptor limit feel first.
pub const DEFAULT_MAX_FORKS: usize = 32;

/// Default keys offered when neither the CLI, vpsup.toml nor ~/.ssh/config names one (as OpenSSH).
const DEFAULT_IDENTITIES: [&str; 3] = ["id_ed25519", "id_ecdsa", "id_rsa"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose(u8),
}

pub struct Settings {
    pub check: bool,
    pub diff: bool,
    pub verbosity: Verbosity,
    pub json: bool,
    pub yes: bool,
    pub limit: Vec<String>,
    /// `--forks`, when given.
    forks: Option<NonZeroUsize>,
    /// The project config, when there is one.
    pub config: Option<Config>,
    pub config_path: PathBuf,
    pub credentials: Credentials,
    identity: Option<PathBuf>,
    connect_timeout: Duration,
    home: PathBuf,
    ssh_config: SshConfig,
}

/// One host to work on, ready to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTarget {
    /// The name from vpsup.toml, or the host as typed.
    pub name: String,
    pub ssh: SshTarget,
    /// Use `sudo -n` for privileged steps when the user is not root.
    pub sudo: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    SshConfig(#[from] SshConfigError),
    #[error("no host given: pass a TARGET ([USER@]HOST[:PORT]) or list hosts in {} under [hosts.NAME]", .0.display())]
    NoHosts(PathBuf),
    #[error("--limit {name}: no such host in {}; it has: {known}", path.display())]
    UnknownLimit {
        name: String,
        path: PathBuf,
        known: String,
    },
    #[error("invalid target {spec:?}: {why}. Use [USER@]HOST[:PORT], e.g. root@203.0.113.42:22")]
    BadTarget { spec: String, why: String },
    #[error("--var {pair:?}: {why}")]
    BadVar { pair: String, why: String },
    #[error("--password-stdin: could not read a password from standard input ({0})")]
    PasswordStdin(String),
    #[error("--forks {0}: at least one host must be worked on at a time (--forks 1 goes one host after another)")]
    NoForks(usize),
    #[error("{command} works on one host, and {} has several ({known}): name one{how}", path.display())]
    SeveralHosts {
        command: &'static str,
        path: PathBuf,
        known: String,
        /// How to name one, in this command's words.
        how: &'static str,
    },
    #[error("cannot find your home directory (HOME is not set); vpsup needs it for ~/.ssh")]
    NoHome,
}

impl crate::exit::ExitStatus for SettingsError {
    fn exit_code(&self) -> u8 {
        crate::exit::BAD_INPUT
    }
}

impl Settings {
    pub fn resolve(args: &GlobalArgs) -> Result<Settings, SettingsError> {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|h| !h.as_os_str().is_empty())
            .ok_or(SettingsError::NoHome)?;
        let config_path = args
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(config::DEFAULT_FILE));
        // An explicit --config must exist; the default file is optional.
        let config = if args.config.is_some() || config_path.exists() {
            Some(Config::load(&config_path)?)
        } else {
            None
        };
        let forks = args
            .forks
            .map(|n| NonZeroUsize::new(n).ok_or(SettingsError::NoForks(n)))
            .transpose()?;
        let ssh_config = SshConfig::load(&home.join(".ssh/config"), &home)?;
        let interactive = std::io::stdin().is_terminal();
        let password = if args.password_stdin {
            Some(read_password(std::io::stdin().lock())?)
        } else {
            None
        };
        let credentials = Credentials {
            agent_socket: std::env::var_os("SSH_AUTH_SOCK")
                .map(PathBuf::from)
                .filter(|p| !p.as_os_str().is_empty()),
            password,
            prompt: (interactive && !args.password_stdin).then(terminal_prompt),
        };
        let verbosity = match (args.quiet, args.verbose) {
            (true, _) => Verbosity::Quiet,
            (false, 0) => Verbosity::Normal,
            (false, n) => Verbosity::Verbose(n),
        };
        Ok(Settings {
            check: args.check,
            diff: args.diff,
            verbosity,
            json: args.json,
            yes: args.yes,
            limit: args.limit.clone(),
            forks,
            identity: args.identity.as_deref().map(|p| expand_tilde(p, &home)),
            connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
            config,
            config_path,
            credentials,
            home,
            ssh_config,
        })
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// How many of `hosts` hosts to work on at once: `--forks`, by default
    /// all of them up to [`DEFAULT_MAX_FORKS`]; never 0.
    pub fn forks(&self, hosts: usize) -> usize {
        self.forks
            .map_or(hosts.min(DEFAULT_MAX_FORKS), NonZeroUsize::get)
            .max(1)
    }

    /// The private key given with `-i`, if any.
    pub fn identity(&self) -> Option<&Path> {
        self.identity.as_deref()
    }

    /// The hosts a command works on: `explicit` when given (a vpsup.toml host
    /// name or `[USER@]HOST[:PORT]`), else every host in vpsup.toml, narrowed by `--limit`.
    pub fn targets(&self, explicit: Option<&str>) -> Result<Vec<HostTarget>, SettingsError> {
        if let Some(spec) = explicit {
            let spec = TargetSpec::parse(spec)?;
            let named = self.config.as_ref().and_then(|c| c.host(&spec.host));
            return Ok(vec![self.target(&spec.host, named, spec.user, spec.port)]);
        }
        let Some(config) = self.config.as_ref().filter(|c| !c.hosts.is_empty()) else {
            return Err(SettingsError::NoHosts(self.config_path.clone()));
        };
        for name in &self.limit {
            if config.host(name).is_none() {
                return Err(SettingsError::UnknownLimit {
                    name: name.clone(),
                    path: self.config_path.clone(),
                    known: config
                        .hosts
                        .keys()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        Ok(config
            .hosts
            .iter()
            .filter(|(name, _)| {
                self.limit.is_empty() || self.limit.iter().any(|l| l == name.as_str())
            })
            .map(|(name, host)| self.target(name.as_str(), Some(host), None, None))
            .collect())
    }

    /// The one host a command works on (`ssh`, `exec`): `explicit` when
    /// given, else the only host in vpsup.toml after `--limit`. `how` says
    /// how this command takes a host name, for the error when there are several.
    pub fn one_target(
        &self,
        explicit: Option<&str>,
        command: &'static str,
        how: &'static str,
    ) -> Result<HostTarget, SettingsError> {
        let mut targets = self.targets(explicit)?;
        if targets.len() > 1 {
            return Err(SettingsError::SeveralHosts {
                command,
                path: self.config_path.clone(),
                known: targets
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                how,
            });
        }
        // `targets` gives at least one host or an error.
        targets
            .pop()
            .ok_or(SettingsError::NoHosts(self.config_path.clone()))
    }

    /// Layers, first wins: the command line, vpsup.toml, ~/.ssh/config, defaults.
    fn target(
        &self,
        name: &str,
        configured: Option<&config::HostConfig>,
        user: Option<String>,
        port: Option<u16>,
    ) -> HostTarget {
        let address = configured.map_or(name, |h| h.address.as_str());
        let from_ssh = self.ssh_config.lookup(address);
        let config_dir = self.config_path.parent().unwrap_or(Path::new("."));
        let mut identity_files: Vec<PathBuf> = self
            .identity
            .iter()
            .cloned()
            .chain(
                configured
                    .and_then(|h| h.identity_file.as_deref())
                    .map(|p| config_dir.join(expand_tilde(p, &self.home))),
            )
            .chain(from_ssh.identity_files.iter().cloned())
            .collect();
        if identity_files.is_empty() {
            identity_files = DEFAULT_IDENTITIES
                .iter()
                .map(|f| self.home.join(".ssh").join(f))
                .collect();
        }
        HostTarget {
            name: name.to_string(),
            sudo: configured.is_none_or(|h| h.sudo),
            ssh: SshTarget {
                host: from_ssh
                    .hostname
                    .clone()
                    .unwrap_or_else(|| address.to_string()),
                port: port
                    .or(configured.and_then(|h| h.port.map(|p| p.0)))
                    .or(from_ssh.port)
                    .unwrap_or(22),
                user: user
                    .or(configured.and_then(|h| h.user.clone()))
                    .or(from_ssh.user.clone())
                    .unwrap_or_else(|| "root".to_string()),
                identity_files,
                identities_only: from_ssh.identities_only.unwrap_or(false),
                known_hosts: from_ssh
                    .user_known_hosts_file
                    .clone()
                    .unwrap_or_else(|| self.home.join(".ssh/known_hosts")),
                connect_timeout: self.connect_timeout,
            },
        }
    }
}

/// Where a project's own playbooks/ and templates/ live: beside vpsup.toml.
pub fn project_dir(settings: &Settings) -> PathBuf {
    match settings.config_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    }
}

#[cfg(test)]
impl Settings {
    /// Defaults everywhere, no vpsup.toml, HOME /home/op: for unit tests.
    pub(crate) fn for_tests() -> Settings {
        let home = PathBuf::from("/home/op");
        Settings {
            check: false,
            diff: false,
            verbosity: Verbosity::Normal,
            json: false,
            yes: false,
            limit: vec![],
            forks: None,
            config: None,
            config_path: PathBuf::from("/proj/vpsup.toml"),
            credentials: Credentials::default(),
            identity: None,
            connect_timeout: Duration::from_secs(10),
            ssh_config: SshConfig::default(),
            home,
        }
    }

    pub(crate) fn with_forks(self, forks: usize) -> Settings {
        Settings {
            forks: NonZeroUsize::new(forks),
            ..self
        }
    }
}

/// `[USER@]HOST[:PORT]`, with `[v6addr]:port` for IPv6.
#[derive(Debug, PartialEq, Eq)]
struct TargetSpec {
    user: Option<String>,
    host: String,
    port: Option<u16>,
}

impl TargetSpec {
    fn parse(spec: &str) -> Result<TargetSpec, SettingsError> {
        let bad = |why: &str| SettingsError::BadTarget {
            spec: spec.to_string(),
            why: why.to_string(),
        };
        let (user, rest) = match spec.rsplit_once('@') {
            Some(("", _)) => return Err(bad("empty user name")),
            Some((u, r)) => (Some(u.to_string()), r),
            None => (None, spec),
        };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("missing ']'"))?;
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| bad("expected :PORT after ']'"))?,
                    ),
                ),
            }
        } else if rest.matches(':').count() == 1 {
            let (h, p) = rest.split_once(':').unwrap_or((rest, ""));
            (h, Some(p))
        } else {
            (rest, None) // a bare IPv6 address, or no port
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("port must be 1-65535"))
            })
            .transpose()?;
        Ok(TargetSpec {
            user,
            host: host.to_string(),
            port,
        })
    }
}

fn expand_tilde(path: &Path, home: &Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => home.join(rest),
        Err(_) => path.to_path_buf(),
    }
}

/// The first line of `input`, without its line ending. Never echoed anywhere.
fn read_password(mut input: impl BufRead) -> Result<String, SettingsError> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| SettingsError::PasswordStdin(e.to_string()))?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(SettingsError::PasswordStdin("it was empty".to_string()));
    }
    Ok(password)
}

fn terminal_prompt() -> crate::transport::ssh::SecretPrompt {
    // Several hosts connect at once: one question at a time on the terminal.
    let terminal = Arc::new(std::sync::Mutex::new(()));
    Arc::new(move |question: &str| {
        let _turn = terminal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        rpassword::prompt_password(question)
            .ok()
            .filter(|s| !s.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> TargetSpec {
        TargetSpec::parse(s).unwrap()
    }

    #[test]
    fn target_specs() {
        assert_eq!(
            spec("root@203.0.113.42:2222"),
            TargetSpec {
                user: Some("root".into()),
                host: "203.0.113.42".into(),
                port: Some(2222)
            }
        );
        assert_eq!(
            spec("web"),
            TargetSpec {
                user: None,
                host: "web".into(),
                port: None
            }
        );
        assert_eq!(spec("[::1]:22").host, "::1");
        assert_eq!(
            spec("deploy@::1"),
            TargetSpec {
                user: Some("deploy".into()),
                host: "::1".into(),
                port: None
            }
        );
        for bad in [
            "@host",
            "host:0",
            "host:99999",
            "host:x",
            "[::1",
            ":22",
            "[::1]x",
        ] {
            assert!(TargetSpec::parse(bad).is_err(), "{bad}");
        }
    }

    fn settings(config: Option<&str>, ssh_config: &str) -> Settings {
        let base = Settings::for_tests();
        Settings {
            config: config.map(|c| Config::parse(c, Path::new("vpsup.toml")).unwrap()),
            ssh_config: SshConfig::parse(ssh_config, "config", &base.home).unwrap(),
            ..base
        }
    }

    #[test]
    fn cli_overrides_config_overrides_ssh_config_overrides_defaults() {
        let s = settings(
            Some("[hosts.web]\naddress = \"webalias\"\nport = 2200\n"),
            "Host webalias\n  HostName 203.0.113.42\n  User admin\n  Port 2222\n  IdentityFile ~/.ssh/web_key\n",
        );
        let t = &s.targets(Some("web")).unwrap()[0];
        assert_eq!(t.name, "web");
        assert_eq!(t.ssh.host, "203.0.113.42");
        assert_eq!(t.ssh.port, 2200, "vpsup.toml wins over ~/.ssh/config");
        assert_eq!(
            t.ssh.user, "admin",
            "~/.ssh/config fills what vpsup.toml leaves out"
        );
        assert_eq!(
            t.ssh.identity_files,
            [PathBuf::from("/home/op/.ssh/web_key")]
        );
        let t = &s.targets(Some("deploy@web:22")).unwrap()[0];
        assert_eq!(
            (t.ssh.user.as_str(), t.ssh.port),
            ("deploy", 22),
            "the command line wins"
        );
    }

    #[test]
    fn defaults_are_root_port_22_and_the_standard_keys() {
        let s = settings(None, "");
        let t = &s.targets(Some("203.0.113.9")).unwrap()[0];
        assert_eq!((t.ssh.user.as_str(), t.ssh.port), ("root", 22));
        assert_eq!(t.ssh.identity_files.len(), 3);
        assert_eq!(
            t.ssh.known_hosts,
            PathBuf::from("/home/op/.ssh/known_hosts")
        );
        assert!(t.sudo);
    }

    #[test]
    fn hosts_come_from_the_config_narrowed_by_limit() {
        let mut s = settings(
            Some("[hosts.a]\naddress = \"a.example\"\n[hosts.b]\naddress = \"b.example\"\nsudo = false\n"),
            "",
        );
        assert_eq!(s.targets(None).unwrap().len(), 2);
        s.limit = vec!["b".into()];
        let only = s.targets(None).unwrap();
        assert_eq!(only.len(), 1);
        assert!(!only[0].sudo);
        s.limit = vec!["c".into()];
        let err = s.targets(None).unwrap_err().to_string();
        assert!(
            err.contains("no such host") && err.contains("a, b"),
            "{err}"
        );
        assert!(matches!(
            settings(None, "").targets(None),
            Err(SettingsError::NoHosts(_))
        ));
    }

    #[test]
    fn forks_default_to_every_host_up_to_the_cap() {
        let mut s = settings(None, "");
        assert_eq!(s.forks(5), 5);
        assert_eq!(s.forks(50), DEFAULT_MAX_FORKS);
        assert_eq!(s.forks(0), 1, "a semaphore of 0 would never start anything");
        s = s.with_forks(2);
        assert_eq!((s.forks(5), s.forks(1)), (2, 2));
        s = s.with_forks(100);
        assert_eq!(s.forks(50), 100, "an explicit --forks is taken as given");
    }

    #[test]
    fn password_is_the_first_line() {
        assert_eq!(read_password(&b"hunter2\nrest"[..]).unwrap(), "hunter2");
        assert_eq!(read_password(&b"pw\r\n"[..]).unwrap(), "pw");
        assert!(read_password(&b"\n"[..]).is_err());
    }
}
