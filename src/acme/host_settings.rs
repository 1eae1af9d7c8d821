//! What the host's own renewal timer needs to renew without the operator: the
//! `[acme]` settings, with the files they point at (the extra trusted root, the
//! TSIG secret) copied beside them. Every operator run that uses `[acme]`
//! (`renew-certs`, `deploy`) brings these up to date; `vpsup renew-certs
//! --local`, which the timer runs, reads them.
//!
//! They live in the certificate store (`[acme] store`, 0700 root), beside
//! what they renew:
//!
//! ```text
//! /etc/vpsup/acme/renew.toml        0600  [acme] as in vpsup.toml, paths below
//! /etc/vpsup/acme/extra-root.pem    0644  [acme] extra_root, when set
//! /etc/vpsup/acme/dns.secret        0600  [acme.dns] secret_file, when set
//! ```

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::AcmeConfig;
use crate::transport::script::{self, quote};
use crate::transport::{ExecRequest, FileMeta, Transport, TransportError};

const CONFIG_FILE: &str = "renew.toml";
const EXTRA_ROOT_FILE: &str = "extra-root.pem";
const DNS_SECRET_FILE: &str = "dns.secret";

/// The settings file `renew-certs --local` reads, for the store at `store`.
pub fn config_path(store: &str) -> String {
    format!("{}/{CONFIG_FILE}", store.trim_end_matches('/'))
}

/// One file to keep on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFile {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum HostSettingsError {
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Transport(#[from] TransportError),
}

#[derive(Serialize)]
struct HostDoc<'a> {
    acme: &'a AcmeConfig,
}

/// The files for `acme` (paths relative to `project`, as in vpsup.toml).
pub fn files(acme: &AcmeConfig, project: &Path) -> Result<Vec<HostFile>, HostSettingsError> {
    let read = |relative: &Path| {
        let path = project.join(relative);
        std::fs::read(&path).map_err(|cause| HostSettingsError::Read { path, cause })
    };
    let store = acme.store.trim_end_matches('/');
    let mut on_host = acme.clone();
    let mut files = Vec::new();
    if let Some(root) = &acme.extra_root {
        let path = format!("{store}/{EXTRA_ROOT_FILE}");
        on_host.extra_root = Some(PathBuf::from(&path));
        files.push(HostFile {
            path,
            content: read(root)?,
            mode: 0o644,
        });
    }
    if let (Some(dns), Some(host_dns)) = (&acme.dns, on_host.dns.as_mut()) {
        let path = format!("{store}/{DNS_SECRET_FILE}");
        host_dns.secret_file = PathBuf::from(&path);
        files.push(HostFile {
            path,
            content: read(&dns.secret_file)?,
            mode: 0o600,
        });
    }
    let body = toml::to_string(&HostDoc { acme: &on_host }).unwrap_or_default();
    let doc = format!(
        "# Managed by vpsup: the [acme] settings of the project whose `vpsup renew-certs`\n\
         # or `vpsup deploy` ran last, for `vpsup renew-certs --local` (the\n\
         # vpsup-renew-certs timer). Edits here are overwritten on the next run.\n\n{body}"
    );
    // Written last: it names the others, which must be in place first.
    files.push(HostFile {
        path: config_path(store),
        content: doc.into_bytes(),
        mode: 0o600,
    });
    Ok(files)
}

/// Brings the host's files up to date: one exec compares hashes, one more
/// writes those that differ (their content travels on stdin, never in
/// arguments) into `store`. Returns the paths written.
pub async fn sync<'f>(
    transport: &dyn Transport,
    store: &str,
    files: &'f [HostFile],
) -> Result<Vec<&'f str>, TransportError> {
    let mut hashes = String::new();
    for file in files {
        let path = quote(&file.path);
        hashes.push_str(&format!(
            "if [ -f {path} ]; then sha256sum < {path} | cut -d' ' -f1; else echo -; fi\n"
        ));
    }
    let out = transport
        .run_ok(
            "comparing the renewal settings on the host",
            ExecRequest::new(hashes).become_root(true),
        )
        .await?;
    let seen = String::from_utf8_lossy(&out.stdout);
    let mut seen = seen.lines();
    let stale: Vec<&HostFile> = files
        .iter()
        .filter(|f| seen.next().map(str::trim) != Some(sha256_hex(&f.content).as_str()))
        .collect();
    if stale.is_empty() {
        return Ok(Vec::new());
    }
    let mut write = format!(
        "set -e\numask 077\nmkdir -p {store}\nchmod 0700 {store}\n",
        store = quote(store)
    );
    for file in &stale {
        write.push_str(&script::write_file(
            &file.path,
            &file.content,
            &FileMeta::mode(file.mode).owner("root"),
        ));
    }
    transport
        .run_ok(
            "writing the renewal settings on the host",
            ExecRequest::piped(write).become_root(true),
        )
        .await?;
    Ok(stale.iter().map(|f| f.path.as_str()).collect())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn acme(extra: &str) -> AcmeConfig {
        let text = format!("[acme]\nemail = \"ops@example.com\"\n{extra}");
        Config::parse(&text, Path::new("vpsup.toml"))
            .unwrap()
            .acme
            .unwrap()
    }

    #[test]
    fn the_host_copy_points_at_files_beside_it_and_parses_back() {
        let project = tempfile::tempdir().unwrap();
        std::fs::write(project.path().join("root.pem"), "ROOT").unwrap();
        std::fs::write(project.path().join("tsig.key"), "c2VjcmV0\n").unwrap();
        let config = acme(
            "directory = \"https://127.0.0.1:14000/dir\"\nextra_root = \"root.pem\"\n\
             [acme.dns]\nprovider = \"rfc2136\"\nserver = \"127.0.0.1:5353\"\nzone = \"example.com\"\n\
             key_name = \"vpsup\"\nsecret_file = \"tsig.key\"\n",
        );
        let files = files(&config, project.path()).unwrap();
        let paths: Vec<_> = files.iter().map(|f| (f.path.as_str(), f.mode)).collect();
        assert_eq!(
            paths,
            [
                ("/etc/vpsup/acme/extra-root.pem", 0o644),
                ("/etc/vpsup/acme/dns.secret", 0o600),
                ("/etc/vpsup/acme/renew.toml", 0o600)
            ]
        );
        assert_eq!(files[0].content, b"ROOT");
        assert_eq!(files[1].content, b"c2VjcmV0\n");
        let doc = String::from_utf8(files[2].content.clone()).unwrap();
        assert!(
            !doc.contains("c2VjcmV0"),
            "the secret stays in its own file"
        );
        let back = Config::parse(&doc, Path::new("renew.toml"))
            .unwrap()
            .acme
            .unwrap();
        assert_eq!(
            back.extra_root.as_deref(),
            Some(Path::new("/etc/vpsup/acme/extra-root.pem"))
        );
        assert_eq!(
            back.dns.unwrap().secret_file,
            PathBuf::from("/etc/vpsup/acme/dns.secret")
        );
        assert_eq!(back.directory, config.directory);
        assert_eq!(back.email, config.email);
    }

    #[test]
    fn a_missing_extra_root_names_the_file() {
        let project = tempfile::tempdir().unwrap();
        let err = files(&acme("extra_root = \"nope.pem\"\n"), project.path()).unwrap_err();
        assert!(err.to_string().contains("nope.pem"), "{err}");
    }
}
