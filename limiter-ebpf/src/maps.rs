//! Every map of the dataplane. Userspace pins them under `<bpffs>/limiter/` by these names, so
//! names are part of the pinned format (see limiter_common::MAP_LAYOUT_VERSION). Userspace
//! knows them as limiter_common::names::maps (`#[map(name)]` takes only a literal; a test in
//! limiter-user checks the built object against that list).

use aya_ebpf::{
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use limiter_common::{
    Breaker, BreakerConfig, BreakerKey, ConnRecord, DestAddr, EVENTS_RING_BYTES, EventStats,
    FlowKey, Pending, RuleConfig, RuleState, RuleStats, SeedRequest, ShedLimit, SideSlots,
    SourceKey, capacity,
};

/// Hash maps whose elements the kernel changes in place must not be preallocated: a
/// preallocated element freed by a delete can be handed to a new key while a program still
/// writes through its old pointer.
const NO_PREALLOC: u32 = aya_ebpf::bindings::BPF_F_NO_PREALLOC;

/// Rules by destination; the most specific prefix wins.
#[map(name = "RULES")]
pub static RULES: LpmTrie<DestAddr, RuleConfig> = LpmTrie::pinned(capacity::RULES, NO_PREALLOC);

/// Slot state by rule id; changed only atomically.
#[map(name = "RULE_STATE")]
pub static RULE_STATE: HashMap<u64, RuleState> = HashMap::pinned(capacity::RULES, NO_PREALLOC);

/// Per-CPU counters by rule id.
#[map(name = "RULE_STATS")]
pub static RULE_STATS: PerCpuHashMap<u64, RuleStats> =
    PerCpuHashMap::pinned(capacity::RULES, NO_PREALLOC);

/// Dynamic limits of the overload check by rule id, written by the daemon with an expiry. The
/// kernel only reads them; a missing or expired entry means no shedding.
#[map(name = "SHED")]
pub static SHED: HashMap<u64, ShedLimit> = HashMap::pinned(capacity::RULES, NO_PREALLOC);

/// Client side of `svc/` rules where a socket load balancer (Cilium's, say) translated the
/// Service address inside connect() before limiter's connect4/6 ran: an endpoint (pod
/// address:targetPort) -> the ClusterIP:port whose rule counts a connection to it. Written by
/// the daemon from the Service's EndpointSlices; the kernel only reads it.
#[map(name = "ALIASES")]
pub static ALIASES: HashMap<DestAddr, DestAddr> = HashMap::pinned(capacity::ALIASES, NO_PREALLOC);

/// 1 (index 0) while another agent's program runs before limiter's connect4/6 at the governed
/// cgroup (the daemon checks at start and every second): only then can connect() show an
/// endpoint where the caller dialed a ClusterIP, so only then does connect4/6 consult ALIASES
/// (and a direct connection to a Service's pod counts to the Service: the two look the same).
#[map(name = "TRANSLATED_FIRST")]
pub static TRANSLATED_FIRST: Array<u32> = Array::with_max_entries(1, 0);

/// Handshake reservations by flow (server side).
#[map(name = "PENDING")]
pub static PENDING: LruHashMap<FlowKey, Pending> = LruHashMap::pinned(capacity::PENDING, 0);

/// Per-source slots (`--per-source`); only `used` and `pending` of SideSlots are used.
#[map(name = "SOURCES")]
pub static SOURCES: LruHashMap<SourceKey, SideSlots> = LruHashMap::pinned(capacity::SOURCES, 0);

/// Refusal events for `limiter events`. Not pinned: a new daemon reads a new ring.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// A word that is always 0 and that the verifier cannot know (verifier.rs): nothing writes
/// it. Not pinned.
#[map(name = "OPAQUE")]
pub static OPAQUE: Array<u64> = Array::with_max_entries(1, 0);

/// Per-CPU event counters and rate budget (index 0).
#[map(name = "EVENT_STATS")]
pub static EVENT_STATS: PerCpuArray<EventStats> = PerCpuArray::pinned(1, 0);

/// limiter_common::MAP_LAYOUT_VERSION of the pinned maps (index 0), written by the daemon and
/// checked by the next one before it reuses them.
#[map(name = "LAYOUT")]
pub static LAYOUT: Array<u32> = Array::pinned(1, 0);

/// The adoption generation (index 0), raised by the daemon when it creates a rule on a kernel
/// where open connections are adopted by their next packet (adopt.rs).
#[map(name = "ADOPT_GEN")]
pub static ADOPT_GEN: Array<u32> = Array::pinned(1, 0);

/// The seeding iterator's parameters (index 0), written by userspace before each run.
#[map(name = "SEED")]
pub static SEED: Array<SeedRequest> = Array::with_max_entries(1, 0);

/// One record per TCP socket seen established (or connecting under a client-side rule).
#[btf_map(name = "CONNS", pin_by_name)]
pub static CONNS: SkStorage<ConnRecord> = SkStorage::new();

/// The raw map pointer of CONNS, for `bpf_sk_storage_get` with a socket from any context
/// (aya-ebpf's SkStorage methods only accept a sock_addr context).
#[inline(always)]
pub fn conns_ptr() -> *mut core::ffi::c_void {
    core::ptr::addr_of!(CONNS) as *mut core::ffi::c_void
}

/// Circuit breaker policies by rule id (rules whose flags say BREAKER). Written by the daemon,
/// read by the kernel.
#[map(name = "BREAKER_RULES")]
pub static BREAKER_RULES: HashMap<u64, BreakerConfig> =
    HashMap::pinned(capacity::RULES, NO_PREALLOC);

/// Circuit breakers by (rule, endpoint), created by connect4/6 on first use and changed in
/// place by the kernel only (breaker.rs); the daemon reads them and forgets idle ones.
#[map(name = "BREAKERS")]
pub static BREAKERS: HashMap<BreakerKey, Breaker> =
    HashMap::pinned(capacity::BREAKERS, NO_PREALLOC);

/// Breakers of a rule's Service endpoints open now, by rule id (bounded by
/// BreakerConfig::max_ejected); changed atomically by the kernel.
#[map(name = "EJECTED")]
pub static EJECTED: HashMap<u64, u64> = HashMap::pinned(capacity::RULES, NO_PREALLOC);

/// 1 (index 0) while some rule has a breaker, written by the daemon: only then does the
/// ingress hook look at the first second of established client connections for a reset.
#[map(name = "BREAKERS_ON")]
pub static BREAKERS_ON: Array<u32> = Array::pinned(1, 0);

/// Client sockets (address, port; the rest of the key zero) whose SYN limiter's own server
/// side refused on this node, with the time (ns): their RST or timeout is limiter's, not the
/// endpoint's, and never counts against a breaker. Written only while breakers exist; LRU,
/// so a flood of refusals cannot fill it.
#[map(name = "SELF_REFUSED")]
pub static SELF_REFUSED: LruHashMap<FlowKey, u64> = LruHashMap::with_max_entries(16_384, 0);

/// The limiter_common::rule_kinds that exist (index 0), written by the daemon: a hook no rule
/// needs returns before it reads anything else.
#[map(name = "RULE_KINDS")]
pub static RULE_KINDS: Array<u32> = Array::pinned(1, 0);
