//! Alerts: one [`Message`] per host and run, sent through every channel
//! `[alerts]` configures (webhook, ntfy, email). Each channel's failure is
//! reported by name and never stops the others.

pub mod email;
pub mod http;
pub mod message;
pub mod ntfy;
pub mod webhook;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use message::{Message, Problem, ProblemState};

use crate::config::AlertsConfig;

/// The longest one channel may take (email has its own, shorter, timeout).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// `[alerts]` names a file that cannot be used (bad input: exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error("[alerts] {key} {}: {cause}", path.display())]
    File {
        key: &'static str,
        path: PathBuf,
        cause: String,
    },
    #[error("no [alerts] in {}: add a webhook, ntfy or smtp_server (see the README's [alerts])", .0.display())]
    NotConfigured(PathBuf),
}

impl crate::exit::ExitStatus for AlertsError {
    fn exit_code(&self) -> u8 {
        crate::exit::BAD_INPUT
    }
}

/// A secret read from a file: never shown by `Debug`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

pub enum Channel {
    Webhook(webhook::Webhook),
    Ntfy(ntfy::Ntfy),
    Email(email::Email),
}

impl Channel {
    pub fn name(&self) -> &'static str {
        match self {
            Channel::Webhook(_) => "webhook",
            Channel::Ntfy(_) => "ntfy",
            Channel::Email(_) => "email",
        }
    }

    /// Where it goes, without secrets (a webhook's or topic's path).
    pub fn target(&self) -> String {
        match self {
            Channel::Webhook(w) => http::redacted(&w.url),
            Channel::Ntfy(n) => http::redacted(&n.url),
            Channel::Email(e) => format!("{}:{} to {}", e.host, e.port, e.to.join(", ")),
        }
    }

    /// Sends `message` through this channel, with its result.
    pub async fn deliver(&self, message: &Message) -> Delivery {
        let result = self.send(message).await;
        Delivery {
            channel: self.name(),
            target: self.target(),
            ok: result.is_ok(),
            error: result.err(),
        }
    }

    async fn send(&self, message: &Message) -> Result<(), String> {
        let sending = async {
            match self {
                Channel::Webhook(w) => w.send(message).await,
                Channel::Ntfy(n) => n.send(message).await,
                Channel::Email(e) => e.send(message).await,
            }
        };
        tokio::time::timeout(SEND_TIMEOUT, sending)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}s", SEND_TIMEOUT.as_secs())))
    }
}

/// What became of a message on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub channel: &'static str,
    pub target: String,
    pub ok: bool,
    /// The receiver's refusal (HTTP status and answer, SMTP reply) or why it
    /// could not be reached.
    pub error: Option<String>,
}

