//! The pipeline that streams a dump into `restic backup --stdin` without
//! trusting a shell pipe: dash has no pipefail, and restic writes a snapshot of
//! whatever arrived before EOF, even from a dump that failed halfway.
//!
//! The rule: a snapshot exists only if the producer exited 0, restic exited 0
//! and the dump is at least the engine's minimum size. The producer writes into
//! a FIFO whose write end the script holds open, so restic sees EOF only after
//! the producer succeeded; on failure restic gets SIGINT instead and leaves
//! nothing. A snapshot that still appeared (too small; restic's own exit 3 for
//! empty input) is forgotten again before the script reports.

use std::time::Duration;

use crate::transport::script::quote;
use crate::transport::sections::{MissingPart, Sections};

use super::restic::{classify, timeout_prefix, RepoError, Repository, SnapshotMeta};

/// One stream into one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    /// A shell script whose stdout is the dump (it also reads the script's stdin).
    pub producer: String,
    /// The path the snapshot records, `app+service+file` (see `stdin_path`).
    pub filename: String,
    pub meta: SnapshotMeta,
    /// For the producer and restic together.
    pub timeout: Duration,
    /// Smaller dumps are failures (an empty database still dumps more).
    pub min_bytes: u64,
}

/// The path of one dump in the repository: `shop+db+shop.pgdump`, shown by
/// restic as `/shop+db+shop.pgdump`. One stable path per app, service and
/// file, so retention groups each history on its own. No `/`: restic 0.18.0
/// (Debian 13's) refuses a `--stdin-filename` with a directory in it
/// (restic#5324); `+` is in no app or service name, and file names encode it.
pub fn stdin_path(app: &str, service: &str, file: &str) -> String {
    format!("{app}+{service}+{file}")
}

/// The snapshot a successful pipeline wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// A prefix of the id (8 hex from restic 0.14, 64 from 0.17).
    pub id: String,
    /// The dump's size.
    pub bytes: u64,
    /// New to the repository (before compression).
    pub data_added: u64,
    pub duration: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipeError {
    #[error("the dump failed ({}); no snapshot was written{}", exit_words(*.exit), tail_text(.tail))]
    DumpFailed { exit: u32, tail: String },
    #[error("restic failed (exit {exit}); no snapshot was kept: {error}")]
    ResticFailed { exit: u32, error: RepoError },
    #[error("the dump is only {bytes} bytes, below the {min} a real one has; its snapshot was removed again")]
    TooSmall { bytes: u64, min: u64 },
    /// A failure whose snapshot restic had written anyway, and removing it
    /// failed too.
    #[error(
        "{cause}; and its snapshot {snapshot} could not be removed: run `restic forget {snapshot}`"
    )]
    Leftover {
        snapshot: String,
        cause: Box<PipeError>,
    },
    #[error("the backup script stopped before it reported: {0}")]
    NoReport(String),
}

fn exit_words(exit: u32) -> String {
    match exit {
        124 => "timed out".to_string(),
        137 => "killed (exit 137)".to_string(),
        141 => "broken pipe (exit 141)".to_string(),
        n => format!("exit {n}"),
    }
}

fn tail_text(tail: &str) -> String {
    match tail.trim() {
        "" => String::new(),
        t => format!(": {t}"),
    }
}

/// How many lines of each stderr come back.
const TAIL_LINES: u32 = 20;

