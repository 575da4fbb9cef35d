//! Monitor hosts (`[[monitors]]`): `diaspora predict serve --monitor FILE`
//! against a node, reading the link metrics the twin publishes there. Its
//! events are JSON lines in `events.jsonl`.

use std::time::Duration;

use super::{HostAt, HostCommand, HostKind, Ready, Records};
use crate::cli_args::{Invocation, PredictServe};
use crate::{Scenario, TwinError};

/// The monitor kind.
pub struct Monitor;

impl HostKind for Monitor {
    fn command(&self, at: HostAt<'_>) -> Result<HostCommand, TwinError> {
        let (scenario, index, env) = (at.scenario, at.index, at.env);
        let m = &scenario.monitors[index];
        let a = env.node(&m.node);
        let events = env.host_dir(&m.name).join("events.jsonl");
        Ok(HostCommand {
            invocation: Invocation::PredictServe(PredictServe {
                monitor: m.file.clone(),
                addr: a.data,
                ca: a.ca.clone(),
                admin: a.admin,
            }),
            stdout: Some(events.clone()),
            files: Vec::new(),
            records: Records::Events { path: events },
        })
    }

    fn ready(&self) -> Option<Ready> {
        Some(Ready {
            log_line: "monitor ",
            within: Duration::from_secs(60),
        })
    }

    fn stop_after_drain(&self) -> Option<u8> {
        Some(2)
    }

    fn plan(&self, scenario: &Scenario) -> Vec<String> {
        scenario.monitors.iter().map(|m| m.name.clone()).collect()
    }
}
