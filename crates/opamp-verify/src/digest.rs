//! Streaming SHA-256 with a hard size limit, producing [`ContentHash`] (defined in
//! `opamp-packages`, re-exported here; its equality is constant time).
//!
//! Package files can be large and come from servers we do not control, so every entry point here
//! takes a maximum size and reads at most one byte more than that before refusing. Hashing uses
//! the `sha2` crate, which picks the CPU's SHA extensions at run time where they exist.

use std::io::{self, Read, Write};

use opamp_packages::ContentHash;
use sha2::{Digest, Sha256};

use crate::error::{Result, VerifyError};

/// Size of the read buffer used by the streaming hashers: large enough that the per-call overhead
/// disappears next to the SHA-256 work.
pub const HASH_BUFFER_SIZE: usize = 1024 * 1024;

/// The outcome of hashing a stream: its digest and length.
///
/// Only this crate's hashers build it, so a value of this type proves that the digest was
/// computed over bytes that actually went through a hasher (see
/// [`Verified::<ApprovedPackage>::accept_hashed`](crate::Verified::accept_hashed)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashedContent {
    hash: ContentHash,
    len: u64,
}

impl HashedContent {
    /// The SHA-256 of the content.
    pub fn hash(&self) -> ContentHash {
        self.hash
    }

    /// Number of bytes hashed.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when no byte was hashed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Refuses unless the digest equals `expected` (constant-time comparison).
    pub fn expect_hash(self, expected: &ContentHash) -> Result<Self> {
        if self.hash.ct_eq(expected) {
            Ok(self)
        } else {
            Err(VerifyError::HashMismatch {
                expected: *expected,
                actual: self.hash,
            })
        }
    }
}

/// A buffer no larger than the most that will be read, so small limits stay cheap.
fn buffer_size(max_size: u64) -> usize {
    usize::try_from(max_size.saturating_add(1))
        .map_or(HASH_BUFFER_SIZE, |n| n.min(HASH_BUFFER_SIZE))
}

/// A streaming SHA-256 over content arriving in pieces (for example network chunks), with a
/// size limit checked before any byte of an over-long piece is hashed.
///
/// Its [`finish`](Self::finish) gives the [`HashedContent`] that
/// [`Verified::<ApprovedPackage>::accept_hashed`](crate::Verified::accept_hashed) takes, so a
/// download can be verified while it streams to disk, without reading the file again.
///
/// ```
/// use opamp_verify::{ContentHash, ContentHasher};
/// let mut hasher = ContentHasher::new(1024);
/// hasher.update(b"hello ")?;
/// hasher.update(b"world")?;
/// assert_eq!(hasher.len(), 11);
/// let hashed = hasher.finish();
/// assert_eq!(hashed.hash(), ContentHash::of(b"hello world"));
/// assert!(ContentHasher::new(3).update(b"four").is_err());
/// # Ok::<(), opamp_verify::VerifyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ContentHasher {
    hasher: Sha256,
    len: u64,
    max_size: u64,
}

impl ContentHasher {
    /// A hasher that accepts at most `max_size` bytes in all.
    pub fn new(max_size: u64) -> Self {
        Self {
            hasher: Sha256::new(),
            len: 0,
            max_size,
        }
    }

    /// Hashes the next piece of content.
    ///
    /// # Errors
    /// [`VerifyError::TooLarge`] when the content would exceed the limit; the piece is not
    /// hashed and the hasher stays as it was.
    pub fn update(&mut self, piece: &[u8]) -> Result<()> {
        let len = self.len.saturating_add(piece.len() as u64);
        if len > self.max_size {
            return Err(VerifyError::TooLarge {
                limit: self.max_size,
            });
        }
        self.len = len;
        self.hasher.update(piece);
        Ok(())
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when no byte was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest and length of everything hashed.
    pub fn finish(self) -> HashedContent {
        HashedContent {
            hash: ContentHash::from_bytes(self.hasher.finalize().into()),
            len: self.len,
        }
    }
}

fn read_error(source: io::Error) -> VerifyError {
    VerifyError::Io {
        operation: "reading package content",
        source,
    }
}

/// Hashes everything `reader` yields, refusing content longer than `max_size` bytes.
///
/// At most `max_size + 1` bytes are read: the extra byte is how an over-long stream is detected.
///
/// ```
/// use opamp_verify::{hash_reader, ContentHash};
/// let hashed = hash_reader(&b"abc"[..], 1024)?;
/// assert_eq!(hashed.len(), 3);
/// assert_eq!(
///     hashed.hash().to_string(),
///     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
/// );
/// assert!(hash_reader(&b"abcd"[..], 3).is_err());
/// # Ok::<(), opamp_verify::VerifyError>(())
/// ```
pub fn hash_reader<R: Read>(reader: R, max_size: u64) -> Result<HashedContent> {
    let mut limited = reader.take(max_size.saturating_add(1));
    let mut buffer = vec![0u8; buffer_size(max_size)];
    let mut hasher = ContentHasher::new(max_size);
    loop {
        match limited.read(&mut buffer) {
            Ok(0) => return Ok(hasher.finish()),
            Ok(read) => hasher.update(&buffer[..read])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(read_error(source)),
        }
    }
}

/// Hashes `reader` (at most `max_size` bytes) and refuses unless the digest equals `expected`.
///
/// ```
/// use opamp_verify::{verify_reader, ContentHash, VerifyError};
/// let expected = ContentHash::of(b"package bytes");
/// verify_reader(&b"package bytes"[..], &expected, 1 << 20)?;
/// let err = verify_reader(&b"tampered bytes"[..], &expected, 1 << 20).unwrap_err();
/// assert!(matches!(err, VerifyError::HashMismatch { .. }));
/// # Ok::<(), VerifyError>(())
/// ```
pub fn verify_reader<R: Read>(
    reader: R,
    expected: &ContentHash,
    max_size: u64,
) -> Result<HashedContent> {
    hash_reader(reader, max_size)?.expect_hash(expected)
}

/// Hashes an async stream, refusing content longer than `max_size` bytes (reads at most
/// `max_size + 1`).
#[cfg(feature = "tokio")]
pub async fn hash_async_reader<R>(reader: R, max_size: u64) -> Result<HashedContent>
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;

