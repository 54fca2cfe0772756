//! `watch` against a scripted API server: lists with a resourceVersion, then watch streams of
//! newline-delimited events, as the real API server answers kube-runtime's watcher.
//! "This node" is node-a; the Service is svc/shop/api (one unnamed port, 80 -> 8080).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch as channel;
use tokio::task::JoinHandle;

use super::*;
use crate::kubernetes::testing::{Kind, MockApi};

const SERVICE: &str = include_str!("fixtures/svc-api.json");
const SLICE: &str = include_str!("fixtures/endpointslice-api.json");
/// Each step gets this long; the watcher's first backoff is 0.8-1.6 s.
const WAIT: Duration = Duration::from_secs(5);
const VIP: [&str; 1] = ["10.96.77.5:80"];

fn service(resource_version: &str) -> Value {
    let mut service: Value = serde_json::from_str(SERVICE).unwrap();
    service["metadata"]["resourceVersion"] = json!(resource_version);
    service
}

/// The fixture slice renamed `name`, at `resource_version`, with ready pods at `endpoints`
/// (address, node).
fn slice(name: &str, resource_version: &str, endpoints: &[(&str, &str)]) -> Value {
    let mut slice: Value = serde_json::from_str(SLICE).unwrap();
    let template = slice["endpoints"][0].clone();
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(address, node)| {
            let mut endpoint = template.clone();
            endpoint["addresses"] = json!([address]);
            endpoint["nodeName"] = json!(node);
            endpoint["targetRef"]["name"] =
                json!(format!("api-6b9c8d7f5-{}", address.replace('.', "")));
            endpoint
        })
        .collect();
    slice["endpoints"] = json!(endpoints);
    slice["metadata"]["name"] = json!(name);
    slice["metadata"]["resourceVersion"] = json!(resource_version);
    slice
}

fn ready(client: &[&str], server: &[&str]) -> Resolved {
    let parse = |list: &[&str]| list.iter().map(|a| a.parse().unwrap()).collect();
    Resolved {
        state: ResolveState::Ready,
        client: parse(client),
        server: parse(server),
        aliases: Default::default(),
    }
}

fn start(api: &MockApi) -> (channel::Receiver<Resolved>, JoinHandle<()>) {
    let (tx, rx) = channel::channel(Resolved::default());
    let svc: ServiceRef = "svc/shop/api".parse().unwrap();
    let task = tokio::spawn(watch(api.client(), svc, "node-a".into(), tx));
    (rx, task)
}

/// Waits until the published value satisfies `wanted`, failing after [`WAIT`].
async fn until(
    rx: &mut channel::Receiver<Resolved>,
    what: &str,
    wanted: impl FnMut(&Resolved) -> bool,
) -> Resolved {
    let outcome = tokio::time::timeout(WAIT, rx.wait_for(wanted)).await;
    match outcome.map(|r| r.map(|resolved| resolved.clone())) {
        Ok(Ok(resolved)) => resolved,
        Ok(Err(_)) => panic!("the watch ended while waiting for {what}"),
        Err(_) => panic!(
            "no {what} within {WAIT:?}; last published: {:?}",
            *rx.borrow()
        ),
    }
}

/// Waits for `expected`'s state and addresses. The endpoint aliases follow from the same
/// EndpointSlices and are checked in resolve_tests.rs; here they are left out of the comparison.
async fn expect(rx: &mut channel::Receiver<Resolved>, expected: Resolved) {
    until(rx, &format!("{expected:?}"), |r| {
        Resolved {
            aliases: Default::default(),
            ..r.clone()
        } == expected
    })
    .await;
}

/// Dropping the last receiver must end the watch.
async fn stop(rx: channel::Receiver<Resolved>, task: JoinHandle<()>) {
    drop(rx);
    let ended = tokio::time::timeout(WAIT, task).await;
    ended
        .expect("watch still running after its receiver was dropped")
        .unwrap();
}

