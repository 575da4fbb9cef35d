//! The edge: inference with the newest valid model, and the rollback.

use super::wire::{self, complex_bytes, Notice};
use super::*;

pub(crate) struct EdgeReport {
    pub(crate) received: u64,
    pub(crate) model_bytes: u64,
}

struct EdgeModel {
    version: u64,
    model: Arc<Surrogate>,
    probe: Array2<C32>,
}

/// Asks provenance for the newest of `versions` that is still valid (a
/// version without a record counts as valid: nothing says otherwise).
async fn newest_valid(
    recorder: &Arc<LineageRecorder>,
    store: &str,
    versions: Vec<u64>,
) -> Result<Option<u64>> {
    let (rec, url) = (recorder.clone(), store.to_string());
    tokio::task::spawn_blocking(move || -> Result<Option<u64>> {
        rec.flush()?;
        let mut prov = Provenance::open(&url)?;
        for v in versions.into_iter().rev() {
            match prov.model_version(MODEL, v as i64)? {
                Some(id) if prov.is_invalid(id)? => continue,
                _ => return Ok(Some(v)),
            }
        }
        Ok(None)
    })
    .await
    .context("provenance query")?
}

/// Where the edge writes each frame it received (one JSON line per frame,
/// the twin's consumer format).
pub type DeliveryLog = Option<PathBuf>;

