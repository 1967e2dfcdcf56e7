//! Node configuration: plain serde data with the defaults of ARCHITECTURE.md,
//! validated once into [`ValidConfig`], which the rest of the code trusts.

mod valid;

use std::net::SocketAddr;
use std::time::Duration;

use ron_transport::tls::PqMode;
use serde::{Deserialize, Serialize};
pub use valid::{ConfigError, Source, ValidConfig, flatten};

/// Every node setting. Unknown keys are refused when deserializing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverlayConfig {
    /// The data-plane listener.
    pub transport: TransportSection,
    /// OAP/1 framing and handshake.
    pub oap: OapSection,
    /// Per-session queues.
    pub session: SessionSection,
    /// Relay flooding and dedup.
    pub gossip: GossipSection,
    /// This node's identity.
    pub node: NodeSection,
    /// Seeds: nodes to join the overlay through (one reachable is enough).
    pub peers: Vec<Peer>,
    /// The overlay's membership and broadcast.
    pub swarm: SwarmSection,
    /// Capability tokens.
    pub auth: AuthSection,
    /// TLS 1.3 on the data plane and relay links.
    pub tls: TlsSection,
    /// The readiness sampler.
    pub readiness: ReadinessSection,
    /// The admin HTTP plane.
    pub admin: AdminSection,
    /// Time shutdown gives sessions to take their `GOAWAY` and flush.
    pub drain_timeout_ms: u64,
}

/// `[transport]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportSection {
    /// Data-plane listen address.
    pub addr: SocketAddr,
    /// The `service` label on every metric.
    pub name: String,
    /// Sessions served at once; one more is closed at accept. The node
    /// serves fewer when `RLIMIT_NOFILE - fd_reserve` is lower.
    pub max_conns: u32,
    /// Descriptors sessions never take: kept for the admin plane, relay
    /// dials, TLS files and `/proc` reads, so the probes answer when full.
    pub fd_reserve: u32,
    /// Time a started frame has to finish arriving.
    pub read_timeout_ms: u64,
    /// Time a write may take before the session is closed.
    pub write_timeout_ms: u64,
    /// Silence after which the node PINGs (at half) and closes (at full).
    pub idle_timeout_ms: u64,
}

/// `[oap]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OapSection {
    /// Largest frame `len` accepted or sent.
    pub max_frame: u32,
    /// Time the peer has to deliver its 9-byte hello.
    pub handshake_timeout_ms: u64,
}

/// `[session]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSection {
    /// Replies (echo, PONG, ACK, ERROR) queued per session; never dropped.
    pub tx_queue: u32,
    /// Queued replies at which the node stops reading the session until the
    /// queue drains below half of this.
    pub tx_watermark: u32,
    /// Bytes of `MSG`/`LAGGED` queued per subscriber (or relay link) before
    /// deliveries to it are dropped.
    pub delivery_queue_bytes: u64,
    /// Bytes queued across every delivery queue before deliveries are dropped.
    pub max_pending_bytes: u64,
    /// Longest a publisher is stalled per `PUB` for subscribers more than
    /// half full to catch up.
    pub publish_stall_ms: u64,
    /// A subscriber lagging (dropping) for this long gets `GOAWAY 429`.
    pub slow_consumer_timeout_ms: u64,
    /// Patterns one session (or in-process subscription) may hold.
    pub max_subscriptions: u32,
}

/// `[gossip]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipSection {
    /// Relay hops after which a message is no longer pushed (a loop guard:
    /// it is still announced, so nothing behind it misses it).
    pub max_hops: u8,
    /// Message ids remembered for relay dedup.
    pub seen_cache: u32,
    /// How long a message id is remembered.
    pub seen_ttl_ms: u64,
}

/// `[node]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// The node's id in the swarm, 64 hex digits (32 bytes); random at
    /// each start when unset.
    pub id: Option<String>,
}

