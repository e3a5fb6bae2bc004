//! The partial file's writer: a blocking thread that owns the file, fed through a queue bounded
//! in bytes.
//!
//! Receiving and hashing stay on the async side and never wait for the disk; the bytes travel
//! as reference-counted `Bytes`, never copied. `tokio::fs::File` would instead copy every chunk
//! and make one blocking-pool trip per chunk (tens of thousands per GiB). The writer also syncs
//! as it goes, so the disk works during the download instead of taking a whole-file fsync at
//! the end (0.48 s per GiB on the benchmark machine, see docs/benchmarks.md).

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

/// Bytes queued for the writer at most: bounds memory when the disk is slower than the network.
const QUEUE_BYTES: usize = 16 << 20;
/// Written bytes after which the writer asks the disk to catch up (on a helper thread).
const SYNC_EVERY: u64 = 32 << 20;

/// Feeds one open file from async code; see the module documentation.
///
/// Dropped without [`finish`](Self::finish) (the download was cancelled), it tells the thread to
/// stop at the next chunk without writing the rest of the queue, so a new attempt that resumes
/// the partial file does not race a writer still appending to it.
pub(super) struct PartialWriter {
    queue: Option<mpsc::UnboundedSender<(Bytes, u32)>>,
    room: Arc<Semaphore>,
    task: Option<JoinHandle<io::Result<()>>>,
    abandoned: Arc<AtomicBool>,
}

impl PartialWriter {
    /// Starts the writer thread for `file`, positioned where the bytes must go.
    pub(super) fn start(file: std::fs::File) -> Self {
        let (queue, chunks) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(QUEUE_BYTES));
        let abandoned = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            room: CloseOnDrop(Arc::clone(&room)),
            abandoned: Arc::clone(&abandoned),
        };
        let task = tokio::task::spawn_blocking(move || writer.run(file, chunks));
        Self {
            queue: Some(queue),
            room,
            task: Some(task),
            abandoned,
        }
    }

    /// Queues `chunk`, waiting while the queue is full.
    ///
    /// # Errors
    /// A write failed; the writer has stopped and the error says why.
    pub(super) async fn write(&mut self, chunk: Bytes) -> Result<(), WriterStopped> {
        // A chunk larger than the whole queue takes all of it rather than waiting forever.
        let permits = u32::try_from(chunk.len().min(QUEUE_BYTES)).unwrap_or(u32::MAX);
        match self.room.acquire_many(permits).await {
            Ok(permit) => permit.forget(),
            Err(_closed) => return Err(WriterStopped),
        }
        let queue = self.queue.as_ref().ok_or(WriterStopped)?;
        queue
            .send((chunk, permits))
            .map_err(|_closed| WriterStopped)
    }

    /// Writes everything queued, fsyncs the file and closes it.
    ///
    /// # Errors
    /// A write or the fsync failed.
    pub(super) async fn finish(mut self) -> io::Result<()> {
        drop(self.queue.take());
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        task.await.map_err(io::Error::other)?
    }
}

impl Drop for PartialWriter {
    fn drop(&mut self) {
        // `finish` took the task: only an unfinished writer is abandoned.
        if self.task.is_some() {
            self.abandoned.store(true, Ordering::Release);
        }
    }
}

/// The writer stopped after an error; [`PartialWriter::finish`] returns it.
#[derive(Debug)]
pub(super) struct WriterStopped;

/// Closes the queue's room when the writer ends for any reason, so a sender waiting for room
/// wakes up instead of waiting forever.
struct CloseOnDrop(Arc<Semaphore>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The thread's side of a [`PartialWriter`].
struct Writer {
    room: CloseOnDrop,
    abandoned: Arc<AtomicBool>,
}

impl Writer {
    fn run(
        self,
        mut file: std::fs::File,
        mut chunks: mpsc::UnboundedReceiver<(Bytes, u32)>,
    ) -> io::Result<()> {
        let syncer_file = file.try_clone()?;
        // One pending request at most: requests made while the syncer is busy merge into one.
        let (request_sync, sync_requests) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::scope(|scope| {
            // fdatasync on its own thread: the disk flushes one stretch while the next is written.
            let syncer = scope.spawn(move || -> io::Result<()> {
                while sync_requests.recv().is_ok() {
                    syncer_file.sync_data()?;
                }
                Ok(())
            });
            let mut write_all = || -> io::Result<()> {
                let mut unsynced: u64 = 0;
                while let Some((chunk, permits)) = chunks.blocking_recv() {
                    if self.abandoned.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    let written = file.write_all(&chunk);
                    self.room.0.add_permits(permits as usize);
                    written?;
                    unsynced += chunk.len() as u64;
                    if unsynced >= SYNC_EVERY {
                        // Full means a sync is already due; a stopped syncer reports at the join.
                        let _ = request_sync.try_send(());
                        unsynced = 0;
                    }
                }
                Ok(())
            };
            let written = write_all();
            drop(request_sync);
            // A failed fdatasync may leave pages marked clean but unwritten; a later fsync would
            // then succeed, so the syncer's error must not be lost.
            let synced = syncer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("download sync thread panicked")));
            written?;
            synced?;
            if self.abandoned.load(Ordering::Acquire) {
                return Ok(());
            }
            file.sync_all()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn writes_every_chunk_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let mut writer = PartialWriter::start(std::fs::File::create(&path).unwrap());
        let mut expected = Vec::new();
        // More than the queue holds, in uneven chunks, to exercise waiting for room.
        for i in 0..300u32 {
            let chunk: Vec<u8> = (0..(i * 997 % 200_000)).map(|b| (b ^ i) as u8).collect();
            expected.extend_from_slice(&chunk);
            writer.write(Bytes::from(chunk)).await.unwrap();
        }
        writer
            .write(Bytes::from(vec![7u8; QUEUE_BYTES + 1]))
            .await
            .unwrap();
        expected.extend(std::iter::repeat_n(7u8, QUEUE_BYTES + 1));
        writer.finish().await.unwrap();
        assert!(std::fs::read(&path).unwrap() == expected);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_full_disk_stops_the_writer_with_its_error() {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut writer = PartialWriter::start(full);
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            for _ in 0..64 {
                if writer.write(Bytes::from(vec![1u8; 1 << 20])).await.is_err() {
                    return true;
                }
            }
            false
        })
        .await
        .expect("a sender waiting for room must wake up when the writer stops");
        let error = writer.finish().await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull, "{error}");
        assert!(outcome, "64 MiB into /dev/full must fail before the end");
    }
    /// A cancelled download's writer must not keep appending its queue to the partial file,
    /// which the next attempt may already be resuming. A FIFO holds the writer inside its first
    /// chunk while the writer is dropped.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn an_abandoned_writer_drops_the_rest_of_its_queue() {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;

        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("partial");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&fifo)
            .unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        let mut writer = PartialWriter::start(file);
        const CHUNK: usize = 1 << 20;
        for fill in [1u8, 2, 3] {
            writer.write(Bytes::from(vec![fill; CHUNK])).await.unwrap();
        }
        drop(writer);

        let mut received = Vec::new();
        let mut buffer = vec![0u8; 64 << 10];
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match reader.read(&mut buffer) {
                Ok(0) => break, // every write end closed: the thread is gone
                Ok(n) => received.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "writer never stopped");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            received.len() <= CHUNK,
            "the abandoned writer wrote {} bytes; at most the chunk in progress may land",
            received.len()
        );
        assert!(received.iter().all(|&b| b == 1));
    }
}
