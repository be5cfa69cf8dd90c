//! Port security: what a container NIC may send.
//!
//! A container with CAP_NET_RAW (the default) can write any frame. Without
//! this stage it could send with a neighbour's MAC and be learned in its
//! place, answer ARP for the gateway, forge a source address another
//! security group allows, or act as the segment's DHCP server. A
//! [`PortGuard`] holds what the port owns (its MAC, its addresses) and what
//! it is additionally allowed (like OpenStack's allowed-address-pairs, for
//! VRRP and HA virtual IPs); [`PortGuard::check`] judges one frame before
//! the bridge learns from it:
//!
//! - source MAC: the port's, or an allowed one;
//! - frame kind: untagged unless the port may tag; ARP, IPv4 or IPv6
//!   unless another EtherType is allowed;
//! - ARP: sender hardware address = the frame's source MAC; sender
//!   protocol address owned (or 0.0.0.0, a probe);
//! - IPv4: source owned; 0.0.0.0 only from a DHCP client (UDP 68 -> 67);
//!   nothing from UDP port 67 (a DHCP server);
//! - IPv6: source owned, the EUI-64 link-local address of an allowed MAC,
//!   or `::` for duplicate address detection, router solicitation and
//!   MLD reports; no router advertisement or redirect, nothing from UDP
//!   port 547 (a DHCPv6 server); a neighbour advertisement's target must
//!   be owned, and a link-layer address option must carry an allowed MAC.
//!
//! Everything refused counts as `spoofed` (a lie about an address or role)
//! or `forbidden` (a kind of frame the port may not send) on the port.
//! OpenStack's and OVN's port security apply the same rules; a router or
//! a VM-like container opts out explicitly.
//!
//! Cost: untagged TCP and UDP over IPv4 is judged from fixed offsets (the
//! source MAC, the source address against a few owned prefixes); other
//! frames take one [`FlowKey::parse`]. `cargo bench -p vsbench --bench
//! stages -- pipeline/forward_known_dst_udp4` compares a guarded port
//! with an open one.

use crate::flow::{
    FlowKey, ParseError, ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_ICMPV6, IPPROTO_TCP,
    IPPROTO_UDP, L3,
};
use crate::stats::DropReason;
use crate::types::MacAddr;

/// An IPv4 or IPv6 prefix: the address (IPv4 in the low 32 bits) and its
/// length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// The address.
    pub addr: u128,
    /// Prefix length (up to 32 or 128).
    pub len: u8,
}

impl Prefix {
    /// One address as a host prefix.
    pub fn host(ip: std::net::IpAddr) -> Prefix {
        match ip {
            std::net::IpAddr::V4(a) => Prefix {
                v6: false,
                addr: u128::from(u32::from(a)),
                len: 32,
            },
            std::net::IpAddr::V6(a) => Prefix {
                v6: true,
                addr: u128::from(a),
                len: 128,
            },
        }
    }

    /// `10.0.0.0/24`, `fd00::/64` or a bare address.
    pub fn parse(s: &str) -> Option<Prefix> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let mut p = Prefix::host(a.parse().ok()?);
        let max = if p.v6 { 128 } else { 32 };
        p.len = l.unwrap_or(max);
        (p.len <= max).then_some(p)
    }

    fn contains(&self, v6: bool, addr: u128) -> bool {
        let bits = if self.v6 { 128 } else { 32 };
        if v6 != self.v6 {
            return false;
        }
        let shift = bits - u32::from(self.len);
        shift >= bits || (addr ^ self.addr) >> shift == 0
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.v6 {
            write!(f, "{}/{}", std::net::Ipv6Addr::from(self.addr), self.len)
        } else {
            write!(
                f,
                "{}/{}",
                std::net::Ipv4Addr::from(self.addr as u32),
                self.len
            )
        }
    }
}

/// What a port may send (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortGuard {
    /// The port's MAC first, then the allowed ones.
    macs: Vec<MacAddr>,
    /// Owned addresses, allowed prefixes and the link-local addresses of
    /// the MACs.
    sources: Vec<Prefix>,
    vlan: bool,
    ethertypes: Vec<u16>,
}

