//! `authorized_key`: OpenSSH public keys present in (or absent from) a user's
//! `~/.ssh/authorized_keys`. Keys are compared by type and key data, so a
//! different comment or options on an existing line still count as the same
//! key; lines about other keys are left alone unless `exclusive`.

use std::collections::HashSet;

use base64::Engine;
use serde::Deserialize;

use super::file_state::{self, Attributes, FileState, Kind, PathInfo};
use super::user::{parse_passwd_line, passwd_probe, validate_account_name, Presence};
use super::{Change, Module, ModuleError, Plan, PlanContext, ProbeOptions, Scope, Validate};
use crate::transport::script::{self, quote};
use crate::transport::sections::Sections;
use crate::transport::FileMeta;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizedKey {
    pub user: String,
    /// One OpenSSH public key per entry: `TYPE BASE64 [COMMENT]`.
    pub keys: Vec<PublicKey>,
    #[serde(default)]
    pub state: Presence,
    /// The file holds exactly `keys` afterwards (comments and blank lines stay).
    #[serde(default)]
    pub exclusive: bool,
}

/// Key types sshd accepts in authorized_keys. DSA is known so that existing
/// DSA lines can be recognised (and removed), but never accepted as a new key.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
];

fn is_key_type(word: &str) -> bool {
    KEY_TYPES.contains(&word)
}

/// A validated public key line, e.g. `ssh-ed25519 AAAAC3... laptop`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PublicKey {
    kind: String,
    blob: String,
    line: String,
}

impl PublicKey {
    fn identity(&self) -> (&str, &str) {
        (&self.kind, &self.blob)
    }
}

impl TryFrom<String> for PublicKey {
    type Error = String;

    fn try_from(line: String) -> Result<PublicKey, String> {
        let line = line.trim();
        let bad = |why: &str| Err(format!("key {line:?} is not an OpenSSH public key: {why}"));
        if line.contains('\n') {
            return bad("give one key per entry");
        }
        let mut words = line.split_whitespace();
        let (kind, blob) = match (words.next(), words.next()) {
            (Some(kind), Some(blob)) if is_key_type(kind) => (kind, blob),
            _ if line.split_whitespace().skip(1).any(is_key_type) => {
                return bad("options before the key type are not supported")
            }
            _ => {
                return bad(&format!(
                    "expected `TYPE BASE64 [COMMENT]` with TYPE one of {}",
                    KEY_TYPES[..KEY_TYPES.len() - 1].join(", ")
                ))
            }
        };
        if kind == "ssh-dss" {
            return bad("DSA keys are refused by current OpenSSH servers; use ssh-ed25519");
        }
        // The key data starts with its own type as an SSH string: this catches
        // truncated pastes and a type that does not match the data.
        let data = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .map_err(|e| format!("key {line:?} is not an OpenSSH public key: bad base64 ({e})"))?;
        let embedded_type = data
            .get(..4)
            .map(|len| u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize)
            .and_then(|len| data.get(4..4 + len));
        if embedded_type != Some(kind.as_bytes()) {
            return bad(&format!("the key data is not a {kind} key"));
        }
        Ok(PublicKey {
            kind: kind.to_string(),
            blob: blob.to_string(),
            line: line.to_string(),
        })
    }
}

/// The key a line of authorized_keys authorizes, as (type, base64 data):
/// `None` for blank lines, comments and lines this module does not understand.
/// A line may start with options (`from="10.0.0.1",no-pty ssh-ed25519 AAAA...`).
fn line_identity(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (first, rest) = split_options(line);
    let mut words = rest.split_whitespace();
    let (kind, blob) = if is_key_type(first) {
        (first, words.next()?)
    } else {
        (words.next()?, words.next()?)
    };
    is_key_type(kind).then_some((kind, blob))
}

/// Splits off the first word, where the options word may hold quoted spaces.
fn split_options(line: &str) -> (&str, &str) {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            ' ' | '\t' if !in_quotes => return (&line[..i], &line[i..]),
            _ => {}
        }
    }
    (line, "")
}

fn is_blank_or_comment(line: &str) -> bool {
    let line = line.trim();
    line.is_empty() || line.starts_with('#')
}

