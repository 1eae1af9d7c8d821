//! `sysctl`: kernel parameters, kept in one file vpsup owns (systemd-sysctl
//! applies it at boot) and set live through /proc/sys, so neither a reboot nor
//! procps' `sysctl` binary is needed.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::file_state::{self, Attributes, FileState, Kind, PathInfo};
use super::{Change, Module, ModuleError, Plan, PlanContext, ProbeOptions, Scope, Validate};
use crate::transport::script::{quote, write_file};
use crate::transport::FileMeta;

pub const DEFAULT_FILE: &str = "/etc/sysctl.d/60-vpsup.conf";

const PROC_SYS: &str = "/proc/sys/";

const HEADER: &str = "# Managed by vpsup: edits here are overwritten on its next run.\n";

/// Writes one key's live value, naming the key when the kernel refuses it.
const WRITE_FUNCTION: &str = r#"vpsup_sysctl_write() { printf '%s\n' "$3" > "$2" || { echo "vpsup: the kernel refused $1 = $3" >&2; exit 1; }; }"#;

/// The most settings a summary names one by one.
const SUMMARY_SETTINGS: usize = 3;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sysctl {
    #[serde(default = "default_file")]
    file: String,
    /// Key -> value with whitespace normalised (fields joined by one space).
    #[serde(deserialize_with = "de_values")]
    values: BTreeMap<String, String>,
    /// Skip (with a note) keys this kernel does not have instead of failing.
    #[serde(default)]
    ignore_missing: bool,
}

fn default_file() -> String {
    DEFAULT_FILE.to_string()
}

/// Values are YAML integers or strings; multi-value keys compare by fields.
fn de_values<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    use serde::de::Error;
    let raw = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(key, value)| {
            let text = match &value {
                serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                serde_json::Value::String(s) => normalise(s),
                other => {
                    return Err(Error::custom(format!(
                        "values.{key}: expected an integer or a string, got {other}"
                    )))
                }
            };
            if text.is_empty() || text.chars().any(char::is_control) {
                return Err(Error::custom(format!(
                    "values.{key}: {value} is not a sysctl value"
                )));
            }
            Ok((key, text))
        })
        .collect()
}

