//! Host key checking with OpenSSH's `StrictHostKeyChecking=accept-new` policy:
//! a host never seen before is learned (and the caller says so); a host whose key
//! differs from the recorded one is refused, and the file is never rewritten.

use std::path::{Path, PathBuf};

use std::io::Write;

use russh::keys::known_hosts::known_host_keys_path;
use russh::keys::{Algorithm, HashAlg, PublicKey};

/// What checking the offered key against known_hosts concluded.
#[derive(Debug, Clone)]
pub enum HostKeyVerdict {
    /// The offered key is recorded for this host.
    Known,
    /// The host had no entry; its key was appended to the file.
    Learned { fingerprint: String },
    /// The host has entries, none of which is the offered key.
    Changed(Box<HostKeyMismatch>),
    /// known_hosts could not be read or written.
    Unusable { path: PathBuf, detail: String },
}

#[derive(Debug, Clone)]
pub struct HostKeyMismatch {
    pub host_pattern: String,
    pub path: PathBuf,
    /// (line number, "ED25519 SHA256:...") of every recorded key for the host.
    pub recorded: Vec<(usize, String)>,
    pub offered: String,
}

/// `[host]:port`, or `host` for port 22, as OpenSSH writes it.
pub fn host_pattern(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// "ED25519 SHA256:abc..." as OpenSSH prints fingerprints.
pub fn describe_key(key: &PublicKey) -> String {
    let algo = key.algorithm().to_string();
    let short = algo
        .trim_start_matches("ssh-")
        .split('-')
        .next()
        .unwrap_or(&algo)
        .to_uppercase();
    format!("{short} {}", key.fingerprint(HashAlg::Sha256))
}

/// The key algorithms recorded for `host:port`, so the handshake can ask the
/// server for a key we know (as OpenSSH orders its host key algorithms)
/// instead of mistaking another type for a changed key.
pub fn recorded_algorithms(path: &Path, host: &str, port: u16) -> Vec<Algorithm> {
    known_host_keys_path(host, port, path)
        .map(|keys| keys.iter().map(|(_, k)| k.algorithm()).collect())
        .unwrap_or_default()
}

/// The same kind of key, whatever signature hash an RSA key is used with.
pub fn same_family(a: &Algorithm, b: &Algorithm) -> bool {
    matches!((a, b), (Algorithm::Rsa { .. }, Algorithm::Rsa { .. })) || a == b
}

/// Checks `offered` for `host:port` against `path`, learning it when the host is new.
pub fn verify(path: &Path, host: &str, port: u16, offered: &PublicKey) -> HostKeyVerdict {
    let recorded = match known_host_keys_path(host, port, path) {
        Ok(keys) => keys,
        Err(e) => {
            return HostKeyVerdict::Unusable {
                path: path.to_path_buf(),
                detail: e.to_string(),
            }
        }
    };
    if recorded
        .iter()
        .any(|(_, key)| key.key_data() == offered.key_data())
    {
        return HostKeyVerdict::Known;
    }
    if recorded.is_empty() {
        return match learn(path, host, port, offered) {
            Ok(()) => HostKeyVerdict::Learned {
                fingerprint: describe_key(offered),
            },
            Err(e) => HostKeyVerdict::Unusable {
                path: path.to_path_buf(),
                detail: e.to_string(),
            },
        };
    }
    // Entries exist but none matches: whether the algorithm is the same or not,
    // this is not the host we knew. Refuse rather than guess.
    HostKeyVerdict::Changed(Box::new(HostKeyMismatch {
        host_pattern: host_pattern(host, port),
        path: path.to_path_buf(),
        recorded: recorded
            .iter()
            .map(|(line, key)| (*line, describe_key(key)))
            .collect(),
        offered: describe_key(offered),
    }))
}

/// Records `key` for `host:port` beside what is recorded there, unless it is
/// already: for a key the host handed over a connection whose own host key
/// checked out (as OpenSSH's UpdateHostKeys does), before the host offers
/// that key alone. Returns whether a line was added.
pub fn record_alongside(
    path: &Path,
    host: &str,
    port: u16,
    key: &PublicKey,
) -> std::io::Result<bool> {
    let recorded = known_host_keys_path(host, port, path).map_err(std::io::Error::other)?;
    if recorded
        .iter()
        .any(|(_, known)| known.key_data() == key.key_data())
    {
        return Ok(false);
    }
    learn(path, host, port, key)?;
    Ok(true)
}

/// Appends `host_pattern key` as one line, creating ~/.ssh (0700) and the file (0600) if needed.
fn learn(path: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let existing = std::fs::read(path).unwrap_or_default();
    let key = key.to_openssh().map_err(std::io::Error::other)?;
    let separator = if existing.is_empty() || existing.ends_with(b"\n") {
        ""
    } else {
        "\n"
    };
    let line = format!("{separator}{} {key}\n", host_pattern(host, port));
    // One write of the whole line, so concurrent vpsup runs never interleave halves.
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?
        .write_all(line.as_bytes())
}

impl std::fmt::Display for HostKeyMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "HOST KEY CHANGED for {}: refusing to connect. Someone may be intercepting the connection, or the host was reinstalled.",
            self.host_pattern
        )?;
        for (line, key) in &self.recorded {
            writeln!(f, "  known:   {key}  ({}:{line})", self.path.display())?;
        }
        writeln!(f, "  offered: {}", self.offered)?;
        write!(
            f,
            "vpsup never replaces a recorded key. If the host really was reinstalled, remove the old entry with:\n  ssh-keygen -R '{}' -f {}",
            self.host_pattern,
            self.path.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    #[test]
    fn a_key_recorded_alongside_is_known_beside_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let (a, b) = (key(KEY_A), key(KEY_B));
        assert!(matches!(
            verify(&path, "h", 22, &a),
            HostKeyVerdict::Learned { .. }
        ));
        assert!(matches!(
            verify(&path, "h", 22, &b),
            HostKeyVerdict::Changed(_)
        ));
        assert!(record_alongside(&path, "h", 22, &b).unwrap());
        assert!(!record_alongside(&path, "h", 22, &b).unwrap(), "once");
        assert!(matches!(verify(&path, "h", 22, &b), HostKeyVerdict::Known));
        assert!(matches!(verify(&path, "h", 22, &a), HostKeyVerdict::Known));
        // Another port of the same host is its own entry.
        assert!(record_alongside(&path, "h", 2222, &b).unwrap());
        assert!(matches!(
            verify(&path, "h", 2222, &b),
            HostKeyVerdict::Known
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
    }

    #[test]
    fn new_host_is_learned_then_known_then_a_different_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known_hosts");
        let a = key(KEY_A);
        assert!(matches!(
            verify(&path, "10.0.0.1", 2222, &a),
            HostKeyVerdict::Learned { .. }
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("[10.0.0.1]:2222 ssh-ed25519 "), "{text}");
        assert!(matches!(
            verify(&path, "10.0.0.1", 2222, &a),
            HostKeyVerdict::Known
        ));
        match verify(&path, "10.0.0.1", 2222, &key(KEY_B)) {
            HostKeyVerdict::Changed(m) => {
                assert_eq!(m.recorded.len(), 1);
                assert_eq!(m.recorded[0].0, 1);
                let msg = m.to_string();
                assert!(msg.contains(&m.offered) && msg.contains(&m.recorded[0].1));
                assert!(msg.contains("ssh-keygen -R '[10.0.0.1]:2222'"));
            }
            other => panic!("expected Changed, got {other:?}"),
        }
        // The refused key was not written.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn recorded_algorithms_are_listed_for_the_host_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        verify(&path, "a.example", 22, &key(KEY_A));
        assert_eq!(
            recorded_algorithms(&path, "a.example", 22),
            [Algorithm::Ed25519]
        );
        assert!(recorded_algorithms(&path, "b.example", 22).is_empty());
        let rsa = Algorithm::Rsa { hash: None };
        assert!(same_family(
            &rsa,
            &Algorithm::Rsa {
                hash: Some(russh::keys::HashAlg::Sha256)
            }
        ));
        assert!(!same_family(&rsa, &Algorithm::Ed25519));
    }

    #[test]
    fn port_22_uses_the_bare_host_name() {
        assert_eq!(host_pattern("example.com", 22), "example.com");
        assert_eq!(host_pattern("example.com", 2200), "[example.com]:2200");
    }

    #[test]
    fn fingerprints_look_like_openssh() {
        let d = describe_key(&key(KEY_A));
        assert!(d.starts_with("ED25519 SHA256:"), "{d}");
    }
}
