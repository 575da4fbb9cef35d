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
    Arc::new(rustls::crypto::ring::default_provider())
}

/// rustls server configuration for the node, with the given ALPN.
pub fn server_config(paths: &CertPaths, alpn: &[u8]) -> Result<rustls::ServerConfig> {
    let certs = load_certs(&paths.node_cert)?;
    let key = load_key(&paths.node_key)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| FabricError::Invalid(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| FabricError::Invalid(format!("tls: node certificate/key: {e}")))?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    cfg.max_early_data_size = 0;
    Ok(cfg)
}

/// rustls client configuration that trusts exactly the CA in `ca_file`.
pub fn client_config(ca_file: &Path, alpn: &[u8]) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca_file)? {
        roots
            .add(cert)
            .map_err(|e| FabricError::Invalid(format!("tls: CA {}: {e}", ca_file.display())))?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| FabricError::Invalid(format!("tls: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(cfg)
}
