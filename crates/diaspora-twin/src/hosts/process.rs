//! The running hosts: one `diaspora` process each, with its directory, its
//! log (stderr, appended across restarts) and its stdout file.
//!
//! A host may start processes of its own (a pool's workers, each in its
//! own process group). Before a host is killed or stopped its children are
//! noted, and once every host has stopped any of them still running is
//! killed with its group: no process a run started outlives it, even when
//! a host was killed before it could stop its own.

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
    /// Its environment beyond the twin's (its identity, with `[auth]`).
    env: Vec<(String, String)>,
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
        let mut cmd = match self.command.invocation.program() {
            Some((program, dir)) => {
                let mut c = Command::new(program);
                c.current_dir(dir);
                c
            }
            None => Command::new(binary),
        };
        let child = cmd
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|source| TwinError::Spawn {
                host: self.name.clone(),
                source: match self.command.invocation.program() {
                    Some((program, _)) => std::io::Error::new(
                        source.kind(),
                        format!(
                            "{}: {source}{}",
                            program.display(),
                            super::kafka::missing_hint(&self.command.invocation)
                        ),
                    ),
                    None => source,
                },
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// Its children now (none once it has exited).
    fn children(&self) -> Vec<ProcStat> {
        match &self.child {
            Some(c) => children_of(c.id()),
            None => Vec::new(),
        }
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

    /// The last line this start wrote to its log (at most 300 characters).
    fn last_log_line(&self) -> Option<String> {
        let log = std::fs::read(&self.log).ok()?;
        let this_start = log.get(self.log_start as usize..)?;
        let text = String::from_utf8_lossy(this_start);
        let line = text.lines().rev().find(|l| !l.trim().is_empty())?.trim();
        Some(line.chars().take(300).collect())
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

/// A process as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Its id.
    pub pid: u32,
    /// Its state (`R`, `S`, `Z`, …).
    pub state: char,
    /// Its parent's id.
    pub ppid: u32,
    /// Its process group.
    pub pgrp: u32,
    /// When it started, clock ticks after boot (with the pid, it names one
    /// process: pids are reused, start times of one pid are not).
    pub start_ticks: u64,
}

/// Parses `/proc/PID/stat`; the command name (in parentheses) may hold
/// anything, so fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let (head, tail) = text.rsplit_once(')')?;
    let pid = head.split_once('(')?.0.trim().parse().ok()?;
    let f: Vec<&str> = tail.split_whitespace().collect();
    Some(ProcStat {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

fn stat_of(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The live (not zombie) children of `parent`, oldest first.
fn children_of(parent: u32) -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<ProcStat> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat_of)
        .filter(|p| p.ppid == parent && p.state != 'Z')
        .collect();
    out.sort_by_key(|p| (p.start_ticks, p.pid));
    out
}

/// SIGKILL `p` (and its group, if it leads one) if it is still the same
/// live process; whether it was.
fn kill_if_alive(p: &ProcStat) -> bool {
    match stat_of(p.pid) {
        Some(now) if now.start_ticks == p.start_ticks && now.state != 'Z' => {
            // SAFETY: kill(2) on a process (group) checked above to be the
            // one noted; a race with its exit is an ESRCH we ignore.
            unsafe {
                if now.pgrp == p.pid {
                    libc::kill(-(p.pid as libc::pid_t), libc::SIGKILL);
                }
                libc::kill(p.pid as libc::pid_t, libc::SIGKILL);
            }
            true
        }
        _ => false,
    }
}

/// The run's host processes, in start order.
pub struct Hosts {
    binary: PathBuf,
    list: Vec<Host>,
    /// With `[auth]`: every host's identity.
    identities: Option<crate::auth::Identities>,
    /// Children of hosts that were killed or stopped: killed at the end
    /// if still running.
    noted: Vec<ProcStat>,
}

impl Hosts {
    /// No hosts yet; each will run `binary`.
    pub fn new(binary: &Path) -> Hosts {
        Hosts {
            binary: binary.to_path_buf(),
            list: Vec::new(),
            identities: None,
            noted: Vec::new(),
        }
    }

    /// Gives every host started from now on (but the nodes) its identity.
    pub fn set_identities(&mut self, ids: crate::auth::Identities) {
        self.identities = Some(ids);
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
            let env = match &self.identities {
                Some(ids) if h.kind.name != "node" => ids.env_for(&h.name),
                _ => Vec::new(),
            };
            let mut host = Host {
                kind: h.kind,
                name: h.name,
                args: command.invocation.argv(),
                command,
                log: dir.join("log.txt"),
                log_start: 0,
                child: None,
                env,
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

    /// SIGKILL a host (and reap it). Its children are left to themselves
    /// (a pool's workers must notice), and killed at the end of the run.
    pub fn kill(&mut self, name: &str) {
        if let Some(h) = self.get_mut(name) {
            let children = h.children();
            h.kill();
            self.noted.extend(children);
        }
    }

    /// SIGKILL the oldest child process of a host (a pool's longest-lived
    /// worker) and its process group; its pid, or none if it has none.
    pub fn kill_child(&mut self, name: &str) -> Option<u32> {
        let child = *self.get_mut(name)?.children().first()?;
        kill_if_alive(&child).then_some(child.pid)
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

    /// Of the hosts the run waits for ([`HostKind::completes`]): the names
    /// of those that have not exited (a killed one never does), and of
    /// those that exited uncleanly, each with its status and last log line.
    pub fn completing(&mut self) -> (Vec<String>, Vec<String>) {
        let (mut running, mut failed) = (Vec::new(), Vec::new());
        for h in self.list.iter_mut().filter(|h| h.kind.completes()) {
            match h.exited() {
                None => running.push(h.name.clone()),
                Some(st) if !st.success() => {
                    // The reason in the check itself: a CI log shows the
                    // results, not the host's directory.
                    let said = h.last_log_line();
                    failed.push(match said {
                        Some(l) => format!("{} ({st}: {l})", h.name),
                        None => format!("{} ({st})", h.name),
                    });
                }
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
            self.noted.extend(self.list[i].children());
            self.list[i].stop(Duration::from_secs(5)).await;
        }
    }

    /// Stops every host (3 s grace each), the last started first; then
    /// kills whatever their children left running.
    pub async fn stop_all(&mut self) {
        for h in self.list.iter_mut().rev() {
            self.noted.extend(h.children());
            h.stop(Duration::from_secs(3)).await;
        }
        let left: Vec<u32> = self
            .noted
            .drain(..)
            .filter(kill_if_alive)
            .map(|p| p.pid)
            .collect();
        if !left.is_empty() {
            tracing::warn!(?left, "killed processes the hosts left running");
        }
    }

    /// What each host records, with its name, in start order.
    /// ([`Records::Many`] is flattened: a host that records several things
    /// appears once for each.)
    pub fn records(&self) -> impl Iterator<Item = (&str, &Records)> {
        self.list.iter().flat_map(|h| {
            let rs: Vec<&Records> = match &h.command.records {
                Records::Many(v) => v.iter().collect(),
                r => vec![r],
            };
            rs.into_iter().map(move |r| (h.name.as_str(), r))
        })
    }
}

/// A run that ends by a panic (or whose future is dropped mid-run) leaves
/// no process behind either: every host still running is killed (SIGKILL)
/// and reaped, and so are the children it started. After
/// [`Hosts::stop_all`] there is nothing left to do.
impl Drop for Hosts {
    fn drop(&mut self) {
        for h in self.list.iter_mut().rev() {
            self.noted.extend(h.children());
            h.kill();
        }
        for p in self.noted.drain(..) {
            kill_if_alive(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_dropped_without_a_stop_are_killed_and_reaped() {
        let dir = std::env::temp_dir().join(format!("diaspora-twin-drop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut hosts = Hosts::new(Path::new("/bin/sh"));
        let mut host = Host {
            kind: &super::super::KINDS[0],
            name: "sleeper".into(),
            // A host with a child of its own, as a pool has workers.
            args: vec!["-c".into(), "sleep 60 & sleep 60".into()],
            command: HostCommand {
                invocation: crate::cli_args::Invocation::CreateTopic(
                    crate::cli_args::CreateTopic {
                        topic: "t".into(),
                        stream: false,
                        partitions: None,
                        admin: "127.0.0.1:1".parse().unwrap(),
                        ca: "ca.pem".into(),
                    },
                ),
                stdout: None,
                files: Vec::new(),
                records: Records::None,
            },
            log: dir.join("log.txt"),
            log_start: 0,
            child: None,
            env: Vec::new(),
        };
        host.spawn(Path::new("/bin/sh")).unwrap();
        let pid = host.child.as_ref().unwrap().id();
        hosts.list.push(host);
        // Its child shows up once the shell has forked.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut kids = Vec::new();
        while kids.is_empty() && std::time::Instant::now() < deadline {
            kids = children_of(pid);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!kids.is_empty(), "the host's child did not start");
        drop(hosts);
        assert!(
            stat_of(pid).is_none(),
            "the host is still there (or a zombie)"
        );
        std::thread::sleep(Duration::from_millis(100));
        for k in kids {
            assert!(
                stat_of(k.pid).map_or(true, |s| s.start_ticks != k.start_ticks || s.state == 'Z'),
                "the host's child {} outlived it",
                k.pid
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stat_lines_parse_whatever_the_command_name() {
        let line = "4242 (diaspora) pool) S 4000 4242 4000 0 -1 4194560 512 0 0 0 3 1 0 0 20 0 5 0 987654 123456789 2000 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                pid: 4242,
                state: 'S',
                ppid: 4000,
                pgrp: 4242,
                start_ticks: 987654,
            })
        );
        assert_eq!(parse_stat("12 (x) Z 1"), None, "too few fields");
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_its_parents_child() {
        let me = std::process::id();
        let parent = stat_of(me).unwrap().ppid;
        assert!(children_of(parent).iter().any(|p| p.pid == me));
    }
}
