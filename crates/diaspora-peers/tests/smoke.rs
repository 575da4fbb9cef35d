//! A tiny comparison end to end. The embedded diaspora node needs nothing
//! installed; NATS and Redis run only with DIASPORA_TEST_PEERS=1 (and the
//! servers from ./scripts/peers-install), so CI never needs them.

use std::time::Duration;

use diaspora_peers::{run, PeersConfig, System, Workload};

fn tiny(systems: Vec<System>) -> PeersConfig {
    PeersConfig {
        systems,
        workloads: vec![
            Workload {
                size_bytes: 128,
                items: 2000,
            },
            Workload {
                size_bytes: 64 << 10,
                items: 40,
            },
        ],
        rounds: 2,
        warmup: Duration::from_millis(20),
        stall_timeout: Duration::from_secs(20),
        ..PeersConfig::default()
    }
}

fn check(config: &PeersConfig) {
    let mut lines = Vec::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt
        .block_on(run(config, &mut |l| lines.push(l.to_string())))
        .unwrap();
    let runs = config.systems.len() * config.workloads.len() * config.rounds as usize;
    assert_eq!(lines.len(), runs, "{lines:?}");
    for w in &report.workloads {
        assert_eq!(w.systems.len(), config.systems.len());
        for s in &w.systems {
            assert_eq!(s.rounds.len(), config.rounds as usize);
            assert!(s.items_per_s.min > 0.0, "{s:?}");
            assert!(s.latency_us_p50.min >= 1.0, "{s:?}");
            assert!(s.latency_us_p999.max >= s.latency_us_p50.min, "{s:?}");
        }
    }
    let text = report.to_string();
    eprintln!("{}\n{text}", lines.join("\n"));
    for s in &config.systems {
        assert!(text.contains(s.name()), "{text}");
    }
    assert!(text.contains("what differs"), "{text}");
}

#[test]
fn the_embedded_fabric_runs_the_workload() {
    check(&tiny(vec![System::Diaspora]));
}

#[test]
fn every_system_runs_the_workload_when_asked() {
    if std::env::var("DIASPORA_TEST_PEERS").as_deref() != Ok("1") {
        eprintln!("skipped: set DIASPORA_TEST_PEERS=1 (after ./scripts/peers-install) to run NATS and Redis");
        return;
    }
    check(&tiny(System::ALL.to_vec()));
    let mut plain = tiny(vec![System::Nats, System::Redis]);
    plain.plain_peers = true;
    plain.rounds = 1;
    check(&plain);
}

#[test]
fn a_missing_server_says_how_to_install_it() {
    let mut config = tiny(vec![System::Nats]);
    config.nats_server = Some("/nonexistent/nats-server".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt.block_on(run(&config, &mut |_| {})).unwrap_err();
    assert!(
        e.to_string()
            .contains("--nats-server /nonexistent/nats-server is not an executable"),
        "{e}"
    );
}
