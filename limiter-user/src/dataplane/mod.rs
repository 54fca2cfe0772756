//! The kernel side of the daemon: loads limiter's eBPF object, attaches it, and owns its maps.
//!
//! Maps and links are pinned under `<bpffs>/limiter/`: the kernel keeps enforcing and counting
//! while no daemon runs, and the next daemon adopts both (rules included: the rules map is the
//! source of truth, so runtime rules survive a restart).
//!
//! `boundary.rs` is the [`Dataplane`] trait the rest of the daemon sees. At start, in order:
//! `capabilities.rs` probes the kernel (with `probe.rs`'s minimal programs), this file loads
//! the object and opens the pinned maps, `programs.rs` attaches (or adopts) the programs,
//! `neighbours.rs` lists other agents' programs on the same hooks. Then each rule change goes
//! to `tables.rs` (the rule maps and counters), `breakers.rs` (breaker policies and state),
//! `aliases.rs` (a Service's endpoints) and `kinds.rs` (which hooks have anything to decide);
//! `events.rs` reads the kernel's refusal events. `sys.rs` holds the bpf(2) calls aya lacks.

mod aliases;
mod boundary;
mod breakers;
pub mod capabilities;
mod events;
mod kinds;
pub mod neighbours;
mod probe;
mod programs;
pub mod sys;
mod tables;

#[cfg(test)]
#[path = "names_tests.rs"]
mod names_tests;

pub use boundary::Dataplane;

pub use sys::monotonic_ns;

use std::{collections::BTreeMap, path::PathBuf, sync::Mutex};

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader};
use limiter_common::{MAP_LAYOUT_VERSION, names};
use tracing::{info, warn};

use self::capabilities::{Capabilities, SEED_ITERATOR, SET_RETVAL};
use crate::rules::dest::Dest;
use crate::rules::spec::RuleSpec;
use crate::rules::status::DestinationStatus;

/// Where the daemon attaches and pins.
#[derive(Clone, Debug)]
pub struct Options {
    /// cgroup v2 directory to attach to; None = the detected cgroup2 root.
    pub cgroup: Option<PathBuf>,
    /// bpffs mount point; pins go to `<bpffs>/limiter/`.
    pub bpffs: PathBuf,
}

struct Inner {
    ebpf: Ebpf,
    tables: tables::Tables,
    aliases: aliases::Aliases,
    breakers: breakers::Breakers,
    kinds: kinds::Kinds,
    rules: BTreeMap<Dest, (u64, RuleSpec)>,
    next_id: u64,
    links_dir: PathBuf,
    maps_dir: PathBuf,
    /// Namespaces seen by the last scan (for `describe`).
    namespaces: usize,
    /// Another agent's program runs before our connect hooks (for `describe`).
    translated_first: bool,
}

/// The kernel lacks a capability the daemon cannot do without; `limiter daemon` exits with
/// [`UnsupportedKernel::EXIT_CODE`] before anything is attached.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UnsupportedKernel(pub String);

impl UnsupportedKernel {
    /// Exit status of a daemon refused by the kernel (1 is any other error).
    pub const EXIT_CODE: u8 = 3;
}

pub use events::{EventRecord, EventTotals};

pub struct EbpfDataplane {
    inner: Mutex<Inner>,
    events: events::EventFeed,
    cgroup: PathBuf,
    pin_dir: PathBuf,
    capabilities: Capabilities,
}

/// Drains aya-log records on a thread of their own, for as long as the process lives.
fn spawn_kernel_log<T: log::Log + Send + 'static>(
    mut logger: aya_log::EbpfLogger<T>,
) -> anyhow::Result<()> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    std::thread::Builder::new()
        .name("limiter-kernel-log".into())
        .spawn(move || {
            loop {
                let fd = logger.as_fd().as_raw_fd();
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; -1 waits until records arrive.
                unsafe { libc::poll(&mut pfd, 1, -1) };
                logger.flush();
            }
        })?;
    Ok(())
}

/// Takes the map `name` out of the loaded object as a `T`, with an error that names it (every
/// table of the dataplane is opened this way).
fn take_map<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> anyhow::Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow::anyhow!("map {name} missing from the object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type or layout"))
}