/// The names of the channels `config` configures, in `Channels`' order
/// (known without reading their files).
pub fn channel_names(config: &AlertsConfig) -> Vec<&'static str> {
    [
        (config.webhook.is_some(), "webhook"),
        (config.ntfy.is_some(), "ntfy"),
        (config.smtp_server.is_some(), "email"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

/// Every configured channel, ready to send.
pub struct Channels(pub Vec<Channel>);

/// One configured channel, or why its settings do not read.
pub type Built = (&'static str, Result<Channel, AlertsError>);

impl Channels {
    /// The channels `[alerts]` configures; files are relative to `project`
    /// (vpsup.toml's directory), or `~/` in the operator's home. The first
    /// channel whose files do not read is the error.
    pub fn from_config(config: &AlertsConfig, project: &Path) -> Result<Channels, AlertsError> {
        Channels::each(config, project)
            .into_iter()
            .map(|(_, built)| built)
            .collect::<Result<Vec<_>, _>>()
            .map(Channels)
    }

    /// Each channel built on its own, in `channel_names`' order: a file one
    /// channel cannot read (its token, the password) leaves the others able
    /// to send (the host's checks still alert through them).
    pub fn each(config: &AlertsConfig, project: &Path) -> Vec<Built> {
        let file = |path: &Path| crate::backup::host_settings::project_file(project, path);
        let read = |key: &'static str, path: &Path| -> Result<Vec<u8>, AlertsError> {
            let path = file(path);
            std::fs::read(&path).map_err(|e| AlertsError::File {
                key,
                path,
                cause: e.to_string(),
            })
        };
        let secret = |key: &'static str, path: &Path| -> Result<Secret, AlertsError> {
            let bytes = read(key, path)?;
            let text = String::from_utf8(bytes).map_err(|_| AlertsError::File {
                key,
                path: file(path),
                cause: "not UTF-8 text".into(),
            })?;
            let text = text.trim_end_matches(['\r', '\n']).to_string();
            if text.is_empty() {
                return Err(AlertsError::File {
                    key,
                    path: file(path),
                    cause: "the file is empty".into(),
                });
            }
            Ok(Secret(text))
        };
        let http = || -> Result<http::HttpClient, AlertsError> {
            let ca_path = config.ca_file.as_deref().map(file);
            let tls = crate::acme::client::tls_config(ca_path.as_deref()).map_err(|e| {
                AlertsError::File {
                    key: "ca_file",
                    path: ca_path.clone().unwrap_or_default(),
                    cause: match e {
                        crate::acme::AcmeError::ExtraRoot { detail, .. } => detail,
                        other => other.to_string(),
                    },
                }
            })?;
            Ok(http::HttpClient::new(tls))
        };
        let mut channels: Vec<Built> = vec![];
        if let Some(url) = &config.webhook {
            let built = http().map(|http| {
                Channel::Webhook(webhook::Webhook {
                    url: url.0.clone(),
                    format: config.webhook_format.unwrap_or_default(),
                    http,
                })
            });
            channels.push(("webhook", built));
        }
        if let Some(url) = &config.ntfy {
            let built = (|| {
                Ok(Channel::Ntfy(ntfy::Ntfy {
                    url: url.0.clone(),
                    token: config
                        .ntfy_token_file
                        .as_deref()
                        .map(|p| secret("ntfy_token_file", p))
                        .transpose()?,
                    http: http()?,
                }))
            })();
            channels.push(("ntfy", built));
        }
        if let (Some(server), Some(port)) = (&config.smtp_server, config.smtp_port()) {
            let built = (|| {
                let login = match (&config.smtp_user, &config.smtp_password_file) {
                    (Some(user), Some(file)) => {
                        Some((user.clone(), secret("smtp_password_file", file)?))
                    }
                    _ => None,
                };
                Ok(Channel::Email(email::Email {
                    host: server.host.clone(),
                    port,
                    tls: config.smtp_tls,
                    login,
                    from: config
                        .email_from
                        .as_ref()
                        .map(|e| e.0.clone())
                        .unwrap_or_default(),
                    to: config.email_to.iter().map(|e| e.0.clone()).collect(),
                    extra_roots: config
                        .ca_file
                        .as_deref()
                        .map(|p| read("ca_file", p))
                        .transpose()?,
                }))
            })();
            channels.push(("email", built));
        }
        channels
    }

    /// Sends `message` through every channel at once; one result each, in
    /// the channels' order.
    pub async fn send(&self, message: &Message) -> Vec<Delivery> {
        futures::future::join_all(self.0.iter().map(|channel| channel.deliver(message))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> AlertsConfig {
        crate::config::Config::parse(text, Path::new("vpsup.toml"))
            .unwrap()
            .alerts
            .unwrap()
    }

    #[test]
    fn a_missing_secret_file_names_its_key() {
        let c =
            config("[alerts]\nntfy = \"https://ntfy.sh/t\"\nntfy_token_file = \"nope/token\"\n");
        let err = Channels::from_config(&c, Path::new("/nonexistent"))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("[alerts] ntfy_token_file /nonexistent/nope/token: "),
            "{err}"
        );
    }

    #[test]
    fn channels_come_in_a_fixed_order_with_secret_free_targets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "hunter2\n").unwrap();
        let c = config(
            "[alerts]\nsmtp_server = \"mail.example.com\"\nsmtp_user = \"u\"\nsmtp_password_file = \"pw\"\nemail_from = \"a@example.com\"\nemail_to = [\"b@example.com\"]\nwebhook = \"https://hooks.example.com/secret-path\"\nntfy = \"https://ntfy.sh/private-topic\"\n",
        );
        let channels = Channels::from_config(&c, dir.path()).unwrap();
        let listed: Vec<(&str, String)> =
            channels.0.iter().map(|c| (c.name(), c.target())).collect();
        assert_eq!(
            listed,
            [
                ("webhook", "https://hooks.example.com/…".to_string()),
                ("ntfy", "https://ntfy.sh/…".to_string()),
                ("email", "mail.example.com:587 to b@example.com".to_string()),
            ]
        );
        let Channel::Email(email) = &channels.0[2] else {
            unreachable!()
        };
        let (_, password) = email.login.as_ref().unwrap();
        assert_eq!(password.expose(), "hunter2");
        assert!(!format!("{password:?}").contains("hunter2"));
    }
}
