//! Frames and groups the crate's unit tests share.

use std::net::Ipv4Addr;
use std::sync::Arc;

use acl::policer::SharedMeter;
use acl::session::{SessionTable, Timeouts};
use acl::{Action as AclAction, Rule, SecurityGroup};
use etherparse::PacketBuilder;
use vxlan::encap::{Template, Tunnel};
use vxlan::tunnels::TunnelMap;

use crate::offload::{CsumPartial, Gso, GsoKind, Offload};
use crate::overlay::{Encap, Overlay};
use crate::pipeline::{Decisions, Fate, Now, Pipeline};
use crate::security::{Group, PortPolicy, Security};
use crate::stats::{DropReason, PortCounters};
use crate::switch::{BridgeConf, Frame, SwitchBuilder};
use crate::types::{PortId, MAX_PORTS};

/// A compiled group of `rules` that denies what they do not allow.
pub fn compiled(name: &str, rules: Vec<Rule>) -> Arc<Group> {
    let n = rules.len();
    let g = SecurityGroup {
        name: name.into(),
        rules,
        default: AclAction::Deny,
    };
    Arc::new(Group::new(&g, vec![0; n]))
}

/// A superframe as a TAP hands it over: its bytes and offloads.
pub struct Superframe(pub Vec<u8>, pub Offload);

impl Frame for Superframe {
    fn data(&self) -> &[u8] {
        &self.0
    }
    fn offload(&self) -> Offload {
        self.1
    }
}

/// A TCP superframe of `segs` segments of `mss` bytes from `src`:40000 to
/// `dst`:80, between MACs 02::1 and 02::2.
pub fn superframe(src: [u8; 4], dst: [u8; 4], segs: usize, mss: u16) -> Superframe {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(40000, 80, 1, 1000)
        .ack(1)
        .write(&mut v, &vec![7; segs * usize::from(mss)])
        .unwrap();
    let off = Offload {
        csum: Some(CsumPartial {
            start: 34,
            offset: 16,
        }),
        gso: Some(Gso {
            kind: GsoKind::Tcp4,
            size: mss,
            hdr_len: 54,
        }),
    };
    Superframe(v, off)
}

pub const VTEP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
/// Underlay MTU 1500: the largest inner frame is 1464 bytes.
pub const MAX_INNER: u32 = 1464;

pub fn mac(i: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, i]
}

pub fn remote(p: u16) -> Ipv4Addr {
    Ipv4Addr::new(10, 9, 0, p as u8)
}

/// A UDP frame of `len` bytes from MAC `src` to MAC `dst` (IPs
/// 10.0.0.src -> 10.0.0.dst, ports 1000 -> 53).
pub fn udp(src: u8, dst: [u8; 6], len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac(src), dst)
        .ipv4([10, 0, 0, src], [10, 0, 0, dst[5]], 64)
        .udp(1000, 53)
        .write(&mut v, &vec![0; len - 42])
        .unwrap();
    v
}

/// Ports 0, 1, 3 are NICs and 2, 4, 5 tunnel ports (to 10.9.0.2,
/// .4, .5) of one bridge, VNI 100, behind uplink port 6. Tunnel 2 and
/// 4 are on the head-end replication list, 5 was learned; 4's next
/// hop is unresolved.
pub struct Rig {
    pub pipe: Pipeline,
    pub counters: Vec<PortCounters>,
    pub d: Box<Decisions>,
}

impl Rig {
    pub fn new(ports: Vec<PortPolicy>, class_meters: Vec<Arc<SharedMeter>>) -> Rig {
        let mut b = SwitchBuilder::new();
        let br = b.bridge(BridgeConf {
            name: "vpc".into(),
            mac_capacity: 1024,
            mac_aging_secs: 300,
        });
        for p in [0, 1, 3] {
            b.attach(PortId(p), br);
        }
        b.attach_tunnel(PortId(2), br, true)
            .attach_tunnel(PortId(4), br, true)
            .attach_tunnel(PortId(5), br, false);
        let mut map = TunnelMap::new();
        map.add_vni(100, 0);
        let mut encap = vec![None; MAX_PORTS].into_boxed_slice();
        for p in [2u16, 4, 5] {
            map.add_remote(100, remote(p), p);
            encap[usize::from(p)] = Some(Encap {
                template: Template::new(&Tunnel {
                    src_mac: mac(0xaa),
                    dst_mac: mac(0xbb),
                    src_ip: VTEP,
                    dst_ip: remote(p),
                    dst_port: vxlan::VXLAN_PORT,
                    vni: 100,
                    ttl: 64,
                    df: true,
                }),
                resolved: p != 4,
            });
        }
        let sessions = Arc::new(SessionTable::new(1024, Timeouts::default()));
        Rig {
            pipe: Pipeline::new(
                b.build(None).unwrap(),
                Security::new(ports, class_meters, sessions, 1),
                Some(Overlay {
                    uplink: PortId(6),
                    ip: VTEP,
                    udp_port: vxlan::VXLAN_PORT,
                    max_inner: MAX_INNER,
                    map,
                    learn: vec![true],
                    encap,
                }),
            ),
            counters: (0..MAX_PORTS).map(|_| PortCounters::default()).collect(),
            d: Box::default(),
        }
    }

    pub fn plain() -> Rig {
        Rig::new(Vec::new(), Vec::new())
    }

    /// Decides a burst from `port`; the fates.
    pub fn send<F: Frame>(&mut self, port: u16, frames: &[F]) -> Vec<Fate> {
        self.pipe.decide(
            PortId(port),
            frames,
            Now::default(),
            &self.counters,
            &mut self.d,
        );
        (0..frames.len()).map(|i| self.d.fate(i)).collect()
    }

    /// Teaches the bridge that MAC `i` lives behind `port`.
    pub fn learn(&mut self, port: u16, i: u8) {
        self.send(port, &[udp(i, [0xff; 6], 60)]);
    }

    pub fn drops(&self, port: usize, why: DropReason) -> u64 {
        self.counters[port].drops[why as usize].get()
    }
}
