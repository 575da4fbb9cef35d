//! The ptychography online-training loop, embedded: what `diaspora demo`
//! runs.
//!
//! Two in-process fabric nodes stand for the beamline's edge and the HPC
//! centre, joined by two bridges (the WAN): frames go up, models come down.
//!
//! ```text
//!  edge node                                  │  HPC node
//!  detector ──QoS──▶ frames ──▶ edge inference│
//!     │                         ▲  (newest    │
//!     └─(all, then every k-th)─▶ uplink ══WAN══▶ hpc.frames ──▶ ePIE ──▶ recons
//!                               │             │      │                    │
//!                     edge.models ◀════WAN════ models ◀── trainer ◀── view (frame ⋈ patch)
//! ```
//!
//! 1. **Detector**: the forward model ([`diaspora_ptycho::sim`]) produces
//!    successive scans, a new object of one kind per scan, at a set frame
//!    rate, on a QoS stream. Until the switch every frame also goes up the
//!    WAN; after it only every `fine_tune_every`-th scan does.
//! 2. **Warm-up**: ePIE reconstructs each scan that reaches HPC and streams
//!    the reconstruction with lineage to its frames; a view joins a scan's
//!    frames with its reconstruction (references, no copies); the trainer
//!    cuts each position's patch out of the reconstruction and trains the
//!    surrogate online, holding positions out for validation.
//! 3. **Switch**: when the held-out phase SSIM against ePIE reaches
//!    `switch_ssim`, the checkpoint is published on the model topic (a
//!    provenance model record names the samples it was trained on) and
//!    bridged to the edge.
//! 4. **Edge inference**: the edge loads the newest valid model, infers
//!    every frame in batches, stitches each scan and publishes it with
//!    lineage to its frames and the model version.
//! 5. **Fine-tune**: training goes on with the subset; newer versions ship
//!    when they are not worse.
//! 6. **Invalidation and rollback**: one scan carries an injected detector
//!    fault (a block of hot pixels). A QA check finds it when the first
//!    model trained on it ships — late, as such finds are — and
//!    invalidates the scan in provenance, which cascades to its frames,
//!    reconstruction, training samples, the model versions trained on it
//!    and the edge images they made. The edge asks provenance for the
//!    newest version still valid and rolls back to it; the trainer resumes
//!    from that version without the scan's samples.
//!
//! 7. **Acting on predictions**: the detector follows the predictions
//!    topic on the edge node; a monitor's `prediction` for the WAN link
//!    (`wan_link`) engages the uplink stream's reduction (zstd, lossless)
//!    for a while ([`QosProducer::advise`]). The ePIE pool scales up on its
//!    own backlog. Both are on the timeline.
//!
//! The stages talk only through the fabric and the provenance store: the
//! detector learns of the switch from the edge's model topic; the model
//! topic also carries the QA check's `invalidated` notice and HPC's `end`;
//! the uplink ends with a marker naming how many scans went up. So each
//! stage also runs as a process of its own ([`crate::stage`],
//! `twins/ptycho-loop.toml`).
//!
//! What the embedded demo does not do (said in the summary too): its WAN
//! is a loopback bridge, so there is no outage, loss or congestion here and
//! no monitor to predict it — `twins/ptycho-loop.toml` runs the same stages
//! over an emulated WAN with those faults and a live monitor.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use diaspora_fabric::bridge::{Bridge, BridgeConfig};
use diaspora_fabric::item::{meta, now_us, payload_item, AckedItem};
use diaspora_fabric::topic::ensure_topic;
use diaspora_fabric::{
    Client, ClientConfig, Consumer, ConsumerConfig, FabricError, Node, NodeConfig, Producer,
    ProducerConfig, StartFrom, TopicSettings,
};
use diaspora_pool::fabric::{ensure_topics, submit, PoolOptions, PoolTopics};
use diaspora_pool::messages::{Event as PoolMsgEvent, Task, TaskKind, TaskResult};
use diaspora_pool::spec::PoolSpec;
use diaspora_proto::v1::{ItemRef, Lineage};
use diaspora_provenance::lineage::{LineageRecorder, RecorderConfig};
use diaspora_provenance::{EdgeKind, Kind as RecordKind, Provenance, Record, TagValue, Target};
use diaspora_ptycho::metrics::{compare, from_parts, illuminated};
use diaspora_ptycho::sim::{self, FrameMeta, ObjectKind, SimConfig, SATURATION};
use diaspora_ptycho::surrogate::{
    probe_weight, stitch, Sample, Surrogate, SurrogateConfig, Trainer, TrainerConfig,
};
use diaspora_ptycho::{epie, workflow, C32};
use diaspora_stream::control::{control_topic, replay_topic};
use diaspora_stream::{Policy, QosConsumer, QosProducer, Sent};
use diaspora_view::runner::{View, ViewOptions};
use diaspora_view::ViewSpec;
use ndarray::Array2;
use parking_lot::Mutex;
use serde::Serialize;

