//! What a run of `diaspora bench peers` measures: the systems, the
//! workloads, the acknowledgement window. Pure: parsing and validation, no
//! I/O.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Bytes every payload starts with: the sequence number and the send
/// timestamp, little-endian u64 each (see [`crate::workload`]).
pub const HEADER_BYTES: usize = 16;
/// Largest payload: NATS is given `max_payload: 8MB`; this leaves room for
/// the protocol's own bytes around a message.
pub const SIZE_BYTES_MAX: usize = 4 << 20;
/// Most items in one workload after scaling.
pub const ITEMS_MAX: u64 = 1_000_000_000;

/// One of the systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// The diaspora fabric: a node (embedded, or `diaspora serve`), QUIC + TLS.
    Diaspora,
    /// NATS JetStream: `nats-server` with a file-storage stream.
    Nats,
    /// Redis Streams: `redis-server` with an append-only file.
    Redis,
}

impl System {
    /// Every system, in the report's order.
    pub const ALL: [System; 3] = [System::Diaspora, System::Nats, System::Redis];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            System::Diaspora => "diaspora",
            System::Nats => "nats",
            System::Redis => "redis",
        }
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for System {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "diaspora" => Ok(System::Diaspora),
            "nats" | "jetstream" => Ok(System::Nats),
            "redis" => Ok(System::Redis),
            _ => Err(ConfigError::UnknownSystem(s.to_string())),
        }
    }
}

/// A payload size and how many items of it one run moves (before `--scale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Workload {
    /// Payload bytes per item.
    pub size_bytes: usize,
    /// Items per run at scale 1.
    pub items: u64,
}

impl Workload {
    /// The workloads of the comparison: 128 B × 2 000 000, 1 KiB × 500 000
    /// and 1 MiB × 2 000.
    pub const DEFAULT: [Workload; 3] = [
        Workload {
            size_bytes: 128,
            items: 2_000_000,
        },
        Workload {
            size_bytes: 1024,
            items: 500_000,
        },
        Workload {
            size_bytes: 1 << 20,
            items: 2000,
        },
    ];

    /// Items after scaling (at least one).
    pub fn scaled_items(&self, scale: f64) -> u64 {
        ((self.items as f64 * scale).round() as u64).max(1)
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", format_size(self.size_bytes), self.items)
    }
}

impl FromStr for Workload {
    type Err = ConfigError;

    /// `SIZExITEMS`, SIZE in bytes with an optional `KiB`/`MiB` suffix:
    /// `128x2000000`, `1KiBx500000`, `1MiBx2000`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::BadWorkload(s.to_string());
        let (size, items) = s.trim().split_once(['x', 'X', '×']).ok_or_else(bad)?;
        let size_bytes = parse_size(size).ok_or_else(bad)?;
        let items = items.trim().replace('_', "").parse().map_err(|_| bad())?;
        Ok(Workload { size_bytes, items })
    }
}

/// Bytes from `N`, `NB`, `NKiB` or `NMiB` (`K`/`M` and `KB`/`MB` read as
/// binary units too).
pub fn parse_size(s: &str) -> Option<usize> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits.parse().ok()?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// `128 B`, `1 KiB`, `1 MiB`, `1536 B`: exact binary units only.
pub fn format_size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes % (1 << 10) == 0 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// Everything `diaspora bench peers` runs ([`Default`]: its defaults).
#[derive(Debug, Clone)]
pub struct PeersConfig {
    /// Systems to compare, in the order they run in the first round.
    pub systems: Vec<System>,
    /// Payload sizes and item counts.
    pub workloads: Vec<Workload>,
    /// Multiplies every workload's item count (e.g. 0.01 for a quick look).
    pub scale: f64,
    /// Rounds; each runs every workload on every system (the order of the
    /// systems rotates from round to round). Medians are reported.
    pub rounds: u32,
    /// Most items the producer has sent but not seen acknowledged.
    pub window_items_max: usize,
    /// Most payload bytes the producer has sent but not seen acknowledged.
    pub window_bytes_max: usize,
    /// Most payload bytes a consumer asks for at once (a diaspora fetch, a
    /// JetStream pull, an XREAD COUNT).
    pub fetch_bytes_max: usize,
    /// Items whose send time falls in the paced run's first this-many
    /// milliseconds are left out of its latency percentiles (at most half
    /// the items).
    pub warmup: Duration,
    /// How long the consumer may go without receiving anything before the
    /// run fails.
    pub stall_timeout: Duration,
    /// Run the diaspora node as its own process (`PATH serve`) instead of
    /// in this process.
    pub diaspora_binary: Option<PathBuf>,
    /// `nats-server` to run (default: the newest on PATH).
    pub nats_server: Option<PathBuf>,
    /// `redis-server` to run (default: the one on PATH).
    pub redis_server: Option<PathBuf>,
    /// NATS and Redis without TLS (the fabric always has it).
    pub plain_peers: bool,
}

