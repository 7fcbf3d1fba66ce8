//! Deleting what `down` found, one way for every kind of resource.
//!
//! What differs between kinds is data, a [`Kind`]: its name, how progress says it, the AWS
//! answers that mean "not yet" (retried with back-off), the calls that detach and delete one,
//! and — for kinds AWS removes slowly — the call that tells which are still there.
//! [`Teardown::delete`] is the shape they share: say it, delete it, count it or report it left
//! with AWS's reason; then wait for the slow ones to go. The network stage's resources (found by
//! the stack's tag) and the sweeps' (found by the cluster's, [`super::sweep`]) both go through it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::{optional, retry_codes, wait_for, AwsClients, AwsError, Backoff};
use crate::retry::Progress;

/// Detaches or deletes one resource, by the id the API deletes it by.
pub type Call = for<'a> fn(&'a AwsClients, &'a str) -> BoxFuture<'a, Result<(), AwsError>>;

/// Which of the given ids are still there (deleting, shutting down).
pub type Present =
    for<'a> fn(&'a AwsClients, &'a [String]) -> BoxFuture<'a, Result<Vec<String>, AwsError>>;

/// Looks again for what holds a resource up and deletes it; how many it deleted.
pub type Resweep<'a> = dyn Fn() -> BoxFuture<'a, usize> + Send + Sync + 'a;

/// What `down` does to a kind of resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Delete,
    Release,
    Terminate,
}

impl Verb {
    fn imperative(self) -> &'static str {
        match self {
            Verb::Delete => "delete",
            Verb::Release => "release",
            Verb::Terminate => "terminate",
        }
    }

    fn progressive(self) -> &'static str {
        match self {
            Verb::Delete => "deleting",
            Verb::Release => "releasing",
            Verb::Terminate => "terminating",
        }
    }

    /// What a resource is still doing when it has not gone by the deadline.
    fn still(self) -> &'static str {
        match self {
            Verb::Delete => "still deleting",
            Verb::Release => "still releasing",
            Verb::Terminate => "still shutting down",
        }
    }
}

/// A kind of resource `down` deletes, as data.
pub struct Kind {
    /// As `plan --destroy` and what `down` leaves behind name it: `subnet`, `security-group`.
    pub name: &'static str,
    /// As progress says it: `subnet`, `security group`.
    pub noun: &'static str,
    pub verb: Verb,
    /// AWS error codes that mean "not yet" (`DependencyViolation` while what uses it lets go):
    /// the detach and the delete are retried on them with the teardown's back-off.
    pub retry: &'static [&'static str],
    /// What must let go of it first (a route table's subnets, a gateway's VPC).
    pub detach: Option<Call>,
    pub delete: Call,
    /// For kinds AWS removes slowly: which are still there. The teardown waits for them to go.
    pub present: Option<Present>,
    /// Whether a failed delete ends the teardown at once, because what comes after it cannot go
    /// while it stays (a NAT gateway holds its Elastic IP and subnet).
    pub fatal: bool,
    /// Whether `DependencyViolation` on its delete makes the teardown look again for what holds
    /// it ([`Teardown::resweep`]) before the next try.
    pub resweep: bool,
}

impl Kind {
    /// A kind that is deleted at once, on the first try, with nothing to detach first; the
    /// other fields say where a kind differs.
    pub const fn new(name: &'static str, noun: &'static str, delete: Call) -> Kind {
        Kind {
            name,
            noun,
            verb: Verb::Delete,
            retry: &[],
            detach: None,
            delete,
            present: None,
            fatal: false,
            resweep: false,
        }
    }
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Kinds are told apart by name.
impl PartialEq for Kind {
    fn eq(&self, other: &Kind) -> bool {
        self.name == other.name
    }
}

impl Eq for Kind {}

/// A resource `down` will delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub kind: &'static Kind,
    /// What the API deletes it by: a classic load balancer's name, an ARN, an EC2 id.
    pub id: String,
    /// Its name for people (`Name` tag, group name, description), if it has one.
    pub name: String,
    /// Why it is the stack's or the cluster's, for `plan` (empty when it carries the stack's tag).
    pub why: &'static str,
}

impl Found {
    pub fn label(&self) -> String {
        if self.name.is_empty() || self.name == self.id {
            self.id.clone()
        } else {
            format!("{} ({})", self.name, self.id)
        }
    }
}

/// What a teardown did: how many it removed, and what is left with why.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub deleted: usize,
    pub remaining: Vec<String>,
}

impl Swept {
    pub fn merge(&mut self, other: Swept) {
        self.deleted += other.deleted;
        self.remaining.extend(other.remaining);
    }
}

/// How a teardown goes about it.
pub struct Teardown<'a> {
    pub aws: &'a AwsClients,
    /// The back-off for a kind's "not yet" answers.
    pub retry: Backoff,
    /// How long to wait for the slow kinds to go, and how often to look.
    pub wait: Backoff,
    pub progress: &'a dyn Progress,
    /// For the kinds marked `resweep`.
    pub resweep: Option<&'a Resweep<'a>>,
}

