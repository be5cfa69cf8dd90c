//! A structure-aware frame fuzzer over the DPDK-free pipeline
//! (`vswitch::Pipeline`: VXLAN arrival on the uplink, bridge with port
//! security, security groups and sessions, meters, tunnel egress and
//! flood admission), checked against references.
//!
//! Frames are built layer by layer (Ethernet, 0-4 VLAN tags, ARP, IPv4,
//! IPv6 with chains of extension headers, TCP, UDP, ICMP, VXLAN with an
//! inner frame) with lies in every length field and cuts at any byte, from
//! addresses the topology knows, so that they reach deep into the stages
//! rather than failing the first check; some carry a TAP's offloads (a
//! superframe or a partial checksum, from a random virtio-net header the
//! gate accepted). Every few thousand frames the topology changes: two
//! bridge domains (VPC segments) with tunnel ports to remote VTEPs, a port
//! in none, port security on a random subset of ports, random security
//! groups, meters and QoS classes on random ports, a random underlay MTU
//! and next hops resolved or not. Bursts come from the NICs and, as VXLAN,
//! from the uplink.
//!
//! Invariants checked on every burst:
//! - nothing panics;
//! - every frame has exactly one fate, and the drop counters grow by
//!   exactly the wire packets of the dropped frames, of refused flood
//!   copies and of segments a policer cut (nothing uncounted, nothing
//!   counted twice); `rx_packets` grows by the burst;
//! - an uplink frame enters by the tunnel port of its VNI and outer source,
//!   with its inner frame inside the bytes;
//! - no frame leaves its bridge domain (its VNI): an output port is in the
//!   ingress port's bridge and is not the ingress port; a flood set is
//!   part of the bridge's flood list; nothing goes from a tunnel into a
//!   tunnel; a tunnel output has a resolved next hop, fits the underlay
//!   MTU (each segment of a superframe) and is on the head-end replication
//!   list when flooded; its outer headers (written by the overlay) carry
//!   the bridge's VNI, a valid IPv4 checksum and consistent lengths;
//! - a guarded port's frame that passes has the port's source MAC and,
//!   when it is IPv4, its source address (or 0.0.0.0 for DHCP);
//! - a frame (or flood copy) that passes a security group it should not
//!   (per acl's linear reference classifier, rules in rank order) belongs
//!   to a session that frames the groups allowed opened.
//!
//! Every frame also meets the TAP's virtio-net header gate
//! (`vswitch::offload`, random with plausible fields): a header is either
//! refused or describes segments that stay within the frame and
//! `MAX_GSO_SEGMENTS`, and whose checksums can be completed.
//!
//! A small xorshift generator keeps runs reproducible from a seed (the
//! `rand` crate would add a dependency for what is twenty lines here).

use std::net::Ipv4Addr;
use std::sync::Arc;

use acl::policer::{ColorAction, MeterConf, Policy, SharedMeter, Unit};
use acl::reference::Linear;
use acl::session::{Found, Limits, SessionTable, Timeouts};
use acl::{Action as AclAction, Cidr, PortRange, Proto, Rule, SecurityGroup};
use vswitch::offload::Offload;
use vswitch::overlay::{wire_frame_len, Encap};
use vswitch::security::{tuple_of, Group, PortPolicy, Security, KEEP_ALL};
use vswitch::{
    Arrival, BridgeConf, Decisions, DropReason, Fate, FlowKey, Frame, GuardConf, MacAddr, Now,
    Overlay, Pipeline, PortCounters, PortGuard, PortId, SwitchBuilder, MAX_BURST, MAX_PORTS,
};
use vxlan::encap::{Template, Tunnel};
use vxlan::tunnels::TunnelMap;

/// The VTEP's address.
const VTEP_IP: [u8; 4] = [10, 0, 0, 200];

/// NIC ports: 0-3 in bridge "a", 4-7 in bridge "b", 8 in none.
const NICS: u16 = 9;
/// Tunnel ports (remote VTEP `port_ip(port)`): port, bridge index,
/// on the head-end replication list.
const TUNNELS: [(u16, u16, bool); 3] = [(9, 0, true), (10, 0, false), (11, 1, true)];
/// The bridges' VNIs (300 is served by none).
const VNIS: [u32; 2] = [100, 200];
/// The uplink.
const UPLINK: u16 = 12;
/// Ports with counters.
const PORTS: u16 = 13;
/// Frames between two topology changes.
const ROUND: u64 = 5_000;

/// Deterministic xorshift64*.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits.
    pub fn bits(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.bits() % n
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    fn byte(&mut self) -> u8 {
        self.bits() as u8
    }
}

