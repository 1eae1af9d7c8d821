//! Real alert receivers on loopback: an SMTP server (Debian's aiosmtpd: plain,
//! STARTTLS or implicit TLS, with AUTH) and an HTTP server for webhooks and
//! ntfy. Each records what it received, one JSON object a line, for the test
//! to read back.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::free_port;

/// Debian's python3, where python3-aiosmtpd is (not a pyenv or venv one).
const PYTHON: &str = "/usr/bin/python3";

const SMTP_SERVER: &str = r#"
import email, email.policy, json, os, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, out, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
user, password = os.environ.get("SMTP_USER"), os.environ.get("SMTP_PASSWORD")

class Record:
    async def handle_DATA(self, server, session, envelope):
        login = getattr(session.auth_data, "login", None)
        mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with open(out, "a") as f:
            f.write(json.dumps({
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "subject": str(mail["subject"]),
                "header_to": str(mail["to"]),
                "body": mail.get_content(),
                "login": login.decode() if isinstance(login, bytes) else login,
                "tls": session.ssl is not None
                    or server.transport.get_extra_info("ssl_object") is not None,
            }) + "\n")
        return "250 OK"

def check(server, session, envelope, mechanism, data):
    ok = (isinstance(data, LoginPassword) and data.login.decode() == user
          and data.password.decode() == password)
    return AuthResult(success=ok, handled=False, auth_data=data)

kwargs = {}
if mode != "plain":
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.environ["CERT"], os.environ["KEY"])
    if mode == "starttls":
        kwargs.update(tls_context=ctx, require_starttls=True)
    else:
        # aiosmtpd only counts STARTTLS as TLS for AUTH; this listener is TLS throughout.
        kwargs.update(ssl_context=ctx, auth_require_tls=False)
if user:
    kwargs.update(authenticator=check, auth_required=True)

Controller(Record(), hostname="127.0.0.1", port=port, **kwargs).start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

const HTTP_SERVER: &str = r#"
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, out = int(sys.argv[1]), sys.argv[2]

class Record(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        with open(out, "a") as f:
            f.write(json.dumps({
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace"),
            }) + "\n")
        status, answer = (500, b"receiver broke: on purpose\n") if "/fail" in self.path else (200, b"ok\n")
        self.send_response(status)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", port), Record)
print("ready", flush=True)
server.serve_forever()
"#;

/// A receiver process and the file it records into.
pub struct Receiver {
    pub port: u16,
    child: Child,
    records: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    /// Everything received so far, oldest first.
    pub fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.records)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn start(script: &str, args: &[&str], env: &[(&str, String)]) -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.py");
        std::fs::write(&path, script).unwrap();
        let records = dir.path().join("received.jsonl");
        let port = free_port();
        let mut child = Command::new(PYTHON)
            .arg(&path)
            .arg(port.to_string())
            .arg(&records)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PYTHON} (tests/setup installs it): {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "receiver did not start");
        wait_for_port(port);
        Receiver {
            port,
            child,
            records,
            _dir: dir,
        }
    }

    /// An HTTP server answering every POST 200, or 500 when the path has `/fail`.
    pub fn http() -> Receiver {
        Receiver::start(HTTP_SERVER, &[], &[])
    }

    /// An SMTP server: `mode` is `plain`, `starttls` or `tls`; TLS with
    /// `tls`'s certificate and key; `login` makes AUTH required.
    pub fn smtp(mode: &str, tls: Option<&TestCa>, login: Option<(&str, &str)>) -> Receiver {
        let mut env = vec![];
        if let Some(ca) = tls {
            env.push(("CERT", ca.leaf.display().to_string()));
            env.push(("KEY", ca.leaf_key.display().to_string()));
        }
        if let Some((user, password)) = login {
            env.push(("SMTP_USER", user.to_string()));
            env.push(("SMTP_PASSWORD", password.to_string()));
        }
        Receiver::start(SMTP_SERVER, &[mode], &env)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A throwaway CA (openssl) and a certificate from it for `localhost` and
/// 127.0.0.1.
pub struct TestCa {
    pub root: PathBuf,
    pub leaf: PathBuf,
    pub leaf_key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        TestCa::with_names("DNS:localhost,IP:127.0.0.1")
    }

    /// Its leaf also for the address the test VM reaches this machine at
    /// (a receiver there is not on the VM's loopback: alerts to it need TLS).
    pub fn for_vm() -> TestCa {
        TestCa::with_names("DNS:localhost,IP:127.0.0.1,IP:198.51.100.2")
    }

    /// A CA and a leaf for `names` (an openssl subjectAltName value).
    pub fn with_names(names: &str) -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=vpsup test CA",
        ]);
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            d.join("ext.cnf"),
            format!(
                "subjectAltName={names}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        TestCa {
            root: d.join("ca.pem"),
            leaf: d.join("leaf.pem"),
            leaf_key: d.join("leaf.key"),
            _dir: dir,
        }
    }
}
