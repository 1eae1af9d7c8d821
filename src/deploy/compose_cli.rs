//! The `docker compose` command lines deploy runs on the host, built in one
//! place so `up`, a rollback's `up`, `logs` and `ps` always name the same
//! project, files and env files.
//!
//! Compose interpolates `${VAR}` from the `--env-file`s, a later file winning:
//! the project's `.env` (compose reads it by itself only when no
//! `--env-file` is given), then the generated secrets, then `[app] env_files`.
//! `--ansi never`: what compose says ends up in vpsup's messages and logs,
//! where terminal codes are noise.

use crate::transport::script::quote;

/// How `Stack::up_services` treats what runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Up {
    /// A running container is left as it is; a missing or stopped one starts.
    KeepRunning,
    /// Build, and replace a container whose definition changed.
    Recreate,
    /// As `Recreate`, and the project's containers of services gone from
    /// the compose files are removed.
    RecreateRemovingOrphans,
}

#[derive(Clone, Copy)]
pub struct Stack<'a> {
    /// The compose project name (`vpsup-<app>`).
    pub project: &'a str,
    /// The release directory (compose's project directory: relative paths
    /// and build contexts resolve from it).
    pub dir: &'a str,
    /// Compose files inside the release, in order; vpsup's override last.
    pub files: &'a [String],
    /// Env files inside the release.
    pub env_files: &'a [String],
    /// The host's generated secrets (absolute path), when the app has any.
    pub secrets_env: Option<&'a str>,
    /// The release has the project's `.env`.
    pub dot_env: bool,
}

impl Stack<'_> {
    /// `docker compose` naming the project, its files and env files: the
    /// start of every command line on it (backups run `exec` and `stop` on it).
    pub fn base(&self) -> String {
        let mut cmd = format!(
            "docker compose --ansi never -p {} --project-directory {}",
            quote(self.project),
            quote(self.dir)
        );
        for file in self.files {
            cmd.push_str(&format!(" -f {}", quote(&format!("{}/{file}", self.dir))));
        }
        if self.dot_env {
            cmd.push_str(&format!(
                " --env-file {}",
                quote(&format!("{}/.env", self.dir))
            ));
        }
        if let Some(secrets) = self.secrets_env {
            cmd.push_str(&format!(" --env-file {}", quote(secrets)));
        }
        for env in self.env_files {
            cmd.push_str(&format!(
                " --env-file {}",
                quote(&format!("{}/{env}", self.dir))
            ));
        }
        cmd
    }

    /// Builds what has `build:`, pulls the rest, starts everything, removes
    /// services no longer in the files, and waits (at most `timeout_secs`)
    /// until every container with a healthcheck is healthy: exit 1 if one is
    /// not.
    pub fn up(&self, timeout_secs: u32) -> String {
        format!(
            "{} up -d --build --remove-orphans --wait --wait-timeout {timeout_secs}",
            self.base()
        )
    }

    /// Starts only `services` (what they depend on runs already: `--no-deps`)
    /// and waits as `up` does, as `how` says.
    pub fn up_services(&self, services: &[String], how: Up, timeout_secs: u32) -> String {
        let mut cmd = format!(
            "{} up -d {}--no-deps --wait --wait-timeout {timeout_secs}",
            self.base(),
            match how {
                Up::KeepRunning => "--no-recreate ",
                Up::Recreate => "--build ",
                Up::RecreateRemovingOrphans => "--build --remove-orphans ",
            }
        );
        for service in services {
            cmd.push(' ');
            cmd.push_str(&quote(service));
        }
        cmd
    }

    /// Stops `services`' containers (SIGTERM, then SIGKILL after their
    /// `stop_grace_period`) and removes them.
    pub fn remove(&self, services: &[String]) -> String {
        let mut cmd = format!("{} rm -s -f", self.base());
        for service in services {
            cmd.push(' ');
            cmd.push_str(&quote(service));
        }
        cmd
    }

    /// Stops and removes the project's containers and networks; named
    /// volumes stay (no `-v`, ever).
    pub fn down(&self) -> String {
        format!("{} down", self.base())
    }

    /// The last `lines` lines of a service's log.
    pub fn logs(&self, service: &str, lines: u32) -> String {
        format!(
            "{} logs --no-color --tail {lines} {}",
            self.base(),
            quote(service)
        )
    }

    /// The services of the stack, one a line.
    pub fn services(&self) -> String {
        format!("{} config --services", self.base())
    }

    /// Runs `command` (each word quoted: nothing in it is read by a shell)
    /// in `service`'s container; with a terminal there only when `tty`
    /// (else `-T`, so input and output are plain pipes).
    pub fn exec(&self, service: &str, command: &[String], tty: bool) -> String {
        let mut cmd = format!("{} exec", self.base());
        if !tty {
            cmd.push_str(" -T");
        }
        cmd.push(' ');
        cmd.push_str(&quote(service));
        for word in command {
            cmd.push(' ');
            cmd.push_str(&quote(word));
        }
        cmd
    }

    /// The logs of `services` (every service of the project when empty) as
    /// `query` asks, its own services aside (`logs_script` runs it).
    fn logs_of(&self, query: &LogsQuery, services: &[String]) -> String {
        let mut cmd = format!("{} logs --no-color", self.base());
        if query.follow {
            cmd.push_str(" --follow");
        }
        if let Some(since) = &query.since {
            cmd.push_str(&format!(" --since {}", quote(since)));
        }
        if let Some(tail) = query.tail {
            cmd.push_str(&format!(" --tail {tail}"));
        }
        for service in services {
            cmd.push(' ');
            cmd.push_str(&quote(service));
        }
        cmd
    }

    /// `service<TAB>state<TAB>health` per container.
    pub fn ps(&self) -> String {
        format!(
            "{} ps -a --format '{{{{.Service}}}}\t{{{{.State}}}}\t{{{{.Health}}}}'",
            self.base()
        )
    }
}

