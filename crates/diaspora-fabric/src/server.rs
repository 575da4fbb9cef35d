//! The QUIC data plane of a node: accepts connections, and on every
//! bidirectional stream reads request frames, runs them against the
//! [`Broker`] in order, and writes responses.
//!
//! Per stream there are three parts: a reader that decodes frames and queues
//! them (at most `in_flight_max` waiting — one more is answered with
//! `TOO_MANY_IN_FLIGHT`), a worker that executes them in order, and a writer.
//! A malformed frame gets an `Error` frame with `MALFORMED_FRAME`, then that
//! stream alone is closed; the connection and every other stream go on.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use diaspora_proto::frame::encode_frame_chunks;
use diaspora_proto::v1::{self, frame::Body, ErrorCode};
use diaspora_proto::{encode_frame, PROTOCOL_VERSION};
use tokio::sync::mpsc;

use crate::auth::{principal_from_cert_der, Operation, Principal, Resource, ResourceKind};
use crate::broker::Broker;
use crate::error::FabricError;
use crate::guard::Session;
use crate::wire::{read_frame, ReadFrameError};
use parking_lot::RwLock;

/// QUIC application error code used when a stream is closed for a malformed frame.
pub const STREAM_CLOSE_MALFORMED: u32 = 1;
/// QUIC application error code used when the node shuts down.
pub const CONN_CLOSE_SHUTDOWN: u32 = 0;

pub(crate) fn error_body(err: &FabricError) -> Body {
    Body::Error(v1::Error {
        code: err.code() as i32,
        message: err.to_string(),
    })
}

/// Accepts connections until the endpoint is closed.
pub(crate) async fn accept_loop(endpoint: quinn::Endpoint, broker: Arc<Broker>) {
    while let Some(incoming) = endpoint.accept().await {
        let open = broker.counters.connections_open.load(Ordering::Relaxed);
        if open >= u64::from(broker.config().limits.connections_max) {
            tracing::warn!(open, "refusing connection: connections_max reached");
            incoming.refuse();
            continue;
        }
        let broker = broker.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => {
                    broker
                        .counters
                        .connections_open
                        .fetch_add(1, Ordering::Relaxed);
                    broker
                        .counters
                        .connections_total
                        .fetch_add(1, Ordering::Relaxed);
                    let certificate = connection_principal(&conn);
                    tracing::debug!(%remote, principal = ?certificate, "connection");
                    let session = Arc::new(RwLock::new(Session::from_certificate(certificate)));
                    serve_connection(conn, broker.clone(), session).await;
                    broker
                        .counters
                        .connections_open
                        .fetch_sub(1, Ordering::Relaxed);
                }
                Err(e) => tracing::debug!(%remote, error = %e, "handshake failed"),
            }
        });
    }
}

/// The user a connection's client certificate names (TLS has verified the
/// chain against the node's CA), if it presented one.
fn connection_principal(conn: &quinn::Connection) -> Option<Principal> {
    let first = conn
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|chain| chain.first().cloned());
    match principal_from_cert_der(&first?) {
        Ok(p) => Some(p),
        Err(e) => {
            // The chain is the node CA's own, so this is a certificate the
            // CA should not have signed; the client stays anonymous.
            tracing::warn!(remote = %conn.remote_address(), error = %e, "client certificate names no user; treating the client as anonymous");
            None
        }
    }
}

/// A connection's session, shared by its streams: a token presented in a
/// Hello on one stream authenticates them all.
type SharedSession = Arc<RwLock<Session>>;

