//! The bodies of the fuzz targets, one function each, with the invariants
//! they check. `cargo +nightly fuzz run <target>` drives them with libFuzzer
//! (`fuzz_targets/`); `cargo test` replays every committed corpus file
//! through them on stable (`tests/corpus.rs`), so a crash once found stays a
//! regression test. Each function panics exactly when an invariant breaks.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use figment::Figment;
use figment::providers::Serialized;
use oap_codec::{Caps, Frame, HELLO_LEN, Hello, MAX_FRAME, OapCodec, Pattern, Topic};
use overlay_core::auth::{Grant, Macaroon};
use overlay_core::{Overlay, OverlayConfig};
use svc_overlay::cli::ServeArgs;
use svc_overlay::config::{DEFAULT_FILE, ENV_PREFIX, load};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;

/// The root key the `macaroon` and `session` targets verify tokens against.
pub const ROOT_KEY: &[u8] = b"overlay fuzz root key";

/// Everything a decoder made of a byte stream: frames, and each error's
/// code and reason, up to the first fatal error (where a node closes).
type Outcome = Vec<Result<Frame, (u16, &'static str)>>;

/// The frame decoder under arbitrary bytes and arbitrary chunking (the first
/// byte seeds the chunk sizes): never a panic; the same frames and errors
/// whether the bytes come at once or in pieces; every frame re-encodes to
/// its `encoded_len` and decodes back to itself; the buffer never grows past
/// one largest frame plus a read.
pub fn frame(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else { return };
    let whole = decode_all(stream, stream.len().max(1));
    let chunked = decode_all(stream, usize::from(seed % 64) + 1);
    assert_eq!(whole, chunked, "chunking changed what was decoded");
    for f in whole.iter().flatten() {
        let mut out = BytesMut::new();
        f.encode_into(&mut out);
        assert_eq!(out.len(), f.encoded_len(), "encoded_len of {f:?}");
        let again = OapCodec::new().decode(&mut out).expect("a re-encoded frame decodes").expect("whole");
        assert_eq!(&again, f, "round trip");
    }
}

fn decode_all(stream: &[u8], chunk: usize) -> Outcome {
    let mut codec = OapCodec::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => break,
                Err(e) => {
                    let fatal = e.is_fatal();
                    out.push(Err((e.error_code() as u16, e.reason())));
                    if fatal {
                        return out;
                    }
                }
            }
            // The decoder reserves for a started frame, never more than one.
            assert!(buf.capacity() <= MAX_FRAME as usize + 4 + 2 * chunk.max(4096), "buffer {}", buf.capacity());
        }
    }
    out
}

/// Hello decode and negotiation: never a panic; negotiated caps are
/// always a subset of both sides'; a hello that decodes encodes back.
pub fn hello(data: &[u8]) {
    let Some((ours, rest)) = data.split_first_chunk::<4>() else { return };
    let Some(theirs) = rest.first_chunk::<HELLO_LEN>() else { return };
    let Ok(hello) = Hello::decode(theirs) else { return };
    let ours = Caps::from_bits(u32::from_be_bytes(*ours));
    if let Ok(n) = Hello::negotiate(ours, &hello) {
        assert!(ours.contains(n.caps) && hello.caps.contains(n.caps), "{n:?} from {ours:?} and {hello:?}");
    }
    let again = Hello::decode(&hello.encode()).expect("an encoded hello decodes");
    assert_eq!(again.caps, hello.caps);
}

/// Topic and pattern parsing and matching against a plain reference: the
/// bytes before the first 0xff are a pattern, the rest a topic. Never a
/// panic; `matches` agrees with the reference; a pattern that covers another
/// matches every topic the other matches.
pub fn topic(data: &[u8]) {
    let (p, t) = match data.iter().position(|&b| b == 0xff) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    let (Ok(pattern), Ok(topic)) = (Pattern::new(p.to_vec()), Topic::new(t.to_vec())) else { return };
    let tokens = |b: &[u8]| b.split(|&c| c == b'.').map(<[u8]>::to_vec).collect::<Vec<_>>();
    assert_eq!(pattern.matches(&topic), reference_match(&tokens(p), &tokens(t)), "{pattern} vs {topic}");
    if let Ok(as_pattern) = Pattern::new(t.to_vec())
        && pattern.covers(&as_pattern)
    {
        assert!(pattern.matches(&topic), "{pattern} covers {as_pattern} but does not match it");
    }
}