impl<'a> Teardown<'a> {
    /// Retrying and waiting on the same back-off, with no resweep.
    pub fn new(aws: &'a AwsClients, backoff: Backoff, progress: &'a dyn Progress) -> Self {
        Teardown {
            aws,
            retry: backoff,
            wait: backoff,
            progress,
            resweep: None,
        }
    }

    /// Delete each of `found`, in order; then wait for those of slow kinds to go. A resource
    /// already gone counts as deleted; one that could not be deleted, or has not gone by the
    /// deadline, is reported as remaining with the reason.
    ///
    /// # Errors
    /// A failed delete of a `fatal` kind; an error while looking whether the slow ones are gone.
    pub async fn delete(&self, found: &[Found]) -> Result<Swept, AwsError> {
        let mut swept = Swept::default();
        let reswept = AtomicUsize::new(0);
        let mut waiting = Vec::new();
        for f in found {
            let kind = f.kind;
            let why = match f.why {
                "" => String::new(),
                why => format!(" ({why})"),
            };
            self.progress.step(format!(
                "{} {} {}{why}",
                kind.verb.progressive(),
                kind.noun,
                f.label()
            ));
            match optional(self.delete_one(f, &reswept).await) {
                Ok(_) if kind.present.is_some() => waiting.push(f),
                Ok(_) => swept.deleted += 1,
                Err(e) if kind.fatal => return Err(e),
                Err(e) => swept
                    .remaining
                    .push(format!("{} {} ({e})", kind.name, f.label())),
            }
        }
        swept.deleted += reswept.into_inner();
        swept.merge(self.wait_gone(&waiting).await?);
        Ok(swept)
    }

    async fn delete_one(&self, f: &Found, reswept: &AtomicUsize) -> Result<(), AwsError> {
        let (kind, id) = (f.kind, f.id.as_str());
        if let Some(detach) = kind.detach {
            let what = format!("detach {}", kind.noun);
            retry_codes(self.retry, kind.retry, self.progress, &what, || {
                detach(self.aws, id)
            })
            .await?;
        }
        let what = format!("{} {}", kind.verb.imperative(), kind.noun);
        retry_codes(self.retry, kind.retry, self.progress, &what, || async {
            let res = (kind.delete)(self.aws, id).await;
            if let (true, Some(resweep)) = (kind.resweep, self.resweep) {
                if res.as_ref().is_err_and(|e| e.is("DependencyViolation")) {
                    reswept.fetch_add(resweep().await, Ordering::Relaxed);
                }
            }
            res
        })
        .await
    }

    /// Wait until none of `waiting` is there any more, or the deadline.
    async fn wait_gone(&self, waiting: &[&Found]) -> Result<Swept, AwsError> {
        let mut swept = Swept::default();
        if waiting.is_empty() {
            return Ok(swept);
        }
        let counts: Vec<String> = kinds(waiting)
            .iter()
            .map(|k| {
                let n = waiting.iter().filter(|f| f.kind == *k).count();
                format!("{n} {}(s)", k.noun)
            })
            .collect();
        self.progress
            .step(format!("waiting for {} to go", counts.join(", ")));
        let left = Mutex::new(waiting.to_vec());
        wait_for(self.wait, || {
            let left = &left;
            async move {
                let current = lock(left).clone();
                let mut still = Vec::new();
                for kind in kinds(&current) {
                    let of_kind: Vec<&Found> =
                        current.iter().copied().filter(|f| f.kind == kind).collect();
                    let ids: Vec<String> = of_kind.iter().map(|f| f.id.clone()).collect();
                    let present = kind.present.expect("only slow kinds are waited for");
                    let there = present(self.aws, &ids).await?;
                    still.extend(of_kind.into_iter().filter(|f| there.contains(&f.id)));
                }
                let done = still.is_empty();
                *lock(left) = still;
                Ok(done.then_some(()))
            }
        })
        .await?;
        let left = left.into_inner().unwrap_or_else(|e| e.into_inner());
        swept.deleted += waiting.len() - left.len();
        swept.remaining.extend(left.iter().map(|f| {
            format!(
                "{} {} ({} after {}s)",
                f.kind.name,
                f.label(),
                f.kind.verb.still(),
                self.wait.deadline.as_secs()
            )
        }));
        Ok(swept)
    }
}

