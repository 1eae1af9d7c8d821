//! When to say what, per channel: one message when a problem starts, a
//! reminder every `remind_every` while it lasts, one when it is resolved;
//! everything a run has to say to a channel in one message. A channel that
//! failed is told again on the next run (what it missed), while the others
//! are not told twice. Pure: the previous state, the problems found now,
//! the time and the channels in; the messages to send and the next state
//! out (`plan`), then what was delivered folded back in (`delivered`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::checks::Found;
use crate::alerts::{Problem, ProblemState};

/// A problem that goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    pub check: String,
    pub text: String,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// When each channel was last told of it (its start, or a reminder).
    #[serde(default)]
    pub told: BTreeMap<String, i64>,
}

/// A resolved problem some channel that was told of it has not heard the
/// end of yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    pub check: String,
    /// Its last text while it lasted.
    pub text: String,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// The channels still to be told.
    pub owed: BTreeSet<String>,
}

/// What the alerting remembers between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alerting {
    #[serde(default)]
    pub open: BTreeMap<String, Open>,
    #[serde(default)]
    pub closed: BTreeMap<String, Closed>,
}

/// One channel's message of a run: each problem with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub channel: &'static str,
    pub problems: Vec<(String, Problem)>,
}

/// The problems found now, against the state before: the next state (as if
/// nothing were delivered yet) and each channel's message (channels with
/// nothing to say have none).
pub fn plan(
    before: &Alerting,
    found: &[Found],
    now: OffsetDateTime,
    remind_every: Duration,
    channels: &[&'static str],
) -> (Alerting, Vec<Outgoing>) {
    let t = now.unix_timestamp();
    let mut next = Alerting::default();
    for f in found {
        let open = match (before.open.get(&f.key), before.closed.get(&f.key)) {
            (Some(open), _) => Open {
                check: f.check.clone(),
                text: f.text.clone(),
                ..open.clone()
            },
            // Back before every channel heard it was over: those still
            // owed the end never heard it, so to them it simply goes on.
            (None, Some(closed)) => Open {
                check: f.check.clone(),
                text: f.text.clone(),
                since: closed.since,
                told: closed.owed.iter().map(|c| (c.clone(), t)).collect(),
            },
            (None, None) => Open {
                check: f.check.clone(),
                text: f.text.clone(),
                since: now,
                told: BTreeMap::new(),
            },
        };
        next.open.insert(f.key.clone(), open);
    }
    for (key, open) in &before.open {
        if next.open.contains_key(key) {
            continue;
        }
        let owed: BTreeSet<String> = open.told.keys().cloned().collect();
        // Nobody heard it start: nobody needs to hear it end.
        if !owed.is_empty() {
            next.closed.insert(
                key.clone(),
                Closed {
                    check: open.check.clone(),
                    text: open.text.clone(),
                    since: open.since,
                    owed,
                },
            );
        }
    }
    for (key, closed) in &before.closed {
        if !next.open.contains_key(key) && !next.closed.contains_key(key) {
            next.closed.insert(key.clone(), closed.clone());
        }
    }
    // A channel no longer configured is owed nothing.
    for closed in next.closed.values_mut() {
        closed.owed.retain(|c| channels.contains(&c.as_str()));
    }
    next.closed.retain(|_, c| !c.owed.is_empty());
    let remind = remind_every.as_secs() as i64;
    let outgoing = channels
        .iter()
        .map(|channel| {
            let mut problems = Vec::new();
            for (key, open) in &next.open {
                let state = match open.told.get(*channel) {
                    None => Some(ProblemState::Started),
                    Some(at) if t - at >= remind => Some(ProblemState::Ongoing),
                    Some(_) => None,
                };
                if let Some(state) = state {
                    problems.push((key.clone(), problem(state, &open.check, &open.text)));
                }
            }
            for (key, closed) in &next.closed {
                if closed.owed.contains(*channel) {
                    problems.push((
                        key.clone(),
                        problem(ProblemState::Resolved, &closed.check, &closed.text),
                    ));
                }
            }
            Outgoing { channel, problems }
        })
        .filter(|o| !o.problems.is_empty())
        .collect();
    (next, outgoing)
}

fn problem(state: ProblemState, check: &str, text: &str) -> Problem {
    Problem {
        state,
        check: check.to_string(),
        text: text.to_string(),
    }
}

/// `outgoing` reached its channel at `now`: what it said is no longer owed.
pub fn delivered(state: &mut Alerting, outgoing: &Outgoing, now: OffsetDateTime) {
    for (key, p) in &outgoing.problems {
        match p.state {
            ProblemState::Started | ProblemState::Ongoing => {
                if let Some(open) = state.open.get_mut(key) {
                    open.told
                        .insert(outgoing.channel.to_string(), now.unix_timestamp());
                }
            }
            ProblemState::Resolved => {
                if let Some(closed) = state.closed.get_mut(key) {
                    closed.owed.remove(outgoing.channel);
                }
            }
        }
    }
    state.closed.retain(|_, c| !c.owed.is_empty());
}

/// One line for a message's problems: `2 problems started, 1 resolved`.
pub fn summary(problems: &[Problem]) -> String {
    let count = |state| problems.iter().filter(|p| p.state == state).count();
    let parts: Vec<String> = [
        (ProblemState::Started, "started"),
        (ProblemState::Ongoing, "still open"),
        (ProblemState::Resolved, "resolved"),
    ]
    .iter()
    .filter_map(|(state, word)| {
        let n = count(*state);
        (n > 0).then(|| format!("{n} {word}"))
    })
    .collect();
    let n: usize = problems.len();
    format!(
        "{} problem{}: {}",
        n,
        if n == 1 { "" } else { "s" },
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;
    const REMIND: Duration = Duration::from_secs(6 * 3600);

    fn at(hours: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + hours * HOUR).unwrap()
    }

    fn found(key: &str, text: &str) -> Found {
        Found {
            key: key.into(),
            check: key.replace(':', " "),
            text: text.into(),
        }
    }

    /// Each channel's (state, key) pairs.
    fn said(outgoing: &[Outgoing]) -> Vec<(&'static str, Vec<(ProblemState, String)>)> {
        outgoing
            .iter()
            .map(|o| {
                (
                    o.channel,
                    o.problems
                        .iter()
                        .map(|(k, p)| (p.state, k.clone()))
                        .collect(),
                )
            })
            .collect()
    }

    /// A run where every channel delivers.
    fn run(
        before: &Alerting,
        found: &[Found],
        now: OffsetDateTime,
        channels: &[&'static str],
    ) -> (Alerting, Vec<Outgoing>) {
        let (mut next, out) = plan(before, found, now, REMIND, channels);
        for o in &out {
            delivered(&mut next, o, now);
        }
        (next, out)
    }

    #[test]
    fn a_problem_is_told_once_when_it_starts_then_reminded_then_resolved() {
        let down = [found("site:shop", "/healthz answered 502")];
        let (s, out) = run(&Alerting::default(), &down, at(0), &["email"]);
        assert_eq!(
            said(&out),
            [("email", vec![(ProblemState::Started, "site:shop".into())])]
        );
        assert_eq!(out[0].problems[0].1.text, "/healthz answered 502");
        // Five minutes later, still down: nothing.
        let (s, out) = run(&s, &down, at(0) + time::Duration::minutes(5), &["email"]);
        assert!(out.is_empty());
        // After remind_every: a reminder, with since unchanged.
        let (s, out) = run(&s, &down, at(6), &["email"]);
        assert_eq!(out[0].problems[0].1.state, ProblemState::Ongoing);
        assert_eq!(s.open["site:shop"].since, at(0));
        let (s, out) = run(&s, &down, at(7), &["email"]);
        assert!(out.is_empty());
        // Fixed: one "resolved", then nothing more.
        let (s, out) = run(&s, &[], at(8), &["email"]);
        assert_eq!(
            said(&out),
            [("email", vec![(ProblemState::Resolved, "site:shop".into())])]
        );
        assert_eq!(out[0].problems[0].1.text, "/healthz answered 502");
        assert_eq!(s, Alerting::default());
        let (_, out) = run(&s, &[], at(9), &["email"]);
        assert!(out.is_empty());
    }

    #[test]
    fn several_problems_of_a_run_go_in_one_message() {
        let (s, out) = run(
            &Alerting::default(),
            &[found("disk:/", "93% used"), found("site:shop", "502")],
            at(0),
            &["webhook"],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].problems.len(), 2);
        let (_, out) = run(
            &s,
            &[found("site:shop", "502"), found("reboot", "pending")],
            at(1),
            &["webhook"],
        );
        assert_eq!(
            said(&out),
            [(
                "webhook",
                vec![
                    (ProblemState::Started, "reboot".into()),
                    (ProblemState::Resolved, "disk:/".into())
                ]
            )]
        );
        assert_eq!(
            summary(
                &out[0]
                    .problems
                    .iter()
                    .map(|p| p.1.clone())
                    .collect::<Vec<_>>()
            ),
            "2 problems: 1 started, 1 resolved"
        );
    }

    #[test]
    fn a_failed_channel_is_told_again_next_run_and_the_others_are_not() {
        let down = [found("site:shop", "502")];
        let (mut s, out) = plan(
            &Alerting::default(),
            &down,
            at(0),
            REMIND,
            &["email", "ntfy"],
        );
        assert_eq!(out.len(), 2);
        // ntfy delivered, email failed.
        delivered(&mut s, &out[1], at(0));
        let (mut s, out) = plan(
            &s,
            &down,
            at(0) + time::Duration::minutes(5),
            REMIND,
            &["email", "ntfy"],
        );
        assert_eq!(
            said(&out),
            [("email", vec![(ProblemState::Started, "site:shop".into())])]
        );
        delivered(&mut s, &out[0], at(0));
        // Resolved while email is down again: owed to email only once ntfy has it.
        let (mut s, out) = plan(&s, &[], at(1), REMIND, &["email", "ntfy"]);
        assert_eq!(out.len(), 2);
        delivered(&mut s, &out[1], at(1));
        let (mut s, out) = plan(&s, &[], at(2), REMIND, &["email", "ntfy"]);
        assert_eq!(
            said(&out),
            [("email", vec![(ProblemState::Resolved, "site:shop".into())])]
        );
        delivered(&mut s, &out[0], at(2));
        assert_eq!(s, Alerting::default());
    }

    #[test]
    fn a_problem_no_channel_heard_of_ends_silently() {
        let (s, out) = plan(
            &Alerting::default(),
            &[found("oom", "killed 1")],
            at(0),
            REMIND,
            &["email"],
        );
        assert_eq!(out.len(), 1);
        // Never delivered; then it is over: no "resolved" for a start nobody saw.
        let (s2, out) = plan(&s, &[], at(1), REMIND, &["email"]);
        assert!(out.is_empty());
        assert_eq!(s2, Alerting::default());
        // Without channels, problems are still tracked (for `vpsup status`).
        let (s3, out) = plan(
            &Alerting::default(),
            &[found("oom", "killed 1")],
            at(0),
            REMIND,
            &[],
        );
        assert!(out.is_empty());
        assert_eq!(s3.open["oom"].since, at(0));
    }

    #[test]
    fn a_problem_back_before_its_end_was_told_goes_on_without_a_new_start() {
        let down = [found("site:shop", "502")];
        let (s, _) = run(&Alerting::default(), &down, at(0), &["email"]);
        // Resolved, but the "resolved" message fails.
        let (s, out) = plan(&s, &[], at(1), REMIND, &["email"]);
        assert_eq!(out[0].problems[0].1.state, ProblemState::Resolved);
        // Down again: to email it never ended; since stays.
        let (s, out) = plan(&s, &down, at(2), REMIND, &["email"]);
        assert!(out.is_empty());
        assert_eq!(s.open["site:shop"].since, at(0));
        assert!(s.closed.is_empty());
    }

    #[test]
    fn a_new_channel_hears_of_open_problems_and_a_removed_one_is_owed_nothing() {
        let down = [found("site:shop", "502")];
        let (s, _) = run(&Alerting::default(), &down, at(0), &["email"]);
        let (s, out) = run(&s, &down, at(1), &["email", "ntfy"]);
        assert_eq!(
            said(&out),
            [("ntfy", vec![(ProblemState::Started, "site:shop".into())])]
        );
        let (s, out) = plan(&s, &[], at(2), REMIND, &["ntfy"]);
        assert_eq!(out.len(), 1);
        assert_eq!(
            s.closed["site:shop"].owed,
            BTreeSet::from(["ntfy".to_string()])
        );
    }

    #[test]
    fn the_text_follows_the_problem_while_the_key_holds_it() {
        let (s, _) = run(
            &Alerting::default(),
            &[found("disk:/", "91% used")],
            at(0),
            &["email"],
        );
        let (s, out) = run(&s, &[found("disk:/", "95% used")], at(1), &["email"]);
        assert!(out.is_empty(), "a new text is no new problem");
        assert_eq!(s.open["disk:/"].text, "95% used");
        let (_, out) = run(&s, &[], at(2), &["email"]);
        assert_eq!(out[0].problems[0].1.text, "95% used");
    }
}
