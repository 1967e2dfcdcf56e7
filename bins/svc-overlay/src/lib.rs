//! The svc-overlay program as testable pieces: config layering and the
//! client subcommands. `main.rs` only wires them to the process.

pub mod cli;
pub mod config;
pub mod ping;
