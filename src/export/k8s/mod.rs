//! `vpsup export k8s`: the project as a Kustomize tree a Kubernetes engineer
//! would write by hand. Pure: `plan` takes the facts (vpsup.toml, the
//! compose model, the env files' variable names, and what `--host`
//! measured) and returns the files. The rules, each tested below or in its
//! module: stateless services are Deployments and stateful ones (a database,
//! or anything mounting a named volume or the app's data) StatefulSets with
//! claims sized from what the data holds now; every workload has a
//! readiness probe and a more tolerant liveness probe (`probes`); each site
//! is an Ingress (`ingress`); secrets are Secrets from files in a
//! git-ignored `secrets/` directory, never values in a manifest (`env`).

pub mod command;
pub mod compose;
pub mod env;
pub mod gather;
pub mod ingress;
pub mod probes;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::backup::engines::{mongo, mysql, postgres, redis};
use crate::backup::host_settings::files_dir;
use crate::backup::restic::{HostFiles, HostKeys, Location, Repository};
use crate::backup::schedule::Schedule;
use crate::backup::{detect, plan as backup_plan, Engine};
use crate::config::{AppConfig, BackupConfig, SiteConfig};
use crate::deploy::interpolate::Env;
use env::SecretKeys;
use probes::{Check, Timing};

/// The Kubernetes version every manifest is validated against (tests/export_k8s.rs).
pub const KUBERNETES_VERSION: &str = "1.31";
/// Images the export adds: waiting for a port, dumping through `kubectl exec`, restic.
const WAIT_IMAGE: &str = "busybox:1.36";
const KUBECTL_IMAGE: &str = "bitnami/kubectl:1.31";
const RESTIC_IMAGE: &str = "restic/restic:0.18.0";
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Flags of `vpsup export k8s`, resolved.
#[derive(Debug, Clone)]
pub struct Options {
    pub namespace: String,
    pub storage_class: Option<String>,
    pub issuer: String,
}

/// What `--host` measured (see `gather`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measured {
    pub host: String,
    /// Bytes per compose volume name, or per app data path (`data/uploads`).
    pub data_bytes: BTreeMap<String, u64>,
    /// Per service.
    pub usage: BTreeMap<String, Usage>,
    /// The generated secrets' names present on the host.
    pub secret_names: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

pub struct Input<'a> {
    pub app: &'a AppConfig,
    pub sites: &'a [SiteConfig],
    pub backup: Option<&'a BackupConfig>,
    pub compose: &'a Value,
    /// The variables `.env` and `[app] env_files` set (names only).
    pub env_keys: BTreeSet<String>,
    pub options: &'a Options,
    pub measured: Option<&'a Measured>,
}

/// A file of `secrets/` the tree's secretGenerators read: `KEY=value`
/// lines, or one value, the whole file (`SecretSource::whole_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// Relative to the tree (`base/secrets/generated.env`).
    pub path: String,
    /// Its keys; for a whole file, the one key its Secret holds it under.
    pub keys: Vec<String>,
    /// Where its values are on the host (`--with-secrets`).
    pub source: SecretSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `[app.secrets] generate`: the host's `shared/secrets.env`.
    Generated,
    /// `.env` and `[app] env_files`, as deployed.
    EnvFiles,
    /// The backup repository's password and keys: from this machine's files.
    Backup,
    /// `[backup] sftp_identity_file`, whole.
    SftpKey,
    /// The SFTP server's host keys, whole: `[backup] sftp_known_hosts`, or
    /// (`in_config: false`) what the tree's README says to put there.
    SftpKnownHosts { in_config: bool },
}

impl SecretSource {
    /// What a whole-file secret holds; `None` for `KEY=value` lines.
    pub fn whole_file(&self) -> Option<&'static str> {
        match self {
            SecretSource::SftpKey => {
                Some("the SFTP key (`[backup] sftp_identity_file`), the whole file")
            }
            SecretSource::SftpKnownHosts { .. } => {
                Some("the SFTP server's host keys (known_hosts lines), the whole file")
            }
            _ => None,
        }
    }
}

/// The tree: manifests (with no secret value in any), and the secret files
/// to write (placeholders, or the real values with `--with-secrets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    pub files: Vec<(String, String)>,
    pub secret_files: Vec<SecretFile>,
}

/// A placeholder secret file: every key, no value, and why. (A whole file
/// that holds only a comment fails closed: ssh reads no key from it.)
pub fn placeholder(file: &SecretFile) -> String {
    const FETCH: &str = "or run `vpsup export k8s --host NAME --with-secrets`";
    match (&file.source, file.source.whole_file()) {
        (SecretSource::SftpKnownHosts { in_config: false }, Some(what)) => {
            return format!(
                "# Placeholder: replace this file with {what}: see the tree's README.md.\n"
            )
        }
        (_, Some(what)) => {
            return format!("# Placeholder: replace this file with {what} ({FETCH}).\n")
        }
        (_, None) => {}
    }
    let mut out = format!("# Placeholders: fill in each value ({FETCH}).\n");
    for key in &file.keys {
        out.push_str(&format!("{key}=\n"));
    }
    out
}

