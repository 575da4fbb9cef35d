//! Property and exhaustive tests of the pure link model and schedules.

use std::time::Duration;

use diaspora_twin::{
    Change, DropReason, GilbertElliott, LinkModel, LinkParams, ParamsError, Schedule,
    ScheduledChange, ScheduledLink, Verdict,
};
use proptest::prelude::*;

/// Arbitrary valid parameters (bandwidth capped at 10 Gbit/s so the
/// nanosecond rounding of serialization times stays under one byte).
fn params_strategy() -> impl Strategy<Value = LinkParams> {
    (
        0.0..200.0f64,
        prop_oneof![Just(0.0), 0.0..50.0f64],
        prop_oneof![Just(None), (10_000u64..10_000_000_000).prop_map(Some)],
        prop_oneof![Just(0.0), 0.0..0.5f64],
        prop_oneof![
            Just(None),
            (0.0..1.0f64, 0.0..1.0f64, 0.0..0.2f64, 0.0..1.0f64).prop_map(|(gb, bg, lg, lb)| Some(
                GilbertElliott {
                    p_good_to_bad: gb,
                    p_bad_to_good: bg,
                    loss_good: lg,
                    loss_bad: lb,
                }
            ))
        ],
        1_500usize..2_000_000,
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(
                delay_ms,
                jitter_ms,
                bandwidth_bps,
                loss,
                gilbert_elliott,
                queue_bytes_max,
                blackhole,
            )| {
                LinkParams {
                    delay_ms,
                    jitter_ms,
                    bandwidth_bps,
                    loss,
                    gilbert_elliott,
                    queue_bytes_max,
                    blackhole,
                }
            },
        )
}

/// Arbitrary packet arrivals: (gap since previous in ns, size in bytes).
fn arrivals_strategy() -> impl Strategy<Value = Vec<(u64, usize)>> {
    prop::collection::vec(
        (prop_oneof![Just(0u64), 0u64..2_000_000], 1usize..1_500),
        1..400,
    )
}

fn run(
    params: &LinkParams,
    seed: u64,
    arrivals: &[(u64, usize)],
) -> Vec<(Duration, usize, Verdict)> {
    let mut link = LinkModel::new(params.clone(), seed).unwrap();
    let mut now = Duration::ZERO;
    arrivals
        .iter()
        .map(|&(gap_ns, size)| {
            now += Duration::from_nanos(gap_ns);
            (now, size, link.on_packet(now, size))
        })
        .collect()
}