fn port_mac(p: u16) -> [u8; 6] {
    [2, 0, 0, 0, 0, p as u8 + 1]
}

fn port_ip(p: u16) -> [u8; 4] {
    [10, 0, 0, p as u8 + 1]
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Soak {
    /// Frames fed.
    pub frames: u64,
    /// Sent out of one port.
    pub outputs: u64,
    /// Flooded.
    pub floods: u64,
    /// Sent into a tunnel (unicast or a flood's copy).
    pub tunnelled: u64,
    /// Dropped, per reason.
    pub drops: std::collections::BTreeMap<&'static str, u64>,
    /// Frames the VXLAN gate took as tunnel traffic.
    pub decapsulated: u64,
    /// Virtio-net headers accepted, and superframes cut into segments.
    pub offloads: u64,
    /// Superframes cut into segments.
    pub segmented: u64,
    /// Invariant violations (the first 20).
    pub violations: Vec<String>,
}

impl Soak {
    fn violation(&mut self, v: String) {
        if self.violations.len() < 20 {
            self.violations.push(v);
        }
    }
}

/// One topology and its rules.
struct Topo {
    pipe: Pipeline,
    groups: Vec<SecurityGroup>,
    /// Per port: (ingress, egress) indexes into `groups`.
    attached: Vec<(Option<usize>, Option<usize>)>,
    guarded: Vec<bool>,
}

impl Topo {
    fn overlay(&self) -> &Overlay {
        self.pipe.overlay.as_ref().expect("always a VTEP")
    }
}

fn random_group(rng: &mut Rng, name: String) -> SecurityGroup {
    let mut rules = Vec::new();
    for i in 0..rng.below(6) {
        let action = if rng.chance(60) {
            AclAction::Allow
        } else {
            AclAction::Deny
        };
        let mut r = Rule::any(&format!("r{i}"), rng.below(4) as u32, action);
        r.proto = match rng.below(4) {
            0 => Proto::Tcp,
            1 => Proto::Udp,
            2 => Proto::Icmp,
            _ => Proto::Any,
        };
        if matches!(r.proto, Proto::Tcp | Proto::Udp) && rng.chance(60) {
            let lo = [22, 53, 80, 443, 4789][rng.below(5) as usize];
            r.dst_ports = PortRange {
                lo,
                hi: lo + rng.below(100) as u16,
            };
        }
        if rng.chance(40) {
            r.src = Cidr::new(
                std::net::IpAddr::from(port_ip(rng.below(u64::from(PORTS)) as u16)),
                [24, 30, 32][rng.below(3) as usize],
            );
        }
        rules.push(r);
    }
    // Same-priority overlaps with different actions are refused by the
    // config's lint, not the classifier: keep the ranks distinct.
    for (i, r) in rules.iter_mut().enumerate() {
        r.priority = r.priority * 10 + i as u32;
    }
    SecurityGroup {
        name,
        rules,
        default: if rng.chance(50) {
            AclAction::Allow
        } else {
            AclAction::Deny
        },
    }
}

/// A meter that lets a few packets through, remarks a few, drops the rest
/// (in packets: frames are short, superframes count their segments).
fn tight_meter(rng: &mut Rng) -> Arc<SharedMeter> {
    let policy = Policy {
        meter: MeterConf::SrTcm {
            cir: 1 + rng.below(2000),
            cbs: 1 + rng.below(16),
            ebs: rng.below(16),
        },
        unit: Unit::Packets,
        actions: [
            ColorAction::Pass,
            ColorAction::Remark(rng.below(64) as u8),
            ColorAction::Drop,
        ],
    };
    Arc::new(SharedMeter::new(policy, 0))
}

fn topology(rng: &mut Rng, sessions: &Arc<SessionTable>, generation: u32) -> Topo {
    let mut b = SwitchBuilder::new();
    let conf = |name: &str| BridgeConf {
        name: name.into(),
        mac_capacity: 64,
        mac_aging_secs: 30,
    };
    let bridges = [b.bridge(conf("a")), b.bridge(conf("b"))];
    let mut guarded = vec![false; usize::from(PORTS)];
    for p in 0..NICS - 1 {
        b.attach(PortId(p), bridges[usize::from(p / 4)]);
        if rng.chance(50) {
            guarded[usize::from(p)] = true;
            b.guard(
                PortId(p),
                PortGuard::new(&GuardConf {
                    mac: MacAddr(port_mac(p)),
                    addresses: vec![std::net::IpAddr::from(port_ip(p))],
                    allow_vlan: rng.chance(20),
                    ..GuardConf::default()
                }),
            );
        }
        if rng.chance(30) {
            b.mac_limit(PortId(p), 1 + rng.below(4) as u32);
        }
    }
    let mut map = TunnelMap::new();
    for (i, vni) in VNIS.iter().enumerate() {
        map.add_vni(*vni, i as u16);
    }
    let mut encap = vec![None; MAX_PORTS].into_boxed_slice();
    for (p, bridge, flood) in TUNNELS {
        b.attach_tunnel(PortId(p), bridges[usize::from(bridge)], flood);
        let remote = Ipv4Addr::from(port_ip(p));
        map.add_remote(VNIS[usize::from(bridge)], remote, p);
        encap[usize::from(p)] = Some(Encap {
            template: Template::new(&Tunnel {
                src_mac: port_mac(UPLINK),
                dst_mac: [2, 0xee, 0, 0, 0, p as u8],
                src_ip: Ipv4Addr::from(VTEP_IP),
                dst_ip: remote,
                dst_port: vxlan::VXLAN_PORT,
                vni: VNIS[usize::from(bridge)],
                ttl: 64,
                df: true,
            }),
            resolved: rng.chance(80),
        });
    }
    let overlay = Overlay {
        uplink: PortId(UPLINK),
        ip: Ipv4Addr::from(VTEP_IP),
        udp_port: vxlan::VXLAN_PORT,
        max_inner: [1464, 1464, 200, 9000][rng.below(4) as usize],
        map,
        learn: vec![rng.chance(50), rng.chance(50)],
        encap,
    };
    let switch = b.build(None).expect("a valid topology");
    let groups: Vec<SecurityGroup> = (0..3).map(|i| random_group(rng, format!("g{i}"))).collect();
    // Rules of QoS class 1 (when some port has a group) meet one meter.
    let compiled: Vec<Arc<Group>> = groups
        .iter()
        .map(|g| {
            Arc::new(Group::new(
                g,
                g.rules.iter().map(|_| rng.below(2) as u16).collect(),
            ))
        })
        .collect();
    let mut attached = Vec::new();
    let mut policies = Vec::new();
    for _ in 0..PORTS {
        let mut pick = || rng.chance(40).then(|| rng.below(3) as usize);
        let (i, e) = (pick(), pick());
        attached.push((i, e));
        policies.push(PortPolicy {
            ingress: i.map(|g| compiled[g].clone()),
            egress: e.map(|g| compiled[g].clone()),
            ingress_meter: rng.chance(15).then(|| tight_meter(rng)),
            egress_meter: rng.chance(15).then(|| tight_meter(rng)),
        });
    }
    let security = Security::new(
        policies,
        vec![tight_meter(rng)],
        sessions.clone(),
        generation,
    );
    Topo {
        pipe: Pipeline::new(switch, security, Some(overlay)),
        groups,
        attached,
        guarded,
    }
}

/// A frame as a port might send it, lies included.
fn frame(rng: &mut Rng, in_port: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    let pick_port = |rng: &mut Rng| rng.below(u64::from(PORTS)) as u16;
    // Destination and source MACs.
    let dst = match rng.below(5) {
        0 => [0xff; 6],
        1 => [0x33, 0x33, 0, 0, 0, 1],
        2 => [rng.byte(); 6],
        _ => port_mac(pick_port(rng)),
    };
    let src = match rng.below(10) {
        0 => port_mac(pick_port(rng)),
        1 => [rng.byte() | 1, 0, 0, 0, 0, rng.byte()],
        2 => [0; 6],
        3 => [2, 9, 9, rng.byte(), rng.byte(), rng.byte()],
        _ => port_mac(in_port),
    };
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    let tags = [0, 0, 0, 0, 0, 0, 1, 2, 3, 4][rng.below(10) as usize];
    for _ in 0..tags {
        f.extend_from_slice(&[0x81, 0x00, 0, rng.byte() & 0x0f]);
    }
    let kind = rng.below(20);
    let src_ip = if rng.chance(70) {
        port_ip(in_port)
    } else if rng.chance(50) {
        port_ip(pick_port(rng))
    } else {
        [0, 0, 0, 0]
    };
    let dst_ip = port_ip(pick_port(rng));
    match kind {
        0..=8 => {
            f.extend_from_slice(&[0x08, 0x00]);
            ipv4(rng, &mut f, src_ip, dst_ip);
        }
        9..=14 => {
            f.extend_from_slice(&[0x86, 0xdd]);
            ipv6(rng, &mut f, src_ip, dst_ip);
        }
        15..=17 => {
            f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1 + rng.byte() % 2]);
            let sha = if rng.chance(80) {
                src
            } else {
                port_mac(pick_port(rng))
            };
            f.extend_from_slice(&sha);
            f.extend_from_slice(&src_ip);
            f.extend_from_slice(&[0; 6]);
            f.extend_from_slice(&dst_ip);
        }
        18 => {
            // VXLAN to the VTEP, around a frame of its own.
            let inner = frame(rng, in_port);
            vxlan_around(rng, &mut f, &inner);
        }
        _ => {
            f.extend_from_slice(&(rng.bits() as u16).to_be_bytes());
            f.extend((0..rng.below(40)).map(|_| rng.byte()));
        }
    }
    if rng.chance(10) {
        let cut = rng.below(f.len() as u64 + 1) as usize;
        f.truncate(cut);
    }
    f
}

