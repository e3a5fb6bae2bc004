//! rustls configuration for both sides: custom CA, client certificates (mTLS), optional
//! built-in web PKI roots.
//!
//! Configurations are built with an explicit `ring` crypto provider so that they never depend
//! on which provider another crate in the process installed as the default.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::{self, PemObject as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Result, TransportError};

/// A certificate chain and its private key, kept as PEM text.
#[derive(Clone)]
pub struct Identity {
    cert_chain_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

impl Identity {
    /// An identity from PEM text: the certificate chain (leaf first) and a PKCS#8, PKCS#1 or
    /// SEC1 private key.
    pub fn from_pem(cert_chain_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        Self {
            cert_chain_pem: cert_chain_pem.into(),
            key_pem: key_pem.into(),
        }
    }

    /// An identity read from two PEM files.
    ///
    /// # Errors
    /// [`TransportError::Pem`] when a file cannot be read.
    pub fn from_files(cert_file: &Path, key_file: &Path) -> Result<Self> {
        Ok(Self::from_pem(
            read_file(cert_file, "certificate chain")?,
            read_file(key_file, "private key")?,
        ))
    }

    fn parse(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let chain = parse_certs(&self.cert_chain_pem, "certificate chain")?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| match e {
            pem::Error::NoItemsFound => pem_error("private key", "no private key found".to_owned()),
            other => pem_error("private key", other.to_string()),
        })?;
        Ok((chain, key))
    }
}

/// TLS settings of the agent side.
#[cfg(feature = "client")]
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ClientTls {
    /// Extra trusted CA certificates, PEM (may hold several; may be empty).
    pub ca_certs_pem: Vec<u8>,
    /// Also trust the Mozilla web PKI roots compiled into `webpki-roots`.
    pub use_webpki_roots: bool,
    /// A client certificate for mutual TLS.
    pub identity: Option<Identity>,
}

#[cfg(feature = "client")]
impl ClientTls {
    /// Settings that trust only the CA certificates in `ca_certs_pem`.
    pub fn with_ca_pem(ca_certs_pem: impl Into<Vec<u8>>) -> Self {
        Self {
            ca_certs_pem: ca_certs_pem.into(),
            ..Self::default()
        }
    }

    /// Settings from files, as a supervisor's `server.tls.{ca_file,cert_file,key_file}` gives
    /// them. Without a CA file, the web PKI roots are trusted.
    ///
    /// # Errors
    /// [`TransportError::Pem`] when a file cannot be read.
    pub fn from_files(
        ca_file: Option<&Path>,
        cert_and_key: Option<(&Path, &Path)>,
    ) -> Result<Self> {
        let ca_certs_pem = match ca_file {
            Some(path) => read_file(path, "CA certificates")?,
            None => Vec::new(),
        };
        let identity = cert_and_key
            .map(|(cert, key)| Identity::from_files(cert, key))
            .transpose()?;
        Ok(Self {
            use_webpki_roots: ca_file.is_none(),
            ca_certs_pem,
            identity,
        })
    }

    /// Sets the client identity used for mutual TLS.
    #[must_use]
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Builds the rustls configuration.
    ///
    /// # Errors
    /// [`TransportError::Pem`] for unreadable PEM, [`TransportError::Tls`] when rustls refuses
    /// the certificates or key.
    pub fn build(&self) -> Result<Arc<rustls::ClientConfig>> {
        let mut roots = RootCertStore::empty();
        if self.use_webpki_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        if !self.ca_certs_pem.is_empty() {
            for cert in parse_certs(&self.ca_certs_pem, "CA certificates")? {
                roots.add(cert)?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match &self.identity {
            Some(identity) => {
                let (chain, key) = identity.parse()?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// Whether and how the server asks agents for a certificate.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum ClientAuth {
    /// No client certificate is requested.
    #[default]
    None,
    /// A certificate signed by one of these CAs (PEM) is required; the handshake fails without
    /// one.
    Required {
        /// Trusted CA certificates for client certificates, PEM.
        ca_certs_pem: Vec<u8>,
    },
    /// A certificate is requested and verified if sent, but agents without one are let in.
    Optional {
        /// Trusted CA certificates for client certificates, PEM.
        ca_certs_pem: Vec<u8>,
    },
}

/// TLS settings of the server side.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerTls {
    /// The server's certificate chain and key.
    pub identity: Identity,
    /// Client-certificate policy.
    pub client_auth: ClientAuth,
}

impl ServerTls {
    /// TLS without client certificates.
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            client_auth: ClientAuth::None,
        }
    }

    /// Sets the client-certificate policy (mutual TLS).
    #[must_use]
    pub fn client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.client_auth = client_auth;
        self
    }

    /// Builds the rustls configuration (HTTP/1.1 only, as OpAMP needs).
    ///
    /// # Errors
    /// [`TransportError::Pem`], [`TransportError::Tls`] or [`TransportError::ClientVerifier`]
    /// when the certificates, key or CA cannot be used.
    pub fn build(&self) -> Result<Arc<rustls::ServerConfig>> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match &self.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Required { ca_certs_pem } | ClientAuth::Optional { ca_certs_pem } => {
                let mut roots = RootCertStore::empty();
                for cert in parse_certs(ca_certs_pem, "client CA certificates")? {
                    roots.add(cert)?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
                let verifier = if matches!(self.client_auth, ClientAuth::Optional { .. }) {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| TransportError::ClientVerifier(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let (chain, key) = self.identity.parse()?;
        let mut config = builder.with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| TransportError::Pem {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn pem_error(what: &'static str, reason: String) -> TransportError {
    TransportError::Pem {
        what,
        path: PathBuf::from("<memory>"),
        reason,
    }
}

fn parse_certs(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error(what, "no certificate found".to_owned()));
    }
    Ok(certs)
}
