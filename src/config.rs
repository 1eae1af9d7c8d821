//! `vpsup.toml`: the project's configuration. Parsing is strict: an unknown key
//! or a value of the wrong type or shape is an error naming file, line and column.
//! Values are validated while they are deserialized (newtypes below), so the
//! error points at the offending value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backup::schedule::Schedule;

pub const DEFAULT_FILE: &str = "vpsup.toml";

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Hosts by name (`[hosts.web]`); the name is what `--limit` and commands take.
    #[serde(default)]
    pub hosts: BTreeMap<Name, HostConfig>,
    pub init: Option<InitConfig>,
    #[serde(default, deserialize_with = "checked_acme")]
    pub acme: Option<AcmeConfig>,
    pub app: Option<AppConfig>,
    #[serde(default)]
    pub sites: Vec<SiteConfig>,
    /// Backups of the app's databases and volumes (`[backup]`).
    #[serde(default, deserialize_with = "checked_backup")]
    pub backup: Option<BackupConfig>,
    /// Where alerts go (`[alerts]`): webhook, ntfy, email.
    #[serde(default, deserialize_with = "checked_alerts")]
    pub alerts: Option<AlertsConfig>,
    /// What the host's own checks (`vpsup watch`) call a problem (`[watch]`).
    #[serde(default)]
    pub watch: WatchConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// IP address, DNS name, or an alias from ~/.ssh/config.
    pub address: String,
    pub port: Option<Port>,
    pub user: Option<String>,
    pub identity_file: Option<PathBuf>,
    /// Use `sudo -n` for privileged steps when `user` is not root.
    #[serde(default = "yes")]
    pub sudo: bool,
    /// Where this host's HTTP and HTTPS are reached from this machine for
    /// deploy's final check, when not 80/443 (a port forward).
    pub http_port: Option<Port>,
    pub https_port: Option<Port>,
}

/// How `vpsup init` sets a host up. Every key is optional; the command line
/// overrides each one.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// The admin user to create (default `deploy`).
    pub admin_user: Option<UserName>,
    /// The port sshd moves to (default: stays on 22).
    pub ssh_port: Option<Port>,
    /// More public keys for the admin: `ssh-ed25519 AAAA... comment` lines or
    /// paths to `.pub` files.
    #[serde(default)]
    pub extra_keys: Vec<String>,
    /// Where Docker comes from (default `official`, falling back to `distro`).
    pub docker: Option<DockerSource>,
    /// Swap file size when RAM is under 2 GiB: `1G`, `512M`, or `0` for none.
    pub swap: Option<Size>,
    /// More ports open to the internet besides SSH, 80 and 443: `8443`, `51820/udp`.
    #[serde(default)]
    pub allow_ports: Vec<PortRule>,
    /// Users besides the admin who may log in over SSH (their accounts must
    /// exist on the host); everyone else is refused.
    #[serde(default)]
    pub ssh_users: Vec<UserName>,
    /// Also offer the classical `curve25519-sha256` key exchange where sshd
    /// has post-quantum ones only (OpenSSH 9.9 and later), for SSH clients
    /// with neither ML-KEM nor sntrup761 (OpenSSH before 8.5, paramiko).
    /// ssh-audit warns about it.
    #[serde(default)]
    pub ssh_classical_kex: bool,
    /// The vpsup executable installed on the host for its renewal timer, when
    /// the one running cannot run there (default: the running vpsup).
    pub host_binary: Option<PathBuf>,
}

/// Where Docker Engine comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DockerSource {
    /// Docker's own apt repository (docker-ce, compose plugin); when the host
    /// cannot reach it, the distribution's packages instead (init fails on
    /// Debian 12, which has no compose v2 package).
    Official,
    /// The distribution's `docker.io` and its compose v2 package
    /// (`docker-compose-v2` on Ubuntu, `docker-compose` on Debian 13); init
    /// refuses it on Debian 12, whose `docker-compose` is compose v1.
    Distro,
}

impl DockerSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DockerSource::Official => "official",
            DockerSource::Distro => "distro",
        }
    }
}

/// A Unix user name as `useradd` accepts it (and not root).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String")]
pub struct UserName(pub String);

impl TryFrom<String> for UserName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = (1..=32).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        match s.as_str() {
            "root" => Err(
                "the admin user (or an SSH user) cannot be root: init closes root login".to_string(),
            ),
            _ if ok => Ok(UserName(s)),
            _ => Err(format!(
                "invalid user name {s:?}: use up to 32 lowercase letters, digits, '-' or '_', starting with a letter"
            )),
        }
    }
}

impl std::str::FromStr for UserName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        UserName::try_from(s.to_string())
    }
}

/// A size in bytes, written `512M`, `1G`, `1.5G` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Size(pub u64);

impl Size {
    pub fn mib(self) -> u64 {
        self.0 / (1024 * 1024)
    }
}

impl TryFrom<String> for Size {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid size {s:?}: use a number with K, M or G, like 1G or 512M");
        let t = s.trim();
        let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
            Some(i) => t.split_at(i),
            None => (t, ""),
        };
        let factor: u64 = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
            "" => 1,
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            _ => return Err(bad()),
        };
        let n: f64 = number.trim().parse().map_err(|_| bad())?;
        if !n.is_finite() || n < 0.0 {
            return Err(bad());
        }
        Ok(Size((n * factor as f64) as u64))
    }
}

impl From<Size> for String {
    fn from(s: Size) -> String {
        match s.0 {
            0 => "0".to_string(),
            b if b % (1 << 30) == 0 => format!("{}G", b >> 30),
            b if b % (1 << 20) == 0 => format!("{}M", b >> 20),
            b => b.to_string(),
        }
    }
}

/// A port opened in the firewall: `8443` (tcp) or `51820/udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "PortRuleInput", into = "String")]
pub struct PortRule {
    pub port: u16,
    pub udp: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PortRuleInput {
    Number(i64),
    Text(String),
}

impl TryFrom<PortRuleInput> for PortRule {
    type Error = String;
    fn try_from(input: PortRuleInput) -> Result<Self, String> {
        match input {
            PortRuleInput::Number(n) => Ok(PortRule {
                port: Port::try_from(n)?.0,
                udp: false,
            }),
            PortRuleInput::Text(s) => s.parse(),
        }
    }
}

impl std::str::FromStr for PortRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("invalid port {s:?}: use PORT or PORT/tcp or PORT/udp, like 51820/udp");
        let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        let udp = match proto {
            "tcp" => false,
            "udp" => true,
            _ => return Err(bad()),
        };
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(bad)?;
        Ok(PortRule { port, udp })
    }
}

impl From<PortRule> for String {
    fn from(r: PortRule) -> String {
        format!("{}/{}", r.port, if r.udp { "udp" } else { "tcp" })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    pub email: Email,
    #[serde(default)]
    pub directory: AcmeDirectory,
    /// PEM file with an extra root trusted for the ACME directory's own TLS (e.g. Pebble's).
    pub extra_root: Option<PathBuf>,
    /// An ACME profile to order (`tlsserver`, `shortlived` at Let's Encrypt).
    pub profile: Option<String>,
    /// The certificate store on each host.
    #[serde(default = "default_store", deserialize_with = "HostDir::store")]
    pub store: HostDir,
    /// The ACME webroot that nginx serves on :80 (init sets it up).
    #[serde(default = "default_webroot", deserialize_with = "HostDir::webroot")]
    pub webroot: HostDir,
    /// Run on the host after certificates changed, to make the web server use them.
    #[serde(default = "default_reload")]
    pub reload: String,
    /// The DNS provider for DNS-01 (wildcard certificates).
    pub dns: Option<DnsConfig>,
}

fn default_store() -> HostDir {
    HostDir(crate::layout::ACME_STORE.to_string())
}

/// The ACME webroot init sets up (playbooks/init.yml's `acme_webroot`).
pub const DEFAULT_WEBROOT: &str = crate::layout::ACME_WEBROOT;

fn default_webroot() -> HostDir {
    HostDir(DEFAULT_WEBROOT.to_string())
}

impl AcmeConfig {
    /// Rules that involve both directories (each is checked as it is read).
    fn check(&self) -> Result<(), String> {
        let (store, webroot) = (
            Path::new(self.store.as_str()),
            Path::new(self.webroot.as_str()),
        );
        if store.starts_with(webroot) || webroot.starts_with(store) {
            return Err(format!(
                "[acme] store {:?} and webroot {:?} must be apart: nginx serves the webroot to anyone, and the store (private keys) is root's alone",
                self.store.as_str(),
                self.webroot.as_str()
            ));
        }
        Ok(())
    }
}

/// `[acme]` with its cross-key rules checked, so the error points at the table.
fn checked_acme<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<AcmeConfig>, D::Error> {
    let acme = Option::<AcmeConfig>::deserialize(d)?;
    if let Some(a) = &acme {
        a.check().map_err(serde::de::Error::custom)?;
    }
    Ok(acme)
}

/// A directory on the host that vpsup creates and sets the owner and mode of
/// (`[acme] store`: 0700 root; `webroot`: 0755): absolute and normalized, of
/// letters, digits, `.`, `_`, `-` and `/` only (nginx and systemd files name
/// it as is, scripts quoted), and a directory of its own: never a system
/// directory (`store = "/etc"` would lock every other user out of /etc), nor
/// one vpsup keeps something else in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostDir(String);

/// Directories no `HostDir` may be: the system's own.
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/lost+found",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/snap",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/etc/apt",
    "/etc/cron.d",
    "/etc/default",
    "/etc/docker",
    "/etc/fail2ban",
    "/etc/letsencrypt",
    "/etc/nginx",
    "/etc/pam.d",
    "/etc/security",
    "/etc/ssh",
    "/etc/ssl",
    "/etc/sudoers.d",
    "/etc/systemd",
    "/etc/ufw",
    "/usr/bin",
    "/usr/lib",
    "/usr/local",
    "/usr/local/bin",
    "/usr/local/lib",
    "/usr/local/sbin",
    "/usr/sbin",
    "/usr/share",
    "/var/backups",
    "/var/cache",
    "/var/lib",
    "/var/lib/docker",
    "/var/local",
    "/var/log",
    "/var/mail",
    "/var/opt",
    "/var/run",
    "/var/spool",
    "/var/tmp",
    "/var/www",
];

