//! Providers: what starts, observes and stops a worker's process or job.
//!
//! One trait, two implementations: [`local::LocalProvider`] (child
//! processes of the pool, each in its own process group, walltime enforced
//! like a batch system would) and [`slurm::SlurmProvider`] (`sbatch`,
//! `squeue`, `scancel`, `sacct` where accounting exists). Calls block (they
//! run commands); async shells call them from a blocking task.

pub mod local;
pub mod slurm;

use crate::spec::ProviderKind;
use crate::workers::JobState;
use std::path::PathBuf;

/// What to launch.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    /// The worker id (exported to the worker as `DIASPORA_POOL_WORKER`).
    pub worker_id: String,
    /// The pool's name (`DIASPORA_POOL`).
    pub pool: String,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Cores.
    pub cores: u32,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// Wall-clock limit, seconds.
    pub walltime_s: Option<u64>,
    /// Where the worker's stdout and stderr go (`WORKER.out`, `WORKER.err`);
    /// `None` discards them.
    pub log_dir: Option<PathBuf>,
}

impl LaunchRequest {
    /// The environment a worker gets on top of `env`.
    pub fn full_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("DIASPORA_POOL".to_string(), self.pool.clone()),
            ("DIASPORA_POOL_WORKER".to_string(), self.worker_id.clone()),
        ];
        env.extend(self.env.iter().cloned());
        env
    }
}

/// A provider failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// A command could not be run at all.
    #[error("{provider}: cannot run {command}: {source}")]
    Spawn {
        /// Provider.
        provider: ProviderKind,
        /// What it tried to run.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("{provider}: {command} failed ({status}): {stderr}")]
    Command {
        /// Provider.
        provider: ProviderKind,
        /// What it ran.
        command: String,
        /// Exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// A command's output made no sense.
    #[error("{provider}: cannot read the output of {command}: {detail}")]
    Output {
        /// Provider.
        provider: ProviderKind,
        /// What it ran.
        command: String,
        /// What was wrong.
        detail: String,
    },
    /// The request cannot be met by this provider.
    #[error("{provider}: {detail}")]
    Refused {
        /// Provider.
        provider: ProviderKind,
        /// Why.
        detail: String,
    },
    /// The provider holds as many jobs as it may.
    #[error("{provider}: {jobs} jobs held, the limit")]
    Full {
        /// Provider.
        provider: ProviderKind,
        /// The limit.
        jobs: usize,
    },
}

/// Starts, observes and stops workers.
pub trait Provider: Send {
    /// Which kind it is.
    fn kind(&self) -> ProviderKind;

    /// Launches one worker; returns its job id.
    fn launch(&mut self, req: &LaunchRequest) -> Result<String, ProviderError>;

    /// The state of every job launched and not yet reported ended. An
    /// `Ended` job is reported once, then forgotten.
    fn poll(&mut self) -> Result<Vec<(String, JobState)>, ProviderError>;

    /// Asks job `job` to stop (SIGTERM, then SIGKILL after a grace); its end
    /// is reported by a later `poll` as `Cancelled`.
    fn cancel(&mut self, job: &str) -> Result<(), ProviderError>;

    /// Jobs held (launched, not yet reported ended).
    fn jobs(&self) -> usize;
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_a_shell() {
        let args = ["plain", "with space", "it's", "", "$HOME", "a\nb", "--x=1"];
        let line = args
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("for a in {line}; do printf '%s\\0' \"$a\"; done"))
            .output()
            .unwrap();
        let got: Vec<String> = out
            .stdout
            .split(|b| *b == 0)
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect();
        assert_eq!(&got[..args.len()], &args);
    }
}
