//! Client connections to a node: a small pool of QUIC connections (so large
//! items are not capped by one connection's crypto on one core), and
//! [`Lane`]s — one bidirectional stream each — carrying pipelined
//! request/response frames matched by id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use diaspora_proto::frame::encode_frame_chunks;
use diaspora_proto::v1::{self, frame::Body};
use diaspora_proto::PROTOCOL_VERSION;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::error::{FabricError, Result};
use crate::server::body_name;
use crate::wire::read_frame;

/// How to reach a node.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Data-plane address.
    pub addr: SocketAddr,
    /// CA certificate that signed the node's certificate.
    pub ca_file: PathBuf,
    /// Server name to verify in the node's certificate.
    pub server_name: String,
    /// QUIC connections to open; partitions are spread over them. Default: cores, 2..=4.
    pub connections: usize,
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
    /// Largest frame accepted from the node.
    pub frame_bytes_max: u64,
    /// Congestion controller of this client's sending side (produce, bridge).
    pub congestion: crate::config::Congestion,
    /// Client certificate and key to present (`diaspora certs client`); the
    /// node takes its subject CN as this client's principal. None: anonymous.
    pub identity: Option<crate::tls::ClientIdentity>,
    /// Bearer token (`diaspora token create`), presented in a Hello on
    /// every connection as soon as it is up. None: no token.
    pub token: Option<String>,
}

impl ClientConfig {
    /// Defaults for a node at `addr` whose CA is `ca_file`.
    pub fn new(addr: SocketAddr, ca_file: impl Into<PathBuf>) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        ClientConfig {
            addr,
            ca_file: ca_file.into(),
            server_name: "localhost".into(),
            connections: cores.clamp(2, 4),
            connect_timeout: Duration::from_secs(5),
            frame_bytes_max: crate::config::Limits::default().frame_bytes_max(),
            congestion: crate::config::Congestion::default(),
            identity: None,
            token: None,
        }
    }
}

struct ClientInner {
    config: ClientConfig,
    endpoint: quinn::Endpoint,
    quic_config: quinn::ClientConfig,
    connections: Mutex<Vec<Option<quinn::Connection>>>,
    /// One per slot: a slot's slow handshake (say, its first packets lost
    /// in an outage) does not hold back another slot's reconnect.
    connect_locks: Vec<tokio::sync::Mutex<()>>,
}

/// How long one *re*connection attempt may take: a few round trips of the
/// path the previous connection measured, at least [`RECONNECT_ATTEMPT_MIN`]
/// and at most the configured connect timeout. A handshake started while a
/// link is down has its Initial packets dropped, and QUIC retransmits them on
/// a doubling timer (about 1 s, then 2 s, …); starting a fresh attempt
/// instead bounds the time from the link's return to a working connection by
/// about one attempt, not by the idle timeout plus back-off.
pub fn reconnect_attempt_timeout(last_rtt: Duration, connect_timeout: Duration) -> Duration {
    (last_rtt * 8 + Duration::from_millis(300))
        .max(RECONNECT_ATTEMPT_MIN)
        .min(connect_timeout)
}

/// Shortest reconnection attempt (see [`reconnect_attempt_timeout`]).
pub const RECONNECT_ATTEMPT_MIN: Duration = Duration::from_millis(800);

