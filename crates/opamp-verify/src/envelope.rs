//! The versioned signature envelope carried in `DownloadableFile.signature` (default mode).

use crate::error::{Result, VerifyError};
use crate::key::{KeyId, Scheme};
use crate::statement::Statement;
use crate::wire::{WireReader, put_prefixed};

/// First eight bytes of every envelope.
pub const ENVELOPE_MAGIC: [u8; 8] = *b"OPAMPSIG";
/// The envelope format version this build writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;
/// Prefix of every signed message, so a signature made for a statement can never be taken for a
/// signature over anything else (a content hash in compatible mode, a TLS handshake, ...).
pub const SIGNING_DOMAIN: &[u8] = b"opamp-verify/statement/v1\0";
/// Longest statement encoding accepted, in bytes.
pub const MAX_STATEMENT_LEN: usize = 1024;
/// Longest signature accepted, in bytes (an 8192-bit RSA signature).
pub const MAX_SIGNATURE_LEN: usize = 1024;

/// A signed statement as it travels in `DownloadableFile.signature`.
///
/// # Byte layout (format version 1)
///
/// All integers are unsigned big-endian. Lengths outside their range, unknown codes, invalid
/// UTF-8, non-canonical versions and trailing bytes are all refused.
///
/// | bytes | field |
/// |------:|-------|
/// | 8 | magic `OPAMPSIG` (`4f 50 41 4d 50 53 49 47`) |
/// | 1 | format version, `0x01` |
/// | 1 | scheme: `1` Ed25519, `2` RSA-PSS/SHA-256 (salt 32), `3` RSA PKCS#1 v1.5/SHA-256 |
/// | 32 | key id: SHA-256 of the signer's DER SubjectPublicKeyInfo |
/// | 2 | statement length `S`, 1..=1024 |
/// | S | statement (below) |
/// | 2 | signature length `G`, 1..=1024 |
/// | G | signature |
///
/// Statement:
///
/// | bytes | field |
/// |------:|-------|
/// | 2 + N | package name, `N` in 1..=255, UTF-8, no NUL |
/// | 2 + V | version, `V` in 1..=128, canonical semver text, optional leading `v` |
/// | 32 | SHA-256 of the package file (must equal the offer's `content_hash`) |
/// | 8 | file size in bytes |
/// | 8 | not-after, unix seconds |
/// | 1 | downgrade tag: `0` forbidden, `1` allow from at most the version that follows |
/// | 2 + D | (tag 1 only) highest installed version the downgrade is allowed from, canonical semver |
///
/// The signature covers `SIGNING_DOMAIN || format version || scheme || key id || statement`,
/// so the scheme and key id cannot be swapped without breaking it.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use opamp_verify::{ContentHash, ReleaseSigner, SignatureEnvelope, Statement};
/// let signer = ReleaseSigner::generate_ed25519()?;
/// let statement = Statement::new("otelcol", "1.0.0", ContentHash::of(b"bin"), 3,
///     UNIX_EPOCH + Duration::from_secs(2_000_000_000))?;
/// let bytes = signer.sign_statement(&statement)?;
/// let envelope = SignatureEnvelope::parse(&bytes)?;
/// assert_eq!(envelope.key_id(), signer.key_id());
/// assert_eq!(envelope.statement(), &statement);
/// assert_eq!(envelope.to_bytes(), bytes);
/// # Ok::<(), opamp_verify::VerifyError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureEnvelope {
    scheme: Scheme,
    key_id: KeyId,
    statement: Statement,
    statement_bytes: Vec<u8>,
    signature: Vec<u8>,
}

impl SignatureEnvelope {
    /// True when `bytes` start with the envelope magic (so they are not a bare signature).
    pub fn is_envelope(bytes: &[u8]) -> bool {
        bytes.starts_with(&ENVELOPE_MAGIC)
    }

