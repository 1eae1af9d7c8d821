//! Zero-downtime deploys, the host's side (docs/zero-downtime.md): the
//! scripts that start a release's site services beside the running ones,
//! recreate what changed of the rest, let the old instances drain once
//! nginx serves the new ones, and stop them; each built here, beside the
//! parser of what it prints. The nginx switch itself is
//! `AppPaths::activate_script` (`remote::parse_switched` reads its time).
//!
//! A site's services run in a slot: the compose project
//! `vpsup_blue-<app>` or `vpsup_green-<app>`, on the slot's own loopback ports
//! (`ports::slot_ports`), joined to the app's networks (so they reach the
//! database by its service name) and volumes (by the names the app's
//! project gave them). The other services stay in the app's project
//! `vpsup-<app>`. A release starts in the slot nginx does not point at, so
//! whatever that slot holds (a failed deploy's leftovers) never serves.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::compose_cli::{Stack, Up};
use super::ports::{self, Target};
use super::remote::{self, AppPaths, ReleaseMeta};
use super::start;
use super::strategy::{self, Change, Replace, Role, Running, ServicePlan};
use crate::transport::script::quote;
use crate::transport::sections::Sections;
use crate::transport::{ExecRequest, Transport};

/// One of the two compose projects a site's services alternate between.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    Blue,
    Green,
}

impl Slot {
    pub fn name(self) -> &'static str {
        match self {
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }

    /// Where a release starts, beside what runs in `serving` (`None`: the
    /// site services run in the app's own project, as before zero-downtime
    /// deploys, or nowhere yet).
    pub fn next(serving: Option<Slot>) -> Slot {
        match serving {
            Some(Slot::Blue) => Slot::Green,
            Some(Slot::Green) | None => Slot::Blue,
        }
    }

    /// The slot's compose project: `vpsup_blue-<app>`. The `_` keeps it
    /// apart from every app's own project (`vpsup-<app>`), whatever the
    /// app names are (`shop-blue` is one).
    pub fn project(self, app: &str) -> String {
        format!("vpsup_{}-{app}", self.name())
    }

    pub fn both() -> [Slot; 2] {
        [Slot::Blue, Slot::Green]
    }

    pub fn parse(text: &str) -> Option<Slot> {
        match text.trim() {
            "blue" => Some(Slot::Blue),
            "green" => Some(Slot::Green),
            _ => None,
        }
    }

    /// The compose file (in the release) a slot runs with besides the
    /// project's: written when the release starts in it (a rollback may
    /// start a release in the other slot).
    pub fn override_file(self) -> String {
        format!(".vpsup/slot-{}.json", self.name())
    }
}

/// Where the services of the release that serves run, as the app's
/// `serving` file (`AppPaths::serving_file`) says: its slot services in the
/// serving slot's project, the others (all of them when no slot serves, or
/// the release has no slot services) in the app's project. What `logs` and
/// `exec` look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement<'a> {
    /// The serving slot and the release's services that run there.
    slot: Option<(Slot, &'a [String])>,
}

