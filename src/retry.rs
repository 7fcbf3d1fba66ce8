//! Waiting and retrying, for every adapter and stage: a poll schedule ([`Backoff`]), polling
//! until something is ready ([`wait_for`]), and retrying an operation while it fails in a way
//! that passes with time ([`retry_while`]). Free of AWS and Kubernetes: the callers say which
//! errors are worth another try, and where progress goes ([`Progress`]).
//!
//! # Interrupting a wait
//! Every pause of these waits (and any long wait a caller wraps in [`or_park`], such as a helm
//! `--wait`) races the run's [`CancelToken`]: once it is cancelled (Ctrl-C, SIGTERM), a stage
//! that reaches a pause parks there for good, and [`interruptible`] — which the engine wraps
//! around each stage — returns at once. The stage's work is dropped at that point, which is
//! safe for the same reason a `kill -9` is: intent is journaled before every create and every
//! resource is found by tag or name on the next run. A stage in the middle of a call (not a
//! wait) finishes it first.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Cancellation shared by a run and its stages. Cheap to clone.
#[derive(Clone, Default)]
pub struct CancelToken(Arc<CancelInner>);

#[derive(Default)]
struct CancelInner {
    cancelled: AtomicBool,
    notify: Notify,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels; idempotent.
    pub fn cancel(&self) {
        if !self.0.cancelled.swap(true, Ordering::SeqCst) {
            self.0.notify.notify_waiters();
        }
    }

    /// Whether [`CancelToken::cancel`] has been called.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// Completes once the token is cancelled (at once if it already is).
    pub async fn cancelled(&self) {
        // The `Notified` future is created before the flag is checked, so a
        // `cancel()` landing between the check and the await still wakes it.
        let notified = self.0.notify.notified();
        if self.is_cancelled() {
            return;
        }
        notified.await;
    }
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// What a wait inside [`interruptible`] sees: the token, and how to say "parked".
#[derive(Clone)]
struct Scope {
    cancel: CancelToken,
    parked: Arc<Notify>,
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// Run `work` so that its waits ([`pause`], [`or_park`]) stop when `cancel` is cancelled:
/// `Some(output)` when it finished, `None` when it was cancelled and then reached a wait (the
/// work is dropped there).
pub async fn interruptible<F: Future>(cancel: CancelToken, work: F) -> Option<F::Output> {
    let parked = Arc::new(Notify::new());
    let scope = Scope {
        cancel,
        parked: parked.clone(),
    };
    tokio::select! {
        out = SCOPE.scope(scope, work) => Some(out),
        () = parked.notified() => None,
    }
}

/// Run `fut` (a long wait: a helm `--wait`, a child process); if the surrounding
/// [`interruptible`] run is cancelled first, park instead — `fut` is dropped with the work.
pub async fn or_park<F: Future>(fut: F) -> F::Output {
    let Ok(scope) = SCOPE.try_with(Scope::clone) else {
        return fut.await;
    };
    tokio::select! {
        out = fut => out,
        () = scope.cancel.cancelled() => park(&scope).await,
    }
}

/// Sleep `d`, or park if the surrounding [`interruptible`] run is cancelled meanwhile (or
/// already was).
pub async fn pause(d: Duration) {
    or_park(tokio::time::sleep(d)).await
}

async fn park<T>(scope: &Scope) -> T {
    // notify_one keeps a permit if `interruptible` is not waiting yet.
    scope.parked.notify_one();
    std::future::pending().await
}

/// Poll schedule for long waits: the first poll comes quickly (AWS is sometimes fast, moto is
/// always instant), then the gap doubles up to a cap, until the deadline is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub cap: Duration,
    pub deadline: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, cap: Duration, deadline: Duration) -> Self {
        Backoff {
            first,
            cap,
            deadline,
        }
    }

    /// The same schedule with every interval and the deadline divided by `factor` (at least 1).
    pub fn scaled(self, factor: u32) -> Backoff {
        let factor = factor.max(1);
        Backoff::new(
            self.first / factor,
            self.cap / factor,
            self.deadline / factor,
        )
    }

    /// The gaps between polls, until the deadline is used up.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + '_ {
        let mut next = self.first;
        let mut spent = Duration::ZERO;
        std::iter::from_fn(move || {
            if spent >= self.deadline {
                return None;
            }
            let delay = next.min(self.deadline - spent);
            spent += delay;
            next = (next * 2).min(self.cap);
            Some(delay)
        })
    }
}

/// Where a wait or a retry says what it is doing ("delete subnet: DependencyViolation,
/// retrying in 4s"). The engine's stage handle is one; a closure is another.
pub trait Progress: Send + Sync {
    fn step(&self, message: String);
}

impl<F: Fn(String) + Send + Sync> Progress for F {
    fn step(&self, message: String) {
        self(message)
    }
}

