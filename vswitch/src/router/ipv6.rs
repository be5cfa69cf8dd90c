//! IPv6 in a VPC's router, beside IPv4 and by the same rules (see the
//! parent module): neighbour solicitations for a subnet's gateway or a
//! known endpoint answered on the spot with a neighbour advertisement
//! (RFC 4861 7.2.4; never a duplicate address detection probe, which must
//! reach its owner's neighbours), frames to the router MAC routed to an
//! endpoint with the hop limit decremented (IPv6 has no header checksum),
//! echo requests to a gateway answered, and ICMPv6 errors (RFC 4443)
//! where a router owes them: hop limit exceeded, address unreachable in a
//! subnet, no route outside them (a VPC's way out is IPv4 only: the
//! kernel's masquerade there is IPv4's).
//!
//! Frames are untagged Ethernet with no IPv6 extension header before
//! ICMPv6 (neighbour discovery never has one); offsets are fixed.

use std::net::Ipv6Addr;

use crate::flow::{ETH_P_IPV6, IPPROTO_ICMPV6};
use crate::stats::DropReason;
use crate::switch::Action;
use crate::types::{BridgeId, MacAddr, PortId};

use super::{deliver, Edit, IcmpError, Vpc};

/// Ethernet + the IPv6 header: where ICMPv6 starts.
const L4: usize = 14 + 40;
/// A neighbour solicitation or advertisement with one link-layer address
/// option: Ethernet + IPv6 + 24 bytes of message + 8 of option.
const ND_LEN: usize = L4 + 32;
const NEIGHBOUR_SOLICITATION: u8 = 135;
const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
const ECHO_REQUEST: u8 = 128;
const ECHO_REPLY: u8 = 129;
/// ICMPv6 error messages have types below this.
const FIRST_INFO_TYPE: u8 = 128;
/// An error message may not exceed the minimum IPv6 MTU (RFC 4443 2.4 c).
const MIN_MTU: usize = 1280;
/// Bytes an ICMPv6 error puts before the packet it quotes: IPv6 header
/// and the error's own 8.
pub(super) const ERROR_GROWTH: usize = 48;

/// An IPv6 subnet of a VPC: a bridge's prefix and its gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet6 {
    /// The bridge that carries it (also an IPv4 subnet of the VPC).
    pub bridge: BridgeId,
    /// The gateway address every host answers.
    pub gateway: Ipv6Addr,
    /// Prefix length.
    pub prefix: u8,
}

/// Whether `a` and `b` share their first `prefix` bits (IPv6's
/// `vxlan::host::same_subnet`).
pub fn same_prefix6(a: Ipv6Addr, b: Ipv6Addr, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    u128::from(a) & mask == u128::from(b) & mask
}

impl Subnet6 {
    /// Whether `ip` is in the subnet.
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        same_prefix6(ip, self.gateway, self.prefix)
    }

    /// Whether the two share an address.
    pub(super) fn overlaps(&self, other: &Subnet6) -> bool {
        let shorter = if self.prefix <= other.prefix {
            self
        } else {
            other
        };
        let longer = if shorter == self { other } else { self };
        shorter.contains(longer.gateway)
    }
}

/// Whether `ip` is link-local (fe80::/10; `Ipv6Addr::is_unicast_link_local`
/// needs Rust 1.84, above the workspace's 1.80).
pub fn is_link_local(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

fn addr(d: &[u8], at: usize) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&d[at..at + 16]).expect("16 bytes"))
}

/// Whether `d` is a neighbour solicitation (hop limit 255, as RFC 4861
/// 7.1.1 requires of one that is valid).
pub(super) fn is_solicitation(d: &[u8]) -> bool {
    d.len() >= L4 + 24
        && d[14] >> 4 == 6
        && d[20] == IPPROTO_ICMPV6
        && d[21] == 255
        && d[L4] == NEIGHBOUR_SOLICITATION
        && d[L4 + 1] == 0
}

/// Who answers the neighbour solicitation in `d` from `in_port` in
/// `bridge`, if the VPC knows: the router (MAC, is a router) for the
/// subnet's gateway, an endpoint of the same subnet behind another port.
/// A probe from the unspecified address (duplicate address detection) is
/// not answered: it is for the address's owner to defend.
pub(super) fn solicited(
    vpc: &Vpc,
    bridge: BridgeId,
    in_port: PortId,
    d: &[u8],
) -> Option<(MacAddr, bool)> {
    if addr(d, 22).is_unspecified() {
        return None;
    }
    let target = addr(d, L4 + 8);
    let s = vpc.subnet6_of_bridge(bridge)?;
    if target == s.gateway {
        return Some((vpc.mac, true));
    }
    vpc.endpoint6(target)
        .filter(|e| e.bridge == bridge && e.port != in_port)
        .map(|e| (e.mac, false))
}