/// The new content of authorized_keys and what changed, when anything does.
#[derive(Debug, PartialEq, Eq)]
struct KeysEdit {
    content: String,
    added: usize,
    removed: usize,
}

impl AuthorizedKey {
    fn edit(&self, old: &str) -> Option<KeysEdit> {
        let wanted: HashSet<(&str, &str)> = self.keys.iter().map(PublicKey::identity).collect();
        let mut present = HashSet::new();
        let mut kept = Vec::new();
        let mut removed = 0;
        for line in old.lines() {
            let identity = line_identity(line);
            let is_wanted = identity.is_some_and(|id| wanted.contains(&id));
            let keep = match (self.state, self.exclusive) {
                (Presence::Absent, _) => !is_wanted,
                // Only the first line of each wanted key, and no other key.
                (Presence::Present, true) => match identity {
                    Some(id) if is_wanted => !present.contains(&id),
                    _ => is_blank_or_comment(line),
                },
                (Presence::Present, false) => true,
            };
            if keep {
                present.extend(identity);
                kept.push(line);
            } else {
                removed += 1;
            }
        }
        let mut added = 0;
        if self.state == Presence::Present {
            for key in &self.keys {
                if present.insert(key.identity()) {
                    kept.push(&key.line);
                    added += 1;
                }
            }
        }
        (added + removed > 0).then(|| KeysEdit {
            content: kept.iter().map(|l| format!("{l}\n")).collect(),
            added,
            removed,
        })
    }
}

fn count_keys(n: usize) -> String {
    if n == 1 {
        "1 key".to_string()
    } else {
        format!("{n} keys")
    }
}

const SSH_DIR: &str = ".ssh";
const KEYS_FILE: &str = ".ssh/authorized_keys";
/// The probe's parts holding `SSH_DIR`'s and `KEYS_FILE`'s state.
const SSH_DIR_PART: &str = "ssh_dir";
const KEYS_FILE_PART: &str = "keys_file";
/// Printed first by the probe under `--diff`, so `plan` knows to show one.
const SHOW_DIFF: &str = "show_diff";

/// What the probe found about the user's home.
#[derive(Debug)]
enum ProbedHome {
    /// No such user.
    NoUser,
    Missing {
        home: String,
    },
    Present(Box<Account>),
}

#[derive(Debug)]
struct Account {
    home: String,
    primary_group: String,
    ssh_dir: FileState,
    keys_file: FileState,
}

/// Parses what `probe` printed: header lines, then the `ssh_dir` and
/// `keys_file` parts, each one `file_state` output.
fn parse_probe(
    output: &str,
    sections: &Sections,
    user: &str,
) -> Result<(ProbedHome, bool), String> {
    let parts = sections.parse(output);
    let mut show_diff = false;
    let mut entry = None;
    let mut primary_group = None;
    let mut home_missing = false;
    for line in parts.preamble().lines() {
        if line == SHOW_DIFF {
            show_diff = true;
        } else if let Some(value) = line.strip_prefix("passwd ") {
            entry = Some(parse_passwd_line(value, user)?);
        } else if let Some(group) = line.strip_prefix("primary_group ") {
            primary_group = Some(group.trim().to_string()).filter(|g| !g.is_empty());
        } else if line == "home absent" {
            home_missing = true;
        } else if !line.trim().is_empty() {
            return Err(format!("unexpected line {line:?}"));
        }
    }
    let part = |name: &str| file_state::parse(parts.get(name).map_err(|e| e.to_string())?);
    let home = match entry.ok_or("no `passwd` line")? {
        None => ProbedHome::NoUser,
        Some(entry) if home_missing => ProbedHome::Missing { home: entry.home },
        Some(entry) => ProbedHome::Present(Box::new(Account {
            home: entry.home,
            primary_group: primary_group.ok_or("no `primary_group` line")?,
            ssh_dir: part(SSH_DIR_PART)?,
            keys_file: part(KEYS_FILE_PART)?,
        })),
    };
    Ok((home, show_diff))
}

impl Validate for AuthorizedKey {
    fn validate(&self) -> Result<(), String> {
        validate_account_name("user", &self.user)?;
        if self.keys.is_empty() {
            return Err("keys must list at least one public key".to_string());
        }
        if self.exclusive && self.state == Presence::Absent {
            return Err("exclusive makes no sense with state: absent".to_string());
        }
        Ok(())
    }
}

