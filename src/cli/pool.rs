//! `diaspora pool …`: elastic compute pools (crates/diaspora-pool).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use diaspora_fabric::{Client, ClientConfig};
use diaspora_pool::fabric::{self as pf, ExternalDemand, PoolOptions, WorkerOptions};
use diaspora_pool::messages::{Control, Status, Task, TaskKind};
use diaspora_pool::PoolSpec;

use super::{AdminConn, DataConn, DEFAULT_ADDR, DEFAULT_ADMIN, DEFAULT_CA};

/// Pool commands.
#[derive(Subcommand)]
pub enum PoolCommand {
    /// Run a pool: keep its workers alive at its sites (local processes or
    /// Slurm jobs), scale them with the task backlog, retry failed tasks,
    /// and write one result per task key. Runs until Ctrl-C; every worker
    /// is stopped before it exits.
    Run(RunArgs),
    /// Check a pool spec and print it with every default filled in.
    Check {
        /// The spec (TOML).
        #[arg(long)]
        spec: PathBuf,
    },
    /// The pool's latest status (it publishes one every second).
    Status(StatusArgs),
    /// Submit tasks: a command (`-- PROGRAM ARGS…`), `--echo`, or `--sleep-ms`.
    Submit(SubmitArgs),
    /// Print the pool's results (one per task key).
    Results(StatusArgs),
    /// Drain a site: no new workers there, its workers finish and go; the
    /// other sites cover the pool's minimum. `--undo` lets it take workers again.
    Drain(DrainArgs),
    /// Move a running task to an idle worker at another site while it runs
    /// (live migration by pre-copy rounds and a short stop-and-copy). Works
    /// for tasks whose state can move (`stateful` tasks today).
    Migrate {
        /// Task key.
        task: String,
        /// Target site.
        #[arg(long)]
        to: String,
        /// Pool name.
        #[arg(long)]
        pool: String,
        /// The node's data plane.
        #[command(flatten)]
        conn: DataConn,
    },
    /// Run one worker (the pool launches these; the environment it sets
    /// supplies every argument).
    Worker(WorkerArgs),
}

