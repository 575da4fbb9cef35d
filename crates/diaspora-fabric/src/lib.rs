//! # diaspora-fabric
//!
//! The event fabric of diaspora, and the vocabulary every service above it
//! shares.
//!
//! - **The node** ([`Node`], [`Broker`]): topics → partitions → durable logs
//!   ([`diaspora_log`]), served on a **QUIC data plane** (quinn +
//!   rustls/ring, length-prefixed protobuf frames, see `docs/PROTOCOL.md`;
//!   [`server`], [`wire`]) and a **gRPC admin plane** (tonic; [`admin`]).
//!   The same node runs in-process (embedded mode: tests, examples, the
//!   demo) and behind `diaspora serve`.
//! - **The clients**: a [`Client`] connection with lanes, an idempotent,
//!   batching, pipelining [`Producer`] and a [`Consumer`] with assignment,
//!   consumer groups, seek and bounded prefetch; an [`AdminClient`] for the
//!   admin plane.
//! - **Creating topics** ([`topic`]): [`ensure_topic`] creates a topic or
//!   finds it with the partition count asked for, against an embedded
//!   node's broker or through the admin plane alike ([`TopicAdmin`]). Every
//!   service that needs topics at start uses it.
//! - **The item vocabulary** ([`item`]): [`ItemRef`] (topic, partition,
//!   offset — the one location type: provenance records, view metastreams
//!   and acknowledgements all use it), [`item::meta`] (building and reading
//!   metadata values, and their one text form), [`AckHook`] / [`AckedItem`]
//!   (what a producer tells a provenance recorder), [`item::now_us`] (the
//!   wall clock items are stamped with) and [`item::IdHasher`] (for maps
//!   keyed by ids the system assigned). Services use these and define none
//!   of their own.
//! - **Bridges** ([`bridge`]): copy a topic from one node to another,
//!   exactly once.
//! - **Pipes** ([`pipe`]): the loops behind `diaspora produce` and
//!   `diaspora consume` — lines or synthetic payloads in, text or JSON
//!   lines out — and [`Stop`] ([`shutdown`]), the one flag every service
//!   loop finishes on (commands set it at SIGTERM or Ctrl-C).
//!
//! TLS is always on. A node without a certificate directory makes a
//! development CA in `DATA_DIR/certs`; clients trust exactly the CA file they
//! are given.
//!
//! ```no_run
//! use diaspora_fabric::{ensure_topic, Client, ClientConfig, Consumer, ConsumerConfig, Node,
//!     NodeConfig, Producer, ProducerConfig, TopicSettings, item::payload_item};
//! # async fn demo() -> Result<(), diaspora_fabric::FabricError> {
//! let node = Node::start(NodeConfig::new("/tmp/diaspora-doc")).await?;
//! ensure_topic(node.broker(), "frames", &TopicSettings::with_partitions(2)).await?;
//! let client = Client::connect(ClientConfig::new(node.data_addr(), node.ca_file())).await?;
//! let producer = Producer::new(&client, ProducerConfig::new("frames")).await?;
//! let delivered = producer.send(payload_item(bytes::Bytes::from_static(b"hello"))).await?.await?;
//! let mut consumer = Consumer::assign(&client, ConsumerConfig::new("frames"), &[delivered.partition]).await?;
//! let item = consumer.next().await?;
//! assert_eq!(&item.payload()[..], b"hello");
//! println!("read {}", item.item_ref()); // frames/0/0
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
//! What it does not do: replicate partitions between nodes (a node is one
//! machine; bridges copy topics between sites, they do not make a replica
//! set), quality-of-service policy — rates, buffering tiers, reduction,
//! replay (diaspora-stream) — joins (diaspora-view), lineage
//! (diaspora-provenance), or metrics export (diaspora-telemetry). It
//! defines the vocabulary those services share, never their policies.

#![warn(missing_docs)]

pub mod admin;
pub mod auth;
#[cfg(feature = "bench")]
pub mod bench;
pub mod bridge;
pub mod broker;
pub mod client;
pub mod config;
pub mod congestion;
pub mod consumer;
pub mod error;
pub mod group;
pub mod guard;
pub mod item;
pub mod node;
pub mod pipe;
pub mod producer;
pub mod server;
pub mod shutdown;
pub mod stats;
pub mod tls;
pub mod topic;
pub mod wire;

pub use admin::AdminClient;
pub use bridge::{Bridge, BridgeConfig, BridgeSink, BridgeSource, BridgeStats};
pub use broker::{Broker, TopicSettings};
pub use client::{Client, ClientConfig, Lane};
pub use config::{Congestion, Limits, NodeConfig};
pub use consumer::{Consumer, ConsumerConfig, StartFrom};
pub use diaspora_log::{Compression, FsyncPolicy};
pub use error::{FabricError, Result};
pub use guard::{AuthConfig, AuthMode, Guard, Session};
pub use item::{AckHook, AckedItem, ItemRef};
pub use node::Node;
pub use producer::{Delivered, Delivery, Producer, ProducerConfig};
pub use shutdown::Stop;
pub use topic::{ensure_topic, Ensured, TopicAdmin};
