//! Monitor hosts (`[[monitors]]`): `diaspora predict serve --monitor FILE`
//! against a node, reading the link metrics the twin publishes there. Its
//! events are JSON lines in `events.jsonl`.

use std::time::Duration;

use super::{HostCommand, HostEnv, HostKind, Phase, Ready, Records};
use crate::cli_args::{Invocation, PredictServe};
use crate::{Scenario, TwinError};

/// The monitor kind.
pub struct Monitor;

impl HostKind for Monitor {
    fn kind(&self) -> &'static str {
        "monitor"
    }

    fn phase(&self) -> Phase {
        Phase::Watch
    }

    fn plan(&self, scenario: &Scenario) -> Vec<String> {
        scenario.monitors.iter().map(|m| m.name.clone()).collect()
    }

    fn command(
        &self,
        scenario: &Scenario,
        index: usize,
        env: &HostEnv,
    ) -> Result<HostCommand, TwinError> {
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
}
