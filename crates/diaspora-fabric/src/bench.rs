//! The end-to-end fabric benchmark behind `diaspora bench fabric`:
//! producers → node → consumers over QUIC loopback, all in one process,
//! with a plain-quinn transfer of the same bytes measured in the same run as
//! the baseline (feature `bench`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::item::payload_item;
use crate::{
    Client, ClientConfig, Consumer, ConsumerConfig, FsyncPolicy, Node, NodeConfig, Producer,
    ProducerConfig, TopicSettings,
};
use anyhow::{Context, Result};
use serde::Serialize;

/// What `diaspora bench fabric` runs ([`Default`]: its defaults).
#[derive(Debug, Clone)]
pub struct FabricBenchConfig {
    /// Payload bytes per item.
    pub size: usize,
    /// Items in total.
    pub items: u64,
    /// Producer clients (each with its own connections).
    pub producers: usize,
    /// Consumer clients; partitions are split between them.
    pub consumers: usize,
    /// Partitions of the benchmark topic (default: 2 × max(producers, consumers)).
    pub partitions: Option<u32>,
    /// QUIC connections per client (default: 2..=4 by cores).
    pub connections: Option<usize>,
    /// Offered load in items/s over all producers (0 = as fast as possible).
    pub rate: f64,
    /// fsync policy of the node.
    pub fsync: FsyncPolicy,
    /// Producer batch size, bytes.
    pub batch_bytes: usize,
    /// Producer linger, microseconds.
    pub linger_us: u64,
    /// Items sent during the first this-many milliseconds (connection set-up,
    /// congestion-window growth) are left out of the latency percentiles.
    pub warmup_ms: u64,
    /// Skip the plain-quinn baseline.
    pub no_baseline: bool,
    /// Congestion controller of node, clients and the baseline.
    pub congestion: crate::Congestion,
    /// Authentication and ACLs on: the node in token mode with an ACL of
    /// [`BENCH_ACL_ENTRIES`] entries, the clients a non-superuser's token,
    /// so every frame pays for a token re-check and an ACL scan.
    pub auth: bool,
}

/// ACL entries of an `auth` run: the user's own grants and others' entries
/// it has to be checked past.
pub const BENCH_ACL_ENTRIES: usize = 100;

impl Default for FabricBenchConfig {
    fn default() -> Self {
        FabricBenchConfig {
            size: 1024,
            items: 100_000,
            producers: 1,
            consumers: 1,
            partitions: None,
            connections: None,
            rate: 0.0,
            fsync: FsyncPolicy::Interval(Duration::from_millis(100)),
            batch_bytes: 1 << 20,
            linger_us: 200,
            warmup_ms: 500,
            no_baseline: false,
            congestion: crate::Congestion::default(),
            auth: false,
        }
    }
}

/// Results of `diaspora bench fabric`.
#[derive(Debug, Clone, Serialize)]
pub struct FabricReport {
    /// Payload bytes per item.
    pub size: usize,
    /// Items moved.
    pub items: u64,
    /// Producer clients.
    pub producers: usize,
    /// Consumer clients.
    pub consumers: usize,
    /// Partitions.
    pub partitions: u32,
    /// QUIC connections per client.
    pub connections: usize,
    /// fsync policy.
    pub fsync: String,
    /// Congestion controller.
    pub congestion: String,
    /// Authentication and ACL checks on (token mode).
    pub auth: bool,
    /// Offered rate (0 = unlimited).
    pub offered_items_per_s: f64,
    /// End to end: items consumed per second.
    pub items_per_s: f64,
    /// End to end: payload MB (10^6 bytes) consumed per second.
    pub mb_per_s: f64,
    /// Items produced and acknowledged per second.
    pub produce_items_per_s: f64,
    /// Payload MB produced and acknowledged per second.
    pub produce_mb_per_s: f64,
    /// Producer send → consumer receive latency percentiles, µs.
    pub latency_us_p50: u64,
    /// 99th percentile.
    pub latency_us_p99: u64,
    /// 99.9th percentile.
    pub latency_us_p999: u64,
    /// Plain quinn: the same payload bytes over one connection, one stream, MB/s.
    pub baseline_mb_per_s: Option<f64>,
    /// `mb_per_s / baseline_mb_per_s`.
    pub ratio_to_baseline: Option<f64>,
    /// Plain quinn through a forwarding relay (two hops, like producer →
    /// node → consumer, nothing stored), MB/s: the ceiling for any two-hop
    /// design on the same cores.
    pub relay_baseline_mb_per_s: Option<f64>,
    /// `mb_per_s / relay_baseline_mb_per_s`.
    pub ratio_to_relay: Option<f64>,
    /// Items left out of the latency percentiles as warm-up.
    pub latency_warmup_items: u64,
    /// Wall time of the fabric run, s.
    pub elapsed_s: f64,
}

