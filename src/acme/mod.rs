//! Certificates through ACME: the client (`client`), when to renew (`policy`),
//! reading certificates (`certinfo`), the store on the host (`store`), the
//! HTTP-01 answer through the host's webroot (`http01`), DNS-01 through RFC 2136
//! (`dns01`), the settings the host's own renewal timer reads (`host_settings`)
//! and the lock that lets one run at a time renew them (`renewal_lock`).

pub mod certinfo;
pub mod certs;
pub mod client;
pub mod dns01;
pub mod host_settings;
pub mod http01;
pub mod policy;
pub mod renewal_lock;
pub mod settings;
pub mod store;

use std::path::PathBuf;

/// Failures talking to the CA, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("the CA refused: rate limited ({detail}). {}vpsup does not retry in a loop (Let's Encrypt allows 5 duplicate certificates per week and 300 new orders per 3 hours); use `directory = \"letsencrypt-staging\"` while testing", retry_when(detail))]
    RateLimited { detail: String },
    /// `kind` is the problem type's last word (`connection`, `dns`, ...).
    #[error("validation of {names} failed: {detail}. {}", validation_hint(kind))]
    Validation {
        names: String,
        kind: String,
        detail: String,
    },
    #[error("the ACME directory {directory} did not answer: {detail}. Check [acme] directory (\"letsencrypt\", \"letsencrypt-staging\" or the CA's full directory URL) and, for a test CA, [acme] extra_root")]
    Directory { directory: String, detail: String },
    /// The directory's HTTPS certificate did not verify: rustls' reason.
    #[error("TLS verification of the ACME directory {directory} failed ({reason}): {hint}")]
    DirectoryTls {
        directory: String,
        reason: String,
        hint: &'static str,
    },
    #[error("[acme] extra_root {}: {detail}", path.display())]
    ExtraRoot { path: PathBuf, detail: String },
    #[error("the CA does not know the ACME account stored on the host ({0})")]
    AccountUnknown(String),
    /// The newOrder request itself was refused (before any validation): about
    /// the account or what the order asks for, such as `replaces`.
    #[error("the CA refused the order: {kind}: {detail}")]
    OrderRefused { kind: String, detail: String },
    #[error("the CA refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Other(String),
}

impl AcmeError {
    /// Maps a failed newOrder request. No name has been validated yet, so an
    /// `unauthorized` here is about the account (Let's Encrypt answers a
    /// deactivated account so) or about `replaces`, never about the names.
    pub fn from_new_order(directory: &str, error: instant_acme::Error) -> AcmeError {
        if let instant_acme::Error::Api(problem) = &error {
            let kind = problem_kind(problem);
            if matches!(
                kind,
                "unauthorized" | "malformed" | "alreadyReplaced" | "conflict"
            ) {
                return AcmeError::OrderRefused {
                    kind: kind.to_string(),
                    detail: problem.detail.clone().unwrap_or_default(),
                };
            }
        }
        AcmeError::from_acme(directory, error)
    }

    /// The CA does not accept the stored account any more: deactivated, or
    /// unknown after the CA's data was reset.
    pub fn refuses_account(&self) -> bool {
        match self {
            AcmeError::AccountUnknown(_) => true,
            AcmeError::OrderRefused { kind, .. } => kind == "unauthorized",
            _ => false,
        }
    }

    /// A refused order that may be about its `replaces` (a certificate this
    /// account may not replace: a lost account's, or one already replaced).
    pub fn may_refuse_replaces(&self) -> bool {
        matches!(self, AcmeError::OrderRefused { .. })
    }

    /// Maps a failure to open or register the account, which starts by
    /// reading the directory: anything but the CA's own problem document means
    /// the URL does not lead to an ACME directory.
    pub fn from_directory(directory: &str, error: instant_acme::Error) -> AcmeError {
        match error {
            instant_acme::Error::Api(_) | instant_acme::Error::Http(_) => {
                AcmeError::from_acme(directory, error)
            }
            other => tls_failure(directory, &other).unwrap_or_else(|| AcmeError::Directory {
                directory: directory.to_string(),
                detail: format!(
                    "it did not answer with an ACME directory ({})",
                    chain(&other)
                ),
            }),
        }
    }

