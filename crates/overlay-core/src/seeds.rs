//! Seeds: the configured peers and [`Overlay::add_peer`]s, by address, with
//! what a dial to each presents (its token, its TLS name). A `dns:` seed is
//! a name: every address it resolves to is a seed, resolved when it is
//! added and again each time the swarm is alone and rejoins (the pods of a
//! Kubernetes headless Service come and go).
//!
//! [`Overlay::add_peer`]: crate::Overlay::add_peer

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Peer, PeerAddr};
use crate::swarm::{self, SwarmDriver};

/// Address seeds held at most (a name's addresses included): past it, new
/// addresses are not added (the swarm remembers 64 itself).
const MAX_SEEDS: usize = 256;
/// Names held at most.
const MAX_NAMES: usize = 64;
/// Addresses taken from one name's answer at most.
const MAX_PER_NAME: usize = 64;
/// Time one resolution may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Table {
    by_addr: HashMap<SocketAddr, Peer>,
    /// Each name seed and the addresses its last answer gave.
    names: Vec<(Peer, Vec<SocketAddr>)>,
    /// Addresses configured (or added) as themselves, not through a name.
    direct: std::collections::HashSet<SocketAddr>,
}

pub(crate) struct Seeds {
    table: Mutex<Table>,
    swarm: Arc<SwarmDriver>,
}

impl Seeds {
    pub(crate) fn new(swarm: Arc<SwarmDriver>) -> Seeds {
        Seeds { table: Mutex::new(Table::default()), swarm }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a seed: an address is joined through at once; a name is
    /// remembered, and true means it is new and should be resolved now.
    pub(crate) fn add(&self, peer: Peer) -> bool {
        match peer.addr().clone() {
            PeerAddr::Ip(addr) => {
                self.lock().direct.insert(addr);
                self.add_addr(addr, peer);
                false
            }
            PeerAddr::Dns { .. } => {
                let mut table = self.lock();
                let known = table.names.iter().any(|(p, _)| p.addr() == peer.addr());
                if known || table.names.len() >= MAX_NAMES {
                    if !known {
                        tracing::warn!(seed = %peer.addr(), "seed name not added: {MAX_NAMES} names at most");
                    }
                    return false;
                }
                table.names.push((peer, Vec::new()));
                true
            }
        }
    }

    fn add_addr(&self, addr: SocketAddr, peer: Peer) {
        let mut table = self.lock();
        if table.by_addr.contains_key(&addr) || !Self::insert(&mut table, addr, peer) {
            return;
        }
        // The swarm's lock is never taken under the table's.
        drop(table);
        self.swarm.join(addr, swarm::tokio_now());
    }

    /// Adds `addr` (not yet a seed); false past the bound.
    fn insert(table: &mut Table, addr: SocketAddr, peer: Peer) -> bool {
        if table.by_addr.len() >= MAX_SEEDS {
            tracing::warn!(%addr, "seed not added: {MAX_SEEDS} seeds at most");
            return false;
        }
        table.by_addr.insert(addr, peer);
        true
    }

    /// Forgets the seed `addr`; false when it was none.
    pub(crate) fn remove(&self, addr: SocketAddr) -> bool {
        let removed = {
            let mut table = self.lock();
            table.direct.remove(&addr);
            table.by_addr.remove(&addr).is_some()
        };
        if removed {
            self.swarm.forget(addr, swarm::tokio_now());
        }
        removed
    }

    /// The address seeds, sorted.
    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<_> = self.lock().by_addr.keys().copied().collect();
        addrs.sort();
        addrs
    }

    /// What a dial to `addr` presents, when it is a seed.
    pub(crate) fn get(&self, addr: SocketAddr) -> Option<Peer> {
        self.lock().by_addr.get(&addr).cloned()
    }

