//! Running plays on every host of a command: one connection per host,
//! several hosts at once (`fleet`), progress and the recap (`report`). `vpsup
//! play` and `init` differ only in how they connect and which hooks their
//! playbooks may name (`HostRun`).

use std::ops::ControlFlow;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::playbook::Play;
use super::render::{Renderer, Vars};
use super::{run_play, Hooks, Observer, RunOptions};
use crate::fleet::{self, Connection, HostJob, HostResult, Turn};
use crate::report::{HostObserver, HostOutcome, Reporter};
use crate::settings::{HostTarget, Settings};
use crate::transport::ssh::{SshError, SshTarget};

/// What a command adds to running plays on a host: how it connects, and the
/// hooks its playbook may name.
#[async_trait]
pub trait HostRun: Sync {
    /// Connects (the connection says which target it really used).
    async fn connect(
        &self,
        settings: &Settings,
        target: &HostTarget,
    ) -> Result<Connection, SshError> {
        fleet::connect(settings, target).await
    }

    /// The hooks for one host, given the target connected to.
    fn hooks<'a>(
        &'a self,
        settings: &'a Settings,
        target: &HostTarget,
        connected: SshTarget,
    ) -> Box<dyn Hooks + 'a>;
}

/// Runs `plays` on every target, several hosts at once, one connection each,
/// and prints progress and the recap.
pub async fn run_on_hosts(
    settings: &Settings,
    targets: &[HostTarget],
    plays: &[Play],
    renderer: &Renderer,
    vars: &Map<String, Value>,
    options: &RunOptions,
    host_run: &dyn HostRun,
) -> Vec<HostOutcome> {
    let reporter = Reporter::new(settings);
    let job = PlaysJob {
        settings,
        plays,
        renderer,
        vars,
        options,
        host_run,
        reporter: &reporter,
    };
    let outcomes: Vec<HostOutcome> = fleet::for_each_host(settings, targets, &job)
        .await
        .into_iter()
        .map(|host| host.outcome)
        .collect();
    reporter.finish(&outcomes);
    outcomes
}

/// The plays on one host after another, one connection per host.
struct PlaysJob<'a> {
    settings: &'a Settings,
    plays: &'a [Play],
    renderer: &'a Renderer,
    vars: &'a Map<String, Value>,
    options: &'a RunOptions,
    host_run: &'a dyn HostRun,
    reporter: &'a Reporter,
}

/// A host's outcome and its line of progress.
struct PlaysOnHost<'a> {
    outcome: HostOutcome,
    observer: HostObserver<'a>,
}

impl HostResult for PlaysOnHost<'_> {
    fn set_error(&mut self, error: String) {
        self.outcome.set_error(error);
    }
    fn failed(&self) -> bool {
        self.outcome.failed()
    }
}

impl<'a> HostJob for PlaysJob<'a> {
    type Report = PlaysOnHost<'a>;

    fn begin(&self, turn: &Turn<'_>) -> ControlFlow<Self::Report, Self::Report> {
        let target = turn.target;
        let observer = self.reporter.host(&target.name);
        observer.phase("connecting");
        ControlFlow::Continue(PlaysOnHost {
            outcome: HostOutcome {
                host: target.name.clone(),
                target: target.ssh.describe(),
                plays: Vec::new(),
                error: None,
            },
            observer,
        })
    }

    async fn connect(&self, settings: &Settings, turn: &Turn<'_>) -> Result<Connection, SshError> {
        self.host_run.connect(settings, turn.target).await
    }

    async fn on_host(&self, turn: &Turn<'_>, connection: &Connection, host: &mut Self::Report) {
        let target = turn.target;
        host.outcome.target = connection.target.describe();
        let hooks = self
            .host_run
            .hooks(self.settings, target, connection.target.clone());
        for play in self.plays {
            let host_vars = Vars {
                base: base_vars(self.settings, target, self.vars),
                ..Default::default()
            };
            let report = run_play(
                &connection.transport,
                play,
                self.renderer,
                host_vars,
                self.options,
                hooks.as_ref(),
                &host.observer,
            )
            .await;
            let failed = report.failed();
            host.outcome.plays.push(report);
            if failed {
                break;
            }
        }
    }

    async fn end(&self, _: &Turn<'_>, host: &mut Self::Report) {
        host.observer.done(if host.outcome.failed() {
            "failed"
        } else {
            "done"
        });
    }
}

/// The command's variables plus `host` and `config`, for one host.
fn base_vars(
    settings: &Settings,
    target: &HostTarget,
    vars: &Map<String, Value>,
) -> Map<String, Value> {
    let mut base = vars.clone();
    base.insert(
        "host".to_string(),
        json!({
            "name": target.name,
            "address": target.ssh.host,
            "port": target.ssh.port,
            "user": target.ssh.user,
        }),
    );
    let config = settings.config.as_ref().map_or(Value::Null, |c| {
        serde_json::to_value(c).unwrap_or(Value::Null)
    });
    base.insert("config".to_string(), config);
    base
}