impl HostDir {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `[acme] store`.
    fn store<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HostDir, D::Error> {
        HostDir::parse(
            String::deserialize(d)?,
            "the certificate store (vpsup makes it 0700, root's alone)",
        )
        .map_err(serde::de::Error::custom)
    }

    /// `[acme] webroot`.
    fn webroot<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HostDir, D::Error> {
        HostDir::parse(
            String::deserialize(d)?,
            "the ACME webroot (vpsup creates it, nginx serves it)",
        )
        .map_err(serde::de::Error::custom)
    }

    /// `s` as a `HostDir` (a trailing `/` dropped); `what` says what it is for.
    pub fn parse(s: String, what: &str) -> Result<HostDir, String> {
        use crate::layout;
        let dir = match s.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        };
        if !dir.starts_with('/') {
            return Err(format!(
                "invalid directory {s:?}: {what} is an absolute path on the host, like /var/lib/vpsup/acme"
            ));
        }
        if let Some(c) = dir
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-/".contains(*c)))
        {
            return Err(format!(
                "invalid directory {s:?}: {c:?} is not allowed; use letters, digits, '.', '_', '-' and '/' (nginx and systemd files name the directory as is)"
            ));
        }
        if dir != "/"
            && dir[1..]
                .split('/')
                .any(|part| matches!(part, "" | "." | ".."))
        {
            return Err(format!(
                "invalid directory {s:?}: write it without '.', '..' or '//' parts"
            ));
        }
        // What vpsup keeps elsewhere: the apps, backups, the SSH safety net,
        // its helpers, and the directories that hold them.
        let vpsups = [
            layout::APPS_DIR,
            layout::BACKUP_SETTINGS_DIR,
            layout::BACKUP_STATE_DIR,
            layout::SSHD_REVERT_DIR,
            layout::HELPERS_DIR,
        ];
        let parents = vpsups.iter().filter_map(|d| Path::new(d).parent());
        let taken = SYSTEM_DIRS.contains(&dir)
            || parents.into_iter().any(|p| p == Path::new(dir))
            || vpsups.iter().any(|v| Path::new(dir).starts_with(v));
        if taken {
            return Err(format!(
                "{dir:?} is a system directory, or one vpsup keeps other files in: {what} must be a directory of its own, like /etc/vpsup/acme or /var/lib/vpsup/acme"
            ));
        }
        Ok(HostDir(dir.to_string()))
    }
}

impl fmt::Display for HostDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn default_reload() -> String {
    "nginx -t && systemctl reload nginx".to_string()
}

/// RFC 2136 dynamic updates signed with TSIG (BIND, Knot, PowerDNS, ...).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// `rfc2136`, the only provider so far.
    pub provider: DnsProvider,
    /// The primary server that accepts updates: `ns1.example.com:53` or an address.
    pub server: String,
    pub zone: Domain,
    pub key_name: String,
    #[serde(default = "default_tsig_algorithm")]
    pub algorithm: String,
    /// A file holding the base64 TSIG secret (kept out of vpsup.toml, which is
    /// usually committed).
    pub secret_file: PathBuf,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DnsProvider {
    Rfc2136,
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".to_string()
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub name: Name,
    #[serde(default = "default_compose_files")]
    pub compose_files: Vec<PathBuf>,
    #[serde(default)]
    pub env_files: Vec<PathBuf>,
    /// What to do with a compose port published on every interface (Docker
    /// bypasses the firewall for those): refuse the deploy, or bind it to
    /// 127.0.0.1.
    #[serde(default)]
    pub public_ports: PublicPorts,
    /// Releases kept on the host for `vpsup rollback` (the current one included).
    #[serde(default = "default_releases")]
    pub releases: Count,
    /// Seconds the health gate waits for healthchecks and health paths.
    #[serde(default = "default_health_timeout")]
    pub health_timeout: Count,
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// The DNS resolver deploy's preflight asks (`host[:port]`), so that a
    /// site is checked as the world (and the CA) sees it, not through this
    /// machine's /etc/hosts.
    #[serde(default = "default_dns_resolver")]
    pub dns_resolver: String,
    /// What the preflight does about a site whose record does not point at
    /// the host: stop and print the record, or set it through [acme.dns].
    #[serde(default)]
    pub dns: DnsRecords,
    /// Project files (or directories) that hold a private key the app needs
    /// on its hosts: a release with any other private key is refused.
    #[serde(default)]
    pub allow_private_keys: Vec<ProjectPath>,
    /// How long a site's old instances keep the requests and WebSocket
    /// connections they hold once nginx sends new ones to the new instances
    /// (zero-downtime deploys, docs/zero-downtime.md); then they stop.
    #[serde(default = "default_drain")]
    pub drain: TimeSpan,
    /// Per compose service (`[app.services.NAME]`): how a deploy replaces it.
    #[serde(default)]
    pub services: BTreeMap<ServiceName, AppServiceConfig>,
}

/// `[app.services.NAME]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AppServiceConfig {
    /// Unset: blue/green behind a site or route, else recreated in place
    /// when its definition changed.
    pub strategy: Option<Strategy>,
}

/// How a deploy replaces a service's container.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// A new instance starts beside the old one; nginx switches to it once
    /// healthy, then the old one drains and stops (only behind a site).
    BlueGreen,
    /// Stopped, then started again: a short interruption, but never two
    /// instances at once (a service that writes its own data).
    Recreate,
}

fn default_drain() -> TimeSpan {
    TimeSpan(std::time::Duration::from_secs(30))
}

/// A path inside the project, relative to vpsup.toml's directory (`./` and
/// a trailing `/` dropped), never climbing out of it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProjectPath(pub PathBuf);

impl TryFrom<String> for ProjectPath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        use std::path::Component;
        let path = Path::new(&s);
        let parts: Vec<Component> = path.components().collect();
        let inside = !parts.is_empty()
            && parts
                .iter()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
            && !s.starts_with('~');
        let normal: PathBuf = parts
            .iter()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        if inside && !normal.as_os_str().is_empty() {
            Ok(ProjectPath(normal))
        } else {
            Err(format!(
                "invalid path {s:?}: name a file or directory inside the project, relative to vpsup.toml's directory (no leading /, ~ or ..), like certs/client.key"
            ))
        }
    }
}

impl From<ProjectPath> for String {
    fn from(p: ProjectPath) -> String {
        p.0.to_string_lossy().into_owned()
    }
}

/// A file vpsup.toml (or the command line) names that must stay on this
/// machine, and what names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateFile {
    /// `[acme.dns] secret_file`, `--identity`, ...
    pub named_by: String,
    /// As written: relative to vpsup.toml's directory, or absolute.
    pub path: PathBuf,
}

fn default_dns_resolver() -> String {
    "1.1.1.1".to_string()
}

