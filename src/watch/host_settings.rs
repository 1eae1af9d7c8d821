//! What a host needs to watch an app by itself, and where it keeps what it
//! saw. `vpsup deploy` writes the settings (contents on stdin, never in a
//! process argument, as `acme::host_settings::sync_files` does); `vpsup
//! watch --local` (the vpsup-watch timer) reads them.
//!
//! ```text
//! /etc/vpsup/watch/<app>.toml          0600  app, host, sites, [watch], [alerts] (files below)
//! /etc/vpsup/watch/<app>/ntfy-token    0600  [alerts] ntfy_token_file's copy
//! /etc/vpsup/watch/<app>/smtp-password 0600  [alerts] smtp_password_file's copy
//! /etc/vpsup/watch/<app>/ca.pem        0600  [alerts] ca_file's copy
//! /var/lib/vpsup/watch/<app>.json            open problems, deliveries owed, trends (`state`)
//! /run/vpsup/watch/<app>.json                 the same while the disk is too full to write it
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::acme::host_settings::HostFile;
use crate::backup::host_settings::project_file;
use crate::config::{AlertsConfig, Config, WatchConfig};
use crate::deploy::remote::{project_name, AppPaths};
use crate::layout::{WATCH_SETTINGS_DIR, WATCH_STATE_DIR, WATCH_STATE_FALLBACK_DIR};

/// `/etc/vpsup/watch/<app>.toml`.
pub fn settings_path(app: &str) -> String {
    format!("{WATCH_SETTINGS_DIR}/{app}.toml")
}

/// The directory of an app's channel secrets.
pub fn files_dir(app: &str) -> String {
    format!("{WATCH_SETTINGS_DIR}/{app}")
}

/// `/var/lib/vpsup/watch/<app>.json`.
pub fn state_path(app: &str) -> String {
    format!("{WATCH_STATE_DIR}/{app}.json")
}

/// One site, as the host checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteCheck {
    /// The name asked for (SNI and Host): the domain, or a wildcard's check name.
    pub name: String,
    /// The health path.
    pub health: String,
}

/// What the host keeps for watching an app (`<app>.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchSettings {
    pub app: String,
    /// vpsup's name for the host, in every message.
    pub host: String,
    /// The compose project whose containers are the app's (`None`: no
    /// container checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default)]
    pub sites: Vec<SiteCheck>,
    /// Where this host's nginx serves HTTPS [default: 127.0.0.1:443].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx: Option<String>,
    /// Where the apps live [default: /srv/vpsup]: the app's `serving`
    /// file there says which slot's containers are its too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps_dir: Option<String>,
    /// The state file [default: /var/lib/vpsup/watch/<app>.json].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<PathBuf>,
    /// Where the state goes while `state` cannot be written [default:
    /// /run/vpsup/watch/<app>.json].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_fallback: Option<PathBuf>,
    #[serde(default)]
    pub watch: WatchConfig,
    /// The channels, their file keys pointing at the host's copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertsConfig>,
}

impl WatchSettings {
    /// `(host, port)` of nginx's HTTPS listener.
    pub fn nginx_address(&self) -> (&str, &str) {
        let address = self.nginx.as_deref().unwrap_or("127.0.0.1:443");
        match address.rsplit_once(':') {
            Some((host, port)) => (host.trim_start_matches('[').trim_end_matches(']'), port),
            None => (address, "443"),
        }
    }

    /// Where the app lives on the host.
    pub fn app_paths(&self) -> AppPaths {
        let paths = AppPaths::new(&self.app);
        match &self.apps_dir {
            Some(dir) => AppPaths {
                dir: format!("{dir}/{}", self.app),
                ..paths
            },
            None => paths,
        }
    }

    pub fn state_file(&self) -> PathBuf {
        self.state
            .clone()
            .unwrap_or_else(|| PathBuf::from(state_path(&self.app)))
    }

