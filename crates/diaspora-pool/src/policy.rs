//! The scaling policy: a pure function of what the pool observes, with an
//! injected clock (`now_ms`), deciding how many workers to launch or retire
//! at which site.
//!
//! Targets are levels, not increments: the policy computes how many workers
//! the pool should have and asks for the difference, so calling it again
//! before the shell has acted cannot make it ask twice as long as the shell
//! reports launched workers as `active` at once.
//!
//! Order of concern:
//! 1. every reachable site's `min` (replacing lost workers is never delayed);
//! 2. the pool's `min_total`, on whichever reachable sites have room (so when
//!    a site is lost, the others cover it);
//! 3. demand: the task backlog (`backlog_per_worker`), services catching up
//!    after a restart (enough workers to be level within
//!    `catch_up_target_s`), and predicted shortfalls due within
//!    `prediction_horizon_s` — the largest of the three, within `max_total`;
//!    backlog-driven steps wait for `cooldown_s`, catch-up and predictions
//!    act at once;
//! 4. surplus: after `scale_in_idle_s` of continuous surplus, idle workers
//!    are retired from the least preferred sites, never below a site's `min`
//!    or the pool's `min_total`.

use crate::spec::PoolSpec;

/// One site as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SiteState {
    /// Whether the site is reachable: false while it is lost behind an
    /// outage (its workers then count for nothing).
    pub reachable: bool,
    /// Whether workers can be launched there now (false while its launches
    /// back off after failures, or it is drained by command). A reachable
    /// site that cannot launch keeps its workers; the others cover the
    /// pool's minimum meanwhile.
    pub launchable: bool,
    /// Workers starting or live there and not draining.
    pub active: u32,
    /// Of those, live workers with no task in hand.
    pub idle: u32,
}

/// A service restarted from a checkpoint with a backlog.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CatchUp {
    /// Items it still has to process.
    pub backlog: u64,
    /// Items per second one worker processes (measured).
    pub rate_per_worker: f64,
}

/// A predicted shortfall of a resource the pool serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PredictedShortfall {
    /// When it is due (the policy's clock).
    pub due_ms: u64,
    /// Workers the pool needs by then.
    pub workers: u32,
}

/// What the pool observes at one instant.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// The injected clock.
    pub now_ms: u64,
    /// Sites, in spec order.
    pub sites: Vec<SiteState>,
    /// Tasks waiting for a worker.
    pub backlog: u64,
    /// Services catching up.
    pub catch_up: Vec<CatchUp>,
    /// Predicted shortfalls.
    pub predictions: Vec<PredictedShortfall>,
}

/// Why workers are launched or retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// A site is below its `min`.
    SiteMinimum,
    /// The pool is below `min_total`.
    PoolMinimum,
    /// The task backlog per worker is above `backlog_per_worker`.
    Backlog,
    /// A service is catching up after a restart.
    CatchUp,
    /// A shortfall is predicted.
    Prediction,
    /// More workers than demand, for `scale_in_idle_s`.
    Surplus,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::SiteMinimum => "site-minimum",
            Reason::PoolMinimum => "pool-minimum",
            Reason::Backlog => "backlog",
            Reason::CatchUp => "catch-up",
            Reason::Prediction => "prediction",
            Reason::Surplus => "surplus",
        })
    }
}

/// One decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Launch `count` workers at site index `site`.
    Launch {
        /// Site index (spec order).
        site: usize,
        /// Workers.
        count: u32,
        /// Why.
        reason: Reason,
    },
    /// Retire (drain, then stop) `count` idle workers at site `site`.
    Retire {
        /// Site index (spec order).
        site: usize,
        /// Workers.
        count: u32,
        /// Why.
        reason: Reason,
    },
}

/// The policy's memory between decisions (cool-down and surplus timers).
#[derive(Debug, Clone)]
pub struct Policy {
    mins: Vec<u32>,
    maxs: Vec<u32>,
    min_total: u32,
    max_total: u32,
    backlog_per_worker: u32,
    catch_up_target_s: u64,
    cooldown_ms: u64,
    scale_in_idle_ms: u64,
    horizon_ms: u64,
    last_step_ms: Option<u64>,
    surplus_since_ms: Option<u64>,
}

/// How many workers the pool wants, and the term that set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Workers wanted (within `min_total..=max_total`).
    pub workers: u32,
    /// The term that set it (`PoolMinimum` when no demand is above it).
    pub reason: Reason,
}

