//! The Kafka-API tier (issue 20): where the mission's hierarchy ends in an
//! existing Kafka-API service (MSK, Confluent Cloud; Tansu in the tests).
//!
//! - [`record`]: items as Kafka records and back (pure): lossless for
//!   items a bridge wrote, readable by plain Kafka consumers (metadata as
//!   headers).
//! - [`config`]: bootstrap servers, TLS and SASL (SCRAM, PLAIN,
//!   OAUTHBEARER from a token file) as librdkafka settings.
//! - [`sink`] and [`source`]: a Kafka partition as a sink and as a source
//!   on the fabric's `BridgeSink`/`BridgeSource` seam, so the fabric's
//!   bridge loop (acknowledge, commit, reconnect) runs them.
//! - [`bridge`]: [`bridge::to_kafka`] and [`bridge::from_kafka`].
//! - [`bench`]: `diaspora bench kafka-bridge`, the bridge against a plain
//!   Kafka producer on the same broker.
//! - [`reader`]: a plain reader of a Kafka topic as items, for consumers
//!   outside the fabric (`diaspora kafka-consume`, triggers).
//!
//! Exactly once without Kafka transactions: towards Kafka, every record
//! names its source place and a reconnecting sink reads its partition's
//! tail to know what is held; from Kafka, the group offset is committed
//! only after the fabric acknowledged, and the fabric sink recognises a
//! re-sent record by its offset.

#[cfg(feature = "client")]
pub mod bench;
#[cfg(feature = "client")]
pub mod bridge;
#[cfg(feature = "client")]
pub mod client;
pub mod config;
pub mod fuzzing;
#[cfg(feature = "client")]
pub mod reader;
pub mod record;
#[cfg(feature = "client")]
pub mod sink;
#[cfg(feature = "client")]
pub mod source;
pub mod testing;