/// Appends to `f` (an Ethernet header without its type) IPv4, UDP and
/// VXLAN headers to the VTEP from a known or unknown VTEP, in one of the
/// VNIs or an unknown one, lies included, then `inner`.
fn vxlan_around(rng: &mut Rng, f: &mut Vec<u8>, inner: &[u8]) {
    f.extend_from_slice(&[0x08, 0x00]);
    let start = f.len();
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0]);
    // Mostly a tunnel port's VTEP in its VNI, else anyone in any.
    let (src, vni) = if rng.chance(60) {
        let (p, b, _) = TUNNELS[rng.below(TUNNELS.len() as u64) as usize];
        (p, VNIS[usize::from(b)])
    } else {
        (
            rng.below(u64::from(PORTS)) as u16,
            [100u32, 200, 300][rng.below(3) as usize],
        )
    };
    f.extend_from_slice(&port_ip(src));
    f.extend_from_slice(&VTEP_IP);
    let udp_len = (8 + 8 + inner.len()) as u16;
    f.extend_from_slice(&rng.bits().to_be_bytes()[..2]);
    f.extend_from_slice(&4789u16.to_be_bytes());
    f.extend_from_slice(
        &(if rng.chance(90) {
            udp_len
        } else {
            rng.bits() as u16
        })
        .to_be_bytes(),
    );
    f.extend_from_slice(&[0, 0]);
    let vni = vni.to_be_bytes();
    f.extend_from_slice(&[if rng.chance(90) { 0x08 } else { 0 }, 0, 0, 0]);
    f.extend_from_slice(&[vni[1], vni[2], vni[3], 0]);
    f.extend_from_slice(inner);
    let total = (f.len() - start) as u16;
    let total = if rng.chance(85) {
        total
    } else {
        rng.bits() as u16
    };
    f[start + 2..start + 4].copy_from_slice(&total.to_be_bytes());
    if rng.chance(10) {
        f[start + 6] = 0x20; // a fragment
    }
}