/// Refuses to reuse pinned maps of another layout: they would be misread, or reset. A build
/// that changes the layout bumps MAP_LAYOUT_VERSION and adds its migration here.
fn check_layout(maps_dir: &std::path::Path) -> anyhow::Result<()> {
    let pin = maps_dir.join(names::maps::LAYOUT);
    if !pin.exists() {
        let leftovers = std::fs::read_dir(maps_dir)?.next().is_some();
        anyhow::ensure!(
            !leftovers,
            "{} holds maps without a layout version (an unknown build); \
             `limiter daemon --cleanup` removes them (their counts and rules are lost)",
            maps_dir.display()
        );
        return Ok(());
    }
    let found = sys::read_u32_array(&pin, 0).context("read the pinned map layout version")?;
    let links_dir = maps_dir.with_file_name(names::pins::LINKS_DIR);
    let attached = std::fs::read_dir(&links_dir).is_ok_and(|mut d| d.next().is_some());
    if found == 0 && !attached {
        // A start that failed after its maps were pinned but before it wrote the version (a
        // program the kernel refused): nothing ever ran on them. Start afresh rather than
        // make every later start fail on them.
        warn!(maps = %maps_dir.display(), "removing the maps of an earlier start that failed");
        for entry in std::fs::read_dir(maps_dir)? {
            let path = entry?.path();
            std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
        }
        return Ok(());
    }
    anyhow::ensure!(
        found == MAP_LAYOUT_VERSION,
        "the pinned maps in {} have layout version {found}; this build uses \
         {MAP_LAYOUT_VERSION} and has no migration from it: run the matching limiter build, \
         or `limiter daemon --cleanup` to start afresh (counts and rules are lost)",
        maps_dir.display()
    );
    Ok(())
}

/// Removes everything limiter pinned under `<bpffs>/limiter/`: the links go (their programs
/// detach, so every limit is lifted; connections stay open) and the maps with them.
pub fn cleanup(bpffs: &std::path::Path) -> anyhow::Result<String> {
    let pin_dir = bpffs.join(crate::paths::PIN_DIR_NAME);
    if !pin_dir.exists() {
        return Ok(format!(
            "nothing to remove: {} does not exist",
            pin_dir.display()
        ));
    }
    std::fs::remove_dir_all(&pin_dir)
        .with_context(|| format!("remove {} (needs root)", pin_dir.display()))?;
    Ok(format!(
        "removed {}: limiter's programs are detached and its limits lifted",
        pin_dir.display()
    ))
}

/// Why the object could not be loaded: the optional seeding iterator, or anything else.
enum LoadError {
    SeedIterator(anyhow::Error),
    Other(anyhow::Error),
}

impl LoadError {
    fn into_anyhow(self) -> anyhow::Error {
        match self {
            Self::SeedIterator(e) | Self::Other(e) => e,
        }
    }
}

/// Loads the object with the switches of `caps` (limiter-ebpf/src/features.rs) and every
/// program it can run into the kernel (not attached yet).
fn load_object(maps_dir: &std::path::Path, caps: &Capabilities) -> Result<Ebpf, LoadError> {
    let has_set_retval = u8::from(caps.has(SET_RETVAL));
    let adopt_on_packet = u8::from(!caps.has(SEED_ITERATOR));
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(maps_dir)
        .override_global(names::globals::HAS_SET_RETVAL, &has_set_retval, true)
        .override_global(names::globals::ADOPT_ON_PACKET, &adopt_on_packet, true)
        .load(OBJECT)
        .with_context(|| {
            format!(
                "load limiter's eBPF object (maps pinned in {} by another version? \
                 `limiter daemon --cleanup` removes them)",
                maps_dir.display()
            )
        })
        .map_err(LoadError::Other)?;
    programs::load_all(&mut ebpf).map_err(LoadError::Other)?;
    if caps.has(SEED_ITERATOR) {
        programs::load_seed(&mut ebpf).map_err(LoadError::SeedIterator)?;
    }
    Ok(ebpf)
}

