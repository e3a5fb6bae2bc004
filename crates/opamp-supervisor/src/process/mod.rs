//! Runs the collector as a child process.
//!
//! [`ProcessManager::start`] spawns the collector (in its own process group, with configured
//! arguments and environment) and hands the child to a background task that:
//! - forwards its stdout and stderr into `tracing`, tagged with the agent name;
//! - notices when it exits and, unless a stop was requested, restarts it after an exponential
//!   back-off ([`RestartPolicy`]), giving up after a bounded number of crashes in a row;
//! - on [`ProcessManager::stop`], sends SIGTERM, waits `stop_timeout`, then sends SIGKILL.
//!
//! Everything that happens is published as a [`ProcessEvent`] on a broadcast channel and as the
//! current [`RunState`] on a watch channel, which the health gate uses to detect crashes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), opamp_supervisor::process::ProcessError> {
//! use std::time::Duration;
//! use opamp_supervisor::process::{AgentCommand, ProcessManager, RestartPolicy};
//! let mut manager = ProcessManager::new(
//!     AgentCommand::new("otelcol").arg("--config").arg("/etc/otelcol/config.yaml"),
//!     Duration::from_secs(10),
//!     RestartPolicy::disabled(),
//! );
//! let mut events = manager.subscribe();
//! let pid = manager.start("/usr/local/bin/otelcol".as_ref())?;
//! println!("collector runs as pid {pid}, first event {:?}", events.recv().await);
//! let report = manager.stop().await?;
//! println!("stopped: {:?}", report.status);
//! # Ok(()) }
//! ```

mod managed;
mod output;
mod pid_file;
mod policy;
mod task;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;

pub use managed::{ManagedCollector, PID_FILE_NAME};
pub use pid_file::{COLLECTOR_MARKER_ENV, LeftoverStopped, PidFile};
pub use policy::RestartPolicy;

/// How to run the collector, apart from which executable.
#[derive(Debug, Clone, Default)]
pub struct AgentCommand {
    /// Name used in logs and events (e.g. the package name).
    pub name: String,
    /// Command-line arguments.
    pub args: Vec<String>,
    /// Environment added to the supervisor's own.
    pub env: BTreeMap<String, String>,
    /// Working directory (the supervisor's when `None`).
    pub current_dir: Option<PathBuf>,
}

impl AgentCommand {
    /// A command named `name` with no arguments.
    pub fn new(name: impl Into<String>) -> Self {
        AgentCommand {
            name: name.into(),
            ..AgentCommand::default()
        }
    }

    /// Adds one argument.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds one environment variable.
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    fn to_command(&self, executable: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(executable);
        command
            .args(&self.args)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group: a Ctrl-C at the supervisor's terminal must not reach the
            // collector directly; the supervisor decides how it stops.
            .process_group(0)
            // If the manager's task is dropped (runtime shutdown), do not leak the collector.
            .kill_on_drop(true);
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        command
    }
}

/// Something that happened to the collector process.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessEvent {
    /// A process was spawned (by `start` or by a restart).
    Started {
        /// Its pid.
        pid: u32,
        /// The executable it runs.
        executable: PathBuf,
        /// Counts spawns of this manager, starting at 1.
        generation: u64,
    },
    /// The process exited without being asked to.
    Exited {
        /// Its pid.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
        /// How long it ran.
        uptime: Duration,
        /// Which spawn this was.
        generation: u64,
    },
    /// A restart will happen after `delay`.
    RestartScheduled {
        /// Back-off before the restart.
        delay: Duration,
        /// Crashes in a row so far.
        crashes_in_a_row: u32,
    },
    /// A restart could not spawn the executable.
    RestartFailed {
        /// Why spawning failed.
        error: String,
    },
    /// The crash budget is spent; the manager stays stopped until `start` is called again.
    RestartsExhausted {
        /// Crashes in a row.
        crashes_in_a_row: u32,
    },
    /// The process ended after `stop`.
    Stopped {
        /// Its pid.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
        /// Whether SIGKILL was needed because it ignored SIGTERM for `stop_timeout`.
        killed: bool,
    },
}

/// What the manager is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Phase {
    /// Nothing started yet, or stopped on request.
    #[default]
    Stopped,
    /// A process runs.
    Running,
    /// The process exited; a restart is scheduled.
    BackingOff,
    /// The process kept crashing; no more restarts until `start` is called again.
    GaveUp,
}

/// The manager's current state, published on a watch channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunState {
    /// What the manager is doing.
    pub phase: Phase,
    /// Pid of the running process, if one runs.
    pub pid: Option<u32>,
    /// Spawn count of the current (or last) process; 0 before the first start.
    pub generation: u64,
    /// When the current (or last) process was spawned (monotonic clock, for durations).
    pub started_at: Option<Instant>,
    /// The same moment on the wall clock (for `ComponentHealth.start_time_unix_nano`).
    pub started_at_wall: Option<SystemTime>,
    /// The most recent exit, with the generation of the process that exited.
    pub last_exit: Option<ExitRecord>,
}

