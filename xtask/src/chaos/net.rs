//! The chaos harness's network: a namespace per node, each with a veth into
//! a bridge in a hub namespace, on 10.77.0.0/16, an address range that
//! exists only inside the namespaces made here (nothing is routed to or
//! from the host's). Faults are nftables rules and tc qdiscs inside them.
//! Everything is removed when the [`Net`] is dropped, and namespaces a
//! crashed run left are removed before a new one starts.

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::node::Failure;

/// Every namespace the harness makes starts with this.
const PREFIX: &str = "ovlchaos-";
/// The hub's address on its bridge: the harness and its load client.
pub(crate) const CLIENT_IP: &str = "10.77.255.254";
/// Nodes per /24 of the range (node i is 10.77.(i / 200).(i % 200 + 1)).
const PER_SUBNET: usize = 200;

pub(crate) struct Net {
    tag: String,
    n: usize,
    /// This value made the namespaces and removes them when dropped.
    owner: bool,
}

impl Net {
    /// Makes the hub and `n` node namespaces. Exit code 77 when namespaces
    /// cannot be made here (not root, no `ip`, a sandbox without them).
    pub(crate) fn create(n: usize) -> Result<Net, Failure> {
        remove_stale();
        let net = Net { tag: std::process::id().to_string(), n, owner: true };
        let hub = net.hub();
        if let Err(e) = run(&["ip", "netns", "add", &hub]) {
            return Err(Failure::with_code(
                format!("network namespaces are not available here (chaos needs root and `ip netns`): {}", e.what),
                77,
            ));
        }
        run(&["ip", "-n", &hub, "link", "set", "lo", "up"])?;
        // A fixed MAC: a bridge otherwise takes its lowest port's, which
        // changes as ports are added, and ARP caches go stale.
        run(&["ip", "-n", &hub, "link", "add", "br0", "address", "02:00:00:00:4d:01", "type", "bridge"])?;
        run(&["ip", "-n", &hub, "addr", "add", &format!("{CLIENT_IP}/16"), "dev", "br0"])?;
        run(&["ip", "-n", &hub, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let (ns, veth) = (net.ns(i), veth(i));
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            run(&["ip", "-n", &hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            run(&["ip", "-n", &hub, "link", "set", &veth, "master", "br0", "up"])?;
            run(&["ip", "-n", &ns, "addr", "add", &format!("{}/16", ip(i)), "dev", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            nft(&ns, "table inet chaos {}\n")?;
        }
        Ok(net)
    }

    /// The network `create` made under `tag`, from a process inside it.
    pub(crate) fn attach(tag: &str, n: usize) -> Net {
        Net { tag: tag.into(), n, owner: false }
    }

    /// What [`Net::attach`] takes.
    pub(crate) fn tag(&self) -> &str {
        &self.tag
    }

    /// The hub namespace (the harness runs its load client and its checks
    /// from there).
    pub(crate) fn hub(&self) -> String {
        format!("{PREFIX}{}-hub", self.tag)
    }

    /// Node `i`'s namespace.
    pub(crate) fn ns(&self, i: usize) -> String {
        format!("{PREFIX}{}-{i}", self.tag)
    }

    /// Splits the nodes in two: each drops packets from and to the other
    /// side (the harness's own address passes).
    pub(crate) fn partition(&self, side: impl Fn(usize) -> bool) -> Result<(), Failure> {
        for i in 0..self.n {
            let far: Vec<String> = (0..self.n).filter(|&j| side(j) != side(i)).map(ip).collect();
            let set = far.join(", ");
            self.rules(i, &format!("ip saddr {{ {set} }} drop;"), &format!("ip daddr {{ {set} }} drop;"))?;
        }
        Ok(())
    }

    /// Black-holes node `i`: every packet from or to another node vanishes
    /// (no reset: only keepalive can tell), the harness's own pass.
    pub(crate) fn black_hole(&self, i: usize) -> Result<(), Failure> {
        self.rules(i, &format!("ip saddr != {CLIENT_IP} drop;"), &format!("ip daddr != {CLIENT_IP} drop;"))
    }

    /// Removes every drop rule.
    pub(crate) fn heal(&self) -> Result<(), Failure> {
        for i in 0..self.n {
            nft(&self.ns(i), "flush table inet chaos\n")?;
        }
        Ok(())
    }

    /// Rate-limits node `i`'s link both ways (tc tbf: netem is not in every
    /// kernel).
    pub(crate) fn slow(&self, i: usize, rate: &str) -> Result<(), Failure> {
        let tbf = ["root", "tbf", "rate", rate, "burst", "16kb", "latency", "200ms"];
        let (hub, veth, ns) = (self.hub(), veth(i), self.ns(i));
        let hub_side: Vec<&str> =
            ["ip", "netns", "exec", &hub, "tc", "qdisc", "add", "dev", &veth].into_iter().chain(tbf).collect();
        run(&hub_side)?;
        let node_side: Vec<&str> =
            ["ip", "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "eth0"].into_iter().chain(tbf).collect();
        run(&node_side)
    }

    /// Lifts node `i`'s rate limit.
    pub(crate) fn fast(&self, i: usize) -> Result<(), Failure> {
        run(&["ip", "netns", "exec", &self.hub(), "tc", "qdisc", "del", "dev", &veth(i), "root"])?;
        run(&["ip", "netns", "exec", &self.ns(i), "tc", "qdisc", "del", "dev", "eth0", "root"])
    }

    /// Replaces node `i`'s drop rules: `input` and `output` rules after
    /// loopback is let through.
    fn rules(&self, i: usize, input: &str, output: &str) -> Result<(), Failure> {
        let script = format!(
            "flush table inet chaos\ntable inet chaos {{\n\
             chain in {{ type filter hook input priority 0; policy accept; iifname \"lo\" accept; {input} }}\n\
             chain out {{ type filter hook output priority 0; policy accept; oifname \"lo\" accept; {output} }}\n}}\n"
        );
        nft(&self.ns(i), &script)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        for i in 0..self.n {
            let _ = run(&["ip", "netns", "del", &self.ns(i)]);
        }
        let _ = run(&["ip", "netns", "del", &self.hub()]);
    }
}

/// Node `i`'s address.
pub(crate) fn ip(i: usize) -> String {
    format!("10.77.{}.{}", i / PER_SUBNET, i % PER_SUBNET + 1)
}

/// The hub's end of node `i`'s veth.
fn veth(i: usize) -> String {
    format!("vh{i}")
}

/// Removes the namespaces of runs that did not clean up (killed).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(name) = line.split_whitespace().next().filter(|n| n.starts_with(PREFIX)) {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

/// Runs an nftables script inside namespace `ns`.
fn nft(ns: &str, script: &str) -> Result<(), Failure> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new(format!("nft in {ns}: {e} (apt-get install nftables)")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(|e| Failure::new(format!("nft in {ns}: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| Failure::new(format!("nft in {ns}: {e}")))?;
    if !out.status.success() {
        return Err(Failure::new(format!("nft in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

fn run(args: &[&str]) -> Result<(), Failure> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| Failure::new(format!("{}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(Failure::new(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}
