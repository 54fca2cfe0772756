//! What a `svc/` destination means right now: the addresses that get client-side and server-side
//! rules, computed from one Service and its EndpointSlices, with no I/O, so that every rule below
//! is tested on fixtures as `kubectl get -o json` prints them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

use crate::rules::service_ref::PortRef;

/// Why a destination has the addresses it has; `Display` is a one-line reason for `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolveState {
    /// Nothing listed yet: the watcher has not had the Service and its EndpointSlices.
    Waiting,
    /// The API failed before the first resolution (RBAC, network); the watcher retries.
    ApiError(String),
    /// Resolved: `client` and `server` are what the Service means now. `server` may be empty:
    /// no endpoint of the Service runs on this node.
    Ready,
    /// The Service exists and the port matches, but there is no address at all: a headless
    /// Service with no serving endpoint, or a ClusterIP not allocated yet.
    NoAddresses,
    /// No such Service: not created yet, or deleted. The rule stays pending.
    ServiceMissing,
    /// `type: ExternalName` is a DNS alias: no ClusterIP, no endpoints, nothing to count.
    ExternalName { external_name: String },
    /// The Service has no port by that number or name.
    PortMissing {
        wanted: PortRef,
        available: Vec<String>,
    },
    /// The port exists but is UDP or SCTP; limiter counts TCP connections only.
    PortNotTcp { wanted: PortRef, protocol: String },
    /// No PORT was given and the Service has no TCP port (none at all, or only UDP/SCTP).
    NoTcpPorts { available: Vec<String> },
}

/// The label by which the EndpointSlice controller ties a slice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What a [`ServiceRef`](crate::rules::service_ref::ServiceRef) resolves to right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub state: ResolveState,
    /// Client-side destinations: each ClusterIP (both families of a dual-stack Service) and the
    /// Service port, which is what clients connect() to before kube-proxy's DNAT. For a headless
    /// Service, the serving endpoints on every node with the endpoint port, since its clients
    /// dial the pods directly.
    pub client: BTreeSet<SocketAddr>,
    /// Server-side destinations: the serving endpoints on this node and the endpoint port (the
    /// targetPort as the EndpointSlice publishes it), which is what arrives at the pod after DNAT.
    pub server: BTreeSet<SocketAddr>,
    /// Every serving endpoint (on any node) with its endpoint port -> the ClusterIP:port of the
    /// same family it stands for: what a socket load balancer that runs before limiter's
    /// connect4/6 (Cilium's) shows in connect() instead of the ClusterIP. Empty when headless
    /// (its endpoints are client destinations already).
    pub aliases: BTreeMap<SocketAddr, SocketAddr>,
}

impl Resolved {
    /// A state with no address.
    pub fn empty(state: ResolveState) -> Self {
        Resolved {
            state,
            client: BTreeSet::new(),
            server: BTreeSet::new(),
            aliases: BTreeMap::new(),
        }
    }
}

impl Default for Resolved {
    fn default() -> Self {
        Resolved::empty(ResolveState::Waiting)
    }
}

/// Resolves `port` of `service` (`None`: the Service does not exist) for `node`.
///
/// - PORT omitted means every TCP port of the Service; a number matches `spec.ports[].port`
///   (what clients dial, not the targetPort); a name matches `spec.ports[].name`.
/// - Only TCP ports count: UDP and SCTP ports are skipped (and named in the state when they were
///   asked for), because the dataplane counts TCP connections.
/// - The ClusterIPs come from `spec.clusterIPs` (both families), else `spec.clusterIP`; `None`
///   there means headless.
/// - An EndpointSlice port belongs to a Service port by NAME, which is how the EndpointSlice
///   controller links them (an unnamed single port is named "" or absent); its number is the
///   targetPort resolved for that slice's pods, so a named targetPort needs no lookup here.
/// - Only IPv4 and IPv6 slices count (FQDN slices hold names), and only slices labelled
///   `kubernetes.io/service-name: NAME` in the Service's namespace: the watcher selects by that
///   label, and this keeps a stray slice from ever adding addresses.
/// - An endpoint counts while it is serving: `conditions.serving`, else `ready`, is not false (a
///   missing condition means true, as the API documents). So a terminating endpoint that still
///   serves keeps its rule while it drains (it may still get new connections), and one that no
///   longer serves loses it; dropping a rule never cuts a connection. A starting pod gets its
///   rule from the same EndpointSlice update that makes kube-proxy send it traffic.
pub fn resolve(
    service: Option<&Service>,
    slices: &[EndpointSlice],
    node: &str,
    port: Option<&PortRef>,
) -> Resolved {
    let Some(service) = service else {
        return Resolved::empty(ResolveState::ServiceMissing);
    };
    let no_spec = ServiceSpec::default();
    let spec = service.spec.as_ref().unwrap_or(&no_spec);
    if spec.type_.as_deref() == Some("ExternalName") {
        let external_name = spec.external_name.clone().unwrap_or_default();
        return Resolved::empty(ResolveState::ExternalName { external_name });
    }
    let ports = match select_ports(spec, port) {
        Ok(ports) => ports,
        Err(state) => return Resolved::empty(state),
    };
    let vips = cluster_ips(spec);
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let namespace = service.metadata.namespace.as_deref();
    let slices: Vec<&EndpointSlice> = slices
        .iter()
        .filter(|s| belongs(s, name, namespace))
        .filter(|s| matches!(s.address_type.as_str(), "IPv4" | "IPv6"))
        .collect();

    let mut resolved = Resolved::empty(ResolveState::Ready);
    for service_port in ports {
        let Some(port) = valid_port(service_port.port) else {
            continue;
        };
        for ip in vips.iter().flatten() {
            resolved.client.insert(SocketAddr::new(*ip, port));
        }
        for slice in &slices {
            let Some(endpoint_port) = endpoint_port(slice, service_port) else {
                continue;
            };
            for endpoint in slice.endpoints.iter().filter(|e| serving(e)) {
                let here = endpoint.node_name.as_deref() == Some(node);
                for ip in endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                {
                    let addr = SocketAddr::new(ip, endpoint_port);
                    if here {
                        resolved.server.insert(addr);
                    }
                    match &vips {
                        None => {
                            resolved.client.insert(addr);
                        }
                        Some(vips) => {
                            if let Some(vip) = vips.iter().find(|v| v.is_ipv4() == ip.is_ipv4()) {
                                resolved.aliases.insert(addr, SocketAddr::new(*vip, port));
                            }
                        }
                    }
                }
            }
        }
    }
    if resolved.client.is_empty() && resolved.server.is_empty() {
        resolved.state = ResolveState::NoAddresses;
    }
    resolved
}

