//! A good neighbour: another agent's programs on every hook limiter uses, attached before and
//! after limiter's, survive limiter's start, crash and restart, upgrade-style restart and
//! `--cleanup` untouched (same links, same programs, same order around ours), and keep running.
//! `limiter doctor` lists them as another agent's.

use std::path::Path;
use std::process::Command;

use limiter_integration_tests::foreign::{CGROUP_HOOKS, ForeignProgram, SK_LOOKUP, effective};
use limiter_integration_tests::{
    BpffsMount, Daemon, Testbed, cgroup2_root, limiter_bin, require_root,
};
use nix::sys::signal::Signal;
use serde_json::Value;

/// One foreign program on each cgroup hook at `cgroup` and on sk_lookup in `netns`.
fn attach_all(cgroup: &Path, netns: &Path, pins: &Path, tag: &str) -> Vec<ForeignProgram> {
    let mut all: Vec<ForeignProgram> = CGROUP_HOOKS
        .iter()
        .enumerate()
        .map(|(i, hook)| {
            ForeignProgram::attach(
                *hook,
                cgroup,
                &format!("other_{tag}_{i}"),
                pins.join(format!("{tag}-{i}")),
            )
        })
        .collect();
    all.push(ForeignProgram::attach(
        SK_LOOKUP,
        netns,
        &format!("other_{tag}_sk"),
        pins.join(format!("{tag}-sk")),
    ));
    all
}

/// Every foreign program is still pinned and attached, in the order it had around ours, and
/// runs: traffic that crosses each hook raises every counter.
#[track_caller]
fn check_intact(when: &str, bed: &Testbed, foreign: &[ForeignProgram], cgroup: &Path) {
    for f in foreign {
        assert!(
            f.link_intact(),
            "{when}: the foreign link {} is gone",
            f.pin.display()
        );
        let target = if f.hook.name == SK_LOOKUP.name {
            bed.pod(2).ns().path()
        } else {
            cgroup.to_path_buf()
        };
        assert!(
            effective(f.hook, &target).contains(&f.prog_id),
            "{when}: the foreign program {} no longer runs on {}",
            f.prog_id,
            f.hook.name
        );
    }
    let before: Vec<u64> = foreign.iter().map(ForeignProgram::runs).collect();
    // One IPv4 and one IPv6 connection from pod 1 to pod 2: connect4/6, sock_ops, both
    // cgroup_skb directions and the server pod's sk_lookup all run.
    let v4 = bed.pod(2).addr_v4(7100);
    let v6 = bed.pod(2).addr_v6(7101);
    let _s4 = bed.pod(2).hold_server(v4);
    let _s6 = bed.pod(2).hold_server(v6);
    let held = [bed.pod(1).connect_all(v4, 1), bed.pod(1).connect_all(v6, 1)];
    for (f, was) in foreign.iter().zip(before) {
        assert!(
            f.runs() > was,
            "{when}: the foreign {} program did not run (count {was})",
            f.hook.name
        );
    }
    drop(held);
}

#[test]
fn foreign_programs_survive_start_restart_upgrade_and_cleanup() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let cgroup = cgroup2_root();
    let netns = bed.pod(2).ns().path();
    let pins_dir = tempfile::tempdir().expect("temp dir");
    let pins = BpffsMount::new(pins_dir.path().join("bpffs"));
    let before = attach_all(&cgroup, &netns, pins.path(), "before");

    let mut daemon = Daemon::start();
    let status = daemon.status_json();
    assert_eq!(
        status["daemon"]["dataplane"]["cgroup"],
        Value::from(cgroup.display().to_string()),
        "the daemon governs another cgroup than the foreign programs'"
    );
    let after = attach_all(&cgroup, &netns, pins.path(), "after");
    // Ours run between the two foreign sets, on every cgroup hook.
    let doctor = Command::new(limiter_bin())
        .args(["doctor", "-o", "json", "--bpffs"])
        .arg(daemon.bpffs())
        .output()
        .expect("run limiter doctor");
    let report: Value = serde_json::from_slice(&doctor.stdout).expect("doctor JSON");
    for hook in CGROUP_HOOKS {
        let on_hook: Vec<&Value> = report["neighbours"]
            .as_array()
            .expect("neighbours")
            .iter()
            .filter(|p| p["hook"] == hook.name)
            .collect();
        let position = |pred: &dyn Fn(&Value) -> bool| {
            on_hook
                .iter()
                .position(|p| pred(p))
                .unwrap_or_else(|| panic!("{}: not listed: {report:#}", hook.name))
        };
        let ours = position(&|p| p["ours"] == true);
        let first = position(&|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("other_before"))
        });
        let last = position(&|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("other_after"))
        });
        assert!(
            first < ours && ours < last,
            "{}: order before/ours/after is {first}/{ours}/{last}: {report:#}",
            hook.name
        );
    }
    let others = report["neighbours"]
        .as_array()
        .expect("neighbours")
        .iter()
        .filter(|p| p["ours"] == false)
        .count();
    assert!(
        others >= 2 * CGROUP_HOOKS.len(),
        "doctor lists the foreign programs on the cgroup hooks: {report:#}"
    );

    check_intact("after our start", &bed, &before, &cgroup);
    check_intact("after our start", &bed, &after, &cgroup);
    daemon.crash_and_restart(|| {});
    check_intact("after kill -9 and restart", &bed, &before, &cgroup);
    check_intact("after kill -9 and restart", &bed, &after, &cgroup);
    daemon.restart_after(Signal::SIGTERM, || {});
    check_intact("after an orderly restart (upgrade)", &bed, &before, &cgroup);
    check_intact("after an orderly restart (upgrade)", &bed, &after, &cgroup);

    // Stopped, then uninstalled: ours go, theirs stay and run (checked while no daemon runs;
    // the restart after it attaches ours again, behind theirs).
    let (bpffs, socket) = (daemon.bpffs().to_path_buf(), daemon.socket().to_path_buf());
    daemon.restart_after(Signal::SIGTERM, || {
        let cleanup = Command::new(limiter_bin())
            .args(["daemon", "--cleanup", "--bpffs"])
            .arg(&bpffs)
            .arg("--socket")
            .arg(&socket)
            .output()
            .expect("run limiter daemon --cleanup");
        assert!(cleanup.status.success(), "cleanup: {cleanup:?}");
        assert!(
            !bpffs.join("limiter").exists(),
            "cleanup left limiter's pins"
        );
        check_intact("after --cleanup", &bed, &before, &cgroup);
        check_intact("after --cleanup", &bed, &after, &cgroup);
    });
    check_intact("after a start following --cleanup", &bed, &before, &cgroup);
    check_intact("after a start following --cleanup", &bed, &after, &cgroup);
}