impl std::fmt::Display for FabricReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "fabric: {} items × {} B, {} producer(s), {} consumer(s), {} partition(s), {} conn/client, fsync={}, congestion={}, auth={}",
            self.items, self.size, self.producers, self.consumers, self.partitions, self.connections, self.fsync, self.congestion,
            if self.auth { "token+acl" } else { "off" }
        )?;
        writeln!(
            f,
            "  end to end   {:>12.0} items/s {:>9.1} MB/s",
            self.items_per_s, self.mb_per_s
        )?;
        writeln!(
            f,
            "  produce+ack  {:>12.0} items/s {:>9.1} MB/s",
            self.produce_items_per_s, self.produce_mb_per_s
        )?;
        writeln!(
            f,
            "  latency µs   p50 {} p99 {} p999 {}",
            self.latency_us_p50, self.latency_us_p99, self.latency_us_p999
        )?;
        if let (Some(b), Some(r)) = (self.baseline_mb_per_s, self.ratio_to_baseline) {
            writeln!(f, "  baseline     plain quinn {b:.1} MB/s → ratio {r:.2}")?;
        }
        if let (Some(b), Some(r)) = (self.relay_baseline_mb_per_s, self.ratio_to_relay) {
            writeln!(
                f,
                "  relay        plain quinn over two hops {b:.1} MB/s → ratio {r:.2}"
            )?;
        }
        Ok(())
    }
}

pub use crate::pipe::synthetic_payload;

