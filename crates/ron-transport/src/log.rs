//! Rate-limited logging: a failure that repeats as fast as a peer can cause
//! it (a refused accept, a peer's bad frames) is logged a few times a
//! second, and the lines say how many were left out.

use std::time::{Duration, Instant};

/// The window [`LogLimit`] counts lines in.
const WINDOW: Duration = Duration::from_secs(1);

/// Lets at most `per_sec` lines through per second. Time is passed in.
#[derive(Debug, Clone)]
pub struct LogLimit {
    per_sec: u32,
    window: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogLimit {
    /// A limiter letting `per_sec` lines through each second.
    pub const fn new(per_sec: u32) -> LogLimit {
        LogLimit { per_sec, window: None, used: 0, suppressed: 0 }
    }

    /// `Some(n)` when this line may be logged, `n` being how many were
    /// left out since the last one that was; `None` to leave it out.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let fresh = self.window.is_none_or(|start| now.saturating_duration_since(start) >= WINDOW);
        if fresh {
            self.window = Some(now);
            self.used = 0;
        }
        if self.used >= self.per_sec {
            self.suppressed += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_a_few_through_per_second_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut l = LogLimit::new(2);
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0 + Duration::from_millis(500)), None);
        assert_eq!(l.allow(t0 + Duration::from_millis(999)), None);
        assert_eq!(l.allow(t0 + WINDOW), Some(2), "the next window reports what was left out");
        assert_eq!(l.allow(t0 + WINDOW), Some(0));
        assert_eq!(l.allow(t0 + WINDOW), None);
    }
}
