//! A lock on the host, so two runs that change the same thing (two operators'
//! deploys, a deploy and the renewal timer) never interleave. It is a
//! directory (`mkdir` is atomic) holding who took it, when, on which boot, a
//! token only its holder knows, and a lease: the time until which it is held,
//! which the running holder renews over its connection.
//!
//! The rule: a lock is taken over only when its holder is certainly dead and
//! nothing it started on the host still runs. Dead means: the host restarted
//! since, the holder was a process on the host that is gone, its lease ran
//! out (killed, or its connection dropped: nobody renewed it), or, for a lock
//! without a lease (an older vpsup) where the caller allows it, it is older
//! than any run could be. Host steps run through `HostLock::transport` record
//! their process in the lock; while one lives, the lock is never taken over
//! and never given back. Otherwise a second run is refused with the owner and
//! the lock's age. Giving the lock back removes it only while it still holds
//! our token, and every script checks and changes the lock under one flock.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::scripts;
use crate::transport::script::quote;
use crate::transport::{ExecOutput, ExecRequest, Transport, TransportError};

/// A lock without a lease (taken by an older vpsup) older than this is
/// reported as probably stale.
pub const STALE_AFTER_SECS: u64 = 3600;

/// The lease is renewed this many times per lease length, so that a slow or
/// failed renewal or two do not let it lapse under a live holder.
const RENEWALS_PER_LEASE: u64 = 4;

/// Exit status of a lock script that did not run (the guard timed out, or
/// the lock is no longer ours): EX_TEMPFAIL.
const NOT_RUN_EXIT: u32 = 75;

/// Set by the first SIGINT/SIGTERM while a lock is held: the work should stop
/// at its next step boundary.
static STOP: AtomicBool = AtomicBool::new(false);

/// Who holds a lock, as other operators read it: `ana@laptop (vpsup deploy)`.
pub fn owner(command: &str) -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".to_string());
    format!("{user}@{} (vpsup {command})", this_machine())
}

/// This machine's name.
pub fn this_machine() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// Whether the operator asked this run to stop (Ctrl-C, or systemd stopping
/// the service). Work under `HostLock::hold` checks it between host steps;
/// a run over several hosts checks it before starting the next.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{what} is locked by {owner} since {age} ago{state}; wait for it to finish{hint}")]
    Held {
        what: String,
        owner: String,
        age: String,
        /// Why it is not taken over, when that needs saying.
        state: String,
        hint: String,
    },
    /// A live run held it for as long as this run waits (`acquire_waiting`).
    #[error("{what} stayed locked by {owner} (since {age} ago) for the {waited} this run waits at most; it did not run")]
    WaitedOut {
        what: String,
        owner: String,
        age: String,
        waited: String,
    },
    /// Interrupted while waiting for it (`acquire_waiting`); nothing was held.
    #[error("{signal} while waiting for {what} (locked by {owner}); it did not run")]
    StoppedWaiting {
        what: String,
        owner: String,
        signal: &'static str,
    },
    #[error("locking {what}: unexpected answer from the host: {answer:?}")]
    Unexpected { what: String, answer: String },
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// How long a lease lasts and how long a script waits for the guard.
#[derive(Debug, Clone, Copy)]
pub struct LockTiming {
    /// A holder that stopped renewing its lease this long ago is dead; the
    /// longest a killed run's lock blocks others.
    pub lease_secs: u64,
    /// How long a lock script waits for another's flock before failing.
    pub guard_wait_secs: u64,
}

impl LockTiming {
    pub const STANDARD: LockTiming = LockTiming {
        lease_secs: 90,
        guard_wait_secs: 30,
    };

    fn renew_every(&self) -> Duration {
        Duration::from_millis((self.lease_secs * 1000 / RENEWALS_PER_LEASE).max(100))
    }
}

/// How long a run waits for a lock that a live run holds, and how often it
/// tries it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub up_to: Duration,
    pub every: Duration,
}

/// Takes a lock with `acquire` (a `HostLock` acquisition), trying again every
/// `wait.every` while a live run holds it, for up to `wait.up_to`
/// (`LockError::WaitedOut`, naming the holder); `speaker` says once whom it
/// waits for. Any other answer is returned at once. Nothing is held
/// meanwhile, so SIGINT/SIGTERM end the wait at once.
pub async fn acquire_waiting<F, Fut>(
    wait: Wait,
    speaker: &str,
    acquire: F,
) -> Result<HostLock, LockError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<HostLock, LockError>>,
{
    acquire_waiting_until(wait, speaker, acquire, &mut OsSignals::new()).await
}

async fn acquire_waiting_until<F, Fut>(
    wait: Wait,
    speaker: &str,
    mut acquire: F,
    signals: &mut impl Signals,
) -> Result<HostLock, LockError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<HostLock, LockError>>,
{
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        let (what, owner, age) = match acquire().await {
            Err(LockError::Held {
                what, owner, age, ..
            }) => (what, owner, age),
            other => return other,
        };
        let waited = started.elapsed();
        if waited >= wait.up_to {
            return Err(LockError::WaitedOut {
                what,
                owner,
                age,
                waited: human_age(wait.up_to.as_secs()),
            });
        }
        if !said {
            said = true;
            eprintln!(
                "{speaker}: waiting for {what}, locked by {owner} since {age} ago (trying again every {}, for up to {})",
                human_age(wait.every.as_secs()),
                human_age(wait.up_to.as_secs())
            );
        }
        tokio::select! {
            () = tokio::time::sleep(wait.every.min(wait.up_to - waited)) => {}
            signal = signals.next() => {
                return Err(LockError::StoppedWaiting { what, owner, signal });
            }
        }
    }
}

