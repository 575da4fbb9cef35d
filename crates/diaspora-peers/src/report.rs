//! The report: per workload and system, medians with min–max over the
//! rounds, every round's numbers (JSON), and what differs between the
//! systems. Pure.

use std::fmt;

use serde::Serialize;

use crate::config::{format_size, PeersConfig, System};
use crate::workload::Latency;
use crate::Spread;

/// What one system is in this comparison.
#[derive(Debug, Clone, Serialize)]
pub struct SystemInfo {
    /// Which.
    pub system: System,
    /// Server and version.
    pub server: String,
    /// The server's program (`None`: in this process).
    pub program: Option<String>,
    /// Whether client ↔ server traffic is encrypted.
    pub tls: String,
    /// When the server makes data durable.
    pub durability: String,
    /// Processes involved.
    pub processes: String,
    /// Client library and how it is used.
    pub client: String,
}

/// One round of one workload on one system.
#[derive(Debug, Clone, Serialize)]
pub struct RoundSample {
    /// End to end at full speed: items received per second.
    pub items_per_s: f64,
    /// The same in payload MB (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// First send → last receive at full speed, s.
    pub elapsed_s: f64,
    /// The paced run's rate: half of `items_per_s`.
    pub paced_items_per_s: f64,
    /// The paced run's send → receive latency.
    pub latency: Latency,
    /// Most the paced producer fell behind its schedule, ms (large values
    /// mean the window, not the rate, set the pace).
    pub schedule_lag_ms_max: f64,
}

/// One workload on one system over all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct SystemResult {
    /// Which.
    pub system: System,
    /// End to end at full speed, items/s.
    pub items_per_s: Spread,
    /// End to end at full speed, MB/s.
    pub mb_per_s: Spread,
    /// Rate of the paced runs, items/s.
    pub paced_items_per_s: Spread,
    /// Paced: median latency, µs.
    pub latency_us_p50: Spread,
    /// Paced: 99th percentile, µs.
    pub latency_us_p99: Spread,
    /// Paced: 99.9th percentile, µs.
    pub latency_us_p999: Spread,
    /// Every round.
    pub rounds: Vec<RoundSample>,
}

/// One workload, every system.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    /// Payload bytes per item.
    pub size_bytes: usize,
    /// Items per run (after scaling).
    pub items: u64,
    /// Most unacknowledged items.
    pub window_items: usize,
    /// Most items asked for by one read.
    pub fetch_items: usize,
    /// Per system, in the order asked for.
    pub systems: Vec<SystemResult>,
}

/// Results of `diaspora bench peers`.
#[derive(Debug, Clone, Serialize)]
pub struct PeersReport {
    /// Rounds.
    pub rounds: u32,
    /// The scale item counts were multiplied by.
    pub scale: f64,
    /// Latency warm-up, ms.
    pub warmup_ms: u64,
    /// The workloads.
    pub workloads: Vec<WorkloadReport>,
    /// What differs between the systems.
    pub systems: Vec<SystemInfo>,
}

/// The report from `samples[workload][system]`, in `config`'s orders.
pub(crate) fn build(
    config: &PeersConfig,
    systems: Vec<SystemInfo>,
    samples: Vec<Vec<Vec<RoundSample>>>,
) -> PeersReport {
    let workloads = config
        .workloads
        .iter()
        .zip(samples)
        .map(|(w, per_system)| WorkloadReport {
            size_bytes: w.size_bytes,
            items: w.scaled_items(config.scale),
            window_items: config.window_items(w.size_bytes),
            fetch_items: config.fetch_items(w.size_bytes),
            systems: config
                .systems
                .iter()
                .zip(per_system)
                .map(|(system, rounds)| summarize(*system, rounds))
                .collect(),
        })
        .collect();
    PeersReport {
        rounds: config.rounds,
        scale: config.scale,
        warmup_ms: config.warmup.as_millis() as u64,
        workloads,
        systems,
    }
}

fn summarize(system: System, rounds: Vec<RoundSample>) -> SystemResult {
    let of = |f: fn(&RoundSample) -> f64| Spread::of(rounds.iter().map(f));
    SystemResult {
        system,
        items_per_s: of(|r| r.items_per_s),
        mb_per_s: of(|r| r.mb_per_s),
        paced_items_per_s: of(|r| r.paced_items_per_s),
        latency_us_p50: of(|r| r.latency.p50_us as f64),
        latency_us_p99: of(|r| r.latency.p99_us as f64),
        latency_us_p999: of(|r| r.latency.p999_us as f64),
        rounds,
    }
}

