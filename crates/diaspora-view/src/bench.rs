//! The pure join engine's throughput (`diaspora view bench`): members of
//! two sources arrive interleaved, keys cycle over a window of open scan
//! positions, and every member completes or waits as in a live
//! ptychography run. No I/O: this is the engine's ceiling.

use crate::engine::{JoinEngine, Member};
use crate::spec::ViewSpec;
use crate::ViewError;
use serde::Serialize;
use std::time::Instant;

/// One join shape's figures.
#[derive(Debug, Clone, Serialize)]
pub struct JoinFigures {
    /// Patterns per view item (K in K:1).
    pub k: u32,
    /// View items emitted.
    pub view_items: u64,
    /// Members offered.
    pub members: u64,
    /// Seconds.
    pub elapsed_s: f64,
    /// View items per second.
    pub view_items_per_s: f64,
    /// Members per second.
    pub members_per_s: f64,
}

/// Runs `items` view items of shape K:1 through a fresh engine.
pub fn join(items: u64, k: u32, open_keys: u64) -> Result<JoinFigures, ViewError> {
    let spec = ViewSpec::new("bench")
        .source("patterns", "patterns", "scan", k)
        .source("recons", "recons", "scan", 1);
    let mut e = JoinEngine::new(spec)?;
    let keys: Vec<String> = (0..items).map(|i| format!("scan-{i}")).collect();
    let open = open_keys.max(1);
    let mut next = [0u64; 2];
    let mut emitted = 0u64;
    let mut members = 0u64;
    let mut out = Vec::with_capacity(16);
    let t0 = Instant::now();
    // Patterns for key i arrive while reconstructions for key i - open do:
    // `open` keys are partial at any time. View items are handed on (here:
    // dropped) as they come, as a consumer would.
    let mut offer = |source: u32, key: u64, now: u64| -> Result<(), ViewError> {
        next[source as usize] += 1;
        let m = Member::at(source, 0, next[source as usize], now as i64);
        emitted += e.offer(&keys[key as usize], m, now as i64, &mut out)? as u64;
        out.clear();
        members += 1;
        Ok(())
    };
    for i in 0..items + open {
        if i < items {
            for _ in 0..k {
                offer(0, i, i)?;
            }
        }
        if i >= open {
            offer(1, i - open, i)?;
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    if emitted != items {
        return Err(ViewError::Limit(format!(
            "bench emitted {emitted} of {items} view items"
        )));
    }
    Ok(JoinFigures {
        k,
        view_items: emitted,
        members,
        elapsed_s: elapsed,
        view_items_per_s: emitted as f64 / elapsed,
        members_per_s: members as f64 / elapsed,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bench_emits_every_item() {
        for k in [1, 3] {
            let f = super::join(500, k, 16).unwrap();
            assert_eq!((f.view_items, f.members), (500, 500 * (k as u64 + 1)));
        }
    }
}

#[cfg(feature = "fabric")]
/// Figures of a view running on a real (embedded) node, against a plain
/// consumer reading the same items in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct FabricFigures {
    /// Patterns per view item.
    pub k: u32,
    /// View items delivered (and acknowledged).
    pub view_items: u64,
    /// Source items read by the view.
    pub members: u64,
    /// Payload bytes of the members delivered.
    pub payload_bytes_delivered: u64,
    /// Payload bytes the view copied (it shares the fetched bytes).
    pub payload_bytes_copied: u64,
    /// Reference bytes per view item on the output topic.
    pub reference_bytes_per_item: f64,
    /// Seconds the view took.
    pub view_s: f64,
    /// Source items per second through the view.
    pub view_members_per_s: f64,
    /// Seconds a plain consumer took to read the same items.
    pub baseline_s: f64,
    /// Source items per second through the plain consumer.
    pub baseline_members_per_s: f64,
}

#[cfg(feature = "fabric")]
/// Streams `items` view items' worth of members (K patterns of
/// `payload_bytes`, one reconstruction) into an embedded node, then reads
/// them once with plain consumers (the baseline) and once through a view
/// that publishes its references, delivering and acknowledging every item.
pub async fn fabric(items: u64, k: u32, payload_bytes: usize) -> Result<FabricFigures, ViewError> {
    use crate::runner::{View, ViewOptions};
    use diaspora_fabric::{
        ensure_topic, Client, ClientConfig, Consumer, ConsumerConfig, Node, NodeConfig, Producer,
        ProducerConfig, TopicSettings,
    };
    let fabric = |e: diaspora_fabric::FabricError| ViewError::Fabric {
        context: "benchmark".into(),
        source: e,
    };
    let dir = std::env::temp_dir().join(format!("diaspora-view-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = NodeConfig::new(&dir);
    cfg.admin_listen = None;
    let node = Node::start(cfg).await.map_err(fabric)?;
    let run = async {
        for t in ["patterns", "recons", "view.bench"] {
            ensure_topic(node.broker(), t, &TopicSettings::with_partitions(1))
                .await
                .map_err(fabric)?;
        }
        let client = Client::connect(ClientConfig::new(node.data_addr(), node.ca_file()))
            .await
            .map_err(fabric)?;
        let payload = bytes::Bytes::from(vec![7u8; payload_bytes]);
        for (topic, per) in [("patterns", k as u64), ("recons", 1)] {
            let p = Producer::new(&client, ProducerConfig::new(topic))
                .await
                .map_err(fabric)?;
            for i in 0..items * per {
                let mut it = diaspora_fabric::item::payload_item(payload.clone());
                it.metadata.insert(
                    "scan".into(),
                    diaspora_fabric::item::meta::int((i / per) as i64),
                );
                p.send_unacked(None, it).await.map_err(fabric)?;
            }
            p.close().await.map_err(fabric)?;
        }
        let total = items * (k as u64 + 1);
        // Baseline: plain consumers read every member.
        let t0 = Instant::now();
        let mut n = 0u64;
        for topic in ["patterns", "recons"] {
            let mut c = Consumer::assign(&client, ConsumerConfig::new(topic), &[])
                .await
                .map_err(fabric)?;
            let want = if topic == "patterns" {
                items * k as u64
            } else {
                items
            };
            for _ in 0..want {
                c.poll(std::time::Duration::from_secs(30))
                    .await
                    .map_err(fabric)?
                    .ok_or_else(|| ViewError::Bench("baseline: items missing".into()))?;
                n += 1;
            }
            c.close().await;
        }
        let baseline_s = t0.elapsed().as_secs_f64();
        // The view.
        let spec = ViewSpec::new("bench")
            .source("patterns", "patterns", "scan", k)
            .source("recons", "recons", "scan", 1)
            .output_topic("view.bench");
        let t0 = Instant::now();
        let mut view = View::start(&client, spec, ViewOptions::default()).await?;
        let mut delivered = 0u64;
        let mut bytes = 0u64;
        while delivered < items {
            let d = view
                .next(std::time::Duration::from_secs(30))
                .await?
                .ok_or_else(|| ViewError::Bench(format!("view: {delivered} of {items} items")))?;
            bytes += (0..d.members.len())
                .filter_map(|i| d.payload(i))
                .map(|p| p.len() as u64)
                .sum::<u64>();
            view.ack(d.id());
            delivered += 1;
        }
        let view_s = t0.elapsed().as_secs_f64();
        let stats = view.close().await?;
        let ref_bytes = {
            let mut c = Consumer::assign(&client, ConsumerConfig::new("view.bench"), &[])
                .await
                .map_err(fabric)?;
            let (mut b, mut read) = (0u64, 0u64);
            while read < items.min(1000) {
                match c
                    .poll(std::time::Duration::from_secs(5))
                    .await
                    .map_err(fabric)?
                {
                    Some(ci) => {
                        b += ci.payload().len() as u64;
                        read += 1;
                    }
                    None => break,
                }
            }
            c.close().await;
            b as f64 / read.max(1) as f64
        };
        client.close();
        Ok::<_, ViewError>(FabricFigures {
            k,
            view_items: delivered,
            members: stats.items_read,
            payload_bytes_delivered: bytes,
            payload_bytes_copied: stats.payload_bytes_copied,
            reference_bytes_per_item: ref_bytes,
            view_s,
            view_members_per_s: total as f64 / view_s,
            baseline_s,
            baseline_members_per_s: n as f64 / baseline_s,
        })
    }
    .await;
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    run
}
