//! When a certificate is due for renewal. The CA's ACME Renewal Information
//! (ARI, RFC 9773) window wins when the CA offers one: it moves renewal earlier
//! for a revoked or mis-issued certificate, and spreads load. Otherwise renew
//! once less than a third of the lifetime remains (half, for lifetimes under
//! ten days), which keeps pace as Let's Encrypt lifetimes shrink (90 -> 64 ->
//! 45 days) without a fixed "30 days before" that a 45-day certificate would
//! always be inside.

use time::{Duration, OffsetDateTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not due; renewal starts at this time.
    Keep {
        renew_from: OffsetDateTime,
    },
    Renew {
        why: String,
    },
}

impl Decision {
    pub fn is_due(&self) -> bool {
        matches!(self, Decision::Renew { .. })
    }
}

/// Decides for a certificate valid from `not_before` to `not_after`, at `now`.
pub fn decide(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
    ari: Option<Window>,
) -> Decision {
    if now >= not_after {
        return Decision::Renew {
            why: "expired".to_string(),
        };
    }
    if let Some(window) = ari {
        // A window that has already ended means "renew now" (RFC 9773 4.2).
        return if now >= window.start {
            Decision::Renew {
                why: "inside the CA's renewal window (ARI)".to_string(),
            }
        } else {
            Decision::Keep {
                renew_from: window.start,
            }
        };
    }
    let lifetime = not_after - not_before;
    let share = if lifetime < Duration::days(10) { 2 } else { 3 };
    let renew_from = not_after - lifetime / share;
    if now >= renew_from {
        Decision::Renew {
            why: format!("less than 1/{share} of its lifetime left"),
        }
    } else {
        Decision::Keep { renew_from }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::days(1000) + Duration::days(days)
    }

    #[test]
    fn a_third_of_the_lifetime_for_90_64_and_45_day_certificates() {
        for (lifetime, renew_day) in [(90, 60), (64, 43), (45, 30)] {
            let renew_from = match decide(at(0), at(lifetime), at(0), None) {
                Decision::Keep { renew_from } => renew_from,
                other => panic!("{other:?}"),
            };
            // 2/3 of the lifetime, to the day (64 days: 42.67 -> day 42, 16 h).
            assert_eq!(
                (renew_from - at(0)).whole_days(),
                renew_day - i64::from(lifetime == 64),
                "{lifetime}"
            );
            assert!(!decide(at(0), at(lifetime), renew_from - Duration::hours(1), None).is_due());
            assert!(decide(at(0), at(lifetime), renew_from, None).is_due());
        }
    }

    #[test]
    fn short_lived_certificates_renew_at_half() {
        // 6-day certificates (Let's Encrypt's short-lived profile).
        assert!(!decide(at(0), at(6), at(2), None).is_due());
        assert!(decide(at(0), at(6), at(3), None).is_due());
    }

    #[test]
    fn the_cas_window_wins_in_both_directions() {
        let early = Window {
            start: at(5),
            end: at(6),
        };
        assert!(
            decide(at(0), at(90), at(5), Some(early)).is_due(),
            "revoked: renew early"
        );
        let late = Window {
            start: at(70),
            end: at(75),
        };
        assert!(!decide(at(0), at(90), at(65), Some(late)).is_due());
        assert!(decide(at(0), at(90), at(71), Some(late)).is_due());
    }

    #[test]
    fn expired_is_due_whatever_the_window_says() {
        let window = Window {
            start: at(200),
            end: at(201),
        };
        assert!(decide(at(0), at(90), at(91), Some(window)).is_due());
    }

    /// A real certificate (rcgen, read back by `CertInfo` as the store's
    /// are) issued `age` ago for `lifetime`.
    fn certificate(age: Duration, lifetime: Duration) -> super::super::certinfo::CertInfo {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["app.example.com".into()]).unwrap();
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        params.not_before = now - age;
        params.not_after = now - age + lifetime;
        let pem = params.self_signed(&key).unwrap().pem();
        super::super::certinfo::CertInfo::from_pem_chain(&pem).unwrap()
    }

    /// Today's and tomorrow's lifetimes, each just before and just after its
    /// renewal point, decided on certificates as they come from a CA.
    #[test]
    fn certificates_of_several_lifetimes_renew_on_time() {
        let days = Duration::days;
        let hours = Duration::hours;
        for (lifetime, kept_at, due_at, why) in [
            // Let's Encrypt classic (90 d), 2027's 64 d, tlsserver's 45 d: 1/3 left.
            (
                days(90),
                days(59),
                days(61),
                "less than 1/3 of its lifetime left",
            ),
            (
                days(64),
                days(42),
                days(43),
                "less than 1/3 of its lifetime left",
            ),
            (
                days(45),
                days(29),
                days(31),
                "less than 1/3 of its lifetime left",
            ),
            // The short-lived profile (about 6 days): half left.
            (
                hours(160),
                hours(78),
                hours(82),
                "less than 1/2 of its lifetime left",
            ),
            // A one-year certificate from another CA.
            (
                days(365),
                days(240),
                days(245),
                "less than 1/3 of its lifetime left",
            ),
        ] {
            let now = OffsetDateTime::now_utc();
            let young = certificate(kept_at, lifetime);
            assert!(
                matches!(
                    decide(young.not_before, young.not_after, now, None),
                    Decision::Keep { .. }
                ),
                "{lifetime} old {kept_at}"
            );
            let old = certificate(due_at, lifetime);
            assert_eq!(
                decide(old.not_before, old.not_after, now, None),
                Decision::Renew {
                    why: why.to_string()
                },
                "{lifetime} old {due_at}"
            );
        }
        let expired = certificate(days(91), days(90));
        assert_eq!(
            decide(
                expired.not_before,
                expired.not_after,
                OffsetDateTime::now_utc(),
                None
            ),
            Decision::Renew {
                why: "expired".to_string()
            }
        );
    }
}
