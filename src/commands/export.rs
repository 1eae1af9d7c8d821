//! `vpsup export k8s`: the project as a Kustomize tree.
//!
//! 1. Read the compose model from the project (includes and extends resolved).
//! 2. With `--host`: measure the app's data and containers and read the
//!    generated secrets' names (and values, with `--with-secrets`) in one exec.
//! 3. Plan the tree (`export::k8s::plan`, pure).
//! 4. Write it; secret files 0600, placeholders unless fetched (with
//!    `--with-secrets`: from the host, and the backup's from this machine).

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::backup::host_settings::project_file;
use crate::backup::restic::S3Credentials;
use crate::cli::ExportK8sArgs;
use crate::config::BackupConfig;
use crate::deploy::interpolate::Env;
use crate::exit;
use crate::export::k8s::{self, gather, Measured, Options, SecretSource};
use crate::fleet;
use crate::settings::Settings;
use crate::transport::sections::Sections;
use crate::transport::{ExecRequest, Transport};

use super::exec::app_name;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Host(String),
    #[error("writing {path}: {error}")]
    Write { path: String, error: std::io::Error },
}

impl exit::ExitStatus for ExportError {
    fn exit_code(&self) -> u8 {
        match self {
            ExportError::Input(_) => exit::BAD_INPUT,
            _ => exit::FAILED,
        }
    }
}

pub async fn k8s(settings: &Settings, args: &ExportK8sArgs) -> exit::Result<()> {
    let app_name = app_name(settings, "vpsup export k8s")?.to_string();
    let config = settings.config.as_ref().expect("app_name found a config");
    let app = config.app.as_ref().expect("app_name found [app]");
    let project = settings
        .config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let compose = k8s::compose::load(project, &app.compose_files).map_err(ExportError::Input)?;
    let mut env_paths: Vec<String> = Vec::new();
    if project.join(".env").is_file() && !app.env_files.iter().any(|e| e == Path::new(".env")) {
        env_paths.push(".env".into());
    }
    env_paths.extend(
        app.env_files
            .iter()
            .map(|p| p.to_string_lossy().into_owned()),
    );
    let mut env_keys = BTreeSet::new();
    for path in &env_paths {
        let text = std::fs::read_to_string(project.join(path))
            .map_err(|e| ExportError::Input(format!("{path}: {e}")))?;
        env_keys.extend(
            k8s::env_file_keys(&text).map_err(|e| ExportError::Input(format!("{path}: {e}")))?,
        );
    }

    let mut values = None;
    let measured = match &args.host {
        Some(host) => {
            let (m, v) = measure(
                settings,
                host,
                &app_name,
                &compose,
                &env_paths,
                args.with_secrets,
            )
            .await?;
            values = v;
            Some(m)
        }
        None => None,
    };
    if let Some(m) = &measured {
        let missing: Vec<&str> = app
            .secrets
            .generate
            .iter()
            .map(|e| e.0.as_str())
            .filter(|n| !m.secret_names.iter().any(|s| s == n))
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "vpsup: {}: not generated on the host yet: {} (deploy first)",
                m.host,
                missing.join(", ")
            );
        }
    }
    let options = Options {
        namespace: args.namespace.clone().unwrap_or_else(|| app_name.clone()),
        storage_class: args.storage_class.clone(),
        issuer: args.issuer.clone(),
    };
    let tree = k8s::plan(&k8s::Input {
        app,
        sites: &config.sites,
        backup: config.backup.as_ref(),
        compose: &compose,
        env_keys,
        options: &options,
        measured: measured.as_ref(),
    })
    .map_err(ExportError::Input)?;

    for (path, content) in &tree.files {
        write(&args.out.join(path), content.as_bytes(), 0o644)?;
    }
    if let Some(listed) = keep_off_hosts(project, &args.out)? {
        eprintln!("vpsup: {listed} added to .vpsupignore: the tree (and its secrets) is not for your hosts, `vpsup deploy` leaves it out");
    }
    let backup = config.backup.as_ref();
    for file in &tree.secret_files {
        let content = match (&values, &file.source, backup) {
            (Some((generated, _)), SecretSource::Generated, _) => k8s::with_values(file, generated),
            (Some((_, env)), SecretSource::EnvFiles, _) => k8s::with_values(file, env),
            (Some(_), SecretSource::Backup, Some(backup)) => {
                backup_env(backup, project).map(|env| k8s::with_env(file, &env))
            }
            (Some(_), SecretSource::SftpKey, Some(backup)) => {
                read_local(project, backup.sftp_identity_file.as_deref())
            }
            (Some(_), SecretSource::SftpKnownHosts { in_config: true }, Some(backup)) => {
                read_local(project, backup.sftp_known_hosts.as_deref())
            }
            _ => Ok(k8s::placeholder(file)),
        }
        .map_err(|e| ExportError::Input(format!("{}: {e}", file.path)))?;
        write(&args.out.join(&file.path), content.as_bytes(), 0o600)?;
    }
    if settings.verbosity != crate::settings::Verbosity::Quiet {
        println!(
            "wrote {} ({} files; secrets: {})",
            args.out.display(),
            tree.files.len() + tree.secret_files.len(),
            if values.is_some() {
                "fetched from the host into base/secrets/ (git-ignored)"
            } else {
                "placeholders in base/secrets/"
            }
        );
    }
    Ok(())
}

