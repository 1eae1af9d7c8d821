//! The run loop of one play on one host (see the module docs in `engine`).

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::json;

use super::batch::{self, BatchOutput, BatchScript};
use super::playbook::{Action, Play, Task};
use super::render::{mentions, Renderer, Vars};
use super::{Hooks, Observer, PlayReport, Recap, RunOptions, Status, TaskResult};
use crate::facts::{self, HostFacts};
use crate::modules::{self, Change, Module, ModuleError, Plan, PlanContext, ProbeOptions, Scope};
use crate::transport::sections::Sections;
use crate::transport::{ExecRequest, Transport};

/// Runs `play` on the host behind `transport`. `vars.base` holds the command's
/// variables (they override the play's own `vars`), `host` and `config`.
pub async fn run_play(
    transport: &dyn Transport,
    play: &Play,
    renderer: &Renderer,
    mut vars: Vars,
    options: &RunOptions,
    hooks: &dyn Hooks,
    observer: &dyn Observer,
) -> PlayReport {
    let started = Instant::now();
    let round_trips_before = transport.round_trips();
    let mut base = play.vars.clone();
    base.append(&mut vars.base);
    vars.base = base;

    let mut run = Run {
        transport,
        play,
        renderer,
        vars,
        options,
        hooks,
        observer,
        units: Vec::new(),
        facts: None,
        results: Vec::new(),
        emitted: 0,
        batch: Vec::new(),
        notified: BTreeSet::new(),
        failed: false,
        module_sections: Sections::random(),
    };
    run.execute().await;

    let handlers_not_run = if run.failed {
        run.notified
            .iter()
            .map(|&u| run.units[u].task.name.clone())
            .collect()
    } else {
        Vec::new()
    };
    PlayReport {
        play: play.name.clone(),
        recap: Recap::of(&run.results),
        tasks: run.results,
        handlers_not_run,
        round_trips: transport.round_trips() - round_trips_before,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

/// A task or handler being run.
struct Unit<'p> {
    task: &'p Task,
    handler: bool,
    module: Option<Box<dyn Module>>,
    /// Why the module could not be built (bad arguments, render error).
    build_error: Option<String>,
    /// Its arguments refer to `facts`, so it is built after the first probe.
    needs_facts: bool,
    /// What its probe printed last.
    probed: Option<String>,
    /// A change queued or run since `probed` may have altered its state.
    stale: bool,
    /// Planned (and, for changes, queued or run) already.
    done: bool,
    /// Check mode: an earlier task would have changed this one's state, so its
    /// plan (and any error in it) is only a guess.
    after_would_change: bool,
    /// A result (of any status) was recorded for it in the current round.
    attempted: bool,
}

impl Unit<'_> {
    fn become_root(&self, play: &Play) -> bool {
        self.task.become_root.unwrap_or(play.become_root)
    }

    fn scope(&self) -> Option<Scope> {
        self.module.as_ref().map(|m| m.scope())
    }
}

/// A planned change waiting in the current batch.
struct Queued {
    unit: usize,
    plan: Plan,
    /// Where its result goes in `results`.
    slot: usize,
}

struct Run<'a> {
    transport: &'a dyn Transport,
    play: &'a Play,
    renderer: &'a Renderer,
    vars: Vars,
    options: &'a RunOptions,
    hooks: &'a dyn Hooks,
    observer: &'a dyn Observer,
    units: Vec<Unit<'a>>,
    facts: Option<HostFacts>,
    results: Vec<TaskResult>,
    /// Results before this index have been given to the observer.
    emitted: usize,
    batch: Vec<Queued>,
    /// Handler units notified and not yet run, in definition order.
    notified: BTreeSet<usize>,
    failed: bool,
    /// The marker of the modules' own sub-parts (`ProbeOptions::sections`):
    /// one per run, as a task is probed in one batch and planned later, and
    /// apart from each batch's, which splits the batch into tasks.
    module_sections: Sections,
}

impl<'a> Run<'a> {
    async fn execute(&mut self) {
        let play = self.play;
        for task in &play.tasks {
            let unit = self.build(task, false);
            self.units.push(unit);
        }
        for handler in &play.handlers {
            let unit = self.build(handler, true);
            self.units.push(unit);
        }
        let hooks = self.hooks;
        for unit in &mut self.units {
            match &unit.task.before {
                Some(hook) if !hooks.provides(hook) && unit.build_error.is_none() => {
                    unit.build_error = Some(format!(
                        "{}: `before: {hook}` names a step this command does not have",
                        unit.task.origin
                    ))
                }
                _ => {}
            }
        }
        // Bad arguments are found before anything runs on the host.
        if self.fail_on_build_error() || !self.probe_all().await || self.fail_on_build_error() {
            return;
        }
        for index in 0..play.tasks.len() {
            if self.failed {
                return;
            }
            match &self.units[index].task.action {
                Action::FlushHandlers => {
                    self.flush().await;
                    self.run_handlers().await;
                }
                Action::Module { .. } if self.selected(index) => self.step(index).await,
                Action::Module { .. } => {}
            }
        }
        self.flush().await;
        self.run_handlers().await;
    }

