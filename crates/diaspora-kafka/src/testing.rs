//! A real Kafka-protocol broker for tests and twins: Tansu (a
//! Kafka-compatible broker written in Rust) as a child process with SQLite
//! storage in a directory of its own, killed and reaped when dropped.
//! `./scripts/test` builds it and names it in `DIASPORA_TEST_TANSU`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Tansu broker on a loopback port; its data survives [`Tansu::restart`].
pub struct Tansu {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Tansu {
    /// The binary named by `DIASPORA_TEST_TANSU`, or `None` (and a line on
    /// stderr saying what did not run).
    pub fn from_env(what: &str) -> Option<PathBuf> {
        let p = std::env::var_os("DIASPORA_TEST_TANSU").map(PathBuf::from);
        if p.is_none() {
            eprintln!("DIASPORA_TEST_TANSU is not set: {what} did not run");
        }
        p
    }

    /// Starts `bin` keeping its data in `dir`, on a free port; waits until
    /// it listens.
    pub fn start(bin: &Path, dir: &Path) -> std::io::Result<Tansu> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        std::fs::create_dir_all(dir)?;
        let mut t = Tansu {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            port,
            child: None,
        };
        t.restart()?;
        Ok(t)
    }

    /// `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the broker if it runs, starts it again on the same port and
    /// data, and waits (at most 30 s) until it listens.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        self.child = Some(
            Command::new(&self.bin)
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "sqlite://tansu.db"])
                .current_dir(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if t0.elapsed() > Duration::from_secs(30) {
                self.kill();
                return Err(std::io::Error::other("tansu did not listen within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates a Kafka topic of `partitions` partitions.
#[cfg(feature = "client")]
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<(), String> {
    let cfg = crate::config::KafkaConfig::new(bootstrap);
    crate::client::create_topic(&cfg, topic, partitions as u32).await
}
