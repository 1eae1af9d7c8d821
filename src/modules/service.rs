//! `service`: a systemd unit's mask, enablement and run state, read with one
//! `systemctl show` and changed with plain `systemctl` verbs. A unit file that
//! changed on disk (systemd says `NeedDaemonReload=yes`) gets a daemon-reload
//! before anything else, so the new file is what starts.

use std::collections::HashMap;

use serde::Deserialize;

use super::{Change, Module, ModuleError, Plan, PlanContext, ProbeOptions, Scope, Validate};
use crate::transport::script::quote;

/// Unit types a name may already end with; any other name means `NAME.service`.
const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "timer",
    "target",
    "path",
    "mount",
    "automount",
    "swap",
    "slice",
    "scope",
    "device",
];

/// The properties the probe asks `systemctl show` for.
const PROPERTIES: &[&str] = &[
    "LoadState",
    "ActiveState",
    "UnitFileState",
    "NeedDaemonReload",
];

/// Printed after `systemctl show` so `plan` can tell "no systemd" from a unit's state.
const EXIT_MARKER: &str = "vpsup_exit=";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Unit name; `.service` is implied when it has no unit-type suffix.
    name: String,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    state: Option<RunState>,
    #[serde(default)]
    masked: Option<bool>,
    /// Reload systemd's unit files even when systemd does not ask for it.
    #[serde(default)]
    daemon_reload: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RunState {
    Started,
    Stopped,
    /// Always restarts (what handlers use).
    Restarted,
    /// Reloads a running unit, starts a stopped one.
    Reloaded,
}

impl RunState {
    fn runs(self) -> bool {
        self != RunState::Stopped
    }
}

impl Service {
    fn unit(&self) -> String {
        let has_type = self
            .name
            .rsplit_once('.')
            .is_some_and(|(_, suffix)| UNIT_TYPES.contains(&suffix));
        if has_type {
            self.name.clone()
        } else {
            format!("{}.service", self.name)
        }
    }

    fn wants_it_running(&self) -> bool {
        self.state.is_some_and(RunState::runs)
    }
}

impl Validate for Service {
    fn validate(&self) -> Result<(), String> {
        // systemd.unit(5): letters, digits, ":-_.\" and "@" for template instances.
        let valid_char = |c: char| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c);
        if self.name.is_empty() || self.name.starts_with('-') || !self.name.chars().all(valid_char)
        {
            return Err(format!(
                "service name {:?} is not a systemd unit name (letters, digits and \":-_.\\@\", not starting with \"-\")",
                self.name
            ));
        }
        if self.enabled.is_none()
            && self.state.is_none()
            && self.masked.is_none()
            && !self.daemon_reload
        {
            return Err(format!(
                "service {}: nothing to do; give state, enabled, masked or daemon_reload",
                self.name
            ));
        }
        if self.masked == Some(true) {
            if self.enabled.is_some() {
                return Err(format!(
                    "service {}: `enabled` cannot go with `masked: true` (a masked unit is neither enabled nor disabled)",
                    self.name
                ));
            }
            if self.wants_it_running() {
                return Err(format!(
                    "service {}: a masked unit cannot be started; use `state: stopped` or drop `masked: true`",
                    self.name
                ));
            }
        }
        Ok(())
    }
}

/// What `systemctl show` said about the unit.
#[derive(Debug, PartialEq, Eq)]
struct UnitStatus {
    load: String,
    active: String,
    file: String,
    needs_daemon_reload: bool,
}

impl UnitStatus {
    fn parse(output: &str, unit: &str) -> Result<UnitStatus, ModuleError> {
        let mut properties = HashMap::new();
        let mut messages = Vec::new();
        let mut exit = None;
        for line in output.lines() {
            if let Some(code) = line.strip_prefix(EXIT_MARKER) {
                exit = Some(code.trim());
                continue;
            }
            match line.split_once('=') {
                Some((key, value)) if PROPERTIES.contains(&key) => {
                    properties.insert(key, value.trim());
                }
                _ if !line.trim().is_empty() => messages.push(line.trim()),
                _ => {}
            }
        }
        let fail = |why: String| ModuleError::Probe(format!("`systemctl show {unit}` {why}"));
        match exit {
            Some("0") => {}
            Some(code) => {
                return Err(fail(format!(
                    "failed (exit {code}): {}",
                    messages.join(" ")
                )))
            }
            None => return Err(fail(format!("did not finish; it printed {output:?}"))),
        }
        let property = |key: &str| {
            properties
                .get(key)
                .map(|v| v.to_string())
                .ok_or_else(|| fail(format!("printed no {key}: {output:?}")))
        };
        Ok(UnitStatus {
            load: property("LoadState")?,
            active: property("ActiveState")?,
            file: property("UnitFileState")?,
            needs_daemon_reload: property("NeedDaemonReload")? == "yes",
        })
    }