#[tokio::test]
async fn follows_scale_up_a_move_and_deletion() {
    let api = MockApi::default();
    api.list(Kind::Services, "70200", &[service("70031")]);
    let two_nodes = [("10.244.1.40", "node-a"), ("10.244.2.41", "node-b")];
    api.list(
        Kind::EndpointSlices,
        "70200",
        &[slice("api-5gq7t", "70120", &two_nodes)],
    );
    let services = api.watch(Kind::Services);
    let slices = api.watch(Kind::EndpointSlices);
    let (mut rx, task) = start(&api);
    assert_eq!(rx.borrow().state, ResolveState::Waiting);
    expect(&mut rx, ready(&VIP, &["10.244.1.40:8080"])).await;

    // Scale up: the new replica lands on this node.
    let scaled = [two_nodes[0], two_nodes[1], ("10.244.1.42", "node-a")];
    slices.send("MODIFIED", &slice("api-5gq7t", "70215", &scaled));
    expect(
        &mut rx,
        ready(&VIP, &["10.244.1.40:8080", "10.244.1.42:8080"]),
    )
    .await;

    // The pod on node-b stops serving: this node's addresses stay; only that endpoint stops
    // standing for the ClusterIP (a socket load balancer no longer picks it).
    let mut other_node = slice("api-5gq7t", "70222", &scaled);
    other_node["endpoints"][1]["conditions"] =
        json!({"ready": false, "serving": false, "terminating": false});
    slices.send("MODIFIED", &other_node);
    let elsewhere: std::net::SocketAddr = "10.244.2.41:8080".parse().unwrap();
    let r = until(&mut rx, "node-b's endpoint dropped from the aliases", |r| {
        !r.aliases.contains_key(&elsewhere)
    })
    .await;
    assert_eq!(
        r.server,
        ready(&VIP, &["10.244.1.40:8080", "10.244.1.42:8080"]).server
    );

    // 10.244.1.40's pod is rescheduled to node-b as 10.244.2.43.
    let moved = [
        ("10.244.2.41", "node-b"),
        ("10.244.1.42", "node-a"),
        ("10.244.2.43", "node-b"),
    ];
    slices.send("MODIFIED", &slice("api-5gq7t", "70240", &moved));
    expect(&mut rx, ready(&VIP, &["10.244.1.42:8080"])).await;

    services.send("DELETED", &service("70250"));
    expect(&mut rx, Resolved::empty(ResolveState::ServiceMissing)).await;

    let requests = api.requests();
    let seen = |prefix: &str, parts: &[&str]| {
        let hit = requests
            .iter()
            .any(|r| r.starts_with(prefix) && parts.iter().all(|p| r.contains(p)));
        assert!(hit, "no request {prefix}...{parts:?} in {requests:#?}");
    };
    let services_path = "/api/v1/namespaces/shop/services?";
    let slices_path = "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices?";
    seen(services_path, &["fieldSelector=metadata.name%3Dapi"]);
    seen(
        services_path,
        &[
            "fieldSelector=metadata.name%3Dapi",
            "watch=true",
            "resourceVersion=70200",
        ],
    );
    seen(
        slices_path,
        &["labelSelector=kubernetes.io%2Fservice-name%3Dapi"],
    );
    let watch_slices = [
        "labelSelector=kubernetes.io%2Fservice-name%3Dapi",
        "watch=true",
        "resourceVersion=70200",
    ];
    seen(slices_path, &watch_slices);
    stop(rx, task).await;
}

#[tokio::test]
async fn a_missing_service_is_pending_until_it_is_created() {
    let api = MockApi::default();
    api.list(Kind::Services, "70100", &[]);
    api.list(Kind::EndpointSlices, "70100", &[]);
    let services = api.watch(Kind::Services);
    let slices = api.watch(Kind::EndpointSlices);
    let (mut rx, task) = start(&api);
    expect(&mut rx, Resolved::empty(ResolveState::ServiceMissing)).await;

    services.send("ADDED", &service("70110"));
    slices.send(
        "ADDED",
        &slice("api-5gq7t", "70120", &[("10.244.1.40", "node-a")]),
    );
    expect(&mut rx, ready(&VIP, &["10.244.1.40:8080"])).await;
    stop(rx, task).await;
}

#[tokio::test]
async fn relists_after_410_gone_and_drops_what_vanished_meanwhile() {
    let api = MockApi::default();
    api.list(Kind::Services, "70200", &[service("70031")]);
    let kept = slice("api-5gq7t", "70120", &[("10.244.1.40", "node-a")]);
    let gone = slice("api-9zx2w", "70130", &[("10.244.1.50", "node-a")]);
    api.list(Kind::EndpointSlices, "70200", &[kept.clone(), gone]);
    let _services = api.watch(Kind::Services);
    let first = api.watch(Kind::EndpointSlices);
    // The relist after 410: api-9zx2w was deleted while this watch was too far behind to see it.
    api.list(Kind::EndpointSlices, "70400", &[kept]);
    let second = api.watch(Kind::EndpointSlices);
    let (mut rx, task) = start(&api);
    expect(
        &mut rx,
        ready(&VIP, &["10.244.1.40:8080", "10.244.1.50:8080"]),
    )
    .await;

    let expired = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "too old resource version: 70200 (70390)", "reason": "Expired", "code": 410,
    });
    first.send("ERROR", &expired);
    expect(&mut rx, ready(&VIP, &["10.244.1.40:8080"])).await;

    // And it watches on from the new list.
    let scaled = [("10.244.1.40", "node-a"), ("10.244.1.42", "node-a")];
    second.send("MODIFIED", &slice("api-5gq7t", "70410", &scaled));
    expect(
        &mut rx,
        ready(&VIP, &["10.244.1.40:8080", "10.244.1.42:8080"]),
    )
    .await;
    let rewatched =
        |r: &String| r.contains("endpointslices?") && r.contains("resourceVersion=70400");
    assert!(
        api.requests().iter().any(rewatched),
        "{:#?}",
        api.requests()
    );
    stop(rx, task).await;
}

#[tokio::test]
async fn an_api_error_before_the_first_result_is_published_and_retried() {
    let api = MockApi::default();
    let forbidden = "services is forbidden: User \"system:serviceaccount:limiter-system:limiter\" \
                     cannot list resource \"services\" in API group \"\" in the namespace \"shop\"";
    api.list_fails(
        Kind::Services,
        http::StatusCode::FORBIDDEN,
        "Forbidden",
        forbidden,
    );
    api.list(Kind::Services, "70200", &[service("70031")]);
    api.list(
        Kind::EndpointSlices,
        "70200",
        &[slice("api-5gq7t", "70120", &[("10.244.1.40", "node-a")])],
    );
    let _services = api.watch(Kind::Services);
    let _slices = api.watch(Kind::EndpointSlices);
    let (mut rx, task) = start(&api);
    let failed = until(&mut rx, "an API error", |r| {
        matches!(r.state, ResolveState::ApiError(_))
    })
    .await;
    assert!(
        failed.state.to_string().contains("services is forbidden"),
        "{}",
        failed.state
    );
    assert!(failed.client.is_empty() && failed.server.is_empty());

    expect(&mut rx, ready(&VIP, &["10.244.1.40:8080"])).await;
    stop(rx, task).await;
}
