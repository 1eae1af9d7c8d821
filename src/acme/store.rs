//! The certificate store on the host: the one source of truth shared by every
//! operator machine and by the host's own renewal timer.
//!
//! ```text
//! /etc/vpsup/acme/                      0700 root
//!   accounts/<directory-hash>.json      0600  ACME account credentials, one per CA directory
//!   certs/<name>/fullchain.pem          0644  leaf first; nginx's ssl_certificate
//!   certs/<name>/privkey.pem            0600  ECDSA P-256; nginx's ssl_certificate_key
//!   certs/<name>/cert.json              0644  what renewal needs: names, challenge, directory
//!   certs/<name> -> .versions/<name>/<n>        a symlink, switched in one rename
//! ```

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::scripts;
use crate::transport::script::{self, quote};
use crate::transport::{ExecRequest, FileMeta, Transport, TransportError};

pub const DEFAULT_DIR: &str = crate::layout::ACME_STORE;

/// How a certificate's names are proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChallengeKind {
    #[serde(rename = "http-01")]
    Http01,
    #[serde(rename = "dns-01")]
    Dns01,
}

/// What renewal needs to know about a certificate besides the certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertMeta {
    pub names: Vec<String>,
    pub challenge: ChallengeKind,
    /// The ACME directory URL that issued it.
    pub directory: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// A certificate as the store holds it (without its private key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCert {
    pub name: String,
    pub meta: CertMeta,
    pub chain_pem: String,
}

pub struct Store<'a> {
    pub transport: &'a dyn Transport,
    pub dir: String,
}

/// The directory name of a certificate: its first name, a wildcard's `*`
/// spelled out (`*.example.com` -> `wildcard.example.com`).
pub fn cert_name(names: &[String]) -> String {
    let first = names.first().map(String::as_str).unwrap_or("certificate");
    match first.strip_prefix("*.") {
        Some(rest) => format!("wildcard.{rest}"),
        None => first.to_string(),
    }
}

