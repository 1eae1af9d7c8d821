//! Modules: each one is *facts in, commands out*. A module
//! 1. prints the state it needs with a read-only shell snippet (`probe`), which
//!    the engine runs together with every other task's probe in ONE exec;
//! 2. compares that state with what its arguments ask for (`plan`), purely,
//!    returning the shell commands that close the difference (none: `ok`).
//!
//! The engine runs the commands, batching several tasks into one exec. Modules
//! never do I/O and never print, so each is unit-tested without a network.

pub mod file_state;

pub mod apt;
pub mod assert;
pub mod authorized_key;
pub mod command;
pub mod copy;
pub mod file;
pub mod line;
pub mod service;
pub mod sysctl;
pub mod ufw;
pub mod user;

use serde::de::DeserializeOwned;

use crate::facts::HostFacts;
use crate::transport::sections::Sections;

/// One configured module instance (a task's module with its arguments).
pub trait Module: Send + Sync + std::fmt::Debug {
    /// A POSIX sh snippet that prints, on stdout, the state `plan` needs. It runs
    /// inside the play's probe script, in a subshell, as root when the task
    /// becomes root. It must only read, must be quick, and must not depend on its
    /// exit status (the engine ignores it) or on stderr (discarded). Return an
    /// empty string when `plan` needs no state.
    fn probe(&self, opts: &ProbeOptions) -> String;

    /// Compares the probed state (exactly what `probe` printed) with the desired
    /// state. No changes means the task is `ok`.
    fn plan(&self, probed: &str, ctx: &PlanContext) -> Result<Plan, ModuleError>;

    /// What this module's changes may touch, so the engine knows which later
    /// tasks' probed state went stale and must be probed again before planning.
    fn scope(&self) -> Scope;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOptions {
    /// `--diff`: file-like modules also print the current content (base64) so
    /// `plan` can show a unified diff.
    pub with_content: bool,
    /// For a probe of several parts: `sections.header("cache")` starts one, and
    /// `plan` splits them with `PlanContext::sections`. Its own random marker,
    /// not the batch's, so the batch does not split a task's parts off as its own.
    pub sections: Sections,
}

/// What `plan` may use besides the probed state.
pub struct PlanContext<'a> {
    pub facts: &'a HostFacts,
    /// The `ProbeOptions::sections` the probe was built with.
    pub sections: &'a Sections,
    /// Renders a template (by name, e.g. `sshd_hardening.conf.tera`) with the
    /// play's variables, the host facts and the config.
    pub render: &'a dyn Fn(&str) -> Result<String, String>,
}

/// The commands that bring the host to the desired state, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
}

impl Plan {
    pub fn ok() -> Plan {
        Plan::default()
    }

    pub fn change(change: Change) -> Plan {
        Plan {
            changes: vec![change],
        }
    }

    pub fn is_ok(&self) -> bool {
        self.changes.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Why, in a few words: "install nginx, ufw", "mode 0644 -> 0600", "create".
    pub summary: String,
    /// POSIX sh run with `set -e` (as root when the task becomes root). File
    /// content travels inside the script (see `transport::script::write_file`);
    /// the engine sends scripts on stdin, so they never show up in `ps`.
    pub script: String,
    /// Unified diff of a file's content, when `ProbeOptions::with_content` was set
    /// and the content changes. Already masked when the content is secret.
    pub diff: Option<String>,
    /// Whether running this counts as `changed` (false for e.g. a `command`
    /// task with `changed_when: false`).
    pub reports_change: bool,
}

impl Change {
    pub fn new(summary: impl Into<String>, script: impl Into<String>) -> Change {
        Change {
            summary: summary.into(),
            script: script.into(),
            diff: None,
            reports_change: true,
        }
    }

    pub fn with_diff(mut self, diff: Option<String>) -> Change {
        self.diff = diff;
        self
    }
}

/// What a module's changes may affect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Only these keys: `path:/etc/x`, `package:nginx`, `unit:ssh.service`,
    /// `sysctl:net.ipv4.ip_forward`, `user:deploy`, `ufw`. A later task whose
    /// scope shares a key is re-probed after this one changes something.
    Keys(Vec<String>),
    /// Anything on the host (package installs, arbitrary commands): every later
    /// task is re-probed after this one changes something.
    Host,
}

impl Scope {
    pub fn path(path: &str) -> Scope {
        Scope::Keys(vec![format!("path:{path}")])
    }

    /// Whether a change within `self` can make state probed for `other` stale.
    /// Paths overlap when one contains the other (removing `/srv/app` changes
    /// `/srv/app/app.conf`).
    pub fn affects(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::Host, _) | (_, Scope::Host) => true,
            (Scope::Keys(mine), Scope::Keys(theirs)) => mine
                .iter()
                .any(|a| theirs.iter().any(|b| keys_overlap(a, b))),
        }
    }
}

