//! The boundary between the rules and the kernel: what the rule book, the Kubernetes resolver
//! and the overload loop need from a dataplane. `EbpfDataplane` (this folder) implements it on
//! the kernel's maps; `kubernetes::ServiceDataplane` wraps it to resolve `svc/` rules; tests use
//! an in-memory one (`testutil.rs`).

use crate::rules::dest::Dest;
use crate::rules::spec::RuleSpec;
use crate::rules::status::DestinationStatus;

/// What the daemon needs from the kernel side. Implemented by [`super::EbpfDataplane`].
pub trait Dataplane: Send + Sync + 'static {
    /// Makes `aliases` (endpoint -> ClusterIP:port) the endpoints that stand for their
    /// Service's ClusterIP on the client side for the `svc/` rule `owner` (empty: none), so
    /// that its limit holds when a socket load balancer translated the address before limiter
    /// saw it. Only the kernel dataplane keeps them; others ignore them.
    fn set_service_aliases(
        &self,
        _owner: &Dest,
        _aliases: &std::collections::BTreeMap<std::net::SocketAddr, std::net::SocketAddr>,
    ) -> anyhow::Result<()> {
        Ok(())
    }
    /// Drops the aliases a previous daemon left that no `svc/` rule claimed since the start.
    fn prune_service_aliases(&self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Creates or atomically replaces the rule for `rule.destination`. A new rule starts with
    /// the connections already open to its destination counted. Either all of it applies or
    /// nothing does.
    fn apply_rule(&self, rule: &RuleSpec) -> anyhow::Result<()>;
    /// Removes the rule; established connections are untouched. Returns false if there was none.
    fn delete_rule(&self, dest: &Dest) -> anyhow::Result<bool>;
    /// Counters of every destination that has a rule.
    fn status(&self) -> anyhow::Result<Vec<DestinationStatus>>;
    /// Every rule in force (the daemon sorts them for display).
    fn rules(&self) -> Vec<RuleSpec>;
    /// The rule in force for exactly `dest`, if any.
    fn rule_of(&self, dest: &Dest) -> Option<RuleSpec> {
        self.rules().into_iter().find(|r| &r.destination == dest)
    }
    /// The rules with `--adaptive`, for the overload loop (four times a second).
    fn adaptive_rules(&self) -> Vec<RuleSpec> {
        self.rules()
            .into_iter()
            .filter(|r| r.adaptive.is_some())
            .collect()
    }
    /// Counters of one destination's rule; None when it has none.
    fn counters(&self, dest: &Dest) -> anyhow::Result<Option<DestinationStatus>>;
    /// A one-line state of a destination whose rule is not simply in force (a `svc/` rule:
    /// `resolved`, `Service not found ...`), for `limiter list`.
    fn state_of(&self, _dest: &Dest) -> Option<String> {
        None
    }
    /// Sets the overload check's limit of `dest`'s rule on `side` (limiter_common::side) for
    /// the next `SHED_TTL_NS`, or clears it (None).
    fn set_shed(&self, dest: &Dest, shed: Option<(u8, u32)>) -> anyhow::Result<()>;
}
