//! A lock on the host, so two runs that change the same thing (two operators'
//! deploys, a deploy and the renewal timer) never interleave. It is a
//! directory (`mkdir` is atomic) holding who took it, when, on which boot,
//! and a token only its holder knows.
//!
//! A second run is refused with the owner and the lock's age. A lock left by
//! a run that died is taken over when that is certain (the host restarted
//! since, or the holder was a process on the host that is gone) or, where
//! the caller allows it, when it is older than any run could be. Otherwise it
//! is only called stale, with the command that removes it. Giving the lock
//! back removes it only while it still holds our token.

use std::future::Future;

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
    #[error("locking {what}: unexpected answer from the host: {answer:?}")]
    Unexpected { what: String, answer: String },
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// What to lock, and for whom.
pub struct LockRequest<'a> {
    /// The lock directory on the host; its parent is created (0700) if missing.
    pub path: &'a str,
    /// The locked thing, named in a refusal ("certificate renewal").
    pub what: &'a str,
    /// Who and what holds it, shown to whoever is refused.
    pub owner: &'a str,
    /// Take over a lock older than this many seconds (its run must have
    /// died); `None` never takes one over by age.
    pub take_over_after: Option<u64>,
    /// The holder's process id when it runs on the host itself (`--local`):
    /// a lock whose process is gone is taken over.
    pub local_pid: Option<u32>,
}

/// A lock held on the host, from `acquire` until `release`.
pub struct HostLock {
    path: String,
    token: String,
    /// The dead run's lock this one replaced, said to the user: "OWNER (AGE
    /// old; REASON)".
    pub taken_over: Option<String>,
}

impl HostLock {
    /// Takes the lock, or says who holds it.
    pub async fn acquire(
        transport: &dyn Transport,
        request: &LockRequest<'_>,
    ) -> Result<HostLock, LockError> {
        let lock = quote(request.path);
        let by_age = request
            .take_over_after
            .map(|secs| {
                format!(
                    "\n  elif [ \"$age\" -gt {secs} ]; then dead='older than {}'",
                    human_age(secs)
                )
            })
            .unwrap_or_default();
        let pid = request
            .local_pid
            .map(|pid| format!("echo {pid} > {lock}/pid\n  "))
            .unwrap_or_default();
        // Under flock on the parent directory, so that two runs finding the
        // same dead lock cannot both take it over.
        let script = format!(
            r#"{guard}
now=$(date +%s); age=0
boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || true)
if [ -d {lock} ]; then
  since=$(cat {lock}/since 2>/dev/null || echo "$now"); age=$((now - since))
  dead=
  if [ -n "$boot" ] && [ -s {lock}/boot ] && [ "$(cat {lock}/boot)" != "$boot" ]; then dead='the host restarted since'
  elif [ -s {lock}/pid ] && [ ! -d "/proc/$(cat {lock}/pid)" ]; then dead='its process is gone'{by_age}
  fi
  if [ -n "$dead" ]; then
    echo "taken-over $age $dead"
    head -n 1 {lock}/owner 2>/dev/null || echo unknown
    rm -rf -- {lock}
  fi
fi
if mkdir {lock} 2>/dev/null; then
  token=$(cat /proc/sys/kernel/random/uuid)
  echo "$now" > {lock}/since
  echo "$boot" > {lock}/boot
  {pid}echo "$token" > {lock}/token
  cat > {lock}/owner
  echo "acquired $token"
else
  echo "held $age"
  head -n 1 {lock}/owner 2>/dev/null || echo unknown
fi"#,
            guard = guard(request.path),
        );
        let out = transport
            .run_ok(
                &format!("locking {}", request.what),
                ExecRequest::new(script)
                    .stdin(request.owner.as_bytes().to_vec())
                    .become_root(true),
            )
            .await?;
        let text = out.stdout_str();
        let mut lines = text.lines();
        let mut taken_over = None;
        while let Some(line) = lines.next() {
            let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
            let mut owner = || lines.next().unwrap_or("unknown").trim().to_string();
            match word {
                "taken-over" => {
                    let (age, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                    let age = human_age(age.parse().unwrap_or(0));
                    taken_over = Some(format!("{} ({age} old; {reason})", owner()));
                }
                "acquired" if !rest.is_empty() => {
                    return Ok(HostLock {
                        path: request.path.to_string(),
                        token: rest.to_string(),
                        taken_over,
                    })
                }
                "held" => {
                    let secs: u64 = rest.trim().parse().unwrap_or(0);
                    let stale = secs > STALE_AFTER_SECS;
                    return Err(LockError::Held {
                        what: request.what.to_string(),
                        owner: owner(),
                        age: human_age(secs),
                        stale: if stale {
                            " (probably stale: that run died without unlocking)"
                        } else {
                            ""
                        },
                        hint: if stale {
                            format!(
                                ", or, if nothing runs, remove it on the host: sudo rm -r {}",
                                request.path
                            )
                        } else {
                            String::new()
                        },
                    });
                }
                _ => break,
            }
        }
        Err(LockError::Unexpected {
            what: request.what.to_string(),
            answer: text,
        })
    }