fn keys_overlap(a: &str, b: &str) -> bool {
    match (a.strip_prefix("path:"), b.strip_prefix("path:")) {
        (Some(x), Some(y)) => contains_path(x, y) || contains_path(y, x),
        _ => a == b,
    }
}

/// Whether `inner` is `outer` or below it, by whole path components.
fn contains_path(outer: &str, inner: &str) -> bool {
    let outer = outer.trim_end_matches('/');
    let inner = inner.trim_end_matches('/');
    inner == outer || (inner.starts_with(outer) && inner[outer.len()..].starts_with('/'))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    /// The task's arguments are wrong (unknown key, bad value).
    #[error("invalid arguments: {0}")]
    Args(String),
    /// The probe printed something the module cannot read.
    #[error("unexpected probe output: {0}")]
    Probe(String),
    /// The desired state cannot be reached (e.g. a template failed to render).
    #[error("{0}")]
    Plan(String),
}

/// Modules validate their arguments beyond what serde checks.
pub trait Validate {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The module names a task may use.
pub const NAMES: &[&str] = &[
    "apt",
    "assert",
    "authorized_key",
    "command",
    "copy",
    "file",
    "line",
    "service",
    "sysctl",
    "template",
    "ufw",
    "user",
];

/// Builds the module `name` from a task's (already rendered) arguments.
pub fn build(name: &str, args: serde_json::Value) -> Result<Box<dyn Module>, ModuleError> {
    match name {
        "apt" => from_args::<apt::Apt>(args),
        "assert" => from_args::<assert::Assert>(args),
        "authorized_key" => from_args::<authorized_key::AuthorizedKey>(args),
        "command" => from_args::<command::CommandTask>(args),
        "copy" => copy::ManagedFile::build(args, copy::Source::Content),
        "file" => from_args::<file::File>(args),
        "line" => from_args::<line::Line>(args),
        "service" => from_args::<service::Service>(args),
        "sysctl" => from_args::<sysctl::Sysctl>(args),
        "template" => copy::ManagedFile::build(args, copy::Source::Template),
        "ufw" => from_args::<ufw::Ufw>(args),
        "user" => from_args::<user::User>(args),
        other => Err(ModuleError::Args(format!(
            "unknown module `{other}`; known: {}",
            NAMES.join(", ")
        ))),
    }
}

fn from_args<M>(args: serde_json::Value) -> Result<Box<dyn Module>, ModuleError>
where
    M: Module + Validate + DeserializeOwned + 'static,
{
    let module: M = serde_json::from_value(args).map_err(|e| ModuleError::Args(e.to_string()))?;
    module.validate().map_err(ModuleError::Args)?;
    Ok(Box::new(module))
}

/// File modes are written as strings ("0644") in playbooks, as YAML would
/// otherwise read 0644 as the decimal 644.
pub fn parse_mode(mode: &str) -> Result<u32, String> {
    let digits = mode.strip_prefix("0o").unwrap_or(mode);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 && !digits.is_empty() => Ok(m),
        _ => Err(format!("invalid mode {mode:?}: use octal like \"0644\"")),
    }
}

/// Deserializes a mode string ("0644") into its bits.
pub fn de_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::Deserialize;
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => parse_mode(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Deserializes a port given as a number or as a string of digits (a rendered
/// template is always a string).
pub fn de_port<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    use serde::Deserialize;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrText {
        Number(u64),
        Text(String),
    }
    let number = match Option::<NumberOrText>::deserialize(d)? {
        None => return Ok(None),
        Some(NumberOrText::Number(n)) => n.to_string(),
        Some(NumberOrText::Text(t)) => t.trim().to_string(),
    };
    number
        .parse::<u16>()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("invalid port {number:?}: use 1-65535")))
}

#[cfg(test)]
pub mod testing {
    //! Helpers for module unit tests.
    use super::*;

    pub fn facts() -> HostFacts {
        crate::facts::parse(
            "os_id=debian\nos_version=13\nos_codename=trixie\nos_name=Debian GNU/Linux 13 (trixie)\n\
             kernel=6.12.0\narch=x86_64\ncpus=2\nmem_kb=2048000\nswap_kb=0\nroot_free_kb=8000000\n\
             hostname=vps\nipv4=198.51.100.15/24\nuser=root\nsudo=root\ninit=systemd\n",
        )
        .expect("sample facts parse")
    }

    /// The marker of a module's sub-parts in tests (fixed, so probe outputs
    /// can be written by hand with `parts`).
    pub fn sections() -> Sections {
        Sections::with_nonce(0x7e57)
    }

    pub fn probe_options() -> ProbeOptions {
        ProbeOptions {
            with_content: false,
            sections: sections(),
        }
    }

    /// As under `--diff`.
    pub fn diff_probe_options() -> ProbeOptions {
        ProbeOptions {
            with_content: true,
            ..probe_options()
        }
    }