/// `[swarm]`: HyParView membership and PlumTree broadcast (see
/// docs/CONFIG.md for what each knob trades).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwarmSection {
    /// Where other nodes reach this one, as it tells them (default: the
    /// listen address; one on every interface is completed by each peer
    /// with the address it sees).
    pub advertise_addr: Option<SocketAddr>,
    /// The `op = relay` token presented when dialing a node learned from
    /// the swarm (a seed's own `token` goes to that seed).
    pub token: Option<String>,
    /// Peers linked and carrying the broadcast.
    pub active_view: u32,
    /// Known addresses kept to replace lost active peers.
    pub passive_view: u32,
    /// Steps a join's random walk takes.
    pub active_walk: u8,
    /// The walk step at which a joining node is kept as a passive peer.
    pub passive_walk: u8,
    /// Time between two shuffles of the passive view.
    pub shuffle_ms: u64,
    /// Time between two repairs of the active view.
    pub repair_ms: u64,
    /// Time between two batches of `IHAVE` announcements.
    pub ihave_ms: u64,
    /// Time an announced message is waited for before it is asked for.
    pub graft_timeout_ms: u64,
    /// Time each further announcer is waited for.
    pub graft_retry_ms: u64,
    /// Payload bytes kept to answer `GRAFT`s.
    pub cache_bytes: u64,
    /// How long a message that arrived ahead of an earlier one from the
    /// same origin is held for it (0: delivered as they come).
    pub reorder_ms: u64,
    /// How long a payload is kept to answer `GRAFT`s.
    pub cache_ttl_ms: u64,
    /// Route by interest: tell peers which patterns this node's
    /// subscribers hold, and send payloads only toward subscribers
    /// (OAP-1 section 5.2). A subscription then reaches other nodes'
    /// publishers within the link delays after its `ACK`.
    pub interest: bool,
}

impl Default for SwarmSection {
    fn default() -> SwarmSection {
        let c = overlay_swarm::Config::default();
        SwarmSection {
            advertise_addr: None,
            token: None,
            active_view: c.active_view as u32,
            passive_view: c.passive_view as u32,
            active_walk: c.active_walk,
            passive_walk: c.passive_walk,
            shuffle_ms: millis(c.shuffle_period),
            repair_ms: millis(c.repair_period),
            ihave_ms: millis(c.ihave_interval),
            graft_timeout_ms: millis(c.graft_timeout),
            graft_retry_ms: millis(c.graft_retry),
            cache_bytes: c.cache_bytes as u64,
            cache_ttl_ms: millis(c.cache_ttl),
            reorder_ms: 1000,
            interest: false,
        }
    }
}

/// Where a seed is: an address, or `dns:NAME:PORT`, a name every address
/// of which (A and AAAA records) is a seed, resolved at start and again
/// each time the node rejoins (a Kubernetes headless Service's name).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum PeerAddr {
    /// An IP address and port.
    Ip(SocketAddr),
    /// A DNS name and the port its addresses listen on.
    Dns {
        /// The name.
        name: String,
        /// The port.
        port: u16,
    },
}

impl std::str::FromStr for PeerAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<PeerAddr, String> {
        let Some(rest) = s.strip_prefix("dns:") else {
            return s.parse().map(PeerAddr::Ip).map_err(|_| format!("{s:?} is not IP:PORT or dns:NAME:PORT"));
        };
        let (name, port) = rest.rsplit_once(':').ok_or_else(|| format!("{s:?}: dns:NAME:PORT needs a port"))?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| format!("{s:?}: port 1..=65535"))?;
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!("{s:?}: {name:?} is not a DNS name"));
        }
        Ok(PeerAddr::Dns { name: name.to_ascii_lowercase(), port })
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerAddr::Ip(addr) => addr.fmt(f),
            PeerAddr::Dns { name, port } => write!(f, "dns:{name}:{port}"),
        }
    }
}

impl std::fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Serialize for PeerAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PeerAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PeerAddr, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> PeerAddr {
        PeerAddr::Ip(addr)
    }
}

/// A seed: `"host:port"` or `"dns:NAME:PORT"`, or `{ addr = ..., token =
/// "...", name = "..." }` with the `op = relay` token that node requires and
/// the name its TLS certificate must carry (default: the DNS name, or the
/// address's IP).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Peer {
    /// A peer that needs no token.
    Addr(PeerAddr),
    /// A peer with a token and/or a TLS name.
    Detailed {
        /// Its data-plane address.
        addr: PeerAddr,
        /// An `op = relay` token minted with that node's root key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// The name checked against its certificate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
}

impl<'de> Deserialize<'de> for Peer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Peer, D::Error> {
        d.deserialize_any(PeerVisitor)
    }
}

/// Reads a [`Peer`] from either form, naming what is wrong (a bad address,
/// an unknown key) rather than "no variant matched".
struct PeerVisitor;

