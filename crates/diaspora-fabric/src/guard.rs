//! The node's gatekeeper: who a connection or an admin call is
//! ([`Session`]), whether the node's auth mode is satisfied, and whether
//! the ACL allows each request ([`Guard::authorize`]). Refusals are
//! `PERMISSION_DENIED` or `UNAUTHENTICATED`, change nothing, and are
//! appended to the audit log (`DATA_DIR/auth/audit.log`, JSON lines).
//!
//! The users, tokens and ACL live in `DATA_DIR/auth/state.json`
//! ([`AuthState`]); every change is written durably before it takes effect,
//! so a restart finds them as they were.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::auth::{token_id, AuthState, Operation, Principal, Resource, ResourceKind};
use crate::error::{FabricError, Result};
use crate::item::now_us;

/// How a node authenticates its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Development: anonymous clients allowed and no ACL checked. Said so
    /// at startup; `diaspora serve` takes it only on a loopback address
    /// unless asked for by name.
    #[default]
    Dev,
    /// A client certificate signed by the node's CA is required.
    Certificate,
    /// A bearer token is required.
    Token,
    /// Either a client certificate or a token.
    CertificateOrToken,
    /// Both, naming the same user.
    CertificateAndToken,
}

impl AuthMode {
    /// Every mode, by name.
    pub const ALL: [AuthMode; 5] = [
        AuthMode::Dev,
        AuthMode::Certificate,
        AuthMode::Token,
        AuthMode::CertificateOrToken,
        AuthMode::CertificateAndToken,
    ];

    /// The mode's name as `--auth` takes it.
    pub fn name(self) -> &'static str {
        match self {
            AuthMode::Dev => "dev",
            AuthMode::Certificate => "cert",
            AuthMode::Token => "token",
            AuthMode::CertificateOrToken => "cert-or-token",
            AuthMode::CertificateAndToken => "cert-and-token",
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AuthMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        AuthMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!("unknown auth mode '{s}': expected dev, cert, token, cert-or-token or cert-and-token")
            })
    }
}

/// The node's authentication settings.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// How clients authenticate.
    pub mode: AuthMode,
    /// Users allowed everything whatever the ACL says (like Kafka's
    /// `super.users`): how the first administrator gets in.
    pub superusers: Vec<String>,
}

/// Who a connection (or one admin call) is.
#[derive(Debug, Clone)]
pub struct Session {
    /// Whom requests are checked as.
    pub principal: Principal,
    /// The user the client certificate names, if one was presented.
    pub certificate: Option<Principal>,
    /// The id of the token presented, re-checked on every request.
    pub token_id: Option<String>,
}

impl Session {
    /// A session from a connection's client certificate (if any).
    pub fn from_certificate(certificate: Option<Principal>) -> Session {
        Session {
            principal: certificate.clone().unwrap_or_else(Principal::anonymous),
            certificate,
            token_id: None,
        }
    }

    /// How the session authenticated: certificate, token, both, or none.
    pub fn method(&self) -> &'static str {
        match (&self.certificate, &self.token_id) {
            (Some(_), Some(_)) => "both",
            (Some(_), None) => "certificate",
            (None, Some(_)) => "token",
            (None, None) => "none",
        }
    }
}

/// Largest audit log before it is rolled to `audit.log.1`.
pub const AUDIT_BYTES_MAX: u64 = 16 << 20;

struct Audit {
    path: PathBuf,
    file: Option<std::fs::File>,
    bytes: u64,
}

impl Audit {
    fn append(&mut self, line: &str) {
        if self.file.is_none() || self.bytes + line.len() as u64 > AUDIT_BYTES_MAX {
            if self.file.take().is_some() {
                let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
            }
            if let Some(dir) = self.path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => {
                    self.bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
                    self.file = Some(f);
                }
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot open the audit log");
                    return;
                }
            }
        }
        if let Some(f) = &mut self.file {
            match f.write_all(line.as_bytes()) {
                Ok(()) => self.bytes += line.len() as u64,
                Err(e) => tracing::warn!(error = %e, "cannot append to the audit log"),
            }
        }
    }
}

/// Checks every request of a node against its auth mode and ACL.
pub struct Guard {
    config: AuthConfig,
    path: PathBuf,
    state: RwLock<AuthState>,
    /// Serialises changes (read, change, save, swap).
    change: Mutex<()>,
    audit: Mutex<Audit>,
    /// Requests refused (permission or authentication).
    pub refusals: AtomicU64,
    /// Tenants' rate quotas: (tenant, produce?) → bucket.
    buckets: Mutex<std::collections::HashMap<(String, bool), Bucket>>,
    /// Time answers were held back by tenants' rate quotas, ms.
    pub throttled_ms: AtomicU64,
}

