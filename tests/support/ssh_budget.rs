//! ufw's `limit` rule, which `vpsup init` puts on SSH, drops the sixth new
//! connection from one address within 30 seconds, and every connection to the
//! VM comes from the same address. The VM tests keep under it with this
//! sliding window instead of fixed pauses: a connection waits only while five
//! others are younger than 31 seconds.
//!
//! Each connection is recorded when the command that opened it has ended, a
//! moment at or after the one the firewall saw, so the window here is never
//! emptier than the firewall's.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// New connections the firewall lets through in its window.
const ALLOWED: usize = 5;
/// The firewall's 30 seconds, and one for the clock's sake.
const WINDOW: Duration = Duration::from_secs(31);

static RECENT: Mutex<Vec<Instant>> = Mutex::new(Vec::new());

/// Waits until the window has room for `count` more connections; returns it
/// locked.
fn room(count: usize) -> MutexGuard<'static, Vec<Instant>> {
    assert!(
        count <= ALLOWED,
        "{count} connections at once would be dropped"
    );
    loop {
        let mut recent = RECENT.lock().unwrap();
        let now = Instant::now();
        // (A time still ahead counts as now: duration_since saturates.)
        recent.retain(|t| now.duration_since(*t) < WINDOW);
        recent.sort();
        if recent.len() + count <= ALLOWED {
            return recent;
        }
        // Until enough of the oldest have left the window.
        let leaving = recent[recent.len() + count - ALLOWED - 1];
        let wait = (leaving + WINDOW).saturating_duration_since(now);
        drop(recent);
        std::thread::sleep(wait.max(Duration::from_millis(100)));
    }
}

/// Waits until `count` connections would be let through now (before a timed
/// command, so that no wait for the firewall counts in its time).
pub fn make_room(count: usize) {
    drop(room(count));
}

/// Runs `connect`, which opens at most `count` new SSH connections to the VM,
/// once the window has room for them; waits as long as it must first.
pub fn spend<T>(count: usize, connect: impl FnOnce() -> T) -> T {
    drop(room(count));
    let out = connect();
    let mut recent = RECENT.lock().unwrap();
    recent.extend(std::iter::repeat_n(Instant::now(), count));
    out
}

/// Records `count` connections that a process started now (and not waited
/// for) opens: as if opened `ahead` from now, the latest it may take it.
pub fn spend_ahead(count: usize, ahead: Duration) {
    let mut recent = room(count);
    recent.extend(std::iter::repeat_n(Instant::now() + ahead, count));
}
