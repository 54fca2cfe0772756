//! Types shared by limiter's eBPF programs and its userspace daemon.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel and userspace read the same bytes from
//! the same maps. A change of layout is a change of the pinned maps' format, so
//! [`MAP_LAYOUT_VERSION`] must be bumped with it (the daemon refuses to adopt pins of another
//! layout instead of misreading them).
#![no_std]

/// Bumped whenever a map key or value below changes size or meaning.
pub const MAP_LAYOUT_VERSION: u32 = 1;

/// Destination as it appears in map keys: port first, then the address.
///
/// The port comes first so that one LPM trie can hold exact rules (`10.0.0.2:8080`, all 144 bits
/// significant) and CIDR rules (`10.0.0.0/24:8080`) together, and the most specific one wins.
/// IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`), so a dual-stack socket talking to a
/// v4-mapped address and a plain IPv4 socket land on the same key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DestAddr {
    /// Port in network byte order.
    pub port: [u8; 2],
    /// IPv6 address, or IPv4-mapped IPv4 address, in network byte order.
    pub addr: [u8; 16],
}

/// Bits of [`DestAddr`] taken by the port (the LPM prefix always covers them).
pub const PORT_BITS: u32 = 16;
/// Bits of [`DestAddr`] before the IPv4 part of an IPv4-mapped address.
pub const V4_MAPPED_PREFIX_BITS: u32 = PORT_BITS + 96;
/// LPM prefix length of an exact destination (port and whole address).
pub const EXACT_PREFIX_BITS: u32 = PORT_BITS + 128;

impl DestAddr {
    /// Builds a key from an IPv4 address and port, both in host order.
    pub const fn v4(addr: u32, port: u16) -> Self {
        let a = addr.to_be_bytes();
        Self {
            port: port.to_be_bytes(),
            addr: [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
            ],
        }
    }

    /// Builds a key from a 16-byte IPv6 address and a host-order port.
    pub const fn v6(addr: [u8; 16], port: u16) -> Self {
        Self {
            port: port.to_be_bytes(),
            addr,
        }
    }

    /// Port in host byte order.
    pub const fn port(&self) -> u16 {
        u16::from_be_bytes(self.port)
    }

    /// True when the address is IPv4-mapped.
    pub const fn is_v4(&self) -> bool {
        let a = &self.addr;
        a[0] == 0
            && a[1] == 0
            && a[2] == 0
            && a[3] == 0
            && a[4] == 0
            && a[5] == 0
            && a[6] == 0
            && a[7] == 0
            && a[8] == 0
            && a[9] == 0
            && a[10] == 0xff
            && a[11] == 0xff
    }
}

/// Which way a connection goes, seen from this node.
pub mod side {
    /// Accepted by a socket on this node (passive open); keyed by the local address.
    pub const INBOUND: u8 = 0;
    /// Opened by a process on this node (active open); keyed by the address it dialed.
    pub const OUTBOUND: u8 = 1;
}

/// Rule flags ([`RuleConfig::flags`]).
pub mod rule_flags {
    /// Discard the SYN (the caller retries) instead of refusing it at once.
    pub const MODE_DROP: u32 = 1 << 0;
    /// Enforce on connections arriving at this node (server side).
    pub const SIDE_SERVER: u32 = 1 << 1;
    /// Enforce on connections local processes open (client side, inside connect()).
    pub const SIDE_CLIENT: u32 = 1 << 2;
    /// Decide and count as if enforcing, but let every connection through.
    pub const DRY_RUN: u32 = 1 << 3;
    /// The daemon's overload check may set a dynamic limit on this rule (the SHED map), so every
    /// new connection is decided even when no static limit is set.
    pub const ADAPTIVE: u32 = 1 << 4;
    /// Set by the daemon on the address rules it derived from a Kubernetes Service rule, so a
    /// restarted daemon tells them from rules set by address. The kernel ignores it.
    pub const DERIVED: u32 = 1 << 5;
    /// The rule has a circuit breaker (its policy is in the BREAKER_RULES map, by rule id):
    /// connect() consults the breaker of the endpoint and the socket's handshake outcome is
    /// reported to it.
    pub const BREAKER: u32 = 1 << 6;
}