/// Runs the end-to-end fabric benchmark.
pub async fn fabric(args: &FabricBenchConfig) -> Result<FabricReport> {
    anyhow::ensure!(
        args.items > 0 && args.producers > 0 && args.consumers > 0,
        "items, producers and consumers must be > 0"
    );
    let dir = tempfile::tempdir().context("temporary data directory")?;
    let mut cfg = NodeConfig::new(dir.path());
    cfg.fsync = args.fsync;
    cfg.admin_listen = None;
    cfg.congestion = args.congestion;
    if args.auth {
        cfg.auth.mode = crate::AuthMode::Token;
    }
    let node = Node::start(cfg).await?;
    let token = if args.auth {
        Some(bench_identity(&node)?)
    } else {
        None
    };
    let partitions = args
        .partitions
        .unwrap_or(2 * args.producers.max(args.consumers) as u32)
        .max(1);
    crate::topic::ensure_topic(
        node.broker(),
        "bench",
        &TopicSettings::with_partitions(partitions),
    )
    .await?;
    let mut ccfg = ClientConfig::new(node.data_addr(), node.ca_file());
    ccfg.congestion = args.congestion;
    ccfg.token = token;
    if let Some(c) = args.connections {
        ccfg.connections = c.max(1);
    }
    let connections = ccfg.connections;

    // Consumers first, so nothing is missed.
    let consumed = Arc::new(AtomicU64::new(0));
    let warmup_items = Arc::new(AtomicU64::new(0));
    // Producers start right after the consumers are up; items stamped before
    // this instant are warm-up.
    let warmup_end_us = Arc::new(AtomicU64::new(u64::MAX));
    let mut consumer_tasks = Vec::new();
    for c in 0..args.consumers {
        let client = Client::connect(ccfg.clone()).await?;
        let parts: Vec<u32> = (0..partitions)
            .filter(|p| *p as usize % args.consumers == c)
            .collect();
        if parts.is_empty() {
            continue;
        }
        let mut consumer = Consumer::assign(&client, ConsumerConfig::new("bench"), &parts).await?;
        let consumed = consumed.clone();
        let total = args.items;
        let warmup_items = warmup_items.clone();
        let warmup_end_us = warmup_end_us.clone();
        consumer_tasks.push(tokio::spawn(async move {
            let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
                .expect("histogram bounds");
            loop {
                if consumed.load(Ordering::Relaxed) >= total {
                    break;
                }
                match consumer.poll(Duration::from_millis(100)).await {
                    Ok(Some(item)) => {
                        let lat = (crate::item::now_us() - item.item.timestamp_us).max(1) as u64;
                        if (item.item.timestamp_us as u64) < warmup_end_us.load(Ordering::Relaxed) {
                            warmup_items.fetch_add(1, Ordering::Relaxed);
                        } else {
                            let _ = hist.record(lat.min(600_000_000));
                        }
                        consumed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(anyhow::anyhow!("consumer: {e}")),
                }
            }
            let _ = client;
            Ok(hist)
        }));
    }

    let payload = synthetic_payload(args.size);
    let started = Instant::now();
    warmup_end_us.store(
        crate::item::now_us() as u64 + args.warmup_ms * 1000,
        Ordering::Relaxed,
    );
    let mut producer_tasks = Vec::new();
    for p in 0..args.producers {
        let client = Client::connect(ccfg.clone()).await?;
        let mut pc = ProducerConfig::new("bench");
        pc.batch_bytes_max = args.batch_bytes;
        pc.linger = Duration::from_micros(args.linger_us);
        let producer = Producer::new(&client, pc).await?;
        let n = args.items / args.producers as u64
            + u64::from((p as u64) < args.items % args.producers as u64);
        let payload = payload.clone();
        let rate = if args.rate > 0.0 {
            args.rate / args.producers as f64
        } else {
            0.0
        };
        producer_tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            for i in 0..n {
                if rate > 0.0 {
                    let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                    if due > Instant::now() {
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                producer
                    .send_unacked(None, payload_item(payload.clone()))
                    .await?;
            }
            producer.flush().await?;
            let acked = producer.stats().acked.load(Ordering::Relaxed);
            producer.close().await?;
            let _ = client;
            anyhow::Ok((acked, t0.elapsed()))
        }));
    }
    let mut acked = 0;
    let mut produce_elapsed = Duration::ZERO;
    for t in producer_tasks {
        let (a, e) = t.await??;
        acked += a;
        produce_elapsed = produce_elapsed.max(e);
    }
    anyhow::ensure!(
        acked == args.items,
        "only {acked} of {} items were acknowledged",
        args.items
    );
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .expect("histogram bounds");
    for t in consumer_tasks {
        let h = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .context("consumers did not receive every item within 120 s")???;
        hist.add(&h).expect("same bounds");
    }
    let elapsed = started.elapsed().as_secs_f64();
    node.shutdown().await;

    let bytes = args.items as f64 * args.size as f64;
    let mb_per_s = bytes / 1e6 / elapsed;
    let (baseline, relay) = if args.no_baseline {
        (None, None)
    } else {
        (
            Some(quinn_baseline(args.size, args.items, args.congestion).await?),
            Some(quinn_relay_baseline(args.size, args.items, args.congestion).await?),
        )
    };
    Ok(FabricReport {
        size: args.size,
        items: args.items,
        producers: args.producers,
        consumers: args.consumers,
        partitions,
        connections,
        fsync: args.fsync.to_string(),
        congestion: args.congestion.to_string(),
        auth: args.auth,
        offered_items_per_s: args.rate,
        items_per_s: args.items as f64 / elapsed,
        mb_per_s,
        produce_items_per_s: args.items as f64 / produce_elapsed.as_secs_f64(),
        produce_mb_per_s: bytes / 1e6 / produce_elapsed.as_secs_f64(),
        latency_us_p50: hist.value_at_quantile(0.5),
        latency_us_p99: hist.value_at_quantile(0.99),
        latency_us_p999: hist.value_at_quantile(0.999),
        latency_warmup_items: warmup_items.load(Ordering::Relaxed),
        baseline_mb_per_s: baseline,
        ratio_to_baseline: baseline.map(|b| mb_per_s / b),
        relay_baseline_mb_per_s: relay,
        ratio_to_relay: relay.map(|b| mb_per_s / b),
        elapsed_s: elapsed,
    })
}

