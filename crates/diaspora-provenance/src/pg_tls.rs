//! TLS for the PostgreSQL store's connections, as libpq's `sslmode` and
//! `sslrootcert` ask for it, with rustls on the ring provider.
//!
//! The `postgres` driver parses `sslmode=disable|prefer|require` itself but
//! knows neither `verify-ca`/`verify-full` nor `sslrootcert`, and brings no
//! TLS of its own. So [`split_url`] takes both parameters out of the URL
//! (the pure part, fuzzed by `fuzz/fuzz_targets/pg_tls_url.rs`), and
//! [`connector`] builds the driver's TLS connector from them:
//!
//! | `sslmode` | TLS | certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | if the server offers it, else plain | nothing; the chain against `sslrootcert` when given |
//! | `require` | always | nothing; the chain against `sslrootcert` when given |
//! | `verify-ca` | always | the chain against `sslrootcert` (required) |
//! | `verify-full` | always | the chain against `sslrootcert` (required) and the host name |
//!
//! "Nothing" still checks the handshake's signatures: the server must hold
//! the key of the certificate it presents, whatever that certificate is.
//! `require` and `prefer` with `sslrootcert` verifying the chain is what
//! libpq does when a root certificate file exists.
//!
//! # What it does not do
//!
//! - No default root file: libpq's `~/.postgresql/root.crt` and
//!   `sslrootcert=system` are not read; name a PEM file.
//! - No client certificates (`sslcert`/`sslkey`), CRLs or channel binding
//!   (SCRAM runs without `-PLUS`).
//! - `prefer` does not retry without TLS when the TLS handshake itself
//!   fails (libpq does); it falls back only when the server declines TLS.

use crate::model::{ProvError, Result};
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest `sslrootcert` file read (a full public CA bundle is about
/// 200 kB).
pub const ROOT_CERT_BYTES_MAX: u64 = 4 << 20;

/// libpq's `sslmode`s that this store supports (not `allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS if the server offers it, else plain (the default).
    Prefer,
    /// TLS, the certificate unchecked unless `sslrootcert` is given.
    Require,
    /// TLS, the certificate's chain checked against `sslrootcert`.
    VerifyCa,
    /// TLS, the chain checked against `sslrootcert` and the certificate
    /// naming the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The values `sslmode` accepts, for error messages.
    pub const ALLOWED: &'static str = "disable, prefer, require, verify-ca, verify-full";

    /// Parses an `sslmode` value (case-sensitive, as libpq does).
    ///
    /// ```
    /// use diaspora_provenance::pg_tls::SslMode;
    /// assert_eq!(SslMode::parse("verify-full").unwrap(), SslMode::VerifyFull);
    /// assert!(SslMode::parse("on").unwrap_err().to_string().contains("verify-ca"));
    /// ```
    pub fn parse(value: &str) -> Result<SslMode> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(ProvError::Invalid(format!(
                    "invalid sslmode {value:?}: expected one of {}",
                    Self::ALLOWED
                )))
            }
        })
    }

    /// The value as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The mode the driver negotiates with: whether to ask for TLS and
    /// whether a server declining it is an error.
    pub fn driver_mode(self) -> postgres::config::SslMode {
        match self {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                postgres::config::SslMode::Require
            }
        }
    }
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Nothing but the handshake's signatures.
    None,
    /// The chain up to a root of `sslrootcert`, not the host name.
    Chain,
    /// The chain and the host name.
    ChainAndName,
}

/// What a URL asks of TLS: its `sslmode` and `sslrootcert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsParams {
    /// `sslmode` ([`SslMode::Prefer`] when absent).
    pub mode: SslMode,
    /// `sslrootcert`: a PEM file of the certificates to trust as roots.
    pub root_cert: Option<PathBuf>,
}

impl TlsParams {
    /// How much of the server's certificate these parameters check.
    pub fn verification(&self) -> Verification {
        match (self.mode, &self.root_cert) {
            (SslMode::VerifyFull, _) => Verification::ChainAndName,
            (SslMode::VerifyCa, _) => Verification::Chain,
            (SslMode::Disable, _) | (SslMode::Prefer | SslMode::Require, None) => {
                Verification::None
            }
            (SslMode::Prefer | SslMode::Require, Some(_)) => Verification::Chain,
        }
    }

