//! `diaspora demo`: the walking skeleton of the ptychography loop on the
//! embedded default. An in-process node; an edge producer of
//! ptychography-shaped diffraction frames (u16, default 256×256, sent as
//! ndarray payloads) with their scan positions as metadata, over a QoS
//! stream per partition (buffered, flow-controlled, replayable); an
//! HPC-side QoS consumer that reads each frame as an array view (no copy),
//! checks its integrity and computes per-frame statistics (total counts,
//! peak, centre of mass). Every frame's lineage is recorded by the stream
//! layer into an embedded provenance store (SQLite); at the end the demo
//! finds one frame bad, invalidates it and shows what that reached and why.
//! Later layers grow this into the full online-training loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use diaspora_fabric::{Client, ClientConfig, Node, NodeConfig, TopicSettings};
use diaspora_proto::v1::{value::Kind, Item, Value};
use diaspora_provenance::lineage::{LineageRecorder, RecorderConfig};
use diaspora_provenance::{EdgeKind, Kind as RecordKind, Provenance, Record, Target};
use diaspora_stream::control::{control_topic, replay_topic};
use diaspora_stream::{ndarray as nd, Policy, QosConsumer, QosProducer, Sent};

/// Arguments of `diaspora demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Diffraction frames to stream.
    #[arg(long, default_value_t = 2000)]
    pub frames: u64,
    /// Frame width, pixels.
    #[arg(long, default_value_t = 256)]
    pub width: usize,
    /// Frame height, pixels.
    #[arg(long, default_value_t = 256)]
    pub height: usize,
    /// Partitions of the frames topic.
    #[arg(long, default_value_t = 2)]
    pub partitions: u32,
    /// Frame rate at the detector, frames/s (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Keep the node's data here instead of a temporary directory.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One synthetic far-field diffraction pattern: an Airy-like central disc and
/// rings, modulated by the scan position, with shot-noise-like jitter,
/// 12-bit counts in u16.
pub fn diffraction_frame(
    width: usize,
    height: usize,
    scan_x: f32,
    scan_y: f32,
    seed: u64,
) -> Vec<u16> {
    let mut out = Vec::with_capacity(width * height);
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    let mut x: u64 = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let phase = scan_x * 0.37 + scan_y * 0.21;
    for j in 0..height {
        for i in 0..width {
            let dx = i as f32 - cx;
            let dy = j as f32 - cy;
            let r = (dx * dx + dy * dy).sqrt() * 0.12 + 1e-3;
            let airy = (r.sin() / r).powi(2);
            let speckle = 1.0 + 0.3 * (dx * 0.05 + phase).cos() * (dy * 0.07 - phase).sin();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let noise = (x >> 52) as f32 / 4096.0 - 0.5;
            let counts = 4000.0 * airy * speckle + 8.0 * noise + 8.0;
            out.push(counts.clamp(0.0, 4095.0) as u16);
        }
    }
    out
}

fn meta_i(item: &Item, key: &str) -> Option<i64> {
    match item.metadata.get(key)?.kind.as_ref()? {
        Kind::I(v) => Some(*v),
        _ => None,
    }
}

fn meta_f(item: &Item, key: &str) -> Option<f64> {
    match item.metadata.get(key)?.kind.as_ref()? {
        Kind::F(v) => Some(*v),
        _ => None,
    }
}

#[derive(Default)]
struct FrameStats {
    frames: u64,
    bytes: u64,
    total_counts: f64,
    peak: u16,
    com_x: f64,
    com_y: f64,
}

