//! What a compute pool did in a twin run, from what was recorded outside
//! it: its events and results topics (two recorder hosts, each item with
//! its producer's timestamp), the task streams' acknowledgements, and the
//! faults as the timeline applied them. Pure: records in, [`PoolFigures`]
//! out, so it is tested without processes.
//!
//! **Live workers** are followed through the pool's own events: a worker
//! is live from `joined` until `draining`, `lost` or `left`; none is live
//! while the pool host is killed (the pool that knew them is gone). The
//! pool's *minimum* is every site's `min` and `min_total` live.
//!
//! | measure | from | until |
//! |---|---|---|
//! | crash `recovered_s` | a worker's SIGKILL (`kill_child`) | the pool has noted it lost and is back at its minimum |
//! | outage `covered_s` | a site's link goes dark | the other sites' live workers number `min_total` |
//! | outage `restored_s` | the link comes back | the pool is back at its minimum, every site included |
//! | restart `level_s` | the pool host is started again | its backlog (tasks submitted, not yet answered) is no larger than the most it was in the 5 s before it was killed (at least 1; two pools compared are held to the larger of their two levels) |
//!
//! **Exactly once**: every task acknowledged on the tasks topic must have
//! one result, a successful one, and no result may name a task never
//! submitted; a recorder that reads an item twice does not count twice
//! (items are told apart by partition and offset).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::analysis::quantile;
use crate::error::RecordError;
use crate::scenario::PoolShape;
use crate::timeline::{Applied, AppliedKind};

/// One item as a recorder wrote it (`diaspora consume --json --payload`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RecordedItem {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// When its producer made it, µs since the Unix epoch.
    pub timestamp_us: i64,
    /// The payload, as text.
    #[serde(default)]
    pub payload: String,
}

/// A recorder's items, in the order read, each once. Only complete lines
/// count (a recorder stopped mid-line leaves a torn last line); a complete
/// line that is not an item is an error naming it.
pub fn recorded_items(text: &str) -> Result<Vec<RecordedItem>, RecordError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if !line.ends_with('\n') || line.trim().is_empty() {
            continue;
        }
        let item: RecordedItem = serde_json::from_str(line).map_err(|source| RecordError {
            line: i + 1,
            source,
        })?;
        if seen.insert((item.partition, item.offset)) {
            out.push(item);
        }
    }
    Ok(out)
}

/// What the analysis reads of one pool event (`pool.NAME.events`).
#[derive(Debug, Clone, PartialEq)]
pub enum PoolEvent {
    /// A worker's heartbeat.
    Heartbeat {
        /// Worker id.
        worker: String,
        /// Its process id.
        pid: u32,
    },
    /// A worker's first heartbeat, as the pool saw it.
    Joined {
        /// Worker id.
        worker: String,
        /// Its site.
        site: String,
    },
    /// A worker stopped counting: `draining`, `lost` or `left`.
    Gone {
        /// Worker id.
        worker: String,
        /// `draining`, `lost` or `left`.
        how: String,
        /// Why it was lost (`job-ended`, `heartbeat-timeout`, …).
        reason: Option<String>,
    },
    /// Workers launched.
    Launched {
        /// Site.
        site: String,
        /// How many.
        workers: u64,
        /// Why (`site-minimum`, `backlog`, …).
        reason: String,
    },
    /// A site became reachable or unreachable.
    SiteReachable {
        /// Site.
        site: String,
        /// Now.
        reachable: bool,
    },
    /// A task failed and runs again.
    TaskRetried,
    /// A duplicate result was dropped.
    DuplicateDropped,
    /// Anything else (status, task failures, …).
    Other,
}

