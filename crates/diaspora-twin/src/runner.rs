//! Runs a [`Scenario`]: every host is a real process of the `diaspora`
//! binary with its own data directory and log; links are [`Relay`]s in this
//! process; faults are applied on a timeline; at the end the hosts' records
//! are analysed and the assertions checked.

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::analysis::{self, AckRecord, Analysis, ConsumeRecord};
use crate::report::{Check, FaultWindow};
use crate::scenario::{FaultKind, Scenario};
use crate::{LinkParams, Relay, RelayConfig};

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `diaspora` binary every host runs.
    pub binary: PathBuf,
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// Multiplies every time in the scenario (e.g. 0.2 for CI).
    pub duration_scale: f64,
    /// Where hosts keep their data directories, logs and records.
    pub work_dir: PathBuf,
    /// Sample the links' metrics (see [`crate::metrics`]); `None`: no sampling.
    pub metrics: Option<MetricsOptions>,
}

/// Where the twin's link metrics go.
#[derive(Debug, Clone)]
pub struct MetricsOptions {
    /// Sampling interval.
    pub interval: Duration,
    /// Append one JSON metric event per line to this file.
    pub out: Option<PathBuf>,
    /// Publish each event as an item on this topic of this scenario node
    /// (created if absent; 1 partition), through `diaspora produce`.
    pub publish: Option<(String, String)>,
}

/// A link's saturation state (see `MetricsSink::poll`).
#[derive(Default)]
struct Saturation {
    inside: bool,
    over: u64,
    under: u64,
    outside: u64,
    onsets: Vec<f64>,
}

/// The sampler and its outputs.
struct MetricsSink {
    sampler: crate::metrics::LinkSampler,
    /// Per link: the saturation episodes so far.
    saturation: HashMap<String, Saturation>,
    out: Option<std::io::BufWriter<File>>,
    producer: Option<Child>,
}

impl MetricsSink {
    fn poll(&mut self, relays: &HashMap<String, Relay>) {
        use std::io::Write;
        let Some(ev) = self.sampler.poll(relays) else {
            return;
        };
        // Saturation episodes, with hysteresis: one starts at the first of
        // two samples in a row at or over 0.95, after 10 s outside an
        // episode; it ends once the utilisation stays under 0.85 for 5 s.
        let per_s = 1000 / ev.interval_ms.max(1);
        let (quiet, clear) = ((10 * per_s).max(1), (5 * per_s).max(1));
        let elapsed = ev
            .samples
            .iter()
            .find(|x| x.name == "twin.elapsed_s")
            .map_or(0.0, |x| x.value);
        for x in ev.samples.iter().filter(|x| x.name == "link.utilisation") {
            let link = x.labels.get("link").cloned().unwrap_or_default();
            let st = self.saturation.entry(link).or_default();
            if st.inside {
                st.under = if x.value < 0.85 { st.under + 1 } else { 0 };
                if st.under >= clear {
                    (st.inside, st.under, st.outside, st.over) = (false, 0, 0, 0);
                }
            } else if x.value >= 0.95 {
                st.over += 1;
                if st.over == 2 {
                    if st.outside >= quiet {
                        st.onsets.push(elapsed - ev.interval_ms as f64 / 1e3);
                    }
                    (st.inside, st.under) = (true, 0);
                }
            } else {
                st.outside += st.over + 1;
                st.over = 0;
            }
        }
        let mut line = diaspora_telemetry::encode_event(&ev);
        line.push(b'\n');
        if let Some(f) = &mut self.out {
            if let Err(e) = f.write_all(&line).and_then(|_| f.flush()) {
                tracing::warn!(error = %e, "twin metrics: cannot write; stopping the file");
                self.out = None;
            }
        }
        if let Some(stdin) = self.producer.as_mut().and_then(|p| p.stdin.as_mut()) {
            if let Err(e) = stdin.write_all(&line).and_then(|_| stdin.flush()) {
                tracing::warn!(error = %e, "twin metrics: the publisher went away");
                self.producer = None;
            }
        }
    }

    /// Sleeps until the next sample or `max`, whichever is sooner.
    async fn sleep(sink: &Option<MetricsSink>, max: Duration) {
        let until = Instant::now() + max;
        let until = sink
            .as_ref()
            .map_or(until, |s| s.sampler.next_due().min(until));
        tokio::time::sleep_until(until).await;
    }

    fn finish(mut self) {
        if let Some(mut p) = self.producer.take() {
            drop(p.stdin.take());
            let _ = p.wait();
        }
    }
}

/// A fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// Start, seconds from the run's start.
    pub start_s: f64,
    /// End, seconds from the run's start.
    pub end_s: f64,
    /// What.
    pub label: String,
}

/// An assertion and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRecord {
    /// What was asserted.
    pub what: String,
    /// The measured value.
    pub measured: String,
    /// Whether it held.
    pub passed: bool,
}

