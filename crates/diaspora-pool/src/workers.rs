//! The worker registry: every worker the pool launched, its phase, its
//! tasks in hand and its deadline — pure, with an injected clock.
//!
//! Inputs are what the shells observe (a launch, a provider status, a
//! heartbeat, a command to drain); outputs are [`WorkerEvent`]s, and every
//! worker that stops being usable produces exactly one `Lost` or `Left`
//! event — a lost worker never goes unreported, whichever way it went
//! (heartbeat silence, its process or job ending, a start that never came,
//! its site becoming unreachable).
//!
//! **Walltime**: a worker whose job has a walltime is drained
//! `drain_before_walltime_s` before it (it takes no new task, finishes
//! what it holds and exits), and stops counting as active, so the policy
//! launches its replacement while it still runs. When such a worker ends —
//! by exiting, or killed at its limit — the event says `charge: false`:
//! the tasks it still held go back without costing a retry.

use crate::policy::SiteState;
use crate::spec::PoolSpec;
use std::collections::BTreeMap;

/// A job's state as its provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Queued, not running yet.
    Pending,
    /// Running.
    Running,
    /// Ended; never reported again.
    Ended(JobEnd),
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "how")]
pub enum JobEnd {
    /// Exited with this status.
    Exited {
        /// Exit status.
        code: i32,
    },
    /// Killed by this signal.
    Signalled {
        /// Signal number.
        signal: i32,
    },
    /// Cancelled (by `scancel`, or by the pool).
    Cancelled,
    /// Killed at its walltime.
    Timeout,
    /// The scheduler failed it (node failure, pre-emption, launch failure).
    Failed {
        /// The scheduler's word for it.
        detail: String,
    },
    /// The provider no longer knows the job (after the grace it allows).
    Vanished,
}

/// Why a worker is gone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum LossReason {
    /// No heartbeat within `heartbeat.timeout_ms`.
    HeartbeatTimeout,
    /// Launched, running, but never heard from within `start_timeout_ms`.
    StartTimeout,
    /// Its process or job ended.
    JobEnded {
        /// How.
        end: JobEnd,
    },
    /// Its site became unreachable.
    SiteUnreachable,
    /// Its process or job ended before it ever joined (it could not reach
    /// the fabric, or its command is broken): counted like a start that
    /// never came, so a site whose workers cannot start backs off.
    StartFailed {
        /// How it ended.
        end: JobEnd,
    },
}

/// Why a worker is draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrainReason {
    /// Its walltime is near.
    Walltime,
    /// The policy retires it.
    Retire,
    /// Its site is being drained by command.
    SiteDrain,
    /// Its task is migrating away.
    Migration,
}

/// A worker's phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Launched; waiting in the provider's queue.
    Queued,
    /// Running, not heard from yet.
    Starting {
        /// When the provider first reported it running.
        running_since_ms: u64,
    },
    /// Heartbeating.
    Live,
    /// Taking no new task; will leave.
    Draining {
        /// Why.
        reason: DrainReason,
        /// Since when.
        since_ms: u64,
    },
}

/// One worker.
#[derive(Debug, Clone)]
pub struct Worker {
    /// Pool-unique id (`SITE-N`).
    pub id: String,
    /// Site index (spec order).
    pub site: usize,
    /// The provider's job id.
    pub job: String,
    /// Phase.
    pub phase: Phase,
    /// When it was launched.
    pub launched_ms: u64,
    /// Last heartbeat.
    pub last_beat_ms: Option<u64>,
    /// When its walltime ends (from the provider's first `Running`).
    pub deadline_ms: Option<u64>,
    /// Task keys in hand (from its latest heartbeat).
    pub in_flight: Vec<String>,
}

impl Worker {
    /// Counts toward the pool's size (queued, starting or live; not draining).
    pub fn active(&self) -> bool {
        !matches!(self.phase, Phase::Draining { .. })
    }

    /// Live with no task in hand.
    pub fn idle(&self) -> bool {
        self.phase == Phase::Live && self.in_flight.is_empty()
    }
}