/// A frame the uplink receives: mostly VXLAN around a NIC's frame.
fn uplink_frame(rng: &mut Rng) -> Vec<u8> {
    let from = rng.below(u64::from(NICS)) as u16;
    if rng.chance(20) {
        return frame(rng, from);
    }
    let inner = frame(rng, from);
    let mut f = vec![2, 0, 0, 0, 0, UPLINK as u8 + 1, 2, 0xee, 0, 0, 0, 1];
    vxlan_around(rng, &mut f, &inner);
    if rng.chance(5) {
        let cut = rng.below(f.len() as u64 + 1) as usize;
        f.truncate(cut);
    }
    f
}

fn l4(rng: &mut Rng, f: &mut Vec<u8>, proto: u8) {
    let ports = [22u16, 53, 67, 68, 80, 443, 547, 4789, 5000];
    let port = |rng: &mut Rng| ports[rng.below(ports.len() as u64) as usize];
    match proto {
        6 => {
            f.extend_from_slice(&port(rng).to_be_bytes());
            f.extend_from_slice(&port(rng).to_be_bytes());
            f.extend((0..8).map(|_| rng.byte()));
            f.push(0x50);
            f.push([0x02, 0x10, 0x12, 0x11, 0x04, rng.byte()][rng.below(6) as usize]);
            f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        }
        17 => {
            let dport = port(rng);
            f.extend_from_slice(&port(rng).to_be_bytes());
            f.extend_from_slice(&dport.to_be_bytes());
            f.extend_from_slice(&(8 + rng.below(64) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
            if dport == 4789 {
                // VXLAN and an inner frame (tagged sometimes).
                f.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 100, 0]);
                f.extend_from_slice(&[0xff; 6]);
                f.extend_from_slice(&[2, 7, 7, 7, 7, 7]);
                if rng.chance(30) {
                    f.extend_from_slice(&[0x81, 0, 0, 5]);
                }
                f.extend_from_slice(&[0x08, 0x06]);
                f.extend((0..28).map(|_| rng.byte()));
            }
        }
        1 | 58 => {
            let ty = [0u8, 3, 8, 128, 129, 133, 134, 135, 136, 137, 143][rng.below(11) as usize];
            f.extend_from_slice(&[ty, 0, 0, 0]);
            f.extend((0..rng.below(40)).map(|_| rng.byte()));
        }
        _ => f.extend((0..rng.below(20)).map(|_| rng.byte())),
    }
}

