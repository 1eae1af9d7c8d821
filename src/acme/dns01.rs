//! DNS-01 (the only way to a wildcard certificate): the TXT record goes into
//! the zone through an RFC 2136 dynamic update signed with TSIG, which BIND,
//! Knot, PowerDNS and many hosted DNS services accept. It is removed afterwards.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::op::update_message::{self, UpdateMessage};
use hickory_net::proto::op::{DnsRequest, ResponseCode};
use hickory_net::proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_net::proto::rr::rdata::{A, AAAA, TXT};
use hickory_net::proto::rr::{Name, RData, Record, TSigner};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::xfer::{DnsHandle, FirstAnswer};
use hickory_net::DnsMultiplexer;
use instant_acme::ChallengeType;

use super::client::Solver;

/// Where and how to update the zone.
#[derive(Clone)]
pub struct Rfc2136 {
    /// The primary name server that accepts updates.
    pub server: SocketAddr,
    /// The zone the names live in (`example.com`).
    pub zone: String,
    pub key_name: String,
    pub algorithm: TsigAlgorithm,
    /// The TSIG secret, base64 (as `tsig-keygen` prints it). Never printed.
    pub secret: String,
}

impl std::fmt::Debug for Rfc2136 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("key_name", &self.key_name)
            .field("secret", &"(hidden)")
            .finish()
    }
}

