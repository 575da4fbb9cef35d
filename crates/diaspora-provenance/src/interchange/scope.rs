//! Which records an export or a rendering covers ([`Scope`]), and walking
//! them in pages of [`PAGE`] with their invalidity.

use crate::model::*;
use crate::store::{Direction, Provenance};
use std::collections::{HashMap, HashSet};

/// Records per store read on export, and per batch on import.
pub const PAGE: usize = 10_000;

/// Which records to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every record of the store.
    All,
    /// `root`, everything it derives from and everything derived from it,
    /// to `depth` levels each way (all if `None`). Edges with an end
    /// outside this set are left out.
    Around {
        /// The record in the middle.
        root: RecordId,
        /// Levels up and down (all if `None`).
        depth: Option<usize>,
    },
}

/// The invalidity (and its event) of the invalid records of a page.
pub(super) type PageInvalid = HashMap<RecordId, (Invalid, Option<InvalidationEvent>)>;

/// Hands out the records of a scope in ascending id order, [`PAGE`] at a
/// time, with their invalidity.
pub(super) struct Pager {
    /// For [`Scope::Around`]: the ids, sorted, and as a set.
    around: Option<(Vec<RecordId>, HashSet<RecordId>)>,
    pos: usize,
    after: RecordId,
    done: bool,
    events: EventCache,
}

impl Pager {
    pub(super) fn new(prov: &mut Provenance, scope: &Scope) -> Result<Pager> {
        let around = match *scope {
            Scope::All => None,
            Scope::Around { root, depth } => {
                let mut set = HashSet::new();
                for dir in [Direction::Up, Direction::Down] {
                    let l = prov.lineage(root, dir, depth)?;
                    if l.truncated {
                        return Err(ProvError::Limit(format!(
                            "the lineage of {root} has more than {} records (limits.lineage_records_max); export the whole store or lower the depth",
                            prov.limits.lineage_records_max
                        )));
                    }
                    set.extend(l.nodes.iter().map(|n| n.0));
                }
                let mut ids: Vec<RecordId> = set.iter().copied().collect();
                ids.sort_unstable();
                Some((ids, set))
            }
        };
        Ok(Pager {
            around,
            pos: 0,
            after: RecordId::MIN,
            done: false,
            events: EventCache::default(),
        })
    }

    pub(super) fn in_scope(&self, id: RecordId) -> bool {
        match &self.around {
            None => true,
            Some((_, set)) => set.contains(&id),
        }
    }

    /// The next page and the invalidity of its records; `None` at the end.
    pub(super) fn next(
        &mut self,
        prov: &mut Provenance,
    ) -> Result<Option<(Vec<Record>, PageInvalid)>> {
        let ids = match &self.around {
            None => {
                if self.done {
                    return Ok(None);
                }
                let ids = prov.backend().ids_after(self.after, PAGE)?;
                match ids.iter().max() {
                    Some(&m) => self.after = m,
                    None => {
                        self.done = true;
                        return Ok(None);
                    }
                }
                ids
            }
            Some((all, _)) => {
                if self.pos >= all.len() {
                    return Ok(None);
                }
                let end = (self.pos + PAGE).min(all.len());
                let ids = all[self.pos..end].to_vec();
                self.pos = end;
                ids
            }
        };
        let mut recs = prov.backend().records(&ids)?;
        recs.sort_unstable_by_key(|r| r.id);
        let invalid = page_invalid(prov, &recs, &mut self.events)?;
        Ok(Some((recs, invalid)))
    }
}

/// Invalidation events by id, bounded.
#[derive(Default)]
struct EventCache(HashMap<i64, Option<InvalidationEvent>>);

impl EventCache {
    fn get(&mut self, prov: &mut Provenance, id: i64) -> Result<Option<InvalidationEvent>> {
        if let Some(e) = self.0.get(&id) {
            return Ok(e.clone());
        }
        if self.0.len() >= 1 << 16 {
            self.0.clear();
        }
        let e = prov.backend().event(id)?;
        self.0.insert(id, e.clone());
        Ok(e)
    }
}

/// The invalidity (and its event) of those records of a page that are
/// invalid.
fn page_invalid(
    prov: &mut Provenance,
    page: &[Record],
    events: &mut EventCache,
) -> Result<PageInvalid> {
    let ids: Vec<RecordId> = page.iter().map(|r| r.id).collect();
    let mut out = HashMap::new();
    for inv in prov.backend().invalid(&ids)? {
        let ev = events.get(prov, inv.event)?;
        out.insert(inv.record, (inv, ev));
    }
    Ok(out)
}
