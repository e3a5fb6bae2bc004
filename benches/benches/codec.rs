//! Cost of `opamp_proto::codec` against plain prost on the same messages, in the same run.
//!
//! Every group is one typical message; its functions are the baseline (`prost_encode`,
//! `prost_decode`: `Message::encode_to_vec` / `Message::decode`) and our layer over it
//! (`codec_encode`, `codec_decode` with the 64 MiB `Limits`, `ws_encode`, `ws_decode` with the
//! OpAMP WebSocket header). Throughput is in messages, so criterion prints messages/s on one
//! core; `benches/scripts/codec_overhead.sh` turns the estimates into overhead ratios.
//!
//! Times are the benchmark thread's CPU time ([`ThreadCpuTime`]), not wall-clock time, so
//! that other jobs on the machine do not decide a few-percent comparison.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_main};
use opamp_benches::cpu_time::ThreadCpuTime;
use opamp_benches::messages;
use opamp_proto::codec::{self, Limits};
use prost::Message;

fn bench_message<M: Message + Default>(c: &mut Criterion<ThreadCpuTime>, name: &str, message: &M) {
    let limits = Limits::default();
    let bytes = message.encode_to_vec();
    let frame = codec::encode_ws_frame(message);
    let mut group = c.benchmark_group(format!("codec/{name}"));
    group.throughput(Throughput::Elements(1));
    group.bench_function("prost_encode", |b| {
        b.iter(|| black_box(message).encode_to_vec());
    });
    group.bench_function("codec_encode", |b| {
        b.iter(|| codec::encode(black_box(message)));
    });
    group.bench_function("ws_encode", |b| {
        b.iter(|| codec::encode_ws_frame(black_box(message)));
    });
    group.bench_function("prost_decode", |b| {
        b.iter(|| M::decode(black_box(&bytes[..])).is_ok());
    });
    group.bench_function("codec_decode", |b| {
        b.iter(|| codec::decode::<M>(black_box(&bytes), &limits).is_ok());
    });
    group.bench_function("ws_decode", |b| {
        b.iter(|| codec::decode_ws_frame::<M>(black_box(&frame), &limits).is_ok());
    });
    group.finish();
}

fn bench_codec(c: &mut Criterion<ThreadCpuTime>) {
    bench_message(c, "heartbeat", &messages::heartbeat());
    bench_message(c, "full_status", &messages::full_status_report(50, 20));
    for count in [1, 20, 1_000] {
        bench_message(
            c,
            &format!("packages_available_{count}"),
            &messages::offer_message(count),
        );
    }
}

/// Criterion's macros generate undocumented public functions; keep them in their own module.
mod harness {
    #![allow(missing_docs)]
    criterion::criterion_group! {
        name = benches;
        config = criterion::Criterion::default()
            .with_measurement(opamp_benches::cpu_time::ThreadCpuTime)
            .sample_size(50);
        targets = super::bench_codec
    }
}
criterion_main!(harness::benches);
