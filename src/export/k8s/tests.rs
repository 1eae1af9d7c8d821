//! The mapping rules, one test each, on the README's example app.

use super::*;

const COMPOSE: &str = "services:
  frontend:
    build: ./frontend
    healthcheck: { test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1/\"], interval: 5s, retries: 10 }
  backend:
    build: ./backend
    environment:
      DATABASE_URL: postgresql://app:${POSTGRES_PASSWORD}@db:5432/app
      SECRET_KEY: ${SECRET_KEY}
    depends_on: [db]
  db:
    image: postgres:16
    environment: { POSTGRES_USER: app, POSTGRES_PASSWORD: \"${POSTGRES_PASSWORD}\" }
    volumes: [pgdata:/var/lib/postgresql/data]
    healthcheck: { test: [\"CMD\", \"pg_isready\", \"-U\", \"app\"], interval: 5s, retries: 10 }
volumes:
  pgdata:
";

const TOML: &str = "[app]
name = \"doctor\"
[app.secrets]
generate = [\"POSTGRES_PASSWORD\", \"SECRET_KEY\"]
[[sites]]
domain = \"doctor.example.com\"
service = \"frontend\"
port = 80
routes = [{ path = \"/api/\", service = \"backend\", port = 8000 }]
health = \"/\"
[backup]
repository = \"sftp:u1@backup.example.com:/doctor\"
sftp_identity_file = \"~/.ssh/storagebox\"
";

fn tree(measured: Option<&Measured>) -> Tree {
    plan_of(TOML, COMPOSE, measured).unwrap()
}

fn plan_of(toml: &str, compose: &str, measured: Option<&Measured>) -> Result<Tree, String> {
    let config = crate::config::Config::parse(toml, std::path::Path::new("vpsup.toml")).unwrap();
    let compose: Value = serde_saphyr::from_str(compose).unwrap();
    let options = Options {
        namespace: "doctor".into(),
        storage_class: Some("fast".into()),
        issuer: "letsencrypt".into(),
    };
    plan(&Input {
        app: config.app.as_ref().unwrap(),
        sites: &config.sites,
        backup: config.backup.as_ref(),
        compose: &compose,
        env_keys: BTreeSet::new(),
        options: &options,
        measured,
    })
}

fn file<'a>(tree: &'a Tree, path: &str) -> &'a str {
    tree.files
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, c)| c.as_str())
        .unwrap_or_else(|| {
            panic!(
                "no {path} in {:?}",
                tree.files.iter().map(|f| &f.0).collect::<Vec<_>>()
            )
        })
}

fn object(tree: &Tree, path: &str) -> Value {
    serde_saphyr::from_str(file(tree, path)).unwrap()
}

#[test]
fn stateless_services_are_deployments_with_readiness_and_a_gentler_liveness() {
    let t = tree(None);
    let frontend = object(&t, "base/frontend-deployment.yaml");
    let c = &frontend["spec"]["template"]["spec"]["containers"][0];
    // The site's health path, on the site's port.
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], 80);
    assert!(
        c["livenessProbe"]["failureThreshold"].as_u64()
            > c["readinessProbe"]["failureThreshold"].as_u64()
    );
    let backend = object(&t, "base/backend-deployment.yaml");
    let c = &backend["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["readinessProbe"]["tcpSocket"]["port"], 8000);
}

#[test]
fn databases_are_statefulsets_with_their_engine_probe_and_a_headless_service() {
    let t = tree(None);
    let db = object(&t, "base/db-statefulset.yaml");
    let c = &db["spec"]["template"]["spec"]["containers"][0];
    assert!(c["readinessProbe"]["exec"]["command"][2]
        .as_str()
        .unwrap()
        .starts_with("pg_isready"));
    assert_eq!(c["livenessProbe"]["tcpSocket"]["port"], 5432);
    assert_eq!(db["spec"]["serviceName"], "db");
    let svc = object(&t, "base/db-service.yaml");
    assert_eq!(svc["spec"]["clusterIP"], "None");
}

#[test]
fn claims_are_sized_from_usage_with_headroom_not_100mi() {
    let unmeasured = object(&tree(None), "base/db-statefulset.yaml");
    let claim = &unmeasured["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "pgdata");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "10Gi");
    assert_eq!(claim["spec"]["storageClassName"], "fast");
    let measured = Measured {
        host: "web".into(),
        data_bytes: BTreeMap::from([("pgdata".to_string(), 3 * GIB + 1)]),
        ..Default::default()
    };
    let db = object(&tree(Some(&measured)), "base/db-statefulset.yaml");
    assert_eq!(
        db["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "7Gi"
    );
    assert_eq!(size_for(Some(1)), GIB);
}

#[test]
fn secrets_are_never_inlined() {
    let t = tree(None);
    // No env value is a compose variable (probes' shell scripts may use the
    // container's own variables).
    for (path, _) in t
        .files
        .iter()
        .filter(|(p, _)| p.ends_with("-deployment.yaml") || p.ends_with("-statefulset.yaml"))
    {
        let o = object(&t, path);
        for var in o["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let value = var["value"].as_str().unwrap_or_default();
            assert!(!value.contains("${"), "{path}: {var}");
        }
    }
    let backend = object(&t, "base/backend-deployment.yaml");
    let env = &backend["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(env[0]["name"], "POSTGRES_PASSWORD");
    assert_eq!(
        env[0]["valueFrom"]["secretKeyRef"]["name"],
        "doctor-generated"
    );
    let k = object(&t, "base/kustomization.yaml");
    assert_eq!(k["secretGenerator"][0]["envs"][0], "secrets/generated.env");
    let generated = t
        .secret_files
        .iter()
        .find(|f| f.source == SecretSource::Generated)
        .unwrap();
    assert_eq!(generated.keys, ["POSTGRES_PASSWORD", "SECRET_KEY"]);
    assert!(placeholder(generated).contains("\nPOSTGRES_PASSWORD=\n"));
}

#[test]
fn depends_on_a_database_waits_for_its_port() {
    let backend = object(&tree(None), "base/backend-deployment.yaml");
    let init = &backend["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(init["name"], "wait-for-db");
    assert!(init["command"][2]
        .as_str()
        .unwrap()
        .contains("nc -z db 5432"));
}

#[test]
fn each_site_is_an_ingress_with_cert_manager() {
    let ing = object(&tree(None), "base/doctor-example-com-ingress.yaml");
    assert_eq!(
        ing["metadata"]["annotations"]["cert-manager.io/cluster-issuer"],
        "letsencrypt"
    );
}

#[test]
fn backups_are_a_cronjob_per_database_doing_what_vpsup_backup_does() {
    let t = tree(None);
    let job = object(&t, "base/db-backup-cronjob.yaml");
    assert_eq!(job["spec"]["schedule"], "0 3 * * *");
    let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert!(pod["initContainers"][0]["env"][0]["value"]
        .as_str()
        .unwrap()
        .contains("pg_dumpall"));
    assert!(pod["containers"][0]["command"][2]
        .as_str()
        .unwrap()
        .contains("--keep-daily 7"));
    assert_eq!(
        pod["containers"][0]["envFrom"][0]["secretRef"]["name"],
        "doctor-backup"
    );
    assert!(file(&t, "base/backup-rbac.yaml").contains("pods/exec"));
}

/// An SFTP repository is reached as the host reaches it (the same ssh
/// command, the key and known_hosts at the host's paths), from a Secret
/// mounted read-only, its files placeholders in the git-ignored secrets/;
/// host keys pinned, and the README says where to find them.
#[test]
fn an_sftp_backup_has_its_key_and_known_hosts_mounted_read_only() {
    let t = tree(None);
    let job = object(&t, "base/db-backup-cronjob.yaml");
    let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let upload = &pod["containers"][0];
    let ssh = "restic() { command restic -o 'sftp.command=ssh -F /dev/null -i /etc/vpsup/backup/doctor/ssh_key -o IdentitiesOnly=yes -o UserKnownHostsFile=/etc/vpsup/backup/doctor/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=30 -o ServerAliveInterval=30 u1@backup.example.com -s sftp' \"$@\"; }\nrestic snapshots";
    let script = upload["command"][2].as_str().unwrap();
    assert!(script.starts_with(ssh), "{script}");
    assert_eq!(
        pod["volumes"][1],
        json!({ "name": "sftp", "secret": { "secretName": "doctor-backup-sftp", "defaultMode": 0o400 } })
    );
    assert_eq!(
        upload["volumeMounts"][1],
        json!({ "name": "sftp", "mountPath": "/etc/vpsup/backup/doctor", "readOnly": true })
    );
    let k = object(&t, "base/kustomization.yaml");
    assert_eq!(
        k["secretGenerator"][2],
        json!({ "name": "doctor-backup-sftp", "files": ["ssh_key=secrets/backup-ssh-key", "known_hosts=secrets/backup-known-hosts"] })
    );
    let key = t
        .secret_files
        .iter()
        .find(|f| f.source == SecretSource::SftpKey)
        .unwrap();
    assert_eq!(key.path, "base/secrets/backup-ssh-key");
    assert!(placeholder(key).starts_with("# Placeholder: replace this file with the SFTP key"));
    let readme = file(&t, "README.md");
    assert!(
        readme.contains("`base/secrets/backup-known-hosts` needs the SFTP server's host keys, and vpsup.toml pins none")
            && readme.contains("`ssh-keyscan backup.example.com`"),
        "{readme}"
    );
    // No SFTP, none of it.
    let s3 = TOML.replace(
        "repository = \"sftp:u1@backup.example.com:/doctor\"\nsftp_identity_file = \"~/.ssh/storagebox\"",
        "repository = \"s3:https://s3.example.com/b/doctor\"\ns3_credentials_file = \"s3.env\"",
    );
    let t = plan_of(&s3, COMPOSE, None).unwrap();
    let job = file(&t, "base/db-backup-cronjob.yaml");
    assert!(
        !job.contains("sftp") && job.contains("restic snapshots"),
        "{job}"
    );
    assert!(t
        .secret_files
        .iter()
        .all(|f| f.source.whole_file().is_none()));
}

#[test]
fn resources_come_from_what_the_container_uses() {
    let measured = Measured {
        host: "web".into(),
        usage: BTreeMap::from([(
            "backend".to_string(),
            Usage {
                cpu_millis: 100,
                memory_bytes: 100 * MIB,
            },
        )]),
        ..Default::default()
    };
    let t = tree(Some(&measured));
    let patches = file(&t, "overlays/production/resources.yaml");
    assert!(patches.contains("cpu: 130m"), "{patches}");
    assert!(patches.contains("memory: 128Mi"), "{patches}");
    assert!(patches.contains("memory: 256Mi"), "{patches}");
}

#[test]
fn built_images_are_named_for_a_registry_in_the_overlay() {
    let t = tree(None);
    let k = object(&t, "overlays/production/kustomization.yaml");
    let images = k["images"].as_array().unwrap();
    assert!(images.iter().any(|i| i["name"] == "vpsup-doctor-backend"
        && i["newName"] == "registry.example.com/vpsup-doctor-backend"));
    assert!(images
        .iter()
        .any(|i| i["name"] == "postgres" && i["newTag"] == "16"));
    assert!(
        file(&t, "README.md").contains("docker push registry.example.com/vpsup-doctor-frontend:v1")
    );
}

#[test]
fn the_same_input_gives_the_same_bytes() {
    assert_eq!(tree(None), tree(None));
}

/// An env file is read as compose reads it: a key's PEM value spanning
/// lines gives no other "key" (a line of the key would end up in the
/// tree's README), `NAME: value` counts, and a value spanning lines is
/// never cut to its first line in a secret file.
#[test]
fn env_files_are_read_as_compose_reads_them() {
    let text = "TLS_KEY=\"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC=\n-----END PRIVATE KEY-----\"\nGREETING: hello # a comment\nexport MODE='a b'\n";
    let keys = env_file_keys(text).unwrap();
    assert_eq!(
        keys.into_iter().collect::<Vec<_>>(),
        ["GREETING", "MODE", "TLS_KEY"]
    );
    let file = SecretFile {
        path: "base/secrets/env.env".into(),
        keys: vec!["GREETING".into(), "MODE".into(), "TLS_KEY".into()],
        source: SecretSource::EnvFiles,
    };
    let written = with_values(&file, text).unwrap();
    assert!(written.contains("GREETING=hello\n"), "{written}");
    assert!(written.contains("MODE=a b\n"), "{written}");
    assert!(written.contains("\nTLS_KEY=\n"), "{written}");
    assert!(!written.contains("MIIE"), "{written}");
}

/// A secret in a command or a shell healthcheck reaches the manifest as a
/// reference to the container's own variable, never as a value; without
/// that variable the export stops, saying what to add.
#[test]
fn a_command_reads_a_secret_through_the_containers_env() {
    let compose = COMPOSE.replace(
        "    depends_on: [db]\n",
        "    depends_on: [db]\n    command: [\"serve\", \"--key=${SECRET_KEY}\", \"--cost=5$$\"]\n    healthcheck: { test: \"check --key ${SECRET_KEY}\" }\n",
    );
    let t = plan_of(TOML, &compose, None).unwrap();
    let backend = object(&t, "base/backend-deployment.yaml");
    let c = &backend["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["args"],
        json!(["serve", "--key=$(SECRET_KEY)", "--cost=5$"])
    );
    assert_eq!(
        c["readinessProbe"]["exec"]["command"][2],
        "check --key \"${SECRET_KEY}\""
    );
    let without = compose.replace("      SECRET_KEY: ${SECRET_KEY}\n", "");
    assert_eq!(
        plan_of(TOML, &without, None).unwrap_err(),
        "service backend: its command uses the secret SECRET_KEY (never written into a manifest): give backend `SECRET_KEY: ${SECRET_KEY}` in its environment, and the command reads it from there as $(SECRET_KEY)"
    );
}
