//! The cgroup readers on fixture trees of every layout.

use std::error::Error as _;
use std::path::Path;

use super::fixture::{PRESSURE, Tree, v1_cpu_stat, v2_cpu_stat};
use super::*;

const CG: &str = "kubepods/burstable/pod123/ctr";

fn source(t: &Tree) -> CpuSource {
    CpuSource::cgroup(t.root(), Path::new(CG), 8).unwrap_or_else(|e| panic!("resolve {CG}: {e}"))
}

fn read(t: &Tree) -> CpuReading {
    source(t)
        .read()
        .unwrap_or_else(|e| panic!("read {CG}: {e}"))
}

fn v2_tree(cpu_max: Option<&str>) -> Tree {
    let t = Tree::new();
    t.file("cgroup.controllers", "cpuset cpu io memory pids\n");
    t.file(
        &format!("{CG}/cpu.stat"),
        &v2_cpu_stat(4_000_000, 100, 7, 350_000),
    );
    t.file(&format!("{CG}/cpu.pressure"), PRESSURE);
    if let Some(max) = cpu_max {
        t.file(&format!("{CG}/cpu.max"), max);
    }
    t
}

/// This project's build machines: separate `cpu` and `cpuacct` mounts.
fn v1_tree(quota: &str) -> Tree {
    let t = Tree::new();
    t.file(&format!("cpuacct/{CG}/cpuacct.usage"), "4000000000\n");
    t.file(&format!("cpu/{CG}/cpu.cfs_quota_us"), quota);
    t.file(&format!("cpu/{CG}/cpu.cfs_period_us"), "100000\n");
    t.file(
        &format!("cpu/{CG}/cpu.stat"),
        &v1_cpu_stat(100, 7, 350_000_000),
    );
    t
}

#[test]
fn detects_each_layout() {
    assert_eq!(
        CgroupLayout::detect(v2_tree(None).root()).unwrap(),
        CgroupLayout::V2
    );
    let v1 = v1_tree("-1\n");
    assert_eq!(CgroupLayout::detect(v1.root()).unwrap(), CgroupLayout::V1);
    v1.file("unified/cgroup.controllers", "\n");
    assert_eq!(
        CgroupLayout::detect(v1.root()).unwrap(),
        CgroupLayout::Hybrid
    );
    let empty = Tree::new();
    let e = CgroupLayout::detect(empty.root()).unwrap_err();
    assert!(matches!(e, SignalError::NoCgroupFs { .. }), "{e}");
    assert!(
        e.to_string().contains(&empty.root().display().to_string()),
        "{e}"
    );
}

#[test]
fn v2_with_quota() {
    let r = read(&v2_tree(Some("50000 100000\n")));
    assert_eq!(r.usage_ns, 4_000_000_000);
    assert_eq!(r.capacity_ns, None);
    assert_eq!(r.quota_cpus, Some(0.5));
    assert_eq!(r.limit_cpus(), 0.5);
    assert_eq!(
        r.throttling,
        Some(Throttling {
            nr_periods: 100,
            nr_throttled: 7,
            throttled_ns: 350_000_000
        })
    );
    assert_eq!(r.pressure_some_avg10, Some(12.5));
}

#[test]
fn v2_without_quota_falls_back_to_the_node_cpus() {
    let r = read(&v2_tree(Some("max 100000\n")));
    assert_eq!(r.quota_cpus, None);
    assert_eq!(r.limit_cpus(), 8.0);
    // No cpu.max at all (the root group has none) is no quota either.
    let r = read(&v2_tree(None));
    assert_eq!(r.limit_cpus(), 8.0);
}

#[test]
fn the_smallest_quota_along_the_ancestors_wins_and_never_exceeds_the_node() {
    let t = v2_tree(Some("400000 100000\n"));
    t.file("kubepods/burstable/pod123/cpu.max", "150000 100000\n");
    assert_eq!(read(&t).limit_cpus(), 1.5);
    let t = v2_tree(Some("1600000 100000\n")); // 16 CPUs of quota on an 8-CPU node
    assert_eq!(read(&t).limit_cpus(), 8.0);
}

#[test]
fn v2_root_group_and_leading_slash() {
    let t = v2_tree(None);
    t.file("cpu.stat", "usage_usec 9\nuser_usec 5\nsystem_usec 4\n");
    let r = CpuSource::cgroup(t.root(), Path::new("/"), 2)
        .unwrap()
        .read()
        .unwrap();
    assert_eq!(
        (r.usage_ns, r.limit_cpus(), r.throttling),
        (9_000, 2.0, None)
    );
    let s = CpuSource::cgroup(t.root(), Path::new(&format!("/{CG}")), 8).unwrap();
    assert_eq!(s.read().unwrap().usage_ns, 4_000_000_000);
}

#[test]
fn v1_separate_cpu_and_cpuacct_with_quota() {
    let r = read(&v1_tree("150000\n"));
    assert_eq!(r.usage_ns, 4_000_000_000);
    assert_eq!(r.quota_cpus, Some(1.5));
    assert_eq!(
        r.throttling,
        Some(Throttling {
            nr_periods: 100,
            nr_throttled: 7,
            throttled_ns: 350_000_000
        })
    );
    assert_eq!(
        r.pressure_some_avg10, None,
        "pure v1 has no per-cgroup pressure"
    );
}

#[test]
fn v1_without_quota_falls_back_to_the_node_cpus() {
    let r = read(&v1_tree("-1\n"));
    assert_eq!((r.quota_cpus, r.limit_cpus()), (None, 8.0));
}

