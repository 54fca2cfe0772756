//! The benchmark's node: the integration tests' [`Testbed`] (a node namespace routing between
//! pod namespaces) with addresses of the benchmark's own, and the contenders set up on it.
//!
//! Every address the benchmark uses is in 10.250.0.0/16 (pods) or 198.18.0.0/15 (rule scaling;
//! the server pod also has 198.19.0.2): the integration tests use 10.77-10.176, and limiter's cgroup programs are
//! global, so a test running at the same time never meets the benchmark's rules, nor the
//! benchmark theirs.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use limiter_integration_tests::{NetNs, Pod, Testbed};

pub use super::contender::Contender;
use super::daemon::BenchDaemon;

/// Pods of the node.
pub const CLIENT: u8 = 1;
pub const SERVER: u8 = 2;
pub const ATTACKER: u8 = 3;
pub const OTHER: u8 = 4;

/// The testbed, the limiter binary, and the daemon when a limiter contender is on.
pub struct World {
    pub bed: Testbed,
    pub bin: PathBuf,
    pub work: PathBuf,
    daemon: Option<BenchDaemon>,
}

pub fn addr(pod: u8, port: u16) -> SocketAddr {
    SocketAddr::V4(addr4(pod, port))
}

pub fn addr4(pod: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 250, pod, 2), port)
}

/// The server at an address in the middle of 198.18.0.0/15, where the rule-scaling scenario
/// spreads its rules: a lookup of it walks as deep into the rules trie as any.
pub fn deep(port: u16) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::new(198, 19, 0, 2).into(), port)
}

impl World {
    pub fn new(bin: PathBuf, work: PathBuf) -> Result<Self> {
        let bed = Testbed::new(4);
        for pod in bed.pods() {
            let i = pod.index();
            let vp = bed.plan().node_iface(i);
            bed.node().run(
                "ip",
                ["addr", "add", &format!("10.250.{i}.1/24"), "dev", &vp],
            );
            let ns = pod.ns();
            ns.run(
                "ip",
                ["addr", "add", &format!("10.250.{i}.2/24"), "dev", "eth0"],
            );
            let (gw, src) = (format!("10.250.{i}.1"), format!("10.250.{i}.2"));
            ns.run(
                "ip",
                ["route", "add", "10.250.0.0/16", "via", &gw, "src", &src],
            );
            // Tens of thousands of short connections per run: TIME_WAIT must not run out of ports.
            ns.run(
                "ip",
                ["route", "add", "198.18.0.0/15", "via", &gw, "src", &src],
            );
            ns.sysctl("net.ipv4.ip_local_port_range", "1024 65535");
            ns.sysctl("net.ipv4.tcp_tw_reuse", "1");
        }
        // The server's address among the rules of the rule-scaling scenario (see `deep`).
        let vp = bed.plan().node_iface(SERVER);
        bed.node()
            .run("ip", ["addr", "add", "198.19.0.1/24", "dev", &vp]);
        bed.pod(SERVER)
            .ns()
            .run("ip", ["addr", "add", "198.19.0.2/24", "dev", "eth0"]);
        std::fs::create_dir_all(&work)?;
        Ok(Self {
            bed,
            bin,
            work,
            daemon: None,
        })
    }

    pub fn pod(&self, i: u8) -> &Pod {
        self.bed.pod(i)
    }

    pub fn node(&self) -> &NetNs {
        self.bed.node()
    }

    /// The running daemon (a limiter contender is on).
    pub fn daemon(&self) -> Result<&BenchDaemon> {
        self.daemon.as_ref().context("no limiter daemon is running")
    }

    pub fn daemon_mut(&mut self) -> Result<&mut BenchDaemon> {
        self.daemon.as_mut().context("no limiter daemon is running")
    }

    /// Starts a fresh daemon (`on`) or stops it and checks its programs are detached.
    pub fn limiter(&mut self, on: bool) -> Result<()> {
        match (on, self.daemon.is_some()) {
            (true, false) => self.daemon = Some(BenchDaemon::start(&self.bin)?),
            (false, true) => self.daemon.take().expect("checked").shutdown()?,
            _ => {}
        }
        Ok(())
    }

    /// Limits each `(dest, max)` with `c` (starting or stopping the daemon as needed), runs
    /// `f`, then lifts the limits again (also when `f` fails).
    pub fn with_limits<T>(
        &mut self,
        c: Contender,
        limits: &[(SocketAddr, u32)],
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        self.limiter(c.is_limiter())?;
        self.apply(c, limits)?;
        let out = f(self);
        let cleared = self.clear(c, limits);
        let out = out?;
        cleared?;
        Ok(out)
    }

