//! The test vectors of OAP-1 section 8, byte for byte, through the codec.
#![allow(clippy::unwrap_used)]

use bytes::BytesMut;
use oap_codec::{Caps, DecodeError, Frame, Hello, IHave, MsgId, NodeAddr, NodeId, OapCodec, Pattern, SwarmFrame};
use tokio_util::codec::{Decoder, Encoder};

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
}

fn encode(frame: Frame) -> Vec<u8> {
    let mut dst = BytesMut::new();
    OapCodec::new().encode(frame, &mut dst).unwrap();
    dst.to_vec()
}

fn decode(bytes: &[u8]) -> Frame {
    let mut src = BytesMut::from(bytes);
    let frame = OapCodec::new().decode(&mut src).unwrap().unwrap();
    assert!(src.is_empty(), "decoder left {} bytes", src.len());
    frame
}

#[test]
fn hello_gossip_v1() {
    let wire = hex("4f 41 50 31 01 00 00 00 01");
    assert_eq!(Hello::new(Caps::GOSSIP_V1).encode().to_vec(), wire);
    assert_eq!(Hello::decode(&wire.try_into().unwrap()).unwrap(), Hello::new(Caps::GOSSIP_V1));
}

#[test]
fn data_hello_overlay() {
    let wire = hex("00 00 00 10 01 68 65 6c 6c 6f 2c 20 6f 76 65 72 6c 61 79 21");
    assert_eq!(encode(Frame::data("hello, overlay!")), wire);
    assert_eq!(decode(&wire), Frame::data("hello, overlay!"));
}

#[test]
fn ctrl_ping_nonce_7() {
    let wire = hex("00 00 00 0a 02 01 00 00 00 00 00 00 00 07");
    assert_eq!(encode(Frame::ping(7)), wire);
    assert_eq!(decode(&wire), Frame::ping(7));
}

#[test]
fn sub_req_1_topic_a_b() {
    let wire = hex("00 00 00 09 03 00 00 00 01 03 61 2e 62");
    let frame = Frame::Sub { req_id: 1, pattern: "a.b".parse::<Pattern>().unwrap() };
    assert_eq!(encode(frame.clone()), wire);
    assert_eq!(decode(&wire), frame);
}

#[test]
fn oversize_header_is_413() {
    let mut src = BytesMut::from(&hex("00 10 00 01")[..]);
    let err = OapCodec::new().decode(&mut src).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { len: 1_048_577, .. }));
    assert_eq!(err.code(), 413);
    assert!(err.is_fatal());
}

#[test]
fn pub_with_wildcard_topic_is_400_with_req_id() {
    // PUB req_id=9 topic "a.*" payload "x"
    let mut src = BytesMut::from(&hex("00 00 00 0a 05 00 00 00 09 03 61 2e 2a 78")[..]);
    let err = OapCodec::new().decode(&mut src).unwrap_err();
    assert_eq!((err.code(), err.req_id(), err.is_fatal()), (400, 9, false));
    assert!(src.is_empty(), "the bad frame is consumed");
}

#[test]
fn swarm_node_identity() {
    // NODE id=01 x 32, 10.0.0.1:9500
    let wire = hex(&format!("00 00 00 28 10 {} 04 0a 00 00 01 25 1c", "01 ".repeat(32)));
    let frame =
        Frame::Swarm(SwarmFrame::Node(NodeAddr { id: NodeId([1; 32]), addr: "10.0.0.1:9500".parse().unwrap() }));
    assert_eq!(encode(frame.clone()), wire);
    assert_eq!(decode(&wire), frame);
}

#[test]
fn swarm_ihave_graft_prune() {
    // IHAVE one id (02 x 16) at 3 hops; GRAFT for it; GRAFT with no id; PRUNE
    let id = MsgId([2; 16]);
    let cases = [
        (
            format!("00 00 00 14 17 00 01 {} 03", "02 ".repeat(16)),
            SwarmFrame::IHave(vec![IHave { msg_id: id, hops: 3 }]),
        ),
        (format!("00 00 00 11 18 {}", "02 ".repeat(16)), SwarmFrame::Graft(Some(id))),
        ("00 00 00 01 18".to_string(), SwarmFrame::Graft(None)),
        (format!("00 00 00 11 19 {}", "02 ".repeat(16)), SwarmFrame::Prune(Some(id))),
        ("00 00 00 01 19".to_string(), SwarmFrame::Prune(None)),
    ];
    for (wire, frame) in cases {
        let wire = hex(&wire);
        assert_eq!(encode(Frame::Swarm(frame.clone())), wire, "{frame:?}");
        assert_eq!(decode(&wire), Frame::Swarm(frame));
    }
}

#[test]
fn swarm_interest() {
    // INTEREST for origin 03 x 6: pattern "a.*"; every topic, to the sender's parent
    let origins = vec![[3; 6]];
    let cases = [
        (
            format!("00 00 00 10 1a 00 01 {} 00 00 01 03 61 2e 2a", "03 ".repeat(6)),
            SwarmFrame::Interest {
                origins: origins.clone(),
                patterns: Some(vec!["a.*".parse().unwrap()]),
                parent: false,
            },
        ),
        (
            format!("00 00 00 0a 1a 00 01 {} 03", "03 ".repeat(6)),
            SwarmFrame::Interest { origins, patterns: None, parent: true },
        ),
    ];
    for (wire, frame) in cases {
        let wire = hex(&wire);
        assert_eq!(encode(Frame::Swarm(frame.clone())), wire, "{frame:?}");
        assert_eq!(decode(&wire), Frame::Swarm(frame));
    }
}

#[test]
fn swarm_counts_beyond_the_frame_are_400_before_any_allocation() {
    // IHAVE announcing 65535 ids in a 3-byte payload; SHUFFLE_REPLY with 255
    // nodes and none there; INTEREST with 65535 origins, then with 65535
    // patterns, and none there; an unknown INTEREST flag (4)
    for wire in [
        "00 00 00 03 17 ff ff",
        "00 00 00 02 16 ff",
        "00 00 00 03 1a ff ff",
        "00 00 00 06 1a 00 00 00 ff ff",
        "00 00 00 04 1a 00 00 04",
    ] {
        let mut src = BytesMut::from(&hex(wire)[..]);
        let err = OapCodec::new().decode(&mut src).unwrap_err();
        assert_eq!((err.code(), err.is_fatal()), (400, false), "{wire}");
    }
}
