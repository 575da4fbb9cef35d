//! The pool spec (TOML), validated with named faults.
//!
//! ```toml
//! name = "ptycho"
//!
//! [worker]
//! command = ["diaspora", "pool", "worker"]   # argv of one worker
//! cores = 1
//! memory_mb = 2048
//! walltime_s = 3600          # none = unlimited (local sites)
//! drain_before_walltime_s = 120
//!
//! [heartbeat]
//! interval_ms = 1000
//! timeout_ms = 5000           # a worker silent this long is lost
//! start_timeout_ms = 120000   # launched but never heard from: lost
//! source = "worker"           # or "provider": plain commands that send no
//!                             # heartbeat are live while their job runs
//! site_backoff_max_ms = 60000 # a silent site is probed at most this far apart
//!
//! [tasks]
//! retries = 3                 # attempts after the first
//! backoff_ms = 500            # doubled per attempt, up to backoff_max_ms
//! backoff_max_ms = 30000
//!
//! [scaling]
//! min_total = 2
//! max_total = 8
//! backlog_per_worker = 4      # tasks waiting per worker before scaling up
//! catch_up_target_s = 60      # a restarted service is level again within this
//! cooldown_s = 10             # between demand-driven scaling steps
//! scale_in_idle_s = 30        # surplus this long before retiring workers
//! prediction_horizon_s = 120  # act on predictions this far ahead
//! prediction_workers = 6      # workers wanted then (default: max_total)
//!
//! [[site]]
//! name = "edge-cluster"
//! provider = "local"
//! min = 1
//! max = 4
//!
//! [[site]]
//! name = "hpc"
//! provider = "slurm"
//! min = 1
//! max = 16
//! partition = "debug"
//! fabric_addr = "10.0.0.5:7400"   # the node as this site's workers reach it
//! ```
//!
//! [`PoolSpec::validate`] reports every fault at once, each a
//! [`SpecFault`] with a name a user can search for.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// The whole pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Pool name: its topics are `pool.NAME.tasks`, `pool.NAME.results`,
    /// `pool.NAME.events`.
    pub name: String,
    /// What one worker is.
    pub worker: WorkerSpec,
    /// Liveness.
    #[serde(default)]
    pub heartbeat: HeartbeatSpec,
    /// Retries of failed tasks.
    #[serde(default)]
    pub tasks: TaskSpec,
    /// Elasticity.
    pub scaling: ScalingSpec,
    /// Where workers run, in order of preference for new workers.
    #[serde(rename = "site", default)]
    pub sites: Vec<SiteSpec>,
}

/// The shape of one worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSpec {
    /// Program and arguments of one worker.
    pub command: Vec<String>,
    /// Cores per worker.
    #[serde(default = "one")]
    pub cores: u32,
    /// Memory per worker, MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Wall-clock limit of one worker's job; `None` = unlimited.
    #[serde(default)]
    pub walltime_s: Option<u64>,
    /// A worker is drained (takes no new task) and replaced this long before
    /// its walltime, so that the limit never kills a running task.
    #[serde(default = "default_drain_before_walltime_s")]
    pub drain_before_walltime_s: u64,
}

/// Heartbeats and liveness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSpec {
    /// A worker's heartbeat period.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// A live worker not heard from for this long is lost.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// A launched worker that never sends its first heartbeat within this
    /// long (queue wait included: provider `Pending` time is not counted) is
    /// lost.
    #[serde(default = "default_start_timeout_ms")]
    pub start_timeout_ms: u64,
    /// Who vouches for a worker's liveness.
    #[serde(default)]
    pub source: LivenessSource,
    /// A site whose workers all went silent (or could not start) is left
    /// alone for twice `timeout_ms`, doubling after every failed probe up
    /// to this: the longest a returning site waits for its next probe.
    #[serde(default = "default_site_backoff_max_ms")]
    pub site_backoff_max_ms: u64,
}

/// Who vouches for a worker's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LivenessSource {
    /// The worker's own heartbeats (`diaspora pool worker` sends them).
    #[default]
    Worker,
    /// The provider: a worker is live while its process or job runs (for
    /// plain commands that send no heartbeat; they cannot hold tasks).
    Provider,
}

