//! Topics (`[[topics]]`): not hosts, but one-shot `diaspora topic create`
//! (or `stream init` for a QoS stream topic) on each node that holds them,
//! once the nodes serve.

use std::path::Path;
use std::process::Command;

use super::HostEnv;
use crate::cli_args::{CreateTopic, Invocation};
use crate::{Scenario, TwinError};

/// Every topic creation of `scenario`: (topic, node, command), in order.
pub fn create_topics(scenario: &Scenario, env: &HostEnv) -> Vec<(String, String, Invocation)> {
    let mut out = Vec::new();
    for t in &scenario.topics {
        for n in &t.nodes {
            let a = env.node(n);
            let inv = Invocation::CreateTopic(CreateTopic {
                topic: t.name.clone(),
                stream: t.qos,
                partitions: Some(t.partitions),
                admin: a.admin,
                ca: a.ca.clone(),
            });
            out.push((t.name.clone(), n.clone(), inv));
        }
    }
    out
}

/// Creates every topic of `scenario`; a failure names the topic and node
/// and carries the command's stderr.
pub fn create(
    binary: &Path,
    scenario: &Scenario,
    env: &HostEnv,
    identity: &[(String, String)],
) -> Result<(), TwinError> {
    for (topic, node, inv) in create_topics(scenario, env) {
        let out = Command::new(binary)
            .args(inv.argv())
            .envs(identity.iter().map(|(k, v)| (k, v)))
            .output()
            .map_err(|source| TwinError::Command {
                what: "topic create",
                source,
            })?;
        if !out.status.success() {
            return Err(TwinError::TopicCreate {
                topic,
                node,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
    }
    Ok(())
}
