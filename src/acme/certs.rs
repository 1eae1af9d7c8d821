//! Certificates on one host: reuse a valid one, issue a missing one, renew a
//! due one. `deploy` calls `ensure` for its sites; `renew-certs` (from the
//! operator's machine or the host's own timer) calls `renew_all`.

use std::path::PathBuf;

use std::sync::Arc;
use time::OffsetDateTime;

use tokio::sync::Mutex;

use super::certinfo::CertInfo;
use super::client::{AcmeClient, Solver};
use super::dns01::Rfc2136;
use super::http01::Http01;
use super::policy::{self, Decision};
use super::store::{cert_name, CertMeta, ChallengeKind, Store, StoredCert};
use super::AcmeError;
use crate::transport::Transport;

/// Where certificates come from and where they go on the host.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    pub directory: String,
    pub email: String,
    /// A PEM file with an extra root for the directory's own TLS.
    pub extra_root: Option<PathBuf>,
    pub profile: Option<String>,
    /// The certificate store on the host.
    pub store_dir: String,
    /// The ACME webroot nginx serves on :80.
    pub webroot: String,
    /// The DNS provider for DNS-01 (wildcards), when configured.
    pub dns: Option<Rfc2136>,
}

/// What happened to one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Valid and not due: kept (renewal starts at `renew_from`).
    Kept {
        renew_from: OffsetDateTime,
    },
    Issued,
    Renewed {
        why: String,
    },
    /// Check mode: would be issued or renewed.
    WouldRenew {
        why: String,
    },
    /// Not this run's to renew: app `app`'s settings on the host renew it
    /// (an operator's run of another project, which does not hold them).
    LeftTo {
        app: String,
    },
}

/// As the certificate tables print it: `ok (renews from 2026-12-30)`.
impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Kept { renew_from } => write!(f, "ok (renews from {})", renew_from.date()),
            Action::Issued => f.write_str("issued"),
            Action::Renewed { why } => write!(f, "renewed ({why})"),
            Action::WouldRenew { why } => write!(f, "would renew ({why})"),
            Action::LeftTo { app } => write!(f, "left to app {app}'s settings on the host"),
        }
    }
}

impl Action {
    pub fn changed(&self) -> bool {
        matches!(self, Action::Issued | Action::Renewed { .. })
    }
}

#[derive(Debug, Clone)]
pub struct CertOutcome {
    pub name: String,
    pub info: Option<CertInfo>,
    pub action: Action,
}

pub struct Certs<'a> {
    pub transport: &'a dyn Transport,
    pub settings: &'a AcmeSettings,
    /// The account, opened once (and registered again if the CA forgot it).
    client: Mutex<Option<Arc<AcmeClient>>>,
    /// What the user should know that is not an error (a new account).
    notes: std::sync::Mutex<Vec<String>>,
}

