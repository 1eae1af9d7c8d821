//! The renewal lock (`<store>/renew.lock`): one run at a time orders and
//! installs a host's certificates, whether it is `renew-certs` (an
//! operator's, or the host's own timer) or a deploy. Two runs ordering the
//! same certificate at once would each install a version, and one's cleanup
//! of the store could remove the other's new version, leaving
//! `certs/<name>` dangling and nginx failing on its next reload.

use std::future::Future;

use crate::hostlock::{Held, HostLock, LockError};
use crate::transport::Transport;

/// A renewal lock without a lease (an older vpsup's) older than this belongs
/// to a run that died (a run takes minutes); the daily timer must not be
/// refused forever by it.
pub const TAKE_OVER_AFTER_SECS: u64 = 6 * 3600;

/// Runs `work` holding the renewal lock of the store at `store_dir`, or says
/// who holds it. `owner` names this run to whoever is refused; `local`: this
/// process runs on the host itself (`renew-certs --local`), so that its lock
/// is taken over once the process is gone. `host` names the host in the
/// notice that a dead run's lock was taken over.
pub async fn hold<T>(
    transport: &dyn Transport,
    store_dir: &str,
    owner: &str,
    local: bool,
    host: &str,
    work: impl Future<Output = T>,
) -> Result<Held<T>, LockError> {
    let lock = acquire(transport, store_dir, owner, local, host).await?;
    Ok(lock.hold(transport, work).await)
}

/// As `hold`, inside a run that holds another lock (a deploy's): that
/// lock's `hold` answers Ctrl-C (see `HostLock::hold_within`).
pub async fn hold_within<T>(
    transport: &dyn Transport,
    store_dir: &str,
    owner: &str,
    host: &str,
    work: impl Future<Output = T>,
) -> Result<Held<T>, LockError> {
    let lock = acquire(transport, store_dir, owner, false, host).await?;
    Ok(lock.hold_within(transport, work).await)
}

async fn acquire(
    transport: &dyn Transport,
    store_dir: &str,
    owner: &str,
    local: bool,
    host: &str,
) -> Result<HostLock, LockError> {
    let path = format!("{}/renew.lock", store_dir.trim_end_matches('/'));
    HostLock::acquire_for_run(
        transport,
        &path,
        "certificate renewal",
        owner,
        TAKE_OVER_AFTER_SECS,
        local,
        host,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::LocalTransport;

    /// A deploy's certificate step while the host's timer renews: refused,
    /// naming the timer, and nothing ordered.
    #[tokio::test]
    async fn certificates_are_refused_while_another_run_renews_them() {
        let store = tempfile::tempdir().unwrap();
        let lock = store.path().join("renew.lock");
        std::fs::create_dir(&lock).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        std::fs::write(lock.join("since"), format!("{}\n", now - 30)).unwrap();
        std::fs::write(lock.join("lease"), format!("{}\n", now + 60)).unwrap();
        std::fs::write(lock.join("token"), "theirs\n").unwrap();
        std::fs::write(
            lock.join("owner"),
            "the renewal timer on web1 (vpsup renew-certs --local)\n",
        )
        .unwrap();
        let transport = LocalTransport::new("test", true);
        let mut ordered = false;
        let refused = hold(
            &transport,
            &store.path().display().to_string(),
            "alice@laptop (vpsup deploy)",
            false,
            "web1",
            async { ordered = true },
        )
        .await
        .err()
        .unwrap()
        .to_string();
        assert!(!ordered);
        assert!(
            refused.starts_with("certificate renewal is locked by the renewal timer on web1 (vpsup renew-certs --local) since ")
                && refused.ends_with(" s ago; wait for it to finish"),
            "{refused}"
        );
    }
}
