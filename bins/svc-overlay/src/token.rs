//! `svc-overlay token mint | inspect`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use overlay_core::Pattern;
use overlay_core::auth::{Macaroon, Op, RootKeyError, load_root_key, mint};

use crate::cli::MintArgs;

/// Why a token command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The root key file was refused.
    #[error(transparent)]
    RootKey(#[from] RootKeyError),
    /// `--op` is not publish, subscribe or relay.
    #[error("--op {0}: expected publish, subscribe or relay")]
    Op(String),
    /// `--topic` is not a valid pattern.
    #[error("--topic {0}: {1}")]
    Topic(String, overlay_core::wire::TopicError),
    /// `--ttl` is not a duration.
    #[error("--ttl {0}: expected a number with s, m, h or d (e.g. 1h)")]
    Ttl(String),
    /// The token does not parse.
    #[error("cannot read token: {0}")]
    Token(#[from] overlay_core::auth::MacaroonError),
}

/// The token text for `args`.
pub fn mint_token(args: &MintArgs) -> Result<String, TokenError> {
    let key = load_root_key(&args.root_key_file)?;
    let ops =
        args.op.iter().map(|o| Op::parse(o).ok_or_else(|| TokenError::Op(o.clone()))).collect::<Result<Vec<_>, _>>()?;
    let topics = args
        .topic
        .iter()
        .map(|t| t.parse::<Pattern>().map_err(|e| TokenError::Topic(t.clone(), e)))
        .collect::<Result<Vec<_>, _>>()?;
    let expires = match &args.ttl {
        Some(ttl) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let ttl_secs = parse_ttl(ttl).ok_or_else(|| TokenError::Ttl(ttl.clone()))?.as_secs();
            Some(now.checked_add(ttl_secs).ok_or_else(|| TokenError::Ttl(ttl.clone()))?)
        }
        None => None,
    };
    Ok(mint(&key, &args.id, &ops, &topics, expires))
}

/// The lines `token inspect` prints.
pub fn inspect(token: &str) -> Result<Vec<String>, TokenError> {
    let m = Macaroon::deserialize(token.as_bytes())?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut lines = vec![format!("identifier: {}", text(&m.identifier))];
    if let Some(loc) = &m.location {
        lines.push(format!("location: {}", text(loc)));
    }
    for c in &m.caveats {
        match (&c.vid, &c.location) {
            (None, None) => lines.push(format!("caveat: {}", text(&c.id))),
            (_, loc) => lines.push(format!(
                "third-party caveat: {} (location {})",
                text(&c.id),
                loc.as_deref().map(text).unwrap_or_default()
            )),
        }
    }
    lines.push(format!("signature: {}", m.signature().iter().map(|b| format!("{b:02x}")).collect::<String>()));
    Ok(lines)
}

/// `90s`, `30m`, `1h`, `7d` or plain seconds.
pub fn parse_ttl(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}
