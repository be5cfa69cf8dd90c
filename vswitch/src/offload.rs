//! Offloads a frame carries from port to port: a checksum its sender left
//! for the receiver to finish, and a segmentation its sender left undone
//! (a GSO "superframe" of up to 64 KB that stands for many wire segments).
//!
//! A kernel container's TCP hands its TAP NIC 64 KB superframes with a
//! partial checksum, described by the virtio-net header in front of each
//! frame ([`VnetHdr`], virtio 1.2 section 5.1.6). The switch keeps that
//! description next to the frame ([`Offload`]; in the daemon, in the
//! mbuf's offload flags) so the frame crosses the switch once, whole.
//! Only a port that cannot take it gets it finished here:
//! [`complete_checksum`] for a partial checksum, [`Segments`] for a
//! superframe, with the IPv4 header checksum, TCP sequence numbers and
//! flags, lengths and L4 checksums of every segment computed.
//!
//! Why our own segmentation rather than DPDK's GSO library: rte_gso in
//! DPDK 22.11 has no TCP/IPv6, leaves L4 checksums to the NIC's tx
//! offload (which af-packet, pcap and a vhost-user guest without offloads
//! do not have, so they would be computed here anyway), and produces
//! chains of indirect mbufs that every non-offload PMD then copies again.
//! Copying each segment once into a fresh buffer while its checksum is
//! summed is as cheap, and this code is DPDK-free, so it is tested against
//! etherparse. The one's complement sums are etherparse's (which sum in
//! native byte order: a result is stored with `to_ne_bytes`).
//!
//! Untrusted input: a container can write any virtio-net header (through
//! a packet socket with PACKET_VNET_HDR), so [`Offload::from_vnet`]
//! checks that the header describes the frame (offsets inside it, the
//! protocol at `csum_start` the GSO type says) before anything relies on it.

use etherparse::checksum::u64_16bit_word as sum16;

use crate::flow::{FlowKey, ETH_P_IPV4, ETH_P_IPV6};

/// Bytes of the virtio-net header in front of every frame on a TAP
/// (TUNSETVNETHDRSZ): the 10-byte legacy header plus `num_buffers`, the
/// layout of virtio 1.0 devices.
pub const VNET_HDR_LEN: usize = 12;

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// Most segments a superframe may stand for. A kernel's TCP builds at most
/// ~45 (64 KB of 1448-byte segments; 121 at the IPv4 minimum MTU), but a
/// container can write any `gso_size` through a packet socket: one byte
/// would make 65,000 segments, each an mbuf, and starve every port of
/// buffers. Beyond this the frame is refused as malformed.
pub const MAX_GSO_SEGMENTS: u32 = 256;

/// `csum_offset` of the TCP checksum field.
pub const TCP_CSUM_OFFSET: u16 = 16;
/// `csum_offset` of the UDP checksum field.
pub const UDP_CSUM_OFFSET: u16 = 6;

/// The virtio-net header as it travels in front of a frame (little
/// endian; vswitchd sets TUNSETVNETLE so this holds on any host).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`.
    pub gso_type: u8,
    /// Length of the headers a segment repeats (a hint).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (the L4 header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum goes.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads a header.
    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    /// Writes the header (`num_buffers` 0).
    pub fn emit(&self, b: &mut [u8; VNET_HDR_LEN]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&[0, 0]);
    }
}

/// A checksum the sender left partial: the one's complement sum from
/// `start` to the end of the frame goes, complemented, at
/// `start + offset`, whose field holds the pseudo-header sum meanwhile
/// (Linux's CHECKSUM_PARTIAL, virtio's NEEDS_CSUM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CsumPartial {
    /// Offset of the L4 header in the frame.
    pub start: u16,
    /// Offset of the checksum field from `start`.
    pub offset: u16,
}

/// Which segmentation a superframe waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsoKind {
    /// TCP over IPv4 (TSO4).
    Tcp4,
    /// TCP over IPv6 (TSO6).
    Tcp6,
    /// UDP segmentation (USO): each segment a datagram of its own.
    Udp4,
    /// UDP segmentation over IPv6.
    Udp6,
}