/// Names every other agent's program on our hooks, and checks that ours really run for the
/// governed cgroup: a link can be attached yet not effective (a cgroup being removed), and a
/// daemon that reports healthy while enforcing nothing is the worst outcome.
fn check_neighbours(
    ebpf: &mut Ebpf,
    cgroup: &std::path::Path,
    links_dir: &std::path::Path,
) -> anyhow::Result<bool> {
    let found = neighbours::scan(cgroup, links_dir, true);
    for p in found.others() {
        info!(hook = p.hook, id = p.id, name = %p.name, position = p.position, "another agent's program on limiter's hook");
        if let Some(note) = p.note {
            warn!(hook = p.hook, id = p.id, name = %p.name, "{note}");
        }
    }
    let translated_first = set_translated_first(ebpf, &found)?;
    for hook in neighbours::CGROUP_HOOK_NAMES {
        let effective = found.programs.iter().any(|p| p.ours && p.hook == hook);
        anyhow::ensure!(
            effective,
            "limiter's {hook} program is attached but does not run for {} (not in its effective \
             programs): is the cgroup being removed, or another cgroup2 mount? Pass --cgroup with \
             the live cgroup v2 root",
            cgroup.display()
        );
    }
    Ok(translated_first)
}

/// Tells connect4/6 whether another agent's program runs before them (and may have translated
/// a Service address): only then do they count a Service's endpoints as the Service.
fn set_translated_first(ebpf: &mut Ebpf, found: &neighbours::Neighbours) -> anyhow::Result<bool> {
    let first = u32::from(found.translation_possible_before_us());
    let name = names::maps::TRANSLATED_FIRST;
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| anyhow::anyhow!("map {name} missing from the object"))?;
    let mut flag: aya::maps::Array<_, u32> = aya::maps::Array::try_from(map)?;
    if flag.get(&0, 0).ok() != Some(first) {
        flag.set(0, &first, 0)
            .context("write the TRANSLATED_FIRST flag")?;
        if first == 1 {
            warn!(
                "another agent's program runs before limiter's connect hook: if it translates \
                 Service addresses (a socket load balancer), client-side address rules on a \
                 Service VIP are bypassed (use svc/ rules); svc/ rules now count their \
                 Service's endpoints as the Service"
            );
        } else {
            info!("no other agent's program runs before limiter's connect hook");
        }
    }
    Ok(first == 1)
}

/// The eBPF object built by build.rs from limiter-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/limiter"));

