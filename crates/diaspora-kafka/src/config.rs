//! How to reach a Kafka-API service: bootstrap servers, TLS, SASL (SCRAM
//! and PLAIN as MSK and Confluent Cloud use; OAUTHBEARER with a token
//! file), turned into librdkafka settings. The mapping is pure and
//! checked here; secrets come from the environment, never the command line.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Transport security.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Security {
    /// Plain TCP.
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL over plain TCP.
    SaslPlaintext,
    /// SASL over TLS (MSK, Confluent Cloud).
    SaslSsl,
}

impl std::str::FromStr for Security {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "plaintext" => Ok(Security::Plaintext),
            "ssl" | "tls" => Ok(Security::Ssl),
            "sasl_plaintext" => Ok(Security::SaslPlaintext),
            "sasl_ssl" => Ok(Security::SaslSsl),
            _ => Err(format!(
                "{s:?}: the security protocol is plaintext, ssl, sasl_plaintext or sasl_ssl"
            )),
        }
    }
}

impl Security {
    fn librdkafka(self) -> &'static str {
        match self {
            Security::Plaintext => "plaintext",
            Security::Ssl => "ssl",
            Security::SaslPlaintext => "sasl_plaintext",
            Security::SaslSsl => "sasl_ssl",
        }
    }

    fn sasl(self) -> bool {
        matches!(self, Security::SaslPlaintext | Security::SaslSsl)
    }
}

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// SCRAM-SHA-256.
    ScramSha256,
    /// SCRAM-SHA-512 (MSK).
    ScramSha512,
    /// PLAIN (Confluent Cloud API keys).
    Plain,
    /// OAUTHBEARER, the token read from a file (refreshed as it changes).
    OAuthBearer,
}

impl std::str::FromStr for Mechanism {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().replace('_', "-").as_str() {
            "SCRAM-SHA-256" => Ok(Mechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(Mechanism::ScramSha512),
            "PLAIN" => Ok(Mechanism::Plain),
            "OAUTHBEARER" => Ok(Mechanism::OAuthBearer),
            _ => Err(format!(
                "{s:?}: the SASL mechanism is SCRAM-SHA-256, SCRAM-SHA-512, PLAIN or OAUTHBEARER"
            )),
        }
    }
}

impl Mechanism {
    fn librdkafka(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::Plain => "PLAIN",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

/// Where and how to connect.
#[derive(Clone, Default)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`.
    pub bootstrap: String,
    /// Transport security.
    pub security: Security,
    /// The SASL mechanism (needed with a `sasl_*` protocol).
    pub mechanism: Option<Mechanism>,
    /// SASL user (SCRAM, PLAIN).
    pub username: Option<String>,
    /// SASL password (SCRAM, PLAIN).
    pub password: Option<String>,
    /// OAUTHBEARER: a file holding the token (re-read when librdkafka asks
    /// for a fresh one).
    pub token_file: Option<PathBuf>,
    /// A CA (PEM) to verify the brokers with (TLS), besides the system's.
    pub ca: Option<PathBuf>,
    /// More librdkafka settings, as they are.
    pub extra: BTreeMap<String, String>,
}

/// Never prints the password.
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap", &self.bootstrap)
            .field("security", &self.security)
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("ca", &self.ca)
            .field("extra", &self.extra)
            .finish()
    }
}

impl KafkaConfig {
    /// Plain TCP to `bootstrap`.
    pub fn new(bootstrap: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            bootstrap: bootstrap.into(),
            ..Default::default()
        }
    }

    /// The librdkafka settings, checked: a SASL protocol needs a mechanism
    /// and its credentials; a mechanism needs a SASL protocol.
    pub fn settings(&self) -> Result<BTreeMap<String, String>, String> {
        if self.bootstrap.trim().is_empty() {
            return Err("no Kafka bootstrap servers".into());
        }
        let mut s = BTreeMap::new();
        s.insert("bootstrap.servers".to_string(), self.bootstrap.clone());
        s.insert(
            "security.protocol".to_string(),
            self.security.librdkafka().to_string(),
        );
        match (self.security.sasl(), self.mechanism) {
            (true, None) => {
                return Err(format!(
                    "security protocol {} needs a SASL mechanism",
                    self.security.librdkafka()
                ))
            }
            (false, Some(m)) => {
                return Err(format!(
                    "SASL mechanism {} needs security protocol sasl_ssl or sasl_plaintext",
                    m.librdkafka()
                ))
            }
            (true, Some(m)) => {
                s.insert("sasl.mechanism".into(), m.librdkafka().into());
                match m {
                    Mechanism::OAuthBearer => {
                        if self.token_file.is_none() {
                            return Err("OAUTHBEARER needs a token file".into());
                        }
                    }
                    _ => {
                        let (Some(u), Some(p)) = (&self.username, &self.password) else {
                            return Err(format!(
                                "SASL {} needs a username and a password",
                                m.librdkafka()
                            ));
                        };
                        s.insert("sasl.username".into(), u.clone());
                        s.insert("sasl.password".into(), p.clone());
                    }
                }
            }
            (false, None) => {}
        }
        if let Some(ca) = &self.ca {
            if !matches!(self.security, Security::Ssl | Security::SaslSsl) {
                return Err("a CA is for TLS: use security protocol ssl or sasl_ssl".into());
            }
            s.insert("ssl.ca.location".into(), ca.display().to_string());
        }
        for (k, v) in &self.extra {
            s.insert(k.clone(), v.clone());
        }
        Ok(s)
    }

    /// An rdkafka client configuration with these settings and `more`.
    #[cfg(feature = "client")]
    pub fn client_config(&self, more: &[(&str, &str)]) -> Result<rdkafka::ClientConfig, String> {
        let mut c = rdkafka::ClientConfig::new();
        for (k, v) in self.settings()? {
            c.set(k, v);
        }
        for (k, v) in more {
            c.set(*k, *v);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_and_tls_settings_are_mapped_and_checked() {
        let mut c = KafkaConfig::new("b-1.msk:9096");
        assert_eq!(c.settings().unwrap()["security.protocol"], "plaintext");
        c.security = "SASL_SSL".parse().unwrap();
        assert!(c.settings().unwrap_err().contains("needs a SASL mechanism"));
        c.mechanism = Some("scram-sha-512".parse().unwrap());
        assert!(c
            .settings()
            .unwrap_err()
            .contains("username and a password"));
        c.username = Some("alice".into());
        c.password = Some("s3cret".into());
        c.ca = Some("/etc/ca.pem".into());
        let s = c.settings().unwrap();
        assert_eq!(s["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(s["ssl.ca.location"], "/etc/ca.pem");
        assert!(!format!("{c:?}").contains("s3cret"));
        c.mechanism = Some(Mechanism::OAuthBearer);
        assert!(c.settings().unwrap_err().contains("token file"));
        let mut plain = KafkaConfig::new("x:1");
        plain.mechanism = Some(Mechanism::Plain);
        assert!(plain
            .settings()
            .unwrap_err()
            .contains("needs security protocol"));
        plain.mechanism = None;
        plain.ca = Some("/ca".into());
        assert!(plain.settings().unwrap_err().contains("for TLS"));
        assert!("kerberos".parse::<Mechanism>().is_err());
        assert!("quic".parse::<Security>().is_err());
        assert!(KafkaConfig::new(" ").settings().is_err());
    }
}