proptest! {
    #[test]
    fn same_seed_same_verdicts(params in params_strategy(), seed: u64, arrivals in arrivals_strategy()) {
        prop_assert_eq!(run(&params, seed, &arrivals), run(&params, seed, &arrivals));
    }

    #[test]
    fn deliveries_are_monotonic_and_never_early(params in params_strategy(), seed: u64, arrivals in arrivals_strategy()) {
        let min_delay = Duration::from_secs_f64((params.delay_ms - params.jitter_ms).max(0.0) / 1e3);
        let mut last = Duration::ZERO;
        for (now, _, verdict) in run(&params, seed, &arrivals) {
            if let Verdict::Deliver { at } = verdict {
                prop_assert!(at >= last, "delivery went back from {:?} to {:?}", last, at);
                // One nanosecond of slack for the f64 → ns rounding.
                prop_assert!(at + Duration::from_nanos(1) >= now + min_delay);
                last = at;
            }
        }
    }

    #[test]
    fn queue_never_exceeds_its_bound(params in params_strategy(), seed: u64, arrivals in arrivals_strategy()) {
        let mut link = LinkModel::new(params.clone(), seed).unwrap();
        let mut now = Duration::ZERO;
        for (gap_ns, size) in arrivals {
            now += Duration::from_nanos(gap_ns);
            let before = link.queue_bytes(now);
            let verdict = link.on_packet(now, size);
            prop_assert!(link.queue_bytes(now) <= params.queue_bytes_max);
            if verdict == Verdict::Drop(DropReason::QueueFull) {
                // Drop-tail only when the packet really would not fit
                // (2 bytes of slack for rounding).
                prop_assert!(before + size + 2 > params.queue_bytes_max, "dropped {} with {} queued", size, before);
                prop_assert_eq!(link.queue_bytes(now), before);
            }
        }
    }

    #[test]
    fn delivered_bytes_never_exceed_bandwidth(
        bandwidth_bps in 10_000u64..10_000_000_000,
        delay_ms in 0.0..100.0f64,
        loss in 0.0..0.3f64,
        queue_bytes_max in 1_500usize..1_000_000,
        seed: u64,
        arrivals in arrivals_strategy(),
    ) {
        let params = LinkParams { queue_bytes_max, ..LinkParams::default() }
            .with_delay_ms(delay_ms)
            .with_bandwidth_bps(bandwidth_bps)
            .with_loss(loss);
        let delay = Duration::from_nanos((delay_ms * 1e6).round() as u64);
        let first = Duration::from_nanos(arrivals[0].0);
        let max_size = arrivals.iter().map(|a| a.1).max().unwrap_or(0) as f64;
        let mut delivered_bytes = 0f64;
        for (_, size, verdict) in run(&params, seed, &arrivals) {
            if let Verdict::Deliver { at } = verdict {
                delivered_bytes += size as f64;
                let elapsed = (at - delay).saturating_sub(first).as_secs_f64();
                let bound = bandwidth_bps as f64 * elapsed / 8.0 + max_size;
                prop_assert!(delivered_bytes <= bound + 1e-6, "{} bytes by {:?}, bound {}", delivered_bytes, at, bound);
            }
        }
    }

    #[test]
    fn blackhole_drops_everything(params in params_strategy(), seed: u64, arrivals in arrivals_strategy()) {
        let params = params.with_blackhole(true);
        for (_, _, verdict) in run(&params, seed, &arrivals) {
            prop_assert_eq!(verdict, Verdict::Drop(DropReason::Blackhole));
        }
    }

    #[test]
    fn schedule_params_are_constant_between_change_points(
        changes in prop::collection::vec(change_strategy(), 0..6),
        probes in prop::collection::vec(0u64..60_000, 1..20),
    ) {
        let schedule = Schedule::new(changes).unwrap();
        let base = LinkParams::default().with_bandwidth_bps(50_000_000);
        for probe_ms in probes {
            let t = Duration::from_millis(probe_ms);
            let here = schedule.params_at(&base, t);
            prop_assert!(here.validate().is_ok());
            match schedule.next_change_after(t) {
                Some(next) => {
                    prop_assert!(next > t);
                    let just_before = next - Duration::from_nanos(1);
                    prop_assert_eq!(&schedule.params_at(&base, just_before), &here);
                }
                None => prop_assert_eq!(schedule.params_at(&base, Duration::from_secs(1_000_000)), here),
            }
        }
    }
}

fn change_strategy() -> impl Strategy<Value = ScheduledChange> {
    let change = prop_oneof![
        (1u64..20_000).prop_map(|ms| Change::Outage {
            duration: Duration::from_millis(ms)
        }),
        prop_oneof![Just(None), (1_000u64..1_000_000_000).prop_map(Some)]
            .prop_map(|bps| Change::Bandwidth { bps }),
        (
            1_000u64..1_000_000_000,
            1_000u64..1_000_000_000,
            0u64..20_000,
            1u32..20
        )
            .prop_map(|(from_bps, to_bps, over_ms, steps)| {
                Change::Ramp {
                    from_bps,
                    to_bps,
                    over: Duration::from_millis(over_ms),
                    steps,
                }
            }),
        (0.0..100.0f64).prop_map(|delay_ms| Change::Params {
            params: LinkParams::default().with_delay_ms(delay_ms)
        }),
    ];
    (0u64..40_000, change).prop_map(|(at_ms, change)| ScheduledChange {
        at: Duration::from_millis(at_ms),
        change,
    })
}