/// What to lock, and for whom.
pub struct LockRequest<'a> {
    /// The lock directory on the host; its parent is created (0700) if missing.
    pub path: &'a str,
    /// The locked thing, named in a refusal ("certificate renewal").
    pub what: &'a str,
    /// Who and what holds it, shown to whoever is refused.
    pub owner: &'a str,
    /// Take over a lock without a lease older than this many seconds (its
    /// run must have died); `None` never takes one over by age.
    pub take_over_after: Option<u64>,
    /// The holder's process id when it runs on the host itself (`--local`):
    /// a lock whose process is gone is taken over.
    pub local_pid: Option<u32>,
    pub timing: LockTiming,
}

/// A lock held on the host, from `acquire` until `release`.
pub struct HostLock {
    path: String,
    token: String,
    what: String,
    timing: LockTiming,
    /// Host steps run through `transport()` that have not answered yet.
    steps_in_flight: AtomicUsize,
    /// The dead run's lock this one replaced, said to the user: "OWNER (AGE
    /// old; REASON)".
    pub taken_over: Option<String>,
    /// SIGINT/SIGTERM, listened for from before the lock is taken: a signal
    /// that arrives once the lock is ours but before `hold` runs is answered
    /// by `hold` (it would otherwise kill the process and leave the lock).
    signals: std::sync::Mutex<Option<OsSignals>>,
}

/// What giving the lock back came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Released {
    Yes,
    /// Taken over as dead while this run still held it; left alone.
    NotOurs,
    /// A host step this run started (process `pid`) still runs: the lock
    /// stays, its lease runs out, and the next run takes it over once the
    /// step has ended.
    StepRuns {
        pid: String,
    },
    /// Interrupted twice: left on the host, unrenewed.
    LeftToExpire,
}

impl HostLock {
    /// The lock of a run that may be long (a renewal, a backup): one whose
    /// run died (no lease for `take_over_after` seconds, or, `local`, its
    /// process gone) is taken over, and `speaker` says so.
    pub async fn acquire_for_run(
        transport: &dyn Transport,
        path: &str,
        what: &str,
        owner: &str,
        take_over_after: u64,
        local: bool,
        speaker: &str,
    ) -> Result<HostLock, LockError> {
        let lock = HostLock::acquire(
            transport,
            &LockRequest {
                path,
                what,
                owner,
                take_over_after: Some(take_over_after),
                local_pid: local.then(std::process::id),
                timing: LockTiming::STANDARD,
            },
        )
        .await?;
        if let Some(dead) = &lock.taken_over {
            eprintln!("{speaker}: took over the lock of {what} from a run that died: {dead}");
        }
        Ok(lock)
    }

    /// Takes the lock, or says who holds it.
    pub async fn acquire(
        transport: &dyn Transport,
        request: &LockRequest<'_>,
    ) -> Result<HostLock, LockError> {
        Self::acquire_then(transport, request, "")
            .await
            .map(|(lock, _)| lock)
    }

    /// Takes the lock and, only once it is ours, runs `then_script` (as root)
    /// in the same exec, returning its output: a lock and a probe in one
    /// round trip. A `then_script` that fails gives the lock back.
    pub async fn acquire_then(
        transport: &dyn Transport,
        request: &LockRequest<'_>,
        then_script: &str,
    ) -> Result<(HostLock, String), LockError> {
        let what = format!("locking {}", request.what);
        let signals = OsSignals::new();
        let out = transport
            .exec(
                ExecRequest::new(acquire_script(request, then_script))
                    .stdin(request.owner.as_bytes().to_vec())
                    .become_root(true),
            )
            .await?;
        let (token, taken_over, then_output) = match parse_acquired(request, &out.stdout_str()) {
            Ok(acquired) => acquired,
            Err(refused) if out.success() => return Err(refused),
            // The guard timed out, or the script failed before deciding.
            Err(_) => return Err(transport.failure(&what, &out).into()),
        };
        let lock = HostLock {
            path: request.path.to_string(),
            token,
            what: request.what.to_string(),
            timing: request.timing,
            steps_in_flight: AtomicUsize::new(0),
            taken_over,
            signals: std::sync::Mutex::new(Some(signals)),
        };
        if !out.success() {
            // The lock is ours but what came with it failed: give it back.
            let _ = lock.release(transport).await;
            return Err(transport
                .failure(&format!("{what} and probing"), &out)
                .into());
        }
        Ok((lock, then_output))
    }

