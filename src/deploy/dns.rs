//! The DNS preflight: before any ACME order (Let's Encrypt allows 5 failed
//! validations per name per hour), each site's domain is resolved through a
//! chosen resolver and compared with the host's address. A domain that does
//! not point at the host gets the exact record to create.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::DnsMultiplexer;

/// What the preflight found for one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Resolves to the host (among possibly other addresses of the host).
    PointsHere,
    /// No address at all.
    Missing { record: String },
    /// Addresses, none of them the host's.
    Elsewhere { found: Vec<IpAddr>, record: String },
}

impl Verdict {
    pub fn ok(&self) -> bool {
        *self == Verdict::PointsHere
    }

    /// One line for the operator, with what to do.
    pub fn describe(&self, domain: &str, resolver: &SocketAddr) -> String {
        match self {
            Verdict::PointsHere => format!("{domain} points at the host"),
            Verdict::Missing { record } => format!(
                "{domain} does not resolve (asked {resolver}); create this record at your DNS provider: {record}"
            ),
            Verdict::Elsewhere { found, record } => format!(
                "{domain} resolves to {} (asked {resolver}), not to this host; change the record to: {record}",
                found
                    .iter()
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The record that makes `domain` point at `host`: `A doctor.example.com. -> 203.0.113.42`.
pub fn record_for(domain: &str, host: IpAddr) -> String {
    let kind = if host.is_ipv4() { "A" } else { "AAAA" };
    format!("{kind} {}. -> {host}", domain.trim_end_matches('.'))
}

/// Compares what `domain` resolved to with the host's addresses (the first
/// is the one to publish).
pub fn judge(domain: &str, host: &[IpAddr], resolved: &[IpAddr]) -> Verdict {
    let record = host
        .first()
        .map(|ip| record_for(domain, *ip))
        .unwrap_or_else(|| format!("A {domain}. -> (this host's public address)"));
    if resolved.is_empty() {
        Verdict::Missing { record }
    } else if resolved.iter().any(|ip| host.contains(ip)) {
        Verdict::PointsHere
    } else {
        Verdict::Elsewhere {
            found: resolved.to_vec(),
            record,
        }
    }
}

/// The A and AAAA addresses of `domain`, asked of `resolver` over TCP (a
/// recursive resolver such as 1.1.1.1, or the zone's own server).
pub async fn resolve(resolver: SocketAddr, domain: &str) -> Result<Vec<IpAddr>, String> {
    let name = Name::from_ascii(format!("{}.", domain.trim_end_matches('.')))
        .map_err(|e| format!("{domain}: {e}"))?;
    let (connect, handle) = TcpClientStream::new(
        resolver,
        None,
        Some(Duration::from_secs(10)),
        TokioRuntimeProvider::new(),
    );
    let stream = connect
        .await
        .map_err(|e| format!("cannot reach the DNS resolver {resolver}: {e}"))?;
    let (mut client, background) =
        Client::<TokioRuntimeProvider>::from_sender(DnsMultiplexer::new(stream, handle));
    tokio::spawn(background);
    let mut found = Vec::new();
    for kind in [RecordType::A, RecordType::AAAA] {
        let response = client
            .query(name.clone(), DNSClass::IN, kind)
            .await
            .map_err(|e| format!("asking {resolver} for {domain}: {e}"))?;
        for record in &response.answers {
            match &record.data {
                RData::A(a) => found.push(IpAddr::V4(a.0)),
                RData::AAAA(a) => found.push(IpAddr::V6(a.0)),
                _ => {}
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn verdicts_and_the_record_to_create() {
        let host = [ip("203.0.113.42"), ip("2001:db8::42")];
        assert!(judge("doctor.example.com", &host, &[ip("203.0.113.42")]).ok());
        assert!(judge(
            "doctor.example.com",
            &host,
            &[ip("2001:db8::42"), ip("192.0.2.1")]
        )
        .ok());
        let missing = judge("doctor.example.com", &host, &[]);
        assert_eq!(
            missing,
            Verdict::Missing {
                record: "A doctor.example.com. -> 203.0.113.42".into()
            }
        );
        let resolver: SocketAddr = "1.1.1.1:53".parse().unwrap();
        assert_eq!(
            missing.describe("doctor.example.com", &resolver),
            "doctor.example.com does not resolve (asked 1.1.1.1:53); create this record at your DNS provider: A doctor.example.com. -> 203.0.113.42"
        );
        let elsewhere = judge("doctor.example.com", &host, &[ip("192.0.2.7")]);
        assert!(elsewhere
            .describe("doctor.example.com", &resolver)
            .contains("resolves to 192.0.2.7 (asked 1.1.1.1:53), not to this host; change the record to: A doctor.example.com. -> 203.0.113.42"));
        assert_eq!(
            record_for("x.example.com", ip("2001:db8::1")),
            "AAAA x.example.com. -> 2001:db8::1"
        );
    }
}
