//! Prints the SHA-256 of each file named on the command line, like `sha256sum`.
//!
//! `cargo run --release -p opamp-verify --example sha256sum -- FILE...`
//! Used by `benches/scripts/hash_vs_openssl.sh` to compare throughput with `openssl dgst`.

use std::fs::File;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        return Err("usage: sha256sum FILE...".into());
    }
    for path in paths {
        let hashed = opamp_verify::hash_reader(File::open(&path)?, u64::MAX)?;
        println!("{}  {path}", hashed.hash());
    }
    Ok(())
}