    /// Maps instant-acme's errors, keeping the CA's own words (its problem
    /// document's detail) in every message.
    pub fn from_acme(directory: &str, error: instant_acme::Error) -> AcmeError {
        match error {
            instant_acme::Error::Api(problem) => {
                let kind = problem_kind(&problem).to_string();
                let detail = problem_detail(&problem);
                match kind.as_str() {
                    "rateLimited" => AcmeError::RateLimited { detail },
                    "accountDoesNotExist" => AcmeError::AccountUnknown(detail),
                    "unauthorized" | "connection" | "dns" | "incorrectResponse" | "caa" | "tls" => {
                        let names: Vec<String> = problem
                            .subproblems
                            .iter()
                            .filter_map(|s| s.identifier.as_ref())
                            .map(|i| match i {
                                instant_acme::Identifier::Dns(name) => name.clone(),
                                other => format!("{other:?}"),
                            })
                            .collect();
                        AcmeError::Validation {
                            names: if names.is_empty() {
                                "the names".to_string()
                            } else {
                                names.join(", ")
                            },
                            kind,
                            detail,
                        }
                    }
                    _ => AcmeError::Refused(format!("{kind}: {detail}")),
                }
            }
            instant_acme::Error::Http(e) => AcmeError::Directory {
                directory: directory.to_string(),
                detail: e.to_string(),
            },
            other => {
                tls_failure(directory, &other).unwrap_or_else(|| AcmeError::Other(chain(&other)))
            }
        }
    }
}

/// `error` and every cause under it, as one line: "client error (Connect):
/// tcp connect error: Connection refused (os error 111)". An `io::Error`
/// hides the error it wraps from `source()`; it is looked into.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut said: Vec<String> = Vec::new();
    for cause in causes(error) {
        let text = cause.to_string();
        if said.last() != Some(&text) {
            said.push(text);
        }
    }
    said.join(": ")
}

fn causes<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> Vec<&'e (dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        out.push(cause);
        let wrapped = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        next = wrapped.or_else(|| cause.source());
    }
    out
}

/// The TLS verification failure somewhere in `error`'s causes, said with
/// what to do about it.
fn tls_failure(directory: &str, error: &(dyn std::error::Error + 'static)) -> Option<AcmeError> {
    let tls = causes(error)
        .into_iter()
        .find_map(|e| e.downcast_ref::<rustls::Error>())?;
    Some(AcmeError::DirectoryTls {
        directory: directory.to_string(),
        reason: tls.to_string(),
        hint: tls_hint(tls),
    })
}

fn tls_hint(error: &rustls::Error) -> &'static str {
    use rustls::CertificateError as Cert;
    let rustls::Error::InvalidCertificate(cert) = error else {
        return "the TLS handshake with the CA failed: check [acme] directory, and that nothing between here and the CA (a proxy) answers in its place";
    };
    match cert {
        // BadSignature: a root of the same name, another key.
        Cert::UnknownIssuer | Cert::BadSignature => "its certificate is not signed by a CA this machine trusts (the public roots, plus [acme] extra_root): for a test CA, set [acme] extra_root to the root that signs the directory's own HTTPS certificate (Pebble's listener certificate, not its issuing roots); else something between here and the CA (a proxy) answers in its place",
        Cert::NotValidForName | Cert::NotValidForNameContext { .. } => "its certificate is for another name: write [acme] directory with a name the certificate covers (a test CA's listener is usually https://localhost:PORT/dir, not an IP address)",
        Cert::Expired | Cert::ExpiredContext { .. } | Cert::NotValidYet | Cert::NotValidYetContext { .. } => "its certificate is outside its validity period: check this machine's clock; else the CA's certificate has expired",
        Cert::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => "the server presents a CA certificate (basicConstraints CA:TRUE) as its own: it must serve a certificate issued by a CA, and [acme] extra_root names that CA",
        _ => "its certificate is not one this machine accepts: check [acme] directory and [acme] extra_root",
    }
}

/// The problem type's last word (`urn:ietf:params:acme:error:unauthorized`).
fn problem_kind(problem: &instant_acme::Problem) -> &str {
    problem
        .r#type
        .as_deref()
        .and_then(|t| t.rsplit(':').next())
        .unwrap_or("")
}

/// The problem's detail and its subproblems' (the CA's own words).
fn problem_detail(problem: &instant_acme::Problem) -> String {
    let mut detail = problem
        .detail
        .clone()
        .unwrap_or_else(|| problem_kind(problem).to_string());
    for sub in &problem.subproblems {
        if let Some(d) = &sub.detail {
            detail.push_str(&format!("; {d}"));
        }
    }
    detail
}

/// What to do about a failed validation, by the CA's problem type.
fn validation_hint(kind: &str) -> &'static str {
    match kind {
        "connection" => "The CA could not connect to port 80 there: check that the name's A/AAAA record is this host's address, that port 80 is open in ufw and in the provider's firewall, and that nginx runs",
        "dns" => "The CA could not resolve the name: create its A/AAAA record (for a wildcard, check the DNS provider took the _acme-challenge TXT record) and wait until it is served",
        "unauthorized" | "incorrectResponse" => "The CA got another answer than this host's: the name points at another server, or a proxy or CDN in front of it answers /.well-known/acme-challenge/ itself",
        "caa" => "A CAA record of the domain forbids this CA: add one that allows it (for Let's Encrypt: 0 issue \"letsencrypt.org\")",
        _ => "Check that each name resolves to this host and that port 80 reaches its nginx",
    }
}

