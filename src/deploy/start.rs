//! Starting a release, serving it, and going back when either fails: the
//! health gate (`docker compose up --wait`, then each site's health path on
//! its loopback port), activation (`AppPaths::activate_script`), and the
//! restore of the previous release after a failure, all under the app's
//! backup lock (`holding_backups`). The multi-part scripts are built and
//! read here, with one `Sections` per run; the async functions only run them.

use std::collections::BTreeMap;
use std::future::Future;

use time::OffsetDateTime;

use super::compose_cli::{self, Stack};
use super::error::StepError;
use super::host_releases;
use super::ports;
use super::remote::{self, AppPaths, Deployed, ReleaseMeta};
use super::switch::Slot;
use crate::acme::store::Store;
use crate::config::Config;
use crate::transport::script::quote;
use crate::transport::sections::Sections;
use crate::transport::{plain_text, ExecRequest, Transport, TransportError};

/// How the release in `dir` runs, as its `meta` recorded.
pub fn stack_for<'a>(
    app: &'a str,
    dir: &'a str,
    meta: &'a ReleaseMeta,
    secrets: &'a str,
) -> Stack<'a> {
    Stack {
        project: meta.project(app),
        dir,
        files: &meta.compose_files,
        env_files: &meta.env_files,
        secrets_env: meta.secrets.then_some(secrets),
        dot_env: meta.dot_env,
    }
}

/// How release `id` runs, as it recorded (a rollback starts it so).
pub async fn read_meta(
    transport: &dyn Transport,
    paths: &AppPaths,
    id: &str,
) -> Result<ReleaseMeta, StepError> {
    let path = format!("{}/{}", paths.release(id), remote::META_FILE);
    let out = transport
        .run_ok(
            "reading the previous release",
            ExecRequest::new(format!("cat {}", quote(&path))).become_root(true),
        )
        .await?;
    serde_json::from_str(&out.stdout_str()).map_err(|e| StepError::UnreadableMeta {
        release: id.to_string(),
        error: e.to_string(),
    })
}

/// The gate's part printed only when `docker compose up` failed: the
/// containers' states.
const COMPOSE_FAILED: &str = "compose-failed";
/// The gate's part once compose is up: each health path's answer.
const HEALTH: &str = "health";

/// What failed in the health gate.
#[derive(Debug, PartialEq, Eq)]
pub struct Unhealthy {
    pub text: String,
    /// The services that failed (their logs are shown).
    pub services: Vec<String>,
}

/// The health gate of `compose_cli` (as root): the app's containers under its
/// other compose project retired, `up --wait`, then each `(path, port)` of
/// `health`; it fails when either fails.
pub fn gate_script(
    sections: &Sections,
    paths: &AppPaths,
    stack: &Stack<'_>,
    health: &[(String, u16)],
    timeout: u32,
) -> String {
    // The app's containers under its other project name would hold its ports.
    let other = if stack.project == paths.app {
        remote::project_name(&paths.app)
    } else {
        paths.app.clone()
    };
    gate(
        sections,
        &paths.retire_script(&other),
        &stack.up(timeout),
        stack,
        health,
        timeout,
    )
}

/// A health gate (as root): after `before`, the command `up` that starts
/// (some of) `stack`'s containers, then each `(path, port)` of `health`;
/// `parse_gate` reads what it printed.
pub fn gate(
    sections: &Sections,
    before: &str,
    up: &str,
    stack: &Stack<'_>,
    health: &[(String, u16)],
    timeout: u32,
) -> String {
    format!(
        "{before}if ! {up} >&2; then\n{failed}{ps}\nexit 1\nfi\n{health_part}{health}",
        failed = sections.header(COMPOSE_FAILED),
        ps = stack.ps(),
        health_part = sections.header(HEALTH),
        health = compose_cli::health_probe_script(health, timeout),
    )
}

