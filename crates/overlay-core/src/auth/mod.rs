//! Capability tokens (OAP-1 section 6): macaroons whose first-party caveats
//! `op`, `topic` and `expires` become a [`Grant`]; anything else, and every
//! third-party caveat, makes the token invalid (fail closed).

mod macaroon;

use std::fmt;
use std::path::{Path, PathBuf};

use oap_codec::{ErrorCode, Pattern, Topic};

pub use macaroon::{Caveat, MAX_CAVEATS, Macaroon, MacaroonError};

/// An operation a token may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `PUB`.
    Publish,
    /// `SUB` (and `UNSUB`).
    Subscribe,
    /// `MSG` on a relay link.
    Relay,
}

impl Op {
    /// The caveat value: `publish`, `subscribe`, `relay`.
    pub const fn name(self) -> &'static str {
        match self {
            Op::Publish => "publish",
            Op::Subscribe => "subscribe",
            Op::Relay => "relay",
        }
    }

    /// The op for a caveat value.
    pub fn parse(s: &str) -> Option<Op> {
        match s {
            "publish" => Some(Op::Publish),
            "subscribe" => Some(Op::Subscribe),
            "relay" => Some(Op::Relay),
            _ => None,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a token or a request under it was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No successful `AUTH` on this session yet.
    #[error("AUTH required")]
    Missing,
    /// The token does not parse or its signature does not match.
    #[error("{0}")]
    Token(#[from] MacaroonError),
    /// A caveat the node does not understand (fail closed).
    #[error("unknown caveat {0:?}")]
    UnknownCaveat(String),
    /// A third-party caveat (never honoured here).
    #[error("third-party caveats are not accepted")]
    ThirdParty,
    /// The token's `expires` has passed.
    #[error("token expired at {0}")]
    Expired(u64),
    /// A valid token that does not grant this op.
    #[error("token does not grant {0}")]
    Op(Op),
    /// A valid token that does not grant this topic or pattern.
    #[error("token does not grant topic {0}")]
    Topic(String),
}

impl AuthError {
    /// 401 for a missing or invalid token, 403 for a valid one that does not grant.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AuthError::Op(_) | AuthError::Topic(_) => ErrorCode::Forbidden,
            _ => ErrorCode::Unauthorized,
        }
    }

    /// Closed label for `overlay_oap_rejects_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "auth_missing",
            AuthError::Token(MacaroonError::Signature) => "auth_signature",
            AuthError::Token(_) => "auth_malformed",
            AuthError::UnknownCaveat(_) | AuthError::ThirdParty => "auth_caveat",
            AuthError::Expired(_) => "auth_expired",
            AuthError::Op(_) => "forbidden_op",
            AuthError::Topic(_) => "forbidden_topic",
        }
    }
}

/// What a verified token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's identifier, for logs.
    pub identifier: String,
    ops: Vec<Op>,
    topics: Vec<Pattern>,
    expires: Option<u64>,
}

impl Grant {
    /// Verifies `token` against `root_key` and reads its caveats; `now` is
    /// unix seconds.
    pub fn verify(token: &[u8], root_key: &[u8], now: u64) -> Result<Grant, AuthError> {
        let m = Macaroon::deserialize(token)?;
        m.verify(root_key)?;
        let mut grant = Grant {
            identifier: String::from_utf8_lossy(&m.identifier).into_owned(),
            ops: Vec::new(),
            topics: Vec::new(),
            expires: None,
        };
        for c in &m.caveats {
            if c.vid.is_some() || c.location.is_some() {
                return Err(AuthError::ThirdParty);
            }
            // Not UTF-8 is not a caveat this node understands: fail closed.
            let text = std::str::from_utf8(&c.id).map_err(|_| AuthError::UnknownCaveat(format!("{:?}", c.id)))?;
            let unknown = || AuthError::UnknownCaveat(text.to_string());
            let (name, value) = text.split_once('=').ok_or_else(unknown)?;
            let value = value.trim();
            match name.trim() {
                "op" => grant.ops.push(Op::parse(value).ok_or_else(unknown)?),
                "topic" => grant.topics.push(value.parse().map_err(|_| unknown())?),
                "expires" => {
                    let at: u64 = value.parse().map_err(|_| unknown())?;
                    grant.expires = Some(grant.expires.map_or(at, |e| e.min(at)));
                }
                _ => return Err(unknown()),
            }
        }
        grant.check_time(now)?;
        Ok(grant)
    }