use crate::report;

mod checks;
mod detector;
mod edge;
mod hpc;
pub(crate) mod wire;

pub(crate) use checks::check_rollback;
pub(crate) use detector::detector;
use edge::edge_quality;
pub(crate) use edge::edge_service;
use hpc::pool_spec;
pub(crate) use hpc::Hpc;
pub use hpc::POOL;
use wire::read_frame;

/// The model's name in provenance.
pub const MODEL: &str = "ptycho-surrogate";
/// Edge topics.
const FRAMES: &str = "frames";
const UPLINK: &str = "uplink";
const EDGE_MODELS: &str = "edge.models";
const EDGE_RECONS: &str = "edge.recons";
/// HPC topics.
const HPC_FRAMES: &str = "hpc.frames";
const RECONS: &str = "recons";
const SAMPLES: &str = "view.training-samples";
const MODELS: &str = "models";
/// Where monitors publish predictions (on the edge node).
pub const PREDICTIONS: &str = "diaspora.predictions";
/// How long an advice to reduce the uplink holds after the last
/// prediction. Long, because the reduction itself lowers the utilisation the
/// monitor watches (so it stops predicting) and a WAN's congestion lasts
/// minutes; monitors publish no "cleared" event yet to release it sooner.
const REDUCE_HOLD: Duration = Duration::from_secs(60);
/// How long any stage waits for its input before it says so and stops.
const STALL: Duration = Duration::from_secs(120);

/// What the loop runs ([`Default`]: the defaults of `diaspora demo`).
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Scans the detector takes.
    pub scans: usize,
    /// Positions (frames) per scan.
    pub positions: usize,
    /// What the objects are made of.
    pub kind: ObjectKind,
    /// Detector frame rate, frames/s.
    pub rate: f64,
    /// Photons in a frame of a flat object (Poisson noise on).
    pub dose: f64,
    /// ePIE iterations per scan.
    pub epie_iterations: usize,
    /// ePIE pool workers at most (at least one runs).
    pub epie_workers: u32,
    /// The pool worker's command (`diaspora pool worker`, this binary).
    pub worker_command: Vec<String>,
    /// Phase SSIM against ePIE, on held-out positions, at which the edge
    /// switches to the surrogate.
    pub switch_ssim: f64,
    /// After the switch, one scan in this many goes to HPC.
    pub fine_tune_every: usize,
    /// Mini-batch size.
    pub batch: usize,
    /// Optimiser steps between two validations.
    pub validate_every: usize,
    /// The network's base width.
    pub channels: usize,
    /// Inject a detector fault into one fine-tuning scan (and roll back).
    pub bad_scan: bool,
    /// SIGKILL an ePIE worker while it reconstructs a scan during warm-up
    /// (the pool replaces it and the task runs again).
    pub kill_worker: bool,
    /// Seed of the scans and the network.
    pub seed: u64,
    /// Write the HTML report here.
    pub report: Option<PathBuf>,
    /// Keep the nodes' data and the provenance store here.
    pub data_dir: Option<PathBuf>,
    /// Print the summary as JSON.
    pub json: bool,
    /// The WAN link's name in monitors' predictions (label `link`): a
    /// prediction for it engages the uplink's reduction.
    pub wan_link: String,
    /// Serve the live dashboard of the edge node here while the loop runs,
    /// with the loop's phase, timeline and latest reconstruction and the
    /// lineage explorer over the experiment's provenance store.
    pub dashboard: Option<std::net::SocketAddr>,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            scans: 40,
            positions: 100,
            kind: ObjectKind::Particles,
            rate: 25.0,
            dose: 1e5,
            epie_iterations: 30,
            epie_workers: 2,
            worker_command: vec!["diaspora".into(), "pool".into(), "worker".into()],
            switch_ssim: 0.6,
            fine_tune_every: 4,
            batch: 32,
            validate_every: 20,
            channels: 4,
            bad_scan: true,
            kill_worker: true,
            seed: 1,
            report: Some(PathBuf::from("demo-report")),
            data_dir: None,
            json: false,
            wan_link: "wan".into(),
            dashboard: None,
        }
    }
}

