//! vswitchd: a userspace DPDK vSwitch that gives every container its own NIC.
//!
//! The crate is the daemon around the DPDK-free `vswitch` pipeline: config,
//! EAL and ports (`dpdk`), port kinds and container plumbing (`ports`,
//! `netns`), vswitchd's own TAP port with offloads (`tap`), the worker lcores (`worker`, `datapath`) and which rx queues each polls (`rxq`), the VXLAN tunnel
//! endpoint (`vtep`), the VPCs' routers (`vpc`) and their way out (`snat`), counters (`stats`), the control socket (`control`)
//! and what its requests do (`admin`), and the CNI plugin (`cni`). See DESIGN.md for the data flow.
#![deny(missing_docs)]

pub mod admin;
pub mod capture;
pub mod cni;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod dpdk;
pub mod log;
pub mod metrics;
pub mod netns;
pub mod ports;
pub mod rtnl;
pub mod rxq;
pub mod security;
pub mod snat;
pub mod state;
pub mod stats;
pub mod table;
pub mod tap;
pub mod trace;
pub mod vpc;
pub mod vtep;
pub mod worker;