    /// `sslmode=…[, sslrootcert=…]`, for error messages.
    pub fn describe(&self) -> String {
        match &self.root_cert {
            Some(p) => format!(
                "sslmode={}, sslrootcert={}",
                self.mode.as_str(),
                p.display()
            ),
            None => format!("sslmode={}", self.mode.as_str()),
        }
    }
}

/// Where the query of a `postgres://` URL starts (its `?`), found as the
/// driver finds it: the user info runs to the first `@`, the query from
/// the first `?` after it. `Err` if `url` is not a `postgres://` or
/// `postgresql://` URL.
fn query_start(url: &str) -> Result<Option<usize>> {
    let prefix = ["postgres://", "postgresql://"]
        .into_iter()
        .find(|p| url.starts_with(p))
        .ok_or_else(|| ProvError::Invalid("not a postgres:// or postgresql:// URL".to_string()))?;
    let host_start = match url[prefix.len()..].find('@') {
        Some(at) => prefix.len() + at + 1,
        None => prefix.len(),
    };
    Ok(url[host_start..].find('?').map(|q| host_start + q))
}

/// A query key or value, percent-decoded as the driver decodes it.
fn decode(raw: &str) -> Option<String> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Splits `sslmode` and `sslrootcert` out of a `postgres://` URL: returns
/// the URL the driver is to parse (every other parameter kept, in order,
/// as written) and the TLS parameters. A parameter given twice counts
/// once, the last (as the driver treats its own). An empty `sslrootcert`
/// is none (as in libpq). Errors: not a `postgres://` URL, an `sslmode`
/// other than [`SslMode::ALLOWED`], `verify-ca`/`verify-full` without
/// `sslrootcert`, a value that is not UTF-8 once percent-decoded.
///
/// Pure and total: any string gives a value or an error, never a panic.
///
/// ```
/// use diaspora_provenance::pg_tls::{split_url, SslMode};
/// let (url, tls) = split_url(
///     "postgres://u:p@db:5432/prov?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
/// )
/// .unwrap();
/// assert_eq!(url, "postgres://u:p@db:5432/prov?application_name=x");
/// assert_eq!(tls.mode, SslMode::VerifyFull);
/// assert_eq!(tls.root_cert.unwrap().to_str(), Some("/etc/ca.pem"));
/// ```
pub fn split_url(url: &str) -> Result<(String, TlsParams)> {
    let mut tls = TlsParams {
        mode: SslMode::Prefer,
        root_cert: None,
    };
    let Some(q) = query_start(url)? else {
        return Ok((url.to_string(), tls));
    };
    let mut kept: Vec<&str> = Vec::new();
    // The driver's walk: a key runs to the next `=`, its value to the next `&`.
    let mut rest = &url[q + 1..];
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            // "unterminated parameter": left for the driver to report.
            kept.push(rest);
            break;
        };
        let value_len = rest[eq + 1..].find('&').unwrap_or(rest.len() - eq - 1);
        let param = &rest[..eq + 1 + value_len];
        let (key, value) = (&rest[..eq], &rest[eq + 1..eq + 1 + value_len]);
        rest = rest.get(param.len() + 1..).unwrap_or("");
        let utf8 = |what: &str| {
            decode(value).ok_or_else(|| {
                ProvError::Invalid(format!(
                    "{what}: the value is not UTF-8 once percent-decoded"
                ))
            })
        };
        match decode(key).as_deref() {
            Some("sslmode") => tls.mode = SslMode::parse(&utf8("sslmode")?)?,
            Some("sslrootcert") => {
                let path = utf8("sslrootcert")?;
                tls.root_cert = (!path.is_empty()).then(|| PathBuf::from(path));
            }
            _ => kept.push(param),
        }
    }
    if matches!(tls.mode, SslMode::VerifyCa | SslMode::VerifyFull) && tls.root_cert.is_none() {
        return Err(ProvError::Invalid(format!(
            "sslmode={} needs sslrootcert=FILE, a PEM file of the CA certificates to trust",
            tls.mode.as_str()
        )));
    }
    let head = &url[..q];
    let driver_url = if kept.is_empty() {
        head.to_string()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    Ok((driver_url, tls))
}

