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

#[cfg(feature = "bench")]
pub mod bench;
pub mod consumer;
pub mod control;
pub mod core;
pub mod fuzzing;
pub mod ndarray;
pub mod policy;
pub mod producer;
pub mod reduce;
pub mod spill;

pub use consumer::{QosConsumer, QosItem};
pub use policy::{FlowMode, Policy};
pub use producer::{ProducerFigures, ProducerProbe, QosProducer, Sent, StreamError};

/// Creates the topics a QoS stream on `topic` needs, skipping those that
/// exist: `topic` itself (with `partitions` and `config`'s retention), its
/// control topic `TOPIC.qos` and its replay topic `TOPIC.replay` (one
/// partition each). Returns the names created.
pub async fn init_topics(
    admin: &mut diaspora_fabric::AdminClient,
    topic: &str,
    config: diaspora_proto::v1::TopicConfig,
) -> Result<Vec<String>, diaspora_fabric::FabricError> {
    use diaspora_proto::v1::{ErrorCode, TopicConfig};
    let one = TopicConfig {
        partitions: 1,
        // Control and replay events are short-lived.
        retention_bytes: 256 << 20,
        ..Default::default()
    };
    let mut created = Vec::new();
    for (name, cfg) in [
        (topic.to_string(), config),
        (control::control_topic(topic), one.clone()),
        (control::replay_topic(topic), one),
    ] {
        match admin.create_topic(&name, cfg).await {
            Ok(()) => created.push(name),
            Err(diaspora_fabric::FabricError::Remote {
                code: ErrorCode::TopicExists,
                ..
            }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}