impl Module for AuthorizedKey {
    /// The home is only known on the host, so the probe changes into it and
    /// reads `.ssh` by relative paths.
    fn probe(&self, opts: &ProbeOptions) -> String {
        let files = opts.sections.script([
            (SSH_DIR_PART, file_state::probe(SSH_DIR, false).as_str()),
            // The content is always needed: it is what gets compared.
            (KEYS_FILE_PART, &file_state::probe(KEYS_FILE, true)),
        ]);
        let when_present = format!(
            "printf 'primary_group %s\\n' \"$(id -gn {user})\"
h=${{p#*:*:*:*:*:}}; h=${{h%%:*}}
if [ -n \"$h\" ] && cd \"$h\" 2>/dev/null; then
{files}else echo 'home absent'; fi",
            user = quote(&self.user),
        );
        let show_diff = if opts.with_content {
            format!("echo {SHOW_DIFF}\n")
        } else {
            String::new()
        };
        format!("{show_diff}{}", passwd_probe(&self.user, &when_present))
    }

    fn plan(&self, probed: &str, ctx: &PlanContext) -> Result<Plan, ModuleError> {
        let (home, show_diff) =
            parse_probe(probed, ctx.sections, &self.user).map_err(ModuleError::Probe)?;
        let account = match (home, self.state) {
            (ProbedHome::NoUser | ProbedHome::Missing { .. }, Presence::Absent) => {
                return Ok(Plan::ok())
            }
            (ProbedHome::NoUser, Presence::Present) => {
                return Err(ModuleError::Plan(format!(
                    "user {} does not exist; create it first with the user module",
                    self.user
                )))
            }
            (ProbedHome::Missing { home }, Presence::Present) => {
                return Err(ModuleError::Plan(format!(
                    "home {home} of user {} does not exist; create it first (user module with create_home: true)",
                    self.user
                )))
            }
            (ProbedHome::Present(account), _) => account,
        };
        let home = account.home.trim_end_matches('/');
        let ssh_dir = format!("{home}/{SSH_DIR}");
        let keys_file = format!("{home}/{KEYS_FILE}");
        // Writing through a symlinked .ssh would land wherever the user points it.
        if let Some(info) = account.ssh_dir.info().filter(|i| i.kind != Kind::Directory) {
            return Err(ModuleError::Plan(format!(
                "{ssh_dir} is a {:?}, not a directory; remove it first",
                info.kind
            )));
        }
        let old_content = match &account.keys_file {
            FileState::Absent => None,
            FileState::Present(info) => Some(regular_file_content(&keys_file, info)?),
        };
        let edit = self.edit(old_content.unwrap_or(""));
        if self.state == Presence::Absent && edit.is_none() {
            return Ok(Plan::ok());
        }

        let owned = |mode| Attributes {
            mode: Some(mode),
            owner: Some(self.user.clone()),
            group: Some(account.primary_group.clone()),
        };
        let mut summary = Vec::new();
        let mut script = Vec::new();
        // Removing keys never needs the directory fixed; adding them does.
        if self.state == Presence::Present {
            match &account.ssh_dir {
                FileState::Absent => {
                    summary.push(format!("create {ssh_dir}"));
                    script.push(format!(
                        "install -d -m 0700 -o {} -g {} {}",
                        quote(&self.user),
                        quote(&account.primary_group),
                        quote(&ssh_dir)
                    ));
                }
                FileState::Present(info) => {
                    if let Some((fixed, fix)) = owned(0o700).fix(&ssh_dir, info) {
                        summary.push(format!("{ssh_dir}: {fixed}"));
                        script.push(fix);
                    }
                }
            }
        }

        let mut diff = None;
        match (&edit, &account.keys_file) {
            (Some(edit), _) => {
                if edit.added > 0 {
                    summary.push(format!("add {}", count_keys(edit.added)));
                }
                if edit.removed > 0 {
                    summary.push(format!("remove {}", count_keys(edit.removed)));
                }
                let meta =
                    FileMeta::mode(0o600).owner(format!("{}:{}", self.user, account.primary_group));
                script.push(script::write_file(
                    &keys_file,
                    edit.content.as_bytes(),
                    &meta,
                ));
                if show_diff {
                    diff = file_state::diff(
                        &keys_file,
                        old_content.map(str::as_bytes),
                        edit.content.as_bytes(),
                        false,
                    );
                }
            }
            (None, FileState::Present(info)) => {
                if let Some((fixed, fix)) = owned(0o600).fix(&keys_file, info) {
                    summary.push(format!("{keys_file}: {fixed}"));
                    script.push(fix);
                }
            }
            // Only reached with state: present, where a missing file always gets keys.
            (None, FileState::Absent) => {}
        }
        if script.is_empty() {
            return Ok(Plan::ok());
        }
        Ok(Plan::change(
            Change::new(summary.join(", "), script.join("\n")).with_diff(diff),
        ))
    }

    /// `user:` because the probe reads the passwd entry (a `user` task creating
    /// the account makes it stale); `authorized_keys:` stands for the file, whose
    /// path is only known on the host.
    fn scope(&self) -> Scope {
        Scope::Keys(vec![
            format!("user:{}", self.user),
            format!("authorized_keys:{}", self.user),
        ])
    }
}

/// The text of an existing authorized_keys, refusing what cannot be edited safely.
fn regular_file_content<'a>(path: &str, info: &'a PathInfo) -> Result<&'a str, ModuleError> {
    if info.kind != Kind::File {
        return Err(ModuleError::Plan(format!(
            "{path} is a {:?}, not a regular file; vpsup does not follow or replace it",
            info.kind
        )));
    }
    let content = info.content.as_deref().ok_or_else(|| {
        ModuleError::Plan(format!(
            "{path} is larger than {} bytes; clean it up by hand",
            file_state::MAX_CONTENT
        ))
    })?;
    std::str::from_utf8(content)
        .map_err(|_| ModuleError::Plan(format!("{path} is not UTF-8 text; fix it by hand")))
}

#[cfg(test)]
mod tests {
    use super::*;
    // Probe outputs here are written with `== NAME` part headers.
    use crate::modules::testing::{build_from_yaml, plan_parts as plan};

