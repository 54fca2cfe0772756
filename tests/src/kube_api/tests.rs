//! Unit tests of the fake API: what kube-rs and kube-runtime's watcher would see, on the wire.

mod client;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::selector::{Requirement, parse_query, parse_selector, percent_decode};
use super::{Endpoint, FakeKubeApi, Kind, endpoint_slice, service};
use client::{Client, WAIT};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["metadata"]["namespace"].as_str().unwrap(),
                i["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// Services web and api in default, web in staging, each with one slice.
fn populated() -> FakeKubeApi {
    let api = FakeKubeApi::start();
    for (ns, name, vip) in [
        ("default", "web", "10.96.0.1"),
        ("default", "api", "10.96.0.2"),
        ("staging", "web", "10.96.0.3"),
    ] {
        api.apply(service(ns, name, ip(vip), &[("http", 80, 8080)]));
        let endpoints = [Endpoint::ready(ip("10.244.1.5"), "node-a")];
        api.apply(endpoint_slice(
            ns,
            &format!("{name}-abcde"),
            name,
            &[("http", 8080)],
            &endpoints,
        ));
    }
    api
}

const SERVICES: &str = "/api/v1/namespaces/default/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

#[test]
fn lists_honour_namespace_and_selectors() {
    let api = populated();
    let mut client = Client::new(&api);
    // As kube-runtime's watcher asks (`?&`, percent-encoded selector).
    let (code, list) = client.get(&format!(
        "{SERVICES}?&fieldSelector=metadata.name%3Dweb&limit=500&resourceVersion=0&resourceVersionMatch=NotOlderThan"
    ));
    assert_eq!(code, 200);
    assert_eq!(names(&list), ["default/web"]);
    assert_eq!(list["kind"], "ServiceList");
    assert_eq!(
        list["metadata"]["resourceVersion"],
        api.resource_version().to_string()
    );
    assert!(
        list["items"][0].get("kind").is_none(),
        "list items carry no kind: {list}"
    );
    assert_eq!(list["items"][0]["spec"]["clusterIP"], "10.96.0.1");

    let (_, all) = client.get("/api/v1/services?fieldSelector=metadata.name=web");
    assert_eq!(names(&all), ["default/web", "staging/web"]);
    let (_, both) = client.get(SERVICES);
    assert_eq!(names(&both), ["default/api", "default/web"]);

    let (code, slices) = client.get(&format!(
        "{SLICES}?labelSelector=kubernetes.io%2Fservice-name%3Dweb"
    ));
    assert_eq!(code, 200);
    assert_eq!(names(&slices), ["default/web-abcde"]);
    assert_eq!(slices["kind"], "EndpointSliceList");
    let (_, not_web) = client.get(&format!(
        "{SLICES}?labelSelector=kubernetes.io%2Fservice-name!%3Dweb"
    ));
    assert_eq!(names(&not_web), ["default/api-abcde"]);
    let (_, one) = client.get(&format!("{SERVICES}/api"));
    assert_eq!(one["metadata"]["name"], "api");
    assert!(
        api.log()
            .iter()
            .any(|l| l.contains("GET /api/v1/services?fieldSelector")
                && l.contains("-> 200 list of 2")),
        "{:#?}",
        api.log()
    );
}

#[test]
fn unknown_paths_and_bad_selectors_are_statuses() {
    let api = populated();
    let mut client = Client::new(&api);
    let (code, status) = client.get("/api/v1/namespaces/default/pods");
    assert_eq!((code, status["kind"].as_str()), (404, Some("Status")));
    let (code, status) = client.get(&format!(
        "{SERVICES}?fieldSelector=spec.clusterIP%3D10.96.0.1"
    ));
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")));
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("field label not supported")
    );
    let (code, _) = client.get(&format!("{SERVICES}/nope"));
    assert_eq!(code, 404);
    let (code, version) = client.get("/version");
    assert_eq!(
        (code, version["gitVersion"].as_str()),
        (200, Some("v1.33.2"))
    );
    assert_eq!(api.request_count(), 4, "all on one keep-alive connection");
}