impl Default for HeartbeatSpec {
    fn default() -> Self {
        HeartbeatSpec {
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            start_timeout_ms: default_start_timeout_ms(),
            source: LivenessSource::Worker,
            site_backoff_max_ms: default_site_backoff_max_ms(),
        }
    }
}

/// Task retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Attempts allowed after the first failed one.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Back-off before the first retry; doubled per attempt.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Largest back-off.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
}

impl Default for TaskSpec {
    fn default() -> Self {
        TaskSpec {
            retries: default_retries(),
            backoff_ms: default_backoff_ms(),
            backoff_max_ms: default_backoff_max_ms(),
        }
    }
}

impl TaskSpec {
    /// Back-off before attempt `attempt` (0 = the first, which has none).
    pub fn backoff(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let factor = 1u64.checked_shl(attempt - 1).unwrap_or(u64::MAX);
        Duration::from_millis(
            self.backoff_ms
                .saturating_mul(factor)
                .min(self.backoff_max_ms),
        )
    }
}

/// Elasticity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingSpec {
    /// Workers kept alive across all sites, whatever the load.
    pub min_total: u32,
    /// Most workers across all sites.
    pub max_total: u32,
    /// Waiting tasks per worker that the pool tolerates before adding one.
    #[serde(default = "default_backlog_per_worker")]
    pub backlog_per_worker: u32,
    /// A service that restarts with a backlog gets enough workers to be
    /// level again within this long.
    #[serde(default = "default_catch_up_target_s")]
    pub catch_up_target_s: u64,
    /// Least time between two demand-driven scaling steps (replacing lost
    /// workers is never delayed by it).
    #[serde(default = "default_cooldown_s")]
    pub cooldown_s: u64,
    /// The pool must have had surplus workers for this long before it
    /// retires any.
    #[serde(default = "default_scale_in_idle_s")]
    pub scale_in_idle_s: u64,
    /// Predictions of a shortfall due within this long are acted on now.
    #[serde(default = "default_prediction_horizon_s")]
    pub prediction_horizon_s: u64,
    /// Workers the pool wants when a shortfall is predicted (default:
    /// `max_total`).
    #[serde(default)]
    pub prediction_workers: Option<u32>,
}

/// Which provider runs a site's workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Child processes of the pool.
    Local,
    /// Batch jobs of a Slurm cluster (`sbatch`, `squeue`, `scancel`).
    Slurm,
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProviderKind::Local => "local",
            ProviderKind::Slurm => "slurm",
        })
    }
}

/// One site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// Site name (unique in the pool).
    pub name: String,
    /// Provider.
    pub provider: ProviderKind,
    /// Workers kept at this site while it is reachable.
    #[serde(default)]
    pub min: u32,
    /// Most workers at this site.
    pub max: u32,
    /// Slurm partition (`sbatch --partition`); Slurm sites only.
    #[serde(default)]
    pub partition: Option<String>,
    /// Slurm account (`sbatch --account`); Slurm sites only.
    #[serde(default)]
    pub account: Option<String>,
    /// The node's data-plane address as this site's workers reach it (a
    /// site behind a gateway, a proxy or an emulated link); default: the
    /// address the pool itself uses.
    #[serde(default)]
    pub fabric_addr: Option<String>,
}

fn one() -> u32 {
    1
}
fn default_memory_mb() -> u64 {
    1024
}
fn default_drain_before_walltime_s() -> u64 {
    60
}
fn default_interval_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_start_timeout_ms() -> u64 {
    120_000
}
fn default_site_backoff_max_ms() -> u64 {
    60_000
}
fn default_retries() -> u32 {
    3
}
fn default_backoff_ms() -> u64 {
    500
}
fn default_backoff_max_ms() -> u64 {
    30_000
}
fn default_backlog_per_worker() -> u32 {
    4
}
fn default_catch_up_target_s() -> u64 {
    60
}
fn default_cooldown_s() -> u64 {
    10
}
fn default_scale_in_idle_s() -> u64 {
    30
}
fn default_prediction_horizon_s() -> u64 {
    120
}