/// Independent loss over 100 000 packets lands within 4.5 standard
/// deviations of the configured rate (deterministic seeds: no flakes).
#[test]
fn random_loss_rate_converges() {
    const PACKETS: u64 = 100_000;
    for (seed, loss) in [(1u64, 0.001), (2, 0.01), (3, 0.05), (4, 0.3)] {
        let mut link = LinkModel::new(LinkParams::default().with_loss(loss), seed).unwrap();
        let lost = (0..PACKETS)
            .filter(|i| {
                link.on_packet(Duration::from_micros(*i), 1200) == Verdict::Drop(DropReason::Loss)
            })
            .count() as f64;
        let measured = lost / PACKETS as f64;
        let sigma = (loss * (1.0 - loss) / PACKETS as f64).sqrt();
        assert!(
            (measured - loss).abs() <= 4.5 * sigma,
            "loss {loss}: measured {measured}"
        );
    }
}

/// Gilbert–Elliott loss converges to π_good·loss_good + π_bad·loss_bad, and
/// losses come in bursts (a loss is much more likely right after a loss).
#[test]
fn gilbert_elliott_matches_stationary_theory() {
    const PACKETS: usize = 1_000_000;
    let ge = GilbertElliott {
        p_good_to_bad: 0.01,
        p_bad_to_good: 0.2,
        loss_good: 0.001,
        loss_bad: 0.5,
    };
    let pi_bad = 0.01 / (0.01 + 0.2);
    let theory = (1.0 - pi_bad) * 0.001 + pi_bad * 0.5;
    assert!((ge.stationary_loss() - theory).abs() < 1e-12);

    let params = LinkParams {
        gilbert_elliott: Some(ge),
        ..LinkParams::default()
    };
    let mut link = LinkModel::new(params, 99).unwrap();
    let lost: Vec<bool> = (0..PACKETS)
        .map(
            |i| match link.on_packet(Duration::from_micros(i as u64), 1200) {
                Verdict::Drop(DropReason::BurstLoss) => true,
                Verdict::Deliver { .. } => false,
                other => panic!("unexpected {other:?}"),
            },
        )
        .collect();
    let measured = lost.iter().filter(|l| **l).count() as f64 / PACKETS as f64;
    assert!(
        (measured - theory).abs() / theory < 0.05,
        "measured {measured}, theory {theory}"
    );

    let after_loss = lost.windows(2).filter(|w| w[0]).count() as f64;
    let loss_after_loss = lost.windows(2).filter(|w| w[0] && w[1]).count() as f64 / after_loss;
    assert!(
        loss_after_loss > 5.0 * theory,
        "P(loss | loss) = {loss_after_loss} is not bursty"
    );
}

#[test]
fn random_and_burst_loss_combine_independently() {
    const PACKETS: usize = 400_000;
    let ge = GilbertElliott {
        p_good_to_bad: 0.05,
        p_bad_to_good: 0.05,
        loss_good: 0.0,
        loss_bad: 0.1,
    };
    let params = LinkParams {
        gilbert_elliott: Some(ge),
        ..LinkParams::default().with_loss(0.02)
    };
    let expected = params.expected_loss();
    assert!((expected - (1.0 - 0.98 * 0.95)).abs() < 1e-12);
    let mut link = LinkModel::new(params, 5).unwrap();
    let lost = (0..PACKETS)
        .filter(|i| {
            link.on_packet(Duration::from_micros(*i as u64), 100)
                .delivery_at()
                .is_none()
        })
        .count() as f64;
    let measured = lost / PACKETS as f64;
    assert!(
        (measured - expected).abs() / expected < 0.05,
        "measured {measured}, expected {expected}"
    );
}