    // Real keys (generated by ssh-keygen for these tests only).
    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHvXgG8BVTbc6eDG54fRnPdc4Iupez8HVC8uLotFNTXg";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBJmk8mRhzDR6wsd/LV5hL5s21P5MJa/z+QpEMBi47YKAgo8uD/xqgvh3dY9ptHK10xr7GAZ13YqJogXGAYlgOPs=";

    fn module(extra: &str) -> Box<dyn Module> {
        build_from_yaml(
            "authorized_key",
            &format!("user: deploy\nkeys: [\"{ED25519} laptop\"]\n{extra}"),
        )
        .unwrap()
    }

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    /// Probe output for deploy with `.ssh` as given and authorized_keys holding `keys`.
    fn probed(ssh_dir: &str, keys: Option<&str>) -> String {
        let keys_file = match keys {
            None => "absent".to_string(),
            Some(text) => format!(
                "file 600 deploy deploy {}\ncontent {}",
                file_state::sha256_hex(text.as_bytes()),
                b64(text)
            ),
        };
        format!(
            "passwd deploy:x:1000:1000::/home/deploy:/bin/bash\nprimary_group deploy\n== ssh_dir\n{ssh_dir}\n== keys_file\n{keys_file}\n"
        )
    }

    const DIR_OK: &str = "directory 700 deploy deploy";

    /// The script that writes `content` to deploy's authorized_keys.
    fn writes(content: &str) -> String {
        script::write_file(
            "/home/deploy/.ssh/authorized_keys",
            content.as_bytes(),
            &FileMeta::mode(0o600).owner("deploy:deploy"),
        )
    }

    #[test]
    fn converged_when_the_key_is_there_whatever_its_comment_or_options() {
        let file = format!("# admins\nno-pty,from=\"10.0.0.1, 10.0.0.2\" {ED25519} old comment\n");
        assert!(plan(&*module(""), &probed(DIR_OK, Some(&file)))
            .unwrap()
            .is_ok());
    }

