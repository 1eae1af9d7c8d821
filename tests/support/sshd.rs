//! A throw-away OpenSSH server on 127.0.0.1, one per test (or on port 22 of an
//! address in a network namespace, for the fan-out benchmark).

use super::{
    describe_output, free_port, generate_key, keygen, pub_name, read_text, send_signal, set_mode,
};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const SSHD: &str = "/usr/sbin/sshd";
/// Debian's sshd refuses to start without its privilege-separation directory.
const PRIVSEP_DIR: &str = "/run/sshd";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: u32 = 5;

/// How the test sshd is configured.
#[derive(Clone, Debug)]
pub struct SshdOptions {
    /// `PasswordAuthentication yes|no`.
    pub password_auth: bool,
    /// `MaxSessions` (channels per connection).
    pub max_sessions: u32,
    /// Appended to sshd_config. sshd keeps the FIRST value it reads for a keyword, so a
    /// harness default whose keyword also appears here (before any `Match`) is left out,
    /// letting these lines override it. ListenAddress, Port, HostKey and PidFile cannot be
    /// overridden (the harness relies on them), and LogLevel must stay at INFO or above
    /// because readiness is detected from the "Server listening" log line.
    pub extra_config: String,
    /// Listen on port 22 of this address inside this network namespace
    /// (`ip netns exec`) instead of a free port on 127.0.0.1.
    pub namespace: Option<(String, Ipv4Addr)>,
}

impl Default for SshdOptions {
    fn default() -> Self {
        SshdOptions {
            password_auth: true,
            max_sessions: 10,
            extra_config: String::new(),
            namespace: None,
        }
    }
}

/// A running `sshd -D` on `addr`:`port`, with all its files in `dir`.
/// Drop stops it (and its per-connection processes); then `dir` is removed.
pub struct TestSshd {
    /// 127.0.0.1, or the address in [`SshdOptions::namespace`].
    pub addr: Ipv4Addr,
    pub port: u16,
    pub dir: TempDir,
    /// Exact contents of the host public key file: "ssh-ed25519 AAAA... \n" (empty comment).
    pub host_key_pub: String,
    /// Unencrypted ed25519 private key, listed in the one AuthorizedKeysFile used for
    /// every user (root, [`super::sudo_user`], [`super::plain_user`], ...).
    pub client_key: PathBuf,
    /// Exact contents of `client_key`'s .pub file.
    pub client_key_pub: String,
    /// "[127.0.0.1]:PORT ssh-ed25519 AAAA..." as OpenSSH writes it to known_hosts
    /// (unhashed, no comment, no newline; "ADDR ssh-ed25519 ..." on port 22).
    pub known_hosts_line: String,
    opts: SshdOptions,
    child: Option<Child>,
}

/// Why one launch attempt did not produce a ready server.
enum LaunchError {
    /// Someone else bound the port between `free_port()` and sshd's bind.
    PortTaken,
}

impl TestSshd {
    /// Starts a server with [`SshdOptions::default`].
    pub fn start() -> TestSshd {
        Self::start_with(SshdOptions::default())
    }

    pub fn start_with(opts: SshdOptions) -> TestSshd {
        ensure_privsep_dir();
        let dir = tempfile::Builder::new()
            .prefix("vpsup-sshd-")
            // Not $TMPDIR: every path component must be traversable by the test users.
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("cannot create a temp dir for sshd: {e}"));
        // sshd reads AuthorizedKeysFile with the logging-in user's uid, so non-root test
        // users must be able to traverse the dir (TempDir makes it 0700). Private keys
        // inside stay 0600, as ssh-keygen writes them.
        set_mode(dir.path(), 0o755);
        // sshd_config has no escaping that we want to rely on; tempdir names never need it.
        assert!(
            !dir.path()
                .to_string_lossy()
                .contains(|c: char| c.is_whitespace() || c == '"' || c == '%'),
            "temp dir path {} is not usable in sshd_config",
            dir.path().display()
        );

        let client_key = generate_key(dir.path(), "client_ed25519", None);
        let client_key_pub = read_text(&client_key.with_file_name(pub_name(&client_key)));
        let authorized_keys = dir.path().join("authorized_keys");
        fs::write(&authorized_keys, &client_key_pub)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", authorized_keys.display()));
        set_mode(&authorized_keys, 0o644);

        let mut sshd = TestSshd {
            addr: opts
                .namespace
                .as_ref()
                .map_or(Ipv4Addr::LOCALHOST, |(_, addr)| *addr),
            port: 0,
            dir,
            host_key_pub: String::new(),
            client_key,
            client_key_pub,
            known_hosts_line: String::new(),
            opts,
            child: None,
        };
        sshd.new_host_key();

