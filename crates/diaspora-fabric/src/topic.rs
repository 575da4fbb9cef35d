//! One way to create topics: [`ensure_topic`], against an embedded node's
//! [`Broker`] or through a node's gRPC admin plane ([`AdminClient`]) alike.
//!
//! Services create the topics they need at start (a QoS stream its data,
//! control and replay topics; a metrics publisher its metrics topic; a view
//! benchmark its sources). Several may start at once, so "it exists
//! already" is success — as long as the existing topic has the partition
//! count asked for: a service addresses partitions by number, and a topic
//! with another count is someone else's topic, reported as
//! [`FabricError::TopicMismatch`]. Retention and compression are not
//! compared: they are the node's storage policy, not the topic's shape.

use std::sync::Arc;

use diaspora_proto::v1::ErrorCode;

use crate::admin::AdminClient;
use crate::broker::{Broker, TopicSettings};
use crate::error::{FabricError, Result};

/// Where topics are created: an embedded node, or a node's admin plane.
pub enum TopicAdmin<'a> {
    /// An embedded node's broker, in this process.
    Embedded(&'a Broker),
    /// A node's gRPC admin plane.
    Admin(&'a mut AdminClient),
}

impl<'a> From<&'a Broker> for TopicAdmin<'a> {
    fn from(b: &'a Broker) -> Self {
        TopicAdmin::Embedded(b)
    }
}

impl<'a> From<&'a Arc<Broker>> for TopicAdmin<'a> {
    fn from(b: &'a Arc<Broker>) -> Self {
        TopicAdmin::Embedded(b)
    }
}

impl<'a> From<&'a mut AdminClient> for TopicAdmin<'a> {
    fn from(a: &'a mut AdminClient) -> Self {
        TopicAdmin::Admin(a)
    }
}

impl TopicAdmin<'_> {
    /// The same admin, borrowed again (to ensure several topics).
    pub fn reborrow(&mut self) -> TopicAdmin<'_> {
        match self {
            TopicAdmin::Embedded(b) => TopicAdmin::Embedded(b),
            TopicAdmin::Admin(a) => TopicAdmin::Admin(a),
        }
    }

    async fn create(&mut self, name: &str, settings: &TopicSettings) -> Result<()> {
        match self {
            TopicAdmin::Embedded(b) => b.create_topic(name, settings.clone()),
            TopicAdmin::Admin(a) => a.create_topic(name, settings.to_config()).await,
        }
    }

    async fn partitions(&mut self, name: &str) -> Result<u32> {
        match self {
            TopicAdmin::Embedded(b) => Ok(b.topic(name)?.settings.partitions),
            TopicAdmin::Admin(a) => {
                let d = a.describe_topic(name).await?;
                Ok(d.config.map_or(d.partitions.len() as u32, |c| c.partitions))
            }
        }
    }
}

/// What [`ensure_topic`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// The topic was created.
    Created,
    /// It existed already, with the partition count asked for.
    Existed,
}

/// Makes sure topic `name` exists with `settings`' partition count:
/// creates it, or finds it already there (made earlier or by a concurrent
/// caller). An existing topic with another partition count is
/// [`FabricError::TopicMismatch`]; anything else the node refuses (a bad
/// name, a limit) is its error.
///
/// ```no_run
/// use diaspora_fabric::{ensure_topic, Ensured, Node, NodeConfig, TopicSettings};
/// # async fn demo() -> Result<(), diaspora_fabric::FabricError> {
/// let node = Node::start(NodeConfig::new("/tmp/diaspora-doc")).await?;
/// let two = TopicSettings::with_partitions(2);
/// assert_eq!(ensure_topic(node.broker(), "frames", &two).await?, Ensured::Created);
/// assert_eq!(ensure_topic(node.broker(), "frames", &two).await?, Ensured::Existed);
/// # Ok(()) }
/// ```
pub async fn ensure_topic<'a>(
    admin: impl Into<TopicAdmin<'a>>,
    name: &str,
    settings: &TopicSettings,
) -> Result<Ensured> {
    let mut admin = admin.into();
    match admin.create(name, settings).await {
        Ok(()) => Ok(Ensured::Created),
        Err(e) if e.code() == ErrorCode::TopicExists => {
            // The partition count as the node would have created it (an
            // admin plane reads 0 as 1).
            let wanted = settings.partitions.max(1);
            let found = admin.partitions(name).await?;
            if found == wanted {
                Ok(Ensured::Existed)
            } else {
                Err(FabricError::TopicMismatch {
                    topic: name.into(),
                    found,
                    wanted,
                })
            }
        }
        Err(e) => Err(e),
    }
}
