//! The relay with real UDP on 127.0.0.1: an echo server behind it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diaspora_twin::{Change, LinkParams, Relay, RelayConfig, Schedule, ScheduledChange};
use tokio::net::UdpSocket;

/// Real-socket timing tests run one at a time: in parallel they starve each
/// other's sockets on a 2-core machine and measure the machine, not the relay.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An echo server; returns its address.
async fn echo_server() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..len], from).await;
        }
    });
    addr
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn relay_to(target: SocketAddr, up: LinkParams, down: LinkParams) -> Relay {
    Relay::start(RelayConfig {
        up,
        down,
        seed: 11,
        ..RelayConfig::new(localhost(), target)
    })
    .await
    .unwrap()
}

/// Sends one probe and waits up to `wait` for its echo; returns the RTT.
async fn round_trip(
    client: &UdpSocket,
    relay: SocketAddr,
    seq: u32,
    wait: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    client.send_to(&seq.to_le_bytes(), relay).await.unwrap();
    let mut buf = [0u8; 64];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, client.recv(&mut buf)).await {
            Ok(Ok(4)) if buf[..4] == seq.to_le_bytes() => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_the_configured_delay_each_way() {
    let _one = ONE_AT_A_TIME.lock().await;
    let target = echo_server().await;
    let link = LinkParams::default().with_delay_ms(10.0);
    let relay = relay_to(target, link.clone(), link).await;
    let client = UdpSocket::bind(localhost()).await.unwrap();
    let mut rtts_ms = Vec::new();
    for seq in 0..50 {
        let rtt = round_trip(&client, relay.local_addr(), seq, Duration::from_secs(1))
            .await
            .unwrap();
        rtts_ms.push(rtt.as_secs_f64() * 1e3);
    }
    rtts_ms.sort_by(f64::total_cmp);
    let median = rtts_ms[rtts_ms.len() / 2];
    assert!(
        rtts_ms[0] >= 20.0,
        "an echo came back faster than the link allows: {rtts_ms:?}"
    );
    assert!(median < 22.0, "median RTT {median} ms for 2 × 10 ms");
    let stats = relay.stats();
    assert_eq!(stats.up.forwarded.packets, 50);
    assert_eq!(stats.down.forwarded.packets, 50);
    assert_eq!(stats.up.forwarded.bytes, 200);
    assert_eq!(stats.sessions_active, 1);
    assert_eq!(stats.sessions_opened, 1);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_drops_until_lifted() {
    let _one = ONE_AT_A_TIME.lock().await;
    let target = echo_server().await;
    let relay = relay_to(target, LinkParams::default(), LinkParams::default()).await;
    let client = UdpSocket::bind(localhost()).await.unwrap();
    let wait = Duration::from_millis(300);
    assert!(round_trip(&client, relay.local_addr(), 1, wait)
        .await
        .is_some());

    relay
        .set_up(LinkParams::default().with_blackhole(true))
        .unwrap();
    for seq in 2..12 {
        assert!(
            round_trip(&client, relay.local_addr(), seq, Duration::from_millis(30))
                .await
                .is_none()
        );
    }
    let stats = relay.stats();
    assert_eq!(stats.up.dropped_blackhole.packets, 10);
    assert_eq!(stats.up.forwarded.packets, 1);

    relay.set_up(LinkParams::default()).unwrap();
    assert!(round_trip(&client, relay.local_addr(), 12, wait)
        .await
        .is_some());

    // The down direction can be cut independently.
    relay
        .set_down(LinkParams::default().with_blackhole(true))
        .unwrap();
    assert!(
        round_trip(&client, relay.local_addr(), 13, Duration::from_millis(100))
            .await
            .is_none()
    );
    let stats = relay.stats();
    assert_eq!(stats.up.forwarded.packets, 3);
    assert_eq!(stats.down.dropped_blackhole.packets, 1);
    assert!(relay
        .set_down(LinkParams::default().with_loss(7.0))
        .is_err());
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_ratio_is_close_to_configured() {
    let _one = ONE_AT_A_TIME.lock().await;
    const PACKETS: u32 = 4_000;
    let target = echo_server().await;
    let relay = relay_to(
        target,
        LinkParams::default().with_loss(0.1),
        LinkParams::default(),
    )
    .await;
    let client = Arc::new(UdpSocket::bind(localhost()).await.unwrap());
    // Count echoes while sending, so the client's socket buffer never overflows.
    let counter = {
        let client = Arc::clone(&client);
        tokio::spawn(async move {
            let mut echoed = 0u32;
            let mut buf = [0u8; 64];
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf)).await
            {
                echoed += 1;
            }
            echoed
        })
    };
    for seq in 0..PACKETS {
        client
            .send_to(&seq.to_le_bytes(), relay.local_addr())
            .await
            .unwrap();
        if seq % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let echoed = counter.await.unwrap();
    let stats = relay.stats();
    // The link's loss is what the relay decided; echoes lost on the test's
    // own sockets under load are not the link's doing.
    let measured = stats.up.dropped_loss.packets as f64 / stats.up.received.packets.max(1) as f64;
    // σ = sqrt(0.1 · 0.9 / 4000) ≈ 0.0047.
    assert!((measured - 0.1).abs() < 0.025, "measured loss {measured}");
    let end_to_end = 1.0 - f64::from(echoed) / f64::from(PACKETS);
    assert!(
        end_to_end >= measured - 1e-9,
        "echoes cannot beat the link: {end_to_end} < {measured}"
    );
    assert_eq!(stats.up.received.packets, u64::from(PACKETS));
    assert_eq!(
        stats.up.dropped_loss.packets + stats.up.forwarded.packets,
        u64::from(PACKETS)
    );
    // The test's own socket may drop an echo on a busy loopback (outside
    // the relay), so the client can see fewer than were forwarded, never more.
    assert!(u64::from(echoed) <= stats.down.forwarded.packets);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_outage_starts_and_ends_on_time() {
    let _one = ONE_AT_A_TIME.lock().await;
    let target = echo_server().await;
    let schedule = Schedule::new(vec![ScheduledChange {
        at: Duration::from_millis(200),
        change: Change::Outage {
            duration: Duration::from_millis(300),
        },
    }])
    .unwrap();
    let relay = Relay::start(RelayConfig {
        schedule_up: schedule,
        ..RelayConfig::new(localhost(), target)
    })
    .await
    .unwrap();
    let client = UdpSocket::bind(localhost()).await.unwrap();
    let wait = Duration::from_millis(50);
    assert!(round_trip(&client, relay.local_addr(), 0, wait)
        .await
        .is_some());
    tokio::time::sleep(Duration::from_millis(250).saturating_sub(relay.elapsed())).await;
    assert!(round_trip(&client, relay.local_addr(), 1, wait)
        .await
        .is_none());
    tokio::time::sleep(Duration::from_millis(550).saturating_sub(relay.elapsed())).await;
    assert!(round_trip(&client, relay.local_addr(), 2, wait)
        .await
        .is_some());
    assert_eq!(relay.stats().up.dropped_blackhole.packets, 1);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_bounded_and_expire() {
    let _one = ONE_AT_A_TIME.lock().await;
    let target = echo_server().await;
    let relay = Relay::start(RelayConfig {
        sessions_max: 2,
        session_idle_timeout: Duration::from_millis(100),
        ..RelayConfig::new(localhost(), target)
    })
    .await
    .unwrap();
    let clients = [
        UdpSocket::bind(localhost()).await.unwrap(),
        UdpSocket::bind(localhost()).await.unwrap(),
        UdpSocket::bind(localhost()).await.unwrap(),
    ];
    let wait = Duration::from_millis(200);
    // Each client gets its own replies back.
    assert!(round_trip(&clients[0], relay.local_addr(), 100, wait)
        .await
        .is_some());
    assert!(round_trip(&clients[1], relay.local_addr(), 200, wait)
        .await
        .is_some());
    assert!(round_trip(
        &clients[2],
        relay.local_addr(),
        300,
        Duration::from_millis(50)
    )
    .await
    .is_none());
    let stats = relay.stats();
    assert_eq!(stats.sessions_active, 2);
    assert_eq!(stats.packets_rejected_sessions_max, 1);

    // After the idle timeout both sessions are gone and the third client fits.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let stats = relay.stats();
    assert_eq!(stats.sessions_active, 0);
    assert_eq!(stats.sessions_expired, 2);
    assert!(round_trip(&clients[2], relay.local_addr(), 301, wait)
        .await
        .is_some());
    assert_eq!(relay.stats().sessions_opened, 3);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_limit_paces_a_burst() {
    let _one = ONE_AT_A_TIME.lock().await;
    // 200 packets of 1250 bytes at 10 Mbit/s: 1 ms each, 200 ms in all.
    let sink = Arc::new(UdpSocket::bind(localhost()).await.unwrap());
    let relay = Relay::start(RelayConfig {
        up: LinkParams::default()
            .with_bandwidth_mbit(10.0)
            .with_queue_bytes_max(1 << 20),
        ..RelayConfig::new(localhost(), sink.local_addr().unwrap())
    })
    .await
    .unwrap();
    let client = UdpSocket::bind(localhost()).await.unwrap();
    let payload = vec![7u8; 1250];
    let start = Instant::now();
    for _ in 0..200 {
        client.send_to(&payload, relay.local_addr()).await.unwrap();
    }
    let mut buf = vec![0u8; 2048];
    let mut first = None;
    for _ in 0..200 {
        sink.recv(&mut buf).await.unwrap();
        first.get_or_insert_with(Instant::now);
    }
    let total_ms = start.elapsed().as_secs_f64() * 1e3;
    assert!(
        (199.0..215.0).contains(&total_ms),
        "200 ms of serialization took {total_ms} ms"
    );
    let spread_ms = first.unwrap().elapsed().as_secs_f64() * 1e3;
    assert!((190.0..215.0).contains(&spread_ms), "{spread_ms}");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_overflow_and_held_bytes_limit_are_counted() {
    let _one = ONE_AT_A_TIME.lock().await;
    let sink = UdpSocket::bind(localhost()).await.unwrap();
    let relay = Relay::start(RelayConfig {
        // 10 kbit/s with a 3000-byte queue: two 1500-byte packets fit.
        up: LinkParams::default()
            .with_bandwidth_bps(10_000)
            .with_queue_bytes_max(3_000),
        // A 1 s delay with only 64 KiB to hold: most of a 100 KiB burst is refused.
        down: LinkParams::default().with_delay_ms(1_000.0),
        held_bytes_max: 65_536,
        ..RelayConfig::new(localhost(), sink.local_addr().unwrap())
    })
    .await
    .unwrap();
    let client = UdpSocket::bind(localhost()).await.unwrap();
    for _ in 0..5 {
        client
            .send_to(&[0u8; 1500], relay.local_addr())
            .await
            .unwrap();
    }
    // Let the relay see them, then answer from the sink towards the client.
    let mut buf = [0u8; 2048];
    let (_, session) = sink.recv_from(&mut buf).await.unwrap();
    for _ in 0..100 {
        sink.send_to(&[0u8; 1024], session).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = relay.stats();
    assert_eq!(stats.up.dropped_queue_full.packets, 3);
    assert_eq!(stats.up.received.packets, 5);
    assert_eq!(stats.down.dropped_held_full.packets, 36);
    assert_eq!(
        stats.down.held,
        diaspora_twin::Counter {
            packets: 64,
            bytes: 65_536
        }
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn invalid_settings_are_refused_with_their_limit() {
    let _one = ONE_AT_A_TIME.lock().await;
    let target: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let err = Relay::start(RelayConfig {
        held_bytes_max: 10,
        ..RelayConfig::new(localhost(), target)
    })
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "relay setting `held_bytes_max` = 10 is out of range: allowed 65536..=4294967296"
    );
    let err = Relay::start(RelayConfig {
        up: LinkParams::default().with_jitter_ms(-2.0),
        ..RelayConfig::new(localhost(), target)
    })
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("`jitter_ms` = -2 is out of range"),
        "{err}"
    );
    let taken = UdpSocket::bind(localhost()).await.unwrap();
    let err = Relay::start(RelayConfig::new(taken.local_addr().unwrap(), target))
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("relay socket bind 127.0.0.1:"),
        "{err}"
    );
}