impl GsoKind {
    fn is_tcp(self) -> bool {
        matches!(self, GsoKind::Tcp4 | GsoKind::Tcp6)
    }
    fn is_v4(self) -> bool {
        matches!(self, GsoKind::Tcp4 | GsoKind::Udp4)
    }
}

/// A superframe: segments of `size` payload bytes each (the last may be
/// shorter), every one behind a copy of the headers up to the L4 payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gso {
    /// Segmentation kind.
    pub kind: GsoKind,
    /// Payload bytes per segment (the MSS for TCP).
    pub size: u16,
    /// Length of the headers each segment repeats (L2 + L3 + L4).
    pub hdr_len: u16,
}

/// What a frame still owes its receiver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    /// A partial checksum to finish (always set with `gso`).
    pub csum: Option<CsumPartial>,
    /// A segmentation to do.
    pub gso: Option<Gso>,
}

/// A virtio-net header that does not describe its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffloadError {
    /// `csum_start`/`csum_offset` point outside the frame.
    CsumOutOfFrame,
    /// A GSO type this switch does not take (UFO, unknown).
    UnsupportedGso,
    /// A GSO frame whose headers are not those of its type.
    GsoHeaders,
    /// `gso_size` 0, segments that would not fit a frame, or more than
    /// [`MAX_GSO_SEGMENTS`] of them.
    GsoSize,
}

impl Offload {
    /// Nothing left to do: the frame is on the wire as it is.
    pub const NONE: Offload = Offload {
        csum: None,
        gso: None,
    };

    /// Segments the frame stands for on a wire (1 unless a superframe).
    #[inline]
    pub fn segments(&self, frame_len: usize) -> u32 {
        match self.gso {
            Some(g) => {
                let payload = frame_len.saturating_sub(usize::from(g.hdr_len));
                payload.div_ceil(usize::from(g.size.max(1))).max(1) as u32
            }
            None => 1,
        }
    }

    /// Bytes the frame takes on a wire: a superframe's payload plus its
    /// headers once per segment.
    #[inline]
    pub fn wire_bytes(&self, frame_len: usize) -> u64 {
        match self.gso {
            Some(g) => {
                let extra = u64::from(self.segments(frame_len) - 1) * u64::from(g.hdr_len);
                frame_len as u64 + extra
            }
            None => frame_len as u64,
        }
    }

    /// The offloads `h` describes for `frame`, checked against the frame.
    pub fn from_vnet(h: &VnetHdr, frame: &[u8]) -> Result<Offload, OffloadError> {
        let csum = if h.flags & F_NEEDS_CSUM != 0 {
            let end = usize::from(h.csum_start) + usize::from(h.csum_offset) + 2;
            if end > frame.len() {
                return Err(OffloadError::CsumOutOfFrame);
            }
            Some(CsumPartial {
                start: h.csum_start,
                offset: h.csum_offset,
            })
        } else {
            None
        };
        let kind = match h.gso_type & !GSO_ECN {
            GSO_NONE => {
                return Ok(Offload { csum, gso: None });
            }
            GSO_TCPV4 => GsoKind::Tcp4,
            GSO_TCPV6 => GsoKind::Tcp6,
            GSO_UDP_L4 => match FlowKey::parse_l2(frame).map(|k| k.ethertype) {
                Ok(ETH_P_IPV4) => GsoKind::Udp4,
                Ok(ETH_P_IPV6) => GsoKind::Udp6,
                _ => return Err(OffloadError::GsoHeaders),
            },
            _ => return Err(OffloadError::UnsupportedGso),
        };
        // Segmentation needs the partial checksum to know where L4 is.
        let c = csum.ok_or(OffloadError::GsoHeaders)?;
        let hdr_len = gso_headers(frame, kind, c)?;
        if h.gso_size == 0 || hdr_len + usize::from(h.gso_size) > usize::from(u16::MAX) {
            return Err(OffloadError::GsoSize);
        }
        let off = Offload {
            csum,
            gso: Some(Gso {
                kind,
                size: h.gso_size,
                hdr_len: hdr_len as u16,
            }),
        };
        if off.segments(frame.len()) > MAX_GSO_SEGMENTS {
            return Err(OffloadError::GsoSize);
        }
        Ok(off)
    }