#[test]
fn back_to_back_packets_serialize_at_the_link_rate() {
    // 1000-byte packets at 8 Mbit/s: 1 ms each.
    let params = LinkParams::default()
        .with_delay_ms(10.0)
        .with_bandwidth_bps(8_000_000)
        .with_queue_bytes_max(100_000);
    let mut link = LinkModel::new(params, 0).unwrap();
    for k in 1..=100u64 {
        assert_eq!(
            link.on_packet(Duration::ZERO, 1000),
            Verdict::Deliver {
                at: Duration::from_millis(10 + k)
            }
        );
    }
    // The queue is full: 100 000 bytes not yet serialized.
    assert_eq!(link.queue_bytes(Duration::ZERO), 100_000);
    assert_eq!(
        link.on_packet(Duration::ZERO, 1),
        Verdict::Drop(DropReason::QueueFull)
    );
    // After 50 ms half has drained and 50 packets fit again.
    let now = Duration::from_millis(50);
    assert_eq!(link.queue_bytes(now), 50_000);
    assert_eq!(
        link.on_packet(now, 1000),
        Verdict::Deliver {
            at: Duration::from_millis(111)
        }
    );
}

#[test]
fn idle_link_starts_serializing_at_arrival() {
    let params = LinkParams::default().with_bandwidth_bps(8_000_000);
    let mut link = LinkModel::new(params, 0).unwrap();
    link.on_packet(Duration::ZERO, 1000);
    // Arriving long after the link went idle: no leftover busy time.
    assert_eq!(
        link.on_packet(Duration::from_secs(5), 1000),
        Verdict::Deliver {
            at: Duration::from_secs(5) + Duration::from_millis(1)
        }
    );
}

#[test]
fn jitter_stays_within_bounds_and_keeps_order() {
    let params = LinkParams::default().with_delay_ms(1.0).with_jitter_ms(5.0);
    let mut link = LinkModel::new(params, 3).unwrap();
    let mut last = Duration::ZERO;
    let mut raised = 0;
    for i in 0..10_000u64 {
        let now = Duration::from_millis(10 * i);
        let at = link.on_packet(now, 100).delivery_at().unwrap();
        assert!(
            at >= now && at <= now + Duration::from_millis(6),
            "{at:?} for {now:?}"
        );
        assert!(at >= last);
        if at > now + Duration::from_millis(1) {
            raised += 1;
        }
        last = at;
    }
    // Uniform on [-4, 6] ms clamped at 0: about half the packets are late.
    assert!((4_000..6_000).contains(&raised), "{raised}");
}

#[test]
fn set_params_keeps_the_queue_and_converts_it_to_the_new_rate() {
    let mut link = LinkModel::new(LinkParams::default().with_bandwidth_bps(8_000_000), 0).unwrap();
    for _ in 0..10 {
        link.on_packet(Duration::ZERO, 1000); // 10 ms of work
    }
    let now = Duration::from_millis(4);
    assert_eq!(link.queue_bytes(now), 6_000);
    link.set_params(now, LinkParams::default().with_bandwidth_bps(4_000_000))
        .unwrap();
    assert_eq!(link.queue_bytes(now), 6_000);
    // 6000 bytes at 4 Mbit/s: 12 ms, then 1000 more bytes: 2 ms.
    assert_eq!(
        link.on_packet(now, 1000),
        Verdict::Deliver {
            at: Duration::from_millis(18)
        }
    );
    // To unlimited: the queue empties at once; order is still kept.
    link.set_params(now, LinkParams::default()).unwrap();
    assert_eq!(link.queue_bytes(now), 0);
    assert_eq!(
        link.on_packet(now, 1000),
        Verdict::Deliver {
            at: Duration::from_millis(18)
        }
    );
    // Invalid parameters are refused and change nothing.
    assert!(link
        .set_params(now, LinkParams::default().with_delay_ms(-1.0))
        .is_err());
    assert_eq!(link.params(), &LinkParams::default());
}

