//! Tests of NAB scoring: hand-computed cases, values from NAB's own code,
//! properties, and the real data subset when it is present.

use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::PredictError;

const MINUTE_US: i64 = 60_000_000;

/// `rows` one-minute rows with values 0.
fn minutes(name: &str, rows: usize) -> Series {
    Series {
        name: name.to_string(),
        time_us: (0..rows as i64).map(|row| row * MINUTE_US).collect(),
        values: vec![0.0; rows],
    }
}

/// The window over rows `first..=last` of `series`.
fn window(series: &Series, first: usize, last: usize) -> (i64, i64) {
    (series.time_us[first], series.time_us[last])
}

/// Anomaly scores of 1 at `rows`, 0 elsewhere.
fn detections(len: usize, rows: &[usize]) -> Vec<f64> {
    let mut scores = vec![0.0; len];
    for &row in rows {
        scores[row] = 1.0;
    }
    scores
}

fn assert_close(got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-12 * want.abs().max(1.0),
        "got {got:?}, want {want:?}"
    );
}

/// The hand case: 100 rows (probation 15), one window over rows 40..=59
/// (width 20), standard profile, threshold 0.5.
fn hand(rows: &[usize]) -> SeriesScore {
    let series = minutes("hand", 100);
    let windows = [window(&series, 40, 59)];
    score_series(
        &series,
        &windows,
        &detections(100, rows),
        0.5,
        &Profile::STANDARD,
    )
    .unwrap()
}

/// `2·sigmoid(−5x) − 1` for the hand case, computed here independently.
fn expected_sigmoid(x: f64) -> f64 {
    2.0 / (1.0 + (5.0 * x).exp()) - 1.0
}

#[test]
fn scaled_sigmoid_matches_nab_docstring() {
    // nab/sweeper.py scaledSigmoid docstring: -1 → 0.98661, -0.5 → 0.84828,
    // 0 → 0, 1 → -0.98661, beyond 3 → -1.
    assert_close(scaled_sigmoid(-1.0), 0.9866142981514305);
    assert!((scaled_sigmoid(-0.5) - 0.84828).abs() < 1e-5);
    assert_eq!(scaled_sigmoid(0.0), 0.0);
    assert_close(scaled_sigmoid(1.0), -0.9866142981514303);
    assert_close(scaled_sigmoid(3.0), expected_sigmoid(3.0));
    assert_eq!(scaled_sigmoid(3.000001), -1.0);
    assert_eq!(scaled_sigmoid(f64::INFINITY), -1.0);
}

#[test]
fn probation_is_fifteen_percent_capped_at_750_rows() {
    assert_eq!(probation_rows(0), 0);
    assert_eq!(probation_rows(6), 0);
    assert_eq!(probation_rows(7), 1);
    assert_eq!(probation_rows(100), 15);
    assert_eq!(probation_rows(1243), 186);
    assert_eq!(probation_rows(5000), 750);
    assert_eq!(probation_rows(1_000_000), 750);
}

#[test]
fn profiles_are_nabs() {
    assert_eq!(Profile::by_name("standard"), Some(Profile::STANDARD));
    assert_eq!(
        Profile::STANDARD,
        Profile {
            tp: 1.0,
            fp: 0.11,
            fn_: 1.0,
            tn: 1.0
        }
    );
    assert_eq!(Profile::by_name("reward_low_FP_rate").unwrap().fp, 0.22);
    assert_eq!(
        Profile::by_name("reward_low_FN_rate"),
        Some(Profile {
            tp: 1.0,
            fp: 0.11,
            fn_: 2.0,
            tn: 1.0
        })
    );
    assert_eq!(Profile::by_name("Standard"), None);
}

#[test]
fn detection_at_window_start_earns_exactly_tp() {
    let score = hand(&[40]);
    assert_eq!(score.raw, 1.0);
    // Rows are counted: 85 scorable, 20 in the window.
    assert_eq!((score.tp, score.fp, score.fn_, score.tn), (1, 0, 19, 65));
    assert_eq!((score.null_raw, score.perfect_raw), (-1.0, 1.0));
    assert_eq!(score.normalised, Some(100.0));
}

#[test]
fn later_detections_in_a_window_earn_less() {
    let max_tp = expected_sigmoid(-1.0);
    // Middle: x = -(59 - 50 + 1) / 20 = -0.5. End: x = -1 / 20.
    let middle = hand(&[50]).raw;
    let end = hand(&[59]).raw;
    assert_close(middle, expected_sigmoid(-0.5) / max_tp);
    assert_close(end, expected_sigmoid(-0.05) / max_tp);
    // The same numbers from NAB's own sweeper.py.
    assert_close(middle, 0.8597925669097837);
    assert_close(end, 0.1260401374727592);
    assert!(1.0 > middle && middle > end && end > 0.0);
}

