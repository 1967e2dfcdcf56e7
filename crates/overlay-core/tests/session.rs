//! OAP/1 sessions over real sockets against an in-process node.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use oap_codec::{Ctrl, Frame, Kind, Pattern};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn prototype_client_gets_byte_exact_echoes() {
    let node = node(|_| {}).await;
    // What the first prototype's client did: a 9-byte hello, then DATA.
    let mut s = TcpStream::connect(node.local_addr()).await.unwrap();
    s.write_all(&[0x4f, 0x41, 0x50, 0x31, 0x01, 0x00, 0x00, 0x00, 0x01]).await.unwrap();
    let mut hello = [0u8; 9];
    within(s.read_exact(&mut hello)).await.unwrap();
    assert_eq!(&hello[..5], b"OAP1\x01");
    assert_eq!(u32::from_be_bytes(hello[5..].try_into().unwrap()) & 1, 1, "node sets GOSSIP_V1");

    let data = [
        0x00, 0x00, 0x00, 0x10, 0x01, b'h', b'e', b'l', b'l', b'o', b',', b' ', b'o', b'v', b'e', b'r', b'l', b'a',
        b'y', b'!',
    ];
    s.write_all(&data).await.unwrap();
    assert_eq!(read_raw(&mut s).await, data);
    node.shutdown().await;
}

#[tokio::test]
async fn echoes_1_byte_64_kib_and_the_largest_frame() {
    let node = node(|_| {}).await;
    let mut s = connect(&node).await;
    for (i, len) in [1, 64 * 1024, 1024 * 1024 - 1].into_iter().enumerate() {
        let frame = encode(&Frame::Data(payload(len, i as u8)));
        s.write_all(&frame).await.unwrap();
        assert_eq!(read_raw(&mut s).await, frame, "echo of {len} bytes");
    }
    wait_metric(&node, "overlay_frames_out_total", &[("kind", "data")], 3.0).await;
    node.shutdown().await;
}

async fn pipelined_in_order(tx_queue: u32, tx_watermark: u32) {
    let node = node(|c| {
        c.session.tx_queue = tx_queue;
        c.session.tx_watermark = tx_watermark;
    })
    .await;
    let s = connect(&node).await;
    let (mut rd, mut wr) = s.into_split();
    let frames: Vec<Vec<u8>> = (0..1000).map(|i| encode(&Frame::Data(payload(1 + i % 300, i as u8)))).collect();
    let all: Vec<u8> = frames.concat();
    let writer = tokio::spawn(async move {
        wr.write_all(&all).await.unwrap();
        wr
    });
    for (i, want) in frames.iter().enumerate() {
        let mut got = vec![0u8; want.len()];
        within(rd.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, want, "frame {i} out of order or changed");
    }
    drop(writer.await.unwrap());
    wait_metric(&node, "overlay_frames_in_total", &[("kind", "data")], 1000.0).await;
    node.shutdown().await;
}

#[tokio::test]
async fn one_thousand_pipelined_frames_echo_in_order() {
    pipelined_in_order(128, 96).await;
}

#[tokio::test]
async fn a_tiny_reply_queue_pauses_reading_but_loses_nothing() {
    pipelined_in_order(2, 1).await;
}

#[tokio::test]
async fn oversize_header_gets_413_and_close_without_the_body() {
    let node = node(|_| {}).await;
    let mut s = connect(&node).await;
    // len = 1,048,577 and not one body byte: the node must answer anyway.
    s.write_all(&[0x00, 0x10, 0x00, 0x01]).await.unwrap();
    let Frame::Error(e) = read_frame(&mut s).await else { panic!("expected ERROR") };
    assert_eq!(e.code, 413);
    assert_closed(&mut s).await;
    assert_eq!(metric(&node, "overlay_oap_rejects_total", &[("reason", "too_large")]).await, 1.0);
    assert_eq!(metric(&node, "oap_decode_errors_total", &[]).await, 1.0);
    node.shutdown().await;
}

#[tokio::test]
async fn zero_length_frame_gets_400_and_close() {
    let node = node(|_| {}).await;
    let mut s = connect(&node).await;
    s.write_all(&[0, 0, 0, 0]).await.unwrap();
    let Frame::Error(e) = read_frame(&mut s).await else { panic!("expected ERROR") };
    assert_eq!(e.code, 400);
    assert_closed(&mut s).await;
    node.shutdown().await;
}