/// NATS subject matching, written for clarity, not speed.
fn reference_match(pattern: &[Vec<u8>], topic: &[Vec<u8>]) -> bool {
    match (pattern.split_first(), topic.split_first()) {
        (Some((p, _)), Some(_)) if p.as_slice() == b">" => pattern.len() == 1,
        (Some((p, prest)), Some((t, trest))) => (p.as_slice() == b"*" || p == t) && reference_match(prest, trest),
        (None, None) => true,
        _ => false,
    }
}

/// Macaroon deserialization and verification: never a panic; a token that
/// deserializes serializes back to one that deserializes to the same
/// macaroon; a grant comes only from a token whose signature verifies.
pub fn macaroon(data: &[u8]) {
    if let Ok(m) = Macaroon::deserialize(data) {
        let again = Macaroon::deserialize(m.serialize().as_bytes()).expect("a serialized macaroon deserializes");
        assert_eq!(again, m);
        let verified = m.verify(ROOT_KEY).is_ok();
        if Grant::verify(data, ROOT_KEY, unix_now()).is_ok() {
            assert!(verified, "a grant from a token that does not verify");
        }
    } else {
        assert!(Grant::verify(data, ROOT_KEY, unix_now()).is_err());
    }
}

/// Environment variables and `--set` flags one `config` input may give.
const MAX_CONFIG_LAYERS: usize = 16;

/// The binary's config layering (`svc_overlay::config::load`) under
/// arbitrary input: the text up to a first NUL is the config file, each
/// `NAME=VALUE` line up to a second NUL the variable `RON_OVERLAY_<NAME>`
/// (the process environment cleared), each line after it a `--set` flag.
/// Never a panic; a config that loads renders `/configz` with every key and
/// survives a serde round trip unchanged; one that does not is refused with
/// a one-line error (what the binary prints before it exits 2).
#[expect(clippy::result_large_err, reason = "figment's Jail fixes its closure's error type")]
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '\0');
    let file = parts.next().unwrap_or_default();
    let env: Vec<(String, &str)> = (parts.next().unwrap_or_default().lines())
        .filter_map(|line| line.split_once('='))
        .take(MAX_CONFIG_LAYERS)
        .map(|(name, value)| (format!("{ENV_PREFIX}{name}"), value))
        .collect();
    let set = parts.next().unwrap_or_default().lines().take(MAX_CONFIG_LAYERS).map(str::to_string).collect();
    // The jail restores the working directory and the environment after.
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        for (name, value) in &env {
            jail.set_env(name, value);
        }
        jail.create_file(DEFAULT_FILE, file)?;
        let args = ServeArgs { config: Some(DEFAULT_FILE.into()), set, ..ServeArgs::default() };
        match load(&args) {
            Ok(valid) => {
                assert!(valid.configz()["config"]["transport.max_conns"].is_object());
                let config: &OverlayConfig = &valid;
                let back: OverlayConfig = Figment::from(Serialized::defaults(config))
                    .extract()
                    .expect("a config extracts from its own values");
                assert_eq!(&back, config);
            }
            Err(e) => {
                let message = e.to_string();
                assert!(!message.is_empty() && !message.contains('\n'), "not a one-line error: {message:?}");
            }
        }
        Ok(())
    });
}

