//! What a deploy or a rollback did on each host, and how it is printed:
//! one line per host (and per certificate, DNS record and site), or, with
//! `--json`, `{"hosts": [...]}` of `HostReport`.

use serde::Serialize;

use crate::fleet::HostResult;

/// What the deploy did on one host.
#[derive(Debug, Default, Serialize)]
pub struct HostReport {
    pub host: String,
    /// The release now current.
    pub release: Option<String>,
    /// Whether anything changed on the host.
    pub changed: bool,
    pub uploaded: usize,
    /// What the deploy found to change (with --check: would change).
    pub pending: Vec<String>,
    /// DNS records the deploy set ([app] dns = "update").
    pub dns_updated: Vec<String>,
    /// Commands run on the host (the probe included); the final check is not one.
    pub round_trips: usize,
    /// From connecting to the end of the final check.
    pub elapsed_ms: u128,
    pub secrets_created: Vec<String>,
    pub certificates: Vec<String>,
    pub sites: Vec<SiteReport>,
    /// Zero-downtime deploys: per site, the switch to the new instances
    /// and the old ones' drain (docs/zero-downtime.md).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub switches: Vec<SwitchReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How one site moved to its new instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwitchReport {
    pub domain: String,
    /// `nginx -t` and the graceful reload.
    pub switch_ms: u64,
    /// Until the old instances held no connection, or the drain period ended.
    pub drain_ms: u64,
    /// Connections still open at the end of the drain (long WebSockets),
    /// closed when the old instances stopped.
    pub cut: u64,
}

impl SwitchReport {
    pub fn line(&self) -> String {
        let secs = |ms: u64| format!("{}.{} s", ms / 1000, (ms % 1000) / 100);
        let cut = match self.cut {
            0 => String::new(),
            n => format!(", {n} connection(s) still open closed"),
        };
        format!(
            "{} switched in {} ms, old instances drained in {}{cut}",
            self.domain,
            self.switch_ms,
            secs(self.drain_ms)
        )
    }
}

/// One site as the final check saw it, over HTTPS from here.
#[derive(Debug, Serialize)]
pub struct SiteReport {
    pub url: String,
    pub status: Option<u16>,
    pub names: Vec<String>,
    pub days_left: Option<i64>,
    pub redirect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HostResult for HostReport {
    fn set_error(&mut self, error: String) {
        self.error = Some(error);
    }
    fn failed(&self) -> bool {
        self.error.is_some() || self.sites.iter().any(|s| s.error.is_some())
    }
}

/// The deploy's lines; `check`: what would change instead.
pub fn print(reports: &[HostReport], check: bool) {
    for r in reports {
        if check && r.error.is_none() {
            if r.pending.is_empty() {
                println!(
                    "{}: nothing to change (release {})",
                    r.host,
                    r.release.as_deref().unwrap_or("?")
                );
            }
            for p in &r.pending {
                println!("{}: would change: {p}", r.host);
            }
            continue;
        }
        match (&r.error, r.changed) {
            (Some(e), _) => println!("{}: FAILED: {e}", r.host),
            (None, false) => println!(
                "{}: unchanged (release {}), changed=0",
                r.host,
                r.release.as_deref().unwrap_or("?")
            ),
            (None, true) => println!(
                "{}: release {} is live ({} file(s) uploaded{})",
                r.host,
                r.release.as_deref().unwrap_or("?"),
                r.uploaded,
                if r.secrets_created.is_empty() {
                    String::new()
                } else {
                    format!(", secrets generated: {}", r.secrets_created.join(", "))
                }
            ),
        }
        for record in &r.dns_updated {
            println!("{}: DNS record set: {record}", r.host);
        }
        for c in &r.certificates {
            println!("{}: certificate {c}", r.host);
        }
        for switch in &r.switches {
            println!("{}: {}", r.host, switch.line());
        }
        for s in &r.sites {
            match &s.error {
                Some(e) => println!("{}: {} FAILED: {e}", r.host, s.url),
                None => println!(
                    "{}: {} -> HTTP {} | certificate for {} | {} days left",
                    r.host,
                    s.url,
                    s.status.unwrap_or_default(),
                    s.names.join(" "),
                    s.days_left.unwrap_or_default()
                ),
            }
        }
    }
}

/// What the rollback did on one host.
pub struct RollbackRow {
    pub host: String,
    /// From which release to which.
    pub rolled_back: Option<(String, String)>,
    pub error: Option<String>,
}

impl HostResult for RollbackRow {
    fn set_error(&mut self, error: String) {
        self.error = Some(error);
    }
    fn failed(&self) -> bool {
        self.error.is_some()
    }
}

/// The rollback's lines.
pub fn print_rollback(rows: &[RollbackRow]) {
    for row in rows {
        match (&row.error, &row.rolled_back) {
            (Some(e), _) => println!("{}: FAILED: {e}", row.host),
            (None, Some((from, to))) => {
                println!("{}: rolled back from release {from} to {to}", row.host)
            }
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_reads_as_one_line_and_json_fields() {
        let switch = SwitchReport {
            domain: "shop.example.com".into(),
            switch_ms: 84,
            drain_ms: 1530,
            cut: 0,
        };
        assert_eq!(
            switch.line(),
            "shop.example.com switched in 84 ms, old instances drained in 1.5 s"
        );
        let cut = SwitchReport {
            cut: 2,
            drain_ms: 30000,
            ..switch.clone()
        };
        assert_eq!(
            cut.line(),
            "shop.example.com switched in 84 ms, old instances drained in 30.0 s, 2 connection(s) still open closed"
        );
        assert_eq!(
            serde_json::to_value(&switch).unwrap(),
            serde_json::json!({"domain": "shop.example.com", "switch_ms": 84, "drain_ms": 1530, "cut": 0})
        );
        let quiet = serde_json::to_value(HostReport::default()).unwrap();
        assert!(quiet.get("switches").is_none(), "{quiet}");
    }
}
