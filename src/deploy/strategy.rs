//! Zero-downtime deploys, the plan (docs/zero-downtime.md): how each compose
//! service of a release is replaced, from what the compose files say of it
//! (`ServiceFacts`), the sites and `[app.services]`, and how the running
//! release defined each service. Nothing here touches a host.
//!
//! The one rule: a service that writes its own data never runs twice. So
//! only services behind a site or route switch blue/green (a second instance
//! beside the running one, nginx switched once it is healthy), and only if
//! they write nothing; every other service is recreated in place, and only
//! when its own definition changed, and the deploy says so beforehand.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::compose_model::{self, ComposeFile, Located};
use super::interpolate;
use super::upload::ReleaseFile;
use super::volumes;
use crate::config::{AppServiceConfig, ServiceName, SiteConfig, Strategy};

/// What the plan needs to know of one compose service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFacts {
    pub name: String,
    /// What it can write (writable bind mounts, named and anonymous volumes).
    pub writes: Vec<String>,
    /// It sets `container_name` (one container per name on a host).
    pub container_name: bool,
    /// It publishes ports of its own (a second instance could not bind them).
    pub ports: bool,
    /// The networks it joins (`default` when it names none; none with a
    /// `network_mode`).
    pub networks: Vec<String>,
    /// The named volumes it mounts, read-only or not.
    pub volumes: Vec<String>,
    /// SHA-256 (hex) over its definition, interpolated as compose reads it,
    /// and the files it reads when built or started (its build context, its
    /// `env_file`s): equal when compose would run it the same way.
    pub fingerprint: String,
}

/// Every service of the compose files (as `compose_model::load` read them;
/// a later file's definition of a service overrides an earlier one's, as
/// compose merges them, so their facts add up) among the release's `files`.
pub fn service_facts(
    compose: &[ComposeFile],
    files: &[ReleaseFile],
) -> Result<Vec<ServiceFacts>, String> {
    let mut out: BTreeMap<String, ServiceFacts> = BTreeMap::new();
    let mut hashes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in compose {
        let Some(services) = file.doc.get("services").and_then(Value::as_object) else {
            continue;
        };
        let writes =
            volumes::writable_mounts(&file.doc).map_err(|e| format!("{}: {e}", file.path))?;
        let named = volumes::named_mounts(&file.doc).map_err(|e| format!("{}: {e}", file.path))?;
        let env_files =
            compose_model::service_env_files(file).map_err(|e| format!("{}: {e}", file.path))?;
        for (name, definition) in services {
            let facts = out.entry(name.clone()).or_insert_with(|| ServiceFacts {
                name: name.clone(),
                writes: Vec::new(),
                container_name: false,
                ports: false,
                networks: Vec::new(),
                volumes: Vec::new(),
                fingerprint: String::new(),
            });
            // A later file's networks replace an earlier one's, as compose merges.
            if let Some(networks) = service_networks(definition) {
                facts.networks = networks;
            }
            facts.volumes.extend(
                named
                    .iter()
                    .filter(|(service, _)| service == name)
                    .map(|(_, volume)| volume.clone()),
            );
            facts.writes.extend(
                writes
                    .iter()
                    .filter(|(service, _)| service == name)
                    .map(|(_, what)| what.clone()),
            );
            facts.container_name |= definition.get("container_name").is_some();
            facts.ports |= definition
                .get("ports")
                .and_then(Value::as_array)
                .is_some_and(|p| !p.is_empty());
            let mut read: Vec<&str> = env_files
                .iter()
                .filter(|(_, service, _)| service == name)
                .map(|(path, _, _)| path.as_str())
                .collect();
            // What it reads from the release: its build context, what it
            // bind-mounts (a config file, `init.sql`), its `configs` and
            // `secrets` files. A change there restarts it.
            let mut dirs: Vec<String> = build_context(file, definition).into_iter().collect();
            dirs.extend(mounted(file, name, definition));
            read.extend(
                files
                    .iter()
                    .filter(|f| dirs.iter().any(|dir| f.path == *dir || under(&f.path, dir)))
                    .map(|f| f.path.as_str()),
            );
            let parts = hashes.entry(name.clone()).or_default();
            parts.push(definition_hash(file, definition));
            for path in read {
                if let Some(f) = files.iter().find(|f| f.path == path) {
                    parts.push(format!("{path} {:o} {}", f.mode, f.sha256()));
                }
            }
        }
    }
    for (name, parts) in hashes {
        if let Some(facts) = out.get_mut(&name) {
            facts.fingerprint = hex(&Sha256::digest(parts.join("\n").as_bytes()));
            facts.volumes.sort();
            facts.volumes.dedup();
        }
    }
    // Set nowhere: compose puts the service on the project's default network.
    for facts in out.values_mut() {
        if facts.networks.is_empty() && !has_network_mode(compose, &facts.name) {
            facts.networks.push("default".to_string());
        }
    }
    Ok(out.into_values().collect())
}

