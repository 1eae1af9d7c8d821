//! `user`: a local account that exists with the wanted shell, comment and
//! supplementary groups, or that does not exist. Passwords are never set: vpsup
//! users log in with keys (see `authorized_key`).

use serde::Deserialize;

use super::{Change, Module, ModuleError, Plan, PlanContext, ProbeOptions, Scope, Validate};
use crate::transport::script::quote;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    #[serde(default)]
    pub state: Presence,
    /// Login shell, enforced when given (useradd's default otherwise).
    pub shell: Option<String>,
    /// Supplementary groups the user must be in; other memberships are kept
    /// unless `exclusive_groups`.
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub exclusive_groups: bool,
    /// Create the home directory (from /etc/skel) when creating the user.
    #[serde(default = "default_true")]
    pub create_home: bool,
    #[serde(default)]
    pub system: bool,
    /// GECOS field, enforced when given.
    pub comment: Option<String>,
    /// With `state: absent`, also delete the home directory and mail spool.
    #[serde(default)]
    pub remove_home: bool,
}

fn default_true() -> bool {
    true
}

/// Whether a thing (a user, a key) should exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    #[default]
    Present,
    Absent,
}

/// User and group names as Debian's tools accept them without `--badname`;
/// they never start with a digit, so `getent` cannot mistake them for an id.
pub fn validate_account_name(what: &str, name: &str) -> Result<(), String> {
    let body = name.strip_suffix('$').unwrap_or(name);
    let mut chars = body.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if starts_well && rest_ok && name.len() <= 32 {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} is not a valid name: use at most 32 lowercase letters, digits, `_`, `-` or `.`, starting with a letter or `_`"
        ))
    }
}

/// A passwd field must not contain the field separator or a newline.
fn validate_passwd_field(what: &str, value: &str) -> Result<(), String> {
    if value.contains([':', '\n']) {
        Err(format!(
            "{what} {value:?} must not contain `:` or a newline"
        ))
    } else {
        Ok(())
    }
}

impl Validate for User {
    fn validate(&self) -> Result<(), String> {
        validate_account_name("user", &self.name)?;
        for group in &self.groups {
            validate_account_name("group", group)?;
        }
        if let Some(shell) = &self.shell {
            validate_passwd_field("shell", shell)?;
            if !shell.starts_with('/') {
                return Err(format!("shell {shell:?} must be an absolute path"));
            }
        }
        if let Some(comment) = &self.comment {
            validate_passwd_field("comment", comment)?;
        }
        match self.state {
            Presence::Absent => {
                let account_settings_given = self.shell.is_some()
                    || self.comment.is_some()
                    || !self.groups.is_empty()
                    || self.exclusive_groups
                    || self.system;
                if account_settings_given {
                    return Err(
                        "shell/comment/groups/exclusive_groups/system make no sense with state: absent"
                            .to_string(),
                    );
                }
            }
            Presence::Present if self.remove_home => {
                return Err("remove_home only applies to state: absent".to_string());
            }
            Presence::Present => {}
        }
        Ok(())
    }
}

/// Prints `passwd ENTRY` (the user's /etc/passwd line) or `passwd absent`;
/// `when_present` (may be empty) runs only when the user exists, with the
/// entry in `$p`.
pub fn passwd_probe(name: &str, when_present: &str) -> String {
    let n = quote(name);
    let then = if when_present.is_empty() {
        String::new()
    } else {
        format!("\n{when_present}")
    };
    format!(
        "if p=$(getent passwd {n}); then printf 'passwd %s\\n' \"$p\"{then}\nelse echo 'passwd absent'; fi"
    )
}

/// One /etc/passwd entry (password and ids are not needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub comment: String,
    pub home: String,
    pub shell: String,
}

impl PasswdEntry {
    pub fn parse(line: &str) -> Result<PasswdEntry, String> {
        match line.split(':').collect::<Vec<_>>().as_slice() {
            [name, _password, _uid, _gid, comment, home, shell] => Ok(PasswdEntry {
                name: name.to_string(),
                comment: comment.to_string(),
                home: home.to_string(),
                shell: shell.to_string(),
            }),
            _ => Err(format!("expected a 7-field passwd entry, got {line:?}")),
        }
    }
}

