//! PostgreSQL: `databases` mode (roles and tablespaces in `globals.sql`,
//! then one `pg_dump -Fc -Z0` per database, each with per-table row counts
//! taken in the same MVCC snapshot as its dump) or `cluster` mode (one
//! `pg_dumpall`).
//!
//! `-Z0`: a compressed custom dump changes everywhere when one row changes,
//! so the repository cannot deduplicate it; restic compresses anyway.
//! `pg_dumpall` runs without `--clean`: replayed with `ON_ERROR_STOP`, its
//! `DROP ROLE postgres` fails after every database was already dropped.
//! Restores instead make each `CREATE ROLE` tolerate an existing role.
//!
//! Scripts connect the way the official image allows inside the container:
//! the local socket as `$POSTGRES_USER` (default `postgres`), with
//! `PGPASSWORD` from `$POSTGRES_PASSWORD` (or its `_FILE`) for servers whose
//! local connections want one. `PGHOST`/`PGPORT` from the environment apply.

use std::collections::BTreeMap;

use super::{password_from, tagged, DumpPart};
use crate::transport::script::quote;
use crate::transport::sections::{MissingPart, Sections};

/// A custom-format dump of an empty database is about 850 bytes.
pub const MIN_DATABASE_BYTES: u64 = 512;
/// A fresh cluster's `pg_dumpall --globals-only` (its superuser) is larger.
pub const MIN_GLOBALS_BYTES: u64 = 64;
/// A fresh cluster's `pg_dumpall` (globals and three databases).
pub const MIN_CLUSTER_BYTES: u64 = 1024;

pub const GLOBALS_FILE: &str = "globals.sql";
pub const CLUSTER_FILE: &str = "cluster.sql";

/// The connection settings every script starts with.
fn prelude() -> String {
    format!(
        "U=${{POSTGRES_USER:-postgres}}\n{}[ -z \"$pw\" ] || {{ PGPASSWORD=$pw; export PGPASSWORD; }}\n",
        password_from(&["POSTGRES_PASSWORD"])
    )
}

/// `psql` for scripts: no psqlrc, unaligned tuples only, stop at the first error.
const PSQL: &str = "psql -qXAt -v ON_ERROR_STOP=1 -U \"$U\"";

/// Lists the databases to dump, one per line (templates and databases that
/// refuse connections left out).
pub fn list_databases() -> String {
    format!(
        "{}{PSQL} -d postgres -c 'SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1'\n",
        prelude()
    )
}

