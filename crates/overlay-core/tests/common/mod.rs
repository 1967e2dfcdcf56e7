//! Helpers for tests against a node started in-process on 127.0.0.1:0.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use oap_codec::{Caps, Frame, Hello, OapCodec};
use overlay_core::{Overlay, OverlayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

/// Upper bound on any single wait in a test; never what makes a test pass.
pub const PATIENCE: Duration = Duration::from_secs(20);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A node on free loopback ports with a `service` label of its own, so its
/// metrics are not mixed with other tests' nodes in this process.
pub async fn node(tweak: impl FnOnce(&mut OverlayConfig)) -> Overlay {
    let mut cfg = OverlayConfig::default();
    cfg.transport.addr = "127.0.0.1:0".parse().unwrap();
    cfg.admin.addr = "127.0.0.1:0".parse().unwrap();
    cfg.transport.name = format!("test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    tweak(&mut cfg);
    Overlay::start(cfg).await.unwrap()
}

/// A TCP connection that has sent `hello` and read the node's.
pub async fn connect_with(node: &Overlay, hello: &[u8]) -> (TcpStream, [u8; 9]) {
    let mut s = TcpStream::connect(node.local_addr()).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(hello).await.unwrap();
    let mut theirs = [0u8; 9];
    within(s.read_exact(&mut theirs)).await.unwrap();
    (s, theirs)
}

/// A session negotiated with `GOSSIP_V1`.
pub async fn connect(node: &Overlay) -> TcpStream {
    connect_with(node, &Hello::new(Caps::GOSSIP_V1).encode()).await.0
}

pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    OapCodec::new().encode(frame, &mut out).unwrap();
    out.to_vec()
}

/// Reads one frame's raw bytes.
pub async fn read_raw(s: &mut TcpStream) -> Vec<u8> {
    let mut header = [0u8; 4];
    within(s.read_exact(&mut header)).await.unwrap();
    let len = u32::from_be_bytes(header) as usize;
    let mut frame = vec![0u8; 4 + len];
    frame[..4].copy_from_slice(&header);
    within(s.read_exact(&mut frame[4..])).await.unwrap();
    frame
}

/// Reads and decodes one frame.
pub async fn read_frame(s: &mut TcpStream) -> Frame {
    let raw = read_raw(s).await;
    OapCodec::new().decode(&mut BytesMut::from(&raw[..])).unwrap().unwrap()
}

/// Asserts the node closes the stream (EOF or reset) without sending more.
pub async fn assert_closed(s: &mut TcpStream) {
    let mut rest = Vec::new();
    let _ = within(s.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "expected close, got {} more bytes", rest.len());
}

pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(PATIENCE, f).await.expect("timed out waiting")
}

/// `GET path` on the node's admin plane: (status, body).
pub async fn get(node: &Overlay, path: &str) -> (u16, String) {
    http_get(node.admin_addr().unwrap(), path).await
}

pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    within(s.read_to_end(&mut raw)).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// The value of one series on `/metrics`, matched by name and the exact
/// label set (besides `service`, which is the node's own); 0 when absent.
pub async fn metric(node: &Overlay, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, body) = get(node, "/metrics").await;
    let service = &node.config().transport.name;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (metric_name, label_text) = series.split_once('{').unwrap_or((series, "}"));
        if metric_name != name {
            continue;
        }
        let label_text = label_text.trim_end_matches('}');
        let mut have: Vec<(String, String)> = label_text
            .split(',')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        have.sort();
        let mut want: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        want.push(("service".into(), service.clone()));
        want.sort();
        if have == want {
            return value.parse().unwrap();
        }
    }
    0.0
}