impl<'de> serde::de::Visitor<'de> for PeerVisitor {
    type Value = Peer;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a seed: \"IP:PORT\", \"dns:NAME:PORT\", or { addr, token, name }")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Peer, E> {
        v.parse().map(Peer::Addr).map_err(E::custom)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Peer, A::Error> {
        use serde::de::Error as _;
        let (mut addr, mut token, mut name) = (None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "addr" => addr = Some(map.next_value::<String>()?.parse().map_err(A::Error::custom)?),
                "token" => token = Some(map.next_value()?),
                "name" => name = Some(map.next_value()?),
                other => return Err(A::Error::unknown_field(other, &["addr", "token", "name"])),
            }
        }
        let addr = addr.ok_or_else(|| A::Error::missing_field("addr"))?;
        Ok(Peer::Detailed { addr, token, name })
    }
}

impl Peer {
    /// The peer's address.
    pub fn addr(&self) -> &PeerAddr {
        match self {
            Peer::Addr(addr) | Peer::Detailed { addr, .. } => addr,
        }
    }

    /// The token to present, if any.
    pub fn token(&self) -> Option<&str> {
        match self {
            Peer::Addr(_) => None,
            Peer::Detailed { token, .. } => token.as_deref(),
        }
    }

    /// The name its TLS certificate must carry.
    pub fn tls_name(&self) -> String {
        match (self, self.addr()) {
            (Peer::Detailed { name: Some(name), .. }, _) => name.clone(),
            (_, PeerAddr::Dns { name, .. }) => name.clone(),
            (_, PeerAddr::Ip(addr)) => addr.ip().to_string(),
        }
    }

    /// This seed at one address its name resolved to: the same token, and
    /// the same TLS name.
    pub fn at(&self, addr: SocketAddr) -> Peer {
        let name = Some(self.tls_name());
        Peer::Detailed { addr: PeerAddr::Ip(addr), token: self.token().map(str::to_owned), name }
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = self.token().map(|_| "<redacted>");
        f.debug_struct("Peer")
            .field("addr", self.addr())
            .field("token", &token)
            .field("name", &self.tls_name())
            .finish()
    }
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Peer {
        Peer::Addr(PeerAddr::Ip(addr))
    }
}

/// `[readiness]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadinessSection {
    /// How often the load gates are re-checked.
    pub sample_ms: u64,
    /// Rejected connections plus dropped deliveries per second above which
    /// `shed_rate_ok` goes missing.
    pub shed_rate_max: u64,
    /// Relay links below which `peers_ok` goes missing (0: no such gate).
    pub min_peers: u32,
}

impl Default for ReadinessSection {
    fn default() -> ReadinessSection {
        ReadinessSection { sample_ms: 500, shed_rate_max: 1000, min_peers: 0 }
    }
}

/// `[tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// Serve TLS 1.3 instead of plain TCP.
    pub enabled: bool,
    /// PEM certificate chain (required when enabled).
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key (required when enabled).
    pub key: Option<std::path::PathBuf>,
    /// PEM certificates trusted when dialing relay peers; with it, relay
    /// links dial with TLS and check the peer's name.
    pub ca: Option<std::path::PathBuf>,
    /// Post-quantum posture: `prefer`, `require` or `off`.
    pub pq: String,
    /// The name checked on the certificate of a node learned from the swarm
    /// (not a seed); unset: its IP.
    pub peer_name: Option<String>,
}

