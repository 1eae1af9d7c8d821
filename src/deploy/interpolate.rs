//! Compose's variable interpolation, for the parts of a compose file vpsup
//! must see as compose will on the host (`network_mode`, `ports`, `volumes`,
//! `include`, `extends`): `network_mode: "${NET:-host}"` with `NET=host` in
//! `.env` is host networking, however it is spelled.
//!
//! The syntax is the compose specification's: `$NAME`, `${NAME}`, `${NAME:-default}`
//! (unset or empty), `${NAME-default}` (unset), `${NAME:?error}`, `${NAME?error}`,
//! `${NAME:+replacement}`, `${NAME+replacement}`, nested in defaults, and `$$`
//! for a literal `$`. The variables are those compose gets on the host: the
//! env files (`.env`, the generated secrets, `[app] env_files`, a later one
//! winning; an included file's own `.env` beneath its includer's), read
//! with compose's `.env` syntax. vpsup runs compose with no other variables
//! of its own, so a name set nowhere is unset, as compose will find it.
//! A generated secret's value exists only on the host: where these parts
//! would need it, that is an error (`pieces` leaves it a place instead, for
//! the export, which refers to it).

use std::collections::BTreeMap;

/// Interpolated text in pieces (`Env::pieces`): text, and the places of
/// secrets, whose values are known on the host only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// A secret's value: its name.
    Secret(String),
}

/// What `Env::pieces` made of a text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pieces {
    pub pieces: Vec<Piece>,
    /// Variables it read that are set nowhere (compose leaves them empty,
    /// with a warning), in order, once each.
    pub unset: Vec<String>,
}

impl Pieces {
    fn text(&mut self, text: &str) {
        match self.pieces.last_mut() {
            Some(Piece::Text(t)) => t.push_str(text),
            _ if text.is_empty() => {}
            _ => self.pieces.push(Piece::Text(text.to_string())),
        }
    }
}

/// Where `expand` writes: the pieces, and whether a secret may stay a place
/// (`pieces`) or is an error (`interpolate`: the value itself is needed).
struct Sink {
    out: Pieces,
    keep_secrets: bool,
}

/// The variables a compose file is interpolated with.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Env {
    vars: BTreeMap<String, Var>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Var {
    Known(String),
    /// Set on the host to a random value (`[app.secrets] generate`).
    Secret,
}

impl Env {
    /// Sets `name` (a later setting wins).
    pub fn set(&mut self, name: &str, value: &str) {
        self.vars
            .insert(name.to_string(), Var::Known(value.to_string()));
    }

    /// Every variable set, by name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }

    /// `name`'s value, when it is known here.
    pub fn known(&self, name: &str) -> Option<&str> {
        match self.vars.get(name) {
            Some(Var::Known(v)) => Some(v),
            _ => None,
        }
    }

    /// `name` is generated on the host: set, not empty, value unknown here.
    pub fn set_secret(&mut self, name: &str) {
        self.vars.insert(name.to_string(), Var::Secret);
    }

