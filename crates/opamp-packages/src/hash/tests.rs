use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

/// The worked example of `docs/hashes.md`.
fn example_collector() -> v1::PackageAvailable {
    v1::PackageAvailable {
        r#type: v1::PackageType::TopLevel.into(),
        version: "0.110.0".into(),
        file: Some(v1::DownloadableFile {
            download_url: "https://dl.example/otelcol".into(),
            content_hash: Sha256::digest(b"otelcol").to_vec(),
            signature: vec![0xAB, 0xCD],
            headers: Some(v1::Headers {
                headers: vec![
                    v1::Header {
                        key: "X-Token".into(),
                        value: "t".into(),
                    },
                    v1::Header {
                        key: "Accept".into(),
                        value: "*/*".into(),
                    },
                ],
            }),
        }),
        hash: Vec::new(),
    }
}

fn example_addon() -> v1::PackageAvailable {
    v1::PackageAvailable {
        r#type: v1::PackageType::Addon.into(),
        version: "1.0.0".into(),
        file: Some(v1::DownloadableFile {
            download_url: "https://dl.example/geoip".into(),
            content_hash: Sha256::digest(b"geoip").to_vec(),
            signature: Vec::new(),
            headers: None,
        }),
        hash: Vec::new(),
    }
}

fn example_offer() -> v1::PackagesAvailable {
    v1::PackagesAvailable {
        packages: HashMap::from([
            ("otelcol".to_owned(), example_collector()),
            ("geoip".to_owned(), example_addon()),
        ]),
        all_packages_hash: Vec::new(),
    }
}

/// The fenced ```hex blocks of `docs/hashes.md`, whitespace removed, keyed by the label on the
/// line `<!-- check: LABEL -->` just before each block. The doc is the source of truth: this
/// test fails if the code and the documented bytes ever disagree.
fn documented_hex() -> HashMap<String, String> {
    let doc = include_str!("../../docs/hashes.md");
    let mut blocks = HashMap::new();
    let mut label: Option<String> = None;
    let mut current: Option<String> = None;
    for line in doc.lines() {
        let trimmed = line.trim();
        if let Some(text) = current.as_mut() {
            if trimmed == "```" {
                let text = std::mem::take(text);
                blocks.insert(label.take().expect("hex block without a check label"), text);
                current = None;
            } else {
                // Each line may end with a `# comment` naming the field.
                let hex_part = trimmed.split('#').next().unwrap_or("");
                text.extend(hex_part.chars().filter(|c| !c.is_whitespace()));
            }
        } else if let Some(rest) = trimmed.strip_prefix("<!-- check: ") {
            label = Some(rest.trim_end_matches("-->").trim().to_owned());
        } else if trimmed == "```hex" {
            current = Some(String::new());
        }
    }
    blocks
}

#[test]
fn doc_worked_example_matches_the_code() {
    let doc = documented_hex();
    let collector = example_collector();
    let offer = example_offer();
    let expected = [
        (
            "collector-input",
            hex::encode(package_hash_input("otelcol", &collector)),
        ),
        (
            "collector-hash",
            hex::encode(package_hash("otelcol", &collector)),
        ),
        (
            "addon-input",
            hex::encode(package_hash_input("geoip", &example_addon())),
        ),
        (
            "addon-hash",
            hex::encode(package_hash("geoip", &example_addon())),
        ),
        (
            "aggregate-input",
            hex::encode(all_packages_hash_input(&offer)),
        ),
        ("aggregate-hash", hex::encode(all_packages_hash(&offer))),
    ];
    for (label, code) in expected {
        let documented = doc
            .get(label)
            .unwrap_or_else(|| panic!("docs/hashes.md has no block labelled {label}"));
        assert_eq!(
            documented, &code,
            "docs/hashes.md block {label} disagrees with the code"
        );
    }
}

#[test]
fn hashes_are_sha256_of_the_documented_inputs() {
    let collector = example_collector();
    let input = package_hash_input("otelcol", &collector);
    assert_eq!(
        package_hash("otelcol", &collector),
        <[u8; 32]>::from(Sha256::digest(&input))
    );
    let offer = example_offer();
    assert_eq!(
        all_packages_hash(&offer),
        <[u8; 32]>::from(Sha256::digest(all_packages_hash_input(&offer)))
    );
}

