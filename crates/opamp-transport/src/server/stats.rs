//! Counters of what the OpAMP listener carried: connections, messages and bytes per
//! transport, and refusals by reason. The connection tasks bump relaxed atomics (no lock on
//! the message path); an embedder reads a [`TransportStatsSnapshot`] for its metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use opamp_session::TransportMode;

/// Why a message or connection was refused, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalReason {
    /// Over the size limit (HTTP 413, WebSocket close 1009).
    TooLarge,
    /// Not a valid OpAMP message: bad header byte, undecodable protobuf, invalid instance
    /// uid, wrong content type or encoding, a text frame.
    Malformed,
    /// The embedder's authorisation refused the request or the instance uid (401, 403,
    /// close 1008).
    Unauthorized,
    /// A body that did not arrive in time, or an unreadable one.
    Other,
}

impl RefusalReason {
    /// Every reason, in a stable order (for exporting all series, zeros included).
    pub const ALL: [RefusalReason; 4] = [
        RefusalReason::TooLarge,
        RefusalReason::Malformed,
        RefusalReason::Unauthorized,
        RefusalReason::Other,
    ];

    /// A short label value: `too_large`, `malformed`, `unauthorized`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::TooLarge => "too_large",
            RefusalReason::Malformed => "malformed",
            RefusalReason::Unauthorized => "unauthorized",
            RefusalReason::Other => "other",
        }
    }

    fn index(self) -> usize {
        match self {
            RefusalReason::TooLarge => 0,
            RefusalReason::Malformed => 1,
            RefusalReason::Unauthorized => 2,
            RefusalReason::Other => 3,
        }
    }
}

/// Counters of one transport (WebSocket or HTTP), as read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportCounters {
    /// WebSocket: upgrades accepted. HTTP: requests to the OpAMP path.
    pub opened: u64,
    /// WebSocket: sockets open now. HTTP: requests being handled now.
    pub open: u64,
    /// `AgentToServer` messages accepted.
    pub messages_received: u64,
    /// Bytes of the accepted messages as they arrived (compressed size for gzip bodies).
    pub bytes_received: u64,
    /// `ServerToAgent` messages sent.
    pub messages_sent: u64,
    /// Bytes sent in those messages (after compression).
    pub bytes_sent: u64,
    /// Messages refused, indexed like [`RefusalReason::ALL`]; see [`Self::refused`].
    refused: [u64; 4],
}

impl TransportCounters {
    /// Messages (or requests) refused for `reason`.
    pub fn refused(&self, reason: RefusalReason) -> u64 {
        self.refused[reason.index()]
    }
}

/// Everything the listener counted, as read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStatsSnapshot {
    /// TCP connections accepted (before TLS and the capacity check).
    pub connections_accepted: u64,
    /// TCP connections open now (plain or TLS, whatever they carry).
    pub connections_open: u64,
    /// Connections refused with 503 because `max_connections` were open.
    pub connections_refused_capacity: u64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshakes_failed: u64,
    /// WebSocket agents' traffic.
    pub websocket: TransportCounters,
    /// HTTP polling agents' traffic.
    pub http: TransportCounters,
}

impl TransportStatsSnapshot {
    /// The counters of one transport.
    pub fn transport(&self, kind: TransportMode) -> &TransportCounters {
        // `TransportMode` is non-exhaustive; OpAMP has only these two transports.
        match kind {
            TransportMode::HttpPolling => &self.http,
            _ => &self.websocket,
        }
    }
}

#[derive(Debug, Default)]
struct Side {
    opened: AtomicU64,
    closed: AtomicU64,
    messages_received: AtomicU64,
    bytes_received: AtomicU64,
    messages_sent: AtomicU64,
    bytes_sent: AtomicU64,
    refused: [AtomicU64; 4],
}