#[tokio::test]
async fn handshake_failures_are_closed_and_counted_by_reason() {
    let node = node(|c| c.oap.handshake_timeout_ms = 200).await;

    let (mut s, _) = connect_with(&node, b"OAP2\x01\x00\x00\x00\x01").await;
    assert_closed(&mut s).await;
    let (mut s, _) = connect_with(&node, b"OAP1\x00\x00\x00\x00\x01").await;
    assert_closed(&mut s).await;
    // Caps without GOSSIP_V1, with a DATA frame right behind the hello: the
    // ERROR must still arrive (no reset from unread bytes).
    let mut hello_and_data = b"OAP1\x01\x00\x00\x00\x04".to_vec();
    hello_and_data.extend(encode(&Frame::data("too early")));
    let (mut s, _) = connect_with(&node, &hello_and_data).await;
    let Frame::Error(e) = read_frame(&mut s).await else { panic!("caps mismatch gets ERROR") };
    assert_eq!(e.code, 400);
    assert_closed(&mut s).await;
    // A silent client: connected, never says hello.
    let mut silent = TcpStream::connect(node.local_addr()).await.unwrap();
    let mut hello = [0u8; 9];
    within(silent.read_exact(&mut hello)).await.unwrap();
    assert_closed(&mut silent).await;

    for reason in ["preamble", "version", "caps", "timeout"] {
        wait_metric(&node, "overlay_handshake_fail_total", &[("reason", reason)], 1.0).await;
    }
    assert_eq!(metric(&node, "overlay_sessions_active", &[]).await, 0.0);
    node.shutdown().await;
}

#[tokio::test]
async fn higher_version_and_unknown_caps_negotiate_down() {
    let node = node(|_| {}).await;
    let (mut s, theirs) = connect_with(&node, b"OAP1\x09\x80\x00\x02\x01").await;
    assert_eq!(theirs[4], 1, "node speaks version 1");
    let frame = encode(&Frame::data("still fine"));
    s.write_all(&frame).await.unwrap();
    assert_eq!(read_raw(&mut s).await, frame);
    node.shutdown().await;
}

#[tokio::test]
async fn connection_over_max_conns_is_refused_and_counted() {
    let node = node(|c| c.transport.max_conns = 2).await;
    let mut a = connect(&node).await;
    let _b = connect(&node).await;
    let mut c = TcpStream::connect(node.local_addr()).await.unwrap();
    assert_closed(&mut c).await;
    assert_eq!(metric(&node, "transport_rejected_total", &[("reason", "max_conns")]).await, 1.0);
    // The admitted sessions are unaffected.
    let frame = encode(&Frame::data("a"));
    a.write_all(&frame).await.unwrap();
    assert_eq!(read_raw(&mut a).await, frame);
    node.shutdown().await;
}

