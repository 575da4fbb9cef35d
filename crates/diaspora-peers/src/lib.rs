//! # diaspora-peers — the fabric against NATS JetStream and Redis Streams
//!
//! `diaspora bench peers` (binary feature `peers`) runs one workload on
//! the diaspora fabric, on NATS JetStream and on Redis Streams, in the
//! same run, and reports them side by side.
//!
//! ## The workload (the same for every system)
//!
//! | | |
//! |---|---|
//! | items | 128 B × 2 000 000, 1 KiB × 500 000, 1 MiB × 2 000 (`--scale` multiplies the counts) |
//! | producer | one; every send gives an acknowledgement future; at most `min(5000, 64 MiB ÷ size)` unacknowledged ([`PeersConfig::window_items`]) |
//! | consumer | one, reading from the first item; asks for up to 4 MiB at once |
//! | throughput | items ÷ (last item received − first item sent) |
//! | latency | a second run paced at half of that system's throughput in the same round: send → receive, from a timestamp in the payload; the first 500 ms (at most half the items) are warm-up |
//! | rounds | each round runs every workload on every system, a fresh server each time; the systems' order rotates from round to round; medians with min–max |
//!
//! Every payload carries its sequence number, and the consumer checks that
//! the items arrive complete, in order and once each — a run that loses,
//! repeats or reorders an item fails instead of being reported.
//!
//! ## The systems
//!
//! | | diaspora | NATS | Redis |
//! |---|---|---|---|
//! | server | embedded [`Node`](diaspora_fabric::Node) or `diaspora serve` | `nats-server` (newest on PATH) | `redis-server` |
//! | storage | a one-partition topic | a file-storage stream, one subject | one stream key |
//! | fsync | every 100 ms | JetStream `sync_interval: 100ms` (nats-server ≥ 2.10; before, a fixed 2 min) | `appendfsync everysec` (AOF); no RDB |
//! | TLS | always (QUIC) | on (`--plain-peers`: off) | on (`--plain-peers`: off) |
//! | client | diaspora-fabric | async-nats | redis-rs |
//!
//! The report ends with a "what differs" table saying exactly this, with
//! the versions found. Certificates for NATS and Redis come from the
//! fabric's development CA ([`diaspora_fabric::tls::generate_dev_certs`]).
//!
//! Servers run as child processes of this one, each in a temporary
//! directory, on a free loopback port; they are stopped (and their
//! directories removed) on every path out of a run, a panic included. A
//! missing `nats-server` or `redis-server` is an error that says how to
//! install it (`./scripts/peers-install`); leave the system out with
//! `--systems` to run the others.
//!
//! What it does not do: several producers or consumers, partitioned
//! streams, replication (every server is one node), or a network between
//! client and server — everything runs on one machine over loopback, so
//! client and server compete for the same cores.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use diaspora_peers::{PeersConfig, System};
//! let config = PeersConfig {
//!     systems: vec![System::Diaspora, System::Redis],
//!     scale: 0.01,
//!     rounds: 1,
//!     ..PeersConfig::default()
//! };
//! let report = diaspora_peers::run(&config, &mut |line| eprintln!("{line}")).await?;
//! println!("{report}");
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod config;
mod diaspora;
mod nats;
mod process;
mod redis;
mod report;
mod workload;

use std::time::Duration;

use anyhow::{Context, Result};

pub use config::{format_size, parse_size, ConfigError, PeersConfig, System, Workload};
pub use diaspora_fabric::stats::Spread;
pub use report::{PeersReport, RoundSample, SystemInfo, SystemResult, WorkloadReport};
pub use workload::Latency;

use diaspora::{DiasporaBinary, DiasporaServer};
use nats::{NatsBinary, NatsServer};
use redis::{RedisBinary, RedisServer};
use workload::RunSpec;

/// The fsync interval every system is given where it can be set.
pub const FSYNC_INTERVAL: Duration = Duration::from_millis(100);

