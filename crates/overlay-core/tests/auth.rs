//! Capability tokens over real sockets: OAP-1 section 6.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use oap_codec::{Ack, Caps, Frame};
use overlay_core::auth::Op;
use overlay_core::client::{Client, ClientError, ConnectOptions};
use overlay_core::{Delivery, Overlay, Peer, StartError};

async fn auth(c: &mut Client, req_id: u32, token: &str) -> Frame {
    c.send(&Frame::Auth { req_id, token: token.as_bytes().to_vec().into() }).await.unwrap();
    within(c.recv()).await.unwrap()
}

async fn error_code(c: &mut Client, frame: Frame) -> (u16, u32) {
    c.send(&frame).await.unwrap();
    match within(c.recv()).await.unwrap() {
        Frame::Error(e) => (e.code, e.req_id),
        other => panic!("expected ERROR, got {other:?}"),
    }
}

fn sub_frame(req_id: u32, pattern: &str) -> Frame {
    Frame::Sub { req_id, pattern: pattern.parse().unwrap() }
}

#[tokio::test]
async fn requests_before_auth_get_401_and_grants_are_enforced() {
    let node = secured(|_| {}).await;
    let mut c = Client::connect(
        &ConnectOptions::new(node.local_addr()).caps(Caps::GOSSIP_V1 | Caps::PUBSUB_V1 | Caps::AUTH_V1),
    )
    .await
    .unwrap();
    assert!(c.negotiated().caps.contains(Caps::AUTH_V1), "a node with a root key offers AUTH_V1");
    assert_eq!(error_code(&mut c, sub_frame(1, "dht.>")).await, (401, 1));
    assert_eq!(error_code(&mut c, pub_frame(2, "dht.put", "v")).await, (401, 2));
    // DATA and CTRL stay open.
    c.send(&Frame::data("echo")).await.unwrap();
    assert_eq!(within(c.recv()).await.unwrap(), Frame::data("echo"));

    let mut tampered = token(&[Op::Subscribe], &["dht.>"], None).into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let Frame::Error(e) = auth(&mut c, 3, std::str::from_utf8(&tampered).unwrap()).await else { panic!() };
    assert_eq!((e.code, e.req_id), (401, 3));
    let expired = token(&[Op::Subscribe], &["dht.>"], Some(unix_now() - 1));
    let Frame::Error(e) = auth(&mut c, 4, &expired).await else { panic!() };
    assert_eq!(e.code, 401);

    let ok = token(&[Op::Subscribe], &["dht.>"], None);
    assert!(matches!(auth(&mut c, 5, &ok).await, Frame::Ack(Ack { req_id: 5, .. })));
    sub(&mut c, 6, "dht.*").await;
    assert_eq!(error_code(&mut c, sub_frame(7, "other.>")).await, (403, 7), "wrong topic");
    assert_eq!(error_code(&mut c, pub_frame(8, "dht.put", "v")).await, (403, 8), "wrong op");
    wait_metric(&node, "overlay_oap_rejects_total", &[("reason", "forbidden_topic")], 1.0).await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_narrower_refresh_revokes_exactly_the_uncovered_subscriptions() {
    let node = secured(|_| {}).await;
    let mut c = Client::connect(
        &ConnectOptions::new(node.local_addr()).caps(Caps::GOSSIP_V1 | Caps::PUBSUB_V1 | Caps::AUTH_V1),
    )
    .await
    .unwrap();
    assert!(matches!(auth(&mut c, 1, &token(&[Op::Subscribe], &["dht.>"], None)).await, Frame::Ack(_)));
    sub(&mut c, 10, "dht.a").await;
    sub(&mut c, 11, "dht.b.>").await;
    sub(&mut c, 12, "dht.b.x").await;
    c.send(&Frame::Auth { req_id: 2, token: token(&[Op::Subscribe], &["dht.b.>"], None).into_bytes().into() })
        .await
        .unwrap();
    assert!(matches!(within(c.recv()).await.unwrap(), Frame::Ack(Ack { req_id: 2, .. })));
    let Frame::Error(e) = within(c.recv()).await.unwrap() else { panic!("expected the revocation") };
    assert_eq!((e.code, e.req_id), (403, 10));
    // The covered subscriptions still deliver; the revoked one does not.
    node.publish("dht.a", "gone").unwrap();
    node.publish("dht.b.x", "kept").unwrap();
    let Frame::Msg(m) = within(c.recv()).await.unwrap() else { panic!("expected MSG") };
    assert_eq!(&m.payload[..], b"kept");
    node.shutdown().await;
}

#[tokio::test]
async fn an_expiring_grant_ends_its_subscriptions_but_not_the_session() {
    let node = secured(|_| {}).await;
    let mut c = Client::connect(
        &ConnectOptions::new(node.local_addr()).caps(Caps::GOSSIP_V1 | Caps::PUBSUB_V1 | Caps::AUTH_V1),
    )
    .await
    .unwrap();
    let soon = token(&[Op::Subscribe], &[], Some(unix_now() + 2));
    assert!(matches!(auth(&mut c, 1, &soon).await, Frame::Ack(_)));
    sub(&mut c, 9, "ticks").await;
    let Frame::Error(e) = tokio::time::timeout(Duration::from_secs(10), c.recv()).await.unwrap().unwrap() else {
        panic!("expected the expiry")
    };
    assert_eq!((e.code, e.req_id), (403, 9));
    c.send(&Frame::ping(1)).await.unwrap();
    assert_eq!(within(c.recv()).await.unwrap(), Frame::pong(1), "the session stays");
    assert_eq!(error_code(&mut c, sub_frame(10, "ticks")).await, (401, 10), "no grant any more");
    node.shutdown().await;
}

#[tokio::test]
async fn relay_links_present_their_relay_token() {
    let b = secured(|c| c.admin.enabled = false).await;
    let mut at_b = b.subscribe("relayed.>").unwrap();
    let relay = token(&[Op::Relay], &[], None);
    let a = peer_node(vec![], |_| {}).await;
    a.add_peer(Peer::Detailed { addr: b.local_addr().into(), token: Some(relay), name: None }).unwrap();
    wait_links(&a, 1).await;
    wait_links(&b, 1).await;
    a.publish("relayed.x", "through").unwrap();
    let Some(Delivery::Message(m)) = within(at_b.recv()).await else { panic!() };
    assert_eq!(&m.payload[..], b"through");
    // And back over the same link: A dialed B, so it takes what B relays.
    let mut at_a = a.subscribe("back.>").unwrap();
    b.publish("back.x", "returned").unwrap();
    let Some(Delivery::Message(m)) = within(at_a.recv()).await else { panic!() };
    assert_eq!(&m.payload[..], b"returned");

    // Without a token, B never takes the link (its swarm frames get
    // GOAWAY 401), so nothing C publishes reaches B.
    let c = peer_node(vec![], |_| {}).await;
    c.add_peer(b.local_addr()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.swarm().active.iter().all(|p| p.node_id != c.swarm().node_id[..16]), "B took C");
    c.publish("relayed.x", "refused").unwrap();
    a.publish("relayed.x", "after").unwrap();
    let Some(Delivery::Message(m)) = within(at_b.recv()).await else { panic!() };
    assert_eq!(&m.payload[..], b"after", "the unauthenticated relay was dropped");
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_readable_root_key_file_refuses_to_start() {
    let path = root_key_file(0o644);
    let mut cfg = overlay_core::OverlayConfig::default();
    cfg.transport.addr = "127.0.0.1:0".parse().unwrap();
    cfg.admin.enabled = false;
    cfg.auth.root_key_file = Some(path.clone());
    let err = Overlay::start(cfg).await.err().unwrap();
    assert!(matches!(err, StartError::RootKey(_)));
    assert!(err.to_string().contains("readable by others"), "{err}");
}

/// A Kubernetes Secret mounted with `fsGroup` is owned by root, mode 0440:
/// read by the pod's group is allowed for a file root owns (as PostgreSQL
/// allows for its key), never write by the group, never any access by
/// others, and never group read of a file someone else owns.
#[test]
fn a_root_owned_key_may_be_read_by_its_group_only() {
    use std::os::unix::fs::MetadataExt as _;
    let root = std::fs::metadata(root_key_file(0o600)).unwrap().uid() == 0;
    for (mode, ok) in [(0o600, true), (0o400, true), (0o440, root), (0o640, root), (0o660, false), (0o604, false)] {
        let loaded = overlay_core::auth::load_root_key(&root_key_file(mode));
        assert_eq!(loaded.is_ok(), ok, "mode {mode:o} (running as root: {root}): {loaded:?}");
    }
}

#[tokio::test]
async fn a_swarm_peer_gets_nothing_until_a_relay_grant_and_then_hears_of_its_topics_only() {
    let node = secured(|_| {}).await;
    let mut fake = common::fake_peer(&node, 9, Caps::AUTH_V1, false).await;
    assert!(fake.negotiated().caps.contains(Caps::PEER_V1 | Caps::SWARM_V1));
    node.publish("secret.x", "not for you").unwrap();
    fake.send(&Frame::ping(1)).await.unwrap();
    loop {
        match within(fake.recv()).await.unwrap() {
            Frame::Swarm(_) => {}
            f => break assert_eq!(f, Frame::pong(1), "no MSG before the PONG: the link is not taken"),
        }
    }
    assert_eq!(node.peers_connected(), 0);

    let relay = token(&[Op::Relay], &["open.>"], None);
    fake.send(&Frame::Auth { req_id: 1, token: relay.into() }).await.unwrap();
    fake.send(&Frame::Swarm(oap_codec::SwarmFrame::Join)).await.unwrap();
    wait_links(&node, 1).await;
    node.publish("secret.x", "still not").unwrap();
    let open = node.publish("open.x", "yours").unwrap().msg_id;
    // A restricted link is kept out of the broadcast trees: it hears of
    // what it may carry by IHAVE, and gets it when it asks.
    let announced = loop {
        match within(fake.recv()).await.unwrap() {
            Frame::Swarm(oap_codec::SwarmFrame::IHave(ids)) => break ids,
            Frame::Ack(_) | Frame::Swarm(_) => {}
            other => panic!("expected IHAVE, got {other:?}"),
        }
    };
    assert_eq!(announced.iter().map(|i| i.msg_id).collect::<Vec<_>>(), [open], "only what the grant covers");
    fake.send(&Frame::Swarm(oap_codec::SwarmFrame::Graft(Some(open)))).await.unwrap();
    let m = loop {
        match within(fake.recv()).await.unwrap() {
            Frame::Msg(m) => break m,
            Frame::Ack(_) | Frame::Swarm(_) => {}
            other => panic!("expected MSG, got {other:?}"),
        }
    };
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("open.x", &b"yours"[..]), "the grant's topics bound what it gets");
    // Relayed MSGs outside the grant's topics are refused.
    fake.send(&Frame::Msg(oap_codec::Msg {
        topic: "secret.y".parse().unwrap(),
        msg_id: Default::default(),
        hops: 1,
        payload: "x".into(),
    }))
    .await
    .unwrap();
    let e = loop {
        match within(fake.recv()).await.unwrap() {
            Frame::Error(e) => break e,
            Frame::Swarm(_) | Frame::Msg(_) => {}
            other => panic!("expected ERROR, got {other:?}"),
        }
    };
    assert_eq!(e.code, 403);
    node.shutdown().await;
}

#[tokio::test]
async fn a_node_without_the_swarm_is_refused_with_415() {
    let node = peer_node(vec![], |_| {}).await;
    let mut old =
        Client::connect(&ConnectOptions::new(node.local_addr()).caps(Caps::GOSSIP_V1 | Caps::PEER_V1)).await.unwrap();
    let Frame::Error(e) = within(old.recv()).await.unwrap() else { panic!("expected ERROR 415") };
    assert_eq!(e.code, 415);
    assert!(e.reason.contains("SWARM_V1"), "{}", e.reason);
    assert_eq!(node.peers_connected(), 0);
    node.shutdown().await;
}

#[tokio::test]
async fn authenticate_gives_up_on_a_node_that_never_answers() {
    // A peer that speaks the hello, then ignores AUTH: the client's wait is
    // bounded (ANSWER_TIMEOUT) and says so, it does not hang.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(&oap_codec::Hello::new(Caps::GOSSIP_V1 | Caps::AUTH_V1).encode()).await.unwrap();
        let mut sink = vec![0u8; 4096];
        while s.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    });
    let mut c = Client::connect(&ConnectOptions::new(addr).caps(Caps::GOSSIP_V1 | Caps::AUTH_V1)).await.unwrap();
    let err = within(c.authenticate("any")).await.unwrap_err();
    assert!(matches!(err, ClientError::NoAnswer("AUTH")), "{err}");
    drop(c);
    silent.await.unwrap();
}