/// Reads one event payload; what it does not know is [`PoolEvent::Other`].
///
/// ```
/// use diaspora_twin::pool_analysis::{parse_event, PoolEvent};
/// let e = parse_event(r#"{"type":"pool","event":{"kind":"worker","event":"joined","worker":"a-1","site":"a","start_ms":420}}"#);
/// assert_eq!(e, PoolEvent::Joined { worker: "a-1".into(), site: "a".into() });
/// assert_eq!(parse_event("not json"), PoolEvent::Other);
/// ```
pub fn parse_event(payload: &str) -> PoolEvent {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(payload) else {
        return PoolEvent::Other;
    };
    let s = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
    match v.get("type").and_then(|t| t.as_str()) {
        Some("heartbeat") => match (s(&v, "worker"), v.get("pid").and_then(|p| p.as_u64())) {
            (Some(worker), Some(pid)) => PoolEvent::Heartbeat {
                worker,
                pid: pid as u32,
            },
            _ => PoolEvent::Other,
        },
        Some("task-retried") => PoolEvent::TaskRetried,
        Some("duplicate-dropped") => PoolEvent::DuplicateDropped,
        Some("pool") => {
            let e = &v["event"];
            match (e.get("kind").and_then(|k| k.as_str()), s(e, "worker")) {
                (Some("worker"), Some(worker)) => match s(e, "event").as_deref() {
                    Some("joined") => match s(e, "site") {
                        Some(site) => PoolEvent::Joined { worker, site },
                        None => PoolEvent::Other,
                    },
                    Some(how @ ("draining" | "lost" | "left")) => PoolEvent::Gone {
                        worker,
                        how: how.to_string(),
                        reason: (how == "lost").then(|| s(e, "reason")).flatten(),
                    },
                    _ => PoolEvent::Other,
                },
                (Some("launched"), _) => PoolEvent::Launched {
                    site: s(e, "site").unwrap_or_default(),
                    workers: e["workers"].as_array().map_or(0, |w| w.len() as u64),
                    reason: s(e, "reason").unwrap_or_default(),
                },
                (Some("site-reachable"), _) => match (s(e, "site"), e["reachable"].as_bool()) {
                    (Some(site), Some(reachable)) => PoolEvent::SiteReachable { site, reachable },
                    _ => PoolEvent::Other,
                },
                _ => PoolEvent::Other,
            }
        }
        _ => PoolEvent::Other,
    }
}

/// One result (`pool.NAME.results`), as the analysis reads it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskResult {
    /// Task key.
    pub key: String,
    /// Succeeded.
    pub ok: bool,
    /// Attempts charged.
    #[serde(default)]
    pub attempts: u32,
}

/// The tasks on a pool's tasks topic, as recorded: (key, submitted at µs),
/// one per submission (a retry is submitted again under its key).
///
/// ```
/// use diaspora_twin::pool_analysis::{tasks_of, RecordedItem};
/// let item = |o: u64, p: &str| RecordedItem { partition: 0, offset: o, timestamp_us: 5, payload: p.into() };
/// let t = tasks_of(&[item(0, r#"{"key":"scan-001","attempt":0}"#), item(1, "not json")]);
/// assert_eq!(t, vec![("scan-001".to_string(), 5)]);
/// ```
pub fn tasks_of(items: &[RecordedItem]) -> Vec<(String, i64)> {
    items
        .iter()
        .filter_map(|i| {
            let v: serde_json::Value = serde_json::from_str(&i.payload).ok()?;
            Some((v["key"].as_str()?.to_string(), i.timestamp_us))
        })
        .collect()
}

/// The results among a recorder's items, with their times; payloads that
/// are not results are skipped.
pub fn results_of(items: &[RecordedItem]) -> Vec<(i64, TaskResult)> {
    items
        .iter()
        .filter_map(|i| Some((i.timestamp_us, serde_json::from_str(&i.payload).ok()?)))
        .collect()
}

/// What one pool is judged on.
#[derive(Debug, Clone)]
pub struct PoolInput<'a> {
    /// The pool host's name.
    pub host: &'a str,
    /// Its spec's minimums and sites.
    pub shape: &'a PoolShape,
    /// Its events in topic order, with their times (µs since the epoch).
    pub events: Vec<(i64, PoolEvent)>,
    /// Its results, with their times.
    pub results: Vec<(i64, TaskResult)>,
    /// The tasks submitted to it: key, when acknowledged.
    pub submitted: Vec<(String, i64)>,
    /// The run's faults as applied.
    pub applied: &'a [Applied],
    /// The run's start, µs since the epoch.
    pub t0_us: i64,
    /// The least level a restarted pool's backlog is measured against (1,
    /// or a common level when two pools are compared).
    pub level_backlog_min: u64,
}