/// The results of a run (`diaspora twin run --json`).
#[derive(Debug, Clone, Serialize)]
pub struct RunResults {
    /// Scenario name.
    pub scenario: String,
    /// Seed used.
    pub seed: u64,
    /// Duration scale used.
    pub duration_scale: f64,
    /// Every assertion held.
    pub passed: bool,
    /// Items the producers were asked to produce.
    pub produced: u64,
    /// Acked, consumed, lost, duplicated, latency percentiles and the
    /// per-second timeline (flattened into the JSON).
    #[serde(flatten)]
    pub figures: Analysis,
    /// Longest recovery after a fault, seconds.
    pub recovery_s: f64,
    /// Slowest catch-up after an outage: items received during the
    /// recovery per second, over the producers' rate (none without an outage
    /// or when nothing was behind).
    pub catchup_ratio: Option<f64>,
    /// Per topic: figures of its producers and consumers.
    pub topics: std::collections::BTreeMap<String, TopicFigures>,
    /// Assertions.
    pub checks: Vec<CheckRecord>,
    /// Faults applied.
    pub faults: Vec<FaultRecord>,
    /// What each link's relay did: packets and bytes forwarded and dropped,
    /// per direction and reason.
    pub links: std::collections::BTreeMap<String, crate::RelayStats>,
    /// Where the hosts' data, logs and records are.
    pub work_dir: PathBuf,
    /// Per link, when its measured utilisation reached saturation
    /// (`link.utilisation` ≥ 0.95 for two samples in a row, after 10 s
    /// outside a saturation episode; an episode ends after 5 s under 0.85),
    /// seconds from the start (only with metrics sampling).
    pub saturated_s: std::collections::BTreeMap<String, Vec<f64>>,
    /// Per monitor host, the events it published.
    pub monitors: std::collections::BTreeMap<String, MonitorFigures>,
}

/// What a monitor host published.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MonitorFigures {
    /// Prediction events.
    pub predictions: u64,
    /// Alert events.
    pub alerts: u64,
    /// Times of the prediction events (their samples), seconds from the start.
    pub prediction_s: Vec<f64>,
    /// Each prediction's forecast lead time, seconds.
    pub prediction_lead_s: Vec<f64>,
    /// Each prediction's confidence.
    pub prediction_confidence: Vec<f64>,
    /// Times of the alert events, seconds from the start.
    pub alert_s: Vec<f64>,
}

impl RunResults {
    /// Fault windows for the report.
    pub fn fault_windows(&self) -> Vec<FaultWindow> {
        self.faults
            .iter()
            .map(|f| FaultWindow {
                start_s: f.start_s,
                end_s: f.end_s,
                label: f.label.clone(),
            })
            .collect()
    }

    /// Checks for the report.
    pub fn report_checks(&self) -> Vec<Check> {
        self.checks
            .iter()
            .map(|c| Check {
                what: c.what.clone(),
                measured: c.measured.clone(),
                passed: c.passed,
            })
            .collect()
    }
}

struct Proc {
    name: String,
    args: Vec<String>,
    stdout: Option<PathBuf>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn new(name: &str, dir: &Path, args: Vec<String>, stdout: Option<PathBuf>) -> Proc {
        Proc {
            name: name.to_string(),
            args,
            stdout,
            log: dir.join("log.txt"),
            child: None,
        }
    }

    fn spawn(&mut self, binary: &Path) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let stdout = match &self.stdout {
            Some(p) => Stdio::from(
                File::options()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| format!("{}: {e}", p.display()))?,
            ),
            None => Stdio::null(),
        };
        let child = Command::new(binary)
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("start host '{}': {e}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on a pid we spawned and have not reaped.
            unsafe {
                libc::kill(c.id() as libc::pid_t, sig);
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    async fn stop(&mut self, grace: Duration) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while self.child.is_some() && self.exited().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
        let port = udp.local_addr().expect("local address").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

struct NodeAddrs {
    data: SocketAddr,
    admin: SocketAddr,
    ca: PathBuf,
}

async fn wait_serving(p: &Proc, times: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if p.log_text().matches("diaspora node serving").count() >= times {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "node '{}' did not start within 30 s; its log:\n{}",
        p.name,
        p.log_text()
    ))
}

/// Complete lines of `path` that do not contain `except`.
fn count_lines_without(path: &Path, except: &str) -> u64 {
    std::fs::read_to_string(path)
        .map(|t| {
            t.split_inclusive('\n')
                .filter(|l| l.ends_with('\n') && !l.contains(except))
                .count() as u64
        })
        .unwrap_or(0)
}

/// Writes a host's inline QoS policy to `dir/policy.toml`; a relative
/// `buffer.spill_dir` is taken relative to the host's directory.
fn write_policy(dir: &Path, policy: &toml::Table) -> Result<PathBuf, String> {
    let mut policy = policy.clone();
    if let Some(toml::Value::Table(b)) = policy.get_mut("buffer") {
        if let Some(toml::Value::String(d)) = b.get_mut("spill_dir") {
            if Path::new(d.as_str()).is_relative() {
                *d = dir.join(&*d).display().to_string();
            }
        }
    }
    let path = dir.join("policy.toml");
    let text = toml::to_string(&policy).map_err(|e| format!("policy: {e}"))?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// What a QoS producer printed at the end (`diaspora stream produce --json`).
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize)]
pub struct QosProducerSummary {
    /// Items offered.
    #[serde(default)]
    pub items: u64,
    /// Items accepted.
    #[serde(default)]
    pub accepted: u64,
    /// Items acknowledged.
    #[serde(default)]
    pub acked: u64,
    /// Items shed.
    #[serde(default)]
    pub shed: u64,
    /// Items reduced away.
    #[serde(default)]
    pub reduced_away: u64,
    /// Items spilled to disk at admission.
    #[serde(default)]
    pub spilled: u64,
    /// Memory-tier high-water mark, bytes.
    #[serde(default)]
    pub memory_high_water: u64,
    /// Memory-tier cap, bytes.
    #[serde(default)]
    pub memory_bytes_max: u64,
    /// Spill-tier high-water mark, bytes.
    #[serde(default)]
    pub spill_high_water: u64,
    /// Peak resident memory of the process, KiB.
    #[serde(default)]
    pub rss_max_kb: Option<u64>,
    /// Target rate, items/s.
    #[serde(default)]
    pub rate_target: f64,
    /// Achieved rate while producing, items/s.
    #[serde(default)]
    pub rate_achieved: f64,
    /// Largest number of reduction stages engaged.
    #[serde(default)]
    pub level_max: u64,
    /// Controller checks that found the stream congested.
    #[serde(default)]
    pub congested_checks: u64,
}

