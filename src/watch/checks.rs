//! Facts and thresholds in, problems out: each with a stable key (the same
//! problem has the same key run after run, whatever its text says now), the
//! check it belongs to, and one line of text. What a check needs from
//! earlier runs (restart counts, the OOM counter, disk samples) is `Memory`,
//! kept in the state file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::gather::{ContainerFacts, Facts, SiteFacts};
use crate::config::WatchConfig;

/// One problem found now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    /// Stable across runs: `site:shop.example.com`, `container:vpsup-shop-db-1`, `disk:/`.
    pub key: String,
    /// What was checked: `site shop.example.com`, `container db`, `disk /`.
    pub check: String,
    pub text: String,
}

impl Found {
    fn new(key: String, check: String, text: String) -> Found {
        Found { key, check, text }
    }
}

/// Disk samples are kept at least this far apart...
const SAMPLE_EVERY_SECS: i64 = 3600;
/// ... for this long (the trend's window).
const TREND_WINDOW_SECS: i64 = 3 * 86400;
/// A trend needs samples spanning this much before it is believed.
const TREND_MIN_SPAN_SECS: i64 = 6 * 3600;

/// What the checks remember between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Each container's restart count at the last run.
    #[serde(default)]
    pub restarts: BTreeMap<String, u64>,
    /// The kernel's boot id and OOM kill count at the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom: Option<(String, u64)>,
    /// Per mount, `(unix time, bytes used)`, oldest first.
    #[serde(default)]
    pub disks: BTreeMap<String, Vec<(i64, u64)>>,
}

impl Memory {
    /// What to remember after a run that saw `facts` at `now`.
    pub fn next(&self, facts: &Facts, now: OffsetDateTime) -> Memory {
        let t = now.unix_timestamp();
        let restarts = match &facts.containers {
            Some(Ok(containers)) => containers
                .iter()
                .map(|c| (c.name.clone(), c.restarts))
                .collect(),
            // Docker did not answer: the counts wait for the next answer.
            _ => self.restarts.clone(),
        };
        let disks = facts
            .disks
            .iter()
            .map(|d| {
                let mut samples: Vec<(i64, u64)> = self
                    .disks
                    .get(&d.mount)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|(at, _)| t - at <= TREND_WINDOW_SECS && *at <= t)
                    .collect();
                if samples
                    .last()
                    .is_none_or(|(at, _)| t - at >= SAMPLE_EVERY_SECS)
                {
                    samples.push((t, d.used));
                }
                (d.mount.clone(), samples)
            })
            .collect();
        Memory {
            restarts,
            oom: facts.oom.clone().or_else(|| self.oom.clone()),
            disks,
        }
    }
}

