//! NAB's data files: series CSVs and the combined windows file.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::time::parse_timestamp;
use crate::PredictError;

/// Most rows one series may have (NAB's longest series has 22 695).
pub const SERIES_ROWS_MAX: usize = 10_000_000;
/// Most bytes one series CSV may have (10 M rows of about 30 bytes, with room).
pub const SERIES_BYTES_MAX: u64 = 512 * 1024 * 1024;
/// Most bytes the windows JSON may have (NAB's is 14 KiB).
pub const WINDOWS_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Most windows one series may have (NAB has at most 4).
pub const WINDOWS_PER_SERIES_MAX: usize = 100_000;
/// Most CSV files [`load_corpus`] visits under `data/` (NAB has 58).
pub const CORPUS_FILES_MAX: usize = 10_000;
/// Deepest folder nesting [`load_corpus`] walks under `data/` (NAB uses 1).
pub const CORPUS_DEPTH_MAX: usize = 8;

/// The header every NAB series CSV starts with.
const SERIES_HEADER: &str = "timestamp,value";

/// One NAB time series: a metric value per time step, in file order.
///
/// Timestamps need not be unique or sorted: two of NAB's real series repeat
/// `2014-03-09 03:00:00` eleven times (a clock change), and NAB itself does
/// not require order. What scoring needs is that each window limit matches
/// exactly one row (see [`load_corpus`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The series' name; for NAB files the path relative to `data/`, as in
    /// the windows file's keys (`realAWSCloudwatch/ec2_network_in_257a54.csv`).
    pub name: String,
    /// Row timestamps, microseconds since the Unix epoch (UTC).
    pub time_us: Vec<i64>,
    /// Row values, all finite; as long as `time_us`.
    pub values: Vec<f64>,
}

impl Series {
    /// The number of rows.
    pub fn len(&self) -> usize {
        self.time_us.len()
    }

    /// Whether the series has no rows.
    pub fn is_empty(&self) -> bool {
        self.time_us.is_empty()
    }
}

/// A loaded NAB corpus: every series with its anomaly windows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Corpus {
    /// Series sorted by name, each with its windows as `(start_us, end_us)`
    /// (inclusive), every limit matching exactly one row of the series.
    pub series: Vec<(Series, Vec<(i64, i64)>)>,
}

impl Corpus {
    /// The number of windows over all series.
    pub fn window_count(&self) -> usize {
        self.series.iter().map(|(_, windows)| windows.len()).sum()
    }
}

/// Parses a NAB series CSV held in memory.
///
/// The first non-blank line must be the header `timestamp,value`; each
/// further non-blank line is `YYYY-MM-DD HH:MM:SS[.ffffff],VALUE` with a
/// finite number. Blank lines are skipped (as pandas does), a `\r` before
/// `\n` is allowed, and a leading byte-order mark is ignored. Errors name
/// `name` and the 1-based line.
///
/// ```
/// use diaspora_predict::nab::parse_series;
/// let series = parse_series("s.csv", "timestamp,value\n2014-04-01 00:00:00,20.5\n").unwrap();
/// assert_eq!(series.values, vec![20.5]);
/// assert!(parse_series("s.csv", "timestamp,value\n2014-04-01,1\n").is_err());
/// ```
pub fn parse_series(name: &str, text: &str) -> Result<Series, PredictError> {
    parse_series_labelled(name, name, text, SERIES_ROWS_MAX)
}

