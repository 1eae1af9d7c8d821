//! `vpsup ssh`, `vpsup exec` and `vpsup logs`, run as a user would against a
//! real sshd. The "host" is this machine: an app's current release is a
//! directory under /srv/vpsup (removed again), and `docker` on the sshd
//! sessions' PATH is a stand-in for `docker compose` (FAKE_DOCKER): it
//! records how it was called, runs `exec`'s command itself, and prints known
//! log lines (`--follow`: one more every 0.2 s until it is killed).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::*;

const FAKE_DOCKER: &str = r#"#!/bin/sh
# A stand-in for `docker compose` (tests/remote_commands.rs).
calls="$(dirname "$0")/calls"
echo "$*" >> "$calls"
[ "$1" = compose ] || { echo "fake docker: only compose" >&2; exit 99; }
shift
while [ $# -gt 0 ]; do
  case "$1" in
    --ansi|-p|--project-directory|-f|--env-file) shift 2 ;;
    *) break ;;
  esac
done
sub=$1; shift
case "$sub" in
  config) [ "$1" = --services ] && printf 'web\ndb\n' ;;
  exec)
    tty=yes
    if [ "$1" = -T ]; then tty=no; shift; fi
    echo "exec service=$1 tty=$tty" >> "$calls"
    shift
    exec "$@" ;;
  logs)
    follow=no
    while [ $# -gt 0 ]; do
      case "$1" in
        --no-color) ;;
        --follow) follow=yes ;;
        --since|--tail) shift ;;
        *) break ;;
      esac
      shift
    done
    for s in ${*:-web db}; do
      echo "$s-1  | hello from $s"
      echo "$s-1  | GET /health 200"
    done
    if [ "$follow" = yes ]; then
      n=0
      while :; do n=$((n + 1)); echo "web-1  | tick $n"; sleep 0.2; done
    fi ;;
  *) echo "fake docker: no $sub" >&2; exit 99 ;;
esac
"#;

/// An sshd whose sessions find FAKE_DOCKER as `docker`, an app deployed
/// "there", and an operator whose vpsup.toml names both.
struct Rig {
    sshd: TestSshd,
    op: Operator,
    app: String,
    fake: tempfile::TempDir,
}

