//! Encap: the outer headers prepended to an inner frame, written into the
//! mbuf's headroom by the worker (no copy of the inner frame).
//!
//! The outer UDP source port carries a hash of the inner flow (RFC 7348
//! section 5) so the underlay's ECMP spreads tunnels by inner flow while
//! each flow stays on one path; it lies in the dynamic range 49152-65535.
//! The outer IPv4 checksum is computed; the UDP checksum is 0, as RFC 7348
//! allows for IPv4.

use std::net::Ipv4Addr;

use crate::{ETH_LEN, ETH_P_IPV4, FLAG_I, IPPROTO_UDP, IPV4_LEN, OUTER_LEN, UDP_LEN, VXLAN_LEN};

/// One tunnel's outer header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    /// Our uplink MAC.
    pub src_mac: [u8; 6],
    /// The next hop's MAC (the remote VTEP or the router towards it).
    pub dst_mac: [u8; 6],
    /// Our VTEP address.
    pub src_ip: Ipv4Addr,
    /// The remote VTEP address.
    pub dst_ip: Ipv4Addr,
    /// UDP destination port (4789 unless configured).
    pub dst_port: u16,
    /// The VNI.
    pub vni: u32,
    /// Outer TTL.
    pub ttl: u8,
    /// Set the outer DF bit.
    pub df: bool,
}

/// The one's complement sum of a header, unfolded.
fn ones_sum(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum()
}

/// Folds a one's complement sum to 16 bits.
fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// One tunnel's outer headers, precomputed when the snapshot is built:
/// per frame only the lengths, the IPv4 identification, the source port
/// and the checksum change, and the checksum is finished from a sum over
/// the constant fields (RFC 1071's incremental property) instead of
/// summing the header again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    hdr: [u8; OUTER_LEN],
    /// One's complement sum of the IPv4 header with length, id and
    /// checksum zero.
    base_sum: u32,
}

impl Template {
    /// The template of tunnel `t`.
    pub fn new(t: &Tunnel) -> Template {
        let mut out = [0u8; OUTER_LEN];
        out[0..6].copy_from_slice(&t.dst_mac);
        out[6..12].copy_from_slice(&t.src_mac);
        out[12..14].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
        let ip = &mut out[ETH_LEN..ETH_LEN + IPV4_LEN];
        ip[0] = 0x45;
        ip[6..8].copy_from_slice(&(if t.df { 0x4000u16 } else { 0 }).to_be_bytes());
        ip[8] = t.ttl;
        ip[9] = IPPROTO_UDP;
        ip[12..16].copy_from_slice(&t.src_ip.octets());
        ip[16..20].copy_from_slice(&t.dst_ip.octets());
        let base_sum = ones_sum(ip);
        let udp = &mut out[ETH_LEN + IPV4_LEN..ETH_LEN + IPV4_LEN + UDP_LEN];
        udp[2..4].copy_from_slice(&t.dst_port.to_be_bytes());
        let vx = &mut out[ETH_LEN + IPV4_LEN + UDP_LEN..];
        vx[0] = FLAG_I;
        vx[4..7].copy_from_slice(&t.vni.to_be_bytes()[1..]);
        Template { hdr: out, base_sum }
    }

    /// Writes the outer headers for an inner frame of `inner_len` bytes
    /// into `out`, with UDP source port `sport` and IPv4 identification
    /// `ip_id`.
    #[inline]
    pub fn write(&self, out: &mut [u8; OUTER_LEN], inner_len: usize, sport: u16, ip_id: u16) {
        let udp_len = (UDP_LEN + VXLAN_LEN + inner_len) as u16;
        let ip_len = IPV4_LEN as u16 + udp_len;
        *out = self.hdr;
        let ip = &mut out[ETH_LEN..ETH_LEN + IPV4_LEN];
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
        let csum = !fold(self.base_sum + u32::from(ip_len) + u32::from(ip_id));
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        let udp = &mut out[ETH_LEN + IPV4_LEN..ETH_LEN + IPV4_LEN + UDP_LEN];
        udp[0..2].copy_from_slice(&sport.to_be_bytes());
        udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    }
}

