//! `resolve` on fixtures shaped as `kubectl get -o json` prints them (managedFields left out).
//! Node "node-a" is "this node" unless a test says otherwise.

use super::*;

const WEB: &str = include_str!("fixtures/svc-web.json");
const WEB_SLICES: &str = include_str!("fixtures/endpointslices-web.json");
const DB: &str = include_str!("fixtures/svc-db-headless.json");
const DB_SLICES: &str = include_str!("fixtures/endpointslices-db.json");
const DNS: &str = include_str!("fixtures/svc-kube-dns.json");
const DNS_SLICES: &str = include_str!("fixtures/endpointslices-kube-dns.json");
const API: &str = include_str!("fixtures/svc-api.json");
const API_SLICE: &str = include_str!("fixtures/endpointslice-api.json");
const PAYMENTS: &str = include_str!("fixtures/svc-payments-externalname.json");
const SYSLOG: &str = include_str!("fixtures/svc-syslog-udp.json");

#[derive(serde::Deserialize)]
struct List<T> {
    items: Vec<T>,
}

fn service(json: &str) -> Service {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("fixture is not a Service: {e}"))
}

fn slices(json: &str) -> Vec<EndpointSlice> {
    let list: List<EndpointSlice> =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("fixture is not a slice list: {e}"));
    list.items
}

fn addrs(list: &[&str]) -> BTreeSet<SocketAddr> {
    list.iter()
        .map(|a| a.parse().unwrap_or_else(|e| panic!("{a}: {e}")))
        .collect()
}

fn name(port: &str) -> PortRef {
    PortRef::Name(port.to_owned())
}

fn web(node: &str, port: Option<PortRef>) -> Resolved {
    resolve(
        Some(&service(WEB)),
        &slices(WEB_SLICES),
        node,
        port.as_ref(),
    )
}

const WEB_VIPS_80: [&str; 2] = ["10.96.12.34:80", "[fd00:10:96::4c2a]:80"];
/// http on node-a: the ready pod, the draining (terminating, serving) one, a pod of the new
/// ReplicaSet whose named targetPort `web` is 8081, and the ready pod's IPv6 address.
const WEB_HTTP_NODE_A: [&str; 4] = [
    "10.244.1.5:8080",
    "10.244.1.9:8080",
    "10.244.1.21:8081",
    "[fd00:10:244:1::5]:8080",
];

#[test]
fn dual_stack_named_port_gives_both_vips_and_the_local_target_ports() {
    let r = web("node-a", Some(name("http")));
    assert_eq!(r.state, ResolveState::Ready);
    assert_eq!(r.client, addrs(&WEB_VIPS_80));
    assert_eq!(r.server, addrs(&WEB_HTTP_NODE_A));
}

/// Every serving endpoint, on any node, stands for the ClusterIP of its family and the
/// Service port: what connect() shows when a socket load balancer translated the ClusterIP
/// before limiter saw it.
#[test]
fn every_serving_endpoint_stands_for_the_cluster_ip_of_its_family() {
    let here = web("node-a", Some(name("http")));
    let elsewhere = web("node-b", Some(name("http")));
    assert_eq!(
        here.aliases, elsewhere.aliases,
        "aliases do not depend on the node"
    );
    for endpoint in WEB_HTTP_NODE_A {
        let endpoint: SocketAddr = endpoint.parse().unwrap();
        let vip = here
            .aliases
            .get(&endpoint)
            .unwrap_or_else(|| panic!("{endpoint} stands for no ClusterIP: {:?}", here.aliases));
        assert_eq!(vip.is_ipv4(), endpoint.is_ipv4(), "{endpoint} -> {vip}");
        assert!(addrs(&WEB_VIPS_80).contains(vip), "{endpoint} -> {vip}");
    }
    assert!(
        here.aliases.len() > WEB_HTTP_NODE_A.len(),
        "endpoints on other nodes count too: {:?}",
        here.aliases
    );
}

#[test]
fn port_number_is_the_service_port_not_the_target_port() {
    assert_eq!(
        web("node-a", Some(PortRef::Number(80))),
        web("node-a", Some(name("http")))
    );
    let r = web("node-a", Some(PortRef::Number(8080)));
    assert_eq!(r.client, addrs(&[]));
    assert_eq!(r.server, addrs(&[]));
    assert_eq!(
        r.state.to_string(),
        "the Service has no port 8080; its ports: http (80/TCP), metrics (9090/TCP), syslog (514/UDP)"
    );
}

