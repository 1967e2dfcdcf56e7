//! svc-overlay: parse the CLI, load config, install tracing, start the node,
//! wait for a signal, drain, exit. Exit codes: 0 clean, 1 runtime failure,
//! 2 bad config or usage, 130 second signal during drain.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use overlay_core::Overlay;
use svc_overlay::cli::{Cli, Command, TokenCommand};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// jemalloc, with background threads that give freed pages back to the OS
/// about a second after they were freed (`.cargo/config.toml`): the node
/// returns to its baseline RSS soon after a load spike, where the system
/// allocator kept what the spike took (docs/PERFORMANCE.md, "Memory after a
/// spike"). Embedders choose their own allocator.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("svc-overlay: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Some(Command::Ping(args)) => runtime.block_on(async {
            match svc_overlay::ping::run(&args, |line| emit(line)).await {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("svc-overlay ping: {e}");
                    ExitCode::from(1)
                }
            }
        }),
        Some(Command::Pub(args)) => client(&runtime, "pub", svc_overlay::pubsub::publish(&args, |l| emit(l))),
        Some(Command::Sub(args)) => client(&runtime, "sub", svc_overlay::pubsub::subscribe(&args, |l| emit(l))),
        Some(Command::Token(TokenCommand::Mint(args))) => match svc_overlay::token::mint_token(&args) {
            Ok(token) => {
                emit(token);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("svc-overlay token mint: {e}");
                ExitCode::from(2)
            }
        },
        Some(Command::Token(TokenCommand::Inspect { token })) => match svc_overlay::token::inspect(&token) {
            Ok(lines) => {
                lines.iter().for_each(emit);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("svc-overlay token inspect: {e}");
                ExitCode::from(1)
            }
        },
        None => serve(&cli, &runtime),
    }
}

/// Writes one line to stdout. A reader that went away (`| head -1`) ends
/// the command quietly with exit code 0, as it asked for no more; any
/// other failure to write is one line on stderr and exit code 1.
fn emit(line: impl std::fmt::Display) {
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("svc-overlay: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Runs a client command; its error is one line on stderr and exit code 1.
fn client<E: std::fmt::Display>(
    runtime: &tokio::runtime::Runtime,
    name: &str,
    run: impl std::future::Future<Output = Result<(), E>>,
) -> ExitCode {
    match runtime.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("svc-overlay {name}: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve(cli: &Cli, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let config = match svc_overlay::config::load(&cli.serve) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("svc-overlay: config: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.serve.print_config {
        emit(format!("{:#}", config.configz()));
        return ExitCode::SUCCESS;
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init();

    runtime.block_on(async {
        // Handlers first, so a signal during start-up still drains.
        let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("svc-overlay: cannot install signal handlers: {e}");
                return ExitCode::from(1);
            }
        };
        let node = match Overlay::from_valid(config)
            .version(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
            .start()
            .await
        {
            Ok(node) => node,
            Err(e) if e.is_config() => {
                // A refused key or TLS file is bad configuration, like a bad
                // value: one line naming it, exit 2.
                eprintln!("svc-overlay: {e}");
                return ExitCode::from(2);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("svc-overlay: {e}");
                return ExitCode::from(1);
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
        }
        tokio::select! {
            () = node.shutdown() => ExitCode::SUCCESS,
            _ = term.recv() => second_signal(),
            _ = int.recv() => second_signal(),
        }
    })
}

fn second_signal() -> ExitCode {
    tracing::warn!("second signal, exiting at once");
    ExitCode::from(130)
}
