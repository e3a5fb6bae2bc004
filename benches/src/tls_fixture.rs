//! Certificates for load runs over `wss://`: a throwaway CA made with rcgen, a server
//! certificate for 127.0.0.1, and one client certificate the simulated agents share for
//! mutual TLS (the server still verifies and keeps the chain per connection, which is the
//! cost being measured).
#![allow(clippy::unwrap_used)] // A measuring tool's fixture: failing loudly is right.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// The PEM files of one run, written into a directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate (trusted by both sides).
    pub ca_cert: PathBuf,
    /// The server's certificate (SANs `localhost`, `127.0.0.1`).
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// The agents' shared client certificate.
    pub client_cert: PathBuf,
    /// The agents' key.
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// Makes a CA, a server and a client certificate and writes them into `dir`.
    pub fn create(dir: &Path) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "load run CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&ca_key).unwrap();
        let issue = |sans: Vec<String>, usage| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = issue(
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = issue(
            vec!["agent.fleet.local".to_owned()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let files = Self::in_dir(dir);
        std::fs::write(&files.ca_cert, ca.pem()).unwrap();
        std::fs::write(&files.server_cert, server_cert).unwrap();
        std::fs::write(&files.server_key, server_key).unwrap();
        std::fs::write(&files.client_cert, client_cert).unwrap();
        std::fs::write(&files.client_key, client_key).unwrap();
        files
    }

    /// The paths [`TlsFiles::create`] writes in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        }
    }
}
