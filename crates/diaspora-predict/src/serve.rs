//! The monitor runtime on the fabric (feature `fabric`): what
//! `diaspora predict serve` runs.
//!
//! Each monitor (a [`MonitorSpec`]) subscribes to the metric events on its
//! source topic, feeds the samples it wants to its [`MonitorCore`]
//! (forecast, learn online, raise and clear alerts) and publishes the
//! prediction and alert events the core returns on its output topic. The
//! model is checkpointed every `model.save_every_s` and on the way out.
//!
//! - **Stopping.** [`run`] takes a shutdown future (e.g. SIGTERM or
//!   Ctrl-C); it is checked after each round over the monitors, so the
//!   event in hand is finished first. A run also stops after
//!   [`ServeConfig::max_s`], or after [`ServeConfig::idle_s`] without a
//!   metric event.
//! - **Acknowledgements.** Every published event's acknowledgement is
//!   awaited in a task of its own (events are few); a refusal is reported
//!   ([`Progress::Unacknowledged`]) and counted, not fatal, and the count
//!   is in the [`ServeReport`].
//! - **Blocking work.** The model's forward and training steps and the
//!   checkpoints run in `block_in_place`: call [`run`] on a multi-threaded
//!   tokio runtime.
//!
//! What this does not do: it does not create the metric topic, and it
//! creates an absent output topic only through the admin plane
//! ([`ServeConfig::admin`]).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diaspora_fabric::{Client, ClientConfig, FabricError, Producer, ProducerConfig, StartFrom};
use diaspora_telemetry::publish::TopicCreation;

use crate::forecast;
use crate::monitor::{encode_event, MonitorCore, MonitorSpec, MonitorStats};
use crate::PredictError;

/// What a monitor run reads, writes and when it stops.
pub struct ServeConfig {
    /// The node's data plane.
    pub node: ClientConfig,
    /// The node's admin plane, to create an absent output topic (without
    /// it the output topics must exist).
    pub admin: Option<SocketAddr>,
    /// The monitor files (TOML).
    pub monitors: Vec<PathBuf>,
    /// Where the metric topics are read from: only new events
    /// ([`StartFrom::Latest`]) or from their start.
    pub start: StartFrom,
    /// Stop after this many seconds (0 = only at shutdown).
    pub max_s: f64,
    /// Stop after this many seconds without a metric event (0 = never).
    pub idle_s: f64,
}

/// What a run tells its caller as it goes.
pub enum Progress<'a> {
    /// A monitor is reading its source topic.
    Started(&'a MonitorSpec),
    /// A monitor published an event (as encoded on its output topic).
    Published {
        /// The monitor.
        monitor: &'a MonitorSpec,
        /// The event.
        event: &'a [u8],
    },
    /// The node did not acknowledge an event.
    Unacknowledged {
        /// The monitor's name.
        monitor: &'a str,
        /// Why.
        error: &'a FabricError,
    },
    /// A monitor stopped, its model saved.
    Stopped {
        /// The monitor.
        monitor: &'a MonitorSpec,
        /// What it did.
        stats: MonitorStats,
    },
    /// Every acknowledgement is in.
    Finished {
        /// Events acknowledged.
        acked: u64,
        /// Events not acknowledged.
        failed: u64,
    },
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct ServeReport {
    /// Each monitor's name and figures, in the order of the files.
    pub monitors: Vec<(String, MonitorStats)>,
    /// Events acknowledged by the node.
    pub acked: u64,
    /// Events not acknowledged (each reported as it failed).
    pub failed: u64,
}

/// Adds what the runtime was doing to a fabric or telemetry error.
fn context<E>(what: impl FnOnce() -> String) -> impl FnOnce(E) -> PredictError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| PredictError::Runtime {
        context: what(),
        source: Box::new(e),
    }
}

/// One monitor and its connections.
struct Running {
    core: MonitorCore,
    producer: Producer,
    stream: diaspora_telemetry::publish::MetricStream,
    saved: Instant,
}

/// Saves a monitor's model where its spec says, if it says.
fn save(core: &MonitorCore) -> Result<(), PredictError> {
    match &core.spec().model.save_to {
        Some(p) => core.model().save(p),
        None => Ok(()),
    }
}