    /// The variables of an env file (compose's `.env` syntax: `NAME=value`
    /// or `NAME: value`, `export ` allowed, `#` comments; values unquoted,
    /// in '...' (literal) or "..." (escapes), quoted ones spanning lines),
    /// later ones winning; `${VAR}` in unquoted and "..." values reads what
    /// is set so far.
    pub fn read_env_file(&mut self, text: &str) -> Result<(), String> {
        let mut rest = text;
        let mut line = 1;
        loop {
            // Blank lines and comments.
            let trimmed = rest.trim_start_matches([' ', '\t', '\r', '\n']);
            line += rest[..rest.len() - trimmed.len()].matches('\n').count();
            rest = trimmed;
            if rest.is_empty() {
                return Ok(());
            }
            if rest.starts_with('#') {
                rest = rest.find('\n').map_or("", |i| &rest[i..]);
                continue;
            }
            let at = |why: String| format!("line {line}: {why}");
            let statement = rest
                .strip_prefix("export")
                .filter(|r| r.starts_with([' ', '\t']))
                .map_or(rest, str::trim_start);
            let end_of_name = statement.find(['=', ':', '\n']).unwrap_or(statement.len());
            let name = statement[..end_of_name].trim();
            if !is_name(name) {
                return Err(at(format!("{name:?} is not a variable name")));
            }
            let after = &statement[end_of_name..];
            let Some(value) = after.strip_prefix(['=', ':']) else {
                // A bare name passes the process's own variable on: none.
                rest = after;
                continue;
            };
            let value = value.trim_start_matches([' ', '\t']);
            let (text, remainder) = if let Some(quoted) = value.strip_prefix('\'') {
                let end = quoted
                    .find('\'')
                    .ok_or_else(|| at("no closing '".to_string()))?;
                (Some(quoted[..end].to_string()), &quoted[end + 1..])
            } else if let Some(quoted) = value.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = quoted.char_indices();
                let end = loop {
                    match chars.next() {
                        None => return Err(at("no closing \"".to_string())),
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => out.push('\n'),
                            Some((_, 't')) => out.push('\t'),
                            // A literal `$`, kept from interpolation as `$$`.
                            Some((_, '$')) => out.push_str("$$"),
                            Some((_, c)) => out.push(c),
                            None => return Err(at("no closing \"".to_string())),
                        },
                        Some((_, c)) => out.push(c),
                    }
                };
                (self.env_value(name, &out).map_err(at)?, &quoted[end + 1..])
            } else {
                let end = value.find('\n').unwrap_or(value.len());
                let mut unquoted = &value[..end];
                // A `#` after whitespace starts a comment.
                if let Some(i) = unquoted
                    .char_indices()
                    .find(|&(i, c)| c == '#' && i > 0 && unquoted[..i].ends_with([' ', '\t']))
                    .map(|(i, _)| i)
                {
                    unquoted = &unquoted[..i];
                }
                let text = unquoted.trim_end_matches([' ', '\t', '\r']);
                (self.env_value(name, text).map_err(at)?, &value[end..])
            };
            line += value[..value.len() - remainder.len()].matches('\n').count();
            match text {
                Some(text) => self.set(name, &text),
                None => self.set_secret(name),
            }
            // Whatever follows a quoted value on its line is a comment.
            rest = remainder.find('\n').map_or("", |i| &remainder[i..]);
        }
    }

    /// `other`'s variables where this has none (an included file's own
    /// `.env` under its includer's variables, which win).
    pub fn fill_from(&mut self, other: &Env) {
        for (name, var) in &other.vars {
            self.vars.entry(name.clone()).or_insert_with(|| var.clone());
        }
    }

    /// An env file's value `text` of `name` interpolated; `None` when it is
    /// made from a generated secret (known on the host only, so unknown
    /// here, like the secret). An error names the variable, never the value
    /// (an env file holds passwords).
    fn env_value(&self, name: &str, text: &str) -> Result<Option<String>, String> {
        if self.uses_secret(text) {
            return Ok(None);
        }
        self.expand(text)
            .map(Some)
            .map_err(|why| format!("the value of {name}: {why}"))
    }

    /// Whether `text` reads a generated secret (`$NAME` or `${NAME...}`).
    fn uses_secret(&self, text: &str) -> bool {
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            let after = &rest[i + 1..];
            if let Some(after) = after.strip_prefix('$') {
                rest = after;
                continue;
            }
            let named = after.strip_prefix('{').unwrap_or(after);
            let len = named
                .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
                .unwrap_or(named.len());
            if self.vars.get(&named[..len]) == Some(&Var::Secret) {
                return true;
            }
            rest = after;
        }
        false
    }

    /// `text` with every variable replaced, as compose does it.
    pub fn interpolate(&self, text: &str) -> Result<String, String> {
        self.expand(text).map_err(|why| format!("{text:?}: {why}"))
    }

    /// `text` interpolated as compose does it, each secret's value left as
    /// its place: for a caller that refers to the secret instead of writing
    /// it. The errors never show the text (it may hold a password).
    pub fn pieces(&self, text: &str) -> Result<Pieces, String> {
        let mut sink = Sink {
            out: Pieces::default(),
            keep_secrets: true,
        };
        self.expand_into(text, &mut sink)?;
        Ok(sink.out)
    }

    /// `interpolate`, its errors without the text.
    fn expand(&self, text: &str) -> Result<String, String> {
        let mut sink = Sink {
            out: Pieces::default(),
            keep_secrets: false,
        };
        self.expand_into(text, &mut sink)?;
        Ok(sink
            .out
            .pieces
            .into_iter()
            .map(|p| match p {
                Piece::Text(t) => t,
                Piece::Secret(_) => unreachable!("a secret is an error here"),
            })
            .collect())
    }

    fn expand_into(&self, text: &str, out: &mut Sink) -> Result<(), String> {
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            out.out.text(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(after) = after.strip_prefix('$') {
                out.out.text("$");
                rest = after;
            } else if let Some(braced) = after.strip_prefix('{') {
                let end =
                    closing_brace(braced).ok_or_else(|| "a `${` without its `}`".to_string())?;
                self.braced(&braced[..end], out)?;
                rest = &braced[end + 1..];
            } else {
                let len = after
                    .char_indices()
                    .find(|&(i, c)| {
                        !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
                    })
                    .map_or(after.len(), |(i, _)| i);
                if len == 0 {
                    return Err(
                        "`$` must start a variable (`$NAME`, `${NAME}`) or be written `$$`"
                            .to_string(),
                    );
                }
                self.value(&after[..len], out)?;
                rest = &after[len..];
            }
        }
        out.out.text(rest);
        Ok(())
    }

    /// `${...}`'s inside: a name and perhaps an operator with its word.
    fn braced(&self, inside: &str, out: &mut Sink) -> Result<(), String> {
        let len = inside
            .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
            .unwrap_or(inside.len());
        let (name, op) = inside.split_at(len);
        if !is_name(name) {
            return Err(format!("{name:?} is not a variable name"));
        }
        let var = self.vars.get(name);
        let empty = matches!(var, Some(Var::Known(v)) if v.is_empty());
        let unset = var.is_none();
        let (word, colon) = match op.strip_prefix(':') {
            Some(rest) => (rest, true),
            None => (op, false),
        };
        let missing = unset || (colon && empty);
        match word.chars().next() {
            None if !colon => self.value(name, out),
            Some('-') if missing => self.expand_into(&word[1..], out),
            Some('-') => self.value(name, out),
            Some('+') if missing => Ok(()),
            Some('+') => self.expand_into(&word[1..], out),
            Some('?') if missing => Err(format!(
                "{name} is required: {}",
                self.expand(&word[1..])?
            )),
            Some('?') => self.value(name, out),
            _ => Err(format!(
                "`${{{name}{op}}}` is not compose's syntax (`${{NAME}}`, `${{NAME:-default}}`, `${{NAME:?error}}`, `${{NAME:+value}}`)"
            )),
        }
    }

    fn value(&self, name: &str, out: &mut Sink) -> Result<(), String> {
        match self.vars.get(name) {
            None => {
                if !out.out.unset.iter().any(|n| n == name) {
                    out.out.unset.push(name.to_string());
                }
            }
            Some(Var::Known(v)) => out.out.text(v),
            Some(Var::Secret) if out.keep_secrets => {
                out.out.pieces.push(Piece::Secret(name.to_string()))
            }
            Some(Var::Secret) => {
                return Err(format!(
                    "needs ${{{name}}}, a secret [app.secrets] generates on the host: vpsup cannot check what it would be here; write the value itself"
                ))
            }
        }
        Ok(())
    }
}