/// What the registry tells the pool.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
pub enum WorkerEvent {
    /// First heartbeat.
    Joined {
        /// Worker.
        worker: String,
        /// Site name.
        site: String,
        /// Time from launch to first heartbeat.
        start_ms: u64,
    },
    /// Asked to drain.
    Draining {
        /// Worker.
        worker: String,
        /// Why.
        reason: DrainReason,
    },
    /// Gone unexpectedly.
    Lost {
        /// Worker.
        worker: String,
        /// Site name.
        site: String,
        /// Its provider's job id (a lost worker's job is cancelled, so one
        /// that comes back from a partition cannot work unseen).
        #[serde(default)]
        job: String,
        /// Why.
        #[serde(flatten)]
        reason: LossReason,
        /// Tasks it held, to be re-queued.
        in_flight: Vec<String>,
        /// Whether re-queued tasks are charged a retry (false when the
        /// worker was draining for its walltime or being retired).
        charge: bool,
    },
    /// Gone after draining, as planned.
    Left {
        /// Worker.
        worker: String,
        /// Site name.
        site: String,
        /// Why it had drained.
        reason: DrainReason,
        /// Tasks it still held (re-queued, never charged).
        in_flight: Vec<String>,
    },
}

/// The registry.
#[derive(Debug, Clone)]
pub struct Registry {
    sites: Vec<String>,
    reachable: Vec<bool>,
    workers: BTreeMap<String, Worker>,
    next_id: u64,
    timeout_ms: u64,
    start_timeout_ms: u64,
    walltime_ms: Option<u64>,
    drain_before_ms: u64,
    provider_liveness: bool,
}

impl Registry {
    /// A registry for `spec`.
    pub fn new(spec: &PoolSpec) -> Registry {
        Registry {
            sites: spec.sites.iter().map(|s| s.name.clone()).collect(),
            reachable: vec![true; spec.sites.len()],
            workers: BTreeMap::new(),
            next_id: 0,
            timeout_ms: spec.heartbeat.timeout_ms,
            start_timeout_ms: spec.heartbeat.start_timeout_ms,
            walltime_ms: spec.worker.walltime_s.map(|s| s.saturating_mul(1000)),
            drain_before_ms: spec.worker.drain_before_walltime_s.saturating_mul(1000),
            provider_liveness: spec.heartbeat.source == crate::spec::LivenessSource::Provider,
        }
    }

    /// A fresh worker id for site `site`.
    pub fn next_worker_id(&mut self, site: usize) -> String {
        self.next_id += 1;
        format!("{}-{}", self.sites[site], self.next_id)
    }

    /// Records a launch.
    pub fn launched(&mut self, id: String, site: usize, job: String, now_ms: u64) {
        self.workers.insert(
            id.clone(),
            Worker {
                id,
                site,
                job,
                phase: Phase::Queued,
                launched_ms: now_ms,
                last_beat_ms: None,
                deadline_ms: None,
                in_flight: Vec::new(),
            },
        );
    }