impl Side {
    fn read(&self) -> TransportCounters {
        let opened = self.opened.load(Relaxed);
        TransportCounters {
            opened,
            open: opened.saturating_sub(self.closed.load(Relaxed)),
            messages_received: self.messages_received.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            messages_sent: self.messages_sent.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            refused: std::array::from_fn(|i| self.refused[i].load(Relaxed)),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    closed: AtomicU64,
    refused_capacity: AtomicU64,
    tls_failed: AtomicU64,
    websocket: Side,
    http: Side,
}

/// A handle on the listener's counters; cheap to clone. Get it from
/// [`super::RunningServer::stats`].
#[derive(Clone, Debug, Default)]
pub struct TransportStats {
    counters: Arc<Counters>,
}

impl TransportStats {
    /// Reads every counter. Each is exact; the set is not one atomic picture (a message
    /// counted between two reads may appear in one counter and not yet in another).
    pub fn snapshot(&self) -> TransportStatsSnapshot {
        let c = &self.counters;
        let accepted = c.accepted.load(Relaxed);
        TransportStatsSnapshot {
            connections_accepted: accepted,
            connections_open: accepted.saturating_sub(c.closed.load(Relaxed)),
            connections_refused_capacity: c.refused_capacity.load(Relaxed),
            tls_handshakes_failed: c.tls_failed.load(Relaxed),
            websocket: c.websocket.read(),
            http: c.http.read(),
        }
    }

    fn side(&self, kind: TransportMode) -> &Side {
        match kind {
            TransportMode::HttpPolling => &self.counters.http,
            _ => &self.counters.websocket,
        }
    }

    /// A TCP connection was accepted; the guard counts it closed when dropped.
    pub(crate) fn connection(&self) -> OpenGuard {
        self.counters.accepted.fetch_add(1, Relaxed);
        OpenGuard {
            stats: self.clone(),
            kind: None,
        }
    }

    pub(crate) fn refused_for_capacity(&self) {
        self.counters.refused_capacity.fetch_add(1, Relaxed);
    }

    pub(crate) fn tls_handshake_failed(&self) {
        self.counters.tls_failed.fetch_add(1, Relaxed);
    }

    /// A WebSocket was upgraded or an HTTP request arrived; the guard ends it.
    pub(crate) fn opened(&self, kind: TransportMode) -> OpenGuard {
        self.side(kind).opened.fetch_add(1, Relaxed);
        OpenGuard {
            stats: self.clone(),
            kind: Some(kind),
        }
    }

    pub(crate) fn received(&self, kind: TransportMode, bytes: usize) {
        let side = self.side(kind);
        side.messages_received.fetch_add(1, Relaxed);
        side.bytes_received.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn sent(&self, kind: TransportMode, bytes: usize) {
        let side = self.side(kind);
        side.messages_sent.fetch_add(1, Relaxed);
        side.bytes_sent.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn refused(&self, kind: TransportMode, reason: RefusalReason) {
        self.side(kind).refused[reason.index()].fetch_add(1, Relaxed);
    }
}

/// Counts a connection, socket or request as closed when dropped, however its task ends.
#[derive(Debug)]
pub(crate) struct OpenGuard {
    stats: TransportStats,
    kind: Option<TransportMode>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        match self.kind {
            None => self.stats.counters.closed.fetch_add(1, Relaxed),
            Some(kind) => self.stats.side(kind).closed.fetch_add(1, Relaxed),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_close_what_they_opened() {
        let stats = TransportStats::default();
        let connection = stats.connection();
        let socket = stats.opened(TransportMode::WebSocket);
        stats.received(TransportMode::WebSocket, 100);
        stats.sent(TransportMode::WebSocket, 40);
        stats.refused(TransportMode::HttpPolling, RefusalReason::TooLarge);
        let during = stats.snapshot();
        assert_eq!(during.connections_open, 1);
        assert_eq!(during.websocket.open, 1);
        assert_eq!(during.websocket.bytes_received, 100);
        assert_eq!(during.websocket.messages_sent, 1);
        assert_eq!(during.http.refused(RefusalReason::TooLarge), 1);
        assert_eq!(during.http.refused(RefusalReason::Malformed), 0);
        drop(socket);
        drop(connection);
        let after = stats.snapshot();
        assert_eq!((after.connections_accepted, after.connections_open), (1, 0));
        assert_eq!((after.websocket.opened, after.websocket.open), (1, 0));
    }
}