    /// The virtio-net header that hands these offloads to a receiver.
    pub fn to_vnet(&self, frame: &[u8]) -> VnetHdr {
        let mut h = VnetHdr::default();
        if let Some(c) = self.csum {
            h.flags = F_NEEDS_CSUM;
            h.csum_start = c.start;
            h.csum_offset = c.offset;
        }
        if let Some(g) = self.gso {
            h.gso_size = g.size;
            h.hdr_len = g.hdr_len;
            h.gso_type = match g.kind {
                GsoKind::Tcp4 => GSO_TCPV4,
                GsoKind::Tcp6 => GSO_TCPV6,
                GsoKind::Udp4 | GsoKind::Udp6 => GSO_UDP_L4,
            };
            // A superframe with CWR set is what Linux marks TCP_ECN: the
            // flag must go to the first segment only.
            let cwr = self.csum.is_some_and(|c| {
                g.kind.is_tcp()
                    && frame
                        .get(usize::from(c.start) + 13)
                        .is_some_and(|f| f & 0x80 != 0)
            });
            if cwr {
                h.gso_type |= GSO_ECN;
            }
        }
        h
    }
}

/// Checks the headers of a superframe of `kind` whose L4 header starts at
/// `c.start`; returns the length of the headers each segment repeats.
fn gso_headers(frame: &[u8], kind: GsoKind, c: CsumPartial) -> Result<usize, OffloadError> {
    let bad = OffloadError::GsoHeaders;
    // The flow parser walks VLAN tags and IPv6 extension headers: the L4
    // header it finds must be where the checksum starts, of the protocol
    // and family the GSO type says.
    let k = FlowKey::parse(frame).map_err(|_| bad)?;
    let family_ok = match kind {
        GsoKind::Tcp4 | GsoKind::Udp4 => k.l3 == crate::flow::L3::V4,
        GsoKind::Tcp6 | GsoKind::Udp6 => k.l3 == crate::flow::L3::V6,
    };
    let want = if kind.is_tcp() {
        IPPROTO_TCP
    } else {
        IPPROTO_UDP
    };
    let l4 = usize::from(c.start);
    if !family_ok || k.later_fragment || k.proto != want || usize::from(k.l4_offset) != l4 {
        return Err(bad);
    }
    let (l4_len, offset) = if kind.is_tcp() {
        let off = *frame.get(l4 + 12).ok_or(bad)?;
        (usize::from(off >> 4) * 4, TCP_CSUM_OFFSET)
    } else {
        (8, UDP_CSUM_OFFSET)
    };
    let min = if kind.is_tcp() { 20 } else { 8 };
    if l4_len < min || c.offset != offset || l4 + l4_len > frame.len() {
        return Err(bad);
    }
    Ok(l4 + l4_len)
}

