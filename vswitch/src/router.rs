//! The distributed router of a VPC: every host routes between the
//! subnets (bridges) of a VPC itself, with one router MAC per VPC, as
//! OVN's distributed logical router and cloud VPCs do; nothing is
//! hairpinned through a central gateway.
//!
//! A VPC groups bridges; each has a subnet and a gateway address in it.
//! For a frame from a port of a VPC bridge, after the bridge learned its
//! source ([`crate::Switch::forward`]) and before the security groups
//! judge it ([`crate::security`]), [`Router::stage`]:
//!
//! - answers an ARP request for the subnet's gateway (with the router
//!   MAC) or for a known endpoint of the same subnet (with its MAC)
//!   itself, back out of the ingress port: ARP for what the VPC knows is
//!   never flooded, across hosts least of all (from a tunnel it is not
//!   answered: the sender's own host answers its containers);
//! - answers an ICMP echo request to a gateway address;
//! - routes IPv4 to the router MAC: the destination must be an endpoint
//!   of the VPC ([`RouterBuilder::endpoint`]: local NICs from their
//!   configured addresses, remote ones from the stations an agent
//!   applies); the frame leaves by the endpoint's port (a NIC, or the
//!   tunnel port of its VTEP in the destination subnet's bridge, so it is
//!   encapsulated with that subnet's VNI), with the router MAC as source,
//!   the endpoint's MAC as destination and its TTL decremented (header
//!   checksum updated, RFC 1624). The receiving host delivers it in the
//!   destination bridge; the reply is routed by the replier's host:
//!   routing is asymmetric, each direction by its sender's host.
//!
//! An address outside every subnet of the VPC goes to the VPC's way out
//! ([`RouterBuilder::egress`], the endpoint of its SNAT namespace), if it
//! has one, and only from a NIC of this host.
//!
//! What is refused is dropped and counted on the ingress port: an
//! address no endpoint has (`no_route`: there is no ARP resolution
//! towards endpoints, every endpoint is known from config or etcd), a
//! TTL that would reach 0 (`ttl_exceeded`), anything but IPv4 to the
//! router MAC, and a frame from a tunnel routed back into a tunnel
//! (`split_horizon`: a host routes only what its own containers send).
//! A dropped TTL and an address no endpoint has are answered, as a
//! router must (RFC 1812 4.3.2), with an ICMP error from the sender's
//! gateway (time exceeded; host unreachable inside a subnet, network
//! unreachable outside them): built in place of the offending frame
//! ([`Edit::IcmpError`]), at most [`ICMP_ERRORS_PER_SEC`] per VPC, never
//! about an ICMP error, a later fragment, a superframe or a tunnel's
//! frame. The frame's edit ([`Edit`]) is applied by the worker when it sends it:
//! the decision stays DPDK-free and testable here.
//!
//! IPv6 follows the same rules (neighbour solicitations for what the VPC
//! knows answered, routing with the hop limit, ICMPv6 errors): see
//! [`ipv6`].
//!
//! Bridges of a VPC share one session zone ([`crate::switch`]): a
//! routed reply finds the session its request opened in another subnet.
//! VPCs are apart by construction: a VPC's endpoint table holds only its
//! own addresses, so overlapping ranges in two VPCs never meet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use rustc_hash::FxHashMap;
use vxlan::host::same_subnet;

use crate::flow::{ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_ICMP};
use crate::stats::{DropReason, PortCounters};
use crate::switch::{Action, Frame};
use crate::types::{BridgeId, MacAddr, PortId};

mod ipv6;
pub use ipv6::{is_link_local, same_prefix6, Subnet6};

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
/// Ethernet + an ARP body for IPv4 over Ethernet.
const ARP_LEN: usize = 42;

/// What the switch writes into a frame it routes or answers, before the
/// frame leaves (by [`Edit::apply`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Edit {
    /// Sent as it came.
    #[default]
    None,
    /// Routed: new MACs, TTL decremented.
    Route {
        /// The router MAC.
        src: MacAddr,
        /// The destination endpoint's MAC.
        dst: MacAddr,
    },
    /// Routed IPv6: new MACs, hop limit decremented.
    Route6 {
        /// The router MAC.
        src: MacAddr,
        /// The destination endpoint's MAC.
        dst: MacAddr,
    },
    /// An ARP request turned into its reply: `mac` has the address asked for.
    ArpReply {
        /// The answer.
        mac: MacAddr,
    },
    /// A neighbour solicitation turned into its advertisement: `mac` has
    /// the address asked for (the frame may grow by 8 bytes).
    NeighbourAdvert {
        /// The answer.
        mac: MacAddr,
        /// The address is a gateway's: the router flag is set.
        router: bool,
    },
    /// An ICMP echo request to a gateway turned into its reply.
    EchoReply {
        /// The router MAC, the reply's source.
        mac: MacAddr,
    },
    /// An ICMPv6 echo request to a gateway turned into its reply.
    Echo6Reply {
        /// The router MAC, the reply's source.
        mac: MacAddr,
    },
    /// An IPv4 frame the router cannot deliver turned into the ICMP error
    /// that tells its sender why (RFC 1812 4.3.2): it quotes the
    /// datagram's header and first 8 bytes, so the frame may grow (by up
    /// to 28 bytes) or shrink.
    IcmpError {
        /// The router MAC, the error's source.
        mac: MacAddr,
        /// The gateway of the sender's subnet, the error's source address.
        from: Ipv4Addr,
        /// ICMP type and code.
        kind: IcmpError,
    },
    /// The same for IPv6 (RFC 4443): it quotes the packet as far as the
    /// error stays within 1280 bytes, so the frame grows by up to 48.
    Icmp6Error {
        /// The router MAC, the error's source.
        mac: MacAddr,
        /// The IPv6 gateway of the sender's subnet, the error's source.
        from: Ipv6Addr,
        /// The error.
        kind: IcmpError,
    },
}

/// The ICMP errors a router sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Time exceeded in transit (type 11, code 0).
    TtlExceeded,
    /// Destination network unreachable (type 3, code 0): outside every
    /// subnet, and the VPC has no way out.
    NetUnreachable,
    /// Destination host unreachable (type 3, code 1): in a subnet, but no
    /// endpoint has the address.
    HostUnreachable,
}

impl IcmpError {
    fn type_code(self) -> [u8; 2] {
        match self {
            IcmpError::TtlExceeded => [11, 0],
            IcmpError::NetUnreachable => [3, 0],
            IcmpError::HostUnreachable => [3, 1],
        }
    }
}

/// The most ICMP errors one VPC's router sends per second on one host
/// (each worker's share counts against it): a container that sends
/// datagrams nobody can take makes the router answer, never flood.
/// Linux limits per destination (`icmp_ratelimit`) and in all
/// (`icmp_msgs_per_sec`, 1000); one bound per VPC keeps the state to two
/// words in the router.
pub const ICMP_ERRORS_PER_SEC: u32 = 100;

/// How many bytes an edit may add to a frame (an ICMPv6 error about a
/// short one).
pub const EDIT_GROWTH: usize = ipv6::ERROR_GROWTH;

/// Bytes of the offending datagram past its header that an error quotes
/// (RFC 792: the header and the first 64 bits of the data).
const ICMP_QUOTE: usize = 8;

impl Edit {
    /// Whether the edit changes the frame's length (the worker must then
    /// give [`Edit::apply`] a one-segment frame with room for it).
    pub fn resizes(self) -> bool {
        matches!(
            self,
            Edit::IcmpError { .. } | Edit::Icmp6Error { .. } | Edit::NeighbourAdvert { .. }
        )
    }

