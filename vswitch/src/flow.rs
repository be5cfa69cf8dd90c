//! Flow-key parsing: one pass over Ethernet, 802.1Q, IPv4/IPv6 and L4 headers.
//!
//! Why our own parser rather than `etherparse::SlicedPacket`: the pipeline needs
//! a fixed handful of fields (MACs, addresses, protocol, ports, TCP flags) and
//! their offsets, read in one bounds-checked pass with no per-header validation
//! beyond what the switch acts on. etherparse validates and slices every header
//! into an enum tree, which costs more per packet; it stays as the reference the
//! tests compare this parser against.
//!
//! Panic contract: [`FlowKey::parse`] never panics, whatever the bytes; every
//! read is bounds-checked and a short frame yields a [`ParseError`].

use crate::types::MacAddr;

/// EtherType of IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType of an 802.1Q tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType of an 802.1ad (QinQ) service tag.
pub const ETH_P_8021AD: u16 = 0x88a8;

/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;

/// Why a frame could not be parsed far enough to be switched or classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than an Ethernet header (or its VLAN tags).
    TruncatedL2,
    /// An IPv4/IPv6 header that is short or has an impossible version/length.
    BadL3,
    /// A TCP/UDP/ICMP header cut short in a first fragment.
    TruncatedL4,
    /// More than two VLAN tags. No standard stacks more (802.1Q, QinQ);
    /// a receiving kernel strips nested tags that a parser stopping at
    /// two would take for a non-IP payload, so such frames are refused
    /// rather than passed unjudged.
    VlanStack,
    /// IPv6 extension headers beyond [`MAX_IPV6_EXT_HEADERS`]: the upper
    /// layer is out of reach of a bounded walk (RFC 9098 lets a
    /// middlebox drop such chains).
    ExtHeaderChain,
}

/// IPv6 extension headers walked before a frame is refused. Real stacks
/// send at most a handful (hop-by-hop, routing, fragment, destination
/// options, AH); a chain this long is an evasion attempt.
pub const MAX_IPV6_EXT_HEADERS: usize = 16;

/// Network layer of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L3 {
    /// Not IP (ARP, LLDP, ...): only the L2 fields are set.
    #[default]
    Other,
    /// IPv4: addresses live in the low 32 bits of `src_ip`/`dst_ip`.
    V4,
    /// IPv6.
    V6,
}

/// The fields the pipeline switches and classifies on.
///
/// Addresses are u128 so IPv4 and IPv6 share one key shape (IPv4 in the low
/// 32 bits, told apart by `l3`). For ICMP, `src_port`/`dst_port` carry the
/// type and code, as rte_acl and OVS do, so port-range rules and ICMP
/// type/code rules share one matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowKey {
    /// Destination MAC.
    pub dst_mac: MacAddr,
    /// Source MAC.
    pub src_mac: MacAddr,
    /// VLAN id of the outer 802.1Q tag, if any.
    pub vlan: Option<u16>,
    /// VLAN tags (0 to 2).
    pub tags: u8,
    /// EtherType after any VLAN tags.
    pub ethertype: u16,
    /// Network layer.
    pub l3: L3,
    /// Source address (see the type's doc for IPv4).
    pub src_ip: u128,
    /// Destination address.
    pub dst_ip: u128,
    /// IP protocol (IPv6: after extension headers).
    pub proto: u8,
    /// DSCP of the IP header.
    pub dscp: u8,
    /// TCP/UDP source port, or ICMP type.
    pub src_port: u16,
    /// TCP/UDP destination port, or ICMP code.
    pub dst_port: u16,
    /// TCP flags (FIN=0x01 SYN=0x02 RST=0x04 ACK=0x10).
    pub tcp_flags: u8,
    /// Not the first fragment: no L4 header, ports are 0.
    pub later_fragment: bool,
    /// A fragment (first or later): its IP identification (IPv4: 16
    /// bits; IPv6: the fragment header's 32).
    pub fragment: Option<u32>,
    /// Offset of the L3 header from the start of the frame.
    pub l3_offset: u16,
    /// Offset of the L4 header (0 if none).
    pub l4_offset: u16,
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

