//! The session's grant: `AUTH`, the checks it allows, its expiry, and
//! what a changed grant does to subscriptions and relay links.

use std::time::{Duration, Instant};

use oap_codec::{ErrorCode, Frame, Pattern};
use ron_transport::DisconnectReason;

use super::{Consumer, MAX_EXPIRY_WAIT, Now, SessionState, ack};
use crate::auth::{AuthError, Grant, Op};

/// A grant with the time it was accepted at.
pub(super) struct Held {
    pub(super) grant: Grant,
    pub(super) unix_at_auth: Duration,
    pub(super) at_auth: Instant,
}

impl Held {
    /// Unix seconds for this grant's checks: the later of the wall clock and
    /// the wall clock at its `AUTH` advanced by the monotonic clock. A wall
    /// clock stepped back cannot lengthen the grant's life, one stepped
    /// forward (or a resumed VM) shortens it at once, and a wrong wall clock
    /// at one `AUTH` affects that grant only.
    pub(super) fn unix(&self, now: Now) -> u64 {
        now.unix.max(self.unix_at_auth + now.at.saturating_duration_since(self.at_auth)).as_secs()
    }
}

impl SessionState<'_> {
    /// `AUTH`: a valid token replaces the grant (in-band refresh); the
    /// subscriptions it no longer covers end with `ERROR 403` and their
    /// `SUB`'s req_id. An invalid token gets `ERROR 401`; the old grant stays.
    pub(super) fn authenticate(&mut self, req_id: u32, token: &[u8], now: Now) {
        let Some(policy) = self.env.auth else {
            return self.send(Frame::error(ErrorCode::Unsupported, req_id, "AUTH is not enabled"));
        };
        // Each grant keeps time from its own AUTH (see `Held::unix`).
        match Grant::verify(token, &policy.root_key, now.unix.as_secs()) {
            Ok(grant) => {
                tracing::debug!(identifier = %grant.identifier, "AUTH accepted");
                self.grant = Some(Held { grant, unix_at_auth: now.unix, at_auth: now.at });
                self.send(ack(req_id));
                self.regrant(now);
                self.revoke_uncovered("no longer granted", now);
            }
            Err(e) => {
                self.env.metrics.reject(e.reason());
                self.send(Frame::error(e.error_code(), req_id, e.to_string()));
            }
        }
    }

    pub(super) fn auth_required(&self) -> bool {
        self.env.auth.is_some_and(|p| p.required)
    }

    /// `None` when the request may go ahead; otherwise the `ERROR` (401
    /// without a grant, 403 when the grant does not cover it). Only enforced
    /// when `auth.required`.
    pub(super) fn authorize(
        &self,
        req_id: u32,
        now: Now,
        check: impl FnOnce(&Grant, u64) -> Result<(), AuthError>,
    ) -> Option<Frame> {
        if !self.auth_required() {
            return None;
        }
        let verdict = match &self.grant {
            None => Err(AuthError::Missing),
            Some(held) => check(&held.grant, held.unix(now)),
        };
        let e = verdict.err()?;
        self.env.metrics.reject(e.reason());
        Some(Frame::error(e.error_code(), req_id, e.to_string()))
    }

    /// An inbound relay link follows its grant: attached (with the grant's
    /// topics as its filter) while the grant allows `relay`, detached when
    /// it no longer does.
    pub(super) fn regrant(&mut self, now: Now) {
        let Consumer::Swarm(link) = &self.consumer else { return };
        if self.dialed || !self.auth_required() {
            return;
        }
        let filter = self.relay_filter(now);
        match (link.up, filter) {
            (Some(_), None) => {
                let why = "the link's grant no longer allows relay";
                self.goaway(ErrorCode::Forbidden, 0, why, DisconnectReason::Protocol)
            }
            // A refreshed grant with other topics: the link carries those.
            (Some(node), Some(filter)) if filter != link.filter => {
                self.env.swarm.set_filter(node, self.info.id, filter.clone(), now.at);
                if let Consumer::Swarm(link) = &mut self.consumer {
                    link.filter = filter;
                }
            }
            (Some(_), Some(_)) => {}
            (None, _) => self.swarm_up(now),
        }
    }

    /// The topics this link may receive, when it may relay at all: every
    /// topic on a link this node dialed or on a node that checks no tokens,
    /// else its grant's.
    pub(super) fn relay_filter(&self, now: Now) -> Option<Vec<Pattern>> {
        if self.dialed || !self.auth_required() {
            return Some(Vec::new());
        }
        let relay = self.grant.as_ref().filter(|h| h.grant.allows(Op::Relay, h.unix(now)));
        relay.map(|h| h.grant.topics().to_vec())
    }

    /// When the current grant stops being valid, if auth is enforced; `None`
    /// for far-off expiries (they are checked again on the next AUTH).
    pub(super) fn grant_expiry(&self, now: Now) -> Option<Instant> {
        let held = self.grant.as_ref().filter(|_| self.auth_required())?;
        let left = Duration::from_secs(held.grant.expires()?.saturating_sub(held.unix(now)));
        now.at.checked_add(left.min(MAX_EXPIRY_WAIT))
    }

    /// Ends each subscription the current grant (or its absence) no longer
    /// covers, answering its `SUB`'s req_id with `ERROR 403`.
    pub(super) fn revoke_uncovered(&mut self, why: &str, now: Now) {
        if !self.auth_required() {
            return;
        }
        let covered = |p: &Pattern| self.grant.as_ref().is_some_and(|h| h.grant.subscribe(p, h.unix(now)).is_ok());
        let (keep, drop): (Vec<_>, Vec<_>) = std::mem::take(&mut self.subs).into_iter().partition(|(p, _)| covered(p));
        self.subs = keep;
        for (pattern, req_id) in drop {
            if let Consumer::Client(Some(sub)) = self.consumer {
                self.env.registry.unsubscribe(sub, &pattern);
            }
            self.env.metrics.reject("revoked");
            self.send(Frame::error(ErrorCode::Forbidden, req_id, format!("{why}: {pattern}")));
        }
    }
}