/// The fate of an IPv6 frame to the router MAC (not a solicitation).
pub(super) fn route(
    vpc: &Vpc,
    in_port: PortId,
    from_tunnel: bool,
    is_tunnel: &impl Fn(crate::types::PortId) -> bool,
    d: &[u8],
) -> Result<(Action, Edit), DropReason> {
    if d.len() < L4 || d[14] >> 4 != 6 {
        return Err(DropReason::Malformed);
    }
    let dst = addr(d, 38);
    if dst.is_multicast() || is_link_local(dst) {
        // Nothing of a link's own scope is routed.
        return Err(DropReason::NoRoute);
    }
    if vpc.is_gateway6(dst) {
        let echo =
            d[20] == IPPROTO_ICMPV6 && d.len() >= L4 + 8 && d[L4] == ECHO_REQUEST && d[L4 + 1] == 0;
        return if echo && !from_tunnel {
            Ok((Action::Reply, Edit::Echo6Reply { mac: vpc.mac }))
        } else {
            Err(DropReason::NoRoute)
        };
    }
    if d[21] <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    let e = deliver(vpc.endpoint6(dst), None, in_port, from_tunnel, is_tunnel)?;
    Ok((
        Action::Output(e.port),
        Edit::Route6 {
            src: vpc.mac,
            dst: e.mac,
        },
    ))
}

/// The ICMPv6 error the router owes the sender of `d`, which it drops for
/// `reason`, if any (RFC 4443 2.4 e: none about an error message, to a
/// multicast destination, or from an address that is not one host's;
/// none for what reaches a gateway, which answers only echo requests).
pub(super) fn error_due(vpc: &Vpc, reason: DropReason, d: &[u8]) -> Option<IcmpError> {
    if d.len() < L4 || u16::from_be_bytes([d[12], d[13]]) != ETH_P_IPV6 || d[14] >> 4 != 6 {
        return None;
    }
    let (src, dst) = (addr(d, 22), addr(d, 38));
    let about_error = d[20] == IPPROTO_ICMPV6 && d.len() > L4 && d[L4] < FIRST_INFO_TYPE;
    if src.is_unspecified() || src.is_multicast() || dst.is_multicast() || about_error {
        return None;
    }
    match reason {
        DropReason::TtlExceeded => Some(IcmpError::TtlExceeded),
        DropReason::NoRoute if vpc.is_gateway6(dst) || is_link_local(dst) => None,
        DropReason::NoRoute if vpc.subnets6.iter().any(|s| s.contains(dst)) => {
            Some(IcmpError::HostUnreachable)
        }
        DropReason::NoRoute => Some(IcmpError::NetUnreachable),
        _ => None,
    }
}

/// ICMPv6 type and code of a router's error.
fn type_code(kind: IcmpError) -> [u8; 2] {
    match kind {
        // Hop limit exceeded in transit.
        IcmpError::TtlExceeded => [3, 0],
        // Destination unreachable: no route.
        IcmpError::NetUnreachable => [1, 0],
        // Destination unreachable: address unreachable.
        IcmpError::HostUnreachable => [1, 3],
    }
}

/// The ICMPv6 checksum of `msg` from `src` to `dst` (RFC 8200 8.1), to
/// be written as native-endian bytes.
fn checksum(src: [u8; 16], dst: [u8; 16], msg: &[u8]) -> u16 {
    use etherparse::checksum::u64_16bit_word as sum16;
    let mut s = sum16::add_slice(0, &src);
    s = sum16::add_slice(s, &dst);
    s = sum16::add_4bytes(s, (msg.len() as u32).to_be_bytes());
    s = sum16::add_4bytes(s, [0, 0, 0, IPPROTO_ICMPV6]);
    s = sum16::add_slice(s, msg);
    sum16::ones_complement(s)
}

