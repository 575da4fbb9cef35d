//! Bearer tokens: `dsp_<id>_<secret>`, where the id (16 hex digits) finds
//! the record and the secret (64 hex digits, 256 random bits) proves it.
//! The node keeps only the secret's SHA-256 digest (a fast hash is enough
//! for a 256-bit random secret: there is nothing to guess by dictionary),
//! compares digests in constant time, and honours expiry and revocation on
//! every check — so a connection opened before a revocation is refused at
//! its next re-check.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::principal::Principal;

/// What every token starts with (so a leaked one is easy to scan for).
pub const TOKEN_PREFIX: &str = "dsp_";
const ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;
/// Most tokens one node keeps.
pub const TOKENS_MAX: usize = 10_000;

/// Why a token was refused. Messages never contain the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the form `dsp_<16 hex>_<64 hex>`.
    #[error("malformed token: expected dsp_<16 hex digits>_<64 hex digits>")]
    Malformed,
    /// No token has this id, or the secret does not match it.
    #[error("unknown token {id}")]
    Unknown {
        /// The token's id.
        id: String,
    },
    /// Revoked.
    #[error("token {id} was revoked")]
    Revoked {
        /// The token's id.
        id: String,
    },
    /// Past its expiry.
    #[error("token {id} expired")]
    Expired {
        /// The token's id.
        id: String,
    },
    /// The node holds [`TOKENS_MAX`] tokens already.
    #[error("the node holds {TOKENS_MAX} tokens already: revoke some first")]
    TooMany,
}

/// A token as stored on the node: no secret, only its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The public id (16 hex digits).
    pub id: String,
    /// The user it authenticates.
    pub user: String,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Creation time, µs since the epoch.
    pub created_us: i64,
    /// Expiry, µs since the epoch (none: never).
    #[serde(default)]
    pub expires_us: Option<i64>,
    /// When it was revoked, µs since the epoch.
    #[serde(default)]
    pub revoked_us: Option<i64>,
}

