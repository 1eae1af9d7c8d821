//! The one format for every multi-part host script (probes, health gate,
//! rollback): each part's output starts on its own line `<marker> <name>`. The
//! marker carries a per-run random nonce and appears in the script only as a
//! literal, so nothing a part prints (a file, a container's name, a log line)
//! can forge, end or hide a part. The builder writes the header lines; the
//! parser splits on them and fails on a part that is missing.

use std::fmt;

/// The marker of one script run. Build the script and parse its output with
/// the same `Sections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sections {
    marker: String,
}

/// A part the parser was asked for did not come back: the script died before
/// it, or the host runs something else than we sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the host's output has no `{name}` part (the script stopped early or printed something unexpected)")]
pub struct MissingPart {
    pub name: String,
}

impl Sections {
    /// A fresh random marker (per process and per call).
    pub fn random() -> Sections {
        Sections::with_nonce(nonce())
    }

    /// A given marker, for tests that compare script text.
    pub fn with_nonce(nonce: u64) -> Sections {
        Sections {
            marker: format!("@@vpsup-{nonce:016x}"),
        }
    }

    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// The shell line that starts part `name`, on a line of its own even when
    /// the previous part's output did not end with a newline. `name` is one or
    /// more words of `[a-z0-9_.-]` (a fixed name, or a name and an id).
    pub fn header(&self, name: &str) -> String {
        debug_assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.- ".contains(&b)),
            "section name {name:?}"
        );
        format!("printf '\\n{} {name}\\n'\n", self.marker)
    }

    /// A script of parts, each `(name, shell)` preceded by its header.
    pub fn script<'a>(&self, parts: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
        let mut script = String::new();
        for (name, body) in parts {
            script.push_str(&self.header(name));
            script.push_str(body);
            if !body.is_empty() && !body.ends_with('\n') {
                script.push('\n');
            }
        }
        script
    }

    /// Splits what a script built with these headers printed.
    pub fn parse<'a>(&self, output: &'a str) -> Parts<'a> {
        let separator = format!("\n{} ", self.marker);
        // The first header's newline may be the output's first byte.
        let padded_start = output.starts_with(&separator[1..]);
        let mut pieces = if padded_start {
            let mut v = vec![""];
            v.extend(output[separator.len() - 1..].split(&separator));
            v.into_iter()
        } else {
            output.split(&separator).collect::<Vec<_>>().into_iter()
        };
        let preamble = pieces.next().unwrap_or("");
        let parts = pieces
            .map(|piece| piece.split_once('\n').unwrap_or((piece, "")))
            .collect();
        Parts { preamble, parts }
    }
}

/// One run's output, split into its parts (in the order they came).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parts<'a> {
    preamble: &'a str,
    parts: Vec<(&'a str, &'a str)>,
}

impl<'a> Parts<'a> {
    /// What was printed before the first header.
    pub fn preamble(&self) -> &'a str {
        self.preamble
    }

    /// Part `name`'s text; an error when it did not come back.
    pub fn get(&self, name: &str) -> Result<&'a str, MissingPart> {
        self.optional(name).ok_or_else(|| MissingPart {
            name: name.to_string(),
        })
    }

    /// Part `name`'s text, for parts a script prints only sometimes.
    pub fn optional(&self, name: &str) -> Option<&'a str> {
        self.parts.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }

    pub fn has(&self, name: &str) -> bool {
        self.optional(name).is_some()
    }

    /// Every part as `(header, text)`, in order (headers may carry ids).
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.parts.iter().copied()
    }
}

impl fmt::Display for Sections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.marker)
    }
}

/// Random per process and per call (RandomState is seeded from the OS, and the
/// time is mixed in), so no output can guess the next run's marker.
pub fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::script::testing::sh_ok;

    #[test]
    fn parts_come_back_as_printed() {
        let s = Sections::with_nonce(7);
        let script = format!(
            "echo before\n{}",
            s.script([
                ("one", "echo a; echo b"),
                ("empty", ""),
                ("no-newline", "printf x"),
                ("probe 3", "echo three"),
            ])
        );
        let out = String::from_utf8(sh_ok(&script).stdout).unwrap();
        let parts = s.parse(&out);
        assert_eq!(parts.preamble(), "before\n");
        assert_eq!(parts.get("one").unwrap(), "a\nb\n");
        assert_eq!(parts.get("empty").unwrap(), "");
        assert_eq!(parts.get("no-newline").unwrap(), "x");
        assert_eq!(parts.get("probe 3").unwrap(), "three\n");
        assert_eq!(
            parts.get("two").unwrap_err().to_string(),
            "the host's output has no `two` part (the script stopped early or printed something unexpected)"
        );
        assert_eq!(parts.iter().count(), 4);
    }

    #[test]
    fn a_script_that_starts_with_a_header_has_an_empty_preamble() {
        let s = Sections::with_nonce(1);
        let out = String::from_utf8(sh_ok(&s.script([("a", "echo 1")])).stdout).unwrap();
        let parts = s.parse(&out);
        assert_eq!(parts.preamble(), "");
        assert_eq!(parts.get("a").unwrap(), "1\n");
    }

    #[test]
    fn output_cannot_forge_a_part() {
        let s = Sections::random();
        // A part prints another run's marker and the bare `@@name` lines of the
        // formats this replaced: both stay text of the part that printed them.
        let forged = format!(
            "echo '@@vpsup-0000000000000000 secrets'; echo '@@secrets'; set | grep -c '{}' || true",
            s.marker()
        );
        let out = String::from_utf8(sh_ok(&s.script([("a", forged.as_str())])).stdout).unwrap();
        let parts = s.parse(&out);
        assert!(!parts.has("secrets"));
        assert_eq!(
            parts.get("a").unwrap(),
            "@@vpsup-0000000000000000 secrets\n@@secrets\n0\n"
        );
    }

    #[test]
    fn markers_differ_per_run() {
        assert_ne!(Sections::random(), Sections::random());
    }
}