/// Finishes a partial checksum in place (what `skb_checksum_help` does):
/// the one's complement of the sum from `c.start` to the end, which
/// includes the pseudo-header sum already in the field. A UDP result of 0
/// is sent as 0xffff (0 means "no checksum", RFC 768).
pub fn complete_checksum(frame: &mut [u8], c: CsumPartial) {
    let start = usize::from(c.start);
    let at = start + usize::from(c.offset);
    if at + 2 > frame.len() {
        // Offload::from_vnet checked this; a frame shortened since is not
        // ours to fix.
        return;
    }
    let mut v = sum16::ones_complement(sum16::add_slice(0, &frame[start..]));
    if c.offset == UDP_CSUM_OFFSET && v == 0 {
        v = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}

/// Cuts a superframe down to its first `keep` segments in place (what a
/// policer lets through of it, see `acl::policer`); returns the new frame
/// length, or None if it is not a superframe of more than `keep` (>= 1)
/// segments. Lengths and the IPv4 header checksum are fixed, FIN and PSH
/// (which belong to the last segment, cut) cleared, and the partial
/// checksum's pseudo-header sum, which counts the L4 length in Linux's
/// convention, moved to the new length (RFC 1624), so the receiver, or a
/// segmenter after it, finishes a right checksum.
pub fn trim_superframe(frame: &mut [u8], off: &Offload, keep: u32) -> Option<usize> {
    let (g, c) = (off.gso?, off.csum?);
    let new_len = usize::from(g.hdr_len) + keep as usize * usize::from(g.size);
    if keep == 0 || new_len >= frame.len() {
        return None;
    }
    let l3 = usize::from(FlowKey::parse_l2(frame).ok()?.l3_offset);
    let l4 = usize::from(c.start);
    let (old_l4, new_l4) = ((frame.len() - l4) as u16, (new_len - l4) as u16);
    if g.kind.is_v4() {
        let ip = &mut frame[l3..l4];
        ip[2..4].copy_from_slice(&((new_len - l3) as u16).to_be_bytes());
        ip[10..12].copy_from_slice(&[0, 0]);
        let sum = sum16::ones_complement(sum16::add_slice(0, ip));
        ip[10..12].copy_from_slice(&sum.to_ne_bytes());
    } else {
        frame[l3 + 4..l3 + 6].copy_from_slice(&((new_len - l3 - 40) as u16).to_be_bytes());
    }
    if g.kind.is_tcp() {
        frame[l4 + 13] &= !(0x01 | 0x08);
    } else {
        frame[l4 + 4..l4 + 6].copy_from_slice(&new_l4.to_be_bytes());
    }
    let at = l4 + usize::from(c.offset);
    let field = u16::from_be_bytes([frame[at], frame[at + 1]]);
    let mut sum = u32::from(field) + u32::from(!old_l4) + u32::from(new_l4);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    frame[at..at + 2].copy_from_slice(&(sum as u16).to_be_bytes());
    Some(new_len)
}

/// The wire segments of a superframe, written one at a time into buffers
/// the caller provides (mbufs, in the daemon): headers copied and fixed,
/// payload copied, L4 checksum computed in full. Each segment's checksum
/// is computed from scratch, never from the superframe's field, so a
/// container cannot make us emit a checksum it did not intend.
#[derive(Debug)]
pub struct Segments<'a> {
    frame: &'a [u8],
    gso: Gso,
    l3: usize,
    l4: usize,
    count: usize,
}

impl<'a> Segments<'a> {
    /// The segments of `frame`, if `off` makes it a superframe whose
    /// headers were checked by [`Offload::from_vnet`].
    pub fn new(frame: &'a [u8], off: &Offload) -> Option<Segments<'a>> {
        let gso = off.gso?;
        let c = off.csum?;
        let l3 = usize::from(FlowKey::parse_l2(frame).ok()?.l3_offset);
        let hdr = usize::from(gso.hdr_len);
        if hdr > frame.len() || gso.size == 0 {
            return None;
        }
        Some(Segments {
            frame,
            gso,
            l3,
            l4: usize::from(c.start),
            count: off.segments(frame.len()) as usize,
        })
    }

    /// Number of segments.
    pub fn count(&self) -> usize {
        self.count
    }

    fn payload(&self, i: usize) -> &'a [u8] {
        let hdr = usize::from(self.gso.hdr_len);
        let size = usize::from(self.gso.size);
        let from = (hdr + i * size).min(self.frame.len());
        let to = (from + size).min(self.frame.len());
        &self.frame[from..to]
    }

    /// Length of segment `i`.
    pub fn len(&self, i: usize) -> usize {
        usize::from(self.gso.hdr_len) + self.payload(i).len()
    }