/// Secrets the host keeps for the app.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// Environment variables created once on the host with random values,
    /// then reused by every deploy (never printed, never in arguments).
    #[serde(default)]
    pub generate: Vec<EnvName>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DnsRecords {
    /// Print the record to create and stop.
    #[default]
    Check,
    /// Create or change the A/AAAA record through [acme.dns] (RFC 2136).
    Update,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PublicPorts {
    #[default]
    Refuse,
    Loopback,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub domain: Domain,
    /// The compose service that serves this site.
    pub service: ServiceName,
    /// The container port nginx proxies to.
    pub port: Port,
    /// More locations to other services: `/api/` -> backend:8000.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Forward WebSocket upgrades on `/`.
    #[serde(default)]
    pub websockets: bool,
    /// The largest request body nginx accepts (uploads), nginx syntax.
    #[serde(default = "default_max_body")]
    pub max_body: BodySize,
    /// Answers 2xx/3xx when the service is healthy (the health gate probes it
    /// through the container port).
    #[serde(default = "default_health_path")]
    pub health: UrlPath,
    /// The name deploy's final HTTPS check asks for: the domain itself, or
    /// for a wildcard (`*.example.com`, not a name a client can ask for) a
    /// name under it, by default `vpsup-check.example.com`.
    #[serde(default)]
    pub check_name: Option<Domain>,
}

impl SiteConfig {
    /// The concrete name a visitor's client asks for (see `check_name`).
    pub fn check_name(&self) -> Result<String, String> {
        let domain = &self.domain.0;
        let base = domain.strip_prefix("*.");
        match (&self.check_name, base) {
            (None, None) => Ok(domain.clone()),
            (None, Some(base)) => Ok(format!("vpsup-check.{base}")),
            (Some(name), Some(base))
                if name
                    .0
                    .strip_suffix(base)
                    .and_then(|l| l.strip_suffix('.'))
                    .is_some_and(|label| !label.is_empty() && label != "*" && !label.contains('.')) =>
            {
                Ok(name.0.clone())
            }
            (Some(name), None) if name.0 == *domain => Ok(name.0.clone()),
            (Some(name), _) => Err(format!(
                "[[sites]] {domain}: check_name {:?} is not a name this site's certificate covers: use {}",
                name.0,
                base.map_or(domain.clone(), |b| format!("a name directly under {b}, like www.{b}"))
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub path: UrlPath,
    pub service: ServiceName,
    pub port: Port,
    #[serde(default)]
    pub websockets: bool,
}

fn default_releases() -> Count {
    Count(5)
}

fn default_health_timeout() -> Count {
    Count(120)
}

fn default_max_body() -> BodySize {
    BodySize("10m".to_string())
}

fn default_health_path() -> UrlPath {
    UrlPath("/".to_string())
}

/// A positive whole number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Count(pub u32);

impl TryFrom<i64> for Count {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        u32::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .map(Count)
            .ok_or_else(|| format!("invalid count {n}: expected a whole number from 1"))
    }
}

impl From<Count> for i64 {
    fn from(c: Count) -> i64 {
        i64::from(c.0)
    }
}

/// An environment variable name: `POSTGRES_PASSWORD`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(try_from = "String")]
pub struct EnvName(pub String);

impl TryFrom<String> for EnvName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let mut chars = s.chars();
        let ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
            && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(EnvName(s))
        } else {
            Err(format!(
                "invalid variable name {s:?}: use capitals, digits and _, like POSTGRES_PASSWORD"
            ))
        }
    }
}

/// A URL path for an nginx location: starts with `/`, no spaces, quotes,
/// backticks, braces, semicolons or `#` (it goes into nginx's configuration,
/// where `#` starts a comment, and into shell scripts, always quoted).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String")]
pub struct UrlPath(pub String);

impl TryFrom<String> for UrlPath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = s.starts_with('/')
            && s.chars()
                .all(|c| c.is_ascii_graphic() && !"\"'`{};$\\#".contains(c));
        if ok {
            Ok(UrlPath(s))
        } else {
            Err(format!(
                "invalid path {s:?}: expected a URL path like /api/ (no spaces, quotes, backticks, braces, ;, $ or #)"
            ))
        }
    }
}

/// nginx's size syntax: `512k`, `10m`, `1g`, or `0` for no limit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String")]
pub struct BodySize(pub String);

impl TryFrom<String> for BodySize {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let digits = s.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
        let ok = !digits.is_empty()
            && digits.len() + 1 >= s.len()
            && digits.bytes().all(|b| b.is_ascii_digit());
        if ok {
            Ok(BodySize(s.to_ascii_lowercase()))
        } else {
            Err(format!(
                "invalid size {s:?}: use nginx's syntax, like 512k, 10m, 1g (0: no limit)"
            ))
        }
    }
}

fn yes() -> bool {
    true
}

fn default_compose_files() -> Vec<PathBuf> {
    vec![PathBuf::from("compose.yml")]
}

/// A host or app name: lowercase letters, digits, `-` and `_`, as used in unit
/// names, compose project names and `--limit`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(try_from = "String")]
pub struct Name(String);

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Name(s))
        } else {
            Err(format!(
                "invalid name {s:?}: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
            ))
        }
    }
}

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A TCP port, 1-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "i64")]
pub struct Port(pub u16);

impl TryFrom<i64> for Port {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match u16::try_from(n) {
            Ok(p) if p > 0 => Ok(Port(p)),
            _ => Err(format!("invalid port {n}: use 1-65535")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String")]
pub struct Email(pub String);

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.split_once('@') {
            Some((local, domain))
                if !local.is_empty()
                    && domain.contains('.')
                    && !s.contains(char::is_whitespace) =>
            {
                Ok(Email(s))
            }
            _ => Err(format!(
                "invalid email address {s:?}: expected an address like ops@example.com"
            )),
        }
    }
}

/// A fully qualified domain name; `*.` is allowed as the first label (wildcard).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String")]
pub struct Domain(pub String);

impl TryFrom<String> for Domain {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let name = s.strip_prefix("*.").unwrap_or(&s);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if s.len() <= 253 && name.contains('.') && name.split('.').all(label_ok) {
            Ok(Domain(s.to_ascii_lowercase()))
        } else {
            Err(format!(
                "invalid domain {s:?}: expected a name like app.example.com"
            ))
        }
    }
}

/// Where certificates come from: Let's Encrypt (default), its staging
/// environment, or any ACME directory URL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(try_from = "String", into = "String")]
pub enum AcmeDirectory {
    #[default]
    LetsEncrypt,
    LetsEncryptStaging,
    Url(String),
}

impl TryFrom<String> for AcmeDirectory {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "letsencrypt" => Ok(AcmeDirectory::LetsEncrypt),
            "letsencrypt-staging" => Ok(AcmeDirectory::LetsEncryptStaging),
            url if url.starts_with("https://") => Ok(AcmeDirectory::Url(s)),
            _ => Err(format!(
                "invalid ACME directory {s:?}: use \"letsencrypt\", \"letsencrypt-staging\" or an https:// directory URL"
            )),
        }
    }
}

impl From<AcmeDirectory> for String {
    fn from(d: AcmeDirectory) -> String {
        d.url().to_string()
    }
}

impl AcmeDirectory {
    pub fn url(&self) -> &str {
        match self {
            AcmeDirectory::LetsEncrypt => "https://acme-v02.api.letsencrypt.org/directory",
            AcmeDirectory::LetsEncryptStaging => {
                "https://acme-staging-v02.api.letsencrypt.org/directory"
            }
            AcmeDirectory::Url(url) => url,
        }
    }
}

/// `[backup]`: where the app's backups go, when, how long they are kept,
/// and per-service overrides of what is backed up.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// `sftp:user@host:/path`, `s3:https://host/bucket/prefix`, or an absolute
    /// path on the host (allowed, with a warning: same disk, same fate).
    pub repository: BackupRepository,
    /// The repository's password on this machine; generated (0600) when missing.
    #[serde(default = "default_backup_password_file")]
    pub password_file: PathBuf,
    /// `AWS_ACCESS_KEY_ID=` / `AWS_SECRET_ACCESS_KEY=` lines (S3 only).
    pub s3_credentials_file: Option<PathBuf>,
    /// The private key the host logs in to the SFTP server with (SFTP only).
    pub sftp_identity_file: Option<PathBuf>,
    /// The SFTP server's host keys, in known_hosts format; without it the
    /// host records the key it sees first and requires it from then on.
    pub sftp_known_hosts: Option<PathBuf>,
    #[serde(default = "default_backup_schedule")]
    pub schedule: Schedule,
    #[serde(default = "default_verify_schedule")]
    pub verify_schedule: Schedule,
    /// How old the newest backup may get before `status` reports an error;
    /// required with a raw OnCalendar schedule (default: twice the schedule).
    pub max_age: Option<TimeSpan>,
    #[serde(default)]
    pub keep_hourly: u32,
    #[serde(default = "default_keep_daily")]
    pub keep_daily: u32,
    #[serde(default = "default_keep_weekly")]
    pub keep_weekly: u32,
    #[serde(default = "default_keep_monthly")]
    pub keep_monthly: u32,
    #[serde(default)]
    pub keep_yearly: u32,
    /// Snapshot the database services before a deploy that changes them.
    #[serde(default)]
    pub before_deploy: bool,
    /// The longest one service's backup may take.
    #[serde(default = "default_backup_timeout")]
    pub timeout: TimeSpan,
    /// Overrides per compose service (`[backup.services.db]`).
    #[serde(default)]
    pub services: BTreeMap<ServiceName, BackupServiceConfig>,
}

/// `[backup.services.NAME]`: what vpsup would detect from the image, changed.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackupServiceConfig {
    /// The engine, for images vpsup does not recognise (or to override it).
    pub engine: Option<BackupEngine>,
    /// PostgreSQL: `databases` (one dump each, plus roles) or `cluster`.
    pub mode: Option<crate::backup::PostgresMode>,
    /// PostgreSQL: only these databases.
    #[serde(default)]
    pub databases: Vec<DatabaseName>,
    /// PostgreSQL: every database but these.
    #[serde(default)]
    pub exclude: Vec<DatabaseName>,
    /// The variable in the service's environment that holds its password
    /// (Redis: `REDISCLI_AUTH` is set from it).
    pub password_env: Option<EnvName>,
    /// Volumes: stop the service around the copy, for a consistent one.
    pub stop: Option<bool>,
    /// Back up nothing of this service.
    #[serde(default)]
    pub skip: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupEngine {
    Postgres,
    Mysql,
    Mongo,
    Redis,
    Volume,
}

impl BackupConfig {
    pub fn retention(&self) -> crate::backup::restic::Retention {
        crate::backup::restic::Retention {
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
        }
    }

    /// How old the newest backup may get: `max_age`, else twice the schedule.
    pub fn max_age(&self) -> std::time::Duration {
        self.max_age
            .map_or_else(|| 2 * self.schedule.interval().unwrap_or_default(), |a| a.0)
    }

