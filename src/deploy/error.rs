//! What stops a deploy or a rollback. Before any host is reached, the
//! project's configuration (`DeployError`, exit status 2); on a host, one of
//! its steps (`StepError`, said on the host's report line; the run then
//! fails with status 1). Each message is what the operator reads.

use std::path::PathBuf;

use super::dns::PreflightError;
use super::remote;
use crate::acme::AcmeError;
use crate::exit::{self, ExitStatus};
use crate::hostlock::{HoldError, LockError};
use crate::transport::sections::MissingPart;
use crate::transport::TransportError;

/// The project's configuration cannot be deployed (nothing was contacted).
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("deploy needs an [app] section in {0} (name, compose files, sites): see the README")]
    NoApp(PathBuf),
    #[error("[[sites]] need certificates: add an [acme] section with your email to {0}")]
    NoAcme(PathBuf),
    #[error("[app] dns = \"update\" sets records through [acme.dns]: add that section to {0} (or drop dns = \"update\")")]
    NoDnsProvider(PathBuf),
    #[error("site {0}: a wildcard certificate is validated through DNS: add an [acme.dns] section to {1}")]
    WildcardWithoutDns(String, PathBuf),
    #[error("{0}")]
    Release(String),
}

impl ExitStatus for DeployError {
    fn exit_code(&self) -> u8 {
        exit::BAD_INPUT
    }
}

/// Why a deploy or rollback failed on one host.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Interrupted under a lock, or the lock not given back.
    #[error(transparent)]
    Held(#[from] HoldError),
    /// The probe's output lacks a part.
    #[error(transparent)]
    Probe(#[from] MissingPart),
    /// The probe's facts do not read back.
    #[error("{0}")]
    Facts(String),
    /// The certificate store's listing does not read back.
    #[error("{0}")]
    CertificateStore(String),
    #[error("docker compose (v2) is missing on the host: run `vpsup init` first")]
    NoCompose,
    /// A site's nginx file did not render.
    #[error("{0}")]
    Render(String),
    #[error(transparent)]
    Dns(#[from] PreflightError),
    /// A first Ctrl-C, seen between two steps; `keeps`: what the host runs.
    #[error("interrupted before {step}; {keeps}")]
    Interrupted { step: &'static str, keeps: String },
    #[error("certificate for {domain}: {error}")]
    Certificate { domain: String, error: AcmeError },
    #[error("the renewal timer's settings: {0}")]
    RenewalSettings(TransportError),
    /// The snapshot before a deploy, or the host's backup setup after it.
    #[error("backups: {0}")]
    Backup(String),
    /// The host's copy of the watch settings could not be written.
    #[error("watch settings: {0} (the release is live; `vpsup deploy` again retries this step)")]
    Watch(String),
    /// The new release did not go live; `logs`: the failing services' last
    /// lines.
    #[error("release {id} {why}; {after}\n{logs}")]
    NotLive {
        id: String,
        why: Box<NotLive>,
        after: Restored,
        logs: String,
    },
    #[error("nginx's site files for app {app} proxy to {ports:?}, the ports of neither its blue nor its green instances, and no serving slot is recorded in {serving_file}: vpsup cannot tell which instances serve and will not guess (a release started in either slot could replace them). Put back the site files vpsup wrote (/etc/nginx/sites-enabled/vpsup-{app}.*), or write the slot that serves (blue or green) to {serving_file}, then run it again")]
    ServingUnknown {
        app: String,
        ports: Vec<u16>,
        serving_file: String,
    },
    #[error("app {0} was never deployed here")]
    NeverDeployed(String),
    #[error("release {0} is the only one kept: there is nothing to roll back to")]
    NothingToRollBackTo(String),
    #[error("release {release} has no readable {}: {error}", remote::META_FILE)]
    UnreadableMeta { release: String, error: String },
    /// The previous release did not go live in a rollback.
    #[error("release {previous} {why}; {after}")]
    RollbackNotLive {
        previous: String,
        why: Box<NotLive>,
        after: RunsAgain,
    },
}

/// Failing on a host ends the run with status 1.
impl ExitStatus for StepError {
    fn exit_code(&self) -> u8 {
        exit::FAILED
    }
}

/// Why a started release is not the one served.
#[derive(Debug, thiserror::Error)]
pub enum NotLive {
    /// The health gate failed: what failed in it.
    #[error("is not healthy ({0})")]
    Unhealthy(String),
    /// nginx refused its site files, or reloading failed.
    #[error("could not be served ({0})")]
    NotServed(TransportError),
}

/// After a deploy's failed release: what runs instead.
#[derive(Debug, thiserror::Error)]
pub enum Restored {
    #[error("release {0} runs again and keeps serving")]
    Previous(String),
    #[error(
        "starting release {previous} again failed too, check `vpsup status` and the host: {error}"
    )]
    PreviousFailed { previous: String, error: String },
    #[error("it was the first release: its containers were stopped")]
    FirstStopped,
    #[error("it was the first release; stopping its containers failed: {0}")]
    FirstNotStopped(String),
}

/// After a rollback's failed release: the current release again.
#[derive(Debug, thiserror::Error)]
pub enum RunsAgain {
    #[error("release {0} runs again")]
    Yes(String),
    #[error(
        "starting release {current} again failed too ({error}): check `vpsup status` and the host"
    )]
    Failed { current: String, error: String },
}