/// A token bucket of bytes per second (burst: one second's worth); it may
/// go into debt, which the caller waits off.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: std::time::Instant,
}

/// Longest single wait a rate quota imposes on one answer; the rest of a
/// debt is waited off by later requests.
pub const THROTTLE_MAX: std::time::Duration = std::time::Duration::from_secs(5);

impl Guard {
    /// Loads `DATA_DIR/auth/state.json` (absent: empty).
    pub fn open(data_dir: &Path, config: AuthConfig) -> Result<Guard> {
        for u in &config.superusers {
            Principal::user(u).map_err(|e| FabricError::Invalid(format!("superuser: {e}")))?;
        }
        let dir = data_dir.join("auth");
        let path = dir.join("state.json");
        let state = AuthState::load(&path).map_err(|e| FabricError::Invalid(e.to_string()))?;
        Ok(Guard {
            config,
            path,
            state: RwLock::new(state),
            change: Mutex::new(()),
            audit: Mutex::new(Audit {
                path: dir.join("audit.log"),
                file: None,
                bytes: 0,
            }),
            refusals: AtomicU64::new(0),
            buckets: Mutex::new(Default::default()),
            throttled_ms: AtomicU64::new(0),
        })
    }

    /// The auth mode.
    pub fn mode(&self) -> AuthMode {
        self.config.mode
    }

    /// Whether requests are checked at all (any mode but dev).
    pub fn enforcing(&self) -> bool {
        self.config.mode != AuthMode::Dev
    }

    /// A copy of the users, tokens and ACL.
    pub fn state(&self) -> AuthState {
        self.state.read().clone()
    }

    /// The groups of a principal.
    pub fn groups_of(&self, principal: &Principal) -> Vec<String> {
        self.state.read().groups_of(principal).to_vec()
    }

    /// Authenticates `session` with a presented bearer token: from now on
    /// it acts as the token's user. With a certificate too, both must name
    /// the same user.
    pub fn present_token(&self, session: &mut Session, token: &str) -> Result<()> {
        let user = self
            .state
            .read()
            .tokens
            .verify(token, now_us())
            .map_err(|e| self.unauthenticated(&session.principal, e.to_string()))?;
        if let Some(cert) = &session.certificate {
            if cert != &user {
                return Err(self.unauthenticated(
                    cert,
                    format!("the token names {user} but the client certificate names {cert}"),
                ));
            }
        }
        session.principal = user;
        session.token_id = Some(
            token_id(token)
                .expect("a verified token is well formed")
                .to_string(),
        );
        Ok(())
    }

    /// Whether `session` satisfies the node's mode now (its token, if any,
    /// still valid).
    pub fn authenticated(&self, session: &Session) -> Result<()> {
        if let Some(id) = &session.token_id {
            self.state
                .read()
                .tokens
                .still_valid(id, now_us())
                .map_err(|e| self.unauthenticated(&session.principal, e.to_string()))?;
        }
        let (cert, token) = (session.certificate.is_some(), session.token_id.is_some());
        let missing = match self.config.mode {
            AuthMode::Dev => None,
            AuthMode::Certificate if !cert => Some("a client certificate"),
            AuthMode::Token if !token => Some("a bearer token"),
            AuthMode::CertificateOrToken if !cert && !token => {
                Some("a client certificate or a bearer token")
            }
            AuthMode::CertificateAndToken if !(cert && token) => {
                Some("both a client certificate and a bearer token")
            }
            _ => None,
        };
        match missing {
            Some(what) => Err(self.unauthenticated(
                &session.principal,
                format!("this node ({} mode) requires {what}", self.config.mode),
            )),
            None => Ok(()),
        }
    }

    fn is_superuser(&self, p: &Principal) -> bool {
        !p.is_anonymous() && self.config.superusers.iter().any(|s| s == p.name())
    }