#[test]
fn package_input_starts_with_length_prefixed_tag_and_name() {
    let input = package_hash_input("ab", &v1::PackageAvailable::default());
    let tag = PACKAGE_HASH_TAG.as_bytes();
    assert_eq!(&input[..8], &(tag.len() as u64).to_be_bytes());
    assert_eq!(&input[8..8 + tag.len()], tag);
    let rest = &input[8 + tag.len()..];
    assert_eq!(&rest[..10], &[0, 0, 0, 0, 0, 0, 0, 2, b'a', b'b']);
    // type 0, then empty version, url, content hash, signature, and zero headers.
    assert_eq!(&rest[10..14], &[0, 0, 0, 0]);
    assert_eq!(&rest[14..], &[0u8; 8 * 5][..]);
}

#[test]
fn stored_hash_fields_do_not_feed_the_hashes() {
    let mut offer = example_offer();
    let before = all_packages_hash(&offer);
    offer.all_packages_hash = vec![1; 32];
    if let Some(package) = offer.packages.get_mut("otelcol") {
        package.hash = vec![2; 32];
    }
    assert_eq!(all_packages_hash(&offer), before);
}

#[test]
fn missing_file_hashes_like_an_empty_file() {
    let without = v1::PackageAvailable::default();
    let with_empty = v1::PackageAvailable {
        file: Some(v1::DownloadableFile::default()),
        ..Default::default()
    };
    assert_eq!(package_hash("a", &without), package_hash("a", &with_empty));
}

#[test]
fn header_order_does_not_matter_but_content_does() {
    let mut reordered = example_collector();
    if let Some(headers) = reordered.file.as_mut().and_then(|f| f.headers.as_mut()) {
        headers.headers.reverse();
    }
    assert_eq!(
        package_hash("otelcol", &reordered),
        package_hash("otelcol", &example_collector())
    );
}

