//! `diaspora prov bench …`: ingest, cascade, lineage-query and Braid-DB's
//! Mascot workload, each on a fresh store (a temporary SQLite file unless a
//! store URL is given). Figures are printed as JSON by the CLI.

use crate::model::*;
use crate::store::{Direction, Provenance, Target};
use serde::Serialize;
use std::time::Instant;

/// A benchmark's store: a fresh temporary SQLite file, or the given URL
/// (which should name an empty store).
pub struct BenchStore {
    /// The store.
    pub prov: Provenance,
    /// Its description.
    pub describe: String,
    _dir: Option<tempfile::TempDir>,
}

impl BenchStore {
    /// Opens `url`, or a temporary SQLite store when `None`.
    pub fn open(url: Option<&str>) -> Result<BenchStore> {
        let (prov, dir) = match url {
            Some(u) => (Provenance::open(u)?, None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("diaspora-prov-bench")
                    .tempdir()
                    .map_err(|e| ProvError::Store(format!("temporary directory: {e}")))?;
                let p = dir.path().join("prov.sqlite").display().to_string();
                (Provenance::open(&p)?, Some(dir))
            }
        };
        let mut prov = prov;
        let describe = prov.backend().describe();
        if prov.counts()?.records != 0 {
            return Err(ProvError::Invalid(format!(
                "{describe} is not empty: benchmarks need an empty store"
            )));
        }
        Ok(BenchStore {
            prov,
            describe,
            _dir: dir,
        })
    }
}

/// `prov bench ingest`.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    /// Store.
    pub store: String,
    /// Records written (streamed-item records with one derivation each).
    pub records: u64,
    /// Records per transaction.
    pub batch: usize,
    /// Seconds, from the first record built to the last transaction durable.
    pub elapsed_s: f64,
    /// Durable, committed records per second.
    pub records_per_s: f64,
    /// Edges written.
    pub edges: u64,
}

/// Ingests `records` streamed-item records in transactions of `batch`,
/// each derived from the item recorded 1024 before it (the first 1024 from
/// source facts); records are built inside the timed loop.
pub fn ingest(url: Option<&str>, records: u64, batch: usize) -> Result<IngestReport> {
    let batch = batch.max(1);
    let mut s = BenchStore::open(url)?;
    let p = &mut s.prov;
    let sources = p.add_batch(
        (0..1024)
            .map(|i| Record::new(Kind::Fact, format!("source-{i}")))
            .collect(),
    )?;
    let topic = "bench.items".to_string();
    let mut ids: Vec<RecordId> = Vec::with_capacity(records as usize);
    let mut offset = [0u64; 4];
    let t0 = Instant::now();
    let mut done = 0u64;
    while done < records {
        let n = (records - done).min(batch as u64);
        let recs: Vec<Record> = (done..done + n)
            .map(|o| {
                // Four partitions; a batch holds each partition's items
                // together, in offset order (as the lineage recorder
                // arranges its batches).
                let k = o - done;
                let per = n.div_ceil(4);
                let part = k / per;
                let mut r = Record::item(ItemRef {
                    topic: topic.as_str().into(),
                    partition: part as u32,
                    offset: offset[part as usize] + k % per,
                });
                r.time_us = 1_700_000_000_000_000 + o as i64;
                // Derived from the item recorded 1024 before it (as a
                // reconstruction derives from a pattern that arrived a little
                // earlier); the first 1024 from the source facts.
                let parent = if o < 1024 {
                    sources[o as usize]
                } else if o - 1024 >= done {
                    -((o - 1024 - done) as i64 + 1) // earlier in this batch
                } else {
                    ids[(o - 1024) as usize]
                };
                r.parents.push((parent, EdgeKind::Derived));
                r
            })
            .collect();
        ids.extend(p.add_batch(recs)?);
        let per = n.div_ceil(4);
        for (part, off) in offset.iter_mut().enumerate() {
            *off += n.saturating_sub(part as u64 * per).min(per);
        }
        done += n;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let c = p.counts()?;
    if c.records as u64 != records + 1024 {
        return Err(ProvError::Corrupt(format!(
            "{} records stored, {} written",
            c.records,
            records + 1024
        )));
    }
    Ok(IngestReport {
        store: s.describe,
        records,
        batch,
        elapsed_s: elapsed,
        records_per_s: records as f64 / elapsed,
        edges: c.edges as u64,
    })
}

/// `prov bench cascade`.
#[derive(Debug, Clone, Serialize)]
pub struct CascadeReport {
    /// Store.
    pub store: String,
    /// Descendants of the root.
    pub descendants: u64,
    /// Children per record in the tree.
    pub fanout: u64,
    /// Seconds building the tree (not part of the figure).
    pub build_s: f64,
    /// Seconds for the cascading invalidation: walk, durable write of
    /// every invalid row with its parent, event recorded.
    pub cascade_s: f64,
    /// Records the cascade newly invalidated (root included).
    pub invalidated: u64,
}

/// Builds a tree of `descendants` under one root (`fanout` children per
/// record) and times invalidating the root.
pub fn cascade(url: Option<&str>, descendants: u64, fanout: u64) -> Result<CascadeReport> {
    let fanout = fanout.max(1);
    let mut s = BenchStore::open(url)?;
    let p = &mut s.prov;
    let t0 = Instant::now();
    let root = p.add(Record::new(Kind::Fact, "root"))?;
    // Level by level: every record of a level gets `fanout` children.
    let mut level = vec![root];
    let mut made = 0u64;
    while made < descendants {
        let mut next = Vec::new();
        let mut batch = Vec::new();
        'outer: for &parent in &level {
            for _ in 0..fanout {
                if made + batch.len() as u64 >= descendants {
                    break 'outer;
                }
                let mut r = Record::new(Kind::Data, String::new());
                r.parents.push((parent, EdgeKind::Derived));
                batch.push(r);
                if batch.len() == 100_000 {
                    made += batch.len() as u64;
                    next.extend(p.add_batch(std::mem::take(&mut batch))?);
                }
            }
        }
        made += batch.len() as u64;
        next.extend(p.add_batch(batch)?);
        level = next;
    }
    let build_s = t0.elapsed().as_secs_f64();
    let rep = p.invalidate(&Target::Record(root), "benchmark", true)?;
    if rep.invalidated != descendants + 1 {
        return Err(ProvError::Corrupt(format!(
            "cascade invalidated {} of {}",
            rep.invalidated,
            descendants + 1
        )));
    }
    Ok(CascadeReport {
        store: s.describe,
        descendants,
        fanout,
        build_s,
        cascade_s: rep.elapsed_s,
        invalidated: rep.invalidated,
    })
}