    /// Unix second from which the grant is invalid, if it expires.
    pub fn expires(&self) -> Option<u64> {
        self.expires
    }

    /// Whether `PUB` to `topic` is allowed at `now`.
    pub fn publish(&self, topic: &Topic, now: u64) -> Result<(), AuthError> {
        self.allow(Op::Publish, now)?;
        if self.topics.iter().all(|p| p.matches(topic)) { Ok(()) } else { Err(AuthError::Topic(topic.to_string())) }
    }

    /// Whether `SUB` to `pattern` is allowed at `now`: every topic caveat
    /// must cover the whole pattern.
    pub fn subscribe(&self, pattern: &Pattern, now: u64) -> Result<(), AuthError> {
        self.allow(Op::Subscribe, now)?;
        if self.topics.iter().all(|p| p.covers(pattern)) { Ok(()) } else { Err(AuthError::Topic(pattern.to_string())) }
    }

    /// Whether relaying a `MSG` on `topic` is allowed at `now`.
    pub fn relay(&self, topic: &Topic, now: u64) -> Result<(), AuthError> {
        self.allow(Op::Relay, now)?;
        if self.topics.iter().all(|p| p.matches(topic)) { Ok(()) } else { Err(AuthError::Topic(topic.to_string())) }
    }

    /// Whether `op` is allowed at `now`, whatever the topic.
    pub fn allows(&self, op: Op, now: u64) -> bool {
        self.allow(op, now).is_ok()
    }

    /// The `topic` caveats: a message must match every one.
    pub fn topics(&self) -> &[Pattern] {
        &self.topics
    }

    fn allow(&self, op: Op, now: u64) -> Result<(), AuthError> {
        self.check_time(now)?;
        // Several `op` caveats must all hold: each one narrows.
        if self.ops.iter().all(|o| *o == op) { Ok(()) } else { Err(AuthError::Op(op)) }
    }

    fn check_time(&self, now: u64) -> Result<(), AuthError> {
        match self.expires {
            Some(at) if now >= at => Err(AuthError::Expired(at)),
            _ => Ok(()),
        }
    }
}

/// How a node checks tokens.
#[derive(Clone)]
pub struct AuthPolicy {
    /// The key every token's signature chain starts from.
    pub root_key: Vec<u8>,
    /// Whether `SUB`, `UNSUB`, `PUB` and relay `MSG` need a granting token.
    pub required: bool,
}

impl fmt::Debug for AuthPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthPolicy").field("root_key", &"<redacted>").field("required", &self.required).finish()
    }
}

/// Why the root key file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootKeyError {
    /// It could not be read.
    #[error("auth.root_key_file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Group or others may use it.
    #[error(
        "auth.root_key_file {path} is readable by others (mode {mode:o}); run `chmod 600 {path}` (a file root owns may also be 0440)"
    )]
    WorldReadable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It holds too short a key.
    #[error("auth.root_key_file {path} holds {len} bytes; a root key needs at least 16")]
    Short {
        /// The file.
        path: PathBuf,
        /// Bytes found.
        len: usize,
    },
}

/// Shortest root key accepted, in bytes.
pub const MIN_ROOT_KEY: usize = 16;

/// Reads a root key file: its bytes, one trailing newline dropped. Refuses a
/// file that group or others may access (checked on the open handle, so the
/// file cannot be swapped in between) and keys under [`MIN_ROOT_KEY`] bytes.
pub fn load_root_key(path: &Path) -> Result<Vec<u8>, RootKeyError> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let read = |source| RootKeyError::Read { path: path.to_path_buf(), source };
    use std::os::unix::fs::MetadataExt as _;
    let mut file = std::fs::File::open(path).map_err(read)?;
    let meta = file.metadata().map_err(read)?;
    let mode = meta.permissions().mode() & 0o777;
    // Owner only; or, for a file root owns, also read (not write) by its
    // group, as PostgreSQL allows for its key: a Kubernetes Secret mounted
    // with `fsGroup` is root's, mode 0440, readable by the pod's group.
    let group_read_of_root = meta.uid() == 0 && mode & 0o037 == 0;
    if mode & 0o077 != 0 && !group_read_of_root {
        return Err(RootKeyError::WorldReadable { path: path.to_path_buf(), mode });
    }
    let mut key = Vec::new();
    file.read_to_end(&mut key).map_err(read)?;
    if key.ends_with(b"\n") {
        key.pop();
        if key.ends_with(b"\r") {
            key.pop();
        }
    }
    if key.len() < MIN_ROOT_KEY {
        return Err(RootKeyError::Short { path: path.to_path_buf(), len: key.len() });
    }
    Ok(key)
}

