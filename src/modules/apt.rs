//! `apt`: packages present, absent or at the newest version; the package lists
//! refreshed only when older than `cache_valid_time`; an optional third-party
//! repository (deb822 `.sources` file plus its signing key). Every apt-get runs
//! without prompts and waits, for a bounded time, for a dpkg/apt lock held by
//! another process (unattended-upgrades right after boot, typically); when the
//! lock is still held, the script names the holder.

use std::collections::HashMap;

use serde::Deserialize;

use super::file_state::{self, Attributes, FileState};
use super::{Change, Module, ModuleError, Plan, PlanContext, ProbeOptions, Scope, Validate};
use crate::scripts;
use crate::transport::script::{self, quote};
use crate::transport::sections::Sections;
use crate::transport::FileMeta;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Apt {
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub state: PackageState,
    /// `None` keeps the host's apt configuration (normally: install them).
    pub install_recommends: Option<bool>,
    /// With `state: absent`, also delete configuration files (`apt-get purge`).
    #[serde(default)]
    pub purge: bool,
    /// Refresh the package lists before installing when they are older than
    /// `cache_valid_time` seconds.
    #[serde(default = "yes")]
    pub update_cache: bool,
    #[serde(default = "default_cache_valid_time")]
    pub cache_valid_time: u64,
    /// Seconds each apt-get waits for a lock held by another process.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: u64,
    pub repository: Option<Repository>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageState {
    #[default]
    Present,
    Absent,
    Latest,
}

/// A third-party repository: `/etc/apt/sources.list.d/NAME.sources` signed by
/// `/etc/apt/keyrings/NAME.asc`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    pub name: String,
    pub uri: String,
    /// `auto`: the host's codename. A suite ending in `/` is a flat repository.
    #[serde(default = "auto")]
    pub suite: String,
    /// Default `main` (none for a flat repository).
    pub components: Option<Words>,
    /// `auto` stands for the host's dpkg architecture.
    #[serde(default = "auto_words")]
    pub architectures: Words,
    /// Where to fetch the ASCII-armored signing key when the keyring is missing.
    pub key_url: Option<String>,
    /// The ASCII-armored signing key itself (pins it; replaces a different one).
    pub key: Option<String>,
}

