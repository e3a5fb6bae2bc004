//! `build_info` and the standard `process_*` metrics of the server process, appended to the
//! fleet metrics on `/metrics` (OpenMetrics text, Prometheus naming and units).
//!
//! | metric | type | unit |
//! | --- | --- | --- |
//! | `opamp_build_info{version}` | info | |
//! | `process_cpu_seconds_total` | counter | seconds |
//! | `process_resident_memory_bytes` | gauge | bytes |
//! | `process_open_fds` | gauge | |
//! | `process_max_fds` | gauge | |
//! | `process_start_time_seconds` | gauge | seconds since the Unix epoch |
//!
//! Read from `/proc/self` (Linux); elsewhere only `opamp_build_info` appears.

use std::fmt::Write as _;

/// Clock ticks per second of `/proc/<pid>/stat` times: `USER_HZ`, fixed at 100 in the Linux
/// user-space ABI on the architectures we build for.
const USER_HZ: f64 = 100.0;

/// The metric families, in OpenMetrics text, without the closing `# EOF`.
pub(super) fn encode() -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "# HELP opamp_build Build of the running opamp server.\n\
         # TYPE opamp_build info\n\
         opamp_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(stat) = read("/proc/self/stat").and_then(|s| parse_stat(&s)) {
        let _ = write!(
            out,
            "# HELP process_cpu_seconds Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds counter\n# UNIT process_cpu_seconds seconds\n\
             process_cpu_seconds_total {}\n",
            (stat.utime + stat.stime) as f64 / USER_HZ
        );
        if let Some(boot) = read("/proc/stat").and_then(|s| boot_time(&s)) {
            let _ = write!(
                out,
                "# HELP process_start_time_seconds Start time of the process since the Unix epoch in seconds.\n\
                 # TYPE process_start_time_seconds gauge\n# UNIT process_start_time_seconds seconds\n\
                 process_start_time_seconds {}\n",
                boot as f64 + stat.start_ticks as f64 / USER_HZ
            );
        }
    }
    if let Some(rss) = read("/proc/self/status").and_then(|s| resident_bytes(&s)) {
        let _ = write!(
            out,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\n# UNIT process_resident_memory_bytes bytes\n\
             process_resident_memory_bytes {rss}\n"
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = write!(
            out,
            "# HELP process_open_fds Number of open file descriptors.\n\
             # TYPE process_open_fds gauge\nprocess_open_fds {}\n",
            fds.count()
        );
    }
    if let Some(max) = read("/proc/self/limits").and_then(|s| max_open_files(&s)) {
        let _ = write!(
            out,
            "# HELP process_max_fds Maximum number of open file descriptors.\n\
             # TYPE process_max_fds gauge\nprocess_max_fds {max}\n"
        );
    }
    out
}

/// `fleet` (ending in `# EOF`) with `more` families and the process families inserted
/// before its end.
pub(super) fn append_to(fleet: &str, more: &str) -> String {
    let body = fleet.trim_end().strip_suffix("# EOF").unwrap_or(fleet);
    format!("{body}{more}{}# EOF\n", encode())
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

/// Fields 14, 15 and 22 of `/proc/self/stat`, counted after the command name (which may
/// hold spaces and parentheses, hence the last `)`).
fn parse_stat(text: &str) -> Option<Stat> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state).
    let field = |n: usize| fields.get(n - 3)?.parse().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn resident_bytes(text: &str) -> Option<u64> {
    let kib: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn max_open_files(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = parse_stat(
            "42 (tokio (rt) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 12345 1 2",
        )
        .unwrap();
        assert_eq!((stat.utime, stat.stime, stat.start_ticks), (250, 75, 12345));
    }

    #[test]
    fn process_families_go_before_the_end_marker() {
        let text = append_to(
            "# TYPE opamp_agents_known gauge\nopamp_agents_known 3\n# EOF\n",
            "# TYPE opamp_transport_connections_open gauge\nopamp_transport_connections_open 0\n",
        );
        assert!(text.starts_with("# TYPE opamp_agents_known gauge"));
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.contains("opamp_build_info{version=\""));
        assert!(text.contains("\nopamp_transport_connections_open 0\n"));
        #[cfg(target_os = "linux")]
        {
            assert!(text.contains("\nprocess_cpu_seconds_total "));
            assert!(text.contains("\nprocess_resident_memory_bytes "));
            assert!(text.contains("\nprocess_open_fds "));
        }
    }
}
