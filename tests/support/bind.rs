//! A real authoritative DNS server: BIND 9 (Debian package bind9) on a
//! loopback port, serving one zone that accepts TSIG-signed dynamic updates of
//! TXT (DNS-01) and A/AAAA (deploy's [app] dns = "update") records, as a
//! DNS provider would.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub struct TestBind {
    pub port: u16,
    pub zone: String,
    pub key_name: String,
    /// base64, as tsig-keygen prints it.
    pub secret: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl TestBind {
    /// Serves `zone` (every name in it has A 127.0.0.1).
    pub fn start(zone: &str) -> TestBind {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let key_name = "vpsup-acme".to_string();
        let keygen = Command::new("tsig-keygen")
            .args(["-a", "hmac-sha256", &key_name])
            .output()
            .expect("tsig-keygen runs (Debian package bind9; tests/setup installs it)");
        let key_conf = String::from_utf8(keygen.stdout).unwrap();
        let secret = key_conf
            .lines()
            .find_map(|l| l.trim().strip_prefix("secret \""))
            .and_then(|s| s.strip_suffix("\";"))
            .expect("a secret in tsig-keygen's output")
            .to_string();
        std::fs::write(dir.path().join("key.conf"), &key_conf).unwrap();
        std::fs::write(
            dir.path().join("zone.db"),
            format!(
                "$TTL 60\n@ IN SOA ns.{zone}. admin.{zone}. 1 60 60 600 60\n@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n@ IN A 127.0.0.1\n* IN A 127.0.0.1\n"
            ),
        )
        .unwrap();
        let port = free_port();
        std::fs::write(
            dir.path().join("named.conf"),
            format!(
                r#"options {{
  directory "{d}"; pid-file "{d}/named.pid"; session-keyfile "{d}/session.key";
  managed-keys-directory "{d}";
  listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
  recursion no; dnssec-validation no;
}};
controls {{ }};
include "{d}/key.conf";
zone "{zone}" {{ type primary; file "{d}/zone.db"; update-policy {{ grant {key_name} zonesub TXT A AAAA; }}; }};
"#
            ),
        )
        .unwrap();
        let child = Command::new("named")
            .args(["-g", "-c"])
            .arg(dir.path().join("named.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("named.log")).unwrap())
            .spawn()
            .expect("named runs");
        let bind = TestBind {
            port,
            zone: zone.to_string(),
            key_name,
            secret,
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "named did not start: {}",
                bind.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        bind
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// The zone as named holds it now (with its journal applied), as text.
    pub fn zone_dump(&self) -> String {
        let out = Command::new("named-journalprint")
            .arg(self.dir.path().join("zone.db.jnl"))
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for TestBind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