/// One thing wrong with a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecFault {
    /// The pool name is empty or has characters a topic name cannot have.
    BadName(String),
    /// No `[[site]]`.
    NoSites,
    /// Two sites share a name.
    DuplicateSite(String),
    /// A site name is empty or has characters other than `[A-Za-z0-9._-]`.
    BadSiteName(String),
    /// A site's `min` is above its `max`.
    SiteMinAboveMax {
        /// Site.
        site: String,
        /// Its min.
        min: u32,
        /// Its max.
        max: u32,
    },
    /// `min_total` is above `max_total`.
    MinTotalAboveMaxTotal {
        /// min_total.
        min_total: u32,
        /// max_total.
        max_total: u32,
    },
    /// `max_total` is 0: the pool could never run a task.
    ZeroMaxTotal,
    /// The sites together cannot hold `min_total` workers.
    MinTotalAboveSites {
        /// min_total.
        min_total: u32,
        /// Sum of the sites' max.
        sites_max: u32,
    },
    /// The sites' minimums together exceed `max_total`.
    SiteMinimumsAboveMaxTotal {
        /// Sum of the sites' min.
        sites_min: u32,
        /// max_total.
        max_total: u32,
    },
    /// The worker command is empty.
    EmptyCommand,
    /// `cores` is 0.
    ZeroCores,
    /// `memory_mb` is 0.
    ZeroMemory,
    /// The walltime is not longer than the drain margin before it (workers
    /// would be drained as soon as they start).
    WalltimeWithinDrain {
        /// walltime_s.
        walltime_s: u64,
        /// drain_before_walltime_s.
        drain_before_walltime_s: u64,
    },
    /// The heartbeat timeout is under twice the interval (one late beat would
    /// lose a worker).
    HeartbeatTimeoutTooShort {
        /// interval_ms.
        interval_ms: u64,
        /// timeout_ms.
        timeout_ms: u64,
    },
    /// The heartbeat interval is 0.
    ZeroHeartbeatInterval,
    /// `backoff_max_ms` is below `backoff_ms`.
    BackoffMaxBelowBackoff,
    /// `backlog_per_worker` is 0.
    ZeroBacklogPerWorker,
    /// `catch_up_target_s` is 0.
    ZeroCatchUpTarget,
    /// A Slurm-only setting on a local site.
    SlurmSettingOnLocalSite {
        /// Site.
        site: String,
        /// The setting.
        setting: &'static str,
    },
}

impl SpecFault {
    /// The fault's name (stable, for scripts and searching).
    pub fn name(&self) -> &'static str {
        match self {
            SpecFault::BadName(_) => "bad-name",
            SpecFault::NoSites => "no-sites",
            SpecFault::DuplicateSite(_) => "duplicate-site",
            SpecFault::BadSiteName(_) => "bad-site-name",
            SpecFault::SiteMinAboveMax { .. } => "site-min-above-max",
            SpecFault::MinTotalAboveMaxTotal { .. } => "min-total-above-max-total",
            SpecFault::ZeroMaxTotal => "zero-max-total",
            SpecFault::MinTotalAboveSites { .. } => "min-total-above-sites",
            SpecFault::SiteMinimumsAboveMaxTotal { .. } => "site-minimums-above-max-total",
            SpecFault::EmptyCommand => "empty-command",
            SpecFault::ZeroCores => "zero-cores",
            SpecFault::ZeroMemory => "zero-memory",
            SpecFault::WalltimeWithinDrain { .. } => "walltime-within-drain",
            SpecFault::HeartbeatTimeoutTooShort { .. } => "heartbeat-timeout-too-short",
            SpecFault::ZeroHeartbeatInterval => "zero-heartbeat-interval",
            SpecFault::BackoffMaxBelowBackoff => "backoff-max-below-backoff",
            SpecFault::ZeroBacklogPerWorker => "zero-backlog-per-worker",
            SpecFault::ZeroCatchUpTarget => "zero-catch-up-target",
            SpecFault::SlurmSettingOnLocalSite { .. } => "slurm-setting-on-local-site",
        }
    }
}