/// The kinds of `found`, each once, in the order they first appear.
fn kinds(found: &[&Found]) -> Vec<&'static Kind> {
    let mut kinds: Vec<&'static Kind> = Vec::new();
    for f in found {
        if !kinds.contains(&f.kind) {
            kinds.push(f.kind);
        }
    }
    kinds
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Clients that are never called: the test kinds answer from a script.
    fn clients() -> AwsClients {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        AwsClients::with_config(&sdk, "us-east-1".into(), Arc::default(), Default::default())
    }

    /// How often each id was tried (ids are unique to a test).
    static TRIES: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

    fn tried(id: &str) -> usize {
        let mut tries = lock(&TRIES);
        let n = tries.entry(id.to_string()).or_default();
        *n += 1;
        *n
    }

    /// An id's first word says how deleting it goes: `dv2-…` meets DependencyViolation twice,
    /// `gone-…` is not found, `denied-…` is refused, anything else goes at once.
    fn scripted(id: &str) -> Result<(), AwsError> {
        let n = tried(id);
        let fail = |code: &str| Err(AwsError::new("test:Delete", Some(code.into()), code));
        match id.split('-').next() {
            Some("dv2") if n <= 2 => fail("DependencyViolation"),
            Some("gone") => fail("InvalidThing.NotFound"),
            Some("denied") => fail("AccessDenied"),
            _ => Ok(()),
        }
    }

    const QUICK: &Kind = &Kind {
        verb: Verb::Release,
        retry: &["DependencyViolation"],
        resweep: true,
        ..Kind::new("quick-thing", "quick thing", |_, id| {
            Box::pin(async move { scripted(id) })
        })
    };

    /// Still there until it has been looked at twice; `stuck-…` never goes.
    const SLOW: &Kind = &Kind {
        verb: Verb::Terminate,
        detach: Some(|_, id| Box::pin(async move { scripted(&format!("detach-{id}")) })),
        present: Some(|_, ids| {
            Box::pin(async move {
                Ok(ids
                    .iter()
                    .filter(|id| id.starts_with("stuck") || tried(&format!("look-{id}")) <= 2)
                    .cloned()
                    .collect())
            })
        }),
        ..Kind::new("slow-thing", "slow thing", |_, id| {
            Box::pin(async move { scripted(id) })
        })
    };

    const FATAL: &Kind = &Kind {
        fatal: true,
        name: "fatal-thing",
        ..*QUICK
    };

    fn found(kind: &'static Kind, id: &str, name: &str) -> Found {
        Found {
            kind,
            id: id.into(),
            name: name.into(),
            why: "",
        }
    }

    #[tokio::test]
    async fn each_kind_is_deleted_retried_waited_for_or_reported_left() {
        let aws = clients();
        let said = Mutex::new(Vec::new());
        let progress = |line: String| lock(&said).push(line);
        let reswept = AtomicUsize::new(0);
        let resweep = || -> BoxFuture<'_, usize> {
            reswept.fetch_add(1, Ordering::Relaxed);
            Box::pin(async { 1 })
        };
        let ms = Duration::from_millis;
        let teardown = Teardown {
            aws: &aws,
            retry: Backoff::new(ms(1), ms(1), ms(100)),
            wait: Backoff::new(ms(1), ms(1), ms(100)),
            progress: &progress,
            resweep: Some(&resweep),
        };
        let swept = teardown
            .delete(&[
                found(QUICK, "dv2-a", "first"),
                found(QUICK, "gone-a", ""),
                found(QUICK, "denied-a", "refused"),
                found(SLOW, "slow-a", ""),
                found(SLOW, "stuck-a", "stuck"),
            ])
            .await
            .unwrap();
        // Retried through two DependencyViolations, each making it look again (one found);
        // the one not found counts as gone; the slow one went after two looks.
        assert_eq!(swept.deleted, 3 + 2, "{swept:?}");
        assert_eq!(reswept.into_inner(), 2);
        assert_eq!(
            swept.remaining,
            [
                "quick-thing refused (denied-a) (test:Delete: AccessDenied)",
                "slow-thing stuck (stuck-a) (still shutting down after 0s)",
            ]
        );
        let said = said.into_inner().unwrap();
        assert_eq!(said[0], "releasing quick thing first (dv2-a)");
        assert!(said[1].starts_with("release quick thing: DependencyViolation, retrying in"));
        assert!(said.contains(&"terminating slow thing slow-a".to_string()));
        assert_eq!(said.last().unwrap(), "waiting for 2 slow thing(s) to go");
        assert_eq!(lock(&TRIES)["detach-slow-a"], 1, "detached first");
    }

    #[tokio::test]
    async fn a_fatal_kind_ends_the_teardown_at_once() {
        let aws = clients();
        let progress = |_: String| {};
        let teardown = Teardown::new(
            &aws,
            Backoff::new(Duration::ZERO, Duration::ZERO, Duration::ZERO),
            &progress,
        );
        let err = teardown
            .delete(&[found(FATAL, "denied-b", ""), found(QUICK, "ok-b", "")])
            .await
            .unwrap_err();
        assert!(err.is("AccessDenied"), "{err}");
        assert!(
            !lock(&TRIES).contains_key("ok-b"),
            "nothing after it was tried"
        );
        // Not found is no failure, fatal or not.
        let swept = teardown
            .delete(&[found(FATAL, "gone-b", "")])
            .await
            .unwrap();
        assert_eq!(swept.deleted, 1);
    }
}
