//! The shell: a UDP relay that applies a [`ScheduledLink`] per direction.
//!
//! A client is given the relay's address instead of the target's. For each
//! distinct client source address the relay opens its own socket towards
//! the target (a *session*), so replies can be mapped back to the client.
//!
//! ```text
//!  client ──▶ listen socket ──[up link]──▶ session socket ──▶ target
//!  client ◀── listen socket ◀─[down link]── session socket ◀── target
//! ```
//!
//! Each direction (a *lane*) owns one link model shared by all sessions —
//! the relay is one link, and its clients share its bandwidth — and one
//! queue of packets held until their delivery time. Packets are received on
//! tokio tasks; each lane's deliveries are sent by a dedicated OS thread that
//! sleeps on a condition variable until the head packet is due. A thread
//! rather than a tokio timer because tokio's timer wheel has 1 ms
//! granularity, which alone would add up to 1 ms of error to every delay;
//! a futex wait (with the thread's timer slack set to 1 ns) is accurate to
//! tens of microseconds. A packet's delay counts from the kernel's receive
//! timestamp ([`crate::rxtime`]), so the receive task's wake-up latency is
//! not added to it either. Deliveries are monotonic per direction, so the
//! held queue is a FIFO.
//!
//! Time is a [`std::time::Instant`] captured at start; the core sees the
//! elapsed [`Duration`].
//!
//! Limits: `sessions_max` sessions (packets from further clients are
//! dropped, counted and logged), idle sessions expire after
//! `session_idle_timeout`, and each lane holds at most `held_bytes_max`
//! bytes (queue plus bytes "in flight" for the propagation delay; beyond it
//! packets are dropped and counted as `dropped_held_full`).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::link::{DropReason, LinkParams, ParamsError, Schedule, ScheduledLink, Verdict};
use crate::rxtime;

/// Largest accepted `sessions_max`.
pub const SESSIONS_MAX_LIMIT: usize = 65_536;
/// Default `sessions_max`.
pub const SESSIONS_MAX_DEFAULT: usize = 1_024;
/// Default `session_idle_timeout`.
pub const SESSION_IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
/// Default `held_bytes_max` per direction (64 MiB: 0.5 s at 1 Gbit/s).
pub const HELD_BYTES_MAX_DEFAULT: usize = 64 << 20;
/// Largest accepted `held_bytes_max` (4 GiB).
pub const HELD_BYTES_MAX_LIMIT: usize = 4 << 30;
/// Default requested socket buffer size (SO_RCVBUF and SO_SNDBUF).
pub const SOCKET_BUFFER_BYTES_DEFAULT: usize = 8 << 20;
/// Largest UDP payload the relay receives.
const DATAGRAM_BYTES_MAX: usize = 65_535;

/// Everything the relay needs to start.
///
/// ```
/// use diaspora_twin::{LinkParams, RelayConfig};
/// let config = RelayConfig {
///     up: LinkParams::default().with_delay_ms(10.0),
///     down: LinkParams::default().with_delay_ms(10.0),
///     ..RelayConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:4433".parse().unwrap())
/// };
/// assert_eq!(config.sessions_max, 1024);
/// ```
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Address the relay listens on (what clients are given).
    pub listen: SocketAddr,
    /// Address packets are forwarded to.
    pub target: SocketAddr,
    /// Client → target link.
    pub up: LinkParams,
    /// Target → client link.
    pub down: LinkParams,
    /// Seed for both directions' randomness (the down link uses a seed
    /// derived from it).
    pub seed: u64,
    /// Schedule applied over `up`, timed from relay start.
    pub schedule_up: Schedule,
    /// Schedule applied over `down`, timed from relay start.
    pub schedule_down: Schedule,
    /// Most concurrent sessions (distinct client addresses), `1..=65536`.
    pub sessions_max: usize,
    /// A session with no packet in either direction for this long is closed.
    pub session_idle_timeout: Duration,
    /// Most bytes held for delivery per direction (`65536..=2^32`).
    pub held_bytes_max: usize,
    /// Requested SO_RCVBUF/SO_SNDBUF of every socket; failures are ignored
    /// (the kernel may cap it at `net.core.rmem_max`).
    pub socket_buffer_bytes: usize,
}

