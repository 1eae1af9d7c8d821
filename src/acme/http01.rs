//! HTTP-01: the key authorization goes into the host's ACME webroot, which
//! nginx's default server (installed by `init`) serves at
//! `/.well-known/acme-challenge/` on port 80; it is removed afterwards.

use async_trait::async_trait;
use instant_acme::ChallengeType;

use super::client::Solver;
use crate::transport::script::quote;
use crate::transport::{ExecRequest, FileMeta, Transport};

pub struct Http01<'a> {
    pub transport: &'a dyn Transport,
    /// The webroot nginx serves (default /var/lib/vpsup/acme).
    pub webroot: String,
}

impl Http01<'_> {
    fn dir(&self) -> String {
        format!(
            "{}/.well-known/acme-challenge",
            self.webroot.trim_end_matches('/')
        )
    }
}

#[async_trait]
impl Solver for Http01<'_> {
    fn kind(&self) -> ChallengeType {
        ChallengeType::Http01
    }

    async fn present(
        &self,
        _: &str,
        token: &str,
        key_authorization: &str,
        _: &str,
    ) -> Result<(), String> {
        check_token(token)?;
        let dir = self.dir();
        self.transport
            .run_ok(
                "creating the ACME challenge directory",
                ExecRequest::new(format!("mkdir -p -m 0755 {}", quote(&dir))).become_root(true),
            )
            .await
            .map_err(|e| e.to_string())?;
        self.transport
            .put_file(
                &format!("{dir}/{token}"),
                key_authorization.as_bytes(),
                &FileMeta::mode(0o644),
                true,
            )
            .await
            .map_err(|e| e.to_string())
    }

    async fn cleanup(&self, _: &str, token: &str, _: &str) -> Result<(), String> {
        check_token(token)?;
        let path = format!("{}/{token}", self.dir());
        self.transport
            .run_ok(
                "removing the ACME challenge file",
                ExecRequest::new(format!("rm -f -- {}", quote(&path))).become_root(true),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Tokens are base64url (RFC 8555 8.3); anything else must not become a path.
fn check_token(token: &str) -> Result<(), String> {
    if !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(format!("the CA sent an unusable challenge token {token:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_cannot_escape_the_webroot() {
        assert!(check_token("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0").is_ok());
        for bad in ["", "../etc/passwd", "a/b", "a b", "a.b"] {
            assert!(check_token(bad).is_err(), "{bad}");
        }
    }
}