/// [`parse_series`] with errors naming `label` (a file path) rather than the
/// series name.
fn parse_series_labelled(
    label: &str,
    name: &str,
    text: &str,
    rows_max: usize,
) -> Result<Series, PredictError> {
    if text.len() as u64 > SERIES_BYTES_MAX {
        return Err(PredictError::Limit(format!(
            "{label}: {} bytes is more than SERIES_BYTES_MAX = {SERIES_BYTES_MAX}",
            text.len()
        )));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // About 30 bytes a row in NAB's files; a guess, capped so that a short
    // file with long lines cannot make us reserve much.
    let rows_guess = (text.len() / 24).min(1 << 20);
    let mut series = Series {
        name: name.to_string(),
        time_us: Vec::with_capacity(rows_guess),
        values: Vec::with_capacity(rows_guess),
    };
    let mut header_seen = false;
    for (index, line) in text.split('\n').enumerate() {
        let line_number = index + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        if !header_seen {
            if line.trim() != SERIES_HEADER {
                return Err(PredictError::Data(format!(
                    "{label} line {line_number}: expected the header `{SERIES_HEADER}`, found `{}`",
                    clip(line)
                )));
            }
            header_seen = true;
            continue;
        }
        if series.len() == rows_max {
            return Err(PredictError::Limit(format!(
                "{label} line {line_number}: more than the limit of {rows_max} rows (SERIES_ROWS_MAX)"
            )));
        }
        let (time_us, value) = parse_row(line).map_err(|reason| {
            PredictError::Data(format!("{label} line {line_number}: {reason}"))
        })?;
        series.time_us.push(time_us);
        series.values.push(value);
    }
    if !header_seen {
        return Err(PredictError::Data(format!(
            "{label}: empty, expected the header `{SERIES_HEADER}`"
        )));
    }
    Ok(series)
}

fn parse_row(line: &str) -> Result<(i64, f64), String> {
    let Some((time, value)) = line.split_once(',') else {
        return Err(format!(
            "expected `timestamp,value`, found `{}`",
            clip(line)
        ));
    };
    if value.contains(',') {
        return Err(format!("expected 2 fields, found `{}`", clip(line)));
    }
    let time_us = parse_timestamp(time.trim())
        .map_err(|reason| format!("timestamp `{}`: {reason}", clip(time)))?;
    let value_text = value.trim();
    let value = value_text
        .parse::<f64>()
        .map_err(|_| format!("value `{}` is not a number", clip(value_text)))?;
    if !value.is_finite() {
        return Err(format!("value `{}` is not finite", clip(value_text)));
    }
    Ok((time_us, value))
}

/// At most 60 characters of `text`, for error messages.
fn clip(text: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 60;
    if text.chars().count() <= SHOWN_CHARS_MAX {
        text.to_string()
    } else {
        let mut shown: String = text.chars().take(SHOWN_CHARS_MAX).collect();
        shown.push('…');
        shown
    }
}

/// Reads and parses one NAB series CSV (see [`parse_series`]), refusing files
/// over [`SERIES_BYTES_MAX`]. `name` becomes [`Series::name`]; errors name
/// the path.
pub fn read_series(path: &Path, name: &str) -> Result<Series, PredictError> {
    let text = read_text(path, SERIES_BYTES_MAX)?;
    parse_series_labelled(&path.display().to_string(), name, &text, SERIES_ROWS_MAX)
}

/// Reads a whole UTF-8 file of at most `bytes_max` bytes.
fn read_text(path: &Path, bytes_max: u64) -> Result<String, PredictError> {
    let io_error = |source| PredictError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    let bytes = file.metadata().map_err(io_error)?.len();
    if bytes > bytes_max {
        return Err(PredictError::Limit(format!(
            "{}: {bytes} bytes is more than the limit of {bytes_max}",
            path.display()
        )));
    }
    let mut raw = Vec::with_capacity(bytes as usize);
    // `take` guards against a file that grows while we read it.
    file.take(bytes_max + 1)
        .read_to_end(&mut raw)
        .map_err(io_error)?;
    if raw.len() as u64 > bytes_max {
        return Err(PredictError::Limit(format!(
            "{}: more than the limit of {bytes_max} bytes",
            path.display()
        )));
    }
    String::from_utf8(raw).map_err(|error| {
        PredictError::Data(format!(
            "{}: not UTF-8 (byte {})",
            path.display(),
            error.utf8_error().valid_up_to()
        ))
    })
}

/// Reads NAB's `labels/combined_windows.json`: series name → windows as
/// `(start_us, end_us)`, inclusive. See [`parse_windows`] for the checks.
pub fn read_windows(path: &Path) -> Result<HashMap<String, Vec<(i64, i64)>>, PredictError> {
    let text = read_text(path, WINDOWS_BYTES_MAX)?;
    parse_windows_labelled(&path.display().to_string(), &text)
}

/// Parses the windows JSON held in memory: an object mapping each series
/// name (its path relative to `data/`) to a list of `[start, end]` timestamp
/// pairs.
///
/// Checked as NAB's `nab/labeler.py` `CorpusLabel.validateLabels` does: each
/// window starts no later than it ends, and each starts no earlier than the
/// previous one ends. Whether the limits match rows is checked when series
/// and windows meet ([`load_corpus`] and the scoring functions).
///
/// ```
/// use diaspora_predict::nab::parse_windows;
/// let windows = parse_windows(r#"{"a.csv": [["2014-04-01 00:00:00.000000", "2014-04-01 00:05:00.000000"]], "b.csv": []}"#).unwrap();
/// assert_eq!(windows["a.csv"][0].1 - windows["a.csv"][0].0, 300_000_000);
/// assert!(windows["b.csv"].is_empty());
/// ```
pub fn parse_windows(text: &str) -> Result<HashMap<String, Vec<(i64, i64)>>, PredictError> {
    parse_windows_labelled("windows JSON", text)
}

fn parse_windows_labelled(
    label: &str,
    text: &str,
) -> Result<HashMap<String, Vec<(i64, i64)>>, PredictError> {
    if text.len() as u64 > WINDOWS_BYTES_MAX {
        return Err(PredictError::Limit(format!(
            "{label}: {} bytes is more than WINDOWS_BYTES_MAX = {WINDOWS_BYTES_MAX}",
            text.len()
        )));
    }
    // serde_json's messages carry the line and column.
    let raw: HashMap<String, Vec<(String, String)>> = serde_json::from_str(text)
        .map_err(|error| PredictError::Data(format!("{label}: {error}")))?;
    let mut windows = HashMap::with_capacity(raw.len());
    for (name, limits) in raw {
        if limits.len() > WINDOWS_PER_SERIES_MAX {
            return Err(PredictError::Limit(format!(
                "{label}: series `{name}` has {} windows, more than WINDOWS_PER_SERIES_MAX = {WINDOWS_PER_SERIES_MAX}",
                limits.len()
            )));
        }
        let mut parsed: Vec<(i64, i64)> = Vec::with_capacity(limits.len());
        for (index, (start, end)) in limits.iter().enumerate() {
            let limit = |text: &str, which: &str| {
                parse_timestamp(text).map_err(|reason| {
                    PredictError::Data(format!(
                        "{label}: series `{name}` window {index} {which} `{}`: {reason}",
                        clip(text)
                    ))
                })
            };
            let start_us = limit(start, "start")?;
            let end_us = limit(end, "end")?;
            if start_us > end_us {
                return Err(PredictError::Data(format!(
                    "{label}: series `{name}` window {index} ends ({end}) before it starts ({start})"
                )));
            }
            if let Some(&(_, previous_end_us)) = parsed.last() {
                if start_us < previous_end_us {
                    return Err(PredictError::Data(format!(
                        "{label}: series `{name}` window {index} starts ({start}) before window {} ends; \
                         NAB's windows are sorted and do not overlap",
                        index - 1
                    )));
                }
            }
            parsed.push((start_us, end_us));
        }
        windows.insert(name, parsed);
    }
    Ok(windows)
}

/// Loads a NAB corpus from `nab_dir`: the windows from
/// `labels/combined_windows.json` and every `.csv` under `data/` (any depth,
/// hidden names skipped as NAB's `nab/util.py` `absoluteFilePaths` does) that
/// has an entry in the windows file, sorted by name. CSVs without an entry
/// are skipped, as NAB's `Runner.detect` skips them; windows entries without
/// a CSV are ignored (NAB's windows file covers 58 series, a subset may hold
/// fewer).
///
/// Every window limit must match exactly one row timestamp of its series, as
/// NAB's `nab/labeler.py` `CorpusLabel.getWindows` requires ("Timestamps in
/// json label files have to exactly match timestamps in corresponding
/// datafiles").
pub fn load_corpus(nab_dir: &Path) -> Result<Corpus, PredictError> {
    let windows_path = nab_dir.join("labels").join("combined_windows.json");
    let mut windows = read_windows(&windows_path)?;
    let data_dir = nab_dir.join("data");
    let mut files = Vec::new();
    collect_csv_files(&data_dir, "", 0, &mut files)?;
    files.sort();
    let mut corpus = Corpus::default();
    for (name, path) in files {
        let Some(series_windows) = windows.remove(&name) else {
            continue;
        };
        let series = read_series(&path, &name)?;
        window_rows(&series, &series_windows)?;
        corpus.series.push((series, series_windows));
    }
    if corpus.series.is_empty() {
        return Err(PredictError::Data(format!(
            "no CSV under {} has an entry in {}",
            data_dir.display(),
            windows_path.display()
        )));
    }
    Ok(corpus)
}

/// Appends `(name relative to data/, path)` for every visible `.csv` under
/// `dir`.
fn collect_csv_files(
    dir: &Path,
    prefix: &str,
    depth: usize,
    files: &mut Vec<(String, PathBuf)>,
) -> Result<(), PredictError> {
    if depth > CORPUS_DEPTH_MAX {
        return Err(PredictError::Limit(format!(
            "{}: folders nested deeper than CORPUS_DEPTH_MAX = {CORPUS_DEPTH_MAX}",
            dir.display()
        )));
    }
    let io_error = |source| PredictError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        let path = entry.path();
        // Names that are not UTF-8 cannot be keys of the windows JSON.
        let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        let name = if prefix.is_empty() {
            file_name
        } else {
            format!("{prefix}/{file_name}")
        };
        // `metadata` follows symbolic links, as NAB's `os.walk` lists them.
        let metadata = std::fs::metadata(&path).map_err(|source| PredictError::Io {
            path: path.clone(),
            source,
        })?;
        if metadata.is_dir() {
            collect_csv_files(&path, &name, depth + 1, files)?;
        } else if metadata.is_file() && name.ends_with(".csv") {
            if files.len() == CORPUS_FILES_MAX {
                return Err(PredictError::Limit(format!(
                    "{}: more than CORPUS_FILES_MAX = {CORPUS_FILES_MAX} CSV files",
                    path.display()
                )));
            }
            files.push((name, path));
        }
    }
    Ok(())
}

