//! `diaspora demo`: the ptychography online-training loop on embedded
//! nodes ([`diaspora_demo::online`]); `--skeleton` runs the streaming
//! skeleton it grew from. This only turns the flags into their
//! configurations and prints the summary.

use std::path::PathBuf;

use anyhow::Result;
use diaspora_demo::skeleton::DemoConfig;
use diaspora_demo::LoopConfig;

/// Arguments of `diaspora demo`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
The loop: a simulated detector takes scans at the edge; during warm-up every frame \
crosses the WAN (a bridge between two embedded nodes) to HPC, where ePIE reconstructs \
each scan and a surrogate network trains online on (frame, ePIE patch) samples joined by a \
view. When its held-out phase SSIM against ePIE reaches --switch-ssim, the model ships to \
the edge, which reconstructs every frame itself; one scan in --fine-tune-every still goes \
to HPC for fine-tuning. One scan carries an injected detector fault: a QA check finds it \
once a model trained on it has shipped, invalidates it in provenance, and the edge rolls \
back to the newest model version provenance still holds valid.

The report (pictures, timeline, figures) is written to --report (default demo-report/).

--stage detector|hpc|edge runs one stage as its own process against a node that runs \
elsewhere; `diaspora twin run twins/ptycho-loop.toml` starts the three over an emulated \
WAN with an outage, a SIGKILLed ePIE worker, and a congestion ramp a live monitor \
predicts (the detector's uplink then reduces).")]
pub struct DemoArgs {
    /// Scans the detector takes.
    #[arg(long, default_value_t = LoopConfig::default().scans)]
    pub scans: usize,
    /// Positions (frames) per scan.
    #[arg(long, default_value_t = LoopConfig::default().positions)]
    pub positions: usize,
    /// Object kind: particles, siemens-star or smooth.
    #[arg(long, default_value = "particles")]
    pub kind: diaspora_ptycho::sim::ObjectKind,
    /// Detector frame rate, frames/s.
    #[arg(long, default_value_t = LoopConfig::default().rate)]
    pub rate: f64,
    /// Held-out phase SSIM against ePIE at which the edge switches to the surrogate.
    #[arg(long, default_value_t = LoopConfig::default().switch_ssim)]
    pub switch_ssim: f64,
    /// After the switch, one scan in this many goes to HPC.
    #[arg(long, default_value_t = LoopConfig::default().fine_tune_every)]
    pub fine_tune_every: usize,
    /// ePIE iterations per scan.
    #[arg(long, default_value_t = LoopConfig::default().epie_iterations)]
    pub epie_iterations: usize,
    /// Training mini-batch size.
    #[arg(long, default_value_t = LoopConfig::default().batch)]
    pub batch: usize,
    /// Optimiser steps between two validations (and chances to ship).
    #[arg(long, default_value_t = LoopConfig::default().validate_every)]
    pub validate_every: usize,
    /// ePIE pool workers at most (worker processes of this binary; the pool
    /// keeps one and scales up on backlog).
    #[arg(long, default_value_t = LoopConfig::default().epie_workers)]
    pub epie_workers: u32,
    /// The network's base width (channels of its first level).
    #[arg(long, default_value_t = LoopConfig::default().channels)]
    pub channels: usize,
    /// Do not inject the bad scan (no invalidation, no rollback).
    #[arg(long)]
    pub no_bad_scan: bool,
    /// Do not SIGKILL an ePIE worker during warm-up.
    #[arg(long)]
    pub no_kill_worker: bool,
    /// Seed of the scans and the network.
    #[arg(long, default_value_t = LoopConfig::default().seed)]
    pub seed: u64,
    /// Write the HTML report here.
    #[arg(long, default_value = "demo-report")]
    pub report: PathBuf,
    /// Write no report.
    #[arg(long, conflicts_with = "report")]
    pub no_report: bool,
    /// Keep the nodes' data and the provenance store (prov.sqlite) here
    /// instead of a temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Run the streaming skeleton instead (synthetic frames, no science).
    #[arg(long)]
    pub skeleton: bool,
    /// With --skeleton: frames to stream.
    #[arg(long, requires = "skeleton", default_value_t = 2000)]
    pub frames: u64,
    /// With --skeleton: frame width, pixels.
    #[arg(long, requires = "skeleton", default_value_t = 256)]
    pub width: usize,
    /// With --skeleton: frame height, pixels.
    #[arg(long, requires = "skeleton", default_value_t = 256)]
    pub height: usize,
    /// With --skeleton: frames per scan position.
    #[arg(long, requires = "skeleton", default_value_t = 4)]
    pub frames_per_position: u64,
    /// With --skeleton: partitions of the frames topic.
    #[arg(long, requires = "skeleton", default_value_t = 2)]
    pub partitions: u32,
    /// Run one stage of the loop as its own process against a node that runs
    /// elsewhere (what twins/ptycho-loop.toml starts): detector (edge node),
    /// hpc (HPC node; ePIE runs on a pool named "epie") or edge (edge node).
    /// The loop's flags must be the same for the three.
    #[arg(long, value_name = "STAGE", conflicts_with = "skeleton", requires_all = ["node", "provenance"])]
    pub stage: Option<diaspora_demo::stage::Stage>,
    /// With --stage: the node's data plane.
    #[arg(long, requires = "stage")]
    pub node: Option<std::net::SocketAddr>,
    /// With --stage: the node's CA certificate.
    #[arg(long, requires = "stage", default_value = crate::cli::DEFAULT_CA)]
    pub ca: PathBuf,
    /// With --stage: the experiment's provenance store, shared by the stages.
    #[arg(long, requires = "stage")]
    pub provenance: Option<String>,
    /// With --stage: its working directory (hpc: scans for the pool's workers).
    #[arg(long, requires = "stage", default_value = ".")]
    pub work_dir: PathBuf,
    /// With --stage detector: write the frames stream's acknowledgements here.
    #[arg(long, requires = "stage")]
    pub acks: Option<PathBuf>,
    /// With --stage edge: write every frame received here.
    #[arg(long, requires = "stage")]
    pub deliveries: Option<PathBuf>,
    /// With --stage: write the stage's timeline here (JSON lines).
    #[arg(long, requires = "stage")]
    pub events: Option<PathBuf>,
    /// Serve the edge node's live dashboard on this address while the loop
    /// runs (e.g. 127.0.0.1:8090): the loop's phase, timeline and latest
    /// reconstruction, the topics and their rates, and the lineage
    /// explorer over the experiment's provenance store. Loopback only.
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["stage", "skeleton"])]
    pub dashboard: Option<std::net::SocketAddr>,
    /// With --stage: who the stage is to a node that requires identities.
    #[command(flatten)]
    pub creds: crate::cli::Credentials,
}

