//! The admission decision for a new connection (a SYN, or a connect()), shared by every hook.

use aya_ebpf::bindings::BPF_NOEXIST;
use limiter_common::{
    CONN_F_PER_SOURCE, ConnRecord, RuleConfig, SideSlots, SourceKey, reason, rule_flags, side,
};

use crate::{
    maps::{SHED, SOURCES},
    rules,
    slots::{force_take, give_back, mark_pending, rate_admit, reclaim, take},
};

pub enum Decision {
    /// A slot was taken and recorded as a reservation of epoch `epoch`; `flags` says what
    /// else it holds (CONN_F_PER_SOURCE).
    Admit { flags: u8 },
    /// Over a limit, for `reason` (limiter_common::reason).
    Refuse(usize),
}

/// The overload check's limit on `which` side of the rule, if one is in force at `now_ns`
/// (0 = none). An entry the daemon stopped refreshing is void once it expires.
#[inline(always)]
fn shed_limit(cfg: &RuleConfig, which: u8, now_ns: u64) -> u32 {
    if cfg.flags & rule_flags::ADAPTIVE == 0 {
        return 0;
    }
    // SAFETY: a plain read of a map value that only userspace writes (whole-value updates).
    match unsafe { SHED.get(&cfg.id) } {
        Some(s) if s.side == which && now_ns < s.expires_ns => s.limit,
        _ => 0,
    }
}

/// The tighter of a static limit and a shed limit (0 = unlimited), and whether the shed limit
/// is the binding one (so a refusal is counted as `shed`, not `limit`).
#[inline(always)]
fn effective_limit(static_limit: u32, shed: u32) -> (u32, bool) {
    if shed != 0 && (static_limit == 0 || shed < static_limit) {
        (shed, true)
    } else {
        (static_limit, false)
    }
}

/// The per-source slots of `source` for a rule, created on first use.
#[inline(always)]
pub fn source_slots(rule_id: u64, source: &[u8; 16]) -> Option<*mut SideSlots> {
    let key = SourceKey {
        rule_id,
        addr: *source,
    };
    if let Some(p) = SOURCES.get_ptr_mut(&key) {
        return Some(p);
    }
    // A concurrent insert of the same key makes this fail with EEXIST; the lookup then finds it.
    let _ = SOURCES.insert(&key, &SideSlots::default(), u64::from(BPF_NOEXIST));
    SOURCES.get_ptr_mut(&key)
}

/// The per-entity key of a client-side slot: the caller's network namespace, i.e. its pod.
/// Written where an address would be, in ff00::/8 (multicast, never a TCP source), so it
/// cannot collide with a per-source key of the same rule.
#[inline(always)]
pub fn client_key(netns_cookie: u64) -> [u8; 16] {
    let c = netns_cookie.to_be_bytes();
    [
        0xff, 0, 0, 0, 0, 0, 0, 0, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
    ]
}

/// For a connection counted under `cfg` without a decision (adopted by seeding, or connected
/// before its rule existed): on the client side, where `max_connections` counts per client
/// pod, it also takes its pod's slot, so that pod's next connect() sees it. Call before the
/// compare-and-swap that makes the socket the rule's: the close path must find the flag set.
/// Returns the pod slot taken, to give back if that compare-and-swap fails.
#[inline(always)]
pub fn take_entity_slot(cfg: &RuleConfig, rec: &mut ConnRecord) -> Option<*mut SideSlots> {
    let per_pod = rec.side == side::OUTBOUND
        && cfg.max_connections != 0
        && cfg.flags & rule_flags::SIDE_CLIENT != 0
        // A pod key (client_key) was recorded: ff00::/8.
        && rec.peer[0] == 0xff;
    if !per_pod {
        rec.flags = 0;
        return None;
    }
    let src = source_slots(cfg.id, &rec.peer)?;
    force_take(src);
    rec.flags = CONN_F_PER_SOURCE;
    Some(src)
}

/// The rule-wide checks of a new connection once it holds the rule's slot: the SYN rate, then
/// the reservation in the current bucket. Some(reason) if refused; the rule's slot is then
/// given back.
#[inline(always)]
fn rule_verdict(cfg: &RuleConfig, slots: *mut SideSlots, now_ns: u64, epoch: u64) -> Option<usize> {
    if !rate_admit(slots, cfg.syn_rate, cfg.syn_burst, now_ns) {
        give_back(slots);
        Some(reason::RATE)
    } else if !mark_pending(slots, epoch) {
        Some(reason::LIMIT)
    } else {
        None
    }
}

/// Decides a new connection of `which` side to the rule `cfg`. On admission the slots are
/// taken and recorded as reservations of `epoch`.
///
/// `entity` is who the per-entity share belongs to: the source address on the server side
/// (`--per-source`), the caller's pod ([`client_key`]) on the client side, where
/// `--max-connections` counts per client pod like one sidecar per pod does (3 client pods with
/// a limit of 5 can hold 15), while the server side counts the destination as a whole.
#[inline(always)]
pub fn decide(cfg: &RuleConfig, which: u8, entity: &[u8; 16], now_ns: u64, epoch: u64) -> Decision {
    let Some(slots) = rules::slots(cfg.id, which) else {
        // The rule's state is created before the rule is published; a missing state means the
        // rule is being deleted. Decide as if it were gone.
        return Decision::Admit { flags: 0 };
    };
    reclaim(slots, epoch);

    let (entity_limit, rule_limit, entity_reason) = if which == side::INBOUND {
        (cfg.per_source, cfg.max_connections, reason::PER_SOURCE)
    } else {
        (cfg.max_connections, 0, reason::LIMIT)
    };
    // The overload check's limit counts the whole side (every client pod together), like a
    // static server-side limit.
    let (rule_limit, shedding) = effective_limit(rule_limit, shed_limit(cfg, which, now_ns));
    // The rule's own slot first: a flood at a full rule is refused here without creating a
    // per-source entry, so it cannot churn the per-source table and evict real callers.
    if !take(slots, rule_limit) {
        return Decision::Refuse(if shedding {
            reason::SHED
        } else {
            reason::LIMIT
        });
    }
    // With no per-entity limit the rest is the rule's alone; with one, the per-entity slot is
    // handled in a branch of its own. Not one tail with an `Option` of the per-entity pointer:
    // LLVM encodes that option as `entity_limit != 0`, re-read from its stack spill, and Linux
    // 6.1's verifier does not link a spilled scalar to the register it was tested in (newer
    // ones, 6.12 here, give the spill an id). It then walks "pointer NULL, yet entity_limit
    // != 0" and rejects the give_back through NULL: "R7 invalid mem access 'scalar'" at an
    // atomic64_fetch_add in cgroup_ingress.
    if entity_limit == 0 {
        return match rule_verdict(cfg, slots, now_ns, epoch) {
            Some(r) => Decision::Refuse(r),
            None => Decision::Admit { flags: 0 },
        };
    }
    let Some(src) = source_slots(cfg.id, entity) else {
        give_back(slots);
        return Decision::Refuse(reason::TABLE_FULL);
    };
    reclaim(src, epoch);
    if !take(src, entity_limit) {
        give_back(slots);
        return Decision::Refuse(entity_reason);
    }
    match rule_verdict(cfg, slots, now_ns, epoch) {
        Some(r) => {
            give_back(src);
            Decision::Refuse(r)
        }
        None if mark_pending(src, epoch) => Decision::Admit {
            flags: CONN_F_PER_SOURCE,
        },
        None => Decision::Admit { flags: 0 },
    }
}
