//! The fault timeline: the scenario's faults (outages, congestion,
//! bandwidth steps, kills, restarts, SIGSTOP/SIGCONT, SIGKILLs of a pool's
//! workers) as timed [`Action`]s ([`plan`], pure), applied to the links
//! and hosts while the producers run. What was applied, and when, is
//! returned ([`Applied`]): the timeline wakes every 200 ms, so an action
//! lands up to that long after its planned time, and the pool analysis
//! measures from the real time.

use std::collections::HashMap;

use tokio::time::{Duration, Instant};

use crate::hosts::Hosts;
use crate::metrics_sink::MetricsSink;
use crate::results::FaultRecord;
use crate::scenario::{FaultKind, Scenario};
use crate::{LinkParams, Relay, TwinError};

/// A change the timeline makes at a time.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Set a link's parameters (both directions).
    Link {
        /// The link.
        link: String,
        /// Client → node.
        up: LinkParams,
        /// Node → client.
        down: LinkParams,
    },
    /// SIGKILL a host.
    Kill(String),
    /// Start a host again.
    Restart(String),
    /// SIGSTOP a host.
    Stop(String),
    /// SIGCONT a host.
    Cont(String),
    /// SIGKILL a host's oldest child process.
    KillChild(String),
}

/// An action as it was applied: when, and what (the faults the analysis
/// measures from; congestion steps and bandwidth changes are not listed).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Applied {
    /// When, µs since the Unix epoch.
    pub at_us: i64,
    /// What.
    #[serde(flatten)]
    pub what: AppliedKind,
}

/// What was applied.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AppliedKind {
    /// A link went dark (an outage began).
    LinkDown {
        /// The link.
        link: String,
    },
    /// A dark link came back.
    LinkUp {
        /// The link.
        link: String,
    },
    /// A host was SIGKILLed.
    Kill {
        /// The host.
        host: String,
    },
    /// A host was started again (the time it was spawned, before it was
    /// ready).
    Restart {
        /// The host.
        host: String,
    },
    /// A host's child process was SIGKILLed.
    KillChild {
        /// The host.
        host: String,
        /// The child's pid (none: the host had no child then).
        pid: Option<u32>,
    },
}

/// What the timeline did.
#[derive(Debug, Clone, Default)]
pub(crate) struct TimelineOutcome {
    /// The producers' failures (unclean exits, or not finishing in time).
    pub producer_failures: Vec<String>,
    /// The faults as applied.
    pub applied: Vec<Applied>,
}

/// Turns the fault schedule into timed actions (sorted by time) and report
/// windows, given each link's base parameters (up, down). Pure.
pub fn plan(
    s: &Scenario,
    base: &HashMap<String, (LinkParams, LinkParams)>,
) -> (Vec<(f64, Action)>, Vec<FaultRecord>) {
    let mut actions = Vec::new();
    let mut windows = Vec::new();
    let scaled = |p: &LinkParams, f: f64| {
        let mut p = p.clone();
        p.bandwidth_bps = p.bandwidth_bps.map(|b| ((b as f64 * f) as u64).max(8_000));
        p
    };
    for f in &s.faults {
        let at = f.at_s;
        match &f.kind {
            FaultKind::Outage { link, duration_s } => {
                let (up, down) = base[link].clone();
                let (mut bu, mut bd) = (up.clone(), down.clone());
                bu.blackhole = true;
                bd.blackhole = true;
                actions.push((
                    at,
                    Action::Link {
                        link: link.clone(),
                        up: bu,
                        down: bd,
                    },
                ));
                actions.push((
                    at + duration_s,
                    Action::Link {
                        link: link.clone(),
                        up,
                        down,
                    },
                ));
                windows.push(FaultRecord {
                    start_s: at,
                    end_s: at + duration_s,
                    label: format!("outage {link}"),
                });
            }
            FaultKind::Congestion {
                link,
                to_fraction,
                ramp_s,
                hold_s,
            } => {
                let (up, down) = &base[link];
                let steps = 20;
                for k in 0..=steps {
                    let x = k as f64 / steps as f64;
                    let frac = 1.0 - (1.0 - to_fraction) * x;
                    actions.push((
                        at + ramp_s * x,
                        Action::Link {
                            link: link.clone(),
                            up: scaled(up, frac),
                            down: scaled(down, frac),
                        },
                    ));
                    let back = at + ramp_s + hold_s + ramp_s * x;
                    let frac_up = to_fraction + (1.0 - to_fraction) * x;
                    actions.push((
                        back,
                        Action::Link {
                            link: link.clone(),
                            up: scaled(up, frac_up),
                            down: scaled(down, frac_up),
                        },
                    ));
                }
                windows.push(FaultRecord {
                    start_s: at,
                    end_s: at + 2.0 * ramp_s + hold_s,
                    label: format!("congestion {link} to {:.0}%", to_fraction * 100.0),
                });
            }
            FaultKind::Bandwidth { link, mbit } => {
                let (up, down) = &base[link];
                let set = |p: &LinkParams| {
                    let mut p = p.clone();
                    p.bandwidth_bps = Some((mbit * 1e6) as u64);
                    p
                };
                actions.push((
                    at,
                    Action::Link {
                        link: link.clone(),
                        up: set(up),
                        down: set(down),
                    },
                ));
                windows.push(FaultRecord {
                    start_s: at,
                    end_s: at,
                    label: format!("{link} → {mbit} Mbit/s"),
                });
            }
            FaultKind::Kill { host } => {
                actions.push((at, Action::Kill(host.clone())));
                let back = s.faults.iter().find_map(|g| match &g.kind {
                    FaultKind::Restart { host: h } if h == host && g.at_s >= at => Some(g.at_s),
                    _ => None,
                });
                windows.push(FaultRecord {
                    start_s: at,
                    end_s: back.unwrap_or(at),
                    label: format!("SIGKILL {host}"),
                });
            }
            FaultKind::Restart { host } => actions.push((at, Action::Restart(host.clone()))),
            FaultKind::Stop { host } => {
                actions.push((at, Action::Stop(host.clone())));
                let back = s.faults.iter().find_map(|g| match &g.kind {
                    FaultKind::Cont { host: h } if h == host && g.at_s >= at => Some(g.at_s),
                    _ => None,
                });
                windows.push(FaultRecord {
                    start_s: at,
                    end_s: back.unwrap_or(at),
                    label: format!("SIGSTOP {host}"),
                });
            }
            FaultKind::Cont { host } => actions.push((at, Action::Cont(host.clone()))),
            FaultKind::KillChild { host } => {
                actions.push((at, Action::KillChild(host.clone())));
                windows.push(FaultRecord {
                    start_s: at,
                    end_s: at,
                    label: format!("SIGKILL a worker of {host}"),
                });
            }
        }
    }
    actions.sort_by(|a, b| a.0.total_cmp(&b.0));
    (actions, windows)
}

