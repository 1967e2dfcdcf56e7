//! Validation: every value against its range, once, into [`ValidConfig`],
//! which holds the typed values the node runs on; and `/configz`.

use std::collections::BTreeMap;
use std::ops::{Deref, RangeInclusive};
use std::time::Duration;

use ron_transport::tls::PqMode;
use serde::Serialize;

use super::OverlayConfig;

/// A value that breaks its documented range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A number outside its allowed range.
    #[error("{key} = {value} is out of range (allowed {range})")]
    OutOfRange {
        /// Dotted key, as in `overlay.toml`.
        key: &'static str,
        /// The value given.
        value: String,
        /// The allowed range, as text.
        range: String,
    },
    /// A value outside a fixed set.
    #[error("{key} = {value:?} is not one of {allowed}")]
    OneOf {
        /// Dotted key, as in `overlay.toml`.
        key: &'static str,
        /// The value given.
        value: String,
        /// The allowed values.
        allowed: &'static str,
    },
    /// A value that must be set (or must not be empty).
    #[error("{key} must be set and not empty")]
    Empty {
        /// Dotted key, as in `overlay.toml`.
        key: &'static str,
    },
    /// A value another setting makes necessary.
    #[error("{key} must be set: {because}")]
    Needed {
        /// Dotted key, as in `overlay.toml`.
        key: &'static str,
        /// What makes it necessary.
        because: &'static str,
    },
}

impl ConfigError {
    /// The offending key.
    pub fn key(&self) -> &'static str {
        match self {
            ConfigError::OutOfRange { key, .. }
            | ConfigError::Empty { key }
            | ConfigError::OneOf { key, .. }
            | ConfigError::Needed { key, .. } => key,
        }
    }
}

/// Where a config value came from, for `/configz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Built-in default.
    Default,
    /// `overlay.toml` or `--config FILE`.
    File,
    /// A `RON_OVERLAY_*` environment variable.
    Env,
    /// A command-line flag.
    Cli,
    /// Set in code by an embedding service.
    Code,
}

/// A config that passed [`OverlayConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidConfig {
    config: OverlayConfig,
    sources: BTreeMap<String, Source>,
    typed: Typed,
}

/// What validation parses and converts once: the rest of the node reads
/// these, never the raw strings and milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Typed {
    pq: PqMode,
    read_timeout: Duration,
    write_timeout: Duration,
    idle_timeout: Duration,
    handshake_timeout: Duration,
    publish_stall: Duration,
    drain_timeout: Duration,
    gossip: overlay_gossip::GossipConfig,
    swarm: overlay_swarm::Config,
    reorder_window: Duration,
    node_id: Option<oap_codec::NodeId>,
}

impl Typed {
    fn of(c: &OverlayConfig, pq: PqMode, node_id: Option<oap_codec::NodeId>) -> Typed {
        let ms = Duration::from_millis;
        let w = &c.swarm;
        Typed {
            node_id,
            reorder_window: ms(w.reorder_ms),
            swarm: overlay_swarm::Config {
                active_view: w.active_view as usize,
                passive_view: w.passive_view as usize,
                active_walk: w.active_walk,
                passive_walk: w.passive_walk,
                shuffle_period: ms(w.shuffle_ms),
                repair_period: ms(w.repair_ms),
                ihave_interval: ms(w.ihave_ms),
                graft_timeout: ms(w.graft_timeout_ms),
                graft_retry: ms(w.graft_retry_ms),
                cache_bytes: usize::try_from(w.cache_bytes).unwrap_or(usize::MAX),
                cache_ttl: ms(w.cache_ttl_ms),
                seen_cache: c.gossip.seen_cache as usize,
                seen_ttl: ms(c.gossip.seen_ttl_ms),
                max_hops: c.gossip.max_hops,
                ..overlay_swarm::Config::default()
            },
            pq,
            read_timeout: ms(c.transport.read_timeout_ms),
            write_timeout: ms(c.transport.write_timeout_ms),
            idle_timeout: ms(c.transport.idle_timeout_ms),
            handshake_timeout: ms(c.oap.handshake_timeout_ms),
            publish_stall: ms(c.session.publish_stall_ms),
            drain_timeout: ms(c.drain_timeout_ms),
            gossip: overlay_gossip::GossipConfig {
                delivery_queue_bytes: usize::try_from(c.session.delivery_queue_bytes).unwrap_or(usize::MAX),
                max_pending_bytes: usize::try_from(c.session.max_pending_bytes).unwrap_or(usize::MAX),
                slow_consumer_timeout: ms(c.session.slow_consumer_timeout_ms),
                max_subscriptions: c.session.max_subscriptions as usize,
                max_frame: c.oap.max_frame,
            },
        }
    }
}