fn ipv4(rng: &mut Rng, f: &mut Vec<u8>, src: [u8; 4], dst: [u8; 4]) {
    let start = f.len();
    let ihl = if rng.chance(90) { 5 } else { rng.byte() & 0x0f };
    let version = if rng.chance(95) { 4 } else { rng.byte() >> 4 };
    let proto = [6u8, 17, 1, 47][rng.below(4) as usize];
    let frag: u16 = match rng.below(10) {
        0 => 0x2000,                     // first of several
        1 => rng.bits() as u16 & 0x1fff, // a later one
        _ => 0x4000,                     // DF
    };
    f.push(version << 4 | ihl);
    f.push(rng.byte() & 0xfc);
    f.extend_from_slice(&[0, 0]); // total length, below
    f.extend_from_slice(&(rng.bits() as u16).to_be_bytes());
    f.extend_from_slice(&frag.to_be_bytes());
    f.extend_from_slice(&[64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    for _ in 5..ihl.max(5) {
        f.extend_from_slice(&[1, 1, 1, 1]);
    }
    l4(rng, f, proto);
    let total = if rng.chance(85) {
        (f.len() - start) as u16
    } else {
        rng.bits() as u16
    };
    f[start + 2..start + 4].copy_from_slice(&total.to_be_bytes());
}

fn ipv6(rng: &mut Rng, f: &mut Vec<u8>, src: [u8; 4], dst: [u8; 4]) {
    let start = f.len();
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, 0, 64]);
    let v6 = |a: [u8; 4]| {
        let mut b = [0u8; 16];
        b[0] = 0xfd;
        b[12..].copy_from_slice(&a);
        b
    };
    let s = if rng.chance(10) { [0u8; 16] } else { v6(src) };
    f.extend_from_slice(&s);
    f.extend_from_slice(&v6(dst));
    let upper = [6u8, 17, 58, 59][rng.below(4) as usize];
    let chain = if rng.chance(70) {
        0
    } else {
        rng.below(20) as usize
    };
    let kinds = [0u8, 43, 60, 44, 51];
    let mut next_at = start + 6;
    for _ in 0..chain {
        let k = kinds[rng.below(kinds.len() as u64) as usize];
        f[next_at] = k;
        next_at = f.len();
        match k {
            44 => {
                let off: u16 = if rng.chance(50) {
                    0
                } else {
                    rng.bits() as u16 & 0xfff8
                };
                f.push(0);
                f.push(0);
                f.extend_from_slice(&(off | u16::from(rng.chance(50))).to_be_bytes());
                f.extend((0..4).map(|_| rng.byte()));
            }
            51 => {
                f.extend_from_slice(&[0, 1]);
                f.extend((0..10).map(|_| rng.byte()));
            }
            _ => {
                let len = rng.below(3) as u8;
                f.extend_from_slice(&[0, len]);
                f.extend((0..usize::from(len) * 8 + 6).map(|_| rng.byte()));
            }
        }
    }
    f[next_at] = upper;
    l4(rng, f, upper);
    let plen = (f.len() - start - 40) as u16;
    f[start + 4..start + 6].copy_from_slice(&plen.to_be_bytes());
}

/// A fuzzed frame: its bytes and, for one from a TAP, its offloads.
struct Fz {
    bytes: Vec<u8>,
    off: Offload,
}

impl Frame for Fz {
    fn data(&self) -> &[u8] {
        &self.bytes
    }
    fn offload(&self) -> Offload {
        self.off
    }
}

