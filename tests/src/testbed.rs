//! A Kubernetes node in miniature: a "node" namespace that routes between "pod" namespaces.
//!
//! ```text
//!  pod i netns                      node netns (forwarding on, v4 and v6)
//!  eth0 10.<77+t>.i.2/24   <-veth->  vp<i> 10.<77+t>.i.1/24
//!       fd77:0:t:i::2/64                   fd77:0:t:i::1/64
//!  default via the node side
//! ```
//! `t` is the testbed's number in this process (0 for the first), so two testbeds never share
//! an address even if tests overlap.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::netns::NetNs;
use crate::traffic::{self, ConnectAttempt, HoldServer};

pub const V4_PREFIX_LEN: u8 = 24;
pub const V6_PREFIX_LEN: u8 = 64;

/// The addresses of one testbed. Pods are numbered from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrPlan {
    testbed: u8,
}

impl AddrPlan {
    /// Plan of the `n`-th testbed (wraps after 100, keeping the second octet within 77..=176).
    pub fn new(n: u32) -> Self {
        Self {
            testbed: (n % 100) as u8,
        }
    }

    fn check(pod: u8) {
        assert!(
            (1..=254).contains(&pod),
            "pod numbers run from 1 to 254, got {pod}"
        );
    }

    pub fn pod_v4(&self, pod: u8) -> Ipv4Addr {
        Self::check(pod);
        Ipv4Addr::new(10, 77 + self.testbed, pod, 2)
    }

    pub fn node_v4(&self, pod: u8) -> Ipv4Addr {
        Self::check(pod);
        Ipv4Addr::new(10, 77 + self.testbed, pod, 1)
    }

    pub fn pod_v6(&self, pod: u8) -> Ipv6Addr {
        Self::check(pod);
        Ipv6Addr::new(0xfd77, 0, self.testbed.into(), pod.into(), 0, 0, 0, 2)
    }

    pub fn node_v6(&self, pod: u8) -> Ipv6Addr {
        Self::check(pod);
        Ipv6Addr::new(0xfd77, 0, self.testbed.into(), pod.into(), 0, 0, 0, 1)
    }

    /// Name of the node side of pod `pod`'s veth pair (the pod side is always `eth0`).
    pub fn node_iface(&self, pod: u8) -> String {
        Self::check(pod);
        format!("vp{pod}")
    }
}

/// One pod: a namespace with `eth0` and a v4 and a v6 address.
pub struct Pod {
    ns: NetNs,
    index: u8,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
}

impl Pod {
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }
    pub fn index(&self) -> u8 {
        self.index
    }
    pub fn v4(&self) -> Ipv4Addr {
        self.v4
    }
    pub fn v6(&self) -> Ipv6Addr {
        self.v6
    }
    pub fn addr_v4(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.v4), port)
    }
    pub fn addr_v6(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(self.v6), port)
    }

    /// A listener created inside this pod (SO_REUSEADDR, backlog 1024).
    pub fn listen(&self, addr: SocketAddr) -> TcpListener {
        traffic::listen(&self.ns, addr)
    }

    /// A [`HoldServer`] listening on `addr` inside this pod.
    pub fn hold_server(&self, addr: SocketAddr) -> HoldServer {
        HoldServer::start(self.listen(addr))
    }

    /// A [`HoldServer`] in echo mode listening on `addr` inside this pod.
    pub fn echo_server(&self, addr: SocketAddr) -> HoldServer {
        HoldServer::start_echo(self.listen(addr))
    }

    /// Opens `n` connections to `addr` from this pod concurrently, each with its own connect
    /// timeout, and reports every attempt with its latency.
    pub fn connect_many_timed(
        &self,
        addr: SocketAddr,
        n: usize,
        timeout: Duration,
    ) -> Vec<ConnectAttempt> {
        traffic::connect_many(&self.ns, addr, n, timeout)
    }

    /// Like [`Self::connect_many_timed`], but each connection that succeeds is held for `hold`
    /// and then closed, like a request of fixed duration (`traffic::connect_many_holding`).
    pub fn connect_many_holding(
        &self,
        addr: SocketAddr,
        n: usize,
        timeout: Duration,
        hold: Duration,
    ) -> Vec<ConnectAttempt> {
        traffic::connect_many_holding(&self.ns, addr, n, timeout, hold)
    }

    /// [`Self::connect_many_timed`] without the latencies.
    pub fn connect_many(
        &self,
        addr: SocketAddr,
        n: usize,
        timeout: Duration,
    ) -> Vec<io::Result<TcpStream>> {
        self.connect_many_timed(addr, n, timeout)
            .into_iter()
            .map(|a| a.result)
            .collect()
    }

    /// Opens `n` connections that must all succeed (5 s connect timeout); panics otherwise.
    #[track_caller]
    pub fn connect_all(&self, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
        traffic::expect_connected(
            self.connect_many_timed(addr, n, Duration::from_secs(5)),
            addr,
        )
    }
}

