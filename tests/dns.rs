//! The deploy DNS preflight against a real DNS server (BIND on loopback,
//! tests/support/bind.rs): names in its zone resolve to 127.0.0.1.

mod support;

use std::net::{IpAddr, SocketAddr};

use support::*;
use vpsup::deploy::dns::{judge, resolve, Verdict};

#[tokio::test(flavor = "multi_thread")]
async fn the_preflight_asks_a_real_server_and_says_which_record_to_create() {
    let bind = TestBind::start("example.test");
    let resolver: SocketAddr = format!("127.0.0.1:{}", bind.port).parse().unwrap();
    let here: IpAddr = "127.0.0.1".parse().unwrap();
    let vps: IpAddr = "198.51.100.15".parse().unwrap();

    let found = resolve(resolver, "doctor.example.test").await.unwrap();
    assert_eq!(found, [here]);
    assert!(judge("doctor.example.test", &[here], &found).ok());

    // The same name seen from a VPS it does not point at.
    let verdict = judge("doctor.example.test", &[vps], &found);
    assert!(matches!(verdict, Verdict::Elsewhere { .. }), "{verdict:?}");
    assert!(verdict
        .describe("doctor.example.test", &resolver)
        .ends_with("change the record to: A doctor.example.test. -> 198.51.100.15"));

    // A name the server does not serve has no address.
    let none = resolve(resolver, "doctor.elsewhere.test").await.unwrap();
    assert!(none.is_empty(), "{none:?}");
    assert!(matches!(
        judge("doctor.elsewhere.test", &[vps], &none),
        Verdict::Missing { .. }
    ));

    // An unreachable resolver is named.
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let err = resolve(dead, "doctor.example.test").await.unwrap_err();
    assert!(
        err.contains(&format!("cannot reach the DNS resolver {dead}")),
        "{err}"
    );
}

/// `[app] dns = "update"`: the record is set through RFC 2136 (TSIG), and
/// replaces what was there rather than adding to it.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_is_set_through_the_dns_provider() {
    let bind = TestBind::start("example.test");
    let resolver: SocketAddr = format!("127.0.0.1:{}", bind.port).parse().unwrap();
    let provider = vpsup::acme::dns01::Rfc2136 {
        server: resolver,
        zone: bind.zone.clone(),
        key_name: bind.key_name.clone(),
        algorithm: vpsup::acme::dns01::algorithm("hmac-sha256").unwrap(),
        secret: bind.secret.clone(),
    };
    let vps: IpAddr = "198.51.100.15".parse().unwrap();
    let moved: IpAddr = "198.51.100.16".parse().unwrap();

    provider
        .set_address("doctor.example.test", vps)
        .await
        .unwrap();
    assert_eq!(
        resolve(resolver, "doctor.example.test").await.unwrap(),
        [vps]
    );
    // Moved to another VPS: the old address is gone, not kept beside the new.
    provider
        .set_address("doctor.example.test", moved)
        .await
        .unwrap();
    assert_eq!(
        resolve(resolver, "doctor.example.test").await.unwrap(),
        [moved]
    );
    // IPv6 and wildcards go the same way.
    let v6: IpAddr = "2001:db8::15".parse().unwrap();
    provider
        .set_address("*.apps.example.test", v6)
        .await
        .unwrap();
    assert_eq!(
        resolve(resolver, "shop.apps.example.test").await.unwrap(),
        [v6]
    );

    let err = provider
        .set_address("doctor.elsewhere.test", vps)
        .await
        .unwrap_err();
    assert!(err.contains("is not in the zone example.test"), "{err}");

    // A key the server does not know changes nothing.
    let wrong = vpsup::acme::dns01::Rfc2136 {
        secret: "bm90IHRoZSBrZXk=".into(),
        ..provider.clone()
    };
    let err = wrong
        .set_address("doctor.example.test", vps)
        .await
        .unwrap_err();
    assert!(
        err.contains("key_name, algorithm and secret") || err.contains("refused"),
        "{err}"
    );
    assert_eq!(
        resolve(resolver, "doctor.example.test").await.unwrap(),
        [moved]
    );
}
