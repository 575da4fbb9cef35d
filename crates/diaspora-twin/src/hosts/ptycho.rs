//! The ptychography loop's stages (`[ptycho]`): `diaspora demo --stage`
//! processes. `hpc` and `edge` start with the receivers (they wait for
//! their inputs); `detector` starts with the producers. The run waits for
//! all three to finish, and a stage that exits uncleanly — each checks its
//! own part, the edge the rollback from provenance — fails it.
//!
//! What they record: the detector the acknowledgements of its `frames`
//! stream and the edge every frame it received (so the twin's analysis
//! counts lost, duplicated and latency on `frames` as for any producer and
//! consumer), and each its timeline and summary (the report shows them).

use super::{HostAt, HostCommand, HostKind, Records};
use crate::cli_args::{DemoStage, Invocation};
use crate::scenario::PtychoLoop;
use crate::{Scenario, TwinError};

/// The data topic the detector and the edge share.
pub const FRAMES: &str = "frames";

/// `hpc` and `edge`.
pub struct Service;

/// `detector`.
pub struct Detector;

const SERVICES: [&str; 2] = ["hpc", "edge"];

/// The host's name of a stage.
pub fn host_name(stage: &str) -> String {
    format!("ptycho-{stage}")
}

fn command(p: &PtychoLoop, stage: &str, at: HostAt<'_>) -> Result<HostCommand, TwinError> {
    let env = at.env;
    let name = host_name(stage);
    let dir = env.host_dir(&name);
    let node = if stage == "hpc" { &p.hpc } else { &p.edge };
    let events = dir.join("events.jsonl");
    let summary = dir.join("summary.json");
    let acks = (stage == "detector").then(|| dir.join("acks.jsonl"));
    let deliveries = (stage == "edge").then(|| dir.join("deliveries.jsonl"));
    let timeline = Records::Timeline {
        events: events.clone(),
        summary: summary.clone(),
    };
    let records = match (&acks, &deliveries) {
        (Some(a), _) => Records::Many(vec![
            Records::Acks {
                topic: FRAMES.into(),
                path: a.clone(),
                items: (p.scans * p.positions) as u64,
                summary: None,
            },
            timeline,
        ]),
        (_, Some(d)) => Records::Many(vec![
            Records::Deliveries {
                topic: FRAMES.into(),
                path: d.clone(),
            },
            timeline,
        ]),
        _ => timeline,
    };
    Ok(HostCommand {
        invocation: Invocation::DemoStage(DemoStage {
            stage: stage.into(),
            node: env.node(node).data,
            ca: env.node(node).ca.clone(),
            // One store for the experiment, beside the hosts.
            provenance: env.work_dir.join("ptycho-prov.sqlite"),
            work_dir: dir.join("work"),
            acks,
            deliveries,
            events,
            scans: p.scans,
            positions: p.positions,
            args: p.args.clone(),
        }),
        stdout: Some(summary),
        files: Vec::new(),
        records,
    })
}

impl HostKind for Service {
    fn plan(&self, scenario: &Scenario) -> Vec<String> {
        match &scenario.ptycho {
            Some(_) => SERVICES.iter().map(|s| host_name(s)).collect(),
            None => Vec::new(),
        }
    }

    fn command(&self, at: HostAt<'_>) -> Result<HostCommand, TwinError> {
        let p = at.scenario.ptycho.as_ref().expect("planned");
        command(p, SERVICES[at.index], at)
    }

    fn completes(&self) -> bool {
        true
    }
}

impl HostKind for Detector {
    fn plan(&self, scenario: &Scenario) -> Vec<String> {
        match &scenario.ptycho {
            Some(_) => vec![host_name("detector")],
            None => Vec::new(),
        }
    }

    fn command(&self, at: HostAt<'_>) -> Result<HostCommand, TwinError> {
        let p = at.scenario.ptycho.as_ref().expect("planned");
        command(p, "detector", at)
    }

    fn completes(&self) -> bool {
        true
    }
}