#[test]
fn ramp_steps_land_exactly() {
    let schedule = Schedule::new(vec![ScheduledChange {
        at: Duration::from_secs(10),
        change: Change::Ramp {
            from_bps: 100_000_000,
            to_bps: 20_000_000,
            over: Duration::from_secs(10),
            steps: 4,
        },
    }])
    .unwrap();
    let base = LinkParams::default();
    let bps = |ms: u64| {
        schedule
            .params_at(&base, Duration::from_millis(ms))
            .bandwidth_bps
    };
    assert_eq!(bps(9_999), None);
    assert_eq!(bps(10_000), Some(100_000_000));
    assert_eq!(bps(12_499), Some(100_000_000));
    assert_eq!(bps(12_500), Some(80_000_000));
    assert_eq!(bps(15_000), Some(60_000_000));
    assert_eq!(bps(17_500), Some(40_000_000));
    assert_eq!(bps(19_999), Some(40_000_000));
    assert_eq!(bps(20_000), Some(20_000_000));
    assert_eq!(bps(1_000_000), Some(20_000_000));
    let times: Vec<u64> = schedule
        .timeline(&base)
        .iter()
        .map(|(t, _)| t.as_millis() as u64)
        .collect();
    assert_eq!(times, [0, 10_000, 12_500, 15_000, 17_500, 20_000]);
}

#[test]
fn zero_length_ramp_jumps() {
    let schedule = Schedule::new(vec![ScheduledChange {
        at: Duration::from_secs(1),
        change: Change::Ramp {
            from_bps: 5_000_000,
            to_bps: 1_000_000,
            over: Duration::ZERO,
            steps: 3,
        },
    }])
    .unwrap();
    let base = LinkParams::default();
    assert_eq!(
        schedule
            .params_at(&base, Duration::from_secs(1))
            .bandwidth_bps,
        Some(1_000_000)
    );
    assert_eq!(schedule.next_change_after(Duration::from_secs(1)), None);
}

#[test]
fn outage_overlays_and_ends_exactly() {
    let schedule = Schedule::new(vec![
        ScheduledChange {
            at: Duration::from_secs(2),
            change: Change::Outage {
                duration: Duration::from_secs(3),
            },
        },
        ScheduledChange {
            at: Duration::from_secs(3),
            change: Change::Params {
                params: LinkParams::default().with_delay_ms(50.0),
            },
        },
        ScheduledChange {
            at: Duration::from_secs(4),
            change: Change::Bandwidth {
                bps: Some(1_000_000),
            },
        },
    ])
    .unwrap();
    let base = LinkParams::default().with_delay_ms(10.0);
    let at = |ms: u64| schedule.params_at(&base, Duration::from_millis(ms));
    assert_eq!(at(1_999), base);
    assert!(at(2_000).blackhole);
    // Replacing the parameters during an outage does not end it.
    assert!(at(3_500).blackhole && at(3_500).delay_ms == 50.0);
    assert!(at(4_999).blackhole);
    let after = at(5_000);
    assert!(!after.blackhole);
    assert_eq!(
        after,
        LinkParams::default()
            .with_delay_ms(50.0)
            .with_bandwidth_bps(1_000_000)
    );
}

#[test]
fn congestion_episode_falls_holds_and_recovers() {
    let schedule = Schedule::congestion(
        Duration::from_secs(5),
        100_000_000,
        0.2,
        Duration::from_secs(10),
        Duration::from_secs(60),
        10,
    )
    .unwrap();
    let base = LinkParams::default().with_bandwidth_bps(100_000_000);
    let bps = |s: u64| {
        schedule
            .params_at(&base, Duration::from_secs(s))
            .bandwidth_bps
            .unwrap()
    };
    assert_eq!(bps(5), 100_000_000);
    assert_eq!(bps(6), 92_000_000);
    assert_eq!(bps(15), 20_000_000);
    assert_eq!(bps(74), 20_000_000);
    assert_eq!(bps(75), 20_000_000);
    assert_eq!(bps(80), 60_000_000);
    assert_eq!(bps(85), 100_000_000);
    assert_eq!(schedule.timeline(&base).len(), 1 + 10 + 10);
}

