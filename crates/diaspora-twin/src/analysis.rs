//! What happened in a twin run, from what the hosts recorded: the
//! producers' acknowledgements (`diaspora produce --acks FILE`) and the
//! consumers' items (`diaspora consume --json`). Pure: records in, figures
//! out, so it is tested without processes.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::RecordError;

/// One acknowledged item, as `diaspora produce --acks` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRecord {
    /// The item's id (metadata "id").
    pub id: u64,
    /// Partition it was stored in.
    #[serde(default)]
    pub partition: u32,
    /// Offset it was stored at.
    #[serde(default)]
    pub offset: u64,
    /// When the acknowledgement arrived, µs since the Unix epoch.
    #[serde(default)]
    pub acked_us: i64,
    /// For a QoS producer: the item was not sent by design — `"reduced"`
    /// (decimated or aggregated away) or `"shed"`. Such items are accounted,
    /// not lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fate: Option<Fate>,
}

/// What became of an item a QoS producer did not send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Reduced away (decimation, aggregation).
    Reduced,
    /// Shed by the policy.
    Shed,
}

/// One consumed item, as `diaspora consume --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumeRecord {
    /// The item's id (metadata "id"); items without one (substitutes) are not matched.
    pub id: Option<u64>,
    /// Partition read from.
    pub partition: u32,
    /// Offset read at (none for a substitute).
    #[serde(default)]
    pub offset: u64,
    /// `original`, `reduced:METHOD` or `reconstructed:METHOD` (QoS consumers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<String>,
    /// When the producer made the item, µs since the Unix epoch.
    pub timestamp_us: i64,
    /// Receive time minus `timestamp_us`.
    pub latency_us: i64,
}

impl ConsumeRecord {
    /// When the consumer received the item, µs since the Unix epoch.
    pub fn received_us(&self) -> i64 {
        self.timestamp_us + self.latency_us
    }
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Second {
    /// Seconds since the start of the run.
    pub t_s: u64,
    /// Items acknowledged to producers in this second.
    pub acked: u64,
    /// Items received by consumers in this second.
    pub consumed: u64,
    /// 99th percentile latency of the items received in this second, µs (0 if none).
    pub latency_us_p99: u64,
}

/// Figures of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Analysis {
    /// Items acknowledged.
    pub acked: u64,
    /// Item deliveries observed by consumers (duplicates included).
    pub consumed: u64,
    /// Acknowledged items never consumed.
    pub lost: u64,
    /// Deliveries beyond the first of an item.
    pub duplicated: u64,
    /// Latency percentiles over all first deliveries (and substitutes), µs.
    pub latency_us_p50: u64,
    /// 99th percentile.
    pub latency_us_p99: u64,
    /// Largest.
    pub latency_us_max: u64,
    /// Items QoS producers reduced away by design (not lost).
    pub reduced_away: u64,
    /// Items QoS producers shed by policy (not lost; counted).
    pub shed: u64,
    /// Deliveries by quality (`original`, `reduced:…`, `reconstructed:…`).
    pub quality_mix: BTreeMap<String, u64>,
    /// Per-second timeline from the run's start.
    pub timeline: Vec<Second>,
}

/// The `q` quantile of sorted values (nearest rank), 0 for none.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Matches acknowledgements with deliveries by item id.
///
/// ```
/// use diaspora_twin::analysis::{analyze, AckRecord, ConsumeRecord};
/// let acks = [AckRecord { id: 1, partition: 0, offset: 0, acked_us: 1_000_000, fate: None }];
/// let got = [ConsumeRecord { id: Some(1), partition: 0, offset: 0, quality: None, timestamp_us: 1_000_000, latency_us: 500 }];
/// let a = analyze(&acks, &got, 1_000_000);
/// assert_eq!((a.acked, a.consumed, a.lost, a.duplicated, a.latency_us_p99), (1, 1, 0, 0, 500));
/// ```
pub fn analyze(acks: &[AckRecord], consumed: &[ConsumeRecord], start_us: i64) -> Analysis {
    let mut deliveries: HashMap<u64, u32> = HashMap::with_capacity(consumed.len());
    let mut first_latencies = Vec::with_capacity(consumed.len());
    for c in consumed {
        match c.id {
            Some(id) => {
                let n = deliveries.entry(id).or_default();
                *n += 1;
                if *n == 1 {
                    first_latencies.push(c.latency_us.max(0) as u64);
                }
            }
            // A substitute: its latency counts (it is what the consumer got).
            None => first_latencies.push(c.latency_us.max(0) as u64),
        }
    }
    let fate = |f: Fate| acks.iter().filter(|a| a.fate == Some(f)).count() as u64;
    let (reduced_away, shed) = (fate(Fate::Reduced), fate(Fate::Shed));
    let acks: Vec<&AckRecord> = acks.iter().filter(|a| a.fate.is_none()).collect();
    let lost = acks
        .iter()
        .filter(|a| !deliveries.contains_key(&a.id))
        .count() as u64;
    let mut quality_mix = BTreeMap::new();
    for c in consumed {
        *quality_mix
            .entry(c.quality.clone().unwrap_or_else(|| "original".into()))
            .or_insert(0) += 1;
    }
    let duplicated = deliveries
        .values()
        .map(|n| u64::from(n.saturating_sub(1)))
        .sum();
    first_latencies.sort_unstable();

    let second = |us: i64| ((us - start_us).max(0) / 1_000_000) as usize;
    let last = acks
        .iter()
        .map(|a| second(a.acked_us))
        .chain(consumed.iter().map(|c| second(c.received_us())))
        .max();
    let mut timeline: Vec<Second> = (0..last.map_or(0, |l| l + 1))
        .map(|t| Second {
            t_s: t as u64,
            ..Second::default()
        })
        .collect();
    let mut per_second: Vec<Vec<u64>> = vec![Vec::new(); timeline.len()];
    for a in &acks {
        timeline[second(a.acked_us)].acked += 1;
    }
    for c in consumed {
        let s = second(c.received_us());
        timeline[s].consumed += 1;
        per_second[s].push(c.latency_us.max(0) as u64);
    }
    for (s, mut l) in timeline.iter_mut().zip(per_second) {
        l.sort_unstable();
        s.latency_us_p99 = quantile(&l, 0.99);
    }
    Analysis {
        acked: acks.len() as u64,
        consumed: consumed.len() as u64,
        lost,
        duplicated,
        latency_us_p50: quantile(&first_latencies, 0.5),
        latency_us_p99: quantile(&first_latencies, 0.99),
        latency_us_max: first_latencies.last().copied().unwrap_or(0),
        reduced_away,
        shed,
        quality_mix,
        timeline,
    }
}

