//! # diaspora-twin — virtual infrastructure twins
//!
//! A *virtual infrastructure twin* runs a scenario — hosts, the links between
//! them, and a fault schedule — on one machine ([`run`], see "Running a
//! scenario" below). Kernel netem is not available,
//! so this crate emulates links in user space: a UDP [`Relay`] is placed in
//! front of a QUIC endpoint and the client is given the relay's address
//! instead of the server's. Everything the client sends crosses the relay's
//! *up* link to the target; everything the target answers crosses its *down*
//! link back.
//!
//! ## The link model
//!
//! * **A link direction** is described by [`LinkParams`]: one-way delay with
//!   uniform jitter, an optional bandwidth limit with a bounded drop-tail
//!   queue in front of it, independent random loss, optional
//!   Gilbert–Elliott burst loss, and a blackhole flag for outages. The two
//!   directions of a relay are independent links with their own parameters
//!   and state; all clients of one relay share them (one relay is one link).
//! * **The pure core** ([`LinkModel`]) decides each packet's fate —
//!   [`Verdict::Deliver`] at a time, or [`Verdict::Drop`] with a
//!   [`DropReason`] — from the packet's arrival time and size. It has no I/O
//!   and no clock of its own: time is a [`Duration`](std::time::Duration)
//!   since the start of the run, passed in; randomness is a seeded ChaCha
//!   generator. Same seed and inputs, same verdicts — so the model is tested
//!   exhaustively and deterministically, without sockets or sleeps. The
//!   pipeline (blackhole → queue and serializer → wire loss → propagation) is
//!   described in the [`link`] module.
//! * **Schedules** ([`Schedule`]) change parameters over time — replacement
//!   parameter sets, outages, bandwidth steps and ramps (congestion) — as a
//!   pure function [`Schedule::params_at`] of base parameters and time.
//!   [`ScheduledLink`] applies a schedule to a model at the exact change
//!   times.
//! * **The shell** ([`Relay`]) is a tokio UDP relay: it receives packets,
//!   asks the core, holds delivered packets until their time and sends them
//!   from a dedicated thread per direction. It bounds its sessions and held
//!   bytes, expires idle sessions, counts every packet's fate
//!   ([`RelayStats`]), and accepts parameter changes at run time for fault
//!   injection.
//! * **Calibration** ([`calibrate()`]) measures delay, throughput and loss
//!   through a real relay on this machine against the configured values, so
//!   a twin's results can be trusted within known error bars.
//!
//! ## Running a scenario
//!
//! A scenario (`twins/*.toml`, [`Scenario`]) declares hosts, topics, links,
//! a fault schedule, a workload and assertions. [`run`] plays it: every
//! host is a real process of the `diaspora` binary, every link a
//! [`Relay`] in this process. It is a sequence of steps, each in its own
//! module:
//!
//! | step | module | what |
//! |---|---|---|
//! | load | [`scenario`] | parse and validate the file ([`TwinError`] names the entry, the value and the limit) |
//! | plan and start hosts | [`hosts`] | one plug-in ([`hosts::HostKind`]) per kind of host — node, bridge, consumer, pool and its recorders, monitor, producer, task stream — started phase by phase |
//! | command lines | [`cli_args`] | every `diaspora` command line, built from typed values in one place; [`example_invocations`] lists them for the CLI's parser to check |
//! | fault timeline | [`timeline`] | outages, congestion, bandwidth steps, kills, restarts, SIGSTOP/SIGCONT, SIGKILLs of a pool's workers as timed actions on the relays and hosts |
//! | link metrics | [`metrics`] | the links' utilisation and more, sampled as telemetry events, written to a file or published on a node |
//! | analysis | [`results`], [`analysis`], [`pool_analysis`] | the hosts' records matched (lost, duplicated, latency, recovery; a pool's results per task key, live workers and recovery after each fault), the assertions checked: [`RunResults`] |
//! | report | [`report`] | a self-contained HTML report of a run |
//! | orchestration | [`runner`] | [`run`]: the steps above, and no host outlives it |
//!
//! The runner does **not**: run hosts on other machines or in containers
//! (every host is a local process on loopback); isolate the hosts' CPU or
//! memory from each other; restart a host on its own (only a scheduled
//! `restart` fault does); check that a host's flags exist — the CLI's
//! parser does that, in a test over [`example_invocations`]; or keep the
//! hosts' directories of an earlier run in the same work directory (it
//! clears them).
//!
//! ## What is not emulated
//!
//! * **Reordering**: deliveries in one direction are in arrival order; jitter
//!   never reorders (a packet whose jittered time falls before its
//!   predecessor's is delivered together with it).
//! * **Duplication** and **corruption**: every packet arrives once and intact
//!   or not at all.
//! * **MTU**: packets of any size pass; there is no fragmentation or
//!   size-based drop. Bandwidth counts UDP payload bytes, not IP/UDP headers.
//! * **Cross traffic and shared bottlenecks between relays**: each relay is
//!   an isolated link.
//! * The relay's own costs: it runs in user space, one system call per
//!   packet per hop, so at high packet rates the host CPU — not the model —
//!   may be the bottleneck. [`calibrate()`] shows where that happens.
//!
//! ```
//! use std::time::Duration;
//! use diaspora_twin::{LinkModel, LinkParams, Verdict};
//!
//! let params: LinkParams = toml::from_str("delay_ms = 20\nbandwidth_mbit = 100\nloss = 0.0").unwrap();
//! let mut link = LinkModel::new(params, 7).unwrap();
//! // 1250 bytes at 100 Mbit/s take 100 µs to serialize, then 20 ms to arrive.
//! let verdict = link.on_packet(Duration::ZERO, 1250);
//! assert_eq!(verdict, Verdict::Deliver { at: Duration::from_micros(20_100) });
//! ```

#![warn(missing_docs)]

pub mod analysis;
pub mod auth;
pub mod calibrate;
pub mod cli_args;
pub mod error;
pub mod hosts;
pub mod link;
pub mod metrics;
mod metrics_sink;
pub mod pool_analysis;
pub mod relay;
pub mod report;
pub mod results;
pub mod runner;
pub mod rxtime;
pub mod scenario;
pub mod timeline;

pub use calibrate::{calibrate, CalibrateConfig, CalibrateError, CalibrationReport};
pub use cli_args::{example_invocations, scenario_invocations, ExampleInvocation, Invocation};
pub use error::{RecordError, TwinError};
pub use link::{
    Change, DropReason, GilbertElliott, LinkModel, LinkParams, ParamsError, Schedule,
    ScheduledChange, ScheduledLink, Verdict,
};
pub use relay::{Counter, DirectionStats, Relay, RelayConfig, RelayError, RelayStats};
pub use runner::{run, MetricsOptions, RunOptions, RunResults};
pub use scenario::Scenario;