    /// Fails the play on the first unit whose module could not be built.
    fn fail_on_build_error(&mut self) -> bool {
        let Some(index) = self.units.iter().position(|u| u.build_error.is_some()) else {
            return false;
        };
        let error = self.units[index].build_error.clone().unwrap_or_default();
        self.failed = true;
        let unit = &self.units[index];
        let result = TaskResult::failed(&unit.task.name, unit.handler, error);
        self.finish_unit(index, result);
        true
    }

    fn selected(&self, index: usize) -> bool {
        let tags = &self.options.tags;
        tags.is_empty() || self.units[index].task.tags.iter().any(|t| tags.contains(t))
    }

    /// Builds a unit's module from its rendered arguments. Arguments that refer
    /// to `facts` wait until the facts are known.
    fn build(&self, task: &'a Task, handler: bool) -> Unit<'a> {
        let mut unit = Unit {
            task,
            handler,
            module: None,
            build_error: None,
            needs_facts: false,
            probed: None,
            stale: false,
            done: false,
            after_would_change: false,
            attempted: false,
        };
        if let Action::Module { module, args } = &task.action {
            if self.facts.is_none() && mentions(args, "facts") {
                unit.needs_facts = true;
                unit.stale = true;
                return unit;
            }
            let built = self.renderer.args(args, &self.vars).and_then(|rendered| {
                modules::build(module, rendered).map_err(|e| format!("{module}: {e}"))
            });
            match built {
                Ok(m) => unit.module = Some(m),
                Err(e) => unit.build_error = Some(format!("{}: {e}", task.origin)),
            }
        }
        unit
    }

    fn probe_options(&self) -> ProbeOptions {
        ProbeOptions {
            with_content: self.options.diff,
            sections: self.module_sections.clone(),
        }
    }

    /// The first exec: host facts and every buildable unit's probe.
    async fn probe_all(&mut self) -> bool {
        self.observer.phase("probing");
        let mut script = BatchScript::new(Sections::random());
        script.facts();
        let options = self.probe_options();
        let play = self.play;
        for (id, unit) in self.units.iter_mut().enumerate() {
            match &unit.module {
                // Probed as the task will run; the others are probed in an exec
                // with their own `become` before they are planned.
                Some(module) if unit.become_root(play) == play.become_root => {
                    script.probe(id, &module.probe(&options))
                }
                Some(_) => unit.stale = true,
                None => {}
            }
        }
        let Some(output) = self.exec(script, self.play.become_root).await else {
            return false;
        };
        let facts = match output.facts.as_deref().map(facts::parse) {
            Some(Ok(f)) => f,
            Some(Err(e)) => return self.fail_play(format!("gathering facts: {e}")),
            None => {
                return self.fail_play("gathering facts: the probe printed nothing".to_string())
            }
        };
        self.vars.with_facts(&facts);
        self.facts = Some(facts);
        self.store_probes(&output);
        // Now the units that waited for facts can be built; they are stale
        // (never probed) and get probed before they are planned.
        for index in 0..self.units.len() {
            if self.units[index].needs_facts {
                let rebuilt = self.build(self.units[index].task, self.units[index].handler);
                let unit = &mut self.units[index];
                unit.module = rebuilt.module;
                unit.build_error = rebuilt.build_error;
            }
        }
        true
    }

    /// Plans one task or handler, recording its result or queueing its change.
    async fn step(&mut self, index: usize) {
        let task = self.units[index].task;
        // `when` may read results of tasks still in the batch: run them first.
        let when_reads_results = task.when.as_deref().is_some_and(|w| w.contains("results"));
        if when_reads_results && !self.batch.is_empty() {
            self.flush().await;
            if self.failed {
                return;
            }
        }
        // `when` before any re-probe: a skipped task costs no exec.
        if let Some(expression) = &task.when {
            match self.renderer.when(expression, &self.vars) {
                Ok(true) => {}
                Ok(false) => {
                    self.units[index].done = true;
                    let result =
                        TaskResult::new(&task.name, Status::Skipped, self.units[index].handler);
                    self.finish_unit(index, result);
                    return;
                }
                Err(e) => return self.fail_task(index, format!("{}: {e}", task.origin)).await,
            }
        }
        if self.units[index].stale && self.needs_probe(index) {
            self.flush().await;
            if self.units[index].stale && !self.failed {
                // Still stale: it runs with another `become` than the batch had.
                let become_root = self.units[index].become_root(self.play);
                self.flush_as(Some(become_root)).await;
            }
        }
        if self.failed {
            return;
        }
        let plan = match self.plan(index) {
            Ok(plan) => plan,
            // In check mode, "group docker does not exist" after a task that
            // would install docker is not a failure: it is what that change fixes.
            Err(e @ ModuleError::Plan(_))
                if self.options.check && self.units[index].after_would_change =>
            {
                let mut result =
                    TaskResult::new(&task.name, Status::Changed, self.units[index].handler);
                result.changes = vec![format!(
                    "cannot plan before earlier changes are applied ({e})"
                )];
                self.units[index].done = true;
                self.finish_unit(index, result);
                return;
            }
            Err(e) => return self.fail_task(index, format!("{}: {e}", task.origin)).await,
        };
        self.units[index].done = true;
        if plan.is_ok() {
            let result = TaskResult::new(&task.name, Status::Ok, self.units[index].handler);
            self.finish_unit(index, result);
        } else if self.options.check {
            self.mark_affected(index, |unit| unit.after_would_change = true);
            let result = self.changed_result(index, &plan, None);
            self.notify(index, &result);
            self.finish_unit(index, result);
        } else {
            if let Some(hook) = &task.before {
                if !self.run_hook(index, hook).await {
                    return;
                }
            }
            self.queue(index, plan).await;
        }
    }

    /// Runs the hook a task names before its change, after the changes queued
    /// so far (the hook may depend on them). False when the play failed.
    async fn run_hook(&mut self, index: usize, hook: &str) -> bool {
        self.flush().await;
        if self.failed {
            return false;
        }
        self.observer.phase(hook);
        let Some(facts) = self.facts.as_ref() else {
            return false;
        };
        match self.hooks.step(hook, self.transport, facts).await {
            Ok(()) => true,
            Err(e) => {
                let origin = &self.units[index].task.origin;
                let error = format!("{origin}: {e}");
                self.fail_task(index, error).await;
                false
            }
        }
    }

    /// Whether the unit's plan reads probed state (an `assert`, or a `command`
    /// without conditions, plans from its arguments alone).
    fn needs_probe(&self, index: usize) -> bool {
        let options = self.probe_options();
        self.units[index]
            .module
            .as_ref()
            .is_some_and(|m| !m.probe(&options).is_empty())
    }

    fn plan(&self, index: usize) -> Result<Plan, ModuleError> {
        let unit = &self.units[index];
        let missing = |what: &str| ModuleError::Plan(format!("internal: {what}"));
        let module = unit
            .module
            .as_ref()
            .ok_or_else(|| missing("the task has no module"))?;
        let facts = self.facts.as_ref().ok_or_else(|| missing("no facts"))?;
        let render = |name: &str| self.renderer.template(name, &self.vars);
        let ctx = PlanContext {
            facts,
            sections: &self.module_sections,
            render: &render,
        };
        let probed = unit.probed.as_deref().unwrap_or("");
        module.plan(probed, &ctx)
    }

    /// Adds a change to the batch and marks the later units it may affect stale.
    async fn queue(&mut self, index: usize, plan: Plan) {
        let become_root = self.units[index].become_root(self.play);
        if self
            .batch
            .first()
            .is_some_and(|q| self.units[q.unit].become_root(self.play) != become_root)
        {
            self.flush().await;
            if self.failed {
                return;
            }
        }
        self.mark_affected(index, |unit| unit.stale = true);
        let slot = self.results.len();
        // A placeholder keeps results in task order until the batch has run.
        self.results.push(TaskResult::new(
            &self.units[index].task.name,
            Status::Changed,
            self.units[index].handler,
        ));
        self.batch.push(Queued {
            unit: index,
            plan,
            slot,
        });
        if self.units[index].task.register.is_some() {
            self.flush().await;
        }
    }

    /// Applies `mark` to every unit not yet planned whose state a change by
    /// unit `index` may affect.
    fn mark_affected(&mut self, index: usize, mark: impl Fn(&mut Unit)) {
        let Some(scope) = self.units[index].scope() else {
            return;
        };
        for later in self.units.iter_mut().filter(|u| !u.done) {
            if later.scope().is_some_and(|s| scope.affects(&s)) {
                mark(later);
            }
        }
    }

    /// Runs the queued changes and re-probes every stale unit, in one exec.
    /// Nothing queued, nothing to do: stale units are re-probed when (and
    /// if) they are planned.
    async fn flush(&mut self) {
        if !self.batch.is_empty() {
            self.flush_as(None).await;
        }
    }

    /// `flush`, where an empty batch probes as `become_root` (default: the play's).
    /// Only stale units that run with the exec's `become` are re-probed.
    async fn flush_as(&mut self, become_root: Option<bool>) {
        let become_root = self
            .batch
            .first()
            .map_or(become_root.unwrap_or(self.play.become_root), |q| {
                self.units[q.unit].become_root(self.play)
            });
        let mut script = BatchScript::new(Sections::random());
        for queued in &self.batch {
            let body: Vec<&str> = queued
                .plan
                .changes
                .iter()
                .map(|c| c.script.as_str())
                .collect();
            script.change(queued.unit, &body.join("\n"));
        }
        let options = self.probe_options();
        let reprobed: Vec<usize> = (0..self.units.len())
            .filter(|&i| {
                let u = &self.units[i];
                u.stale && !u.done && u.module.is_some() && u.become_root(self.play) == become_root
            })
            .collect();
        for &id in &reprobed {
            if let Some(module) = &self.units[id].module {
                script.probe(id, &module.probe(&options));
            }
        }
        if script.is_empty() {
            return;
        }
        if !self.batch.is_empty() {
            self.observer
                .phase(&format!("applying {} change(s)", self.batch.len()));
        }
        // The batch stays queued during the exec, so a failure reported by
        // `exec` is not preceded by the placeholders of tasks that never ran.
        let output = self.exec(script, become_root).await;
        let batch = std::mem::take(&mut self.batch);
        let Some(output) = output else {
            self.drop_slots(batch.iter().map(|q| q.slot).collect());
            return;
        };
        for queued in &batch {
            if self.failed {
                break;
            }
            let ran = output.changes.iter().find(|c| c.id == queued.unit);
            let result = match ran {
                Some(c) if c.status == Some(0) => {
                    self.changed_result(queued.unit, &queued.plan, Some(c))
                }
                Some(c) => {
                    let mut r = self.changed_result(queued.unit, &queued.plan, Some(c));
                    r.status = Status::Failed;
                    r.error = Some(match c.status {
                        Some(code) => format!(
                            "{}: failed (exit {code}): {}",
                            self.units[queued.unit].task.origin,
                            tail(&c.stderr, &c.stdout)
                        ),
                        None => format!(
                            "{}: the connection ended while this task ran",
                            self.units[queued.unit].task.origin
                        ),
                    });
                    self.failed = true;
                    r
                }
                None => {
                    self.failed = true;
                    TaskResult::failed(
                        &self.units[queued.unit].task.name,
                        self.units[queued.unit].handler,
                        "the batch ended before this task ran (connection lost?)".to_string(),
                    )
                }
            };
            if result.status != Status::Failed {
                self.notify(queued.unit, &result);
            }
            self.register(queued.unit, &result);
            self.units[queued.unit].attempted = true;
            self.results[queued.slot] = result;
        }
        if self.failed {
            // Tasks queued after the failing one never ran: they leave no result.
            let unrun = batch
                .iter()
                .filter(|q| !output.changes.iter().any(|c| c.id == q.unit));
            self.drop_slots(unrun.map(|q| q.slot).collect());
        } else if output.complete {
            self.store_probes(&output);
        }
        self.emit_ready(usize::MAX);
    }

    async fn run_handlers(&mut self) {
        let handlers: Vec<usize> = std::mem::take(&mut self.notified).into_iter().collect();
        for &index in &handlers {
            self.units[index].done = false;
            self.units[index].attempted = false;
        }
        for &index in &handlers {
            if self.failed {
                break;
            }
            self.step(index).await;
        }
        self.flush().await;
        if self.failed {
            // The report names every notified handler that never got to run.
            let unrun = handlers.iter().filter(|&&h| !self.units[h].attempted);
            self.notified.extend(unrun);
        }
    }

    /// Notifies the task's handlers when it changed something.
    fn notify(&mut self, index: usize, result: &TaskResult) {
        if result.status != Status::Changed {
            return;
        }
        for name in &self.units[index].task.notify {
            if let Some(h) = self
                .units
                .iter()
                .position(|u| u.handler && &u.task.name == name)
            {
                self.notified.insert(h);
            }
        }
    }

    fn register(&mut self, index: usize, result: &TaskResult) {
        if let Some(name) = &self.units[index].task.register {
            let value = json!({
                "changed": result.status == Status::Changed,
                "failed": result.status == Status::Failed,
                "skipped": result.status == Status::Skipped,
                "exit_status": result.exit_status,
                "stdout": result.stdout,
                "stderr": result.stderr,
            });
            self.vars.results.insert(name.clone(), value);
        }
    }

    fn changed_result(
        &self,
        index: usize,
        plan: &Plan,
        ran: Option<&batch::ChangeOutput>,
    ) -> TaskResult {
        let unit = &self.units[index];
        let reports_change = plan.changes.iter().any(|c: &Change| c.reports_change);
        let status = if reports_change {
            Status::Changed
        } else {
            Status::Ok
        };
        let mut result = TaskResult::new(&unit.task.name, status, unit.handler);
        result.changes = plan.changes.iter().map(|c| c.summary.clone()).collect();
        if self.options.diff {
            result.diffs = plan.changes.iter().filter_map(|c| c.diff.clone()).collect();
        }
        if let Some(ran) = ran {
            result.exit_status = ran.status;
            result.stdout = ran.stdout.clone();
            result.stderr = ran.stderr.clone();
        }
        result
    }

    fn store_probes(&mut self, output: &BatchOutput) {
        for (&id, text) in &output.probes {
            if let Some(unit) = self.units.get_mut(id) {
                unit.probed = Some(text.clone());
                unit.stale = false;
            }
        }
    }

    /// Runs one batch script; a transport failure fails the play.
    async fn exec(&mut self, script: BatchScript, become_root: bool) -> Option<BatchOutput> {
        let sections = script.sections().clone();
        match self
            .transport
            .exec(ExecRequest::piped(script.finish()).become_root(become_root))
            .await
        {
            Ok(out) => Some(batch::parse(&out.stdout_str(), &sections)),
            Err(e) => {
                self.fail_play(e.to_string());
                None
            }
        }
    }

    fn fail_play(&mut self, error: String) -> bool {
        self.failed = true;
        let mut result = TaskResult::failed("(host)", false, error);
        result.name = format!("play {:?}", self.play.name);
        self.push_result(result);
        false
    }

    /// Fails the play at unit `index`. Changes already queued before it run
    /// first (they were planned before the failure, and may notify handlers).
    async fn fail_task(&mut self, index: usize, error: String) {
        self.flush().await;
        if self.failed {
            return; // the batch failed first; that failure is the one to report
        }
        self.failed = true;
        let unit = &self.units[index];
        let result = TaskResult::failed(&unit.task.name, unit.handler, error);
        self.finish_unit(index, result);
    }

    /// Records a unit's final result (any status).
    fn finish_unit(&mut self, index: usize, result: TaskResult) {
        self.register(index, &result);
        self.units[index].attempted = true;
        self.push_result(result);
    }

    /// Removes the placeholder results of queued tasks that never ran.
    fn drop_slots(&mut self, slots: BTreeSet<usize>) {
        let mut index = 0;
        self.results.retain(|_| {
            index += 1;
            !slots.contains(&(index - 1))
        });
        self.emit_ready(usize::MAX);
    }

    fn push_result(&mut self, result: TaskResult) {
        self.results.push(result);
        let first_waiting = self
            .batch
            .iter()
            .map(|q| q.slot)
            .min()
            .unwrap_or(usize::MAX);
        self.emit_ready(first_waiting);
    }

    /// Tells the observer about results up to (not including) `limit`.
    fn emit_ready(&mut self, limit: usize) {
        let end = self.results.len().min(limit);
        while self.emitted < end {
            self.observer.task(&self.results[self.emitted]);
            self.emitted += 1;
        }
    }
}

/// The last lines of stderr (or stdout when stderr is empty), for messages.
fn tail(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::engine::assets::Asset;
    use crate::engine::playbook;
    use crate::engine::{NoHooks, Silent};
    use crate::transport::{ExecOutput, LocalTransport};

    /// The real local transport, remembering every script it ran.
    struct Recording {
        inner: LocalTransport,
        scripts: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Transport for Recording {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn is_root(&self) -> bool {
            true
        }
        fn round_trips(&self) -> usize {
            self.inner.round_trips()
        }
        async fn exec(&self, req: ExecRequest) -> crate::transport::Result<ExecOutput> {
            self.scripts.lock().unwrap().push(req.script.clone());
            self.inner.exec(req).await
        }
    }

    fn recording() -> Recording {
        Recording {
            inner: LocalTransport::new("test", true),
            scripts: Mutex::new(Vec::new()),
        }
    }

    async fn run(
        yaml: &str,
        dir: &std::path::Path,
        options: RunOptions,
        t: &Recording,
    ) -> PlayReport {
        run_hooked(yaml, dir, options, t, &NoHooks).await
    }

    async fn run_hooked(
        yaml: &str,
        dir: &std::path::Path,
        options: RunOptions,
        t: &Recording,
        hooks: &dyn Hooks,
    ) -> PlayReport {
        let plays = playbook::parse(yaml, "test.yml").unwrap();
        let templates: BTreeMap<String, Asset> = BTreeMap::new();
        let renderer = Renderer::new(&templates).unwrap();
        let mut vars = Vars::default();
        vars.base
            .insert("dir".into(), json!(dir.display().to_string()));
        run_play(t, &plays[0], &renderer, vars, &options, hooks, &Silent).await
    }

    /// A hook `gate` that records what it saw on the host, and may refuse.
    struct Gate {
        dir: std::path::PathBuf,
        open: bool,
        seen: Mutex<Vec<bool>>,
    }

    #[async_trait]
    impl Hooks for Gate {
        fn provides(&self, name: &str) -> bool {
            name == "gate"
        }
        async fn step(&self, _: &str, _: &dyn Transport, _: &HostFacts) -> Result<(), String> {
            // Whether the change queued before the gated task was applied first.
            self.seen.lock().unwrap().push(self.dir.join("a").exists());
            if self.open {
                Ok(())
            } else {
                Err("gate closed".to_string())
            }
        }
    }

    const GATED: &str = r#"
- name: gated
  tasks:
    - name: a
      copy: { dest: "{{ dir }}/a", content: "a" }
    - name: b
      copy: { dest: "{{ dir }}/b", content: "b" }
      before: gate
    - name: c
      copy: { dest: "{{ dir }}/c", content: "c" }
"#;

    #[tokio::test]
    async fn a_hook_runs_before_its_tasks_change_after_earlier_changes_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let closed = Gate {
            dir: dir.path().to_path_buf(),
            open: false,
            seen: Mutex::new(Vec::new()),
        };
        let report = run_hooked(
            GATED,
            dir.path(),
            RunOptions::default(),
            &recording(),
            &closed,
        )
        .await;
        assert_eq!(*closed.seen.lock().unwrap(), [true]);
        assert_eq!(
            statuses(&report),
            [("a".into(), Status::Changed), ("b".into(), Status::Failed)]
        );
        assert!(report.tasks[1]
            .error
            .as_deref()
            .unwrap()
            .ends_with("gate closed"));
        assert!(
            !dir.path().join("b").exists(),
            "a refused hook blocks the change"
        );

        let open = Gate {
            open: true,
            ..closed
        };
        open.seen.lock().unwrap().clear();
        let report = run_hooked(
            GATED,
            dir.path(),
            RunOptions::default(),
            &recording(),
            &open,
        )
        .await;
        assert_eq!(report.recap.changed, 2);
        assert_eq!(*open.seen.lock().unwrap(), [true]);

        // Converged: no change to guard, so the hook does not run.
        let t = recording();
        let report = run_hooked(GATED, dir.path(), RunOptions::default(), &t, &open).await;
        assert_eq!((report.recap.ok, report.round_trips), (3, 1));
        assert_eq!(open.seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn tasks_built_from_facts_cost_no_exec_when_skipped_or_probe_free() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = r#"
- name: facts
  tasks:
    - name: known system
      assert: { that: "{{ facts.kernel != '' }}", fail_msg: no kernel }
    - meta: flush_handlers
    - name: not for this host
      copy: { dest: "{{ dir }}/{{ facts.hostname }}", content: x }
      when: facts.os_id == "plan9"
"#;
        let t = recording();
        let report = run(yaml, dir.path(), RunOptions::default(), &t).await;
        assert_eq!(
            statuses(&report),
            [
                ("known system".into(), Status::Ok),
                ("not for this host".into(), Status::Skipped)
            ]
        );
        assert_eq!(report.round_trips, 1, "{:?}", t.scripts.lock().unwrap());
    }

    #[tokio::test]
    async fn a_hook_the_command_lacks_fails_the_play_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let t = recording();
        let report = run(GATED, dir.path(), RunOptions::default(), &t).await;
        assert!(report.failed());
        assert!(
            report.tasks[0]
                .error
                .as_deref()
                .unwrap()
                .contains("`before: gate`"),
            "{:?}",
            report.tasks
        );
        assert_eq!(report.round_trips, 0);
    }

    fn statuses(report: &PlayReport) -> Vec<(String, Status)> {
        report
            .tasks
            .iter()
            .map(|t| (t.name.clone(), t.status))
            .collect()
    }

    const HANDLERS: &str = r#"
- name: handlers
  tasks:
    - name: a
      copy: { dest: "{{ dir }}/a", content: "a" }
      notify: [second, first]
    - name: b
      copy: { dest: "{{ dir }}/b", content: "b" }
      notify: second
  handlers:
    - name: first
      command: { run: "echo first >> {{ dir }}/log" }
    - name: second
      command: { run: "echo second >> {{ dir }}/log" }
"#;

    #[tokio::test]
    async fn handlers_run_once_each_in_definition_order_and_only_when_notified() {
        let dir = tempfile::tempdir().unwrap();
        let t = recording();
        let report = run(HANDLERS, dir.path(), RunOptions::default(), &t).await;
        assert_eq!(
            std::fs::read_to_string(dir.path().join("log")).unwrap(),
            "first\nsecond\n"
        );
        assert_eq!(report.recap.changed, 4);
        assert!(report.tasks[2].handler && report.tasks[2].name == "first");

        // Converged: nothing notifies, so no handler runs; one probe, nothing else.
        let t = recording();
        let report = run(HANDLERS, dir.path(), RunOptions::default(), &t).await;
        assert_eq!(
            statuses(&report),
            [("a".into(), Status::Ok), ("b".into(), Status::Ok)]
        );
        assert_eq!(report.round_trips, 1);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("log")).unwrap(),
            "first\nsecond\n"
        );
    }

    #[tokio::test]
    async fn check_mode_plans_everything_and_sends_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let t = recording();
        let options = RunOptions {
            check: true,
            diff: true,
            ..Default::default()
        };
        let report = run(HANDLERS, dir.path(), options, &t).await;
        assert_eq!(
            report.recap.changed, 4,
            "two tasks and two handlers would change"
        );
        assert!(report.tasks[0].diffs[0].contains("+a"));
        assert_eq!(report.round_trips, 1, "check mode costs the probe only");
        let scripts = t.scripts.lock().unwrap();
        assert!(
            scripts
                .iter()
                .all(|s| !s.contains(" begin ") && !s.contains("mv -f")),
            "{scripts:?}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_failing_task_stops_the_play_and_names_the_handlers_that_did_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = r#"
- name: failing
  tasks:
    - name: a
      copy: { dest: "{{ dir }}/a", content: "a" }
      notify: first
    - name: boom
      command: { run: "echo going down >&2; exit 4" }
    - name: never reached
      copy: { dest: "{{ dir }}/c", content: "c" }
  handlers:
    - name: first
      command: { run: "touch {{ dir }}/handled" }
"#;
        let report = run(yaml, dir.path(), RunOptions::default(), &recording()).await;
        assert_eq!(
            statuses(&report),
            [
                ("a".into(), Status::Changed),
                ("boom".into(), Status::Failed)
            ]
        );
        let error = report.tasks[1].error.as_deref().unwrap();
        assert!(
            error.contains("exit 4") && error.contains("going down"),
            "{error}"
        );
        assert_eq!(report.handlers_not_run, ["first"]);
        assert!(!dir.path().join("c").exists() && !dir.path().join("handled").exists());
    }

    #[tokio::test]
    async fn when_register_and_stale_state_are_respected() {
        let dir = tempfile::tempdir().unwrap();
        // `second` reads a file that `first` creates in the same run: it must be
        // planned against fresh state, and `when` sees `first`'s result.
        let yaml = r#"
- name: ordering
  tasks:
    - name: first
      command: { run: "echo made > {{ dir }}/made", creates: "{{ dir }}/made" }
      register: made
    - name: second
      command: { run: "echo again > {{ dir }}/again", creates: "{{ dir }}/made" }
    - name: only after a change
      copy: { dest: "{{ dir }}/flag", content: "x" }
      when: results.made.changed
    - name: skipped on the facts
      copy: { dest: "{{ dir }}/never", content: "x" }
      when: facts.cpus < 1
"#;
        let report = run(yaml, dir.path(), RunOptions::default(), &recording()).await;
        assert_eq!(
            statuses(&report),
            [
                ("first".into(), Status::Changed),
                ("second".into(), Status::Ok),
                ("only after a change".into(), Status::Changed),
                ("skipped on the facts".into(), Status::Skipped),
            ]
        );
        assert!(!dir.path().join("again").exists());
        let report = run(yaml, dir.path(), RunOptions::default(), &recording()).await;
        assert_eq!(
            report.tasks[2].status,
            Status::Skipped,
            "nothing changed this time"
        );
    }

    #[tokio::test]
    async fn arguments_that_need_facts_are_built_after_the_probe() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = r#"
