//! Kubernetes Service-name rules (`svc/NAMESPACE/NAME[:PORT]`, issue #6) end to end: a real
//! daemon resolves them through a fake API server (`kube_api::FakeKubeApi`, plain HTTP on
//! 127.0.0.1, serving kube-runtime's list+watch) and enforces the result on real TCP in a
//! testbed whose Service VIP is iptables DNAT, as kube-proxy makes it.
//!
//! The testbed: pod 1 is a client, pods 2 and 3 serve :8080 behind the VIP 10.96.6.6:80. The API
//! says Service default/web has that ClusterIP and a port `http` (80 -> 8080), and its endpoints
//! are pod 2 on node-a (this node: the daemon runs with `--node-name node-a`) and pod 3 on node-b.
//! Distractors the daemon must not pick up: Service default/other and Service staging/web, whose
//! EndpointSlices put pod 3 on node-a, and web's second port `metrics`.
//!
//! Each change the fake makes is timed until `limiter status` shows its effect; the figures are
//! printed (`--nocapture`) and bounded loosely ([`PROPAGATION`]).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use limiter_integration_tests::kube_api::{Endpoint, FakeKubeApi, Kind, endpoint_slice, service};
use limiter_integration_tests::status::{counter, destinations, find_destination, refused};
use limiter_integration_tests::{Daemon, Pod, Testbed, expect_exactly, require_root, wait_until};
use serde_json::Value;

const SVC: &str = "svc/default/web:http";
const VIP: &str = "10.96.6.6:80";
const TARGET_PORT: u16 = 8080;
const METRICS_PORT: u16 = 9090;
const THIS_NODE: &str = "node-a";
const OTHER_NODE: &str = "node-b";
const SLICE: &str = "web-7xk2p";
/// How long the daemon may take to follow a change of the API (a watch event arrives in
/// milliseconds; this is loose on purpose).
const PROPAGATION: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const COUNTERS: Duration = Duration::from_secs(5);

fn vip() -> SocketAddr {
    VIP.parse().expect("VIP is an address")
}

/// web's EndpointSlice with pod 2 on this node and pod 3 on `pod3_node`.
fn web_slice(pod2: impl Into<IpAddr>, pod3: impl Into<IpAddr>, pod3_node: &str) -> Value {
    endpoint_slice(
        "default",
        SLICE,
        "web",
        &[("http", TARGET_PORT), ("metrics", METRICS_PORT)],
        &[
            Endpoint::ready(pod2, THIS_NODE),
            Endpoint::ready(pod3, pod3_node),
        ],
    )
}

fn web_service() -> Value {
    service(
        "default",
        "web",
        vip().ip(),
        &[
            ("http", vip().port(), TARGET_PORT),
            ("metrics", METRICS_PORT, METRICS_PORT),
        ],
    )
}

/// The address destinations that `limiter status` says were derived from [`SVC`].
fn derived(status: &Value) -> BTreeSet<SocketAddr> {
    destinations(status)
        .iter()
        .filter(|d| d.get("service").and_then(Value::as_str) == Some(SVC))
        .map(|d| {
            let text = d["destination"].as_str().expect("destination is a string");
            text.parse()
                .unwrap_or_else(|e| panic!("derived destination {text}: {e}"))
        })
        .collect()
}

/// The status entry of the `svc/` rule itself.
fn svc_entry(status: &Value) -> Option<&Value> {
    destinations(status)
        .iter()
        .find(|d| d.get("destination").and_then(Value::as_str) == Some(SVC))
}

/// What the `svc/` entry says it resolves to (its `resolved` list).
fn resolved(status: &Value) -> Option<BTreeSet<SocketAddr>> {
    let list = svc_entry(status)?.get("resolved")?.as_array()?;
    Some(
        list.iter()
            .filter_map(Value::as_str)
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|e| panic!("resolved destination {s}: {e}"))
            })
            .collect(),
    )
}

