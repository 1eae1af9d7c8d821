//! Hostile text through every vpsup.toml value (issue 14, finding 4).
//!
//! `KEYS` lists every key of the schema (a key the table does not list fails
//! the test: a new key must say where its value goes) with how its value is
//! kept from running on a host: config validation refuses hostile text with
//! a message pointing at it, or the value reaches the host only through
//! code that keeps it text, which the test runs here for real with every
//! hostile string (a payload `touch <marker>` must leave no marker, and the
//! value must arrive as written), or it never leaves this machine.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::Config;

/// A vpsup.toml with every section and key set (map and list entries once).
const SAMPLE: &str = r#"
[hosts.web]
address = "203.0.113.42"
port = 22
user = "deploy"
identity_file = "id_ed25519"
sudo = true
http_port = 8080
https_port = 8443

[init]
admin_user = "deploy"
ssh_port = 22
extra_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk4Cz6ZlMbDcj6ZgvjKOPhv1gKPtcCHJmBb6yMd0pD5 op"]
docker = "official"
swap = "1G"
allow_ports = [8443]
ssh_users = ["alice"]
ssh_classical_kex = true
host_binary = "vpsup-arm64"

[acme]
email = "ops@example.com"
directory = "https://acme.example.com/directory"
extra_root = "root.pem"
profile = "tlsserver"
store = "/etc/vpsup/acme"
webroot = "/var/lib/vpsup/acme"
reload = "nginx -t && systemctl reload nginx"

[acme.dns]
provider = "rfc2136"
server = "ns1.example.com:53"
zone = "example.com"
key_name = "vpsup"
algorithm = "hmac-sha256"
secret_file = "tsig.secret"

[app]
name = "shop"
compose_files = ["compose.yml"]
env_files = ["prod.env"]
public_ports = "refuse"
releases = 5
health_timeout = 120
dns_resolver = "1.1.1.1"
dns = "check"
drain = "30s"

[app.services.web]
strategy = "blue-green"

[app.secrets]
generate = ["SECRET_KEY"]

[[sites]]
domain = "shop.example.com"
service = "web"
port = 80
routes = [{ path = "/api/", service = "api", port = 8000, websockets = true }]
websockets = false
max_body = "10m"
health = "/health"
check_name = "shop.example.com"

[backup]
repository = "sftp:u123@backup.example.com:/shop"
password_file = "backup-password"
sftp_identity_file = "backup_key"
sftp_known_hosts = "backup_known_hosts"
schedule = "daily"
verify_schedule = "weekly"
max_age = "2d"
keep_hourly = 0
keep_daily = 7
keep_weekly = 4
keep_monthly = 12
keep_yearly = 0
before_deploy = true
timeout = "6h"

[watch]
disk_percent = 90
disk_full_in = "7d"
certificate_days = 14
build_cache = "10G"

[alerts]
webhook = "https://hooks.example.com/T000/B000"
webhook_format = "slack"
ntfy = "https://ntfy.example.com/shop"
ntfy_token_file = "ntfy-token"
smtp_server = "smtp.example.com:587"
smtp_tls = "starttls"
smtp_user = "vpsup"
smtp_password_file = "smtp-password"
email_from = "vpsup@example.com"
email_to = ["ops@example.com"]
ca_file = "alerts-ca.pem"
remind_every = "1d"

[backup.services.db]
engine = "postgres"
mode = "databases"
databases = ["shop"]
password_env = "PGPASSWORD"
skip = false
"#;