/// A node namespace with pods attached; everything is deleted on drop.
pub struct Testbed {
    plan: AddrPlan,
    pods: Vec<Pod>,
    node: NetNs,
}

static NEXT_TESTBED: AtomicU32 = AtomicU32::new(0);

impl Testbed {
    /// Builds a node with `pods` pods, numbered 1..=pods.
    pub fn new(pods: u8) -> Self {
        let plan = AddrPlan::new(NEXT_TESTBED.fetch_add(1, Ordering::Relaxed));
        let node = NetNs::new("node");
        disable_dad(&node);
        let mut bed = Self {
            plan,
            pods: Vec::new(),
            node,
        };
        for index in 1..=pods {
            let pod = bed.attach_pod(index);
            bed.pods.push(pod);
        }
        // After the veths exist, so every interface forwards (`all` also updates `default`).
        bed.node.sysctl("net.ipv4.ip_forward", "1");
        bed.node.sysctl("net.ipv6.conf.all.forwarding", "1");
        for pod in &bed.pods {
            wait_oper_up(&bed.node, &plan.node_iface(pod.index));
            wait_oper_up(&pod.ns, "eth0");
        }
        bed
    }

    fn attach_pod(&self, index: u8) -> Pod {
        let plan = self.plan;
        let ns = NetNs::new(&format!("pod{index}"));
        disable_dad(&ns);
        let vp = plan.node_iface(index);
        let (v4, v6) = (plan.pod_v4(index), plan.pod_v6(index));
        let (gw4, gw6) = (plan.node_v4(index), plan.node_v6(index));

        let node = &self.node;
        node.run(
            "ip",
            [
                "link",
                "add",
                &vp,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns.name(),
            ],
        );
        node.run(
            "ip",
            ["addr", "add", &format!("{gw4}/{V4_PREFIX_LEN}"), "dev", &vp],
        );
        node.run(
            "ip",
            [
                "-6",
                "addr",
                "add",
                &format!("{gw6}/{V6_PREFIX_LEN}"),
                "dev",
                &vp,
                "nodad",
            ],
        );
        node.run("ip", ["link", "set", &vp, "up"]);

        ns.run(
            "ip",
            [
                "addr",
                "add",
                &format!("{v4}/{V4_PREFIX_LEN}"),
                "dev",
                "eth0",
            ],
        );
        ns.run(
            "ip",
            [
                "-6",
                "addr",
                "add",
                &format!("{v6}/{V6_PREFIX_LEN}"),
                "dev",
                "eth0",
                "nodad",
            ],
        );
        ns.run("ip", ["link", "set", "eth0", "up"]);
        ns.run("ip", ["route", "add", "default", "via", &gw4.to_string()]);
        ns.run(
            "ip",
            ["-6", "route", "add", "default", "via", &gw6.to_string()],
        );
        Pod { ns, index, v4, v6 }
    }

    pub fn plan(&self) -> AddrPlan {
        self.plan
    }

    pub fn node(&self) -> &NetNs {
        &self.node
    }

