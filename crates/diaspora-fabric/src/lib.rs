//! # diaspora-fabric
//!
//! The event fabric of diaspora: a **node** that owns topics → partitions →
//! durable logs ([`diaspora_log`]), serves a **QUIC data plane** (quinn +
//! rustls/ring, length-prefixed protobuf frames, see `docs/PROTOCOL.md`) and a
//! **gRPC admin plane** (tonic), and the **clients**: an idempotent, batching,
//! pipelining [`Producer`] and a [`Consumer`] with assignment, consumer groups,
//! seek and bounded prefetch.
//!
//! TLS is always on. A node without a certificate directory makes a
//! development CA in `DATA_DIR/certs`; clients trust exactly the CA file they
//! are given.
//!
//! The same [`Node`] runs in-process (embedded mode: tests, examples, the
//! demo) and behind `diaspora serve`.
//!
//! ```no_run
//! use diaspora_fabric::{Client, ClientConfig, Consumer, ConsumerConfig, Node, NodeConfig, Producer,
//!     ProducerConfig, TopicSettings, item::payload_item};
//! # async fn demo() -> Result<(), diaspora_fabric::FabricError> {
//! let node = Node::start(NodeConfig::new("/tmp/diaspora-doc")).await?;
//! node.broker().create_topic("frames", TopicSettings::with_partitions(2))?;
//! let client = Client::connect(ClientConfig::new(node.data_addr(), node.ca_file())).await?;
//! let producer = Producer::new(&client, ProducerConfig::new("frames")).await?;
//! let delivered = producer.send(payload_item(bytes::Bytes::from_static(b"hello"))).await?.await?;
//! let mut consumer = Consumer::assign(&client, ConsumerConfig::new("frames"), &[delivered.partition]).await?;
//! let item = consumer.next().await?;
//! assert_eq!(&item.payload()[..], b"hello");
//! # Ok(()) }
//! ```
//!
//! What it does not do: replication between nodes (bridges, a later layer,
//! mirror topics across sites), or quality-of-service policy (diaspora-stream).

#![warn(missing_docs)]

pub mod admin;
#[cfg(feature = "bench")]
pub mod bench;
pub mod bridge;
pub mod broker;
pub mod client;
pub mod config;
pub mod consumer;
pub mod error;
pub mod item;
pub mod node;
pub mod producer;
pub mod server;
pub mod tls;
pub mod wire;

pub use admin::AdminClient;
pub use bridge::{Bridge, BridgeConfig, BridgeStats};
pub use broker::{Broker, TopicSettings};
pub use client::{Client, ClientConfig, Lane};
pub use config::{Limits, NodeConfig};
pub use consumer::{Consumer, ConsumerConfig, StartFrom};
pub use diaspora_log::{Compression, FsyncPolicy};
pub use error::{FabricError, Result};
pub use node::Node;
pub use producer::{Delivered, Delivery, Producer, ProducerConfig};
