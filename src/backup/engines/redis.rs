//! Redis, Valkey and KeyDB: a fresh RDB (`BGSAVE`, waited for until
//! `rdb_last_bgsave_status:ok`), checked with `redis-check-rdb` and copied
//! out; restored by putting it in place while the server is stopped.
//!
//! The restore trap: a server with AOF on loads its AOF and ignores the RDB,
//! and one that finds no AOF at start creates an empty one (checked with
//! Redis 7.0: moving `appendonlydir` aside starts it empty). So when the
//! data directory has an AOF, the RDB also becomes the AOF: since 7.0 the
//! base file of a new multi-part AOF (RDB format is allowed there), before
//! that `appendonly.aof` itself (an RDB preamble is valid AOF since 4.0).
//! The old AOF is moved aside, never deleted.

use serde::{Deserialize, Serialize};

use super::{password_from, tagged, DumpPart, NEVER_READY};
use crate::transport::script::quote;

/// An RDB of an empty server is its header and aux fields (about 100 bytes).
pub const MIN_RDB_BYTES: u64 = 64;
pub const RDB_FILE: &str = "dump.rdb";

/// The official image's defaults, when `CONFIG GET` is renamed away.
pub const DEFAULT_DIR: &str = "/data";
pub const DEFAULT_DBFILENAME: &str = "dump.rdb";

/// `$cli` and `REDISCLI_AUTH` (the password from the container's
/// `password_env`, default `REDIS_PASSWORD`, as the bitnami images have).
fn prelude(password_env: Option<&str>) -> String {
    format!(
        "{}[ -z \"$pw\" ] || {{ REDISCLI_AUTH=$pw; export REDISCLI_AUTH; }}\ncli=$(command -v redis-cli || command -v valkey-cli || command -v keydb-cli) || {{ echo 'vpsup: no redis-cli in the container' >&2; exit 127; }}\n",
        password_from(&[password_env.unwrap_or("REDIS_PASSWORD")])
    )
}

/// Saves, waits for that save, prints on stderr where the RDB lives
/// (`rdb-dir|…`, `rdb-file|…`) and what `redis-check-rdb` says about it
/// (`[info] N keys read`), then writes it to stdout. The same open file is
/// checked and copied, so a later save replacing it changes neither.
pub fn dump_part(password_env: Option<&str>) -> DumpPart {
    let inner = format!(
        r#"{prelude}info() {{ "$cli" INFO persistence | tr -d '\r'; }}
field() {{ printf '%s\n' "$1" | sed -n "s/^$2://p"; }}
# rdb_saves counts saves since 7.0; before, LASTSAVE moves (1 s resolution).
counter() {{ c=$(field "$1" rdb_saves); [ -n "$c" ] || c=$("$cli" LASTSAVE | tr -d '\r'); printf '%s' "$c"; }}
now=$(info) || exit 1
before=$(counter "$now")
[ -n "$(field "$now" rdb_saves)" ] || sleep 1
reply=$("$cli" BGSAVE SCHEDULE | tr -d '\r')
case $reply in
  *'Background saving'*) ;;
  *) echo "vpsup: BGSAVE refused: $reply" >&2; exit 1 ;;
esac
while :; do
  now=$(info) || exit 1
  if [ "$(field "$now" rdb_bgsave_in_progress)" = 0 ]; then
    if [ "$(counter "$now")" != "$before" ]; then break; fi
    if [ "$(field "$now" rdb_last_bgsave_status)" = err ] && [ "$(field "$now" aof_rewrite_in_progress)" != 1 ]; then
      echo 'vpsup: BGSAVE failed (rdb_last_bgsave_status:err); see the server log' >&2; exit 1
    fi
  fi
  sleep 0.2
done
status=$(field "$now" rdb_last_bgsave_status)
[ "$status" = ok ] || {{ echo "vpsup: BGSAVE ended with rdb_last_bgsave_status:$status" >&2; exit 1; }}
dir=$("$cli" CONFIG GET dir | tr -d '\r' | sed -n 2p)
file=$("$cli" CONFIG GET dbfilename | tr -d '\r' | sed -n 2p)
[ -n "$dir" ] || dir={default_dir}
[ -n "$file" ] || file={default_file}
exec 5<"$dir/$file" || exit 1
echo "rdb-dir|$dir" >&2
echo "rdb-file|$file" >&2
check=$(command -v redis-check-rdb || command -v valkey-check-rdb || command -v keydb-check-rdb)
if [ -n "$check" ]; then
  "$check" /dev/fd/5 >&2 || {{ echo 'vpsup: redis-check-rdb rejects the saved RDB' >&2; exit 1; }}
