//! A real QUIC connection (quinn) through the relay: handshake and a 1 MiB
//! transfer over a 20 ms, 100 Mbit/s, slightly lossy link.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diaspora_twin::{LinkParams, Relay, RelayConfig};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

const TRANSFER_BYTES: usize = 1 << 20;

fn endpoints() -> (quinn::Endpoint, quinn::Endpoint) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = CertificateDer::from(certified.cert);
    let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    let server_config =
        quinn::ServerConfig::with_single_cert(vec![cert.clone()], key.into()).unwrap();
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = quinn::Endpoint::server(server_config, localhost).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = quinn::Endpoint::client(localhost).unwrap();
    client.set_default_client_config(
        quinn::ClientConfig::with_root_certificates(Arc::new(roots)).unwrap(),
    );
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_handshake_and_1mib_transfer_through_the_relay() {
    let (server, client) = endpoints();
    let link = LinkParams::default()
        .with_delay_ms(20.0)
        .with_bandwidth_mbit(100.0)
        .with_loss(0.01);
    let relay = Relay::start(RelayConfig {
        up: link.clone(),
        down: link,
        seed: 3,
        ..RelayConfig::new("127.0.0.1:0".parse().unwrap(), server.local_addr().unwrap())
    })
    .await
    .unwrap();

    // Server: read one bidirectional stream to its end, answer its length.
    let serve = tokio::spawn(async move {
        let connection = server.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = connection.accept_bi().await.unwrap();
        let data = recv.read_to_end(2 * TRANSFER_BYTES).await.unwrap();
        let checksum: u64 = data.iter().map(|b| u64::from(*b)).sum();
        send.write_all(&(data.len() as u64).to_le_bytes())
            .await
            .unwrap();
        send.write_all(&checksum.to_le_bytes()).await.unwrap();
        send.finish().unwrap();
        connection.closed().await;
        server.wait_idle().await;
    });

    let run = async {
        let started = Instant::now();
        let connection = client
            .connect(relay.local_addr(), "localhost")
            .unwrap()
            .await
            .unwrap();
        let handshake = started.elapsed();
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        let data: Vec<u8> = (0..TRANSFER_BYTES).map(|i| (i % 251) as u8).collect();
        let expected_checksum: u64 = data.iter().map(|b| u64::from(*b)).sum();
        send.write_all(&data).await.unwrap();
        send.finish().unwrap();
        let answer = recv.read_to_end(16).await.unwrap();
        let transfer = started.elapsed() - handshake;
        assert_eq!(
            u64::from_le_bytes(answer[..8].try_into().unwrap()),
            TRANSFER_BYTES as u64
        );
        assert_eq!(
            u64::from_le_bytes(answer[8..].try_into().unwrap()),
            expected_checksum
        );
        connection.close(0u32.into(), b"done");
        (handshake, transfer)
    };
    let (handshake, transfer) = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("QUIC run timed out");
    println!(
        "handshake {handshake:?}, 1 MiB transfer {transfer:?}, stats {:#?}",
        relay.stats()
    );

    // One round trip is 40 ms; the handshake needs at least one, and 1 MiB
    // at 100 Mbit/s needs at least 84 ms of serialization.
    assert!(
        handshake >= Duration::from_millis(40),
        "handshake in {handshake:?} beat the link's RTT"
    );
    assert!(
        transfer >= Duration::from_millis(84),
        "transfer in {transfer:?} beat the link's rate"
    );
    let stats = relay.stats();
    assert!(stats.up.forwarded.bytes >= TRANSFER_BYTES as u64);
    assert!(stats.down.forwarded.packets > 0);
    assert_eq!(stats.sessions_opened, 1);
    client.wait_idle().await;
    tokio::time::timeout(Duration::from_secs(10), serve)
        .await
        .unwrap()
        .unwrap();
    relay.shutdown().await;
}
