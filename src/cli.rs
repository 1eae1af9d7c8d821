//! Command-line definitions, and nothing else: `settings` resolves these into
//! what the commands use.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{DockerSource, PortRule, Size, UserName};

#[derive(Debug, Parser)]
#[command(
    name = "vpsup",
    version,
    about = "Agentless VPS provisioner: harden a fresh Ubuntu/Debian VPS, deploy a compose stack behind nginx with HTTPS, over SSH.",
    after_help = "TARGET is [USER@]HOST[:PORT], a host name from vpsup.toml, or an alias from ~/.ssh/config."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Dry run: show what would change, change nothing.
    #[arg(long, global = true)]
    pub check: bool,
    /// Show diffs of files that change (secrets masked).
    #[arg(long, global = true)]
    pub diff: bool,
    /// More detail (timings, round trips); repeat for more.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors and the final result.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Machine-readable output on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Project config file [default: ./vpsup.toml].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Only these hosts from vpsup.toml (comma-separated or repeated).
    #[arg(long, global = true, value_name = "HOST", value_delimiter = ',')]
    pub limit: Vec<String>,
    /// Answer yes to every confirmation prompt.
    #[arg(short, long, global = true)]
    pub yes: bool,
    /// Private key to log in with (tried before ~/.ssh/config's and the agent's).
    #[arg(short, long, global = true, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Read the SSH password from standard input (first line).
    #[arg(long, global = true)]
    pub password_stdin: bool,
    /// Seconds to wait for a host to answer before giving up.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 10)]
    pub connect_timeout: u64,
    /// Hosts worked on at once [default: every host, at most 32].
    #[arg(long, global = true, value_name = "N")]
    pub forks: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bootstrap a fresh host: admin user, SSH hardening, firewall, Docker, nginx.
    Init {
        /// [USER@]HOST[:PORT] of a fresh host (usually root@ADDRESS), or a host
        /// from vpsup.toml [default: every host in vpsup.toml].
        target: Option<String>,
        #[command(flatten)]
        options: InitArgs,
    },
    /// Deploy the compose stack and its sites over HTTPS.
    Deploy,
    /// Renew certificates that are due, install them, reload nginx.
    RenewCerts {
        /// Renew even when not due.
        #[arg(long)]
        force: bool,
        /// On the host itself (what its renewal timer runs): the certificate
        /// store here, each certificate with its app's settings in
        /// /etc/vpsup/acme/renew.d/, the others with renew.toml there (or --config).
        #[arg(long)]
        local: bool,
    },
    /// Back up the app's databases and volumes now, on every host (or list,
    /// init, verify).
    Backup {
        #[command(subcommand)]
        action: Option<BackupAction>,
        /// On the host itself (what its timer runs), with the settings in /etc/vpsup/backup/.
        #[arg(long, global = true)]
        local: bool,
        /// With --local: only this app [default: every app with settings on the host].
        #[arg(long, global = true, value_name = "APP")]
        app: Option<String>,
    },
    /// Restore a service's data from a snapshot (a safety snapshot is taken first).
    Restore {
        service: String,
        /// A snapshot id, or `latest` [default: latest].
        #[arg(long, value_name = "ID")]
        snapshot: Option<String>,
        /// The snapshot `[backup] before_deploy` took before this release.
        #[arg(long, value_name = "ID", conflicts_with = "snapshot")]
        release: Option<String>,
    },
    /// Alert channels from vpsup.toml's [alerts]: `vpsup alerts test`.
    Alerts {
        #[command(subcommand)]
        action: AlertsAction,
    },
    /// The host's own checks (sites, certificates, containers, disks, timers)
    /// and alerts on what changed: what the vpsup-watch timer runs.
    Watch {
        /// On the host itself, for every app with settings in
        /// /etc/vpsup/watch/ (or the one settings file --config names).
        #[arg(long)]
        local: bool,
    },
    /// Export the project for another system: `vpsup export k8s`.
    Export {
        #[command(subcommand)]
        target: ExportTarget,
    },
    /// Show each host's current problems, then hosts, containers, sites,
    /// certificates, firewall and last deploy.
    Status,
    /// Return to the previous release.
    Rollback,
    /// A login shell on a host (or one command: `-- CMD...`) through the
    /// system's ssh client, with vpsup's settings for the host.
    Ssh {
        /// A host from vpsup.toml or a TARGET [default: the only host in vpsup.toml].
        host: Option<String>,
        /// A command to run instead of a shell (read by the login shell, as with ssh).
        #[arg(last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Run a command in a service's container of the app's current release
    /// (with a terminal when this one has one); its exit status is vpsup's.
    Exec {
        service: String,
        /// The host to run it on [default: the only host in vpsup.toml].
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
        /// The command and its arguments, each passed as one word.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// The app's compose logs from every host (prefixed with the host when several).
    Logs {
        /// Only these services [default: all].
        services: Vec<String>,
        /// Keep printing new lines until Ctrl-C.
        #[arg(short, long)]
        follow: bool,
        /// Only lines since this time: 1h, 30m, or a timestamp (as docker compose reads it).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// The last N lines of each service.
        #[arg(long, value_name = "N")]
        tail: Option<u32>,
        /// Only lines holding TEXT (plain text, case-sensitive; filtered by vpsup).
        #[arg(long, value_name = "TEXT")]
        grep: Option<String>,
    },
    /// Connect and report what a host is: OS, resources, sudo, installed tools.
    Facts { target: Option<String> },
    /// Run a playbook: a built-in or project playbook name, or a YAML file.
    Play {
        playbook: String,
        target: Option<String>,
        /// A variable for the playbook's templates and `when:` (repeatable);
        /// VALUE is read as YAML (`port=2222` is a number).
        #[arg(short = 'e', long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Only run tasks with one of these tags (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum BackupAction {
    /// The app's snapshots per service, with time and size.
    List,
    /// Create the repository if there is none (and record its id on the host).
    Init,
    /// Restore drill: the latest snapshots into throwaway containers, checked; then restic check.
    Verify,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ExportTarget {
    /// A Kustomize tree (base/ and overlays/production/) for a Kubernetes cluster.
    K8s(ExportK8sArgs),
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ExportK8sArgs {
    /// Where to write the tree [default: k8s].
    #[arg(long, value_name = "DIR", default_value = "k8s")]
    pub out: PathBuf,
    /// The namespace every object goes in [default: the app's name].
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// The StorageClass of the databases' claims [default: the cluster's default].
    #[arg(long, value_name = "NAME")]
    pub storage_class: Option<String>,
    /// The cert-manager ClusterIssuer of the Ingresses.
    #[arg(long, value_name = "NAME", default_value = "letsencrypt")]
    pub issuer: String,
    /// Measure volume sizes and container usage, and read the generated
    /// secrets' names, on this host from vpsup.toml.
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// With --host: fetch the secrets' values into the tree's git-ignored
    /// base/secrets/ (files 0600) instead of placeholders.
    #[arg(long, requires = "host")]
    pub with_secrets: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum AlertsAction {
    /// Send a test message through every channel and report each one's result.
    Test {
        /// From this machine (what a host runs); today every test is sent
        /// from the machine vpsup runs on.
        #[arg(long)]
        local: bool,
    },
}

/// `vpsup init` options; each overrides the same key in vpsup.toml's [init].
#[derive(Debug, Args, Default)]
pub struct InitArgs {
    /// The admin user to create [default: deploy].
    #[arg(long, value_name = "NAME")]
    pub admin_user: Option<UserName>,
    /// Move sshd to this port (the firewall opens it first).
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub ssh_port: Option<u16>,
    /// Another public key for the admin user: a .pub file or a key line (repeatable).
    #[arg(long = "key", value_name = "PUBKEY")]
    pub extra_keys: Vec<String>,
    /// Where Docker comes from [default: official].
    #[arg(long, value_enum)]
    pub docker: Option<DockerSource>,
    /// Swap file size when RAM is under 2 GiB (0: none) [default: 1G].
    #[arg(long, value_name = "SIZE")]
    pub swap: Option<Size>,
    /// Another port to open in the firewall, like 8443 or 51820/udp (repeatable).
    #[arg(long = "allow", value_name = "PORT[/PROTO]")]
    pub allow_ports: Vec<PortRule>,
    /// The vpsup executable to install on the host for its certificate renewal
    /// timer, when this one cannot run there (another CPU or libc)
    /// [default: this vpsup].
    #[arg(long, value_name = "PATH")]
    pub host_binary: Option<PathBuf>,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Init { .. } => "init",
            Command::Deploy => "deploy",
            Command::RenewCerts { .. } => "renew-certs",
            Command::Backup { .. } => "backup",
            Command::Restore { .. } => "restore",
            Command::Alerts { .. } => "alerts",
            Command::Watch { .. } => "watch",
            Command::Export { .. } => "export",
            Command::Status => "status",
            Command::Rollback => "rollback",
            Command::Facts { .. } => "facts",
            Command::Ssh { .. } => "ssh",
            Command::Exec { .. } => "exec",
            Command::Logs { .. } => "logs",
            Command::Play { .. } => "play",
        }
    }
}
