//! What a trigger runner tells the world about itself: its counters and
//! state, published as JSON on [`crate::spec::STATUS_TOPIC`] (`trigger
//! list` and `trigger status` read them back), and the record of each
//! action run. The parser reads network bytes: it refuses anything
//! malformed or over [`STATUS_MAX_BYTES`] with a clear error and never
//! panics (property tests below; fuzz target `trigger_status`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Largest status message accepted, bytes.
pub const STATUS_MAX_BYTES: usize = 64 << 10;

/// A trigger's counters since its runner started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TriggerStats {
    /// Events read from the source.
    pub seen: u64,
    /// Events the filter matched.
    pub matched: u64,
    /// Matching events whose action succeeded.
    pub succeeded: u64,
    /// Matching events sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Action attempts in all.
    pub attempts: u64,
    /// Attempts that failed and were tried again.
    pub retries: u64,
    /// Commits of the trigger's position.
    pub commits: u64,
    /// The last failure of an attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Where a runner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Reading and acting.
    Running,
    /// Stopped as asked (signal, --max-events, --idle-s).
    Stopped,
    /// Stopped by an error it could not get past.
    Failed,
}

/// One status message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerStatus {
    /// The trigger.
    pub name: String,
    /// Its state.
    pub state: State,
    /// The source topic.
    pub source: String,
    /// The filter, canonical.
    pub filter: String,
    /// The action's kind.
    pub action: String,
    /// The dead-letter topic.
    pub dead_letter: String,
    /// The consumer group of its position.
    pub group: String,
    /// The positions last committed, per partition.
    #[serde(default)]
    pub committed: BTreeMap<u32, u64>,
    /// Counters.
    #[serde(default)]
    pub stats: TriggerStats,
    /// Why it failed (state `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The runner's process id.
    #[serde(default)]
    pub pid: u32,
    /// When the runner started, µs since the epoch.
    #[serde(default)]
    pub started_us: i64,
    /// When this was published, µs since the epoch.
    #[serde(default)]
    pub updated_us: i64,
}

impl TriggerStatus {
    /// Parses a status message.
    pub fn parse(bytes: &[u8]) -> Result<TriggerStatus, String> {
        if bytes.len() > STATUS_MAX_BYTES {
            return Err(format!(
                "a trigger status of {} bytes is over the {STATUS_MAX_BYTES} accepted",
                bytes.len()
            ));
        }
        let s: TriggerStatus =
            serde_json::from_slice(bytes).map_err(|e| format!("not a trigger status: {e}"))?;
        if s.name.is_empty() || s.name.len() > crate::spec::NAME_MAX {
            return Err(format!(
                "a trigger status whose name is {} bytes long",
                s.name.len()
            ));
        }
        Ok(s)
    }

    /// The newest status of each trigger among `messages` (in publication
    /// order), by name; malformed messages are counted, not fatal.
    pub fn latest<'a>(
        messages: impl IntoIterator<Item = &'a [u8]>,
    ) -> (BTreeMap<String, TriggerStatus>, u64) {
        let mut by_name = BTreeMap::new();
        let mut bad = 0;
        for m in messages {
            match TriggerStatus::parse(m) {
                Ok(s) => {
                    by_name.insert(s.name.clone(), s);
                }
                Err(_) => bad += 1,
            }
        }
        (by_name, bad)
    }

    /// One line for `trigger list`.
    pub fn line(&self) -> String {
        format!(
            "{:<24} {:<8} {} → {} [{}]: {} seen, {} matched, {} ok, {} dead-lettered, {} retries",
            self.name,
            match self.state {
                State::Running => "running",
                State::Stopped => "stopped",
                State::Failed => "FAILED",
            },
            self.source,
            self.action,
            self.filter,
            self.stats.seen,
            self.stats.matched,
            self.stats.succeeded,
            self.stats.dead_lettered,
            self.stats.retries
        )
    }
}

/// How the action on one event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// An attempt succeeded.
    Ok,
    /// Every attempt failed, or one failed for good: the event is on the
    /// dead-letter topic.
    DeadLettered,
}

/// The record of the action on one event (a JSON line of `trigger run`,
/// a provenance activity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The trigger.
    pub trigger: String,
    /// The event's idempotency key.
    pub key: String,
    /// Where the event is.
    pub source: String,
    /// The outcome.
    pub outcome: Outcome,
    /// Attempts it took.
    pub attempts: u32,
    /// What the last attempt said.
    pub detail: String,
    /// When the first attempt started and the last ended, µs since the epoch.
    pub started_us: i64,
    /// See `started_us`.
    pub ended_us: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn status(name: &str, seen: u64) -> TriggerStatus {
        TriggerStatus {
            name: name.into(),
            state: State::Running,
            source: "frames".into(),
            filter: "true".into(),
            action: "command".into(),
            dead_letter: "triggers.t.dlq".into(),
            group: "trigger.t".into(),
            committed: [(0, 5)].into(),
            stats: TriggerStats {
                seen,
                ..Default::default()
            },
            error: None,
            pid: 1,
            started_us: 2,
            updated_us: 3,
        }
    }

    #[test]
    fn the_newest_status_of_each_trigger_wins_and_junk_is_counted() {
        let msgs: Vec<Vec<u8>> = vec![
            serde_json::to_vec(&status("a", 1)).unwrap(),
            serde_json::to_vec(&status("b", 1)).unwrap(),
            b"{not json".to_vec(),
            serde_json::to_vec(&status("a", 9)).unwrap(),
            serde_json::to_vec(&status("", 9)).unwrap(),
        ];
        let (latest, bad) = TriggerStatus::latest(msgs.iter().map(Vec::as_slice));
        assert_eq!(bad, 2);
        assert_eq!(latest.len(), 2);
        assert_eq!(latest["a"].stats.seen, 9);
        assert!(latest["a"].line().contains("9 seen"));
    }

    #[test]
    fn oversized_messages_are_refused_before_parsing() {
        let big = vec![b' '; STATUS_MAX_BYTES + 1];
        assert!(TriggerStatus::parse(&big).unwrap_err().contains("over"));
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = TriggerStatus::parse(&bytes);
        }

        #[test]
        fn statuses_round_trip(name in "[a-z0-9._-]{1,40}", seen in any::<u64>(), err in proptest::option::of(".{0,40}")) {
            let mut s = status(&name, seen);
            s.error = err;
            let back = TriggerStatus::parse(&serde_json::to_vec(&s).unwrap()).unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn mangled_statuses_never_panic(cut in 0usize..400, flip in any::<u8>(), at in 0usize..400) {
            let mut b = serde_json::to_vec(&status("t", 3)).unwrap();
            b.truncate(cut.min(b.len()));
            if !b.is_empty() {
                let i = at % b.len();
                b[i] ^= flip;
            }
            let _ = TriggerStatus::parse(&b);
        }
    }
}