/// The outer source port for an inner frame: a hash of its MACs and, for
/// IPv4/IPv6, its addresses, protocol and ports, into 49152-65535.
///
/// FxHash over whole words (rustc-hash, as the ACL classifier uses): the
/// fields are read as u64/u32 loads rather than byte by byte, which keeps
/// this a few nanoseconds per frame; the top bits of the 64-bit product are
/// the well-mixed ones, so they pick the port.
pub fn source_port(inner: &[u8]) -> u16 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    if inner.len() < ETH_LEN {
        h.write(inner);
    } else {
        h.write_u64(u64::from_ne_bytes(inner[0..8].try_into().expect("8 bytes")));
        h.write_u32(u32::from_ne_bytes(
            inner[8..12].try_into().expect("4 bytes"),
        ));
        let l3 = &inner[ETH_LEN..];
        match be16(inner, 12) {
            0x0800 if l3.len() >= IPV4_LEN => {
                h.write_u64(u64::from_ne_bytes(l3[12..20].try_into().expect("8 bytes")));
                h.write_u8(l3[9]);
                let ihl = usize::from(l3[0] & 0x0f) * 4;
                if let Some(ports) = l3.get(ihl..ihl + 4) {
                    h.write_u32(u32::from_ne_bytes(ports.try_into().expect("4 bytes")));
                }
            }
            0x86dd if l3.len() >= 44 => {
                for w in l3[8..40].chunks_exact(8) {
                    h.write_u64(u64::from_ne_bytes(w.try_into().expect("8 bytes")));
                }
                h.write_u8(l3[6]);
                h.write_u32(u32::from_ne_bytes(l3[40..44].try_into().expect("4 bytes")));
            }
            _ => {}
        }
    }
    let x = h.finish();
    49_152 + ((x >> 32) ^ (x >> 50)) as u16 % 16_384
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decap::{decap, Decap, DecapError};
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn tunnel() -> Tunnel {
        Tunnel {
            src_mac: [2, 0, 0, 0, 0x0a, 2],
            dst_mac: [2, 0, 0, 0, 0x0a, 1],
            src_ip: Ipv4Addr::new(192, 168, 10, 2),
            dst_ip: Ipv4Addr::new(192, 168, 10, 1),
            dst_port: crate::VXLAN_PORT,
            vni: 0x00ab_cdef,
            ttl: 64,
            df: true,
        }
    }

    fn inner(i: u16) -> Vec<u8> {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000 + i, 80)
            .write(&mut v, &[7; 18])
            .unwrap();
        v
    }

    fn encapsulate(t: &Tunnel, inner: &[u8]) -> Vec<u8> {
        let mut outer = [0u8; OUTER_LEN];
        Template::new(t).write(&mut outer, inner.len(), source_port(inner), 7);
        [&outer[..], inner].concat()
    }

    #[test]
    fn the_checksum_is_right_for_every_length_and_id() {
        // The incremental sum must match a full recomputation, including
        // when the carries fold more than once.
        for t in [
            tunnel(),
            Tunnel {
                df: false,
                ttl: 255,
                src_ip: Ipv4Addr::new(255, 255, 255, 254),
                ..tunnel()
            },
        ] {
            let tpl = Template::new(&t);
            for (len, id) in [
                (14, 0),
                (60, 1),
                (1450, 0xffff),
                (9000, 0x8001),
                (64, 0xfffe),
            ] {
                let mut out = [0u8; OUTER_LEN];
                tpl.write(&mut out, len, 50_000, id);
                let h = etherparse::Ipv4HeaderSlice::from_slice(&out[14..34])
                    .unwrap()
                    .to_header();
                assert_eq!(
                    h.header_checksum,
                    h.calc_header_checksum(),
                    "len {len} id {id}"
                );
                assert_eq!(usize::from(h.total_len), 36 + len);
            }
        }
    }

    #[test]
    fn encapsulated_frames_parse_with_the_configured_fields() {
        let t = tunnel();
        let inn = inner(1);
        let f = encapsulate(&t, &inn);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(NetSlice::Ipv4(ip)) = p.net else {
            panic!()
        };
        let h = ip.header().to_header();
        assert_eq!(
            h.header_checksum,
            h.calc_header_checksum(),
            "outer IPv4 checksum"
        );
        assert!(h.dont_fragment);
        assert_eq!(
            (h.time_to_live, h.source, h.destination),
            (64, [192, 168, 10, 2], [192, 168, 10, 1])
        );
        assert_eq!(usize::from(h.total_len), f.len() - 14);
        let Some(TransportSlice::Udp(u)) = p.transport else {
            panic!()
        };
        assert_eq!(u.destination_port(), 4789);
        assert_eq!(u.checksum(), 0);
        assert!((49_152..=65_535).contains(&u.source_port()));
        assert_eq!(usize::from(u.length()), f.len() - 34);
        let vx = u.payload();
        assert_eq!(vx[0], FLAG_I);
        assert_eq!(u32::from_be_bytes([0, vx[4], vx[5], vx[6]]), 0x00ab_cdef);
        assert_eq!(&vx[8..], &inn[..]);
    }

    #[test]
    fn decap_undoes_encap() {
        let t = tunnel();
        let inn = inner(2);
        let f = encapsulate(&t, &inn);
        // Seen from the remote VTEP (the destination address).
        match decap(&f, t.dst_ip, 4789) {
            Decap::Tunnel(o) => {
                assert_eq!(o.vni, t.vni);
                assert_eq!(o.src_ip, t.src_ip);
                assert_eq!(o.src_mac, t.src_mac);
                assert_eq!(&f[o.inner_offset..], &inn[..]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decap_tells_foreign_from_broken() {
        let t = tunnel();
        let f = encapsulate(&t, &inner(3));
        assert_eq!(
            decap(&f, Ipv4Addr::new(192, 168, 10, 9), 4789),
            Decap::NotOurs,
            "another VTEP"
        );
        assert_eq!(
            decap(&f, t.dst_ip, 8472),
            Decap::NotOurs,
            "another UDP port"
        );
        assert_eq!(
            decap(&inner(3), t.dst_ip, 4789),
            Decap::NotOurs,
            "plain traffic"
        );
        let mut no_i = f.clone();
        no_i[42] = 0;
        assert_eq!(
            decap(&no_i, t.dst_ip, 4789),
            Decap::Bad(DecapError::BadFlags)
        );
        let mut frag = f.clone();
        frag[20] = 0x20; // MF
        assert_eq!(
            decap(&frag, t.dst_ip, 4789),
            Decap::Bad(DecapError::Fragment)
        );
        assert_eq!(
            decap(&f[..OUTER_LEN + 4], t.dst_ip, 4789),
            Decap::Bad(DecapError::Truncated),
            "cut on the way: total length beyond the frame"
        );
        let mut lying = f.clone();
        lying[16..18].copy_from_slice(&10u16.to_be_bytes()); // total < IHL
        assert_eq!(
            decap(&lying, t.dst_ip, 4789),
            Decap::Bad(DecapError::BadIpHeader),
            "a total length shorter than the header"
        );
        let mut short = encapsulate(&t, &[0u8; 10]);
        short.truncate(OUTER_LEN + 10);
        assert_eq!(
            decap(&short, t.dst_ip, 4789),
            Decap::Bad(DecapError::Truncated)
        );
        // Never panics on any prefix of a valid frame.
        for n in 0..f.len() {
            let _ = decap(&f[..n], t.dst_ip, 4789);
        }
    }

    #[test]
    fn source_port_is_stable_per_flow_and_spreads_flows() {
        assert_eq!(source_port(&inner(5)), source_port(&inner(5)));
        let ports: std::collections::HashSet<u16> =
            (0..1000).map(|i| source_port(&inner(i))).collect();
        assert!(
            ports.len() > 950,
            "{} distinct ports for 1000 flows",
            ports.len()
        );
        assert!(ports.iter().all(|p| *p >= 49_152));
    }
}
