//! Throughput of opamp-verify's streaming SHA-256 (`hash_reader`, `HashingWriter`).
//!
//! The bar (issue 4) is at least 0.9x `openssl dgst -sha256` on the same machine; that
//! comparison is `benches/scripts/hash_vs_openssl.sh`. This bench tracks the in-memory rate
//! so regressions in buffer handling show up without the 1 GiB file.

use std::hint::black_box;
use std::io::Write;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use opamp_verify::{HashingWriter, hash_reader};

fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn bench_hash_reader(c: &mut Criterion) {
    let mut group = c.benchmark_group("sha256_hash_reader");
    for len in [4 << 10, 1 << 20, 64 << 20] {
        let data = payload(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(len), &data, |b, data| {
            b.iter(|| hash_reader(black_box(&data[..]), u64::MAX).map(|h| h.hash()));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("sha256_hashing_writer");
    let len = 64 << 20;
    let data = payload(len);
    group.throughput(Throughput::Bytes(len as u64));
    group.bench_function(BenchmarkId::from_parameter(len), |b| {
        b.iter(|| {
            let mut writer = HashingWriter::new(std::io::sink(), u64::MAX);
            // 256 KiB writes, the size of a typical HTTP body chunk buffer.
            for chunk in black_box(&data).chunks(256 << 10) {
                writer.write_all(chunk).map_err(|e| e.to_string())?;
            }
            writer
                .finish()
                .map(|(_, h)| h.hash())
                .map_err(|e| e.to_string())
        });
    });
    group.finish();
}

/// Criterion's macros generate undocumented public functions; keep them in their own module.
mod harness {
    #![allow(missing_docs)]
    criterion::criterion_group! {
        name = benches;
        config = criterion::Criterion::default().sample_size(20);
        targets = super::bench_hash_reader
    }
}
criterion_main!(harness::benches);
