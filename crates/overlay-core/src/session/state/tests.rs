//! The session core on its own: plain tests, no runtime, no socket; time
//! is whatever each test says it is.

use bytes::BytesMut;
use oap_codec::{Caps, Ctrl, Frame, NodeAddr, OapCodec};
use overlay_gossip::GossipConfig;
use tokio_util::codec::Decoder;

use super::*;
use crate::auth::{Op, mint};
use crate::handler::Echo;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const PUBSUB: Caps = Caps::GOSSIP_V1.with(Caps::PUBSUB_V1);
const IDLE: Duration = Duration::from_secs(10);
const READ: Duration = Duration::from_secs(2);
/// The Unix time the tests' wall clock shows at their origin.
const UNIX0: Duration = Duration::from_secs(1_800_000_000);

/// The tests' origin, their one clock read: every other time is an offset
/// of it.
#[allow(clippy::disallowed_methods)]
fn t0() -> Now {
    Now { at: Instant::now(), unix: UNIX0 }
}

/// `now` advanced by `secs` on both clocks.
fn after(now: Now, secs: u64) -> Now {
    Now { at: now.at + Duration::from_secs(secs), unix: now.unix + Duration::from_secs(secs) }
}

/// What a node shares with its sessions.
struct Node {
    limits: Limits,
    registry: Arc<Registry>,
    metrics: OverlayMetrics,
    auth: Option<AuthPolicy>,
    swarm: Arc<SwarmDriver>,
}

/// The id of the nodes these tests' sessions belong to.
const ME: NodeId = NodeId([1; 32]);
/// The node at the other end of their swarm links.
const PEER: NodeAddr = NodeAddr {
    id: NodeId([2; 32]),
    addr: std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7),
};

impl Node {
    fn new(auth: Option<AuthPolicy>) -> Node {
        let limits = Limits {
            caps: Caps::GOSSIP_V1 | Caps::PUBSUB_V1 | Caps::PEER_V1 | Caps::SWARM_V1 | Caps::AUTH_V1,
            max_frame: 4096,
            handshake_timeout: Duration::from_secs(5),
            read_timeout: READ,
            write_timeout: Duration::from_secs(5),
            idle_timeout: IDLE,
            tx_queue: 64,
            tx_watermark: 32,
            drain_window_ms: 5000,
            publish_stall: Duration::from_millis(50),
            node_certs: false,
        };
        let registry = Arc::new(Registry::new(GossipConfig { max_frame: 4096, ..GossipConfig::default() }, "test"));
        let me = NodeAddr { id: ME, addr: "127.0.0.1:9".parse().unwrap() };
        let (swarm, _dials) = SwarmDriver::new(
            me,
            overlay_swarm::Config::default(),
            registry.clone(),
            4096,
            Duration::from_secs(1),
            "test",
        );
        Node { limits, registry, metrics: OverlayMetrics::new("test"), auth, swarm }
    }

    fn env(&self) -> Env<'_> {
        Env {
            limits: &self.limits,
            registry: &self.registry,
            metrics: &self.metrics,
            handler: &Echo,
            auth: self.auth.as_ref(),
            swarm: &self.swarm,
        }
    }

    /// A swarm link (both sides spoke `SWARM_V1`).
    fn swarm_link(&self, id: u64, dialed: bool, credential: Option<Bytes>, now: Now) -> SessionState<'_> {
        let caps = Caps::PEER_V1 | Caps::SWARM_V1 | Caps::AUTH_V1;
        let info = SessionInfo { id, peer: "127.0.0.1:1".parse().unwrap(), caps };
        let io = LinkIo::new(Duration::from_secs(10), None);
        SessionState::new(self.env(), info, dialed, credential, self.registry.queue(), Some(io), now)
    }

    fn secured() -> Node {
        Node::new(Some(AuthPolicy { root_key: KEY.to_vec(), required: true }))
    }

    fn session(&self, id: u64, caps: Caps, dialed: bool, now: Now) -> SessionState<'_> {
        let info = SessionInfo { id, peer: "127.0.0.1:1".parse().unwrap(), caps };
        SessionState::new(self.env(), info, dialed, None, self.registry.queue(), None, now)
    }
}

