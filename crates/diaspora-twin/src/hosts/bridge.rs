//! Bridge hosts (`[[bridges]]`): `diaspora bridge` forwarding a topic from
//! one node to another, optionally through a link.

use super::{HostAt, HostCommand, HostKind, Records};
use crate::cli_args::{self, Invocation};
use crate::{Scenario, TwinError};

/// The bridge kind.
pub struct Bridge;

impl HostKind for Bridge {
    fn command(&self, at: HostAt<'_>) -> Result<HostCommand, TwinError> {
        let (scenario, index, env) = (at.scenario, at.index, at.env);
        let b = &scenario.bridges[index];
        Ok(HostCommand {
            invocation: Invocation::Bridge(cli_args::Bridge {
                name: b.name.clone(),
                topic: b.topic.clone(),
                to_topic: b.to_topic.clone().unwrap_or_else(|| b.topic.clone()),
                from: env.node(&b.from).data,
                to: env.addr_of(scenario, &b.to, &b.via)?,
                from_ca: env.node(&b.from).ca.clone(),
                to_ca: env.node(&b.to).ca.clone(),
                congestion: b.congestion.clone(),
                connections: b.connections,
            }),
            stdout: None,
            files: Vec::new(),
            records: Records::None,
        })
    }

    fn stop_after_drain(&self) -> Option<u8> {
        Some(1)
    }

    fn plan(&self, scenario: &Scenario) -> Vec<String> {
        scenario.bridges.iter().map(|b| b.name.clone()).collect()
    }
}
