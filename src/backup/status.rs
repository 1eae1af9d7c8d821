//! What `vpsup status` says of each app's backups: the last run and whether
//! it worked, the last *successful* backup and its age, the last restore
//! drill and its result, when the timer runs next, and an error when the
//! newest good backup is older than `[backup] max_age` (default: twice the
//! schedule). Read from the state files the host's runs leave
//! (`host_settings`), in the status probe's one exec.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use super::host_settings::{self, RunKind, RunRecord};
use super::timers::Run;
use crate::layout::{BACKUP_SETTINGS_DIR, BACKUP_STATE_DIR};
use crate::transport::sections::Parts;

/// Part names; each is followed by the app's name (`backup-last shop`).
const SETTINGS: &str = "backup-settings";
const LAST: &str = "backup-last";
const LAST_OK: &str = "backup-last-ok";
const DRILL: &str = "backup-drill";
const NEXT: &str = "backup-next";

/// The status probe's lines for every app with backup settings on the host.
/// `marker` is the status run's section marker: each app's parts carry its
/// name, so they are written here rather than by `Sections::header`.
pub fn script(marker: &str) -> String {
    let part = |name: &str| format!("printf '\\n{marker} {name} %s\\n' \"$app\"\n");
    format!(
        "for f in {settings}/*.toml; do\n[ -f \"$f\" ] || continue\napp=$(basename \"$f\" .toml)\nstate={state}/$app\n{p_settings}cat \"$f\"\n{p_last}cat \"$state/last-backup.json\" 2>/dev/null\n{p_ok}grep '\"kind\":\"backup\"' \"$state/history.jsonl\" 2>/dev/null | grep '\"ok\":true' | tail -n 1\n{p_drill}cat \"$state/last-drill.json\" 2>/dev/null\n{p_next}systemctl show -p NextElapseUSecRealtime --value \"{timer}\" 2>/dev/null\ndone\ntrue\n",
        settings = BACKUP_SETTINGS_DIR,
        state = BACKUP_STATE_DIR,
        p_settings = part(SETTINGS),
        p_last = part(LAST),
        p_ok = part(LAST_OK),
        p_drill = part(DRILL),
        p_next = part(NEXT),
        timer = Run::Backup.timer("$app"),
    )
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppBackups {
    pub app: String,
    /// The newest run, good or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<RunRecord>,
    /// When the newest good backup finished (RFC 3339), and how long ago.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ok: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ok_age_hours: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill: Option<RunRecord>,
    /// When the timer runs next, as systemd says it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// What is wrong: no good backup yet, too old, the last run or drill failed.
    pub problems: Vec<String>,
}

/// Every app's backups, from what `script` printed (inside `parts`).
pub fn parse(parts: &Parts, now: OffsetDateTime) -> Vec<AppBackups> {
    let mut apps: Vec<AppBackups> = Vec::new();
    for (header, text) in parts.iter() {
        let Some((name, app)) = header.split_once(' ') else {
            continue;
        };
        if name == SETTINGS {
            apps.push(judge(app, text, parts, now));
        }
    }
    apps
}

fn judge(app: &str, settings: &str, parts: &Parts, now: OffsetDateTime) -> AppBackups {
    let part = |name: &str| {
        parts
            .optional(&format!("{name} {app}"))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    };
    let mut problems = Vec::new();
    let mut record = |name: &str| match part(name).map(host_settings::parse_record) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            problems.push(format!("{name}: {e}"));
            None
        }
    };
    let last = record(LAST);
    let last_ok = record(LAST_OK);
    let drill = record(DRILL);
    let max_age = host_settings::parse(std::path::Path::new(app), settings)
        .ok()
        .map(|s| s.backup.max_age());
    let finished = last_ok.as_ref().and_then(|r| {
        OffsetDateTime::parse(&r.finished, &time::format_description::well_known::Rfc3339).ok()
    });
    let age = finished.map(|f| (now - f).unsigned_abs());
    match (age, max_age) {
        (None, _) => problems.push("no successful backup yet".to_string()),
        (Some(age), Some(max)) if age > max => problems.push(format!(
            "the newest good backup is {} old (more than {}: is the timer running?)",
            hours(age),
            hours(max)
        )),
        _ => {}
    }
    if let Some(r) = last.as_ref().filter(|r| !r.ok && r.kind == RunKind::Backup) {
        problems.push(format!(
            "the last backup ({}) failed: {}",
            r.finished,
            r.error.as_deref().unwrap_or("see its services")
        ));
    }
    if let Some(r) = drill.as_ref().filter(|r| !r.ok) {
        problems.push(format!(
            "the last restore drill ({}) failed: {}",
            r.finished,
            r.error.as_deref().unwrap_or("see its services")
        ));
    }
    AppBackups {
        app: app.to_string(),
        last,
        last_ok: last_ok.map(|r| r.finished),
        last_ok_age_hours: age.map(|a| (a.as_secs_f64() / 360.0).round() / 10.0),
        drill,
        next: part(NEXT).map(str::to_string),
        problems,
    }
}