/// Which kinds of rules exist (the RULE_KINDS map, index 0), so that a hook no rule needs
/// returns at its first instructions: a connection no rule could cover pays (almost) nothing.
/// The daemon widens the set before it publishes a rule and narrows it after one is gone, so
/// the kernel never skips a rule that is in force.
pub mod rule_kinds {
    /// Some rule exists (sock_ops then looks up established connections' destinations).
    pub const ANY: u32 = 1 << 0;
    /// Some rule decides on the client side (connect4/6).
    pub const CLIENT: u32 = 1 << 1;
    /// Some rule decides on the server side (sk_lookup, the ingress hook's listener path).
    pub const SERVER: u32 = 1 << 2;
    /// Some client-side rule is in drop mode (the egress hook's SYN path).
    pub const CLIENT_DROP: u32 = 1 << 3;
}

impl RuleConfig {
    /// Whether the rule limits admissions at all: a connection count, a SYN rate, a
    /// per-source limit or the overload check. A rule with none only counts.
    pub const fn limits_anything(&self) -> bool {
        self.max_connections != 0
            || self.syn_rate != 0
            || self.per_source != 0
            || self.flags & rule_flags::ADAPTIVE != 0
    }

    /// Whether connect() decides connections under this rule: it is enforced on the client
    /// side and limits something or has a breaker (breakers act on the client side only, where
    /// the caller waits on a failing endpoint).
    pub const fn decides_client(&self) -> bool {
        self.flags & rule_flags::SIDE_CLIENT != 0
            && (self.limits_anything() || self.flags & rule_flags::BREAKER != 0)
    }

    /// Whether the server-side hooks decide connections under this rule.
    pub const fn decides_server(&self) -> bool {
        self.flags & rule_flags::SIDE_SERVER != 0 && self.limits_anything()
    }

    /// The [`rule_kinds`] this rule needs the hooks for: the same predicates the hooks decide
    /// by, so a hook that returns early for want of a kind never skips a rule it would decide.
    pub const fn kinds(&self) -> u32 {
        let mut kinds = rule_kinds::ANY;
        if self.decides_client() {
            kinds |= rule_kinds::CLIENT;
            if self.flags & rule_flags::MODE_DROP != 0 {
                kinds |= rule_kinds::CLIENT_DROP;
            }
        }
        if self.decides_server() {
            kinds |= rule_kinds::SERVER;
        }
        kinds
    }
}

/// A rule as the kernel sees it: the value of the rules LPM trie, keyed by destination.
///
/// Replacing the value is atomic for readers (an LPM trie update swaps the node), so a
/// `limiter set` on an existing destination never shows a half-written rule. Counters live
/// elsewhere, keyed by [`RuleConfig::id`], so changing a limit keeps them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleConfig {
    /// Identity of this rule's counters ([`RuleState`], [`RuleStats`]); never reused.
    pub id: u64,
    /// Most connections at any instant per side; 0 means no connection limit (accounting only).
    pub max_connections: u32,
    /// [`rule_flags`].
    pub flags: u32,
    /// New connections per second admitted (token bucket rate); 0 means no rate limit.
    pub syn_rate: u32,
    /// Token bucket depth for [`Self::syn_rate`].
    pub syn_burst: u32,
    /// Most connections from one source address; 0 means no per-source limit.
    pub per_source: u32,
    pub _pad: u32,
}

/// Length of a reservation bucket. A reservation for a handshake is made in the current bucket.
pub const PENDING_BUCKET_NS: u64 = 1_000_000_000;
/// Reservation buckets kept per rule and side (a ring indexed by epoch).
pub const PENDING_BUCKETS: usize = 4;
/// A reservation made in epoch `e` is void once the current epoch reaches `e + this`, so a
/// handshake that never completes holds its slot for at most this many buckets (3 s).
pub const PENDING_LIFETIME_BUCKETS: u64 = 3;

