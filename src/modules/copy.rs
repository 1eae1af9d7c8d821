//! `copy` and `template`: a whole file with given content (`copy: content`) or
//! content rendered from `templates/NAME.tera` (`template: src`), mode, owner.
//! One module behind two names, so both behave exactly alike.

use serde::Deserialize;

use super::file_state::{self, Attributes, FileState, Kind};
use super::{de_mode, Change, Module, ModuleError, Plan, PlanContext, ProbeOptions, Scope};
use crate::transport::script;
use crate::transport::FileMeta;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedFile {
    pub dest: String,
    /// `copy`: the content itself.
    pub content: Option<String>,
    /// `template`: the template that renders the content.
    pub src: Option<String>,
    #[serde(default, deserialize_with = "de_mode")]
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// Never show the content in diffs.
    #[serde(default)]
    pub secret: bool,
    /// A command that checks the whole configuration with the new file in
    /// place (`sshd -t`, `nginx -t`); when it fails, the previous file is put
    /// back and the task fails, so a bad config is never left to be loaded.
    pub check: Option<String>,
}

/// Which of the two names built it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Content,
    Template,
}

impl ManagedFile {
    pub fn build(args: serde_json::Value, source: Source) -> Result<Box<dyn Module>, ModuleError> {
        let file: ManagedFile =
            serde_json::from_value(args).map_err(|e| ModuleError::Args(e.to_string()))?;
        validate_dest(&file.dest).map_err(ModuleError::Args)?;
        let wrong = match (source, &file.content, &file.src) {
            (Source::Content, Some(_), None) | (Source::Template, None, Some(_)) => None,
            (Source::Content, _, Some(_)) => {
                Some("copy takes `content`; for a template use the template module")
            }
            (Source::Content, None, None) => Some("copy needs `content`"),
            (Source::Template, Some(_), _) => {
                Some("template takes `src`; for literal content use the copy module")
            }
            (Source::Template, None, None) => Some("template needs `src` (a template name)"),
        };
        match wrong {
            Some(why) => Err(ModuleError::Args(why.to_string())),
            None => Ok(Box::new(file)),
        }
    }
}

impl Module for ManagedFile {
    fn probe(&self, opts: &ProbeOptions) -> String {
        probe_dest(&self.dest, opts)
    }

    fn plan(&self, probed: &str, ctx: &PlanContext) -> Result<Plan, ModuleError> {
        let content = match (&self.content, &self.src) {
            (Some(content), _) => content.clone(),
            (None, Some(src)) => (ctx.render)(src).map_err(ModuleError::Plan)?,
            (None, None) => return Err(ModuleError::Args("no content".to_string())),
        };
        let wanted = DesiredFile {
            dest: &self.dest,
            content: content.as_bytes(),
            attributes: Attributes {
                mode: self.mode,
                owner: self.owner.clone(),
                group: self.group.clone(),
            },
            secret: self.secret,
            check: self.check.as_deref(),
        };
        wanted.plan(probed)
    }

    fn scope(&self) -> Scope {
        Scope::path(&self.dest)
    }
}

/// The file's state, or `parent-missing` when its directory does not exist
/// (so the plan can say so, instead of `mktemp` failing in the change).
pub fn probe_dest(dest: &str, opts: &ProbeOptions) -> String {
    let parent = std::path::Path::new(dest)
        .parent()
        .map_or("/".to_string(), |p| p.display().to_string());
    format!(
        "if [ -d {} ]; then\n{}\nelse echo {PARENT_MISSING}; fi",
        crate::transport::script::quote(&parent),
        file_state::probe(dest, opts.with_content)
    )
}

const PARENT_MISSING: &str = "parent-missing";

pub fn validate_dest(dest: &str) -> Result<(), String> {
    if dest.starts_with('/') && !dest.ends_with('/') {
        Ok(())
    } else {
        Err(format!("dest {dest:?} must be an absolute file path"))
    }
}

/// A whole file as it should be.
pub struct DesiredFile<'a> {
    pub dest: &'a str,
    pub content: &'a [u8],
    pub attributes: Attributes,
    pub secret: bool,
    pub check: Option<&'a str>,
}

/// Mode of a file created without an explicit one.
const DEFAULT_MODE: u32 = 0o644;

