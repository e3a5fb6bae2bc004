//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A PEM file or PEM text could not be read or held no usable item.
    #[error("cannot load {what} from {path}: {reason}")]
    Pem {
        /// What was expected (for example "CA certificates").
        what: &'static str,
        /// Where it was read from (`<memory>` for in-memory PEM).
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// rustls refused the TLS configuration (bad key, mismatched certificate...).
    #[error("invalid TLS configuration")]
    Tls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from the given CA.
    #[error("invalid client-certificate verifier: {0}")]
    ClientVerifier(String),
    /// The endpoint URL cannot be used.
    #[error("invalid endpoint {url}: {reason}")]
    Endpoint {
        /// The URL as given.
        url: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// Building the HTTP client failed.
    #[cfg(feature = "client")]
    #[error("cannot build the HTTP client")]
    HttpClient(#[from] reqwest::Error),
    /// The background task ended before the request could be handled.
    #[error("the transport task has stopped")]
    Stopped,
}

/// Shorthand for results in this crate.
pub type Result<T, E = TransportError> = std::result::Result<T, E>;