/// Where a key's value can go, and what keeps it from running there.
enum Reach {
    /// Config validation refuses every hostile string, pointing at it.
    Refused,
    /// Accepted text that reaches hosts through `check` (run for real).
    Checked(Check),
    /// A shell command on the host by design (the operator's own); `check`
    /// proves it travels as written.
    Command(Check),
    /// Used on this machine only (a connection, a lookup, a local file
    /// whose content travels, never its name): no host shell or file.
    Local(&'static str),
}

/// What a value did on its way to a host: `Err` describes how it went wrong.
type Check = fn(&Case) -> Result<Outcome, String>;

enum Outcome {
    /// Arrived as written, nothing ran.
    Arrived,
    /// Stopped before reaching the host, with this message.
    Refused(String),
}

/// One hostile value set in the sample.
struct Case {
    config: Config,
    value: String,
    /// The project directory, with the files the sample names.
    project: PathBuf,
    /// A scratch directory.
    scratch: PathBuf,
}

/// Every key of the schema, `*` for a map's entries (and, alone at the end,
/// the entry's name), `[]` for a list's; with a value that carries the
/// hostile text (`{}`) past the rest of its validation, and where it goes.
const KEYS: &[(&str, &str, Reach)] = &[
    ("hosts.*", "{}", Reach::Refused),
    ("hosts.*.address", "{}", Reach::Local("where vpsup connects and what the DNS preflight compares; built-in playbooks and templates never use `host.address` (a project's own playbook that does decides how)")),
    ("hosts.*.port", "{}", Reach::Refused),
    ("hosts.*.user", "{}", Reach::Local("the SSH login name, sent in the SSH protocol; built-in playbooks and templates never use `host.user` (a project's own playbook that does decides how)")),
    ("hosts.*.identity_file", "{}", Reach::Local("a key file read here")),
    ("hosts.*.sudo", "{}", Reach::Refused),
    ("hosts.*.http_port", "{}", Reach::Refused),
    ("hosts.*.https_port", "{}", Reach::Refused),
    ("init.admin_user", "{}", Reach::Refused),
    ("init.ssh_port", "{}", Reach::Refused),
    ("init.extra_keys[]", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk4Cz6ZlMbDcj6ZgvjKOPhv1gKPtcCHJmBb6yMd0pD5 {}", Reach::Checked(extra_keys)),
    ("init.docker", "{}", Reach::Refused),
    ("init.swap", "{}", Reach::Refused),
    ("init.allow_ports[]", "{}", Reach::Refused),
    ("init.ssh_users[]", "{}", Reach::Refused),
    ("init.ssh_classical_kex", "{}", Reach::Refused),
    ("init.host_binary", "{}", Reach::Local("a binary read here, uploaded by content to a fixed path")),
    ("acme.email", "ops@example.com{}", Reach::Checked(acme_settings)),
    ("acme.directory", "https://acme.example.com/{}", Reach::Checked(acme_settings)),
    ("acme.extra_root", "{}", Reach::Local("a file read here; its content goes to a fixed path")),
    ("acme.profile", "{}", Reach::Checked(acme_settings)),
    ("acme.store", "/etc/{}", Reach::Refused),
    ("acme.webroot", "/var/{}", Reach::Refused),
    ("acme.reload", "{}", Reach::Command(acme_settings)),
    ("acme.dns.provider", "{}", Reach::Refused),
    ("acme.dns.server", "{}", Reach::Checked(acme_settings)),
    ("acme.dns.zone", "{}", Reach::Refused),
    ("acme.dns.key_name", "{}", Reach::Checked(acme_settings)),
    ("acme.dns.algorithm", "{}", Reach::Checked(acme_settings)),
    ("acme.dns.secret_file", "{}", Reach::Local("a file read here; its content goes to a fixed path, on stdin")),
    ("app.name", "{}", Reach::Refused),
    ("app.compose_files[]", "{}", Reach::Checked(compose_command)),
    ("app.env_files[]", "{}", Reach::Checked(compose_command)),
    ("app.public_ports", "{}", Reach::Refused),
    ("app.releases", "{}", Reach::Refused),
    ("app.health_timeout", "{}", Reach::Refused),
    ("app.secrets.generate[]", "{}", Reach::Refused),
    ("app.allow_private_keys[]", "{}", Reach::Local("project paths matched here against the release's files; never sent")),
    ("app.dns_resolver", "{}", Reach::Local("the resolver the DNS preflight asks, from here")),
    ("app.dns", "{}", Reach::Refused),
    ("app.drain", "{}", Reach::Refused),
    ("app.services.*", "{}", Reach::Refused),
    ("app.services.*.strategy", "{}", Reach::Refused),
    ("sites[].domain", "{}", Reach::Refused),
    ("sites[].service", "{}", Reach::Refused),
    ("sites[].port", "{}", Reach::Refused),
    ("sites[].routes[].path", "/api/{}", Reach::Refused),
    ("sites[].routes[].service", "{}", Reach::Refused),
    ("sites[].routes[].port", "{}", Reach::Refused),
    ("sites[].routes[].websockets", "{}", Reach::Refused),
    ("sites[].websockets", "{}", Reach::Refused),
    ("sites[].max_body", "{}", Reach::Refused),
    ("sites[].health", "/{}", Reach::Refused),
    ("sites[].check_name", "{}", Reach::Refused),
    ("backup.repository", "sftp:u123@backup.example.com:/shop/{}", Reach::Checked(backup_settings)),
    // The user and host become words of the ssh command restic runs.
    ("backup.repository", "sftp:{}@backup.example.com:/shop", Reach::Refused),
    ("backup.repository", "sftp:u123@{}:/shop", Reach::Refused),
    ("backup.password_file", "{}", Reach::Local("a file read here; its content goes to a fixed path, on stdin")),
    ("backup.s3_credentials_file", "{}", Reach::Local("a file read here; its values go into the env file, quoted (backup.repository's check covers that file)")),
    ("backup.sftp_identity_file", "{}", Reach::Local("a file read here; its content goes to a fixed path, on stdin")),
    ("backup.sftp_known_hosts", "{}", Reach::Local("a file read here; its content goes to a fixed path, on stdin")),
    ("backup.schedule", "{}", Reach::Refused),
    ("backup.verify_schedule", "{}", Reach::Refused),
    ("backup.max_age", "{}", Reach::Refused),
    ("backup.keep_hourly", "{}", Reach::Refused),
    ("backup.keep_daily", "{}", Reach::Refused),
    ("backup.keep_weekly", "{}", Reach::Refused),
    ("backup.keep_monthly", "{}", Reach::Refused),
    ("backup.keep_yearly", "{}", Reach::Refused),
    ("backup.before_deploy", "{}", Reach::Refused),
    ("backup.timeout", "{}", Reach::Refused),
    ("watch.disk_percent", "{}", Reach::Refused),
    ("watch.disk_full_in", "{}", Reach::Refused),
    ("watch.certificate_days", "{}", Reach::Refused),
    ("watch.build_cache", "{}", Reach::Refused),
    ("alerts.webhook", "https://hooks.example.com/{}", Reach::Checked(watch_settings)),
    ("alerts.webhook_format", "{}", Reach::Refused),
    ("alerts.ntfy", "https://ntfy.example.com/{}", Reach::Checked(watch_settings)),
    ("alerts.ntfy_token_file", "{}", Reach::Local("a file read here; its content goes to a fixed path, on stdin")),
    ("alerts.smtp_server", "{}", Reach::Refused),
    ("alerts.smtp_tls", "{}", Reach::Refused),
    ("alerts.smtp_user", "{}", Reach::Checked(watch_settings)),
    ("alerts.smtp_password_file", "{}", Reach::Local("a file read here; its content goes to a fixed path, on stdin")),
    ("alerts.email_from", "{}", Reach::Refused),
    ("alerts.email_to[]", "{}", Reach::Refused),
    ("alerts.ca_file", "{}", Reach::Local("a file read here; its content goes to a fixed path, on stdin")),
    ("alerts.remind_every", "{}", Reach::Refused),
    ("backup.services.*", "{}", Reach::Refused),
    ("backup.services.*.engine", "{}", Reach::Refused),
    ("backup.services.*.mode", "{}", Reach::Refused),
    ("backup.services.*.databases[]", "{}", Reach::Refused),
    ("backup.services.*.exclude[]", "{}", Reach::Refused),
    ("backup.services.*.password_env", "{}", Reach::Refused),
    ("backup.services.*.stop", "{}", Reach::Refused),
    ("backup.services.*.skip", "{}", Reach::Refused),
];

/// Text that runs `touch MARK` wherever a shell, or a file format with
/// comments and separators, would take it for more than a value.
fn hostile(mark: &Path) -> Vec<String> {
    let m = mark.display();
    vec![
        format!("`touch {m}`"),
        format!("$(touch {m})"),
        format!("'; touch {m}; '"),
        format!("\"; touch {m}; \""),
        format!("x\ntouch {m}\n"),
        format!("x #; touch {m}"),
        format!("x; touch {m}"),
        format!("x\\\"; touch {m} #"),
        format!("a b && touch {m}"),
        format!("-oProxyCommand=touch {m}"),
        // No space: what gets past validation that only refuses whitespace.
        format!("`touch${{IFS}}{m}`"),
        format!("$(touch${{IFS}}{m})"),
        format!("x;touch${{IFS}}{m}"),
    ]
}

/// The maps of the schema, whose entries' names are the user's.
const MAPS: &[&str] = &["hosts", "backup.services", "app.services"];

/// Every key `value` (a serialized `Config`) has, in `KEYS`' notation.
fn schema_keys(value: &Value, prefix: &str, out: &mut Vec<String>) {
    let Value::Object(map) = value else { return };
    let is_map = MAPS.contains(&prefix.trim_end_matches('.'));
    if is_map {
        out.push(format!("{prefix}*"));
    }
    for (name, child) in map {
        let key = format!("{prefix}{}", if is_map { "*" } else { name });
        match child {
            Value::Object(_) => schema_keys(child, &format!("{key}."), out),
            Value::Array(items) if items.first().is_some_and(Value::is_object) => {
                for item in items {
                    schema_keys(item, &format!("{key}[]."), out);
                }
            }
            Value::Array(_) => out.push(format!("{key}[]")),
            _ => out.push(key),
        }
    }
}

/// `doc` (the sample as JSON) with the value at `key` set to `value`; a
/// trailing `*` renames the map's entry.
fn set(doc: &mut Value, key: &str, value: &str) {
    let parts: Vec<&str> = key.split('.').collect();
    let mut here = doc;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let (name, list) = match part.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (*part, false),
        };
        if name == "*" {
            let map = here.as_object_mut().expect("a map");
            let first = map.keys().next().expect("an entry").clone();
            if last {
                let entry = map.remove(&first).unwrap();
                map.insert(value.to_string(), entry);
                return;
            }
            here = map.get_mut(&first).unwrap();
            continue;
        }
        if last {
            let map = here.as_object_mut().expect("a table");
            map.insert(
                name.to_string(),
                if list { json!([value]) } else { json!(value) },
            );
            return;
        }
        let child = here
            .get_mut(name)
            .unwrap_or_else(|| panic!("{key}: no {name}"));
        here = if list { &mut child[0] } else { child };
    }
}