/// A freshly created token: the only time its secret exists in full.
#[derive(Clone)]
pub struct IssuedToken {
    /// The stored record.
    pub record: TokenRecord,
    /// The whole token to hand to the client (`dsp_<id>_<secret>`).
    pub token: String,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("record", &self.record)
            .field("token", &"<secret>")
            .finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(secret: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The public id of a presented token (its shape checked, not its secret).
pub fn token_id(token: &str) -> Result<&str, TokenError> {
    parse_token(token).map(|(id, _)| id)
}

/// Splits a presented token into (id, secret), checking its shape only.
pub(crate) fn parse_token(token: &str) -> Result<(&str, &str), TokenError> {
    let rest = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(TokenError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(TokenError::Malformed)?;
    if is_lower_hex(id, ID_HEX) && is_lower_hex(secret, SECRET_HEX) {
        Ok((id, secret))
    } else {
        Err(TokenError::Malformed)
    }
}

/// Equal digests, compared without an early exit.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The node's tokens, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenStore {
    tokens: BTreeMap<String, TokenRecord>,
}

impl TokenStore {
    /// Creates a token for `user`, valid until `expires_us` (none: until
    /// revoked). The returned [`IssuedToken::token`] is shown once.
    pub fn create(
        &mut self,
        user: &Principal,
        description: &str,
        now_us: i64,
        expires_us: Option<i64>,
    ) -> Result<IssuedToken, TokenError> {
        use ring::rand::SecureRandom;
        if self.tokens.len() >= TOKENS_MAX {
            return Err(TokenError::TooMany);
        }
        let rng = ring::rand::SystemRandom::new();
        let (id, secret) = loop {
            let mut id = [0u8; ID_HEX / 2];
            let mut secret = [0u8; SECRET_HEX / 2];
            rng.fill(&mut id)
                .and_then(|()| rng.fill(&mut secret))
                .expect("the system random source works");
            let id = hex(&id);
            if !self.tokens.contains_key(&id) {
                break (id, hex(&secret));
            }
        };
        let record = TokenRecord {
            id: id.clone(),
            user: user.name().into(),
            secret_sha256: digest(&secret),
            description: description.chars().take(200).collect(),
            created_us: now_us,
            expires_us,
            revoked_us: None,
        };
        self.tokens.insert(id.clone(), record.clone());
        Ok(IssuedToken {
            record,
            token: format!("{TOKEN_PREFIX}{id}_{secret}"),
        })
    }

    /// The user a presented token authenticates at `now_us`.
    pub fn verify(&self, token: &str, now_us: i64) -> Result<Principal, TokenError> {
        let (id, secret) = parse_token(token)?;
        let unknown = || TokenError::Unknown { id: id.into() };
        let record = self.tokens.get(id).ok_or_else(unknown)?;
        if !same(&digest(secret), &record.secret_sha256) {
            return Err(unknown());
        }
        if record.revoked_us.is_some() {
            return Err(TokenError::Revoked { id: id.into() });
        }
        if record.expires_us.is_some_and(|e| now_us >= e) {
            return Err(TokenError::Expired { id: id.into() });
        }
        Principal::user(&record.user).map_err(|_| unknown())
    }

    /// Whether the token `id` (verified earlier) still stands at `now_us`:
    /// known, not revoked and not expired. Connections that authenticated
    /// with a token re-check it this way on every request.
    pub fn still_valid(&self, id: &str, now_us: i64) -> Result<(), TokenError> {
        let record = self
            .tokens
            .get(id)
            .ok_or_else(|| TokenError::Unknown { id: id.into() })?;
        if record.revoked_us.is_some() {
            return Err(TokenError::Revoked { id: id.into() });
        }
        if record.expires_us.is_some_and(|e| now_us >= e) {
            return Err(TokenError::Expired { id: id.into() });
        }
        Ok(())
    }

    /// Removes every token of `user`; returns how many there were.
    pub fn remove_user(&mut self, user: &str) -> usize {
        let before = self.tokens.len();
        self.tokens.retain(|_, r| r.user != user);
        before - self.tokens.len()
    }

    /// Marks a token revoked; returns whether it existed and was not yet revoked.
    pub fn revoke(&mut self, id: &str, now_us: i64) -> bool {
        match self.tokens.get_mut(id) {
            Some(r) if r.revoked_us.is_none() => {
                r.revoked_us = Some(now_us);
                true
            }
            _ => false,
        }
    }

    /// Every record, by id.
    pub fn list(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.values()
    }

    /// Checks records read from disk: ids, digests and users well formed.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.tokens.len() > TOKENS_MAX {
            return Err(format!("more than {TOKENS_MAX} tokens"));
        }
        for (id, r) in &self.tokens {
            if id != &r.id || !is_lower_hex(id, ID_HEX) {
                return Err(format!(
                    "token record {:?} has a bad id",
                    id.chars().take(20).collect::<String>()
                ));
            }
            if !is_lower_hex(&r.secret_sha256, 64) {
                return Err(format!("token {id} has a bad digest"));
            }
            Principal::user(&r.user).map_err(|e| format!("token {id}: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_token_authenticates_its_user_until_revoked_or_expired() {
        let mut s = TokenStore::default();
        let alice = Principal::user("alice").unwrap();
        let t = s.create(&alice, "notebook", 1_000, Some(5_000)).unwrap();
        assert!(t.token.starts_with("dsp_"));
        assert_eq!(t.token.len(), 4 + 16 + 1 + 64);
        assert!(
            !format!("{t:?}").contains(&t.token[21..]),
            "Debug hides the secret"
        );
        assert_eq!(s.verify(&t.token, 2_000).unwrap(), alice);
        assert_eq!(
            s.verify(&t.token, 5_000),
            Err(TokenError::Expired {
                id: t.record.id.clone()
            })
        );
        // The stored record has no secret.
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains(&t.token[21..]));

        let forever = s.create(&alice, "", 1_000, None).unwrap();
        assert!(s.verify(&forever.token, i64::MAX).is_ok());
        assert!(s.revoke(&forever.record.id, 3_000));
        assert!(!s.revoke(&forever.record.id, 3_001));
        assert_eq!(
            s.verify(&forever.token, 3_000),
            Err(TokenError::Revoked {
                id: forever.record.id.clone()
            })
        );
    }

    #[test]
    fn a_wrong_secret_or_shape_is_refused_without_echoing_it() {
        let mut s = TokenStore::default();
        let t = s
            .create(&Principal::user("a").unwrap(), "", 0, None)
            .unwrap();
        let mut wrong = t.token.clone();
        let last = if wrong.ends_with('0') { "1" } else { "0" };
        wrong.replace_range(wrong.len() - 1.., last);
        let e = s.verify(&wrong, 0).unwrap_err();
        assert_eq!(
            e,
            TokenError::Unknown {
                id: t.record.id.clone()
            }
        );
        assert!(!e.to_string().contains(&wrong[21..]));
        for bad in [
            "",
            "dsp_",
            "dsp_x_y",
            &t.token.to_uppercase(),
            &format!("{}0", t.token),
            "Bearer x",
        ] {
            assert_eq!(s.verify(bad, 0), Err(TokenError::Malformed), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_tokens_never_panic(t in "\\PC{0,120}") {
            crate::auth::fuzzing::token(t.as_bytes());
            let _ = TokenStore::default().verify(&t, 0);
        }
    }
}