/// The row indices `(start_row, end_row)` of each window, checking that each
/// limit matches exactly one row (NAB's `CorpusLabel.getWindows`) and that
/// the start row is not after the end row.
pub(crate) fn window_rows(
    series: &Series,
    windows: &[(i64, i64)],
) -> Result<Vec<(usize, usize)>, PredictError> {
    // One pass over the rows: for each window limit, its first row and how
    // many rows carry it.
    let mut matches: HashMap<i64, (usize, usize)> = HashMap::with_capacity(windows.len() * 2);
    for &(start_us, end_us) in windows {
        matches.insert(start_us, (usize::MAX, 0));
        matches.insert(end_us, (usize::MAX, 0));
    }
    for (row, time_us) in series.time_us.iter().enumerate() {
        if let Some((first_row, count)) = matches.get_mut(time_us) {
            if *count == 0 {
                *first_row = row;
            }
            *count += 1;
        }
    }
    let row_of = |index: usize, which: &str, time_us: i64| {
        let (row, count) = matches[&time_us];
        if count == 1 {
            Ok(row)
        } else {
            Err(PredictError::Data(format!(
                "series `{}` window {index} {which} {} matches {count} rows; NAB needs exactly one",
                series.name,
                super::time::format_timestamp_us(time_us)
            )))
        }
    };
    windows
        .iter()
        .enumerate()
        .map(|(index, &(start_us, end_us))| {
            let start_row = row_of(index, "start", start_us)?;
            let end_row = row_of(index, "end", end_us)?;
            if start_row > end_row {
                return Err(PredictError::Data(format!(
                    "series `{}` window {index} starts at row {start_row}, after its end at row {end_row}",
                    series.name
                )));
            }
            Ok((start_row, end_row))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEADER: &str = "timestamp,value\n";

    #[test]
    fn parses_rows_and_line_endings() {
        let text = "\u{feff}timestamp,value\r\n2014-04-01 00:00:00,20.0\r\n\n2014-04-01 00:05:00, -1.5e3 \r\n";
        let series = parse_series("x.csv", text).unwrap();
        assert_eq!(series.name, "x.csv");
        assert_eq!(series.time_us[1] - series.time_us[0], 300_000_000);
        assert_eq!(series.values, vec![20.0, -1500.0]);
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            ("", "x.csv: empty"),
            ("time,value\n", "x.csv line 1: expected the header"),
            (
                "timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:00:00\n",
                "x.csv line 3: expected `timestamp,value`",
            ),
            (
                "timestamp,value\n2014-04-01 00:00:00,1,2\n",
                "x.csv line 2: expected 2 fields",
            ),
            (
                "timestamp,value\n2014-04-01 00:00,1\n",
                "x.csv line 2: timestamp",
            ),
            (
                "timestamp,value\n2014-04-01 00:00:00,abc\n",
                "x.csv line 2: value `abc` is not a number",
            ),
            (
                "timestamp,value\n2014-04-01 00:00:00,NaN\n",
                "x.csv line 2: value `NaN` is not finite",
            ),
            (
                "timestamp,value\n2014-04-01 00:00:00,inf\n",
                "x.csv line 2: value `inf` is not finite",
            ),
        ];
        for (text, want) in cases {
            let error = parse_series("x.csv", text).unwrap_err();
            assert!(matches!(error, PredictError::Data(_)), "{error}");
            assert!(error.to_string().contains(want), "`{error}` lacks `{want}`");
        }
    }

    #[test]
    fn read_series_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.csv");
        std::fs::write(&path, "timestamp,value\n2014-04-01 00:00:00,x\n").unwrap();
        let error = read_series(&path, "bad.csv").unwrap_err().to_string();
        assert!(
            error.contains(&format!("{} line 2", path.display())),
            "{error}"
        );
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(read_series(&path, "bad.csv")
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
        let missing = read_series(&dir.path().join("missing.csv"), "m").unwrap_err();
        assert!(matches!(missing, PredictError::Io { .. }), "{missing}");
    }

    #[test]
    fn rows_over_the_limit_are_refused() {
        let text = "timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,2\n";
        assert_eq!(
            parse_series_labelled("x.csv", "x", text, 2).unwrap().len(),
            2
        );
        let error = parse_series_labelled("x.csv", "x", text, 1).unwrap_err();
        assert!(matches!(error, PredictError::Limit(_)), "{error}");
        assert!(
            error
                .to_string()
                .contains("x.csv line 3: more than the limit of 1 rows"),
            "{error}"
        );
    }

    #[test]
    fn read_text_enforces_its_byte_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        std::fs::write(&path, "0123456789").unwrap();
        assert_eq!(read_text(&path, 10).unwrap(), "0123456789");
        let error = read_text(&path, 9).unwrap_err();
        assert!(matches!(error, PredictError::Limit(_)), "{error}");
        assert!(
            error
                .to_string()
                .contains("10 bytes is more than the limit of 9"),
            "{error}"
        );
    }

    #[test]
    fn windows_are_checked() {
        let ok = parse_windows(
            r#"{"a.csv": [["2014-04-01 00:00:00.000000", "2014-04-01 00:10:00.000000"],
                          ["2014-04-01 00:10:00.000000", "2014-04-01 00:20:00.000000"]]}"#,
        )
        .unwrap();
        assert_eq!(ok["a.csv"].len(), 2);
        for (text, want) in [
            (
                r#"{"a.csv": [["2014-04-01 00:10:00", "2014-04-01 00:00:00"]]}"#,
                "window 0 ends",
            ),
            (
                r#"{"a.csv": [["2014-04-01 00:00:00", "2014-04-01 00:10:00"], ["2014-04-01 00:05:00", "2014-04-01 00:20:00"]]}"#,
                "window 1 starts",
            ),
            (
                r#"{"a.csv": [["2014-04-01", "2014-04-01 00:00:00"]]}"#,
                "window 0 start `2014-04-01`",
            ),
            ("{\"a.csv\": [[\"2014-04-01 00:00:00\"]]\n}", "line 1"),
            ("{\n\"a.csv\": 3}", "line 2"),
        ] {
            let error = parse_windows(text).unwrap_err().to_string();
            assert!(error.contains(want), "`{error}` lacks `{want}`");
        }
    }

    #[test]
    fn window_rows_need_exactly_one_match() {
        let series = parse_series(
            "s",
            "timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,1\n2014-04-01 00:05:00,1\n2014-04-01 00:10:00,1\n",
        )
        .unwrap();
        let t = &series.time_us;
        assert_eq!(window_rows(&series, &[(t[0], t[3])]).unwrap(), vec![(0, 3)]);
        let duplicated = window_rows(&series, &[(t[0], t[1])])
            .unwrap_err()
            .to_string();
        assert!(duplicated.contains("matches 2 rows"), "{duplicated}");
        let missing = window_rows(&series, &[(t[0] + 1, t[3])])
            .unwrap_err()
            .to_string();
        assert!(missing.contains("matches 0 rows"), "{missing}");
    }

    #[test]
    fn load_corpus_walks_data_and_keeps_labelled_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("labels")).unwrap();
        std::fs::create_dir_all(root.join("data/b")).unwrap();
        std::fs::create_dir_all(root.join("data/a")).unwrap();
        let csv = "timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,2\n";
        std::fs::write(root.join("data/b/two.csv"), csv).unwrap();
        std::fs::write(root.join("data/a/one.csv"), csv).unwrap();
        std::fs::write(root.join("data/a/unlabelled.csv"), csv).unwrap();
        std::fs::write(root.join("data/a/.hidden.csv"), "garbage").unwrap();
        std::fs::write(
            root.join("labels/combined_windows.json"),
            r#"{"a/one.csv": [["2014-04-01 00:00:00.000000", "2014-04-01 00:05:00.000000"]],
                "b/two.csv": [], "c/absent.csv": []}"#,
        )
        .unwrap();
        let corpus = load_corpus(root).unwrap();
        let names: Vec<&str> = corpus.series.iter().map(|(s, _)| s.name.as_str()).collect();
        assert_eq!(names, ["a/one.csv", "b/two.csv"]);
        assert_eq!(corpus.window_count(), 1);

        std::fs::write(
            root.join("labels/combined_windows.json"),
            r#"{"a/one.csv": [["2014-04-01 00:00:00.000000", "2014-04-01 00:06:00.000000"]]}"#,
        )
        .unwrap();
        let error = load_corpus(root).unwrap_err().to_string();
        assert!(
            error.contains("window 0 end 2014-04-01 00:06:00.000000 matches 0 rows"),
            "{error}"
        );

        std::fs::write(
            root.join("labels/combined_windows.json"),
            r#"{"z.csv": []}"#,
        )
        .unwrap();
        assert!(load_corpus(root)
            .unwrap_err()
            .to_string()
            .contains("no CSV under"));
    }

    proptest! {
        #[test]
        fn parse_series_never_panics_on_any_text(text in "\\PC{0,200}") {
            let _ = parse_series("p", &text);
        }

        #[test]
        fn parse_series_never_panics_on_near_valid_rows(
            rows in proptest::collection::vec(
                ("[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,8})?", "[-+0-9.eEnaif,]{0,12}"),
                0..20,
            ),
        ) {
            let mut text = HEADER.to_string();
            for (time, value) in &rows {
                text.push_str(&format!("{time},{value}\n"));
            }
            if let Ok(series) = parse_series("p", &text) {
                prop_assert_eq!(series.len(), rows.len());
                prop_assert!(series.values.iter().all(|v| v.is_finite()));
            }
        }

        #[test]
        fn parse_windows_never_panics(text in "\\PC{0,200}") {
            let _ = parse_windows(&text);
        }
    }
}
