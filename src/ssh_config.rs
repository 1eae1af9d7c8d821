//! A small parser for the OpenSSH client configuration file (`~/.ssh/config`).
//!
//! Only the keywords vpsup needs to open a connection are interpreted:
//! `HostName`, `User`, `Port`, `IdentityFile`, `IdentitiesOnly` and
//! `UserKnownHostsFile`, plus the structural `Host`, `Match` and `Include`.
//! Every other keyword is ignored on purpose: `ssh_config(5)` has hundreds and
//! none of the others changes where or as whom we connect.
//!
//! The text is parsed once, independently of any host; [`SshConfig::lookup`]
//! then walks the blocks in file order for one alias, where the first value
//! obtained for a single-valued key wins, as in OpenSSH.
//!
//! Known differences from OpenSSH, all chosen to stay dependency-free:
//! - `Match` is not evaluated: a bare `Match all` acts like `Host *`, any other
//!   `Match` block is skipped (its settings never apply).
//! - `Include` globbing supports `*` and `?` in the last path component only;
//!   `~otheruser/...` paths are not resolved (they match nothing).
//! - `Port` takes a number only (no service names such as `ssh`).
//! - File ownership/permission checks on included files are not done.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// OpenSSH's `READCONF_MAX_DEPTH`: deeper nesting is almost surely a cycle.
const MAX_INCLUDE_DEPTH: usize = 16;

/// What ~/.ssh/config says about one host alias, after applying every matching block (first value wins, like OpenSSH).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshHostConfig {
    /// `HostName`, with `%h` expanded to the alias and `%%` to `%`.
    pub hostname: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `Port`.
    pub port: Option<u16>,
    /// Every matching `IdentityFile`, in order, with `~` and `%` tokens expanded.
    pub identity_files: Vec<PathBuf>,
    /// `IdentitiesOnly` yes/no.
    pub identities_only: Option<bool>,
    /// First path of `UserKnownHostsFile`, `~` expanded.
    pub user_known_hosts_file: Option<PathBuf>,
}

/// A parsed client configuration; query it with [`SshConfig::lookup`].
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    /// Settings grouped by the conditions under which they apply, in file
    /// order with included files spliced in place.
    blocks: Vec<Block>,
    /// Kept for `%d` in `IdentityFile`, which is expanded at lookup time.
    home: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SshConfigError {
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: io::Error },
}

#[derive(Debug, Clone)]
struct Block {
    /// All must hold. There is more than one only when an `Include` sits inside
    /// a Host/Match block: the include site's condition AND the included
    /// file's own `Host` line.
    conditions: Vec<Condition>,
    settings: Vec<Setting>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    /// A `Host` line.
    Host(Vec<HostPattern>),
    /// `Match all`.
    Always,
    /// Any other `Match`: not evaluated, so never applied.
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    negated: bool,
    pattern: String,
}

/// One interpreted line. `IdentityFile` stays a template because its `%h`
/// and `%r` depend on the final HostName/User of the lookup.
#[derive(Debug, Clone)]
enum Setting {
    HostName(String),
    User(String),
    Port(u16),
    IdentityFile(String),
    IdentitiesOnly(bool),
    UserKnownHostsFile(PathBuf),
}

impl Condition {
    fn matches(&self, alias: &str) -> bool {
        match self {
            Condition::Always => true,
            Condition::Never => false,
            Condition::Host(patterns) => {
                let mut matched = false;
                for p in patterns {
                    if wildcard_match(&p.pattern, alias, true) {
                        // A negated match vetoes the whole block, whatever else matched.
                        if p.negated {
                            return false;
                        }
                        matched = true;
                    }
                }
                matched
            }
        }
    }
}

impl SshConfig {
    /// Parse config text. `origin` is the file name used in error messages; `home` expands `~`.
    ///
    /// # Errors
    /// [`SshConfigError::Invalid`] for a malformed line (in this text or an
    /// included file), [`SshConfigError::Read`] when an included file exists
    /// but cannot be read.
    pub fn parse(text: &str, origin: &str, home: &Path) -> Result<SshConfig, SshConfigError> {
        let mut parser = Parser {
            home,
            blocks: Vec::new(),
        };
        parser.parse_text(text, origin, &[], 0)?;
        Ok(SshConfig {
            blocks: parser.blocks,
            home: home.to_path_buf(),
        })
    }

    /// Read `path`; a missing file is an empty config (Ok), any other read error is Err.
    ///
    /// # Errors
    /// As [`SshConfig::parse`], plus [`SshConfigError::Read`] when `path`
    /// exists but cannot be read.
    pub fn load(path: &Path, home: &Path) -> Result<SshConfig, SshConfigError> {
        match read_config(path)? {
            Some(text) => SshConfig::parse(&text, &path.display().to_string(), home),
            None => Ok(SshConfig {
                blocks: Vec::new(),
                home: home.to_path_buf(),
            }),
        }
    }