impl EbpfDataplane {
    pub fn start(opts: &Options) -> anyhow::Result<Self> {
        // Everything the kernel can do is known before anything is attached: a kernel that
        // cannot run the daemon is refused with nothing changed.
        let mut caps = Capabilities::probe(&capabilities::disabled_by_env())?;
        if let Some(why) = caps.unsupported() {
            return Err(UnsupportedKernel(why).into());
        }
        let cgroup = sys::cgroup2_root(opts.cgroup.as_deref())?;
        sys::ensure_bpffs(&opts.bpffs)?;
        let pin_dir = opts.bpffs.join(crate::paths::PIN_DIR_NAME);
        let maps_dir = pin_dir.join(names::pins::MAPS_DIR);
        let links_dir = pin_dir.join(names::pins::LINKS_DIR);
        for dir in [&maps_dir, &links_dir] {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let adopting = std::fs::read_dir(&links_dir)?.next().is_some();
        check_layout(&maps_dir)?;
        let mut ebpf = match load_object(&maps_dir, &caps) {
            Ok(ebpf) => ebpf,
            // The probe passed but the real iterator was refused: count open connections by
            // their next packet instead, which needs the object loaded with that switch on.
            Err(LoadError::SeedIterator(e)) => {
                caps.lose(SEED_ITERATOR, format!("{e:#}"));
                load_object(&maps_dir, &caps).map_err(LoadError::into_anyhow)?
            }
            Err(e) => return Err(e.into_anyhow()),
        };
        for c in caps.degraded() {
            warn!(
                capability = c.name,
                kernel = %caps.kernel,
                reason = c.detail.as_deref().unwrap_or("refused"),
                consequence = c.consequence.unwrap_or(""),
                "kernel capability missing: running degraded"
            );
        }
        // Rare kernel events (never per packet) come as aya-log records, through the `log`
        // crate into tracing.
        let kernel_log = aya_log::EbpfLogger::init(&mut ebpf).context("read aya-log records")?;
        spawn_kernel_log(kernel_log)?;
        sys::write_u32_array(&maps_dir.join(names::maps::LAYOUT), 0, MAP_LAYOUT_VERSION)
            .context("record the map layout version")?;
        let tables = tables::Tables::open(&mut ebpf)?;
        let pinned = tables.existing()?;
        // The new programs skip hooks by RULE_KINDS from their first packet: it must name the
        // kinds of the rules already pinned before they are attached.
        sys::write_u32_array(&maps_dir.join(names::maps::RULE_KINDS), 0, pinned.kinds)
            .context("write the rule kinds switch")?;
        programs::attach_cgroup(&mut ebpf, &cgroup, &links_dir).with_context(|| {
            format!(
                "attach to cgroup {} (needs root; on a hybrid layout pass --cgroup /sys/fs/cgroup/unified)",
                cgroup.display()
            )
        })?;
        let namespaces = programs::sync_lookup(&mut ebpf, &links_dir, true)?;
        let translated_first = check_neighbours(&mut ebpf, &cgroup, &links_dir)?;
        let aliases = aliases::Aliases::open(take_map(&mut ebpf, names::maps::ALIASES)?)?;
        let events = events::EventFeed::start(
            take_map(&mut ebpf, names::maps::EVENTS)?,
            take_map(&mut ebpf, names::maps::EVENT_STATS)?,
        )?;
        let breakers = breakers::Breakers::open(&mut ebpf)?;
        let mut rules = pinned.rules;
        for dest in &pinned.with_breaker {
            if let Some((id, rule)) = rules.get_mut(dest) {
                rule.breaker = breakers
                    .policy(*id)
                    .map(|p| Box::new(crate::rules::breaker::Breaker::from_config(&p)));
            }
        }
        let mut kinds = kinds::Kinds::new(&maps_dir);
        for (id, rule) in rules.values() {
            kinds.add(kinds::of(*id, rule))?;
        }
        kinds.write()?;
        let next_id = rules.values().map(|(id, _)| *id).max().unwrap_or(0) + 1;
        {
            let mut names = events.rules.write().unwrap_or_else(|p| p.into_inner());
            for (dest, (id, _)) in &rules {
                names.insert(*id, dest.to_string());
            }
        }
        if adopting {
            info!(rules = rules.len(), pins = %pin_dir.display(), "adopted running dataplane");
        }
        info!(cgroup = %cgroup.display(), namespaces, kernel = %caps.kernel, "dataplane ready");
        Ok(Self {
            inner: Mutex::new(Inner {
                ebpf,
                tables,
                aliases,
                breakers,
                kinds,
                rules,
                next_id,
                links_dir,
                maps_dir,
                namespaces,
                translated_first,
            }),
            events,
            cgroup,
            pin_dir,
            capabilities: caps,
        })
    }

    /// How a rule created now counts the connections already open to its destination.
    fn seeding(&self) -> &'static str {
        if self.capabilities.has(SEED_ITERATOR) {
            "exact"
        } else {
            "next_packet"
        }
    }

    /// Refusal events as they happen (`limiter events --follow`).
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<EventRecord> {
        self.events.sender.subscribe()
    }

    /// The latest refusal events, oldest first.
    pub fn recent_events(&self) -> Vec<EventRecord> {
        self.events.recent()
    }

    /// What the kernel emitted, suppressed (rate) and lost (ring full), over all CPUs.
    pub fn event_totals(&self) -> EventTotals {
        self.events.totals()
    }