impl RelayConfig {
    /// A relay from `listen` to `target` with perfect links and default limits.
    ///
    /// ```
    /// # use diaspora_twin::RelayConfig;
    /// let config = RelayConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:9".parse().unwrap());
    /// assert!(!config.up.blackhole);
    /// ```
    pub fn new(listen: SocketAddr, target: SocketAddr) -> Self {
        RelayConfig {
            listen,
            target,
            up: LinkParams::default(),
            down: LinkParams::default(),
            seed: 0,
            schedule_up: Schedule::default(),
            schedule_down: Schedule::default(),
            sessions_max: SESSIONS_MAX_DEFAULT,
            session_idle_timeout: SESSION_IDLE_TIMEOUT_DEFAULT,
            held_bytes_max: HELD_BYTES_MAX_DEFAULT,
            socket_buffer_bytes: SOCKET_BUFFER_BYTES_DEFAULT,
        }
    }

    fn validate(&self) -> Result<(), RelayError> {
        if !(1..=SESSIONS_MAX_LIMIT).contains(&self.sessions_max) {
            return Err(RelayError::Config {
                field: "sessions_max",
                value: self.sessions_max.to_string(),
                allowed: format!("1..={SESSIONS_MAX_LIMIT}"),
            });
        }
        if !(65_536..=HELD_BYTES_MAX_LIMIT).contains(&self.held_bytes_max) {
            return Err(RelayError::Config {
                field: "held_bytes_max",
                value: self.held_bytes_max.to_string(),
                allowed: format!("65536..={HELD_BYTES_MAX_LIMIT}"),
            });
        }
        if self.session_idle_timeout < Duration::from_millis(10) {
            return Err(RelayError::Config {
                field: "session_idle_timeout",
                value: format!("{:?}", self.session_idle_timeout),
                allowed: "at least 10ms".to_string(),
            });
        }
        Ok(())
    }
}

/// Why a relay could not start.
///
/// ```
/// use diaspora_twin::{Relay, RelayConfig, RelayError};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let config = RelayConfig {
///     sessions_max: 0,
///     ..RelayConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:9".parse().unwrap())
/// };
/// let err = Relay::start(config).await.unwrap_err();
/// assert_eq!(err.to_string(), "relay setting `sessions_max` = 0 is out of range: allowed 1..=65536");
/// # });
/// ```
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A link parameter or schedule is invalid.
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// A relay setting is out of range.
    #[error("relay setting `{field}` = {value} is out of range: allowed {allowed}")]
    Config {
        /// The setting.
        field: &'static str,
        /// The rejected value.
        value: String,
        /// The allowed range.
        allowed: String,
    },
    /// A socket could not be opened or bound.
    #[error("relay socket {what} {addr}: {source}")]
    Socket {
        /// What the socket was for.
        what: &'static str,
        /// The address it was bound to or connected to.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
}

/// A packet and byte count.
///
/// ```
/// # use diaspora_twin::Counter;
/// let mut c = Counter::default();
/// c.add(1200);
/// assert_eq!(c, Counter { packets: 1, bytes: 1200 });
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// UDP payload bytes.
    pub bytes: u64,
}

impl Counter {
    /// Counts one packet of `size_bytes`.
    ///
    /// ```
    /// # use diaspora_twin::Counter;
    /// let mut c = Counter::default();
    /// c.add(10);
    /// c.add(20);
    /// assert_eq!(c.bytes, 30);
    /// ```
    pub fn add(&mut self, size_bytes: usize) {
        self.packets += 1;
        self.bytes += size_bytes as u64;
    }

    fn merge(&mut self, other: Counter) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

/// What happened to the packets of one direction.
///
/// Every received packet is, at any instant, exactly one of: forwarded,
/// dropped (for one reason), send failed, or held.
///
/// ```
/// # use diaspora_twin::{DirectionStats, DropReason};
/// let stats = DirectionStats::default();
/// assert_eq!(stats.dropped(DropReason::Loss).packets, 0);
/// assert_eq!(stats.dropped_total().packets, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DirectionStats {
    /// Packets that entered this direction.
    pub received: Counter,
    /// Packets sent on at their delivery time.
    pub forwarded: Counter,
    /// Dropped by random wire loss.
    pub dropped_loss: Counter,
    /// Dropped by Gilbert–Elliott burst loss.
    pub dropped_burst_loss: Counter,
    /// Dropped because the link queue was full.
    pub dropped_queue_full: Counter,
    /// Dropped during an outage.
    pub dropped_blackhole: Counter,
    /// Dropped because the relay already held `held_bytes_max` bytes.
    pub dropped_held_full: Counter,
    /// The send at delivery time failed (e.g. the target port is closed).
    pub send_failed: Counter,
    /// Held now: waiting for their delivery time, or being sent (a packet
    /// can reach its target a moment before it is counted as forwarded).
    pub held: Counter,
}