struct Workload {
    name: String,
    image: String,
    built: bool,
    stateful: bool,
    claims: Vec<(String, String, u64)>,
    notes: Vec<String>,
}

pub fn plan(input: &Input) -> Result<Tree, String> {
    let app = input.app.name.as_str();
    let services = input
        .compose
        .get("services")
        .and_then(Value::as_object)
        .ok_or("the compose files have no `services`")?;
    let configured = input
        .backup
        .map(backup_plan::configured_engines)
        .unwrap_or_default();
    let targets = detect::targets(input.compose, &configured)?;
    let engines: BTreeMap<&str, &Engine> = targets
        .iter()
        .filter(|t| !matches!(t.engine, Engine::Volume { .. }))
        .map(|t| (t.service.as_str(), &t.engine))
        .collect();

    let mut secrets = SecretKeys::default();
    let mut secret_files = Vec::new();
    let mut generators = Vec::new();
    let generated: BTreeSet<String> = input
        .app
        .secrets
        .generate
        .iter()
        .map(|e| e.0.clone())
        .collect();
    for (suffix, keys, source) in [
        ("generated", generated, SecretSource::Generated),
        ("env", input.env_keys.clone(), SecretSource::EnvFiles),
    ] {
        if keys.is_empty() {
            continue;
        }
        let name = format!("{app}-{suffix}");
        let path = format!("secrets/{suffix}.env");
        generators.push(json!({ "name": name, "envs": [path] }));
        secret_files.push(SecretFile {
            path: format!("base/{path}"),
            keys: keys.iter().cloned().collect(),
            source,
        });
        secrets.sources.push((name, keys));
    }

    let mut notes: Vec<String> = Vec::new();
    let mut files: Vec<(String, String)> = Vec::new();
    let mut resources: Vec<String> = vec!["namespace.yaml".into()];
    let mut workloads: Vec<Workload> = Vec::new();
    let labels = |service: &str| json!({ "app.kubernetes.io/name": service, "app.kubernetes.io/part-of": app });
    let site_ports = site_ports(input.sites);

    for (name, definition) in services {
        let engine = engines.get(name.as_str()).copied().cloned();
        let mut service_notes = Vec::new();
        let built = definition.get("build").is_some();
        let image = match definition.get("image").and_then(Value::as_str) {
            Some(image) => env::plain(image, &secrets)
                .map_err(|why| format!("service {name}: its image {why}"))?,
            None => format!("vpsup-{app}-{name}"),
        };
        // Ports: what the sites reach, what it exposes or publishes, the engine's.
        let mut ports: BTreeSet<u16> = site_ports.get(name.as_str()).cloned().unwrap_or_default();
        ports.extend(container_ports(definition));
        if let Some(p) = engine.as_ref().and_then(probes::engine_port) {
            ports.insert(p);
        }
        // Data: named volumes and the app's data as claims; the rest as notes.
        let mut claims = Vec::new();
        let mut mounts = Vec::new();
        let mut volumes_json = Vec::new();
        for (source, target, read_only) in mounts_of(definition) {
            match source {
                Mount::Named(volume) => {
                    let claim = k8s_name(&volume);
                    let bytes = input.measured.and_then(|m| m.data_bytes.get(&volume)).copied();
                    claims.push((claim.clone(), volume.clone(), size_for(bytes)));
                    mounts.push(json!({ "name": claim, "mountPath": target }));
                }
                Mount::Data(path) if !read_only => {
                    let claim = format!("data-{}", k8s_name(&path));
                    let bytes = input.measured.and_then(|m| m.data_bytes.get(&path)).copied();
                    claims.push((claim.clone(), format!("./{path}"), size_for(bytes)));
                    mounts.push(json!({ "name": claim, "mountPath": target }));
                }
                Mount::Data(path) => service_notes.push(format!(
                    "mounts ./{path} read-only at {target}: configuration; put it in a ConfigMap (configMapGenerator) or the image"
                )),
                Mount::Scratch => {
                    let vol = format!("scratch-{}", volumes_json.len());
                    volumes_json.push(json!({ "name": vol, "emptyDir": {} }));
                    mounts.push(json!({ "name": vol, "mountPath": target }));
                }
                Mount::Host(path) => service_notes.push(format!(
                    "mounts the host's {path}: not carried over (a cluster's nodes are not this host)"
                )),
            }
        }
        let stateful = engine.is_some() || !claims.is_empty();

        let mut container = serde_json::Map::new();
        container.insert("name".into(), json!(name));
        container.insert("image".into(), json!(image));
        let env_vars = env::container_env(
            &env::environment_of(definition),
            &secrets,
            &mut service_notes,
        )
        .map_err(|why| format!("service {name}: its {why}"))?;
        // The command and the healthcheck read secrets through this env.
        let words = command::Context {
            service: name,
            secrets: &secrets,
            env: &env_vars,
        };
        for (key, k8s_key) in [("entrypoint", "command"), ("command", "args")] {
            if let Some(value) = definition.get(key) {
                if let Some(list) = command::words(key, value, &words, &mut service_notes)? {
                    container.insert(k8s_key.into(), json!(list));
                }
            }
        }
        if !env_vars.is_empty() {
            container.insert(
                "env".into(),
                json!(env_vars.iter().map(|v| v.to_json()).collect::<Vec<_>>()),
            );
        }
        if definition.get("env_file").is_some() {
            service_notes
                .push("has its own env_file: add its variables to a Secret and to envFrom".into());
        }
        if !ports.is_empty() {
            container.insert(
                "ports".into(),
                json!(ports
                    .iter()
                    .map(|p| json!({ "containerPort": p }))
                    .collect::<Vec<_>>()),
            );
        }
        // Probes.
        let site = input.sites.iter().find(|s| s.service.as_str() == name);
        let compose_check = probes::from_healthcheck(definition);
        let (check, timing) = if let Some(check) = engine.as_ref().and_then(probes::engine_check) {
            (Some(check), compose_check.map(|c| c.1).unwrap_or_default())
        } else if let Some(site) = site {
            let timing = compose_check.map(|c| c.1).unwrap_or_default();
            (
                Some(Check::Http {
                    path: site.health.0.clone(),
                    port: site.port.0,
                }),
                timing,
            )
        } else if let Some((test, timing)) = compose_check {
            let command = command::probe(&test, &words, &mut service_notes)?;
            (Some(Check::Exec(command)), timing)
        } else if let Some(port) = ports.iter().next() {
            (Some(Check::Tcp(*port)), Timing::default())
        } else {
            (None, Timing::default())
        };
        match &check {
            Some(check) => {
                let tcp = engine.as_ref().and_then(probes::engine_port);
                if let Some(probe) = probes::startup(check, timing) {
                    container.insert("startupProbe".into(), probe);
                }
                container.insert("readinessProbe".into(), probes::readiness(check, timing));
                container.insert("livenessProbe".into(), probes::liveness(check, timing, tcp));
            }
            None => service_notes.push(
                "no healthcheck, site or port to probe: add a readiness probe by hand".into(),
            ),
        }
        if !mounts.is_empty() {
            container.insert("volumeMounts".into(), json!(mounts));
        }

        // depends_on: wait for a stateful dependency's port; order is documented.
        let mut init = Vec::new();
        for dep in depends_on(definition) {
            let dep_def = &services.get(&dep);
            let dep_engine = engines.get(dep.as_str());
            let dep_stateful =
                dep_engine.is_some() || dep_def.map(|d| !claims_of(d).is_empty()).unwrap_or(false);
            let dep_port = dep_engine
                .and_then(|e| probes::engine_port(e))
                .or_else(|| dep_def.and_then(|d| container_ports(d).into_iter().next()));
            match (dep_stateful, dep_port) {
                (true, Some(port)) => init.push(json!({
                    "name": format!("wait-for-{}", k8s_name(&dep)),
                    "image": WAIT_IMAGE,
                    "command": ["sh", "-c", format!("until nc -z {dep} {port}; do echo waiting for {dep}:{port}; sleep 2; done")],
                })),
                _ => service_notes.push(format!(
                    "depends on {dep}: Kubernetes starts both at once; {name}'s readiness probe keeps traffic away until it works"
                )),
            }
        }

        let mut pod_spec = serde_json::Map::new();
        if !init.is_empty() {
            pod_spec.insert("initContainers".into(), json!(init));
        }
        pod_spec.insert("containers".into(), json!([Value::Object(container)]));
        if !volumes_json.is_empty() {
            pod_spec.insert("volumes".into(), json!(volumes_json));
        }
        if let Some(grace) = definition
            .get("stop_grace_period")
            .and_then(Value::as_str)
            .and_then(probes::duration_secs)
        {
            pod_spec.insert("terminationGracePeriodSeconds".into(), json!(grace));
        }
        let template = json!({ "metadata": { "labels": labels(name) }, "spec": pod_spec });
        let selector = json!({ "matchLabels": { "app.kubernetes.io/name": name } });
        let (kind_file, object) = if stateful {
            let claim_templates: Vec<Value> = claims
                .iter()
                .map(|(claim, _, bytes)| {
                    let mut spec = json!({
                        "accessModes": ["ReadWriteOnce"],
                        "resources": { "requests": { "storage": quantity_gi(*bytes) } },
                    });
                    if let Some(class) = &input.options.storage_class {
                        spec["storageClassName"] = json!(class);
                    }
                    json!({ "metadata": { "name": claim }, "spec": spec })
                })
                .collect();
            let mut spec = json!({
                "serviceName": name,
                "replicas": 1,
                "selector": selector,
                "template": template,
            });
            if !claim_templates.is_empty() {
                spec["volumeClaimTemplates"] = json!(claim_templates);
            }
            (
                "statefulset",
                json!({
                    "apiVersion": "apps/v1", "kind": "StatefulSet",
                    "metadata": { "name": name, "labels": labels(name) },
                    "spec": spec,
                }),
            )
        } else {
            (
                "deployment",
                json!({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": { "name": name, "labels": labels(name) },
                    "spec": { "replicas": 1, "selector": selector, "template": template },
                }),
            )
        };
        let file = format!("{name}-{kind_file}.yaml");
        files.push((format!("base/{file}"), yaml(&object)));
        resources.push(file);
        if !ports.is_empty() || stateful {
            let mut spec = json!({
                "selector": { "app.kubernetes.io/name": name },
                "ports": ports.iter().map(|p| json!({ "name": format!("p{p}"), "port": p, "targetPort": p })).collect::<Vec<_>>(),
            });
            if stateful {
                // Headless: the pod's own address, stable through the StatefulSet.
                spec["clusterIP"] = json!("None");
            }
            if ports.is_empty() {
                spec["ports"] = json!([{ "name": "none", "port": 1 }]);
            }
            let svc = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": name, "labels": labels(name) },
                "spec": spec,
            });
            let file = format!("{name}-service.yaml");
            files.push((format!("base/{file}"), yaml(&svc)));
            resources.push(file);
        }
        workloads.push(Workload {
            name: name.clone(),
            image,
            built,
            stateful,
            claims,
            notes: service_notes,
        });
    }

    for site in input.sites {
        let ing = ingress::ingress(
            site,
            &input.options.issuer,
            &json!({ "app.kubernetes.io/part-of": app }),
        );
        let file = format!("{}-ingress.yaml", ingress::name(&site.domain.0));
        files.push((format!("base/{file}"), yaml(&ing)));
        resources.push(file);
        if site.domain.0.starts_with("*.") {
            notes.push(format!(
                "{}: a wildcard certificate needs a DNS-01 solver on the ClusterIssuer {}",
                site.domain.0, input.options.issuer
            ));
        }
    }

    if let Some(backup) = input.backup {
        let backup_files = backup_jobs(
            app,
            backup,
            &targets,
            &mut generators,
            &mut secret_files,
            &mut notes,
            &labels,
        )?;
        for (file, content) in backup_files {
            files.push((format!("base/{file}"), content));
            resources.push(file);
        }
    }

    // base/
    let namespace = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": input.options.namespace },
    });
    files.push(("base/namespace.yaml".into(), yaml(&namespace)));
    resources.sort();
    let mut base = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": input.options.namespace,
        "resources": resources,
    });
    if !generators.is_empty() {
        base["secretGenerator"] = json!(generators);
    }
    files.push(("base/kustomization.yaml".into(), yaml(&base)));

    // overlays/production/
    let overlay_files = overlay(&workloads, input.measured);
    files.extend(overlay_files);
    files.push((
        ".gitignore".into(),
        "# Secret values: never in git.\n/base/secrets/\n".into(),
    ));
    files.push((
        "README.md".into(),
        readme(input, &workloads, &secret_files, &notes),
    ));
    files.sort();
    Ok(Tree {
        files,
        secret_files,
    })
}

