//! The switching pipeline of vswitchd, free of DPDK.
//!
//! A worker lcore hands this crate a burst of frames (anything that implements
//! [`Frame`]) received on one port; [`Pipeline::decide`] gives each frame its
//! complete [`Fate`]: out of one local port, out of one tunnel port, flooded to
//! a set of ports each of which admitted it, or dropped for a counted
//! [`DropReason`], with the DSCP to write and the segments a policer let
//! through. The daemon (`src/` of the workspace) then moves the mbufs
//! accordingly. Keeping DPDK out of here means every rule of the switch is
//! unit-tested, benchmarked and fuzzed on plain byte buffers.
//!
//! Thread safety: [`Pipeline`] snapshots are immutable and shared by all
//! workers; the only tables written on the data path are the per-bridge
//! [`MacTable`]s and the session table, which are lock-free and safe for
//! concurrent writers, and the meters; each worker decides into its own
//! [`Decisions`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod checksum;
pub mod flow;
pub mod flow_cache;
pub mod mac_table;
pub mod offload;
pub mod overlay;
pub mod pipeline;
pub mod port_security;
pub mod router;
pub mod security;
pub mod stats;
pub mod switch;
pub mod trace;
pub mod types;

#[cfg(test)]
mod test_support;

pub use flow::{FlowKey, ParseError, L3};
pub use flow_cache::{CacheStats, FlowCache};
pub use mac_table::{Learn, MacTable};
pub use offload::Offload;
pub use overlay::{Arrival, Overlay};
pub use pipeline::{Decisions, Fate, Now, Pipeline};
pub use port_security::{GuardConf, PortGuard, Prefix};
pub use router::{Edit, Router, RouterBuilder};
pub use stats::{CacheCounters, Counter, CycleHistogram, DropReason, PortCounters};
pub use switch::{Action, BridgeConf, BridgeDomain, BuildError, Frame, Switch, SwitchBuilder};
pub use trace::{Outcome, Trace};
pub use types::{BridgeId, MacAddr, PortId, MAX_BURST, MAX_PORTS};
