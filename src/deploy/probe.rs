//! The one probe a deploy or a rollback decides on, in one exec (as root):
//! the host's facts, the current release's files and how it runs, the
//! releases kept, the secrets' names, the installed site files' hashes, the
//! app's containers, the certificate store, the app's backup settings
//! and timers, and its watch settings. One part each, marked by a
//! fresh `Sections` per run; the parser fails on a part that did not come
//! back.

use super::error::StepError;
use super::remote::{self, AppPaths, Container, ReleaseMeta};
use super::switch::Slot;
use super::upload;
use crate::acme::store;
use crate::backup::host_settings as backup_settings;
use crate::backup::timers;
use crate::facts::{self, HostFacts};
use crate::hostlock::{HostLock, LockRequest, LockTiming};
use crate::transport::script::quote;
use crate::transport::sections::Sections;
use crate::transport::{ExecRequest, Transport};
use crate::watch::host_settings as watch_settings;

/// What the probe found.
#[derive(Debug)]
pub struct Probed {
    pub facts: HostFacts,
    pub current: upload::Current,
    /// How the current release runs; `None` without one, or when its
    /// `release.json` does not read.
    pub meta: Option<ReleaseMeta>,
    pub releases: Vec<String>,
    pub secrets: Vec<String>,
    /// `file name -> sha256` of the app's installed site files.
    pub sites: Vec<(String, String)>,
    /// The app's containers: its project's and the serving slot's.
    pub containers: Vec<Container>,
    /// The slot `/srv/vpsup/<app>/serving` names (`serving()` checks it
    /// against nginx's site files).
    pub serving_file: Option<Slot>,
    /// The loopback ports the app's installed site files proxy to.
    pub nginx_ports: Vec<u16>,
    pub certificates: Vec<store::StoredCert>,
    /// The app's backup settings and timers on the host.
    pub backup: timers::Probed,
    /// The hashes of the app's watch settings files on the host.
    pub watch: timers::Probed,
}

const FACTS: &str = "facts";
const RELEASE: &str = "release";
const META: &str = "meta";
const RELEASES: &str = "releases";
const SECRETS: &str = "secrets";
const SITES: &str = "sites";
const CONTAINERS: &str = "containers";
const SERVING: &str = "serving";
const NGINX_PORTS: &str = "nginx-ports";
const CERTIFICATES: &str = "certificates";
const BACKUP: &str = "backup";
const WATCH: &str = "watch";

