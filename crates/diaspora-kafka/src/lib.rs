//! The Kafka-API tier (issue 20): where the mission's hierarchy ends in an
//! existing Kafka-API service (MSK, Confluent Cloud, Tansu in the tests).
//!
//! So far this crate holds the pure core of the Kafka bridge: items as
//! Kafka records and back ([`record`]), lossless for items a bridge wrote
//! and readable by plain Kafka consumers (metadata as headers). The bridge
//! itself — a Kafka sink and source on the fabric's
//! `BridgeSource`/`BridgeSink` seam, on `rdkafka` — is not built yet:
//! nothing here talks to a broker.

pub mod fuzzing;
pub mod record;
