//! The supervisor: the registry, the policy and one provider per site,
//! stepped by the caller's clock.
//!
//! Each [`Supervisor::step`] polls every site's provider, applies job
//! states and time-outs to the registry, asks the policy what the demand
//! calls for, and launches or retires workers. It returns what happened as
//! [`PoolEvent`]s (the fabric shell publishes them on `pool.NAME.events`).
//!
//! A site whose provider fails `unreachable_after` polls in a row (an
//! `squeue` that cannot reach its controller, a site behind an outage) is
//! marked unreachable: its workers count as lost and the other sites cover
//! the pool's minimum; when its provider answers again it is reachable and
//! its minimum is restored. A site whose launches fail backs off (1 s,
//! doubling to 60 s) instead of retrying every step.
//!
//! A site can also be lost to the network while its provider answers (its
//! workers run but cannot reach the fabric): when its last joined worker is
//! lost to a heartbeat or start time-out, the site is *silent* — counted as
//! unreachable for a back-off (twice the heartbeat time-out, doubling to
//! `heartbeat.site_backoff_max_ms`), so the other sites cover `min_total`;
//! a worker that ends before it ever joined counts the same way, so a site
//! that cannot start workers is not relaunched in a storm. After the back-off it may
//! take workers again (a probe of its `min`); one that joins ends the
//! silence and the back-off.

use crate::policy::{CatchUp, Observation, Policy, PredictedShortfall, Reason};
use crate::provider::{LaunchRequest, Provider};
use crate::spec::PoolSpec;
use crate::workers::{DrainReason, LossReason, Registry, WorkerEvent};
use std::path::PathBuf;

/// Demand signals for one step.
#[derive(Debug, Clone, Default)]
pub struct Demand {
    /// Tasks waiting for a worker.
    pub backlog: u64,
    /// Services catching up after a restart.
    pub catch_up: Vec<CatchUp>,
    /// Predicted shortfalls.
    pub predictions: Vec<PredictedShortfall>,
}

/// What happened in the pool.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum PoolEvent {
    /// A worker event (joined, draining, lost, left).
    Worker(WorkerEvent),
    /// Workers launched.
    Launched {
        /// Site.
        site: String,
        /// Worker ids.
        workers: Vec<String>,
        /// Why.
        reason: Reason,
    },
    /// Workers retired.
    Retired {
        /// Site.
        site: String,
        /// Worker ids.
        workers: Vec<String>,
        /// Why.
        reason: Reason,
    },
    /// A launch failed; the site backs off.
    LaunchFailed {
        /// Site.
        site: String,
        /// The provider's error.
        error: String,
        /// Back-off before the next launch there, ms.
        backoff_ms: u64,
    },
    /// A provider poll failed.
    PollFailed {
        /// Site.
        site: String,
        /// The provider's error.
        error: String,
        /// Failures in a row.
        in_a_row: u32,
    },
    /// A site became reachable or unreachable.
    SiteReachable {
        /// Site.
        site: String,
        /// Now.
        reachable: bool,
    },
}

struct SiteShell {
    provider: Box<dyn Provider>,
    poll_failures: u32,
    launch_failures: u32,
    launch_blocked_until_ms: u64,
    drained: bool,
    /// Every worker there went silent: unreachable until then.
    silent_until_ms: Option<u64>,
    silent_backoff_ms: u64,
}

/// The supervisor.
pub struct Supervisor {
    spec: PoolSpec,
    registry: Registry,
    policy: Policy,
    sites: Vec<SiteShell>,
    log_dir: Option<PathBuf>,
    extra_env: Vec<(String, String)>,
    unreachable_after: u32,
}

impl Supervisor {
    /// A supervisor for `spec` with one provider per site, in spec order.
    pub fn new(spec: PoolSpec, providers: Vec<Box<dyn Provider>>) -> Supervisor {
        assert_eq!(providers.len(), spec.sites.len(), "one provider per site");
        Supervisor {
            registry: Registry::new(&spec),
            policy: Policy::new(&spec),
            sites: providers
                .into_iter()
                .map(|provider| SiteShell {
                    provider,
                    poll_failures: 0,
                    launch_failures: 0,
                    launch_blocked_until_ms: 0,
                    drained: false,
                    silent_until_ms: None,
                    silent_backoff_ms: 0,
                })
                .collect(),
            spec,
            log_dir: None,
            extra_env: Vec::new(),
            unreachable_after: 3,
        }
    }