    /// Everything that applies to `alias` (the host name the user typed).
    #[must_use]
    pub fn lookup(&self, alias: &str) -> SshHostConfig {
        self.lookup_with_local_user(alias, std::env::var_os("USER").as_deref())
    }

    /// `lookup` with the local user name passed in, so tests need not touch `$USER`.
    fn lookup_with_local_user(&self, alias: &str, local_user: Option<&OsStr>) -> SshHostConfig {
        let mut out = SshHostConfig::default();
        let mut identity_templates: Vec<&str> = Vec::new();
        for block in &self.blocks {
            if !block.conditions.iter().all(|c| c.matches(alias)) {
                continue;
            }
            for setting in &block.settings {
                // `get_or_insert*` keeps the first value obtained, as OpenSSH does.
                match setting {
                    Setting::HostName(v) => {
                        out.hostname
                            .get_or_insert_with(|| expand_hostname(v, alias));
                    }
                    Setting::User(v) => {
                        out.user.get_or_insert_with(|| v.clone());
                    }
                    Setting::Port(v) => {
                        out.port.get_or_insert(*v);
                    }
                    Setting::IdentitiesOnly(v) => {
                        out.identities_only.get_or_insert(*v);
                    }
                    Setting::UserKnownHostsFile(v) => {
                        out.user_known_hosts_file.get_or_insert_with(|| v.clone());
                    }
                    Setting::IdentityFile(v) => identity_templates.push(v),
                }
            }
        }

        // Tokens are resolved against the final values, as ssh does after reading all config.
        let hostname = out.hostname.as_deref().unwrap_or(alias);
        let port = out.port.unwrap_or(22).to_string();
        let mut tokens: Vec<(char, &OsStr)> = vec![
            ('d', self.home.as_os_str()),
            ('h', OsStr::new(hostname)),
            ('n', OsStr::new(alias)),
            ('p', OsStr::new(&port)),
        ];
        if let Some(u) = local_user {
            tokens.push(('u', u));
        }
        // OpenSSH's remote user defaults to the local one when no User is configured.
        if let Some(r) = out.user.as_deref().map(OsStr::new).or(local_user) {
            tokens.push(('r', r));
        }
        out.identity_files = identity_templates
            .iter()
            .map(|t| expand_identity_file(t, &self.home, &tokens))
            .collect();
        out
    }
}

/// Parsing state shared across a file and everything it includes.
struct Parser<'a> {
    home: &'a Path,
    blocks: Vec<Block>,
}

impl Parser<'_> {
    /// `inherited` is the condition in force where this text was included
    /// (empty for the top-level file); `depth` counts Include nesting.
    fn parse_text(
        &mut self,
        text: &str,
        origin: &str,
        inherited: &[Condition],
        depth: usize,
    ) -> Result<(), SshConfigError> {
        // Until this text opens its own Host/Match block, its lines continue
        // the includer's block; a new block is always ANDed with the include
        // site's condition, so an Include in a non-matching block contributes
        // nothing (OpenSSH's SSHCONF_NEVERMATCH).
        let mut context: Vec<Condition> = inherited.to_vec();
        for (index, raw_line) in text.lines().enumerate() {
            let line = index + 1;
            let invalid = |message: String| SshConfigError::Invalid {
                path: origin.to_string(),
                line,
                message,
            };
            let Some((keyword, args)) = split_line(raw_line).map_err(invalid)? else {
                continue;
            };
            match keyword.to_ascii_lowercase().as_str() {
                "host" => {
                    let condition = parse_host(&args).map_err(invalid)?;
                    context = inherited.to_vec();
                    context.push(condition);
                }
                "match" => {
                    if args.is_empty() {
                        return Err(invalid("Match requires at least one criterion".into()));
                    }
                    // Match criteria (host, user, exec, canonical, final, ...)
                    // are deliberately not evaluated: we cannot run `exec` and
                    // do not model canonicalisation passes. Only a bare
                    // `Match all` is unambiguous, and it equals `Host *`; every
                    // other Match block is skipped so we never apply settings
                    // that ssh itself might not.
                    let condition = if args.len() == 1 && args[0].eq_ignore_ascii_case("all") {
                        Condition::Always
                    } else {
                        Condition::Never
                    };
                    context = inherited.to_vec();
                    context.push(condition);
                }
                "include" => {
                    if args.is_empty() {
                        return Err(invalid("Include requires at least one path".into()));
                    }
                    for arg in &args {
                        if arg.is_empty() {
                            return Err(invalid("Include: empty path".into()));
                        }
                        for file in self.include_candidates(arg) {
                            // Like ssh: a missing file or an empty glob is not an
                            // error, and a matched directory contributes no lines.
                            if file.is_dir() {
                                continue;
                            }
                            let Some(included) = read_config(&file)? else {
                                continue;
                            };
                            if depth >= MAX_INCLUDE_DEPTH {
                                return Err(invalid(format!(
                                    "Include nested more than {MAX_INCLUDE_DEPTH} levels deep \
                                     (recursive Include of {}?)",
                                    file.display()
                                )));
                            }
                            let name = file.display().to_string();
                            self.parse_text(&included, &name, &context, depth + 1)?;
                        }
                    }
                }
                _ => {
                    if let Some(setting) =
                        parse_setting(keyword, &args, self.home).map_err(invalid)?
                    {
                        self.add(&context, setting);
                    }
                }
            }
        }
        Ok(())
    }

    /// Append a setting, reusing the last block when the conditions are the same.
    fn add(&mut self, conditions: &[Condition], setting: Setting) {
        match self.blocks.last_mut() {
            Some(block) if block.conditions == conditions => block.settings.push(setting),
            _ => self.blocks.push(Block {
                conditions: conditions.to_vec(),
                settings: vec![setting],
            }),
        }
    }

    /// Files an `Include` argument names, in the order they are read.
    fn include_candidates(&self, arg: &str) -> Vec<PathBuf> {
        let path = if home_relative(arg).is_some() {
            expand_tilde(arg, self.home)
        } else if arg.starts_with('~') {
            // `~otheruser/...` needs the password database; treat as matching nothing.
            return Vec::new();
        } else if Path::new(arg).is_absolute() {
            PathBuf::from(arg)
        } else {
            // OpenSSH anchors relative user-config includes in ~/.ssh.
            self.home.join(".ssh").join(arg)
        };
        expand_glob(&path)
    }
}