#[test]
fn only_this_nodes_endpoints_get_server_rules() {
    let b = web("node-b", Some(name("http")));
    assert_eq!(b.client, addrs(&WEB_VIPS_80));
    assert_eq!(
        b.server,
        addrs(&["10.244.2.7:8080", "[fd00:10:244:2::7]:8080"])
    );
    // No pod here: still Ready, the client side is the whole rule.
    let none = web("node-z", Some(name("http")));
    assert_eq!(none.state, ResolveState::Ready);
    assert_eq!(none.client, addrs(&WEB_VIPS_80));
    assert!(none.server.is_empty(), "{none:?}");
}

#[test]
fn serving_decides_which_endpoints_get_rules() {
    let server = web("node-a", Some(name("http"))).server;
    assert!(
        server.contains(&"10.244.1.9:8080".parse().unwrap()),
        "terminating, serving: drains"
    );
    assert!(
        !server.contains(&"10.244.1.11:8080".parse().unwrap()),
        "terminating, not serving"
    );
    assert!(
        !server.contains(&"10.244.1.13:8080".parse().unwrap()),
        "starting, not ready yet"
    );

    // Older or third-party slices: absent conditions mean true; `ready` stands in for `serving`.
    let mut list = slices(WEB_SLICES);
    let endpoints = &mut list[0].endpoints;
    endpoints[2].conditions = None; // 10.244.1.9
    endpoints[3].conditions.as_mut().unwrap().serving = None; // 10.244.1.11, ready false
    let c = endpoints[4].conditions.as_mut().unwrap(); // 10.244.1.13
    (c.serving, c.ready) = (None, Some(true));
    let server = resolve(Some(&service(WEB)), &list, "node-a", Some(&name("http"))).server;
    assert!(server.contains(&"10.244.1.9:8080".parse().unwrap()));
    assert!(!server.contains(&"10.244.1.11:8080".parse().unwrap()));
    assert!(server.contains(&"10.244.1.13:8080".parse().unwrap()));
}

#[test]
fn port_omitted_means_every_tcp_port_and_skips_udp() {
    let r = web("node-a", None);
    let mut client = addrs(&WEB_VIPS_80);
    client.extend(addrs(&["10.96.12.34:9090", "[fd00:10:96::4c2a]:9090"]));
    assert_eq!(r.client, client);
    let mut server = addrs(&WEB_HTTP_NODE_A);
    let metrics = [
        "10.244.1.5:9090",
        "10.244.1.9:9090",
        "10.244.1.21:9090",
        "[fd00:10:244:1::5]:9090",
    ];
    server.extend(addrs(&metrics));
    assert_eq!(r.server, server, "no 514 or 5514: syslog is UDP");
}

#[test]
fn a_udp_port_asked_for_says_so() {
    let r = web("node-a", Some(name("syslog")));
    assert_eq!(
        r.state,
        ResolveState::PortNotTcp {
            wanted: name("syslog"),
            protocol: "UDP".into()
        }
    );
    assert!(r.client.is_empty() && r.server.is_empty());
    assert_eq!(
        r.state.to_string(),
        "port syslog is UDP; only TCP ports can be limited"
    );

    let udp_only = resolve(Some(&service(SYSLOG)), &[], "node-a", None);
    assert_eq!(
        udp_only.state.to_string(),
        "the Service has no TCP port; its ports: syslog (514/UDP)"
    );
}

#[test]
fn one_number_for_tcp_and_udp_takes_the_tcp_port() {
    let (dns, dns_slices) = (service(DNS), slices(DNS_SLICES));
    let r = resolve(
        Some(&dns),
        &dns_slices,
        "node-a",
        Some(&PortRef::Number(53)),
    );
    assert_eq!(r.client, addrs(&["10.96.0.10:53"]));
    assert_eq!(r.server, addrs(&["10.244.0.2:53"]));
    let r = resolve(Some(&dns), &dns_slices, "node-b", None);
    assert_eq!(r.client, addrs(&["10.96.0.10:53", "10.96.0.10:9153"]));
    assert_eq!(r.server, addrs(&["10.244.2.3:53", "10.244.2.3:9153"]));
    let r = resolve(Some(&dns), &dns_slices, "node-a", Some(&name("dns")));
    assert!(matches!(r.state, ResolveState::PortNotTcp { .. }), "{r:?}");
}