/// What was found before the first round: the programs, their versions,
/// and the certificates NATS and Redis use.
struct Setup {
    diaspora: Option<DiasporaBinary>,
    nats: Option<NatsBinary>,
    redis: Option<RedisBinary>,
    certs: Option<diaspora_fabric::tls::CertPaths>,
    _certs_dir: tempfile::TempDir,
}

impl Setup {
    async fn prepare(config: &PeersConfig) -> Result<Setup> {
        let wants = |s| config.systems.contains(&s);
        let diaspora = match (&config.diaspora_binary, wants(System::Diaspora)) {
            (Some(p), true) => Some(DiasporaBinary::find(p).await?),
            _ => None,
        };
        let nats = match wants(System::Nats) {
            true => Some(NatsBinary::find(config.nats_server.as_deref()).await?),
            false => None,
        };
        let redis = match wants(System::Redis) {
            true => Some(RedisBinary::find(config.redis_server.as_deref()).await?),
            false => None,
        };
        let certs_dir = tempfile::tempdir().context("temporary certificate directory")?;
        let certs = if config.plain_peers {
            None
        } else {
            Some(diaspora_fabric::tls::generate_dev_certs(
                certs_dir.path(),
                &[],
            )?)
        };
        Ok(Setup {
            diaspora,
            nats,
            redis,
            certs,
            _certs_dir: certs_dir,
        })
    }

    fn info(&self, system: System) -> SystemInfo {
        let tls = self.certs.is_some();
        let on_off = |on: bool| if on { "on" } else { "off" }.to_string();
        match system {
            System::Diaspora => SystemInfo {
                system,
                server: match &self.diaspora {
                    Some(b) => format!("{} (diaspora serve)", b.version_text),
                    None => format!("diaspora {} (embedded node)", env!("CARGO_PKG_VERSION")),
                },
                program: self
                    .diaspora
                    .as_ref()
                    .map(|b| b.program.display().to_string()),
                tls: "on (QUIC, rustls/ring)".into(),
                durability: format!(
                    "log segments, fsync every {} ms",
                    FSYNC_INTERVAL.as_millis()
                ),
                processes: match &self.diaspora {
                    Some(_) => "2: diaspora serve + the bench".into(),
                    None => "1: node, producer and consumer in the bench".into(),
                },
                client: diaspora::CLIENT.into(),
            },
            System::Nats => {
                let b = self.nats.as_ref().expect("nats was found");
                let (major, minor, patch) = b.version;
                SystemInfo {
                    system,
                    server: format!("nats-server {major}.{minor}.{patch}"),
                    program: Some(b.program.display().to_string()),
                    tls: on_off(tls),
                    durability: if b.has_sync_interval() {
                        format!(
                            "JetStream file store, sync_interval {} ms",
                            FSYNC_INTERVAL.as_millis()
                        )
                    } else {
                        "JetStream file store, fsync every 2 min (server < 2.10 has no sync_interval)"
                            .into()
                    },
                    processes: "2: nats-server + the bench".into(),
                    client: nats::CLIENT.into(),
                }
            }
            System::Redis => {
                let b = self.redis.as_ref().expect("redis was found");
                SystemInfo {
                    system,
                    server: format!("redis-server {}", b.version()),
                    program: Some(b.program.display().to_string()),
                    tls: on_off(tls),
                    durability: "AOF, appendfsync everysec (1 s); no RDB".into(),
                    processes: "2: redis-server + the bench".into(),
                    client: redis::CLIENT.into(),
                }
            }
        }
    }
}

/// A server of one system, started for one round of one workload.
enum Server {
    /// Boxed: an embedded node is large.
    Diaspora(Box<DiasporaServer>),
    Nats(NatsServer),
    Redis(RedisServer),
}

impl Server {
    async fn start(setup: &Setup, system: System) -> Result<Server> {
        Ok(match system {
            System::Diaspora => Server::Diaspora(Box::new(
                DiasporaServer::start(setup.diaspora.as_ref(), FSYNC_INTERVAL).await?,
            )),
            System::Nats => Server::Nats(
                NatsServer::start(
                    setup.nats.as_ref().expect("nats was found"),
                    setup.certs.as_ref(),
                    FSYNC_INTERVAL,
                )
                .await?,
            ),
            System::Redis => Server::Redis(
                RedisServer::start(
                    setup.redis.as_ref().expect("redis was found"),
                    setup.certs.as_ref(),
                )
                .await?,
            ),
        })
    }

