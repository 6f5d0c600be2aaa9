//! Caching, in the order a request meets it: [`policy`] (may this be cached, for how long),
//! [`key`] (what varies an entry), [`storage`] (the L1/L2 tiers behind pingora-cache), [`surrogate`] (the keys an origin
//! tags its response with) and
//! [`status`] (what the response says about it). Purges are [`crate::purge`]'s.

pub mod freshness;
pub mod key;
pub mod policy;
pub mod status;
pub mod storage;
pub mod surrogate;