    fn is_masked(&self) -> bool {
        self.load == "masked" || self.file.starts_with("masked")
    }

    /// Like Ansible: a unit on its way up counts as running.
    fn is_running(&self) -> bool {
        matches!(
            self.active.as_str(),
            "active" | "activating" | "reloading" | "refreshing"
        )
    }

    /// Whether the unit is enabled, when `systemctl enable`/`disable` can change it.
    fn is_enabled(&self, unit: &str, want: bool) -> Result<bool, ModuleError> {
        match self.file.as_str() {
            "enabled" => Ok(true),
            // enabled-runtime is gone after a reboot, so `enable` still has work to do.
            "disabled" | "linked" | "linked-runtime" | "enabled-runtime" => Ok(false),
            // No [Install] section: the unit runs when something else pulls it in.
            "static" | "generated" | "transient" if want => Ok(true),
            "static" | "generated" | "transient" => Err(ModuleError::Plan(format!(
                "{unit} is {}, so it cannot be disabled; use `masked: true` to keep it from starting",
                self.file
            ))),
            "indirect" => Err(ModuleError::Plan(format!(
                "{unit} is indirect: it is enabled through the units its Also= names (often a .socket); manage those instead"
            ))),
            "alias" => Err(ModuleError::Plan(format!(
                "{unit} is an alias; name the unit it points to"
            ))),
            other => Err(ModuleError::Plan(format!(
                "{unit} cannot be enabled or disabled (UnitFileState={other:?}); check `systemctl status {unit}`"
            ))),
        }
    }
}

impl Module for Service {
    fn probe(&self, _opts: &ProbeOptions) -> String {
        let properties: String = PROPERTIES.iter().map(|p| format!(" -p {p}")).collect();
        // stderr joins stdout: without systemd, its message is the probe's answer.
        format!(
            "systemctl show --no-pager {}{properties} 2>&1; echo \"{EXIT_MARKER}$?\"",
            quote(&self.unit())
        )
    }

    fn plan(&self, probed: &str, _ctx: &PlanContext) -> Result<Plan, ModuleError> {
        let unit = self.unit();
        let status = UnitStatus::parse(probed, &unit)?;
        if status.load == "not-found" && (self.state.is_some() || self.enabled.is_some()) {
            return Err(ModuleError::Plan(format!(
                "{unit} does not exist on the host; install the package that provides it or write its unit file first"
            )));
        }

        // systemctl verbs, in the order they must run.
        let mut verbs: Vec<&str> = Vec::new();
        if self.daemon_reload || status.needs_daemon_reload {
            verbs.push("daemon-reload");
        }

        let masked_now = status.is_masked();
        let unmasking = masked_now && self.masked == Some(false);
        if unmasking {
            // `unmask` alone leaves a mask under /run in place.
            verbs.push(if status.file == "masked-runtime" {
                "unmask --runtime"
            } else {
                "unmask"
            });
        } else if masked_now && (self.wants_it_running() || self.enabled == Some(true)) {
            return Err(ModuleError::Plan(format!(
                "{unit} is masked, so it cannot be started or enabled; add `masked: false` to unmask it"
            )));
        }

        // A unit that stays masked cannot start, which is all `enabled: false` asks.
        let stays_masked = masked_now && !unmasking;
        if let Some(want) = self.enabled.filter(|_| !stays_masked) {
            // Behind a mask the enablement is unknown: set it either way.
            if unmasking || status.is_enabled(&unit, want)? != want {
                verbs.push(if want { "enable" } else { "disable" });
            }
        }

        let running = status.is_running();
        match self.state {
            Some(RunState::Started) if !running => verbs.push("start"),
            Some(RunState::Stopped) if running || status.active == "deactivating" => {
                verbs.push("stop")
            }
            Some(RunState::Restarted) => verbs.push("restart"),
            Some(RunState::Reloaded) => verbs.push(if running { "reload" } else { "start" }),
            _ => {}
        }

        if self.masked == Some(true) && !masked_now {
            verbs.push("mask");
        }

        if verbs.is_empty() {
            return Ok(Plan::ok());
        }
        let script: Vec<String> = verbs
            .iter()
            .map(|verb| match *verb {
                "daemon-reload" => "systemctl daemon-reload".to_string(),
                verb => format!("systemctl {verb} {}", quote(&unit)),
            })
            .collect();
        Ok(Plan::change(Change::new(
            verbs.join(", "),
            script.join("\n"),
        )))
    }