/// The probe of app `paths` and the certificate store at `store_dir`.
pub fn script(sections: &Sections, paths: &AppPaths, store_dir: &str) -> String {
    let dir = quote(&paths.dir);
    // The facts probe ends with `exit 0`: in a subshell, it ends only itself.
    let facts = format!("( {} )", facts::PROBE_SCRIPT);
    let release = upload::probe_script(&paths.dir);
    let meta = format!("cat {dir}/current/{} 2>/dev/null", remote::META_FILE);
    let releases = format!("ls -1 {dir}/releases 2>/dev/null");
    let secrets = format!("cut -d= -f1 {} 2>/dev/null", quote(&paths.secrets()));
    let sites = format!(
        r#"{}for f in $(vpsup_sites); do echo "$(sha256sum < "$f" | cut -d' ' -f1) $(basename "$f")"; done"#,
        paths.sites_fn()
    );
    let serving = format!("cat {} 2>/dev/null", quote(&paths.serving_file()));
    let nginx_ports = format!(
        "{}for f in $(vpsup_sites); do grep -o 'http://127\\.0\\.0\\.1:[0-9]*' \"$f\"; done | sed 's/.*://' | sort -un",
        paths.sites_fn()
    );
    let slot_project = |slot: Slot| quote(&slot.project(&paths.app));
    let containers = format!(
        "command -v docker >/dev/null 2>&1 && case \"$(cat {serving} 2>/dev/null)\" in blue) slot={blue} ;; green) slot={green} ;; *) slot= ;; esac && for p in {app} $slot; do docker ps -a --filter label=com.docker.compose.project=$p --format '{{{{.Label \"com.docker.compose.service\"}}}}\t{{{{.State}}}}\t{{{{.Status}}}}' 2>/dev/null; done",
        serving = quote(&paths.serving_file()),
        app = quote(&remote::project_name(&paths.app)),
        blue = slot_project(Slot::Blue),
        green = slot_project(Slot::Green),
    );
    let certificates = store::listing_script(store_dir);
    let backup = format!(
        "{}\nfor f in {}/*; do if [ -f \"$f\" ]; then sha256sum \"$f\"; fi; done\n[ ! -s {} ] || echo {}",
        timers::probe_script(&paths.app, &[backup_settings::settings_path(&paths.app)]),
        quote(&backup_settings::files_dir(&paths.app)),
        quote(&backup_settings::repository_id_path(&paths.app)),
        timers::REPOSITORY_RECORDED,
    );
    let watch = format!(
        "for f in {} {}/*; do if [ -f \"$f\" ]; then sha256sum \"$f\"; fi; done",
        quote(&watch_settings::settings_path(&paths.app)),
        quote(&watch_settings::files_dir(&paths.app)),
    );
    let mut script = sections.script([
        (FACTS, facts.as_str()),
        (RELEASE, release.as_str()),
        (META, meta.as_str()),
        (RELEASES, releases.as_str()),
        (SECRETS, secrets.as_str()),
        (SITES, sites.as_str()),
        (CONTAINERS, containers.as_str()),
        (SERVING, serving.as_str()),
        (NGINX_PORTS, nginx_ports.as_str()),
        (CERTIFICATES, certificates.as_str()),
        (BACKUP, backup.as_str()),
        (WATCH, watch.as_str()),
    ]);
    script.push_str("exit 0\n");
    script
}

impl Probed {
    /// The slot nginx sends the app's site services' requests to: the one
    /// of the current release whose every site port the installed site
    /// files proxy to, whatever the `serving` file says (a stale file must
    /// never make a deploy take down what serves); that file when neither
    /// matches; `None` when the current release switches nothing.
    pub fn serving(&self) -> Option<Slot> {
        self.meta.as_ref()?.slots.as_ref()?;
        self.slot_nginx_sends_to().or(self.serving_file)
    }

    /// The ports nginx's site files for the app proxy to, when the current
    /// release switches blue/green but they are neither slot's and no
    /// serving slot is recorded (site files edited by hand, or left by
    /// something else): which instances serve is unknown, and a release
    /// started in either slot could replace them. `None`: known.
    pub fn serving_unknown(&self) -> Option<&[u16]> {
        self.meta.as_ref()?.slots.as_ref()?;
        let unknown = !self.nginx_ports.is_empty()
            && self.slot_nginx_sends_to().is_none()
            && self.serving_file.is_none();
        unknown.then_some(&self.nginx_ports[..])
    }

    fn slot_nginx_sends_to(&self) -> Option<Slot> {
        let meta = self.meta.as_ref()?;
        let serves = |slot: Slot| {
            let ports: Vec<u16> = meta
                .slot(slot)
                .map_or(&[][..], |m| &m.sites[..])
                .iter()
                .flat_map(|(_, ports)| ports.iter().copied())
                .collect();
            !ports.is_empty() && ports.iter().all(|p| self.nginx_ports.contains(p))
        };
        Slot::both().into_iter().find(|s| serves(*s))
    }
}