impl LoopConfig {
    pub(crate) fn check(&self) -> Result<()> {
        ensure!(self.scans >= 2, "--scans must be ≥ 2");
        ensure!(
            (20..=2000).contains(&self.positions),
            "--positions must be 20..=2000"
        );
        ensure!(
            self.rate > 0.0 && self.rate.is_finite(),
            "--rate must be > 0 frames/s"
        );
        ensure!(
            self.switch_ssim > 0.0 && self.switch_ssim < 1.0,
            "--switch-ssim must be in (0, 1)"
        );
        ensure!(self.fine_tune_every >= 1, "--fine-tune-every must be ≥ 1");
        ensure!(
            (1..=1000).contains(&self.epie_iterations),
            "--epie-iterations must be 1..=1000"
        );
        ensure!((1..=256).contains(&self.batch), "--batch must be 1..=256");
        ensure!(self.validate_every >= 1, "--validate-every must be ≥ 1");
        Ok(())
    }
}

/// A moment of the loop worth showing.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Seconds since the start.
    pub t_s: f64,
    /// When, µs since the Unix epoch (to line up the stages of a twin).
    pub t_us: i64,
    /// What kind: `phase`, `model`, `fault`, `invalidation`, `rollback`.
    pub kind: String,
    /// What happened.
    pub text: String,
}

/// One scan's ePIE reconstruction (kept for the report and the edge's
/// quality figure).
#[derive(Clone)]
pub struct EpieOut {
    /// The training target: ramp removed, amplitude scaled.
    pub object: Array2<C32>,
    /// The illuminated region.
    pub mask: Array2<bool>,
    /// Hot pixels the QA check found in the scan's frames.
    pub hot_pixels: usize,
}

/// One scan's image made at the edge.
#[derive(Clone)]
pub struct EdgeOut {
    /// The stitched object.
    pub object: Array2<C32>,
    /// The model version that made it.
    pub version: u64,
    /// Seconds since the start, when it was published.
    pub t_s: f64,
}

/// A validation of the surrogate.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Validation {
    /// Seconds since the start.
    pub t_s: f64,
    /// Optimiser steps so far.
    pub steps: u64,
    /// Held-out phase SSIM against ePIE.
    pub phase_ssim: f64,
}

/// A model version shipped.
#[derive(Debug, Clone, Serialize)]
pub struct VersionInfo {
    /// Seconds since the start.
    pub t_s: f64,
    /// Its held-out phase SSIM against ePIE.
    pub phase_ssim: f64,
    /// The scans it was trained on.
    pub scans: Vec<String>,
}

