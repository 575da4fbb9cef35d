//! Collectors: register the fabric's own counters and QUIC path statistics
//! on a [`Registry`] as callbacks, read at every snapshot and export (no
//! task, no polling in between). Names are in the crate docs' table.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use diaspora_fabric::{BridgeStats, Broker, Client};

use crate::error::Result;
use crate::registry::Registry;

/// Registers the node's counters and gauges, labelled `node=<node id>`:
/// `node.items_appended`, `node.bytes_appended`, `node.items_fetched`,
/// `node.bytes_fetched`, `node.connections_total`, `node.malformed_frames`,
/// `node.duplicate_batches` (counters) and `node.connections_open`,
/// `node.storage_bytes`, `node.topics`, `node.uptime_s` (gauges).
pub fn collect_broker(registry: &Registry, broker: Arc<Broker>) -> Result<()> {
    let id = broker.node_id().to_string();
    let labels = [("node", id.as_str())];
    type Pick = fn(&Broker) -> &std::sync::atomic::AtomicU64;
    let counters: [(&str, &str, Pick); 7] = [
        ("node.items_appended", "{item}", |b| {
            &b.counters.items_appended
        }),
        ("node.bytes_appended", "By", |b| &b.counters.bytes_appended),
        ("node.items_fetched", "{item}", |b| {
            &b.counters.items_fetched
        }),
        ("node.bytes_fetched", "By", |b| &b.counters.bytes_fetched),
        ("node.connections_total", "{connection}", |b| {
            &b.counters.connections_total
        }),
        ("node.malformed_frames", "{frame}", |b| {
            &b.counters.malformed_frames
        }),
        ("node.duplicate_batches", "{batch}", |b| {
            &b.counters.duplicate_batches
        }),
    ];
    for (name, unit, pick) in counters {
        let b = broker.clone();
        registry.observe_counter(name, unit, &labels, move || {
            Some(pick(&b).load(Ordering::Relaxed))
        })?;
    }
    let b = broker.clone();
    registry.observe(
        "node.connections_open",
        "{connection}",
        &labels,
        move || b.counters.connections_open.load(Ordering::Relaxed) as f64,
    )?;
    let b = broker.clone();
    registry.observe("node.storage_bytes", "By", &labels, move || {
        b.storage_bytes() as f64
    })?;
    let b = broker.clone();
    registry.observe("node.topics", "{topic}", &labels, move || {
        b.list_topics().len() as f64
    })?;
    let b = broker;
    registry.observe("node.uptime_s", "s", &labels, move || {
        b.uptime().as_secs_f64()
    })?;
    Ok(())
}

/// Registers a bridge's counters, labelled `bridge=<name>`:
/// `bridge.forwarded`, `bridge.duplicates_absorbed`, `bridge.reconnects`,
/// `bridge.skipped_expired`, `bridge.commits` (counters) and
/// `bridge.failed_partitions` (gauge).
pub fn collect_bridge(registry: &Registry, name: &str, stats: Arc<BridgeStats>) -> Result<()> {
    let labels = [("bridge", name)];
    type Pick = fn(&BridgeStats) -> &std::sync::atomic::AtomicU64;
    let counters: [(&str, &str, Pick); 5] = [
        ("bridge.forwarded", "{item}", |s| &s.forwarded),
        ("bridge.duplicates_absorbed", "{batch}", |s| {
            &s.duplicates_absorbed
        }),
        ("bridge.reconnects", "{reconnect}", |s| &s.reconnects),
        ("bridge.skipped_expired", "{item}", |s| &s.skipped_expired),
        ("bridge.commits", "{commit}", |s| &s.commits),
    ];
    for (metric, unit, pick) in counters {
        let s = stats.clone();
        registry.observe_counter(metric, unit, &labels, move || {
            Some(pick(&s).load(Ordering::Relaxed))
        })?;
    }
    registry.observe(
        "bridge.failed_partitions",
        "{partition}",
        &labels,
        move || stats.failed.lock().len() as f64,
    )?;
    Ok(())
}