/// The TCP Service ports that `wanted` names, or the state that says why there are none.
fn select_ports<'a>(
    spec: &'a ServiceSpec,
    wanted: Option<&PortRef>,
) -> Result<Vec<&'a ServicePort>, ResolveState> {
    let all = spec.ports.as_deref().unwrap_or_default();
    let matching: Vec<&ServicePort> = all
        .iter()
        .filter(|p| match wanted {
            None => true,
            Some(PortRef::Number(n)) => p.port == i32::from(*n),
            Some(PortRef::Name(name)) => p.name.as_deref() == Some(name.as_str()),
        })
        .collect();
    let tcp: Vec<&ServicePort> = matching
        .iter()
        .copied()
        .filter(|p| is_tcp(p.protocol.as_deref()))
        .collect();
    if !tcp.is_empty() {
        return Ok(tcp);
    }
    let available = all.iter().map(describe).collect();
    Err(match (wanted, matching.first()) {
        (None, _) => ResolveState::NoTcpPorts { available },
        (Some(wanted), None) => ResolveState::PortMissing {
            wanted: wanted.clone(),
            available,
        },
        (Some(wanted), Some(port)) => ResolveState::PortNotTcp {
            wanted: wanted.clone(),
            protocol: port.protocol.clone().unwrap_or_default(),
        },
    })
}

/// `None`: headless. Otherwise the parsed ClusterIPs (empty while not allocated).
fn cluster_ips(spec: &ServiceSpec) -> Option<Vec<IpAddr>> {
    let ips: Vec<&str> = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    if ips.contains(&"None") {
        return None;
    }
    Some(ips.iter().filter_map(|ip| ip.parse().ok()).collect())
}

fn belongs(slice: &EndpointSlice, service: &str, namespace: Option<&str>) -> bool {
    let labels = slice.metadata.labels.as_ref();
    let label = labels.and_then(|l| l.get(SERVICE_NAME_LABEL));
    let same_namespace = match (slice.metadata.namespace.as_deref(), namespace) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    label.map(String::as_str) == Some(service) && same_namespace
}

/// The slice's port for `service_port`: same name, TCP, with a valid number.
fn endpoint_port(slice: &EndpointSlice, service_port: &ServicePort) -> Option<u16> {
    let name = service_port.name.as_deref().unwrap_or_default();
    let ports = slice.ports.as_deref().unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| p.name.as_deref().unwrap_or_default() == name && is_tcp(p.protocol.as_deref()))?;
    valid_port(port.port?)
}

fn serving(endpoint: &Endpoint) -> bool {
    let conditions = endpoint.conditions.as_ref();
    conditions.and_then(|c| c.serving.or(c.ready)) != Some(false)
}

/// Kubernetes defaults an absent protocol to TCP.
fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|p| p == "TCP")
}

fn valid_port(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p != 0)
}

/// `http (80/TCP)`, or `80/TCP` for an unnamed port: how the state lists a Service's ports.
fn describe(port: &ServicePort) -> String {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match port.name.as_deref() {
        Some(name) if !name.is_empty() => format!("{name} ({}/{protocol})", port.port),
        _ => format!("{}/{protocol}", port.port),
    }
}

impl fmt::Display for ResolveState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports = |available: &[String]| match available {
            [] => "it has no ports".to_owned(),
            _ => format!("its ports: {}", available.join(", ")),
        };
        match self {
            ResolveState::Waiting => f.write_str("waiting for the Kubernetes API"),
            ResolveState::ApiError(e) => write!(f, "Kubernetes API error (retrying): {e}"),
            ResolveState::Ready => f.write_str("resolved"),
            ResolveState::NoAddresses => {
                f.write_str("no addresses: no ClusterIP and no serving endpoint")
            }
            ResolveState::ServiceMissing => {
                f.write_str("Service not found (not created yet, or deleted)")
            }
            ResolveState::ExternalName { external_name } => write!(
                f,
                "ExternalName Service (a DNS alias of {external_name}) has no addresses to limit"
            ),
            ResolveState::PortMissing { wanted, available } => {
                write!(f, "the Service has no port {wanted}; {}", ports(available))
            }
            ResolveState::PortNotTcp { wanted, protocol } => {
                write!(
                    f,
                    "port {wanted} is {protocol}; only TCP ports can be limited"
                )
            }
            ResolveState::NoTcpPorts { available } => {
                write!(f, "the Service has no TCP port; {}", ports(available))
            }
        }
    }
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