/// The app's writable project mounts (`state`, `data/uploads`): what `--host` measures besides volumes.
pub fn data_paths(compose: &Value) -> Vec<String> {
    let mut out = BTreeSet::new();
    for definition in compose
        .get("services")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|s| s.values())
    {
        for (mount, _, ro) in mounts_of(definition) {
            if let (Mount::Data(path), false) = (mount, ro) {
                out.insert(path);
            }
        }
    }
    out.into_iter().collect()
}

/// The variable names an env file sets, read as compose reads it
/// (`interpolate::Env`: quoted values spanning lines, `NAME: value`,
/// comments), so no part of a value is ever taken for a name.
pub fn env_file_keys(text: &str) -> Result<BTreeSet<String>, String> {
    let mut env = Env::default();
    env.read_env_file(text)?;
    Ok(env.names().map(str::to_string).collect())
}

/// A secret file with real values: the values `text` (env files, later
/// settings winning, read as compose reads them) gives the file's keys,
/// nothing else. A value spanning lines cannot be an env-file line for
/// Kustomize: it is left empty, with a comment saying how to supply it.
pub fn with_values(file: &SecretFile, text: &str) -> Result<String, String> {
    let mut env = Env::default();
    env.read_env_file(text)?;
    Ok(with_env(file, &env))
}