/// The networks a definition names (a list, or a map's keys); `None` when
/// it names none.
fn service_networks(definition: &Value) -> Option<Vec<String>> {
    let names: Vec<String> = match definition.get("networks")? {
        Value::Array(list) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Value::Object(map) => map.keys().cloned().collect(),
        _ => return None,
    };
    Some(names)
}

fn has_network_mode(compose: &[ComposeFile], service: &str) -> bool {
    compose.iter().any(|file| {
        file.doc
            .pointer(&format!("/services/{service}/network_mode"))
            .is_some()
    })
}

/// A definition as compose reads it: interpolated with the file's variables
/// (a generated secret's value is unknown here, and never changes: its name
/// stands for it); as written when that fails.
fn definition_hash(file: &ComposeFile, definition: &Value) -> String {
    let mut resolved = definition.clone();
    if interpolate::interpolate_all(&mut resolved, &file.env).is_err() {
        resolved = definition.clone();
    }
    hex(&Sha256::digest(resolved.to_string().as_bytes()))
}

/// The release paths a service mounts: its bind mounts' sources, and the
/// files of the `configs` and `secrets` it uses (the file's top-level
/// `configs:`/`secrets:` say where each is).
fn mounted(file: &ComposeFile, service: &str, definition: &Value) -> Vec<String> {
    let mut paths: Vec<String> = volumes::bind_mounts(&file.doc, &file.dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.service == service)
        .filter_map(|m| match file.locate(&m.source) {
            Located::Release(path) => Some(path),
            Located::Host | Located::Outside => None,
        })
        .collect();
    for section in ["configs", "secrets"] {
        let used = definition
            .get(section)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|entry| match entry {
                Value::String(name) => Some(name.as_str()),
                other => other.get("source").and_then(Value::as_str),
            });
        for name in used {
            let source = file
                .doc
                .get(section)
                .and_then(|all| all.get(name))
                .and_then(|entry| entry.get("file"))
                .and_then(Value::as_str);
            if let Some(Located::Release(path)) = source.map(|s| file.locate(s)) {
                paths.push(path);
            }
        }
    }
    paths
}

/// The release directory of a service's build context, when it has one in
/// the release.
fn build_context(file: &ComposeFile, definition: &Value) -> Option<String> {
    let context = match definition.get("build")? {
        Value::String(context) => context.as_str(),
        Value::Object(build) => build.get("context").and_then(Value::as_str).unwrap_or("."),
        _ => return None,
    };
    match file.locate(context) {
        Located::Release(dir) => Some(dir),
        Located::Host | Located::Outside => None,
    }
}

fn under(path: &str, dir: &str) -> bool {
    dir.is_empty() || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How the running release defined its services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Running<'a> {
    /// Nothing runs yet: every service starts.
    Nothing,
    /// A release that recorded no fingerprints (an earlier vpsup): any
    /// service may be recreated.
    Unrecorded,
    /// Each service's fingerprint.
    Recorded(&'a BTreeMap<String, String>),
}

/// How a deploy replaces one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replace {
    /// A new instance beside the running one, served once healthy.
    BlueGreen,
    /// Stopped and started again (or started: new in this release).
    Recreate(Change),
    /// Left running as it is.
    Unchanged,
    /// Not deployable this way: why, and what to do.
    Refused(String),
}

/// Why a recreated service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Its definition (or a file it reads) changed.
    Changed,
    /// Not in the running release.
    New,
    /// The running release did not record how it ran it.
    Unknown,
}

