#![allow(unreachable_pub)]
//! A small TCP proxy on 127.0.0.1 that injects network faults between agents and the server:
//! drop every open connection, delay every forwarded chunk, and black-hole (hold all bytes and
//! new connections, as a dead route does, until it is lifted).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The faults applied to traffic right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Added before every forwarded chunk, in both directions.
    pub delay: Duration,
    /// While set, nothing is forwarded and new connections are not connected upstream.
    pub black_hole: bool,
}

struct Shared {
    upstream: Mutex<Option<SocketAddr>>,
    faults: watch::Sender<Faults>,
    /// Cancelled to drop every connection open at that moment; replaced by a fresh token.
    generation: Mutex<CancellationToken>,
    accepted: AtomicU64,
    dropped: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.generation.lock().unwrap().cancel();
    }
}

impl FaultProxy {
    /// Listens on an ephemeral loopback port; connections wait until [`Self::set_upstream`].
    pub async fn start() -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream: Mutex::new(None),
            faults: watch::Sender::new(Faults::default()),
            generation: Mutex::new(CancellationToken::new()),
            accepted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        FaultProxy {
            addr,
            shared,
            accept,
        }
    }

    /// The address agents connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections are forwarded.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().unwrap() = Some(upstream);
    }

    /// Replaces the current faults.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults.send_replace(faults);
    }

    /// Closes every connection open now (both sides see the socket close).
    pub fn drop_all(&self) {
        let old = std::mem::take(&mut *self.shared.generation.lock().unwrap());
        old.cancel();
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections closed by [`Self::drop_all`] so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let cancel = shared.generation.lock().unwrap().clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
                () = forward(inbound, &shared) => {}
            }
        });
    }
}

async fn wait_reachable(faults: &mut watch::Receiver<Faults>) {
    let _ = faults.wait_for(|f| !f.black_hole).await;
}

async fn forward(inbound: TcpStream, shared: &Shared) {
    let mut faults = shared.faults.subscribe();
    wait_reachable(&mut faults).await;
    let upstream = *shared.upstream.lock().unwrap();
    let Some(upstream) = upstream else { return };
    let Ok(outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::join!(
        pump(in_read, out_write, shared.faults.subscribe()),
        pump(out_read, in_write, shared.faults.subscribe()),
    );
}

/// Copies one direction, applying the faults to each chunk; closes the write side at EOF.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut faults: watch::Receiver<Faults>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let delay = faults.borrow().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        wait_reachable(&mut faults).await;
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// What the chaos task did, for the failure message and the log.
#[derive(Debug, Default)]
pub struct ChaosLog {
    /// `drop_all` calls.
    pub drops: u32,
    /// Delay periods.
    pub delays: u32,
    /// Black-hole periods.
    pub black_holes: u32,
}

/// Applies a random fault every 150-400 ms until `stop`; always ends with a clean network.
pub async fn chaos(
    proxy: &FaultProxy,
    seed: u64,
    stop: tokio_util::sync::CancellationToken,
) -> ChaosLog {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut log = ChaosLog::default();
    while !stop.is_cancelled() {
        match rng.gen_range(0..4) {
            0 => {
                proxy.drop_all();
                log.drops += 1;
            }
            1 => {
                proxy.set_faults(Faults {
                    delay: Duration::from_millis(rng.gen_range(5..60)),
                    black_hole: false,
                });
                log.delays += 1;
            }
            2 => {
                proxy.set_faults(Faults {
                    delay: Duration::ZERO,
                    black_hole: true,
                });
                log.black_holes += 1;
            }
            _ => proxy.set_faults(Faults::default()),
        }
        let pause = Duration::from_millis(rng.gen_range(150..400));
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(pause) => {}
        }
        // Each fault lasts one pause; the next step starts from a clean network.
        proxy.set_faults(Faults::default());
    }
    proxy.set_faults(Faults::default());
    log
}