/// A secret file with the values `env` knows for its keys (see `with_values`).
pub fn with_env(file: &SecretFile, env: &Env) -> String {
    let mut out = String::new();
    for key in &file.keys {
        let value = env.known(key).unwrap_or_default();
        if value.contains('\n') {
            out.push_str(&format!(
                "# {key} spans lines: give it to the secretGenerator as a file (files: [{key}=path])\n{key}=\n"
            ));
        } else {
            out.push_str(&format!("{key}={value}\n"));
        }
    }
    out
}

/// Claim size for data holding `bytes` now: twice that, in whole GiB, at
/// least 1 GiB; 10 GiB when nothing was measured (a guess the README flags).
pub fn size_for(bytes: Option<u64>) -> u64 {
    match bytes {
        Some(b) => (b.saturating_mul(2)).div_ceil(GIB).max(1) * GIB,
        None => 10 * GIB,
    }
}

fn quantity_gi(bytes: u64) -> String {
    format!("{}Gi", bytes / GIB)
}

/// Requests from what the container uses now (a quarter more, rounded up),
/// a memory limit twice that; no CPU limit (throttling hurts more than it
/// protects). Unmeasured: small defaults the README flags.
pub fn resources_for(usage: Option<&Usage>) -> Value {
    let (cpu, mem) = match usage {
        Some(u) => (
            (u.cpu_millis * 5 / 4).div_ceil(10).max(1) * 10,
            (u.memory_bytes * 5 / 4).div_ceil(16 * MIB).max(1) * 16,
        ),
        None => (100, 128),
    };
    let cpu = cpu.max(50);
    let mem = mem.max(64);
    json!({
        "requests": { "cpu": format!("{cpu}m"), "memory": format!("{mem}Mi") },
        "limits": { "memory": format!("{}Mi", mem * 2) },
    })
}