#[test]
fn each_window_counts_once_at_its_best_detection() {
    let score = hand(&[40, 50]);
    assert_eq!(score.raw, 1.0);
    assert_eq!((score.tp, score.fn_), (2, 18));
    assert_eq!(hand(&[50, 59]).raw, hand(&[50]).raw);
}

#[test]
fn false_positive_far_away_costs_fp() {
    // Before any window a detection counts as far away: -1 · 0.11, plus the
    // missed window.
    let score = hand(&[20]);
    assert_close(score.raw, -1.11);
    assert_eq!((score.tp, score.fp, score.fn_, score.tn), (0, 1, 20, 64));
}

#[test]
fn false_positive_just_after_a_window_costs_less() {
    // Row 60: x = (60 - 59) / (20 - 1); row 99: x = 40 / 19.
    let just_after = hand(&[60]).raw;
    let far_after = hand(&[99]).raw;
    assert_close(just_after, -1.0 + 0.11 * expected_sigmoid(1.0 / 19.0));
    assert_close(far_after, -1.0 + 0.11 * expected_sigmoid(40.0 / 19.0));
    assert_close(just_after, -1.0143907309069333);
    assert_close(far_after, -1.1099940994815793);
    assert!(-1.0 > just_after && just_after > far_after && far_after > -1.11);
}

#[test]
fn detections_in_the_probationary_period_are_ignored() {
    let score = hand(&[5, 14]);
    assert_eq!(score.raw, -1.0);
    assert_eq!((score.tp, score.fp, score.fn_, score.tn), (0, 0, 20, 65));
    assert_eq!(score.normalised, Some(0.0));
    // Row 15 is the first scored row.
    assert_eq!(hand(&[15]).fp, 1);
}

#[test]
fn mixed_detections_match_nab() {
    // From NAB's sweeper.py on the same inputs.
    let score = hand(&[50, 60, 99, 20]);
    assert_close(score.raw, 0.6254077365212711);
    assert_eq!((score.tp, score.fp, score.fn_, score.tn), (1, 3, 19, 62));
}

#[test]
fn threshold_detects_scores_at_or_above_it() {
    let series = minutes("t", 100);
    let windows = [window(&series, 40, 59)];
    let mut scores = vec![0.2; 100];
    scores[45] = 0.7;
    let score_at = |threshold| {
        score_series(&series, &windows, &scores, threshold, &Profile::STANDARD).unwrap()
    };
    assert_eq!(score_at(0.7).tp, 1);
    assert_eq!(score_at(0.6).tp, 1);
    assert_eq!(score_at(0.7000001).tp, 0);
    assert_eq!(score_at(0.2).fp, 65);
    // Outside the range NAB handles: no detections above 1.1, all below the
    // lowest score.
    assert_eq!(score_at(2.0).raw, -1.0);
    assert_eq!(score_at(-1.0).fp, 65);
}

#[test]
fn windows_in_probation_count_for_perfect_but_not_for_null() {
    let series = minutes("p", 100);
    // Rows 5..=10 lie wholly in the probationary period (15 rows): no part in
    // the score, so no false negative, but NAB's perfect counts every window.
    let inside = [window(&series, 5, 10)];
    let score = score_series(
        &series,
        &inside,
        &detections(100, &[]),
        0.5,
        &Profile::STANDARD,
    )
    .unwrap();
    assert_eq!(
        (score.raw, score.null_raw, score.perfect_raw),
        (0.0, 0.0, 1.0)
    );
    // A window straddling it (rows 10..=30, width 21) is scored from row 15.
    let straddling = [window(&series, 10, 30)];
    let early = score_series(
        &series,
        &straddling,
        &detections(100, &[10]),
        0.5,
        &Profile::STANDARD,
    )
    .unwrap();
    assert_eq!(early.raw, -1.0);
    let first_scored = score_series(
        &series,
        &straddling,
        &detections(100, &[15]),
        0.5,
        &Profile::STANDARD,
    )
    .unwrap();
    assert_close(
        first_scored.raw,
        expected_sigmoid(-16.0 / 21.0) / expected_sigmoid(-1.0),
    );
}

