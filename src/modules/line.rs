//! `line`: makes sure one line, or one block between marker lines, is in a file
//! (or is not), for config files vpsup edits without owning them, like
//! sshd_config. The new content is computed here, from the content the probe
//! read, and the whole file is written back atomically with its owner and mode.

use regex::bytes::Regex;
use serde::Deserialize;

use super::file_state::{self, Attributes, FileState, Kind, PathInfo};
use super::{Change, Module, ModuleError, Plan, PlanContext, ProbeOptions, Scope, Validate};
use crate::transport::{script, FileMeta};

const DEFAULT_MARKER: &str = "# {mark} VPSUP MANAGED BLOCK";
/// Mode of a file created without `mode`.
const DEFAULT_MODE: u32 = 0o644;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    path: String,
    /// The line to have (or, with `state: absent`, to remove).
    line: Option<String>,
    /// Present: the last matching line is replaced by `line`. Absent: every
    /// matching line is removed.
    regexp: Option<String>,
    #[serde(default)]
    state: LineState,
    /// Where a missing line or block goes: after the last line matching this
    /// (else at the end of the file).
    insert_after: Option<String>,
    #[serde(default)]
    create: bool,
    #[serde(default, deserialize_with = "super::de_mode")]
    mode: Option<u32>,
    owner: Option<String>,
    group: Option<String>,
    /// Lines to keep between the markers, instead of `line`.
    block: Option<String>,
    /// A template (`NAME.tera`) that renders the block, instead of `block`.
    block_src: Option<String>,
    /// The marker lines around `block`; `{mark}` becomes BEGIN and END.
    marker: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LineState {
    #[default]
    Present,
    Absent,
}

impl Validate for Line {
    fn validate(&self) -> Result<(), String> {
        if !self.path.starts_with('/') {
            return Err(format!("path {:?} must be absolute", self.path));
        }
        let regexp = compile("regexp", self.regexp.as_deref())?;
        compile("insert_after", self.insert_after.as_deref())?;
        if self.block.is_some() && self.block_src.is_some() {
            return Err("give either `block` or `block_src`, not both".to_string());
        }
        if self.block.is_some() || self.block_src.is_some() {
            if self.line.is_some() {
                return Err("give either `line` or `block`, not both".to_string());
            }
            if regexp.is_some() {
                return Err(
                    "`regexp` goes with `line`; a block is found by its markers".to_string()
                );
            }
            let marker = self.marker();
            if !marker.contains("{mark}") || marker.contains('\n') {
                return Err(format!(
                    "marker {marker:?} must be one line containing {{mark}}"
                ));
            }
            return Ok(());
        }
        if self.marker.is_some() {
            return Err("`marker` goes with `block`".to_string());
        }
        match (&self.line, &regexp, self.state) {
            (Some(line), _, _) if line.contains('\n') => {
                Err("`line` must be a single line; use `block` for several".to_string())
            }
            (Some(line), Some(regexp), LineState::Present) if !regexp.is_match(line.as_bytes()) => {
                // Otherwise every run would find another line to replace.
                Err(format!(
                    "`line` {line:?} must match `regexp` {:?}",
                    regexp.as_str()
                ))
            }
            (None, _, LineState::Present) => Err("give `line` (or `block`)".to_string()),
            (None, None, LineState::Absent) => {
                Err("give `line` or `regexp` to say what to remove (or `block`)".to_string())
            }
            _ => Ok(()),
        }
    }
}

fn compile(field: &str, pattern: Option<&str>) -> Result<Option<Regex>, String> {
    pattern
        .map(|p| Regex::new(p).map_err(|e| format!("{field}: {e}")))
        .transpose()
}

/// A file's content as lines without their `\n`, and whether the last line
/// had one (kept as found; a new or empty file gets one).
struct Text {
    lines: Vec<Vec<u8>>,
    trailing_newline: bool,
}

impl Text {
    fn parse(content: &[u8]) -> Text {
        let trailing_newline = content.is_empty() || content.ends_with(b"\n");
        let body = content.strip_suffix(b"\n").unwrap_or(content);
        let lines = if content.is_empty() {
            Vec::new()
        } else {
            body.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect()
        };
        Text {
            lines,
            trailing_newline,
        }
    }