    fn apply(&mut self, c: Contender, limits: &[(SocketAddr, u32)]) -> Result<()> {
        let side_mode = match c {
            Contender::None | Contender::Unruled => return Ok(()),
            Contender::Elsewhere => {
                return self.daemon()?.set(
                    super::contender::ELSEWHERE,
                    100_000,
                    "client",
                    "reject",
                );
            }
            Contender::Client => ("client", "reject"),
            Contender::ServerReject => ("server", "reject"),
            Contender::ServerDrop => ("server", "drop"),
            Contender::Iptables => {
                for (dest, max) in limits {
                    self.node()
                        .run("iptables", iptables_rule("-A", *dest, *max));
                }
                return Ok(());
            }
            Contender::Nftables => {
                let rules: Vec<String> = limits.iter().map(|(d, m)| nft_rule(*d, *m)).collect();
                return self.nft_table(&rules, true);
            }
        };
        let daemon = self.daemon()?;
        for (dest, max) in limits {
            daemon.set(&dest.to_string(), *max, side_mode.0, side_mode.1)?;
        }
        Ok(())
    }

    fn clear(&mut self, c: Contender, limits: &[(SocketAddr, u32)]) -> Result<()> {
        match c {
            Contender::None | Contender::Unruled => {}
            Contender::Elsewhere => self.daemon()?.delete(super::contender::ELSEWHERE)?,
            Contender::Iptables => {
                self.node().run("iptables", ["-w", "-F", "FORWARD"]);
            }
            Contender::Nftables => self.nft_delete(),
            _ => {
                let daemon = self.daemon()?;
                for (dest, _) in limits {
                    daemon.delete(&dest.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Creates table `inet limiter_bench` in the node namespace: a forward base chain with
    /// `rules` (or, with `hooked` false, a regular chain nothing jumps to yet).
    pub fn nft_table(&self, rules: &[String], hooked: bool) -> Result<()> {
        let mut text = String::from("table inet limiter_bench {\n  chain limiterbench {\n");
        if hooked {
            text += "    type filter hook forward priority 0; policy accept;\n";
        }
        for r in rules {
            text += &format!("    {r}\n");
        }
        text += "  }\n}\n";
        let file = self.work.join("nft.rules");
        std::fs::write(&file, text)?;
        self.node().run("nft", ["-f", &file.display().to_string()]);
        Ok(())
    }

    pub fn nft_delete(&self) {
        let _ = self
            .node()
            .output("nft", ["delete", "table", "inet", "limiter_bench"]);
    }

    /// Leaves the node as it was: no daemon, no iptables or nftables rules of ours.
    pub fn reset(&mut self) {
        if let Some(d) = self.daemon.take()
            && let Err(e) = d.shutdown()
        {
            eprintln!("bench: warning: {e:#}");
        }
        let _ = self.node().output("iptables", ["-w", "-F", "FORWARD"]);
        let _ = self.node().output("iptables", ["-w", "-F", "LIMBENCH"]);
        let _ = self.node().output("iptables", ["-w", "-X", "LIMBENCH"]);
        self.nft_delete();
    }
}

/// `iptables OP FORWARD ... connlimit ... REJECT --reject-with tcp-reset` for `dest`.
pub fn iptables_rule(op: &str, dest: SocketAddr, max: u32) -> Vec<String> {
    let mut v: Vec<String> = ["-w", op, "FORWARD"].map(String::from).to_vec();
    v.extend(
        iptables_match(dest, max)
            .split_whitespace()
            .map(String::from),
    );
    v
}

/// The match and target of a connlimit rule (as iptables-restore takes it after `-A CHAIN`).
pub fn iptables_match(dest: SocketAddr, max: u32) -> String {
    format!(
        "-p tcp --syn -d {}/32 --dport {} -m connlimit --connlimit-above {max} \
         --connlimit-mask 0 -j REJECT --reject-with tcp-reset",
        dest.ip(),
        dest.port()
    )
}

/// An nftables rule refusing new connections to `dest` over `max`.
pub fn nft_rule(dest: SocketAddr, max: u32) -> String {
    format!(
        "ip daddr {} tcp dport {} ct state new ct count over {max} reject with tcp reset",
        dest.ip(),
        dest.port()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_the_destination() {
        let d = addr(SERVER, 8080);
        assert!(iptables_match(d, 5).starts_with("-p tcp --syn -d 10.250.2.2/32 --dport 8080"));
        assert!(nft_rule(d, 5).contains("ct count over 5"));
    }
}
