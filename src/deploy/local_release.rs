//! The local half of a deploy: what goes into a release, computed on the
//! operator's machine before any connection.
//!
//! - The project's files, walked from its directory, without what never
//!   belongs on a host: `.git`, `.vpsup`, `target`, `node_modules` and
//!   `__pycache__` directories (at any depth), `vpsup.toml` and
//!   `.vpsupignore` (at the root), the files the caller keeps home (the
//!   private files the config names: SSH keys, the TSIG secret, the backup
//!   password and credentials; the extra root) and the paths `.vpsupignore`
//!   lists (one project-relative path per line; a directory excludes
//!   everything under it; `#` comments; no patterns).
//!   Symlinks are followed when they point inside the project and refused
//!   when they point outside it. Every rule applies to a file's path in the
//!   release and to its real path: a symlinked directory (`conf -> secrets`)
//!   is no way around one. Modes are 0755 (executable by its owner) or 0644.
//! - No file that holds a private key (PEM `-----BEGIN ... PRIVATE KEY-----`
//!   with key material after it, OpenSSH's among them, or PuTTY's) travels
//!   unless `[app] allow_private_keys` lists it: the release is refused,
//!   naming each one.
//! - The compose files, with those they include or extend, as compose reads
//!   them (`compose_model`), checked for ports published past the firewall
//!   (`port_guard::exposures`): refused, or, with `public_ports = "loopback"`,
//!   rewritten to 127.0.0.1 (the uploaded file is then the rewritten document,
//!   as JSON, which is YAML).
//! - `vpsup.override.json`, publishing each site's (and route's) service port
//!   on the loopback port nginx proxies to (`ports`), last in the `-f` list.
//! - A hash of it all, the content part of the release id.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::{AppConfig, PrivateFile, PublicPorts, SiteConfig};
use crate::deploy::compose_model::{self, ComposeError};
use crate::deploy::interpolate::Env;
use crate::deploy::port_guard::{self, Exposure};
use crate::deploy::ports::{self, Target};
use crate::deploy::remote::AppPaths;
use crate::deploy::strategy::{self, Replace, Running, ServiceFacts};
use crate::deploy::switch::Slot;
use crate::deploy::upload::ReleaseFile;
use crate::deploy::volumes::{self, MountError};

/// The compose override vpsup adds to every release.
pub const OVERRIDE_FILE: &str = "vpsup.override.json";
/// Paths the project keeps off its hosts.
pub const IGNORE_FILE: &str = ".vpsupignore";
/// The most a release may weigh.
pub const MAX_TOTAL_BYTES: u64 = 200 * 1024 * 1024;

/// Directories never uploaded, wherever they are.
const SKIPPED_DIRS: &[&str] = &[".git", ".vpsup", "target", "node_modules", "__pycache__"];
/// Files at the root never uploaded.
const SKIPPED_ROOT_FILES: &[&str] = &["vpsup.toml", IGNORE_FILE];

/// What a deploy puts on the host, before connecting to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Every file of the release directory: relative, `/`-separated, sorted.
    pub files: Vec<ReleaseFile>,
    /// For `docker compose -f`, in config order, then `vpsup.override.json`.
    pub compose_files: Vec<String>,
    /// From `[app] env_files`, relative.
    pub env_files: Vec<String>,
    /// The loopback port of each (service, container port) nginx proxies to
    /// that runs in the app's own project (recreated in place).
    pub ports: BTreeMap<Target, u16>,
    /// The services behind a site or route that switch blue/green
    /// (`deploy::strategy`), and each slot's loopback ports for their
    /// targets (never one of `ports`, nor the other slot's).
    pub blue_green: Vec<String>,
    pub slot_ports: BTreeMap<Slot, BTreeMap<Target, u16>>,
    /// What the plan knows of every compose service (fingerprints, mounts,
    /// networks).
    pub services: Vec<ServiceFacts>,
    /// `service: before -> after` for each public port bound to loopback.
    pub rewritten: Vec<String>,
    /// SHA-256 (hex) over the path, mode and content of every file.
    pub content_hash: String,
    /// Project paths mounted writable: the app's data, kept on the host in
    /// `/srv/vpsup/<app>/data/<path>` (see `deploy::volumes`).
    pub data: Vec<String>,
    /// Project files under those paths, which only seed them.
    pub seeded: Vec<String>,
    /// The compose files' named volumes (compose names them `<project>_<name>`).
    pub named_volumes: Vec<String>,
    /// The compose files' networks compose names `<project>_<name>`.
    pub project_networks: Vec<String>,
    /// The project has a `.env` (not listed in `[app] env_files`).
    pub dot_env: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the name is not portable (not UTF-8, or a control character in it); rename it or list it in .vpsupignore")]
    BadName { path: PathBuf },
    #[error("symlink {link} points outside the project (to {target}); its target would not be in the release: copy the file into the project, or list the link in .vpsupignore")]
    SymlinkOutside { link: String, target: PathBuf },
    #[error(
        "symlink {link} is broken (its target does not exist): fix it, or list it in .vpsupignore"
    )]
    SymlinkBroken { link: String },
    #[error("symlink {link} points at {target}, which is not uploaded ({reason}): list the link in .vpsupignore, or point it elsewhere")]
    SymlinkToSkipped {
        link: String,
        target: String,
        reason: String,
    },
    #[error("symlink {link} points at a directory that contains it (a loop): remove it, or list it in .vpsupignore")]
    SymlinkLoop { link: String },
    #[error("{path} is not a regular file, directory or symlink (a socket, pipe or device): list it in .vpsupignore")]
    SpecialFile { path: String },
    #[error(".vpsupignore line {line}: {why} (got {text:?})")]
    BadIgnore {
        line: usize,
        text: String,
        why: &'static str,
    },
    #[error("the release would be {} MB, over the {} MB limit; list what the hosts do not need (build output, data, media) in .vpsupignore at the project root. Largest files: {}", .total / 1_000_000, .limit / 1_000_000, .largest.iter().map(|(p, n)| format!("{p} ({} MB)", n / 1_000_000)).collect::<Vec<_>>().join(", "))]
    TooLarge {
        total: u64,
        limit: u64,
        largest: Vec<(String, u64)>,
    },
    #[error("{path} (in [app] {field}) is outside the project directory {project}: only files inside it are uploaded; move it into the project")]
    OutsideProject {
        field: &'static str,
        path: PathBuf,
        project: PathBuf,
    },
    #[error("{path} does not exist (listed in [app] compose_files, relative to the project directory {project}): create it or fix [app] compose_files")]
    MissingComposeFile { path: String, project: PathBuf },
    #[error("{path} does not exist (listed in [app] env_files, relative to the project directory {project}): create it or fix [app] env_files")]
    MissingEnvFile { path: String, project: PathBuf },
    #[error("{path} (in [app] {field}) is needed on the host but is not uploaded ({reason}): stop excluding it")]
    NeededButSkipped {
        field: &'static str,
        path: String,
        reason: String,
    },
    #[error("vpsup does not upload private keys to hosts, and the release holds {}: move each out of the project or list it in .vpsupignore; if the app needs it on its hosts, add it to [app] allow_private_keys in vpsup.toml", .found.iter().map(|(path, kind)| format!("{path} ({kind})")).collect::<Vec<_>>().join(", "))]
    PrivateKeys {
        /// (release path, what it holds: `OPENSSH PRIVATE KEY`).
        found: Vec<(String, String)>,
    },
    #[error(transparent)]
    Compose(#[from] ComposeError),
    #[error("{path}: {message}")]
    ComposeInvalid { path: String, message: String },
    #[error(
        "{path}: {message} (compose reads it for the ${{VARIABLES}} of the compose files: fix it)"
    )]
    EnvFile { path: String, message: String },
    #[error("{path} exposes containers past the firewall, so vpsup will not deploy it:\n  - {}", .exposures.join("\n  - "))]
    Exposed {
        path: String,
        exposures: Vec<String>,
    },
    #[error("[[sites]] {domain}: {route}service {service:?} is not in {files} (services: {services}); fix the site's service or add it to the compose file")]
    UnknownService {
        domain: String,
        /// `route /api/: ` for a route, else empty.
        route: String,
        service: String,
        files: String,
        services: String,
    },
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("./{path} is mounted writable, which makes it the app's data (kept on the host, never updated by a deploy), but it holds {file}, which compose reads for every deploy: mount it read-only (:ro)")]
    DataHoldsConfig { path: String, file: String },
    #[error("zero-downtime deploys cannot switch these services (vpsup.toml [app.services]):\n  - {}", .0.replace('\n', "\n  - "))]
    Strategy(String),
    #[error("the project has its own {OVERRIDE_FILE}, the name of the file vpsup generates in the release: rename it (or list it in .vpsupignore)")]
    OverrideExists,
}

