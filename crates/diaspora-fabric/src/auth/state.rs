//! The node's users, groups, tokens and ACL entries: one JSON document,
//! written atomically (temporary file, fsync, rename, directory fsync) so a
//! crash leaves the old state or the new one, never a mix.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::acl::{Acl, AclEntry};
use super::principal::{valid_name, Principal};
use super::token::TokenStore;

/// Largest state document read, bytes.
pub const STATE_BYTES_MAX: usize = 16 << 20;
const VERSION: u32 = 1;
/// Most users one node keeps.
pub const USERS_MAX: usize = 100_000;
/// Most groups one user is in.
pub const GROUPS_PER_USER_MAX: usize = 64;

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The document is not valid (the path, then what is wrong).
    #[error("auth state {0}: {1}")]
    Invalid(String, String),
    /// Reading or writing failed.
    #[error("auth state {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A user the node knows (authenticated by certificate or token).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The groups the user is in.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The tenant the user belongs to: it may touch only topics under the
    /// tenant's prefix, and the tenant's quotas apply to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// Most tenants one node keeps.
pub const TENANTS_MAX: usize = 10_000;

/// A tenant: owns the topics whose names start with its prefix; its users
/// cannot see or touch any other topic; quotas bound what they move and keep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Topic-name prefix the tenant owns (no other tenant's may overlap it).
    pub prefix: String,
    /// Most payload bytes per second its users may produce (0: no limit);
    /// beyond it the node delays its answers (throttling, as Kafka does).
    #[serde(default)]
    pub produce_bytes_per_s: u64,
    /// Most bytes per second its users may fetch (0: no limit), likewise.
    #[serde(default)]
    pub fetch_bytes_per_s: u64,
    /// Most bytes its topics may hold on the node (0: no limit); a produce
    /// beyond it is refused with LIMIT_EXCEEDED and nothing is written.
    #[serde(default)]
    pub stored_bytes: u64,
}

#[derive(Serialize, Deserialize)]
struct Document {
    version: u32,
    #[serde(default)]
    users: BTreeMap<String, User>,
    #[serde(default)]
    tokens: TokenStore,
    /// ACL entries in their one-line text form.
    #[serde(default)]
    acl: Vec<String>,
    #[serde(default)]
    tenants: BTreeMap<String, Tenant>,
}

/// Users, groups, tokens and the ACL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthState {
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Bearer tokens.
    pub tokens: TokenStore,
    /// ACL entries.
    pub acl: Acl,
    /// Tenants by name.
    pub tenants: BTreeMap<String, Tenant>,
}

impl AuthState {
    /// The groups of a principal (none for unknown users and anonymous).
    pub fn groups_of(&self, principal: &Principal) -> &[String] {
        self.users
            .get(principal.name())
            .map_or(&[], |u| u.groups.as_slice())
    }

    /// The tenant of a principal, if it belongs to one.
    pub fn tenant_of(&self, principal: &Principal) -> Option<(&str, &Tenant)> {
        let name = self.users.get(principal.name())?.tenant.as_deref()?;
        self.tenants.get(name).map(|t| (name, t))
    }

    /// The tenant owning `topic`, if any.
    pub fn owner_of(&self, topic: &str) -> Option<&str> {
        self.tenants
            .iter()
            .find(|(_, t)| topic.starts_with(&t.prefix))
            .map(|(n, _)| n.as_str())
    }

    /// Checks tenants: names, prefixes that do not overlap, users' tenants
    /// that exist.
    pub fn check_tenants(&self) -> Result<(), String> {
        if self.tenants.len() > TENANTS_MAX {
            return Err(format!("more than {TENANTS_MAX} tenants"));
        }
        for (name, t) in &self.tenants {
            valid_name("tenant", name).map_err(|e| e.to_string())?;
            valid_name("tenant prefix", &t.prefix).map_err(|e| e.to_string())?;
            for (other, o) in &self.tenants {
                if other != name
                    && (o.prefix.starts_with(&t.prefix) || t.prefix.starts_with(&o.prefix))
                {
                    return Err(format!(
                        "tenant {name}'s prefix '{}' overlaps tenant {other}'s '{}'",
                        t.prefix, o.prefix
                    ));
                }
            }
        }
        for (user, u) in &self.users {
            if let Some(t) = &u.tenant {
                if !self.tenants.contains_key(t) {
                    return Err(format!("user {user} is in unknown tenant {t}"));
                }
            }
        }
        Ok(())
    }