/// A worker SIGKILLed, and how the pool got over it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CrashFigures {
    /// When, seconds from the start.
    pub at_s: f64,
    /// The process killed (none: the pool had no worker).
    pub pid: Option<u32>,
    /// The worker it was (from its heartbeats).
    pub worker: Option<String>,
    /// Until the pool published it lost, seconds.
    pub noticed_s: Option<f64>,
    /// Until the pool was back at its minimum, seconds.
    pub recovered_s: Option<f64>,
}

/// A site's link dark for a while, and how the pool got over it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutageFigures {
    /// The link.
    pub link: String,
    /// The pool's sites behind it.
    pub sites: Vec<String>,
    /// Dark from, seconds from the start.
    pub start_s: f64,
    /// Back at, seconds from the start (none: not in this run).
    pub end_s: Option<f64>,
    /// Until the pool said a site behind it was unreachable, seconds.
    pub unreachable_s: Option<f64>,
    /// Until the other sites had `min_total` live workers, seconds.
    pub covered_s: Option<f64>,
    /// From the link's return until every site had its minimum, seconds.
    pub restored_s: Option<f64>,
}

/// The pool host killed and started again, and how it caught up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestartFigures {
    /// Killed at, seconds from the start.
    pub killed_s: f64,
    /// Started again at, seconds from the start.
    pub restarted_s: Option<f64>,
    /// The level: the most tasks waiting in the 5 s before the kill (at
    /// least 1, or the common level of two pools compared).
    pub level_backlog: u64,
    /// Tasks waiting when it restarted.
    pub backlog_at_restart: u64,
    /// The most tasks waiting after the kill.
    pub backlog_peak: u64,
    /// From the restart until the backlog was at its level, seconds.
    pub level_s: Option<f64>,
    /// The most live workers between the restart and the level.
    pub workers_max: u32,
    /// Workers of the killed pool still heartbeating 3 s after the kill
    /// (a worker should die with its pool).
    pub orphans: u64,
}

/// What one pool did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PoolFigures {
    /// Tasks acknowledged on its tasks topic.
    pub submitted: u64,
    /// Result items.
    pub results: u64,
    /// Submitted tasks without a result.
    pub missing: u64,
    /// Results beyond the first for a key.
    pub duplicated: u64,
    /// Results that say the task failed.
    pub failed: u64,
    /// Results for keys never submitted.
    pub unknown: u64,
    /// From submission to its result, seconds: median.
    pub task_latency_s_p50: f64,
    /// 99th percentile.
    pub task_latency_s_p99: f64,
    /// Largest.
    pub task_latency_s_max: f64,
    /// Workers that joined.
    pub workers_joined: u64,
    /// Workers lost, by reason.
    pub workers_lost: BTreeMap<String, u64>,
    /// Workers launched, by reason.
    pub workers_launched: BTreeMap<String, u64>,
    /// Tasks retried.
    pub retries: u64,
    /// Duplicate results the pool dropped.
    pub duplicates_dropped: u64,
    /// Most live workers at once.
    pub live_max: u32,
    /// Live workers per site at the end of each second of the run.
    pub live_by_site: BTreeMap<String, Vec<u32>>,
    /// Each worker SIGKILL.
    pub crashes: Vec<CrashFigures>,
    /// Each outage of a link its sites use.
    pub outages: Vec<OutageFigures>,
    /// Each kill and restart of the pool host.
    pub restarts: Vec<RestartFigures>,
}

/// Live workers per site over time: after each change (a worker joined
/// or gone, the pool host killed), in time order.
struct Live {
    /// (time, the event that changed it — none for a kill, live per site
    /// in spec order).
    after: Vec<(i64, Option<usize>, Vec<u32>)>,
}

impl Live {
    fn follow(input: &PoolInput<'_>) -> Live {
        let n = input.shape.sites.len();
        let sites: HashMap<&str, usize> = input
            .shape
            .sites
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let mut kills: Vec<i64> = input
            .applied
            .iter()
            .filter(|a| matches!(&a.what, AppliedKind::Kill { host } if host == input.host))
            .map(|a| a.at_us)
            .collect();
        kills.sort_unstable_by(|a, b| b.cmp(a));
        let mut live: BTreeMap<&str, usize> = BTreeMap::new();
        let count = |live: &BTreeMap<&str, usize>| {
            let mut c = vec![0u32; n];
            for &s in live.values() {
                c[s] += 1;
            }
            c
        };
        let mut after = Vec::new();
        for (i, (at, e)) in input.events.iter().enumerate() {
            while kills.last().is_some_and(|k| k <= at) {
                let k = kills.pop().expect("checked");
                live.clear();
                after.push((k, None, vec![0; n]));
            }
            match e {
                PoolEvent::Joined { worker, site } => match sites.get(site.as_str()) {
                    Some(&s) => live.insert(worker, s),
                    None => continue,
                },
                PoolEvent::Gone { worker, .. } => live.remove(worker.as_str()),
                _ => continue,
            };
            after.push((*at, Some(i), count(&live)));
        }
        after.extend(kills.into_iter().rev().map(|k| (k, None, vec![0; n])));
        after.sort_by_key(|(t, _, _)| *t);
        Live { after }
    }