/// Feeds `frames` frames from `seed` through the pipeline, checking every
/// invariant of the module documentation.
pub fn run(seed: u64, frames: u64) -> Soak {
    let mut rng = Rng::new(seed);
    let mut soak = Soak::default();
    let sessions = Arc::new(SessionTable::with_limits(
        4096,
        Timeouts::default(),
        Limits {
            per_owner: 512,
            per_zone: 2048,
        },
    ));
    let counters: Vec<PortCounters> = (0..MAX_PORTS).map(|_| PortCounters::default()).collect();
    // With a flow cache: its key extraction meets every fuzzed frame (its
    // answers are checked against the stages by vswitch/tests/flow_cache.rs:
    // random garbage seldom fills a whole burst with hits).
    let mut d = Box::new(Decisions::with_flow_cache());
    let mut generation = 1;
    let mut topo = topology(&mut rng, &sessions, generation);
    let mut now = Now::default();
    while soak.frames < frames {
        if soak.frames / ROUND != (soak.frames + MAX_BURST as u64) / ROUND {
            generation += 1;
            topo = topology(&mut rng, &sessions, generation);
        }
        now = Now::from_ns(now.ns + rng.below(50_000_000));
        let n = 1 + rng.below(MAX_BURST as u64) as usize;
        soak.frames += n as u64;
        if rng.chance(15) {
            let burst: Vec<Vec<u8>> = (0..n).map(|_| uplink_frame(&mut rng)).collect();
            from_uplink(&mut soak, &topo, &sessions, &burst, now, &counters, &mut d);
            continue;
        }
        let in_port = PortId(rng.below(u64::from(NICS)) as u16);
        let burst: Vec<Fz> = (0..n)
            .map(|_| {
                let bytes = frame(&mut rng, in_port.0);
                let off = gates(&mut soak, &mut rng, &bytes);
                // A TAP's frames keep the offloads it declared.
                let off = off.filter(|_| rng.chance(30)).unwrap_or(Offload::NONE);
                Fz { bytes, off }
            })
            .collect();
        decide(
            &mut soak, &topo, &sessions, in_port, &burst, now, &counters, &mut d,
        );
    }
    for r in DropReason::ALL {
        let n: u64 = counters.iter().map(|c| c.drops[*r as usize].get()).sum();
        if n > 0 {
            soak.drops.insert(r.name(), n);
        }
    }
    soak
}

fn dropped_total(c: &[PortCounters]) -> u64 {
    c.iter().flat_map(|p| p.drops.iter()).map(|d| d.get()).sum()
}

/// An uplink burst: arrivals checked, then each tunnel port's inner
/// frames decided as the worker would (outer headers stripped).
#[allow(clippy::too_many_arguments)]
fn from_uplink(
    soak: &mut Soak,
    topo: &Topo,
    sessions: &SessionTable,
    burst: &[Vec<u8>],
    now: Now,
    counters: &[PortCounters],
    d: &mut Decisions,
) {
    let up = &counters[usize::from(UPLINK)];
    let (rx0, dropped0) = (up.rx_packets.get(), dropped_total(counters));
    topo.pipe.arrive(burst, counters, d);
    if up.rx_packets.get() - rx0 != burst.len() as u64 {
        soak.violation("the uplink's rx_packets did not grow by the burst".into());
    }
    let mut inner: Vec<(PortId, Vec<Fz>)> = Vec::new();
    let mut dropped = 0;
    for (i, f) in burst.iter().enumerate() {
        match d.arrival(i) {
            Arrival::Inner { port, inner: at } => {
                soak.decapsulated += 1;
                let at = usize::from(at);
                let vni = u32::from_be_bytes([0, f[46], f[47], f[48]]);
                let src = [f[26], f[27], f[28], f[29]];
                let known = TUNNELS.iter().any(|&(p, b, _)| {
                    PortId(p) == port && VNIS[usize::from(b)] == vni && port_ip(p) == src
                });
                if !known || at + 14 > f.len() {
                    soak.violation(format!("arrival by {port} at {at}: {f:02x?}"));
                    continue;
                }
                let frame = Fz {
                    bytes: f[at..].to_vec(),
                    off: Offload::NONE,
                };
                match inner.iter_mut().find(|(p, _)| *p == port) {
                    Some((_, b)) => b.push(frame),
                    None => inner.push((port, vec![frame])),
                }
            }
            Arrival::Learn { vni, remote } => {
                dropped += 1;
                // A VNI that learns, from a VTEP that is not its port.
                let learns = VNIS
                    .iter()
                    .position(|v| *v == vni)
                    .is_some_and(|b| topo.overlay().learn[b]);
                let known = TUNNELS
                    .iter()
                    .any(|&(p, b, _)| port_ip(p) == remote.octets() && VNIS[usize::from(b)] == vni);
                if !learns || known {
                    soak.violation(format!("learning {remote} in VNI {vni}: {f:02x?}"));
                }
            }
            Arrival::Host | Arrival::Drop(_) => {
                dropped += u64::from(matches!(d.arrival(i), Arrival::Drop(_)));
            }
        }
    }
    if dropped_total(counters) - dropped0 != dropped {
        soak.violation(format!(
            "{dropped} uplink frames dropped, drop counters grew by {}",
            dropped_total(counters) - dropped0
        ));
    }
    for (port, frames) in inner {
        decide(soak, topo, sessions, port, &frames, now, counters, d);
    }
}

