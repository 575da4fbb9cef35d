//! The pool's messages on the fabric (JSON payloads), and their parsers.
//!
//! | topic                 | written by        | read by               | payload        |
//! |-----------------------|-------------------|-----------------------|----------------|
//! | `pool.NAME.tasks`     | submitters, pool  | workers (one group)   | [`Task`]       |
//! | `pool.NAME.outcomes`  | workers           | the pool              | [`Outcome`]    |
//! | `pool.NAME.results`   | the pool, once per key | users            | [`TaskResult`] |
//! | `pool.NAME.events`    | workers, the pool | anyone                | [`Event`]      |
//! | `pool.NAME.control`   | the CLI, the pool | workers, the pool     | [`Control`]    |
//!
//! Every parser here reads bytes from the network: it returns a clear error
//! for anything malformed or over its limit and never panics (property
//! tests below; fuzz target `pool_messages`).

use crate::supervisor::PoolEvent;
use serde::{Deserialize, Serialize};

/// Largest message the parsers accept, bytes.
pub const MESSAGE_MAX_BYTES: usize = 4 << 20;
/// Longest task key, bytes.
pub const KEY_MAX_BYTES: usize = 256;
/// Largest state of a `stateful` task, bytes.
pub const STATEFUL_MAX_BYTES: u64 = 256 << 20;
/// Most output a worker keeps of one task, bytes (the rest is cut, and the
/// result says so).
pub const OUTPUT_MAX_BYTES: usize = 64 << 10;

/// What a task does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum TaskKind {
    /// Run a program; its stdout is the output, a non-zero exit a failure.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// Kill it after this long (a failure).
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Return `data` (an empty task, for measuring dispatch).
    Echo {
        /// The output.
        #[serde(default)]
        data: String,
    },
    /// Sleep, then succeed.
    Sleep {
        /// How long.
        ms: u64,
    },
    /// A synthetic long-running task with a large, changing state that can
    /// be moved between workers while it runs (live migration): `bytes` of
    /// state in pages of `page` bytes, 4 KiB written every `write_every_ms`,
    /// for `run_ms` of running in all (wherever it runs).
    Stateful {
        /// State size, bytes (at most 256 MiB).
        bytes: u64,
        /// Page size, bytes.
        page: u64,
        /// Time between writes, ms.
        write_every_ms: u64,
        /// Running time in all, ms (at most a day).
        run_ms: u64,
    },
    /// A task kind built into the worker program (`diaspora pool worker`
    /// knows `ptycho.reconstruct` and `ptycho.train`), with its arguments.
    Builtin {
        /// Its name.
        name: String,
        /// Its arguments (JSON).
        #[serde(default)]
        args: serde_json::Value,
    },
}

/// One task. (Unknown fields are ignored: serde cannot deny them beside a
/// flattened kind; an unknown kind is an error.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Idempotency key: a task re-submitted or retried under the same key
    /// yields one result.
    pub key: String,
    /// What to do.
    #[serde(flatten)]
    pub kind: TaskKind,
    /// The items it reads (`topic/partition/offset`), for provenance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// Attempt number (0 = first), set by the pool on a retry.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// A retry runs no earlier than this (µs since the epoch; 0 = at once).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub not_before_us: i64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

/// One attempt's outcome, from the worker that ran it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Task key.
    pub key: String,
    /// Attempt the worker ran.
    pub attempt: u32,
    /// Worker id.
    pub worker: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// Its output (at most [`OUTPUT_MAX_BYTES`]).
    pub output: String,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// A failure no retry can fix (a malformed task).
    #[serde(default)]
    pub permanent: bool,
    /// The task, on a failure (what a retry re-publishes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// The task's inputs.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Start and end, µs since the epoch.
    pub started_us: i64,
    /// End.
    pub finished_us: i64,
}

/// A task's final result: one per key, written by the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    /// Task key.
    pub key: String,
    /// Succeeded, or failed for good.
    pub ok: bool,
    /// Output of the successful attempt (or the last failed one).
    pub output: String,
    /// Why it failed for good.
    #[serde(default)]
    pub error: Option<String>,
    /// Attempts charged to it.
    pub attempts: u32,
    /// Worker of the final attempt (empty when none ran).
    pub worker: String,
}

