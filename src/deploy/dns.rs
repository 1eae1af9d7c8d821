//! The DNS preflight: before any ACME order (Let's Encrypt allows 5 failed
//! validations per name per hour), each site's domain is resolved through a
//! chosen resolver and compared with the host's address. A domain that does
//! not point at the host gets the exact record to create, or, with
//! `[app] dns = "update"`, the record is set through `[acme.dns]`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::DnsMultiplexer;

use crate::acme::dns01::Rfc2136;

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

/// Why the preflight stopped a deploy (before anything changed).
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("[app] dns_resolver {0:?} does not resolve")]
    Resolver(String),
    #[error("DNS preflight for {domain}: {error}")]
    Lookup { domain: String, error: String },
    /// Setting a record through `[acme.dns]` failed.
    #[error("{0}")]
    Update(String),
    /// Domains that do not point at the host, each with what to do.
    #[error("DNS preflight: {}. Nothing was changed and no certificate was ordered (Let's Encrypt allows 5 failed validations per name per hour)", .0.join("; "))]
    NotHere(Vec<String>),
}

/// `host[:port]` to one socket address.
pub fn socket_addr(text: &str, default_port: u16) -> Option<SocketAddr> {
    let with_port = if text.parse::<IpAddr>().is_ok() || !text.contains(':') {
        format!("{text}:{default_port}")
    } else {
        text.to_string()
    };
    with_port.to_socket_addrs().ok()?.next()
}

/// The host's addresses as the world should see them: `address` (its
/// address in vpsup.toml) when that is an IP, else what `resolver` says it
/// is; then its public IPv4 from the facts.
pub async fn host_addresses(
    address: &str,
    public_ipv4: Option<&str>,
    resolver: SocketAddr,
) -> Vec<IpAddr> {
    let mut addresses = Vec::new();
    match address.parse::<IpAddr>() {
        Ok(ip) => addresses.push(ip),
        Err(_) => addresses.extend(resolve(resolver, address).await.unwrap_or_default()),
    }
    if let Some(ip) = public_ipv4.and_then(|a| a.split('/').next()?.parse().ok()) {
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    addresses
}

/// Asks `resolver` for a record just set until it points at the host (a
/// recursive resolver may still hold the old answer): at most a minute.
pub async fn resolves_here(resolver: SocketAddr, domain: &str, host: &[IpAddr]) -> bool {
    for _ in 0..30 {
        if let Ok(resolved) = resolve(resolver, domain).await {
            if judge(domain, host, &resolved).ok() {
                return true;
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    false
}

/// One host's preflight.
pub struct Preflight<'a> {
    pub resolver: SocketAddr,
    /// The host's addresses; the first is the one a record is set to.
    pub host: &'a [IpAddr],
    /// Sets a record that does not point at the host (`[app] dns = "update"`).
    pub update: Option<&'a Rfc2136>,
    /// `--check`: say which record would be set, set none.
    pub check: bool,
}

impl Preflight<'_> {
    /// Checks each of `domains`: records set go to `set`, records that
    /// would be set (`--check`) to `would_set`; an error for any domain that
    /// does not point at the host in the end.
    pub async fn check(
        &self,
        domains: impl IntoIterator<Item = &str>,
        would_set: &mut Vec<String>,
        set: &mut Vec<String>,
    ) -> Result<(), PreflightError> {
        let resolver = self.resolver;
        let mut problems = Vec::new();
        for domain in domains {
            let resolved =
                resolve(resolver, domain)
                    .await
                    .map_err(|error| PreflightError::Lookup {
                        domain: domain.to_string(),
                        error,
                    })?;
            let verdict = judge(domain, self.host, &resolved);
            if verdict.ok() {
                continue;
            }
            match (self.update, self.host.first()) {
                (Some(_), Some(ip)) if self.check => {
                    would_set.push(format!("DNS record to set: {}", record_for(domain, *ip)))
                }
                (Some(rfc2136), Some(ip)) => {
                    rfc2136
                        .set_address(domain, *ip)
                        .await
                        .map_err(PreflightError::Update)?;
                    set.push(record_for(domain, *ip));
                    if !resolves_here(resolver, domain, self.host).await {
                        problems.push(format!(
                            "{domain}: the record was set ({}), but {resolver} does not answer it yet; run deploy again in a few minutes",
                            record_for(domain, *ip)
                        ));
                    }
                }
                _ => problems.push(verdict.describe(domain, &resolver)),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PreflightError::NotHere(problems))
        }
    }
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

    #[test]
    fn addresses_with_and_without_a_port() {
        assert_eq!(
            socket_addr("1.1.1.1", 53),
            Some("1.1.1.1:53".parse().unwrap())
        );
        assert_eq!(
            socket_addr("127.0.0.1:5353", 53),
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(socket_addr("::1", 53), Some("[::1]:53".parse().unwrap()));
        assert_eq!(
            socket_addr("[::1]:5353", 53),
            Some("[::1]:5353".parse().unwrap())
        );
    }

    /// An address in vpsup.toml is the host's first address; the public
    /// IPv4 the host sees itself at comes after, once.
    #[tokio::test]
    async fn the_host_is_its_configured_address_then_its_public_one() {
        let resolver: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(
            host_addresses("203.0.113.42", Some("198.51.100.7/24"), resolver).await,
            [ip("203.0.113.42"), ip("198.51.100.7")]
        );
        assert_eq!(
            host_addresses("203.0.113.42", Some("203.0.113.42"), resolver).await,
            [ip("203.0.113.42")]
        );
    }
}
