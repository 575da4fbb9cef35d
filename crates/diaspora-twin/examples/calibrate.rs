//! Runs a calibration and prints the report as JSON.
//!
//! ```text
//! cargo run --release -p diaspora-twin --example calibrate -- [delay_ms] [bandwidth_mbit] [loss] [duration_s]
//! ```

use std::time::Duration;

use diaspora_twin::{calibrate, CalibrateConfig};

#[tokio::main]
async fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .map(|arg| {
            arg.parse()
                .expect("arguments are numbers: delay_ms bandwidth_mbit loss duration_s")
        })
        .collect();
    let defaults = CalibrateConfig::default();
    let config = CalibrateConfig {
        delay_ms: args.first().copied().unwrap_or(defaults.delay_ms),
        bandwidth_mbit: args.get(1).copied().unwrap_or(defaults.bandwidth_mbit),
        loss: args.get(2).copied().unwrap_or(defaults.loss),
        duration: args
            .get(3)
            .map_or(defaults.duration, |s| Duration::from_secs_f64(*s)),
        ..defaults
    };
    match calibrate(config).await {
        Ok(report) => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        ),
        Err(error) => {
            eprintln!("calibration failed: {error}");
            std::process::exit(1);
        }
    }
}
