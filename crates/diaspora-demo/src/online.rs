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
use diaspora_stream::{ndarray as nd, Policy, QosConsumer, QosProducer, Sent};
use diaspora_view::runner::{View, ViewOptions};
use diaspora_view::ViewSpec;
use ndarray::Array2;
use parking_lot::Mutex;
use serde::Serialize;

use crate::report;

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

/// A frame as it travels: `u16` N×N, metadata naming its scan and position.
fn frame_item(
    frame: &Array2<u16>,
    m: &FrameMeta,
    positions: usize,
    id: u64,
    side: usize,
) -> diaspora_proto::v1::Item {
    let mut b = Vec::with_capacity(frame.len() * 2);
    for v in frame.iter() {
        b.extend_from_slice(&v.to_le_bytes());
    }
    let payload = Bytes::from(b);
    let crc = crc32c::crc32c(&payload);
    let mut item = payload_item(payload);
    nd::tag_array(&mut item, "u16", &[frame.nrows(), frame.ncols()]);
    for (k, v) in [
        ("scan", meta::string(&m.scan_id)),
        ("index", meta::int(m.index as i64)),
        ("x", meta::int(m.x as i64)),
        ("y", meta::int(m.y as i64)),
        ("dose", meta::float(m.dose)),
        ("positions", meta::int(positions as i64)),
        ("side", meta::int(side as i64)),
        ("id", meta::int(id as i64)),
        ("crc32c", meta::int(crc as i64)),
    ] {
        item.metadata.insert(k.into(), v);
    }
    item
}

/// A received frame: its pixels and metadata, checked (a frame that
/// crossed the WAN compressed is restored first).
fn read_frame(item: &diaspora_proto::v1::Item) -> Result<(Array2<u16>, FrameMeta, usize)> {
    let restored;
    let item = if item.metadata.contains_key(diaspora_stream::control::CODEC) {
        let mut it = item.clone();
        diaspora_stream::reduce::restore(&mut it).context("a compressed frame")?;
        restored = it;
        &restored
    } else {
        item
    };
    let scan = meta::get_str(item, "scan").context("frame without a scan")?;
    let get = |k: &str| meta::get_i64(item, k).with_context(|| format!("frame without {k}"));
    let crc = get("crc32c")? as u32;
    ensure!(
        crc32c::crc32c(&item.payload) == crc,
        "frame {} of {scan}: checksum mismatch",
        get("index")?
    );
    let a = nd::item_array::<u16>(item).context("a frame is a u16 array")?;
    ensure!(a.ndim() == 2, "a frame is 2-D");
    let (h, w) = (a.shape()[0], a.shape()[1]);
    let frame = Array2::from_shape_vec((h, w), a.iter().copied().collect())?;
    Ok((
        frame,
        FrameMeta {
            scan_id: scan.to_string(),
            index: get("index")? as u32,
            x: get("x")? as u32,
            y: get("y")? as u32,
            dose: meta::get_f64(item, "dose").unwrap_or(0.0),
        },
        get("positions")? as usize,
    ))
}

fn complex_bytes(a: &Array2<C32>, out: &mut Vec<u8>) {
    for v in a.iter() {
        out.extend_from_slice(&v.re.to_le_bytes());
        out.extend_from_slice(&v.im.to_le_bytes());
    }
}

