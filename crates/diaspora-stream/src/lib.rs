//! QoS-aware streams over the diaspora event fabric.
//!
//! A [`QosProducer`](producer::QosProducer) and a
//! [`QosConsumer`](consumer::QosConsumer) share a declarative
//! [`Policy`](policy::Policy): target rate, latency bound, buffer tiers
//! (memory, then a local-disk spill directory), the replay window, the
//! flow-control mode (`backpressure`, `reduce`, `shed`), the reduction chain
//! and the reconstruction method.
//!
//! Every decision is made by deterministic cores with an injected clock
//! ([`core`]); the async shells only move bytes between them, the fabric
//! client and the spill files.
#![warn(missing_docs)]

pub mod ndarray;
pub mod spill;
