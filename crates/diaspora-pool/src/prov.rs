//! Pool runs as provenance activities: for every task result, an activity
//! record `pool/NAME/KEY` (tags: pool, worker, site, attempts, ok) that
//! *used* the task's input items and *generated* the result item.
//!
//! The store is blocking, so records go through a bounded queue to one
//! thread; when the queue is full a run is not recorded and is counted
//! (`dropped`), never stalling the pool.

use diaspora_fabric::ItemRef;
use diaspora_provenance::model::{EdgeKind, Kind, Record, TagValue};
use diaspora_provenance::Provenance;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

/// One task run to record.
#[derive(Debug, Clone)]
pub struct Run {
    /// Pool.
    pub pool: String,
    /// Task key.
    pub key: String,
    /// Worker of the final attempt.
    pub worker: String,
    /// Attempts charged.
    pub attempts: u32,
    /// Succeeded.
    pub ok: bool,
    /// Input items, `topic/partition/offset`.
    pub inputs: Vec<String>,
    /// Where the result landed.
    pub result: ItemRef,
    /// When it finished, µs.
    pub time_us: i64,
}

/// Queue length.
pub const QUEUE_MAX: usize = 10_000;

/// The recorder.
pub struct Recorder {
    tx: Option<SyncSender<Run>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Runs recorded.
    pub recorded: Arc<AtomicU64>,
    /// Runs not recorded (queue full, or a store error).
    pub dropped: Arc<AtomicU64>,
}

fn parse_loc(s: &str) -> Option<ItemRef> {
    let mut it = s.rsplitn(3, '/');
    let offset = it.next()?.parse().ok()?;
    let partition = it.next()?.parse().ok()?;
    let topic = it.next()?;
    (!topic.is_empty()).then(|| ItemRef {
        topic: topic.into(),
        partition,
        offset,
    })
}

fn item_id(p: &mut Provenance, loc: &ItemRef) -> diaspora_provenance::model::Result<i64> {
    let name = format!("{}/{}/{}", loc.topic, loc.partition, loc.offset);
    if let Some(id) = p.find_name(&name, 1)?.first() {
        return Ok(*id);
    }
    p.add(Record::item(loc.clone()))
}

fn record(p: &mut Provenance, r: &Run) -> diaspora_provenance::model::Result<()> {
    let mut parents = Vec::new();
    for i in &r.inputs {
        if let Some(loc) = parse_loc(i) {
            parents.push((item_id(p, &loc)?, EdgeKind::Used));
        }
    }
    let site = r.worker.rsplit_once('-').map_or("", |(s, _)| s).to_string();
    let mut act = Record::new(Kind::Activity, format!("pool/{}/{}", r.pool, r.key))
        .tag("pool", TagValue::Str(r.pool.clone()))
        .tag("task", TagValue::Str(r.key.clone()))
        .tag("worker", TagValue::Str(r.worker.clone()))
        .tag("site", TagValue::Str(site))
        .tag("attempts", TagValue::Int(i64::from(r.attempts)))
        .tag("ok", TagValue::Bool(r.ok))
        .at(r.time_us);
    act.parents = parents;
    let act = p.add(act)?;
    let out = p.add(Record::item(r.result.clone()).at(r.time_us))?;
    p.derive(out, act, EdgeKind::Generated)?;
    Ok(())
}

impl Recorder {
    /// Opens the store at `url` (SQLite path or postgres://…) and starts the
    /// recording thread.
    pub fn open(url: &str) -> Result<Recorder, String> {
        let mut prov = Provenance::open(url).map_err(|e| format!("provenance store {url}: {e}"))?;
        let (tx, rx) = sync_channel::<Run>(QUEUE_MAX);
        let recorded = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let (rec, drop_) = (recorded.clone(), dropped.clone());
        let thread = std::thread::Builder::new()
            .name("pool-provenance".into())
            .spawn(move || {
                for run in rx {
                    match record(&mut prov, &run) {
                        Ok(()) => rec.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            tracing::warn!(error = %e, key = %run.key, "pool run not recorded");
                            drop_.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
            .map_err(|e| format!("provenance thread: {e}"))?;
        Ok(Recorder {
            tx: Some(tx),
            thread: Some(thread),
            recorded,
            dropped,
        })
    }

    /// Queues a run (never blocks).
    pub fn record(&self, run: Run) {
        if let Some(tx) = &self.tx {
            match tx.try_send(run) {
                Ok(()) => {}
                Err(TrySendError::Full(r)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(key = %r.key, "provenance queue full ({QUEUE_MAX}): run not recorded");
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Records what is queued and stops the thread.
    pub fn finish(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_an_activity_that_used_its_inputs_and_generated_its_result() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("prov.sqlite").display().to_string();
        let r = Recorder::open(&url).unwrap();
        r.record(Run {
            pool: "p".into(),
            key: "scan-7".into(),
            worker: "hpc-3".into(),
            attempts: 2,
            ok: true,
            inputs: vec!["frames/0/7".into(), "frames/1/9".into(), "garbage".into()],
            result: ItemRef {
                topic: "pool.p.results".into(),
                partition: 0,
                offset: 41,
            },
            time_us: 1_000,
        });
        let recorded = r.recorded.clone();
        r.finish();
        assert_eq!(recorded.load(Ordering::Relaxed), 1);
        let mut p = Provenance::open(&url).unwrap();
        let act = p.find_name("pool/p/scan-7", 2).unwrap();
        assert_eq!(act.len(), 1);
        let rec = p.get(act[0]).unwrap();
        assert_eq!(rec.tags["worker"], TagValue::Str("hpc-3".into()));
        assert_eq!(rec.tags["site"], TagValue::Str("hpc".into()));
        assert_eq!(
            rec.parents.len(),
            2,
            "two inputs used; the bad location is skipped"
        );
        assert!(rec.parents.iter().all(|(_, k)| *k == EdgeKind::Used));
        let out = p.find_name("pool.p.results/0/41", 1).unwrap();
        let out = p.get(out[0]).unwrap();
        assert_eq!(out.parents, vec![(act[0], EdgeKind::Generated)]);
        assert_eq!(parse_loc("a/b/c/0/5").unwrap().topic.as_ref(), "a/b/c");
    }
}
