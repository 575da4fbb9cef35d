//! The loop as separate processes: `diaspora demo --stage STAGE` runs one
//! stage of [`crate::online`] against a node that runs elsewhere — what
//! `twins/ptycho-loop.toml` starts, each stage a process of the unchanged
//! binary, the WAN between them an emulated link.
//!
//! | stage | node | what it runs |
//! |---|---|---|
//! | `detector` | edge | the scans on the `frames` QoS stream and the `uplink` QoS stream (reduced when a monitor predicts congestion on the WAN), ended by a marker |
//! | `hpc` | HPC | ePIE as tasks of the pool `epie` (a pool host of its own), the view of training samples, the trainer and the QA check |
//! | `edge` | edge | inference with the newest valid model, the rollback when a notice says a scan is bad, and the provenance checks of that rollback |
//!
//! The stages share nothing but the fabric (bridged topics over the WAN)
//! and the experiment's provenance store (one SQLite file; a site would
//! use PostgreSQL). Between them: the model topic carries versions and two
//! notices (`invalidated`, `end`); the uplink ends with a marker naming
//! how many scans went up. Each stage writes its timeline as JSON lines
//! (`--events`), prints its summary as JSON and fails (exit 1) when what it
//! must guarantee does not hold.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use diaspora_fabric::{Client, ClientConfig};
use diaspora_provenance::lineage::{LineageRecorder, RecorderConfig};
use diaspora_provenance::Provenance;
use serde_json::json;

use crate::online::{self, LoopConfig, Shared};

/// A stage of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The beamline's detector (edge node).
    Detector,
    /// ePIE, the view, the trainer and QA (HPC node).
    Hpc,
    /// Inference and rollback (edge node).
    Edge,
}

impl std::str::FromStr for Stage {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Stage> {
        Ok(match s {
            "detector" => Stage::Detector,
            "hpc" => Stage::Hpc,
            "edge" => Stage::Edge,
            other => bail!("unknown stage '{other}' (detector, hpc or edge)"),
        })
    }
}

/// Where a stage runs and what it writes.
#[derive(Debug, Clone)]
pub struct StageOptions {
    /// Which stage.
    pub stage: Stage,
    /// Its node's data plane.
    pub node: SocketAddr,
    /// Its node's CA certificate.
    pub ca: PathBuf,
    /// The experiment's provenance store (shared by the stages).
    pub provenance: String,
    /// Its working directory (HPC: where scans are written for the pool's
    /// workers to read).
    pub work_dir: PathBuf,
    /// Detector: the frames stream's acknowledgements, a JSON line each.
    pub acks: Option<PathBuf>,
    /// Edge: every frame received, a JSON line each.
    pub deliveries: Option<PathBuf>,
    /// Its timeline, a JSON line per event.
    pub events: Option<PathBuf>,
    /// Its client certificate, for a node that requires identities.
    pub identity: Option<diaspora_fabric::tls::ClientIdentity>,
    /// Its bearer token, for a node that requires identities.
    pub token: Option<String>,
}

