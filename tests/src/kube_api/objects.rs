//! Objects as the API server prints them, for a test to
//! [`FakeKubeApi::apply`](super::FakeKubeApi::apply).

use std::net::IpAddr;

use serde_json::{Value, json};

/// A ClusterIP Service `namespace/name` at `cluster_ip`, with TCP `ports` of
/// (name, port, targetPort), selecting pods labelled `app: name`.
pub fn service(
    namespace: &str,
    name: &str,
    cluster_ip: impl Into<IpAddr>,
    ports: &[(&str, u16, u16)],
) -> Value {
    let cluster_ip: IpAddr = cluster_ip.into();
    let family = if cluster_ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let ports: Vec<Value> = ports
        .iter()
        .map(|(port_name, port, target)| {
            json!({"name": port_name, "port": port, "protocol": "TCP", "targetPort": target})
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": name},
        },
        "spec": {
            "clusterIP": cluster_ip.to_string(),
            "clusterIPs": [cluster_ip.to_string()],
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": [family],
            "ipFamilyPolicy": "SingleStack",
            "ports": ports,
            "selector": {"app": name},
            "sessionAffinity": "None",
            "type": "ClusterIP",
        },
        "status": {"loadBalancer": {}},
    })
}

/// One endpoint of an EndpointSlice: a ready pod at `address` on node `node`.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub address: IpAddr,
    pub node: String,
    pub ready: bool,
}

impl Endpoint {
    pub fn ready(address: impl Into<IpAddr>, node: &str) -> Self {
        Self {
            address: address.into(),
            node: node.to_owned(),
            ready: true,
        }
    }
}

/// An EndpointSlice `namespace/name` of Service `service` (labelled
/// `kubernetes.io/service-name`, owned by it), with TCP `ports` of (name, port) and `endpoints`,
/// as the EndpointSlice controller writes one. The address type follows the first endpoint
/// (IPv4 if none).
pub fn endpoint_slice(
    namespace: &str,
    name: &str,
    service: &str,
    ports: &[(&str, u16)],
    endpoints: &[Endpoint],
) -> Value {
    let v6 = endpoints.first().is_some_and(|e| e.address.is_ipv6());
    let ports: Vec<Value> = ports
        .iter()
        .map(|(port_name, port)| json!({"name": port_name, "port": port, "protocol": "TCP"}))
        .collect();
    let endpoints: Vec<Value> = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            json!({
                "addresses": [e.address.to_string()],
                "conditions": {"ready": e.ready, "serving": e.ready, "terminating": false},
                "nodeName": e.node,
                "targetRef": {
                    "kind": "Pod",
                    "name": format!("{service}-5d8f7c9b6-{i}x{}", e.address.to_string().replace([':', '.'], "")),
                    "namespace": namespace,
                },
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "generateName": format!("{service}-"),
            "labels": {
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "kubernetes.io/service-name": service,
            },
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Service", "name": service,
                "blockOwnerDeletion": true, "controller": true,
                "uid": "00000000-0000-4000-8000-000000000000",
            }],
        },
        "addressType": if v6 { "IPv6" } else { "IPv4" },
        "endpoints": endpoints,
        "ports": ports,
    })
}