/// A worker's or the pool's event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Event {
    /// A worker is alive and holds these tasks.
    Heartbeat {
        /// Worker id.
        worker: String,
        /// Task keys in hand.
        in_flight: Vec<String>,
        /// The attempt of each task in hand (parallel to `in_flight`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attempts: Vec<u32>,
        /// When it took each task in hand, µs since the epoch (parallel to
        /// `in_flight`): of two workers handed the same task by a
        /// rebalance, the one that took it first keeps it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        since_us: Vec<i64>,
        /// Of those, the ones whose state can be moved (live migration).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        migratable: Vec<String>,
        /// Its OS process id (for twins and people).
        pid: u32,
        /// Tasks it was handed but let another worker run (a claim it
        /// lost): it dropped them from `in_flight` without finishing
        /// them, so a re-delivered copy must not be taken as done.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        yielded: Vec<String>,
    },
    /// Something the supervisor saw or did.
    Pool {
        /// The event.
        event: PoolEvent,
    },
    /// A task failed and will run again.
    TaskRetried {
        /// Key.
        key: String,
        /// The next attempt.
        attempt: u32,
        /// Why.
        reason: String,
    },
    /// A task's retries are spent.
    TaskFailed {
        /// Key.
        key: String,
        /// Attempts charged.
        attempts: u32,
        /// The last error.
        error: String,
    },
    /// A duplicate result was dropped (a retried task that had succeeded).
    DuplicateDropped {
        /// Key.
        key: String,
        /// Worker whose result was dropped.
        worker: String,
    },
    /// A running task moved to another worker.
    TaskMigrated {
        /// Key.
        key: String,
        /// Source worker.
        from: String,
        /// Target worker.
        to: String,
        /// What the migration did.
        report: crate::migrate::MigrationReport,
        /// CRC32C of the state at the switch-over (the target's state must
        /// equal it when it resumes).
        checksum: u32,
    },
    /// A migration did not happen.
    MigrationFailed {
        /// Key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The pool's state, every second.
    Status(Status),
}

/// A snapshot of the pool, published every second on the events topic.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Status {
    /// Pool name.
    pub pool: String,
    /// Time, µs since the epoch.
    pub at_us: i64,
    /// Per site, spec order.
    pub sites: Vec<SiteStatus>,
    /// Tasks waiting (the workers' group lag).
    pub backlog: u64,
    /// Results delivered since the pool started.
    pub results: u64,
    /// Tasks failed for good since the pool started.
    pub failed: u64,
    /// Retries scheduled since the pool started.
    pub retries: u64,
    /// Duplicate results dropped since the pool started.
    pub duplicates: u64,
    /// Workers lost since the pool started.
    pub lost: u64,
    /// Workers launched since the pool started.
    pub launched: u64,
    /// Task runs recorded as provenance activities.
    #[serde(default)]
    pub provenance_recorded: u64,
    /// Task runs not recorded (queue full or a store error).
    #[serde(default)]
    pub provenance_dropped: u64,
}

/// One site in a [`Status`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SiteStatus {
    /// Name.
    pub name: String,
    /// Provider.
    pub provider: String,
    /// Reachable.
    pub reachable: bool,
    /// Drained by command.
    pub drained: bool,
    /// Workers active (queued, starting, live).
    pub active: u32,
    /// Of those, live and idle.
    pub idle: u32,
    /// Workers draining.
    pub draining: u32,
    /// min and max.
    pub min: u32,
    /// max.
    pub max: u32,
}