/// `pool run`.
#[derive(Args)]
pub struct RunArgs {
    /// The pool spec (TOML; see `diaspora pool check`).
    #[arg(long)]
    pub spec: PathBuf,
    /// The node's data plane.
    #[command(flatten)]
    pub conn: DataConn,
    /// gRPC admin address of the node (the pool creates its topics there).
    #[arg(long, default_value = DEFAULT_ADMIN)]
    pub admin: SocketAddr,
    /// Workers' stdout and stderr go here (WORKER.out, WORKER.err).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// Time between the pool's rounds, ms.
    #[arg(long, default_value_t = 200)]
    pub tick_ms: u64,
    /// Act on predictions on this topic (e.g. diaspora.predictions)…
    #[arg(long)]
    pub predictions_topic: Option<String>,
    /// …that name one of these resources.
    #[arg(long = "serves")]
    pub serves: Vec<String>,
    /// Record every task run as a provenance activity (which worker ran
    /// which task on which inputs, and the result it generated) in this
    /// store: a SQLite file path, or postgres://USER:PASS@HOST/DB.
    #[arg(long)]
    pub provenance: Option<String>,
    /// Print the final status as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `pool status` and `pool results`.
#[derive(Args)]
pub struct StatusArgs {
    /// Pool name.
    #[arg(long)]
    pub pool: String,
    /// The node's data plane.
    #[command(flatten)]
    pub conn: DataConn,
    /// JSON.
    #[arg(long)]
    pub json: bool,
}

/// `pool submit`.
#[derive(Args)]
pub struct SubmitArgs {
    /// Pool name.
    #[arg(long)]
    pub pool: String,
    /// The node's data plane.
    #[command(flatten)]
    pub conn: DataConn,
    /// Task key (idempotency key); with --count, the prefix of KEY-0, KEY-1, …
    #[arg(long)]
    pub key: String,
    /// Submit this many tasks.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// An echo task returning this text.
    #[arg(long, conflicts_with_all = ["sleep_ms", "argv"])]
    pub echo: Option<String>,
    /// A task that sleeps this long.
    #[arg(long, conflicts_with = "argv")]
    pub sleep_ms: Option<u64>,
    /// A task built into the worker: `ptycho.reconstruct` (args {"scan":
    /// DIR, "out": DIR, "iterations": N}) or `ptycho.train` (args {"scans":
    /// [DIR…], "out": DIR, "steps": N}).
    #[arg(long, conflicts_with_all = ["echo", "sleep_ms", "argv"], requires = "args")]
    pub builtin: Option<String>,
    /// The built-in task's arguments (JSON).
    #[arg(long)]
    pub args: Option<String>,
    /// A command task's time limit, ms.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// A command task: program and arguments.
    #[arg(last = true)]
    pub argv: Vec<String>,
}

/// `pool drain`.
#[derive(Args)]
pub struct DrainArgs {
    /// Site.
    pub site: String,
    /// Pool name.
    #[arg(long)]
    pub pool: String,
    /// The node's data plane.
    #[command(flatten)]
    pub conn: DataConn,
    /// Let the site take workers again.
    #[arg(long)]
    pub undo: bool,
}

/// `pool worker`.
#[derive(Args)]
pub struct WorkerArgs {
    /// Pool name.
    #[arg(long, env = "DIASPORA_POOL")]
    pub pool: String,
    /// This worker's id.
    #[arg(long, env = "DIASPORA_POOL_WORKER")]
    pub worker: String,
    /// QUIC data-plane address of the node.
    #[arg(long, env = "DIASPORA_POOL_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: SocketAddr,
    /// CA certificate to verify the node with.
    #[arg(long, env = "DIASPORA_POOL_CA", default_value = DEFAULT_CA)]
    pub ca: PathBuf,
    /// The worker's identity on a node that requires one: a client
    /// certificate, or a token in DIASPORA_TOKEN, which the pool passes on
    /// to the workers it starts (local processes and Slurm jobs inherit it).
    #[command(flatten)]
    pub creds: super::Credentials,
    /// Heartbeat period, ms.
    #[arg(long, env = "DIASPORA_POOL_HEARTBEAT_MS", default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Group session time-out, ms (the pool's heartbeat time-out).
    #[arg(long, env = "DIASPORA_POOL_SESSION_MS", default_value_t = 5000)]
    pub session_timeout_ms: u64,
    /// Exit when this process is no longer the worker's parent (set by a
    /// local pool, so its workers die with it).
    #[arg(long, env = "DIASPORA_POOL_PARENT")]
    pub parent: Option<u32>,
}

/// Runs a pool command.
pub async fn run(cmd: PoolCommand) -> Result<()> {
    match cmd {
        PoolCommand::Run(a) => run_pool(a).await,
        PoolCommand::Check { spec } => {
            let s = load(&spec)?;
            println!("{}", toml::to_string_pretty(&s)?);
            Ok(())
        }
        PoolCommand::Status(a) => {
            let client = super::client(&a.conn).await?;
            let s = pf::latest_status(&client, &a.pool).await?;
            client.close();
            let Some(s) = s else {
                bail!(
                    "pool '{}' has published no status (is `diaspora pool run` running?)",
                    a.pool
                );
            };
            super::print_report(&s, a.json, status_text)
        }
        PoolCommand::Results(a) => {
            let client = super::client(&a.conn).await?;
            let r = pf::read_results(&client, &a.pool).await?;
            client.close();
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for r in r {
                    println!(
                        "{:<24} {:<6} attempts {:<2} {:<12} {}",
                        r.key,
                        if r.ok { "ok" } else { "FAILED" },
                        r.attempts,
                        r.worker,
                        r.error.as_deref().unwrap_or(r.output.trim_end())
                    );
                }
            }
            Ok(())
        }
        PoolCommand::Submit(a) => submit(a).await,
        PoolCommand::Drain(a) => {
            let client = super::client(&a.conn).await?;
            let c = if a.undo {
                Control::UndrainSite {
                    site: a.site.clone(),
                }
            } else {
                Control::DrainSite {
                    site: a.site.clone(),
                }
            };
            pf::send_control(&client, &a.pool, &c).await?;
            client.close();
            println!(
                "{} site '{}' of pool '{}' (the pool acts on it within a round)",
                if a.undo { "undrained" } else { "draining" },
                a.site,
                a.pool
            );
            Ok(())
        }
        PoolCommand::Migrate {
            task,
            to,
            pool,
            conn,
        } => {
            let client = super::client(&conn).await?;
            pf::send_control(
                &client,
                &pool,
                &Control::Migrate {
                    key: task.clone(),
                    to: to.clone(),
                },
            )
            .await?;
            client.close();
            println!(
                "asked pool '{pool}' to move task '{task}' to site '{to}'; its events (task-migrated \
                 with rounds, bytes and pause, or migration-failed with the reason) follow on pool.{pool}.events"
            );
            Ok(())
        }
        PoolCommand::Worker(a) => worker(a).await,
    }
}

