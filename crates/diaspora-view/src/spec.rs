//! The declarative view spec (TOML, or built in Rust).
//!
//! ```toml
//! name = "ptycho-samples"
//!
//! [[source]]
//! name = "patterns"
//! topic = "patterns"
//! key = "scan"        # metadata key that joins members
//! count = 4           # K patterns per view item
//!
//! [[source]]
//! name = "recons"
//! topic = "recons"
//! key = "scan"
//! count = 1
//! id = "scan"         # identity across restarts (default: partition/offset)
//!
//! [join]
//! mode = "all-of"     # every source contributes its count (or "any-of")
//! window_ms = 60000   # members of one view item arrive within this time
//!
//! [liveness]
//! policy = "pin"      # or "discard" (the default)
//!
//! [output]
//! topic = "view.ptycho-samples"   # also publish the references here
//! ```

use crate::ViewError;
use serde::{Deserialize, Serialize};

/// How sources combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A view item needs `count` members from every source.
    #[default]
    AllOf,
    /// A view item is `count` members of any one source.
    AnyOf,
}

/// One source of a view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Name within the view.
    pub name: String,
    /// Fabric topic (or QoS stream) it reads.
    pub topic: String,
    /// Metadata key whose value joins members.
    pub key: String,
    /// Members of this source per view item.
    #[serde(default = "one")]
    pub count: u32,
    /// Metadata key whose value identifies an item within its source across
    /// restarts (a scan number, `qos.seq`): a source that crashes and
    /// re-publishes an item under a new offset is then recognised as a
    /// replay. Without it, an item is identified by (partition, offset).
    #[serde(default)]
    pub id: Option<String>,
    /// `fetch` (default): members arrive with their payloads.
    /// `reference`: the source is read metadata-only — the node leaves the
    /// payloads out, the view joins on metadata, and a consumer reads the
    /// payload of a member it needs by reference ([`crate::View::read_payload`]).
    /// For views whose consumers decide on metadata, or open few members.
    #[serde(default)]
    pub payloads: Payloads,
}

/// How a view source's members carry their payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Payloads {
    /// Fetched with the item.
    #[default]
    Fetch,
    /// Left on the node; read by reference on demand.
    Reference,
}

fn one() -> u32 {
    1
}

/// Join constraints.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    /// All-of or any-of.
    #[serde(default)]
    pub mode: Mode,
    /// Members of one view item must lie within this many ms of each other;
    /// pending members older than it (by the engine's clock) expire.
    #[serde(default)]
    pub window_ms: Option<u64>,
}

/// What happens to view items whose member is invalidated or expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Dependent view items not yet consumed are dropped, and the member
    /// is released at once.
    #[default]
    Discard,
    /// The member stays held until every dependent view item is consumed;
    /// those items are still delivered, marked invalid.
    Pin,
}

/// Liveness of members.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LivenessSpec {
    /// Discard or pin.
    #[serde(default)]
    pub policy: Policy,
}

/// Where view items go besides in-process consumers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Fabric topic the view publishes its items (references) on.
    #[serde(default)]
    pub topic: Option<String>,
}

/// Most sources one view joins.
pub const MAX_SOURCES: usize = 16;

/// Bounds on the engine's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Members waiting for a partner, at most.
    #[serde(default = "pending_max")]
    pub pending_members_max: usize,
    /// Members remembered as used (so a replay does not emit them again).
    #[serde(default = "used_max")]
    pub used_members_max: usize,
    /// Per source partition (or id lane), how far back used members are
    /// remembered, counted in offsets (or ids) behind the newest: older
    /// ones are forgotten as the stream moves on, which bounds memory on
    /// an endless stream. A replay reaching further back than this would
    /// join again.
    #[serde(default = "horizon")]
    pub replay_horizon: u64,
    /// Members waiting under one key, at most.
    #[serde(default = "key_max")]
    pub key_members_max: usize,
    /// View items delivered or waiting for an in-process consumer, at most
    /// (the view stops reading its sources when reached).
    #[serde(default = "outbox_max")]
    pub outbox_max: usize,
}

fn horizon() -> u64 {
    1_000_000
}

fn key_max() -> usize {
    4096
}

fn outbox_max() -> usize {
    65_536
}

fn pending_max() -> usize {
    1_000_000
}

fn used_max() -> usize {
    10_000_000
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pending_members_max: pending_max(),
            used_members_max: used_max(),
            replay_horizon: horizon(),
            key_members_max: key_max(),
            outbox_max: outbox_max(),
        }
    }
}