    pub fn state_fallback_file(&self) -> PathBuf {
        self.state_fallback.clone().unwrap_or_else(|| {
            PathBuf::from(format!("{WATCH_STATE_FALLBACK_DIR}/{}.json", self.app))
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WatchSettingsError {
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: {cause}", path.display())]
    Unreadable { path: PathBuf, cause: String },
    #[error("`vpsup watch` runs on a host (`vpsup watch --local`, what its vpsup-watch timer runs); from here, `vpsup status` shows what each host's checks found")]
    NotLocal,
}

impl crate::exit::ExitStatus for WatchSettingsError {
    fn exit_code(&self) -> u8 {
        crate::exit::BAD_INPUT
    }
}

/// The files for `config`'s app on host `host` (the files `[alerts]` names
/// relative to `project`), the settings file last (it names the others).
/// None without `[app]`.
pub fn files(
    config: &Config,
    project: &Path,
    host: &str,
) -> Result<Vec<HostFile>, WatchSettingsError> {
    let Some(app) = &config.app else {
        return Ok(Vec::new());
    };
    let app = app.name.to_string();
    let mut out = Vec::new();
    let alerts = match &config.alerts {
        None => None,
        Some(alerts) => {
            let mut on_host = alerts.clone();
            let mut copy = |file: &Option<PathBuf>,
                            name: &str|
             -> Result<Option<PathBuf>, WatchSettingsError> {
                let Some(file) = file else { return Ok(None) };
                let path = project_file(project, file);
                let content = std::fs::read(&path)
                    .map_err(|cause| WatchSettingsError::Read { path, cause })?;
                let there = format!("{}/{name}", files_dir(&app));
                out.push(HostFile {
                    path: there.clone(),
                    content,
                    mode: 0o600,
                });
                Ok(Some(PathBuf::from(there)))
            };
            on_host.ntfy_token_file = copy(&alerts.ntfy_token_file, "ntfy-token")?;
            on_host.smtp_password_file = copy(&alerts.smtp_password_file, "smtp-password")?;
            on_host.ca_file = copy(&alerts.ca_file, "ca.pem")?;
            Some(on_host)
        }
    };
    let settings = WatchSettings {
        app: app.clone(),
        host: host.to_string(),
        project: Some(project_name(&app)),
        sites: config
            .sites
            .iter()
            .map(|s| SiteCheck {
                name: s.check_name().unwrap_or_else(|_| s.domain.0.clone()),
                health: s.health.0.clone(),
            })
            .collect(),
        nginx: None,
        apps_dir: None,
        state: None,
        state_fallback: None,
        watch: config.watch,
        alerts,
    };
    let body = toml::to_string(&settings).map_err(|e| WatchSettingsError::Unreadable {
        path: PathBuf::from(settings_path(&app)),
        cause: e.to_string(),
    })?;
    let doc = format!(
        "# Managed by vpsup: app {app}'s checks and alert channels, as its project's\n\
         # last `vpsup deploy` left them. `vpsup watch --local` (the {timer}\n\
         # timer) checks and alerts with them. Edits here are overwritten.\n\n{body}",
        timer = crate::layout::WATCH_TIMER
    );
    out.push(HostFile {
        path: settings_path(&app),
        content: doc.into_bytes(),
        mode: 0o600,
    });
    Ok(out)
}

/// Brings the host's copy of `files` up to date (contents on stdin), and
/// removes `stale` (secret copies the settings no longer name).
pub async fn write(
    transport: &dyn crate::transport::Transport,
    files: &[HostFile],
    stale: &[String],
) -> Result<(), crate::transport::TransportError> {
    crate::acme::host_settings::sync_files(
        transport,
        WATCH_SETTINGS_DIR,
        files,
        "the watch settings",
    )
    .await?;
    if !stale.is_empty() {
        let paths: Vec<String> = stale
            .iter()
            .map(|p| crate::transport::script::quote(p))
            .collect();
        transport
            .run_ok(
                "removing watch files the settings no longer name",
                crate::transport::ExecRequest::new(format!("rm -f -- {}", paths.join(" ")))
                    .become_root(true),
            )
            .await?;
    }
    Ok(())
}

/// Reads one app's settings file.
pub fn read(path: &Path) -> Result<WatchSettings, WatchSettingsError> {
    let text = std::fs::read_to_string(path).map_err(|cause| WatchSettingsError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    toml::from_str(&text).map_err(|e| WatchSettingsError::Unreadable {
        path: path.to_path_buf(),
        cause: e.message().trim_end().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_copy_points_at_secret_files_beside_it_and_reads_back() {
        let project = tempfile::tempdir().unwrap();
        std::fs::write(project.path().join("smtp-pw"), "hunter2\n").unwrap();
        let config = Config::parse(
            "[app]\nname = \"shop\"\n[[sites]]\ndomain = \"shop.example.com\"\nservice = \"web\"\nport = 80\nhealth = \"/healthz\"\n\
             [watch]\ndisk_percent = 80\n\
             [alerts]\nsmtp_server = \"mail.example.com\"\nsmtp_user = \"u\"\nsmtp_password_file = \"smtp-pw\"\nemail_from = \"a@example.com\"\nemail_to = [\"b@example.com\"]\n",
            Path::new("vpsup.toml"),
        )
        .unwrap();
        let files = files(&config, project.path(), "web").unwrap();
        let placed: Vec<(&str, u32)> = files.iter().map(|f| (f.path.as_str(), f.mode)).collect();
        assert_eq!(
            placed,
            [
                ("/etc/vpsup/watch/shop/smtp-password", 0o600),
                ("/etc/vpsup/watch/shop.toml", 0o600)
            ]
        );
        assert_eq!(files[0].content, b"hunter2\n");
        let doc = String::from_utf8(files[1].content.clone()).unwrap();
        assert!(!doc.contains("hunter2"), "the secret stays in its own file");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.toml");
        std::fs::write(&path, &doc).unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back.project.as_deref(), Some("vpsup-shop"));
        assert_eq!(back.watch.disk_percent.0, 80);
        assert_eq!(back.sites[0].health, "/healthz");
        assert_eq!(
            back.alerts.as_ref().unwrap().smtp_password_file.as_deref(),
            Some(Path::new("/etc/vpsup/watch/shop/smtp-password"))
        );
        assert_eq!(back.nginx_address(), ("127.0.0.1", "443"));
        assert_eq!(
            back.state_file(),
            Path::new("/var/lib/vpsup/watch/shop.json")
        );
    }
}
