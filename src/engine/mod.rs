//! The playbook engine: runs a play on a host in as few round trips as it can.
//!
//! 1. Every task is built from its rendered arguments, and ONE exec gathers the
//!    host facts and every task's probe.
//! 2. Tasks are planned in order against that state (`when`, then the module's
//!    `plan`). Tasks with nothing to do are `ok`; changes are queued in a batch.
//! 3. A batch runs as one exec. A task whose probed state a queued change may
//!    have made stale (see `modules::Scope`) first flushes the batch, and that
//!    same exec re-probes every stale task. A no-op run is one connection plus
//!    one probe; each batch of changes adds one exec.
//! 4. Notified handlers run once, at the end or at `meta: flush_handlers`.

pub mod assets;
pub mod batch;
pub mod on_hosts;
mod play_loop;
pub mod playbook;
pub mod render;

use async_trait::async_trait;
use serde::Serialize;

pub use play_loop::run_play;

use crate::facts::HostFacts;
use crate::transport::Transport;

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Plan only: nothing that changes the host runs.
    pub check: bool,
    /// Probe file contents so changes carry unified diffs.
    pub diff: bool,
    /// Only tasks with one of these tags (empty: all).
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Changed,
    Failed,
    Skipped,
}

/// What happened to one task (or handler) on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskResult {
    pub name: String,
    pub status: Status,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub handler: bool,
    /// Short reasons for a change ("install nginx", "mode 0644 -> 0600").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diffs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stdout: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stderr: String,
}

impl TaskResult {
    fn new(name: &str, status: Status, handler: bool) -> TaskResult {
        TaskResult {
            name: name.to_string(),
            status,
            handler,
            changes: Vec::new(),
            diffs: Vec::new(),
            error: None,
            exit_status: None,
            stdout: String::new(),
            stderr: String::new(),
        }
    }

    fn failed(name: &str, handler: bool, error: String) -> TaskResult {
        TaskResult {
            error: Some(error),
            ..TaskResult::new(name, Status::Failed, handler)
        }
    }
}

/// Counts per status, like Ansible's PLAY RECAP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Recap {
    pub ok: usize,
    pub changed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Recap {
    pub fn of(results: &[TaskResult]) -> Recap {
        let mut r = Recap::default();
        for t in results {
            match t.status {
                Status::Ok => r.ok += 1,
                Status::Changed => r.changed += 1,
                Status::Failed => r.failed += 1,
                Status::Skipped => r.skipped += 1,
            }
        }
        r
    }
}

/// The outcome of one play on one host.
#[derive(Debug, Clone, Serialize)]
pub struct PlayReport {
    pub play: String,
    pub tasks: Vec<TaskResult>,
    /// Handlers that were notified but did not run because the play failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub handlers_not_run: Vec<String>,
    pub recap: Recap,
    /// Execs this play cost (the probe included).
    pub round_trips: usize,
    pub elapsed_ms: u64,
}

impl PlayReport {
    pub fn failed(&self) -> bool {
        self.recap.failed > 0
    }
}

/// Hears about progress as it happens (the report layer draws it).
pub trait Observer: Send + Sync {
    /// What the engine is doing now ("probing", "applying 3 changes").
    fn phase(&self, what: &str);
    /// A task's result, in task order.
    fn task(&self, result: &TaskResult);
}

/// An observer that ignores everything.
pub struct Silent;

impl Observer for Silent {
    fn phase(&self, _: &str) {}
    fn task(&self, _: &TaskResult) {}
}

/// Steps of a command that a playbook cannot express, such as opening a second
/// connection. A task names one with `before: NAME`; the engine runs it (after
/// applying the changes queued so far) right before that task's change, and
/// only when there is one, so a converged host costs nothing extra. An error
/// fails the task and its change is not applied.
#[async_trait]
pub trait Hooks: Send + Sync {
    fn provides(&self, name: &str) -> bool;
    async fn step(
        &self,
        name: &str,
        transport: &dyn Transport,
        facts: &HostFacts,
    ) -> Result<(), String>;
}

/// For commands without hooks (`vpsup play`).
pub struct NoHooks;

#[async_trait]
impl Hooks for NoHooks {
    fn provides(&self, _: &str) -> bool {
        false
    }
    async fn step(&self, name: &str, _: &dyn Transport, _: &HostFacts) -> Result<(), String> {
        Err(format!("no hook {name:?} in this command"))
    }
}
