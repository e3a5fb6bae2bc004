//! A record of the running collector in the storage directory, so a supervisor that was
//! killed (SIGKILL, OOM, power cut of the supervisor alone) can stop the collector it left
//! behind before starting another one on the same ports.
//!
//! The file holds the pid and the process start time from `/proc/<pid>/stat`. Both must match
//! before anything is signalled: after a reboot or a long outage the pid may belong to an
//! unrelated process, and the start time tells them apart.
//!
//! The pid is only known once the child exists, so a supervisor killed between the spawn and
//! the record would leave a collector nobody knows about. Every collector therefore also
//! carries [`COLLECTOR_MARKER_ENV`] = the pid file's absolute path in its environment, set
//! before the spawn; looking for leftovers also scans `/proc/*/environ` for that exact entry,
//! which finds such a stray (and anything it forked) whatever the timing of the kill. A stray
//! caught between its fork and its exec carries no marker yet (it is still a copy of the
//! supervisor), so the scan first waits, briefly, for such young copies to exec.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How often a leftover process (not our child, so it cannot be awaited) is checked for exit.
const LEFTOVER_POLL: Duration = Duration::from_millis(10);

/// Environment variable every supervised collector carries: the absolute path of the pid file
/// of the supervisor that started it.
pub const COLLECTOR_MARKER_ENV: &str = "OPAMP_SUPERVISOR_PID_FILE";

/// Where the supervisor records its collector's pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidFile {
    path: PathBuf,
}

/// A collector left behind by an earlier supervisor, and how it was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeftoverStopped {
    /// Its pid (the recorded one when there were several).
    pub pid: u32,
    /// Whether SIGKILL was needed.
    pub killed: bool,
}

impl PidFile {
    /// A pid file at `path` (conventionally `<storage_dir>/collector.pid`), made absolute so
    /// that the marker its collectors carry names it whatever the working directory.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let path = std::path::absolute(&path).unwrap_or(path);
        PidFile { path }
    }

    /// The environment entry (name, value) a collector recorded here carries; see the module
    /// documentation.
    pub fn marker(&self) -> (&'static str, &Path) {
        (COLLECTOR_MARKER_ENV, &self.path)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `pid` (with its start time) atomically: write a temporary file, fsync, rename.
    ///
    /// # Errors
    /// I/O errors writing the file, or `NotFound` if the process is already gone.
    pub fn record(&self, pid: u32) -> io::Result<()> {
        let start = start_time(pid)?;
        let tmp = self.path.with_extension("pid.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        writeln!(file, "{pid} {start}")?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &self.path)
    }

    /// Removes the record (after the collector exited). Missing is fine.
    ///
    /// # Errors
    /// I/O errors other than `NotFound`.
    pub fn clear(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// A leftover collector of this pid file that still runs: the recorded pid if that same
    /// process (pid and start time) runs, else any process carrying this file's marker.
    pub fn live_leftover(&self) -> Option<u32> {
        self.live_leftovers().into_iter().next()
    }

    /// Every leftover: the recorded process, if it still runs, then every other process that
    /// carries this file's marker (started by a supervisor killed before it could record it).
    pub fn live_leftovers(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.recorded().into_iter().collect();
        for pid in self.marked() {
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
        pids
    }

    /// The recorded collector, if that same process (pid and start time) still runs; unlike
    /// [`Self::live_leftover`], no search of other processes' environments.
    pub fn live_recorded(&self) -> Option<u32> {
        self.recorded()
    }

    fn recorded(&self) -> Option<u32> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let mut fields = text.split_whitespace();
        let pid: u32 = fields.next()?.parse().ok()?;
        let recorded_start: u64 = fields.next()?.parse().ok()?;
        (is_running(pid) && start_time(pid).ok() == Some(recorded_start)).then_some(pid)
    }

    /// Running processes (never this one) whose environment holds this file's marker.
    fn marked(&self) -> Vec<u32> {
        let mut wanted = format!("{COLLECTOR_MARKER_ENV}=").into_bytes();
        wanted.extend_from_slice(self.path.as_os_str().as_encoded_bytes());
        let own = std::process::id();
        let mut pids: Vec<u32> = process_ids()
            .filter(|&pid| pid != own)
            .filter(|&pid| {
                // Unreadable (another user's process, or gone meanwhile): not ours.
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|environ| environ.split(|&b| b == 0).any(|kv| kv == wanted))
            })
            .filter(|&pid| is_running(pid))
            .collect();
        pids.sort_unstable();
        pids
    }

    /// Stops a collector recorded by an earlier supervisor: SIGTERM, then SIGKILL after
    /// `stop_timeout`; then clears the record. `Ok(None)` when no such process runs.
    ///
    /// # Errors
    /// Signals that cannot be delivered (e.g. permission), or a process that survives SIGKILL
    /// for `stop_timeout` (`TimedOut`).
    pub async fn stop_leftover(
        &self,
        stop_timeout: Duration,
    ) -> io::Result<Option<LeftoverStopped>> {
        wait_for_unfinished_spawns(stop_timeout.min(MAX_SPAWN_WAIT)).await;
        self.stop(self.live_leftovers(), stop_timeout).await
    }

    /// Stops the recorded collector only, if it still runs (same pid, same start time): for a
    /// supervisor that already ran [`Self::stop_leftover`] once in its life. What that search
    /// is for (strays of an earlier supervisor, caught before they were recorded) cannot
    /// appear later, and the search reads every process's environment, which costs a
    /// millisecond per start on a busy host.
    ///
    /// # Errors
    /// As [`Self::stop_leftover`].
    pub async fn stop_recorded(
        &self,
        stop_timeout: Duration,
    ) -> io::Result<Option<LeftoverStopped>> {
        self.stop(self.recorded().into_iter().collect(), stop_timeout)
            .await
    }

    async fn stop(
        &self,
        pids: Vec<u32>,
        stop_timeout: Duration,
    ) -> io::Result<Option<LeftoverStopped>> {
        let Some(&pid) = pids.first() else {
            self.clear()?;
            return Ok(None);
        };
        tracing::warn!(?pids, pid_file = %self.path.display(), "stopping collectors left behind by an earlier supervisor");
        for &pid in &pids {
            signal(pid, Signal::SIGTERM)?;
        }
        let mut killed = false;
        if !wait_all_gone(&pids, stop_timeout).await {
            killed = true;
            for &pid in &pids {
                signal(pid, Signal::SIGKILL)?;
            }
            if !wait_all_gone(&pids, stop_timeout).await {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("leftover collectors {pids:?} survived SIGKILL for {stop_timeout:?}"),
                ));
            }
        }
        self.clear()?;
        Ok(Some(LeftoverStopped { pid, killed }))
    }
}