pub(crate) async fn edge_service(
    edge: Client,
    cfg: LoopConfig,
    shared: Arc<Shared>,
    recorder: Arc<LineageRecorder>,
    store: String,
    deliveries: DeliveryLog,
) -> Result<EdgeReport> {
    let mut frames = QosConsumer::new(
        &edge,
        FRAMES,
        &[],
        "edge-inference",
        Policy::default(),
        None,
    )
    .await?;
    let mut models =
        Consumer::subscribe(&edge, ConsumerConfig::new(EDGE_MODELS).group("edge-models")).await?;
    let out = Producer::new(&edge, ProducerConfig::new(EDGE_RECONS)).await?;
    let mut log = match &deliveries {
        None => None,
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
    };
    let expected = (cfg.scans * cfg.positions) as u64;
    let mut received = 0u64;
    let mut model_bytes = 0u64;
    let mut hpc_done = false;
    // Every version received, by number; the one running.
    let mut known: BTreeMap<u64, Arc<EdgeModel>> = BTreeMap::new();
    let mut current: Option<Arc<EdgeModel>> = None;
    // A scan in progress: the frames, their metadata, their places, the
    // predictions made so far, the versions that made them.
    struct Open {
        frames: Vec<Array2<u16>>,
        metas: Vec<FrameMeta>,
        refs: Vec<ItemRef>,
        patches: Vec<(Array2<f32>, Array2<f32>)>,
        model: Arc<EdgeModel>,
    }
    let mut open: HashMap<String, Open> = HashMap::new();
    let mut skipped: HashMap<String, usize> = HashMap::new();
    let batch = 16;
    let mut last = Instant::now();
    loop {
        // The model topic: versions (the newest valid one runs) and notices.
        while let Some(c) = models.poll(Duration::ZERO).await? {
            model_bytes += c.record_bytes as u64;
            let notice = match wire::parse_notice(&c.item) {
                Ok(n) => n,
                Err(e) => {
                    shared.event(
                        "refused",
                        format!("edge: {EDGE_MODELS}/{}: {e:#}", c.offset),
                    );
                    continue;
                }
            };
            match notice {
                Some(Notice::End) => {
                    hpc_done = true;
                    continue;
                }
                Some(Notice::Invalidated(scan)) => {
                    // A scan is bad: ask provenance which version to run.
                    shared.bad_scan.lock().get_or_insert_with(|| scan.clone());
                    let t = Instant::now();
                    let valid =
                        newest_valid(&recorder, &store, known.keys().copied().collect()).await?;
                    current = valid.and_then(|v| known.get(&v).cloned());
                    // Scans in progress with an invalid model start over.
                    open.retain(|_, o| Some(o.model.version) == valid);
                    let v = valid.unwrap_or(0);
                    shared.edge_version.store(v, Ordering::Relaxed);
                    let secs = t.elapsed().as_secs_f64();
                    *shared.rollback.lock() = Some((v, secs));
                    shared.event(
                        "rollback",
                        format!(
                            "edge rolls back to model v{v} after {scan} was invalidated ({:.0} ms)",
                            secs * 1e3
                        ),
                    );
                    continue;
                }
                None => {}
            }
            let item = c.item.clone();
            let loaded = tokio::task::spawn_blocking(move || -> Result<EdgeModel> {
                let msg = wire::parse_model(&item)?;
                let model = Surrogate::from_checkpoint_bytes(
                    &msg.checkpoint,
                    diaspora_ptycho::surrogate::default_device(),
                )?;
                Ok(EdgeModel {
                    version: msg.version,
                    model: Arc::new(model),
                    probe: msg.probe,
                })
            })
            .await
            .context("model load")?;
            let m = match loaded {
                Ok(m) => m,
                Err(e) => {
                    // A model that does not load is refused; the edge runs on.
                    shared.event(
                        "refused",
                        format!("edge: {EDGE_MODELS}/{}: {e:#}", c.offset),
                    );
                    continue;
                }
            };
            let version = m.version;
            let m = Arc::new(m);
            known.insert(version, m.clone());
            if current.as_ref().map_or(true, |c| c.version < version) {
                // Only a version provenance holds valid runs (one shipped
                // just before an invalidation reached the trainer is not).
                if newest_valid(&recorder, &store, vec![version]).await? != Some(version) {
                    shared.event(
                        "model",
                        format!("edge: model v{version} arrived already invalid; not loaded"),
                    );
                    continue;
                }
                if current.is_none() && !shared.switched.swap(true, Ordering::Relaxed) {
                    shared.event(
                        "phase",
                        format!(
                            "switch: the edge runs model v{version}; one scan in {} goes to HPC",
                            cfg.fine_tune_every
                        ),
                    );
                }
                current = Some(m);
                shared.edge_version.store(version, Ordering::Relaxed);
            }
        }
        if received >= expected {
            // Every frame is in: keep taking models and notices until the
            // HPC side is done.
            if hpc_done {
                break;
            }
            ensure!(
                last.elapsed() < 2 * STALL,
                "edge: every frame is in, and no end from HPC for {} s",
                2 * STALL.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let Some(it) = frames.next(Duration::from_millis(100)).await? else {
            ensure!(
                last.elapsed() < STALL,
                "edge: no frame for {} s ({received} of {expected})",
                STALL.as_secs()
            );
            continue;
        };
        last = Instant::now();
        received += 1;
        shared.edge_received.fetch_add(1, Ordering::Relaxed);
        let latency = (now_us() - it.item.timestamp_us).max(1);
        let _ = shared.latency.lock().record(latency as u64);
        shared.latencies_ms.lock().push(latency as f64 / 1e3);
        if let Some(f) = log.as_mut() {
            use std::io::Write;
            writeln!(
                f,
                "{{\"id\":{},\"partition\":{},\"offset\":{},\"timestamp_us\":{},\"latency_us\":{latency}}}",
                meta::get_i64(&it.item, "id").map_or("null".into(), |v| v.to_string()),
                it.partition,
                it.offset.unwrap_or(0),
                it.item.timestamp_us,
            )?;
            if received % 64 == 0 || received == expected {
                f.flush()?;
            }
        }
        let read = read_frame(&it.item).and_then(|f| Ok((f, wire::frame_object_side(&it.item)?)));
        let ((frame, m, positions), size) = match read {
            Ok(x) => x,
            Err(e) => {
                shared.event(
                    "refused",
                    format!("edge: {FRAMES}/{}/{:?}: {e:#}", it.partition, it.offset),
                );
                continue;
            }
        };
        let scan = m.scan_id.clone();
        let at = ItemRef {
            topic: FRAMES.into(),
            partition: it.partition,
            offset: it.offset.context("frames come from the fabric")?,
        };
        let Some(model) = current.clone() else {
            continue;
        };
        if !open.contains_key(&scan) {
            if m.index != 0 || skipped.contains_key(&scan) {
                // The model came mid-scan: this scan stays ePIE's.
                *skipped.entry(scan).or_default() += 1;
                continue;
            }
            open.insert(
                scan.clone(),
                Open {
                    frames: Vec::new(),
                    metas: Vec::new(),
                    refs: Vec::new(),
                    patches: Vec::new(),
                    model,
                },
            );
        }
        let o = open.get_mut(&scan).expect("open");
        o.frames.push(frame);
        o.metas.push(m);
        o.refs.push(at);
        let done = o.frames.len() == positions;
        if o.frames.len() - o.patches.len() >= batch || done {
            let from = o.patches.len();
            let todo: Vec<Array2<u16>> = o.frames[from..].to_vec();
            let model = o.model.clone();
            let t = Instant::now();
            let p = tokio::task::spawn_blocking(move || model.model.predict(&todo, 16))
                .await
                .context("inference task")??;
            shared
                .edge_busy_us
                .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
            shared
                .edge_frames
                .fetch_add(p.len() as u64, Ordering::Relaxed);
            o.patches.extend(p);
        }
        if !done {
            continue;
        }
        let o = open.remove(&scan).expect("open");
        let (amp, phase) = stitch(&o.patches, &o.metas, &o.model.probe, size)?;
        let object = diaspora_ptycho::metrics::from_parts(&amp, &phase);
        let mut b = Vec::with_capacity(size * size * 8);
        complex_bytes(&object, &mut b);
        let mut item = payload_item(Bytes::from(b));
        item.metadata.insert("scan".into(), meta::string(&scan));
        item.metadata
            .insert("model_version".into(), meta::int(o.model.version as i64));
        let lineage = Lineage {
            sources: o.refs,
            model_versions: vec![format!("{MODEL}@{}", o.model.version)],
            activity: "edge-inference".into(),
        };
        item.lineage = Some(lineage.clone());
        let at = out.send(item).await?.await?;
        recorder.record(AckedItem {
            item: diaspora_fabric::ItemRef::new(EDGE_RECONS, at.partition, at.offset),
            timestamp_us: now_us(),
            lineage: Some(lineage),
            quality: None,
            tags: vec![
                ("scan".into(), scan.clone()),
                ("model_version".into(), o.model.version.to_string()),
            ],
        });
        shared.edge.lock().insert(
            scan,
            EdgeOut {
                object,
                version: o.model.version,
                t_s: shared.now_s(),
            },
        );
    }
    if let Some(mut f) = log {
        use std::io::Write;
        f.flush()?;
    }
    out.close().await?;
    frames.close().await?;
    models.close().await;
    Ok(EdgeReport {
        received,
        model_bytes,
    })
}

/// Mean phase SSIM of the edge's images against ePIE's, over the scans
/// both made.
pub(super) fn edge_quality(shared: &Shared) -> (Option<f64>, usize) {
    let epie = shared.epie.lock();
    let edge = shared.edge.lock();
    let mut sum = 0.0;
    let mut count = 0;
    for (scan, e) in edge.iter() {
        if Some(scan) == shared.bad_scan.lock().as_ref() {
            continue;
        }
        if let Some(r) = epie.get(scan) {
            let (s, _) = r.object.dim();
            let object = e.object.slice(ndarray::s![..s, ..s]).to_owned();
            if let Ok(q) = compare(&object, &r.object, &r.mask) {
                sum += q.phase_ssim;
                count += 1;
            }
        }
    }
    ((count > 0).then(|| sum / count as f64), count)
}