/// Everything the core asked for since the last call.
fn actions(s: &mut SessionState<'_>) -> Vec<Action> {
    std::iter::from_fn(|| s.poll()).collect()
}

fn sent(s: &mut SessionState<'_>) -> Vec<Frame> {
    actions(s)
        .into_iter()
        .map(|a| match a {
            Action::Send(f) => f,
            other => panic!("expected only frames, got {other:?}"),
        })
        .collect()
}

fn error(code: ErrorCode, req_id: u32) -> (u16, u32) {
    (code.code(), req_id)
}

fn errors(frames: &[Frame]) -> Vec<(u16, u32)> {
    frames
        .iter()
        .map(|f| match f {
            Frame::Error(e) => (e.code, e.req_id),
            other => panic!("expected ERROR, got {other:?}"),
        })
        .collect()
}

fn sub(req_id: u32, pattern: &str) -> Frame {
    Frame::Sub { req_id, pattern: pattern.parse().unwrap() }
}

fn auth(req_id: u32, ops: &[Op], topics: &[&str], expires: Option<u64>) -> Frame {
    let topics: Vec<Pattern> = topics.iter().map(|t| t.parse().unwrap()).collect();
    Frame::Auth { req_id, token: mint(KEY, "test", ops, &topics, expires).into() }
}

/// The core's last word: `GOAWAY code`, then close for `reason`.
fn assert_goaway(s: &mut SessionState<'_>, code: u16, reason: DisconnectReason) -> u32 {
    match &actions(s)[..] {
        [Action::Send(Frame::Ctrl(Ctrl::Goaway { code: c, reconnect_after_ms, .. })), Action::Close(r)]
            if (*c, *r) == (code, reason) =>
        {
            *reconnect_after_ms
        }
        other => panic!("expected GOAWAY {code} and {reason:?}, got {other:?}"),
    }
}

fn is_ack(frame: &Frame, req_id: u32) -> bool {
    matches!(frame, Frame::Ack(a) if a.req_id == req_id)
}

#[test]
fn ping_is_answered_and_a_kind_without_its_cap_is_refused_with_415_swarm_kinds_included() {
    let node = Node::new(None);
    let now = t0();
    let mut s = node.session(1, Caps::GOSSIP_V1, false, now);
    s.on_frame(Frame::ping(7), now);
    assert!(matches!(sent(&mut s)[..], [Frame::Ctrl(Ctrl::Pong { nonce: 7 })]));
    s.on_frame(sub(3, "a.>"), now);
    assert_eq!(errors(&sent(&mut s)), [error(ErrorCode::Unsupported, 3)]);
    // Swarm frames need SWARM_V1, which client sessions never have.
    let mut s = node.session(2, PUBSUB, false, now);
    s.on_frame(Frame::Swarm(oap_codec::SwarmFrame::Join), now);
    assert_eq!(errors(&sent(&mut s)), [error(ErrorCode::Unsupported, 0)]);
}

#[test]
fn keepalive_pings_at_half_idle_and_closes_with_408_at_full() {
    let node = Node::new(None);
    let start = t0();
    let mut s = node.session(1, PUBSUB, false, start);
    assert_eq!(s.timeout(start), start.at + IDLE / 2);
    // Early: nothing is due.
    s.on_timer(after(start, 1));
    assert!(actions(&mut s).is_empty());

    s.on_timer(after(start, 5));
    assert!(matches!(sent(&mut s)[..], [Frame::Ctrl(Ctrl::Ping { nonce: 1 })]));
    assert_eq!(s.timeout(after(start, 5)), start.at + IDLE);

    // Bytes arrive: the silence starts again, and so does the PING.
    let read = after(start, 6);
    s.on_read(read);
    s.end_batch(read, false);
    assert_eq!(s.timeout(read), read.at + IDLE / 2);
    s.on_timer(after(read, 5));
    assert!(matches!(sent(&mut s)[..], [Frame::Ctrl(Ctrl::Ping { nonce: 2 })]));

    s.on_timer(after(read, 10));
    assert_goaway(&mut s, 408, DisconnectReason::IdleTimeout);
}

