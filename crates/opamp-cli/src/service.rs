//! What a long-running command needs around its work: the async runtime and the signals that
//! stop it. Shared by `opamp` and the lean `opamp-supervisor` binary.

use crate::failure::{CommandError, Failure, ResultExt as _};

/// A multi-threaded async runtime for commands that talk to the network.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .or_fail(Failure::Operation, || "cannot start the async runtime")
}

/// The supervisor's runtime: one thread. A supervisor mostly waits (on the server, its
/// collector, the disk through the blocking pool); one thread wakes no other thread and keeps
/// no idle worker stacks. The OpAMP server and the operator commands keep [`runtime`].
pub(crate) fn supervisor_runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .or_fail(Failure::Operation, || "cannot start the async runtime")
}

/// Waits for Ctrl-C (SIGINT), SIGTERM or SIGHUP (the terminal closed) and names which one
/// came. All three mean the same: stop gracefully, children first.
pub(crate) async fn stop_signal() -> Result<&'static str, CommandError> {
    Ok(StopSignals::listen()?.recv().await)
}

/// SIGINT, SIGTERM and SIGHUP, caught from [`StopSignals::listen`] on: a signal that comes
/// before anyone waits is kept, not left to its default action (which ends the process).
pub(crate) struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Starts catching the three signals.
    pub(crate) fn listen() -> Result<Self, CommandError> {
        use tokio::signal::unix::{SignalKind, signal};
        let catch = |kind: SignalKind, name: &'static str| {
            signal(kind).or_fail(Failure::Operation, || format!("cannot listen for {name}"))
        };
        Ok(Self {
            interrupt: catch(SignalKind::interrupt(), "SIGINT")?,
            terminate: catch(SignalKind::terminate(), "SIGTERM")?,
            hangup: catch(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The next signal's name.
    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}