#[test]
fn scheduled_link_applies_changes_at_their_own_time() {
    // Bandwidth halves at t = 5 ms; the first packet arrives later, at 8 ms,
    // while 10 ms of work queued at t = 0 still drains. The change must be
    // applied at 5 ms, not at 8 ms.
    let schedule = Schedule::new(vec![ScheduledChange {
        at: Duration::from_millis(5),
        change: Change::Bandwidth {
            bps: Some(4_000_000),
        },
    }])
    .unwrap();
    let base = LinkParams::default().with_bandwidth_bps(8_000_000);
    let mut scheduled = ScheduledLink::new(base.clone(), schedule, 0).unwrap();
    let mut manual = LinkModel::new(base, 0).unwrap();
    for _ in 0..10 {
        assert_eq!(
            scheduled.on_packet(Duration::ZERO, 1000),
            manual.on_packet(Duration::ZERO, 1000)
        );
    }
    manual
        .set_params(
            Duration::from_millis(5),
            LinkParams::default().with_bandwidth_bps(4_000_000),
        )
        .unwrap();
    let now = Duration::from_millis(8);
    assert_eq!(scheduled.on_packet(now, 1000), manual.on_packet(now, 1000));
    // 5 ms of work left at 5 ms = 5000 bytes → 10 ms at 4 Mbit/s → done at 15 ms, +2 ms.
    assert_eq!(manual.queue_bytes(now), 5_000 - 1_500 + 1_000);
    assert_eq!(scheduled.params().bandwidth_bps, Some(4_000_000));
}

#[test]
fn scheduled_link_base_change_keeps_schedule_overlay() {
    let schedule = Schedule::new(vec![ScheduledChange {
        at: Duration::ZERO,
        change: Change::Outage {
            duration: Duration::from_secs(1),
        },
    }])
    .unwrap();
    let mut link = ScheduledLink::new(LinkParams::default(), schedule, 0).unwrap();
    link.set_base(
        Duration::from_millis(500),
        LinkParams::default().with_delay_ms(5.0),
    )
    .unwrap();
    assert_eq!(
        link.on_packet(Duration::from_millis(600), 10),
        Verdict::Drop(DropReason::Blackhole)
    );
    assert_eq!(
        link.on_packet(Duration::from_secs(1), 10),
        Verdict::Deliver {
            at: Duration::from_millis(1_005)
        }
    );
    assert_eq!(link.base().delay_ms, 5.0);
}

#[test]
fn params_parse_from_toml_with_units_and_errors_name_the_field() {
    let params: LinkParams = toml::from_str(
        r#"
        delay_ms = 20
        jitter_ms = 0.5
        bandwidth_bps = 100000000
        loss = 0.001
        queue_bytes_max = 65536
        [gilbert_elliott]
        p_good_to_bad = 0.01
        p_bad_to_good = 0.3
        loss_bad = 0.4
        "#,
    )
    .unwrap();
    assert_eq!(params.delay_ms, 20.0);
    assert_eq!(params.bandwidth_bps, Some(100_000_000));
    assert_eq!(params.gilbert_elliott.unwrap().loss_good, 0.0);
    // Round trip through TOML and JSON.
    let text = toml::to_string(&params).unwrap();
    assert_eq!(toml::from_str::<LinkParams>(&text).unwrap(), params);
    let json = serde_json::to_string(&params).unwrap();
    assert_eq!(serde_json::from_str::<LinkParams>(&json).unwrap(), params);
    // Empty file: a perfect link.
    assert_eq!(
        toml::from_str::<LinkParams>("").unwrap(),
        LinkParams::default()
    );

    let err = |text: &str| toml::from_str::<LinkParams>(text).unwrap_err().to_string();
    assert!(err("loss = 2").contains("`loss` = 2 is out of range: allowed 0.0..=1.0"));
    assert!(err("queue_bytes_max = 10")
        .contains("`queue_bytes_max` = 10 is out of range: allowed 1500..=1073741824"));
    assert!(err("bandwidth_mbit = 0").contains("`bandwidth_mbit` = 0 is out of range"));
    assert!(err("bandwidth_mbit = 1\nbandwidth_bps = 5").contains("give one"));
    assert!(err("delay = 5").contains("unknown field `delay`"));
    assert!(
        err("[gilbert_elliott]\np_good_to_bad = 0.1\np_bad_to_good = 0.1\nloss_bad = 7")
            .contains("`gilbert_elliott.loss_bad` = 7")
    );
}

