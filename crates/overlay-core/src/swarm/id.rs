//! Node ids: random, configured (64 hex digits) or a TLS certificate's.

use oap_codec::NodeId;

/// All 32 bytes of an id in hex.
pub(crate) fn hex(id: &NodeId) -> String {
    id.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// The node id of a TLS node: the SHA-256 of its certificate's public key
/// (DER `SubjectPublicKeyInfo`), so it survives a renewal with the same key.
pub(crate) fn key_id(public_key: &[u8]) -> NodeId {
    use sha2::Digest as _;
    NodeId(sha2::Sha256::digest(public_key).into())
}

/// A random node id (when `node.id` is not configured).
pub(crate) fn random_id() -> NodeId {
    let mut id = [0u8; 32];
    for chunk in id.chunks_mut(8) {
        chunk.copy_from_slice(&random_u64().to_le_bytes());
    }
    NodeId(id)
}

/// Parses 64 hex digits into a node id.
pub(crate) fn parse_id(text: &str) -> Result<NodeId, String> {
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("64 hex digits".into());
    }
    let mut id = [0u8; 32];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(NodeId(id))
}

/// A random number from std's per-process random hash keys and the time.
pub(super) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher, RandomState};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(crate::auth::wall().as_nanos());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_parse_from_64_hex_digits_only() {
        let text = "00".repeat(31) + "ff";
        assert_eq!(parse_id(&text).unwrap().0[31], 0xff);
        assert!(parse_id("abc").is_err());
        assert!(parse_id(&"zz".repeat(32)).is_err());
        assert_ne!(random_id(), random_id());
    }
}