/// Sets up user `bench` (group `benchers`) with a token and an ACL of
/// [`BENCH_ACL_ENTRIES`] entries, most about other users, its own last so a
/// check scans them all; returns the token.
fn bench_identity(node: &Node) -> Result<String> {
    use crate::auth::{AclEntry, Principal};
    let user = Principal::user("bench").expect("valid name");
    let guard = &node.broker().guard;
    let issued = guard.change(&user, "bench set-up", |s| {
        s.users.insert(
            "bench".into(),
            crate::auth::User {
                groups: vec!["benchers".into()],
                tenant: None,
            },
        );
        for i in 0..BENCH_ACL_ENTRIES - 2 {
            let e: AclEntry = format!("allow User:other{i} write topic:data-{i}-*")
                .parse()
                .expect("valid entry");
            s.acl.grant(e);
        }
        for e in [
            "allow Group:benchers write topic:bench",
            "allow User:bench read topic:bench",
        ] {
            s.acl.grant(e.parse().expect("valid entry"));
        }
        s.tokens
            .create(&user, "bench", crate::item::now_us(), None)
            .map_err(|e| crate::FabricError::Invalid(e.to_string()))
    })?;
    Ok(issued.token)
}

/// A QUIC endpoint that accepts connections with the baseline ALPN and the
/// fabric's TLS and transport settings, and a client configuration that
/// trusts it.
fn baseline_endpoints(
    congestion: crate::Congestion,
    certs_dir: &std::path::Path,
) -> Result<(quinn::Endpoint, quinn::ClientConfig)> {
    use std::sync::Arc as A;
    let certs = crate::tls::generate_dev_certs(certs_dir, &[])?;
    let alpn = b"diaspora-baseline";
    let server_tls = crate::tls::server_config(&certs, alpn)?;
    let mut server_cfg = quinn::ServerConfig::with_crypto(A::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    ));
    server_cfg.transport_config(A::new(crate::node::transport_config_public(congestion)));
    let server = crate::node::quic_endpoint("127.0.0.1:0".parse()?, Some(server_cfg))?;
    let client_tls = crate::tls::client_config(&certs.ca, alpn)?;
    let mut client_cfg = quinn::ClientConfig::new(A::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    ));
    client_cfg.transport_config(A::new(crate::node::transport_config_public(congestion)));
    Ok((server, client_cfg))
}

/// Opens a connection from a fresh client endpoint to `to`.
async fn baseline_connect(
    to: std::net::SocketAddr,
    config: quinn::ClientConfig,
) -> Result<quinn::Connection> {
    let mut client = crate::node::quic_endpoint("127.0.0.1:0".parse()?, None)?;
    client.set_default_client_config(config);
    Ok(client.connect(to, "localhost")?.await?)
}

/// Accepts one connection and one unidirectional stream and counts its bytes
/// until the sender finishes; returns the count and when the last arrived.
fn baseline_sink(server: quinn::Endpoint) -> tokio::task::JoinHandle<Result<(u64, Instant)>> {
    tokio::spawn(async move {
        let conn = server.accept().await.context("no connection")?.await?;
        let mut recv = conn.accept_uni().await?;
        let mut got = 0u64;
        while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
            got += chunk.bytes.len() as u64;
        }
        let done = Instant::now();
        conn.close(0u32.into(), b"done");
        anyhow::Ok((got, done))
    })
}

/// Writes `size × items` payload bytes on a new unidirectional stream
/// (coalesced to ≥ 64 KiB writes for small items) and finishes it; returns
/// when the writing started.
async fn baseline_send(conn: &quinn::Connection, size: usize, items: u64) -> Result<Instant> {
    let mut send = conn.open_uni().await?;
    let chunk_len = size.max(64 << 10);
    let chunk = synthetic_payload(chunk_len);
    let started = Instant::now();
    let mut left = size as u64 * items;
    while left > 0 {
        let n = left.min(chunk_len as u64) as usize;
        send.write_chunk(chunk.slice(..n)).await?;
        left -= n as u64;
    }
    send.finish()?;
    Ok(started)
}

