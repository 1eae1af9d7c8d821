//! The last thing `vpsup deploy` does, from the operator's machine: for each
//! site, fetch it over HTTPS from the host (at its address, whatever DNS says
//! yet) with the certificate verified as a browser would (chain and name),
//! and see that plain HTTP answers too (the redirect to HTTPS).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{CertificateError, Error as TlsError};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::dns::socket_addr;
use super::report::SiteReport;
use crate::acme::certinfo::{short_issuer, CertInfo};
use crate::config::SiteConfig;

/// How long one check may take, connection to response.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a response is read: the status line and headers are all a
/// check looks at.
const MAX_HEAD: usize = 64 * 1024;

/// What one site served over HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteCheck {
    pub url: String,
    pub status: u16,
    /// The DNS names of the leaf certificate the site served.
    pub names: Vec<String>,
    /// Whole days until that certificate expires.
    pub days_left: i64,
    /// Its issuer's common name (`R11`).
    pub issuer: String,
}

/// Each of `sites` from here, as a visitor sees it, at the host's `address`
/// (whatever DNS says yet): its health path over HTTPS, and HTTP's redirect.
pub async fn check_sites(
    sites: &[SiteConfig],
    address: &str,
    https_port: u16,
    http_port: u16,
    extra_root: Option<&Path>,
) -> Vec<SiteReport> {
    let mut out = Vec::new();
    for site in sites {
        // Validated before the deploy began.
        let domain = &site.check_name().unwrap_or_else(|_| site.domain.0.clone());
        let url = format!("https://{domain}{}", site.health.0);
        let (Some(https), Some(http)) = (
            socket_addr(address, https_port).map(|a| SocketAddr::new(a.ip(), https_port)),
            socket_addr(address, http_port).map(|a| SocketAddr::new(a.ip(), http_port)),
        ) else {
            out.push(SiteReport {
                url,
                status: None,
                names: Vec::new(),
                days_left: None,
                redirect: None,
                error: Some(format!("{address} does not resolve from here")),
            });
            continue;
        };
        let checked = check_https(https, domain, &site.health.0, extra_root).await;
        let redirect = check_redirect(http, domain).await;
        let mut report = SiteReport {
            url,
            status: None,
            names: Vec::new(),
            days_left: None,
            redirect: redirect.as_ref().ok().and_then(|(_, l)| l.clone()),
            error: None,
        };
        match checked {
            Ok(c) => {
                report.status = Some(c.status);
                report.names = c.names;
                report.days_left = Some(c.days_left);
                if !(200..400).contains(&c.status) {
                    report.error = Some(format!("answers HTTP {}", c.status));
                }
            }
            Err(e) => report.error = Some(e),
        }
        out.push(report);
    }
    out
}

/// `GET {path}` over HTTPS from `addr`, with SNI and `Host:` set to `domain`,
/// the chain verified against webpki's roots (plus the PEM root(s) in
/// `extra_root`, for a test CA) and the certificate required to cover `domain`.
pub async fn check_https(
    addr: SocketAddr,
    domain: &str,
    path: &str,
    extra_root: Option<&Path>,
) -> Result<SiteCheck, String> {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let url = format!("https://{domain}{path}");
    let fail = |what: String| format!("{url} (via {addr}): {what}");
    let config = crate::acme::client::tls_config(extra_root).map_err(|e| fail(e.to_string()))?;
    let server_name = ServerName::try_from(domain.to_string())
        .map_err(|e| fail(format!("{domain:?} is not a valid server name: {e}")))?;
    let check = async {
        let tcp = connect(addr).await?;
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await
            .map_err(|e| handshake_error(e, domain))?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or("the server presented no certificate")?;
        let info = CertInfo::from_der(leaf.as_ref())
            .map_err(|e| format!("the served certificate: {e}"))?;
        let (status, _) = exchange(&mut tls, domain, &path).await?;
        Ok::<_, String>(SiteCheck {
            url: url.clone(),
            status,
            days_left: info.days_left(OffsetDateTime::now_utc()),
            issuer: short_issuer(&info.issuer),
            names: info.names,
        })
    };
    within_timeout(check).await.map_err(fail)
}

