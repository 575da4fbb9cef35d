//! How both stores ([`crate::sqlite`], [`crate::postgres`]) encode a
//! record's row: parents packed in a blob ([`pack_parents`]), the per-item
//! blob of an `item_batches` row ([`encode_batch`]), tags and URIs as a
//! JSON column, an item record's name left NULL, an action's target and
//! kind as JSON; and the rows of the tag and URI indexes. The stores
//! depend on this module and on [`crate::backend`]; neither of those
//! depends on a store.
//!
//! Every decoder checks lengths, offsets and codes: a malformed blob is a
//! [`ProvError::Corrupt`], never a panic (`fuzz/` runs them on arbitrary
//! bytes through [`crate::fuzzing::item_batch`]).

use crate::model::*;
use std::collections::BTreeMap;

/// Bytes of one packed parent edge: the id (i64, little-endian), the kind.
const PARENT_BYTES: usize = 9;

/// Appends parent edges, packed, to `out`.
fn push_parents(out: &mut Vec<u8>, parents: &[(RecordId, EdgeKind)]) {
    for (p, k) in parents {
        out.extend_from_slice(&p.to_le_bytes());
        out.push(k.code() as u8);
    }
}

/// Packs parent edges: 9 bytes each (id LE, kind).
pub fn pack_parents(parents: &[(RecordId, EdgeKind)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(parents.len() * PARENT_BYTES);
    push_parents(&mut v, parents);
    v
}

/// A row's parents column: the packed parents, NULL (`None`) for none.
pub(crate) fn parents_column(parents: &[(RecordId, EdgeKind)]) -> Option<Vec<u8>> {
    (!parents.is_empty()).then(|| pack_parents(parents))
}

/// Unpacks [`pack_parents`]' output; a malformed blob is an error.
pub fn unpack_parents(b: &[u8]) -> Result<Vec<(RecordId, EdgeKind)>> {
    if b.len() % PARENT_BYTES != 0 {
        return Err(ProvError::Corrupt(format!(
            "parents blob of {} bytes",
            b.len()
        )));
    }
    b.chunks_exact(PARENT_BYTES)
        .map(|c| {
            let id = i64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
            Ok((id, EdgeKind::from_code(c[8] as i64)?))
        })
        .collect()
}

/// The parents of a row's (possibly NULL) packed blob.
pub(crate) fn unpack_optional(blob: Option<&[u8]>) -> Result<Vec<(RecordId, EdgeKind)>> {
    Ok(blob.map(unpack_parents).transpose()?.unwrap_or_default())
}

/// The edges from `child` to each of its `parents`.
pub(crate) fn parent_edges(
    child: RecordId,
    parents: Vec<(RecordId, EdgeKind)>,
) -> impl Iterator<Item = Edge> {
    parents.into_iter().map(move |(parent, kind)| Edge {
        parent,
        child,
        kind,
    })
}

/// Packs the per-item part of a batch: `n` little-endian u32 end offsets,
/// then per item its time (i64) and packed parents.
pub fn encode_batch(items: &[(i64, &[(RecordId, EdgeKind)])]) -> Vec<u8> {
    let n = items.len();
    let body: usize = items.iter().map(|(_, p)| 8 + PARENT_BYTES * p.len()).sum();
    let mut out = Vec::with_capacity(4 * n + body);
    let mut end = 0u32;
    for (_, p) in items {
        end += (8 + PARENT_BYTES * p.len()) as u32;
        out.extend_from_slice(&end.to_le_bytes());
    }
    for (t, p) in items {
        out.extend_from_slice(&t.to_le_bytes());
        push_parents(&mut out, p);
    }
    out
}

/// Item `k` of a batch blob of `n` items: (time, parents). Every length
/// and offset is checked; a bad blob is an error, never a panic.
pub fn decode_batch_item(
    data: &[u8],
    n: usize,
    k: usize,
) -> Result<(i64, Vec<(RecordId, EdgeKind)>)> {
    let bad = |what: &str| ProvError::Corrupt(format!("item batch: {what}"));
    if k >= n || data.len() < 4 * n {
        return Err(bad("index out of range"));
    }
    let end_at =
        |i: usize| u32::from_le_bytes(data[4 * i..4 * i + 4].try_into().expect("4 bytes")) as usize;
    let start = if k == 0 { 0 } else { end_at(k - 1) };
    let end = end_at(k);
    let body = &data[4 * n..];
    if start > end || end > body.len() || end - start < 8 {
        return Err(bad("bad offsets"));
    }
    let item = &body[start..end];
    let t = i64::from_le_bytes(item[..8].try_into().expect("8 bytes"));
    Ok((t, unpack_parents(&item[8..])?))
}

/// A record's columns as both stores keep them: parents packed
/// ([`pack_parents`]), tags and URIs as JSON ([`extra_json`]), an item
/// record's name left NULL.
pub(crate) struct StoredRecord {
    pub id: RecordId,
    pub kind: i64,
    pub name: Option<String>,
    pub time_us: i64,
    /// An item record's topic: its id and name (`None` if the id names no
    /// topic, which is corruption).
    pub topic: Option<(i64, Option<String>)>,
    pub part: Option<i64>,
    pub off: Option<i64>,
    pub version: Option<i64>,
    pub origin: Option<String>,
    pub parents: Option<Vec<u8>>,
    pub extra: Option<String>,
}

/// Tags and URIs of a record, kept as JSON in its row (they are indexed
/// separately for queries).
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Extra {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    uris: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<String, (i64, String)>,
}

/// The JSON column of a record's tags (typed) and URIs; `None` if it has neither.
pub(crate) fn extra_json(r: &Record) -> Option<String> {
    if r.tags.is_empty() && r.uris.is_empty() {
        return None;
    }
    let extra = Extra {
        uris: r.uris.clone(),
        tags: r
            .tags
            .iter()
            .map(|(k, t)| (k.clone(), (t.type_code(), t.text())))
            .collect(),
    };
    Some(serde_json::to_string(&extra).expect("serializable"))
}

impl StoredRecord {
    /// The record; anything that does not decode is [`ProvError::Corrupt`].
    pub fn into_record(self) -> Result<Record> {
        let id = self.id;
        let item = match self.topic {
            Some((t, name)) => Some(ItemRef {
                topic: name
                    .ok_or_else(|| ProvError::Corrupt(format!("unknown topic id {t}")))?
                    .into(),
                partition: self.part.unwrap_or(0) as u32,
                offset: self.off.unwrap_or(0) as u64,
            }),
            None => None,
        };
        let extra: Extra = match self.extra {
            Some(s) => serde_json::from_str(&s)
                .map_err(|e| ProvError::Corrupt(format!("record {id} extra: {e}")))?,
            None => Extra::default(),
        };
        let mut tags = BTreeMap::new();
        for (k, (code, text)) in extra.tags {
            tags.insert(k, TagValue::from_stored(code, &text)?);
        }
        Ok(Record {
            id,
            kind: Kind::from_code(self.kind)?,
            name: match (self.name, &item) {
                (Some(n), _) => n,
                (None, Some(loc)) => loc.to_string(),
                (None, None) => String::new(),
            },
            time_us: self.time_us,
            uris: extra.uris,
            tags,
            item,
            version: self.version,
            origin: self.origin,
            parents: unpack_optional(self.parents.as_deref())?,
        })
    }
}

/// The rows of the tag index for `recs`: (key, canonical value text, record).
pub(crate) fn tag_rows(recs: &[Record]) -> Vec<(&str, String, RecordId)> {
    recs.iter()
        .flat_map(|r| {
            r.tags
                .iter()
                .map(move |(k, t)| (k.as_str(), t.text(), r.id))
        })
        .collect()
}

/// The rows of the URI index for `recs`: (URI, record).
pub(crate) fn uri_rows(recs: &[Record]) -> Vec<(&str, RecordId)> {
    recs.iter()
        .flat_map(|r| r.uris.iter().map(move |u| (u.as_str(), r.id)))
        .collect()
}

/// Adds `e`'s parent to a child's parents unless it is there already;
/// returns whether it was added.
pub(crate) fn add_parent(parents: &mut Vec<(RecordId, EdgeKind)>, e: &Edge) -> bool {
    if parents.iter().any(|(p, _)| *p == e.parent) {
        return false;
    }
    parents.push((e.parent, e.kind));
    true
}

/// A row's packed parents with `e`'s parent added; `None` if it had it.
pub(crate) fn packed_with_parent(blob: Option<&[u8]>, e: &Edge) -> Result<Option<Vec<u8>>> {
    let mut parents = unpack_optional(blob)?;
    Ok(add_parent(&mut parents, e).then(|| pack_parents(&parents)))
}

/// A batch blob of `n` items with `e`'s parent added to item `k`; `None`
/// if it had it.
pub(crate) fn batch_with_parent(
    data: &[u8],
    n: usize,
    k: usize,
    e: &Edge,
) -> Result<Option<Vec<u8>>> {
    let mut items = (0..n)
        .map(|i| decode_batch_item(data, n, i))
        .collect::<Result<Vec<_>>>()?;
    if !add_parent(&mut items[k].1, e) {
        return Ok(None);
    }
    let refs: Vec<(i64, &[(RecordId, EdgeKind)])> =
        items.iter().map(|(t, p)| (*t, p.as_slice())).collect();
    Ok(Some(encode_batch(&refs)))
}

/// An action's columns: its target and kind as JSON.
pub(crate) fn action_columns(target: &ActionTarget, kind: &ActionKind) -> (String, String) {
    (
        serde_json::to_string(target).expect("serializable"),
        serde_json::to_string(kind).expect("serializable"),
    )
}

/// An action from its row: id, target and kind as JSON; JSON that does not
/// decode is [`ProvError::Corrupt`].
pub(crate) fn action_from_row(id: i64, target: &str, kind: &str) -> Result<Action> {
    Ok(Action {
        id,
        target: serde_json::from_str(target)
            .map_err(|e| ProvError::Corrupt(format!("action {id}: {e}")))?,
        kind: serde_json::from_str(kind)
            .map_err(|e| ProvError::Corrupt(format!("action {id}: {e}")))?,
    })
}

/// An item offset as the stores' signed column holds it (clamped to
/// `i64::MAX`).
pub(crate) fn offset_column(off: u64) -> i64 {
    off.min(i64::MAX as u64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_parents_reject_bad_lengths_and_kinds() {
        let ps = vec![(42, EdgeKind::Trained), (-7, EdgeKind::Inferred)];
        assert_eq!(unpack_parents(&pack_parents(&ps)).unwrap(), ps);
        assert!(unpack_parents(&[0u8; 8]).is_err());
        let mut bad = pack_parents(&ps);
        bad[8] = 200;
        assert!(unpack_parents(&bad).is_err());
    }
}