/// How a port's guard is configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardConf {
    /// The port's MAC.
    pub mac: MacAddr,
    /// Its addresses (from the config, CNI's IPAM or `vswitchctl`).
    pub addresses: Vec<std::net::IpAddr>,
    /// Further source prefixes it may use (virtual IPs).
    pub allowed_addresses: Vec<Prefix>,
    /// Further source MACs it may use (VRRP's virtual MAC).
    pub allowed_macs: Vec<MacAddr>,
    /// It may send 802.1Q/802.1ad-tagged frames.
    pub allow_vlan: bool,
    /// EtherTypes it may send besides ARP, IPv4 and IPv6.
    pub allowed_ethertypes: Vec<u16>,
}

const ICMPV6_RS: u16 = 133;
const ICMPV6_RA: u16 = 134;
const ICMPV6_NS: u16 = 135;
const ICMPV6_NA: u16 = 136;
const ICMPV6_REDIRECT: u16 = 137;
/// MLDv1 report and done, MLDv2 report: what a host sends from `::`
/// before it has a link-local address.
const MLD_FROM_UNSPECIFIED: [u16; 3] = [131, 132, 143];

/// The EUI-64 link-local address (fe80::/64) of `mac` (RFC 4291 app. A).
pub fn link_local(mac: MacAddr) -> u128 {
    let m = mac.0;
    let iid = u64::from_be_bytes([m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
    (0xfe80u128 << 112) | u128::from(iid)
}

impl PortGuard {
    /// The guard of a port configured as `c`.
    pub fn new(c: &GuardConf) -> PortGuard {
        let mut macs = vec![c.mac];
        macs.extend(c.allowed_macs.iter().copied().filter(|m| *m != c.mac));
        let mut sources: Vec<Prefix> = c.addresses.iter().map(|&a| Prefix::host(a)).collect();
        sources.extend(c.allowed_addresses.iter().copied());
        sources.extend(macs.iter().map(|&m| Prefix {
            v6: true,
            addr: link_local(m),
            len: 128,
        }));
        PortGuard {
            macs,
            sources,
            vlan: c.allow_vlan,
            ethertypes: c.allowed_ethertypes.clone(),
        }
    }

    /// The port's own MAC (pinned in its bridge's MAC table).
    pub fn mac(&self) -> MacAddr {
        self.macs[0]
    }

    fn mac_allowed(&self, m: &[u8]) -> bool {
        self.macs.iter().any(|a| a.0 == m)
    }

    fn owns(&self, v6: bool, addr: u128) -> bool {
        self.sources.iter().any(|p| p.contains(v6, addr))
    }

    /// Whether the port may send `frame` (at least an Ethernet header
    /// long); the reason to drop it if not.
    pub fn check(&self, frame: &[u8]) -> Result<(), DropReason> {
        if !self.mac_allowed(&frame[6..12]) {
            return Err(DropReason::Spoofed);
        }
        if let Some(v) = self.fast_ipv4(frame) {
            return v;
        }
        self.check_parsed(frame)
    }

    /// [`PortGuard::check`] of a frame whose source MAC is allowed, from
    /// its parsed headers.
    fn check_parsed(&self, frame: &[u8]) -> Result<(), DropReason> {
        let key = FlowKey::parse(frame).map_err(|e| match e {
            ParseError::VlanStack => DropReason::Forbidden,
            _ => DropReason::Malformed,
        })?;
        if key.tags > 0 && !self.vlan {
            return Err(DropReason::Forbidden);
        }
        let l3 = usize::from(key.l3_offset);
        match key.ethertype {
            ETH_P_ARP => self.check_arp(frame, l3),
            ETH_P_IPV4 => self.check_ipv4(&key),
            ETH_P_IPV6 => self.check_ipv6(frame, &key),
            t if self.ethertypes.contains(&t) => Ok(()),
            _ => Err(DropReason::Forbidden),
        }
    }

    /// The bulk of a container's traffic, untagged TCP or UDP over IPv4
    /// from a source address, judged from a few fixed offsets without a
    /// full parse; None for anything else (the full check decides).
    #[inline]
    fn fast_ipv4(&self, f: &[u8]) -> Option<Result<(), DropReason>> {
        if f.len() < 34 || f[12..14] != [0x08, 0x00] || f[14] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let later_fragment = u16::from_be_bytes([f[20], f[21]]) & 0x1fff != 0;
        let src = u32::from_be_bytes([f[26], f[27], f[28], f[29]]);
        if ihl < 20 || f.len() < 14 + ihl + 8 || later_fragment || src == 0 {
            return None;
        }
        let sport = u16::from_be_bytes([f[14 + ihl], f[15 + ihl]]);
        match f[23] {
            IPPROTO_TCP => {}
            IPPROTO_UDP if sport != 67 => {}
            _ => return None,
        }
        Some(if self.owns(false, u128::from(src)) {
            Ok(())
        } else {
            Err(DropReason::Spoofed)
        })
    }

    fn check_arp(&self, frame: &[u8], l3: usize) -> Result<(), DropReason> {
        // Ethernet/IPv4 ARP: htype 1, ptype 0x0800, hlen 6, plen 4.
        let arp = frame.get(l3..l3 + 28).ok_or(DropReason::Malformed)?;
        if arp[0..6] != [0, 1, 8, 0, 6, 4] {
            return Err(DropReason::Malformed);
        }
        let spa = u32::from_be_bytes([arp[14], arp[15], arp[16], arp[17]]);
        if arp[8..14] != frame[6..12] || (spa != 0 && !self.owns(false, u128::from(spa))) {
            return Err(DropReason::Spoofed);
        }
        Ok(())
    }

    fn check_ipv4(&self, key: &FlowKey) -> Result<(), DropReason> {
        debug_assert_eq!(key.l3, L3::V4);
        let udp = key.proto == IPPROTO_UDP && !key.later_fragment;
        if udp && key.src_port == 67 {
            return Err(DropReason::Spoofed);
        }
        let dhcp_client = udp && key.src_port == 68 && key.dst_port == 67;
        if self.owns(false, key.src_ip) || (key.src_ip == 0 && dhcp_client) {
            Ok(())
        } else {
            Err(DropReason::Spoofed)
        }
    }

    fn check_ipv6(&self, frame: &[u8], key: &FlowKey) -> Result<(), DropReason> {
        let icmp = (key.proto == IPPROTO_ICMPV6 && !key.later_fragment).then_some(key.src_port);
        if key.proto == IPPROTO_UDP && !key.later_fragment && key.src_port == 547 {
            return Err(DropReason::Spoofed);
        }
        match icmp {
            Some(ICMPV6_RA | ICMPV6_REDIRECT) => return Err(DropReason::Spoofed),
            Some(t @ (ICMPV6_NS | ICMPV6_NA)) => self.check_nd(frame, key, t)?,
            _ => {}
        }
        let unspecified_ok = icmp
            .is_some_and(|t| t == ICMPV6_NS || t == ICMPV6_RS || MLD_FROM_UNSPECIFIED.contains(&t));
        if self.owns(true, key.src_ip) || (key.src_ip == 0 && unspecified_ok) {
            Ok(())
        } else {
            Err(DropReason::Spoofed)
        }
    }

    /// A neighbour solicitation or advertisement: an advertised target
    /// must be owned; a link-layer address option must be an allowed MAC.
    fn check_nd(&self, frame: &[u8], key: &FlowKey, ty: u16) -> Result<(), DropReason> {
        let l4 = usize::from(key.l4_offset);
        let target = frame.get(l4 + 8..l4 + 24).ok_or(DropReason::Malformed)?;
        let target = u128::from_be_bytes(target.try_into().expect("16 bytes"));
        if ty == ICMPV6_NA && !self.owns(true, target) {
            return Err(DropReason::Spoofed);
        }
        // Options: type, length in units of 8 bytes, value.
        let mut off = l4 + 24;
        while let Some(o) = frame.get(off..off + 2) {
            let len = usize::from(o[1]) * 8;
            if len == 0 {
                return Err(DropReason::Malformed);
            }
            // Source (1) or target (2) link-layer address.
            if o[0] == 1 || o[0] == 2 {
                let mac = frame.get(off + 2..off + 8).ok_or(DropReason::Malformed)?;
                if !self.mac_allowed(mac) {
                    return Err(DropReason::Spoofed);
                }
            }
            off += len;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use std::net::IpAddr;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const OTHER: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const VIP_MAC: [u8; 6] = [0, 0, 0x5e, 0, 1, 1];

    fn guard() -> PortGuard {
        PortGuard::new(&GuardConf {
            mac: MacAddr(MAC),
            addresses: vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            allowed_addresses: vec![Prefix::parse("10.0.0.100/31").unwrap()],
            allowed_macs: vec![MacAddr(VIP_MAC)],
            ..GuardConf::default()
        })
    }

    fn udp4(src_mac: [u8; 6], src: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(src_mac, [0xff; 6])
            .ipv4(src, [10, 0, 0, 9], 64)
            .udp(sport, dport)
            .write(&mut v, &[0; 8])
            .unwrap();
        v
    }

    fn arp(src_mac: [u8; 6], sha: [u8; 6], spa: [u8; 4]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&[0xff; 6]);
        v.extend_from_slice(&src_mac);
        v.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
        v.extend_from_slice(&sha);
        v.extend_from_slice(&spa);
        v.extend_from_slice(&[0; 6]);
        v.extend_from_slice(&[10, 0, 0, 9]);
        v
    }

    fn icmp6(src: u128, ty: u8, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(MAC, [0x33, 0x33, 0, 0, 0, 1])
            .ipv6(src.to_be_bytes(), [0xff; 16], 255)
            .icmpv6(etherparse::Icmpv6Type::Unknown {
                type_u8: ty,
                code_u8: 0,
                bytes5to8: [0; 4],
            })
            .write(&mut v, body)
            .unwrap();
        v
    }

    /// A neighbour message body: target, then a link-layer option.
    fn nd_body(target: u128, opt: u8, mac: [u8; 6]) -> Vec<u8> {
        let mut b = target.to_be_bytes().to_vec();
        b.extend_from_slice(&[opt, 1]);
        b.extend_from_slice(&mac);
        b
    }

    #[test]
    fn own_and_allowed_sources_pass_others_are_spoofed() {
        let g = guard();
        assert_eq!(g.check(&udp4(MAC, [10, 0, 0, 1], 5, 6)), Ok(()));
        assert_eq!(g.check(&udp4(MAC, [10, 0, 0, 101], 5, 6)), Ok(()));
        assert_eq!(g.check(&udp4(VIP_MAC, [10, 0, 0, 100], 5, 6)), Ok(()));
        let spoofed = Err(DropReason::Spoofed);
        assert_eq!(g.check(&udp4(MAC, [10, 0, 0, 2], 5, 6)), spoofed);
        assert_eq!(g.check(&udp4(MAC, [10, 0, 0, 102], 5, 6)), spoofed);
        assert_eq!(g.check(&udp4(OTHER, [10, 0, 0, 1], 5, 6)), spoofed);
    }

    #[test]
    fn dhcp_clients_pass_dhcp_servers_do_not() {
        let g = guard();
        assert_eq!(g.check(&udp4(MAC, [0; 4], 68, 67)), Ok(()));
        assert_eq!(g.check(&udp4(MAC, [0; 4], 5, 67)), Err(DropReason::Spoofed));
        assert_eq!(
            g.check(&udp4(MAC, [10, 0, 0, 1], 67, 68)),
            Err(DropReason::Spoofed)
        );
    }

    #[test]
    fn arp_must_tell_the_truth() {
        let g = guard();
        assert_eq!(g.check(&arp(MAC, MAC, [10, 0, 0, 1])), Ok(()));
        assert_eq!(g.check(&arp(MAC, MAC, [0; 4])), Ok(()), "a probe");
        let spoofed = Err(DropReason::Spoofed);
        // The gateway's address, or another MAC inside the ARP body.
        assert_eq!(g.check(&arp(MAC, MAC, [10, 0, 0, 254])), spoofed);
        assert_eq!(g.check(&arp(MAC, OTHER, [10, 0, 0, 1])), spoofed);
        let mut short = arp(MAC, MAC, [10, 0, 0, 1]);
        short.truncate(30);
        assert_eq!(g.check(&short), Err(DropReason::Malformed));
    }

    #[test]
    fn ipv6_neighbour_discovery_is_judged() {
        let g = guard();
        let own: u128 = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().into();
        let other: u128 = "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().into();
        let ll = link_local(MacAddr(MAC));
        assert_eq!(g.check(&icmp6(ll, 136, &nd_body(own, 2, MAC))), Ok(()));
        assert_eq!(
            g.check(&icmp6(0, 135, &nd_body(own, 1, MAC))),
            Ok(()),
            "DAD"
        );
        assert_eq!(g.check(&icmp6(0, 143, &[0; 4])), Ok(()), "MLDv2 report");
        let spoofed = Err(DropReason::Spoofed);
        assert_eq!(g.check(&icmp6(ll, 136, &nd_body(other, 2, MAC))), spoofed);
        assert_eq!(g.check(&icmp6(ll, 136, &nd_body(own, 2, OTHER))), spoofed);
        assert_eq!(g.check(&icmp6(ll, 135, &nd_body(other, 1, OTHER))), spoofed);
        assert_eq!(g.check(&icmp6(ll, 134, &[0; 12])), spoofed, "an RA");
        assert_eq!(g.check(&icmp6(0, 128, &[0; 8])), spoofed, "echo from ::");
        assert_eq!(g.check(&icmp6(other, 128, &[0; 8])), spoofed);
        assert_eq!(g.check(&icmp6(own, 128, &[0; 8])), Ok(()));
    }

    #[test]
    fn tags_and_other_ethertypes_are_forbidden_unless_allowed() {
        let g = guard();
        let mut tagged = Vec::new();
        PacketBuilder::ethernet2(MAC, [0xff; 6])
            .single_vlan(5.try_into().unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 9], 64)
            .udp(1, 2)
            .write(&mut tagged, &[0; 8])
            .unwrap();
        assert_eq!(g.check(&tagged), Err(DropReason::Forbidden));
        let mut lldp = udp4(MAC, [10, 0, 0, 1], 1, 2);
        lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
        assert_eq!(g.check(&lldp), Err(DropReason::Forbidden));
        let open = PortGuard::new(&GuardConf {
            mac: MacAddr(MAC),
            addresses: vec![IpAddr::from([10, 0, 0, 1])],
            allow_vlan: true,
            allowed_ethertypes: vec![0x88cc],
            ..GuardConf::default()
        });
        assert_eq!(open.check(&tagged), Ok(()));
        assert_eq!(open.check(&lldp), Ok(()));
        // Three tags are refused even where tags are allowed.
        let mut three = tagged.clone();
        three.splice(12..12, [0x81, 0, 0, 5, 0x81, 0, 0, 5]);
        assert_eq!(open.check(&three), Err(DropReason::Forbidden));
    }

    proptest::proptest! {
        /// The fast path judges plain TCP/UDP over IPv4 as the full
        /// check does.
        #[test]
        fn the_fast_path_agrees_with_the_full_check(
            src in proptest::sample::select(vec![[10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 101], [0, 0, 0, 0]]),
            sport in proptest::sample::select(vec![67u16, 68, 80, 5000]),
            tcp in proptest::bool::ANY,
            ihl_extra in 0usize..3,
        ) {
            let g = guard();
            let mut f = Vec::new();
            let b = PacketBuilder::ethernet2(MAC, [0xff; 6]).ipv4(src, [10, 0, 0, 9], 64);
            if tcp {
                b.tcp(sport, 80, 1, 100).write(&mut f, &[0; 8]).unwrap();
            } else {
                b.udp(sport, 67).write(&mut f, &[0; 8]).unwrap();
            }
            // IPv4 options (NOPs) shift the L4 header.
            if ihl_extra > 0 {
                f.splice(34..34, vec![1u8; ihl_extra * 4]);
                f[14] += ihl_extra as u8;
                let total = u16::from_be_bytes([f[16], f[17]]) + ihl_extra as u16 * 4;
                f[16..18].copy_from_slice(&total.to_be_bytes());
            }
            if let Some(fast) = g.fast_ipv4(&f) {
                proptest::prop_assert_eq!(fast, g.check_parsed(&f));
            }
        }
    }

    #[test]
    fn prefixes_parse_and_contain() {
        let p = Prefix::parse("10.1.0.0/16").unwrap();
        assert!(p.contains(false, 0x0a01_ffff));
        assert!(!p.contains(false, 0x0a02_0000));
        assert!(!p.contains(true, 0x0a01_0000));
        assert!(Prefix::parse("0.0.0.0/0").unwrap().contains(false, 7));
        assert!(Prefix::parse("::/0").unwrap().contains(true, 7));
        assert_eq!(Prefix::parse("10.0.0.1/33"), None);
        assert_eq!(Prefix::parse("fd00::/64").unwrap().to_string(), "fd00::/64");
        assert_eq!(Prefix::parse("nonsense"), None);
    }
}
