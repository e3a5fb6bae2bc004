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
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let malformed = || io::Error::other(format!("unexpected /proc/{pid}/stat"));
    // The command name may hold spaces; the fields after it are space separated.
    let after = stat
        .rfind(')')
        .and_then(|end| stat.get(end + 2..))
        .ok_or_else(malformed)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| -> io::Result<u64> {
        fields
            .get(index)
            .and_then(|field| field.parse().ok())
            .ok_or_else(malformed)
    };
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
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
    }
}
