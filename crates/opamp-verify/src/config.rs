//! Signed remote configs: the config digest, the config statement and its envelope.
//!
//! A release key vouches for a collector config the same way it vouches for a package, with a
//! statement in an envelope, but with its own magic (`OPAMPCFG`) and signing domain, so a
//! package signature can never pass for a config signature or the reverse.
//!
//! Byte layouts: see [`ConfigStatement`].

use std::collections::BTreeMap;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::envelope::{ENVELOPE_VERSION, read_header, write_header};
use crate::error::{Result, VerifyError};
use crate::key::{KeyId, Scheme};
use crate::keyring::KeyRing;
use crate::statement::unix_seconds;
use crate::wire::{WireReader, put_prefixed};
use opamp_packages::ContentHash;

/// Name of the `AgentConfigMap` entry that carries a config's signature envelope.
pub const CONFIG_SIGNATURE_ENTRY: &str = "opamp.signature";
/// First eight bytes of every config signature envelope.
pub const CONFIG_ENVELOPE_MAGIC: [u8; 8] = *b"OPAMPCFG";
/// Prefix of every signed config message (differs from the package domain on purpose).
pub const CONFIG_SIGNING_DOMAIN: &[u8] = b"opamp-verify/config-statement/v1\0";
/// Prefix of the digest input, so a config digest is never equal to a file's content hash.
pub const CONFIG_DIGEST_DOMAIN: &[u8] = b"opamp-verify/config-digest/v1\0";
/// Most selector pairs a config statement may carry.
pub const MAX_SELECTOR_PAIRS: usize = 32;
/// Longest selector key or value, in bytes.
pub const MAX_SELECTOR_TEXT_LEN: usize = 255;
const MAX_CONFIG_STATEMENT_LEN: usize = 32 + 1 + MAX_SELECTOR_PAIRS * 2 * (2 + 255) + 8;
const MAX_CONFIG_SIGNATURE_LEN: usize = 1024;

/// One config-map entry as the digest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigEntry<'a> {
    /// The entry's name (its key in the config map).
    pub name: &'a str,
    /// `AgentConfigFile.content_type`.
    pub content_type: &'a str,
    /// `AgentConfigFile.body`.
    pub body: &'a [u8],
}

/// The config digest of `entries` (see the module documentation); the signature entry is left
/// out, whatever its position.
///
/// ```
/// use opamp_verify::{ConfigEntry, config_digest};
/// let a = ConfigEntry { name: "a.yaml", content_type: "text/yaml", body: b"x: 1" };
/// let b = ConfigEntry { name: "b.yaml", content_type: "text/yaml", body: b"y: 2" };
/// assert_eq!(config_digest([a, b]), config_digest([b, a]));
/// ```
pub fn config_digest<'a>(entries: impl IntoIterator<Item = ConfigEntry<'a>>) -> ContentHash {
    let mut sorted: Vec<ConfigEntry<'a>> = entries
        .into_iter()
        .filter(|e| e.name != CONFIG_SIGNATURE_ENTRY)
        .collect();
    sorted.sort_by(|x, y| x.name.as_bytes().cmp(y.name.as_bytes()));
    let mut hasher = Sha256::new();
    hasher.update(CONFIG_DIGEST_DOMAIN);
    for entry in sorted {
        for field in [
            entry.name.as_bytes(),
            entry.content_type.as_bytes(),
            entry.body,
        ] {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field);
        }
    }
    ContentHash::from_bytes(hasher.finalize().into())
}

/// The config digest of a prost `AgentConfigMap`.
#[cfg(feature = "opamp-proto")]
pub fn config_map_digest(map: &opamp_proto::v1::AgentConfigMap) -> ContentHash {
    config_digest(map.config_map.iter().map(|(name, file)| ConfigEntry {
        name,
        content_type: &file.content_type,
        body: &file.body,
    }))
}

/// What a key vouches for about a config: its digest, which agents it is for, and until when.
///
/// # Config digest (version 1)
///
/// SHA-256 over `CONFIG_DIGEST_DOMAIN` followed by every entry of the `AgentConfigMap` except
/// the one named [`CONFIG_SIGNATURE_ENTRY`], sorted by name (bytewise), each as three fields:
/// name, content type, body; every field is its length as 8 bytes big-endian, then its bytes.
/// Length prefixes make the encoding unambiguous (no two maps share one), and sorting makes it
/// independent of the map's order on the wire.
///
/// # Config statement
///
/// | bytes | field |
/// |------:|-------|
/// | 32 | config digest |
/// | 1 | number of selector pairs `P`, 0..=32 |
/// | P × (2 + K, 2 + V) | selector pairs sorted by key: key (1..=255 bytes), value (1..=255 bytes), UTF-8 |
/// | 8 | not-after, unix seconds |
///
/// The selector lists label equalities the agent's own attributes must all satisfy (an empty
/// selector matches every agent). The envelope is the package envelope's layout
/// ([`SignatureEnvelope`](crate::SignatureEnvelope)) with magic `OPAMPCFG` and this statement;
/// the signature covers `CONFIG_SIGNING_DOMAIN || format version || scheme || key id ||
/// statement`.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use opamp_verify::{ConfigStatement, ContentHash};
/// let statement = ConfigStatement::new(ContentHash::of(b"c"), UNIX_EPOCH + Duration::from_secs(9))
///     .with_selector("env", "prod")?;
/// assert_eq!(ConfigStatement::from_bytes(&statement.to_bytes())?, statement);
/// # Ok::<(), opamp_verify::VerifyError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigStatement {
    digest: ContentHash,
    selector: BTreeMap<String, String>,
    not_after: u64,
}

