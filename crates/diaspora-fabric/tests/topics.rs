//! `ensure_topic` against an embedded node's broker and through the admin
//! plane: created, found, refused with the same typed errors.

use diaspora_fabric::{
    ensure_topic, AdminClient, Ensured, FabricError, Node, NodeConfig, TopicAdmin, TopicSettings,
};
use diaspora_proto::v1::ErrorCode;

async fn check(mut admin: TopicAdmin<'_>) {
    let two = TopicSettings::with_partitions(2);
    assert_eq!(
        ensure_topic(admin.reborrow(), "frames", &two)
            .await
            .unwrap(),
        Ensured::Created
    );
    assert_eq!(
        ensure_topic(admin.reborrow(), "frames", &two)
            .await
            .unwrap(),
        Ensured::Existed
    );
    // Retention is the node's policy, not the topic's shape: still the same topic.
    let kept = TopicSettings {
        retention_ms: Some(1000),
        ..two.clone()
    };
    assert_eq!(
        ensure_topic(admin.reborrow(), "frames", &kept)
            .await
            .unwrap(),
        Ensured::Existed
    );
    match ensure_topic(
        admin.reborrow(),
        "frames",
        &TopicSettings::with_partitions(3),
    )
    .await
    {
        Err(FabricError::TopicMismatch {
            topic,
            found,
            wanted,
        }) => assert_eq!((topic.as_str(), found, wanted), ("frames", 2, 3)),
        other => panic!("expected a mismatch, got {other:?}"),
    }
    let e = ensure_topic(admin.reborrow(), "bad name!", &two)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidRequest, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_topic_embedded_and_through_the_admin_plane() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(NodeConfig::new(dir.path().join("a")))
        .await
        .unwrap();
    check(node.broker().into()).await;
    node.shutdown().await;

    let node = Node::start(NodeConfig::new(dir.path().join("b")))
        .await
        .unwrap();
    let mut admin = AdminClient::connect(node.admin_addr().unwrap(), &node.ca_file())
        .await
        .unwrap();
    check((&mut admin).into()).await;
    // What one path created, the other finds.
    assert_eq!(
        ensure_topic(node.broker(), "frames", &TopicSettings::with_partitions(2))
            .await
            .unwrap(),
        Ensured::Existed
    );
    node.shutdown().await;
}
