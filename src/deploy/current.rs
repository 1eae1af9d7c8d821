//! The release an app runs now (`/srv/vpsup/<app>/current`), for the
//! commands that work on its stack: `exec` and `logs`.

use super::compose_cli::Stack;
use super::remote::{AppPaths, ReleaseMeta, META_FILE};
use super::start::stack_for;
use super::switch::{self, Placement, Slot};
use crate::transport::script::{quote, ABSENT_EXIT};
use crate::transport::{ExecRequest, Transport, TransportError};

/// The current release of an app on one host.
pub struct Current {
    app: String,
    dir: String,
    secrets: String,
    meta: ReleaseMeta,
    /// The slot nginx serves (the app's `serving` file).
    serving: Option<Slot>,
    /// The serving slot's project and compose files, when its site
    /// services run there.
    slot: Option<(String, Vec<String>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CurrentError {
    #[error(
        "app {app} is not deployed on {host} ({dir} has no release): run `vpsup deploy` first"
    )]
    NotDeployed {
        app: String,
        host: String,
        dir: String,
    },
    #[error("{path} on {host}: {error}")]
    Unreadable {
        host: String,
        path: String,
        error: String,
    },
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl crate::exit::ExitStatus for CurrentError {
    fn exit_code(&self) -> u8 {
        crate::exit::FAILED
    }
}

impl Current {
    /// Reads how the current release runs, and which slot serves (one
    /// round trip, as root: a release is root's).
    pub async fn read(transport: &dyn Transport, app: &str) -> Result<Current, CurrentError> {
        Current::read_at(transport, &AppPaths::new(app)).await
    }

    async fn read_at(transport: &dyn Transport, paths: &AppPaths) -> Result<Current, CurrentError> {
        let app = paths.app.as_str();
        let dir = format!("{}/current", paths.dir);
        let path = format!("{dir}/{META_FILE}");
        let out = transport
            .exec(ExecRequest::new(read_script(&path, &paths.serving_file())).become_root(true))
            .await?;
        match out.exit_status {
            Some(0) => {}
            Some(ABSENT_EXIT) => {
                return Err(CurrentError::NotDeployed {
                    app: app.to_string(),
                    host: transport.describe(),
                    dir,
                })
            }
            _ => return Err(transport.failure(&format!("reading {path}"), &out).into()),
        }
        let text = out.stdout_str();
        let (serving, meta) = text.split_once('\n').unwrap_or(("", &text));
        let meta: ReleaseMeta =
            serde_json::from_str(meta).map_err(|e| CurrentError::Unreadable {
                host: transport.describe(),
                path,
                error: e.to_string(),
            })?;
        Ok(Current::new(
            app,
            dir,
            paths.secrets(),
            meta,
            Slot::parse(serving),
        ))
    }

    fn new(
        app: &str,
        dir: String,
        secrets: String,
        meta: ReleaseMeta,
        serving: Option<Slot>,
    ) -> Current {
        let slot = Placement::new(&meta, serving)
            .slot()
            .map(|slot| (slot.project(app), switch::slot_files(&meta, slot)));
        Current {
            app: app.to_string(),
            dir,
            secrets,
            meta,
            serving,
            slot,
        }
    }

    /// Its compose stack in the app's project, run from the `current` link
    /// (as backups do).
    pub fn stack(&self) -> Stack<'_> {
        stack_for(&self.app, &self.dir, &self.meta, &self.secrets)
    }

    /// The stack of `place`: the app's project (`None`), or the serving
    /// slot's (its compose files plus the slot's override).
    fn stack_in(&self, place: Option<Slot>) -> Stack<'_> {
        let app = self.stack();
        match (place, &self.slot) {
            (Some(_), Some((project, files))) => switch::slot_stack(&app, project, files),
            _ => app,
        }
    }

    /// The stack `service` runs in.
    pub fn stack_of(&self, service: &str) -> Stack<'_> {
        self.stack_in(self.placement().slot_of(service))
    }

    /// The stacks `services` (every service when empty) run in, each with
    /// those of them that run there (`Placement::split`).
    pub fn stacks_for(&self, services: &[String]) -> Vec<(Stack<'_>, Vec<String>)> {
        self.placement()
            .split(services)
            .into_iter()
            .map(|(place, there)| (self.stack_in(place), there))
            .collect()
    }

    fn placement(&self) -> Placement<'_> {
        Placement::new(&self.meta, self.serving)
    }
}