impl ConfigStatement {
    /// A statement for every agent (empty selector), valid until `not_after` (whole seconds).
    pub fn new(digest: ContentHash, not_after: SystemTime) -> Self {
        Self {
            digest,
            selector: BTreeMap::new(),
            not_after: unix_seconds(not_after),
        }
    }

    /// Adds the label equality `key=value` to the selector.
    ///
    /// # Errors
    /// [`VerifyError::Malformed`] for an empty or too long key or value, or too many pairs.
    pub fn with_selector(mut self, key: &str, value: &str) -> Result<Self> {
        check_selector_text("config selector key", key)?;
        check_selector_text("config selector value", value)?;
        self.selector.insert(key.to_owned(), value.to_owned());
        if self.selector.len() > MAX_SELECTOR_PAIRS {
            return Err(VerifyError::Malformed {
                field: "config selector",
                reason: "more than 32 pairs",
            });
        }
        Ok(self)
    }

    /// The signed config digest.
    pub fn digest(&self) -> ContentHash {
        self.digest
    }

    /// The label equalities the agent must satisfy.
    pub fn selector(&self) -> &BTreeMap<String, String> {
        &self.selector
    }

    /// Expiry, unix seconds: refused when `now > not_after`.
    pub fn not_after(&self) -> u64 {
        self.not_after
    }

    /// The canonical encoding (see the module documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(self.digest.as_bytes());
        out.push(u8::try_from(self.selector.len()).unwrap_or(u8::MAX));
        for (key, value) in &self.selector {
            put_prefixed(&mut out, key.as_bytes());
            put_prefixed(&mut out, value.as_bytes());
        }
        out.extend_from_slice(&self.not_after.to_be_bytes());
        out
    }

    /// Parses the encoding strictly: lengths in range, keys sorted and unique, no trailing
    /// bytes. Never panics, whatever the input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut reader = WireReader::new(bytes);
        let digest = ContentHash::from_bytes(reader.array("config digest")?);
        let pairs = usize::from(reader.u8("config selector count")?);
        if pairs > MAX_SELECTOR_PAIRS {
            return Err(VerifyError::Malformed {
                field: "config selector count",
                reason: "more than 32 pairs",
            });
        }
        let mut selector = BTreeMap::new();
        let mut previous: Option<&str> = None;
        for _ in 0..pairs {
            let key = reader.prefixed_str("config selector key", MAX_SELECTOR_TEXT_LEN)?;
            let value = reader.prefixed_str("config selector value", MAX_SELECTOR_TEXT_LEN)?;
            if previous.is_some_and(|p| p >= key) {
                return Err(VerifyError::Malformed {
                    field: "config selector key",
                    reason: "keys must be sorted and unique",
                });
            }
            previous = Some(key);
            selector.insert(key.to_owned(), value.to_owned());
        }
        let not_after = reader.u64("config not-after")?;
        reader.finish("config statement")?;
        Ok(Self {
            digest,
            selector,
            not_after,
        })
    }

    /// The first selector pair `attribute` does not satisfy, if any.
    fn unmatched<'a>(
        &'a self,
        attribute: &impl Fn(&str) -> Option<String>,
    ) -> Option<(&'a str, &'a str, Option<String>)> {
        self.selector.iter().find_map(|(key, wanted)| {
            let actual = attribute(key);
            (actual.as_deref() != Some(wanted.as_str())).then_some((
                key.as_str(),
                wanted.as_str(),
                actual,
            ))
        })
    }
}

fn check_selector_text(field: &'static str, text: &str) -> Result<()> {
    if text.is_empty() || text.len() > MAX_SELECTOR_TEXT_LEN {
        return Err(VerifyError::Malformed {
            field,
            reason: "must be 1 to 255 bytes",
        });
    }
    Ok(())
}

/// A signed [`ConfigStatement`] as it travels in the `opamp.signature` config-map entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigSignature {
    scheme: Scheme,
    key_id: KeyId,
    statement: ConfigStatement,
    statement_bytes: Vec<u8>,
    signature: Vec<u8>,
}

