//! The algorithms the hardened sshd offers, chosen per OpenSSH release: the
//! drop-in (templates/sshd_hardening.conf.tera) lists what
//! `facts.sshd_algorithms` says for the host's sshd.
//!
//! The yardstick is ssh-audit (PyPI `ssh-audit`, 3.9): no failure and no
//! warning. It fails ECDSA host keys (NIST curves) and warns about every key
//! exchange without a post-quantum part, so the post-quantum hybrids come
//! first and the only host key is Ed25519 (every client of the last ten years
//! has it: RSA-SHA2 is not needed). One classical exchange stays below
//! OpenSSH 9.9, and it is vpsup's own need: its SSH client (russh) speaks
//! `mlkem768x25519-sha256` but not `sntrup761x25519-sha512`, the only hybrid
//! those releases have, so without `curve25519-sha256` vpsup could not log in
//! to a host it hardened (ssh-audit warns about that one, and only that one).
//! A test checks each choice against russh's own lists.

use serde::Serialize;

/// Lists for sshd's `KexAlgorithms`, `Ciphers`, `MACs` and
/// `HostKeyAlgorithms`, most preferred first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshdAlgorithms {
    pub kex: Vec<&'static str>,
    pub ciphers: Vec<&'static str>,
    pub macs: Vec<&'static str>,
    pub host_key_algorithms: Vec<&'static str>,
}

/// Hybrid key exchanges with a post-quantum part, and the OpenSSH release
/// that brought each: ML-KEM and the plain name of sntrup761 came with 9.9,
/// sntrup761 under its `@openssh.com` name with 8.5.
const POST_QUANTUM_KEX: &[(&str, &[u32])] = &[
    ("mlkem768x25519-sha256", &[9, 9]),
    ("sntrup761x25519-sha512", &[9, 9]),
    ("sntrup761x25519-sha512@openssh.com", &[8, 5]),
];

/// The classical exchange vpsup's client needs where sshd has no ML-KEM.
const CLASSICAL_KEX: &str = "curve25519-sha256";

/// AEAD ciphers first, then CTR (with the encrypt-then-MAC MACs below):
/// nothing here draws a warning from ssh-audit, and all are in OpenSSH
/// since 6.5.
const CIPHERS: &[&str] = &[
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
];
const MACS: &[&str] = &[
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "umac-128-etm@openssh.com",
];
const HOST_KEY_ALGORITHMS: &[&str] = &["ssh-ed25519"];

impl SshdAlgorithms {
    /// What sshd of OpenSSH `release` (`9.2`, `10.0`: see
    /// `HostFacts::sshd_version`) offers; `None` (unknown) is taken as a
    /// release before 8.5 and gets no hybrid (`sshd -t` would refuse a name
    /// it does not know, and init restores the previous drop-in).
    pub fn for_openssh(release: Option<&str>) -> SshdAlgorithms {
        let has = |since: &[u32]| release.is_some_and(|r| crate::facts::version_at_least(r, since));
        let mut kex: Vec<&'static str> = POST_QUANTUM_KEX
            .iter()
            .filter(|(_, since)| has(since))
            .map(|(name, _)| *name)
            .collect();
        if !kex.contains(&"mlkem768x25519-sha256") {
            kex.push(CLASSICAL_KEX);
        }
        SshdAlgorithms {
            kex,
            ciphers: CIPHERS.to_vec(),
            macs: MACS.to_vec(),
            host_key_algorithms: HOST_KEY_ALGORITHMS.to_vec(),
        }
    }
}