/// Applies one action; returns the status line that says what it did,
/// and the fault as applied if it is one the analysis measures from
/// (`dark`: the links now blackholed).
async fn apply(
    action: Action,
    relays: &HashMap<String, Relay>,
    hosts: &mut Hosts,
    metrics: &mut Option<MetricsSink>,
    dark: &mut std::collections::HashSet<String>,
) -> Result<(String, Option<AppliedKind>), TwinError> {
    Ok(match action {
        Action::Link { link, up, down } => {
            let r = &relays[&link];
            let applied = match (up.blackhole, dark.contains(&link)) {
                (true, false) => Some(AppliedKind::LinkDown { link: link.clone() }),
                (false, true) => Some(AppliedKind::LinkUp { link: link.clone() }),
                _ => None,
            };
            if up.blackhole {
                dark.insert(link.clone());
            } else {
                dark.remove(&link);
            }
            let status = if up.blackhole {
                format!("{link}: outage")
            } else {
                format!("{link}: {:?} bit/s", up.bandwidth_bps)
            };
            if let Some(m) = metrics {
                let cap = if up.blackhole {
                    Some(0)
                } else {
                    up.bandwidth_bps
                };
                m.set_capacity(&link, cap);
            }
            let refused = |source| TwinError::LinkParams {
                link: link.clone(),
                source,
            };
            r.set_up(up).map_err(refused)?;
            r.set_down(down).map_err(refused)?;
            (status, applied)
        }
        Action::Kill(h) => {
            hosts.kill(&h);
            (format!("SIGKILL {h}"), Some(AppliedKind::Kill { host: h }))
        }
        Action::Restart(h) => {
            hosts.restart(&h).await?;
            (
                format!("restart {h}"),
                Some(AppliedKind::Restart { host: h }),
            )
        }
        Action::Stop(h) => {
            hosts.signal(&h, libc::SIGSTOP);
            (format!("SIGSTOP {h}"), None)
        }
        Action::Cont(h) => {
            hosts.signal(&h, libc::SIGCONT);
            (format!("SIGCONT {h}"), None)
        }
        Action::KillChild(h) => {
            let pid = hosts.kill_child(&h);
            let status = match pid {
                Some(pid) => format!("SIGKILL {h}'s worker {pid}"),
                None => format!("{h} has no worker to SIGKILL"),
            };
            (status, Some(AppliedKind::KillChild { host: h, pid }))
        }
    })
}