fi
exec cat <&5
"#,
        prelude = prelude(password_env),
        default_dir = quote(DEFAULT_DIR),
        default_file = quote(DEFAULT_DBFILENAME),
    );
    DumpPart {
        file: RDB_FILE.to_string(),
        database: None,
        inner,
        min_bytes: MIN_RDB_BYTES,
    }
}

/// What a dump printed about its RDB. The service's manifest records it
/// as is, its fields flat beside the others (`redis_dir`, …).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RdbReport {
    /// Where the server keeps its RDB (`CONFIG GET dir`, `dbfilename`): a
    /// restore puts it back there. See `place`.
    #[serde(rename = "redis_dir", default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    #[serde(
        rename = "redis_file",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub file: Option<String>,
    /// From `redis-check-rdb` (absent when the image has none).
    #[serde(
        rename = "redis_keys",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub keys: Option<u64>,
    #[serde(
        rename = "redis_expires",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub expires: Option<u64>,
    #[serde(
        rename = "redis_already_expired",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub already_expired: Option<u64>,
}

pub fn parse_dump_report(stderr: &str) -> RdbReport {
    let info = |what: &str| {
        stderr.lines().find_map(|l| {
            let n = l.strip_prefix("[info] ")?.strip_suffix(what)?;
            n.trim().parse().ok()
        })
    };
    RdbReport {
        dir: tagged(stderr, "rdb-dir").next().map(str::to_string),
        file: tagged(stderr, "rdb-file").next().map(str::to_string),
        keys: info(" keys read"),
        expires: info(" expires"),
        already_expired: info(" already expired"),
    }
}

impl RdbReport {
    /// The RDB's directory and file name. Manifests written before they
    /// were recorded have neither: the official image's `/data/dump.rdb`.
    pub fn place(&self) -> (&str, &str) {
        (
            self.dir.as_deref().unwrap_or(DEFAULT_DIR),
            self.file.as_deref().unwrap_or(DEFAULT_DBFILENAME),
        )
    }

    /// Whether a server that loaded this RDB holds a plausible number of
    /// keys: every key read, less at most those with an expiry. Manifests
    /// written before expiries were recorded have the keys only: any of
    /// them may have had one.
    pub fn plausible(&self, loaded: u64) -> bool {
        let Some(keys) = self.keys else { return true };
        let may_expire = self.expires.unwrap_or(keys);
        loaded <= keys && loaded + may_expire >= keys
    }
}

/// Puts the RDB on stdin in place, in a one-off container of the stopped
/// service (`engines::run_oneoff`) at `dir`/`file` (where the dump said it
/// lived), as the data directory's owner.
pub fn restore(dir: &str, file: &str) -> String {
    format!(
        r#"dir={dir}
file={file}
new="$dir/.vpsup-restore.rdb"
cat >"$new" || exit 1
[ -s "$new" ] || {{ rm -f "$new"; echo 'vpsup: the RDB to restore is empty' >&2; exit 1; }}
stamp=$(date +%Y%m%d%H%M%S)
if [ -d "$dir/appendonlydir" ]; then
  base=$(cd "$dir/appendonlydir" && ls | sed -n 's/\.manifest$//p' | head -n 1)
  [ -n "$base" ] || base=appendonly.aof
  mv "$dir/appendonlydir" "$dir/appendonlydir.vpsup-$stamp" || exit 1
  mkdir "$dir/appendonlydir" || exit 1
  cp "$new" "$dir/appendonlydir/$base.1.base.rdb" || exit 1
  printf 'file %s seq 1 type b\n' "$base.1.base.rdb" >"$dir/appendonlydir/$base.manifest" || exit 1
  echo "vpsup: the previous AOF is kept in $dir/appendonlydir.vpsup-$stamp" >&2
elif [ -f "$dir/appendonly.aof" ]; then
  mv "$dir/appendonly.aof" "$dir/appendonly.aof.vpsup-$stamp" && cp "$new" "$dir/appendonly.aof" || exit 1
  echo "vpsup: the previous AOF is kept in $dir/appendonly.aof.vpsup-$stamp" >&2
fi
mv -f "$new" "$dir/$file" || exit 1
owner=$(stat -c %u:%g "$dir") || exit 1
chown "$owner" "$dir/$file" || exit 1
if [ -d "$dir/appendonlydir" ]; then chown -R "$owner" "$dir/appendonlydir" || exit 1; fi
if [ -f "$dir/appendonly.aof" ]; then chown "$owner" "$dir/appendonly.aof" || exit 1; fi
"#,
        dir = quote(dir),
        file = quote(file),
    )
}

