//! Integration tests of the swarmgate server: one test binary (every extra
//! file would be another slow link), each test booting its own server on an
//! ephemeral port with its own SQLite file, or starting the real binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines,
    reason = "tests: a failed unwrap or index is the failure report"
)]

mod admin;
mod anthropic;
mod authz;
mod common;
mod flow;
mod gateway;
mod keys;
mod lockout;
mod mock;
mod monitoring;
mod oauth;
mod openai;
mod process;
mod quota;
mod tokens;