/// The tree written inside the project would travel with every release
/// (its secret files too): its path goes into the project's `.vpsupignore`
/// unless listed there already. The path added, if one was.
fn keep_off_hosts(project: &Path, out: &Path) -> Result<Option<String>, ExportError> {
    let (Ok(project), Ok(out)) = (project.canonicalize(), out.canonicalize()) else {
        return Ok(None);
    };
    let Ok(rel) = out.strip_prefix(&project) else {
        return Ok(None);
    };
    let Some(rel) = rel.to_str().filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let ignore = project.join(crate::deploy::local_release::IGNORE_FILE);
    let text = match std::fs::read_to_string(&ignore) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => {
            return Err(ExportError::Write {
                path: ignore.display().to_string(),
                error,
            })
        }
    };
    let listed = text.lines().any(|l| {
        let entry = l.trim().trim_start_matches('/').trim_end_matches('/');
        !entry.is_empty() && (rel == entry || Path::new(rel).starts_with(entry))
    });
    if listed {
        return Ok(None);
    }
    let mut text = text;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "# written by `vpsup export k8s`: not for the hosts\n{rel}\n"
    ));
    std::fs::write(&ignore, text).map_err(|error| ExportError::Write {
        path: ignore.display().to_string(),
        error,
    })?;
    Ok(Some(rel.to_string()))
}

