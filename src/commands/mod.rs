//! One module per command. Each takes resolved `Settings` and returns what
//! happened; its error carries its exit status (`crate::exit`).

pub mod alerts;
pub mod backup;
pub mod deploy;
pub mod exec;
pub mod export;
pub mod facts;
pub mod init;
pub mod logs;
pub mod play;
pub mod renew_certs;
pub mod ssh;
pub mod status;
pub mod watch;

use crate::cli::{AlertsAction, BackupAction, Cli, Command, ExportTarget};
use crate::exit;
use crate::settings::Settings;

pub async fn run(mut cli: Cli) -> exit::Result<()> {
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
    if let Command::Watch { local } = &cli.command {
        // On the host, --config names a watch settings file, not a vpsup.toml.
        let file = if *local {
            cli.global.config.take()
        } else {
            None
        };
        let settings = Settings::resolve(&cli.global)?;
        return watch::run(&settings, *local, file.as_deref()).await;
    }
    let settings = Settings::resolve(&cli.global)?;
    match &cli.command {
        Command::Init { target, options } => init::run(&settings, target.as_deref(), options).await,
        Command::RenewCerts { force, .. } => {
            renew_certs::run(&settings, *force, local.as_ref()).await
        }
        Command::Deploy => deploy::run(&settings).await,
        Command::Backup { action, local, app } => {
            let action = match action {
                None => crate::backup::host::Action::Backup,
                Some(BackupAction::List) => crate::backup::host::Action::List,
                Some(BackupAction::Init) => crate::backup::host::Action::Init,
                Some(BackupAction::Verify) => crate::backup::host::Action::Verify,
            };
            backup::run(&settings, action, *local, app.as_deref()).await
        }
        Command::Restore {
            service,
            snapshot,
            release,
        } => {
            let request = crate::backup::restore_run::RestoreRequest {
                service: service.clone(),
                snapshot: snapshot.clone(),
                release: release.clone(),
            };
            backup::restore(&settings, &request).await
        }
        Command::Rollback => deploy::rollback(&settings).await,
        Command::Facts { target } => facts::run(&settings, target.as_deref()).await,
        Command::Status => status::run(&settings).await,
        Command::Watch { .. } => unreachable!("handled above"),
        Command::Export {
            target: ExportTarget::K8s(args),
        } => export::k8s(&settings, args).await,
        Command::Ssh { host, command } => ssh::run(&settings, host.as_deref(), command).await,
        Command::Exec {
            service,
            host,
            command,
        } => exec::run(&settings, service, host.as_deref(), command).await,
        Command::Logs {
            services,
            follow,
            since,
            tail,
            grep,
        } => {
            let query = crate::deploy::compose_cli::LogsQuery {
                services: services.clone(),
                follow: *follow,
                since: since.clone(),
                tail: *tail,
            };
            logs::run(&settings, query, grep.clone()).await
        }
        Command::Alerts {
            action: AlertsAction::Test { .. },
        } => alerts::test(&settings).await,
        Command::Play {
            playbook,
            target,
            vars,
            tags,
        } => play::run(&settings, playbook, target.as_deref(), vars, tags).await,
    }
}
