//! One backup, restore or drill of an app at a time (`/srv/vpsup/<app>/backup.lock`,
//! the host lock with a lease): two restic runs of one app would race on
//! its snapshots, and a restore must not meet a backup of the data it
//! replaces. A restore holds the deploy lock too. A deploy (and a rollback)
//! of an app with backups holds this one inside its own from the snapshot
//! before the deploy to the release serving (`deploy::start::holding_backups`),
//! and no longer: a backup would otherwise lose its container to the
//! restart mid-dump, or copy a volume it stopped while `up` starts its
//! service again. While a backup or drill runs, a deploy is refused before
//! it starts anything.
//!
//! An operator's run is refused at once while another run holds the lock
//! (whoever typed it reads who holds it). The host's own runs (the timers)
//! wait for it instead: the nightly backup and the weekly drill of one app
//! may meet, and nobody would run the refused one again.

use std::future::Future;
use std::time::Duration;

use crate::hostlock::{self, Held, HostLock, LockError, Wait};
use crate::transport::Transport;

/// A lock without a lease older than this belongs to a run that died (a
/// backup may take hours; `[backup] timeout` is 6 h by default).
pub const TAKE_OVER_AFTER_SECS: u64 = 12 * 3600;

/// How often a timer's run tries a held lock again: one short exec on the
/// host each time, and well within the 90 s after which a killed holder's
/// lease has run out and its lock is taken over.
pub const RETRY_EVERY: Duration = Duration::from_secs(20);

/// Who takes the lock, which decides what a held lock means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// An operator's run (over SSH, or a deploy's snapshot): refused at once,
    /// naming the holder.
    Operator,
    /// The host's own run (`--local`): its lock is taken over once its
    /// process is gone, and it waits while a live run holds the lock.
    Timer(Wait),
}

impl Runner {
    /// A timer's run of an app whose `[backup] timeout` is `timeout`: it
    /// waits for the lock that long at most. The holder may rightly need
    /// that long for one service (a large volume, a slow remote), and the
    /// setting grows with the app's data where a fixed hour would turn
    /// every long nightly backup into a failed drill; a holder that keeps
    /// it longer is stuck, and the wait is recorded as a failed run.
    pub fn timer(timeout: Duration) -> Runner {
        Runner::Timer(Wait {
            up_to: timeout,
            every: RETRY_EVERY,
        })
    }
}

/// The lock of app `app`.
pub fn path(app: &str) -> String {
    format!("{}/{app}/backup.lock", crate::layout::APPS_DIR)
}

/// Runs `work` holding the lock at `path`, or says who holds it (after
/// waiting for it, for a timer's run).
pub async fn hold<T>(
    transport: &dyn Transport,
    path: &str,
    owner: &str,
    runner: Runner,
    work: impl Future<Output = T>,
) -> Result<Held<T>, LockError> {
    let lock = match runner {
        Runner::Operator => acquire(transport, path, owner, false).await?,
        Runner::Timer(wait) => {
            hostlock::acquire_waiting(wait, "vpsup", || acquire(transport, path, owner, true))
                .await?
        }
    };
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

/// `local`: this process runs on the host, so that its lock is taken over
/// once the process is gone.
async fn acquire(
    transport: &dyn Transport,
    path: &str,
    owner: &str,
    local: bool,
) -> Result<HostLock, LockError> {
    HostLock::acquire_for_run(
        transport,
        path,
        "this app's backup",
        owner,
        TAKE_OVER_AFTER_SECS,
        local,
        "vpsup",
    )
    .await
}
