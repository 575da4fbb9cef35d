//! Consumer-group membership of one (group, topic): the pure core the
//! broker drives, with time passed in.
//!
//! A membership change (a member joins, leaves or misses its session
//! timeout) opens a *rebalance*: the generation stays where it is, every
//! heartbeat answers with the next generation so each live member commits
//! what it has read (still accepted: its generation is current) and
//! re-joins, and only when every live member has re-joined — or the
//! rebalance timeout (the longest session timeout) has passed, dropping
//! those that did not — does the new generation start, with partitions
//! spread over the members. So a member taking over a partition reads the
//! offset its previous owner committed last.
//!
//! A commit is *fenced*: it must come from a live member, in the current
//! generation, for a partition assigned to it, and may not move the offset
//! back (an explicit seek may). A member that was frozen past its session
//! timeout (SIGSTOP, a long GC pause) is out of the group when it wakes:
//! its commits are refused and its consumer re-joins before handing out
//! anything more.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A member of a subscription.
#[derive(Debug, Clone)]
pub struct Member {
    /// Last sign of life (join, heartbeat, commit).
    pub last_seen: Instant,
    /// Gone after this long without a sign of life.
    pub session_timeout: Duration,
    /// Re-joined for the rebalance in progress.
    pub rejoined: bool,
}

/// Why a commit or heartbeat was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// The member is not in the group (expired, left, or never joined).
    UnknownMember,
    /// The member's generation is not the group's.
    StaleGeneration {
        /// The generation the member gave.
        member: u64,
        /// The group's.
        current: u64,
    },
    /// The partition is not assigned to the member in this generation.
    NotAssigned,
    /// A commit without a member while the group has live members.
    GroupHasMembers,
}

/// What a join asks the caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinState {
    /// The member's assignment in the (new) current generation.
    Ready {
        /// Generation.
        generation: u64,
        /// Partitions assigned to the member.
        partitions: Vec<u32>,
    },
    /// A rebalance is waiting for other members to re-join: ask again.
    Waiting,
}

/// Membership, generation and assignment of one (group, topic).
#[derive(Debug, Clone, Default)]
pub struct Subscription {
    /// Live members by id.
    pub members: BTreeMap<String, Member>,
    /// Current generation (0: never formed).
    pub generation: u64,
    /// When the rebalance in progress began (None: none in progress).
    pub rebalance_since: Option<Instant>,
    /// Partitions per member in the current generation.
    pub assignment: BTreeMap<String, Vec<u32>>,
}

/// How a subscription is kept on disk, so membership survives a restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Persisted {
    /// Generation.
    pub generation: u64,
    /// Member id → (session timeout in ms, assigned partitions).
    pub members: BTreeMap<String, (u64, Vec<u32>)>,
}

