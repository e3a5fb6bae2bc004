//! Compiles this crate's `proto/` (the workspace's top-level `proto/` is a link to it) with
//! protox (pure Rust, no `protoc` needed) and prost-build.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script binary reused from another checkout of the same
    // sources must look in this checkout, not in the one it was compiled in.
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let files = [
        proto_root.join("opamp/v1/anyvalue.proto"),
        proto_root.join("opamp/v1/opamp.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&proto_root])?;

    let mut config = prost_build::Config::new();
    // Payloads such as config bodies and package signatures are bytes; keep
    // them as `Vec<u8>` so users can build messages without extra crates.
    if std::env::var_os("CARGO_FEATURE_SERDE").is_some() {
        config.type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]");
        config.type_attribute(".", "#[serde(rename_all = \"camelCase\")]");
    }
    if std::env::var_os("CARGO_FEATURE_ARBITRARY").is_some() {
        config.type_attribute(".", "#[derive(arbitrary::Arbitrary)]");
    }
    config.compile_fds(descriptors)?;
    Ok(())
}