#[test]
fn a_started_frame_must_finish_within_read_timeout_of_the_last_progress() {
    let node = Node::new(None);
    let start = t0();
    let mut s = node.session(1, PUBSUB, false, start);
    s.on_read(start);
    s.end_batch(start, true);
    assert_eq!(s.timeout(start), start.at + READ);

    // A frame completes and another starts: the clock restarts there.
    let later = after(start, 1);
    s.on_frame(Frame::ping(1), later);
    actions(&mut s);
    s.end_batch(later, true);
    s.on_timer(after(start, 2));
    assert!(actions(&mut s).is_empty(), "read_timeout counted from before the progress");
    assert_eq!(s.timeout(later), later.at + READ);

    s.on_timer(after(later, 2));
    assert_goaway(&mut s, 408, DisconnectReason::ReadTimeout);
}

#[test]
fn a_publish_is_acked_with_what_the_fanout_did() {
    let node = Node::new(None);
    let now = t0();
    let mut s = node.session(1, PUBSUB, false, now);
    s.on_frame(sub(1, "a.>"), now);
    assert!(is_ack(&sent(&mut s)[0], 1));

    let publish = |req_id| Frame::Pub { req_id, topic: "a.b".parse().unwrap(), payload: "x".into() };
    s.on_frame(publish(7), now);
    match &sent(&mut s)[..] {
        [Frame::Ack(Ack { req_id: 7, publish: Some(p) })] => assert_eq!((p.queued, p.dropped), (1, 0)),
        other => panic!("{other:?}"),
    }
    // req_id 0 asks for no ACK.
    s.on_frame(publish(0), now);
    assert!(actions(&mut s).is_empty());
    assert!(s.deliveries().queued_bytes() > 0);
}

#[test]
fn a_fatal_decode_error_is_answered_then_closes_and_a_skippable_one_does_not() {
    let node = Node::new(None);
    let now = t0();
    let mut s = node.session(1, PUBSUB, false, now);
    let mut codec = OapCodec::with_max_frame(4096);

    // An unknown kind is skipped: ERROR 415, and the session goes on.
    let mut buf = BytesMut::from(&[0, 0, 0, 2, 0x7f, 0][..]);
    s.on_decode_error(codec.decode(&mut buf).unwrap_err());
    assert_eq!(errors(&sent(&mut s)), [error(ErrorCode::Unsupported, 0)]);

    // A frame over max_frame cannot be skipped: ERROR, then close.
    let mut buf = BytesMut::from(&[0, 0, 0x20, 0, 0x01][..]);
    s.on_decode_error(codec.decode(&mut buf).unwrap_err());
    let acts = actions(&mut s);
    assert!(
        matches!(&acts[..], [Action::Send(Frame::Error(e)), Action::Close(DisconnectReason::Protocol)] if e.code == ErrorCode::TooLarge.code()),
        "{acts:?}"
    );
}

#[test]
fn drain_sends_goaway_503_with_the_sessions_place_in_the_window() {
    let node = Node::new(None);
    let now = t0();
    let mut s = node.session(42, PUBSUB, false, now);
    s.on_drain();
    let after_ms = assert_goaway(&mut s, 503, DisconnectReason::Shutdown);
    assert_eq!(after_ms, reconnect_after(42, node.limits.drain_window_ms));
}

#[test]
fn without_a_grant_requests_get_401_and_at_expiry_subscriptions_end_with_403_and_their_req_ids() {
    let node = Node::secured();
    let start = t0();
    let caps = PUBSUB | Caps::AUTH_V1;
    let mut s = node.session(1, caps, false, start);
    s.on_frame(sub(1, "a.>"), start);
    assert_eq!(errors(&sent(&mut s)), [error(ErrorCode::Unauthorized, 1)]);

    let expires = UNIX0.as_secs() + 10;
    s.on_frame(auth(2, &[Op::Subscribe], &["a.>"], Some(expires)), start);
    assert!(is_ack(&sent(&mut s)[0], 2));
    s.on_frame(sub(5, "a.x"), start);
    s.on_frame(sub(6, "a.y.>"), start);
    s.on_frame(sub(7, "c.>"), start);
    let replies = sent(&mut s);
    assert!(is_ack(&replies[0], 5) && is_ack(&replies[1], 6), "{replies:?}");
    assert_eq!(errors(&replies[2..]), [error(ErrorCode::Forbidden, 7)]);

    // The timer is the expiry; nothing ends before it.
    let ping_first = start.at + IDLE / 2;
    assert_eq!(s.timeout(after(start, 5)), ping_first.min(start.at + Duration::from_secs(10)));
    s.on_read(after(start, 9));
    s.end_batch(after(start, 9), false);
    assert_eq!(s.timeout(after(start, 9)), start.at + Duration::from_secs(10));
    s.on_timer(after(start, 9));
    assert!(actions(&mut s).is_empty());

    s.on_timer(after(start, 10));
    assert_eq!(errors(&sent(&mut s)), [error(ErrorCode::Forbidden, 5), error(ErrorCode::Forbidden, 6)]);
    s.on_frame(sub(8, "a.>"), after(start, 10));
    assert_eq!(errors(&sent(&mut s)), [error(ErrorCode::Unauthorized, 8)]);
}

