//! The benchmark workloads: frames built with etherparse, written as pcap
//! files that net_pcap replays (`infinite_rx=1`) in every harness, so
//! vswitchd and its peers see byte-identical traffic.
//!
//! Every workload is one station ([`SRC_MAC`], behind the generator port)
//! sending to another ([`DST_MAC`], behind the sink port); flows differ in
//! the IP source address (10.0.0.0/16 + flow index) so ACLs, sessions and
//! exact-match caches see `flows` distinct 5-tuples.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use etherparse::PacketBuilder;

/// The sending station.
pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The receiving station (a static MAC behind the sink port).
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// Destination address of every inner flow.
pub const DST_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
/// UDP destination port of every flow.
pub const DST_PORT: u16 = 5001;
/// Outer MACs and addresses of VXLAN traffic: remote VTEP -> our VTEP.
pub const VTEP_REMOTE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x01];
/// Our VTEP's MAC (the uplink's).
pub const VTEP_LOCAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x02];
/// Remote VTEP address.
pub const VTEP_REMOTE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 1);
/// Our VTEP address.
pub const VTEP_LOCAL_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 2);
/// The VNI of VXLAN traffic.
pub const VNI: u32 = 100;
/// VXLAN's IANA port.
pub const VXLAN_PORT: u16 = 4789;

/// Frame size of the minimum-size workloads, without the 4-byte FCS
/// (64 bytes on the wire).
pub const MIN_FRAME: usize = 60;

/// What a pcap file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// 64-byte UDP/IPv4, one frame per flow (at least one burst of 32).
    Udp4 {
        /// Distinct 5-tuples.
        flows: u32,
    },
    /// 78-byte UDP/IPv6 (the IPv6 minimum in RFC 2544 tests).
    Udp6 {
        /// Distinct 5-tuples.
        flows: u32,
    },
    /// Simple IMIX: 64, 512 and 1518-byte frames (on the wire) in 7:4:1.
    Imix {
        /// Distinct 5-tuples.
        flows: u32,
    },
    /// 64-byte UDP/IPv4 frames inside VXLAN (VNI [`VNI`]) from the remote
    /// VTEP to ours, for decap.
    Vxlan {
        /// Distinct inner 5-tuples (the outer UDP source port follows them).
        flows: u32,
    },
    /// TCP connections, each a full handshake (SYN, SYN-ACK, ACK), four
    /// data segments each way, and FIN/ACK teardown, for session tables.
    Tcp {
        /// Connections.
        flows: u32,
    },
}

impl Workload {
    /// The file name it is written to.
    pub fn file_name(&self) -> String {
        let n = |f: u32| match f {
            1 => "1flow".to_string(),
            f if f % 1024 == 0 => format!("{}k", f / 1024),
            f => f.to_string(),
        };
        match self {
            Workload::Udp4 { flows } => format!("udp4-{}.pcap", n(*flows)),
            Workload::Udp6 { flows } => format!("udp6-{}.pcap", n(*flows)),
            Workload::Imix { flows } => format!("imix-{}.pcap", n(*flows)),
            Workload::Vxlan { flows } => format!("vxlan-{}.pcap", n(*flows)),
            Workload::Tcp { flows } => format!("tcp-{}.pcap", n(*flows)),
        }
    }

    /// The frames.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        match *self {
            Workload::Udp4 { flows } => (0..frame_count(flows))
                .map(|i| udp4(i % flows, MIN_FRAME))
                .collect(),
            Workload::Udp6 { flows } => (0..frame_count(flows))
                .map(|i| udp6(i % flows, 74))
                .collect(),
            Workload::Imix { flows } => {
                const SIZES: [usize; 12] = [60, 508, 60, 60, 508, 60, 1514, 60, 508, 60, 60, 508];
                let n = frame_count(flows).next_multiple_of(SIZES.len() as u32);
                (0..n)
                    .map(|i| udp4(i % flows, SIZES[i as usize % SIZES.len()]))
                    .collect()
            }
            Workload::Vxlan { flows } => {
                (0..frame_count(flows)).map(|i| vxlan(i % flows)).collect()
            }
            Workload::Tcp { flows } => (0..flows).flat_map(tcp_connection).collect(),
        }
    }

    /// Writes the pcap into `dir`, unless an identical file is there.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join(self.file_name());
        let frames = self.frames();
        if crate::pcap::read(&path).is_ok_and(|old| old == frames) {
            return Ok(path);
        }
        crate::pcap::write(&path, &frames)?;
        Ok(path)
    }
}

