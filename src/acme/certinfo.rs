//! What a PEM certificate chain says about itself: names, validity, issuer,
//! serial. Parsed locally (x509-parser), never by shelling out to openssl.

use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names of the leaf (subjectAltName), in certificate order.
    pub names: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The leaf's issuer, as the CA wrote it (`CN=R11, O=Let's Encrypt, C=US`).
    pub issuer: String,
    /// Colon-separated hex.
    pub serial: String,
    /// The leaf in DER, for the ACME renewal information (ARI) identifier.
    pub leaf_der: Vec<u8>,
}

impl CertInfo {
    /// Reads the first certificate (the leaf) of a PEM chain.
    pub fn from_pem_chain(pem: &str) -> Result<CertInfo, String> {
        for block in Pem::iter_from_buffer(pem.as_bytes()) {
            let block = block.map_err(|e| format!("not PEM: {e}"))?;
            if block.label == "CERTIFICATE" {
                return CertInfo::from_der(&block.contents);
            }
        }
        Err("no certificate in the PEM text".to_string())
    }

    /// Reads one DER certificate (such as the leaf a TLS server presented).
    pub fn from_der(der: &[u8]) -> Result<CertInfo, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let names = match cert.subject_alternative_name() {
            Ok(Some(ext)) => ext
                .value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(format!("bad subjectAltName: {e}")),
        };
        let validity = cert.validity();
        Ok(CertInfo {
            names,
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            leaf_der: der.to_vec(),
        })
    }

    /// Whole days until expiry (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }

    /// Whether the certificate covers exactly these names (order aside).
    pub fn covers_exactly(&self, names: &[String]) -> bool {
        let mut mine: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let mut theirs: Vec<&str> = names.iter().map(String::as_str).collect();
        mine.sort_unstable();
        mine.dedup();
        theirs.sort_unstable();
        theirs.dedup();
        mine == theirs
    }
}

/// An issuer's common name, the short form people know a CA by:
/// `CN=R11, O=Let's Encrypt, C=US` -> `R11` (the whole text when it has no CN).
pub fn short_issuer(issuer: &str) -> String {
    issuer
        .split(',')
        .find_map(|part| part.trim().strip_prefix("CN="))
        .unwrap_or(issuer)
        .to_string()
}

#[cfg(test)]
pub mod testing {
    //! Certificates made on the spot, with chosen names and validity.
    use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
    use time::OffsetDateTime;

    pub fn self_signed(
        names: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> String {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = not_before;
        params.not_after = not_after;
        params.self_signed(&key).unwrap().pem()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    #[test]
    fn reads_names_validity_and_days_left() {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let pem = testing::self_signed(
            &["app.example.test", "*.example.test"],
            now - Duration::days(10),
            now + Duration::days(80),
        );
        let info = CertInfo::from_pem_chain(&pem).unwrap();
        assert_eq!(info.names, ["app.example.test", "*.example.test"]);
        assert_eq!(
            info.not_after.unix_timestamp(),
            (now + Duration::days(80)).unix_timestamp()
        );
        assert_eq!(info.days_left(now), 80);
        assert!(info.covers_exactly(&["*.example.test".into(), "app.example.test".into()]));
        assert!(!info.covers_exactly(&["app.example.test".into()]));
        assert!(!info.serial.is_empty() && !info.leaf_der.is_empty());
        // The DER leaf reads the same as the PEM chain it came from.
        assert_eq!(CertInfo::from_der(&info.leaf_der).unwrap(), info);
    }

    #[test]
    fn issuers_are_shortened_to_their_common_name() {
        assert_eq!(short_issuer("CN=R11, O=Let's Encrypt, C=US"), "R11");
        assert_eq!(short_issuer("C=US, O=Let's Encrypt, CN=E7"), "E7");
        assert_eq!(short_issuer("O=Nobody"), "O=Nobody");
    }

    #[test]
    fn rejects_what_is_not_a_certificate() {
        assert!(CertInfo::from_pem_chain("hello").is_err());
        assert!(CertInfo::from_pem_chain(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        .is_err());
        assert!(CertInfo::from_der(b"hello").is_err());
    }
}
