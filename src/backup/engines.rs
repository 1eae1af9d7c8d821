//! Per engine: the scripts that dump a service's data and restore it, the
//! checks a restore drill runs, and parsers for what they print.
//!
//! Every *inner* script here runs inside the service's own container
//! (`exec_in`, or `run_oneoff` when the server must be down), is POSIX sh
//! (alpine's busybox and Debian's dash alike), and takes credentials from
//! the container's own environment (`POSTGRES_PASSWORD`, …) at run time.
//! The one rule: no secret ever appears in a script's text or in a process's
//! arguments (`ps` on the host lists container processes too): passwords
//! reach the clients as environment variables (`PGPASSWORD`, `MYSQL_PWD`,
//! `REDISCLI_AUTH`) or a 0600 file that is removed afterwards.
//!
//! A dump script writes the dump, and only the dump, to stdout (the backup
//! pipeline stores it as one file). What the dump is checked against later
//! (row counts, key counts, where the RDB lives) goes to stderr as lines
//! `word|…`, which the parsers here read.

pub mod mongo;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod volume;

use crate::transport::script::quote;

/// One stream of a service's backup: the pipeline stores what `inner`
/// prints as `file`, and fails the backup when it is under `min_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpPart {
    /// The file name inside the service's snapshot path (`shop.pgdump`).
    pub file: String,
    /// The database this part holds, for engines with one part per database.
    pub database: Option<String>,
    pub inner: String,
    pub min_bytes: u64,
}

/// Runs `inner` in the service's running container: `docker compose … exec
/// -T SERVICE sh -c '<inner>'`. `compose` is the `docker compose …` prefix
/// as shell text, naming the app's project, files and env files (what
/// `deploy::compose_cli` builds). Stdin and stdout pass through (`-T`: no tty).
pub fn exec_in(compose: &str, service: &str, inner: &str) -> String {
    format!(
        "{compose} exec -T {} sh -c {}",
        quote(service),
        quote(inner)
    )
}

/// Runs `inner` in a one-off container of the service (its image and
/// volumes, nothing it depends on started), for work on the data while the
/// server is stopped: `docker compose … run --rm --no-deps -T --entrypoint
/// sh SERVICE -c '<inner>'`.
pub fn run_oneoff(compose: &str, service: &str, inner: &str) -> String {
    format!(
        "{compose} run --rm --no-deps -T --entrypoint sh {} -c {}",
        quote(service),
        quote(inner)
    )
}

/// `body` with `services` stopped, and those of them that were running
/// (or restarting) started again afterwards whether `body` failed or not (a
/// failed restore must not leave the app down; a service someone had
/// stopped stays stopped). A subshell: it exits with `body`'s status, or 1
/// when the services do not start again.
pub fn with_stopped(compose: &str, services: &[String], body: &str) -> String {
    if services.is_empty() {
        return format!("(\n{body}\n)");
    }
    let names = services
        .iter()
        .map(|s| quote(s))
        .collect::<Vec<_>>()
        .join(" ");
    // `ps --services --status running` ignored --status in some Compose
    // v2 releases (docker/compose#8711): the states are read and filtered here.
    format!(
        "(
states=$({compose} ps -a --format '{{{{.Service}}}}\t{{{{.State}}}}') || exit 1
{compose} stop {names} >&2 || exit 1
(
{body}
)
rc=$?
set --
for s in {names}; do
  if printf '%s\\n' \"$states\" | awk -F '\\t' -v s=\"$s\" '$1 == s && ($2 == \"running\" || $2 == \"restarting\") {{ up = 1 }} END {{ exit !up }}'; then
    set -- \"$@\" \"$s\"
  fi
done
if [ $# -gt 0 ] && ! {compose} start \"$@\" >&2; then
  echo 'vpsup: could not start these services again:' \"$@\" >&2
  [ $rc -ne 0 ] || rc=1
fi
exit $rc
)",
    )
}

/// The exit status of a drill's readiness script that means "it never will
/// be" (the server ended): the drill stops waiting at once.
pub const NEVER_READY: i32 = 100;

/// An environment variable name as config gives it (`password_env`), checked
/// before it is written into a script.
pub fn env_name(name: &str) -> Result<&str, String> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(name)
    } else {
        Err(format!(
            "{name:?} is not an environment variable name (letters, digits and _, not starting with a digit)"
        ))
    }
}

/// Shell lines that set `$pw` from the first of `vars` that is set in the
/// container, each also read from its `<VAR>_FILE` (the official images'
/// Docker-secrets convention). `$pw` stays empty when none is.
fn password_from(vars: &[&str]) -> String {
    let mut lines = String::from("pw=\n");
    for var in vars {
        debug_assert!(env_name(var).is_ok(), "{var}");
        lines.push_str(&format!(
            "[ -n \"$pw\" ] || pw=${{{var}:-}}\n[ -n \"$pw\" ] || [ -z \"${{{var}_FILE:-}}\" ] || pw=$(cat \"${var}_FILE\")\n"
        ));
    }
    lines
}

