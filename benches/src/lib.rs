//! vswitchd's benchmarks: the workload generator and the harnesses that
//! measure vswitchd side by side with its peers in the same run.
//!
//! - [`workload`]: pcap files of the benchmark traffic.
//! - [`harness_p`]: single-core capacity, net_pcap -> switch -> net_null.
//! - [`harness_v`]: DPDK containers on vhost-user, pps and latency.
//! - [`harness_k`]: kernel-stack containers, TAP NICs vs veth + Linux bridge.
//! - [`harness_d`]: density: plugging a container NIC (CNI ADD until it forwards).
//! - [`harness_c`]: convergence of a VPC across hosts through etcd.
//! - [`micro`]: the criterion micro-benchmarks as a table.
//! - [`report`]: the markdown and JSON tables.
//! - [`fuzz`]: the structure-aware frame fuzzer of the DPDK-free pipeline.
//!
//! Every harness pins the switch's forwarding core to CPU 1 and the traffic
//! apps to CPU 0, so on a 2-core machine they never share a core.
#![deny(missing_docs)]

pub mod contention;
pub mod fuzz;
pub mod harness_c;
pub mod harness_d;
pub mod harness_k;
pub mod harness_p;
pub mod harness_v;
pub mod machine;
pub mod micro;
pub mod pcap;
pub mod report;
pub mod rounds;
pub mod workload;

/// CPU of the switch's forwarding core (vswitchd worker, testpmd fwd
/// lcore, OVS PMD thread).
pub const SWITCH_CPU: u32 = 1;
/// CPU of the traffic apps and of the switches' control threads.
pub const APP_CPU: u32 = 0;
