//! A lock on the host, so two runs that change the same thing (two operators'
//! deploys, a deploy and the renewal timer) never interleave. It is a
//! directory (`mkdir` is atomic) holding who took it and when: a second run
//! is refused with the owner and the lock's age, and a lock left behind by a
//! run that died is recognisable as stale by its age, never broken silently.

use crate::transport::script::quote;
use crate::transport::{ExecRequest, Transport, TransportError};

/// A lock older than this is reported as probably stale.
pub const STALE_AFTER_SECS: u64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{what} is locked by {owner} since {age} ago{stale}; wait for it to finish{hint}")]
    Held {
        what: String,
        owner: String,
        age: String,
        stale: &'static str,
        hint: String,
    },
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// A lock at `path` on the host, taken by `acquire`.
pub struct HostLock {
    path: String,
}

impl HostLock {
    /// Takes the lock at `path` (a directory; its parent is created, 0700,
    /// when missing) for `owner` (who and what, shown to whoever is refused).
    /// `what` names the locked thing in the refusal.
    pub async fn acquire(
        transport: &dyn Transport,
        path: &str,
        owner: &str,
        what: &str,
    ) -> Result<HostLock, LockError> {
        let lock = quote(path);
        let parent = quote(
            std::path::Path::new(path)
                .parent()
                .and_then(|p| p.to_str())
                .unwrap_or("/"),
        );
        let script = format!(
            r#"[ -d {parent} ] || mkdir -p -m 0700 {parent}
if mkdir {lock} 2>/dev/null; then
  date +%s > {lock}/since
  cat > {lock}/owner
  echo acquired
else
  now=$(date +%s); since=$(cat {lock}/since 2>/dev/null || echo "$now")
  echo "held $((now - since))"
  cat {lock}/owner 2>/dev/null || echo unknown
fi"#
        );
        let out = transport
            .run_ok(
                &format!("locking {what}"),
                ExecRequest::new(script)
                    .stdin(owner.as_bytes().to_vec())
                    .become_root(true),
            )
            .await?;
        let text = out.stdout_str();
        let mut lines = text.lines();
        match lines.next() {
            Some("acquired") => Ok(HostLock {
                path: path.to_string(),
            }),
            Some(held) => {
                let secs: u64 = held
                    .strip_prefix("held ")
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                let stale = secs > STALE_AFTER_SECS;
                Err(LockError::Held {
                    what: what.to_string(),
                    owner: lines.next().unwrap_or("unknown").trim().to_string(),
                    age: human_age(secs),
                    stale: if stale {
                        " (probably stale: that run died without unlocking)"
                    } else {
                        ""
                    },
                    hint: if stale {
                        format!(", or, if nothing runs, remove it on the host: sudo rm -r {path}")
                    } else {
                        String::new()
                    },
                })
            }
            None => Err(LockError::Held {
                what: what.to_string(),
                owner: "unknown".to_string(),
                age: "an unknown time".to_string(),
                stale: "",
                hint: String::new(),
            }),
        }
    }

    /// Gives the lock back (only ours: the owner file is removed with it).
    pub async fn release(self, transport: &dyn Transport) -> Result<(), TransportError> {
        transport
            .run_ok(
                "unlocking",
                ExecRequest::new(format!("rm -rf -- {}", quote(&self.path))).become_root(true),
            )
            .await
            .map(|_| ())
    }
}

fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::LocalTransport;

    #[tokio::test]
    async fn a_second_run_is_refused_with_owner_and_age_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deploy.lock").display().to_string();
        let transport = LocalTransport::new("test", true);
        let first = HostLock::acquire(
            &transport,
            &path,
            "alice@laptop (vpsup deploy)",
            "app doctor",
        )
        .await
        .unwrap();
        let refused = HostLock::acquire(&transport, &path, "bob@ci (vpsup deploy)", "app doctor")
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            refused.starts_with("app doctor is locked by alice@laptop (vpsup deploy) since ")
                && refused.contains(" s ago; wait for it to finish"),
            "{refused}"
        );
        assert!(!refused.contains("stale"), "{refused}");
        first.release(&transport).await.unwrap();
        let again = HostLock::acquire(&transport, &path, "bob@ci (vpsup deploy)", "app doctor")
            .await
            .unwrap();
        again.release(&transport).await.unwrap();
        assert!(!std::path::Path::new(&path).exists());
    }

    #[tokio::test]
    async fn an_old_lock_is_called_stale_and_how_to_remove_it_is_shown() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("deploy.lock");
        std::fs::create_dir(&lock).unwrap();
        let long_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 3 * 86_400;
        std::fs::write(lock.join("since"), format!("{long_ago}\n")).unwrap();
        std::fs::write(lock.join("owner"), "carol@old (vpsup deploy)\n").unwrap();
        let transport = LocalTransport::new("test", true);
        let refused =
            HostLock::acquire(&transport, &lock.display().to_string(), "me", "app doctor")
                .await
                .err()
                .unwrap()
                .to_string();
        assert!(
            refused.contains("carol@old (vpsup deploy) since 3 days ago (probably stale"),
            "{refused}"
        );
        assert!(
            refused.contains(&format!("sudo rm -r {}", lock.display())),
            "{refused}"
        );
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(human_age(5), "5 s");
        assert_eq!(human_age(600), "10 min");
        assert_eq!(human_age(3 * 3600), "3 h");
        assert_eq!(human_age(3 * 86_400), "3 days");
    }
}