    /// Rewrites the frame in `buf` (the one [`Router::stage`] decided this
    /// edit for, whose headers it checked) in place: its first `len`
    /// bytes are the frame, and `buf` must hold [`EDIT_GROWTH`] bytes
    /// more (an ICMPv6 error grows a short frame by up to that). The new
    /// length.
    pub fn apply(self, buf: &mut [u8], len: usize) -> usize {
        match self {
            Edit::IcmpError { mac, from, kind } => return icmp_error(buf, len, mac, from, kind),
            Edit::Icmp6Error { mac, from, kind } => return ipv6::error(buf, len, mac, from, kind),
            Edit::NeighbourAdvert { mac, router } => return ipv6::advertise(buf, mac, router),
            _ => {}
        }
        let frame = &mut buf[..len];
        match self {
            Edit::None
            | Edit::IcmpError { .. }
            | Edit::Icmp6Error { .. }
            | Edit::NeighbourAdvert { .. } => {}
            Edit::Route6 { src, dst } => ipv6::apply_route(frame, src, dst),
            Edit::Echo6Reply { mac } => ipv6::echo_reply(frame, mac),
            Edit::Route { src, dst } => {
                frame[0..6].copy_from_slice(&dst.0);
                frame[6..12].copy_from_slice(&src.0);
                // TTL and protocol share a word of the header checksum.
                let old = u16::from_be_bytes([frame[22], frame[23]]);
                frame[22] -= 1;
                let new = u16::from_be_bytes([frame[22], frame[23]]);
                let hc = u16::from_be_bytes([frame[24], frame[25]]);
                frame[24..26]
                    .copy_from_slice(&crate::checksum::replace16(hc, old, new).to_be_bytes());
            }
            Edit::ArpReply { mac } => {
                let (asker_mac, asker_ip, asked_ip) = (
                    MacAddr::from_slice(&frame[22..28]),
                    <[u8; 4]>::try_from(&frame[28..32]).expect("4 bytes"),
                    <[u8; 4]>::try_from(&frame[38..42]).expect("4 bytes"),
                );
                frame[0..6].copy_from_slice(&asker_mac.0);
                frame[6..12].copy_from_slice(&mac.0);
                frame[20..22].copy_from_slice(&ARP_REPLY.to_be_bytes());
                frame[22..28].copy_from_slice(&mac.0);
                frame[28..32].copy_from_slice(&asked_ip);
                frame[32..38].copy_from_slice(&asker_mac.0);
                frame[38..42].copy_from_slice(&asker_ip);
            }
            Edit::EchoReply { mac } => {
                frame.copy_within(6..12, 0);
                frame[6..12].copy_from_slice(&mac.0);
                // Swapping the addresses leaves the header's sum as it was.
                let src: [u8; 4] = frame[26..30].try_into().expect("4 bytes");
                frame.copy_within(30..34, 26);
                frame[30..34].copy_from_slice(&src);
                let icmp = 14 + usize::from(frame[14] & 0x0f) * 4;
                let old = u16::from_be_bytes([frame[icmp], frame[icmp + 1]]);
                frame[icmp] = ICMP_ECHO_REPLY;
                let new = u16::from_be_bytes([frame[icmp], frame[icmp + 1]]);
                let c = u16::from_be_bytes([frame[icmp + 2], frame[icmp + 3]]);
                frame[icmp + 2..icmp + 4]
                    .copy_from_slice(&crate::checksum::replace16(c, old, new).to_be_bytes());
            }
        }
        len
    }
}

/// How much of the datagram in `frame` an ICMP error about it quotes: its
/// header and 8 bytes of what follows, no more than it has.
fn icmp_quote_len(frame: &[u8]) -> usize {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    (ihl + ICMP_QUOTE).min(total).min(frame.len() - 14)
}

/// Writes into `buf` (holding the offending frame's `len` bytes) the ICMP
/// error `kind` about it, from `from` and `mac` to its sender; the
/// error's length.
fn icmp_error(buf: &mut [u8], len: usize, mac: MacAddr, from: Ipv4Addr, kind: IcmpError) -> usize {
    use etherparse::checksum::u64_16bit_word as sum16;
    let quote = icmp_quote_len(&buf[..len]);
    let n = 14 + 28 + quote;
    // The quote moves behind the new IP and ICMP headers.
    buf.copy_within(14..14 + quote, 42);
    let sender_mac: [u8; 6] = buf[6..12].try_into().expect("6 bytes");
    let sender_ip: [u8; 4] = buf[42 + 12..42 + 16].try_into().expect("4 bytes");
    buf[0..6].copy_from_slice(&sender_mac);
    buf[6..12].copy_from_slice(&mac.0);
    buf[12..14].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
    let ip = &mut buf[14..34];
    // Version 4, IHL 5; precedence "internetwork control" as Linux sets
    // on ICMP errors; no fragmentation; TTL 64.
    ip[0..2].copy_from_slice(&[0x45, 0xc0]);
    ip[2..4].copy_from_slice(&((n - 14) as u16).to_be_bytes());
    ip[4..10].copy_from_slice(&[0, 0, 0, 0, 64, IPPROTO_ICMP]);
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&from.octets());
    ip[16..20].copy_from_slice(&sender_ip);
    let sum = sum16::ones_complement(sum16::add_slice(0, ip));
    ip[10..12].copy_from_slice(&sum.to_ne_bytes());
    let icmp = &mut buf[34..n];
    icmp[0..2].copy_from_slice(&kind.type_code());
    icmp[2..8].copy_from_slice(&[0; 6]);
    let sum = sum16::ones_complement(sum16::add_slice(0, icmp));
    icmp[2..4].copy_from_slice(&sum.to_ne_bytes());
    n
}

/// A subnet of a VPC: a bridge and its gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The bridge that carries it.
    pub bridge: BridgeId,
    /// The gateway address every host answers.
    pub gateway: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// Whether `ip` is in the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        same_subnet(ip, self.gateway, self.prefix)
    }

    /// Whether the two share an address: the shorter prefix holds both.
    fn overlaps(&self, other: &Subnet) -> bool {
        same_subnet(self.gateway, other.gateway, self.prefix.min(other.prefix))
    }
}

/// Where an endpoint of a VPC is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Its MAC.
    pub mac: MacAddr,
    /// The port it is behind: its NIC, or the tunnel port of its VTEP in
    /// its subnet's bridge.
    pub port: PortId,
    /// Its subnet's bridge.
    pub bridge: BridgeId,
}

/// One VPC's router.
pub struct Vpc {
    /// Its name.
    pub name: String,
    /// The router MAC, the same on every host.
    pub mac: MacAddr,
    subnets: Vec<Subnet>,
    /// IPv4 address (host order) -> endpoint. Built on the control
    /// thread, read-only in the snapshot; FxHash: one multiply for a u32
    /// key, and the keys are addresses the operator and the agent
    /// validated, not a hash-flooding surface on the data path.
    endpoints: FxHashMap<u32, Endpoint>,
    /// The IPv6 prefixes of some of its bridges.
    subnets6: Vec<Subnet6>,
    /// IPv6 address -> endpoint, as `endpoints`.
    endpoints6: FxHashMap<u128, Endpoint>,
    /// Where addresses outside every subnet go (the VPC's SNAT), if
    /// anywhere.
    egress: Option<Endpoint>,
    /// The second the ICMP errors counted in `icmp_sent` were sent in
    /// (see [`ICMP_ERRORS_PER_SEC`]); shared by the workers, touched only
    /// when an error is due.
    icmp_second: AtomicU32,
    icmp_sent: AtomicU32,
}

impl Vpc {
    /// The subnets.
    pub fn subnets(&self) -> &[Subnet] {
        &self.subnets
    }

    /// The endpoint with address `ip`.
    pub fn endpoint(&self, ip: Ipv4Addr) -> Option<Endpoint> {
        self.endpoints.get(&u32::from(ip)).copied()
    }

    /// The IPv6 subnets.
    pub fn subnets6(&self) -> &[Subnet6] {
        &self.subnets6
    }

    /// The endpoint with IPv6 address `ip`.
    pub fn endpoint6(&self, ip: Ipv6Addr) -> Option<Endpoint> {
        self.endpoints6.get(&u128::from(ip)).copied()
    }