#[test]
fn a_watch_streams_matching_changes_and_ends_at_its_timeout() {
    let api = populated();
    let from = api.resource_version();
    let mut client = Client::new(&api);
    let head = client.send(&format!(
        "{SERVICES}?&watch=true&timeoutSeconds=2&allowWatchBookmarks=true&fieldSelector=metadata.name%3Dweb&resourceVersion={from}"
    ));
    assert!(head.code == 200 && head.chunked);
    assert!(api.wait_for_watches(1, WAIT));
    let started = Instant::now();

    let mut other = service("default", "api", ip("10.96.0.2"), &[("http", 81, 8081)]);
    api.apply(other.clone());
    let mut web = service("default", "web", ip("10.96.0.1"), &[("http", 80, 9090)]);
    let modified = api.apply(web.clone());
    api.apply(service(
        "staging",
        "web",
        ip("10.96.0.3"),
        &[("http", 82, 8082)],
    ));
    let deleted = api.delete(Kind::Service, "default", "web");
    web["metadata"]["labels"]["new"] = json!("yes");
    let added = api.apply(web);
    other["metadata"]["name"] = json!("api2");
    api.apply(other);

    assert_eq!(client.event(), ("MODIFIED".into(), "web".into(), modified));
    assert_eq!(client.event(), ("DELETED".into(), "web".into(), deleted));
    assert_eq!(client.event(), ("ADDED".into(), "web".into(), added));
    assert!(client.chunk().is_none(), "only web's events, then the end");
    let lasted = started.elapsed();
    assert!(
        lasted >= Duration::from_millis(1800) && lasted < Duration::from_secs(4),
        "{lasted:?}"
    );
    assert!(crate::wait_until(WAIT, || api.open_watches() == 0));
    // The connection is still good for the next request.
    assert_eq!(client.get("/version").0, 200);
}

#[test]
fn a_watch_from_zero_starts_with_the_objects_and_follows_the_selection() {
    let api = populated();
    let mut client = Client::new(&api);
    let selector = "labelSelector=kubernetes.io%2Fservice-name%3Dweb";
    assert!(
        client
            .send(&format!("{SLICES}?watch=true&{selector}"))
            .chunked
    );
    assert_eq!(client.event().0, "ADDED");
    // The slice leaves the selection (relabelled), then another one enters it.
    let mut slice = api
        .get(Kind::EndpointSlice, "default", "web-abcde")
        .unwrap();
    slice["metadata"]["labels"]["kubernetes.io/service-name"] = json!("old-web");
    let left = api.apply(slice);
    let mut slice = api
        .get(Kind::EndpointSlice, "default", "api-abcde")
        .unwrap();
    slice["metadata"]["labels"]["kubernetes.io/service-name"] = json!("web");
    let entered = api.apply(slice);
    assert_eq!(client.event(), ("DELETED".into(), "web-abcde".into(), left));
    assert_eq!(
        client.event(),
        ("ADDED".into(), "api-abcde".into(), entered)
    );
    api.close_watches();
    assert!(client.chunk().is_none(), "close_watches ends the stream");
}

#[test]
fn streaming_lists_end_with_the_initial_events_bookmark() {
    let api = populated();
    let mut client = Client::new(&api);
    client.send(&format!(
        "{SERVICES}?&watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
    ));
    let names: Vec<String> = (0..2).map(|_| client.event().1).collect();
    assert_eq!(names, ["api", "web"]);
    let bookmark = client.chunk().unwrap();
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(
        bookmark["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

#[test]
fn a_watch_from_compacted_history_gets_410_expired() {
    let api = populated();
    let old = api.resource_version() - 1;
    api.compact();
    let mut client = Client::new(&api);
    client.send(&format!("{SERVICES}?watch=true&resourceVersion={old}"));
    let error = client.chunk().unwrap();
    assert_eq!(error["type"], "ERROR");
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(error["object"]["reason"], "Expired");
    assert!(client.chunk().is_none());
}

#[test]
fn a_watch_whose_client_leaves_is_closed() {
    let api = populated();
    let mut client = Client::new(&api);
    client.send(&format!(
        "{SERVICES}?watch=true&resourceVersion={}",
        api.resource_version()
    ));
    assert!(api.wait_for_watches(1, WAIT));
    drop(client);
    assert!(
        crate::wait_until(WAIT, || api.open_watches() == 0),
        "{:#?}",
        api.log()
    );
}

#[test]
fn selectors_parse_like_the_api_servers() {
    use Requirement::*;
    let s = |k: &str| k.to_owned();
    assert_eq!(
        parse_selector("a=1,b==2,c!=3,d,!e,f in (x, y),g notin (z)").unwrap(),
        vec![
            Equals(s("a"), s("1")),
            Equals(s("b"), s("2")),
            NotEquals(s("c"), s("3")),
            Exists(s("d")),
            NotExists(s("e")),
            In(s("f"), vec![s("x"), s("y")]),
            NotIn(s("g"), vec![s("z")]),
        ]
    );
    assert!(parse_selector("=x").is_err());
    assert_eq!(
        percent_decode("kubernetes.io%2Fservice-name%3Dweb+x"),
        "kubernetes.io/service-name=web x"
    );
    assert_eq!(percent_decode("100%"), "100%");
    let query = parse_query("&watch=true&fieldSelector=metadata.name%3Dweb");
    assert_eq!(
        query.get("fieldSelector").map(String::as_str),
        Some("metadata.name=web")
    );
    assert_eq!(query.len(), 2);
}

#[test]
fn the_kubeconfig_points_at_the_server() {
    let api = FakeKubeApi::start();
    let text = std::fs::read_to_string(api.kubeconfig()).unwrap();
    assert!(text.contains(&format!("server: {}\n", api.url())), "{text}");
    assert!(text.contains("current-context: fake"), "{text}");
}