impl DirectionStats {
    /// The count for one link drop reason.
    ///
    /// ```
    /// # use diaspora_twin::{DirectionStats, DropReason};
    /// assert_eq!(DirectionStats::default().dropped(DropReason::Blackhole).bytes, 0);
    /// ```
    pub fn dropped(&self, reason: DropReason) -> Counter {
        match reason {
            DropReason::Loss => self.dropped_loss,
            DropReason::BurstLoss => self.dropped_burst_loss,
            DropReason::QueueFull => self.dropped_queue_full,
            DropReason::Blackhole => self.dropped_blackhole,
        }
    }

    /// All drops: the four link reasons plus `dropped_held_full`.
    ///
    /// ```
    /// # use diaspora_twin::DirectionStats;
    /// assert_eq!(DirectionStats::default().dropped_total().bytes, 0);
    /// ```
    pub fn dropped_total(&self) -> Counter {
        let mut total = Counter::default();
        for counter in [
            self.dropped_loss,
            self.dropped_burst_loss,
            self.dropped_queue_full,
            self.dropped_blackhole,
            self.dropped_held_full,
        ] {
            total.merge(counter);
        }
        total
    }

    fn dropped_mut(&mut self, reason: DropReason) -> &mut Counter {
        match reason {
            DropReason::Loss => &mut self.dropped_loss,
            DropReason::BurstLoss => &mut self.dropped_burst_loss,
            DropReason::QueueFull => &mut self.dropped_queue_full,
            DropReason::Blackhole => &mut self.dropped_blackhole,
        }
    }
}

/// A snapshot of the relay's counters.
///
/// ```
/// # use diaspora_twin::RelayStats;
/// assert_eq!(RelayStats::default().sessions_active, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RelayStats {
    /// Client → target.
    pub up: DirectionStats,
    /// Target → client.
    pub down: DirectionStats,
    /// Sessions open now.
    pub sessions_active: usize,
    /// Sessions opened since start.
    pub sessions_opened: u64,
    /// Sessions closed for idleness since start.
    pub sessions_expired: u64,
    /// Client packets dropped because `sessions_max` sessions were open.
    pub packets_rejected_sessions_max: u64,
}

/// A packet waiting for its delivery time.
struct Held {
    at: Duration,
    payload: Vec<u8>,
    socket: Arc<StdUdpSocket>,
    /// `None`: the socket is connected to its destination.
    dest: Option<SocketAddr>,
}

struct LaneState {
    link: ScheduledLink,
    held: VecDeque<Held>,
    held_bytes: usize,
    /// Packets taken off `held` whose send has not finished yet: reported
    /// as held, so a packet is never missing from the stats.
    sending: Counter,
    stats: DirectionStats,
    stopped: bool,
    /// The latest arrival time offered: kernel stamps from different
    /// sockets can interleave by microseconds, and the link model needs
    /// time that does not go back.
    last_arrival: Duration,
}

/// One direction: its link, its held packets, and the condition variable
/// its sender thread sleeps on.
struct Lane {
    state: Mutex<LaneState>,
    wake: Condvar,
    held_bytes_max: usize,
}

impl Lane {
    fn new(link: ScheduledLink, held_bytes_max: usize) -> Self {
        Lane {
            state: Mutex::new(LaneState {
                link,
                held: VecDeque::new(),
                held_bytes: 0,
                sending: Counter::default(),
                stats: DirectionStats::default(),
                stopped: false,
                last_arrival: Duration::ZERO,
            }),
            wake: Condvar::new(),
            held_bytes_max,
        }
    }

