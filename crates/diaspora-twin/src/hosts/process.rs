//! The running hosts: one `diaspora` process each, with its directory, its
//! log (stderr, appended across restarts) and its stdout file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use super::{planned, HostCommand, HostEnv, Kind, Phase, Records};
use crate::{Scenario, TwinError};

/// One host process.
struct Host {
    kind: &'static Kind,
    name: String,
    command: HostCommand,
    args: Vec<String>,
    log: PathBuf,
    /// The log's length when it was last started: readiness is looked for
    /// in what this start wrote.
    log_start: u64,
    child: Option<Child>,
}

impl Host {
    fn spawn(&mut self, binary: &Path) -> Result<(), TwinError> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(TwinError::io("open", &self.log))?;
        self.log_start = log.metadata().map_or(0, |m| m.len());
        let stdout = match &self.command.stdout {
            Some(p) => Stdio::from(
                File::options()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(TwinError::io("open", p))?,
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
            .map_err(|source| TwinError::Spawn {
                host: self.name.clone(),
                source,
            })?;
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

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGCONT (it may be stopped), SIGTERM, then SIGKILL after `grace`.
    async fn stop(&mut self, grace: Duration) {
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while self.child.is_some() && self.exited().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
    }

    /// Waits until this start's log says it is ready (if its kind says how).
    async fn wait_ready(&mut self) -> Result<(), TwinError> {
        let Some(ready) = self.kind.ready() else {
            return Ok(());
        };
        let deadline = Instant::now() + ready.within;
        loop {
            let log = std::fs::read(&self.log).unwrap_or_default();
            let this_start = log.get(self.log_start as usize..).unwrap_or_default();
            if String::from_utf8_lossy(this_start).contains(ready.log_line) {
                return Ok(());
            }
            if Instant::now() > deadline || self.exited().is_some() {
                return Err(TwinError::NotReady {
                    kind: self.kind.name,
                    host: self.name.clone(),
                    within_s: ready.within.as_secs(),
                    log: String::from_utf8_lossy(&log).into_owned(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The run's host processes, in start order.
pub struct Hosts {
    binary: PathBuf,
    list: Vec<Host>,
}

impl Hosts {
    /// No hosts yet; each will run `binary`.
    pub fn new(binary: &Path) -> Hosts {
        Hosts {
            binary: binary.to_path_buf(),
            list: Vec::new(),
        }
    }

    /// Starts every host of `phase`: creates its directory, writes its
    /// files, spawns it; then waits for each to be ready.
    pub async fn start_phase(
        &mut self,
        phase: Phase,
        scenario: &Scenario,
        env: &HostEnv,
    ) -> Result<(), TwinError> {
        let first = self.list.len();
        for h in planned(scenario, phase) {
            let command = h.kind.command(super::HostAt {
                scenario,
                index: h.index,
                env,
            })?;
            let dir = env.host_dir(&h.name);
            std::fs::create_dir_all(&dir).map_err(TwinError::io("create", &dir))?;
            for (path, text) in &command.files {
                std::fs::write(path, text).map_err(TwinError::io("write", path))?;
            }
            let mut host = Host {
                kind: h.kind,
                name: h.name,
                args: command.invocation.argv(),
                command,
                log: dir.join("log.txt"),
                log_start: 0,
                child: None,
            };
            host.spawn(&self.binary)?;
            self.list.push(host);
        }
        for host in &mut self.list[first..] {
            host.wait_ready().await?;
        }
        Ok(())
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Host> {
        self.list.iter_mut().find(|h| h.name == name)
    }

    /// SIGKILL a host (and reap it).
    pub fn kill(&mut self, name: &str) {
        if let Some(h) = self.get_mut(name) {
            h.kill();
        }
    }

    /// Sends `sig` to a host.
    pub fn signal(&mut self, name: &str, sig: libc::c_int) {
        if let Some(h) = self.get_mut(name) {
            h.signal(sig);
        }
    }

    /// Starts a host again with the same command, directory and ports, and
    /// waits for it to be ready.
    pub async fn restart(&mut self, name: &str) -> Result<(), TwinError> {
        let binary = self.binary.clone();
        let h = self.get_mut(name).ok_or_else(|| TwinError::NoSuch {
            what: "restart",
            kind: "host",
            name: name.to_string(),
        })?;
        h.spawn(&binary)?;
        h.wait_ready().await
    }

    /// Of the hosts the run waits for ([`HostKind::completes`]): how many
    /// have not exited (a killed one never does), and the names of those
    /// that exited uncleanly.
    pub fn completing(&mut self) -> (usize, Vec<String>) {
        let (mut running, mut failed) = (0, Vec::new());
        for h in self.list.iter_mut().filter(|h| h.kind.completes()) {
            match h.exited() {
                None => running += 1,
                Some(st) if !st.success() => failed.push(h.name.clone()),
                _ => {}
            }
        }
        (running, failed)
    }

    /// SIGKILL every host the run waits for.
    pub fn kill_completing(&mut self) {
        for h in self.list.iter_mut().filter(|h| h.kind.completes()) {
            h.kill();
        }
    }

    /// Stops, gracefully (5 s each), the hosts whose kinds are stopped
    /// after the drain, by rank, then in start order.
    pub async fn stop_after_drain(&mut self) {
        let mut order: Vec<(u8, usize)> = self
            .list
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.kind.stop_after_drain().map(|r| (r, i)))
            .collect();
        order.sort();
        for (_, i) in order {
            self.list[i].stop(Duration::from_secs(5)).await;
        }
    }

    /// Stops every host (3 s grace each), the last started first.
    pub async fn stop_all(&mut self) {
        for h in self.list.iter_mut().rev() {
            h.stop(Duration::from_secs(3)).await;
        }
    }

    /// What each host records, with its name, in start order.
    pub fn records(&self) -> impl Iterator<Item = (&str, &Records)> {
        self.list
            .iter()
            .map(|h| (h.name.as_str(), &h.command.records))
    }
}