impl FlowKey {
    /// Parses only Ethernet and VLAN tags: all an L2 switch needs.
    #[inline]
    pub fn parse_l2(frame: &[u8]) -> Result<FlowKey, ParseError> {
        if frame.len() < ETH_HLEN {
            return Err(ParseError::TruncatedL2);
        }
        let mut key = FlowKey {
            dst_mac: MacAddr::from_slice(&frame[0..6]),
            src_mac: MacAddr::from_slice(&frame[6..12]),
            ..FlowKey::default()
        };
        let mut off = 12;
        let mut ethertype = be16(frame, off);
        // Up to two tags (QinQ); the outer one is the VLAN of the key.
        while ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            if key.tags == 2 {
                return Err(ParseError::VlanStack);
            }
            if frame.len() < off + 2 + VLAN_HLEN {
                return Err(ParseError::TruncatedL2);
            }
            if key.vlan.is_none() {
                key.vlan = Some(be16(frame, off + 2) & 0x0fff);
            }
            key.tags += 1;
            off += VLAN_HLEN;
            ethertype = be16(frame, off);
        }
        key.ethertype = ethertype;
        key.l3_offset = (off + 2) as u16;
        Ok(key)
    }

    /// Parses L2, L3 and L4: the key the ACL and session stages need.
    pub fn parse(frame: &[u8]) -> Result<FlowKey, ParseError> {
        let mut key = Self::parse_l2(frame)?;
        let l3 = key.l3_offset as usize;
        match key.ethertype {
            ETH_P_IPV4 => key.parse_ipv4(frame, l3)?,
            ETH_P_IPV6 => key.parse_ipv6(frame, l3)?,
            _ => {}
        }
        Ok(key)
    }

    fn parse_ipv4(&mut self, frame: &[u8], l3: usize) -> Result<(), ParseError> {
        let ip = frame.get(l3..).ok_or(ParseError::BadL3)?;
        if ip.len() < IPV4_MIN_HLEN || ip[0] >> 4 != 4 {
            return Err(ParseError::BadL3);
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(be16(ip, 2));
        if ihl < IPV4_MIN_HLEN || ip.len() < ihl || total < ihl {
            return Err(ParseError::BadL3);
        }
        self.l3 = L3::V4;
        self.dscp = ip[1] >> 2;
        self.proto = ip[9];
        self.src_ip = u128::from(u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]));
        self.dst_ip = u128::from(u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]));
        let frag = be16(ip, 6);
        if frag & 0x3fff != 0 {
            // More fragments or a non-zero offset: a fragment.
            self.fragment = Some(u32::from(be16(ip, 4)));
        }
        if frag & 0x1fff != 0 {
            self.later_fragment = true;
            return Ok(());
        }
        self.parse_l4(frame, l3 + ihl)
    }

    fn parse_ipv6(&mut self, frame: &[u8], l3: usize) -> Result<(), ParseError> {
        let ip = frame.get(l3..).ok_or(ParseError::BadL3)?;
        if ip.len() < IPV6_HLEN || ip[0] >> 4 != 6 {
            return Err(ParseError::BadL3);
        }
        self.l3 = L3::V6;
        self.dscp = ((be16(ip, 0) >> 6) & 0x3f) as u8;
        self.src_ip = u128::from_be_bytes(ip[8..24].try_into().expect("16 bytes"));
        self.dst_ip = u128::from_be_bytes(ip[24..40].try_into().expect("16 bytes"));
        // Walk the extension headers to the upper layer; a chain cut short
        // by the frame's end, or longer than any stack sends, is refused.
        let mut next = ip[6];
        let mut off = l3 + IPV6_HLEN;
        let mut walked = 0;
        loop {
            let len = match next {
                // Hop-by-hop, routing, destination options, mobility,
                // HIP, shim6: (len + 1) * 8 bytes.
                0 | 43 | 60 | 135 | 139 | 140 => {
                    let h = frame.get(off..off + 2).ok_or(ParseError::BadL3)?;
                    (usize::from(h[1]) + 1) * 8
                }
                // Authentication header: (len + 2) * 4 bytes.
                51 => {
                    let h = frame.get(off..off + 2).ok_or(ParseError::BadL3)?;
                    (usize::from(h[1]) + 2) * 4
                }
                // Fragment header: 8 bytes; a non-zero offset has no L4 header.
                44 => {
                    let h = frame.get(off..off + 8).ok_or(ParseError::BadL3)?;
                    self.fragment = Some(u32::from_be_bytes([h[4], h[5], h[6], h[7]]));
                    if be16(h, 2) >> 3 != 0 {
                        self.proto = h[0];
                        self.later_fragment = true;
                        return Ok(());
                    }
                    8
                }
                _ => break,
            };
            walked += 1;
            if walked > MAX_IPV6_EXT_HEADERS {
                return Err(ParseError::ExtHeaderChain);
            }
            next = frame[off];
            off += len;
            if off > frame.len() {
                return Err(ParseError::BadL3);
            }
        }
        self.proto = next;
        self.parse_l4(frame, off)
    }

    fn parse_l4(&mut self, frame: &[u8], off: usize) -> Result<(), ParseError> {
        let need = match self.proto {
            IPPROTO_TCP => 20,
            IPPROTO_UDP => 8,
            IPPROTO_ICMP | IPPROTO_ICMPV6 => 4,
            _ => return Ok(()),
        };
        let l4 = frame.get(off..off + need).ok_or(ParseError::TruncatedL4)?;
        self.l4_offset = off as u16;
        match self.proto {
            IPPROTO_ICMP | IPPROTO_ICMPV6 => {
                self.src_port = u16::from(l4[0]);
                self.dst_port = u16::from(l4[1]);
            }
            _ => {
                self.src_port = be16(l4, 0);
                self.dst_port = be16(l4, 2);
                if self.proto == IPPROTO_TCP {
                    self.tcp_flags = l4[13];
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    const SRC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const DST: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn udp4(payload: usize) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(SRC, DST)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1234, 80);
        let mut out = Vec::new();
        b.write(&mut out, &vec![0u8; payload]).unwrap();
        out
    }

    #[test]
    fn parses_udp_over_ipv4() {
        let k = FlowKey::parse(&udp4(18)).unwrap();
        assert_eq!(k.src_mac.0, SRC);
        assert_eq!(k.dst_mac.0, DST);
        assert_eq!(k.l3, L3::V4);
        assert_eq!(k.src_ip, 0x0a00_0001);
        assert_eq!(k.dst_ip, 0x0a00_0002);
        assert_eq!((k.proto, k.src_port, k.dst_port), (IPPROTO_UDP, 1234, 80));
        assert_eq!((k.l3_offset, k.l4_offset), (14, 34));
    }

    #[test]
    fn parses_tcp_over_vlan_ipv6() {
        let b = PacketBuilder::ethernet2(SRC, DST)
            .single_vlan(0x0123.try_into().unwrap())
            .ipv6([0x20; 16], [0x30; 16], 64)
            .tcp(4000, 443, 7, 1024)
            .syn();
        let mut f = Vec::new();
        b.write(&mut f, &[]).unwrap();
        let k = FlowKey::parse(&f).unwrap();
        assert_eq!(k.vlan, Some(0x123));
        assert_eq!(k.l3, L3::V6);
        assert_eq!(k.src_ip, u128::from_be_bytes([0x20; 16]));
        assert_eq!((k.proto, k.src_port, k.dst_port), (IPPROTO_TCP, 4000, 443));
        assert_eq!(k.tcp_flags & 0x02, 0x02);
    }

    #[test]
    fn icmp_type_and_code_land_in_ports() {
        let b = PacketBuilder::ethernet2(SRC, DST)
            .ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64)
            .icmpv4_echo_request(1, 1);
        let mut f = Vec::new();
        b.write(&mut f, &[0; 8]).unwrap();
        let k = FlowKey::parse(&f).unwrap();
        assert_eq!((k.proto, k.src_port, k.dst_port), (IPPROTO_ICMP, 8, 0));
    }

    #[test]
    fn truncated_frames_are_errors_not_panics() {
        let f = udp4(0);
        assert_eq!(FlowKey::parse(&f[..13]), Err(ParseError::TruncatedL2));
        assert_eq!(FlowKey::parse(&f[..20]), Err(ParseError::BadL3));
        assert_eq!(FlowKey::parse(&f[..38]), Err(ParseError::TruncatedL4));
        // L2 parsing alone does not care about L3.
        assert!(FlowKey::parse_l2(&f[..20]).is_ok());
    }

    #[test]
    fn later_fragments_have_no_ports() {
        let mut f = udp4(18);
        f[14 + 6] = 0x00;
        f[14 + 7] = 0x10; // fragment offset 16 * 8 bytes
        let k = FlowKey::parse(&f).unwrap();
        assert!(k.later_fragment);
        assert_eq!((k.src_port, k.dst_port), (0, 0));
    }

    #[test]
    fn more_than_two_vlan_tags_are_refused() {
        let mut f = udp4(18);
        for tags in 1..=3 {
            f.splice(12..12, [0x81, 0x00, 0x00, tags]);
            let r = FlowKey::parse(&f);
            if tags <= 2 {
                let k = r.unwrap();
                assert_eq!(
                    (k.tags, k.vlan, k.l3),
                    (tags, Some(u16::from(tags)), L3::V4)
                );
            } else {
                assert_eq!(r, Err(ParseError::VlanStack));
            }
        }
    }

    /// UDP over IPv6 behind `n` destination-options headers, the last
    /// cut to `cut` bytes of its 8 when set.
    fn udp6_behind_options(n: usize) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .ipv6([1; 16], [2; 16], 64)
            .udp(53, 5353)
            .write(&mut f, &[0; 4])
            .unwrap();
        f[14 + 6] = 60;
        let mut ext = Vec::new();
        for i in 0..n {
            let next = if i + 1 == n { IPPROTO_UDP } else { 60 };
            ext.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
        }
        f.splice(54..54, ext);
        f
    }

    #[test]
    fn ipv6_extension_headers_are_walked_to_the_upper_layer() {
        // Nine headers: one more than the old bound, still TCP/UDP.
        let k = FlowKey::parse(&udp6_behind_options(9)).unwrap();
        assert_eq!((k.proto, k.src_port, k.dst_port), (IPPROTO_UDP, 53, 5353));
        assert_eq!(usize::from(k.l4_offset), 54 + 9 * 8);
        assert_eq!(
            FlowKey::parse(&udp6_behind_options(MAX_IPV6_EXT_HEADERS + 1)),
            Err(ParseError::ExtHeaderChain)
        );
        // A chain cut short by the frame's end.
        let f = udp6_behind_options(3);
        assert_eq!(FlowKey::parse(&f[..54 + 12]), Err(ParseError::BadL3));
        // An AH header ((len + 2) * 4 bytes) is walked too.
        let mut f = udp6_behind_options(1);
        f[14 + 6] = 51;
        f[55] = 0; // 8 bytes
        assert_eq!(FlowKey::parse(&f).unwrap().proto, IPPROTO_UDP);
    }

    #[test]
    fn fragments_carry_their_identification() {
        let mut f = udp4(18);
        f[14 + 4..14 + 6].copy_from_slice(&0x4242u16.to_be_bytes());
        assert_eq!(FlowKey::parse(&f).unwrap().fragment, None);
        f[14 + 6] = 0x20; // more fragments, offset 0: the first
        let k = FlowKey::parse(&f).unwrap();
        assert_eq!(
            (k.fragment, k.later_fragment, k.dst_port),
            (Some(0x4242), false, 80)
        );
    }

    proptest! {
        /// Arbitrary bytes never panic the parser.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = FlowKey::parse(&bytes);
        }

        /// On well-formed UDP/TCP frames the key agrees with etherparse.
        #[test]
        fn agrees_with_etherparse(
            sip in any::<[u8; 4]>(), dip in any::<[u8; 4]>(),
            sp in any::<u16>(), dp in any::<u16>(), tcp in any::<bool>(),
            payload in 0usize..64,
        ) {
            let b = PacketBuilder::ethernet2(SRC, DST).ipv4(sip, dip, 64);
            let mut f = Vec::new();
            if tcp {
                b.tcp(sp, dp, 1, 100).write(&mut f, &vec![0; payload]).unwrap();
            } else {
                b.udp(sp, dp).write(&mut f, &vec![0; payload]).unwrap();
            }
            let k = FlowKey::parse(&f).unwrap();
            let r = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = r.net else { panic!("not ipv4") };
            prop_assert_eq!(k.src_ip, u128::from(u32::from(ip.header().source_addr())));
            prop_assert_eq!(k.dst_ip, u128::from(u32::from(ip.header().destination_addr())));
            let (rsp, rdp) = match r.transport {
                Some(etherparse::TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
                Some(etherparse::TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
                _ => panic!("no transport"),
            };
            prop_assert_eq!((k.src_port, k.dst_port), (rsp, rdp));
        }
    }
}