/// Parses `passwd ...` as printed by `passwd_probe`, checking it is `name`'s.
pub fn parse_passwd_line(value: &str, name: &str) -> Result<Option<PasswdEntry>, String> {
    if value == "absent" {
        return Ok(None);
    }
    let entry = PasswdEntry::parse(value)?;
    if entry.name != name {
        return Err(format!("asked for user {name}, got {value:?}"));
    }
    Ok(Some(entry))
}

/// What the probe found.
#[derive(Debug, Default)]
struct ProbedUser {
    account: Option<PasswdEntry>,
    primary_group: Option<String>,
    /// Every group the user is in, the primary one included.
    member_of: Option<Vec<String>>,
    /// Those of the wanted groups that exist.
    existing_groups: Vec<String>,
}

impl ProbedUser {
    fn parse(output: &str, name: &str) -> Result<ProbedUser, String> {
        let mut probed = ProbedUser::default();
        let mut saw_passwd = false;
        for line in output.lines().filter(|l| !l.trim().is_empty()) {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "passwd" => {
                    probed.account = parse_passwd_line(value, name)?;
                    saw_passwd = true;
                }
                "primary_group" => {
                    probed.primary_group = Some(value.trim().to_string()).filter(|g| !g.is_empty())
                }
                "groups" => {
                    probed.member_of = Some(value.split_whitespace().map(String::from).collect())
                }
                // A `getent group` entry: NAME:x:GID:MEMBERS.
                "group" => match value.split_once(':') {
                    Some((group, _)) => probed.existing_groups.push(group.to_string()),
                    None => return Err(format!("expected a group entry, got {value:?}")),
                },
                _ => return Err(format!("unexpected line {line:?}")),
            }
        }
        if !saw_passwd {
            return Err("no `passwd` line".to_string());
        }
        Ok(probed)
    }
}

impl User {
    fn manages_groups(&self) -> bool {
        !self.groups.is_empty() || self.exclusive_groups
    }

    /// The home useradd gives the user (Debian's /etc/default/useradd).
    fn default_home(&self) -> String {
        if self.name == "root" {
            "/root".to_string()
        } else {
            format!("/home/{}", self.name)
        }
    }

    /// The wanted groups in the order given, without repeats.
    fn wanted_groups(&self) -> Vec<&str> {
        let mut wanted: Vec<&str> = Vec::new();
        for group in &self.groups {
            if !wanted.contains(&group.as_str()) {
                wanted.push(group);
            }
        }
        wanted
    }

    /// usermod would fail half-way on a missing group; say what to do instead.
    fn require_groups_exist(&self, probed: &ProbedUser) -> Result<(), ModuleError> {
        match self
            .wanted_groups()
            .into_iter()
            .find(|g| !probed.existing_groups.iter().any(|e| e == g))
        {
            Some(missing) => Err(ModuleError::Plan(format!(
                "group {missing} does not exist yet: install the software that provides it (or create the group) first"
            ))),
            None => Ok(()),
        }
    }

    fn create(&self) -> Change {
        let mut args = vec!["useradd".to_string()];
        if self.system {
            args.push("--system".to_string());
        }
        args.push(
            if self.create_home {
                "--create-home"
            } else {
                "--no-create-home"
            }
            .to_string(),
        );
        if let Some(shell) = &self.shell {
            args.extend(["--shell".to_string(), quote(shell)]);
        }
        if let Some(comment) = &self.comment {
            args.extend(["--comment".to_string(), quote(comment)]);
        }
        let groups = self.wanted_groups();
        if !groups.is_empty() {
            args.extend(["--groups".to_string(), quote(&groups.join(","))]);
        }
        args.push(quote(&self.name));
        Change::new(format!("create user {}", self.name), args.join(" "))
    }