    fn render(&self) -> Vec<u8> {
        let mut content = self.lines.join(&b'\n');
        if self.trailing_newline && !self.lines.is_empty() {
            content.push(b'\n');
        }
        content
    }

    /// Just after the last line matching `after`, else the end.
    fn insertion_point(&self, after: Option<&Regex>) -> usize {
        after
            .and_then(|re| self.lines.iter().rposition(|l| re.is_match(l)))
            .map_or(self.lines.len(), |i| i + 1)
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

impl Line {
    fn marker(&self) -> &str {
        self.marker.as_deref().unwrap_or(DEFAULT_MARKER)
    }

    fn regex(&self, field: &str, pattern: Option<&str>) -> Result<Option<Regex>, ModuleError> {
        compile(field, pattern).map_err(ModuleError::Args)
    }

    /// The edited content and what was done, or `None` when `old` is already right.
    fn edit(&self, old: &[u8]) -> Result<Option<(Vec<u8>, String)>, ModuleError> {
        let mut text = Text::parse(old);
        let done = match (&self.block, self.state) {
            (Some(block), LineState::Present) => self.put_block(&mut text, block)?,
            (Some(_), LineState::Absent) => self.remove_block(&mut text)?,
            (None, LineState::Present) => self.put_line(&mut text)?,
            (None, LineState::Absent) => self.remove_lines(&mut text)?,
        };
        Ok(done.map(|summary| (text.render(), summary)))
    }

    fn put_line(&self, text: &mut Text) -> Result<Option<String>, ModuleError> {
        let line = self.line.as_deref().unwrap_or_default().as_bytes();
        if let Some(regexp) = self.regex("regexp", self.regexp.as_deref())? {
            if let Some(last) = text.lines.iter().rposition(|l| regexp.is_match(l)) {
                if text.lines[last] == line {
                    return Ok(None);
                }
                text.lines[last] = line.to_vec();
                return Ok(Some(format!("replace line {}", last + 1)));
            }
        }
        if text.lines.iter().any(|l| l == line) {
            return Ok(None);
        }
        let after = self.regex("insert_after", self.insert_after.as_deref())?;
        let at = text.insertion_point(after.as_ref());
        let summary = if at == text.lines.len() {
            "append line".to_string()
        } else {
            format!("insert line {}", at + 1)
        };
        text.lines.insert(at, line.to_vec());
        Ok(Some(summary))
    }

    fn remove_lines(&self, text: &mut Text) -> Result<Option<String>, ModuleError> {
        let before = text.lines.len();
        match self.regex("regexp", self.regexp.as_deref())? {
            Some(regexp) => text.lines.retain(|l| !regexp.is_match(l)),
            None => {
                let line = self.line.as_deref().unwrap_or_default().as_bytes();
                text.lines.retain(|l| l != line);
            }
        }
        let removed = before - text.lines.len();
        Ok((removed > 0).then(|| format!("remove {}", plural(removed, "line"))))
    }

    fn markers(&self) -> (Vec<u8>, Vec<u8>) {
        let marker = self.marker();
        (
            marker.replace("{mark}", "BEGIN").into_bytes(),
            marker.replace("{mark}", "END").into_bytes(),
        )
    }

    /// The lines from the BEGIN marker to the END marker, inclusive.
    fn find_block(
        &self,
        text: &Text,
    ) -> Result<Option<std::ops::RangeInclusive<usize>>, ModuleError> {
        let (begin, end) = self.markers();
        let Some(start) = text.lines.iter().position(|l| *l == begin) else {
            return Ok(None);
        };
        match text.lines[start..].iter().position(|l| *l == end) {
            Some(offset) => Ok(Some(start..=start + offset)),
            None => Err(ModuleError::Plan(format!(
                "{}: line {} opens the block ({:?}) but no {:?} line closes it; fix the file by hand",
                self.path,
                start + 1,
                String::from_utf8_lossy(&begin),
                String::from_utf8_lossy(&end),
            ))),
        }
    }

    fn put_block(&self, text: &mut Text, block: &str) -> Result<Option<String>, ModuleError> {
        let (begin, end) = self.markers();
        let body = block.strip_suffix('\n').unwrap_or(block);
        let mut wanted = vec![begin];
        if !body.is_empty() {
            wanted.extend(body.split('\n').map(|l| l.as_bytes().to_vec()));
        }
        wanted.push(end);
        match self.find_block(text)? {
            Some(range) if text.lines[range.clone()] == wanted[..] => Ok(None),
            Some(range) => {
                text.lines.splice(range, wanted);
                Ok(Some("update block".to_string()))
            }
            None => {
                let after = self.regex("insert_after", self.insert_after.as_deref())?;
                let at = text.insertion_point(after.as_ref());
                text.lines.splice(at..at, wanted);
                Ok(Some("insert block".to_string()))
            }
        }
    }

    fn remove_block(&self, text: &mut Text) -> Result<Option<String>, ModuleError> {
        Ok(self.find_block(text)?.map(|range| {
            text.lines.drain(range);
            "remove block".to_string()
        }))
    }

    fn attributes(&self) -> Attributes {
        Attributes {
            mode: self.mode,
            owner: self.owner.clone(),
            group: self.group.clone(),
        }
    }

    fn create(&self) -> Result<Plan, ModuleError> {
        if !self.create {
            return Err(ModuleError::Plan(format!(
                "{} does not exist; set `create: true` to create it",
                self.path
            )));
        }
        let content = self
            .edit(b"")?
            .map(|(content, _)| content)
            .unwrap_or_default();
        let mut meta = FileMeta::mode(self.mode.unwrap_or(DEFAULT_MODE));
        if let Some(owner) = self.attributes().chown_spec() {
            meta = meta.owner(owner);
        }
        let change = Change::new("create", script::write_file(&self.path, &content, &meta))
            .with_diff(file_state::diff(&self.path, None, &content, false));
        Ok(Plan::change(change))
    }

    fn update(&self, info: &PathInfo, old: &[u8]) -> Result<Plan, ModuleError> {
        let fix = self.attributes().fix(&self.path, info);
        let Some((content, summary)) = self.edit(old)? else {
            return Ok(fix.map_or_else(Plan::ok, |(summary, script)| {
                Plan::change(Change::new(summary, script))
            }));
        };
        // The rewrite keeps the file's owner and mode unless others are asked for.
        let owner = self.owner.as_ref().unwrap_or(&info.owner);
        let group = self.group.as_ref().unwrap_or(&info.group);
        let meta = FileMeta::mode(self.mode.unwrap_or(info.mode)).owner(format!("{owner}:{group}"));
        let summary = match fix {
            Some((attributes, _)) => format!("{summary}, {attributes}"),
            None => summary,
        };
        let change = Change::new(summary, script::write_file(&self.path, &content, &meta))
            .with_diff(file_state::diff(&self.path, Some(old), &content, false));
        Ok(Plan::change(change))
    }
}

impl Module for Line {
    /// `file_state::probe` with the content, always: the edit needs it.
    fn probe(&self, _opts: &ProbeOptions) -> String {
        file_state::probe(&self.path, true)
    }

    fn plan(&self, probed: &str, ctx: &PlanContext) -> Result<Plan, ModuleError> {
        if let Some(src) = &self.block_src {
            let rendered = Line {
                block: Some((ctx.render)(src).map_err(ModuleError::Plan)?),
                block_src: None,
                ..self.clone()
            };
            return rendered.plan(probed, ctx);
        }
        let info = match file_state::parse(probed).map_err(ModuleError::Probe)? {
            FileState::Absent if self.state == LineState::Absent => return Ok(Plan::ok()),
            FileState::Absent => return self.create(),
            FileState::Present(info) => info,
        };
        let not_a_file = |what: &str| {
            Err(ModuleError::Plan(format!(
                "{} is {what}, not a regular file",
                self.path
            )))
        };
        match info.kind {
            Kind::File => {}
            Kind::Directory => return not_a_file("a directory"),
            // Writing a new file over it would replace the link, not its target.
            Kind::Symlink => return not_a_file("a symlink (point `path` at its target)"),
            Kind::Other => return not_a_file("a special file"),
        }
        match &info.content {
            Some(old) => self.update(&info, old),
            None if probed.contains("\ncontent too-large") => Err(ModuleError::Plan(format!(
                "{} is larger than {} KiB, too large for `line` to edit",
                self.path,
                file_state::MAX_CONTENT / 1024
            ))),
            None => Err(ModuleError::Probe(format!(
                "no content for {} in {probed:?}",
                self.path
            ))),
        }
    }

    fn scope(&self) -> Scope {
        Scope::path(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;
    use crate::modules::testing;

    const SSHD: &str = "Include /etc/ssh/sshd_config.d/*.conf\n#PermitRootLogin prohibit-password\nPasswordAuthentication yes\n";

    fn build(yaml: &str) -> Box<dyn Module> {
        testing::build_from_yaml("line", yaml).unwrap()
    }

    /// What the probe prints for a regular file with this content.
    fn probed(content: &str, mode: &str, owner: &str) -> String {
        format!(
            "file {mode} {owner} {owner} {}\ncontent {}\n",
            file_state::sha256_hex(content.as_bytes()),
            base64::engine::general_purpose::STANDARD.encode(content)
        )
    }

    /// Plans against `before`, checks the rewrite and that planning on its
    /// result is ok; returns the summary and the new content.
    fn edit(yaml: &str, before: &str) -> (String, String) {
        let module = build(yaml);
        let plan = testing::plan(&*module, &probed(before, "644", "root")).unwrap();
        assert_eq!(plan.changes.len(), 1, "{plan:?}");
        let change = &plan.changes[0];
        let after = written_content(&change.script);
        assert_eq!(
            change.diff,
            file_state::diff(
                "/etc/ssh/sshd_config",
                Some(before.as_bytes()),
                after.as_bytes(),
                false
            )
        );
        assert!(
            testing::plan(&*module, &probed(&after, "644", "root"))
                .unwrap()
                .is_ok(),
            "not idempotent: {after:?}"
        );
        (change.summary.clone(), after)
    }

    /// The content a `script::write_file` script carries.
    fn written_content(script: &str) -> String {
        let start =
            script.find("<<'VPSUP_CONTENT_EOF'\n").unwrap() + "<<'VPSUP_CONTENT_EOF'\n".len();
        let end = script.find("VPSUP_CONTENT_EOF\n").unwrap();
        let b64: String = script[start..end].split_whitespace().collect();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    }

    fn is_ok(yaml: &str, content: &str) -> bool {
        testing::plan(&*build(yaml), &probed(content, "644", "root"))
            .unwrap()
            .is_ok()
    }

    const ROOT_LOGIN: &str =
        "path: /etc/ssh/sshd_config\nline: PermitRootLogin no\nregexp: '^#?PermitRootLogin\\s'\n";

    #[test]
    fn regexp_replaces_the_last_matching_line() {
        let (summary, after) = edit(ROOT_LOGIN, SSHD);
        assert_eq!(summary, "replace line 2");
        assert_eq!(
            after,
            SSHD.replace("#PermitRootLogin prohibit-password", "PermitRootLogin no")
        );
        let two = "PermitRootLogin yes\nX 1\nPermitRootLogin yes\n";
        assert_eq!(
            edit(ROOT_LOGIN, two).1,
            "PermitRootLogin yes\nX 1\nPermitRootLogin no\n"
        );
        assert!(is_ok(
            ROOT_LOGIN,
            "PermitRootLogin yes\nPermitRootLogin no\n"
        ));
    }

    #[test]
    fn a_missing_line_is_appended_or_inserted_after_a_match_and_never_duplicated() {
        let (summary, after) = edit(ROOT_LOGIN, "Port 22\n");
        assert_eq!(
            (summary.as_str(), after.as_str()),
            ("append line", "Port 22\nPermitRootLogin no\n")
        );
        let yaml = format!("{ROOT_LOGIN}insert_after: '^Include '\n");
        let (summary, after) = edit(&yaml, "Include a\nInclude b\nPort 22\n");
        assert_eq!(summary, "insert line 3");
        assert_eq!(after, "Include a\nInclude b\nPermitRootLogin no\nPort 22\n");
        // No match for insert_after: the end.
        assert_eq!(edit(&yaml, "Port 22\n").1, "Port 22\nPermitRootLogin no\n");
        let plain = "path: /etc/ssh/sshd_config\nline: 'X11Forwarding no'\n";
        assert!(is_ok(plain, "a\nX11Forwarding no\nb\n"));
        assert_eq!(edit(plain, "a\n").1, "a\nX11Forwarding no\n");
    }

    #[test]
    fn the_trailing_newline_convention_is_kept() {
        let plain = "path: /etc/ssh/sshd_config\nline: c\n";
        assert_eq!(edit(plain, "a\nb").1, "a\nb\nc");
        assert_eq!(edit(plain, "a\nb\n").1, "a\nb\nc\n");
        assert_eq!(edit(plain, "").1, "c\n");
        assert_eq!(edit(plain, "\n").1, "\nc\n");
        let absent = "path: /etc/ssh/sshd_config\nline: c\nstate: absent\n";
        assert_eq!(edit(absent, "a\nc").1, "a");
        assert_eq!(edit(absent, "c\n").1, "");
    }

    #[test]
    fn absent_removes_every_match_or_every_copy() {
        let yaml = "path: /etc/ssh/sshd_config\nregexp: '^PasswordAuthentication'\nstate: absent\n";
        let (summary, after) = edit(
            yaml,
            "PasswordAuthentication yes\nPort 22\nPasswordAuthentication no\n",
        );
        assert_eq!(
            (summary.as_str(), after.as_str()),
            ("remove 2 lines", "Port 22\n")
        );
        let yaml = "path: /etc/ssh/sshd_config\nline: Port 22\nstate: absent\n";
        let (summary, after) = edit(yaml, "Port 22\nPort 2222\n");
        assert_eq!(
            (summary.as_str(), after.as_str()),
            ("remove 1 line", "Port 2222\n")
        );
        assert!(is_ok(yaml, "Port 2222\n"));
        // Nothing to remove from a file that is not there.
        assert!(testing::plan(&*build(yaml), "absent\n").unwrap().is_ok());
    }

    const BLOCK: &str =
        "path: /etc/ssh/sshd_config\nblock: |\n  Match User deploy\n    X11Forwarding no\n";

    #[test]
    fn blocks_are_inserted_updated_and_removed_between_markers() {
        let (summary, after) = edit(BLOCK, SSHD);
        assert_eq!(summary, "insert block");
        let block = "# BEGIN VPSUP MANAGED BLOCK\nMatch User deploy\n  X11Forwarding no\n# END VPSUP MANAGED BLOCK\n";
        assert_eq!(after, format!("{SSHD}{block}"));

        let old = format!("a\n{}z\n", block.replace("deploy", "ops"));
        let (summary, after) = edit(BLOCK, &old);
        assert_eq!(
            (summary.as_str(), after),
            ("update block", format!("a\n{block}z\n"))
        );

        let yaml = format!("{BLOCK}insert_after: '^Include'\n");
        let (_, after) = edit(&yaml, SSHD);
        assert!(
            after.starts_with(&format!(
                "Include /etc/ssh/sshd_config.d/*.conf\n{block}#PermitRootLogin"
            )),
            "{after}"
        );

        let absent = "path: /etc/ssh/sshd_config\nblock: ''\nstate: absent\n";
        let (summary, after) = edit(absent, &format!("a\n{block}z\n"));
        assert_eq!(
            (summary.as_str(), after.as_str()),
            ("remove block", "a\nz\n")
        );
        assert!(is_ok(absent, "a\nz\n"));
    }

    #[test]
    fn custom_markers_and_a_broken_block() {
        let yaml = "path: /etc/hosts\nblock: 10.0.0.2 db\nmarker: '## {mark} db hosts'\n";
        let module = build(yaml);
        let plan =
            testing::plan(&*module, &probed("127.0.0.1 localhost\n", "644", "root")).unwrap();
        assert_eq!(
            written_content(&plan.changes[0].script),
            "127.0.0.1 localhost\n## BEGIN db hosts\n10.0.0.2 db\n## END db hosts\n"
        );
        let err = testing::plan(
            &*module,
            &probed("## BEGIN db hosts\n10.0.0.2 db\n", "644", "root"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("/etc/hosts: line 1 opens the block"),
            "{err}"
        );
    }

    #[test]
    fn a_rewrite_keeps_owner_and_mode_unless_told_otherwise() {
        let module = build(ROOT_LOGIN);
        let plan = testing::plan(&*module, &probed(SSHD, "600", "sshd")).unwrap();
        let script = &plan.changes[0].script;
        assert!(
            script.contains("chown -- sshd:sshd \"$tmp\"\nchmod 0600 \"$tmp\""),
            "{script}"
        );

        let yaml = format!("{ROOT_LOGIN}mode: '0640'\ngroup: adm\n");
        let module = build(&yaml);
        let plan = testing::plan(&*module, &probed(SSHD, "600", "root")).unwrap();
        let change = &plan.changes[0];
        assert_eq!(
            change.summary,
            "replace line 2, owner root:root -> root:adm, mode 0600 -> 0640"
        );
        assert!(change
            .script
            .contains("chown -- root:adm \"$tmp\"\nchmod 0640 \"$tmp\""));
        // Content right, attributes wrong: just chown/chmod.
        let done = SSHD.replace("#PermitRootLogin prohibit-password", "PermitRootLogin no");
        let plan = testing::plan(&*module, &probed(&done, "600", "root")).unwrap();
        assert_eq!(
            plan.changes[0].summary,
            "owner root:root -> root:adm, mode 0600 -> 0640"
        );
        assert_eq!(
            plan.changes[0].script,
            "chown -h -- root:adm /etc/ssh/sshd_config\nchmod 0640 /etc/ssh/sshd_config"
        );
        assert_eq!(plan.changes[0].diff, None);
    }

    #[test]
    fn a_missing_file_is_created_only_when_asked() {
        let err = testing::plan(&*build(ROOT_LOGIN), "absent\n").unwrap_err();
        assert_eq!(
            err,
            ModuleError::Plan(
                "/etc/ssh/sshd_config does not exist; set `create: true` to create it".into()
            )
        );
        let yaml = "path: /etc/app.conf\nline: a=1\ncreate: true\nmode: '0600'\nowner: app\n";
        let plan = testing::plan(&*build(yaml), "absent\n").unwrap();
        let change = &plan.changes[0];
        assert_eq!(change.summary, "create");
        assert_eq!(written_content(&change.script), "a=1\n");
        assert!(change
            .script
            .contains("chown -- app \"$tmp\"\nchmod 0600 \"$tmp\""));
        assert!(change.diff.as_deref().unwrap().contains("--- /dev/null"));
        let plan = testing::plan(
            &*build("path: /etc/new\nline: x\ncreate: true\n"),
            "absent\n",
        )
        .unwrap();
        assert!(plan.changes[0].script.contains("chmod 0644 \"$tmp\""));
    }

    #[test]
    fn only_regular_files_of_readable_size_are_edited() {
        let module = build(ROOT_LOGIN);
        let err = |probed: &str| testing::plan(&*module, probed).unwrap_err().to_string();
        assert!(err("symlink 777 root root\n").contains("is a symlink"));
        assert!(err("directory 755 root root\n").contains("is a directory"));
        assert!(err("other 600 root root\n").contains("special file"));
        assert!(err("file 644 root root abc\ncontent too-large\n").contains("larger than 512 KiB"));
        assert!(matches!(
            testing::plan(&*module, "file 644 root root abc\n"),
            Err(ModuleError::Probe(_))
        ));
        assert!(matches!(
            testing::plan(&*module, "garbage\n"),
            Err(ModuleError::Probe(_))
        ));
        assert!(matches!(
            testing::plan(&*module, "file 644 root root abc\ncontent !!!\n"),
            Err(ModuleError::Probe(_))
        ));
    }

    #[test]
    fn a_block_can_come_from_a_template() {
        let module = testing::build_from_yaml(
            "line",
            "path: /etc/ufw/after.rules\nblock_src: rules.tera\n",
        )
        .unwrap();
        let facts = testing::facts();
        let render = |name: &str| match name {
            "rules.tera" => Ok("*filter\nCOMMIT\n".to_string()),
            other => Err(format!("no template {other}")),
        };
        let ctx = PlanContext {
            facts: &facts,
            sections: &crate::modules::testing::sections(),
            render: &render,
        };
        let old = base64::engine::general_purpose::STANDARD.encode("x\n");
        let plan = module
            .plan(&format!("file 644 root root 2\ncontent {old}\n"), &ctx)
            .unwrap();
        assert_eq!(plan.changes[0].summary, "insert block");
        assert!(
            testing::build_from_yaml("line", "path: /x\nblock: a\nblock_src: b\n")
                .unwrap_err()
                .to_string()
                .contains("either `block` or `block_src`")
        );
    }

    #[test]
    fn arguments_are_validated() {
        let cases = [
            ("path: etc/x\nline: a\n", "must be absolute"),
            ("path: /x\nline: a\nblock: b\n", "either `line` or `block`"),
            ("path: /x\n", "give `line`"),
            ("path: /x\nstate: absent\n", "give `line` or `regexp`"),
            ("path: /x\nline: \"a\\nb\"\n", "single line"),
            (
                "path: /x\nline: a\nregexp: '('\n",
                "regexp: regex parse error",
            ),
            (
                "path: /x\nline: a\ninsert_after: '['\n",
                "insert_after: regex parse error",
            ),
            (
                "path: /x\nline: PermitRootLogin no\nregexp: '^Port'\n",
                "must match `regexp`",
            ),
            ("path: /x\nblock: b\nregexp: a\n", "found by its markers"),
            (
                "path: /x\nblock: b\nmarker: '# managed'\n",
                "containing {mark}",
            ),
            (
                "path: /x\nline: a\nmarker: '# {mark}'\n",
                "`marker` goes with `block`",
            ),
            ("path: /x\nline: a\nmode: '0999'\n", "invalid mode"),
            ("path: /x\nline: a\nstate: gone\n", "unknown variant `gone`"),
            (
                "path: /x\nline: a\nbackup: true\n",
                "unknown field `backup`",
            ),
        ];
        for (yaml, expected) in cases {
            let err = testing::build_from_yaml("line", yaml)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{yaml}: {err}");
        }
        // Removing by regexp alone needs no `line`; a line that does not match is fine.
        assert!(
            testing::build_from_yaml("line", "path: /x\nregexp: '^a'\nstate: absent\n").is_ok()
        );
        assert!(testing::build_from_yaml(
            "line",
            "path: /x\nline: b\nregexp: '^a'\nstate: absent\n"
        )
        .is_ok());
    }

    #[test]
    fn scope_is_the_path() {
        assert_eq!(
            build(ROOT_LOGIN).scope(),
            Scope::path("/etc/ssh/sshd_config")
        );
    }

    /// The real probe and the real write script, in a temp dir.
    #[test]
    fn edits_a_real_file_and_then_finds_it_ok() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sshd config");
        std::fs::write(&path, SSHD).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let yaml = format!(
            "path: '{}'\nline: PermitRootLogin no\nregexp: '^#?PermitRootLogin\\s'\n",
            path.display()
        );
        let module = build(&yaml);
        let sh = testing::run_change;
        let probe = module.probe(&crate::modules::testing::probe_options());
        let plan = testing::plan(&*module, &sh(&probe)).unwrap();
        sh(&plan.changes[0].script);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            SSHD.replace("#PermitRootLogin prohibit-password", "PermitRootLogin no")
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o7777, 0o600);
        assert!(testing::plan(&*module, &sh(&probe)).unwrap().is_ok());
    }
}