/// What `vpsup logs` asks of compose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogsQuery {
    /// Every service when empty.
    pub services: Vec<String>,
    pub follow: bool,
    /// `1h`, `30m`, or a timestamp: compose reads it.
    pub since: Option<String>,
    /// The last lines of each service.
    pub tail: Option<u32>,
}

/// The logs of each `(stack, services)` (`Stack::logs_of`) as `query`
/// asks, its own services aside, in one script: one after the other, or,
/// following, all at once until stdin closes (`until_stdin_closes`). Fails
/// when one of them failed.
pub fn logs_script(parts: &[(Stack<'_>, Vec<String>)], query: &LogsQuery) -> String {
    let commands: Vec<String> = parts
        .iter()
        .map(|(stack, services)| stack.logs_of(query, services))
        .collect();
    if query.follow {
        return until_stdin_closes(&commands);
    }
    match &commands[..] {
        [one] => one.clone(),
        all => {
            let mut script = String::from("status=0\n");
            for command in all {
                script.push_str(&format!("{command} || status=$?\n"));
            }
            script.push_str("exit \"$status\"\n");
            script
        }
    }
}

/// Runs `commands` at once until they end, or until this script's stdin
/// closes (the operator stopped them, or the connection dropped; sshd then
/// closes the pipe), and then stops them all: a `logs --follow` never
/// outlives the operator. Its status is the last failing command's (143
/// when they were stopped), else 0.
pub fn until_stdin_closes(commands: &[String]) -> String {
    let mut script = String::from("exec 3<&0\njobs=\n");
    for command in commands {
        script.push_str(&format!("{command} </dev/null 3<&- &\njobs=\"$jobs $!\"\n"));
    }
    script.push_str(
        r#"# $jobs: pids, split on purpose.
( while read -r _ <&3; do :; done; kill $jobs 2>/dev/null ) >/dev/null 2>&1 &
watch=$!
exec 3<&-
status=0
for job in $jobs; do wait "$job" || status=$?; done
kill "$watch" 2>/dev/null
exit "$status"
"#,
    );
    script
}

/// Asks each `(path, loopback port)` over HTTP until it answers 2xx or 3xx,
/// for at most `timeout_secs` in all; prints `ok PORT PATH` or `fail PORT
/// PATH CODE` per probe and exits 1 if any failed.
pub fn health_probe_script(probes: &[(String, u16)], timeout_secs: u32) -> String {
    let mut script = format!("deadline=$(( $(date +%s) + {timeout_secs} ))\nfailed=0\n");
    for (path, port) in probes {
        let url = quote(&format!("http://127.0.0.1:{port}{path}"));
        // The path is config text: quoted, never inside double quotes.
        let path = quote(path);
        script.push_str(&format!(
            r#"while :; do
  code=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 {url})
  case "$code" in 2??|3??) echo ok {port} {path}; break ;; esac
  if [ "$(date +%s)" -ge "$deadline" ]; then echo fail {port} {path} "$code"; failed=1; break; fi
  sleep 1
done
"#
        ));
    }
    script.push_str("exit $failed\n");
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack<'a>(files: &'a [String], env: &'a [String]) -> Stack<'a> {
        Stack {
            project: "vpsup-doctor",
            dir: "/srv/vpsup/doctor/releases/r2",
            files,
            env_files: env,
            secrets_env: Some("/srv/vpsup/doctor/shared/secrets.env"),
            dot_env: true,
        }
    }

    #[test]
    fn every_command_names_the_same_project_files_and_env() {
        let files = ["compose.yml".to_string(), "vpsup.override.json".to_string()];
        let env = [".env.production".to_string()];
        let s = stack(&files, &env);
        let base = "docker compose --ansi never -p vpsup-doctor --project-directory /srv/vpsup/doctor/releases/r2 -f /srv/vpsup/doctor/releases/r2/compose.yml -f /srv/vpsup/doctor/releases/r2/vpsup.override.json --env-file /srv/vpsup/doctor/releases/r2/.env --env-file /srv/vpsup/doctor/shared/secrets.env --env-file /srv/vpsup/doctor/releases/r2/.env.production";
        assert_eq!(
            s.up(120),
            format!("{base} up -d --build --remove-orphans --wait --wait-timeout 120")
        );
        assert_eq!(
            s.logs("backend", 30),
            format!("{base} logs --no-color --tail 30 backend")
        );
        assert!(s
            .ps()
            .starts_with(&format!("{base} ps -a --format '{{{{.Service}}}}")));
        let services = ["db".to_string(), "a b".to_string()];
        assert_eq!(
            s.up_services(&services, Up::Recreate, 60),
            format!("{base} up -d --build --no-deps --wait --wait-timeout 60 db 'a b'")
        );
        assert_eq!(
            s.up_services(&services[..1], Up::KeepRunning, 60),
            format!("{base} up -d --no-recreate --no-deps --wait --wait-timeout 60 db")
        );
        assert_eq!(s.remove(&services), format!("{base} rm -s -f db 'a b'"));
    }

    #[test]
    fn exec_and_logs_quote_every_word_of_the_operator() {
        let s = Stack {
            project: "vpsup-doctor",
            dir: "/srv/vpsup/doctor/current",
            files: &["compose.yml".to_string()],
            env_files: &[],
            secrets_env: None,
            dot_env: false,
        };
        let base = "docker compose --ansi never -p vpsup-doctor --project-directory /srv/vpsup/doctor/current -f /srv/vpsup/doctor/current/compose.yml";
        let command = ["psql".to_string(), "-c".into(), "select '$(x)'".into()];
        assert_eq!(
            s.exec("db", &command, false),
            format!("{base} exec -T db psql -c 'select '\\''$(x)'\\'''")
        );
        assert_eq!(s.exec("db", &[], true), format!("{base} exec db"));
        assert_eq!(s.services(), format!("{base} config --services"));
        let query = LogsQuery {
            services: vec!["ignored".into()],
            since: Some("1h".into()),
            tail: Some(20),
            follow: false,
        };
        let services = vec!["web".to_string(), "a b".into()];
        assert_eq!(
            logs_script(&[(s, services)], &query),
            format!("{base} logs --no-color --since 1h --tail 20 web 'a b'")
        );
    }

    /// The logs of two projects (the app's and a slot's): one after the
    /// other, each with its services; following, both at once.
    #[test]
    fn logs_of_two_projects_run_in_one_script() {
        let files = ["compose.yml".to_string()];
        let app = Stack {
            project: "vpsup-shop",
            dir: "/srv/vpsup/shop/current",
            files: &files,
            env_files: &[],
            secrets_env: None,
            dot_env: false,
        };
        let slot = Stack {
            project: "vpsup_blue-shop",
            ..app
        };
        let (a, b) = (app.base(), slot.base());
        let parts = [(app, vec!["db".to_string()]), (slot, vec![])];
        assert_eq!(
            logs_script(&parts, &LogsQuery::default()),
            format!("status=0\n{a} logs --no-color db || status=$?\n{b} logs --no-color || status=$?\nexit \"$status\"\n")
        );
        let follow = logs_script(
            &parts,
            &LogsQuery {
                follow: true,
                ..LogsQuery::default()
            },
        );
        assert!(
            follow.starts_with(&format!(
                "exec 3<&0\njobs=\n{a} logs --no-color --follow db </dev/null 3<&- &\njobs=\"$jobs $!\"\n{b} logs --no-color --follow </dev/null 3<&- &\n"
            )),
            "{follow}"
        );
    }

    /// Not following: each command runs, and a failed one fails the script.
    #[test]
    fn every_part_runs_and_a_failure_is_the_scripts() {
        let run = |parts: &[(Stack<'_>, Vec<String>)]| {
            let script = logs_script(parts, &LogsQuery::default());
            let dir = tempfile::tempdir().unwrap();
            crate::transport::script::testing::write_executable(
                &dir.path().join("docker"),
                "#!/bin/sh\ncase \"$*\" in *' -p bad '*) echo failed >&2; exit 3 ;; esac\necho \"$5\"\n",
            );
            std::process::Command::new("sh")
                .args([
                    "-c",
                    &format!("PATH={}:$PATH\n{script}", dir.path().display()),
                ])
                .output()
                .unwrap()
        };
        let stack = |project| Stack {
            project,
            dir: "/srv/x",
            files: &[],
            env_files: &[],
            secrets_env: None,
            dot_env: false,
        };
        let out = run(&[(stack("bad"), vec![]), (stack("good"), vec![])]);
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "good\n");
        let out = run(&[(stack("one"), vec![]), (stack("two"), vec![])]);
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n");
    }

    /// The followers stop when stdin closes, and nothing of them is left.
    #[test]
    fn a_follower_stops_when_stdin_closes() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("still-running");
        let follower = |word: &str| {
            format!(
                "sh -c 'while :; do echo {word}; sleep 0.1; done' {}",
                quote(&marker.display().to_string())
            )
        };
        let script = until_stdin_closes(&[follower("tick"), follower("tock")]);
        let mut child = std::process::Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(143));
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("tick\n") && said.contains("tock\n"), "{said}");
        let left = std::process::Command::new("pgrep")
            .args(["-f", &marker.display().to_string()])
            .output()
            .unwrap();
        assert!(
            left.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&left.stdout)
        );
    }

    /// A command that ends by itself ends the script, with its status.
    #[test]
    fn a_follower_that_ends_ends_the_script() {
        let script = until_stdin_closes(&["sh -c 'echo done; exit 4'".to_string()]);
        let mut child = std::process::Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // stdin stays open: the script must not wait for it.
        let stdin = child.stdin.take();
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        assert_eq!(out.status.code(), Some(4));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    }

    #[test]
    fn odd_names_are_quoted() {
        let files = ["my compose.yml".to_string()];
        let s = Stack {
            project: "doctor",
            dir: "/srv/x",
            files: &files,
            env_files: &[],
            secrets_env: None,
            dot_env: false,
        };
        assert!(
            s.up(5).contains("-f '/srv/x/my compose.yml'"),
            "{}",
            s.up(5)
        );
        assert!(s.logs("a;b", 1).ends_with("'a;b'"));
        assert!(s.down().ends_with(" down"), "{}", s.down());
    }

    #[test]
    fn the_health_probe_passes_on_a_2xx() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            if let Ok((mut conn, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(b"HTTP/1.0 204 No Content\r\n\r\n");
            }
        });
        let script = health_probe_script(&[("/health".to_string(), port)], 10);
        let out = crate::transport::script::testing::sh_ok(&script);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("ok {port} /health\n")
        );
    }

    #[test]
    fn the_health_probe_runs_and_reports() {
        // A port nothing listens on: fails at once, after the deadline.
        let script = health_probe_script(&[("/health".to_string(), 1)], 0);
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "fail 1 /health 000\n");
    }

    #[test]
    fn a_hostile_health_path_stays_text() {
        // Config validation refuses these; the script must not run them anyway.
        let dir = tempfile::tempdir().unwrap();
        let mark = dir.path().join("ran");
        let m = mark.display();
        for path in [
            format!("/`touch {m}`"),
            format!("/$(touch {m})"),
            format!("/\"; touch {m}; \""),
            format!("/'; touch {m}; '"),
            format!("/\ntouch {m}\n"),
            format!("/#; touch {m}"),
        ] {
            let script = health_probe_script(&[(path.clone(), 1)], 0);
            let out = std::process::Command::new("sh")
                .args(["-c", &script])
                .output()
                .unwrap();
            assert!(!mark.exists(), "{path:?} ran a command:\n{script}");
            assert_eq!(out.status.code(), Some(1), "{path:?}");
            let said = String::from_utf8_lossy(&out.stdout);
            assert_eq!(said, format!("fail 1 {path} 000\n"), "{path:?}");
        }
    }
}