    /// Its IPv6 endpoints, by address.
    pub fn endpoints6(&self) -> impl Iterator<Item = (Ipv6Addr, Endpoint)> + '_ {
        self.endpoints6
            .iter()
            .map(|(&ip, &e)| (Ipv6Addr::from(ip), e))
    }

    /// The endpoint that takes what is addressed outside the VPC.
    pub fn egress(&self) -> Option<Endpoint> {
        self.egress
    }

    /// Its endpoints, by address.
    pub fn endpoints(&self) -> impl Iterator<Item = (Ipv4Addr, Endpoint)> + '_ {
        self.endpoints
            .iter()
            .map(|(&ip, &e)| (Ipv4Addr::from(ip), e))
    }

    /// Whether an ICMP error may go out in second `now` (racing workers
    /// may reset the count together: the bound is approximate, never
    /// unbounded).
    fn may_send_icmp_error(&self, now: u32) -> bool {
        if self.icmp_second.load(Ordering::Relaxed) != now {
            self.icmp_second.store(now, Ordering::Relaxed);
            self.icmp_sent.store(0, Ordering::Relaxed);
        }
        self.icmp_sent.fetch_add(1, Ordering::Relaxed) < ICMP_ERRORS_PER_SEC
    }

    fn is_gateway(&self, ip: u32) -> bool {
        self.subnets.iter().any(|s| u32::from(s.gateway) == ip)
    }

    fn subnet_of_bridge(&self, b: BridgeId) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.bridge == b)
    }

    fn is_gateway6(&self, ip: Ipv6Addr) -> bool {
        self.subnets6.iter().any(|s| s.gateway == ip)
    }

    fn subnet6_of_bridge(&self, b: BridgeId) -> Option<&Subnet6> {
        self.subnets6.iter().find(|s| s.bridge == b)
    }
}

/// Why a router could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterError {
    /// Two subnets of one VPC overlap.
    Overlap(String, IpAddr, IpAddr),
    /// A bridge is a subnet twice.
    BridgeTwice(BridgeId),
    /// An IPv6 prefix for a bridge that is not an (IPv4) subnet of the VPC.
    NotASubnet(BridgeId),
}

impl std::fmt::Display for RouterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouterError::Overlap(v, a, b) => {
                write!(f, "VPC {v:?}: the subnets of gateways {a} and {b} overlap")
            }
            RouterError::BridgeTwice(b) => write!(f, "bridge {} is in two subnets", b.0),
            RouterError::NotASubnet(b) => {
                write!(
                    f,
                    "bridge {} has an IPv6 prefix but is no subnet of the VPC",
                    b.0
                )
            }
        }
    }
}

impl std::error::Error for RouterError {}

/// Adds `e` under address `k` unless an endpoint has it already (the
/// first claim stays); whether added.
fn first_claim<K: std::hash::Hash + Eq>(m: &mut FxHashMap<K, Endpoint>, k: K, e: Endpoint) -> bool {
    match m.entry(k) {
        std::collections::hash_map::Entry::Occupied(_) => false,
        std::collections::hash_map::Entry::Vacant(slot) => {
            slot.insert(e);
            true
        }
    }
}

/// Builds a [`Router`] on the control thread.
#[derive(Default)]
pub struct RouterBuilder {
    vpcs: Vec<Vpc>,
}

impl RouterBuilder {
    /// A builder without VPCs.
    pub fn new() -> RouterBuilder {
        RouterBuilder::default()
    }

    /// Adds VPC `name` with router MAC `mac`; its index for the calls below.
    pub fn vpc(&mut self, name: &str, mac: MacAddr) -> usize {
        self.vpcs.push(Vpc {
            name: name.into(),
            mac,
            subnets: Vec::new(),
            endpoints: FxHashMap::default(),
            subnets6: Vec::new(),
            endpoints6: FxHashMap::default(),
            egress: None,
            icmp_second: AtomicU32::new(0),
            icmp_sent: AtomicU32::new(0),
        });
        self.vpcs.len() - 1
    }

    /// Makes `s` a subnet of VPC `vpc`.
    pub fn subnet(&mut self, vpc: usize, s: Subnet) -> Result<&mut Self, RouterError> {
        if self
            .vpcs
            .iter()
            .any(|v| v.subnets.iter().any(|o| o.bridge == s.bridge))
        {
            return Err(RouterError::BridgeTwice(s.bridge));
        }
        let v = &mut self.vpcs[vpc];
        if let Some(o) = v.subnets.iter().find(|o| o.overlaps(&s)) {
            return Err(RouterError::Overlap(
                v.name.clone(),
                o.gateway.into(),
                s.gateway.into(),
            ));
        }
        v.subnets.push(s);
        Ok(self)
    }

    /// Gives subnet `s.bridge` of VPC `vpc` the IPv6 prefix and gateway
    /// of `s`.
    pub fn subnet6(&mut self, vpc: usize, s: Subnet6) -> Result<&mut Self, RouterError> {
        let v = &mut self.vpcs[vpc];
        if v.subnet_of_bridge(s.bridge).is_none() {
            return Err(RouterError::NotASubnet(s.bridge));
        }
        if v.subnet6_of_bridge(s.bridge).is_some() {
            return Err(RouterError::BridgeTwice(s.bridge));
        }
        if let Some(o) = v.subnets6.iter().find(|o| o.overlaps(&s)) {
            return Err(RouterError::Overlap(
                v.name.clone(),
                o.gateway.into(),
                s.gateway.into(),
            ));
        }
        v.subnets6.push(s);
        Ok(self)
    }

    /// Adds endpoint `e` with IPv6 address `ip`, by the rules of
    /// [`RouterBuilder::endpoint`]. True if added.
    pub fn endpoint6(&mut self, ip: Ipv6Addr, e: Endpoint) -> bool {
        let Some(v) = self
            .vpcs
            .iter_mut()
            .find(|v| v.subnets6.iter().any(|s| s.bridge == e.bridge))
        else {
            return false;
        };
        let s = v.subnet6_of_bridge(e.bridge).expect("found by it");
        if !s.contains(ip) || s.gateway == ip {
            return false;
        }
        first_claim(&mut v.endpoints6, u128::from(ip), e)
    }

    /// Adds endpoint `e` with address `ip`, if its bridge is a subnet of
    /// a VPC and `ip` is in it, is not the gateway and no endpoint has it
    /// yet (the first claim stays: local NICs are added before remote
    /// stations, and the agent refuses a remote duplicate anyway). True
    /// if added.
    pub fn endpoint(&mut self, ip: Ipv4Addr, e: Endpoint) -> bool {
        let Some(v) = self
            .vpcs
            .iter_mut()
            .find(|v| v.subnets.iter().any(|s| s.bridge == e.bridge))
        else {
            return false;
        };
        let s = v.subnet_of_bridge(e.bridge).expect("found by it");
        if !s.contains(ip) || s.gateway == ip {
            return false;
        }
        first_claim(&mut v.endpoints, u32::from(ip), e)
    }

    /// Routes what VPC `vpc`'s endpoints send outside its subnets to its
    /// endpoint with address `ip` (the VPC's way out: a NAT namespace's
    /// NIC). False if no endpoint has `ip`.
    pub fn egress(&mut self, vpc: usize, ip: Ipv4Addr) -> bool {
        let v = &mut self.vpcs[vpc];
        v.egress = v.endpoint(ip);
        v.egress.is_some()
    }

    /// The router; `bridges` is how many bridges the switch has.
    pub fn build(self, bridges: usize) -> Router {
        let mut bridge_vpc = vec![None; bridges];
        for (i, v) in self.vpcs.iter().enumerate() {
            for s in &v.subnets {
                if let Some(slot) = bridge_vpc.get_mut(s.bridge.index()) {
                    *slot = Some(i as u16);
                }
            }
        }
        Router {
            bridge_vpc,
            vpcs: self.vpcs,
        }
    }
}

/// Every VPC's router, in one snapshot.
#[derive(Default)]
pub struct Router {
    /// Per bridge: its VPC's index.
    bridge_vpc: Vec<Option<u16>>,
    vpcs: Vec<Vpc>,
}

impl Router {
    /// The VPCs.
    pub fn vpcs(&self) -> &[Vpc] {
        &self.vpcs
    }

    /// The VPC bridge `b` is a subnet of.
    #[inline]
    pub fn vpc_of(&self, b: BridgeId) -> Option<&Vpc> {
        let i = self.bridge_vpc.get(b.index()).copied().flatten()?;
        Some(&self.vpcs[usize::from(i)])
    }