    #[test]
    fn first_key_creates_the_directory_and_the_file() {
        let p = plan(&*module(""), &probed("absent", None)).unwrap();
        let c = &p.changes[0];
        assert_eq!(c.summary, "create /home/deploy/.ssh, add 1 key");
        let (mkdir, write) = c.script.split_once('\n').unwrap();
        assert_eq!(
            mkdir,
            "install -d -m 0700 -o deploy -g deploy /home/deploy/.ssh"
        );
        assert_eq!(write, writes(&format!("{ED25519} laptop\n")));
        // No diff unless the probe ran for --diff.
        assert_eq!(c.diff, None);
    }

    #[test]
    fn a_new_key_is_appended_keeping_other_lines_and_diffed_under_diff() {
        let file = format!("# ci\n{ECDSA} ci\n");
        let probe = format!("{SHOW_DIFF}\n{}", probed(DIR_OK, Some(&file)));
        let p = plan(&*module(""), &probe).unwrap();
        let c = &p.changes[0];
        assert_eq!(c.summary, "add 1 key");
        assert_eq!(
            c.script,
            writes(&format!("# ci\n{ECDSA} ci\n{ED25519} laptop\n"))
        );
        let diff = c.diff.as_deref().unwrap();
        assert!(diff.contains(&format!("+{ED25519} laptop")), "{diff}");
    }

    #[test]
    fn exclusive_keeps_only_the_wanted_keys_and_comments() {
        let file = format!("# team\n{ECDSA} ci\ngarbage line\n{ED25519} one\n{ED25519} twice\n");
        let p = plan(&*module("exclusive: true"), &probed(DIR_OK, Some(&file))).unwrap();
        let c = &p.changes[0];
        assert_eq!(c.summary, "remove 3 keys");
        assert_eq!(c.script, writes(&format!("# team\n{ED25519} one\n")));
    }

    #[test]
    fn absent_removes_every_line_of_the_key_and_nothing_else() {
        let m = module("state: absent");
        let file = format!("{ED25519} a\n{ECDSA} ci\nrestrict {ED25519} b\n");
        let p = plan(&*m, &probed(DIR_OK, Some(&file))).unwrap();
        assert_eq!(p.changes[0].summary, "remove 2 keys");
        assert_eq!(p.changes[0].script, writes(&format!("{ECDSA} ci\n")));
        assert!(plan(&*m, &probed(DIR_OK, Some(&format!("{ECDSA} ci\n"))))
            .unwrap()
            .is_ok());
        // Nothing to remove from: no user, no home, no file.
        assert!(plan(&*m, "passwd absent\n").unwrap().is_ok());
        assert!(plan(&*m, &probed("absent", None)).unwrap().is_ok());
    }

    #[test]
    fn loose_attributes_are_tightened() {
        let file = format!("{ED25519} laptop\n");
        let probe = probed("directory 755 root root", Some(&file))
            .replace("file 600 deploy deploy", "file 644 deploy deploy");
        let p = plan(&*module(""), &probe).unwrap();
        assert_eq!(
            p.changes[0].summary,
            "/home/deploy/.ssh: owner root:root -> deploy:deploy, mode 0755 -> 0700, \
             /home/deploy/.ssh/authorized_keys: mode 0644 -> 0600"
        );
        assert_eq!(
            p.changes[0].script,
            "chown -h -- deploy:deploy /home/deploy/.ssh\nchmod 0700 /home/deploy/.ssh\n\
             chmod 0600 /home/deploy/.ssh/authorized_keys"
        );
    }

    #[test]
    fn missing_user_home_or_odd_files_fail_the_plan_clearly() {
        let err = plan(&*module(""), "passwd absent\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "user deploy does not exist; create it first with the user module"
        );
        let no_home = "passwd deploy:x:1000:1000::/home/deploy:/bin/bash\nprimary_group deploy\nhome absent\n";
        assert!(plan(&*module(""), no_home)
            .unwrap_err()
            .to_string()
            .contains("home /home/deploy of user deploy does not exist"));
        let symlink = probed(DIR_OK, None).replace("\nabsent\n", "\nsymlink 777 root root\n");
        assert!(matches!(
            plan(&*module(""), &symlink),
            Err(ModuleError::Plan(m)) if m.contains("Symlink")
        ));
        let file_as_dir = probed("file 600 deploy deploy abc", None);
        assert!(matches!(
            plan(&*module(""), &file_as_dir),
            Err(ModuleError::Plan(m)) if m.contains("not a directory")
        ));
    }