fn overlay(workloads: &[Workload], measured: Option<&Measured>) -> Vec<(String, String)> {
    let mut patches = String::new();
    let mut replicas = Vec::new();
    let mut images = Vec::new();
    for w in workloads {
        let kind = if w.stateful {
            "StatefulSet"
        } else {
            "Deployment"
        };
        let patch = json!({
            "apiVersion": "apps/v1", "kind": kind,
            "metadata": { "name": w.name },
            "spec": { "template": { "spec": { "containers": [{
                "name": w.name,
                "resources": resources_for(measured.and_then(|m| m.usage.get(&w.name))),
            }] } } },
        });
        patches.push_str("---\n");
        patches.push_str(&yaml(&patch));
        replicas.push(json!({ "name": w.name, "count": 1 }));
        let (name, tag) = split_image(&w.image);
        let mut entry = json!({ "name": name });
        if w.built {
            entry["newName"] = json!(format!("registry.example.com/{}", w.image));
            entry["newTag"] = json!("v1");
        } else {
            entry["newTag"] = json!(tag.unwrap_or("latest"));
        }
        images.push(entry);
    }
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["../../base"],
        "replicas": replicas,
        "images": images,
        "patches": [{ "path": "resources.yaml" }],
    });
    vec![
        (
            "overlays/production/kustomization.yaml".into(),
            yaml(&kustomization),
        ),
        ("overlays/production/resources.yaml".into(), patches),
    ]
}

/// `(name, tag)` of an image reference (`postgres:16`, `localhost:5000/x`).
fn split_image(image: &str) -> (&str, Option<&str>) {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], Some(&image[i + 1..])),
        _ => (image, None),
    }
}

