//! Log configuration: segment size, index density, fsync policy, retention
//! and batch limits.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

use crate::batch::BatchLimits;

/// When appended data is forced to stable storage with `fdatasync`.
///
/// ```
/// use diaspora_log::FsyncPolicy;
/// use std::time::Duration;
/// assert_eq!("always".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Always);
/// assert_eq!("interval".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Interval(Duration::from_millis(100)));
/// assert_eq!("interval:250ms".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Interval(Duration::from_millis(250)));
/// assert_eq!("interval:250".parse::<FsyncPolicy>().unwrap().to_string(), "interval:250ms");
/// assert!("sometimes".parse::<FsyncPolicy>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every append is durable before it returns.
    Always,
    /// Sync when at least this long has passed since the last sync (checked
    /// on append and by [`crate::Log::sync_if_due`] from a ticker). A crash
    /// loses at most about one interval of acknowledged appends.
    Interval(Duration),
    /// Never sync; the OS decides. A crash may lose any unsynced appends.
    Never,
}

/// The default fsync interval.
pub const FSYNC_INTERVAL_DEFAULT: Duration = Duration::from_millis(100);

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::Interval(FSYNC_INTERVAL_DEFAULT)
    }
}

/// A string that is not an fsync policy.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid fsync policy {input:?}: expected \"always\", \"never\", \"interval\" or \"interval:<ms>[ms|s]\"")]
pub struct ParseFsyncPolicyError {
    /// The rejected input.
    pub input: String,
}

impl FromStr for FsyncPolicy {
    type Err = ParseFsyncPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseFsyncPolicyError {
            input: s.to_string(),
        };
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "always" => return Ok(FsyncPolicy::Always),
            "never" => return Ok(FsyncPolicy::Never),
            "interval" => return Ok(FsyncPolicy::default()),
            _ => {}
        }
        let spec = t.strip_prefix("interval:").ok_or_else(err)?.trim();
        let (digits, scale_ms) = if let Some(d) = spec.strip_suffix("ms") {
            (d, 1)
        } else if let Some(d) = spec.strip_suffix('s') {
            (d, 1000)
        } else {
            (spec, 1)
        };
        let value: u64 = digits.trim().parse().map_err(|_| err())?;
        let ms = value.checked_mul(scale_ms).ok_or_else(err)?;
        Ok(FsyncPolicy::Interval(Duration::from_millis(ms)))
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => write!(f, "always"),
            FsyncPolicy::Never => write!(f, "never"),
            FsyncPolicy::Interval(d) => write!(f, "interval:{}ms", d.as_millis()),
        }
    }
}

/// Smallest allowed `segment_bytes_max`.
pub const SEGMENT_BYTES_MIN: u64 = 1024;
/// Largest allowed `segment_bytes_max`: index positions are u32.
pub const SEGMENT_BYTES_LIMIT: u64 = u32::MAX as u64;

/// Configuration of one [`crate::Log`].
///
/// ```
/// use diaspora_log::{FsyncPolicy, LogConfig};
/// let config = LogConfig { fsync: FsyncPolicy::Never, ..LogConfig::default() };
/// assert_eq!(config.segment_bytes_max, 128 * 1024 * 1024);
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment rolls before it would exceed this many bytes (a single
    /// larger batch gets a segment of its own). Default 128 MiB.
    pub segment_bytes_max: u64,
    /// Bytes of segment data between sparse index entries. Default 4096.
    pub index_interval_bytes: u32,
    /// When to fsync. Default `interval:100ms`.
    pub fsync: FsyncPolicy,
    /// Delete the oldest sealed segments while the log is larger than this.
    pub retention_bytes_max: Option<u64>,
    /// Delete sealed segments whose newest record is older than this.
    pub retention_age: Option<std::time::Duration>,
    /// Limits applied to appended batches.
    pub limits: BatchLimits,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes_max: 128 * 1024 * 1024,
            index_interval_bytes: 4096,
            fsync: FsyncPolicy::default(),
            retention_bytes_max: None,
            retention_age: None,
            limits: BatchLimits::default(),
        }
    }
}

/// A configuration value outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid config: {field} {value} {reason}")]
pub struct ConfigError {
    /// The field name.
    pub field: &'static str,
    /// The rejected value.
    pub value: u64,
    /// What range it must be in.
    pub reason: String,
}

impl LogConfig {
    /// Checks every field against its allowed range.
    ///
    /// ```
    /// use diaspora_log::LogConfig;
    /// let bad = LogConfig { segment_bytes_max: 10, ..LogConfig::default() };
    /// assert_eq!(
    ///     bad.validate().unwrap_err().to_string(),
    ///     "invalid config: segment_bytes_max 10 is below the minimum 1024"
    /// );
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.segment_bytes_max < SEGMENT_BYTES_MIN {
            return Err(ConfigError {
                field: "segment_bytes_max",
                value: self.segment_bytes_max,
                reason: format!("is below the minimum {SEGMENT_BYTES_MIN}"),
            });
        }
        if self.segment_bytes_max > SEGMENT_BYTES_LIMIT {
            return Err(ConfigError {
                field: "segment_bytes_max",
                value: self.segment_bytes_max,
                reason: format!("exceeds the maximum {SEGMENT_BYTES_LIMIT}"),
            });
        }
        let min_batch = crate::BATCH_HEADER_BYTES as u64 + 4;
        if u64::from(self.limits.batch_bytes_max) < min_batch {
            return Err(ConfigError {
                field: "limits.batch_bytes_max",
                value: u64::from(self.limits.batch_bytes_max),
                reason: format!("is below the smallest possible batch {min_batch}"),
            });
        }
        if self.limits.records_per_batch_max == 0 {
            return Err(ConfigError {
                field: "limits.records_per_batch_max",
                value: 0,
                reason: "must be at least 1".to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_roundtrip() {
        for s in ["always", "never", "interval:100ms", "interval:2000ms"] {
            assert_eq!(s.parse::<FsyncPolicy>().unwrap().to_string(), s);
        }
        assert_eq!(
            "interval:2s".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Interval(Duration::from_secs(2))
        );
        assert_eq!(
            " Always ".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Always
        );
        for bad in ["", "interval:", "interval:x", "interval:-5", "intervals"] {
            assert!(bad.parse::<FsyncPolicy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn validate_rejects_out_of_range() {
        let c = LogConfig {
            segment_bytes_max: u64::from(u32::MAX) + 1,
            ..LogConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("segment_bytes_max"));
        assert!(LogConfig::default().validate().is_ok());
    }
}