    /// A probe output written by hand, with `== NAME` lines standing for the
    /// headers of `sections()` (as the probe prints them).
    pub fn parts(text: &str) -> String {
        let sections = sections();
        text.split_inclusive('\n')
            .map(|line| match line.trim_end().strip_prefix("== ") {
                Some(name) => format!("\n{} {name}\n", sections.marker()),
                None => line.to_string(),
            })
            .collect()
    }

    /// Plans `module` against `probed` with sample facts, the test `sections()`
    /// and a renderer that knows no templates.
    pub fn plan(module: &dyn Module, probed: &str) -> Result<Plan, ModuleError> {
        let facts = facts();
        let sections = sections();
        let render = |name: &str| Err(format!("no template {name} in tests"));
        module.plan(
            probed,
            &PlanContext {
                facts: &facts,
                sections: &sections,
                render: &render,
            },
        )
    }

    /// `plan` against a probe output written by hand with `parts`' `== NAME` lines.
    pub fn plan_parts(module: &dyn Module, probed: &str) -> Result<Plan, ModuleError> {
        plan(module, &parts(probed))
    }

    /// Runs `module`'s probe in a local `sh`, as the engine would, and returns
    /// what it printed.
    pub fn run_probe(module: &dyn Module, opts: ProbeOptions) -> String {
        let out = std::process::Command::new("sh")
            .args(["-c", &module.probe(&opts)])
            .output()
            .expect("sh runs");
        String::from_utf8(out.stdout).expect("probe output is UTF-8")
    }

    /// Runs a change script in a local `sh -e` and returns its stdout; panics
    /// with its stderr when it fails.
    pub fn run_change(script: &str) -> String {
        let out = std::process::Command::new("sh")
            .args(["-ec", script])
            .output()
            .expect("sh runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("output is UTF-8")
    }

    pub fn build_from_yaml(name: &str, yaml: &str) -> Result<Box<dyn Module>, ModuleError> {
        let args: serde_json::Value = serde_saphyr::from_str(yaml).expect("test YAML parses");
        build(name, args)
    }

    /// A temp directory where root's home is `home dir` as far as the
    /// account probes go (`getent` and `id` are stubbed on `PATH`): modules
    /// that manage a user's files run for real here.
    pub struct TempHome {
        dir: tempfile::TempDir,
        path: String,
    }

    impl TempHome {
        pub fn create() -> TempHome {
            let dir = tempfile::tempdir().unwrap();
            let home = dir.path().join("home dir");
            std::fs::create_dir(&home).unwrap();
            let bin = dir.path().join("bin");
            std::fs::create_dir(&bin).unwrap();
            let stub = |name: &str, body: String| {
                crate::transport::script::testing::write_executable(
                    &bin.join(name),
                    &format!("#!/bin/sh\n{body}\n"),
                );
            };
            stub(
                "getent",
                format!("echo 'root:x:0:0:root:{}:/bin/sh'", home.display()),
            );
            stub("id", "echo root".to_string());
            let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
            TempHome { dir, path }
        }

        pub fn home(&self) -> std::path::PathBuf {
            self.dir.path().join("home dir")
        }

        /// Runs `script` with `sh -e` here; panics with its stderr when it fails.
        pub fn sh(&self, script: &str) -> String {
            let out = std::process::Command::new("sh")
                .args(["-ec", script])
                .env("PATH", &self.path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }

        /// Probes `module`, runs the changes it plans, and returns them.
        pub fn apply(&self, module: &dyn Module, opts: &ProbeOptions) -> Plan {
            let planned = plan(module, &self.sh(&module.probe(opts))).unwrap();
            for change in &planned.changes {
                self.sh(&change.script);
            }
            planned
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_octal_strings() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0o2775"), Ok(0o2775));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("").is_err());
        assert!(parse_mode("17777").is_err());
    }

    #[test]
    fn scopes_overlap_by_key_and_host_scope_touches_everything() {
        let a = Scope::path("/etc/a");
        assert!(a.affects(&Scope::Keys(vec!["path:/etc/a".into(), "x".into()])));
        assert!(!a.affects(&Scope::path("/etc/b")));
        assert!(Scope::Host.affects(&a) && a.affects(&Scope::Host));
        assert!(Scope::path("/srv/app").affects(&Scope::path("/srv/app/app.conf")));
        assert!(Scope::path("/srv/app/app.conf").affects(&Scope::path("/srv/app/")));
        assert!(!Scope::path("/srv/app").affects(&Scope::path("/srv/application")));
        assert!(!Scope::Keys(vec!["unit:a".into()]).affects(&Scope::Keys(vec!["unit:ab".into()])));
    }

    #[test]
    fn unknown_module_lists_the_known_ones() {
        let err = build("aptt", serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown module `aptt`") && err.contains("apt, assert, authorized_key"),
            "{err}"
        );
    }
}