    /// Gives the lock back, unless it is no longer ours or a host step this
    /// run started still runs (see `Released`).
    pub async fn release(&self, transport: &dyn Transport) -> Result<Released, TransportError> {
        let script = format!(
            "{guard}\nif {ours}; then\n{steps}\n  if [ -n \"$running\" ]; then echo \"runs $running\"; else rm -rf -- {lock}; echo released; fi\nfi",
            guard = guard(&self.path, self.timing.guard_wait_secs),
            ours = self.ours(),
            steps = running_steps(&quote(&self.path)),
            lock = quote(&self.path),
        );
        let out = transport
            .run_ok("unlocking", ExecRequest::new(script).become_root(true))
            .await?;
        let text = out.stdout_str();
        Ok(match text.trim().split_once(' ') {
            _ if text.trim() == "released" => Released::Yes,
            Some(("runs", pid)) => Released::StepRuns {
                pid: pid.to_string(),
            },
            _ => Released::NotOurs,
        })
    }

    /// `script` as a host step under this lock: it runs only while the lock
    /// is still ours, records its process in the lock for as long as it runs
    /// (so that the lock is not taken over under it), and is not stopped by
    /// its connection closing. For scripts run as root.
    pub fn guarded(&self, script: &str) -> String {
        let lock = quote(&self.path);
        // The subshell is the recorded process; the step runs in it (or
        // replaces it by exec), after the guard's descriptor is closed so
        // that a long step does not keep other lock scripts waiting.
        format!(
            "trap '' HUP PIPE\n(\n{proc_fn}\n{guard}\nif ! {ours}; then echo {not_ours} >&2; exit {NOT_RUN_EXIT}; fi\nvpsup_proc /proc/self/stat && echo \"$vpsup_start\" > {lock}/step.\"$vpsup_pid\"\nexec 9<&-\n{script}\n)",
            proc_fn = scripts::PROC_STAT.fill(&[]),
            guard = guard(&self.path, self.timing.guard_wait_secs),
            ours = self.ours(),
            not_ours = quote(&format!(
                "vpsup: this run no longer holds the {} lock (another run took it over); this step did not run",
                self.what
            )),
        )
    }

    /// `transport`, with every root script run as a `guarded` host step.
    pub fn transport<'a>(&'a self, transport: &'a dyn Transport) -> LockedTransport<'a> {
        LockedTransport {
            lock: self,
            inner: transport,
        }
    }

    /// Runs `work` while holding the lock, renewing its lease, then gives it
    /// back. The first SIGINT/SIGTERM sets `stop_requested()`: with no host
    /// step in flight the work is dropped there and the lock given back;
    /// otherwise the work goes on, to stop at its next step boundary. A
    /// second signal drops the work and leaves the lock to expire.
    pub async fn hold<T>(
        &self,
        transport: &dyn Transport,
        work: impl Future<Output = T>,
    ) -> Held<T> {
        let early = self.signals.lock().ok().and_then(|mut s| s.take());
        let mut signals = early.unwrap_or_else(OsSignals::new);
        self.hold_until(transport, work, &mut signals).await
    }

    /// As `hold`, for a lock taken while another lock's `hold` runs (deploy's
    /// certificates under the renewal lock): only the outer one answers
    /// signals, so a first Ctrl-C waits for the step under way (recorded in
    /// the outer lock) instead of dropping it here.
    pub async fn hold_within<T>(
        &self,
        transport: &dyn Transport,
        work: impl Future<Output = T>,
    ) -> Held<T> {
        self.hold_until(transport, work, &mut NoSignals).await
    }

    async fn hold_until<T>(
        &self,
        transport: &dyn Transport,
        work: impl Future<Output = T>,
        signals: &mut impl Signals,
    ) -> Held<T> {
        let mut work = Box::pin(work);
        let mut renewing = Box::pin(self.keep_leased(transport));
        let mut finishing = false;
        let outcome = loop {
            tokio::select! {
                done = &mut work => break Some(done),
                () = &mut renewing => {}
                signal = signals.next() => {
                    STOP.store(true, Ordering::SeqCst);
                    let lease = self.timing.lease_secs;
                    if finishing {
                        eprintln!("vpsup: {signal} again: leaving now; the {} lock expires within {lease} s, or once the step under way on the host has ended", self.what);
                        return Held { outcome: None, released: Ok(Released::LeftToExpire), taken_over: self.taken_over.clone() };
                    }
                    if self.steps_in_flight.load(Ordering::SeqCst) == 0 {
                        eprintln!("vpsup: {signal}: stopping, and unlocking");
                        break None;
                    }
                    finishing = true;
                    eprintln!("vpsup: {signal}: finishing the step under way on the host, then stopping (Ctrl-C again to leave now; the lock then expires within {lease} s)");
                }
            }
        };
        drop(work);
        drop(renewing);
        Held {
            outcome,
            released: self.release(transport).await,
            taken_over: self.taken_over.clone(),
        }
    }

    /// Renews the lease until it is no longer ours; never returns. A failed
    /// renewal is retried at the next turn: the lease outlasts several.
    async fn keep_leased(&self, transport: &dyn Transport) {
        let script = format!(
            "{guard}\nif {ours}; then echo $(($(date +%s) + {lease})) > {lock}/lease && echo renewed; fi",
            guard = guard(&self.path, self.timing.guard_wait_secs),
            ours = self.ours(),
            lease = self.timing.lease_secs,
            lock = quote(&self.path),
        );
        loop {
            tokio::time::sleep(self.timing.renew_every()).await;
            let renewed = transport
                .exec(ExecRequest::new(script.clone()).become_root(true))
                .await;
            if matches!(&renewed, Ok(out) if out.success() && out.stdout_str().trim() != "renewed")
            {
                // Taken over: `guarded` steps refuse to run, `release` leaves it.
                return std::future::pending().await;
            }
        }
    }

