//! Pure builders for the shell commands the transports run. Nothing here does
//! I/O, so every command vpsup sends is unit-tested by comparing text.

use sha2::{Digest, Sha256};

use super::FileMeta;

/// Exit status our scripts use for "no such file" (distinct from tool failures).
pub const ABSENT_EXIT: u32 = 100;

/// Quote `s` as one POSIX shell word.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./=:@%+,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The argv that runs `script`: always `sh -c` (the login shell may be anything)
/// in the C locale (stable messages to parse), through `sudo -n` when asked.
/// `sudo -n` fails at once instead of waiting for a password nobody will type.
pub fn argv(script: &str, use_sudo: bool) -> Vec<String> {
    let mut argv = shell_prefix(use_sudo);
    argv.extend(["-c".to_string(), script.to_string()]);
    argv
}

/// Like `argv`, for a script the shell reads from stdin (`sh -s`).
pub fn argv_stdin(use_sudo: bool) -> Vec<String> {
    let mut argv = shell_prefix(use_sudo);
    argv.push("-s".to_string());
    argv
}

fn shell_prefix(use_sudo: bool) -> Vec<String> {
    let mut argv: Vec<String> = vec!["env".into(), "LC_ALL=C".into()];
    if use_sudo {
        argv.extend(["sudo", "-n", "--"].map(String::from));
    }
    argv.push("sh".to_string());
    argv
}

/// `argv` as one command line, for an SSH exec request.
pub fn command_line(argv: &[String]) -> String {
    argv.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

/// Whether stderr says sudo refused because it wanted a password.
pub fn sudo_wants_password(stderr: &[u8]) -> bool {
    let text = String::from_utf8_lossy(stderr);
    text.contains("sudo: a password is required") || text.contains("sudo: a terminal is required")
}

/// Whether `env` could not find sudo (exit 127): GNU env says
/// `env: 'sudo': No such file or directory`, busybox `env: can't execute 'sudo'`.
pub fn sudo_missing(exit_status: Option<u32>, stderr: &[u8]) -> bool {
    let text = String::from_utf8_lossy(stderr);
    exit_status == Some(127)
        && text
            .lines()
            .any(|l| l.contains("env: ") && l.contains("'sudo'"))
}

/// Writes stdin to `path` atomically (see `atomic_write`).
pub fn put_file(path: &str, content: &[u8], meta: &FileMeta) -> String {
    atomic_write(path, content, meta, "cat > \"$tmp\"")
}

/// Writes `content` to `path` atomically with the content inside the script
/// (base64 in a here-document), so many files can be written by one script.
/// Scripts that carry content must travel on stdin, never as an argument.
pub fn write_file(path: &str, content: &[u8], meta: &FileMeta) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(content);
    let mut wrapped = String::with_capacity(encoded.len() + encoded.len() / 76 + 1);
    for line in encoded.as_bytes().chunks(76) {
        wrapped.push_str(std::str::from_utf8(line).unwrap_or_default());
        wrapped.push('\n');
    }
    let fill = format!("base64 -d > \"$tmp\" <<'VPSUP_CONTENT_EOF'\n{wrapped}VPSUP_CONTENT_EOF");
    atomic_write(path, content, meta, &fill)
}

/// The temp file is created by mktemp (0600, so nobody reads it half-done),
/// filled by `fill`, checked against the expected size and SHA-256 (a dropped
/// connection gives `cat` an early EOF, which must not be renamed into place),
/// synced, given its owner and mode, and only then renamed over `path`. Runs in
/// a subshell so its `set -e` and trap do not leak into a surrounding script.
fn atomic_write(path: &str, content: &[u8], meta: &FileMeta, fill: &str) -> String {
    let size = content.len();
    let sha = hex(&Sha256::digest(content));
    let dest = quote(path);
    let chown = match &meta.owner {
        Some(owner) => format!("chown -- {} \"$tmp\"\n", quote(owner)),
        None => String::new(),
    };
    format!(
        r#"(
set -e
dest={dest}
tmp=$(mktemp "$(dirname -- "$dest")/.vpsup-tmp.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
{fill}
got=$(wc -c < "$tmp")
if [ "$got" -ne {size} ]; then echo "upload of $dest incomplete: $got of {size} bytes arrived" >&2; exit 1; fi
if [ "$(sha256sum < "$tmp" | cut -d' ' -f1)" != {sha} ]; then echo "upload of $dest corrupted: SHA-256 mismatch" >&2; exit 1; fi
sync -- "$tmp" 2>/dev/null || :
{chown}chmod {mode:04o} "$tmp"
mv -f -T -- "$tmp" "$dest"
trap - EXIT
)
"#,
        mode = meta.mode
    )
}

