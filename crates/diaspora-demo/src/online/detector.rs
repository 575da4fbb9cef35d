//! The beamline: the detector's scans on the edge's QoS streams, and what
//! it learns while it takes them (the switch, congestion predictions).

use super::wire::{self, congestion_prediction, frame_item};
use super::*;

/// The uplink's policy: a QoS stream that reduces when told to (zstd,
/// lossless: ePIE and the trainer get every pixel back). Its own latency
/// is to the edge node and never calls for it; a congestion prediction for
/// the WAN does ([`QosProducer::advise`]).
fn uplink_policy() -> Policy {
    let mut p = Policy::default();
    p.flow.mode = diaspora_stream::policy::FlowMode::Reduce;
    p.reduce = vec![diaspora_stream::policy::Reduction::Zstd { level: 1 }];
    p
}

/// What the detector learns from the edge node while it takes scans.
struct DetectorNews {
    /// A model has reached the edge: the loop has switched.
    switched: Arc<AtomicBool>,
    /// Predictions for the WAN (text for the timeline).
    predictions: tokio::sync::mpsc::Receiver<String>,
}

/// Follows the edge's model topic (the switch) and the predictions topic
/// (congestion on `cfg.wan_link`) until `stop`.
fn detector_news(
    edge: &Client,
    cfg: &LoopConfig,
    stop: Arc<diaspora_fabric::Stop>,
) -> (DetectorNews, tokio::task::JoinHandle<Result<()>>) {
    let switched = Arc::new(AtomicBool::new(false));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let task = {
        let (edge, switched, link) = (edge.clone(), switched.clone(), cfg.wan_link.clone());
        tokio::spawn(async move {
            let mut models = Consumer::assign(
                &edge,
                ConsumerConfig::new(EDGE_MODELS).start(StartFrom::Earliest),
                &[],
            )
            .await?;
            let mut preds: Option<Consumer> = None;
            let mut tried = Instant::now() - Duration::from_secs(10);
            while !stop.stopped() {
                // The predictions topic appears when a monitor starts.
                if preds.is_none() && tried.elapsed() > Duration::from_secs(1) {
                    tried = Instant::now();
                    preds = Consumer::assign(
                        &edge,
                        ConsumerConfig::new(PREDICTIONS).start(StartFrom::Latest),
                        &[],
                    )
                    .await
                    .ok();
                }
                if let Some(p) = preds.as_mut() {
                    while let Some(c) = p.poll(Duration::ZERO).await? {
                        if let Some(text) = congestion_prediction(&c.item.payload, &link) {
                            let _ = tx.try_send(text);
                        }
                    }
                }
                if let Some(c) = models.poll(Duration::from_millis(100)).await? {
                    if meta::get_i64(&c.item, "version").is_some() {
                        switched.store(true, Ordering::Relaxed);
                    }
                }
            }
            models.close().await;
            if let Some(p) = preds {
                p.close().await;
            }
            Ok(())
        })
    };
    (
        DetectorNews {
            switched,
            predictions: rx,
        },
        task,
    )
}

/// Where the detector writes what its frames stream acknowledged (one JSON
/// line per frame, the twin's `--acks` format).
pub type AckLog = Option<PathBuf>;

