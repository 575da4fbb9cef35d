//! The gRPC admin plane (tonic): topics, group offsets, stats, health.
//! A thin shell over [`Broker`]; the [`AdminClient`] wraps the generated client.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use diaspora_proto::v1::{self, admin_client, admin_server};
use tonic::{Request, Response, Status};

use crate::auth::{principal_from_cert_der, Operation, Principal, Resource};
use crate::broker::{Broker, TopicSettings};
use crate::error::FabricError;
use crate::guard::{Guard, Session};

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
        C::PermissionDenied => Status::permission_denied(msg),
        C::Unauthenticated => Status::unauthenticated(msg),
        _ => Status::internal(msg),
    }
}

/// Metadata key of a bearer token on the admin plane (`Bearer TOKEN`).
pub const AUTHORIZATION: &str = "authorization";

/// Who an admin call is: its TLS client certificate and/or the bearer
/// token in its `authorization` metadata, checked against the mode.
fn session_of<T>(guard: &Guard, req: &Request<T>) -> Result<Session, Status> {
    let certificate = req
        .peer_certs()
        .and_then(|chain| chain.first().cloned())
        .and_then(|der| principal_from_cert_der(&der).ok());
    let mut session = Session::from_certificate(certificate);
    if let Some(v) = req.metadata().get(AUTHORIZATION) {
        let token = v
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("authorization metadata must be `Bearer TOKEN`")
            })?;
        guard
            .present_token(&mut session, token.trim())
            .map_err(status)?;
    }
    Ok(session)
}

fn token_info(r: &crate::auth::TokenRecord) -> v1::TokenInfo {
    v1::TokenInfo {
        id: r.id.clone(),
        user: r.user.clone(),
        description: r.description.clone(),
        created_us: r.created_us,
        expires_us: r.expires_us.unwrap_or(0),
        revoked_us: r.revoked_us.unwrap_or(0),
    }
}

