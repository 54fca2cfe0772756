//! A Kubernetes Service in miniature: a virtual IP that exists only as iptables DNAT in the node
//! namespace, spreading new connections over backends the way kube-proxy (iptables mode) does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::testbed::Testbed;

static NEXT_CHAIN: AtomicU32 = AtomicU32::new(0);

/// `ip:port`, with brackets for IPv6 (the form of iptables' `--to-destination`).
fn to_destination(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

impl Testbed {
    /// Makes `vip` a Service address for traffic from pods: in the node namespace, nat
    /// PREROUTING sends TCP to `vip` into a chain of DNAT rules, one per backend, chosen
    /// round-robin per new connection like kube-proxy's (`-m statistic --mode nth`): for 3
    /// backends, rule 1 takes every 3rd, rule 2 every 2nd of the rest, rule 3 the remainder.
    /// No interface owns `vip`; pods reach it through their default route via the node.
    /// Conntrack keeps a connection (and its SYN retransmissions) on the backend it got.
    /// The rules go with the node namespace when the testbed is dropped.
    pub fn add_service(&self, vip: SocketAddr, backends: &[SocketAddr]) {
        assert!(!backends.is_empty(), "a service needs at least one backend");
        assert!(
            backends.iter().all(|b| b.is_ipv4() == vip.is_ipv4()),
            "backends of {vip} must be of its family: {backends:?}"
        );
        let iptables = if vip.is_ipv4() {
            "iptables"
        } else {
            "ip6tables"
        };
        let chain = format!("LIM-SVC-{}", NEXT_CHAIN.fetch_add(1, Ordering::Relaxed));
        let node = self.node();
        node.run(iptables, ["-w", "-t", "nat", "-N", &chain]);
        let vip_ip = vip.ip().to_string();
        let vip_port = vip.port().to_string();
        node.run(
            iptables,
            [
                "-w",
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-p",
                "tcp",
                "-d",
                &vip_ip,
                "--dport",
                &vip_port,
                "-j",
                &chain,
            ],
        );
        for (i, backend) in backends.iter().enumerate() {
            let remaining = backends.len() - i;
            let mut args: Vec<String> = ["-w", "-t", "nat", "-A", &chain, "-p", "tcp"]
                .map(String::from)
                .to_vec();
            if remaining > 1 {
                args.extend(
                    [
                        "-m",
                        "statistic",
                        "--mode",
                        "nth",
                        "--every",
                        &remaining.to_string(),
                        "--packet",
                        "0",
                    ]
                    .map(String::from),
                );
            }
            args.extend(["-j", "DNAT", "--to-destination"].map(String::from));
            args.push(to_destination(*backend));
            node.run(iptables, &args);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnat_targets_bracket_ipv6() {
        assert_eq!(
            to_destination("10.77.2.2:8080".parse().unwrap()),
            "10.77.2.2:8080"
        );
        assert_eq!(
            to_destination("[fd77::2]:8080".parse().unwrap()),
            "[fd77::2]:8080"
        );
    }
}