#[test]
fn a_wall_clock_stepped_back_does_not_lengthen_a_grant() {
    let node = Node::secured();
    let start = t0();
    let mut s = node.session(1, PUBSUB | Caps::AUTH_V1, false, start);
    s.on_frame(auth(1, &[Op::Subscribe], &[">"], Some(UNIX0.as_secs() + 10)), start);
    s.on_frame(sub(2, "a.>"), start);
    assert_eq!(sent(&mut s).len(), 2);
    // Ten seconds pass, but the wall clock was set back by a minute.
    let stepped = Now { at: start.at + Duration::from_secs(10), unix: UNIX0 - Duration::from_secs(60) };
    s.on_read(stepped);
    s.on_timer(stepped);
    assert_eq!(errors(&sent(&mut s)), [error(ErrorCode::Forbidden, 2)]);
}

#[test]
fn an_in_band_refresh_keeps_what_the_new_grant_covers() {
    let node = Node::secured();
    let start = t0();
    let mut s = node.session(1, PUBSUB | Caps::AUTH_V1, false, start);
    s.on_frame(auth(1, &[Op::Subscribe], &[">"], Some(UNIX0.as_secs() + 10)), start);
    s.on_frame(sub(2, "a.>"), start);
    s.on_frame(sub(3, "b.>"), start);
    assert_eq!(sent(&mut s).len(), 3);
    // Refreshed before the expiry, for a.> only: b.> ends at once.
    let refresh = after(start, 8);
    s.on_frame(auth(4, &[Op::Subscribe], &["a.>"], Some(UNIX0.as_secs() + 100)), refresh);
    let replies = sent(&mut s);
    assert!(is_ack(&replies[0], 4), "{replies:?}");
    assert_eq!(errors(&replies[1..]), [error(ErrorCode::Forbidden, 3)]);
    // The first expiry passes with nothing revoked.
    s.on_read(after(start, 11));
    s.on_timer(after(start, 11));
    assert!(actions(&mut s).is_empty());
}

#[test]
fn an_inbound_swarm_link_ends_with_403_when_its_relay_grant_expires() {
    let node = Node::secured();
    let start = t0();
    let mut s = node.swarm_link(1, false, None, start);
    actions(&mut s);
    s.on_frame(Frame::Swarm(SwarmFrame::Node(PEER)), start);
    s.on_frame(auth(1, &[Op::Relay], &[], Some(UNIX0.as_secs() + 10)), start);
    let acts = actions(&mut s);
    assert!(matches!(&acts[..], [Action::Send(Frame::Ack(_)), Action::LinkUp(_)]), "{acts:?}");

    s.on_read(after(start, 10));
    s.on_timer(after(start, 10));
    let acts = actions(&mut s);
    assert!(
        matches!(&acts[..], [Action::Send(Frame::Ctrl(Ctrl::Goaway { code: 403, .. })), Action::Close(_)]),
        "{acts:?}"
    );
    assert!(s.detach(after(start, 10)), "the swarm had the link");
    assert_eq!(node.swarm.links(), 0);
}

#[test]
fn a_relay_link_without_swarm_v1_is_refused_with_415() {
    let node = Node::new(None);
    let now = t0();
    let info = SessionInfo { id: 1, peer: "127.0.0.1:1".parse().unwrap(), caps: Caps::PEER_V1 | Caps::GOSSIP_V1 };
    let mut s = SessionState::new(node.env(), info, true, Some("token".into()), node.registry.queue(), None, now);
    let acts = actions(&mut s);
    assert!(
        matches!(&acts[..], [Action::Send(Frame::Error(e)), Action::Close(_)] if e.code == 415 && e.reason.contains("SWARM_V1")),
        "{acts:?}"
    );
    assert!(!s.detach(now));
}

