//! The pure core: what the page shows, computed from successive samples of
//! the node's state and from the metric events services publish. No I/O and
//! no clock of its own: every function takes the times it needs.
//!
//! - [`rate_per_s`] / [`topic_views`]: produce rates from two samples of a
//!   partition's end offset and size;
//! - [`Services`]: the latest metric event of each source, grouped into
//!   bridges, QoS streams, views and pools;
//! - [`Tail`]: the last few events of a topic (predictions, alerts, pool
//!   events, the loop's models), bounded.

use std::collections::{BTreeMap, VecDeque};

use diaspora_telemetry::MetricEvent;
use serde::Serialize;

/// Most sources [`Services`] keeps (the oldest report is dropped beyond).
pub const SOURCES_MAX: usize = 256;
/// A source whose last report is older than this many intervals is shown stale.
pub const STALE_INTERVALS: u64 = 5;

/// One partition as the admin plane describes it at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionSample {
    /// Partition number.
    pub partition: u32,
    /// First retained offset.
    pub start_offset: u64,
    /// Offset the next item will get.
    pub next_offset: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
}

/// One topic at one time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TopicSample {
    /// Name.
    pub name: String,
    /// Retention by size per partition, bytes (0: none).
    pub retention_bytes: u64,
    /// Retention by age, ms (0: none).
    pub retention_ms: u64,
    /// Its partitions.
    pub partitions: Vec<PartitionSample>,
}

/// The node's topics at one time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// When it was taken, µs since the Unix epoch.
    pub t_us: i64,
    /// The topics, by name.
    pub topics: Vec<TopicSample>,
}

/// A counter's rate per second between two readings `dt_s` apart; 0 when
/// the counter went back (a topic deleted and made again) or no time passed.
///
/// ```
/// use diaspora_dashboard::core::rate_per_s;
/// assert_eq!(rate_per_s(100, 350, 0.5), 500.0);
/// assert_eq!(rate_per_s(350, 100, 0.5), 0.0);
/// assert_eq!(rate_per_s(0, 10, 0.0), 0.0);
/// ```
pub fn rate_per_s(before: u64, after: u64, dt_s: f64) -> f64 {
    if dt_s <= 0.0 || !dt_s.is_finite() || after < before {
        return 0.0;
    }
    (after - before) as f64 / dt_s
}

/// A partition on the page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionView {
    /// Partition number.
    pub partition: u32,
    /// First retained offset.
    pub start_offset: u64,
    /// Next offset.
    pub next_offset: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Items appended per second since the previous sample.
    pub items_per_s: f64,
    /// Bytes appended per second since the previous sample.
    pub bytes_per_s: f64,
}

/// A consumer group's position on a topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupLag {
    /// The group.
    pub group: String,
    /// Items between its committed offsets and the ends, over all partitions.
    pub lag: u64,
    /// Per partition: (partition, committed, lag).
    pub partitions: Vec<(u32, u64, u64)>,
}

/// A topic on the page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicView {
    /// Name.
    pub name: String,
    /// Items retained (end minus start, over partitions).
    pub items: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Retention by size per partition, bytes (0: none).
    pub retention_bytes: u64,
    /// Retention by age, ms (0: none).
    pub retention_ms: u64,
    /// Items appended per second, all partitions.
    pub items_per_s: f64,
    /// Bytes appended per second, all partitions.
    pub bytes_per_s: f64,
    /// The partitions.
    pub partitions: Vec<PartitionView>,
    /// Lag of the consumer groups the dashboard was told to watch.
    pub groups: Vec<GroupLag>,
}

/// Bytes appended to a partition between two samples.
///
/// The size on disk grows with every append but shrinks when retention
/// deletes a segment; then the growth cannot be read from the sizes, and
/// the appended items are counted at the partition's mean record size.
fn appended_bytes(before: &PartitionSample, after: &PartitionSample) -> u64 {
    if after.size_bytes >= before.size_bytes {
        return after.size_bytes - before.size_bytes;
    }
    let items = after.next_offset.saturating_sub(before.next_offset);
    let held = after.next_offset.saturating_sub(after.start_offset);
    if held == 0 {
        return 0;
    }
    (after.size_bytes as f64 / held as f64 * items as f64) as u64
}

