//! What a deploy changes on one host, as a module plans: facts in, plan out.
//! From the release (the same for every host) and what the host's probe
//! found: the release's files as this host gets them, what travels, the
//! secrets to generate, the certificates to order, whether the site files
//! and the containers are as they should be. Nothing here touches a host.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::error::StepError;
use super::local_release::{self, Release};
use super::nginx::{self, NginxSites};
use super::ports::Target;
use super::probe::Probed;
use super::remote::{self, AppPaths, Container, ReleaseMeta, SlotMeta, SlotsMeta};
use super::strategy::ServiceFacts;
use super::switch::{self, InPlace, Slot};
use super::upload::{self, ReleaseFile};
use super::{host_releases, volumes};
use crate::acme::certinfo::CertInfo;
use crate::acme::host_settings::HostFile;
use crate::acme::policy::{self, Decision};
use crate::acme::store::{self, cert_name};
use crate::backup::timers;
use crate::config::{AppConfig, SiteConfig};
use crate::engine::render::Renderer;
use crate::watch::host_settings as watch_settings;

/// What the project deploys, the same on every host.
pub struct Wanted<'a> {
    pub app: &'a AppConfig,
    pub sites: &'a [SiteConfig],
    pub release: &'a Release,
    pub renderer: &'a Renderer,
    /// The host's certificate store (its paths are in the site files).
    pub store_dir: &'a str,
    /// The ACME webroot kept on :80 for renewals.
    pub webroot: &'a str,
    /// `[backup]`: the host's copy of its settings and its timers.
    pub backup: Option<&'a BackupWanted>,
    /// The host's copy of the app's watch settings (`crate::watch`).
    pub watch: &'a [HostFile],
}

/// What a host needs to back up the app by itself (`[backup]`).
#[derive(Debug, Clone)]
pub struct BackupWanted {
    pub settings: Vec<HostFile>,
    pub units: Vec<timers::UnitFile>,
}

/// What the host's backup setup lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupWork {
    Nothing,
    /// Settings files or timers differ from `BackupWanted`.
    Install {
        settings: bool,
        timers: bool,
    },
    /// `[backup]` is gone but the app's timers still run.
    StopTimers,
}

/// The compose file naming the app's volumes as an earlier vpsup made them.
const VOLUME_PINS: &str = ".vpsup/volumes.json";

/// One host's deploy, planned.
pub struct DeployPlan<'a> {
    /// The release as this host gets it: the project's files, how it runs
    /// (`release.json`), the volume pins, the nginx files; sorted by path.
    pub files: Vec<ReleaseFile>,
    /// How it runs (also in `files`).
    pub meta: ReleaseMeta,
    /// Secrets `[app.secrets] generate` lists that the host lacks.
    pub missing_secrets: Vec<String>,
    /// Sites whose certificate is missing or due.
    pub certificates_due: Vec<String>,
    /// The app's installed site files are exactly the rendered ones.
    pub sites_current: bool,
    /// Every container of the app runs (and is healthy, if it has a check).
    pub services_up: bool,
    pub backup: BackupWork,
    /// The host's watch settings differ from `Wanted::watch`.
    pub watch_settings: bool,
    /// Copies of channel secrets the settings no longer name, to remove.
    pub watch_stale: Vec<String>,
    probed: &'a Probed,
    data: &'a [String],
}

