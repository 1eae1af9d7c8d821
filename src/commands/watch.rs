//! `vpsup watch --local`: on the host, one run of the checks for every app
//! with watch settings there (`crate::watch`), a line per problem and per
//! message sent. It fails (status 1) only when the run itself did: a
//! channel that refused its message, a state file that cannot be written;
//! problems are what it reports, not failures of its own.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::layout::WATCH_SETTINGS_DIR;
use crate::settings::{Settings, Verbosity};
use crate::transport::LocalTransport;
use crate::watch::{self, host_settings, AppReport};

pub async fn run(settings: &Settings, local: bool, file: Option<&Path>) -> crate::exit::Result<()> {
    if !local {
        return Err(host_settings::WatchSettingsError::NotLocal.into());
    }
    let files = match file {
        Some(file) => vec![file.to_path_buf()],
        None => settings_files(Path::new(WATCH_SETTINGS_DIR)),
    };
    if files.is_empty() {
        if settings.verbosity != Verbosity::Quiet && !settings.json {
            eprintln!(
                "nothing to watch on this host yet: `vpsup deploy` writes each app's settings to {WATCH_SETTINGS_DIR}/"
            );
        }
        if settings.json {
            println!("{}", json!({"ok": true, "apps": []}));
        }
        return Ok(());
    }
    // One app's unreadable settings (written by a newer vpsup, say) must
    // not keep the others from being checked. Reports in the files' order.
    let read: Vec<Result<host_settings::WatchSettings, AppReport>> = files
        .iter()
        .map(|path| {
            host_settings::read(path).map_err(|e| AppReport::unreadable(path, e.to_string()))
        })
        .collect();
    let apps: Vec<host_settings::WatchSettings> = read
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    let mut checked = if apps.is_empty() {
        Vec::new()
    } else {
        let transport = LocalTransport::current();
        watch::run(&transport, &apps, watch::gather::DockerPaths::host()).await
    }
    .into_iter();
    let reports: Vec<AppReport> = read
        .into_iter()
        .filter_map(|r| match r {
            Ok(_) => checked.next(),
            Err(unreadable) => Some(unreadable),
        })
        .collect();
    print(settings, &reports)?;
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.app.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(crate::exit::Error::failed(format!(
            "watch: the run did not complete for {} (its messages are retried on the next run)",
            failed.join(", ")
        )))
    }
}

/// Every `<app>.toml` in `dir`, by name.
fn settings_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

fn print(settings: &Settings, reports: &[AppReport]) -> crate::exit::Result<()> {
    if settings.json {
        let ok = reports.iter().all(AppReport::ok);
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"ok": ok, "apps": reports}))?
        );
        return Ok(());
    }
    for r in reports {
        if settings.verbosity != Verbosity::Quiet {
            if r.problems.is_empty() {
                println!("{} on {}: no problems", r.app, r.host);
            }
            for p in &r.problems {
                println!(
                    "{} on {}: {}: {} (since {})",
                    r.app,
                    r.host,
                    p.check,
                    p.text,
                    crate::watch::since(p.since)
                );
            }
        }
        for s in &r.sent {
            match &s.delivery.error {
                None if settings.verbosity != Verbosity::Quiet => {
                    println!("{}: sent to {} ({})", r.app, s.delivery.channel, s.summary)
                }
                None => {}
                Some(e) => println!(
                    "{}: {} FAILED (retried on the next run): {e}",
                    r.app, s.delivery.channel
                ),
            }
        }
        for e in &r.errors {
            eprintln!("{}: {e}", r.app);
        }
    }
    Ok(())
}