/// Every problem `facts` shows, judged by `limits`, with `memory` from the
/// run before.
pub fn check(
    facts: &Facts,
    limits: &WatchConfig,
    memory: &Memory,
    now: OffsetDateTime,
) -> Vec<Found> {
    let mut found = Vec::new();
    for site in &facts.sites {
        found.extend(site_problems(site, limits, now));
    }
    match &facts.containers {
        None => {}
        Some(Err(error)) => found.push(Found::new(
            "docker".into(),
            "docker".into(),
            format!("does not answer: {error}"),
        )),
        Some(Ok(containers)) if containers.is_empty() => found.push(Found::new(
            "containers".into(),
            "containers".into(),
            "none of the app's containers exists (was the stack taken down?)".into(),
        )),
        Some(Ok(containers)) => {
            for c in containers {
                if let Some(text) = container_problem(c, memory.restarts.get(&c.name).copied(), now)
                {
                    found.push(Found::new(
                        format!("container:{}", c.name),
                        format!("container {}", c.service),
                        text,
                    ));
                }
            }
        }
    }
    for disk in &facts.disks {
        let percent = disk.percent();
        let full_in = full_in_secs(
            memory.disks.get(&disk.mount).map_or(&[][..], Vec::as_slice),
            now.unix_timestamp(),
            disk.used,
            disk.available,
        );
        let text = if percent >= limits.disk_percent.0 {
            Some(format!(
                "{percent}% used (threshold {}%), {} free",
                limits.disk_percent.0,
                bytes(disk.available)
            ))
        } else {
            full_in
                .filter(|secs| *secs < limits.disk_full_in.0.as_secs() as i64)
                .map(|secs| {
                    format!(
                        "{percent}% used, full in about {} at the rate it has been filling",
                        span(secs)
                    )
                })
        };
        if let Some(text) = text {
            found.push(Found::new(
                format!("disk:{}", disk.mount),
                format!("disk {}", disk.mount),
                text,
            ));
        }
    }
    if let Some(cache) = facts.build_cache.filter(|c| *c > limits.build_cache.0) {
        found.push(Found::new(
            "build-cache".into(),
            "docker build cache".into(),
            format!(
                "{} (threshold {}): `docker builder prune` frees it",
                bytes(cache),
                bytes(limits.build_cache.0)
            ),
        ));
    }
    if let Some(result) = &facts.renewal_failed {
        found.push(Found::new(
            "renewal".into(),
            "certificate renewal".into(),
            format!(
                "the last run of {} failed ({result}): `journalctl -u {}` says why",
                crate::layout::RENEW_SERVICE,
                crate::layout::RENEW_SERVICE
            ),
        ));
    }
    if let Some(backups) = &facts.backups {
        if !backups.problems.is_empty() {
            found.push(Found::new(
                "backup".into(),
                format!("backups of {}", backups.app),
                backups.problems.join("; "),
            ));
        }
    }
    if let Some(packages) = &facts.reboot {
        let text = if packages.is_empty() {
            "a reboot is pending (/var/run/reboot-required)".to_string()
        } else {
            format!("a reboot is pending for updates of {}", packages.join(", "))
        };
        found.push(Found::new("reboot".into(), "reboot".into(), text));
    }
    if let (Some((boot, count)), Some((was_boot, was))) = (&facts.oom, &memory.oom) {
        // After a reboot the counter starts again from zero.
        let new = if boot == was_boot {
            count.saturating_sub(*was)
        } else {
            *count
        };
        if new > 0 {
            found.push(Found::new(
                "oom".into(),
                "memory".into(),
                format!(
                    "the kernel killed {new} process(es) for lack of memory since the last check"
                ),
            ));
        }
    }
    found
}

fn site_problems(site: &SiteFacts, limits: &WatchConfig, now: OffsetDateTime) -> Vec<Found> {
    let mut found = Vec::new();
    let answer = match &site.answer {
        Ok(code) if (200..400).contains(code) => None,
        Ok(code) => Some(format!("{} answered {code}", site.health)),
        Err(e) => Some(format!("{}: {e}", site.health)),
    };
    if let Some(text) = answer {
        found.push(Found::new(
            format!("site:{}", site.name),
            format!("site {}", site.name),
            text,
        ));
    }
    let certificate = match &site.certificate {
        None => Some("nginx serves no certificate for it".to_string()),
        Some(Err(e)) => Some(format!("the certificate nginx serves does not read: {e}")),
        Some(Ok(cert)) if !cert.names.iter().any(|n| name_matches(n, &site.name)) => Some(format!(
            "nginx serves a certificate for {}, not for this name",
            if cert.names.is_empty() {
                "no name".to_string()
            } else {
                cert.names.join(", ")
            }
        )),
        Some(Ok(cert)) => {
            let days = cert.days_left(now);
            let date = cert.not_after.date();
            if cert.not_after <= now {
                Some(format!("the certificate nginx serves expired on {date}"))
            } else if days < i64::from(limits.certificate_days) {
                Some(format!(
                    "the certificate nginx serves expires in {days} day(s), on {date} (threshold {} days): is renewal working?",
                    limits.certificate_days
                ))
            } else {
                None
            }
        }
    };
    if let Some(text) = certificate {
        found.push(Found::new(
            format!("certificate:{}", site.name),
            format!("certificate {}", site.name),
            text,
        ));
    }
    found
}