impl DemoArgs {
    /// The loop's configuration.
    pub fn config(&self) -> LoopConfig {
        LoopConfig {
            scans: self.scans,
            positions: self.positions,
            kind: self.kind,
            rate: self.rate,
            switch_ssim: self.switch_ssim,
            fine_tune_every: self.fine_tune_every,
            epie_iterations: self.epie_iterations,
            channels: self.channels,
            batch: self.batch,
            epie_workers: self.epie_workers,
            worker_command: worker_command(),
            validate_every: self.validate_every,
            bad_scan: !self.no_bad_scan,
            kill_worker: !self.no_kill_worker,
            seed: self.seed,
            report: (!self.no_report).then(|| self.report.clone()),
            data_dir: self.data_dir.clone(),
            json: self.json,
            dashboard: self.dashboard,
            ..LoopConfig::default()
        }
    }

    /// The skeleton's configuration.
    pub fn skeleton_config(&self) -> DemoConfig {
        DemoConfig {
            frames: self.frames,
            width: self.width,
            height: self.height,
            frames_per_position: self.frames_per_position,
            partitions: self.partitions,
            rate: if self.rate == LoopConfig::default().rate {
                0.0
            } else {
                self.rate
            },
            data_dir: self.data_dir.clone(),
            json: self.json,
        }
    }
}

