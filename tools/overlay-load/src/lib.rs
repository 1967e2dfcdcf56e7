//! The load tools of svc-overlay, each a binary of this crate (`bench`,
//! `soak`, `loadgen`, `stress`; `cargo xtask` runs them), and what they share.
//! Not published, not a default member: `cargo test --workspace` builds them,
//! `cargo test -p overlay-core` does not.

/// The value after `name` on the command line (`--secs 3`).
pub fn arg(name: &str) -> Option<String> {
    args_all(name).into_iter().next()
}

/// Every value given after `name` on the command line (`--nats A --nats B`).
pub fn args_all(name: &str) -> Vec<String> {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2).filter(|w| w[0] == name).map(|w| w[1].clone()).collect()
}

/// The `p` quantile (0.0..=1.0) of `v`, which it sorts; 0 when empty.
pub fn percentile(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v.get(((v.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0)
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`).
pub fn proc_kib(pid: &str, field: &str) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).ok_or_else(|| format!("no {field}"))?;
    Ok(line.split_whitespace().nth(1).ok_or_else(|| format!("bad {field}"))?.parse()?)
}

/// A frame's bytes.
pub fn encode(frame: &oap_codec::Frame) -> bytes::Bytes {
    let mut out = bytes::BytesMut::with_capacity(frame.encoded_len());
    frame.encode_into(&mut out);
    out.freeze()
}

/// A TCP connection with the hello exchanged (`caps` ours).
pub async fn hello(
    addr: std::net::SocketAddr,
    caps: oap_codec::Caps,
) -> Result<tokio::net::TcpStream, Box<dyn std::error::Error + Send + Sync>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(&oap_codec::Hello::new(caps).encode()).await?;
    let mut theirs = [0u8; 9];
    s.read_exact(&mut theirs).await?;
    Ok(s)
}