/// `GET /` over plain HTTP from `addr` with `Host: domain`: the status and the
/// `Location` header, if any (a site redirects HTTP to HTTPS).
pub async fn check_redirect(
    addr: SocketAddr,
    domain: &str,
) -> Result<(u16, Option<String>), String> {
    let check = async {
        let mut tcp = connect(addr).await?;
        exchange(&mut tcp, domain, "/").await
    };
    within_timeout(check)
        .await
        .map_err(|e| format!("http://{domain}/ (via {addr}): {e}"))
}

async fn within_timeout<T>(
    check: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(TIMEOUT, check)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", TIMEOUT.as_secs())))
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect: {e}"))
}

/// Says what failed in the TLS handshake, naming the domain when the
/// certificate does not cover it.
fn handshake_error(e: std::io::Error, domain: &str) -> String {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>())
    else {
        return format!("TLS handshake failed: {e}");
    };
    match tls {
        TlsError::InvalidCertificate(CertificateError::NotValidForNameContext {
            presented,
            ..
        }) => {
            let names: Vec<&str> = presented.iter().map(|n| bare_name(n)).collect();
            format!(
                "certificate not valid for {domain}: it is valid only for {}",
                if names.is_empty() {
                    "no name".to_string()
                } else {
                    names.join(", ")
                }
            )
        }
        TlsError::InvalidCertificate(CertificateError::NotValidForName) => {
            format!("certificate not valid for {domain}")
        }
        TlsError::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "certificate not trusted: its chain leads to no trusted root (unknown issuer)"
                .to_string()
        }
        TlsError::InvalidCertificate(ce) => format!("certificate rejected: {ce}"),
        other => format!("TLS handshake failed: {other}"),
    }
}

/// webpki reports the names a certificate presents as `DnsName("a.example")`:
/// the name alone.
fn bare_name(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .unwrap_or(presented)
}

/// Sends one `GET` and reads the response head: the status code and the
/// `Location` header.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    path: &str,
) -> Result<(u16, Option<String>), String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            // A server closing without TLS close_notify after a complete head.
            Err(_) if !head.is_empty() => break,
            Err(e) => return Err(format!("reading the response: {e}")),
        }
    }
    parse_head(&head)
}

/// The status code and `Location` of an HTTP/1.x response head.
fn parse_head(head: &[u8]) -> Result<(u16, Option<String>), String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    if status_line.is_empty() {
        return Err("the server closed the connection without answering".to_string());
    }
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split(' ').nth(1))
        .filter(|code| code.len() == 3)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP response: {:?}", truncate(status_line)))?;
    let location = lines
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("location"))
        .map(|(_, value)| value.trim().to_string());
    Ok((status, location))
}

fn truncate(line: &str) -> String {
    line.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_and_location() {
        assert_eq!(
            parse_head(b"HTTP/1.1 301 Moved Permanently\r\nServer: nginx\r\nlocation:  https://a.test/ \r\n\r\nbody"),
            Ok((301, Some("https://a.test/".to_string())))
        );
        assert_eq!(
            parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            Ok((200, None))
        );
        // A Location in the body is not the header.
        assert_eq!(
            parse_head(b"HTTP/1.1 204 No Content\r\n\r\nLocation: x\r\n"),
            Ok((204, None))
        );
        assert_eq!(parse_head(b"HTTP/1.1 404\r\n\r\n"), Ok((404, None)));
    }

    #[test]
    fn presented_names_are_shown_bare() {
        assert_eq!(
            bare_name("DnsName(\"app.example.test\")"),
            "app.example.test"
        );
        assert_eq!(bare_name("192.0.2.1"), "192.0.2.1");
    }

    #[test]
    fn rejects_what_is_not_an_http_response() {
        assert!(parse_head(b"").unwrap_err().contains("without answering"));
        assert!(parse_head(b"SSH-2.0-OpenSSH_9.6\r\n")
            .unwrap_err()
            .contains("not an HTTP response"));
        assert!(parse_head(b"HTTP/1.1 abc OK\r\n\r\n").is_err());
    }
}
