//! The gossip plane's logic, free of sockets and clocks (time is passed in):
//! topics and patterns with NATS-style `*` and `>` (from `oap-codec`), a
//! token-trie subscription index, per-consumer delivery queues bounded in
//! bytes with the stall-then-lag policy of OAP-1 section 4, a process-wide
//! byte budget, message ids, and a bounded seen-cache for relay dedup.

mod metrics;
mod msgid;
mod queue;
mod registry;
mod seen;
mod trie;

pub use msgid::{MsgIdGen, PREFIX_LEN, binds};
pub use oap_codec::{Msg, MsgId, Pattern, Topic};
pub use queue::{Budget, Charged, DeliveryQueue, DropReason, Offer, Taken, settle_releases};
pub use registry::{
    Fanout, GossipConfig, LinkId, PublishBatch, PublishError, Refused, Registry, SubscribeError, SubscriberId,
};
pub use seen::{PREALLOCATE_MAX, SeenCache};
