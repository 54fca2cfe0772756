//! The ALIASES map: Service endpoints standing for their ClusterIP on the client side, so that a
//! `svc/` rule counts a connection whichever address connect() shows when limiter's connect4/6
//! runs (the ClusterIP, or an endpoint a socket load balancer such as Cilium's translated it to
//! first). See limiter-ebpf/src/client.rs, `client_rule_of`.
//!
//! Each entry has one owner, the `svc/` rule whose resolution put it there; between two rules
//! the first keeps an endpoint (as with derived address rules). Entries found in the pinned map
//! at start belong to nobody until a watcher claims them; [`Aliases::prune`] drops the rest.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context as _;
use aya::maps::{HashMap, MapData};
use limiter_common::{DestAddr, EXACT_PREFIX_BITS};

use crate::rules::dest::Dest;

pub struct Aliases {
    map: HashMap<MapData, DestAddr, DestAddr>,
    /// endpoint -> (owner `svc/` rule, the ClusterIP:port it stands for); None: found in the
    /// pinned map at start, not claimed yet.
    entries: BTreeMap<SocketAddr, (Option<Dest>, SocketAddr)>,
}

fn key(addr: SocketAddr) -> DestAddr {
    Dest::Addr(addr)
        .lpm_key()
        .expect("an address destination has a key")
        .1
}

fn addr_of(key: &DestAddr) -> Option<SocketAddr> {
    match Dest::from_lpm_key(EXACT_PREFIX_BITS, key) {
        Dest::Addr(a) => Some(a),
        _ => None,
    }
}

impl Aliases {
    pub fn open(map: HashMap<MapData, DestAddr, DestAddr>) -> anyhow::Result<Self> {
        let mut entries = BTreeMap::new();
        for item in map.iter() {
            let (endpoint, service) = item.context("read the aliases map")?;
            if let (Some(e), Some(s)) = (addr_of(&endpoint), addr_of(&service)) {
                entries.insert(e, (None, s));
            }
        }
        Ok(Self { map, entries })
    }

    /// Makes `wanted` (endpoint -> ClusterIP:port) the entries of `owner`: adds and replaces
    /// what changed, removes what it no longer has. Endpoints another rule owns are left to it.
    pub fn set(
        &mut self,
        owner: &Dest,
        wanted: &BTreeMap<SocketAddr, SocketAddr>,
    ) -> anyhow::Result<()> {
        let gone: Vec<SocketAddr> = self
            .entries
            .iter()
            .filter(|(e, (o, _))| o.as_ref() == Some(owner) && !wanted.contains_key(e))
            .map(|(e, _)| *e)
            .collect();
        for endpoint in gone {
            self.remove(endpoint)?;
        }
        for (endpoint, service) in wanted {
            match self.entries.get(endpoint) {
                Some((Some(other), _)) if other != owner => continue,
                Some((_, current)) if current == service => {
                    self.entries
                        .insert(*endpoint, (Some(owner.clone()), *service));
                    continue;
                }
                _ => {}
            }
            self.map
                .insert(&key(*endpoint), &key(*service), 0)
                .with_context(|| format!("map endpoint {endpoint} to {service} (aliases full?)"))?;
            self.entries
                .insert(*endpoint, (Some(owner.clone()), *service));
        }
        Ok(())
    }

    /// Removes the entries nobody claimed since the start (their Service rule is gone).
    pub fn prune(&mut self) -> anyhow::Result<()> {
        let orphans: Vec<SocketAddr> = self
            .entries
            .iter()
            .filter(|(_, (owner, _))| owner.is_none())
            .map(|(e, _)| *e)
            .collect();
        for endpoint in orphans {
            self.remove(endpoint)?;
        }
        Ok(())
    }

    fn remove(&mut self, endpoint: SocketAddr) -> anyhow::Result<()> {
        match self.map.remove(&key(endpoint)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(e).with_context(|| format!("unmap endpoint {endpoint}")),
        }
        self.entries.remove(&endpoint);
        Ok(())
    }

    /// How many endpoints stand for `service` (a ClusterIP:port) now.
    pub fn endpoints_of(&self, service: &SocketAddr) -> usize {
        self.entries.values().filter(|(_, s)| s == service).count()
    }

    /// How many endpoints stand for a ClusterIP now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}