/// Why a gate failed, from what it printed. `compose_stderr`: the end of
/// `docker compose up`'s own messages (a port already taken, a failed
/// build), shown when compose itself failed.
pub fn parse_gate(
    sections: &Sections,
    stdout: &str,
    compose_stderr: &str,
    ports: &BTreeMap<ports::Target, u16>,
) -> Unhealthy {
    let parts = sections.parse(stdout);
    let mut services = Vec::new();
    let mut text = Vec::new();
    let said = compose_stderr.trim();
    if let Some(ps) = parts.optional(COMPOSE_FAILED) {
        for c in remote::parse_containers(ps) {
            if !c.is_up() {
                let health = if c.status.is_empty() {
                    String::new()
                } else {
                    format!(", {}", c.status)
                };
                text.push(format!("{}: {}{health}", c.name, c.state));
                services.push(c.name);
            }
        }
        text.push(if said.is_empty() {
            "docker compose up failed".to_string()
        } else {
            format!("docker compose up said: {said}")
        });
    } else {
        match parts.get(HEALTH) {
            Ok(health) => {
                for line in health.lines().filter(|l| l.starts_with("fail ")) {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    if let [_, port, path, code] = words[..] {
                        let port: u16 = port.parse().unwrap_or(0);
                        let service = ports
                            .iter()
                            .find(|(_, p)| **p == port)
                            .map(|((s, _), _)| s.clone())
                            .unwrap_or_default();
                        text.push(format!("{service} answers {path} with HTTP {code}"));
                        services.push(service);
                    }
                }
            }
            // Neither part: the script did not get that far.
            Err(missing) => {
                text.push(missing.to_string());
                if !said.is_empty() {
                    text.push(format!("the host said: {said}"));
                }
            }
        }
    }
    services.sort();
    services.dedup();
    Unhealthy {
        text: text.join("; "),
        services,
    }
}

/// Makes release `id` the one nginx serves (its site files for `slot`, when
/// its site services switch blue/green) and `current` points at, and prunes
/// releases beyond `keep`; how long nginx took to switch, in ms.
#[allow(clippy::too_many_arguments)]
pub async fn activate(
    transport: &dyn Transport,
    config: &Config,
    paths: &AppPaths,
    id: &str,
    slot: Option<Slot>,
    known: &[String],
    keep: usize,
    owner: &str,
) -> Result<Option<u64>, TransportError> {
    let mut all = known.to_vec();
    if !all.iter().any(|r| r == id) {
        all.push(id.to_string());
    }
    all.sort();
    let prune = host_releases::to_prune(&all, id, keep);
    let reload = match &config.acme {
        Some(acme) => Store {
            transport,
            dir: acme.store.to_string(),
        }
        .reload_script(&acme.reload),
        None => "nginx -t && systemctl reload nginx".to_string(),
    };
    let now = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let record = Deployed::record(id, &now, owner);
    transport
        .run_ok(
            "serving the new release",
            ExecRequest::piped(paths.activate_script(id, slot, &reload, &prune, &record))
                .become_root(true),
        )
        .await
        .map(|out| remote::parse_switched(&out.stdout_str()))
}

/// Runs `restart` (a release started, gated and served, or the one before
/// started again) holding the app's backup lock at `backup_lock`, inside the
/// deploy lock; `None`: the app has no backups on the host, nothing to hold.
/// A backup or drill the host's timer starts meanwhile waits for it instead
/// of failing mid-dump, and a service a backup stopped to copy its volume
/// is not started under it. While a backup, drill or restore holds it,
/// `restart` does not run: refused at once, naming the holder. `plain`
/// runs the lock's own scripts (not as the deploy lock's steps).
pub async fn holding_backups<T>(
    plain: &dyn Transport,
    backup_lock: Option<&str>,
    owner: &str,
    restart: impl Future<Output = Result<T, StepError>>,
) -> Result<T, StepError> {
    let Some(path) = backup_lock else {
        return restart.await;
    };
    crate::backup::lock::hold_within(plain, path, owner, restart)
        .await
        .map_err(|e| StepError::Backup(format!("{e}; nothing was started")))?
        .into_result("backup", "interrupted")
}

/// The restore's parts: the failing services' logs, then one of the two
/// outcomes (the second with the end of what compose said).
const LOGS: &str = "logs";
const RESTORED: &str = "restored";
const NOT_RESTORED: &str = "not-restored";