/// What a service is to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Behind a site or route.
    Site,
    /// Not behind a site, with data of its own (a database, a queue).
    Stateful,
    /// Neither (a worker).
    Background,
}

/// One service, planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    pub service: String,
    pub role: Role,
    pub replace: Replace,
}

impl ServiceFacts {
    /// Folds `extra` (what vpsup adds for the service: its loopback ports)
    /// into the fingerprint.
    pub fn fold(&mut self, extra: &str) {
        self.fingerprint = hex(&Sha256::digest(
            format!("{}\n{extra}", self.fingerprint).as_bytes(),
        ));
    }
}

impl ServicePlan {
    /// What the deploy says of it beforehand.
    pub fn note(&self) -> String {
        let s = &self.service;
        let who = match self.role {
            Role::Site => "its site sees",
            Role::Stateful | Role::Background => "its clients see",
        };
        match (&self.replace, self.role) {
            (Replace::BlueGreen, _) => {
                format!("{s}: blue/green (the new instance serves once healthy, then the old one drains and stops)")
            }
            (Replace::Unchanged, _) => format!("{s}: unchanged, keeps running"),
            (Replace::Refused(why), _) => format!("{s}: refused: {why}"),
            (Replace::Recreate(Change::New), _) => format!("{s} will start"),
            (Replace::Recreate(Change::Changed), Role::Background) => {
                format!("{s} will restart (its definition changed)")
            }
            (Replace::Recreate(Change::Changed), _) => {
                format!("{s} will restart: {who} a short interruption")
            }
            (Replace::Recreate(Change::Unknown), _) => format!(
                "{s} may restart (the running release did not record how it ran it): {who} a short interruption"
            ),
        }
    }
}

/// Why `[app.services]` cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategyError {
    #[error("[app.services.{0}]: there is no service {0} in the compose files (services: {1}); fix the name or remove the section")]
    UnknownService(String, String),
    #[error("[app.services.{0}] strategy = \"blue-green\": {0} is behind no site or route, so nothing would switch to a second instance; remove the strategy (it is recreated in place when its definition changed)")]
    NotBehindSite(String),
}

/// Every service of the release, planned: `services` from `service_facts`,
/// the `sites` (their services and routes' are behind nginx), the
/// `[app.services]` settings, and what runs.
pub fn plan(
    services: &[ServiceFacts],
    sites: &[SiteConfig],
    settings: &BTreeMap<ServiceName, AppServiceConfig>,
    running: Running<'_>,
) -> Result<Vec<ServicePlan>, StrategyError> {
    let names: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    if let Some(unknown) = settings.keys().find(|k| !names.contains(k.as_str())) {
        return Err(StrategyError::UnknownService(
            unknown.0.clone(),
            names.iter().copied().collect::<Vec<_>>().join(", "),
        ));
    }
    let behind: BTreeSet<&str> = sites
        .iter()
        .flat_map(|site| {
            std::iter::once(site.service.as_str())
                .chain(site.routes.iter().map(|r| r.service.as_str()))
        })
        .collect();
    let mut planned = Vec::new();
    for facts in services {
        let name = facts.name.as_str();
        let site = behind.contains(name);
        let role = match (site, facts.writes.is_empty()) {
            (true, _) => Role::Site,
            (false, false) => Role::Stateful,
            (false, true) => Role::Background,
        };
        let strategy = settings
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .and_then(|(_, s)| s.strategy);
        let replace = match strategy {
            Some(Strategy::BlueGreen) if !site => {
                return Err(StrategyError::NotBehindSite(name.to_string()))
            }
            Some(Strategy::Recreate) => recreate(facts, running),
            None if !site => recreate(facts, running),
            Some(Strategy::BlueGreen) | None => match refusal(facts) {
                Some(why) => Replace::Refused(why),
                None => Replace::BlueGreen,
            },
        };
        planned.push(ServicePlan {
            service: name.to_string(),
            role,
            replace,
        });
    }
    Ok(planned)
}

/// Recreated when its definition changed (or started when new).
fn recreate(facts: &ServiceFacts, running: Running<'_>) -> Replace {
    in_place(&facts.name, &facts.fingerprint, running)
}

