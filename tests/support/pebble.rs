//! A real ACME CA on loopback: Pebble and pebble-challtestsrv from Debian's
//! `pebble` package (../shared/TESTING.md), plus a real nginx serving the ACME
//! webroot on the port Pebble validates HTTP-01 against. challtestsrv answers
//! every DNS name with 127.0.0.1, so any test domain "points at" this machine.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub struct TestPebble {
    /// The ACME directory URL.
    pub directory: String,
    /// The root that signs Pebble's own HTTPS listener ([acme] extra_root).
    pub tls_root: PathBuf,
    management_port: u16,
    /// challtestsrv's management API (its DNS answers).
    dns_management_port: u16,
    dns_server: String,
    dir: tempfile::TempDir,
    /// challtestsrv, then pebble.
    children: Vec<Child>,
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl TestPebble {
    /// Starts Pebble validating HTTP-01 on `http_port` (where the test's nginx
    /// listens); names resolve through challtestsrv (all to 127.0.0.1).
    pub fn start(http_port: u16) -> TestPebble {
        TestPebble::start_with_dns(http_port, None)
    }

    /// The same, resolving names (and DNS-01 TXT records) through the DNS
    /// server on 127.0.0.1:`dns_port` instead.
    pub fn start_with_dns(http_port: u16, dns_port: Option<u16>) -> TestPebble {
        TestPebble::start_with(http_port, dns_port, false)
    }

    /// Pebble serving HTTPS with a certificate flagged as a CA's
    /// (basicConstraints CA:TRUE), which a TLS client must refuse.
    pub fn start_with_ca_flagged_listener(http_port: u16) -> TestPebble {
        TestPebble::start_with(http_port, None, true)
    }

    fn start_with(http_port: u16, dns_port: Option<u16>, ca_flagged: bool) -> TestPebble {
        let dir = tempfile::tempdir().unwrap();
        // Pebble's listener certificate, for "localhost", self-signed: it is its own root.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        if ca_flagged {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let cert = params.self_signed(&key).unwrap();
        let tls_root = dir.path().join("pebble-tls.pem");
        std::fs::write(&tls_root, cert.pem()).unwrap();
        std::fs::write(dir.path().join("pebble-tls.key"), key.serialize_pem()).unwrap();

        let (listen, management, dns, dns_management, tls_port) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.path().join("pebble-tls.pem"),
            "privateKey": dir.path().join("pebble-tls.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let challtestsrv = Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-management",
                &format!("127.0.0.1:{dns_management}"),
            ])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("pebble-challtestsrv runs (Debian package pebble; tests/setup installs it)");
        let mut pebble = TestPebble {
            directory: format!("https://localhost:{listen}/dir"),
            tls_root,
            management_port: management,
            dns_management_port: dns_management,
            dns_server: format!("127.0.0.1:{}", dns_port.unwrap_or(dns)),
            dir,
            children: vec![challtestsrv],
        };
        pebble.spawn_pebble();
        pebble
    }

    fn spawn_pebble(&mut self) {
        let log = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(name))
                .unwrap()
        };
        let child = Command::new("pebble")
            .arg("-config")
            .arg(self.dir.path().join("pebble.json"))
            .args(["-dnsserver", &self.dns_server])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            // Authorizations are never reused: every order really validates.
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble runs");
        self.children.push(child);
        let listen: u16 = self
            .directory
            .rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches("/dir")
            .parse()
            .unwrap();
        wait_for_port(listen, "pebble");
        wait_for_port(self.management_port, "pebble's management API");
    }

    /// Pebble again, at the same URL, knowing nothing: every account and
    /// certificate it issued is forgotten (as when a CA drops an account).
    pub fn restart(&mut self) {
        let mut old = self.children.pop().unwrap();
        let _ = old.kill();
        let _ = old.wait();
        self.spawn_pebble();
    }

    /// Stops Pebble (a CA outage); its files stay.
    pub fn stop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Makes challtestsrv answer `name` with `ipv4` instead of 127.0.0.1 (a
    /// name that points at another server).
    pub fn point(&self, name: &str, ipv4: &str) {
        let body = serde_json::json!({"host": name, "addresses": [ipv4]}).to_string();
        curl(&[
            "-d",
            &body,
            &format!("http://127.0.0.1:{}/add-a", self.dns_management_port),
        ]);
    }

    /// The root that signs the certificates Pebble issues (new at every start).
    pub fn issuing_root(&self) -> PathBuf {
        let path = self.dir.path().join("issuing-root.pem");
        let root = curl(&[
            "--cacert",
            &self.tls_root.display().to_string(),
            &format!("https://localhost:{}/roots/0", self.management_port),
        ]);
        std::fs::write(&path, root).unwrap();
        path
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

/// What curl fetched (`-sS --fail` plus `args`); a failure fails the test.
fn curl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "--fail"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl Drop for TestPebble {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real nginx (Debian package) in a temp dir: the ACME webroot on HTTP, and
/// an HTTPS server once a certificate exists.
pub struct TestNginx {
    pub http_port: u16,
    pub https_port: u16,
    pub webroot: PathBuf,
    dir: tempfile::TempDir,
    process: Option<NginxProcess>,
}

/// A real nginx in the foreground with the configuration `conf`, stopped
/// (its whole process group) when dropped.
pub struct NginxProcess(Child);

impl NginxProcess {
    /// Starts it and waits until it listens on every one of `ports`.
    pub fn start(conf: &Path, ports: &[u16]) -> NginxProcess {
        let child = Command::new("nginx")
            .process_group(0)
            .arg("-c")
            .arg(conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx runs");
        let process = NginxProcess(child);
        for port in ports {
            wait_for_port(*port, "nginx");
        }
        process
    }
}

impl Drop for NginxProcess {
    fn drop(&mut self) {
        // The whole process group: killing only the master would orphan its
        // workers (and `nginx -s stop` re-reads a config whose files may be gone).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

impl TestNginx {
    pub fn start() -> TestNginx {
        let dir = tempfile::tempdir().unwrap();
        let webroot = dir.path().join("webroot");
        std::fs::create_dir(&webroot).unwrap();
        let (http_port, https_port) = (free_port(), free_port());
        let mut nginx = TestNginx {
            http_port,
            https_port,
            webroot,
            process: None,
            dir,
        };
        // HTTPS is bound from the start, with a placeholder certificate: a
        // port picked now and bound only later could be taken meanwhile by
        // another test's server.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["placeholder.invalid".to_string()]).unwrap();
        let (chain, key_file) = (
            nginx.dir.path().join("placeholder.pem"),
            nginx.dir.path().join("placeholder.key"),
        );
        std::fs::write(&chain, params.self_signed(&key).unwrap().pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        nginx.write_config(&chain, &key_file);
        nginx.process = Some(NginxProcess::start(&nginx.conf(), &[http_port, https_port]));
        nginx
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    /// The config: the webroot on HTTP; HTTPS with this chain and key.
    fn write_config(&self, chain: &Path, key: &Path) {
        let d = self.dir.path().display();
        let https = format!(
            "server {{ listen 127.0.0.1:{} ssl; ssl_certificate {}; ssl_certificate_key {}; location / {{ return 200 \"tls ok\\n\"; }} }}",
            self.https_port,
            chain.display(),
            key.display()
        );
        let config = format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n  server {{ listen 127.0.0.1:{}; location ^~ /.well-known/acme-challenge/ {{ root {}; default_type text/plain; }} }}\n  {https}\n}}\n",
            self.http_port,
            self.webroot.display()
        );
        std::fs::write(self.conf(), config).unwrap();
    }

    /// The command that makes this nginx pick up new certificates: what
    /// `[acme] reload` says on a real host (`nginx -t && systemctl reload nginx`).
    pub fn reload_command(&self) -> String {
        format!(
            "nginx -t -q -c {0} && nginx -s reload -c {0}",
            self.conf().display()
        )
    }

    /// Serves HTTPS with this certificate from now on.
    pub fn enable_tls(&self, chain: &Path, key: &Path) {
        self.write_config(chain, key);
        let out = Command::new("sh")
            .args(["-c", &self.reload_command()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