/// The certificates of the PEM file `path`, as trust roots. Errors name
/// the file: unreadable, larger than [`ROOT_CERT_BYTES_MAX`], not PEM, no
/// certificate in it, a certificate that is not a usable root.
pub fn load_roots(path: &Path) -> Result<RootCertStore> {
    let fail = |why: String| ProvError::Invalid(format!("sslrootcert {}: {why}", path.display()));
    let len = std::fs::metadata(path)
        .map_err(|e| fail(format!("cannot read it: {e}")))?
        .len();
    if len > ROOT_CERT_BYTES_MAX {
        return Err(fail(format!(
            "{len} bytes, more than the {ROOT_CERT_BYTES_MAX} a root certificate file may hold"
        )));
    }
    let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in rustls_pemfile::certs(&mut &pem[..]).enumerate() {
        let cert = cert.map_err(|e| fail(format!("not a readable PEM file: {e}")))?;
        roots.add(cert).map_err(|e| {
            fail(format!(
                "certificate {} is not usable as a root certificate: {e}",
                i + 1
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(fail(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_string(),
        ));
    }
    Ok(roots)
}

/// The ring provider: the only crypto backend this crate builds with.
fn provider() -> Arc<CryptoProvider> {
    // rustls 0.23.48 deprecates the ring provider because it has no post-quantum
    // key exchange; the project builds with ring alone (one crypto backend, no
    // C/CMake toolchain for aws-lc), so the warning is acknowledged here.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate verifier for `verification`; `roots` are needed for
/// [`Verification::Chain`] and [`Verification::ChainAndName`].
pub(crate) fn verifier(
    verification: Verification,
    roots: Option<RootCertStore>,
) -> Result<Arc<dyn ServerCertVerifier>> {
    let provider = provider();
    let webpki = |roots: Option<RootCertStore>| {
        let roots = roots.ok_or_else(|| {
            ProvError::Invalid("certificate verification needs sslrootcert".to_string())
        })?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| ProvError::Invalid(format!("sslrootcert: {e}")))
    };
    Ok(match verification {
        Verification::None => Arc::new(AnyCertificate(provider.signature_verification_algorithms)),
        Verification::Chain => Arc::new(ChainOnly(webpki(roots)?)),
        Verification::ChainAndName => webpki(roots)?,
    })
}

/// The driver's TLS connector for `tls`, or `None` for `sslmode=disable`
/// (connect with [`postgres::NoTls`]). Reads `sslrootcert` now.
pub fn connector(tls: &TlsParams) -> Result<Option<MakeRustlsConnect>> {
    if tls.mode == SslMode::Disable {
        return Ok(None);
    }
    let verification = tls.verification();
    let roots = match (&tls.root_cert, verification) {
        (Some(path), Verification::Chain | Verification::ChainAndName) => Some(load_roots(path)?),
        _ => None,
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProvError::Invalid(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier(verification, roots)?)
        .with_no_client_auth();
    // What libpq 17 sends; PostgreSQL 17 requires it for direct TLS.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(MakeRustlsConnect {
        config: Arc::new(config),
        verification,
        describe: tls.describe().into(),
    }))
}

/// Accepts any certificate, but still checks that the server signed the
/// handshake with the key of the certificate it presented (`require`
/// without `sslrootcert`: encryption against a passive listener only).
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// webpki's verification less the host name (`verify-ca`): webpki checks
/// the name last, after the chain, so a name mismatch means the chain is
/// good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The driver's TLS connector factory (one per host connected to).
#[derive(Clone)]
pub struct MakeRustlsConnect {
    config: Arc<ClientConfig>,
    verification: Verification,
    /// `sslmode=…, sslrootcert=…`, for handshake errors.
    describe: Arc<str>,
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = std::convert::Infallible;

    fn make_tls_connect(
        &mut self,
        domain: &str,
    ) -> std::result::Result<RustlsConnect, Self::Error> {
        // The name is checked in `connect`: the driver calls this for a
        // Unix socket too (domain ""), where it then never connects TLS.
        Ok(RustlsConnect {
            config: self.config.clone(),
            verification: self.verification,
            describe: self.describe.clone(),
            domain: domain.to_string(),
        })
    }
}

/// The driver's TLS connector for one host.
pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    verification: Verification,
    describe: Arc<str>,
    domain: String,
}

impl RustlsConnect {
    /// The name sent (SNI) and, for `verify-full`, checked. A name rustls
    /// cannot take is an error only where it is checked.
    fn server_name(&self) -> io::Result<ServerName<'static>> {
        match ServerName::try_from(self.domain.clone()) {
            Ok(name) => Ok(name),
            Err(_) if self.verification != Verification::ChainAndName => Ok(ServerName::IpAddress(
                std::net::IpAddr::from([0u8, 0, 0, 0]).into(),
            )),
            Err(e) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: host {:?} is not a name a certificate can be checked against: {e}",
                    self.describe, self.domain
                ),
            )),
        }
    }
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = self.server_name()?;
            tokio_rustls::TlsConnector::from(self.config)
                .connect(name, stream)
                .await
                .map(RustlsStream)
                .map_err(|e| {
                    let unknown_issuer = matches!(
                        e.get_ref()
                            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
                        Some(rustls::Error::InvalidCertificate(
                            CertificateError::UnknownIssuer
                        ))
                    );
                    let hint = if unknown_issuer {
                        " (no certificate in sslrootcert signed the server's certificate)"
                    } else {
                        ""
                    };
                    io::Error::new(
                        e.kind(),
                        format!(
                            "TLS handshake with {} ({}) failed: {e}{hint}",
                            self.domain, self.describe
                        ),
                    )
                })
        })
    }
}