    /// Routes and answers what a burst from `in_port` (in `bridge`, a
    /// subnet of `vpc`) sends to the router or asks of it (see the module
    /// documentation): rewrites those frames' `actions` and sets their
    /// `edits` (others' are left [`Edit::None`]); counts its drops in
    /// `counters` (the ingress port's), answering those a router must
    /// with an ICMP error (at most [`ICMP_ERRORS_PER_SEC`] a second from
    /// second `now_secs` on). True if any frame got an edit.
    #[allow(clippy::too_many_arguments)]
    pub fn stage<F: Frame>(
        &self,
        vpc: &Vpc,
        bridge: BridgeId,
        in_port: PortId,
        from_tunnel: bool,
        is_tunnel: impl Fn(PortId) -> bool,
        frames: &[F],
        actions: &mut [Action],
        edits: &mut [Edit],
        counters: &PortCounters,
        now_secs: u32,
    ) -> bool {
        let mut edited = false;
        let mut last_dst = None;
        for (i, f) in frames.iter().enumerate() {
            edits[i] = Edit::None;
            if let Action::Drop(_) = actions[i] {
                continue;
            }
            let d = f.data();
            let at = Ingress {
                bridge,
                in_port,
                from_tunnel,
            };
            match decide(vpc, at, &is_tunnel, actions[i], &mut last_dst, d) {
                None => {}
                Some(Ok((a, e))) => {
                    actions[i] = a;
                    edits[i] = e;
                    edited = true;
                }
                Some(Err(r)) => {
                    counters.drop(r, f.wire_packets());
                    let error = (!from_tunnel && f.wire_packets() == 1)
                        .then(|| icmp_error_for(vpc, bridge, r, d))
                        .flatten()
                        .filter(|_| vpc.may_send_icmp_error(now_secs));
                    match error {
                        Some(e) => {
                            actions[i] = Action::Reply;
                            edits[i] = e;
                            edited = true;
                        }
                        None => actions[i] = Action::Drop(r),
                    }
                }
            }
        }
        edited
    }
}

/// Where a frame entered a VPC's router: its bridge and port.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ingress {
    pub(crate) bridge: BridgeId,
    pub(crate) in_port: PortId,
    /// `in_port` is a tunnel port.
    pub(crate) from_tunnel: bool,
}

/// The last IPv4 destination routed in a burst and its endpoint (one
/// lookup for a run of frames to one address).
pub(crate) type LastRoute = Option<(u32, Option<Endpoint>)>;

/// What the router does with frame `d` (`action`: the bridge's decision
/// for it), without doing it: None if the frame is not the router's
/// (neither to its MAC nor a question it answers), else the action and
/// edit that route or answer it, or why it is dropped (the caller then
/// owes the sender an ICMP error, [`icmp_error_for`], within the rate).
#[inline]
pub(crate) fn decide(
    vpc: &Vpc,
    at: Ingress,
    is_tunnel: &impl Fn(PortId) -> bool,
    action: Action,
    last_dst: &mut LastRoute,
    d: &[u8],
) -> Option<Result<(Action, Edit), DropReason>> {
    let Ingress {
        bridge,
        in_port,
        from_tunnel,
    } = at;
    let ethertype = u16::from_be_bytes([d[12], d[13]]);
    let to_router = d[0..6] == vpc.mac.0;
    let asks = ethertype == ETH_P_ARP && !from_tunnel;
    let solicits = ethertype == ETH_P_IPV6 && !from_tunnel && ipv6::is_solicitation(d);
    let may_answer = to_router || action == Action::Flood;
    match (to_router, ethertype) {
        (true, ETH_P_IPV4) => Some(route(vpc, in_port, from_tunnel, is_tunnel, last_dst, d)),
        _ if asks && may_answer => arp_answer(vpc, bridge, in_port, d)
            .map(|mac| Ok((Action::Reply, Edit::ArpReply { mac })))
            .or(to_router.then_some(Err(DropReason::NoRoute))),
        _ if solicits && may_answer => ipv6::solicited(vpc, bridge, in_port, d)
            .map(|(mac, router)| Ok((Action::Reply, Edit::NeighbourAdvert { mac, router })))
            .or(to_router.then_some(Err(DropReason::NoRoute))),
        (true, ETH_P_IPV6) => Some(ipv6::route(vpc, in_port, from_tunnel, is_tunnel, d)),
        (true, _) => Some(Err(DropReason::NoRoute)),
        (false, _) => None,
    }
}

/// The ICMP or ICMPv6 error (from the gateway of the sender's subnet) a
/// router owes the sender of `d`, which it drops for `reason`, if any.
pub(crate) fn icmp_error_for(
    vpc: &Vpc,
    bridge: BridgeId,
    reason: DropReason,
    d: &[u8],
) -> Option<Edit> {
    if u16::from_be_bytes([d[12], d[13]]) == ETH_P_IPV6 {
        let kind = ipv6::error_due(vpc, reason, d)?;
        let s = vpc.subnet6_of_bridge(bridge)?;
        return Some(Edit::Icmp6Error {
            mac: vpc.mac,
            from: s.gateway,
            kind,
        });
    }
    let kind = icmp_error_due(vpc, reason, d)?;
    let s = vpc.subnet_of_bridge(bridge)?;
    Some(Edit::IcmpError {
        mac: vpc.mac,
        from: s.gateway,
        kind,
    })
}

/// The ICMP error a router owes the sender of IPv4 frame `d`, which it
/// drops for `reason`, if any (RFC 1812 4.3.2.7: none about an ICMP
/// error, a later fragment, or a source that is not one host; none for
/// what reaches a gateway, which answers only pings).
fn icmp_error_due(vpc: &Vpc, reason: DropReason, d: &[u8]) -> Option<IcmpError> {
    if d.len() < 34 || u16::from_be_bytes([d[12], d[13]]) != ETH_P_IPV4 || d[14] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(d[14] & 0x0f) * 4;
    let later_fragment = u16::from_be_bytes([d[20], d[21]]) & 0x1fff != 0;
    let src = Ipv4Addr::new(d[26], d[27], d[28], d[29]);
    let one_host =
        !(src.is_unspecified() || src.is_broadcast() || src.is_multicast() || src.is_loopback());
    let about_error =
        d[23] == IPPROTO_ICMP && d.len() > 14 + ihl && matches!(d[14 + ihl], 3 | 4 | 5 | 11 | 12);
    if ihl < 20 || later_fragment || !one_host || about_error {
        return None;
    }
    let dst = u32::from_be_bytes([d[30], d[31], d[32], d[33]]);
    match reason {
        DropReason::TtlExceeded => Some(IcmpError::TtlExceeded),
        DropReason::NoRoute if vpc.is_gateway(dst) => None,
        DropReason::NoRoute if vpc.subnets.iter().any(|s| s.contains(dst.into())) => {
            Some(IcmpError::HostUnreachable)
        }
        DropReason::NoRoute => Some(IcmpError::NetUnreachable),
        _ => None,
    }
}

/// The fate of an IPv4 frame to the router MAC.
fn route(
    vpc: &Vpc,
    in_port: PortId,
    from_tunnel: bool,
    is_tunnel: &impl Fn(PortId) -> bool,
    last: &mut LastRoute,
    d: &[u8],
) -> Result<(Action, Edit), DropReason> {
    if d.len() < 34 || d[14] >> 4 != 4 || d[14] & 0x0f < 5 {
        return Err(DropReason::Malformed);
    }
    let ihl = usize::from(d[14] & 0x0f) * 4;
    if d.len() < 14 + ihl {
        return Err(DropReason::Malformed);
    }
    let dst = u32::from_be_bytes([d[30], d[31], d[32], d[33]]);
    if vpc.is_gateway(dst) {
        // Only pings: the gateway has no other service.
        let first = u16::from_be_bytes([d[20], d[21]]) & 0x3fff == 0;
        let l4 = 14 + ihl;
        let echo = d[23] == IPPROTO_ICMP
            && first
            && d.len() >= l4 + 8
            && d[l4] == ICMP_ECHO_REQUEST
            && d[l4 + 1] == 0;
        return if echo && !from_tunnel {
            Ok((Action::Reply, Edit::EchoReply { mac: vpc.mac }))
        } else {
            Err(DropReason::NoRoute)
        };
    }
    if d[22] <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    // A burst's frames mostly go to one address: one lookup for a run
    // of them.
    let found = match *last {
        Some((ip, e)) if ip == dst => e,
        _ => {
            let e = vpc.endpoints.get(&dst).copied();
            *last = Some((dst, e));
            e
        }
    };
    // Outside every subnet: out by the VPC's way out, for what its own
    // containers send (never back out of it, never for a tunnel).
    let way_out = match found {
        None if !from_tunnel && !vpc.subnets.iter().any(|s| s.contains(dst.into())) => vpc.egress,
        _ => None,
    };
    let e = deliver(found, way_out, in_port, from_tunnel, is_tunnel)?;
    Ok((
        Action::Output(e.port),
        Edit::Route {
            src: vpc.mac,
            dst: e.mac,
        },
    ))
}

