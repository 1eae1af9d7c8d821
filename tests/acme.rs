//! Certificates from a real ACME CA (Pebble) validated against a real nginx,
//! with the HTTP-01 answer written into nginx's webroot through a real sshd:
//! the same path a VPS takes, all on loopback.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;
use vpsup::acme::certinfo::CertInfo;
use vpsup::acme::certs::{AcmeSettings, Action, Certs};
use vpsup::acme::dns01::{algorithm, Rfc2136};
use vpsup::acme::store::ChallengeKind;
use vpsup::transport::ssh::{Credentials, SshTarget, SshTransport};

/// The certificate nginx serves for `name`, fetched with curl trusting only
/// Pebble's issuing root (so the chain must verify).
fn try_served(nginx: &TestNginx, root: &std::path::Path, name: &str) -> Result<CertInfo, String> {
    let resolve = format!("{name}:{}:127.0.0.1", nginx.https_port);
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
        .arg(root)
        .args(["--resolve", &resolve, "-w", "%{certs}"])
        .arg(format!("https://{name}:{}/", nginx.https_port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || !text.starts_with("tls ok") {
        return Err(format!(
            "curl: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    CertInfo::from_pem_chain(&text["tls ok\n".len()..])
}

fn served(nginx: &TestNginx, root: &std::path::Path, name: &str) -> CertInfo {
    try_served(nginx, root, name).unwrap_or_else(|e| panic!("{e}"))
}

/// Waits (10 s at most) until nginx serves `name` a certificate that verifies
/// and whose serial satisfies `wanted`: a reload takes effect as its workers
/// restart. Returns it.
fn wait_until_served(
    nginx: &TestNginx,
    root: &std::path::Path,
    name: &str,
    wanted: impl Fn(&str) -> bool,
) -> CertInfo {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = try_served(nginx, root, name);
        match &seen {
            Ok(info) if wanted(&info.serial) => return info.clone(),
            _ if std::time::Instant::now() > deadline => {
                panic!("nginx does not serve the expected certificate: {seen:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The "host", all on loopback: a real sshd (root's transport to it), nginx
/// serving the ACME webroot, Pebble validating against that nginx, and the
/// certificate store in a temp dir.
struct Loopback {
    sshd: TestSshd,
    nginx: TestNginx,
    pebble: TestPebble,
    transport: SshTransport,
    store_dir: tempfile::TempDir,
    settings: AcmeSettings,
    /// Holds the operator's known_hosts.
    home: tempfile::TempDir,
}

impl Loopback {
    /// Pebble resolves names through challtestsrv, or through the DNS server
    /// on 127.0.0.1:`dns_port`.
    async fn start(dns_port: Option<u16>) -> Loopback {
        let sshd = TestSshd::start();
        let nginx = TestNginx::start();
        let pebble = TestPebble::start_with_dns(nginx.http_port, dns_port);
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
        let transport = SshTransport::connect(&target, &Credentials::default())
            .await
            .unwrap()
            .0;
        let store_dir = tempfile::tempdir().unwrap();
        let settings = AcmeSettings {
            directory: pebble.directory.clone(),
            email: "ops@example.test".into(),
            extra_root: Some(pebble.tls_root.clone()),
            profile: None,
            store_dir: store_dir.path().join("acme").display().to_string(),
            webroot: nginx.webroot.display().to_string(),
            dns: None,
        };
        Loopback {
            sshd,
            nginx,
            pebble,
            transport,
            store_dir,
            settings,
            home,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http01_through_sshd_and_nginx_then_reuse_then_forced_renewal_then_a_deactivated_and_a_lost_account(
) {
    let Loopback {
        sshd: _sshd,
        nginx,
        mut pebble,
        transport,
        store_dir,
        settings,
        home: _home,
    } = Loopback::start(None).await;
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
    assert_eq!(
        certs.notes(),
        [format!(
            "registered an ACME account (ops@example.test) at {}, stored on the host",
            pebble.directory
        )]
    );
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
    wait_until_served(&nginx, &root, "app.example.test", |s| s == issued.serial);

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
    wait_until_served(&nginx, &root, "www.example.test", |serial| {
        serial == new_serial
    });

    // The account was registered once and stored on the host (0600).
    let accounts: Vec<_> = std::fs::read_dir(store_dir.path().join("acme/accounts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(accounts.len(), 1);

    // The CA deactivated the stored account: Let's Encrypt then answers its
    // orders `unauthorized` (not accountDoesNotExist). The renewal registers
    // a new account, stores it in place of the old one, and goes through.
    // (A `replaces` is dropped first; Debian's Pebble offers no renewal
    // information, so that step is covered by the unit test of the errors.)
    let deactivated = std::fs::read_to_string(&accounts[0]).unwrap();
    let credentials: instant_acme::AccountCredentials = serde_json::from_str(&deactivated).unwrap();
    instant_acme::Account::builder_with_root(&pebble.tls_root)
        .unwrap()
        .from_credentials(credentials)
        .await
        .unwrap()
        .deactivate()
        .await
        .unwrap();
    let certs = Certs::new(&transport, &settings);
    let renewed = certs.renew_all(true, false).await.unwrap();
    assert!(
        matches!(&renewed[..], [Ok(o)] if matches!(o.action, Action::Renewed { .. })),
        "{renewed:?}\n{}",
        pebble.log()
    );
    assert_ne!(std::fs::read_to_string(&accounts[0]).unwrap(), deactivated);
    assert!(
        certs.notes()[0]
            .starts_with("the CA no longer accepts the ACME account stored on the host"),
        "{:?}",
        certs.notes()
    );

    // The CA forgets the stored account (Pebble restarted, as when a CA's
    // data is reset: accountDoesNotExist): the same, a new account.
    let account_before = std::fs::read_to_string(&accounts[0]).unwrap();
    pebble.restart();
    let certs = Certs::new(&transport, &settings);
    let after = certs
        .ensure(&names, ChallengeKind::Http01, true)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pebble.log()));
    assert!(
        matches!(after.action, Action::Renewed { .. }),
        "{:?}",
        after.action
    );
    assert_ne!(
        std::fs::read_to_string(&accounts[0]).unwrap(),
        account_before
    );

    // The account file is lost from the store: the next renewal registers a
    // new account and says why, as certificates from this CA are there.
    std::fs::remove_file(&accounts[0]).unwrap();
    let certs = Certs::new(&transport, &settings);
    let renewed = certs.renew_all(true, false).await.unwrap();
    assert!(
        matches!(&renewed[..], [Ok(o)] if o.action.changed()),
        "{renewed:?}"
    );
    assert!(
        certs.notes()[0].starts_with(&format!(
            "the ACME account key for {} is missing from the host's store although certificates were issued through it",
            settings.directory
        )),
        "{:?}",
        certs.notes()
    );
    assert!(accounts[0].exists());

    // The CA is down: a certificate that is not due is kept, not failed (the
    // host's daily timer must not fail on a CA outage when nothing is due).
    pebble.stop();
    let certs = Certs::new(&transport, &settings);
    let outage = certs.renew_all(false, false).await.unwrap();
    assert!(
        matches!(&outage[..], [Ok(o)] if matches!(o.action, Action::Kept { .. })),
        "{outage:?}"
    );
    // A due one (forced here) reports the outage, naming the directory.
    let forced = certs.renew_all(true, false).await.unwrap();
    match &forced[..] {
        [Err((_, e))] => assert!(
            e.to_string().starts_with(&format!(
                "the ACME directory {} did not answer",
                settings.directory
            )),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
}

/// Failures the user must be able to act on: a name that points at another
/// server fails with the CA's detail and what to check, and leaves no
/// challenge file behind; a directory URL that is not an ACME directory says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_validation_shows_the_cas_detail_and_cleans_up() {
    let Loopback {
        sshd: _sshd,
        nginx,
        pebble,
        transport,
        store_dir: _store_dir,
        settings,
        home: _home,
    } = Loopback::start(None).await;

    // elsewhere.example.test resolves to 127.0.0.2, where nothing listens.
    pebble.point("elsewhere.example.test", "127.0.0.2");
    let certs = Certs::new(&transport, &settings);
    let names = vec!["elsewhere.example.test".to_string()];
    let err = certs
        .ensure(&names, ChallengeKind::Http01, false)
        .await
        .expect_err("validation against 127.0.0.2 cannot succeed")
        .to_string();
    assert!(
        err.starts_with("validation of elsewhere.example.test failed: ")
            && err.contains("127.0.0.2")
            && err.contains("The CA could not connect to port 80 there"),
        "{err}\n{}",
        pebble.log()
    );
    let challenges = nginx.webroot.join(".well-known/acme-challenge");
    assert_eq!(
        std::fs::read_dir(&challenges).map_or(0, |d| d.count()),
        0,
        "the challenge file is removed after a failure too"
    );
    assert!(certs.store().list().await.unwrap().is_empty());

    // A URL on the CA's server that is not its directory.
    let wrong = AcmeSettings {
        directory: pebble.directory.replace("/dir", "/no-such-directory"),
        ..settings.clone()
    };
    let err = Certs::new(&transport, &wrong)
        .ensure(&names, ChallengeKind::Http01, false)
        .await
        .expect_err("no directory there")
        .to_string();
    assert!(
        err.starts_with(&format!(
            "the ACME directory {} did not answer: ",
            wrong.directory
        )) && err.contains("Check [acme] directory"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dns01_wildcard_through_a_real_bind_with_tsig() {
    let bind = TestBind::start("example.test");
    // Pebble resolves through BIND: it sees exactly the TXT records vpsup adds.
    let Loopback {
        sshd: _sshd,
        nginx,
        pebble,
        transport,
        store_dir: _store_dir,
        mut settings,
        home: _home,
    } = Loopback::start(Some(bind.port)).await;
    let provider = Rfc2136 {
        server: format!("127.0.0.1:{}", bind.port).parse().unwrap(),
        zone: bind.zone.clone(),
        key_name: bind.key_name.clone(),
        algorithm: algorithm("hmac-sha256").unwrap(),
        secret: bind.secret.clone(),
    };

    // A wildcard without a DNS provider is refused, with what to configure.
    let names = vec!["*.example.test".to_string(), "example.test".to_string()];
    let err = Certs::new(&transport, &settings)
        .ensure(&names, ChallengeKind::Dns01, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("[acme.dns]"), "{err}");

    // A wrong TSIG secret: the update is refused, and the secret is not in the message.
    settings.dns = Some(Rfc2136 {
        secret: "d3JvbmcgdHNpZyBzZWNyZXQgZm9yIHRoZSB0ZXN0IQ==".into(),
        ..provider.clone()
    });
    let err = Certs::new(&transport, &settings)
        .ensure(&names, ChallengeKind::Dns01, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{}", bind.port)), "{err}");
    assert!(
        !err.contains("d3Jvbmc") && !err.contains(&bind.secret),
        "{err}"
    );

    settings.dns = Some(provider);
    let certs = Certs::new(&transport, &settings);
    let issued = certs
        .ensure(&names, ChallengeKind::Dns01, false)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", pebble.log(), bind.log()));
    assert_eq!(issued.action, Action::Issued);
    assert_eq!(issued.name, "wildcard.example.test");
    assert_eq!(issued.info.unwrap().names, names);

    // The TXT records were added through BIND, then removed again.
    let journal = bind.zone_dump();
    assert!(
        journal.contains("add _acme-challenge.example.test.") && journal.contains("TXT"),
        "{journal}"
    );
    assert!(
        journal.contains("del _acme-challenge.example.test."),
        "{journal}"
    );

    // nginx serves the wildcard for any name under the zone.
    let store = certs.store();
    nginx.enable_tls(
        std::path::Path::new(&store.fullchain_path(&issued.name)),
        std::path::Path::new(&store.privkey_path(&issued.name)),
    );
    let served = wait_until_served(
        &nginx,
        &pebble.issuing_root(),
        "anything.example.test",
        |_| true,
    );
    assert_eq!(served.names, names);
}

/// The CA's HTTPS that does not verify is said as such, in rustls' words,
/// with what to do: a root that did not sign it (an untrusted certificate),
/// a name it is not for, a CA certificate served as the server's own. A CA
/// that is down still says so, with the cause under hyper's "Connect".
#[tokio::test(flavor = "multi_thread")]
async fn a_directory_whose_tls_does_not_verify_says_why() {
    use vpsup::acme::client::AcmeClient;
    let pebble = TestPebble::start(free_port());
    let open = |directory: String, root: std::path::PathBuf| async move {
        match AcmeClient::open(&directory, "ops@example.test", Some(&root), None).await {
            Ok(_) => panic!("{directory}: the directory's TLS was accepted"),
            Err(e) => e.to_string(),
        }
    };

    // Another root than the one that signs Pebble's listener: one of
    // another name (UnknownIssuer), one of the same name and another key
    // (BadSignature).
    let elsewhere = tempfile::tempdir().unwrap();
    for (name, reason) in [
        ("Some Other CA", "UnknownIssuer"),
        ("rcgen self signed cert", "BadSignature"),
    ] {
        let other_root = elsewhere.path().join("other-root.pem");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        std::fs::write(&other_root, params.self_signed(&key).unwrap().pem()).unwrap();
        let err = open(pebble.directory.clone(), other_root).await;
        assert!(
            err.starts_with(&format!(
                "TLS verification of the ACME directory {} failed (invalid peer certificate: {reason}): its certificate is not signed by a CA this machine trusts",
                pebble.directory
            )),
            "{err}"
        );
        assert!(err.contains("[acme] extra_root"), "{err}");
        assert!(!err.contains("client error (Connect)"), "{err}");
    }

    // The right root, the wrong name.
    let by_address = pebble.directory.replace("localhost", "127.0.0.1");
    let err = open(by_address, pebble.tls_root.clone()).await;
    assert!(
        err.contains("failed (invalid peer certificate: certificate not valid for name \"127.0.0.1\"; certificate is only valid for DnsName(\"localhost\")): its certificate is for another name"),
        "{err}"
    );

    // A CA's certificate as the server's own, even when trusted.
    let flagged = TestPebble::start_with_ca_flagged_listener(free_port());
    let err = open(flagged.directory.clone(), flagged.tls_root.clone()).await;
    assert!(err.contains("CaUsedAsEndEntity"), "{err}");
    assert!(
        err.contains("the server presents a CA certificate (basicConstraints CA:TRUE) as its own"),
        "{err}"
    );

    // Nobody there: the cause under "Connect".
    let down = format!("https://localhost:{}/dir", free_port());
    let err = open(down.clone(), pebble.tls_root.clone()).await;
    assert!(
        err.contains(&format!("the ACME directory {down} did not answer: it did not answer with an ACME directory (client error (Connect): ")),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");
}

/// vpsup.toml's host: the rig's sshd, as root.
fn host_section(sshd: &TestSshd) -> String {
    format!(
        "[hosts.web]\naddress = \"127.0.0.1\"\nport = {}\nuser = \"root\"\nidentity_file = \"{}\"\n\n",
        sshd.port,
        key_arg(sshd)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_certs_command_reports_renews_when_forced_and_reloads_nginx() {
    let Loopback {
        sshd,
        nginx,
        pebble,
        transport,
        store_dir: _store_dir,
        settings,
        home: _home,
    } = Loopback::start(None).await;
    let op = Operator::new();
    let config_with = |directory: &str, reload: &str| {
        format!(
            "{}[acme]\nemail = \"ops@example.test\"\ndirectory = \"{directory}\"\nextra_root = \"{}\"\nstore = \"{}\"\nwebroot = \"{}\"\nreload = \"{}\"\n",
            host_section(&sshd),
            pebble.tls_root.display(),
            settings.store_dir,
            settings.webroot,
            reload
        )
    };
    let config = |directory: &str| config_with(directory, &nginx.reload_command());
    op.write_config(&config(&pebble.directory));

    let out = op.vpsup(&["renew-certs"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no certificates in the store yet"));

    // A certificate in the store (deploy will put it there), served by nginx.
    let names = vec!["app.example.test".to_string()];
    let first = Certs::new(&transport, &settings)
        .ensure(&names, ChallengeKind::Http01, false)
        .await
        .unwrap();
    let store = Certs::new(&transport, &settings).store();
    let chain = std::path::PathBuf::from(store.fullchain_path(&first.name));
    nginx.enable_tls(
        &chain,
        std::path::Path::new(&store.privkey_path(&first.name)),
    );
    let root = pebble.issuing_root();
    let serial = first.info.unwrap().serial;
    wait_until_served(&nginx, &root, "app.example.test", |s| s == serial);

    // Not due: reported, kept.
    let out = op.vpsup(&["renew-certs", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let cert = json(&out)["hosts"][0]["certificates"][0].clone();
    assert_eq!(cert["names"], serde_json::json!(["app.example.test"]));
    assert!(
        cert["action"]
            .as_str()
            .unwrap()
            .starts_with("ok (renews from "),
        "{cert}"
    );
    assert!(cert["days_left"].as_i64().unwrap() > 300, "{cert}");
    assert_eq!(
        cert["issuer"]
            .as_str()
            .map(|i| i.starts_with("Pebble Intermediate")),
        Some(true),
        "{cert}"
    );

    // --check --force: says what it would do, does nothing.
    let out = op.vpsup(&["renew-certs", "--force", "--check"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("would renew (--force)"),
        "{}",
        describe_output(&out)
    );
    assert_eq!(served(&nginx, &root, "app.example.test").serial, serial);

    // An unreachable CA: fails loudly, the certificate stays as it was.
    let before = std::fs::read_to_string(&chain).unwrap();
    op.write_config(&config(&format!("https://localhost:{}/dir", free_port())));
    let out = op.vpsup(&["renew-certs", "--force"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(
        stderr(&out).contains("renewal failed"),
        "{}",
        describe_output(&out)
    );
    assert_eq!(std::fs::read_to_string(&chain).unwrap(), before);

    // --force renews, installs and reloads nginx: it serves the new serial.
    op.write_config(&config(&pebble.directory));
    let out = op.vpsup(&["renew-certs", "--force"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("renewed (--force)"),
        "{}",
        describe_output(&out)
    );
    let renewed = wait_until_served(&nginx, &root, "app.example.test", |served| served != serial);

    // A reload that fails (a broken nginx config elsewhere) is owed: the next
    // run, with nothing to renew, makes it, so nginx never keeps serving the
    // old certificate until it expires.
    op.write_config(&config_with(&pebble.directory, "false"));
    let out = op.vpsup(&["renew-certs", "--force"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("every later run retries the reload"),
        "{}",
        describe_output(&out)
    );
    let owed = std::fs::read_to_string(&chain).unwrap();
    assert_eq!(
        served(&nginx, &root, "app.example.test").serial,
        renewed.serial
    );
    op.write_config(&config(&pebble.directory));
    let out = op.vpsup(&["renew-certs"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let renewed = wait_until_served(&nginx, &root, "app.example.test", |s| s != renewed.serial);
    assert_eq!(
        CertInfo::from_pem_chain(&owed).unwrap().serial,
        renewed.serial
    );
    assert!(!std::path::Path::new(&format!("{}/reload-pending", settings.store_dir)).exists());

    // One renewal at a time per host: a run holding the lock refuses others.
    let lock = format!("{}/renew.lock", settings.store_dir);
    std::fs::create_dir(&lock).unwrap();
    std::fs::write(
        format!("{lock}/owner"),
        "alice@laptop (vpsup renew-certs)\n",
    )
    .unwrap();
    let out = op.vpsup(&["renew-certs"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(
            "certificate renewal is locked by alice@laptop (vpsup renew-certs) since 0 s ago"
        ),
        "{}",
        describe_output(&out)
    );
    std::fs::remove_dir_all(&lock).unwrap();

    // On the "host" itself (this machine), as its timer runs it: the local
    // transport, with the settings the operator's run left in the store.
    let local_config = format!("{}/renew.toml", settings.store_dir);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&local_config)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let out = op.vpsup(&[
        "renew-certs",
        "--local",
        "--force",
        "--config",
        &local_config,
    ]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("renewed (--force)"),
        "{}",
        describe_output(&out)
    );
    wait_until_served(&nginx, &root, "app.example.test", |s| s != renewed.serial);

    // A mistyped --config is an error, not "nothing to renew".
    let out = op.vpsup(&[
        "renew-certs",
        "--local",
        "--config",
        "/nonexistent/renew.toml",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert!(
        stderr(&out).contains("/nonexistent/renew.toml"),
        "{}",
        describe_output(&out)
    );

    // An interrupted run (Ctrl-C, or systemd stopping the timer's service)
    // gives the lock back. A CA that never answers keeps the run inside the
    // lock until it is told to stop.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    op.write_config(&config(&format!("https://localhost:{silent_port}/dir")));
    let child = op.spawn(&["renew-certs", "--force"], b"");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::path::Path::new(&lock).join("token").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("interrupted before it finished"),
        "{}",
        describe_output(&out)
    );
    assert!(
        !std::path::Path::new(&lock).exists(),
        "the lock was left behind"
    );
    drop(silent);
}

/// Each certificate's action in a `renew-certs --json` report, by name
/// (`failed: <error>` for one that failed).
fn actions(out: &std::process::Output) -> std::collections::BTreeMap<String, String> {
    let doc = json(out);
    doc["hosts"][0]["certificates"]
        .as_array()
        .unwrap_or_else(|| panic!("no certificates: {doc}"))
        .iter()
        .map(|c| {
            let action = match c["error"].as_str() {
                Some(e) => format!("failed: {e}"),
                None => c["action"].as_str().unwrap().to_string(),
            };
            (c["name"].as_str().unwrap().to_string(), action)
        })
        .collect()
}

/// Issue 13, defect 6: two apps on one host, each from its own project with
/// its own [acme], sharing the host's store. portfolio validates over
/// HTTP-01; shop has a wildcard, validated over DNS-01 through a real BIND
/// with its TSIG key. Each project's runs write its own settings on the
/// host, and the host's timer renews each certificate with the settings of
/// the app it belongs to (once, the last project to run won for all).
/// shop's webroot is one nginx does not serve, so a portfolio certificate
/// renewed with shop's settings would fail: its renewal shows whose
/// settings were used, as the wildcard's does.
#[tokio::test(flavor = "multi_thread")]
async fn two_apps_on_one_host_each_renew_with_their_own_settings() {
    let bind = TestBind::start("example.test");
    let rig = Loopback::start(Some(bind.port)).await;
    let (pebble, transport, settings) = (&rig.pebble, &rig.transport, &rig.settings);
    let store = settings.store_dir.clone();
    let (portfolio, shop) = (Operator::new(), Operator::new());
    let not_served = shop.project.path().join("not-served");
    let project = |app: &str, domain: &str, webroot: &str, dns: &str| {
        format!(
            "{}[acme]\nemail = \"{app}@example.test\"\ndirectory = \"{}\"\nextra_root = \"{}\"\n\
             store = \"{store}\"\nwebroot = \"{webroot}\"\nreload = \"{}\"\n{dns}\n\
             [app]\nname = \"{app}\"\n\n[[sites]]\ndomain = \"{domain}\"\nservice = \"web\"\nport = 8080\n",
            host_section(&rig.sshd),
            pebble.directory,
            pebble.tls_root.display(),
            rig.nginx.reload_command(),
        )
    };
    portfolio.write_config(&project(
        "portfolio",
        "portfolio.example.test",
        &settings.webroot,
        "",
    ));
    std::fs::write(shop.project.path().join("tsig.key"), &bind.secret).unwrap();
    shop.write_config(&project(
        "shop",
        "*.shop.example.test",
        &not_served.display().to_string(),
        &format!(
            "[acme.dns]\nprovider = \"rfc2136\"\nserver = \"127.0.0.1:{}\"\nzone = \"{}\"\nkey_name = \"{}\"\nsecret_file = \"tsig.key\"\n",
            bind.port, bind.zone, bind.key_name
        ),
    ));

    // Their certificates, as each project's deploy issues them.
    let shop_settings = AcmeSettings {
        webroot: not_served.display().to_string(),
        dns: Some(Rfc2136 {
            server: format!("127.0.0.1:{}", bind.port).parse().unwrap(),
            zone: bind.zone.clone(),
            key_name: bind.key_name.clone(),
            algorithm: algorithm("hmac-sha256").unwrap(),
            secret: bind.secret.clone(),
        }),
        ..settings.clone()
    };
    for (acme, name, challenge) in [
        (settings, "portfolio.example.test", ChallengeKind::Http01),
        (&shop_settings, "*.shop.example.test", ChallengeKind::Dns01),
    ] {
        Certs::new(transport, acme)
            .ensure(&[name.to_string()], challenge, false)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}\n{}", pebble.log(), bind.log()));
    }
    let serials = || async {
        Certs::new(transport, settings)
            .store()
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|c| {
                let serial = CertInfo::from_pem_chain(&c.chain_pem).unwrap().serial;
                (c.name, serial)
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (portfolio_cert, shop_cert) = ("portfolio.example.test", "wildcard.shop.example.test");
    let renewed = "renewed (--force)";
    let left_to = |app: &str| format!("left to app {app}'s settings on the host");
    let no_secret = |out: &std::process::Output| {
        let text = describe_output(out);
        assert!(
            !text.contains(&bind.secret),
            "the TSIG secret in the output"
        );
        text
    };

    // Each project's run hands the host its settings; renewing with --force,
    // each renews its own certificate and leaves the other app's to it (it
    // used to renew the wildcard with portfolio's settings, and fail).
    let out = shop.vpsup(&["renew-certs", "--json"]);
    assert!(out.status.success(), "{}", no_secret(&out));
    let before = serials().await;
    let out = portfolio.vpsup(&["renew-certs", "--force", "--json"]);
    assert!(out.status.success(), "{}", no_secret(&out));
    assert_eq!(
        actions(&out),
        [
            (portfolio_cert.to_string(), renewed.to_string()),
            (shop_cert.to_string(), left_to("shop")),
        ]
        .into(),
    );
    let out = shop.vpsup(&["renew-certs", "--force", "--json"]);
    assert!(out.status.success(), "{}", no_secret(&out));
    assert_eq!(
        actions(&out),
        [
            (portfolio_cert.to_string(), left_to("portfolio")),
            (shop_cert.to_string(), renewed.to_string()),
        ]
        .into(),
    );
    let after = serials().await;
    assert!(before.iter().all(|(name, serial)| after[name] != *serial));

    // On the host: each app's settings beside the other, private, the secret
    // in its own file; no host-wide renew.toml (neither project lacks [app]).
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let apps = format!("{store}/renew.d");
    for (file, expected) in [
        ("portfolio.toml", 0o600),
        ("portfolio.extra-root.pem", 0o644),
        ("shop.toml", 0o600),
        ("shop.extra-root.pem", 0o644),
        ("shop.dns.secret", 0o600),
    ] {
        assert_eq!(mode(&format!("{apps}/{file}")), expected, "{file}");
    }
    assert!(!std::fs::read_to_string(format!("{apps}/shop.toml"))
        .unwrap()
        .contains(&bind.secret));
    let renew_toml = format!("{store}/renew.toml");
    assert!(!std::path::Path::new(&renew_toml).exists());

    // The host's timer, as its unit runs it (--config names the renew.toml
    // no project wrote): every certificate renewed, each with its app's settings.
    let host = Operator::new();
    let timer = [
        "renew-certs",
        "--local",
        "--force",
        "--json",
        "--config",
        &renew_toml,
    ];
    let out = host.vpsup(&timer);
    assert!(out.status.success(), "{}", no_secret(&out));
    assert_eq!(
        actions(&out),
        [
            (portfolio_cert.to_string(), renewed.to_string()),
            (shop_cert.to_string(), renewed.to_string()),
        ]
        .into(),
    );
    let before = after;
    let after = serials().await;
    assert!(before.iter().all(|(name, serial)| after[name] != *serial));

    // One app's settings failing (shop's TSIG secret gone) fails only its
    // certificate; one no app claims, with no renew.toml, says what to do.
    std::fs::remove_file(format!("{apps}/shop.dns.secret")).unwrap();
    Certs::new(transport, settings)
        .ensure(
            &["old.example.test".to_string()],
            ChallengeKind::Http01,
            false,
        )
        .await
        .unwrap();
    let out = host.vpsup(&timer);
    assert_eq!(out.status.code(), Some(1), "{}", no_secret(&out));
    let got = actions(&out);
    assert_eq!(got[portfolio_cert], renewed, "{got:?}");
    assert!(
        got[shop_cert].starts_with("failed: app shop's settings on the host: ")
            && got[shop_cert].contains("shop.dns.secret"),
        "{got:?}"
    );
    assert!(
        got["old.example.test"].starts_with("failed: no settings on this host renew it"),
        "{got:?}"
    );
    assert_ne!(serials().await[portfolio_cert], after[portfolio_cert]);
}