/// Figures of one topic's hosts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TopicFigures {
    /// Items acknowledged.
    pub acked: u64,
    /// Deliveries.
    pub consumed: u64,
    /// Acknowledged items never delivered.
    pub lost: u64,
    /// Reduced away by design.
    pub reduced_away: u64,
    /// Shed by policy.
    pub shed: u64,
    /// Deliveries by quality.
    pub quality_mix: std::collections::BTreeMap<String, u64>,
    /// p50 latency, µs.
    pub latency_us_p50: u64,
    /// p99 latency, µs.
    pub latency_us_p99: u64,
    /// QoS producers' summaries, by host.
    pub producers: std::collections::BTreeMap<String, QosProducerSummary>,
}

enum Action {
    Link {
        link: String,
        up: LinkParams,
        down: LinkParams,
    },
    Kill(String),
    Restart(String),
    Stop(String),
    Cont(String),
}

/// Turns the fault schedule into timed actions and report windows.
fn plan(
    s: &Scenario,
    base: &HashMap<String, (LinkParams, LinkParams)>,
) -> (Vec<(f64, Action)>, Vec<FaultRecord>) {
    let mut actions = Vec::new();
    let mut windows = Vec::new();
    let scaled = |p: &LinkParams, f: f64| {
        let mut p = p.clone();
        p.bandwidth_bps = p.bandwidth_bps.map(|b| ((b as f64 * f) as u64).max(8_000));
        p
    };
    for f in &s.faults {
        let at = f.at_s;
        match &f.kind {
            FaultKind::Outage { link, duration_s } => {
                let (up, down) = base[link].clone();
                let (mut bu, mut bd) = (up.clone(), down.clone());
                bu.blackhole = true;
                bd.blackhole = true;
                actions.push((
                    at,
                    Action::Link {
                        link: link.clone(),
                        up: bu,
                        down: bd,
                    },
                ));
                actions.push((
                    at + duration_s,
                    Action::Link {
                        link: link.clone(),
                        up,
                        down,
                    },
                ));
                windows.push(FaultRecord {
                    start_s: at,
                    end_s: at + duration_s,
                    label: format!("outage {link}"),
                });
            }
            FaultKind::Congestion {
                link,
                to_fraction,
                ramp_s,
                hold_s,
            } => {
                let (up, down) = &base[link];
                let steps = 20;
                for k in 0..=steps {
                    let x = k as f64 / steps as f64;
                    let frac = 1.0 - (1.0 - to_fraction) * x;
                    actions.push((
                        at + ramp_s * x,
                        Action::Link {
                            link: link.clone(),
                            up: scaled(up, frac),
                            down: scaled(down, frac),
                        },
                    ));
                    let back = at + ramp_s + hold_s + ramp_s * x;
                    let frac_up = to_fraction + (1.0 - to_fraction) * x;
                    actions.push((
                        back,
                        Action::Link {
                            link: link.clone(),
                            up: scaled(up, frac_up),
                            down: scaled(down, frac_up),
                        },
                    ));
                }
                windows.push(FaultRecord {
                    start_s: at,
                    end_s: at + 2.0 * ramp_s + hold_s,
                    label: format!("congestion {link} to {:.0}%", to_fraction * 100.0),
                });
            }
            FaultKind::Bandwidth { link, mbit } => {
                let (up, down) = &base[link];
                let set = |p: &LinkParams| {
                    let mut p = p.clone();
                    p.bandwidth_bps = Some((mbit * 1e6) as u64);
                    p
                };
                actions.push((
                    at,
                    Action::Link {
                        link: link.clone(),
                        up: set(up),
                        down: set(down),
                    },
                ));
                windows.push(FaultRecord {
                    start_s: at,
                    end_s: at,
                    label: format!("{link} → {mbit} Mbit/s"),
                });
            }
            FaultKind::Kill { host } => {
                actions.push((at, Action::Kill(host.clone())));
                let back = s.faults.iter().find_map(|g| match &g.kind {
                    FaultKind::Restart { host: h } if h == host && g.at_s >= at => Some(g.at_s),
                    _ => None,
                });
                windows.push(FaultRecord {
                    start_s: at,
                    end_s: back.unwrap_or(at),
                    label: format!("SIGKILL {host}"),
                });
            }
            FaultKind::Restart { host } => actions.push((at, Action::Restart(host.clone()))),
            FaultKind::Stop { host } => {
                actions.push((at, Action::Stop(host.clone())));
                let back = s.faults.iter().find_map(|g| match &g.kind {
                    FaultKind::Cont { host: h } if h == host && g.at_s >= at => Some(g.at_s),
                    _ => None,
                });
                windows.push(FaultRecord {
                    start_s: at,
                    end_s: back.unwrap_or(at),
                    label: format!("SIGSTOP {host}"),
                });
            }
            FaultKind::Cont { host } => actions.push((at, Action::Cont(host.clone()))),
        }
    }
    actions.sort_by(|a, b| a.0.total_cmp(&b.0));
    (actions, windows)
}