/// How one process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitRecord {
    /// Which spawn exited.
    pub generation: u64,
    /// Its pid.
    pub pid: u32,
    /// Exit code or signal.
    pub status: ExitStatus,
    /// Whether the exit was requested by `stop`.
    pub requested: bool,
}

/// Outcome of [`ProcessManager::stop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopReport {
    /// How the process ended; `None` if none was running (e.g. waiting to restart).
    pub status: Option<ExitStatus>,
    /// Whether SIGKILL was needed.
    pub killed: bool,
}

/// Errors of the process manager.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// `start` was called while the manager already runs a process.
    #[error("collector {agent} is already running (pid {pid:?}); stop it first")]
    AlreadyRunning {
        /// Agent name.
        agent: String,
        /// Pid of the running process.
        pid: Option<u32>,
    },
    /// The executable could not be spawned.
    #[error("cannot start collector {agent} from {}", executable.display())]
    Spawn {
        /// Agent name.
        agent: String,
        /// The executable.
        executable: PathBuf,
        /// The spawn error.
        #[source]
        source: std::io::Error,
    },
    /// `wait_exit` was called before any process was started.
    #[error("collector {agent} was never started")]
    NotStarted {
        /// Agent name.
        agent: String,
    },
    /// A collector recorded in the pid file by an earlier supervisor still runs; it must be
    /// stopped ([`ProcessManager::stop`]) before another is started.
    #[error("a collector left behind by an earlier supervisor still runs (pid {pid}, recorded in {}); stop it first", pid_file.display())]
    LeftoverRunning {
        /// Agent name.
        agent: String,
        /// Its pid.
        pid: u32,
        /// The pid file.
        pid_file: PathBuf,
    },
    /// A leftover collector could not be stopped, or the pid file not updated.
    #[error("cannot stop the collector recorded in {}", pid_file.display())]
    Leftover {
        /// Agent name.
        agent: String,
        /// The pid file.
        pid_file: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The background task ended unexpectedly (it panicked or the runtime shut down).
    #[error("process manager task for {agent} failed: {reason}")]
    TaskFailed {
        /// Agent name.
        agent: String,
        /// What happened.
        reason: String,
    },
}

/// Capacity of the event channel; a slow subscriber misses old events (`Lagged`), never blocks.
const EVENT_CAPACITY: usize = 256;

/// Starts, stops and restarts one collector process. See the [module docs](self).
///
/// Dropping the manager stops its collector in the background (SIGTERM, then SIGKILL after
/// `stop_timeout`) as long as the Tokio runtime keeps running; when the runtime shuts down the
/// child is killed outright. Call [`stop`](Self::stop) to wait for a graceful end.
#[derive(Debug)]
pub struct ProcessManager {
    command: AgentCommand,
    stop_timeout: Duration,
    restart: RestartPolicy,
    events: broadcast::Sender<ProcessEvent>,
    state: watch::Sender<RunState>,
    running: Option<Running>,
    pid_file: Option<PidFile>,
    stderr_tail: watch::Sender<Option<StderrLine>>,
}

/// The last non-empty line a collector wrote to stderr: where collectors say why they refuse
/// a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StderrLine {
    /// Pid of the process that wrote it.
    pub pid: u32,
    /// The line, without its line end.
    pub line: String,
}

#[derive(Debug)]
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<StopReport>,
}

impl ProcessManager {
    /// A manager that is not running anything yet.
    pub fn new(command: AgentCommand, stop_timeout: Duration, restart: RestartPolicy) -> Self {
        ProcessManager {
            command,
            stop_timeout,
            restart,
            events: broadcast::channel(EVENT_CAPACITY).0,
            state: watch::channel(RunState::default()).0,
            running: None,
            pid_file: None,
            stderr_tail: watch::channel(None).0,
        }
    }

    /// Records every spawned collector in `pid_file` (cleared when it exits), so a later
    /// supervisor can stop a collector this one leaves behind if it is killed. With a pid file,
    /// [`start`](Self::start) refuses while a recorded collector still runs, and
    /// [`stop`](Self::stop) with nothing running stops that leftover.
    #[must_use]
    pub fn with_pid_file(mut self, pid_file: PidFile) -> Self {
        self.pid_file = Some(pid_file);
        self
    }

