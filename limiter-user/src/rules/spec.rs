//! The rule model shared by the CLI, the control socket, the config file and the dataplane.
//!
//! `RuleSpec` is what a user sets (what `limiter status` reports is in `status.rs`). Field
//! names of their JSON forms are a documented, stable interface (docs/cli.md): add fields, never
//! rename or remove them.

use serde::{Deserialize, Serialize};

use crate::rules::adaptive::Adaptive;
use crate::rules::breaker::Breaker;
use crate::rules::dest::Dest;
pub use limiter_overload::Criticality;

/// What happens to a connection over a limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refuse at once: ECONNREFUSED in connect(), or a TCP RST to a remote caller.
    #[default]
    Reject,
    /// Discard the SYN; the caller's kernel retries it (about 1 s per retry here).
    Drop,
}

/// Where a rule is enforced. Accounting always covers both sides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Connections arriving at DEST on this node, in any network namespace.
    Server,
    /// Connections local processes open to DEST (refused inside connect()).
    Client,
    /// Both of the above.
    #[default]
    Both,
}

/// A rule: a destination and its limits. The one definition of a rule's fields: serde reads it
/// from the config, `limiter apply` and the socket, and clap from `limiter set`'s flags (the doc
/// comments are the flags' help; docs/config.md names each field's flag).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Normalised destination (`10.0.0.2:8080`, `[fd00::2]:8080`).
    #[arg(value_name = "DEST", help = DEST_HELP)]
    pub destination: Dest,

    /// Most established connections at any instant, per side (Istio's maxConnections):
    /// an integer >= 1, e.g. 100. [required unless --adaptive or a --breaker-* policy]
    #[arg(
        long,
        value_name = "N",
        required_unless_present_any = [
            "adaptive",
            "breaker_consecutive",
            "breaker_failure_ratio",
            "breaker_slow_ratio",
            "breaker_sre",
        ]
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,

    /// What happens to a connection over the limit: reject (refused at once) or drop (the SYN
    /// is discarded and the caller retries), e.g. --mode drop.
    #[arg(long, value_enum, default_value_t = Mode::Reject, value_name = "MODE")]
    #[serde(default)]
    pub mode: Mode,

    /// Where to enforce: server (connections arriving here), client (connections local
    /// processes open, refused in connect()) or both, e.g. --side server.
    #[arg(long, value_enum, default_value_t = Side::Both, value_name = "SIDE")]
    #[serde(default)]
    pub side: Side,

    /// New connections per second admitted (token bucket rate): an integer >= 1, e.g. 200.
    /// [default: no rate limit]
    #[arg(long, value_name = "R")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_rate: Option<u32>,

    /// Token bucket depth for --syn-rate: an integer >= 1, e.g. 400. [default: the rate]
    #[arg(long, value_name = "B", requires = "syn_rate")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_burst: Option<u32>,

    /// Most connections from one source address: an integer from 1 to --max-connections,
    /// e.g. 10. [default: no per-source limit]
    #[arg(long, value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_source: Option<u32>,

    /// Enforce nothing: count the connections that would be refused (the `dry_run` counters)
    /// and let them through.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,

    /// Overload protection (`--adaptive` and its flags, read by `limiter set` beside this
    /// struct): shed new connections while the workload is saturated. Boxed: most of tens of
    /// thousands of rules have none, and the rule book keeps two copies.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<Box<Adaptive>>,

    /// Circuit breaker (`--breaker-*`, read as `adaptive` is): fail connects to a failing
    /// endpoint at once. Boxed, as `adaptive`.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<Box<Breaker>>,

    /// Criticality under node-wide overload (`limiter system set`): sheddable destinations
    /// are shed first, critical-plus last; each keeps a minimum share. [default: critical]
    #[arg(
        long,
        value_name = "CLASS",
        value_parser = parse_priority,
        requires = "adaptive",
        help_heading = "Overload protection",
        display_order = 100
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Criticality>,

    /// An address rule the daemon derived from a `svc/` rule (never set by users; kept in the
    /// kernel's rule flags so a restarted daemon knows it).
    #[arg(skip)]
    #[serde(skip)]
    pub derived: bool,
}

/// A destination argument.
pub const DEST_HELP: &str = "Destination: ADDRESS:PORT, [IPV6]:PORT, CIDR:PORT, [IPV6-CIDR]:PORT or \
svc/NAMESPACE/NAME[:PORT] (a Kubernetes Service; PORT a port number or name), e.g. \
10.96.12.34:8080, [fd00::2]:8080, 10.0.0.0/24:8080 or svc/shop/checkout:http";

fn parse_priority(s: &str) -> Result<Criticality, String> {
    s.parse()
        .map_err(|e: limiter_overload::priority::ParseCriticalityError| e.to_string())
}

impl Mode {
    /// The name users write (`reject`, `drop`), as in the config and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Reject => "reject",
            Mode::Drop => "drop",
        }
    }
}

impl Side {
    /// The name users write (`server`, `client`, `both`), as in the config and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
            Side::Both => "both",
        }
    }
}

impl RuleSpec {
    /// One-line summary of a rule, as in the RULE column: `max 5 reject both, rate 100/s`.
    pub fn summary(&self) -> String {
        let decides = self.adaptive.is_some() || self.breaker.is_some();
        let mut s = match self.max_connections {
            Some(max) => format!("max {max} {} {}", self.mode.name(), self.side.name()),
            None if decides => format!("{} {}", self.mode.name(), self.side.name()),
            None => format!("accounting only, {}", self.side.name()),
        };
        if let Some(rate) = self.syn_rate {
            s += &format!(", rate {rate}/s burst {}", self.syn_burst.unwrap_or(rate));
        }
        if let Some(per_source) = self.per_source {
            s += &format!(", per-source {per_source}");
        }
        if self.dry_run {
            s += ", dry-run";
        }
        if let Some(a) = &self.adaptive {
            s += ", adaptive";
            if let Some(t) = a.cpu_threshold {
                s += &format!(" cpu>{t}");
            }
            if let Some(c) = &a.workload_cgroup {
                s += &format!(" cgroup {c}");
            }
        }
        if let Some(p) = self.priority {
            s += &format!(", priority {p}");
        }
        if let Some(b) = &self.breaker {
            s += &format!(", breaker {}", b.summary());
        }
        s
    }
}