/// A burst on `in_port` through the pipeline, every invariant checked.
#[allow(clippy::too_many_arguments)]
fn decide(
    soak: &mut Soak,
    topo: &Topo,
    sessions: &SessionTable,
    in_port: PortId,
    burst: &[Fz],
    now: Now,
    counters: &[PortCounters],
    d: &mut Decisions,
) {
    let (rx0, dropped0) = (
        counters[in_port.index()].rx_packets.get(),
        dropped_total(counters),
    );
    topo.pipe.decide(in_port, burst, now, counters, d);
    let n = burst.len();
    if counters[in_port.index()].rx_packets.get() - rx0 != n as u64 {
        soak.violation(format!("rx_packets did not grow by the burst of {n}"));
    }
    let expected = check(soak, topo, sessions, in_port, burst, d, now);
    if dropped_total(counters) - dropped0 != expected {
        soak.violation(format!(
            "{expected} packets dropped, drop counters grew by {}",
            dropped_total(counters) - dropped0
        ));
    }
}

/// The virtio-net header gate on one frame: the offloads of a random
/// header, if accepted.
fn gates(soak: &mut Soak, rng: &mut Rng, f: &[u8]) -> Option<Offload> {
    use vswitch::offload::{complete_checksum, Segments, VnetHdr, MAX_GSO_SEGMENTS};
    let l4 = [34u16, 38, 54, 58][rng.below(4) as usize];
    let h = VnetHdr {
        flags: if rng.chance(90) { 1 } else { rng.byte() },
        gso_type: [0u8, 1, 4, 5, 0x81, rng.byte()][rng.below(6) as usize],
        hdr_len: l4 + [20u16, 8, 32][rng.below(3) as usize],
        gso_size: [1u16, 8, 100, 1448, rng.bits() as u16][rng.below(5) as usize],
        csum_start: if rng.chance(80) {
            l4
        } else {
            rng.bits() as u16
        },
        csum_offset: [16u16, 6, 2, rng.bits() as u16][rng.below(4) as usize],
    };
    let off = Offload::from_vnet(&h, f).ok()?;
    soak.offloads += 1;
    if let Some(c) = off.csum {
        complete_checksum(&mut f.to_vec(), c);
    }
    if let Some(s) = Segments::new(f, &off) {
        soak.segmented += 1;
        if s.count() > MAX_GSO_SEGMENTS as usize {
            soak.violation(format!("{} segments from {h:?}", s.count()));
            return None;
        }
        let mut buf = vec![0u8; 65536 + 256];
        for i in 0..s.count() {
            let len = s.len(i);
            if len > buf.len() || s.write(i, &mut buf) != len {
                soak.violation(format!("segment {i} of {h:?}: length {len}"));
                return None;
            }
        }
    }
    Some(off)
}

