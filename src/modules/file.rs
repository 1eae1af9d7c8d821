//! `file`: a directory that exists, a path that does not, or an existing
//! file's mode and owner.

use serde::Deserialize;

use super::file_state::{self, Attributes, FileState, Kind};
use super::{
    de_mode, Change, Module, ModuleError, Plan, PlanContext, ProbeOptions, Scope, Validate,
};
use crate::transport::script::quote;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub path: String,
    pub state: FileWanted,
    #[serde(default, deserialize_with = "de_mode")]
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileWanted {
    /// A directory (parents created as needed).
    Directory,
    /// Nothing at the path (a directory is removed with its content).
    Absent,
    /// An existing regular file whose mode/owner are enforced.
    File,
    /// A regular file, created empty when missing.
    Touch,
}

impl Validate for File {
    fn validate(&self) -> Result<(), String> {
        // Refuse paths where a typo is a disaster: `rm -rf /` or a relative path.
        if !self.path.starts_with('/') || self.path.trim_end_matches('/').is_empty() {
            return Err(format!(
                "path {:?} must be an absolute path other than /",
                self.path
            ));
        }
        let attributes_given = self.mode.is_some() || self.owner.is_some() || self.group.is_some();
        if self.state == FileWanted::Absent && attributes_given {
            return Err("mode/owner/group make no sense with state: absent".to_string());
        }
        Ok(())
    }
}

impl Module for File {
    fn probe(&self, _opts: &ProbeOptions) -> String {
        file_state::probe(&self.path, false)
    }

    fn plan(&self, probed: &str, _ctx: &PlanContext) -> Result<Plan, ModuleError> {
        let state = file_state::parse(probed).map_err(ModuleError::Probe)?;
        let p = quote(&self.path);
        let attributes = Attributes {
            mode: self.mode,
            owner: self.owner.clone(),
            group: self.group.clone(),
        };
        let with_attributes = |summary: &str, create: String| {
            let chown = attributes
                .chown_spec()
                .map(|o| format!("\nchown -- {} {p}", quote(&o)));
            let chmod = attributes.mode.map(|m| format!("\nchmod {m:04o} {p}"));
            Plan::change(Change::new(
                summary,
                format!(
                    "{create}{}{}",
                    chown.unwrap_or_default(),
                    chmod.unwrap_or_default()
                ),
            ))
        };
        let wrong_kind = |info: &file_state::PathInfo| {
            Err(ModuleError::Plan(format!(
                "{} exists and is a {:?}, not a {:?}; remove it first",
                self.path, info.kind, self.state
            )))
        };
        let info = match (&state, self.state) {
            (FileState::Absent, FileWanted::Absent) => return Ok(Plan::ok()),
            (FileState::Present(_), FileWanted::Absent) => {
                return Ok(Plan::change(Change::new(
                    "remove",
                    format!("rm -rf -- {p}"),
                )))
            }
            (FileState::Absent, FileWanted::Directory) => {
                return Ok(with_attributes(
                    "create directory",
                    format!("mkdir -p -- {p}"),
                ))
            }
            (FileState::Absent, FileWanted::Touch) => {
                return Ok(with_attributes(
                    "create empty file",
                    format!("touch -- {p}"),
                ))
            }
            (FileState::Absent, FileWanted::File) => {
                return Err(ModuleError::Plan(format!(
                    "{} does not exist (use state: touch to create it empty)",
                    self.path
                )))
            }
            (FileState::Present(info), wanted) => {
                let expected = if wanted == FileWanted::Directory {
                    Kind::Directory
                } else {
                    Kind::File
                };
                if info.kind != expected {
                    return wrong_kind(info);
                }
                info
            }
        };
        Ok(match attributes.fix(&self.path, info) {
            Some((summary, script)) => Plan::change(Change::new(summary, script)),
            None => Plan::ok(),
        })
    }

    fn scope(&self) -> Scope {
        Scope::path(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{build_from_yaml, plan};

    fn module(yaml: &str) -> Box<dyn Module> {
        build_from_yaml("file", yaml).unwrap()
    }

    #[test]
    fn directory_is_created_with_its_attributes_then_ok() {
        let m = module(
            "path: /srv/app\nstate: directory\nmode: \"0750\"\nowner: deploy\ngroup: deploy\n",
        );
        let p = plan(&*m, "absent\n").unwrap();
        assert_eq!(p.changes[0].summary, "create directory");
        assert_eq!(
            p.changes[0].script,
            "mkdir -p -- /srv/app\nchown -- deploy:deploy /srv/app\nchmod 0750 /srv/app"
        );
        assert!(plan(&*m, "directory 750 deploy deploy\n").unwrap().is_ok());
        let p = plan(&*m, "directory 755 deploy deploy\n").unwrap();
        assert_eq!(p.changes[0].script, "chmod 0750 /srv/app");
    }

    #[test]
    fn absent_removes_whatever_is_there() {
        let m = module("path: /etc/nginx/sites-enabled/default\nstate: absent\n");
        assert!(plan(&*m, "absent\n").unwrap().is_ok());
        let p = plan(&*m, "symlink 777 root root\n").unwrap();
        assert_eq!(
            p.changes[0].script,
            "rm -rf -- /etc/nginx/sites-enabled/default"
        );
    }

    #[test]
    fn file_and_touch() {
        let m = module("path: /var/log/app.log\nstate: file\nmode: \"0640\"\n");
        assert!(plan(&*m, "absent\n")
            .unwrap_err()
            .to_string()
            .contains("state: touch"));
        assert!(plan(&*m, "file 640 root root abc\n").unwrap().is_ok());
        let t = module("path: /var/log/app.log\nstate: touch\n");
        assert_eq!(
            plan(&*t, "absent\n").unwrap().changes[0].script,
            "touch -- /var/log/app.log"
        );
        assert!(plan(&*t, "directory 755 root root\n")
            .unwrap_err()
            .to_string()
            .contains("remove it first"));
    }

    #[test]
    fn dangerous_or_meaningless_arguments_are_refused() {
        for yaml in [
            "path: /\nstate: absent\n",
            "path: relative\nstate: directory\n",
            "path: /x\nstate: absent\nmode: \"0644\"\n",
            "path: /x\nstate: gone\n",
        ] {
            assert!(build_from_yaml("file", yaml).is_err(), "{yaml}");
        }
    }

    #[test]
    fn garbage_probe_output_is_an_error() {
        let m = module("path: /x\nstate: directory\n");
        assert!(matches!(plan(&*m, "???"), Err(ModuleError::Probe(_))));
    }
}