impl ConfigSignature {
    /// Parses an envelope strictly. Never panics, whatever the input.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut reader = WireReader::new(bytes);
        let (scheme, key_id) = read_header(
            &mut reader,
            CONFIG_ENVELOPE_MAGIC,
            "not an opamp-verify config signature envelope",
        )?;
        let statement_bytes = reader.prefixed("config statement", MAX_CONFIG_STATEMENT_LEN)?;
        let statement = ConfigStatement::from_bytes(statement_bytes)?;
        let signature = reader.prefixed("signature", MAX_CONFIG_SIGNATURE_LEN)?;
        reader.finish("config envelope")?;
        Ok(Self {
            scheme,
            key_id,
            statement,
            statement_bytes: statement_bytes.to_vec(),
            signature: signature.to_vec(),
        })
    }

    #[cfg(feature = "sign")]
    pub(crate) fn assemble(
        scheme: Scheme,
        key_id: KeyId,
        statement: &ConfigStatement,
        signature: Vec<u8>,
    ) -> Self {
        Self {
            scheme,
            key_id,
            statement: statement.clone(),
            statement_bytes: statement.to_bytes(),
            signature,
        }
    }

    /// The envelope's bytes, the body of the `opamp.signature` entry.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.statement_bytes.len() + self.signature.len());
        write_header(&mut out, CONFIG_ENVELOPE_MAGIC, self.scheme, self.key_id);
        put_prefixed(&mut out, &self.statement_bytes);
        put_prefixed(&mut out, &self.signature);
        out
    }

    /// Id of the key that signed.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The signature scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The statement (not verified yet: use [`verify_config`]).
    pub fn statement(&self) -> &ConfigStatement {
        &self.statement
    }
}

/// `CONFIG_SIGNING_DOMAIN || format version || scheme || key id || statement`.
pub(crate) fn config_signed_message(
    scheme: Scheme,
    key_id: KeyId,
    statement_bytes: &[u8],
) -> Vec<u8> {
    let mut message = Vec::with_capacity(CONFIG_SIGNING_DOMAIN.len() + 34 + statement_bytes.len());
    message.extend_from_slice(CONFIG_SIGNING_DOMAIN);
    message.push(ENVELOPE_VERSION);
    message.push(scheme.code());
    message.extend_from_slice(key_id.as_bytes());
    message.extend_from_slice(statement_bytes);
    message
}

/// A config signature that verified: who signed and what.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApprovedConfig {
    /// The signing key.
    pub key_id: KeyId,
    /// The scheme used.
    pub scheme: Scheme,
    /// The verified statement.
    pub statement: ConfigStatement,
}

/// Checks a config signature envelope (`signature`, the body of the `opamp.signature` entry)
/// against `keys` at `now`: a trusted, unrevoked, unexpired key signed it, the statement has
/// not expired, its digest equals `digest` (computed by the caller over the offered config with
/// [`config_digest`]), and `attribute` (the agent's own attributes by key) satisfies its
/// selector.
///
/// # Errors
/// The envelope's parse errors, [`VerifyError::UnknownKey`], [`VerifyError::RevokedKey`],
/// [`VerifyError::KeyExpired`], [`VerifyError::BadSignature`], [`VerifyError::Expired`],
/// [`VerifyError::ConfigDigestMismatch`] and [`VerifyError::ConfigNotForThisAgent`].
pub fn verify_config(
    keys: &KeyRing,
    signature: &[u8],
    digest: &ContentHash,
    attribute: impl Fn(&str) -> Option<String>,
    now: SystemTime,
) -> Result<ApprovedConfig> {
    let envelope = ConfigSignature::parse(signature)?;
    let key = keys.usable(envelope.key_id, now)?;
    let message =
        config_signed_message(envelope.scheme, envelope.key_id, &envelope.statement_bytes);
    key.verify(envelope.scheme, &message, &envelope.signature)?;
    let statement = envelope.statement;
    let now_secs = unix_seconds(now);
    if now_secs > statement.not_after {
        return Err(VerifyError::Expired {
            now: now_secs,
            not_after: statement.not_after,
        });
    }
    if statement.digest != *digest {
        return Err(VerifyError::ConfigDigestMismatch {
            signed: statement.digest,
            offered: *digest,
        });
    }
    if let Some((key, wanted, actual)) = statement.unmatched(&attribute) {
        return Err(VerifyError::ConfigNotForThisAgent {
            key: key.to_owned(),
            wanted: wanted.to_owned(),
            actual,
        });
    }
    Ok(ApprovedConfig {
        key_id: envelope.key_id,
        scheme: envelope.scheme,
        statement,
    })
}