/// What the stages share: counters and what the report shows.
pub struct Shared {
    t0: Instant,
    /// Scans taken.
    pub scans_taken: AtomicU64,
    /// Frames the detector produced before/after the switch.
    pub frames_before: AtomicU64,
    /// After.
    pub frames_after: AtomicU64,
    /// Uplink bytes (what the WAN bridge carries up) before the switch.
    pub wan_before: AtomicU64,
    /// After.
    pub wan_after: AtomicU64,
    /// Uplink frames sent reduced (a prediction engaged the reduction).
    pub wan_reduced: AtomicU64,
    /// Scans reconstructed by ePIE.
    pub epie_scans: AtomicU64,
    /// Frames inferred at the edge.
    pub edge_frames: AtomicU64,
    /// Microseconds the edge spent inferring.
    pub edge_busy_us: AtomicU64,
    /// Frames the edge received.
    pub edge_received: AtomicU64,
    /// Set at the switch.
    pub switched: AtomicBool,
    /// The model version the edge runs.
    pub edge_version: AtomicU64,
    /// The true objects, by scan.
    pub truth: Mutex<BTreeMap<String, Array2<C32>>>,
    /// ePIE's objects, by scan.
    pub epie: Mutex<BTreeMap<String, EpieOut>>,
    /// The edge's objects, by scan.
    pub edge: Mutex<BTreeMap<String, EdgeOut>>,
    /// Every validation.
    pub validations: Mutex<Vec<Validation>>,
    /// Mini-batch losses.
    pub losses: Mutex<Vec<f64>>,
    /// The timeline.
    pub events: Mutex<Vec<Event>>,
    /// Detector → edge latency, µs.
    pub latency: Mutex<hdrhistogram::Histogram<u64>>,
    /// Each frame's detector → edge latency, ms, in arrival order.
    pub latencies_ms: Mutex<Vec<f64>>,
    /// (t_s, cumulative uplink bytes).
    pub wan_series: Mutex<Vec<(f64, u64)>>,
    /// Versions shipped, by number.
    pub versions: Mutex<BTreeMap<u64, VersionInfo>>,
    /// The scan the fault was injected into.
    pub bad_scan: Mutex<Option<String>>,
    /// Rollback: (to version, seconds from invalidation to the edge running it).
    pub rollback: Mutex<Option<(u64, f64)>>,
    /// ePIE workers killed by the fault injection.
    pub workers_killed: AtomicU64,
    /// Why the ePIE pool stopped, if it failed.
    pub pool_error: Mutex<Option<String>>,
    /// ePIE has reconstructed every scan that reached HPC.
    pub epie_done: AtomicBool,
    /// The stages stop when set.
    pub stop: AtomicBool,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            t0: Instant::now(),
            scans_taken: AtomicU64::new(0),
            frames_before: AtomicU64::new(0),
            frames_after: AtomicU64::new(0),
            wan_before: AtomicU64::new(0),
            wan_after: AtomicU64::new(0),
            wan_reduced: AtomicU64::new(0),
            epie_scans: AtomicU64::new(0),
            edge_frames: AtomicU64::new(0),
            edge_busy_us: AtomicU64::new(0),
            edge_received: AtomicU64::new(0),
            switched: AtomicBool::new(false),
            edge_version: AtomicU64::new(0),
            truth: Mutex::new(BTreeMap::new()),
            epie: Mutex::new(BTreeMap::new()),
            edge: Mutex::new(BTreeMap::new()),
            validations: Mutex::new(Vec::new()),
            losses: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            latency: Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds"),
            ),
            latencies_ms: Mutex::new(Vec::new()),
            wan_series: Mutex::new(Vec::new()),
            versions: Mutex::new(BTreeMap::new()),
            bad_scan: Mutex::new(None),
            rollback: Mutex::new(None),
            workers_killed: AtomicU64::new(0),
            pool_error: Mutex::new(None),
            epie_done: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        }
    }

    /// Seconds since the start.
    pub fn now_s(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    pub(crate) fn event(&self, kind: &str, text: String) {
        let t_s = self.now_s();
        tracing::info!(kind, t_s, "{text}");
        self.events.lock().push(Event {
            t_s,
            t_us: now_us(),
            kind: kind.into(),
            text,
        });
    }
}

/// The loop's phase as the progress line and the dashboard name it.
fn phase_of(shared: &Shared) -> &'static str {
    if shared.rollback.lock().is_some() {
        "fine-tune (rolled back)"
    } else if shared.switched.load(Ordering::Relaxed) {
        "edge inference + fine-tune"
    } else {
        "warm-up"
    }
}

/// The newest reconstruction: the edge's if it has made one, else ePIE's;
/// its phase, downsampled for the page.
fn latest_image(shared: &Shared) -> Option<diaspora_dashboard::core::LoopImage> {
    let (label, object) = {
        let edge = shared.edge.lock();
        match edge.iter().max_by(|a, b| a.1.t_s.total_cmp(&b.1.t_s)) {
            Some((scan, e)) => (
                format!("{scan}, edge model v{}", e.version),
                e.object.clone(),
            ),
            None => {
                let epie = shared.epie.lock();
                let (scan, e) = epie.iter().next_back()?;
                (format!("{scan}, ePIE"), e.object.clone())
            }
        }
    };
    let phase: Vec<f32> = object.iter().map(|c| c.arg()).collect();
    let (w, small) = diaspora_dashboard::core::downsample_gray(object.ncols(), &phase, 128);
    diaspora_dashboard::core::LoopImage::gray(format!("phase of {label}"), w, &small)
}

