//! Macaroons in the libmacaroons version 2 binary format (base64url on the
//! wire), with the HMAC-SHA256 signature chain of libmacaroons and
//! pymacaroons. Pure functions over bytes.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The key libmacaroons derives every root key through.
const KEY_GENERATOR: &[u8] = b"macaroons-key-generator";
/// The v2 format's version byte.
const VERSION: u8 = 2;
/// Field types of the v2 format.
const EOS: u8 = 0;
const LOCATION: u8 = 1;
const IDENTIFIER: u8 = 2;
const VID: u8 = 4;
const SIGNATURE: u8 = 6;
/// Caveats a token may carry before it is refused outright.
pub const MAX_CAVEATS: usize = 64;

/// Why a token could not be read or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MacaroonError {
    /// Not base64 (url-safe or standard, padded or not).
    #[error("token is not base64")]
    Base64,
    /// Not the v2 binary format.
    #[error("token is malformed: {0}")]
    Format(&'static str),
    /// More than [`MAX_CAVEATS`] caveats.
    #[error("token has more than 64 caveats")]
    TooManyCaveats,
    /// The signature does not match the root key.
    #[error("bad token signature")]
    Signature,
}

/// One caveat; `vid` is present exactly for third-party caveats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caveat {
    /// Where a third-party caveat is discharged.
    pub location: Option<Vec<u8>>,
    /// The caveat text (first-party) or id (third-party).
    pub id: Vec<u8>,
    /// The verification id of a third-party caveat.
    pub vid: Option<Vec<u8>>,
}

