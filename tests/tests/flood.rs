//! A SYN flood from spoofed sources at a limited destination: rules and established counts
//! come through intact, no slot leaks once the flood stops, and the kernel maps stay within
//! the bound documented in docs/operations.md.

use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use limiter_common::names::pins;
use limiter_integration_tests::status::counter;
use limiter_integration_tests::{Daemon, Testbed, require_root, wait_until};
use serde_json::Value;

/// docs/operations.md: all of limiter's maps together, at their documented capacities.
const MAP_MEMORY_BOUND: u64 = 160 * 1024 * 1024;
const FLOOD_SECONDS: &str = "5";

/// Kernel memory of every map pinned under `<bpffs>/limiter/maps`, by name.
fn map_memory(bpffs: &Path) -> Vec<(String, u64)> {
    let dir = bpffs.join("limiter").join(pins::MAPS_DIR);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("list pinned maps") {
        let path = entry.expect("map pin").path();
        let shown = Command::new("bpftool")
            .args(["-j", "map", "show", "pinned"])
            .arg(&path)
            .output()
            .expect("run bpftool");
        assert!(
            shown.status.success(),
            "bpftool map show {}",
            path.display()
        );
        let info: Value = serde_json::from_slice(&shown.stdout).expect("bpftool JSON");
        let bytes = info["bytes_memlock"].as_u64().expect("bytes_memlock");
        out.push((path.file_name().unwrap().to_string_lossy().into(), bytes));
    }
    out
}

#[test]
fn spoofed_syn_flood_leaves_rules_counts_and_memory_intact() {
    let _root = require_root();
    let bed = Testbed::new(3);
    let (client, server, flooder) = (bed.pod(1), bed.pod(2), bed.pod(3));
    let dest = server.addr_v4(8080);
    let _srv = server.echo_server(dest);
    let daemon = Daemon::start();
    daemon.set(
        dest,
        &[
            "--max-connections",
            "10",
            "--per-source",
            "5",
            "--side",
            "server",
        ],
    );
    let rules_before = daemon.list_json();
    let mut held = client.connect_all(dest, 3);
    daemon.wait_for_dest(dest, Duration::from_secs(5), "3 established", |d| {
        counter(d, "inbound", "active") == 3
    });

    // Bounded by `timeout`; the sources are random, the replies die in the node namespace,
    // which has no route out of the testbed.
    let flood = flooder.ns().output(
        "timeout",
        [
            FLOOD_SECONDS,
            "hping3",
            "-S",
            "--flood",
            "--rand-source",
            "-p",
            "8080",
            &server.v4().to_string(),
        ],
    );
    let flood_log = String::from_utf8_lossy(&flood.stderr).to_string();
    let d = daemon.dest_status(dest);
    let refused = counter(&d, "inbound", "cx_overflow_total");
    println!("flood: {refused} SYNs refused over the limit; hping3: {flood_log}");
    assert!(refused > 1000, "the flood reached the limiter: {d}");

    assert_eq!(
        daemon.list_json(),
        rules_before,
        "rules unchanged by the flood"
    );
    assert_eq!(
        counter(&d, "inbound", "active"),
        3,
        "established count intact: {d}"
    );
    for (i, s) in held.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"x")
            .unwrap_or_else(|e| panic!("held connection {i} after the flood: {e}"));
        let mut b = [0u8; 1];
        s.read_exact(&mut b)
            .unwrap_or_else(|e| panic!("held connection {i} got no echo: {e}"));
    }

    // Reservations taken by spoofed SYNs expire within 3 s: the slots come back.
    assert!(
        wait_until(Duration::from_secs(5), || counter(
            &daemon.dest_status(dest),
            "inbound",
            "pending"
        ) == 0),
        "handshake reservations of the flood expire"
    );
    let more = client.connect_many_timed(dest, 3, Duration::from_secs(3));
    let ok = more.iter().filter(|a| a.result.is_ok()).count();
    assert_eq!(
        ok, 2,
        "the client gets its per-source share (5) back: {more:?}"
    );
    let refused_kind = more
        .iter()
        .filter_map(|a| a.result.as_ref().err())
        .all(|e| e.kind() == ErrorKind::ConnectionRefused);
    assert!(refused_kind, "the 6th from one source is refused: {more:?}");

    let memory = map_memory(daemon.bpffs());
    let total: u64 = memory.iter().map(|(_, b)| b).sum();
    println!("map memory after the flood: {memory:?}, total {total} bytes");
    assert!(
        total <= MAP_MEMORY_BOUND,
        "maps use {total} bytes, above the documented {MAP_MEMORY_BOUND}: {memory:?}"
    );
}
