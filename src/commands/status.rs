//! `vpsup status`: what each host is and how it is doing, read in one exec per
//! host: facts, uptime and load, firewall, containers, the certificates in the
//! store with days left, and how they are renewed (the host's own timer, or
//! nothing on the host: then renewal depends on `renew-certs` run elsewhere).

use std::ops::ControlFlow;

use serde::Serialize;
use time::OffsetDateTime;

use super::host_binary::HOST_PATH;
use crate::acme::certinfo::CertInfo;
use crate::acme::host_settings;
use crate::acme::store::{self, DEFAULT_DIR};
use crate::deploy::remote::{self, Container, Deployed};
use crate::facts::{self, HostFacts};
use crate::fleet::{self, Connection, Failures, HostJob, HostResult, Turn};
use crate::settings::Settings;
use crate::transport::{ExecRequest, Transport};

/// Below this many days left a certificate is flagged.
const CERT_WARN_DAYS: i64 = 14;
const RENEW_TIMER: &str = "vpsup-renew-certs.timer";
const RENEW_SERVICE: &str = "vpsup-renew-certs.service";

#[derive(Debug, Default, Serialize)]
struct HostStatus {
    host: String,
    target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    facts: Option<HostFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uptime_days: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    firewall: Option<Firewall>,
    containers: Vec<Container>,
    /// The last deploy of each app on the host.
    deploys: Vec<Deployed>,
    certificates: Vec<Certificate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    renewal: Option<Renewal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
struct Firewall {
    active: bool,
    /// `22/tcp LIMIT`, IPv6 rules left out (they mirror the IPv4 ones).
    rules: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Certificate {
    name: String,
    names: Vec<String>,
    issuer: String,
    #[serde(with = "time::serde::rfc3339")]
    expires: OffsetDateTime,
    days_left: i64,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
struct Renewal {
    /// `host-timer` when the host renews by itself, else `elsewhere`.
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    binary: Option<String>,
    /// Why the host does not renew by itself although vpsup is installed.
    #[serde(skip_serializing_if = "Option::is_none")]
    why_not: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_run: Option<String>,
    /// systemd's result of the last run: `success`, `exit-code`...
    #[serde(skip_serializing_if = "Option::is_none")]
    last_result: Option<String>,
}

/// The one exec: sections separated by `@@name` lines. Run as root (ufw and
/// the certificate store need it); every part tolerates a missing tool.
fn status_script(store_dir: &str) -> String {
    format!(
        r#"( {facts} )
echo @@uptime
cut -d' ' -f1 /proc/uptime; cut -d' ' -f1-3 /proc/loadavg
echo @@firewall
command -v ufw >/dev/null 2>&1 && ufw status
echo @@containers
command -v docker >/dev/null 2>&1 && docker ps -a --format '{{{{.Names}}}}	{{{{.State}}}}	{{{{.Status}}}}' 2>/dev/null
echo @@deploys
{deploys}
echo @@renewal
if [ -x {bin} ]; then
  if v=$({bin} --version 2>&1); then echo "binary=$(echo "$v" | head -n1)"
  else echo "broken=$(echo "$v" | head -n1)"; fi
fi
{settings} && echo settings=yes
echo "enabled=$(systemctl is-enabled {timer} 2>/dev/null)"
echo "next=$(systemctl show -p NextElapseUSecRealtime --value {timer} 2>/dev/null)"
echo "last=$(systemctl show -p LastTriggerUSec --value {timer} 2>/dev/null)"
echo "result=$(systemctl show -p Result --value {service} 2>/dev/null)"
echo @@certificates
{certs}
exit 0"#,
        facts = facts::PROBE_SCRIPT,
        bin = HOST_PATH,
        settings = host_settings::any_settings_test(store_dir),
        timer = RENEW_TIMER,
        service = RENEW_SERVICE,
        certs = store::listing_script(store_dir),
        deploys = remote::deployed_listing(),
    )
}

/// The text of each `@@name` section.
fn parse_firewall(text: &str) -> Option<Firewall> {
    let status = text.lines().find_map(|l| l.strip_prefix("Status: "))?;
    let rules = text
        .lines()
        .skip_while(|l| !l.starts_with("--"))
        .skip(1)
        .filter(|l| !l.trim().is_empty() && !l.contains("(v6)"))
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect();
    Some(Firewall {
        active: status.trim() == "active",
        rules,
    })
}

/// `certificates`: whether the store holds any (without them, a timer with
/// no settings yet has nothing to do and is fine).
fn parse_renewal(text: &str, certificates: bool) -> Renewal {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
            .filter(|v| !v.is_empty() && *v != "n/a")
            .map(String::from)
    };
    let binary = value("binary");
    let enabled = value("enabled").as_deref() == Some("enabled");
    let why_not = if let Some(broken) = value("broken") {
        Some(format!("the vpsup on the host does not run ({broken}); re-run `vpsup init`, with --host-binary if this vpsup is for another CPU"))
    } else if binary.is_some() && !enabled {
        Some("the timer is not enabled; re-run `vpsup init`".to_string())
    } else if binary.is_some() && certificates && value("settings").is_none() {
        Some("the timer has no settings: run `vpsup renew-certs` once from the project, which writes them".to_string())
    } else {
        None
    };
    let on_host = binary.is_some() && enabled && why_not.is_none();
    Renewal {
        mode: if on_host { "host-timer" } else { "elsewhere" },
        binary,
        why_not,
        next_run: value("next").filter(|_| on_host),
        last_run: value("last").filter(|_| on_host),
        last_result: value("result").filter(|_| on_host),
    }
}

fn parse_certificates(text: &str, now: OffsetDateTime) -> Result<Vec<Certificate>, String> {
    store::parse_listing(text)?
        .into_iter()
        .map(|c| {
            let info = CertInfo::from_pem_chain(&c.chain_pem)
                .map_err(|e| format!("certificate {}: {e}", c.name))?;
            Ok(Certificate {
                days_left: info.days_left(now),
                name: c.name,
                names: info.names,
                issuer: info.issuer,
                expires: info.not_after,
            })
        })
        .collect()
}

pub async fn run(settings: &Settings) -> crate::exit::Result<()> {
    let store_dir = settings
        .config
        .as_ref()
        .and_then(|c| c.acme.as_ref())
        .map_or(DEFAULT_DIR.to_string(), |a| a.store.clone());
    let targets = settings.targets(None)?;
    let statuses = fleet::run(settings, &targets, &ReadStatus { store_dir }).await;
    if settings.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "hosts": statuses }))?
        );
    } else {
        for status in &statuses {
            print_host(status);
        }
    }
    if let Some(failures) = Failures::of(&statuses) {
        return Err(crate::exit::Error::failed(format!(
            "{failures} could not be read"
        )));
    }
    Ok(())
}