/// Slots of one side of one rule. Updated only with atomic instructions, in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SideSlots {
    /// Slots taken: established connections plus live handshake reservations. A new
    /// connection is admitted only by raising this from below the limit (compare-and-swap).
    pub used: u64,
    /// Established connections counted under this rule.
    pub established: u64,
    /// Handshake reservations, one word per bucket: `epoch << 32 | count`.
    pub pending: [u64; PENDING_BUCKETS],
    /// Token bucket as GCRA: the theoretical arrival time (ns) of the next new connection.
    pub rate_tat_ns: u64,
}

impl SideSlots {
    /// Reservations still valid at `now_epoch`.
    pub fn live_pending(&self, now_epoch: u64) -> u64 {
        let mut live = 0;
        for word in self.pending {
            let (epoch, count) = unpack_pending(word);
            if count > 0 && now_epoch < epoch + PENDING_LIFETIME_BUCKETS {
                live += count;
            }
        }
        live
    }
}

/// Splits a pending bucket word into (epoch, count).
pub const fn unpack_pending(word: u64) -> (u64, u64) {
    (word >> 32, word & 0xffff_ffff)
}

/// Joins an epoch and a count into a pending bucket word.
pub const fn pack_pending(epoch: u64, count: u64) -> u64 {
    (epoch << 32) | (count & 0xffff_ffff)
}

/// Live slot state of a rule, keyed by [`RuleConfig::id`]. Never preallocated: the kernel
/// holds pointers into it while it runs, so an element must not be recycled under it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleState {
    pub inbound: SideSlots,
    pub outbound: SideSlots,
}

/// How long a shed limit written by the daemon stays in force without a refresh. The daemon
/// rewrites it every sampling tick (250 ms), so four ticks may be missed (a slow tick, a
/// restart) before the kernel stops shedding by itself: a dead daemon never leaves a service
/// shed for longer than this.
pub const SHED_TTL_NS: u64 = 1_000_000_000;

/// A dynamic limit set by the overload check (the SHED map, keyed by [`RuleConfig::id`]): while
/// `now < expires_ns`, a new connection on `side` is refused with reason `shed` when the side's
/// slots already hold `limit`. Existing connections are never touched.
///
/// A separate map rather than a field of [`RuleConfig`]: the daemon rewrites it four times a
/// second, and the rule itself (and its LPM node) stays untouched by that churn.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShedLimit {
    /// bpf_ktime_get_ns (CLOCK_MONOTONIC) after which the limit is void.
    pub expires_ns: u64,
    /// Most connections (established plus handshakes in flight) while shedding; at least 1.
    pub limit: u32,
    /// [`side`] the limit applies to: the side the overload check measures.
    pub side: u8,
    pub _pad: [u8; 3],
}

/// Why a new connection was refused.
pub mod reason {
    /// `max_connections` reached (Envoy: `upstream_cx_overflow`).
    pub const LIMIT: usize = 0;
    /// Token bucket empty (`--syn-rate`).
    pub const RATE: usize = 1;
    /// The source address holds its `--per-source` share.
    pub const PER_SOURCE: usize = 2;
    /// Shed by the overload check.
    pub const SHED: usize = 3;
    /// Internal table full (fail closed for this destination).
    pub const TABLE_FULL: usize = 4;
    /// The endpoint's circuit breaker is open (or half-open with its probes out, or the SRE
    /// throttle rejected locally).
    pub const BREAKER: usize = 5;
    /// Every reason.
    pub const COUNT: usize = 6;
    /// Reasons counted in `SideStats::refused` (RULE_STATS). Breaker refusals are counted by
    /// each breaker ([`crate::Breaker::refused_total`]) instead: the per-CPU layout of the pinned
    /// RULE_STATS map predates them, and changing it would make an upgrade drop every counter.
    pub const COUNTED: usize = 5;
    pub const NAMES: [&str; COUNT] = [
        "limit",
        "rate",
        "per_source",
        "shed",
        "table_full",
        "breaker",
    ];
}

