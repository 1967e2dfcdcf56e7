//! The node-to-node overlay as a state machine with no I/O and no clock,
//! in the manner of iroh-gossip's `proto`: HyParView membership (a small
//! active view of linked peers, a larger passive view of known addresses)
//! and PlumTree broadcast (eager push along a spanning tree of the active
//! links, lazy `IHAVE`s over the others, `GRAFT` to repair, `PRUNE` on a
//! duplicate).
//!
//! [`Swarm::handle`] takes an [`InEvent`] and the time, and returns what to
//! do as [`OutEvent`]s. Its driver owns the sockets and the timers: it dials
//! when told, reports links up and down (after the identity exchange and
//! the simultaneous-dial rule, [`keeps_dial_of`]), passes the swarm frames
//! it receives, and fires the timers the swarm schedules. overlay-core is
//! one driver; the deterministic simulator is another, so what the
//! simulator proves is what the node runs.
//!
//! ```
//! use core::net::SocketAddr;
//! use std::time::Instant;
//! use overlay_swarm::{Config, InEvent, NodeAddr, NodeId, OutEvent, Swarm};
//!
//! let me = NodeAddr { id: NodeId([1; 32]), addr: "10.0.0.1:9500".parse().unwrap() };
//! let mut swarm = Swarm::new(me, Config::default(), 42);
//! let seed: SocketAddr = "10.0.0.2:9500".parse().unwrap();
//! let now = Instant::now(); // clock-ok: the driver reads its clock and passes the time in; the crate never does.
//! let out: Vec<OutEvent> = swarm.handle(InEvent::Join(seed), now).collect();
//! assert!(out.contains(&OutEvent::Dial(seed)));
//! ```

// No clock reads here: time comes in as an argument (clippy.toml names them).
#![deny(clippy::disallowed_methods)]

mod broadcast;
mod config;
mod membership;
mod reorder;
mod rng;
pub mod sim;
mod swarm;

pub use config::Config;
pub use oap_codec::{IHave, MsgId, NodeAddr, NodeId, Pattern, Priority, SwarmFrame, Topic};
pub use reorder::Reorder;
pub use rng::Rng;
pub use swarm::{CacheUsage, InEvent, OutEvent, Stats, Swarm, SwarmEvent, Timer, keeps_dial_of};
