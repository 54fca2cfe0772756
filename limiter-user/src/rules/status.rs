//! What `limiter status` and `get` report for a destination: its rule, each side's counters,
//! refusals by reason, breakers, the overload check and the Service it belongs to. The JSON
//! field names are a documented, stable interface (docs/cli.md): add fields, never rename or
//! remove them.

use limiter_common::{action, reason};
use serde::Serialize;

use crate::rules::spec::RuleSpec;

/// Refusals of one side, by reason then action, serialized as
/// `{"limit": {"reject": N, "drop": N, "dry_run": N}, "rate": {...}, ...}` (`refused.limit.reject`).
/// A fixed array rather than nested maps: `status` of ten thousand destinations must not build
/// ten thousand small trees.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefusedCounts(pub [[u64; action::COUNT]; reason::COUNT]);

impl RefusedCounts {
    /// Every (reason, action, count), zeros included, in the documented order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        reason::NAMES
            .iter()
            .enumerate()
            .flat_map(move |(r, reason)| {
                action::NAMES
                    .iter()
                    .enumerate()
                    .map(move |(a, action)| (*reason, *action, self.0[r][a]))
            })
    }
}

impl Serialize for RefusedCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        struct ByAction<'a>(&'a [u64; action::COUNT]);
        impl Serialize for ByAction<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap as _;
                let mut m = s.serialize_map(Some(action::COUNT))?;
                for (name, n) in action::NAMES.iter().zip(self.0) {
                    m.serialize_entry(name, n)?;
                }
                m.end()
            }
        }
        let mut m = s.serialize_map(Some(reason::COUNT))?;
        for (name, by_action) in reason::NAMES.iter().zip(&self.0) {
            m.serialize_entry(name, &ByAction(by_action))?;
        }
        m.end()
    }
}

/// Counters of one side of a destination.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SideStatus {
    /// Established connections now.
    pub active: u64,
    /// Handshakes holding a reserved slot now.
    pub pending: u64,
    pub opened_total: u64,
    pub closed_total: u64,
    /// Sum of the lifetimes of closed connections, in seconds.
    pub lifetime_seconds_total: f64,
    /// New connections admitted by a decision.
    pub accepted_total: u64,
    /// Refused because the connection limit was reached (Envoy's `upstream_cx_overflow`).
    pub cx_overflow_total: u64,
    /// Every refusal, by reason then action.
    pub refused: RefusedCounts,
}

/// The overload check's figures of a destination (null for a rule without `--adaptive`),
/// flattened into its `limiter status -o json` object.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OverloadStatus {
    /// Filtered CPU of the workload, as a fraction of what it may use.
    pub cpu: Option<f64>,
    /// Where `cpu` is read from: `cgroup PATH`, `listener pid N cgroup PATH`, or `node`.
    pub cpu_source: Option<String>,
    /// Share of the last interval's CFS periods in which the workload was throttled (0-1),
    /// where its cgroup reports it.
    pub cpu_throttled: Option<f64>,
    /// The workload's CPU pressure, PSI `some avg10` (%), where available.
    pub cpu_pressure: Option<f64>,
    /// Established connections on the measured side.
    pub inflight: Option<u64>,
    /// Most connections completed in one bucket of the window.
    pub max_pass: Option<f64>,
    /// Least mean lifetime of a bucket's completed connections, ms.
    pub min_rt_ms: Option<f64>,
    /// maxPass x minRt x buckets/s / 1000; null while the window has no completed connection.
    pub max_inflight: Option<u64>,
    /// The limit the kernel enforces now while shedding (maxInflight, or less under node-wide
    /// overload by priority).
    pub shed_limit: Option<u64>,
    /// The check is armed: new connections over `shed_limit` are refused.
    pub shedding: bool,
    /// Refusals for reason `shed`, both sides, every action.
    pub shed_total: u64,
}

/// One line of `limiter status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DestinationStatus {
    pub destination: String,
    pub inbound: SideStatus,
    pub outbound: SideStatus,
    pub rule: Option<RuleSpec>,
    /// Where the rule comes from (`config` or `runtime`), filled in by the daemon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'static str>,
    /// How the connections open when the rule was created are counted: `exact` (at once) or
    /// `next_packet` (on a kernel without the seeding iterator: each when it next carries a
    /// packet, so idle ones go uncounted until then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seeding: Option<&'static str>,
    #[serde(flatten)]
    pub overload: OverloadStatus,
    /// For an address rule derived from a `svc/` rule: that rule's destination. For a `svc/`
    /// rule: its resolution state and the address rules it stands for now.
    #[serde(flatten)]
    pub service: ServiceStatus,
    /// The circuit breakers of the rule, one per endpoint seen (none without `--breaker-*`,
    /// or before the first connect()).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub breakers: Vec<BreakerStatus>,
}

/// One circuit breaker, as `limiter status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BreakerStatus {
    /// The endpoint as connect() showed it: the rule's own address, or one of a Service's
    /// endpoints.
    pub endpoint: String,
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    pub consecutive_failures: u64,
    pub successes_total: u64,
    /// Failed handshakes by kind: `refused`, `timeout`, `reset`.
    pub failures_total: FailureCounts,
    pub slow_total: u64,
    pub ejections_total: u64,
    /// Openings not done because the Service's max-ejection share was open already.
    pub ejection_overflow_total: u64,
    /// connect() calls this breaker refused (every action).
    pub refused_total: u64,
    pub in_state_seconds: f64,
    /// Time left before an open breaker lets probes through; null unless open.
    pub open_remaining_seconds: Option<f64>,
}

/// Failed handshakes by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FailureCounts {
    pub refused: u64,
    pub timeout: u64,
    pub reset: u64,
}

/// How a destination relates to a Kubernetes Service rule (`svc/NAMESPACE/NAME[:PORT]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServiceStatus {
    /// On an address destination: the `svc/` rule it was derived from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// On a `svc/` destination: `resolved`, `Service not found ...`, and so on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_state: Option<String>,
    /// On a `svc/` destination: the address destinations its rule is enforced on now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Vec<String>>,
}
