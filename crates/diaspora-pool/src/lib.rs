//! Elastic, resilient compute pools.
//!
//! A pool keeps workers alive at one or more sites through failures,
//! scales them with demand, retries their tasks, and drains workers before
//! their walltime ends. Following the project's pure-core/thin-shell habit:
//!
//! - [`spec`]: the pool spec (TOML), validated with named faults;
//! - [`policy`]: the scaling policy — a pure function of an observation
//!   (sites, backlog, catch-up, predictions) and an injected clock;
//! - [`workers`]: the worker registry — phases, heartbeats, time-outs,
//!   walltime drains, and one `Lost`/`Left` event per worker that goes;
//! - [`attempts`]: the attempt book — retry budgets, back-off, uncharged
//!   losses, idempotent results;
//! - [`provider`]: the shells that run workers — local child processes and
//!   Slurm batch jobs, behind one trait;
//! - [`supervisor`]: registry + policy + providers, stepped by a clock;
//! - [`messages`]: the pool's messages on the fabric and their parsers;
//! - [`fabric`] (feature `fabric`, on by default): the pool loop and the
//!   worker loop on the fabric, and the calls behind `diaspora pool`;
//! - [`bench`] (feature `fabric`): `diaspora bench pool`.
//!
//! Parsl's provider/blocks/strategy model is the reference; where users
//! complain of it, this crate differs: a walltime drain replaces a worker
//! before the limit and costs no task a retry; a job missing from one
//! `squeue` is not declared lost (it must be missing for several polls and
//! a grace time, and `sacct` is asked first); every lost worker is an
//! event with its reason and the tasks it held.
#![warn(missing_docs)]

pub mod attempts;
#[cfg(feature = "fabric")]
pub mod bench;
#[cfg(feature = "fabric")]
pub mod fabric;
pub mod messages;
pub mod migrate;
pub mod policy;
#[cfg(feature = "fabric")]
pub mod prov;
pub mod provider;
pub mod spec;
pub mod supervisor;
pub mod workers;

pub use attempts::{AttemptBook, Verdict};
pub use policy::{Action, Observation, Policy, Reason};
pub use provider::{LaunchRequest, Provider, ProviderError};
pub use spec::{PoolSpec, ProviderKind, SiteSpec, SpecError, SpecFault};
pub use supervisor::{PoolEvent, Supervisor};
pub use workers::{JobEnd, JobState, Registry, WorkerEvent};
