//! The ACME client (instant-acme): an account per directory, orders, and the
//! challenges. vpsup is its own ACME client, running where vpsup runs (the
//! operator's machine, or the host itself for the renewal timer); challenges
//! are answered on the host through the transport.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, CertificateIdentifier,
    ChallengeType, HttpClient, Identifier, NewAccount, NewOrder, Order, OrderStatus, Problem,
    RetryPolicy,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::policy::Window;
use super::AcmeError;

/// Answers one kind of challenge (HTTP-01 through the host's webroot, DNS-01
/// through a DNS provider).
#[async_trait]
pub trait Solver: Send + Sync {
    fn kind(&self) -> ChallengeType;
    /// Makes `key_authorization` visible for `identifier` (for DNS-01 the TXT
    /// value is `dns_value`).
    async fn present(
        &self,
        identifier: &str,
        token: &str,
        key_authorization: &str,
        dns_value: &str,
    ) -> Result<(), String>;
    /// Removes what `present` put up. Called for every presented challenge,
    /// whether the order succeeded or not.
    async fn cleanup(&self, identifier: &str, token: &str, dns_value: &str) -> Result<(), String>;
}

/// A certificate just issued: the private key (PKCS#8 PEM) and the chain
/// (leaf first).
pub struct Issued {
    pub key_pem: String,
    pub chain_pem: String,
}

pub struct AcmeClient {
    account: Account,
    pub directory: String,
}

