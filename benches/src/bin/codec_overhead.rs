//! Overhead of `opamp_proto::codec` over plain prost, measured interleaved.
//!
//! Sequential criterion runs on a shared two-core machine differ by tens of percent for the
//! same code, because the load of other jobs changes between runs. Here the baseline and our
//! call alternate in short rounds (about 2 ms each) and the result is the median of the
//! per-round ratios, so load changes hit both sides alike.
//!
//! ```text
//! cargo run --release -p opamp-benches --bin codec_overhead -- [ROUNDS, default 301] [MAX_RATIO]
//! ```
//! Output: one line per message and operation with both rates (messages per CPU second of
//! one thread) and `ratio` = our time / prost's time (1.05 = 5% slower).
#![allow(clippy::unwrap_used, clippy::expect_used)] // A measuring tool: failing loudly is right.

use std::hint::black_box;
use std::time::Duration;

use opamp_benches::cpu_time::thread_cpu_now;
use opamp_benches::messages;
use opamp_proto::codec::{self, Limits};
use prost::Message;

/// Times `iterations` calls of `f` in thread CPU time.
fn time(iterations: u64, f: &mut impl FnMut()) -> Duration {
    let start = thread_cpu_now();
    for _ in 0..iterations {
        f();
    }
    thread_cpu_now().saturating_sub(start)
}

/// Median of per-round `ours / baseline` time ratios and both median per-call times.
fn compare(rounds: usize, mut baseline: impl FnMut(), mut ours: impl FnMut()) -> (f64, f64, f64) {
    // Size a round to about 1 ms per side.
    let mut iterations = 1u64;
    while time(iterations, &mut baseline) < Duration::from_millis(1) {
        iterations *= 2;
    }
    let mut ratios = Vec::with_capacity(rounds);
    let mut base_times = Vec::with_capacity(rounds);
    let mut our_times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        // Alternate which side goes first so neither always runs on a warmer cache.
        let (b, o) = if round % 2 == 0 {
            let b = time(iterations, &mut baseline);
            (b, time(iterations, &mut ours))
        } else {
            let o = time(iterations, &mut ours);
            (time(iterations, &mut baseline), o)
        };
        let (b, o) = (b.as_secs_f64(), o.as_secs_f64());
        ratios.push(o / b);
        base_times.push(b / iterations as f64);
        our_times.push(o / iterations as f64);
    }
    (median(ratios), median(base_times), median(our_times))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Prints one row; `false` when its ratio is over `max_ratio`.
fn report(
    max_ratio: f64,
    message: &str,
    operation: &str,
    (ratio, base, ours): (f64, f64, f64),
) -> bool {
    let over = ratio > max_ratio;
    println!(
        "{message:<26} {operation:<10} prost {:>12.0}/s  ours {:>12.0}/s  ratio {ratio:.3}{}",
        1.0 / base,
        1.0 / ours,
        if over { "  OVER" } else { "" }
    );
    !over
}

/// Compares the four operations on `message`; `false` when any ratio is over `max_ratio`.
fn measure<M: Message + Default>(rounds: usize, max_ratio: f64, name: &str, message: &M) -> bool {
    let limits = Limits::default();
    let bytes = message.encode_to_vec();
    let frame = codec::encode_ws_frame(message);
    let prost_encode = || {
        black_box(black_box(message).encode_to_vec());
    };
    let mut within = report(
        max_ratio,
        name,
        "encode",
        compare(rounds, prost_encode, || {
            black_box(codec::encode(black_box(message)));
        }),
    );
    within &= report(
        max_ratio,
        name,
        "ws_encode",
        compare(rounds, prost_encode, || {
            black_box(codec::encode_ws_frame(black_box(message)));
        }),
    );
    let prost_decode = || {
        black_box(M::decode(black_box(&bytes[..])).unwrap());
    };
    within &= report(
        max_ratio,
        name,
        "decode",
        compare(rounds, prost_decode, || {
            black_box(codec::decode::<M>(black_box(&bytes), &limits).unwrap());
        }),
    );
    within &= report(
        max_ratio,
        name,
        "ws_decode",
        compare(rounds, prost_decode, || {
            black_box(codec::decode_ws_frame::<M>(black_box(&frame), &limits).unwrap());
        }),
    );
    within
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("ROUNDS is a whole number"))
        .unwrap_or(301);
    let max_ratio: f64 = std::env::args()
        .nth(2)
        .map(|s| s.parse().expect("MAX_RATIO is a number"))
        .unwrap_or(f64::INFINITY);
    let mut within = measure(rounds, max_ratio, "heartbeat", &messages::heartbeat());
    within &= measure(
        rounds,
        max_ratio,
        "full_status",
        &messages::full_status_report(50, 20),
    );
    for count in [1, 20, 1_000] {
        within &= measure(
            rounds,
            max_ratio,
            &format!("packages_available_{count}"),
            &messages::offer_message(count),
        );
    }
    if !within {
        println!("FAIL: a ratio is over {max_ratio}");
        std::process::exit(1);
    }
}