#[test]
fn false_positive_after_a_one_row_window_is_a_far_one() {
    // NAB divides by width - 1 = 0 here and fails; we score a far false positive.
    let series = minutes("one", 100);
    let windows = [window(&series, 50, 50)];
    let points = sweep_series(&series, &windows, &vec![0.0; 100], &Profile::STANDARD).unwrap();
    assert_eq!(points[50].window, RowWindow::Window(0));
    assert_eq!(points[50].sweep_score, 1.0);
    assert_eq!(points[51].window, RowWindow::Outside);
    assert_eq!(points[51].sweep_score, -0.11);
}

#[test]
fn sweep_marks_rows() {
    let series = minutes("m", 100);
    let windows = [window(&series, 40, 59)];
    let points = sweep_series(&series, &windows, &vec![0.5; 100], &Profile::STANDARD).unwrap();
    assert_eq!(points.len(), 100);
    assert_eq!(points[14].window, RowWindow::Probationary);
    assert_eq!(points[15].window, RowWindow::Outside);
    assert_eq!(points[40].window, RowWindow::Window(0));
    assert_eq!(points[59].window, RowWindow::Window(0));
    assert_eq!(points[60].window, RowWindow::Outside);
    assert_eq!(points[40].sweep_score, 1.0);
    assert_eq!(points[20].sweep_score, -0.11);
}

#[test]
fn bad_inputs_are_errors() {
    let series = minutes("bad", 100);
    let windows = [window(&series, 40, 59)];
    let standard = &Profile::STANDARD;
    let message = |result: Result<SeriesScore, PredictError>| result.unwrap_err().to_string();
    assert!(
        message(score_series(&series, &windows, &[0.0; 99], 0.5, standard))
            .contains("100 rows but 99 anomaly scores")
    );
    let mut scores = vec![0.0; 100];
    scores[7] = 1.5;
    assert!(
        message(score_series(&series, &windows, &scores, 0.5, standard))
            .contains("row 7: anomaly score 1.5")
    );
    scores[7] = f64::NAN;
    assert!(
        message(score_series(&series, &windows, &scores, 0.5, standard))
            .contains("row 7: anomaly score NaN")
    );
    assert!(message(score_series(
        &series,
        &windows,
        &[0.0; 100],
        f64::NAN,
        standard
    ))
    .contains("threshold is NaN"));
    let misaligned = [(series.time_us[40] + 1, series.time_us[59])];
    assert!(message(score_series(
        &series,
        &misaligned,
        &[0.0; 100],
        0.5,
        standard
    ))
    .contains("matches 0 rows"));
    let reversed = [window(&series, 59, 40)];
    assert!(
        message(score_series(&series, &reversed, &[0.0; 100], 0.5, standard))
            .contains("after its end")
    );
    let corpus = Corpus {
        series: vec![(series, windows.to_vec())],
    };
    let no_scores: [Vec<f64>; 0] = [];
    assert!(corpus_score(&corpus, &no_scores, 0.5, standard)
        .unwrap_err()
        .to_string()
        .contains("1 series but 0"));
    assert!(optimize_threshold(&corpus, &no_scores, standard).is_err());
}

/// Two series whose expected scores come from NAB's own `nab/sweeper.py`
/// (`scoreDataSet` at 0.5, and the pooled `calcScoreByThreshold` sorted by
/// score as `nab/optimizer.py` does). Series B's first window lies in its
/// probationary period; both have tied anomaly scores.
fn golden_corpus() -> (Corpus, Vec<Vec<f64>>) {
    let a = minutes("A", 200);
    let b = minutes("B", 150);
    let a_windows = vec![window(&a, 60, 79), window(&a, 130, 149)];
    let b_windows = vec![window(&b, 10, 20), window(&b, 100, 119)];
    let a_scores = (0..200)
        .map(|i| ((i * 7919) % 100) as f64 / 100.0)
        .collect();
    let b_scores = (0..150).map(|i| ((i * 31337) % 97) as f64 / 97.0).collect();
    (
        Corpus {
            series: vec![(a, a_windows), (b, b_windows)],
        },
        vec![a_scores, b_scores],
    )
}

