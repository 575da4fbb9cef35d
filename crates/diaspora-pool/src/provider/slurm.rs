//! The Slurm provider: one batch job per worker.
//!
//! - launch: `sbatch --parsable` with the worker's shape (`--cpus-per-task`,
//!   `--mem`, `--time`, partition and account) and a script on stdin that
//!   exports the worker's environment and `exec`s its command;
//! - observe: one `squeue --me -h -t all` per poll for every job held
//!   (states of finished jobs stay visible for the cluster's `MinJobAge`);
//! - a job missing from `squeue` is not declared lost at once (Parsl's
//!   "lost block after an squeue race"): it must be missing from
//!   `vanish_polls` polls in a row *and* for `vanish_grace`; then `sacct`
//!   is asked (where accounting exists) for its final state, and only
//!   when it knows nothing is the job reported `Vanished`;
//! - stop: `scancel` (SIGTERM, then SIGKILL after the cluster's
//!   `KillWait`).
//!
//! Slurm time limits are whole minutes: a `walltime_s` that is not a
//! multiple of 60 is rounded up for `--time`, and the pool drains the
//! worker by its own (shorter) walltime, so the rounding only adds margin.
//!
//! Every command runs with a time-out (`command_timeout`), so a hung
//! controller delays a poll but never hangs the pool.

use super::{shell_quote, LaunchRequest, Provider, ProviderError};
use crate::spec::ProviderKind;
use crate::workers::{JobEnd, JobState};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A Slurm job state as `squeue`/`sacct` print it, mapped.
pub fn map_state(state: &str, reason: &str) -> Result<JobState, String> {
    // sacct may print "CANCELLED by 0"; squeue prints the bare word.
    let word = state.split_whitespace().next().unwrap_or("");
    let failed = |what: &str| {
        JobState::Ended(JobEnd::Failed {
            detail: if reason.is_empty() || reason == "None" {
                what.to_string()
            } else {
                format!("{what} ({reason})")
            },
        })
    };
    Ok(match word {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
        | "RESV_DEL_HOLD" => JobState::Pending,
        "RUNNING" | "COMPLETING" | "SIGNALING" | "STAGE_OUT" | "RESIZING" | "SUSPENDED"
        | "STOPPED" => JobState::Running,
        "COMPLETED" => JobState::Ended(JobEnd::Exited { code: 0 }),
        "CANCELLED" => JobState::Ended(JobEnd::Cancelled),
        "TIMEOUT" | "DEADLINE" => JobState::Ended(JobEnd::Timeout),
        "FAILED" | "NODE_FAIL" | "BOOT_FAIL" | "PREEMPTED" | "OUT_OF_MEMORY" | "SPECIAL_EXIT"
        | "REVOKED" => failed(word),
        other => return Err(format!("unknown Slurm job state '{other}'")),
    })
}

/// One line of `squeue -o '%i|%T|%r'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueLine {
    /// Job id (array and het-job ids as printed, e.g. `123_4`).
    pub job: String,
    /// State word.
    pub state: String,
    /// Reason.
    pub reason: String,
}

/// Parses `squeue -h -o '%i|%T|%r'` output. Blank lines are skipped; any
/// other line that is not three `|`-separated fields with a plausible job
/// id and state is an error naming the line.
pub fn parse_squeue(text: &str) -> Result<Vec<QueueLine>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut f = line.splitn(3, '|');
        let (Some(job), Some(state), Some(reason)) = (f.next(), f.next(), f.next()) else {
            return Err(format!(
                "line {}: expected 'id|state|reason', got '{line}'",
                n + 1
            ));
        };
        let (job, state) = (job.trim(), state.trim());
        if job.is_empty()
            || !job
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'_' | b'+' | b'[' | b']' | b'-'))
        {
            return Err(format!("line {}: bad job id '{job}'", n + 1));
        }
        if state.is_empty() || !state.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            return Err(format!("line {}: bad job state '{state}'", n + 1));
        }
        out.push(QueueLine {
            job: job.to_string(),
            state: state.to_string(),
            reason: reason.trim().to_string(),
        });
    }
    Ok(out)
}

/// Parses `sbatch --parsable` output: `ID` or `ID;CLUSTER`.
pub fn parse_sbatch(text: &str) -> Result<String, String> {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let id = first.split(';').next().unwrap_or("").trim();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a job id, got '{}'", text.trim()));
    }
    Ok(id.to_string())
}

/// Runs every parser of Slurm command output on `bytes` (the fuzz target's
/// body; also run by the property tests).
pub fn fuzz_output(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(lines) = parse_squeue(&text) {
        for l in lines {
            let _ = map_state(&l.state, &l.reason);
        }
    }
    let _ = parse_sbatch(&text);
    let mut f = text.splitn(2, '|');
    let _ = map_state(f.next().unwrap_or(""), f.next().unwrap_or(""));
}

