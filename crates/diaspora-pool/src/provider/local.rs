//! The local provider: workers are child processes of the pool.
//!
//! Each worker runs in its own process group, so stopping it stops whatever
//! it started. A walltime is enforced as a batch system would: SIGTERM at
//! the limit, SIGKILL `kill_wait` later, reported as `Timeout`. `cancel`
//! does the same and reports `Cancelled`. Dropping the provider kills and
//! reaps every child it still holds, so no worker outlives its pool.

use super::{LaunchRequest, Provider, ProviderError};
use crate::spec::ProviderKind;
use crate::workers::{JobEnd, JobState};
use std::collections::BTreeMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Job {
    child: Child,
    started: Instant,
    walltime: Option<Duration>,
    /// Why it is being stopped, and when SIGTERM went.
    stopping: Option<(JobEnd, Instant)>,
    killed: bool,
}

/// Child-process workers.
pub struct LocalProvider {
    jobs: BTreeMap<String, Job>,
    next: u64,
    kill_wait: Duration,
    max_jobs: usize,
}

impl LocalProvider {
    /// A provider that waits `kill_wait` between SIGTERM and SIGKILL and
    /// holds at most `max_jobs` children.
    pub fn new(kill_wait: Duration, max_jobs: usize) -> LocalProvider {
        LocalProvider {
            jobs: BTreeMap::new(),
            next: 0,
            kill_wait,
            max_jobs,
        }
    }

    /// The OS process id of job `job` (for tests that kill workers).
    pub fn pid(&self, job: &str) -> Option<u32> {
        self.jobs.get(job).map(|j| j.child.id())
    }

    fn signal(job: &mut Job, sig: i32) {
        let pgid = job.child.id() as i32;
        // SAFETY: kill(2) on our own child's process group; a stale group
        // is an ESRCH we ignore.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

impl Default for LocalProvider {
    fn default() -> Self {
        LocalProvider::new(Duration::from_secs(5), 1024)
    }
}

impl Provider for LocalProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Local
    }

