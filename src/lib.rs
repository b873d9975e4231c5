//! # adclick
//!
//! The service around the per-partition pipeline of [`adclick_actors`]:
//! configuration, NATS wiring, the REST gateway, and the `serve`, `loadgen`,
//! `demo`, `status` and `archive` commands. Start with `ARCHITECTURE.md` at the repository root.

pub mod allocator;
pub mod archive;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod http;
pub mod loadgen;
pub mod logging;
pub mod nats;
pub mod rebuild;
pub mod reconcile;
pub mod serve;
pub mod status;
