//! Verdicts without a network: the daemon's own programs, found through its pinned links, run
//! by the kernel on crafted input (BPF_PROG_TEST_RUN), one path each. They run in a second and
//! name the path that broke; the namespace tests still prove the same paths end to end.
//!
//! sk_lookup takes every path of a server-side decision. cgroup_skb runs with a dummy socket
//! that is no listener, so only its pass-through path can be checked here; connect4/6
//! (cgroup sock_addr) and sock_ops have no BPF_PROG_TEST_RUN in the kernel at all.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use limiter_common::names::pins;
use limiter_integration_tests::bpf;
use limiter_integration_tests::status::{find_destination, refused};
use limiter_integration_tests::{Daemon, require_root};

const SK_PASS: u32 = 1;
const SK_DROP: u32 = 0;
const TCP: i32 = libc::IPPROTO_TCP;

/// The program behind the first pinned link whose name starts with `prefix`.
fn program(daemon: &Daemon, prefix: &str) -> OwnedFd {
    let links = daemon.bpffs().join("limiter").join(pins::LINKS_DIR);
    let pin = std::fs::read_dir(&links)
        .expect("the daemon's links folder")
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .unwrap_or_else(|| panic!("no pinned link {prefix}* in {}", links.display()));
    bpf::prog_of_pinned_link(&pin.path()).expect("the program of a pinned link")
}

/// What `limiter_lookup` says to a packet of `protocol` from `from` to `to`.
fn lookup(prog: &OwnedFd, from: &str, to: &str, protocol: i32) -> u32 {
    let ctx = bpf::sk_lookup(from.parse().unwrap(), to.parse().unwrap(), protocol);
    bpf::test_run(prog, &[], &ctx, 1)
        .expect("BPF_PROG_TEST_RUN of sk_lookup")
        .retval
}

fn refusals(daemon: &Daemon, dest: &str, reason: &str, action: &str) -> u64 {
    let status = daemon.status_json();
    let dest: SocketAddr = dest.parse().unwrap();
    let entry = find_destination(&status, dest).unwrap_or_else(|| panic!("{dest} in {status}"));
    refused(entry, "inbound", reason, action)
}

#[test]
fn sk_lookup_verdict_on_every_server_side_path() {
    let _root = require_root();
    let daemon = Daemon::start();
    let (limited, limited6, rated, per_source, dry, dropped) = (
        "192.0.2.10:8080",
        "[2001:db8::10]:8080",
        "192.0.2.11:8080",
        "192.0.2.12:8080",
        "192.0.2.13:8080",
        "192.0.2.14:8080",
    );
    daemon.set(limited, &["--max-connections", "1", "--side", "server"]);
    daemon.set(limited6, &["--max-connections", "1", "--side", "server"]);
    let rate = [
        "--max-connections",
        "100",
        "--syn-rate",
        "1",
        "--side",
        "server",
    ];
    daemon.set(rated, &rate);
    let ps = ["--max-connections", "100", "--per-source", "1"];
    daemon.set(per_source, &[&ps[..], &["--side", "server"]].concat());
    let dr = ["--max-connections", "1", "--dry-run", "--side", "server"];
    daemon.set(dry, &dr);
    let dm = [
        "--max-connections",
        "1",
        "--mode",
        "drop",
        "--side",
        "server",
    ];
    daemon.set(dropped, &dm);
    let prog = program(&daemon, pins::SK_LOOKUP_PREFIX);
    let a = |port: u16| format!("198.51.100.1:{port}");
    let b = |port: u16| format!("198.51.100.2:{port}");

    // No rule for the destination, or not TCP: passed untouched.
    assert_eq!(lookup(&prog, &a(40000), "192.0.2.99:8080", TCP), SK_PASS);
    let udp = libc::IPPROTO_UDP;
    assert_eq!(lookup(&prog, &a(40000), limited, udp), SK_PASS, "UDP");

    // A limit of 1: the first SYN takes the slot, a second flow is refused (the caller gets a
    // RST), and the first SYN sent again keeps its reservation.
    assert_eq!(lookup(&prog, &a(40001), limited, TCP), SK_PASS, "admitted");
    assert_eq!(
        lookup(&prog, &a(40002), limited, TCP),
        SK_DROP,
        "over the limit"
    );
    let again = lookup(&prog, &a(40001), limited, TCP);
    assert_eq!(again, SK_PASS, "a retransmitted SYN of an admitted flow");
    assert_eq!(refusals(&daemon, limited, "limit", "reject"), 1);

    // The same over IPv6.
    let a6 = |port: u16| format!("[2001:db8::1:1]:{port}");
    assert_eq!(lookup(&prog, &a6(40001), limited6, TCP), SK_PASS);
    assert_eq!(lookup(&prog, &a6(40002), limited6, TCP), SK_DROP);
    assert_eq!(refusals(&daemon, limited6, "limit", "reject"), 1);

    // A SYN rate of 1/s, burst 1: a burst of B admits B + 1 at once (GCRA's tolerance,
    // docs/enforcement.md), then the next SYN within the second is refused for its rate.
    assert_eq!(lookup(&prog, &a(40001), rated, TCP), SK_PASS);
    assert_eq!(lookup(&prog, &a(40002), rated, TCP), SK_PASS);
    assert_eq!(lookup(&prog, &a(40003), rated, TCP), SK_DROP);
    assert_eq!(refusals(&daemon, rated, "rate", "reject"), 1);

    // One connection per source: the source's second is refused, another source's admitted.
    assert_eq!(lookup(&prog, &a(40001), per_source, TCP), SK_PASS);
    assert_eq!(lookup(&prog, &a(40002), per_source, TCP), SK_DROP);
    assert_eq!(lookup(&prog, &b(40001), per_source, TCP), SK_PASS);
    assert_eq!(refusals(&daemon, per_source, "per_source", "reject"), 1);

    // A dry run refuses nothing and counts what it would have refused.
    assert_eq!(lookup(&prog, &a(40001), dry, TCP), SK_PASS);
    assert_eq!(lookup(&prog, &a(40002), dry, TCP), SK_PASS, "dry run");
    assert_eq!(refusals(&daemon, dry, "limit", "dry_run"), 1);
    assert_eq!(refusals(&daemon, dry, "limit", "reject"), 0);

    // Drop mode is decided where the SYN can be discarded silently (cgroup_skb): sk_lookup
    // lets every SYN find its listener.
    for port in [40001, 40002, 40003] {
        assert_eq!(lookup(&prog, &a(port), dropped, TCP), SK_PASS, "drop mode");
    }
    assert_eq!(refusals(&daemon, dropped, "limit", "drop"), 0);
}

#[test]
fn cgroup_skb_passes_packets_of_sockets_that_are_not_listeners() {
    let _root = require_root();
    let daemon = Daemon::start();
    let dest = "192.0.2.20:8080";
    daemon.set(
        dest,
        &["--max-connections", "1", "--mode", "drop", "--side", "both"],
    );
    let syn = bpf::syn_frame("198.51.100.1:40001".parse().unwrap(), dest.parse().unwrap());
    for prefix in [pins::CGROUP_INGRESS, pins::CGROUP_EGRESS] {
        let prog = program(&daemon, prefix);
        for _ in 0..3 {
            let run = bpf::test_run(&prog, &syn, &[], 1).expect("BPF_PROG_TEST_RUN of cgroup_skb");
            assert_eq!(run.retval, 1, "{prefix}: the test socket is no listener");
        }
    }
}