/// `hmac-sha256` and friends, as BIND names them.
pub fn algorithm(name: &str) -> Result<TsigAlgorithm, String> {
    match name.to_ascii_lowercase().as_str() {
        "hmac-sha256" => Ok(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Ok(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Ok(TsigAlgorithm::HmacSha512),
        other => Err(format!(
            "TSIG algorithm {other:?} is not supported: use hmac-sha256, hmac-sha384 or hmac-sha512"
        )),
    }
}

fn record_type(address: IpAddr) -> &'static str {
    if address.is_ipv4() {
        "A"
    } else {
        "AAAA"
    }
}

/// The record name for a challenge: `_acme-challenge.` before the name,
/// without a wildcard's `*.`.
pub fn record_name(identifier: &str) -> String {
    let base = identifier.strip_prefix("*.").unwrap_or(identifier);
    format!("_acme-challenge.{}.", base.trim_end_matches('.'))
}

impl Rfc2136 {
    async fn client(&self) -> Result<Client<TokioRuntimeProvider>, String> {
        let key = base64::engine::general_purpose::STANDARD
            .decode(self.secret.trim())
            .map_err(|_| "the TSIG secret is not base64 (as tsig-keygen prints it)".to_string())?;
        let key_name = Name::from_ascii(format!("{}.", self.key_name.trim_end_matches('.')))
            .map_err(|e| format!("TSIG key name {:?}: {e}", self.key_name))?;
        let signer = TSigner::new(key, self.algorithm.clone(), key_name, 300)
            .map_err(|e| format!("TSIG key: {e}"))?;
        let (connect, handle) = TcpClientStream::new(
            self.server,
            None,
            Some(Duration::from_secs(10)),
            TokioRuntimeProvider::new(),
        );
        let stream = connect
            .await
            .map_err(|e| format!("cannot reach the DNS server {}: {e}", self.server))?;
        let multiplexer = DnsMultiplexer::new(stream, handle).with_signer(signer);
        let (client, background) = Client::<TokioRuntimeProvider>::from_sender(multiplexer);
        tokio::spawn(background);
        Ok(client)
    }

    /// The zone and `fqdn` as names, or an error if `fqdn` is outside the zone.
    fn in_zone(&self, fqdn: &str, what: &str) -> Result<(Name, Name), String> {
        let zone = Name::from_ascii(format!("{}.", self.zone.trim_end_matches('.')))
            .map_err(|e| format!("zone {:?}: {e}", self.zone))?;
        let name = Name::from_ascii(fqdn).map_err(|e| format!("{what}: {e}"))?;
        if !zone.zone_of(&name) {
            return Err(format!(
                "{what} is not in the zone {} that [acme.dns] updates",
                self.zone
            ));
        }
        Ok((zone, name))
    }

    fn names(&self, identifier: &str, value: &str, ttl: u32) -> Result<(Name, Record), String> {
        let (zone, fqdn) = self.in_zone(&record_name(identifier), identifier)?;
        let record = Record::from_rdata(fqdn, ttl, RData::TXT(TXT::new(vec![value.to_string()])));
        Ok((zone, record))
    }

    /// Points `domain` (a wildcard too) at `address` alone: its A (or AAAA)
    /// records are replaced by one with a 5-minute TTL, in one update.
    pub async fn set_address(&self, domain: &str, address: IpAddr) -> Result<(), String> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let (zone, name) = self.in_zone(&fqdn, domain)?;
        let rdata = match address {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        let record = Record::from_rdata(name, 300, rdata);
        let client = self.client().await?;
        // Delete the whole RRset and add the one record in one message: the
        // server applies both or neither.
        let mut message = update_message::delete_rrset(record.clone(), zone, false);
        message.add_update(record);
        let response = client
            .send(DnsRequest::from(message))
            .first_answer()
            .await
            .map_err(|e| self.failed(domain, e))?;
        self.check(
            &format!("setting the {} record of {domain}", record_type(address)),
            response.metadata.response_code,
        )
    }

    /// A failed exchange; a wrong TSIG key typically ends here (the server's
    /// answer to a bad signature cannot be verified).
    fn failed(&self, identifier: &str, error: impl std::fmt::Display) -> String {
        format!(
            "the DNS update for {identifier} through {} failed ({error}); check [acme.dns] key_name, algorithm and secret",
            self.server
        )
    }

    fn check(&self, what: &str, code: ResponseCode) -> Result<(), String> {
        match code {
            ResponseCode::NoError => Ok(()),
            ResponseCode::Refused | ResponseCode::NotAuth => Err(format!(
                "{what}: the DNS server {} refused the update ({code}); check that key {:?} may update such records in {}",
                self.server, self.key_name, self.zone
            )),
            other => Err(format!("{what}: the DNS server {} answered {other}", self.server)),
        }
    }
}

#[async_trait]
impl Solver for Rfc2136 {
    fn kind(&self) -> ChallengeType {
        ChallengeType::Dns01
    }

    async fn present(
        &self,
        identifier: &str,
        _: &str,
        _: &str,
        dns_value: &str,
    ) -> Result<(), String> {
        let (zone, record) = self.names(identifier, dns_value, 60)?;
        let mut client = self.client().await?;
        let response = client
            .append(record, zone, false)
            .await
            .map_err(|e| self.failed(identifier, e))?;
        self.check(
            &format!("adding the TXT record for {identifier}"),
            response.metadata.response_code,
        )
    }

    async fn cleanup(&self, identifier: &str, _: &str, dns_value: &str) -> Result<(), String> {
        // RFC 2136 2.5.4: a deletion names the record with TTL 0.
        let (zone, record) = self.names(identifier, dns_value, 0)?;
        let mut client = self.client().await?;
        let response = client
            .delete_by_rdata(record, zone)
            .await
            .map_err(|e| self.failed(identifier, e))?;
        self.check(
            &format!("removing the TXT record for {identifier}"),
            response.metadata.response_code,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_and_algorithms() {
        assert_eq!(record_name("*.example.com"), "_acme-challenge.example.com.");
        assert_eq!(
            record_name("app.example.com"),
            "_acme-challenge.app.example.com."
        );
        assert!(algorithm("HMAC-SHA256").is_ok());
        assert!(algorithm("hmac-md5").unwrap_err().contains("hmac-sha256"));
    }

    #[test]
    fn names_outside_the_zone_are_refused_before_any_update() {
        let provider = Rfc2136 {
            server: "127.0.0.1:53".parse().unwrap(),
            zone: "example.com".into(),
            key_name: "k".into(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret: "c2VjcmV0".into(),
        };
        assert!(provider.names("app.example.com", "v", 60).is_ok());
        assert!(provider
            .names("app.example.org", "v", 60)
            .unwrap_err()
            .contains("not in the zone"));
        assert!(
            !format!("{provider:?}").contains("c2VjcmV0"),
            "the secret never shows"
        );
    }
}