/// A CronJob per database, doing what `vpsup backup` does: the engine's own
/// dump, run in the database's container (`kubectl exec`, so with its
/// credentials), into the same restic repository, then the same retention.
fn backup_jobs(
    app: &str,
    backup: &BackupConfig,
    targets: &[detect::Target],
    generators: &mut Vec<Value>,
    secret_files: &mut Vec<SecretFile>,
    notes: &mut Vec<String>,
    labels: &dyn Fn(&str) -> Value,
) -> Result<Vec<(String, String)>, String> {
    let databases: Vec<&detect::Target> = targets
        .iter()
        .filter(|t| !matches!(t.engine, Engine::Volume { .. }))
        .filter(|t| {
            !backup
                .services
                .iter()
                .any(|(n, s)| n.0 == t.service && s.skip)
        })
        .collect();
    if databases.is_empty() {
        return Ok(Vec::new());
    }
    let secret = format!("{app}-backup");
    let mut keys = vec![
        "RESTIC_PASSWORD".to_string(),
        "RESTIC_REPOSITORY".to_string(),
    ];
    if backup.repository.0.starts_with("s3:") {
        keys.extend(["AWS_ACCESS_KEY_ID".into(), "AWS_SECRET_ACCESS_KEY".into()]);
    }
    generators.push(json!({ "name": secret, "envs": ["secrets/backup.env"] }));
    secret_files.push(SecretFile {
        path: "base/secrets/backup.env".into(),
        keys,
        source: SecretSource::Backup,
    });
    let sftp = sftp_access(app, backup, generators, secret_files, notes)?;
    // Every restic below goes through the host's ssh command, said once.
    let restic_fn = sftp.as_ref().map_or(String::new(), |s| {
        format!("restic() {{ command {} \"$@\"; }}\n", s.restic)
    });
    let mut volumes = vec![json!({ "name": "dump", "emptyDir": {} })];
    let mut mounts = vec![json!({ "name": "dump", "mountPath": "/dump" })];
    if let Some(sftp) = sftp {
        volumes.push(sftp.volume);
        mounts.push(sftp.mount);
    }
    let schedule = cron(&backup.schedule);
    let keep = backup.retention().args();
    let mut out = Vec::new();
    let rbac = json!([
        { "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": format!("{app}-backup") } },
        { "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": { "name": format!("{app}-backup") },
          "rules": [
            { "apiGroups": [""], "resources": ["pods"], "verbs": ["get"] },
            { "apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"] } ] },
        { "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": { "name": format!("{app}-backup") },
          "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("{app}-backup") },
          "subjects": [{ "kind": "ServiceAccount", "name": format!("{app}-backup") }] },
    ]);
    let mut rbac_text = String::new();
    for object in rbac.as_array().into_iter().flatten() {
        rbac_text.push_str("---\n");
        rbac_text.push_str(&yaml(object));
    }
    out.push(("backup-rbac.yaml".to_string(), rbac_text));
    for target in databases {
        let settings = backup
            .services
            .iter()
            .find(|(n, _)| n.0 == target.service)
            .map(|(_, s)| s);
        let pw = settings
            .and_then(|s| s.password_env.as_ref())
            .map(|e| e.0.as_str());
        let part = match &target.engine {
            // One pg_dumpall: the per-database mode lists databases first, a
            // second step a CronJob has no place for.
            Engine::Postgres { .. } => postgres::cluster_part(),
            Engine::Mysql => mysql::dump_part(pw),
            Engine::Mongo => mongo::dump_part(pw),
            Engine::Redis => redis::dump_part(pw),
            Engine::Volume { .. } => continue,
        };
        let service = &target.service;
        let dump = format!(
            "kubectl exec -i {service}-0 -c {service} -- sh -c \"$DUMP\" > /dump/{}",
            part.file
        );
        let upload = format!(
            "{restic_fn}restic snapshots >/dev/null 2>&1 || restic init\nrestic backup --host {app} --tag app={app} --tag service={service} /dump\nrestic forget --host {app} --tag app={app},service={service} {keep} --prune"
        );
        let job = json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": { "name": format!("{service}-backup"), "labels": labels(service) },
            "spec": {
                "schedule": schedule,
                "concurrencyPolicy": "Forbid",
                "jobTemplate": { "spec": { "backoffLimit": 1, "template": {
                    "metadata": { "labels": { "app.kubernetes.io/part-of": app } },
                    "spec": {
                        "serviceAccountName": format!("{app}-backup"),
                        "restartPolicy": "Never",
                        "volumes": volumes,
                        "initContainers": [{
                            "name": "dump",
                            "image": KUBECTL_IMAGE,
                            "command": ["sh", "-c", dump],
                            "env": [{ "name": "DUMP", "value": part.inner }],
                            "volumeMounts": [{ "name": "dump", "mountPath": "/dump" }],
                        }],
                        "containers": [{
                            "name": "upload",
                            "image": RESTIC_IMAGE,
                            "command": ["sh", "-c", upload],
                            "envFrom": [{ "secretRef": { "name": secret } }],
                            "volumeMounts": mounts,
                        }],
                    },
                } } },
            },
        });
        out.push((format!("{service}-backup-cronjob.yaml"), yaml(&job)));
    }
    Ok(out)
}

/// How the backup reaches an SFTP repository: the host's own restic
/// command (`Repository::restic`), its key and known_hosts from a Secret
/// mounted read-only where the host keeps them.
struct SftpAccess {
    restic: String,
    volume: Value,
    mount: Value,
}