/// What `script` printed, run with the same `sections`.
pub fn parse(sections: &Sections, text: &str) -> Result<Probed, StepError> {
    let parts = sections.parse(text);
    let lines = |name| -> Result<Vec<String>, StepError> {
        Ok(parts.get(name)?.lines().map(str::to_string).collect())
    };
    Ok(Probed {
        facts: facts::parse(parts.get(FACTS)?).map_err(StepError::Facts)?,
        current: upload::parse_probe(parts.get(RELEASE)?),
        // No current release, or a `release.json` that does not read: the
        // caller says what that means for it.
        meta: serde_json::from_str(parts.get(META)?).ok(),
        releases: lines(RELEASES)?,
        secrets: lines(SECRETS)?,
        sites: parts
            .get(SITES)?
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(hash, file)| (file.to_string(), hash.to_string()))
            .collect(),
        containers: remote::parse_containers(parts.get(CONTAINERS)?),
        serving_file: Slot::parse(parts.get(SERVING)?),
        nginx_ports: parts
            .get(NGINX_PORTS)?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect(),
        certificates: store::parse_listing(parts.get(CERTIFICATES)?)
            .map_err(StepError::CertificateStore)?,
        backup: timers::Probed::parse(parts.get(BACKUP)?),
        watch: timers::Probed::parse(parts.get(WATCH)?),
    })
}

/// A first look, without the lock.
pub async fn probe(
    transport: &dyn Transport,
    paths: &AppPaths,
    store_dir: &str,
) -> Result<Probed, StepError> {
    let sections = Sections::random();
    let out = transport
        .run_ok(
            "probing the host",
            ExecRequest::piped(script(&sections, paths, store_dir)).become_root(true),
        )
        .await?;
    parse(&sections, &out.stdout_str())
}