/// Frames in a file: one per flow, but at least a full burst so a replay
/// of one flow still fills the rx ring in bursts.
fn frame_count(flows: u32) -> u32 {
    assert!(flows > 0, "a workload needs at least one flow");
    flows.max(32)
}

/// The source address of flow `i`: 10.0.0.0/16 + i (at most 65536 flows).
pub fn flow_src_ip(i: u32) -> Ipv4Addr {
    assert!(i < 1 << 16, "flows are numbered in a /16");
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + i)
}

/// A UDP/IPv4 frame of `len` bytes (without FCS) for flow `i`.
pub fn udp4(i: u32, len: usize) -> Vec<u8> {
    let payload = vec![0u8; len - 42];
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(flow_src_ip(i).octets(), DST_IP.octets(), 64)
        .udp(10_000, DST_PORT);
    let mut out = Vec::with_capacity(len);
    b.write(&mut out, &payload).expect("writing to a Vec");
    out
}

fn udp6(i: u32, len: usize) -> Vec<u8> {
    let mut src = [0u8; 16];
    src[..2].copy_from_slice(&[0xfd, 0]);
    src[12..].copy_from_slice(&flow_src_ip(i).octets());
    let mut dst = src;
    dst[12..].copy_from_slice(&DST_IP.octets());
    let payload = vec![0u8; len - 62];
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv6(src, dst, 64)
        .udp(10_000, DST_PORT);
    let mut out = Vec::with_capacity(len);
    b.write(&mut out, &payload).expect("writing to a Vec");
    out
}

fn vxlan(i: u32) -> Vec<u8> {
    let inner = udp4(i, MIN_FRAME);
    let mut payload = Vec::with_capacity(8 + inner.len());
    // VXLAN header: flags (I bit), 3 reserved bytes, VNI, 1 reserved byte.
    payload.extend_from_slice(&[0x08, 0, 0, 0]);
    payload.extend_from_slice(&(VNI << 8).to_be_bytes());
    payload.extend_from_slice(&inner);
    // The outer source port carries entropy from the inner flow (RFC 7348).
    let sport = 49_152 + (i % 16_384) as u16;
    let b = PacketBuilder::ethernet2(VTEP_REMOTE_MAC, VTEP_LOCAL_MAC)
        .ipv4(VTEP_REMOTE_IP.octets(), VTEP_LOCAL_IP.octets(), 64)
        .udp(sport, VXLAN_PORT);
    let mut out = Vec::new();
    b.write(&mut out, &payload).expect("writing to a Vec");
    out
}

/// One TCP connection from flow `i`'s address to DST_IP:80.
fn tcp_connection(i: u32) -> Vec<Vec<u8>> {
    let (c, s) = (flow_src_ip(i).octets(), DST_IP.octets());
    let cport = 20_000 + (i % 40_000) as u16;
    let (mut cseq, mut sseq) = (1_000u32, 5_000u32);
    let seg = |from_client: bool, seq: u32, ack: Option<u32>, flags: &str, data: usize| {
        let (smac, dmac, sip, dip, sp, dp) = if from_client {
            (SRC_MAC, DST_MAC, c, s, cport, 80)
        } else {
            (DST_MAC, SRC_MAC, s, c, 80, cport)
        };
        let mut b = PacketBuilder::ethernet2(smac, dmac)
            .ipv4(sip, dip, 64)
            .tcp(sp, dp, seq, 64_240);
        if flags.contains('S') {
            b = b.syn();
        }
        if flags.contains('F') {
            b = b.fin();
        }
        if flags.contains('P') {
            b = b.psh();
        }
        if let Some(a) = ack {
            b = b.ack(a);
        }
        let mut out = Vec::new();
        b.write(&mut out, &vec![0u8; data])
            .expect("writing to a Vec");
        out
    };
    let mut v = vec![seg(true, cseq, None, "S", 0)];
    cseq += 1;
    v.push(seg(false, sseq, Some(cseq), "S", 0));
    sseq += 1;
    v.push(seg(true, cseq, Some(sseq), "", 0));
    for _ in 0..4 {
        v.push(seg(true, cseq, Some(sseq), "P", 100));
        cseq += 100;
        v.push(seg(false, sseq, Some(cseq), "P", 100));
        sseq += 100;
    }
    v.push(seg(true, cseq, Some(sseq), "F", 0));
    cseq += 1;
    v.push(seg(false, sseq, Some(cseq), "F", 0));
    sseq += 1;
    v.push(seg(true, cseq, Some(sseq), "", 0));
    v
}