    /// Live per site just before `t` (µs).
    fn at(&self, t: i64, sites: usize) -> Vec<u32> {
        let n = self.after.partition_point(|(at, _, _)| *at < t);
        n.checked_sub(1)
            .map_or_else(|| vec![0; sites], |i| self.after[i].2.clone())
    }

    /// The first time from `t` (µs) at which `ok` holds: `t` itself if it
    /// held just before.
    fn first_from(&self, t: i64, sites: usize, ok: impl Fn(&[u32]) -> bool) -> Option<i64> {
        if ok(&self.at(t, sites)) {
            return Some(t);
        }
        self.after
            .iter()
            .find(|(at, _, c)| *at >= t && ok(c))
            .map(|(at, _, _)| *at)
    }

    /// The first time, from event `event` on (its change included), at
    /// which `ok` holds.
    fn first_after(&self, event: usize, ok: impl Fn(&[u32]) -> bool) -> Option<i64> {
        let p = self.after.iter().position(|(_, e, _)| *e == Some(event))?;
        self.after[p..]
            .iter()
            .find(|(_, _, c)| ok(c))
            .map(|(at, _, _)| *at)
    }
}

/// Tasks waiting (submitted, not yet answered) over time: (time, backlog
/// from then on), in time order.
fn backlog_steps(submitted: &[(String, i64)], done: &HashMap<&str, i64>) -> Vec<(i64, u64)> {
    let mut changes: Vec<(i64, i64)> = Vec::with_capacity(2 * submitted.len());
    for (key, acked) in submitted {
        changes.push((*acked, 1));
        if let Some(&d) = done.get(key.as_str()) {
            changes.push((d.max(*acked), -1));
        }
    }
    changes.sort();
    let mut level = 0i64;
    let mut out: Vec<(i64, u64)> = Vec::with_capacity(changes.len());
    for (t, d) in changes {
        level += d;
        match out.last_mut() {
            Some(last) if last.0 == t => last.1 = level.max(0) as u64,
            _ => out.push((t, level.max(0) as u64)),
        }
    }
    out
}

/// The backlog at `t` (after every change at or before it).
fn backlog_at(steps: &[(i64, u64)], t: i64) -> u64 {
    let n = steps.partition_point(|(at, _)| *at <= t);
    n.checked_sub(1).map_or(0, |i| steps[i].1)
}