impl<'a> Placement<'a> {
    pub fn new(meta: &'a ReleaseMeta, serving: Option<Slot>) -> Placement<'a> {
        let services = meta.slots.as_ref().map_or(&[][..], |s| &s.services[..]);
        Placement {
            slot: serving
                .filter(|_| !services.is_empty())
                .map(|slot| (slot, services)),
        }
    }

    /// The slot that runs some of the services.
    pub fn slot(&self) -> Option<Slot> {
        self.slot.map(|(slot, _)| slot)
    }

    /// Where `service` runs: a slot, or `None`: the app's project.
    pub fn slot_of(&self, service: &str) -> Option<Slot> {
        self.slot
            .filter(|(_, services)| services.iter().any(|s| s == service))
            .map(|(slot, _)| slot)
    }

    /// `services` (every service when empty) by where they run: the app's
    /// project (`None`) first, then the slot, each with those of them that
    /// run there (empty: all of its own); a place none of them runs in is
    /// left out.
    pub fn split(&self, services: &[String]) -> Vec<(Option<Slot>, Vec<String>)> {
        let places = std::iter::once(None).chain(self.slot().map(Some));
        if services.is_empty() {
            return places.map(|place| (place, Vec::new())).collect();
        }
        places
            .map(|place| {
                let there: Vec<String> = services
                    .iter()
                    .filter(|s| self.slot_of(s) == place)
                    .cloned()
                    .collect();
                (place, there)
            })
            .filter(|(_, there)| !there.is_empty())
            .collect()
    }
}

/// The slot's compose override: each target published on the slot's
/// loopback port, and the app's own networks and volumes used by their names
/// in the app's project `app_project` (`volume_prefix`: the volumes'
/// prefix, the app's bare name for volumes an earlier vpsup made) instead of
/// new ones of the slot's: `default` when `default_shared`, and `networks`
/// and `volumes`.
pub fn slot_override(
    app_project: &str,
    default_shared: bool,
    networks: &[String],
    volumes: &[String],
    volume_prefix: &str,
    ports: &BTreeMap<Target, u16>,
) -> Value {
    let mut nets = serde_json::Map::new();
    let default = default_shared.then_some("default");
    for net in default
        .into_iter()
        .chain(networks.iter().map(String::as_str))
    {
        nets.insert(
            net.to_string(),
            json!({"name": format!("{app_project}_{net}"), "external": true}),
        );
    }
    let vols: serde_json::Map<String, Value> = volumes
        .iter()
        .map(|v| {
            (
                v.clone(),
                json!({"name": format!("{volume_prefix}_{v}"), "external": true}),
            )
        })
        .collect();
    let mut doc = ports::compose_override(ports);
    if !nets.is_empty() {
        doc["networks"] = Value::Object(nets);
    }
    if !vols.is_empty() {
        doc["volumes"] = Value::Object(vols);
    }
    doc
}

/// The health gate of a slot (as root, `start::parse_gate` reads it): what
/// the slot holds removed (never what serves: see the module's header),
/// `services` started there (the app's project runs what they depend on),
/// then each `(path, port)` of `health` on the slot's ports.
pub fn slot_gate_script(
    sections: &Sections,
    stack: &Stack<'_>,
    services: &[String],
    volumes: &[(String, String)],
    health: &[(String, u16)],
    timeout: u32,
) -> String {
    let mut before = format!("{} >/dev/null 2>&1 || true\n", stack.down());
    // The app's volumes the slot mounts (`external` in its override), made
    // as compose makes them if the app's project has not yet.
    for (project, volume) in volumes {
        let name = quote(&format!("{project}_{volume}"));
        before.push_str(&format!(
            "docker volume inspect {name} >/dev/null 2>&1 || docker volume create --label com.docker.compose.project={project} --label com.docker.compose.volume={volume} {name} >/dev/null\n",
            project = quote(project),
            volume = quote(volume),
        ));
    }
    start::gate(
        sections,
        &before,
        &stack.up_services(services, Up::Recreate, timeout),
        stack,
        health,
        timeout,
    )
}

/// The app's project's part (as root, `start::parse_gate` reads it): after
/// `before`, the services the plan left `unchanged` started if they are not
/// running (never recreated), then the `changed` ones built and recreated
/// (and services gone from the compose files removed), then each `(path,
/// port)` of `health` (the sites of services recreated in place).
pub fn in_place_script(
    sections: &Sections,
    before: &str,
    stack: &Stack<'_>,
    unchanged: &[String],
    changed: &[String],
    health: &[(String, u16)],
    timeout: u32,
) -> String {
    let mut up = Vec::new();
    if !unchanged.is_empty() {
        up.push(stack.up_services(unchanged, Up::KeepRunning, timeout));
    }
    if !changed.is_empty() {
        up.push(stack.up_services(changed, Up::RecreateRemovingOrphans, timeout));
    }
    if up.is_empty() {
        return before.to_string();
    }
    start::gate(
        sections,
        before,
        &format!("{{ {}; }}", up.join(" && ")),
        stack,
        health,
        timeout,
    )
}

/// What drains: the old instances each site's nginx locations reached, by
/// their loopback ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draining {
    pub domain: String,
    pub ports: Vec<u16>,
}

/// Waits, after nginx switched, until no connection reaches the old ports
/// of each site (in-flight requests answered, WebSockets closed), or until
/// `drain_secs` after the start; prints `drained DOMAIN MS OPEN` per site
/// (`OPEN`: connections still open at the end, cut when the old instances
/// stop). nginx's upstream connections close with each response (vpsup's
/// site files keep none alive), so what stays open is work in progress.
pub fn drain_script(sites: &[Draining], drain_secs: u64) -> String {
    // nginx's old workers take a moment after the reload's signal to stop
    // accepting: the first count comes half a second after the switch.
    let mut script = format!(
        "start=$(date +%s%N)\ndeadline=$(( start + {drain_secs} * 1000000000 ))\nsleep 0.5\n"
    );
    for site in sites {
        let domain = quote(&site.domain);
        if site.ports.is_empty() {
            script.push_str(&format!("echo {DRAINED} {domain} 0 0\n"));
            continue;
        }
        let filter = site
            .ports
            .iter()
            .map(|p| format!("dport = :{p}"))
            .collect::<Vec<_>>()
            .join(" or ");
        script.push_str(&format!(
            r#"while :; do
  n=$(ss -Htn state established '( {filter} )' | wc -l)
  now=$(date +%s%N)
  if [ "$n" -eq 0 ] || [ "$now" -ge "$deadline" ]; then echo {DRAINED} {domain} $(( (now - start) / 1000000 )) "$n"; break; fi
  sleep 0.1
done
"#
        ));
    }
    script
}

const DRAINED: &str = "drained";

/// One site's drain, as `drain_script` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drained {
    pub domain: String,
    pub ms: u64,
    /// Connections still open when the drain period ended.
    pub open: u64,
}