#[cfg(test)]
#[cfg(feature = "sign")]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;
    use crate::{ReleaseSigner, TrustedKey};

    fn entry<'a>(name: &'a str, body: &'a [u8]) -> ConfigEntry<'a> {
        ConfigEntry {
            name,
            content_type: "text/yaml",
            body,
        }
    }

    fn setup() -> (ReleaseSigner, KeyRing, ContentHash) {
        let signer = ReleaseSigner::generate_ed25519().unwrap();
        let mut keys = KeyRing::new();
        keys.trust(TrustedKey::new(signer.public_key().clone()));
        (signer, keys, config_digest([entry("c.yaml", b"a: 1")]))
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn prod(key: &str) -> Option<String> {
        (key == "env").then(|| "prod".to_owned())
    }

    #[test]
    fn signed_config_verifies_and_every_binding_is_checked() {
        let (signer, keys, digest) = setup();
        let statement = ConfigStatement::new(digest, at(100))
            .with_selector("env", "prod")
            .unwrap();
        let signature = signer.sign_config(&statement).unwrap();
        let approved = verify_config(&keys, &signature, &digest, prod, at(50)).unwrap();
        assert_eq!(approved.key_id, signer.key_id());

        let other = config_digest([entry("c.yaml", b"a: 2")]);
        assert!(matches!(
            verify_config(&keys, &signature, &other, prod, at(50)),
            Err(VerifyError::ConfigDigestMismatch { .. })
        ));
        let staging = |_: &str| Some("staging".to_owned());
        let err = verify_config(&keys, &signature, &digest, staging, at(50)).unwrap_err();
        assert!(err.to_string().contains("env=prod"), "{err}");
        assert!(matches!(
            verify_config(&keys, &signature, &digest, prod, at(101)),
            Err(VerifyError::Expired { .. })
        ));
        let mut tampered = signature.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            verify_config(&keys, &tampered, &digest, prod, at(50)),
            Err(VerifyError::BadSignature { .. })
        ));
        let stranger = ReleaseSigner::generate_ed25519().unwrap();
        let foreign = stranger.sign_config(&statement).unwrap();
        assert!(matches!(
            verify_config(&keys, &foreign, &digest, prod, at(50)),
            Err(VerifyError::UnknownKey { .. })
        ));
    }

    #[test]
    fn a_package_signature_is_not_a_config_signature() {
        let (signer, keys, digest) = setup();
        let statement = crate::Statement::new("otelcol", "1.0.0", digest, 4, at(100)).unwrap();
        let package_signature = signer.sign_statement(&statement).unwrap();
        assert!(matches!(
            verify_config(&keys, &package_signature, &digest, prod, at(50)),
            Err(VerifyError::Malformed { field: "magic", .. })
        ));
    }

    #[test]
    fn the_digest_ignores_the_signature_entry_and_separates_fields() {
        let plain = config_digest([entry("a", b"bc")]);
        assert_eq!(
            plain,
            config_digest([entry("a", b"bc"), entry(CONFIG_SIGNATURE_ENTRY, b"sig")])
        );
        assert_ne!(plain, config_digest([entry("ab", b"c")]));
        let other_type = ConfigEntry {
            content_type: "application/json",
            ..entry("a", b"bc")
        };
        assert_ne!(plain, config_digest([other_type]));
    }

    proptest! {
        #[test]
        fn statements_round_trip_and_parsing_never_panics(
            digest in any::<[u8; 32]>(),
            pairs in proptest::collection::btree_map("[a-z]{1,8}", "[a-z0-9]{1,8}", 0..5),
            not_after in any::<u64>(),
            noise in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut statement = ConfigStatement::new(ContentHash::from_bytes(digest), UNIX_EPOCH);
            statement.not_after = not_after;
            for (k, v) in &pairs {
                statement = statement.with_selector(k, v).unwrap();
            }
            prop_assert_eq!(ConfigStatement::from_bytes(&statement.to_bytes()).unwrap(), statement);
            let _ = ConfigSignature::parse(&noise);
            let _ = ConfigStatement::from_bytes(&noise);
        }

        #[test]
        fn the_digest_does_not_depend_on_entry_order(
            entries in proptest::collection::btree_map("[a-z.]{1,6}", proptest::collection::vec(any::<u8>(), 0..16), 1..6),
        ) {
            let list: Vec<ConfigEntry<'_>> = entries.iter().map(|(n, b)| entry(n, b)).collect();
            let mut reversed = list.clone();
            reversed.reverse();
            prop_assert_eq!(config_digest(list.clone()), config_digest(reversed));
            let (first, body) = entries.iter().next().unwrap();
            let mut changed = body.clone();
            changed.push(0);
            let altered: Vec<ConfigEntry<'_>> = entries.iter().map(|(n, b)| {
                if n == first { entry(n, &changed) } else { entry(n, b) }
            }).collect();
            prop_assert_ne!(config_digest(list), config_digest(altered));
        }
    }
}