    /// Pod number `index` (from 1).
    /// Each pod of `pods` makes `n` parallel connects to `addr`, all pods at the same time
    /// (like Istio's scenarios' clients); every attempt of every pod, pod by pod.
    pub fn connect_from_pods(
        &self,
        pods: &[u8],
        addr: SocketAddr,
        n: usize,
        timeout: Duration,
    ) -> Vec<ConnectAttempt> {
        std::thread::scope(|scope| {
            let runs: Vec<_> = pods
                .iter()
                .map(|&c| {
                    let pod = self.pod(c);
                    scope.spawn(move || pod.connect_many_timed(addr, n, timeout))
                })
                .collect();
            runs.into_iter()
                .flat_map(|r| r.join().expect("client thread panicked"))
                .collect()
        })
    }

    pub fn pod(&self, index: u8) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.index == index)
            .unwrap_or_else(|| panic!("testbed has pods 1..={}, no pod {index}", self.pods.len()))
    }

    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// Names of every namespace of this testbed.
    pub fn netns_names(&self) -> Vec<String> {
        std::iter::once(self.node.name())
            .chain(self.pods.iter().map(|p| p.ns.name()))
            .map(str::to_owned)
            .collect()
    }
}

/// Waits until `iface` is operationally up. The kernel's link watcher, which may lag up to a
/// second behind `ip link set up`, sets the operstate and installs the queueing discipline
/// together; until then packets sent on a new veth are dropped, and a dropped SYN costs a test a
/// one-second retransmission.
fn wait_oper_up(ns: &NetNs, iface: &str) {
    let mut last = String::new();
    let up = crate::wait_until(Duration::from_secs(5), || {
        last = ns.run("ip", ["-o", "link", "show", "dev", iface]);
        last.contains(" state UP ")
    });
    assert!(
        up,
        "{iface} in netns {} not operationally up after 5 s: {last}",
        ns.name()
    );
}

/// IPv6 addresses usable at once: no duplicate address detection (also for link-local ones).
fn disable_dad(ns: &NetNs) {
    ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
    ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_testbed_uses_the_documented_addresses() {
        let plan = AddrPlan::new(0);
        assert_eq!(plan.pod_v4(1), Ipv4Addr::new(10, 77, 1, 2));
        assert_eq!(plan.node_v4(1), Ipv4Addr::new(10, 77, 1, 1));
        assert_eq!(plan.pod_v6(3), "fd77:0:0:3::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            plan.node_v6(3),
            "fd77:0:0:3::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(plan.node_iface(2), "vp2");
    }

    #[test]
    fn testbeds_never_share_addresses() {
        let (a, b) = (AddrPlan::new(0), AddrPlan::new(1));
        assert_eq!(b.pod_v4(1), Ipv4Addr::new(10, 78, 1, 2));
        assert_eq!(b.pod_v6(1), "fd77:0:1:1::2".parse::<Ipv6Addr>().unwrap());
        for pod in 1..=254 {
            assert_ne!(a.pod_v4(pod), b.pod_v4(pod));
            assert_ne!(a.pod_v6(pod), b.pod_v6(pod));
        }
    }

    #[test]
    fn pods_of_a_testbed_are_on_separate_subnets() {
        let plan = AddrPlan::new(7);
        let (p1, p2) = (plan.pod_v4(1).octets(), plan.pod_v4(2).octets());
        assert_ne!(p1[..3], p2[..3]);
        assert_eq!(
            plan.node_v4(1).octets()[..3],
            p1[..3],
            "node side shares the pod's /24"
        );
        assert_eq!(
            plan.node_v6(1).segments()[..4],
            plan.pod_v6(1).segments()[..4]
        );
    }

    #[test]
    fn second_octet_stays_valid_for_any_counter() {
        for n in [0, 99, 100, 4_000_000_000] {
            let octet = AddrPlan::new(n).pod_v4(1).octets()[1];
            assert!(
                (77..=176).contains(&octet),
                "testbed {n} got second octet {octet}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "pod numbers run from 1")]
    fn pod_zero_is_refused() {
        AddrPlan::new(0).pod_v4(0);
    }
}
