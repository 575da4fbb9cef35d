//! TLS material: a development CA and node certificate (`diaspora certs`), and
//! rustls configurations for the node and for clients that verify the node
//! against the CA. There is no skip-verification path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{FabricError, Result};

/// File names inside a certificate directory.
pub const CA_FILE: &str = "ca.pem";
/// Node certificate (chain) file.
pub const NODE_CERT_FILE: &str = "node.pem";
/// Node private key file.
pub const NODE_KEY_FILE: &str = "node.key";
/// The CA's private key; kept so more node certificates can be issued later.
pub const CA_KEY_FILE: &str = "ca.key";

/// Paths of a certificate directory.
#[derive(Debug, Clone)]
pub struct CertPaths {
    /// CA certificate clients trust.
    pub ca: PathBuf,
    /// Node certificate.
    pub node_cert: PathBuf,
    /// Node key.
    pub node_key: PathBuf,
}

impl CertPaths {
    /// The standard file names inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        CertPaths {
            ca: dir.join(CA_FILE),
            node_cert: dir.join(NODE_CERT_FILE),
            node_key: dir.join(NODE_KEY_FILE),
        }
    }

    /// True when all three files exist.
    pub fn exist(&self) -> bool {
        self.ca.exists() && self.node_cert.exists() && self.node_key.exists()
    }
}

/// Writes a development CA and a node certificate valid for `localhost`,
/// `127.0.0.1`, `::1` and the extra `hosts` into `dir`.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let paths = diaspora_fabric::tls::generate_dev_certs(dir.path(), &[]).unwrap();
/// assert!(paths.exist());
/// ```
pub fn generate_dev_certs(dir: &Path, hosts: &[String]) -> Result<CertPaths> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    std::fs::create_dir_all(dir)
        .map_err(|e| FabricError::io(format!("create {}", dir.display()), e))?;
    let tls_err = |e: rcgen::Error| FabricError::Invalid(format!("certificate generation: {e}"));

    let ca_key = KeyPair::generate().map_err(tls_err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "diaspora development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_err)?;

    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    names.extend(hosts.iter().cloned());
    let node_key = KeyPair::generate().map_err(tls_err)?;
    let mut node_params = CertificateParams::new(names).map_err(tls_err)?;
    node_params
        .distinguished_name
        .push(DnType::CommonName, "diaspora node");
    let node_cert = node_params
        .signed_by(&node_key, &ca_cert, &ca_key)
        .map_err(tls_err)?;

    let paths = CertPaths::in_dir(dir);
    let write = |p: &Path, s: String| {
        std::fs::write(p, s).map_err(|e| FabricError::io(format!("write {}", p.display()), e))
    };
    write(&paths.ca, ca_cert.pem())?;
    write(&dir.join(CA_KEY_FILE), ca_key.serialize_pem())?;
    write(&paths.node_cert, node_cert.pem())?;
    write(&paths.node_key, node_key.serialize_pem())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in [dir.join(CA_KEY_FILE), paths.node_key.clone()] {
            let _ = std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600));
        }
    }
    Ok(paths)
}

/// A client identity: a certificate the node's CA signed, naming the user
/// in its subject CN, and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

impl ClientIdentity {
    /// `NAME.pem` and `NAME.key` in `dir`, as [`issue_client_cert`] writes them.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        ClientIdentity {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }
}

