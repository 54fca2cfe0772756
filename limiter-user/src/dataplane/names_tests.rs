//! The built eBPF object holds exactly the kernel object names of limiter_common::names. The
//! kernel crate cannot use those constants itself (aya's `#[map(name = "...")]` takes a
//! literal; programs and globals are named by their identifiers), so this is what keeps the
//! two in step: a map, program or global renamed or added on one side only fails here, before
//! a daemon could fail to find it or orphan a pin.

use std::collections::{BTreeSet, HashMap};

use aya_obj::Object;
use limiter_common::names::{globals, maps, programs};

fn object() -> Object {
    Object::parse(super::OBJECT).expect("parse the eBPF object built by build.rs")
}

#[test]
fn the_object_has_exactly_the_named_maps() {
    let object = object();
    // Section maps (.rodata, .bss) are the compiler's; AYA_LOG* maps are aya-log's.
    let found: BTreeSet<&str> = object
        .maps
        .keys()
        .map(String::as_str)
        .filter(|name| !name.starts_with('.') && !name.starts_with("AYA_LOG"))
        .collect();
    assert_eq!(found, BTreeSet::from(maps::ALL));
}

#[test]
fn the_object_has_exactly_the_named_programs() {
    let object = object();
    let found: BTreeSet<&str> = object.programs.keys().map(String::as_str).collect();
    assert_eq!(found, BTreeSet::from(programs::ALL));
}

#[test]
fn the_object_has_the_named_globals_as_bytes() {
    for name in globals::ALL {
        // The patch the daemon makes at load time, which fails for a missing symbol or a
        // global of another size.
        let patch = HashMap::from([(name, (&[0u8][..], true))]);
        object()
            .patch_map_data(patch)
            .unwrap_or_else(|e| panic!("global {name}: {e}"));
    }
}