/// One session fed a byte stream in memory: a valid hello (`PEER_V1` when
/// the first byte's bit 0 is set, `SWARM_V1` when bit 1 is), then the
/// fuzzer's bytes, then end of stream. Never a panic; the node's bytes
/// always decode as well-formed frames; and it answers only what was asked:
/// no more replies (echo, PONG, ACK, ERROR) than the requests its decoder
/// saw (plus the one `ERROR 415` refusing a relay link without the swarm),
/// and a GOAWAY at most once, last.
/// Allocations above `max_frame` plus a constant are caught by libFuzzer's
/// `-malloc_limit_mb` (see `cargo xtask fuzz`).
pub fn session(data: &[u8]) {
    let Some((&flags, stream)) = data.split_first() else { return };
    let (rt, node) = session_node();
    let mut caps = Caps::GOSSIP_V1 | Caps::PUBSUB_V1 | Caps::AUTH_V1;
    if flags & 1 == 1 {
        caps = caps | Caps::PEER_V1;
    }
    if flags & 2 == 2 {
        caps = caps | Caps::SWARM_V1;
    }
    let refused = caps.contains(Caps::PEER_V1) && !caps.contains(Caps::SWARM_V1);
    let replies = rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 << 10);
        let peer: SocketAddr = ([127, 0, 0, 1], 1).into();
        let session = tokio::spawn({
            let node = node.clone();
            async move { node.serve(server, peer).await }
        });
        let (mut rd, mut wr) = tokio::io::split(&mut client);
        let send = async {
            let _ = wr.write_all(&Hello::new(caps).encode()).await;
            let _ = wr.write_all(stream).await;
            let _ = wr.shutdown().await;
        };
        let mut received = Vec::new();
        let receive = rd.read_to_end(&mut received);
        let done = tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(send, receive) }).await;
        assert!(done.is_ok(), "the session did not end after its input did");
        assert!(session.await.is_ok(), "the session task panicked");
        received
    });
    check_replies(stream, &replies, usize::from(refused));
}

/// `unasked`: replies the node sends of its own accord.
fn check_replies(stream: &[u8], replies: &[u8], unasked: usize) {
    let hello = replies.first_chunk::<HELLO_LEN>().expect("the node's hello");
    Hello::decode(hello).expect("the node's hello decodes");
    let mut buf = BytesMut::from(&replies[HELLO_LEN..]);
    let mut codec = OapCodec::new();
    let (mut answers, mut goaways) = (0, 0);
    while let Some(f) = codec.decode(&mut buf).unwrap_or_else(|e| panic!("the node sent a bad frame: {e}")) {
        assert_eq!(goaways, 0, "nothing after a GOAWAY");
        match f {
            Frame::Data(_) | Frame::Ack(_) | Frame::Error(_) | Frame::Ctrl(oap_codec::Ctrl::Pong { .. }) => {
                answers += 1
            }
            Frame::Ctrl(oap_codec::Ctrl::Goaway { .. }) => goaways += 1,
            // Deliveries (the session's own publishes) and keepalives.
            _ => {}
        }
    }
    assert!(buf.is_empty(), "a truncated frame from the node");
    let asked = decode_all(stream, stream.len().max(1)).len();
    assert!(answers <= asked + unasked, "{answers} replies to {asked} requests");
}

/// The node the `session` target talks to (one per process): no admin
/// plane, tokens checked when presented but not required.
fn session_node() -> &'static (tokio::runtime::Runtime, Overlay) {
    static NODE: OnceLock<(tokio::runtime::Runtime, Overlay)> = OnceLock::new();
    NODE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let key = std::env::temp_dir().join(format!("overlay-fuzz-root-key-{}", std::process::id()));
        std::fs::write(&key, ROOT_KEY).expect("write the root key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod the root key");
        }
        let mut config = OverlayConfig::default();
        config.transport.addr = "127.0.0.1:0".parse().expect("an address");
        config.admin.enabled = false;
        config.auth.root_key_file = Some(key);
        // Small enough that no allocation at start-up passes the fuzzer's
        // per-allocation cap (max_frame plus a constant).
        config.gossip.seen_cache = 1024;
        let node = rt
            .block_on(Overlay::builder(config).install_metrics_recorder(false).start())
            .expect("the fuzz node starts");
        (rt, node)
    })
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