async fn serve_connection(conn: quinn::Connection, broker: Arc<Broker>, session: SharedSession) {
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(serve_stream(send, recv, broker.clone(), session.clone()));
            }
            Err(e) => {
                tracing::debug!(remote = %conn.remote_address(), reason = %e, "connection ended");
                return;
            }
        }
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    broker: Arc<Broker>,
    session: SharedSession,
) {
    let limits = broker.config().limits.clone();
    let frame_max = limits.frame_bytes_max();
    let in_flight_max = limits.in_flight_max.max(1) as usize;
    let (req_tx, mut req_rx) = mpsc::channel::<v1::Frame>(in_flight_max);
    let (resp_tx, mut resp_rx) = mpsc::channel::<Vec<Bytes>>(in_flight_max + 8);

    let writer = tokio::spawn(async move {
        while let Some(mut chunks) = resp_rx.recv().await {
            if send.write_all_chunks(&mut chunks).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
        // Let the peer read the final frames before the stream is dropped.
        let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
    });

    let worker_resp = resp_tx.clone();
    let worker_broker = broker.clone();
    let worker = tokio::spawn(async move {
        while let Some(frame) = req_rx.recv().await {
            let id = frame.id;
            let body = handle(&worker_broker, &session, frame).await;
            let wire = encode_frame_chunks(&v1::Frame {
                id,
                body: Some(body),
            });
            if worker_resp.send(wire).await.is_err() {
                return;
            }
        }
    });

    loop {
        match read_frame(&mut recv, frame_max).await {
            Ok(Some(frame)) => {
                let id = frame.id;
                if let Err(mpsc::error::TrySendError::Full(_)) = req_tx.try_send(frame) {
                    let err = FabricError::Limit {
                        what: "in-flight requests on this stream".into(),
                        unit: "",
                        value: in_flight_max as u64 + 1,
                        limit_name: "in_flight_max",
                        limit: in_flight_max as u64,
                    };
                    let wire = encode_frame(&v1::Frame {
                        id,
                        body: Some(error_body(&err)),
                    });
                    if resp_tx.send(vec![wire]).await.is_err() {
                        break;
                    }
                }
            }
            Ok(None) => break,
            Err(ReadFrameError::Stream(e)) => {
                tracing::debug!(error = %e, "stream read ended");
                break;
            }
            Err(e) => {
                broker
                    .counters
                    .malformed_frames
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "closing stream: malformed frame");
                // The reason goes out at once; requests still queued are dropped
                // with the stream (the client sees the stream-level error).
                drop(req_tx);
                worker.abort();
                let body = Body::Error(v1::Error {
                    code: ErrorCode::MalformedFrame as i32,
                    message: format!("{e}; closing this stream"),
                });
                let _ = resp_tx
                    .send(vec![encode_frame(&v1::Frame {
                        id: 0,
                        body: Some(body),
                    })])
                    .await;
                drop(resp_tx);
                let _ = recv.stop(quinn::VarInt::from_u32(STREAM_CLOSE_MALFORMED));
                let _ = writer.await;
                return;
            }
        }
    }
    drop(req_tx);
    let _ = worker.await;
    drop(resp_tx);
    let _ = writer.await;
}

/// Executes one request against the broker.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    session: &RwLock<Session>,
    frame: v1::Frame,
) -> Body {
    let result = handle_inner(broker, session, frame).await;
    result.unwrap_or_else(|e| error_body(&e))
}

/// Checks one request against the node's auth mode and ACL (nothing to do
/// in dev mode). Runs before the request touches any state.
fn check(
    broker: &Broker,
    session: &RwLock<Session>,
    operation: Operation,
    kind: ResourceKind,
    name: &str,
) -> Result<(), FabricError> {
    if !broker.guard.enforcing() {
        return Ok(());
    }
    let resource = Resource {
        kind,
        name: name.to_string(),
    };
    broker
        .guard
        .authorize(&session.read(), operation, &resource)
}