impl Default for PeersConfig {
    fn default() -> Self {
        PeersConfig {
            systems: System::ALL.to_vec(),
            workloads: Workload::DEFAULT.to_vec(),
            scale: 1.0,
            rounds: 3,
            window_items_max: 5000,
            window_bytes_max: 64 << 20,
            fetch_bytes_max: 4 << 20,
            warmup: Duration::from_millis(500),
            stall_timeout: Duration::from_secs(60),
            diaspora_binary: None,
            nats_server: None,
            redis_server: None,
            plain_peers: false,
        }
    }
}

impl PeersConfig {
    /// Systems from a list of names (`diaspora,nats,redis`); duplicates
    /// and unknown names are errors.
    pub fn parse_systems<S: AsRef<str>>(names: &[S]) -> Result<Vec<System>, ConfigError> {
        let mut systems = Vec::new();
        for name in names.iter().flat_map(|n| n.as_ref().split(',')) {
            if name.trim().is_empty() {
                continue;
            }
            let s: System = name.parse()?;
            if systems.contains(&s) {
                return Err(ConfigError::DuplicateSystem(s));
            }
            systems.push(s);
        }
        Ok(systems)
    }

    /// Checks every limit; the error names the value and the limit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.systems.is_empty() {
            return Err(ConfigError::NoSystems);
        }
        for (i, s) in self.systems.iter().enumerate() {
            if self.systems[..i].contains(s) {
                return Err(ConfigError::DuplicateSystem(*s));
            }
        }
        if self.workloads.is_empty() {
            return Err(ConfigError::NoWorkloads);
        }
        if !(self.scale.is_finite() && self.scale > 0.0 && self.scale <= 100.0) {
            return Err(ConfigError::Scale(self.scale));
        }
        if self.rounds == 0 {
            return Err(ConfigError::Rounds);
        }
        for w in &self.workloads {
            if !(HEADER_BYTES..=SIZE_BYTES_MAX).contains(&w.size_bytes) {
                return Err(ConfigError::Size(w.size_bytes));
            }
            if w.items == 0 || w.scaled_items(self.scale) > ITEMS_MAX {
                return Err(ConfigError::Items(w.scaled_items(self.scale)));
            }
        }
        if self.window_items_max == 0 || self.window_bytes_max == 0 {
            return Err(ConfigError::Window);
        }
        if self.fetch_bytes_max == 0 {
            return Err(ConfigError::Fetch);
        }
        if self.stall_timeout.is_zero() {
            return Err(ConfigError::StallTimeout);
        }
        Ok(())
    }

    /// Items the producer may have unacknowledged for payloads of `size`
    /// bytes: `window_bytes_max / size`, at least 1, at most
    /// `window_items_max`. The same for every system.
    pub fn window_items(&self, size: usize) -> usize {
        (self.window_bytes_max / size.max(1)).clamp(1, self.window_items_max)
    }

    /// Items a consumer asks for at once for payloads of `size` bytes:
    /// `fetch_bytes_max / size`, at least 1.
    pub fn fetch_items(&self, size: usize) -> usize {
        (self.fetch_bytes_max / size.max(1)).max(1)
    }
}