/// A handle to a node; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl Client {
    /// Connects (eagerly, so an unreachable node is reported now).
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        let rustls_cfg = crate::tls::client_config_with_identity(
            &config.ca_file,
            config.identity.as_ref(),
            diaspora_proto::ALPN,
        )?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(rustls_cfg)
            .map_err(|e| FabricError::Invalid(format!("tls: {e}")))?;
        let mut quic_config = quinn::ClientConfig::new(Arc::new(crypto));
        quic_config.transport_config(Arc::new(crate::node::transport_config(config.congestion)));
        let bind: SocketAddr = if config.addr.is_ipv6() {
            "[::]:0".parse().expect("literal")
        } else {
            "0.0.0.0:0".parse().expect("literal")
        };
        let endpoint =
            crate::node::quic_endpoint(bind, None).map_err(|e| FabricError::Connection {
                addr: config.addr.to_string(),
                message: format!("cannot open a UDP socket: {e}"),
            })?;
        let n = config.connections.max(1);
        let client = Client {
            inner: Arc::new(ClientInner {
                config,
                endpoint,
                quic_config,
                connections: Mutex::new(vec![None; n]),
                connect_locks: (0..n).map(|_| tokio::sync::Mutex::new(())).collect(),
            }),
        };
        client.connection(0).await?;
        Ok(client)
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Number of connections in the pool.
    pub fn connection_count(&self) -> usize {
        self.inner.connections.lock().len()
    }

    /// The pool's connections as they are now, one entry per slot, without
    /// (re)connecting: `None` for a slot never connected or whose connection
    /// closed. For reading path statistics (`rtt`, `stats`), as
    /// diaspora-telemetry's QUIC collector does.
    pub fn open_connections(&self) -> Vec<Option<quinn::Connection>> {
        self.inner
            .connections
            .lock()
            .iter()
            .map(|c| c.clone().filter(|c| c.close_reason().is_none()))
            .collect()
    }

    /// Connection `i % n`, (re)connecting when it is absent or closed.
    pub async fn connection(&self, i: usize) -> Result<quinn::Connection> {
        let n = self.connection_count();
        let slot = i % n;
        if let Some(c) = &self.inner.connections.lock()[slot] {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let _g = self.inner.connect_locks[slot].lock().await;
        // A slot that held a connection is reconnecting: bound the attempt
        // by the path's measured round trip (see reconnect_attempt_timeout).
        let previous_rtt = match &self.inner.connections.lock()[slot] {
            Some(c) if c.close_reason().is_none() => return Ok(c.clone()),
            Some(c) => Some(c.rtt()),
            None => None,
        };
        let cfg = &self.inner.config;
        let limit = previous_rtt.map_or(cfg.connect_timeout, |rtt| {
            reconnect_attempt_timeout(rtt, cfg.connect_timeout)
        });
        let addr = cfg.addr;
        let err = |m: String| FabricError::Connection {
            addr: addr.to_string(),
            message: m,
        };
        let connecting = self
            .inner
            .endpoint
            .connect_with(self.inner.quic_config.clone(), addr, &cfg.server_name)
            .map_err(|e| err(e.to_string()))?;
        let conn = tokio::time::timeout(limit, connecting)
            .await
            .map_err(|_| err(format!("no answer within {limit:?} (is the node running?)")))?
            .map_err(|e| match e {
                quinn::ConnectionError::TimedOut => err("timed out (is the node running?)".into()),
                e => err(e.to_string()),
            })?;
        if cfg.token.is_some() {
            // Authenticate the connection before any lane uses it.
            let lane = Lane::open(&conn, cfg.frame_bytes_max).await?;
            let answer = tokio::time::timeout(limit, lane.call(self.hello_body()))
                .await
                .map_err(|_| err(format!("no answer to Hello within {limit:?}")))?;
            if let Err(e) = answer {
                conn.close(quinn::VarInt::from_u32(0), b"authentication failed");
                return Err(e);
            }
        }
        self.inner.connections.lock()[slot] = Some(conn.clone());
        Ok(conn)
    }

    fn hello_body(&self) -> Body {
        Body::Hello(v1::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_id: format!("diaspora-rs/{}", env!("CARGO_PKG_VERSION")),
            token: self.inner.config.token.clone().unwrap_or_default(),
        })
    }

    /// Opens a new lane on connection `i % n`.
    pub async fn lane(&self, i: usize) -> Result<Lane> {
        let conn = self.connection(i).await?;
        Lane::open(&conn, self.inner.config.frame_bytes_max).await
    }

    /// Sends one request on a fresh lane and waits for its answer.
    pub async fn call(&self, body: Body) -> Result<Body> {
        self.lane(0).await?.call(body).await
    }

    /// Says hello and returns the node's limits.
    pub async fn hello(&self) -> Result<v1::HelloOk> {
        match self.call(self.hello_body()).await? {
            Body::HelloOk(h) => Ok(h),
            other => Err(unexpected("HelloOk", &other)),
        }
    }

    /// Partition count and offsets of a topic.
    pub async fn metadata(&self, topic: &str) -> Result<v1::MetadataResponse> {
        match self
            .call(Body::MetadataRequest(v1::MetadataRequest {
                topic: topic.into(),
            }))
            .await?
        {
            Body::MetadataResponse(m) => Ok(m),
            other => Err(unexpected("MetadataResponse", &other)),
        }
    }

    /// Reads one item's payload by reference — the other half of a
    /// metadata-only fetch ([`crate::ConsumerConfig::metadata_only`]).
    pub async fn read_payload(&self, topic: &str, partition: u32, offset: u64) -> Result<Bytes> {
        match self
            .lane(partition as usize)
            .await?
            .call(Body::PayloadRequest(v1::PayloadRequest {
                topic: topic.into(),
                partition,
                offset,
            }))
            .await?
        {
            Body::PayloadResponse(p) => Ok(p.payload),
            other => Err(unexpected("PayloadResponse", &other)),
        }
    }

    /// Closes every connection.
    pub fn close(&self) {
        for c in self.inner.connections.lock().iter().flatten() {
            c.close(quinn::VarInt::from_u32(0), b"client closed");
        }
    }
}