impl Store<'_> {
    pub fn cert_dir(&self, name: &str) -> String {
        format!("{}/certs/{name}", self.dir)
    }

    pub fn fullchain_path(&self, name: &str) -> String {
        format!("{}/fullchain.pem", self.cert_dir(name))
    }

    pub fn privkey_path(&self, name: &str) -> String {
        format!("{}/privkey.pem", self.cert_dir(name))
    }

    fn account_path(&self, directory: &str) -> String {
        let hash = Sha256::digest(directory.as_bytes());
        let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}/accounts/{hex}.json", self.dir)
    }

    /// The stored account credentials for `directory`, if any.
    pub async fn account(&self, directory: &str) -> Result<Option<String>, TransportError> {
        let bytes = self
            .transport
            .read_file(&self.account_path(directory), true)
            .await?;
        Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    pub async fn save_account(
        &self,
        directory: &str,
        credentials: &str,
    ) -> Result<(), TransportError> {
        self.make_dir(&format!("{}/accounts", self.dir)).await?;
        self.transport
            .put_file(
                &self.account_path(directory),
                credentials.as_bytes(),
                &FileMeta::mode(0o600).owner("root:root"),
                true,
            )
            .await
    }

    async fn make_dir(&self, path: &str) -> Result<(), TransportError> {
        let script = format!(
            "umask 077; mkdir -p {} && chmod 0700 {}",
            quote(path),
            quote(&self.dir)
        );
        self.transport
            .run_ok(
                "creating the certificate store",
                ExecRequest::new(script).become_root(true),
            )
            .await
            .map(|_| ())
    }

    /// Every certificate in the store, in one exec.
    pub async fn list(&self) -> Result<Vec<StoredCert>, String> {
        let out = self
            .transport
            .run_ok(
                "reading the certificate store",
                ExecRequest::new(listing_script(&self.dir)).become_root(true),
            )
            .await
            .map_err(|e| e.to_string())?;
        parse_listing(&out.stdout_str())
    }

    /// Runs the web server's `reload` command with a marker on disk until it
    /// succeeds: a reload that failed (a broken nginx config elsewhere) is
    /// retried by every later run, even one with nothing to renew, instead of
    /// nginx serving the old certificate until it expires.
    pub fn reload_script(&self, reload: &str) -> String {
        let marker = quote(&format!("{}/{RELOAD_PENDING}", self.dir));
        // A subshell: a reload command that exits ends only itself.
        format!(": > {marker} && ( {reload}\n) && rm -f {marker}")
    }

    /// Installs a certificate, its key and its metadata as one switch: the
    /// three files go into a new version directory, then `certs/<name>` (a
    /// symlink) is renamed over to point at it. nginx never sees a key from
    /// one certificate beside the chain of another, even if the connection
    /// drops halfway; the previous version is removed after the switch. The
    /// switch also marks a reload as owed (see `reload_script`).
    pub async fn install(
        &self,
        meta: &CertMeta,
        key_pem: &str,
        chain_pem: &str,
    ) -> Result<String, TransportError> {
        let name = cert_name(&meta.names);
        let json = serde_json::to_string_pretty(meta).unwrap_or_default();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let version = format!(".versions/{name}/{stamp}");
        let new = format!("{}/certs/{version}", self.dir);
        let root = |mode| FileMeta::mode(mode).owner("root:root");
        let mut script = format!(
            "set -e\n# A dropped connection must not stop the switch halfway.\ntrap '' HUP\numask 077\n\
             mkdir -p {new}\nchmod 0700 {store}\nchmod 0755 {new}\n",
            new = quote(&new),
            store = quote(&self.dir),
        );
        for (file, content, mode) in [
            ("privkey.pem", key_pem, 0o600),
            ("fullchain.pem", chain_pem, 0o644),
            ("cert.json", json.as_str(), 0o644),
        ] {
            script.push_str(&script::write_file(
                &format!("{new}/{file}"),
                content.as_bytes(),
                &root(mode),
            ));
        }
        script.push_str(&scripts::ACME_SWITCH_CERT.fill(&[
            ("certs", &quote(&format!("{}/certs", self.dir))),
            ("name", &quote(&name)),
            ("version", &quote(&version)),
            ("marker", &quote(&format!("{}/{RELOAD_PENDING}", self.dir))),
        ]));
        script.push('\n');
        self.transport
            .run_ok(
                &format!("installing certificate {name}"),
                ExecRequest::piped(script).become_root(true),
            )
            .await?;
        Ok(name)
    }
}

/// A script (run as root) that prints every certificate in the store at
/// `dir`, for `parse_listing`; other commands fold it into their one probe.
pub fn listing_script(dir: &str) -> String {
    scripts::ACME_LISTING.fill(&[("store", &quote(dir)), ("reload_pending", RELOAD_PENDING)])
}

/// The marker of a reload still owed to the web server.
const RELOAD_PENDING: &str = "reload-pending";

/// Whether `listing_script` found that the web server still has to pick up a
/// change (an earlier reload failed: see `reload_script`).
pub fn reload_owed(listing: &str) -> bool {
    listing.lines().any(|l| l == RELOAD_PENDING)
}

