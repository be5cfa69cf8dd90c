//! Decap classification: a frame on the uplink is VXLAN for us when it is
//! IPv4 to our VTEP address, UDP to our VXLAN port, not fragmented, and its
//! VXLAN header has the I flag. Anything else that is not for our VTEP is
//! ordinary uplink traffic ([`Decap::NotOurs`]); what is addressed to our
//! VXLAN port but broken is dropped and counted by reason.

use std::net::Ipv4Addr;

use crate::{ETH_LEN, ETH_P_IPV4, FLAG_I, IPPROTO_UDP, IPV4_LEN, UDP_LEN, VXLAN_LEN};

/// What the outer headers said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    /// The remote VTEP's (or its router's) MAC.
    pub src_mac: [u8; 6],
    /// The remote VTEP address: where the inner source MAC lives.
    pub src_ip: Ipv4Addr,
    /// The VNI: which bridge domain the inner frame enters.
    pub vni: u32,
    /// Offset of the inner Ethernet frame.
    pub inner_offset: usize,
}

/// Why a frame to our VXLAN port was not decapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecapError {
    /// Cut short in the outer headers or with no room for an inner frame.
    Truncated,
    /// The outer IPv4 header is invalid (version, IHL, total length).
    BadIpHeader,
    /// A fragment (VTEPs do not reassemble; RFC 7348 section 4.3).
    Fragment,
    /// The I flag is clear.
    BadFlags,
}

/// What to do with an uplink frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decap {
    /// VXLAN for our VTEP.
    Tunnel(Outer),
    /// Not VXLAN to our VTEP: switch or punt it as ordinary traffic.
    NotOurs,
    /// VXLAN to our VTEP, but broken: drop and count.
    Bad(DecapError),
}

/// Whether a frame that is not VXLAN for us is for the VTEP's host stack:
/// ARP about our address, or IPv4 to it (ICMP echo, and whatever else a
/// host answers, such as port unreachable).
pub fn for_host(frame: &[u8], local: Ipv4Addr) -> bool {
    const ETH_P_ARP: u16 = 0x0806;
    if frame.len() < ETH_LEN + 28 {
        return false;
    }
    match be16(frame, 12) {
        // ARP target protocol address.
        ETH_P_ARP => frame[ETH_LEN + 24..ETH_LEN + 28] == local.octets(),
        ETH_P_IPV4 => frame[ETH_LEN + 16..ETH_LEN + 20] == local.octets(),
        _ => false,
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Classifies `frame` for a VTEP at `local` listening on UDP `port`.
pub fn decap(frame: &[u8], local: Ipv4Addr, port: u16) -> Decap {
    if frame.len() < ETH_LEN + IPV4_LEN || be16(frame, 12) != ETH_P_IPV4 {
        return Decap::NotOurs;
    }
    let ip = &frame[ETH_LEN..];
    if ip[16..20] != local.octets() || ip[9] != IPPROTO_UDP {
        return Decap::NotOurs;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(be16(ip, 2));
    if ip[0] >> 4 != 4 || ihl < IPV4_LEN || total < ihl {
        return Decap::Bad(DecapError::BadIpHeader);
    }
    let Some(udp) = ip.get(ihl..ihl + UDP_LEN) else {
        return Decap::Bad(DecapError::Truncated);
    };
    // A later fragment has no UDP header at ihl; only a first fragment
    // could be recognised as ours, and it is dropped too.
    let frag = be16(ip, 6);
    if be16(udp, 2) != port {
        return Decap::NotOurs;
    }
    // Shorter than its IP header says: cut on the way (a capture ring's
    // frame size, a jumbo on a 1500-byte path), not a lying header.
    if total > ip.len() {
        return Decap::Bad(DecapError::Truncated);
    }
    if frag & 0x3fff != 0 {
        return Decap::Bad(DecapError::Fragment);
    }
    let vx_at = ETH_LEN + ihl + UDP_LEN;
    let inner_offset = vx_at + VXLAN_LEN;
    if usize::from(be16(udp, 4)) < UDP_LEN + VXLAN_LEN + ETH_LEN
        || frame.len() < inner_offset + ETH_LEN
    {
        return Decap::Bad(DecapError::Truncated);
    }
    let vx = &frame[vx_at..inner_offset];
    if vx[0] & FLAG_I == 0 {
        return Decap::Bad(DecapError::BadFlags);
    }
    Decap::Tunnel(Outer {
        src_mac: frame[6..12].try_into().expect("6 bytes"),
        src_ip: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        vni: u32::from_be_bytes([0, vx[4], vx[5], vx[6]]),
        inner_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    #[test]
    fn host_traffic_is_arp_or_ipv4_to_our_address() {
        let us = Ipv4Addr::new(10, 9, 0, 1);
        let mut ping = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 9, 0, 2], us.octets(), 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut ping, &[0; 8])
            .unwrap();
        assert!(for_host(&ping, us));
        assert!(!for_host(&ping, Ipv4Addr::new(10, 9, 0, 3)));
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        arp[38..42].copy_from_slice(&us.octets());
        assert!(for_host(&arp, us));
        arp[41] = 9;
        assert!(!for_host(&arp, us));
        assert!(!for_host(&arp[..20], us));
    }
}
