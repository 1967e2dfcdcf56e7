//! Topics and subscription patterns (spec section 3): validated once at the
//! edge, then carried as cheap-to-clone `Bytes`.

use std::fmt;

use bytes::Bytes;

/// Longest topic or pattern in bytes (it is length-prefixed by a `u8`).
pub const MAX_TOPIC_LEN: usize = 255;

/// Why a topic or pattern was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// Zero bytes.
    #[error("topic is empty")]
    Empty,
    /// More than [`MAX_TOPIC_LEN`] bytes.
    #[error("topic is {0} bytes, the limit is 255")]
    TooLong(usize),
    /// Not valid UTF-8.
    #[error("topic is not valid UTF-8")]
    NotUtf8,
    /// Two dots in a row, or a leading or trailing dot.
    #[error("topic has an empty token")]
    EmptyToken,
    /// A token holds white space.
    #[error("topic has white space in a token")]
    Whitespace,
    /// `*` or `>` in a topic that is published to.
    #[error("wildcards are not allowed in a published topic")]
    Wildcard,
    /// `>` anywhere but the last token of a pattern.
    #[error("'>' is only allowed as the last token")]
    MisplacedTail,
}

/// A concrete topic: what `PUB` and `MSG` carry. No wildcard tokens.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Bytes);

/// A subscription pattern: a topic whose tokens may be `*` (one token) or,
/// last, `>` (one or more tokens).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pattern(Bytes);

impl Topic {
    /// Validates `raw` as a topic without wildcards.
    pub fn new(raw: impl Into<Bytes>) -> Result<Topic, TopicError> {
        let raw = raw.into();
        validate(&raw, false)?;
        Ok(Topic(raw))
    }
}

impl Pattern {
    /// Validates `raw` as a pattern (`*` and a trailing `>` allowed).
    pub fn new(raw: impl Into<Bytes>) -> Result<Pattern, TopicError> {
        let raw = raw.into();
        validate(&raw, true)?;
        Ok(Pattern(raw))
    }

    /// True when the pattern has no wildcard token.
    pub fn is_literal(&self) -> bool {
        self.tokens().all(|t| t != b"*" && t != b">")
    }

    /// NATS subject matching: `*` matches one token, a trailing `>` one or more.
    pub fn matches(&self, topic: &Topic) -> bool {
        let mut topic_tokens = topic.tokens();
        for pat in self.tokens() {
            if pat == b">" {
                return topic_tokens.next().is_some();
            }
            match topic_tokens.next() {
                Some(tok) if pat == b"*" || pat == tok => {}
                _ => return false,
            }
        }
        topic_tokens.next().is_none()
    }

    /// True when every topic that `other` matches is also matched by `self`.
    pub fn covers(&self, other: &Pattern) -> bool {
        let mut theirs = other.tokens();
        for ours in self.tokens() {
            if ours == b">" {
                return theirs.next().is_some();
            }
            match theirs.next() {
                Some(b">") | None => return false,
                Some(t) if ours == b"*" || ours == t => {}
                Some(_) => return false,
            }
        }
        theirs.next().is_none()
    }
}

impl From<Topic> for Pattern {
    fn from(topic: Topic) -> Pattern {
        Pattern(topic.0)
    }
}

fn validate(raw: &[u8], wildcards: bool) -> Result<(), TopicError> {
    if raw.is_empty() {
        return Err(TopicError::Empty);
    }
    if raw.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong(raw.len()));
    }
    if raw.is_ascii() {
        return validate_ascii(raw, wildcards);
    }
    validate_text(raw, wildcards)
}

/// The common case in one pass over the bytes; the same verdicts, in the
/// same order, as [`validate_text`] (for ASCII, `char::is_whitespace` is
/// exactly `\t`..=`\r` and space).
fn validate_ascii(raw: &[u8], wildcards: bool) -> Result<(), TopicError> {
    let mut start = 0;
    for (i, &b) in raw.iter().enumerate() {
        match b {
            b'.' => {
                check_token(&raw[start..i], wildcards, false)?;
                start = i + 1;
            }
            b'\t'..=b'\r' | b' ' => return Err(TopicError::Whitespace),
            _ => {}
        }
    }
    check_token(&raw[start..], wildcards, true)
}

fn check_token(token: &[u8], wildcards: bool, last: bool) -> Result<(), TopicError> {
    match token {
        [] => Err(TopicError::EmptyToken),
        b"*" | b">" if !wildcards => Err(TopicError::Wildcard),
        b">" if !last => Err(TopicError::MisplacedTail),
        _ => Ok(()),
    }
}

