//! `vpsup play`: run a playbook on hosts. Also the runner that `init`,
//! `deploy` and `renew-certs` build on.

use std::ops::ControlFlow;
use std::path::Path;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use crate::engine::assets::Assets;
use crate::engine::playbook::{self, Play};
use crate::engine::render::{Renderer, Vars};
use crate::engine::{run_play, Hooks, NoHooks, Observer, RunOptions};
use crate::fleet::{self, Connection, Failures, HostJob, HostResult, Turn};
use crate::report::{HostObserver, HostOutcome, Reporter};
use crate::settings::{HostTarget, Settings, SettingsError};
use crate::transport::ssh::{SshError, SshTarget};

pub async fn run(
    settings: &Settings,
    playbook: &str,
    target: Option<&str>,
    vars: &[String],
    tags: &[String],
) -> crate::exit::Result<()> {
    let targets = settings.targets(target)?;
    let assets = Assets::load(Some(&project_dir(settings)))?;
    let asset = assets.playbook(playbook)?;
    let plays = playbook::parse(&asset.text, &asset.origin)?;
    playbook::check_arguments(&plays)?;
    let renderer = Renderer::new(&assets.templates).map_err(anyhow::Error::msg)?;
    let vars = parse_vars(vars)?;
    let options = RunOptions {
        check: settings.check,
        diff: settings.diff,
        tags: tags.to_vec(),
    };
    let outcomes = run_on_hosts(
        settings, &targets, &plays, &renderer, &vars, &options, &PlainRun,
    )
    .await;
    if let Some(failures) = Failures::of(&outcomes) {
        return Err(crate::exit::Error::failed(format!("{failures} failed")));
    }
    Ok(())
}

/// Where a project's own playbooks/ and templates/ live: beside vpsup.toml.
pub fn project_dir(settings: &Settings) -> std::path::PathBuf {
    match settings.config_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    }
}

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

/// `vpsup play`: a plain connection and no hooks.
struct PlainRun;

impl HostRun for PlainRun {
    fn hooks<'a>(&'a self, _: &'a Settings, _: &HostTarget, _: SshTarget) -> Box<dyn Hooks + 'a> {
        Box::new(NoHooks)
    }
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
    let outcomes: Vec<HostOutcome> = fleet::run(settings, targets, &job)
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

    async fn run(&self, turn: &Turn<'_>, connection: &Connection, host: &mut Self::Report) {
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

/// `NAME=VALUE` pairs; VALUE is YAML, so numbers and booleans keep their type.
fn parse_vars(pairs: &[String]) -> Result<Map<String, Value>, SettingsError> {
    pairs
        .iter()
        .map(|pair| {
            let bad = |why: &str| SettingsError::BadVar {
                pair: pair.clone(),
                why: why.to_string(),
            };
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| bad("expected NAME=VALUE"))?;
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(bad("NAME must be letters, digits and _"));
            }
            let value: Value = if value.is_empty() {
                Value::String(String::new())
            } else {
                serde_saphyr::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()))
            };
            Ok((name.to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_keep_their_yaml_types() {
        let vars = parse_vars(&[
            "port=2222".into(),
            "on=true".into(),
            "name=web 1".into(),
            "empty=".into(),
        ])
        .unwrap();
        assert_eq!(vars["port"], json!(2222));
        assert_eq!(vars["on"], json!(true));
        assert_eq!(vars["name"], json!("web 1"));
        assert_eq!(vars["empty"], json!(""));
        assert!(parse_vars(&["novalue".into()]).is_err());
        assert!(parse_vars(&["bad-name=1".into()]).is_err());
    }
}