    /// Spawns `executable` and supervises it until [`stop`](Self::stop). Returns its pid.
    ///
    /// Must be called within a Tokio runtime (it spawns the supervising task; panics
    /// otherwise, like `tokio::spawn`).
    ///
    /// # Errors
    /// [`ProcessError::AlreadyRunning`] while supervising, [`ProcessError::Spawn`] when the
    /// executable cannot be started (missing, not executable, ...).
    pub fn start(&mut self, executable: &Path) -> Result<u32, ProcessError> {
        if self.running.is_some() {
            if self.state.borrow().phase != Phase::GaveUp {
                return Err(ProcessError::AlreadyRunning {
                    agent: self.command.name.clone(),
                    pid: self.pid(),
                });
            }
            // The old task only waits for a stop request; dropping its sender ends it.
            self.running = None;
        }
        // As in `stop_leftover`: the search for strays is for this manager's first start.
        let first_start = self.state.borrow().generation == 0;
        if let Some(pid_file) = &self.pid_file
            && let Some(pid) = if first_start {
                pid_file.live_leftover()
            } else {
                pid_file.live_recorded()
            }
        {
            return Err(ProcessError::LeftoverRunning {
                agent: self.command.name.clone(),
                pid,
                pid_file: pid_file.path().to_path_buf(),
            });
        }
        let task = task::Supervision {
            command: self.command.clone(),
            executable: executable.to_path_buf(),
            stop_timeout: self.stop_timeout,
            restart: self.restart,
            events: self.events.clone(),
            state: self.state.clone(),
            pid_file: self.pid_file.clone(),
            stderr_tail: self.stderr_tail.clone(),
        };
        let (child, pid) = task.spawn_child().map_err(|source| ProcessError::Spawn {
            agent: self.command.name.clone(),
            executable: executable.to_path_buf(),
            source,
        })?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let handle = tokio::spawn(task.run(child, pid, stop_rx));
        self.running = Some(Running {
            stop: stop_tx,
            task: handle,
        });
        Ok(pid)
    }

    /// Stops supervising: SIGTERM, then SIGKILL after `stop_timeout`; cancels a pending
    /// restart. Returns how the process ended. When nothing runs it stops a leftover recorded
    /// in the pid file, if any, and is otherwise harmless.
    ///
    /// # Errors
    /// [`ProcessError::TaskFailed`] if the background task panicked,
    /// [`ProcessError::Leftover`] if a leftover collector cannot be stopped.
    pub async fn stop(&mut self) -> Result<StopReport, ProcessError> {
        let Some(running) = self.running.take() else {
            let killed = self.stop_leftover().await?.is_some_and(|l| l.killed);
            return Ok(StopReport {
                status: None,
                killed,
            });
        };
        // The task may already have ended (restarts exhausted); then nobody listens.
        let _ = running.stop.send(());
        running.task.await.map_err(|e| ProcessError::TaskFailed {
            agent: self.command.name.clone(),
            reason: e.to_string(),
        })
    }

    /// Stops a collector recorded in the pid file by an earlier supervisor (see
    /// [`PidFile::stop_leftover`]; once this manager has started a collector,
    /// [`PidFile::stop_recorded`]). Does nothing without a pid file, or while this manager
    /// supervises a process (the record is then its own).
    ///
    /// # Errors
    /// [`ProcessError::Leftover`] if it cannot be stopped.
    pub async fn stop_leftover(&self) -> Result<Option<LeftoverStopped>, ProcessError> {
        let Some(pid_file) = &self.pid_file else {
            return Ok(None);
        };
        if self.running.is_some() {
            return Ok(None);
        }
        // The first check of this manager's life searches for everything an earlier
        // supervisor may have left; once this manager has started a collector, only its own
        // record can name one (a collector it stopped went with its whole process group).
        let stopped = if self.state.borrow().generation > 0 {
            pid_file.stop_recorded(self.stop_timeout).await
        } else {
            pid_file.stop_leftover(self.stop_timeout).await
        };
        stopped.map_err(|source| ProcessError::Leftover {
            agent: self.command.name.clone(),
            pid_file: pid_file.path().to_path_buf(),
            source,
        })
    }

    /// Pid of the running process, if any.
    pub fn pid(&self) -> Option<u32> {
        self.state.borrow().pid
    }

    /// Waits until the process that is current now exits (crash, or stop), and returns how.
    /// Returns at once if it has already exited.
    ///
    /// # Errors
    /// [`ProcessError::NotStarted`] if nothing was ever started.
    pub async fn wait_exit(&self) -> Result<ExitRecord, ProcessError> {
        let mut state = self.state.subscribe();
        let generation = state.borrow().generation;
        if generation == 0 {
            return Err(ProcessError::NotStarted {
                agent: self.command.name.clone(),
            });
        }
        let exited = state
            .wait_for(|s| s.last_exit.is_some_and(|e| e.generation >= generation))
            .await
            .map_err(|e| ProcessError::TaskFailed {
                agent: self.command.name.clone(),
                reason: e.to_string(),
            })?;
        exited.last_exit.ok_or_else(|| ProcessError::TaskFailed {
            agent: self.command.name.clone(),
            reason: "exit record vanished".into(),
        })
    }

    /// Receives every [`ProcessEvent`] from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ProcessEvent> {
        self.events.subscribe()
    }

    /// Follows the [`RunState`] (used by the health gate to notice crashes).
    pub fn watch(&self) -> watch::Receiver<RunState> {
        self.state.subscribe()
    }

    /// Follows the last non-empty stderr line of the collector processes.
    pub fn stderr_tail(&self) -> watch::Receiver<Option<StderrLine>> {
        self.stderr_tail.subscribe()
    }

    /// The agent name given at construction.
    pub fn agent_name(&self) -> &str {
        &self.command.name
    }
}