/// Where a routed frame goes: to its destination's endpoint `found`, else
/// `way_out`; never back out of its ingress port, nor from a tunnel into
/// a tunnel (a host routes only what its own containers send).
fn deliver(
    found: Option<Endpoint>,
    way_out: Option<Endpoint>,
    in_port: PortId,
    from_tunnel: bool,
    is_tunnel: &impl Fn(PortId) -> bool,
) -> Result<Endpoint, DropReason> {
    let e = found.or(way_out).ok_or(DropReason::NoRoute)?;
    if e.port == in_port {
        return Err(DropReason::SamePort);
    }
    if from_tunnel && is_tunnel(e.port) {
        return Err(DropReason::SplitHorizon);
    }
    Ok(e)
}

/// The MAC that answers an ARP request in `d` from `in_port` in `bridge`,
/// if the VPC knows it: the router's for the subnet's gateway, an
/// endpoint's of the same subnet behind another port. Gratuitous ARP
/// (target = sender) is not answered.
fn arp_answer(vpc: &Vpc, bridge: BridgeId, in_port: PortId, d: &[u8]) -> Option<MacAddr> {
    // Ethernet/IPv4 ARP request: htype 1, ptype 0x0800, hlen 6, plen 4.
    if d.len() < ARP_LEN || d[14..20] != [0, 1, 8, 0, 6, 4] {
        return None;
    }
    if u16::from_be_bytes([d[20], d[21]]) != ARP_REQUEST || d[28..32] == d[38..42] {
        return None;
    }
    let target = Ipv4Addr::new(d[38], d[39], d[40], d[41]);
    let s = vpc.subnet_of_bridge(bridge)?;
    if target == s.gateway {
        return Some(vpc.mac);
    }
    vpc.endpoint(target)
        .filter(|e| e.bridge == bridge && e.port != in_port)
        .map(|e| e.mac)
}

#[cfg(test)]
mod tests {
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    use super::*;