/// Plain quinn: one connection, one unidirectional stream, the same payload
/// bytes written item by item (coalesced to ≥ 64 KiB writes for small items),
/// same TLS, transport settings and socket buffers as the fabric. Returns MB/s at the receiver.
pub async fn quinn_baseline(size: usize, items: u64, congestion: crate::Congestion) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let (server, client_cfg) = baseline_endpoints(congestion, dir.path())?;
    let recv_task = baseline_sink(server.clone());
    let conn = baseline_connect(server.local_addr()?, client_cfg).await?;
    let started = baseline_send(&conn, size, items).await?;
    let (got, done) = recv_task.await??;
    let total = size as u64 * items;
    anyhow::ensure!(got == total, "baseline received {got} of {total} bytes");
    conn.close(0u32.into(), b"done");
    Ok(total as f64 / 1e6 / done.duration_since(started).as_secs_f64())
}

/// Plain quinn through a relay: sender → relay → receiver, the relay
/// forwarding each received chunk as it is (no copy, no storage, no
/// framing). This is the ceiling for any design that moves every byte over
/// two QUIC hops on the same cores (as producer → node → consumer does),
/// measured with the same TLS and transport settings. Returns MB/s at the
/// receiver.
pub async fn quinn_relay_baseline(
    size: usize,
    items: u64,
    congestion: crate::Congestion,
) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let (sink, relay_cfg) = baseline_endpoints(congestion, &dir.path().join("sink"))?;
    let (relay, client_cfg) = baseline_endpoints(congestion, &dir.path().join("relay"))?;
    let sink_addr = sink.local_addr()?;
    let relay_addr = relay.local_addr()?;
    let recv_task = baseline_sink(sink.clone());
    let relay_task = tokio::spawn(async move {
        let inbound = relay.accept().await.context("no connection")?.await?;
        let mut recv = inbound.accept_uni().await?;
        let outbound = baseline_connect(sink_addr, relay_cfg).await?;
        let mut send = outbound.open_uni().await?;
        while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
            send.write_chunk(chunk.bytes).await?;
        }
        send.finish()?;
        send.stopped().await.ok();
        anyhow::Ok(())
    });
    let conn = baseline_connect(relay_addr, client_cfg).await?;
    let started = baseline_send(&conn, size, items).await?;
    let (got, done) = recv_task.await??;
    relay_task.await??;
    let total = size as u64 * items;
    anyhow::ensure!(
        got == total,
        "relay baseline received {got} of {total} bytes"
    );
    conn.close(0u32.into(), b"done");
    Ok(total as f64 / 1e6 / done.duration_since(started).as_secs_f64())
}

/// What `diaspora bench tenants` runs.
#[derive(Debug, Clone)]
pub struct TenantsBenchConfig {
    /// Payload bytes per item.
    pub size: usize,
    /// Bytes each producer sends per round.
    pub bytes: u64,
    /// Rounds (each: the quiet tenant alone, then with the noisy one).
    pub rounds: u32,
    /// The noisy tenant's produce quota, bytes/s.
    pub quota_bytes_per_s: u64,
}

/// Results of `diaspora bench tenants`.
#[derive(Debug, Clone, Serialize)]
pub struct TenantsReport {
    /// Payload bytes per item.
    pub size: usize,
    /// Bytes per producer per round.
    pub bytes: u64,
    /// The noisy tenant's produce quota, bytes/s.
    pub quota_bytes_per_s: u64,
    /// The quiet tenant's produce+ack MB/s alone, per round.
    pub quiet_alone_mb_per_s: Vec<f64>,
    /// The quiet tenant's MB/s while the noisy one produces flat out, per round.
    pub quiet_with_noisy_mb_per_s: Vec<f64>,
    /// The noisy tenant's achieved MB/s (over its whole run), per round.
    pub noisy_mb_per_s: Vec<f64>,
    /// `1 - median(with) / median(alone)`, per cent: how much the throttled
    /// neighbour cost the quiet tenant.
    pub quiet_slowdown_pct: f64,
    /// Median noisy MB/s over its quota in MB/s.
    pub noisy_over_quota: f64,
}