/// Everything to upload for `app`, from the project directory, without the
/// files in `keep_home` (relative to the project, or absolute).
pub fn collect(
    project: &Path,
    app: &AppConfig,
    sites: &[SiteConfig],
    keep_home: &[PrivateFile],
) -> Result<Release, ReleaseError> {
    collect_with_limit(project, app, sites, keep_home, MAX_TOTAL_BYTES)
}

fn collect_with_limit(
    project: &Path,
    app: &AppConfig,
    sites: &[SiteConfig],
    keep_home: &[PrivateFile],
    limit: u64,
) -> Result<Release, ReleaseError> {
    let root = fs::canonicalize(project).map_err(|source| ReleaseError::Io {
        path: project.to_path_buf(),
        source,
    })?;
    let rules = Rules::new(project, &root, keep_home)?;
    let allowed_keys: Vec<PathBuf> = app
        .allow_private_keys
        .iter()
        .flat_map(|p| as_written_and_resolved(project, &root, &p.0))
        .collect();
    let mut walk = Walk {
        root: &root,
        rules: &rules,
        found: Vec::new(),
    };
    walk.dir(&root, "", &mut vec![root.clone()])?;
    let entries = walk.found;

    let total: u64 = entries.iter().map(|e| e.len).sum();
    if total > limit {
        let mut largest: Vec<(String, u64)> =
            entries.iter().map(|e| (e.rel.clone(), e.len)).collect();
        largest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        largest.truncate(5);
        return Err(ReleaseError::TooLarge {
            total,
            limit,
            largest,
        });
    }
    let mut files: BTreeMap<String, ReleaseFile> = BTreeMap::new();
    let mut private_keys = Vec::new();
    for entry in entries {
        let content = fs::read(&entry.source).map_err(|source| ReleaseError::Io {
            path: entry.source.clone(),
            source,
        })?;
        if let Some(kind) = private_key_in(&content) {
            let real = entry.source.strip_prefix(&root).unwrap_or(&entry.source);
            let allowed = allowed_keys
                .iter()
                .any(|a| Path::new(&entry.rel).starts_with(a) || real.starts_with(a));
            if !allowed {
                private_keys.push((entry.rel.clone(), kind));
            }
        }
        files.insert(
            entry.rel.clone(),
            ReleaseFile {
                path: entry.rel,
                content,
                mode: entry.mode,
            },
        );
    }
    if !private_keys.is_empty() {
        return Err(ReleaseError::PrivateKeys {
            found: private_keys,
        });
    }
    if files.contains_key(OVERRIDE_FILE) {
        return Err(ReleaseError::OverrideExists);
    }

    let env_files = app
        .env_files
        .iter()
        .map(|path| needed(project, &root, &rules, &files, path, "env_files"))
        .collect::<Result<Vec<_>, _>>()?;
    // Compose reads `.env` by itself only without --env-file: say it too.
    let dot_env = files.contains_key(".env") && !env_files.iter().any(|e| e == ".env");
    let env = compose_env(app, dot_env, &env_files, &files)?;

    // Compose files: present, uploaded, nothing past the firewall; with
    // every file they include or extend (compose reads those too: what they
    // publish is as open), each as compose reads it (`compose_model`).
    let listed = app
        .compose_files
        .iter()
        .map(|path| needed(project, &root, &rules, &files, path, "compose_files"))
        .collect::<Result<Vec<_>, _>>()?;
    let read = |path: &str| match files.get(path) {
        Some(file) => Ok(file.content.clone()),
        None => Err(not_uploaded(project, &rules, path)),
    };
    let mut compose = compose_model::load(&listed, &env, &read)?;
    let mut compose_files = Vec::new();
    let mut services: BTreeSet<String> = BTreeSet::new();
    let mut rewritten: Vec<String> = Vec::new();
    let mut mounts = Vec::new();
    let mut named_volumes = Vec::new();
    let mut changed = vec![false; compose.len()];
    for (file, changed) in compose.iter_mut().zip(changed.iter_mut()) {
        let invalid = |message: String| ReleaseError::ComposeInvalid {
            path: file.path.clone(),
            message,
        };
        if file.doc.get("services").is_some() {
            let found = port_guard::exposures(&file.doc).map_err(invalid)?;
            let refused: Vec<String> = found
                .iter()
                .filter(|e| {
                    app.public_ports == PublicPorts::Refuse
                        || matches!(e, Exposure::HostNetwork { .. })
                })
                .map(ToString::to_string)
                .collect();
            if !refused.is_empty() {
                return Err(ReleaseError::Exposed {
                    path: file.path.clone(),
                    exposures: refused,
                });
            }
            if !found.is_empty() {
                let notes = port_guard::bind_to_loopback(&mut file.doc).map_err(invalid)?;
                *changed |= !notes.is_empty();
                for note in notes {
                    if !rewritten.contains(&note) {
                        rewritten.push(note);
                    }
                }
            }
            if let Some(defined) = file.doc["services"].as_object() {
                services.extend(defined.keys().cloned());
            }
            mounts.extend(volumes::bind_mounts(&file.doc, &file.dir).map_err(invalid)?);
        }
        named_volumes.extend(volumes::named_volumes(&file.doc));
        if file.listed && !compose_files.contains(&file.path) {
            compose_files.push(file.path.clone());
        }
    }

    // What containers write lives outside releases (see deploy::volumes):
    // the project's files there only seed it, from .vpsup/seed. What compose
    // itself reads must stay in the release: the compose files, the env
    // files it interpolates them with, the services' env_files (those it
    // requires must be there at all).
    let data = volumes::data_paths(&mounts)?;
    let mut compose_reads: Vec<String> = env_files.clone();
    compose_reads.push(".env".to_string());
    for file in &compose {
        compose_reads.push(file.path.clone());
        compose_reads.extend(file.env_files.iter().cloned());
        let invalid = |message: String| ReleaseError::ComposeInvalid {
            path: file.path.clone(),
            message,
        };
        for (path, service, required) in compose_model::service_env_files(file).map_err(invalid)? {
            if required && !files.contains_key(&path) {
                return Err(ReleaseError::Compose(
                    compose_model::ComposeError::Missing {
                        why: not_uploaded(project, &rules, &path),
                        path,
                        by: format!("env_file of service {service} in {}", file.path),
                    },
                ));
            }
            compose_reads.push(path);
        }
    }
    for needed in compose_reads {
        if let Some(path) = data
            .iter()
            .find(|d| volumes::in_data(&needed, std::slice::from_ref(d)))
        {
            if files.contains_key(&needed) {
                return Err(ReleaseError::DataHoldsConfig {
                    path: path.clone(),
                    file: needed,
                });
            }
        }
    }
    let data_dir = AppPaths::new(app.name.as_str()).data_dir();
    for (file, changed) in compose.iter_mut().zip(changed.iter_mut()) {
        *changed |= volumes::rewrite_sources(&mut file.doc, &file.dir, &data, &data_dir);
    }
    for (path, text) in rewritten_files(&compose, &changed)? {
        if let Some(file) = files.get_mut(&path) {
            file.content = text;
        }
    }
    let seeds: Vec<String> = files
        .keys()
        .filter(|p| volumes::in_data(p, &data))
        .cloned()
        .collect();
    for path in &seeds {
        if let Some(mut file) = files.remove(path) {
            file.path = format!("{}/{path}", volumes::SEED_DIR);
            files.insert(file.path.clone(), file);
        }
    }
    named_volumes.sort();
    named_volumes.dedup();

    // Sites: their services exist; each gets a loopback port.
    let mut targets: Vec<Target> = Vec::new();
    for site in sites {
        let check = |service: &str, route: String| {
            if services.contains(service) {
                return Ok(());
            }
            Err(ReleaseError::UnknownService {
                domain: site.domain.0.clone(),
                route,
                service: service.to_string(),
                files: compose_files.join(" + "),
                services: if services.is_empty() {
                    "none".to_string()
                } else {
                    services.iter().cloned().collect::<Vec<_>>().join(", ")
                },
            })
        };
        check(&site.service.0, String::new())?;
        targets.push((site.service.0.clone(), site.port.0));
        for route in &site.routes {
            check(&route.service.0, format!("route {}: ", route.path.0))?;
            targets.push((route.service.0.clone(), route.port.0));
        }
    }
    let mut project_networks: Vec<String> = compose
        .iter()
        .flat_map(|file| volumes::project_scoped(&file.doc, "networks"))
        .collect();
    project_networks.sort();
    project_networks.dedup();
    // Blue/green services get each slot's ports; the rest keep theirs.
    let listed: Vec<ReleaseFile> = files.values().cloned().collect();
    let facts = strategy::service_facts(&compose, &listed).map_err(ReleaseError::Strategy)?;
    let planned = strategy::plan(&facts, sites, &app.services, Running::Nothing)
        .map_err(|e| ReleaseError::Strategy(e.to_string()))?;
    if let Some(why) = strategy::refused(&planned) {
        return Err(ReleaseError::Strategy(why));
    }
    let blue_green = strategy::services_where(&planned, |r| *r == Replace::BlueGreen);
    let all_ports = ports::loopback_ports(app.name.as_str(), &targets);
    let (switched, in_place): (Vec<Target>, Vec<Target>) = targets
        .iter()
        .cloned()
        .partition(|(service, _)| blue_green.contains(service));
    let ports: BTreeMap<Target, u16> = all_ports
        .iter()
        .filter(|(t, _)| in_place.contains(t))
        .map(|(t, p)| (t.clone(), *p))
        .collect();
    // A port vpsup publishes a service on is part of how it runs.
    let mut facts = facts;
    for service in &mut facts {
        let published: Vec<String> = ports
            .iter()
            .filter(|((name, _), _)| *name == service.name)
            .map(|((_, container), host)| format!("127.0.0.1:{host}:{container}"))
            .collect();
        if !published.is_empty() {
            service.fold(&published.join(","));
        }
    }
    let mut taken: Vec<u16> = all_ports.values().copied().collect();
    let mut slot_ports = BTreeMap::new();
    if !switched.is_empty() {
        for slot in [Slot::Blue, Slot::Green] {
            let assigned = ports::slot_ports(app.name.as_str(), slot.name(), &switched, &taken);
            taken.extend(assigned.values());
            slot_ports.insert(slot, assigned);
        }
    }
    files.insert(
        OVERRIDE_FILE.to_string(),
        ReleaseFile {
            path: OVERRIDE_FILE.to_string(),
            content: pretty(&ports::compose_override(&ports)),
            mode: 0o644,
        },
    );
    compose_files.push(OVERRIDE_FILE.to_string());

    // Env files hold secrets more often than not: root's eyes only.
    for path in env_files
        .iter()
        .map(String::as_str)
        .chain(dot_env.then_some(".env"))
    {
        if let Some(file) = files.get_mut(path) {
            file.mode = 0o600;
        }
    }

    let files: Vec<ReleaseFile> = files.into_values().collect();
    let content_hash = content_hash(&files);
    Ok(Release {
        files,
        compose_files,
        env_files,
        ports,
        blue_green,
        slot_ports,
        services: facts,
        project_networks,
        rewritten,
        content_hash,
        data,
        seeded: seeds,
        named_volumes,
        dot_env,
    })
}