fn load(path: &std::path::Path) -> Result<PoolSpec> {
    PoolSpec::load(path).with_context(|| format!("in {}", path.display()))
}

fn status_text(s: &Status) -> String {
    let mut t = format!(
        "pool {}: backlog {}, results {}, failed {}, retries {}, duplicates dropped {}, workers launched {}, lost {}\n",
        s.pool, s.backlog, s.results, s.failed, s.retries, s.duplicates, s.launched, s.lost
    );
    t += "site             provider  reachable  active  idle  draining  min  max\n";
    for x in &s.sites {
        t += &format!(
            "{:<16} {:<9} {:<10} {:>6} {:>5} {:>9} {:>4} {:>4}{}\n",
            x.name,
            x.provider,
            if x.reachable { "yes" } else { "NO" },
            x.active,
            x.idle,
            x.draining,
            x.min,
            x.max,
            if x.drained { "  (drained)" } else { "" }
        );
    }
    t.trim_end().to_string()
}

async fn run_pool(a: RunArgs) -> Result<()> {
    let mut spec = load(&a.spec)?;
    // `diaspora` as the worker program means this very binary.
    if spec.worker.command.first().map(String::as_str) == Some("diaspora") {
        spec.worker.command[0] = std::env::current_exe()
            .context("locating this binary for the workers")?
            .display()
            .to_string();
    }
    super::check_ca(&a.conn.ca)?;
    let ca = std::fs::canonicalize(&a.conn.ca)
        .with_context(|| format!("resolving {}", a.conn.ca.display()))?;
    let mut admin = super::admin(&AdminConn {
        admin: a.admin,
        ca: ca.clone(),
        creds: a.conn.creds.clone(),
    })
    .await?;
    pf::ensure_topics((&mut admin).into(), &spec).await?;
    let client = Client::connect(
        DataConn {
            ca: ca.clone(),
            ..a.conn.clone()
        }
        .client_config(),
    )
    .await
    .with_context(|| format!("connecting to {}", a.conn.addr))?;
    if let Some(d) = &a.log_dir {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let opts = PoolOptions {
        tick: Duration::from_millis(a.tick_ms.max(10)),
        log_dir: a.log_dir.clone(),
        worker_env: pf::worker_env(a.conn.addr, &ca, &spec.heartbeat),
        predictions_topic: a.predictions_topic.clone(),
        serves: a.serves.clone(),
        provenance: a.provenance.clone(),
        ..Default::default()
    };
    eprintln!(
        "pool {}: {} site(s), {}..{} workers; Ctrl-C stops it and its workers",
        spec.name,
        spec.sites.len(),
        spec.scaling.min_total,
        spec.scaling.max_total
    );
    let providers = pf::providers_for(&spec);
    let stop = super::stop_on_signal()?;
    let status = pf::run_pool(
        client.clone(),
        spec,
        providers,
        opts,
        Arc::new(Mutex::new(ExternalDemand::default())),
        stop,
    )
    .await?;
    client.close();
    super::print_report(&status, a.json, status_text)
}

async fn submit(a: SubmitArgs) -> Result<()> {
    let kind = match (&a.builtin, &a.args) {
        (Some(name), Some(args)) => Some(TaskKind::Builtin {
            name: name.clone(),
            args: serde_json::from_str(args)
                .with_context(|| format!("--args {args:?} is not JSON"))?,
        }),
        _ => None,
    };
    let kind = match (kind, &a.echo, a.sleep_ms, a.argv.is_empty()) {
        (Some(k), ..) => k,
        (None, Some(d), _, _) => TaskKind::Echo { data: d.clone() },
        (None, None, Some(ms), _) => TaskKind::Sleep { ms },
        (None, None, None, false) => TaskKind::Command {
            argv: a.argv.clone(),
            timeout_ms: a.timeout_ms,
        },
        (None, None, None, true) => bail!(
            "say what the task does: -- PROGRAM ARGS…, --echo TEXT, --sleep-ms MS or --builtin NAME --args JSON"
        ),
    };
    if a.count == 0 {
        bail!("--count must be at least 1");
    }
    let tasks: Vec<Task> = (0..a.count)
        .map(|i| Task {
            key: if a.count == 1 {
                a.key.clone()
            } else {
                format!("{}-{i}", a.key)
            },
            kind: kind.clone(),
            inputs: vec![],
            attempt: 0,
            not_before_us: 0,
        })
        .collect();
    for t in &tasks {
        Task::parse(&diaspora_pool::messages::to_bytes(t)).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let client = super::client(&a.conn).await?;
    pf::submit(&client, &a.pool, &tasks).await?;
    client.close();
    println!("submitted {} task(s) to pool '{}'", tasks.len(), a.pool);
    Ok(())
}

async fn worker(a: WorkerArgs) -> Result<()> {
    super::check_ca(&a.ca)?;
    let mut config = ClientConfig::new(a.addr, &a.ca);
    config.identity = a.creds.identity();
    config.token = a.creds.token.clone();
    let client = Client::connect(config)
        .await
        .with_context(|| format!("worker {}: connecting to {}", a.worker, a.addr))?;
    let stop = super::stop_on_signal()?;
    let summary = pf::run_worker(
        client.clone(),
        WorkerOptions {
            pool: a.pool,
            worker: a.worker.clone(),
            heartbeat: Duration::from_millis(a.heartbeat_ms.max(10)),
            session_timeout: Duration::from_millis(a.session_timeout_ms.max(100)),
            skip_max: 100_000,
            parent_pid: a.parent,
            builtins: ptycho_builtins(),
        },
        stop,
    )
    .await?;
    client.close();
    eprintln!(
        "worker {}: ran {}, failed {}, skipped {}{}",
        a.worker,
        summary.ran,
        summary.failed,
        summary.skipped,
        if summary.drained { " (drained)" } else { "" }
    );
    Ok(())
}

/// The ptychography library's jobs as built-in task kinds of a worker.
fn ptycho_builtins() -> pf::Builtins {
    use diaspora_ptycho::workflow::{self, ReconstructOptions, TrainOptions};
    fn path(args: &serde_json::Value, key: &str) -> Result<PathBuf, String> {
        args.get(key)
            .and_then(|v| v.as_str())
            .map(PathBuf::from)
            .ok_or_else(|| format!("argument \"{key}\" (a path) is missing"))
    }
    fn count(args: &serde_json::Value, key: &str, default: usize) -> Result<usize, String> {
        match args.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| format!("argument \"{key}\" must be a whole number")),
        }
    }
    pf::Builtins::default()
        .with("ptycho.reconstruct", |args| {
            let scan = path(args, "scan")?;
            let out = path(args, "out")?;
            let o = ReconstructOptions {
                iterations: count(args, "iterations", 50)?,
                ..Default::default()
            };
            let r = workflow::reconstruct(&scan, &out, &o).map_err(|e| e.to_string())?;
            serde_json::to_string(&r).map_err(|e| e.to_string())
        })
        .with("ptycho.train", |args| {
            let scans: Vec<PathBuf> = args
                .get("scans")
                .and_then(|v| v.as_array())
                .ok_or("argument \"scans\" (a list of scan directories) is missing")?
                .iter()
                .map(|v| v.as_str().map(PathBuf::from).ok_or("scans must be paths"))
                .collect::<Result<_, _>>()?;
            let out = path(args, "out")?;
            let o = TrainOptions {
                steps: count(args, "steps", TrainOptions::default().steps)?,
                ..Default::default()
            };
            let t = workflow::train(&scans, &out, &o).map_err(|e| e.to_string())?;
            serde_json::to_string(&t).map_err(|e| e.to_string())
        })
}