/// A configuration that cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A system name that is not diaspora, nats or redis.
    #[error("unknown system {0:?}: expected diaspora, nats or redis")]
    UnknownSystem(String),
    /// A system named twice.
    #[error("system {0} is named twice")]
    DuplicateSystem(System),
    /// No system to run.
    #[error("no systems to compare: name at least one of diaspora, nats, redis")]
    NoSystems,
    /// A workload that is not SIZExITEMS.
    #[error("workload {0:?} is not SIZExITEMS (e.g. 128x2000000, 1KiBx500000, 1MiBx2000)")]
    BadWorkload(String),
    /// No workload to run.
    #[error("no workloads")]
    NoWorkloads,
    /// A scale out of (0, 100].
    #[error("scale {0} is out of range: it must be > 0 and ≤ 100")]
    Scale(f64),
    /// Zero rounds.
    #[error("rounds must be ≥ 1")]
    Rounds,
    /// A payload size out of range.
    #[error("payload size {0} B is out of range {HEADER_BYTES}..={SIZE_BYTES_MAX} B (a payload carries a {HEADER_BYTES}-byte sequence and timestamp)")]
    Size(usize),
    /// An item count out of range.
    #[error("{0} items per run is out of range 1..={ITEMS_MAX}")]
    Items(u64),
    /// A zero window.
    #[error("the acknowledgement window must allow at least one item and one byte")]
    Window,
    /// A zero fetch size.
    #[error("the consumer's fetch size must be at least one byte")]
    Fetch,
    /// A zero stall timeout.
    #[error("the stall timeout must be > 0")]
    StallTimeout,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systems_parse_from_a_list() {
        assert_eq!(
            PeersConfig::parse_systems(&["diaspora,nats", "redis"]).unwrap(),
            System::ALL.to_vec()
        );
        assert_eq!(
            PeersConfig::parse_systems(&[" NATS , redis "]).unwrap(),
            vec![System::Nats, System::Redis]
        );
        assert_eq!(
            PeersConfig::parse_systems(&["nats,nats"]),
            Err(ConfigError::DuplicateSystem(System::Nats))
        );
        assert_eq!(
            PeersConfig::parse_systems(&["kafka"]),
            Err(ConfigError::UnknownSystem("kafka".into()))
        );
        assert_eq!(PeersConfig::parse_systems::<&str>(&[]).unwrap(), vec![]);
    }

    #[test]
    fn workloads_parse_and_print() {
        let w: Workload = "1KiBx500000".parse().unwrap();
        assert_eq!(
            w,
            Workload {
                size_bytes: 1024,
                items: 500_000
            }
        );
        assert_eq!("1MiB×2_000".parse::<Workload>().unwrap().items, 2000);
        assert_eq!("128x2000000".parse::<Workload>().unwrap().size_bytes, 128);
        assert!("128".parse::<Workload>().is_err());
        assert!("1GiBx3".parse::<Workload>().is_err());
        assert!("x3".parse::<Workload>().is_err());
        assert_eq!(format_size(128), "128 B");
        assert_eq!(format_size(1024), "1 KiB");
        assert_eq!(format_size(1 << 20), "1 MiB");
        assert_eq!(format_size(1536), "1536 B");
        for w in Workload::DEFAULT {
            assert_eq!(
                w.to_string().replace(' ', "").parse::<Workload>().unwrap(),
                w
            );
        }
    }

    #[test]
    fn scaling_keeps_at_least_one_item() {
        let w = Workload::DEFAULT[2];
        assert_eq!(w.scaled_items(1.0), 2000);
        assert_eq!(w.scaled_items(0.005), 10);
        assert_eq!(w.scaled_items(1e-9), 1);
        assert_eq!(Workload::DEFAULT[0].scaled_items(0.01), 20_000);
    }

    #[test]
    fn the_defaults_are_valid_and_limits_are_named() {
        PeersConfig::default().validate().unwrap();
        let with = |f: fn(&mut PeersConfig)| {
            let mut c = PeersConfig::default();
            f(&mut c);
            c.validate()
        };
        assert_eq!(with(|c| c.systems.clear()), Err(ConfigError::NoSystems));
        assert_eq!(
            with(|c| c.systems = vec![System::Redis, System::Redis]),
            Err(ConfigError::DuplicateSystem(System::Redis))
        );
        assert_eq!(with(|c| c.scale = 0.0), Err(ConfigError::Scale(0.0)));
        assert!(with(|c| c.scale = f64::NAN).is_err());
        assert_eq!(with(|c| c.rounds = 0), Err(ConfigError::Rounds));
        assert_eq!(
            with(|c| c.workloads[0].size_bytes = 8),
            Err(ConfigError::Size(8))
        );
        assert_eq!(
            with(|c| c.workloads[2].size_bytes = 8 << 20),
            Err(ConfigError::Size(8 << 20))
        );
        assert_eq!(
            with(|c| c.workloads[1].items = 0),
            Err(ConfigError::Items(1))
        );
        assert_eq!(with(|c| c.window_items_max = 0), Err(ConfigError::Window));
        assert!(with(|c| c.stall_timeout = Duration::ZERO).is_err());
        let msg = with(|c| c.workloads[0].size_bytes = 8)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("8 B") && msg.contains("16..=4194304"), "{msg}");
    }

    #[test]
    fn the_window_is_bounded_by_items_and_bytes() {
        let c = PeersConfig::default();
        assert_eq!(c.window_items(128), 5000);
        assert_eq!(c.window_items(1024), 5000);
        assert_eq!(c.window_items(1 << 20), 64);
        assert_eq!(c.window_items(4 << 20), 16);
        let tiny = PeersConfig {
            window_bytes_max: 100,
            ..PeersConfig::default()
        };
        assert_eq!(tiny.window_items(1 << 20), 1);
        assert_eq!(c.fetch_items(128), 32768);
        assert_eq!(c.fetch_items(1 << 20), 4);
        assert_eq!(c.fetch_items(8 << 20), 1);
    }
}
