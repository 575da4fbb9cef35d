//! `diaspora demo --skeleton`: the streaming skeleton the loop grew from, on
//! the embedded default. An in-process node; an edge producer of
//! ptychography-shaped diffraction frames (u16, default 256×256, sent as
//! ndarray payloads) with their scan positions as metadata, over a QoS
//! stream per partition (buffered, flow-controlled, replayable); an
//! HPC-side QoS consumer that reads each frame as an array view (no copy),
//! checks its integrity and computes per-frame statistics (total counts,
//! peak, centre of mass). Every frame's lineage is recorded by the stream
//! layer into an embedded provenance store (SQLite). The HPC side also
//! reconstructs each scan position from its frames and streams the
//! reconstruction, with lineage; a resilient data view joins the frames of
//! each position with its reconstruction into training samples (references
//! only, no payload copies), which a trainer stage checks. At the end the
//! demo finds one frame bad, invalidates it and shows what that reached —
//! the reconstruction, the training sample — and why.
//!
//! It does not reconstruct anything real (a position's "reconstruction" is
//! the mean of its frames): it exercises the streaming services with
//! arbitrary frame sizes and counts; [`crate::online`] is the real loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use diaspora_fabric::item::{meta, now_us, AckedItem};
use diaspora_fabric::topic::ensure_topic;
use diaspora_fabric::{
    Client, ClientConfig, FabricError, Node, NodeConfig, Producer, ProducerConfig, TopicSettings,
};
use diaspora_proto::v1::{ItemRef, Lineage};
use diaspora_provenance::lineage::{LineageRecorder, RecorderConfig};
use diaspora_provenance::{EdgeKind, Kind as RecordKind, Provenance, Record, TagValue, Target};
use diaspora_stream::control::{control_topic, replay_topic};
use diaspora_stream::{ndarray as nd, Policy, QosConsumer, QosProducer, Sent};
use diaspora_view::runner::{View, ViewOptions};
use diaspora_view::ViewSpec;

/// What the demo runs ([`Default`]: the defaults of `diaspora demo`).
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Diffraction frames to stream.
    pub frames: u64,
    /// Frame width, pixels.
    pub width: usize,
    /// Frame height, pixels.
    pub height: usize,
    /// Frames per scan position (a training sample joins them with the
    /// position's reconstruction).
    pub frames_per_position: u64,
    /// Partitions of the frames topic.
    pub partitions: u32,
    /// Frame rate at the detector, frames/s (0 = as fast as possible).
    pub rate: f64,
    /// Keep the node's data here instead of a temporary directory.
    pub data_dir: Option<std::path::PathBuf>,
    /// Print the summary as JSON.
    pub json: bool,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            frames: 2000,
            width: 256,
            height: 256,
            frames_per_position: 4,
            partitions: 2,
            rate: 0.0,
            data_dir: None,
            json: false,
        }
    }
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

#[derive(Default)]
struct FrameStats {
    frames: u64,
    reconstructed: u64,
    bytes: u64,
    total_counts: f64,
    peak: u16,
    com_x: f64,
    com_y: f64,
}

#[derive(Default)]
struct TrainerStats {
    samples: u64,
    frame_bytes: u64,
    copied: u64,
    pending: u64,
    duplicates: u64,
    published: u64,
}

/// The topic the training-samples view publishes its references on.
pub const SAMPLES_TOPIC: &str = "view.training-samples";