    let mut limited = reader.take(max_size.saturating_add(1));
    let mut buffer = vec![0u8; buffer_size(max_size)];
    let mut hasher = ContentHasher::new(max_size);
    loop {
        match limited.read(&mut buffer).await {
            Ok(0) => return Ok(hasher.finish()),
            Ok(read) => hasher.update(&buffer[..read])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(read_error(source)),
        }
    }
}

/// A writer that hashes every byte it passes on, so a download can be written to disk and hashed
/// in one pass.
///
/// Writes past `max_size` bytes fail with an [`io::Error`] wrapping [`VerifyError::TooLarge`]
/// and nothing of the offending write reaches the inner writer. Only bytes the inner writer
/// accepted are hashed.
///
/// ```
/// use std::io::Write;
/// use opamp_verify::{ContentHash, HashingWriter};
/// let mut writer = HashingWriter::new(Vec::new(), 1024);
/// writer.write_all(b"hello ")?;
/// writer.write_all(b"world")?;
/// let (file, hashed) = writer.finish()?;
/// assert_eq!(file, b"hello world");
/// assert_eq!(hashed.hash(), ContentHash::of(b"hello world"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
    max_size: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`, accepting at most `max_size` bytes.
    pub fn new(inner: W, max_size: u64) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
            max_size,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes the inner writer and returns it with the digest of everything written.
    pub fn finish(mut self) -> Result<(W, HashedContent)> {
        self.inner.flush().map_err(|source| VerifyError::Io {
            operation: "flushing package content",
            source,
        })?;
        let hashed = HashedContent {
            hash: ContentHash::from_bytes(self.hasher.finalize().into()),
            len: self.written,
        };
        Ok((self.inner, hashed))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.max_size - self.written;
        if buf.len() as u64 > room {
            return Err(io::Error::other(VerifyError::TooLarge {
                limit: self.max_size,
            }));
        }
        let n = self.inner.write(buf)?;
        let accepted = &buf[..n.min(buf.len())];
        self.hasher.update(accepted);
        self.written += accepted.len() as u64;
        Ok(accepted.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_inclusive() {
        let data = [7u8; 100];
        assert_eq!(hash_reader(&data[..], 100).unwrap().len(), 100);
        assert!(matches!(
            hash_reader(&data[..], 99),
            Err(VerifyError::TooLarge { limit: 99 })
        ));
    }

    #[test]
    fn reads_at_most_one_byte_past_the_limit() {
        struct Counting(u64);
        impl Read for Counting {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                buf.fill(1);
                self.0 += buf.len() as u64;
                Ok(buf.len())
            }
        }
        let mut endless = Counting(0);
        let err = hash_reader(&mut endless, 10).unwrap_err();
        assert!(matches!(err, VerifyError::TooLarge { limit: 10 }));
        assert_eq!(endless.0, 11);
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let hash = ContentHash::of(b"x");
        assert_eq!(hash.to_string().parse::<ContentHash>().unwrap(), hash);
        assert!("zz".parse::<ContentHash>().is_err());
        assert!(ContentHash::from_slice(&[0; 31]).is_err());
    }

    #[test]
    fn writer_refuses_past_limit_and_keeps_inner_untouched() {
        let mut writer = HashingWriter::new(Vec::new(), 4);
        writer.write_all(b"abc").unwrap();
        let err = writer.write_all(b"de").unwrap_err();
        assert!(err.to_string().contains("maximum of 4 bytes"));
        let (inner, hashed) = writer.finish().unwrap();
        assert_eq!(inner, b"abc");
        assert_eq!(hashed.hash(), ContentHash::of(b"abc"));
    }

    #[test]
    fn writer_hashes_only_what_the_inner_writer_took() {
        /// Accepts at most three bytes per call, like a pipe under pressure.
        struct Trickle(Vec<u8>);
        impl Write for Trickle {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let n = buf.len().min(3);
                self.0.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut writer = HashingWriter::new(Trickle(Vec::new()), 100);
        assert_eq!(writer.write(b"abcdefgh").unwrap(), 3);
        writer.write_all(b"defgh").unwrap();
        assert_eq!(writer.written(), 8);
        let (inner, hashed) = writer.finish().unwrap();
        assert_eq!(inner.0, b"abcdefgh");
        assert_eq!(hashed.hash(), ContentHash::of(b"abcdefgh"));
    }

    #[test]
    fn mismatch_names_both_hashes() {
        let expected = ContentHash::of(b"a");
        let err = verify_reader(&b"b"[..], &expected, 10).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&expected.to_string()));
        assert!(text.contains(&ContentHash::of(b"b").to_string()));
    }
}
