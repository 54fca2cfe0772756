use std::net::SocketAddr;

use serde_json::json;

use super::*;
use crate::testutil::MemoryDataplane;

fn rule(dest: &str, json: serde_json::Value) -> RuleSpec {
    let mut v = json;
    v["destination"] = json!(dest);
    serde_json::from_value(v).unwrap()
}

fn addrs(list: &[&str]) -> BTreeSet<SocketAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

fn ready(client: &[&str], server: &[&str]) -> Resolved {
    Resolved {
        state: ResolveState::Ready,
        client: addrs(client),
        server: addrs(server),
        aliases: Default::default(),
    }
}

fn dest(d: &str) -> Dest {
    d.parse().unwrap()
}

/// A ServiceDataplane without API access, with `svc` watched as if its watcher had delivered
/// `resolved` (the watcher itself is tested against a mocked API in watch_tests.rs).
fn watched(mem: &Arc<MemoryDataplane>, svc: &RuleSpec, resolved: Resolved) -> ServiceDataplane {
    let dp = ServiceDataplane::new(mem.clone(), Err("no API in unit tests".into()));
    deliver(&dp, svc, resolved);
    dp
}

fn deliver(dp: &ServiceDataplane, svc: &RuleSpec, resolved: Resolved) {
    let mut shared = dp.lock();
    let entry = shared
        .services
        .entry(svc.destination.clone())
        .or_insert_with(|| Watched {
            rule: svc.clone(),
            resolved: Resolved::default(),
            applied: BTreeMap::new(),
            shadowed: BTreeSet::new(),
            tasks: Vec::new(),
        });
    entry.resolved = resolved;
    reconcile(&*dp.inner, &mut shared, &svc.destination);
    collect_orphans(&*dp.inner, &mut shared);
}

fn kernel(mem: &MemoryDataplane) -> BTreeMap<String, RuleSpec> {
    mem.rules
        .lock()
        .unwrap()
        .iter()
        .map(|(d, r)| (d.to_string(), r.clone()))
        .collect()
}

#[test]
fn client_and_server_addresses_get_their_side_and_an_overlap_gets_both() {
    let svc = rule("svc/default/web", json!({"max_connections": 5}));
    // Headless: the local pod is both a client-side and a server-side address.
    let derived = derive(
        &svc,
        &ready(&["10.1.0.7:8080", "10.1.0.9:8080"], &["10.1.0.7:8080"]),
    );
    let sides: Vec<(String, Side)> = derived
        .iter()
        .map(|(d, r)| (d.to_string(), r.side))
        .collect();
    assert_eq!(
        sides,
        [
            ("10.1.0.7:8080".to_owned(), Side::Both),
            ("10.1.0.9:8080".to_owned(), Side::Client)
        ]
    );
    assert!(
        derived
            .values()
            .all(|r| r.derived && r.max_connections == Some(5))
    );

    let server_only = rule(
        "svc/default/web",
        json!({"max_connections": 5, "side": "server"}),
    );
    let derived = derive(&server_only, &ready(&["10.96.0.10:80"], &["10.1.0.7:8080"]));
    assert_eq!(
        derived.keys().map(Dest::to_string).collect::<Vec<_>>(),
        ["10.1.0.7:8080"]
    );
}

#[test]
fn resolution_changes_add_and_remove_address_rules() {
    let mem = Arc::new(MemoryDataplane::default());
    let svc = rule("svc/default/web:http", json!({"max_connections": 2}));
    let dp = watched(
        &mem,
        &svc,
        ready(&["10.96.0.10:80", "[fd00:96::10]:80"], &["10.1.0.7:8080"]),
    );
    let k = kernel(&mem);
    assert_eq!(
        k.keys().collect::<Vec<_>>(),
        ["10.1.0.7:8080", "10.96.0.10:80", "[fd00:96::10]:80"]
    );
    assert_eq!(k["10.1.0.7:8080"].side, Side::Server);
    assert_eq!(k["10.96.0.10:80"].side, Side::Client);

    // The pod moved away from this node, another arrived.
    deliver(
        &dp,
        &svc,
        ready(&["10.96.0.10:80", "[fd00:96::10]:80"], &["10.1.0.8:8080"]),
    );
    assert!(!kernel(&mem).contains_key("10.1.0.7:8080"));
    assert!(kernel(&mem).contains_key("10.1.0.8:8080"));

    // Service deleted: no addresses, the rule itself stays (pending) for `list`.
    deliver(&dp, &svc, Resolved::empty(ResolveState::ServiceMissing));
    assert!(kernel(&mem).is_empty());
    assert_eq!(dp.rules(), std::slice::from_ref(&svc));
    let state = dp.state_of(&svc.destination).unwrap();
    assert!(state.starts_with("Service not found"), "{state}");
}

#[test]
fn no_answer_yet_keeps_what_is_in_force() {
    let mem = Arc::new(MemoryDataplane::default());
    let svc = rule("svc/default/web", json!({"max_connections": 2}));
    let dp = watched(&mem, &svc, ready(&["10.96.0.10:80"], &[]));
    deliver(
        &dp,
        &svc,
        Resolved::empty(ResolveState::ApiError("403".into())),
    );
    assert!(
        kernel(&mem).contains_key("10.96.0.10:80"),
        "an API error lifts nothing"
    );
}