/// Read a config file; `Ok(None)` when it does not exist.
fn read_config(path: &Path) -> Result<Option<String>, SshConfigError> {
    match fs::read(path) {
        // ssh does not care about encoding; a stray non-UTF-8 byte should not
        // make the whole file unreadable.
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SshConfigError::Read {
            path: path.display().to_string(),
            cause: source,
        }),
    }
}

/// Expand `*`/`?` in the last component of `path` (sorted, like glob(3)).
/// Without wildcards the path is returned as is, existing or not.
fn expand_glob(path: &Path) -> Vec<PathBuf> {
    let pattern = match path.file_name().and_then(OsStr::to_str) {
        Some(name) if name.contains(['*', '?']) => name,
        _ => return vec![path.to_path_buf()],
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    // glob(3) without GLOB_ERR treats an unreadable or missing directory as "no match".
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<OsString> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .filter(|name| {
            name.to_str().is_some_and(|name| {
                // glob(3): a leading dot must be matched explicitly.
                (!name.starts_with('.') || pattern.starts_with('.'))
                    && wildcard_match(pattern, name, false)
            })
        })
        .collect();
    names.sort();
    names.into_iter().map(|name| dir.join(name)).collect()
}

/// Split a line into keyword and arguments; `Ok(None)` for blank/comment lines.
///
/// Like OpenSSH, the keyword is separated from its arguments by whitespace
/// and/or a single `=`.
fn split_line(raw: &str) -> Result<Option<(&str, Vec<String>)>, String> {
    let line = raw.trim_matches([' ', '\t', '\r', '\n', '\x0c']);
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let keyword_end = line.find([' ', '\t', '=']).unwrap_or(line.len());
    let (keyword, rest) = line.split_at(keyword_end);
    if keyword.is_empty() {
        return Err("expected a keyword before '='".into());
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    Ok(Some((keyword, split_args(rest)?)))
}

/// Split arguments the way OpenSSH's `argv_split()` does: whitespace separates,
/// single or double quotes group (also mid-word), backslash escapes quotes,
/// backslash and (outside quotes) space, and a `#` starting a word begins a
/// trailing comment.
fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        match chars.peek() {
            None | Some('#') => break,
            Some(_) => {}
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (c, quote) {
                ('\\', _) => {
                    let escapable =
                        |n: &char| matches!(n, '\'' | '"' | '\\') || (quote.is_none() && *n == ' ');
                    // An unrecognised escape keeps its backslash.
                    arg.push(chars.next_if(escapable).unwrap_or('\\'));
                }
                (' ' | '\t', None) => break,
                ('"' | '\'', None) => quote = Some(c),
                (c, Some(open)) if c == open => quote = None,
                (c, _) => arg.push(c),
            }
        }
        if quote.is_some() {
            return Err("unterminated quote".into());
        }
        args.push(arg);
    }
    Ok(args)
}

fn parse_host(args: &[String]) -> Result<Condition, String> {
    if args.is_empty() {
        return Err("Host requires at least one pattern".into());
    }
    let mut patterns = Vec::with_capacity(args.len());
    for arg in args {
        if arg.is_empty() {
            return Err("Host: empty pattern".into());
        }
        let (negated, pattern) = match arg.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, arg.as_str()),
        };
        patterns.push(HostPattern {
            negated,
            pattern: pattern.to_string(),
        });
    }
    Ok(Condition::Host(patterns))
}

