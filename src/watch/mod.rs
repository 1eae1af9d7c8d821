//! `vpsup watch --local`: the host checks itself, every few minutes from
//! its vpsup-watch timer, and tells the app's `[alerts]` channels what
//! changed:
//!
//! 1. one exec gathers the facts of every app (`gather`): what concerns
//!    the whole host (Docker, disks, timers) is looked at once;
//!
//! then per app with settings on the host, in order:
//!
//! 2. the state file (what the last run found, told and remembered);
//! 3. the checks turn facts into problems (`checks`);
//! 4. the alerting decides what each channel is told (`alerting`);
//! 5. each channel's message is sent; a failure is owed to the next run and
//!    stops nothing;
//! 6. the new state is written, whole or not at all (`state`).

pub mod alerting;
pub mod checks;
pub mod gather;
pub mod host_settings;
pub mod state;
pub mod status;

use std::path::Path;

use serde::Serialize;
use time::OffsetDateTime;

use crate::alerts::{channel_names, Channels, Delivery, Message};
use crate::transport::sections::Sections;
use crate::transport::{ExecRequest, Transport};
use host_settings::WatchSettings;
use state::State;

/// A problem open after a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenProblem {
    pub key: String,
    pub check: String,
    pub text: String,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
}

/// One app's run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AppReport {
    pub app: String,
    pub host: String,
    pub problems: Vec<OpenProblem>,
    /// Each message sent, per channel.
    pub sent: Vec<Sent>,
    /// What went wrong with the run itself (the checks, a channel's
    /// settings, the state file).
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sent {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub summary: String,
}

impl AppReport {
    /// The report of an app whose settings file `path` could not be read.
    pub fn unreadable(path: &std::path::Path, error: String) -> AppReport {
        AppReport {
            app: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            errors: vec![error],
            ..AppReport::default()
        }
    }

    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.sent.iter().all(|s| s.delivery.ok)
    }
}

/// One run for every app in `apps`, on the host `transport` reaches: the
/// facts of all of them gathered in one exec (what concerns the whole host
/// looked at once), then each app judged, told and remembered on its own.
/// Docker is reached, and its slow answers kept, where `docker` says.
pub async fn run(
    transport: &dyn Transport,
    apps: &[WatchSettings],
    docker: gather::DockerPaths<'_>,
) -> Vec<AppReport> {
    let sections = Sections::random();
    let gathered = transport
        .exec(ExecRequest::piped(gather::script(&sections, apps, docker)))
        .await
        .map(|out| out.stdout_str())
        .map_err(|e| format!("gathering the facts: {e}"));
    let now = OffsetDateTime::now_utc();
    let mut reports = Vec::new();
    for settings in apps {
        let facts = gathered
            .as_ref()
            .map(|text| gather::parse(&sections, text, settings, now))
            .map_err(Clone::clone);
        reports.push(run_app(settings, facts, now).await);
    }
    reports
}

/// One app's part of a run: its `facts` (or why there are none) judged
/// against what its state file remembers, its channels told what changed.
async fn run_app(
    settings: &WatchSettings,
    facts: Result<gather::Facts, String>,
    now: OffsetDateTime,
) -> AppReport {
    let mut report = AppReport {
        app: settings.app.clone(),
        host: settings.host.clone(),
        ..AppReport::default()
    };
    let path = settings.state_file();
    let fallback = settings.state_fallback_file();
    let (before, unreadable) = State::load_either(&path, &fallback);
    report.errors.extend(unreadable);
    let facts = match facts {
        Ok(facts) => facts,
        Err(e) => {
            report.errors.push(e);
            return report;
        }
    };
    let found = checks::check(&facts, &settings.watch, &before.memory, now);
    let names = settings
        .alerts
        .as_ref()
        .map(channel_names)
        .unwrap_or_default();
    let remind = settings
        .alerts
        .as_ref()
        .map_or(std::time::Duration::MAX, |a| a.remind_every.0);
    let (mut alerting, outgoing) = alerting::plan(&before.alerting, &found, now, remind, &names);
    // Each channel on its own: one whose file does not read (a token, the
    // password) is reported, and the others still send.
    let channels = settings
        .alerts
        .as_ref()
        .map(|alerts| Channels::each(alerts, Path::new("/")))
        .unwrap_or_default();
    for (name, built) in &channels {
        if let Err(e) = built {
            report.errors.push(format!("the {name} channel: {e}"));
        }
    }
    let sends = outgoing.iter().map(|out| {
        let problems: Vec<_> = out.problems.iter().map(|(_, p)| p.clone()).collect();
        let message = Message {
            host: settings.host.clone(),
            app: Some(settings.app.clone()),
            summary: alerting::summary(&problems),
            problems,
        };
        let channel = channels
            .iter()
            .find(|(name, _)| *name == out.channel)
            .map(|(_, built)| built);
        async move {
            let delivery = match channel {
                Some(Ok(channel)) => channel.deliver(&message).await,
                Some(Err(e)) => Delivery {
                    channel: out.channel,
                    target: String::new(),
                    ok: false,
                    error: Some(format!("its settings do not read: {e}")),
                },
                None => Delivery {
                    channel: out.channel,
                    target: String::new(),
                    ok: false,
                    error: Some("not configured".into()),
                },
            };
            (out, message.summary, delivery)
        }
    });
    for (out, summary, delivery) in futures::future::join_all(sends).await {
        if delivery.ok {
            alerting::delivered(&mut alerting, out, now);
        }
        report.sent.push(Sent { delivery, summary });
    }
    report.problems = alerting
        .open
        .iter()
        .map(|(key, open)| OpenProblem {
            key: key.clone(),
            check: open.check.clone(),
            text: open.text.clone(),
            since: open.since,
        })
        .collect();
    let next = State {
        checked: Some(now),
        memory: before.memory.next(&facts, now),
        alerting,
    };
    if let Err(e) = next.save_or_fallback(&path, &fallback) {
        report.errors.push(e);
    }
    report
}

/// `2026-01-08 10:15 UTC (3h ago)`: when a problem started, for people.
pub fn since(at: OffsetDateTime) -> String {
    since_at(at, OffsetDateTime::now_utc())
}

fn since_at(at: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (now - at).whole_seconds().max(0);
    let ago = match secs {
        s if s < 120 => "just now".to_string(),
        s if s < 2 * 3600 => format!("{}m ago", s / 60),
        s if s < 2 * 86400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86400),
    };
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{} {:02}:{:02} UTC, {ago}",
        at.date(),
        at.hour(),
        at.minute()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_as_a_time_and_an_age() {
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert_eq!(since_at(at, at), "2027-01-15 08:00 UTC, just now");
        assert_eq!(
            since_at(at, at + time::Duration::hours(30)),
            "2027-01-15 08:00 UTC, 30h ago"
        );
        assert_eq!(
            since_at(at, at + time::Duration::days(3)),
            "2027-01-15 08:00 UTC, 3d ago"
        );
    }
}
