//! `diaspora view …`: resilient data views from the command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use diaspora_fabric::Client;
use diaspora_view::runner::{Restore, View, ViewOptions};
use diaspora_view::serve::{self, ServeOptions};
use diaspora_view::snapshot::SnapshotStore;
use diaspora_view::ViewSpec;

use diaspora_telemetry::ReportSlot;
use diaspora_view::runner::ViewStats;

use super::{stop_on_signal, DataConn, MetricsArgs};

/// A view's figures as its loop last saw them (`view.*` metrics).
#[derive(Clone, Default, serde::Serialize)]
struct ViewFigures {
    #[serde(flatten)]
    stats: ViewStats,
    /// Members waiting for their join.
    pending: u64,
    /// Emitted view items waiting for delivery.
    outbox: u64,
    /// Source items held (pending members, members of unacknowledged items).
    held: u64,
}

const VIEW_GAUGES: &[(&str, &str)] = &[
    ("pending", "{member}"),
    ("outbox", "{item}"),
    ("held", "{member}"),
];

/// The subcommands of `diaspora view`.
#[derive(Subcommand)]
pub enum ViewCommand {
    /// Check a view spec (TOML) and print it with every default filled in.
    Check {
        /// The spec file.
        spec: PathBuf,
    },
    /// Run a view against a node: join its sources, print each view item
    /// (references, one JSON line) and publish it on the spec's output
    /// topic, if any. Stops after --max-items, after --idle-s without
    /// input, or on Ctrl-C; saves a snapshot on the way out when
    /// --snapshots is given.
    Run(Box<RunArgs>),
    /// List the snapshots in a directory (all views, or one).
    Snapshots {
        /// Snapshot directory.
        dir: PathBuf,
        /// Only this view.
        view: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Benchmark: the pure join engine at 1:1 and K:1 (view items/s), and a
    /// view on an embedded node against a plain consumer (payload bytes
    /// copied, throughput).
    Bench(BenchArgs),
}

/// Arguments of `diaspora view run`.
#[derive(Args)]
pub struct RunArgs {
    /// The spec file (TOML; see `diaspora view check`).
    #[arg(long)]
    spec: PathBuf,
    #[command(flatten)]
    conn: DataConn,
    /// Snapshot directory (versioned snapshots of the view's state).
    #[arg(long)]
    snapshots: Option<PathBuf>,
    /// Restore from a snapshot: `latest` or a version number.
    #[arg(long, requires = "snapshots")]
    restore: Option<String>,
    /// Save a snapshot this often, seconds (0 = only on the way out).
    #[arg(long, default_value_t = 0)]
    snapshot_every_s: u64,
    /// Follow invalidation notices on this topic (e.g. prov.invalidations).
    #[arg(long)]
    invalidations: Option<String>,
    /// Stop after this many view items (0 = no limit).
    #[arg(long, default_value_t = 0)]
    max_items: u64,
    /// Stop after this many seconds without a view item (0 = never).
    #[arg(long, default_value_t = 0)]
    idle_s: u64,
    /// Print a JSON summary at the end instead of a line of text.
    #[arg(long)]
    json: bool,
    /// `view.*` metrics (label view).
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// Arguments of `diaspora view bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// View items per join shape in the engine benchmark.
    #[arg(long, default_value_t = 2_000_000)]
    items: u64,
    /// K of the K:1 shape.
    #[arg(long, default_value_t = 4)]
    k: u32,
    /// Keys partially joined at any time.
    #[arg(long, default_value_t = 1024)]
    open_keys: u64,
    /// Rounds per shape (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// View items in the run on an embedded node (0 = skip it).
    #[arg(long, default_value_t = 5_000)]
    fabric_items: u64,
    /// Payload bytes per member in that run.
    #[arg(long, default_value_t = 16_384)]
    payload_bytes: usize,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// Runs a `diaspora view` command.
pub async fn run(cmd: ViewCommand) -> Result<()> {
    match cmd {
        ViewCommand::Check { spec } => {
            let s = load(&spec)?;
            println!("{}", toml::to_string_pretty(&s)?);
            Ok(())
        }
        ViewCommand::Snapshots { dir, view, json } => {
            let store = SnapshotStore::open(&dir)?;
            let views = match view {
                Some(v) => vec![v],
                None => store.views()?,
            };
            let mut all = Vec::new();
            for v in views {
                all.extend(store.list(&v)?);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("no snapshots in {}", dir.display());
            } else {
                for i in all {
                    println!(
                        "{:<24} v{:<6} {:>10} bytes  taken_us {}  {}",
                        i.view, i.version, i.bytes, i.taken_us, i.summary
                    );
                }
            }
            Ok(())
        }
        ViewCommand::Run(a) => run_view(*a).await,
        ViewCommand::Bench(a) => bench(a).await,
    }
}

fn load(path: &PathBuf) -> Result<ViewSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the view spec {}", path.display()))?;
    ViewSpec::from_toml(&text).with_context(|| format!("in {}", path.display()))
}

async fn run_view(a: RunArgs) -> Result<()> {
    let spec = load(&a.spec)?;
    let view_name = spec.name.clone();
    let restore = match a.restore.as_deref() {
        None => Restore::Fresh,
        Some("latest") => Restore::Latest,
        Some(v) => Restore::Version(
            v.parse()
                .with_context(|| format!("--restore {v:?}: `latest` or a version number"))?,
        ),
    };
    let snapshots = a.snapshots.as_ref().map(SnapshotStore::open).transpose()?;
    let client = Client::connect(a.conn.client_config())
        .await
        .with_context(|| format!("connecting to {}", a.conn.addr))?;
    let mut view = View::start(
        &client,
        spec,
        ViewOptions {
            snapshots,
            restore,
            snapshot_every: (a.snapshot_every_s > 0)
                .then(|| Duration::from_secs(a.snapshot_every_s)),
            invalidations: a.invalidations.clone(),
            ..Default::default()
        },
    )
    .await?;
    let figures = ReportSlot::new(ViewFigures::default());
    let observe = |view: &View| ViewFigures {
        stats: view.stats().clone(),
        pending: view.engine().pending() as u64,
        outbox: view.outbox() as u64,
        held: view.held() as u64,
    };
    if a.metrics.enabled() {
        figures.store(observe(&view));
    }
    let reader = figures.clone();
    let publisher = a
        .metrics
        .publish_fields(
            &client,
            format!("view:{view_name}"),
            "view",
            &[("view", view_name.as_str())],
            VIEW_GAUGES,
            move || Some(reader.load()),
        )
        .await?;
    let opts = ServeOptions {
        max_items: (a.max_items > 0).then_some(a.max_items),
        idle: (a.idle_s > 0).then(|| Duration::from_secs(a.idle_s)),
    };
    let stop = stop_on_signal()?;
    let n = serve::run(&mut view, &mut std::io::stdout(), &opts, &stop, |view| {
        if publisher.is_some() {
            figures.store(observe(view));
        }
    })
    .await?;
    if a.snapshots.is_some() {
        let info = view.snapshot()?;
        eprintln!("snapshot {} v{} saved", info.view, info.version);
    }
    if let Some(publisher) = publisher {
        figures.store(observe(&view));
        publisher.stop().await;
    }
    let stats = view.close().await?;
    client.close();
    if a.json {
        eprintln!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        eprintln!(
            "{n} view items; {} source items read, {} unkeyed, {} discarded, {} retracted",
            stats.items_read, stats.unkeyed, stats.discarded, stats.retracted
        );
    }
    Ok(())
}

async fn bench(a: BenchArgs) -> Result<()> {
    if a.items == 0 || a.k == 0 || a.rounds == 0 {
        bail!("--items, --k and --rounds must be ≥ 1");
    }
    let mut shapes = Vec::new();
    for k in [1, a.k] {
        let mut runs = Vec::new();
        for _ in 0..a.rounds {
            runs.push(diaspora_view::bench::join(a.items, k, a.open_keys)?);
        }
        runs.sort_by(|x, y| x.view_items_per_s.total_cmp(&y.view_items_per_s));
        shapes.push((k, runs.swap_remove(runs.len() / 2)));
    }
    let fabric = if a.fabric_items > 0 {
        Some(diaspora_view::bench::fabric(a.fabric_items, a.k, a.payload_bytes).await?)
    } else {
        None
    };
    let per_s: serde_json::Map<String, serde_json::Value> = shapes
        .iter()
        .map(|(k, f)| (format!("{k}:1"), serde_json::json!(f.view_items_per_s)))
        .collect();
    let report = serde_json::json!({
        "view_items_per_s": per_s,
        "view_items_per_s_1to1": shapes[0].1.view_items_per_s,
        "view_items_per_s_kto1": shapes[1].1.view_items_per_s,
        "k": a.k,
        "joins": shapes.iter().map(|(_, f)| f).collect::<Vec<_>>(),
        "payload_bytes_copied": fabric.as_ref().map(|f| f.payload_bytes_copied),
        "fabric": fabric,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for (k, f) in &shapes {
            println!(
                "join engine {k}:1   {:>12.0} view items/s  ({:.0} members/s, median of {})",
                f.view_items_per_s, f.members_per_s, a.rounds
            );
        }
        if let Some(f) = &fabric {
            println!(
                "on a node   {}:1   {} view items, {:.0} members/s through the view vs {:.0} through a plain consumer; {} payload bytes delivered, {} copied; {:.0} reference bytes per item",
                f.k, f.view_items, f.view_members_per_s, f.baseline_members_per_s,
                f.payload_bytes_delivered, f.payload_bytes_copied, f.reference_bytes_per_item
            );
        }
    }
    Ok(())
}