/// The topics of `now`, with rates measured against `before` (the previous
/// sample; rates are 0 on the first and for what is new since).
pub fn topic_views(before: Option<&Sample>, now: &Sample) -> Vec<TopicView> {
    let dt_s = before.map_or(0.0, |b| (now.t_us - b.t_us) as f64 / 1e6);
    now.topics
        .iter()
        .map(|t| {
            let prev = before.and_then(|b| b.topics.iter().find(|p| p.name == t.name));
            let partitions: Vec<PartitionView> = t
                .partitions
                .iter()
                .map(|p| {
                    let old =
                        prev.and_then(|o| o.partitions.iter().find(|q| q.partition == p.partition));
                    let (items_per_s, bytes_per_s) = match old {
                        Some(o) => (
                            rate_per_s(o.next_offset, p.next_offset, dt_s),
                            if p.next_offset < o.next_offset {
                                0.0
                            } else {
                                appended_bytes(o, p) as f64 / dt_s.max(f64::MIN_POSITIVE)
                            },
                        ),
                        None => (0.0, 0.0),
                    };
                    let bytes_per_s = if dt_s > 0.0 { bytes_per_s } else { 0.0 };
                    PartitionView {
                        partition: p.partition,
                        start_offset: p.start_offset,
                        next_offset: p.next_offset,
                        size_bytes: p.size_bytes,
                        items_per_s,
                        bytes_per_s,
                    }
                })
                .collect();
            TopicView {
                name: t.name.clone(),
                items: partitions
                    .iter()
                    .map(|p| p.next_offset.saturating_sub(p.start_offset))
                    .sum(),
                size_bytes: partitions.iter().map(|p| p.size_bytes).sum(),
                retention_bytes: t.retention_bytes,
                retention_ms: t.retention_ms,
                items_per_s: partitions.iter().map(|p| p.items_per_s).sum(),
                bytes_per_s: partitions.iter().map(|p| p.bytes_per_s).sum(),
                partitions,
                groups: Vec::new(),
            }
        })
        .collect()
}

/// One component a metric source reported on: a bridge, a QoS stream's
/// producer or consumer, a view, a pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    /// `bridge`, `stream producer`, `stream consumer`, `view`, `pool`, `node`, `link`.
    pub kind: &'static str,
    /// Which one: the labels that tell it apart (`topic=frames partition=0`).
    pub id: String,
    /// The process that reported it.
    pub source: String,
    /// Seconds since the report.
    pub age_s: f64,
    /// A one-word summary: `running`, `stale`, `congested`, `failed N`, …
    pub state: String,
    /// The figures that matter for its kind in one line (a stream's buffer
    /// fill, quality mix and flow state; a bridge's progress), from `fields`.
    pub summary: String,
    /// Its series (the name after the kind's prefix) and values.
    pub fields: BTreeMap<String, f64>,
}

/// The services as their metric events describe them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServicesView {
    /// Bridges (`bridge.*`).
    pub bridges: Vec<Component>,
    /// QoS stream producers and consumers (`stream.*`).
    pub streams: Vec<Component>,
    /// Views (`view.*`).
    pub views: Vec<Component>,
    /// Pools (`pool.*`).
    pub pools: Vec<Component>,
    /// How many sources have reported.
    pub sources: usize,
}

/// The latest metric event of each source (bounded by [`SOURCES_MAX`]).
#[derive(Debug, Default)]
pub struct Services {
    latest: BTreeMap<String, MetricEvent>,
}

impl Services {
    /// Keeps `event` as its source's latest (an older one is ignored).
    pub fn observe(&mut self, event: MetricEvent) {
        if let Some(old) = self.latest.get(&event.source) {
            if old.t_us > event.t_us {
                return;
            }
        }
        if !self.latest.contains_key(&event.source) && self.latest.len() >= SOURCES_MAX {
            let oldest = self
                .latest
                .iter()
                .min_by_key(|(_, e)| e.t_us)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.latest.remove(&k);
            }
        }
        self.latest.insert(event.source.clone(), event);
    }

    /// The components at `now_us`.
    pub fn view(&self, now_us: i64) -> ServicesView {
        let mut v = ServicesView {
            sources: self.latest.len(),
            ..ServicesView::default()
        };
        for e in self.latest.values() {
            let age_s = ((now_us - e.t_us) as f64 / 1e6).max(0.0);
            let stale = age_s * 1e3 > (e.interval_ms.max(100) * STALE_INTERVALS) as f64;
            // Group the event's samples by (kind, labels).
            let mut groups: BTreeMap<(&'static str, String), BTreeMap<String, f64>> =
                BTreeMap::new();
            for s in &e.samples {
                let Some((kind, field)) = classify(&s.name) else {
                    continue;
                };
                let id = s
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                groups
                    .entry((kind, id))
                    .or_default()
                    .insert(field.to_string(), s.value);
            }
            for ((kind, id), fields) in groups {
                let state = state_of(kind, &fields, stale);
                let summary = summary_of(kind, &fields);
                let c = Component {
                    kind,
                    id,
                    source: e.source.clone(),
                    age_s,
                    state,
                    summary,
                    fields,
                };
                match kind {
                    "bridge" => v.bridges.push(c),
                    "stream producer" | "stream consumer" => v.streams.push(c),
                    "view" => v.views.push(c),
                    "pool" => v.pools.push(c),
                    _ => {}
                }
            }
        }
        v
    }
}

