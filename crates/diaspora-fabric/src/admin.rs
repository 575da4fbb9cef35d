//! The gRPC admin plane (tonic): topics, group offsets, stats, health.
//! A thin shell over [`Broker`]; the [`AdminClient`] wraps the generated client.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use diaspora_proto::v1::{self, admin_client, admin_server};
use tonic::{Request, Response, Status};

use crate::broker::{Broker, TopicSettings};
use crate::error::FabricError;

fn status(e: FabricError) -> Status {
    use diaspora_proto::v1::ErrorCode as C;
    let msg = e.to_string();
    match e.code() {
        C::UnknownTopic | C::UnknownPartition | C::UnknownMember => Status::not_found(msg),
        C::TopicExists => Status::already_exists(msg),
        C::InvalidRequest => Status::invalid_argument(msg),
        C::LimitExceeded | C::ItemTooLarge | C::BatchTooLarge | C::TooManyInFlight => {
            Status::resource_exhausted(msg)
        }
        _ => Status::internal(msg),
    }
}

/// The tonic service implementation.
pub struct AdminService {
    broker: Arc<Broker>,
}

impl AdminService {
    /// A service over `broker`.
    pub fn new(broker: Arc<Broker>) -> Self {
        AdminService { broker }
    }

    /// The tonic server wrapper.
    pub fn into_server(self) -> admin_server::AdminServer<AdminService> {
        admin_server::AdminServer::new(self)
    }
}