/// Runs a scenario to completion. `progress` is called about every 200 ms
/// with the elapsed seconds, the planned total and a status line.
pub async fn run(
    mut scenario: Scenario,
    options: &RunOptions,
    progress: &(dyn Fn(f64, f64, &str) + Sync),
) -> Result<RunResults, String> {
    if options.duration_scale.is_nan() || options.duration_scale <= 0.0 {
        return Err(format!(
            "duration scale {} must be > 0",
            options.duration_scale
        ));
    }
    scenario.scale_durations(options.duration_scale);
    let seed = options.seed.unwrap_or(scenario.seed);
    let bin = &options.binary;
    let work = &options.work_dir;
    // A fresh start: hosts of an earlier run in the same directory (their
    // logs, data, records) would be taken for this run's.
    if work.exists() {
        std::fs::remove_dir_all(work).map_err(|e| format!("clearing {}: {e}", work.display()))?;
    }
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let host_dir = |name: &str| -> Result<PathBuf, String> {
        let d = work.join(name);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        Ok(d)
    };

    let mut procs: HashMap<String, Proc> = HashMap::new();
    let mut nodes: HashMap<String, NodeAddrs> = HashMap::new();
    let mut serving: HashMap<String, usize> = HashMap::new();
    let result = async {
        // Nodes.
        for n in &scenario.nodes {
            let dir = host_dir(&n.name)?;
            let addrs = NodeAddrs {
                data: format!("127.0.0.1:{}", free_port())
                    .parse()
                    .expect("address"),
                admin: format!("127.0.0.1:{}", free_port())
                    .parse()
                    .expect("address"),
                ca: dir.join("data/certs/ca.pem"),
            };
            let args = vec![
                "serve".into(),
                "--data-dir".into(),
                dir.join("data").display().to_string(),
                "--listen".into(),
                addrs.data.to_string(),
                "--admin".into(),
                addrs.admin.to_string(),
                "--fsync".into(),
                n.fsync.clone(),
            ];
            let mut p = Proc::new(&n.name, &dir, args, None);
            p.spawn(bin)?;
            procs.insert(n.name.clone(), p);
            nodes.insert(n.name.clone(), addrs);
        }
        for n in &scenario.nodes {
            wait_serving(&procs[&n.name], 1).await?;
            serving.insert(n.name.clone(), 1);
        }
        // Topics.
        for t in &scenario.topics {
            for n in &t.nodes {
                let a = &nodes[n];
                let create: &[&str] = if t.qos {
                    &["stream", "init"]
                } else {
                    &["topic", "create"]
                };
                let out = Command::new(bin)
                    .args(create)
                    .args([&t.name, "--partitions", &t.partitions.to_string()])
                    .args([
                        "--admin",
                        &a.admin.to_string(),
                        "--ca",
                        &a.ca.display().to_string(),
                    ])
                    .output()
                    .map_err(|e| format!("topic create: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "creating topic '{}' on '{n}': {}",
                        t.name,
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
        }
        // Links.
        let mut relays: HashMap<String, Relay> = HashMap::new();
        let mut base: HashMap<String, (LinkParams, LinkParams)> = HashMap::new();
        for (i, l) in scenario.links.iter().enumerate() {
            let down = l.down.clone().unwrap_or_else(|| l.up.clone());
            let mut cfg =
                RelayConfig::new("127.0.0.1:0".parse().expect("address"), nodes[&l.to].data);
            cfg.up = l.up.clone();
            cfg.down = down.clone();
            cfg.seed = seed.wrapping_add(i as u64 * 0x9E37_79B9);
            let relay = Relay::start(cfg)
                .await
                .map_err(|e| format!("link '{}': {e}", l.name))?;
            relays.insert(l.name.clone(), relay);
            base.insert(l.name.clone(), (l.up.clone(), down));
        }
        let addr_of = |node: &str, via: &Option<String>| -> Result<SocketAddr, String> {
            match via {
                None => Ok(nodes[node].data),
                Some(l) => {
                    let spec = scenario
                        .links
                        .iter()
                        .find(|x| &x.name == l)
                        .expect("validated");
                    if spec.to != node {
                        return Err(format!(
                            "link '{l}' leads to '{}', not to '{node}'",
                            spec.to
                        ));
                    }
                    Ok(relays[l].local_addr())
                }
            }
        };
        // Bridges and consumers first, so they are ready when items flow.
        for b in &scenario.bridges {
            let dir = host_dir(&b.name)?;
            let to = addr_of(&b.to, &b.via)?;
            let args = vec![
                "bridge".into(),
                "--name".into(),
                b.name.clone(),
                "--from".into(),
                format!("{}/{}", nodes[&b.from].data, b.topic),
                "--to".into(),
                format!("{to}/{}", b.topic),
                "--from-ca".into(),
                nodes[&b.from].ca.display().to_string(),
                "--to-ca".into(),
                nodes[&b.to].ca.display().to_string(),
            ];
            let mut p = Proc::new(&b.name, &dir, args, None);
            p.spawn(bin)?;
            procs.insert(b.name.clone(), p);
        }
        let mut consumer_files: Vec<(String, PathBuf)> = Vec::new();
        for c in &scenario.consumers {
            let dir = host_dir(&c.name)?;
            let out = dir.join("consumed.jsonl");
            let mut args: Vec<String> = match &c.qos {
                Some(policy) => vec![
                    "stream".into(),
                    "consume".into(),
                    "--name".into(),
                    c.name.clone(),
                    "--policy".into(),
                    write_policy(&dir, policy)?.display().to_string(),
                    "--checkpoint".into(),
                    dir.join("checkpoint.json").display().to_string(),
                ],
                None => vec![
                    "consume".into(),
                    "--group".into(),
                    c.group.clone().unwrap_or_else(|| c.name.clone()),
                ],
            };
            args.extend([
                "--topic".into(),
                c.topic.clone(),
                "--json".into(),
                "--addr".into(),
                addr_of(&c.node, &c.via)?.to_string(),
                "--ca".into(),
                nodes[&c.node].ca.display().to_string(),
            ]);
            let mut p = Proc::new(&c.name, &dir, args, Some(out.clone()));
            p.spawn(bin)?;
            procs.insert(c.name.clone(), p);
            consumer_files.push((c.topic.clone(), out));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Producers: the clock starts.
        let t0 = Instant::now();
        let t0_us = now_us();
        // Metrics: the command line's options, else the scenario's [metrics].
        let metrics_options = match (&options.metrics, &scenario.metrics) {
            (Some(m), Some(sm)) if m.publish.is_none() => Some(MetricsOptions {
                publish: Some((sm.node.clone(), sm.topic.clone())),
                ..m.clone()
            }),
            (Some(m), _) => Some(m.clone()),
            (None, Some(sm)) => Some(MetricsOptions {
                interval: Duration::from_millis(sm.interval_ms),
                out: None,
                publish: Some((sm.node.clone(), sm.topic.clone())),
            }),
            (None, None) => None,
        };
        let mut metrics = match &metrics_options {
            None => None,
            Some(m) => {
                let mut sampler = crate::metrics::LinkSampler::new(&scenario.name, m.interval, t0);
                for (name, (up, _)) in &base {
                    sampler.set_capacity(name, up.bandwidth_bps);
                }
                let out = match &m.out {
                    None => None,
                    Some(p) => Some(std::io::BufWriter::new(
                        File::create(p).map_err(|e| format!("{}: {e}", p.display()))?,
                    )),
                };
                let producer = match &m.publish {
                    None => None,
                    Some((node, topic)) => {
                        let a = nodes
                            .get(node)
                            .ok_or_else(|| format!("metrics: no node '{node}'"))?;
                        let admin = ["--admin".to_string(), a.admin.to_string()];
                        let ca = ["--ca".to_string(), a.ca.display().to_string()];
                        // Absent or already there: either way it exists after this.
                        let _ = Command::new(bin)
                            .args(["topic", "create", topic.as_str()])
                            .args(&admin)
                            .args(&ca)
                            .output();
                        Some(
                            Command::new(bin)
                                .args(["produce", "--topic", topic.as_str()])
                                .args(["--addr", &a.data.to_string()])
                                .args(&ca)
                                .stdin(Stdio::piped())
                                .stdout(Stdio::null())
                                .stderr(Stdio::null())
                                .spawn()
                                .map_err(|e| format!("metrics publisher: {e}"))?,
                        )
                    }
                };
                Some(MetricsSink {
                    sampler,
                    saturation: HashMap::new(),
                    out,
                    producer,
                })
            }
        };
        let mut monitor_files = Vec::new();
        for m in &scenario.monitors {
            let dir = host_dir(&m.name)?;
            let a = &nodes[&m.node];
            let events = dir.join("events.jsonl");
            let args = vec![
                "predict".into(),
                "serve".into(),
                "--monitor".into(),
                m.file.display().to_string(),
                "--addr".into(),
                a.data.to_string(),
                "--ca".into(),
                a.ca.display().to_string(),
                "--admin".into(),
                a.admin.to_string(),
            ];
            let mut p = Proc::new(&m.name, &dir, args, Some(events.clone()));
            p.spawn(bin)?;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !p.log_text().contains("monitor ") {
                if Instant::now() > deadline || p.exited().is_some() {
                    return Err(format!(
                        "monitor '{}' did not start; its log:\n{}",
                        m.name,
                        p.log_text()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            procs.insert(m.name.clone(), p);
            monitor_files.push((m.name.clone(), events));
        }
        let mut produced = 0u64;
        let mut ack_files: Vec<(String, PathBuf)> = Vec::new();
        let mut producer_names = Vec::new();
        for (i, p) in scenario.producers.iter().enumerate() {
            let dir = host_dir(&p.name)?;
            let n = (p.rate * scenario.duration_s).ceil() as u64;
            produced += n;
            let acks = dir.join("acks.jsonl");
            let mut args: Vec<String> = match &p.qos {
                Some(policy) => vec![
                    "stream".into(),
                    "produce".into(),
                    "--policy".into(),
                    write_policy(&dir, policy)?.display().to_string(),
                    "--payload".into(),
                    p.payload.clone().unwrap_or_else(|| "random".into()),
                ],
                None => vec!["produce".into()],
            };
            args.extend([
                "--topic".into(),
                p.topic.clone(),
                "--synthetic".into(),
                n.to_string(),
                "--size".into(),
                p.size.to_string(),
                "--rate".into(),
                p.rate.to_string(),
                "--acks".into(),
                acks.display().to_string(),
                "--id-start".into(),
                (i as u64 * 1_000_000_000_000).to_string(),
                "--json".into(),
                "--addr".into(),
                addr_of(&p.node, &p.via)?.to_string(),
                "--ca".into(),
                nodes[&p.node].ca.display().to_string(),
            ]);
            let mut proc_ = Proc::new(&p.name, &dir, args, Some(dir.join("summary.json")));
            proc_.spawn(bin)?;
            procs.insert(p.name.clone(), proc_);
            ack_files.push((p.topic.clone(), acks));
            producer_names.push(p.name.clone());
        }

        // The fault timeline, until the producers are done.
        let (mut actions, faults) = plan(&scenario, &base);
        actions.reverse();
        let total = scenario.duration_s + scenario.drain_s;
        let mut status = String::from("running");
        let mut producer_failures = Vec::new();
        loop {
            let t = t0.elapsed().as_secs_f64();
            while actions.last().is_some_and(|(at, _)| *at <= t) {
                let (_, action) = actions.pop().expect("checked");
                match action {
                    Action::Link { link, up, down } => {
                        let r = &relays[&link];
                        status = if up.blackhole {
                            format!("{link}: outage")
                        } else {
                            format!("{link}: {:?} bit/s", up.bandwidth_bps)
                        };
                        if let Some(m) = &mut metrics {
                            let cap = if up.blackhole {
                                Some(0)
                            } else {
                                up.bandwidth_bps
                            };
                            m.sampler.set_capacity(&link, cap);
                        }
                        r.set_up(up).map_err(|e| e.to_string())?;
                        r.set_down(down).map_err(|e| e.to_string())?;
                    }
                    Action::Kill(h) => {
                        status = format!("SIGKILL {h}");
                        if let Some(p) = procs.get_mut(&h) {
                            p.kill();
                        }
                    }
                    Action::Restart(h) => {
                        status = format!("restart {h}");
                        let p = procs.get_mut(&h).ok_or_else(|| format!("no host '{h}'"))?;
                        p.spawn(bin)?;
                        if let Some(n) = serving.get_mut(&h) {
                            *n += 1;
                            wait_serving(&procs[&h], *n).await?;
                        }
                    }
                    Action::Stop(h) => {
                        status = format!("SIGSTOP {h}");
                        if let Some(p) = procs.get(&h) {
                            p.signal(libc::SIGSTOP);
                        }
                    }
                    Action::Cont(h) => {
                        status = format!("SIGCONT {h}");
                        if let Some(p) = procs.get(&h) {
                            p.signal(libc::SIGCONT);
                        }
                    }
                }
            }
            let mut running = 0;
            for name in &producer_names {
                let p = procs.get_mut(name).expect("producer");
                match p.exited() {
                    None => running += 1,
                    Some(st) if !st.success() && !producer_failures.contains(name) => {
                        producer_failures.push(name.clone());
                    }
                    Some(_) => {}
                }
            }
            progress(t, total, &status);
            if running == 0 && actions.is_empty() {
                break;
            }
            if t > scenario.duration_s + scenario.drain_s {
                for name in &producer_names {
                    procs.get_mut(name).expect("producer").kill();
                }
                producer_failures.push("producers did not finish in duration + drain".into());
                break;
            }
            if let Some(m) = &mut metrics {
                m.poll(&relays);
            }
            MetricsSink::sleep(&metrics, Duration::from_millis(200)).await;
        }

        // Drain: until every acknowledged item has been seen, or the drain time ends.
        let acked_total: u64 = ack_files
            .iter()
            .map(|(_, f)| count_lines_without(f, "\"fate\""))
            .sum();
        let drain_end = t0 + Duration::from_secs_f64(scenario.duration_s + scenario.drain_s);
        loop {
            let seen: u64 = consumer_files
                .iter()
                .map(|(_, f)| count_lines_without(f, "\"id\":null"))
                .sum();
            let t = t0.elapsed().as_secs_f64();
            progress(
                t,
                total,
                &format!("draining: {seen} of {acked_total} delivered"),
            );
            if seen >= acked_total || Instant::now() >= drain_end {
                break;
            }
            if let Some(m) = &mut metrics {
                m.poll(&relays);
            }
            MetricsSink::sleep(&metrics, Duration::from_millis(200)).await;
        }

        // Stop consumers and bridges first (they flush and commit), then nodes.
        for c in scenario
            .consumers
            .iter()
            .map(|c| &c.name)
            .chain(scenario.bridges.iter().map(|b| &b.name))
            .chain(scenario.monitors.iter().map(|m| &m.name))
        {
            if let Some(p) = procs.get_mut(c) {
                p.signal(libc::SIGCONT);
                p.stop(Duration::from_secs(5)).await;
            }
        }
        let mut saturated_s = std::collections::BTreeMap::new();
        if let Some(mut m) = metrics.take() {
            for (link, st) in m.saturation.drain() {
                saturated_s.insert(link, st.onsets);
            }
            m.finish();
        }
        let mut monitors = std::collections::BTreeMap::new();
        for (name, file) in &monitor_files {
            let mut f = MonitorFigures::default();
            let text = std::fs::read_to_string(file).unwrap_or_default();
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let t = (v["t_us"].as_i64().unwrap_or(0) - t0_us) as f64 / 1e6;
                match v["kind"].as_str() {
                    Some("prediction") => {
                        f.predictions += 1;
                        f.prediction_s.push(t);
                        f.prediction_lead_s
                            .push(v["lead_time_s"].as_f64().unwrap_or(0.0));
                        f.prediction_confidence
                            .push(v["confidence"].as_f64().unwrap_or(0.0));
                    }
                    Some("alert") => {
                        f.alerts += 1;
                        f.alert_s.push(t);
                    }
                    _ => {}
                }
            }
            monitors.insert(name.clone(), f);
        }
        let mut link_stats = std::collections::BTreeMap::new();
        for (name, r) in relays.drain() {
            link_stats.insert(name, r.stats());
            r.shutdown().await;
        }

        // Analysis.
        let mut acks: Vec<(String, AckRecord)> = Vec::new();
        for (topic, f) in &ack_files {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            acks.extend(
                analysis::parse_lines::<AckRecord>(&text)
                    .map_err(|e| format!("{}: {e}", f.display()))?
                    .into_iter()
                    .map(|a| (topic.clone(), a)),
            );
        }
        let mut consumed: Vec<(String, ConsumeRecord)> = Vec::new();
        for (topic, f) in &consumer_files {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            consumed.extend(
                analysis::parse_lines::<ConsumeRecord>(&text)
                    .map_err(|e| format!("{}: {e}", f.display()))?
                    .into_iter()
                    .map(|c| (topic.clone(), c)),
            );
        }
        // The records of one topic's hosts, or of all.
        let records = |topic: Option<&str>| {
            let keep = |t: &str| topic.map_or(true, |x| x == t);
            let a: Vec<AckRecord> = acks.iter().filter(|x| keep(&x.0)).map(|x| x.1).collect();
            let c: Vec<ConsumeRecord> = consumed
                .iter()
                .filter(|x| keep(&x.0))
                .map(|x| x.1.clone())
                .collect();
            (a, c)
        };
        let (all_acks, all_consumed) = records(None);
        let a = analysis::analyze(&all_acks, &all_consumed, t0_us);
        // QoS producers' own figures.
        let mut summaries: HashMap<String, QosProducerSummary> = HashMap::new();
        for p in scenario.producers.iter().filter(|p| p.qos.is_some()) {
            let f = work.join(&p.name).join("summary.json");
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            match text.lines().rev().find(|l| l.trim_start().starts_with('{')) {
                Some(l) => {
                    let s: QosProducerSummary =
                        serde_json::from_str(l).map_err(|e| format!("{}: {e}", f.display()))?;
                    summaries.insert(p.name.clone(), s);
                }
                None => producer_failures.push(format!("{}: no summary", p.name)),
            }
        }
        let mut topics = std::collections::BTreeMap::new();
        for t in &scenario.topics {
            let (ta, tc) = records(Some(&t.name));
            let fig = analysis::analyze(&ta, &tc, t0_us);
            topics.insert(
                t.name.clone(),
                TopicFigures {
                    acked: fig.acked,
                    consumed: fig.consumed,
                    lost: fig.lost,
                    reduced_away: fig.reduced_away,
                    shed: fig.shed,
                    quality_mix: fig.quality_mix,
                    latency_us_p50: fig.latency_us_p50,
                    latency_us_p99: fig.latency_us_p99,
                    producers: scenario
                        .producers
                        .iter()
                        .filter(|p| p.topic == t.name)
                        .filter_map(|p| summaries.get(&p.name).map(|s| (p.name.clone(), s.clone())))
                        .collect(),
                },
            );
        }
        let recovery_s = faults
            .iter()
            .map(|f| analysis::recovery_s(&all_consumed, t0_us + (f.end_s * 1e6) as i64))
            .fold(0.0, f64::max);
        let asrt = &scenario.assertions;
        let mut checks = vec![
            CheckRecord {
                what: format!("lost ≤ {}", asrt.lost_max),
                measured: a.lost.to_string(),
                passed: a.lost <= asrt.lost_max,
            },
            CheckRecord {
                what: format!("duplicated ≤ {}", asrt.duplicated_max),
                measured: a.duplicated.to_string(),
                passed: a.duplicated <= asrt.duplicated_max,
            },
            CheckRecord {
                what: format!("acked ≥ {}", asrt.acked_min),
                measured: a.acked.to_string(),
                passed: a.acked >= asrt.acked_min,
            },
            CheckRecord {
                what: "every producer exited cleanly".into(),
                measured: if producer_failures.is_empty() {
                    "yes".into()
                } else {
                    producer_failures.join(", ")
                },
                passed: producer_failures.is_empty(),
            },
        ];
        if let Some(max) = asrt.latency_us_p99_max {
            checks.push(CheckRecord {
                what: format!("latency p99 ≤ {max} µs"),
                measured: a.latency_us_p99.to_string(),
                passed: a.latency_us_p99 <= max,
            });
        }
        for (name, s) in &summaries {
            checks.push(CheckRecord {
                what: format!(
                    "{name}: memory tier ≤ its cap ({} bytes)",
                    s.memory_bytes_max
                ),
                measured: format!(
                    "{} bytes (process peak RSS {} KiB)",
                    s.memory_high_water,
                    s.rss_max_kb.unwrap_or(0)
                ),
                passed: s.memory_high_water <= s.memory_bytes_max,
            });
        }
        let rate: f64 = scenario.producers.iter().map(|p| p.rate).sum();
        let catchup_ratio = faults
            .iter()
            .filter(|f| f.label.contains("outage"))
            .filter_map(|f| {
                let end = t0_us + (f.end_s * 1e6) as i64;
                let rec = analysis::recovery_s(&all_consumed, end);
                (rec > 0.2).then(|| {
                    let got = all_consumed
                        .iter()
                        .filter(|c| {
                            c.received_us() >= end && c.received_us() <= end + (rec * 1e6) as i64
                        })
                        .count() as f64;
                    got / rec / rate
                })
            })
            .reduce(f64::min);
        if let Some(min) = asrt.catchup_ratio_min {
            checks.push(CheckRecord {
                what: format!("catch-up after each outage ≥ {min}× the production rate"),
                measured: catchup_ratio.map_or("nothing was behind".into(), |r| format!("{r:.1}×")),
                passed: catchup_ratio.map_or(true, |r| r >= min),
            });
        }
        for (t, ta) in &asrt.topics {
            let fig = &topics[t];
            checks.push(CheckRecord {
                what: format!("{t}: lost ≤ {}", ta.lost_max),
                measured: fig.lost.to_string(),
                passed: fig.lost <= ta.lost_max,
            });
            if let Some(max) = ta.latency_us_p99_max {
                checks.push(CheckRecord {
                    what: format!("{t}: latency p99 ≤ {max} µs"),
                    measured: fig.latency_us_p99.to_string(),
                    passed: fig.latency_us_p99 <= max,
                });
            }
            if let Some(max) = ta.producer_rate_ratio_max {
                for (name, s) in &fig.producers {
                    let r = s.rate_achieved / s.rate_target.max(1e-9);
                    checks.push(CheckRecord {
                        what: format!("{t}: {name} slowed to ≤ {max} of its target rate"),
                        measured: format!(
                            "{r:.2} ({:.0} of {:.0} items/s)",
                            s.rate_achieved, s.rate_target
                        ),
                        passed: r <= max,
                    });
                }
            }
            if ta.substituted_or_reduced_min > 0 {
                let n: u64 = fig
                    .quality_mix
                    .iter()
                    .filter(|(q, _)| q.as_str() != "original")
                    .map(|(_, n)| n)
                    .sum();
                checks.push(CheckRecord {
                    what: format!(
                        "{t}: ≥ {} items delivered reduced or reconstructed",
                        ta.substituted_or_reduced_min
                    ),
                    measured: n.to_string(),
                    passed: n >= ta.substituted_or_reduced_min,
                });
            }
        }
        if let Some(max) = asrt.recovery_s_max {
            checks.push(CheckRecord {
                what: format!("recovery ≤ {max:.1} s"),
                measured: format!("{recovery_s:.2}"),
                passed: recovery_s <= max,
            });
        }
        Ok(RunResults {
            scenario: scenario.name.clone(),
            seed,
            duration_scale: options.duration_scale,
            passed: checks.iter().all(|c| c.passed),
            produced,
            recovery_s,
            catchup_ratio,
            topics,
            checks,
            faults,
            figures: a,
            links: link_stats,
            work_dir: work.clone(),
            saturated_s,
            monitors,
        })
    }
    .await;
    // Whatever happened, no host outlives the run.
    for (_, mut p) in procs.drain() {
        p.signal(libc::SIGCONT);
        p.stop(Duration::from_secs(3)).await;
    }
    result
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