/// Runs `write` (which replaces `path`), then `check` with the new file in
/// place. When the check fails, the previous file (or its absence) is restored,
/// the check's output is on stderr, and the script fails.
pub fn checked_replace(path: &str, write: &str, check: &str) -> String {
    let p = quote(path);
    format!(
        r#"backup=
if [ -e {p} ]; then backup=$(mktemp "$(dirname -- {p})/.vpsup-backup.XXXXXX"); cp -p -- {p} "$backup"; fi
{write}
if ! ( {check}
) >&2 </dev/null; then
  if [ -n "$backup" ]; then mv -f -T -- "$backup" {p}; else rm -f -- {p}; fi
  printf 'check failed: %s; the previous %s is back in place\n' {check_text} {p} >&2
  exit 1
fi
[ -z "$backup" ] || rm -f -- "$backup"
"#,
        check_text = quote(check),
    )
}

/// Prints `path`, or exits with `ABSENT_EXIT` when it does not exist.
pub fn read_file(path: &str) -> String {
    let p = quote(path);
    format!("[ -e {p} ] || exit {ABSENT_EXIT}\nexec cat -- {p}")
}

/// Succeeds when `path` exists (a dangling symlink counts), else `ABSENT_EXIT`.
pub fn exists(path: &str) -> String {
    let p = quote(path);
    format!("[ -e {p} ] || [ -L {p} ] || exit {ABSENT_EXIT}")
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256sum`'s hash of `bytes`, to compare with what a host probe printed.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_leaves_plain_words_and_escapes_the_rest() {
        assert_eq!(quote("/etc/ssh/sshd_config"), "/etc/ssh/sshd_config");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(reboot)"), "'$(reboot)'");
    }

    #[test]
    fn argv_runs_sh_in_c_locale_with_optional_sudo() {
        assert_eq!(argv("true", false), ["env", "LC_ALL=C", "sh", "-c", "true"]);
        assert_eq!(
            argv("id -u", true),
            ["env", "LC_ALL=C", "sudo", "-n", "--", "sh", "-c", "id -u"]
        );
        assert_eq!(
            command_line(&argv("echo 'hi there'", true)),
            r"env LC_ALL=C sudo -n -- sh -c 'echo '\''hi there'\'''"
        );
    }

    #[test]
    fn sudo_password_prompt_is_recognised() {
        assert!(sudo_wants_password(b"sudo: a password is required\n"));
        assert!(!sudo_wants_password(b"ls: cannot access 'x'\n"));
    }

    #[test]
    fn put_file_checks_size_and_hash_before_renaming() {
        let s = put_file(
            "/etc/my file",
            b"hello",
            &FileMeta::mode(0o640).owner("root:adm"),
        );
        assert!(s.contains("dest='/etc/my file'"));
        assert!(s.contains("-ne 5 ]"));
        assert!(s.contains("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"));
        assert!(s.contains("chown -- root:adm \"$tmp\"\nchmod 0640 \"$tmp\""));
        // The rename is the last thing that touches the destination.
        let mv = s.find("mv -f").unwrap();
        assert!(s.find("sha256sum").unwrap() < mv && s.find("chmod").unwrap() < mv);
    }

    #[test]
    fn write_file_carries_the_content_in_a_here_document() {
        let s = write_file("/etc/x", b"hello", &FileMeta::mode(0o644));
        assert!(
            s.contains("base64 -d > \"$tmp\" <<'VPSUP_CONTENT_EOF'\naGVsbG8=\nVPSUP_CONTENT_EOF\n"),
            "{s}"
        );
        assert!(s.contains("-ne 5 ]"));
    }

    #[test]
    fn put_file_without_owner_does_not_chown() {
        assert!(!put_file("/tmp/x", b"", &FileMeta::mode(0o600)).contains("chown"));
    }
}

/// For tests that run the shell a builder produced, here.
#[cfg(test)]
pub mod testing {
    use std::path::Path;

    /// Runs `script` with `sh -c`; the test fails, with its stderr, if it does.
    pub fn sh_ok(script: &str) -> std::process::Output {
        let out = std::process::Command::new("sh")
            .args(["-c", script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A stand-in command (`docker`, `nginx`) for a script to find on PATH.
    pub fn write_executable(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