/// A list of words, written as a YAML list or as one space-separated string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "OneOrMany")]
pub struct Words(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrMany> for Words {
    fn from(value: OneOrMany) -> Words {
        match value {
            OneOrMany::One(s) => Words(s.split_whitespace().map(String::from).collect()),
            OneOrMany::Many(list) => Words(list),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_cache_valid_time() -> u64 {
    3600
}

fn default_lock_timeout() -> u64 {
    300
}

const AUTO: &str = "auto";

fn auto() -> String {
    AUTO.to_string()
}

fn auto_words() -> Words {
    Words(vec![auto()])
}

const SOURCES_DIR: &str = "/etc/apt/sources.list.d";
const KEYRINGS_DIR: &str = "/etc/apt/keyrings";
const LISTS_DIR: &str = "/var/lib/apt/lists";
/// Touched after every fully successful `apt-get update` (Ubuntu's
/// update-notifier hook does the same; our update adds the hook itself).
const UPDATE_STAMP: &str = "/var/lib/apt/periodic/update-success-stamp";
const ARMORED_KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";

impl Validate for Apt {
    fn validate(&self) -> Result<(), String> {
        for name in &self.packages {
            if !is_package_name(name) {
                return Err(format!(
                    "package {name:?} is not a Debian package name (lowercase letters, digits, + - .; no versions, architectures or globs)"
                ));
            }
        }
        if self.packages.is_empty() && self.repository.is_none() && !self.update_cache {
            return Err("nothing to do: give packages, a repository or update_cache: true".into());
        }
        if self.purge && self.state != PackageState::Absent {
            return Err("purge only applies with state: absent".into());
        }
        if self.state == PackageState::Absent && self.repository.is_some() {
            return Err(
                "state: absent removes packages and never a repository; put the repository in its own task"
                    .into(),
            );
        }
        match &self.repository {
            Some(repo) => repo.validate(),
            None => Ok(()),
        }
    }
}

impl Repository {
    fn validate(&self) -> Result<(), String> {
        let name_ok = self
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && !self.name.is_empty()
            && !self.name.starts_with('.');
        if !name_ok {
            return Err(format!(
                "repository name {:?} must be letters, digits, _ . - (it names the .sources and keyring files)",
                self.name
            ));
        }
        let scheme_ok = self.uri.split_once(':').is_some_and(|(scheme, rest)| {
            !rest.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_lowercase())
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b))
        });
        // Characters apt would escape differently, or that break a deb822 field.
        let chars_ok = self
            .uri
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"'\\<>{}|^`%?#".contains(&b));
        if !scheme_ok || !chars_ok {
            return Err(format!(
                "repository uri {:?} must look like https://host/path (no spaces, quotes, %, ? or #)",
                self.uri
            ));
        }
        if !is_word(&self.suite) {
            return Err(format!(
                "repository suite {:?} must be one word",
                self.suite
            ));
        }
        let flat = self.suite.ends_with('/');
        match (&self.components, flat) {
            (Some(c), true) if !c.0.is_empty() => {
                return Err("a flat repository (suite ending in /) has no components".into())
            }
            (Some(c), false) if c.0.is_empty() => {
                return Err("repository components must not be empty".into())
            }
            _ => {}
        }
        let words = self.components.iter().flat_map(|c| &c.0);
        if let Some(bad) = words.chain(&self.architectures.0).find(|w| !is_word(w)) {
            return Err(format!(
                "repository component/architecture {bad:?} must be one word"
            ));
        }
        if self.architectures.0.is_empty() {
            return Err("repository architectures must not be empty (use auto)".into());
        }
        match (&self.key_url, &self.key) {
            (Some(url), None) if url.starts_with("https://") && is_word(url) => Ok(()),
            (Some(url), None) => Err(format!(
                "key_url {url:?} must be an https:// URL: the key decides what apt trusts"
            )),
            (None, Some(key)) if key.contains(ARMORED_KEY) => Ok(()),
            (None, Some(_)) => Err(format!("key must be an ASCII-armored key ({ARMORED_KEY})")),
            _ => Err("a repository needs exactly one of key_url or key (its signing key)".into()),
        }
    }

    fn sources_path(&self) -> String {
        format!("{SOURCES_DIR}/{}.sources", self.name)
    }

    fn keyring_path(&self) -> String {
        format!("{KEYRINGS_DIR}/{}.asc", self.name)
    }

    /// The old one-line-format file of the same name, which would define the
    /// repository a second time (with a conflicting Signed-By, typically).
    fn legacy_list_path(&self) -> String {
        format!("{SOURCES_DIR}/{}.list", self.name)
    }

    fn needs_host_arch(&self) -> bool {
        self.architectures.0.iter().any(|a| a == AUTO)
    }

    /// Where apt downloads the repository's Release files from, without the
    /// file name: `URI/dists/SUITE/`, or `URI/SUITE` for a flat repository.
    fn release_base(&self, suite: &str) -> String {
        let uri = self.uri.trim_end_matches('/');
        if suite.ends_with('/') {
            format!("{uri}/{suite}")
        } else {
            format!("{uri}/dists/{suite}/")
        }
    }

    fn suite<'a>(&'a self, facts_codename: &'a str) -> Result<&'a str, ModuleError> {
        if self.suite != AUTO {
            return Ok(&self.suite);
        }
        if facts_codename.is_empty() {
            return Err(ModuleError::Plan(
                "suite: auto needs the host's codename, and /etc/os-release has none; set suite"
                    .into(),
            ));
        }
        Ok(facts_codename)
    }

    /// The deb822 stanza.
    fn sources_content(&self, suite: &str, host_arch: Option<&str>) -> Result<String, ModuleError> {
        let mut architectures: Vec<&str> = Vec::new();
        for arch in &self.architectures.0 {
            let arch = match (arch.as_str(), host_arch) {
                (AUTO, Some(host)) => host,
                (AUTO, None) => {
                    return Err(ModuleError::Probe(
                        "the host's dpkg architecture was not probed".into(),
                    ))
                }
                (named, _) => named,
            };
            if !architectures.contains(&arch) {
                architectures.push(arch);
            }
        }
        let components = match &self.components {
            Some(c) => c.0.join(" "),
            None if suite.ends_with('/') => String::new(),
            None => "main".to_string(),
        };
        let mut content = format!(
            "# Managed by vpsup; local edits are overwritten.\nTypes: deb\nURIs: {}\nSuites: {suite}\n",
            self.uri
        );
        if !components.is_empty() {
            content.push_str(&format!("Components: {components}\n"));
        }
        content.push_str(&format!(
            "Architectures: {}\nSigned-By: {}\n",
            architectures.join(" "),
            self.keyring_path()
        ));
        Ok(content)
    }

    fn probe(&self, opts: &ProbeOptions) -> String {
        let arch = if self.needs_host_arch() {
            "printf 'arch '; dpkg --print-architecture\n"
        } else {
            ""
        };
        // Every Release file downloaded from this URI, whatever the suite.
        let lists_glob = format!(
            "{}*Release",
            quote(&format!(
                "{LISTS_DIR}/{}",
                list_file_name(&format!("{}/", self.uri.trim_end_matches('/')))
            ))
        );
        let repository = format!(
            "{arch}for f in {lists_glob}; do if [ -e \"$f\" ]; then echo \"fetched ${{f##*/}}\"; fi; done
if [ -e {legacy} ]; then echo legacy present; else echo legacy absent; fi",
            legacy = quote(&self.legacy_list_path()),
        );
        opts.sections.script([
            ("repository", repository.as_str()),
            (
                "sources",
                &file_state::probe(&self.sources_path(), opts.with_content),
            ),
            ("keyring", &file_state::probe(&self.keyring_path(), false)),
        ])
    }

    fn plan(
        &self,
        probed: &RepositoryProbe,
        ctx: &PlanContext,
    ) -> Result<RepositoryPlan, ModuleError> {
        let suite = self.suite(&ctx.facts.os_codename)?;
        let root_readable = Attributes {
            mode: Some(0o644),
            owner: Some("root".into()),
            group: Some("root".into()),
        };
        let meta = FileMeta {
            mode: 0o644,
            owner: root_readable.chown_spec(),
        };
        let mut plan = RepositoryPlan::default();

        let keyring = self.keyring_path();
        let key_wanted = self.key.as_deref().map(str::as_bytes);
        match (&probed.keyring, key_wanted) {
            (FileState::Absent, None) => {
                let url = self.key_url.as_deref().unwrap_or_default();
                plan.edit(format!("fetch {} key", self.name), fetch_key(url, &keyring));
            }
            (FileState::Absent, Some(key)) => plan.edit(
                format!("write {} key", self.name),
                script::write_file(&keyring, key, &meta),
            ),
            (FileState::Present(info), Some(key))
                if info.sha256.as_deref() != Some(&file_state::sha256_hex(key)) =>
            {
                plan.edit(
                    format!("replace {} key", self.name),
                    script::write_file(&keyring, key, &meta),
                )
            }
            (FileState::Present(info), _) => plan.fix(&root_readable, &keyring, info),
        }

        let sources = self.sources_path();
        let content = self.sources_content(suite, probed.host_arch.as_deref())?;
        let content = content.as_bytes();
        match &probed.sources {
            FileState::Absent => {
                plan.diff = file_state::diff(&sources, None, content, false);
                plan.edit(
                    format!("add {}.sources", self.name),
                    script::write_file(&sources, content, &meta),
                );
            }
            FileState::Present(info)
                if info.sha256.as_deref() != Some(&file_state::sha256_hex(content)) =>
            {
                plan.diff = info
                    .content
                    .as_deref()
                    .and_then(|old| file_state::diff(&sources, Some(old), content, false));
                plan.edit(
                    format!("update {}.sources", self.name),
                    script::write_file(&sources, content, &meta),
                );
            }
            FileState::Present(info) => plan.fix(&root_readable, &sources, info),
        }

        if probed.legacy_list {
            let legacy = self.legacy_list_path();
            plan.edit(
                format!("remove {}.list", self.name),
                format!("rm -f -- {}", quote(&legacy)),
            );
        }

        let base = list_file_name(&self.release_base(suite));
        plan.fetched = ["InRelease", "Release"]
            .iter()
            .any(|file| probed.fetched.contains(&format!("{base}{file}")));
        Ok(plan)
    }
}

#[derive(Debug, Default)]
struct RepositoryPlan {
    summary: Vec<String>,
    script: Vec<String>,
    diff: Option<String>,
    /// A file apt reads changed: the lists must be updated.
    edited: bool,
    /// Whether apt has this repository's Release file (a failed update leaves none).
    fetched: bool,
}

impl RepositoryPlan {
    fn edit(&mut self, summary: String, script: String) {
        self.summary.push(summary);
        self.script.push(script);
        self.edited = true;
    }

    fn fix(&mut self, want: &Attributes, path: &str, info: &file_state::PathInfo) {
        if let Some((summary, script)) = want.fix(path, info) {
            let file = path.rsplit('/').next().unwrap_or(path);
            self.summary.push(format!("{file} {summary}"));
            self.script.push(script);
        }
    }
}

/// Downloads an ASCII-armored key into place (curl when present, else apt's
/// own downloader, which every apt system has).
fn fetch_key(url: &str, dest: &str) -> String {
    let url = quote(url);
    format!(
        r#"install -d -m 0755 {dir}
(
set -e
dest={dest}
tmp=$(mktemp "$(dirname -- "$dest")/.vpsup-tmp.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
if command -v curl >/dev/null 2>&1; then
  curl -fsSL --retry 3 -o "$tmp" {url} </dev/null
else
  /usr/lib/apt/apt-helper download-file {url} "$tmp" </dev/null
fi
if ! grep -q -F -- '{ARMORED_KEY}' "$tmp"; then
  echo "apt: "{url}" did not return an ASCII-armored OpenPGP key; point key_url at the .asc/armored key or give key:" >&2
  exit 1
fi
chmod 0644 "$tmp"
mv -f -- "$tmp" "$dest"
trap - EXIT
)"#,
        dir = quote(KEYRINGS_DIR),
        dest = quote(dest),
    )
}

/// The name apt gives a file downloaded from `url` in /var/lib/apt/lists
/// (apt-pkg's `URItoFileName`): the URL without scheme and credentials, with
/// odd bytes %-escaped and every `/` turned into `_`.
fn list_file_name(url: &str) -> String {
    let after_scheme = url.split_once(':').map_or(url, |(_, rest)| rest);
    let location = match after_scheme.strip_prefix("//") {
        Some(rest) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host);
            format!("{host}{path}")
        }
        None => after_scheme.to_string(),
    };
    let mut name = String::with_capacity(location.len());
    for b in location.bytes() {
        if b == b'/' {
            name.push('_');
        } else if b <= 0x20 || b >= 0x7f || b"\\|{}[]<>\"^~_=!@#$%&*".contains(&b) {
            name.push_str(&format!("%{b:02x}"));
        } else {
            name.push(b as char);
        }
    }
    name
}