    /// Whether there is no segment (never, for a checked superframe).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes segment `i` (< [`count`](Segments::count)) into `out`, which
    /// holds at least [`len`](Segments::len)`(i)` bytes; returns its length.
    pub fn write(&self, i: usize, out: &mut [u8]) -> usize {
        let hdr = usize::from(self.gso.hdr_len);
        let payload = self.payload(i);
        let len = hdr + payload.len();
        let out = &mut out[..len];
        out[..hdr].copy_from_slice(&self.frame[..hdr]);
        out[hdr..].copy_from_slice(payload);
        let (l3, l4) = (self.l3, self.l4);
        let l4_total = (len - l4) as u16;
        let v4 = self.gso.kind.is_v4();
        if v4 {
            let ip = &mut out[l3..l4];
            let total = (len - l3) as u16;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            let id = u16::from_be_bytes([ip[4], ip[5]]).wrapping_add(i as u16);
            ip[4..6].copy_from_slice(&id.to_be_bytes());
            ip[10..12].copy_from_slice(&[0, 0]);
            let c = sum16::ones_complement(sum16::add_slice(0, ip));
            ip[10..12].copy_from_slice(&c.to_ne_bytes());
        } else {
            let plen = (len - l3 - 40) as u16;
            out[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
        }
        let proto = if self.gso.kind.is_tcp() {
            let th = &mut out[l4..hdr];
            let seq = u32::from_be_bytes([th[4], th[5], th[6], th[7]])
                .wrapping_add((i * usize::from(self.gso.size)) as u32);
            th[4..8].copy_from_slice(&seq.to_be_bytes());
            if i + 1 < self.count {
                th[13] &= !(0x01 | 0x08); // FIN, PSH: last segment only
            }
            if i > 0 {
                th[13] &= !0x80; // CWR: first segment only
            }
            th[16..18].copy_from_slice(&[0, 0]);
            IPPROTO_TCP
        } else {
            out[l4 + 4..l4 + 6].copy_from_slice(&l4_total.to_be_bytes());
            out[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
            IPPROTO_UDP
        };
        // Pseudo header (RFC 793 / RFC 8200 8.1), then the L4 header and
        // payload.
        let mut s = if v4 {
            sum16::add_slice(0, &out[l3 + 12..l3 + 20])
        } else {
            sum16::add_slice(0, &out[l3 + 8..l3 + 40])
        };
        s = sum16::add_2bytes(s, [0, proto]);
        s = sum16::add_2bytes(s, l4_total.to_be_bytes());
        s = sum16::add_slice(s, &out[l4..hdr]);
        s = sum16::add_slice(s, payload);
        let mut c = sum16::ones_complement(s);
        let at = l4 + if proto == IPPROTO_TCP { 16 } else { 6 };
        if proto == IPPROTO_UDP && c == 0 {
            c = 0xffff;
        }
        out[at..at + 2].copy_from_slice(&c.to_ne_bytes());
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

    const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// A TCP superframe as a TAP hands it over: correct headers, the
    /// superframe's checksum field holding junk (it is partial).
    fn tcp_superframe(v4: bool, len: usize, flags: u8) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let b = if v4 {
            b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        } else {
            b.ipv6(SRC6, DST6, 64)
        };
        let mut b = b.tcp(40000, 80, 1_000_000, 65535);
        if flags & 0x08 != 0 {
            b = b.psh();
        }
        if flags & 0x01 != 0 {
            b = b.fin();
        }
        if flags & 0x80 != 0 {
            b = b.cwr();
        }
        let b = b.ack(7);
        let p = payload(len);
        let mut f = Vec::new();
        b.write(&mut f, &p).unwrap();
        f
    }

    fn udp_superframe(v4: bool, len: usize) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let b = if v4 {
            b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        } else {
            b.ipv6(SRC6, DST6, 64)
        };
        let mut f = Vec::new();
        b.udp(5000, 6000).write(&mut f, &payload(len)).unwrap();
        f
    }

    fn vnet(v4: bool, tcp: bool, size: u16) -> VnetHdr {
        let l4 = 14 + if v4 { 20 } else { 40 };
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: match (v4, tcp) {
                (true, true) => GSO_TCPV4,
                (false, true) => GSO_TCPV6,
                _ => GSO_UDP_L4,
            },
            hdr_len: 0,
            gso_size: size,
            csum_start: l4,
            csum_offset: if tcp { 16 } else { 6 },
        }
    }