/// The certificates `listing_script` printed.
pub fn parse_listing(text: &str) -> Result<Vec<StoredCert>, String> {
    use base64::Engine;
    let decode = |what: &str, v: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| format!("certificate store: bad {what} ({e})"))
    };
    let mut certs = Vec::new();
    let mut name = None;
    let mut meta = None;
    for line in text.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "cert" => name = Some(value.to_string()),
            "meta" => {
                let json = decode("cert.json", value)?;
                meta = Some(serde_json::from_str::<CertMeta>(&json).map_err(|e| {
                    format!(
                        "certificate store: {}: cert.json is unreadable ({e})",
                        name.clone().unwrap_or_default()
                    )
                })?);
            }
            "chain" => {
                if let (Some(name), Some(meta)) = (name.take(), meta.take()) {
                    certs.push(StoredCert {
                        name,
                        meta,
                        chain_pem: decode("fullchain.pem", value)?,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::LocalTransport;

    #[test]
    fn names_of_certificates() {
        assert_eq!(
            cert_name(&["app.example.com".into(), "www.example.com".into()]),
            "app.example.com"
        );
        assert_eq!(cert_name(&["*.example.com".into()]), "wildcard.example.com");
    }

    #[tokio::test]
    async fn installs_lists_and_keeps_the_key_private() {
        let dir = tempfile::tempdir().unwrap();
        let transport = LocalTransport::new("test", true);
        let store = Store {
            transport: &transport,
            dir: dir.path().join("acme").display().to_string(),
        };
        assert!(store.list().await.unwrap().is_empty());
        let meta = CertMeta {
            names: vec!["*.example.test".into(), "example.test".into()],
            challenge: ChallengeKind::Dns01,
            directory: "https://ca.test/dir".into(),
            profile: None,
        };
        let name = store.install(&meta, "KEY\n", "CHAIN\n").await.unwrap();
        assert_eq!(name, "wildcard.example.test");
        // The web server owes a reload until one succeeds.
        let owed = || async {
            let listing = transport
                .run_ok("listing", ExecRequest::new(listing_script(&store.dir)))
                .await
                .unwrap();
            reload_owed(&listing.stdout_str())
        };
        assert!(owed().await);
        let reload = store.reload_script("true");
        transport
            .run_ok("reload", ExecRequest::new(reload))
            .await
            .unwrap();
        assert!(!owed().await);
        let listed = store.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].name.as_str(), listed[0].chain_pem.as_str()),
            ("wildcard.example.test", "CHAIN\n")
        );
        assert_eq!(listed[0].meta, meta);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.privkey_path(&name)), 0o600);
        assert_eq!(mode(&store.dir), 0o700);

        // A new version replaces the whole set at once; the old one is gone.
        let first_target = std::fs::read_link(store.cert_dir(&name)).unwrap();
        store.install(&meta, "KEY2\n", "CHAIN2\n").await.unwrap();
        assert_eq!(
            std::fs::read_to_string(store.privkey_path(&name)).unwrap(),
            "KEY2\n"
        );
        assert_eq!(
            std::fs::read_to_string(store.fullchain_path(&name)).unwrap(),
            "CHAIN2\n"
        );
        let versions = std::path::Path::new(&store.dir)
            .join("certs/.versions")
            .join(&name);
        assert_eq!(std::fs::read_dir(&versions).unwrap().count(), 1);
        assert_ne!(
            std::fs::read_link(store.cert_dir(&name)).unwrap(),
            first_target
        );
        assert_eq!(store.list().await.unwrap().len(), 1);

        // A store written before versions existed is taken over.
        let legacy = std::path::Path::new(&store.dir).join("certs/old.example.test");
        std::fs::create_dir_all(&legacy).unwrap();
        std::fs::write(legacy.join("fullchain.pem"), "OLD").unwrap();
        let old_meta = CertMeta {
            names: vec!["old.example.test".into()],
            ..meta.clone()
        };
        store.install(&old_meta, "K\n", "C\n").await.unwrap();
        assert!(std::fs::symlink_metadata(&legacy)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            std::fs::read_to_string(legacy.join("fullchain.pem")).unwrap(),
            "C\n"
        );

        assert_eq!(store.account("https://ca.test/dir").await.unwrap(), None);
        store
            .save_account("https://ca.test/dir", "{\"id\":1}")
            .await
            .unwrap();
        assert_eq!(
            store
                .account("https://ca.test/dir")
                .await
                .unwrap()
                .as_deref(),
            Some("{\"id\":1}")
        );
        assert_eq!(store.account("https://other.test/dir").await.unwrap(), None);
    }
}