    /// The ACL's and the tenant's verdict (authentication checked before).
    fn decide(
        &self,
        session: &Session,
        operation: Operation,
        resource: &Resource,
    ) -> std::result::Result<(), String> {
        if self.is_superuser(&session.principal) {
            return Ok(());
        }
        let state = self.state.read();
        if resource.kind == ResourceKind::Topic {
            if let Some((name, t)) = state.tenant_of(&session.principal) {
                if !resource.name.starts_with(&t.prefix) {
                    return Err(format!(
                        "tenant {name} owns only topics under '{}'",
                        t.prefix
                    ));
                }
            }
        }
        match state.acl.check(
            &session.principal,
            state.groups_of(&session.principal),
            operation,
            resource,
        ) {
            crate::auth::Decision::Allowed => Ok(()),
            crate::auth::Decision::Denied(Some(e)) => Err(format!("denied by `{e}`")),
            crate::auth::Decision::Denied(None) => Err("no ACL entry allows it".into()),
        }
    }

    /// Whether `session` may do `operation` on `resource`, without
    /// auditing (for filtering lists).
    pub fn allows(&self, session: &Session, operation: Operation, resource: &Resource) -> bool {
        !self.enforcing()
            || (self.authenticated(session).is_ok()
                && self.decide(session, operation, resource).is_ok())
    }

    /// How long to hold back the answer to a request of a tenant's user
    /// that moved `bytes` (produced, or fetched): zero within the tenant's
    /// rate quota, else the time its debt takes to pay off (at most
    /// [`THROTTLE_MAX`]).
    pub fn throttle(&self, session: &Session, produce: bool, bytes: u64) -> std::time::Duration {
        use std::time::{Duration, Instant};
        if !self.enforcing() || bytes == 0 {
            return Duration::ZERO;
        }
        let (tenant, rate) = {
            let state = self.state.read();
            let Some((name, t)) = state.tenant_of(&session.principal) else {
                return Duration::ZERO;
            };
            let rate = if produce {
                t.produce_bytes_per_s
            } else {
                t.fetch_bytes_per_s
            };
            (name.to_string(), rate as f64)
        };
        if rate <= 0.0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let b = buckets.entry((tenant, produce)).or_insert(Bucket {
            tokens: rate,
            last: now,
        });
        b.tokens = (b.tokens + rate * now.duration_since(b.last).as_secs_f64()).min(rate);
        b.last = now;
        b.tokens -= bytes as f64;
        if b.tokens >= 0.0 {
            return Duration::ZERO;
        }
        let wait = Duration::from_secs_f64(-b.tokens / rate).min(THROTTLE_MAX);
        self.throttled_ms
            .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
        wait
    }

    /// The stored-bytes quota of the session's tenant: (tenant, prefix, quota).
    pub fn stored_quota(&self, session: &Session) -> Option<(String, String, u64)> {
        if !self.enforcing() {
            return None;
        }
        let state = self.state.read();
        let (name, t) = state.tenant_of(&session.principal)?;
        (t.stored_bytes > 0).then(|| (name.to_string(), t.prefix.clone(), t.stored_bytes))
    }

    /// Checks one request: refused with `UNAUTHENTICATED` or
    /// `PERMISSION_DENIED` (and audited), or allowed.
    pub fn authorize(
        &self,
        session: &Session,
        operation: Operation,
        resource: &Resource,
    ) -> Result<()> {
        if !self.enforcing() {
            return Ok(());
        }
        self.authenticated(session)?;
        match self.decide(session, operation, resource) {
            Ok(()) => Ok(()),
            Err(reason) => {
                self.record(
                    &session.principal,
                    "denied",
                    Some(operation),
                    Some(resource),
                    &reason,
                );
                Err(FabricError::PermissionDenied {
                    principal: session.principal.to_string(),
                    operation: operation.name(),
                    resource: resource_name(resource),
                    reason,
                })
            }
        }
    }

    fn unauthenticated(&self, principal: &Principal, why: String) -> FabricError {
        self.record(principal, "unauthenticated", None, None, &why);
        FabricError::Unauthenticated(why)
    }

    /// Appends one line to the audit log.
    pub fn record(
        &self,
        principal: &Principal,
        outcome: &str,
        operation: Option<Operation>,
        resource: Option<&Resource>,
        detail: &str,
    ) {
        if outcome != "changed" {
            self.refusals.fetch_add(1, Ordering::Relaxed);
        }
        let line = serde_json::json!({
            "ts_us": now_us(),
            "principal": principal.to_string(),
            "outcome": outcome,
            "operation": operation.map(|o| o.name()),
            "resource": resource.map(resource_name),
            "detail": detail,
        });
        self.audit.lock().append(&format!("{line}\n"));
    }