/// One rule of the benchmark security group: allow UDP from `src`/`len`
/// to `dport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowRule {
    /// Source prefix.
    pub src: Ipv4Addr,
    /// Its length.
    pub len: u8,
    /// UDP destination port.
    pub dport: u16,
}

impl AllowRule {
    /// Its source prefix as text: IPv4, or for the IPv6 workloads the same
    /// prefix inside fd00::/96 (where `udp6` puts each flow's IPv4 source).
    pub fn prefix(&self, v6: bool) -> String {
        if v6 {
            let o = self.src.octets();
            let a = std::net::Ipv6Addr::new(
                0xfd00,
                0,
                0,
                0,
                0,
                0,
                u16::from_be_bytes([o[0], o[1]]),
                u16::from_be_bytes([o[2], o[3]]),
            );
            format!("{a}/{}", 96 + u32::from(self.len))
        } else {
            format!("{}/{}", self.src, self.len)
        }
    }
}

/// The benchmark security group of `n` rules, highest priority first: the
/// first n - 1 allow other prefixes and ports (no benchmark frame matches
/// them), the last allows the workloads' flows (10.0.0.0/16 to
/// [`DST_PORT`]); anything else is denied. Every frame thus goes past
/// every other rule, the worst case for a classifier.
pub fn security_group(n: u32) -> Vec<AllowRule> {
    let mut rules: Vec<AllowRule> = (0..n.saturating_sub(1))
        .map(|i| AllowRule {
            src: Ipv4Addr::new(172, 16 + (i / 256) as u8, (i % 256) as u8, 0),
            len: if i % 2 == 0 { 24 } else { 32 },
            dport: 1000 + (i % 1000) as u16,
        })
        .collect();
    rules.push(AllowRule {
        src: Ipv4Addr::new(10, 0, 0, 0),
        len: 16,
        dport: DST_PORT,
    });
    rules
}