    /// A shell test: the lock still holds our token.
    fn ours(&self) -> String {
        format!(
            "[ \"$(cat {}/token 2>/dev/null)\" = {} ]",
            quote(&self.path),
            quote(&self.token)
        )
    }
}

/// A transport whose root scripts run as host steps under a lock (see
/// `HostLock::guarded`), counted while in flight so that Ctrl-C knows
/// whether the host is in the middle of one.
pub struct LockedTransport<'a> {
    lock: &'a HostLock,
    inner: &'a dyn Transport,
}

/// Counts a host step from its start until it answers or is dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Transport for LockedTransport<'_> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn is_root(&self) -> bool {
        self.inner.is_root()
    }

    fn round_trips(&self) -> usize {
        self.inner.round_trips()
    }

    async fn exec(&self, mut req: ExecRequest) -> crate::transport::Result<ExecOutput> {
        if !req.become_root {
            // Cannot write the lock: not a step it can guard.
            return self.inner.exec(req).await;
        }
        req.script = self.lock.guarded(&req.script);
        let _step = InFlight::start(&self.lock.steps_in_flight);
        self.inner.exec(req).await
    }
}

/// What `HostLock::hold` leaves: the work's result (`None` when it was
/// interrupted), how giving the lock back went, and the dead run's lock
/// this one replaced, if any.
pub struct Held<T> {
    pub outcome: Option<T>,
    pub released: Result<Released, TransportError>,
    pub taken_over: Option<String>,
}

impl<T> Held<T> {
    /// The problem to report about the lock itself, if any.
    pub fn release_problem(&self, what: &str) -> Option<String> {
        match &self.released {
            Ok(Released::Yes) => None,
            Ok(Released::NotOurs) => Some(format!(
                "the {what} lock was taken over while this run held it (it was thought dead)"
            )),
            Ok(Released::StepRuns { pid }) => Some(format!(
                "the {what} lock stays on the host while the step this run started there (pid {pid}) runs; the next run takes it over once it has ended"
            )),
            Ok(Released::LeftToExpire) => Some(format!(
                "the {what} lock was left on the host; it expires on its own"
            )),
            Err(e) => Some(format!("releasing the {what} lock: {e}")),
        }
    }
}

impl<U, E: From<HoldError>> Held<Result<U, E>> {
    /// What a run under the lock came to: its own error first, then an
    /// interruption (`interrupted` says what the host is left with), then a
    /// problem with the lock itself.
    pub fn into_result(self, what: &str, interrupted: &str) -> Result<U, E> {
        let lock_problem = self.release_problem(what);
        match (self.outcome, lock_problem) {
            // Interrupted: and whether the lock stays (a step still runs).
            (None, lock) => Err(HoldError::Interrupted {
                left: interrupted.to_string(),
                lock,
            }
            .into()),
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(_)), Some(problem)) => Err(HoldError::Lock(problem).into()),
            (Some(Ok(value)), None) => Ok(value),
        }
    }
}

/// Why work under a lock did not come to its own result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoldError {
    /// Stopped by Ctrl-C: `left` says what the host is left with, `lock`
    /// whether the lock stays.
    #[error("{left}{}", lock.as_ref().map(|l| format!("; {l}")).unwrap_or_default())]
    Interrupted { left: String, lock: Option<String> },
    /// The work was done, but the lock was not given back as it should.
    #[error("{0}")]
    Lock(String),
}

/// Where the stop signals come from: the OS, or a test.
trait Signals {
    /// Resolves on the next signal, naming it.
    fn next(&mut self) -> impl Future<Output = &'static str>;
}

/// SIGINT and SIGTERM.
struct OsSignals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl OsSignals {
    fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        OsSignals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }
}

impl Signals for OsSignals {
    async fn next(&mut self) -> &'static str {
        let (Some(int), Some(term)) = (&mut self.int, &mut self.term) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => "interrupted",
            _ = term.recv() => "terminated",
        }
    }
}

/// No signals: the outer lock's `hold` answers them.
struct NoSignals;

impl Signals for NoSignals {
    async fn next(&mut self) -> &'static str {
        std::future::pending().await
    }
}

/// Shell lines setting `running` to the pid of a live host step recorded in
/// the lock (`HostLock::guarded`), or to nothing.
fn running_steps(lock: &str) -> String {
    format!(
        "{}\nrunning=\nfor step in {lock}/step.*; do\n  [ -f \"$step\" ] && vpsup_proc \"/proc/${{step##*.}}/stat\" && [ \"$vpsup_state\" != Z ] && [ \"$vpsup_start\" = \"$(cat \"$step\")\" ] && running=$vpsup_pid\ndone",
        scripts::PROC_STAT.fill(&[])
    )
}