/// A macaroon: identifier, caveats and the chained signature over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Macaroon {
    /// Optional hint of where the macaroon is used.
    pub location: Option<Vec<u8>>,
    /// Names the root key (or the grant) to the issuer.
    pub identifier: Vec<u8>,
    /// Caveats in the order they were added.
    pub caveats: Vec<Caveat>,
    signature: [u8; 32],
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl Macaroon {
    /// A new macaroon for `identifier`, signed with `root_key`.
    pub fn mint(root_key: &[u8], identifier: &[u8], location: Option<&str>) -> Macaroon {
        let key = hmac(KEY_GENERATOR, root_key);
        Macaroon {
            location: location.map(|l| l.as_bytes().to_vec()),
            identifier: identifier.to_vec(),
            caveats: Vec::new(),
            signature: hmac(&key, identifier),
        }
    }

    /// Adds a first-party caveat such as `op = publish` and re-signs.
    pub fn add_first_party(&mut self, caveat: &str) {
        self.signature = hmac(&self.signature, caveat.as_bytes());
        self.caveats.push(Caveat { location: None, id: caveat.as_bytes().to_vec(), vid: None });
    }

    /// Adds a third-party caveat with a verification id chained as
    /// libmacaroons does (the node refuses such tokens; tests build them).
    #[cfg(test)]
    pub(crate) fn add_third_party(&mut self, location: &[u8], vid: &[u8], id: &[u8]) {
        let caveat = Caveat { location: Some(location.to_vec()), id: id.to_vec(), vid: Some(vid.to_vec()) };
        self.signature = chain(&self.signature, &caveat);
        self.caveats.push(caveat);
    }

    /// The final signature.
    pub fn signature(&self) -> [u8; 32] {
        self.signature
    }

    /// Checks the signature chain against `root_key`, in constant time.
    /// Third-party caveats are chained as libmacaroons does (over
    /// `vid || cid`), though the node refuses them anyway.
    pub fn verify(&self, root_key: &[u8]) -> Result<(), MacaroonError> {
        let key = hmac(KEY_GENERATOR, root_key);
        let (last, rest) = match self.caveats.split_last() {
            None => return verify_mac(&key, &self.identifier, &self.signature),
            Some(split) => split,
        };
        let mut sig = hmac(&key, &self.identifier);
        for c in rest {
            sig = chain(&sig, c);
        }
        // The last link is compared in constant time inside the MAC.
        match &last.vid {
            None => verify_mac(&sig, &last.id, &self.signature),
            Some(vid) => verify_mac(&sig, &[hmac(&sig, vid), hmac(&sig, &last.id)].concat(), &self.signature),
        }
    }

    /// The v2 binary serialization.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        if let Some(loc) = &self.location {
            field(&mut out, LOCATION, loc);
        }
        field(&mut out, IDENTIFIER, &self.identifier);
        out.push(EOS);
        for c in &self.caveats {
            if let Some(loc) = &c.location {
                field(&mut out, LOCATION, loc);
            }
            field(&mut out, IDENTIFIER, &c.id);
            if let Some(vid) = &c.vid {
                field(&mut out, VID, vid);
            }
            out.push(EOS);
        }
        out.push(EOS);
        field(&mut out, SIGNATURE, &self.signature);
        out
    }

    /// The token text: v2 binary in unpadded base64url.
    pub fn serialize(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.to_bytes())
    }

    /// Reads a token: base64url (or standard base64), padded or not.
    pub fn deserialize(text: &[u8]) -> Result<Macaroon, MacaroonError> {
        let text = text.trim_ascii();
        let bytes = [URL_SAFE_NO_PAD, URL_SAFE, STANDARD_NO_PAD, STANDARD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .ok_or(MacaroonError::Base64)?;
        Macaroon::from_bytes(&bytes)
    }

    /// Reads the v2 binary format.
    pub fn from_bytes(bytes: &[u8]) -> Result<Macaroon, MacaroonError> {
        let mut r = FieldReader { buf: bytes };
        if r.byte()? != VERSION {
            return Err(MacaroonError::Format("not a version 2 macaroon"));
        }
        let mut location = None;
        let mut next = r.field()?;
        if let Some((LOCATION, data)) = next {
            location = Some(data.to_vec());
            next = r.field()?;
        }
        let identifier = match next {
            Some((IDENTIFIER, data)) => data.to_vec(),
            _ => return Err(MacaroonError::Format("missing identifier")),
        };
        if r.field()?.is_some() {
            return Err(MacaroonError::Format("unexpected field in header"));
        }
        let mut caveats = Vec::new();
        loop {
            let mut next = r.field()?;
            let Some(first) = next else { break };
            if caveats.len() == MAX_CAVEATS {
                return Err(MacaroonError::TooManyCaveats);
            }
            let mut caveat = Caveat { location: None, id: Vec::new(), vid: None };
            if first.0 == LOCATION {
                caveat.location = Some(first.1.to_vec());
                next = r.field()?;
            }
            match next {
                Some((IDENTIFIER, data)) => caveat.id = data.to_vec(),
                _ => return Err(MacaroonError::Format("caveat without identifier")),
            }
            match r.field()? {
                None => {}
                Some((VID, data)) => {
                    caveat.vid = Some(data.to_vec());
                    if r.field()?.is_some() {
                        return Err(MacaroonError::Format("unexpected field in caveat"));
                    }
                }
                Some(_) => return Err(MacaroonError::Format("unexpected field in caveat")),
            }
            caveats.push(caveat);
        }
        let signature = match r.field()? {
            Some((SIGNATURE, data)) => {
                <[u8; 32]>::try_from(data).map_err(|_| MacaroonError::Format("signature is not 32 bytes"))?
            }
            _ => return Err(MacaroonError::Format("missing signature")),
        };
        if !r.buf.is_empty() {
            return Err(MacaroonError::Format("trailing bytes"));
        }
        Ok(Macaroon { location, identifier, caveats, signature })
    }
}

/// What a caveat adds to the signature chain. First-party: its text.
/// Third-party: libmacaroons' `hash2`, HMAC(sig, HMAC(sig, vid) || HMAC(sig, cid)),
/// so tokens from other implementations verify before being refused.
fn chain(sig: &[u8; 32], c: &Caveat) -> [u8; 32] {
    match &c.vid {
        None => hmac(sig, &c.id),
        Some(vid) => hmac(sig, &[hmac(sig, vid), hmac(sig, &c.id)].concat()),
    }
}

