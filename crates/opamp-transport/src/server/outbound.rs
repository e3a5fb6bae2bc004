//! A WebSocket's send queue: the hub pushes encoded messages, the socket's task sends them.
//!
//! Hand-made instead of a tokio channel because an idle agent holds one for as long as it is
//! connected: an unbounded mpsc channel allocates a 32-slot block and a cache-padded channel
//! up front (about 1.5 KiB), this queue about 100 bytes and nothing while empty. It also
//! carries the "close at once" order (the agent does not read) that used to need a
//! cancellation token of its own.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

/// A message for a WebSocket's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outbound {
    /// An encoded `ServerToAgent` (with the WebSocket header byte).
    Frame(Bytes),
    /// Close the socket with this code and reason after what is queued before it.
    Close(u16, &'static str),
}

#[derive(Debug, Default)]
struct Queue {
    messages: VecDeque<Outbound>,
    /// Close at once, ahead of anything queued.
    abort: Option<(u16, &'static str)>,
    /// The hub dropped its end: the socket is no longer registered.
    sender_gone: bool,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// One permit wakes the single receiver (a permit given while it is not waiting is kept).
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing in the queue can be left half-changed by a panic.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A new, empty queue: the hub's end and the socket task's end.
pub(crate) fn queue() -> (OutboundSender, OutboundReceiver) {
    let shared = Arc::new(Shared::default());
    (
        OutboundSender {
            shared: shared.clone(),
        },
        OutboundReceiver { shared },
    )
}

/// The hub's end.
#[derive(Debug)]
pub(crate) struct OutboundSender {
    shared: Arc<Shared>,
}

impl OutboundSender {
    /// Queues `message` unless `room` messages already wait; false when it did not fit.
    pub(crate) fn push(&self, message: Outbound, room: usize) -> bool {
        {
            let mut queue = self.shared.lock();
            if queue.messages.len() >= room {
                return false;
            }
            queue.messages.push_back(message);
        }
        self.shared.wake.notify_one();
        true
    }

    /// Makes the socket close at once with `code`, dropping what waits.
    pub(crate) fn abort(&self, code: u16, reason: &'static str) {
        {
            let mut queue = self.shared.lock();
            queue.abort.get_or_insert((code, reason));
            queue.messages = VecDeque::new();
        }
        self.shared.wake.notify_one();
    }
}

impl Drop for OutboundSender {
    fn drop(&mut self) {
        self.shared.lock().sender_gone = true;
        self.shared.wake.notify_one();
    }
}

/// The socket task's end.
#[derive(Debug)]
pub(crate) struct OutboundReceiver {
    shared: Arc<Shared>,
}

impl OutboundReceiver {
    /// The next message to send: an abort first, then messages in order; `None` once the
    /// hub dropped its end and nothing waits.
    pub(crate) async fn recv(&mut self) -> Option<Outbound> {
        loop {
            if let Some(next) = self.next_now() {
                return next;
            }
            self.shared.wake.notified().await;
        }
    }

    /// A message already waiting, without waiting.
    pub(crate) fn try_recv(&mut self) -> Option<Outbound> {
        self.next_now().flatten()
    }

    /// `Some(message)` when one is ready, `Some(None)` when none will come, `None` to wait.
    fn next_now(&self) -> Option<Option<Outbound>> {
        let mut queue = self.shared.lock();
        if let Some((code, reason)) = queue.abort.take() {
            return Some(Some(Outbound::Close(code, reason)));
        }
        match queue.messages.pop_front() {
            Some(message) => {
                if queue.messages.is_empty() {
                    // An idle socket keeps no buffer from its last burst.
                    queue.messages = VecDeque::new();
                }
                Some(Some(message))
            }
            None if queue.sender_gone => Some(None),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(byte: u8) -> Outbound {
        Outbound::Frame(Bytes::from(vec![byte]))
    }

    #[tokio::test]
    async fn messages_arrive_in_order_and_the_room_bounds_the_queue() {
        let (sender, mut receiver) = queue();
        assert!(sender.push(frame(1), 2));
        assert!(sender.push(frame(2), 2));
        assert!(
            !sender.push(frame(3), 2),
            "a third message does not fit in a room of 2"
        );
        assert_eq!(receiver.recv().await, Some(frame(1)));
        assert_eq!(receiver.try_recv(), Some(frame(2)));
        assert_eq!(receiver.try_recv(), None);
    }

    #[tokio::test]
    async fn an_abort_goes_ahead_of_what_waits_and_drops_it() {
        let (sender, mut receiver) = queue();
        assert!(sender.push(frame(1), 8));
        sender.abort(1008, "not reading");
        sender.abort(1001, "a later abort does not replace the first");
        assert_eq!(
            receiver.recv().await,
            Some(Outbound::Close(1008, "not reading"))
        );
        assert_eq!(receiver.try_recv(), None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_push_and_ends_when_the_sender_is_gone() {
        let (sender, mut receiver) = queue();
        let waiter = tokio::spawn(async move {
            let first = receiver.recv().await;
            let after = receiver.recv().await;
            (first, after)
        });
        tokio::task::yield_now().await;
        assert!(sender.push(frame(7), 1));
        drop(sender);
        let (first, after) = waiter.await.expect("receiver task");
        assert_eq!(first, Some(frame(7)));
        assert_eq!(after, None);
    }
}