fn is_name(s: &str) -> bool {
    s.starts_with(|c: char| c == '_' || c.is_ascii_alphabetic())
        && s.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// The index of the `}` closing a `${` whose inside starts `s` (nested
/// `${...}` in a default skipped).
fn closing_brace(s: &str) -> Option<usize> {
    let mut depth = 0;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Every string in `value`, interpolated.
pub fn interpolate_all(value: &mut serde_json::Value, env: &Env) -> Result<(), String> {
    use serde_json::Value;
    match value {
        Value::String(s) => *s = env.interpolate(s)?,
        Value::Array(items) => {
            for item in items {
                interpolate_all(item, env)?;
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                interpolate_all(item, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Every `$` in the strings of `value` escaped (`$$`): interpolated text
/// written back into a compose file stays as it is.
pub fn escape_all(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => *s = s.replace('$', "$$"),
        Value::Array(items) => items.iter_mut().for_each(escape_all),
        Value::Object(map) => map.values_mut().for_each(escape_all),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let mut env = Env::default();
        for (name, value) in pairs {
            env.set(name, value);
        }
        env
    }

    #[test]
    fn compose_syntax_with_set_empty_and_unset_variables() {
        let e = env(&[("NET", "host"), ("EMPTY", ""), ("PORT", "5432")]);
        for (text, expected) in [
            ("$NET", "host"),
            ("${NET}", "host"),
            ("${NET}-x", "host-x"),
            ("$NET-x", "host-x"),
            ("${UNSET}", ""),
            ("${UNSET:-host}", "host"),
            ("${UNSET-host}", "host"),
            ("${EMPTY:-host}", "host"),
            ("${EMPTY-host}", ""),
            ("${NET:-bridge}", "host"),
            ("${NET:+host}", "host"),
            ("${UNSET:+host}", ""),
            ("${EMPTY:+host}", ""),
            ("${EMPTY+host}", "host"),
            ("${UNSET:-${NET}}", "host"),
            ("${UNSET:-${ALSO:-${NET}}}", "host"),
            ("$${NET}", "${NET}"),
            ("$$NET", "$NET"),
            ("127.0.0.1:${PORT}:5432", "127.0.0.1:5432:5432"),
            ("${PORT:?set PORT}:5432", "5432:5432"),
            ("plain", "plain"),
        ] {
            assert_eq!(e.interpolate(text).unwrap(), expected, "{text}");
        }
        for (text, said) in [
            (
                "${UNSET:?set it in .env}",
                "UNSET is required: set it in .env",
            ),
            ("${EMPTY:?no}", "EMPTY is required: no"),
            ("${NET", "without its `}`"),
            ("$5", "must start a variable"),
            ("${NET/x/y}", "not compose's syntax"),
            ("${1X}", "is not a variable name"),
        ] {
            let err = e.interpolate(text).unwrap_err();
            assert!(err.contains(said), "{text}: {err}");
        }
        assert_eq!(e.interpolate("${EMPTY?x}").unwrap(), "");
    }

    #[test]
    fn a_generated_secret_cannot_be_known_here() {
        let mut e = Env::default();
        e.set_secret("DB_PASSWORD");
        let err = e.interpolate("${DB_PASSWORD:-host}").unwrap_err();
        assert!(err.contains("a secret [app.secrets] generates"), "{err}");
        // Set and not empty, whatever its value.
        assert_eq!(e.interpolate("${DB_PASSWORD:+host}").unwrap(), "host");
        assert!(e.interpolate("${DB_PASSWORD:?x}").is_err());
    }

    /// For a caller that refers to a secret instead of writing it (the
    /// export): compose's syntax applies around it, a secret is set and not
    /// empty, and what is set nowhere is listed.
    #[test]
    fn pieces_leave_secrets_as_places_and_list_what_is_unset() {
        let mut e = env(&[("NET", "host")]);
        e.set_secret("PW");
        let p = e
            .pieces("a$$b ${PW} ${PW:-x} ${PW:+set} ${NOPE:-${PW}} $NET$NOPE ${NOPE}")
            .unwrap();
        assert_eq!(
            p.pieces,
            [
                Piece::Text("a$b ".into()),
                Piece::Secret("PW".into()),
                Piece::Text(" ".into()),
                Piece::Secret("PW".into()),
                Piece::Text(" set ".into()),
                Piece::Secret("PW".into()),
                Piece::Text(" host ".into()),
            ]
        );
        assert_eq!(p.unset, ["NOPE"]);
        let err = e.pieces("pw=hunter2$5").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    /// An env file may build a value from a generated secret (compose
    /// does): that value is unknown here too, and only where a checked key
    /// needs it is that an error. No error shows an env file's value.
    #[test]
    fn env_values_made_from_a_secret_are_unknown_and_errors_hide_values() {
        let mut e = Env::default();
        e.set_secret("DB_PASSWORD");
        e.read_env_file("DATABASE_URL=postgres://app:${DB_PASSWORD}@db/app\nPLAIN=x\n")
            .unwrap();
        assert_eq!(e.interpolate("${PLAIN}").unwrap(), "x");
        let err = e.interpolate("${DATABASE_URL}").unwrap_err();
        assert!(err.contains("a secret [app.secrets] generates"), "{err}");
        for broken in [
            "PW=hunter2$5x\n",
            "PW=\"hunter2${x\"\n",
            "PW=hunter2${x/y}\n",
        ] {
            let err = Env::default().read_env_file(broken).unwrap_err();
            assert!(
                !err.contains("hunter2") && err.contains("the value of PW"),
                "{broken}: {err}"
            );
        }
    }

    #[test]
    fn env_files_read_as_compose_reads_them() {
        let mut e = Env::default();
        e.read_env_file(
            "# comment\n\nNET=host\nexport MODE = bridge\nQUOTED=\"a b # c\"\nSINGLE='${NET}'\nDOUBLE=\"${NET}\"\nREF=${NET}-1\nTRAILING=x # comment\nESCAPED=\"\\$NET\"\nBARE\nEMPTY=\n",
        )
        .unwrap();
        for (name, value) in [
            ("NET", "host"),
            ("MODE", "bridge"),
            ("QUOTED", "a b # c"),
            ("SINGLE", "${NET}"),
            ("DOUBLE", "host"),
            ("REF", "host-1"),
            ("TRAILING", "x"),
            ("ESCAPED", "$NET"),
            ("EMPTY", ""),
        ] {
            assert_eq!(
                e.interpolate(&format!("${{{name}}}")).unwrap(),
                value,
                "{name}"
            );
        }
        assert_eq!(e.interpolate("${BARE:-unset}").unwrap(), "unset");
        let err = Env::default()
            .read_env_file("OK=1\nNOT A NAME=2\n")
            .unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        let err = Env::default().read_env_file("X=1\nY=\"open\n").unwrap_err();
        assert_eq!(err, "line 2: no closing \"");

        // Quoted values may span lines (a PEM key); compose's `NAME: value`.
        let mut e = Env::default();
        e.read_env_file(
            "KEY=\"-----BEGIN KEY-----\nabc\n-----END KEY-----\" # the key\nRAW='a\nb'\nYAML: host\n\n# end\nLAST=$YAML\nURL=http://x:1/#frag\n",
        )
        .unwrap();
        for (name, value) in [
            ("KEY", "-----BEGIN KEY-----\nabc\n-----END KEY-----"),
            ("RAW", "a\nb"),
            ("YAML", "host"),
            ("LAST", "host"),
            ("URL", "http://x:1/#frag"),
        ] {
            assert_eq!(
                e.interpolate(&format!("${{{name}}}")).unwrap(),
                value,
                "{name}"
            );
        }
        let err = Env::default()
            .read_env_file("A='x\ny'\nB=\"\nC\n")
            .unwrap_err();
        assert_eq!(err, "line 3: no closing \"");
    }

    #[test]
    fn an_includers_variables_win_over_the_included_files_own() {
        let mut parent = env(&[("NET", "bridge")]);
        let own = env(&[("NET", "host"), ("ONLY_HERE", "1")]);
        parent.fill_from(&own);
        assert_eq!(parent.interpolate("$NET $ONLY_HERE").unwrap(), "bridge 1");
    }

    #[test]
    fn escaping_undoes_interpolation() {
        let e = env(&[("HOME_DIR", "/srv/$HOME")]);
        let mut doc = serde_json::json!({"volumes": ["${HOME_DIR}:/data"], "n": 1});
        interpolate_all(&mut doc, &e).unwrap();
        assert_eq!(doc["volumes"][0], "/srv/$HOME:/data");
        escape_all(&mut doc);
        assert_eq!(doc["volumes"][0], "/srv/$$HOME:/data");
        let mut again = doc.clone();
        interpolate_all(&mut again, &Env::default()).unwrap();
        assert_eq!(again["volumes"][0], "/srv/$HOME:/data");
    }
}