fn complex_from(bytes: &[u8], side: usize) -> Result<Array2<C32>> {
    ensure!(
        bytes.len() == side * side * 8,
        "{} bytes for a {side}×{side} complex array",
        bytes.len()
    );
    let v: Vec<C32> = bytes
        .chunks_exact(8)
        .map(|c| {
            C32::new(
                f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                f32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
        .collect();
    Ok(Array2::from_shape_vec((side, side), v)?)
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
    ecfg.admin_listen = None;
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
                let phase = if shared.rollback.lock().is_some() {
                    "fine-tune (rolled back)"
                } else if shared.switched.load(Ordering::Relaxed) {
                    "edge inference + fine-tune"
                } else {
                    "warm-up"
                };
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

// ---------------------------------------------------------------- detector

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

/// A monitor's `prediction` event for link `link` (its `link` label), as
/// a line for the timeline; anything else is none.
fn congestion_prediction(payload: &[u8], link: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    if v["kind"] != "prediction" || v["labels"]["link"] != link {
        return None;
    }
    Some(format!(
        "{} predicts {} on {link} reaching {:.2} in {:.1} s (now {:.2}, confidence {:.2})",
        v["monitor"].as_str().unwrap_or("a monitor"),
        v["metric"].as_str().unwrap_or("a metric"),
        v["threshold"].as_f64().unwrap_or(0.0),
        v["lead_time_s"].as_f64().unwrap_or(0.0),
        v["value"].as_f64().unwrap_or(0.0),
        v["confidence"].as_f64().unwrap_or(0.0),
    ))
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
                let mut bytes = prost::Message::encoded_len(&item) as u64;
                if uplink.flow_state().1 > 0 {
                    // What the WAN carries: the item as the stage reduces it.
                    let mut z = item.clone();
                    diaspora_stream::reduce::zstd_compress(&mut z, 1);
                    bytes = prost::Message::encoded_len(&z) as u64;
                    shared.wan_reduced.fetch_add(1, Ordering::Relaxed);
                }
                if switched {
                    shared.wan_after.fetch_add(bytes, Ordering::Relaxed);
                } else {
                    shared.wan_before.fetch_add(bytes, Ordering::Relaxed);
                }
                match uplink.send(item.clone()).await? {
                    Sent::Accepted(_) => {}
                    other => bail!("the uplink reduces losslessly, it does not drop: {other:?}"),
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
    let mut end = payload_item(Bytes::new());
    end.metadata.insert("end".into(), meta::int(1));
    end.metadata
        .insert("scans_up".into(), meta::int(scans_up as i64));
    uplink.send(end).await?;
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

// ---------------------------------------------------------------- HPC: ePIE

/// The ePIE pool's name (its topics are `pool.epie.*`).
pub const POOL: &str = "epie";

/// The ePIE pool: real worker processes of this binary (`diaspora pool
/// worker`, the local provider), one to `epie_workers`, scaled on backlog.
fn pool_spec(cfg: &LoopConfig) -> Result<PoolSpec> {
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
        if meta::get_i64(&c.item, "end").is_some() {
            // The detector's last word: how many scans it sent up.
            scans_up =
                Some(meta::get_i64(&c.item, "scans_up").context("end without scans_up")? as u64);
            continue;
        }
        let (frame, m, positions) = read_frame(&c.item)?;
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
    let side = object.nrows();
    let n = probe.nrows();
    let mut b = Vec::with_capacity((side * side + n * n) * 8);
    complex_bytes(&object, &mut b);
    complex_bytes(&probe, &mut b);
    let mut item = payload_item(Bytes::from(b));
    for (k, v) in [
        ("scan", meta::string(&id)),
        ("side", meta::int(side as i64)),
        ("n", meta::int(n as i64)),
        ("hot_pixels", meta::int(sub.hot as i64)),
        ("worker", meta::string(worker)),
    ] {
        item.metadata.insert(k.into(), v);
    }
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
        let recon = d.members[k].as_ref().context("reconstruction member")?;
        let side = meta::get_i64(&recon.item, "side").context("side")? as usize;
        let n = meta::get_i64(&recon.item, "n").context("n")? as usize;
        let scan = meta::get_str(&recon.item, "scan")
            .context("scan")?
            .to_string();
        let p = &recon.item.payload;
        ensure!(p.len() == (side * side + n * n) * 8, "reconstruction size");
        let object = complex_from(&p[..side * side * 8], side)?;
        let probe = complex_from(&p[side * side * 8..], n)?;
        let mut frames = Vec::with_capacity(k);
        let mut metas = Vec::with_capacity(k);
        for m in &d.members[..k] {
            let f = m.as_ref().context("frame member")?;
            let (frame, meta, _) = read_frame(&f.item)?;
            frames.push(frame);
            metas.push(meta);
        }
        let samples = diaspora_ptycho::surrogate::samples_from(&frames, &metas, &object, n)?;
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
        let mut payload = Vec::with_capacity(8 + ckpt.len() + p.len() * 8);
        payload.extend_from_slice(&(ckpt.len() as u64).to_le_bytes());
        payload.extend_from_slice(&ckpt);
        complex_bytes(p, &mut payload);
        let mut item = payload_item(Bytes::from(payload));
        item.metadata
            .insert("version".into(), meta::int(version as i64));
        item.metadata.insert("phase_ssim".into(), meta::float(q));
        item.metadata
            .insert("n".into(), meta::int(p.nrows() as i64));
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
                .send(notice_item("invalidated", scan))
                .await?
                .await?;
            let _ = trainer.send(TrainerMsg::Invalidated { scan: scan.clone() });
        }
    }
    // The last word on the model topic: nothing more comes.
    notices.send(notice_item("end", "")).await?.await?;
    notices.close().await?;
    Ok(reached)
}

/// A notice on the model topic: `invalidated` (a scan is bad: ask
/// provenance which version to run) or `end` (HPC is done).
fn notice_item(kind: &str, scan: &str) -> diaspora_proto::v1::Item {
    let mut item = payload_item(Bytes::new());
    item.metadata.insert("notice".into(), meta::string(kind));
    item.metadata.insert("scan".into(), meta::string(scan));
    item
}

// ---------------------------------------------------------------- edge

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
            match meta::get_str(&c.item, "notice") {
                Some("end") => {
                    hpc_done = true;
                    continue;
                }
                Some("invalidated") => {
                    // A scan is bad: ask provenance which version to run.
                    let scan = meta::get_str(&c.item, "scan")
                        .unwrap_or_default()
                        .to_string();
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
                Some(other) => bail!("edge: an unknown notice '{other}' on {EDGE_MODELS}"),
                None => {}
            }
            let version = meta::get_i64(&c.item, "version").context("model version")? as u64;
            let n = meta::get_i64(&c.item, "n").context("model n")? as usize;
            let p = c.item.payload.clone();
            let m = tokio::task::spawn_blocking(move || -> Result<EdgeModel> {
                ensure!(p.len() >= 8, "model item too short");
                let len = u64::from_le_bytes(p[..8].try_into().expect("8 bytes")) as usize;
                ensure!(p.len() == 8 + len + n * n * 8, "model item size");
                let model = Surrogate::from_checkpoint_bytes(
                    &p[8..8 + len],
                    diaspora_ptycho::surrogate::default_device(),
                )?;
                Ok(EdgeModel {
                    version,
                    model: Arc::new(model),
                    probe: complex_from(&p[8 + len..], n)?,
                })
            })
            .await
            .context("model load")??;
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
        let (frame, m, positions) = read_frame(&it.item)?;
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
        let size = meta::get_i64(&it.item, "side").context("frame without side")? as usize;
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
fn edge_quality(shared: &Shared) -> (Option<f64>, usize) {
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

// ---------------------------------------------------------------- checks

/// From provenance alone: the version the edge runs after the rollback
/// was trained on nothing derived from the bad scan; every edge image made
/// with an invalid version is invalid; every version trained on the bad
/// scan is invalid.
pub(crate) fn check_rollback(
    prov: &mut Provenance,
    shared: &Shared,
) -> Result<BTreeMap<String, bool>> {
    let mut checks = BTreeMap::new();
    let Some(bad) = shared.bad_scan.lock().clone() else {
        return Ok(checks);
    };
    let rollback = *shared.rollback.lock();
    let bad_records: std::collections::HashSet<i64> = prov
        .find_tag("scan", &TagValue::Str(bad.clone()), usize::MAX)?
        .into_iter()
        .collect();
    checks.insert(
        "bad_scan_records_all_invalid".into(),
        !bad_records.is_empty()
            && bad_records
                .iter()
                .all(|id| prov.is_invalid(*id).unwrap_or(false)),
    );
    if let Some((v, _)) = rollback {
        let clean = match prov.model_version(MODEL, v as i64)? {
            Some(id) => {
                let up = prov.lineage(id, diaspora_provenance::Direction::Up, None)?;
                !prov.is_invalid(id)? && up.nodes.iter().all(|(n, _)| !bad_records.contains(n))
            }
            None => v == 0,
        };
        checks.insert("rollback_version_saw_nothing_of_the_bad_scan".into(), clean);
    }
    // Every edge image made with an invalid version is invalid.
    let mut ok = true;
    for (version, id, _) in prov.backend().model_versions(MODEL)? {
        if !prov.is_invalid(id)? {
            continue;
        }
        for e in prov.find_tag(
            "model_version",
            &TagValue::infer(&version.to_string()),
            usize::MAX,
        )? {
            ok &= prov.is_invalid(e)?;
        }
    }
    checks.insert("edge_images_of_invalid_versions_invalid".into(), ok);
    Ok(checks)
}