impl DesiredFile<'_> {
    pub fn plan(&self, probed: &str) -> Result<Plan, ModuleError> {
        if probed.trim() == PARENT_MISSING {
            let parent = std::path::Path::new(self.dest)
                .parent()
                .unwrap_or(std::path::Path::new("/"));
            return Err(ModuleError::Plan(format!(
                "directory {} does not exist: create it first (file module, state: directory)",
                parent.display()
            )));
        }
        let state = file_state::parse(probed).map_err(ModuleError::Probe)?;
        let info = match &state {
            FileState::Absent => {
                let diff = file_state::diff(self.dest, None, self.content, self.secret);
                return Ok(Plan::change(self.write("create", diff)));
            }
            FileState::Present(info) => info,
        };
        if info.kind != Kind::File {
            return Err(ModuleError::Plan(format!(
                "{} exists and is a {:?}, not a regular file; remove it first",
                self.dest, info.kind
            )));
        }
        if info.sha256.as_deref() != Some(&file_state::sha256_hex(self.content)) {
            // Keep the existing mode/owner unless the task sets them.
            let mut kept = self.attributes.clone();
            kept.mode = kept.mode.or(Some(info.mode));
            kept.owner = kept.owner.or(Some(info.owner.clone()));
            kept.group = kept.group.or(Some(info.group.clone()));
            // The old content is known only when probed for --diff.
            let diff = info
                .content
                .as_deref()
                .and_then(|old| file_state::diff(self.dest, Some(old), self.content, self.secret));
            return Ok(Plan::change(
                DesiredFile {
                    attributes: kept,
                    ..*self
                }
                .write("update content", diff),
            ));
        }
        Ok(match self.attributes.fix(self.dest, info) {
            Some((summary, script)) => Plan::change(Change::new(summary, script)),
            None => Plan::ok(),
        })
    }

    fn write(&self, summary: &str, diff: Option<String>) -> Change {
        let meta = FileMeta {
            mode: self.attributes.mode.unwrap_or(DEFAULT_MODE),
            owner: self.attributes.chown_spec(),
        };
        let write = script::write_file(self.dest, self.content, &meta);
        let script = match self.check {
            Some(check) => script::checked_replace(self.dest, &write, check),
            None => write,
        };
        Change::new(summary, script).with_diff(diff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{build_from_yaml, facts, plan};

    fn module(extra: &str) -> Box<dyn Module> {
        build_from_yaml(
            "copy",
            &format!("dest: /etc/app.conf\ncontent: \"hello\\n\"\n{extra}"),
        )
        .unwrap()
    }

    const HELLO_SHA: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

    #[test]
    fn creates_a_missing_file_with_the_default_mode() {
        let p = plan(&*module(""), "absent\n").unwrap();
        let c = &p.changes[0];
        assert_eq!(c.summary, "create");
        assert!(
            c.script.contains("dest=/etc/app.conf") && c.script.contains("chmod 0644"),
            "{}",
            c.script
        );
        assert!(c.diff.as_deref().unwrap().contains("+hello"));
    }

    #[test]
    fn same_content_and_attributes_is_ok() {
        let probed = format!("file 644 root root {HELLO_SHA}\n");
        assert!(plan(&*module("mode: \"0644\"\nowner: root\n"), &probed)
            .unwrap()
            .is_ok());
    }

    #[test]
    fn only_attributes_differ() {
        let probed = format!("file 664 root root {HELLO_SHA}\n");
        let p = plan(&*module("mode: \"0640\"\ngroup: adm\n"), &probed).unwrap();
        assert_eq!(
            p.changes[0].summary,
            "owner root:root -> root:adm, mode 0664 -> 0640"
        );
        assert!(!p.changes[0].script.contains("base64"));
    }

    #[test]
    fn new_content_keeps_existing_attributes_and_diffs_when_known() {
        let p = plan(
            &*module(""),
            "file 600 www-data adm 0000\ncontent b2xkCg==\n",
        )
        .unwrap();
        let c = &p.changes[0];
        assert_eq!(c.summary, "update content");
        assert!(
            c.script.contains("chown -- www-data:adm") && c.script.contains("chmod 0600"),
            "{}",
            c.script
        );
        let diff = c.diff.as_deref().unwrap();
        assert!(diff.contains("-old") && diff.contains("+hello"), "{diff}");
        // Without the old content (no --diff) there is no diff to show.
        assert_eq!(
            plan(&*module(""), "file 600 a b 0000\n").unwrap().changes[0].diff,
            None
        );
    }

    #[test]
    fn secrets_are_masked_in_diffs() {
        let p = plan(
            &*module("secret: true"),
            "file 600 a b 0000\ncontent b2xkCg==\n",
        )
        .unwrap();
        let diff = p.changes[0].diff.as_deref().unwrap();
        assert!(!diff.contains("hello") && !diff.contains("old"), "{diff}");
    }

    #[test]
    fn a_directory_in_the_way_is_an_error() {
        let err = plan(&*module(""), "directory 755 root root\n").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_missing_directory_is_named_at_plan_time() {
        let m = module("");
        let err = plan(&*m, "parent-missing\n").unwrap_err().to_string();
        assert!(err.contains("directory /etc does not exist"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let inside = build_from_yaml(
            "copy",
            &format!("dest: {}/nope/x\ncontent: x\n", dir.path().display()),
        )
        .unwrap();
        let probed =
            crate::modules::testing::run_probe(&*inside, crate::modules::testing::probe_options());
        assert_eq!(probed.trim(), "parent-missing");
        let here = build_from_yaml(
            "copy",
            &format!("dest: {}/x\ncontent: x\n", dir.path().display()),
        )
        .unwrap();
        let probed =
            crate::modules::testing::run_probe(&*here, crate::modules::testing::probe_options());
        assert_eq!(plan(&*here, &probed).unwrap().changes[0].summary, "create");
    }

    #[test]
    fn bad_arguments() {
        assert!(build_from_yaml("copy", "dest: relative\ncontent: x\n").is_err());
        assert!(build_from_yaml("copy", "dest: /x\ncontent: x\nmode: 644x\n").is_err());
        assert!(build_from_yaml("copy", "dest: /x\ncontent: x\ncolour: red\n").is_err());
    }
    #[test]
    fn renders_then_plans_like_copy() {
        let m = build_from_yaml(
            "template",
            "src: motd.tera\ndest: /etc/motd\nmode: \"0644\"\n",
        )
        .unwrap();
        let facts = facts();
        let render = |name: &str| {
            assert_eq!(name, "motd.tera");
            Ok("welcome\n".to_string())
        };
        let ctx = PlanContext {
            facts: &facts,
            sections: &crate::modules::testing::sections(),
            render: &render,
        };
        let p = m.plan("absent\n", &ctx).unwrap();
        assert_eq!(p.changes[0].summary, "create");
        let same = format!(
            "file 644 root root {}\n",
            file_state::sha256_hex(b"welcome\n")
        );
        assert!(m.plan(&same, &ctx).unwrap().is_ok());
    }

    #[test]
    fn a_render_error_fails_the_task() {
        let m = build_from_yaml("template", "src: broken.tera\ndest: /etc/x\n").unwrap();
        let facts = facts();
        let render = |_: &str| Err("broken.tera line 3: unknown variable `admin`".to_string());
        let err = m
            .plan(
                "absent\n",
                &PlanContext {
                    facts: &facts,
                    sections: &crate::modules::testing::sections(),
                    render: &render,
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("unknown variable `admin`"));
    }

    #[test]
    fn a_failed_check_puts_the_previous_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("app.conf");
        std::fs::write(&dest, "good\n").unwrap();
        let yaml = |content: &str| {
            format!(
                "dest: {}\ncontent: \"{content}\\n\"\ncheck: \"grep -qx good {}\"\n",
                dest.display(),
                dest.display()
            )
        };
        let run = |yaml: String| {
            let m = build_from_yaml("copy", &yaml).unwrap();
            let probed =
                crate::modules::testing::run_probe(&*m, crate::modules::testing::probe_options());
            let script = plan(&*m, &probed).unwrap().changes[0].script.clone();
            std::process::Command::new("sh")
                .args(["-ec", &script])
                .output()
                .unwrap()
        };
        let out = run(yaml("bad"));
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("check failed"),
            "{out:?}"
        );
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "good\n");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no backup left behind"
        );
        // A file that did not exist before is removed again.
        std::fs::remove_file(&dest).unwrap();
        assert!(!run(yaml("bad")).status.success());
        assert!(!dest.exists());
        // A passing check keeps the new file.
        std::fs::write(&dest, "old\n").unwrap();
        assert!(run(yaml("good")).status.success());
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "good\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn copy_and_template_take_their_own_source() {
        assert!(build_from_yaml("copy", "dest: /x\nsrc: a.tera\n")
            .unwrap_err()
            .to_string()
            .contains("template module"));
        assert!(build_from_yaml("template", "dest: /x\ncontent: hi\n")
            .unwrap_err()
            .to_string()
            .contains("copy module"));
        assert!(build_from_yaml("template", "dest: /x\n")
            .unwrap_err()
            .to_string()
            .contains("needs `src`"));
    }
}