/// Whether certificate name `pattern` (maybe `*.example.com`) covers `name`.
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(base) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(base)),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

/// A container seen for the first time that restarted at least this often,
/// the last time within `RECENT_START`, is crash-looping even when caught
/// in the moment it runs (under emulation a start takes a second or two).
const FIRST_SIGHT_RESTARTS: u64 = 2;
/// The watch timer's interval: "since the last check" for a container the
/// last run did not see.
const RECENT_START: time::Duration = time::Duration::minutes(5);

fn container_problem(
    c: &ContainerFacts,
    restarts_before: Option<u64>,
    now: OffsetDateTime,
) -> Option<String> {
    let rose = restarts_before
        .map(|before| c.restarts.saturating_sub(before))
        .filter(|n| *n > 0);
    let first_sight_loop = c
        .started
        .map(|started| (now - started).whole_seconds())
        .filter(|ago| {
            restarts_before.is_none()
                && c.restarts >= FIRST_SIGHT_RESTARTS
                && *ago < RECENT_START.whole_seconds()
        });
    match c.state.as_str() {
        "restarting" => Some(format!(
            "crash loop: restarting ({} restarts, last exit code {})",
            c.restarts, c.exit_code
        )),
        "running" => match (c.health.as_deref(), rose, first_sight_loop) {
            (Some("unhealthy"), _, _) => Some("unhealthy (its healthcheck fails)".to_string()),
            (_, Some(n), _) => Some(format!(
                "crash loop: restarted {n} time(s) since the last check ({} in all)",
                c.restarts
            )),
            (_, None, Some(ago)) => Some(format!(
                "crash loop: restarted {} time(s), the last {ago} s ago",
                c.restarts
            )),
            _ => None,
        },
        "paused" => Some("paused".to_string()),
        state => Some(format!("{state} (exit code {})", c.exit_code)),
    }
}

/// Seconds until a filesystem is full, from the least-squares slope of the
/// samples and the present; `None` when it is not filling or the samples
/// span too little time to say.
pub fn full_in_secs(samples: &[(i64, u64)], now: i64, used: u64, available: u64) -> Option<i64> {
    let mut points: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(at, _)| *at < now)
        .map(|(at, u)| (*at as f64, *u as f64))
        .collect();
    points.push((now as f64, used as f64));
    let first = points.first()?.0;
    if now as f64 - first < TREND_MIN_SPAN_SECS as f64 {
        return None;
    }
    let n = points.len() as f64;
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_u = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (t, u)| {
        (
            num + (t - mean_t) * (u - mean_u),
            den + (t - mean_t).powi(2),
        )
    });
    let slope = num / den;
    (den > 0.0 && slope > 0.0).then(|| (available as f64 / slope) as i64)
}