    /// Gives the lock back. `Ok(false)`: it was no longer ours (taken over
    /// as dead while this run still held it), and is left alone.
    pub async fn release(self, transport: &dyn Transport) -> Result<bool, TransportError> {
        let lock = quote(&self.path);
        let script = format!(
            "{guard}\nif [ \"$(cat {lock}/token 2>/dev/null)\" = {token} ]; then rm -rf -- {lock}; echo released; fi",
            guard = guard(&self.path),
            token = quote(&self.token),
        );
        let out = transport
            .run_ok("unlocking", ExecRequest::new(script).become_root(true))
            .await?;
        Ok(out.stdout_str().trim() == "released")
    }

    /// Runs `work` while holding the lock, then gives it back, also when the
    /// run is interrupted (Ctrl-C, or systemd stopping the timer's service):
    /// then `work` is dropped and the result is `Interrupted`.
    pub async fn hold<T>(
        self,
        transport: &dyn Transport,
        work: impl Future<Output = T>,
    ) -> Held<T> {
        let outcome = tokio::select! {
            done = work => Some(done),
            signal = interrupted() => { eprintln!("vpsup: {signal}: stopping, and unlocking"); None }
        };
        let released = self.release(transport).await;
        Held { outcome, released }
    }
}

/// What `HostLock::hold` leaves: the work's result (`None` when it was
/// interrupted) and how giving the lock back went.
pub struct Held<T> {
    pub outcome: Option<T>,
    pub released: Result<bool, TransportError>,
}

impl<T> Held<T> {
    /// The problem to report about the lock itself, if any.
    pub fn release_problem(&self, what: &str) -> Option<String> {
        match &self.released {
            Ok(true) => None,
            Ok(false) => Some(format!(
                "the {what} lock was taken over while this run held it (it was thought dead)"
            )),
            Err(e) => Some(format!("releasing the {what} lock: {e}")),
        }
    }
}

/// Resolves on SIGINT or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "interrupted",
        _ = term.recv() => "terminated",
    }
}