fn hours(d: Duration) -> String {
    let h = d.as_secs() / 3600;
    if h >= 48 {
        format!("{} days", h / 24)
    } else {
        format!("{h} h")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::host_settings::{ServiceRecord, SnapshotRecord};
    use crate::transport::sections::Sections;

    fn record(kind: RunKind, finished: &str, ok: bool) -> RunRecord {
        RunRecord {
            kind,
            run: "20261205T031700Z".into(),
            started: finished.into(),
            finished: finished.into(),
            ok,
            error: (!ok).then(|| "db: the dump failed (exit 2)".to_string()),
            services: vec![ServiceRecord {
                service: "db".into(),
                engine: "postgres".into(),
                snapshots: vec![SnapshotRecord {
                    path: "/shop+db+shop.pgdump".into(),
                    id: "e05c84ae".into(),
                    bytes: 1289836,
                }],
                duration_ms: 230,
                error: None,
            }],
        }
    }

    /// Runs `script` over a fake state tree (its paths pointed at `root`).
    fn run(root: &std::path::Path, sections: &Sections) -> String {
        let script = script(sections.marker())
            .replace(BACKUP_SETTINGS_DIR, &format!("{}/etc", root.display()))
            .replace(BACKUP_STATE_DIR, &format!("{}/state", root.display()));
        String::from_utf8(crate::transport::script::testing::sh_ok(&script).stdout).unwrap()
    }

    #[test]
    fn each_app_reports_its_last_good_backup_drill_and_staleness() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        let settings = |repo: &str| {
            format!("app = \"x\"\nhost = \"vps1\"\n[backup]\nrepository = \"{repo}\"\n")
        };
        // shop: a good backup 2 hours ago, then a failed one; a good drill.
        // blog: its only good backup is 3 days old (daily: max 2 days).
        // empty: settings, never ran.
        for (app, repo) in [("shop", "/b/shop"), ("blog", "/b/blog"), ("empty", "/b/e")] {
            std::fs::write(r.join(format!("etc/{app}.toml")), settings(repo)).unwrap();
            std::fs::create_dir_all(r.join(format!("state/{app}"))).unwrap();
        }
        let json = |rec: &RunRecord| serde_json::to_string(rec).unwrap();
        let good = record(RunKind::Backup, "2026-12-05T10:00:00Z", true);
        let bad = record(RunKind::Backup, "2026-12-05T11:00:00Z", false);
        std::fs::write(
            r.join("state/shop/history.jsonl"),
            format!("{}\n{}\n", json(&good), json(&bad)),
        )
        .unwrap();
        std::fs::write(r.join("state/shop/last-backup.json"), json(&bad)).unwrap();
        let drill = record(RunKind::Drill, "2026-12-05T09:00:00Z", true);
        std::fs::write(r.join("state/shop/last-drill.json"), json(&drill)).unwrap();
        let old = record(RunKind::Backup, "2026-12-02T12:00:00Z", true);
        std::fs::write(
            r.join("state/blog/history.jsonl"),
            format!("{}\n", json(&old)),
        )
        .unwrap();
        std::fs::write(r.join("state/blog/last-backup.json"), json(&old)).unwrap();

        let sections = Sections::random();
        let out = run(r, &sections);
        let now = OffsetDateTime::parse(
            "2026-12-05T12:00:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let apps = parse(&sections.parse(&out), now);
        let by = |name: &str| apps.iter().find(|a| a.app == name).unwrap();
        assert_eq!(apps.len(), 3);

        let shop = by("shop");
        assert_eq!(shop.last_ok.as_deref(), Some("2026-12-05T10:00:00Z"));
        assert_eq!(shop.last_ok_age_hours, Some(2.0));
        assert!(!shop.last.as_ref().unwrap().ok);
        assert!(shop.drill.as_ref().unwrap().ok);
        assert_eq!(
            shop.problems,
            ["the last backup (2026-12-05T11:00:00Z) failed: db: the dump failed (exit 2)"]
        );

        let blog = by("blog");
        assert_eq!(blog.last_ok_age_hours, Some(72.0));
        assert_eq!(
            blog.problems,
            ["the newest good backup is 3 days old (more than 2 days: is the timer running?)"]
        );

        assert_eq!(by("empty").problems, ["no successful backup yet"]);
    }

    #[test]
    fn a_host_without_backups_reports_none() {
        let root = tempfile::tempdir().unwrap();
        let sections = Sections::random();
        let out = run(root.path(), &sections);
        assert!(parse(&sections.parse(&out), OffsetDateTime::now_utc()).is_empty());
    }
}