#[test]
fn a_swarm_link_says_who_it_is_first_and_is_taken_once_the_peer_has() {
    let node = Node::secured();
    let now = t0();
    let mut s = node.swarm_link(1, true, Some("token".into()), now);
    let acts = actions(&mut s);
    let [Action::Send(Frame::Swarm(SwarmFrame::Node(me))), Action::Send(Frame::Auth { req_id: 1, .. })] = &acts[..]
    else {
        panic!("NODE, then the token: {acts:?}")
    };
    assert_eq!(me.id, ME);
    s.on_frame(Frame::Swarm(SwarmFrame::Node(PEER)), now);
    assert!(matches!(&actions(&mut s)[..], [Action::LinkUp(id)] if *id == PEER.id));
    assert_eq!(node.swarm.links(), 1);
    // A second NODE breaks the protocol.
    s.on_frame(Frame::Swarm(SwarmFrame::Node(PEER)), now);
    let acts = actions(&mut s);
    assert!(
        matches!(&acts[..], [Action::Send(Frame::Ctrl(Ctrl::Goaway { code: 400, .. })), Action::Close(_)]),
        "{acts:?}"
    );
    assert!(s.detach(now));
    assert_eq!(node.swarm.links(), 0);
}

#[test]
fn an_inbound_swarm_link_on_a_node_that_requires_tokens_waits_for_a_relay_grant() {
    let node = Node::secured();
    let now = t0();
    let mut s = node.swarm_link(1, false, None, now);
    actions(&mut s);
    s.on_frame(Frame::Swarm(SwarmFrame::Node(PEER)), now);
    assert!(actions(&mut s).is_empty(), "taken before any grant");
    s.on_frame(auth(1, &[Op::Relay], &[], None), now);
    let acts = actions(&mut s);
    assert!(matches!(&acts[..], [Action::Send(Frame::Ack(_)), Action::LinkUp(_)]), "{acts:?}");

    // Without a grant, the first swarm frame ends the link with 401.
    let mut t = node.swarm_link(2, false, None, now);
    actions(&mut t);
    t.on_frame(Frame::Swarm(SwarmFrame::Node(NodeAddr { id: NodeId([3; 32]), ..PEER })), now);
    t.on_frame(Frame::Swarm(SwarmFrame::Join), now);
    let acts = actions(&mut t);
    assert!(
        matches!(&acts[..], [Action::Send(Frame::Ctrl(Ctrl::Goaway { code: 401, .. })), Action::Close(_)]),
        "{acts:?}"
    );
}

#[test]
fn a_swarm_frame_before_node_is_refused_and_one_on_a_client_session_is_415() {
    let node = Node::new(None);
    let now = t0();
    let mut s = node.swarm_link(1, false, None, now);
    actions(&mut s);
    s.on_frame(Frame::Swarm(SwarmFrame::Prune(None)), now);
    let acts = actions(&mut s);
    assert!(
        matches!(&acts[..], [Action::Send(Frame::Ctrl(Ctrl::Goaway { code: 400, .. })), Action::Close(_)]),
        "{acts:?}"
    );

    let mut c = node.session(2, PUBSUB | Caps::SWARM_V1, false, now);
    c.on_frame(Frame::Swarm(SwarmFrame::Prune(None)), now);
    assert_eq!(errors(&sent(&mut c)), [error(ErrorCode::Unsupported, 0)]);
}

#[test]
fn a_link_to_this_node_itself_is_refused() {
    let node = Node::new(None);
    let now = t0();
    let mut s = node.swarm_link(1, false, None, now);
    actions(&mut s);
    s.on_frame(Frame::Swarm(SwarmFrame::Node(NodeAddr { id: ME, ..PEER })), now);
    let acts = actions(&mut s);
    assert!(
        matches!(&acts[..], [Action::Send(Frame::Ctrl(Ctrl::Goaway { code: 400, .. })), Action::Close(_)]),
        "{acts:?}"
    );
    assert_eq!(node.swarm.links(), 0);
}

