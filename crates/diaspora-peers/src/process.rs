//! Server processes: found on PATH, started with their output in a log
//! file, and always stopped.
//!
//! A [`ServerProcess`] is a guard. Dropping it — at the end of a run, on an
//! error, or while a panic unwinds — sends SIGTERM to the server's process
//! group, gives it five seconds, then SIGKILLs the group (a Redis AOF
//! rewrite child included) and reaps the server. A server also gets
//! SIGKILL from the kernel if this process dies without unwinding (SIGKILL,
//! Ctrl-C: `PR_SET_PDEATHSIG`), since it runs in its own process group and
//! a terminal's Ctrl-C does not reach it.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a server has to stop after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(if cfg!(test) { 1 } else { 5 });
/// How long a server has to say it is ready.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of a server's log shown in an error.
const LOG_TAIL_BYTES: usize = 2000;

/// A running server; stopped and reaped when dropped.
pub(crate) struct ServerProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `program args` with stdout and stderr in `log`, in a process
    /// group of its own, killed if this process dies.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[OsString],
        envs: &[(&str, &str)],
        log: PathBuf,
    ) -> Result<ServerProcess> {
        use std::os::unix::process::CommandExt;
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent; this runs in the forked child before exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(ServerProcess {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// Waits until a line of the log contains `needle` and returns that
    /// line; fails (with the log's end) if the server exits first or
    /// `timeout` passes.
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read(&self.log).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return Ok(line.to_string());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before it was ready; its log ends:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not log {needle:?} within {timeout:?}; its log ends:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The end of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let tail = &text[text.len().saturating_sub(LOG_TAIL_BYTES)..];
        String::from_utf8_lossy(tail).into_owned()
    }

    /// Stops the server now (what dropping it does).
    pub fn stop(self) {}

    fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: plain syscalls on our child's process group.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_GRACE;
        while !exited_unreaped(pgid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Whatever is left of the group (the server, if it ignored SIGTERM,
        // or children it forked) — while the unreaped server still holds
        // the group's id, so that no other process can have taken it.
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Whether child `pid` has exited, without reaping it.
fn exited_unreaped(pid: libc::pid_t) -> bool {
    // SAFETY: waitid writes only into `info`, which is zeroed and ours.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        r != 0 || info.si_pid() != 0
    }
}

/// Executable files named `name` in the directories of PATH, in order.
pub(crate) fn on_path(name: &str) -> Vec<PathBuf> {
    let Some(path) = std::env::var_os("PATH") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = Vec::new();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if is_executable(&p) && !found.contains(&p) {
            found.push(p);
        }
    }
    found
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// An explicitly given program, checked.
pub(crate) fn explicit(p: &Path, what: &str) -> Result<PathBuf> {
    if !is_executable(p) {
        bail!("{what} {} is not an executable file", p.display());
    }
    Ok(p.to_path_buf())
}

/// The first line `program --version` prints (stdout, else stderr).
pub(crate) async fn version_line(program: &Path) -> Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(program)
            .arg("--version")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{} --version did not answer", program.display()))?
    .with_context(|| format!("running {} --version", program.display()))?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    let line = String::from_utf8_lossy(&text)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if line.is_empty() {
        bail!("{} --version printed nothing", program.display());
    }
    Ok(line)
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for servers that
/// cannot be told to pick one and say which).
pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// `a.b.c` from the first `v`-prefixed or bare dotted version in `text`.
pub(crate) fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|w| w.contains('.'))
        .find_map(|w| {
            let mut parts = w.split('.').map(|p| p.parse::<u32>().ok());
            Some((
                parts.next()??,
                parts.next()??,
                parts.next().flatten().unwrap_or(0),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("nats-server: v2.15.1"), Some((2, 15, 1)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9, 10)));
        assert_eq!(
            parse_version("Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64"),
            Some((7, 0, 15))
        );
        assert_eq!(parse_version("diaspora 0.1.0"), Some((0, 1, 0)));
        assert_eq!(parse_version("no version"), None);
    }

    /// Whether process `pid` still runs (a zombie waiting for its reaper does not).
    fn running(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                let state = s.rsplit_once(") ").map(|(_, r)| r.chars().next());
                state != Some(Some('Z'))
            })
            .unwrap_or(false)
    }

    #[test]
    fn a_dropped_server_is_stopped_and_reaped() {
        let dir = tempfile::tempdir().unwrap();
        // A "server" that ignores SIGTERM and has a child of its own.
        let mut p = ServerProcess::spawn(
            "sleeper",
            Path::new("/bin/sh"),
            &[
                "-c".into(),
                "trap '' TERM; sleep 300 & echo \"child $!\"; echo ready; wait".into(),
            ],
            &[],
            dir.path().join("log"),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let line = rt
            .block_on(p.wait_for_log("ready", Duration::from_secs(10)))
            .unwrap();
        assert_eq!(line, "ready");
        let child = rt
            .block_on(p.wait_for_log("child ", Duration::from_secs(10)))
            .unwrap();
        let child = child.trim_start_matches("child ").to_string();
        let server = p.child.id().to_string();
        assert!(running(&server) && running(&child));
        let t = Instant::now();
        drop(p);
        assert!(t.elapsed() < STOP_GRACE + Duration::from_secs(2));
        // Neither the server nor its child runs any more (the child,
        // reparented, may linger as a zombie until init reaps it).
        assert!(!running(&server));
        let deadline = Instant::now() + Duration::from_secs(5);
        while running(&child) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!running(&child), "the server's child {child} still runs");
    }

    #[test]
    fn a_server_that_exits_early_shows_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = ServerProcess::spawn(
            "failer",
            Path::new("/bin/sh"),
            &["-c".into(), "echo 'bad config line 3'; exit 2".into()],
            &[],
            dir.path().join("log"),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt
            .block_on(p.wait_for_log("ready", Duration::from_secs(10)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("failer exited") && e.contains("bad config line 3"),
            "{e}"
        );
    }
}
