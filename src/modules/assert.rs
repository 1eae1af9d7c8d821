//! `assert`: stops the play with a message when a condition (usually on the
//! facts) does not hold, before any later task changes the host. It probes
//! nothing and changes nothing.
//!
//! ```yaml
//! - name: supported OS
//!   assert:
//!     that: "{{ facts.os_id == 'debian' }}"
//!     fail_msg: "vpsup supports Debian and Ubuntu, not {{ facts.os_name }}"
//! ```

use serde::Deserialize;

use super::{Module, ModuleError, Plan, PlanContext, ProbeOptions, Scope, Validate};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assert {
    /// The condition, already rendered: `true`/`false` (or those words).
    that: Truth,
    fail_msg: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Truth {
    Bool(bool),
    Text(String),
}

impl Validate for Assert {
    fn validate(&self) -> Result<(), String> {
        self.holds().map(|_| ())
    }
}

impl Assert {
    fn holds(&self) -> Result<bool, String> {
        match &self.that {
            Truth::Bool(b) => Ok(*b),
            Truth::Text(t) => match t.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(format!(
                    "`that` must render to true or false, got {other:?}"
                )),
            },
        }
    }
}

impl Module for Assert {
    fn probe(&self, _: &ProbeOptions) -> String {
        String::new()
    }

    fn plan(&self, _: &str, _: &PlanContext) -> Result<Plan, ModuleError> {
        match self.holds() {
            Ok(true) => Ok(Plan::ok()),
            Ok(false) => Err(ModuleError::Plan(self.fail_msg.clone())),
            Err(e) => Err(ModuleError::Args(e)),
        }
    }

    fn scope(&self) -> Scope {
        Scope::Keys(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use crate::modules::testing::{build_from_yaml, plan};
    use crate::modules::ModuleError;

    #[test]
    fn holds_or_fails_with_the_message() {
        let ok = build_from_yaml("assert", "that: \"true\"\nfail_msg: nope").unwrap();
        assert!(plan(ok.as_ref(), "").unwrap().is_ok());
        let ok = build_from_yaml("assert", "that: true\nfail_msg: nope").unwrap();
        assert!(plan(ok.as_ref(), "").unwrap().is_ok());
        let no = build_from_yaml(
            "assert",
            "that: \" false\"\nfail_msg: Alpine is not supported",
        )
        .unwrap();
        assert_eq!(
            plan(no.as_ref(), ""),
            Err(ModuleError::Plan("Alpine is not supported".into()))
        );
        let err = build_from_yaml("assert", "that: maybe\nfail_msg: x").unwrap_err();
        assert!(err.to_string().contains("true or false"), "{err}");
    }
}