fn check<T>(key: &'static str, value: T, range: RangeInclusive<T>) -> Result<(), ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            key,
            value: value.to_string(),
            range: format!("{}..={}", range.start(), range.end()),
        })
    }
}

impl OverlayConfig {
    /// Checks every value against its range; the first failure is returned.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        let c = &self;
        if c.transport.name.trim().is_empty() {
            return Err(ConfigError::Empty { key: "transport.name" });
        }
        check("transport.max_conns", c.transport.max_conns, 1..=1_000_000)?;
        check("transport.fd_reserve", c.transport.fd_reserve, 16..=1_000_000)?;
        check("transport.read_timeout_ms", c.transport.read_timeout_ms, 100..=300_000)?;
        check("transport.write_timeout_ms", c.transport.write_timeout_ms, 100..=300_000)?;
        check("transport.idle_timeout_ms", c.transport.idle_timeout_ms, 1000..=3_600_000)?;
        check("oap.max_frame", c.oap.max_frame, 1024..=oap_codec::MAX_FRAME)?;
        check("oap.handshake_timeout_ms", c.oap.handshake_timeout_ms, 100..=30_000)?;
        check("session.tx_queue", c.session.tx_queue, 2..=65_536)?;
        check("session.tx_watermark", c.session.tx_watermark, 1..=c.session.tx_queue - 1)?;
        // A delivery queue must hold at least one largest frame.
        let one_frame = u64::from(c.oap.max_frame) + oap_codec::HEADER_LEN as u64;
        check("session.delivery_queue_bytes", c.session.delivery_queue_bytes, (64 << 10).max(one_frame)..=256 << 20)?;
        check(
            "session.max_pending_bytes",
            c.session.max_pending_bytes,
            (1 << 20).max(c.session.delivery_queue_bytes)..=64 << 30,
        )?;
        check("session.publish_stall_ms", c.session.publish_stall_ms, 0..=1000)?;
        check("session.slow_consumer_timeout_ms", c.session.slow_consumer_timeout_ms, 100..=600_000)?;
        check("session.max_subscriptions", c.session.max_subscriptions, 1..=1_000_000)?;
        check("gossip.max_hops", c.gossip.max_hops, 1..=64)?;
        check("gossip.seen_cache", c.gossip.seen_cache, 1..=16_777_216)?;
        check("gossip.seen_ttl_ms", c.gossip.seen_ttl_ms, 1000..=3_600_000)?;
        let w = &c.swarm;
        check("swarm.active_view", w.active_view, 1..=64)?;
        check("swarm.passive_view", w.passive_view, 1..=1024)?;
        check("swarm.active_walk", w.active_walk, 1..=16)?;
        check("swarm.passive_walk", w.passive_walk, 0..=w.active_walk)?;
        check("swarm.shuffle_ms", w.shuffle_ms, 1000..=3_600_000)?;
        check("swarm.repair_ms", w.repair_ms, 100..=60_000)?;
        check("swarm.ihave_ms", w.ihave_ms, 1..=10_000)?;
        check("swarm.graft_timeout_ms", w.graft_timeout_ms, 10..=60_000)?;
        check("swarm.graft_retry_ms", w.graft_retry_ms, 10..=60_000)?;
        check("swarm.cache_bytes", w.cache_bytes, 0..=1 << 30)?;
        check("swarm.cache_ttl_ms", w.cache_ttl_ms, 1000..=3_600_000)?;
        check("swarm.reorder_ms", w.reorder_ms, 0..=60_000)?;
        if w.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(ConfigError::Empty { key: "swarm.token" });
        }
        // What a joining node tells the others must be an address they can
        // dial. (A node without seeds that listens on every interface is
        // completed by the nodes that dial it, with the address they see.)
        if let Some(addr) = w.advertise_addr
            && (addr.ip().is_unspecified() || addr.port() == 0)
        {
            return Err(ConfigError::OneOf {
                key: "swarm.advertise_addr",
                value: addr.to_string(),
                allowed: "an address other nodes can dial (not 0.0.0.0 or [::], not port 0)",
            });
        }
        if w.advertise_addr.is_none() && c.transport.addr.ip().is_unspecified() && !c.peers.is_empty() {
            return Err(ConfigError::Needed {
                key: "swarm.advertise_addr",
                because: "transport.addr listens on every interface and peers are set: say where other nodes reach this one",
            });
        }
        if c.tls.enabled && c.node.id.is_some() {
            return Err(ConfigError::OneOf {
                key: "node.id",
                value: c.node.id.clone().unwrap_or_default(),
                allowed: "unset while tls.enabled (the id is the SHA-256 of tls.cert's public key)",
            });
        }
        let node_id = match &c.node.id {
            None => None,
            Some(text) => Some(crate::swarm::parse_id(text).map_err(|allowed| ConfigError::OutOfRange {
                key: "node.id",
                value: text.clone(),
                range: allowed,
            })?),
        };
        check("readiness.sample_ms", c.readiness.sample_ms, 50..=60_000)?;
        check("readiness.shed_rate_max", c.readiness.shed_rate_max, 1..=100_000_000)?;
        check("readiness.min_peers", c.readiness.min_peers, 0..=10_000)?;
        if c.auth.required && c.auth.root_key_file.is_none() {
            return Err(ConfigError::Empty { key: "auth.root_key_file" });
        }
        let pq: PqMode = c.tls.pq.parse().map_err(|_| ConfigError::OneOf {
            key: "tls.pq",
            value: c.tls.pq.clone(),
            allowed: "prefer, require, off",
        })?;
        if c.tls.peer_name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(ConfigError::Empty { key: "tls.peer_name" });
        }
        if c.tls.enabled && c.tls.cert.is_none() {
            return Err(ConfigError::Empty { key: "tls.cert" });
        }
        if c.tls.enabled && c.tls.key.is_none() {
            return Err(ConfigError::Empty { key: "tls.key" });
        }
        // A TLS node dials its peers with TLS too, so it needs their trust.
        if c.tls.enabled && !c.peers.is_empty() && c.tls.ca.is_none() {
            return Err(ConfigError::Empty { key: "tls.ca" });
        }
        if pq == PqMode::Require && !c.tls.enabled {
            return Err(ConfigError::OneOf {
                key: "tls.pq",
                value: c.tls.pq.clone(),
                allowed: "prefer or off while tls.enabled is false",
            });
        }
        check("drain_timeout_ms", c.drain_timeout_ms, 100..=600_000)?;
        let typed = Typed::of(&self, pq, node_id);
        Ok(ValidConfig { config: self, sources: BTreeMap::new(), typed })
    }
}