/// A TLS connection to the server.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(url: &str) -> (String, SslMode, Option<String>) {
        let (u, t) = split_url(url).unwrap();
        (
            u,
            t.mode,
            t.root_cert.map(|p| p.to_string_lossy().into_owned()),
        )
    }

    #[test]
    fn takes_out_sslmode_and_sslrootcert_only() {
        assert_eq!(
            split("postgres://u:p@h:5432/db"),
            ("postgres://u:p@h:5432/db".into(), SslMode::Prefer, None)
        );
        assert_eq!(
            split("postgresql://h/db?sslmode=require"),
            ("postgresql://h/db".into(), SslMode::Require, None)
        );
        assert_eq!(
            split("postgres://h/db?application_name=a&sslmode=verify-ca&sslrootcert=%2Ftmp%2Fca%20x.pem&connect_timeout=5"),
            (
                "postgres://h/db?application_name=a&connect_timeout=5".into(),
                SslMode::VerifyCa,
                Some("/tmp/ca x.pem".into())
            )
        );
        // Percent-encoded key; the last of a repeated parameter counts.
        assert_eq!(
            split("postgres://h/db?ssl%6dode=require&sslmode=disable"),
            ("postgres://h/db".into(), SslMode::Disable, None)
        );
        // An empty sslrootcert is none; require still encrypts.
        assert_eq!(
            split("postgres://h/db?sslmode=require&sslrootcert="),
            ("postgres://h/db".into(), SslMode::Require, None)
        );
        // A `?` in the password is not the query (the user info runs to `@`).
        assert_eq!(
            split("postgres://u:p?sslmode=x@h/db?sslmode=disable"),
            (
                "postgres://u:p?sslmode=x@h/db".into(),
                SslMode::Disable,
                None
            )
        );
        // Whatever the driver would refuse is left for it to refuse.
        assert_eq!(
            split("postgres://h/db?sslmode=require&broken"),
            ("postgres://h/db?broken".into(), SslMode::Require, None)
        );
        assert_eq!(
            split("postgres://h/db?"),
            ("postgres://h/db".into(), SslMode::Prefer, None)
        );
    }

    #[test]
    fn refuses_bad_values_clearly() {
        let err = split_url("postgres://h/db?sslmode=allow")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"allow\""), "{err}");
        assert!(err.contains(SslMode::ALLOWED), "{err}");
        let err = split_url("postgres://h/db?sslmode=Require")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid sslmode"), "{err}");
        for mode in ["verify-ca", "verify-full"] {
            let err = split_url(&format!("postgres://h/db?sslmode={mode}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("needs sslrootcert"), "{err}");
        }
        let err = split_url("postgres://h/db?sslrootcert=%ff")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not UTF-8"), "{err}");
        assert!(split_url("host=h sslmode=require").is_err());
    }

    #[test]
    fn verification_follows_libpq() {
        let with = |mode, root: Option<&str>| {
            TlsParams {
                mode,
                root_cert: root.map(PathBuf::from),
            }
            .verification()
        };
        assert_eq!(with(SslMode::Prefer, None), Verification::None);
        assert_eq!(with(SslMode::Require, None), Verification::None);
        assert_eq!(with(SslMode::Require, Some("ca.pem")), Verification::Chain);
        assert_eq!(with(SslMode::Prefer, Some("ca.pem")), Verification::Chain);
        assert_eq!(with(SslMode::VerifyCa, Some("ca.pem")), Verification::Chain);
        assert_eq!(
            with(SslMode::VerifyFull, Some("ca.pem")),
            Verification::ChainAndName
        );
    }

    #[test]
    fn root_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = load_roots(&missing).unwrap_err().to_string();
        assert!(
            err.contains("missing.pem") && err.contains("cannot read"),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let err = load_roots(&empty).unwrap_err().to_string();
        assert!(
            err.contains("empty.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
        // The connector reads the file: a bad one fails before any connection.
        let params = TlsParams {
            mode: SslMode::VerifyCa,
            root_cert: Some(missing),
        };
        assert!(connector(&params).is_err());
        assert!(connector(&TlsParams {
            mode: SslMode::Disable,
            root_cert: None
        })
        .unwrap()
        .is_none());
    }

    /// A CA, a server certificate it signed for `db.example`, and an
    /// unrelated CA.
    struct Pki {
        ca_pem: String,
        other_ca_pem: String,
        leaf: CertificateDer<'static>,
    }

    fn pki() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            (params.self_signed(&key).unwrap(), key)
        };
        let (ca_cert, ca_key) = ca("diaspora test CA");
        let (other, _) = ca("unrelated CA");
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["db.example".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca_cert, &ca_key)
            .unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            other_ca_pem: other.pem(),
            leaf: leaf.der().clone(),
        }
    }

    fn verify(
        verification: Verification,
        roots_pem: Option<&str>,
        leaf: &CertificateDer<'_>,
        host: &str,
    ) -> std::result::Result<(), rustls::Error> {
        let roots = roots_pem.map(|pem| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ca.pem");
            std::fs::write(&path, pem).unwrap();
            load_roots(&path).unwrap()
        });
        let name = ServerName::try_from(host.to_string()).unwrap();
        verifier(verification, roots)
            .unwrap()
            .verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn verifiers_check_what_their_mode_says() {
        let pki = pki();
        let ca = Some(pki.ca_pem.as_str());
        let other = Some(pki.other_ca_pem.as_str());
        // verify-full: chain and name.
        verify(Verification::ChainAndName, ca, &pki.leaf, "db.example").unwrap();
        let err = verify(Verification::ChainAndName, ca, &pki.leaf, "other.example").unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
        // verify-ca: the chain, any name.
        verify(Verification::Chain, ca, &pki.leaf, "other.example").unwrap();
        let err = verify(Verification::Chain, other, &pki.leaf, "db.example").unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            ),
            "{err}"
        );
        // require without a root: anything.
        verify(Verification::None, None, &pki.leaf, "other.example").unwrap();
        verify(
            Verification::None,
            None,
            &CertificateDer::from(b"not DER".to_vec()),
            "x",
        )
        .unwrap();
        // Chain verification without roots is refused, not skipped.
        assert!(verifier(Verification::Chain, None).is_err());
    }

    proptest! {
        #[test]
        fn split_url_never_panics(s in ".{0,200}") {
            let _ = split_url(&s);
            let _ = split_url(&format!("postgres://{s}"));
        }

        #[test]
        fn split_url_keeps_other_parameters(
            params in proptest::collection::vec(("[a-z_]{1,12}", "[a-zA-Z0-9%./-]{0,12}"), 0..6),
            mode in proptest::sample::select(vec!["disable", "prefer", "require"]),
        ) {
            let params: Vec<String> = params
                .into_iter()
                .filter(|(k, _)| !k.starts_with("ssl"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let mut all = params.clone();
            all.insert(all.len() / 2, format!("sslmode={mode}"));
            let url = format!("postgres://u:p@h:1/db?{}", all.join("&"));
            let (driver_url, tls) = split_url(&url).unwrap();
            prop_assert_eq!(tls.mode.as_str(), mode);
            let want = if params.is_empty() {
                "postgres://u:p@h:1/db".to_string()
            } else {
                format!("postgres://u:p@h:1/db?{}", params.join("&"))
            };
            prop_assert_eq!(driver_url, want);
        }
    }
}