/// Settings of the Slurm provider.
#[derive(Debug, Clone)]
pub struct SlurmConfig {
    /// `sbatch --partition`.
    pub partition: Option<String>,
    /// `sbatch --account`.
    pub account: Option<String>,
    /// Where the Slurm commands live (`None`: on `PATH`).
    pub bin_dir: Option<PathBuf>,
    /// Polls in a row a job must be missing before it may be declared gone.
    pub vanish_polls: u32,
    /// ...and for at least this long.
    pub vanish_grace: Duration,
    /// Longest a Slurm command may take.
    pub command_timeout: Duration,
    /// Most jobs held at once.
    pub max_jobs: usize,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        SlurmConfig {
            partition: None,
            account: None,
            bin_dir: None,
            vanish_polls: 3,
            vanish_grace: Duration::from_secs(30),
            command_timeout: Duration::from_secs(30),
            max_jobs: 4096,
        }
    }
}

struct Held {
    missing_since: Option<Instant>,
    missing_polls: u32,
}

/// Batch-job workers on Slurm.
pub struct SlurmProvider {
    cfg: SlurmConfig,
    jobs: BTreeMap<String, Held>,
    /// Whether `sacct` answered last time (accounting exists).
    sacct_works: Option<bool>,
}

/// What a finished command printed.
struct Output {
    ok: bool,
    status: String,
    stdout: String,
    stderr: String,
}

impl SlurmProvider {
    /// A provider with these settings.
    pub fn new(cfg: SlurmConfig) -> SlurmProvider {
        SlurmProvider {
            cfg,
            jobs: BTreeMap::new(),
            sacct_works: None,
        }
    }

    fn program(&self, name: &str) -> PathBuf {
        match &self.cfg.bin_dir {
            Some(d) => d.join(name),
            None => PathBuf::from(name),
        }
    }

    fn run(
        &self,
        name: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<Output, ProviderError> {
        let command = format!("{name} {}", args.join(" "));
        let mut child = Command::new(self.program(name))
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ProviderError::Spawn {
                provider: ProviderKind::Slurm,
                command: command.clone(),
                source,
            })?;
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("piped");
            let _ = pipe.write_all(text.as_bytes());
        }
        // Drain the pipes on threads so a chatty command cannot block on a
        // full pipe while we wait for it.
        let mut so = child.stdout.take().expect("piped");
        let mut se = child.stderr.take().expect("piped");
        let t_out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = so.read_to_string(&mut s);
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = se.read_to_string(&mut s);
            s
        });
        let t0 = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if t0.elapsed() >= self.cfg.command_timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ProviderError::Command {
                        provider: ProviderKind::Slurm,
                        command,
                        status: format!("timed out after {:?}", self.cfg.command_timeout),
                        stderr: String::new(),
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(source) => {
                    return Err(ProviderError::Spawn {
                        provider: ProviderKind::Slurm,
                        command,
                        source,
                    })
                }
            }
        };
        Ok(Output {
            ok: status.success(),
            status: status.to_string(),
            stdout: t_out.join().unwrap_or_default(),
            stderr: t_err.join().unwrap_or_default(),
        })
    }

    fn run_ok(
        &self,
        name: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<String, ProviderError> {
        let o = self.run(name, args, stdin)?;
        if !o.ok {
            return Err(ProviderError::Command {
                provider: ProviderKind::Slurm,
                command: format!("{name} {}", args.join(" ")),
                status: o.status,
                stderr: o.stderr.trim().to_string(),
            });
        }
        Ok(o.stdout)
    }

    /// The script `sbatch` reads on stdin for `req`.
    pub fn script(req: &LaunchRequest) -> String {
        let mut s = String::from("#!/bin/sh\n");
        for (k, v) in req.full_env() {
            s += &format!("export {k}={}\n", shell_quote(&v));
        }
        s += "exec";
        for a in &req.command {
            s += " ";
            s += &shell_quote(a);
        }
        s += "\n";
        s
    }

    /// The `sbatch` arguments for `req`.
    pub fn sbatch_args(&self, req: &LaunchRequest) -> Vec<String> {
        let mut a = vec![
            "--parsable".to_string(),
            format!("--job-name=diaspora.{}.{}", req.pool, req.worker_id),
            format!("--cpus-per-task={}", req.cores),
            format!("--mem={}M", req.memory_mb),
            "--ntasks=1".to_string(),
            "--export=ALL".to_string(),
        ];
        if let Some(wt) = req.walltime_s {
            a.push(format!("--time={}", wt.div_ceil(60).max(1)));
        }
        if let Some(p) = &self.cfg.partition {
            a.push(format!("--partition={p}"));
        }
        if let Some(acc) = &self.cfg.account {
            a.push(format!("--account={acc}"));
        }
        match &req.log_dir {
            Some(d) => {
                a.push(format!(
                    "--output={}",
                    d.join(format!("{}.out", req.worker_id)).display()
                ));
                a.push(format!(
                    "--error={}",
                    d.join(format!("{}.err", req.worker_id)).display()
                ));
            }
            None => {
                a.push("--output=/dev/null".into());
                a.push("--error=/dev/null".into());
            }
        }
        a
    }

    /// The final state `sacct` knows for `job`, or `None` (no accounting,
    /// or nothing recorded).
    fn sacct_state(&mut self, job: &str) -> Option<JobState> {
        if self.sacct_works == Some(false) {
            return None;
        }
        let args: Vec<String> = ["-n", "-P", "-X", "-o", "State,Reason", "-j", job]
            .iter()
            .map(|s| s.to_string())
            .collect();
        match self.run("sacct", &args, None) {
            Ok(o) if o.ok => {
                self.sacct_works = Some(true);
                let line = o.stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
                let mut f = line.splitn(2, '|');
                let state = f.next().unwrap_or("");
                map_state(state, f.next().unwrap_or("")).ok()
            }
            _ => {
                // "Slurm accounting storage is disabled": fall back to squeue alone.
                self.sacct_works = Some(false);
                None
            }
        }
    }
}