/// Takes app's deploy lock (one deploy or rollback at a time), taking over
/// one whose run died and saying so, and probes the host in the same exec,
/// once the lock is ours.
pub async fn lock_and_probe(
    transport: &dyn Transport,
    paths: &AppPaths,
    store_dir: &str,
    owner: &str,
    host: &str,
) -> Result<(HostLock, Probed), StepError> {
    let sections = Sections::random();
    let (lock, text) = HostLock::acquire_then(
        transport,
        &LockRequest {
            path: &paths.lock(),
            what: &format!("app {}", paths.app),
            owner,
            take_over_after: None,
            local_pid: None,
            timing: LockTiming::STANDARD,
        },
        &script(&sections, paths, store_dir),
    )
    .await?;
    if let Some(dead) = &lock.taken_over {
        eprintln!("vpsup: {host}: took over the deploy lock of a run that died: {dead}");
    }
    let checked = parse(&sections, &text).and_then(|probed| match probed.serving_unknown() {
        Some(ports) => Err(StepError::ServingUnknown {
            app: paths.app.clone(),
            ports: ports.to_vec(),
            serving_file: paths.serving_file(),
        }),
        None => Ok(probed),
    });
    match checked {
        Ok(probed) => Ok((lock, probed)),
        Err(e) => {
            let _ = lock.release(transport).await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::script::testing::sh_ok;
    use crate::transport::LocalTransport;

    fn local_paths(dir: &std::path::Path) -> AppPaths {
        AppPaths {
            app: "shop".into(),
            dir: dir.display().to_string(),
            sites_dir: dir.join("sites").display().to_string(),
        }
    }

    /// The real probe, run here against a release whose files end without a
    /// newline: every part still reads back (a meta file glued to the next
    /// marker once made a failed deploy's rollback stop the whole app).
    #[tokio::test]
    async fn the_probe_reads_a_release_back() {
        let dir = tempfile::tempdir().unwrap();
        let paths = local_paths(dir.path());
        let release = dir.path().join("releases/r1");
        std::fs::create_dir_all(release.join(".vpsup")).unwrap();
        std::fs::create_dir_all(dir.path().join("releases/r0")).unwrap();
        std::fs::create_dir_all(dir.path().join("shared")).unwrap();
        std::fs::create_dir_all(dir.path().join("sites")).unwrap();
        let meta = ReleaseMeta {
            health: vec![("/".into(), 21000)],
            secrets: true,
            ..remote::testing::meta_with(&[], &[])
        };
        std::fs::write(
            release.join(remote::META_FILE),
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
        std::fs::write(release.join("compose.yml"), "services: {}").unwrap();
        std::fs::write(dir.path().join("shared/secrets.env"), "DB_PASSWORD=x").unwrap();
        std::fs::write(dir.path().join("sites/vpsup-shop.a.example.com.conf"), "x").unwrap();
        std::os::unix::fs::symlink("releases/r1", dir.path().join("current")).unwrap();

        let probed = probe(
            &LocalTransport::new("test", true),
            &paths,
            "/nonexistent/vpsup-store",
        )
        .await
        .unwrap();
        assert_eq!(probed.meta, Some(meta));
        assert_eq!(probed.current.release.as_deref(), Some("r1"));
        assert_eq!(probed.current.files.len(), 2);
        assert_eq!(probed.releases, ["r0", "r1"]);
        assert_eq!(probed.secrets, ["DB_PASSWORD"]);
        assert_eq!(probed.sites.len(), 1);
        assert_eq!(probed.sites[0].0, "vpsup-shop.a.example.com.conf");
        assert!(!probed.facts.kernel.is_empty());
        assert!(probed.certificates.is_empty());
    }

    /// A host the app never reached: every part comes back, empty.
    #[test]
    fn a_host_without_the_app_has_nothing_current() {
        let dir = tempfile::tempdir().unwrap();
        let sections = Sections::with_nonce(5);
        let script = script(
            &sections,
            &local_paths(&dir.path().join("none")),
            "/nonexistent",
        );
        assert!(script.contains("for p in vpsup-shop $slot; do docker ps -a --filter label=com.docker.compose.project=$p"), "{script}");
        assert!(script.contains("green) slot=vpsup_green-shop"), "{script}");
        let out = String::from_utf8(sh_ok(&script).stdout).unwrap();
        let probed = parse(&sections, &out).unwrap();
        assert_eq!(probed.current, upload::Current::default());
        assert_eq!(probed.meta, None);
        assert!(probed.releases.is_empty() && probed.secrets.is_empty());
        assert!(probed.sites.is_empty() && probed.containers.is_empty());
        assert_eq!(probed.serving_file, None);
        assert!(probed.nginx_ports.is_empty());
    }

    /// A part that did not come back is an error, not an empty part; and a
    /// file on the host cannot pass for a part (a secret named like the old
    /// `@@sites` marker stays a secret's name).
    #[test]
    fn a_missing_part_fails_and_output_cannot_forge_one() {
        let s = Sections::with_nonce(9);
        let part = |name: &str, text: &str| format!("\n{} {name}\n{text}", s.marker());
        let facts =
            "os_id=debian\nkernel=6.12\ncpus=2\nmem_kb=1\nswap_kb=0\nroot_free_kb=1\nsudo=root\n";
        let all = [
            part(FACTS, facts),
            part(RELEASE, "current r1\n"),
            part(META, ""),
            part(RELEASES, "r1\n"),
            part(SECRETS, "DB_PASSWORD\n@@sites\n"),
            part(SITES, ""),
            part(CONTAINERS, "web\trunning\tUp 1 second\n"),
            part(SERVING, "green\n"),
            part(NGINX_PORTS, "21000\n23001\n"),
            part(CERTIFICATES, ""),
            part(BACKUP, ""),
            part(WATCH, ""),
        ];
        let probed = parse(&s, &all.concat()).unwrap();
        assert_eq!(probed.secrets, ["DB_PASSWORD", "@@sites"]);
        assert_eq!(probed.current.release.as_deref(), Some("r1"));
        assert_eq!(probed.containers.len(), 1);
        assert_eq!(probed.serving_file, Some(Slot::Green));
        assert_eq!(probed.nginx_ports, [21000, 23001]);

        let cut = all[..5].concat();
        assert_eq!(
            parse(&s, &cut).unwrap_err().to_string(),
            "the host's output has no `sites` part (the script stopped early or printed something unexpected)"
        );
        // Another run's marker is no part of this one.
        let other = Sections::with_nonce(10);
        assert!(parse(&other, &all.concat()).is_err());
    }
}