impl ValidConfig {
    /// Records where each dotted key came from; keys not named are `default`.
    pub fn with_sources(mut self, sources: BTreeMap<String, Source>) -> ValidConfig {
        self.sources = sources;
        self
    }

    /// The plain config.
    pub fn config(&self) -> &OverlayConfig {
        &self.config
    }

    /// `transport.read_timeout_ms` as a duration.
    pub fn read_timeout(&self) -> Duration {
        self.typed.read_timeout
    }

    /// `transport.write_timeout_ms` as a duration.
    pub fn write_timeout(&self) -> Duration {
        self.typed.write_timeout
    }

    /// `transport.idle_timeout_ms` as a duration.
    pub fn idle_timeout(&self) -> Duration {
        self.typed.idle_timeout
    }

    /// `oap.handshake_timeout_ms` as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        self.typed.handshake_timeout
    }

    /// The gossip registry's bounds (`[session]` and `[gossip]` keys).
    pub(crate) fn gossip(&self) -> &overlay_gossip::GossipConfig {
        &self.typed.gossip
    }

    /// The swarm's knobs (`[swarm]` and `[gossip]` keys).
    pub(crate) fn swarm(&self) -> &overlay_swarm::Config {
        &self.typed.swarm
    }

    /// `swarm.reorder_ms` as a duration.
    pub(crate) fn reorder_window(&self) -> Duration {
        self.typed.reorder_window
    }

    /// `node.id`, parsed.
    pub(crate) fn node_id(&self) -> Option<oap_codec::NodeId> {
        self.typed.node_id
    }

    /// `tls.pq`.
    pub fn pq(&self) -> PqMode {
        self.typed.pq
    }

    /// `session.publish_stall_ms` as a duration.
    pub fn publish_stall(&self) -> Duration {
        self.typed.publish_stall
    }

    /// `drain_timeout_ms` as a duration.
    pub fn drain_timeout(&self) -> Duration {
        self.typed.drain_timeout
    }

    /// The effective config for `/configz`: every dotted key with its value
    /// and source; values of secret-looking keys are redacted.
    pub fn configz(&self) -> serde_json::Value {
        let mut flat = serde_json::Map::new();
        if let Ok(mut tree) = serde_json::to_value(&self.config) {
            redact(&mut tree);
            flatten("", &tree, &mut |key, value| {
                let source = self.sources.get(&key).copied().unwrap_or(Source::Default);
                flat.insert(key, serde_json::json!({ "value": value, "source": source }));
            });
        }
        serde_json::json!({ "config": flat })
    }
}

