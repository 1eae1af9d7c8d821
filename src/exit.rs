//! How a run ends: each error type knows its exit status (see the README's
//! "Exit status"), and a command's error carries the status of the error it
//! was made from. `main` prints the error and exits with its status; nothing
//! has to list error types to find it.

use std::fmt;

/// Something failed on a host (unreachable, authentication, a step that
/// failed); also any error without a type of its own.
pub const FAILED: u8 = 1;
/// Bad input: command line, vpsup.toml, ~/.ssh/config, a playbook, a
/// compose file that would bypass the firewall.
pub const BAD_INPUT: u8 = 2;

/// The exit status an error ends vpsup with.
pub trait ExitStatus {
    fn exit_code(&self) -> u8;
}

/// A command's error, with the exit status of the typed error it came from.
/// Made by `?` from any error that implements `ExitStatus`; an
/// `anyhow::Error` (such as the fleet's "failed on 1 of 2 host(s)") is a
/// failure (status 1).
pub struct Error {
    code: u8,
    error: anyhow::Error,
    /// Nothing to say: the status is a remote command's own (`vpsup exec`).
    quiet: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A failure on a host, said in `message`.
    pub fn failed(message: impl fmt::Display + fmt::Debug + Send + Sync + 'static) -> Error {
        anyhow::Error::msg(message).into()
    }

    /// Ends vpsup with `code` and no message: a remote command's status,
    /// passed through (`vpsup exec`), has already said what it had to say.
    pub fn status(code: u8) -> Error {
        Error {
            code,
            error: anyhow::anyhow!("exit status {code}"),
            quiet: true,
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.code
    }

    /// Whether `main` prints nothing for this error (see `status`).
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }
}

// `Error` itself is no `std::error::Error` (as `anyhow::Error` is not): the
// blanket conversion below would otherwise overlap `From<T> for T`.
impl<E> From<E> for Error
where
    E: ExitStatus + std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Error {
        Error {
            code: error.exit_code(),
            error: error.into(),
            quiet: false,
        }
    }
}

impl From<anyhow::Error> for Error {
    fn from(error: anyhow::Error) -> Error {
        Error {
            code: FAILED,
            error,
            quiet: false,
        }
    }
}

/// As `anyhow::Error` shows it: `{:#}` adds the causes.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            write!(f, "{:#}", self.error)
        } else {
            write!(f, "{}", self.error)
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} (exit status {})", self.error, self.code)
    }
}

/// Printing `--json` output failed: not the input's fault.
impl ExitStatus for serde_json::Error {
    fn exit_code(&self) -> u8 {
        FAILED
    }
}

/// A host that cannot be reached or logged in to.
impl ExitStatus for crate::transport::ssh::SshError {
    fn exit_code(&self) -> u8 {
        FAILED
    }
}

/// A command on a host that could not be run.
impl ExitStatus for crate::transport::TransportError {
    fn exit_code(&self) -> u8 {
        FAILED
    }
}

/// A playbook that does not parse, or whose tasks' arguments are wrong.
impl ExitStatus for crate::engine::playbook::PlaybookError {
    fn exit_code(&self) -> u8 {
        BAD_INPUT
    }
}

/// A project's playbook or template that cannot be read.
impl ExitStatus for crate::engine::assets::AssetError {
    fn exit_code(&self) -> u8 {
        BAD_INPUT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("bad {0}")]
    struct Bad(&'static str);

    impl ExitStatus for Bad {
        fn exit_code(&self) -> u8 {
            BAD_INPUT
        }
    }

    fn typed() -> Result<()> {
        Err(Bad("input"))?;
        Ok(())
    }

    fn untyped() -> Result<()> {
        Err(anyhow::anyhow!("deploy failed on 1 of 2 host(s)"))?;
        Ok(())
    }

    #[test]
    fn an_error_keeps_the_status_of_its_type() {
        let e = typed().unwrap_err();
        assert_eq!(
            (e.exit_code(), e.to_string()),
            (BAD_INPUT, "bad input".into())
        );
        let e = untyped().unwrap_err();
        assert_eq!(e.exit_code(), FAILED);
        assert_eq!(format!("{e:#}"), "deploy failed on 1 of 2 host(s)");
        assert_eq!(Error::failed("x").exit_code(), FAILED);
    }

    #[test]
    fn the_causes_show_with_the_alternate_form() {
        let e: Error = anyhow::anyhow!("inner").context("outer").into();
        assert_eq!(format!("{e}"), "outer");
        assert_eq!(format!("{e:#}"), "outer: inner");
    }
}