/// Serves the edge node's dashboard, with the loop's own status.
async fn start_dashboard(
    listen: std::net::SocketAddr,
    edge_node: &Node,
    store_url: &str,
    shared: &Arc<Shared>,
    cfg: &LoopConfig,
) -> Result<diaspora_dashboard::Dashboard> {
    let source = diaspora_dashboard::NodeSource {
        admin: edge_node
            .admin_addr()
            .context("the edge node has no admin plane")?,
        ca: edge_node.ca_file(),
        identity: None,
        token: None,
        data: Some(ClientConfig::new(
            edge_node.data_addr(),
            edge_node.ca_file(),
        )),
        metrics_topic: "diaspora.metrics".into(),
        groups: Vec::new(),
        interval: Duration::from_secs(1),
    };
    let mut dcfg = diaspora_dashboard::DashboardConfig::new(listen, source);
    dcfg.prov_store = Some(store_url.to_string());
    let (probe_shared, scans) = (shared.clone(), cfg.scans);
    dcfg.loop_probe = Some(Arc::new(move || {
        let s = &probe_shared;
        let v = s.validations.lock().last().copied();
        diaspora_dashboard::core::LoopStatus {
            phase: phase_of(s).into(),
            summary: format!(
                "scans {}/{scans} · ePIE {} scans · trainer {} steps, held-out SSIM {} · edge model v{}, {} frames inferred",
                s.scans_taken.load(Ordering::Relaxed),
                s.epie_scans.load(Ordering::Relaxed),
                v.map_or(0, |v| v.steps),
                v.map_or("–".into(), |v| format!("{:.2}", v.phase_ssim)),
                s.edge_version.load(Ordering::Relaxed),
                s.edge_frames.load(Ordering::Relaxed),
            ),
            events: s
                .events
                .lock()
                .iter()
                .rev()
                .take(diaspora_dashboard::core::LOOP_EVENTS_MAX)
                .map(|e| diaspora_dashboard::core::LoopEvent {
                    t_us: e.t_us,
                    kind: e.kind.clone(),
                    text: e.text.clone(),
                })
                .collect(),
            image: latest_image(s),
        }
    }));
    let d = diaspora_dashboard::Dashboard::start(dcfg)
        .await
        .context("starting the dashboard")?;
    eprintln!("dashboard: http://{}/", d.local_addr());
    Ok(d)
}

/// The loop's summary (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Seconds from the start to the first model at the edge.
    pub switched_at_s: Option<f64>,
    /// Frames the edge infers per second of inference (its capacity on
    /// this machine, batched, while everything else runs too).
    pub edge_frames_per_s: f64,
    /// The detector's rate.
    pub detector_frames_per_s: f64,
    /// Mean phase SSIM of edge images against ePIE, over the scans both
    /// made after the switch.
    pub edge_phase_ssim_vs_epie: Option<f64>,
    /// Scans in that mean.
    pub edge_scans_compared: usize,
    /// Uplink bytes per detector frame before the switch.
    pub wan_bytes_per_frame_before_switch: f64,
    /// After.
    pub wan_bytes_per_frame_after_switch: f64,
    /// Model bytes the WAN carried to the edge.
    pub wan_model_bytes: u64,
    /// The version the edge rolled back to.
    pub rollback_to_version: Option<u64>,
    /// Seconds from the invalidation to the edge running that version.
    pub rollback_s: Option<f64>,
    /// The scan with the injected fault.
    pub bad_scan: Option<String>,
    /// Model versions the invalidation reached.
    pub invalidated_versions: Vec<u64>,
    /// Frames produced.
    pub frames: u64,
    /// Frames the detector's QoS stream had acknowledged.
    pub frames_acked: u64,
    /// Frames the edge received.
    pub edge_frames_received: u64,
    /// Frames the detector produced that never reached the edge.
    pub lost: u64,
    /// Scans ePIE reconstructed.
    pub epie_scans: u64,
    /// ePIE workers SIGKILLed (each replaced by the pool, its scan rerun).
    pub epie_workers_killed: u64,
    /// Scans the edge reconstructed.
    pub edge_scans: usize,
    /// Model versions shipped.
    pub versions: u64,
    /// Optimiser steps the trainer took.
    pub trainer_steps: u64,
    /// The last held-out phase SSIM against ePIE.
    pub held_out_phase_ssim: Option<f64>,
    /// Detector → edge latency p99, ms (the QoS policy's bound is 1 s).
    pub latency_ms_p99: f64,
    /// Its p50.
    pub latency_ms_p50: f64,
    /// Provenance checks of the rollback (each must be true).
    pub checks: BTreeMap<String, bool>,
    /// Seconds in all.
    pub elapsed_s: f64,
    /// The report's index page.
    pub report: Option<PathBuf>,
    /// The provenance store.
    pub provenance: PathBuf,
    /// What the loop does not do yet.
    pub not_yet: Vec<&'static str>,
}