impl Deref for ValidConfig {
    type Target = OverlayConfig;
    fn deref(&self) -> &OverlayConfig {
        &self.config
    }
}

/// Every leaf of `value` with its dotted path; arrays are leaves.
pub fn flatten(prefix: &str, value: &serde_json::Value, out: &mut impl FnMut(String, &serde_json::Value)) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        leaf => out(prefix.to_string(), leaf),
    }
}

/// Replaces the value of every secret-looking key, at any depth (peers'
/// tokens sit inside an array).
fn redact(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if ["token", "secret", "password"].iter().any(|s| k.contains(s)) {
                    *v = serde_json::Value::from("<redacted>");
                } else {
                    redact(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::*;

    #[test]
    fn defaults_validate() {
        let valid = OverlayConfig::default().validate().unwrap();
        assert_eq!(valid.transport.addr.port(), 9500);
        assert_eq!(valid.session.tx_watermark, 96);
    }

    #[test]
    fn every_range_is_enforced_with_key_value_and_range() {
        type Edit = fn(&mut OverlayConfig);
        let cases: &[(&str, Edit)] = &[
            ("transport.max_conns", |c| c.transport.max_conns = 0),
            ("transport.max_conns", |c| c.transport.max_conns = 1_000_001),
            ("transport.fd_reserve", |c| c.transport.fd_reserve = 15),
            ("transport.fd_reserve", |c| c.transport.fd_reserve = 1_000_001),
            ("transport.read_timeout_ms", |c| c.transport.read_timeout_ms = 99),
            ("transport.read_timeout_ms", |c| c.transport.read_timeout_ms = 300_001),
            ("transport.write_timeout_ms", |c| c.transport.write_timeout_ms = 99),
            ("transport.write_timeout_ms", |c| c.transport.write_timeout_ms = 300_001),
            ("transport.idle_timeout_ms", |c| c.transport.idle_timeout_ms = 999),
            ("transport.idle_timeout_ms", |c| c.transport.idle_timeout_ms = 3_600_001),
            ("oap.max_frame", |c| c.oap.max_frame = 1023),
            ("oap.max_frame", |c| c.oap.max_frame = 1_048_577),
            ("oap.handshake_timeout_ms", |c| c.oap.handshake_timeout_ms = 99),
            ("oap.handshake_timeout_ms", |c| c.oap.handshake_timeout_ms = 30_001),
            ("session.tx_queue", |c| c.session.tx_queue = 1),
            ("session.tx_queue", |c| c.session.tx_queue = 65_537),
            ("session.tx_watermark", |c| c.session.tx_watermark = 0),
            ("session.tx_watermark", |c| c.session.tx_watermark = 128),
            ("session.delivery_queue_bytes", |c| c.session.delivery_queue_bytes = 64 << 10),
            ("session.delivery_queue_bytes", |c| c.session.delivery_queue_bytes = (256 << 20) + 1),
            ("session.max_pending_bytes", |c| c.session.max_pending_bytes = (8 << 20) - 1),
            ("session.max_pending_bytes", |c| c.session.max_pending_bytes = (64 << 30) + 1),
            ("session.publish_stall_ms", |c| c.session.publish_stall_ms = 1001),
            ("session.slow_consumer_timeout_ms", |c| c.session.slow_consumer_timeout_ms = 99),
            ("session.max_subscriptions", |c| c.session.max_subscriptions = 0),
            ("gossip.max_hops", |c| c.gossip.max_hops = 0),
            ("gossip.max_hops", |c| c.gossip.max_hops = 65),
            ("gossip.seen_cache", |c| c.gossip.seen_cache = 0),
            ("gossip.seen_ttl_ms", |c| c.gossip.seen_ttl_ms = 999),
            ("auth.root_key_file", |c| c.auth.required = true),
            ("tls.pq", |c| c.tls.pq = "maybe".into()),
            ("tls.cert", |c| c.tls.enabled = true),
            ("tls.pq", |c| c.tls.pq = "require".into()),
            ("tls.ca", |c| {
                c.tls.enabled = true;
                c.tls.cert = Some("c.pem".into());
                c.tls.key = Some("k.pem".into());
                c.peers = vec![Peer::Addr("127.0.0.1:1".parse().unwrap())];
            }),
            ("swarm.active_view", |c| c.swarm.active_view = 0),
            ("swarm.active_view", |c| c.swarm.active_view = 65),
            ("swarm.passive_view", |c| c.swarm.passive_view = 0),
            ("swarm.active_walk", |c| c.swarm.active_walk = 0),
            ("swarm.passive_walk", |c| c.swarm.passive_walk = 9),
            ("swarm.shuffle_ms", |c| c.swarm.shuffle_ms = 999),
            ("swarm.repair_ms", |c| c.swarm.repair_ms = 99),
            ("swarm.ihave_ms", |c| c.swarm.ihave_ms = 0),
            ("swarm.graft_timeout_ms", |c| c.swarm.graft_timeout_ms = 9),
            ("swarm.graft_retry_ms", |c| c.swarm.graft_retry_ms = 60_001),
            ("swarm.cache_bytes", |c| c.swarm.cache_bytes = (1 << 30) + 1),
            ("swarm.cache_ttl_ms", |c| c.swarm.cache_ttl_ms = 999),
            ("swarm.reorder_ms", |c| c.swarm.reorder_ms = 60_001),
            ("swarm.token", |c| c.swarm.token = Some(" ".into())),
            ("tls.peer_name", |c| c.tls.peer_name = Some(String::new())),
            ("swarm.advertise_addr", |c| c.swarm.advertise_addr = Some("0.0.0.0:9500".parse().unwrap())),
            ("swarm.advertise_addr", |c| c.swarm.advertise_addr = Some("10.0.0.1:0".parse().unwrap())),
            ("swarm.advertise_addr", |c| {
                c.transport.addr = "0.0.0.0:9500".parse().unwrap();
                c.peers = vec![Peer::Addr("10.0.0.2:9500".parse().unwrap())];
            }),
            ("node.id", |c| c.node.id = Some("abc".into())),
            ("readiness.sample_ms", |c| c.readiness.sample_ms = 49),
            ("readiness.shed_rate_max", |c| c.readiness.shed_rate_max = 0),
            ("readiness.min_peers", |c| c.readiness.min_peers = 10_001),
            ("drain_timeout_ms", |c| c.drain_timeout_ms = 99),
            ("drain_timeout_ms", |c| c.drain_timeout_ms = 600_001),
            ("transport.name", |c| c.transport.name = " ".into()),
        ];
        for (key, edit) in cases {
            let mut cfg = OverlayConfig::default();
            edit(&mut cfg);
            let err = cfg.validate().unwrap_err();
            assert_eq!(err.key(), *key, "{err}");
        }
        let mut cfg = OverlayConfig::default();
        cfg.transport.max_conns = 0;
        assert_eq!(
            cfg.validate().unwrap_err().to_string(),
            "transport.max_conns = 0 is out of range (allowed 1..=1000000)"
        );
    }

    #[test]
    fn configz_redacts_peer_tokens() {
        let cfg = OverlayConfig {
            peers: vec![
                Peer::Addr("127.0.0.1:1".parse().unwrap()),
                Peer::Detailed { addr: "127.0.0.1:2".parse().unwrap(), token: Some("s3cret".into()), name: None },
            ],
            ..OverlayConfig::default()
        };
        let z = cfg.validate().unwrap().configz().to_string();
        assert!(!z.contains("s3cret"), "{z}");
        assert!(z.contains("<redacted>") && z.contains("127.0.0.1:2"));
    }

    #[test]
    fn configz_lists_every_key_with_its_source() {
        let sources = BTreeMap::from([("transport.max_conns".to_string(), Source::Env)]);
        let z = OverlayConfig::default().validate().unwrap().with_sources(sources).configz();
        assert_eq!(z["config"]["transport.max_conns"]["source"], "env");
        assert_eq!(
            z["config"]["transport.addr"],
            serde_json::json!({ "value": "127.0.0.1:9500", "source": "default" })
        );
        assert_eq!(z["config"]["drain_timeout_ms"]["value"], 5000);
    }
}