/// A series name's component kind and field.
fn classify(name: &str) -> Option<(&'static str, &str)> {
    const PREFIXES: [(&str, &str); 5] = [
        ("bridge.", "bridge"),
        ("stream.producer.", "stream producer"),
        ("stream.consumer.", "stream consumer"),
        ("view.", "view"),
        ("pool.", "pool"),
    ];
    PREFIXES
        .iter()
        .find_map(|(p, k)| name.strip_prefix(p).map(|f| (*k, f)))
}

/// A component's one-word state from its latest figures.
fn state_of(kind: &str, f: &BTreeMap<String, f64>, stale: bool) -> String {
    if stale {
        return "stale".into();
    }
    let get = |k: &str| f.get(k).copied().unwrap_or(0.0);
    match kind {
        "bridge" if get("failed_partitions") > 0.0 => {
            format!("failed {} partition(s)", get("failed_partitions"))
        }
        "bridge" if get("reconnects.rate") > 0.0 => "reconnecting".into(),
        "stream producer" if get("congested") > 0.0 => {
            format!("congested, {} stage(s)", get("stages"))
        }
        "stream consumer" if get("lost.rate") > 0.0 => "losing items".into(),
        _ => "running".into(),
    }
}

/// A count as text: whole numbers without decimals.
fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.1}")
    }
}

/// The one line of figures that matter for a component of `kind`; the
/// series it reads are those of the telemetry crate's table (a series
/// absent from the event is left out of the line).
fn summary_of(kind: &str, f: &BTreeMap<String, f64>) -> String {
    let part = |label: &str, key: &str| f.get(key).map(|v| format!("{label} {}", num(*v)));
    let rate = |key: &str| {
        f.get(&format!("{key}.rate"))
            .map(|v| format!(" ({}/s)", num((v * 10.0).round() / 10.0)))
            .unwrap_or_default()
    };
    let join =
        |parts: Vec<Option<String>>| parts.into_iter().flatten().collect::<Vec<_>>().join(", ");
    match kind {
        "bridge" => format!(
            "{}{} · {}",
            part("forwarded", "forwarded").unwrap_or_default(),
            rate("forwarded"),
            join(vec![
                part("duplicates absorbed", "duplicates_absorbed"),
                part("reconnects", "reconnects"),
                part("expired before read", "skipped_expired"),
                part("failed partitions", "failed_partitions"),
            ])
        ),
        "stream producer" => {
            let fill = f
                .get("memory_fill")
                .map(|v| format!("buffer {:.0}% of memory", v * 100.0));
            let spill = part("spilled", "spilled");
            let quality = join(vec![
                part("offered", "offered"),
                part("acked", "acked"),
                part("reduced away", "reduced_away"),
                part("aggregated", "aggregates"),
                part("compressed", "compressed"),
                part("shed", "shed"),
            ]);
            let flow = format!(
                "flow {}{}",
                if f.get("congested").copied().unwrap_or(0.0) > 0.0 {
                    "congested"
                } else {
                    "clear"
                },
                part(", stages", "stages").unwrap_or_default()
            );
            join(vec![
                fill,
                spill,
                (!quality.is_empty()).then(|| format!("quality: {quality}")),
                Some(flow),
            ])
        }
        "stream consumer" => join(vec![
            part("delivered", "delivered").map(|d| d + &rate("delivered")),
            part("reconstructed", "reconstructed_missing"),
            part("lost", "lost"),
            part("duplicates", "duplicates"),
            part("held", "held"),
            f.get("latency_ms").map(|v| format!("latency {v:.0} ms")),
        ]),
        "view" => join(vec![
            part("read", "items_read"),
            part("emitted", "emitted"),
            part("pending", "pending"),
            part("held", "held"),
        ]),
        _ => String::new(),
    }
}

