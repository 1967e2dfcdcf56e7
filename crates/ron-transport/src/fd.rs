//! File descriptors: the process's limit, how many are open, and the session
//! cap that leaves a reserve of them to everything that is not a session
//! (the admin plane, relay dials, TLS files, `/proc` reads).
//!
//! Read from `/proc/self` (no unsafe code); where `/proc` is missing the
//! limit is unknown and the cap is `max_conns` alone.

/// The soft `RLIMIT_NOFILE`, from `/proc/self/limits`; `None` when unreadable
/// or unlimited.
pub fn nofile_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Descriptors open in this process now, from `/proc/self/fd` (the count
/// includes the one used to read the directory).
pub fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// The share of `RLIMIT_NOFILE` in use now (0.0..=1.0): `Some(1.0)` when
/// `/proc` cannot even be opened for want of a descriptor (EMFILE/ENFILE:
/// the process is out of them), `None` when it cannot be known otherwise.
pub fn nofile_share() -> Option<f64> {
    match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => {
            let open = dir.count();
            let limit = nofile_limit()?;
            Some(open as f64 / limit.max(1) as f64)
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => Some(1.0),
        Err(_) => None,
    }
}

/// What bounds the sessions served at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnCap {
    /// Sessions served at once: `min(max_conns, RLIMIT_NOFILE - fd_reserve)`.
    pub cap: usize,
    /// The configured `max_conns`.
    pub max_conns: usize,
    /// Descriptors kept out of the data plane's reach.
    pub fd_reserve: usize,
    /// The soft `RLIMIT_NOFILE` when it could be read.
    pub nofile: Option<usize>,
}

/// Why no session would fit under the descriptor limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("fd_reserve {fd_reserve} leaves no session under RLIMIT_NOFILE {nofile}")]
pub struct NoFdsLeft {
    /// The reserve asked for.
    pub fd_reserve: usize,
    /// The process's soft limit.
    pub nofile: usize,
}

impl ConnCap {
    /// The cap for this process's current descriptor limit.
    pub fn new(max_conns: usize, fd_reserve: usize) -> Result<ConnCap, NoFdsLeft> {
        ConnCap::with_limit(max_conns, fd_reserve, nofile_limit())
    }

    /// The cap under a given descriptor limit (`None`: unknown).
    pub fn with_limit(max_conns: usize, fd_reserve: usize, nofile: Option<usize>) -> Result<ConnCap, NoFdsLeft> {
        let cap = match nofile {
            Some(limit) if limit <= fd_reserve => return Err(NoFdsLeft { fd_reserve, nofile: limit }),
            Some(limit) => max_conns.min(limit - fd_reserve),
            None => max_conns,
        };
        Ok(ConnCap { cap, max_conns, fd_reserve, nofile })
    }

    /// True when the descriptor limit, not `max_conns`, sets the cap: a
    /// refused connection is counted as `reason="fd_limit"`.
    pub fn fd_bound(&self) -> bool {
        self.cap < self.max_conns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_to_the_rest_of_the_process() {
        let c = ConnCap::with_limit(1024, 64, Some(128)).unwrap();
        assert_eq!((c.cap, c.fd_bound()), (64, true));
        let c = ConnCap::with_limit(10, 64, Some(128)).unwrap();
        assert_eq!((c.cap, c.fd_bound()), (10, false));
        assert_eq!(ConnCap::with_limit(10, 64, None).unwrap().cap, 10);
        assert_eq!(ConnCap::with_limit(10, 128, Some(128)), Err(NoFdsLeft { fd_reserve: 128, nofile: 128 }));
    }

    #[test]
    fn proc_reads_this_process() {
        let (open, limit) = (open_fds().unwrap(), nofile_limit().unwrap());
        assert!(open > 0 && limit >= open);
    }
}
