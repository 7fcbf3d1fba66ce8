//! Waiting and retrying, for every adapter and stage: a poll schedule ([`Backoff`]), polling
//! until something is ready ([`wait_for`]), and retrying an operation while it fails in a way
//! that passes with time ([`retry_while`]). Free of AWS and Kubernetes: the callers say which
//! errors are worth another try, and where progress goes ([`Progress`]).

use std::future::Future;
use std::time::Duration;

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
        tokio::time::sleep(delay).await;
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
                    tokio::time::sleep(d).await;
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