/// Waits until the address rules derived from [`SVC`] are exactly `want` (both in the derived
/// entries and in the `svc/` entry's `resolved`); returns how long after `since` that was seen.
#[track_caller]
fn wait_derived(daemon: &Daemon, want: &[SocketAddr], what: &str, since: Instant) -> Duration {
    let want: BTreeSet<SocketAddr> = want.iter().copied().collect();
    let mut last = Value::Null;
    let ok = wait_until(PROPAGATION * 2, || {
        last = daemon.status_json();
        derived(&last) == want && resolved(&last).as_ref() == Some(&want)
    });
    let elapsed = since.elapsed();
    assert!(
        ok,
        "{what}: expected the rules derived from {SVC} to be {want:?} within {:?}; last status: {last:#}",
        PROPAGATION * 2
    );
    assert!(
        elapsed <= PROPAGATION,
        "{what}: took {elapsed:?}, more than {PROPAGATION:?}"
    );
    println!("{what}: {elapsed:?}");
    elapsed
}

/// `limiter list -o json`'s entry of [`SVC`].
fn listed_svc(daemon: &Daemon) -> Value {
    let list = daemon.list_json();
    let rules = list
        .as_array()
        .or_else(|| list.get("rules").and_then(Value::as_array))
        .unwrap_or_else(|| panic!("`limiter list -o json` is not a list of rules: {list:#}"));
    rules
        .iter()
        .find(|r| r.get("destination").and_then(Value::as_str) == Some(SVC))
        .cloned()
        .unwrap_or_else(|| panic!("{SVC} is not in `limiter list`: {list:#}"))
}

/// Each stream still carries data both ways (the servers echo).
#[track_caller]
fn still_open(label: &str, streams: &mut [TcpStream]) {
    for (i, stream) in streams.iter_mut().enumerate() {
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("set a read timeout");
        let probe = format!("ping {i}");
        let mut echo = vec![0u8; probe.len()];
        let result = stream
            .write_all(probe.as_bytes())
            .and_then(|()| stream.read_exact(&mut echo));
        assert!(
            result.is_ok() && echo == probe.as_bytes(),
            "{label}: connection {i} ({:?}) no longer carries data: {result:?}",
            stream.peer_addr()
        );
    }
}

/// `n` connections from `pod` to `dest` that all connect.
#[track_caller]
fn all_connect(label: &str, pod: &Pod, dest: SocketAddr, n: usize) -> Vec<TcpStream> {
    let attempts = pod.connect_many_timed(dest, n, CONNECT_TIMEOUT);
    let o = limiter_integration_tests::Outcomes::of(&attempts);
    println!("{label}: {}", o.summary());
    assert_eq!(o.ok.len(), n, "{label}: {}", o.summary());
    attempts.into_iter().filter_map(|a| a.result.ok()).collect()
}

/// `n` connections from `pod` to `dest`: exactly `ok` connect, the rest are refused at once.
#[track_caller]
fn exactly(label: &str, pod: &Pod, dest: SocketAddr, n: usize, ok: usize) -> Vec<TcpStream> {
    let attempts = pod.connect_many_timed(dest, n, CONNECT_TIMEOUT);
    expect_exactly(label, &attempts, ok);
    attempts.into_iter().filter_map(|a| a.result.ok()).collect()
}

