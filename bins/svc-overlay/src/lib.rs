//! The svc-overlay program as testable pieces: config layering and the
//! client subcommands (`ping`, `pub`, `sub`). `main.rs` only wires them to the process.

pub mod cli;
pub mod config;
pub mod ping;
pub mod pubsub;
pub mod token;