impl Policy {
    /// A policy for `spec` (which must be valid).
    pub fn new(spec: &PoolSpec) -> Policy {
        let sc = &spec.scaling;
        Policy {
            mins: spec.sites.iter().map(|s| s.min).collect(),
            maxs: spec.sites.iter().map(|s| s.max).collect(),
            min_total: sc.min_total,
            max_total: sc.max_total,
            backlog_per_worker: sc.backlog_per_worker.max(1),
            catch_up_target_s: sc.catch_up_target_s.max(1),
            cooldown_ms: sc.cooldown_s.saturating_mul(1000),
            scale_in_idle_ms: sc.scale_in_idle_s.saturating_mul(1000),
            horizon_ms: sc.prediction_horizon_s.saturating_mul(1000),
            last_step_ms: None,
            surplus_since_ms: None,
        }
    }

    /// The workers the demand calls for, clamped to `min_total..=max_total`.
    pub fn target(&self, obs: &Observation) -> Target {
        let mut best = Target {
            workers: self.min_total,
            reason: Reason::PoolMinimum,
        };
        let mut consider = |workers: u64, reason: Reason| {
            let w = workers.min(u64::from(self.max_total)) as u32;
            if w > best.workers {
                best = Target { workers: w, reason };
            }
        };
        consider(
            obs.backlog.div_ceil(u64::from(self.backlog_per_worker)),
            Reason::Backlog,
        );
        let catch_up: f64 = obs
            .catch_up
            .iter()
            .filter(|c| c.backlog > 0)
            .map(|c| {
                let per_worker = c.rate_per_worker.max(1e-9) * self.catch_up_target_s as f64;
                (c.backlog as f64 / per_worker).ceil()
            })
            .sum();
        if catch_up.is_finite() {
            consider(catch_up.min(u32::MAX as f64) as u64, Reason::CatchUp);
        }
        for p in &obs.predictions {
            if p.due_ms <= obs.now_ms.saturating_add(self.horizon_ms) {
                consider(u64::from(p.workers), Reason::Prediction);
            }
        }
        best
    }

    /// Decides what to launch and retire now.
    pub fn decide(&mut self, obs: &Observation) -> Vec<Action> {
        assert_eq!(
            obs.sites.len(),
            self.mins.len(),
            "one SiteState per spec site"
        );
        let now = obs.now_ms;
        let mut active: Vec<u32> = obs
            .sites
            .iter()
            .map(|s| if s.reachable { s.active } else { 0 })
            .collect();
        let mut total: u32 = active.iter().sum();
        let mut actions = Vec::new();
        let launch = |site: usize, count: u32, reason: Reason, actions: &mut Vec<Action>| {
            if count == 0 {
                return;
            }
            match actions.iter_mut().find(|a| {
                matches!(a, Action::Launch { site: s, reason: r, .. } if *s == site && *r == reason)
            }) {
                Some(Action::Launch { count: c, .. }) => *c += count,
                _ => actions.push(Action::Launch {
                    site,
                    count,
                    reason,
                }),
            }
        };

        // 1. Site minimums.
        for (i, s) in obs.sites.iter().enumerate() {
            if !s.reachable || !s.launchable {
                continue;
            }
            let room_site = self.maxs[i].saturating_sub(active[i]);
            let room_pool = self.max_total.saturating_sub(total);
            let n = self.mins[i]
                .saturating_sub(active[i])
                .min(room_site)
                .min(room_pool);
            launch(i, n, Reason::SiteMinimum, &mut actions);
            active[i] += n;
            total += n;
        }

        // 2 and 3. Pool minimum, then demand.
        let target = self.target(obs);
        let floor = self.min_total.min(self.max_total);
        if total < floor {
            let placed = self.spread(obs, &mut active, floor - total);
            for (i, n) in placed {
                launch(i, n, Reason::PoolMinimum, &mut actions);
            }
            total = active.iter().sum();
        }
        if target.workers > total {
            let cooled = self
                .last_step_ms
                .map_or(true, |t| now.saturating_sub(t) >= self.cooldown_ms);
            if target.reason != Reason::Backlog || cooled {
                let placed = self.spread(obs, &mut active, target.workers - total);
                if !placed.is_empty() {
                    self.last_step_ms = Some(now);
                }
                for (i, n) in placed {
                    launch(i, n, target.reason, &mut actions);
                }
                total = active.iter().sum();
            }
        }

        // 4. Surplus.
        if total > target.workers {
            let since = *self.surplus_since_ms.get_or_insert(now);
            let cooled = self
                .last_step_ms
                .map_or(true, |t| now.saturating_sub(t) >= self.cooldown_ms);
            if now.saturating_sub(since) >= self.scale_in_idle_ms && cooled {
                let mut excess = total - target.workers.max(floor);
                let mut retired = false;
                for i in (0..obs.sites.len()).rev() {
                    if excess == 0 {
                        break;
                    }
                    let s = &obs.sites[i];
                    if !s.reachable {
                        continue;
                    }
                    let n = active[i]
                        .saturating_sub(self.mins[i])
                        .min(s.idle)
                        .min(excess);
                    if n > 0 {
                        actions.push(Action::Retire {
                            site: i,
                            count: n,
                            reason: Reason::Surplus,
                        });
                        active[i] -= n;
                        excess -= n;
                        retired = true;
                    }
                }
                if retired {
                    self.last_step_ms = Some(now);
                    self.surplus_since_ms = None;
                }
            }
        } else {
            self.surplus_since_ms = None;
        }
        actions
    }