#[test]
fn golden_values_from_nab() {
    let (corpus, scores) = golden_corpus();
    // (profile, A raw, B raw, optimiser threshold, optimiser raw)
    let expected = [
        (
            "standard",
            -4.5823010189762945,
            -4.860025836666915,
            0.97,
            1.9411482762513932,
        ),
        (
            "reward_low_FP_rate",
            -11.16078163013373,
            -10.67419914541192,
            0.97,
            1.41185545878189,
        ),
        (
            "reward_low_FN_rate",
            -4.5823010189762945,
            -4.860025836666915,
            0.97,
            1.9411482762513932,
        ),
    ];
    for (name, a_raw, b_raw, best_threshold, best_raw) in expected {
        let profile = Profile::by_name(name).unwrap();
        let total = corpus_score(&corpus, &scores, 0.5, &profile).unwrap();
        let (a, b) = (&total.series[0].1, &total.series[1].1);
        assert_close(a.raw, a_raw);
        assert_close(b.raw, b_raw);
        assert_eq!((a.tp, a.tn, a.fp, a.fn_), (20, 65, 65, 20), "{name}");
        assert_eq!((b.tp, b.tn, b.fp, b.fn_), (8, 52, 56, 12), "{name}");
        let best = optimize_threshold(&corpus, &scores, &profile).unwrap();
        assert_eq!(best.threshold, best_threshold, "{name}");
        assert_close(best.raw, best_raw);
        // B's first window is probationary: no false negative for it, but it
        // is one of the four windows of the perfect score.
        assert_eq!(best.null_raw, -3.0 * profile.fn_);
        assert_eq!(best.perfect_raw, 4.0);
    }
    // Per-row sweep scores, also from NAB.
    let points = sweep_series(
        &corpus.series[0].0,
        &corpus.series[0].1,
        &scores[0],
        &Profile::STANDARD,
    )
    .unwrap();
    assert_close(points[61].sweep_score, 0.9961795921811424);
    assert_close(points[85].sweep_score, -0.07239218536283094);
    let sum = points
        .iter()
        .fold(0.0, |total, point| total + point.sweep_score);
    assert_close(sum, 13.841561431907474);
}

#[test]
fn null_and_perfect_detectors_normalise_to_0_and_100() {
    let (corpus, _) = golden_corpus();
    for (name, profile) in Profile::NAMED {
        let null: Vec<Vec<f64>> = corpus
            .series
            .iter()
            .map(|(s, _)| vec![0.5; s.len()])
            .collect();
        let best = optimize_threshold(&corpus, &null, &profile).unwrap();
        assert_eq!(best.threshold, 1.1, "{name}");
        let score = corpus_score(&corpus, &null, best.threshold, &profile).unwrap();
        assert_eq!(score.normalised, Some(0.0), "{name}");
        // NAB's perfect detector fires at every window's first row; B's
        // probationary window keeps it from 100 here, so build one without.
        let mut scored = corpus.clone();
        scored.series[1].1.remove(0);
        let perfect: Vec<Vec<f64>> = scored
            .series
            .iter()
            .map(|(s, windows)| {
                let starts: Vec<usize> = windows
                    .iter()
                    .map(|w| s.time_us.iter().position(|&t| t == w.0).unwrap())
                    .collect();
                detections(s.len(), &starts)
            })
            .collect();
        let score = corpus_score(&scored, &perfect, 0.5, &profile).unwrap();
        assert_eq!(score.normalised, Some(100.0), "{name}");
        assert!(score
            .series
            .iter()
            .all(|(_, s)| s.normalised == Some(100.0)));
        assert_eq!(
            optimize_threshold(&scored, &perfect, &profile)
                .unwrap()
                .normalised,
            Some(100.0)
        );
    }
}

/// A random series with sorted, non-overlapping windows and anomaly scores
/// with many ties.
fn arb_case() -> impl Strategy<Value = (Series, Vec<(i64, i64)>, Vec<f64>)> {
    (10usize..250)
        .prop_flat_map(|rows| {
            let windows = proptest::collection::vec((0..rows, 1usize..40), 0..4);
            let score = prop_oneof![
                Just(0.0),
                Just(1.0),
                (0u8..=10).prop_map(|k| f64::from(k) / 10.0),
                0.0f64..=1.0
            ];
            (Just(rows), windows, proptest::collection::vec(score, rows))
        })
        .prop_map(|(rows, mut raw_windows, scores)| {
            let series = minutes("p", rows);
            raw_windows.sort();
            let mut windows = Vec::new();
            let mut next_free = 0;
            for (start, length) in raw_windows {
                if start < next_free {
                    continue;
                }
                let end = (start + length - 1).min(rows - 1);
                windows.push(window(&series, start, end));
                next_free = end + 1;
            }
            (series, windows, scores)
        })
}

