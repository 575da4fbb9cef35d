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
//! **Bridges** ([`bridge`]) mirror a topic from one node to another, exactly
//! once across outages and restarts. The loop runs over two traits,
//! [`BridgeSource`] and [`BridgeSink`], whose docs state what each side must
//! guarantee (a sink recognises a re-sent batch by producer id and sequence;
//! a source resumes from a durable position); the fabric pair is the first
//! implementation, and another system's pair lives in its own crate.
//!
//! What it does not do: replication of a partition between nodes (a bridge
//! copies items, it does not fail over), or quality-of-service policy
//! (diaspora-stream).

#![warn(missing_docs)]

pub mod admin;
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
pub use bridge::{Bridge, BridgeConfig, BridgeSink, BridgeSource, BridgeStats};
pub use broker::{Broker, TopicSettings};
pub use client::{Client, ClientConfig, Lane};
pub use config::{Limits, NodeConfig};
pub use consumer::{Consumer, ConsumerConfig, StartFrom};
pub use diaspora_log::{Compression, FsyncPolicy};
pub use error::{FabricError, Result};
pub use node::Node;
pub use producer::{Delivered, Delivery, Producer, ProducerConfig};
