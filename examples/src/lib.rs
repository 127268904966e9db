//! Runnable EventCore examples.
//!
//! [`banking`] is a small bank: accounts, deposits, withdrawals, transfers
//! between two accounts in one atomic append, and account freezes that a
//! transfer reads without writing. The `bank-demo` binary runs it under
//! concurrent load and checks that money is conserved.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

/// The README's code blocks, run as doctests so that they keep compiling.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

pub mod balances;
pub mod banking;
pub mod otel;
pub mod web;
