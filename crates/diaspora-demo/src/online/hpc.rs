//! HPC: ePIE on the pool, the view of training samples, the online
//! trainer and the QA check.

use super::wire::{self, Notice};
use super::*;

/// HPC's services: ePIE (on the pool named [`POOL`], which runs
/// elsewhere), the view of training samples, the trainer and the QA check.
pub(crate) struct Hpc {
    epie: tokio::task::JoinHandle<Result<()>>,
    pool_events: tokio::task::JoinHandle<Result<()>>,
    feeder: tokio::task::JoinHandle<Result<()>>,
    to_trainer: mpsc::SyncSender<TrainerMsg>,
    trainer: std::thread::JoinHandle<Result<()>>,
    qa: tokio::task::JoinHandle<Result<Vec<u64>>>,
}

impl Hpc {
    pub(crate) async fn start(
        hpc: &Client,
        cfg: &LoopConfig,
        shared: &Arc<Shared>,
        recorder: &Arc<LineageRecorder>,
        store_url: &str,
        scans_dir: PathBuf,
    ) -> Result<Hpc> {
        let (to_trainer, trainer_rx) = mpsc::sync_channel::<TrainerMsg>(64);
        let (shipped_tx, shipped_rx) = tokio::sync::mpsc::channel::<Shipped>(64);
        let pool_events = tokio::spawn(follow_pool(hpc.clone(), shared.clone(), cfg.kill_worker));
        let epie = tokio::spawn(epie_service(
            hpc.clone(),
            cfg.clone(),
            shared.clone(),
            recorder.clone(),
            scans_dir,
        ));
        // The view of training samples and the trainer.
        let spec = ViewSpec::new("training-samples")
            .source("frames", HPC_FRAMES, "scan", cfg.positions as u32)
            .source("recons", RECONS, "scan", 1)
            .id_key("scan")
            .output_topic(SAMPLES);
        let view = View::start(
            hpc,
            spec,
            ViewOptions {
                lineage: Some(recorder.clone()),
                ..Default::default()
            },
        )
        .await
        .context("starting the training-samples view")?;
        let feeder = tokio::spawn(feed_trainer(
            view,
            cfg.clone(),
            shared.clone(),
            to_trainer.clone(),
        ));
        let trainer = {
            let (cfg, shared, recorder, url) = (
                cfg.clone(),
                shared.clone(),
                recorder.clone(),
                store_url.to_string(),
            );
            let models = Producer::new(hpc, ProducerConfig::new(MODELS)).await?;
            let handle = tokio::runtime::Handle::current();
            std::thread::Builder::new()
                .name("trainer".into())
                .spawn(move || {
                    train_loop(
                        cfg, shared, recorder, &url, trainer_rx, models, shipped_tx, handle,
                    )
                })?
        };
        // The QA check that finds the bad scan.
        let qa = tokio::spawn(qa_check(
            shipped_rx,
            shared.clone(),
            recorder.clone(),
            store_url.to_string(),
            Producer::new(hpc, ProducerConfig::new(MODELS)).await?,
            to_trainer.clone(),
        ));
        Ok(Hpc {
            epie,
            pool_events,
            feeder,
            to_trainer,
            trainer,
            qa,
        })
    }

    /// Waits, in order: ePIE has reconstructed every scan sent up (then
    /// `pool_stop`, if given, stops the pool), the view has handed them all
    /// to the trainer, the trainer has shipped its last version, the QA
    /// check has seen it and said `end` on the model topic. Returns the
    /// model versions the invalidation reached.
    pub(crate) async fn finish(
        self,
        shared: &Shared,
        pool_stop: Option<Arc<diaspora_fabric::Stop>>,
    ) -> Result<Vec<u64>> {
        let epie = self.epie.await.context("ePIE task")?;
        shared.epie_done.store(true, Ordering::Relaxed);
        if let Some(p) = pool_stop {
            p.trigger();
        }
        epie?;
        let feed = self.feeder.await.context("feeder task")?;
        let _ = self.to_trainer.send(TrainerMsg::Stop);
        let trainer = self.trainer;
        let train = tokio::task::spawn_blocking(move || trainer.join())
            .await
            .context("trainer thread")?
            .map_err(|_| anyhow::anyhow!("the trainer panicked"))?;
        let qa = self.qa.await.context("QA task")?;
        shared.stop.store(true, Ordering::Relaxed);
        let _ = self.pool_events.await;
        feed?;
        train?;
        qa
    }
}