/// Mints a token for `identifier` with the given caveats, as
/// `svc-overlay token mint` does.
pub fn mint(root_key: &[u8], identifier: &str, ops: &[Op], topics: &[Pattern], expires: Option<u64>) -> String {
    let mut m = Macaroon::mint(root_key, identifier.as_bytes(), None);
    for op in ops {
        m.add_first_party(&format!("op = {op}"));
    }
    for t in topics {
        m.add_first_party(&format!("topic = {t}"));
    }
    if let Some(at) = expires {
        m.add_first_party(&format!("expires = {at}"));
    }
    m.serialize()
}

/// The wall clock: time since the Unix epoch (zero before it).
pub(crate) fn wall() -> std::time::Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"root key for tests";

    fn grant(caveats: &[&str]) -> Result<Grant, AuthError> {
        let mut m = Macaroon::mint(KEY, b"svc-dht", None);
        caveats.iter().for_each(|c| m.add_first_party(c));
        Grant::verify(m.serialize().as_bytes(), KEY, 1000)
    }

    #[test]
    fn caveats_narrow_ops_topics_and_time() {
        let g = grant(&["op = publish", "topic = dht.>", "expires = 2000"]).unwrap();
        assert!(g.publish(&"dht.put".parse().unwrap(), 1000).is_ok());
        assert_eq!(g.publish(&"other.put".parse().unwrap(), 1000).unwrap_err().error_code(), ErrorCode::Forbidden);
        assert_eq!(g.subscribe(&"dht.>".parse().unwrap(), 1000), Err(AuthError::Op(Op::Subscribe)));
        assert_eq!(g.publish(&"dht.put".parse().unwrap(), 2000), Err(AuthError::Expired(2000)));

        let s = grant(&["op = subscribe", "topic = dht.>"]).unwrap();
        assert!(s.subscribe(&"dht.*".parse().unwrap(), 1000).is_ok());
        assert!(s.subscribe(&">".parse().unwrap(), 1000).is_err(), "a wider pattern is not covered");
        let any = grant(&[]).unwrap();
        assert!(any.relay(&"x".parse().unwrap(), 0).is_ok() && any.publish(&"x".parse().unwrap(), 0).is_ok());
        let relay = grant(&["op = relay", "topic = x.>"]).unwrap();
        assert!(relay.relay(&"x.y".parse().unwrap(), 0).is_ok());
        assert!(relay.relay(&"z.y".parse().unwrap(), 0).is_err(), "topic caveats bind relays too");
        let far = grant(&["expires = 18446744073709551615"]).unwrap();
        assert!(far.publish(&"x".parse().unwrap(), 1000).is_ok());
        let both = grant(&["op = publish", "op = subscribe"]).unwrap();
        assert!(both.publish(&"x".parse().unwrap(), 0).is_err(), "all op caveats must hold");
    }

    #[test]
    fn unknown_third_party_and_expired_tokens_are_refused_with_401() {
        assert_eq!(grant(&["colour = blue"]).unwrap_err().reason(), "auth_caveat");
        assert_eq!(grant(&["op = delete"]).unwrap_err().reason(), "auth_caveat");
        assert_eq!(grant(&["expires = 1000"]).unwrap_err(), AuthError::Expired(1000));
        let mut m = Macaroon::mint(KEY, b"id", None);
        m.add_third_party(b"http://auth/", &[1; 32], b"cid");
        m.verify(KEY).unwrap();
        assert_eq!(Grant::verify(m.serialize().as_bytes(), KEY, 0), Err(AuthError::ThirdParty));
        let token = mint(KEY, "id", &[Op::Publish], &[], None);
        assert_eq!(Grant::verify(token.as_bytes(), b"wrong", 0).unwrap_err().error_code(), ErrorCode::Unauthorized);
    }
}
