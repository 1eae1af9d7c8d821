//! The host's side of a deploy: where an app lives, the one probe that reads
//! everything a deploy decides on, and the scripts that change the host.
//! Pure functions from names to shell, so each can be read and tested alone.
//!
//! ```text
//! /srv/vpsup/<app>/releases/<id>/      one directory per release (files + .vpsup/)
//! /srv/vpsup/<app>/current -> releases/<id>   switched only after a healthy deploy
//! /srv/vpsup/<app>/shared/secrets.env  generated secrets (0600)
//! /srv/vpsup/<app>/deploy.lock         one deploy at a time
//! /srv/vpsup/<app>/deployed            release, time and operator of the last deploy
//! /etc/nginx/sites-enabled/vpsup-<app>--<domain>.conf   the app's sites
//! ```

use serde::{Deserialize, Serialize};

use super::upload;
use crate::acme::store;
use crate::facts;
use crate::transport::script::quote;

const APPS_DIR: &str = "/srv/vpsup";
const SITES_DIR: &str = "/etc/nginx/sites-enabled";
const WEBSOCKET_MAP: &str = "/etc/nginx/conf.d/vpsup-websocket-map.conf";

/// Inside a release: what vpsup itself adds (never a project file).
pub const META_DIR: &str = ".vpsup";
pub const META_FILE: &str = ".vpsup/release.json";
pub const NGINX_DIR: &str = ".vpsup/nginx";
pub const MAP_FILE: &str = ".vpsup/websocket-map.conf";

/// How a release runs: kept in the release, so a rollback starts the
/// previous release exactly as it was deployed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReleaseMeta {
    pub compose_files: Vec<String>,
    pub env_files: Vec<String>,
    /// `(health path, loopback port)` per site.
    pub health: Vec<(String, u16)>,
    pub secrets: bool,
}

/// Every app's last deploy, one `app record` line each (for `status`).
pub fn deployed_listing() -> String {
    format!(
        r#"for f in {APPS_DIR}/*/deployed; do [ -e "$f" ] && echo "$(basename "$(dirname "$f")") $(head -n1 "$f")"; done"#
    )
}

/// The last deploy of an app, from its `deployed` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deployed {
    pub app: String,
    pub release: String,
    pub at: String,
    pub by: String,
}

impl Deployed {
    /// The record's one line: `release=ID at=RFC3339 by=OWNER...`.
    pub fn record(release: &str, at: &str, by: &str) -> String {
        format!("release={release} at={at} by={by}")
    }
}

/// `app release=ID at=TIME by=OWNER` lines.
pub fn parse_deployed(text: &str) -> Vec<Deployed> {
    text.lines()
        .filter_map(|line| {
            let (app, record) = line.split_once(' ')?;
            let release = record.strip_prefix("release=")?;
            let (release, rest) = release.split_once(" at=")?;
            let (at, by) = rest.split_once(" by=")?;
            Some(Deployed {
                app: app.to_string(),
                release: release.to_string(),
                at: at.to_string(),
                by: by.to_string(),
            })
        })
        .collect()
}

/// Where one app lives on the host.
pub struct AppPaths {
    pub app: String,
    pub dir: String,
}

impl AppPaths {
    pub fn new(app: &str) -> AppPaths {
        AppPaths {
            app: app.to_string(),
            dir: format!("{APPS_DIR}/{app}"),
        }
    }

    pub fn release(&self, id: &str) -> String {
        format!("{}/releases/{id}", self.dir)
    }

    pub fn secrets(&self) -> String {
        format!("{}/shared/secrets.env", self.dir)
    }

    pub fn lock(&self) -> String {
        format!("{}/deploy.lock", self.dir)
    }

    /// The site file nginx reads for `domain`.
    pub fn site_file(&self, domain: &str) -> String {
        format!("{SITES_DIR}/{}", self.site_file_name(domain))
    }

    fn site_file_name(&self, domain: &str) -> String {
        format!("vpsup-{}--{domain}.conf", self.app)
    }

    /// Everything a deploy decides on, in one exec (as root): facts, the
    /// current release's files and how it runs, the releases kept, the
    /// secrets' names, the installed site files' hashes, the app's
    /// containers and the certificate store.
    pub fn probe_script(&self, store_dir: &str) -> String {
        let dir = quote(&self.dir);
        let app = quote(&self.app);
        format!(
            r#"( {facts} )
echo @@release
{release}
echo @@meta
cat {dir}/current/{META_FILE} 2>/dev/null && echo
echo @@releases
ls -1 {dir}/releases 2>/dev/null
echo @@secrets
cut -d= -f1 {secrets} 2>/dev/null
echo @@sites
for f in {SITES_DIR}/vpsup-{app}--*.conf; do [ -e "$f" ] && echo "$(sha256sum < "$f" | cut -d' ' -f1) $(basename "$f")"; done
echo @@containers
command -v docker >/dev/null 2>&1 && docker ps -a --filter label=com.docker.compose.project={app} --format '{{{{.Label "com.docker.compose.service"}}}}	{{{{.State}}}}	{{{{.Status}}}}' 2>/dev/null
echo @@certificates
{certs}
exit 0"#,
            facts = facts::PROBE_SCRIPT,
            release = upload::probe_script(&self.dir),
            secrets = quote(&self.secrets()),
            certs = store::listing_script(store_dir),
        )
    }