    /// Changes the users, tokens or ACL: `f` works on a copy, which is
    /// saved durably and only then put in place. The change is audited.
    pub fn change<R>(
        &self,
        by: &Principal,
        what: &str,
        f: impl FnOnce(&mut AuthState) -> Result<R>,
    ) -> Result<R> {
        let _serial = self.change.lock();
        let mut next = self.state.read().clone();
        let r = f(&mut next)?;
        next.save(&self.path)
            .map_err(|e| FabricError::Invalid(e.to_string()))?;
        *self.state.write() = next;
        self.record(by, "changed", None, None, what);
        Ok(r)
    }
}

/// `topic:NAME`, `group:NAME` or `cluster`.
pub fn resource_name(r: &Resource) -> String {
    match r.kind {
        ResourceKind::Topic => format!("topic:{}", r.name),
        ResourceKind::Group => format!("group:{}", r.name),
        ResourceKind::Cluster => "cluster".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(mode: AuthMode, acl: &str) -> (tempfile::TempDir, Guard) {
        let dir = tempfile::tempdir().unwrap();
        let g = Guard::open(
            dir.path(),
            AuthConfig {
                mode,
                superusers: vec!["root".into()],
            },
        )
        .unwrap();
        let root = Principal::user("root").unwrap();
        g.change(&root, "test acl", |s| {
            for e in crate::auth::parse_acl_file(acl).unwrap() {
                s.acl.grant(e);
            }
            Ok(())
        })
        .unwrap();
        (dir, g)
    }

    fn cert(name: &str) -> Session {
        Session::from_certificate(Some(Principal::user(name).unwrap()))
    }

    #[test]
    fn modes_say_what_they_require_and_dev_checks_nothing() {
        let (_d, g) = guard(AuthMode::Certificate, "allow User:alice read topic:t\n");
        let anon = Session::from_certificate(None);
        let e = g
            .authorize(&anon, Operation::Read, &Resource::topic("t"))
            .unwrap_err();
        assert!(
            e.to_string().contains("requires a client certificate"),
            "{e}"
        );
        g.authorize(&cert("alice"), Operation::Read, &Resource::topic("t"))
            .unwrap();
        let e = g
            .authorize(&cert("alice"), Operation::Write, &Resource::topic("t"))
            .unwrap_err();
        assert_eq!(e.code(), diaspora_proto::v1::ErrorCode::PermissionDenied);
        assert!(e.to_string().contains("write") && e.to_string().contains("topic:t"));
        g.authorize(&cert("root"), Operation::Delete, &Resource::cluster())
            .unwrap();

        let (_d, dev) = guard(AuthMode::Dev, "");
        dev.authorize(&anon, Operation::Delete, &Resource::topic("t"))
            .unwrap();
        assert_eq!(
            "cert-or-token".parse::<AuthMode>().unwrap(),
            AuthMode::CertificateOrToken
        );
        assert!("open".parse::<AuthMode>().is_err());
    }

    #[test]
    fn a_revoked_token_stops_an_authenticated_session_at_its_next_request() {
        let (dir, g) = guard(AuthMode::Token, "allow User:bob read topic:t\n");
        let bob = Principal::user("bob").unwrap();
        let root = Principal::user("root").unwrap();
        let issued = g
            .change(&root, "token", |s| {
                s.tokens
                    .create(&bob, "t", now_us(), None)
                    .map_err(|e| FabricError::Invalid(e.to_string()))
            })
            .unwrap();
        let mut s = Session::from_certificate(None);
        g.present_token(&mut s, &issued.token).unwrap();
        assert_eq!(s.principal, bob);
        g.authorize(&s, Operation::Read, &Resource::topic("t"))
            .unwrap();
        g.change(&root, "revoke", |st| {
            Ok(st.tokens.revoke(&issued.record.id, now_us()))
        })
        .unwrap();
        let e = g
            .authorize(&s, Operation::Read, &Resource::topic("t"))
            .unwrap_err();
        assert_eq!(e.code(), diaspora_proto::v1::ErrorCode::Unauthenticated);
        assert!(e.to_string().contains("revoked"), "{e}");
        // A certificate and a token must name the same user.
        let mut s = cert("alice");
        assert!(g.present_token(&mut s, &issued.token).is_err());
        // The change and the refusals are in the audit log, and the state
        // survives a reopen.
        let audit = std::fs::read_to_string(dir.path().join("auth/audit.log")).unwrap();
        assert!(audit.contains("\"outcome\":\"unauthenticated\""), "{audit}");
        let again = Guard::open(dir.path(), AuthConfig::default()).unwrap();
        assert_eq!(again.state(), g.state());
    }
}