fn validate_text(raw: &[u8], wildcards: bool) -> Result<(), TopicError> {
    let text = std::str::from_utf8(raw).map_err(|_| TopicError::NotUtf8)?;
    let mut tokens = text.split('.').peekable();
    while let Some(token) = tokens.next() {
        if token.is_empty() {
            return Err(TopicError::EmptyToken);
        }
        if token.chars().any(char::is_whitespace) {
            return Err(TopicError::Whitespace);
        }
        match token {
            "*" | ">" if !wildcards => return Err(TopicError::Wildcard),
            ">" if tokens.peek().is_some() => return Err(TopicError::MisplacedTail),
            _ => {}
        }
    }
    Ok(())
}

/// What `Topic` and `Pattern` share: text and token access, formatting and
/// parsing. Both are only ever built through `validate`.
macro_rules! name_type {
    ($ty:ident) => {
        impl $ty {
            /// The text.
            pub fn as_str(&self) -> &str {
                // Invariant: `validate` rejected anything that is not UTF-8.
                std::str::from_utf8(&self.0).unwrap_or_default()
            }

            /// The bytes, as on the wire.
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }

            /// The dot-separated tokens.
            pub fn tokens(&self) -> impl Iterator<Item = &[u8]> + Clone {
                self.0.split(|b| *b == b'.')
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($ty), "({:?})"), self.as_str())
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = TopicError;
            fn from_str(s: &str) -> Result<$ty, TopicError> {
                $ty::new(Bytes::copy_from_slice(s.as_bytes()))
            }
        }
    };
}

name_type!(Topic);
name_type!(Pattern);

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn the_ascii_pass_agrees_with_the_text_rules(raw in "[ab.*> \t\r]{0,12}", wildcards: bool) {
            proptest::prop_assert_eq!(
                validate_ascii(raw.as_bytes(), wildcards).err(),
                validate_text(raw.as_bytes(), wildcards).err(),
            );
        }
    }

    fn t(s: &str) -> Topic {
        s.parse().unwrap()
    }

    fn p(s: &str) -> Pattern {
        s.parse().unwrap()
    }

    #[test]
    fn validation() {
        assert_eq!("".parse::<Topic>(), Err(TopicError::Empty));
        assert_eq!("a..b".parse::<Topic>(), Err(TopicError::EmptyToken));
        assert_eq!(".a".parse::<Topic>(), Err(TopicError::EmptyToken));
        assert_eq!("a.".parse::<Topic>(), Err(TopicError::EmptyToken));
        assert_eq!("a b".parse::<Topic>(), Err(TopicError::Whitespace));
        assert_eq!("a.\tb".parse::<Pattern>(), Err(TopicError::Whitespace));
        assert_eq!("a.*".parse::<Topic>(), Err(TopicError::Wildcard));
        assert_eq!("a.>".parse::<Topic>(), Err(TopicError::Wildcard));
        assert_eq!("a.>.b".parse::<Pattern>(), Err(TopicError::MisplacedTail));
        assert_eq!("x".repeat(256).parse::<Topic>(), Err(TopicError::TooLong(256)));
        assert_eq!(Topic::new(&b"\xff"[..]), Err(TopicError::NotUtf8));
        assert!("x".repeat(255).parse::<Topic>().is_ok());
        assert!("a*.b>".parse::<Topic>().is_ok(), "only whole tokens are wildcards");
        assert!("dht.*.put.>".parse::<Pattern>().is_ok());
        assert!("ünï.cödé".parse::<Topic>().is_ok());
    }

    #[test]
    fn matching_table() {
        let table: &[(&str, &str, bool)] = &[
            ("a.b", "a.b", true),
            ("a.b", "a.c", false),
            ("a.b", "a.b.c", false),
            ("a.*", "a.b", true),
            ("a.*", "a", false),
            ("a.*", "a.b.c", false),
            ("*.b", "a.b", true),
            ("*", "a", true),
            ("*", "a.b", false),
            ("a.>", "a.b", true),
            ("a.>", "a.b.c.d", true),
            ("a.>", "a", false),
            (">", "a", true),
            (">", "a.b.c", true),
            ("a.*.c.>", "a.x.c.d", true),
            ("a.*.c.>", "a.x.c", false),
            ("a*", "a*", true),
            ("a*", "ab", false),
        ];
        for (pattern, topic, want) in table {
            assert_eq!(p(pattern).matches(&t(topic)), *want, "{pattern} ~ {topic}");
        }
    }

    #[test]
    fn covering() {
        assert!(p("dht.>").covers(&p("dht.put")));
        assert!(p("dht.>").covers(&p("dht.*")));
        assert!(p("dht.>").covers(&p("dht.a.>")));
        assert!(p("dht.*").covers(&p("dht.put")));
        assert!(!p("dht.*").covers(&p("dht.>")));
        assert!(!p("dht.put").covers(&p("dht.*")));
        assert!(!p("dht.>").covers(&p("dht")));
        assert!(p(">").covers(&p("*.x")));
    }
}