proptest! {
    #[test]
    fn scores_are_finite_and_bounded((series, windows, scores) in arb_case(), threshold in 0.0f64..1.2) {
        for (_, profile) in Profile::NAMED {
            let score = score_series(&series, &windows, &scores, threshold, &profile).unwrap();
            prop_assert!(score.raw.is_finite() && score.null_raw.is_finite());
            prop_assert!(score.raw <= score.perfect_raw + 1e-12);
            if let Some(normalised) = score.normalised {
                prop_assert!(normalised.is_finite() && normalised <= 100.0 + 1e-9);
            }
            let scorable = series.len() - probation_rows(series.len());
            prop_assert_eq!((score.tp + score.fp + score.fn_ + score.tn) as usize, scorable);
        }
        let points = sweep_series(&series, &windows, &scores, &Profile::STANDARD).unwrap();
        prop_assert!(points.iter().all(|p| p.sweep_score.is_finite() && p.sweep_score.abs() <= 1.0));
    }

    #[test]
    fn a_false_positive_never_raises_the_score(
        (series, windows, scores) in arb_case(),
        threshold in 0.01f64..=1.0,
        pick in any::<proptest::sample::Index>(),
    ) {
        let points = sweep_series(&series, &windows, &scores, &Profile::STANDARD).unwrap();
        // A new false positive: a row outside every window, below the
        // threshold until now. (Raising a row that is already a detection
        // only reorders NAB's additions, which may move the sum by an ulp.)
        let outside: Vec<usize> = (0..points.len())
            .filter(|&row| points[row].window == RowWindow::Outside && scores[row] < threshold)
            .collect();
        prop_assume!(!outside.is_empty());
        let row = outside[pick.index(outside.len())];
        let mut more = scores.clone();
        more[row] = 1.0;
        for (_, profile) in Profile::NAMED {
            let before = score_series(&series, &windows, &scores, threshold, &profile).unwrap();
            let after = score_series(&series, &windows, &more, threshold, &profile).unwrap();
            prop_assert!(after.raw <= before.raw, "{} > {}", after.raw, before.raw);
        }
    }

    #[test]
    fn optimised_threshold_beats_every_sampled_one(
        cases in proptest::collection::vec(arb_case(), 1..4),
        thresholds in proptest::collection::vec(0.0f64..1.2, 1..6),
    ) {
        let mut corpus = Corpus::default();
        let mut scores = Vec::new();
        for (index, (mut series, windows, series_scores)) in cases.into_iter().enumerate() {
            series.name = format!("s{index}");
            corpus.series.push((series, windows));
            scores.push(series_scores);
        }
        for (_, profile) in Profile::NAMED {
            let best = optimize_threshold(&corpus, &scores, &profile).unwrap();
            let at_best = corpus_score(&corpus, &scores, best.threshold, &profile).unwrap();
            prop_assert!((at_best.raw - best.raw).abs() <= 1e-9, "{} vs {}", at_best.raw, best.raw);
            prop_assert_eq!(at_best.null_raw, best.null_raw);
            for &threshold in &thresholds {
                let sampled = corpus_score(&corpus, &scores, threshold, &profile).unwrap();
                prop_assert!(sampled.raw <= best.raw + 1e-9, "{} at {} beats {} at {}", sampled.raw, threshold, best.raw, best.threshold);
            }
        }
    }
}

/// The NAB subset shipped with the project, if this checkout has it.
fn shared_nab_dir() -> Option<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/nab");
    if dir.join("labels/combined_windows.json").is_file() {
        Some(dir)
    } else {
        eprintln!("note: skipping, no NAB data at {}", dir.display());
        None
    }
}

#[test]
fn real_corpus_loads_with_its_windows() {
    let Some(dir) = shared_nab_dir() else { return };
    let corpus = load_corpus(&dir).unwrap();
    assert_eq!(corpus.series.len(), 28);
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("labels/combined_windows.json")).unwrap(),
    )
    .unwrap();
    for (series, windows) in &corpus.series {
        let listed = json[&series.name]
            .as_array()
            .unwrap_or_else(|| panic!("{} not in the JSON", series.name));
        assert_eq!(windows.len(), listed.len(), "{}", series.name);
        assert_eq!(
            format_timestamp_us(windows.first().map_or(0, |w| w.0)),
            listed
                .first()
                .map_or("1970-01-01 00:00:00.000000", |w| w[0].as_str().unwrap())
        );
        assert_eq!(series.len(), series.values.len());
    }
    assert_eq!(corpus.window_count(), 36);
    let names: Vec<&str> = corpus.series.iter().map(|(s, _)| s.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let rows = |name: &str| {
        corpus
            .series
            .iter()
            .find(|(s, _)| s.name == name)
            .unwrap()
            .0
            .len()
    };
    assert_eq!(rows("artificialNoAnomaly/art_flatline.csv"), 4032);
    // Repeats 2014-03-09 03:00:00 at a clock change, and still loads.
    assert_eq!(
        rows("realAWSCloudwatch/ec2_disk_write_bytes_1ef3de.csv"),
        4730
    );
    assert_eq!(
        rows("realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv"),
        1243
    );
}

