//! Calibration against the fidelity targets (its own test binary, so it does
//! not share the CPU with the other integration tests).

use std::time::Duration;

use diaspora_twin::{calibrate, CalibrateConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_meets_fidelity_targets_at_20ms_100mbit_1pct() {
    let started = std::time::Instant::now();
    let report = calibrate(CalibrateConfig {
        delay_ms: 20.0,
        bandwidth_mbit: 100.0,
        loss: 0.01,
        duration: Duration::from_secs(2),
        ..CalibrateConfig::default()
    })
    .await
    .unwrap();
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert!(report.delay_error_ms().abs() <= 1.0, "delay: {report:#?}");
    assert!(
        report.bandwidth_error_fraction().abs() <= 0.05,
        "bandwidth: {report:#?}"
    );
    assert!(
        report.loss_error_fraction().abs() <= 0.20,
        "loss: {report:#?}"
    );
    assert!(report.within_targets());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "calibration took {:?}",
        started.elapsed()
    );
}
