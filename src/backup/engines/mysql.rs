//! MySQL and MariaDB: one `--single-transaction` dump of every database
//! (users too: the `mysql` schema is in it), replayed by the client.
//!
//! As root, with `MYSQL_PWD` from the image's own root password variable
//! (`MARIADB_ROOT_PASSWORD`, `MYSQL_ROOT_PASSWORD`, or their `_FILE`), or
//! the one config names. Without one, root's socket authentication (the
//! official MariaDB image allows it) is tried. MariaDB 11 images have only
//! the `mariadb*` names of the tools, MySQL images only the `mysql*` ones.

use super::{password_from, DumpPart};
use crate::transport::script::quote;

/// An `--all-databases` dump of a fresh server (its `mysql` schema) is
/// several KiB.
pub const MIN_DUMP_BYTES: u64 = 2048;
pub const DUMP_FILE: &str = "all-databases.sql";

/// The start of the last line of a dump that ran to its end (a dump killed
/// halfway ends anywhere else).
pub const COMPLETED_MARK: &str = "-- Dump completed";

/// `password_env`: the container's variable that holds root's password,
/// when it is not one of the images' own (checked with `engines::env_name`).
fn prelude(password_env: Option<&str>) -> String {
    let vars: Vec<&str> = match password_env {
        Some(var) => vec![var],
        None => vec!["MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD"],
    };
    format!(
        "{}if [ -n \"$pw\" ]; then MYSQL_PWD=$pw; export MYSQL_PWD; else unset MYSQL_PWD; fi\n",
        password_from(&vars)
    )
}

/// The first of `names` the container has, in `$tool`.
fn find_tool(names: &[&str]) -> String {
    let found = names
        .iter()
        .map(|n| format!("command -v {n}"))
        .collect::<Vec<_>>()
        .join(" || ");
    format!(
        "tool=$({found}) || {{ echo 'vpsup: none of {} in the container' >&2; exit 127; }}\n",
        names.join(", ")
    )
}

pub fn dump_part(password_env: Option<&str>) -> DumpPart {
    DumpPart {
        file: DUMP_FILE.to_string(),
        database: None,
        inner: format!(
            "{}{}exec \"$tool\" -uroot --single-transaction --quick --routines --events --triggers --hex-blob --all-databases\n",
            prelude(password_env),
            find_tool(&["mariadb-dump", "mysqldump"])
        ),
        min_bytes: MIN_DUMP_BYTES,
    }
}

/// Replays the dump on stdin. It re-creates the tables it holds (`DROP
/// TABLE IF EXISTS`, `CREATE DATABASE IF NOT EXISTS`); tables and databases
/// made after the backup stay. Stop the services that write first.
pub fn restore(password_env: Option<&str>) -> String {
    format!(
        "{}{}exec \"$tool\" -uroot\n",
        prelude(password_env),
        find_tool(&["mariadb", "mysql"])
    )
}

/// For a drill: succeeds once the server answers over TCP (images run a
/// networkless server while they initialise, then restart it).
pub fn ready() -> String {
    format!(
        "{}{}exec \"$tool\" -uroot -h 127.0.0.1 ping\n",
        prelude(None),
        find_tool(&["mariadb-admin", "mysqladmin"])
    )
}

/// Reads the dump on stdin through to its end, touching no database: fails
/// unless its last line is the one a dump that ran to its end closes with
/// (`tail` reads it all and keeps that line only).
pub fn check_dump() -> String {
    format!(
        "last=$(tail -n 1)\ncase $last in {mark}*) ;; *) echo {said} >&2; exit 1 ;; esac\n",
        mark = quote(COMPLETED_MARK),
        said = quote(&format!(
            "vpsup: the dump does not end with the line a whole dump ends with ({COMPLETED_MARK} ...): it was cut short"
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::script::testing::{sh_ok, write_executable};

    /// Only a dump whose last line is the closing one passes; the check reads
    /// all of it (a writer is never cut off).
    #[test]
    fn a_dump_passes_the_check_only_with_its_closing_line() {
        let check = |dump: &str| {
            let mut child = std::process::Command::new("sh")
                .args(["-c", &check_dump()])
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            std::io::Write::write_all(&mut stdin, dump.as_bytes()).unwrap();
            drop(stdin);
            child.wait_with_output().unwrap()
        };
        let whole = "INSERT INTO t VALUES (1);\n-- Dump completed on 2026-12-05 11:00:00\n";
        assert!(check(whole).status.success());
        assert!(check(&format!("{}{whole}", "x".repeat(1 << 20)))
            .status
            .success());
        for cut in [
            "-- Dump completed on 2026-12-05\nINSERT INTO t VALUES (1",
            "INSERT INTO t VALUES (1);\n",
            "",
        ] {
            let out = check(cut);
            assert!(!out.status.success(), "{cut:?} passed");
            assert!(String::from_utf8_lossy(&out.stderr).contains("it was cut short"));
        }
    }

    /// With a stand-in `mariadb-dump` that prints what it was given: the
    /// password arrives in its environment and never in its arguments.
    #[test]
    fn the_password_reaches_the_tool_by_environment_only() {
        let dir = tempfile::tempdir().unwrap();
        write_executable(
            &dir.path().join("mariadb-dump"),
            "#!/bin/sh\necho \"args: $*\"\necho \"env: ${MYSQL_PWD-unset}\"\n",
        );
        let run = |env: &str, password_env: Option<&str>| {
            let script = format!(
                "PATH={}:$PATH {env}\n{}",
                dir.path().display(),
                dump_part(password_env).inner
            );
            String::from_utf8(sh_ok(&script).stdout).unwrap()
        };
        let out = run("MYSQL_ROOT_PASSWORD=s3cret", None);
        assert!(out.contains("env: s3cret"), "{out}");
        assert!(!out.lines().next().unwrap().contains("s3cret"), "{out}");
        assert!(out.contains("--single-transaction"), "{out}");
        assert!(run("OTHER=x MYSQL_ROOT_PASSWORD=s3cret", Some("OTHER")).contains("env: x"));
        assert!(run("", None).contains("env: unset"));
    }
}
