//! The HTTP POST webhooks and ntfy are sent with: hyper over rustls (ring),
//! as the ACME client, trusting the public roots plus `[alerts] ca_file`.
//! http:// is only ever used for a loopback receiver (the config refuses it
//! elsewhere).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// How much of a refusing receiver's answer is reported.
const BODY_EXCERPT: usize = 300;

#[derive(Clone)]
pub struct HttpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    pub fn new(tls: rustls::ClientConfig) -> HttpClient {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        HttpClient {
            client: Client::builder(TokioExecutor::new()).build(https),
        }
    }

    /// POSTs `body` to `url`; a 2xx answer is success, anything else an error
    /// saying the status and the start of the receiver's answer.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<(), String> {
        let mut request = http::Request::post(url)
            .header("user-agent", concat!("vpsup/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let response = self.client.request(request).await.map_err(|e| chain(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Err(format!("HTTP {status}: {}", excerpt(&body)))
    }
}

/// The first few hundred characters of an answer, on one line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        return "(empty answer)".to_string();
    }
    let mut cut: String = line.chars().take(BODY_EXCERPT).collect();
    if cut.len() < line.len() {
        cut.push('…');
    }
    cut
}

/// An error and its causes, `a: b: c` (hyper's own says only "client error (Connect)").
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `scheme://host[:port]/…`: where a URL goes, without the path (a webhook's
/// path is its secret, an ntfy topic's name lets anyone read it).
pub fn redacted(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(uri) => {
            let origin = format!(
                "{}://{}",
                uri.scheme_str().unwrap_or("https"),
                uri.authority().map_or("", |a| a.as_str())
            );
            if uri.path().len() > 1 {
                format!("{origin}/…")
            } else {
                origin
            }
        }
        Err(_) => "(invalid URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_keeps_only_the_origin() {
        assert_eq!(
            redacted("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(redacted("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }

    #[test]
    fn excerpt_is_one_short_line() {
        assert_eq!(excerpt(b"  bad\n  token \n"), "bad token");
        assert_eq!(excerpt(b""), "(empty answer)");
        let long = excerpt("y".repeat(1000).as_bytes());
        assert_eq!(long.chars().count(), BODY_EXCERPT + 1);
    }
}