/// Longest wait for a spawn cut off between fork and exec to finish its exec.
const MAX_SPAWN_WAIT: Duration = Duration::from_secs(1);

/// A supervisor killed between the fork and the exec of a collector leaves a child that is
/// still a copy of the supervisor: the collector's environment, and so the marker, only
/// appears at its exec. A scan in that window would miss the stray, which then execs and runs
/// untracked. So before scanning, wait (at most `within`) until no such copy is left: a
/// process other than this one, under a second old, running this executable, whose parent
/// does not run it (the killed supervisor's orphans are adopted by init or a subreaper) and
/// that is not an ancestor of this one (a parent `opamp` that started it, say). A young process
/// whose environment still reads empty counts too: CI caught a stray inside its exec, with the
/// collector's image in place but no environment yet. Each one has then exec'd or exited; an
/// unrelated process that merely started moments ago costs at most `within`.
async fn wait_for_unfinished_spawns(within: Duration) {
    let Ok(own_exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let ours = self_and_ancestors();
    let deadline = tokio::time::Instant::now() + within;
    while !young_copies_of(&own_exe, &ours).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(LEFTOVER_POLL).await;
    }
}

/// This process and its ancestors, up to the first one that cannot be read.
fn self_and_ancestors() -> Vec<u32> {
    let mut ours = vec![std::process::id()];
    while let Some(parent) = ours.last().and_then(|&pid| parent_of(pid)) {
        if parent == 0 || ours.contains(&parent) {
            break;
        }
        ours.push(parent);
    }
    ours
}

/// Running processes, other than `ours`, started under a second ago, that either run `exe`
/// with a parent that does not, or are still inside an exec (empty environment).
fn young_copies_of(exe: &Path, ours: &[u32]) -> Vec<u32> {
    let Some(now) = ticks_since_boot() else {
        return Vec::new();
    };
    let orphaned_copy = |pid: u32| {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == exe)
            && parent_of(pid).is_none_or(|parent| {
                std::fs::read_link(format!("/proc/{parent}/exe")).map_or(true, |p| p != exe)
            })
    };
    // Mid-exec, the new image is in place but its environment is not yet: it reads empty.
    // Kernel threads have an empty environment too, but no executable: they never count, or a
    // freshly started kernel worker would hold every start for a second.
    let environ_pending = |pid: u32| {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok()
            && std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| environ.is_empty())
    };
    process_ids()
        .filter(|pid| !ours.contains(pid))
        .filter(|&pid| {
            start_time(pid).is_ok_and(|start| now.saturating_sub(start) < TICKS_PER_SECOND)
        })
        .filter(|&pid| is_running(pid))
        .filter(|&pid| orphaned_copy(pid) || environ_pending(pid))
        .collect()
}