/// Analyses one pool.
pub fn analyse_pool(input: &PoolInput<'_>) -> PoolFigures {
    let secs = |us: i64| (us - input.t0_us) as f64 / 1e6;
    let dur = |from: i64, to: i64| (to - from).max(0) as f64 / 1e6;
    let shape = input.shape;
    let n_sites = shape.sites.len();
    let mut f = PoolFigures::default();

    // Exactly once.
    let submitted: HashMap<&str, i64> = input
        .submitted
        .iter()
        .map(|(k, t)| (k.as_str(), *t))
        .collect();
    f.submitted = submitted.len() as u64;
    f.results = input.results.len() as u64;
    let mut per_key: HashMap<&str, u64> = HashMap::new();
    let mut done: HashMap<&str, i64> = HashMap::new();
    let mut latencies = Vec::new();
    for (at, r) in &input.results {
        *per_key.entry(r.key.as_str()).or_default() += 1;
        if !r.ok {
            f.failed += 1;
        }
        match submitted.get(r.key.as_str()) {
            None => f.unknown += 1,
            Some(acked) => {
                if !done.contains_key(r.key.as_str()) {
                    done.insert(r.key.as_str(), *at);
                    latencies.push((at - acked).max(0) as u64);
                }
            }
        }
    }
    f.duplicated = per_key.values().map(|n| n - 1).sum();
    f.missing = submitted
        .keys()
        .filter(|k| !per_key.contains_key(*k))
        .count() as u64;
    latencies.sort_unstable();
    let q = |x: f64| quantile(&latencies, x) as f64 / 1e6;
    (f.task_latency_s_p50, f.task_latency_s_p99) = (q(0.5), q(0.99));
    f.task_latency_s_max = latencies.last().map_or(0.0, |&l| l as f64 / 1e6);

    // Workers.
    for (_, e) in &input.events {
        match e {
            PoolEvent::Joined { .. } => f.workers_joined += 1,
            PoolEvent::Gone {
                how,
                reason: Some(r),
                ..
            } if how == "lost" => *f.workers_lost.entry(r.clone()).or_default() += 1,
            PoolEvent::Launched {
                workers, reason, ..
            } => *f.workers_launched.entry(reason.clone()).or_default() += workers,
            PoolEvent::TaskRetried => f.retries += 1,
            PoolEvent::DuplicateDropped => f.duplicates_dropped += 1,
            _ => {}
        }
    }
    let live = Live::follow(input);
    f.live_max = live
        .after
        .iter()
        .map(|(_, _, c)| c.iter().sum::<u32>())
        .max()
        .unwrap_or(0);
    let last_s = input
        .events
        .last()
        .map_or(0, |(t, _)| secs(*t).max(0.0).ceil() as i64);
    for (i, s) in shape.sites.iter().enumerate() {
        let per_second = (1..=last_s)
            .map(|t| live.at(input.t0_us + t * 1_000_000, n_sites)[i])
            .collect();
        f.live_by_site.insert(s.name.clone(), per_second);
    }
    let at_minimum = |c: &[u32]| {
        c.iter().sum::<u32>() >= shape.scaling.min_total
            && shape.sites.iter().zip(c).all(|(s, n)| *n >= s.min)
    };

    // Crashes: the killed worker, its loss, the minimum again.
    for a in input.applied {
        let AppliedKind::KillChild { host, pid } = &a.what else {
            continue;
        };
        if host != input.host {
            continue;
        }
        let worker = pid.and_then(|pid| {
            let beats = input.events.iter().filter_map(|(t, e)| match e {
                PoolEvent::Heartbeat { worker, pid: p } if *p == pid => Some((*t, worker)),
                _ => None,
            });
            let mut before = None;
            let mut any = None;
            for (t, w) in beats {
                any = any.or(Some(w));
                if t <= a.at_us {
                    before = Some(w);
                }
            }
            before.or(any).cloned()
        });
        let lost = worker.as_ref().and_then(|w| {
            input.events.iter().enumerate().find(|(_, (t, e))| {
                *t >= a.at_us
                    && matches!(e, PoolEvent::Gone { worker, how, .. } if worker == w && how == "lost")
            })
        });
        let recovered = lost.and_then(|(i, _)| live.first_after(i, at_minimum));
        f.crashes.push(CrashFigures {
            at_s: secs(a.at_us),
            pid: *pid,
            worker,
            noticed_s: lost.map(|(_, (t, _))| dur(a.at_us, *t)),
            recovered_s: recovered.map(|t| dur(a.at_us, t)),
        });
    }

    // Outages of the links its sites use.
    for (k, a) in input.applied.iter().enumerate() {
        let AppliedKind::LinkDown { link } = &a.what else {
            continue;
        };
        let behind: Vec<usize> = (0..n_sites)
            .filter(|&i| shape.sites[i].via.as_deref() == Some(link))
            .collect();
        if behind.is_empty() {
            continue;
        }
        let up = input.applied[k..]
            .iter()
            .find(|b| matches!(&b.what, AppliedKind::LinkUp { link: l } if l == link))
            .map(|b| b.at_us);
        let names: Vec<String> = behind
            .iter()
            .map(|&i| shape.sites[i].name.clone())
            .collect();
        let unreachable = input.events.iter().find(|(t, e)| {
            *t >= a.at_us
                && matches!(e, PoolEvent::SiteReachable { site, reachable: false } if names.contains(site))
        });
        let covered = live.first_from(a.at_us, n_sites, |c| {
            let elsewhere: u32 = (0..n_sites)
                .filter(|i| !behind.contains(i))
                .map(|i| c[i])
                .sum();
            elsewhere >= shape.scaling.min_total
        });
        let restored = up.and_then(|u| live.first_from(u, n_sites, at_minimum));
        f.outages.push(OutageFigures {
            link: link.clone(),
            sites: names,
            start_s: secs(a.at_us),
            end_s: up.map(secs),
            unreachable_s: unreachable.map(|(t, _)| dur(a.at_us, *t)),
            covered_s: covered.map(|t| dur(a.at_us, t)),
            restored_s: match (up, restored) {
                (Some(u), Some(r)) => Some(dur(u, r)),
                _ => None,
            },
        });
    }

    // Restarts: the backlog built while it was down, and how soon it was
    // level again.
    let steps = backlog_steps(&input.submitted, &done);
    for (k, a) in input.applied.iter().enumerate() {
        if !matches!(&a.what, AppliedKind::Kill { host } if host == input.host) {
            continue;
        }
        let restart = input.applied[k..]
            .iter()
            .find(|b| matches!(&b.what, AppliedKind::Restart { host } if host == input.host))
            .map(|b| b.at_us);
        let window = a.at_us - 5_000_000;
        let level_backlog = steps
            .iter()
            .filter(|(t, _)| *t > window && *t <= a.at_us)
            .map(|(_, b)| *b)
            .chain([backlog_at(&steps, window), input.level_backlog_min.max(1)])
            .max()
            .unwrap_or(1);
        let level = restart.and_then(|r| {
            if backlog_at(&steps, r) <= level_backlog {
                return Some(r);
            }
            steps
                .iter()
                .find(|(t, b)| *t >= r && *b <= level_backlog)
                .map(|(t, _)| *t)
        });
        let until = level.unwrap_or(i64::MAX);
        let backlog_peak = steps
            .iter()
            .filter(|(t, _)| *t >= a.at_us && *t <= until)
            .map(|(_, b)| *b)
            .max()
            .unwrap_or(0);
        let workers_max = restart.map_or(0, |r| {
            live.after
                .iter()
                .filter(|(t, _, _)| *t >= r && *t <= until)
                .map(|(_, _, c)| c.iter().sum::<u32>())
                .max()
                .unwrap_or(0)
        });
        let pids_before: HashSet<u32> = input
            .events
            .iter()
            .filter_map(|(t, e)| match e {
                PoolEvent::Heartbeat { pid, .. } if *t > a.at_us - 3_000_000 && *t <= a.at_us => {
                    Some(*pid)
                }
                _ => None,
            })
            .collect();
        let orphans: HashSet<u32> = input
            .events
            .iter()
            .filter_map(|(t, e)| match e {
                PoolEvent::Heartbeat { pid, .. }
                    if *t > a.at_us + 3_000_000 && pids_before.contains(pid) =>
                {
                    Some(*pid)
                }
                _ => None,
            })
            .collect();
        f.restarts.push(RestartFigures {
            killed_s: secs(a.at_us),
            restarted_s: restart.map(secs),
            level_backlog,
            backlog_at_restart: restart.map_or(0, |r| backlog_at(&steps, r)),
            backlog_peak,
            level_s: match (restart, level) {
                (Some(r), Some(l)) => Some(dur(r, l)),
                _ => None,
            },
            workers_max,
            orphans: orphans.len() as u64,
        });
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{PoolScalingShape, PoolSiteShape};

    const S: i64 = 1_000_000;

    fn shape() -> PoolShape {
        PoolShape {
            scaling: PoolScalingShape {
                min_total: 3,
                max_total: 5,
            },
            sites: vec![
                PoolSiteShape {
                    name: "a".into(),
                    min: 1,
                    via: Some("la".into()),
                },
                PoolSiteShape {
                    name: "b".into(),
                    min: 2,
                    via: Some("lb".into()),
                },
            ],
        }
    }

    fn joined(w: &str, site: &str) -> PoolEvent {
        PoolEvent::Joined {
            worker: w.into(),
            site: site.into(),
        }
    }

    fn lost(w: &str, reason: &str) -> PoolEvent {
        PoolEvent::Gone {
            worker: w.into(),
            how: "lost".into(),
            reason: Some(reason.into()),
        }
    }

    fn beat(w: &str, pid: u32) -> PoolEvent {
        PoolEvent::Heartbeat {
            worker: w.into(),
            pid,
        }
    }

    fn applied(at_us: i64, what: AppliedKind) -> Applied {
        Applied { at_us, what }
    }

    fn result(key: &str, ok: bool) -> TaskResult {
        TaskResult {
            key: key.into(),
            ok,
            attempts: 1,
        }
    }

    #[test]
    fn recorder_lines_are_read_once_and_a_torn_tail_is_ignored() {
        let line = |o: u64, p: &str| {
            serde_json::json!({"topic":"t","partition":0,"offset":o,"size":1,"timestamp_us":5,"latency_us":1,"id":null,"crc32c":0,"payload":p})
                .to_string()
        };
        let text = format!(
            "{}\n{}\n{}\n{{\"partition\":0,\"off",
            line(
                0,
                r#"{"key":"k-0","ok":true,"output":"","attempts":1,"worker":"a-1"}"#
            ),
            line(0, "again"),
            line(1, "{}")
        );
        let items = recorded_items(&text).unwrap();
        assert_eq!(items.len(), 2, "offset 0 read twice counts once");
        let r = results_of(&items);
        assert_eq!(r, vec![(5, result("k-0", true))]);
        let e = recorded_items("{\"partition\":0}\n").unwrap_err();
        assert_eq!(e.line, 1);
    }

    #[test]
    fn events_parse_as_the_pool_publishes_them() {
        assert_eq!(
            parse_event(r#"{"type":"heartbeat","worker":"a-1","in_flight":[],"pid":77}"#),
            beat("a-1", 77)
        );
        assert_eq!(
            parse_event(
                r#"{"type":"pool","event":{"kind":"worker","event":"lost","worker":"a-1","site":"a","job":"j","reason":"job-ended","code":null,"in_flight":[],"charge":true}}"#
            ),
            lost("a-1", "job-ended")
        );
        assert_eq!(
            parse_event(
                r#"{"type":"pool","event":{"kind":"launched","site":"b","workers":["b-3","b-4"],"reason":"pool-minimum"}}"#
            ),
            PoolEvent::Launched {
                site: "b".into(),
                workers: 2,
                reason: "pool-minimum".into()
            }
        );
        assert_eq!(
            parse_event(
                r#"{"type":"pool","event":{"kind":"site-reachable","site":"b","reachable":false}}"#
            ),
            PoolEvent::SiteReachable {
                site: "b".into(),
                reachable: false
            }
        );
        assert_eq!(
            parse_event(r#"{"type":"status","pool":"p","backlog":3}"#),
            PoolEvent::Other
        );
    }

    #[test]
    fn exactly_once_counts_missing_duplicated_failed_and_unknown() {
        let shape = shape();
        let submitted: Vec<(String, i64)> =
            (0..4).map(|i| (format!("k-{i}"), i as i64 * S)).collect();
        let input = PoolInput {
            host: "p",
            shape: &shape,
            events: vec![],
            results: vec![
                (S, result("k-0", true)),
                (2 * S, result("k-0", true)),
                (3 * S, result("k-1", false)),
                (4 * S, result("k-2", true)),
                (4 * S, result("x-9", true)),
            ],
            submitted,
            applied: &[],
            t0_us: 0,
            level_backlog_min: 1,
        };
        let f = analyse_pool(&input);
        assert_eq!(
            (
                f.submitted,
                f.results,
                f.missing,
                f.duplicated,
                f.failed,
                f.unknown
            ),
            (4, 5, 1, 1, 1, 1)
        );
        assert_eq!(f.task_latency_s_max, 2.0);
    }

    #[test]
    fn a_killed_worker_is_followed_to_the_minimum_again() {
        let shape = shape();
        let events = vec![
            (S, joined("a-1", "a")),
            (S, joined("b-2", "b")),
            (S, joined("b-3", "b")),
            (2 * S, beat("b-2", 222)),
            // Killed at 3 s; noted lost at 3.1 s; replaced at 3.6 s.
            (3_100_000, lost("b-2", "job-ended")),
            (3_600_000, joined("b-4", "b")),
        ];
        let kills = [applied(
            3 * S,
            AppliedKind::KillChild {
                host: "p".into(),
                pid: Some(222),
            },
        )];
        let f = analyse_pool(&PoolInput {
            host: "p",
            shape: &shape,
            events,
            results: vec![],
            submitted: vec![],
            applied: &kills,
            t0_us: 0,
            level_backlog_min: 1,
        });
        let c = &f.crashes[0];
        assert_eq!(c.worker.as_deref(), Some("b-2"));
        assert_eq!(c.noticed_s, Some(0.1));
        assert_eq!(c.recovered_s, Some(0.6));
        assert_eq!(f.workers_lost["job-ended"], 1);
        assert_eq!(f.live_by_site["b"], vec![0, 2, 2, 2]);
        assert_eq!(f.live_max, 3);
    }

    #[test]
    fn a_site_lost_is_covered_elsewhere_and_restored_when_it_returns() {
        let shape = shape();
        let events = vec![
            (S, joined("a-1", "a")),
            (S, joined("b-2", "b")),
            (S, joined("b-3", "b")),
            // lb dark at 10 s; b's workers time out at 11.5 s.
            (11_500_000, lost("b-2", "heartbeat-timeout")),
            (11_500_000, lost("b-3", "heartbeat-timeout")),
            (
                11_500_000,
                PoolEvent::SiteReachable {
                    site: "b".into(),
                    reachable: false,
                },
            ),
            (12 * S, joined("a-4", "a")),
            (12_500_000, joined("a-5", "a")),
            // lb back at 20 s; b's minimum back at 23 s.
            (22 * S, joined("b-6", "b")),
            (23 * S, joined("b-7", "b")),
        ];
        let faults = [
            applied(10 * S, AppliedKind::LinkDown { link: "lb".into() }),
            applied(20 * S, AppliedKind::LinkUp { link: "lb".into() }),
        ];
        let f = analyse_pool(&PoolInput {
            host: "p",
            shape: &shape,
            events,
            results: vec![],
            submitted: vec![],
            applied: &faults,
            t0_us: 0,
            level_backlog_min: 1,
        });
        let o = &f.outages[0];
        assert_eq!(o.sites, vec!["b".to_string()]);
        assert_eq!(o.unreachable_s, Some(1.5));
        assert_eq!(o.covered_s, Some(2.5));
        assert_eq!(o.restored_s, Some(3.0));
    }

    #[test]
    fn a_restart_is_level_when_the_backlog_is_back_where_it_was() {
        let shape = PoolShape {
            scaling: PoolScalingShape {
                min_total: 1,
                max_total: 1,
            },
            sites: vec![PoolSiteShape {
                name: "a".into(),
                min: 1,
                via: None,
            }],
        };
        // One task a second, answered 0.5 s later, until the kill at 10 s;
        // restarted at 15 s, the tasks of 10..14 s are answered at
        // 16..20 s, the later ones at 21 s or 0.5 s after they come.
        let mut submitted = Vec::new();
        let mut results = Vec::new();
        for i in 0..30i64 {
            let at = i * S;
            submitted.push((format!("k-{i}"), at));
            let done = match i {
                ..=9 => at + S / 2,
                10..=14 => (i + 6) * S,
                _ => (at + S / 2).max(21 * S),
            };
            results.push((done, result(&format!("k-{i}"), true)));
        }
        results.sort_by_key(|r| r.0);
        let events = vec![
            (S / 2, joined("a-1", "a")),
            (15_500_000, joined("a-1", "a")),
        ];
        let faults = [
            applied(10 * S + 1, AppliedKind::Kill { host: "p".into() }),
            applied(15 * S, AppliedKind::Restart { host: "p".into() }),
        ];
        let f = analyse_pool(&PoolInput {
            host: "p",
            shape: &shape,
            events,
            results,
            submitted,
            applied: &faults,
            t0_us: 0,
            level_backlog_min: 1,
        });
        let r = &f.restarts[0];
        assert_eq!(r.level_backlog, 1);
        assert_eq!(r.backlog_at_restart, 6, "k-10..k-15");
        // At 21 s only k-21 waits: level 6 s after the restart.
        assert_eq!(r.level_s, Some(6.0));
        assert_eq!(r.workers_max, 1);
        assert_eq!(
            f.live_by_site["a"][11], 0,
            "none live while the pool is dead"
        );
        assert_eq!((f.missing, f.duplicated), (0, 0));
    }
}
