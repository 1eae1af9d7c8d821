//! `vpsup play`: run a playbook on hosts.

use serde_json::{Map, Value};

use crate::engine::assets::Assets;
use crate::engine::on_hosts::{run_on_hosts, HostRun};
use crate::engine::playbook;
use crate::engine::render::Renderer;
use crate::engine::{Hooks, NoHooks, RunOptions};
use crate::fleet::Failures;
use crate::settings::{project_dir, HostTarget, Settings, SettingsError};
use crate::transport::ssh::SshTarget;

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
    // Every playbook sees the host layout (as `init` does); `-e` wins.
    let mut all_vars = crate::layout::vars();
    all_vars.extend(parse_vars(vars)?);
    let vars = all_vars;
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

/// `vpsup play`: a plain connection and no hooks.
struct PlainRun;

impl HostRun for PlainRun {
    fn hooks<'a>(&'a self, _: &'a Settings, _: &HostTarget, _: SshTarget) -> Box<dyn Hooks + 'a> {
        Box::new(NoHooks)
    }
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
    use serde_json::json;

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
