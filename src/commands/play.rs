//! `vpsup play`: run a playbook on hosts. Also the runner that `init`,
//! `deploy` and `renew-certs` build on.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;

use super::{connect, MAX_PARALLEL_HOSTS};
use crate::engine::assets::Assets;
use crate::engine::playbook::{self, Play};
use crate::engine::render::{Renderer, Vars};
use crate::engine::{run_play, Hooks, NoHooks, Observer, RunOptions};
use crate::report::{HostOutcome, Reporter};
use crate::settings::{HostTarget, Settings, SettingsError};
use crate::transport::ssh::{SshError, SshTarget, SshTransport};

pub async fn run(
    settings: &Settings,
    playbook: &str,
    target: Option<&str>,
    vars: &[String],
    tags: &[String],
) -> anyhow::Result<()> {
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
    let failed = outcomes.iter().filter(|o| o.failed()).count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} host(s) failed", outcomes.len());
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
    /// Connects; returns the connection and the target it really used.
    async fn connect(
        &self,
        settings: &Settings,
        target: &HostTarget,
    ) -> Result<(SshTransport, SshTarget), SshError> {
        let (transport, _) = connect(settings, target).await?;
        Ok((transport, target.ssh.clone()))
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
    let limit = Arc::new(Semaphore::new(MAX_PARALLEL_HOSTS));
    let runs = targets.iter().map(|target| {
        let limit = limit.clone();
        let reporter = &reporter;
        async move {
            let _slot = limit.acquire().await;
            let observer = reporter.host(&target.name);
            let mut outcome = HostOutcome {
                host: target.name.clone(),
                target: target.ssh.describe(),
                plays: Vec::new(),
                error: None,
            };
            observer.phase("connecting");
            match host_run.connect(settings, target).await {
                Err(e) => outcome.error = Some(e.to_string()),
                Ok((transport, connected)) => {
                    outcome.target = connected.describe();
                    let hooks = host_run.hooks(settings, target, connected);
                    for play in plays {
                        let host_vars = Vars {
                            base: base_vars(settings, target, vars),
                            ..Default::default()
                        };
                        let report = run_play(
                            &transport,
                            play,
                            renderer,
                            host_vars,
                            options,
                            hooks.as_ref(),
                            &observer,
                        )
                        .await;
                        let failed = report.failed();
                        outcome.plays.push(report);
                        if failed {
                            break;
                        }
                    }
                    transport.close().await;
                }
            }
            observer.done(if outcome.failed() { "failed" } else { "done" });
            outcome
        }
    });
    let outcomes = futures::future::join_all(runs).await;
    reporter.finish(&outcomes);
    outcomes
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
