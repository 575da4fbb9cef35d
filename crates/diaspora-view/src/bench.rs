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
