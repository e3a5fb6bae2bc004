//! The background task that owns the child process.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::sync::{broadcast, oneshot, watch};

use super::output::{Stream, forward_lines};
use super::pid_file::PidFile;
use super::{
    AgentCommand, ExitRecord, Phase, ProcessEvent, RestartPolicy, RunState, StderrLine, StopReport,
};
use crate::report::ErrorReport;

pub(super) struct Supervision {
    pub(super) command: AgentCommand,
    pub(super) executable: PathBuf,
    pub(super) stop_timeout: Duration,
    pub(super) restart: RestartPolicy,
    pub(super) events: broadcast::Sender<ProcessEvent>,
    pub(super) state: watch::Sender<RunState>,
    pub(super) pid_file: Option<PidFile>,
    pub(super) stderr_tail: watch::Sender<Option<StderrLine>>,
}

impl Supervision {
    /// Spawns the executable, wires its output into `tracing`, and publishes `Started`.
    pub(super) fn spawn_child(&self) -> std::io::Result<(Child, u32)> {
        // Taken before the spawn, so durations measured from it never undercount the child's
        // own lifetime.
        let spawned_at = (Instant::now(), std::time::SystemTime::now());
        let mut command = self.command.to_command(&self.executable);
        if let Some(pid_file) = &self.pid_file {
            // Set before the spawn: a supervisor killed before `record` below still leaves a
            // collector its successor can find.
            let (name, value) = pid_file.marker();
            command.env(name, value);
        }
        let mut child = spawn_retrying_busy(&mut command)?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("child exited before its pid could be read"))?;
        let agent = &self.command.name;
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_lines(out, Stream::Stdout, agent.clone(), pid));
        }
        if let Some(err) = child.stderr.take() {
            let tail = self.stderr_tail.clone();
            tokio::spawn(forward_lines(err, Stream::Stderr(tail), agent.clone(), pid));
        }
        if let Some(pid_file) = &self.pid_file {
            // Without the record a killed supervisor's successor cannot find this collector;
            // still run it (refusing would take the collector down for a bookkeeping error).
            if let Err(e) = pid_file.record(pid) {
                tracing::error!(agent = %agent, pid, pid_file = %pid_file.path().display(), error = %ErrorReport(&e), "cannot record collector pid");
            }
        }
        let mut generation = 0;
        self.state.send_modify(|s| {
            s.generation += 1;
            generation = s.generation;
            s.pid = Some(pid);
            s.phase = Phase::Running;
            s.started_at = Some(spawned_at.0);
            s.started_at_wall = Some(spawned_at.1);
        });
        tracing::info!(agent = %agent, pid, generation, executable = %self.executable.display(), "collector started");
        self.publish(ProcessEvent::Started {
            pid,
            executable: self.executable.clone(),
            generation,
        });
        Ok((child, pid))
    }

    /// Supervises until a stop is requested (or the crash budget is spent and then a stop is
    /// requested or the manager is dropped).
    pub(super) async fn run(
        self,
        child: Child,
        pid: u32,
        mut stop: oneshot::Receiver<()>,
    ) -> StopReport {
        let mut current = Some((child, pid));
        let mut crashes_in_a_row = 0u32;
        loop {
            let Some((mut child, pid)) = current.take() else {
                // Restarts exhausted: nothing to supervise; wait for the stop request.
                let _ = (&mut stop).await;
                return StopReport {
                    status: None,
                    killed: false,
                };
            };
            let started = self.state.borrow().started_at.unwrap_or_else(Instant::now);
            tokio::select! {
                waited = child.wait() => {
                    let uptime = started.elapsed();
                    match waited {
                        Ok(status) => self.record_exit(pid, status, false, uptime),
                        Err(e) => tracing::error!(agent = %self.command.name, pid, error = %ErrorReport(&e), "cannot wait for collector"),
                    }
                    if uptime >= self.restart.reset_after {
                        crashes_in_a_row = 0;
                    }
                    crashes_in_a_row += 1;
                    match self.restart_after_backoff(&mut crashes_in_a_row, &mut stop).await {
                        Restart::Spawned(child, pid) => current = Some((child, pid)),
                        Restart::GaveUp => current = None,
                        Restart::StopRequested => {
                    self.state.send_modify(|s| s.phase = Phase::Stopped);
                    return StopReport { status: None, killed: false };
                }
                    }
                }
                _ = &mut stop => return self.terminate(child, pid).await,
            }
        }
    }

    async fn restart_after_backoff(
        &self,
        crashes_in_a_row: &mut u32,
        stop: &mut oneshot::Receiver<()>,
    ) -> Restart {
        loop {
            let Some(delay) = self.restart.delay(*crashes_in_a_row) else {
                tracing::error!(agent = %self.command.name, crashes_in_a_row = *crashes_in_a_row, "collector keeps crashing; giving up restarts");
                self.publish(ProcessEvent::RestartsExhausted {
                    crashes_in_a_row: *crashes_in_a_row,
                });
                self.state.send_modify(|s| s.phase = Phase::GaveUp);
                return Restart::GaveUp;
            };
            tracing::warn!(agent = %self.command.name, ?delay, crashes_in_a_row = *crashes_in_a_row, "restarting collector after back-off");
            self.state.send_modify(|s| s.phase = Phase::BackingOff);
            self.publish(ProcessEvent::RestartScheduled {
                delay,
                crashes_in_a_row: *crashes_in_a_row,
            });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = &mut *stop => return Restart::StopRequested,
            }
            match self.spawn_child() {
                Ok((child, pid)) => return Restart::Spawned(child, pid),
                Err(e) => {
                    tracing::error!(agent = %self.command.name, error = %ErrorReport(&e), "cannot restart collector");
                    self.publish(ProcessEvent::RestartFailed {
                        error: e.to_string(),
                    });
                    *crashes_in_a_row += 1;
                }
            }
        }
    }

    /// SIGTERM, then SIGKILL if the process is still there after `stop_timeout`. Both go to
    /// the collector's process group (it leads its own group), so helper processes it
    /// started stop with it instead of being orphaned.
    async fn terminate(&self, mut child: Child, pid: u32) -> StopReport {
        let started = self.state.borrow().started_at.unwrap_or_else(Instant::now);
        // The child is not reaped yet (we hold it and have not seen its exit), so the pid and
        // its process group id cannot have been reused by another process.
        if let Err(e) = signal_group(pid, Signal::SIGTERM) {
            tracing::warn!(agent = %self.command.name, pid, error = %ErrorReport(&e), "SIGTERM failed");
        }
        let mut killed = false;
        let waited = match tokio::time::timeout(self.stop_timeout, child.wait()).await {
            Ok(waited) => waited,
            Err(_) => {
                tracing::warn!(agent = %self.command.name, pid, timeout = ?self.stop_timeout, "collector ignored SIGTERM; sending SIGKILL");
                killed = true;
                if let Err(e) = signal_group(pid, Signal::SIGKILL) {
                    tracing::warn!(agent = %self.command.name, pid, error = %ErrorReport(&e), "SIGKILL to the process group failed");
                    if let Err(e) = child.start_kill() {
                        tracing::warn!(agent = %self.command.name, pid, error = %ErrorReport(&e), "SIGKILL failed");
                    }
                }
                child.wait().await
            }
        };
        match waited {
            Ok(status) => {
                self.record_exit(pid, status, true, started.elapsed());
                tracing::info!(agent = %self.command.name, pid, %status, killed, "collector stopped");
                self.publish(ProcessEvent::Stopped {
                    pid,
                    status,
                    killed,
                });
                StopReport {
                    status: Some(status),
                    killed,
                }
            }
            Err(e) => {
                tracing::error!(agent = %self.command.name, pid, error = %ErrorReport(&e), "cannot wait for collector");
                self.state.send_modify(|s| {
                    s.pid = None;
                    s.phase = Phase::Stopped;
                });
                StopReport {
                    status: None,
                    killed,
                }
            }
        }
    }

    fn record_exit(&self, pid: u32, status: ExitStatus, requested: bool, uptime: Duration) {
        if let Some(pid_file) = &self.pid_file
            && let Err(e) = pid_file.clear()
        {
            tracing::warn!(agent = %self.command.name, pid_file = %pid_file.path().display(), error = %ErrorReport(&e), "cannot clear collector pid file");
        }
        let mut generation = 0;
        self.state.send_modify(|s| {
            generation = s.generation;
            s.pid = None;
            s.phase = Phase::Stopped;
            s.last_exit = Some(ExitRecord {
                generation,
                pid,
                status,
                requested,
            });
        });
        if !requested {
            tracing::warn!(agent = %self.command.name, pid, %status, ?uptime, "collector exited unexpectedly");
            self.publish(ProcessEvent::Exited {
                pid,
                status,
                uptime,
                generation,
            });
        }
    }

    fn publish(&self, event: ProcessEvent) {
        // No subscribers is fine: events are informational.
        let _ = self.events.send(event);
    }
}

