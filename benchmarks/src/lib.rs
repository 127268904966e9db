//! EventCore's load generator, its raw-SQL baseline and the workloads both
//! run, shared with the criterion micro-benchmarks in `benches/`.
//!
//! - [`workload`]: the commands each named workload executes and the data it
//!   seeds;
//! - [`cpu`]: CPU time of this process and of the PostgreSQL backends
//!   serving it, for figures a noisy machine does not move;
//! - [`counting`]: a store decorator counting what the store answered
//!   (version conflicts, serialization failures), which the executor's
//!   result does not say;
//! - [`report`]: latency histograms and the figures a run prints;
//! - [`run`]: drives a workload for a fixed time from N concurrent tasks;
//! - [`raw`]: the same logical 2-stream transfer written by hand in sqlx, the
//!   baseline the executor is compared with in the same run.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod counting;
pub mod cpu;
pub mod raw;
pub mod report;
pub mod run;
pub mod workload;