impl fmt::Display for SpecFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.name())?;
        match self {
            SpecFault::BadName(n) => write!(
                f,
                "pool name '{n}' must be 1–100 characters of [A-Za-z0-9._-] (it names topics)"
            ),
            SpecFault::NoSites => write!(f, "the pool has no [[site]]"),
            SpecFault::DuplicateSite(s) => write!(f, "site '{s}' is declared twice"),
            SpecFault::BadSiteName(s) => {
                write!(
                    f,
                    "site name '{s}' must be 1–64 characters of [A-Za-z0-9._-]"
                )
            }
            SpecFault::SiteMinAboveMax { site, min, max } => {
                write!(f, "site '{site}' has min {min} above max {max}")
            }
            SpecFault::MinTotalAboveMaxTotal {
                min_total,
                max_total,
            } => write!(f, "min_total {min_total} is above max_total {max_total}"),
            SpecFault::ZeroMaxTotal => write!(f, "max_total is 0: no worker could ever run"),
            SpecFault::MinTotalAboveSites {
                min_total,
                sites_max,
            } => write!(
                f,
                "min_total {min_total} is above what the sites can hold together ({sites_max})"
            ),
            SpecFault::SiteMinimumsAboveMaxTotal {
                sites_min,
                max_total,
            } => write!(
                f,
                "the sites' minimums add up to {sites_min}, above max_total {max_total}"
            ),
            SpecFault::EmptyCommand => write!(f, "worker.command is empty"),
            SpecFault::ZeroCores => write!(f, "worker.cores is 0"),
            SpecFault::ZeroMemory => write!(f, "worker.memory_mb is 0"),
            SpecFault::WalltimeWithinDrain {
                walltime_s,
                drain_before_walltime_s,
            } => write!(
                f,
                "worker.walltime_s {walltime_s} is not longer than drain_before_walltime_s \
                 {drain_before_walltime_s}: workers would drain as soon as they start"
            ),
            SpecFault::HeartbeatTimeoutTooShort {
                interval_ms,
                timeout_ms,
            } => write!(
                f,
                "heartbeat.timeout_ms {timeout_ms} is under twice interval_ms {interval_ms}: \
                 one late heartbeat would lose a worker"
            ),
            SpecFault::ZeroHeartbeatInterval => write!(f, "heartbeat.interval_ms is 0"),
            SpecFault::BackoffMaxBelowBackoff => {
                write!(f, "tasks.backoff_max_ms is below tasks.backoff_ms")
            }
            SpecFault::ZeroBacklogPerWorker => write!(f, "scaling.backlog_per_worker is 0"),
            SpecFault::ZeroCatchUpTarget => write!(f, "scaling.catch_up_target_s is 0"),
            SpecFault::SlurmSettingOnLocalSite { site, setting } => write!(
                f,
                "site '{site}' is local but sets '{setting}', which only Slurm sites use"
            ),
        }
    }
}

/// A spec that failed to parse or validate.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not valid TOML for a pool spec.
    #[error("pool spec: {0}")]
    Parse(String),
    /// Parsed, but wrong in these ways.
    #[error("pool spec has {} fault(s):\n  {}", .0.len(), .0.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid(Vec<SpecFault>),
}

