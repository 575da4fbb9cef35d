//! Identities and ACLs on both planes (issue 19), over real QUIC and real
//! gRPC on loopback: the refused-access matrix, token revocation and
//! expiry on open connections, and bad credentials.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use diaspora_fabric::item::payload_item;
use diaspora_fabric::tls::{issue_client_cert, ClientIdentity};
use diaspora_fabric::{
    AdminClient, AuthMode, Client, ClientConfig, FabricError, Node, NodeConfig, Producer,
    ProducerConfig, TopicSettings,
};
use diaspora_log::{BatchBuilder, Compression};
use diaspora_proto::v1::{self, frame::Body, ErrorCode};

fn code(e: &FabricError) -> Option<ErrorCode> {
    match e {
        FabricError::Remote { code, .. } => Some(*code),
        _ => None,
    }
}

struct World {
    dir: tempfile::TempDir,
    node: Node,
    clients: PathBuf,
}

impl World {
    async fn start(mode: AuthMode) -> World {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NodeConfig::new(dir.path().join("node"));
        cfg.auth.mode = mode;
        cfg.auth.superusers = vec!["root".into()];
        let node = Node::start(cfg).await.expect("node starts");
        let clients = dir.path().join("clients");
        let certs = node.ca_file().parent().unwrap().to_path_buf();
        for user in ["root", "bob", "carol"] {
            issue_client_cert(&certs, user, &clients).unwrap();
        }
        World { dir, node, clients }
    }

    fn identity(&self, user: &str) -> ClientIdentity {
        ClientIdentity::in_dir(&self.clients, user)
    }

    async fn data(&self, user: Option<&str>, token: Option<&str>) -> Result<Client, FabricError> {
        let mut c = ClientConfig::new(self.node.data_addr(), self.node.ca_file());
        c.connections = 1;
        c.identity = user.map(|u| self.identity(u));
        c.token = token.map(str::to_string);
        Client::connect(c).await
    }

    async fn admin(&self, user: Option<&str>, token: Option<&str>) -> AdminClient {
        let id = user.map(|u| self.identity(u));
        AdminClient::connect_as(
            self.node.admin_addr().unwrap(),
            &self.node.ca_file(),
            id.as_ref(),
            token,
        )
        .await
        .expect("admin connects")
    }

    /// Every file of the node's data directory but the audit log, by path.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.file_name().unwrap() != "audit.log" {
                    out.insert(p.clone(), std::fs::read(&p).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.dir.path().join("node"), &mut out);
        out
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node/auth/audit.log")).unwrap_or_default()
    }
}

fn batch() -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    b.push(b"x", 1);
    b.finish()
}

/// One request of every data-plane kind, on topic "t" and group "g".
fn data_frames(member: &str) -> Vec<(&'static str, Body)> {
    vec![
        (
            "Metadata",
            Body::MetadataRequest(v1::MetadataRequest { topic: "t".into() }),
        ),
        (
            "Produce",
            Body::ProduceRequest(v1::ProduceRequest {
                topic: "t".into(),
                partition: 0,
                batch: batch(),
            }),
        ),
        (
            "Fetch",
            Body::FetchRequest(v1::FetchRequest {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
                metadata_only: false,
            }),
        ),
        (
            "Payload",
            Body::PayloadRequest(v1::PayloadRequest {
                topic: "t".into(),
                partition: 0,
                offset: 0,
            }),
        ),
        (
            "OffsetCommit",
            Body::OffsetCommitRequest(v1::OffsetCommitRequest {
                group: "g".into(),
                topic: "t".into(),
                partition: 0,
                offset: 1,
                ..Default::default()
            }),
        ),
        (
            "OffsetFetch",
            Body::OffsetFetchRequest(v1::OffsetFetchRequest {
                group: "g".into(),
                topic: "t".into(),
            }),
        ),
        (
            "JoinGroup",
            Body::JoinGroupRequest(v1::JoinGroupRequest {
                group: "g".into(),
                topic: "t".into(),
                member_id: String::new(),
                session_timeout_ms: 10_000,
            }),
        ),
        (
            "Heartbeat",
            Body::HeartbeatRequest(v1::HeartbeatRequest {
                group: "g".into(),
                member_id: member.into(),
                generation: 1,
                topic: "t".into(),
            }),
        ),
        (
            "LeaveGroup",
            Body::LeaveGroupRequest(v1::LeaveGroupRequest {
                group: "g".into(),
                member_id: member.into(),
                topic: "t".into(),
            }),
        ),
    ]
}