    /// Runs one received packet through the link and holds it if delivered.
    fn offer(
        &self,
        now: Duration,
        payload: Vec<u8>,
        socket: &Arc<StdUdpSocket>,
        dest: Option<SocketAddr>,
    ) {
        let size = payload.len();
        let mut state = self.state.lock();
        let now = now.max(state.last_arrival);
        state.last_arrival = now;
        state.stats.received.add(size);
        match state.link.on_packet(now, size) {
            Verdict::Drop(reason) => state.stats.dropped_mut(reason).add(size),
            Verdict::Deliver { at } => {
                if state.held_bytes + size > self.held_bytes_max {
                    state.stats.dropped_held_full.add(size);
                    return;
                }
                debug_assert!(state.held.back().map_or(true, |last| last.at <= at));
                let was_empty = state.held.is_empty();
                state.held.push_back(Held {
                    at,
                    payload,
                    socket: Arc::clone(socket),
                    dest,
                });
                state.held_bytes += size;
                if was_empty {
                    self.wake.notify_one();
                }
            }
        }
    }

    fn stop(&self) {
        self.state.lock().stopped = true;
        self.wake.notify_all();
    }

    /// The sender thread: sleeps until the head packet is due, then sends
    /// every due packet outside the lock.
    fn run_sender(&self, start: Instant) {
        crate::rxtime::tighten_timer_slack();
        let mut due: Vec<Held> = Vec::new();
        let mut state = self.state.lock();
        loop {
            if state.stopped {
                return;
            }
            let head_at = match state.held.front() {
                None => {
                    self.wake.wait(&mut state);
                    continue;
                }
                Some(head) => head.at,
            };
            let now = start.elapsed();
            if head_at > now {
                let _ = self.wake.wait_until(&mut state, start + head_at);
                continue;
            }
            while let Some(head) = state.held.front() {
                if head.at > now {
                    break;
                }
                if let Some(head) = state.held.pop_front() {
                    state.held_bytes -= head.payload.len();
                    state.sending.add(head.payload.len());
                    due.push(head);
                }
            }
            drop(state);
            let mut forwarded = Counter::default();
            let mut failed = Counter::default();
            for packet in due.drain(..) {
                match send(&packet) {
                    Ok(()) => forwarded.add(packet.payload.len()),
                    Err(error) => {
                        tracing::debug!(%error, "relay send failed");
                        failed.add(packet.payload.len());
                    }
                }
            }
            state = self.state.lock();
            state.sending = Counter::default();
            state.stats.forwarded.merge(forwarded);
            state.stats.send_failed.merge(failed);
        }
    }

    fn stats(&self) -> DirectionStats {
        let state = self.state.lock();
        let mut stats = state.stats;
        stats.held = Counter {
            packets: state.held.len() as u64 + state.sending.packets,
            bytes: state.held_bytes as u64 + state.sending.bytes,
        };
        stats
    }
}

/// Sends one held packet on its non-blocking socket, retrying briefly while
/// the socket buffer is full.
fn send(packet: &Held) -> io::Result<()> {
    for _ in 0..1_000 {
        let result = match packet.dest {
            Some(dest) => packet.socket.send_to(&packet.payload, dest),
            None => packet.socket.send(&packet.payload),
        };
        match result {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
            other => return other.map(drop),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::WouldBlock,
        "socket buffer full for 1000 tries",
    ))
}

/// One client address and its socket towards the target.
struct Session {
    upstream: Arc<StdUdpSocket>,
    last_active_ms: AtomicU64,
    recv_task: Mutex<Option<JoinHandle<()>>>,
}

impl Session {
    fn touch(&self, now: Duration) {
        self.last_active_ms
            .fetch_max(now.as_millis() as u64, Ordering::Relaxed);
    }
}

struct Inner {
    start: Instant,
    target: SocketAddr,
    up: Lane,
    down: Lane,
    listen_send: Arc<StdUdpSocket>,
    sessions: Mutex<HashMap<SocketAddr, Arc<Session>>>,
    sessions_max: usize,
    session_idle_timeout: Duration,
    socket_buffer_bytes: usize,
    sessions_opened: AtomicU64,
    sessions_expired: AtomicU64,
    packets_rejected_sessions_max: AtomicU64,
    stopped: AtomicBool,
}

