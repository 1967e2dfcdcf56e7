//! Property tests: every frame kind round-trips, `encoded_len` is exact, and
//! arbitrary bytes in arbitrary chunks never panic nor grow the read buffer
//! past one capped frame.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use oap_codec::{
    Ack, Ctrl, ErrorCode, Frame, HEADER_LEN, IHave, Msg, MsgId, NodeAddr, NodeId, OapCodec, Pattern, Priority, PubAck,
    SwarmFrame, Topic,
};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn token() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9_-]{1,12}", "[ä-ü]{1,3}",]
}

fn topic() -> impl Strategy<Value = Topic> {
    prop::collection::vec(token(), 1..6).prop_filter_map("fits 255 bytes", |t| t.join(".").parse::<Topic>().ok())
}

fn pattern() -> impl Strategy<Value = Pattern> {
    let tok = prop_oneof![4 => token(), 1 => Just("*".to_string())];
    (prop::collection::vec(tok, 1..6), any::<bool>()).prop_filter_map("fits 255 bytes", |(mut t, tail)| {
        if tail {
            t.push(">".into());
        }
        t.join(".").parse::<Pattern>().ok()
    })
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn msg_id() -> impl Strategy<Value = MsgId> {
    any::<[u8; 16]>().prop_map(MsgId)
}

fn node() -> impl Strategy<Value = NodeAddr> {
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(std::net::IpAddr::from),
        any::<[u8; 16]>().prop_map(std::net::IpAddr::from),
    ];
    (any::<[u8; 32]>(), ip, any::<u16>())
        .prop_map(|(id, ip, port)| NodeAddr { id: NodeId(id), addr: std::net::SocketAddr::new(ip, port) })
}

fn swarm_frame() -> impl Strategy<Value = SwarmFrame> {
    let nodes = || prop::collection::vec(node(), 0..8);
    prop_oneof![
        node().prop_map(SwarmFrame::Node),
        Just(SwarmFrame::Join),
        (any::<u8>(), node()).prop_map(|(ttl, node)| SwarmFrame::ForwardJoin { ttl, node }),
        any::<bool>()
            .prop_map(|high| SwarmFrame::Neighbor { priority: if high { Priority::High } else { Priority::Low } }),
        any::<bool>().prop_map(|alive| SwarmFrame::Disconnect { alive }),
        (any::<u8>(), node(), nodes()).prop_map(|(ttl, origin, nodes)| SwarmFrame::Shuffle { ttl, origin, nodes }),
        nodes().prop_map(|nodes| SwarmFrame::ShuffleReply { nodes }),
        prop::collection::vec((msg_id(), any::<u8>()).prop_map(|(msg_id, hops)| IHave { msg_id, hops }), 0..20)
            .prop_map(SwarmFrame::IHave),
        prop::option::of(msg_id()).prop_map(SwarmFrame::Graft),
        prop::option::of(msg_id()).prop_map(SwarmFrame::Prune),
        (
            prop::collection::vec(any::<[u8; 6]>(), 0..20),
            prop::option::of(prop::collection::vec(pattern(), 0..8)),
            any::<bool>()
        )
            .prop_map(|(origins, patterns, parent)| SwarmFrame::Interest { origins, patterns, parent }),
    ]
}