impl<'a> DeployPlan<'a> {
    pub fn new(
        wanted: &Wanted<'a>,
        paths: &AppPaths,
        probed: &'a Probed,
        now: OffsetDateTime,
    ) -> Result<DeployPlan<'a>, StepError> {
        let pinned = volumes_pinned(probed);
        let meta = release_meta(wanted, pinned);
        let files = release_files(wanted, &meta, pinned, probed.facts.nginx.as_deref())?;
        let missing_secrets = wanted
            .app
            .secrets
            .generate
            .iter()
            .filter(|n| !probed.secrets.contains(&n.0))
            .map(|n| n.0.clone())
            .collect();
        let certificates_due = wanted
            .sites
            .iter()
            .filter(|site| !cert_fresh(&probed.certificates, &site.domain.0, now))
            .map(|site| site.domain.0.clone())
            .collect();
        // The site files of the slot that serves (none serves yet: not current).
        let slot = (!wanted.release.blue_green.is_empty()).then_some(probed.serving());
        let sites_current = slot != Some(None)
            && wanted.sites.iter().all(|site| {
                let installed = probed
                    .sites
                    .iter()
                    .find(|(f, _)| *f == paths.site_file_name(&site.domain.0));
                let wanted = files
                    .iter()
                    .find(|f| f.path == nginx::site_file_in(slot.flatten(), &site.domain.0));
                matches!((installed, wanted), (Some((_, h)), Some(f)) if *h == f.sha256())
            })
            && probed.sites.len() == wanted.sites.len();
        let services_up =
            !probed.containers.is_empty() && probed.containers.iter().all(Container::is_up);
        let backup = match wanted.backup {
            Some(want) => {
                // Settings written but no repository recorded: the last
                // deploy's `init` failed; this one tries again.
                let settings = !want
                    .settings
                    .iter()
                    .all(|f| probed.backup.holds(&f.path, &f.content))
                    || !probed.backup.repository_recorded;
                let timers = !probed.backup.timers_current(&paths.app, &want.units);
                if settings || timers {
                    BackupWork::Install { settings, timers }
                } else {
                    BackupWork::Nothing
                }
            }
            None if probed.backup.any_timer_on(&paths.app) => BackupWork::StopTimers,
            None => BackupWork::Nothing,
        };
        let keep: Vec<&str> = wanted.watch.iter().map(|f| f.path.as_str()).collect();
        let watch_stale = probed
            .watch
            .others_under(&watch_settings::files_dir(&paths.app), &keep);
        let watch_settings = !watch_stale.is_empty()
            || !wanted
                .watch
                .iter()
                .all(|f| probed.watch.holds(&f.path, &f.content));
        Ok(DeployPlan {
            files,
            meta,
            missing_secrets,
            certificates_due,
            sites_current,
            services_up,
            backup,
            watch_settings,
            watch_stale,
            probed,
            data: &wanted.release.data,
        })
    }

    /// What travels: the files that differ from the current release's.
    pub fn upload(&self) -> upload::Plan<'_> {
        upload::plan(&self.files, &self.probed.current, self.data)
    }

    /// What the deploy would change, one line each; empty: nothing.
    pub fn pending(&self) -> Vec<String> {
        let mut pending = Vec::new();
        let upload = self.upload();
        if !upload.is_noop() {
            let mut names: Vec<&str> = upload.upload.iter().map(|f| f.path.as_str()).collect();
            names.extend(upload.removed.iter().map(|f| f.as_str()));
            pending.push(format!(
                "new release: {} file(s) to upload, {} gone ({})",
                upload.upload.len(),
                upload.removed.len(),
                names.join(", ")
            ));
        }
        // Said beforehand: what the new release restarts in place.
        if !upload.is_noop() && self.probed.current.release.is_some() {
            pending.extend(InPlace::split(&self.meta, self.probed.meta.as_ref()).notes());
        }
        if !self.missing_secrets.is_empty() {
            pending.push(format!(
                "secrets to generate: {}",
                self.missing_secrets.join(", ")
            ));
        }
        for domain in &self.certificates_due {
            pending.push(format!("certificate to issue or renew: {domain}"));
        }
        if !self.sites_current {
            pending.push("nginx site files to install".to_string());
        }
        if !self.services_up {
            pending
                .push("containers to start (some are missing, stopped or unhealthy)".to_string());
        }
        match self.backup {
            BackupWork::Nothing => {}
            BackupWork::Install { settings, timers } => {
                let mut what = Vec::new();
                if settings {
                    what.push("settings");
                }
                if timers {
                    what.push("timers");
                }
                pending.push(format!("backup {} to install", what.join(" and ")));
            }
            BackupWork::StopTimers => {
                pending.push("backup timers to stop ([backup] is gone)".to_string())
            }
        }
        if self.watch_settings {
            pending.push("watch settings to install (the host's checks and alerts)".to_string());
        }
        pending
    }

    /// Whether the release needs work (files, secrets, certificates, site
    /// files, containers); `false` when only the backup setup does.
    pub fn release_work(&self) -> bool {
        !self.upload().is_noop()
            || !self.missing_secrets.is_empty()
            || !self.certificates_due.is_empty()
            || !self.sites_current
            || !self.services_up
    }

    /// The release to start: the current one when no file changed (its
    /// containers or site files are what is missing), else a new one made
    /// `now`.
    pub fn release_id(&self, now: OffsetDateTime) -> String {
        match &self.probed.current.release {
            Some(current) if self.upload().is_noop() => current.clone(),
            _ => host_releases::release_id(now, &local_release::content_hash(&self.files)),
        }
    }

    /// Shell (content inside: send it piped) that makes release `id` on the
    /// host: the app's data moved out of older releases, the release
    /// directory copied from the current one with the changed files written
    /// (unless `id` is the current one), its data directories seeded; and
    /// how many files it uploads. Empty when there is nothing to do.
    pub fn release_script(&self, paths: &AppPaths, id: &str) -> (String, usize) {
        let probed = self.probed;
        let mut script = String::new();
        if let Some(current) = &probed.current.release {
            let older: Vec<(String, String)> = probed
                .releases
                .iter()
                .filter(|r| *r != current && host_releases::is_release_id(r))
                .map(|r| (r.clone(), paths.release(r)))
                .collect();
            script.push_str(&volumes::migrate_script(
                &paths.data_dir(),
                &paths.release(current),
                &older,
                self.data,
            ));
        }
        let mut uploaded = 0;
        if probed.current.release.as_deref() != Some(id) {
            let upload = self.upload();
            script.push_str(&upload::release_script(&paths.dir, id, &upload));
            uploaded = upload.upload.len();
        }
        script.push_str(&volumes::seed_script(
            &paths.data_dir(),
            &paths.release(id),
            self.data,
        ));
        (script, uploaded)
    }
}