/// The median of `v` (0 for none).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Two tenants on one node in token mode: `quiet` (no quota) produces
/// `bytes` alone, then again while `noisy` (under a produce quota) produces
/// as fast as it may; the quiet tenant's throughput with and without its
/// throttled neighbour, and what the neighbour got against its quota.
pub async fn tenants(args: &TenantsBenchConfig) -> Result<TenantsReport> {
    use crate::auth::{Principal, Tenant, User};
    anyhow::ensure!(args.quota_bytes_per_s > 0, "the quota must be > 0");
    let dir = tempfile::tempdir().context("temporary data directory")?;
    let mut cfg = NodeConfig::new(dir.path());
    cfg.admin_listen = None;
    cfg.auth.mode = crate::AuthMode::Token;
    let node = Node::start(cfg).await?;
    let mut tokens = Vec::new();
    for (tenant, prefix, quota) in [("quiet", "q.", 0), ("noisy", "n.", args.quota_bytes_per_s)] {
        let user = Principal::user(tenant).expect("valid name");
        let issued = node.broker().guard.change(&user, "bench", |s| {
            s.tenants.insert(
                tenant.into(),
                Tenant {
                    prefix: prefix.into(),
                    produce_bytes_per_s: quota,
                    ..Default::default()
                },
            );
            s.users.insert(
                tenant.into(),
                User {
                    groups: vec![tenant.into()],
                    tenant: Some(tenant.into()),
                },
            );
            s.acl.grant(
                format!("allow Group:{tenant} all topic:{prefix}*")
                    .parse()
                    .expect("valid entry"),
            );
            s.tokens
                .create(&user, "bench", crate::item::now_us(), None)
                .map_err(|e| crate::FabricError::Invalid(e.to_string()))
        })?;
        let topic = format!("{prefix}bench");
        crate::topic::ensure_topic(node.broker(), &topic, &TopicSettings::with_partitions(2))
            .await?;
        let mut cc = ClientConfig::new(node.data_addr(), node.ca_file());
        cc.token = Some(issued.token);
        tokens.push((Client::connect(cc).await?, topic));
    }
    let items = (args.bytes / args.size.max(1) as u64).max(1);
    let size = args.size;
    let run = move |client: Client, topic: String| async move {
        let producer = Producer::new(&client, ProducerConfig::new(&topic)).await?;
        let payload = synthetic_payload(size);
        let started = Instant::now();
        let mut acks = Vec::new();
        for _ in 0..items {
            acks.push(producer.send(payload_item(payload.clone())).await?);
        }
        for a in acks {
            a.await?;
        }
        Ok::<f64, anyhow::Error>(items as f64 * size as f64 / 1e6 / started.elapsed().as_secs_f64())
    };
    let (quiet, noisy) = (tokens[0].clone(), tokens[1].clone());
    let (mut alone, mut with, mut noisy_rates) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.rounds.max(1) {
        alone.push(run(quiet.0.clone(), quiet.1.clone()).await?);
        let n = tokio::spawn(run(noisy.0.clone(), noisy.1.clone()));
        // Let the noisy tenant reach its throttled steady state first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        with.push(run(quiet.0.clone(), quiet.1.clone()).await?);
        noisy_rates.push(n.await.context("noisy producer")??);
    }
    node.shutdown().await;
    let (a, w) = (median(&alone), median(&with));
    Ok(TenantsReport {
        size: args.size,
        bytes: args.bytes,
        quota_bytes_per_s: args.quota_bytes_per_s,
        quiet_slowdown_pct: (1.0 - w / a) * 100.0,
        noisy_over_quota: median(&noisy_rates) / (args.quota_bytes_per_s as f64 / 1e6),
        quiet_alone_mb_per_s: alone,
        quiet_with_noisy_mb_per_s: with,
        noisy_mb_per_s: noisy_rates,
    })
}