/// The recovery after a failed start (as root): the last log lines of
/// `services` (of `logs_from`), then `restart` (what brings the previous
/// state back; `Err`: why nothing is restarted), and when that worked the
/// failed release's directory `forget` removed. `parse_restore` reads it.
pub fn recovery_script(
    sections: &Sections,
    logs_from: &Stack<'_>,
    services: &[String],
    restart: Result<String, String>,
    forget: Option<&str>,
) -> (String, Result<(), String>) {
    let mut script = sections.header(LOGS);
    for service in services {
        script.push_str(&format!(
            "echo '--- {service} (last 30 lines)'\nlog=$({} 2>&1); printf '%s\\n' \"${{log:-(nothing logged)}}\"\n",
            logs_from.logs(service, 30)
        ));
    }
    let forget = forget.map_or(String::new(), |dir| format!("rm -rf -- {}; ", quote(dir)));
    match restart {
        Ok(restart) => {
            script.push_str(&format!(
                "if out=$({{ {restart}\n}} 2>&1); then {forget}{restored}else {not_restored}printf '%s\\n' \"$out\" | tail -n 12; fi\n",
                restored = sections.header(RESTORED),
                not_restored = sections.header(NOT_RESTORED),
            ));
            (script, Ok(()))
        }
        Err(why) => (script, Err(why)),
    }
}

/// What `recovery_script` printed: the logs, and whether the previous
/// release runs again (else why not). `not_started`: the script's own `Err`;
/// `stderr_tail`: the end of its stderr, for a script that stopped early.
pub fn parse_restore(
    sections: &Sections,
    stdout: &str,
    stderr_tail: &str,
    not_started: Result<(), String>,
) -> (String, Result<(), String>) {
    let parts = sections.parse(stdout);
    let logs = parts.optional(LOGS).map(plain_text).unwrap_or_default();
    let outcome = match not_started {
        Err(why) => Err(why),
        Ok(()) if parts.has(RESTORED) => Ok(()),
        Ok(()) => match parts.optional(NOT_RESTORED) {
            Some(said) => Err(plain_text(said).trim().to_string()),
            None => Err(format!("the rollback script did not finish: {stderr_tail}")),
        },
    };
    (logs, outcome)
}

