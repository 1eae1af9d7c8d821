//! The fleet runner: one job on many hosts, at most `--forks` at a time, each
//! host over its own connection (connect, run, close), one report per host in
//! the order the hosts were given. Commands say what to do on a host; this says
//! how hosts are worked through, and counts the ones that failed.
//!
//! It sits one floor below the commands (they import it, it imports none of
//! them) and holds `connect`, the one way a command reaches a host.

use std::fmt;
use std::ops::ControlFlow;
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::settings::{HostTarget, Settings};
use crate::transport::ssh::{ConnectReport, SshError, SshTarget, SshTransport};

/// One host's connection, as a job gets it.
pub struct Connection {
    pub transport: SshTransport,
    /// The target really connected to (`init` may fall back to the admin).
    pub target: SshTarget,
    pub report: ConnectReport,
}

/// One host's turn: it has a slot under `--forks`.
pub struct Turn<'a> {
    pub target: &'a HostTarget,
    /// When the slot was granted (before connecting).
    pub started: Instant,
}

/// What the runner needs of a host's report.
pub trait HostResult {
    /// Records why the host could not be worked on (unreachable, refused...).
    fn set_error(&mut self, error: String);
    fn failed(&self) -> bool;
}

/// What a command does on each host. The runner calls, per host and in this
/// order: `begin`, `connect`, `run` (when connected), then closes the
/// connection and calls `end`.
// The futures are joined on the caller's task, never spawned: they need not be Send.
#[allow(async_fn_in_trait)]
pub trait HostJob {
    type Report: HostResult;

    /// The host's report before anything runs; `Break` leaves the host
    /// alone (it is not connected to, and `end` is not called).
    fn begin(&self, turn: &Turn<'_>) -> ControlFlow<Self::Report, Self::Report>;

    async fn connect(&self, settings: &Settings, turn: &Turn<'_>) -> Result<Connection, SshError> {
        connect(settings, turn.target).await
    }

    async fn on_host(&self, turn: &Turn<'_>, connection: &Connection, report: &mut Self::Report);

    /// After the connection is closed (or could not be made).
    async fn end(&self, _turn: &Turn<'_>, _report: &mut Self::Report) {}
}

/// Runs `job` on every target, at most `settings.forks(..)` hosts at once.
/// The reports come back in the order of `targets`.
pub async fn for_each_host<J: HostJob>(
    settings: &Settings,
    targets: &[HostTarget],
    job: &J,
) -> Vec<J::Report> {
    let slots = Semaphore::new(settings.forks(targets.len()));
    let turns = targets.iter().map(|target| async {
        // Never closed, so acquiring cannot fail; hold the permit to the end.
        let _slot = slots.acquire().await;
        let turn = Turn {
            target,
            started: Instant::now(),
        };
        let mut report = match job.begin(&turn) {
            ControlFlow::Continue(report) => report,
            ControlFlow::Break(report) => return report,
        };
        match job.connect(settings, &turn).await {
            Err(e) => report.set_error(e.to_string()),
            Ok(connection) => {
                job.on_host(&turn, &connection, &mut report).await;
                connection.transport.close().await;
            }
        }
        job.end(&turn, &mut report).await;
        report
    });
    futures::future::join_all(turns).await
}

/// How many hosts failed, of how many: "2 of 5 host(s)".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failures {
    pub failed: usize,
    pub hosts: usize,
}

impl Failures {
    /// `None` when no host failed.
    pub fn of<R: HostResult>(reports: &[R]) -> Option<Failures> {
        let failed = reports.iter().filter(|r| r.failed()).count();
        (failed > 0).then_some(Failures {
            failed,
            hosts: reports.len(),
        })
    }
}

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} host(s)", self.failed, self.hosts)
    }
}