/// Runs the demo and prints a summary.
pub async fn run(args: DemoArgs) -> Result<()> {
    ensure!(args.frames > 0, "--frames must be > 0");
    ensure!(args.width * args.height > 0, "frame must have pixels");
    let tmp = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let mut cfg = NodeConfig::new(&data_dir);
    cfg.admin_listen = None;
    let node = Node::start(cfg)
        .await
        .context("starting the embedded node")?;
    let broker = node.broker();
    for (t, parts) in [
        ("frames".to_string(), args.partitions),
        (control_topic("frames"), 1),
        (replay_topic("frames"), 1),
    ] {
        if broker.topic(&t).is_err() {
            broker.create_topic(&t, TopicSettings::with_partitions(parts))?;
        }
    }
    let parts = broker.topic("frames")?.partitions.len() as u32;
    // Reconstruct by interpolation if a frame ever goes missing; the summary
    // says how many were originals.
    let mut policy = Policy::default();
    policy.reconstruct.method = diaspora_stream::policy::ReconstructMethod::Linear;

    let client = Client::connect(ClientConfig::new(node.data_addr(), node.ca_file())).await?;
    let frame_bytes = args.width * args.height * 2;
    eprintln!(
        "embedded node at quic://{} — streaming {} frames of {}×{} u16 ({} KiB each) edge → HPC",
        node.data_addr(),
        args.frames,
        args.width,
        args.height,
        frame_bytes / 1024
    );

    // Precompute a handful of frames per scan row; the detector cycles through them.
    let variants: Vec<Bytes> = (0..8)
        .map(|k| {
            let f = diffraction_frame(
                args.width,
                args.height,
                k as f32,
                (k * 3) as f32,
                k as u64 + 1,
            );
            let mut b = Vec::with_capacity(frame_bytes);
            for v in f {
                b.extend_from_slice(&v.to_le_bytes());
            }
            Bytes::from(b)
        })
        .collect();

    let bar = indicatif::ProgressBar::new(args.frames);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} frames at HPC ({per_sec}) {msg}",
        )
        .expect("template"),
    );

    // HPC side.
    let mut consumer =
        QosConsumer::new(&client, "frames", &[], "hpc-recon", policy.clone(), None).await?;
    let received = Arc::new(AtomicU64::new(0));
    let expected = args.frames;
    let (w, h) = (args.width, args.height);
    let rx_count = received.clone();
    let rx_bar = bar.clone();
    let hpc = tokio::spawn(async move {
        let mut s = FrameStats::default();
        let mut lat =
            hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
        let mut seen: HashMap<i64, u32> = HashMap::new();
        let mut originals = 0u64;
        while s.frames < expected {
            let Some(it) = consumer.next(Duration::from_secs(30)).await? else {
                anyhow::bail!(
                    "no frame arrived for 30 s ({} of {expected} received)",
                    s.frames
                );
            };
            let item = &it.item;
            let frame_no = meta_i(item, "frame").context("frame metadata missing")?;
            let crc = meta_i(item, "crc32c").context("crc32c metadata missing")? as u32;
            ensure!(
                crc32c::crc32c(&item.payload) == crc,
                "frame {frame_no}: payload checksum mismatch"
            );
            originals += u64::from(it.quality() == "original");
            // The frame as an array: a view of the received bytes where aligned.
            let frame = nd::item_array::<u16>(item)
                .with_context(|| format!("frame {frame_no}: not a u16 array"))?;
            ensure!(
                frame.shape() == [h, w],
                "frame {frame_no}: shape {:?}",
                frame.shape()
            );
            *seen.entry(frame_no).or_default() += 1;
            let (mut sum, mut sx, mut sy, mut peak) = (0f64, 0f64, 0f64, 0u16);
            let px = frame.as_slice().context("a frame is contiguous")?;
            for (k, &v) in px.iter().enumerate() {
                let fv = f64::from(v);
                sum += fv;
                sx += fv * (k % w) as f64;
                sy += fv * (k / w) as f64;
                peak = peak.max(v);
            }
            s.frames += 1;
            s.bytes += item.payload.len() as u64;
            s.total_counts += sum;
            s.peak = s.peak.max(peak);
            s.com_x += sx / sum.max(1.0);
            s.com_y += sy / sum.max(1.0);
            let _ =
                lat.record((diaspora_fabric::broker::now_us() - item.timestamp_us).max(1) as u64);
            rx_count.fetch_add(1, Ordering::Relaxed);
            rx_bar.inc(1);
            let _ = meta_f(item, "scan_x");
        }
        let report = consumer.close().await?;
        let dupes = seen.values().filter(|c| **c > 1).count();
        ensure!(
            seen.len() as u64 == expected && dupes == 0,
            "frames missing or duplicated"
        );
        Ok((s, lat, originals, report))
    });

    // Edge side: one QoS stream per partition.
    // Per-frame lineage, recorded by the stream layer as frames are acknowledged.
    let store = data_dir.join("prov.sqlite");
    let prov = Provenance::open(&store.display().to_string())
        .with_context(|| format!("opening the provenance store {}", store.display()))?;
    let recorder = Arc::new(LineageRecorder::start(
        prov,
        RecorderConfig {
            tag_keys: vec!["frame".into()],
            ..Default::default()
        },
    ));
    let mut producers = Vec::new();
    for p in 0..parts {
        producers.push(
            QosProducer::new(&client, "frames", p, policy.clone())
                .await?
                .with_ack_hook(recorder.hook()),
        );
    }
    let started = Instant::now();
    let side = (args.frames as f64).sqrt().ceil() as i64;
    for n in 0..args.frames {
        if args.rate > 0.0 {
            let due = started + Duration::from_secs_f64(n as f64 / args.rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let payload = variants[(n % variants.len() as u64) as usize].clone();
        let (sx, sy) = (
            (n as i64 % side) as f64 * 0.5,
            (n as i64 / side) as f64 * 0.5,
        );
        let mut item = diaspora_fabric::item::payload_item(payload.clone());
        nd::tag_array(&mut item, "u16", &[args.height, args.width]);
        let mut put = |k: &str, v: Kind| {
            item.metadata.insert(k.to_string(), Value { kind: Some(v) });
        };
        put("frame", Kind::I(n as i64));
        put("scan_x", Kind::F(sx));
        put("scan_y", Kind::F(sy));
        put("crc32c", Kind::I(i64::from(crc32c::crc32c(&payload))));
        let stream = &mut producers[(n % u64::from(parts)) as usize];
        match stream.send(item).await? {
            Sent::Accepted(_) => {}
            other => anyhow::bail!("the demo's policy does not reduce or shed, yet: {other:?}"),
        }
    }
    let mut acked = 0;
    let mut memory_high_water = 0;
    for p in producers {
        let r = p.close(Duration::from_secs(60)).await?;
        acked += r.counters.acked;
        memory_high_water = memory_high_water.max(r.counters.memory_high_water);
    }
    let (stats, lat, originals, qos) = hpc.await.context("HPC consumer task")??;
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let provenance =
        tokio::task::spawn_blocking(move || demo_provenance(&recorder, args.frames, parts))
            .await
            .context("provenance task")??;
    client.close();
    node.shutdown().await;

    let n = stats.frames as f64;
    let summary = serde_json::json!({
        "frames_produced": args.frames,
        "frames_acked": acked,
        "frames_received": stats.frames,
        "bytes": stats.bytes,
        "elapsed_s": elapsed,
        "frames_per_s": n / elapsed,
        "mb_per_s": stats.bytes as f64 / 1e6 / elapsed,
        "latency_us_p50": lat.value_at_quantile(0.5),
        "latency_us_p99": lat.value_at_quantile(0.99),
        "mean_total_counts": stats.total_counts / n,
        "peak_counts": stats.peak,
        "mean_centre_of_mass": [stats.com_x / n, stats.com_y / n],
        "checksums_verified": stats.frames,
        "qos": {
            "streams": parts,
            "originals": originals,
            "replayed": qos.replayed,
            "reconstructed": qos.counters.reconstructed_missing + qos.counters.reconstructed_reduced,
            "lost": qos.counters.lost,
            "producer_memory_high_water": memory_high_water,
        },
        "provenance": provenance,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "diaspora demo — edge detector → QoS stream → embedded node (QUIC, durable log) → HPC consumer"
        );
        println!("  frames        {} produced, {} acknowledged, {} received (checksums verified, no duplicates)", args.frames, acked, stats.frames);
        println!(
            "  throughput    {:.0} frames/s, {:.1} MB/s over {:.2} s",
            n / elapsed,
            stats.bytes as f64 / 1e6 / elapsed,
            elapsed
        );
        println!(
            "  latency       p50 {} µs, p99 {} µs (detector → HPC)",
            lat.value_at_quantile(0.5),
            lat.value_at_quantile(0.99)
        );
        println!(
            "  QoS streams   {parts}: {originals} originals, {} replayed, {} reconstructed, {} lost; producer memory high-water {:.1} MiB",
            qos.replayed,
            qos.counters.reconstructed_missing + qos.counters.reconstructed_reduced,
            qos.counters.lost,
            memory_high_water as f64 / (1 << 20) as f64
        );
        println!("  per frame     mean total counts {:.3e}, peak {}, mean centre of mass ({:.1}, {:.1}) px", stats.total_counts / n, stats.peak, stats.com_x / n, stats.com_y / n);
        println!(
            "  provenance    {} frame records (SQLite, durable); frame {} found bad → {} records invalid: {}",
            provenance["frames_recorded"],
            provenance["bad_frame"],
            provenance["invalidated"],
            provenance["why"].as_str().unwrap_or_default()
        );
    }
    ensure!(
        acked == args.frames && stats.frames == args.frames,
        "not every frame made it"
    );
    Ok(())
}

/// Closes the lineage recorder, records the HPC side's statistics as derived
/// from every frame, then finds one frame bad: invalidates it and returns
/// what that reached and the why-chain of the statistics.
fn demo_provenance(
    recorder: &LineageRecorder,
    frames: u64,
    partitions: u32,
) -> Result<serde_json::Value> {
    let (stats, mut prov) = recorder.close()?;
    ensure!(
        stats.recorded == frames && stats.lost == 0,
        "lineage of {} of {frames} frames recorded ({} lost)",
        stats.recorded,
        stats.lost
    );
    // Every frame record: one range query per partition.
    let mut all = Vec::new();
    for p in 0..partitions {
        all.extend(
            prov.backend()
                .find_items("frames", p, 0, u64::MAX, usize::MAX)?
                .into_iter()
                .map(|(_, id)| id),
        );
    }
    ensure!(all.len() as u64 == frames, "frame records missing");
    let mut summary = Record::new(RecordKind::Data, "hpc-frame-statistics");
    summary.parents = all.iter().map(|id| (*id, EdgeKind::Derived)).collect();
    let summary = prov.add(summary)?;
    let bad = frames / 2;
    let rep = prov.invalidate(
        &Target::parse(&format!("frame={bad}"))?,
        "demo: flagged by the quality check",
        true,
    )?;
    let why = prov
        .why(summary)?
        .map(|w| {
            w.chain
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
                .join(" ← ")
        })
        .unwrap_or_default();
    Ok(serde_json::json!({
        "frames_recorded": stats.recorded,
        "batches": stats.batches,
        "bad_frame": bad,
        "invalidated": rep.invalidated,
        "why": why,
    }))
}