/// A command to workers or the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type", deny_unknown_fields)]
pub enum Control {
    /// Worker `worker` takes no new task, finishes what it holds and exits.
    DrainWorker {
        /// Worker id.
        worker: String,
    },
    /// The pool drains site `site` (no new workers there; its workers go).
    DrainSite {
        /// Site.
        site: String,
    },
    /// The pool lets site `site` take workers again.
    UndrainSite {
        /// Site.
        site: String,
    },
    /// Workers skip task `key` wherever it comes round (it is finished).
    Skip {
        /// Key.
        key: String,
    },
    /// The pool moves running task `key` to a worker at site `to`.
    Migrate {
        /// Key.
        key: String,
        /// Target site.
        to: String,
    },
    /// Worker `worker` sends running task `key`'s state as migration `id`
    /// to worker `to`.
    MigrateOut {
        /// Key.
        key: String,
        /// Migration id.
        id: String,
        /// Source worker.
        worker: String,
        /// Target worker.
        to: String,
    },
    /// Worker `worker` takes task `task` over from worker `from` by
    /// migration `id`.
    MigrateIn {
        /// The task.
        task: Task,
        /// Migration id.
        id: String,
        /// Target worker.
        worker: String,
        /// Source worker.
        from: String,
    },
}

/// A malformed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {detail}")]
pub struct MessageError {
    /// Which message.
    pub what: &'static str,
    /// What is wrong.
    pub detail: String,
}