/// How a service that runs in the app's project is replaced: recreated
/// when its fingerprint differs from what runs (or started when new), else
/// left running.
pub fn in_place(name: &str, fingerprint: &str, running: Running<'_>) -> Replace {
    match running {
        Running::Nothing => Replace::Recreate(Change::New),
        Running::Unrecorded => Replace::Recreate(Change::Unknown),
        Running::Recorded(fingerprints) => match fingerprints.get(name) {
            None => Replace::Recreate(Change::New),
            Some(f) if f == fingerprint => Replace::Unchanged,
            Some(_) => Replace::Recreate(Change::Changed),
        },
    }
}

/// Why a site's service cannot run twice, and what to do.
fn refusal(facts: &ServiceFacts) -> Option<String> {
    let name = &facts.name;
    let recreate = format!(
        "or set [app.services.{name}] strategy = \"recreate\" in vpsup.toml (its site then sees a short interruption on each deploy)"
    );
    if !facts.writes.is_empty() {
        return Some(format!(
            "{name} is behind a site and writes to {}: a second instance beside it during the switch would write there too. Mount it read-only (:ro), move the writes to a service behind no site (a database, object storage), {recreate}",
            facts.writes.join(", ")
        ));
    }
    if facts.container_name {
        return Some(format!(
            "{name} is behind a site and sets container_name: a second instance cannot take the same name. Remove container_name, {recreate}"
        ));
    }
    if facts.ports {
        return Some(format!(
            "{name} is behind a site and publishes ports of its own: a second instance could not bind them. Remove its `ports` (vpsup publishes the site's port on loopback for nginx), {recreate}"
        ));
    }
    None
}