/// A TLS client configuration trusting webpki's roots plus, optionally, the
/// PEM root(s) in `extra_root` (a test CA such as Pebble's). ring only. Used
/// for the ACME directory and for `deploy`'s final HTTPS check.
pub fn tls_config(extra_root: Option<&Path>) -> Result<rustls::ClientConfig, AcmeError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_root {
        let bad = |e: String| AcmeError::ExtraRoot {
            path: path.to_path_buf(),
            detail: e,
        };
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?;
        let mut added = 0;
        for cert in certs {
            roots
                .add(cert.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("no certificate in it".to_string()));
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| AcmeError::Other(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// The HTTP client for the directory, over [`tls_config`].
fn http_client(extra_root: Option<&Path>) -> Result<Box<dyn HttpClient>, AcmeError> {
    let tls = tls_config(extra_root)?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client: hyper_util::client::legacy::Client<_, BodyWrapper<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    Ok(Box::new(client))
}

impl AcmeClient {
    /// Opens the account whose credentials the store holds, or registers a new
    /// one (returned as JSON, for the caller to store before anything else).
    pub async fn open(
        directory: &str,
        email: &str,
        extra_root: Option<&Path>,
        stored: Option<&str>,
    ) -> Result<(AcmeClient, Option<String>), AcmeError> {
        let builder =
            || -> Result<_, AcmeError> { Ok(Account::builder_with_http(http_client(extra_root)?)) };
        if let Some(json) = stored {
            let credentials: AccountCredentials = serde_json::from_str(json).map_err(|e| {
                AcmeError::Other(format!("the stored ACME account is unreadable ({e})"))
            })?;
            let account = builder()?
                .from_credentials(credentials)
                .await
                .map_err(|e| AcmeError::from_directory(directory, e))?;
            return Ok((
                AcmeClient {
                    account,
                    directory: directory.to_string(),
                },
                None,
            ));
        }
        let contact = format!("mailto:{email}");
        let (account, credentials) = builder()?
            .create(
                &NewAccount {
                    contact: &[&contact],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                directory.to_string(),
                None,
            )
            .await
            .map_err(|e| AcmeError::from_directory(directory, e))?;
        let json = serde_json::to_string_pretty(&credentials)
            .map_err(|e| AcmeError::Other(e.to_string()))?;
        Ok((
            AcmeClient {
                account,
                directory: directory.to_string(),
            },
            Some(json),
        ))
    }

    /// The CA's suggested renewal window for a certificate (ARI), when the CA
    /// offers renewal information.
    pub async fn renewal_window(&self, leaf_der: &[u8]) -> Result<Option<Window>, AcmeError> {
        let der = CertificateDer::from(leaf_der.to_vec());
        let Ok(id) = CertificateIdentifier::try_from(&der) else {
            return Ok(None);
        };
        match self.account.renewal_info(&id).await {
            Ok((info, _)) => Ok(Some(Window {
                start: info.suggested_window.start,
                end: info.suggested_window.end,
            })),
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(AcmeError::from_acme(&self.directory, e)),
        }
    }

    /// Why an order did not become ready: the CA's own error on each failed
    /// challenge (the order's status alone says only "invalid"), else the
    /// order's error.
    async fn why_not_ready(
        &self,
        order: &mut Order,
        kind: ChallengeType,
        status: OrderStatus,
        names: &[String],
    ) -> AcmeError {
        let mut failed: Vec<(String, Option<Problem>)> = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(Ok(authorization)) = authorizations.next().await {
            if authorization.status == AuthorizationStatus::Valid {
                continue;
            }
            let problem = authorization
                .challenges
                .iter()
                .filter(|c| c.r#type == kind)
                .find_map(|c| c.error.clone());
            failed.push((authorization.identifier().to_string(), problem));
        }
        let problems: Vec<&Problem> = failed.iter().filter_map(|(_, p)| p.as_ref()).collect();
        if let Some(first) = problems.first() {
            return AcmeError::Validation {
                names: failed
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                kind: super::problem_kind(first).to_string(),
                detail: problems
                    .iter()
                    .map(|p| super::problem_detail(p))
                    .collect::<Vec<_>>()
                    .join("; "),
            };
        }
        match order.state().error.clone() {
            Some(problem) => match AcmeError::from_acme(&self.directory, problem.into()) {
                AcmeError::Validation { kind, detail, .. } => AcmeError::Validation {
                    names: names.join(", "),
                    kind,
                    detail,
                },
                other => other,
            },
            None => AcmeError::Validation {
                names: names.join(", "),
                kind: String::new(),
                detail: format!("the order ended {status:?} and the CA gave no reason"),
            },
        }
    }

    /// Orders a certificate for `names` (a new ECDSA P-256 key), answering
    /// every pending authorization with `solver`. `replaces` is the leaf being
    /// renewed; give it only when the CA offers renewal information (see
    /// `renewal_window`), as ACME rejects it otherwise.
    pub async fn issue(
        &self,
        names: &[String],
        solver: &dyn Solver,
        replaces: Option<&[u8]>,
        profile: Option<&str>,
    ) -> Result<Issued, AcmeError> {
        let identifiers: Vec<Identifier> =
            names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut new_order = NewOrder::new(&identifiers);
        let replaced = replaces.and_then(|der| {
            CertificateIdentifier::try_from(&CertificateDer::from(der.to_vec())).ok()
        });
        if let Some(id) = replaced {
            new_order = new_order.replaces(id);
        }
        if let Some(profile) = profile {
            let offered: Vec<String> = self
                .account
                .profiles()
                .map(|p| p.name.to_string())
                .collect();
            if !offered.iter().any(|p| p == profile) {
                return Err(AcmeError::Other(format!(
                    "the CA offers no profile {profile:?} (it offers: {})",
                    if offered.is_empty() {
                        "none".to_string()
                    } else {
                        offered.join(", ")
                    }
                )));
            }
            new_order = new_order.profile(profile);
        }
        let mut order = self
            .account
            .new_order(&new_order)
            .await
            .map_err(|e| AcmeError::from_new_order(&self.directory, e))?;

        // Present every challenge, then tell the CA; clean up whatever happens.
        let mut presented: Vec<(String, String, String)> = Vec::new();
        let outcome = async {
            let mut authorizations = order.authorizations();
            while let Some(authorization) = authorizations.next().await {
                let mut authorization =
                    authorization.map_err(|e| AcmeError::from_acme(&self.directory, e))?;
                match authorization.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => {
                        return Err(AcmeError::Other(format!(
                            "the CA reports the authorization for {} as {other:?}",
                            authorization.identifier()
                        )))
                    }
                }
                let mut challenge = authorization.challenge(solver.kind()).ok_or_else(|| {
                    AcmeError::Other(format!(
                        "the CA offers no {:?} challenge for {}",
                        solver.kind(),
                        names.join(", ")
                    ))
                })?;
                let identifier = challenge.identifier().to_string();
                let key_authorization = challenge.key_authorization();
                let token = challenge.token.clone();
                let dns_value = key_authorization.dns_value();
                solver
                    .present(&identifier, &token, key_authorization.as_str(), &dns_value)
                    .await
                    .map_err(AcmeError::Other)?;
                presented.push((identifier, token, dns_value));
                challenge
                    .set_ready()
                    .await
                    .map_err(|e| AcmeError::from_acme(&self.directory, e))?;
            }
            let retry = RetryPolicy::new()
                .initial_delay(Duration::from_millis(500))
                .backoff(1.5)
                .timeout(Duration::from_secs(120));
            match order.poll_ready(&retry).await {
                Ok(OrderStatus::Ready) => Ok(()),
                Ok(status) => Err(self
                    .why_not_ready(&mut order, solver.kind(), status, names)
                    .await),
                // The order itself carries an error: it failed.
                Err(instant_acme::Error::Api(_)) if order.state().error.is_some() => {
                    let status = order.state().status;
                    Err(self
                        .why_not_ready(&mut order, solver.kind(), status, names)
                        .await)
                }
                Err(e) => Err(AcmeError::from_acme(&self.directory, e)),
            }
        }
        .await;
        for (identifier, token, dns_value) in &presented {
            // A leftover token is harmless; a failed cleanup must not hide the outcome.
            let _ = solver.cleanup(identifier, token, dns_value).await;
        }
        outcome?;

        let (csr, key_pem) = csr_for(names)?;
        order
            .finalize_csr(&csr)
            .await
            .map_err(|e| AcmeError::from_acme(&self.directory, e))?;
        let retry = RetryPolicy::new().timeout(Duration::from_secs(120));
        let chain_pem = order
            .poll_certificate(&retry)
            .await
            .map_err(|e| AcmeError::from_acme(&self.directory, e))?;
        Ok(Issued { key_pem, chain_pem })
    }
}

/// A new ECDSA P-256 key and a CSR for `names` (subjectAltName only).
fn csr_for(names: &[String]) -> Result<(Vec<u8>, String), AcmeError> {
    let crypto = |e: rcgen::Error| AcmeError::Other(format!("making the key and CSR: {e}"));
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(crypto)?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(crypto)?;
    Ok((csr.der().to_vec(), key.serialize_pem()))
}