/// `prov bench lineage`.
#[derive(Debug, Clone, Serialize)]
pub struct LineageReport {
    /// Store.
    pub store: String,
    /// Records in the store.
    pub records: u64,
    /// Depth of each query.
    pub depth: usize,
    /// Queries timed.
    pub queries: usize,
    /// Records returned per query (mean).
    pub records_per_query: f64,
    /// Median query time, µs.
    pub query_us_p50: f64,
    /// 99th percentile, µs.
    pub query_us_p99: f64,
    /// Slowest, µs.
    pub query_us_max: f64,
}

/// Builds `layers = depth + 1` layers of `width` items; each item derives
/// from one item of the layer above and from one of 8 activities of its
/// layer (as streamed items do), then times upstream lineage walks of
/// `depth` levels from random items of the last layer.
pub fn lineage(
    url: Option<&str>,
    depth: usize,
    width: u64,
    queries: usize,
) -> Result<LineageReport> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut s = BenchStore::open(url)?;
    let p = &mut s.prov;
    let mut prev: Vec<RecordId> = Vec::new();
    for layer in 0..=depth {
        let acts = p.add_batch(
            (0..8)
                .map(|a| Record::new(Kind::Activity, format!("stage-{layer}-{a}")))
                .collect(),
        )?;
        let mut ids = Vec::with_capacity(width as usize);
        let mut o = 0u64;
        while o < width {
            let n = (width - o).min(100_000);
            let recs: Vec<Record> = (o..o + n)
                .map(|i| {
                    let mut r = Record::item(ItemRef {
                        topic: format!("layer{layer}").into(),
                        partition: 0,
                        offset: i,
                    });
                    if !prev.is_empty() {
                        r.parents
                            .push((prev[rng.gen_range(0..prev.len())], EdgeKind::Derived));
                    }
                    r.parents
                        .push((acts[(i % 8) as usize], EdgeKind::Generated));
                    r
                })
                .collect();
            ids.extend(p.add_batch(recs)?);
            o += n;
        }
        prev = ids;
    }
    let mut lat = Vec::with_capacity(queries);
    let mut total = 0usize;
    for _ in 0..queries {
        let leaf = prev[rng.gen_range(0..prev.len())];
        let t = Instant::now();
        let l = p.lineage(leaf, Direction::Up, Some(depth))?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        let deepest = l.nodes.iter().map(|n| n.1).max().unwrap_or(0);
        if deepest != depth {
            return Err(ProvError::Corrupt(format!(
                "walk reached depth {deepest}, not {depth}"
            )));
        }
        total += l.nodes.len();
    }
    lat.sort_by(f64::total_cmp);
    let q = |f: f64| lat[((lat.len() as f64 - 1.0) * f).round() as usize];
    Ok(LineageReport {
        store: s.describe,
        records: p.counts()?.records as u64,
        depth,
        queries,
        records_per_query: total as f64 / queries.max(1) as f64,
        query_us_p50: q(0.5),
        query_us_p99: q(0.99),
        query_us_max: *lat.last().unwrap_or(&0.0),
    })
}