/// Rows of cells as a left-aligned table, two spaces between columns.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from("  ");
        for (c, cell) in row.iter().enumerate() {
            line += cell;
            if c + 1 < row.len() {
                line += &" ".repeat(widths[c] - cell.chars().count() + 2);
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

impl fmt::Display for PeersReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "one producer (acknowledged, bounded window) → one consumer from the start; \
             {} round(s), systems alternating; median (min–max){}",
            self.rounds,
            if self.scale == 1.0 {
                String::new()
            } else {
                format!("; scale {}", self.scale)
            }
        )?;
        writeln!(
            f,
            "latency: a second run paced at half that system's items/s, send → receive, \
             first {} ms left out",
            self.warmup_ms
        )?;
        for w in &self.workloads {
            writeln!(
                f,
                "\n{} × {} (window {} items, reads of ≤ {} items)",
                format_size(w.size_bytes),
                w.items,
                w.window_items,
                w.fetch_items
            )?;
            let mut rows = vec![vec![
                "system".to_string(),
                "items/s".into(),
                "MB/s".into(),
                "paced items/s".into(),
                "p50 µs".into(),
                "p99 µs".into(),
                "p999 µs".into(),
            ]];
            for s in &w.systems {
                rows.push(vec![
                    s.system.to_string(),
                    s.items_per_s.text(0),
                    s.mb_per_s.text(1),
                    format!("{:.0}", s.paced_items_per_s.median),
                    s.latency_us_p50.text(0),
                    s.latency_us_p99.text(0),
                    s.latency_us_p999.text(0),
                ]);
            }
            f.write_str(&table(&rows))?;
        }
        writeln!(f, "\nwhat differs")?;
        let mut rows = vec![vec![
            "system".to_string(),
            "server".into(),
            "TLS".into(),
            "durability".into(),
            "processes".into(),
            "client".into(),
        ]];
        for s in &self.systems {
            rows.push(vec![
                s.system.to_string(),
                s.server.clone(),
                s.tls.clone(),
                s.durability.clone(),
                s.processes.clone(),
                s.client.clone(),
            ]);
        }
        f.write_str(table(&rows).trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Workload;

    fn sample(items_per_s: f64, p50: u64) -> RoundSample {
        RoundSample {
            items_per_s,
            mb_per_s: items_per_s * 128.0 / 1e6,
            elapsed_s: 1.0,
            paced_items_per_s: items_per_s / 2.0,
            latency: Latency {
                p50_us: p50,
                p99_us: p50 * 2,
                p999_us: p50 * 3,
                samples: 10,
            },
            schedule_lag_ms_max: 0.0,
        }
    }

    fn info(system: System) -> SystemInfo {
        SystemInfo {
            system,
            server: format!("{system}-server"),
            program: None,
            tls: "on".into(),
            durability: "fsync".into(),
            processes: "2".into(),
            client: "lib".into(),
        }
    }

    #[test]
    fn the_report_has_medians_per_workload_and_system() {
        let config = PeersConfig {
            systems: vec![System::Redis, System::Diaspora],
            workloads: vec![Workload {
                size_bytes: 128,
                items: 1000,
            }],
            scale: 0.5,
            rounds: 3,
            ..PeersConfig::default()
        };
        let samples = vec![vec![
            vec![sample(100.0, 10), sample(300.0, 30), sample(200.0, 20)],
            vec![sample(1000.0, 5), sample(900.0, 6), sample(1100.0, 4)],
        ]];
        let r = build(
            &config,
            vec![info(System::Redis), info(System::Diaspora)],
            samples,
        );
        let w = &r.workloads[0];
        assert_eq!(w.items, 500);
        assert_eq!(w.systems[0].system, System::Redis);
        assert_eq!(
            w.systems[0].items_per_s,
            Spread {
                median: 200.0,
                min: 100.0,
                max: 300.0
            }
        );
        assert_eq!(w.systems[1].latency_us_p50.median, 5.0);
        assert_eq!(w.systems[1].latency_us_p999.max, 18.0);
        assert_eq!(w.systems[1].rounds.len(), 3);

        let text = r.to_string();
        assert!(text.contains("128 B × 500 (window 5000 items"), "{text}");
        assert!(text.contains("200 (100–300)"), "{text}");
        assert!(text.contains("what differs"), "{text}");
        assert!(text.contains("redis-server"), "{text}");
        assert!(text.contains("scale 0.5"), "{text}");
        // The JSON has every round.
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["workloads"][0]["systems"][1]["rounds"][2]["items_per_s"],
            1100.0
        );
        assert_eq!(json["systems"][0]["system"], "redis");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&[
            vec!["a".into(), "bb".into(), "c".into()],
            vec!["ddd".into(), "e".into(), "f".into()],
        ]);
        assert_eq!(t, "  a    bb  c\n  ddd  e   f\n");
    }
}
