//! `diaspora trigger …`: actions that run on matching events.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use diaspora_fabric::{ensure_topic, Client, Ensured, TopicSettings};
use diaspora_trigger::runner::{statuses, RunOptions, Runner};
use diaspora_trigger::spec::{ActionSpec, TriggerSpec, SPEC_MAX_BYTES, STATUS_TOPIC};

use super::{admin, check_ca, stop_on_signal, AdminConn, DataConn};

/// How many of its newest messages per partition `list` and `status` read
/// back from the status topic.
const STATUS_WINDOW: u64 = 5000;

/// The subcommands of `diaspora trigger`.
#[derive(Subcommand)]
pub enum TriggerCommand {
    /// Check a trigger spec (TOML) and print it with every default filled
    /// in; a bad filter is shown with the column of what is wrong.
    Check {
        /// The spec file.
        spec: PathBuf,
    },
    /// Onboard a trigger (admin plane): create its dead-letter topic, the
    /// status topic (diaspora.triggers) and a publish action's topic, where
    /// they do not exist. A fabric source topic must exist (a Kafka one is
    /// looked up when the trigger runs).
    Create {
        /// The spec file.
        #[arg(long)]
        spec: PathBuf,
        /// Partitions of the topics it creates.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// The node's admin plane.
        #[command(flatten)]
        conn: AdminConn,
    },
    /// Run a trigger against a node until Ctrl-C (or --max-events,
    /// --idle-s): read the source (a fabric topic, or a Kafka topic with
    /// [source.kafka]) as the consumer group trigger.NAME, run
    /// the action on every event the filter matches (retried with back-off;
    /// events that keep failing go to the dead-letter topic), commit the
    /// position after each. Prints each action run as a JSON line. A
    /// restarted trigger resumes from its committed position: the event in
    /// hand when it was killed runs again, with the same idempotency key.
    Run(RunArgs),
    /// List triggers with their state and counters (from the status topic).
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// The node.
        #[command(flatten)]
        conn: DataConn,
    },
    /// One trigger's last status: state, counters, committed position,
    /// last error.
    Status {
        /// The trigger's name.
        name: String,
        /// The node.
        #[command(flatten)]
        conn: DataConn,
    },
}

/// Arguments of `diaspora trigger run`.
#[derive(Args)]
pub struct RunArgs {
    /// The spec file (TOML; see `diaspora trigger check`).
    #[arg(long)]
    spec: PathBuf,
    /// The node.
    #[command(flatten)]
    conn: DataConn,
    /// Stop after this many source events, matching or not (0 = no limit).
    #[arg(long, default_value_t = 0)]
    max_events: u64,
    /// Stop after this many seconds without a source event (0 = never).
    #[arg(long, default_value_t = 0)]
    idle_s: u64,
    /// Publish the trigger's status this often, ms.
    #[arg(long, default_value_t = 2000)]
    status_interval_ms: u64,
    /// Print a JSON summary at the end instead of a line of text.
    #[arg(long)]
    json: bool,
}

/// Reads and checks a spec file.
pub fn load(path: &Path) -> Result<TriggerSpec> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > SPEC_MAX_BYTES as u64 {
        bail!(
            "{}: {len} bytes, more than the {SPEC_MAX_BYTES} a trigger spec may have",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    TriggerSpec::parse(&text).with_context(|| format!("{}", path.display()))
}

/// Runs a `diaspora trigger` command.
pub async fn run(cmd: TriggerCommand) -> Result<()> {
    match cmd {
        TriggerCommand::Check { spec } => {
            let s = load(&spec)?;
            println!("{}", toml::to_string_pretty(&s)?);
            Ok(())
        }
        TriggerCommand::Create {
            spec,
            partitions,
            conn,
        } => {
            let s = load(&spec)?;
            let mut a = admin(&conn).await?;
            // A Kafka source's topic is on the Kafka service, checked when
            // the trigger runs.
            if s.source.kind == diaspora_trigger::spec::SourceKind::Fabric {
                a.describe_topic(&s.source.topic).await.with_context(|| {
                    format!(
                        "the source topic {} (create it first: diaspora topic create {})",
                        s.source.topic, s.source.topic
                    )
                })?;
            }
            let mut topics = vec![s.dead_letter_topic(), STATUS_TOPIC.to_string()];
            if let ActionSpec::Publish { topic, .. } = &s.action {
                topics.push(topic.clone());
            }
            for t in topics {
                let settings =
                    TopicSettings::with_partitions(if t == STATUS_TOPIC { 1 } else { partitions });
                match ensure_topic(&mut a, &t, &settings).await {
                    Ok(Ensured::Created) => println!("created topic {t}"),
                    Ok(_) => println!("topic {t} exists"),
                    Err(e) => return Err(e).with_context(|| format!("creating topic {t}")),
                }
            }
            println!(
                "trigger {} is ready: diaspora trigger run --spec {}",
                s.name,
                spec.display()
            );
            Ok(())
        }
        TriggerCommand::Run(a) => run_trigger(a).await,
        TriggerCommand::List { json, conn } => {
            let all = statuses(&connect(&conn).await?, STATUS_WINDOW).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("no trigger has published a status on {STATUS_TOPIC}");
            } else {
                for s in all.values() {
                    println!("{}", s.line());
                }
            }
            Ok(())
        }
        TriggerCommand::Status { name, conn } => {
            let all = statuses(&connect(&conn).await?, STATUS_WINDOW).await?;
            match all.get(&name) {
                Some(s) => {
                    println!("{}", serde_json::to_string_pretty(s)?);
                    Ok(())
                }
                None => bail!(
                    "no status of trigger {name} on {STATUS_TOPIC} (known: {})",
                    if all.is_empty() {
                        "none".to_string()
                    } else {
                        all.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                ),
            }
        }
    }
}

async fn connect(conn: &DataConn) -> Result<Client> {
    check_ca(&conn.ca)?;
    Client::connect(conn.client_config())
        .await
        .with_context(|| format!("connecting to {}", conn.addr))
}

async fn run_trigger(a: RunArgs) -> Result<()> {
    let spec = load(&a.spec)?;
    let name = spec.name.clone();
    let client = connect(&a.conn).await?;
    let runner = Runner::start(spec, &client)
        .await
        .with_context(|| format!("starting trigger {name}"))?;
    let stop = stop_on_signal()?;
    let opts = RunOptions {
        max_events: (a.max_events > 0).then_some(a.max_events),
        idle: (a.idle_s > 0).then(|| Duration::from_secs(a.idle_s)),
        status_interval: Duration::from_millis(a.status_interval_ms.max(100)),
        ..RunOptions::default()
    };
    let stats = runner
        .run(stop, opts, |r| {
            println!(
                "{}",
                serde_json::to_string(r).expect("a run record serialises")
            );
        })
        .await
        .with_context(|| format!("trigger {name}"))?;
    client.close();
    if a.json {
        eprintln!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        eprintln!(
            "trigger {name}: {} events seen, {} matched, {} succeeded, {} dead-lettered, {} retries",
            stats.seen, stats.matched, stats.succeeded, stats.dead_lettered, stats.retries
        );
    }
    Ok(())
}