/// Runs the demo and prints a summary.
pub async fn run(args: DemoConfig) -> Result<()> {
    ensure!(args.frames > 0, "--frames must be > 0");
    ensure!(args.width * args.height > 0, "frame must have pixels");
    ensure!(
        (1..=64).contains(&args.frames_per_position),
        "--frames-per-position must be 1..=64"
    );
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
        ("recons".to_string(), 1),
        (SAMPLES_TOPIC.to_string(), 1),
    ] {
        // A topic the data directory already holds is used as it is: its
        // partition count is read below.
        match ensure_topic(broker, &t, &TopicSettings::with_partitions(parts)).await {
            Ok(_) | Err(FabricError::TopicMismatch { .. }) => {}
            Err(e) => return Err(e.into()),
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

    // Per-item lineage (frames, reconstructions, training samples), recorded
    // by the stream layer as items are acknowledged, and by the view.
    let store = data_dir.join("prov.sqlite");
    let prov = Provenance::open(&store.display().to_string())
        .with_context(|| format!("opening the provenance store {}", store.display()))?;
    let recorder = Arc::new(LineageRecorder::start(
        prov,
        RecorderConfig {
            tag_keys: vec!["frame".into(), "scan".into()],
            ..Default::default()
        },
    ));

    // The trainer's side: a view joins each position's frames with its
    // reconstruction into a training sample.
    let k = args.frames_per_position;
    let positions = args.frames / k;
    let spec = ViewSpec::new("training-samples")
        .source("frames", "frames", "scan", k as u32)
        .source("recons", "recons", "scan", 1)
        .id_key("scan")
        .output_topic(SAMPLES_TOPIC);
    let mut view = View::start(
        &client,
        spec,
        ViewOptions {
            lineage: Some(recorder.clone()),
            ..Default::default()
        },
    )
    .await
    .context("starting the training-samples view")?;
    let (w, h) = (args.width, args.height);
    let trainer = tokio::spawn(async move {
        let mut t = TrainerStats::default();
        while t.samples < positions {
            let Some(d) = view.next(Duration::from_secs(30)).await? else {
                anyhow::bail!("no training sample for 30 s ({} of {positions})", t.samples);
            };
            // The sample's payloads are the fetched frames themselves: check
            // that the reconstruction is the mean of its frames.
            let recon = d.members[k as usize]
                .as_ref()
                .context("reconstruction payload")?;
            let recon = nd::item_array::<u16>(&recon.item).context("reconstruction array")?;
            let mut sum = vec![0u32; w * h];
            for m in &d.members[..k as usize] {
                let f = m.as_ref().context("frame payload")?;
                let f = nd::item_array::<u16>(&f.item).context("frame array")?;
                for (s, v) in sum.iter_mut().zip(f.iter()) {
                    *s += u32::from(*v);
                }
                t.frame_bytes += (w * h * 2) as u64;
            }
            ensure!(
                sum.iter()
                    .zip(recon.iter())
                    .all(|(s, r)| (*s / k as u32) as u16 == *r),
                "sample {}: reconstruction is not the mean of its frames",
                d.item.key
            );
            t.samples += 1;
            view.ack(d.id());
        }
        t.pending = view.engine().pending() as u64;
        t.duplicates = view.engine().stats().duplicates;
        let stats = view.close().await?;
        t.copied = stats.payload_bytes_copied;
        t.published = stats.published;
        Ok(t)
    });

    // HPC side: statistics per frame, a reconstruction per scan position.
    // Reconstructions go out on a plain fabric producer (nothing downstream
    // runs a QoS consumer for them: the view reads the topic), and their
    // lineage is recorded as each is acknowledged, as a QoS hook would.
    let recons = Producer::new(&client, ProducerConfig::new("recons")).await?;
    let recons_lineage = recorder.clone();
    let mut consumer =
        QosConsumer::new(&client, "frames", &[], "hpc-recon", policy.clone(), None).await?;
    let received = Arc::new(AtomicU64::new(0));
    let expected = args.frames;
    let (w, h) = (args.width, args.height);
    let rx_count = received.clone();
    let rx_bar = bar.clone();
    let hpc = tokio::spawn(async move {
        let mut s = FrameStats::default();
        // Per scan position: the sum of its frames so far, and their places.
        let mut open: HashMap<i64, (Vec<u32>, Vec<ItemRef>)> = HashMap::new();
        let mut reconstructed = 0u64;
        let mut acks = Vec::new();
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
            let frame_no = meta::get_i64(item, "frame").context("frame metadata missing")?;
            let crc = meta::get_i64(item, "crc32c").context("crc32c metadata missing")? as u32;
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
            let _ = lat.record((now_us() - item.timestamp_us).max(1) as u64);
            rx_count.fetch_add(1, Ordering::Relaxed);
            rx_bar.inc(1);
            let _ = meta::get_f64(item, "scan_x");
            // Reconstruction (a stand-in for ePIE: the mean of the
            // position's frames), streamed with its lineage.
            let scan = meta::get_i64(item, "scan").context("scan metadata missing")?;
            let (acc, refs) = open
                .entry(scan)
                .or_insert_with(|| (vec![0u32; w * h], Vec::new()));
            for (a, &v) in acc.iter_mut().zip(px) {
                *a += u32::from(v);
            }
            refs.push(ItemRef {
                topic: "frames".into(),
                partition: it.partition,
                offset: it.offset.context("frames are read from the fabric")?,
            });
            if refs.len() as u64 == k {
                let (acc, refs) = open.remove(&scan).expect("present");
                let mut b = Vec::with_capacity(w * h * 2);
                for a in acc {
                    b.extend_from_slice(&((a / k as u32) as u16).to_le_bytes());
                }
                let mut r = diaspora_fabric::item::payload_item(Bytes::from(b));
                nd::tag_array(&mut r, "u16", &[h, w]);
                r.metadata.insert("scan".into(), meta::int(scan));
                r.lineage = Some(Lineage {
                    sources: refs,
                    model_versions: Vec::new(),
                    activity: "hpc-reconstruct".into(),
                });
                let lineage = r.lineage.clone();
                let at = recons.send(r).await?;
                let rec = recons_lineage.clone();
                acks.push(tokio::spawn(async move {
                    let at = at.await?;
                    rec.record(AckedItem {
                        item: diaspora_fabric::ItemRef::new("recons", at.partition, at.offset),
                        timestamp_us: now_us(),
                        lineage,
                        quality: None,
                        tags: vec![("scan".into(), scan.to_string())],
                    });
                    Ok::<_, diaspora_fabric::FabricError>(())
                }));
                reconstructed += 1;
            }
        }
        for a in acks {
            a.await.context("reconstruction ack task")??;
        }
        recons.close().await?;
        s.reconstructed = reconstructed;
        let report = consumer.close().await?;
        let dupes = seen.values().filter(|c| **c > 1).count();
        ensure!(
            seen.len() as u64 == expected && dupes == 0,
            "frames missing or duplicated"
        );
        Ok((s, lat, originals, report))
    });

    let started = Instant::now();
    let edge = async {
        // Edge side: one QoS stream per partition.
        let mut producers = Vec::new();
        for p in 0..parts {
            producers.push(
                QosProducer::new(&client, "frames", p, policy.clone())
                    .await?
                    .with_ack_hook(recorder.hook()),
            );
        }
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
            for (key, value) in [
                ("frame", meta::int(n as i64)),
                ("scan", meta::int((n / k) as i64)),
                ("scan_x", meta::float(sx)),
                ("scan_y", meta::float(sy)),
                ("crc32c", meta::int(i64::from(crc32c::crc32c(&payload)))),
            ] {
                item.metadata.insert(key.to_string(), value);
            }
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
        Ok::<_, anyhow::Error>((acked, memory_high_water))
    };
    let (acked, memory_high_water) = edge.await?;
    let (stats, lat, originals, qos) = hpc.await.context("HPC consumer task")??;
    let trained = trainer.await.context("trainer task")??;
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let provenance =
        tokio::task::spawn_blocking(move || demo_provenance(&recorder, args.frames, parts, k))
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
        "view": {
            "name": "training-samples",
            "frames_per_sample": k,
            "reconstructions": stats.reconstructed,
            "samples": trained.samples,
            "samples_verified": trained.samples,
            "frame_bytes_read_in_place": trained.frame_bytes,
            "payload_bytes_copied": trained.copied,
            "references_published": trained.published,
            "frames_pending": trained.pending,
            "duplicates_ignored": trained.duplicates,
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
            "  view          {} training samples ({k} frames + 1 reconstruction per scan position), each checked; {:.1} MB of frames read in place, {} payload bytes copied; references on {SAMPLES_TOPIC}",
            trained.samples,
            trained.frame_bytes as f64 / 1e6,
            trained.copied
        );
        println!(
            "  provenance    {} item records (SQLite, durable); frame {} found bad → {} records invalid: {}",
            provenance["items_recorded"],
            provenance["bad_frame"],
            provenance["invalidated"],
            provenance["why"].as_str().unwrap_or_default()
        );
        if let Some(w) = provenance["sample_why"].as_str() {
            println!("                its training sample: {w}");
        }
    }
    ensure!(
        acked == args.frames && stats.frames == args.frames,
        "not every frame made it"
    );
    ensure!(
        trained.samples == positions && stats.reconstructed == positions && trained.copied == 0,
        "training samples: {} of {positions}",
        trained.samples
    );
    Ok(())
}