#[test]
fn service_name_rule_follows_the_api() {
    let _root = require_root();
    let bed = Testbed::new(3);
    let (client, pod2, pod3) = (bed.pod(1), bed.pod(2), bed.pod(3));
    let (backend2, backend3) = (pod2.addr_v4(TARGET_PORT), pod3.addr_v4(TARGET_PORT));
    bed.add_service(vip(), &[backend2, backend3]);
    let server2 = pod2.echo_server(backend2);
    let server3 = pod3.echo_server(backend3);

    let api = FakeKubeApi::start();
    api.apply(web_service());
    api.apply(web_slice(pod2.v4(), pod3.v4(), OTHER_NODE));
    // Distractors: a watch that ignored its namespace or selectors would put pod 3 on this node.
    let pod3_here = [Endpoint::ready(pod3.v4(), THIS_NODE)];
    for (namespace, name, vip) in [
        ("default", "other", "10.96.6.7"),
        ("staging", "web", "10.96.6.8"),
    ] {
        let ip: IpAddr = vip.parse().expect("an address");
        api.apply(service(namespace, name, ip, &[("http", 80, TARGET_PORT)]));
        let slice = format!("{name}-d4x9q");
        api.apply(endpoint_slice(
            namespace,
            &slice,
            name,
            &[("http", TARGET_PORT)],
            &pod3_here,
        ));
    }

    let daemon = Daemon::start_with(&api.daemon_args(THIS_NODE));

    // The rule: client side on the ClusterIP:80, server side on pod 2:8080 (this node's
    // endpoint), nothing on pod 3 (node-b) nor on the metrics port.
    let set_at = Instant::now();
    daemon.set(SVC, &["--max-connections", "2"]);
    wait_derived(
        &daemon,
        &[vip(), backend2],
        "`limiter set svc/...` -> derived rules in force",
        set_at,
    );
    let listed = listed_svc(&daemon);
    println!("listed: {listed}");
    let state = listed["state"].as_str().unwrap_or_default();
    assert!(
        state.contains("resolved") || state.contains("ready"),
        "state of {SVC} in `limiter list`: {listed}"
    );
    let status = daemon.status_json();
    let entry = svc_entry(&status).expect("svc entry");
    println!("status of {SVC}: {entry}");
    let vip_rule = find_destination(&status, vip()).expect("VIP rule")["rule"].clone();
    let pod2_rule = find_destination(&status, backend2).expect("pod 2 rule")["rule"].clone();
    assert_eq!(vip_rule["side"], "client", "VIP rule: {vip_rule}");
    assert_eq!(pod2_rule["side"], "server", "pod 2 rule: {pod2_rule}");
    assert_eq!(vip_rule["max_connections"], 2, "{vip_rule}");
    assert_eq!(pod2_rule["max_connections"], 2, "{pod2_rule}");
    // `get` answers for the Service rule and for an address derived from it as `status` does.
    let got = daemon.cli_json(&["get", SVC, "-o", "json"]);
    assert_eq!(got["resolved"], entry["resolved"], "get {SVC}: {got}");
    assert_eq!(
        got["service_state"], entry["service_state"],
        "get {SVC}: {got}"
    );
    assert_eq!(got["source"], "runtime", "get {SVC}: {got}");
    let got = daemon.cli_json(&["get", &backend2.to_string(), "-o", "json"]);
    assert_eq!(got["service"], SVC, "get {backend2}: {got}");
    assert_eq!(got["rule"], pod2_rule, "get {backend2}: {got}");
    // The daemon watches (list + watch), with the selectors of one Service.
    assert!(
        api.wait_for_watches(2, PROPAGATION),
        "the daemon does not keep a watch open on the Service and its EndpointSlices: {:#?}",
        api.log()
    );
    let log = api.log();
    for (path, selector) in [
        (
            "/api/v1/namespaces/default/services?",
            "fieldSelector=metadata.name%3Dweb",
        ),
        (
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?",
            "labelSelector=kubernetes.io%2Fservice-name%3Dweb",
        ),
    ] {
        assert!(
            log.iter()
                .any(|l| l.contains(path) && l.contains(selector) && l.contains("watch=true")),
            "no watch of {path}{selector} in the fake API's log: {log:#?}"
        );
    }

    // Server side on pod 2: 2 in total, whichever pods connect (1 from pod 1, 3 from pod 3).
    let mut direct = all_connect("pod 1 -> pod 2:8080", client, backend2, 1);
    direct.extend(exactly("pod 3 -> pod 2:8080", pod3, backend2, 3, 1));
    daemon.wait_for_dest(backend2, COUNTERS, "inbound 2 active, 2 refused", |d| {
        counter(d, "inbound", "active") == 2 && refused(d, "inbound", "limit", "reject") == 2
    });
    drop(direct);
    daemon.wait_for_active(backend2, 0, 0);

    // Pod 3 runs on node-b: no rule for it on this node.
    let status = daemon.status_json();
    for unlimited in [backend3, SocketAddr::new(vip().ip(), METRICS_PORT)] {
        assert!(
            find_destination(&status, unlimited).is_none(),
            "{unlimited} must have no rule: {status:#}"
        );
    }
    drop(all_connect(
        "pod 1 -> pod 3:8080 (no rule)",
        client,
        backend3,
        4,
    ));

    // Client side on the VIP: pod 1 gets 2 connections through it, the rest is refused in
    // connect(). These two stay open to the end: no change below may cut them.
    let mut held = exactly("pod 1 -> VIP", client, vip(), 5, 2);
    daemon.wait_for_dest(vip(), COUNTERS, "outbound 2 active", |d| {
        counter(d, "outbound", "active") == 2
    });
    assert!(
        wait_until(COUNTERS, || server2.open_count() + server3.open_count()
            == 2),
        "servers hold {} + {}",
        server2.open_count(),
        server3.open_count()
    );
    let (on_pod2, on_pod3) = (server2.open_count(), server3.open_count());
    println!("VIP connections landed on pod 2: {on_pod2}, pod 3: {on_pod3}");
    still_open("before the move", &mut held);

    // Pod 3 moves to this node (MODIFIED EndpointSlice): pod 3:8080 gets a server-side rule.
    assert!(api.wait_for_watches(2, PROPAGATION), "{:#?}", api.log());
    let moved_at = Instant::now();
    let rv = api.apply(web_slice(pod2.v4(), pod3.v4(), THIS_NODE));
    wait_derived(
        &daemon,
        &[vip(), backend2, backend3],
        &format!("EndpointSlice MODIFIED (rv {rv}, pod 3 -> {THIS_NODE}) -> rule on pod 3"),
        moved_at,
    );
    still_open("after the move", &mut held);
    // The new rule counts the connections pod 3 already holds (from the VIP), so the limit of
    // 2 holds for pod 3 as a whole from the start.
    let already = server3.open_count() as u64;
    let status3 = daemon.wait_for_dest(
        backend3,
        COUNTERS,
        "inbound.active == pod 3's open connections",
        |d| counter(d, "inbound", "active") == already,
    );
    assert_eq!(status3["rule"]["side"], "server", "{status3}");
    let direct = exactly(
        "pod 1 -> pod 3:8080 after the move",
        client,
        backend3,
        4,
        2 - already as usize,
    );
    drop(direct);
    daemon.wait_for_active(backend3, already, 0);

    // The API server drops every watch and forgets its history, as after a restart: the
    // daemon's two watches resume from their resourceVersion, get 410 Expired, list again and
    // watch on. The rules in force do not move meanwhile.
    let lists = || {
        api.log()
            .iter()
            .filter(|l| l.contains("-> 200 list of"))
            .count()
    };
    let lists_before = lists();
    // A change neither watch sees first, so that both are behind the compacted history.
    api.apply(service(
        "default",
        "other",
        "10.96.6.9".parse::<IpAddr>().expect("an address"),
        &[("http", 80, TARGET_PORT)],
    ));
    let dropped_at = Instant::now();
    api.compact();
    api.close_watches();
    let in_force = BTreeSet::from([vip(), backend2, backend3]);
    let mut moved = None;
    let relisted = wait_until(PROPAGATION * 2, || {
        let status = daemon.status_json();
        if derived(&status) != in_force {
            moved = Some(status);
            return true;
        }
        lists() >= lists_before + 2 && api.open_watches() >= 2
    });
    assert!(
        moved.is_none(),
        "the rules moved while the daemon re-listed: {moved:#?}"
    );
    assert!(
        relisted,
        "the daemon did not list and watch again after its watches were dropped: {:#?}",
        api.log()
    );
    println!(
        "watches dropped with history compacted -> listed and watching again: {:?}",
        dropped_at.elapsed()
    );

    // The Service is deleted (and its EndpointSlice, as the garbage collector does): the rule
    // stays, pending, and its address rules go; established connections stay.
    assert!(api.wait_for_watches(2, PROPAGATION), "{:#?}", api.log());
    let deleted_at = Instant::now();
    let rv = api.delete(Kind::Service, "default", "web");
    api.delete(Kind::EndpointSlice, "default", SLICE);
    wait_derived(
        &daemon,
        &[],
        &format!("Service DELETED (rv {rv}) -> derived rules removed"),
        deleted_at,
    );
    let listed = listed_svc(&daemon);
    println!("listed after the deletion: {listed}");
    let state = listed["state"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        state.contains("missing") || state.contains("not found"),
        "{SVC} must stay listed as missing: {listed}"
    );
    let status = daemon.status_json();
    let entry = svc_entry(&status).expect("the svc/ rule stays in status");
    println!("status of {SVC} after the deletion: {entry}");
    for gone in [vip(), backend2, backend3] {
        assert!(
            find_destination(&status, gone).is_none(),
            "{gone} must have no rule any more: {status:#}"
        );
    }
    still_open("after the deletion", &mut held);
    let unlimited = all_connect("pod 1 -> VIP, no rule", client, vip(), 5);
    drop(all_connect(
        "pod 3 -> pod 2:8080, no rule",
        pod3,
        backend2,
        4,
    ));
    drop(unlimited);

    // Created again: the rule is back and counts what is open. Server side, pod 2 already
    // holds its VIP connection, so only the rest of its limit is admitted.
    assert!(
        wait_until(COUNTERS, || (server2.open_count(), server3.open_count())
            == (on_pod2, on_pod3)),
        "servers still hold closed connections: pod 2 {}, pod 3 {}",
        server2.open_count(),
        server3.open_count()
    );
    let created_at = Instant::now();
    api.apply(web_service());
    let rv = api.apply(web_slice(pod2.v4(), pod3.v4(), OTHER_NODE));
    wait_derived(
        &daemon,
        &[vip(), backend2],
        &format!("Service ADDED again (rv {rv}) -> derived rules back"),
        created_at,
    );
    // Where the kernel adopts open connections only by their next packet, each held VIP
    // connection carries one round trip (both of its ends are counted: pod 1 and the backend).
    daemon.let_rule_count_open(vip(), || {
        still_open(
            "a round trip to be counted (seeding: next_packet)",
            &mut held,
        )
    });
    let adopted = on_pod2 as u64;
    daemon.wait_for_dest(
        backend2,
        COUNTERS,
        "inbound.active == pod 2's open connections",
        |d| counter(d, "inbound", "active") == adopted,
    );
    drop(exactly(
        "pod 3 -> pod 2:8080 after re-creation",
        pod3,
        backend2,
        3,
        2 - on_pod2,
    ));
    // Client side: the VIP is limited again, and pod 1's two open VIP connections are adopted
    // into its own share: it is full.
    daemon.wait_for_dest(vip(), COUNTERS, "outbound.active == 2 (adopted)", |d| {
        counter(d, "outbound", "active") == 2
    });
    let attempts = client.connect_many_timed(vip(), 5, CONNECT_TIMEOUT);
    let o = limiter_integration_tests::Outcomes::of(&attempts);
    println!(
        "pod 1 -> VIP after re-creation (2 already open): {}",
        o.summary()
    );
    assert!(
        o.ok.is_empty() && o.refused.len() == 5,
        "the VIP must be limited again, pod 1 holding its 2: {}",
        o.summary()
    );
    drop(attempts);
    still_open("after re-creation", &mut held);

    // Deleting the rule lifts its address rules and stops its watches.
    let deleted_at = Instant::now();
    daemon.cli_ok(&["delete", SVC]);
    let mut last = Value::Null;
    let lifted = wait_until(PROPAGATION, || {
        last = daemon.status_json();
        derived(&last).is_empty() && svc_entry(&last).is_none() && api.open_watches() == 0
    });
    assert!(
        lifted,
        "`limiter delete {SVC}`: {} watch(es) still open; status {last:#}",
        api.open_watches()
    );
    println!(
        "`limiter delete svc/...` -> address rules lifted and watches closed: {:?}",
        deleted_at.elapsed()
    );
    for gone in [vip(), backend2] {
        assert!(find_destination(&last, gone).is_none(), "{gone}: {last:#}");
    }
    assert!(
        !daemon.list_json().to_string().contains(SVC),
        "{SVC} still listed"
    );
    still_open("at the end", &mut held);
    println!("fake API requests: {}", api.request_count());
}