    const ROUTER: MacAddr = MacAddr([0x02, 0xfe, 0, 0, 0, 1]);
    const A_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
    const B_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);
    const R_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xc]);
    const A: [u8; 4] = [192, 168, 1, 10];
    const B: [u8; 4] = [192, 168, 2, 20];
    /// Behind tunnel port 9.
    const R: [u8; 4] = [192, 168, 2, 30];

    /// VPC "blue": bridge 0 = 192.168.1.0/24 (gateway .1) with A on port
    /// 1; bridge 1 = 192.168.2.0/24 (gateway .1) with B on port 2 and R
    /// behind tunnel port 9. Bridge 2 is in no VPC.
    fn router() -> Router {
        let mut b = RouterBuilder::new();
        let v = b.vpc("blue", ROUTER);
        for (br, gw) in [(0, [192, 168, 1, 1]), (1, [192, 168, 2, 1])] {
            b.subnet(
                v,
                Subnet {
                    bridge: BridgeId(br),
                    gateway: gw.into(),
                    prefix: 24,
                },
            )
            .unwrap();
        }
        for (ip, mac, port, br) in [(A, A_MAC, 1, 0), (B, B_MAC, 2, 1), (R, R_MAC, 9, 1)] {
            assert!(b.endpoint(
                ip.into(),
                Endpoint {
                    mac,
                    port: PortId(port),
                    bridge: BridgeId(br)
                }
            ));
        }
        for (br, gw) in [(0, GW6_1), (1, GW6_2)] {
            b.subnet6(
                v,
                Subnet6 {
                    bridge: BridgeId(br),
                    gateway: gw.into(),
                    prefix: 64,
                },
            )
            .unwrap();
        }
        for (ip, mac, port, br) in [(A6, A_MAC, 1, 0), (B6, B_MAC, 2, 1), (R6, R_MAC, 9, 1)] {
            assert!(b.endpoint6(
                ip.into(),
                Endpoint {
                    mac,
                    port: PortId(port),
                    bridge: BridgeId(br)
                }
            ));
        }
        b.build(3)
    }

    const GW6_1: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const GW6_2: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const A6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xa];
    const B6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xb];
    /// Behind tunnel port 9.
    const R6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xc];

    fn udp6(src: MacAddr, dst: MacAddr, from: [u8; 16], to: [u8; 16], hops: u8) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(src.0, dst.0)
            .ipv6(from, to, hops)
            .udp(1000, 2000)
            .write(&mut v, b"routed")
            .unwrap();
        v
    }

    /// A neighbour solicitation from `src` at `from` for `target`, to its
    /// solicited-node group (unspecified `from`: a DAD probe), with a
    /// source link-layer option unless `from` is unspecified; `room`
    /// spare bytes after it, as an mbuf has.
    fn solicitation(src: MacAddr, from: [u8; 16], target: [u8; 16], room: usize) -> Vec<u8> {
        let group = [
            0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, target[13], target[14], target[15],
        ];
        let mut body = target.to_vec();
        if from != [0; 16] {
            body.extend_from_slice(&[1, 1]);
            body.extend_from_slice(&src.0);
        }
        let mut v = Vec::new();
        PacketBuilder::ethernet2(
            src.0,
            [0x33, 0x33, 0xff, target[13], target[14], target[15]],
        )
        .ipv6(from, group, 255)
        .icmpv6(etherparse::Icmpv6Type::NeighborSolicitation)
        .write(&mut v, &body)
        .unwrap();
        v.resize(v.len() + room, 0);
        v
    }

    #[test]
    fn neighbour_solicitations_for_what_the_vpc_knows_are_answered_on_the_spot() {
        for (target, mac, router) in [
            (GW6_1, ROUTER, true),
            (
                [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xa],
                A_MAC,
                false,
            ),
        ] {
            // From a neighbour of A on port 3 (A itself is on port 1).
            let asker = MacAddr([2, 0, 0, 0, 0, 0xd]);
            let from = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xd];
            // Without a source link-layer option: the answer grows by 8.
            let mut f = solicitation(asker, from, target, 64);
            f.truncate(f.len() - 64 - 8);
            let len = f.len();
            f.resize(len + EDIT_GROWTH, 0);
            let (a, e, _) = one(0, 3, false, &f[..len], Action::Flood);
            assert_eq!(
                (a, e),
                (Action::Reply, Edit::NeighbourAdvert { mac, router })
            );
            assert!(e.resizes());
            let n = e.apply(&mut f, len);
            assert_eq!(n, len + 8);
            let p = SlicedPacket::from_ethernet(&f[..n]).unwrap();
            assert_eq!((&f[0..6], &f[6..12]), (&asker.0[..], &mac.0[..]));
            let Some(etherparse::NetSlice::Ipv6(ip)) = p.net else {
                panic!("IPv6")
            };
            let (src, dst) = (ip.header().source(), ip.header().destination());
            assert_eq!((src, dst, ip.header().hop_limit()), (target, from, 255));
            let Some(TransportSlice::Icmpv6(icmp)) = p.transport else {
                panic!("ICMPv6")
            };
            assert!(icmp.is_checksum_valid(src, dst), "ICMPv6 checksum valid");
            let etherparse::Icmpv6Type::NeighborAdvertisement(h) = icmp.icmp_type() else {
                panic!("an advertisement: {:?}", icmp.icmp_type())
            };
            assert_eq!((h.router, h.solicited, h.r#override), (router, true, true));
            // Target, then the target link-layer address option.
            assert_eq!(&icmp.payload()[..16], &target);
            assert_eq!(&icmp.payload()[16..18], &[2, 1]);
            assert_eq!(&icmp.payload()[18..24], &mac.0);
        }
        // Not answered: a DAD probe (for its owner to defend), another
        // subnet's endpoint or gateway, an unknown address, A asking for
        // itself, a solicitation from a tunnel.
        for (br, port, tunnel, f) in [
            (0, 1, false, solicitation(A_MAC, [0; 16], GW6_1, 0)),
            (0, 1, false, solicitation(A_MAC, A6, B6, 0)),
            (0, 1, false, solicitation(A_MAC, A6, GW6_2, 0)),
            (
                0,
                1,
                false,
                solicitation(
                    A_MAC,
                    A6,
                    [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x77],
                    0,
                ),
            ),
            (
                0,
                1,
                false,
                solicitation(
                    A_MAC,
                    [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x5],
                    A6,
                    0,
                ),
            ),
            (1, 9, true, solicitation(R_MAC, R6, B6, 0)),
        ] {
            assert_eq!(one(br, port, tunnel, &f, Action::Flood).0, Action::Flood);
        }
    }

    #[test]
    fn ipv6_to_the_router_is_routed_with_the_hop_limit_decremented() {
        let mut f = udp6(A_MAC, ROUTER, A6, B6, 64);
        let (a, e, _) = one(0, 1, false, &f, Action::Flood);
        assert_eq!(a, Action::Output(PortId(2)));
        assert_eq!(
            e,
            Edit::Route6 {
                src: ROUTER,
                dst: B_MAC
            }
        );
        let n = f.len();
        assert_eq!(e.apply(&mut f, n), n);
        assert_eq!((&f[6..12], &f[0..6]), (&ROUTER.0[..], &B_MAC.0[..]));
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::NetSlice::Ipv6(ip)) = p.net else {
            panic!("IPv6")
        };
        assert_eq!(ip.header().hop_limit(), 63);
        let Some(TransportSlice::Udp(u)) = p.transport else {
            panic!("UDP")
        };
        assert_eq!(u.payload(), b"routed");
        // A remote endpoint: out of its tunnel port; from a tunnel into a
        // tunnel: never.
        let to_r = udp6(A_MAC, ROUTER, A6, R6, 64);
        assert_eq!(
            one(0, 1, false, &to_r, Action::Flood).0,
            Action::Output(PortId(9))
        );
        let (a, _, c) = one(1, 9, true, &udp6(R_MAC, ROUTER, R6, R6, 64), Action::Flood);
        assert_eq!(a, Action::Drop(DropReason::SamePort));
        assert_eq!(c.drops[DropReason::SamePort as usize].get(), 1);
        // A ping to the gateway: a valid echo reply.
        let mut f = Vec::new();
        PacketBuilder::ethernet2(A_MAC.0, ROUTER.0)
            .ipv6(A6, GW6_1, 64)
            .icmpv6_echo_request(7, 1)
            .write(&mut f, b"ping")
            .unwrap();
        let (a, e, _) = one(0, 1, false, &f, Action::Flood);
        assert_eq!((a, e), (Action::Reply, Edit::Echo6Reply { mac: ROUTER }));
        let n = f.len();
        e.apply(&mut f, n);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(TransportSlice::Icmpv6(icmp)) = p.transport else {
            panic!("ICMPv6")
        };
        assert!(matches!(
            icmp.icmp_type(),
            etherparse::Icmpv6Type::EchoReply(_)
        ));
        assert!(icmp.is_checksum_valid(GW6_1, A6));
    }

    #[test]
    fn what_ipv6_cannot_reach_is_answered_with_a_valid_icmpv6_error() {
        let unknown = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99];
        let outside = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        for (to, hops, want, type_code) in [
            (B6, 1, IcmpError::TtlExceeded, (3, 0)),
            (unknown, 64, IcmpError::HostUnreachable, (1, 3)),
            (outside, 64, IcmpError::NetUnreachable, (1, 0)),
        ] {
            let mut f = udp6(A_MAC, ROUTER, A6, to, hops);
            let len = f.len();
            let sent = f.clone();
            f.resize(len + EDIT_GROWTH, 0);
            let (a, e, c) = one(0, 1, false, &f[..len], Action::Flood);
            assert_eq!(a, Action::Reply, "{to:?}");
            assert_eq!(
                e,
                Edit::Icmp6Error {
                    mac: ROUTER,
                    from: GW6_1.into(),
                    kind: want
                }
            );
            assert_eq!(
                c.drops[DropReason::TtlExceeded as usize].get()
                    + c.drops[DropReason::NoRoute as usize].get(),
                1
            );
            let n = e.apply(&mut f, len);
            assert_eq!(n, len + EDIT_GROWTH);
            let p = SlicedPacket::from_ethernet(&f[..n]).unwrap();
            assert_eq!((&f[0..6], &f[6..12]), (&A_MAC.0[..], &ROUTER.0[..]));
            let Some(TransportSlice::Icmpv6(icmp)) = p.transport else {
                panic!("ICMPv6")
            };
            assert!(icmp.is_checksum_valid(GW6_1, A6), "checksum");
            assert_eq!((icmp.type_u8(), icmp.code_u8()), type_code);
            // The whole offending packet is quoted.
            assert_eq!(icmp.payload(), &sent[14..]);
        }
        // No error about an error, nor from a tunnel's frame.
        let mut about_error = Vec::new();
        PacketBuilder::ethernet2(A_MAC.0, ROUTER.0)
            .ipv6(A6, unknown, 64)
            .icmpv6_raw(1, 3, [0; 4])
            .write(&mut about_error, &[0; 48])
            .unwrap();
        assert_eq!(
            one(0, 1, false, &about_error, Action::Flood).0,
            Action::Drop(DropReason::NoRoute)
        );
        assert_eq!(
            one(
                1,
                9,
                true,
                &udp6(R_MAC, ROUTER, R6, unknown, 64),
                Action::Flood
            )
            .0,
            Action::Drop(DropReason::NoRoute)
        );
    }

    #[test]
    fn ipv6_prefixes_belong_to_subnets_and_never_overlap() {
        let mut b = RouterBuilder::new();
        let v = b.vpc("blue", ROUTER);
        let s6 = |br, gw: [u8; 16], prefix| Subnet6 {
            bridge: BridgeId(br),
            gateway: gw.into(),
            prefix,
        };
        assert_eq!(
            b.subnet6(v, s6(0, GW6_1, 64)).err(),
            Some(RouterError::NotASubnet(BridgeId(0)))
        );
        for br in [0, 1] {
            b.subnet(
                v,
                Subnet {
                    bridge: BridgeId(br),
                    gateway: [10, br as u8, 0, 1].into(),
                    prefix: 24,
                },
            )
            .unwrap();
        }
        b.subnet6(v, s6(0, GW6_1, 48)).unwrap();
        assert!(matches!(
            b.subnet6(v, s6(1, GW6_1, 64)),
            Err(RouterError::Overlap(..))
        ));
        let e = Endpoint {
            mac: A_MAC,
            port: PortId(1),
            bridge: BridgeId(0),
        };
        assert!(b.endpoint6(A6.into(), e));
        assert!(!b.endpoint6(A6.into(), e), "first claim stays");
        assert!(!b.endpoint6(GW6_1.into(), e), "the gateway");
        assert!(!b.endpoint6(B6.into(), e), "outside the prefix");
        let r = b.build(2);
        let blue = r.vpc_of(BridgeId(0)).unwrap();
        assert_eq!(blue.endpoint6(A6.into()).unwrap().port, PortId(1));
        assert_eq!(blue.endpoints6().count(), 1);
    }

    fn udp(src: MacAddr, dst: MacAddr, from: [u8; 4], to: [u8; 4], ttl: u8) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(src.0, dst.0)
            .ipv4(from, to, ttl)
            .udp(1000, 2000)
            .write(&mut v, b"routed")
            .unwrap();
        v
    }

    fn ping(src: MacAddr, dst: MacAddr, from: [u8; 4], to: [u8; 4]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(src.0, dst.0)
            .ipv4(from, to, 64)
            .icmpv4_echo_request(7, 1)
            .write(&mut v, b"ping")
            .unwrap();
        v
    }

    fn arp_request(src: MacAddr, from: [u8; 4], asked: [u8; 4]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&[0xff; 6]);
        v.extend_from_slice(&src.0);
        v.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        v.extend_from_slice(&src.0);
        v.extend_from_slice(&from);
        v.extend_from_slice(&[0; 6]);
        v.extend_from_slice(&asked);
        v
    }

    /// Runs the stage on one frame from `in_port` in `bridge` whose
    /// bridge action was `action`; (action, edit, counters).
    fn one(
        bridge: u16,
        in_port: u16,
        from_tunnel: bool,
        frame: &[u8],
        action: Action,
    ) -> (Action, Edit, PortCounters) {
        one_in(&router(), bridge, in_port, from_tunnel, frame, action)
    }

    /// [`one`] on router `r`.
    fn one_in(
        r: &Router,
        bridge: u16,
        in_port: u16,
        from_tunnel: bool,
        frame: &[u8],
        action: Action,
    ) -> (Action, Edit, PortCounters) {
        let vpc = r.vpc_of(BridgeId(bridge)).expect("a VPC bridge");
        let mut actions = [action];
        let mut edits = [Edit::Route {
            src: ROUTER,
            dst: ROUTER,
        }];
        let c = PortCounters::default();
        r.stage(
            vpc,
            BridgeId(bridge),
            PortId(in_port),
            from_tunnel,
            |p| p.0 == 9,
            &[frame],
            &mut actions,
            &mut edits,
            &c,
            0,
        );
        (actions[0], edits[0], c)
    }

    #[test]
    fn a_frame_to_the_router_is_routed_to_the_endpoint_with_ttl_and_checksum_right() {
        let mut f = udp(A_MAC, ROUTER, A, B, 64);
        let (a, e, _) = one(0, 1, false, &f, Action::Flood);
        assert_eq!(a, Action::Output(PortId(2)));
        assert_eq!(
            e,
            Edit::Route {
                src: ROUTER,
                dst: B_MAC
            }
        );
        let n = f.len();
        e.apply(&mut f, n);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        assert_eq!((&f[6..12], &f[0..6]), (&ROUTER.0[..], &B_MAC.0[..]));
        let ip = match p.net.unwrap() {
            etherparse::NetSlice::Ipv4(ip) => ip.header().to_header(),
            _ => panic!("IPv4"),
        };
        assert_eq!(ip.time_to_live, 63);
        assert_eq!(
            ip.header_checksum,
            ip.calc_header_checksum(),
            "checksum still valid"
        );
        // Routed to a remote endpoint: out of its tunnel port.
        let (a, _, _) = one(0, 1, false, &udp(A_MAC, ROUTER, A, R, 64), Action::Flood);
        assert_eq!(a, Action::Output(PortId(9)));
    }

    #[test]
    fn what_leaves_the_vpc_goes_to_its_way_out_and_only_from_local_nics() {
        // Bridge 3: the SNAT link, 169.254.0.0/30, its namespace on port 5.
        const NAT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x5a]);
        let mut b = RouterBuilder::new();
        let v = b.vpc("blue", ROUTER);
        for (br, gw, len) in [
            (0, [192, 168, 1, 1], 24),
            (1, [192, 168, 2, 1], 24),
            (3, [169, 254, 0, 1], 30),
        ] {
            b.subnet(
                v,
                Subnet {
                    bridge: BridgeId(br),
                    gateway: gw.into(),
                    prefix: len,
                },
            )
            .unwrap();
        }
        for (ip, mac, port, br) in [(A, A_MAC, 1, 0), ([169, 254, 0, 2], NAT_MAC, 5, 3)] {
            b.endpoint(
                ip.into(),
                Endpoint {
                    mac,
                    port: PortId(port),
                    bridge: BridgeId(br),
                },
            );
        }
        assert!(!b.egress(v, [169, 254, 0, 3].into()), "no such endpoint");
        assert!(b.egress(v, [169, 254, 0, 2].into()));
        let r = b.build(4);
        let out = udp(A_MAC, ROUTER, A, [8, 8, 8, 8], 64);
        let (a, e, _) = one_in(&r, 0, 1, false, &out, Action::Flood);
        assert_eq!(a, Action::Output(PortId(5)));
        assert_eq!(
            e,
            Edit::Route {
                src: ROUTER,
                dst: NAT_MAC
            }
        );
        // The reply, de-NATed by the namespace, routed to the container.
        let back = udp(NAT_MAC, ROUTER, [8, 8, 8, 8], A, 63);
        assert_eq!(
            one_in(&r, 3, 5, false, &back, Action::Flood).0,
            Action::Output(PortId(1))
        );
        // An address of a subnet that no endpoint has stays inside.
        let unknown = udp(A_MAC, ROUTER, A, [192, 168, 2, 99], 64);
        assert!(matches!(
            one_in(&r, 0, 1, false, &unknown, Action::Flood).1,
            Edit::IcmpError {
                kind: IcmpError::HostUnreachable,
                ..
            }
        ));
        for (br, port, tunnel, f, why) in [
            // Another host's container leaves by its own host.
            (1, 9, true, out.clone(), DropReason::NoRoute),
            // The outside to the outside: not through the VPC.
            (
                3,
                5,
                false,
                udp(NAT_MAC, ROUTER, [8, 8, 8, 8], [9, 9, 9, 9], 64),
                DropReason::SamePort,
            ),
        ] {
            assert_eq!(
                one_in(&r, br, port, tunnel, &f, Action::Flood).0,
                Action::Drop(why)
            );
        }
    }

    #[test]
    fn what_cannot_be_routed_is_dropped_and_counted() {
        // (Without an ICMP error: see the next test for those with one.)
        let cases = [
            // To its own port.
            (
                udp(A_MAC, ROUTER, [192, 168, 2, 5], A, 64),
                false,
                DropReason::SamePort,
            ),
            // From a tunnel back into a tunnel.
            (
                udp(R_MAC, ROUTER, [192, 168, 9, 1], R, 64),
                true,
                DropReason::SplitHorizon,
            ),
            // From a tunnel: the sender's own host answers its errors.
            (
                udp(R_MAC, ROUTER, [192, 168, 9, 1], [192, 168, 2, 99], 64),
                true,
                DropReason::NoRoute,
            ),
            // UDP to the gateway: only pings are answered.
            (
                udp(A_MAC, ROUTER, A, [192, 168, 1, 1], 64),
                false,
                DropReason::NoRoute,
            ),
            // Cut short.
            (
                udp(A_MAC, ROUTER, A, B, 64)[..30].to_vec(),
                false,
                DropReason::Malformed,
            ),
        ];
        for (f, tunnel, why) in cases {
            let in_port = if tunnel { 8 } else { 1 };
            let (a, e, c) = one(0, in_port, tunnel, &f, Action::Flood);
            assert_eq!(a, Action::Drop(why), "{why:?}");
            assert_eq!(e, Edit::None);
            assert_eq!(c.drops[why as usize].get(), 1, "{why:?} counted");
        }
    }

    #[test]
    fn what_a_router_cannot_deliver_is_answered_with_a_valid_icmp_error() {
        use etherparse::{Icmpv4Type, NetSlice};
        for (f, why, kind) in [
            (
                udp(A_MAC, ROUTER, A, B, 1),
                DropReason::TtlExceeded,
                IcmpError::TtlExceeded,
            ),
            (
                udp(A_MAC, ROUTER, A, [192, 168, 2, 99], 64),
                DropReason::NoRoute,
                IcmpError::HostUnreachable,
            ),
            (
                udp(A_MAC, ROUTER, A, [8, 8, 8, 8], 64),
                DropReason::NoRoute,
                IcmpError::NetUnreachable,
            ),
        ] {
            let (a, e, c) = one(0, 1, false, &f, Action::Flood);
            assert_eq!(a, Action::Reply, "{why:?}");
            assert_eq!(
                e,
                Edit::IcmpError {
                    mac: ROUTER,
                    from: Ipv4Addr::new(192, 168, 1, 1),
                    kind
                }
            );
            assert_eq!(c.drops[why as usize].get(), 1, "{why:?} counted");
            let mut buf = f.clone();
            buf.resize(f.len() + 28, 0xee);
            let n = e.apply(&mut buf, f.len());
            // Ethernet + IP + ICMP + the datagram's header and 8 bytes.
            assert_eq!(n, 14 + 20 + 8 + 20 + 8);
            let p = SlicedPacket::from_ethernet(&buf[..n]).unwrap();
            let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else {
                panic!("Ethernet")
            };
            assert_eq!((eth.destination(), eth.source()), (A_MAC.0, ROUTER.0));
            let Some(NetSlice::Ipv4(ip)) = p.net else {
                panic!("IPv4")
            };
            let h = ip.header().to_header();
            assert_eq!((h.source, h.destination), ([192, 168, 1, 1], A));
            assert_eq!(h.header_checksum, h.calc_header_checksum());
            let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
                panic!("ICMP")
            };
            let expected = icmp.icmp_type().calc_checksum(icmp.payload());
            assert_eq!(icmp.checksum(), expected, "{kind:?}: checksum");
            let want = match kind {
                IcmpError::TtlExceeded => matches!(icmp.icmp_type(), Icmpv4Type::TimeExceeded(_)),
                _ => matches!(icmp.icmp_type(), Icmpv4Type::DestinationUnreachable(_)),
            };
            assert!(want, "{kind:?}: {:?}", icmp.icmp_type());
            assert_eq!(
                icmp.payload(),
                &f[14..14 + 28],
                "the datagram quoted as sent"
            );
        }
        // None about an ICMP error.
        let mut error = udp(A_MAC, ROUTER, A, B, 1);
        let mut b = error.clone();
        b.resize(error.len() + 28, 0);
        let n = one(0, 1, false, &error, Action::Flood)
            .1
            .apply(&mut b, error.len());
        error = b[..n].to_vec();
        error[0..6].copy_from_slice(&ROUTER.0);
        error[30..34].copy_from_slice(&[192, 168, 2, 99]);
        assert_eq!(
            one(0, 1, false, &error, Action::Flood).0,
            Action::Drop(DropReason::NoRoute)
        );
    }

    #[test]
    fn icmp_errors_are_bounded_per_second() {
        let r = router();
        let vpc = r.vpc_of(BridgeId(0)).unwrap();
        let f = udp(A_MAC, ROUTER, A, B, 1);
        let frames = vec![&f[..]; 32];
        let c = PortCounters::default();
        let replies = |now: u32| {
            let mut sent = 0;
            for _ in 0..5 {
                let mut actions = [Action::Flood; 32];
                let mut edits = [Edit::None; 32];
                r.stage(
                    vpc,
                    BridgeId(0),
                    PortId(1),
                    false,
                    |_| false,
                    &frames,
                    &mut actions,
                    &mut edits,
                    &c,
                    now,
                );
                sent += actions.iter().filter(|a| **a == Action::Reply).count();
            }
            sent
        };
        assert_eq!(
            replies(7),
            ICMP_ERRORS_PER_SEC as usize,
            "160 due, 100 sent"
        );
        assert_eq!(replies(8), ICMP_ERRORS_PER_SEC as usize, "a new second");
        assert_eq!(
            c.drops[DropReason::TtlExceeded as usize].get(),
            320,
            "every one counted"
        );
    }

    #[test]
    fn arp_for_the_gateway_and_known_endpoints_is_answered_on_the_spot() {
        // The gateway: the router MAC, as a reply back to the asker.
        let mut f = arp_request(A_MAC, A, [192, 168, 1, 1]);
        let (a, e, _) = one(0, 1, false, &f, Action::Flood);
        assert_eq!((a, e), (Action::Reply, Edit::ArpReply { mac: ROUTER }));
        let n = f.len();
        e.apply(&mut f, n);
        assert_eq!(&f[0..6], &A_MAC.0, "to the asker");
        assert_eq!(&f[6..12], &ROUTER.0);
        assert_eq!(u16::from_be_bytes([f[20], f[21]]), ARP_REPLY);
        assert_eq!(&f[22..28], &ROUTER.0, "sender = the answer");
        assert_eq!(&f[28..32], &[192, 168, 1, 1]);
        assert_eq!(&f[32..38], &A_MAC.0);
        assert_eq!(&f[38..42], &A);
        // A remote endpoint of the same subnet: its MAC, no flood.
        let f = arp_request(B_MAC, B, R);
        assert_eq!(
            one(1, 2, false, &f, Action::Flood).0,
            Action::Reply,
            "answered locally"
        );
        // Not answered: another subnet's endpoint or gateway, an unknown
        // address, a gratuitous ARP, a request from a tunnel.
        for (br, port, tunnel, f) in [
            (0, 1, false, arp_request(A_MAC, A, B)),
            (0, 1, false, arp_request(A_MAC, A, [192, 168, 2, 1])),
            (0, 1, false, arp_request(A_MAC, A, [192, 168, 1, 77])),
            (0, 1, false, arp_request(A_MAC, A, A)),
            (1, 9, true, arp_request(R_MAC, R, B)),
        ] {
            assert_eq!(one(br, port, tunnel, &f, Action::Flood).0, Action::Flood);
        }
    }

    #[test]
    fn a_ping_to_the_gateway_is_answered_with_a_valid_reply() {
        let mut f = ping(A_MAC, ROUTER, A, [192, 168, 1, 1]);
        let (a, e, _) = one(0, 1, false, &f, Action::Flood);
        assert_eq!((a, e), (Action::Reply, Edit::EchoReply { mac: ROUTER }));
        let n = f.len();
        e.apply(&mut f, n);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        assert_eq!((&f[6..12], &f[0..6]), (&ROUTER.0[..], &A_MAC.0[..]));
        let etherparse::NetSlice::Ipv4(ip) = p.net.unwrap() else {
            panic!("IPv4")
        };
        assert_eq!(ip.header().source(), [192, 168, 1, 1]);
        assert_eq!(ip.header().destination(), A);
        let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
            panic!("ICMP")
        };
        assert!(matches!(
            icmp.icmp_type(),
            etherparse::Icmpv4Type::EchoReply(_)
        ));
        let h = icmp.header();
        assert_eq!(
            h.checksum,
            h.icmp_type.calc_checksum(icmp.payload()),
            "ICMP checksum valid"
        );
        // Another subnet's gateway through this router MAC: answered too.
        let f = ping(A_MAC, ROUTER, A, [192, 168, 2, 1]);
        assert_eq!(one(0, 1, false, &f, Action::Flood).0, Action::Reply);
    }

    #[test]
    fn frames_not_for_the_router_are_left_alone() {
        let f = udp(A_MAC, B_MAC, A, B, 64);
        let (a, e, _) = one(0, 1, false, &f, Action::Output(PortId(2)));
        assert_eq!((a, e), (Action::Output(PortId(2)), Edit::None));
        let (a, _, _) = one(0, 1, false, &f, Action::Drop(DropReason::SamePort));
        assert_eq!(a, Action::Drop(DropReason::SamePort));
    }

    #[test]
    fn subnets_of_one_vpc_never_overlap_and_vpcs_are_apart() {
        let mut b = RouterBuilder::new();
        let v = b.vpc("blue", ROUTER);
        let red = b.vpc("red", MacAddr([2, 0xfe, 0, 0, 0, 2]));
        let s = |br, gw: [u8; 4], prefix| Subnet {
            bridge: BridgeId(br),
            gateway: gw.into(),
            prefix,
        };
        b.subnet(v, s(0, [10, 0, 0, 1], 16)).unwrap();
        assert!(matches!(
            b.subnet(v, s(1, [10, 0, 5, 1], 24)),
            Err(RouterError::Overlap(..))
        ));
        assert_eq!(
            b.subnet(red, s(0, [10, 9, 0, 1], 24)).err(),
            Some(RouterError::BridgeTwice(BridgeId(0)))
        );
        // The same range in another VPC is its own.
        b.subnet(red, s(1, [10, 0, 0, 1], 16)).unwrap();
        let e = |port, br| Endpoint {
            mac: A_MAC,
            port: PortId(port),
            bridge: BridgeId(br),
        };
        assert!(b.endpoint([10, 0, 0, 5].into(), e(1, 0)));
        assert!(
            b.endpoint([10, 0, 0, 5].into(), e(2, 1)),
            "same address, other VPC"
        );
        assert!(
            !b.endpoint([10, 0, 0, 5].into(), e(3, 0)),
            "first claim stays"
        );
        assert!(
            !b.endpoint([10, 1, 0, 5].into(), e(3, 1)),
            "outside red's subnet"
        );
        assert!(!b.endpoint([10, 0, 0, 1].into(), e(3, 0)), "the gateway");
        assert!(
            !b.endpoint([10, 200, 0, 5].into(), e(3, 0)),
            "outside the subnet"
        );
        let r = b.build(2);
        let blue = r.vpc_of(BridgeId(0)).unwrap();
        let red = r.vpc_of(BridgeId(1)).unwrap();
        assert_eq!(blue.endpoint([10, 0, 0, 5].into()).unwrap().port, PortId(1));
        assert_eq!(red.endpoint([10, 0, 0, 5].into()).unwrap().port, PortId(2));
    }
}