#[tonic::async_trait]
impl admin_server::Admin for AdminService {
    async fn create_topic(
        &self,
        req: Request<v1::CreateTopicRequest>,
    ) -> Result<Response<v1::CreateTopicResponse>, Status> {
        let r = req.into_inner();
        let b = self.broker.clone();
        let settings = TopicSettings::from_config(r.config.unwrap_or_default());
        tokio::task::spawn_blocking(move || b.create_topic(&r.name, settings))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(v1::CreateTopicResponse {}))
    }

    async fn list_topics(
        &self,
        _req: Request<v1::ListTopicsRequest>,
    ) -> Result<Response<v1::ListTopicsResponse>, Status> {
        Ok(Response::new(v1::ListTopicsResponse {
            names: self.broker.list_topics(),
        }))
    }

    async fn describe_topic(
        &self,
        req: Request<v1::DescribeTopicRequest>,
    ) -> Result<Response<v1::DescribeTopicResponse>, Status> {
        let name = req.into_inner().name;
        let t = self.broker.topic(&name).map_err(status)?;
        Ok(Response::new(v1::DescribeTopicResponse {
            name,
            config: Some(t.settings.to_config()),
            partitions: t
                .partitions
                .iter()
                .enumerate()
                .map(|(i, p)| v1::PartitionDescription {
                    partition: i as u32,
                    start_offset: p.log.start_offset(),
                    next_offset: p.log.next_offset(),
                    size_bytes: p.log.size_bytes(),
                    segments: p.log.segment_count() as u32,
                })
                .collect(),
        }))
    }

    async fn delete_topic(
        &self,
        req: Request<v1::DeleteTopicRequest>,
    ) -> Result<Response<v1::DeleteTopicResponse>, Status> {
        let name = req.into_inner().name;
        let b = self.broker.clone();
        tokio::task::spawn_blocking(move || b.delete_topic(&name))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(v1::DeleteTopicResponse {}))
    }

    async fn group_offsets(
        &self,
        req: Request<v1::GroupOffsetsRequest>,
    ) -> Result<Response<v1::GroupOffsetsResponse>, Status> {
        let r = req.into_inner();
        let t = self.broker.topic(&r.topic).map_err(status)?;
        let committed = self.broker.group_offsets(&r.group, &r.topic);
        let offsets = t
            .partitions
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let c = *committed.get(&(i as u32))?;
                let next = p.log.next_offset();
                Some(v1::GroupPartitionOffset {
                    partition: i as u32,
                    committed: c,
                    next_offset: next,
                    lag: next.saturating_sub(c),
                })
            })
            .collect();
        Ok(Response::new(v1::GroupOffsetsResponse { offsets }))
    }

    async fn commit_group_offset(
        &self,
        req: Request<v1::CommitGroupOffsetRequest>,
    ) -> Result<Response<v1::CommitGroupOffsetResponse>, Status> {
        let r = req.into_inner();
        let b = self.broker.clone();
        tokio::task::spawn_blocking(move || {
            b.commit_offset(&r.group, &r.topic, r.partition, r.offset)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(status)?;
        Ok(Response::new(v1::CommitGroupOffsetResponse {}))
    }

    async fn stats(
        &self,
        _req: Request<v1::StatsRequest>,
    ) -> Result<Response<v1::StatsResponse>, Status> {
        let b = &self.broker;
        let c = &b.counters;
        let topics = b.list_topics();
        let partitions = topics
            .iter()
            .filter_map(|t| b.topic(t).ok())
            .map(|t| t.settings.partitions)
            .sum();
        Ok(Response::new(v1::StatsResponse {
            node_id: b.node_id().to_string(),
            uptime_ms: b.uptime().as_millis() as u64,
            topics: topics.len() as u32,
            partitions,
            items_appended: c.items_appended.load(Ordering::Relaxed),
            bytes_appended: c.bytes_appended.load(Ordering::Relaxed),
            items_fetched: c.items_fetched.load(Ordering::Relaxed),
            bytes_fetched: c.bytes_fetched.load(Ordering::Relaxed),
            connections_open: c.connections_open.load(Ordering::Relaxed),
            connections_total: c.connections_total.load(Ordering::Relaxed),
            malformed_frames: c.malformed_frames.load(Ordering::Relaxed),
            duplicate_batches: c.duplicate_batches.load(Ordering::Relaxed),
            storage_bytes: b.storage_bytes(),
        }))
    }

    async fn health(
        &self,
        _req: Request<v1::HealthRequest>,
    ) -> Result<Response<v1::HealthResponse>, Status> {
        Ok(Response::new(v1::HealthResponse {
            serving: true,
            node_id: self.broker.node_id().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }
}

/// A client of the admin plane, verifying the node against a CA file.
pub struct AdminClient {
    inner: admin_client::AdminClient<tonic::transport::Channel>,
}

fn remote(e: Status) -> FabricError {
    use diaspora_proto::v1::ErrorCode as C;
    let code = match e.code() {
        tonic::Code::NotFound => C::UnknownTopic,
        tonic::Code::AlreadyExists => C::TopicExists,
        tonic::Code::InvalidArgument => C::InvalidRequest,
        tonic::Code::ResourceExhausted => C::LimitExceeded,
        _ => C::Internal,
    };
    FabricError::Remote {
        code,
        message: e.message().to_string(),
    }
}

impl AdminClient {
    /// Connects over TLS to `addr`, trusting only the CA in `ca_file`.
    pub async fn connect(addr: SocketAddr, ca_file: &Path) -> Result<AdminClient, FabricError> {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
        let ca = std::fs::read(ca_file)
            .map_err(|e| FabricError::io(format!("read CA {}", ca_file.display()), e))?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name("localhost");
        let conn_err = |e: tonic::transport::Error| FabricError::Connection {
            addr: addr.to_string(),
            message: format!("{e}{}", source_chain(&e)),
        };
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(conn_err)?
            .tls_config(tls)
            .map_err(conn_err)?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .map_err(conn_err)?;
        Ok(AdminClient {
            inner: admin_client::AdminClient::new(channel),
        })
    }

    /// Creates a topic.
    pub async fn create_topic(
        &mut self,
        name: &str,
        config: v1::TopicConfig,
    ) -> Result<(), FabricError> {
        self.inner
            .create_topic(v1::CreateTopicRequest {
                name: name.into(),
                config: Some(config),
            })
            .await
            .map_err(remote)?;
        Ok(())
    }

    /// Lists topic names.
    pub async fn list_topics(&mut self) -> Result<Vec<String>, FabricError> {
        Ok(self
            .inner
            .list_topics(v1::ListTopicsRequest {})
            .await
            .map_err(remote)?
            .into_inner()
            .names)
    }

    /// Describes a topic.
    pub async fn describe_topic(
        &mut self,
        name: &str,
    ) -> Result<v1::DescribeTopicResponse, FabricError> {
        Ok(self
            .inner
            .describe_topic(v1::DescribeTopicRequest { name: name.into() })
            .await
            .map_err(remote)?
            .into_inner())
    }

    /// Deletes a topic.
    pub async fn delete_topic(&mut self, name: &str) -> Result<(), FabricError> {
        self.inner
            .delete_topic(v1::DeleteTopicRequest { name: name.into() })
            .await
            .map_err(remote)?;
        Ok(())
    }

    /// Committed offsets and lag of a group on a topic.
    pub async fn group_offsets(
        &mut self,
        group: &str,
        topic: &str,
    ) -> Result<v1::GroupOffsetsResponse, FabricError> {
        Ok(self
            .inner
            .group_offsets(v1::GroupOffsetsRequest {
                group: group.into(),
                topic: topic.into(),
            })
            .await
            .map_err(remote)?
            .into_inner())
    }

    /// Sets a group's committed offset.
    pub async fn commit_group_offset(
        &mut self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), FabricError> {
        self.inner
            .commit_group_offset(v1::CommitGroupOffsetRequest {
                group: group.into(),
                topic: topic.into(),
                partition,
                offset,
            })
            .await
            .map_err(remote)?;
        Ok(())
    }

    /// Node statistics.
    pub async fn stats(&mut self) -> Result<v1::StatsResponse, FabricError> {
        Ok(self
            .inner
            .stats(v1::StatsRequest {})
            .await
            .map_err(remote)?
            .into_inner())
    }

    /// Health check.
    pub async fn health(&mut self) -> Result<v1::HealthResponse, FabricError> {
        Ok(self
            .inner
            .health(v1::HealthRequest {})
            .await
            .map_err(remote)?
            .into_inner())
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = String::new();
    let mut cur = e.source();
    let top = e.to_string();
    while let Some(c) = cur {
        let text = c.to_string();
        // Wrapped errors often repeat their source's message; say it once.
        if !top.contains(&text) && !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