    async fn run(&self, spec: &RunSpec, config: &PeersConfig) -> Result<workload::RunResult> {
        match self {
            Server::Diaspora(s) => s.run(spec, config.fetch_bytes_max).await,
            Server::Nats(s) => s.run(spec).await,
            Server::Redis(s) => s.run(spec).await,
        }
    }

    async fn stop(self) {
        match self {
            Server::Diaspora(s) => s.stop().await,
            Server::Nats(s) => s.stop(),
            Server::Redis(s) => s.stop(),
        }
    }
}

/// One round of one workload on one system: a fresh server, a run as
/// fast as the window allows, a run paced at half that, the server
/// stopped.
async fn round_of(
    setup: &Setup,
    config: &PeersConfig,
    system: System,
    workload: &Workload,
) -> Result<RoundSample> {
    let items = workload.scaled_items(config.scale);
    let size = workload.size_bytes;
    let spec = |stream: &str, rate: Option<f64>| RunSpec {
        stream: stream.to_string(),
        size,
        items,
        rate,
        window: config.window_items(size),
        fetch_items: config.fetch_items(size),
        warmup: config.warmup,
        stall_timeout: config.stall_timeout,
    };
    let server = Server::start(setup, system).await?;
    let result = async {
        let max = server
            .run(&spec("bench_max", None), config)
            .await
            .context("the run at full speed")?;
        let items_per_s = items as f64 / max.elapsed.as_secs_f64();
        let rate = items_per_s / 2.0;
        let paced = server
            .run(&spec("bench_paced", Some(rate)), config)
            .await
            .with_context(|| format!("the run paced at {rate:.0} items/s"))?;
        let latency = paced.latency.expect("a paced run records latency");
        anyhow::Ok(RoundSample {
            items_per_s,
            mb_per_s: items_per_s * size as f64 / 1e6,
            elapsed_s: max.elapsed.as_secs_f64(),
            paced_items_per_s: rate,
            latency,
            schedule_lag_ms_max: paced.schedule_lag_ms_max,
        })
    }
    .await;
    server.stop().await;
    result
}

/// Runs the comparison; `progress` gets a line after every round of a
/// workload on a system.
pub async fn run(config: &PeersConfig, progress: &mut dyn FnMut(&str)) -> Result<PeersReport> {
    config.validate()?;
    let setup = Setup::prepare(config).await?;
    let systems = &config.systems;
    let mut samples: Vec<Vec<Vec<RoundSample>>> =
        vec![vec![Vec::new(); systems.len()]; config.workloads.len()];
    for round in 0..config.rounds as usize {
        for (w, workload) in config.workloads.iter().enumerate() {
            for k in 0..systems.len() {
                let s = (k + round) % systems.len();
                let system = systems[s];
                let items = workload.scaled_items(config.scale);
                let sample = round_of(&setup, config, system, workload)
                    .await
                    .with_context(|| {
                        format!(
                            "{system}, {} × {items}, round {}",
                            format_size(workload.size_bytes),
                            round + 1
                        )
                    })?;
                progress(&format!(
                    "round {}/{} {} × {items} {system:<8} {:>10.0} items/s {:>8.1} MB/s; paced {:.0}/s p50 {} µs p99 {} µs",
                    round + 1,
                    config.rounds,
                    format_size(workload.size_bytes),
                    sample.items_per_s,
                    sample.mb_per_s,
                    sample.paced_items_per_s,
                    sample.latency.p50_us,
                    sample.latency.p99_us,
                ));
                samples[w][s].push(sample);
            }
        }
    }
    Ok(report::build(
        config,
        systems.iter().map(|s| setup.info(*s)).collect(),
        samples,
    ))
}