/// The ePIE pool's name (its topics are `pool.epie.*`).
pub const POOL: &str = "epie";

/// The ePIE pool: real worker processes of this binary (`diaspora pool
/// worker`, the local provider), one to `epie_workers`, scaled on backlog.
pub(super) fn pool_spec(cfg: &LoopConfig) -> Result<PoolSpec> {
    let spec = format!(
        r#"
name = "{POOL}"
[worker]
command = ["diaspora", "pool", "worker"]
[heartbeat]
interval_ms = 300
timeout_ms = 3000
[scaling]
min_total = 1
max_total = {max}
backlog_per_worker = 1
cooldown_s = 2
scale_in_idle_s = 20
[[site]]
name = "hpc"
provider = "local"
min = 1
max = {max}
"#,
        max = cfg.epie_workers
    );
    let mut spec = PoolSpec::from_toml(&spec).map_err(|e| anyhow::anyhow!("pool spec: {e}"))?;
    spec.worker.command = cfg.worker_command.clone();
    Ok(spec)
}

/// A scan handed to the pool.
struct Submitted {
    refs: Vec<ItemRef>,
    corners: Vec<(usize, usize)>,
    hot: usize,
    out: PathBuf,
}

/// HPC's ePIE service: gathers each scan's frames as they arrive over the
/// WAN, writes the scan where the pool's workers read it, submits an ePIE
/// task (`ptycho.reconstruct`, keyed by the scan: a retried task yields one
/// result), and streams each result as a reconstruction with lineage to
/// the scan's frames. Pool events (workers joined, lost, replaced, scaled)
/// go on the timeline.
async fn epie_service(
    hpc: Client,
    cfg: LoopConfig,
    shared: Arc<Shared>,
    recorder: Arc<LineageRecorder>,
    work: PathBuf,
) -> Result<()> {
    let topics = PoolTopics::new(POOL);
    let mut consumer =
        Consumer::subscribe(&hpc, ConsumerConfig::new(HPC_FRAMES).group("epie")).await?;
    let mut results = Consumer::subscribe(
        &hpc,
        ConsumerConfig::new(&topics.results).group("epie-results"),
    )
    .await?;
    let recons = Producer::new(&hpc, ProducerConfig::new(RECONS)).await?;
    type Open = (Vec<Array2<u16>>, Vec<FrameMeta>, Vec<ItemRef>);
    let mut open: HashMap<String, Open> = HashMap::new();
    let mut submitted: HashMap<String, Submitted> = HashMap::new();
    let mut idle = Instant::now();
    let (mut scans_up, mut published) = (None::<u64>, 0u64);
    loop {
        if let Some(e) = shared.pool_error.lock().clone() {
            bail!("the ePIE pool stopped: {e}");
        }
        while let Some(r) = results.poll(Duration::ZERO).await? {
            let r = TaskResult::parse(&r.item.payload)
                .map_err(|e| anyhow::anyhow!("a pool result: {e}"))?;
            let Some(sub) = submitted.remove(&r.key) else {
                continue;
            };
            ensure!(
                r.ok,
                "ePIE of {} failed on the pool after {} attempts: {}",
                r.key,
                r.attempts,
                r.error.unwrap_or_default()
            );
            publish_recon(&recons, &recorder, &shared, r.key, sub, &r.worker).await?;
            published += 1;
        }
        let Some(c) = consumer.poll(Duration::from_millis(100)).await? else {
            let all_in = scans_up.is_some_and(|n| published >= n);
            if shared.stop.load(Ordering::Relaxed)
                || (all_in && open.is_empty() && submitted.is_empty())
            {
                break;
            }
            ensure!(
                idle.elapsed() < STALL,
                "ePIE: nothing for {} s ({} scans waiting on the pool)",
                STALL.as_secs(),
                submitted.len()
            );
            continue;
        };
        idle = Instant::now();
        let parsed = wire::parse_end(&c.item).and_then(|end| match end {
            // The detector's last word: how many scans it sent up.
            Some(n) => Ok(Err(n)),
            None => read_frame(&c.item).map(Ok),
        });
        let (frame, m, positions) = match parsed {
            Ok(Ok(f)) => f,
            Ok(Err(n)) => {
                scans_up = Some(n);
                continue;
            }
            Err(e) => {
                // A malformed item is refused, not fatal.
                shared.event(
                    "refused",
                    format!("ePIE: {HPC_FRAMES}/{}/{}: {e:#}", c.partition, c.offset),
                );
                continue;
            }
        };
        let at = ItemRef {
            topic: HPC_FRAMES.into(),
            partition: c.partition,
            offset: c.offset,
        };
        recorder.record(AckedItem {
            item: diaspora_fabric::ItemRef::new(HPC_FRAMES, c.partition, c.offset),
            timestamp_us: now_us(),
            lineage: None,
            quality: None,
            tags: vec![("scan".into(), m.scan_id.clone())],
        });
        let id = m.scan_id.clone();
        let e = open.entry(id.clone()).or_default();
        e.0.push(frame);
        e.1.push(m);
        e.2.push(at);
        if e.0.len() < positions {
            continue;
        }
        let (frames, metas, refs) = open.remove(&id).expect("open");
        let (dir, out) = (work.join(&id), work.join(format!("{id}.epie")));
        let corners: Vec<(usize, usize)> =
            metas.iter().map(|m| (m.y as usize, m.x as usize)).collect();
        let d = dir.clone();
        let hot = tokio::task::spawn_blocking(move || -> Result<usize> {
            diaspora_ptycho::files::write_scan(&d, &frames, &metas, None)?;
            Ok(hot_pixels(&frames))
        })
        .await
        .context("writing a scan")??;
        let task = Task {
            key: id.clone(),
            kind: TaskKind::Builtin {
                name: "ptycho.reconstruct".into(),
                args: serde_json::json!({
                    "scan": dir, "out": out, "iterations": cfg.epie_iterations,
                }),
            },
            inputs: refs
                .iter()
                .map(|r| format!("{}/{}/{}", r.topic, r.partition, r.offset))
                .collect(),
            attempt: 0,
            not_before_us: 0,
        };
        submit(&hpc, POOL, &[task])
            .await
            .map_err(|e| anyhow::anyhow!("submitting ePIE of {id}: {e}"))?;
        submitted.insert(
            id,
            Submitted {
                refs,
                corners,
                hot,
                out,
            },
        );
    }
    recons.close().await?;
    consumer.close().await;
    results.close().await;
    Ok(())
}