/// The invariants of one burst's fates; the wire packets the drop
/// counters must have grown by.
fn check(
    soak: &mut Soak,
    topo: &Topo,
    sessions: &SessionTable,
    in_port: PortId,
    burst: &[Fz],
    d: &Decisions,
    now: Now,
) -> u64 {
    let sw = &topo.pipe.switch;
    let bridge = sw.bridge_of(in_port);
    let zone = sw.zone_of(in_port);
    let from_tunnel = sw.is_tunnel(in_port);
    let mut dropped = 0;
    for (i, f) in burst.iter().enumerate() {
        let wire = f.wire_packets();
        let in_bridge = |q: PortId| q != in_port && bridge.is_some() && sw.bridge_of(q) == bridge;
        let tunnel_ok = |q: PortId| {
            sw.is_tunnel(q)
                && !from_tunnel
                && topo.overlay().encap[q.index()].is_some_and(|e| e.resolved)
                && wire_frame_len(f) <= topo.overlay().max_inner
        };
        let outs: Vec<PortId> = match d.fate(i) {
            Fate::Drop(_) => {
                dropped += wire;
                continue;
            }
            Fate::Local(q) => {
                soak.outputs += 1;
                if !in_bridge(q) || sw.is_tunnel(q) {
                    soak.violation(format!("frame from {in_port} output to {q}"));
                }
                vec![q]
            }
            Fate::Tunnel(q) => {
                soak.outputs += 1;
                soak.tunnelled += 1;
                if !in_bridge(q) || !tunnel_ok(q) {
                    soak.violation(format!("frame from {in_port} tunnelled to {q}"));
                }
                check_encap(soak, topo, q, f);
                vec![q]
            }
            Fate::Flood { .. } => {
                soak.floods += 1;
                let list: Vec<PortId> = sw.flood_ports(in_port).iter().collect();
                let (locals, tunnels) = (d.flood_locals(i), d.flood_tunnels(i));
                let listed = |q: &PortId| list.contains(q) && in_bridge(*q);
                if !locals.iter().all(|q| listed(q) && !sw.is_tunnel(*q))
                    || !tunnels.iter().all(|q| listed(q) && tunnel_ok(*q))
                    || tunnels.iter().any(|&q| {
                        TUNNELS
                            .iter()
                            .any(|&(p, _, flood)| PortId(p) == q && !flood)
                    })
                {
                    soak.violation(format!(
                        "flood from {in_port} to {locals:?} and tunnels {tunnels:?} (list {list:?})"
                    ));
                }
                soak.tunnelled += tunnels.len() as u64;
                // Each refused copy was counted on its port, as what it
                // would have carried after the meters.
                let carried = match d.keep(i) {
                    KEEP_ALL => wire,
                    keep => u64::from(keep),
                };
                dropped += (list.len() - locals.len() - tunnels.len()) as u64 * carried;
                locals.iter().chain(tunnels).copied().collect()
            }
        };
        let keep = d.keep(i);
        if keep != KEEP_ALL {
            if u64::from(keep) >= wire || keep == 0 {
                soak.violation(format!("kept {keep} of {wire} segments"));
            }
            dropped += wire - u64::from(keep).min(wire);
        }
        if topo.guarded[in_port.index()] {
            if f.bytes[6..12] != port_mac(in_port.0) {
                soak.violation(format!(
                    "guarded {in_port} sent a foreign MAC: {:02x?}",
                    f.bytes
                ));
            }
            if let Ok(k) = FlowKey::parse(&f.bytes) {
                let own = u128::from(u32::from_be_bytes(port_ip(in_port.0)));
                if k.l3 == vswitch::L3::V4 && k.src_ip != own && k.src_ip != 0 {
                    soak.violation(format!(
                        "guarded {in_port} sent a foreign IPv4 source: {:02x?}",
                        f.bytes
                    ));
                }
            }
        }
        // Groups, against the linear reference. (A later IP fragment has
        // no ports to judge and follows its first fragment instead: the
        // security stage's unit tests cover it.)
        let Some(key) = FlowKey::parse(&f.bytes).ok().filter(|k| !k.later_fragment) else {
            continue;
        };
        let Some(t) = tuple_of(&key) else {
            continue;
        };
        for q in outs {
            let (_, egress) = topo.attached[in_port.index()];
            let (ingress, _) = topo.attached[q.index()];
            let denied = [egress, ingress]
                .into_iter()
                .flatten()
                .any(|g| Linear::new(&topo.groups[g]).classify(&t).action == AclAction::Deny);
            if denied && sessions.lookup(&t, zone, now.secs) == Found::Miss {
                soak.violation(format!(
                    "{in_port} -> {q} passed groups that deny it, with no session: {t:?}"
                ));
            }
        }
    }
    dropped
}

/// The outer headers tunnel port `q` puts on `f`: its VNI, a valid IPv4
/// header checksum, UDP and IPv4 lengths that add up.
fn check_encap(soak: &mut Soak, topo: &Topo, q: PortId, f: &Fz) {
    let mut outer = [0u8; vxlan::OUTER_LEN];
    let len = f.bytes.len() as u32;
    let sport = vxlan::encap::source_port(&f.bytes);
    topo.overlay().write_outer(q, sport, len, 7, &mut outer);
    let mut whole = outer.to_vec();
    whole.extend_from_slice(&f.bytes);
    let Ok(p) = etherparse::SlicedPacket::from_ethernet(&whole) else {
        soak.violation(format!("encap for {q} does not parse: {outer:02x?}"));
        return;
    };
    let bridge = TUNNELS
        .iter()
        .find(|&&(p, _, _)| PortId(p) == q)
        .map(|&(_, b, _)| usize::from(b))
        .expect("a tunnel port");
    let vni = u32::from_be_bytes([0, outer[46], outer[47], outer[48]]);
    let ok = match (&p.net, &p.transport) {
        (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Udp(udp))) => {
            let h = ip.header().to_header();
            h.header_checksum == h.calc_header_checksum()
                && usize::from(h.total_len) == whole.len() - 14
                && usize::from(udp.length()) == whole.len() - 34
                && udp.destination_port() == vxlan::VXLAN_PORT
                && vni == VNIS[bridge]
        }
        _ => false,
    };
    if !ok {
        soak.violation(format!("encap for {q}: {outer:02x?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_reproducible_and_frames_vary() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let fa: Vec<Vec<u8>> = (0..50).map(|_| frame(&mut a, 1)).collect();
        let fb: Vec<Vec<u8>> = (0..50).map(|_| frame(&mut b, 1)).collect();
        assert_eq!(fa, fb);
        let lens: std::collections::HashSet<usize> = fa.iter().map(Vec::len).collect();
        assert!(lens.len() > 10, "lengths vary: {lens:?}");
    }
}