/// What [`collect_quic`] reads path statistics from.
#[derive(Clone)]
pub enum QuicPath {
    /// One QUIC connection; its series are left out once it closes.
    Connection(quinn::Connection),
    /// A fabric client's pool: one set of series per slot (label `conn`),
    /// following reconnections, left out while a slot has no open connection.
    Client(Client),
}

impl From<quinn::Connection> for QuicPath {
    fn from(c: quinn::Connection) -> Self {
        QuicPath::Connection(c)
    }
}

impl From<Client> for QuicPath {
    fn from(c: Client) -> Self {
        QuicPath::Client(c)
    }
}

/// Loss fraction over a connection's life: lost / sent packets (0 before
/// anything was sent).
pub fn loss_fraction(stats: &quinn::ConnectionStats) -> f64 {
    let sent = stats.path.sent_packets;
    if sent == 0 {
        0.0
    } else {
        stats.path.lost_packets as f64 / sent as f64
    }
}

/// Registers QUIC path statistics as QUIC measures them, labelled
/// `link=<link>` (and `conn=<slot>` for a client's pool):
///
/// - gauges `quic.rtt_ms` (smoothed RTT), `quic.cwnd_bytes` (congestion
///   window), `quic.loss_fraction` (lost / sent packets over the
///   connection's life; for the loss of the last interval divide the rates
///   `quic.lost_packets.rate / quic.sent_packets.rate`);
/// - counters `quic.sent_packets`, `quic.lost_packets`, `quic.lost_bytes`,
///   `quic.congestion_events`, `quic.udp_tx_bytes`, `quic.udp_rx_bytes`.
///
/// A new connection starts its counters from zero; snapshots treat that as
/// a reset (see the registry docs).
pub fn collect_quic(registry: &Registry, link: &str, path: impl Into<QuicPath>) -> Result<()> {
    match path.into() {
        QuicPath::Connection(c) => {
            let read = move || c.close_reason().is_none().then(|| (c.rtt(), c.stats()));
            register_path(registry, &[("link", link)], Arc::new(read))
        }
        QuicPath::Client(client) => {
            for slot in 0..client.connection_count() {
                let client = client.clone();
                let read = move || {
                    let c = client.open_connections().into_iter().nth(slot).flatten()?;
                    Some((c.rtt(), c.stats()))
                };
                let slot = slot.to_string();
                register_path(registry, &[("link", link), ("conn", &slot)], Arc::new(read))?;
            }
            Ok(())
        }
    }
}

type ReadPath =
    Arc<dyn Fn() -> Option<(std::time::Duration, quinn::ConnectionStats)> + Send + Sync>;

fn register_path(registry: &Registry, labels: &[(&str, &str)], read: ReadPath) -> Result<()> {
    let gauge = |f: fn(std::time::Duration, &quinn::ConnectionStats) -> f64| {
        let read = read.clone();
        move || read().map_or(f64::NAN, |(rtt, s)| f(rtt, &s))
    };
    registry.observe(
        "quic.rtt_ms",
        "ms",
        labels,
        gauge(|rtt, _| rtt.as_secs_f64() * 1e3),
    )?;
    registry.observe(
        "quic.cwnd_bytes",
        "By",
        labels,
        gauge(|_, s| s.path.cwnd as f64),
    )?;
    registry.observe(
        "quic.loss_fraction",
        "1",
        labels,
        gauge(|_, s| loss_fraction(s)),
    )?;
    type Pick = fn(&quinn::ConnectionStats) -> u64;
    let counters: [(&str, &str, Pick); 6] = [
        ("quic.sent_packets", "{packet}", |s| s.path.sent_packets),
        ("quic.lost_packets", "{packet}", |s| s.path.lost_packets),
        ("quic.lost_bytes", "By", |s| s.path.lost_bytes),
        ("quic.congestion_events", "{event}", |s| {
            s.path.congestion_events
        }),
        ("quic.udp_tx_bytes", "By", |s| s.udp_tx.bytes),
        ("quic.udp_rx_bytes", "By", |s| s.udp_rx.bytes),
    ];
    for (name, unit, pick) in counters {
        let read = read.clone();
        registry.observe_counter(name, unit, labels, move || read().map(|(_, s)| pick(&s)))?;
    }
    Ok(())
}
