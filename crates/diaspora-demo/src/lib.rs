//! `diaspora demo`: the ptychography online-training loop on the embedded
//! default ([`online`]) — a beamline's detector at the edge, ePIE and a
//! surrogate trained online at HPC, the switch to inference at the edge,
//! fine-tuning, and the rollback when a scan is found bad — with its HTML
//! report ([`report`]). [`skeleton`] is the streaming skeleton the loop grew
//! from (`diaspora demo --skeleton`).
//!
//! [`fuzzing`] holds the fuzz bodies of the loop's wire formats (targets in
//! `fuzz/`).
//!
//! This is an application crate, not a library layer: it prints its
//! progress and summary.

pub mod fuzzing;
pub mod online;
pub mod report;
pub mod skeleton;
pub mod stage;

pub use online::{run, LoopConfig, Summary};