/// Interpret one of the keywords we care about; `Ok(None)` for anything else.
fn parse_setting(keyword: &str, args: &[String], home: &Path) -> Result<Option<Setting>, String> {
    let setting = match keyword.to_ascii_lowercase().as_str() {
        "hostname" => Setting::HostName(single_arg("HostName", args)?.to_string()),
        "user" => Setting::User(single_arg("User", args)?.to_string()),
        "port" => {
            let value = single_arg("Port", args)?;
            match value.parse::<u16>() {
                Ok(port) if port != 0 => Setting::Port(port),
                _ => {
                    return Err(format!(
                        "invalid Port {value:?}: expected a number from 1 to 65535"
                    ))
                }
            }
        }
        "identityfile" => {
            let value = single_arg("IdentityFile", args)?;
            // `IdentityFile none` means "no file from this line".
            if value.eq_ignore_ascii_case("none") {
                return Ok(None);
            }
            Setting::IdentityFile(value.to_string())
        }
        "identitiesonly" => {
            let value = single_arg("IdentitiesOnly", args)?;
            // OpenSSH's flag parser also accepts true/false.
            match value.to_ascii_lowercase().as_str() {
                "yes" | "true" => Setting::IdentitiesOnly(true),
                "no" | "false" => Setting::IdentitiesOnly(false),
                _ => {
                    return Err(format!(
                        "invalid IdentitiesOnly {value:?}: expected yes or no"
                    ))
                }
            }
        }
        "userknownhostsfile" => {
            // Several files may be listed; the first is where ssh records new keys.
            match args.first() {
                None => return Err("UserKnownHostsFile: missing argument".into()),
                Some(first) if first.is_empty() => {
                    return Err("UserKnownHostsFile: empty argument".into())
                }
                Some(first) => Setting::UserKnownHostsFile(expand_tilde(first, home)),
            }
        }
        // Unknown or irrelevant keyword: ignored on purpose.
        _ => return Ok(None),
    };
    Ok(Some(setting))
}

/// The one argument of a single-valued keyword.
fn single_arg<'a>(name: &str, args: &'a [String]) -> Result<&'a str, String> {
    match args {
        [] => Err(format!("{name}: missing argument")),
        [one] if one.is_empty() => Err(format!("{name}: empty argument")),
        [one] => Ok(one),
        [_, extra, ..] => Err(format!("{name}: unexpected extra argument {extra:?}")),
    }
}

/// The part after `~` / `~/` when `s` refers to our home directory.
fn home_relative(s: &str) -> Option<&str> {
    if s == "~" {
        Some("")
    } else {
        s.strip_prefix("~/")
            .map(|rest| rest.trim_start_matches('/'))
    }
}

/// Expand a leading `~` or `~/` to `home`; anything else is taken literally.
fn expand_tilde(s: &str, home: &Path) -> PathBuf {
    match home_relative(s) {
        Some("") => home.to_path_buf(),
        Some(rest) => home.join(rest),
        None => PathBuf::from(s),
    }
}

/// `HostName` only knows `%h` (the alias) and `%%`.
fn expand_hostname(template: &str, alias: &str) -> String {
    let expanded = percent_expand(template, &[('h', OsStr::new(alias))]);
    // Every input is UTF-8, so the lossy branch cannot really be taken.
    expanded
        .into_string()
        .unwrap_or_else(|s| s.to_string_lossy().into_owned())
}

/// `~` first, then `%` tokens, in the order ssh applies them.
fn expand_identity_file(template: &str, home: &Path, tokens: &[(char, &OsStr)]) -> PathBuf {
    match home_relative(template) {
        Some("") => home.to_path_buf(),
        Some(rest) => home.join(percent_expand(rest, tokens)),
        None => PathBuf::from(percent_expand(template, tokens)),
    }
}

/// Replace `%x` tokens from `tokens` and `%%` with `%`. Unknown or unavailable
/// tokens are kept verbatim rather than guessed.
fn percent_expand(template: &str, tokens: &[(char, &OsStr)]) -> OsString {
    let mut out = OsString::new();
    let mut literal = String::new();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => literal.push('%'),
            Some(key) => match tokens.iter().find(|(k, _)| *k == key) {
                Some((_, value)) => {
                    out.push(&literal);
                    literal.clear();
                    out.push(value);
                }
                None => {
                    literal.push('%');
                    literal.push(key);
                }
            },
            None => literal.push('%'),
        }
    }
    out.push(&literal);
    out
}

