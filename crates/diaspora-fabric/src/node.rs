//! A running node: the broker, its QUIC data plane, its gRPC admin plane and
//! the housekeeping ticker (interval fsync, retention). The same type runs
//! in-process (embedded mode) and behind `diaspora serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::AdminService;
use crate::broker::Broker;
use crate::config::NodeConfig;
use crate::error::{FabricError, Result};
use crate::tls::{self, CertPaths};

/// QUIC transport settings shared by node and client: windows sized so that
/// one stream can carry large items at full speed on a fast link.
pub(crate) fn transport_config(congestion: crate::config::Congestion) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.congestion_controller_factory(congestion.factory());
    t.stream_receive_window(quinn::VarInt::from_u32(32 << 20))
        .receive_window(quinn::VarInt::from_u32(128 << 20))
        .send_window(128 << 20)
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(1024))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(16))
        .keep_alive_interval(Some(Duration::from_secs(1)))
        .max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            3_000,
        ))));
    t
}

/// UDP socket buffer size asked for, bytes. Bursts of large items on a fast
/// path overflow the kernel default (~208 KiB) and every drop costs QUIC a
/// loss-recovery round and a halved congestion window.
pub const UDP_BUFFER_BYTES: usize = 16 << 20;

/// Binds a UDP socket for QUIC with large send/receive buffers: forced past
/// `net.core.{r,w}mem_max` where the process may (root), else as large as
/// the system allows.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let size = UDP_BUFFER_BYTES as libc::c_int;
        let set = |opt: libc::c_int| {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid socket fd and a pointer to a live c_int of the given length.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        if set(force) != 0 && set(plain) != 0 {
            tracing::debug!(opt = plain, "could not enlarge UDP buffer");
        }
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A quinn endpoint on a socket from [`bind_udp`].
pub fn quic_endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    quic_endpoint_with(addr, server, quinn::EndpointConfig::default())
}

fn quic_endpoint_with(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    config: quinn::EndpointConfig,
) -> std::io::Result<quinn::Endpoint> {
    let socket = bind_udp(addr)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for quinn"))?;
    quinn::Endpoint::new(config, server, socket, runtime)
}