/// Runs the monitors until `shutdown` completes (or the configured limits),
/// saving their models on the way out.
pub async fn run(
    config: &ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<ServeReport, PredictError> {
    let addr = config.node.addr;
    let client = Client::connect(config.node.clone())
        .await
        .map_err(context(|| format!("connecting to {addr}")))?;
    let mut monitors = Vec::new();
    for path in &config.monitors {
        let spec = MonitorSpec::load(path)?;
        let device = forecast::device(&spec.model.device)?;
        let core = tokio::task::block_in_place(|| MonitorCore::new(spec.clone(), device))?;
        let how = match config.admin {
            Some(addr) => TopicCreation::Admin(addr),
            None => TopicCreation::MustExist,
        };
        diaspora_telemetry::publish::ensure_topic(&client, &spec.output.topic, &how)
            .await
            .map_err(context(|| {
                format!(
                    "monitor {}: output topic {:?} (give --admin to create it)",
                    spec.name, spec.output.topic
                )
            }))?;
        let producer = Producer::new(&client, ProducerConfig::new(spec.output.topic.clone()))
            .await
            .map_err(context(|| format!("monitor {}: producer", spec.name)))?;
        let stream = diaspora_telemetry::subscribe(&client, &spec.source.topic, config.start)
            .await
            .map_err(context(|| {
                format!(
                    "monitor {}: metric topic {:?}",
                    spec.name, spec.source.topic
                )
            }))?;
        progress(Progress::Started(&spec));
        monitors.push(Running {
            core,
            producer,
            stream,
            saved: Instant::now(),
        });
    }
    // The shutdown future is watched by a task of its own, so the loop
    // finishes the event in hand first.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let t0 = Instant::now();
    let mut last_event = Instant::now();
    let acked = Arc::new(AtomicU64::new(0));
    let mut failed = 0u64;
    let mut deliveries = tokio::task::JoinSet::new();
    let mut count = |outcome: Result<Result<(), (String, FabricError)>, tokio::task::JoinError>,
                     progress: &mut (dyn FnMut(Progress<'_>) + Send)| {
        if let Ok(Err((monitor, error))) = outcome {
            progress(Progress::Unacknowledged {
                monitor: &monitor,
                error: &error,
            });
            failed += 1;
        }
    };
    loop {
        if config.max_s > 0.0 && t0.elapsed().as_secs_f64() >= config.max_s {
            break;
        }
        if config.idle_s > 0.0 && last_event.elapsed().as_secs_f64() >= config.idle_s {
            break;
        }
        let mut got = false;
        for m in monitors.iter_mut() {
            let ev = m.stream.next(Duration::from_millis(100)).await?;
            let Some(ev) = ev else { continue };
            got = true;
            let core = &mut m.core;
            let mut out = Vec::new();
            tokio::task::block_in_place(|| -> Result<(), PredictError> {
                for s in &ev.samples {
                    if core.wants(&s.name, &s.labels) {
                        out.extend(core.observe(&s.labels, s.value, ev.t_us)?);
                    }
                }
                Ok(())
            })?;
            for e in out {
                let bytes = encode_event(&e);
                progress(Progress::Published {
                    monitor: core.spec(),
                    event: &bytes,
                });
                let delivery = m
                    .producer
                    .send(diaspora_fabric::item::payload_item(bytes.into()))
                    .await?;
                // The outcome is counted when the node answers (events are
                // few: a task each is cheap).
                let acked = acked.clone();
                let name = core.spec().name.clone();
                deliveries.spawn(async move {
                    match delivery.await {
                        Ok(_) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        }
                        Err(e) => Err((name, e)),
                    }
                });
                while let Some(outcome) = deliveries.try_join_next() {
                    count(outcome, progress);
                }
            }
            let every = core.spec().model.save_every_s;
            if every > 0.0 && m.saved.elapsed().as_secs_f64() >= every {
                tokio::task::block_in_place(|| save(core))?;
                m.saved = Instant::now();
            }
        }
        if got {
            last_event = Instant::now();
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    watcher.abort();
    let mut report = ServeReport::default();
    let mut closed = Ok(());
    for m in monitors {
        if let Err(e) = m.producer.close().await {
            closed = Err(e);
        }
        m.stream.close().await;
        tokio::task::block_in_place(|| save(&m.core))?;
        let stats = m.core.stats();
        progress(Progress::Stopped {
            monitor: m.core.spec(),
            stats,
        });
        report.monitors.push((m.core.spec().name.clone(), stats));
    }
    while let Some(outcome) = deliveries.join_next().await {
        count(outcome, progress);
    }
    report.acked = acked.load(Ordering::Relaxed);
    report.failed = failed;
    progress(Progress::Finished {
        acked: report.acked,
        failed: report.failed,
    });
    closed?;
    Ok(report)
}
