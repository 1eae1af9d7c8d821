//! The state of one path, shared by every module that manages files (file,
//! copy, template, line, authorized_key, sysctl...): one probe snippet, one
//! parser, one diff, one way to fix mode and owner.

use base64::Engine;

use crate::transport::script::quote;

/// Largest file whose content the probe prints for `--diff` (and for modules
/// that must read content, such as `line`).
pub const MAX_CONTENT: u64 = 512 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Absent,
    Present(PathInfo),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub kind: Kind,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    /// SHA-256 of a regular file's content.
    pub sha256: Option<String>,
    /// The content, when asked for and not larger than `MAX_CONTENT`.
    pub content: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
    Other,
}

/// Prints `absent`, or `KIND MODE OWNER GROUP [SHA256]` and, with
/// `with_content`, a second line `content BASE64` (or `content too-large`).
pub fn probe(path: &str, with_content: bool) -> String {
    let p = quote(path);
    let content = if with_content {
        format!(
            "\n  if [ \"$(stat -c %s {p})\" -le {MAX_CONTENT} ]; then printf 'content '; base64 -w0 < {p}; echo; else echo 'content too-large'; fi"
        )
    } else {
        String::new()
    };
    format!(
        "if [ -L {p} ]; then stat -c 'symlink %a %U %G' {p}
elif [ -d {p} ]; then stat -c 'directory %a %U %G' {p}
elif [ -f {p} ]; then printf '%s %s\\n' \"$(stat -c 'file %a %U %G' {p})\" \"$(sha256sum < {p} | cut -d' ' -f1)\"{content}
elif [ -e {p} ]; then stat -c 'other %a %U %G' {p}
else echo absent; fi"
    )
}

pub fn parse(output: &str) -> Result<FileState, String> {
    let mut lines = output.lines();
    let first = lines.next().unwrap_or("").trim();
    if first == "absent" {
        return Ok(FileState::Absent);
    }
    let fields: Vec<&str> = first.split_whitespace().collect();
    let bad = || format!("expected `KIND MODE OWNER GROUP [SHA256]`, got {first:?}");
    let (kind, mode, owner, group) = match fields.as_slice() {
        [kind, mode, owner, group, ..] => (*kind, *mode, *owner, *group),
        _ => return Err(bad()),
    };
    let kind = match kind {
        "file" => Kind::File,
        "directory" => Kind::Directory,
        "symlink" => Kind::Symlink,
        "other" => Kind::Other,
        _ => return Err(bad()),
    };
    let mode = u32::from_str_radix(mode, 8).map_err(|_| bad())?;
    let content = match lines.next().and_then(|l| l.strip_prefix("content ")) {
        Some("too-large") | None => None,
        Some(b64) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("content is not base64: {e}"))?,
        ),
    };
    Ok(FileState::Present(PathInfo {
        kind,
        mode,
        owner: owner.to_string(),
        group: group.to_string(),
        sha256: fields.get(4).map(|s| s.to_string()),
        content,
    }))
}

impl FileState {
    pub fn info(&self) -> Option<&PathInfo> {
        match self {
            FileState::Absent => None,
            FileState::Present(info) => Some(info),
        }
    }
}

/// The ownership and mode a module wants; `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

impl Attributes {
    /// `chown`/`chmod` commands (and a summary) for what differs on an existing path.
    pub fn fix(&self, path: &str, info: &PathInfo) -> Option<(String, String)> {
        let mut summary = Vec::new();
        let mut script = Vec::new();
        let p = quote(path);
        let owner_differs = self.owner.as_ref().is_some_and(|o| *o != info.owner);
        let group_differs = self.group.as_ref().is_some_and(|g| *g != info.group);
        if owner_differs || group_differs {
            let owner = self.owner.clone().unwrap_or_else(|| info.owner.clone());
            let group = self.group.clone().unwrap_or_else(|| info.group.clone());
            summary.push(format!(
                "owner {}:{} -> {owner}:{group}",
                info.owner, info.group
            ));
            script.push(format!(
                "chown -h -- {} {p}",
                quote(&format!("{owner}:{group}"))
            ));
        }
        if let Some(mode) = self.mode.filter(|m| *m != info.mode) {
            summary.push(format!("mode {:04o} -> {mode:04o}", info.mode));
            script.push(format!("chmod {mode:04o} {p}"));
        }
        (!script.is_empty()).then(|| (summary.join(", "), script.join("\n")))
    }

    /// The `owner[:group]` for `FileMeta` when writing a new file.
    pub fn chown_spec(&self) -> Option<String> {
        match (&self.owner, &self.group) {
            (Some(o), Some(g)) => Some(format!("{o}:{g}")),
            (Some(o), None) => Some(o.clone()),
            (None, Some(g)) => Some(format!(":{g}")),
            (None, None) => None,
        }
    }
}