/// Runs a `recovery_script` built with `sections`.
pub async fn run_recovery(
    transport: &dyn Transport,
    sections: &Sections,
    (script, not_started): (String, Result<(), String>),
) -> (String, Result<(), String>) {
    match transport
        .exec(ExecRequest::piped(script).become_root(true))
        .await
    {
        Ok(out) => parse_restore(
            sections,
            &out.stdout_str(),
            &out.stderr_tail(5),
            not_started,
        ),
        Err(e) => (String::new(), Err(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::script::testing::write_executable;

    fn meta(project: Option<&str>) -> ReleaseMeta {
        ReleaseMeta {
            health: vec![("/health".into(), 22000)],
            project: project.map(str::to_string),
            ..crate::deploy::remote::testing::meta_with(&[], &[])
        }
    }

    /// Runs `script` with stand-ins first on PATH: (stdout, stderr, success).
    fn run(bin: &std::path::Path, script: &str) -> (String, String, bool) {
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("PATH={}:$PATH\n{script}", bin.display())])
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.success(),
        )
    }

    #[test]
    fn an_unhealthy_gate_names_services_and_what_compose_said() {
        let s = Sections::with_nonce(3);
        let part = |name: &str, text: &str| format!("\n{} {name}\n{text}", s.marker());
        let ports = BTreeMap::from([(("backend".to_string(), 8000), 22000)]);
        let why = parse_gate(
            &s,
            &part(
                COMPOSE_FAILED,
                "backend\trunning\tunhealthy\ndb\tcreated\t\nfrontend\trunning\thealthy\n",
            ),
            "Error response from daemon: port 5432 is already allocated",
            &ports,
        );
        assert_eq!(why.services, ["backend", "db"]);
        assert_eq!(
            why.text,
            "backend: running, unhealthy; db: created; docker compose up said: Error response from daemon: port 5432 is already allocated"
        );
        let why = parse_gate(
            &s,
            &part(HEALTH, "ok 21000 /\nfail 22000 /health 500\n"),
            "",
            &ports,
        );
        assert_eq!(
            (why.services, why.text),
            (
                vec!["backend".to_string()],
                "backend answers /health with HTTP 500".to_string()
            )
        );
        // A gate that stopped before either part says so.
        let why = parse_gate(&s, "", "sh: killed", &ports);
        assert_eq!(
            why.text,
            "the host's output has no `health` part (the script stopped early or printed something unexpected); the host said: sh: killed"
        );
    }

    /// The real gate script with a stand-in `docker`: compose failing with
    /// a container that prints the old bare marker in its status reads
    /// back as that container; compose succeeding goes on to the health
    /// probe (a port nothing listens on).
    #[test]
    fn the_gate_script_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let docker = |up_exit: u32| {
            write_executable(
                &bin.join("docker"),
                &format!(
                    "#!/bin/sh\ncase \"$*\" in\n  *' up '*) echo 'port is already allocated' >&2; exit {up_exit} ;;\n  *' ps '*) printf 'backend\\trunning\\tunhealthy @@failed compose\\ndb\\trunning\\thealthy\\n' ;;\nesac\n"
                ),
            )
        };
        let paths = AppPaths::new("shop");
        let meta = meta(Some("vpsup-shop"));
        let secrets = paths.secrets();
        let stack = stack_for("shop", "/srv/vpsup/shop/releases/r2", &meta, &secrets);
        let ports = BTreeMap::from([(("backend".to_string(), 8000), 1)]);
        let s = Sections::random();

        docker(1);
        let (out, err, ok) = run(&bin, &gate_script(&s, &paths, &stack, &meta.health, 0));
        assert!(!ok);
        let why = parse_gate(&s, &out, &err, &ports);
        assert_eq!(
            why.text,
            "backend: running, unhealthy @@failed compose; docker compose up said: port is already allocated"
        );
        assert_eq!(why.services, ["backend"]);

        docker(0);
        let health = [("/health".to_string(), 1)];
        let (out, err, ok) = run(&bin, &gate_script(&s, &paths, &stack, &health, 0));
        assert!(!ok);
        let why = parse_gate(&s, &out, &err, &ports);
        assert_eq!(why.text, "backend answers /health with HTTP 000");
        assert_eq!(why.services, ["backend"]);
    }

    /// The real restore script with a stand-in `docker`: logs that print the
    /// old `@@restored` marker cannot pass for a restore that failed; a
    /// restore that worked removes the failed release.
    /// A deploy's restart holds the app's backup lock for its span only: a
    /// timer's backup that starts meanwhile waits and runs after it; while a
    /// backup holds the lock the restart does not run; without backups on
    /// the host nothing is locked.
    #[tokio::test]
    async fn a_restart_holds_the_backup_lock_for_its_span_only() {
        use crate::backup::lock::{self, Runner};
        use crate::hostlock::Wait;
        use crate::transport::LocalTransport;
        use std::time::{Duration, Instant};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.lock").display().to_string();
        let transport = LocalTransport::new("test", true);
        let timer = Runner::Timer(Wait {
            up_to: Duration::from_secs(30),
            every: Duration::from_millis(100),
        });
        let restart = async {
            let owner = std::fs::read_to_string(format!("{path}/owner")).unwrap();
            assert_eq!(owner, "ana@laptop (vpsup deploy)");
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(Instant::now())
        };
        let backup = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            lock::hold(&transport, &path, "the backup timer", timer, async {
                Instant::now()
            })
            .await
        };
        let (restarted, backup) = tokio::join!(
            holding_backups(
                &transport,
                Some(&path),
                "ana@laptop (vpsup deploy)",
                restart
            ),
            backup
        );
        let backed_up = backup.unwrap().outcome.unwrap();
        assert!(
            backed_up >= restarted.unwrap(),
            "the backup ran during the restart"
        );
        assert!(!std::path::Path::new(&path).exists());

        let ran = std::sync::atomic::AtomicBool::new(false);
        let refused = lock::hold(
            &transport,
            &path,
            "the backup timer on web-1",
            Runner::Operator,
            async {
                holding_backups(
                    &transport,
                    Some(&path),
                    "ana@laptop (vpsup deploy)",
                    async {
                        ran.store(true, std::sync::atomic::Ordering::SeqCst);
                        Ok(())
                    },
                )
                .await
            },
        )
        .await
        .unwrap()
        .outcome
        .unwrap()
        .unwrap_err()
        .to_string();
        assert!(
            refused.contains("locked by the backup timer on web-1")
                && refused.ends_with("; nothing was started"),
            "{refused}"
        );
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));

        holding_backups(&transport, None, "ana@laptop (vpsup deploy)", async {
            assert!(!std::path::Path::new(&path).exists());
            Ok(())
        })
        .await
        .unwrap();
    }
}