async fn handle_inner(
    broker: &Arc<Broker>,
    session: &RwLock<Session>,
    frame: v1::Frame,
) -> Result<Body, FabricError> {
    use Operation as Op;
    use ResourceKind::{Group, Topic};
    let limits = &broker.config().limits;
    let body = frame
        .body
        .ok_or_else(|| FabricError::Invalid("frame without body".into()))?;
    Ok(match body {
        Body::Hello(h) => {
            if h.protocol_version != PROTOCOL_VERSION {
                return Ok(Body::Error(v1::Error {
                    code: ErrorCode::UnsupportedVersion as i32,
                    message: format!(
                        "protocol version {} is not supported; this node speaks {PROTOCOL_VERSION}",
                        h.protocol_version
                    ),
                }));
            }
            if !h.token.is_empty() {
                let mut s = session.write();
                broker.guard.present_token(&mut s, &h.token)?;
            }
            let principal = session.read().principal.to_string();
            Body::HelloOk(v1::HelloOk {
                protocol_version: PROTOCOL_VERSION,
                node_id: broker.node_id().to_string(),
                frame_bytes_max: limits.frame_bytes_max(),
                item_bytes_max: limits.item_bytes_max,
                batch_bytes_max: limits.batch_bytes_max,
                in_flight_max: limits.in_flight_max,
                principal,
            })
        }
        Body::MetadataRequest(m) => {
            check(broker, session, Op::Describe, Topic, &m.topic)?;
            let t = broker.topic(&m.topic)?;
            Body::MetadataResponse(v1::MetadataResponse {
                topic: m.topic,
                partitions: t
                    .partitions
                    .iter()
                    .enumerate()
                    .map(|(i, p)| v1::PartitionInfo {
                        partition: i as u32,
                        start_offset: p.log.start_offset(),
                        next_offset: p.log.next_offset(),
                    })
                    .collect(),
            })
        }
        Body::ProduceRequest(p) => {
            check(broker, session, Op::Write, Topic, &p.topic)?;
            let quota = broker.guard.stored_quota(&session.read());
            if let Some((tenant, prefix, quota)) = quota {
                let used = broker.storage_bytes_under(&prefix);
                let after = used + p.batch.len() as u64;
                if after > quota {
                    return Err(FabricError::Limit {
                        what: format!("tenant {tenant}'s stored bytes with this batch:"),
                        unit: " bytes",
                        value: after,
                        limit_name: "its stored_bytes quota",
                        limit: quota,
                    });
                }
            }
            let produced = p.batch.len() as u64;
            let big = p.batch.len() > (256 << 10)
                || matches!(broker.config().fsync, diaspora_log::FsyncPolicy::Always);
            let ack = if big {
                // Writes that may block on the disk run on the blocking pool.
                let b = broker.clone();
                tokio::task::spawn_blocking(move || b.produce(&p.topic, p.partition, p.batch))
                    .await
                    .map_err(|e| FabricError::Invalid(format!("append task: {e}")))??
            } else {
                broker.produce(&p.topic, p.partition, p.batch)?
            };
            // A tenant over its produce rate: the batch is stored and
            // acknowledged, the answer held back (throttling, not refusal).
            let wait = broker.guard.throttle(&session.read(), true, produced);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Body::ProduceResponse(v1::ProduceResponse {
                base_offset: ack.base_offset,
                last_offset: ack.last_offset,
                duplicate: ack.duplicate,
            })
        }
        Body::FetchRequest(f) => {
            check(broker, session, Op::Read, Topic, &f.topic)?;
            let r = broker
                .fetch(
                    &f.topic,
                    f.partition,
                    f.offset,
                    f.max_bytes,
                    Duration::from_millis(f.max_wait_ms.into()),
                )
                .await?;
            let fetched: u64 = r.batches.iter().map(|b| b.len() as u64).sum();
            let wait = broker.guard.throttle(&session.read(), false, fetched);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            if f.metadata_only {
                Body::FetchResponse(v1::FetchResponse {
                    batches: Vec::new(),
                    start_offset: r.start_offset,
                    next_offset: r.next_offset,
                    items: metadata_of(&f.topic, f.partition, f.offset, &r.batches)?,
                })
            } else {
                Body::FetchResponse(v1::FetchResponse {
                    batches: r.batches,
                    start_offset: r.start_offset,
                    next_offset: r.next_offset,
                    items: Vec::new(),
                })
            }
        }
        Body::PayloadRequest(q) => {
            check(broker, session, Op::Read, Topic, &q.topic)?;
            let r = broker
                .fetch(&q.topic, q.partition, q.offset, 1, Duration::ZERO)
                .await?;
            let topic: Arc<str> = q.topic.as_str().into();
            let mut items = Vec::new();
            for b in &r.batches {
                crate::item::decode_batch_items_into(&topic, q.partition, b, q.offset, &mut items)?;
            }
            match items.into_iter().find(|i| i.offset == q.offset) {
                Some(i) => Body::PayloadResponse(v1::PayloadResponse {
                    payload: i.item.payload,
                }),
                None => {
                    return Err(diaspora_log::LogError::OffsetOutOfRange {
                        requested: q.offset,
                        start: r.start_offset,
                        next: r.next_offset,
                    }
                    .into())
                }
            }
        }
        Body::OffsetCommitRequest(c) => {
            check(broker, session, Op::Commit, Group, &c.group)?;
            check(broker, session, Op::Read, Topic, &c.topic)?;
            let b = broker.clone();
            tokio::task::spawn_blocking(move || {
                b.commit_offset_fenced(
                    &c.group,
                    &c.topic,
                    c.partition,
                    c.offset,
                    &c.member_id,
                    c.generation,
                    c.seek,
                )
            })
            .await
            .map_err(|e| FabricError::Invalid(format!("commit task: {e}")))??;
            Body::OffsetCommitResponse(v1::OffsetCommitResponse {})
        }
        Body::OffsetFetchRequest(o) => {
            check(broker, session, Op::Describe, Group, &o.group)?;
            check(broker, session, Op::Describe, Topic, &o.topic)?;
            broker.topic(&o.topic)?;
            Body::OffsetFetchResponse(v1::OffsetFetchResponse {
                offsets: broker
                    .group_offsets(&o.group, &o.topic)
                    .into_iter()
                    .map(|(partition, offset)| v1::PartitionOffset { partition, offset })
                    .collect(),
            })
        }
        Body::JoinGroupRequest(j) => {
            check(broker, session, Op::Commit, Group, &j.group)?;
            check(broker, session, Op::Read, Topic, &j.topic)?;
            // 0 (the protobuf default) means the default session timeout of 10 s.
            let ms = if j.session_timeout_ms == 0 {
                10_000
            } else {
                j.session_timeout_ms.clamp(100, 300_000)
            };
            let timeout = Duration::from_millis(u64::from(ms));
            let member = broker.join_group(&j.group, &j.topic, &j.member_id, timeout)?;
            // The answer waits until every live member has re-joined (or
            // the rebalance timeout has passed): see crate::group.
            let a = loop {
                if let Some(a) = broker.poll_join(&j.group, &j.topic, &member)? {
                    break a;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            Body::JoinGroupResponse(v1::JoinGroupResponse {
                member_id: a.member_id,
                generation: a.generation,
                partitions: a.partitions,
            })
        }
        Body::HeartbeatRequest(h) => {
            check(broker, session, Op::Commit, Group, &h.group)?;
            let topic = if h.topic.is_empty() {
                broker.member_topic(&h.group, &h.member_id).ok_or_else(|| {
                    FabricError::Group(format!(
                        "member '{}' is not in group '{}' (expired or never joined)",
                        h.member_id, h.group
                    ))
                })?
            } else {
                h.topic
            };
            let generation = broker.heartbeat(&h.group, &topic, &h.member_id)?;
            Body::HeartbeatResponse(v1::HeartbeatResponse { generation })
        }
        Body::LeaveGroupRequest(l) => {
            check(broker, session, Op::Commit, Group, &l.group)?;
            let topic = if l.topic.is_empty() {
                broker.member_topic(&l.group, &l.member_id)
            } else {
                Some(l.topic)
            };
            if let Some(topic) = topic {
                broker.leave_group(&l.group, &topic, &l.member_id);
            }
            Body::LeaveGroupResponse(v1::LeaveGroupResponse {})
        }
        other => {
            return Err(FabricError::Invalid(format!(
                "frame type {} is not a request",
                body_name(&other)
            )))
        }
    })
}

/// The items of `batches` at or after `from_offset`, each with its payload
/// left out (for a `metadata_only` fetch).
fn metadata_of(
    topic: &str,
    partition: u32,
    from_offset: u64,
    batches: &[Bytes],
) -> Result<Vec<v1::ItemMeta>, FabricError> {
    let topic: Arc<str> = topic.into();
    let mut items = Vec::new();
    for b in batches {
        crate::item::decode_batch_items_into(&topic, partition, b, from_offset, &mut items)?;
    }
    Ok(items
        .into_iter()
        .map(|c| {
            let mut item = c.item;
            let payload_bytes = item.payload.len() as u64;
            item.payload = Bytes::new();
            v1::ItemMeta {
                offset: c.offset,
                item: Some(item),
                payload_bytes,
                record_bytes: c.record_bytes as u64,
            }
        })
        .collect())
}

/// The name of a frame body, for messages.
pub fn body_name(b: &Body) -> &'static str {
    match b {
        Body::Hello(_) => "Hello",
        Body::HelloOk(_) => "HelloOk",
        Body::Error(_) => "Error",
        Body::MetadataRequest(_) => "MetadataRequest",
        Body::MetadataResponse(_) => "MetadataResponse",
        Body::ProduceRequest(_) => "ProduceRequest",
        Body::ProduceResponse(_) => "ProduceResponse",
        Body::FetchRequest(_) => "FetchRequest",
        Body::FetchResponse(_) => "FetchResponse",
        Body::OffsetCommitRequest(_) => "OffsetCommitRequest",
        Body::OffsetCommitResponse(_) => "OffsetCommitResponse",
        Body::OffsetFetchRequest(_) => "OffsetFetchRequest",
        Body::OffsetFetchResponse(_) => "OffsetFetchResponse",
        Body::JoinGroupRequest(_) => "JoinGroupRequest",
        Body::JoinGroupResponse(_) => "JoinGroupResponse",
        Body::HeartbeatRequest(_) => "HeartbeatRequest",
        Body::HeartbeatResponse(_) => "HeartbeatResponse",
        Body::LeaveGroupRequest(_) => "LeaveGroupRequest",
        Body::LeaveGroupResponse(_) => "LeaveGroupResponse",
        Body::PayloadRequest(_) => "PayloadRequest",
        Body::PayloadResponse(_) => "PayloadResponse",
    }
}