impl Default for TlsSection {
    fn default() -> TlsSection {
        TlsSection {
            enabled: false,
            cert: None,
            key: None,
            ca: None,
            pq: PqMode::default().to_string(),
            peer_name: None,
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Every `SUB`, `UNSUB`, `PUB` and relay `MSG` needs a granting token.
    pub required: bool,
    /// File holding the root key tokens are verified against (not
    /// world-readable). With it the node offers `AUTH_V1`.
    pub root_key_file: Option<std::path::PathBuf>,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// Admin HTTP listen address.
    pub addr: SocketAddr,
    /// Serve the admin plane (an embedding service may have its own).
    pub enabled: bool,
}

/// `transport.addr` by default, where clients look for a node.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9500);
/// `admin.addr` by default.
pub const DEFAULT_ADMIN_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9600);

impl Default for OverlayConfig {
    fn default() -> OverlayConfig {
        OverlayConfig {
            transport: TransportSection::default(),
            oap: OapSection::default(),
            session: SessionSection::default(),
            gossip: GossipSection::default(),
            node: NodeSection::default(),
            peers: Vec::new(),
            swarm: SwarmSection::default(),
            auth: AuthSection::default(),
            tls: TlsSection::default(),
            readiness: ReadinessSection::default(),
            admin: AdminSection::default(),
            drain_timeout_ms: 5000,
        }
    }
}

impl Default for TransportSection {
    fn default() -> TransportSection {
        TransportSection {
            addr: DEFAULT_ADDR,
            name: "overlay".into(),
            max_conns: ron_transport::DEFAULT_MAX_CONNS as u32,
            fd_reserve: ron_transport::DEFAULT_FD_RESERVE as u32,
            read_timeout_ms: 5000,
            write_timeout_ms: 5000,
            idle_timeout_ms: 30_000,
        }
    }
}

impl Default for OapSection {
    fn default() -> OapSection {
        OapSection {
            max_frame: oap_codec::MAX_FRAME,
            handshake_timeout_ms: millis(ron_transport::DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }
}

impl Default for SessionSection {
    fn default() -> SessionSection {
        // The registry's bounds have one source: overlay-gossip's defaults.
        let gossip = overlay_gossip::GossipConfig::default();
        SessionSection {
            tx_queue: 128,
            tx_watermark: 96,
            delivery_queue_bytes: gossip.delivery_queue_bytes as u64,
            max_pending_bytes: gossip.max_pending_bytes as u64,
            publish_stall_ms: 5,
            slow_consumer_timeout_ms: millis(gossip.slow_consumer_timeout),
            max_subscriptions: gossip.max_subscriptions as u32,
        }
    }
}

impl Default for GossipSection {
    fn default() -> GossipSection {
        // The swarm's defaults: it is what relays, dedups and bounds hops.
        let swarm = overlay_swarm::Config::default();
        GossipSection {
            max_hops: swarm.max_hops,
            seen_cache: swarm.seen_cache as u32,
            seen_ttl_ms: millis(swarm.seen_ttl),
        }
    }
}

/// A default duration as the `_ms` value that configures it.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for AdminSection {
    fn default() -> AdminSection {
        AdminSection { addr: DEFAULT_ADMIN_ADDR, enabled: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_is_an_address_or_a_dns_name_with_a_port() {
        let parse = |s: &str| s.parse::<PeerAddr>();
        assert_eq!(parse("10.0.0.1:9500"), Ok(PeerAddr::Ip("10.0.0.1:9500".parse().unwrap())));
        let svc = PeerAddr::Dns { name: "svc-overlay.overlay.svc.cluster.local".into(), port: 9500 };
        assert_eq!(parse("dns:svc-overlay.overlay.svc.cluster.local:9500"), Ok(svc.clone()));
        assert_eq!(parse("dns:SVC-Overlay.overlay.svc.cluster.local.:9500"), Ok(svc.clone()), "case, root dot");
        assert_eq!(svc.to_string(), "dns:svc-overlay.overlay.svc.cluster.local:9500");
        for bad in ["dns:svc", "dns:svc:0", "dns:svc:70000", "dns::9500", "dns:bad_name:9500", "dns:-a.b:1", "svc:9500"]
        {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn peers_take_dns_seeds_in_both_forms() {
        #[derive(Deserialize)]
        struct Peers {
            peers: Vec<Peer>,
        }
        let json =
            r#"{"peers": ["dns:seeds.local:9500", {"addr": "dns:other.local:9501", "token": "t"}, "10.0.0.1:1"]}"#;
        let Peers { peers } = serde_json::from_str(json).unwrap();
        assert_eq!(peers[0].tls_name(), "seeds.local");
        assert_eq!(peers[1].token(), Some("t"));
        let at = peers[1].at("10.1.2.3:9501".parse().unwrap());
        assert_eq!(
            (at.addr().to_string(), at.token(), at.tls_name()),
            ("10.1.2.3:9501".into(), Some("t"), "other.local".into())
        );
        assert_eq!(peers[2].tls_name(), "10.0.0.1");
        assert!(serde_json::from_str::<Peers>(r#"{"peers": ["dns:bad_name:1"]}"#).is_err());
    }
}
