//! Pool hosts (`[[pools]]`): `diaspora pool run` with its spec written to
//! `spec.toml` in the host's directory, and two recorders per pool
//! (`NAME-events`, `NAME-results`): `diaspora consume --from earliest
//! --json --payload` of the pool's events and results topics, each item a
//! JSON line with its producer's timestamp — what the pool analysis
//! ([`crate::pool_analysis`]) reads.
//!
//! The pool launches its workers itself, as its own child processes; a
//! site whose `via` names a link gets that link's relay as its
//! `fabric_addr`, so its workers reach the node through the link while the
//! pool does not. The pool creates its topics before it says it is ready,
//! so the recorders start after it (in [`super::Phase::Watch`]).

use std::path::Path;
use std::time::Duration;

use super::{HostAt, HostCommand, HostEnv, HostKind, Ready, Records};
use crate::cli_args::{Invocation, PoolRun, Record};
use crate::scenario::PoolHost;
use crate::{Scenario, TwinError};

/// The pool kind.
pub struct Pool;

/// The kind of a pool's recorders.
pub struct PoolRecorder;

/// Which of a pool's topics a recorder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolTopic {
    /// `pool.NAME.events`: heartbeats, worker and site events, status.
    Events,
    /// `pool.NAME.results`: one result per task key.
    Results,
    /// `pool.NAME.tasks`: what was submitted (by a `[[tasks]]` stream or
    /// by a service of the scenario), retries included.
    Tasks,
}

impl PoolTopic {
    /// Both, in recorder order.
    pub const ALL: [PoolTopic; 3] = [PoolTopic::Events, PoolTopic::Results, PoolTopic::Tasks];

    /// Its suffix: `events` or `results`.
    pub fn suffix(self) -> &'static str {
        match self {
            PoolTopic::Events => "events",
            PoolTopic::Results => "results",
            PoolTopic::Tasks => "tasks",
        }
    }

    /// The topic of pool `pool`.
    pub fn topic(self, pool: &str) -> String {
        format!("pool.{pool}.{}", self.suffix())
    }

    /// The recorder host's name for pool `pool`.
    pub fn recorder(self, pool: &str) -> String {
        format!("{pool}-{}", self.suffix())
    }
}

/// The pool's tasks topic.
pub fn tasks_topic(pool: &str) -> String {
    format!("pool.{pool}.tasks")
}

/// A pool's spec as the file `pool run` reads: the inline table with
/// `name` set to the host's name, `[worker]` defaulted to this binary's
/// `pool worker`, and each site's `via` replaced by its link's relay
/// address as `fabric_addr`.
pub fn spec_text(p: &PoolHost, env: &HostEnv) -> Result<String, TwinError> {
    let mut spec = p.spec.clone();
    spec.insert("name".into(), toml::Value::String(p.name.clone()));
    spec.entry("worker").or_insert_with(|| {
        let mut w = toml::Table::new();
        w.insert(
            "command".into(),
            toml::Value::Array(
                ["diaspora", "pool", "worker"]
                    .map(|a| toml::Value::String(a.into()))
                    .into(),
            ),
        );
        toml::Value::Table(w)
    });
    if let Some(toml::Value::Array(sites)) = spec.get_mut("site") {
        for site in sites {
            let Some(t) = site.as_table_mut() else {
                continue;
            };
            if let Some(toml::Value::String(link)) = t.remove("via") {
                let addr = env.links.get(&link).ok_or_else(|| TwinError::NoSuch {
                    what: "pool site",
                    kind: "link",
                    name: link.clone(),
                })?;
                t.insert("fabric_addr".into(), toml::Value::String(addr.to_string()));
            }
        }
    }
    toml::to_string(&spec).map_err(|source| TwinError::PoolSpecText {
        pool: p.name.clone(),
        source,
    })
}

impl HostKind for Pool {
    fn command(&self, at: HostAt<'_>) -> Result<HostCommand, TwinError> {
        let (scenario, index, env) = (at.scenario, at.index, at.env);
        let p = &scenario.pools[index];
        let dir = env.host_dir(&p.name);
        let spec = dir.join("spec.toml");
        Ok(HostCommand {
            invocation: Invocation::PoolRun(PoolRun {
                spec: spec.clone(),
                addr: env.addr_of(scenario, &p.node, &p.via)?,
                admin: env.node(&p.node).admin,
                ca: env.node(&p.node).ca.clone(),
                log_dir: dir.join("workers"),
                tick_ms: p.tick_ms,
            }),
            stdout: Some(dir.join("status.json")),
            files: vec![(spec, spec_text(p, env)?)],
            records: Records::None,
        })
    }

    /// `pool run` says so once its topics exist, before its first round.
    fn ready(&self) -> Option<Ready> {
        Some(Ready {
            log_line: "Ctrl-C stops it",
            within: Duration::from_secs(30),
        })
    }

    /// First, with the consumers: it stops its workers and prints its
    /// final status; the recorders then still see its last events.
    fn stop_after_drain(&self) -> Option<u8> {
        Some(0)
    }

    fn plan(&self, scenario: &Scenario) -> Vec<String> {
        scenario.pools.iter().map(|p| p.name.clone()).collect()
    }
}

impl HostKind for PoolRecorder {
    fn command(&self, at: HostAt<'_>) -> Result<HostCommand, TwinError> {
        let (scenario, env) = (at.scenario, at.env);
        let p = &scenario.pools[at.index / PoolTopic::ALL.len()];
        let which = PoolTopic::ALL[at.index % PoolTopic::ALL.len()];
        let out = recording(&env.host_dir(&which.recorder(&p.name)));
        Ok(HostCommand {
            invocation: Invocation::Record(Record {
                topic: which.topic(&p.name),
                addr: env.node(&p.node).data,
                ca: env.node(&p.node).ca.clone(),
            }),
            stdout: Some(out.clone()),
            files: Vec::new(),
            records: Records::PoolTopic {
                pool: p.name.clone(),
                topic: which,
                path: out,
            },
        })
    }

    /// Last: after the pools have stopped.
    fn stop_after_drain(&self) -> Option<u8> {
        Some(3)
    }

    fn plan(&self, scenario: &Scenario) -> Vec<String> {
        scenario
            .pools
            .iter()
            .flat_map(|p| PoolTopic::ALL.map(|t| t.recorder(&p.name)))
            .collect()
    }
}

/// Where a recorder in `dir` writes its items.
fn recording(dir: &Path) -> std::path::PathBuf {
    dir.join("items.jsonl")
}