pub fn parse_drain(stdout: &str) -> Vec<Drained> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != DRAINED {
                return None;
            }
            Some(Drained {
                domain: words.next()?.to_string(),
                ms: words.next()?.parse().ok()?,
                open: words.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// Where the old instances of a release's site services run.
pub enum Old<'a> {
    /// A slot: its whole project goes.
    Slot(Stack<'a>),
    /// The app's own project (a release deployed before zero-downtime
    /// deploys): only these site services go.
    InPlace(Stack<'a>, &'a [String]),
}

/// Stops the old instances (SIGTERM first: each finishes what it does
/// within its `stop_grace_period`) and removes them; once drained.
pub fn stop_old_script(old: &Old<'_>) -> String {
    match old {
        // A slot holds only vpsup's site services: any leftover goes too.
        Old::Slot(stack) => format!("{} --remove-orphans\n", stack.down()),
        Old::InPlace(stack, services) => format!("{}\n", stack.remove(services)),
    }
}

/// The services of a release that run in the app's project, against how
/// the running release ran them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InPlace {
    /// Left running (started only if stopped).
    pub unchanged: Vec<String>,
    /// Built and recreated (or started: new), and why.
    pub recreated: Vec<(String, Change)>,
}

impl InPlace {
    /// `meta`'s services outside its slots, against `old` (how the running
    /// release ran them; `None`: nothing runs).
    pub fn split(meta: &ReleaseMeta, old: Option<&ReleaseMeta>) -> InPlace {
        let switched = meta.slots.as_ref().map_or(&[][..], |s| &s.services[..]);
        let running = match old {
            None => Running::Nothing,
            Some(old) if old.fingerprints.is_empty() => Running::Unrecorded,
            Some(old) => Running::Recorded(&old.fingerprints),
        };
        let mut split = InPlace::default();
        for (name, fingerprint) in &meta.fingerprints {
            if switched.contains(name) {
                continue;
            }
            match strategy::in_place(name, fingerprint, running) {
                Replace::Recreate(change) => split.recreated.push((name.clone(), change)),
                _ => split.unchanged.push(name.clone()),
            }
        }
        split
    }

    pub fn recreated_names(&self) -> Vec<String> {
        self.recreated.iter().map(|(n, _)| n.clone()).collect()
    }

    /// What the deploy says beforehand of the services it restarts.
    pub fn notes(&self) -> Vec<String> {
        self.recreated
            .iter()
            .filter(|(_, change)| *change != Change::New)
            .map(|(service, change)| {
                ServicePlan {
                    service: service.clone(),
                    role: Role::Stateful,
                    replace: Replace::Recreate(*change),
                }
                .note()
            })
            .collect()
    }
}

/// A release to start beside what serves.
pub struct Launch<'a> {
    pub paths: &'a AppPaths,
    pub id: &'a str,
    pub meta: &'a ReleaseMeta,
    /// Where its site services start (`None`: in the app's project).
    pub slot: Option<Slot>,
    pub split: InPlace,
    pub timeout: u32,
    /// A failure removes its directory (a deploy's new release; never a
    /// rollback's target).
    pub forget: bool,
}

/// Where a launch failed: its logs are there.
#[derive(Debug)]
pub struct LaunchFailed {
    pub why: start::Unhealthy,
    pub in_slot: bool,
}

/// A stack of release `dir` (how `meta` runs it) as slot `slot`'s project:
/// its compose files plus the slot's override.
pub(super) fn slot_files(meta: &ReleaseMeta, slot: Slot) -> Vec<String> {
    let mut files = meta.compose_files.clone();
    files.push(slot.override_file());
    files
}

pub(super) fn slot_stack<'a>(
    app_stack: &Stack<'a>,
    project: &'a str,
    files: &'a [String],
) -> Stack<'a> {
    Stack {
        project,
        files,
        ..*app_stack
    }
}