/// Most pixels of a [`LoopImage`] (a larger image is refused by
/// [`LoopImage::gray`]; callers downsample first, see [`downsample_gray`]).
pub const IMAGE_PIXELS_MAX: usize = 256 * 256;
/// Most events a [`LoopStatus`] carries.
pub const LOOP_EVENTS_MAX: usize = 30;

/// One event of an in-process loop's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoopEvent {
    /// When, µs since the Unix epoch.
    pub t_us: i64,
    /// What kind (`phase`, `model`, `fault`, `invalidation`, `rollback`).
    pub kind: String,
    /// What happened.
    pub text: String,
}

/// A grayscale image for the page (row-major, one byte per pixel).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoopImage {
    /// What it shows (`scan-7, edge model v3`).
    pub label: String,
    /// Width, pixels.
    pub width: usize,
    /// Height, pixels.
    pub height: usize,
    /// The pixels, `width × height` bytes.
    pub gray: Vec<u8>,
}

impl LoopImage {
    /// An image of `values` (row-major, `width` per row) scaled from their
    /// least (black) to their most (white); `None` if the sizes disagree, it
    /// is empty or larger than [`IMAGE_PIXELS_MAX`].
    ///
    /// ```
    /// use diaspora_dashboard::core::LoopImage;
    /// let i = LoopImage::gray("x", 2, &[0.0, 1.0, 0.5, 1.0]).unwrap();
    /// assert_eq!(i.gray, [0, 255, 128, 255]);
    /// ```
    pub fn gray(label: impl Into<String>, width: usize, values: &[f32]) -> Option<LoopImage> {
        if width == 0 || values.is_empty() || values.len() % width != 0 {
            return None;
        }
        if values.len() > IMAGE_PIXELS_MAX {
            return None;
        }
        let finite = values.iter().copied().filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let span = if hi > lo { hi - lo } else { 1.0 };
        let gray = values
            .iter()
            .map(|v| {
                if v.is_finite() {
                    (((v - lo) / span) * 255.0).round().clamp(0.0, 255.0) as u8
                } else {
                    0
                }
            })
            .collect();
        Some(LoopImage {
            label: label.into(),
            width,
            height: values.len() / width,
            gray,
        })
    }
}

/// Keeps every `step`-th row and column of a `width`-wide image so that at
/// most `side_max` remain each way; returns (width, values).
pub fn downsample_gray(width: usize, values: &[f32], side_max: usize) -> (usize, Vec<f32>) {
    if width == 0 || values.is_empty() {
        return (0, Vec::new());
    }
    let height = values.len() / width;
    let step = width.max(height).div_ceil(side_max.max(1)).max(1);
    let out_w = width.div_ceil(step);
    let mut out = Vec::with_capacity(out_w * height.div_ceil(step));
    for r in (0..height).step_by(step) {
        for c in (0..width).step_by(step) {
            out.push(values[r * width + c]);
        }
    }
    (out_w, out)
}

/// What an in-process loop (the demo) says of itself each interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoopStatus {
    /// The phase now (`warm-up`, `inference and fine-tuning`, …).
    pub phase: String,
    /// Its figures in one line.
    pub summary: String,
    /// The latest events, newest first (at most [`LOOP_EVENTS_MAX`]).
    pub events: Vec<LoopEvent>,
    /// The latest reconstruction.
    pub image: Option<LoopImage>,
}

/// Most entries a [`Tail`] keeps.
pub const TAIL_MAX: usize = 40;

/// One event read from a tailed topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TailEntry {
    /// Where it is: `topic/partition/offset`.
    pub item: String,
    /// When it was produced, µs since the Unix epoch (0: unknown).
    pub t_us: i64,
    /// Its kind: the JSON payload's `kind`, else the metadata's `kind`, else empty.
    pub kind: String,
    /// A short text: the metadata (`k=v …`) and, for a JSON payload, its fields.
    pub text: String,
}

/// The last [`TAIL_MAX`] events of a topic, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tail {
    /// Newest first.
    pub entries: VecDeque<TailEntry>,
}

impl Tail {
    /// Adds an event, dropping the oldest beyond the bound.
    pub fn push(&mut self, e: TailEntry) {
        self.entries.push_front(e);
        self.entries.truncate(TAIL_MAX);
    }
}

/// Longest text of a [`TailEntry`], characters.
pub const TAIL_TEXT_CHARS_MAX: usize = 400;