/// Takes the scans: frames on the edge's QoS stream, and up the WAN (a
/// QoS stream of its own, `uplink`) while HPC needs them. A congestion
/// prediction for the WAN engages the uplink's reduction. Ends the uplink
/// with a marker naming how many scans went up. Returns the frames
/// acknowledged.
pub(crate) async fn detector(
    edge: &Client,
    cfg: &LoopConfig,
    shared: &Arc<Shared>,
    recorder: &Arc<LineageRecorder>,
    acks: AckLog,
) -> Result<u64> {
    let policy = Policy::default();
    let mut stream = QosProducer::new(edge, FRAMES, 0, policy)
        .await?
        .with_ack_hook(recorder.hook());
    let ack_writer = match acks {
        None => None,
        Some(path) => {
            let mut rx = stream.subscribe_acks();
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(&path)
                    .with_context(|| format!("creating {}", path.display()))?,
            );
            Some(tokio::spawn(async move {
                use std::io::Write;
                while let Some(a) = rx.recv().await {
                    writeln!(
                        f,
                        "{{\"id\":{},\"partition\":{},\"offset\":{},\"acked_us\":{}}}",
                        a.id.unwrap_or(a.seq),
                        a.partition,
                        a.offset,
                        now_us()
                    )?;
                }
                f.flush()
            }))
        }
    };
    let mut uplink = QosProducer::new(edge, UPLINK, 0, uplink_policy()).await?;
    let news_stop = diaspora_fabric::Stop::new();
    let (mut news, news_task) = detector_news(edge, cfg, news_stop.clone());
    let started = Instant::now();
    let mut sent = 0u64;
    let mut fine_tune_scans = 0usize;
    let mut scans_up = 0u64;
    let mut uplink_bytes = 0u64;
    let mut injected = false;
    for s in 0..cfg.scans {
        let id = format!("scan-{s:03}");
        let sim_cfg = SimConfig {
            scan_id: id.clone(),
            kind: cfg.kind,
            seed: cfg.seed.wrapping_mul(10_007).wrapping_add(s as u64),
            positions: cfg.positions,
            dose: cfg.dose,
            noise: true,
            ..SimConfig::default()
        };
        let mut scan = tokio::task::spawn_blocking(move || sim::simulate(&sim_cfg))
            .await
            .context("simulation task")??;
        let switched = news.switched.load(Ordering::Relaxed);
        let up = if switched {
            fine_tune_scans += 1;
            (fine_tune_scans - 1) % cfg.fine_tune_every == 0
        } else {
            true
        };
        scans_up += u64::from(up);
        // The fault: in the second scan that goes to HPC after the switch.
        if cfg.bad_scan && switched && up && !injected && fine_tune_scans > cfg.fine_tune_every {
            inject_fault(&mut scan.frames);
            injected = true;
            *shared.bad_scan.lock() = Some(id.clone());
            shared.event(
                "fault",
                format!("{id}: a block of 36 hot pixels on the detector (injected)"),
            );
        }
        let side = scan.object.nrows();
        shared.truth.lock().insert(id.clone(), scan.object.clone());
        for (frame, m) in scan.frames.iter().zip(&scan.meta) {
            let due = started + Duration::from_secs_f64(sent as f64 / cfg.rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            while let Ok(text) = news.predictions.try_recv() {
                let stages = uplink.advise(1, REDUCE_HOLD)?;
                shared.event(
                    "prediction",
                    format!(
                        "{text}: the uplink reduces (zstd, {stages} stage engaged for {} s)",
                        REDUCE_HOLD.as_secs()
                    ),
                );
            }
            let item = frame_item(frame, m, cfg.positions, sent, side);
            if up {
                match uplink.send(item.clone()).await? {
                    Sent::Accepted(_) => {}
                    other => bail!("the uplink reduces losslessly, it does not drop: {other:?}"),
                }
                // What the WAN carries: the item as the stream sent it
                // (compressed while a prediction holds the reduction).
                let r = uplink.report();
                let bytes = r.accepted_bytes - uplink_bytes;
                uplink_bytes = r.accepted_bytes;
                shared.wan_reduced.store(r.compressed, Ordering::Relaxed);
                if switched {
                    shared.wan_after.fetch_add(bytes, Ordering::Relaxed);
                } else {
                    shared.wan_before.fetch_add(bytes, Ordering::Relaxed);
                }
            }
            if switched {
                shared.frames_after.fetch_add(1, Ordering::Relaxed);
            } else {
                shared.frames_before.fetch_add(1, Ordering::Relaxed);
            }
            match stream.send(item).await? {
                Sent::Accepted(_) => {}
                other => bail!("the loop's QoS policy does not reduce or shed: {other:?}"),
            }
            sent += 1;
        }
        shared.scans_taken.fetch_add(1, Ordering::Relaxed);
        let total =
            shared.wan_before.load(Ordering::Relaxed) + shared.wan_after.load(Ordering::Relaxed);
        shared.wan_series.lock().push((shared.now_s(), total));
    }
    // The end of the uplink: HPC knows then how many scans to expect.
    uplink.send(wire::end_item(scans_up)).await?;
    news_stop.trigger();
    let r = stream.close(Duration::from_secs(120)).await?;
    uplink
        .close(Duration::from_secs(120))
        .await
        .context("the uplink")?;
    news_task.await.context("detector news task")??;
    if let Some(w) = ack_writer {
        w.await.context("ack writer")??;
    }
    Ok(r.counters.acked)
}