/// Prints the serving slot's line (empty without one), then the release's
/// `release.json`; `ABSENT_EXIT` without it.
fn read_script(meta: &str, serving: &str) -> String {
    format!(
        "[ -e {meta} ] || exit {ABSENT_EXIT}\nprintf '%s\\n' \"$(head -n 1 {serving} 2>/dev/null)\"\nexec cat -- {meta}\n",
        meta = quote(meta),
        serving = quote(serving)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::compose_cli::{logs_script, LogsQuery};
    use crate::deploy::remote::testing::meta_with;
    use crate::transport::script::testing::write_executable;
    use crate::transport::LocalTransport;

    /// A current release whose `web` runs in a slot, read with the real
    /// script: while `serving` says green, `web` is found in the green
    /// slot's project with the slot's stack, `db` in the app's; without a
    /// serving slot, both in the app's. The logs script, run with a
    /// stand-in `docker` that logs its arguments, asks each project for
    /// its own.
    #[tokio::test]
    async fn site_services_are_found_in_the_serving_slot() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AppPaths {
            app: "shop".into(),
            dir: dir.path().display().to_string(),
            sites_dir: dir.path().join("sites").display().to_string(),
        };
        let t = LocalTransport::new("test", true);
        let not_yet = Current::read_at(&t, &paths).await.err().unwrap();
        assert!(
            matches!(not_yet, CurrentError::NotDeployed { .. }),
            "{not_yet}"
        );

        let release = dir.path().join("releases/r1");
        std::fs::create_dir_all(release.join(".vpsup")).unwrap();
        let meta = meta_with(&[], &["web"]);
        std::fs::write(release.join(META_FILE), serde_json::to_vec(&meta).unwrap()).unwrap();
        std::os::unix::fs::symlink("releases/r1", dir.path().join("current")).unwrap();
        let current_dir = format!("{}/current", paths.dir);
        let project_of = |stack: &Stack<'_>| stack.project.to_string();

        let current = Current::read_at(&t, &paths).await.unwrap();
        assert_eq!(project_of(&current.stack_of("web")), "vpsup-shop");
        assert_eq!(current.stacks_for(&[]).len(), 1);

        std::fs::write(paths.serving_file(), "green\n").unwrap();
        let current = Current::read_at(&t, &paths).await.unwrap();
        let web = current.stack_of("web");
        assert_eq!(web.project, "vpsup_green-shop");
        assert_eq!(web.files, ["compose.yml", ".vpsup/slot-green.json"]);
        assert_eq!(web.dir, current_dir);
        assert_eq!(project_of(&current.stack_of("db")), "vpsup-shop");
        assert_eq!(current.stack_of("db").files, ["compose.yml"]);

        let bin = tempfile::tempdir().unwrap();
        let log = bin.path().join("calls");
        write_executable(
            &bin.path().join("docker"),
            &format!("#!/bin/sh\necho \"$*\" >> {}\n", log.display()),
        );
        let run = |services: &[&str]| {
            let services: Vec<String> = services.iter().map(|s| s.to_string()).collect();
            let script = logs_script(
                &current.stacks_for(&services),
                &LogsQuery {
                    tail: Some(5),
                    ..LogsQuery::default()
                },
            );
            std::fs::write(&log, "").unwrap();
            crate::transport::script::testing::sh_ok(&format!(
                "PATH={}:$PATH\n{script}",
                bin.path().display()
            ));
            std::fs::read_to_string(&log).unwrap()
        };
        let app = format!("-p vpsup-shop --project-directory {current_dir} -f {current_dir}/compose.yml logs --no-color --tail 5");
        let green = format!("-p vpsup_green-shop --project-directory {current_dir} -f {current_dir}/compose.yml -f {current_dir}/.vpsup/slot-green.json logs --no-color --tail 5");
        let calls = run(&[]);
        let calls: Vec<&str> = calls.lines().collect();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(calls[0].ends_with(&app), "{calls:?}");
        assert!(calls[1].ends_with(&green), "{calls:?}");
        let calls = run(&["web", "db"]);
        let calls: Vec<&str> = calls.lines().collect();
        assert!(calls[0].ends_with(&format!("{app} db")), "{calls:?}");
        assert!(calls[1].ends_with(&format!("{green} web")), "{calls:?}");
        assert_eq!(run(&["web"]).lines().count(), 1);
    }
}