/// Runs one stage to its end; returns its summary (JSON). An error, or a
/// summary whose `ok` is false, means the stage did not do its part.
pub async fn run_stage(mut cfg: LoopConfig, o: StageOptions) -> Result<serde_json::Value> {
    cfg.check()?;
    // A twin kills workers itself (a `kill_child` fault on the pool host).
    cfg.kill_worker = false;
    std::fs::create_dir_all(&o.work_dir)
        .with_context(|| format!("creating {}", o.work_dir.display()))?;
    let shared = Arc::new(Shared::new());
    let mut config = ClientConfig::new(o.node, o.ca.clone());
    config.identity = o.identity.clone();
    config.token = o.token.clone();
    let client = Client::connect(config)
        .await
        .with_context(|| format!("connecting to the node at {}", o.node))?;
    let recorder = Arc::new(LineageRecorder::start(
        Provenance::open(&o.provenance)
            .with_context(|| format!("opening the provenance store {}", o.provenance))?,
        RecorderConfig {
            tag_keys: vec!["scan".into()],
            ..Default::default()
        },
    ));
    let result = match o.stage {
        Stage::Detector => detector(&client, &cfg, &shared, &recorder, &o).await,
        Stage::Hpc => hpc(&client, &cfg, &shared, &recorder, &o).await,
        Stage::Edge => edge(&client, &cfg, &shared, &recorder, &o).await,
    };
    client.close();
    let closed = {
        let r = recorder.clone();
        tokio::task::spawn_blocking(move || r.close())
            .await
            .context("closing the lineage recorder")?
    };
    // The timeline is written whatever happened.
    if let Some(p) = &o.events {
        let mut text = String::new();
        for e in shared.events.lock().iter() {
            text.push_str(&serde_json::to_string(e)?);
            text.push('\n');
        }
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    let mut summary = result?;
    let (stats, mut prov) = closed?;
    ensure!(
        stats.lost == 0,
        "{} lineage records could not be stored",
        stats.lost
    );
    if o.stage == Stage::Edge {
        // From provenance alone, once every record of this stage is in (HPC
        // said `end` after its own).
        let checks = online::check_rollback(&mut prov, &shared)?;
        summary["ok"] =
            json!(summary["ok"].as_bool().unwrap_or(true) && checks.values().all(|c| *c));
        summary["checks"] = json!(checks);
    }
    summary["stage"] = json!(format!("{:?}", o.stage).to_lowercase());
    summary["elapsed_s"] = json!(shared.now_s());
    Ok(summary)
}

async fn detector(
    client: &Client,
    cfg: &LoopConfig,
    shared: &Arc<Shared>,
    recorder: &Arc<LineageRecorder>,
    o: &StageOptions,
) -> Result<serde_json::Value> {
    shared.event("phase", "warm-up: every frame goes to HPC".into());
    let acked = online::detector(client, cfg, shared, recorder, o.acks.clone()).await?;
    let frames = (cfg.scans * cfg.positions) as u64;
    let (before, after) = (
        shared.frames_before.load(Ordering::Relaxed),
        shared.frames_after.load(Ordering::Relaxed),
    );
    Ok(json!({
        "ok": acked == frames,
        "frames": frames,
        "frames_acked": acked,
        "frames_before_switch": before,
        "frames_after_switch": after,
        "wan_bytes_per_frame_before_switch":
            shared.wan_before.load(Ordering::Relaxed) as f64 / before.max(1) as f64,
        "wan_bytes_per_frame_after_switch":
            shared.wan_after.load(Ordering::Relaxed) as f64 / after.max(1) as f64,
        "uplink_frames_reduced": shared.wan_reduced.load(Ordering::Relaxed),
        "predictions": shared.events.lock().iter().filter(|e| e.kind == "prediction").count(),
        "bad_scan": shared.bad_scan.lock().clone(),
    }))
}

async fn hpc(
    client: &Client,
    cfg: &LoopConfig,
    shared: &Arc<Shared>,
    recorder: &Arc<LineageRecorder>,
    o: &StageOptions,
) -> Result<serde_json::Value> {
    // The pool may start beside this stage: wait for its topics.
    let topics = diaspora_pool::fabric::PoolTopics::new(online::POOL);
    wait_for_topics(client, &[&topics.results, &topics.events, &topics.tasks]).await?;
    let services = online::Hpc::start(
        client,
        cfg,
        shared,
        recorder,
        &o.provenance,
        o.work_dir.join("scans"),
    )
    .await?;
    let invalidated = services.finish(shared, None).await?;
    let switched = shared
        .events
        .lock()
        .iter()
        .find(|e| e.kind == "switch")
        .map(|e| e.t_us);
    Ok(json!({
        "ok": switched.is_some(),
        "epie_scans": shared.epie_scans.load(Ordering::Relaxed),
        "versions": shared.versions.lock().len(),
        "switch_t_us": switched,
        "held_out_phase_ssim": shared.validations.lock().last().map(|v| v.phase_ssim),
        "trainer_steps": shared.losses.lock().len(),
        "invalidated_versions": invalidated,
    }))
}

async fn edge(
    client: &Client,
    cfg: &LoopConfig,
    shared: &Arc<Shared>,
    recorder: &Arc<LineageRecorder>,
    o: &StageOptions,
) -> Result<serde_json::Value> {
    let report = online::edge_service(
        client.clone(),
        cfg.clone(),
        shared.clone(),
        recorder.clone(),
        o.provenance.clone(),
        o.deliveries.clone(),
    )
    .await?;
    let frames = (cfg.scans * cfg.positions) as u64;
    let rollback = *shared.rollback.lock();
    let lat = shared.latency.lock().clone();
    let bad = shared.bad_scan.lock().is_some();
    Ok(json!({
        // Every frame, a switch, and (when a scan was found bad) a rollback.
        "ok": report.received >= frames
            && shared.switched.load(Ordering::Relaxed)
            && (!bad || rollback.is_some()),
        "frames_received": report.received,
        "lost": frames.saturating_sub(report.received),
        "edge_scans": shared.edge.lock().len(),
        "edge_frames_per_s": shared.edge_frames.load(Ordering::Relaxed) as f64
            / (shared.edge_busy_us.load(Ordering::Relaxed) as f64 / 1e6).max(1e-9),
        "rollback_to_version": rollback.map(|r| r.0),
        "rollback_s": rollback.map(|r| r.1),
        "bad_scan": shared.bad_scan.lock().clone(),
        "wan_model_bytes": report.model_bytes,
        "latency_ms_p50": lat.value_at_quantile(0.5) as f64 / 1e3,
        "latency_ms_p99": lat.value_at_quantile(0.99) as f64 / 1e3,
    }))
}

/// Waits (60 s at most) until every topic of `topics` exists on the node.
async fn wait_for_topics(client: &Client, topics: &[&str]) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for t in topics {
        loop {
            let probe = diaspora_fabric::Consumer::assign(
                client,
                diaspora_fabric::ConsumerConfig::new(*t).start(diaspora_fabric::StartFrom::Latest),
                &[],
            )
            .await;
            match probe {
                Ok(c) => {
                    c.close().await;
                    break;
                }
                Err(e) if std::time::Instant::now() > deadline => {
                    bail!("topic {t} did not appear within 60 s (is the pool running?): {e}")
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            }
        }
    }
    Ok(())
}
