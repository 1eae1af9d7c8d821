//! Everything a playbook run shows: a spinner per host on a terminal (plain
//! lines otherwise), task lines, diffs, the per-host recap, or JSON. The report
//! layer only prints; it never runs anything.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::engine::{Observer, PlayReport, Recap, Status, TaskResult};
use crate::fleet::HostResult;
use crate::settings::{Settings, Verbosity};

pub struct Reporter {
    /// Spinners, when stdout is a terminal and output is for people.
    progress: Option<MultiProgress>,
    verbosity: Verbosity,
    json: bool,
    diff: bool,
    check: bool,
}

/// The outcome on one host, for the recap and JSON.
#[derive(Debug, Serialize)]
pub struct HostOutcome {
    pub host: String,
    pub target: String,
    pub plays: Vec<PlayReport>,
    /// Why the host could not be worked on at all (unreachable, auth...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HostResult for HostOutcome {
    fn set_error(&mut self, error: String) {
        self.error = Some(error);
    }
    fn failed(&self) -> bool {
        self.error.is_some() || self.plays.iter().any(|p| p.failed())
    }
}

impl HostOutcome {
    fn recap(&self) -> Recap {
        let mut total = Recap::default();
        for p in &self.plays {
            total.ok += p.recap.ok;
            total.changed += p.recap.changed;
            total.failed += p.recap.failed;
            total.skipped += p.recap.skipped;
        }
        if self.error.is_some() {
            total.failed += 1;
        }
        total
    }
}

impl Reporter {
    pub fn new(settings: &Settings) -> Reporter {
        let people = !settings.json && settings.verbosity != Verbosity::Quiet;
        let progress = (people && std::io::stdout().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout()));
        Reporter {
            progress,
            verbosity: settings.verbosity,
            json: settings.json,
            diff: settings.diff,
            check: settings.check,
        }
    }

    /// An observer for one host's run.
    pub fn host(&self, host: &str) -> HostObserver<'_> {
        let spinner = self.progress.as_ref().map(|multi| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:.bold} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(host.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        HostObserver {
            reporter: self,
            host: host.to_string(),
            spinner,
        }
    }

    fn line(&self, text: &str) {
        if self.json {
            return;
        }
        match &self.progress {
            Some(multi) => {
                let _ = multi.println(text);
            }
            None => println!("{text}"),
        }
    }

    /// The recap (or the JSON document) once every host is done.
    pub fn finish(&self, outcomes: &[HostOutcome]) {
        if let Some(multi) = &self.progress {
            let _ = multi.clear();
        }
        if self.json {
            #[derive(Serialize)]
            struct Document<'a> {
                check: bool,
                hosts: &'a [HostOutcome],
            }
            let doc = Document {
                check: self.check,
                hosts: outcomes,
            };
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            return;
        }
        println!(
            "\nRECAP{}",
            if self.check {
                " (check mode: nothing was changed)"
            } else {
                ""
            }
        );
        let width = outcomes.iter().map(|o| o.host.len()).max().unwrap_or(0);
        for outcome in outcomes {
            let r = outcome.recap();
            let mut line = format!(
                "{:<width$}  ok={:<3} changed={:<3} failed={:<3} skipped={:<3}",
                outcome.host, r.ok, r.changed, r.failed, r.skipped
            );
            if self.verbosity > Verbosity::Normal {
                let trips: usize = outcome.plays.iter().map(|p| p.round_trips).sum();
                let ms: u64 = outcome.plays.iter().map(|p| p.elapsed_ms).sum();
                line.push_str(&format!(
                    " round_trips={trips} time={:.1}s",
                    ms as f64 / 1000.0
                ));
            }
            println!("{line}");
            if let Some(error) = &outcome.error {
                println!("{:<width$}  error: {error}", "");
            }
            for play in &outcome.plays {
                if !play.handlers_not_run.is_empty() {
                    println!(
                        "{:<width$}  handlers NOT run because of the failure: {}",
                        "",
                        play.handlers_not_run.join(", ")
                    );
                }
            }
        }
    }
}

pub struct HostObserver<'a> {
    reporter: &'a Reporter,
    host: String,
    spinner: Option<ProgressBar>,
}

impl HostObserver<'_> {
    pub fn done(&self, summary: &str) {
        if let Some(bar) = &self.spinner {
            bar.finish_with_message(summary.to_string());
        }
    }
}

impl Observer for HostObserver<'_> {
    fn phase(&self, what: &str) {
        if let Some(bar) = &self.spinner {
            bar.set_message(what.to_string());
        } else if self.reporter.verbosity > Verbosity::Normal {
            self.reporter.line(&format!("{} | {what}", self.host));
        }
    }

    fn task(&self, result: &TaskResult) {
        let r = self.reporter;
        if let Some(bar) = &self.spinner {
            bar.set_message(result.name.clone());
        }
        let shown = match result.status {
            Status::Failed => true,
            Status::Changed => r.verbosity != Verbosity::Quiet,
            Status::Ok | Status::Skipped => r.verbosity > Verbosity::Normal,
        };
        if !shown {
            return;
        }
        let status = match (result.status, r.check) {
            (Status::Changed, true) => "would change",
            (Status::Changed, false) => "changed",
            (Status::Ok, _) => "ok",
            (Status::Failed, _) => "FAILED",
            (Status::Skipped, _) => "skipped",
        };
        let kind = if result.handler { "handler " } else { "" };
        let mut line = format!("{} | {status:<12} | {kind}{}", self.host, result.name);
        if !result.changes.is_empty() {
            line.push_str(&format!(": {}", result.changes.join("; ")));
        }
        if let Some(error) = &result.error {
            line.push_str(&format!("\n    {}", error.replace('\n', "\n    ")));
        }
        if r.diff {
            for diff in &result.diffs {
                line.push('\n');
                line.push_str(diff.trim_end());
            }
        }
        r.line(&line);
    }
}

/// A duration in whole milliseconds, as the JSON reports give times.
pub fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}