/// When the CA says to retry, from its detail (Let's Encrypt writes
/// `retry after 2026-11-23 04:00:00 UTC`), as the start of a sentence.
fn retry_when(detail: &str) -> String {
    let Some(at) = detail.to_ascii_lowercase().find("retry after ") else {
        return "Try again later; ".to_string();
    };
    let rest = &detail[at + "retry after ".len()..];
    // The timestamp holds colons itself: it ends at its zone, else at a comma.
    let end = rest
        .find(" UTC")
        .map(|i| i + " UTC".len())
        .or_else(|| rest.find([',', ';']))
        .unwrap_or(rest.len());
    format!("Try again after {}; ", rest[..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: &str, detail: &str) -> instant_acme::Error {
        instant_acme::Error::Api(
            serde_json::from_value(serde_json::json!({
                "type": format!("urn:ietf:params:acme:error:{kind}"),
                "detail": detail,
                "status": 403
            }))
            .unwrap(),
        )
    }

    /// What Let's Encrypt (Boulder) answers a newOrder with, and what vpsup
    /// does about it: drop `replaces`, and register a new account.
    #[test]
    fn refused_orders_are_told_apart() {
        let dir = "https://acme.test/dir";
        let deactivated = AcmeError::from_new_order(
            dir,
            problem(
                "unauthorized",
                "Account is not valid, has status \"deactivated\"",
            ),
        );
        assert!(deactivated.refuses_account() && deactivated.may_refuse_replaces());
        let foreign = AcmeError::from_new_order(
            dir,
            problem(
                "malformed",
                "cannot replace a certificate issued to another account",
            ),
        );
        assert!(!foreign.refuses_account() && foreign.may_refuse_replaces());
        let replaced = AcmeError::from_new_order(
            dir,
            problem(
                "alreadyReplaced",
                "the certificate has already been replaced",
            ),
        );
        assert!(!replaced.refuses_account() && replaced.may_refuse_replaces());
        let gone =
            AcmeError::from_new_order(dir, problem("accountDoesNotExist", "no such account"));
        assert!(gone.refuses_account() && !gone.may_refuse_replaces());
        // Neither: no retry (a rate limit is never retried in a loop).
        let limited = AcmeError::from_new_order(dir, problem("rateLimited", "too many"));
        assert!(matches!(limited, AcmeError::RateLimited { .. }));
        assert!(!limited.refuses_account() && !limited.may_refuse_replaces());
        // After validation, `unauthorized` is about the names, as before.
        assert!(matches!(
            AcmeError::from_acme(dir, problem("unauthorized", "bad token")),
            AcmeError::Validation { .. }
        ));
    }

    /// Let's Encrypt's own words for a duplicate-certificate limit: the
    /// message says when to retry, and that vpsup will not loop.
    #[test]
    fn a_rate_limit_says_when_to_retry() {
        let err = AcmeError::from_acme(
            "https://acme-v02.api.letsencrypt.org/directory",
            problem(
                "rateLimited",
                "too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2026-11-23 04:12:09 UTC: see https://letsencrypt.org/docs/rate-limits/#new-certificates-per-exact-set-of-hostnames",
            ),
        )
        .to_string();
        assert!(
            err.contains("Try again after 2026-11-23 04:12:09 UTC; vpsup does not retry in a loop"),
            "{err}"
        );
        let err = AcmeError::from_acme("https://ca.test/dir", problem("rateLimited", "slow down"))
            .to_string();
        assert!(err.contains("(slow down). Try again later; "), "{err}");
    }

    /// A validation failure keeps the CA's detail and says what to check for
    /// that kind of failure.
    #[test]
    fn a_failed_validation_explains_its_kind() {
        for (kind, detail, expected) in [
            (
                "connection",
                "203.0.113.9: Fetching http://app.example.com/.well-known/acme-challenge/x: Connection refused",
                "Connection refused. The CA could not connect to port 80",
            ),
            (
                "unauthorized",
                "Invalid response from http://app.example.com/.well-known/acme-challenge/x: 404",
                ": 404. The CA got another answer than this host's",
            ),
            (
                "caa",
                "CAA record for example.com prevents issuance",
                "prevents issuance. A CAA record of the domain forbids this CA: add one that allows it (for Let's Encrypt: 0 issue \"letsencrypt.org\")",
            ),
        ] {
            let err = AcmeError::from_acme("https://ca.test/dir", problem(kind, detail)).to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}
