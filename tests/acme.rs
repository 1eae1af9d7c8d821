//! Certificates from a real ACME CA (Pebble) validated against a real nginx,
//! with the HTTP-01 answer written into nginx's webroot through a real sshd:
//! the same path a VPS takes, all on loopback.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;
use vpsup::acme::certinfo::CertInfo;
use vpsup::acme::certs::{AcmeSettings, Action, Certs};
use vpsup::acme::store::ChallengeKind;
use vpsup::transport::ssh::{Credentials, SshTarget, SshTransport};

/// The certificate nginx serves for `name`, fetched with curl trusting only
/// Pebble's issuing root (so the chain must verify).
fn served(nginx: &TestNginx, root: &std::path::Path, name: &str) -> CertInfo {
    let resolve = format!("{name}:{}:127.0.0.1", nginx.https_port);
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
        .arg(root)
        .args(["--resolve", &resolve, "-w", "%{certs}"])
        .arg(format!("https://{name}:{}/", nginx.https_port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("tls ok"), "{text}");
    CertInfo::from_pem_chain(&text["tls ok\n".len()..]).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn http01_through_sshd_and_nginx_then_reuse_then_forced_renewal() {
    let sshd = TestSshd::start();
    let nginx = TestNginx::start();
    let pebble = TestPebble::start(nginx.http_port);
    let home = tempfile::tempdir().unwrap();
    let target = SshTarget {
        host: "127.0.0.1".into(),
        port: sshd.port,
        user: "root".into(),
        identity_files: vec![sshd.client_key.clone()],
        identities_only: false,
        known_hosts: home.path().join("known_hosts"),
        connect_timeout: Duration::from_secs(10),
    };
    let (transport, _) = SshTransport::connect(&target, &Credentials::default())
        .await
        .unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let settings = AcmeSettings {
        directory: pebble.directory.clone(),
        email: "ops@example.test".into(),
        extra_root: Some(pebble.tls_root.clone()),
        profile: None,
        store_dir: store_dir.path().join("acme").display().to_string(),
        webroot: nginx.webroot.display().to_string(),
    };
    let certs = Certs::new(&transport, &settings);
    let names = vec![
        "app.example.test".to_string(),
        "www.example.test".to_string(),
    ];

    // Issued: Pebble fetched the key authorization from nginx on :http_port.
    let first = certs
        .ensure(&names, ChallengeKind::Http01, false)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pebble.log()));
    assert_eq!(first.action, Action::Issued);
    let issued = first.info.clone().unwrap();
    assert_eq!(issued.names, names);
    let store = certs.store();
    let chain = std::path::PathBuf::from(store.fullchain_path(&first.name));
    let key = std::path::PathBuf::from(store.privkey_path(&first.name));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .contains("BEGIN PRIVATE KEY"));
    let challenges = nginx.webroot.join(".well-known/acme-challenge");
    assert_eq!(
        std::fs::read_dir(&challenges).unwrap().count(),
        0,
        "challenge files are removed afterwards"
    );

    // nginx serves it, and the chain verifies against Pebble's issuing root.
    nginx.enable_tls(&chain, &key);
    let root = pebble.issuing_root();
    assert_eq!(
        served(&nginx, &root, "app.example.test").serial,
        issued.serial
    );

    // A valid certificate that is not due is reused, not re-issued.
    let again = certs
        .ensure(&names, ChallengeKind::Http01, false)
        .await
        .unwrap();
    assert!(
        matches!(again.action, Action::Kept { .. }),
        "{:?}",
        again.action
    );
    assert_eq!(again.info.unwrap().serial, issued.serial);

    // Forced renewal replaces it; after a reload nginx serves the new serial.
    let renewed = certs.renew_all(true, false).await.unwrap();
    assert_eq!(renewed.len(), 1);
    let renewed = renewed
        .into_iter()
        .next()
        .unwrap()
        .unwrap_or_else(|(n, e)| panic!("{n}: {e}"));
    assert_eq!(
        renewed.action,
        Action::Renewed {
            why: "--force".into()
        }
    );
    let new_serial = renewed.info.unwrap().serial;
    assert_ne!(new_serial, issued.serial);
    let out = Command::new("sh")
        .args(["-c", &nginx.reload_command()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while served(&nginx, &root, "www.example.test").serial != new_serial {
        assert!(
            std::time::Instant::now() < deadline,
            "nginx still serves the old certificate"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The account was registered once and stored on the host (0600).
    let accounts: Vec<_> = std::fs::read_dir(store_dir.path().join("acme/accounts"))
        .unwrap()
        .collect();
    assert_eq!(accounts.len(), 1);
}