pub(crate) fn unexpected(want: &str, got: &Body) -> FabricError {
    FabricError::Invalid(format!("expected {want}, node sent {}", body_name(got)))
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Body>>>>>;

/// One bidirectional stream with pipelined requests. Responses are matched
/// to requests by frame id. When the stream fails, every pending request
/// gets the error.
pub struct Lane {
    tx: mpsc::Sender<Vec<Bytes>>,
    pending: Pending,
    next_id: AtomicU64,
    remote: SocketAddr,
}

impl Lane {
    async fn open(conn: &quinn::Connection, frame_bytes_max: u64) -> Result<Lane> {
        let remote = conn.remote_address();
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| FabricError::Connection {
            addr: remote.to_string(),
            message: e.to_string(),
        })?;
        let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(64);
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let fail_all = move |pending: &Pending, msg: String| {
            for (_, s) in pending.lock().drain() {
                let _ = s.send(Err(FabricError::Connection {
                    addr: remote.to_string(),
                    message: msg.clone(),
                }));
            }
        };
        let p1 = pending.clone();
        tokio::spawn(async move {
            while let Some(mut chunks) = rx.recv().await {
                if let Err(e) = send.write_all_chunks(&mut chunks).await {
                    fail_all(&p1, format!("write: {e}"));
                    return;
                }
            }
            let _ = send.finish();
        });
        let p2 = pending.clone();
        tokio::spawn(async move {
            loop {
                match read_frame(&mut recv, frame_bytes_max).await {
                    Ok(Some(frame)) => {
                        let body = frame.body.expect("decode_frame refuses empty bodies");
                        let result = match body {
                            Body::Error(e) => Err(FabricError::Remote {
                                code: v1::ErrorCode::try_from(e.code)
                                    .unwrap_or(v1::ErrorCode::Internal),
                                message: e.message,
                            }),
                            b => Ok(b),
                        };
                        if frame.id == 0 {
                            // A stream-level error (e.g. malformed frame): fails everyone.
                            if let Err(e) = result {
                                fail_all(&p2, e.to_string());
                                return;
                            }
                            continue;
                        }
                        if let Some(s) = p2.lock().remove(&frame.id) {
                            let _ = s.send(result);
                        }
                    }
                    Ok(None) => {
                        fail_all(&p2, "stream closed by node".into());
                        return;
                    }
                    Err(e) => {
                        fail_all(&p2, e.to_string());
                        return;
                    }
                }
            }
        });
        Ok(Lane {
            tx,
            pending,
            next_id: AtomicU64::new(1),
            remote,
        })
    }

    /// Sends a request now; the returned receiver resolves with its answer.
    /// Waits only if the lane's write queue is full.
    pub async fn send(&self, body: Body) -> Result<oneshot::Receiver<Result<Body>>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (s, r) = oneshot::channel();
        self.pending.lock().insert(id, s);
        let wire = encode_frame_chunks(&v1::Frame {
            id,
            body: Some(body),
        });
        if self.tx.send(wire).await.is_err() {
            self.pending.lock().remove(&id);
            return Err(FabricError::Connection {
                addr: self.remote.to_string(),
                message: "lane closed".into(),
            });
        }
        Ok(r)
    }

    /// Sends a request and waits for its answer.
    pub async fn call(&self, body: Body) -> Result<Body> {
        let r = self.send(body).await?;
        r.await.map_err(|_| FabricError::Connection {
            addr: self.remote.to_string(),
            message: "lane closed before the answer".into(),
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnection_attempt_is_bounded_by_the_paths_round_trip() {
        let cap = Duration::from_secs(5);
        // A LAN or a short WAN: the floor.
        assert_eq!(
            reconnect_attempt_timeout(Duration::from_millis(1), cap),
            RECONNECT_ATTEMPT_MIN
        );
        // 200 ms of round trip: eight of them and a margin.
        assert_eq!(
            reconnect_attempt_timeout(Duration::from_millis(200), cap),
            Duration::from_millis(1_900)
        );
        // A satellite hop: never longer than the configured timeout.
        assert_eq!(reconnect_attempt_timeout(Duration::from_secs(2), cap), cap);
    }
}
