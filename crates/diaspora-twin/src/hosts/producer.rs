//! Producer hosts (`[[producers]]`): `diaspora produce --synthetic`, or
//! `diaspora stream produce` with an inline QoS policy, making `rate`
//! items/s for the scenario's duration. Producer `i`'s item ids start at
//! `i × 10¹²`, so ids are unique across producers. Acknowledgements go to
//! `acks.jsonl`, the final summary (stdout) to `summary.json`. The run
//! lasts until every producer has exited.

use super::{policy_file, HostAt, HostCommand, HostKind, Records};
use crate::cli_args::{Invocation, Produce, StreamProduce, Synthetic};
use crate::{Scenario, TwinError};

/// The producer kind.
pub struct Producer;

impl HostKind for Producer {
    fn command(&self, at: HostAt<'_>) -> Result<HostCommand, TwinError> {
        let (scenario, index, env) = (at.scenario, at.index, at.env);
        let p = &scenario.producers[index];
        let dir = env.host_dir(&p.name);
        let items = (p.rate * scenario.duration_s).ceil() as u64;
        let acks = dir.join("acks.jsonl");
        let summary = dir.join("summary.json");
        let mut files = Vec::new();
        let stream = match &p.qos {
            Some(policy) => {
                let (policy, text) = policy_file(&p.name, &dir, policy)?;
                files.push((policy.clone(), text));
                Some(StreamProduce {
                    policy,
                    payload: p.payload.clone().unwrap_or_else(|| "random".into()),
                })
            }
            None => None,
        };
        Ok(HostCommand {
            invocation: Invocation::Produce(Produce {
                stream,
                topic: p.topic.clone(),
                synthetic: Some(Synthetic {
                    items,
                    size: p.size,
                    rate: p.rate,
                    acks: acks.clone(),
                    id_start: index as u64 * 1_000_000_000_000,
                }),
                addr: env.addr_of(scenario, &p.node, &p.via)?,
                ca: env.node(&p.node).ca.clone(),
            }),
            stdout: Some(summary.clone()),
            files,
            records: Records::Acks {
                topic: p.topic.clone(),
                path: acks,
                items,
                summary: p.qos.is_some().then_some(summary),
            },
        })
    }

    fn completes(&self) -> bool {
        true
    }

    fn plan(&self, scenario: &Scenario) -> Vec<String> {
        scenario.producers.iter().map(|p| p.name.clone()).collect()
    }
}
