//! Agent-side sync planning on an arbitrary offer and an arbitrary installed set.
//!
//! `plan_sync` never panics, and every offered package is accounted for exactly once: either
//! planned under its own key or rejected. Everything else in the plan is a removal of an
//! installed package the offer no longer names. Actions agree with what is installed.
#![no_main]

use std::collections::BTreeSet;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use opamp_packages::{
    ContentHash, InstalledPackage, InstalledPackages, PackageAction, PackageKey, plan_sync,
};
use opamp_proto::v1;
use prost::Message;

/// An installed package; its name is usually one of the offered ones, so the planner's
/// upgrade, downgrade, replace and re-download paths are reached.
#[derive(Debug, Arbitrary)]
struct Installed {
    name: InstalledName,
    version: String,
    package_hash: Vec<u8>,
    content_hash: [u8; 32],
}

#[derive(Debug, Arbitrary)]
enum InstalledName {
    /// The n-th offered key (modulo their number).
    Offered(u8),
    Other(String),
}

#[derive(Debug, Arbitrary)]
struct Agent {
    last_applied_all_packages_hash: Option<Vec<u8>>,
    /// Take the offer's own `all_packages_hash` as the last applied one.
    offer_already_applied: bool,
    installed: Vec<Installed>,
}

/// Input layout: a 2-byte big-endian length `n`, `n` bytes of protobuf `PackagesAvailable`
/// (so real encoded offers are good seeds), then the agent's state in `arbitrary` form.
fn split(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    Some(rest.split_at(len))
}

fuzz_target!(|data: &[u8]| {
    let Some((offer, agent)) = split(data) else {
        return;
    };
    let Ok(offer) = v1::PackagesAvailable::decode(offer) else {
        return;
    };
    let Ok(agent) = Agent::arbitrary_take_rest(Unstructured::new(agent)) else {
        return;
    };
    let mut offered_keys: Vec<&String> = offer.packages.keys().collect();
    offered_keys.sort();
    let mut installed = InstalledPackages::new();
    for package in agent.installed {
        let name = match package.name {
            InstalledName::Offered(n) if !offered_keys.is_empty() => {
                offered_keys[usize::from(n) % offered_keys.len()].clone()
            }
            InstalledName::Offered(_) => continue,
            InstalledName::Other(name) => name,
        };
        let Ok(key) = PackageKey::parse(&name) else {
            continue;
        };
        installed = installed.with_package(
            key,
            InstalledPackage::new(
                package.version,
                package.package_hash,
                ContentHash::from(package.content_hash),
            ),
        );
    }
    if agent.offer_already_applied {
        installed = installed.with_last_applied_all_packages_hash(offer.all_packages_hash.clone());
    } else if let Some(hash) = agent.last_applied_all_packages_hash {
        installed = installed.with_last_applied_all_packages_hash(hash);
    }

    let plan = plan_sync(&offer, &installed);
    assert_eq!(
        plan.offered_all_packages_hash(),
        offer.all_packages_hash.as_slice()
    );
    if plan.is_already_applied() {
        assert!(!offer.all_packages_hash.is_empty());
        assert_eq!(
            installed.last_applied_all_packages_hash(),
            Some(offer.all_packages_hash.as_slice())
        );
        assert!(plan.packages().is_empty() && plan.rejected().is_empty());
        return;
    }

    let mut planned_keys = BTreeSet::new();
    let mut planned_offered = 0;
    for planned in plan.packages() {
        let wire_key = planned.key.wire_key();
        assert!(planned_keys.insert(wire_key), "{wire_key:?} planned twice");
        let offered = offer.packages.get(wire_key);
        let has = installed.get(&planned.key);
        match &planned.action {
            PackageAction::Remove { installed_version } => {
                assert!(offered.is_none(), "removing {wire_key:?}, which is offered");
                assert_eq!(Some(installed_version.as_str()), has.map(|h| h.version()));
            }
            action => {
                let offered = offered.expect("a planned non-removal is offered");
                planned_offered += 1;
                let target = action.target().expect("non-removal has a target");
                assert_eq!(target.version, offered.version);
                let file = offered.file.as_ref().expect("planned package has a file");
                assert_eq!(target.content_hash.as_bytes()[..], file.content_hash[..]);
                match action {
                    PackageAction::Install { .. } => assert!(has.is_none()),
                    PackageAction::Upgrade { from, .. }
                    | PackageAction::Downgrade { from, .. }
                    | PackageAction::Replace { from, .. } => {
                        assert_eq!(Some(from.as_str()), has.map(|h| h.version()));
                    }
                    PackageAction::Redownload { .. } | PackageAction::NothingToDo { .. } => {
                        assert!(has.is_some());
                    }
                    _ => {}
                }
                if let PackageKey::Named(name) = &planned.key {
                    let text = name.as_str();
                    assert!(!text.contains(['/', '\\', '\0']) && text != "." && text != "..");
                }
            }
        }
    }
    assert_eq!(
        planned_offered + plan.rejected().len(),
        offer.packages.len(),
        "every offered package is planned or rejected, once"
    );
    for rejected in plan.rejected() {
        assert!(
            offer
                .packages
                .keys()
                .any(|key| key.starts_with(&rejected.wire_key)
                    && !planned_keys.contains(key.as_str())),
            "rejected {:?} is not an unplanned offered key",
            rejected.wire_key
        );
    }
});