/// Writes an IPv6 header at `buf[14..54]` and the Ethernet header before
/// it: `payload` bytes of ICMPv6 from `src` to `dst`.
fn headers(
    buf: &mut [u8],
    eth_dst: [u8; 6],
    eth_src: MacAddr,
    src: [u8; 16],
    dst: [u8; 16],
    payload: usize,
    hops: u8,
) {
    buf[0..6].copy_from_slice(&eth_dst);
    buf[6..12].copy_from_slice(&eth_src.0);
    buf[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    buf[14..18].copy_from_slice(&[0x60, 0, 0, 0]);
    buf[18..20].copy_from_slice(&(payload as u16).to_be_bytes());
    buf[20] = IPPROTO_ICMPV6;
    buf[21] = hops;
    buf[22..38].copy_from_slice(&src);
    buf[38..54].copy_from_slice(&dst);
}

/// Routed: new MACs, hop limit decremented.
pub(super) fn apply_route(frame: &mut [u8], src: MacAddr, dst: MacAddr) {
    frame[0..6].copy_from_slice(&dst.0);
    frame[6..12].copy_from_slice(&src.0);
    frame[21] -= 1;
}

/// Turns the solicitation in `buf` into the advertisement that `mac` has
/// its target (solicited, override; router if it is a gateway's); the
/// advertisement's length ([`ND_LEN`]: a solicitation without a source
/// link-layer option grows by 8).
pub(super) fn advertise(buf: &mut [u8], mac: MacAddr, router: bool) -> usize {
    let asker_mac: [u8; 6] = buf[6..12].try_into().expect("6 bytes");
    let asker: [u8; 16] = buf[22..38].try_into().expect("16 bytes");
    let target: [u8; 16] = buf[L4 + 8..L4 + 24].try_into().expect("16 bytes");
    // Hop limit 255: a receiver drops neighbour discovery with any other.
    headers(buf, asker_mac, mac, target, asker, ND_LEN - L4, 255);
    let m = &mut buf[L4..ND_LEN];
    m[0..4].copy_from_slice(&[NEIGHBOUR_ADVERTISEMENT, 0, 0, 0]);
    // Flags: router, solicited, override.
    m[4] = if router { 0xe0 } else { 0x60 };
    m[5..8].copy_from_slice(&[0; 3]);
    m[8..24].copy_from_slice(&target);
    // Target link-layer address option: type 2, 1 unit of 8 bytes.
    m[24..26].copy_from_slice(&[2, 1]);
    m[26..32].copy_from_slice(&mac.0);
    let c = checksum(target, asker, m);
    m[2..4].copy_from_slice(&c.to_ne_bytes());
    ND_LEN
}

/// Turns an echo request to a gateway into its reply from `mac`.
pub(super) fn echo_reply(frame: &mut [u8], mac: MacAddr) {
    frame.copy_within(6..12, 0);
    frame[6..12].copy_from_slice(&mac.0);
    // Swapping the addresses leaves the pseudo-header's sum as it was.
    let src: [u8; 16] = frame[22..38].try_into().expect("16 bytes");
    frame.copy_within(38..54, 22);
    frame[38..54].copy_from_slice(&src);
    let old = u16::from_be_bytes([frame[L4], frame[L4 + 1]]);
    frame[L4] = ECHO_REPLY;
    let new = u16::from_be_bytes([frame[L4], frame[L4 + 1]]);
    let c = u16::from_be_bytes([frame[L4 + 2], frame[L4 + 3]]);
    frame[L4 + 2..L4 + 4].copy_from_slice(&crate::checksum::replace16(c, old, new).to_be_bytes());
}

/// Writes into `buf` (holding the offending frame's `len` bytes) the
/// ICMPv6 error `kind` about it, from `from` and `mac` to its sender: the
/// packet quoted as far as the error stays within the minimum MTU (and
/// `buf`); the error's length.
pub(super) fn error(
    buf: &mut [u8],
    len: usize,
    mac: MacAddr,
    from: Ipv6Addr,
    kind: IcmpError,
) -> usize {
    let quote = (len - 14)
        .min(MIN_MTU - ERROR_GROWTH)
        .min(buf.len() - 14 - ERROR_GROWTH);
    let n = 14 + ERROR_GROWTH + quote;
    buf.copy_within(14..14 + quote, 14 + ERROR_GROWTH);
    let sender_mac: [u8; 6] = buf[6..12].try_into().expect("6 bytes");
    let q = 14 + ERROR_GROWTH;
    let sender: [u8; 16] = buf[q + 8..q + 24].try_into().expect("16 bytes");
    headers(buf, sender_mac, mac, from.octets(), sender, n - L4, 64);
    let m = &mut buf[L4..n];
    m[0..2].copy_from_slice(&type_code(kind));
    m[2..8].copy_from_slice(&[0; 6]);
    let c = checksum(from.octets(), sender, m);
    m[2..4].copy_from_slice(&c.to_ne_bytes());
    n
}