/// Whether the app's named volumes keep the names of its first deploys under
/// the compose project `<app>` (an earlier vpsup): then once, then always.
fn volumes_pinned(probed: &Probed) -> bool {
    probed
        .meta
        .as_ref()
        .is_some_and(|m| m.project.is_none() || m.volumes_pinned)
}

fn release_meta(wanted: &Wanted<'_>, pinned: bool) -> ReleaseMeta {
    let release = wanted.release;
    let mut compose_files = release.compose_files.clone();
    if pinned && !release.named_volumes.is_empty() {
        compose_files.push(VOLUME_PINS.to_string());
    }
    let slot_meta = |slot: Slot| {
        let ports = &release.slot_ports[&slot];
        SlotMeta {
            health: health(wanted.sites, ports),
            ports: remote::port_list(ports),
            sites: wanted
                .sites
                .iter()
                .map(|site| {
                    let mut used: Vec<u16> = site_targets(site)
                        .filter_map(|t| ports.get(&t).copied())
                        .collect();
                    used.sort();
                    used.dedup();
                    (site.domain.0.clone(), used)
                })
                .collect(),
        }
    };
    ReleaseMeta {
        compose_files,
        env_files: release.env_files.clone(),
        health: health(wanted.sites, &release.ports),
        secrets: !wanted.app.secrets.generate.is_empty(),
        dot_env: release.dot_env,
        project: Some(remote::project_name(wanted.app.name.as_str())),
        volumes_pinned: pinned,
        ports: remote::port_list(&release.ports),
        slots: (!release.blue_green.is_empty()).then(|| SlotsMeta {
            services: release.blue_green.clone(),
            volumes: slot_volumes(release, pinned, wanted.app.name.as_str()),
            blue: slot_meta(Slot::Blue),
            green: slot_meta(Slot::Green),
        }),
        fingerprints: release
            .services
            .iter()
            .map(|f| (f.name.clone(), f.fingerprint.clone()))
            .collect(),
    }
}

/// `(health path, loopback port)` of each site whose service has a port in `ports`.
fn health(sites: &[SiteConfig], ports: &BTreeMap<Target, u16>) -> Vec<(String, u16)> {
    sites
        .iter()
        .filter_map(|s| {
            ports
                .get(&(s.service.0.clone(), s.port.0))
                .map(|p| (s.health.0.clone(), *p))
        })
        .collect()
}