/// `None` for a repository other than SFTP. Host keys are always pinned
/// here: the mounted known_hosts is read-only, so the host's accept-new
/// would trust whatever key the server shows, on every run.
fn sftp_access(
    app: &str,
    backup: &BackupConfig,
    generators: &mut Vec<Value>,
    secret_files: &mut Vec<SecretFile>,
    notes: &mut Vec<String>,
) -> Result<Option<SftpAccess>, String> {
    let url = &backup.repository.0;
    let Location::Sftp(server) = Location::parse(url)? else {
        return Ok(None);
    };
    let repo = Repository::new(url, HostFiles::for_app(app), HostKeys::Pinned)?;
    let secret = format!("{app}-backup-sftp");
    let in_config = backup.sftp_known_hosts.is_some();
    let mut files = Vec::new();
    for (on_host, file, source) in [
        (&repo.files.ssh_key, "backup-ssh-key", SecretSource::SftpKey),
        (
            &repo.files.known_hosts,
            "backup-known-hosts",
            SecretSource::SftpKnownHosts { in_config },
        ),
    ] {
        // The Secret's key is the host file's name: mounted, the same path.
        let key = on_host.rsplit('/').next().unwrap_or(on_host);
        files.push(format!("{key}=secrets/{file}"));
        secret_files.push(SecretFile {
            path: format!("base/secrets/{file}"),
            keys: vec![key.to_string()],
            source,
        });
    }
    generators.push(json!({ "name": secret, "files": files }));
    if !in_config {
        let port = server.port.map(|p| format!("-p {p} ")).unwrap_or_default();
        notes.push(format!(
            "backup: `base/secrets/backup-known-hosts` needs the SFTP server's host keys, and vpsup.toml pins none (`[backup] sftp_known_hosts`): copy the lines the host learned at its first backup (`sudo cat {}` there), or run `ssh-keyscan {port}{}` and check the fingerprints with the server's provider. Until then the backup refuses the server: the CronJob cannot learn a key (its copy is read-only), so it accepts only the keys given",
            repo.files.known_hosts, server.host
        ));
    }
    Ok(Some(SftpAccess {
        restic: repo.restic(),
        volume: json!({ "name": "sftp", "secret": { "secretName": secret, "defaultMode": 0o400 } }),
        mount: json!({ "name": "sftp", "mountPath": files_dir(app), "readOnly": true }),
    }))
}

/// `[backup] schedule` as a cron line (a systemd calendar expression has
/// none: daily at 03:00, and the README says so).
pub fn cron(schedule: &Schedule) -> String {
    match schedule {
        Schedule::Hourly => "0 * * * *".into(),
        Schedule::Daily | Schedule::Calendar(_) => "0 3 * * *".into(),
        Schedule::Weekly => "0 3 * * 0".into(),
        Schedule::At { hour, minute } => format!("{minute} {hour} * * *"),
    }
}

enum Mount {
    Named(String),
    Data(String),
    Scratch,
    Host(String),
}

/// `(source, target, read-only)` of each of a service's mounts.
fn mounts_of(definition: &Value) -> Vec<(Mount, String, bool)> {
    let mut out = Vec::new();
    for volume in definition
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (source, target, ro, kind) = match volume {
            Value::String(spec) => {
                let parts: Vec<&str> = spec.split(':').collect();
                match parts.as_slice() {
                    [target] => (String::new(), target.to_string(), false, "volume"),
                    [source, target] => (source.to_string(), target.to_string(), false, ""),
                    [source, target, mode, ..] => (
                        source.to_string(),
                        target.to_string(),
                        mode.split(',').any(|m| m == "ro"),
                        "",
                    ),
                    [] => continue,
                }
            }
            Value::Object(long) => (
                long.get("source")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                long.get("target")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                long.get("read_only")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                long.get("type").and_then(Value::as_str).unwrap_or("volume"),
            ),
            _ => continue,
        };
        let mount = if kind == "tmpfs" || source.is_empty() {
            Mount::Scratch
        } else if source.starts_with("./") || source == "." || source.starts_with("../") {
            Mount::Data(
                source
                    .trim_start_matches("./")
                    .trim_end_matches('/')
                    .to_string(),
            )
        } else if source.starts_with('/') || source.starts_with('~') {
            Mount::Host(source)
        } else {
            Mount::Named(source)
        };
        out.push((mount, target, ro));
    }
    out
}

fn claims_of(definition: &Value) -> Vec<String> {
    mounts_of(definition)
        .into_iter()
        .filter_map(|(m, _, ro)| match m {
            Mount::Named(v) => Some(v),
            Mount::Data(p) if !ro => Some(p),
            _ => None,
        })
        .collect()
}

fn container_ports(definition: &Value) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for p in definition
        .get("expose")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = p
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| p.to_string());
        if let Ok(n) = text.split('/').next().unwrap_or_default().parse() {
            ports.insert(n);
        }
    }
    for p in definition
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let target = match p {
            Value::Object(long) => long
                .get("target")
                .and_then(Value::as_u64)
                .map(|n| n.to_string()),
            Value::String(s) => s
                .split('/')
                .next()
                .and_then(|s| s.rsplit(':').next())
                .map(str::to_string),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        if let Some(Ok(n)) = target.map(|t| t.parse()) {
            ports.insert(n);
        }
    }
    ports
}