/// The rule survives a restart of the daemon (with a state file, as a node daemon has): the
/// pinned address rules keep enforcing while no daemon runs and are never lifted, the new
/// daemon claims them again without listing them as rules of their own, and it follows what
/// the API changed while it was down.
#[test]
fn service_rule_survives_a_daemon_restart() {
    let _root = require_root();
    let bed = Testbed::new(3);
    let (client, pod2, pod3) = (bed.pod(1), bed.pod(2), bed.pod(3));
    let (backend2, backend3) = (pod2.addr_v4(TARGET_PORT), pod3.addr_v4(TARGET_PORT));
    bed.add_service(vip(), &[backend2, backend3]);
    let _server2 = pod2.echo_server(backend2);
    let _server3 = pod3.echo_server(backend3);
    let api = FakeKubeApi::start();
    api.apply(web_service());
    api.apply(web_slice(pod2.v4(), pod3.v4(), OTHER_NODE));

    let state = tempfile::Builder::new()
        .prefix("limiter-state-")
        .tempdir()
        .expect("a state dir");
    let mut args = api.daemon_args(THIS_NODE);
    args.extend(["--state-dir".into(), state.path().as_os_str().to_owned()]);
    let mut daemon = Daemon::start_with(&args);
    let set_at = Instant::now();
    daemon.set(SVC, &["--max-connections", "2"]);
    wait_derived(&daemon, &[vip(), backend2], "set -> derived rules", set_at);
    let mut held = exactly("pod 1 -> VIP", client, vip(), 5, 2);

    let mut restarted_at = Instant::now();
    daemon.restart_after(nix::sys::signal::Signal::SIGTERM, || {
        drop(exactly(
            "pod 1 -> VIP while no daemon runs",
            client,
            vip(),
            3,
            0,
        ));
        api.apply(web_slice(pod2.v4(), pod3.v4(), THIS_NODE));
        restarted_at = Instant::now();
    });
    // Answering again: the address rules of the previous daemon are still in force.
    let status = daemon.status_json();
    for kept in [vip(), backend2] {
        assert!(
            find_destination(&status, kept).is_some(),
            "{kept} lost its rule across the restart: {status:#}"
        );
    }
    wait_derived(
        &daemon,
        &[vip(), backend2, backend3],
        "restart (pod 3 moved meanwhile) -> derived rules",
        restarted_at,
    );
    let list = daemon.list_json();
    let listed: Vec<&str> = list
        .as_array()
        .expect("a list of rules")
        .iter()
        .filter_map(|r| r["destination"].as_str())
        .collect();
    assert_eq!(
        listed,
        [SVC],
        "only the svc/ rule is a rule of its own: {list:#}"
    );
    drop(exactly(
        "pod 1 -> VIP after the restart",
        client,
        vip(),
        3,
        0,
    ));
    still_open("after the restart", &mut held);
}

