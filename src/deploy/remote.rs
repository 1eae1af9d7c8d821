//! The host's side of a deploy: where an app lives, and the scripts that
//! change the host (the probe that reads it is `deploy::probe`).
//! Pure functions from names to shell, so each can be read and tested alone.
//!
//! ```text
//! /srv/vpsup/<app>/releases/<id>/      one directory per release (files + .vpsup/)
//! /srv/vpsup/<app>/current -> releases/<id>   switched only after a healthy deploy
//! /srv/vpsup/<app>/data/<path>         what containers write through bind mounts
//!                                      (kept across releases, see deploy::volumes)
//! /srv/vpsup/<app>/shared/secrets.env  generated secrets (0600)
//! /srv/vpsup/<app>/deploy.lock         one deploy at a time
//! /srv/vpsup/<app>/deployed            release, time and operator of the last deploy
//! /srv/vpsup/<app>/serving             the slot (blue, green) nginx sends the
//!                                      app's site services' requests to; none:
//!                                      they run in the app's own project
//! /etc/nginx/sites-enabled/vpsup-<app>.<domain>.conf   the app's sites
//! ```
//!
//! An app's compose project is `vpsup-<app>`, so a stack someone started by
//! hand under the app's bare name is never an orphan of ours. App names hold
//! no `.`, so `vpsup-<app>.*.conf` is this app's sites and no other app's.
//! (an earlier vpsup used the project `<app>` and `vpsup-<app>--<domain>.conf`;
//! both are taken over by the next deploy, see `retire_script` and
//! `SITES_FN`.)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::switch::Slot;
use crate::transport::script::quote;

const APPS_DIR: &str = crate::layout::APPS_DIR;
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
    /// The project's `.env`, read first (compose skips it once `--env-file`
    /// is given, so it is passed explicitly).
    #[serde(default)]
    pub dot_env: bool,
    /// The compose project; `None` in a release an earlier vpsup made, which
    /// ran under the app's bare name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The app's named volumes keep the names an earlier vpsup gave them
    /// (`<app>_<volume>`): carried from release to release, also through
    /// one without volumes.
    #[serde(default)]
    pub volumes_pinned: bool,
    /// Zero-downtime deploys (`deploy::switch`): the services that run in
    /// a blue/green slot, and what each slot's gate checks and drain
    /// watches. `None`: every service runs in the app's project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<SlotsMeta>,
    /// Each service's fingerprint (`deploy::strategy`): the next deploy
    /// recreates in place only the services whose fingerprint changed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fingerprints: BTreeMap<String, String>,
    /// `(service, container port, loopback port)` of what nginx reaches in
    /// the app's project (a failed health path names its service).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<(String, u16, u16)>,
}

/// The blue/green part of a release.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SlotsMeta {
    pub services: Vec<String>,
    /// `(project, volume)`: the app's named volumes the slot's services
    /// mount, made before the slot starts if the app's project has not yet.
    #[serde(default)]
    pub volumes: Vec<(String, String)>,
    pub blue: SlotMeta,
    pub green: SlotMeta,
}

/// One slot of a release.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SlotMeta {
    /// `(health path, loopback port)` per site whose service runs in the slot.
    pub health: Vec<(String, u16)>,
    /// Each site's loopback ports in the slot: what drains once nginx
    /// switched away from it.
    pub sites: Vec<(String, Vec<u16>)>,
    /// `(service, container port, loopback port)` in the slot.
    #[serde(default)]
    pub ports: Vec<(String, u16, u16)>,
}

/// `(service, container port, loopback port)` as a map for `start::parse_gate`.
pub fn port_map(ports: &[(String, u16, u16)]) -> BTreeMap<(String, u16), u16> {
    ports
        .iter()
        .map(|(service, container, host)| ((service.clone(), *container), *host))
        .collect()
}

pub fn port_list(ports: &BTreeMap<(String, u16), u16>) -> Vec<(String, u16, u16)> {
    ports
        .iter()
        .map(|((service, container), host)| (service.clone(), *container, *host))
        .collect()
}

impl ReleaseMeta {
    /// The compose project this release runs as.
    pub fn project<'a>(&'a self, app: &'a str) -> &'a str {
        self.project.as_deref().unwrap_or(app)
    }

    pub fn slot(&self, slot: Slot) -> Option<&SlotMeta> {
        self.slots.as_ref().map(|s| match slot {
            Slot::Blue => &s.blue,
            Slot::Green => &s.green,
        })
    }
}

/// The compose project of an app's releases.
pub fn project_name(app: &str) -> String {
    format!("vpsup-{app}")
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
    /// nginx's sites directory (another one only in tests).
    pub sites_dir: String,
}