/// A view: sources, join constraints, limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewSpec {
    /// Name (also of the topic of references it may publish).
    pub name: String,
    /// Sources, in order.
    #[serde(rename = "source", default)]
    pub sources: Vec<SourceSpec>,
    /// Join constraints.
    #[serde(default)]
    pub join: JoinSpec,
    /// Liveness policy.
    #[serde(default)]
    pub liveness: LivenessSpec,
    /// Output topic.
    #[serde(default)]
    pub output: OutputSpec,
    /// Bounds.
    #[serde(default)]
    pub limits: Limits,
}

impl ViewSpec {
    /// A view called `name` with no sources yet (see [`ViewSpec::source`]).
    pub fn new(name: impl Into<String>) -> ViewSpec {
        ViewSpec {
            name: name.into(),
            sources: Vec::new(),
            join: JoinSpec::default(),
            liveness: LivenessSpec::default(),
            output: OutputSpec::default(),
            limits: Limits::default(),
        }
    }

    /// Adds a source: `count` members of `topic` per view item, joined on
    /// metadata `key`.
    pub fn source(mut self, name: &str, topic: &str, key: &str, count: u32) -> ViewSpec {
        self.sources.push(SourceSpec {
            name: name.into(),
            topic: topic.into(),
            key: key.into(),
            count,
            id: None,
            payloads: Payloads::Fetch,
        });
        self
    }

    /// Leaves the last added source's payloads on the node (see
    /// [`SourceSpec::payloads`]).
    pub fn payloads_by_reference(mut self) -> ViewSpec {
        if let Some(s) = self.sources.last_mut() {
            s.payloads = Payloads::Reference;
        }
        self
    }

    /// Identifies the last added source's items by metadata `key` (see
    /// [`SourceSpec::id`]).
    pub fn id_key(mut self, key: &str) -> ViewSpec {
        if let Some(s) = self.sources.last_mut() {
            s.id = Some(key.into());
        }
        self
    }

    /// Sets the liveness policy.
    pub fn policy(mut self, policy: Policy) -> ViewSpec {
        self.liveness.policy = policy;
        self
    }

    /// Publishes view items on `topic`.
    pub fn output_topic(mut self, topic: &str) -> ViewSpec {
        self.output.topic = Some(topic.into());
        self
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: Mode) -> ViewSpec {
        self.join.mode = mode;
        self
    }

    /// Sets the time window.
    pub fn window_ms(mut self, ms: u64) -> ViewSpec {
        self.join.window_ms = Some(ms);
        self
    }

    /// Parses TOML and validates.
    pub fn from_toml(text: &str) -> Result<ViewSpec, ViewError> {
        let spec: ViewSpec = toml::from_str(text).map_err(|e| ViewError::Spec(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the spec, naming the field at fault.
    pub fn validate(&self) -> Result<(), ViewError> {
        if self.name.is_empty()
            || self.name.len() > 128
            || self.name.starts_with('.')
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(ViewError::Spec(format!(
                "name {:?}: 1..=128 characters of [A-Za-z0-9._-], not starting with '.' (it names snapshot directories and lineage)",
                self.name
            )));
        }
        if self.sources.is_empty() {
            return Err(ViewError::Spec(
                "a view needs at least one [[source]]".into(),
            ));
        }
        if self.sources.len() > MAX_SOURCES {
            return Err(ViewError::Spec(format!(
                "{} sources; a view joins at most {MAX_SOURCES}",
                self.sources.len()
            )));
        }
        if self
            .output
            .topic
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(ViewError::Spec("output.topic is empty".into()));
        }
        for (what, v) in [
            (
                "limits.pending_members_max",
                self.limits.pending_members_max,
            ),
            ("limits.used_members_max", self.limits.used_members_max),
            ("limits.key_members_max", self.limits.key_members_max),
            ("limits.outbox_max", self.limits.outbox_max),
            ("limits.replay_horizon", self.limits.replay_horizon as usize),
        ] {
            if v == 0 {
                return Err(ViewError::Spec(format!("{what} must be ≥ 1")));
            }
        }
        for (i, s) in self.sources.iter().enumerate() {
            if s.count == 0 {
                return Err(ViewError::Spec(format!(
                    "source[{i}] {:?}: count must be ≥ 1",
                    s.name
                )));
            }
            if s.key.is_empty() || s.topic.is_empty() || s.name.is_empty() {
                return Err(ViewError::Spec(format!(
                    "source[{i}]: name, topic and key must be set"
                )));
            }
            if self.sources[..i].iter().any(|o| o.name == s.name) {
                return Err(ViewError::Spec(format!(
                    "source[{i}]: name {:?} used twice",
                    s.name
                )));
            }
        }
        if self.join.window_ms == Some(0) {
            return Err(ViewError::Spec(
                "join.window_ms must be > 0 (or absent)".into(),
            ));
        }
        Ok(())
    }
}