/// Poll `check` until it returns `Some`, sleeping per `backoff`; `None` at the deadline.
///
/// # Errors
/// The first error `check` returns.
pub async fn wait_for<T, E, F, Fut>(backoff: Backoff, mut check: F) -> Result<Option<T>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    if let Some(v) = check().await? {
        return Ok(Some(v));
    }
    for delay in backoff.delays() {
        pause(delay).await;
        if let Some(v) = check().await? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// Run `op`; while it fails with an error `retryable` has a reason for (like
/// `DependencyViolation` while a VPC's parts let go), report the reason and try again after
/// the next back-off delay.
///
/// # Errors
/// A non-retryable error at once; a retryable one once the back-off's deadline has passed.
pub async fn retry_while<T, E, F, Fut>(
    backoff: Backoff,
    retryable: impl Fn(&E) -> Option<String>,
    progress: &dyn Progress,
    what: &str,
    mut op: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delays = backoff.delays();
    loop {
        match op().await {
            Err(e) => match (retryable(&e), delays.next()) {
                (Some(reason), Some(d)) => {
                    progress.step(format!(
                        "{what}: {reason}, retrying in {}s",
                        d.as_secs_f64().ceil()
                    ));
                    pause(d).await;
                }
                _ => return Err(e),
            },
            ok => return ok,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[test]
    fn delays_double_up_to_the_cap_and_stop_at_the_deadline() {
        let ms = Duration::from_millis;
        let b = Backoff::new(ms(1), ms(4), ms(12));
        let d: Vec<_> = b.delays().collect();
        assert_eq!(d, [ms(1), ms(2), ms(4), ms(4), ms(1)]);
        assert_eq!(d.iter().sum::<Duration>(), ms(12));
        assert_eq!(
            b.scaled(2),
            Backoff::new(Duration::from_micros(500), ms(2), ms(6))
        );
    }

    #[test]
    fn backoff_starts_small_and_is_capped() {
        let b = Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(10),
            Duration::from_secs(60),
        );
        let d: Vec<u64> = b.delays().map(|d| d.as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 10, 10, 10, 10, 5]);
        assert_eq!(d.iter().sum::<u64>(), 60);
    }

    #[tokio::test]
    async fn a_cancelled_run_stops_at_its_next_wait_not_before() {
        let cancel = CancelToken::new();
        let steps = std::sync::Mutex::new(Vec::new());
        let work = async {
            steps.lock().unwrap().push("before the wait");
            // A long wait: cancelled while it sleeps.
            pause(Duration::from_secs(3600)).await;
            steps.lock().unwrap().push("after the wait");
        };
        let trigger = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            cancel.cancel();
        };
        let started = std::time::Instant::now();
        let (out, ()) = tokio::join!(interruptible(cancel.clone(), work), trigger);
        assert_eq!(out, None, "the work was interrupted");
        assert!(started.elapsed() < Duration::from_secs(60));
        assert_eq!(*steps.lock().unwrap(), ["before the wait"]);

        // Not cancelled: the work finishes, waits included.
        let done = interruptible(CancelToken::new(), async {
            pause(Duration::from_millis(1)).await;
            7
        })
        .await;
        assert_eq!(done, Some(7));

        // Outside any interruptible run a pause is a plain sleep.
        pause(Duration::from_millis(1)).await;
        // Already cancelled: work without waits still finishes; the first wait parks.
        let cancel = CancelToken::new();
        cancel.cancel();
        assert_eq!(interruptible(cancel.clone(), async { 1 }).await, Some(1));
        let waited = interruptible(cancel, async {
            or_park(tokio::time::sleep(Duration::from_secs(3600))).await;
            2
        })
        .await;
        assert_eq!(waited, None);
    }

    #[tokio::test]
    async fn retry_while_retries_only_what_is_retryable() {
        let ms = Duration::from_millis;
        let b = Backoff::new(ms(1), ms(1), ms(50));
        let calls = AtomicUsize::new(0);
        let said = Mutex::new(Vec::new());
        let progress = |m: String| said.lock().unwrap().push(m);
        let res: Result<u32, &str> = retry_while(
            b,
            |e: &&str| (*e == "busy").then(|| "busy".to_string()),
            &progress,
            "delete thing",
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err("busy"),
                    _ => Ok(7),
                }
            },
        )
        .await;
        assert_eq!(res, Ok(7));
        assert_eq!(said.lock().unwrap().len(), 2);
        assert!(said.lock().unwrap()[0].starts_with("delete thing: busy, retrying in"));

        let res: Result<u32, &str> = retry_while(
            b,
            |_: &&str| None,
            &progress,
            "x",
            || async { Err("final") },
        )
        .await;
        assert_eq!(res, Err("final"));

        // A retryable error that outlasts the deadline is returned.
        let res: Result<u32, &str> = retry_while(
            b,
            |_: &&str| Some("busy".into()),
            &progress,
            "x",
            || async { Err("busy") },
        )
        .await;
        assert_eq!(res, Err("busy"));
    }
}