/// What was done to a refused connection.
pub mod action {
    /// Refused at once: ECONNREFUSED in connect(), or a TCP RST on the wire.
    pub const REJECT: usize = 0;
    /// SYN discarded; the caller's kernel retries.
    pub const DROP: usize = 1;
    /// Dry run: it would have been refused and was let through.
    pub const DRY_RUN: usize = 2;
    pub const COUNT: usize = 3;
    pub const NAMES: [&str; COUNT] = ["reject", "drop", "dry_run"];
}

/// Per-CPU counters of one side of a rule. Userspace sums them over CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SideStats {
    /// Connections that became established under this rule.
    pub opened: u64,
    /// Counted connections that closed.
    pub closed: u64,
    /// Sum of the lifetimes (ns) of the closed connections.
    pub lifetime_ns: u64,
    /// New connections admitted by a decision (SYN or connect()).
    pub accepted: u64,
    /// Refused new connections, `[reason][action]` (reasons before `reason::BREAKER`).
    pub refused: [[u64; action::COUNT]; reason::COUNTED],
}

/// Per-CPU counters of a rule, keyed by [`RuleConfig::id`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleStats {
    pub inbound: SideStats,
    pub outbound: SideStats,
}

/// [`ConnRecord::rule_id`] of a socket whose close has been accounted.
pub const CONN_CLOSED: u64 = u64::MAX;

/// Phases of a tracked socket ([`ConnRecord::phase`]).
pub mod phase {
    /// connect() reserved a slot in the rule's pending buckets; no SYN sent yet. If connect()
    /// fails before the SYN, the reservation simply expires with its bucket.
    pub const RESERVED: u32 = 0;
    /// SYN sent (client) with a slot held; close is reported through the state callback.
    pub const CONNECTING: u32 = 1;
    /// Established and counted as such.
    pub const ESTABLISHED: u32 = 2;
}

/// [`ConnRecord::flags`]: the socket also holds a per-source slot of its rule.
pub const CONN_F_PER_SOURCE: u8 = 1 << 0;
/// [`ConnRecord::flags`]: the handshake's outcome is reported to a circuit breaker of the
/// socket's rule (`established_ns` holds the connect() time until the handshake ends).
pub const CONN_F_BREAKER: u8 = 1 << 1;
/// [`ConnRecord::flags`]: the connection is a half-open breaker's probe.
pub const CONN_F_PROBE: u8 = 1 << 2;
/// [`ConnRecord::flags`]: the breaker is the endpoint's (the socket's remote address), not the
/// destination's (`dest`): connect() showed an endpoint standing for a Service's ClusterIP.
pub const CONN_F_ENDPOINT: u8 = 1 << 3;
/// [`ConnRecord::flags`]: the outcome has been reported (once per connection).
pub const CONN_F_REPORTED: u8 = 1 << 4;
/// [`ConnRecord::flags`]: a RST arrived while the handshake was in progress (refused).
pub const CONN_F_RST: u8 = 1 << 5;

/// Per-socket record (socket-local storage): which rule's slot the socket holds, so that its
/// close releases exactly that slot once, whatever happened to the rules meanwhile.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnRecord {
    /// Rule whose slot this socket holds: 0 none, [`CONN_CLOSED`] after close. Changed only by
    /// compare-and-swap or exchange, so exactly one of "count it" and "release it" wins a race.
    pub rule_id: u64,
    /// When the connection became established (ns, monotonic), 0 before.
    pub established_ns: u64,
    /// The destination the socket is keyed by on its side.
    pub dest: DestAddr,
    /// The other end's address (the source, for an inbound connection).
    pub peer: [u8; 16],
    /// [`side`].
    pub side: u8,
    /// `CONN_F_*`.
    pub flags: u8,
    /// [`phase`].
    pub phase: u32,
    /// Pending bucket epoch of a [`phase::RESERVED`] reservation.
    pub reserve_epoch: u32,
    /// The adoption generation (the `ADOPT_GEN` map) this socket was last checked
    /// against, where open connections are adopted by their next packet (kernels without the
    /// socket-storage iterator). Was padding: records of older builds read 0 here.
    pub adopt_gen: u32,
}