/// The `word|value` lines a script printed to stderr, as `value`s.
fn tagged<'a>(stderr: &'a str, word: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    stderr
        .lines()
        .filter_map(move |l| l.strip_prefix(word)?.strip_prefix('|'))
}

/// For tests that run these wrappers' shell here.
#[cfg(test)]
pub(crate) mod testing {
    use crate::transport::script::testing::write_executable;

    /// A `docker` in `dir` that runs what follows `sh` in the argv here, so
    /// the quoting of a wrapper round-trips for real (and `$VARS` expand in
    /// the "container", from its environment, not in the host script). It
    /// logs each call's first words to `dir/log`; `compose ps` prints `$PS`
    /// (`service\tstate` lines). The shell line returned puts it on PATH.
    pub fn fake_docker(dir: &std::path::Path) -> String {
        write_executable(
            &dir.join("docker"),
            "#!/bin/sh\nset -f\necho docker $1 $2 $3 $4 >>\"$LOG\"\ncase \"$2\" in ps) printf \"$PS\"; exit 0;; stop) exit 0;; start) exit ${FAIL_START:-0};; esac\nwhile [ \"$1\" != sh ] && [ \"$1\" != --entrypoint ]; do shift; done\nif [ \"$1\" = sh ]; then shift; else shift 3; fi\nexec sh \"$@\"\n",
        );
        format!(
            "export PATH={}:$PATH LOG={}",
            dir.display(),
            dir.join("log").display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::fake_docker;
    use super::*;
    use crate::transport::script::testing::sh_ok;

    #[test]
    fn wrappers_name_the_service_and_carry_the_inner_script_whole() {
        let compose = "docker compose -p vpsup-shop";
        assert_eq!(
            exec_in(compose, "db", "echo \"$POSTGRES_USER\""),
            "docker compose -p vpsup-shop exec -T db sh -c 'echo \"$POSTGRES_USER\"'"
        );
        assert_eq!(
            run_oneoff(compose, "cache", "cat >/data/x"),
            "docker compose -p vpsup-shop run --rm --no-deps -T --entrypoint sh cache -c 'cat >/data/x'"
        );
        let dir = tempfile::tempdir().unwrap();
        let env = fake_docker(dir.path());
        let inner = "printf '%s|%s\\n' \"$SECRET_NAME\" \"it's\"";
        let out = sh_ok(&format!(
            "{env} SECRET_NAME=from-the-container; export SECRET_NAME; {}; {}",
            exec_in("docker compose", "db", inner),
            run_oneoff("docker compose", "db", inner)
        ));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "from-the-container|it's\nfrom-the-container|it's\n"
        );
    }

    /// Three services, one of them with two containers of which one runs.
    const PS: &str = "PS='web\\trunning\\nworker\\texited\\nqueue\\texited\\nqueue\\trestarting\\ndb\\trunning\\n'";

    #[test]
    fn running_services_start_again_even_when_the_body_fails() {
        let dir = tempfile::tempdir().unwrap();
        let env = fake_docker(dir.path());
        let services = ["web".to_string(), "worker".to_string(), "queue".to_string()];
        let script = with_stopped(
            "docker compose",
            &services,
            "echo restoring >>\"$LOG\"; exit 7",
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("{env} {PS}; {script}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("log")).unwrap(),
            "docker compose ps -a --format\ndocker compose stop web worker\nrestoring\ndocker compose start web queue\n"
        );
        // A body that worked still fails when the app does not come back.
        let script = with_stopped("docker compose", &services, "true");
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("{env} {PS} FAIL_START=3; {script}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr)
            .contains("could not start these services again: web queue"));
        sh_ok(&with_stopped("docker compose", &[], "true"));
    }

    #[test]
    fn a_service_that_was_stopped_stays_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let env = fake_docker(dir.path());
        let script = with_stopped("docker compose", &["worker".to_string()], "true");
        sh_ok(&format!("{env} {PS}; {script}"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("log")).unwrap(),
            "docker compose ps -a --format\ndocker compose stop worker\n"
        );
        // Nothing is stopped when the states cannot be read.
        let log = dir.path().join("log");
        std::fs::remove_file(&log).unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("{env}; docker() {{ return 1; }}; {script}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(!log.exists());
    }

    #[test]
    fn passwords_come_from_the_variable_or_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-file").unwrap();
        let script = format!("{}printf '%s' \"$pw\"", password_from(&["A", "B"]));
        let run = |env: &str| String::from_utf8(sh_ok(&format!("{env}\n{script}")).stdout).unwrap();
        assert_eq!(run("A=a B=b"), "a");
        assert_eq!(
            run(&format!("export A_FILE={}; B=b", file.display())),
            "from-file"
        );
        assert_eq!(run("B=b"), "b");
        assert_eq!(run(""), "");
    }

    #[test]
    fn config_variable_names_are_checked() {
        assert_eq!(env_name("REDIS_PASSWORD"), Ok("REDIS_PASSWORD"));
        assert_eq!(env_name("_x1"), Ok("_x1"));
        for bad in ["", "1A", "A-B", "A B", "$(id)", "A;B"] {
            assert!(env_name(bad).is_err(), "{bad}");
        }
    }
}
