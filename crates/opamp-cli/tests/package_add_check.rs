//! `opamp package add` is refused at once when the signature does not fit: a statement for
//! another version or file, or (server started with `--release-key`) a key it does not trust.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Workdir, start_server};

fn sign(work: &Workdir, file: &str, key: &str, version: &str, out: &str) {
    work.opamp(&[
        "package",
        "sign",
        file,
        "--key",
        key,
        "--name",
        "otelcol",
        "--version",
        version,
        "--out",
        out,
    ])
    .expect_code(0);
}

#[test]
fn package_add_refuses_signatures_that_do_not_fit_the_file_or_the_servers_keys() {
    let work = Workdir::new();
    work.keygen("keys", &[]);
    work.keygen("other", &[]);
    let (_server, admin, _) = start_server(&work, "secret", &["--release-key", "keys/release.pub"]);
    work.write("otelcol-1.1.0", b"collector 1.1.0");
    work.write("otelcol-1.1.1", b"collector 1.1.1");
    sign(
        &work,
        "otelcol-1.1.0",
        "keys/release.key",
        "1.1.0",
        "good.sig",
    );
    sign(
        &work,
        "otelcol-1.1.0",
        "keys/release.key",
        "1.2.0",
        "other-version.sig",
    );
    sign(
        &work,
        "otelcol-1.1.1",
        "keys/release.key",
        "1.1.0",
        "other-file.sig",
    );
    sign(
        &work,
        "otelcol-1.1.0",
        "other/release.key",
        "1.1.0",
        "other-key.sig",
    );
    let add = |signature: &str| {
        work.opamp(&[
            "package",
            "add",
            "otelcol-1.1.0",
            "--name",
            "otelcol",
            "--version",
            "1.1.0",
            "--signature",
            signature,
            "--server",
            &admin,
            "--token",
            "secret",
        ])
    };
    for (signature, reason) in [
        (
            "other-version.sig",
            "the signature is for version \"1.2.0\", not \"1.1.0\"",
        ),
        ("other-file.sig", "the signature is for a file with sha256"),
        (
            "other-key.sig",
            "which is not one of this server's release keys",
        ),
    ] {
        let refused = add(signature).expect_code(1);
        assert!(refused.stderr.contains("400"), "{}", refused.stderr);
        assert!(
            refused.stderr.contains(reason),
            "{reason}: {}",
            refused.stderr
        );
    }
    let listed = work
        .opamp(&["package", "list", "--server", &admin, "--token", "secret"])
        .expect_code(0);
    assert_eq!(
        listed.stdout.lines().count(),
        1,
        "nothing was kept:\n{}",
        listed.stdout
    );
    let added = add("good.sig").expect_code(0);
    assert!(
        added.stdout.starts_with("added otelcol 1.1.0"),
        "{}",
        added.stdout
    );
}