impl Inner {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// The session for `client`, opening one if there is room.
    fn session_for(self: &Arc<Self>, client: SocketAddr, now: Duration) -> Option<Arc<Session>> {
        let mut sessions = self.sessions.lock();
        if let Some(session) = sessions.get(&client) {
            session.touch(now);
            return Some(Arc::clone(session));
        }
        if sessions.len() >= self.sessions_max {
            let rejected = self
                .packets_rejected_sessions_max
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if rejected.is_power_of_two() {
                tracing::warn!(
                    %client,
                    sessions_max = self.sessions_max,
                    rejected,
                    "relay session limit reached: dropping packets from new client"
                );
            }
            return None;
        }
        let (upstream_send, upstream_recv) =
            match open_upstream(self.target, self.socket_buffer_bytes) {
                Ok(sockets) => sockets,
                Err(error) => {
                    tracing::warn!(%client, %error, "relay could not open a session socket");
                    return None;
                }
            };
        let session = Arc::new(Session {
            upstream: Arc::new(upstream_send),
            last_active_ms: AtomicU64::new(now.as_millis() as u64),
            recv_task: Mutex::new(None),
        });
        let task = tokio::spawn(run_downstream(
            Arc::clone(self),
            Arc::clone(&session),
            upstream_recv,
            client,
        ));
        *session.recv_task.lock() = Some(task);
        sessions.insert(client, Arc::clone(&session));
        self.sessions_opened.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%client, "relay session opened");
        Some(session)
    }

    fn expire_idle_sessions(&self) {
        let now_ms = self.now().as_millis() as u64;
        let timeout_ms = self.session_idle_timeout.as_millis() as u64;
        self.sessions.lock().retain(|client, session| {
            let idle =
                now_ms.saturating_sub(session.last_active_ms.load(Ordering::Relaxed)) >= timeout_ms;
            if idle {
                if let Some(task) = session.recv_task.lock().take() {
                    task.abort();
                }
                self.sessions_expired.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%client, "relay session expired");
            }
            !idle
        });
    }

    fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        self.up.stop();
        self.down.stop();
        for session in self.sessions.lock().values() {
            if let Some(task) = session.recv_task.lock().take() {
                task.abort();
            }
        }
    }
}