fn name_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl PoolSpec {
    /// Parses and validates TOML.
    pub fn from_toml(text: &str) -> Result<PoolSpec, SpecError> {
        let spec: PoolSpec = toml::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads, parses and validates a spec file.
    pub fn load(path: &std::path::Path) -> Result<PoolSpec, SpecError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SpecError::Parse(format!("cannot read {}: {e}", path.display())))?;
        PoolSpec::from_toml(&text)
    }

    /// Every fault of the spec (empty when it is valid).
    pub fn faults(&self) -> Vec<SpecFault> {
        let mut out = Vec::new();
        if !name_ok(&self.name, 100) {
            out.push(SpecFault::BadName(self.name.clone()));
        }
        if self.sites.is_empty() {
            out.push(SpecFault::NoSites);
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.sites {
            if !name_ok(&s.name, 64) {
                out.push(SpecFault::BadSiteName(s.name.clone()));
            }
            if !seen.insert(s.name.as_str()) {
                out.push(SpecFault::DuplicateSite(s.name.clone()));
            }
            if s.min > s.max {
                out.push(SpecFault::SiteMinAboveMax {
                    site: s.name.clone(),
                    min: s.min,
                    max: s.max,
                });
            }
            if s.provider == ProviderKind::Local {
                for (set, setting) in [
                    (s.partition.is_some(), "partition"),
                    (s.account.is_some(), "account"),
                ] {
                    if set {
                        out.push(SpecFault::SlurmSettingOnLocalSite {
                            site: s.name.clone(),
                            setting,
                        });
                    }
                }
            }
        }
        let sc = &self.scaling;
        if sc.max_total == 0 {
            out.push(SpecFault::ZeroMaxTotal);
        }
        if sc.min_total > sc.max_total {
            out.push(SpecFault::MinTotalAboveMaxTotal {
                min_total: sc.min_total,
                max_total: sc.max_total,
            });
        }
        let sites_max: u32 = self
            .sites
            .iter()
            .map(|s| s.max)
            .fold(0, u32::saturating_add);
        let sites_min: u32 = self
            .sites
            .iter()
            .map(|s| s.min)
            .fold(0, u32::saturating_add);
        if !self.sites.is_empty() && sc.min_total > sites_max {
            out.push(SpecFault::MinTotalAboveSites {
                min_total: sc.min_total,
                sites_max,
            });
        }
        if sites_min > sc.max_total {
            out.push(SpecFault::SiteMinimumsAboveMaxTotal {
                sites_min,
                max_total: sc.max_total,
            });
        }
        if sc.backlog_per_worker == 0 {
            out.push(SpecFault::ZeroBacklogPerWorker);
        }
        if sc.catch_up_target_s == 0 {
            out.push(SpecFault::ZeroCatchUpTarget);
        }
        let w = &self.worker;
        if w.command.is_empty() || w.command[0].is_empty() {
            out.push(SpecFault::EmptyCommand);
        }
        if w.cores == 0 {
            out.push(SpecFault::ZeroCores);
        }
        if w.memory_mb == 0 {
            out.push(SpecFault::ZeroMemory);
        }
        if let Some(wt) = w.walltime_s {
            if wt <= w.drain_before_walltime_s {
                out.push(SpecFault::WalltimeWithinDrain {
                    walltime_s: wt,
                    drain_before_walltime_s: w.drain_before_walltime_s,
                });
            }
        }
        let hb = &self.heartbeat;
        if hb.interval_ms == 0 {
            out.push(SpecFault::ZeroHeartbeatInterval);
        } else if hb.timeout_ms < 2 * hb.interval_ms {
            out.push(SpecFault::HeartbeatTimeoutTooShort {
                interval_ms: hb.interval_ms,
                timeout_ms: hb.timeout_ms,
            });
        }
        if self.tasks.backoff_max_ms < self.tasks.backoff_ms {
            out.push(SpecFault::BackoffMaxBelowBackoff);
        }
        out
    }

    /// `Ok` when the spec has no fault, else every fault.
    pub fn validate(&self) -> Result<(), SpecError> {
        let f = self.faults();
        if f.is_empty() {
            Ok(())
        } else {
            Err(SpecError::Invalid(f))
        }
    }

    /// The site named `name`.
    pub fn site(&self, name: &str) -> Option<&SiteSpec> {
        self.sites.iter().find(|s| s.name == name)
    }

    /// The tasks topic.
    pub fn tasks_topic(&self) -> String {
        format!("pool.{}.tasks", self.name)
    }

    /// The results topic.
    pub fn results_topic(&self) -> String {
        format!("pool.{}.results", self.name)
    }

    /// The events topic (heartbeats, worker and pool events).
    pub fn events_topic(&self) -> String {
        format!("pool.{}.events", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"
name = "ptycho"
[worker]
command = ["diaspora", "pool", "worker"]
walltime_s = 3600
[scaling]
min_total = 2
max_total = 8
[[site]]
name = "edge"
provider = "local"
min = 1
max = 4
[[site]]
name = "hpc"
provider = "slurm"
min = 1
max = 16
partition = "debug"
"#;

    #[test]
    fn the_documented_example_is_valid() {
        let doc = include_str!("spec.rs");
        let toml: String = doc
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .map(|l| l.trim_start_matches("//!").strip_prefix(' ').unwrap_or(""))
            .skip_while(|l| !l.starts_with("```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("```"))
            .collect::<Vec<_>>()
            .join("\n");
        let spec = PoolSpec::from_toml(&toml).unwrap();
        assert_eq!(spec.sites.len(), 2);
        assert_eq!(spec.worker.walltime_s, Some(3600));
        assert_eq!(spec.heartbeat.start_timeout_ms, 120_000);
        assert_eq!(spec.scaling.prediction_horizon_s, 120);
        assert_eq!(spec.tasks_topic(), "pool.ptycho.tasks");
    }

    #[test]
    fn defaults_fill_in() {
        let s = PoolSpec::from_toml(EXAMPLE).unwrap();
        assert_eq!(s.worker.cores, 1);
        assert_eq!(s.heartbeat, HeartbeatSpec::default());
        assert_eq!(s.tasks.retries, 3);
        assert_eq!(s.site("hpc").unwrap().provider, ProviderKind::Slurm);
    }

    fn faults_of(edit: impl FnOnce(&mut PoolSpec)) -> Vec<&'static str> {
        let mut s: PoolSpec = toml::from_str(EXAMPLE).unwrap();
        edit(&mut s);
        s.faults().iter().map(|f| f.name()).collect()
    }

    #[test]
    fn every_fault_is_named() {
        assert_eq!(faults_of(|s| s.name = "a b".into()), ["bad-name"]);
        assert_eq!(faults_of(|s| s.sites.clear()), ["no-sites"]);
        assert_eq!(
            faults_of(|s| s.sites[1].name = "edge".into()),
            ["duplicate-site"]
        );
        assert_eq!(faults_of(|s| s.sites[0].min = 5), ["site-min-above-max"]);
        assert_eq!(
            faults_of(|s| s.scaling.min_total = 9),
            ["min-total-above-max-total"]
        );
        assert_eq!(
            faults_of(|s| {
                s.scaling.min_total = 21;
                s.scaling.max_total = 30
            }),
            ["min-total-above-sites"]
        );
        assert_eq!(
            faults_of(|s| {
                s.sites[0].min = 4;
                s.sites[1].min = 5
            }),
            ["site-minimums-above-max-total"]
        );
        assert_eq!(
            faults_of(|s| {
                s.scaling.max_total = 0;
                s.scaling.min_total = 0;
                s.sites[0].min = 0;
                s.sites[1].min = 0;
            }),
            ["zero-max-total"]
        );
        assert_eq!(faults_of(|s| s.worker.command.clear()), ["empty-command"]);
        assert_eq!(
            faults_of(|s| s.worker.walltime_s = Some(60)),
            ["walltime-within-drain"]
        );
        assert_eq!(
            faults_of(|s| s.heartbeat.timeout_ms = 1500),
            ["heartbeat-timeout-too-short"]
        );
        assert_eq!(
            faults_of(|s| s.tasks.backoff_max_ms = 1),
            ["backoff-max-below-backoff"]
        );
        assert_eq!(
            faults_of(|s| s.sites[0].partition = Some("x".into())),
            ["slurm-setting-on-local-site"]
        );
        assert_eq!(
            faults_of(|s| {
                s.worker.cores = 0;
                s.worker.memory_mb = 0;
                s.scaling.backlog_per_worker = 0;
                s.scaling.catch_up_target_s = 0;
            }),
            [
                "zero-backlog-per-worker",
                "zero-catch-up-target",
                "zero-cores",
                "zero-memory"
            ]
        );
    }

    #[test]
    fn all_faults_are_reported_at_once_with_their_names() {
        let bad = EXAMPLE
            .replace("min_total = 2", "min_total = 9")
            .replace("min = 1\nmax = 4", "min = 5\nmax = 4");
        let e = PoolSpec::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("2 fault(s)"), "{e}");
        assert!(
            e.contains("site-min-above-max: site 'edge' has min 5 above max 4"),
            "{e}"
        );
        assert!(e.contains("min-total-above-max-total"), "{e}");
    }

    #[test]
    fn unknown_keys_and_providers_are_parse_errors() {
        let e = PoolSpec::from_toml(&EXAMPLE.replace("walltime_s", "wall_time_s")).unwrap_err();
        assert!(matches!(e, SpecError::Parse(_)));
        let e = PoolSpec::from_toml(&format!("{EXAMPLE}\nbogus = 1")).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = PoolSpec::from_toml(&EXAMPLE.replace("\"slurm\"", "\"pbs\"")).unwrap_err();
        assert!(e.to_string().contains("pbs"), "{e}");
    }

    #[test]
    fn backoff_doubles_and_saturates() {
        let t = TaskSpec {
            retries: 3,
            backoff_ms: 100,
            backoff_max_ms: 1000,
        };
        let ms: Vec<u128> = (0..7).map(|a| t.backoff(a).as_millis()).collect();
        assert_eq!(ms, [0, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(t.backoff(200).as_millis(), 1000);
    }
}
