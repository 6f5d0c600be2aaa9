//! Caching: policy (what may be stored, for how long), key (what varies an entry),
//! status (what the response says about it) and storage (the L1/L2 tiers).

pub mod status;
pub mod storage;