    /// Rules that involve several keys (each key is checked as it is read).
    fn check(&self) -> Result<(), String> {
        use crate::backup::restic::Location;
        let location = Location::parse(&self.repository.0)?;
        match location {
            Location::S3(_) if self.s3_credentials_file.is_none() => {
                return Err("[backup] an S3 repository needs s3_credentials_file".into())
            }
            Location::Sftp(_) if self.sftp_identity_file.is_none() => {
                return Err("[backup] an SFTP repository needs sftp_identity_file (the key the host logs in with)".into())
            }
            Location::Sftp(_) => {}
            _ if self.sftp_identity_file.is_some() || self.sftp_known_hosts.is_some() => {
                return Err("[backup] sftp_identity_file and sftp_known_hosts are for sftp: repositories".into())
            }
            _ => {}
        }
        if self.s3_credentials_file.is_some() && !matches!(location, Location::S3(_)) {
            return Err("[backup] s3_credentials_file is for s3: repositories".into());
        }
        if self.schedule.interval().is_none() && self.max_age.is_none() {
            return Err(format!(
                "[backup] schedule {:?} is a calendar expression: set max_age too (how old the newest backup may get, like \"26h\")",
                self.schedule.to_string()
            ));
        }
        let keep = self.retention();
        if [
            keep.hourly,
            keep.daily,
            keep.weekly,
            keep.monthly,
            keep.yearly,
        ] == [0; 5]
        {
            return Err("[backup] every keep_* is 0: keep at least one snapshot kind".into());
        }
        for (name, service) in &self.services {
            service
                .check()
                .map_err(|e| format!("[backup.services.{}] {e}", name.0))?;
        }
        Ok(())
    }
}

impl BackupServiceConfig {
    fn check(&self) -> Result<(), String> {
        use crate::backup::PostgresMode;
        let postgres_only =
            self.mode.is_some() || !self.databases.is_empty() || !self.exclude.is_empty();
        if postgres_only && self.engine.is_some_and(|e| e != BackupEngine::Postgres) {
            return Err("mode, databases and exclude are for engine = \"postgres\"".into());
        }
        if !self.databases.is_empty() && !self.exclude.is_empty() {
            return Err("set databases or exclude, not both".into());
        }
        if self.mode == Some(PostgresMode::Cluster)
            && (!self.databases.is_empty() || !self.exclude.is_empty())
        {
            return Err(
                "mode = \"cluster\" dumps every database: drop databases and exclude".into(),
            );
        }
        if self.stop.is_some() && self.engine.is_some_and(|e| e != BackupEngine::Volume) {
            return Err("stop is for engine = \"volume\"".into());
        }
        Ok(())
    }
}

/// `[backup]` with its cross-key rules checked, so the error points at the table.
fn checked_backup<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<BackupConfig>, D::Error> {
    let backup = Option::<BackupConfig>::deserialize(d)?;
    if let Some(b) = &backup {
        b.check().map_err(serde::de::Error::custom)?;
    }
    Ok(backup)
}

fn default_backup_password_file() -> PathBuf {
    PathBuf::from(".vpsup/backup-password")
}

fn default_backup_schedule() -> Schedule {
    Schedule::Daily
}

fn default_verify_schedule() -> Schedule {
    Schedule::Weekly
}

fn default_keep_daily() -> u32 {
    7
}

fn default_keep_weekly() -> u32 {
    4
}

fn default_keep_monthly() -> u32 {
    12
}

fn default_backup_timeout() -> TimeSpan {
    TimeSpan(std::time::Duration::from_secs(6 * 3600))
}

/// `[watch]`: the thresholds of the host's own checks (`vpsup watch`).
/// Every key has a default, so the section is optional.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// A filesystem (`/`, Docker's data) fuller than this, in percent, is a problem.
    #[serde(default = "default_disk_percent")]
    pub disk_percent: Percent,
    /// So is one that, at the rate it has been filling, is full within this.
    #[serde(default = "default_disk_full_in")]
    pub disk_full_in: TimeSpan,
    /// A served certificate with fewer days left than this is a problem.
    #[serde(default = "default_certificate_days")]
    pub certificate_days: u32,
    /// Docker's build cache bigger than this is a problem.
    #[serde(default = "default_build_cache")]
    pub build_cache: Size,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            disk_percent: default_disk_percent(),
            disk_full_in: default_disk_full_in(),
            certificate_days: default_certificate_days(),
            build_cache: default_build_cache(),
        }
    }
}

fn default_disk_percent() -> Percent {
    Percent(90)
}

fn default_disk_full_in() -> TimeSpan {
    TimeSpan(std::time::Duration::from_secs(7 * 86400))
}

fn default_certificate_days() -> u32 {
    14
}

fn default_build_cache() -> Size {
    Size(10 << 30)
}

/// A whole percentage, 1 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Percent(pub u32);

impl TryFrom<u32> for Percent {
    type Error = String;
    fn try_from(n: u32) -> Result<Self, String> {
        if (1..=100).contains(&n) {
            Ok(Percent(n))
        } else {
            Err(format!("invalid percentage {n}: use 1 to 100"))
        }
    }
}

impl From<Percent> for u32 {
    fn from(p: Percent) -> u32 {
        p.0
    }
}

/// `[alerts]`: the channels problems are reported through. Secrets (the
/// SMTP password, the ntfy token) are only ever read from files.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// A URL that takes a JSON POST (generic, Slack, Mattermost or Discord
    /// incoming webhook).
    pub webhook: Option<AlertUrl>,
    /// The JSON the webhook gets: `json` (vpsup's own), `slack` (also
    /// Mattermost), `discord`.
    pub webhook_format: Option<WebhookFormat>,
    /// An ntfy topic URL: `https://ntfy.sh/TOPIC` or a self-hosted server's.
    pub ntfy: Option<AlertUrl>,
    /// A file holding an ntfy access token (`tk_...`), for protected topics.
    pub ntfy_token_file: Option<PathBuf>,
    /// `host:port` of the SMTP server (port 587 with STARTTLS, 465 with TLS
    /// when left out).
    pub smtp_server: Option<SmtpServer>,
    /// `starttls` (default), `tls` (implicit TLS, usually port 465), or
    /// `none` (only for a server on this machine's loopback).
    #[serde(default)]
    pub smtp_tls: SmtpTls,
    pub smtp_user: Option<String>,
    /// A file holding the SMTP password (with `smtp_user`).
    pub smtp_password_file: Option<PathBuf>,
    pub email_from: Option<Email>,
    #[serde(default)]
    pub email_to: Vec<Email>,
    /// PEM root(s) trusted besides the public ones, for a self-hosted ntfy,
    /// webhook receiver or SMTP server with a private CA.
    pub ca_file: Option<PathBuf>,
    /// How often a problem that lasts is reported again.
    #[serde(default = "default_remind_every")]
    pub remind_every: TimeSpan,
}

fn default_remind_every() -> TimeSpan {
    TimeSpan(std::time::Duration::from_secs(6 * 3600))
}

impl AlertsConfig {
    /// Rules that involve several keys (each key is checked as it is read).
    fn check(&self) -> Result<(), String> {
        if self.webhook.is_none() && self.ntfy.is_none() && self.smtp_server.is_none() {
            return Err(
                "[alerts] names no channel: set webhook, ntfy or smtp_server (or remove [alerts])"
                    .into(),
            );
        }
        if self.webhook_format.is_some() && self.webhook.is_none() {
            return Err("[alerts] webhook_format is for webhook: set webhook too".into());
        }
        if self.ntfy_token_file.is_some() && self.ntfy.is_none() {
            return Err("[alerts] ntfy_token_file is for ntfy: set ntfy too".into());
        }
        match &self.smtp_server {
            None => {
                let email_keys = self.smtp_user.is_some()
                    || self.smtp_password_file.is_some()
                    || self.email_from.is_some()
                    || !self.email_to.is_empty()
                    || self.smtp_tls != SmtpTls::default();
                if email_keys {
                    return Err("[alerts] smtp_tls, smtp_user, smtp_password_file, email_from and email_to are for email: set smtp_server too".into());
                }
            }
            Some(server) => {
                if self.email_from.is_none() || self.email_to.is_empty() {
                    return Err("[alerts] email needs email_from and email_to (a list of addresses) with smtp_server".into());
                }
                if self.smtp_user.is_some() != self.smtp_password_file.is_some() {
                    return Err("[alerts] set smtp_user and smtp_password_file together (the password is read from that file)".into());
                }
                if self.smtp_tls == SmtpTls::None && !is_loopback(&server.host) {
                    return Err(format!(
                        "[alerts] smtp_tls = \"none\" sends mail (and the password) in the clear: only for a server on loopback, not {:?}; use \"starttls\" or \"tls\"",
                        server.host
                    ));
                }
            }
        }
        Ok(())
    }

    /// The port the SMTP server is reached on: as written, else 587
    /// (STARTTLS), 465 (TLS) or 25 (none).
    pub fn smtp_port(&self) -> Option<u16> {
        let server = self.smtp_server.as_ref()?;
        Some(server.port.unwrap_or(match self.smtp_tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }))
    }
}

/// `[alerts]` with its cross-key rules checked, so the error points at the table.
fn checked_alerts<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<AlertsConfig>, D::Error> {
    let alerts = Option::<AlertsConfig>::deserialize(d)?;
    if let Some(a) = &alerts {
        a.check().map_err(serde::de::Error::custom)?;
    }
    Ok(alerts)
}

/// `localhost`, 127.0.0.0/8 or ::1: a receiver on this machine, the only
/// place alerts may go unencrypted.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An alert receiver's URL: https, or http to a loopback address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct AlertUrl(pub String);