    /// Periodic upkeep: attach the server-side lookup to namespaces created since, and follow
    /// whether another agent's program now runs before our connect hooks.
    pub fn maintain(&self) -> anyhow::Result<()> {
        let mut inner = self.lock();
        inner.breakers.prune_idle(monotonic_ns());
        let Inner {
            ebpf, links_dir, ..
        } = &mut *inner;
        let n = programs::sync_lookup(ebpf, links_dir, false)?;
        // The connect hooks only: every namespace's sk_lookup each second would cost.
        let found = neighbours::scan(&self.cgroup, links_dir, false);
        inner.translated_first = set_translated_first(ebpf, &found)?;
        inner.namespaces = n;
        Ok(())
    }

    pub fn describe(&self) -> serde_json::Value {
        let inner = self.lock();
        serde_json::json!({
            "cgroup": self.cgroup.display().to_string(),
            "pin_dir": self.pin_dir.display().to_string(),
            "programs": programs::CGROUP_PROGRAMS.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            "namespaces_with_sk_lookup": inner.namespaces,
            "rules": inner.rules.len(),
            "service_endpoint_aliases": inner.aliases.len(),
            "program_before_connect_hook": inner.translated_first,
            "events": self.events.totals(),
            "kernel": self.capabilities.kernel,
            "seeding": self.seeding(),
            "capabilities": self.capabilities.list,
            "degraded": self.capabilities.degraded().iter().map(|c| c.name).collect::<Vec<_>>(),
        })
    }

