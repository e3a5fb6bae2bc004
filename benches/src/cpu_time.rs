//! A criterion measurement of the benchmark thread's CPU time instead of wall-clock time.
//!
//! The development machine has two cores shared with other builds; wall-clock samples then
//! include time the thread spent waiting for a core, which swamps few-percent differences.
//! The thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`) only advances while it runs.
//!
//! ```no_run
//! use criterion::Criterion;
//! use opamp_benches::cpu_time::ThreadCpuTime;
//! let mut criterion: Criterion<ThreadCpuTime> = Criterion::default().with_measurement(ThreadCpuTime);
//! criterion.bench_function("sum", |b| b.iter(|| (0..100u64).sum::<u64>()));
//! ```

use std::time::Duration;

use criterion::Throughput;
use criterion::measurement::{Measurement, ValueFormatter};
use nix::time::{ClockId, clock_gettime};

/// CPU time of the calling thread, in nanoseconds, as a criterion [`Measurement`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadCpuTime;

/// Reads the calling thread's CPU clock; zero if the clock is unavailable (never on Linux).
#[must_use]
pub fn thread_cpu_now() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Self::Intermediate {
        thread_cpu_now()
    }

    fn end(&self, start: Self::Intermediate) -> Self::Value {
        thread_cpu_now().saturating_sub(start)
    }

    fn add(&self, v1: &Self::Value, v2: &Self::Value) -> Self::Value {
        *v1 + *v2
    }

    fn zero(&self) -> Self::Value {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Self::Value) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuNanosFormatter
    }
}

/// Formats nanoseconds of CPU time like criterion's wall-clock formatter.
struct CpuNanosFormatter;

impl ValueFormatter for CpuNanosFormatter {
    fn scale_values(&self, typical_ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical_ns < 1e3 {
            (1.0, "ns cpu")
        } else if typical_ns < 1e6 {
            (1e-3, "µs cpu")
        } else if typical_ns < 1e9 {
            (1e-6, "ms cpu")
        } else {
            (1e-9, "s cpu")
        };
        for value in values {
            *value *= factor;
        }
        unit
    }

    fn scale_throughputs(
        &self,
        typical_ns: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (per_iteration, units): (f64, [(f64, &'static str); 4]) = match *throughput {
            Throughput::Bytes(bytes) | Throughput::BytesDecimal(bytes) => (
                bytes as f64,
                [
                    (1.0, "B/s"),
                    (1024.0, "KiB/s"),
                    (1024.0 * 1024.0, "MiB/s"),
                    (1024.0 * 1024.0 * 1024.0, "GiB/s"),
                ],
            ),
            Throughput::Elements(elements) => (
                elements as f64,
                [
                    (1.0, "elem/s"),
                    (1e3, "Kelem/s"),
                    (1e6, "Melem/s"),
                    (1e9, "Gelem/s"),
                ],
            ),
        };
        let typical_rate = per_iteration * 1e9 / typical_ns;
        let (denominator, unit) = units
            .iter()
            .rev()
            .find(|(denominator, _)| typical_rate >= *denominator)
            .copied()
            .unwrap_or(units[0]);
        for value in values {
            *value = per_iteration * 1e9 / *value / denominator;
        }
        unit
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}
