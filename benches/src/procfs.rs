//! What the load tools read about a process from `/proc`: memory and CPU time.

use std::io;
use std::time::Duration;

/// A `/proc/<pid>/status` memory field such as `"VmRSS:"` or `"VmHWM:"`, in KiB.
///
/// # Errors
/// The file cannot be read or has no such field.
pub fn memory_kib(pid: u32, field: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no {field} in /proc/{pid}/status")))
}

/// CPU time (user + system) a process has used so far, from USER_HZ (100 per second) ticks.
///
/// # Errors
/// The file cannot be read or is not in the expected format.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    // utime and stime are fields 14 and 15.
    let [user, system] = stat_numbers(pid, [14, 15])?;
    Ok(Duration::from_millis((user + system) * 10))
}

/// When a process started, as time since boot (see [`since_boot`]), from USER_HZ ticks.
///
/// # Errors
/// The file cannot be read or is not in the expected format.
pub fn start_time(pid: u32) -> io::Result<Duration> {
    let [start] = stat_numbers(pid, [22])?;
    Ok(Duration::from_millis(start * 10))
}

/// The time since boot, on the clock process start times count on (`CLOCK_BOOTTIME`).
///
/// # Panics
/// The clock cannot be read (never on Linux).
#[must_use]
pub fn since_boot() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(Duration::from)
        .expect("CLOCK_BOOTTIME")
}

/// The child processes of `pid`, from `/proc/<pid>/task/*/children`; empty when it is gone.
#[must_use]
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Numeric fields (1-based, as in proc(5)) of `/proc/<pid>/stat`, read at once.
fn stat_numbers<const N: usize>(pid: u32, fields: [usize; N]) -> io::Result<[u64; N]> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let malformed = || io::Error::other(format!("unexpected /proc/{pid}/stat"));
    // The command name (field 2) may hold spaces; the fields after it, from field 3 on, are
    // space separated.
    let after: Vec<&str> = stat
        .rfind(')')
        .and_then(|end| stat.get(end + 2..))
        .ok_or_else(malformed)?
        .split_whitespace()
        .collect();
    let mut numbers = [0; N];
    for (number, field) in numbers.iter_mut().zip(fields) {
        *number = field
            .checked_sub(3)
            .and_then(|index| after.get(index))
            .and_then(|text| text.parse().ok())
            .ok_or_else(malformed)?;
    }
    Ok(numbers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(memory_kib(pid, "VmRSS:").unwrap() > 0);
        assert!(memory_kib(pid, "NoSuchField:").is_err());
        let before = cpu_time(pid).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(cpu_time(pid).unwrap() >= before);
        assert!(start_time(pid).unwrap() <= since_boot());
        assert!(
            stat_numbers(pid, [2]).is_err(),
            "the command name is not a number"
        );
    }
}