impl TryFrom<String> for AlertUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let uri: http::Uri = s.parse().map_err(|e| format!("invalid URL {s:?}: {e}"))?;
        let host = uri.host().unwrap_or("");
        match uri.scheme_str() {
            _ if host.is_empty() => Err(format!("invalid URL {s:?}: expected https://HOST/PATH")),
            Some("https") => Ok(AlertUrl(s)),
            Some("http") if is_loopback(host) => Ok(AlertUrl(s)),
            _ => Err(format!(
                "invalid URL {s:?}: alerts go over https:// (http:// only to a receiver on loopback)"
            )),
        }
    }
}

impl From<AlertUrl> for String {
    fn from(u: AlertUrl) -> String {
        u.0
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
    Discord,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    #[default]
    Starttls,
    Tls,
    None,
}

/// `host[:port]` of an SMTP server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct SmtpServer {
    pub host: String,
    pub port: Option<u16>,
}

impl TryFrom<String> for SmtpServer {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid smtp_server {s:?}: expected HOST or HOST:PORT, like smtp.example.com:587"
            )
        };
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => (
                h,
                Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?),
            ),
            _ => (s.as_str(), None),
        };
        let plain = host.trim_start_matches('[').trim_end_matches(']');
        let ok = !plain.is_empty()
            && plain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b));
        if ok {
            Ok(SmtpServer {
                host: plain.to_string(),
                port,
            })
        } else {
            Err(bad())
        }
    }
}

impl From<SmtpServer> for String {
    fn from(s: SmtpServer) -> String {
        let host = if s.host.contains(':') {
            format!("[{}]", s.host)
        } else {
            s.host
        };
        match s.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }
}

/// A restic repository location (checked by `backup::restic::Location`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String")]
pub struct BackupRepository(pub String);

impl TryFrom<String> for BackupRepository {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        crate::backup::restic::Location::parse(&s).map(|_| BackupRepository(s))
    }
}

/// A compose service name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(try_from = "String")]
pub struct ServiceName(pub String);

impl ServiceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ServiceName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(ServiceName(s))
        } else {
            Err(format!(
                "invalid service name {s:?}: compose service names are letters, digits, '.', '_' and '-'"
            ))
        }
    }
}

/// A database name vpsup puts in scripts and snapshot paths: a plain word.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String")]
pub struct DatabaseName(pub String);

impl TryFrom<String> for DatabaseName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = (1..=63).contains(&s.len())
            && !s.starts_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(DatabaseName(s))
        } else {
            Err(format!(
                "invalid database name {s:?}: vpsup backs up databases named with letters, digits, '.', '_' and '-'"
            ))
        }
    }
}

/// A length of time: `90s`, `30m`, `6h`, `2d`, `1w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeSpan(pub std::time::Duration);

impl TryFrom<String> for TimeSpan {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let last = s.chars().last();
        let number = &s[..s.len() - last.map_or(0, char::len_utf8)];
        let unit = match last {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3600,
            Some('d') => 86400,
            Some('w') => 7 * 86400,
            _ => 0,
        };
        match number.parse::<u64>() {
            Ok(n) if n > 0 && unit > 0 => Ok(TimeSpan(std::time::Duration::from_secs(n * unit))),
            _ => Err(format!(
                "invalid time {s:?}: use a whole number with s, m, h, d or w, like 6h"
            )),
        }
    }
}