fn parse<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, MessageError> {
    if bytes.len() > MESSAGE_MAX_BYTES {
        return Err(MessageError {
            what,
            detail: format!(
                "{} bytes, over the {MESSAGE_MAX_BYTES}-byte limit",
                bytes.len()
            ),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| MessageError {
        what,
        detail: e.to_string(),
    })
}

fn check_key(what: &'static str, key: &str) -> Result<(), MessageError> {
    if key.is_empty() || key.len() > KEY_MAX_BYTES || key.chars().any(char::is_control) {
        return Err(MessageError {
            what,
            detail: format!(
                "task key must be 1–{KEY_MAX_BYTES} bytes without control characters, got {} bytes",
                key.len()
            ),
        });
    }
    Ok(())
}

impl Task {
    /// Parses a task.
    pub fn parse(bytes: &[u8]) -> Result<Task, MessageError> {
        let t: Task = parse("task", bytes)?;
        check_key("task", &t.key)?;
        if let TaskKind::Command { argv, .. } = &t.kind {
            if argv.is_empty() || argv[0].is_empty() {
                return Err(MessageError {
                    what: "task",
                    detail: "command task with an empty argv".into(),
                });
            }
        }
        if let TaskKind::Stateful {
            bytes,
            page,
            run_ms,
            ..
        } = &t.kind
        {
            if *bytes < 16
                || *bytes > STATEFUL_MAX_BYTES
                || *page == 0
                || page > bytes
                || *run_ms > 86_400_000
            {
                return Err(MessageError {
                    what: "task",
                    detail: format!(
                        "stateful task of {bytes} bytes in pages of {page} running {run_ms} ms: \
                         16 B..{STATEFUL_MAX_BYTES} B, 0 < page ≤ bytes, at most a day"
                    ),
                });
            }
        }
        if let TaskKind::Builtin { name, .. } = &t.kind {
            if name.is_empty() {
                return Err(MessageError {
                    what: "task",
                    detail: "built-in task without a name".into(),
                });
            }
        }
        Ok(t)
    }
}

impl Outcome {
    /// Parses an outcome.
    pub fn parse(bytes: &[u8]) -> Result<Outcome, MessageError> {
        let o: Outcome = parse("outcome", bytes)?;
        check_key("outcome", &o.key)?;
        Ok(o)
    }
}

impl TaskResult {
    /// Parses a result.
    pub fn parse(bytes: &[u8]) -> Result<TaskResult, MessageError> {
        let r: TaskResult = parse("result", bytes)?;
        check_key("result", &r.key)?;
        Ok(r)
    }
}

impl Event {
    /// Parses an event.
    pub fn parse(bytes: &[u8]) -> Result<Event, MessageError> {
        parse("event", bytes)
    }
}

impl Control {
    /// Parses a control command.
    pub fn parse(bytes: &[u8]) -> Result<Control, MessageError> {
        let c: Control = parse("control", bytes)?;
        if let Control::Skip { key } = &c {
            check_key("control", key)?;
        }
        Ok(c)
    }
}

/// JSON bytes of a message.
pub fn to_bytes<T: Serialize>(m: &T) -> Vec<u8> {
    serde_json::to_vec(m).expect("pool messages serialise")
}

/// Cuts `s` to at most `max` bytes on a character boundary; says whether it
/// cut.
pub fn truncate(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
    true
}

/// Runs every parser on `bytes`, the migration rounds' included (the fuzz
/// target's body).
pub fn fuzz_all(bytes: &[u8]) {
    let _ = Task::parse(bytes);
    let _ = Outcome::parse(bytes);
    let _ = TaskResult::parse(bytes);
    let _ = Event::parse(bytes);
    let _ = Control::parse(bytes);
    let _ = crate::migrate::decode_round(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tasks_read_as_written_and_bad_ones_are_named() {
        let t = Task {
            key: "scan-7".into(),
            kind: TaskKind::Command {
                argv: vec!["echo".into(), "hi".into()],
                timeout_ms: Some(1000),
            },
            inputs: vec!["frames/0/7".into()],
            attempt: 0,
            not_before_us: 0,
        };
        let b = to_bytes(&t);
        assert_eq!(
            String::from_utf8_lossy(&b),
            r#"{"key":"scan-7","kind":"command","argv":["echo","hi"],"timeout_ms":1000,"inputs":["frames/0/7"]}"#
        );
        assert_eq!(Task::parse(&b).unwrap(), t);
        let e = Task::parse(br#"{"key":"","kind":"echo"}"#).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("malformed task: task key must be"),
            "{e}"
        );
        let e = Task::parse(br#"{"key":"k","kind":"command","argv":[]}"#).unwrap_err();
        assert!(e.to_string().contains("empty argv"), "{e}");
        let e = Task::parse(br#"{"key":"k","kind":"reboot"}"#).unwrap_err();
        assert!(e.to_string().contains("reboot"), "{e}");
        let big = vec![b' '; MESSAGE_MAX_BYTES + 1];
        assert!(Task::parse(&big)
            .unwrap_err()
            .to_string()
            .contains("over the"));
    }

    #[test]
    fn events_and_controls_round_trip() {
        use crate::workers::{LossReason, WorkerEvent};
        let evs = [
            Event::Heartbeat {
                worker: "a-1".into(),
                in_flight: vec!["k".into()],
                attempts: vec![1],
                since_us: vec![7],
                migratable: vec![],
                pid: 42,
                yielded: vec!["y".into()],
            },
            Event::Pool {
                event: PoolEvent::Worker(WorkerEvent::Lost {
                    worker: "a-1".into(),
                    site: "a".into(),
                    job: "17".into(),
                    reason: LossReason::HeartbeatTimeout,
                    in_flight: vec!["k".into()],
                    charge: true,
                }),
            },
            Event::Status(Status {
                pool: "p".into(),
                backlog: 3,
                ..Default::default()
            }),
        ];
        for e in evs {
            assert_eq!(Event::parse(&to_bytes(&e)).unwrap(), e);
        }
        let c = Control::DrainSite { site: "hpc".into() };
        assert_eq!(
            String::from_utf8(to_bytes(&c)).unwrap(),
            r#"{"type":"drain-site","site":"hpc"}"#
        );
        assert_eq!(Control::parse(&to_bytes(&c)).unwrap(), c);
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        let mut s = "aé".repeat(3);
        assert!(truncate(&mut s, 4));
        assert_eq!(s, "aéa");
        assert!(!truncate(&mut s, 100));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            fuzz_all(&bytes);
        }

        #[test]
        fn json_shaped_garbage_never_panics(s in r#"\{("[a-z_]{1,8}":("[a-z-]{0,8}"|[0-9]{1,4}|\[\]|null|true),?){0,6}\}"#) {
            fuzz_all(s.as_bytes());
        }

        #[test]
        fn tasks_round_trip(key in "[a-zA-Z0-9._:/-]{1,64}", ms in any::<u64>(), attempt in 0u32..10, data in ".{0,40}") {
            for kind in [TaskKind::Sleep { ms }, TaskKind::Echo { data: data.clone() }] {
                let t = Task { key: key.clone(), kind, inputs: vec![], attempt, not_before_us: ms as i64 / 2 };
                prop_assert_eq!(Task::parse(&to_bytes(&t)).unwrap(), t);
            }
        }
    }
}