/// The one script that takes the lock (or takes over a dead run's) and, once
/// it is ours, runs `then_script`. Its answer, read by `parse_acquired`:
/// `taken-over AGE REASON [SECS]` and the owner's line; then `acquired TOKEN`
/// followed by `then_script`'s output, or `held AGE EXPIRED RUNNING` (seconds
/// since the lease ran out or `-` without one; a live step's pid or `-`) and
/// the owner's line.
fn acquire_script(request: &LockRequest<'_>, then_script: &str) -> String {
    let lock = quote(request.path);
    let by_age = request
        .take_over_after
        .map(|secs| {
            format!("\n  elif [ \"$expired\" = - ] && [ \"$age\" -gt {secs} ]; then dead=too-old")
        })
        .unwrap_or_default();
    let pid = request
        .local_pid
        .map(|pid| format!("echo {pid} > {lock}/pid\n  "))
        .unwrap_or_default();
    // Under flock on the parent directory, so that two runs finding the
    // same dead lock cannot both take it over.
    scripts::HOSTLOCK_ACQUIRE.fill(&[
        (
            "guard",
            &guard(request.path, request.timing.guard_wait_secs),
        ),
        ("lock", &lock),
        ("steps", &running_steps(&lock)),
        ("by_age", &by_age),
        ("pid", &pid),
        ("lease", &request.timing.lease_secs.to_string()),
        ("then_script", then_script),
    ])
}

