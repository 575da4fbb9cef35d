//! Task streams (`[[tasks]]`): `diaspora produce --file tasks.jsonl --rate
//! R --acks acks.jsonl --partition P` onto a pool's tasks topic. Each line
//! is a task message as `diaspora pool submit` would publish it
//! (`{"key":"NAME-n","kind":"sleep","ms":…}`).
//!
//! `pool submit` spreads tasks over the topic's partitions by key, and each
//! worker owns some partitions; `diaspora produce` without keys would fill
//! one partition at a time, leaving all but one worker idle. So a stream is
//! one producer per partition (hosts `NAME-p0`, `NAME-p1`, …): producer `p`
//! of `P` sends tasks `p`, `p + P`, `p + 2P`, … at `rate / P` each, and its
//! item `i` (acknowledgement id `i`) is task `p + i·P`. The
//! acknowledgements say when each key was submitted. The run lasts until
//! every producer has exited.

use super::pool::tasks_topic;
use super::{HostAt, HostCommand, HostKind, Records};
use crate::cli_args::{Invocation, ProduceLines};
use crate::scenario::TaskStream;
use crate::{Scenario, TwinError};

/// The task stream kind.
pub struct Tasks;

/// The key of task `n` of stream `prefix`.
pub fn task_key(prefix: &str, n: u64) -> String {
    format!("{prefix}-{n}")
}

/// Which tasks one producer of a stream sends: `first`, `first + stride`,
/// … below `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskShare {
    /// Its partition, and its first task.
    pub first: u64,
    /// The stream's partitions: the step between its tasks.
    pub stride: u64,
    /// The stream's tasks.
    pub total: u64,
}

impl TaskShare {
    /// Its tasks, in send order.
    pub fn tasks(&self) -> impl Iterator<Item = u64> {
        (self.first..self.total).step_by(self.stride.max(1) as usize)
    }

    /// The task its item `i` is.
    pub fn task(&self, i: u64) -> u64 {
        self.first + i * self.stride
    }
}

/// The stream's task messages for one producer, one JSON line each.
///
/// ```
/// use diaspora_twin::hosts::tasks::{task_lines, TaskShare};
/// let share = TaskShare { first: 1, stride: 2, total: 4 };
/// assert_eq!(
///     task_lines("t", share, 50),
///     "{\"key\":\"t-1\",\"kind\":\"sleep\",\"ms\":50}\n{\"key\":\"t-3\",\"kind\":\"sleep\",\"ms\":50}\n"
/// );
/// ```
pub fn task_lines(prefix: &str, share: TaskShare, sleep_ms: u64) -> String {
    share
        .tasks()
        .map(|n| {
            let task =
                serde_json::json!({"key": task_key(prefix, n), "kind": "sleep", "ms": sleep_ms});
            format!("{task}\n")
        })
        .collect()
}

/// Tasks a stream submits in `duration_s`.
pub fn task_count(t: &TaskStream, duration_s: f64) -> u64 {
    (t.rate * duration_s).ceil() as u64
}

/// Every producer of every stream: (stream index, its share's first task
/// = partition, partitions), in host order.
fn producers(scenario: &Scenario) -> Vec<(usize, u64, u64)> {
    let mut out = Vec::new();
    for (i, t) in scenario.tasks.iter().enumerate() {
        let parts = scenario
            .pools
            .iter()
            .find(|p| p.name == t.pool)
            .and_then(|p| p.shape().ok())
            .map_or(1, |s| u64::from(s.task_partitions()));
        out.extend((0..parts).map(|p| (i, p, parts)));
    }
    out
}

impl HostKind for Tasks {
    fn command(&self, at: HostAt<'_>) -> Result<HostCommand, TwinError> {
        let (scenario, env) = (at.scenario, at.env);
        let (i, partition, parts) = producers(scenario)[at.index];
        let t = &scenario.tasks[i];
        let pool = scenario
            .pools
            .iter()
            .find(|p| p.name == t.pool)
            .expect("validated");
        let dir = env.host_dir(&format!("{}-p{partition}", t.name));
        let (file, acks) = (dir.join("tasks.jsonl"), dir.join("acks.jsonl"));
        let share = TaskShare {
            first: partition,
            stride: parts,
            total: task_count(t, scenario.duration_s),
        };
        Ok(HostCommand {
            invocation: Invocation::ProduceLines(ProduceLines {
                topic: tasks_topic(&t.pool),
                file: file.clone(),
                partition: partition as u32,
                rate: t.rate / parts as f64,
                acks: acks.clone(),
                addr: env.addr_of(scenario, &pool.node, &t.via)?,
                ca: env.node(&pool.node).ca.clone(),
            }),
            stdout: Some(dir.join("summary.json")),
            files: vec![(file, task_lines(&t.name, share, t.sleep_ms))],
            records: Records::Tasks {
                pool: t.pool.clone(),
                acks,
                key_prefix: t.name.clone(),
                share,
            },
        })
    }

    fn completes(&self) -> bool {
        true
    }

    fn plan(&self, scenario: &Scenario) -> Vec<String> {
        producers(scenario)
            .into_iter()
            .map(|(i, p, _)| format!("{}-p{p}", scenario.tasks[i].name))
            .collect()
    }
}
