//! ACL, QoS and session tables: the per-container security stage of the
//! pipeline. DPDK-free, so it builds, tests and fuzzes anywhere.
//!
//! - [`rule`]: the model (security groups of prioritized allow/deny rules).
//! - [`classifier`]: tuple space search, the compiled form workers use.
//! - [`reference`]: the linear classifier the compiled one is checked against.
//! - [`lint`]: config-time checks (shadowed, ambiguous, duplicate rules).
// Unsafe only in `prefetch` (a hint instruction), which allows it.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod classifier;
pub mod hash;
pub mod lint;
pub mod policer;
pub mod prefetch;
pub mod reference;
pub mod rule;
pub mod session;

pub use classifier::Classifier;
pub use rule::{Action, Cidr, Family, PortRange, Proto, Rule, SecurityGroup, Tuple, Verdict};

#[cfg(test)]
mod proptests;
