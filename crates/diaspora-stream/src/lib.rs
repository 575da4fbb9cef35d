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
//!
//! - [`producer`], [`consumer`]: the shells; [`core`]: their decisions.
//! - [`control`]: the stream's control events (on `TOPIC.qos`) and the
//!   `qos.*` metadata keys. The metadata builders and readers it re-exports
//!   (`control::int`, `control::get_u64`, …) are the fabric's one set
//!   ([`diaspora_fabric::item::meta`]).
//! - [`policy`], [`reduce`], [`spill`], [`ndarray`]: the policy, the
//!   reductions, the disk tier, array payloads.
//! - [`pipe`]: the loops behind `diaspora stream produce` and `diaspora
//!   stream consume` (lines or synthetic frames in, fates logged, drain and
//!   linger; text or JSON lines out), finishing on a
//!   [`Stop`](diaspora_fabric::Stop).
//! - [`init_topics`]: the stream's three topics, through the fabric's
//!   [`ensure_topic`](diaspora_fabric::ensure_topic).
//!
//! The acknowledgement hook a producer calls for provenance
//! ([`AckHook`](producer::AckHook), [`AckedItem`](producer::AckedItem)) is
//! the fabric's, re-exported in [`producer`]: a recorder implements it
//! without depending on this crate. Errors are [`StreamError`], one typed
//! variant per cause.
//!
//! What it does not do: store items durably (the fabric's logs do; the
//! spill tier only buffers what is not yet acknowledged), record lineage
//! (a hook hands it to diaspora-provenance), or join streams (diaspora-view).
#![warn(missing_docs)]

#[cfg(feature = "bench")]
pub mod bench;
pub mod consumer;
pub mod control;
pub mod core;
pub mod fuzzing;
pub mod ndarray;
pub mod pipe;
pub mod policy;
pub mod producer;
pub mod reduce;
pub mod spill;

pub use consumer::{QosConsumer, QosItem};
pub use policy::{FlowMode, Policy};
pub use producer::{ProducerFigures, ProducerProbe, QosProducer, Sent, StreamError};

/// Creates the topics a QoS stream on `topic` needs, skipping those that
/// exist ([`diaspora_fabric::ensure_topic`]): `topic` itself (with
/// `config`'s partitions and retention), its control topic `TOPIC.qos` and
/// its replay topic `TOPIC.replay` (one partition each). Returns the names
/// created. Works against an embedded node's broker and through the admin
/// plane alike; a topic that exists with another partition count is
/// [`FabricError::TopicMismatch`](diaspora_fabric::FabricError::TopicMismatch).
pub async fn init_topics<'a>(
    admin: impl Into<diaspora_fabric::TopicAdmin<'a>>,
    topic: &str,
    config: diaspora_proto::v1::TopicConfig,
) -> Result<Vec<String>, diaspora_fabric::FabricError> {
    use diaspora_fabric::{ensure_topic, Ensured, TopicSettings};
    let mut admin = admin.into();
    let one = TopicSettings {
        // Control and replay events are short-lived.
        retention_bytes: Some(256 << 20),
        ..TopicSettings::with_partitions(1)
    };
    let mut created = Vec::new();
    for (name, settings) in [
        (topic.to_string(), TopicSettings::from_config(config)),
        (control::control_topic(topic), one.clone()),
        (control::replay_topic(topic), one),
    ] {
        if ensure_topic(admin.reborrow(), &name, &settings).await? == Ensured::Created {
            created.push(name);
        }
    }
    Ok(created)
}