#[tokio::test]
async fn a_client_stalled_mid_frame_is_closed_after_read_timeout() {
    let node = node(|c| c.transport.read_timeout_ms = 200).await;
    let mut s = connect(&node).await;
    // Header of a 100-byte frame, then only 10 bytes of it.
    s.write_all(&[0, 0, 0, 100, 0x01]).await.unwrap();
    s.write_all(&[0u8; 10]).await.unwrap();
    match read_frame(&mut s).await {
        Frame::Ctrl(Ctrl::Goaway { code, .. }) => assert_eq!(code, 408),
        other => panic!("expected GOAWAY 408, got {other:?}"),
    }
    assert_closed(&mut s).await;
    wait_metric(&node, "overlay_sessions_active", &[], 0.0).await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_silent_session_is_pinged_then_closed_with_goaway_408() {
    let node = node(|c| c.transport.idle_timeout_ms = 1000).await;
    let mut s = connect(&node).await;
    let Frame::Ctrl(Ctrl::Ping { .. }) = read_frame(&mut s).await else {
        panic!("expected PING at half the idle timeout")
    };
    match read_frame(&mut s).await {
        Frame::Ctrl(Ctrl::Goaway { code, .. }) => assert_eq!(code, 408),
        other => panic!("expected GOAWAY 408, got {other:?}"),
    }
    assert_closed(&mut s).await;
    node.shutdown().await;
}

#[tokio::test]
async fn answering_pings_keeps_a_quiet_session_open() {
    // A PONG has half the idle timeout (1 s) to arrive: ample on a loaded machine.
    let node = node(|c| c.transport.idle_timeout_ms = 2000).await;
    let mut s = connect(&node).await;
    for _ in 0..3 {
        let Frame::Ctrl(Ctrl::Ping { nonce }) = read_frame(&mut s).await else { panic!("expected PING") };
        s.write_all(&encode(&Frame::pong(nonce))).await.unwrap();
    }
    // Three idle periods later the session still echoes.
    let frame = encode(&Frame::data("alive"));
    s.write_all(&frame).await.unwrap();
    assert_eq!(read_raw(&mut s).await, frame);
    node.shutdown().await;
}

#[tokio::test]
async fn ping_gets_pong_with_the_same_nonce() {
    let node = node(|_| {}).await;
    let mut s = connect(&node).await;
    s.write_all(&encode(&Frame::ping(0xdead_beef))).await.unwrap();
    assert_eq!(read_frame(&mut s).await, Frame::pong(0xdead_beef));
    wait_metric(&node, "overlay_frames_out_total", &[("kind", "ctrl")], 1.0).await;
    node.shutdown().await;
}

#[tokio::test]
async fn unknown_kinds_and_unnegotiated_kinds_get_415_and_the_session_stays() {
    let node = node(|_| {}).await;
    let mut s = connect(&node).await;
    s.write_all(&[0, 0, 0, 3, 0x7f, 1, 2]).await.unwrap();
    let Frame::Error(e) = read_frame(&mut s).await else { panic!("expected ERROR") };
    assert_eq!(e.code, 415);
    assert!(e.reason.contains("0x7f"), "reason names the kind: {}", e.reason);

    let sub = Frame::Sub { req_id: 42, pattern: "a.>".parse::<Pattern>().unwrap() };
    s.write_all(&encode(&sub)).await.unwrap();
    let Frame::Error(e) = read_frame(&mut s).await else { panic!("expected ERROR") };
    assert_eq!((e.code, e.req_id), (415, 42));
    assert!(e.reason.contains("PUBSUB_V1"), "{}", e.reason);

    // A PUB that is also malformed (wildcard topic) is refused for its cap first.
    s.write_all(&[0, 0, 0, 0x0a, 0x05, 0, 0, 0, 9, 3, b'a', b'.', b'*', b'x']).await.unwrap();
    let Frame::Error(e) = read_frame(&mut s).await else { panic!("expected ERROR") };
    assert_eq!((e.code, e.req_id), (415, 9));

    // Unknown and empty CTRL ops are ignored; the session still echoes.
    s.write_all(&[0, 0, 0, 2, 0x02, 0x09, 0, 0, 0, 1, 0x02]).await.unwrap();
    let frame = encode(&Frame::data("after"));
    s.write_all(&frame).await.unwrap();
    assert_eq!(read_raw(&mut s).await, frame);
    wait_metric(&node, "overlay_frames_in_total", &[("kind", Kind::Sub.label())], 1.0).await;
    assert_eq!(metric(&node, "overlay_oap_rejects_total", &[("reason", "unknown_ctrl_op")]).await, 1.0);
    assert_eq!(metric(&node, "overlay_oap_rejects_total", &[("reason", "empty_ctrl")]).await, 1.0);
    node.shutdown().await;
}

#[tokio::test]
async fn malformed_payload_gets_400_and_the_session_stays() {
    let node = node(|_| {}).await;
    let mut s = connect(&node).await;
    // PING with a 2-byte nonce.
    s.write_all(&[0, 0, 0, 4, 0x02, 0x01, 0, 7]).await.unwrap();
    let Frame::Error(e) = read_frame(&mut s).await else { panic!("expected ERROR") };
    assert_eq!(e.code, 400);
    let frame = encode(&Frame::data("after"));
    s.write_all(&frame).await.unwrap();
    assert_eq!(read_raw(&mut s).await, frame);
    node.shutdown().await;
}

#[tokio::test]
async fn an_embedder_can_install_its_own_data_handler() {
    let mut cfg = overlay_core::OverlayConfig::default();
    cfg.transport.addr = "127.0.0.1:0".parse().unwrap();
    cfg.admin.enabled = false;
    let node = overlay_core::Overlay::builder(cfg)
        .data_handler(|_: &overlay_core::SessionInfo, p: bytes::Bytes| {
            Some(p.iter().rev().copied().collect::<Vec<u8>>().into())
        })
        .start()
        .await
        .unwrap();
    let mut s = connect(&node).await;
    s.write_all(&encode(&Frame::data("abc"))).await.unwrap();
    assert_eq!(read_frame(&mut s).await, Frame::data("cba"));
    node.shutdown().await;
}

#[tokio::test]
async fn session_counters_move_and_return_to_zero() {
    let node = node(|_| {}).await;
    let mut s = connect(&node).await;
    wait_metric(&node, "overlay_sessions_active", &[], 1.0).await;
    s.write_all(&encode(&Frame::data("xyz"))).await.unwrap();
    read_raw(&mut s).await;
    drop(s);
    wait_metric(&node, "overlay_sessions_active", &[], 0.0).await;
    assert_eq!(metric(&node, "overlay_connections_total", &[]).await, 1.0);
    assert_eq!(metric(&node, "overlay_bytes_in_total", &[]).await, 8.0);
    wait_metric(&node, "transport_connections", &[], 0.0).await;
    assert!(metric(&node, "transport_bytes_in_total", &[]).await >= 17.0);
    node.shutdown().await;
}