/// For a drill: `INFO keyspace` (parse with `parse_keyspace`).
pub fn keyspace(password_env: Option<&str>) -> String {
    format!("{}exec \"$cli\" INFO keyspace\n", prelude(password_env))
}

/// The keys of every database in `INFO keyspace` (`db0:keys=N,…`).
pub fn parse_keyspace(info: &str) -> u64 {
    info.lines()
        .filter(|l| l.starts_with("db"))
        .filter_map(|l| {
            let fields = l.split_once(':')?.1;
            fields
                .split(',')
                .find_map(|f| f.strip_prefix("keys="))?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// For a drill: succeeds once the server answers and has loaded its data
/// (`loading:0`; keys counted before that are a part of them).
pub fn ready(password_env: Option<&str>) -> String {
    format!(
        "{}[ \"$(\"$cli\" INFO persistence | tr -d '\\r' | sed -n 's/^loading://p')\" = 0 ]\n",
        prelude(password_env)
    )
}

/// For a drill: serves the RDB restored at `dir`/`file` with persistence
/// off, in the foreground (run it detached), its log in `dir`; when the
/// server ends (a corrupt RDB) it leaves word there for `drill_loaded`.
pub fn drill_serve(dir: &str, file: &str) -> String {
    format!(
        "cd {dir} || exit 1\nredis-server --dir {dir} --dbfilename {file} --appendonly no --save '' >.vpsup-drill.log 2>&1\ntouch .vpsup-drill.exited\n",
        dir = quote(dir),
        file = quote(file),
    )
}

/// For a drill: succeeds once the `drill_serve` server in `dir` has loaded
/// its RDB; exits `NEVER_READY`, the server's log on stderr, once it ended.
pub fn drill_loaded(dir: &str) -> String {
    format!(
        "if [ -e {d}/.vpsup-drill.exited ]; then tail -n 20 {d}/.vpsup-drill.log >&2; exit {NEVER_READY}; fi\n{}",
        ready(None),
        d = quote(dir),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::script::testing::{sh_ok, write_executable};

    const CHECK_RDB: &str = "[offset 0] Checking RDB file /dev/fd/5
[offset 27] AUX FIELD redis-ver = '7.0.15'
[offset 979] \\o/ RDB looks OK! \\o/
[info] 100 keys read
[info] 7 expires
[info] 2 already expired
";

    #[test]
    fn the_dump_report_has_the_files_place_and_its_keys() {
        let stderr = format!("rdb-dir|/data\nrdb-file|dump.rdb\n{CHECK_RDB}");
        let report = parse_dump_report(&stderr);
        assert_eq!(
            report,
            RdbReport {
                dir: Some("/data".into()),
                file: Some("dump.rdb".into()),
                keys: Some(100),
                expires: Some(7),
                already_expired: Some(2),
            }
        );
        assert!(report.plausible(100));
        assert!(report.plausible(93));
        assert!(!report.plausible(92));
        assert!(!report.plausible(101));
        assert!(RdbReport::default().plausible(0));
        let keys_only = RdbReport {
            keys: Some(100),
            ..RdbReport::default()
        };
        assert!(keys_only.plausible(0) && keys_only.plausible(100));
        assert!(!keys_only.plausible(101));
        assert_eq!(report.place(), ("/data", "dump.rdb"));
        let elsewhere = parse_dump_report("rdb-dir|/var/lib/redis\nrdb-file|other.rdb\n");
        assert_eq!(elsewhere.place(), ("/var/lib/redis", "other.rdb"));
        assert_eq!(
            RdbReport::default().place(),
            (DEFAULT_DIR, DEFAULT_DBFILENAME)
        );
    }

    #[test]
    fn keyspace_sums_every_database() {
        let info =
            "# Keyspace\r\ndb0:keys=4998,expires=3,avg_ttl=0\r\ndb3:keys=2,expires=0,avg_ttl=0\r\n";
        assert_eq!(parse_keyspace(info), 5000);
        assert_eq!(parse_keyspace("# Keyspace\r\n"), 0);
    }

    /// A server still loading its RDB answers INFO but holds only a part
    /// of the keys: not ready until `loading:0`.
    #[test]
    fn ready_waits_until_the_rdb_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        write_executable(
            &dir.path().join("redis-cli"),
            "#!/bin/sh\n[ \"$*\" = 'INFO persistence' ] || exit 2\nprintf '# Persistence\\r\\nloading:%s\\r\\nasync_loading:0\\r\\n' \"$LOADING\"\n",
        );
        let script = ready(None);
        let run = |loading: &str| {
            std::process::Command::new("sh")
                .args(["-c", &script])
                .env(
                    "PATH",
                    format!(
                        "{}:{}",
                        dir.path().display(),
                        std::env::var("PATH").unwrap()
                    ),
                )
                .env("LOADING", loading)
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(!run("1"));
        assert!(run("0"));
    }

    /// A drill's server that cannot load the RDB ends: the drill hears so at
    /// once, with the server's own words, instead of waiting for it.
    #[test]
    fn a_drill_server_that_ended_is_never_ready() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        write_executable(
            &bin.join("redis-server"),
            "#!/bin/sh\necho \"$*\"\necho 'Bad file format reading the RDB' >&2\nexit 1\n",
        );
        write_executable(&bin.join("redis-cli"), "#!/bin/sh\nexit 1\n");
        let data = dir.path().join("var lib redis");
        std::fs::create_dir(&data).unwrap();
        let data = data.display().to_string();
        let path = format!("PATH={}:$PATH", bin.display());
        let loaded = drill_loaded(&data);
        let before = std::process::Command::new("sh")
            .args(["-c", &format!("{path}\n{loaded}")])
            .output()
            .unwrap();
        assert_eq!(before.status.code(), Some(1), "still starting: wait");
        sh_ok(&format!("{path}\n{}", drill_serve(&data, "other.rdb")));
        let after = std::process::Command::new("sh")
            .args(["-c", &format!("{path}\n{loaded}")])
            .output()
            .unwrap();
        assert_eq!(after.status.code(), Some(NEVER_READY));
        let log = String::from_utf8_lossy(&after.stderr);
        assert!(
            log.contains(&format!(
                "--dir {data} --dbfilename other.rdb --appendonly no"
            )) && log.contains("Bad file format"),
            "{log}"
        );
    }

    /// The restore's file work, here on a directory laid out as each Redis
    /// generation leaves it.
    #[test]
    fn the_rdb_becomes_the_aof_where_there_is_one() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let put = |sub: &str| {
            let data = d.join(sub);
            std::fs::create_dir_all(&data).unwrap();
            data
        };
        let restore_into = |data: &std::path::Path| {
            sh_ok(&format!(
                "printf REDIS0010-new | {{\n{}\n}}",
                restore(&data.display().to_string(), "dump.rdb")
            ))
        };
        // 7.0+: multi-part AOF named after its manifest.
        let seven = put("seven");
        std::fs::create_dir(seven.join("appendonlydir")).unwrap();
        std::fs::write(
            seven.join("appendonlydir/app.aof.manifest"),
            "file app.aof.1.base.rdb seq 1 type b\n",
        )
        .unwrap();
        std::fs::write(seven.join("dump.rdb"), "old").unwrap();
        restore_into(&seven);
        assert_eq!(
            std::fs::read_to_string(seven.join("dump.rdb")).unwrap(),
            "REDIS0010-new"
        );
        assert_eq!(
            std::fs::read_to_string(seven.join("appendonlydir/app.aof.1.base.rdb")).unwrap(),
            "REDIS0010-new"
        );
        assert_eq!(
            std::fs::read_to_string(seven.join("appendonlydir/app.aof.manifest")).unwrap(),
            "file app.aof.1.base.rdb seq 1 type b\n"
        );
        let kept: Vec<_> = std::fs::read_dir(&seven)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("appendonlydir.vpsup-"))
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(seven.join(&kept[0]).join("app.aof.manifest").exists());
        // Before 7.0: one appendonly.aof.
        let six = put("six");
        std::fs::write(six.join("appendonly.aof"), "*2\r\n").unwrap();
        restore_into(&six);
        assert_eq!(
            std::fs::read_to_string(six.join("appendonly.aof")).unwrap(),
            "REDIS0010-new"
        );
        // No AOF: the RDB alone, and nothing else appears.
        let plain = put("plain");
        restore_into(&plain);
        let names: Vec<_> = std::fs::read_dir(&plain)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["dump.rdb"]);
    }

    #[test]
    fn an_empty_rdb_is_not_restored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dump.rdb"), "old").unwrap();
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                &format!(
                    ": | {{\n{}\n}}",
                    restore(&dir.path().display().to_string(), "dump.rdb")
                ),
            ])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("dump.rdb")).unwrap(),
            "old"
        );
    }
}