/// Shell-style match with `*` and `?` (no character classes).
fn wildcard_match(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let fold = |c: char| {
        if ignore_case {
            c.to_ascii_lowercase()
        } else {
            c
        }
    };
    let p: Vec<char> = pattern.chars().map(fold).collect();
    let t: Vec<char> = text.chars().map(fold).collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` resumes in the pattern and how much text it has eaten,
    // so a mismatch can backtrack by letting that `*` swallow one more char.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi + 1, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((resume, eaten)) => {
                    pi = resume;
                    ti = eaten + 1;
                    star = Some((resume, eaten + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    const HOME: &str = "/home/me";

    fn cfg(text: &str) -> SshConfig {
        SshConfig::parse(text, "config", Path::new(HOME)).expect("config should parse")
    }

    fn err(text: &str) -> String {
        match SshConfig::parse(text, "cfg", Path::new(HOME)) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// A unique scratch home directory (with `.ssh/`), removed on drop.
    struct TempHome(PathBuf);

    impl TempHome {
        fn new(tag: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir().join(format!(
                "vpsup-ssh-config-{}-{tag}-{n}-{nanos}",
                std::process::id()
            ));
            fs::create_dir_all(dir.join(".ssh")).expect("create temp home");
            TempHome(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }

        /// Write `text` to `rel` (relative to the home), creating directories.
        fn write(&self, rel: &str, text: &str) -> PathBuf {
            let path = self.0.join(rel);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).expect("create parent dir");
            }
            fs::write(&path, text).expect("write file");
            path
        }

        fn load(&self) -> SshConfig {
            SshConfig::load(&self.0.join(".ssh/config"), &self.0).expect("config should load")
        }
    }

    impl Drop for TempHome {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn empty_config_gives_defaults() {
        assert_eq!(cfg("").lookup("web"), SshHostConfig::default());
        assert_eq!(
            cfg("# only a comment\n\n   \n\t# indented\n").lookup("web"),
            SshHostConfig::default()
        );
    }

    #[test]
    fn first_value_wins() {
        let c = cfg("Host web\n  User alice\n  Port 2222\n\
             Host *\n  User nobody\n  Port 22\n  HostName fallback.example\n\
             Host web\n  HostName too-late.example\n");
        let web = c.lookup("web");
        assert_eq!(web.user.as_deref(), Some("alice"));
        assert_eq!(web.port, Some(2222));
        assert_eq!(web.hostname.as_deref(), Some("fallback.example"));

        let other = c.lookup("other");
        assert_eq!(other.user.as_deref(), Some("nobody"));
        assert_eq!(other.port, Some(22));
    }

    #[test]
    fn first_value_wins_within_one_block() {
        let c = cfg(
            "Host web\n  User first\n  User second\n  IdentitiesOnly no\n  IdentitiesOnly yes\n",
        );
        let web = c.lookup("web");
        assert_eq!(web.user.as_deref(), Some("first"));
        assert_eq!(web.identities_only, Some(false));
    }

    #[test]
    fn lines_before_first_host_apply_to_all() {
        let c = cfg("User global\nPort 2200\nHost web\n  User alice\n  Port 22\n");
        let web = c.lookup("web");
        assert_eq!(web.user.as_deref(), Some("global"));
        assert_eq!(web.port, Some(2200));
        assert_eq!(c.lookup("db").user.as_deref(), Some("global"));
    }

    #[test]
    fn wildcards() {
        let c = cfg("Host *.example.com\n  User star\nHost db?\n  User question\n");
        assert_eq!(c.lookup("a.example.com").user.as_deref(), Some("star"));
        assert_eq!(c.lookup("a.b.example.com").user.as_deref(), Some("star"));
        assert_eq!(c.lookup("example.com").user, None);
        assert_eq!(c.lookup("db1").user.as_deref(), Some("question"));
        assert_eq!(c.lookup("db").user, None);
        assert_eq!(c.lookup("db12").user, None);
    }

    #[test]
    fn negation_excludes_block() {
        let c = cfg("Host *.example.com !secret.example.com\n  User web\nHost *\n  User default\n");
        assert_eq!(c.lookup("www.example.com").user.as_deref(), Some("web"));
        assert_eq!(
            c.lookup("secret.example.com").user.as_deref(),
            Some("default")
        );
        // Order of patterns does not matter: the negation still vetoes.
        let c = cfg("Host !bad *\n  Port 2222\n");
        assert_eq!(c.lookup("good").port, Some(2222));
        assert_eq!(c.lookup("bad").port, None);
        // A negation alone matches nothing.
        assert_eq!(cfg("Host !bad\n  Port 2222\n").lookup("good").port, None);
    }

    #[test]
    fn multiple_patterns() {
        let c = cfg("Host web db cache-*\n  User ops\n");
        for alias in ["web", "db", "cache-1"] {
            assert_eq!(c.lookup(alias).user.as_deref(), Some("ops"), "{alias}");
        }
        assert_eq!(c.lookup("webserver").user, None);
    }

    #[test]
    fn keywords_and_hosts_are_case_insensitive() {
        let c = cfg("HOST Web.Example.COM\n  hostname 10.0.0.1\n  USER Alice\n  pOrT 2022\n");
        let h = c.lookup("web.example.com");
        assert_eq!(h.hostname.as_deref(), Some("10.0.0.1"));
        // Values keep their case.
        assert_eq!(h.user.as_deref(), Some("Alice"));
        assert_eq!(h.port, Some(2022));
        assert_eq!(c.lookup("WEB.example.com").port, Some(2022));
    }

    #[test]
    fn equals_syntax() {
        let c =
            cfg("Host=web\nUser=alice\nPort = 2222\nHostName =web.example\nIdentitiesOnly= yes\n");
        let h = c.lookup("web");
        assert_eq!(h.user.as_deref(), Some("alice"));
        assert_eq!(h.port, Some(2222));
        assert_eq!(h.hostname.as_deref(), Some("web.example"));
        assert_eq!(h.identities_only, Some(true));
        // Only one '=' is a separator; a second one is part of the value.
        assert!(err("Port ==22\n").contains("invalid Port \"=22\""));
    }

    #[test]
    fn quoted_values_and_escapes() {
        let c = cfg("Host \"web\"\n  IdentityFile \"/keys/my key\"\n  IdentityFile '/keys/single quoted'\n  \
             IdentityFile /keys/mid\"dle part\"\n  IdentityFile /keys/esc\\ aped\n  User \"\"\"a\"\n");
        let h = c.lookup("web");
        assert_eq!(
            h.identity_files,
            vec![
                PathBuf::from("/keys/my key"),
                PathBuf::from("/keys/single quoted"),
                PathBuf::from("/keys/middle part"),
                PathBuf::from("/keys/esc aped"),
            ]
        );
        assert_eq!(h.user.as_deref(), Some("a"));
    }

    #[test]
    fn unterminated_quote_is_invalid() {
        assert_eq!(
            err("Host web\n  IdentityFile \"/keys/broken\n"),
            "cfg:2: unterminated quote"
        );
    }

    #[test]
    fn trailing_comments_and_crlf() {
        let c = cfg("Host web # production\r\n  Port 2222 # custom\r\n  User bob\t \r\n");
        let h = c.lookup("web");
        assert_eq!(h.port, Some(2222));
        assert_eq!(h.user.as_deref(), Some("bob"));
        // '#' inside a word is not a comment.
        assert_eq!(cfg("User a#b\n").lookup("x").user.as_deref(), Some("a#b"));
    }

    #[test]
    fn tilde_expansion() {
        let c = cfg("IdentityFile ~/.ssh/id_ed25519\nIdentityFile ~\nIdentityFile ~other/key\n\
             IdentityFile relative/key\nUserKnownHostsFile ~/.ssh/vpsup_known_hosts ~/.ssh/known_hosts\n");
        let h = c.lookup("any");
        assert_eq!(
            h.identity_files,
            vec![
                PathBuf::from("/home/me/.ssh/id_ed25519"),
                PathBuf::from("/home/me"),
                PathBuf::from("~other/key"),
                PathBuf::from("relative/key"),
            ]
        );
        assert_eq!(
            h.user_known_hosts_file,
            Some(PathBuf::from("/home/me/.ssh/vpsup_known_hosts"))
        );
    }

    #[test]
    fn hostname_percent_expansion() {
        let c = cfg("Host *.lan\n  HostName %h.example.com\nHost pct\n  HostName 100%%.example\nHost odd\n  HostName %x-%\n");
        assert_eq!(
            c.lookup("web.lan").hostname.as_deref(),
            Some("web.lan.example.com")
        );
        assert_eq!(c.lookup("pct").hostname.as_deref(), Some("100%.example"));
        // Unknown tokens are kept as written.
        assert_eq!(c.lookup("odd").hostname.as_deref(), Some("%x-%"));
    }

    #[test]
    fn identity_files_accumulate_across_blocks() {
        let c = cfg("IdentityFile ~/.ssh/global\nHost web\n  IdentityFile ~/.ssh/web\n  IdentityFile none\n\
             Host db\n  IdentityFile ~/.ssh/db\nHost *\n  IdentityFile ~/.ssh/any\n");
        assert_eq!(
            c.lookup("web").identity_files,
            vec![
                PathBuf::from("/home/me/.ssh/global"),
                PathBuf::from("/home/me/.ssh/web"),
                PathBuf::from("/home/me/.ssh/any"),
            ]
        );
    }

    #[test]
    fn identity_file_tokens() {
        let c = cfg("Host web\n  HostName web.example\n  User deploy\n  Port 2200\n  \
             IdentityFile %d/.ssh/%h-%r\n  IdentityFile ~/.ssh/%u@%n:%p_100%%\n  IdentityFile /k/%C\n");
        let h = c.lookup_with_local_user("web", Some(OsStr::new("me")));
        assert_eq!(
            h.identity_files,
            vec![
                PathBuf::from("/home/me/.ssh/web.example-deploy"),
                PathBuf::from("/home/me/.ssh/me@web:2200_100%"),
                PathBuf::from("/k/%C"),
            ]
        );
    }

    #[test]
    fn identity_file_tokens_fall_back() {
        // No HostName: %h is the alias. No User: %r is the local user.
        let c = cfg("IdentityFile /k/%h-%r-%u\n");
        assert_eq!(
            c.lookup_with_local_user("box", Some(OsStr::new("me")))
                .identity_files,
            vec![PathBuf::from("/k/box-me-me")]
        );
        // No local user known either: tokens stay verbatim.
        assert_eq!(
            c.lookup_with_local_user("box", None).identity_files,
            vec![PathBuf::from("/k/box-%r-%u")]
        );
    }

    #[test]
    fn match_all_applies_other_match_blocks_are_skipped() {
        let c = cfg(
            "Match host web exec \"true\"\n  User from-match\n  Port 1111\n\
             Match ALL\n  User everyone\n\
             Match canonical all\n  Port 3333\n",
        );
        let h = c.lookup("web");
        assert_eq!(h.user.as_deref(), Some("everyone"));
        assert_eq!(h.port, None);
        // A Host after a skipped Match starts a fresh, evaluated block.
        let c = cfg("Match user root\n  Port 1\nHost web\n  Port 2\n");
        assert_eq!(c.lookup("web").port, Some(2));
    }

    #[test]
    fn unknown_keywords_are_ignored() {
        let c = cfg(
            "ForwardAgent yes\nSomeFutureOption a \"b c\" d\nServerAliveInterval=30\n\
             Host web\n  ControlMaster auto\n  User bob\n  ProxyJump\n",
        );
        assert_eq!(c.lookup("web").user.as_deref(), Some("bob"));
    }

    #[test]
    fn bad_port_reports_file_and_line() {
        assert_eq!(
            err("Host web\n  User x\n  Port abc\n"),
            "cfg:3: invalid Port \"abc\": expected a number from 1 to 65535"
        );
        assert!(err("Port 0\n").starts_with("cfg:1: invalid Port \"0\""));
        assert!(err("\nPort 65536\n").starts_with("cfg:2: invalid Port \"65536\""));
        assert!(err("Port -1\n").starts_with("cfg:1: invalid Port"));
        assert_eq!(err("Port\n"), "cfg:1: Port: missing argument");
        assert_eq!(
            err("Port 22 23\n"),
            "cfg:1: Port: unexpected extra argument \"23\""
        );
        // Validation does not depend on whether the block would match.
        assert!(err("Host nothing-matches-this\n  Port 99999\n").starts_with("cfg:2:"));
        assert_eq!(cfg("Port 65535\n").lookup("x").port, Some(65535));
        assert_eq!(cfg("Port 1\n").lookup("x").port, Some(1));
    }

    #[test]
    fn error_variant_fields() {
        match SshConfig::parse("\n\nIdentitiesOnly maybe\n", "/etc/x", Path::new(HOME)) {
            Err(SshConfigError::Invalid {
                path,
                line,
                message,
            }) => {
                assert_eq!(path, "/etc/x");
                assert_eq!(line, 3);
                assert_eq!(
                    message,
                    "invalid IdentitiesOnly \"maybe\": expected yes or no"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            cfg("IdentitiesOnly TRUE\n").lookup("x").identities_only,
            Some(true)
        );
    }

    #[test]
    fn structural_errors() {
        assert_eq!(err("Host\n"), "cfg:1: Host requires at least one pattern");
        assert_eq!(
            err("Match\n"),
            "cfg:1: Match requires at least one criterion"
        );
        assert_eq!(
            err("Include\n"),
            "cfg:1: Include requires at least one path"
        );
        assert_eq!(err("HostName \"\"\n"), "cfg:1: HostName: empty argument");
        assert_eq!(err("=value\n"), "cfg:1: expected a keyword before '='");
    }

    #[test]
    fn wildcard_matcher() {
        assert!(wildcard_match("*", "", true));
        assert!(wildcard_match("a*b*c", "aXXbYYc", true));
        assert!(wildcard_match("a*b", "abab", true));
        assert!(!wildcard_match("a*b", "abac", true));
        assert!(wildcard_match("??", "ab", true));
        assert!(!wildcard_match("??", "abc", true));
        assert!(wildcard_match("AB", "ab", true));
        assert!(!wildcard_match("AB", "ab", false));
        assert!(wildcard_match("**x", "yyx", false));
    }

    #[test]
    fn missing_file_is_empty_config() {
        let home = TempHome::new("missing");
        let c = home.load();
        assert_eq!(c.lookup("web"), SshHostConfig::default());
    }

    #[test]
    fn unreadable_file_is_error() {
        let home = TempHome::new("unreadable");
        // Reading a directory fails with something other than NotFound.
        match SshConfig::load(&home.path().join(".ssh"), home.path()) {
            Err(SshConfigError::Read { path, .. }) => assert!(path.ends_with(".ssh")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn load_reports_real_path_in_errors() {
        let home = TempHome::new("loaderr");
        let path = home.write(".ssh/config", "Host web\n  Port nope\n");
        let e = SshConfig::load(&path, home.path()).expect_err("bad port");
        assert_eq!(
            e.to_string(),
            format!(
                "{}:2: invalid Port \"nope\": expected a number from 1 to 65535",
                path.display()
            )
        );
    }

    #[test]
    fn include_glob_is_sorted_and_skips_hidden_and_dirs() {
        let home = TempHome::new("glob");
        home.write(
            ".ssh/config",
            "Include config.d/*.conf\nHost *\n  User fallback\n",
        );
        home.write(
            ".ssh/config.d/20-b.conf",
            "Host web\n  User bob\n  Port 2200\n",
        );
        home.write(".ssh/config.d/10-a.conf", "Host web\n  User alice\n");
        home.write(
            ".ssh/config.d/.hidden.conf",
            "Host web\n  User hidden\n  Port 1\n",
        );
        home.write(".ssh/config.d/notes.txt", "Host web\n  Port 2\n");
        fs::create_dir_all(home.path().join(".ssh/config.d/dir.conf")).expect("mkdir");
        let c = home.load();
        let web = c.lookup("web");
        assert_eq!(web.user.as_deref(), Some("alice"));
        assert_eq!(web.port, Some(2200));
        assert_eq!(c.lookup("other").user.as_deref(), Some("fallback"));
    }

    #[test]
    fn include_tilde_absolute_and_missing() {
        let home = TempHome::new("paths");
        let abs = home.write("elsewhere/abs.conf", "Host abs\n  Port 1001\n");
        home.write("tilde.conf", "Host tilde\n  Port 1002\n");
        home.write(
            ".ssh/config",
            &format!(
                "Include {} ~/tilde.conf\nInclude nonexistent.conf no-such-dir/* ~nobody-here/x\nUser u\n",
                abs.display()
            ),
        );
        let c = home.load();
        assert_eq!(c.lookup("abs").port, Some(1001));
        assert_eq!(c.lookup("tilde").port, Some(1002));
        // Lines after the Include are back in the top-level (global) context.
        assert_eq!(c.lookup("abs").user.as_deref(), Some("u"));
        assert_eq!(c.lookup("zzz").user.as_deref(), Some("u"));
    }

    #[test]
    fn include_inside_host_block_is_scoped() {
        let home = TempHome::new("scoped");
        home.write(
            ".ssh/config",
            "Host web\n  Include web.conf\n  Port 2222\nHost *\n  User default\n",
        );
        home.write(
            ".ssh/web.conf",
            "User webuser\nIdentityFile ~/.ssh/web_key\nHost db\n  User dbuser\n  HostName db.internal\n",
        );
        let c = home.load();
        let web = c.lookup("web");
        assert_eq!(web.user.as_deref(), Some("webuser"));
        assert_eq!(web.port, Some(2222));
        assert_eq!(web.identity_files, vec![home.path().join(".ssh/web_key")]);
        // The included file's own Host block only applies within the Host web
        // scope, so it can never match "db" (OpenSSH behaves the same way).
        let db = c.lookup("db");
        assert_eq!(db.user.as_deref(), Some("default"));
        assert_eq!(db.hostname, None);
        assert_eq!(c.lookup("other").user.as_deref(), Some("default"));
    }

    #[test]
    fn include_inside_skipped_match_never_applies() {
        let home = TempHome::new("match");
        home.write(".ssh/config", "Match user root\n  Include extra.conf\n");
        home.write(".ssh/extra.conf", "Port 9\nHost *\n  User x\n");
        let c = home.load();
        assert_eq!(c.lookup("any"), SshHostConfig::default());
    }

    #[test]
    fn include_errors_name_the_included_file() {
        let home = TempHome::new("incerr");
        home.write(".ssh/config", "Include bad.conf\n");
        let bad = home.write(".ssh/bad.conf", "# comment\nIdentitiesOnly sometimes\n");
        let e = SshConfig::load(&home.path().join(".ssh/config"), home.path()).expect_err("bad");
        assert!(
            e.to_string()
                .starts_with(&format!("{}:2: invalid IdentitiesOnly", bad.display())),
            "{e}"
        );
    }

    #[test]
    fn recursive_include_is_an_error() {
        let home = TempHome::new("recursive");
        home.write(".ssh/config", "Host *\n  Include config\n");
        let e =
            SshConfig::load(&home.path().join(".ssh/config"), home.path()).expect_err("recursion");
        match e {
            SshConfigError::Invalid { line, message, .. } => {
                assert_eq!(line, 2);
                assert!(message.contains("more than 16 levels"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn include_nesting_up_to_limit_is_fine() {
        let home = TempHome::new("deep");
        // config -> n1 -> ... -> n16: exactly 16 levels of Include.
        home.write(".ssh/config", "Include n1\n");
        for i in 1..16 {
            home.write(&format!(".ssh/n{i}"), &format!("Include n{}\n", i + 1));
        }
        home.write(".ssh/n16", "Port 4242\n");
        assert_eq!(home.load().lookup("x").port, Some(4242));
    }
}
