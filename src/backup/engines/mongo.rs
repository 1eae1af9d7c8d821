//! MongoDB: `mongodump --archive` (no `--gzip`: a compressed archive
//! cannot be deduplicated) and `mongorestore --archive --drop`, after a read
//! through the archive that restores nothing (`check_archive`). Not tested
//! against a server here (Debian has no MongoDB package): the tests run the
//! scripts with stand-in tools and check what they are given.
//!
//! With the image's root user (`MONGO_INITDB_ROOT_USERNAME` and `_PASSWORD`,
//! or their `_FILE`), the password goes through a 0600 `--config` file that
//! is removed afterwards: mongodump has no environment variable for it, and
//! `--password` or a URI would show in `ps`.

use super::{password_from, DumpPart};

/// An archive of an empty server is its header alone (tens of bytes).
pub const MIN_ARCHIVE_BYTES: u64 = 64;
pub const ARCHIVE_FILE: &str = "mongo.archive";

/// Runs `tool` with `args`, authenticated as the root user when the
/// container has one.
fn authenticated(tool: &str, args: &str, password_env: Option<&str>) -> String {
    let password_vars: Vec<&str> = match password_env {
        Some(var) => vec![var],
        None => vec!["MONGO_INITDB_ROOT_PASSWORD"],
    };
    format!(
        r#"{password}u=${{MONGO_INITDB_ROOT_USERNAME:-}}
[ -n "$u" ] || [ -z "${{MONGO_INITDB_ROOT_USERNAME_FILE:-}}" ] || u=$(cat "$MONGO_INITDB_ROOT_USERNAME_FILE")
if [ -z "$u" ]; then exec {tool} {args}; fi
umask 077
cfg=$(mktemp) || exit 1
trap 'rm -f "$cfg"' EXIT
printf "password: '%s'\n" "$(printf '%s' "$pw" | sed "s/'/''/g")" >"$cfg" || exit 1
{tool} --config="$cfg" --username="$u" --authenticationDatabase=admin {args}
"#,
        password = password_from(&password_vars),
    )
}

pub fn dump_part(password_env: Option<&str>) -> DumpPart {
    DumpPart {
        file: ARCHIVE_FILE.to_string(),
        database: None,
        inner: authenticated("mongodump", "--archive", password_env),
        min_bytes: MIN_ARCHIVE_BYTES,
    }
}

/// For a drill: succeeds once the server answers (`ping` needs no login).
pub fn ready() -> String {
    "for shell in mongosh mongo; do command -v $shell >/dev/null && exec $shell --quiet --host 127.0.0.1 --eval 'db.adminCommand(\"ping\")'; done; exit 127\n".to_string()
}

/// Restores the archive on stdin, each collection dropped first.
pub fn restore(password_env: Option<&str>) -> String {
    authenticated("mongorestore", "--archive --drop", password_env)
}

/// Reads the archive on stdin through to its end, restoring nothing: every
/// namespace excluded, mongorestore still reads each one's blocks and fails
/// on an archive that ends before every collection its header lists has
/// ended ("archive finished before all collections were seen") or mid-block.
/// (`--dryRun` stops after the header and collection list, and passes an
/// archive cut short.)
pub fn check_archive(password_env: Option<&str>) -> String {
    authenticated("mongorestore", "--archive --nsExclude='*'", password_env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::script::testing::{sh_ok, write_executable};

    /// Stand-in tools print their arguments, the config file they were
    /// given, and their stdin.
    fn run(script: &str, env: &str, stdin: &str) -> (String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        for tool in ["mongodump", "mongorestore"] {
            write_executable(
                &dir.path().join(tool),
                &format!("#!/bin/sh\necho \"{tool} $*\"\nfor a; do case $a in --config=*) cat \"${{a#--config=}}\"; ls -l \"${{a#--config=}}\" | cut -c1-10; echo \"$a\" >\"$CFG_SEEN\";; esac; done\ncat\n"),
            );
        }
        let seen = dir.path().join("cfg-seen");
        let out = sh_ok(&format!(
            "export PATH={}:$PATH CFG_SEEN={} {env}\nprintf %s {} | {{\n{script}\n}}",
            dir.path().display(),
            seen.display(),
            crate::transport::script::quote(stdin)
        ));
        (String::from_utf8(out.stdout).unwrap(), dir)
    }

    #[test]
    fn the_password_goes_through_a_private_file_that_is_removed() {
        let (out, dir) = run(
            &dump_part(None).inner,
            "MONGO_INITDB_ROOT_USERNAME=root MONGO_INITDB_ROOT_PASSWORD=\"it's s3cret\"",
            "",
        );
        let mut lines = out.lines();
        let args = lines.next().unwrap();
        assert!(args.starts_with("mongodump --config=/"), "{out}");
        assert!(
            args.ends_with("--username=root --authenticationDatabase=admin --archive"),
            "{out}"
        );
        assert!(!args.contains("s3cret"), "{out}");
        // YAML single quotes, doubled inside.
        assert_eq!(lines.next(), Some("password: 'it''s s3cret'"));
        assert_eq!(lines.next(), Some("-rw-------"));
        let cfg = std::fs::read_to_string(dir.path().join("cfg-seen")).unwrap();
        let cfg = cfg.trim().strip_prefix("--config=").unwrap();
        assert!(!std::path::Path::new(cfg).exists(), "{cfg} was left behind");
    }

    #[test]
    fn without_a_root_user_the_tools_run_unauthenticated() {
        let (out, _dir) = run(&restore(None), "", "ARCHIVE");
        assert_eq!(out, "mongorestore --archive --drop\nARCHIVE");
    }

    /// The check reads the whole archive (here the stand-in prints it) and
    /// restores no namespace.
    #[test]
    fn the_check_reads_the_archive_and_excludes_every_namespace() {
        let (out, _dir) = run(&check_archive(None), "", "ARCHIVE");
        assert_eq!(out, "mongorestore --archive --nsExclude=*\nARCHIVE");
        let (out, _dir) = run(
            &check_archive(None),
            "MONGO_INITDB_ROOT_USERNAME=root MONGO_INITDB_ROOT_PASSWORD=pw",
            "ARCHIVE",
        );
        assert!(
            out.contains("--authenticationDatabase=admin --archive --nsExclude=*\n"),
            "{out}"
        );
    }

    #[test]
    fn restore_reads_the_archive_from_stdin_with_the_configured_password() {
        let (out, _dir) = run(
            &restore(Some("DB_ROOT_PW")),
            "MONGO_INITDB_ROOT_USERNAME=admin DB_ROOT_PW=pw",
            "ARCHIVE",
        );
        assert!(out.contains("--username=admin --authenticationDatabase=admin --archive --drop\npassword: 'pw'\n"), "{out}");
        assert!(out.ends_with("ARCHIVE"), "{out}");
    }
}
