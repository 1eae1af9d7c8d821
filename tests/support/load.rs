//! Visitors of a site over HTTPS, for the zero-downtime tests: threads that
//! each request one path back to back (a new TLS connection per request,
//! `Connection: close`, as a browser's first visit), recording every
//! answer; and a WebSocket client that records each message and when the
//! connection closed. Plain rustls on the crate's own TLS stack: no curl
//! process per request, so the load is steady.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

/// One request and what came back.
#[derive(Debug, Clone)]
pub struct Sample {
    pub path: String,
    pub at: Instant,
    pub ms: u64,
    /// The HTTP status, or why there was none.
    pub status: Result<u16, String>,
    pub body: String,
}

impl Sample {
    pub fn ok(&self) -> bool {
        self.status == Ok(200)
    }
}

/// The TLS client config trusting `root` (PEM), HTTP/1.1 only.
fn tls(root: &Path) -> Arc<rustls::ClientConfig> {
    let mut config = vpsup::acme::client::tls_config(Some(root)).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn connect(
    addr: SocketAddr,
    host: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    let name = ServerName::try_from(host.to_string()).map_err(std::io::Error::other)?;
    let conn = rustls::ClientConnection::new(tls.clone(), name).map_err(std::io::Error::other)?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// One `GET path` on a fresh connection.
pub fn get(addr: SocketAddr, host: &str, tls: &Arc<rustls::ClientConfig>, path: &str) -> Sample {
    let at = Instant::now();
    let answer = (|| -> std::io::Result<(u16, String)> {
        let mut stream = connect(addr, host, tls)?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        match stream.read_to_end(&mut raw) {
            Ok(_) => {}
            // A server that closed without close_notify still answered.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(e) => return Err(e),
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        Ok((status, body))
    })();
    let ms = at.elapsed().as_millis() as u64;
    match answer {
        Ok((status, body)) => Sample {
            path: path.to_string(),
            at,
            ms,
            status: Ok(status),
            body,
        },
        Err(e) => Sample {
            path: path.to_string(),
            at,
            ms,
            status: Err(e.to_string()),
            body: String::new(),
        },
    }
}

/// Threads requesting their paths until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Sample>>>,
}

impl Load {
    /// One thread per entry of `paths`, each pausing `pause` between requests.
    pub fn start(
        addr: SocketAddr,
        host: &str,
        root: &Path,
        paths: &[&str],
        pause: Duration,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tls = tls(root);
        let threads = paths
            .iter()
            .map(|path| {
                let (stop, tls, host, path) = (
                    stop.clone(),
                    tls.clone(),
                    host.to_string(),
                    path.to_string(),
                );
                std::thread::spawn(move || {
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        samples.push(get(addr, &host, &tls, &path));
                        std::thread::sleep(pause);
                    }
                    samples
                })
            })
            .collect();
        Load { stop, threads }
    }

    pub fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut samples: Vec<Sample> = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        samples.sort_by_key(|s| s.at);
        LoadReport { samples }
    }
}

/// Every answer a load got.
pub struct LoadReport {
    pub samples: Vec<Sample>,
}

impl LoadReport {
    pub fn failed(&self) -> Vec<&Sample> {
        self.samples.iter().filter(|s| !s.ok()).collect()
    }

    /// The 99th percentile of the answers' times, in ms.
    pub fn p99_ms(&self) -> u64 {
        let mut ms: Vec<u64> = self.samples.iter().map(|s| s.ms).collect();
        ms.sort_unstable();
        ms.get((ms.len() * 99 / 100).min(ms.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }

    /// `sent, failed, p99` for a log line.
    pub fn summary(&self) -> String {
        format!(
            "{} requests, {} failed, p99 {} ms",
            self.samples.len(),
            self.failed().len(),
            self.p99_ms()
        )
    }

    /// Whether some answer to `path` held `text`.
    pub fn saw(&self, path: &str, text: &str) -> bool {
        self.samples
            .iter()
            .any(|s| s.path == path && s.ok() && s.body.contains(text))
    }
}

/// A WebSocket connection's messages and its end.
pub struct WebSocketLog {
    /// Each text message and when it came.
    pub messages: Vec<(Instant, String)>,
    /// When the server closed it.
    pub closed: Instant,
}

/// Opens a WebSocket at `path` and reads text messages (unmasked frames of
/// under 126 bytes: what the test backend sends) until the server closes
/// the connection; in a thread. `Err` in the thread: the handshake failed.
pub fn websocket(
    addr: SocketAddr,
    host: &str,
    root: &Path,
    path: &str,
) -> JoinHandle<Result<WebSocketLog, String>> {
    let (tls, host, path) = (tls(root), host.to_string(), path.to_string());
    std::thread::spawn(move || {
        let mut stream = connect(addr, &host, &tls).map_err(|e| e.to_string())?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).map_err(|e| e.to_string())?;
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        // The accept value of RFC 6455's own example key.
        if !head.starts_with("HTTP/1.1 101") || !head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") {
            return Err(format!("no WebSocket handshake: {head}"));
        }
        let mut messages = Vec::new();
        loop {
            let mut header = [0u8; 2];
            if stream.read_exact(&mut header).is_err() {
                break;
            }
            let mut payload = vec![0u8; usize::from(header[1] & 0x7f)];
            if stream.read_exact(&mut payload).is_err() {
                break;
            }
            if header[0] & 0x0f == 0x8 {
                break; // a close frame
            }
            messages.push((
                Instant::now(),
                String::from_utf8_lossy(&payload).into_owned(),
            ));
        }
        Ok(WebSocketLog {
            messages,
            closed: Instant::now(),
        })
    })
}
