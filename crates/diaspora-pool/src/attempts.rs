//! The attempt book: for each task (by idempotency key), how many attempts
//! were charged, whether one succeeded, and what to do when the task comes
//! round again — pure and bounded.
//!
//! A task can come round again because a worker failed it (charged), because
//! the worker holding it was lost (charged, unless the loss was a walltime
//! drain or a retirement — see [`crate::workers`]), or because the fabric
//! re-delivered it after a rebalance. A task whose key already has a
//! success is recognised ([`Verdict::AlreadyDone`]) and its result is not
//! delivered twice ([`AttemptBook::succeeded`] returns `false` for every
//! success after the first).
//!
//! Bounded: at most `capacity` keys are remembered; when full, the oldest
//! *finished* key (succeeded or failed for good) is forgotten first, and
//! when every key is still open, [`AttemptBook::started`] refuses with
//! [`BookFull`] rather than forget a task that is still running.

use crate::spec::TaskSpec;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// What to do with a task that comes round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Run it; this is attempt `attempt` (0 = the first), after waiting
    /// `backoff`.
    Run {
        /// Attempt number.
        attempt: u32,
        /// Back-off before running it.
        backoff: Duration,
    },
    /// A success is already recorded: skip it, deliver nothing.
    AlreadyDone,
    /// Its retries are spent: record it as failed for good.
    FailedForGood {
        /// Attempts charged.
        attempts: u32,
    },
}

#[derive(Debug, Clone, Default)]
struct Entry {
    charged: u32,
    running: Option<String>,
    succeeded: bool,
    failed_for_good: bool,
}

/// The book is full of open tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("attempt book full: {capacity} tasks are open at once (raise the pool's task limit or add workers)")]
pub struct BookFull {
    /// The limit.
    pub capacity: usize,
}

/// The book.
#[derive(Debug, Clone)]
pub struct AttemptBook {
    spec: TaskSpec,
    capacity: usize,
    entries: HashMap<String, Entry>,
    finished: VecDeque<String>,
}