    /// Keeps the name of rule `id` for its breaker events (None: the rule is gone).
    fn name_rule(&self, id: u64, dest: Option<&Dest>) {
        let mut names = self.events.rules.write().unwrap_or_else(|p| p.into_inner());
        match dest {
            Some(d) => names.insert(id, d.to_string()),
            None => names.remove(&id),
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves maps consistent (each step is one syscall).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Dataplane for EbpfDataplane {
    fn set_service_aliases(
        &self,
        owner: &Dest,
        aliases: &std::collections::BTreeMap<std::net::SocketAddr, std::net::SocketAddr>,
    ) -> anyhow::Result<()> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.aliases.set(owner, aliases)?;
        // The Services' endpoint counts bound their breakers (max-ejection).
        let services: std::collections::BTreeSet<_> = aliases.values().collect();
        for service in services {
            if let Some((id, rule)) = inner.rules.get(&Dest::Addr(*service))
                && let Some(policy) = breaker_policy(&inner.aliases, rule)
            {
                inner.breakers.set_policy(*id, &policy)?;
            }
        }
        Ok(())
    }

    fn prune_service_aliases(&self) -> anyhow::Result<()> {
        self.lock().aliases.prune()
    }

    fn apply_rule(&self, rule: &RuleSpec) -> anyhow::Result<()> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let policy = breaker_policy(&inner.aliases, rule);
        if let Some((id, old)) = inner.rules.get(&rule.destination) {
            let (id, old_kinds) = (*id, kinds::of(*id, old));
            let new_kinds = kinds::of(id, rule);
            // The policy and the kinds go in before the rule that needs them, and out after.
            if let Some(p) = &policy {
                inner.breakers.set_policy(id, p)?;
            }
            inner.kinds.add(new_kinds)?;
            if let Err(e) = inner
                .tables
                .publish(&rule.destination, &tables::to_config(id, rule))
            {
                let _ = inner.kinds.remove(new_kinds);
                return Err(e);
            }
            inner
                .rules
                .insert(rule.destination.clone(), (id, rule.clone()));
            if policy.is_none() {
                inner.breakers.remove(id)?;
            }
            return inner.kinds.remove(old_kinds);
        }
        let id = inner.next_id;
        let new_kinds = kinds::of(id, rule);
        inner.tables.create_counters(id)?;
        if let Some(p) = &policy
            && let Err(e) = inner.breakers.set_policy(id, p)
        {
            inner.tables.remove_counters(id);
            return Err(e);
        }
        let published = inner.kinds.add(new_kinds).and_then(|()| {
            inner
                .tables
                .publish(&rule.destination, &tables::to_config(id, rule))
        });
        if let Err(e) = published {
            inner.tables.remove_counters(id);
            let _ = inner.breakers.remove(id);
            let _ = inner.kinds.remove(new_kinds);
            return Err(e);
        }
        inner.next_id += 1;
        inner
            .rules
            .insert(rule.destination.clone(), (id, rule.clone()));
        self.name_rule(id, Some(&rule.destination));
        // Count the connections already open to the destination: at once with the iterator,
        // else on their next packet (a new adoption generation makes every socket look again).
        let seeded = if self.capabilities.has(SEED_ITERATOR) {
            inner
                .tables
                .set_seed(id, &rule.destination)
                .and_then(|()| programs::run_seed(&mut inner.ebpf, &inner.maps_dir))
        } else {
            inner.tables.next_adoption_generation()
        };
        if let Err(e) = seeded {
            warn!(error = %format!("{e:#}"), "rule applied but open connections were not counted");
        }
        Ok(())
    }

    fn delete_rule(&self, dest: &Dest) -> anyhow::Result<bool> {
        let mut inner = self.lock();
        let Some((id, rule)) = inner.rules.get(dest).cloned() else {
            return Ok(false);
        };
        inner.tables.unpublish(dest)?;
        inner.tables.remove_counters(id);
        inner.breakers.remove(id)?;
        inner.rules.remove(dest);
        self.name_rule(id, None);
        inner.kinds.remove(kinds::of(id, &rule))?;
        Ok(true)
    }

    fn status(&self) -> anyhow::Result<Vec<DestinationStatus>> {
        let inner = self.lock();
        let mut breakers = inner.breakers.status(monotonic_ns());
        inner
            .rules
            .values()
            .map(|(id, rule)| {
                let mut st = inner.tables.status(*id, rule, self.seeding())?;
                with_breakers(&mut st, breakers.remove(id));
                Ok(st)
            })
            .collect()
    }

    fn rules(&self) -> Vec<RuleSpec> {
        self.lock().rules.values().map(|(_, r)| r.clone()).collect()
    }

    fn rule_of(&self, dest: &Dest) -> Option<RuleSpec> {
        self.lock().rules.get(dest).map(|(_, r)| r.clone())
    }

    fn adaptive_rules(&self) -> Vec<RuleSpec> {
        // Without cloning every rule: this runs four times a second beside 100k rules.
        self.lock()
            .rules
            .values()
            .filter(|(_, r)| r.adaptive.is_some())
            .map(|(_, r)| r.clone())
            .collect()
    }

    fn counters(&self, dest: &Dest) -> anyhow::Result<Option<DestinationStatus>> {
        let inner = self.lock();
        match inner.rules.get(dest) {
            Some((id, rule)) => {
                let mut st = inner.tables.status(*id, rule, self.seeding())?;
                if rule.breaker.is_some() {
                    let mut breakers = inner.breakers.status(monotonic_ns());
                    with_breakers(&mut st, breakers.remove(id));
                }
                Ok(Some(st))
            }
            None => Ok(None),
        }
    }

    fn set_shed(&self, dest: &Dest, shed: Option<(u8, u32)>) -> anyhow::Result<()> {
        let mut inner = self.lock();
        let Some((id, _)) = inner.rules.get(dest) else {
            return Ok(());
        };
        let id = *id;
        inner.tables.set_shed(id, shed)
    }
}

/// The kernel form of `rule`'s breaker, if it has one on the client side; the endpoints of
/// the Service its destination is the ClusterIP of (if any) bound how many may be open.
fn breaker_policy(
    aliases: &aliases::Aliases,
    rule: &RuleSpec,
) -> Option<limiter_common::BreakerConfig> {
    let breaker = rule.breaker.as_ref()?;
    if rule.side == crate::rules::spec::Side::Server {
        return None;
    }
    let endpoints = match &rule.destination {
        Dest::Addr(a) => Some(aliases.endpoints_of(a)).filter(|&n| n > 0),
        _ => None,
    };
    Some(breaker.to_config(endpoints))
}

/// Adds a rule's breakers to its status: the list, and their refusals as reason `breaker`.
fn with_breakers(st: &mut DestinationStatus, found: Option<breakers::RuleBreakers>) {
    let Some(found) = found else {
        return;
    };
    st.outbound.refused.0[limiter_common::reason::BREAKER] = found.refused;
    st.breakers = found.list;
}
