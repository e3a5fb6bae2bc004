//! The names in a verified client certificate, for authorising agents under mutual TLS.

use rustls_pki_types::CertificateDer;
use x509_cert::Certificate;
use x509_cert::der::asn1::{PrintableStringRef, Utf8StringRef};
use x509_cert::der::{Decode, oid::db::rfc4519};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

/// Who a client certificate names. Built only from certificates rustls already verified
/// against the configured client CA.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientIdentity {
    /// The subject as an RFC 4514 string, for example `CN=agent-7,O=Example`.
    pub subject: String,
    /// The subject's common name, when it has one.
    pub common_name: Option<String>,
    /// DNS names from the subject alternative name extension.
    pub dns_names: Vec<String>,
    /// URIs from the subject alternative name extension (for example SPIFFE ids).
    pub uris: Vec<String>,
}

impl ClientIdentity {
    /// Reads the names from a DER certificate; `None` if it does not parse.
    pub fn from_der(certificate: &CertificateDer<'_>) -> Option<Self> {
        let certificate = Certificate::from_der(certificate.as_ref()).ok()?;
        let tbs = &certificate.tbs_certificate;
        let common_name = tbs
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .find(|attribute| attribute.oid == rfc4519::CN)
            .and_then(|attribute| {
                let value = &attribute.value;
                value
                    .decode_as::<Utf8StringRef<'_>>()
                    .map(|s| s.as_str().to_owned())
                    .or_else(|_| {
                        value
                            .decode_as::<PrintableStringRef<'_>>()
                            .map(|s| s.as_str().to_owned())
                    })
                    .ok()
            });
        let mut identity = Self {
            subject: tbs.subject.to_string(),
            common_name,
            dns_names: Vec::new(),
            uris: Vec::new(),
        };
        if let Ok(Some((_critical, names))) = tbs.get::<SubjectAltName>() {
            for name in names.0 {
                match name {
                    GeneralName::DnsName(dns) => identity.dns_names.push(ia5(&dns)),
                    GeneralName::UniformResourceIdentifier(uri) => identity.uris.push(ia5(&uri)),
                    _ => {}
                }
            }
        }
        Some(identity)
    }
}

fn ia5(value: &x509_cert::der::asn1::Ia5String) -> String {
    value.to_string()
}