/// The refusals among `planned`, one line each; `None`: none.
pub fn refused(planned: &[ServicePlan]) -> Option<String> {
    let lines: Vec<&str> = planned
        .iter()
        .filter_map(|p| match &p.replace {
            Replace::Refused(why) => Some(why.as_str()),
            _ => None,
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// The services `planned` puts in `want`'s group, by name.
pub fn services_where(planned: &[ServicePlan], want: impl Fn(&Replace) -> bool) -> Vec<String> {
    planned
        .iter()
        .filter(|p| want(&p.replace))
        .map(|p| p.service.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::deploy::interpolate::Env;

    fn facts(name: &str, writes: &[&str], fingerprint: &str) -> ServiceFacts {
        ServiceFacts {
            name: name.to_string(),
            writes: writes.iter().map(|w| w.to_string()).collect(),
            container_name: false,
            ports: false,
            networks: vec!["default".to_string()],
            volumes: Vec::new(),
            fingerprint: fingerprint.to_string(),
        }
    }

    /// The example project of the README, with a worker and a CMS.
    fn config(extra: &str) -> Config {
        toml::from_str(&format!(
            "[app]\nname = \"doctor\"\n{extra}\n[[sites]]\ndomain = \"doctor.example.com\"\nservice = \"frontend\"\nport = 80\nroutes = [{{ path = \"/api/\", service = \"backend\", port = 8000 }}]\n[[sites]]\ndomain = \"cms.example.com\"\nservice = \"cms\"\nport = 80\n"
        ))
        .unwrap()
    }

    fn services() -> Vec<ServiceFacts> {
        vec![
            facts("backend", &[], "b1"),
            facts("cms", &["volume uploads"], "c1"),
            facts("db", &["volume pgdata"], "d1"),
            facts("frontend", &[], "f1"),
            facts("worker", &[], "w1"),
        ]
    }

    fn replaced(planned: &[ServicePlan]) -> Vec<(&str, Role, &Replace)> {
        planned
            .iter()
            .map(|p| (p.service.as_str(), p.role, &p.replace))
            .collect()
    }

    /// Sites' services switch blue/green; one that writes is refused, with
    /// what to do; the rest starts on a first deploy.
    #[test]
    fn site_services_switch_and_a_writing_one_is_refused() {
        let config = config("");
        let app = config.app.as_ref().unwrap();
        let planned = plan(&services(), &config.sites, &app.services, Running::Nothing).unwrap();
        let new = Replace::Recreate(Change::New);
        let cms = &planned[1].replace;
        assert_eq!(
            replaced(&planned),
            [
                ("backend", Role::Site, &Replace::BlueGreen),
                ("cms", Role::Site, cms),
                ("db", Role::Stateful, &new),
                ("frontend", Role::Site, &Replace::BlueGreen),
                ("worker", Role::Background, &new),
            ]
        );
        let why = refused(&planned).unwrap();
        assert!(
            why.starts_with("cms is behind a site and writes to volume uploads: a second instance")
                && why.ends_with("or set [app.services.cms] strategy = \"recreate\" in vpsup.toml (its site then sees a short interruption on each deploy)"),
            "{why}"
        );
        assert_eq!(planned[2].note(), "db will start");
        assert_eq!(
            services_where(&planned, |r| *r == Replace::BlueGreen),
            ["backend", "frontend"]
        );
    }

    /// Against a recorded release: only what changed is recreated, and the
    /// deploy says who sees an interruption; `strategy = "recreate"` takes
    /// a writing site service out of blue/green.
    #[test]
    fn only_changed_services_are_recreated_and_said_so() {
        let config = config("[app.services.cms]\nstrategy = \"recreate\"\n");
        let app = config.app.as_ref().unwrap();
        let running: BTreeMap<String, String> = [
            ("backend", "b0"),
            ("cms", "c0"),
            ("db", "d0"),
            ("frontend", "f1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let planned = plan(
            &services(),
            &config.sites,
            &app.services,
            Running::Recorded(&running),
        )
        .unwrap();
        assert_eq!(refused(&planned), None);
        let notes: Vec<String> = planned.iter().map(ServicePlan::note).collect();
        assert_eq!(
            notes,
            [
                "backend: blue/green (the new instance serves once healthy, then the old one drains and stops)",
                "cms will restart: its site sees a short interruption",
                "db will restart: its clients see a short interruption",
                "frontend: blue/green (the new instance serves once healthy, then the old one drains and stops)",
                "worker will start",
            ]
        );
        let mut same = running.clone();
        same.insert("db".into(), "d1".into());
        same.insert("cms".into(), "c1".into());
        same.insert("worker".into(), "w1".into());
        let planned = plan(
            &services(),
            &config.sites,
            &app.services,
            Running::Recorded(&same),
        )
        .unwrap();
        assert_eq!(
            services_where(&planned, |r| *r == Replace::Unchanged),
            ["cms", "db", "worker"]
        );
        assert_eq!(planned[2].note(), "db: unchanged, keeps running");
        // An earlier vpsup's release recorded nothing: it may restart.
        let planned = plan(
            &services(),
            &config.sites,
            &app.services,
            Running::Unrecorded,
        )
        .unwrap();
        assert_eq!(
            planned[2].note(),
            "db may restart (the running release did not record how it ran it): its clients see a short interruption"
        );
        assert_eq!(planned[4].note(), "worker may restart (the running release did not record how it ran it): its clients see a short interruption");
    }

    #[test]
    fn a_site_service_that_cannot_run_twice_is_refused_with_what_to_do() {
        let config = config("");
        let app = config.app.as_ref().unwrap();
        let mut named = services();
        named[3].container_name = true;
        named[0].ports = true;
        let planned = plan(&named, &config.sites, &app.services, Running::Nothing).unwrap();
        let why = refused(&planned).unwrap();
        let lines: Vec<&str> = why.lines().collect();
        assert_eq!(lines.len(), 3, "{why}");
        assert!(
            lines[0].starts_with("backend is behind a site and publishes ports of its own"),
            "{why}"
        );
        assert!(
            lines[2].starts_with("frontend is behind a site and sets container_name"),
            "{why}"
        );
    }

    #[test]
    fn settings_name_services_that_exist_and_blue_green_only_behind_a_site() {
        let unknown = config("[app.services.dbb]\nstrategy = \"recreate\"\n");
        let app = unknown.app.as_ref().unwrap();
        let err = plan(&services(), &unknown.sites, &app.services, Running::Nothing).unwrap_err();
        assert_eq!(
            err.to_string(),
            "[app.services.dbb]: there is no service dbb in the compose files (services: backend, cms, db, frontend, worker); fix the name or remove the section"
        );
        let worker = config("[app.services.worker]\nstrategy = \"blue-green\"\n");
        let app = worker.app.as_ref().unwrap();
        let err = plan(&services(), &worker.sites, &app.services, Running::Nothing).unwrap_err();
        assert_eq!(err, StrategyError::NotBehindSite("worker".into()));
    }

    /// Facts from compose files as `compose_model` reads them: what writes,
    /// and fingerprints that change with the definition, its variables, its
    /// build context and env files, and with nothing else.
    #[test]
    fn fingerprints_follow_what_compose_runs() {
        let file = |path: &str, content: &str| ReleaseFile {
            path: path.into(),
            content: content.as_bytes().to_vec(),
            mode: 0o644,
        };
        let compose = "services:\n  web:\n    build: ./web\n    environment: { GREETING: \"${GREETING}\" }\n  db:\n    image: postgres:16\n    env_file: db.env\n    volumes: [\"pgdata:/var/lib/postgresql/data\", \"./conf/db.conf:/etc/db.conf:ro\"]\n    configs: [init]\n    container_name: db\n    ports: [\"127.0.0.1:5432:5432\"]\nvolumes:\n  pgdata:\nconfigs:\n  init:\n    file: ./init.sql\n";
        let facts_of = |files: &[ReleaseFile], greeting: &str| {
            let mut env = Env::default();
            env.set("GREETING", greeting);
            let read = |path: &str| {
                files
                    .iter()
                    .find(|f| f.path == path)
                    .map(|f| f.content.clone())
                    .ok_or_else(|| format!("{path} missing"))
            };
            let loaded = compose_model::load(&["compose.yml".to_string()], &env, &read).unwrap();
            let facts = service_facts(&loaded, files).unwrap();
            let by_name: BTreeMap<String, ServiceFacts> =
                facts.into_iter().map(|f| (f.name.clone(), f)).collect();
            by_name
        };
        let files = vec![
            file("compose.yml", compose),
            file("db.env", "POSTGRES_USER=app\n"),
            file("web/Dockerfile", "FROM scratch\n"),
            file("web/index.html", "v1"),
            file("README.md", "docs"),
            file("conf/db.conf", "max_connections = 10"),
            file("init.sql", "create table t ();"),
        ];
        let base = facts_of(&files, "hello");
        assert_eq!(base["db"].writes, ["volume pgdata"]);
        assert!(base["db"].container_name && base["db"].ports);
        assert!(base["web"].writes.is_empty() && !base["web"].container_name);

        let changed = |i: usize, content: &str, greeting: &str| {
            let mut files = files.clone();
            files[i].content = content.as_bytes().to_vec();
            facts_of(&files, greeting)
        };
        // A page in web's build context: web changes, db does not.
        let page = changed(3, "v2", "hello");
        assert_ne!(page["web"].fingerprint, base["web"].fingerprint);
        assert_eq!(page["db"].fingerprint, base["db"].fingerprint);
        // db's env file: db changes only.
        let env = changed(1, "POSTGRES_USER=other\n", "hello");
        assert_ne!(env["db"].fingerprint, base["db"].fingerprint);
        assert_eq!(env["web"].fingerprint, base["web"].fingerprint);
        // A variable web uses.
        let var = facts_of(&files, "bonjour");
        assert_ne!(var["web"].fingerprint, base["web"].fingerprint);
        assert_eq!(var["db"].fingerprint, base["db"].fingerprint);
        // db's mounted config file, and its `configs` file: db changes only.
        for i in [5, 6] {
            let conf = changed(i, "changed", "hello");
            assert_ne!(conf["db"].fingerprint, base["db"].fingerprint, "file {i}");
            assert_eq!(conf["web"].fingerprint, base["web"].fingerprint, "file {i}");
        }
        assert_eq!(base["db"].volumes, ["pgdata"]);
        assert_eq!(base["web"].networks, ["default"]);
        // A file neither reads.
        let docs = changed(4, "more docs", "hello");
        assert_eq!(docs["web"].fingerprint, base["web"].fingerprint);
        assert_eq!(docs["db"].fingerprint, base["db"].fingerprint);
    }
}