        for _ in 0..START_ATTEMPTS {
            // A namespace of its own has port 22 free.
            sshd.port = match sshd.opts.namespace {
                Some(_) => 22,
                None => free_port(),
            };
            match sshd.launch() {
                Ok(()) => {
                    sshd.update_known_hosts_line();
                    return sshd;
                }
                Err(LaunchError::PortTaken) => {} // lost a port race: try another port
            }
        }
        panic!(
            "sshd could not bind a free port in {START_ATTEMPTS} attempts; log:\n{}",
            sshd.log()
        );
    }

    /// Restarts THIS server on the same port with a freshly generated host key, so
    /// clients that trusted the old key see "REMOTE HOST IDENTIFICATION HAS CHANGED".
    /// Like `systemctl restart ssh`, only the listener restarts: established sessions
    /// keep running. `host_key_pub` and `known_hosts_line` are updated.
    pub fn regenerate_host_key_and_restart(&mut self) {
        self.stop_listener();
        self.new_host_key();
        // sshd sets SO_REUSEADDR, so TIME_WAIT is no problem; but another test's
        // free_port() may briefly hold the port we just released, so retry a little.
        for attempt in 1..=START_ATTEMPTS {
            match self.launch() {
                Ok(()) => {
                    self.update_known_hosts_line();
                    return;
                }
                Err(LaunchError::PortTaken) if attempt < START_ATTEMPTS => {
                    sleep(Duration::from_millis(200 * u64::from(attempt)));
                }
                Err(LaunchError::PortTaken) => {}
            }
        }
        panic!(
            "sshd could not re-bind port {} after the host key change; log:\n{}",
            self.port,
            self.log()
        );
    }

    /// Everything sshd logged so far (all restarts), for assertion messages.
    pub fn log(&self) -> String {
        let path = self.log_path();
        match fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("<cannot read {}: {e}>", path.display()),
        }
    }

    /// Path of the sshd_config in use, e.g. to show it in a failure message.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("sshd_config")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("sshd.log")
    }

    fn host_key_path(&self) -> PathBuf {
        self.dir.path().join("host_ed25519")
    }

    /// (Re)generates the host key in place and records its public half.
    fn new_host_key(&mut self) {
        let path = self.host_key_path();
        // Empty comment: the .pub then reads "ssh-ed25519 AAAA... ", like a stock host key.
        keygen(&path, "", "");
        self.host_key_pub = read_text(&path.with_file_name(pub_name(&path)));
    }

    fn update_known_hosts_line(&mut self) {
        let mut fields = self.host_key_pub.split_whitespace();
        let (Some(key_type), Some(blob)) = (fields.next(), fields.next()) else {
            panic!("unexpected host public key format: {:?}", self.host_key_pub);
        };
        // OpenSSH writes non-22 ports as "[host]:port".
        let host = match self.port {
            22 => self.addr.to_string(),
            port => format!("[{}]:{port}", self.addr),
        };
        self.known_hosts_line = format!("{host} {key_type} {blob}");
    }

    /// Writes the config for `self.port`, validates it, starts sshd and waits until it
    /// serves. Panics on anything but a lost port race.
    fn launch(&mut self) -> Result<(), LaunchError> {
        let config_path = self.config_path();
        let config = self.render_config();
        fs::write(&config_path, &config)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));

        let check = Command::new(SSHD)
            .arg("-t")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {SSHD} -t: {e}"));
        if !check.status.success() {
            panic!(
                "sshd -t rejected the test config:\n{}\n--- sshd_config ---\n{config}",
                describe_output(&check)
            );
        }

        // The log accumulates across restarts; readiness must only look at this launch.
        let log_path = self.log_path();
        let log_offset = fs::metadata(&log_path).map_or(0, |m| m.len());
        // Errors printed before sshd switches to -E logging land in the same file.
        let early_stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log_path.display()));
        let mut command = match &self.opts.namespace {
            Some((netns, _)) => {
                let mut ip = Command::new("ip"); // execs sshd in the namespace: same pid
                ip.args(["netns", "exec", netns, SSHD]);
                ip
            }
            None => Command::new(SSHD), // absolute path: sshd re-executes itself
        };
        let child = command
            .args(["-D", "-e", "-f"])
            .arg(&config_path)
            .arg("-E")
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(early_stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SSHD}: {e}"));
        self.child = Some(child);

        let result = self.wait_ready(log_offset);
        if result.is_err() {
            self.stop_listener();
        }
        result
    }

    /// Ready = sshd logged that it listens on OUR port (so the port is ours, not a
    /// racing process's) and a TCP connect there gets an "SSH-2.0-" banner.
    fn wait_ready(&mut self, log_offset: u64) -> Result<(), LaunchError> {
        let listening = format!("Server listening on {} port {}.", self.addr, self.port);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let new_log = self.log_since(log_offset);
            let child = self.child.as_mut().expect("sshd child was just spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                if new_log.contains("Address already in use") {
                    return Err(LaunchError::PortTaken);
                }
                panic!(
                    "sshd exited ({status}) before becoming ready on port {}; log:\n{}",
                    self.port,
                    self.log()
                );
            }
            if new_log.contains(&listening) && banner_received(self.addr, self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop_listener();
                panic!(
                    "sshd not ready on port {} within {READY_TIMEOUT:?} (no \"{listening}\" log line \
                     or no SSH banner; LogLevel must be INFO or more verbose); log:\n{}",
                    self.port,
                    self.log()
                );
            }
            sleep(Duration::from_millis(20));
        }
    }

    fn log_since(&self, offset: u64) -> String {
        let mut bytes = Vec::new();
        if let Ok(mut f) = fs::File::open(self.log_path()) {
            use std::io::{Seek, SeekFrom};
            if f.seek(SeekFrom::Start(offset)).is_ok() {
                let _ = f.read_to_end(&mut bytes);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn render_config(&self) -> String {
        let d = self.dir.path();
        let o = &self.opts;
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let mut c = String::from("# Generated by vpsup's test harness (tests/support/sshd.rs)\n");
        // Fixed: readiness detection, the known_hosts line and Drop depend on these.
        let _ = writeln!(c, "ListenAddress {}", self.addr);
        let _ = writeln!(c, "Port {}", self.port);
        let _ = writeln!(c, "HostKey {}", self.host_key_path().display());
        let _ = writeln!(c, "PidFile {}", d.join("sshd.pid").display());
        // Defaults that extra_config may override (see SshdOptions::extra_config).
        let overridden = global_keywords(&o.extra_config);
        let defaults = [
            // One file for all users, so tests never write into home directories.
            (
                "AuthorizedKeysFile",
                d.join("authorized_keys").display().to_string(),
            ),
            // The temp dir is root-owned but used by non-root users too.
            ("StrictModes", "no".into()),
            // Tests run as root and some log in as root with the key.
            ("PermitRootLogin", "yes".into()),
            ("PasswordAuthentication", yes_no(o.password_auth).into()),
            ("KbdInteractiveAuthentication", "no".into()),
            // Passwords are then checked against /etc/shadow directly; no PAM stack needed.
            ("UsePAM", "no".into()),
            ("MaxSessions", o.max_sessions.to_string()),
            ("LogLevel", "VERBOSE".into()),
            ("Subsystem", "sftp internal-sftp".into()),
        ];
        for (keyword, value) in defaults {
            if !overridden.contains(&keyword.to_ascii_lowercase()) {
                let _ = writeln!(c, "{keyword} {value}");
            }
        }
        if !o.extra_config.is_empty() {
            c.push_str("# extra_config\n");
            c.push_str(&o.extra_config);
            if !c.ends_with('\n') {
                c.push('\n');
            }
        }
        c
    }

    /// SIGTERM to the listening sshd, then wait (SIGKILL after 5 s).
    fn stop_listener(&mut self) {
        if let Some(child) = self.child.take() {
            send_signal(child.id(), "TERM");
            reap(child);
        }
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // Per-connection sshd processes outlive the listener; end them too so a test
            // that leaked a connection leaves nothing running.
            for pid in child_pids(child.id()) {
                send_signal(pid, "TERM");
            }
        }
        self.stop_listener();
        // `dir` is removed after this, when the fields drop.
    }
}

/// Waits up to 5 s for `child` to exit, then kills it. Never panics (used from Drop).
fn reap(mut child: Child) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// PIDs whose parent is `parent`, from /proc (std has no API for it).
fn child_pids(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // /proc/PID/stat: "pid (comm) state ppid ..."; comm may contain spaces and ')'.
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .is_some_and(|stat| {
                    stat.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                        == Some(parent)
                })
        })
        .collect()
}

/// Lower-cased keywords set in `config` before its first `Match` block.
fn global_keywords(config: &str) -> HashSet<String> {
    config
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.split(|c: char| c.is_whitespace() || c == '=')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase()
        })
        .take_while(|k| k != "match")
        .collect()
}

/// True once the port answers with an SSH-2.0 identification line.
fn banner_received(addr: Ipv4Addr, port: u16) -> bool {
    let addr = SocketAddr::from((addr, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut banner = [0u8; 8];
    stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0-"
}

fn ensure_privsep_dir() {
    use std::os::unix::fs::PermissionsExt;
    let path = Path::new(PRIVSEP_DIR);
    // create_dir_all tolerates a parallel test creating it first.
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("cannot create {PRIVSEP_DIR}: {e}"));
    let mode = fs::metadata(path)
        .unwrap_or_else(|e| panic!("cannot stat {PRIVSEP_DIR}: {e}"))
        .permissions()
        .mode();
    if mode & 0o7777 != 0o755 {
        set_mode(path, 0o755);
    }
}