    #[test]
    fn keys_are_validated_as_openssh_public_keys() {
        let build =
            |keys: &str| build_from_yaml("authorized_key", &format!("user: deploy\n{keys}"));
        assert!(build(&format!("keys: [\"{ED25519}\", \"  {ECDSA} ci@host \"]")).is_ok());
        let refused = [
            ("keys: []", "at least one"),
            ("keys: [\"hello world\"]", "expected `TYPE BASE64"),
            ("keys: [\"ssh-ed25519 not-base64!\"]", "bad base64"),
            // ED25519 data labelled as RSA.
            (
                "keys: [\"ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIHvXgG8BVTbc6eDG54fRnPdc4Iupez8HVC8uLotFNTXg\"]",
                "not a ssh-rsa key",
            ),
            ("keys: [\"no-pty ssh-ed25519 AAAA\"]", "options"),
            ("keys: [\"ssh-dss AAAAB3NzaC1kc3M=\"]", "DSA"),
        ];
        for (keys, message) in refused {
            let err = build(keys).unwrap_err().to_string();
            assert!(err.contains(message), "{keys}: {err}");
        }
        let absent_exclusive =
            format!("user: deploy\nkeys: [\"{ED25519}\"]\nstate: absent\nexclusive: true\n");
        assert!(build_from_yaml("authorized_key", &absent_exclusive).is_err());
        assert!(build_from_yaml(
            "authorized_key",
            &format!("user: Deploy\nkeys: [\"{ED25519}\"]\n")
        )
        .is_err());
    }

    #[test]
    fn lines_are_recognised_with_and_without_options() {
        let blob = ED25519.split(' ').nth(1).unwrap();
        for line in [
            ED25519.to_string(),
            format!("  {ED25519} comment with spaces"),
            format!("command=\"echo a b\",no-pty {ED25519} x"),
        ] {
            assert_eq!(line_identity(&line), Some(("ssh-ed25519", blob)), "{line}");
        }
        for line in [
            "",
            "# ssh-ed25519 AAAA",
            "cert-authority",
            "garbage here too",
        ] {
            assert_eq!(line_identity(line), None, "{line}");
        }
    }

    #[test]
    fn garbage_probe_output_is_an_error() {
        for output in [
            "",
            "passwd deploy:x\n",
            "passwd other:x:1:1::/home/other:/bin/sh\n",
            "passwd deploy:x:1000:1000::/home/deploy:/bin/bash\nprimary_group deploy\n",
            "hello\n",
        ] {
            assert!(
                matches!(plan(&*module(""), output), Err(ModuleError::Probe(_))),
                "{output:?}"
            );
        }
    }

    #[test]
    fn scope_names_the_user_and_its_keys() {
        assert_eq!(
            module("").scope(),
            Scope::Keys(vec!["user:deploy".into(), "authorized_keys:deploy".into()])
        );
    }

    /// Runs the real probe against a temp home (getent and id are stubbed to
    /// describe root living there), applies the change, and probes again.
    #[test]
    fn probe_and_change_converge_in_a_temp_home() {
        let here = crate::modules::testing::TempHome::create();
        let m = build_from_yaml(
            "authorized_key",
            &format!("user: root\nkeys: [\"{ED25519} laptop\", \"{ECDSA}\"]\n"),
        )
        .unwrap();
        let opts = crate::modules::testing::diff_probe_options();

        let first = here.apply(&*m, &opts);
        assert_eq!(
            first.changes[0].summary,
            format!("create {}/.ssh, add 2 keys", here.home().display())
        );
        assert!(first.changes[0].diff.is_some());
        let written = std::fs::read_to_string(here.home().join(".ssh/authorized_keys")).unwrap();
        assert_eq!(written, format!("{ED25519} laptop\n{ECDSA}\n"));

        let again = here.sh(&m.probe(&opts));
        assert!(plan(&*m, &again).unwrap().is_ok(), "{again}");
    }
}
