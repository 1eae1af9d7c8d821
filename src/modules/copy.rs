//! STUB: being written.
use serde::Deserialize;

use super::{Module, ModuleError, Plan, PlanContext, ProbeOptions, Scope, Validate};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Copy {}

impl Validate for Copy {}

impl Module for Copy {
    fn probe(&self, _opts: &ProbeOptions) -> String {
        String::new()
    }
    fn plan(&self, _probed: &str, _ctx: &PlanContext) -> Result<Plan, ModuleError> {
        Err(ModuleError::Plan("not written yet".into()))
    }
    fn scope(&self) -> Scope {
        Scope::Host
    }
}