#[test]
fn v1_co_mounted_cpu_cpuacct() {
    let t = Tree::new();
    t.file(&format!("cpu,cpuacct/{CG}/cpuacct.usage"), "123\n");
    t.file(&format!("cpu,cpuacct/{CG}/cpu.cfs_quota_us"), "25000\n");
    t.file(&format!("cpu,cpuacct/{CG}/cpu.cfs_period_us"), "100000\n");
    t.file("cpu,cpuacct/kubepods/cpu.cfs_quota_us", "-1\n");
    t.file("cpu,cpuacct/kubepods/cpu.cfs_period_us", "100000\n");
    let r = read(&t);
    assert_eq!(
        (r.usage_ns, r.quota_cpus, r.throttling),
        (123, Some(0.25), None)
    );
}

#[test]
fn hybrid_reads_v1_cpu_and_unified_pressure() {
    let t = v1_tree("200000\n");
    t.file("unified/cgroup.controllers", "\n");
    assert_eq!(
        read(&t).pressure_some_avg10,
        None,
        "no unified group: no pressure"
    );
    t.file(&format!("unified/{CG}/cpu.pressure"), PRESSURE);
    t.file(&format!("unified/{CG}/cpu.stat"), "usage_usec 1\n");
    let r = read(&t);
    assert_eq!(
        r.usage_ns, 4_000_000_000,
        "usage from v1 cpuacct, not the unified cpu.stat"
    );
    assert_eq!(r.quota_cpus, Some(2.0));
    assert_eq!(r.pressure_some_avg10, Some(12.5));
}

#[test]
fn hybrid_without_a_v1_group_uses_the_unified_usage() {
    let t = Tree::new();
    t.dir("cpu");
    t.dir("cpuacct");
    t.file("unified/cgroup.controllers", "\n");
    t.file(
        &format!("unified/{CG}/cpu.stat"),
        "usage_usec 70\nuser_usec 70\nsystem_usec 0\n",
    );
    let r = read(&t);
    assert_eq!(
        (r.usage_ns, r.limit_cpus(), r.throttling),
        (70_000, 8.0, None)
    );
}

#[test]
fn an_unknown_group_names_where_it_looked() {
    let t = v1_tree("-1\n");
    let e = CpuSource::cgroup(t.root(), Path::new("nope/ctr"), 8).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, SignalError::NoCgroup { .. }), "{msg}");
    assert!(
        msg.contains("cpuacct/nope/ctr") && msg.contains("cpu,cpuacct/nope/ctr"),
        "{msg}"
    );
    let e = CpuSource::cgroup(t.root(), Path::new("a/../../etc"), 8).unwrap_err();
    assert!(matches!(e, SignalError::CgroupPath { .. }), "{e}");
}

#[test]
fn malformed_required_files_are_errors_naming_the_file() {
    let cases: [(&str, &str, &str); 5] = [
        ("cpu.max", "lots 100000\n", "quota"),
        ("cpu.max", "50000 100000 7\n", "QUOTA PERIOD"),
        ("cpu.max", "0 100000\n", "positive"),
        ("cpu.stat", "user_usec 5\n", "no usage_usec"),
        ("cpu.stat", "usage_usec -3\n", "usage_usec"),
    ];
    for (file, text, needle) in cases {
        let t = v2_tree(None);
        let path = t.file(&format!("{CG}/{file}"), text);
        let e = source(&t).read().unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&path.display().to_string()),
            "{file} {text:?}: {msg}"
        );
        assert!(msg.contains(needle), "{file} {text:?}: {msg}");
    }
}

#[test]
fn malformed_v1_files_are_errors_with_a_source() {
    let t = v1_tree("fast\n");
    let e = source(&t).read().unwrap_err();
    assert!(matches!(e, SignalError::Number { .. }), "{e}");
    assert!(e.to_string().contains("cpu.cfs_quota_us"), "{e}");
    assert!(
        e.source().is_some(),
        "the parse error is kept as the source"
    );

    let t = v1_tree("50000\n");
    std::fs::remove_file(t.path(&format!("cpu/{CG}/cpu.cfs_period_us"))).unwrap();
    let e = source(&t).read().unwrap_err();
    assert!(
        matches!(e, SignalError::Read { .. }),
        "a quota without a period: {e}"
    );
    assert!(e.to_string().contains("cpu.cfs_period_us"), "{e}");

    let t = v1_tree("-1\n");
    t.file(&format!("cpuacct/{CG}/cpuacct.usage"), "");
    let e = source(&t).read().unwrap_err();
    assert!(e.to_string().contains("cpuacct.usage"), "{e}");
}

#[test]
fn missing_optional_files_are_none() {
    let t = v1_tree("-1\n");
    std::fs::remove_file(t.path(&format!("cpu/{CG}/cpu.stat"))).unwrap();
    std::fs::remove_file(t.path(&format!("cpu/{CG}/cpu.cfs_quota_us"))).unwrap();
    let r = read(&t);
    assert_eq!((r.throttling, r.quota_cpus), (None, None));
    // A malformed pressure file is not worth failing the CPU check for.
    let t = v2_tree(None);
    t.file(&format!("{CG}/cpu.pressure"), "some avg10=lots\n");
    assert_eq!(read(&t).pressure_some_avg10, None);
}

#[test]
fn a_required_file_that_disappears_is_a_read_error() {
    let t = v2_tree(None);
    let s = source(&t);
    std::fs::remove_file(t.path(&format!("{CG}/cpu.stat"))).unwrap();
    let e = s.read().unwrap_err();
    assert!(matches!(e, SignalError::Read { .. }), "{e}");
    assert!(
        e.to_string().contains("cpu.stat") && e.source().is_some(),
        "{e}"
    );
}