/// The node's QUIC stateless-reset key, kept in `DATA_DIR/quic_reset_key`.
/// With the same key after a restart, the node answers packets of
/// connections it no longer knows with a reset their clients accept, so they
/// reconnect at once instead of waiting out the idle timeout.
fn reset_key(data_dir: &std::path::Path) -> Result<ring::hmac::Key> {
    use std::io::Write;
    let path = data_dir.join("quic_reset_key");
    let secret = match std::fs::read(&path) {
        Ok(b) if b.len() == 32 => b,
        Ok(b) => {
            return Err(FabricError::Invalid(format!(
                "{} holds {} bytes, not 32: delete it to make a new key",
                path.display(),
                b.len()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut b = vec![0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).map_err(
                |_| FabricError::Invalid("no system randomness for the reset key".into()),
            )?;
            std::fs::create_dir_all(data_dir)
                .map_err(|e| FabricError::io(format!("create {}", data_dir.display()), e))?;
            let mut f = std::fs::File::create(&path)
                .map_err(|e| FabricError::io(format!("create {}", path.display()), e))?;
            f.write_all(&b)
                .and_then(|()| f.sync_all())
                .map_err(|e| FabricError::io(format!("write {}", path.display()), e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
            }
            b
        }
        Err(e) => return Err(FabricError::io(format!("read {}", path.display()), e)),
    };
    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret))
}

/// The transport settings the node and clients use (for baselines that must match them).
pub fn transport_config_public(congestion: crate::config::Congestion) -> quinn::TransportConfig {
    transport_config(congestion)
}

/// A running node. Drop or [`Node::shutdown`] stops it.
pub struct Node {
    broker: Arc<Broker>,
    data_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    certs: CertPaths,
    endpoint: quinn::Endpoint,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Opens the data directory (recovering every partition), makes or loads
    /// certificates, and starts serving.
    pub async fn start(config: NodeConfig) -> Result<Node> {
        let certs_dir = config
            .certs_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("certs"));
        let mut certs = CertPaths::in_dir(&certs_dir);
        if !certs.exist() {
            if config.certs_dir.is_some() {
                return Err(FabricError::Invalid(format!(
                    "certificate directory {} lacks ca.pem/node.pem/node.key (make one with `diaspora certs --out {}`)",
                    certs_dir.display(),
                    certs_dir.display()
                )));
            }
            certs = tls::generate_dev_certs(&certs_dir, &[])?;
            tracing::info!(ca = %certs.ca.display(), "created development certificates");
        }

        let cfg = config.clone();
        let broker = Arc::new(
            tokio::task::spawn_blocking(move || Broker::open(cfg))
                .await
                .map_err(|e| FabricError::Invalid(format!("open task: {e}")))??,
        );

        let rustls_cfg = tls::server_config(&certs, diaspora_proto::ALPN)?;
        let quic_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(rustls_cfg)
            .map_err(|e| FabricError::Invalid(format!("tls: {e}")))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic_crypto));
        server_config.transport_config(Arc::new(transport_config(config.congestion)));
        let endpoint = quic_endpoint_with(
            config.listen,
            Some(server_config),
            quinn::EndpointConfig::new(Arc::new(reset_key(&config.data_dir)?)),
        )
        .map_err(|e| FabricError::Connection {
            addr: config.listen.to_string(),
            message: format!("cannot listen: {e}"),
        })?;
        let data_addr = endpoint
            .local_addr()
            .map_err(|e| FabricError::io("data-plane local address", e))?;

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(crate::server::accept_loop(
            endpoint.clone(),
            broker.clone(),
        )));

        let mut admin_addr = None;
        if let Some(listen) = config.admin_listen {
            let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
                FabricError::Connection {
                    addr: listen.to_string(),
                    message: format!("cannot listen (admin): {e}"),
                }
            })?;
            admin_addr = Some(
                listener
                    .local_addr()
                    .map_err(|e| FabricError::io("admin local address", e))?,
            );
            let cert = std::fs::read(&certs.node_cert)
                .map_err(|e| FabricError::io(format!("read {}", certs.node_cert.display()), e))?;
            let key = std::fs::read(&certs.node_key)
                .map_err(|e| FabricError::io(format!("read {}", certs.node_key.display()), e))?;
            let ca = std::fs::read(&certs.ca)
                .map_err(|e| FabricError::io(format!("read {}", certs.ca.display()), e))?;
            // Client certificates are optional at the TLS layer; the guard
            // decides whether the node's auth mode needs one.
            let tls = tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(cert, key))
                .client_ca_root(tonic::transport::Certificate::from_pem(ca))
                .client_auth_optional(true);
            let mut rx = shutdown_rx.clone();
            let service = AdminService::new(broker.clone()).into_server();
            let server = tonic::transport::Server::builder()
                .tls_config(tls)
                .map_err(|e| FabricError::Invalid(format!("admin tls: {e}")))?
                .add_service(service);
            tasks.push(tokio::spawn(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let stop = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                if let Err(e) = server.serve_with_incoming_shutdown(incoming, stop).await {
                    tracing::error!(error = %e, "admin plane stopped");
                }
            }));
        }

        let hk_broker = broker.clone();
        let mut rx = shutdown_rx.clone();
        let every = config.housekeeping_interval;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let b = hk_broker.clone();
                        let _ = tokio::task::spawn_blocking(move || b.housekeeping()).await;
                    }
                    _ = rx.changed() => if *rx.borrow() { return },
                }
            }
        }));

        tracing::info!(%data_addr, ?admin_addr, data_dir = %config.data_dir.display(), auth = %config.auth.mode, "node serving");
        if config.auth.mode == crate::guard::AuthMode::Dev {
            tracing::warn!("auth: dev mode — anonymous clients allowed and no ACL checked (start with --auth cert|token|cert-or-token|cert-and-token to require identities)");
        }
        Ok(Node {
            broker,
            data_addr,
            admin_addr,
            certs,
            endpoint,
            shutdown_tx,
            tasks,
        })
    }

    /// The QUIC data-plane address actually bound.
    pub fn data_addr(&self) -> SocketAddr {
        self.data_addr
    }

    /// The gRPC admin address actually bound, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The CA certificate clients must trust.
    pub fn ca_file(&self) -> PathBuf {
        self.certs.ca.clone()
    }

    /// The node's state (for embedded use and tests).
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops accepting, closes connections, fsyncs every partition.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        self.endpoint.close(
            quinn::VarInt::from_u32(crate::server::CONN_CLOSE_SHUTDOWN),
            b"node shutting down",
        );
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let b = self.broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.sync_all()).await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"node dropped");
        for t in &self.tasks {
            t.abort();
        }
    }
}