impl AppPaths {
    pub fn new(app: &str) -> AppPaths {
        AppPaths {
            app: app.to_string(),
            dir: format!("{APPS_DIR}/{app}"),
            sites_dir: SITES_DIR.to_string(),
        }
    }

    pub fn release(&self, id: &str) -> String {
        format!("{}/releases/{id}", self.dir)
    }

    pub fn secrets(&self) -> String {
        format!("{}/shared/secrets.env", self.dir)
    }

    /// What the app's containers write through bind mounts (`deploy::volumes`).
    pub fn data_dir(&self) -> String {
        format!("{}/data", self.dir)
    }

    pub fn lock(&self) -> String {
        format!("{}/deploy.lock", self.dir)
    }

    /// Which slot serves (`deploy::switch`), written with each switch.
    pub fn serving_file(&self) -> String {
        format!("{}/serving", self.dir)
    }

    /// The name of the site file nginx reads for `domain`.
    pub fn site_file_name(&self, domain: &str) -> String {
        format!("vpsup-{}.{domain}.conf", self.app)
    }

    /// Shell: `vpsup_sites` lists this app's site files, one path a line
    /// (also those of an earlier vpsup, named `vpsup-<app>--<domain>.conf`,
    /// recognised by the app named on their second line, since that glob
    /// also matches an app `<app>--x`).
    pub(crate) fn sites_fn(&self) -> String {
        let app = quote(&self.app);
        format!(
            r#"vpsup_sites() {{
  for f in {sites}/vpsup-{app}.*.conf; do [ -e "$f" ] && echo "$f"; done
  for f in {sites}/vpsup-{app}--*.conf; do
    [ -e "$f" ] && [ "$(sed -n '2s/\. Written by .*//p' "$f")" = {owner} ] && echo "$f"
  done
  return 0
}}
"#,
            owner = quote(&format!("# {}", self.app)),
            sites = quote(&self.sites_dir),
        )
    }

    /// Shell: removes the app's containers that run under `other`, its
    /// other compose project name (an earlier vpsup used the bare app
    /// name), before its project starts: they would hold its ports. Only
    /// containers made from this app's releases: a stack someone started
    /// by hand under that name is left alone. Named volumes are kept.
    pub fn retire_script(&self, other: &str) -> String {
        format!(
            r#"docker ps -a --filter label=com.docker.compose.project={other} --format '{{{{.ID}}}} {{{{.Label "com.docker.compose.project.working_dir"}}}}' 2>/dev/null |
while read -r id dir; do
  case "$dir" in {releases}/*) docker rm -f "$id" >/dev/null ;; esac
done
"#,
            other = quote(other),
            releases = quote(&format!("{}/releases", self.dir)),
        )
    }

    /// Makes the release at `release` what nginx serves and what `current`
    /// points at: its site files replace the app's (put back as they were
    /// if `nginx -t` or `reload` fails, and the script fails), `reload`
    /// runs (printing `switched MS`: how long `nginx -t` and the reload
    /// took, `parse_switched`), `current` switches. Past that switch nothing fails the script:
    /// the releases in `prune` go and `record` is written to `deployed`
    /// (a failure there is said on stderr).
    pub fn activate_script(
        &self,
        id: &str,
        slot: Option<Slot>,
        reload: &str,
        prune: &[String],
        record: &str,
    ) -> String {
        let release = self.release(id);
        // The serving slot changes in the script that reloads nginx: a
        // dropped connection cannot leave one without the other.
        let serving = match slot {
            Some(slot) => format!(
                "{{ printf '%s\\n' {name} > {file}.new && mv -f {file}.new {file}; }} || echo 'could not record the serving slot {name} in {file}' >&2\n",
                name = slot.name(),
                file = quote(&self.serving_file())
            ),
            None => format!(
                "rm -f {file} || echo 'could not remove {file}' >&2\n",
                file = quote(&self.serving_file())
            ),
        };
        let mut script = format!(
            r#"set -e
trap '' HUP
{sites_fn}backup=$(mktemp -d)
ours=$(vpsup_sites)
for f in $ours; do cp -p "$f" "$backup/"; done
restore() {{
  for f in $(vpsup_sites); do rm -f "$f"; done
  for f in "$backup"/*; do [ -e "$f" ] && cp -p "$f" {sites}/; done
  rm -rf "$backup"
}}
for f in $ours; do rm -f "$f"; done
for f in {nginx}/*.conf; do
  [ -e "$f" ] && cp "$f" {sites}/vpsup-{app}."$(basename "$f")"
done
[ -e {map} ] && cp {map} {WEBSOCKET_MAP}
switch_start=$(date +%s%N)
if ! out=$(nginx -t 2>&1); then
  restore
  echo "nginx -t refused the new site configuration, the previous one is back in place: $out" >&2
  exit 1
fi
if ! ( {reload}
); then
  restore
  echo "reloading nginx failed (above); the previous site configuration is back in place" >&2
  exit 1
fi
echo "{SWITCHED} $(( ($(date +%s%N) - switch_start) / 1000000 ))"
# nginx serves the new release now: nothing after this fails the script
# (the caller would take the release back down), each failure is said.
set +e
rm -rf "$backup"
if ! {{ {switch}}}; then echo "could not point current at release {id}: nginx serves it, run vpsup deploy again" >&2; fi
{serving}"#,
            sites_fn = self.sites_fn(),
            nginx = quote(&format!("{release}/{}", nginx_dir(slot))),
            map = quote(&format!("{release}/{MAP_FILE}")),
            app = quote(&self.app),
            sites = quote(&self.sites_dir),
            switch = self.switch_script(id),
        );
        // A release a running container was made from stays: a service
        // left running across deploys (unchanged) may bind-mount its files.
        for old in prune {
            script.push_str(&format!(
                "if [ -n \"$(docker ps -aq --filter label=com.docker.compose.project.working_dir={dir} 2>/dev/null)\" ]; then :; else rm -rf -- {dir} || echo \"could not remove the old release {dir}\" >&2; fi\n",
                dir = quote(&self.release(old))
            ));
        }
        script.push_str(&format!(
            "printf '%s\\n' {} > {} || echo 'could not record the deploy' >&2\nexit 0\n",
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

/// Where a release keeps the site files nginx serves it with: per slot
/// (their ports differ) when its site services switch blue/green.
pub fn nginx_dir(slot: Option<Slot>) -> String {
    match slot {
        None => NGINX_DIR.to_string(),
        Some(slot) => format!("{NGINX_DIR}-{}", slot.name()),
    }
}

/// The line `activate_script` prints once nginx serves the new site files.
const SWITCHED: &str = "switched";

/// How long `activate_script`'s `nginx -t` and reload took, in ms.
pub fn parse_switched(stdout: &str) -> Option<u64> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(SWITCHED)?.trim().parse().ok())
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

/// Releases for tests here and elsewhere.
#[cfg(test)]
pub mod testing {
    use super::{ReleaseMeta, SlotsMeta};

    /// A release of `compose.yml` in project `vpsup-shop`, each service's
    /// fingerprint from `fingerprints`, the `switched` ones in blue/green
    /// slots.
    pub fn meta_with(fingerprints: &[(&str, &str)], switched: &[&str]) -> ReleaseMeta {
        ReleaseMeta {
            compose_files: vec!["compose.yml".into()],
            env_files: vec![],
            health: vec![],
            secrets: false,
            dot_env: false,
            project: Some("vpsup-shop".into()),
            volumes_pinned: false,
            slots: (!switched.is_empty()).then(|| SlotsMeta {
                services: switched.iter().map(|s| s.to_string()).collect(),
                volumes: vec![],
                blue: Default::default(),
                green: Default::default(),
            }),
            fingerprints: fingerprints
                .iter()
                .map(|(n, f)| (n.to_string(), f.to_string()))
                .collect(),
            ports: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::script::testing::{sh_ok, write_executable};
    use crate::transport::{ExecRequest, LocalTransport, Transport};

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

    /// Activation, run here with a stand-in `nginx -t`: the app's sites
    /// (and its sites named by an earlier vpsup) are replaced, another app
    /// whose name starts the same (`shop--eu`) keeps its own, and a failed
    /// reload puts everything back and fails (before, `current` switched).
    #[tokio::test]
    async fn activation_replaces_only_this_apps_sites_and_fails_on_a_failed_reload() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let paths = AppPaths {
            app: "shop".into(),
            dir: root.join("shop").display().to_string(),
            sites_dir: root.join("sites").display().to_string(),
        };
        let sites = root.join("sites");
        std::fs::create_dir_all(&sites).unwrap();
        let site = |app: &str, domain: &str| {
            format!("# Managed by vpsup (templates/nginx_site.conf.tera): {domain} for app\n# {app}. Written by `vpsup deploy`; checked with `nginx -t` before any reload.\n")
        };
        let before = [
            (
                "vpsup-shop--a.example.com.conf",
                site("shop", "a.example.com"),
            ),
            (
                "vpsup-shop--eu--b.example.com.conf",
                site("shop--eu", "b.example.com"),
            ),
            (
                "vpsup-shop--eu.c.example.com.conf",
                site("shop--eu", "c.example.com"),
            ),
        ];
        for (name, text) in &before {
            std::fs::write(sites.join(name), text).unwrap();
        }
        let release = root.join("shop/releases/r2");
        std::fs::create_dir_all(release.join(NGINX_DIR)).unwrap();
        std::fs::write(
            release.join(NGINX_DIR).join("a.example.com.conf"),
            site("shop", "a.example.com") + "# v2\n",
        )
        .unwrap();
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        write_executable(&bin.join("nginx"), "#!/bin/sh\nexit 0\n");
        let listing = || {
            let mut names: Vec<String> = std::fs::read_dir(&sites)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let t = LocalTransport::new("test", true);
        let activate_in = |slot: Option<Slot>, reload: &str| {
            let script = format!(
                "PATH={}:$PATH\n{}",
                bin.display(),
                paths.activate_script("r2", slot, reload, &[], "release=r2")
            );
            let t = &t;
            async move { t.exec(ExecRequest::new(script)).await.unwrap() }
        };
        let activate = |reload: &str| activate_in(None, reload);

        let mut expected: Vec<String> = before.iter().map(|(n, _)| n.to_string()).collect();
        expected.sort();
        // A reload command that exits (`[acme] reload` is the user's shell)
        // ends only itself: the site files are put back all the same (they
        // stayed the failed release's, and the next probe took them for
        // what nginx serves).
        for reload in [
            "echo 'reload: no such unit' >&2; false",
            "echo 'reload refused' >&2; exit 3",
        ] {
            let failed = activate(reload).await;
            assert_eq!(failed.exit_status, Some(1), "{reload}");
            assert!(
                failed.stderr_str().contains("reloading nginx failed"),
                "{}",
                failed.stderr_str()
            );
            assert_eq!(listing(), expected, "{reload}");
            assert!(!root.join("shop/current").exists());
        }
        let failed = activate("false").await;

        assert_eq!(parse_switched(&failed.stdout_str()), None);

        let done = activate("true").await;
        assert!(done.success(), "{}", done.stderr_str());
        assert!(
            parse_switched(&done.stdout_str()).is_some(),
            "{}",
            done.stdout_str()
        );
        assert_eq!(
            listing(),
            [
                "vpsup-shop--eu--b.example.com.conf",
                "vpsup-shop--eu.c.example.com.conf",
                "vpsup-shop.a.example.com.conf"
            ]
        );
        assert!(
            std::fs::read_to_string(sites.join("vpsup-shop.a.example.com.conf"))
                .unwrap()
                .ends_with("# v2\n")
        );
        assert!(root.join("shop/current").exists());
        assert!(!root.join("shop/serving").exists());

        // Blue/green: the slot's own site files, and the serving slot
        // recorded with the switch; a failed reload records nothing.
        let green = release.join(nginx_dir(Some(Slot::Green)));
        std::fs::create_dir_all(&green).unwrap();
        std::fs::write(
            green.join("a.example.com.conf"),
            site("shop", "a.example.com") + "# green\n",
        )
        .unwrap();
        assert!(!activate_in(Some(Slot::Green), "false").await.success());
        assert!(!root.join("shop/serving").exists());
        let done = activate_in(Some(Slot::Green), "true").await;
        assert!(done.success(), "{}", done.stderr_str());
        assert_eq!(
            std::fs::read_to_string(root.join("shop/serving")).unwrap(),
            "green\n"
        );
        assert!(
            std::fs::read_to_string(sites.join("vpsup-shop.a.example.com.conf"))
                .unwrap()
                .ends_with("# green\n")
        );
        // Back to the app's own project: no slot serves.
        assert!(activate("true").await.success());
        assert!(!root.join("shop/serving").exists());
    }

    /// Only containers made from the app's releases are retired: one a
    /// user started by hand under the same compose project stays.
    #[test]
    fn retiring_the_old_project_spares_hand_started_containers() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker");
        let removed = dir.path().join("removed");
        write_executable(
            &docker,
            &format!(
                "#!/bin/sh\ncase \"$1\" in\n  ps) printf 'aaa /srv/vpsup/shop/releases/r1\\nbbb /home/ana/shop\\nccc /srv/vpsup/shop--eu/releases/r1\\n' ;;\n  rm) echo \"$3\" >> {} ;;\nesac\n",
                removed.display()
            ),
        );
        let script = format!(
            "PATH={}:$PATH\n{}",
            dir.path().display(),
            AppPaths::new("shop").retire_script("shop")
        );
        sh_ok(&script);
        assert_eq!(std::fs::read_to_string(&removed).unwrap(), "aaa\n");
    }

    #[tokio::test]
    async fn switching_current_replaces_the_link_in_one_rename() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AppPaths {
            app: "doctor".into(),
            dir: dir.path().display().to_string(),
            sites_dir: dir.path().join("sites").display().to_string(),
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
