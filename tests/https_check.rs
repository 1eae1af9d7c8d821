//! deploy's final check against a real nginx on loopback, serving a
//! certificate from a CA made for the test: the chain and the name are
//! verified, the status and the certificate's details come back.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    PKCS_ECDSA_P256_SHA256,
};
use support::*;
use time::OffsetDateTime;
use vpsup::deploy::https_check::{check_https, check_redirect, SiteCheck};

/// Writes a test CA (`ca.pem`) and a leaf for `name` signed by it, valid
/// for `days` more days (`chain.pem`, `key.pem`), into `dir`.
fn make_certificates(dir: &Path, name: &str, days: i64) {
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "vpsup test CA");
    ca.distinguished_name
        .push(DnType::OrganizationName, "vpsup tests");
    ca.not_before = now - time::Duration::days(1);
    ca.not_after = now + time::Duration::days(365);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut leaf = CertificateParams::new(vec![name.to_string()]).unwrap();
    leaf.not_before = now - time::Duration::days(1);
    leaf.not_after = now + time::Duration::days(days);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("chain.pem"), leaf_cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
}

/// check_https until nginx serves the new certificate (a reload takes
/// effect a moment after `enable_tls` returns).
async fn check_after_reload(addr: SocketAddr, root: &Path) -> SiteCheck {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match check_https(addr, "app.example.test", "/", Some(root)).await {
            Ok(check) => return check,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn checks_the_served_site_and_its_certificate() {
    let nginx = TestNginx::start();
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path(), "app.example.test", 30);
    nginx.enable_tls(&dir.path().join("chain.pem"), &dir.path().join("key.pem"));
    let addr: SocketAddr = ([127, 0, 0, 1], nginx.https_port).into();
    let root = dir.path().join("ca.pem");

    let check = check_after_reload(addr, &root).await;
    // The test nginx answers every HTTPS path with `return 200 "tls ok"`.
    assert_eq!(check.url, "https://app.example.test/");
    assert_eq!(check.status, 200);
    assert_eq!(check.names, ["app.example.test"]);
    assert!(
        (29..=30).contains(&check.days_left),
        "days_left {}",
        check.days_left
    );
    assert_eq!(check.issuer, "vpsup test CA");

    // Another path, and one given without its leading slash.
    let other = check_https(addr, "app.example.test", "healthz", Some(&root))
        .await
        .unwrap();
    assert_eq!(other.url, "https://app.example.test/healthz");
    assert_eq!(other.status, 200);

    // A name the certificate does not cover: hostname verification is on.
    let err = check_https(addr, "other.example.test", "/", Some(&root))
        .await
        .unwrap_err();
    assert!(
        err.starts_with(&format!("https://other.example.test/ (via {addr}): ")),
        "{err}"
    );
    assert!(
        err.ends_with(
            "certificate not valid for other.example.test: it is valid only for app.example.test"
        ),
        "{err}"
    );

    // Without the test CA the chain leads to no trusted root.
    let err = check_https(addr, "app.example.test", "/", None)
        .await
        .unwrap_err();
    assert!(
        err.contains("not trusted") && err.contains("unknown issuer"),
        "{err}"
    );

    // An extra root that is not a certificate is reported as such.
    let err = check_https(
        addr,
        "app.example.test",
        "/",
        Some(&dir.path().join("key.pem")),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("extra_root") && err.contains("key.pem"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_of_the_test_nginx() {
    // The test nginx's HTTP server does not redirect: `/` is nginx's own
    // welcome page.
    let nginx = TestNginx::start();
    let addr: SocketAddr = ([127, 0, 0, 1], nginx.http_port).into();
    assert_eq!(
        check_redirect(addr, "app.example.test").await.unwrap(),
        (200, None)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_a_redirect_and_its_location() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "the client closed before ending its request");
            request.extend_from_slice(&buf[..n]);
        }
        conn.write_all(
            b"HTTP/1.1 301 Moved Permanently\r\nLocation: https://app.example.test/\r\n\r\n",
        )
        .unwrap();
        String::from_utf8(request).unwrap()
    });
    let answer = check_redirect(addr, "app.example.test").await.unwrap();
    assert_eq!(answer, (301, Some("https://app.example.test/".to_string())));
    assert_eq!(
        server.join().unwrap(),
        "GET / HTTP/1.1\r\nHost: app.example.test\r\nConnection: close\r\n\r\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn says_where_nothing_listens() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // The listener is dropped: nothing listens there any more.
    let err = check_redirect(addr, "app.example.test").await.unwrap_err();
    assert!(
        err.starts_with(&format!(
            "http://app.example.test/ (via {addr}): cannot connect"
        )),
        "{err}"
    );
    let err = check_https(addr, "app.example.test", "/", None)
        .await
        .unwrap_err();
    assert!(err.contains("cannot connect"), "{err}");
}
