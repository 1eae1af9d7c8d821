//! The release an app runs now (`/srv/vpsup/<app>/current`), for the
//! commands that work on its stack: `exec` and `logs`.

use super::compose_cli::Stack;
use super::remote::{AppPaths, ReleaseMeta, META_FILE};
use super::start::stack_for;
use crate::transport::{Transport, TransportError};

/// The current release of an app on one host.
pub struct Current {
    app: String,
    dir: String,
    secrets: String,
    meta: ReleaseMeta,
}

#[derive(Debug, thiserror::Error)]
pub enum CurrentError {
    #[error(
        "app {app} is not deployed on {host} ({dir} has no release): run `vpsup deploy` first"
    )]
    NotDeployed {
        app: String,
        host: String,
        dir: String,
    },
    #[error("{path} on {host}: {error}")]
    Unreadable {
        host: String,
        path: String,
        error: String,
    },
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl crate::exit::ExitStatus for CurrentError {
    fn exit_code(&self) -> u8 {
        crate::exit::FAILED
    }
}

impl Current {
    /// Reads how the current release runs (one round trip, as root: a
    /// release is root's).
    pub async fn read(transport: &dyn Transport, app: &str) -> Result<Current, CurrentError> {
        let paths = AppPaths::new(app);
        let dir = format!("{}/current", paths.dir);
        let path = format!("{dir}/{META_FILE}");
        let Some(text) = transport.read_file(&path, true).await? else {
            return Err(CurrentError::NotDeployed {
                app: app.to_string(),
                host: transport.describe(),
                dir,
            });
        };
        let meta = serde_json::from_slice(&text).map_err(|e| CurrentError::Unreadable {
            host: transport.describe(),
            path,
            error: e.to_string(),
        })?;
        Ok(Current {
            app: app.to_string(),
            dir,
            secrets: paths.secrets(),
            meta,
        })
    }

    /// Its compose stack, run from the `current` link (as backups do).
    pub fn stack(&self) -> Stack<'_> {
        stack_for(&self.app, &self.dir, &self.meta, &self.secrets)
    }
}