    /// Makes the release at `release` what nginx serves and what `current`
    /// points at: its site files replace the app's (put back as they were
    /// if `nginx -t` fails), `reload` runs, `current` switches, and the
    /// releases in `prune` go. `record` is the `deployed` file's content.
    pub fn activate_script(
        &self,
        id: &str,
        reload: &str,
        prune: &[String],
        record: &str,
    ) -> String {
        let release = self.release(id);
        let ours = format!("{SITES_DIR}/vpsup-{}--*.conf", quote(&self.app));
        let mut script = format!(
            r#"set -e
trap '' HUP
backup=$(mktemp -d)
for f in {ours}; do [ -e "$f" ] && cp -p "$f" "$backup/"; done
restore() {{
  rm -f {ours}
  for f in "$backup"/*; do [ -e "$f" ] && cp -p "$f" {SITES_DIR}/; done
  rm -rf "$backup"
}}
rm -f {ours}
for f in {nginx}/*.conf; do
  [ -e "$f" ] && cp "$f" {SITES_DIR}/vpsup-{app}--"$(basename "$f")"
done
[ -e {map} ] && cp {map} {WEBSOCKET_MAP}
if ! out=$(nginx -t 2>&1); then
  restore
  echo "nginx -t refused the new site configuration, the previous one is back in place: $out" >&2
  exit 1
fi
rm -rf "$backup"
"#,
            nginx = quote(&format!("{release}/{NGINX_DIR}")),
            map = quote(&format!("{release}/{MAP_FILE}")),
            app = quote(&self.app),
        );
        script.push_str(reload);
        script.push('\n');
        script.push_str(&self.switch_script(id));
        for old in prune {
            script.push_str(&format!("rm -rf -- {}\n", quote(&self.release(old))));
        }
        script.push_str(&format!(
            "printf '%s\\n' {} > {}\n",
            quote(record),
            quote(&format!("{}/deployed", self.dir))
        ));
        script
    }

    /// Points `current` at release `id` in one rename.
    pub fn switch_script(&self, id: &str) -> String {
        format!(
            "ln -sfn {target} {dir}/.current.new && mv -T {dir}/.current.new {dir}/current\n",
            target = quote(&format!("releases/{id}")),
            dir = quote(&self.dir)
        )
    }
}

/// A container as `docker ps` reports it: by its compose service in a
/// deploy's probe, by its container name in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    pub name: String,
    pub state: String,
    pub status: String,
}

impl Container {
    /// Running, and healthy when it has a healthcheck.
    pub fn is_up(&self) -> bool {
        self.state == "running"
            && !self.status.contains("unhealthy")
            && !self.status.contains("starting")
    }
}

pub fn parse_containers(text: &str) -> Vec<Container> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, '\t');
            Some(Container {
                name: parts.next()?.to_string(),
                state: parts.next()?.to_string(),
                status: parts.next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{ExecRequest, LocalTransport, Transport};

    #[test]
    fn the_probe_reads_every_part_in_one_script() {
        let script = AppPaths::new("doctor").probe_script("/etc/vpsup/acme");
        for section in [
            "@@release",
            "@@meta",
            "@@releases",
            "@@secrets",
            "@@sites",
            "@@containers",
            "@@certificates",
        ] {
            assert!(script.contains(&format!("echo {section}\n")), "{section}");
        }
        assert!(script.contains("label=com.docker.compose.project=doctor"));
        let parts =
            facts::sections("os_id=debian\n@@release\ncurrent r1\n@@secrets\nDB_PASSWORD\n");
        assert_eq!(parts[0], ("facts", "os_id=debian\n".to_string()));
        assert_eq!(parts[2], ("secrets", "DB_PASSWORD\n".to_string()));
    }

    #[test]
    fn the_deployed_record_reads_back() {
        let record = Deployed::record(
            "20261122T101500Z-ab12cd34",
            "2026-11-22T10:15:00Z",
            "ana@laptop (vpsup deploy)",
        );
        let listed = parse_deployed(&format!("shop {record}\nbroken garbage\n"));
        assert_eq!(
            listed,
            [Deployed {
                app: "shop".into(),
                release: "20261122T101500Z-ab12cd34".into(),
                at: "2026-11-22T10:15:00Z".into(),
                by: "ana@laptop (vpsup deploy)".into(),
            }]
        );
    }

    #[test]
    fn containers_are_up_when_running_and_not_unhealthy() {
        let listed = parse_containers("web\trunning\tUp 2 minutes (healthy)\ndb\trunning\tUp 1 second (health: starting)\nold\texited\tExited (1) 2 minutes ago\nplain\trunning\tUp 3 hours\n");
        let up: Vec<bool> = listed.iter().map(Container::is_up).collect();
        assert_eq!(up, [true, false, false, true]);
    }

    #[tokio::test]
    async fn switching_current_replaces_the_link_in_one_rename() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AppPaths {
            app: "doctor".into(),
            dir: dir.path().display().to_string(),
        };
        let t = LocalTransport::new("test", true);
        for id in ["r1", "r2"] {
            std::fs::create_dir_all(paths.release(id)).unwrap();
            t.run_ok("switch", ExecRequest::new(paths.switch_script(id)))
                .await
                .unwrap();
            assert_eq!(
                std::fs::read_link(dir.path().join("current")).unwrap(),
                std::path::Path::new("releases").join(id)
            );
        }
        assert!(!dir.path().join(".current.new").exists());
    }
}