fn new_socket(addr: SocketAddr, buffer_bytes: usize) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Large buffers so the relay itself does not drop; a failure only means
    // the kernel default stays.
    let _ = socket.set_recv_buffer_size(buffer_bytes);
    let _ = socket.set_send_buffer_size(buffer_bytes);
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A socket connected to `target`: one std handle for the sender thread,
/// one tokio handle (same file description) for receiving.
fn open_upstream(target: SocketAddr, buffer_bytes: usize) -> io::Result<(StdUdpSocket, UdpSocket)> {
    let bind: SocketAddr = match target {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = new_socket(bind, buffer_bytes)?;
    socket.bind(&bind.into())?;
    socket.connect(&target.into())?;
    let socket: StdUdpSocket = socket.into();
    if let Err(error) = rxtime::enable(&socket) {
        tracing::debug!(%error, "no kernel receive timestamps; delays count from task wake-up");
    }
    let send = socket.try_clone()?;
    Ok((send, UdpSocket::from_std(socket)?))
}

/// Client → target: the listen socket's receive loop.
async fn run_upstream(inner: Arc<Inner>, listen: UdpSocket) {
    let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
    let fd = listen.as_raw_fd();
    loop {
        let received = listen
            .async_io(Interest::READABLE, || rxtime::recv_from(fd, &mut buf))
            .await;
        let (len, client, age) = match received {
            Ok(rxtime::Received {
                len,
                from: Some(client),
                age,
            }) => (len, client, age),
            Ok(_) => continue,
            Err(error) => {
                // ICMP errors for earlier sends surface here; keep serving.
                tracing::debug!(%error, "relay listen socket receive error");
                continue;
            }
        };
        // Delay counts from when the kernel received the packet, not from
        // when this task got to run.
        let now = inner.now().saturating_sub(age);
        if let Some(session) = inner.session_for(client, now) {
            inner
                .up
                .offer(now, buf[..len].to_vec(), &session.upstream, None);
        }
    }
}

/// Target → client: one session socket's receive loop.
async fn run_downstream(
    inner: Arc<Inner>,
    session: Arc<Session>,
    upstream: UdpSocket,
    client: SocketAddr,
) {
    let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
    let fd = upstream.as_raw_fd();
    loop {
        let received = upstream
            .async_io(Interest::READABLE, || rxtime::recv_from(fd, &mut buf))
            .await;
        let (len, age) = match received {
            Ok(received) => (received.len, received.age),
            // The target port was closed when we sent (ICMP); it may reopen.
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(error) => {
                tracing::warn!(%client, %error, "relay session socket failed; waiting for expiry");
                return;
            }
        };
        let now = inner.now().saturating_sub(age);
        session.touch(now);
        inner
            .down
            .offer(now, buf[..len].to_vec(), &inner.listen_send, Some(client));
    }
}

/// A running UDP relay emulating a link between its clients and one target.
///
/// ```
/// use diaspora_twin::{LinkParams, Relay, RelayConfig};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let target = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
/// let relay = Relay::start(RelayConfig {
///     up: LinkParams::default().with_delay_ms(5.0),
///     ..RelayConfig::new("127.0.0.1:0".parse().unwrap(), target.local_addr().unwrap())
/// })
/// .await
/// .unwrap();
/// let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
/// client.send_to(b"hello", relay.local_addr()).await.unwrap();
/// let mut buf = [0u8; 16];
/// let (len, _) = target.recv_from(&mut buf).await.unwrap();
/// assert_eq!(&buf[..len], b"hello");
/// // The target can read the packet a moment before the relay's sender
/// // thread books it: until then it is counted as held.
/// let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
/// loop {
///     let up = relay.stats().up;
///     assert_eq!(up.forwarded.packets + up.held.packets, 1);
///     if up.forwarded.packets == 1 || std::time::Instant::now() > deadline {
///         break;
///     }
///     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
/// }
/// assert_eq!(relay.stats().up.forwarded.packets, 1);
/// relay.shutdown().await;
/// # });
/// ```
pub struct Relay {
    inner: Arc<Inner>,
    local_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Binds the listen socket and starts the relay. Must be called inside a
    /// tokio runtime. The clock (time zero for schedules) starts now.
    ///
    /// ```
    /// use diaspora_twin::{LinkParams, Relay, RelayConfig};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let config = RelayConfig {
    ///     up: LinkParams::default().with_loss(2.0),
    ///     ..RelayConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:9".parse().unwrap())
    /// };
    /// assert!(Relay::start(config).await.unwrap_err().to_string().contains("`loss` = 2"));
    /// # });
    /// ```
    pub async fn start(config: RelayConfig) -> Result<Relay, RelayError> {
        config.validate()?;
        let up = ScheduledLink::new(config.up.clone(), config.schedule_up.clone(), config.seed)?;
        // A different stream for the down link, still fixed by `seed`.
        let down_seed = config.seed ^ 0x9E37_79B9_7F4A_7C15;
        let down =
            ScheduledLink::new(config.down.clone(), config.schedule_down.clone(), down_seed)?;

        let socket_error = |what: &'static str, addr: SocketAddr| {
            move |source| RelayError::Socket { what, addr, source }
        };
        let listen = new_socket(config.listen, config.socket_buffer_bytes)
            .and_then(|socket| socket.bind(&config.listen.into()).map(|()| socket))
            .map_err(socket_error("bind", config.listen))?;
        let listen: StdUdpSocket = listen.into();
        if let Err(error) = rxtime::enable(&listen) {
            tracing::debug!(%error, "no kernel receive timestamps; delays count from task wake-up");
        }
        let listen_send = listen
            .try_clone()
            .map_err(socket_error("clone", config.listen))?;
        let listen =
            UdpSocket::from_std(listen).map_err(socket_error("register", config.listen))?;
        let local_addr = listen
            .local_addr()
            .map_err(socket_error("address of", config.listen))?;

        let inner = Arc::new(Inner {
            start: Instant::now(),
            target: config.target,
            up: Lane::new(up, config.held_bytes_max),
            down: Lane::new(down, config.held_bytes_max),
            listen_send: Arc::new(listen_send),
            sessions: Mutex::new(HashMap::new()),
            sessions_max: config.sessions_max,
            session_idle_timeout: config.session_idle_timeout,
            socket_buffer_bytes: config.socket_buffer_bytes,
            sessions_opened: AtomicU64::new(0),
            sessions_expired: AtomicU64::new(0),
            packets_rejected_sessions_max: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });

        let mut threads = Vec::new();
        for (name, up) in [("diaspora-twin-up", true), ("diaspora-twin-down", false)] {
            let inner = Arc::clone(&inner);
            let thread = std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || {
                    let lane = if up { &inner.up } else { &inner.down };
                    lane.run_sender(inner.start);
                })
                .map_err(|source| RelayError::Socket {
                    what: "sender thread for",
                    addr: local_addr,
                    source,
                })?;
            threads.push(thread);
        }

        let reaper = {
            let inner = Arc::clone(&inner);
            let period = (config.session_idle_timeout / 4).max(Duration::from_millis(5));
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(period);
                loop {
                    ticker.tick().await;
                    inner.expire_idle_sessions();
                }
            })
        };
        let receiver = tokio::spawn(run_upstream(Arc::clone(&inner), listen));
        tracing::debug!(%local_addr, target = %config.target, "relay started");
        Ok(Relay {
            inner,
            local_addr,
            tasks: vec![receiver, reaper],
            threads,
        })
    }

    /// The address clients should send to.
    ///
    /// ```no_run
    /// # async fn f(relay: diaspora_twin::Relay) {
    /// let addr = relay.local_addr(); // give this to the client instead of the server's
    /// # }
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Time since the relay started: the time base of its schedules.
    ///
    /// ```no_run
    /// # async fn f(relay: diaspora_twin::Relay) {
    /// println!("relay up for {:?}", relay.elapsed());
    /// # }
    /// ```
    pub fn elapsed(&self) -> Duration {
        self.inner.now()
    }

    /// Replaces the client → target base parameters now (fault injection:
    /// outage on or off, bandwidth changes). Packets already held keep their
    /// delivery times; an outage stops new packets only.
    ///
    /// ```no_run
    /// # use diaspora_twin::LinkParams;
    /// # async fn f(relay: diaspora_twin::Relay) {
    /// relay.set_up(LinkParams::default().with_blackhole(true)).unwrap();
    /// # }
    /// ```
    pub fn set_up(&self, params: LinkParams) -> Result<(), ParamsError> {
        let now = self.inner.now();
        self.inner.up.state.lock().link.set_base(now, params)
    }

    /// Replaces the target → client base parameters now; see [`Relay::set_up`].
    ///
    /// ```no_run
    /// # use diaspora_twin::LinkParams;
    /// # async fn f(relay: diaspora_twin::Relay) {
    /// relay.set_down(LinkParams::default().with_bandwidth_mbit(10.0)).unwrap();
    /// # }
    /// ```
    pub fn set_down(&self, params: LinkParams) -> Result<(), ParamsError> {
        let now = self.inner.now();
        self.inner.down.state.lock().link.set_base(now, params)
    }

    /// A snapshot of the counters.
    ///
    /// ```no_run
    /// # async fn f(relay: diaspora_twin::Relay) {
    /// let stats = relay.stats();
    /// println!("up: {} forwarded, {} dropped", stats.up.forwarded.packets, stats.up.dropped_total().packets);
    /// # }
    /// ```
    pub fn stats(&self) -> RelayStats {
        let inner = &self.inner;
        RelayStats {
            up: inner.up.stats(),
            down: inner.down.stats(),
            sessions_active: inner.sessions.lock().len(),
            sessions_opened: inner.sessions_opened.load(Ordering::Relaxed),
            sessions_expired: inner.sessions_expired.load(Ordering::Relaxed),
            packets_rejected_sessions_max: inner
                .packets_rejected_sessions_max
                .load(Ordering::Relaxed),
        }
    }

    /// Stops receiving, drops held packets, and waits for the sender threads
    /// to exit. Dropping a `Relay` stops it too, without waiting.
    ///
    /// ```no_run
    /// # async fn f(relay: diaspora_twin::Relay) {
    /// relay.shutdown().await;
    /// # }
    /// ```
    pub async fn shutdown(mut self) {
        self.stop();
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }

    fn stop(&mut self) {
        self.inner.stop();
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("local_addr", &self.local_addr)
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}