/// A unified diff between the old content (if known) and the new one, for
/// `--diff`. Secret content shows only that it changed.
pub fn diff(path: &str, old: Option<&[u8]>, new: &[u8], secret: bool) -> Option<String> {
    if secret {
        return Some(format!(
            "--- {path}\n+++ {path}\n(secret content changed; not shown)\n"
        ));
    }
    let old_text = String::from_utf8_lossy(old.unwrap_or_default());
    let new_text = String::from_utf8_lossy(new);
    if old_text == new_text {
        return None;
    }
    let old_name = if old.is_some() {
        path.to_string()
    } else {
        "/dev/null".to_string()
    };
    Some(
        similar::TextDiff::from_lines(old_text.as_ref(), new_text.as_ref())
            .unified_diff()
            .context_radius(3)
            .header(&old_name, path)
            .to_string(),
    )
}

/// SHA-256 of `content` as lowercase hex, to compare with a probed file.
pub fn sha256_hex(content: &[u8]) -> String {
    use sha2::Digest;
    crate::transport::script::hex(&sha2::Sha256::digest(content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert_eq!(parse("absent\n"), Ok(FileState::Absent));
        let f = parse("file 644 root adm 2cf24dba\ncontent aGVsbG8=\n").unwrap();
        let info = f.info().unwrap();
        assert_eq!(
            (
                info.kind,
                info.mode,
                info.owner.as_str(),
                info.group.as_str()
            ),
            (Kind::File, 0o644, "root", "adm")
        );
        assert_eq!(info.sha256.as_deref(), Some("2cf24dba"));
        assert_eq!(info.content.as_deref(), Some(&b"hello"[..]));
        let d = parse("directory 2775 deploy deploy\n").unwrap();
        assert_eq!(d.info().unwrap().kind, Kind::Directory);
        assert_eq!(d.info().unwrap().mode, 0o2775);
        assert_eq!(
            parse("file 600 a b x\ncontent too-large\n")
                .unwrap()
                .info()
                .unwrap()
                .content,
            None
        );
        assert!(parse("").is_err());
        assert!(parse("socket 1 2 3").is_err());
    }

    #[test]
    fn probe_runs_against_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("it's here");
        std::fs::write(&file, "hello").unwrap();
        let run = |script: String| {
            let out = std::process::Command::new("sh")
                .args(["-c", &script])
                .output()
                .unwrap();
            parse(&String::from_utf8(out.stdout).unwrap()).unwrap()
        };
        let state = run(probe(file.to_str().unwrap(), true));
        let info = state.info().unwrap();
        assert_eq!(info.kind, Kind::File);
        assert_eq!(info.sha256.as_deref(), Some(sha256_hex(b"hello").as_str()));
        assert_eq!(info.content.as_deref(), Some(&b"hello"[..]));
        assert_eq!(
            run(probe(dir.path().to_str().unwrap(), false))
                .info()
                .unwrap()
                .kind,
            Kind::Directory
        );
        assert_eq!(run(probe("/nonexistent/x", true)), FileState::Absent);
    }

    #[test]
    fn attribute_fixes_only_what_differs() {
        let info = PathInfo {
            kind: Kind::File,
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
            sha256: None,
            content: None,
        };
        let want = Attributes {
            mode: Some(0o644),
            owner: Some("root".into()),
            group: None,
        };
        assert_eq!(want.fix("/x", &info), None);
        let want = Attributes {
            mode: Some(0o600),
            owner: None,
            group: Some("adm".into()),
        };
        let (summary, script) = want.fix("/x", &info).unwrap();
        assert_eq!(summary, "owner root:root -> root:adm, mode 0644 -> 0600");
        assert_eq!(script, "chown -h -- root:adm /x\nchmod 0600 /x");
    }

    #[test]
    fn diffs_are_unified_and_secrets_masked() {
        let d = diff("/etc/app.conf", Some(b"a\nb\n"), b"a\nc\n", false).unwrap();
        assert!(
            d.contains("--- /etc/app.conf") && d.contains("-b\n") && d.contains("+c\n"),
            "{d}"
        );
        assert!(diff("/x", None, b"new\n", false)
            .unwrap()
            .contains("--- /dev/null"));
        assert_eq!(diff("/x", Some(b"same"), b"same", false), None);
        let masked = diff("/x", Some(b"PASSWORD=old\n"), b"PASSWORD=new\n", true).unwrap();
        assert!(!masked.contains("old") && !masked.contains("new\n") && masked.contains("secret"));
    }
}