impl Rig {
    fn new() -> Rig {
        static N: AtomicUsize = AtomicUsize::new(0);
        let fake = tempfile::Builder::new()
            .prefix("vpsup-fake-docker-")
            .tempdir_in("/tmp")
            .unwrap();
        let docker = fake.path().join("docker");
        std::fs::write(&docker, FAKE_DOCKER).unwrap();
        chmod(fake.path(), 0o755);
        chmod(&docker, 0o755);
        let sshd = TestSshd::start_with(SshdOptions {
            extra_config: format!(
                "SetEnv PATH={}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
                fake.path().display()
            ),
            ..Default::default()
        });
        let app = format!(
            "vpsuptest{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let release = PathBuf::from(format!("/srv/vpsup/{app}/releases/r1"));
        std::fs::create_dir_all(release.join(".vpsup")).unwrap();
        std::fs::write(
            release.join(".vpsup/release.json"),
            format!(
                r#"{{"compose_files":["compose.yml"],"env_files":[],"health":[],"secrets":false,"project":"vpsup-{app}"}}"#
            ),
        )
        .unwrap();
        std::os::unix::fs::symlink("releases/r1", format!("/srv/vpsup/{app}/current")).unwrap();
        let op = Operator::new();
        op.write_config(&format!(
            "[hosts.web]\naddress = \"127.0.0.1\"\nport = {}\nuser = \"root\"\nidentity_file = \"{}\"\n\n[app]\nname = \"{app}\"\n",
            sshd.port,
            key_arg(&sshd)
        ));
        Rig {
            sshd,
            op,
            app,
            fake,
        }
    }

    /// The current release runs `web` in a blue/green slot, and `slot`
    /// serves, as a zero-downtime deploy leaves it.
    fn serve_from_slot(&self, slot: &str) {
        let app = &self.app;
        std::fs::write(
            format!("/srv/vpsup/{app}/releases/r1/.vpsup/release.json"),
            format!(
                r#"{{"compose_files":["compose.yml"],"env_files":[],"health":[],"secrets":false,"project":"vpsup-{app}","slots":{{"services":["web"],"blue":{{"health":[],"sites":[]}},"green":{{"health":[],"sites":[]}}}}}}"#
            ),
        )
        .unwrap();
        std::fs::write(format!("/srv/vpsup/{app}/serving"), format!("{slot}\n")).unwrap();
    }

    /// What the fake docker was asked, one call a line.
    fn calls(&self) -> String {
        std::fs::read_to_string(self.fake.path().join("calls")).unwrap_or_default()
    }

    /// The fake docker processes still running.
    fn fakes_running(&self) -> String {
        let out = Command::new("pgrep")
            .args(["-af", &self.fake.path().display().to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!("/srv/vpsup/{}", self.app));
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ssh_runs_a_command_with_vpsups_settings_and_passes_its_status() {
    let rig = Rig::new();
    let out = rig.op.vpsup(&["ssh", "web", "--", "echo", "hi"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(stdout(&out), "hi\n");
    // Met for the first time: vpsup recorded the key the client then checked.
    assert!(
        stderr(&out).contains("new host, learned its key"),
        "{}",
        describe_output(&out)
    );

    // The only host by default; the remote status is vpsup's.
    let out = rig.op.vpsup(&["ssh", "--", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", describe_output(&out));
    assert!(
        !stderr(&out).contains("learned"),
        "{}",
        describe_output(&out)
    );
}

#[test]
fn ssh_refuses_a_host_whose_key_changed() {
    let mut rig = Rig::new();
    assert!(rig.op.vpsup(&["ssh", "--", "true"]).status.success());
    rig.sshd.regenerate_host_key_and_restart();
    let out = rig.op.vpsup(&["ssh", "--", "echo", "reached"]);
    assert_eq!(out.status.code(), Some(255), "{}", describe_output(&out));
    assert!(!stdout(&out).contains("reached"));
}

#[test]
fn exec_passes_the_exit_status_stdin_and_arguments_intact() {
    let rig = Rig::new();
    let out = rig.op.vpsup(&["exec", "web", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe_output(&out));
    assert!(
        !stderr(&out).contains("error"),
        "a passed-through status says nothing: {}",
        describe_output(&out)
    );

    let out = rig
        .op
        .vpsup_with_stdin(&["exec", "web", "--", "cat"], b"line one\nline two\n");
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(stdout(&out), "line one\nline two\n");

    let pwned = rig.fake.path().join("pwned");
    let nasty = [
        "two words".to_string(),
        "it's".to_string(),
        "\"double\"".to_string(),
        format!("$(touch {})", pwned.display()),
        "`id`;|&>".to_string(),
    ];
    let mut args = vec!["exec", "web", "--", "printf", "[%s]\\n"];
    args.extend(nasty.iter().map(String::as_str));
    let out = rig.op.vpsup(&args);
    assert!(out.status.success(), "{}", describe_output(&out));
    let expected: String = nasty.iter().map(|a| format!("[{a}]\n")).collect();
    assert_eq!(stdout(&out), expected);
    assert!(!pwned.exists(), "an argument ran as a command");

    let calls = rig.calls();
    let app = &rig.app;
    assert!(
        calls.contains(&format!(
            "compose --ansi never -p vpsup-{app} --project-directory /srv/vpsup/{app}/current -f /srv/vpsup/{app}/current/compose.yml exec -T web sh -c"
        )),
        "{calls}"
    );
    // No terminal here: `exec -T`.
    assert!(calls.contains("exec service=web tty=no"), "{calls}");
}

#[test]
fn exec_names_the_services_when_one_is_unknown() {
    let rig = Rig::new();
    let out = rig.op.vpsup(&["exec", "wbe", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert!(
        stderr(&out).contains("no service wbe") && stderr(&out).contains("web, db"),
        "{}",
        describe_output(&out)
    );
}

#[test]
fn logs_prints_filters_and_passes_its_options() {
    let rig = Rig::new();
    let out = rig.op.vpsup(&["logs"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(
        stdout(&out),
        "web-1  | hello from web\nweb-1  | GET /health 200\ndb-1  | hello from db\ndb-1  | GET /health 200\n"
    );

    let out = rig.op.vpsup(&[
        "logs", "db", "--since", "1h", "--tail", "50", "--grep", "health",
    ]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(stdout(&out), "db-1  | GET /health 200\n");
    assert!(
        rig.calls()
            .contains("logs --no-color --since 1h --tail 50 db"),
        "{}",
        rig.calls()
    );

    // An app the host does not run.
    rig.op.write_config(&format!(
        "[hosts.web]\naddress = \"127.0.0.1\"\nport = {}\nuser = \"root\"\nidentity_file = \"{}\"\n\n[app]\nname = \"{}x\"\n",
        rig.sshd.port,
        key_arg(&rig.sshd),
        rig.app
    ));
    let out = rig.op.vpsup(&["logs"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(
        stderr(&out).contains(&format!(
            "vpsup: web: app {}x is not deployed on root@127.0.0.1:",
            rig.app
        )) && stderr(&out).contains("run `vpsup deploy` first"),
        "{}",
        describe_output(&out)
    );
}

#[test]
fn logs_follow_streams_until_ctrl_c_and_leaves_nothing_running() {
    let rig = Rig::new();
    follow_then_ctrl_c(&rig, |running| {
        assert!(!running.is_empty(), "the fake should be following")
    });
}

/// `vpsup logs -f` on `rig` until a third line written after it started
/// arrives; then `while_following` sees the fakes running, Ctrl-C stops
/// vpsup with 0, and nothing is left following on the host.
fn follow_then_ctrl_c(rig: &Rig, while_following: impl FnOnce(&str)) {
    let mut child = rig.op.spawn(&["logs", "-f"], b"");
    let (tx, rx) = mpsc::channel();
    let reader = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Lines written after it started arrive while it runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.ends_with("tick 3")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no `tick 3` within 20 s; got {seen:?}"),
        }
    }
    while_following(&rig.fakes_running());

    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    // Nothing is left following on the host.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rig.fakes_running().is_empty() {
        assert!(
            Instant::now() < deadline,
            "still running on the host:\n{}",
            rig.fakes_running()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// After a zero-downtime deploy `web` runs in the serving slot's project
/// (with the slot's compose override), `db` in the app's: `exec` and `logs`
/// reach each where it runs, `logs` alone asks both projects, and `logs -f`
/// follows both until Ctrl-C stops both.
#[test]
fn site_services_are_reached_in_the_serving_slot() {
    let rig = Rig::new();
    rig.serve_from_slot("green");
    let app = &rig.app;
    let current = format!("/srv/vpsup/{app}/current");
    let app_project =
        format!("-p vpsup-{app} --project-directory {current} -f {current}/compose.yml ");
    let slot_project = format!(
        "-p vpsup_green-{app} --project-directory {current} -f {current}/compose.yml -f {current}/.vpsup/slot-green.json "
    );
    for (service, project) in [("web", &slot_project), ("db", &app_project)] {
        let out = rig.op.vpsup(&["exec", service, "--", "true"]);
        assert!(out.status.success(), "{}", describe_output(&out));
        assert!(
            rig.calls()
                .contains(&format!("{project}exec -T {service} true")),
            "{service}: {}",
            rig.calls()
        );
    }

    let out = rig.op.vpsup(&["logs", "web", "--tail", "5"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(
        rig.calls()
            .contains(&format!("{slot_project}logs --no-color --tail 5 web")),
        "{}",
        rig.calls()
    );
    assert!(!rig.calls().contains(&format!("{app_project}logs")));
    let out = rig.op.vpsup(&["logs"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    for project in [&app_project, &slot_project] {
        assert!(
            rig.calls().contains(&format!("{project}logs --no-color\n")),
            "{}",
            rig.calls()
        );
    }

    follow_then_ctrl_c(&rig, |running| {
        for project in [&app_project, &slot_project] {
            assert!(
                running.contains(&format!("{project}logs --no-color --follow")),
                "both follow: {running}"
            );
        }
    });
}

/// On a terminal (util-linux `script` gives vpsup one), the command gets
/// one too: `exec` without -T, a PTY on the channel.
#[test]
fn exec_on_a_terminal_gets_a_terminal() {
    let rig = Rig::new();
    let vpsup = env!("CARGO_BIN_EXE_vpsup");
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("{vpsup} exec web -- sh -c 'test -t 0 && test -t 1 && echo on-a-tty; exit 5'"),
            "/dev/null",
        ])
        .current_dir(rig.op.project.path())
        .env("HOME", rig.op.home.path())
        .env_remove("SSH_AUTH_SOCK")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", describe_output(&out));
    assert!(
        stdout(&out).contains("on-a-tty"),
        "{}",
        describe_output(&out)
    );
    assert!(
        rig.calls().contains("exec service=web tty=yes"),
        "{}",
        rig.calls()
    );
}

#[test]
fn logs_of_several_hosts_are_prefixed_with_the_host() {
    let rig = Rig::new();
    let host = |name: &str| {
        format!(
            "[hosts.{name}]\naddress = \"127.0.0.1\"\nport = {}\nuser = \"root\"\nidentity_file = \"{}\"\n\n",
            rig.sshd.port,
            key_arg(&rig.sshd)
        )
    };
    rig.op.write_config(&format!(
        "{}{}[app]\nname = \"{}\"\n",
        host("one"),
        host("two"),
        rig.app
    ));
    let out = rig.op.vpsup(&["logs", "web", "--grep", "hello"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let text = stdout(&out);
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "one | web-1  | hello from web",
            "two | web-1  | hello from web"
        ]
    );
    // exec wants one host.
    let out = rig.op.vpsup(&["exec", "web", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert!(
        stderr(&out).contains("several (one, two): name one with --host NAME"),
        "{}",
        describe_output(&out)
    );
    let out = rig
        .op
        .vpsup(&["exec", "web", "--host", "two", "--", "true"]);
    assert!(out.status.success(), "{}", describe_output(&out));
}
