//! Logs and metrics: one place that decides how sidecache reports what it does.
pub mod events;
pub mod labels;
pub mod logging;
pub mod metrics;
pub mod recent;
pub mod window;