impl AttemptBook {
    /// A book for these retry settings, remembering at most `capacity` keys.
    pub fn new(spec: TaskSpec, capacity: usize) -> AttemptBook {
        AttemptBook {
            spec,
            capacity: capacity.max(1),
            entries: HashMap::new(),
            finished: VecDeque::new(),
        }
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What to do with task `key` now.
    pub fn verdict(&self, key: &str) -> Verdict {
        match self.entries.get(key) {
            None => Verdict::Run {
                attempt: 0,
                backoff: Duration::ZERO,
            },
            Some(e) if e.succeeded => Verdict::AlreadyDone,
            Some(e) if e.failed_for_good || e.charged > self.spec.retries => {
                Verdict::FailedForGood {
                    attempts: e.charged,
                }
            }
            Some(e) => Verdict::Run {
                attempt: e.charged,
                backoff: self.spec.backoff(e.charged),
            },
        }
    }

    /// Worker `worker` starts task `key`.
    pub fn started(&mut self, key: &str, worker: &str) -> Result<(), BookFull> {
        if !self.entries.contains_key(key) {
            self.make_room()?;
        }
        self.entries.entry(key.to_string()).or_default().running = Some(worker.to_string());
        Ok(())
    }

    /// The attempt at `key` failed (charged). Returns the verdict for the
    /// next round.
    pub fn failed(&mut self, key: &str) -> Verdict {
        let e = self.entries.entry(key.to_string()).or_default();
        e.running = None;
        if !e.succeeded {
            e.charged += 1;
        }
        let v = self.verdict(key);
        if let Verdict::FailedForGood { .. } = v {
            self.finish(key, false);
        }
        v
    }

    /// The worker holding `key` was lost; `charge` says whether that costs
    /// the task an attempt.
    pub fn lost(&mut self, key: &str, charge: bool) -> Verdict {
        match self.entries.get_mut(key) {
            Some(e) if !e.succeeded => {
                e.running = None;
                if charge {
                    e.charged += 1;
                }
            }
            _ => {}
        }
        let v = self.verdict(key);
        if let Verdict::FailedForGood { .. } = v {
            self.finish(key, false);
        }
        v
    }

    /// A success for `key`: `true` if it is the first (deliver the result),
    /// `false` for a duplicate (drop it).
    pub fn succeeded(&mut self, key: &str) -> bool {
        if let Some(e) = self.entries.get(key) {
            if e.succeeded {
                return false;
            }
        } else if self.make_room().is_err() {
            // Every remembered key is open; remember this success anyway
            // (one over capacity) rather than risk delivering it twice.
        }
        self.finish(key, true);
        true
    }

    /// Marks `key` failed for good at once (a failure no retry can fix, or a
    /// failed result read back after a restart).
    pub fn fail_for_good(&mut self, key: &str) -> Verdict {
        if self.entries.get(key).is_some_and(|e| e.succeeded) {
            return Verdict::AlreadyDone;
        }
        if !self.entries.contains_key(key) {
            let _ = self.make_room();
        }
        let e = self.entries.entry(key.to_string()).or_default();
        if !e.failed_for_good {
            e.charged += 1;
        }
        self.finish(key, false);
        self.verdict(key)
    }

    /// Attempts charged to `key` so far.
    pub fn charged(&self, key: &str) -> u32 {
        self.entries.get(key).map_or(0, |e| e.charged)
    }

    /// The worker holding `key`, if it is running.
    pub fn running_on(&self, key: &str) -> Option<&str> {
        self.entries.get(key).and_then(|e| e.running.as_deref())
    }

    fn finish(&mut self, key: &str, success: bool) {
        let e = self.entries.entry(key.to_string()).or_default();
        let was_finished = e.succeeded || e.failed_for_good;
        e.running = None;
        if success {
            e.succeeded = true;
        } else {
            e.failed_for_good = true;
        }
        if !was_finished {
            self.finished.push_back(key.to_string());
        }
    }

    fn make_room(&mut self) -> Result<(), BookFull> {
        while self.entries.len() >= self.capacity {
            match self.finished.pop_front() {
                Some(k) => {
                    self.entries.remove(&k);
                }
                None => {
                    return Err(BookFull {
                        capacity: self.capacity,
                    })
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn book(retries: u32, cap: usize) -> AttemptBook {
        AttemptBook::new(
            TaskSpec {
                retries,
                backoff_ms: 100,
                backoff_max_ms: 1000,
            },
            cap,
        )
    }

    #[test]
    fn retries_back_off_then_fail_for_good() {
        let mut b = book(2, 10);
        assert_eq!(
            b.verdict("t"),
            Verdict::Run {
                attempt: 0,
                backoff: Duration::ZERO
            }
        );
        b.started("t", "w1").unwrap();
        assert_eq!(b.running_on("t"), Some("w1"));
        assert_eq!(
            b.failed("t"),
            Verdict::Run {
                attempt: 1,
                backoff: Duration::from_millis(100)
            }
        );
        b.started("t", "w2").unwrap();
        assert_eq!(
            b.lost("t", true),
            Verdict::Run {
                attempt: 2,
                backoff: Duration::from_millis(200)
            }
        );
        b.started("t", "w3").unwrap();
        assert_eq!(b.failed("t"), Verdict::FailedForGood { attempts: 3 });
        assert_eq!(b.verdict("t"), Verdict::FailedForGood { attempts: 3 });
    }

    #[test]
    fn an_uncharged_loss_costs_nothing() {
        let mut b = book(0, 10);
        b.started("t", "w1").unwrap();
        for _ in 0..5 {
            assert_eq!(
                b.lost("t", false),
                Verdict::Run {
                    attempt: 0,
                    backoff: Duration::ZERO
                }
            );
        }
        assert_eq!(b.lost("t", true), Verdict::FailedForGood { attempts: 1 });
    }

    #[test]
    fn a_retried_task_that_already_succeeded_is_recognised_and_delivered_once() {
        let mut b = book(3, 10);
        b.started("t", "w1").unwrap();
        // w1 finishes and publishes, then is lost before it is known: the
        // task is re-run elsewhere and succeeds again.
        assert!(b.succeeded("t"));
        assert_eq!(b.lost("t", true), Verdict::AlreadyDone);
        assert_eq!(b.verdict("t"), Verdict::AlreadyDone);
        assert!(!b.succeeded("t"), "the second success is a duplicate");
    }

    #[test]
    fn the_book_forgets_finished_tasks_first_and_refuses_when_all_are_open() {
        let mut b = book(1, 2);
        b.started("a", "w").unwrap();
        assert!(b.succeeded("a"));
        b.started("b", "w").unwrap();
        b.started("c", "w").unwrap(); // forgets "a"
        assert_eq!(b.len(), 2);
        assert_eq!(b.started("d", "w"), Err(BookFull { capacity: 2 }));
        let msg = b.started("zz", "w").unwrap_err().to_string();
        assert!(msg.contains("2 tasks are open"), "{msg}");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Start(u8),
        Fail(u8),
        Lost(u8, bool),
        Succeed(u8),
    }

    proptest! {
        /// Against a model: a key's success is delivered at most once, a
        /// task never runs past its budget, uncharged losses cost nothing.
        #[test]
        fn matches_a_model(ops in prop::collection::vec(
            prop_oneof![
                (0u8..6).prop_map(Op::Start),
                (0u8..6).prop_map(Op::Fail),
                (0u8..6, any::<bool>()).prop_map(|(k, c)| Op::Lost(k, c)),
                (0u8..6).prop_map(Op::Succeed),
            ],
            0..200,
        ), retries in 0u32..4) {
            let mut b = book(retries, 1000);
            let mut delivered = std::collections::HashSet::new();
            let mut charged = std::collections::HashMap::<u8, u32>::new();
            for op in ops {
                match op {
                    Op::Start(k) => { b.started(&k.to_string(), "w").unwrap(); }
                    Op::Fail(k) => {
                        let done = delivered.contains(&k);
                        let v = b.failed(&k.to_string());
                        if !done { *charged.entry(k).or_default() += 1; }
                        let c = charged.get(&k).copied().unwrap_or(0);
                        if done { prop_assert_eq!(v, Verdict::AlreadyDone); }
                        else if c > retries { prop_assert_eq!(v, Verdict::FailedForGood { attempts: c }); }
                        else { prop_assert_eq!(v, Verdict::Run { attempt: c, backoff: b.spec.backoff(c) }); }
                    }
                    Op::Lost(k, charge) => {
                        let known = b.entries.contains_key(&k.to_string());
                        let v = b.lost(&k.to_string(), charge);
                        if known && charge && !delivered.contains(&k) {
                            *charged.entry(k).or_default() += 1;
                        }
                        if let Verdict::Run { attempt, .. } = v {
                            prop_assert_eq!(attempt, charged.get(&k).copied().unwrap_or(0));
                            prop_assert!(attempt <= retries);
                        }
                    }
                    Op::Succeed(k) => {
                        let first = b.succeeded(&k.to_string());
                        prop_assert_eq!(first, delivered.insert(k));
                    }
                }
            }
        }
    }
}