#[test]
fn field_boundaries_cannot_be_shifted() {
    // Same concatenated bytes, different split between version and URL.
    let split = |version: &str, url: &str| v1::PackageAvailable {
        version: version.into(),
        file: Some(v1::DownloadableFile {
            download_url: url.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_ne!(
        package_hash("a", &split("1.0", "x")),
        package_hash("a", &split("1.0x", ""))
    );
    // And between a header key and value.
    let header = |key: &str, value: &str| v1::PackageAvailable {
        file: Some(v1::DownloadableFile {
            headers: Some(v1::Headers {
                headers: vec![v1::Header {
                    key: key.into(),
                    value: value.into(),
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_ne!(
        package_hash("a", &header("ab", "c")),
        package_hash("a", &header("a", "bc"))
    );
}

// ---- property tests ----

fn arb_headers() -> impl Strategy<Value = Option<v1::Headers>> {
    prop::option::of(
        prop::collection::vec(("[A-Za-z-]{0,6}", ".{0,6}"), 0..4).prop_map(|pairs| v1::Headers {
            headers: pairs
                .into_iter()
                .map(|(key, value)| v1::Header { key, value })
                .collect(),
        }),
    )
}

fn arb_package() -> impl Strategy<Value = v1::PackageAvailable> {
    (
        0..3i32,
        ".{0,8}",
        ".{0,12}",
        prop::collection::vec(any::<u8>(), 0..33),
        prop::collection::vec(any::<u8>(), 0..8),
        arb_headers(),
    )
        .prop_map(|(kind, version, url, content_hash, signature, headers)| {
            v1::PackageAvailable {
                r#type: kind,
                version,
                file: Some(v1::DownloadableFile {
                    download_url: url,
                    content_hash,
                    signature,
                    headers,
                }),
                hash: Vec::new(),
            }
        })
}

fn arb_packages() -> impl Strategy<Value = Vec<(String, v1::PackageAvailable)>> {
    prop::collection::btree_map(".{0,8}", arb_package(), 0..8)
        .prop_map(|map| map.into_iter().collect())
}

/// One single-field change to a package, chosen by `which`.
fn mutate(package: &mut v1::PackageAvailable, which: u8, salt: u8) {
    let file = package.file.get_or_insert_with(Default::default);
    match which % 7 {
        0 => package.r#type = package.r#type.wrapping_add(1),
        1 => package.version.push(char::from(b'a' + salt % 26)),
        2 => file.download_url.push('/'),
        3 => file.content_hash.push(salt),
        4 => match file.signature.first_mut() {
            Some(byte) => *byte ^= salt | 1,
            None => file.signature.push(salt),
        },
        5 => file
            .headers
            .get_or_insert_with(Default::default)
            .headers
            .push(v1::Header {
                key: "k".into(),
                value: salt.to_string(),
            }),
        _ => match file.headers.as_mut().and_then(|h| h.headers.first_mut()) {
            Some(header) => header.value.push('!'),
            None => file.download_url.push('?'),
        },
    }
}

proptest! {
    #[test]
    fn aggregate_is_independent_of_insertion_order(
        packages in arb_packages(),
        rotation in 0usize..8,
    ) {
        let forward: HashMap<_, _> = packages.iter().cloned().collect();
        let mut rotated_list = packages.clone();
        if !rotated_list.is_empty() {
            let by = rotation % rotated_list.len();
            rotated_list.rotate_left(by);
        }
        rotated_list.reverse();
        let mut backward = HashMap::with_capacity(1);
        for (name, package) in rotated_list {
            backward.insert(name, package);
        }
        let a = v1::PackagesAvailable { packages: forward, all_packages_hash: Vec::new() };
        let b = v1::PackagesAvailable { packages: backward, all_packages_hash: Vec::new() };
        prop_assert_eq!(all_packages_hash(&a), all_packages_hash(&b));
        prop_assert_eq!(all_packages_hash_input(&a), all_packages_hash_input(&b));
    }

    #[test]
    fn any_single_field_change_changes_the_package_hash(
        name in ".{0,8}",
        package in arb_package(),
        which in any::<u8>(),
        salt in any::<u8>(),
    ) {
        let mut changed = package.clone();
        mutate(&mut changed, which, salt);
        prop_assert_ne!(package_hash(&name, &package), package_hash(&name, &changed));
    }

    #[test]
    fn renaming_changes_both_hashes(
        name in ".{0,8}",
        package in arb_package(),
    ) {
        let renamed = format!("{name}x");
        prop_assert_ne!(package_hash(&name, &package), package_hash(&renamed, &package));
        let one = v1::PackagesAvailable {
            packages: HashMap::from([(name, package.clone())]),
            all_packages_hash: Vec::new(),
        };
        let other = v1::PackagesAvailable {
            packages: HashMap::from([(renamed, package)]),
            all_packages_hash: Vec::new(),
        };
        prop_assert_ne!(all_packages_hash(&one), all_packages_hash(&other));
    }

    #[test]
    fn any_change_to_one_package_changes_the_aggregate(
        packages in arb_packages().prop_filter("needs a package", |p| !p.is_empty()),
        pick in any::<prop::sample::Index>(),
        which in any::<u8>(),
        salt in any::<u8>(),
    ) {
        let before = v1::PackagesAvailable {
            packages: packages.iter().cloned().collect(),
            all_packages_hash: Vec::new(),
        };
        let mut after = before.clone();
        let (name, _) = &packages[pick.index(packages.len())];
        if let Some(package) = after.packages.get_mut(name) {
            mutate(package, which, salt);
        }
        prop_assert_ne!(all_packages_hash(&before), all_packages_hash(&after));
    }

    #[test]
    fn adding_or_removing_a_package_changes_the_aggregate(
        packages in arb_packages().prop_filter("needs a package", |p| !p.is_empty()),
        pick in any::<prop::sample::Index>(),
    ) {
        let full = v1::PackagesAvailable {
            packages: packages.iter().cloned().collect(),
            all_packages_hash: Vec::new(),
        };
        let mut fewer = full.clone();
        fewer.packages.remove(&packages[pick.index(packages.len())].0);
        prop_assert_ne!(all_packages_hash(&full), all_packages_hash(&fewer));
    }
}
