//! TLS 1.3 with rustls and the aws-lc-rs provider: server and client configs
//! from PEM files, the post-quantum posture, and what a handshake negotiated.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, kx_group};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, NamedGroup, RootCertStore, ServerConfig};

/// Which key exchanges a TLS endpoint offers or accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PqMode {
    /// The hybrid `X25519MLKEM768` first; classical groups accepted.
    #[default]
    Prefer,
    /// Hybrid groups only: classical peers fail the handshake.
    Require,
    /// Classical groups only.
    Off,
}

impl PqMode {
    /// The config spelling.
    pub const fn name(self) -> &'static str {
        match self {
            PqMode::Prefer => "prefer",
            PqMode::Require => "require",
            PqMode::Off => "off",
        }
    }
}

impl fmt::Display for PqMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PqMode {
    type Err = String;
    fn from_str(s: &str) -> Result<PqMode, String> {
        match s {
            "prefer" => Ok(PqMode::Prefer),
            "require" => Ok(PqMode::Require),
            "off" => Ok(PqMode::Off),
            other => Err(format!("{other:?} is not prefer, require or off")),
        }
    }
}

/// Why a TLS config could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file is missing, unreadable or holds nothing usable.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which file: `tls.cert`, `tls.key`, `tls.ca`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the combination (key does not match the certificate, ...).
    #[error("TLS config: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What one TLS handshake negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsInfo {
    /// The key exchange group, as a closed label (`X25519MLKEM768`, `X25519`, ...).
    pub kx_group: &'static str,
    /// True for a hybrid post-quantum group.
    pub hybrid: bool,
}

impl TlsInfo {
    /// The info for a negotiated group (`None`: nothing negotiated).
    pub fn from_group(group: Option<NamedGroup>) -> TlsInfo {
        let (kx_group, hybrid) = match group {
            Some(NamedGroup::X25519MLKEM768) => ("X25519MLKEM768", true),
            Some(NamedGroup::secp256r1MLKEM768) => ("SECP256R1MLKEM768", true),
            Some(NamedGroup::MLKEM768) => ("MLKEM768", false),
            Some(NamedGroup::X25519) => ("X25519", false),
            Some(NamedGroup::secp256r1) => ("SECP256R1", false),
            Some(NamedGroup::secp384r1) => ("SECP384R1", false),
            Some(_) => ("other", false),
            None => ("none", false),
        };
        TlsInfo { kx_group, hybrid }
    }
}

impl TlsInfo {
    /// What the handshake of `session` (a client or server connection)
    /// negotiated.
    pub fn of(session: &rustls::CommonState) -> TlsInfo {
        TlsInfo::from_group(session.negotiated_key_exchange_group().map(|g| g.name()))
    }
}

/// Why a TLS client handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The name to check the server's certificate for is not a DNS name or
    /// an IP address.
    #[error("bad TLS name {name:?}: {reason}")]
    Name {
        /// The name given.
        name: String,
        /// Why it is not one.
        reason: String,
    },
    /// The handshake failed (certificate not trusted, no common group, ...).
    #[error("TLS handshake: {0}")]
    Handshake(#[from] std::io::Error),
}

/// The TLS 1.3 client handshake over `tcp`, checking the server's
/// certificate for `name`; returns the stream and what it negotiated. Relay
/// dials and clients both use it; the caller bounds it in time.
pub async fn connect(
    tcp: tokio::net::TcpStream,
    config: Arc<ClientConfig>,
    name: &str,
) -> Result<(tokio_rustls::client::TlsStream<tokio::net::TcpStream>, TlsInfo), ConnectError> {
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| ConnectError::Name { name: name.to_string(), reason: e.to_string() })?;
    let stream = tokio_rustls::TlsConnector::from(config).connect(server_name, tcp).await?;
    let info = TlsInfo::of(stream.get_ref().1);
    Ok((stream, info))
}

/// The public key (the DER `SubjectPublicKeyInfo`) of a certificate, or
/// `None` when it does not parse.
pub fn public_key(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    Some(parsed.subject_public_key_info().as_ref().to_vec())
}

/// The public key of the first (leaf) certificate in a PEM file.
pub fn leaf_public_key(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let certs = load_certs(what, path)?;
    certs.first().and_then(|c| public_key(c)).ok_or_else(|| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason: "the first certificate does not parse".into(),
    })
}

/// The public key of the leaf certificate the peer of a handshake (client
/// or server side) presented and the handshake verified; `None` when it
/// presented none.
pub fn peer_public_key(session: &rustls::CommonState) -> Option<Vec<u8>> {
    session.peer_certificates()?.first().and_then(|c| public_key(c))
}

/// The aws-lc-rs provider with the key exchange groups `pq` allows.
pub fn provider(pq: PqMode) -> Arc<CryptoProvider> {
    let kx_groups = match pq {
        PqMode::Prefer => vec![kx_group::X25519MLKEM768, kx_group::X25519, kx_group::SECP256R1],
        PqMode::Require => vec![kx_group::X25519MLKEM768, kx_group::SECP256R1MLKEM768],
        PqMode::Off => vec![kx_group::X25519, kx_group::SECP256R1],
    };
    Arc::new(CryptoProvider { kx_groups, ..aws_lc_rs::default_provider() })
}

/// True when the provider can negotiate a hybrid group (the `pq_ready` gate).
pub fn supports_hybrid(provider: &CryptoProvider) -> bool {
    provider.kx_groups.iter().any(|g| TlsInfo::from_group(Some(g.name())).hybrid)
}

/// A TLS 1.3-only server config from a PEM certificate chain and key.
/// With `clients` (a CA file), a client may present a certificate, which
/// must then chain to that CA ([`peer_public_key`] gives its key); clients
/// without one are served as before.
pub fn server_config(
    cert: &Path,
    key: &Path,
    clients: Option<&Path>,
    pq: PqMode,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs("tls.cert", cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("tls.key", key, e))?;
    let builder =
        ServerConfig::builder_with_provider(provider(pq)).with_protocol_versions(&[&rustls::version::TLS13])?;
    let config = match clients {
        None => builder.with_no_client_auth().with_single_cert(certs, key)?,
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider(pq))
                .allow_unauthenticated()
                .build()
                .map_err(|e| file_error("tls.ca", ca, e))?;
            builder.with_client_cert_verifier(verifier).with_single_cert(certs, key)?
        }
    };
    Ok(Arc::new(config))
}

/// A TLS 1.3-only client config trusting the certificates in `ca` (PEM).
pub fn client_config(ca: &Path, pq: PqMode) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider(pq))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// [`client_config`] that also presents a certificate chain and key (a
/// node dialing another proves its identity with its own certificate).
pub fn client_config_with_cert(ca: &Path, cert: &Path, key: &Path, pq: PqMode) -> Result<Arc<ClientConfig>, TlsError> {
    let certs = load_certs("tls.cert", cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("tls.key", key, e))?;
    let config = ClientConfig::builder_with_provider(provider(pq))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certs, key)?;
    Ok(Arc::new(config))
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs("tls.ca", ca)? {
        roots.add(cert).map_err(|e| file_error("tls.ca", ca, e))?;
    }
    Ok(roots)
}

fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::File { what, path: path.to_path_buf(), reason: "no certificate in the file".into() });
    }
    Ok(certs)
}

fn file_error(what: &'static str, path: &Path, e: impl fmt::Display) -> TlsError {
    TlsError::File { what, path: path.to_path_buf(), reason: e.to_string() }
}