impl Release {
    /// The loopback port of every target when the site services run in
    /// `slot` (`None`: in the app's project).
    pub fn ports_in(&self, slot: Option<Slot>) -> BTreeMap<Target, u16> {
        let mut ports = self.ports.clone();
        if let Some(slot_ports) = slot.and_then(|s| self.slot_ports.get(&s)) {
            ports.extend(slot_ports.iter().map(|(t, p)| (t.clone(), *p)));
        }
        ports
    }
}

/// SHA-256 (hex) over each file's path, mode and content, in order; every
/// part length-prefixed, so no two different releases hash alike by framing.
pub fn content_hash(files: &[ReleaseFile]) -> String {
    let mut hash = Sha256::new();
    for file in files {
        hash.update((file.path.len() as u64).to_be_bytes());
        hash.update(file.path.as_bytes());
        hash.update(file.mode.to_be_bytes());
        hash.update((file.content.len() as u64).to_be_bytes());
        hash.update(&file.content);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn pretty(value: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(value).expect("a JSON value serializes");
    out.push(b'\n');
    out
}

/// What compose interpolates the compose files with, in compose_cli's
/// order (a later one wins): the project's `.env` (`dot_env`), the secrets
/// generated on the host, [app] env_files (release paths).
fn compose_env(
    app: &AppConfig,
    dot_env: bool,
    env_files: &[String],
    files: &BTreeMap<String, ReleaseFile>,
) -> Result<Env, ReleaseError> {
    let mut env = Env::default();
    let read = |env: &mut Env, path: &str| {
        let text = String::from_utf8_lossy(&files[path].content).into_owned();
        env.read_env_file(&text)
            .map_err(|message| ReleaseError::EnvFile {
                path: path.to_string(),
                message,
            })
    };
    if dot_env {
        read(&mut env, ".env")?;
    }
    for name in &app.secrets.generate {
        env.set_secret(&name.0);
    }
    for path in env_files {
        read(&mut env, path)?;
    }
    Ok(env)
}

/// The new text of each compose file vpsup changed (`changed`, by position).
/// Compose may read one file twice (included from two places), which must
/// then come out the same.
fn rewritten_files(
    compose: &[compose_model::ComposeFile],
    changed: &[bool],
) -> Result<BTreeMap<String, Vec<u8>>, ReleaseError> {
    let rewrites: BTreeSet<&str> = compose
        .iter()
        .zip(changed)
        .filter(|(_, changed)| **changed)
        .map(|(file, _)| file.path.as_str())
        .collect();
    let mut texts: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for file in compose
        .iter()
        .filter(|f| rewrites.contains(f.path.as_str()))
    {
        let text = file.text();
        if texts.get(&file.path).is_some_and(|other| *other != text) {
            return Err(ReleaseError::ComposeInvalid {
                path: file.path.clone(),
                message: "compose reads this file twice, from different directories or with different variables, and vpsup would rewrite it differently for each (ports bound to loopback, data paths): give each use its own file".to_string(),
            });
        }
        texts.insert(file.path.clone(), text);
    }
    Ok(texts)
}

/// Why compose on the host could not read `path` (a release path that is
/// not among the release's files).
fn not_uploaded(project: &Path, rules: &Rules, path: &str) -> String {
    let full = project.join(path);
    if !full.exists() {
        return "does not exist".to_string();
    }
    match rules.skipped(Path::new(path), full.is_dir()) {
        Some(reason) => format!("is not uploaded ({reason}): stop excluding it"),
        None => "is not a regular file".to_string(),
    }
}

/// A file the host needs (`[app] compose_files`, `env_files`): inside the
/// project, present, and uploaded. Its release path.
fn needed(
    project: &Path,
    root: &Path,
    rules: &Rules,
    files: &BTreeMap<String, ReleaseFile>,
    path: &Path,
    field: &'static str,
) -> Result<String, ReleaseError> {
    let rel = project_relative(project, root, path)
        .filter(|r| !r.as_os_str().is_empty())
        .ok_or_else(|| ReleaseError::OutsideProject {
            field,
            path: path.to_path_buf(),
            project: project.to_path_buf(),
        })?;
    let rel_text = slash(&rel);
    if files.contains_key(&rel_text) {
        return Ok(rel_text);
    }
    if !project.join(&rel).is_file() {
        return Err(if field == "env_files" {
            ReleaseError::MissingEnvFile {
                path: rel_text,
                project: project.to_path_buf(),
            }
        } else {
            ReleaseError::MissingComposeFile {
                path: rel_text,
                project: project.to_path_buf(),
            }
        });
    }
    Err(ReleaseError::NeededButSkipped {
        field,
        path: rel_text,
        reason: rules
            .skipped(&rel, false)
            .unwrap_or_else(|| "it is not a regular file".to_string()),
    })
}

/// `path` (absolute, or relative to the project) relative to the project,
/// normalised; `None` when it is outside.
fn project_relative(project: &Path, root: &Path, path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() {
        return normalize(path);
    }
    if let Some(rel) = [project, root]
        .iter()
        .find_map(|base| path.strip_prefix(base).ok())
    {
        return normalize(rel);
    }
    let real = fs::canonicalize(path).ok()?;
    normalize(real.strip_prefix(root).ok()?)
}

/// Lexically: `./a/../b` is `b`; `None` for anything climbing out.
pub(crate) fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn slash(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// `path` (relative to the project, or absolute) relative to the project:
/// as written, and as resolved (its real path, through any symlink), when
/// inside it.
fn as_written_and_resolved(project: &Path, root: &Path, path: &Path) -> Vec<PathBuf> {
    let resolved = if path.is_absolute() {
        path.to_path_buf()
    } else {
        project.join(path)
    };
    let candidates = [
        project_relative(project, root, path),
        fs::canonicalize(&resolved)
            .ok()
            .and_then(|real| real.strip_prefix(root).ok().and_then(normalize)),
    ];
    let mut out: Vec<PathBuf> = Vec::new();
    for rel in candidates.into_iter().flatten() {
        if !rel.as_os_str().is_empty() && !out.contains(&rel) {
            out.push(rel);
        }
    }
    out
}

/// What a PEM armor line or a PuTTY key file says it holds, when `content`
/// holds a private key: `OPENSSH PRIVATE KEY`, `PRIVATE KEY`, `PuTTY key`.
/// Key material must follow the armor line, so code that merely names the
/// header (a PEM parser) is no private key.
fn private_key_in(content: &[u8]) -> Option<String> {
    static KEY: std::sync::LazyLock<regex::bytes::Regex> = std::sync::LazyLock::new(|| {
        regex::bytes::Regex::new(
            r"(?s-u)-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----.{0,300}?[A-Za-z0-9+/]{40}|(?m-u)^PuTTY-User-Key-File-[0-9]+: ",
        )
        .expect("a valid pattern")
    });
    let found = KEY.captures(content)?;
    Some(found.get(1).map_or("PuTTY key".to_string(), |kind| {
        String::from_utf8_lossy(kind.as_bytes()).into_owned()
    }))
}

/// What stays home.
struct Rules {
    /// The caller's (secrets), project-relative, with what names them.
    excluded: Vec<(PathBuf, String)>,
    /// From `.vpsupignore`.
    ignored: Vec<PathBuf>,
}

impl Rules {
    fn new(project: &Path, root: &Path, keep_home: &[PrivateFile]) -> Result<Rules, ReleaseError> {
        let mut excluded: Vec<(PathBuf, String)> = Vec::new();
        for file in keep_home {
            // Both as written and as resolved: a secret reached through a
            // symlinked directory is still that secret.
            for rel in as_written_and_resolved(project, root, &file.path) {
                if !excluded.iter().any(|(e, _)| *e == rel) {
                    excluded.push((rel, file.named_by.clone()));
                }
            }
        }
        let ignore_path = root.join(IGNORE_FILE);
        let text = match fs::read_to_string(&ignore_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(ReleaseError::Io {
                    path: ignore_path,
                    source,
                })
            }
        };
        let mut ignored = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let entry = line.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let bad = |why| ReleaseError::BadIgnore {
                line: n + 1,
                text: line.to_string(),
                why,
            };
            if entry.starts_with('!') || entry.contains(['*', '?']) {
                return Err(bad("patterns are not supported: list paths (a directory covers everything under it)"));
            }
            let rel = normalize(Path::new(entry.trim_start_matches('/')))
                .ok_or_else(|| bad("the path climbs out of the project"))?;
            if rel.as_os_str().is_empty() {
                return Err(bad("that is the whole project"));
            }
            ignored.push(rel);
        }
        Ok(Rules { excluded, ignored })
    }

    /// Why `rel` is not uploaded, if it is not.
    fn skipped(&self, rel: &Path, is_dir: bool) -> Option<String> {
        if let Some((_, named_by)) = self.excluded.iter().find(|(e, _)| rel.starts_with(e)) {
            return Some(format!("{named_by}: it stays on this machine"));
        }
        let parts: Vec<_> = rel.components().collect();
        let in_skipped_dir = parts.iter().enumerate().any(|(i, c)| {
            (i + 1 < parts.len() || is_dir) && SKIPPED_DIRS.iter().any(|d| c.as_os_str() == *d)
        });
        if in_skipped_dir {
            return Some(
                "vpsup never uploads .git, .vpsup, target, node_modules or __pycache__".into(),
            );
        }
        if parts.len() == 1 && SKIPPED_ROOT_FILES.iter().any(|f| rel == Path::new(f)) {
            return Some("vpsup never uploads vpsup.toml or .vpsupignore".into());
        }
        if self.ignored.iter().any(|e| rel.starts_with(e)) {
            return Some("it is listed in .vpsupignore".into());
        }
        None
    }
}

/// A file found by the walk.
struct Entry {
    rel: String,
    /// Where to read it (a symlink's resolved target).
    source: PathBuf,
    len: u64,
    mode: u32,
}

struct Walk<'a> {
    root: &'a Path,
    rules: &'a Rules,
    found: Vec<Entry>,
}

