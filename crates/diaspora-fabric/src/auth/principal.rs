//! Who a connection is.

use std::fmt;

/// Longest principal, group or tenant name, bytes.
pub const NAME_BYTES_MAX: usize = 128;

/// Why a name or a certificate gives no principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    /// The name is empty, too long or has characters outside `[A-Za-z0-9._@-]`.
    #[error("invalid {what} name {name:?}: 1–{NAME_BYTES_MAX} characters of A–Z a–z 0–9 . _ @ -")]
    InvalidName {
        /// What was named (user, group, ...).
        what: &'static str,
        /// The name, cut to 64 characters.
        name: String,
    },
    /// The bytes are not an X.509 certificate.
    #[error("not an X.509 certificate: {0}")]
    NotACertificate(String),
    /// The certificate's subject has no common name to take as the user.
    #[error("the client certificate's subject has no common name (CN) to name the user")]
    NoCommonName,
}

/// Checks a user, group or tenant name: 1–128 characters of
/// `[A-Za-z0-9._@-]` (so e-mail-like names work, and no name can hold
/// a `:` , `*`, white space or a path separator).
pub fn valid_name(what: &'static str, name: &str) -> Result<(), PrincipalError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(PrincipalError::InvalidName {
            what,
            name: name.chars().take(64).collect(),
        })
    }
}

/// An authenticated user, or the anonymous principal of a node that
/// allows anonymous clients. Written `User:NAME` (anonymous: `User:ANONYMOUS`,
/// a name no certificate or token can carry, as it is reserved).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    name: String,
}

/// The reserved user name of anonymous clients.
const ANONYMOUS: &str = "ANONYMOUS";

impl Principal {
    /// A named user; the name is checked with [`valid_name`] and may not be
    /// the reserved `ANONYMOUS`.
    pub fn user(name: &str) -> Result<Principal, PrincipalError> {
        valid_name("user", name)?;
        if name == ANONYMOUS {
            return Err(PrincipalError::InvalidName {
                what: "user (ANONYMOUS is reserved)",
                name: name.into(),
            });
        }
        Ok(Principal { name: name.into() })
    }

    /// The principal of an unauthenticated client on a node that allows them.
    pub fn anonymous() -> Principal {
        Principal {
            name: ANONYMOUS.into(),
        }
    }

    /// Whether this is the anonymous principal.
    pub fn is_anonymous(&self) -> bool {
        self.name == ANONYMOUS
    }

    /// The user name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "User:{}", self.name)
    }
}

/// The principal a client certificate names: the first common name (CN) of
/// its subject, checked with [`valid_name`]. The certificate's chain is
/// verified by TLS before this is asked; this only reads the name.
pub fn principal_from_cert_der(der: &[u8]) -> Result<Principal, PrincipalError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| PrincipalError::NotACertificate(e.to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or(PrincipalError::NoCommonName)?;
    let name = cn
        .as_str()
        .map_err(|_| PrincipalError::NotACertificate("the common name is not a string".into()))?;
    Principal::user(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(Principal::user("alice").is_ok());
        assert!(Principal::user("bridge-edge.hpc@site_1").is_ok());
        for bad in ["", "a b", "a:b", "*", "x/y", "ANONYMOUS", &"x".repeat(129)] {
            assert!(Principal::user(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Principal::user("alice").unwrap().to_string(), "User:alice");
        assert!(Principal::anonymous().is_anonymous());
    }

    #[test]
    fn a_client_certificate_names_its_user_and_garbage_is_an_error() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "beamline-7");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let p = principal_from_cert_der(cert.der()).unwrap();
        assert_eq!(p.name(), "beamline-7");

        let mut no_cn = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        no_cn.distinguished_name = rcgen::DistinguishedName::new();
        let cert = no_cn.self_signed(&key).unwrap();
        assert_eq!(
            principal_from_cert_der(cert.der()),
            Err(PrincipalError::NoCommonName)
        );
        assert!(matches!(
            principal_from_cert_der(b"not a certificate"),
            Err(PrincipalError::NotACertificate(_))
        ));
    }
}