    /// Resolves the name seed `peer` (or every name, `None`): its addresses
    /// are the seeds now (each joined through again; those it no longer
    /// gives are forgotten, unless configured as addresses themselves). A
    /// name that does not resolve is logged and tried again at the next
    /// rejoin; `stop` ends the resolution early.
    pub(crate) async fn resolve(&self, peer: Option<&Peer>, stop: &CancellationToken) {
        let names: Vec<Peer> = match peer {
            Some(peer) => vec![peer.clone()],
            None => self.lock().names.iter().map(|(p, _)| p.clone()).collect(),
        };
        for peer in names {
            let PeerAddr::Dns { name, port } = peer.addr() else { continue };
            let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name.as_str(), *port)));
            let answer = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                answer = lookup => answer,
            };
            match answer {
                Ok(Ok(addrs)) => {
                    let addrs: Vec<SocketAddr> = addrs.take(MAX_PER_NAME).collect();
                    tracing::debug!(seed = %peer.addr(), ?addrs, "seed name resolved");
                    self.replace(&peer, addrs);
                }
                Ok(Err(e)) => tracing::warn!(seed = %peer.addr(), error = %e, "seed name does not resolve"),
                Err(_) => tracing::warn!(seed = %peer.addr(), "seed name resolution timed out"),
            }
        }
    }

    /// The name seed `peer` now gives `addrs`.
    fn replace(&self, peer: &Peer, addrs: Vec<SocketAddr>) {
        let (mut forget, mut join) = (Vec::new(), Vec::new());
        {
            let mut table = self.lock();
            let Some(at) = table.names.iter().position(|(p, _)| p.addr() == peer.addr()) else { return };
            let old = std::mem::replace(&mut table.names[at].1, addrs.clone());
            for gone in old.into_iter().filter(|a| !addrs.contains(a)) {
                // Only what names alone gave (a configured address stays).
                let named = table.names.iter().any(|(_, a)| a.contains(&gone));
                if !table.direct.contains(&gone) && !named && table.by_addr.remove(&gone).is_some() {
                    forget.push(gone);
                }
            }
            for addr in addrs {
                if table.by_addr.contains_key(&addr) || Self::insert(&mut table, addr, peer.at(addr)) {
                    join.push(addr);
                }
            }
        }
        let now = swarm::tokio_now();
        for addr in forget {
            self.swarm.forget(addr, now);
        }
        for addr in join {
            self.swarm.join(addr, now);
        }
    }

    /// Resolves every name again each time the swarm is alone, until `stop`.
    pub(crate) async fn follow(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                () = self.swarm.alone.notified() => self.resolve(None, &stop).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_names_answer_replaces_its_addresses_and_a_configured_address_stays() {
        let registry = Arc::new(overlay_gossip::Registry::new(overlay_gossip::GossipConfig::default(), "seeds"));
        let me = oap_codec::NodeAddr { id: oap_codec::NodeId([1; 32]), addr: "10.0.0.1:9500".parse().unwrap() };
        let config = overlay_swarm::Config::default();
        let (swarm, _dials) = SwarmDriver::new(me, config, registry, 4096, Duration::ZERO, "seeds");
        let seeds = Seeds::new(swarm);
        let addr = |n: u8| SocketAddr::from(([10, 0, 0, n], 9500));
        let name: Peer = Peer::Addr("dns:seeds.local:9500".parse().unwrap());
        assert!(seeds.add(name.clone()), "a new name is to be resolved");
        assert!(!seeds.add(name.clone()), "once");
        seeds.add(Peer::from(addr(2)));
        seeds.replace(&name, vec![addr(2), addr(3), addr(4)]);
        assert_eq!(seeds.addrs(), [addr(2), addr(3), addr(4)]);
        assert_eq!(seeds.get(addr(3)).map(|p| p.tls_name()), Some("seeds.local".into()));
        // Pods 2 and 3 went away, 5 came: 3 is forgotten, 2 was configured.
        seeds.replace(&name, vec![addr(4), addr(5)]);
        assert_eq!(seeds.addrs(), [addr(2), addr(4), addr(5)]);
    }
}