impl From<TimeSpan> for String {
    fn from(t: TimeSpan) -> String {
        let secs = t.0.as_secs();
        [(7 * 86400, 'w'), (86400, 'd'), (3600, 'h'), (60, 'm')]
            .iter()
            .find(|(unit, _)| secs.is_multiple_of(*unit))
            .map_or(format!("{secs}s"), |(unit, c)| {
                format!("{}{c}", secs / unit)
            })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}\n{snippet}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        snippet: String,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Config::parse(&text, path)
    }

    /// Parses `text`; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let (line, column) = line_col(text, offset);
            let source_line = text.lines().nth(line - 1).unwrap_or("");
            let width = e.span().map_or(1, |s| {
                text[s]
                    .lines()
                    .next()
                    .map_or(1, |l| l.chars().count().max(1))
            });
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().trim_end().to_string(),
                snippet: format!(
                    "{line:>4} | {source_line}\n     | {}{}",
                    " ".repeat(column - 1),
                    "^".repeat(width)
                ),
            }
        })
    }

    /// The files this config names that hold this machine's secrets: the
    /// hosts' SSH keys, the TSIG secret, the backup repository's password,
    /// S3 credentials and SFTP key. A deploy never puts them in a release;
    /// those a host needs (the TSIG secret for its renewal timer, the backup
    /// files) reach it by themselves, on stdin, into root-only files.
    /// The other file keys hold nothing secret: `[acme] extra_root` (a CA
    /// certificate), `[backup] sftp_known_hosts` and `[init] extra_keys`
    /// (public keys), `[init] host_binary`, and the compose and env files
    /// (the host needs those).
    pub fn private_files(&self) -> Vec<PrivateFile> {
        let named = |named_by: String, path: &PathBuf| PrivateFile {
            named_by,
            path: path.clone(),
        };
        let mut files: Vec<PrivateFile> = self
            .hosts
            .iter()
            .filter_map(|(name, host)| {
                let key = host.identity_file.as_ref()?;
                Some(named(format!("[hosts.{name}] identity_file"), key))
            })
            .collect();
        if let Some(dns) = self.acme.as_ref().and_then(|a| a.dns.as_ref()) {
            files.push(named("[acme.dns] secret_file".into(), &dns.secret_file));
        }
        if let Some(backup) = &self.backup {
            files.push(named(
                "[backup] password_file".into(),
                &backup.password_file,
            ));
            for (key, path) in [
                ("s3_credentials_file", &backup.s3_credentials_file),
                ("sftp_identity_file", &backup.sftp_identity_file),
            ] {
                if let Some(path) = path {
                    files.push(named(format!("[backup] {key}"), path));
                }
            }
        }
        if let Some(alerts) = &self.alerts {
            for (key, path) in [
                ("smtp_password_file", &alerts.smtp_password_file),
                ("ntfy_token_file", &alerts.ntfy_token_file),
            ] {
                if let Some(path) = path {
                    files.push(named(format!("[alerts] {key}"), path));
                }
            }
        }
        files
    }

    pub fn host(&self, name: &str) -> Option<&HostConfig> {
        self.hosts
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, h)| h)
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod hostile;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("vpsup.toml"))
    }

    fn error_at(text: &str) -> (usize, usize, String) {
        match parse(text).unwrap_err() {
            ConfigError::Invalid {
                line,
                column,
                message,
                ..
            } => (line, column, message),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_full_config_parses_with_defaults() {
        let c = parse(
            r#"
[hosts.web]
address = "203.0.113.42"
user = "deploy"

[hosts.db-1]
address = "db.example.com"
port = 2222
identity_file = "~/.ssh/id_db"
sudo = false

[acme]
email = "ops@example.com"

[app]
name = "doctor"

[[sites]]
domain = "Doctor.Example.com"
service = "frontend"
port = 3000
"#,
        )
        .unwrap();
        let web = c.host("web").unwrap();
        assert_eq!(web.port, None);
        assert!(web.sudo);
        let db = c.host("db-1").unwrap();
        assert_eq!(db.port, Some(Port(2222)));
        assert!(!db.sudo);
        let acme = c.acme.unwrap();
        assert_eq!(acme.directory, AcmeDirectory::LetsEncrypt);
        assert!(acme.directory.url().starts_with("https://acme-v02."));
        assert_eq!(c.app.unwrap().compose_files, [PathBuf::from("compose.yml")]);
        assert_eq!(c.sites[0].domain.0, "doctor.example.com");
    }

    #[test]
    fn init_options_parse_and_validate() {
        let c = parse(
            "[init]\nadmin_user = \"ops\"\nssh_port = 2222\ndocker = \"distro\"\nswap = \"1.5G\"\nallow_ports = [8443, \"51820/udp\"]\nextra_keys = [\"~/.ssh/work.pub\"]\nssh_users = [\"alice\"]\n",
        )
        .unwrap();
        let init = c.init.unwrap();
        assert_eq!(init.ssh_users, [UserName("alice".into())]);
        assert_eq!(init.admin_user, Some(UserName("ops".into())));
        assert_eq!(init.ssh_port, Some(Port(2222)));
        assert_eq!(init.docker, Some(DockerSource::Distro));
        assert_eq!(init.swap.unwrap().mib(), 1536);
        assert_eq!(
            init.allow_ports,
            [
                PortRule {
                    port: 8443,
                    udp: false
                },
                PortRule {
                    port: 51820,
                    udp: true
                }
            ]
        );
        let (line, col, msg) = error_at("[init]\nadmin_user = \"root\"\n");
        assert_eq!((line, col), (2, 14));
        assert!(msg.contains("cannot be root"), "{msg}");
        let (_, _, msg) = error_at("[init]\nssh_users = [\"ops\", \"root\"]\n");
        assert!(msg.contains("cannot be root"), "{msg}");
        let (_, _, msg) = error_at("[init]\nssh_users = [\"$(id)\"]\n");
        assert!(msg.contains("invalid user name"), "{msg}");
        let (_, _, msg) = error_at("[init]\nallow_ports = [\"80/sctp\"]\n");
        assert!(msg.contains("PORT/udp"), "{msg}");
        let (_, _, msg) = error_at("[init]\nswap = \"lots\"\n");
        assert!(msg.contains("invalid size"), "{msg}");
        let (_, _, msg) = error_at("[init]\ndocker = \"snap\"\n");
        assert!(msg.contains("official") && msg.contains("distro"), "{msg}");
    }

    #[test]
    fn sizes_read_and_write_back() {
        for (text, bytes, back) in [
            ("1G", 1u64 << 30, "1G"),
            ("512M", 512 << 20, "512M"),
            ("512MiB", 512 << 20, "512M"),
            ("0", 0, "0"),
            ("2048", 2048, "2048"),
        ] {
            let size: Size = text.parse().unwrap();
            assert_eq!(size.0, bytes, "{text}");
            assert_eq!(String::from(size), back);
        }
        assert!("1T".parse::<Size>().is_err());
        assert!("-1G".parse::<Size>().is_err());
    }

    #[test]
    fn empty_file_is_a_valid_empty_config() {
        let c = parse("").unwrap();
        assert!(c.hosts.is_empty() && c.acme.is_none() && c.sites.is_empty());
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let (line, col, msg) = error_at("[hosts.web]\naddress = \"1.2.3.4\"\nadress = \"x\"\n");
        assert_eq!((line, col), (3, 1));
        assert!(msg.contains("unknown field `adress`"), "{msg}");
        assert!(msg.contains("address"), "{msg}");
    }

    #[test]
    fn wrong_type_names_line_and_column() {
        let (line, col, msg) = error_at("[hosts.web]\naddress = \"h\"\nport = \"22\"\n");
        assert_eq!((line, col), (3, 8));
        assert!(msg.contains("invalid type"), "{msg}");
    }

    #[test]
    fn invalid_values_point_at_the_value() {
        let (line, col, msg) = error_at("[hosts.web]\naddress = \"h\"\nport = 70000\n");
        assert_eq!((line, col), (3, 8));
        assert!(msg.contains("invalid port 70000"), "{msg}");

        let (line, _, msg) =
            error_at("[acme]\nemail = \"ops@example.com\"\ndirectory = \"http://x\"\n");
        assert_eq!(line, 3);
        assert!(msg.contains("https://"), "{msg}");

        let (line, _, msg) =
            error_at("[[sites]]\ndomain = \"localhost\"\nservice = \"a\"\nport = 80\n");
        assert_eq!(line, 2);
        assert!(msg.contains("invalid domain"), "{msg}");

        let (_, _, msg) = error_at("[hosts.Web]\naddress = \"h\"\n");
        assert!(msg.contains("invalid name \"Web\""), "{msg}");
    }

    /// Every vpsup.toml in the README is valid, and its full example has every section.
    #[test]
    fn the_readme_examples_parse() {
        let readme = include_str!("../README.md");
        let blocks: Vec<&str> = readme
            .split("```toml\n")
            .skip(1)
            .map(|rest| &rest[..rest.find("```").expect("a closed toml block")])
            .collect();
        assert!(
            blocks.len() >= 2,
            "the README shows its vpsup.toml examples"
        );
        for text in &blocks {
            parse(text).unwrap_or_else(|e| panic!("{e}\nin:\n{text}"));
        }
        let full = blocks
            .iter()
            .find(|b| b.lines().any(|l| l.starts_with("[acme]")))
            .expect("a full example");
        let c = parse(full).unwrap();
        assert!(c.app.is_some() && !c.sites.is_empty() && c.acme.is_some());
    }

    #[test]
    fn deploy_keys_parse_with_defaults_and_validate() {
        let c = parse(
            "[app]\nname = \"doctor\"\n\n[[sites]]\ndomain = \"doctor.example.com\"\nservice = \"frontend\"\nport = 80\n",
        )
        .unwrap();
        let app = c.app.unwrap();
        assert_eq!(app.public_ports, PublicPorts::Refuse);
        assert_eq!(app.dns, DnsRecords::Check);
        assert_eq!((app.releases, app.health_timeout), (Count(5), Count(120)));
        assert!(app.secrets.generate.is_empty());
        let site = &c.sites[0];
        assert_eq!(
            (site.max_body.0.as_str(), site.health.0.as_str()),
            ("10m", "/")
        );
        assert!(site.routes.is_empty() && !site.websockets);

        let c = parse(
            "[app]\nname = \"doctor\"\npublic_ports = \"loopback\"\ndns = \"update\"\nreleases = 3\n[app.secrets]\ngenerate = [\"POSTGRES_PASSWORD\", \"SECRET_KEY\"]\n\n[[sites]]\ndomain = \"doctor.example.com\"\nservice = \"frontend\"\nport = 80\nmax_body = \"25M\"\nhealth = \"/healthz\"\nroutes = [{ path = \"/api/\", service = \"backend\", port = 8000, websockets = true }]\n",
        )
        .unwrap();
        let app = c.app.unwrap();
        assert_eq!(app.public_ports, PublicPorts::Loopback);
        assert_eq!(app.dns, DnsRecords::Update);
        assert_eq!(app.secrets.generate[1].0, "SECRET_KEY");
        assert_eq!(c.sites[0].max_body.0, "25m");
        assert_eq!(c.sites[0].routes[0].path.0, "/api/");
        assert!(c.sites[0].routes[0].websockets);

        for (text, expected) in [
            ("[app]\nname = \"a\"\nreleases = 0\n", "invalid count 0"),
            ("[app]\nname = \"a\"\npublic_ports = \"open\"\n", "unknown variant `open`"),
            ("[app]\nname = \"a\"\n[app.secrets]\ngenerate = [\"db-pass\"]\n", "invalid variable name \"db-pass\""),
            ("[[sites]]\ndomain = \"a.example.com\"\nservice = \"s\"\nport = 80\nmax_body = \"10 MB\"\n", "invalid size"),
            ("[[sites]]\ndomain = \"a.example.com\"\nservice = \"s\"\nport = 80\nroutes = [{ path = \"api; root /\", service = \"b\", port = 1 }]\n", "invalid path"),
            // `#` starts a comment in nginx: `location /api#v2/ {` fails nginx -t.
            ("[[sites]]\ndomain = \"a.example.com\"\nservice = \"s\"\nport = 80\nroutes = [{ path = \"/api#v2/\", service = \"b\", port = 1 }]\n", "invalid path"),
            // A backtick would run a command in a shell's double quotes.
            ("[[sites]]\ndomain = \"a.example.com\"\nservice = \"s\"\nport = 80\nhealth = \"/`touch /tmp/x`\"\n", "invalid path"),
            // Compose service names are words; anything else is no service.
            ("[[sites]]\ndomain = \"a.example.com\"\nservice = \"web; reboot\"\nport = 80\n", "invalid service name \"web; reboot\""),
            ("[[sites]]\ndomain = \"a.example.com\"\nservice = \"s\"\nport = 80\nroutes = [{ path = \"/api/\", service = \"-api\", port = 1 }]\n", "invalid service name \"-api\""),
        ] {
            let (_, _, msg) = error_at(text);
            assert!(msg.contains(expected), "{text}: {msg}");
        }
    }

    /// Every file key that holds a secret of this machine's is among the
    /// private files (never in a release); the keys that hold nothing
    /// secret are not.
    #[test]
    fn private_files_are_the_keys_and_secrets_the_config_names() {
        let c = parse(
            "[hosts.web]\naddress = \"h\"\nidentity_file = \"keys/web\"\n[hosts.db]\naddress = \"d\"\n\
             [init]\nextra_keys = [\"keys/work.pub\"]\nhost_binary = \"dist/vpsup\"\n\
             [acme]\nemail = \"ops@example.com\"\nextra_root = \"root.pem\"\n\
             [acme.dns]\nprovider = \"rfc2136\"\nserver = \"ns1.example.com\"\nzone = \"example.com\"\nkey_name = \"k\"\nsecret_file = \"tsig.secret\"\n\
             [app]\nname = \"shop\"\nenv_files = [\".env.prod\"]\n\
             [backup]\nrepository = \"sftp:u@h:/r\"\nsftp_identity_file = \"keys/box\"\nsftp_known_hosts = \"keys/box.known\"\npassword_file = \"backup.pw\"\n",
        )
        .unwrap();
        let files: Vec<(String, String)> = c
            .private_files()
            .into_iter()
            .map(|f| (f.named_by, f.path.display().to_string()))
            .collect();
        let expected = [
            ("[hosts.web] identity_file", "keys/web"),
            ("[acme.dns] secret_file", "tsig.secret"),
            ("[backup] password_file", "backup.pw"),
            ("[backup] sftp_identity_file", "keys/box"),
        ];
        assert_eq!(files, expected.map(|(k, p)| (k.to_string(), p.to_string())));
        let s3 = parse("[backup]\nrepository = \"s3:https://s3.example.com/b\"\ns3_credentials_file = \"s3.env\"\n").unwrap();
        let paths: Vec<PathBuf> = s3.private_files().into_iter().map(|f| f.path).collect();
        assert_eq!(
            paths,
            [
                PathBuf::from(".vpsup/backup-password"),
                PathBuf::from("s3.env")
            ]
        );
    }

    #[test]
    fn allowed_private_keys_are_paths_inside_the_project() {
        let c =
            parse("[app]\nname = \"a\"\nallow_private_keys = [\"./certs/\", \"tls/client.key\"]\n")
                .unwrap();
        let allowed = &c.app.unwrap().allow_private_keys;
        assert_eq!(allowed[0].0, PathBuf::from("certs"));
        assert_eq!(allowed[1].0, PathBuf::from("tls/client.key"));
        for bad in [
            "/etc/ssl/private/k.pem",
            "../keys/k",
            "certs/../../k",
            "~/.ssh/id_ed25519",
            ".",
            "",
        ] {
            let (line, col, msg) = error_at(&format!(
                "[app]\nname = \"a\"\nallow_private_keys = [{bad:?}]\n"
            ));
            assert_eq!((line, col), (3, 22), "{bad}: {msg}");
            assert!(
                msg.contains(&format!(
                    "invalid path {bad:?}: name a file or directory inside the project"
                )),
                "{msg}"
            );
        }
    }

    /// Zero-downtime deploys: the drain period (30 s unless set) and a
    /// service's strategy, one of two words; a service name compose would
    /// refuse is refused here.
    #[test]
    fn drain_and_service_strategies() {
        let c = parse("[app]\nname = \"a\"\n").unwrap();
        let app = c.app.unwrap();
        assert_eq!(app.drain.0.as_secs(), 30);
        assert!(app.services.is_empty());
        let c = parse(
            "[app]\nname = \"a\"\ndrain = \"2m\"\n[app.services.cms]\nstrategy = \"recreate\"\n[app.services.web]\nstrategy = \"blue-green\"\n",
        )
        .unwrap();
        let app = c.app.unwrap();
        assert_eq!(app.drain.0.as_secs(), 120);
        assert_eq!(
            app.services[&ServiceName("cms".into())].strategy,
            Some(Strategy::Recreate)
        );
        assert_eq!(
            app.services[&ServiceName("web".into())].strategy,
            Some(Strategy::BlueGreen)
        );
        let (line, _, msg) =
            error_at("[app]\nname = \"a\"\n[app.services.cms]\nstrategy = \"rolling\"\n");
        assert_eq!(line, 4, "{msg}");
        assert!(
            msg.contains("unknown variant `rolling`, expected `blue-green` or `recreate`"),
            "{msg}"
        );
        let (line, _, msg) = error_at("[app]\nname = \"a\"\n[app.services.\"a b\"]\n");
        assert_eq!(line, 3, "{msg}");
        assert!(msg.contains("invalid service name \"a b\""), "{msg}");
        let (line, _, msg) = error_at("[app]\nname = \"a\"\ndrain = \"0s\"\n");
        assert_eq!(line, 3, "{msg}");
    }

    /// `[acme] store` and `webroot` name directories vpsup creates and
    /// chmods on the host, and nginx and systemd files name them as is:
    /// absolute, normalized, plain characters, and each a directory of its
    /// own (never /etc, which a 0700 store would lock every other user out
    /// of), apart from each other.
    #[test]
    fn acme_directories_are_dedicated_plain_absolute_paths() {
        let acme = |extra: &str| format!("[acme]\nemail = \"ops@example.com\"\n{extra}\n");
        let c = parse(&acme("")).unwrap().acme.unwrap();
        assert_eq!(
            (c.store.as_str(), c.webroot.as_str()),
            ("/etc/vpsup/acme", "/var/lib/vpsup/acme")
        );
        for (key, good, as_read) in [
            ("store", "/etc/vpsup/acme/", "/etc/vpsup/acme"),
            ("store", "/opt/shop/acme-store", "/opt/shop/acme-store"),
            ("store", "/tmp/.tmpAb12_x/acme", "/tmp/.tmpAb12_x/acme"),
            ("webroot", "/srv/acme", "/srv/acme"),
            ("webroot", "/var/www/acme", "/var/www/acme"),
        ] {
            let c = parse(&acme(&format!("{key} = {good:?}")))
                .unwrap()
                .acme
                .unwrap();
            let read = if key == "store" { c.store } else { c.webroot };
            assert_eq!(read.as_str(), as_read, "{key} = {good}");
        }
        for (key, bad, expected) in [
            ("store", "/etc", "\"/etc\" is a system directory"),
            ("store", "/", "\"/\" is a system directory"),
            ("store", "/var/lib/", "\"/var/lib\" is a system directory"),
            ("store", "/etc/ssh", "is a system directory"),
            ("store", "/var/lib/vpsup", "one vpsup keeps other files in"),
            ("webroot", "/srv/vpsup/shop/acme", "one vpsup keeps other files in"),
            ("webroot", "/etc/vpsup/backup", "one vpsup keeps other files in"),
            ("webroot", "/usr", "the ACME webroot (vpsup creates it, nginx serves it) must be a directory of its own"),
            ("store", "/etc", "the certificate store (vpsup makes it 0700, root's alone) must be a directory of its own"),
            ("store", "acme", "is an absolute path on the host"),
            ("store", "~/acme", "is an absolute path on the host"),
            ("store", "/etc/vpsup/../ssh", "without '.', '..' or '//' parts"),
            ("webroot", "/srv//acme", "without '.', '..' or '//' parts"),
            ("webroot", "/srv/./acme", "without '.', '..' or '//' parts"),
            ("store", "/srv/my acme", "' ' is not allowed"),
            ("store", "/srv/a;chmod 777 /", "';' is not allowed"),
            ("webroot", "/srv/$(id)", "'$' is not allowed"),
            ("webroot", "/srv/`id`", "'`' is not allowed"),
            ("webroot", "/srv/a\nb", "'\\n' is not allowed"),
            ("webroot", "/srv/a'b", "'\\'' is not allowed"),
            ("store", "/srv/a\"b", "'\"' is not allowed"),
            ("store", "/srv/é", "'é' is not allowed"),
        ] {
            let text = acme(&format!("{key} = {bad:?}"));
            let (line, col, msg) = error_at(&text);
            assert_eq!((line, col), (3, key.len() + 4), "{text}: {msg}");
            assert!(msg.contains(expected), "{key} = {bad:?}: {msg}");
        }
        for (store, webroot) in [
            ("/srv/acme", "/srv/acme/web"),
            ("/srv/acme/keys", "/srv/acme"),
            ("/srv/acme", "/srv/acme"),
        ] {
            let (line, _, msg) =
                error_at(&acme(&format!("store = {store:?}\nwebroot = {webroot:?}")));
            assert_eq!(line, 1, "{msg}");
            assert!(msg.contains("must be apart"), "{msg}");
        }
    }

    #[test]
    fn a_wildcard_site_is_checked_at_a_name_under_it() {
        let site = |extra: &str| -> SiteConfig {
            toml::from_str(&format!(
                "domain = \"*.shop.example.com\"\nservice = \"web\"\nport = 80\n{extra}"
            ))
            .unwrap()
        };
        assert_eq!(
            site("").check_name().unwrap(),
            "vpsup-check.shop.example.com"
        );
        assert_eq!(
            site("check_name = \"eu.shop.example.com\"")
                .check_name()
                .unwrap(),
            "eu.shop.example.com"
        );
        for wrong in [
            "a.b.shop.example.com",
            "shop.example.com",
            "*.shop.example.com",
            "x.other.com",
        ] {
            let err = site(&format!("check_name = \"{wrong}\""))
                .check_name()
                .unwrap_err();
            assert!(
                err.contains("a name directly under shop.example.com"),
                "{wrong}: {err}"
            );
        }
        let plain: SiteConfig =
            toml::from_str("domain = \"app.example.com\"\nservice = \"web\"\nport = 80\n").unwrap();
        assert_eq!(plain.check_name().unwrap(), "app.example.com");
    }

    #[test]
    fn backup_keys_parse_with_defaults() {
        let c = parse(
            "[backup]\nrepository = \"sftp:u123@u123.your-storagebox.de:/vpsup/shop\"\nsftp_identity_file = \"~/.ssh/storagebox\"\n",
        )
        .unwrap();
        let b = c.backup.unwrap();
        assert_eq!(b.password_file, PathBuf::from(".vpsup/backup-password"));
        assert_eq!(
            (b.schedule.clone(), b.verify_schedule.clone()),
            (Schedule::Daily, Schedule::Weekly)
        );
        assert_eq!(
            (
                b.keep_hourly,
                b.keep_daily,
                b.keep_weekly,
                b.keep_monthly,
                b.keep_yearly
            ),
            (0, 7, 4, 12, 0)
        );
        assert!(!b.before_deploy && b.services.is_empty());
        assert_eq!(b.timeout.0.as_secs(), 6 * 3600);
        assert_eq!(b.max_age().as_secs(), 48 * 3600);

        let c = parse(
            "[backup]\nrepository = \"s3:https://s3.example.com/backups/shop\"\ns3_credentials_file = \".vpsup/s3\"\nschedule = \"Mon..Fri *-*-* 02:00\"\nmax_age = \"3d\"\ntimeout = \"90m\"\nkeep_daily = 0\nkeep_yearly = 3\nbefore_deploy = true\n\n[backup.services.db]\nengine = \"postgres\"\nmode = \"databases\"\nexclude = [\"scratch\"]\n\n[backup.services.cache]\nskip = true\n\n[backup.services.uploads]\nengine = \"volume\"\nstop = true\n\n[backup.services.\"redis-1\"]\npassword_env = \"REDIS_PASSWORD\"\n",
        )
        .unwrap();
        let b = c.backup.unwrap();
        assert_eq!(b.max_age().as_secs(), 3 * 86400);
        assert_eq!(String::from(b.timeout), "90m");
        assert_eq!(b.retention().yearly, 3);
        let db = &b.services[&ServiceName("db".into())];
        assert_eq!(db.engine, Some(BackupEngine::Postgres));
        assert_eq!(db.exclude[0].0, "scratch");
        assert!(b.services[&ServiceName("cache".into())].skip);
        assert_eq!(b.services[&ServiceName("uploads".into())].stop, Some(true));
        assert_eq!(
            b.services[&ServiceName("redis-1".into())].password_env,
            Some(EnvName("REDIS_PASSWORD".into()))
        );
    }

    #[test]
    fn backup_mistakes_point_at_the_key_or_the_table() {
        let sftp = "[backup]\nrepository = \"sftp:u@h:/r\"\nsftp_identity_file = \"k\"\n";
        for (text, line, expected) in [
            ("[backup]\nrepository = \"backups/shop\"\n", 2, "invalid repository"),
            ("[backup]\nrepository = \"/srv/b\"\nkeep_daily = -1\n", 3, "invalid value"),
            ("[backup]\nrepository = \"/srv/b\"\nschedule = \"25:00\"\n", 3, "a time of day"),
            ("[backup]\nrepository = \"/srv/b\"\ntimeout = \"6 hours\"\n", 3, "invalid time"),
            ("[backup]\nrepository = \"/srv/b\"\nretention = 3\n", 3, "unknown field `retention`"),
            ("[backup]\nrepository = \"/srv/b\"\n[backup.services.db]\nengine = \"oracle\"\n", 4, "unknown variant `oracle`"),
            ("[backup]\nrepository = \"/srv/b\"\n[backup.services.db]\ndatabases = [\"a b\"]\n", 4, "invalid database name"),
            ("[backup]\nrepository = \"/srv/b\"\n[backup.services.\"db;x\"]\nskip = true\n", 3, "invalid service name"),
            ("[backup]\nrepository = \"s3:https://s3.example.com/b\"\n", 1, "needs s3_credentials_file"),
            ("[backup]\nrepository = \"sftp:u@h:/r\"\n", 1, "needs sftp_identity_file"),
            ("[backup]\nrepository = \"/srv/b\"\nsftp_known_hosts = \"k\"\n", 1, "are for sftp:"),
            ("[backup]\nrepository = \"/srv/b\"\nschedule = \"*:0/15\"\n", 1, "set max_age too"),
            ("[backup]\nrepository = \"/srv/b\"\nkeep_daily = 0\nkeep_weekly = 0\nkeep_monthly = 0\n", 1, "keep at least one"),
            (&format!("{sftp}[backup.services.db]\ndatabases = [\"a\"]\nexclude = [\"b\"]\n"), 1, "[backup.services.db] set databases or exclude"),
            (&format!("{sftp}[backup.services.db]\nengine = \"redis\"\nmode = \"cluster\"\n"), 1, "are for engine = \"postgres\""),
            (&format!("{sftp}[backup.services.db]\nmode = \"cluster\"\ndatabases = [\"a\"]\n"), 1, "dumps every database"),
            (&format!("{sftp}[backup.services.db]\nengine = \"mysql\"\nstop = true\n"), 1, "stop is for engine = \"volume\""),
        ] {
            let (l, _, msg) = error_at(text);
            assert!(msg.contains(expected), "{text}: {msg}");
            assert_eq!(l, line, "{text}: {msg}");
        }
    }

    #[test]
    fn time_spans_read_and_write_back() {
        for (text, secs, back) in [
            ("90s", 90, "90s"),
            ("120m", 7200, "2h"),
            ("6h", 21600, "6h"),
            ("14d", 1209600, "2w"),
        ] {
            let t = TimeSpan::try_from(text.to_string()).unwrap();
            assert_eq!(t.0.as_secs(), secs, "{text}");
            assert_eq!(String::from(t), back);
        }
        for bad in ["", "h", "0h", "6", "6y", "1.5h", "6é"] {
            assert!(TimeSpan::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn syntax_error_shows_the_line() {
        let err = parse("[hosts.web]\naddress = \"unterminated\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("vpsup.toml:2:"), "{text}");
        assert!(text.contains("   2 | address = \"unterminated"), "{text}");
    }

    #[test]
    fn missing_required_key_is_reported() {
        let err = parse("[hosts.web]\nuser = \"deploy\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `address`"), "{err}");
        assert!(err.starts_with("vpsup.toml:1:"), "{err}");
    }

    #[test]
    fn alerts_channels_parse_with_defaults() {
        let c = parse(
            r#"
[alerts]
webhook = "https://hooks.slack.com/services/T0/B0/x"
webhook_format = "slack"
ntfy = "http://127.0.0.1:8080/vpsup"
ntfy_token_file = "secrets/ntfy-token"
smtp_server = "smtp.example.com"
smtp_user = "alerts"
smtp_password_file = "secrets/smtp-password"
email_from = "vpsup@example.com"
email_to = ["ops@example.com", "oncall@example.com"]
"#,
        )
        .unwrap();
        let a = c.alerts.clone().unwrap();
        assert_eq!(a.webhook_format, Some(WebhookFormat::Slack));
        assert_eq!(a.smtp_tls, SmtpTls::Starttls);
        assert_eq!(a.smtp_port(), Some(587));
        assert_eq!(a.remind_every.0.as_secs(), 6 * 3600);
        assert_eq!(a.email_to.len(), 2);
        let private: Vec<String> = c.private_files().into_iter().map(|f| f.named_by).collect();
        assert_eq!(
            private,
            ["[alerts] smtp_password_file", "[alerts] ntfy_token_file"]
        );
    }

    #[test]
    fn alerts_smtp_ports_follow_the_tls_mode() {
        let port = |extra: &str| {
            parse(&format!(
                "[alerts]\nsmtp_server = \"mail.example.com{extra}\nemail_from = \"a@example.com\"\nemail_to = [\"b@example.com\"]\n"
            ))
            .unwrap()
            .alerts
            .unwrap()
            .smtp_port()
        };
        assert_eq!(port("\"\nsmtp_tls = \"tls\""), Some(465));
        assert_eq!(port(":2525\""), Some(2525));
        assert_eq!(
            SmtpServer::try_from("[::1]:25".to_string()).unwrap(),
            SmtpServer {
                host: "::1".into(),
                port: Some(25)
            }
        );
    }

    #[test]
    fn alerts_urls_are_https_except_on_loopback() {
        for ok in [
            "https://ntfy.sh/mytopic",
            "http://127.0.0.1:8080/x",
            "http://localhost/x",
            "http://[::1]:9/x",
        ] {
            assert!(AlertUrl::try_from(ok.to_string()).is_ok(), "{ok}");
        }
        let (line, col, msg) = error_at("[alerts]\nntfy = \"http://ntfy.example.com/t\"\n");
        assert_eq!((line, col), (2, 8));
        assert!(msg.contains("alerts go over https://"), "{msg}");
        let (_, _, msg) = error_at("[alerts]\nwebhook = \"hooks.example.com\"\n");
        assert!(msg.contains("invalid URL"), "{msg}");
    }

    #[test]
    fn alerts_cross_key_rules_name_the_keys() {
        let cases = [
            ("[alerts]\nremind_every = \"1h\"\n", "names no channel"),
            ("[alerts]\nntfy = \"https://ntfy.sh/t\"\nwebhook_format = \"slack\"\n", "webhook_format is for webhook"),
            ("[alerts]\nwebhook = \"https://x.example.com/h\"\nntfy_token_file = \"t\"\n", "ntfy_token_file is for ntfy"),
            ("[alerts]\nwebhook = \"https://x.example.com/h\"\nemail_to = [\"a@example.com\"]\n", "set smtp_server too"),
            ("[alerts]\nsmtp_server = \"mail.example.com\"\nemail_to = [\"a@example.com\"]\n", "needs email_from and email_to"),
            ("[alerts]\nsmtp_server = \"mail.example.com\"\nemail_from = \"a@example.com\"\nemail_to = [\"b@example.com\"]\nsmtp_user = \"u\"\n", "smtp_user and smtp_password_file together"),
            ("[alerts]\nsmtp_server = \"mail.example.com\"\nsmtp_tls = \"none\"\nemail_from = \"a@example.com\"\nemail_to = [\"b@example.com\"]\n", "only for a server on loopback"),
        ];
        for (text, expected) in cases {
            let (line, _, msg) = error_at(text);
            assert_eq!(line, 1, "{text}");
            assert!(msg.contains(expected), "{text}: {msg}");
        }
        let (line, _, msg) = error_at(
            "[alerts]\nsmtp_server = \"mail.example.com\"\nemail_from = \"a@example.com\"\nemail_to = [\"not-an-address\"]\n",
        );
        assert_eq!(line, 4);
        assert!(msg.contains("invalid email address"), "{msg}");
        let (line, _, msg) =
            error_at("[alerts]\nntfy = \"https://ntfy.sh/t\"\nremind_every = \"often\"\n");
        assert_eq!(line, 3);
        assert!(msg.contains("invalid time"), "{msg}");
        assert!(parse("[alerts]\nsmtp_server = \"127.0.0.1:2525\"\nsmtp_tls = \"none\"\nemail_from = \"a@example.com\"\nemail_to = [\"b@example.com\"]\n").is_ok());
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncdé\nx", 0), (1, 1));
        assert_eq!(line_col("ab\ncdé\nx", 3), (2, 1));
        assert_eq!(line_col("ab\ncdé\nx", 8), (3, 1));
        assert_eq!(line_col("ab\ncdé\nx", 7), (2, 4));
    }
}