#[tokio::test]
async fn a_node_requiring_tokens_takes_what_its_dialed_peer_relays_back_over_plain_tcp() {
    // OAP-1 section 6: tokens are checked by the side that accepted the link.
    let b = secured(|c| c.admin.enabled = false).await;
    let a = secured(|c| c.admin.enabled = false).await;
    a.add_peer(Peer::Detailed { addr: b.local_addr().into(), token: Some(token(&[Op::Relay], &[], None)), name: None })
        .unwrap();
    wait_links(&a, 1).await;
    wait_links(&b, 1).await;
    let mut at_a = a.subscribe("back.>").unwrap();
    for i in 0..3u8 {
        b.publish("back.x", vec![i]).unwrap();
        let Some(Delivery::Message(m)) = within(at_a.recv()).await else { panic!("no delivery") };
        assert_eq!(&m.payload[..], &[i]);
    }
    for n in [a, b] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn the_typed_client_presents_its_token_and_reports_each_refusal() {
    let node = secured(|_| {}).await;
    let opts = ConnectOptions::new(node.local_addr()).token(token(&[Op::Publish], &["ok.>"], None));
    let mut c = within(Client::connect(&opts)).await.unwrap();
    let messages = ["ok.a", "no.b", "ok.c"].map(|t| (t.parse().unwrap(), bytes::Bytes::from_static(b"v")));
    let mut receipts = Vec::new();
    within(c.publish_all(messages, |r| receipts.push(r.map(|_| ()).map_err(|e| e.code)))).await.unwrap();
    assert_eq!(receipts, [Ok(()), Err(403), Ok(())], "a refusal does not stop the rest");
    match within(c.subscribe(&"ok.>".parse().unwrap())).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, 403),
        Err(other) => panic!("expected ERROR 403, got {other:?}"),
        Ok(_) => panic!("a publish-only token subscribed"),
    }
    let bad = ConnectOptions::new(node.local_addr()).token("not a token");
    match within(Client::connect(&bad)).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, 401),
        Err(other) => panic!("expected ERROR 401, got {other:?}"),
        Ok(_) => panic!("a bad token was accepted"),
    }
}