/// The core's source names no runtime and reads no clock; clippy denies
/// the clock reads too (`#![deny(clippy::disallowed_methods)]`), this also
/// catches what clippy cannot name (the runtime as a whole).
#[test]
fn the_core_reads_no_clock_and_names_no_runtime() {
    let sources = [include_str!("../state.rs"), include_str!("grant.rs"), include_str!("link.rs")];
    for (source, banned) in
        sources.iter().flat_map(|s| ["tokio", "Instant::now", "SystemTime", ".elapsed("].map(|b| (s, b)))
    {
        assert!(!source.contains(banned), "the session core mentions `{banned}`");
    }
}

#[test]
fn inbound_swarm_links_past_the_cap_are_refused_with_a_retry() {
    let node = Node::new(None);
    let now = t0();
    let cap = (8 * overlay_swarm::Config::default().active_view).max(256);
    let mut held = Vec::new();
    for i in 0..=cap {
        let mut s = node.swarm_link(i as u64 + 1, false, None, now);
        actions(&mut s);
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&(i as u64 + 100).to_be_bytes());
        s.on_frame(Frame::Swarm(SwarmFrame::Node(NodeAddr { id: NodeId(id), ..PEER })), now);
        held.push((actions(&mut s), s));
    }
    assert_eq!(node.swarm.links(), cap);
    let (last, _) = held.last().unwrap();
    assert!(
        matches!(
            &last[..],
            [Action::Send(Frame::Ctrl(Ctrl::Goaway { code: 503, reconnect_after_ms: 1000, .. })), Action::Close(_)]
        ),
        "{last:?}"
    );
    for (_, mut s) in held {
        s.detach(now);
    }
    assert_eq!(node.swarm.links(), 0);
}

#[test]
fn a_swarm_link_that_never_says_who_it_is_ends_at_the_handshake_timeout() {
    let node = Node::new(None);
    let start = t0();
    let mut s = node.swarm_link(1, false, None, start);
    actions(&mut s);
    let due = s.timeout(start);
    assert_eq!(due, start.at + node.limits.handshake_timeout);
    s.on_timer(Now { at: due, unix: start.unix });
    let acts = actions(&mut s);
    assert!(
        matches!(&acts[..], [Action::Send(Frame::Ctrl(Ctrl::Goaway { code: 408, .. })), Action::Close(_)]),
        "{acts:?}"
    );
}

#[test]
fn a_dial_that_reaches_a_node_without_relay_links_is_closed() {
    let node = Node::new(None);
    let now = t0();
    let info = SessionInfo { id: 1, peer: "127.0.0.1:1".parse().unwrap(), caps: PUBSUB };
    let mut s = SessionState::new(node.env(), info, true, None, node.registry.queue(), None, now);
    assert!(matches!(&actions(&mut s)[..], [Action::Close(_)]));
}

#[test]
fn a_dialed_tls_peer_whose_node_id_is_not_its_certificates_is_refused() {
    let node = Node::new(None);
    let now = t0();
    let info = SessionInfo { id: 1, peer: "127.0.0.1:1".parse().unwrap(), caps: Caps::PEER_V1 | Caps::SWARM_V1 };
    let io = LinkIo::new(Duration::from_secs(10), Some(NodeId([9; 32])));
    let mut s = SessionState::new(node.env(), info, true, None, node.registry.queue(), Some(io), now);
    actions(&mut s);
    s.on_frame(Frame::Swarm(SwarmFrame::Node(PEER)), now);
    let acts = actions(&mut s);
    assert!(
        matches!(&acts[..], [Action::Send(Frame::Ctrl(Ctrl::Goaway { code: 403, .. })), Action::Close(_)]),
        "{acts:?}"
    );
    assert_eq!(node.swarm.links(), 0);
    // The id the certificate proves is taken.
    let io = LinkIo::new(Duration::from_secs(10), Some(PEER.id));
    let mut t = SessionState::new(node.env(), info, true, None, node.registry.queue(), Some(io), now);
    actions(&mut t);
    t.on_frame(Frame::Swarm(SwarmFrame::Node(PEER)), now);
    assert!(matches!(&actions(&mut t)[..], [Action::LinkUp(_)]));
}