#[test]
fn without_api_access_service_rules_are_refused_and_ip_rules_work() {
    let _root = require_root();
    // The daemon would otherwise find a cluster through these (and send traffic to it).
    let home_config = std::env::var_os("HOME")
        .map(|h| std::path::Path::new(&h).join(".kube/config"))
        .filter(|p| p.exists());
    for var in ["KUBECONFIG", "KUBERNETES_SERVICE_HOST"] {
        assert!(
            std::env::var_os(var).is_none(),
            "unset {var} to run this test: it needs a daemon with no Kubernetes API"
        );
    }
    assert!(
        home_config.is_none(),
        "{home_config:?} exists: this test needs a daemon with no Kubernetes API"
    );

    let bed = Testbed::new(2);
    let dest = bed.pod(2).addr_v4(TARGET_PORT);
    let _server = bed.pod(2).hold_server(dest);
    let daemon = Daemon::start();

    let out = daemon.cli(["set", "svc/default/web", "--max-connections", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "`limiter set svc/default/web` without API access: {}: {}",
        out.status,
        stderr.trim()
    );
    assert!(
        !out.status.success(),
        "set svc/ must fail without API access"
    );
    assert!(
        stderr.contains("Kubernetes API"),
        "the error must say that the Kubernetes API is missing: {stderr}"
    );
    let list = daemon.list_json();
    assert!(
        !list.to_string().contains("svc/"),
        "a refused set changes nothing: {list:#}"
    );

    // Address rules work as usual.
    daemon.set_rule(dest, 1);
    let attempts = bed.pod(1).connect_many_timed(dest, 3, CONNECT_TIMEOUT);
    expect_exactly("pod 1 -> pod 2:8080, max 1", &attempts, 1);
    daemon.wait_for_active(dest, 1, 1);
}