pub fn parse_databases(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `databases` mode: the globals, then each of `databases`.
pub fn dump_parts(databases: &[String]) -> Vec<DumpPart> {
    let mut parts = vec![DumpPart {
        file: GLOBALS_FILE.to_string(),
        database: None,
        inner: dump_globals(),
        min_bytes: MIN_GLOBALS_BYTES,
    }];
    parts.extend(databases.iter().map(|db| DumpPart {
        file: format!("{}.pgdump", file_name(db)),
        database: Some(db.clone()),
        inner: dump_database(db),
        min_bytes: MIN_DATABASE_BYTES,
    }));
    parts
}

/// `cluster` mode: everything in one `pg_dumpall`.
pub fn cluster_part() -> DumpPart {
    DumpPart {
        file: CLUSTER_FILE.to_string(),
        database: None,
        inner: format!("{}exec pg_dumpall -U \"$U\"\n", prelude()),
        min_bytes: MIN_CLUSTER_BYTES,
    }
}

/// A database name as a file name: anything but `[A-Za-z0-9_.-]` as `%XX`
/// (names are free text; a file name must not hold `/`).
fn file_name(database: &str) -> String {
    let mut out = String::new();
    for b in database.bytes() {
        if b.is_ascii_alphanumeric() || b"_-".contains(&b) || (b == b'.' && !out.is_empty()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn dump_globals() -> String {
    format!("{}exec pg_dumpall -U \"$U\" --globals-only\n", prelude())
}

/// `database` as a libpq connection string (`-d` reads a name with `=` in
/// it as one, so every name goes through this).
fn conninfo(database: &str) -> String {
    format!(
        "dbname='{}'",
        database.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

/// Counts every table's rows, one line `count|schema.table|N` each (names
/// quoted as SQL identifiers when they need it, so the line is unambiguous).
const COUNTS_SQL: &str = "SELECT 'count|' || format('%I.%I', n.nspname, c.relname) || '|' || \
(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text \
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
ORDER BY 1;";

/// One database: a background `psql` opens a repeatable-read transaction,
/// exports its snapshot and counts every table's rows in it; `pg_dump` then
/// dumps that same snapshot, so the counts describe exactly the dump. The
/// transaction stays open as long as the script holds the FIFO psql reads
/// from; when the script ends (or is killed) psql reads EOF and disconnects.
fn dump_database(database: &str) -> String {
    format!(
        r#"{prelude}db={conninfo}
name={name}
work=$(mktemp -d) || exit 1
trap 'exec 4>&-; wait; rm -rf "$work"' EXIT
mkfifo "$work/sql" || exit 1
( {PSQL} -d "$db" <"$work/sql" >"$work/out" 2>"$work/err"; echo $? >"$work/done" ) &
exec 4>"$work/sql"
cat >&4 <<'VPSUP_SQL'
SET application_name = 'vpsup-backup';
BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;
SELECT 'snapshot|' || pg_export_snapshot();
{COUNTS_SQL}
SELECT 'ready';
VPSUP_SQL
until grep -qx ready "$work/out"; do
  if [ -e "$work/done" ]; then
    echo "vpsup: could not take a snapshot of database $name: $(cat "$work/err")" >&2
    exit 1
  fi
  sleep 0.1
done
grep '^count|' "$work/out" >&2
pg_dump -U "$U" -d "$db" -Fc -Z0 --snapshot="$(sed -n 's/^snapshot|//p' "$work/out")"
"#,
        prelude = prelude(),
        conninfo = quote(&conninfo(database)),
        name = quote(database),
    )
}

/// Every table's row count in `database`, as the dump printed them.
fn count_rows(database: &str) -> String {
    format!(
        "{}{PSQL} -d {} <<'VPSUP_SQL'\n{COUNTS_SQL}\nVPSUP_SQL\n",
        prelude(),
        quote(&conninfo(database))
    )
}

/// Row counts per database: database → `schema.table` → rows.
pub type DatabaseCounts = BTreeMap<String, BTreeMap<String, u64>>;

/// For a drill: `count_rows` of each of `databases`, each in a section of
/// its own (`counts N`, the database's index: a name may be any text), so
/// same-named tables in two databases stay apart.
pub fn count_databases(sections: &Sections, databases: &[&str]) -> String {
    let scripts: Vec<(String, String)> = databases
        .iter()
        .enumerate()
        .map(|(i, db)| (format!("counts {i}"), count_rows(db)))
        .collect();
    sections.script(scripts.iter().map(|(n, s)| (n.as_str(), s.as_str())))
}

/// What `count_databases` printed, per database.
pub fn parse_database_counts(
    sections: &Sections,
    databases: &[&str],
    output: &str,
) -> Result<DatabaseCounts, MissingPart> {
    let parts = sections.parse(output);
    databases
        .iter()
        .enumerate()
        .map(|(i, db)| {
            Ok((
                db.to_string(),
                parse_counts(parts.get(&format!("counts {i}"))?),
            ))
        })
        .collect()
}

/// Row count per table (`schema.table`) from a dump's or a drill's output.
pub fn parse_counts(output: &str) -> BTreeMap<String, u64> {
    tagged(output, "count")
        .filter_map(|rest| {
            let (table, n) = rest.rsplit_once('|')?;
            Some((table.to_string(), n.trim().parse().ok()?))
        })
        .collect()
}

/// The tables whose counts differ (`(table, expected, found)`; a missing
/// table counts as `None`), empty when the restore holds what was dumped.
fn count_mismatches<T: Ord + Clone>(
    expected: &BTreeMap<T, u64>,
    found: &BTreeMap<T, u64>,
) -> Vec<(T, Option<u64>, Option<u64>)> {
    let mut tables: Vec<&T> = expected.keys().chain(found.keys()).collect();
    tables.sort();
    tables.dedup();
    tables
        .into_iter()
        .filter_map(|t| {
            let (e, f) = (expected.get(t).copied(), found.get(t).copied());
            (e != f).then(|| (t.clone(), e, f))
        })
        .collect()
}

/// A table of a database whose restored row count differs from the
/// backup's (`None`: no such table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountMismatch {
    pub database: String,
    pub table: String,
    pub expected: Option<u64>,
    pub found: Option<u64>,
}

impl std::fmt::Display for CountMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows = |n: Option<u64>| n.map_or("no table".to_string(), |n| format!("{n} rows"));
        write!(
            f,
            "{}: {}: {} at backup, {} restored",
            self.database,
            self.table,
            rows(self.expected),
            rows(self.found)
        )
    }
}

/// `count_mismatches` over every database, each table named by its
/// database too: `shop`'s `public.items` is not `blog`'s.
pub fn database_mismatches(
    expected: &DatabaseCounts,
    found: &DatabaseCounts,
) -> Vec<CountMismatch> {
    let by_table = |counts: &DatabaseCounts| -> BTreeMap<(String, String), u64> {
        counts
            .iter()
            .flat_map(|(db, tables)| {
                tables
                    .iter()
                    .map(move |(table, n)| ((db.clone(), table.clone()), *n))
            })
            .collect()
    };
    count_mismatches(&by_table(expected), &by_table(found))
        .into_iter()
        .map(|((database, table), expected, found)| CountMismatch {
            database,
            table,
            expected,
            found,
        })
        .collect()
}

/// Turns `CREATE ROLE x;` into a statement that tolerates an existing role
/// (the superuser always exists; other roles may), so a replay under
/// `ON_ERROR_STOP` goes on; `ALTER ROLE` lines then set every attribute.
const TOLERATE_EXISTING_ROLES: &str = "sed 's/^CREATE ROLE \\(.*\\);$/DO $vpsup$ BEGIN CREATE ROLE \\1; EXCEPTION WHEN duplicate_object THEN NULL; END $vpsup$;/'";

/// Replays `globals.sql` from stdin.
pub fn restore_globals() -> String {
    format!(
        "{}{TOLERATE_EXISTING_ROLES} | {PSQL} -d postgres\n",
        prelude()
    )
}

/// Replaces `database` with the custom dump on stdin: disconnects its
/// sessions, drops it, and lets `pg_restore --create` make it again with its
/// owner, settings and grants (the roles must exist: globals first). The
/// app's other services should be stopped, or they reconnect at once.
pub fn restore_database(database: &str) -> String {
    format!(
        r#"{prelude}db={name}
m=postgres; [ "$db" != postgres ] || m=template1
{PSQL} -v db="$db" -d "$m" >/dev/null <<'VPSUP_SQL' || exit 1
SELECT current_setting('server_version_num')::int >= 130000 AS force \gset
\if :force
DROP DATABASE IF EXISTS :"db" WITH (FORCE);
\else
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :'db' AND pid <> pg_backend_pid();
DROP DATABASE IF EXISTS :"db";
\endif
VPSUP_SQL
exec pg_restore -U "$U" --create --exit-on-error -d "$m"
"#,
        prelude = prelude(),
        name = quote(database),
    )
}

/// Reads the custom dump on stdin through to its end, touching no database:
/// fails when it is cut short or damaged. (`pg_restore --list` reads only
/// the table of contents at its start, and passes a truncated dump.)
pub fn check_database_dump() -> String {
    "exec pg_restore -f /dev/null\n".to_string()
}

/// Reads the `pg_dumpall` on stdin through to its end: fails unless it
/// carries the comment `pg_dumpall` ends with (`grep -c` reads it all; `-q`
/// would stop at the match).
pub fn check_cluster_dump() -> String {
    "grep -cx -- '-- PostgreSQL database cluster dump complete' >/dev/null || { echo 'vpsup: the cluster dump does not end as pg_dumpall ends one' >&2; exit 1; }\n".to_string()
}

/// Replays a `pg_dumpall` from stdin into a cluster made empty first: every
/// database but the templates is dropped, and an empty `postgres` made
/// again for the dump to fill (it `\connect`s to it rather than creating it).
pub fn restore_cluster() -> String {
    format!(
        r#"{prelude}{PSQL} -d template1 >/dev/null <<'VPSUP_SQL' || exit 1
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname <> 'template1' AND pid <> pg_backend_pid();
SELECT format('DROP DATABASE %I', datname) FROM pg_database WHERE NOT datistemplate \gexec
CREATE DATABASE postgres;
VPSUP_SQL
{TOLERATE_EXISTING_ROLES} | {PSQL} -d template1
"#,
        prelude = prelude(),
    )
}

/// For a drill: succeeds once the server accepts connections over TCP
/// (images start a socket-only server while they initialise, then stop it).
pub fn ready() -> String {
    format!("{}pg_isready -h 127.0.0.1 -U \"$U\" -q\n", prelude())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::script::testing::{sh_ok, write_executable};

    #[test]
    fn counts_are_read_from_tagged_lines_only() {
        let stderr = "pg_dump: warning: something\ncount|public.orders|5000\ncount|\"Odd|Schema\".\"t|1\"|7\ncount|public.broken|x\nnot|a|count\n";
        assert_eq!(
            parse_counts(stderr),
            BTreeMap::from([
                ("\"Odd|Schema\".\"t|1\"".to_string(), 7),
                ("public.orders".to_string(), 5000)
            ])
        );
    }

    #[test]
    fn mismatches_name_the_table_and_both_counts() {
        let expected = BTreeMap::from([("public.a".to_string(), 3), ("public.b".to_string(), 2)]);
        let found = BTreeMap::from([("public.a".to_string(), 3), ("public.c".to_string(), 1)]);
        assert_eq!(
            count_mismatches(&expected, &found),
            [
                ("public.b".to_string(), Some(2), None),
                ("public.c".to_string(), None, Some(1))
            ]
        );
        assert!(count_mismatches(&expected, &expected).is_empty());
    }

    /// Two databases with a table of the same name and different counts:
    /// each is compared with its own, through the drill's real script (a
    /// stand-in `psql` answers per database).
    #[test]
    fn same_named_tables_in_two_databases_are_counted_apart() {
        let dir = tempfile::tempdir().unwrap();
        write_executable(
            &dir.path().join("psql"),
            "#!/bin/sh\ncat >/dev/null\ncase \"$*\" in\n  *\"dbname='shop'\"*) echo 'count|public.items|3' ;;\n  *\"dbname='blog'\"*) echo \"count|public.items|${BLOG_ITEMS:-5}\"; echo 'count|public.posts|2' ;;\nesac\n",
        );
        let expected: DatabaseCounts = BTreeMap::from([
            (
                "shop".to_string(),
                BTreeMap::from([("public.items".to_string(), 3)]),
            ),
            (
                "blog".to_string(),
                BTreeMap::from([
                    ("public.items".to_string(), 5),
                    ("public.posts".to_string(), 2),
                ]),
            ),
        ]);
        let databases: Vec<&str> = expected.keys().map(String::as_str).collect();
        let sections = Sections::random();
        let script = count_databases(&sections, &databases);
        let drill = |env: &str| {
            let out = sh_ok(&format!(
                "export PATH={}:$PATH {env}\n{script}",
                dir.path().display()
            ));
            let found =
                parse_database_counts(&sections, &databases, &String::from_utf8_lossy(&out.stdout))
                    .unwrap();
            database_mismatches(&expected, &found)
        };
        assert_eq!(drill(""), []);
        let mismatch = CountMismatch {
            database: "blog".into(),
            table: "public.items".into(),
            expected: Some(5),
            found: Some(4),
        };
        assert_eq!(drill("BLOG_ITEMS=4"), std::slice::from_ref(&mismatch));
        assert_eq!(
            mismatch.to_string(),
            "blog: public.items: 5 rows at backup, 4 rows restored"
        );
        // A database whose counts did not come back is no pass.
        let missing = parse_database_counts(&sections, &databases, "count|public.items|3\n");
        assert!(missing.is_err());
    }

    #[test]
    fn one_part_per_database_after_the_globals() {
        let parts = dump_parts(&["shop".into(), "it's a/db".into(), ".x".into()]);
        let files: Vec<&str> = parts.iter().map(|p| p.file.as_str()).collect();
        assert_eq!(
            files,
            [
                "globals.sql",
                "shop.pgdump",
                "it%27s%20a%2Fdb.pgdump",
                "%2Ex.pgdump"
            ]
        );
        assert_eq!(parts[2].database.as_deref(), Some("it's a/db"));
        assert!(parts[1].inner.contains("-Fc -Z0 --snapshot="));
        assert_eq!(parts[1].min_bytes, MIN_DATABASE_BYTES);
        assert!(!cluster_part().inner.contains("--clean"));
    }

    #[test]
    fn database_names_reach_the_tools_unchanged() {
        // The conninfo and the quoting, through a real shell: what psql
        // would be given as -d.
        for name in ["shop", "it's a db", "a=b", "back\\slash", "$(id)"] {
            let script = format!("db={}\nprintf '%s' \"$db\"", quote(&conninfo(name)));
            let out = String::from_utf8(sh_ok(&script).stdout).unwrap();
            let inner = out
                .strip_prefix("dbname='")
                .and_then(|s| s.strip_suffix('\''))
                .unwrap();
            assert_eq!(inner.replace("\\'", "'").replace("\\\\", "\\"), name);
        }
    }

    #[test]
    fn create_role_tolerates_an_existing_role_and_nothing_else_changes() {
        let globals = "CREATE ROLE app;\nALTER ROLE app WITH LOGIN PASSWORD 'SCRAM-SHA-256$x';\nCREATE TABLESPACE t OWNER app LOCATION '/x';\n";
        let out = sh_ok(&format!(
            "printf '%s' {} | {TOLERATE_EXISTING_ROLES}",
            quote(globals)
        ));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "DO $vpsup$ BEGIN CREATE ROLE app; EXCEPTION WHEN duplicate_object THEN NULL; END $vpsup$;\nALTER ROLE app WITH LOGIN PASSWORD 'SCRAM-SHA-256$x';\nCREATE TABLESPACE t OWNER app LOCATION '/x';\n"
        );
    }
}