/// A `[backup]` file of this machine's (as `vpsup backup` finds it: `~/`
/// is the home). Errors name the file, never a line of it.
fn read_local(project: &Path, file: Option<&Path>) -> Result<String, String> {
    let file = file.ok_or("not in vpsup.toml")?;
    let path = project_file(project, file);
    std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// The backup Secret's values from this machine's files: the repository,
/// its password (trimmed, as restic reads a password file) and the S3 keys.
fn backup_env(backup: &BackupConfig, project: &Path) -> Result<Env, String> {
    let mut env = Env::default();
    env.set("RESTIC_REPOSITORY", &backup.repository.0);
    let password = read_local(project, Some(&backup.password_file))?;
    env.set("RESTIC_PASSWORD", password.trim());
    if let Some(file) = &backup.s3_credentials_file {
        let keys = S3Credentials::parse(&read_local(project, Some(file))?)
            .map_err(|why| format!("{}: {why}", file.display()))?;
        env.set("AWS_ACCESS_KEY_ID", &keys.access_key_id);
        env.set("AWS_SECRET_ACCESS_KEY", &keys.secret_access_key);
    }
    Ok(env)
}

/// One exec on `host`: measurements, and secret values when asked.
async fn measure(
    settings: &Settings,
    host: &str,
    app: &str,
    compose: &serde_json::Value,
    env_paths: &[String],
    with_secrets: bool,
) -> exit::Result<(Measured, Option<(String, String)>)> {
    let target = settings.one_target(Some(host), "vpsup export k8s", "")?;
    let connection = fleet::connect(settings, &target).await?;
    let sections = Sections::random();
    let script = gather::script(
        &sections,
        app,
        &k8s::data_paths(compose),
        env_paths,
        with_secrets,
    );
    let out = connection
        .transport
        .run_ok(
            "measuring the app",
            ExecRequest::piped(script).become_root(true),
        )
        .await;
    connection.transport.close().await;
    let gathered =
        gather::parse(&sections, &target.name, &out?.stdout_str()).map_err(ExportError::Host)?;
    Ok((gathered.measured, gathered.values))
}

fn write(path: &Path, content: &[u8], mode: u32) -> Result<(), ExportError> {
    let err = |error| ExportError::Write {
        path: path.display().to_string(),
        error,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // Replace, never append; a secret file is created 0600 before any byte is in it.
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    file.write_all(content).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree written inside the project is listed in its `.vpsupignore`
    /// once (so a deploy leaves it out); one outside it, or listed, is not.
    #[test]
    fn a_tree_in_the_project_is_kept_off_the_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("shop");
        std::fs::create_dir_all(project.join("k8s")).unwrap();
        std::fs::write(project.join(".vpsupignore"), "media").unwrap();
        assert_eq!(
            keep_off_hosts(&project, &project.join("k8s"))
                .unwrap()
                .as_deref(),
            Some("k8s")
        );
        assert_eq!(
            std::fs::read_to_string(project.join(".vpsupignore")).unwrap(),
            "media\n# written by `vpsup export k8s`: not for the hosts\nk8s\n"
        );
        assert_eq!(
            keep_off_hosts(&project, &project.join("k8s")).unwrap(),
            None
        );
        std::fs::create_dir_all(project.join("media/k8s")).unwrap();
        assert_eq!(
            keep_off_hosts(&project, &project.join("media/k8s")).unwrap(),
            None
        );
        let outside = dir.path().join("k8s");
        std::fs::create_dir_all(&outside).unwrap();
        assert_eq!(keep_off_hosts(&project, &outside).unwrap(), None);
        // And the deploy's own reading of the file leaves the tree out.
        std::fs::write(project.join("k8s/x.yaml"), "kind: Secret\n").unwrap();
        std::fs::write(
            project.join("compose.yml"),
            "services:\n  web:\n    image: nginx\n",
        )
        .unwrap();
        let app: crate::config::AppConfig = toml::from_str("name = \"shop\"").unwrap();
        let release = crate::deploy::local_release::collect(&project, &app, &[], &[]).unwrap();
        assert!(
            release.files.iter().all(|f| !f.path.starts_with("k8s")),
            "{:?}",
            release.files.iter().map(|f| &f.path).collect::<Vec<_>>()
        );
    }

    /// `--with-secrets` fills the backup's files from this machine's: the
    /// password as restic reads it (trimmed), the S3 keys, the SFTP key
    /// whole; a missing file is named, never a value shown.
    #[test]
    fn the_backups_secrets_come_from_this_machines_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("backup.pw"), "s3cr3t-pw\n").unwrap();
        std::fs::write(
            dir.path().join("s3.env"),
            "AWS_ACCESS_KEY_ID=AKID\nAWS_SECRET_ACCESS_KEY=sk-1\n",
        )
        .unwrap();
        let config = crate::config::Config::parse(
            "[app]\nname = \"shop\"\n[backup]\nrepository = \"s3:https://s3.example.com/b/shop\"\ns3_credentials_file = \"s3.env\"\npassword_file = \"backup.pw\"\n",
            Path::new("vpsup.toml"),
        )
        .unwrap();
        let backup = config.backup.unwrap();
        let env = backup_env(&backup, dir.path()).unwrap();
        let file = k8s::SecretFile {
            path: "base/secrets/backup.env".into(),
            keys: [
                "RESTIC_PASSWORD",
                "RESTIC_REPOSITORY",
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
            ]
            .map(String::from)
            .to_vec(),
            source: SecretSource::Backup,
        };
        assert_eq!(
            k8s::with_env(&file, &env),
            "RESTIC_PASSWORD=s3cr3t-pw\nRESTIC_REPOSITORY=s3:https://s3.example.com/b/shop\nAWS_ACCESS_KEY_ID=AKID\nAWS_SECRET_ACCESS_KEY=sk-1\n"
        );

        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n";
        std::fs::write(dir.path().join("box"), key).unwrap();
        assert_eq!(read_local(dir.path(), Some(Path::new("box"))).unwrap(), key);
        let err = read_local(dir.path(), Some(Path::new("nope"))).unwrap_err();
        assert!(err.starts_with("reading ") && err.contains("nope"), "{err}");
        std::fs::remove_file(dir.path().join("backup.pw")).unwrap();
        let err = backup_env(&backup, dir.path()).unwrap_err();
        assert!(err.contains("backup.pw"), "{err}");
    }
}