/// Recovery time after a fault that ended at `fault_end_us`: how long until
/// Deliveries a consumer host made after it was resumed (SIGCONT) of items
/// another host of the same topic delivered too: what a consumer group's
/// fence must prevent. `hosts`: (host, topic, its deliveries); `resumes`:
/// (host, resume time µs since the epoch).
pub fn duplicated_after_resume(
    hosts: &[(String, String, Vec<ConsumeRecord>)],
    resumes: &[(String, i64)],
) -> u64 {
    let mut n = 0;
    for (host, at) in resumes {
        for (h, topic, records) in hosts.iter().filter(|(h, _, _)| h == host) {
            let others: std::collections::HashSet<u64> = hosts
                .iter()
                .filter(|(o, t, _)| o != h && t == topic)
                .flat_map(|(_, _, r)| r.iter().filter_map(|c| c.id))
                .collect();
            n += records
                .iter()
                .filter(|c| c.received_us() >= *at)
                .filter(|c| c.id.is_some_and(|id| others.contains(&id)))
                .count() as u64;
        }
    }
    n
}

/// every item made before the fault ended had been received, seconds (0 if
/// all had arrived by then). Items never received are not counted here; they
/// are `lost`.
pub fn recovery_s(consumed: &[ConsumeRecord], fault_end_us: i64) -> f64 {
    consumed
        .iter()
        .filter(|c| c.timestamp_us <= fault_end_us)
        .map(|c| c.received_us() - fault_end_us)
        .max()
        .map_or(0.0, |late| late.max(0) as f64 / 1e6)
}

