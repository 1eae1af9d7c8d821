//! `command`: run a shell script, unless a path exists (`creates`) or a check
//! succeeds (`unless`). Both conditions are evaluated by the play's probe.

use serde::Deserialize;

use super::{Change, Module, ModuleError, Plan, PlanContext, ProbeOptions, Scope, Validate};
use crate::transport::script::quote;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandTask {
    /// POSIX sh script.
    pub run: String,
    /// Skip when this path exists (the command creates it).
    pub creates: Option<String>,
    /// Skip when this read-only check exits 0. It runs during the probe.
    pub unless: Option<String>,
    /// `false`: running the command does not count as a change (e.g. a check).
    #[serde(default = "yes")]
    pub changed_when: bool,
}

fn yes() -> bool {
    true
}

impl Validate for CommandTask {
    fn validate(&self) -> Result<(), String> {
        if self.run.trim().is_empty() {
            return Err("run must not be empty".to_string());
        }
        Ok(())
    }
}

const SATISFIED: &str = "satisfied";

impl Module for CommandTask {
    fn probe(&self, _opts: &ProbeOptions) -> String {
        let mut checks = Vec::new();
        if let Some(path) = &self.creates {
            checks.push(format!("[ -e {} ]", quote(path)));
        }
        if let Some(check) = &self.unless {
            checks.push(format!("( {check}\n) >/dev/null 2>&1 </dev/null"));
        }
        if checks.is_empty() {
            return String::new();
        }
        // Either condition satisfied means there is nothing to do.
        format!(
            "if {}; then echo {SATISFIED}; else echo pending; fi",
            checks.join(" || ")
        )
    }

    fn plan(&self, probed: &str, _ctx: &PlanContext) -> Result<Plan, ModuleError> {
        if self.creates.is_some() || self.unless.is_some() {
            match probed.trim() {
                SATISFIED => return Ok(Plan::ok()),
                "pending" => {}
                other => {
                    return Err(ModuleError::Probe(format!(
                        "expected satisfied/pending, got {other:?}"
                    )))
                }
            }
        }
        let summary = match &self.creates {
            Some(path) => format!("run (creates {path})"),
            None => "run".to_string(),
        };
        let mut change = Change::new(summary, self.run.clone());
        change.reports_change = self.changed_when;
        Ok(Plan::change(change))
    }

    fn scope(&self) -> Scope {
        Scope::Host
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{build_from_yaml, plan, run_probe};

    fn probe_locally(m: &dyn Module) -> String {
        run_probe(m, crate::modules::testing::probe_options())
    }

    #[test]
    fn creates_skips_when_the_path_exists() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("done");
        let yaml = format!("run: touch {0}\ncreates: {0}\n", marker.display());
        let m = build_from_yaml("command", &yaml).unwrap();
        let p = plan(&*m, &probe_locally(&*m)).unwrap();
        assert_eq!(p.changes[0].script, format!("touch {}", marker.display()));
        std::fs::write(&marker, "").unwrap();
        assert!(plan(&*m, &probe_locally(&*m)).unwrap().is_ok());
    }

    #[test]
    fn unless_skips_when_the_check_succeeds() {
        let yes = build_from_yaml("command", "run: echo hi\nunless: \"test 1 = 1\"\n").unwrap();
        assert!(plan(&*yes, &probe_locally(&*yes)).unwrap().is_ok());
        let no = build_from_yaml("command", "run: echo hi\nunless: \"exit 3\"\n").unwrap();
        assert_eq!(plan(&*no, &probe_locally(&*no)).unwrap().changes.len(), 1);
    }

    #[test]
    fn always_runs_without_conditions_and_changed_when_false_reports_ok() {
        let m = build_from_yaml("command", "run: docker ps\nchanged_when: false\n").unwrap();
        assert_eq!(m.probe(&crate::modules::testing::probe_options()), "");
        let p = plan(&*m, "").unwrap();
        assert!(!p.changes[0].reports_change);
        assert!(build_from_yaml("command", "run: \"  \"\n").is_err());
        let m = build_from_yaml("command", "run: x\ncreates: /x\n").unwrap();
        assert!(matches!(plan(&*m, "junk"), Err(ModuleError::Probe(_))));
    }
}