/// This binary as a pool worker (`diaspora pool worker`).
fn worker_command() -> Vec<String> {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "diaspora".into());
    vec![exe, "pool".into(), "worker".into()]
}

/// Runs the demo and prints its summary.
pub async fn run(a: DemoArgs) -> Result<()> {
    if a.skeleton {
        return diaspora_demo::skeleton::run(a.skeleton_config()).await;
    }
    if let Some(stage) = a.stage {
        let o = diaspora_demo::stage::StageOptions {
            stage,
            node: a.node.expect("required by clap"),
            ca: a.ca.clone(),
            provenance: a.provenance.clone().expect("required by clap"),
            work_dir: a.work_dir.clone(),
            acks: a.acks.clone(),
            deliveries: a.deliveries.clone(),
            events: a.events.clone(),
            identity: a.creds.identity(),
            token: a.creds.token.clone(),
        };
        let s = diaspora_demo::stage::run_stage(a.config(), o).await?;
        println!("{s}");
        anyhow::ensure!(
            s["ok"] == true,
            "the {stage:?} stage did not do its part: {s}"
        );
        return Ok(());
    }
    let s = diaspora_demo::run(a.config()).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_summary(&s);
    }
    anyhow::ensure!(s.lost == 0, "{} frames lost", s.lost);
    anyhow::ensure!(
        s.checks.values().all(|c| *c),
        "a provenance check of the rollback failed: {:?}",
        s.checks
    );
    Ok(())
}

fn print_summary(s: &diaspora_demo::Summary) {
    let opt = |v: Option<f64>, unit: &str| v.map_or("–".into(), |v| format!("{v:.2}{unit}"));
    println!("diaspora demo — the ptychography online-training loop (edge ⇄ WAN ⇄ HPC)");
    println!(
        "  detector      {} frames at {:.0} frames/s; {} lost",
        s.frames, s.detector_frames_per_s, s.lost
    );
    println!(
        "  warm-up       ePIE at HPC reconstructed {} scans; the surrogate switched in at {}",
        s.epie_scans,
        opt(s.switched_at_s, " s")
    );
    println!(
        "  edge          {} scans reconstructed by the surrogate; capacity {:.0} frames/s; phase SSIM vs ePIE {} over {} scans; latency p50 {:.1} ms, p99 {:.1} ms",
        s.edge_scans,
        s.edge_frames_per_s,
        opt(s.edge_phase_ssim_vs_epie, ""),
        s.edge_scans_compared,
        s.latency_ms_p50,
        s.latency_ms_p99
    );
    println!(
        "  WAN           {:.0} bytes/frame before the switch, {:.0} after; {} versions shipped ({:.1} MB of models)",
        s.wan_bytes_per_frame_before_switch,
        s.wan_bytes_per_frame_after_switch,
        s.versions,
        s.wan_model_bytes as f64 / 1e6
    );
    if let Some(b) = &s.bad_scan {
        println!(
            "  rollback      {b} found bad → versions {:?} invalid; the edge runs v{} ({} after the invalidation)",
            s.invalidated_versions,
            s.rollback_to_version.map_or("–".into(), |v| v.to_string()),
            opt(s.rollback_s.map(|x| x * 1e3), " ms")
        );
    }
    for (k, v) in &s.checks {
        println!("  check         {k}: {}", if *v { "yes" } else { "NO" });
    }
    if let Some(r) = &s.report {
        println!("  report        {}", r.display());
    }
    println!("  not yet       {}", s.not_yet.join("; "));
}