/// Key of a per-source slot counter: one source address's connections to one rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    pub rule_id: u64,
    pub addr: [u8; 16],
}

/// A TCP flow as seen on the server side: the key of a handshake reservation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Host byte order.
    pub sport: u16,
    /// Host byte order.
    pub dport: u16,
}

/// A handshake reservation: the SYN of this flow took a slot of `rule_id` in bucket `epoch`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub rule_id: u64,
    pub epoch: u32,
    /// [`pending_flags`].
    pub flags: u32,
}

/// [`Pending::flags`].
pub mod pending_flags {
    /// The reservation also holds a per-source slot (same bit as `CONN_F_PER_SOURCE`).
    pub const PER_SOURCE: u32 = super::CONN_F_PER_SOURCE as u32;
    /// The listener's cgroup_skb hook saw this flow's SYN. sk_lookup runs for any packet that
    /// finds no socket (a stray or duplicate ACK too, and it cannot see TCP flags), so its
    /// reservations stay unconfirmed until the SYN is seen; a non-SYN packet that meets an
    /// unconfirmed reservation gives it back at once.
    pub const CONFIRMED: u32 = 1 << 8;
    /// Dry run let the flow in over a limit: no slot is held; establishment takes one.
    pub const NO_SLOT: u32 = 1 << 9;
}

/// A request to the seeding iterator: count the open sockets that match `dest` on `side`
/// under rule `rule_id` (used when a rule is created while connections are already open).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeedRequest {
    pub rule_id: u64,
    /// LPM prefix length of the rule's key.
    pub prefix_len: u32,
    pub _pad: u32,
    pub dest: DestAddr,
    pub _pad2: [u8; 6],
}

/// A refusal, as streamed to `limiter events` through the EVENTS ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// bpf_ktime_get_ns (CLOCK_MONOTONIC) of the decision.
    pub time_ns: u64,
    pub rule_id: u64,
    /// The destination as dialed (client side) or as served (server side).
    pub dest: DestAddr,
    /// The source address (server side); the caller's pod key (client side, see
    /// `ConnRecord::peer`).
    pub peer: [u8; 16],
    /// [`side`].
    pub side: u8,
    /// [`reason`] index; for a breaker transition, the new [`breaker_state`].
    pub reason: u8,
    /// [`action`] index; for a breaker transition, its cause ([`outcome`] index).
    pub action: u8,
    /// [`event_kind`].
    pub kind: u8,
    pub _pad: [u8; 2],
}

/// What an [`Event`] reports.
pub mod event_kind {
    /// A new connection was refused (`dest` as dialed or served).
    pub const REFUSAL: u8 = 0;
    /// A circuit breaker changed state (`dest` is its endpoint).
    pub const BREAKER: u8 = 1;
}

/// Events a CPU may emit per second (and in one burst) before it suppresses them: a flood of
/// refusals must not flood the daemon. Suppressed events are counted.
pub const EVENTS_PER_SECOND_PER_CPU: u64 = 1000;
/// Size of the EVENTS ring buffer in bytes.
pub const EVENTS_RING_BYTES: u32 = 256 * 1024;