fn is_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b))
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
}

/// `${Status}` is `WANT ERROR-FLAG STATUS`, e.g. `install ok installed`.
const DPKG_FORMAT: &str = "${Package} ${Status} ${Version}\\n";

/// Prints `NAME CANDIDATE` for each package `apt-cache policy` describes.
const CANDIDATE_AWK: &str =
    r#"/^[^ ]/ { name = $1; sub(/:$/, "", name) } $1 == "Candidate:" { print name, $2 }"#;

/// Seconds since the last fully successful `apt-get update`. The stamp is the
/// only robust record: the lists directory's mtime does not move when an update
/// finds nothing new, and list files carry the server's Last-Modified time.
/// Lists without any Packages file (emptied, as in container images) count as
/// never updated.
fn cache_probe() -> String {
    format!(
        "echo \"now $(date +%s)\"
stat -c 'stamp %Y' {stamp} 2>/dev/null
set -- {lists}/*_Packages*
if [ -e \"$1\" ]; then echo lists present; fi",
        stamp = quote(UPDATE_STAMP),
        lists = quote(LISTS_DIR),
    )
}

impl Module for Apt {
    fn probe(&self, opts: &ProbeOptions) -> String {
        let mut parts = vec![("cache", cache_probe())];
        if !self.packages.is_empty() {
            let names = shell_words(&self.packages);
            parts.push((
                "packages",
                format!(
                    "dpkg-query -W -f {} {names} 2>/dev/null",
                    quote(DPKG_FORMAT)
                ),
            ));
            if self.state == PackageState::Latest {
                parts.push((
                    "candidates",
                    format!(
                        "LC_ALL=C apt-cache policy {names} 2>/dev/null | awk {}",
                        quote(CANDIDATE_AWK)
                    ),
                ));
            }
        }
        let mut script = opts
            .sections
            .script(parts.iter().map(|(name, body)| (*name, body.as_str())));
        if let Some(repo) = &self.repository {
            script.push_str(&repo.probe(opts));
        }
        script
    }

    fn plan(&self, probed: &str, ctx: &PlanContext) -> Result<Plan, ModuleError> {
        let probed = Probed::parse(probed, ctx.sections, self)?;
        let mut summary = Vec::new();
        let mut file_steps = Vec::new();
        let mut apt_steps = Vec::new();
        let mut diff = None;
        let mut update_reason: Option<String> = None;

        if let (Some(repo), Some(repo_probe)) = (&self.repository, &probed.repository) {
            let plan = repo.plan(repo_probe, ctx)?;
            if plan.edited {
                update_reason = Some(String::new());
            } else if !plan.fetched {
                update_reason = Some(format!(" ({} not fetched yet)", repo.name));
            }
            summary.extend(plan.summary);
            file_steps.extend(plan.script);
            diff = plan.diff;
        }

        let cache_stale = probed
            .cache_age
            .is_none_or(|age| age >= self.cache_valid_time);
        let packages = self.package_step(&probed, cache_stale && self.update_cache);
        let wants_fresh_lists = match (&packages, &self.repository) {
            (Some(step), _) => step.installs,
            // Only a cache refresh was asked for.
            (None, None) => self.packages.is_empty(),
            (None, Some(_)) => false,
        };
        if update_reason.is_none() && self.update_cache && cache_stale && wants_fresh_lists {
            update_reason = Some(match probed.cache_age {
                Some(age) => format!(" (last {} ago)", human_duration(age)),
                None => " (no record of an update)".to_string(),
            });
        }
        if let Some(reason) = update_reason {
            summary.push(format!("update apt lists{reason}"));
            apt_steps.push(format!(
                "vpsup_apt_get -o {} update",
                quote(&format!(
                    "APT::Update::Post-Invoke-Success::=touch {UPDATE_STAMP} 2>/dev/null || true"
                ))
            ));
        }
        if let Some(step) = packages {
            summary.push(step.summary);
            apt_steps.push(step.script);
        }

        if summary.is_empty() {
            return Ok(Plan::ok());
        }
        let prelude = if apt_steps.is_empty() {
            "set -e\n".to_string()
        } else {
            self.apt_get_function()
        };
        let steps: Vec<&str> = file_steps
            .iter()
            .chain(&apt_steps)
            .map(|step| step.trim_end_matches('\n'))
            .collect();
        let script = format!("(\n{prelude}{}\n)\n", steps.join("\n"));
        Ok(Plan::change(
            Change::new(summary.join("; "), script).with_diff(diff),
        ))
    }

    fn scope(&self) -> Scope {
        // Package installs create users, files and units, and start services.
        Scope::Host
    }
}

/// What to do with the packages.
struct PackageStep {
    summary: String,
    script: String,
    /// Installs or upgrades (so it wants fresh lists), rather than removes.
    installs: bool,
}

impl Apt {
    fn package_step(&self, probed: &Probed, lists_will_refresh: bool) -> Option<PackageStep> {
        let status = |name: &str| probed.packages.get(name).cloned().unwrap_or_default();
        let names = |list: &[&String]| {
            list.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let install = |targets: Vec<&String>, summary: String| -> Option<PackageStep> {
            if targets.is_empty() {
                return None;
            }
            let recommends = match self.install_recommends {
                Some(true) => " --install-recommends",
                Some(false) => " --no-install-recommends",
                None => "",
            };
            Some(PackageStep {
                summary,
                script: format!("vpsup_apt_get install{recommends} {}", shell_words(targets)),
                installs: true,
            })
        };
        match self.state {
            PackageState::Present => {
                let missing: Vec<&String> = self
                    .packages
                    .iter()
                    .filter(|p| !status(p).installed())
                    .collect();
                install(missing.clone(), format!("install {}", names(&missing)))
            }
            PackageState::Latest => {
                let mut missing = Vec::new();
                let mut outdated = Vec::new();
                let mut upgrades = Vec::new();
                for name in &self.packages {
                    let installed = status(name);
                    if !installed.installed() {
                        missing.push(name);
                    } else if installed.held {
                        // An administrator pinned this version (apt-mark hold).
                    } else if lists_will_refresh {
                        // The probed candidates are stale: let apt decide after the update.
                        outdated.push(name);
                    } else if let Some(candidate) = probed.candidate(name) {
                        if installed.version.as_deref() != Some(candidate) {
                            outdated.push(name);
                            upgrades.push(format!(
                                "{name} {} -> {candidate}",
                                installed.version.as_deref().unwrap_or("?")
                            ));
                        }
                    }
                }
                let mut summary = Vec::new();
                if !missing.is_empty() {
                    summary.push(format!("install {}", names(&missing)));
                }
                if lists_will_refresh && !outdated.is_empty() {
                    summary.push(format!("upgrade {} if newer", names(&outdated)));
                } else if !upgrades.is_empty() {
                    summary.push(format!("upgrade {}", upgrades.join(", ")));
                }
                let targets = missing.into_iter().chain(outdated).collect();
                install(targets, summary.join("; "))
            }
            PackageState::Absent => {
                let present: Vec<&String> = self
                    .packages
                    .iter()
                    .filter(|p| {
                        let s = status(p);
                        s.on_disk() || (self.purge && s.state == DpkgState::ConfigFiles)
                    })
                    .collect();
                let verb = if self.purge { "purge" } else { "remove" };
                (!present.is_empty()).then(|| PackageStep {
                    summary: format!("{verb} {}", names(&present)),
                    script: format!(
                        "vpsup_apt_get {verb} {}",
                        shell_words(present.iter().copied())
                    ),
                    installs: false,
                })
            }
        }
    }

    /// Defines `vpsup_apt_get` (src/scripts/apt_get.sh): apt-get without
    /// prompts and with a bounded wait for locks.
    fn apt_get_function(&self) -> String {
        let timeout = self.lock_timeout.to_string();
        format!("{}\n", scripts::APT_GET.fill(&[("timeout", &timeout)]))
    }
}

/// Package names as shell words, space-separated.
fn shell_words<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    names
        .into_iter()
        .map(|name| quote(name))
        .collect::<Vec<_>>()
        .join(" ")
}

fn human_duration(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 2 * 86400 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

/// The state `probe` printed, read back.
#[derive(Debug)]
struct Probed {
    /// Seconds since the last successful update; `None` when there is no
    /// record of one (or the lists are empty).
    cache_age: Option<u64>,
    /// Packages dpkg knows; a missing one was never installed.
    packages: HashMap<String, PackageStatus>,
    /// `Candidate:` of `apt-cache policy`; `None` for `(none)`.
    candidates: HashMap<String, Option<String>>,
    repository: Option<RepositoryProbe>,
}

#[derive(Debug)]
struct RepositoryProbe {
    host_arch: Option<String>,
    /// Names of Release files in /var/lib/apt/lists from the repository's URI.
    fetched: Vec<String>,
    legacy_list: bool,
    sources: FileState,
    keyring: FileState,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PackageStatus {
    state: DpkgState,
    /// `apt-mark hold`.
    held: bool,
    version: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum DpkgState {
    #[default]
    NotInstalled,
    /// Removed, but its configuration files remain.
    ConfigFiles,
    Installed,
    /// Unpacked, half-configured...: on disk, not working.
    Broken,
}

impl PackageStatus {
    fn installed(&self) -> bool {
        self.state == DpkgState::Installed
    }

    fn on_disk(&self) -> bool {
        matches!(self.state, DpkgState::Installed | DpkgState::Broken)
    }
}

impl Probed {
    fn parse(text: &str, sections: &Sections, apt: &Apt) -> Result<Probed, ModuleError> {
        let parts = sections.parse(text);
        let stray = parts.preamble().trim();
        if !stray.is_empty() {
            return Err(ModuleError::Probe(format!(
                "unexpected output before the first part: {stray:?}"
            )));
        }
        let section = |name: &str| {
            parts
                .get(name)
                .map_err(|e| ModuleError::Probe(e.to_string()))
        };
        let mut probed = Probed {
            cache_age: parse_cache(section("cache")?)?,
            packages: HashMap::new(),
            candidates: HashMap::new(),
            repository: None,
        };
        if !apt.packages.is_empty() {
            probed.packages = parse_packages(section("packages")?)?;
            if apt.state == PackageState::Latest {
                probed.candidates = parse_candidates(section("candidates")?)?;
            }
        }
        if let Some(repo) = &apt.repository {
            probed.repository = Some(parse_repository(
                section("repository")?,
                section("sources")?,
                section("keyring")?,
                repo.needs_host_arch(),
            )?);
        }
        Ok(probed)
    }

    /// `None` also for a name apt-cache has never heard of (it prints nothing).
    fn candidate(&self, name: &str) -> Option<&str> {
        self.candidates.get(name).and_then(|c| c.as_deref())
    }
}

fn parse_cache(section: &str) -> Result<Option<u64>, ModuleError> {
    let mut now = None;
    let mut stamp = None;
    let mut lists = false;
    for line in section.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let number = |v: &str| {
            v.parse::<u64>().map_err(|_| {
                ModuleError::Probe(format!("expected a number of seconds in {line:?}"))
            })
        };
        match line.split_once(' ') {
            Some(("now", v)) => now = Some(number(v)?),
            Some(("stamp", v)) => stamp = Some(number(v)?),
            Some(("lists", "present")) => lists = true,
            _ => {
                return Err(ModuleError::Probe(format!(
                    "unexpected cache line {line:?}"
                )))
            }
        }
    }
    let now = now.ok_or_else(|| ModuleError::Probe("the cache section has no `now`".into()))?;
    // A stamp in the future (clock set back) counts as just updated.
    Ok(stamp
        .filter(|_| lists)
        .map(|stamp| now.saturating_sub(stamp)))
}

fn parse_packages(section: &str) -> Result<HashMap<String, PackageStatus>, ModuleError> {
    let mut packages: HashMap<String, PackageStatus> = HashMap::new();
    for line in section.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (name, want, status, version) = match fields.as_slice() {
            [name, want, _flag, status] => (*name, *want, *status, None),
            [name, want, _flag, status, version] => {
                (*name, *want, *status, Some(version.to_string()))
            }
            _ => {
                return Err(ModuleError::Probe(format!(
                    "expected `NAME WANT FLAG STATUS [VERSION]` from dpkg-query, got {line:?}"
                )))
            }
        };
        let state = match status {
            "installed" | "triggers-pending" | "triggers-awaited" => DpkgState::Installed,
            "not-installed" => DpkgState::NotInstalled,
            "config-files" => DpkgState::ConfigFiles,
            "half-installed" | "unpacked" | "half-configured" => DpkgState::Broken,
            other => {
                return Err(ModuleError::Probe(format!(
                    "unknown dpkg status {other:?} in {line:?}"
                )))
            }
        };
        let parsed = PackageStatus {
            state,
            held: want == "hold",
            version: version.filter(|_| state != DpkgState::NotInstalled),
        };
        // One line per architecture for multi-arch packages: an installed one wins.
        let entry = packages.entry(name.to_string()).or_default();
        if !entry.installed() && parsed.state != DpkgState::NotInstalled {
            *entry = parsed;
        }
    }
    Ok(packages)
}

fn parse_candidates(section: &str) -> Result<HashMap<String, Option<String>>, ModuleError> {
    section
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(
            |line| match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                [name, "(none)"] => Ok((name.to_string(), None)),
                [name, version] => Ok((name.to_string(), Some(version.to_string()))),
                _ => Err(ModuleError::Probe(format!(
                    "expected `NAME CANDIDATE`, got {line:?}"
                ))),
            },
        )
        .collect()
}

fn parse_repository(
    section: &str,
    sources: &str,
    keyring: &str,
    needs_arch: bool,
) -> Result<RepositoryProbe, ModuleError> {
    let mut host_arch = None;
    let mut fetched = Vec::new();
    let mut legacy_list = None;
    for line in section.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once(' ') {
            Some(("arch", arch)) if is_word(arch) => host_arch = Some(arch.to_string()),
            Some(("fetched", file)) => fetched.push(file.to_string()),
            Some(("legacy", "present")) => legacy_list = Some(true),
            Some(("legacy", "absent")) => legacy_list = Some(false),
            _ => {
                return Err(ModuleError::Probe(format!(
                    "unexpected repository line {line:?}"
                )))
            }
        }
    }
    if needs_arch && host_arch.is_none() {
        return Err(ModuleError::Probe(
            "dpkg --print-architecture printed nothing".into(),
        ));
    }
    let file = |text: &str| file_state::parse(text).map_err(ModuleError::Probe);
    Ok(RepositoryProbe {
        host_arch,
        fetched,
        legacy_list: legacy_list.ok_or_else(|| ModuleError::Probe("no `legacy` line".into()))?,
        sources: file(sources)?,
        keyring: file(keyring)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    // Probe outputs here are written with `== NAME` part headers.
    use crate::modules::testing::{self, build_from_yaml, parts, plan_parts as plan};

    fn apt(yaml: &str) -> Box<dyn Module> {
        build_from_yaml("apt", yaml).unwrap()
    }

    fn error(yaml: &str) -> String {
        build_from_yaml("apt", yaml).unwrap_err().to_string()
    }

    /// A cache updated 10 minutes ago.
    const FRESH: &str = "== cache\nnow 1700000600\nstamp 1700000000\nlists present\n";
    /// A cache updated 5 hours ago.
    const STALE: &str = "== cache\nnow 1700018000\nstamp 1700000000\nlists present\n";

    fn only_change(p: &Plan) -> &Change {
        assert_eq!(p.changes.len(), 1, "{p:?}");
        &p.changes[0]
    }

    /// The lines of a change script after the `vpsup_apt_get` definition.
    fn steps(change: &Change) -> Vec<&str> {
        let body = change.script.split("\n}\n").last().unwrap();
        body.lines().filter(|l| *l != ")").collect()
    }

    const UPDATE: &str = "vpsup_apt_get -o 'APT::Update::Post-Invoke-Success::=touch /var/lib/apt/periodic/update-success-stamp 2>/dev/null || true' update";

    #[test]
    fn installed_packages_are_ok() {
        let m = apt("packages: [nginx, ufw]\n");
        let probed = format!(
            "{STALE}== packages\nnginx install ok installed 1.22.1-9\nufw hold ok installed 0.36.2-1\n"
        );
        assert!(plan(&*m, &probed).unwrap().is_ok());
    }

    #[test]
    fn missing_packages_are_installed_without_refreshing_fresh_lists() {
        let m = apt("packages: [nginx, ufw, curl]\n");
        let probed = format!(
            "{FRESH}== packages\nnginx install ok installed 1.22.1-9\nufw deinstall ok config-files 0.36.2-1\n"
        );
        let p = plan(&*m, &probed).unwrap();
        let c = only_change(&p);
        assert_eq!(c.summary, "install ufw, curl");
        assert_eq!(steps(c), ["vpsup_apt_get install ufw curl"]);
    }

    #[test]
    fn stale_lists_are_refreshed_before_installing() {
        let m = apt("packages: [nginx]\ninstall_recommends: false\n");
        let c = plan(&*m, &format!("{STALE}== packages\n"))
            .unwrap()
            .changes
            .remove(0);
        assert_eq!(c.summary, "update apt lists (last 5 h ago); install nginx");
        assert_eq!(
            steps(&c),
            [
                UPDATE,
                "vpsup_apt_get install --no-install-recommends nginx"
            ]
        );
        // No stamp (a Debian host nobody updated through vpsup yet), or emptied lists.
        for cache in ["== cache\nnow 5\n", "== cache\nnow 5\nstamp 4\n"] {
            let c = plan(&*m, &format!("{cache}== packages\n"))
                .unwrap()
                .changes
                .remove(0);
            assert_eq!(
                c.summary,
                "update apt lists (no record of an update); install nginx"
            );
        }
        // update_cache: false installs from the lists as they are.
        let m = apt("packages: [nginx]\nupdate_cache: false\ninstall_recommends: true\n");
        let c = plan(&*m, &format!("{STALE}== packages\n"))
            .unwrap()
            .changes
            .remove(0);
        assert_eq!(
            steps(&c),
            ["vpsup_apt_get install --install-recommends nginx"]
        );
    }

    #[test]
    fn cache_valid_time_decides_staleness() {
        let m = apt("packages: [nginx]\ncache_valid_time: 601\n");
        let c = plan(&*m, &format!("{FRESH}== packages\n"))
            .unwrap()
            .changes
            .remove(0);
        assert_eq!(c.summary, "install nginx");
        let m = apt("packages: [nginx]\ncache_valid_time: 600\n");
        let c = plan(&*m, &format!("{FRESH}== packages\n"))
            .unwrap()
            .changes
            .remove(0);
        assert_eq!(
            c.summary,
            "update apt lists (last 10 min ago); install nginx"
        );
    }

    #[test]
    fn a_cache_only_task_refreshes_stale_lists() {
        let m = apt("update_cache: true\ncache_valid_time: 86400\n");
        assert!(plan(&*m, FRESH).unwrap().is_ok());
        let c = plan(&*m, "== cache\nnow 200000\nstamp 10\nlists present\n")
            .unwrap()
            .changes
            .remove(0);
        assert_eq!(c.summary, "update apt lists (last 2 days ago)");
        assert_eq!(steps(&c), [UPDATE]);
    }

    #[test]
    fn latest_upgrades_what_has_a_newer_candidate() {
        let m = apt("packages: [nginx, ufw, curl, bash]\nstate: latest\n");
        let probed = format!(
            "{FRESH}== packages\nnginx install ok installed 1.22.1-9\nufw install ok installed 0.36.1\nbash hold ok installed 5.1\n\
             == candidates\nnginx 1.22.1-9\nufw 0.36.2\ncurl 7.88.1\nbash 5.2\n"
        );
        let c = plan(&*m, &probed).unwrap().changes.remove(0);
        assert_eq!(c.summary, "install curl; upgrade ufw 0.36.1 -> 0.36.2");
        assert_eq!(steps(&c), ["vpsup_apt_get install curl ufw"]);
        let converged = format!(
            "{FRESH}== packages\nnginx install ok installed 1.22.1-9\n== candidates\nnginx 1.22.1-9\n"
        );
        assert!(
            plan(&*apt("packages: [nginx]\nstate: latest\n"), &converged)
                .unwrap()
                .is_ok()
        );
        // Installed but no candidate any more (repository gone): nothing to upgrade to.
        let orphan = format!(
            "{FRESH}== packages\nnginx install ok installed 1.0\n== candidates\nnginx (none)\n"
        );
        assert!(plan(&*apt("packages: [nginx]\nstate: latest\n"), &orphan)
            .unwrap()
            .is_ok());
    }

    #[test]
    fn latest_with_stale_lists_lets_apt_choose_after_the_update() {
        let m = apt("packages: [nginx, curl]\nstate: latest\n");
        let probed = format!(
            "{STALE}== packages\nnginx install ok installed 1.22.1-9\n== candidates\nnginx 1.22.1-9\ncurl 7.88.1\n"
        );
        let c = plan(&*m, &probed).unwrap().changes.remove(0);
        assert_eq!(
            c.summary,
            "update apt lists (last 5 h ago); install curl; upgrade nginx if newer"
        );
        assert_eq!(steps(&c), [UPDATE, "vpsup_apt_get install curl nginx"]);
    }

    #[test]
    fn absent_removes_or_purges() {
        let probed = format!(
            "{STALE}== packages\nnginx install ok installed 1.22.1-9\nufw deinstall ok config-files 0.36\napache2 install reinstreq half-configured 2.4\n"
        );
        let m = apt("packages: [nginx, ufw, apache2, curl]\nstate: absent\n");
        let c = plan(&*m, &probed).unwrap().changes.remove(0);
        // Removing never refreshes the lists.
        assert_eq!(c.summary, "remove nginx, apache2");
        assert_eq!(steps(&c), ["vpsup_apt_get remove nginx apache2"]);
        let m = apt("packages: [nginx, ufw]\nstate: absent\npurge: true\n");
        let c = plan(&*m, &probed).unwrap().changes.remove(0);
        assert_eq!(steps(&c), ["vpsup_apt_get purge nginx ufw"]);
        let gone = format!("{STALE}== packages\nufw deinstall ok config-files 0.36\n");
        assert!(
            plan(&*apt("packages: [ufw, nginx]\nstate: absent\n"), &gone)
                .unwrap()
                .is_ok()
        );
    }

    #[test]
    fn apt_get_runs_without_prompts_and_with_a_bounded_lock_wait() {
        let m = apt("packages: [nginx]\nlock_timeout: 120\n");
        let c = plan(&*m, &format!("{FRESH}== packages\n"))
            .unwrap()
            .changes
            .remove(0);
        assert!(c.script.starts_with("(\nset -e\n"), "{}", c.script);
        assert!(c.script.ends_with("\n)\n"), "{}", c.script);
        assert!(
            c.script.contains(
                "DEBIAN_FRONTEND=noninteractive APT_LISTCHANGES_FRONTEND=none NEEDRESTART_SUSPEND=1 apt-get -y -o DPkg::Lock::Timeout=120 \
                 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \"$@\" </dev/null"
            ),
            "{}",
            c.script
        );
        assert!(c.script.contains("deadline=$(( $(date +%s) + 120 ))"));
        assert!(c.script.contains("is still held after 120 s by"));
    }

    /// Runs `vpsup_apt_get --version` from a change script with a fake
    /// `apt-get` first in PATH (never the real one: see the guard).
    fn run_with_fake_apt_get(fake: &str, lock_timeout: u64) -> std::process::Output {
        run_with_fakes(fake, "exit 99", lock_timeout)
    }

    /// The same with a fake `dpkg` too.
    fn run_with_fakes(fake: &str, fake_dpkg: &str, lock_timeout: u64) -> std::process::Output {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("apt-get");
        for (name, body) in [("apt-get", fake), ("dpkg", fake_dpkg)] {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::process::Command::new("chmod")
                .arg("755")
                .arg(&path)
                .status()
                .unwrap();
        }
        let m = Apt {
            packages: vec![],
            state: PackageState::Present,
            install_recommends: None,
            purge: false,
            update_cache: true,
            cache_valid_time: 0,
            lock_timeout,
            repository: None,
        };
        let script = format!(
            "{}[ \"$(command -v apt-get)\" = {} ] || exit 99\nvpsup_apt_get --version\necho after",
            m.apt_get_function(),
            quote(bin.to_str().unwrap())
        );
        std::process::Command::new("sh")
            .args(["-c", &script])
            .current_dir(dir.path())
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .output()
            .unwrap()
    }

    #[test]
    fn a_held_lock_fails_with_the_holder_named() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("lock-frontend");
        std::fs::write(&lock, "").unwrap();
        let mut holder = std::process::Command::new("flock")
            .arg("-x")
            .arg(&lock)
            .args(["sleep", "30"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let fake = format!(
            "echo 'E: Unable to acquire the dpkg frontend lock ({}), is another process using it?' >&2\nexit 100",
            lock.display()
        );
        let out = run_with_fake_apt_get(&fake, 0);
        holder.kill().unwrap();
        holder.wait().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(100), "{stderr}");
        let expected = format!(
            "apt: {} is still held after 0 s by process {} (flock -x {} sleep 30); retry later, or raise lock_timeout",
            lock.display(),
            holder.id(),
            lock.display()
        );
        assert!(stderr.contains(&expected), "{stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("after"));
    }

    #[test]
    fn an_interrupted_dpkg_run_is_finished_once_then_apt_goes_on() {
        let interrupted = "if [ ! -e configured ]; then echo \"E: dpkg was interrupted, you must manually run 'dpkg --configure -a' to correct the problem.\" >&2; exit 100; fi\necho installed";
        let out = run_with_fakes(interrupted, "echo \"$@\" > configured", 0);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("apt: an earlier package run was interrupted"),
            "{stderr}"
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "installed\nafter\n");

        // When finishing it does not help, the second failure is final.
        let always = "echo \"E: dpkg was interrupted, you must manually run 'dpkg --configure -a'\" >&2; exit 100";
        let out = run_with_fakes(always, "true", 0);
        assert_eq!(out.status.code(), Some(100));
    }

    #[test]
    fn a_lock_released_in_time_is_retried_and_other_failures_are_not() {
        // Fails with the lists lock once (as `apt-get update` does), then works.
        let fake = "if [ ! -e tried ]; then touch tried; echo 'E: Could not get lock /var/lib/apt/lists/lock. It is held by process 1 (apt-get)' >&2; exit 100; fi\necho ok";
        let out = run_with_fake_apt_get(fake, 30);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("apt: /var/lib/apt/lists/lock is held by"),
            "{stderr}"
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\nafter\n");
        let out =
            run_with_fake_apt_get("echo 'E: Unable to locate package nginx' >&2; exit 100", 30);
        assert_eq!(out.status.code(), Some(100));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "E: Unable to locate package nginx\n"
        );
    }

    const DOCKER: &str = "packages: [docker-ce]
repository:
  name: docker
  uri: https://download.docker.com/linux/debian
  components: [stable]
  key_url: https://download.docker.com/linux/debian/gpg
";

    const DOCKER_SOURCES_TRIXIE: &str = "# Managed by vpsup; local edits are overwritten.
Types: deb
URIs: https://download.docker.com/linux/debian
Suites: trixie
Components: stable
Architectures: amd64
Signed-By: /etc/apt/keyrings/docker.asc
";

    fn repo_probe(fetched: &str, sources: &str, keyring: &str) -> String {
        format!(
            "== repository\narch amd64\n{fetched}legacy absent\n== sources\n{sources}\n== keyring\n{keyring}\n"
        )
    }

    #[test]
    fn a_new_repository_is_added_and_fetched_before_installing() {
        let m = apt(DOCKER);
        let probed = format!("{FRESH}== packages\n{}", repo_probe("", "absent", "absent"));
        let c = plan(&*m, &probed).unwrap().changes.remove(0);
        assert_eq!(
            c.summary,
            "fetch docker key; add docker.sources; update apt lists; install docker-ce"
        );
        let s = &c.script;
        let key = s
            .find("curl -fsSL --retry 3 -o \"$tmp\" https://download.docker.com/linux/debian/gpg")
            .unwrap();
        let sources = s
            .find("dest=/etc/apt/sources.list.d/docker.sources")
            .unwrap();
        let update = s.find(UPDATE).unwrap();
        let install = s.find("vpsup_apt_get install docker-ce").unwrap();
        assert!(key < sources && sources < update && update < install, "{s}");
        assert!(s.contains("/usr/lib/apt/apt-helper download-file https://download.docker.com/linux/debian/gpg \"$tmp\""));
        assert!(
            s.contains("dest=/etc/apt/keyrings/docker.asc") && s.contains("chown -- root:root")
        );
        let diff = c.diff.unwrap();
        assert!(
            diff.contains("+Suites: trixie")
                && diff.contains("+Signed-By: /etc/apt/keyrings/docker.asc"),
            "{diff}"
        );
        assert!(s.contains(&script::write_file(
            "/etc/apt/sources.list.d/docker.sources",
            DOCKER_SOURCES_TRIXIE.as_bytes(),
            &FileMeta::mode(0o644).owner("root:root")
        )));
    }

    fn file_line(content: &str) -> String {
        format!(
            "file 644 root root {}",
            file_state::sha256_hex(content.as_bytes())
        )
    }

    #[test]
    fn a_converged_repository_is_ok_and_an_unfetched_one_is_updated() {
        let m = apt(DOCKER);
        let fetched = "fetched download.docker.com_linux_debian_dists_trixie_InRelease\n";
        let key = "file 644 root root 0123";
        let sources = file_line(DOCKER_SOURCES_TRIXIE);
        let installed = "== packages\ndocker-ce install ok installed 5:27.3.1-1~debian.13~trixie\n";
        let probed = format!("{STALE}{installed}{}", repo_probe(fetched, &sources, key));
        assert!(plan(&*m, &probed).unwrap().is_ok());
        // A previous update could not fetch it (only another suite's file is there).
        let other_suite = "fetched download.docker.com_linux_debian_dists_bookworm_InRelease\n";
        let probed = format!(
            "{FRESH}{installed}{}",
            repo_probe(other_suite, &sources, key)
        );
        let c = plan(&*m, &probed).unwrap().changes.remove(0);
        assert_eq!(c.summary, "update apt lists (docker not fetched yet)");
        assert_eq!(steps(&c), [UPDATE]);
    }

    #[test]
    fn a_changed_repository_is_rewritten_and_its_old_list_file_removed() {
        let m = apt(DOCKER);
        let old = DOCKER_SOURCES_TRIXIE.replace("trixie", "bookworm");
        let probed = format!(
            "{FRESH}== packages\ndocker-ce install ok installed 27\n== repository\narch amd64\nlegacy present\n\
             == sources\n{}\ncontent {}\n== keyring\nfile 600 root root 0123\n",
            file_line(&old),
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &old)
        );
        let c = plan(&*m, &probed).unwrap().changes.remove(0);
        assert_eq!(
            c.summary,
            "docker.asc mode 0600 -> 0644; update docker.sources; remove docker.list; update apt lists"
        );
        assert!(c
            .script
            .contains("chmod 0644 /etc/apt/keyrings/docker.asc\n"));
        assert!(c
            .script
            .contains("rm -f -- /etc/apt/sources.list.d/docker.list\n"));
        let diff = c.diff.unwrap();
        assert!(
            diff.contains("-Suites: bookworm\n+Suites: trixie\n"),
            "{diff}"
        );
    }

    #[test]
    fn an_inline_key_is_written_and_kept_in_sync() {
        let key =
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF\n-----END PGP PUBLIC KEY BLOCK-----\n";
        let yaml = format!(
            "repository:\n  name: pgdg\n  uri: https://apt.postgresql.org/pub/repos/apt\n  suite: bookworm-pgdg\n  architectures: [amd64, arm64]\n  key: |\n{}",
            key.lines().map(|l| format!("    {l}\n")).collect::<String>()
        );
        let m = apt(&yaml);
        let sources = "# Managed by vpsup; local edits are overwritten.\nTypes: deb\nURIs: https://apt.postgresql.org/pub/repos/apt\n\
                       Suites: bookworm-pgdg\nComponents: main\nArchitectures: amd64 arm64\nSigned-By: /etc/apt/keyrings/pgdg.asc\n";
        let fetched = "fetched apt.postgresql.org_pub_repos_apt_dists_bookworm-pgdg_InRelease\n";
        let repo = |keyring: &str| {
            format!(
                "{FRESH}== repository\n{fetched}legacy absent\n== sources\n{}\n== keyring\n{keyring}\n",
                file_line(sources)
            )
        };
        assert!(plan(&*m, &repo(&file_line(key))).unwrap().is_ok());
        let c = plan(&*m, &repo("file 644 root root 0123"))
            .unwrap()
            .changes
            .remove(0);
        assert_eq!(c.summary, "replace pgdg key; update apt lists");
        assert!(c.script.contains(&script::write_file(
            "/etc/apt/keyrings/pgdg.asc",
            key.as_bytes(),
            &FileMeta::mode(0o644).owner("root:root")
        )));
        // No `arch` line is needed when the architectures are named.
        assert!(!m
            .probe(&testing::probe_options())
            .contains("dpkg --print-architecture"));
    }

    #[test]
    fn deb822_sources_for_debian_and_ubuntu_hosts() {
        let repo = |uri: &str, extra: &str| {
            Repository {
                name: "docker".into(),
                uri: uri.into(),
                suite: AUTO.into(),
                components: Some(Words(vec!["stable".into()])),
                architectures: auto_words(),
                key_url: Some("https://download.docker.com/gpg".into()),
                key: None,
            }
            .sources_content(extra, Some("arm64"))
            .unwrap()
        };
        assert_eq!(
            repo("https://download.docker.com/linux/ubuntu", "noble"),
            "# Managed by vpsup; local edits are overwritten.\nTypes: deb\nURIs: https://download.docker.com/linux/ubuntu\n\
             Suites: noble\nComponents: stable\nArchitectures: arm64\nSigned-By: /etc/apt/keyrings/docker.asc\n"
        );
        // The plan takes `suite: auto` from the host's facts.
        let m = apt(&DOCKER.replace("/debian", "/ubuntu"));
        let mut facts = testing::facts();
        facts.os_id = "ubuntu".into();
        facts.os_codename = "noble".into();
        let render = |_: &str| Err(String::new());
        let ctx = PlanContext {
            facts: &facts,
            sections: &testing::sections(),
            render: &render,
        };
        let probed = parts(&format!(
            "{FRESH}== packages\n{}",
            repo_probe("", "absent", "absent")
        ));
        let c = m.plan(&probed, &ctx).unwrap().changes.remove(0);
        assert!(c
            .diff
            .unwrap()
            .contains("+URIs: https://download.docker.com/linux/ubuntu\n+Suites: noble\n"));
        facts.os_codename = String::new();
        let ctx = PlanContext {
            facts: &facts,
            sections: &testing::sections(),
            render: &render,
        };
        assert!(m
            .plan(&probed, &ctx)
            .unwrap_err()
            .to_string()
            .contains("set suite"));
        // A flat repository has no Components line.
        let flat = apt("repository:\n  name: local\n  uri: file:/srv/repo\n  suite: ./\n  architectures: all\n  key: \"-----BEGIN PGP PUBLIC KEY BLOCK-----\"\n");
        let c = plan(
            &*flat,
            &format!(
                "{FRESH}== repository\nlegacy absent\n== sources\nabsent\n== keyring\nabsent\n"
            ),
        )
        .unwrap()
        .changes
        .remove(0);
        let diff = c.diff.unwrap();
        assert!(
            diff.contains("+Suites: ./\n+Architectures: all\n"),
            "{diff}"
        );
    }

    #[test]
    fn list_file_names_follow_apt() {
        assert_eq!(
            list_file_name("http://deb.debian.org/debian/dists/bookworm/InRelease"),
            "deb.debian.org_debian_dists_bookworm_InRelease"
        );
        assert_eq!(
            list_file_name(
                "https://user:secret@deb.nodesource.com/node_20.x/dists/nodistro/Release"
            ),
            "deb.nodesource.com_node%5f20.x_dists_nodistro_Release"
        );
        // A flat file: repository (checked against a real apt-get update).
        assert_eq!(
            list_file_name("file:/tmp/aptx/repo/./Packages.lz4"),
            "_tmp_aptx_repo_._Packages.lz4"
        );
        assert_eq!(
            list_file_name("http://[::1]:8080/x~y/"),
            "%5b::1%5d:8080_x%7ey_"
        );
    }

    #[test]
    fn bad_arguments() {
        assert!(error("packages: [Nginx]\n").contains("not a Debian package name"));
        assert!(error("packages: [\"nginx=1.2\"]\n").contains("not a Debian package name"));
        assert!(error("packages: [nginx]\nstate: installed\n").contains("unknown variant"));
        assert!(error("packages: [nginx]\ncolour: red\n").contains("unknown field"));
        assert!(error("update_cache: false\n").contains("nothing to do"));
        assert!(error("packages: [nginx]\npurge: true\n").contains("state: absent"));
        let repo = |fields: &str| {
            format!("repository:\n  name: docker\n  uri: https://x.example/debian\n{fields}")
        };
        assert!(error(&repo("")).contains("exactly one of key_url or key"));
        assert!(error(&repo("  key_url: http://x.example/gpg\n")).contains("https://"));
        assert!(error(&repo("  key: not a key\n")).contains("ASCII-armored"));
        assert!(error(&repo("  key_url: https://x/gpg\n  components: []\n")).contains("components"));
        assert!(error(&repo(
            "  key_url: https://x/gpg\n  suite: ./\n  components: [main]\n"
        ))
        .contains("flat"));
        assert!(error(&repo("  key_url: https://x/gpg\n  suite: \"a b\"\n")).contains("one word"));
        assert!(
            error(&repo("  key_url: https://x/gpg\n  architectures: []\n"))
                .contains("architectures")
        );
        assert!(error(&repo(
            "  key_url: https://x/gpg\npackages: [a1]\nstate: absent\n"
        ))
        .contains("own task"));
        assert!(
            error(&repo("  key_url: https://x/gpg\n").replace("name: docker", "name: ../x"))
                .contains("name")
        );
        assert!(error(
            &repo("  key_url: https://x/gpg\n")
                .replace("https://x.example/debian", "x.example/a b")
        )
        .contains("uri"));
        // A space-separated string works where a list does.
        assert!(build_from_yaml(
            "apt",
            &repo("  key_url: https://x/gpg\n  components: main contrib\n")
        )
        .is_ok());
    }

    #[test]
    fn unreadable_probe_output_is_a_probe_error() {
        let m = apt("packages: [nginx]\nstate: latest\n");
        for probed in [
            "",
            "garbage\n== cache\nnow 1\n",
            "== cache\nnow soon\n== packages\n== candidates\n",
            "== cache\nnow 1\n== candidates\n",
            "== cache\nnow 1\n== packages\nnginx installed\n== candidates\n",
            "== cache\nnow 1\n== packages\nnginx install ok exploded 1\n== candidates\n",
            "== cache\nnow 1\n== packages\n== candidates\nnginx 1 2\n",
        ] {
            assert!(
                matches!(plan(&*m, probed), Err(ModuleError::Probe(_))),
                "{probed:?}"
            );
        }
        let m = apt(DOCKER);
        let no_arch = format!("{FRESH}== packages\n== repository\nlegacy absent\n== sources\nabsent\n== keyring\nabsent\n");
        assert!(matches!(plan(&*m, &no_arch), Err(ModuleError::Probe(_))));
        let bad_file = format!("{FRESH}== packages\n{}", repo_probe("", "socket", "absent"));
        assert!(matches!(plan(&*m, &bad_file), Err(ModuleError::Probe(_))));
    }

    /// The probe only reads, so it runs for real on this Debian machine.
    #[test]
    fn the_probe_reads_this_host() {
        let yaml = "packages: [bash, vpsup-no-such-package]
state: latest
repository:
  name: vpsup-test-no-such-repo
  uri: http://deb.debian.org/debian
  suite: bookworm
  key_url: https://deb.debian.org/key
";
        let m = apt(yaml);
        let out = std::process::Command::new("sh")
            .args(["-c", &m.probe(&testing::diff_probe_options())])
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let apt_args: Apt = serde_json::from_value(serde_saphyr::from_str(yaml).unwrap()).unwrap();
        let probed = Probed::parse(&text, &testing::sections(), &apt_args)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let bash = &probed.packages["bash"];
        let version = std::process::Command::new("dpkg-query")
            .args(["-W", "-f", "${Version}", "bash"])
            .output()
            .unwrap();
        assert!(bash.installed());
        assert_eq!(
            bash.version.as_deref(),
            Some(String::from_utf8_lossy(&version.stdout).as_ref())
        );
        assert!(!probed.packages.contains_key("vpsup-no-such-package"));
        assert!(probed.candidate("vpsup-no-such-package").is_none());
        let repo = probed.repository.as_ref().unwrap();
        assert_eq!(repo.sources, FileState::Absent);
        assert_eq!(repo.keyring, FileState::Absent);
        assert!(!repo.legacy_list);
        let arch = std::process::Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .unwrap();
        assert_eq!(
            repo.host_arch.as_deref(),
            Some(String::from_utf8_lossy(&arch.stdout).trim())
        );
        // Where this host has fetched Debian's lists, the probe finds them by apt's file name.
        if std::path::Path::new("/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease")
            .exists()
        {
            assert!(
                repo.fetched
                    .iter()
                    .any(|f| f == "deb.debian.org_debian_dists_bookworm_InRelease"),
                "{text}"
            );
            assert!(probed.candidate("bash").is_some(), "{text}");
        }
    }
}