/// `3.2 GB` (powers of 1000, as Docker and `df -h --si` print).
fn bytes(n: u64) -> String {
    let units = [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")];
    units
        .iter()
        .find(|(size, _)| n as f64 >= *size)
        .map_or(format!("{n} B"), |(size, unit)| {
            format!("{:.1} {unit}", n as f64 / size)
        })
}

/// `3 days`, `5 hours`.
fn span(secs: i64) -> String {
    if secs >= 2 * 86400 {
        format!("{} days", secs / 86400)
    } else {
        format!("{} hours", (secs / 3600).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acme::certinfo::CertInfo;
    use crate::config::{Percent, Size, TimeSpan};
    use crate::watch::gather::testing::inspected;
    use crate::watch::gather::{parse_containers, DiskFacts};
    use std::time::Duration;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn limits() -> WatchConfig {
        WatchConfig {
            disk_percent: Percent(90),
            disk_full_in: TimeSpan(Duration::from_secs(7 * 86400)),
            certificate_days: 14,
            build_cache: Size(10_000_000_000),
        }
    }

    fn cert(names: &[&str], days: i64) -> CertInfo {
        CertInfo {
            names: names.iter().map(|n| n.to_string()).collect(),
            not_before: now() - time::Duration::days(60),
            not_after: now() + time::Duration::days(days) + time::Duration::hours(1),
            issuer: "CN=R11".into(),
            serial: "01".into(),
            leaf_der: vec![],
        }
    }

    fn site(answer: Result<u16, String>, certificate: Option<CertInfo>) -> Facts {
        Facts {
            sites: vec![SiteFacts {
                name: "shop.example.com".into(),
                health: "/healthz".into(),
                answer,
                certificate: certificate.map(Ok),
            }],
            ..Facts::default()
        }
    }

    fn texts(found: &[Found]) -> Vec<(String, String)> {
        found
            .iter()
            .map(|f| (f.key.clone(), f.text.clone()))
            .collect()
    }

    #[test]
    fn a_healthy_site_with_a_fresh_matching_certificate_is_no_problem() {
        let facts = site(Ok(200), Some(cert(&["shop.example.com"], 60)));
        assert_eq!(check(&facts, &limits(), &Memory::default(), now()), vec![]);
        let wildcard = site(Ok(301), Some(cert(&["*.example.com"], 60)));
        assert_eq!(
            check(&wildcard, &limits(), &Memory::default(), now()),
            vec![]
        );
    }

    #[test]
    fn a_site_down_and_its_certificate_are_two_problems() {
        let facts = site(Ok(502), Some(cert(&["shop.example.com"], 5)));
        assert_eq!(
            texts(&check(&facts, &limits(), &Memory::default(), now())),
            [
                ("site:shop.example.com".to_string(), "/healthz answered 502".to_string()),
                (
                    "certificate:shop.example.com".to_string(),
                    format!("the certificate nginx serves expires in 5 day(s), on {} (threshold 14 days): is renewal working?", (now() + time::Duration::days(5)).date())
                ),
            ]
        );
        let refused = site(Err("(7) Failed to connect".into()), None);
        assert_eq!(
            texts(&check(&refused, &limits(), &Memory::default(), now())),
            [
                (
                    "site:shop.example.com".to_string(),
                    "/healthz: (7) Failed to connect".to_string()
                ),
                (
                    "certificate:shop.example.com".to_string(),
                    "nginx serves no certificate for it".to_string()
                ),
            ]
        );
        let wrong = site(Ok(200), Some(cert(&["other.example.com"], 60)));
        assert_eq!(
            check(&wrong, &limits(), &Memory::default(), now())[0].text,
            "nginx serves a certificate for other.example.com, not for this name"
        );
        let expired = site(Ok(200), Some(cert(&["shop.example.com"], -3)));
        assert!(check(&expired, &limits(), &Memory::default(), now())[0]
            .text
            .starts_with("the certificate nginx serves expired on "));
    }

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("*.example.com", "shop.example.com"));
        assert!(!name_matches("*.example.com", "a.shop.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(name_matches("Shop.Example.com", "shop.example.com"));
    }

    #[test]
    fn stopped_unhealthy_and_crash_looping_containers_are_problems() {
        let containers = parse_containers(
            &"p\tdb\t/vpsup-shop-db-1\trunning\thealthy\t0\t0\t2027-01-15T07:00:00Z\n\
             p\tapi\t/vpsup-shop-api-1\trunning\tunhealthy\t0\t0\t2027-01-15T07:00:00Z\n\
             p\tworker\t/vpsup-shop-worker-1\trestarting\t-\t7\t1\t2027-01-15T07:59:00Z\n\
             p\tweb\t/vpsup-shop-web-1\texited\t-\t0\t137\t2027-01-15T07:00:00Z\n\
             p\tcron\t/vpsup-shop-cron-1\trunning\t-\t4\t2\t2027-01-15T07:59:30Z\n\
             p\tjob\t/vpsup-shop-job-1\trunning\t-\t3\t1\t2027-01-15T07:59:50Z\n\
             p\told\t/vpsup-shop-old-1\trunning\t-\t5\t1\t2027-01-15T07:00:00Z\n"
                .lines()
                .map(inspected)
                .collect::<Vec<_>>()
                .join("\n"),
            &["p"],
        )
        .unwrap();
        let facts = Facts {
            containers: Some(Ok(containers)),
            ..Facts::default()
        };
        let mut memory = Memory::default();
        memory.restarts.insert("vpsup-shop-cron-1".into(), 1);
        let found = check(&facts, &limits(), &memory, now());
        assert_eq!(
            found
                .iter()
                .map(|f| (f.key.as_str(), f.check.as_str(), f.text.as_str()))
                .collect::<Vec<_>>(),
            [
                (
                    "container:vpsup-shop-api-1",
                    "container api",
                    "unhealthy (its healthcheck fails)"
                ),
                (
                    "container:vpsup-shop-cron-1",
                    "container cron",
                    "crash loop: restarted 3 time(s) since the last check (4 in all)"
                ),
                (
                    "container:vpsup-shop-job-1",
                    "container job",
                    "crash loop: restarted 3 time(s), the last 10 s ago"
                ),
                (
                    "container:vpsup-shop-web-1",
                    "container web",
                    "exited (exit code 137)"
                ),
                (
                    "container:vpsup-shop-worker-1",
                    "container worker",
                    "crash loop: restarting (7 restarts, last exit code 1)"
                ),
            ]
        );
        // The counts are remembered: the same count next run is no crash loop.
        let memory = memory.next(&facts, now());
        assert_eq!(memory.restarts["vpsup-shop-cron-1"], 4);
        assert!(!check(&facts, &limits(), &memory, now())
            .iter()
            .any(|f| f.key == "container:vpsup-shop-cron-1"));
        // A container seen for the first time has no rise to judge: it is a
        // crash loop when it restarted twice or more and started within the
        // timer's interval, whether caught running or restarting; one that
        // restarted long ago is not.
        let first_sight: Vec<String> = check(&facts, &limits(), &Memory::default(), now())
            .into_iter()
            .filter(|f| f.text.starts_with("crash loop"))
            .map(|f| f.key)
            .collect();
        assert_eq!(
            first_sight,
            [
                "container:vpsup-shop-cron-1",
                "container:vpsup-shop-job-1",
                "container:vpsup-shop-worker-1"
            ]
        );
    }

    #[test]
    fn docker_down_or_no_containers_are_problems_but_unchecked_is_not() {
        let mut facts = Facts {
            containers: Some(Err("Cannot connect to the Docker daemon".into())),
            ..Facts::default()
        };
        assert_eq!(
            check(&facts, &limits(), &Memory::default(), now())[0].key,
            "docker"
        );
        facts.containers = Some(Ok(vec![]));
        assert_eq!(
            check(&facts, &limits(), &Memory::default(), now())[0].key,
            "containers"
        );
        facts.containers = None;
        assert!(check(&facts, &limits(), &Memory::default(), now()).is_empty());
    }

    fn disk(used_gb: u64, size_gb: u64) -> DiskFacts {
        let gb = 1_000_000_000;
        DiskFacts {
            mount: "/".into(),
            size: size_gb * gb,
            used: used_gb * gb,
            available: (size_gb - used_gb) * gb,
        }
    }

    #[test]
    fn a_disk_over_its_threshold_is_a_problem() {
        let facts = Facts {
            disks: vec![disk(37, 40)],
            ..Facts::default()
        };
        assert_eq!(
            texts(&check(&facts, &limits(), &Memory::default(), now())),
            [(
                "disk:/".to_string(),
                "93% used (threshold 90%), 3.0 GB free".to_string()
            )]
        );
        let fine = Facts {
            disks: vec![disk(20, 40)],
            ..Facts::default()
        };
        assert!(check(&fine, &limits(), &Memory::default(), now()).is_empty());
    }

    #[test]
    fn a_disk_filling_fast_is_a_problem_before_it_crosses_the_threshold() {
        // 1 GB more every 6 hours for a day: 20 GB free last about 5 days.
        let t = now().unix_timestamp();
        let gb = 1_000_000_000u64;
        let samples: Vec<(i64, u64)> = (0..4)
            .map(|i| (t - 86400 + i * 6 * 3600, (16 + i as u64) * gb))
            .collect();
        let mut memory = Memory::default();
        memory.disks.insert("/".into(), samples.clone());
        let facts = Facts {
            disks: vec![disk(20, 40)],
            ..Facts::default()
        };
        let found = check(&facts, &limits(), &memory, now());
        assert_eq!(
            texts(&found),
            [(
                "disk:/".to_string(),
                "50% used, full in about 5 days at the rate it has been filling".to_string()
            )]
        );
        // Steady or shrinking use, or too short a history, is no trend.
        assert_eq!(
            full_in_secs(&[(t - 86400, 20 * gb)], t, 20 * gb, 20 * gb),
            None
        );
        assert_eq!(
            full_in_secs(&[(t - 86400, 25 * gb)], t, 20 * gb, 20 * gb),
            None
        );
        assert_eq!(
            full_in_secs(&[(t - 3600, 10 * gb)], t, 20 * gb, 20 * gb),
            None
        );
        // A longer allowance (disk_full_in = 3d) says nothing yet.
        let mut relaxed = limits();
        relaxed.disk_full_in = TimeSpan(Duration::from_secs(3 * 86400));
        assert!(check(&facts, &relaxed, &memory, now()).is_empty());
    }

    #[test]
    fn disk_samples_are_hourly_and_forgotten_after_the_window() {
        let facts = Facts {
            disks: vec![disk(20, 40)],
            ..Facts::default()
        };
        let t = now().unix_timestamp();
        let mut memory = Memory::default();
        memory
            .disks
            .insert("/".into(), vec![(t - 4 * 86400, 1), (t - 1800, 2)]);
        // Too old dropped; 30 minutes after the last sample: none added.
        assert_eq!(memory.next(&facts, now()).disks["/"], [(t - 1800, 2)]);
        memory.disks.insert("/".into(), vec![(t - 3600, 2)]);
        assert_eq!(
            memory.next(&facts, now()).disks["/"],
            [(t - 3600, 2), (t, 20_000_000_000)]
        );
    }

    #[test]
    fn oom_kills_since_the_last_run_count_and_a_reboot_starts_over() {
        let facts = |boot: &str, n| Facts {
            oom: Some((boot.to_string(), n)),
            ..Facts::default()
        };
        let memory = |boot: &str, n| Memory {
            oom: Some((boot.to_string(), n)),
            ..Memory::default()
        };
        assert!(check(&facts("a", 3), &limits(), &memory("a", 3), now()).is_empty());
        assert_eq!(
            check(&facts("a", 5), &limits(), &memory("a", 3), now())[0].text,
            "the kernel killed 2 process(es) for lack of memory since the last check"
        );
        assert_eq!(
            check(&facts("b", 1), &limits(), &memory("a", 3), now())[0].key,
            "oom"
        );
        // The first run has nothing to compare with.
        assert!(check(&facts("a", 9), &limits(), &Memory::default(), now()).is_empty());
    }

    #[test]
    fn build_cache_renewal_reboot_and_backups() {
        let facts = Facts {
            build_cache: Some(12_300_000_000),
            renewal_failed: Some("exit-code".into()),
            reboot: Some(vec!["libc6".into()]),
            backups: Some(crate::backup::status::AppBackups {
                app: "shop".into(),
                last: None,
                last_ok: None,
                last_ok_age_hours: None,
                drill: None,
                next: None,
                problems: vec!["no successful backup yet".into()],
            }),
            ..Facts::default()
        };
        assert_eq!(
            texts(&check(&facts, &limits(), &Memory::default(), now())),
            [
                ("build-cache".to_string(), "12.3 GB (threshold 10.0 GB): `docker builder prune` frees it".to_string()),
                ("renewal".to_string(), "the last run of vpsup-renew-certs.service failed (exit-code): `journalctl -u vpsup-renew-certs.service` says why".to_string()),
                ("backup".to_string(), "no successful backup yet".to_string()),
                ("reboot".to_string(), "a reboot is pending for updates of libc6".to_string()),
            ]
        );
    }
}