/// Sends `signal` to the process group led by `pid`, or to `pid` alone if it has no group of
/// its own (cannot happen for children spawned here, which lead their group).
fn signal_group(pid: u32, signal: Signal) -> nix::Result<()> {
    let pid = Pid::from_raw(i32::try_from(pid).map_err(|_| nix::errno::Errno::ESRCH)?);
    killpg(pid, signal).or_else(|_| kill(pid, signal))
}

/// Attempts while the executable is "busy" (ETXTBSY), and the pause between them.
const BUSY_ATTEMPTS: u32 = 20;
const BUSY_PAUSE: Duration = Duration::from_millis(5);

/// Spawns, retrying briefly on ETXTBSY. A freshly written executable can be reported busy
/// when another thread of this process forked while the file was still open for writing: the
/// forked child holds the write descriptor until it execs. The window is microseconds.
fn spawn_retrying_busy(command: &mut tokio::process::Command) -> std::io::Result<Child> {
    let mut attempt = 1;
    loop {
        match command.spawn() {
            Err(e)
                if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32)
                    && attempt < BUSY_ATTEMPTS =>
            {
                attempt += 1;
                std::thread::sleep(BUSY_PAUSE);
            }
            other => return other,
        }
    }
}

enum Restart {
    Spawned(Child, u32),
    GaveUp,
    StopRequested,
}
