//! Logging and metrics.
pub mod metrics;