impl<'a> Certs<'a> {
    pub fn new(transport: &'a dyn Transport, settings: &'a AcmeSettings) -> Certs<'a> {
        Certs {
            transport,
            settings,
            client: Mutex::new(None),
            notes: Default::default(),
        }
    }

    /// Notes for the user, such as a new ACME account and why it was needed.
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn store(&self) -> Store<'a> {
        Store {
            transport: self.transport,
            dir: self.settings.store_dir.clone(),
        }
    }

    /// The ACME account, opened once (registered and stored on first use).
    /// `register`: a new account even though the store holds one (the CA no
    /// longer knows that one).
    async fn client(&self, register: bool) -> Result<Arc<AcmeClient>, AcmeError> {
        let mut slot = self.client.lock().await;
        if let (Some(client), false) = (slot.as_ref(), register) {
            return Ok(client.clone());
        }
        let store = self.store();
        let stored = if register {
            None
        } else {
            store
                .account(&self.settings.directory)
                .await
                .map_err(|e| AcmeError::Other(e.to_string()))?
        };
        let (client, created) = AcmeClient::open(
            &self.settings.directory,
            &self.settings.email,
            self.settings.extra_root.as_deref(),
            stored.as_deref(),
        )
        .await?;
        if let Some(credentials) = created {
            store
                .save_account(&self.settings.directory, &credentials)
                .await
                .map_err(|e| AcmeError::Other(format!("storing the new ACME account: {e}")))?;
            let note = self.why_new_account(register).await;
            self.notes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(note);
        }
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Says why a new ACME account was registered: a first use is routine; a
    /// store holding this CA's certificates but no account lost its key.
    async fn why_new_account(&self, refused: bool) -> String {
        let (directory, email) = (&self.settings.directory, &self.settings.email);
        let lost = !refused
            && self
                .store()
                .list()
                .await
                .is_ok_and(|certs| certs.iter().any(|c| c.meta.directory == *directory));
        if refused {
            format!("the CA no longer accepts the ACME account stored on the host (deactivated, or the CA's data was reset): registered a new one ({email}) at {directory} in its place")
        } else if lost {
            format!("the ACME account key for {directory} is missing from the host's store although certificates were issued through it (deleted or lost): registered a new one ({email}); the certificates issued to the old account stay valid, and renewals go through the new one")
        } else {
            format!("registered an ACME account ({email}) at {directory}, stored on the host")
        }
    }

    async fn has_account(&self) -> bool {
        self.client.lock().await.is_some()
            || matches!(
                self.store().account(&self.settings.directory).await,
                Ok(Some(_))
            )
    }

    /// A valid certificate for exactly `names`: the stored one unless it is
    /// missing, for other names, due, or `force`d.
    pub async fn ensure(
        &self,
        names: &[String],
        challenge: ChallengeKind,
        force: bool,
    ) -> Result<CertOutcome, AcmeError> {
        let name = cert_name(names);
        let stored = self
            .store()
            .list()
            .await
            .map_err(AcmeError::Other)?
            .into_iter()
            .find(|c| c.name == name);
        let meta = CertMeta {
            names: names.to_vec(),
            challenge,
            directory: self.settings.directory.clone(),
            profile: self.settings.profile.clone(),
        };
        match stored {
            Some(cert) if cert.meta.names == names => self.renew(&cert, force, false).await,
            _ => self.issue(&meta, None, Action::Issued).await,
        }
    }

    /// Renews every stored certificate that is due (or all, with `force`).
    /// Each result stands alone: one failure does not stop the others.
    pub async fn renew_all(
        &self,
        force: bool,
        check: bool,
    ) -> Result<Vec<Result<CertOutcome, (String, AcmeError)>>, AcmeError> {
        let stored = self.store().list().await.map_err(AcmeError::Other)?;
        Ok(self.renew_each(&stored, force, check).await)
    }

    /// Renews those of `stored` that are due (or all, with `force`), each on
    /// its own: one failure does not stop the others.
    pub async fn renew_each(
        &self,
        stored: impl IntoIterator<Item = &StoredCert>,
        force: bool,
        check: bool,
    ) -> Vec<Result<CertOutcome, (String, AcmeError)>> {
        let mut outcomes = Vec::new();
        for cert in stored {
            outcomes.push(
                self.renew(cert, force, check)
                    .await
                    .map_err(|e| (cert.name.clone(), e)),
            );
        }
        outcomes
    }

    async fn renew(
        &self,
        cert: &StoredCert,
        force: bool,
        check: bool,
    ) -> Result<CertOutcome, AcmeError> {
        let info = CertInfo::from_pem_chain(&cert.chain_pem)
            .map_err(|e| AcmeError::Other(format!("{}: fullchain.pem: {e}", cert.name)))?;
        // The CA's renewal window, when it offers one. Check mode never
        // registers an account (nothing may change). A CA that cannot be
        // reached or an unanswered renewal-info request falls back to the
        // lifetime rule: a certificate that is not due must not fail the
        // daily timer because the CA is down (a due one reports the error).
        let window = if check && !self.has_account().await {
            None
        } else {
            match self.client(false).await {
                Ok(client) if cert.meta.directory == client.directory => {
                    client.renewal_window(&info.leaf_der).await.unwrap_or(None)
                }
                _ => None,
            }
        };
        let decision = if force {
            Decision::Renew {
                why: "--force".to_string(),
            }
        } else {
            policy::decide(
                info.not_before,
                info.not_after,
                OffsetDateTime::now_utc(),
                window,
            )
        };
        match decision {
            Decision::Keep { renew_from } => Ok(CertOutcome {
                name: cert.name.clone(),
                info: Some(info),
                action: Action::Kept { renew_from },
            }),
            Decision::Renew { why } if check => Ok(CertOutcome {
                name: cert.name.clone(),
                info: Some(info),
                action: Action::WouldRenew { why },
            }),
            Decision::Renew { why } => {
                let mut meta = cert.meta.clone();
                meta.directory = self.settings.directory.clone();
                let replaces = window.map(|_| info.leaf_der.as_slice());
                self.issue(&meta, replaces, Action::Renewed { why }).await
            }
        }
    }

    async fn issue<'r>(
        &self,
        meta: &CertMeta,
        replaces: Option<&'r [u8]>,
        action: Action,
    ) -> Result<CertOutcome, AcmeError> {
        let solver: Box<dyn Solver + '_> = match meta.challenge {
            ChallengeKind::Http01 => Box::new(Http01 {
                transport: self.transport,
                webroot: self.settings.webroot.clone(),
            }),
            ChallengeKind::Dns01 => match &self.settings.dns {
                Some(provider) => Box::new(provider.clone()),
                None => {
                    return Err(AcmeError::Other(format!(
                        "{}: a wildcard needs DNS-01, which needs a DNS provider: configure [acme.dns] (RFC 2136 with a TSIG key)",
                        meta.names.join(", ")
                    )))
                }
            },
        };
        let order = |client: Arc<AcmeClient>, replaces: Option<&'r [u8]>| {
            let solver = solver.as_ref();
            async move {
                client
                    .issue(&meta.names, solver, replaces, meta.profile.as_deref())
                    .await
            }
        };
        // A refused order is tried again, at most twice: without `replaces`
        // (it may name a certificate this account may not replace), then on
        // a new account stored in place of the old one (the CA no longer
        // accepts it: deactivated, or its data reset).
        let (mut replaces, mut register) = (replaces, false);
        let issued = loop {
            match order(self.client(register).await?, replaces).await {
                Err(e) if replaces.is_some() && e.may_refuse_replaces() => replaces = None,
                Err(e) if !register && e.refuses_account() => (replaces, register) = (None, true),
                other => break other?,
            }
        };
        let info = CertInfo::from_pem_chain(&issued.chain_pem)
            .map_err(|e| AcmeError::Other(format!("the CA's certificate: {e}")))?;
        let name = self
            .store()
            .install(meta, &issued.key_pem, &issued.chain_pem)
            .await
            .map_err(|e| AcmeError::Other(format!("installing the certificate: {e}")))?;
        Ok(CertOutcome {
            name,
            info: Some(info),
            action,
        })
    }
}