fn depends_on(definition: &Value) -> Vec<String> {
    match definition.get("depends_on") {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        Some(Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn site_ports(sites: &[SiteConfig]) -> BTreeMap<&str, BTreeSet<u16>> {
    let mut out: BTreeMap<&str, BTreeSet<u16>> = BTreeMap::new();
    for site in sites {
        out.entry(site.service.as_str())
            .or_default()
            .insert(site.port.0);
        for route in &site.routes {
            out.entry(route.service.as_str())
                .or_default()
                .insert(route.port.0);
        }
    }
    out
}

/// A DNS-1123 label from a compose name (`db_data` → `db-data`).
fn k8s_name(name: &str) -> String {
    let mut out: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out = out.trim_matches('-').to_string();
    if out.is_empty() {
        out = "data".into();
    }
    out
}

/// One object as YAML (keys sorted: serde_json's map is ordered by key).
fn yaml(value: &Value) -> String {
    serde_saphyr::to_string(value).expect("a JSON value serializes as YAML")
}

fn readme(
    input: &Input,
    workloads: &[Workload],
    secret_files: &[SecretFile],
    notes: &[String],
) -> String {
    let app = input.app.name.as_str();
    let mut out = format!(
        "# {app} on Kubernetes\n\nWritten by `vpsup export k8s` from vpsup.toml and the compose files{}. Every manifest validates against the Kubernetes {KUBERNETES_VERSION} OpenAPI schemas; nothing here was applied to a cluster by vpsup.\n\n",
        match input.measured {
            Some(m) => format!(", with sizes and usage measured on host {}", m.host),
            None => String::new(),
        }
    );
    out.push_str("## Layout\n\n- `base/`: one file per kind and service, `kustomization.yaml` (namespace, resources, secretGenerator).\n- `overlays/production/`: replicas, resources (`resources.yaml`) and image tags.\n- `base/secrets/`: the files the Secrets are generated from (git-ignored).\n\n");
    out.push_str("## Review, in this order\n\n");
    out.push_str("1. **Images.** Services built on the VPS have no image in a registry yet: build and push each one, then set `images:` in `overlays/production/kustomization.yaml`:\n");
    for w in workloads.iter().filter(|w| w.built) {
        out.push_str(&format!("   - `{}`: `docker build` its context, `docker push registry.example.com/{}:v1` (your registry)\n", w.name, w.image));
    }
    out.push_str("2. **Secrets.** ");
    if secret_files.is_empty() {
        out.push_str("none.\n");
    } else {
        out.push_str("Kustomize generates them from these files (placeholders unless exported with `--host NAME --with-secrets`; fill them in before applying, keep them out of git):\n");
        for f in secret_files {
            let what = f
                .source
                .whole_file()
                .map_or_else(|| f.keys.join(", "), str::to_string);
            out.push_str(&format!("   - `{}`: {what}\n", f.path));
        }
    }
    out.push_str("3. **Storage.** Each StatefulSet claims its data:\n");
    for w in workloads {
        for (claim, source, bytes) in &w.claims {
            let measured = input.measured.and_then(|m| {
                let key = source.trim_start_matches("./");
                m.data_bytes.get(key)
            });
            let how = match measured {
                Some(b) => format!(
                    "{} MiB on the host now, twice that rounded up",
                    b.div_ceil(MIB)
                ),
                None => "not measured (export with `--host NAME`): a guess".into(),
            };
            out.push_str(&format!(
                "   - `{}` `{claim}` ({source}): {} ({how})\n",
                w.name,
                quantity_gi(*bytes)
            ));
        }
    }
    match &input.options.storage_class {
        Some(class) => out.push_str(&format!("   Storage class: `{class}`.\n")),
        None => out.push_str(
            "   Storage class: the cluster's default (`--storage-class NAME` to choose).\n",
        ),
    }
    out.push_str(&format!(
        "4. **Resources.** `overlays/production/resources.yaml`: {}.\n",
        if input.measured.is_some() {
            "requests from what each container used on the host, a memory limit twice that"
        } else {
            "defaults, not measured (export with `--host NAME`)"
        }
    ));
    out.push_str(&format!("5. **Ingress.** ingress-nginx and cert-manager with a ClusterIssuer named `{}`; point each domain's DNS at the ingress controller.\n", input.options.issuer));
    out.push_str("6. **Data.** Move each database's data with a dump and restore (`vpsup backup`, then restore into the new pod), never by copying files.\n\n");
    out.push_str(&format!("## Apply\n\n```sh\nkubectl kustomize overlays/production      # look at it\nkubectl apply -k overlays/production\n```\n\nThe namespace is `{}`.\n", input.options.namespace));
    let mut all_notes: Vec<String> = notes.to_vec();
    for w in workloads {
        all_notes.extend(w.notes.iter().map(|n| format!("{}: {n}", w.name)));
    }
    if !all_notes.is_empty() {
        out.push_str("\n## Notes\n\n");
        for n in all_notes {
            out.push_str(&format!("- {n}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