/// Closes the lineage recorder, records the HPC side's statistics as derived
/// from every frame, then finds one frame bad: invalidates it and returns
/// what that reached and the why-chains of the statistics and of the
/// training sample built on it.
fn demo_provenance(
    recorder: &LineageRecorder,
    frames: u64,
    partitions: u32,
    per_position: u64,
) -> Result<serde_json::Value> {
    let (stats, mut prov) = recorder.close()?;
    let positions = frames / per_position;
    // Frames, reconstructions, samples.
    let want = frames + 2 * positions;
    ensure!(
        stats.recorded == want && stats.lost == 0 && stats.unrecorded_sources == 0,
        "lineage of {} of {want} items recorded ({} lost, {} sources unrecorded)",
        stats.recorded,
        stats.lost,
        stats.unrecorded_sources
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
    let chain = |prov: &mut Provenance, id| -> Result<String> {
        Ok(prov
            .why(id)?
            .map(|w| {
                w.chain
                    .iter()
                    .map(|s| s.name.clone())
                    .collect::<Vec<_>>()
                    .join(" ← ")
            })
            .unwrap_or_default())
    };
    let why = chain(&mut prov, summary)?;
    let scan = (bad / per_position).to_string();
    let sample = prov
        .find_tag("view_key", &TagValue::infer(&scan), 10)?
        .into_iter()
        .next();
    let sample_why = match sample {
        Some(id) if bad / per_position < positions => {
            let w = chain(&mut prov, id)?;
            ensure!(!w.is_empty(), "the sample of the bad frame is still valid");
            Some(w)
        }
        _ => None,
    };
    Ok(serde_json::json!({
        "items_recorded": stats.recorded,
        "frames_recorded": frames,
        "batches": stats.batches,
        "bad_frame": bad,
        "invalidated": rep.invalidated,
        "why": why,
        "sample_why": sample_why,
    }))
}