    /// Parses an envelope strictly. Never panics, whatever the input.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut reader = WireReader::new(bytes);
        let (scheme, key_id) = read_header(
            &mut reader,
            ENVELOPE_MAGIC,
            "not an opamp-verify signature envelope",
        )?;
        let statement_bytes = reader.prefixed("statement", MAX_STATEMENT_LEN)?;
        let statement = Statement::from_bytes(statement_bytes)?;
        let signature = reader.prefixed("signature", MAX_SIGNATURE_LEN)?;
        reader.finish("envelope")?;
        Ok(Self {
            scheme,
            key_id,
            statement,
            statement_bytes: statement_bytes.to_vec(),
            signature: signature.to_vec(),
        })
    }

    /// Builds an envelope around a signature made over [`signed_message`].
    #[cfg(feature = "sign")]
    pub(crate) fn assemble(
        scheme: Scheme,
        key_id: KeyId,
        statement: &Statement,
        signature: Vec<u8>,
    ) -> Result<Self> {
        let statement_bytes = statement.to_bytes();
        if statement_bytes.len() > MAX_STATEMENT_LEN {
            return Err(VerifyError::Malformed {
                field: "statement",
                reason: "longer than its maximum length",
            });
        }
        if signature.is_empty() || signature.len() > MAX_SIGNATURE_LEN {
            return Err(VerifyError::Malformed {
                field: "signature",
                reason: "length outside 1..=1024 bytes",
            });
        }
        Ok(Self {
            scheme,
            key_id,
            statement: statement.clone(),
            statement_bytes,
            signature,
        })
    }

    /// The envelope's bytes, as put in `DownloadableFile.signature`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            ENVELOPE_MAGIC.len() + 38 + self.statement_bytes.len() + self.signature.len(),
        );
        write_header(&mut out, ENVELOPE_MAGIC, self.scheme, self.key_id);
        put_prefixed(&mut out, &self.statement_bytes);
        put_prefixed(&mut out, &self.signature);
        out
    }

    /// The bytes the signature covers.
    pub fn signed_message(&self) -> Vec<u8> {
        signed_message(self.scheme, self.key_id, &self.statement_bytes)
    }

    /// The signature scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Id of the key that signed.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The signed statement (not yet verified: check it with a [`TrustPolicy`](crate::TrustPolicy)).
    pub fn statement(&self) -> &Statement {
        &self.statement
    }

    /// The raw signature bytes.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// `SIGNING_DOMAIN || format version || scheme || key id || statement`.
pub(crate) fn signed_message(scheme: Scheme, key_id: KeyId, statement_bytes: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_DOMAIN.len() + 34 + statement_bytes.len());
    message.extend_from_slice(SIGNING_DOMAIN);
    message.push(ENVELOPE_VERSION);
    message.push(scheme.code());
    message.extend_from_slice(key_id.as_bytes());
    message.extend_from_slice(statement_bytes);
    message
}

/// Reads the header both envelope formats share (magic, format version, scheme, key id);
/// `not_ours` says what the magic should have announced.
pub(crate) fn read_header(
    reader: &mut WireReader<'_>,
    magic: [u8; 8],
    not_ours: &'static str,
) -> Result<(Scheme, KeyId)> {
    if reader.array::<8>("magic")? != magic {
        return Err(VerifyError::Malformed {
            field: "magic",
            reason: not_ours,
        });
    }
    let version = reader.u8("format version")?;
    if version != ENVELOPE_VERSION {
        return Err(VerifyError::UnsupportedEnvelopeVersion {
            version,
            supported: ENVELOPE_VERSION,
        });
    }
    let scheme = Scheme::from_code(reader.u8("scheme")?)?;
    let key_id = KeyId::from_bytes(reader.array("key id")?);
    Ok((scheme, key_id))
}

/// Writes the header [`read_header`] reads.
pub(crate) fn write_header(out: &mut Vec<u8>, magic: [u8; 8], scheme: Scheme, key_id: KeyId) {
    out.extend_from_slice(&magic);
    out.push(ENVELOPE_VERSION);
    out.push(scheme.code());
    out.extend_from_slice(key_id.as_bytes());
}
