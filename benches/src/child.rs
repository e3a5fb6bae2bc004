//! The load tools' measured servers: this same executable in a server role, in a child
//! process so its memory and CPU are read alone from `/proc`; where they listen and how
//! many connections they hold.
#![allow(clippy::unwrap_used)] // A measuring tool: failing loudly is right.

use std::io::BufRead;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Command;

/// Loopback with a port the system picks: where the measured servers listen.
pub const LOOPBACK_ANY_PORT: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));

/// Raises this process's open-files limit as far as it may go (each agent is a descriptor on
/// each side); returns the limit now in force, 0 when unknown.
#[must_use]
pub fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

/// Connections a server may hold under `fd_limit` open files: all but 100 kept for its
/// other files, at least one.
#[must_use]
pub fn max_connections(fd_limit: u64) -> usize {
    usize::try_from(fd_limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(100)
        .max(1)
}

/// A command that runs this executable, under `wrapper` when one is given (for example
/// `heaptrack -o /tmp/server`, split at spaces; the memory figures then include the
/// wrapper's own).
pub fn self_command(wrapper: Option<&str>) -> Command {
    let exe = std::env::current_exe().unwrap();
    let wrapper: Vec<&str> = wrapper
        .map(|wrapper| wrapper.split_whitespace().collect())
        .unwrap_or_default();
    match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut command = Command::new(program);
            command.args(wrapper_args).arg(exe);
            command
        }
        None => Command::new(exe),
    }
}

/// Reads lines until one starts with `prefix` and returns the rest of it (a wrapper may
/// print lines of its own first). Panics when the output ends first.
pub fn read_until_prefixed(reader: &mut impl BufRead, prefix: &str) -> String {
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the server ended before printing {prefix:?}"
        );
        if let Some(rest) = line.trim().strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
}

/// The CPU time the server `pid` spends while its agents idle, and the window: whole
/// heartbeat intervals, at least two and at least `min_secs` seconds.
pub async fn idle_cpu(
    pid: u32,
    heartbeat_secs: u64,
    min_secs: u64,
) -> (std::time::Duration, std::time::Duration) {
    let before = crate::procfs::cpu_time(pid).unwrap();
    let interval = heartbeat_secs.max(1);
    let intervals = min_secs.div_ceil(interval).max(2);
    let window = std::time::Duration::from_secs(interval * intervals);
    tokio::time::sleep(window).await;
    let cpu = crate::procfs::cpu_time(pid).unwrap().saturating_sub(before);
    (cpu, window)
}