#[test]
fn a_rule_set_by_hand_wins_and_gives_the_address_back_when_deleted() {
    let mem = Arc::new(MemoryDataplane::default());
    let svc = rule("svc/default/web", json!({"max_connections": 2}));
    let dp = watched(&mem, &svc, ready(&["10.96.0.10:80"], &[]));
    let by_hand = rule("10.96.0.10:80", json!({"max_connections": 9}));
    dp.apply_rule(&by_hand).unwrap();
    assert_eq!(kernel(&mem)["10.96.0.10:80"].max_connections, Some(9));
    // The rule book sees both rules, neither twice.
    let mut seen: Vec<String> = dp
        .rules()
        .iter()
        .map(|r| r.destination.to_string())
        .collect();
    seen.sort();
    assert_eq!(seen, ["10.96.0.10:80", "svc/default/web"]);
    assert!(
        dp.state_of(&svc.destination)
            .unwrap()
            .contains("held by other rules")
    );

    // A new resolution does not take it back while the hand-set rule exists.
    deliver(&dp, &svc, ready(&["10.96.0.10:80"], &[]));
    assert_eq!(kernel(&mem)["10.96.0.10:80"].max_connections, Some(9));

    assert!(dp.delete_rule(&dest("10.96.0.10:80")).unwrap());
    let back = &kernel(&mem)["10.96.0.10:80"];
    assert_eq!((back.max_connections, back.derived), (Some(2), true));
}

#[test]
fn deleting_the_service_rule_removes_its_address_rules_only() {
    let mem = Arc::new(MemoryDataplane::default());
    let other = rule("10.0.0.1:22", json!({"max_connections": 1}));
    mem.apply_rule(&other).unwrap();
    let svc = rule("svc/default/web", json!({"max_connections": 2}));
    let dp = watched(&mem, &svc, ready(&["10.96.0.10:80"], &["10.1.0.7:8080"]));
    assert!(dp.delete_rule(&svc.destination).unwrap());
    assert_eq!(kernel(&mem).keys().collect::<Vec<_>>(), ["10.0.0.1:22"]);
    assert!(!dp.delete_rule(&svc.destination).unwrap());
}

#[test]
fn a_restarted_daemon_hides_old_derived_rules_and_drops_the_unclaimed() {
    let mem = Arc::new(MemoryDataplane::default());
    for (d, derived) in [
        ("10.96.0.10:80", true),
        ("10.96.0.99:80", true),
        ("10.0.0.1:22", false),
    ] {
        let mut r = rule(d, json!({"max_connections": 2}));
        r.derived = derived;
        mem.apply_rule(&r).unwrap();
    }
    let dp = ServiceDataplane::new(mem.clone(), Err("none".into()));
    let visible: Vec<String> = dp
        .rules()
        .iter()
        .map(|r| r.destination.to_string())
        .collect();
    assert_eq!(
        visible,
        ["10.0.0.1:22"],
        "derived rules are not the rule book's"
    );

    let svc = rule("svc/default/web", json!({"max_connections": 2}));
    deliver(&dp, &svc, ready(&["10.96.0.10:80"], &[]));
    let k = kernel(&mem);
    assert!(
        k.contains_key("10.96.0.10:80"),
        "claimed again, never lifted"
    );
    assert!(
        !k.contains_key("10.96.0.99:80"),
        "unclaimed once every watcher answered"
    );
}

#[test]
fn without_api_access_a_service_rule_is_refused_and_address_rules_work() {
    let mem = Arc::new(MemoryDataplane::default());
    let dp = ServiceDataplane::new(
        mem.clone(),
        Err("no Kubernetes API access: not in a pod".into()),
    );
    let e = dp
        .apply_rule(&rule("svc/default/web", json!({"max_connections": 2})))
        .unwrap_err();
    assert_eq!(e.to_string(), "no Kubernetes API access: not in a pod");
    dp.apply_rule(&rule("10.0.0.1:22", json!({"max_connections": 1})))
        .unwrap();
    assert_eq!(kernel(&mem).len(), 1);
}

#[test]
fn of_two_service_rules_on_one_address_the_second_takes_it_when_the_first_goes() {
    let mem = Arc::new(MemoryDataplane::default());
    let first = rule("svc/default/web", json!({"max_connections": 2}));
    let second = rule("svc/default/web-alias", json!({"max_connections": 7}));
    let dp = watched(&mem, &first, ready(&["10.96.0.10:80"], &[]));
    deliver(&dp, &second, ready(&["10.96.0.10:80"], &[]));
    assert_eq!(kernel(&mem)["10.96.0.10:80"].max_connections, Some(2));
    assert!(dp.delete_rule(&first.destination).unwrap());
    assert_eq!(kernel(&mem)["10.96.0.10:80"].max_connections, Some(7));
}

#[test]
fn status_names_the_service_of_derived_lines_and_sums_them_under_it() {
    let mem = Arc::new(MemoryDataplane::default());
    mem.apply_rule(&rule("10.0.0.1:22", json!({"max_connections": 1})))
        .unwrap();
    let svc = rule("svc/default/web", json!({"max_connections": 2}));
    let dp = watched(&mem, &svc, ready(&["10.96.0.10:80"], &["10.1.0.7:8080"]));
    let status = dp.status().unwrap();
    let line = |d: &str| status.iter().find(|s| s.destination == d).unwrap();
    assert_eq!(
        line("10.96.0.10:80").service.service.as_deref(),
        Some("svc/default/web")
    );
    assert_eq!(line("10.0.0.1:22").service.service, None);
    let own = line("svc/default/web");
    // MemoryDataplane counts one outbound connection per rule: the Service line has both.
    assert_eq!(own.outbound.active, 2);
    assert_eq!(own.service.service_state.as_deref(), Some("resolved"));
    assert_eq!(
        own.service.resolved.as_deref(),
        Some(&["10.1.0.7:8080".to_owned(), "10.96.0.10:80".to_owned()][..])
    );
}