impl Launch<'_> {
    /// A release that recorded no fingerprints (an earlier vpsup made it,
    /// a rollback starts it): its stack starts as a whole, as it was.
    fn whole(&self) -> bool {
        self.meta.fingerprints.is_empty()
    }

    /// The app's project's part, then the slot's gate: the release healthy
    /// beside what serves (nothing serving changed), or where it failed.
    pub async fn start(&self, transport: &dyn Transport) -> Result<(), LaunchFailed> {
        let dir = self.paths.release(self.id);
        let secrets = self.paths.secrets();
        let app = start::stack_for(&self.paths.app, &dir, self.meta, &secrets);
        let run = |script: String, in_slot: bool| async move {
            let sections_script = script;
            let out = transport
                .exec(ExecRequest::piped(sections_script).become_root(true))
                .await;
            (out, in_slot)
        };
        // The app's containers under its other (bare) project name would
        // hold its ports: retired first, as a whole-stack start does.
        let sections = Sections::random();
        let in_place = if self.whole() {
            start::gate_script(&sections, self.paths, &app, &self.meta.health, self.timeout)
        } else {
            in_place_script(
                &sections,
                &self.paths.retire_script(&self.paths.app),
                &app,
                &self.split.unchanged,
                &self.split.recreated_names(),
                &self.meta.health,
                self.timeout,
            )
        };
        let failed =
            |sections: &Sections,
             ports: &BTreeMap<Target, u16>,
             out: Result<crate::transport::ExecOutput, crate::transport::TransportError>,
             in_slot| match out {
                Ok(out) if out.success() => Ok(()),
                Ok(out) => Err(LaunchFailed {
                    why: start::parse_gate(sections, &out.stdout_str(), &out.stderr_tail(8), ports),
                    in_slot,
                }),
                Err(e) => Err(LaunchFailed {
                    why: start::Unhealthy {
                        text: e.to_string(),
                        services: Vec::new(),
                    },
                    in_slot,
                }),
            };
        let (out, _) = run(in_place, false).await;
        failed(&sections, &remote::port_map(&self.meta.ports), out, false)?;
        let (Some(slot), Some(slots)) = (self.slot, self.meta.slots.as_ref()) else {
            return Ok(());
        };
        let project = slot.project(&self.paths.app);
        let files = slot_files(self.meta, slot);
        let stack = slot_stack(&app, &project, &files);
        let sections = Sections::random();
        let health = self.meta.slot(slot).map_or(&[][..], |s| &s.health[..]);
        let gate = slot_gate_script(
            &sections,
            &stack,
            &slots.services,
            &slots.volumes,
            health,
            self.timeout,
        );
        let (out, _) = run(gate, true).await;
        let ports = self.meta.slot(slot).map_or(&[][..], |s| &s.ports[..]);
        failed(&sections, &remote::port_map(ports), out, true)
    }

    /// After `failed`: the failing services' last log lines, the slot's new
    /// instances removed, the services recreated in place started again as
    /// `previous` (`(id, how it runs)`: the release `current` names) ran
    /// them, and the failed release's directory removed; for a first
    /// release, its containers stopped. The logs, and whether that worked.
    pub async fn recover(
        &self,
        transport: &dyn Transport,
        failed: &LaunchFailed,
        previous: Option<(&str, Option<&ReleaseMeta>)>,
    ) -> (String, Result<(), String>) {
        let sections = Sections::random();
        let script = self.recovery_script(&sections, failed, previous);
        start::run_recovery(transport, &sections, script).await
    }

    /// `recover`'s script (`start::recovery_script`).
    pub fn recovery_script(
        &self,
        sections: &Sections,
        failed: &LaunchFailed,
        previous: Option<(&str, Option<&ReleaseMeta>)>,
    ) -> (String, Result<(), String>) {
        let dir = self.paths.release(self.id);
        let secrets = self.paths.secrets();
        let app = start::stack_for(&self.paths.app, &dir, self.meta, &secrets);
        let slot_project = self.slot.map(|s| s.project(&self.paths.app));
        let files = self
            .slot
            .map(|s| slot_files(self.meta, s))
            .unwrap_or_default();
        let slot = slot_project
            .as_deref()
            .map(|project| slot_stack(&app, project, &files));
        // What must go whatever else fails (`;`): the new slot, when it was
        // started; then the restores, each only if the one before worked.
        let mut first = String::new();
        if let (Some(slot), true) = (&slot, failed.in_slot) {
            first.push_str(&format!("{} 2>&1;\n", slot.down()));
        }
        let mut steps = Vec::new();
        let previous_dir = previous.map(|(id, meta)| (self.paths.release(id), meta));
        let restart = match &previous_dir {
            None => {
                steps.push(app.down());
                Ok(format!("{first}{}", steps.join(" &&\n")))
            }
            Some((dir, Some(old))) => {
                let old_stack = start::stack_for(&self.paths.app, dir, old, &secrets);
                // Started under another project than the previous release's
                // (an earlier vpsup's bare `<app>`): all of it goes, or two
                // databases would share the previous release's volumes.
                let other_project = app.project != old_stack.project;
                if other_project {
                    first.push_str(&format!("{} 2>&1;\n", app.down()));
                }
                let recreated = self.split.recreated_names();
                match &old.slots {
                    // The previous release ran every service here: as a whole.
                    None if self.whole() || other_project || !recreated.is_empty() => {
                        steps.push(old_stack.up(self.timeout))
                    }
                    None => {}
                    Some(old_slots) => {
                        let ran_here = |s: &String| {
                            old.fingerprints.contains_key(s) && !old_slots.services.contains(s)
                        };
                        // A whole-stack start (or one under another project)
                        // touched all of them, and started the slot's
                        // services in the app's project too.
                        let (theirs, gone): (Vec<String>, Vec<String>) =
                            if self.whole() || other_project {
                                (
                                    old.fingerprints.keys().filter(|s| ran_here(s)).cloned().collect(),
                                    old_slots.services.clone(),
                                )
                            } else {
                                recreated.into_iter().partition(ran_here)
                            };
                        if !gone.is_empty() && !other_project {
                            steps.push(app.remove(&gone));
                        }
                        if !theirs.is_empty() {
                            steps.push(old_stack.up_services(&theirs, Up::Recreate, self.timeout));
                        }
                    }
                }
                steps.push("true".to_string());
                Ok(format!("{first}{}", steps.join(" &&\n")))
            }
            Some((dir, None)) => Err(format!(
                "how it runs ({dir}/{}) could not be read, so the services recreated in place were left as they are",
                remote::META_FILE
            )),
        };
        let logs_from = if failed.in_slot {
            slot.as_ref().unwrap_or(&app)
        } else {
            &app
        };
        let forget = match previous {
            Some((id, _)) if id == self.id => None,
            _ if !self.forget => None,
            _ => Some(dir.as_str()),
        };
        start::recovery_script(sections, logs_from, &failed.why.services, restart, forget)
    }
}

/// What ran before a launch, to retire once nginx serves the new one.
pub struct Retiring<'a> {
    pub paths: &'a AppPaths,
    /// The release that served, and how it ran.
    pub id: &'a str,
    pub meta: &'a ReleaseMeta,
    /// Where its site services ran (`None`: in the app's project).
    pub serving: Option<Slot>,
}

