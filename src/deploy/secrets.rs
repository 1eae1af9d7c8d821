//! Secrets the host generates for the app (`[app.secrets] generate`): created
//! once on the host from its CSPRNG, kept in an env file (0600, root) that
//! compose reads with `--env-file`, and reused by every later deploy. The
//! values never leave the host: not in vpsup's output, not in a process
//! argument (`printf` is a shell builtin; the value travels through pipes).

use crate::config::EnvName;
use crate::scripts;
use crate::transport::script::quote;
use crate::transport::{ExecRequest, Transport, TransportError};

/// Characters per generated value: letters and digits, about 238 bits.
const LENGTH: usize = 40;

/// The script that adds each missing variable to `path` and prints the names
/// it created, one per line (never a value).
pub fn ensure_script(path: &str, names: &[EnvName]) -> String {
    let file = quote(path);
    let names: Vec<String> = names.iter().map(|n| quote(&n.0)).collect();
    scripts::SECRETS_ENSURE.fill(&[
        ("file", &file),
        ("names", &names.join(" ")),
        ("length", &LENGTH.to_string()),
    ])
}

/// Adds the missing secrets; returns the names created now.
pub async fn ensure(
    transport: &dyn Transport,
    path: &str,
    names: &[EnvName],
) -> Result<Vec<String>, TransportError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let out = transport
        .run_ok(
            "generating the app's secrets",
            ExecRequest::new(ensure_script(path, names)).become_root(true),
        )
        .await?;
    Ok(out.stdout_str().lines().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::LocalTransport;

    fn names(list: &[&str]) -> Vec<EnvName> {
        list.iter().map(|n| EnvName(n.to_string())).collect()
    }

    fn values(path: &std::path::Path) -> Vec<(String, String)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[tokio::test]
    async fn created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared/secrets.env");
        let p = path.display().to_string();
        let transport = LocalTransport::new("test", true);

        let created = ensure(&transport, &p, &names(&["POSTGRES_PASSWORD", "SECRET_KEY"]))
            .await
            .unwrap();
        assert_eq!(created, ["POSTGRES_PASSWORD", "SECRET_KEY"]);
        let first = values(&path);
        assert_eq!(first.len(), 2);
        for (_, value) in &first {
            assert_eq!(value.len(), LENGTH);
            assert!(value.chars().all(|c| c.is_ascii_alphanumeric()));
        }
        assert_ne!(first[0].1, first[1].1);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        // Again, with one more: only the new one is made; the others stay.
        let created = ensure(
            &transport,
            &p,
            &names(&["POSTGRES_PASSWORD", "SECRET_KEY", "API_TOKEN"]),
        )
        .await
        .unwrap();
        assert_eq!(created, ["API_TOKEN"]);
        let second = values(&path);
        assert_eq!(&second[..2], &first[..]);
        assert!(ensure(&transport, &p, &names(&["SECRET_KEY"]))
            .await
            .unwrap()
            .is_empty());
    }

    #[test]
    fn the_script_carries_names_never_values() {
        let script = ensure_script("/srv/vpsup/doctor/shared/secrets.env", &names(&["A_1"]));
        assert!(script.contains("for name in A_1; do"), "{script}");
        assert!(!script.contains("echo \"$value\""), "{script}");
    }
}