#[test]
fn every_key_is_listed_with_where_its_value_goes() {
    let config: Config = toml::from_str(SAMPLE).unwrap();
    let mut keys = Vec::new();
    schema_keys(&serde_json::to_value(&config).unwrap(), "", &mut keys);
    keys.sort();
    keys.dedup();
    let mut listed: Vec<String> = KEYS.iter().map(|(k, _, _)| k.to_string()).collect();
    listed.sort();
    listed.dedup();
    let missing: Vec<&String> = keys.iter().filter(|k| !listed.contains(k)).collect();
    let stale: Vec<&String> = listed.iter().filter(|k| !keys.contains(k)).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "add to KEYS, saying where its value goes: {missing:?}; no such key: {stale:?}"
    );
}

#[test]
fn hostile_values_are_refused_or_stay_text() {
    let sample: Value = toml::from_str(SAMPLE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("pwned");
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    for (file, content) in [
        ("root.pem", "-----BEGIN CERTIFICATE-----\n"),
        ("tsig.secret", "c2VjcmV0\n"),
        ("ntfy-token", "tk_secret\n"),
        ("smtp-password", "pw\n"),
        ("alerts-ca.pem", "-----BEGIN CERTIFICATE-----\n"),
        ("backup-password", "pw\n"),
        ("backup_key", "-----BEGIN OPENSSH PRIVATE KEY-----\n"),
        (
            "backup_known_hosts",
            "backup.example.com ssh-ed25519 AAAA\n",
        ),
    ] {
        std::fs::write(project.join(file), content).unwrap();
    }
    let mut failures = Vec::new();
    for (key, carrier, reach) in KEYS {
        if let Reach::Local(why) = reach {
            assert!(!why.is_empty(), "{key}: say why it stays here");
            continue;
        }
        let mut refused_all = true;
        for payload in hostile(&mark) {
            let value = carrier.replace("{}", &payload);
            let mut doc = sample.clone();
            set(&mut doc, key, &value);
            let text = toml::to_string(&doc).unwrap();
            let scratch = tempfile::tempdir().unwrap();
            let outcome = match Config::parse(&text, Path::new("vpsup.toml")) {
                Err(super::ConfigError::Invalid { message, line, .. }) => {
                    if line == 0 || message.is_empty() {
                        failures.push(format!("{key} = {value:?}: an unclear error"));
                    }
                    Outcome::Refused(message)
                }
                Err(other) => panic!("{other}"),
                Ok(config) => {
                    let case = Case {
                        config,
                        value: value.clone(),
                        project: project.clone(),
                        scratch: scratch.path().to_path_buf(),
                    };
                    match reach {
                        Reach::Refused => {
                            failures.push(format!("{key} = {value:?}: accepted"));
                            Outcome::Arrived
                        }
                        Reach::Checked(check) | Reach::Command(check) => match check(&case) {
                            Ok(outcome) => outcome,
                            Err(e) => {
                                failures.push(format!("{key} = {value:?}: {e}"));
                                Outcome::Arrived
                            }
                        },
                        Reach::Local(_) => Outcome::Arrived,
                    }
                }
            };
            if let Outcome::Refused(message) = &outcome {
                assert!(!message.trim().is_empty(), "{key}: an empty refusal");
            } else {
                refused_all = false;
            }
            if mark.exists() {
                failures.push(format!("{key} = {value:?}: RAN the payload"));
                std::fs::remove_file(&mark).unwrap();
            }
        }
        if refused_all && !matches!(reach, Reach::Refused) {
            failures.push(format!(
                "{key} = {carrier:?}: every hostile value is refused: make it Reach::Refused"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The command lines deploy runs compose with (`Stack`), run here with a
/// `docker` that records its arguments: each compose and env file arrives
/// as one argument, as written.
fn compose_command(case: &Case) -> Result<Outcome, String> {
    use crate::deploy::compose_cli::Stack;
    let app = case.config.app.as_ref().unwrap();
    let text = |paths: &[PathBuf]| -> Vec<String> {
        paths.iter().map(|p| p.display().to_string()).collect()
    };
    let (files, env_files) = (text(&app.compose_files), text(&app.env_files));
    let dir = "/srv/vpsup/shop/releases/r1";
    let stack = Stack {
        project: "vpsup-shop",
        dir,
        files: &files,
        env_files: &env_files,
        secrets_env: Some("/srv/vpsup/shop/shared/secrets.env"),
        dot_env: true,
    };
    let args = run_recording(case, "docker", &stack.up(5))?;
    let expected: Vec<String> = files
        .iter()
        .map(|f| format!("-f {dir}/{f}"))
        .chain(env_files.iter().map(|e| format!("--env-file {dir}/{e}")))
        .collect();
    for wanted in expected {
        let (flag, path) = wanted.split_once(' ').unwrap();
        if !args.windows(2).any(|w| w[0] == flag && w[1] == path) {
            return Err(format!(
                "{flag} {path:?} did not arrive as one argument: {args:?}"
            ));
        }
    }
    Ok(Outcome::Arrived)
}

/// The watch settings the host's timer reads (`/etc/vpsup/watch/<app>.toml`):
/// the alert channels read back as written.
fn watch_settings(case: &Case) -> Result<Outcome, String> {
    let files = crate::watch::host_settings::files(&case.config, &case.project, "web")
        .map_err(|e| e.to_string())?;
    let settings = files.last().unwrap();
    let path = case.scratch.join("shop.toml");
    std::fs::write(&path, &settings.content).unwrap();
    let read = crate::watch::host_settings::read(&path).map_err(|e| e.to_string())?;
    let (sent, read) = (case.config.alerts.as_ref().unwrap(), read.alerts.unwrap());
    let text = |a: &crate::config::AlertsConfig| {
        let mut v = serde_json::to_value(a).unwrap();
        for file in ["ntfy_token_file", "smtp_password_file", "ca_file"] {
            v[file] = Value::Null;
        }
        v
    };
    if text(sent) != text(&read) {
        return Err(format!(
            "the host reads other settings:\n{}",
            String::from_utf8_lossy(&settings.content)
        ));
    }
    Ok(Outcome::Arrived)
}

/// The renewal settings the host's timer reads (`renew.d/<app>.toml`):
/// every value read back as written.
fn acme_settings(case: &Case) -> Result<Outcome, String> {
    let files = crate::acme::host_settings::files(&case.config, &case.project)
        .map_err(|e| e.to_string())?;
    let settings = files.last().unwrap();
    let text = String::from_utf8_lossy(&settings.content);
    let read = crate::acme::host_settings::parse_app(&settings.path, &text)?
        .acme
        .map_err(|e| format!("unreadable on the host: {e}\n{text}"))?;
    let sent = case.config.acme.as_ref().unwrap();
    let (dns, read_dns) = (sent.dns.as_ref().unwrap(), read.dns.as_ref().unwrap());
    let same = read.email == sent.email
        && read.directory == sent.directory
        && read.profile == sent.profile
        && read.reload == sent.reload
        && (&read_dns.server, &read_dns.key_name, &read_dns.algorithm)
            == (&dns.server, &dns.key_name, &dns.algorithm);
    if !same {
        return Err(format!("the host reads other settings:\n{text}"));
    }
    Ok(Outcome::Arrived)
}

/// The backup settings: the env file every backup script sources (run here:
/// `RESTIC_REPOSITORY` comes out as written), a restic command (run with a
/// `restic` that records its arguments), and the settings file, read back.
fn backup_settings(case: &Case) -> Result<Outcome, String> {
    use crate::backup::host_settings::{files, HostSettings};
    use crate::backup::restic::{HostFiles, HostKeys, Repository};
    let written = files(&case.config, &case.project, "web").map_err(|e| e.to_string())?;
    let env_file = case.scratch.join("env");
    std::fs::write(&env_file, &written[0].content).unwrap();
    let script = format!(
        "set -a; . {}; set +a; printf '%s' \"$RESTIC_REPOSITORY\"",
        crate::transport::script::quote(&env_file.display().to_string())
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    let url = &case.config.backup.as_ref().unwrap().repository.0;
    if String::from_utf8_lossy(&out.stdout) != *url {
        return Err(format!(
            "the env file gives RESTIC_REPOSITORY={:?}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    let repo = Repository::new(
        url,
        HostFiles::under(&case.scratch.display().to_string()),
        HostKeys::Pinned,
    )?;
    run_recording(case, "restic", &repo.cat_config(Duration::from_secs(5)))?;
    let settings = String::from_utf8_lossy(&written.last().unwrap().content).into_owned();
    let read: HostSettings = toml::from_str(&settings).map_err(|e| e.to_string())?;
    if read.backup.repository.0 != *url {
        return Err(format!("the settings file reads otherwise:\n{settings}"));
    }
    Ok(Outcome::Arrived)
}

/// `[init] extra_keys`: a key line (its comment is free text) goes into the
/// admin's authorized_keys by the `authorized_key` module, run here in a
/// temp home: the line arrives as written, on a line of its own.
fn extra_keys(case: &Case) -> Result<Outcome, String> {
    let spec = &case.config.init.as_ref().unwrap().extra_keys[0];
    let lines = match crate::commands::init::extra_key(spec, &case.project, &case.scratch) {
        Ok(lines) => lines,
        Err(e) => return Ok(Outcome::Refused(e.to_string())),
    };
    let module =
        match crate::modules::build("authorized_key", json!({"user": "root", "keys": lines})) {
            Ok(m) => m,
            Err(e) => return Ok(Outcome::Refused(e.to_string())),
        };
    let home = crate::modules::testing::TempHome::create();
    home.apply(module.as_ref(), &crate::modules::testing::probe_options());
    let written = std::fs::read_to_string(home.home().join(".ssh/authorized_keys")).unwrap();
    if written.lines().collect::<Vec<_>>() != [case.value.trim()] {
        return Err(format!("authorized_keys holds {written:?}"));
    }
    Ok(Outcome::Arrived)
}

/// Runs `script` with a `command` on PATH that records its arguments, and
/// returns them.
fn run_recording(case: &Case, command: &str, script: &str) -> Result<Vec<String>, String> {
    let bin = case.scratch.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let record = case.scratch.join("args");
    crate::transport::script::testing::write_executable(
        &bin.join(command),
        &format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done > {}\n",
            crate::transport::script::quote(&record.display().to_string())
        ),
    );
    let out = std::process::Command::new("sh")
        .args(["-n", "-c", script])
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!("sh -n: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    let args = std::fs::read(&record).map_err(|_| {
        format!(
            "{command} never ran: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(String::from_utf8_lossy(&args)
        .split('\0')
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect())
}