/// Summarises an event's metadata and payload as a [`TailEntry`]'s kind
/// and text: a JSON object payload shows its scalar fields; any other
/// payload only its length.
pub fn summarise(meta: &[(String, String)], payload: &[u8]) -> (String, String) {
    let mut kind = meta
        .iter()
        .find(|(k, _)| k == "kind")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut parts: Vec<String> = meta.iter().map(|(k, v)| format!("{k}={v}")).collect();
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(serde_json::Value::Object(m)) => {
            if let Some(k) = m.get("kind").and_then(|k| k.as_str()) {
                kind = k.to_string();
            }
            for (k, v) in &m {
                match v {
                    serde_json::Value::Array(_) | serde_json::Value::Object(_) => {}
                    serde_json::Value::String(s) => parts.push(format!("{k}={s}")),
                    other => parts.push(format!("{k}={other}")),
                }
            }
        }
        _ if !payload.is_empty() => parts.push(format!("{} payload bytes", payload.len())),
        _ => {}
    }
    let mut text = parts.join(" ");
    if text.chars().count() > TAIL_TEXT_CHARS_MAX {
        text = text.chars().take(TAIL_TEXT_CHARS_MAX).collect::<String>() + "…";
    }
    (kind, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diaspora_telemetry::MetricSample;

    fn part(partition: u32, start: u64, next: u64, size: u64) -> PartitionSample {
        PartitionSample {
            partition,
            start_offset: start,
            next_offset: next,
            size_bytes: size,
        }
    }

    fn sample(t_us: i64, parts: Vec<PartitionSample>) -> Sample {
        Sample {
            t_us,
            topics: vec![TopicSample {
                name: "t".into(),
                retention_bytes: 0,
                retention_ms: 0,
                partitions: parts,
            }],
        }
    }

    #[test]
    fn rates_come_from_two_samples() {
        let a = sample(1_000_000, vec![part(0, 0, 10, 1000), part(1, 0, 0, 0)]);
        let b = sample(3_000_000, vec![part(0, 0, 30, 3000), part(1, 0, 4, 400)]);
        let first = topic_views(None, &a);
        assert_eq!(
            first[0].items_per_s, 0.0,
            "no rate without a previous sample"
        );
        let v = topic_views(Some(&a), &b);
        assert_eq!(v[0].partitions[0].items_per_s, 10.0);
        assert_eq!(v[0].partitions[0].bytes_per_s, 1000.0);
        assert_eq!(v[0].items_per_s, 12.0);
        assert_eq!(v[0].bytes_per_s, 1200.0);
        assert_eq!(v[0].items, 34);
        assert_eq!(v[0].size_bytes, 3400);
    }

    #[test]
    fn retention_shrinking_the_size_still_counts_what_was_appended() {
        // 100-byte records; retention dropped 50 items while 20 came in.
        let a = sample(0, vec![part(0, 0, 100, 10_000)]);
        let b = sample(1_000_000, vec![part(0, 50, 120, 7_000)]);
        let v = topic_views(Some(&a), &b);
        assert_eq!(v[0].items_per_s, 20.0);
        assert_eq!(v[0].bytes_per_s, 2000.0);
    }

    #[test]
    fn a_recreated_topic_or_a_clock_step_gives_no_negative_rate() {
        let a = sample(1_000_000, vec![part(0, 0, 100, 10_000)]);
        let b = sample(2_000_000, vec![part(0, 0, 5, 500)]);
        let v = topic_views(Some(&a), &b);
        assert_eq!((v[0].items_per_s, v[0].bytes_per_s), (0.0, 0.0));
        let back = sample(500_000, vec![part(0, 0, 200, 20_000)]);
        let v = topic_views(Some(&a), &back);
        assert_eq!((v[0].items_per_s, v[0].bytes_per_s), (0.0, 0.0));
        // A new partition has no rate yet.
        let c = sample(2_000_000, vec![part(0, 0, 100, 10_000), part(1, 0, 9, 9)]);
        assert_eq!(topic_views(Some(&a), &c)[0].partitions[1].items_per_s, 0.0);
    }

    /// (name, value, labels)
    type Series<'a> = (&'a str, f64, &'a [(&'a str, &'a str)]);

    fn event(source: &str, t_us: i64, samples: &[Series]) -> MetricEvent {
        MetricEvent {
            source: source.into(),
            t_us,
            interval_ms: 1000,
            samples: samples
                .iter()
                .map(|(n, v, l)| MetricSample {
                    name: n.to_string(),
                    value: *v,
                    unit: String::new(),
                    labels: l
                        .iter()
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn services_group_series_by_kind_and_labels_and_go_stale() {
        let mut s = Services::default();
        s.observe(event(
            "bridge:a",
            10_000_000,
            &[
                ("bridge.forwarded", 5.0, &[("bridge", "edge-hpc")]),
                ("bridge.failed_partitions", 0.0, &[("bridge", "edge-hpc")]),
                ("node.topics", 3.0, &[("node", "x")]),
            ],
        ));
        s.observe(event(
            "stream:p",
            10_000_000,
            &[
                (
                    "stream.producer.congested",
                    1.0,
                    &[("topic", "f"), ("partition", "0")],
                ),
                (
                    "stream.producer.stages",
                    2.0,
                    &[("topic", "f"), ("partition", "0")],
                ),
            ],
        ));
        let v = s.view(11_000_000);
        assert_eq!(v.sources, 2);
        assert_eq!(v.bridges.len(), 1);
        assert_eq!(v.bridges[0].id, "bridge=edge-hpc");
        assert_eq!(v.bridges[0].state, "running");
        assert_eq!(v.bridges[0].fields["forwarded"], 5.0);
        assert_eq!(v.streams[0].kind, "stream producer");
        assert_eq!(v.streams[0].state, "congested, 2 stage(s)");
        assert_eq!(v.streams[0].summary, "flow congested, stages 2");
        assert_eq!(v.bridges[0].summary, "forwarded 5 · failed partitions 0");
        assert!(v.pools.is_empty() && v.views.is_empty());
        // An older event of the same source is ignored; silence goes stale.
        s.observe(event("bridge:a", 1, &[]));
        assert_eq!(s.view(11_000_000).bridges.len(), 1);
        assert_eq!(s.view(20_000_000).bridges[0].state, "stale");
    }

    #[test]
    fn services_keep_a_bounded_number_of_sources() {
        let mut s = Services::default();
        for i in 0..(SOURCES_MAX as i64 + 10) {
            s.observe(event(&format!("s{i}"), i, &[]));
        }
        assert_eq!(s.latest.len(), SOURCES_MAX);
        assert!(!s.latest.contains_key("s0"), "the oldest goes first");
    }

    #[test]
    fn images_are_scaled_bounded_and_downsampled() {
        assert!(LoopImage::gray("x", 3, &[1.0; 4]).is_none(), "ragged");
        assert!(LoopImage::gray("x", 0, &[]).is_none());
        let big = vec![0.0; IMAGE_PIXELS_MAX + 1];
        assert!(LoopImage::gray("x", 1, &big).is_none());
        let flat = LoopImage::gray("x", 2, &[3.0, 3.0, f32::NAN, 3.0]).unwrap();
        assert_eq!(flat.gray, [0, 0, 0, 0]);
        assert_eq!(flat.height, 2);
        let v: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let (w, d) = downsample_gray(10, &v, 4);
        assert_eq!(w, 4);
        assert_eq!(d.len(), 16);
        assert_eq!(&d[..4], &[0.0, 3.0, 6.0, 9.0]);
        assert_eq!(d[4], 30.0);
        let (w, d) = downsample_gray(10, &v, 100);
        assert_eq!((w, d.len()), (10, 100));
    }

    #[test]
    fn tails_are_bounded_and_summaries_read_json_kinds() {
        let mut t = Tail::default();
        for i in 0..(TAIL_MAX + 5) {
            t.push(TailEntry {
                item: format!("x/0/{i}"),
                t_us: 0,
                kind: String::new(),
                text: String::new(),
            });
        }
        assert_eq!(t.entries.len(), TAIL_MAX);
        assert_eq!(t.entries[0].item, format!("x/0/{}", TAIL_MAX + 4));
        let (kind, text) = summarise(
            &[("scan".into(), "3".into())],
            br#"{"kind":"alert","metric":"quic.rtt_ms","value":12.5,"forecast":[1,2]}"#,
        );
        assert_eq!(kind, "alert");
        assert_eq!(text, "scan=3 kind=alert metric=quic.rtt_ms value=12.5");
        let (kind, text) = summarise(&[("kind".into(), "model".into())], &[0u8; 7]);
        assert_eq!(
            (kind.as_str(), text.as_str()),
            ("model", "kind=model 7 payload bytes")
        );
        let long = format!("{{\"a\":\"{}\"}}", "x".repeat(1000));
        assert!(summarise(&[], long.as_bytes()).1.chars().count() <= TAIL_TEXT_CHARS_MAX + 1);
    }
}