/// The pid of every process in `/proc` (none when it cannot be read).
fn process_ids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
}

/// The parent pid of `pid` (field 4 of its stat).
fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid).ok()?.get(1)?.parse().ok()
}

/// `/proc/<pid>/stat` start times count in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_SECOND: u64 = 100;

/// Now, in the ticks of `/proc/<pid>/stat` start times (from `/proc/uptime`).
fn ticks_since_boot() -> Option<u64> {
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let seconds: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    // Uptime is non-negative and far below u64::MAX ticks; the cast saturates anyway.
    Some((seconds * TICKS_PER_SECOND as f64) as u64)
}

fn signal(pid: u32, signal: Signal) -> io::Result<()> {
    let raw =
        i32::try_from(pid).map_err(|_| io::Error::other(format!("pid {pid} out of range")))?;
    match kill(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

async fn wait_all_gone(pids: &[u32], within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while pids.iter().any(|&pid| is_running(pid)) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(LEFTOVER_POLL).await;
    }
    true
}

/// Whether `pid` exists and is not a zombie (a zombie has exited; only its parent's reaping
/// is missing, which is not ours to do).
fn is_running(pid: u32) -> bool {
    stat_fields(pid).is_ok_and(|fields| fields.first().is_some_and(|state| state != "Z"))
}

/// Start time of `pid` in clock ticks after boot (field 22 of `/proc/<pid>/stat`).
fn start_time(pid: u32) -> io::Result<u64> {
    let fields = stat_fields(pid)?;
    // Fields after the command name start at field 3 (state); field 22 is index 19.
    fields.get(19).and_then(|f| f.parse().ok()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed /proc/{pid}/stat"),
        )
    })
}

/// Fields of `/proc/<pid>/stat` after the command name, which may itself contain spaces and
/// parentheses (hence the split at the last `)`).
fn stat_fields(pid: u32) -> io::Result<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, after_comm) = text.rsplit_once(')').ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed /proc/{pid}/stat"),
        )
    })?;
    Ok(after_comm.split_whitespace().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    /// A `sleep` carrying `pid_file`'s marker, as a collector it started would.
    fn marked_sleeper(pid_file: &PidFile) -> std::process::Child {
        let (name, value) = pid_file.marker();
        std::process::Command::new("sleep")
            .arg("30")
            .env(name, value)
            .spawn()
            .unwrap()
    }

    #[tokio::test]
    async fn stop_recorded_stops_the_record_only_and_stop_leftover_the_marked_too() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = PidFile::new(dir.path().join("collector.pid"));
        let timeout = Duration::from_secs(5);

        let mut unrecorded = marked_sleeper(&pid_file);
        let mut recorded = marked_sleeper(&pid_file);
        pid_file.record(recorded.id()).unwrap();
        // Its marker reaches /proc at the exec, which may still be under way.
        let deadline = std::time::Instant::now() + timeout;
        while pid_file.marked().len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(LEFTOVER_POLL);
        }

        let stopped = pid_file.stop_recorded(timeout).await.unwrap();
        assert_eq!(stopped.map(|s| s.pid), Some(recorded.id()));
        assert!(recorded.wait().unwrap().signal().is_some());
        assert!(
            is_running(unrecorded.id()),
            "stop_recorded searched the marker"
        );

        let stopped = pid_file.stop_leftover(timeout).await.unwrap();
        assert_eq!(stopped.map(|s| s.pid), Some(unrecorded.id()));
        assert!(unrecorded.wait().unwrap().signal().is_some());
        assert_eq!(pid_file.stop_recorded(timeout).await.unwrap(), None);
    }

    #[test]
    fn records_this_process_and_ignores_a_mismatched_start_time() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = PidFile::new(dir.path().join("collector.pid"));
        assert_eq!(pid_file.live_leftover(), None);
        pid_file.record(std::process::id()).unwrap();
        assert_eq!(pid_file.live_leftover(), Some(std::process::id()));

        // Same pid, other start time: a reused pid must never be signalled.
        let start = start_time(std::process::id()).unwrap();
        std::fs::write(
            pid_file.path(),
            format!("{} {}\n", std::process::id(), start + 1),
        )
        .unwrap();
        assert_eq!(pid_file.live_leftover(), None);

        std::fs::write(pid_file.path(), "garbage").unwrap();
        assert_eq!(pid_file.live_leftover(), None);
        pid_file.clear().unwrap();
        pid_file.clear().unwrap();
        assert!(!pid_file.path().exists());
    }
}
