//! The subscription index: a token trie, so a publish visits only the
//! branches its topic's tokens lead to (plus `*` and `>` branches), never
//! every subscription.

use std::collections::HashMap;

use oap_codec::{Pattern, Topic};

use crate::SubscriberId;

/// Patterns indexed by token.
#[derive(Debug, Default)]
pub(crate) struct Trie {
    root: Node,
    patterns: usize,
}

#[derive(Debug, Default)]
struct Node {
    literal: HashMap<Box<[u8]>, Node>,
    star: Option<Box<Node>>,
    /// Subscribers whose pattern ends here.
    here: Vec<SubscriberId>,
    /// Subscribers whose pattern ends with `>` here.
    tail: Vec<SubscriberId>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.star.is_none() && self.here.is_empty() && self.tail.is_empty()
    }
}

impl Trie {
    /// Adds `(pattern, sub)`; false when it was already there.
    pub(crate) fn insert(&mut self, pattern: &Pattern, sub: SubscriberId) -> bool {
        let mut node = &mut self.root;
        let mut tokens = pattern.tokens().peekable();
        while let Some(token) = tokens.next() {
            if token == b">" && tokens.peek().is_none() {
                return push_unique(&mut node.tail, sub, &mut self.patterns);
            }
            node = if token == b"*" {
                node.star.get_or_insert_with(Box::default)
            } else {
                node.literal.entry(token.into()).or_default()
            };
        }
        push_unique(&mut node.here, sub, &mut self.patterns)
    }

    /// Removes `(pattern, sub)`; false when it was not there.
    pub(crate) fn remove(&mut self, pattern: &Pattern, sub: SubscriberId) -> bool {
        let tokens: Vec<&[u8]> = pattern.tokens().collect();
        let removed = remove_at(&mut self.root, &tokens, sub);
        if removed {
            self.patterns -= 1;
        }
        removed
    }

    /// Every subscriber with a pattern matching `topic`, each once, sorted.
    pub(crate) fn matches(&self, topic: &Topic, out: &mut Vec<SubscriberId>) {
        out.clear();
        collect(&self.root, topic.tokens(), out);
        out.sort_unstable();
        out.dedup();
    }

    /// Indexed `(pattern, subscriber)` pairs.
    pub(crate) fn len(&self) -> usize {
        self.patterns
    }
}

fn push_unique(list: &mut Vec<SubscriberId>, sub: SubscriberId, count: &mut usize) -> bool {
    if list.contains(&sub) {
        return false;
    }
    list.push(sub);
    *count += 1;
    true
}

/// Walks the topic's tokens as an iterator (cloned at each branch), so a
/// match allocates nothing.
fn collect<'t>(node: &Node, mut tokens: impl Iterator<Item = &'t [u8]> + Clone, out: &mut Vec<SubscriberId>) {
    let Some(first) = tokens.next() else {
        out.extend_from_slice(&node.here);
        return;
    };
    // `>` here matches this token and everything after it.
    out.extend_from_slice(&node.tail);
    if let Some(child) = node.literal.get(first) {
        collect(child, tokens.clone(), out);
    }
    if let Some(star) = &node.star {
        collect(star, tokens, out);
    }
}

fn remove_at(node: &mut Node, tokens: &[&[u8]], sub: SubscriberId) -> bool {
    let take = |list: &mut Vec<SubscriberId>| match list.iter().position(|s| *s == sub) {
        Some(i) => {
            list.swap_remove(i);
            true
        }
        None => false,
    };
    match tokens {
        [] => take(&mut node.here),
        [b">"] => take(&mut node.tail),
        [first, rest @ ..] => {
            let removed;
            if *first == b"*" {
                let Some(star) = node.star.as_deref_mut() else { return false };
                removed = remove_at(star, rest, sub);
                if star.is_empty() {
                    node.star = None;
                }
            } else {
                let Some(child) = node.literal.get_mut(*first) else { return false };
                removed = remove_at(child, rest, sub);
                if child.is_empty() {
                    node.literal.remove(*first);
                }
            }
            removed
        }
    }
}