/// The kernel separates fields with tabs, playbooks with spaces.
fn normalise(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The /proc/sys file of `key`. As in sysctl.d(5), when the first separator is
/// "/", dots belong to names (a VLAN `eth0.100`); otherwise "." separates and
/// "/" stands for a dot.
fn proc_path(key: &str) -> String {
    let slash_separated = key
        .find(['.', '/'])
        .is_some_and(|i| key[i..].starts_with('/'));
    let path: String = if slash_separated {
        key.to_string()
    } else {
        key.chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect()
    };
    format!("{PROC_SYS}{path}")
}

impl Sysctl {
    /// The file's whole content: stable, sorted by key.
    fn content(&self) -> String {
        let lines: String = self
            .values
            .iter()
            .map(|(key, value)| format!("{key} = {value}\n"))
            .collect();
        format!("{HEADER}{lines}")
    }

    fn file_change(&self, state: &FileState) -> Result<Option<Change>, ModuleError> {
        let content = self.content();
        let attributes = Attributes {
            mode: Some(0o644),
            owner: Some("root".into()),
            group: Some("root".into()),
        };
        let write = |verb: &str, old: Option<&PathInfo>| {
            let meta = FileMeta {
                mode: 0o644,
                owner: attributes.chown_spec(),
            };
            // Old content is only there for `--diff`; a new file diffs against nothing.
            let diff = match old {
                None => file_state::diff(&self.file, None, content.as_bytes(), false),
                Some(info) => info.content.as_deref().and_then(|old| {
                    file_state::diff(&self.file, Some(old), content.as_bytes(), false)
                }),
            };
            Change::new(
                format!("{verb} {}", self.file),
                write_file(&self.file, content.as_bytes(), &meta),
            )
            .with_diff(diff)
        };
        let info = match state {
            FileState::Absent => return Ok(Some(write("create", None))),
            FileState::Present(info) => info,
        };
        if info.kind != Kind::File {
            let kind = match info.kind {
                Kind::Directory => "directory",
                Kind::Symlink => "symlink",
                _ => "special file",
            };
            return Err(ModuleError::Plan(format!(
                "{} is a {kind}, not a regular file; remove it or choose another `file`",
                self.file
            )));
        }
        if info.sha256.as_deref() != Some(file_state::sha256_hex(content.as_bytes()).as_str()) {
            return Ok(Some(write("update", Some(info))));
        }
        Ok(attributes
            .fix(&self.file, info)
            .map(|(summary, script)| Change::new(format!("{}: {summary}", self.file), script)))
    }
}

impl Validate for Sysctl {
    fn validate(&self) -> Result<(), String> {
        if !self.file.starts_with('/') || !self.file.ends_with(".conf") || self.file.contains('\n')
        {
            return Err(format!(
                "file {:?} must be an absolute path ending in .conf (systemd-sysctl reads only *.conf)",
                self.file
            ));
        }
        for key in self.values.keys() {
            let valid_char = |c: char| c.is_ascii_alphanumeric() || "_-.@+/".contains(c);
            let path = proc_path(key);
            let components_ok = path[PROC_SYS.len()..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
            if !key.chars().all(valid_char) || !components_ok {
                return Err(format!(
                    "values: {key:?} is not a sysctl key (like net.ipv4.ip_forward)"
                ));
            }
        }
        Ok(())
    }
}

/// What the probe found for one /proc/sys file; no entry means it exists but
/// could not be read (write-only triggers such as vm.drop_caches).
#[derive(Debug, PartialEq, Eq)]
enum Live {
    Value(String),
    Missing,
}

/// Splits the probe output into the file's state and the live values by
/// /proc/sys path (`missing PATH`, or grep's `PATH:VALUE`).
fn parse(probed: &str) -> Result<(FileState, HashMap<&str, Live>), String> {
    let mut file_lines = Vec::new();
    let mut live = HashMap::new();
    for line in probed.lines() {
        if let Some(path) = line.strip_prefix("missing ") {
            live.insert(path, Live::Missing);
        } else if line.starts_with(PROC_SYS) {
            let (path, value) = line.split_once(':').unwrap_or((line, ""));
            // A multi-line file is no setting; its first line is enough to differ.
            live.entry(path)
                .or_insert_with(|| Live::Value(normalise(value)));
        } else {
            file_lines.push(line);
        }
    }
    Ok((file_state::parse(&file_lines.join("\n"))?, live))
}

impl Module for Sysctl {
    fn probe(&self, opts: &ProbeOptions) -> String {
        let mut probe = file_state::probe(&self.file, opts.with_content);
        if self.values.is_empty() {
            return probe; // grep without files would read stdin
        }
        let paths: Vec<String> = self
            .values
            .keys()
            .map(|key| quote(&proc_path(key)))
            .collect();
        for path in &paths {
            probe.push_str(&format!("\n[ -e {path} ] || echo 'missing '{path}"));
        }
        // One grep reads every file whole: /proc/sys answers a read at a
        // non-zero offset with EOF, so the shell's byte-wise `read` gets one byte.
        probe.push_str(&format!("\ngrep -H '' {}", paths.join(" ")));
        probe
    }

    fn plan(&self, probed: &str, _ctx: &PlanContext) -> Result<Plan, ModuleError> {
        let (file, live) = parse(probed).map_err(ModuleError::Probe)?;
        let mut changes: Vec<Change> = self.file_change(&file)?.into_iter().collect();

        let mut settings = Vec::new();
        let mut skipped = Vec::new();
        for (key, want) in &self.values {
            let path = proc_path(key);
            match live.get(path.as_str()) {
                Some(Live::Value(have)) if have != want => settings.push((key, have, want)),
                Some(Live::Value(_)) => {}
                Some(Live::Missing) if self.ignore_missing => skipped.push(key.as_str()),
                Some(Live::Missing) => {
                    return Err(ModuleError::Plan(format!(
                        "this kernel has no {key} ({path} does not exist); load the module that provides it, or set `ignore_missing: true`"
                    )))
                }
                None => {
                    return Err(ModuleError::Plan(format!(
                        "{key} cannot be read ({path}), so vpsup cannot tell whether it is set; write-only keys are actions, not settings to keep"
                    )))
                }
            }
        }

        if !settings.is_empty() {
            let summary = if settings.len() <= SUMMARY_SETTINGS {
                let each: Vec<String> = settings
                    .iter()
                    .map(|(key, have, want)| format!("{key} {have} -> {want}"))
                    .collect();
                format!("set {}", each.join(", "))
            } else {
                format!("set {} kernel parameters", settings.len())
            };
            let writes: String = settings
                .iter()
                .map(|(key, _, want)| {
                    format!(
                        "\nvpsup_sysctl_write {} {} {}",
                        quote(key),
                        quote(&proc_path(key)),
                        quote(want)
                    )
                })
                .collect();
            changes.push(Change::new(summary, format!("{WRITE_FUNCTION}{writes}")));
        }
        // The contract has no notes for `ok` tasks, so the note rides on a change.
        if let (false, Some(last)) = (skipped.is_empty(), changes.last_mut()) {
            last.summary.push_str(&format!(
                " (not in this kernel, skipped: {})",
                skipped.join(", ")
            ));
        }
        Ok(Plan { changes })
    }

    fn scope(&self) -> Scope {
        let keys = self.values.keys().map(|key| format!("sysctl:{key}"));
        Scope::Keys(
            std::iter::once(format!("path:{}", self.file))
                .chain(keys)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing;

    const ARGS: &str = "values:\n  net.ipv4.ip_forward: 1\n  kernel.kptr_restrict: 2\n  net.ipv4.ip_local_port_range: '32768   60999'\n";

    const CONTENT: &str = "# Managed by vpsup: edits here are overwritten on its next run.\n\
        kernel.kptr_restrict = 2\n\
        net.ipv4.ip_forward = 1\n\
        net.ipv4.ip_local_port_range = 32768 60999\n";

    const LIVE: &str = "/proc/sys/kernel/kptr_restrict:2\n/proc/sys/net/ipv4/ip_forward:1\n/proc/sys/net/ipv4/ip_local_port_range:32768\t60999\n";

    fn sysctl(yaml: &str) -> Box<dyn Module> {
        testing::build_from_yaml("sysctl", yaml).expect("valid sysctl arguments")
    }

    fn file_line(mode: &str, content: &str) -> String {
        format!(
            "file {mode} root root {}\n",
            file_state::sha256_hex(content.as_bytes())
        )
    }

    fn root_file() -> FileMeta {
        FileMeta::mode(0o644).owner("root:root")
    }

    #[test]
    fn probe_reads_the_file_and_each_key_from_proc() {
        let module = sysctl("file: /etc/sysctl.d/90-x.conf\nvalues:\n  net.ipv4.conf.eth0/100.rp_filter: 1\n  kernel.kptr_restrict: 2");
        assert_eq!(
            module.probe(&crate::modules::testing::probe_options()),
            format!(
                "{}\n[ -e /proc/sys/kernel/kptr_restrict ] || echo 'missing '/proc/sys/kernel/kptr_restrict\n\
                 [ -e /proc/sys/net/ipv4/conf/eth0.100/rp_filter ] || echo 'missing '/proc/sys/net/ipv4/conf/eth0.100/rp_filter\n\
                 grep -H '' /proc/sys/kernel/kptr_restrict /proc/sys/net/ipv4/conf/eth0.100/rp_filter",
                file_state::probe("/etc/sysctl.d/90-x.conf", false)
            )
        );
        assert!(module
            .probe(&crate::modules::testing::diff_probe_options())
            .contains("base64 -w0"));
    }

    #[test]
    fn keys_map_to_proc_sys_like_sysctl_d_says() {
        assert_eq!(
            proc_path("net.ipv4.ip_forward"),
            "/proc/sys/net/ipv4/ip_forward"
        );
        assert_eq!(
            proc_path("net.ipv4.conf.eth0/100.rp_filter"),
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
        );
        assert_eq!(
            proc_path("net/ipv4/conf/eth0.100/rp_filter"),
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
        );
    }

    #[test]
    fn scope_is_the_file_and_every_key() {
        assert_eq!(
            sysctl(ARGS).scope(),
            Scope::Keys(vec![
                "path:/etc/sysctl.d/60-vpsup.conf".into(),
                "sysctl:kernel.kptr_restrict".into(),
                "sysctl:net.ipv4.ip_forward".into(),
                "sysctl:net.ipv4.ip_local_port_range".into(),
            ])
        );
    }

    #[test]
    fn ok_when_file_and_live_values_match() {
        let probed = format!("{}{LIVE}", file_line("644", CONTENT));
        assert!(testing::plan(&*sysctl(ARGS), &probed).unwrap().is_ok());
    }

    #[test]
    fn creates_the_file_and_sets_what_differs() {
        let probed = "absent\n/proc/sys/kernel/kptr_restrict:0\n/proc/sys/net/ipv4/ip_forward:1\n/proc/sys/net/ipv4/ip_local_port_range:1024\t65535\n";
        let plan = testing::plan(&*sysctl(ARGS), probed).unwrap();
        assert_eq!(plan.changes.len(), 2, "{plan:?}");
        let file = &plan.changes[0];
        assert_eq!(file.summary, "create /etc/sysctl.d/60-vpsup.conf");
        assert_eq!(
            file.script,
            write_file(
                "/etc/sysctl.d/60-vpsup.conf",
                CONTENT.as_bytes(),
                &root_file()
            )
        );
        assert!(file.diff.as_deref().unwrap().contains("--- /dev/null"));
        let live = &plan.changes[1];
        assert_eq!(
            live.summary,
            "set kernel.kptr_restrict 0 -> 2, net.ipv4.ip_local_port_range 1024 65535 -> 32768 60999"
        );
        assert_eq!(
            live.script,
            format!(
                "{WRITE_FUNCTION}\nvpsup_sysctl_write kernel.kptr_restrict /proc/sys/kernel/kptr_restrict 2\n\
                 vpsup_sysctl_write net.ipv4.ip_local_port_range /proc/sys/net/ipv4/ip_local_port_range '32768 60999'"
            )
        );
    }

    #[test]
    fn many_settings_are_counted_in_the_summary() {
        let probed = "absent\n/proc/sys/a/b:0\n/proc/sys/a/c:0\n/proc/sys/a/d:0\n/proc/sys/a/e:0\n";
        let plan =
            testing::plan(&*sysctl("values: {a.b: 1, a.c: 1, a.d: 1, a.e: 1}"), probed).unwrap();
        assert_eq!(plan.changes[1].summary, "set 4 kernel parameters");
    }

    #[test]
    fn a_changed_file_is_rewritten_with_a_diff_when_content_was_probed() {
        let old = "# old\nnet.ipv4.ip_forward = 0\n";
        let probed = format!(
            "{}content {}\n{LIVE}",
            file_line("644", old),
            base64_of(old)
        );
        let plan = testing::plan(&*sysctl(ARGS), &probed).unwrap();
        assert_eq!(plan.changes.len(), 1, "{plan:?}");
        assert_eq!(
            plan.changes[0].summary,
            "update /etc/sysctl.d/60-vpsup.conf"
        );
        let diff = plan.changes[0].diff.as_deref().unwrap();
        assert!(
            diff.contains("-net.ipv4.ip_forward = 0\n")
                && diff.contains("+kernel.kptr_restrict = 2\n"),
            "{diff}"
        );
        // Without --diff there is no old content, hence no diff.
        let probed = format!("{}{LIVE}", file_line("644", old));
        assert_eq!(
            testing::plan(&*sysctl(ARGS), &probed).unwrap().changes[0].diff,
            None
        );
    }

    fn base64_of(text: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn right_content_with_wrong_mode_is_only_chmodded() {
        let probed = format!("{}{LIVE}", file_line("600", CONTENT));
        let plan = testing::plan(&*sysctl(ARGS), &probed).unwrap();
        assert_eq!(
            plan.changes,
            vec![Change::new(
                "/etc/sysctl.d/60-vpsup.conf: mode 0600 -> 0644",
                "chmod 0644 /etc/sysctl.d/60-vpsup.conf"
            )]
        );
    }

    #[test]
    fn a_missing_key_fails_unless_ignored() {
        let args = "values:\n  net.bridge.bridge-nf-call-iptables: 1\n  net.ipv4.ip_forward: 1\n";
        let probed = "absent\nmissing /proc/sys/net/bridge/bridge-nf-call-iptables\n/proc/sys/net/ipv4/ip_forward:1\n";
        match testing::plan(&*sysctl(args), probed) {
            Err(ModuleError::Plan(message)) => assert_eq!(
                message,
                "this kernel has no net.bridge.bridge-nf-call-iptables (/proc/sys/net/bridge/bridge-nf-call-iptables does not exist); load the module that provides it, or set `ignore_missing: true`"
            ),
            other => panic!("{other:?}"),
        }
        let plan = testing::plan(&*sysctl(&format!("{args}ignore_missing: true")), probed).unwrap();
        // The key stays in the file, so it applies at boot once its module loads.
        assert_eq!(plan.changes.len(), 1, "{plan:?}");
        assert_eq!(
            plan.changes[0].summary,
            "create /etc/sysctl.d/60-vpsup.conf (not in this kernel, skipped: net.bridge.bridge-nf-call-iptables)"
        );
        let content = "# Managed by vpsup: edits here are overwritten on its next run.\n\
            net.bridge.bridge-nf-call-iptables = 1\nnet.ipv4.ip_forward = 1\n";
        assert_eq!(
            plan.changes[0].script,
            write_file(DEFAULT_FILE, content.as_bytes(), &root_file())
        );
    }

    #[test]
    fn write_only_keys_are_refused() {
        let probed = "absent\n";
        match testing::plan(&*sysctl("values: {vm.drop_caches: 3}"), probed) {
            Err(ModuleError::Plan(message)) => assert!(
                message.starts_with("vm.drop_caches cannot be read (/proc/sys/vm/drop_caches)"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn real_probe_finds_write_only_keys_unreadable() {
        let module = sysctl("file: /nonexistent/60-vpsup.conf\nvalues: {vm.drop_caches: 3}");
        match testing::plan(
            &*module,
            &testing::run_probe(&*module, crate::modules::testing::probe_options()),
        ) {
            Err(ModuleError::Plan(message)) => {
                assert!(message.contains("cannot be read"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_file_must_be_a_regular_file() {
        let probed = format!("directory 755 root root\n{LIVE}");
        match testing::plan(&*sysctl(ARGS), &probed) {
            Err(ModuleError::Plan(message)) => assert_eq!(
                message,
                "/etc/sysctl.d/60-vpsup.conf is a directory, not a regular file; remove it or choose another `file`"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        let err = |yaml: &str| {
            testing::build_from_yaml("sysctl", yaml)
                .unwrap_err()
                .to_string()
        };
        assert!(err("values: {net.ipv4.ip_forward: true}")
            .contains("values.net.ipv4.ip_forward: expected an integer or a string, got true"));
        assert!(err("values: {vm.swappiness: 1.5}")
            .contains("expected an integer or a string, got 1.5"));
        assert!(err("values: {vm.swappiness: '  '}").contains("is not a sysctl value"));
        assert!(err("values: {vm.swappiness: \"1\\a\"}").contains("is not a sysctl value"));
        assert!(err("values: {'net..x': 1}").contains("is not a sysctl key"));
        assert!(err("values: {'kernel.x = 1': 1}").contains("is not a sysctl key"));
        assert!(
            err("values: {'net.ipv4.conf.eth0:1.rp_filter': 1}").contains("is not a sysctl key")
        );
        assert!(err("values: {'../../etc/passwd': 1}").contains("is not a sysctl key"));
        assert!(err("file: sysctl.conf\nvalues: {}").contains("absolute path ending in .conf"));
        assert!(
            err("file: /etc/sysctl.d/vpsup\nvalues: {}").contains("absolute path ending in .conf")
        );
        assert!(err("values: {}\nignore_missing: true\nreload: true")
            .contains("unknown field `reload`"));
        assert!(err("file: /etc/x.conf").contains("missing field `values`"));
    }

    #[test]
    fn unreadable_probe_output_is_a_probe_error() {
        let module = sysctl(ARGS);
        let probe_error = |probed: &str| match testing::plan(&*module, probed) {
            Err(ModuleError::Probe(message)) => message,
            other => panic!("expected a probe error, got {other:?}"),
        };
        assert!(probe_error(&format!("garbage\n{LIVE}"))
            .contains("expected `KIND MODE OWNER GROUP [SHA256]`"));
    }

    /// Reads this machine's /proc/sys for real, writes the file into a temp
    /// directory with the planned script, and finds everything converged after.
    #[test]
    fn real_probe_reads_proc_sys_and_the_written_file_converges() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("60-vpsup.conf");
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let module = sysctl(&format!(
            "file: {}\nignore_missing: true\nvalues:\n  net.ipv4.ip_local_port_range: '{}'\n  net.vpsup.no_such_key: 1\n",
            file.display(),
            range.trim().replace('\t', " ")
        ));
        let probe_and_plan = || {
            let probed =
                testing::run_probe(&*module, crate::modules::testing::diff_probe_options());
            testing::plan(&*module, &probed).unwrap()
        };
        let plan = probe_and_plan();
        assert_eq!(plan.changes.len(), 1, "only the file differs: {plan:?}");
        assert!(plan.changes[0]
            .summary
            .ends_with("(not in this kernel, skipped: net.vpsup.no_such_key)"));
        testing::run_change(&plan.changes[0].script);
        assert!(std::fs::read_to_string(&file)
            .unwrap()
            .contains("net.vpsup.no_such_key = 1\n"));
        assert!(probe_and_plan().is_ok());
    }
}
