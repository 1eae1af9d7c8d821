//! One backup, restore or drill of an app at a time (`/srv/vpsup/<app>/backup.lock`,
//! the host lock with a lease): two restic runs of one app would race on
//! its snapshots, and a restore must not meet a backup of the data it
//! replaces. A restore holds the deploy lock too; a deploy does not take
//! this one (its snapshot before a deploy does): a backup that meets a
//! deploy's restart fails loudly and the next run starts afresh.

use std::future::Future;

use crate::hostlock::{Held, HostLock, LockError};
use crate::transport::Transport;

/// A lock without a lease older than this belongs to a run that died (a
/// backup may take hours; `[backup] timeout` is 6 h by default).
pub const TAKE_OVER_AFTER_SECS: u64 = 12 * 3600;

/// The lock of app `app`.
pub fn path(app: &str) -> String {
    format!("{}/{app}/backup.lock", crate::layout::APPS_DIR)
}

/// Runs `work` holding the lock at `path`, or says who holds it. `local`:
/// this process runs on the host (the timer), so that its lock is taken
/// over once the process is gone.
pub async fn hold<T>(
    transport: &dyn Transport,
    path: &str,
    owner: &str,
    local: bool,
    work: impl Future<Output = T>,
) -> Result<Held<T>, LockError> {
    let lock = acquire(transport, path, owner, local).await?;
    Ok(lock.hold(transport, work).await)
}

/// As `hold`, inside a run that holds another lock (a deploy's, a restore's).
pub async fn hold_within<T>(
    transport: &dyn Transport,
    path: &str,
    owner: &str,
    work: impl Future<Output = T>,
) -> Result<Held<T>, LockError> {
    let lock = acquire(transport, path, owner, false).await?;
    Ok(lock.hold_within(transport, work).await)
}

async fn acquire(
    transport: &dyn Transport,
    path: &str,
    owner: &str,
    local: bool,
) -> Result<HostLock, LockError> {
    HostLock::acquire_for_run(
        transport,
        path,
        "the app's backups",
        owner,
        TAKE_OVER_AFTER_SECS,
        local,
        "vpsup",
    )
    .await
}