impl Retiring<'_> {
    /// The old instances of `new`'s site services: drained (until no
    /// connection reaches their ports, or `drain_secs`), then stopped. Each
    /// site's drain; `Err`: what failed (the new release serves anyway).
    pub async fn retire(
        &self,
        transport: &dyn Transport,
        new: &Launch<'_>,
        drain_secs: u64,
    ) -> Result<Vec<Drained>, String> {
        let Some(script) = self.retire_script(new, drain_secs) else {
            return Ok(Vec::new());
        };
        let out = transport
            .exec(ExecRequest::piped(script).become_root(true))
            .await
            .map_err(|e| e.to_string())?;
        let drained = parse_drain(&out.stdout_str());
        if out.success() {
            Ok(drained)
        } else {
            Err(format!(
                "stopping the old instances failed: {}",
                out.stderr_tail(6)
            ))
        }
    }

    /// `retire`'s script (the drain, then the stops); `None`: nothing to retire.
    pub fn retire_script(&self, new: &Launch<'_>, drain_secs: u64) -> Option<String> {
        let dir = self.paths.release(self.id);
        let secrets = self.paths.secrets();
        let app = start::stack_for(&self.paths.app, &dir, self.meta, &secrets);
        let slot_project = self.serving.map(|s| s.project(&self.paths.app));
        let files = self
            .serving
            .map(|s| slot_files(self.meta, s))
            .unwrap_or_default();
        let new_services = new.meta.slots.as_ref().map_or(&[][..], |s| &s.services[..]);
        let old_services = self
            .meta
            .slots
            .as_ref()
            .map_or(&[][..], |s| &s.services[..]);
        let mut old = Vec::new();
        let mut sites: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        // The slot that served, unless the release starts there again.
        if let (Some(serving), Some(project)) = (self.serving, slot_project.as_deref()) {
            if new.slot != Some(serving) {
                old.push(Old::Slot(slot_stack(&app, project, &files)));
                for (domain, ports) in self.meta.slot(serving).map_or(&[][..], |m| &m.sites[..]) {
                    sites.entry(domain.clone()).or_default().extend(ports);
                }
            }
        }
        // Services that ran in the app's project and switch blue/green now:
        // only they go from there, drained on the ports its sites used.
        let moved: Vec<String> = new_services
            .iter()
            .filter(|s| !old_services.contains(s))
            .filter(|s| {
                self.meta.fingerprints.is_empty() || self.meta.fingerprints.contains_key(*s)
            })
            .cloned()
            .collect();
        if !moved.is_empty() {
            let ports: Vec<u16> = self.meta.health.iter().map(|(_, p)| *p).collect();
            let next = new.slot.and_then(|s| new.meta.slot(s));
            for (domain, _) in next.map_or(&[][..], |m| &m.sites[..]) {
                sites.entry(domain.clone()).or_default().extend(&ports);
            }
            old.push(Old::InPlace(app, &moved));
        }
        if old.is_empty() {
            return None;
        }
        let sites: Vec<Draining> = sites
            .into_iter()
            .map(|(domain, mut ports)| {
                ports.sort_unstable();
                ports.dedup();
                Draining { domain, ports }
            })
            .collect();
        let stop: String = old.iter().map(stop_old_script).collect();
        // A dropped connection during the drain must not stop the stop.
        Some(format!(
            "trap '' HUP\n{}{stop}",
            drain_script(&sites, drain_secs)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::remote::testing::meta_with;
    use crate::transport::script::testing::{sh_ok, write_executable};

    fn stack<'a>(project: &'a str, files: &'a [String]) -> Stack<'a> {
        Stack {
            project,
            dir: "/srv/vpsup/shop/releases/r2",
            files,
            env_files: &[],
            secrets_env: None,
            dot_env: false,
        }
    }

    #[test]
    fn slots_alternate_and_name_their_projects() {
        assert_eq!(Slot::next(None), Slot::Blue);
        assert_eq!(Slot::next(Some(Slot::Blue)), Slot::Green);
        assert_eq!(Slot::next(Some(Slot::Green)), Slot::Blue);
        assert_eq!(Slot::Green.project("shop"), "vpsup_green-shop");
        assert_eq!(Slot::parse("blue\n"), Some(Slot::Blue));
        assert_eq!(Slot::parse("red"), None);
        assert_eq!(Slot::Blue.override_file(), ".vpsup/slot-blue.json");
    }

    /// The site services are found in the serving slot, the rest in the
    /// app's project; without a serving slot, or a release without slot
    /// services (an earlier vpsup's, or one a rollback put back), all of
    /// them in the app's project.
    #[test]
    fn services_are_placed_where_the_serving_file_says() {
        let meta = meta_with(&[("db", "d"), ("web", "w"), ("api", "a")], &["web", "api"]);
        let names = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let green = Placement::new(&meta, Some(Slot::Green));
        assert_eq!(green.slot(), Some(Slot::Green));
        assert_eq!(green.slot_of("web"), Some(Slot::Green));
        assert_eq!(green.slot_of("db"), None);
        assert_eq!(
            green.split(&[]),
            [(None, vec![]), (Some(Slot::Green), vec![])]
        );
        assert_eq!(
            green.split(&names(&["web", "db", "api"])),
            [
                (None, names(&["db"])),
                (Some(Slot::Green), names(&["web", "api"]))
            ]
        );
        assert_eq!(
            green.split(&names(&["web"])),
            [(Some(Slot::Green), names(&["web"]))]
        );
        assert_eq!(green.split(&names(&["db"])), [(None, names(&["db"]))]);

        let none = Placement::new(&meta, None);
        assert_eq!(none.slot_of("web"), None);
        assert_eq!(none.split(&[]), [(None, vec![])]);
        assert_eq!(
            none.split(&names(&["web", "db"])),
            [(None, names(&["web", "db"]))]
        );
        let earlier = meta_with(&[], &[]);
        let stale = Placement::new(&earlier, Some(Slot::Blue));
        assert_eq!(stale.slot(), None);
        assert_eq!(stale.slot_of("web"), None);
    }

    /// The slot joins the app's networks and volumes instead of making its
    /// own, and publishes on loopback only.
    #[test]
    fn the_slot_override_joins_the_apps_networks_and_volumes() {
        let ports = BTreeMap::from([(("web".to_string(), 80), 23456)]);
        let doc = slot_override(
            "vpsup-shop",
            true,
            &["backend".to_string()],
            &["assets".to_string()],
            "vpsup-shop",
            &ports,
        );
        assert_eq!(
            doc,
            json!({
                "services": {"web": {"ports": ["127.0.0.1:23456:80"]}},
                "networks": {
                    "default": {"name": "vpsup-shop_default", "external": true},
                    "backend": {"name": "vpsup-shop_backend", "external": true}
                },
                "volumes": {"assets": {"name": "vpsup-shop_assets", "external": true}}
            })
        );
        assert!(super::super::port_guard::exposures(&doc)
            .unwrap()
            .is_empty());
        let none = slot_override("vpsup-shop", false, &[], &[], "shop", &ports);
        assert!(none.get("volumes").is_none() && none.get("networks").is_none());
    }

    /// The slot's gate, run with a stand-in `docker`: the slot emptied
    /// first, only the site services started; a failed start reads as the
    /// gate's failure.
    #[test]
    fn the_slot_gate_empties_the_slot_and_starts_only_the_site_services() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("docker.log");
        let status = dir.path().join("status");
        std::fs::write(&status, "0").unwrap();
        write_executable(
            &dir.path().join("docker"),
            &format!(
                "#!/bin/sh\necho \"$*\" >> {log}\ncase \"$*\" in *' ps '*) printf 'web\\texited\\t\\n' ;; 'volume inspect'*) exit 1 ;; esac\ncase \"$*\" in *' up '*) exit $(cat {status}) ;; esac\n",
                log = log.display(),
                status = status.display()
            ),
        );
        let files = [
            "compose.yml".to_string(),
            ".vpsup/slot-green.json".to_string(),
        ];
        let s = stack("vpsup_green-shop", &files);
        let sections = Sections::with_nonce(7);
        let volumes = [("vpsup-shop".to_string(), "assets".to_string())];
        let script = slot_gate_script(&sections, &s, &["web".to_string()], &volumes, &[], 30);
        let with_docker = format!("PATH={}:$PATH\n{script}", dir.path().display());
        sh_ok(&with_docker);
        let calls = std::fs::read_to_string(&log).unwrap();
        let calls: Vec<&str> = calls.lines().collect();
        assert_eq!(calls.len(), 4, "{calls:?}");
        assert!(calls[0].contains("-p vpsup_green-shop") && calls[0].ends_with(" down"));
        // The app's volume, missing, made as compose would.
        assert_eq!(calls[1], "volume inspect vpsup-shop_assets");
        assert_eq!(
            calls[2],
            "volume create --label com.docker.compose.project=vpsup-shop --label com.docker.compose.volume=assets vpsup-shop_assets"
        );
        assert!(calls[3].ends_with(" up -d --build --no-deps --wait --wait-timeout 30 web"));

        std::fs::write(&status, "1").unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", &with_docker])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let why = start::parse_gate(
            &sections,
            &String::from_utf8_lossy(&out.stdout),
            "web exited (1)",
            &BTreeMap::new(),
        );
        assert_eq!(why.services, ["web"]);
        assert_eq!(
            why.text,
            "web: exited; docker compose up said: web exited (1)"
        );
    }

    #[test]
    fn in_place_starts_unchanged_services_without_recreating_them() {
        let files = ["compose.yml".to_string()];
        let s = stack("vpsup-shop", &files);
        let sections = Sections::with_nonce(1);
        let script = in_place_script(
            &sections,
            "retire\n",
            &s,
            &["redis".into()],
            &["db".into()],
            &[],
            60,
        );
        let base = s.base();
        assert!(script.starts_with("retire\n"), "{script}");
        assert!(script.contains(&format!(
            "if ! {{ {base} up -d --no-recreate --no-deps --wait --wait-timeout 60 redis && {base} up -d --build --remove-orphans --no-deps --wait --wait-timeout 60 db; }} >&2; then"
        )), "{script}");
        assert_eq!(
            in_place_script(&sections, "retire\n", &s, &[], &[], &[], 60),
            "retire\n"
        );
    }

    #[test]
    fn old_instances_go_whole_slot_or_only_the_site_services() {
        let files = ["compose.yml".to_string()];
        let slot = stack("vpsup_blue-shop", &files);
        assert_eq!(
            stop_old_script(&Old::Slot(stack("vpsup_blue-shop", &files))),
            format!("{} --remove-orphans\n", slot.down())
        );
        let app = stack("vpsup-shop", &files);
        let services = ["web".to_string()];
        assert_eq!(
            stop_old_script(&Old::InPlace(stack("vpsup-shop", &files), &services)),
            format!("{} rm -s -f web\n", app.base())
        );
    }

    /// The drain, run for real against a socket on this machine: it ends
    /// when the last connection to the old port closes, or at the deadline
    /// with the connections still open counted.
    #[test]
    fn the_drain_waits_for_open_connections_up_to_its_period() {
        use std::net::{TcpListener, TcpStream};
        use std::time::{Duration, Instant};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let run = |secs: u64| {
            let script = drain_script(
                &[
                    Draining {
                        domain: "shop.example.com".into(),
                        ports: vec![port],
                    },
                    Draining {
                        domain: "new.example.com".into(),
                        ports: vec![],
                    },
                ],
                secs,
            );
            parse_drain(&String::from_utf8_lossy(&sh_ok(&script).stdout))
        };
        // Nothing open: done at once.
        let idle = run(5);
        assert_eq!(idle[0].open, 0);
        assert!(idle[0].ms < 1000, "{idle:?}");
        assert_eq!(
            idle[1],
            Drained {
                domain: "new.example.com".into(),
                ms: 0,
                open: 0
            }
        );

        // A request in flight that ends after ~600 ms.
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server, _) = listener.accept().unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(600));
            drop(client);
            drop(server);
        });
        let started = Instant::now();
        let drained = run(10);
        closer.join().unwrap();
        assert_eq!(drained[0].open, 0, "{drained:?}");
        assert!(
            drained[0].ms >= 400 && started.elapsed() < Duration::from_secs(5),
            "{drained:?}"
        );

        // A WebSocket-like connection that outlives the drain period.
        let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let cut = run(1);
        assert_eq!(cut[0].open, 1, "{cut:?}");
        assert!(cut[0].ms >= 1000, "{cut:?}");
    }

    #[test]
    fn drain_lines_parse_and_others_are_skipped() {
        assert_eq!(
            parse_drain("noise\ndrained a.example.com 1500 2\ndrained b 3\n"),
            [Drained {
                domain: "a.example.com".into(),
                ms: 1500,
                open: 2
            }]
        );
    }

    /// What runs in the app's project is left running unless its
    /// fingerprint changed; the slot's services are never part of it.
    #[test]
    fn in_place_services_restart_only_when_their_definition_changed() {
        let new = meta_with(
            &[
                ("db", "d1"),
                ("redis", "r2"),
                ("web", "w2"),
                ("worker", "k1"),
            ],
            &["web"],
        );
        let old = meta_with(&[("db", "d1"), ("redis", "r1"), ("web", "w1")], &["web"]);
        let split = InPlace::split(&new, Some(&old));
        assert_eq!(split.unchanged, ["db"]);
        assert_eq!(
            split.recreated,
            [
                ("redis".to_string(), Change::Changed),
                ("worker".to_string(), Change::New)
            ]
        );
        assert_eq!(
            split.notes(),
            ["redis will restart: its clients see a short interruption"]
        );
        // A release an earlier vpsup made recorded nothing: any may restart.
        let earlier = meta_with(&[], &[]);
        let split = InPlace::split(&new, Some(&earlier));
        assert!(split.unchanged.is_empty());
        assert_eq!(split.recreated.len(), 3);
        assert!(split.notes()[0].starts_with("db may restart"));
        // A first deploy starts everything and says nothing.
        let split = InPlace::split(&new, None);
        assert_eq!(split.recreated.len(), 3);
        assert!(split.notes().is_empty());
    }

    /// The recovery after a failed launch, run with a stand-in `docker`
    /// that logs its calls: the new slot goes, the services recreated in
    /// place run as the previous release ran them (one new in this release
    /// is removed), the failed release's directory goes once that worked;
    /// a first release's containers stop; an unreadable previous release
    /// leaves them as they are.
    #[test]
    fn a_failed_launch_puts_back_what_ran() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("docker.log");
        let up_status = dir.path().join("status");
        std::fs::write(&up_status, "0").unwrap();
        write_executable(
            &dir.path().join("docker"),
            &format!(
                "#!/bin/sh\necho \"$*\" >> {log}\ncase \"$*\" in *' logs '*) echo boom ;; *' up '*) echo 'no such image' >&2; exit $(cat {status}) ;; esac\n",
                log = log.display(),
                status = up_status.display()
            ),
        );
        let paths = AppPaths {
            dir: dir.path().join("shop").display().to_string(),
            ..AppPaths::new("shop")
        };
        let failed_dir = paths.release("r2");
        let new = meta_with(&[("db", "d2"), ("queue", "q1"), ("web", "w2")], &["web"]);
        let old = meta_with(&[("db", "d1"), ("web", "w1")], &["web"]);
        let launch = Launch {
            paths: &paths,
            id: "r2",
            meta: &new,
            slot: Some(Slot::Green),
            split: InPlace::split(&new, Some(&old)),
            timeout: 5,
            forget: true,
        };
        let failed = LaunchFailed {
            why: start::Unhealthy {
                text: "web answers /health with HTTP 500".into(),
                services: vec!["web".into()],
            },
            in_slot: true,
        };
        let run = |script: &str| {
            std::fs::write(&log, "").unwrap();
            let out = std::process::Command::new("sh")
                .args([
                    "-c",
                    &format!("PATH={}:$PATH\n{script}", dir.path().display()),
                ])
                .output()
                .unwrap();
            let calls = std::fs::read_to_string(&log).unwrap();
            (out, calls)
        };
        let s = Sections::with_nonce(4);
        for (status, restored) in [("1", Err("no such image".to_string())), ("0", Ok(()))] {
            std::fs::create_dir_all(&failed_dir).unwrap();
            std::fs::write(&up_status, status).unwrap();
            let (script, not_started) =
                launch.recovery_script(&s, &failed, Some(("r1", Some(&old))));
            let (out, calls) = run(&script);
            let (logs, outcome) =
                start::parse_restore(&s, &String::from_utf8_lossy(&out.stdout), "", not_started);
            assert_eq!(logs, "--- web (last 30 lines)\nboom\n");
            assert_eq!(outcome, restored);
            let calls: Vec<&str> = calls.lines().collect();
            assert!(
                calls[0].contains("-p vpsup_green-shop")
                    && calls[0].ends_with(" logs --no-color --tail 30 web"),
                "{calls:?}"
            );
            assert!(
                calls[1].contains("-p vpsup_green-shop") && calls[1].ends_with(" down"),
                "{calls:?}"
            );
            assert!(
                calls[2].contains("-p vpsup-shop")
                    && calls[2].contains("/releases/r2/")
                    && calls[2].ends_with(" rm -s -f queue"),
                "{calls:?}"
            );
            assert!(
                calls[3].contains("/releases/r1/")
                    && calls[3].ends_with(" up -d --build --no-deps --wait --wait-timeout 5 db"),
                "{calls:?}"
            );
            assert_eq!(std::path::Path::new(&failed_dir).exists(), status == "1");
        }

        // A first release: its slot and its project stop.
        let first = Launch {
            split: InPlace::split(&new, None),
            ..launch
        };
        let (script, not_started) = first.recovery_script(&s, &failed, None);
        let (_, calls) = run(&script);
        assert_eq!(not_started, Ok(()));
        let calls: Vec<&str> = calls.lines().collect();
        assert!(
            calls[1].contains("-p vpsup_green-shop") && calls[1].ends_with(" down"),
            "{calls:?}"
        );
        assert!(
            calls[2].contains("-p vpsup-shop ") && calls[2].ends_with(" down"),
            "{calls:?}"
        );

        // The previous release's release.json did not read: only the logs.
        let (script, not_started) = first.recovery_script(&s, &failed, Some(("r1", None)));
        assert!(
            !script.contains(" up ") && !script.contains(" down"),
            "{script}"
        );
        assert!(not_started.unwrap_err().starts_with("how it runs ("));
    }

    /// What goes once nginx serves the new release: the slot that served
    /// (drained on its sites' ports), and services that ran in the app's
    /// project before switching blue/green (drained on the ports its sites
    /// used); nothing when the release starts in place as before.
    #[test]
    fn the_old_instances_retired_are_those_that_served() {
        let paths = AppPaths::new("shop");
        let mut new = meta_with(
            &[("db", "d1"), ("web", "w2"), ("api", "a1")],
            &["web", "api"],
        );
        new.slots.as_mut().unwrap().green.sites =
            vec![("shop.example.com".into(), vec![24001, 24002])];
        let mut old = meta_with(&[("db", "d1"), ("web", "w1"), ("api", "a1")], &["web"]);
        old.slots.as_mut().unwrap().blue.sites = vec![("shop.example.com".into(), vec![23001])];
        old.health = vec![("/".into(), 21000)];
        let launch = Launch {
            paths: &paths,
            id: "r2",
            meta: &new,
            slot: Some(Slot::Green),
            split: InPlace::default(),
            timeout: 5,
            forget: true,
        };
        let retiring = Retiring {
            paths: &paths,
            id: "r1",
            meta: &old,
            serving: Some(Slot::Blue),
        };
        let script = retiring.retire_script(&launch, 10).unwrap();
        // api ran in place (it was not blue/green in r1): it goes from there.
        assert!(
            script.contains("( dport = :21000 or dport = :23001 )"),
            "{script}"
        );
        let lines: Vec<&str> = script.lines().rev().take(2).collect();
        assert!(
            lines[0].contains("-p vpsup-shop ")
                && lines[0].contains("/releases/r1/")
                && lines[0].ends_with(" rm -s -f api"),
            "{script}"
        );
        assert!(
            lines[1].contains("-p vpsup_blue-shop ")
                && lines[1].contains("/releases/r1/.vpsup/slot-blue.json")
                && lines[1].ends_with(" down --remove-orphans"),
            "{script}"
        );

        // Back to running in place: the slot goes, nothing else.
        let in_place = meta_with(&[("db", "d1"), ("web", "w3")], &[]);
        let back = Launch {
            meta: &in_place,
            slot: None,
            ..launch
        };
        let script = retiring.retire_script(&back, 10).unwrap();
        assert!(!script.contains(" rm -s -f"), "{script}");
        // Never blue/green on either side: nothing to retire.
        let before = Retiring {
            serving: None,
            meta: &in_place,
            ..retiring
        };
        assert!(before.retire_script(&back, 10).is_none());
    }
}