/// Connects to one host and tells the operator when its host key was new.
pub async fn connect(settings: &Settings, target: &HostTarget) -> Result<Connection, SshError> {
    let (transport, report) = SshTransport::connect(&target.ssh, &settings.credentials).await?;
    if let Some(fingerprint) = &report.learned_host_key {
        // Security-relevant: shown even with -q, on stderr so --json stays clean.
        eprintln!(
            "vpsup: {}: new host, learned its key {fingerprint} into {}",
            target.ssh.describe(),
            target.ssh.known_hosts.display()
        );
    }
    Ok(Connection {
        transport,
        target: target.ssh.clone(),
        report,
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use super::*;

    struct Report(bool);

    impl HostResult for Report {
        fn set_error(&mut self, _: String) {
            self.0 = true;
        }
        fn failed(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn failures_count_the_failed_hosts_of_all() {
        assert_eq!(Failures::of(&[Report(false), Report(false)]), None);
        let failures = Failures::of(&[Report(true), Report(false), Report(true)]).unwrap();
        assert_eq!(failures.to_string(), "2 of 3 host(s)");
        assert_eq!(Failures::of::<Report>(&[]), None);
    }

    /// Hosts whose connection fails after a moment; counts the hosts in flight.
    struct Unreachable {
        in_flight: Cell<usize>,
        most: Cell<usize>,
        skip: &'static str,
    }

    struct Named {
        host: String,
        error: Option<String>,
        ended: bool,
    }

    impl HostResult for Named {
        fn set_error(&mut self, error: String) {
            self.error = Some(error);
        }
        fn failed(&self) -> bool {
            self.error.is_some()
        }
    }

    impl HostJob for Unreachable {
        type Report = Named;

        fn begin(&self, turn: &Turn<'_>) -> ControlFlow<Named, Named> {
            let report = Named {
                host: turn.target.name.clone(),
                error: None,
                ended: false,
            };
            if turn.target.name == self.skip {
                return ControlFlow::Break(report);
            }
            self.in_flight.set(self.in_flight.get() + 1);
            self.most.set(self.most.get().max(self.in_flight.get()));
            ControlFlow::Continue(report)
        }

        async fn connect(&self, _: &Settings, turn: &Turn<'_>) -> Result<Connection, SshError> {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Err(SshError::Timeout {
                addr: turn.target.name.clone(),
                secs: 1,
                reached_before: false,
            })
        }

        async fn on_host(&self, _: &Turn<'_>, _: &Connection, _: &mut Named) {
            unreachable!("never connected");
        }

        async fn end(&self, _: &Turn<'_>, report: &mut Named) {
            self.in_flight.set(self.in_flight.get() - 1);
            report.ended = true;
        }
    }

    fn targets(n: usize) -> Vec<HostTarget> {
        let settings = Settings::for_tests();
        (0..n)
            .map(|i| HostTarget {
                name: format!("h{i}"),
                ..settings.targets(Some("192.0.2.1")).unwrap().remove(0)
            })
            .collect()
    }

    #[tokio::test]
    async fn hosts_run_at_most_forks_at_once_and_report_in_order() {
        let job = Unreachable {
            in_flight: Cell::new(0),
            most: Cell::new(0),
            skip: "h3",
        };
        let settings = Settings::for_tests().with_forks(2);
        let reports = for_each_host(&settings, &targets(7), &job).await;
        assert_eq!(job.most.get(), 2);
        let hosts: Vec<&str> = reports.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(hosts, ["h0", "h1", "h2", "h3", "h4", "h5", "h6"]);
        assert!(reports[0]
            .error
            .as_deref()
            .unwrap()
            .starts_with("h0: no SSH answer"));
        assert!(
            reports[3].error.is_none() && !reports[3].ended,
            "a host left alone in `begin` is neither connected to nor ended"
        );
        assert!(reports.iter().filter(|r| r.host != "h3").all(|r| r.ended));
        assert_eq!(
            Failures::of(&reports).unwrap().to_string(),
            "6 of 7 host(s)"
        );
    }

    #[tokio::test]
    async fn by_default_every_host_runs_at_once() {
        let job = Unreachable {
            in_flight: Cell::new(0),
            most: Cell::new(0),
            skip: "",
        };
        for_each_host(&Settings::for_tests(), &targets(5), &job).await;
        assert_eq!(job.most.get(), 5);
    }
}
