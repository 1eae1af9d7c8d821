//! The email channel: one plain-text mail through an SMTP server, over
//! STARTTLS or implicit TLS (rustls, the public roots plus `[alerts]
//! ca_file`), logged in with `smtp_user` and the password from its file.

use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::http::chain;
use super::message::Message;
use super::Secret;
use crate::config::SmtpTls;

/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Email {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// `smtp_user` and the password from `smtp_password_file`.
    pub login: Option<(String, Secret)>,
    pub from: String,
    pub to: Vec<String>,
    /// `[alerts] ca_file`'s PEM, trusted besides the public roots.
    pub extra_roots: Option<Vec<u8>>,
}

impl Email {
    /// The mail: the message's title as the subject, its text as the body.
    pub fn mail(&self, message: &Message) -> Result<lettre::Message, String> {
        let address = |a: &str| {
            a.parse::<Mailbox>()
                .map_err(|e| format!("invalid address {a:?}: {e}"))
        };
        let mut mail = lettre::Message::builder()
            .from(address(&self.from)?)
            .subject(message.title())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            mail = mail.to(address(to)?);
        }
        mail.body(message.text()).map_err(|e| e.to_string())
    }

    fn tls(&self) -> Result<Tls, String> {
        let wrap: fn(TlsParameters) -> Tls = match self.tls {
            SmtpTls::None => return Ok(Tls::None),
            SmtpTls::Starttls => Tls::Required,
            SmtpTls::Tls => Tls::Wrapper,
        };
        let mut parameters = TlsParameters::builder(self.host.clone())
            .certificate_store(CertificateStore::WebpkiRoots);
        if let Some(pem) = &self.extra_roots {
            let root = Certificate::from_pem(pem)
                .map_err(|e| format!("[alerts] ca_file: {}", chain(&e)))?;
            parameters = parameters.add_root_certificate(root);
        }
        Ok(wrap(parameters.build_rustls().map_err(|e| chain(&e))?))
    }

    /// Sends the mail; an error carries the server's reply (code and text).
    pub async fn send(&self, message: &Message) -> Result<(), String> {
        let mail = self.mail(message)?;
        let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .tls(self.tls()?)
            .timeout(Some(SMTP_TIMEOUT));
        if let Some((user, password)) = &self.login {
            transport = transport.credentials(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            ));
        }
        transport
            .build()
            .send(mail)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP {}:{}: {}", self.host, self.port, chain(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mail_has_the_title_as_subject_and_every_recipient() {
        let email = Email {
            host: "mail.example.com".into(),
            port: 587,
            tls: SmtpTls::Starttls,
            login: None,
            from: "vpsup@example.com".into(),
            to: vec!["ops@example.com".into(), "oncall@example.com".into()],
            extra_roots: None,
        };
        let mail = email.mail(&Message::test("web", Some("doctor"))).unwrap();
        let text = String::from_utf8(mail.formatted()).unwrap();
        assert!(text.contains("From: vpsup@example.com\r\n"), "{text}");
        assert!(
            text.contains("To: ops@example.com, oncall@example.com\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Subject: vpsup web (doctor): test message"),
            "{text}"
        );
        assert_eq!(mail.envelope().to().len(), 2);
    }
}