/// Issues a client certificate for user `name`, signed by the CA in
/// `certs_dir` (`ca.pem` + `ca.key`, as [`generate_dev_certs`] writes them),
/// into `out_dir` as `NAME.pem` and `NAME.key` (mode 0600). The node takes
/// the subject CN as the connection's principal (`User:NAME`).
pub fn issue_client_cert(certs_dir: &Path, name: &str, out_dir: &Path) -> Result<ClientIdentity> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
    crate::auth::Principal::user(name).map_err(|e| FabricError::Invalid(e.to_string()))?;
    let tls_err = |e: rcgen::Error| FabricError::Invalid(format!("certificate generation: {e}"));
    let ca_pem = String::from_utf8(read_file(&certs_dir.join(CA_FILE))?).map_err(|_| {
        FabricError::Invalid(format!(
            "{} is not PEM text",
            certs_dir.join(CA_FILE).display()
        ))
    })?;
    let ca_key_path = certs_dir.join(CA_KEY_FILE);
    let ca_key_pem = String::from_utf8(read_file(&ca_key_path)?)
        .map_err(|_| FabricError::Invalid(format!("{} is not PEM text", ca_key_path.display())))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(tls_err)?;
    // The CA certificate re-made from its own fields and key: same subject,
    // same key identifier, so what it signs chains to the ca.pem clients hold.
    let ca_cert = CertificateParams::from_ca_cert_pem(&ca_pem)
        .map_err(tls_err)?
        .self_signed(&ca_key)
        .map_err(tls_err)?;
    let key = KeyPair::generate().map_err(tls_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca_cert, &ca_key).map_err(tls_err)?;
    std::fs::create_dir_all(out_dir)
        .map_err(|e| FabricError::io(format!("create {}", out_dir.display()), e))?;
    let id = ClientIdentity::in_dir(out_dir, name);
    std::fs::write(&id.cert, cert.pem())
        .map_err(|e| FabricError::io(format!("write {}", id.cert.display()), e))?;
    std::fs::write(&id.key, key.serialize_pem())
        .map_err(|e| FabricError::io(format!("write {}", id.key.display()), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&id.key, std::fs::Permissions::from_mode(0o600));
    }
    Ok(id)
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| FabricError::io(format!("read {}", path.display()), e))
}

/// Loads all certificates of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read_file(path)?;
    let certs: std::result::Result<Vec<_>, _> = rustls_pemfile::certs(&mut &pem[..]).collect();
    let certs = certs.map_err(|e| FabricError::io(format!("parse {}", path.display()), e))?;
    if certs.is_empty() {
        return Err(FabricError::Invalid(format!(
            "no certificate found in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// Loads the private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = read_file(path)?;
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| FabricError::io(format!("parse {}", path.display()), e))?
        .ok_or_else(|| FabricError::Invalid(format!("no private key found in {}", path.display())))
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // rustls 0.23.48 deprecates the ring provider because it has no post-quantum
    // key exchange; the project builds with ring alone (one crypto backend, no
    // C/CMake toolchain for aws-lc), so the warning is acknowledged here.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CA certificates of `ca_file` as a root store.
fn roots(ca_file: &Path) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca_file)? {
        roots
            .add(cert)
            .map_err(|e| FabricError::Invalid(format!("tls: CA {}: {e}", ca_file.display())))?;
    }
    Ok(roots)
}

/// rustls server configuration for the node, with the given ALPN. A client
/// may present a certificate; if it does, it must chain to the node's CA
/// (else the handshake fails) and its subject CN becomes the connection's
/// principal. A client without one is anonymous.
pub fn server_config(paths: &CertPaths, alpn: &[u8]) -> Result<rustls::ServerConfig> {
    let certs = load_certs(&paths.node_cert)?;
    let key = load_key(&paths.node_key)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(&paths.ca)?),
        provider(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| FabricError::Invalid(format!("tls: client verifier: {e}")))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| FabricError::Invalid(format!("tls: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| FabricError::Invalid(format!("tls: node certificate/key: {e}")))?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    cfg.max_early_data_size = 0;
    Ok(cfg)
}

/// rustls client configuration that trusts exactly the CA in `ca_file`.
pub fn client_config(ca_file: &Path, alpn: &[u8]) -> Result<rustls::ClientConfig> {
    client_config_with_identity(ca_file, None, alpn)
}

/// [`client_config`], presenting `identity` (from [`issue_client_cert`]) to
/// the node when given.
pub fn client_config_with_identity(
    ca_file: &Path,
    identity: Option<&ClientIdentity>,
    alpn: &[u8],
) -> Result<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| FabricError::Invalid(format!("tls: {e}")))?
        .with_root_certificates(roots(ca_file)?);
    let mut cfg = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(load_certs(&id.cert)?, load_key(&id.key)?)
            .map_err(|e| {
                FabricError::Invalid(format!(
                    "tls: client certificate {} / key {}: {e}",
                    id.cert.display(),
                    id.key.display()
                ))
            })?,
    };
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(cfg)
}