#[test]
fn headless_clients_dial_the_serving_pods_on_every_node() {
    let (db, db_slices) = (service(DB), slices(DB_SLICES));
    let r = resolve(Some(&db), &db_slices, "node-a", Some(&name("postgres")));
    assert_eq!(r.state, ResolveState::Ready);
    // db-2 on node-c is not serving: DNS does not give it out either.
    assert_eq!(r.client, addrs(&["10.244.1.30:5432", "10.244.2.31:5432"]));
    assert_eq!(r.server, addrs(&["10.244.1.30:5432"]));
    let c = resolve(Some(&db), &db_slices, "node-c", None);
    assert_eq!((c.client, c.server), (r.client, addrs(&[])));

    let empty = resolve(Some(&db), &[], "node-a", None);
    assert_eq!(empty, Resolved::empty(ResolveState::NoAddresses));
}

#[test]
fn external_name_has_no_addresses() {
    let r = resolve(
        Some(&service(PAYMENTS)),
        &slices(WEB_SLICES),
        "node-a",
        None,
    );
    let external_name = "payments.example.com".to_owned();
    assert_eq!(
        r,
        Resolved::empty(ResolveState::ExternalName { external_name })
    );
    assert!(
        r.state
            .to_string()
            .contains("DNS alias of payments.example.com")
    );
}

#[test]
fn a_missing_service_is_missing_whatever_slices_linger() {
    let r = resolve(None, &slices(WEB_SLICES), "node-a", Some(&name("http")));
    assert_eq!(r, Resolved::empty(ResolveState::ServiceMissing));
    assert_eq!(
        r.state.to_string(),
        "Service not found (not created yet, or deleted)"
    );
}

#[test]
fn a_port_that_does_not_exist_names_the_available_ones() {
    let r = web("node-a", Some(name("grpc")));
    let available = ["http (80/TCP)", "metrics (9090/TCP)", "syslog (514/UDP)"];
    let available = available.map(String::from).to_vec();
    assert_eq!(
        r,
        Resolved::empty(ResolveState::PortMissing {
            wanted: name("grpc"),
            available
        })
    );
}

#[test]
fn an_unnamed_single_port_matches_the_slice_port_named_empty() {
    let (api, api_slice) = (service(API), service_slice(API_SLICE));
    for port in [None, Some(PortRef::Number(80))] {
        let r = resolve(
            Some(&api),
            std::slice::from_ref(&api_slice),
            "node-a",
            port.as_ref(),
        );
        assert_eq!(r.client, addrs(&["10.96.77.5:80"]), "{port:?}");
        assert_eq!(r.server, addrs(&["10.244.1.40:8080"]), "{port:?}");
    }
    let r = resolve(
        Some(&api),
        &[api_slice],
        "node-a",
        Some(&PortRef::Number(8080)),
    );
    assert_eq!(
        r.state.to_string(),
        "the Service has no port 8080; its ports: 80/TCP"
    );
}

fn service_slice(json: &str) -> EndpointSlice {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("fixture is not an EndpointSlice: {e}"))
}

#[test]
fn slices_of_other_services_namespaces_or_fqdn_are_ignored() {
    let edited = |edit: &dyn Fn(&mut EndpointSlice)| {
        let mut list = slices(WEB_SLICES);
        edit(&mut list[1]); // web-m2r8s: only 10.244.1.21:8081 for http on node-a
        resolve(Some(&service(WEB)), &list, "node-a", Some(&name("http"))).server
    };
    let all = addrs(&WEB_HTTP_NODE_A);
    assert_eq!(edited(&|_| ()), all, "the unedited list has it");
    let mut without = all.clone();
    without.remove(&"10.244.1.21:8081".parse().unwrap());
    let relabel = |s: &mut EndpointSlice| {
        let labels = s.metadata.labels.as_mut().unwrap();
        labels.insert(SERVICE_NAME_LABEL.into(), "web-canary".into());
    };
    assert_eq!(edited(&relabel), without);
    assert_eq!(
        edited(&|s| s.metadata.namespace = Some("other".into())),
        without
    );
    assert_eq!(edited(&|s| s.address_type = "FQDN".into()), without);
}

#[test]
fn cluster_ip_stands_in_when_cluster_ips_is_absent() {
    let mut web = service(WEB);
    web.spec.as_mut().unwrap().cluster_ips = None;
    let r = resolve(
        Some(&web),
        &slices(WEB_SLICES),
        "node-a",
        Some(&name("http")),
    );
    assert_eq!(r.client, addrs(&["10.96.12.34:80"]));
}

#[test]
fn nothing_resolved_yet_is_waiting() {
    let r = Resolved::default();
    assert_eq!(r.state, ResolveState::Waiting);
    assert!(r.client.is_empty() && r.server.is_empty());
}