/// Calls every admin RPC that needs a permission; each name with its outcome.
async fn admin_calls(a: &mut AdminClient) -> Vec<(&'static str, Result<(), FabricError>)> {
    let cfg = v1::TopicConfig {
        partitions: 1,
        ..Default::default()
    };
    vec![
        ("CreateTopic", a.create_topic("u", cfg).await),
        ("DescribeTopic", a.describe_topic("t").await.map(drop)),
        ("GroupOffsets", a.group_offsets("g", "t").await.map(drop)),
        (
            "CommitGroupOffset",
            a.commit_group_offset("g", "t", 0, 1).await,
        ),
        ("Stats", a.stats().await.map(drop)),
        ("PutUser", a.put_user("dave", &[], None).await.map(drop)),
        ("ListUsers", a.list_users().await.map(drop)),
        ("CreateToken", a.create_token("dave", "", 0).await.map(drop)),
        ("ListTokens", a.list_tokens("").await.map(drop)),
        (
            "RevokeToken",
            a.revoke_token("0000000000000000").await.map(drop),
        ),
        (
            "GrantAcl",
            a.grant_acl(&["allow User:dave read topic:t".into()])
                .await
                .map(drop),
        ),
        ("ListAcl", a.list_acl().await.map(drop)),
        (
            "RevokeAcl",
            a.revoke_acl(&["allow User:dave read topic:t".into()])
                .await
                .map(drop),
        ),
        ("RemoveUser", a.remove_user("dave").await.map(drop)),
        // Last: it removes what the others read.
        ("DeleteTopic", a.delete_topic("t").await),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_and_rpc_without_permission_is_refused_and_changes_nothing() {
    let w = World::start(AuthMode::CertificateOrToken).await;
    // The superuser sets the scene: topic t with an item, group g with a
    // committed offset and a live member.
    let root = w.data(Some("root"), None).await.unwrap();
    assert_eq!(root.hello().await.unwrap().principal, "User:root");
    let mut root_admin = w.admin(Some("root"), None).await;
    root_admin
        .create_topic(
            "t",
            v1::TopicConfig {
                partitions: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let p = Producer::new(&root, ProducerConfig::new("t"))
        .await
        .unwrap();
    p.send(payload_item(Bytes::from_static(b"frame")))
        .await
        .unwrap()
        .await
        .unwrap();
    root_admin
        .commit_group_offset("g", "t", 0, 1)
        .await
        .unwrap();
    let joined = root
        .call(data_frames("").remove(6).1)
        .await
        .expect("root joins g");
    let Body::JoinGroupResponse(j) = joined else {
        panic!("{joined:?}")
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // bob has a valid certificate but no ACL entry.
    let bob = w.data(Some("bob"), None).await.unwrap();
    assert_eq!(bob.hello().await.unwrap().principal, "User:bob");
    let before = w.snapshot();
    for (name, body) in data_frames(&j.member_id) {
        let e = bob.call(body).await.unwrap_err();
        assert_eq!(code(&e), Some(ErrorCode::PermissionDenied), "{name}: {e}");
        assert!(e.to_string().contains("User:bob"), "{name}: {e}");
    }
    let mut bob_admin = w.admin(Some("bob"), None).await;
    for (name, r) in admin_calls(&mut bob_admin).await {
        let e = r.expect_err(name);
        assert_eq!(code(&e), Some(ErrorCode::PermissionDenied), "{name}: {e}");
    }
    // Lists show only what the caller may describe; who-am-i needs no permission.
    assert!(bob_admin.list_topics().await.unwrap().is_empty());
    assert_eq!(bob_admin.who_am_i().await.unwrap().principal, "User:bob");
    let after = w.snapshot();
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &before {
        assert!(after[path] == *bytes, "{} changed", path.display());
    }
    // Every refusal is in the audit log, naming the operation and resource.
    let audit: Vec<serde_json::Value> = w
        .audit()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let refused = |op: &str, res: &str| {
        audit.iter().any(|a| {
            a["principal"] == "User:bob"
                && a["outcome"] == "denied"
                && a["operation"] == op
                && a["resource"] == res
        })
    };
    for (op, res) in [
        ("write", "topic:t"),
        ("read", "topic:t"),
        ("commit", "group:g"),
        ("create", "topic:u"),
        ("delete", "topic:t"),
        ("alter", "group:g"),
        ("alter", "cluster"),
        ("describe", "cluster"),
    ] {
        assert!(refused(op, res), "no audit line for {op} {res}: {audit:?}");
    }

    // With the permissions, the same calls succeed.
    root_admin
        .grant_acl(&[
            "allow User:bob all topic:*".into(),
            "allow User:bob all group:g".into(),
            "allow User:bob all cluster".into(),
        ])
        .await
        .unwrap();
    // root leaves g first: a commit from outside the group's membership is
    // refused (fenced) while the group has live members.
    root.call(data_frames(&j.member_id).remove(8).1)
        .await
        .unwrap();
    let mut bob_member = String::new();
    for (name, body) in data_frames("") {
        let body = match body {
            Body::HeartbeatRequest(mut h) => {
                h.member_id = bob_member.clone();
                Body::HeartbeatRequest(h)
            }
            Body::LeaveGroupRequest(mut l) => {
                l.member_id = bob_member.clone();
                Body::LeaveGroupRequest(l)
            }
            b => b,
        };
        let r = bob
            .call(body)
            .await
            .unwrap_or_else(|e| panic!("{name} with permission: {e}"));
        if let Body::JoinGroupResponse(j) = r {
            bob_member = j.member_id;
        }
    }
    assert_eq!(
        bob_admin.list_topics().await.unwrap(),
        vec!["t".to_string()]
    );
    for (name, r) in admin_calls(&mut bob_admin).await {
        r.unwrap_or_else(|e| panic!("{name} with permission: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_are_refused_unless_the_node_is_in_dev_mode() {
    let w = World::start(AuthMode::CertificateOrToken).await;
    w.node
        .broker()
        .create_topic("t", TopicSettings::with_partitions(1))
        .unwrap();
    let anon = w.data(None, None).await.unwrap();
    assert_eq!(anon.hello().await.unwrap().principal, "User:ANONYMOUS");
    let e = anon.metadata("t").await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::Unauthenticated), "{e}");
    assert!(
        e.to_string()
            .contains("requires a client certificate or a bearer token"),
        "{e}"
    );
    let e = w.admin(None, None).await.list_topics().await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::Unauthenticated), "{e}");

    let dev = World::start(AuthMode::Dev).await;
    dev.node
        .broker()
        .create_topic("t", TopicSettings::with_partitions(1))
        .unwrap();
    let anon = dev.data(None, None).await.unwrap();
    anon.metadata("t").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_tokens_are_refused_on_connections_opened_before() {
    let w = World::start(AuthMode::Token).await;
    w.node
        .broker()
        .create_topic("t", TopicSettings::with_partitions(1))
        .unwrap();
    // In token mode root's certificate alone is not enough, so root is
    // bootstrapped with a token the node's own state hands out.
    let root_token = {
        let root = diaspora_fabric::auth::Principal::user("root").unwrap();
        w.node
            .broker()
            .guard
            .change(&root, "bootstrap", |s| {
                s.tokens
                    .create(&root, "test", diaspora_fabric::item::now_us(), None)
                    .map_err(|e| FabricError::Invalid(e.to_string()))
            })
            .unwrap()
            .token
    };
    let mut root = w.admin(None, Some(&root_token)).await;
    root.grant_acl(&["allow User:carol read topic:t".into()])
        .await
        .unwrap();
    let forever = root.create_token("carol", "ci", 0).await.unwrap();
    let brief = root.create_token("carol", "brief", 1).await.unwrap();
    assert!(forever.token.starts_with("dsp_"));

    let c = w.data(None, Some(&forever.token)).await.unwrap();
    assert_eq!(c.hello().await.unwrap().principal, "User:carol");
    let lane = c.lane(0).await.unwrap();
    lane.call(Body::MetadataRequest(v1::MetadataRequest {
        topic: "t".into(),
    }))
    .await
    .unwrap();
    // Revoked: the very next request on the open lane is refused.
    assert!(root.revoke_token(&forever.info.unwrap().id).await.unwrap());
    let e = lane
        .call(Body::MetadataRequest(v1::MetadataRequest {
            topic: "t".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::Unauthenticated), "{e}");
    assert!(e.to_string().contains("revoked"), "{e}");
    // And a new connection with it fails at once.
    let e = w
        .data(None, Some(&forever.token))
        .await
        .err()
        .expect("refused");
    assert_eq!(code(&e), Some(ErrorCode::Unauthenticated), "{e}");

    // Expired: a 1 s token works, then stops working on its open connection.
    let c = w.data(None, Some(&brief.token)).await.unwrap();
    c.metadata("t").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = c.metadata("t").await.unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");

    // A malformed token is a clear error, and the node keeps serving.
    let e = w
        .data(None, Some("dsp_nonsense"))
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("malformed token"), "{e}");
    let e = w
        .data(None, Some(&"x".repeat(5000)))
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("malformed token"), "{e}");
    assert!(root.who_am_i().await.is_ok());
    // The changes survive a restart of the node.
    let data_dir = w.dir.path().join("node");
    let acl_before = root.list_acl().await.unwrap();
    w.node.shutdown().await;
    let mut cfg = NodeConfig::new(&data_dir);
    cfg.auth.mode = AuthMode::Token;
    let again = Node::start(cfg).await.unwrap();
    let mut root = AdminClient::connect_as(
        again.admin_addr().unwrap(),
        &again.ca_file(),
        None,
        Some(&root_token),
    )
    .await
    .unwrap();
    // root is no superuser of this node, but its token still names it.
    assert_eq!(root.who_am_i().await.unwrap().principal, "User:root");
    let e = root.list_acl().await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::PermissionDenied), "{e}");
    assert_eq!(
        again.broker().guard.state().acl.entries().len(),
        acl_before.len()
    );
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_at_the_handshake() {
    let w = World::start(AuthMode::Certificate).await;
    let foreign = tempfile::tempdir().unwrap();
    diaspora_fabric::tls::generate_dev_certs(foreign.path(), &[]).unwrap();
    let id = issue_client_cert(foreign.path(), "root", foreign.path()).unwrap();
    let mut c = ClientConfig::new(w.node.data_addr(), w.node.ca_file());
    c.identity = Some(id);
    c.connections = 1;
    let refused = match Client::connect(c).await {
        Err(_) => true,
        // The handshake may complete on the client before the node's
        // verdict arrives; the first request then fails.
        Ok(client) => client.hello().await.is_err(),
    };
    assert!(refused, "a certificate of a foreign CA was accepted");
    // The node keeps serving its own clients.
    let root = w.data(Some("root"), None).await.unwrap();
    assert_eq!(root.hello().await.unwrap().principal, "User:root");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_has_its_own_identity_on_each_side_and_needs_only_what_it_does() {
    use diaspora_fabric::{Bridge, BridgeConfig, Consumer, ConsumerConfig};
    let edge = World::start(AuthMode::CertificateOrToken).await;
    let hpc = World::start(AuthMode::CertificateOrToken).await;
    for w in [&edge, &hpc] {
        w.node
            .broker()
            .create_topic("frames", TopicSettings::with_partitions(2))
            .unwrap();
    }
    // At the edge the bridge (as bob) reads frames and keeps its position;
    // at HPC it (as carol) writes them. Nothing more.
    edge.admin(Some("root"), None)
        .await
        .grant_acl(&[
            "allow User:bob read topic:frames".into(),
            "allow User:bob commit group:bridge.edge-hpc".into(),
        ])
        .await
        .unwrap();
    hpc.admin(Some("root"), None)
        .await
        .grant_acl(&["allow User:carol write topic:frames".into()])
        .await
        .unwrap();
    let root = edge.data(Some("root"), None).await.unwrap();
    let p = Producer::new(&root, ProducerConfig::new("frames"))
        .await
        .unwrap();
    let mut acks = Vec::new();
    for i in 0..200u32 {
        acks.push(
            p.send(payload_item(Bytes::from(i.to_le_bytes().to_vec())))
                .await
                .unwrap(),
        );
    }
    for a in acks {
        a.await.unwrap();
    }
    let side = |w: &World, user: &str| {
        let mut c = ClientConfig::new(w.node.data_addr(), w.node.ca_file());
        c.identity = Some(w.identity(user));
        c
    };
    let bridge = Bridge::start(BridgeConfig::new(
        "edge-hpc",
        side(&edge, "bob"),
        "frames",
        side(&hpc, "carol"),
        "frames",
    ))
    .await
    .expect("the bridge starts with its identities");
    let target = hpc.data(Some("root"), None).await.unwrap();
    let mut c = Consumer::assign(&target, ConsumerConfig::new("frames"), &[])
        .await
        .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 200 {
        let item = c
            .poll(Duration::from_secs(20))
            .await
            .unwrap()
            .expect("every item arrives within 20 s");
        seen.insert(u32::from_le_bytes(
            item.item.payload[..4].try_into().unwrap(),
        ));
    }
    bridge.stop().await;
    assert_eq!(seen.len(), 200);
    // The same bridge with the identities swapped is refused on both sides.
    let e = Bridge::start(BridgeConfig::new(
        "edge-hpc",
        side(&edge, "carol"),
        "frames",
        side(&hpc, "bob"),
        "frames",
    ))
    .await
    .err()
    .expect("refused");
    assert!(e.to_string().contains("permission denied"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_topics_and_their_quotas_hold() {
    let w = World::start(AuthMode::Certificate).await;
    let certs = w.node.ca_file().parent().unwrap().to_path_buf();
    for user in ["ana", "ben", "cid"] {
        issue_client_cert(&certs, user, &w.clients).unwrap();
    }
    let mut root = w.admin(Some("root"), None).await;
    let tenant = |name: &str, prefix: &str, produce: u64, stored: u64| v1::TenantInfo {
        name: name.into(),
        prefix: prefix.into(),
        produce_bytes_per_s: produce,
        stored_bytes: stored,
        ..Default::default()
    };
    assert!(root
        .put_tenant(tenant("lab-a", "a.", 2_000_000, 0))
        .await
        .unwrap());
    root.put_tenant(tenant("lab-b", "b.", 0, 0)).await.unwrap();
    root.put_tenant(tenant("lab-c", "c.", 0, 64 << 10))
        .await
        .unwrap();
    // Prefixes may not overlap.
    let e = root
        .put_tenant(tenant("lab-x", "a.x", 0, 0))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("overlaps"), "{e}");
    root.put_user("ana", &[], Some("lab-a")).await.unwrap();
    root.put_user("ben", &[], Some("lab-b")).await.unwrap();
    root.put_user("cid", &[], Some("lab-c")).await.unwrap();
    // Even an ACL entry that allows everyone everything does not open
    // another tenant's topics.
    root.grant_acl(&["allow User:* all topic:*".into()])
        .await
        .unwrap();
    let cfg = |partitions| v1::TopicConfig {
        partitions,
        ..Default::default()
    };
    for t in ["a.frames", "b.frames", "c.frames", "shared"] {
        root.create_topic(t, cfg(1)).await.unwrap();
    }

    let mut ana_admin = w.admin(Some("ana"), None).await;
    assert_eq!(
        ana_admin.list_topics().await.unwrap(),
        vec!["a.frames".to_string()]
    );
    let e = ana_admin.describe_topic("b.frames").await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::PermissionDenied), "{e}");
    assert!(
        e.to_string()
            .contains("tenant lab-a owns only topics under 'a.'"),
        "{e}"
    );
    // Its users may create topics under their prefix, and only there.
    ana_admin.create_topic("a.more", cfg(1)).await.unwrap();
    let e = ana_admin.create_topic("b.mine", cfg(1)).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::PermissionDenied), "{e}");
    let ana = w.data(Some("ana"), None).await.unwrap();
    for body in [
        Body::MetadataRequest(v1::MetadataRequest {
            topic: "b.frames".into(),
        }),
        Body::ProduceRequest(v1::ProduceRequest {
            topic: "b.frames".into(),
            partition: 0,
            batch: batch(),
        }),
        Body::FetchRequest(v1::FetchRequest {
            topic: "b.frames".into(),
            partition: 0,
            offset: 0,
            max_bytes: 1 << 20,
            max_wait_ms: 0,
            metadata_only: false,
        }),
    ] {
        let e = ana.call(body).await.unwrap_err();
        assert_eq!(code(&e), Some(ErrorCode::PermissionDenied), "{e}");
    }

    // lab-a's produce quota (2 MB/s, a burst of one second's worth): 6 MB
    // take at least (6 − 2) / 2 = 2 s, all of it acknowledged.
    let p = Producer::new(&ana, ProducerConfig::new("a.frames"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut acks = Vec::new();
    for _ in 0..24 {
        acks.push(
            p.send(payload_item(Bytes::from(vec![7u8; 250_000])))
                .await
                .unwrap(),
        );
    }
    for a in acks {
        a.await.unwrap();
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800),
        "6 MB at 2 MB/s took {took:?}"
    );
    assert!(
        w.node
            .broker()
            .guard
            .throttled_ms
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert_eq!(
        w.node.broker().topic("a.frames").unwrap().partitions[0]
            .log
            .next_offset(),
        24
    );

    // lab-c may keep 64 KiB: the batch that would go past it is refused
    // whole, and what was acknowledged before stays.
    let cid = w.data(Some("cid"), None).await.unwrap();
    let mut stored = 0u64;
    let refused = loop {
        let r = cid
            .call(Body::ProduceRequest(v1::ProduceRequest {
                topic: "c.frames".into(),
                partition: 0,
                batch: {
                    let mut b = BatchBuilder::new(Compression::None);
                    b.push(&[1u8; 10_000], 1);
                    b.finish()
                },
            }))
            .await;
        match r {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(
            stored < 100,
            "the stored-bytes quota never stopped the tenant"
        );
    };
    assert_eq!(code(&refused), Some(ErrorCode::LimitExceeded), "{refused}");
    assert!(
        refused.to_string().contains("stored_bytes quota"),
        "{refused}"
    );
    assert!(
        (5..=7).contains(&stored),
        "{stored} batches of 10 kB under 64 KiB"
    );
    assert_eq!(
        w.node.broker().topic("c.frames").unwrap().partitions[0]
            .log
            .next_offset(),
        stored
    );
    let listed = root.list_tenants().await.unwrap();
    let c = listed.iter().find(|t| t.name == "lab-c").unwrap();
    assert!(
        c.stored_bytes_used > 0 && c.stored_bytes_used <= 64 << 10,
        "{c:?}"
    );
}