/// Reads `acquire_script`'s answer: the token, the dead run's lock taken
/// over, and `then_script`'s output; or why the lock is not ours.
#[allow(clippy::type_complexity)]
fn parse_acquired(
    request: &LockRequest<'_>,
    text: &str,
) -> Result<(String, Option<String>, String), LockError> {
    let mut lines = text.split_inclusive('\n');
    let mut taken_over = None;
    while let Some(line) = lines.next() {
        let line = line.trim_end_matches('\n');
        let mut words = line.split(' ');
        let word = words.next().unwrap_or("");
        let age_secs: u64 = words.next().and_then(|a| a.parse().ok()).unwrap_or(0);
        let age = human_age(age_secs);
        let mut owner = || lines.next().unwrap_or("unknown").trim().to_string();
        match word {
            "taken-over" => {
                let reason = match (words.next(), words.next().and_then(|s| s.parse().ok())) {
                    (Some("restarted"), _) => "the host restarted since".to_string(),
                    (Some("process-gone"), _) => "its process is gone".to_string(),
                    (Some("lease-expired"), Some(secs)) => format!(
                        "its holder stopped renewing its lease {} ago: killed, or its connection dropped",
                        human_age(secs)
                    ),
                    (Some("too-old"), _) => format!(
                        "older than {}",
                        human_age(request.take_over_after.unwrap_or(0))
                    ),
                    (other, _) => other.unwrap_or("unknown").to_string(),
                };
                taken_over = Some(format!("{} ({age} old; {reason})", owner()));
            }
            "acquired" => {
                if let Some(token) = line.strip_prefix("acquired ").filter(|t| !t.is_empty()) {
                    return Ok((token.to_string(), taken_over, lines.collect()));
                }
                break;
            }
            "held" => {
                let expired: Option<i64> = words.next().and_then(|e| e.parse().ok());
                let running = words.next().filter(|p| *p != "-");
                let leased = expired.is_some();
                let stale = !leased && age_secs > STALE_AFTER_SECS;
                let state = match (expired, running) {
                    (Some(secs), Some(pid)) if secs > 0 => format!(
                        "; its lease ran out {} ago, but a step it started on the host (pid {pid}) still runs",
                        human_age(secs as u64)
                    ),
                    _ if stale => " (probably stale: that run died without unlocking)".to_string(),
                    _ => String::new(),
                };
                return Err(LockError::Held {
                    what: request.what.to_string(),
                    owner: owner(),
                    age,
                    state,
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
        answer: text.to_string(),
    })
}

/// Shell lines that hold an exclusive flock on the lock's parent directory
/// (created 0700 if missing) for the rest of the script, or stop it: going on
/// without the flock could let two runs take over the same lock.
fn guard(path: &str, wait_secs: u64) -> String {
    let parent = quote(
        std::path::Path::new(path)
            .parent()
            .and_then(|p| p.to_str())
            .unwrap_or("/"),
    );
    format!(
        "[ -d {parent} ] || mkdir -p -m 0700 {parent}\nexec 9< {parent} || exit {NOT_RUN_EXIT}\nflock -w {wait_secs} 9 || {{ echo \"vpsup: another vpsup run held the lock directory's guard ({parent}) for {wait_secs} s; try again\" >&2; exit {NOT_RUN_EXIT}; }}"
    )
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

    /// Who holds a lock reads as `user@machine (vpsup command)`.
    #[test]
    fn the_owner_names_user_machine_and_command() {
        let owner = owner("deploy");
        assert!(
            owner.ends_with(&format!("@{} (vpsup deploy)", this_machine())),
            "{owner}"
        );
        assert!(!this_machine().is_empty() && !this_machine().contains('\n'));
    }

    /// Work that failed keeps its own error; an interruption says what the
    /// host is left with, and whether the lock stays.
    #[test]
    fn what_a_run_under_the_lock_came_to() {
        #[derive(Debug, PartialEq)]
        enum E {
            Work,
            Held(String),
        }
        impl From<HoldError> for E {
            fn from(e: HoldError) -> E {
                E::Held(e.to_string())
            }
        }
        let held = |outcome, released| Held::<Result<u8, E>> {
            outcome,
            released: Ok(released),
            taken_over: None,
        };
        let into = |h: Held<Result<u8, E>>| h.into_result("deploy", "interrupted; kept R1");
        assert_eq!(into(held(Some(Ok(7)), Released::Yes)), Ok(7));
        assert_eq!(
            into(held(Some(Err(E::Work)), Released::NotOurs)),
            Err(E::Work)
        );
        assert_eq!(
            into(held(None, Released::Yes)),
            Err(E::Held("interrupted; kept R1".into()))
        );
        assert_eq!(
            into(held(None, Released::LeftToExpire)),
            Err(E::Held(
                "interrupted; kept R1; the deploy lock was left on the host; it expires on its own"
                    .into()
            ))
        );
        assert_eq!(
            into(held(Some(Ok(7)), Released::NotOurs)),
            Err(E::Held(
                "the deploy lock was taken over while this run held it (it was thought dead)"
                    .into()
            ))
        );
    }

    fn request<'a>(path: &'a str, owner: &'a str) -> LockRequest<'a> {
        LockRequest {
            path,
            what: "app doctor",
            owner,
            take_over_after: None,
            local_pid: None,
            timing: LockTiming::STANDARD,
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
        let (_dir, path, transport) = rig("deploy.lock");
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
        assert_eq!(first.release(&transport).await.unwrap(), Released::Yes);
        let again = HostLock::acquire(&transport, &request(&path, "bob@ci (vpsup deploy)"))
            .await
            .unwrap();
        assert_eq!(again.release(&transport).await.unwrap(), Released::Yes);
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
                    assert_eq!(held.release(&transport).await.unwrap(), Released::Yes);
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
        assert_eq!(ours.release(&transport).await.unwrap(), Released::NotOurs);
        assert!(path.join("owner").exists());
    }

    /// A temp dir, the path of a lock `name` in it, and the local shell.
    fn rig(name: &str) -> (tempfile::TempDir, String, LocalTransport) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name).display().to_string();
        (dir, path, LocalTransport::new("test", true))
    }

    /// A request whose lease runs out within seconds.
    fn short_lease<'a>(path: &'a str, owner: &'a str, lease_secs: u64) -> LockRequest<'a> {
        LockRequest {
            timing: LockTiming {
                lease_secs,
                guard_wait_secs: 30,
            },
            ..request(path, owner)
        }
    }

    fn sleep(secs: f64) -> tokio::time::Sleep {
        tokio::time::sleep(std::time::Duration::from_secs_f64(secs))
    }

    /// Takes the lock as soon as the step that keeps it has ended (it may
    /// still be exiting): refused until then only because the step runs.
    async fn taken_once_free(transport: &LocalTransport, path: &str) -> HostLock {
        for _ in 0..100 {
            match HostLock::acquire(transport, &request(path, "bob@ci")).await {
                Ok(lock) => return lock,
                Err(e) => assert!(e.to_string().contains("still runs"), "{e}"),
            }
            sleep(0.1).await;
        }
        panic!("the lock was never free");
    }

    /// Signals sent by the test instead of the terminal.
    impl Signals for tokio::sync::mpsc::UnboundedReceiver<&'static str> {
        async fn next(&mut self) -> &'static str {
            match self.recv().await {
                Some(signal) => signal,
                None => std::future::pending().await,
            }
        }
    }

    /// Sends a fake signal after each delay.
    fn signals_after(delays: &[f64]) -> tokio::sync::mpsc::UnboundedReceiver<&'static str> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let delays = delays.to_vec();
        tokio::spawn(async move {
            for delay in delays {
                sleep(delay).await;
                let _ = tx.send("interrupted");
            }
        });
        rx
    }

    #[tokio::test]
    async fn a_killed_runs_lock_is_taken_over_once_its_lease_runs_out() {
        let (_dir, path, transport) = rig("deploy.lock");
        // Taken, then never renewed nor given back: the run was killed.
        let killed = HostLock::acquire(&transport, &short_lease(&path, "alice@laptop", 1))
            .await
            .unwrap();
        drop(killed);
        let refused = HostLock::acquire(&transport, &request(&path, "bob@ci"))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            refused.contains("locked by alice@laptop since ") && !refused.contains("stale"),
            "{refused}"
        );
        sleep(2.5).await;
        let taken = HostLock::acquire(&transport, &request(&path, "bob@ci"))
            .await
            .unwrap();
        let said = taken.taken_over.clone().unwrap();
        assert!(
            said.starts_with("alice@laptop (")
                && said.contains("old; its holder stopped renewing its lease ")
                && said.ends_with(" ago: killed, or its connection dropped)"),
            "{said}"
        );
        assert_eq!(taken.release(&transport).await.unwrap(), Released::Yes);
    }

    #[tokio::test]
    async fn a_held_lock_keeps_its_lease_while_the_work_runs() {
        let (_dir, path, transport) = rig("deploy.lock");
        let lock = HostLock::acquire(&transport, &short_lease(&path, "alice@laptop", 1))
            .await
            .unwrap();
        let held = lock
            .hold(&transport, async {
                // Three leases long: only renewals keep it.
                sleep(3.0).await;
                HostLock::acquire(&transport, &request(&path, "bob@ci"))
                    .await
                    .err()
            })
            .await;
        assert!(
            matches!(held.outcome, Some(Some(LockError::Held { ref owner, .. })) if owner == "alice@laptop"),
            "the lock was taken over under its holder"
        );
        assert_eq!(held.released.unwrap(), Released::Yes);
        assert!(!std::path::Path::new(&path).exists());
    }

    #[tokio::test]
    async fn a_step_still_running_on_the_host_keeps_a_lock_whose_lease_ran_out() {
        let (dir, path, transport) = rig("deploy.lock");
        let done = dir.path().join("done");
        let lock = HostLock::acquire(&transport, &short_lease(&path, "alice@laptop", 1))
            .await
            .unwrap();
        // The step goes on on the host after its run is gone.
        let step = lock.guarded(&format!("sleep 4; touch {}", done.display()));
        let mut running = std::process::Command::new("sh")
            .args(["-c", &step])
            .spawn()
            .unwrap();
        sleep(2.2).await;
        let refused = HostLock::acquire(&transport, &request(&path, "bob@ci"))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            refused.contains("; its lease ran out ")
                && refused.contains(" ago, but a step it started on the host (pid ")
                && refused.ends_with(") still runs; wait for it to finish"),
            "{refused}"
        );
        assert!(matches!(
            lock.release(&transport).await.unwrap(),
            Released::StepRuns { .. }
        ));
        assert!(running.wait().unwrap().success() && done.exists());
        let taken = taken_once_free(&transport, &path).await;
        assert!(taken
            .taken_over
            .unwrap()
            .contains("stopped renewing its lease"));
    }

    #[tokio::test]
    async fn a_step_does_not_run_once_the_lock_is_no_longer_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deploy.lock");
        let marker = dir.path().join("changed");
        let transport = LocalTransport::new("test", true);
        let path_text = path.display().to_string();
        let lock = HostLock::acquire(&transport, &request(&path_text, "me"))
            .await
            .unwrap();
        let step = format!("touch {}", marker.display());
        let locked = lock.transport(&transport);
        locked
            .run_ok("a step", ExecRequest::new(step.clone()).become_root(true))
            .await
            .unwrap();
        std::fs::remove_file(&marker).unwrap();
        // Another run took it over meanwhile (it thought this one dead).
        std::fs::write(path.join("token"), "theirs\n").unwrap();
        let refused = locked
            .run_ok("a step", ExecRequest::piped(step).become_root(true))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("this run no longer holds the app doctor lock (another run took it over); this step did not run"),
            "{refused}"
        );
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn the_first_interrupt_finishes_the_step_under_way_then_the_work_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deploy.lock").display().to_string();
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        let transport = LocalTransport::new("test", true);
        let lock = HostLock::acquire(&transport, &request(&path, "me"))
            .await
            .unwrap();
        let locked = lock.transport(&transport);
        let step = |file: &std::path::Path, secs| {
            ExecRequest::new(format!("sleep {secs}; touch {}", file.display())).become_root(true)
        };
        let work = async {
            locked.run_ok("first step", step(&first, 1)).await.unwrap();
            if stop_requested() {
                return "stopped between steps";
            }
            locked
                .run_ok("second step", step(&second, 0))
                .await
                .unwrap();
            "finished"
        };
        let held = lock
            .hold_until(&transport, work, &mut signals_after(&[0.3]))
            .await;
        assert_eq!(held.outcome, Some("stopped between steps"));
        assert!(first.exists() && !second.exists());
        assert_eq!(held.released.unwrap(), Released::Yes);
        assert!(!std::path::Path::new(&path).exists());
    }

    #[tokio::test]
    async fn a_second_interrupt_leaves_now_and_keeps_the_lock_until_the_step_ends() {
        let (dir, path, transport) = rig("deploy.lock");
        let done = dir.path().join("done");
        let lock = HostLock::acquire(&transport, &short_lease(&path, "alice@laptop", 1))
            .await
            .unwrap();
        let locked = lock.transport(&transport);
        let step = ExecRequest::new(format!("sleep 4; touch {}", done.display())).become_root(true);
        let held = lock
            .hold_until(
                &transport,
                locked.run_ok("a long step", step),
                &mut signals_after(&[0.3, 0.2]),
            )
            .await;
        assert!(held.outcome.is_none());
        assert_eq!(held.released.unwrap(), Released::LeftToExpire);
        // Its lease runs out, but the step it started still runs.
        // (`date +%s` counts whole seconds: a 1 s lease lasts up to 2.)
        sleep(2.5).await;
        assert!(!done.exists());
        let refused = HostLock::acquire(&transport, &request(&path, "bob@ci"))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(refused.contains("still runs"), "{refused}");
        let taken = taken_once_free(&transport, &path).await;
        assert!(done.exists() && taken.taken_over.is_some());
    }

    #[tokio::test]
    async fn an_interrupt_with_no_step_under_way_stops_and_unlocks_at_once() {
        let (_dir, path, transport) = rig("renew.lock");
        let lock = HostLock::acquire(&transport, &request(&path, "me"))
            .await
            .unwrap();
        // Waiting on something else than the host (a CA that never answers).
        let held = lock
            .hold_until(&transport, sleep(60.0), &mut signals_after(&[0.3]))
            .await;
        assert!(held.outcome.is_none());
        assert_eq!(held.released.unwrap(), Released::Yes);
        assert!(!std::path::Path::new(&path).exists());
    }

    #[tokio::test]
    async fn a_guard_held_too_long_stops_the_lock_script() {
        let (dir, path, transport) = rig("deploy.lock");
        let ready = dir.path().join("ready");
        // Another run's script holding the guard.
        let mut other = std::process::Command::new("flock")
            .arg(dir.path())
            .args(["-c", &format!("touch {}; sleep 4", ready.display())])
            .spawn()
            .unwrap();
        while !ready.exists() {
            sleep(0.05).await;
        }
        let request = LockRequest {
            timing: LockTiming {
                lease_secs: 90,
                guard_wait_secs: 1,
            },
            ..request(&path, "me")
        };
        let refused = HostLock::acquire(&transport, &request)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            refused.contains("another vpsup run held the lock directory's guard (")
                && refused.contains(") for 1 s; try again"),
            "{refused}"
        );
        assert!(!std::path::Path::new(&path).exists());
        other.wait().unwrap();
    }

    #[tokio::test]
    async fn acquire_then_probes_only_once_the_lock_is_ours() {
        let (dir, path, transport) = rig("deploy.lock");
        let probed = dir.path().join("probed");
        let (lock, output) = HostLock::acquire_then(
            &transport,
            &request(&path, "alice"),
            "echo facts; echo more",
        )
        .await
        .unwrap();
        assert_eq!(output, "facts\nmore\n");
        let probe = format!("touch {}", probed.display());
        let refused = HostLock::acquire_then(&transport, &request(&path, "bob"), &probe).await;
        assert!(matches!(refused, Err(LockError::Held { .. })));
        assert!(!probed.exists());
        assert_eq!(lock.release(&transport).await.unwrap(), Released::Yes);
        // A probe that fails gives the lock back.
        let failed =
            HostLock::acquire_then(&transport, &request(&path, "bob"), "echo no >&2; exit 3")
                .await
                .err()
                .unwrap()
                .to_string();
        assert!(failed.contains("(exit 3): no"), "{failed}");
        assert!(!std::path::Path::new(&path).exists());
    }

    /// Waits while a live run holds the lock, and takes it once that run
    /// gives it back.
    #[tokio::test]
    async fn a_waiting_run_takes_the_lock_once_its_holder_gives_it_back() {
        let (_dir, path, transport) = rig("backup.lock");
        let holder = HostLock::acquire(&transport, &request(&path, "alice@laptop"))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let wait = Wait {
            up_to: Duration::from_secs(30),
            every: Duration::from_millis(200),
        };
        let bob = request(&path, "bob@ci");
        let mut no_signals = signals_after(&[]);
        let (taken, released) = tokio::join!(
            acquire_waiting_until(
                wait,
                "test",
                || HostLock::acquire(&transport, &bob),
                &mut no_signals,
            ),
            async {
                sleep(1.0).await;
                holder.release(&transport).await.unwrap()
            }
        );
        assert_eq!(released, Released::Yes);
        let taken = taken.unwrap();
        assert!(taken.taken_over.is_none());
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert_eq!(
            std::fs::read_to_string(format!("{path}/owner")).unwrap(),
            "bob@ci"
        );
        assert_eq!(taken.release(&transport).await.unwrap(), Released::Yes);
    }

    /// The wait is bounded, and a signal ends it: either way the holder is
    /// named and its lock left alone.
    #[tokio::test]
    async fn a_wait_ends_at_its_bound_or_on_a_signal_naming_the_holder() {
        let (_dir, path, transport) = rig("backup.lock");
        let holder = HostLock::acquire(&transport, &request(&path, "alice@laptop"))
            .await
            .unwrap();
        let wait = Wait {
            up_to: Duration::from_millis(700),
            every: Duration::from_millis(200),
        };
        let bob = request(&path, "bob@ci");
        let try_lock = || HostLock::acquire(&transport, &bob);
        let started = std::time::Instant::now();
        let out = acquire_waiting_until(wait, "test", try_lock, &mut signals_after(&[]))
            .await
            .err()
            .unwrap();
        assert!(started.elapsed() >= wait.up_to);
        assert!(
            matches!(&out, LockError::WaitedOut { owner, .. } if owner == "alice@laptop"),
            "{out}"
        );
        let long = Wait {
            up_to: Duration::from_secs(60),
            ..wait
        };
        let out = acquire_waiting_until(long, "test", try_lock, &mut signals_after(&[0.3]))
            .await
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            out,
            "interrupted while waiting for app doctor (locked by alice@laptop); it did not run"
        );
        assert_eq!(holder.release(&transport).await.unwrap(), Released::Yes);
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(human_age(5), "5 s");
        assert_eq!(human_age(600), "10 min");
        assert_eq!(human_age(3 * 3600), "3 h");
        assert_eq!(human_age(3 * 86_400), "3 days");
    }
}