    fn update(&self, account: &PasswdEntry, probed: &ProbedUser) -> Result<Plan, ModuleError> {
        let mut summary = Vec::new();
        let mut args = vec!["usermod".to_string()];
        if let Some(shell) = self.shell.as_ref().filter(|s| **s != account.shell) {
            summary.push(format!("shell {} -> {shell}", account.shell));
            args.extend(["--shell".to_string(), quote(shell)]);
        }
        if let Some(comment) = self.comment.as_ref().filter(|c| **c != account.comment) {
            summary.push(format!("comment {:?} -> {comment:?}", account.comment));
            args.extend(["--comment".to_string(), quote(comment)]);
        }
        if self.manages_groups() {
            let (Some(member_of), Some(primary)) = (&probed.member_of, &probed.primary_group)
            else {
                return Err(ModuleError::Probe(
                    "no `groups`/`primary_group` line for an existing user".to_string(),
                ));
            };
            let wanted = self.wanted_groups();
            let to_add: Vec<&str> = wanted
                .iter()
                .copied()
                .filter(|g| !member_of.iter().any(|m| m == g))
                .collect();
            let to_remove: Vec<&str> = if self.exclusive_groups {
                member_of
                    .iter()
                    .map(String::as_str)
                    .filter(|m| m != primary && !wanted.contains(m))
                    .collect()
            } else {
                Vec::new()
            };
            if !to_add.is_empty() {
                summary.push(format!("add to groups {}", to_add.join(", ")));
            }
            if !to_remove.is_empty() {
                summary.push(format!("remove from groups {}", to_remove.join(", ")));
            }
            // --groups alone replaces the supplementary list; --append adds to it.
            if self.exclusive_groups && !(to_add.is_empty() && to_remove.is_empty()) {
                args.extend(["--groups".to_string(), quote(&wanted.join(","))]);
            } else if !to_add.is_empty() {
                args.extend([
                    "--append".to_string(),
                    "--groups".to_string(),
                    quote(&to_add.join(",")),
                ]);
            }
        }
        if summary.is_empty() {
            return Ok(Plan::ok());
        }
        args.push(quote(&self.name));
        Ok(Plan::change(Change::new(
            summary.join(", "),
            args.join(" "),
        )))
    }
}

impl Module for User {
    fn probe(&self, _opts: &ProbeOptions) -> String {
        let n = quote(&self.name);
        let mut probe = if self.state == Presence::Present && self.manages_groups() {
            passwd_probe(
                &self.name,
                &format!(
                    "printf 'primary_group %s\\n' \"$(id -gn {n})\"\nprintf 'groups %s\\n' \"$(id -nG {n})\""
                ),
            )
        } else {
            passwd_probe(&self.name, "")
        };
        let wanted = self.wanted_groups();
        if self.state == Presence::Present && !wanted.is_empty() {
            let names: Vec<String> = wanted.iter().map(|g| quote(g)).collect();
            probe.push_str(&format!(
                "\ngetent group {} | sed 's/^/group /'",
                names.join(" ")
            ));
        }
        probe
    }

    fn plan(&self, probed: &str, _ctx: &PlanContext) -> Result<Plan, ModuleError> {
        let probed = ProbedUser::parse(probed, &self.name).map_err(ModuleError::Probe)?;
        match (self.state, &probed.account) {
            (Presence::Absent, None) => Ok(Plan::ok()),
            (Presence::Absent, Some(_)) => Ok(Plan::change(if self.remove_home {
                Change::new(
                    format!("remove user {} and its home", self.name),
                    format!("userdel --remove {}", quote(&self.name)),
                )
            } else {
                Change::new(
                    format!("remove user {}", self.name),
                    format!("userdel {}", quote(&self.name)),
                )
            })),
            (Presence::Present, account) => {
                self.require_groups_exist(&probed)?;
                match account {
                    None => Ok(Plan::change(self.create())),
                    Some(account) => self.update(account, &probed),
                }
            }
        }
    }