/// Whether key exchange `name` has a post-quantum part.
pub fn is_post_quantum(name: &str) -> bool {
    POST_QUANTUM_KEX.iter().any(|(pq, _)| *pq == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLASSICAL_FALLBACK: &[&str] =
        &["sntrup761x25519-sha512@openssh.com", "curve25519-sha256"];

    /// The four supported systems, by the OpenSSH each ships (see
    /// `facts::shipped`).
    #[test]
    fn each_distributions_openssh_gets_its_hybrids_first() {
        let pq_only: &[&str] = &[
            "mlkem768x25519-sha256",
            "sntrup761x25519-sha512",
            "sntrup761x25519-sha512@openssh.com",
        ];
        for (system, release, kex) in [
            ("Ubuntu 22.04", "8.9", CLASSICAL_FALLBACK),
            ("Ubuntu 24.04", "9.6", CLASSICAL_FALLBACK),
            ("Debian 12", "9.2", CLASSICAL_FALLBACK),
            ("Debian 13", "10.0", pq_only),
        ] {
            let chosen = SshdAlgorithms::for_openssh(Some(release));
            assert_eq!(chosen.kex, kex, "{system} (OpenSSH {release})");
            assert_eq!(chosen.host_key_algorithms, ["ssh-ed25519"]);
        }
    }

    #[test]
    fn releases_compare_by_number() {
        let kex = |r: &str| SshdAlgorithms::for_openssh(Some(r)).kex;
        assert_eq!(kex("9.9")[0], "mlkem768x25519-sha256");
        assert_eq!(kex("10.2")[0], "mlkem768x25519-sha256");
        assert_eq!(kex("9.8"), CLASSICAL_FALLBACK);
        assert_eq!(kex("8.5"), CLASSICAL_FALLBACK);
        assert_eq!(kex("8.4"), ["curve25519-sha256"]);
        assert_eq!(SshdAlgorithms::for_openssh(None).kex, ["curve25519-sha256"]);
    }

    /// What ssh-audit warns about: classical key exchanges only where
    /// vpsup's client needs one, and after every hybrid.
    #[test]
    fn hybrids_come_first_and_classical_only_without_ml_kem() {
        for release in ["8.5", "8.9", "9.2", "9.6", "9.9", "10.0"] {
            let kex = SshdAlgorithms::for_openssh(Some(release)).kex;
            let classical: Vec<&str> = kex
                .iter()
                .copied()
                .filter(|k| !is_post_quantum(k))
                .collect();
            let first_classical = kex.iter().position(|k| !is_post_quantum(k));
            assert!(
                first_classical.is_none_or(|i| kex[i..].iter().all(|k| !is_post_quantum(k))),
                "{release}: {kex:?}"
            );
            let with_ml_kem = crate::facts::version_at_least(release, &[9, 9]);
            assert_eq!(classical.is_empty(), with_ml_kem, "{release}: {kex:?}");
        }
    }

    /// vpsup logs in with russh: every choice must leave it one algorithm
    /// of each kind, or init would lock itself out (and the revert timer
    /// would undo the hardening every time).
    #[test]
    fn vpsups_own_client_can_still_log_in() {
        let client = russh::Preferred::default();
        let kex: Vec<&str> = client.kex.iter().map(|n| n.as_ref()).collect();
        let ciphers: Vec<&str> = client.cipher.iter().map(|n| n.as_ref()).collect();
        let macs: Vec<&str> = client.mac.iter().map(|n| n.as_ref()).collect();
        let keys: Vec<String> = client.key.iter().map(|k| k.to_string()).collect();
        for release in [None, Some("8.9"), Some("9.2"), Some("9.6"), Some("10.0")] {
            let chosen = SshdAlgorithms::for_openssh(release);
            assert!(
                chosen.kex.iter().any(|k| kex.contains(k)),
                "{release:?} kex"
            );
            assert!(
                chosen.ciphers.iter().any(|c| ciphers.contains(c)),
                "{release:?} ciphers"
            );
            assert!(
                chosen.macs.iter().any(|m| macs.contains(m)),
                "{release:?} macs"
            );
            assert!(
                chosen
                    .host_key_algorithms
                    .iter()
                    .any(|h| keys.iter().any(|k| k == h)),
                "{release:?} host keys: {keys:?}"
            );
        }
    }
}