impl Pipeline {
    /// The script. Its stdout is `sections`' parts `result`, `summary`,
    /// `dump-stderr` and `restic-stderr`; read it with `parse`.
    pub fn script(&self, repo: &Repository, sections: &Sections) -> String {
        let t = timeout_prefix(self.timeout);
        let restic = repo.restic();
        let run = format!(
            r#"{prelude}work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
mkfifo -m 600 "$work/pipe" || exit 1
{t} {restic} backup --stdin --stdin-filename {name} {meta} --json <"$work/pipe" >"$work/out" 2>"$work/err" &
rpid=$!
# Held open: restic sees EOF only when the producer has succeeded.
exec 3>"$work/pipe"
timeout -k 10 {secs} sh -c {producer} >&3 3>&- 2>"$work/dump.err"
drc=$?
if [ "$drc" -ne 0 ]; then
  kill -INT "$rpid" 2>/dev/null
  wait "$rpid"; rrc=$?
  exec 3>&-
  result="dump-failed $drc $rrc"
else
  exec 3>&-
  wait "$rpid"; rrc=$?
  result="ok $rrc"
fi
summary=$(grep '"message_type":"summary"' "$work/out" | tail -n 1)
id=$(printf '%s\n' "$summary" | sed -n 's/.*"snapshot_id":"\([0-9a-f]*\)".*/\1/p')
bytes=$(printf '%s\n' "$summary" | sed -n 's/.*"total_bytes_processed":\([0-9]*\).*/\1/p')
# A snapshot of a failed or too small dump must not stay.
leftover=
if [ -n "$id" ] && {{ [ "$drc" -ne 0 ] || [ "$rrc" -ne 0 ] || [ "${{bytes:-0}}" -lt {min} ]; }}; then
  {t} {restic} forget "$id" >/dev/null 2>>"$work/err" || leftover=$id
  [ "$drc" -ne 0 ] || [ "$rrc" -ne 0 ] || result="too-small ${{bytes:-0}}"
fi
"#,
            prelude = repo.script_prelude(),
            name = quote(&self.filename),
            meta = self.meta.args(),
            secs = self.timeout.as_secs().max(1),
            producer = quote(&self.producer),
            min = self.min_bytes,
        );
        let report = sections.script([
            ("result", r#"printf '%s\n' "$result""#),
            ("summary", r#"printf '%s\n' "$summary""#),
            ("leftover", r#"printf '%s\n' "$leftover""#),
            (
                "dump-stderr",
                &format!(r#"tail -n {TAIL_LINES} "$work/dump.err""#) as &str,
            ),
            // What the dump reports for the manifest (row counts, the RDB's
            // key count and place), whole: `dump-stderr` is only its tail.
            (
                "dump-report",
                r#"grep -E '^(count|rdb-dir|rdb-file)\||^\[info\] ' "$work/dump.err" || true"#,
            ),
            (
                "restic-stderr",
                &format!(r#"tail -n {TAIL_LINES} "$work/err""#) as &str,
            ),
        ]);
        format!("{run}{report}case $result in ok\\ 0) exit 0 ;; *) exit 1 ;; esac\n")
    }

    /// Reads what `script` printed (its stdout).
    pub fn parse(&self, sections: &Sections, stdout: &str) -> Result<Snapshot, PipeError> {
        let outcome = self.outcome(sections, stdout);
        let leftover = sections
            .parse(stdout)
            .optional("leftover")
            .map(str::trim)
            .unwrap_or_default()
            .to_string();
        match outcome {
            Err(cause) if !leftover.is_empty() => Err(PipeError::Leftover {
                snapshot: leftover,
                cause: Box::new(cause),
            }),
            outcome => outcome,
        }
    }

    fn outcome(&self, sections: &Sections, stdout: &str) -> Result<Snapshot, PipeError> {
        let parts = sections.parse(stdout);
        let part = |name: &str| {
            parts
                .get(name)
                .map_err(|e: MissingPart| PipeError::NoReport(e.to_string()))
        };
        let result = part("result")?.trim();
        let words: Vec<&str> = result.split_whitespace().collect();
        let number = |i: usize| words.get(i).and_then(|w| w.parse::<u32>().ok());
        let restic_stderr = part("restic-stderr")?;
        let restic_failed = |exit: u32| PipeError::ResticFailed {
            exit,
            error: classify(Some(exit), restic_stderr),
        };
        match words.first().copied() {
            Some("dump-failed") => {
                let (exit, rrc) = (number(1).unwrap_or(1), number(2).unwrap_or(0));
                // restic died first (wrong password, network): the producer then
                // only saw a broken pipe, and restic's words are the cause.
                if restic_stderr.contains("Fatal:") && !restic_stderr.contains("signal interrupt") {
                    return Err(restic_failed(rrc));
                }
                Err(PipeError::DumpFailed {
                    exit,
                    tail: part("dump-stderr")?.trim().to_string(),
                })
            }
            Some("too-small") => Err(PipeError::TooSmall {
                bytes: words.get(1).and_then(|w| w.parse().ok()).unwrap_or(0),
                min: self.min_bytes,
            }),
            Some("ok") if number(1) == Some(0) => {
                let summary = super::restic::parse_summary(part("summary")?)
                    .map_err(|e| PipeError::NoReport(e.to_string()))?;
                Ok(Snapshot {
                    id: summary.snapshot_id,
                    bytes: summary.total_bytes_processed,
                    data_added: summary.data_added,
                    duration: Duration::from_secs_f64(summary.total_duration.max(0.0)),
                })
            }
            Some("ok") => Err(restic_failed(number(1).unwrap_or(1))),
            _ => Err(PipeError::NoReport(format!("unexpected result {result:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::restic::{HostFiles, HostKeys};

    fn pipeline() -> Pipeline {
        Pipeline {
            producer: "pg_dump -Fc -Z0 'shop'".to_string(),
            filename: stdin_path("shop", "db", "shop.pgdump"),
            meta: SnapshotMeta::data("web-1", "shop", "db", "postgres", "r1").unwrap(),
            timeout: Duration::from_secs(600),
            min_bytes: 512,
        }
    }

    fn output(s: &Sections, result: &str, summary: &str, dump: &str, restic: &str) -> String {
        output_with_leftover(s, result, summary, "", dump, restic)
    }

    fn output_with_leftover(
        s: &Sections,
        result: &str,
        summary: &str,
        leftover: &str,
        dump: &str,
        restic: &str,
    ) -> String {
        format!(
            "{m} result\n{result}\n\n{m} summary\n{summary}\n\n{m} leftover\n{leftover}\n\n{m} dump-stderr\n{dump}\n{m} restic-stderr\n{restic}",
            m = s.marker()
        )
    }

    const SUMMARY: &str = r#"{"message_type":"summary","data_added":1289836,"total_files_processed":1,"total_bytes_processed":1288895,"total_duration":0.5,"snapshot_id":"e05c84ae"}"#;

    #[test]
    fn the_script_streams_through_a_fifo_held_open_until_the_dump_succeeded() {
        let repo = Repository::new("/srv/b", HostFiles::for_app("shop"), HostKeys::Pinned).unwrap();
        let s = Sections::with_nonce(1);
        let script = pipeline().script(&repo, &s);
        assert!(script.starts_with("set -a; . /etc/vpsup/backup/shop/env; set +a\n"));
        assert!(script.contains("timeout --foreground -s INT -k 60 600 restic backup --stdin --stdin-filename shop+db+shop.pgdump --host web-1 --tag vpsup --tag app=shop --tag service=db --tag engine=postgres --tag run=r1 --json <\"$work/pipe\""));
        assert!(
            script.contains("timeout -k 10 600 sh -c 'pg_dump -Fc -Z0 '\\''shop'\\''' >&3 3>&-")
        );
        // SIGINT before the write end closes: restic must not see EOF first.
        let kill = script.find("kill -INT").unwrap();
        let close = script[kill..].find("exec 3>&-").unwrap();
        assert!(script[kill..kill + close].contains("wait \"$rpid\""));
        assert!(script.contains("-lt 512 ]"));
    }

    #[test]
    fn a_good_run_gives_the_snapshot() {
        let s = Sections::with_nonce(2);
        let snap = pipeline()
            .parse(&s, &output(&s, "ok 0", SUMMARY, "", ""))
            .unwrap();
        assert_eq!(
            snap,
            Snapshot {
                id: "e05c84ae".into(),
                bytes: 1288895,
                data_added: 1289836,
                duration: Duration::from_millis(500)
            }
        );
    }

    #[test]
    fn failures_say_which_side_failed() {
        let s = Sections::with_nonce(3);
        let p = pipeline();
        let cases = [
            (
                output(
                    &s,
                    "dump-failed 2 130",
                    "",
                    "pg_dump: error: connection refused",
                    "signal interrupt received, cleaning up",
                ),
                PipeError::DumpFailed {
                    exit: 2,
                    tail: "pg_dump: error: connection refused".into(),
                },
            ),
            (
                output(
                    &s,
                    "dump-failed 141 1",
                    "",
                    "",
                    "Fatal: wrong password or no key found",
                ),
                PipeError::ResticFailed {
                    exit: 1,
                    error: RepoError::WrongPassword {
                        detail: "Fatal: wrong password or no key found".into(),
                    },
                },
            ),
            (
                output(&s, "too-small 0", SUMMARY, "", ""),
                PipeError::TooSmall { bytes: 0, min: 512 },
            ),
            (
                output_with_leftover(
                    &s,
                    "too-small 5",
                    SUMMARY,
                    "e05c84ae",
                    "",
                    "Fatal: repository is already locked",
                ),
                PipeError::Leftover {
                    snapshot: "e05c84ae".into(),
                    cause: Box::new(PipeError::TooSmall { bytes: 5, min: 512 }),
                },
            ),
            (
                output(
                    &s,
                    "ok 3",
                    SUMMARY,
                    "",
                    "Fatal: at least one source file could not be read",
                ),
                PipeError::ResticFailed {
                    exit: 3,
                    error: RepoError::Other {
                        exit: Some(3),
                        detail: "Fatal: at least one source file could not be read".into(),
                    },
                },
            ),
        ];
        for (out, expected) in cases {
            assert_eq!(p.parse(&s, &out).unwrap_err(), expected);
        }
        assert!(matches!(
            p.parse(&s, "sh: 1: mkfifo: not found\n"),
            Err(PipeError::NoReport(_))
        ));
        assert_eq!(
            PipeError::DumpFailed {
                exit: 137,
                tail: "".into()
            }
            .to_string(),
            "the dump failed (killed (exit 137)); no snapshot was written"
        );
    }
}