    fn scope(&self) -> Scope {
        let unit = self.unit();
        // The unit files too: `mask` writes one, and a task writing a unit file
        // or a drop-in must make this task probe again (daemon-reload).
        Scope::Keys(vec![
            format!("unit:{unit}"),
            format!("path:/etc/systemd/system/{unit}"),
            format!("path:/etc/systemd/system/{unit}.d"),
            format!("path:/usr/lib/systemd/system/{unit}"),
            format!("path:/lib/systemd/system/{unit}"),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing;

    fn service(yaml: &str) -> Box<dyn Module> {
        testing::build_from_yaml("service", yaml).expect("valid service arguments")
    }

    fn shown(load: &str, active: &str, file: &str, reload: &str) -> String {
        format!(
            "LoadState={load}\nActiveState={active}\nUnitFileState={file}\nNeedDaemonReload={reload}\nvpsup_exit=0\n"
        )
    }

    /// The single change's summary and script.
    fn change(module: &dyn Module, probed: &str) -> (String, String) {
        let plan = testing::plan(module, probed).expect("plans");
        assert_eq!(plan.changes.len(), 1, "{plan:?}");
        (
            plan.changes[0].summary.clone(),
            plan.changes[0].script.clone(),
        )
    }

    fn plan_error(module: &dyn Module, probed: &str) -> String {
        match testing::plan(module, probed) {
            Err(ModuleError::Plan(message)) => message,
            other => panic!("expected a plan error, got {other:?}"),
        }
    }

    #[test]
    fn probe_asks_systemctl_show_for_four_properties() {
        assert_eq!(
            service("name: nginx\nstate: started").probe(&crate::modules::testing::probe_options()),
            "systemctl show --no-pager nginx.service -p LoadState -p ActiveState -p UnitFileState -p NeedDaemonReload 2>&1; echo \"vpsup_exit=$?\""
        );
    }

    #[test]
    fn names_get_service_unless_they_carry_a_unit_type() {
        for (name, unit) in [
            ("nginx", "nginx.service"),
            ("ssh.socket", "ssh.socket"),
            ("certbot.timer", "certbot.timer"),
            ("php8.2-fpm", "php8.2-fpm.service"),
            ("getty@tty1", "getty@tty1.service"),
        ] {
            let module = service(&format!("name: {name}\nstate: started"));
            assert_eq!(
                module.scope(),
                Scope::Keys(vec![
                    format!("unit:{unit}"),
                    format!("path:/etc/systemd/system/{unit}"),
                    format!("path:/etc/systemd/system/{unit}.d"),
                    format!("path:/usr/lib/systemd/system/{unit}"),
                    format!("path:/lib/systemd/system/{unit}")
                ])
            );
        }
    }

    #[test]
    fn ok_when_converged() {
        let module = service("name: nginx\nstate: started\nenabled: true\nmasked: false");
        assert!(
            testing::plan(&*module, &shown("loaded", "active", "enabled", "no"))
                .unwrap()
                .is_ok()
        );
        let module = service("name: nginx\nstate: stopped\nenabled: false");
        assert!(
            testing::plan(&*module, &shown("loaded", "failed", "disabled", "no"))
                .unwrap()
                .is_ok()
        );
        let module = service("name: telnet\nmasked: true\nstate: stopped");
        assert!(
            testing::plan(&*module, &shown("masked", "inactive", "masked", "no"))
                .unwrap()
                .is_ok()
        );
    }

    #[test]
    fn enables_and_starts_a_stopped_unit() {
        let module = service("name: nginx\nstate: started\nenabled: true");
        assert_eq!(
            change(&*module, &shown("loaded", "inactive", "disabled", "no")),
            (
                "enable, start".into(),
                "systemctl enable nginx.service\nsystemctl start nginx.service".into()
            )
        );
    }

    #[test]
    fn stops_and_disables_a_running_unit() {
        let module = service("name: apache2\nstate: stopped\nenabled: false");
        assert_eq!(
            change(&*module, &shown("loaded", "active", "enabled", "no")),
            (
                "disable, stop".into(),
                "systemctl disable apache2.service\nsystemctl stop apache2.service".into()
            )
        );
    }

    #[test]
    fn restarted_always_restarts() {
        let module = service("name: nginx\nstate: restarted");
        for active in ["active", "inactive"] {
            assert_eq!(
                change(&*module, &shown("loaded", active, "enabled", "no")),
                ("restart".into(), "systemctl restart nginx.service".into())
            );
        }
    }

    #[test]
    fn reloaded_reloads_a_running_unit_and_starts_a_stopped_one() {
        let module = service("name: nginx\nstate: reloaded");
        assert_eq!(
            change(&*module, &shown("loaded", "active", "enabled", "no")),
            ("reload".into(), "systemctl reload nginx.service".into())
        );
        assert_eq!(
            change(&*module, &shown("loaded", "failed", "enabled", "no")),
            ("start".into(), "systemctl start nginx.service".into())
        );
    }

    #[test]
    fn changed_unit_file_means_daemon_reload_first() {
        let module = service("name: app\nstate: started\nenabled: true\nmasked: false");
        assert_eq!(
            change(&*module, &shown("masked", "inactive", "masked", "yes")),
            (
                "daemon-reload, unmask, enable, start".into(),
                "systemctl daemon-reload\nsystemctl unmask app.service\nsystemctl enable app.service\nsystemctl start app.service".into()
            )
        );
        // Even when nothing else is to do.
        let module = service("name: app\nstate: started");
        assert_eq!(
            change(&*module, &shown("loaded", "active", "enabled", "yes")),
            ("daemon-reload".into(), "systemctl daemon-reload".into())
        );
    }

    #[test]
    fn daemon_reload_can_be_forced() {
        let module = service("name: app\ndaemon_reload: true");
        assert_eq!(
            change(&*module, &shown("loaded", "active", "enabled", "no")),
            ("daemon-reload".into(), "systemctl daemon-reload".into())
        );
    }

    #[test]
    fn masking_stops_first() {
        let module = service("name: rpcbind\nstate: stopped\nmasked: true");
        assert_eq!(
            change(&*module, &shown("loaded", "active", "enabled", "no")),
            (
                "stop, mask".into(),
                "systemctl stop rpcbind.service\nsystemctl mask rpcbind.service".into()
            )
        );
        // Masking a unit that is not installed keeps a later install from starting it.
        let module = service("name: rpcbind\nmasked: true");
        assert_eq!(
            change(&*module, &shown("not-found", "inactive", "", "no")),
            ("mask".into(), "systemctl mask rpcbind.service".into())
        );
    }

    #[test]
    fn a_masked_unit_is_only_started_when_unmasking_is_asked_for() {
        let module = service("name: nginx\nstate: started");
        let message = plan_error(&*module, &shown("masked", "inactive", "masked", "no"));
        assert!(
            message.contains("nginx.service is masked") && message.contains("masked: false"),
            "{message}"
        );
        let module = service("name: nginx\nenabled: true");
        assert!(
            plan_error(&*module, &shown("loaded", "inactive", "masked", "no"))
                .contains("is masked")
        );
        let module = service("name: nginx\nstate: started\nmasked: false");
        assert_eq!(
            change(
                &*module,
                &shown("masked", "inactive", "masked-runtime", "no")
            ),
            (
                "unmask --runtime, start".into(),
                "systemctl unmask --runtime nginx.service\nsystemctl start nginx.service".into()
            )
        );
        // Staying masked satisfies `enabled: false`.
        let module = service("name: nginx\nenabled: false");
        assert!(
            testing::plan(&*module, &shown("masked", "inactive", "masked", "no"))
                .unwrap()
                .is_ok()
        );
    }

    #[test]
    fn unmasking_sets_enablement_either_way() {
        let module = service("name: nginx\nenabled: false\nmasked: false");
        assert_eq!(
            change(&*module, &shown("masked", "inactive", "masked", "no")),
            (
                "unmask, disable".into(),
                "systemctl unmask nginx.service\nsystemctl disable nginx.service".into()
            )
        );
    }

    #[test]
    fn a_unit_that_does_not_exist_cannot_be_started_or_enabled() {
        for args in ["state: started", "state: stopped", "enabled: true"] {
            let module = service(&format!("name: nginx\n{args}"));
            let message = plan_error(&*module, &shown("not-found", "inactive", "", "no"));
            assert_eq!(
                message,
                "nginx.service does not exist on the host; install the package that provides it or write its unit file first"
            );
        }
        let module = service("name: nginx\nmasked: false");
        assert!(
            testing::plan(&*module, &shown("not-found", "inactive", "", "no"))
                .unwrap()
                .is_ok()
        );
    }

    #[test]
    fn static_units_count_as_enabled_but_cannot_be_disabled() {
        let module = service("name: apt-daily\nenabled: true\nstate: started");
        assert_eq!(
            change(&*module, &shown("loaded", "inactive", "static", "no")),
            ("start".into(), "systemctl start apt-daily.service".into())
        );
        let module = service("name: apt-daily\nenabled: false");
        let message = plan_error(&*module, &shown("loaded", "inactive", "static", "no"));
        assert!(
            message.contains("is static, so it cannot be disabled")
                && message.contains("masked: true"),
            "{message}"
        );
        let module = service("name: uuidd\nenabled: true");
        assert!(
            plan_error(&*module, &shown("loaded", "inactive", "indirect", "no")).contains("Also=")
        );
        // enabled-runtime does not survive a reboot.
        assert_eq!(
            change(
                &*module,
                &shown("loaded", "active", "enabled-runtime", "no")
            ),
            ("enable".into(), "systemctl enable uuidd.service".into())
        );
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        let err = |yaml: &str| {
            testing::build_from_yaml("service", yaml)
                .unwrap_err()
                .to_string()
        };
        assert!(err("name: nginx\nstate: running").contains("unknown variant `running`"));
        assert!(err("name: nginx\nstate: started\nenable: true").contains("unknown field `enable`"));
        assert!(err("state: started").contains("missing field `name`"));
        assert!(err("name: 'nginx; reboot'\nstate: started").contains("is not a systemd unit name"));
        assert!(err("name: --all\nstate: started").contains("is not a systemd unit name"));
        assert!(err("name: ''\nstate: started").contains("is not a systemd unit name"));
        assert_eq!(
            err("name: nginx"),
            "invalid arguments: service nginx: nothing to do; give state, enabled, masked or daemon_reload"
        );
        assert!(err("name: nginx\nmasked: true\nenabled: false")
            .contains("`enabled` cannot go with `masked: true`"));
        assert!(err("name: nginx\nmasked: true\nstate: reloaded")
            .contains("a masked unit cannot be started"));
    }

    #[test]
    fn unreadable_probe_output_is_a_probe_error() {
        let module = service("name: nginx\nstate: started");
        let probe_error = |probed: &str| match testing::plan(&*module, probed) {
            Err(ModuleError::Probe(message)) => message,
            other => panic!("expected a probe error, got {other:?}"),
        };
        assert_eq!(
            probe_error(
                "System has not been booted with systemd as init system (PID 1). Can't operate.\nFailed to connect to bus: Host is down\nvpsup_exit=1\n"
            ),
            "`systemctl show nginx.service` failed (exit 1): System has not been booted with systemd as init system (PID 1). Can't operate. Failed to connect to bus: Host is down"
        );
        assert!(probe_error("sh: 1: systemctl: not found\nvpsup_exit=127\n")
            .contains("(exit 127): sh: 1: systemctl: not found"));
        assert!(probe_error("").contains("did not finish"));
        assert!(
            probe_error("LoadState=loaded\nActiveState=active\nvpsup_exit=0\n")
                .contains("printed no UnitFileState")
        );
    }

    /// This machine has no systemd as PID 1: the real probe must say so clearly.
    /// Where systemd runs, the same probe must simply parse.
    #[test]
    fn real_probe_degrades_to_a_clear_error_without_systemd() {
        let module = service("name: nginx\nmasked: false");
        let probed = testing::run_probe(&*module, crate::modules::testing::probe_options());
        let systemd_runs = std::path::Path::new("/run/systemd/system").is_dir();
        match testing::plan(&*module, &probed) {
            Ok(_) => assert!(systemd_runs, "planned without systemd from {probed:?}"),
            Err(ModuleError::Probe(message)) => {
                assert!(!systemd_runs, "{message}");
                assert!(
                    message.starts_with("`systemctl show nginx.service` failed (exit "),
                    "{message}"
                );
            }
            Err(other) => panic!("unexpected {other:?} from {probed:?}"),
        }
    }
}
