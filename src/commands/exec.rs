//! `vpsup exec SERVICE [--host NAME] -- CMD...`: a command in a service's
//! container of the app's current release, over vpsup's own connection, as
//! if it ran here: stdin, stdout and stderr passed through, its exit status
//! vpsup's, and a terminal there when this side has one (so `psql` or a
//! shell is interactive).
//!
//! 1. Connect to the host.
//! 2. Read how the current release runs (its compose files and env files)
//!    and which slot serves.
//! 3. Check that SERVICE is one of its services.
//! 4. Run `docker compose exec` in the project it runs in (a site service:
//!    the serving slot's, `switch::Placement`), attached.

use std::path::PathBuf;

use crate::deploy::current::Current;
use crate::exit;
use crate::fleet;
use crate::settings::Settings;
use crate::terminal;
use crate::transport::ssh::{Attach, Pty};
use crate::transport::{ExecOutput, ExecRequest, SshTransport, Transport};

#[derive(Debug, thiserror::Error)]
pub enum AppCommandError {
    #[error("{command} works on the app's services: add an [app] section (its name) to {}", path.display())]
    NoApp {
        command: &'static str,
        path: PathBuf,
    },
    #[error("no service {service} in app {app} on {host}; it has: {services}")]
    UnknownService {
        service: String,
        app: String,
        host: String,
        services: String,
    },
}

impl exit::ExitStatus for AppCommandError {
    fn exit_code(&self) -> u8 {
        exit::BAD_INPUT
    }
}

/// The app's name from vpsup.toml's `[app]`.
pub fn app_name<'a>(
    settings: &'a Settings,
    command: &'static str,
) -> Result<&'a str, AppCommandError> {
    settings
        .config
        .as_ref()
        .and_then(|c| c.app.as_ref())
        .map(|a| a.name.as_str())
        .ok_or_else(|| AppCommandError::NoApp {
            command,
            path: settings.config_path.clone(),
        })
}

pub async fn run(
    settings: &Settings,
    service: &str,
    host: Option<&str>,
    command: &[String],
) -> exit::Result<()> {
    let app = app_name(settings, "vpsup exec")?;
    let target = settings.one_target(host, "vpsup exec", " with --host NAME")?;
    let connection = fleet::connect(settings, &target).await?;
    let ran = exec_in(&connection.transport, app, service, command).await;
    connection.transport.close().await;
    match exit_code(&ran?) {
        0 => Ok(()),
        code => Err(exit::Error::status(code)),
    }
}

async fn exec_in(
    transport: &SshTransport,
    app: &str,
    service: &str,
    command: &[String],
) -> exit::Result<ExecOutput> {
    let current = Current::read(transport, app).await?;
    let listed = transport
        .run_ok(
            "listing the app's services",
            ExecRequest::new(current.stack().services()).become_root(true),
        )
        .await?;
    let services: Vec<String> = listed.stdout_str().lines().map(str::to_string).collect();
    if !services.iter().any(|s| s == service) {
        return Err(AppCommandError::UnknownService {
            service: service.to_string(),
            app: app.to_string(),
            host: transport.describe(),
            services: services.join(", "),
        }
        .into());
    }
    let tty = terminal::is_interactive();
    // A site service runs in the serving slot's project.
    let req =
        ExecRequest::new(current.stack_of(service).exec(service, command, tty)).become_root(true);
    let attach = Attach {
        pty: tty.then(|| {
            let (cols, rows) = terminal::size().unwrap_or((80, 24));
            Pty {
                term: terminal::term(),
                cols,
                rows,
            }
        }),
        input: Some(terminal::stdin_chunks()),
        stop: None,
        output: terminal::passthrough(),
        resized: if tty { terminal::resizes() } else { None },
    };
    // Keys go to the remote terminal as typed, until the command ends.
    let _raw = tty.then(terminal::RawMode::enter);
    Ok(transport.attach(&req, attach).await?)
}

/// vpsup's exit status for a remote command's end: its status (at most
/// 255), or 128 + the signal's number when a signal ended it, as a shell says.
pub fn exit_code(out: &ExecOutput) -> u8 {
    match (out.exit_status, out.exit_signal.as_deref()) {
        (Some(status), _) => u8::try_from(status).unwrap_or(255),
        (None, Some(signal)) => 128 + signal_number(signal),
        (None, None) => exit::FAILED,
    }
}

/// The number of a signal named as russh names it (`TERM`, `KILL`...).
fn signal_number(name: &str) -> u8 {
    match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(status: Option<u32>, signal: Option<&str>) -> u8 {
        exit_code(&ExecOutput {
            exit_status: status,
            exit_signal: signal.map(str::to_string),
            ..ExecOutput::default()
        })
    }

    #[test]
    fn the_remote_status_is_vpsups() {
        assert_eq!(ended(Some(0), None), 0);
        assert_eq!(ended(Some(3), None), 3);
        assert_eq!(ended(Some(300), None), 255);
        assert_eq!(ended(None, Some("KILL")), 137);
        assert_eq!(ended(None, Some("TERM")), 143);
        assert_eq!(ended(None, None), 1);
    }
}