    fn launch(&mut self, req: &LaunchRequest) -> Result<String, ProviderError> {
        if self.jobs.len() >= self.max_jobs {
            return Err(ProviderError::Full {
                provider: ProviderKind::Local,
                jobs: self.max_jobs,
            });
        }
        let (program, args) = req.command.split_first().ok_or(ProviderError::Refused {
            provider: ProviderKind::Local,
            detail: "empty worker command".into(),
        })?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(req.full_env())
            // A worker that sees its parent gone exits (`diaspora pool
            // worker` checks): a pool killed outright leaves no orphans.
            .env("DIASPORA_POOL_PARENT", std::process::id().to_string())
            .stdin(Stdio::null())
            .process_group(0);
        match &req.log_dir {
            Some(dir) => {
                let open = |ext: &str| {
                    std::fs::File::create(dir.join(format!("{}.{ext}", req.worker_id))).map_err(
                        |source| ProviderError::Spawn {
                            provider: ProviderKind::Local,
                            command: format!("{program} (log file in {})", dir.display()),
                            source,
                        },
                    )
                };
                cmd.stdout(open("out")?).stderr(open("err")?);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd.spawn().map_err(|source| ProviderError::Spawn {
            provider: ProviderKind::Local,
            command: program.clone(),
            source,
        })?;
        self.next += 1;
        let id = format!("local-{}-{}", child.id(), self.next);
        self.jobs.insert(
            id.clone(),
            Job {
                child,
                started: Instant::now(),
                walltime: req.walltime_s.map(Duration::from_secs),
                stopping: None,
                killed: false,
            },
        );
        Ok(id)
    }

    fn poll(&mut self) -> Result<Vec<(String, JobState)>, ProviderError> {
        let now = Instant::now();
        let mut out = Vec::with_capacity(self.jobs.len());
        let mut ended = Vec::new();
        for (id, job) in self.jobs.iter_mut() {
            if job.stopping.is_none() {
                if let Some(wt) = job.walltime {
                    if now.duration_since(job.started) >= wt {
                        Self::signal(job, libc::SIGTERM);
                        job.stopping = Some((JobEnd::Timeout, now));
                    }
                }
            }
            if let Some((_, since)) = &job.stopping {
                if !job.killed && now.duration_since(*since) >= self.kill_wait {
                    Self::signal(job, libc::SIGKILL);
                    job.killed = true;
                }
            }
            match job.child.try_wait() {
                Ok(Some(status)) => {
                    // Whatever the leader's status, the group goes with it.
                    Self::signal(job, libc::SIGKILL);
                    let end = match &job.stopping {
                        Some((why, _)) => why.clone(),
                        None => match (status.code(), status.signal()) {
                            (Some(code), _) => JobEnd::Exited { code },
                            (None, Some(signal)) => JobEnd::Signalled { signal },
                            (None, None) => JobEnd::Failed {
                                detail: format!("{status}"),
                            },
                        },
                    };
                    out.push((id.clone(), JobState::Ended(end)));
                    ended.push(id.clone());
                }
                Ok(None) => out.push((id.clone(), JobState::Running)),
                Err(e) => {
                    out.push((
                        id.clone(),
                        JobState::Ended(JobEnd::Failed {
                            detail: format!("wait failed: {e}"),
                        }),
                    ));
                    ended.push(id.clone());
                }
            }
        }
        for id in ended {
            self.jobs.remove(&id);
        }
        Ok(out)
    }

    fn cancel(&mut self, job: &str) -> Result<(), ProviderError> {
        let Some(j) = self.jobs.get_mut(job) else {
            return Err(ProviderError::Refused {
                provider: ProviderKind::Local,
                detail: format!("no job {job}"),
            });
        };
        if j.stopping.is_none() {
            Self::signal(j, libc::SIGTERM);
            j.stopping = Some((JobEnd::Cancelled, Instant::now()));
        }
        Ok(())
    }

    fn jobs(&self) -> usize {
        self.jobs.len()
    }
}

impl Drop for LocalProvider {
    fn drop(&mut self) {
        for job in self.jobs.values_mut() {
            Self::signal(job, libc::SIGKILL);
            let _ = job.child.kill();
            let _ = job.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cmd: &[&str], walltime_s: Option<u64>) -> LaunchRequest {
        LaunchRequest {
            worker_id: "w-1".into(),
            pool: "p".into(),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            env: vec![("EXTRA".into(), "x".into())],
            cores: 1,
            memory_mb: 64,
            walltime_s,
            log_dir: None,
        }
    }

    fn poll_until_end(p: &mut LocalProvider, job: &str) -> JobEnd {
        let t0 = Instant::now();
        loop {
            for (id, st) in p.poll().unwrap() {
                if id == job {
                    if let JobState::Ended(end) = st {
                        return end;
                    }
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "job never ended");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn exit_codes_signals_and_environment_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = LocalProvider::new(Duration::from_millis(200), 8);
        let mut r = req(
            &[
                "sh",
                "-c",
                "echo \"$DIASPORA_POOL $DIASPORA_POOL_WORKER $EXTRA\"; exit 3",
            ],
            None,
        );
        r.log_dir = Some(dir.path().to_path_buf());
        let j = p.launch(&r).unwrap();
        assert_eq!(poll_until_end(&mut p, &j), JobEnd::Exited { code: 3 });
        assert_eq!(
            std::fs::read_to_string(dir.path().join("w-1.out")).unwrap(),
            "p w-1 x\n"
        );
        assert_eq!(p.jobs(), 0, "an ended job is reported once");
        let j = p.launch(&req(&["sh", "-c", "kill -9 $$"], None)).unwrap();
        assert_eq!(poll_until_end(&mut p, &j), JobEnd::Signalled { signal: 9 });
        let e = p.launch(&req(&["/nonexistent/worker"], None)).unwrap_err();
        assert!(
            e.to_string().contains("cannot run /nonexistent/worker"),
            "{e}"
        );
    }

    #[test]
    fn walltime_and_cancel_stop_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = LocalProvider::new(Duration::from_millis(300), 8);
        // The worker ignores SIGTERM and starts a grandchild: both must go.
        let marker = dir.path().join("grandchild.pid");
        let script = format!(
            "trap '' TERM; sleep 300 & echo $! > {}; wait",
            marker.display()
        );
        let j = p.launch(&req(&["sh", "-c", &script], Some(1))).unwrap();
        assert_eq!(poll_until_end(&mut p, &j), JobEnd::Timeout);
        let gc: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(gc, 0) } == 0
            && !std::fs::read_to_string(format!("/proc/{gc}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "grandchild {gc} survived its worker");

        let j = p.launch(&req(&["sleep", "300"], None)).unwrap();
        p.cancel(&j).unwrap();
        assert_eq!(poll_until_end(&mut p, &j), JobEnd::Cancelled);
        assert!(p.cancel("local-0-0").is_err());
    }

    #[test]
    fn the_job_limit_is_an_error_and_drop_reaps_every_child() {
        let mut p = LocalProvider::new(Duration::from_millis(100), 2);
        let a = p.launch(&req(&["sleep", "300"], None)).unwrap();
        let b = p.launch(&req(&["sleep", "300"], None)).unwrap();
        let e = p.launch(&req(&["sleep", "300"], None)).unwrap_err();
        assert!(e.to_string().contains("2 jobs held, the limit"), "{e}");
        let pids = [p.pid(&a).unwrap(), p.pid(&b).unwrap()];
        drop(p);
        for pid in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "child {pid} not reaped"
            );
        }
    }
}
