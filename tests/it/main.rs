//! The integration tests, one module per behaviour area, built as one test binary: one
//! link instead of one per file, and `support` compiled once (see docs/performance.md).
//! `cargo test --test it caching::` runs one area; tests/l1_footprint.rs stays a binary of its
//! own (it installs a counting global allocator for its whole process).

mod support;

mod bench;
mod caching;
mod cli_admin;
mod client;
mod config_files;
mod demo_backend;
mod deploy_artifacts;
mod dropin;
mod edge_forwarding;
mod edge_hits;
mod h2c;
mod hostile;
mod key_integrity;
mod l1_index;
mod l2_cluster;
mod l2_fill_lock;
mod l2_sentinel;
mod module_layers;
mod observability;
mod proxy;
mod purge;
mod purge_bookkeeping;
mod purge_promises;
mod purge_races;
mod reload;
mod response_head;
mod rfc9111;
mod slow_clients;
mod soft_purge;
mod stampede;
mod status_page;
mod storage_contract;
mod surrogate_keys;
mod tiers;
mod torture;
mod warm;
mod websocket;