fn reason() -> impl Strategy<Value = String> {
    ".{0,40}"
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        bytes(2048).prop_map(Frame::Data),
        any::<u64>().prop_map(Frame::ping),
        any::<u64>().prop_map(Frame::pong),
        (any::<u16>(), any::<u32>(), reason()).prop_map(|(code, reconnect_after_ms, reason)| Frame::Ctrl(
            Ctrl::Goaway { code, reconnect_after_ms, reason }
        )),
        (any::<u32>(), pattern()).prop_map(|(req_id, pattern)| Frame::Sub { req_id, pattern }),
        (any::<u32>(), pattern()).prop_map(|(req_id, pattern)| Frame::Unsub { req_id, pattern }),
        (any::<u32>(), topic(), bytes(512)).prop_map(|(req_id, topic, payload)| Frame::Pub { req_id, topic, payload }),
        (topic(), msg_id(), any::<u8>(), bytes(512)).prop_map(|(topic, msg_id, hops, payload)| Frame::Msg(Msg {
            topic,
            msg_id,
            hops,
            payload
        })),
        any::<u32>().prop_map(|req_id| Frame::Ack(Ack { req_id, publish: None })),
        (any::<u32>(), msg_id(), any::<u32>(), any::<u32>()).prop_map(|(req_id, msg_id, queued, dropped)| {
            Frame::Ack(Ack { req_id, publish: Some(PubAck { msg_id, queued, dropped }) })
        }),
        (any::<u32>(), reason()).prop_map(|(req_id, r)| Frame::error(ErrorCode::Forbidden, req_id, r)),
        (any::<u32>(), bytes(300)).prop_map(|(req_id, token)| Frame::Auth { req_id, token }),
        any::<u64>().prop_map(|dropped| Frame::Lagged { dropped }),
        swarm_frame().prop_map(Frame::Swarm),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn msg_encode_as_is_the_frame_with_those_hops(
        topic in topic(), id in msg_id(), hops in any::<u8>(), new_hops in any::<u8>(), payload in bytes(512)
    ) {
        let msg = Msg { topic, msg_id: id, hops, payload };
        let mut want = BytesMut::new();
        Frame::Msg(Msg { hops: new_hops, ..msg.clone() }).encode_into(&mut want);
        prop_assert_eq!(&msg.encode_as(new_hops)[..], &want[..]);
    }

    #[test]
    fn encode_decode_round_trip(frames in prop::collection::vec(frame(), 1..8)) {
        let mut codec = OapCodec::new();
        let mut wire = BytesMut::new();
        for f in &frames {
            let before = wire.len();
            codec.encode(f, &mut wire).unwrap();
            prop_assert_eq!(wire.len() - before, f.encoded_len());
        }
        for f in &frames {
            let got = codec.decode(&mut wire).unwrap();
            prop_assert_eq!(got.as_ref(), Some(f));
        }
        prop_assert!(wire.is_empty());
    }

    #[test]
    fn any_chunking_decodes_the_same_frames(
        frames in prop::collection::vec(frame(), 1..8),
        cuts in prop::collection::vec(1usize..64, 1..200),
    ) {
        let mut wire = BytesMut::new();
        for f in &frames {
            OapCodec::new().encode(f, &mut wire).unwrap();
        }
        let wire = wire.freeze();
        let mut codec = OapCodec::new();
        let mut src = BytesMut::new();
        let mut got = Vec::new();
        let mut at = 0;
        let mut cut = cuts.iter().cycle();
        while at < wire.len() {
            let n = (*cut.next().unwrap()).min(wire.len() - at);
            src.extend_from_slice(&wire[at..at + n]);
            at += n;
            while let Some(f) = codec.decode(&mut src).unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_overallocate(
        data in prop::collection::vec(any::<u8>(), 0..4096),
        chunk in 1usize..97,
        max_frame in 1024u32..=4096,
    ) {
        let mut codec = OapCodec::with_max_frame(max_frame);
        let mut src = BytesMut::new();
        'feed: for piece in data.chunks(chunk) {
            src.extend_from_slice(piece);
            loop {
                match codec.decode(&mut src) {
                    Ok(Some(f)) => prop_assert!(f.encoded_len() <= HEADER_LEN + max_frame as usize),
                    Ok(None) => break,
                    Err(e) if e.is_fatal() => break 'feed,
                    Err(_) => {}
                }
                // The decoder reserves at most one capped frame beyond what it holds.
                prop_assert!(src.capacity() <= HEADER_LEN + max_frame as usize + chunk + 64);
            }
        }
    }
}