/// Polls `/metrics` until the series reaches `want` (or patience runs out).
pub async fn wait_metric(node: &Overlay, name: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = metric(node, name, labels).await;
        if got == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name}{labels:?} stayed at {got}, want {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn payload(len: usize, seed: u8) -> Bytes {
    (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect::<Vec<u8>>().into()
}

/// A pub/sub client (`GOSSIP_V1 | PUBSUB_V1`).
pub async fn pubsub(node: &Overlay) -> overlay_core::client::Client {
    // ConnectOptions' default caps are GOSSIP_V1 | PUBSUB_V1.
    overlay_core::client::Client::connect(&overlay_core::client::ConnectOptions::new(node.local_addr())).await.unwrap()
}

/// `SUB req_id pattern` and its `ACK`.
pub async fn sub(c: &mut overlay_core::client::Client, req_id: u32, pattern: &str) {
    c.send(&Frame::Sub { req_id, pattern: pattern.parse().unwrap() }).await.unwrap();
    match within(c.recv()).await.unwrap() {
        Frame::Ack(a) => assert_eq!((a.req_id, a.publish), (req_id, None)),
        other => panic!("expected ACK {req_id}, got {other:?}"),
    }
}

/// `PUB` frame.
pub fn pub_frame(req_id: u32, topic: &str, payload: impl Into<Bytes>) -> Frame {
    Frame::Pub { req_id, topic: topic.parse().unwrap(), payload: payload.into() }
}

/// An in-process node with the admin plane off, peered with `peers`.
pub async fn peer_node(peers: Vec<std::net::SocketAddr>, tweak: impl FnOnce(&mut OverlayConfig)) -> Overlay {
    node(|c| {
        c.admin.enabled = false;
        c.peers = peers.into_iter().map(overlay_core::Peer::from).collect();
        tweak(c);
    })
    .await
}

/// A client that plays another node: it spoke `PEER_V1 | SWARM_V1` (and
/// `extra` caps), said who it is (`NODE` with `id`), and, with `join`, asked
/// to be taken into the node's active view, so the node pushes it messages.
pub async fn fake_peer(node: &Overlay, id: u8, extra: Caps, join: bool) -> overlay_core::client::Client {
    use oap_codec::{NodeAddr, NodeId, SwarmFrame};
    let caps = Caps::GOSSIP_V1 | Caps::PEER_V1 | Caps::SWARM_V1 | extra;
    let mut c =
        overlay_core::client::Client::connect(&overlay_core::client::ConnectOptions::new(node.local_addr()).caps(caps))
            .await
            .unwrap();
    let me = NodeAddr { id: NodeId([id; 32]), addr: "127.0.0.1:1".parse().unwrap() };
    c.send(&Frame::Swarm(SwarmFrame::Node(me))).await.unwrap();
    if join {
        c.send(&Frame::Swarm(SwarmFrame::Join)).await.unwrap();
    }
    c
}

/// Waits until `node` has `n` relay links up.
pub async fn wait_links(node: &Overlay, n: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while node.peers_connected() < n {
        assert!(tokio::time::Instant::now() < deadline, "only {} of {n} relay links came up", node.peers_connected());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The root key of [`secured`] nodes and [`token`]s.
pub const ROOT_KEY: &[u8] = b"overlay test root key";

/// A file holding [`ROOT_KEY`] with permissions `mode`.
pub fn root_key_file(mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("overlay-root-key-{}-{n}", std::process::id()));
    std::fs::write(&path, [ROOT_KEY, b"\n"].concat()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A node that requires tokens signed with [`ROOT_KEY`] (and `tweak`).
pub async fn secured(tweak: impl FnOnce(&mut OverlayConfig)) -> Overlay {
    let path = root_key_file(0o600);
    node(|c| {
        c.auth.required = true;
        c.auth.root_key_file = Some(path);
        tweak(c);
    })
    .await
}

/// Wall-clock Unix seconds, as a token's `expires` caveat counts them.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A token from [`ROOT_KEY`] granting `ops` on `topics` (each a caveat:
/// all must hold), until `expires`.
pub fn token(ops: &[overlay_core::auth::Op], topics: &[&str], expires: Option<u64>) -> String {
    let topics: Vec<_> = topics.iter().map(|t| t.parse().unwrap()).collect();
    overlay_core::auth::mint(ROOT_KEY, "test-client", ops, &topics, expires)
}
