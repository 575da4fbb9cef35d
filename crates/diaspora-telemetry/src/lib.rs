//! # diaspora-telemetry
//!
//! What a diaspora process measures about itself, and where it goes.
//!
//! - **Tracing and OpenTelemetry** ([`init`], [`init_with`], [`layers`]): a
//!   `tracing-subscriber` registry with an `EnvFilter` (`RUST_LOG`, default
//!   `info`) and an fmt layer on stderr; and, only when the standard
//!   `OTEL_*` variables ask for it, OTLP/gRPC export of spans (through
//!   `tracing-opentelemetry`) and of metrics (an SDK meter provider with a
//!   periodic reader). Off by default. The [`TelemetryGuard`] flushes and
//!   shuts the exporters down.
//! - **A metric model and codec** ([`MetricSample`], [`MetricEvent`],
//!   [`encode_event`], [`decode_event`]): one snapshot of a process's
//!   metrics as bounded JSON.
//! - **A registry** ([`Registry`]): bounded counters, gauges and callbacks;
//!   snapshots with per-second rates of counters. When metrics export is on,
//!   its series are exported as observable instruments too.
//! - **Metrics on the fabric** (feature `fabric`, on by default):
//!   [`MetricsPublisher`] publishes a snapshot every interval on a topic
//!   (default `diaspora.metrics`), creating it when told to through the
//!   fabric's one [`ensure_topic`](diaspora_fabric::ensure_topic) (see
//!   [`TopicCreation`]); [`subscribe`] reads them back — the predictor's
//!   input. Events are stamped with the fabric's clock
//!   ([`now_us`](diaspora_fabric::item::now_us)).
//! - **Collectors** (feature `fabric`): [`collect_broker`],
//!   [`collect_bridge`], [`collect_quic`] register the node's counters, a
//!   bridge's counters and QUIC path statistics on a registry;
//!   [`collect_fields`] registers any component's report struct (the QoS
//!   stream producer and consumer, a view) field by field.
//!
//! What it does not do: store or aggregate metrics over time, alert, or
//! export over OTLP/HTTP (gRPC only, one TLS stack: rustls with ring).
//!
//! Without default features the crate is the pure core (model, codec,
//! registry), as the fuzz target uses it.
//!
//! ```no_run
//! # #[cfg(all(feature = "otel", feature = "fabric"))]
//! # async fn demo(client: diaspora_fabric::Client) -> Result<(), diaspora_telemetry::TelemetryError> {
//! use diaspora_telemetry::{MetricsPublisher, PublisherConfig, Registry};
//! let _guard = diaspora_telemetry::init("edge-1")?; // keep alive until exit
//! let registry = Registry::global().clone();
//! diaspora_telemetry::collect_quic(&registry, "edge-hpc", client.clone())?;
//! let publisher = MetricsPublisher::start(client, PublisherConfig::new("edge-1"), registry).await?;
//! // ...
//! publisher.stop().await;
//! # Ok(()) }
//! ```
//!
//! ## Environment
//!
//! | Variable | Effect |
//! |---|---|
//! | `RUST_LOG` | `EnvFilter` directives for the stderr log and exported spans (default `info`) |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | collector gRPC endpoint for traces and metrics, e.g. `http://localhost:4317`; setting it turns export on |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` | per signal; each turns its own signal on and takes precedence |
//! | `OTEL_SDK_DISABLED` | `true`: no export at all |
//! | `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER` | `otlp` (default) or `none` |
//! | `OTEL_SERVICE_NAME` | `service.name` (overrides the name given to [`init`] and `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) |
//! | `OTEL_RESOURCE_ATTRIBUTES` | `k=v,k2=v2` resource attributes (values percent-decoded) |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` (and `_TRACES_`/`_METRICS_`) | only `grpc` (the default here); anything else is an error |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT` (and per signal) | export timeout, ms (default 10 000) |
//! | `OTEL_EXPORTER_OTLP_CERTIFICATE` (and per signal) | PEM CA for an `https` endpoint (required for https: no system roots) |
//! | `OTEL_METRIC_EXPORT_INTERVAL` | metric export interval, ms (default 60 000) |
//! | `OTEL_EXPORTER_OTLP_HEADERS` (and per signal) | read by the exporter itself: `k=v` gRPC metadata |
//!
//! ## Metric names
//!
//! Counters also appear in snapshots as `NAME.rate` (per second, over the
//! interval since the previous snapshot; see [`registry`]).
//!
//! | Name | Kind | Unit | Labels | Meaning |
//! |---|---|---|---|---|
//! | `node.items_appended` | counter | `{item}` | `node` | items appended to the node's logs |
//! | `node.bytes_appended` | counter | `By` | `node` | batch bytes appended |
//! | `node.items_fetched` | counter | `{item}` | `node` | items served to fetches |
//! | `node.bytes_fetched` | counter | `By` | `node` | bytes served to fetches |
//! | `node.connections_total` | counter | `{connection}` | `node` | connections accepted since start |
//! | `node.malformed_frames` | counter | `{frame}` | `node` | malformed frames received |
//! | `node.duplicate_batches` | counter | `{batch}` | `node` | idempotent retries absorbed |
//! | `node.connections_open` | gauge | `{connection}` | `node` | open connections |
//! | `node.storage_bytes` | gauge | `By` | `node` | bytes on disk over all partitions |
//! | `node.topics` | gauge | `{topic}` | `node` | topics |
//! | `node.uptime_s` | gauge | `s` | `node` | time since the node started |
//! | `bridge.forwarded` | counter | `{item}` | `bridge` | items acknowledged by the target |
//! | `bridge.duplicates_absorbed` | counter | `{batch}` | `bridge` | batches the target already held |
//! | `bridge.reconnects` | counter | `{reconnect}` | `bridge` | reconnections to either side |
//! | `bridge.skipped_expired` | counter | `{item}` | `bridge` | items expired before the bridge read them |
//! | `bridge.commits` | counter | `{commit}` | `bridge` | position commits |
//! | `bridge.failed_partitions` | gauge | `{partition}` | `bridge` | partitions stopped by an error |
//! | `quic.rtt_ms` | gauge | `ms` | `link` (`conn`) | smoothed round-trip time |
//! | `quic.cwnd_bytes` | gauge | `By` | `link` (`conn`) | congestion window |
//! | `quic.loss_fraction` | gauge | `1` | `link` (`conn`) | lost / sent packets over the connection's life |
//! | `quic.sent_packets` | counter | `{packet}` | `link` (`conn`) | packets sent |
//! | `quic.lost_packets` | counter | `{packet}` | `link` (`conn`) | packets declared lost |
//! | `quic.lost_bytes` | counter | `By` | `link` (`conn`) | bytes declared lost |
//! | `quic.congestion_events` | counter | `{event}` | `link` (`conn`) | congestion events |
//! | `quic.udp_tx_bytes`, `quic.udp_rx_bytes` | counter | `By` | `link` (`conn`) | UDP bytes sent, received |
//! | `stream.producer.FIELD` | counter | `{item}` | `topic`, `partition` | each counter of the QoS producer's report: `offered`, `accepted`, `acked`, `shed`, `reduced_away`, `spilled`, `resent`, `replayed`, `waits`, … |
//! | `stream.producer.memory_bytes`, `.spill_bytes` | gauge | `By` | `topic`, `partition` | buffer tiers in use now |
//! | `stream.producer.memory_fill` | gauge | `1` | `topic`, `partition` | memory tier over its cap |
//! | `stream.producer.unacked` | gauge | `{item}` | `topic`, `partition` | accepted, not yet acknowledged |
//! | `stream.producer.congested`, `.stages` | gauge | `1`, `{stage}` | `topic`, `partition` | flow controller: congested (0/1), reduction stages engaged |
//! | `stream.consumer.FIELD` | counter | `{item}` | `topic`, `consumer` | each counter of the QoS consumer's report: `delivered`, `reconstructed_missing`, `lost`, `duplicates`, `replay_requests`, … |
//! | `stream.consumer.held` | gauge | `{item}` | `topic`, `consumer` | items held for reordering |
//! | `stream.consumer.latency_ms` | gauge | `ms` | `topic`, `consumer` | now minus the latest item's timestamp (the consumer's lag in time) |
//! | `view.FIELD` | counter | `{item}` | `view` | each counter of the view's report: `items_read`, `emitted`, `delivered`, `acked`, `retracted`, `members_expired`, … |
//! | `view.pending`, `view.held`, `view.outbox` | gauge | `{member}`, `{item}` | `view` | members waiting to join, source items held, view items awaiting delivery |
//! | `telemetry.events_published` | counter | `{event}` | `source` | metric events acknowledged |
//! | `telemetry.events_failed` | counter | `{event}` | `source` | metric events that failed for good |
//! | `telemetry.snapshots_dropped` | counter | `{event}` | `source` | snapshots dropped (producer buffer full) |
//!
//! `diaspora stream produce|consume` and `diaspora view run` publish the
//! stream and view series with `--metrics-interval-ms` (through
//! [`collect_fields`]); `diaspora serve` and `diaspora bridge` the node and
//! bridge ones; `diaspora twin run` the `link.*` series of its emulated
//! links (see `diaspora-twin`'s `metrics` module).
//!
//! The interval loss of a link is `quic.lost_packets.rate / quic.sent_packets.rate`.
#![warn(missing_docs)]

#[cfg(feature = "fabric")]
pub mod collect;
pub mod error;
pub mod event;
pub mod fields;
#[cfg(feature = "otel")]
pub mod otel;
#[cfg(feature = "fabric")]
pub mod publish;
pub mod registry;

#[cfg(feature = "fabric")]
pub use collect::{collect_bridge, collect_broker, collect_quic, QuicPath};
pub use error::{Result, TelemetryError};
pub use event::{decode_event, encode_event, MetricEvent, MetricSample};
pub use fields::{collect_fields, ReportSlot};
#[cfg(feature = "otel")]
pub use otel::{init, init_with, layers, ExportTarget, OtelConfig, TelemetryGuard};
#[cfg(feature = "fabric")]
pub use publish::{
    subscribe, MetricStream, MetricsPublisher, PublisherConfig, PublisherStats, ReceivedEvent,
    TopicCreation,
};
pub use registry::{Counter, Gauge, Registry, WeakRegistry};