    fn scope(&self) -> Scope {
        let mut keys = vec![format!("user:{}", self.name)];
        let touches_home = match self.state {
            Presence::Present => self.create_home,
            Presence::Absent => self.remove_home,
        };
        if touches_home {
            keys.push(format!("path:{}", self.default_home()));
        }
        Scope::Keys(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{build_from_yaml, plan};

    fn module(yaml: &str) -> Box<dyn Module> {
        build_from_yaml("user", yaml).unwrap()
    }

    const DEPLOY: &str = "passwd deploy:x:1000:1000:vpsup admin:/home/deploy:/bin/bash\n";
    const GROUPS_EXIST: &str = "group sudo:x:27:\ngroup docker:x:999:\n";

    fn admin() -> Box<dyn Module> {
        module("name: deploy\nshell: /bin/bash\ngroups: [sudo, docker]\ncomment: vpsup admin\n")
    }

    #[test]
    fn converged_user_is_ok() {
        let probed =
            format!("{DEPLOY}primary_group deploy\ngroups deploy adm sudo docker\n{GROUPS_EXIST}");
        assert!(plan(&*admin(), &probed).unwrap().is_ok());
    }

    #[test]
    fn missing_user_is_created_with_everything_in_one_useradd() {
        let probed = format!("passwd absent\n{GROUPS_EXIST}");
        let p = plan(&*admin(), &probed).unwrap();
        assert_eq!(p.changes.len(), 1);
        assert_eq!(p.changes[0].summary, "create user deploy");
        assert_eq!(
            p.changes[0].script,
            "useradd --create-home --shell /bin/bash --comment 'vpsup admin' --groups sudo,docker deploy"
        );
        let system = module("name: backup\nsystem: true\ncreate_home: false\n");
        assert_eq!(
            plan(&*system, "passwd absent\n").unwrap().changes[0].script,
            "useradd --system --no-create-home backup"
        );
    }

    #[test]
    fn existing_user_gets_shell_comment_and_missing_groups_appended() {
        let probed = format!(
            "passwd deploy:x:1000:1000::/home/deploy:/bin/sh\nprimary_group deploy\ngroups deploy adm sudo\n{GROUPS_EXIST}"
        );
        let p = plan(&*admin(), &probed).unwrap();
        assert_eq!(
            p.changes[0].summary,
            "shell /bin/sh -> /bin/bash, comment \"\" -> \"vpsup admin\", add to groups docker"
        );
        assert_eq!(
            p.changes[0].script,
            "usermod --shell /bin/bash --comment 'vpsup admin' --append --groups docker deploy"
        );
    }

    #[test]
    fn exclusive_groups_replace_the_supplementary_list_but_keep_the_primary_group() {
        let m = module("name: deploy\ngroups: [sudo]\nexclusive_groups: true\n");
        let probed = "passwd deploy:x:1000:1000::/home/deploy:/bin/bash\nprimary_group deploy\ngroups deploy adm sudo\ngroup sudo:x:27:deploy\n";
        let p = plan(&*m, probed).unwrap();
        assert_eq!(p.changes[0].summary, "remove from groups adm");
        assert_eq!(p.changes[0].script, "usermod --groups sudo deploy");
        let converged = probed.replace(" adm sudo", " sudo");
        assert!(plan(&*m, &converged).unwrap().is_ok());
        // No groups at all: every supplementary membership goes.
        let none = module("name: deploy\nexclusive_groups: true\n");
        assert_eq!(
            plan(&*none, probed).unwrap().changes[0].script,
            "usermod --groups '' deploy"
        );
    }

    #[test]
    fn a_missing_group_fails_the_plan_clearly() {
        let probed = format!("{DEPLOY}primary_group deploy\ngroups deploy\ngroup sudo:x:27:\n");
        let err = plan(&*admin(), &probed).unwrap_err();
        assert!(
            matches!(&err, ModuleError::Plan(m) if m.starts_with("group docker does not exist yet")),
            "{err}"
        );
        assert!(plan(&*admin(), "passwd absent\ngroup sudo:x:27:\n").is_err());
    }

    #[test]
    fn absent_deletes_the_user_keeping_the_home_unless_asked() {
        let m = module("name: deploy\nstate: absent\n");
        assert!(plan(&*m, "passwd absent\n").unwrap().is_ok());
        let p = plan(&*m, DEPLOY).unwrap();
        assert_eq!(
            (p.changes[0].summary.as_str(), p.changes[0].script.as_str()),
            ("remove user deploy", "userdel deploy")
        );
        let m = module("name: deploy\nstate: absent\nremove_home: true\n");
        assert_eq!(
            plan(&*m, DEPLOY).unwrap().changes[0].script,
            "userdel --remove deploy"
        );
    }

    #[test]
    fn scope_names_the_user_and_the_home_it_creates_or_removes() {
        assert_eq!(
            admin().scope(),
            Scope::Keys(vec!["user:deploy".into(), "path:/home/deploy".into()])
        );
        assert_eq!(
            module("name: deploy\nstate: absent\n").scope(),
            Scope::Keys(vec!["user:deploy".into()])
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        for yaml in [
            "name: Deploy\n",
            "name: \"1000\"\n",
            "name: -rf\n",
            "name: deploy\ngroups: [\"wheel users\"]\n",
            "name: deploy\nshell: bash\n",
            "name: deploy\ncomment: \"a:b\"\n",
            "name: deploy\nstate: absent\ngroups: [sudo]\n",
            "name: deploy\nremove_home: true\n",
            "name: deploy\npassword: hunter2\n",
            "name: deploy\nstate: gone\n",
        ] {
            assert!(build_from_yaml("user", yaml).is_err(), "{yaml}");
        }
        let err = build_from_yaml("user", "name: Deploy\n").unwrap_err();
        assert!(err.to_string().contains("not a valid name"), "{err}");
    }

    #[test]
    fn garbage_probe_output_is_an_error() {
        for probed in [
            "",
            "passwd deploy:x:1000\n",
            "passwd root:x:0:0:root:/root:/bin/bash\n",
            "passwd absent\nsomething else\n",
        ] {
            assert!(
                matches!(plan(&*admin(), probed), Err(ModuleError::Probe(_))),
                "{probed:?}"
            );
        }
        // An existing user without its group lines.
        assert!(matches!(
            plan(&*admin(), &format!("{DEPLOY}{GROUPS_EXIST}")),
            Err(ModuleError::Probe(_))
        ));
    }

    #[test]
    fn probe_asks_only_for_what_the_plan_needs() {
        assert_eq!(
            admin().probe(&crate::modules::testing::probe_options()),
            "if p=$(getent passwd deploy); then printf 'passwd %s\\n' \"$p\"\n\
             printf 'primary_group %s\\n' \"$(id -gn deploy)\"\n\
             printf 'groups %s\\n' \"$(id -nG deploy)\"\n\
             else echo 'passwd absent'; fi\n\
             getent group sudo docker | sed 's/^/group /'"
        );
        assert_eq!(
            module("name: deploy\nstate: absent\n")
                .probe(&crate::modules::testing::probe_options()),
            "if p=$(getent passwd deploy); then printf 'passwd %s\\n' \"$p\"\n\
             else echo 'passwd absent'; fi"
        );
    }

    fn run_probe(m: &dyn Module) -> String {
        crate::modules::testing::run_probe(m, crate::modules::testing::probe_options())
    }

    #[test]
    fn probe_reads_real_accounts_and_groups() {
        // root exists everywhere, with root as its primary group.
        let root = module("name: root\ngroups: [root]\n");
        let probed = run_probe(&*root);
        let parsed = ProbedUser::parse(&probed, "root").unwrap();
        assert_eq!(parsed.account.unwrap().home, "/root");
        assert_eq!(parsed.primary_group.as_deref(), Some("root"));
        assert_eq!(parsed.existing_groups, ["root"]);
        assert!(plan(&*root, &probed).unwrap().is_ok(), "{probed}");

        let missing_group = module("name: root\ngroups: [vpsup-no-such-group]\n");
        assert!(matches!(
            plan(&*missing_group, &run_probe(&*missing_group)),
            Err(ModuleError::Plan(_))
        ));

        let nobody = module("name: vpsup-no-such-user\n");
        let p = plan(&*nobody, &run_probe(&*nobody)).unwrap();
        assert_eq!(
            p.changes[0].script,
            "useradd --create-home vpsup-no-such-user"
        );
    }
}
