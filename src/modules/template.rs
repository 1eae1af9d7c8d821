//! `template`: a file rendered from `templates/NAME.tera` with the play's
//! variables, the host facts and the config; then handled exactly like `copy`.

use serde::Deserialize;

use super::copy::{probe_dest, validate_dest, DesiredFile};
use super::file_state::Attributes;
use super::{de_mode, Module, ModuleError, Plan, PlanContext, ProbeOptions, Scope, Validate};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Template name, e.g. `sshd_hardening.conf.tera`.
    pub src: String,
    pub dest: String,
    #[serde(default, deserialize_with = "de_mode")]
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    #[serde(default)]
    pub secret: bool,
}

impl Validate for Template {
    fn validate(&self) -> Result<(), String> {
        validate_dest(&self.dest)
    }
}

impl Module for Template {
    fn probe(&self, opts: &ProbeOptions) -> String {
        probe_dest(&self.dest, opts)
    }

    fn plan(&self, probed: &str, ctx: &PlanContext) -> Result<Plan, ModuleError> {
        let content = (ctx.render)(&self.src).map_err(ModuleError::Plan)?;
        DesiredFile {
            dest: &self.dest,
            content: content.as_bytes(),
            attributes: Attributes {
                mode: self.mode,
                owner: self.owner.clone(),
                group: self.group.clone(),
            },
            secret: self.secret,
        }
        .plan(probed)
    }

    fn scope(&self) -> Scope {
        Scope::path(&self.dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{build_from_yaml, facts};

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
            render: &render,
        };
        let p = m.plan("absent\n", &ctx).unwrap();
        assert_eq!(p.changes[0].summary, "create");
        let same = format!(
            "file 644 root root {}\n",
            crate::modules::file_state::sha256_hex(b"welcome\n")
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
                    render: &render,
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("unknown variable `admin`"));
    }
}