/// `prov bench mascot`.
#[derive(Debug, Clone, Serialize)]
pub struct MascotReport {
    /// Store.
    pub store: String,
    /// C, M, N, E, U.
    pub configs: u64,
    /// Models.
    pub models: u64,
    /// Cycles.
    pub cycles: u64,
    /// Experiment runs per cycle.
    pub experiments: u64,
    /// URIs per record.
    pub uris: u64,
    /// Records written (configurations, models and their versions, runs, data).
    pub records: u64,
    /// Derivation rows written (used, generated, derived, trained, revision).
    pub edges: u64,
    /// URI rows written.
    pub uri_rows: u64,
    /// records + edges + URI rows.
    pub rows: u64,
    /// Seconds.
    pub elapsed_s: f64,
    /// Rows per second, durable.
    pub rows_per_s: f64,
    /// What Braid-DB measured for the same parameters, where known (s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub braid_db_s: Option<f64>,
}

/// Braid-DB's Mascot workload: C configurations; M models, each depending
/// on one configuration; N cycles of E experiment runs, each using one
/// configuration and generating one data record; after every cycle every
/// model gets a new version exposed to that cycle's data. Every record
/// carries U URIs. One transaction per cycle phase.
pub fn mascot(url: Option<&str>, c: u64, m: u64, n: u64, e: u64, u: u64) -> Result<MascotReport> {
    let mut s = BenchStore::open(url)?;
    let p = &mut s.prov;
    let with_uris = |mut r: Record, what: &str, i: u64| {
        for k in 0..u {
            r.uris.push(format!("globus://mascot/{what}/{i}/{k}"));
        }
        r
    };
    let t0 = Instant::now();
    let configs = p.add_batch(
        (0..c)
            .map(|i| with_uris(Record::new(Kind::Fact, format!("config-{i}")), "config", i))
            .collect(),
    )?;
    let models = p.add_batch(
        (0..m)
            .map(|i| {
                with_uris(
                    Record::new(Kind::Model, format!("model-{i}"))
                        .parent(configs[(i % c.max(1)) as usize], EdgeKind::Derived),
                    "model",
                    i,
                )
            })
            .collect(),
    )?;
    for cycle in 0..n {
        // E runs (activity using a configuration) and their data.
        let mut recs = Vec::with_capacity(2 * e as usize);
        for x in 0..e {
            let i = cycle * e + x;
            recs.push(with_uris(
                Record::new(Kind::Activity, format!("run-{i}"))
                    .parent(configs[(i % c.max(1)) as usize], EdgeKind::Used),
                "run",
                i,
            ));
            recs.push(with_uris(
                Record::new(Kind::Data, format!("data-{i}"))
                    .parent(-(recs.len() as i64), EdgeKind::Generated),
                "data",
                i,
            ));
        }
        let ids = p.add_batch(recs)?;
        let data: Vec<RecordId> = ids.iter().skip(1).step_by(2).copied().collect();
        let updates: Vec<(RecordId, &[RecordId])> =
            models.iter().map(|&mdl| (mdl, data.as_slice())).collect();
        // A version is a new record of the model (Braid-DB updates the
        // model's row); the model's URIs stay on its first record.
        p.update_models(&updates)?;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let counts = p.counts()?;
    let records = counts.records as u64;
    let edges = counts.edges as u64;
    let uri_rows = (c + m + 2 * n * e) * u;
    let rows = records + edges + uri_rows;
    Ok(MascotReport {
        store: s.describe,
        configs: c,
        models: m,
        cycles: n,
        experiments: e,
        uris: u,
        records,
        edges,
        uri_rows,
        rows,
        elapsed_s: elapsed,
        rows_per_s: rows as f64 / elapsed,
        braid_db_s: (c == 100 && m == 1000 && n == 5 && e == 4000 && u == 3).then_some(169.9),
    })
}