fn verify_mac(key: &[u8], data: &[u8], expected: &[u8; 32]) -> Result<(), MacaroonError> {
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| MacaroonError::Signature)?;
    mac.update(data);
    mac.verify_slice(expected).map_err(|_| MacaroonError::Signature)
}

fn field(out: &mut Vec<u8>, kind: u8, data: &[u8]) {
    out.push(kind);
    let mut n = data.len();
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(data);
}

struct FieldReader<'a> {
    buf: &'a [u8],
}

impl<'a> FieldReader<'a> {
    fn byte(&mut self) -> Result<u8, MacaroonError> {
        let (&b, rest) = self.buf.split_first().ok_or(MacaroonError::Format("truncated"))?;
        self.buf = rest;
        Ok(b)
    }

    /// `None` at an end-of-section marker.
    fn field(&mut self) -> Result<Option<(u8, &'a [u8])>, MacaroonError> {
        let kind = self.byte()?;
        if kind == EOS {
            return Ok(None);
        }
        let mut len: usize = 0;
        for shift in (0..).step_by(7).take(4) {
            let b = self.byte()?;
            len |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if len > self.buf.len() {
                    return Err(MacaroonError::Format("field longer than the token"));
                }
                let (data, rest) = self.buf.split_at(len);
                self.buf = rest;
                return Ok(Some((kind, data)));
            }
        }
        Err(MacaroonError::Format("field length too long"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR: &str = "AgEOaHR0cDovL215YmFuay8CFndlIHVzZWQgb3VyIHNlY3JldCBrZXkAAg10ZXN0ID0gY2F2ZWF0AAAGIBl7rHoESvMzMoZbkmbibUk73WaKZg5E2IzhqZjCPb1n";
    const KEY: &[u8] = b"this is our super secret key; only we should know it";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn libmacaroons_vector_mints_signs_serializes_and_verifies() {
        let mut m = Macaroon::mint(KEY, b"we used our secret key", Some("http://mybank/"));
        m.add_first_party("test = caveat");
        assert_eq!(hex(&m.signature()), "197bac7a044af33332865b9266e26d493bdd668a660e44d88ce1a998c23dbd67");
        assert_eq!(m.serialize(), VECTOR);
        let parsed = Macaroon::deserialize(VECTOR.as_bytes()).unwrap();
        assert_eq!(parsed, m);
        parsed.verify(KEY).unwrap();
        assert_eq!(parsed.verify(b"another key"), Err(MacaroonError::Signature));
        // The padded spelling reads the same.
        let padded = format!("{VECTOR}{}", "=".repeat((4 - VECTOR.len() % 4) % 4));
        assert_eq!(Macaroon::deserialize(padded.as_bytes()).unwrap(), m);
    }

    #[test]
    fn malformed_tokens_are_refused_without_panicking() {
        assert_eq!(Macaroon::deserialize(b"!!!"), Err(MacaroonError::Base64));
        let bytes = Macaroon::mint(KEY, b"id", None).to_bytes();
        for cut in 0..bytes.len() {
            assert!(Macaroon::from_bytes(&bytes[..cut]).is_err(), "prefix of {cut} bytes");
        }
        let mut v1 = bytes.clone();
        v1[0] = 1;
        assert!(Macaroon::from_bytes(&v1).is_err());
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_single_byte_change_is_rejected(at in any::<prop::sample::Index>(), flip in 1u8..=255) {
            // No location: like every signature scheme of libmacaroons, the
            // location hint is not signed, so only unlocated tokens (what
            // `svc-overlay token mint` makes) are covered byte for byte.
            let key = b"prop root key";
            let mut m = Macaroon::mint(key, b"svc-dht", None);
            m.add_first_party("op = publish");
            m.add_first_party("topic = dht.>");
            let mut bytes = m.to_bytes();
            let i = at.index(bytes.len());
            bytes[i] ^= flip;
            let verdict = Macaroon::from_bytes(&bytes).and_then(|t| t.verify(key));
            prop_assert!(verdict.is_err(), "byte {} ^ {:#x} still verifies", i, flip);
        }
    }
}