impl Walk<'_> {
    /// Walks `dir` (canonical), whose release path is `rel`; `ancestry` holds
    /// the canonical directories being walked, to catch symlink loops.
    fn dir(
        &mut self,
        dir: &Path,
        rel: &str,
        ancestry: &mut Vec<PathBuf>,
    ) -> Result<(), ReleaseError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReleaseError::Io { path, source }
        };
        let mut names: Vec<_> = fs::read_dir(dir)
            .map_err(io(dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io(dir))?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let name = name
                .to_str()
                .filter(|n| !n.chars().any(char::is_control))
                .ok_or_else(|| ReleaseError::BadName { path: path.clone() })?;
            let child_rel = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let meta = fs::symlink_metadata(&path).map_err(io(&path))?;
            if meta.file_type().is_symlink() {
                // The link's own name decides first: an ignored link is not
                // even resolved.
                let is_dir = fs::metadata(&path).is_ok_and(|m| m.is_dir());
                if self.rules.skipped(Path::new(&child_rel), is_dir).is_some() {
                    continue;
                }
                let target = fs::canonicalize(&path).map_err(|_| ReleaseError::SymlinkBroken {
                    link: child_rel.clone(),
                })?;
                let Ok(target_rel) = target.strip_prefix(self.root) else {
                    return Err(ReleaseError::SymlinkOutside {
                        link: child_rel,
                        target,
                    });
                };
                let meta = fs::metadata(&target).map_err(io(&target))?;
                if let Some(reason) = self.rules.skipped(target_rel, meta.is_dir()) {
                    return Err(ReleaseError::SymlinkToSkipped {
                        link: child_rel,
                        target: slash(target_rel),
                        reason,
                    });
                }
                if meta.is_dir() {
                    if ancestry.contains(&target) {
                        return Err(ReleaseError::SymlinkLoop { link: child_rel });
                    }
                    ancestry.push(target.clone());
                    self.dir(&target, &child_rel, ancestry)?;
                    ancestry.pop();
                } else {
                    self.file(child_rel, target, &meta)?;
                }
                continue;
            }
            // Under a symlinked directory the release path hides the real
            // one: either being skipped keeps the file home.
            let real = path.strip_prefix(self.root).unwrap_or(&path);
            if self
                .rules
                .skipped(Path::new(&child_rel), meta.is_dir())
                .or_else(|| self.rules.skipped(real, meta.is_dir()))
                .is_some()
            {
                continue;
            }
            if meta.is_dir() {
                ancestry.push(path.clone());
                self.dir(&path, &child_rel, ancestry)?;
                ancestry.pop();
            } else {
                self.file(child_rel, path, &meta)?;
            }
        }
        Ok(())
    }

    fn file(
        &mut self,
        rel: String,
        source: PathBuf,
        meta: &fs::Metadata,
    ) -> Result<(), ReleaseError> {
        if !meta.is_file() {
            return Err(ReleaseError::SpecialFile { path: rel });
        }
        let mode = if meta.permissions().mode() & 0o100 != 0 {
            0o755
        } else {
            0o644
        };
        self.found.push(Entry {
            rel,
            source,
            len: meta.len(),
            mode,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const COMPOSE: &str = "\
services:
  web:
    build: .
  db:
    image: postgres:16
    ports:
      - \"5432:5432\"
";

    fn write(dir: &Path, rel: &str, content: &str) {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        write(p, "compose.yml", COMPOSE);
        write(p, "Dockerfile", "FROM nginx\n");
        write(p, "static/index.html", "<h1>hi</h1>\n");
        write(p, "entrypoint.sh", "#!/bin/sh\nexec \"$@\"\n");
        fs::set_permissions(p.join("entrypoint.sh"), fs::Permissions::from_mode(0o700)).unwrap();
        write(p, ".env", "GREETING=hi\n");
        write(p, ".git/HEAD", "ref: refs/heads/main\n");
        write(p, "node_modules/x/index.js", "module.exports = 1\n");
        write(p, "web/__pycache__/app.pyc", "bytecode");
        write(p, "notes/todo.md", "private\n");
        write(p, "secrets/dns.ini", "key = secret\n");
        write(p, "vpsup.toml", "[app]\nname = \"doctor\"\n");
        write(p, ".vpsupignore", "# not for the hosts\nnotes/\n\n");
        dir
    }

    /// A file the config names as this machine's own.
    fn home(path: impl Into<PathBuf>) -> PrivateFile {
        PrivateFile {
            named_by: "[acme.dns] secret_file".to_string(),
            path: path.into(),
        }
    }

    fn app(extra: &str) -> AppConfig {
        toml::from_str(&format!("name = \"doctor\"\n{extra}")).unwrap()
    }

    fn site(service: &str, extra: &str) -> SiteConfig {
        toml::from_str(&format!(
            "domain = \"doctor.example.com\"\nservice = \"{service}\"\nport = 80\n{extra}"
        ))
        .unwrap()
    }

    fn loopback() -> AppConfig {
        app("public_ports = \"loopback\"")
    }

    fn file<'a>(release: &'a Release, path: &str) -> &'a ReleaseFile {
        release
            .files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} not in the release"))
    }

    #[test]
    fn public_ports_are_refused_by_default_with_the_fix() {
        let dir = project();
        let err = collect(dir.path(), &app(""), &[site("web", "")], &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("compose.yml exposes containers"), "{err}");
        assert!(err.contains("service db publishes \"5432:5432\""), "{err}");
        assert!(err.contains("127.0.0.1:5432:5432"), "{err}");
        assert!(err.contains("public_ports = \"loopback\""), "{err}");
    }

    #[test]
    fn loopback_rewrites_the_uploaded_compose_file() {
        let dir = project();
        let release = collect(dir.path(), &loopback(), &[site("web", "")], &[]).unwrap();
        assert_eq!(release.rewritten, ["db: 5432:5432 -> 127.0.0.1:5432:5432"]);
        let uploaded = file(&release, "compose.yml");
        let doc: Value =
            serde_saphyr::from_str(std::str::from_utf8(&uploaded.content).unwrap()).unwrap();
        assert_eq!(doc["services"]["db"]["ports"][0], "127.0.0.1:5432:5432");
        assert_eq!(doc["services"]["web"]["build"], ".");
        assert!(port_guard::exposures(&doc).unwrap().is_empty());
    }

    /// `include:` and `extends: { file }` cannot carry a published port past
    /// the guard: the files they name are checked (and, with loopback,
    /// rewritten) too, but stay out of the `-f` list (compose reads them).
    #[test]
    fn included_and_extended_files_are_guarded_too() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        write(
            p,
            "compose.yml",
            "include: [db.yml]\nservices:\n  web:\n    extends: { file: common/base.yml, service: base }\n",
        );
        write(
            p,
            "db.yml",
            "services:\n  db:\n    image: postgres:17\n    ports: [\"5432:5432\"]\n",
        );
        write(
            p,
            "common/base.yml",
            "services:\n  base:\n    image: nginx\n    ports: [\"8080:80\"]\n",
        );
        let err = collect(p, &app(""), &[], &[]).unwrap_err().to_string();
        assert!(err.starts_with("db.yml exposes containers"), "{err}");
        assert!(err.contains("service db publishes \"5432:5432\""), "{err}");

        let release = collect(p, &loopback(), &[], &[]).unwrap();
        assert_eq!(release.compose_files, ["compose.yml", OVERRIDE_FILE]);
        let mut rewritten = release.rewritten.clone();
        rewritten.sort();
        assert_eq!(
            rewritten,
            [
                "base: 8080:80 -> 127.0.0.1:8080:80",
                "db: 5432:5432 -> 127.0.0.1:5432:5432"
            ]
        );
        for path in ["db.yml", "common/base.yml"] {
            let doc: Value =
                serde_saphyr::from_str(std::str::from_utf8(&file(&release, path).content).unwrap())
                    .unwrap();
            assert!(port_guard::exposures(&doc).unwrap().is_empty(), "{path}");
        }

        // A file outside the project is no way around it either.
        write(
            p,
            "compose.yml",
            "include: [../elsewhere.yml]\nservices: {}\n",
        );
        assert!(collect(p, &loopback(), &[], &[]).is_err());
    }

    #[test]
    fn host_network_is_refused_even_with_loopback() {
        let dir = project();
        write(
            dir.path(),
            "compose.yml",
            "services:\n  web:\n    image: nginx\n    network_mode: host\n",
        );
        let err = collect(dir.path(), &loopback(), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("service web uses network_mode: host"), "{err}");
    }

    /// A writable bind mount inside the project is the app's data: the
    /// compose file points it at /srv/vpsup/<app>/data, and the project's
    /// files there only seed it; a read-only one stays in the release. The
    /// project's `.env` is read (compose skips it beside --env-file) and,
    /// like env files, is 0600.
    #[test]
    fn writable_bind_mounts_become_the_apps_data_outside_releases() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        write(
            p,
            "compose.yml",
            "services:\n  db:\n    image: postgres:16\n    volumes:\n      - ./pgdata:/var/lib/postgresql/data\n      - ./initdb:/docker-entrypoint-initdb.d:ro\n      - dbsock:/run/postgresql\nvolumes:\n  dbsock:\n",
        );
        write(p, "pgdata/README", "seed\n");
        write(p, "initdb/01.sql", "create table t();\n");
        write(p, ".env", "A=1\n");
        let release = collect(p, &app(""), &[], &[]).unwrap();
        assert_eq!(release.data, ["pgdata"]);
        assert_eq!(release.seeded, ["pgdata/README"]);
        assert_eq!(release.named_volumes, ["dbsock"]);
        let paths: Vec<&str> = release.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                ".env",
                ".vpsup/seed/pgdata/README",
                "compose.yml",
                "initdb/01.sql",
                OVERRIDE_FILE
            ]
        );
        let compose: Value =
            serde_json::from_slice(&file(&release, "compose.yml").content).unwrap();
        assert_eq!(
            compose["services"]["db"]["volumes"],
            serde_json::json!([
                "/srv/vpsup/doctor/data/pgdata:/var/lib/postgresql/data",
                "./initdb:/docker-entrypoint-initdb.d:ro",
                "dbsock:/run/postgresql"
            ])
        );
        assert!(release.dot_env);
        assert_eq!(file(&release, ".env").mode, 0o600);
        assert_eq!(file(&release, "initdb/01.sql").mode, 0o644);

        write(
            p,
            "compose.yml",
            "services:\n  app:\n    image: x\n    volumes: [\"./.env:/app/.env\"]\n",
        );
        let err = collect(p, &app(""), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("it holds .env, which compose reads"), "{err}");
        write(
            p,
            "compose.yml",
            "services:\n  app:\n    image: x\n    volumes: [\".:/app\"]\n",
        );
        let err = collect(p, &app(""), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("mounts the whole project"), "{err}");
    }

    /// `network_mode` and ports as compose interpolates them, with the
    /// variables of `.env` and [app] env_files: `${NET:-host}` is host
    /// networking unless a variable says otherwise.
    #[test]
    fn interpolated_host_network_and_ports_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        write(
            p,
            "compose.yml",
            "services:\n  web:\n    image: nginx\n    network_mode: \"${NET:-host}\"\n",
        );
        for (dot_env, env_files, refused) in [
            ("", "", true),
            ("NET=host\n", "", true),
            ("NET=bridge\n", "", false),
            ("NET=bridge\n", "env_files = [\"prod.env\"]", true),
        ] {
            write(p, ".env", dot_env);
            write(p, "prod.env", "NET=host\n");
            let result = collect(p, &app(env_files), &[], &[]);
            match result {
                Err(e) if refused => {
                    let e = e.to_string();
                    assert!(e.contains("service web uses network_mode: host"), "{e}");
                }
                Ok(_) if !refused => {}
                other => panic!("{dot_env:?} {env_files:?}: {other:?}"),
            }
        }
        // A secret generated on the host cannot be known here: refused, named.
        write(p, ".env", "");
        let err = collect(p, &app("[secrets]\ngenerate = [\"NET\"]"), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("service web: network_mode"), "{err}");
        assert!(err.contains("a secret [app.secrets] generates"), "{err}");

        write(
            p,
            "compose.yml",
            "services:\n  db:\n    image: postgres\n    ports: [\"${DB_PORT:-5432}:5432\"]\n    environment: { PGPORT: \"${DB_PORT:-5432}\" }\n",
        );
        let err = collect(p, &app(""), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("service db publishes \"5432:5432\""), "{err}");
        let release = collect(p, &loopback(), &[], &[]).unwrap();
        assert_eq!(release.rewritten, ["db: 5432:5432 -> 127.0.0.1:5432:5432"]);
        let uploaded: Value =
            serde_json::from_slice(&file(&release, "compose.yml").content).unwrap();
        assert_eq!(
            uploaded["services"]["db"]["ports"][0],
            "127.0.0.1:5432:5432"
        );
        // What vpsup does not read stays for compose to interpolate.
        assert_eq!(
            uploaded["services"]["db"]["environment"]["PGPORT"],
            "${DB_PORT:-5432}"
        );
    }

    /// In a file included from a subdirectory, relative paths are that
    /// directory's (compose's rule): `./data` there is `db/data` in the
    /// project, the app's data, and its env_file `db/db.env` must travel. A
    /// listed file's paths (includes too) are the project directory's,
    /// wherever the file is.
    #[test]
    fn an_included_files_paths_resolve_from_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        write(
            p,
            "deploy/compose.yml",
            "include: [db/compose.yml]\nservices: {}\n",
        );
        write(
            p,
            "db/compose.yml",
            "services:\n  db:\n    image: postgres\n    env_file: db.env\n    volumes: [\"./data:/var/lib/postgresql/data\", \"../shared/conf:/etc/conf:ro\"]\n",
        );
        write(p, "db/db.env", "POSTGRES_DB=shop\n");
        write(p, "db/data/PG_VERSION", "17\n");
        write(p, "shared/conf/x.conf", "x\n");
        let app = app("compose_files = [\"deploy/compose.yml\"]");
        let release = collect(p, &app, &[], &[]).unwrap();
        assert_eq!(release.data, ["db/data"]);
        assert_eq!(release.seeded, ["db/data/PG_VERSION"]);
        let uploaded: Value =
            serde_json::from_slice(&file(&release, "db/compose.yml").content).unwrap();
        assert_eq!(
            uploaded["services"]["db"]["volumes"],
            serde_json::json!([
                "/srv/vpsup/doctor/data/db/data:/var/lib/postgresql/data",
                "../shared/conf:/etc/conf:ro"
            ])
        );
        assert_eq!(file(&release, "db/db.env").content, b"POSTGRES_DB=shop\n");

        // The env_file compose needs is refused when it would not travel...
        write(p, ".vpsupignore", "db/db.env\n");
        let err = collect(p, &app, &[], &[]).unwrap_err().to_string();
        assert_eq!(
            err,
            "db/db.env (env_file of service db in db/compose.yml) is not uploaded (it is listed in .vpsupignore): stop excluding it"
        );
        // ...or would be data, kept from every later release.
        write(p, ".vpsupignore", "");
        write(
            p,
            "db/compose.yml",
            "services:\n  db:\n    image: postgres\n    env_file: data/db.env\n    volumes: [\"./data:/var/lib/postgresql/data\"]\n",
        );
        write(p, "db/data/db.env", "A=1\n");
        let err = collect(p, &app, &[], &[]).unwrap_err().to_string();
        assert!(
            err.contains("./db/data is mounted writable")
                && err.contains("it holds db/data/db.env"),
            "{err}"
        );
    }

    #[test]
    fn release_files_exclusions_modes_and_override() {
        let dir = project();
        let p = dir.path();
        let secret = p.join("secrets/dns.ini");
        // db publishes ports of its own: behind a route it runs in place
        // (recreated), and web switches blue/green.
        let switching = app("public_ports = \"loopback\"\nenv_files = [\".env\"]");
        let app = app("public_ports = \"loopback\"\nenv_files = [\".env\"]\nservices = { db = { strategy = \"recreate\" } }");
        let sites = [site(
            "web",
            "[[routes]]\npath = \"/db/\"\nservice = \"db\"\nport = 5432\n",
        )];
        let refused = collect(p, &switching, &sites, &[home(secret.clone())])
            .unwrap_err()
            .to_string();
        assert!(
            refused.starts_with("zero-downtime deploys cannot switch these services (vpsup.toml [app.services]):\n  - db is behind a site and publishes ports of its own"),
            "{refused}"
        );
        let release = collect(p, &app, &sites, &[home(secret)]).unwrap();
        let paths: Vec<&str> = release.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                ".env",
                "Dockerfile",
                "compose.yml",
                "entrypoint.sh",
                "static/index.html",
                OVERRIDE_FILE
            ]
        );
        assert_eq!(file(&release, "entrypoint.sh").mode, 0o755);
        assert_eq!(file(&release, "Dockerfile").mode, 0o644);
        assert_eq!(file(&release, OVERRIDE_FILE).mode, 0o644);
        assert_eq!(release.compose_files, ["compose.yml", OVERRIDE_FILE]);
        assert_eq!(release.env_files, [".env"]);

        let db = release.ports[&("db".to_string(), 5432)];
        assert_eq!(release.ports.len(), 1);
        assert_eq!(release.blue_green, ["web"]);
        let blue = release.slot_ports[&Slot::Blue][&("web".to_string(), 80)];
        let green = release.slot_ports[&Slot::Green][&("web".to_string(), 80)];
        assert!(blue != green && blue != db && green != db);
        assert_eq!(release.ports_in(Some(Slot::Green)).len(), 2);
        // The app's project publishes what runs in place; each slot its own.
        let ov: Value = serde_json::from_slice(&file(&release, OVERRIDE_FILE).content).unwrap();
        assert_eq!(
            ov,
            serde_json::json!({"services": {
                "db": {"ports": [format!("127.0.0.1:{db}:5432")]},
            }})
        );

        // Relative excludes work too, directories included.
        let release = collect(p, &app, &sites, &[home("static")]).unwrap();
        assert!(release.files.iter().all(|f| !f.path.starts_with("static")));
    }

    #[test]
    fn a_site_naming_a_missing_service_fails() {
        let dir = project();
        let err = collect(dir.path(), &loopback(), &[site("api", "")], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "[[sites]] doctor.example.com: service \"api\" is not in compose.yml (services: db, web)"
            ),
            "{err}"
        );
        let route = site(
            "web",
            "[[routes]]\npath = \"/api/\"\nservice = \"backend\"\nport = 8000\n",
        );
        let err = collect(dir.path(), &loopback(), &[route], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("doctor.example.com: route /api/: service \"backend\" is not in"),
            "{err}"
        );
    }

    #[test]
    fn the_hash_follows_the_content() {
        let dir = project();
        let sites = [site("web", "")];
        let first = collect(dir.path(), &loopback(), &sites, &[]).unwrap();
        let again = collect(dir.path(), &loopback(), &sites, &[]).unwrap();
        assert_eq!(first.content_hash, again.content_hash);
        assert_eq!(first.content_hash.len(), 64);
        write(dir.path(), "static/index.html", "<h1>hI</h1>\n");
        let changed = collect(dir.path(), &loopback(), &sites, &[]).unwrap();
        assert_ne!(first.content_hash, changed.content_hash);
        // An ignored file changing changes nothing.
        write(dir.path(), "notes/todo.md", "still private\n");
        let ignored = collect(dir.path(), &loopback(), &sites, &[]).unwrap();
        assert_eq!(changed.content_hash, ignored.content_hash);
        // The executable bit counts.
        fs::set_permissions(
            dir.path().join("Dockerfile"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let mode = collect(dir.path(), &loopback(), &sites, &[]).unwrap();
        assert_ne!(changed.content_hash, mode.content_hash);
    }

    #[test]
    fn symlinks_inside_are_followed_outside_refused() {
        let dir = project();
        let p = dir.path();
        symlink("static/index.html", p.join("index.html")).unwrap();
        symlink("static", p.join("public")).unwrap();
        let release = collect(p, &loopback(), &[], &[]).unwrap();
        assert_eq!(file(&release, "index.html").content, b"<h1>hi</h1>\n");
        assert_eq!(
            file(&release, "public/index.html").content,
            b"<h1>hi</h1>\n"
        );

        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "id_rsa", "private key\n");
        symlink(outside.path().join("id_rsa"), p.join("id_rsa")).unwrap();
        let err = collect(p, &loopback(), &[], &[]).unwrap_err().to_string();
        assert!(
            err.starts_with("symlink id_rsa points outside the project"),
            "{err}"
        );
        // Listed in .vpsupignore: not even resolved.
        write(p, ".vpsupignore", "notes\n/id_rsa\n");
        let release = collect(p, &loopback(), &[], &[]).unwrap();
        assert!(release.files.iter().all(|f| f.path != "id_rsa"));
    }

    #[test]
    fn symlinks_to_secrets_and_loops_are_refused() {
        let dir = project();
        let p = dir.path();
        symlink("secrets/dns.ini", p.join("config.ini")).unwrap();
        let err = collect(p, &loopback(), &[], &[home(p.join("secrets/dns.ini"))])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("symlink config.ini points at secrets/dns.ini, which is not uploaded ([acme.dns] secret_file: it stays on this machine)"),
            "{err}"
        );
        fs::remove_file(p.join("config.ini")).unwrap();
        symlink("..", p.join("static/up")).unwrap();
        let err = collect(p, &loopback(), &[], &[]).unwrap_err().to_string();
        assert!(
            err.contains("symlink static/up points at a directory that contains it"),
            "{err}"
        );
    }

    /// A symlinked directory is no way around an exclusion: neither a
    /// secret the config names (`conf -> secrets`) nor a path .vpsupignore
    /// lists travels under the link's name.
    #[test]
    fn a_symlinked_directory_carries_no_secret_and_no_ignored_file() {
        let dir = project();
        let p = dir.path();
        symlink("secrets", p.join("conf")).unwrap();
        write(p, "static/drafts/next.html", "<h1>soon</h1>\n");
        write(p, ".vpsupignore", "notes/\nstatic/drafts\n");
        symlink("static", p.join("public")).unwrap();
        let release = collect(p, &loopback(), &[], &[home("secrets/dns.ini")]).unwrap();
        let paths: Vec<&str> = release.files.iter().map(|f| f.path.as_str()).collect();
        assert!(
            !paths
                .iter()
                .any(|f| f.ends_with("dns.ini") || f.contains("drafts")),
            "{paths:?}"
        );
        assert!(paths.contains(&"public/index.html"), "{paths:?}");
        // Named through the link, the secret is the same file.
        let release = collect(p, &loopback(), &[], &[home("conf/dns.ini")]).unwrap();
        assert!(release.files.iter().all(|f| !f.path.ends_with("dns.ini")));
    }

    fn openssh_private_key() -> String {
        use russh::keys::ssh_key::{private::Ed25519Keypair, LineEnding, PrivateKey};
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&[7; 32]));
        key.to_openssh(LineEnding::LF).unwrap().to_string()
    }

    fn pkcs8_private_key() -> String {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem()
    }

    /// A private key in the project is refused, naming each file and what
    /// it holds, unless `[app] allow_private_keys` lists it (or a directory
    /// holding it, by its path in the release or its real path); one the
    /// config names as this machine's (an identity file) is simply not
    /// uploaded. Public keys, certificates and code that only names the
    /// PEM header are no private keys.
    #[test]
    fn private_keys_are_refused_unless_allowed() {
        let dir = project();
        let p = dir.path();
        write(p, "deploy_key", &openssh_private_key());
        write(p, "certs/client.key", &pkcs8_private_key());
        write(p, "deploy_key.pub", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops\n");
        write(p, "certs/ca.pem", "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUOo1DuUuVCCkI3yJ3ZqKqZ0eC0RYwCgYIKoZIzj0EAwIw\n-----END CERTIFICATE-----\n");
        write(p, "app/pem.py", "HEADER = \"-----BEGIN PRIVATE KEY-----\"\n\ndef is_key(text):\n    return text.startswith(HEADER)\n");
        let err = collect(p, &loopback(), &[], &[]).unwrap_err();
        assert!(matches!(err, ReleaseError::PrivateKeys { .. }), "{err}");
        let err = err.to_string();
        assert!(
            err.starts_with("vpsup does not upload private keys to hosts, and the release holds certs/client.key (PRIVATE KEY), deploy_key (OPENSSH PRIVATE KEY): "),
            "{err}"
        );
        assert!(err.contains("[app] allow_private_keys"), "{err}");

        // The login key the config names stays home; the app's own key is allowed.
        let allowing = app("public_ports = \"loopback\"\nallow_private_keys = [\"./certs/\"]");
        let release = collect(p, &allowing, &[], &[home("deploy_key")]).unwrap();
        let paths: Vec<&str> = release.files.iter().map(|f| f.path.as_str()).collect();
        assert!(paths.contains(&"certs/client.key"), "{paths:?}");
        assert!(!paths.contains(&"deploy_key"), "{paths:?}");
        assert!(
            paths.contains(&"deploy_key.pub") && paths.contains(&"app/pem.py"),
            "{paths:?}"
        );

        // Allowed by its real path, under another name too; not by a neighbour's.
        symlink("certs/client.key", p.join("client.key")).unwrap();
        let by_file =
            app("public_ports = \"loopback\"\nallow_private_keys = [\"certs/client.key\"]");
        let release = collect(p, &by_file, &[], &[home("deploy_key")]).unwrap();
        assert!(release.files.iter().any(|f| f.path == "client.key"));
        let other = app("public_ports = \"loopback\"\nallow_private_keys = [\"certs/ca.pem\"]");
        let err = collect(p, &other, &[], &[home("deploy_key")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("holds certs/client.key (PRIVATE KEY), client.key (PRIVATE KEY):"),
            "{err}"
        );
    }

    #[test]
    fn private_keys_are_recognised_by_their_armor_and_material() {
        for (text, kind) in [
            (openssh_private_key(), Some("OPENSSH PRIVATE KEY")),
            (pkcs8_private_key(), Some("PRIVATE KEY")),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0F3E\n\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n".to_string(),
                Some("RSA PRIVATE KEY"),
            ),
            // In an env file, on one line.
            (
                "JWT_KEY=\"-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oXjQbVSSgMBRoAoGCCqGSM49\\n\"\n".to_string(),
                Some("EC PRIVATE KEY"),
            ),
            (
                "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n".to_string(),
                Some("PuTTY key"),
            ),
            ("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n".to_string(), None),
            ("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEu1SU1LfVLPHCozMxH2Mo4lgOEePz\n".to_string(), None),
        ] {
            assert_eq!(private_key_in(text.as_bytes()).as_deref(), kind, "{text}");
        }
    }

    #[test]
    fn needed_files_must_exist_and_travel() {
        let dir = project();
        let p = dir.path();
        let err = collect(
            p,
            &app("compose_files = [\"docker-compose.yml\"]"),
            &[],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("docker-compose.yml does not exist (listed in [app] compose_files"),
            "{err}"
        );
        let err = collect(
            p,
            &app("public_ports = \"loopback\"\nenv_files = [\"prod.env\"]"),
            &[],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("prod.env does not exist (listed in [app] env_files"),
            "{err}"
        );
        let err = collect(
            p,
            &app("public_ports = \"loopback\"\nenv_files = [\".env\"]"),
            &[],
            &[home(".env")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(".env (in [app] env_files) is needed on the host but is not uploaded"),
            "{err}"
        );
        let err = collect(
            p,
            &app("public_ports = \"loopback\"\nenv_files = [\"/etc/passwd\"]"),
            &[],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("outside the project directory"), "{err}");
    }

    #[test]
    fn an_own_override_file_and_a_heavy_project_are_refused() {
        let dir = project();
        let p = dir.path();
        let err = collect_with_limit(p, &loopback(), &[], &[], 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("over the 0 MB limit"), "{err}");
        assert!(err.contains(".vpsupignore"), "{err}");
        assert!(err.contains("compose.yml ("), "{err}");
        write(p, OVERRIDE_FILE, "{}");
        let err = collect(p, &loopback(), &[], &[]).unwrap_err().to_string();
        assert!(
            err.starts_with("the project has its own vpsup.override.json"),
            "{err}"
        );
    }

    #[test]
    fn ignore_file_rejects_patterns() {
        let dir = project();
        write(dir.path(), ".vpsupignore", "*.log\n");
        let err = collect(dir.path(), &loopback(), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(".vpsupignore line 1: patterns are not supported"),
            "{err}"
        );
    }
}