impl Provider for SlurmProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Slurm
    }

    fn launch(&mut self, req: &LaunchRequest) -> Result<String, ProviderError> {
        if self.jobs.len() >= self.cfg.max_jobs {
            return Err(ProviderError::Full {
                provider: ProviderKind::Slurm,
                jobs: self.cfg.max_jobs,
            });
        }
        if req.command.is_empty() {
            return Err(ProviderError::Refused {
                provider: ProviderKind::Slurm,
                detail: "empty worker command".into(),
            });
        }
        let args = self.sbatch_args(req);
        let out = self.run_ok("sbatch", &args, Some(&Self::script(req)))?;
        let id = parse_sbatch(&out).map_err(|detail| ProviderError::Output {
            provider: ProviderKind::Slurm,
            command: "sbatch --parsable".into(),
            detail,
        })?;
        self.jobs.insert(
            id.clone(),
            Held {
                missing_since: None,
                missing_polls: 0,
            },
        );
        Ok(id)
    }

    fn poll(&mut self) -> Result<Vec<(String, JobState)>, ProviderError> {
        if self.jobs.is_empty() {
            return Ok(Vec::new());
        }
        let args: Vec<String> = ["--me", "-h", "-t", "all", "-o", "%i|%T|%r"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let text = self.run_ok("squeue", &args, None)?;
        let lines = parse_squeue(&text).map_err(|detail| ProviderError::Output {
            provider: ProviderKind::Slurm,
            command: "squeue".into(),
            detail,
        })?;
        let seen: BTreeMap<&str, &QueueLine> = lines.iter().map(|l| (l.job.as_str(), l)).collect();
        let now = Instant::now();
        let mut out = Vec::new();
        let mut gone = Vec::new();
        let ids: Vec<String> = self.jobs.keys().cloned().collect();
        for id in ids {
            match seen.get(id.as_str()) {
                Some(l) => {
                    let h = self.jobs.get_mut(&id).expect("held");
                    h.missing_polls = 0;
                    h.missing_since = None;
                    let st =
                        map_state(&l.state, &l.reason).map_err(|detail| ProviderError::Output {
                            provider: ProviderKind::Slurm,
                            command: "squeue".into(),
                            detail,
                        })?;
                    if matches!(st, JobState::Ended(_)) {
                        gone.push(id.clone());
                    }
                    out.push((id, st));
                }
                None => {
                    let h = self.jobs.get_mut(&id).expect("held");
                    h.missing_polls += 1;
                    let since = *h.missing_since.get_or_insert(now);
                    if h.missing_polls >= self.cfg.vanish_polls
                        && now.duration_since(since) >= self.cfg.vanish_grace
                    {
                        let st = self
                            .sacct_state(&id)
                            .filter(|s| matches!(s, JobState::Ended(_)))
                            .unwrap_or(JobState::Ended(JobEnd::Vanished));
                        gone.push(id.clone());
                        out.push((id, st));
                    } else {
                        // Not seen (yet): keep the last belief; report
                        // nothing new for it.
                    }
                }
            }
        }
        for id in gone {
            self.jobs.remove(&id);
        }
        Ok(out)
    }

    fn cancel(&mut self, job: &str) -> Result<(), ProviderError> {
        self.run_ok("scancel", &[job.to_string()], None).map(|_| ())
    }

    fn jobs(&self) -> usize {
        self.jobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn squeue_lines_parse_and_map() {
        let t = "101|RUNNING|None\n102|PENDING|Resources\n\n103|TIMEOUT|TimeLimit\n104_2|CANCELLED|None\n";
        let l = parse_squeue(t).unwrap();
        assert_eq!(l.len(), 4);
        assert_eq!(l[1].reason, "Resources");
        assert_eq!(map_state(&l[0].state, &l[0].reason), Ok(JobState::Running));
        assert_eq!(map_state(&l[1].state, ""), Ok(JobState::Pending));
        assert_eq!(
            map_state(&l[2].state, ""),
            Ok(JobState::Ended(JobEnd::Timeout))
        );
        assert_eq!(
            map_state("CANCELLED by 0", ""),
            Ok(JobState::Ended(JobEnd::Cancelled))
        );
        assert_eq!(
            map_state("NODE_FAIL", "NodeDown"),
            Ok(JobState::Ended(JobEnd::Failed {
                detail: "NODE_FAIL (NodeDown)".into()
            }))
        );
        assert!(map_state("WEIRD", "").unwrap_err().contains("WEIRD"));
        assert!(parse_squeue("101 RUNNING").unwrap_err().contains("line 1"));
        assert!(parse_squeue("abc|RUNNING|x")
            .unwrap_err()
            .contains("bad job id"));
        assert!(parse_squeue("1|running|x")
            .unwrap_err()
            .contains("bad job state"));
    }

    #[test]
    fn sbatch_output_parses() {
        assert_eq!(parse_sbatch("4242\n"), Ok("4242".into()));
        assert_eq!(parse_sbatch("4242;cluster\n"), Ok("4242".into()));
        assert!(parse_sbatch("Submitted batch job 1").is_err());
        assert!(parse_sbatch("").is_err());
    }

    #[test]
    fn the_script_exports_and_execs_quoted() {
        let req = LaunchRequest {
            worker_id: "hpc-3".into(),
            pool: "p".into(),
            command: vec!["diaspora".into(), "pool".into(), "it's here".into()],
            env: vec![("X".into(), "a b".into())],
            cores: 2,
            memory_mb: 512,
            walltime_s: Some(90),
            log_dir: None,
        };
        let s = SlurmProvider::script(&req);
        assert!(s.contains("export DIASPORA_POOL_WORKER=hpc-3\n"), "{s}");
        assert!(s.contains("export X='a b'\n"), "{s}");
        assert!(s.ends_with("exec diaspora pool 'it'\\''s here'\n"), "{s}");
        let p = SlurmProvider::new(SlurmConfig {
            partition: Some("debug".into()),
            ..Default::default()
        });
        let a = p.sbatch_args(&req);
        assert!(
            a.contains(&"--time=2".to_string()),
            "90 s rounds up to 2 min: {a:?}"
        );
        assert!(a.contains(&"--cpus-per-task=2".to_string()));
        assert!(a.contains(&"--mem=512M".to_string()));
        assert!(a.contains(&"--partition=debug".to_string()));
    }

    #[test]
    fn a_missing_slurm_is_a_clear_error() {
        let mut p = SlurmProvider::new(SlurmConfig {
            bin_dir: Some("/nonexistent/slurm/bin".into()),
            ..Default::default()
        });
        let req = LaunchRequest {
            worker_id: "w".into(),
            pool: "p".into(),
            command: vec!["true".into()],
            env: vec![],
            cores: 1,
            memory_mb: 1,
            walltime_s: None,
            log_dir: None,
        };
        let e = p.launch(&req).unwrap_err().to_string();
        assert!(e.contains("slurm: cannot run sbatch"), "{e}");
    }

    proptest! {
        /// Whatever bytes squeue prints, parsing returns lines or an error,
        /// never panics; and printed lines read back as they were.
        #[test]
        fn squeue_parsing_never_panics(s in ".{0,300}", b in prop::collection::vec(any::<u8>(), 0..300)) {
            fuzz_output(s.as_bytes());
            fuzz_output(&b);
        }

        #[test]
        fn squeue_lines_round_trip(rows in prop::collection::vec(("[0-9]{1,9}", "[A-Z_]{1,12}", "[A-Za-z0-9 ()]{0,20}"), 0..20)) {
            let text: String = rows.iter().map(|(i, s, r)| format!("{i}|{s}|{r}\n")).collect();
            let got = parse_squeue(&text).unwrap();
            prop_assert_eq!(got.len(), rows.len());
            for (g, (i, s, r)) in got.iter().zip(&rows) {
                prop_assert_eq!(&g.job, i);
                prop_assert_eq!(&g.state, s);
                prop_assert_eq!(&g.reason, r.trim());
            }
        }
    }
}