/// The workloads `vsbench gen` writes.
pub const ALL: &[Workload] = &[
    Workload::Udp4 { flows: 1 },
    Workload::Udp4 { flows: 1024 },
    Workload::Udp4 { flows: 65536 },
    Workload::Udp6 { flows: 1024 },
    Workload::Imix { flows: 1024 },
    Workload::Vxlan { flows: 1024 },
    Workload::Tcp { flows: 1024 },
];

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use std::collections::HashSet;

    /// The 5-tuple of a frame as etherparse (the reference) reads it.
    fn tuple(f: &[u8]) -> (Vec<u8>, Vec<u8>, u16, u16) {
        let p = SlicedPacket::from_ethernet(f).expect("parses");
        let (s, d) = match p.net.expect("has IP") {
            NetSlice::Ipv4(v) => (
                v.header().source().to_vec(),
                v.header().destination().to_vec(),
            ),
            NetSlice::Ipv6(v) => (
                v.header().source().to_vec(),
                v.header().destination().to_vec(),
            ),
            _ => panic!("no IP"),
        };
        let (sp, dp) = match p.transport.expect("has L4") {
            TransportSlice::Udp(u) => (u.source_port(), u.destination_port()),
            TransportSlice::Tcp(t) => (t.source_port(), t.destination_port()),
            _ => panic!("no L4"),
        };
        (s, d, sp, dp)
    }

    #[test]
    fn ipv6_prefixes_cover_the_ipv6_flows_as_the_ipv4_ones_cover_theirs() {
        let r = AllowRule {
            src: Ipv4Addr::new(10, 0, 0, 0),
            len: 16,
            dport: DST_PORT,
        };
        assert_eq!(r.prefix(false), "10.0.0.0/16");
        assert_eq!(r.prefix(true), "fd00::a00:0/112");
        // A flow's IPv6 source is inside it.
        let f = udp6(5, 78);
        assert_eq!(&f[22..24], &[0xfd, 0]);
        assert_eq!(&f[34..36], &[10, 0]);
    }

    #[test]
    fn flows_sizes_and_names_are_as_promised() {
        for (w, len, flows) in [
            (Workload::Udp4 { flows: 1 }, Some(60), 1),
            (Workload::Udp4 { flows: 1024 }, Some(60), 1024),
            (Workload::Udp6 { flows: 100 }, Some(74), 100),
        ] {
            let fr = w.frames();
            assert!(fr.len() >= 32);
            if let Some(len) = len {
                assert!(fr.iter().all(|f| f.len() == len), "{w:?}");
            }
            let distinct: HashSet<_> = fr.iter().map(|f| tuple(f)).collect();
            assert_eq!(distinct.len(), flows, "{w:?}");
            assert!(fr.iter().all(|f| f[..6] == DST_MAC && f[6..12] == SRC_MAC));
        }
        assert_eq!(Workload::Udp4 { flows: 65536 }.file_name(), "udp4-64k.pcap");
        assert_eq!(Workload::Udp4 { flows: 1 }.file_name(), "udp4-1flow.pcap");
    }

    #[test]
    fn only_the_last_security_group_rule_admits_the_workload() {
        let rules = security_group(1000);
        assert_eq!(rules.len(), 1000);
        let admits = |r: &AllowRule, ip: Ipv4Addr, port: u16| {
            let mask = u32::MAX << (32 - r.len);
            u32::from(ip) & mask == u32::from(r.src) & mask && port == r.dport
        };
        for i in [0, 1, 1023, 65535] {
            let hits: Vec<usize> = rules
                .iter()
                .enumerate()
                .filter(|(_, r)| admits(r, flow_src_ip(i), DST_PORT))
                .map(|(k, _)| k)
                .collect();
            assert_eq!(hits, [999]);
        }
    }

    #[test]
    fn imix_has_the_simple_imix_mix() {
        let fr = Workload::Imix { flows: 24 }.frames();
        let count = |l| fr.iter().filter(|f| f.len() == l).count();
        assert_eq!((count(60), count(508), count(1514)), (21, 12, 3));
    }

    #[test]
    fn vxlan_frames_carry_the_inner_frame() {
        for (i, f) in (Workload::Vxlan { flows: 64 }).frames().iter().enumerate() {
            let p = SlicedPacket::from_ethernet(f).unwrap();
            let Some(TransportSlice::Udp(u)) = p.transport else {
                panic!()
            };
            assert_eq!(u.destination_port(), VXLAN_PORT);
            let vx = u.payload();
            assert_eq!(vx[0], 0x08);
            assert_eq!(u32::from_be_bytes(vx[4..8].try_into().unwrap()) >> 8, VNI);
            assert_eq!(vx[8..], udp4(i as u32 % 64, MIN_FRAME)[..]);
        }
    }

    #[test]
    fn tcp_connections_handshake_and_close() {
        let fr = Workload::Tcp { flows: 3 }.frames();
        assert_eq!(fr.len(), 3 * 14);
        let p = SlicedPacket::from_ethernet(&fr[1]).unwrap();
        let Some(TransportSlice::Tcp(t)) = p.transport else {
            panic!()
        };
        assert!(t.syn() && t.ack() && t.source_port() == 80);
        assert_eq!(t.acknowledgment_number(), 1001);
        let p = SlicedPacket::from_ethernet(&fr[13]).unwrap();
        let Some(TransportSlice::Tcp(t)) = p.transport else {
            panic!()
        };
        assert!(t.ack() && !t.fin() && !t.syn());
    }
}