    /// Every worker the registry holds.
    pub fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.values()
    }

    /// One worker.
    pub fn get(&self, id: &str) -> Option<&Worker> {
        self.workers.get(id)
    }

    /// The worker running job `job`.
    pub fn by_job(&self, job: &str) -> Option<&Worker> {
        self.workers.values().find(|w| w.job == job)
    }

    /// A provider's report on worker `id`'s job.
    pub fn job_state(&mut self, id: &str, state: JobState, now_ms: u64) -> Vec<WorkerEvent> {
        let Some(w) = self.workers.get_mut(id) else {
            return Vec::new();
        };
        match state {
            JobState::Pending => Vec::new(),
            JobState::Running => {
                if w.deadline_ms.is_none() {
                    w.deadline_ms = self.walltime_ms.map(|wt| now_ms.saturating_add(wt));
                }
                if w.phase == Phase::Queued {
                    if self.provider_liveness {
                        // The running job is all the liveness there is.
                        w.phase = Phase::Live;
                        return vec![WorkerEvent::Joined {
                            worker: w.id.clone(),
                            site: self.sites[w.site].clone(),
                            start_ms: now_ms.saturating_sub(w.launched_ms),
                        }];
                    }
                    w.phase = Phase::Starting {
                        running_since_ms: now_ms,
                    };
                }
                Vec::new()
            }
            JobState::Ended(end) => {
                let w = self.workers.remove(id).expect("present");
                let reason = match w.phase {
                    Phase::Queued | Phase::Starting { .. } if !self.provider_liveness => {
                        LossReason::StartFailed { end }
                    }
                    _ => LossReason::JobEnded { end },
                };
                vec![self.gone(w, reason)]
            }
        }
    }

    /// A worker's heartbeat with the tasks it holds.
    pub fn heartbeat(&mut self, id: &str, in_flight: Vec<String>, now_ms: u64) -> Vec<WorkerEvent> {
        let Some(w) = self.workers.get_mut(id) else {
            return Vec::new();
        };
        w.last_beat_ms = Some(now_ms);
        w.in_flight = in_flight;
        match w.phase {
            Phase::Queued | Phase::Starting { .. } => {
                if w.deadline_ms.is_none() {
                    w.deadline_ms = self.walltime_ms.map(|wt| now_ms.saturating_add(wt));
                }
                w.phase = Phase::Live;
                vec![WorkerEvent::Joined {
                    worker: w.id.clone(),
                    site: self.sites[w.site].clone(),
                    start_ms: now_ms.saturating_sub(w.launched_ms),
                }]
            }
            _ => Vec::new(),
        }
    }

    /// Asks worker `id` to drain.
    pub fn drain(&mut self, id: &str, reason: DrainReason, now_ms: u64) -> Option<WorkerEvent> {
        let w = self.workers.get_mut(id)?;
        if matches!(w.phase, Phase::Draining { .. }) {
            return None;
        }
        w.phase = Phase::Draining {
            reason,
            since_ms: now_ms,
        };
        Some(WorkerEvent::Draining {
            worker: id.to_string(),
            reason,
        })
    }

    /// Picks up to `count` idle workers of `site` to retire (newest first,
    /// so the longest-running, warmest ones stay).
    pub fn pick_idle(&self, site: usize, count: u32) -> Vec<String> {
        let mut idle: Vec<&Worker> = self
            .workers
            .values()
            .filter(|w| w.site == site && w.idle())
            .collect();
        idle.sort_by_key(|w| std::cmp::Reverse(w.launched_ms));
        idle.into_iter()
            .take(count as usize)
            .map(|w| w.id.clone())
            .collect()
    }

    /// Marks a site reachable or not; workers of a site that becomes
    /// unreachable are lost (their tasks re-queued, charged).
    pub fn set_reachable(&mut self, site: usize, reachable: bool) -> Vec<WorkerEvent> {
        self.reachable[site] = reachable;
        if reachable {
            return Vec::new();
        }
        let ids: Vec<String> = self
            .workers
            .values()
            .filter(|w| w.site == site)
            .map(|w| w.id.clone())
            .collect();
        ids.into_iter()
            .map(|id| {
                let w = self.workers.remove(&id).expect("present");
                self.gone(w, LossReason::SiteUnreachable)
            })
            .collect()
    }

    /// Whether a site is reachable.
    pub fn reachable(&self, site: usize) -> bool {
        self.reachable[site]
    }

    /// Time passes: heartbeat and start time-outs, walltime drains.
    pub fn tick(&mut self, now_ms: u64) -> Vec<WorkerEvent> {
        let mut events = Vec::new();
        let mut lost = Vec::new();
        for w in self.workers.values_mut() {
            // Walltime: drain ahead of the limit.
            if let Some(deadline) = w.deadline_ms {
                if now_ms.saturating_add(self.drain_before_ms) >= deadline
                    && !matches!(w.phase, Phase::Draining { .. })
                {
                    w.phase = Phase::Draining {
                        reason: DrainReason::Walltime,
                        since_ms: now_ms,
                    };
                    events.push(WorkerEvent::Draining {
                        worker: w.id.clone(),
                        reason: DrainReason::Walltime,
                    });
                }
            }
            match (&w.phase, w.last_beat_ms) {
                (Phase::Starting { running_since_ms }, None)
                    if now_ms.saturating_sub(*running_since_ms) > self.start_timeout_ms =>
                {
                    lost.push((w.id.clone(), LossReason::StartTimeout));
                }
                (Phase::Live | Phase::Draining { .. }, Some(beat))
                    if now_ms.saturating_sub(beat) > self.timeout_ms =>
                {
                    lost.push((w.id.clone(), LossReason::HeartbeatTimeout));
                }
                _ => {}
            }
        }
        for (id, reason) in lost {
            let w = self.workers.remove(&id).expect("present");
            events.push(self.gone(w, reason));
        }
        events
    }

    fn gone(&self, w: Worker, reason: LossReason) -> WorkerEvent {
        let site = self.sites[w.site].clone();
        match w.phase {
            // Ended as planned: it exited by itself, or the pool stopped it.
            Phase::Draining { reason: why, .. }
                if matches!(
                    reason,
                    LossReason::JobEnded {
                        end: JobEnd::Exited { code: 0 } | JobEnd::Cancelled
                    }
                ) =>
            {
                WorkerEvent::Left {
                    worker: w.id,
                    site,
                    reason: why,
                    in_flight: w.in_flight,
                }
            }
            Phase::Draining { .. } => WorkerEvent::Lost {
                worker: w.id,
                site,
                job: w.job,
                reason,
                in_flight: w.in_flight,
                // A drained worker's end was planned (its walltime, a
                // retirement, a site drain, a migration): killed at the
                // limit or silent after it, it did not fail its tasks.
                charge: false,
            },
            _ => {
                let walltime = matches!(
                    reason,
                    LossReason::JobEnded {
                        end: JobEnd::Timeout
                    }
                );
                WorkerEvent::Lost {
                    worker: w.id,
                    site,
                    job: w.job,
                    reason,
                    in_flight: w.in_flight,
                    charge: !walltime,
                }
            }
        }
    }

    /// The policy's view of each site.
    pub fn site_states(&self) -> Vec<SiteState> {
        let mut out: Vec<SiteState> = self
            .reachable
            .iter()
            .map(|&reachable| SiteState {
                reachable,
                launchable: reachable,
                active: 0,
                idle: 0,
            })
            .collect();
        for w in self.workers.values() {
            if w.active() {
                out[w.site].active += 1;
            }
            if w.idle() {
                out[w.site].idle += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(walltime: Option<u64>) -> Registry {
        let mut t = String::from(
            "name = \"p\"\n[worker]\ncommand = [\"w\"]\ndrain_before_walltime_s = 10\n\
             [heartbeat]\ninterval_ms = 1000\ntimeout_ms = 3000\nstart_timeout_ms = 5000\n\
             [scaling]\nmin_total = 1\nmax_total = 4\n\
             [[site]]\nname = \"a\"\nprovider = \"local\"\nmax = 4\n",
        );
        if let Some(w) = walltime {
            t = t.replace("drain_before", &format!("walltime_s = {w}\ndrain_before"));
        }
        Registry::new(&PoolSpec::from_toml(&t).unwrap())
    }

    #[test]
    fn a_silent_worker_is_lost_with_its_tasks_and_charged() {
        let mut r = reg(None);
        let id = r.next_worker_id(0);
        r.launched(id.clone(), 0, "j1".into(), 0);
        assert_eq!(r.site_states()[0].active, 1, "queued counts as active");
        r.job_state(&id, JobState::Running, 100);
        let e = r.heartbeat(&id, vec![], 500);
        assert!(matches!(
            &e[..],
            [WorkerEvent::Joined { start_ms: 500, .. }]
        ));
        assert_eq!(r.site_states()[0].idle, 1);
        r.heartbeat(&id, vec!["t1".into()], 1_500);
        assert!(r.tick(4_500).is_empty(), "3 s of silence is the limit");
        let e = r.tick(4_501);
        assert_eq!(
            e,
            [WorkerEvent::Lost {
                worker: id,
                site: "a".into(),
                job: "j1".into(),
                reason: LossReason::HeartbeatTimeout,
                in_flight: vec!["t1".into()],
                charge: true
            }]
        );
        assert_eq!(r.site_states()[0].active, 0);
    }

    #[test]
    fn queue_time_does_not_count_against_the_start_timeout() {
        let mut r = reg(None);
        let id = r.next_worker_id(0);
        r.launched(id.clone(), 0, "j".into(), 0);
        assert!(r.tick(60_000).is_empty(), "queued for a minute is fine");
        r.job_state(&id, JobState::Running, 60_000);
        assert!(r.tick(65_000).is_empty());
        let e = r.tick(65_001);
        assert!(matches!(
            &e[..],
            [WorkerEvent::Lost {
                reason: LossReason::StartTimeout,
                charge: true,
                ..
            }]
        ));
    }

    #[test]
    fn a_worker_is_drained_before_its_walltime_and_its_end_costs_no_retry() {
        let mut r = reg(Some(60));
        let id = r.next_worker_id(0);
        r.launched(id.clone(), 0, "j".into(), 0);
        r.job_state(&id, JobState::Running, 1_000); // deadline 61 s
        r.heartbeat(&id, vec!["t".into()], 2_000);
        for t in (3..=50).map(|s| s * 1000) {
            r.heartbeat(&id, vec!["t".into()], t);
            assert!(r.tick(t).is_empty(), "at {t}");
        }
        r.heartbeat(&id, vec!["t".into()], 51_000);
        assert_eq!(
            r.tick(51_000),
            [WorkerEvent::Draining {
                worker: id.clone(),
                reason: DrainReason::Walltime
            }]
        );
        assert_eq!(r.site_states()[0].active, 0, "its replacement is due now");
        // Killed at the limit with a task still in hand: not charged.
        let e = r.job_state(&id, JobState::Ended(JobEnd::Timeout), 61_000);
        assert!(
            matches!(&e[..], [WorkerEvent::Lost { charge: false, in_flight, .. }] if in_flight == &["t"])
        );
    }

    #[test]
    fn a_walltime_kill_without_a_drain_is_not_charged_either() {
        let mut r = reg(None);
        let id = r.next_worker_id(0);
        r.launched(id.clone(), 0, "j".into(), 0);
        r.heartbeat(&id, vec!["t".into()], 10);
        let e = r.job_state(&id, JobState::Ended(JobEnd::Timeout), 20);
        assert!(matches!(&e[..], [WorkerEvent::Lost { charge: false, .. }]));
    }

    #[test]
    fn a_drained_worker_that_exits_cleanly_has_left() {
        let mut r = reg(None);
        let id = r.next_worker_id(0);
        r.launched(id.clone(), 0, "j".into(), 0);
        r.heartbeat(&id, vec![], 10);
        assert_eq!(r.pick_idle(0, 5), std::slice::from_ref(&id));
        assert!(r.drain(&id, DrainReason::Retire, 20).is_some());
        assert!(r.drain(&id, DrainReason::Retire, 21).is_none(), "once");
        let e = r.job_state(&id, JobState::Ended(JobEnd::Exited { code: 0 }), 30);
        assert!(matches!(
            &e[..],
            [WorkerEvent::Left {
                reason: DrainReason::Retire,
                ..
            }]
        ));
        assert_eq!(r.workers().count(), 0);
    }

    #[test]
    fn an_unreachable_site_loses_its_workers_and_cancel_is_reported_once() {
        let mut r = reg(None);
        let a = r.next_worker_id(0);
        let b = r.next_worker_id(0);
        r.launched(a.clone(), 0, "ja".into(), 0);
        r.launched(b.clone(), 0, "jb".into(), 0);
        let e = r.job_state(&a, JobState::Ended(JobEnd::Cancelled), 5);
        assert!(matches!(
            &e[..],
            [WorkerEvent::Lost {
                charge: true,
                reason: LossReason::StartFailed {
                    end: JobEnd::Cancelled
                },
                ..
            }]
        ));
        assert!(r
            .job_state(&a, JobState::Ended(JobEnd::Cancelled), 6)
            .is_empty());
        let e = r.set_reachable(0, false);
        assert!(matches!(
            &e[..],
            [WorkerEvent::Lost {
                reason: LossReason::SiteUnreachable,
                ..
            }]
        ));
        assert!(!r.site_states()[0].reachable);
        assert!(r.by_job("jb").is_none());
    }
}