/// Per-CPU event counters (EVENT_STATS index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventStats {
    /// Written to the ring buffer.
    pub emitted: u64,
    /// Not emitted: over the per-CPU rate.
    pub suppressed: u64,
    /// Not emitted: the ring buffer was full (the reader fell behind).
    pub lost: u64,
    /// Token bucket of this CPU: tokens left, and when it was last refilled (ns).
    pub tokens: u64,
    pub refilled_ns: u64,
}

/// Capacities of the maps (documented in docs/operations.md).
pub mod capacity {
    /// Rules in the rules trie.
    pub const RULES: u32 = 131_072;
    /// Handshake reservations in flight (LRU: the oldest is evicted, which only makes its
    /// completion re-take a slot; it never frees one early).
    pub const PENDING: u32 = 65_536;
    /// (rule, source address) pairs with per-source counters (LRU; see docs/operations.md for
    /// what eviction means: that source's share restarts from zero, the rule's limit holds).
    pub const SOURCES: u32 = 65_536;
    /// Service endpoints standing for a ClusterIP (the `ALIASES` map): the endpoints of every
    /// `svc/` rule with a client side, on every node.
    pub const ALIASES: u32 = 131_072;
    /// Circuit breakers, one per (rule, endpoint) seen by connect(). When full, a new
    /// endpoint has no breaker (its connections flow) until the daemon forgets idle ones.
    pub const BREAKERS: u32 = 65_536;
}

mod breaker;
pub use breaker::*;

pub mod names;

#[cfg(feature = "sys")]
pub mod sys;

#[cfg(feature = "user")]
mod pod {
    use super::*;

    /// Marks the map keys and values as aya::Pod, each with the one reason it is sound.
    macro_rules! pod {
        ($($t:ty),* $(,)?) => {$(
            // SAFETY: a #[repr(C)] struct of integers and byte arrays only: every bit pattern
            // is a valid value, and padding bytes are never read as anything but bytes.
            unsafe impl aya::Pod for $t {}
        )*};
    }

    pod!(
        DestAddr,
        RuleConfig,
        SideSlots,
        RuleState,
        SideStats,
        RuleStats,
        ConnRecord,
        FlowKey,
        Pending,
        SeedRequest,
        SourceKey,
        Event,
        EventStats,
        ShedLimit,
        BreakerConfig,
        BreakerKey,
        Breaker,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_is_mapped_and_port_is_network_order() {
        let d = DestAddr::v4(0x0a00_0002, 8080);
        assert!(d.is_v4());
        assert_eq!(d.port, [0x1f, 0x90]);
        assert_eq!(&d.addr[12..], &[10, 0, 0, 2]);
        assert_eq!(d.port(), 8080);
    }

    #[test]
    fn v6_is_not_v4() {
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        assert!(!DestAddr::v6(a, 1).is_v4());
    }

    #[test]
    fn pending_word_round_trips_and_expires() {
        let w = pack_pending(7, 3);
        assert_eq!(unpack_pending(w), (7, 3));
        let mut s = SideSlots::default();
        s.pending[7 % PENDING_BUCKETS] = w;
        assert_eq!(s.live_pending(7), 3);
        assert_eq!(s.live_pending(7 + PENDING_LIFETIME_BUCKETS - 1), 3);
        assert_eq!(s.live_pending(7 + PENDING_LIFETIME_BUCKETS), 0);
    }

    #[test]
    fn layouts_have_no_surprises() {
        assert_eq!(core::mem::size_of::<DestAddr>(), 18);
        assert_eq!(core::mem::size_of::<RuleConfig>(), 32);
        assert_eq!(core::mem::size_of::<ConnRecord>(), 64);
        assert_eq!(core::mem::size_of::<Pending>(), 16);
        assert_eq!(core::mem::size_of::<SourceKey>(), 24);
        assert_eq!(core::mem::size_of::<Event>(), 56);
        assert_eq!(core::mem::size_of::<FlowKey>(), 36);
        assert_eq!(core::mem::size_of::<SeedRequest>(), 40);
        assert_eq!(core::mem::size_of::<ShedLimit>(), 16);
    }
}
