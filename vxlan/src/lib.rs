//! VXLAN (RFC 7348) for vswitchd's VPC tunnels: header views, decap
//! classification of uplink frames and encap header construction, over
//! plain byte slices so they build and test anywhere (DPDK-free).
//!
//! - [`decap`]: is this uplink frame VXLAN to our VTEP, and where is the
//!   inner frame?
//! - [`encap`]: the 50 outer bytes (Ethernet, IPv4, UDP, VXLAN) to prepend
//!   in an mbuf's headroom, and the entropy source port.
//! - [`tunnels`]: VNI -> bridge domain and remote VTEP -> tunnel port.
//! - [`host`]: the VTEP's host stack on the slow path (ARP, ICMP echo,
//!   next-hop resolution) on smoltcp.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod decap;
pub mod encap;
pub mod host;
pub mod tunnels;

/// VXLAN's IANA UDP port.
pub const VXLAN_PORT: u16 = 4789;
/// Outer Ethernet + IPv4 + UDP + VXLAN headers.
pub const OUTER_LEN: usize = ETH_LEN + IPV4_LEN + UDP_LEN + VXLAN_LEN;
/// The VXLAN header's I flag: the VNI is valid.
pub const FLAG_I: u8 = 0x08;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const UDP_LEN: usize = 8;
const VXLAN_LEN: usize = 8;
const ETH_P_IPV4: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;