- name: facts in args
  tasks:
    - name: per-arch file
      copy: { dest: "{{ dir }}/{{ facts.arch }}", content: "{{ facts.os_id }}" }
"#;
        let report = run(yaml, dir.path(), RunOptions::default(), &recording()).await;
        assert_eq!(report.recap.changed, 1, "{report:?}");
        let arch = std::process::Command::new("uname")
            .arg("-m")
            .output()
            .unwrap();
        let arch = String::from_utf8(arch.stdout).unwrap();
        assert!(dir.path().join(arch.trim()).exists());
        let report = run(yaml, dir.path(), RunOptions::default(), &recording()).await;
        assert_eq!(report.recap.ok, 1);
        assert_eq!(
            report.round_trips, 2,
            "the facts probe, then this task's own probe"
        );
    }

    #[tokio::test]
    async fn check_mode_does_not_fail_a_task_that_an_earlier_change_would_fix() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = r#"
- name: dependent
  tasks:
    - name: make the directory
      file: { path: "{{ dir }}/sub", state: directory }
    - name: a file in it must already exist
      file: { path: "{{ dir }}/sub", state: file }
"#;
        let options = RunOptions {
            check: true,
            ..Default::default()
        };
        let report = run(yaml, dir.path(), options, &recording()).await;
        assert_eq!(report.recap.failed, 0, "{report:?}");
        assert!(report.tasks[1].changes[0].starts_with("cannot plan before earlier changes"));
        // Without the earlier change the same error is a real failure.
        let yaml = yaml.replace("state: directory", "state: absent");
        let report = run(
            &yaml,
            dir.path(),
            RunOptions {
                check: true,
                ..Default::default()
            },
            &recording(),
        )
        .await;
        assert_eq!(report.recap.failed, 1);
    }

    #[tokio::test]
    async fn a_plan_error_runs_the_changes_queued_before_it_and_names_pending_handlers() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = r#"