/// Parses JSON lines, skipping blank ones; a malformed line is an error
/// naming its number.
pub fn parse_lines<T: serde::de::DeserializeOwned>(text: &str) -> Result<Vec<T>, RecordError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| RecordError {
                line: i + 1,
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ack(id: u64, t: i64) -> AckRecord {
        AckRecord {
            id,
            partition: 0,
            offset: id,
            acked_us: t,
            fate: None,
        }
    }

    fn got(id: u64, made: i64, lat: i64) -> ConsumeRecord {
        ConsumeRecord {
            id: Some(id),
            partition: 0,
            offset: id,
            quality: None,
            timestamp_us: made,
            latency_us: lat,
        }
    }

    #[test]
    fn duplicates_after_a_resume_count_only_the_resumed_hosts_late_deliveries() {
        let rec = |id: u64, at: i64| ConsumeRecord {
            id: Some(id),
            partition: 0,
            offset: id,
            quality: None,
            timestamp_us: at,
            latency_us: 0,
        };
        let hosts = vec![
            // a delivered 1 and 2 before its freeze, 3 (also b's) after it.
            (
                "a".to_string(),
                "t".to_string(),
                vec![rec(1, 10), rec(2, 20), rec(3, 100)],
            ),
            // b took over: re-delivered 2 (before the fence: not counted), and 3.
            (
                "b".to_string(),
                "t".to_string(),
                vec![rec(2, 60), rec(3, 70), rec(4, 80)],
            ),
        ];
        assert_eq!(duplicated_after_resume(&hosts, &[("a".into(), 90)]), 1);
        assert_eq!(duplicated_after_resume(&hosts, &[("a".into(), 200)]), 0);
        assert_eq!(duplicated_after_resume(&hosts, &[]), 0);
    }

    #[test]
    fn counts_lost_and_duplicates() {
        let acks = [ack(1, 0), ack(2, 0), ack(3, 0)];
        let seen = [got(1, 0, 10), got(1, 0, 20), got(3, 0, 30), got(4, 0, 40)];
        let a = analyze(&acks, &seen, 0);
        assert_eq!((a.acked, a.consumed, a.lost, a.duplicated), (3, 4, 1, 1));
        // First deliveries only: 10, 30, 40.
        assert_eq!((a.latency_us_p50, a.latency_us_max), (30, 40));
    }

    #[test]
    fn reduced_and_shed_items_are_accounted_not_lost() {
        let mut acks = vec![ack(1, 0), ack(2, 0)];
        acks.push(AckRecord {
            fate: Some(Fate::Reduced),
            ..ack(3, 0)
        });
        acks.push(AckRecord {
            fate: Some(Fate::Shed),
            ..ack(4, 0)
        });
        let mut sub = got(0, 0, 70);
        sub.id = None;
        sub.quality = Some("reconstructed:linear".into());
        let mut red = got(2, 0, 20);
        red.quality = Some("reduced:decimate:2".into());
        let a = analyze(&acks, &[got(1, 0, 10), red, sub], 0);
        assert_eq!((a.acked, a.lost, a.reduced_away, a.shed), (2, 0, 1, 1));
        assert_eq!(a.quality_mix["original"], 1);
        assert_eq!(a.quality_mix["reduced:decimate:2"], 1);
        assert_eq!(a.quality_mix["reconstructed:linear"], 1);
        assert_eq!(a.latency_us_max, 70, "substitutes count in latency");
        let parsed: Vec<AckRecord> = parse_lines(r#"{"id":9,"seq":3,"fate":"shed"}"#).unwrap();
        assert_eq!(parsed[0].fate, Some(Fate::Shed));
    }

    #[test]
    fn timeline_buckets_by_second() {
        let acks = [ack(1, 100), ack(2, 1_500_000), ack(3, 2_100_000)];
        let seen = [got(1, 0, 200_000), got(2, 1_400_000, 700_000)];
        let a = analyze(&acks, &seen, 0);
        assert_eq!(a.timeline.len(), 3);
        assert_eq!((a.timeline[0].acked, a.timeline[0].consumed), (1, 1));
        assert_eq!((a.timeline[1].acked, a.timeline[1].consumed), (1, 0));
        assert_eq!((a.timeline[2].acked, a.timeline[2].consumed), (1, 1));
        assert_eq!(a.timeline[2].latency_us_p99, 700_000);
    }

    #[test]
    fn recovery_measures_the_backlog_after_a_fault() {
        let seen = [
            got(1, 1_000_000, 100),
            got(2, 4_000_000, 3_000_000),
            got(3, 6_000_000, 100),
        ];
        // Fault ended at 5 s: item 2 (made at 4 s) arrived at 7 s → 2 s.
        assert_eq!(recovery_s(&seen, 5_000_000), 2.0);
        assert_eq!(recovery_s(&seen, 8_000_000), 0.0);
    }

    #[test]
    fn parses_the_cli_formats() {
        let acks: Vec<AckRecord> =
            parse_lines("{\"id\":3,\"partition\":1,\"offset\":9,\"acked_us\":5}\n\n").unwrap();
        assert_eq!(
            acks,
            vec![AckRecord {
                id: 3,
                partition: 1,
                offset: 9,
                acked_us: 5,
                fate: None,
            }]
        );
        let line = r#"{"topic":"t","partition":0,"offset":1,"size":4,"timestamp_us":10,"latency_us":2,"id":7,"crc32c":1}"#;
        let c: Vec<ConsumeRecord> = parse_lines(line).unwrap();
        assert_eq!(c[0].id, Some(7));
        assert_eq!(c[0].received_us(), 12);
        let e = parse_lines::<AckRecord>("{\"id\":1}\nnot json").unwrap_err();
        assert!(e.line == 1 || e.line == 2, "{e}");
        let e = e.to_string();
        assert!(e.starts_with("line 1:") || e.starts_with("line 2:"), "{e}");
    }

    proptest! {
        #[test]
        fn lost_plus_delivered_equals_acked(
            acked in proptest::collection::btree_set(0u64..500, 0..200),
            deliveries in proptest::collection::vec((0u64..600, 1u8..3), 0..300)) {
            let acks: Vec<_> = acked.iter().map(|&i| ack(i, 0)).collect();
            let seen: Vec<_> = deliveries
                .iter()
                .flat_map(|&(i, n)| std::iter::repeat_n(got(i, 0, 5), n as usize))
                .collect();
            let a = analyze(&acks, &seen, 0);
            let delivered_acked = acked
                .iter()
                .filter(|i| deliveries.iter().any(|(d, _)| d == *i))
                .count() as u64;
            prop_assert_eq!(a.lost + delivered_acked, a.acked);
            let distinct: std::collections::HashSet<u64> = deliveries.iter().map(|(i, _)| *i).collect();
            prop_assert_eq!(a.consumed, a.duplicated + distinct.len() as u64);
            prop_assert_eq!(a.timeline.iter().map(|s| s.consumed).sum::<u64>(), a.consumed);
        }
    }
}
