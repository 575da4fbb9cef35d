//! Consumer hosts (`[[consumers]]`): `diaspora consume --json` in a group,
//! or `diaspora stream consume` with an inline QoS policy and a checkpoint
//! in the host's directory. Each delivery is a JSON line in
//! `consumed.jsonl`.

use super::{policy_file, HostAt, HostCommand, HostKind, Records};
use crate::cli_args::{Consume, ConsumeMode, Invocation};
use crate::{Scenario, TwinError};

/// The consumer kind.
pub struct Consumer;

impl HostKind for Consumer {
    fn command(&self, at: HostAt<'_>) -> Result<HostCommand, TwinError> {
        let (scenario, index, env) = (at.scenario, at.index, at.env);
        let c = &scenario.consumers[index];
        let dir = env.host_dir(&c.name);
        let out = dir.join("consumed.jsonl");
        let mut files = Vec::new();
        let mode = match &c.qos {
            Some(policy) => {
                let (policy, text) = policy_file(&c.name, &dir, policy)?;
                files.push((policy.clone(), text));
                ConsumeMode::Stream {
                    name: c.name.clone(),
                    policy,
                    checkpoint: dir.join("checkpoint.json"),
                }
            }
            None => ConsumeMode::Group(c.group.clone().unwrap_or_else(|| c.name.clone())),
        };
        Ok(HostCommand {
            invocation: Invocation::Consume(Consume {
                mode,
                topic: c.topic.clone(),
                addr: env.addr_of(scenario, &c.node, &c.via)?,
                ca: env.node(&c.node).ca.clone(),
            }),
            stdout: Some(out.clone()),
            files,
            records: Records::Deliveries {
                topic: c.topic.clone(),
                path: out,
            },
        })
    }

    fn stop_after_drain(&self) -> Option<u8> {
        Some(0)
    }

    fn plan(&self, scenario: &Scenario) -> Vec<String> {
        scenario.consumers.iter().map(|c| c.name.clone()).collect()
    }
}
