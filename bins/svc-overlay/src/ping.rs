//! `svc-overlay ping`: DATA round trips against a node, verified byte for byte.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use overlay_core::Bytes;
use overlay_core::client::{Client, ClientError};
use overlay_core::wire::Caps;

use crate::cli::{OptionsError, PingArgs};

/// What a ping run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PingReport {
    /// Round-trip time of each echo, in send order.
    pub rtts: Vec<Duration>,
}

/// Why a ping run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PingError {
    /// Connecting, sending or receiving failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The TLS or token options could not be read.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// The node answered with something that is not the echo.
    #[error("ping {seq}: {what}")]
    Mismatch {
        /// 1-based ping number.
        seq: u32,
        /// What was wrong.
        what: String,
    },
    /// No echo within 10 s.
    #[error("ping {0}: no echo within 10 s")]
    Timeout(u32),
}

/// Runs the pings, printing one line each through `out`.
pub async fn run(args: &PingArgs, mut out: impl FnMut(&str)) -> Result<PingReport, PingError> {
    let mut client = Client::connect(&args.connect.options()?.caps(Caps::GOSSIP_V1)).await?;
    out(&format!("connected to {} ({:?})", args.connect.addr, client.negotiated().caps));
    let mut rtts = Vec::with_capacity(args.count as usize);
    for seq in 1..=args.count {
        let payload = payload(seq, args.size as usize);
        let started = Instant::now();
        let echo = client.echo(payload.clone()).await.map_err(|e| match e {
            ClientError::NoAnswer(_) => PingError::Timeout(seq),
            e @ (ClientError::Unexpected(_) | ClientError::GoAway { .. } | ClientError::Refused { .. }) => {
                PingError::Mismatch { seq, what: e.to_string() }
            }
            e => PingError::Client(e),
        })?;
        let rtt = started.elapsed();
        if echo != payload {
            return Err(PingError::Mismatch {
                seq,
                what: format!("echo of {} bytes differs from the {} sent", echo.len(), payload.len()),
            });
        }
        out(&format!("seq={seq} bytes={} rtt={:.3} ms", args.size, rtt.as_secs_f64() * 1e3));
        rtts.push(rtt);
        if args.interval_ms > 0 && seq < args.count {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
    }
    client.close().await.ok();
    let report = PingReport { rtts };
    out(&report.summary());
    Ok(report)
}

/// A payload that differs per ping, so a stale or reordered echo is caught.
fn payload(seq: u32, size: usize) -> Bytes {
    (0..size).map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8).collect::<Vec<u8>>().into()
}

impl PingReport {
    /// `N pings, rtt min/avg/p50/p99/max = ... ms`.
    pub fn summary(&self) -> String {
        let mut sorted = self.rtts.clone();
        sorted.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let pct = |p: f64| sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default();
        let avg = sorted.iter().sum::<Duration>().checked_div(sorted.len() as u32).unwrap_or_default();
        let mut s = String::new();
        let _ = write!(
            s,
            "{} pings, 0 lost, rtt min/avg/p50/p99/max = {:.3}/{:.3}/{:.3}/{:.3}/{:.3} ms",
            sorted.len(),
            ms(sorted.first().copied().unwrap_or_default()),
            ms(avg),
            ms(pct(0.5)),
            ms(pct(0.99)),
            ms(sorted.last().copied().unwrap_or_default()),
        );
        s
    }
}
