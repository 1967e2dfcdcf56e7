//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use overlay_core::PqMode;
use overlay_core::client::{ConnectOptions, TlsOptions};

/// svc-overlay: the RON session & gossip plane node.
///
/// With no command it serves on the built-in defaults, overlaid by
/// overlay.toml (or --config), RON_OVERLAY_{SECTION}__{KEY} variables and
/// these flags, in that order.
#[derive(Debug, Parser)]
#[command(name = "svc-overlay", version, about, long_about)]
pub struct Cli {
    /// Settings for serving (ignored by client commands).
    #[command(flatten)]
    pub serve: ServeArgs,
    /// A client command; none serves.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags that override the config of a serving node.
#[derive(Debug, Default, Clone, Args)]
pub struct ServeArgs {
    /// Config file (TOML); default: overlay.toml in the working directory, if present.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data-plane address (transport.addr).
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<SocketAddr>,
    /// Admin HTTP address (admin.addr).
    #[arg(long, value_name = "ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// The `service` metric label (transport.name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Concurrent sessions (transport.max_conns).
    #[arg(long, value_name = "N")]
    pub max_conns: Option<u32>,
    /// Seeds to join the overlay through (peers), comma-separated: IP:PORT
    /// or dns:NAME:PORT (every address of the name).
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',')]
    pub peers: Option<Vec<overlay_core::PeerAddr>>,
    /// Any config key, e.g. --set session.tx_queue=256 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the effective config with each value's source as JSON, and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Client commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Handshake, send DATA frames, verify each echo and print round-trip times.
    Ping(PingArgs),
    /// Publish a message to a topic and print each receipt.
    Pub(PubArgs),
    /// Subscribe to a pattern and print messages as they arrive.
    Sub(SubArgs),
    /// Mint or inspect capability tokens (macaroons).
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `svc-overlay token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new token signed with the root key.
    Mint(MintArgs),
    /// Print a token's identifier and caveats (does not verify it).
    Inspect {
        /// The token (base64url).
        token: String,
    },
}

/// `svc-overlay token mint`.
#[derive(Debug, Clone, Args)]
pub struct MintArgs {
    /// File holding the root key (the node's auth.root_key_file).
    #[arg(long, value_name = "FILE")]
    pub root_key_file: PathBuf,
    /// Allowed operation: publish, subscribe or relay (repeat to narrow further).
    #[arg(long, value_name = "OP")]
    pub op: Vec<String>,
    /// Allowed topic pattern, e.g. 'dht.>' (repeat to narrow further).
    #[arg(long, value_name = "PATTERN")]
    pub topic: Vec<String>,
    /// Lifetime: 90s, 30m, 1h, 7d (or plain seconds); none means no expiry.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// Identifier recorded in the token (shown in logs).
    #[arg(long, default_value = "svc-overlay")]
    pub id: String,
}

/// `svc-overlay pub`.
#[derive(Debug, Clone, Args)]
pub struct PubArgs {
    /// Topic to publish to (no wildcards), e.g. dht.put.
    pub topic: String,
    /// The message (sent as its UTF-8 bytes).
    pub message: String,
    /// How many times to publish it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub count: u32,
    /// Where the node is and how to reach it.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `svc-overlay sub`.
#[derive(Debug, Clone, Args)]
pub struct SubArgs {
    /// Pattern to subscribe to: `*` matches one token, a trailing `>` one or more.
    pub pattern: String,
    /// Exit after this many messages (default: run until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
    /// Where the node is and how to reach it.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `svc-overlay ping`.
#[derive(Debug, Clone, Args)]
pub struct PingArgs {
    /// DATA frames to send.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,
    /// Payload bytes per frame (1 to 1048575).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_048_575))]
    pub size: u32,
    /// Pause between pings, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub interval_ms: u64,
    /// Where the node is and how to reach it.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// How a client command reaches a node.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Node address.
    #[arg(long, default_value_t = overlay_core::DEFAULT_ADDR)]
    pub addr: SocketAddr,
    /// Capability token to present first (AUTH). A token on the command
    /// line is visible to other users in /proc: prefer --token-file.
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// File holding the capability token to present first (AUTH).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Connect with TLS 1.3, trusting the certificates in --ca.
    #[arg(long, requires = "ca")]
    pub tls: bool,
    /// PEM file of certificates to trust (with --tls).
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub ca: Option<PathBuf>,
    /// Name the node's certificate must carry (default: the address's IP).
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub tls_name: Option<String>,
}

/// Why the connect flags could not be turned into options.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// The `--ca` file is missing or holds no certificate.
    #[error("--ca: {0}")]
    Tls(#[from] overlay_core::TlsError),
    /// The `--token-file` holds nothing but whitespace.
    #[error("--token-file {0}: the file is empty")]
    EmptyToken(PathBuf),
    /// The `--token-file` could not be read.
    #[error("--token-file {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ConnectArgs {
    /// The client's options: TLS with `--ca` (the hybrid group preferred),
    /// the token from `--token` or `--token-file`.
    pub fn options(&self) -> Result<ConnectOptions, OptionsError> {
        let mut opts = ConnectOptions::new(self.addr);
        if let (Some(ca), true) = (&self.ca, self.tls) {
            let tls = TlsOptions::from_ca(ca, PqMode::Prefer)?;
            opts = opts.tls(match &self.tls_name {
                Some(name) => tls.name(name.clone()),
                None => tls,
            });
        }
        if let Some(token) = &self.token {
            opts = opts.token(token.clone());
        }
        if let Some(path) = &self.token_file {
            let token = std::fs::read_to_string(path)
                .map_err(|source| OptionsError::TokenFile { path: path.clone(), source })?;
            if token.trim().is_empty() {
                return Err(OptionsError::EmptyToken(path.clone()));
            }
            opts = opts.token(token.trim().to_string());
        }
        Ok(opts)
    }
}