/// Reads a pool worker's reconstruction and streams it: the training
/// targets (ramp removed, amplitude scaled) and the probe, with lineage to
/// the scan's frames.
async fn publish_recon(
    recons: &Producer,
    recorder: &LineageRecorder,
    shared: &Shared,
    id: String,
    sub: Submitted,
    worker: &str,
) -> Result<()> {
    let out_dir = sub.out.clone();
    let corners = sub.corners.clone();
    let (object, probe, mask) = tokio::task::spawn_blocking(move || -> Result<_> {
        let read = |name: &str| -> Result<Array2<C32>> {
            let p = out_dir.join(name);
            let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            Ok(diaspora_ptycho::files::parse_complex(&bytes, name)?)
        };
        let object = read("epie_object.npy")?;
        let probe = read("epie_probe.npy")?;
        let mask = illuminated(&probe, &corners, object.dim(), 0.1)?;
        let r = epie::Reconstruction {
            object,
            probe: probe.clone(),
            fourier_error: Vec::new(),
            mask: mask.clone(),
            corners,
            seconds: 0.0,
        };
        Ok((workflow::targets(&r), probe, mask))
    })
    .await
    .context("reading a reconstruction")??;
    let mut item = wire::recon_item(
        &id,
        &object,
        &probe,
        &[
            ("hot_pixels", meta::int(sub.hot as i64)),
            ("worker", meta::string(worker)),
        ],
    );
    let lineage = Lineage {
        sources: sub.refs,
        model_versions: Vec::new(),
        activity: "epie".into(),
    };
    item.lineage = Some(lineage.clone());
    let at = recons.send(item).await?.await?;
    recorder.record(AckedItem {
        item: diaspora_fabric::ItemRef::new(RECONS, at.partition, at.offset),
        timestamp_us: now_us(),
        lineage: Some(lineage),
        quality: None,
        tags: vec![("scan".into(), id.clone())],
    });
    shared.epie.lock().insert(
        id,
        EpieOut {
            object,
            mask,
            hot_pixels: sub.hot,
        },
    );
    shared.epie_scans.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Puts the pool's events that matter on the timeline; with
/// `kill_worker`, SIGKILLs the first worker seen reconstructing a scan
/// once two scans are done, during warm-up.
async fn follow_pool(hpc: Client, shared: Arc<Shared>, kill_worker: bool) -> Result<()> {
    let mut killed = !kill_worker;
    let mut c = Consumer::assign(
        &hpc,
        ConsumerConfig::new(PoolTopics::new(POOL).events).start(StartFrom::Earliest),
        &[],
    )
    .await?;
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(ci) = c.poll(Duration::from_millis(200)).await? else {
            continue;
        };
        let Ok(e) = PoolMsgEvent::parse(&ci.item.payload) else {
            continue;
        };
        if let PoolMsgEvent::Heartbeat {
            worker,
            in_flight,
            pid,
            ..
        } = &e
        {
            if !killed
                && !in_flight.is_empty()
                && *pid > 0
                && shared.epie_scans.load(Ordering::Relaxed) >= 2
                && !shared.switched.load(Ordering::Relaxed)
            {
                killed = true;
                // SAFETY: kill(2) on a pid the pool's own heartbeat named: a
                // worker process this demo's pool started.
                let r = unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
                if r == 0 {
                    shared.workers_killed.fetch_add(1, Ordering::Relaxed);
                    shared.event(
                        "fault",
                        format!(
                            "SIGKILL to ePIE worker {worker} (pid {pid}) while it reconstructs {}",
                            in_flight.join(", ")
                        ),
                    );
                }
            }
        }
        let text = match &e {
            PoolMsgEvent::Heartbeat { .. } | PoolMsgEvent::Status(_) => continue,
            other => serde_json::to_string(other).unwrap_or_default(),
        };
        shared.event("pool", text);
    }
    c.close().await;
    Ok(())
}