#[test]
fn real_corpus_scores_null_0_perfect_100_and_optimises() {
    let Some(dir) = shared_nab_dir() else { return };
    let corpus = load_corpus(&dir).unwrap();
    let null: Vec<Vec<f64>> = corpus
        .series
        .iter()
        .map(|(s, _)| vec![0.5; s.len()])
        .collect();
    let perfect: Vec<Vec<f64>> = corpus
        .series
        .iter()
        .map(|(s, windows)| {
            let starts: Vec<usize> = windows
                .iter()
                .map(|w| s.time_us.iter().position(|&t| t == w.0).unwrap())
                .collect();
            detections(s.len(), &starts)
        })
        .collect();
    // A simple detector: distance from the running mean in running standard
    // deviations, squashed into [0, 1); written as the Python that produced
    // the expected values below (with NAB's sweeper.py and optimizer.py).
    let z_score: Vec<Vec<f64>> = corpus
        .series
        .iter()
        .map(|(s, _)| {
            let (mut sum, mut sum_squares) = (0.0, 0.0);
            s.values
                .iter()
                .enumerate()
                .map(|(row, &value)| {
                    let score = if row < 2 {
                        0.0
                    } else {
                        let mean = sum / row as f64;
                        let variance = f64::max(sum_squares / row as f64 - mean * mean, 0.0);
                        1.0 - (-(value - mean).abs() / (variance.sqrt() + 1e-9) / 5.0).exp()
                    };
                    sum += value;
                    sum_squares += value * value;
                    score
                })
                .collect()
        })
        .collect();
    // (profile, NAB optimiser's threshold and pooled raw score, the total of
    // NAB's per-series scores there, the normalised score)
    let expected = [
        (
            "standard",
            0.8269121974043392,
            -12.742728388038472,
            -12.742728388038469,
            32.30176612772435,
        ),
        (
            "reward_low_FP_rate",
            0.8269121974043392,
            -21.635263404473054,
            -21.63526340447305,
            19.951023049342986,
        ),
        (
            "reward_low_FN_rate",
            0.7748476332780255,
            -31.41066802260696,
            -31.41066802260698,
            37.582714793882424,
        ),
    ];
    for (name, profile) in Profile::NAMED {
        let null_score = corpus_score(&corpus, &null, 1.1, &profile).unwrap();
        assert_eq!(null_score.normalised, Some(0.0), "{name}");
        assert_eq!(null_score.null_raw, -36.0 * profile.fn_, "{name}");
        assert_eq!(
            optimize_threshold(&corpus, &null, &profile)
                .unwrap()
                .threshold,
            1.1
        );
        let perfect_score = corpus_score(&corpus, &perfect, 0.5, &profile).unwrap();
        assert_eq!(perfect_score.normalised, Some(100.0), "{name}");
        assert_eq!(perfect_score.raw, 36.0);
        for (series, score) in &perfect_score.series {
            let windows = corpus
                .series
                .iter()
                .find(|(s, _)| &s.name == series)
                .unwrap()
                .1
                .len();
            assert_eq!(
                score.normalised,
                if windows == 0 { None } else { Some(100.0) },
                "{series}"
            );
        }
        let (_, threshold, pooled_raw, total_raw, normalised) =
            expected.iter().find(|e| e.0 == name).copied().unwrap();
        let best = optimize_threshold(&corpus, &z_score, &profile).unwrap();
        assert_eq!(best.threshold, threshold, "{name}");
        assert_close(best.raw, pooled_raw);
        let at_best = corpus_score(&corpus, &z_score, best.threshold, &profile).unwrap();
        assert_close(at_best.raw, total_raw);
        assert_close(at_best.normalised.unwrap(), normalised);
        for threshold in [0.1, 0.5, 0.9, 0.99] {
            assert!(
                corpus_score(&corpus, &z_score, threshold, &profile)
                    .unwrap()
                    .raw
                    <= best.raw + 1e-9
            );
        }
    }
}