/// Shell lines that hold an exclusive flock on the lock's parent directory
/// (created 0700 if missing) for the rest of the script.
fn guard(path: &str) -> String {
    let parent = quote(
        std::path::Path::new(path)
            .parent()
            .and_then(|p| p.to_str())
            .unwrap_or("/"),
    );
    format!("[ -d {parent} ] || mkdir -p -m 0700 {parent}\nexec 9< {parent} && flock -w 30 9")
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

    fn request<'a>(path: &'a str, owner: &'a str) -> LockRequest<'a> {
        LockRequest {
            path,
            what: "app doctor",
            owner,
            take_over_after: None,
            local_pid: None,
        }
    }

    fn epoch_secs() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// A lock as a run that died left it.
    fn leave_lock(lock: &std::path::Path, owner: &str, age_secs: u64, extra: &[(&str, &str)]) {
        std::fs::create_dir(lock).unwrap();
        std::fs::write(lock.join("since"), format!("{}\n", epoch_secs() - age_secs)).unwrap();
        std::fs::write(lock.join("owner"), format!("{owner}\n")).unwrap();
        std::fs::write(lock.join("token"), "theirs\n").unwrap();
        for (file, content) in extra {
            std::fs::write(lock.join(file), content).unwrap();
        }
    }

    #[tokio::test]
    async fn a_second_run_is_refused_with_owner_and_age_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deploy.lock").display().to_string();
        let transport = LocalTransport::new("test", true);
        let first = HostLock::acquire(&transport, &request(&path, "alice@laptop (vpsup deploy)"))
            .await
            .unwrap();
        assert!(first.taken_over.is_none());
        let refused = HostLock::acquire(&transport, &request(&path, "bob@ci (vpsup deploy)"))
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
        assert!(first.release(&transport).await.unwrap());
        let again = HostLock::acquire(&transport, &request(&path, "bob@ci (vpsup deploy)"))
            .await
            .unwrap();
        assert!(again.release(&transport).await.unwrap());
        assert!(!std::path::Path::new(&path).exists());
    }

    #[tokio::test]
    async fn an_old_lock_is_called_stale_and_how_to_remove_it_is_shown() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("deploy.lock");
        leave_lock(&lock, "carol@old (vpsup deploy)", 3 * 86_400, &[]);
        let transport = LocalTransport::new("test", true);
        let path = lock.display().to_string();
        let refused = HostLock::acquire(&transport, &request(&path, "me"))
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

    #[tokio::test]
    async fn a_dead_runs_lock_is_taken_over_and_said_so() {
        let transport = LocalTransport::new("test", true);
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let gone_pid = gone.id().to_string();
        let running_pid = std::process::id().to_string();
        for (extra, age, take_over_after, expected) in [
            (
                vec![("boot", "another-boot\n")],
                60,
                None,
                Some("the host restarted since"),
            ),
            (
                vec![("boot", boot.as_str()), ("pid", gone_pid.as_str())],
                60,
                None,
                Some("its process is gone"),
            ),
            (
                vec![("boot", boot.as_str())],
                7 * 3600,
                Some(6 * 3600),
                Some("older than 6 h"),
            ),
            // A live holder, or one too young, keeps its lock.
            (
                vec![("boot", boot.as_str()), ("pid", running_pid.as_str())],
                60,
                None,
                None,
            ),
            (vec![("boot", boot.as_str())], 3600, Some(6 * 3600), None),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let lock = dir.path().join("renew.lock");
            leave_lock(&lock, "the renewal timer on web1", age, &extra);
            let path = lock.display().to_string();
            let request = LockRequest {
                take_over_after,
                local_pid: Some(std::process::id()),
                ..request(&path, "me")
            };
            match (HostLock::acquire(&transport, &request).await, expected) {
                (Ok(held), Some(reason)) => {
                    let said = held.taken_over.clone().unwrap();
                    assert!(
                        said.starts_with("the renewal timer on web1 (")
                            && said.ends_with(&format!("old; {reason})")),
                        "{said}"
                    );
                    assert_eq!(
                        std::fs::read_to_string(lock.join("pid")).unwrap().trim(),
                        running_pid
                    );
                    assert!(held.release(&transport).await.unwrap());
                }
                (Err(LockError::Held { owner, .. }), None) => {
                    assert_eq!(owner, "the renewal timer on web1");
                }
                (other, expected) => panic!(
                    "{extra:?}: expected {expected:?}, got {:?}",
                    other.map(|l| l.taken_over)
                ),
            }
        }
    }

    #[tokio::test]
    async fn release_leaves_a_lock_that_is_no_longer_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("renew.lock");
        let transport = LocalTransport::new("test", true);
        let path_text = path.display().to_string();
        let ours = HostLock::acquire(&transport, &request(&path_text, "me"))
            .await
            .unwrap();
        // Another run took it over meanwhile (it thought this one dead).
        std::fs::write(path.join("token"), "theirs\n").unwrap();
        assert!(!ours.release(&transport).await.unwrap());
        assert!(path.join("owner").exists());
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(human_age(5), "5 s");
        assert_eq!(human_age(600), "10 min");
        assert_eq!(human_age(3 * 3600), "3 h");
        assert_eq!(human_age(3 * 86_400), "3 days");
    }
}