fn invalid(e: impl std::fmt::Display) -> FabricError {
    FabricError::Invalid(e.to_string())
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

    /// The caller's session, checked for `operation` on `resource`.
    fn authorize<T>(
        &self,
        req: &Request<T>,
        operation: Operation,
        resource: Resource,
    ) -> Result<Session, Status> {
        let guard = &self.broker.guard;
        let session = session_of(guard, req)?;
        guard
            .authorize(&session, operation, &resource)
            .map_err(status)?;
        Ok(session)
    }

    /// Applies an auth change (needs `alter cluster`) durably.
    fn change<T, R>(
        &self,
        req: &Request<T>,
        what: String,
        f: impl FnOnce(&mut crate::auth::AuthState) -> Result<R, FabricError>,
    ) -> Result<R, Status> {
        let session = self.authorize(req, Operation::Alter, Resource::cluster())?;
        self.broker
            .guard
            .change(&session.principal, &what, f)
            .map_err(status)
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
        self.authorize(
            &req,
            Operation::Create,
            Resource::topic(&req.get_ref().name),
        )?;
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
        req: Request<v1::ListTopicsRequest>,
    ) -> Result<Response<v1::ListTopicsResponse>, Status> {
        // Like Kafka: the list holds the topics the caller may describe.
        let guard = &self.broker.guard;
        let session = session_of(guard, &req)?;
        guard.authenticated(&session).map_err(status)?;
        let names = self
            .broker
            .list_topics()
            .into_iter()
            .filter(|t| guard.allows(&session, Operation::Describe, &Resource::topic(t)))
            .collect();
        Ok(Response::new(v1::ListTopicsResponse { names }))
    }

    async fn describe_topic(
        &self,
        req: Request<v1::DescribeTopicRequest>,
    ) -> Result<Response<v1::DescribeTopicResponse>, Status> {
        self.authorize(
            &req,
            Operation::Describe,
            Resource::topic(&req.get_ref().name),
        )?;
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
        self.authorize(
            &req,
            Operation::Delete,
            Resource::topic(&req.get_ref().name),
        )?;
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
        self.authorize(
            &req,
            Operation::Describe,
            Resource::group(&req.get_ref().group),
        )?;
        self.authorize(
            &req,
            Operation::Describe,
            Resource::topic(&req.get_ref().topic),
        )?;
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
        // Setting a group's position from outside is a seek: `alter`.
        self.authorize(
            &req,
            Operation::Alter,
            Resource::group(&req.get_ref().group),
        )?;
        self.authorize(
            &req,
            Operation::Describe,
            Resource::topic(&req.get_ref().topic),
        )?;
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
        req: Request<v1::StatsRequest>,
    ) -> Result<Response<v1::StatsResponse>, Status> {
        self.authorize(&req, Operation::Describe, Resource::cluster())?;
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

    async fn put_user(
        &self,
        req: Request<v1::PutUserRequest>,
    ) -> Result<Response<v1::PutUserResponse>, Status> {
        let r = req.get_ref().clone();
        let created = self.change(&req, format!("put user {}", r.name), |s| {
            Principal::user(&r.name).map_err(invalid)?;
            let mut groups = r.groups;
            for g in &groups {
                crate::auth::valid_name("group", g).map_err(invalid)?;
            }
            let tenant = (!r.tenant.is_empty()).then_some(r.tenant);
            if let Some(t) = &tenant {
                if !s.tenants.contains_key(t) {
                    return Err(invalid(format!("no tenant {t} (create it first)")));
                }
                if !groups.contains(t) {
                    groups.push(t.clone());
                }
            }
            let user = crate::auth::User { groups, tenant };
            Ok(s.users.insert(r.name, user).is_none())
        })?;
        Ok(Response::new(v1::PutUserResponse { created }))
    }

    async fn remove_user(
        &self,
        req: Request<v1::RemoveUserRequest>,
    ) -> Result<Response<v1::RemoveUserResponse>, Status> {
        let name = req.get_ref().name.clone();
        let removed = self.change(&req, format!("remove user {name}"), |s| {
            let tokens = s.tokens.remove_user(&name);
            Ok(s.users.remove(&name).is_some() || tokens > 0)
        })?;
        Ok(Response::new(v1::RemoveUserResponse { removed }))
    }

    async fn list_users(
        &self,
        req: Request<v1::ListUsersRequest>,
    ) -> Result<Response<v1::ListUsersResponse>, Status> {
        self.authorize(&req, Operation::Describe, Resource::cluster())?;
        let users = self
            .broker
            .guard
            .state()
            .users
            .into_iter()
            .map(|(name, u)| v1::AuthUser {
                name,
                groups: u.groups,
                tenant: u.tenant.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(v1::ListUsersResponse { users }))
    }

    async fn create_token(
        &self,
        req: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let r = req.get_ref().clone();
        let user = Principal::user(&r.user).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let now = crate::item::now_us();
        let expires =
            (r.ttl_s > 0).then(|| now.saturating_add((r.ttl_s as i64).saturating_mul(1_000_000)));
        let issued = self.change(&req, format!("create token for {user}"), |s| {
            s.tokens
                .create(&user, &r.description, now, expires)
                .map_err(invalid)
        })?;
        Ok(Response::new(v1::CreateTokenResponse {
            token: issued.token.clone(),
            info: Some(token_info(&issued.record)),
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        self.authorize(&req, Operation::Describe, Resource::cluster())?;
        let user = &req.get_ref().user;
        let tokens = self
            .broker
            .guard
            .state()
            .tokens
            .list()
            .filter(|t| user.is_empty() || &t.user == user)
            .map(token_info)
            .collect();
        Ok(Response::new(v1::ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        req: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        let id = req.get_ref().id.clone();
        let revoked = self.change(&req, format!("revoke token {id}"), |s| {
            Ok(s.tokens.revoke(&id, crate::item::now_us()))
        })?;
        Ok(Response::new(v1::RevokeTokenResponse { revoked }))
    }

    async fn grant_acl(
        &self,
        req: Request<v1::AclChangeRequest>,
    ) -> Result<Response<v1::AclChangeResponse>, Status> {
        let entries = parse_entries(&req.get_ref().entries)?;
        let what = format!("grant {}", req.get_ref().entries.join("; "));
        let changed = self.change(&req, what, |s| {
            if s.acl.entries().len() + entries.len() > crate::auth::ACL_ENTRIES_MAX {
                return Err(FabricError::Limit {
                    what: "ACL entries".into(),
                    unit: "",
                    value: (s.acl.entries().len() + entries.len()) as u64,
                    limit_name: "acl_entries_max",
                    limit: crate::auth::ACL_ENTRIES_MAX as u64,
                });
            }
            Ok(entries
                .into_iter()
                .filter(|e| s.acl.grant(e.clone()))
                .count() as u32)
        })?;
        Ok(Response::new(v1::AclChangeResponse { changed }))
    }

    async fn revoke_acl(
        &self,
        req: Request<v1::AclChangeRequest>,
    ) -> Result<Response<v1::AclChangeResponse>, Status> {
        let entries = parse_entries(&req.get_ref().entries)?;
        let what = format!("revoke {}", req.get_ref().entries.join("; "));
        let changed = self.change(&req, what, |s| {
            Ok(entries.iter().filter(|e| s.acl.revoke(e)).count() as u32)
        })?;
        Ok(Response::new(v1::AclChangeResponse { changed }))
    }

    async fn list_acl(
        &self,
        req: Request<v1::ListAclRequest>,
    ) -> Result<Response<v1::ListAclResponse>, Status> {
        self.authorize(&req, Operation::Describe, Resource::cluster())?;
        let entries = self
            .broker
            .guard
            .state()
            .acl
            .entries()
            .iter()
            .map(|e| e.to_string())
            .collect();
        Ok(Response::new(v1::ListAclResponse { entries }))
    }

    async fn put_tenant(
        &self,
        req: Request<v1::PutTenantRequest>,
    ) -> Result<Response<v1::PutTenantResponse>, Status> {
        let t = req
            .get_ref()
            .tenant
            .clone()
            .ok_or_else(|| Status::invalid_argument("PutTenant needs a tenant"))?;
        let what = format!("put tenant {} (prefix {})", t.name, t.prefix);
        let created = self.change(&req, what, |s| {
            let created = s
                .tenants
                .insert(
                    t.name.clone(),
                    crate::auth::Tenant {
                        prefix: t.prefix.clone(),
                        produce_bytes_per_s: t.produce_bytes_per_s,
                        fetch_bytes_per_s: t.fetch_bytes_per_s,
                        stored_bytes: t.stored_bytes,
                    },
                )
                .is_none();
            s.check_tenants().map_err(invalid)?;
            // The tenant's users (its group) may do everything under its prefix.
            for e in [
                format!("allow Group:{} all topic:{}*", t.name, t.prefix),
                format!("allow Group:{} all group:{}*", t.name, t.prefix),
            ] {
                s.acl.grant(e.parse().map_err(invalid)?);
            }
            Ok(created)
        })?;
        Ok(Response::new(v1::PutTenantResponse { created }))
    }

    async fn list_tenants(
        &self,
        req: Request<v1::ListTenantsRequest>,
    ) -> Result<Response<v1::ListTenantsResponse>, Status> {
        self.authorize(&req, Operation::Describe, Resource::cluster())?;
        let tenants = self
            .broker
            .guard
            .state()
            .tenants
            .into_iter()
            .map(|(name, t)| v1::TenantInfo {
                stored_bytes_used: self.broker.storage_bytes_under(&t.prefix),
                name,
                prefix: t.prefix,
                produce_bytes_per_s: t.produce_bytes_per_s,
                fetch_bytes_per_s: t.fetch_bytes_per_s,
                stored_bytes: t.stored_bytes,
            })
            .collect();
        Ok(Response::new(v1::ListTenantsResponse { tenants }))
    }

    async fn who_am_i(
        &self,
        req: Request<v1::WhoAmIRequest>,
    ) -> Result<Response<v1::WhoAmIResponse>, Status> {
        let guard = &self.broker.guard;
        let session = session_of(guard, &req)?;
        guard.authenticated(&session).map_err(status)?;
        Ok(Response::new(v1::WhoAmIResponse {
            principal: session.principal.to_string(),
            groups: guard.groups_of(&session.principal),
            method: session.method().into(),
            mode: guard.mode().to_string(),
        }))
    }
}

fn parse_entries(lines: &[String]) -> Result<Vec<crate::auth::AclEntry>, Status> {
    lines
        .iter()
        .map(|l| {
            l.parse::<crate::auth::AclEntry>()
                .map_err(|e| Status::invalid_argument(format!("ACL entry `{l}`: {e}")))
        })
        .collect()
}

/// Adds `authorization: Bearer TOKEN` to every call.
#[derive(Clone)]
pub struct BearerAuth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert(AUTHORIZATION, v.clone());
        }
        Ok(req)
    }
}

/// A client of the admin plane, verifying the node against a CA file.
pub struct AdminClient {
    inner: admin_client::AdminClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerAuth>,
    >,
}

fn remote(e: Status) -> FabricError {
    use diaspora_proto::v1::ErrorCode as C;
    let code = match e.code() {
        tonic::Code::NotFound => C::UnknownTopic,
        tonic::Code::AlreadyExists => C::TopicExists,
        tonic::Code::InvalidArgument => C::InvalidRequest,
        tonic::Code::ResourceExhausted => C::LimitExceeded,
        tonic::Code::PermissionDenied => C::PermissionDenied,
        tonic::Code::Unauthenticated => C::Unauthenticated,
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
        AdminClient::connect_as(addr, ca_file, None, None).await
    }

    /// Connects presenting a client certificate and/or a bearer token.
    pub async fn connect_as(
        addr: SocketAddr,
        ca_file: &Path,
        identity: Option<&crate::tls::ClientIdentity>,
        token: Option<&str>,
    ) -> Result<AdminClient, FabricError> {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let ca = std::fs::read(ca_file)
            .map_err(|e| FabricError::io(format!("read CA {}", ca_file.display()), e))?;
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name("localhost");
        if let Some(id) = identity {
            let read = |p: &Path| {
                std::fs::read(p).map_err(|e| FabricError::io(format!("read {}", p.display()), e))
            };
            tls = tls.identity(Identity::from_pem(read(&id.cert)?, read(&id.key)?));
        }
        let bearer = match token {
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
                FabricError::Invalid("the token has characters a header cannot carry".into())
            })?),
            None => None,
        };
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
            inner: admin_client::AdminClient::with_interceptor(channel, BearerAuth(bearer)),
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

impl AdminClient {
    /// Adds a user (or replaces its groups and tenant); true when it was new.
    pub async fn put_user(
        &mut self,
        name: &str,
        groups: &[String],
        tenant: Option<&str>,
    ) -> Result<bool, FabricError> {
        Ok(self
            .inner
            .put_user(v1::PutUserRequest {
                name: name.into(),
                groups: groups.to_vec(),
                tenant: tenant.unwrap_or_default().into(),
            })
            .await
            .map_err(remote)?
            .into_inner()
            .created)
    }

    /// Removes a user and its tokens.
    pub async fn remove_user(&mut self, name: &str) -> Result<bool, FabricError> {
        Ok(self
            .inner
            .remove_user(v1::RemoveUserRequest { name: name.into() })
            .await
            .map_err(remote)?
            .into_inner()
            .removed)
    }

    /// Users and their groups.
    pub async fn list_users(&mut self) -> Result<Vec<v1::AuthUser>, FabricError> {
        Ok(self
            .inner
            .list_users(v1::ListUsersRequest {})
            .await
            .map_err(remote)?
            .into_inner()
            .users)
    }

    /// Creates a bearer token for `user` (ttl 0: until revoked).
    pub async fn create_token(
        &mut self,
        user: &str,
        description: &str,
        ttl_s: u64,
    ) -> Result<v1::CreateTokenResponse, FabricError> {
        Ok(self
            .inner
            .create_token(v1::CreateTokenRequest {
                user: user.into(),
                description: description.into(),
                ttl_s,
            })
            .await
            .map_err(remote)?
            .into_inner())
    }

    /// Tokens (of one user, or every user's with an empty name).
    pub async fn list_tokens(&mut self, user: &str) -> Result<Vec<v1::TokenInfo>, FabricError> {
        Ok(self
            .inner
            .list_tokens(v1::ListTokensRequest { user: user.into() })
            .await
            .map_err(remote)?
            .into_inner()
            .tokens)
    }

    /// Revokes a token by id.
    pub async fn revoke_token(&mut self, id: &str) -> Result<bool, FabricError> {
        Ok(self
            .inner
            .revoke_token(v1::RevokeTokenRequest { id: id.into() })
            .await
            .map_err(remote)?
            .into_inner()
            .revoked)
    }

    /// Adds ACL entries; returns how many were new.
    pub async fn grant_acl(&mut self, entries: &[String]) -> Result<u32, FabricError> {
        Ok(self
            .inner
            .grant_acl(v1::AclChangeRequest {
                entries: entries.to_vec(),
            })
            .await
            .map_err(remote)?
            .into_inner()
            .changed)
    }

    /// Removes ACL entries; returns how many were there.
    pub async fn revoke_acl(&mut self, entries: &[String]) -> Result<u32, FabricError> {
        Ok(self
            .inner
            .revoke_acl(v1::AclChangeRequest {
                entries: entries.to_vec(),
            })
            .await
            .map_err(remote)?
            .into_inner()
            .changed)
    }

    /// The ACL, one entry per line.
    pub async fn list_acl(&mut self) -> Result<Vec<String>, FabricError> {
        Ok(self
            .inner
            .list_acl(v1::ListAclRequest {})
            .await
            .map_err(remote)?
            .into_inner()
            .entries)
    }

    /// Creates a tenant (or changes its prefix and quotas); true when new.
    pub async fn put_tenant(&mut self, tenant: v1::TenantInfo) -> Result<bool, FabricError> {
        Ok(self
            .inner
            .put_tenant(v1::PutTenantRequest {
                tenant: Some(tenant),
            })
            .await
            .map_err(remote)?
            .into_inner()
            .created)
    }

    /// Tenants, with the bytes their topics hold.
    pub async fn list_tenants(&mut self) -> Result<Vec<v1::TenantInfo>, FabricError> {
        Ok(self
            .inner
            .list_tenants(v1::ListTenantsRequest {})
            .await
            .map_err(remote)?
            .into_inner()
            .tenants)
    }

    /// Who the node takes this client to be.
    pub async fn who_am_i(&mut self) -> Result<v1::WhoAmIResponse, FabricError> {
        Ok(self
            .inner
            .who_am_i(v1::WhoAmIRequest {})
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