impl HostResult for HostStatus {
    fn set_error(&mut self, error: String) {
        self.error = Some(error);
    }
    fn failed(&self) -> bool {
        self.error.is_some()
    }
}

/// One status exec per host.
struct ReadStatus {
    store_dir: String,
}

impl HostJob for ReadStatus {
    type Report = HostStatus;

    fn begin(&self, turn: &Turn<'_>) -> ControlFlow<HostStatus, HostStatus> {
        ControlFlow::Continue(HostStatus {
            host: turn.target.name.clone(),
            target: turn.target.ssh.describe(),
            ..Default::default()
        })
    }

    async fn run(&self, _: &Turn<'_>, connection: &Connection, status: &mut HostStatus) {
        let out = connection
            .transport
            .run_ok(
                "reading the host's status",
                ExecRequest::piped(status_script(&self.store_dir)).become_root(true),
            )
            .await;
        let filled = match out {
            Ok(out) => fill(status, &out.stdout_str()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = filled {
            status.error = Some(e);
        }
    }
}

fn fill(status: &mut HostStatus, output: &str) -> Result<(), String> {
    let mut renewal: Option<String> = None;
    for (name, text) in facts::sections(output) {
        match name {
            "facts" => status.facts = Some(facts::parse(&text)?),
            "uptime" => {
                let mut lines = text.lines();
                status.uptime_days = lines
                    .next()
                    .and_then(|s| s.trim().parse::<f64>().ok())
                    .map(|secs| (secs / 86_400.0 * 10.0).round() / 10.0);
                status.load = lines.next().map(str::to_string);
            }
            "firewall" => status.firewall = parse_firewall(&text),
            "containers" => status.containers = remote::parse_containers(&text),
            "deploys" => status.deploys = remote::parse_deployed(&text),
            // Judged once the certificates are known (below).
            "renewal" => renewal = Some(text),
            "certificates" => {
                status.certificates = parse_certificates(&text, OffsetDateTime::now_utc())?
            }
            _ => {}
        }
    }
    status.renewal = renewal.map(|text| parse_renewal(&text, !status.certificates.is_empty()));
    Ok(())
}

fn print_host(s: &HostStatus) {
    println!("{} ({})", s.host, s.target);
    if let Some(e) = &s.error {
        println!("  error        {e}");
        return;
    }
    if let Some(f) = &s.facts {
        println!(
            "  host         {}, {} CPU, {} MiB RAM, {} MiB free on /, up {} days, load {}",
            f.os_name,
            f.cpus,
            f.memory_mib,
            f.root_disk_free_mib,
            s.uptime_days.unwrap_or_default(),
            s.load.as_deref().unwrap_or("?")
        );
    }
    match &s.firewall {
        Some(fw) if fw.active => println!("  firewall     active: {}", fw.rules.join(", ")),
        Some(_) => println!("  firewall     INACTIVE: every port a service listens on is open"),
        None => println!("  firewall     none (ufw is not installed)"),
    }
    if s.containers.is_empty() {
        println!("  containers   none");
    }
    for c in &s.containers {
        println!("  container    {} {} ({})", c.name, c.state, c.status);
    }
    for d in &s.deploys {
        println!(
            "  deployed     {}: release {} at {} by {}",
            d.app, d.release, d.at, d.by
        );
    }
    if s.certificates.is_empty() {
        println!("  certificates none in the store");
    }
    for c in &s.certificates {
        let flag = if c.days_left < CERT_WARN_DAYS {
            "  <- SOON"
        } else {
            ""
        };
        println!(
            "  certificate  {}: {} days left (expires {}), {}{flag}",
            c.names.join(" "),
            c.days_left,
            c.expires.date(),
            c.issuer
        );
    }
    if let Some(r) = &s.renewal {
        if r.mode == "host-timer" {
            println!(
                "  renewal      on the host ({RENEW_TIMER}): next {}, last {} ({})",
                r.next_run.as_deref().unwrap_or("?"),
                r.last_run.as_deref().unwrap_or("never"),
                r.last_result.as_deref().unwrap_or("?")
            );
        } else if let Some(why) = &r.why_not {
            println!("  renewal      NOT on the host: {why}");
        } else {
            println!("  renewal      NOT on the host: certificates expire unless `vpsup renew-certs` runs from elsewhere (cron/CI); `vpsup init` installs the timer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firewall_rules_come_from_ufw_status_without_the_v6_mirror() {
        let text = "Status: active\n\nTo                         Action      From\n--                         ------      ----\n22/tcp                     LIMIT       Anywhere                   # ssh\n80/tcp                     ALLOW       Anywhere\n22/tcp (v6)                LIMIT       Anywhere (v6)\n";
        assert_eq!(
            parse_firewall(text),
            Some(Firewall {
                active: true,
                rules: vec!["22/tcp LIMIT".into(), "80/tcp ALLOW".into()]
            })
        );
        assert_eq!(
            parse_firewall("Status: inactive\n").map(|f| f.active),
            Some(false)
        );
        assert_eq!(parse_firewall(""), None);
    }

    #[test]
    fn renewal_is_on_the_host_only_with_binary_and_enabled_timer() {
        let timer = "enabled=enabled\nnext=Mon 2026-11-23 03:12:00 UTC\nlast=n/a\nresult=success\n";
        let on = parse_renewal(&format!("binary=vpsup 0.1.0\nsettings=yes\n{timer}"), true);
        assert_eq!((on.mode, on.why_not.as_deref()), ("host-timer", None));
        assert_eq!(on.next_run.as_deref(), Some("Mon 2026-11-23 03:12:00 UTC"));
        assert_eq!(on.last_run, None);
        // Nothing issued yet: no settings needed.
        let fresh = parse_renewal(&format!("binary=vpsup 0.1.0\n{timer}"), false);
        assert_eq!(fresh.mode, "host-timer");
        let off = parse_renewal("enabled=\nnext=\nlast=\nresult=success\n", true);
        assert_eq!((off.mode, off.why_not.as_deref()), ("elsewhere", None));
        assert_eq!(off.last_result, None);
        // vpsup is there, but the timer would do nothing useful.
        for (text, why) in [
            (
                "binary=vpsup 0.1.0\nsettings=yes\nenabled=disabled\n".to_string(),
                "not enabled",
            ),
            (
                format!("broken=error while loading shared libraries\n{timer}"),
                "does not run (error while loading",
            ),
            (format!("binary=vpsup 0.1.0\n{timer}"), "no settings"),
        ] {
            let r = parse_renewal(&text, true);
            assert_eq!(r.mode, "elsewhere", "{text}");
            assert!(
                r.why_not.as_deref().unwrap().contains(why),
                "{text}: {:?}",
                r.why_not
            );
            assert_eq!(r.last_result, None);
        }
    }

    #[test]
    fn sections_split_the_one_output_and_certificates_get_days_left() {
        let now = OffsetDateTime::now_utc();
        let chain = crate::acme::certinfo::testing::self_signed(
            &["app.example.com"],
            now - time::Duration::days(1),
            now + time::Duration::days(89) + time::Duration::hours(1),
        );
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let meta =
            r#"{"names":["app.example.com"],"challenge":"http-01","directory":"https://ca/dir"}"#;
        let output = format!(
            "os_id=debian\nos_version=13\nkernel=6.12\narch=x86_64\ncpus=2\nmem_kb=2000000\nswap_kb=0\nroot_free_kb=8000000\nhostname=vps\nuser=root\nsudo=root\ninit=systemd\n@@uptime\n90000.5\n0.10 0.20 0.30\n@@firewall\n@@containers\nshop-web-1\trunning\tUp 2 hours\n@@renewal\n@@certificates\ncert app.example.com\nmeta {}\nchain {}\n",
            b64(meta),
            b64(&chain)
        );
        let mut status = HostStatus {
            host: "web".into(),
            target: "deploy@web:22".into(),
            ..Default::default()
        };
        fill(&mut status, &output).unwrap();
        assert_eq!(status.facts.unwrap().os_id, "debian");
        assert_eq!(status.uptime_days, Some(1.0));
        assert_eq!(status.load.as_deref(), Some("0.10 0.20 0.30"));
        assert_eq!(status.firewall, None);
        assert_eq!(status.containers[0].name, "shop-web-1");
        assert_eq!(status.certificates[0].names, ["app.example.com"]);
        assert!((88..=90).contains(&status.certificates[0].days_left));
        assert_eq!(status.renewal.unwrap().mode, "elsewhere");
    }
}