    /// Workers' stdout and stderr go to `dir` (`WORKER.out`, `WORKER.err`).
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// Extra environment for every worker (e.g. the fabric's address).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_env.push((key.into(), value.into()));
        self
    }

    /// Polls in a row that must fail before a site is unreachable (≥ 1).
    pub fn unreachable_after(mut self, polls: u32) -> Self {
        self.unreachable_after = polls.max(1);
        self
    }

    /// The spec.
    pub fn spec(&self) -> &PoolSpec {
        &self.spec
    }

    /// The registry (read-only).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The provider of site `site` (for tests that kill workers).
    pub fn provider(&self, site: usize) -> &dyn Provider {
        self.sites[site].provider.as_ref()
    }

    /// A heartbeat from worker `worker`.
    pub fn heartbeat(
        &mut self,
        worker: &str,
        in_flight: Vec<String>,
        now_ms: u64,
    ) -> Vec<PoolEvent> {
        let mut out = Vec::new();
        for e in self.registry.heartbeat(worker, in_flight, now_ms) {
            if let WorkerEvent::Joined { site, .. } = &e {
                if let Ok(i) = self.site_index(site) {
                    let sh = &mut self.sites[i];
                    sh.silent_backoff_ms = 0;
                    if sh.silent_until_ms.take().is_some() {
                        out.push(PoolEvent::SiteReachable {
                            site: site.clone(),
                            reachable: true,
                        });
                    }
                }
            }
            out.push(PoolEvent::Worker(e));
        }
        out
    }

    /// After worker losses: a site whose last joined worker went silent is
    /// itself silent for a back-off.
    fn note_silences(&mut self, events: &[PoolEvent], now_ms: u64) -> Vec<PoolEvent> {
        let mut out = Vec::new();
        for e in events {
            let PoolEvent::Worker(WorkerEvent::Lost { site, reason, .. }) = e else {
                continue;
            };
            if !matches!(
                reason,
                LossReason::HeartbeatTimeout
                    | LossReason::StartTimeout
                    | LossReason::StartFailed { .. }
            ) {
                continue;
            }
            let Ok(i) = self.site_index(site) else {
                continue;
            };
            let live_left = self
                .registry
                .workers()
                .any(|w| w.site == i && w.phase == crate::workers::Phase::Live);
            if live_left {
                continue;
            }
            let floor = 2 * self.spec.heartbeat.timeout_ms.max(500);
            let cap = self.spec.heartbeat.site_backoff_max_ms.max(floor);
            let sh = &mut self.sites[i];
            sh.silent_backoff_ms = (sh.silent_backoff_ms * 2).clamp(floor, cap);
            let was_silent = sh.silent_until_ms.is_some_and(|t| now_ms < t);
            sh.silent_until_ms = Some(now_ms + sh.silent_backoff_ms);
            if !was_silent {
                out.push(PoolEvent::SiteReachable {
                    site: site.clone(),
                    reachable: false,
                });
            }
        }
        out
    }

    /// Drains site `name` by command: no new workers there, its workers are
    /// drained and stopped; the other sites cover the pool's minimum.
    /// `undrain` reverses it.
    ///
    /// Workers in `keep` are drained but not stopped: they finish moving a
    /// task away first, then leave by themselves.
    pub fn drain_site(
        &mut self,
        name: &str,
        now_ms: u64,
        keep: &[String],
    ) -> Result<Vec<PoolEvent>, String> {
        let i = self.site_index(name)?;
        self.sites[i].drained = true;
        let ids: Vec<(String, String)> = self
            .registry
            .workers()
            .filter(|w| w.site == i)
            .map(|w| (w.id.clone(), w.job.clone()))
            .collect();
        let mut events = Vec::new();
        for (id, job) in ids {
            if let Some(e) = self.registry.drain(&id, DrainReason::SiteDrain, now_ms) {
                events.push(PoolEvent::Worker(e));
            }
            if !keep.contains(&id) {
                let _ = self.sites[i].provider.cancel(&job);
            }
        }
        Ok(events)
    }

    /// Lets a drained site take workers again.
    pub fn undrain_site(&mut self, name: &str) -> Result<(), String> {
        let i = self.site_index(name)?;
        self.sites[i].drained = false;
        Ok(())
    }

    fn site_index(&self, name: &str) -> Result<usize, String> {
        self.spec
            .sites
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| format!("no site '{name}' in pool '{}'", self.spec.name))
    }

    /// One round: observe, decide, act.
    pub fn step(&mut self, now_ms: u64, demand: &Demand) -> Vec<PoolEvent> {
        let mut events = Vec::new();
        // Observe every site.
        for i in 0..self.sites.len() {
            let name = self.spec.sites[i].name.clone();
            match self.sites[i].provider.poll() {
                Ok(states) => {
                    if self.sites[i].poll_failures >= self.unreachable_after {
                        events.push(PoolEvent::SiteReachable {
                            site: name.clone(),
                            reachable: true,
                        });
                        self.registry.set_reachable(i, true);
                    }
                    self.sites[i].poll_failures = 0;
                    for (job, state) in states {
                        let Some(id) = self.registry.by_job(&job).map(|w| w.id.clone()) else {
                            continue;
                        };
                        events.extend(
                            self.registry
                                .job_state(&id, state, now_ms)
                                .into_iter()
                                .map(PoolEvent::Worker),
                        );
                    }
                }
                Err(e) => {
                    let s = &mut self.sites[i];
                    s.poll_failures += 1;
                    events.push(PoolEvent::PollFailed {
                        site: name.clone(),
                        error: e.to_string(),
                        in_a_row: s.poll_failures,
                    });
                    if s.poll_failures == self.unreachable_after {
                        events.push(PoolEvent::SiteReachable {
                            site: name,
                            reachable: false,
                        });
                        events.extend(
                            self.registry
                                .set_reachable(i, false)
                                .into_iter()
                                .map(PoolEvent::Worker),
                        );
                    }
                }
            }
        }
        let ticked: Vec<PoolEvent> = self
            .registry
            .tick(now_ms)
            .into_iter()
            .map(PoolEvent::Worker)
            .collect();
        let silences = self.note_silences(&events, now_ms);
        events.extend(silences);
        let silences = self.note_silences(&ticked, now_ms);
        // A worker lost to silence may still run (behind a partition):
        // stop its job, so it cannot come back and work unseen.
        for e in &ticked {
            if let PoolEvent::Worker(WorkerEvent::Lost {
                site, job, reason, ..
            }) = e
            {
                if matches!(
                    reason,
                    LossReason::HeartbeatTimeout | LossReason::StartTimeout
                ) {
                    if let Ok(i) = self.site_index(site) {
                        let _ = self.sites[i].provider.cancel(job);
                    }
                }
            }
        }
        events.extend(ticked);
        events.extend(silences);

        // Decide.
        let mut sites = self.registry.site_states();
        for (st, sh) in sites.iter_mut().zip(&self.sites) {
            if sh.drained || now_ms < sh.launch_blocked_until_ms {
                st.launchable = false;
            }
            if sh.silent_until_ms.is_some_and(|t| now_ms < t) {
                st.reachable = false;
                st.launchable = false;
            }
        }
        let obs = Observation {
            now_ms,
            sites,
            backlog: demand.backlog,
            catch_up: demand.catch_up.clone(),
            predictions: demand.predictions.clone(),
        };
        for action in self.policy.decide(&obs) {
            match action {
                crate::policy::Action::Launch {
                    site,
                    count,
                    reason,
                } => events.extend(self.launch(site, count, reason, now_ms)),
                crate::policy::Action::Retire {
                    site,
                    count,
                    reason,
                } => {
                    let ids = self.registry.pick_idle(site, count);
                    for id in &ids {
                        if let Some(e) = self.registry.drain(id, DrainReason::Retire, now_ms) {
                            events.push(PoolEvent::Worker(e));
                        }
                        let job = self.registry.get(id).map(|w| w.job.clone());
                        if let Some(job) = job {
                            let _ = self.sites[site].provider.cancel(&job);
                        }
                    }
                    if !ids.is_empty() {
                        events.push(PoolEvent::Retired {
                            site: self.spec.sites[site].name.clone(),
                            workers: ids,
                            reason,
                        });
                    }
                }
            }
        }
        events
    }

    fn launch(&mut self, site: usize, count: u32, reason: Reason, now_ms: u64) -> Vec<PoolEvent> {
        let mut events = Vec::new();
        if now_ms < self.sites[site].launch_blocked_until_ms {
            return events;
        }
        let name = self.spec.sites[site].name.clone();
        let mut launched = Vec::new();
        for _ in 0..count {
            let id = self.registry.next_worker_id(site);
            let mut env = self.extra_env.clone();
            if let Some(addr) = &self.spec.sites[site].fabric_addr {
                env.retain(|(k, _)| k != "DIASPORA_POOL_ADDR");
                env.push(("DIASPORA_POOL_ADDR".into(), addr.clone()));
            }
            let req = LaunchRequest {
                worker_id: id.clone(),
                pool: self.spec.name.clone(),
                command: self.spec.worker.command.clone(),
                env,
                cores: self.spec.worker.cores,
                memory_mb: self.spec.worker.memory_mb,
                walltime_s: self.spec.worker.walltime_s,
                log_dir: self.log_dir.clone(),
            };
            match self.sites[site].provider.launch(&req) {
                Ok(job) => {
                    self.registry.launched(id.clone(), site, job, now_ms);
                    self.sites[site].launch_failures = 0;
                    launched.push(id);
                }
                Err(e) => {
                    let s = &mut self.sites[site];
                    s.launch_failures += 1;
                    let backoff_ms = (1000u64 << (s.launch_failures - 1).min(6)).min(60_000);
                    s.launch_blocked_until_ms = now_ms + backoff_ms;
                    events.push(PoolEvent::LaunchFailed {
                        site: name.clone(),
                        error: e.to_string(),
                        backoff_ms,
                    });
                    break;
                }
            }
        }
        if !launched.is_empty() {
            events.insert(
                0,
                PoolEvent::Launched {
                    site: name,
                    workers: launched,
                    reason,
                },
            );
        }
        events
    }

    /// Stops every worker (cancels every job); call before dropping a pool
    /// whose workers must not outlive it (Slurm jobs would).
    pub fn shutdown(&mut self) {
        let jobs: Vec<(usize, String)> = self
            .registry
            .workers()
            .map(|w| (w.site, w.job.clone()))
            .collect();
        for (site, job) in jobs {
            let _ = self.sites[site].provider.cancel(&job);
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProviderError;
    use crate::spec::ProviderKind;
    use crate::workers::{JobEnd, JobState};
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    /// A scripted provider for the supervisor's unit tests (the real ones
    /// have their own tests against real processes and a real Slurm).
    #[derive(Clone, Default)]
    struct Scripted(Arc<Mutex<ScriptState>>);

    #[derive(Default)]
    struct ScriptState {
        next: u32,
        jobs: BTreeMap<String, JobState>,
        fail_launch: bool,
        fail_poll: bool,
        cancelled: Vec<String>,
    }

    impl Provider for Scripted {
        fn kind(&self) -> ProviderKind {
            ProviderKind::Local
        }
        fn launch(&mut self, _: &LaunchRequest) -> Result<String, ProviderError> {
            let mut s = self.0.lock().unwrap();
            if s.fail_launch {
                return Err(ProviderError::Refused {
                    provider: ProviderKind::Local,
                    detail: "no".into(),
                });
            }
            s.next += 1;
            let id = format!("j{}", s.next);
            s.jobs.insert(id.clone(), JobState::Running);
            Ok(id)
        }
        fn poll(&mut self) -> Result<Vec<(String, JobState)>, ProviderError> {
            let mut s = self.0.lock().unwrap();
            if s.fail_poll {
                return Err(ProviderError::Refused {
                    provider: ProviderKind::Local,
                    detail: "controller down".into(),
                });
            }
            let out: Vec<_> = s.jobs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            s.jobs.retain(|_, v| !matches!(v, JobState::Ended(_)));
            Ok(out)
        }
        fn cancel(&mut self, job: &str) -> Result<(), ProviderError> {
            let mut s = self.0.lock().unwrap();
            s.cancelled.push(job.into());
            if let Some(st) = s.jobs.get_mut(job) {
                *st = JobState::Ended(JobEnd::Cancelled);
            }
            Ok(())
        }
        fn jobs(&self) -> usize {
            self.0.lock().unwrap().jobs.len()
        }
    }

    fn sup() -> (Supervisor, Scripted, Scripted) {
        let spec = PoolSpec::from_toml(
            "name = \"p\"\n[worker]\ncommand = [\"w\"]\n[heartbeat]\nsource = \"provider\"\n\
             [scaling]\nmin_total = 3\nmax_total = 6\nscale_in_idle_s = 0\ncooldown_s = 0\n\
             [[site]]\nname = \"a\"\nprovider = \"local\"\nmin = 1\nmax = 3\n\
             [[site]]\nname = \"b\"\nprovider = \"local\"\nmin = 1\nmax = 3\n",
        )
        .unwrap();
        let (a, b) = (Scripted::default(), Scripted::default());
        let s = Supervisor::new(spec, vec![Box::new(a.clone()), Box::new(b.clone())]);
        (s, a, b)
    }

    fn active(s: &Supervisor) -> Vec<u32> {
        s.registry()
            .site_states()
            .iter()
            .map(|x| x.active)
            .collect()
    }

    #[test]
    fn keeps_minimums_through_losses_and_covers_an_unreachable_site() {
        let (mut s, a, b) = sup();
        s.step(0, &Demand::default());
        assert_eq!(active(&s), [2, 1]);
        s.step(1, &Demand::default()); // jobs seen running: joined
                                       // A job of site a dies: replaced in the next step.
        let j = a.0.lock().unwrap().jobs.keys().next().unwrap().clone();
        a.0.lock()
            .unwrap()
            .jobs
            .insert(j, JobState::Ended(JobEnd::Signalled { signal: 9 }));
        let ev = s.step(2, &Demand::default());
        assert!(ev
            .iter()
            .any(|e| matches!(e, PoolEvent::Worker(WorkerEvent::Lost { .. }))));
        assert!(ev
            .iter()
            .any(|e| matches!(e, PoolEvent::Launched { site, .. } if site == "a")));
        assert_eq!(active(&s), [2, 1]);
        // Site b's controller goes away: after 3 failed polls it is
        // unreachable and site a covers min_total.
        b.0.lock().unwrap().fail_poll = true;
        s.step(3, &Demand::default());
        s.step(4, &Demand::default());
        let ev = s.step(5, &Demand::default());
        assert!(ev.contains(&PoolEvent::SiteReachable {
            site: "b".into(),
            reachable: false
        }));
        assert_eq!(active(&s), [3, 0]);
        // It comes back: its minimum is restored, then a's surplus retires.
        b.0.lock().unwrap().fail_poll = false;
        let ev = s.step(6, &Demand::default());
        assert!(ev.contains(&PoolEvent::SiteReachable {
            site: "b".into(),
            reachable: true
        }));
        // (scale_in_idle_s = 0: a's surplus is retired in the same step.)
        assert_eq!(active(&s), [2, 1]);
        assert!(
            !a.0.lock().unwrap().cancelled.is_empty(),
            "the surplus worker's job was cancelled"
        );
    }

    #[test]
    fn a_site_gone_silent_is_covered_then_probed_and_restored() {
        let spec = PoolSpec::from_toml(
            "name = \"p\"\n[worker]\ncommand = [\"w\"]\n\
             [heartbeat]\ninterval_ms = 100\ntimeout_ms = 1000\nstart_timeout_ms = 1000\n\
             [scaling]\nmin_total = 2\nmax_total = 4\nscale_in_idle_s = 0\ncooldown_s = 0\n\
             [[site]]\nname = \"a\"\nprovider = \"local\"\nmin = 1\nmax = 2\n\
             [[site]]\nname = \"b\"\nprovider = \"local\"\nmin = 1\nmax = 2\n",
        )
        .unwrap();
        let (a, b) = (Scripted::default(), Scripted::default());
        let mut s = Supervisor::new(spec, vec![Box::new(a.clone()), Box::new(b.clone())]);
        s.step(0, &Demand::default());
        let beat_all = |s: &mut Supervisor, site: &str, now: u64| {
            let ids: Vec<String> = s
                .registry()
                .workers()
                .filter(|w| w.id.starts_with(site))
                .map(|w| w.id.clone())
                .collect();
            for id in ids {
                s.heartbeat(&id, vec![], now);
            }
        };
        beat_all(&mut s, "a-", 100);
        beat_all(&mut s, "b-", 100);
        assert_eq!(active(&s), [1, 1]);
        // Site a's network goes: its worker is silent, b keeps beating.
        let mut events = Vec::new();
        for now in (200..=1200).step_by(100) {
            beat_all(&mut s, "b-", now);
            events.extend(s.step(now, &Demand::default()));
        }
        assert!(events.contains(&PoolEvent::SiteReachable {
            site: "a".into(),
            reachable: false
        }));
        assert_eq!(
            a.0.lock().unwrap().cancelled.len(),
            1,
            "the silent worker's job is stopped"
        );
        assert_eq!(active(&s)[1], 2, "b covers min_total");
        // Back-off (2 × 1 s) over: a probe at a; it joins, a is back.
        let mut events = Vec::new();
        for now in (1300..=3400).step_by(100) {
            beat_all(&mut s, "b-", now);
            events.extend(s.step(now, &Demand::default()));
        }
        assert!(events
            .iter()
            .any(|e| matches!(e, PoolEvent::Launched { site, .. } if site == "a")));
        let probe = s
            .registry()
            .workers()
            .find(|w| w.id.starts_with("a-"))
            .unwrap()
            .id
            .clone();
        let ev = s.heartbeat(&probe, vec![], 3500);
        assert!(ev.contains(&PoolEvent::SiteReachable {
            site: "a".into(),
            reachable: true
        }));
        let mut events = Vec::new();
        for now in (3600..=4000).step_by(100) {
            beat_all(&mut s, "a-", now);
            beat_all(&mut s, "b-", now);
            events.extend(s.step(now, &Demand::default()));
        }
        assert_eq!(
            active(&s),
            [1, 1],
            "a's minimum restored, b's surplus retired"
        );
    }

    #[test]
    fn launch_failures_back_off() {
        let (mut s, a, _b) = sup();
        a.0.lock().unwrap().fail_launch = true;
        let ev = s.step(0, &Demand::default());
        assert!(ev.iter().any(|e| matches!(
            e,
            PoolEvent::LaunchFailed {
                backoff_ms: 1000,
                ..
            }
        )));
        // Site b fills in for the pool minimum meanwhile.
        let ev = s.step(500, &Demand::default());
        assert!(
            !ev.iter()
                .any(|e| matches!(e, PoolEvent::LaunchFailed { .. })),
            "backing off"
        );
        assert_eq!(active(&s), [0, 3]);
        let ev = s.step(1000, &Demand::default());
        assert!(ev.iter().any(|e| matches!(
            e,
            PoolEvent::LaunchFailed {
                backoff_ms: 2000,
                ..
            }
        )));
        a.0.lock().unwrap().fail_launch = false;
        s.step(3000, &Demand::default());
        assert_eq!(active(&s)[0], 1);
    }

    #[test]
    fn a_drained_site_takes_no_workers_until_undrained() {
        let (mut s, a, _b) = sup();
        s.step(0, &Demand::default());
        s.drain_site("a", 1, &[]).unwrap();
        assert_eq!(a.0.lock().unwrap().cancelled.len(), 2);
        s.step(2, &Demand::default());
        assert_eq!(active(&s), [0, 3]);
        s.undrain_site("a").unwrap();
        s.step(3, &Demand::default());
        assert_eq!(active(&s)[0], 1);
        assert!(s
            .drain_site("zz", 4, &[])
            .unwrap_err()
            .contains("no site 'zz'"));
    }
}