    /// Places `want` new workers on reachable sites with room, in spec order
    /// (the spec lists sites by preference), within `max_total`.
    fn spread(&self, obs: &Observation, active: &mut [u32], want: u32) -> Vec<(usize, u32)> {
        let mut total: u32 = active.iter().sum();
        let mut left = want.min(self.max_total.saturating_sub(total));
        let mut out = Vec::new();
        for (i, s) in obs.sites.iter().enumerate() {
            if left == 0 {
                break;
            }
            if !s.reachable || !s.launchable {
                continue;
            }
            let n = self.maxs[i].saturating_sub(active[i]).min(left);
            if n > 0 {
                out.push((i, n));
                active[i] += n;
                total += n;
                left -= n;
            }
        }
        debug_assert!(total <= self.max_total);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::PoolSpec;
    use proptest::prelude::*;

    fn spec(min_total: u32, max_total: u32, sites: &[(u32, u32)]) -> PoolSpec {
        try_spec(min_total, max_total, sites).unwrap()
    }

    fn try_spec(
        min_total: u32,
        max_total: u32,
        sites: &[(u32, u32)],
    ) -> Result<PoolSpec, crate::spec::SpecError> {
        let mut t = format!(
            "name = \"p\"\n[worker]\ncommand = [\"w\"]\n[scaling]\nmin_total = {min_total}\n\
             max_total = {max_total}\nbacklog_per_worker = 4\ncatch_up_target_s = 10\n\
             cooldown_s = 5\nscale_in_idle_s = 30\nprediction_horizon_s = 60\n"
        );
        for (i, (min, max)) in sites.iter().enumerate() {
            t += &format!(
                "[[site]]\nname = \"s{i}\"\nprovider = \"local\"\nmin = {min}\nmax = {max}\n"
            );
        }
        PoolSpec::from_toml(&t)
    }

    fn obs(now_ms: u64, sites: &[(bool, u32, u32)]) -> Observation {
        Observation {
            now_ms,
            sites: sites
                .iter()
                .map(|&(reachable, active, idle)| SiteState {
                    reachable,
                    launchable: true,
                    active,
                    idle,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn launched(actions: &[Action]) -> Vec<(usize, u32, Reason)> {
        actions
            .iter()
            .filter_map(|a| match *a {
                Action::Launch {
                    site,
                    count,
                    reason,
                } => Some((site, count, reason)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn site_minimums_come_first_then_the_pool_minimum_in_preference_order() {
        let mut p = Policy::new(&spec(4, 8, &[(1, 4), (1, 4)]));
        let a = p.decide(&obs(0, &[(true, 0, 0), (true, 0, 0)]));
        assert_eq!(
            launched(&a),
            [
                (0, 1, Reason::SiteMinimum),
                (1, 1, Reason::SiteMinimum),
                (0, 2, Reason::PoolMinimum)
            ]
        );
        // Acting again with the launches counted asks for nothing.
        assert!(p.decide(&obs(1, &[(true, 3, 0), (true, 1, 0)])).is_empty());
    }

    #[test]
    fn a_lost_site_is_covered_by_the_others_and_restored_when_it_returns() {
        let mut p = Policy::new(&spec(4, 8, &[(2, 4), (2, 6)]));
        // Site 0 lost: its two workers no longer count; site 1 covers min_total.
        let a = p.decide(&obs(0, &[(false, 2, 0), (true, 2, 2)]));
        assert_eq!(launched(&a), [(1, 2, Reason::PoolMinimum)]);
        // Site 0 back with nothing: its minimum is restored at once...
        let a = p.decide(&obs(1_000, &[(true, 0, 0), (true, 4, 4)]));
        assert_eq!(launched(&a), [(0, 2, Reason::SiteMinimum)]);
        // ...and site 1's surplus is retired after scale_in_idle_s (30 s).
        assert!(p
            .decide(&obs(2_000, &[(true, 2, 2), (true, 4, 4)]))
            .is_empty());
        assert!(p
            .decide(&obs(30_999, &[(true, 2, 2), (true, 4, 4)]))
            .is_empty());
        let a = p.decide(&obs(31_000, &[(true, 2, 2), (true, 4, 4)]));
        assert_eq!(
            a,
            [Action::Retire {
                site: 1,
                count: 2,
                reason: Reason::Surplus
            }]
        );
    }

    #[test]
    fn backlog_scales_up_with_a_cooldown_and_surplus_waits_before_scaling_in() {
        let mut p = Policy::new(&spec(1, 8, &[(0, 8)]));
        let mut o = obs(0, &[(true, 1, 0)]);
        o.backlog = 17; // ceil(17 / 4) = 5 workers
        assert_eq!(launched(&p.decide(&o)), [(0, 4, Reason::Backlog)]);
        // More backlog within the cool-down: wait.
        o.now_ms = 4_000;
        o.sites[0].active = 5;
        o.backlog = 40;
        assert!(p.decide(&o).is_empty());
        o.now_ms = 5_000;
        assert_eq!(launched(&p.decide(&o)), [(0, 3, Reason::Backlog)]); // capped at 8
                                                                        // Backlog gone: surplus for 30 s, then idle workers retire to min_total.
        o.backlog = 0;
        o.sites[0] = SiteState {
            reachable: true,
            launchable: true,
            active: 8,
            idle: 5,
        };
        o.now_ms = 10_000;
        assert!(p.decide(&o).is_empty());
        o.now_ms = 40_000;
        assert_eq!(
            p.decide(&o),
            [Action::Retire {
                site: 0,
                count: 5,
                reason: Reason::Surplus
            }]
        );
    }

    #[test]
    fn catch_up_sizes_the_pool_to_be_level_within_the_target() {
        let mut p = Policy::new(&spec(2, 16, &[(0, 16)]));
        let mut o = obs(0, &[(true, 2, 2)]);
        // 1200 items, 20 items/s per worker, level within 10 s: 6 workers.
        o.catch_up.push(CatchUp {
            backlog: 1200,
            rate_per_worker: 20.0,
        });
        assert_eq!(
            p.target(&o),
            Target {
                workers: 6,
                reason: Reason::CatchUp
            }
        );
        assert_eq!(launched(&p.decide(&o)), [(0, 4, Reason::CatchUp)]);
        // Catch-up is not held back by the cool-down.
        o.now_ms = 100;
        o.sites[0].active = 6;
        o.catch_up[0].backlog = 2400;
        assert_eq!(launched(&p.decide(&o)), [(0, 6, Reason::CatchUp)]);
    }

    #[test]
    fn a_prediction_scales_up_only_within_the_horizon() {
        let mut p = Policy::new(&spec(1, 8, &[(1, 8)]));
        let mut o = obs(0, &[(true, 1, 1)]);
        o.predictions.push(PredictedShortfall {
            due_ms: 90_000,
            workers: 5,
        });
        assert!(p.decide(&o).is_empty(), "due beyond the 60 s horizon");
        o.now_ms = 30_000;
        assert_eq!(launched(&p.decide(&o)), [(0, 4, Reason::Prediction)]);
    }

    #[test]
    fn retirement_never_takes_busy_workers_or_goes_below_site_minimums() {
        let mut p = Policy::new(&spec(1, 10, &[(3, 5), (0, 5)]));
        let o = obs(0, &[(true, 5, 5), (true, 5, 1)]);
        assert!(p.decide(&o).is_empty());
        let mut o2 = o.clone();
        o2.now_ms = 31_000;
        assert_eq!(
            p.decide(&o2),
            [
                Action::Retire {
                    site: 1,
                    count: 1,
                    reason: Reason::Surplus
                },
                Action::Retire {
                    site: 0,
                    count: 2,
                    reason: Reason::Surplus
                }
            ]
        );
    }

    fn arb_case() -> impl Strategy<Value = (PoolSpec, Vec<Observation>)> {
        (1usize..4)
            .prop_flat_map(|n| {
                (
                    prop::collection::vec((0u32..4, 0u32..6), n),
                    0u32..8,
                    0u32..12,
                    prop::collection::vec(
                        (
                            prop::collection::vec(
                                (any::<bool>(), any::<bool>(), 0u32..12, 0u32..12),
                                n,
                            ),
                            0u64..200,
                            prop::option::of((0u64..5000, 0.1f64..50.0)),
                            prop::option::of((0u64..200_000, 0u32..30)),
                        ),
                        1..20,
                    ),
                )
            })
            .prop_filter_map("valid spec", |(sites, min_total, extra, steps)| {
                let sites: Vec<(u32, u32)> =
                    sites.into_iter().map(|(min, d)| (min, min + d)).collect();
                let sum_max: u32 = sites.iter().map(|s| s.1).sum();
                let sum_min: u32 = sites.iter().map(|s| s.0).sum();
                let min_total = min_total.min(sum_max);
                let max_total = (min_total.max(sum_min) + extra).max(1);
                let spec = try_spec(min_total, max_total, &sites).ok()?;
                let mut now = 0;
                let obs = steps
                    .into_iter()
                    .map(|(s, backlog, cu, pr)| {
                        now += 1000;
                        Observation {
                            now_ms: now,
                            sites: s
                                .into_iter()
                                .map(|(reachable, launchable, active, idle)| SiteState {
                                    reachable,
                                    launchable,
                                    active,
                                    idle: idle.min(active),
                                })
                                .collect(),
                            backlog,
                            catch_up: cu
                                .map(|(backlog, rate_per_worker)| CatchUp {
                                    backlog,
                                    rate_per_worker,
                                })
                                .into_iter()
                                .collect(),
                            predictions: pr
                                .map(|(due_ms, workers)| PredictedShortfall { due_ms, workers })
                                .into_iter()
                                .collect(),
                        }
                    })
                    .collect();
                Some((spec, obs))
            })
    }

    proptest! {
        /// Whatever it observes, the policy never plans more than a site's or
        /// the pool's maximum, never retires below a minimum or a busy
        /// worker, never launches at an unreachable site, and — where the
        /// limits leave room — brings every reachable site to its minimum
        /// and the pool to min_total.
        #[test]
        fn plans_respect_every_limit((spec, steps) in arb_case()) {
            let mut p = Policy::new(&spec);
            for o in steps {
                // What the pool has (workers at unreachable sites are gone).
                let before: Vec<u32> = o.sites.iter().map(|s| if s.reachable { s.active } else { 0 }).collect();
                let mut after = before.clone();
                for a in p.decide(&o) {
                    match a {
                        Action::Launch { site, count, .. } => {
                            prop_assert!(o.sites[site].reachable && o.sites[site].launchable);
                            prop_assert!(count > 0);
                            after[site] += count;
                        }
                        Action::Retire { site, count, .. } => {
                            prop_assert!(count <= o.sites[site].idle);
                            after[site] -= count;
                            prop_assert!(after[site] >= spec.sites[site].min);
                        }
                    }
                }
                let total_before: u32 = before.iter().sum();
                let total_after: u32 = after.iter().sum();
                // Site minimums first: the shortfall filled is all of it,
                // or all the pool's room (sites compete for that room).
                let (mut needed, mut filled) = (0u32, 0u32);
                for (i, s) in spec.sites.iter().enumerate() {
                    if after[i] > before[i] {
                        prop_assert!(after[i] <= s.max, "site {i} over its max");
                    }
                    if o.sites[i].reachable && o.sites[i].launchable {
                        let floor = s.min.min(s.max);
                        needed += floor.saturating_sub(before[i]);
                        filled += after[i].min(floor).saturating_sub(before[i]);
                    }
                }
                let room = spec.scaling.max_total.saturating_sub(total_before);
                prop_assert!(filled >= needed.min(room), "site minimums not sought: {filled} of {needed} (room {room})");
                if total_after > total_before {
                    prop_assert!(total_after <= spec.scaling.max_total);
                }
                if total_after < total_before {
                    prop_assert!(total_after >= spec.scaling.min_total.min(total_before));
                }
                let reachable_room: u32 = spec.sites.iter().zip(&o.sites).zip(&before)
                    .filter(|((_, st), _)| st.reachable && st.launchable)
                    .map(|((s, _), b)| s.max.saturating_sub(*b)).sum();
                let want = spec.scaling.min_total.saturating_sub(total_before)
                    .min(reachable_room)
                    .min(spec.scaling.max_total.saturating_sub(total_before));
                prop_assert!(total_after >= total_before + want, "pool minimum not sought");
            }
        }
    }
}
