//! The gossip plane's logic, free of sockets and clocks (time is passed in):
//! topics and patterns with NATS-style `*` and `>` (from `oap-codec`), a
//! token-trie subscription index, per-consumer delivery queues bounded in
//! bytes with the stall-then-lag policy of OAP-1 section 4, a process-wide
//! byte budget, and message ids that bind their content.

mod metrics;
mod msgid;
mod queue;
mod registry;
mod trie;

pub use msgid::{MsgIdGen, PREFIX_LEN, binds};
pub use oap_codec::{Msg, MsgId, Pattern, Topic};
pub use queue::{Budget, Charged, DeliveryQueue, DropReason, Offer, Taken, settle_releases};
pub use registry::{
    Fanout, GossipConfig, MAX_INTEREST, PublishBatch, PublishError, Registry, SubscribeError, SubscriberId,
};