/// The (service, port) pairs a site's nginx locations reach.
fn site_targets(site: &SiteConfig) -> impl Iterator<Item = Target> + '_ {
    std::iter::once((site.service.0.clone(), site.port.0))
        .chain(site.routes.iter().map(|r| (r.service.0.clone(), r.port.0)))
}

/// `(project, volume)` of the app's named volumes the slot's services mount
/// (`pinned`: an earlier vpsup named them `<app>_<volume>`).
fn slot_volumes(release: &Release, pinned: bool, app: &str) -> Vec<(String, String)> {
    let project = if pinned {
        app.to_string()
    } else {
        remote::project_name(app)
    };
    let mut volumes: Vec<String> = release
        .services
        .iter()
        .filter(|f| release.blue_green.contains(&f.name))
        .flat_map(|f| f.volumes.iter())
        .filter(|v| release.named_volumes.contains(v))
        .cloned()
        .collect();
    volumes.sort();
    volumes.dedup();
    volumes.into_iter().map(|v| (project.clone(), v)).collect()
}

/// The compose override of a slot: its ports, and the app project's
/// networks and volumes that both its services and the app's own use (those
/// exist: the app's services run). What only the slot's services use, the
/// slot makes for itself.
fn slot_override_file(wanted: &Wanted<'_>, pinned: bool, slot: Slot) -> ReleaseFile {
    let release = wanted.release;
    let app = wanted.app.name.as_str();
    let (switched, in_place): (Vec<&ServiceFacts>, Vec<&ServiceFacts>) = release
        .services
        .iter()
        .partition(|f| release.blue_green.contains(&f.name));
    let shared = |pick: fn(&ServiceFacts) -> &Vec<String>, scoped: &[String]| {
        let mut names: Vec<String> = switched
            .iter()
            .flat_map(|f| pick(f).iter())
            .filter(|n| scoped.contains(n))
            .filter(|n| in_place.iter().any(|f| pick(f).contains(n)))
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    };
    let mut networks_scoped = release.project_networks.clone();
    networks_scoped.push("default".to_string());
    let mut networks = shared(|f| &f.networks, &networks_scoped);
    // `slot_override` maps `default` always; it is here when shared.
    let default_shared = networks.iter().any(|n| n == "default");
    networks.retain(|n| n != "default");
    // Every app volume they mount (read-only: a writer is refused) is the
    // app's, made first if need be (`SlotsMeta::volumes`), never the slot's.
    let volumes: Vec<String> = slot_volumes(release, pinned, app)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let project = remote::project_name(app);
    let prefix = if pinned {
        app.to_string()
    } else {
        project.clone()
    };
    let doc = switch::slot_override(
        &project,
        default_shared,
        &networks,
        &volumes,
        &prefix,
        &release.slot_ports[&slot],
    );
    let mut content = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    content.push(b'\n');
    ReleaseFile {
        path: slot.override_file(),
        content,
        mode: 0o644,
    }
}

