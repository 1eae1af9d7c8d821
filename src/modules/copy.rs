//! `copy`: a file with given content, mode and owner. `template` renders its
//! content first and then shares everything here.

use serde::Deserialize;

use super::file_state::{self, Attributes, FileState, Kind};
use super::{
    de_mode, Change, Module, ModuleError, Plan, PlanContext, ProbeOptions, Scope, Validate,
};
use crate::transport::script;
use crate::transport::FileMeta;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Copy {
    pub dest: String,
    pub content: String,
    #[serde(default, deserialize_with = "de_mode")]
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// Never show the content in diffs.
    #[serde(default)]
    pub secret: bool,
}

impl Validate for Copy {
    fn validate(&self) -> Result<(), String> {
        validate_dest(&self.dest)
    }
}

impl Module for Copy {
    fn probe(&self, opts: &ProbeOptions) -> String {
        probe_dest(&self.dest, opts)
    }

    fn plan(&self, probed: &str, _ctx: &PlanContext) -> Result<Plan, ModuleError> {
        let wanted = DesiredFile {
            dest: &self.dest,
            content: self.content.as_bytes(),
            attributes: Attributes {
                mode: self.mode,
                owner: self.owner.clone(),
                group: self.group.clone(),
            },
            secret: self.secret,
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

/// A whole file as it should be: shared by `copy` and `template`.
pub struct DesiredFile<'a> {
    pub dest: &'a str,
    pub content: &'a [u8],
    pub attributes: Attributes,
    pub secret: bool,
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
        Change::new(summary, script::write_file(self.dest, self.content, &meta)).with_diff(diff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{build_from_yaml, plan};

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
        let probed = crate::modules::testing::run_probe(&*inside, ProbeOptions::default());
        assert_eq!(probed.trim(), "parent-missing");
        let here = build_from_yaml(
            "copy",
            &format!("dest: {}/x\ncontent: x\n", dir.path().display()),
        )
        .unwrap();
        let probed = crate::modules::testing::run_probe(&*here, ProbeOptions::default());
        assert_eq!(plan(&*here, &probed).unwrap().changes[0].summary, "create");
    }

    #[test]
    fn bad_arguments() {
        assert!(build_from_yaml("copy", "dest: relative\ncontent: x\n").is_err());
        assert!(build_from_yaml("copy", "dest: /x\ncontent: x\nmode: 644x\n").is_err());
        assert!(build_from_yaml("copy", "dest: /x\ncontent: x\ncolour: red\n").is_err());
    }
}
