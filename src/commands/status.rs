//! `vpsup status`: what each host is and how it is doing, read in one exec per
//! host: facts, uptime and load, firewall, containers, the certificates in the
//! store with days left, and how they are renewed (the host's own timer, or
//! nothing on the host: then renewal depends on `renew-certs` run elsewhere).

use std::ops::ControlFlow;

use serde::Serialize;
use time::OffsetDateTime;

use crate::acme::certinfo::CertInfo;
use crate::acme::host_settings;
use crate::acme::store::{self, DEFAULT_DIR};
use crate::backup::status as backup_status;
use crate::deploy::remote::{self, Container, Deployed};
use crate::facts::{self, HostFacts};
use crate::fleet::{self, Connection, Failures, HostJob, HostResult, Turn};
use crate::layout::{HOST_BINARY, RENEW_SERVICE, RENEW_TIMER};
use crate::modules::ufw;
use crate::settings::Settings;
use crate::transport::sections::{Parts, Sections};
use crate::transport::{ExecRequest, Transport};
use crate::watch::status as watch_status;

/// Below this many days left a certificate is flagged.
const CERT_WARN_DAYS: i64 = 14;

#[derive(Debug, Default, Serialize)]
struct HostStatus {
    host: String,
    target: String,
    /// Each app's open problems, as the host's own checks (`vpsup watch`) left them.
    watch: Vec<watch_status::AppWatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    facts: Option<HostFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uptime_days: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// `None`: ufw is not installed.
    firewall: Option<ufw::Overview>,
    containers: Vec<Container>,
    /// The last deploy of each app on the host.
    deploys: Vec<Deployed>,
    certificates: Vec<Certificate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    renewal: Option<Renewal>,
    /// Each app with backup settings on the host.
    backups: Vec<backup_status::AppBackups>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
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

/// The one exec, one part per line of the report (see `fill`). Run as root
/// (ufw's rules and the certificate store need it); every part tolerates a
/// missing tool.
fn status_script(sections: &Sections, store_dir: &str) -> String {
    let renewal = format!(
        r#"if [ -x {bin} ]; then
  if v=$({bin} --version 2>&1); then echo "binary=$(echo "$v" | head -n1)"
  else echo "broken=$(echo "$v" | head -n1)"; fi
fi
{settings} && echo settings=yes
echo "enabled=$(systemctl is-enabled {timer} 2>/dev/null)"
echo "next=$(systemctl show -p NextElapseUSecRealtime --value {timer} 2>/dev/null)"
echo "last=$(systemctl show -p LastTriggerUSec --value {timer} 2>/dev/null)"
echo "result=$(systemctl show -p Result --value {service} 2>/dev/null)""#,
        bin = HOST_BINARY,
        settings = host_settings::any_settings_test(store_dir),
        timer = RENEW_TIMER,
        service = RENEW_SERVICE,
    );
    let mut script = sections.script([
        ("facts", format!("( {} )", facts::PROBE_SCRIPT).as_str()),
        (
            "uptime",
            "cut -d' ' -f1 /proc/uptime; cut -d' ' -f1-3 /proc/loadavg",
        ),
        ("firewall", &ufw::state_probe()),
        (
            "containers",
            "command -v docker >/dev/null 2>&1 && docker ps -a --format '{{.Names}}\t{{.State}}\t{{.Status}}' 2>/dev/null",
        ),
        ("deploys", &remote::deployed_listing()),
        ("renewal", &renewal),
        ("certificates", &store::listing_script(store_dir)),
    ]);
    // One part per app and file, after the fixed ones.
    script.push_str(&backup_status::script(sections.marker()));
    script.push_str(&watch_status::script(sections.marker()));
    script.push_str("exit 0");
    script
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
        .map_or(DEFAULT_DIR.to_string(), |a| a.store.to_string());
    let targets = settings.targets(None)?;
    let statuses = fleet::for_each_host(settings, &targets, &ReadStatus { store_dir }).await;
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

    async fn on_host(&self, _: &Turn<'_>, connection: &Connection, status: &mut HostStatus) {
        let sections = Sections::random();
        let out = connection
            .transport
            .run_ok(
                "reading the host's status",
                ExecRequest::piped(status_script(&sections, &self.store_dir)).become_root(true),
            )
            .await;
        let filled = match out {
            Ok(out) => fill(status, &sections.parse(&out.stdout_str())),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = filled {
            status.error = Some(e);
        }
    }
}

/// Every part must be there: each is printed whatever the host runs.
fn fill(status: &mut HostStatus, parts: &Parts) -> Result<(), String> {
    let part = |name: &str| parts.get(name).map_err(|e| e.to_string());
    status.facts = Some(facts::parse(part("facts")?)?);
    let mut uptime = part("uptime")?.lines();
    status.uptime_days = uptime
        .next()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .map(|secs| (secs / 86_400.0 * 10.0).round() / 10.0);
    status.load = uptime.next().map(str::to_string);
    status.firewall = ufw::overview(part("firewall")?).map_err(|e| format!("firewall: {e}"))?;
    status.containers = remote::parse_containers(part("containers")?);
    status.deploys = remote::parse_deployed(part("deploys")?);
    status.certificates = parse_certificates(part("certificates")?, OffsetDateTime::now_utc())?;
    // Judged once the certificates are known.
    status.renewal = Some(parse_renewal(
        part("renewal")?,
        !status.certificates.is_empty(),
    ));
    status.backups = backup_status::parse(parts, OffsetDateTime::now_utc());
    status.watch = watch_status::parse(parts);
    Ok(())
}

fn print_host(s: &HostStatus) {
    println!("{} ({})", s.host, s.target);
    if let Some(e) = &s.error {
        println!("  error        {e}");
        return;
    }
    // What is wrong first: the host's own checks' open problems.
    for w in &s.watch {
        if let Some(e) = &w.error {
            println!("  PROBLEMS     {}: unknown, {e}", w.app);
        }
        for p in &w.problems {
            println!(
                "  PROBLEM      {}: {}: {} (since {})",
                w.app,
                p.check,
                p.text,
                crate::watch::since(p.since)
            );
        }
        if let Some(checked) = w.checked {
            let none = if w.problems.is_empty() && w.error.is_none() {
                "no problems; "
            } else {
                ""
            };
            println!(
                "  checked      {}: {none}last checked {}",
                w.app,
                crate::watch::since(checked)
            );
        }
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
    for b in &s.backups {
        let good = match (&b.last_ok, b.last_ok_age_hours) {
            (Some(at), Some(age)) => format!("last good {at} ({age} h ago)"),
            _ => "no good backup yet".to_string(),
        };
        let drill = match &b.drill {
            Some(d) if d.ok => format!("drill ok {}", d.finished),
            Some(d) => format!("drill FAILED {}", d.finished),
            None => "no drill yet".to_string(),
        };
        println!(
            "  backups      {}: {good}, {drill}, next {}",
            b.app,
            b.next.as_deref().unwrap_or("?")
        );
        for problem in &b.problems {
            println!("  backups      {}: ERROR: {problem}", b.app);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::script::quote;
    use crate::transport::script::testing::sh_ok;

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

    /// What a host printed: the parts `texts` gives, each printed by `sh`
    /// after its header, as the status script's parts are.
    fn printed(sections: &Sections, texts: &[(&str, &str)]) -> String {
        let bodies: Vec<(&str, String)> = texts
            .iter()
            .map(|(name, text)| (*name, format!("printf '%s' {}", quote(text))))
            .collect();
        let script = sections.script(bodies.iter().map(|(n, b)| (*n, b.as_str())));
        String::from_utf8(sh_ok(&script).stdout).unwrap()
    }

    const FACTS: &str = "os_id=debian\nos_version=13\nkernel=6.12\narch=x86_64\ncpus=2\nmem_kb=2000000\nswap_kb=0\nroot_free_kb=8000000\nhostname=vps\nuser=root\nsudo=root\ninit=systemd\n";

    fn host() -> HostStatus {
        HostStatus {
            host: "web".into(),
            target: "deploy@web:22".into(),
            ..Default::default()
        }
    }

    #[test]
    fn every_part_fills_its_line_and_certificates_get_days_left() {
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
        let certificates = format!(
            "cert app.example.com\nmeta {}\nchain {}\n",
            b64(meta),
            b64(&chain)
        );
        let firewall = "ufw installed\nENABLED=yes\nIPV6=yes\nv4 limit tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=737368\nv6 limit tcp 22 ::/0 any ::/0 in comment=737368\n";
        let sections = Sections::with_nonce(5);
        let output = printed(
            &sections,
            &[
                ("facts", FACTS),
                ("uptime", "90000.5\n0.10 0.20 0.30\n"),
                ("firewall", firewall),
                ("containers", "shop-web-1\trunning\tUp 2 hours\n"),
                ("deploys", ""),
                ("renewal", ""),
                ("certificates", &certificates),
            ],
        );
        let mut status = host();
        fill(&mut status, &sections.parse(&output)).unwrap();
        assert_eq!(status.facts.unwrap().os_id, "debian");
        assert_eq!(status.uptime_days, Some(1.0));
        assert_eq!(status.load.as_deref(), Some("0.10 0.20 0.30"));
        assert_eq!(
            status.firewall,
            Some(ufw::Overview {
                active: true,
                rules: vec!["22/tcp LIMIT".into()]
            })
        );
        assert_eq!(status.containers[0].name, "shop-web-1");
        assert_eq!(status.certificates[0].names, ["app.example.com"]);
        assert!((88..=90).contains(&status.certificates[0].days_left));
        assert_eq!(status.renewal.unwrap().mode, "elsewhere");
    }

    #[test]
    fn a_missing_part_or_an_unreadable_firewall_is_an_error() {
        let sections = Sections::with_nonce(6);
        let all = [
            ("facts", FACTS),
            ("uptime", "1\n"),
            ("firewall", "ufw missing\n"),
            ("containers", ""),
            ("deploys", ""),
            ("renewal", ""),
            ("certificates", ""),
        ];
        let mut status = host();
        fill(&mut status, &sections.parse(&printed(&sections, &all))).unwrap();
        assert_eq!(status.firewall, None);

        let cut = printed(&sections, &all[..6]);
        let err = fill(&mut host(), &sections.parse(&cut)).unwrap_err();
        assert!(err.contains("no `certificates` part"), "{err}");

        let mut human = all;
        human[2] = ("firewall", "Status: active\n");
        let err = fill(&mut host(), &sections.parse(&printed(&sections, &human))).unwrap_err();
        assert!(err.starts_with("firewall: "), "{err}");
    }

    /// The real script, run here: every part comes back and fills the report.
    #[test]
    fn the_status_script_runs_in_sh() {
        let store = tempfile::tempdir().unwrap();
        let sections = Sections::with_nonce(7);
        let script = status_script(&sections, &store.path().display().to_string());
        let output = String::from_utf8(sh_ok(&script).stdout).unwrap();
        let mut status = host();
        fill(&mut status, &sections.parse(&output)).unwrap_or_else(|e| panic!("{e}\n{output}"));
        assert!(status.facts.unwrap().cpus >= 1);
        assert!(status.uptime_days.is_some());
        assert!(status.certificates.is_empty());
    }
}
