//! Cost of `all_packages_hash` (and of building a whole offer) as the package count grows.
//!
//! The aggregate hashes every package (one SHA-256 over a few hundred bytes each), sorts the
//! names and hashes the sorted list, so the time should grow about linearly (n log n for the
//! sort, negligible at these sizes).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use opamp_packages::{ContentHash, OfferedPackage, PackageName, PackageOffer, all_packages_hash};

/// An offer shaped like a real one: one top-level collector and `count - 1` addons, each with a
/// URL, a content hash, a 256-byte signature and one download header.
fn offer_with(count: usize) -> PackageOffer {
    let mut offer = PackageOffer::new();
    for index in 0..count {
        let name = PackageName::new(format!("package-{index:05}")).expect("valid name");
        let url = format!("https://downloads.example/packages/{name}/1.2.3/{name}.tar.gz");
        let content = ContentHash::of(name.as_str().as_bytes());
        let package = if index == 0 {
            OfferedPackage::top_level(name, "1.2.3", url, content)
        } else {
            OfferedPackage::addon(name, "1.2.3", url, content)
        };
        offer
            .add(
                package
                    .with_signature(vec![0x5a; 256])
                    .with_header("Authorization", "Bearer token"),
            )
            .expect("unique names");
    }
    offer
}

fn bench_all_packages_hash(c: &mut Criterion) {
    let mut group = c.benchmark_group("all_packages_hash");
    for count in [1usize, 100, 1_000, 10_000] {
        let offer = offer_with(count).build();
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(BenchmarkId::from_parameter(count), &offer, |b, offer| {
            b.iter(|| all_packages_hash(black_box(offer)));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("package_offer_build");
    for count in [1usize, 100, 1_000, 10_000] {
        let offer = offer_with(count);
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(BenchmarkId::from_parameter(count), &offer, |b, offer| {
            b.iter(|| black_box(offer).build());
        });
    }
    group.finish();
}

/// Criterion's macros generate undocumented public functions; keep them in their own module.
mod harness {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::bench_all_packages_hash);
}
criterion_main!(harness::benches);