// ---------------------------------------------------------------- HPC: trainer

enum TrainerMsg {
    /// A scan's samples, from one view item.
    Scan(Box<ScanSamples>),
    /// Roll back: the scans named are bad.
    Invalidated {
        scan: String,
    },
    Stop,
}

/// A scan's samples, from one view item.
struct ScanSamples {
    scan: String,
    train: Vec<Sample>,
    held: Vec<Sample>,
    /// The held-out positions.
    held_metas: Vec<FrameMeta>,
    /// ePIE's object (the targets).
    object: Array2<C32>,
    probe: Array2<C32>,
    /// The view item's key (its provenance record's `view_key`).
    sample_ref: String,
}

/// A model version shipped, for the QA check.
struct Shipped {
    version: u64,
    scans: Vec<String>,
}

/// Reads the view: each item joins a scan's frames with its
/// reconstruction; cuts each position's patch into a sample.
async fn feed_trainer(
    mut view: View,
    cfg: LoopConfig,
    shared: Arc<Shared>,
    to: mpsc::SyncSender<TrainerMsg>,
) -> Result<()> {
    let mut delivered = 0u64;
    let mut idle = Instant::now();
    loop {
        let d = match view.next(Duration::from_millis(300)).await? {
            Some(d) => d,
            None => {
                if shared.epie_done.load(Ordering::Relaxed)
                    && delivered >= shared.epie_scans.load(Ordering::Relaxed)
                {
                    break;
                }
                ensure!(
                    idle.elapsed() < STALL,
                    "view: no training sample for {} s",
                    STALL.as_secs()
                );
                continue;
            }
        };
        idle = Instant::now();
        delivered += 1;
        let k = cfg.positions;
        let parsed = (|| -> Result<_> {
            let recon = d.members[k].as_ref().context("no reconstruction member")?;
            let r = wire::parse_recon(&recon.item)?;
            let mut frames = Vec::with_capacity(k);
            let mut metas = Vec::with_capacity(k);
            for m in &d.members[..k] {
                let f = m.as_ref().context("a frame member missing")?;
                let (frame, meta, _) = read_frame(&f.item)?;
                frames.push(frame);
                metas.push(meta);
            }
            let n = r.probe.nrows();
            let samples = diaspora_ptycho::surrogate::samples_from(&frames, &metas, &r.object, n)?;
            Ok((r, metas, samples))
        })();
        let (
            wire::Recon {
                scan,
                object,
                probe,
            },
            metas,
            samples,
        ) = match parsed {
            Ok(x) => x,
            Err(e) => {
                // A malformed sample is refused, not fatal.
                shared.event(
                    "refused",
                    format!("trainer: view item {}: {e:#}", d.item.key),
                );
                view.ack(d.id());
                continue;
            }
        };
        let (mut train, mut held, mut held_metas) = (Vec::new(), Vec::new(), Vec::new());
        for (s, m) in samples.into_iter().zip(&metas) {
            if m.index % 10 == 5 {
                held.push(s);
                held_metas.push(m.clone());
            } else {
                train.push(s);
            }
        }
        // The view records its item under `view_key` = the scan.
        let sample_ref = d.item.key.clone();
        view.ack(d.id());
        let mut msg = TrainerMsg::Scan(Box::new(ScanSamples {
            scan,
            train,
            held,
            held_metas,
            object,
            probe,
            sample_ref,
        }));
        // The trainer's queue is bounded: wait for room without holding a
        // runtime thread.
        loop {
            match to.try_send(msg) {
                Ok(()) => break,
                Err(mpsc::TrySendError::Full(m)) => {
                    msg = m;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(mpsc::TrySendError::Disconnected(_)) => bail!("the trainer stopped"),
            }
        }
    }
    view.close().await?;
    Ok(())
}

/// A scan's held-out positions, for validation.
struct ValScan {
    scan: String,
    held: Vec<Sample>,
    metas: Vec<FrameMeta>,
    object: Array2<C32>,
    probe: Array2<C32>,
}

/// Phase SSIM against ePIE of the held-out positions' predictions,
/// stitched, over the region they cover well (where their summed probe
/// intensity is at least 30 % of its peak), averaged over the scans.
fn held_out_ssim(model: &Surrogate, scans: &VecDeque<ValScan>) -> Result<f64> {
    let mut sum = 0.0;
    let mut count = 0;
    for v in scans {
        if v.held.is_empty() {
            continue;
        }
        let frames: Vec<Array2<u16>> = v.held.iter().map(|s| s.frame.clone()).collect();
        let pred = model.predict(&frames, 64)?;
        let size = v.object.nrows();
        let (amp, phase) = stitch(&pred, &v.metas, &v.probe, size)?;
        let corners: Vec<(usize, usize)> = v
            .metas
            .iter()
            .map(|m| (m.y as usize, m.x as usize))
            .collect();
        let mask = illuminated(&v.probe, &corners, v.object.dim(), 0.3)?;
        let q = compare(&from_parts(&amp, &phase), &v.object, &mask)?;
        sum += q.phase_ssim;
        count += 1;
    }
    Ok(if count == 0 { 0.0 } else { sum / count as f64 })
}

#[allow(clippy::too_many_arguments)]
fn train_loop(
    cfg: LoopConfig,
    shared: Arc<Shared>,
    recorder: Arc<LineageRecorder>,
    store: &str,
    rx: mpsc::Receiver<TrainerMsg>,
    models: Producer,
    shipped: tokio::sync::mpsc::Sender<Shipped>,
    rt: tokio::runtime::Handle,
) -> Result<()> {
    let mut prov = Provenance::open(store)?;
    let n = 64;
    let tcfg = TrainerConfig {
        capacity: 4096,
        seed: cfg.seed,
        ..Default::default()
    };
    let fresh = Surrogate::new(
        SurrogateConfig {
            n,
            channels: cfg.channels,
            seed: cfg.seed,
            ..Default::default()
        },
        diaspora_ptycho::surrogate::default_device(),
    )?;
    let mut trainer = Trainer::new(fresh, tcfg.clone())?;
    // Our own copy of what the trainer holds, by scan (to drop a bad scan).
    let mut buffer: VecDeque<(String, Sample)> = VecDeque::new();
    let mut val: VecDeque<ValScan> = VecDeque::new();
    const VAL_SCANS: usize = 2;
    let mut probe: Option<Array2<C32>> = None;
    // Versions: number → (record id, checkpoint, scans).
    let mut versions: BTreeMap<u64, (i64, Vec<u8>, Vec<String>)> = BTreeMap::new();
    let mut base: Option<u64> = None;
    let mut since_ship: Vec<(String, String)> = Vec::new();
    let mut all_scans: Vec<String> = Vec::new();
    let mut best = f64::NEG_INFINITY;
    let mut steps_since_val = 0usize;
    let mut stopping = false;
    loop {
        // Take in what arrived.
        let msg = if trainer.is_empty() && !stopping {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            rx.try_recv().ok()
        };
        match msg {
            Some(TrainerMsg::Scan(m)) => {
                let ScanSamples {
                    scan,
                    train,
                    held: h,
                    held_metas,
                    object,
                    probe: p,
                    sample_ref,
                } = *m;
                if probe.is_none() {
                    trainer.set_loss_weight(Some(&probe_weight(&p, 0.02)))?;
                }
                probe = Some(p.clone());
                for s in train {
                    trainer.push(s.clone())?;
                    buffer.push_back((scan.clone(), s));
                    if buffer.len() > tcfg.capacity {
                        buffer.pop_front();
                    }
                }
                val.push_back(ValScan {
                    scan: scan.clone(),
                    held: h,
                    metas: held_metas,
                    object,
                    probe: p,
                });
                if val.len() > VAL_SCANS {
                    val.pop_front();
                }
                trainer.note_scan(&scan);
                all_scans.push(scan.clone());
                since_ship.push((scan, sample_ref));
                continue;
            }
            Some(TrainerMsg::Invalidated { scan }) => {
                // Roll back to the newest version provenance still holds valid.
                let mut to = None;
                for (&v, (rec, _, _)) in versions.iter().rev() {
                    if !prov.is_invalid(*rec)? {
                        to = Some(v);
                        break;
                    }
                }
                let model = match to {
                    Some(v) => Surrogate::from_checkpoint_bytes(
                        &versions[&v].1,
                        diaspora_ptycho::surrogate::default_device(),
                    )?,
                    None => Surrogate::new(
                        trainer.surrogate().config().clone(),
                        diaspora_ptycho::surrogate::default_device(),
                    )?,
                };
                trainer = Trainer::new(model, tcfg.clone())?;
                if let Some(p) = &probe {
                    trainer.set_loss_weight(Some(&probe_weight(p, 0.02)))?;
                }
                buffer.retain(|(s, _)| *s != scan);
                val.retain(|v| v.scan != scan);
                since_ship.retain(|(s, _)| *s != scan);
                all_scans.retain(|s| *s != scan);
                for (s, x) in &buffer {
                    trainer.push(x.clone())?;
                    trainer.note_scan(s);
                }
                base = to;
                best = to.map_or(f64::NEG_INFINITY, |v| {
                    shared.versions.lock().get(&v).map_or(0.0, |x| x.phase_ssim)
                });
                shared.event(
                    "rollback",
                    format!(
                        "trainer resumes from version {} without {scan}'s samples ({} kept)",
                        to.map_or("none (fresh)".into(), |v| v.to_string()),
                        buffer.len()
                    ),
                );
                continue;
            }
            Some(TrainerMsg::Stop) => {
                stopping = true;
            }
            None => {}
        }
        if trainer.is_empty() {
            if stopping {
                break;
            }
            continue;
        }
        if stopping && since_ship.is_empty() {
            break;
        }
        let loss = trainer.step(cfg.batch)?;
        shared.losses.lock().push(loss as f64);
        steps_since_val += 1;
        if steps_since_val < cfg.validate_every {
            continue;
        }
        steps_since_val = 0;
        let q = held_out_ssim(trainer.surrogate(), &val)?;
        shared.validations.lock().push(Validation {
            t_s: shared.now_s(),
            steps: trainer.surrogate().steps(),
            phase_ssim: q,
        });
        let switched = !versions.is_empty();
        // Ship: the switch at the threshold; then a version that is better,
        // or not worse by more than 0.03 and has seen two new scans (or is
        // the last, at the stop). A worse one stays at HPC.
        let ship = if !switched {
            q >= cfg.switch_ssim
        } else {
            !since_ship.is_empty()
                && (q > best || ((since_ship.len() >= 2 || stopping) && q >= best - 0.03))
        };
        if !ship {
            if stopping {
                break;
            }
            continue;
        }
        // Its provenance: trained on the view items of the scans taken in
        // since the last version, and a revision of the version it resumed.
        recorder.flush()?;
        let version = versions.keys().next_back().map_or(1, |v| v + 1);
        let mut rec = Record::new(RecordKind::Model, MODEL);
        rec.version = Some(version as i64);
        rec.tags
            .insert("phase_ssim_vs_epie".into(), TagValue::Float(q));
        rec.tags.insert(
            "samples_seen".into(),
            TagValue::Int(trainer.surrogate().samples_seen() as i64),
        );
        rec.tags
            .insert("scans".into(), TagValue::Str(all_scans.join(",")));
        if let Some(b) = base {
            rec.parents.push((versions[&b].0, EdgeKind::Revision));
        }
        for (_, key) in &since_ship {
            for id in prov.find_tag("view_key", &TagValue::infer(key), 4)? {
                rec.parents.push((id, EdgeKind::Trained));
            }
        }
        let rec_id = prov.add(rec)?;
        trainer.surrogate_mut().set_version(version);
        let ckpt = trainer.surrogate().checkpoint_bytes()?;
        let p = probe.as_ref().expect("set with the first scan");
        let item = wire::model_item(version, q, &ckpt, p);
        rt.block_on(async { models.send(item).await?.await })?;
        let scans_now = all_scans.clone();
        versions.insert(version, (rec_id, ckpt, scans_now.clone()));
        shared.versions.lock().insert(
            version,
            VersionInfo {
                t_s: shared.now_s(),
                phase_ssim: q,
                scans: scans_now.clone(),
            },
        );
        best = best.max(q);
        base = Some(version);
        let new: Vec<String> = since_ship.drain(..).map(|(s, _)| s).collect();
        shared.event(
            if switched { "model" } else { "switch" },
            format!(
                "model v{version} shipped: held-out phase SSIM {q:.3}, {} scans ({} new)",
                scans_now.len(),
                new.len()
            ),
        );
        let _ = rt.block_on(shipped.send(Shipped {
            version,
            scans: new,
        }));
        if stopping {
            break;
        }
    }
    rt.block_on(models.close())?;
    Ok(())
}

// ---------------------------------------------------------------- HPC: QA

/// Checks each scan a shipped model was trained on; a scan with hot
/// pixels is invalidated in provenance (cascading), and the trainer and the
/// edge are told. Returns the model versions the invalidation reached.
async fn qa_check(
    mut shipped: tokio::sync::mpsc::Receiver<Shipped>,
    shared: Arc<Shared>,
    recorder: Arc<LineageRecorder>,
    store: String,
    notices: Producer,
    trainer: mpsc::SyncSender<TrainerMsg>,
) -> Result<Vec<u64>> {
    let mut reached = Vec::new();
    while let Some(s) = shipped.recv().await {
        for scan in &s.scans {
            let hot = shared.epie.lock().get(scan).map_or(0, |e| e.hot_pixels);
            if hot == 0 {
                continue;
            }
            shared.event(
                "invalidation",
                format!(
                    "QA: {scan} has {hot} hot pixels (found after model v{} shipped); invalidating it",
                    s.version
                ),
            );
            let (rec, url, target) = (recorder.clone(), store.clone(), scan.clone());
            let versions = tokio::task::spawn_blocking(move || -> Result<Vec<u64>> {
                rec.flush()?;
                let mut prov = Provenance::open(&url)?;
                let rep = prov.invalidate(
                    &Target::parse(&format!("scan={target}"))?,
                    &format!("detector fault: {hot} hot pixels in {target}"),
                    true,
                )?;
                let mut vs = Vec::new();
                for (v, id, _) in prov.backend().model_versions(MODEL)? {
                    if prov.is_invalid(id)? {
                        vs.push(v as u64);
                    }
                }
                tracing::info!(invalidated = rep.invalidated, "invalidation done");
                Ok(vs)
            })
            .await
            .context("invalidation task")??;
            shared.event(
                "invalidation",
                format!(
                    "{scan} invalid, with everything derived from it: model versions {:?}",
                    versions
                ),
            );
            reached = versions;
            // The edge hears of it on the model topic (over the WAN).
            notices
                .send(wire::notice_item(&Notice::Invalidated(scan.clone())))
                .await?
                .await?;
            let _ = trainer.send(TrainerMsg::Invalidated { scan: scan.clone() });
        }
    }
    // The last word on the model topic: nothing more comes.
    notices.send(wire::notice_item(&Notice::End)).await?.await?;
    notices.close().await?;
    Ok(reached)
}