#[test]
fn schedule_parses_from_toml() {
    #[derive(Debug, serde::Deserialize)]
    struct Scenario {
        base: LinkParams,
        schedule: Schedule,
    }
    let scenario: Scenario = toml::from_str(
        r#"
        base = { delay_ms = 10, bandwidth_mbit = 100 }

        [[schedule]]
        at_ms = 30000
        kind = "ramp"
        from_bps = 100000000
        to_bps = 20000000
        over_ms = 10000
        steps = 10

        [[schedule]]
        at_ms = 5000
        kind = "outage"
        duration_ms = 1500.5

        [[schedule]]
        at_ms = 100000
        kind = "params"
        params = { delay_ms = 50 }

        [[schedule]]
        at_ms = 110000
        kind = "bandwidth"
        "#,
    )
    .unwrap();
    let changes = scenario.schedule.changes();
    assert_eq!(changes.len(), 4);
    // Sorted by time.
    assert_eq!(
        changes[0].change,
        Change::Outage {
            duration: Duration::from_micros(1_500_500)
        }
    );
    assert_eq!(changes[3].change, Change::Bandwidth { bps: None });
    let at = |s: u64| {
        scenario
            .schedule
            .params_at(&scenario.base, Duration::from_secs(s))
    };
    assert!(at(6).blackhole);
    assert_eq!(at(40).bandwidth_bps, Some(20_000_000));
    assert_eq!(at(105).delay_ms, 50.0);
    assert_eq!(at(105).bandwidth_bps, None);
    // Round trip.
    let json = serde_json::to_string(&scenario.schedule).unwrap();
    assert_eq!(
        serde_json::from_str::<Schedule>(&json).unwrap(),
        scenario.schedule
    );

    let err = toml::from_str::<Scenario>(
        "base = {}\n[[schedule]]\nat_ms = 1\nkind = \"ramp\"\nfrom_bps = 1\nto_bps = 2000\nover_ms = 1\nsteps = 1",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`schedule[0].ramp.from_bps` = 1 is out of range"),
        "{err}"
    );
    let err = toml::from_str::<Scenario>(
        "base = {}\n[[schedule]]\nat_ms = -1\nkind = \"outage\"\nduration_ms = 1",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("duration -1 ms is out of range"), "{err}");
}

#[test]
fn validation_errors_name_field_value_and_range() {
    let cases: Vec<(LinkParams, &str)> = vec![
        (
            LinkParams::default().with_delay_ms(f64::NAN),
            "`delay_ms` = NaN is out of range: allowed 0.0..=60000.0",
        ),
        (
            LinkParams::default().with_jitter_ms(-1.0),
            "`jitter_ms` = -1 is out of range",
        ),
        (
            LinkParams::default().with_bandwidth_bps(999),
            "`bandwidth_bps` = 999 is out of range: allowed 1000..=",
        ),
        (
            LinkParams::default().with_queue_bytes_max(1 << 31),
            "`queue_bytes_max` = 2147483648 is out of range",
        ),
    ];
    for (params, expected) in cases {
        let err = params.validate().unwrap_err();
        assert!(matches!(err, ParamsError::OutOfRange { .. }));
        assert!(err.to_string().contains(expected), "{err}");
    }
    let err = Schedule::new(vec![ScheduledChange {
        at: Duration::ZERO,
        change: Change::Params {
            params: LinkParams::default().with_loss(3.0),
        },
    }])
    .unwrap_err();
    assert!(
        err.to_string().contains("`schedule[0].params.loss` = 3"),
        "{err}"
    );
}