- name: plan error
  tasks:
    - name: queued first
      copy: { dest: "{{ dir }}/a", content: "a" }
      notify: h
    - name: cannot plan
      file: { path: "{{ dir }}/missing", state: file }
    - name: never
      copy: { dest: "{{ dir }}/b", content: "b" }
  handlers:
    - name: h
      command: { run: "touch {{ dir }}/handled" }
"#;
        let report = run(yaml, dir.path(), RunOptions::default(), &recording()).await;
        assert_eq!(
            statuses(&report),
            [
                ("queued first".into(), Status::Changed),
                ("cannot plan".into(), Status::Failed)
            ]
        );
        assert!(dir.path().join("a").exists() && !dir.path().join("b").exists());
        assert_eq!(report.handlers_not_run, ["h"]);
    }

    #[tokio::test]
    async fn a_failing_handler_reports_the_handlers_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = r#"
- name: handler failure
  tasks:
    - name: t
      copy: { dest: "{{ dir }}/a", content: "a" }
      notify: [h1, h2]
  handlers:
    - name: h1
      command: { run: "exit 3" }
    - name: h2
      command: { run: "touch {{ dir }}/h2" }
"#;
        let report = run(yaml, dir.path(), RunOptions::default(), &recording()).await;
        assert_eq!(report.tasks.last().unwrap().status, Status::Failed);
        assert_eq!(report.handlers_not_run, ["h2"]);
        assert!(!dir.path().join("h2").exists());
    }

    #[tokio::test]
    async fn bad_arguments_fail_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = r#"