/// Runs the timeline from `t0` until the producers are done and every
/// action has been applied, or until duration + drain (then the producers
/// are killed). `progress` is called about every 200 ms. Returns the
/// producers' failures (unclean exits, or not finishing in time) and the
/// faults as applied.
pub(crate) async fn run(
    scenario: &Scenario,
    mut actions: Vec<(f64, Action)>,
    relays: &HashMap<String, Relay>,
    hosts: &mut Hosts,
    metrics: &mut Option<MetricsSink>,
    t0: Instant,
    progress: &(dyn Fn(f64, f64, &str) + Sync),
) -> Result<TimelineOutcome, TwinError> {
    actions.reverse();
    let total = scenario.duration_s + scenario.drain_s;
    let mut status = String::from("running");
    let mut producer_failures: Vec<String> = Vec::new();
    let mut applied = Vec::new();
    let mut dark = std::collections::HashSet::new();
    loop {
        let t = t0.elapsed().as_secs_f64();
        while actions.last().is_some_and(|(at, _)| *at <= t) {
            let (_, action) = actions.pop().expect("checked");
            let at_us = crate::runner::now_us();
            let (line, what) = apply(action, relays, hosts, metrics, &mut dark).await?;
            status = line;
            applied.extend(what.map(|what| Applied { at_us, what }));
        }
        let (running, failed) = hosts.completing();
        for name in failed {
            if !producer_failures.contains(&name) {
                producer_failures.push(name);
            }
        }
        progress(t, total, &status);
        if running.is_empty() && actions.is_empty() {
            break;
        }
        if t > scenario.duration_s + scenario.drain_s {
            hosts.kill_completing();
            if !running.is_empty() {
                producer_failures.push(format!(
                    "{} did not finish in duration + drain",
                    running.join(", ")
                ));
            }
            break;
        }
        if let Some(m) = metrics {
            m.poll(relays);
        }
        MetricsSink::sleep(metrics, Duration::from_millis(200)).await;
    }
    Ok(TimelineOutcome {
        producer_failures,
        applied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCENARIO: &str = r#"
name = "t"
duration_s = 60
[[nodes]]
name = "hpc"
[[links]]
name = "wan"
to = "hpc"
up = { delay_ms = 20, bandwidth_mbit = 100 }
[[faults]]
at_s = 10
kind = "outage"
link = "wan"
duration_s = 5
[[faults]]
at_s = 20
kind = "congestion"
link = "wan"
to_fraction = 0.5
ramp_s = 4
hold_s = 2
[[faults]]
at_s = 30
kind = "kill"
host = "hpc"
[[faults]]
at_s = 33
kind = "restart"
host = "hpc"
[[pools]]
name = "p"
node = "hpc"
spec = { scaling = { min_total = 1, max_total = 1 }, site = [{ name = "a", provider = "local", max = 1 }] }
[[faults]]
at_s = 40
kind = "kill_child"
host = "p"
"#;

    #[test]
    fn faults_become_sorted_actions_and_windows() {
        let s = Scenario::parse(SCENARIO).unwrap();
        let l = &s.links[0];
        let base = HashMap::from([(l.name.clone(), (l.up.clone(), l.up.clone()))]);
        let (actions, windows) = plan(&s, &base);
        assert!(actions.windows(2).all(|w| w[0].0 <= w[1].0));
        // Outage: blackhole at 10 s, the base parameters back at 15 s.
        assert!(matches!(&actions[0], (t, Action::Link { up, .. }) if *t == 10.0 && up.blackhole));
        assert!(matches!(&actions[1], (t, Action::Link { up, .. }) if *t == 15.0 && *up == l.up));
        // Congestion: 21 steps down over the ramp, 21 back up; the bottom
        // is half the bandwidth.
        let congestion: Vec<_> = actions
            .iter()
            .filter(|(t, a)| (20.0..=30.0).contains(t) && matches!(a, Action::Link { .. }))
            .collect();
        assert_eq!(congestion.len(), 42);
        let bottom = congestion
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Link { up, .. } => up.bandwidth_bps,
                _ => None,
            })
            .min();
        assert_eq!(bottom, Some(50_000_000));
        assert!(actions.contains(&(30.0, Action::Kill("hpc".into()))));
        assert!(actions.contains(&(33.0, Action::Restart("hpc".into()))));
        assert_eq!(actions.last(), Some(&(40.0, Action::KillChild("p".into()))));
        let labels: Vec<(f64, f64, &str)> = windows
            .iter()
            .map(|w| (w.start_s, w.end_s, w.label.as_str()))
            .collect();
        assert_eq!(
            labels,
            vec![
                (10.0, 15.0, "outage wan"),
                (20.0, 30.0, "congestion wan to 50%"),
                (30.0, 33.0, "SIGKILL hpc"),
                (40.0, 40.0, "SIGKILL a worker of p"),
            ]
        );
    }
}