    /// Parses and checks a state document.
    pub fn from_json(bytes: &[u8]) -> Result<AuthState, String> {
        if bytes.len() > STATE_BYTES_MAX {
            return Err(format!(
                "{} bytes; at most {STATE_BYTES_MAX} are read",
                bytes.len()
            ));
        }
        let doc: Document = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if doc.version != VERSION {
            return Err(format!(
                "version {} (this build reads version {VERSION})",
                doc.version
            ));
        }
        if doc.users.len() > USERS_MAX {
            return Err(format!("more than {USERS_MAX} users"));
        }
        for (name, user) in &doc.users {
            Principal::user(name).map_err(|e| e.to_string())?;
            if user.groups.len() > GROUPS_PER_USER_MAX {
                return Err(format!(
                    "user {name} is in more than {GROUPS_PER_USER_MAX} groups"
                ));
            }
            for g in &user.groups {
                valid_name("group", g).map_err(|e| e.to_string())?;
            }
        }
        doc.tokens.validate()?;
        if doc.acl.len() > super::acl::ACL_ENTRIES_MAX {
            return Err(format!(
                "more than {} ACL entries",
                super::acl::ACL_ENTRIES_MAX
            ));
        }
        let mut entries = Vec::with_capacity(doc.acl.len());
        for (i, line) in doc.acl.iter().enumerate() {
            let e: AclEntry = line.parse().map_err(|e: super::acl::AclParseError| {
                format!("ACL entry {}: {}", i + 1, e.message)
            })?;
            entries.push(e);
        }
        let state = AuthState {
            users: doc.users,
            tokens: doc.tokens,
            acl: Acl::new(entries),
            tenants: doc.tenants,
        };
        state.check_tenants()?;
        Ok(state)
    }

    /// The state document.
    pub fn to_json(&self) -> Vec<u8> {
        let doc = Document {
            version: VERSION,
            users: self.users.clone(),
            tokens: self.tokens.clone(),
            acl: self.acl.entries().iter().map(|e| e.to_string()).collect(),
            tenants: self.tenants.clone(),
        };
        serde_json::to_vec_pretty(&doc).expect("the state serialises")
    }

    /// Loads `path`; a missing file is the empty state.
    pub fn load(path: &Path) -> Result<AuthState, StateError> {
        let shown = path.display().to_string();
        match std::fs::read(path) {
            Ok(b) => AuthState::from_json(&b).map_err(|e| StateError::Invalid(shown, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AuthState::default()),
            Err(source) => Err(StateError::Io {
                path: shown,
                source,
            }),
        }
    }

    /// Writes `path` atomically and durably (mode 0600: it holds digests of secrets).
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.display().to_string(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = path.with_extension("json.tmp");
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options.open(&tmp).map_err(io)?;
            f.write_all(&self.to_json())
                .and_then(|()| f.sync_all())
                .map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_state_survives_a_save_and_load_and_bad_documents_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth/state.json");
        assert_eq!(AuthState::load(&path).unwrap(), AuthState::default());
        let mut s = AuthState::default();
        s.users.insert(
            "alice".into(),
            User {
                groups: vec!["trainers".into()],
                tenant: None,
            },
        );
        let alice = Principal::user("alice").unwrap();
        let t = s.tokens.create(&alice, "ci", 0, None).unwrap();
        s.acl
            .grant("allow Group:trainers read topic:beam-*".parse().unwrap());
        s.save(&path).unwrap();
        let back = AuthState::load(&path).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.groups_of(&alice), ["trainers".to_string()]);
        assert_eq!(back.tokens.verify(&t.token, 1).unwrap(), alice);

        for (bad, why) in [
            (&b"{"[..], "EOF"),
            (br#"{"version":2}"#, "version 2"),
            (br#"{"version":1,"users":{"a b":{}}}"#, "invalid user name"),
            (br#"{"version":1,"acl":["allow User:a read"]}"#, "ACL entry 1"),
            (
                br#"{"version":1,"tokens":{"tokens":{"x":{"id":"x","user":"a","secret_sha256":"00","created_us":0}}}}"#,
                "bad id",
            ),
        ] {
            let e = AuthState::from_json(bad).unwrap_err();
            assert!(e.contains(why), "{e} lacks {why}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_documents_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            crate::auth::fuzzing::state(&bytes);
        }

        #[test]
        fn arbitrary_certificates_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            crate::auth::fuzzing::certificate(&bytes);
        }
    }
}
