//! One module per command. Each takes resolved `Settings` and returns what
//! happened; `main` maps errors to exit codes.

pub mod deploy;
pub mod facts;
pub mod init;
pub mod play;
pub mod renew_certs;
pub mod status;

use crate::cli::{Cli, Command};
use crate::engine::assets::AssetError;
use crate::engine::playbook::PlaybookError;
use crate::settings::{Settings, SettingsError};

/// Exit statuses, documented in the README.
pub mod exit {
    /// Something failed on a host.
    pub const FAILED: u8 = 1;
    /// Bad input: command line, vpsup.toml, ~/.ssh/config, a playbook.
    pub const BAD_INPUT: u8 = 2;
}

pub async fn run(mut cli: Cli) -> anyhow::Result<()> {
    let local = match &cli.command {
        Command::RenewCerts { local: true, .. } => {
            let json = cli.global.json;
            let Some(found) = renew_certs::find_local(cli.global.config.as_deref(), json)? else {
                return Ok(());
            };
            // The host-wide settings, if any (the apps' are found beside them).
            cli.global.config = match &found {
                renew_certs::Local::Config(path) => Some(path.clone()),
                renew_certs::Local::AppsOnly(_) => None,
            };
            Some(found)
        }
        _ => None,
    };
    let settings = Settings::resolve(&cli.global)?;
    match &cli.command {
        Command::Init { target, options } => init::run(&settings, target.as_deref(), options).await,
        Command::RenewCerts { force, .. } => {
            renew_certs::run(&settings, *force, local.as_ref()).await
        }
        Command::Deploy => deploy::run(&settings).await,
        Command::Rollback => deploy::rollback(&settings).await,
        Command::Facts { target } => facts::run(&settings, target.as_deref()).await,
        Command::Status => status::run(&settings).await,
        Command::Play {
            playbook,
            target,
            vars,
            tags,
        } => play::run(&settings, playbook, target.as_deref(), vars, tags).await,
    }
}

/// The exit status for an error returned by `run`.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.is::<SettingsError>()
        || error.is::<PlaybookError>()
        || error.is::<AssetError>()
        || error.is::<init::InitError>()
        || error.is::<renew_certs::RenewError>()
        || error.is::<crate::acme::settings::AcmeSettingsError>()
        || error.is::<deploy::DeployError>()
    {
        exit::BAD_INPUT
    } else {
        exit::FAILED
    }
}
