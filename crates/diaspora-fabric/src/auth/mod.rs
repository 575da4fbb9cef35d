//! Identities and authorisation: the pure core that both planes check
//! against (issue 19).
//!
//! - [`Principal`]: who a connection is — a user named by its client
//!   certificate ([`principal_from_cert_der`]) or by a bearer token
//!   ([`TokenStore::verify`]), or [`Principal::anonymous`] where a node
//!   explicitly allows anonymous clients.
//! - [`AclEntry`]: `allow|deny SUBJECT OPERATION RESOURCE`, one per line in
//!   an ACL file ([`parse_acl_file`]); [`Acl::check`] decides with deny
//!   winning and nothing allowed that no entry allows.
//! - [`TokenStore`]: long random bearer secrets, kept only as SHA-256
//!   digests, with expiry and revocation.
//! - [`AuthState`]: users, their groups, tokens and ACL entries in one JSON
//!   document written atomically (`DATA_DIR/auth/state.json`).
//!
//! Every parser here (tokens, ACL lines and files, the state document,
//! certificates) returns a clear error on bad bytes and never panics; each
//! has property tests and a fuzz target (`crates/diaspora-fabric/fuzz`).

mod acl;
mod principal;
mod state;
mod token;

pub use acl::{
    parse_acl_file, Acl, AclEntry, AclParseError, Decision, Effect, Operation, Resource,
    ResourceKind, ResourcePattern, Subject, ACL_ENTRIES_MAX,
};
pub use principal::{principal_from_cert_der, valid_name, Principal, PrincipalError};
pub use state::{AuthState, StateError, Tenant, User, TENANTS_MAX};
pub use token::{token_id, IssuedToken, TokenError, TokenRecord, TokenStore, TOKEN_PREFIX};

/// Runs every auth parser on arbitrary bytes (the fuzz targets' bodies,
/// also run by the property tests): none may panic.
pub mod fuzzing {
    /// A bearer token, as a client would present it.
    pub fn token(data: &[u8]) {
        if let Ok(s) = std::str::from_utf8(data) {
            let _ = super::token::parse_token(s);
        }
    }

    /// An ACL file.
    pub fn acl_file(data: &[u8]) {
        if let Ok(s) = std::str::from_utf8(data) {
            if let Ok(entries) = super::parse_acl_file(s) {
                // What parses prints back to the same entries.
                let text: String = entries.iter().map(|e| format!("{e}\n")).collect();
                assert_eq!(super::parse_acl_file(&text).expect("reparse"), entries);
            }
        }
    }

    /// A client certificate (DER).
    pub fn certificate(data: &[u8]) {
        let _ = super::principal_from_cert_der(data);
    }

    /// The node's auth state document.
    pub fn state(data: &[u8]) {
        let _ = super::AuthState::from_json(data);
    }
}