    /// Segments `f` and checks every segment with etherparse: lengths,
    /// checksums (computed by etherparse from the segment), sequence
    /// numbers, flags; returns the payload reassembled.
    fn segment_and_check(f: &[u8], off: &Offload, tcp: bool, v4: bool) -> Vec<u8> {
        let s = Segments::new(f, off).expect("a superframe");
        let mut data = Vec::new();
        let mut buf = vec![0u8; 65536];
        for i in 0..s.count() {
            let n = s.write(i, &mut buf);
            assert_eq!(n, s.len(i));
            let seg = &buf[..n];
            let p = SlicedPacket::from_ethernet(seg).expect("segment parses");
            match (&p.net, v4) {
                (Some(NetSlice::Ipv4(ip)), true) => {
                    let h = ip.header().to_header();
                    assert_eq!(usize::from(h.total_len), n - 14);
                    assert_eq!(h.header_checksum, h.calc_header_checksum());
                    assert_eq!(h.identification, i as u16, "IP id steps per segment");
                }
                (Some(NetSlice::Ipv6(ip)), false) => {
                    assert_eq!(usize::from(ip.header().payload_length()), n - 54);
                }
                other => panic!("unexpected {other:?}"),
            }
            match &p.transport {
                Some(TransportSlice::Tcp(t)) if tcp => {
                    let want = if v4 {
                        let Some(NetSlice::Ipv4(ip)) = &p.net else {
                            unreachable!()
                        };
                        let h = ip.header().to_header();
                        t.calc_checksum_ipv4(h.source, h.destination).unwrap()
                    } else {
                        let Some(NetSlice::Ipv6(ip)) = &p.net else {
                            unreachable!()
                        };
                        let h = ip.header().to_header();
                        t.calc_checksum_ipv6(h.source, h.destination).unwrap()
                    };
                    assert_eq!(t.checksum(), want, "segment {i}");
                    assert_eq!(
                        t.sequence_number(),
                        1_000_000 + (i * usize::from(off.gso.unwrap().size)) as u32
                    );
                    let last = i + 1 == s.count();
                    assert_eq!(t.psh(), last, "PSH on the last segment only");
                    assert_eq!(t.fin(), last, "FIN on the last segment only");
                    assert_eq!(t.cwr(), i == 0, "CWR on the first segment only");
                    assert!(t.payload().len() <= usize::from(off.gso.unwrap().size));
                    data.extend_from_slice(t.payload());
                }
                Some(TransportSlice::Udp(u)) if !tcp => {
                    let want = if v4 {
                        let Some(NetSlice::Ipv4(ip)) = &p.net else {
                            unreachable!()
                        };
                        u.to_header()
                            .calc_checksum_ipv4(&ip.header().to_header(), u.payload())
                            .unwrap()
                    } else {
                        let Some(NetSlice::Ipv6(ip)) = &p.net else {
                            unreachable!()
                        };
                        u.to_header()
                            .calc_checksum_ipv6(&ip.header().to_header(), u.payload())
                            .unwrap()
                    };
                    assert_eq!(u.checksum(), want, "segment {i}");
                    assert_eq!(usize::from(u.length()), 8 + u.payload().len());
                    data.extend_from_slice(u.payload());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        data
    }

    #[test]
    fn tcp_superframes_segment_into_valid_segments() {
        for v4 in [true, false] {
            for (len, mss) in [
                (65000, 1448),
                (1448 * 3, 1448),
                (1449, 1448),
                (100, 1448),
                (9000, 8948),
            ] {
                let f = tcp_superframe(v4, len, 0x01 | 0x08 | 0x80);
                let off = Offload::from_vnet(&vnet(v4, true, mss), &f).unwrap();
                assert_eq!(off.gso.unwrap().hdr_len, if v4 { 54 } else { 74 });
                assert_eq!(
                    off.segments(f.len()) as usize,
                    len.div_ceil(usize::from(mss))
                );
                let data = segment_and_check(&f, &off, true, v4);
                assert_eq!(data, payload(len), "v4={v4} len={len}");
                assert_eq!(
                    off.wire_bytes(f.len()),
                    (len + off.segments(f.len()) as usize * usize::from(off.gso.unwrap().hdr_len))
                        as u64
                );
            }
        }
    }

    #[test]
    fn udp_superframes_segment_into_datagrams() {
        for v4 in [true, false] {
            let f = udp_superframe(v4, 10_000);
            let off = Offload::from_vnet(&vnet(v4, false, 1400), &f).unwrap();
            assert_eq!(
                off.gso.unwrap().kind,
                if v4 { GsoKind::Udp4 } else { GsoKind::Udp6 }
            );
            assert_eq!(segment_and_check(&f, &off, false, v4), payload(10_000));
        }
    }

    #[test]
    fn a_partial_checksum_completes_to_the_real_one() {
        for v4 in [true, false] {
            for tcp in [true, false] {
                let mut f = if tcp {
                    tcp_superframe(v4, 333, 0)
                } else {
                    udp_superframe(v4, 333)
                };
                let good = f.clone();
                set_partial(&mut f, v4, tcp);
                let mut h = vnet(v4, tcp, 0);
                h.gso_type = GSO_NONE;
                let off = Offload::from_vnet(&h, &f).unwrap();
                assert_eq!(off.gso, None);
                complete_checksum(&mut f, off.csum.unwrap());
                assert_eq!(f, good, "v4={v4} tcp={tcp}");
            }
        }
    }

    #[test]
    fn headers_that_lie_are_refused() {
        let f = tcp_superframe(true, 3000, 0);
        // Out of the frame.
        let mut h = vnet(true, true, 1448);
        h.csum_start = 3100;
        assert_eq!(
            Offload::from_vnet(&h, &f),
            Err(OffloadError::CsumOutOfFrame)
        );
        // TCPv6 on an IPv4 frame.
        let h = vnet(false, true, 1448);
        let mut h4 = h;
        h4.csum_start = 34;
        assert_eq!(Offload::from_vnet(&h4, &f), Err(OffloadError::GsoHeaders));
        // L4 not where the IPv4 header ends.
        let mut h = vnet(true, true, 1448);
        h.csum_start = 38;
        assert_eq!(Offload::from_vnet(&h, &f), Err(OffloadError::GsoHeaders));
        // GSO without a partial checksum, size 0, UFO.
        let mut h = vnet(true, true, 1448);
        h.flags = 0;
        assert_eq!(Offload::from_vnet(&h, &f), Err(OffloadError::GsoHeaders));
        let h = vnet(true, true, 0);
        assert_eq!(Offload::from_vnet(&h, &f), Err(OffloadError::GsoSize));
        // A 1-byte gso_size: 3000 segments of one byte each.
        let h = vnet(true, true, 1);
        assert_eq!(Offload::from_vnet(&h, &f), Err(OffloadError::GsoSize));
        let h = vnet(true, true, 12);
        assert!(Offload::from_vnet(&h, &f).is_ok(), "250 segments");
        let mut h = vnet(true, true, 1448);
        h.gso_type = 3;
        assert_eq!(
            Offload::from_vnet(&h, &f),
            Err(OffloadError::UnsupportedGso)
        );
        // UDP GSO on a TCP frame.
        let h = vnet(true, false, 1448);
        assert_eq!(Offload::from_vnet(&h, &f), Err(OffloadError::GsoHeaders));
    }

    #[test]
    fn vnet_headers_round_trip() {
        let f = tcp_superframe(true, 5000, 0x80);
        let h = vnet(true, true, 1448);
        let off = Offload::from_vnet(&h, &f).unwrap();
        let back = off.to_vnet(&f);
        assert_eq!(back.gso_type, GSO_TCPV4 | GSO_ECN, "CWR set: ECN");
        assert_eq!(back.gso_size, 1448);
        assert_eq!((back.csum_start, back.csum_offset), (34, 16));
        let mut b = [0u8; VNET_HDR_LEN];
        back.emit(&mut b);
        assert_eq!(VnetHdr::parse(&b), back);
        assert_eq!(Offload::from_vnet(&back, &f).unwrap(), off);
    }

    proptest::proptest! {
        /// Whatever a container writes in the header, checking it never
        /// panics, and what passes segments without panicking.
        #[test]
        fn any_header_is_checked_without_panic(
            flags in 0u8..4, gso_type in 0u8..8, size in 0u16..3000,
            start in 0u16..200, offset in 0u16..40, len in 0usize..4000, v4: bool,
        ) {
            let f = tcp_superframe(v4, len, 0);
            let h = VnetHdr { flags, gso_type, hdr_len: 0, gso_size: size, csum_start: start, csum_offset: offset };
            if let Ok(off) = Offload::from_vnet(&h, &f) {
                if let Some(s) = Segments::new(&f, &off) {
                    let mut buf = vec![0u8; 65536];
                    for i in 0..s.count() {
                        s.write(i, &mut buf);
                    }
                }
                if let Some(c) = off.csum {
                    let mut g = f.clone();
                    complete_checksum(&mut g, c);
                }
            }
        }
    }

    /// Writes the partial checksum a sender leaves: the folded
    /// pseudo-header sum, L4 length included, not complemented.
    fn set_partial(f: &mut [u8], v4: bool, tcp: bool) {
        let l4 = 14 + if v4 { 20 } else { 40 };
        let at = l4 + if tcp { 16 } else { 6 };
        let l4_len = (f.len() - l4) as u16;
        let mut s = if v4 {
            sum16::add_slice(0, &f[14 + 12..14 + 20])
        } else {
            sum16::add_slice(0, &f[14 + 8..14 + 40])
        };
        s = sum16::add_2bytes(s, [0, if tcp { 6 } else { 17 }]);
        s = sum16::add_2bytes(s, l4_len.to_be_bytes());
        let pseudo = !sum16::ones_complement(s);
        f[at..at + 2].copy_from_slice(&pseudo.to_ne_bytes());
    }

    #[test]
    fn a_trimmed_superframe_is_a_valid_shorter_superframe() {
        for v4 in [true, false] {
            let mut f = tcp_superframe(v4, 10 * 1448 + 100, 0x01 | 0x08);
            set_partial(&mut f, v4, true);
            let off = Offload::from_vnet(&vnet(v4, true, 1448), &f).unwrap();
            assert_eq!(off.segments(f.len()), 11);
            assert_eq!(
                trim_superframe(&mut f.clone(), &off, 11),
                None,
                "nothing to cut"
            );
            let n = trim_superframe(&mut f, &off, 4).unwrap();
            f.truncate(n);
            assert_eq!(off.segments(f.len()), 4);
            // Its segments are right, and FIN/PSH went with the tail.
            let s = Segments::new(&f, &off).unwrap();
            let mut buf = vec![0u8; 2000];
            let mut data = Vec::new();
            for i in 0..s.count() {
                let len = s.write(i, &mut buf);
                let p = SlicedPacket::from_ethernet(&buf[..len]).unwrap();
                let Some(TransportSlice::Tcp(t)) = &p.transport else {
                    panic!()
                };
                assert!(!t.fin() && !t.psh());
                data.extend_from_slice(t.payload());
            }
            assert_eq!(data, payload(4 * 1448));
            // Finished as one frame, its checksum is the trimmed frame's.
            complete_checksum(&mut f, off.csum.unwrap());
            let p = SlicedPacket::from_ethernet(&f).unwrap();
            let Some(TransportSlice::Tcp(t)) = &p.transport else {
                panic!()
            };
            let want = match &p.net {
                Some(NetSlice::Ipv4(ip)) => {
                    let h = ip.header().to_header();
                    assert_eq!(h.header_checksum, h.calc_header_checksum());
                    assert_eq!(usize::from(h.total_len), n - 14);
                    t.calc_checksum_ipv4(h.source, h.destination).unwrap()
                }
                Some(NetSlice::Ipv6(ip)) => {
                    let h = ip.header().to_header();
                    assert_eq!(usize::from(h.payload_length), n - 54);
                    t.calc_checksum_ipv6(h.source, h.destination).unwrap()
                }
                _ => panic!(),
            };
            assert_eq!(t.checksum(), want, "v4={v4}");
        }
    }
}