impl Subscription {
    /// Drops members past their session timeout; a drop opens a rebalance.
    /// Returns whether membership changed.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.members.len();
        self.members
            .retain(|_, m| now.saturating_duration_since(m.last_seen) <= m.session_timeout);
        let changed = self.members.len() != before;
        if changed {
            self.open_rebalance(now);
        }
        changed
    }

    fn open_rebalance(&mut self, now: Instant) {
        if self.rebalance_since.is_none() {
            self.rebalance_since = Some(now);
            for m in self.members.values_mut() {
                m.rejoined = false;
            }
        }
    }

    /// The generation a heartbeat answers: the next one while a rebalance
    /// is in progress (the member should commit and re-join).
    pub fn advertised_generation(&self) -> u64 {
        self.generation + u64::from(self.rebalance_since.is_some())
    }

    /// (Re-)joins `member_id`. A new member, or one re-joining while the
    /// membership is settled but its generation is not current, opens a
    /// rebalance. Call [`Subscription::poll_join`] for the outcome.
    pub fn join(&mut self, member_id: &str, session_timeout: Duration, now: Instant) {
        self.expire(now);
        match self.members.get_mut(member_id) {
            Some(m) => {
                m.last_seen = now;
                m.session_timeout = session_timeout;
                if self.rebalance_since.is_some() {
                    m.rejoined = true;
                }
            }
            None => {
                self.members.insert(
                    member_id.to_string(),
                    Member {
                        last_seen: now,
                        session_timeout,
                        rejoined: false,
                    },
                );
                self.open_rebalance(now);
                if let Some(m) = self.members.get_mut(member_id) {
                    m.rejoined = true;
                }
            }
        }
    }

    /// Where a joined member stands: its assignment once the rebalance is
    /// complete (completing it when every live member has re-joined or the
    /// rebalance timeout has passed), or `Waiting`. `None`: the member was
    /// dropped from the rebalance (it did not re-join in time).
    pub fn poll_join(
        &mut self,
        member_id: &str,
        partitions: u32,
        now: Instant,
    ) -> Option<JoinState> {
        self.expire(now);
        let m = self.members.get_mut(member_id)?;
        m.last_seen = now;
        if let Some(since) = self.rebalance_since {
            let timeout = self
                .members
                .values()
                .map(|m| m.session_timeout)
                .max()
                .unwrap_or_default();
            let all = self.members.values().all(|m| m.rejoined);
            if !all && now.saturating_duration_since(since) < timeout {
                return Some(JoinState::Waiting);
            }
            // Complete it: who has not re-joined is out.
            self.members.retain(|_, m| m.rejoined);
            self.generation += 1;
            self.rebalance_since = None;
            let ids: Vec<String> = self.members.keys().cloned().collect();
            self.assignment = ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    let parts = (0..partitions)
                        .filter(|p| *p as usize % ids.len() == i)
                        .collect();
                    (id.clone(), parts)
                })
                .collect();
            for m in self.members.values_mut() {
                m.rejoined = false;
            }
        }
        let partitions = self.assignment.get(member_id).cloned()?;
        Some(JoinState::Ready {
            generation: self.generation,
            partitions,
        })
    }

    /// A heartbeat: the member's sign of life; returns the advertised
    /// generation.
    pub fn heartbeat(&mut self, member_id: &str, now: Instant) -> Result<u64, Fence> {
        self.expire(now);
        let m = self
            .members
            .get_mut(member_id)
            .ok_or(Fence::UnknownMember)?;
        m.last_seen = now;
        Ok(self.advertised_generation())
    }

    /// Leaves; the others rebalance.
    pub fn leave(&mut self, member_id: &str, now: Instant) -> bool {
        let was = self.members.remove(member_id).is_some();
        if was {
            self.assignment.remove(member_id);
            if !self.members.is_empty() {
                self.open_rebalance(now);
            } else {
                self.rebalance_since = None;
            }
        }
        was
    }

    /// Whether a commit of `partition` by `member_id` (empty: no member) at
    /// `generation` may go on.
    pub fn check_commit(
        &mut self,
        member_id: &str,
        generation: u64,
        partition: u32,
        now: Instant,
    ) -> Result<(), Fence> {
        self.expire(now);
        if member_id.is_empty() {
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(Fence::GroupHasMembers)
            };
        }
        let m = self
            .members
            .get_mut(member_id)
            .ok_or(Fence::UnknownMember)?;
        m.last_seen = now;
        if generation != self.generation {
            return Err(Fence::StaleGeneration {
                member: generation,
                current: self.generation,
            });
        }
        match self.assignment.get(member_id) {
            Some(parts) if parts.contains(&partition) => Ok(()),
            _ => Err(Fence::NotAssigned),
        }
    }

    /// The state to keep across a restart.
    pub fn persisted(&self) -> Persisted {
        Persisted {
            generation: self.generation,
            members: self
                .members
                .iter()
                .map(|(id, m)| {
                    (
                        id.clone(),
                        (
                            m.session_timeout.as_millis() as u64,
                            self.assignment.get(id).cloned().unwrap_or_default(),
                        ),
                    )
                })
                .collect(),
        }
    }

    /// A subscription as it was persisted; every member gets a fresh
    /// session timeout from `now` to show it is still there.
    pub fn restore(p: Persisted, now: Instant) -> Subscription {
        let mut s = Subscription {
            generation: p.generation,
            ..Default::default()
        };
        for (id, (timeout_ms, parts)) in p.members {
            s.members.insert(
                id.clone(),
                Member {
                    last_seen: now,
                    session_timeout: Duration::from_millis(timeout_ms),
                    rejoined: false,
                },
            );
            s.assignment.insert(id, parts);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    fn ready(s: &mut Subscription, id: &str, now: Instant) -> (u64, Vec<u32>) {
        match s.poll_join(id, 4, now) {
            Some(JoinState::Ready {
                generation,
                partitions,
            }) => (generation, partitions),
            other => panic!("{id}: {other:?}"),
        }
    }

    #[test]
    fn a_joiner_waits_for_the_others_who_commit_in_the_old_generation_first() {
        let t0 = Instant::now();
        let mut s = Subscription::default();
        s.join("a", T, t0);
        assert_eq!(ready(&mut s, "a", t0), (1, vec![0, 1, 2, 3]));
        // b joins: a rebalance opens; b waits; a still commits at generation 1.
        s.join("b", T, t0);
        assert_eq!(s.poll_join("b", 4, t0), Some(JoinState::Waiting));
        assert_eq!(s.heartbeat("a", t0), Ok(2));
        assert_eq!(s.check_commit("a", 1, 3, t0), Ok(()));
        // a re-joins: the new generation forms.
        s.join("a", T, t0);
        assert_eq!(ready(&mut s, "a", t0), (2, vec![0, 2]));
        assert_eq!(ready(&mut s, "b", t0), (2, vec![1, 3]));
        // Now a's old generation is fenced, and so is a partition not its own.
        assert_eq!(
            s.check_commit("a", 1, 0, t0),
            Err(Fence::StaleGeneration {
                member: 1,
                current: 2
            })
        );
        assert_eq!(s.check_commit("a", 2, 1, t0), Err(Fence::NotAssigned));
        assert_eq!(s.check_commit("b", 2, 1, t0), Ok(()));
        assert_eq!(s.check_commit("", 0, 1, t0), Err(Fence::GroupHasMembers));
    }

    #[test]
    fn a_member_frozen_past_its_timeout_is_fenced_and_the_rest_take_over() {
        let t0 = Instant::now();
        let mut s = Subscription::default();
        s.join("a", T, t0);
        s.join("b", T, t0);
        assert_eq!(ready(&mut s, "a", t0).0, 1);
        // a freezes; b heartbeats on and sees the rebalance after the timeout.
        assert_eq!(s.heartbeat("b", t0 + T / 2), Ok(1));
        let t1 = t0 + T + Duration::from_millis(10);
        assert_eq!(s.heartbeat("b", t1), Ok(2));
        s.join("b", T, t1);
        assert_eq!(ready(&mut s, "b", t1), (2, vec![0, 1, 2, 3]));
        // a wakes: unknown, its commit refused; it joins again as new.
        assert_eq!(s.heartbeat("a", t1), Err(Fence::UnknownMember));
        assert_eq!(s.check_commit("a", 1, 0, t1), Err(Fence::UnknownMember));
        s.join("a", T, t1);
        assert_eq!(s.poll_join("a", 4, t1), Some(JoinState::Waiting));
        // b never re-joins: after the rebalance timeout b is out, a alone.
        let t2 = t1 + T + Duration::from_millis(1);
        // b heartbeats but does not re-join; a keeps asking.
        s.members.get_mut("b").unwrap().last_seen = t2;
        s.members.get_mut("a").unwrap().last_seen = t2;
        assert_eq!(ready(&mut s, "a", t2), (3, vec![0, 1, 2, 3]));
        assert!(!s.members.contains_key("b"));
    }

    #[test]
    fn membership_survives_a_restart_as_persisted() {
        let t0 = Instant::now();
        let mut s = Subscription::default();
        s.join("a", T, t0);
        s.join("b", T, t0);
        ready(&mut s, "a", t0);
        let p = s.persisted();
        let text = serde_json::to_string(&p).unwrap();
        let back: Persisted = serde_json::from_str(&text).unwrap();
        let t1 = t0 + Duration::from_secs(30);
        let mut r = Subscription::restore(back, t1);
        assert_eq!(r.heartbeat("a", t1), Ok(1));
        assert_eq!(r.check_commit("b", 1, 1, t1), Ok(()));
        assert_eq!(r.assignment, s.assignment);
    }
}
