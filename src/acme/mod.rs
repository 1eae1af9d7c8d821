//! Certificates through ACME: the client (`client`), when to renew (`policy`),
//! reading certificates (`certinfo`), the store on the host (`store`), the
//! HTTP-01 answer through the host's webroot (`http01`), DNS-01 through RFC 2136
//! (`dns01`) and the settings the host's own renewal timer reads (`host_settings`).

pub mod certinfo;
pub mod certs;
pub mod client;
pub mod dns01;
pub mod host_settings;
pub mod http01;
pub mod policy;
pub mod store;

use std::path::PathBuf;

/// Failures talking to the CA, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("the CA refused: rate limited ({detail}). vpsup does not retry in a loop: Let's Encrypt allows 5 duplicate certificates per week and 300 new orders per 3 hours; try again later, or use `directory = \"letsencrypt-staging\"` while testing")]
    RateLimited { detail: String },
    #[error("validation of {names} failed: {detail}. Check that each name resolves to this host and that port 80 reaches its nginx")]
    Validation { names: String, detail: String },
    #[error("cannot reach the ACME directory {directory}: {detail}. Check the URL (and, for a test CA, [acme] extra_root)")]
    Directory { directory: String, detail: String },
    #[error("[acme] extra_root {}: {detail}", path.display())]
    ExtraRoot { path: PathBuf, detail: String },
    #[error("the CA does not know the ACME account stored on the host ({0})")]
    AccountUnknown(String),
    #[error("the CA refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Other(String),
}

impl AcmeError {
    /// Maps instant-acme's errors, keeping the CA's own words (its problem
    /// document's detail) in every message.
    pub fn from_acme(directory: &str, error: instant_acme::Error) -> AcmeError {
        match error {
            instant_acme::Error::Api(problem) => {
                let kind = problem
                    .r#type
                    .as_deref()
                    .and_then(|t| t.rsplit(':').next())
                    .unwrap_or("")
                    .to_string();
                let mut detail = problem.detail.clone().unwrap_or_else(|| kind.clone());
                for sub in &problem.subproblems {
                    if let Some(d) = &sub.detail {
                        detail.push_str(&format!("; {d}"));
                    }
                }
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
                            detail: format!("{kind}: {detail}"),
                        }
                    }
                    _ => AcmeError::Refused(format!("{kind}: {detail}")),
                }
            }
            instant_acme::Error::Http(e) => AcmeError::Directory {
                directory: directory.to_string(),
                detail: e.to_string(),
            },
            other => AcmeError::Other(other.to_string()),
        }
    }
}