/// Hot pixels: off the bright centre, saturated in every frame of a scan.
fn hot_pixels(frames: &[Array2<u16>]) -> usize {
    let Some(first) = frames.first() else {
        return 0;
    };
    let n = first.nrows();
    let c = n as f64 / 2.0;
    let mut count = 0;
    for ((y, x), _) in first.indexed_iter() {
        let r = ((y as f64 - c).powi(2) + (x as f64 - c).powi(2)).sqrt();
        if r > n as f64 / 4.0 && frames.iter().all(|f| f[(y, x)] >= SATURATION) {
            count += 1;
        }
    }
    count
}

/// The injected fault: a block of hot pixels in the detector's corner.
fn inject_fault(frames: &mut [Array2<u16>]) {
    for f in frames {
        for y in 3..9 {
            for x in 3..9 {
                f[(y, x)] = SATURATION;
            }
        }
    }
}

/// Runs the loop; prints progress, the summary and writes the report.
pub async fn run(cfg: LoopConfig) -> Result<Summary> {
    cfg.check()?;
    let tmp = tempfile::tempdir()?;
    let data_dir = cfg
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&data_dir)?;
    let shared = Arc::new(Shared::new());

    // Two nodes: the beamline's edge and the HPC centre.
    let mut ecfg = NodeConfig::new(data_dir.join("edge"));
    // The edge's admin plane only for its dashboard, on a free loopback port.
    ecfg.admin_listen = cfg
        .dashboard
        .map(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let edge_node = Node::start(ecfg).await.context("starting the edge node")?;
    let mut hcfg = NodeConfig::new(data_dir.join("hpc"));
    hcfg.admin_listen = None;
    let hpc_node = Node::start(hcfg).await.context("starting the HPC node")?;
    let edge_cc = ClientConfig::new(edge_node.data_addr(), edge_node.ca_file());
    let hpc_cc = ClientConfig::new(hpc_node.data_addr(), hpc_node.ca_file());
    for (t, p) in [
        (FRAMES.to_string(), 1),
        (control_topic(FRAMES), 1),
        (replay_topic(FRAMES), 1),
        (UPLINK.to_string(), 1),
        (control_topic(UPLINK), 1),
        (replay_topic(UPLINK), 1),
        (PREDICTIONS.to_string(), 1),
        (EDGE_MODELS.to_string(), 1),
        (EDGE_RECONS.to_string(), 1),
    ] {
        ensure_local(edge_node.broker(), &t, p).await?;
    }
    for t in [HPC_FRAMES, RECONS, SAMPLES, MODELS] {
        ensure_local(hpc_node.broker(), t, 1).await?;
    }
    let edge = Client::connect(edge_cc.clone()).await?;
    let hpc = Client::connect(hpc_cc.clone()).await?;

    // The WAN: frames up, models down.
    let up = Bridge::start(BridgeConfig::new(
        "wan-up",
        edge_cc.clone(),
        UPLINK,
        hpc_cc.clone(),
        HPC_FRAMES,
    ))
    .await
    .context("starting the uplink bridge")?;
    let down = Bridge::start(BridgeConfig::new(
        "wan-down",
        hpc_cc.clone(),
        MODELS,
        edge_cc.clone(),
        EDGE_MODELS,
    ))
    .await
    .context("starting the model bridge")?;

    // One provenance store for the experiment (SQLite, durable).
    let store = data_dir.join("prov.sqlite");
    let store_url = store.display().to_string();
    let recorder = Arc::new(LineageRecorder::start(
        Provenance::open(&store_url)
            .with_context(|| format!("opening the provenance store {}", store.display()))?,
        RecorderConfig {
            tag_keys: vec!["scan".into()],
            ..Default::default()
        },
    ));

    let dashboard = match cfg.dashboard {
        Some(listen) => Some(start_dashboard(listen, &edge_node, &store_url, &shared, &cfg).await?),
        None => None,
    };

    let bar = progress(cfg.json);
    shared.event("phase", "warm-up: every frame goes to HPC".into());

    // HPC: the ePIE pool (worker processes) and the service feeding it.
    let spec = pool_spec(&cfg)?;
    ensure_topics(hpc_node.broker().into(), &spec)
        .await
        .map_err(|e| anyhow::anyhow!("the pool's topics: {e}"))?;
    let pool_stop = diaspora_fabric::Stop::new();
    std::fs::create_dir_all(data_dir.join("pool-logs"))?;
    let run_pool = diaspora_pool::fabric::run_pool(
        hpc.clone(),
        spec.clone(),
        diaspora_pool::fabric::providers_for(&spec),
        PoolOptions {
            tick: Duration::from_millis(100),
            log_dir: Some(data_dir.join("pool-logs")),
            // Which worker ran which scan's ePIE, on which frames.
            provenance: Some(store_url.clone()),
            worker_env: diaspora_pool::fabric::worker_env(
                hpc_node.data_addr(),
                &hpc_node.ca_file(),
                &spec.heartbeat,
            ),
            ..Default::default()
        },
        Arc::new(std::sync::Mutex::new(
            diaspora_pool::fabric::ExternalDemand::default(),
        )),
        pool_stop.clone(),
    );
    let pool = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let r = run_pool.await;
            if let Err(e) = &r {
                // The ePIE service stops on it at once.
                *shared.pool_error.lock() = Some(e.to_string());
            }
            r
        })
    };
    let hpc_services = Hpc::start(
        &hpc,
        &cfg,
        &shared,
        &recorder,
        &store_url,
        data_dir.join("scans"),
    )
    .await?;
    // Edge: inference.
    let edge_task = tokio::spawn(edge_service(
        edge.clone(),
        cfg.clone(),
        shared.clone(),
        recorder.clone(),
        store_url.clone(),
        None,
    ));
    // Progress.
    let ticker = {
        let (shared, bar, cfg) = (shared.clone(), bar.clone(), cfg.clone());
        tokio::spawn(async move {
            while !shared.stop.load(Ordering::Relaxed) {
                let v = shared.validations.lock().last().copied();
                let phase = phase_of(&shared);
                bar.set_message(format!(
                    "{phase} │ scans {}/{} │ ePIE {} │ trainer {} steps, SSIM {} │ edge v{} {} frames",
                    shared.scans_taken.load(Ordering::Relaxed),
                    cfg.scans,
                    shared.epie_scans.load(Ordering::Relaxed),
                    v.map_or(0, |v| v.steps),
                    v.map_or("–".into(), |v| format!("{:.2}", v.phase_ssim)),
                    shared.edge_version.load(Ordering::Relaxed),
                    shared.edge_frames.load(Ordering::Relaxed),
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // The beamline.
    let detected = detector(&edge, &cfg, &shared, &recorder, None).await;
    let detected = match detected {
        Ok(d) => d,
        Err(e) => {
            shared.stop.store(true, Ordering::Relaxed);
            return Err(e.context("the detector"));
        }
    };
    let frames = (cfg.scans * cfg.positions) as u64;
    // The edge sees every frame; HPC reconstructs every uplinked scan.
    // Then in order: ePIE finishes the uplinked scans, the view hands them
    // all to the trainer, the trainer ships its last version, the QA check
    // sees it, and the edge (which has every frame by then) takes in the
    // last models and notices.
    let hpc_result = hpc_services.finish(&shared, Some(pool_stop)).await;
    let pool_result = pool.await.context("pool task")?;
    if hpc_result.is_err() {
        // No end comes on the model topic: the edge would wait for it.
        edge_task.abort();
    }
    let edge_result = match edge_task.await {
        Ok(r) => r,
        Err(e) if e.is_cancelled() => Err(anyhow::anyhow!("stopped: HPC failed")),
        Err(e) => Err(anyhow::anyhow!("edge task: {e}")),
    };
    ticker.abort();
    bar.finish_and_clear();
    pool_result.map_err(|e| anyhow::anyhow!("the ePIE pool: {e}"))?;
    let invalidated_versions = hpc_result.context("HPC")?;
    let edge_report = edge_result.context("the edge")?;
    up.stop().await;
    down.stop().await;
    edge.close();
    hpc.close();

    // Provenance: everything recorded, then the rollback checked from it.
    let (rstats, mut prov) = {
        let r = recorder.clone();
        tokio::task::spawn_blocking(move || r.close())
            .await
            .context("closing the lineage recorder")??
    };
    ensure!(
        rstats.lost == 0,
        "{} lineage records could not be stored",
        rstats.lost
    );
    let checks = check_rollback(&mut prov, &shared)?;
    if let Some(d) = dashboard {
        d.stop().await;
    }
    edge_node.shutdown().await;
    hpc_node.shutdown().await;

    let (before, after) = (
        shared.frames_before.load(Ordering::Relaxed),
        shared.frames_after.load(Ordering::Relaxed),
    );
    let edge_q = edge_quality(&shared);
    let lat = shared.latency.lock().clone();
    let rollback = *shared.rollback.lock();
    let summary = Summary {
        switched_at_s: shared
            .events
            .lock()
            .iter()
            .find(|e| e.kind == "switch")
            .map(|e| e.t_s),
        edge_frames_per_s: shared.edge_frames.load(Ordering::Relaxed) as f64
            / (shared.edge_busy_us.load(Ordering::Relaxed) as f64 / 1e6).max(1e-9),
        detector_frames_per_s: cfg.rate,
        edge_phase_ssim_vs_epie: edge_q.0,
        edge_scans_compared: edge_q.1,
        wan_bytes_per_frame_before_switch: shared.wan_before.load(Ordering::Relaxed) as f64
            / before.max(1) as f64,
        wan_bytes_per_frame_after_switch: shared.wan_after.load(Ordering::Relaxed) as f64
            / after.max(1) as f64,
        wan_model_bytes: edge_report.model_bytes,
        rollback_to_version: rollback.map(|r| r.0),
        rollback_s: rollback.map(|r| r.1),
        bad_scan: shared.bad_scan.lock().clone(),
        invalidated_versions,
        frames,
        frames_acked: detected,
        edge_frames_received: edge_report.received,
        lost: frames.saturating_sub(edge_report.received),
        epie_scans: shared.epie_scans.load(Ordering::Relaxed),
        epie_workers_killed: shared.workers_killed.load(Ordering::Relaxed),
        edge_scans: shared.edge.lock().len(),
        versions: shared.versions.lock().len() as u64,
        trainer_steps: shared.losses.lock().len() as u64,
        held_out_phase_ssim: shared.validations.lock().last().map(|v| v.phase_ssim),
        latency_ms_p99: lat.value_at_quantile(0.99) as f64 / 1e3,
        latency_ms_p50: lat.value_at_quantile(0.5) as f64 / 1e3,
        checks,
        elapsed_s: shared.now_s(),
        report: None,
        provenance: store.clone(),
        not_yet: vec![
            "the WAN here is a loopback bridge: no outage, loss or congestion, so no prediction to act on — `diaspora twin run twins/ptycho-loop.toml` runs these stages as processes over an emulated WAN with them",
        ],
    };
    let mut summary = summary;
    if let Some(dir) = &cfg.report {
        summary.report = Some(report::write(dir, &cfg, &shared, &summary)?);
    }
    if cfg.data_dir.is_none() {
        // The store goes with the temporary directory.
        summary.provenance = PathBuf::new();
    }
    drop(tmp);
    Ok(summary)
}

async fn ensure_local(
    broker: &Arc<diaspora_fabric::Broker>,
    topic: &str,
    parts: u32,
) -> Result<()> {
    match ensure_topic(broker, topic, &TopicSettings::with_partitions(parts)).await {
        Ok(_) | Err(FabricError::TopicMismatch { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn progress(json: bool) -> indicatif::ProgressBar {
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .expect("template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