/// The project's files plus what vpsup adds for this host: how the release
/// runs, and its nginx site files (rendered for the host's nginx).
fn release_files(
    wanted: &Wanted<'_>,
    meta: &ReleaseMeta,
    pinned: bool,
    nginx_version: Option<&str>,
) -> Result<Vec<ReleaseFile>, StepError> {
    let release = wanted.release;
    let mut files = release.files.clone();
    let mut meta = serde_json::to_vec_pretty(meta).unwrap_or_default();
    meta.push(b'\n');
    files.push(ReleaseFile {
        path: remote::META_FILE.to_string(),
        content: meta,
        mode: 0o644,
    });
    if pinned && !release.named_volumes.is_empty() {
        let pins = volumes::pin_override(&release.named_volumes, wanted.app.name.as_str());
        let mut content = serde_json::to_vec_pretty(&pins).unwrap_or_default();
        content.push(b'\n');
        files.push(ReleaseFile {
            path: VOLUME_PINS.to_string(),
            content,
            mode: 0o644,
        });
    }
    // Site files per slot when services switch blue/green (their ports
    // differ), else one set.
    let slots: Vec<Option<Slot>> = if release.blue_green.is_empty() {
        vec![None]
    } else {
        Slot::both().into_iter().map(Some).collect()
    };
    for slot in slots {
        let ports = release.ports_in(slot);
        let sites = NginxSites {
            app: wanted.app.name.as_str(),
            sites: wanted.sites,
            ports: &ports,
            store_dir: wanted.store_dir,
            webroot: wanted.webroot,
            http2_on: nginx::http2_on(nginx_version),
            slot,
        };
        for file in sites.render(wanted.renderer).map_err(StepError::Render)? {
            if !files.iter().any(|f| f.path == file.path) {
                files.push(file);
            }
        }
        if let Some(slot) = slot {
            files.push(slot_override_file(wanted, pinned, slot));
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The store holds a certificate for `domain` that is not due at `now`.
fn cert_fresh(certificates: &[store::StoredCert], domain: &str, now: OffsetDateTime) -> bool {
    let name = cert_name(&[domain.to_string()]);
    certificates.iter().any(|c| {
        c.name == name
            && CertInfo::from_pem_chain(&c.chain_pem).is_ok_and(|info| {
                matches!(
                    policy::decide(info.not_before, info.not_after, now, None),
                    Decision::Keep { .. }
                )
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::assets::Assets;

    fn config() -> Config {
        toml::from_str(
            "[app]\nname = \"doctor\"\nsecrets = { generate = [\"DB_PASSWORD\"] }\n\n[[sites]]\ndomain = \"doctor.example.com\"\nservice = \"web\"\nport = 80\n",
        )
        .unwrap()
    }

    fn release() -> Release {
        let file = |path: &str, content: &str| ReleaseFile {
            path: path.into(),
            content: content.as_bytes().to_vec(),
            mode: 0o644,
        };
        Release {
            files: vec![file("compose.yml", "services: {}\n"), file("app.txt", "v1")],
            compose_files: vec!["compose.yml".into()],
            env_files: vec![],
            ports: [(("web".to_string(), 80), 21000)].into(),
            rewritten: vec![],
            content_hash: "h".into(),
            data: vec![],
            seeded: vec![],
            named_volumes: vec![],
            project_networks: vec![],
            dot_env: false,
            blue_green: vec![],
            slot_ports: BTreeMap::new(),
            services: vec![],
        }
    }

    fn renderer() -> Renderer {
        Renderer::new(&Assets::load(None).unwrap().templates).unwrap()
    }

    /// What deploy wants on a host for `config`'s app, `release`.
    fn wanted<'a>(config: &'a Config, release: &'a Release, renderer: &'a Renderer) -> Wanted<'a> {
        Wanted {
            app: config.app.as_ref().unwrap(),
            sites: &config.sites,
            release,
            renderer,
            store_dir: "/etc/vpsup/acme",
            webroot: "/var/lib/vpsup/acme",
            backup: None,
            watch: &[],
        }
    }

    fn probed(facts: &str) -> Probed {
        Probed {
            facts: crate::facts::parse(facts).unwrap(),
            current: Default::default(),
            meta: None,
            releases: vec![],
            secrets: vec![],
            sites: vec![],
            containers: vec![],
            serving_file: None,
            nginx_ports: vec![],
            certificates: vec![],
            backup: Default::default(),
            watch: Default::default(),
        }
    }

    const FACTS: &str = "cpus=1\nmem_kb=1\nswap_kb=0\nroot_free_kb=1\nsudo=root\nnginx=nginx version: nginx/1.26.3\n";

    /// A fresh host needs everything; once the host holds what the plan
    /// made (files, site file, secrets, running containers), only the
    /// certificate (none in the store) is left.
    #[test]
    fn a_fresh_host_needs_everything_and_a_deployed_one_nothing_more() {
        let config = config();
        let release = release();
        let renderer = renderer();
        let wanted = wanted(&config, &release, &renderer);
        let paths = AppPaths::new("doctor");
        let now = OffsetDateTime::now_utc();
        let fresh = probed(FACTS);
        let plan = DeployPlan::new(&wanted, &paths, &fresh, now).unwrap();
        assert_eq!(
            plan.files
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            [
                ".vpsup/nginx/doctor.example.com.conf",
                ".vpsup/release.json",
                ".vpsup/websocket-map.conf",
                "app.txt",
                "compose.yml"
            ]
        );
        assert_eq!(plan.meta.health, [("/".to_string(), 21000)]);
        assert_eq!(plan.meta.project.as_deref(), Some("vpsup-doctor"));
        let site = String::from_utf8(plan.files[0].content.clone()).unwrap();
        assert!(site.contains("http2 on;"), "{site}");
        assert_eq!(
            plan.pending(),
            [
                "new release: 5 file(s) to upload, 0 gone (.vpsup/nginx/doctor.example.com.conf, .vpsup/release.json, .vpsup/websocket-map.conf, app.txt, compose.yml)",
                "secrets to generate: DB_PASSWORD",
                "certificate to issue or renew: doctor.example.com",
                "nginx site files to install",
                "containers to start (some are missing, stopped or unhealthy)",
            ]
        );
        let id = plan.release_id(now);
        assert!(host_releases::is_release_id(&id), "{id}");
        let (script, uploaded) = plan.release_script(&paths, &id);
        assert_eq!(uploaded, 5);
        assert!(script.contains(&format!("/srv/vpsup/doctor/releases/{id}")));

        let mut deployed = probed(FACTS);
        deployed.current = upload::Current {
            release: Some("20261122T101500Z-ab12cd34".into()),
            files: plan
                .files
                .iter()
                .map(|f| (f.path.clone(), f.sha256()))
                .collect(),
        };
        deployed.secrets = vec!["DB_PASSWORD".into()];
        deployed.sites = vec![(
            "vpsup-doctor.doctor.example.com.conf".into(),
            plan.files[0].sha256(),
        )];
        deployed.containers = remote::parse_containers("web\trunning\tUp 2 minutes\n");
        let again = DeployPlan::new(&wanted, &paths, &deployed, now).unwrap();
        assert_eq!(
            again.pending(),
            ["certificate to issue or renew: doctor.example.com"]
        );
        // Nothing to upload: the current release starts again.
        assert_eq!(again.release_id(now), "20261122T101500Z-ab12cd34");
        let (script, uploaded) = again.release_script(&paths, "20261122T101500Z-ab12cd34");
        assert_eq!((script.as_str(), uploaded), ("", 0));
    }

    /// Blue/green: site files and a compose override per slot, the slots
    /// in how it runs; the site files current are those of the slot that
    /// serves; a changed database is said beforehand.
    #[test]
    fn a_switching_release_carries_both_slots() {
        use crate::deploy::strategy::ServiceFacts;
        let config = config();
        let mut release = release();
        let facts = |name: &str, volumes: &[&str], fingerprint: &str| ServiceFacts {
            name: name.into(),
            writes: volumes.iter().map(|v| format!("volume {v}")).collect(),
            container_name: false,
            ports: false,
            networks: vec!["default".into()],
            volumes: volumes.iter().map(|v| v.to_string()).collect(),
            fingerprint: fingerprint.into(),
        };
        release.ports = BTreeMap::new();
        release.blue_green = vec!["web".into()];
        release.named_volumes = vec!["pgdata".into()];
        release.services = vec![facts("db", &["pgdata"], "d2"), facts("web", &[], "w1")];
        release.slot_ports = BTreeMap::from([
            (
                Slot::Blue,
                BTreeMap::from([(("web".to_string(), 80), 23001)]),
            ),
            (
                Slot::Green,
                BTreeMap::from([(("web".to_string(), 80), 24001)]),
            ),
        ]);
        let renderer = renderer();
        let wanted = wanted(&config, &release, &renderer);
        let paths = AppPaths::new("doctor");
        let now = OffsetDateTime::now_utc();
        let fresh = probed(FACTS);
        let plan = DeployPlan::new(&wanted, &paths, &fresh, now).unwrap();
        let names: Vec<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            names,
            [
                ".vpsup/nginx-blue/doctor.example.com.conf",
                ".vpsup/nginx-green/doctor.example.com.conf",
                ".vpsup/release.json",
                ".vpsup/slot-blue.json",
                ".vpsup/slot-green.json",
                ".vpsup/websocket-map.conf",
                "app.txt",
                "compose.yml"
            ]
        );
        let file = |path: &str| plan.files.iter().find(|f| f.path == path).unwrap();
        let green_site = String::from_utf8(
            file(".vpsup/nginx-green/doctor.example.com.conf")
                .content
                .clone(),
        )
        .unwrap();
        assert!(green_site.contains("127.0.0.1:24001"), "{green_site}");
        // web reaches db on the app's default network; pgdata is db's alone.
        let green: serde_json::Value =
            serde_json::from_slice(&file(".vpsup/slot-green.json").content).unwrap();
        assert_eq!(
            green,
            serde_json::json!({
                "services": {"web": {"ports": ["127.0.0.1:24001:80"]}},
                "networks": {"default": {"name": "vpsup-doctor_default", "external": true}}
            })
        );
        let slots = plan.meta.slots.as_ref().unwrap();
        assert_eq!(slots.services, ["web"]);
        assert_eq!(slots.blue.health, [("/".to_string(), 23001)]);
        assert_eq!(
            slots.green.sites,
            [("doctor.example.com".to_string(), vec![24001])]
        );
        assert!(plan.meta.health.is_empty());
        assert_eq!(plan.meta.fingerprints["db"], "d2");

        // Deployed, blue serving: its site file is what nginx must have.
        let mut deployed = probed(FACTS);
        deployed.current = upload::Current {
            release: Some("20261122T101500Z-ab12cd34".into()),
            files: plan
                .files
                .iter()
                .map(|f| (f.path.clone(), f.sha256()))
                .collect(),
        };
        deployed.secrets = vec!["DB_PASSWORD".into()];
        deployed.containers = remote::parse_containers("web\trunning\tUp 2 minutes\n");
        deployed.sites = vec![(
            "vpsup-doctor.doctor.example.com.conf".into(),
            file(".vpsup/nginx-blue/doctor.example.com.conf").sha256(),
        )];
        // nginx proxies to blue's port: blue serves, whatever the file says.
        deployed.meta = Some(plan.meta.clone());
        deployed.nginx_ports = vec![23001];
        deployed.serving_file = Some(Slot::Green);
        assert_eq!(deployed.serving(), Some(Slot::Blue));
        let current = |d: &Probed| {
            DeployPlan::new(&wanted, &paths, d, now)
                .unwrap()
                .sites_current
        };
        assert!(current(&deployed));
        // Neither slot's ports in nginx's files: the file's word.
        deployed.nginx_ports = vec![];
        assert_eq!(deployed.serving(), Some(Slot::Green));
        assert!(!current(&deployed));
        assert_eq!(deployed.serving_unknown(), None, "nothing in nginx's files");
        deployed.serving_file = None;
        assert_eq!(deployed.serving(), None);
        assert!(!current(&deployed));
        // Ports in nginx's files that are neither slot's, and no file: unknown
        // (deploy and rollback refuse); with the file, its word.
        deployed.nginx_ports = vec![9];
        assert_eq!(deployed.serving_unknown(), Some(&[9][..]));
        deployed.serving_file = Some(Slot::Green);
        assert_eq!(deployed.serving_unknown(), None);
        assert_eq!(deployed.serving(), Some(Slot::Green));
        deployed.nginx_ports = vec![23001];
        deployed.serving_file = None;
        assert_eq!(deployed.serving_unknown(), None, "blue's port: blue");
        deployed.nginx_ports = vec![];

        // The running release ran another db: a new release says so.
        let mut old = plan.meta.clone();
        old.fingerprints.insert("db".into(), "d1".into());
        deployed.meta = Some(old);
        deployed.current.files.clear();
        let changed = DeployPlan::new(&wanted, &paths, &deployed, now).unwrap();
        assert!(
            changed
                .pending()
                .contains(&"db will restart: its clients see a short interruption".to_string()),
            "{:?}",
            changed.pending()
        );
    }

    /// A release an earlier vpsup made (no project recorded) pins the named
    /// volumes' old names, and the next release keeps pinning them.
    #[test]
    fn volumes_an_earlier_vpsup_named_stay_pinned() {
        let config = config();
        let mut release = release();
        release.named_volumes = vec!["pgdata".into()];
        let renderer = renderer();
        let wanted = wanted(&config, &release, &renderer);
        let mut old = probed(FACTS);
        // A release an earlier vpsup made: no project of its own.
        old.meta = Some(ReleaseMeta {
            project: None,
            ..remote::testing::meta_with(&[], &[])
        });
        let now = OffsetDateTime::now_utc();
        let plan = DeployPlan::new(&wanted, &AppPaths::new("doctor"), &old, now).unwrap();
        assert!(plan.meta.volumes_pinned);
        assert_eq!(plan.meta.compose_files, ["compose.yml", VOLUME_PINS]);
        assert!(plan.files.iter().any(|f| f.path == VOLUME_PINS));
        let fresh = probed(FACTS);
        let plan = DeployPlan::new(&wanted, &AppPaths::new("doctor"), &fresh, now).unwrap();
        assert!(!plan.meta.volumes_pinned);
        assert!(!plan.files.iter().any(|f| f.path == VOLUME_PINS));
    }

    /// `[backup]`: the host's settings and timers are work until the host
    /// holds them; once `[backup]` is gone, running timers are.
    #[test]
    fn backup_setup_is_work_until_the_host_holds_it() {
        let config = config();
        let release = release();
        let renderer = renderer();
        let want = BackupWanted {
            settings: vec![HostFile {
                path: "/etc/vpsup/backup/doctor.toml".into(),
                content: b"app = \"doctor\"\n".to_vec(),
                mode: 0o600,
            }],
            units: vec![timers::UnitFile {
                path: "/etc/systemd/system/vpsup-backup@doctor.timer".into(),
                content: "[Timer]\n".into(),
            }],
        };
        let mut wanted = Wanted {
            backup: Some(&want),
            ..wanted(&config, &release, &renderer)
        };
        let paths = AppPaths::new("doctor");
        let now = OffsetDateTime::now_utc();
        let work = |probed: &Probed, wanted: &Wanted| {
            DeployPlan::new(wanted, &paths, probed, now).unwrap().backup
        };
        let mut host = probed(FACTS);
        assert_eq!(
            work(&host, &wanted),
            BackupWork::Install {
                settings: true,
                timers: true
            }
        );
        let hash = |b: &[u8]| crate::transport::script::sha256_hex(b);
        host.backup = timers::Probed::parse(&format!(
            "{}  /etc/vpsup/backup/doctor.toml\n{}  /etc/systemd/system/vpsup-backup@doctor.timer\nenabled vpsup-backup@doctor.timer\nrepository-recorded\n",
            hash(&want.settings[0].content),
            hash(want.units[0].content.as_bytes()),
        ));
        // The drill's timer is off.
        assert_eq!(
            work(&host, &wanted),
            BackupWork::Install {
                settings: false,
                timers: true
            }
        );
        host.backup = timers::Probed::parse(&format!(
            "{}  /etc/vpsup/backup/doctor.toml\n{}  /etc/systemd/system/vpsup-backup@doctor.timer\nenabled vpsup-backup@doctor.timer\nenabled vpsup-backup-verify@doctor.timer\nrepository-recorded\n",
            hash(&want.settings[0].content),
            hash(want.units[0].content.as_bytes()),
        ));
        let plan = DeployPlan::new(&wanted, &paths, &host, now).unwrap();
        assert_eq!(plan.backup, BackupWork::Nothing);
        assert!(!plan.pending().iter().any(|p| p.contains("backup")));
        wanted.backup = None;
        let plan = DeployPlan::new(&wanted, &paths, &host, now).unwrap();
        assert_eq!(plan.backup, BackupWork::StopTimers);
        assert!(plan
            .pending()
            .contains(&"backup timers to stop ([backup] is gone)".to_string()));
    }
}