- name: bad args
  tasks:
    - name: fine
      copy: { dest: "{{ dir }}/a", content: "a" }
    - name: typo
      copy: { dest: "{{ dir }}/b", contnet: "b" }
"#;
        let t = recording();
        let report = run(yaml, dir.path(), RunOptions::default(), &t).await;
        assert_eq!(statuses(&report), [("typo".into(), Status::Failed)]);
        assert!(report.tasks[0]
            .error
            .as_deref()
            .unwrap()
            .contains("contnet"));
        assert_eq!(report.round_trips, 0, "nothing ran on the host");
        assert!(!dir.path().join("a").exists());
    }

    #[tokio::test]
    async fn a_change_to_a_directory_makes_paths_below_it_stale() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), "f").unwrap();
        let yaml = r#"
- name: parent and child
  tasks:
    - name: remove the directory
      file: { path: "{{ dir }}/d", state: absent }
    - name: recreate it
      file: { path: "{{ dir }}/d", state: directory }
    - name: the file in it
      copy: { dest: "{{ dir }}/d/f", content: "f" }
"#;
        let report = run(yaml, dir.path(), RunOptions::default(), &recording()).await;
        assert_eq!(report.recap.changed, 3, "{report:?}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("d/f")).unwrap(),
            "f"
        );
    }

    /// apt's probe has parts of its own (cache, packages): they come back
    /// whole, as the batch splits only on its own marker.
    #[tokio::test]
    async fn a_probe_of_several_parts_survives_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = r#"
- name: parts
  tasks:
    - name: bash is there
      apt: { packages: [bash], update_cache: false }
"#;
        let options = RunOptions {
            check: true,
            ..Default::default()
        };
        let t = recording();
        let report = run(yaml, dir.path(), options, &t).await;
        assert_eq!(
            statuses(&report),
            [("bash is there".into(), Status::Ok)],
            "{report:?}"
        );
        let scripts = t.scripts.lock().unwrap();
        let markers: BTreeSet<&str> = scripts[0]
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("'\\n@@vpsup-"))
            .collect();
        assert_eq!(
            markers.len(),
            2,
            "the batch's and the module's: {markers:?}"
        );
    }

    #[tokio::test]
    async fn tags_select_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = r#"
- name: tagged
  tasks:
    - name: a
      copy: { dest: "{{ dir }}/a", content: "a" }
      tags: [web]
    - name: b
      copy: { dest: "{{ dir }}/b", content: "b" }
"#;
        let options = RunOptions {
            tags: vec!["web".into()],
            ..Default::default()
        };
        let report = run(yaml, dir.path(), options, &recording()).await;
        assert_eq!(statuses(&report), [("a".into(), Status::Changed)]);
        assert!(!dir.path().join("b").exists());
    }
}
