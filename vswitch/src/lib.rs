//! The switching pipeline of vswitchd, free of DPDK.
//!
//! A worker lcore hands this crate a burst of frames (anything that implements
//! [`Frame`]) received on one port; the crate decides, per frame, where it goes
//! ([`Action`]): out of one port, flooded within its bridge domain, or dropped
//! for a counted [`DropReason`]. The daemon (`src/` of the workspace) then moves
//! the mbufs accordingly. Keeping DPDK out of here means every rule of the
//! switch is unit-tested, benchmarked and fuzzed on plain byte buffers.
//!
//! Thread safety: [`Switch`] snapshots are immutable and shared by all workers;
//! the only tables written on the data path are the per-bridge [`MacTable`]s,
//! which are lock-free and safe for concurrent learners.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod flow;
pub mod mac_table;
pub mod offload;
pub mod port_security;
pub mod security;
pub mod stats;
pub mod switch;
pub mod types;

pub use flow::{FlowKey, ParseError, L3};
pub use mac_table::{Learn, MacTable};
pub use offload::Offload;
pub use port_security::{GuardConf, PortGuard, Prefix};
pub use stats::{Counter, CycleHistogram, DropReason, PortCounters};
pub use switch::{Action, BridgeConf, BridgeDomain, BuildError, Frame, Switch, SwitchBuilder};
pub use types::{BridgeId, MacAddr, PortId, MAX_BURST, MAX_PORTS};
