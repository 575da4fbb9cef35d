//! The acknowledgement hook: what a provenance recorder learns of each
//! item a producer got acknowledged.

use diaspora_proto::v1;

use super::ItemRef;

/// What a provenance recorder learns of an acknowledged item: where it
/// landed and what it was derived from (see [`AckHook`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AckedItem {
    /// Where it landed.
    pub item: ItemRef,
    /// The item's timestamp, µs since the Unix epoch.
    pub timestamp_us: i64,
    /// Its lineage (sources, activity, model versions), if it had one.
    pub lineage: Option<v1::Lineage>,
    /// Its quality, if marked.
    pub quality: Option<v1::Quality>,
    /// The metadata values of the hook's [`AckHook::tag_keys`], as text
    /// ([`meta::value_text`](super::meta::value_text)).
    pub tags: Vec<(String, String)>,
}

/// Called once per acknowledged item, outside the producer's locks.
///
/// A QoS producer (`diaspora_stream::QosProducer::with_ack_hook`) calls it;
/// a provenance recorder (`diaspora_provenance::lineage::LineageRecorder`)
/// implements it. It must return quickly: queue the work.
///
/// ```
/// use diaspora_fabric::item::{AckHook, AckedItem, ItemRef};
/// use std::sync::Mutex;
/// struct Log(Mutex<Vec<ItemRef>>);
/// impl AckHook for Log {
///     fn acked(&self, item: AckedItem) {
///         self.0.lock().unwrap().push(item.item);
///     }
/// }
/// let log = Log(Mutex::new(Vec::new()));
/// log.acked(AckedItem {
///     item: ItemRef::new("frames", 0, 7),
///     timestamp_us: 0,
///     lineage: None,
///     quality: None,
///     tags: Vec::new(),
/// });
/// assert_eq!(log.0.lock().unwrap()[0].to_string(), "frames/0/7");
/// ```
pub trait AckHook: Send + Sync {
    /// Metadata keys to pass along as tags (e.g. `scan`).
    fn tag_keys(&self) -> &[String] {
        &[]
    }
    /// One acknowledged item.
    fn acked(&self, item: AckedItem);
}
