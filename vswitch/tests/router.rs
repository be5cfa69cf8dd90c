//! A VPC's router inside the whole pipeline: two subnets (bridges) of
//! one VPC, each with one container port and a stateful group, and a
//! third bridge in another VPC with the same addresses. Routed frames
//! leave by the right port with their edit, the reply finds the session
//! its request opened in the other subnet, ARP for the gateway is
//! answered in a bridge with no other port, and the other VPC is never
//! reached.

use std::net::Ipv4Addr;
use std::sync::Arc;

use acl::session::{SessionTable, Timeouts};
use acl::{Action as AclAction, Proto, Rule, SecurityGroup};
use etherparse::PacketBuilder;
use vswitch::router::{Endpoint, Subnet};
use vswitch::security::{Group, PortPolicy, Security};
use vswitch::{
    BridgeConf, Decisions, DropReason, Edit, Fate, MacAddr, Now, Pipeline, PortCounters, PortId,
    RouterBuilder, SwitchBuilder, MAX_PORTS,
};

const ROUTER: MacAddr = MacAddr([0x02, 0xfe, 0, 0, 0, 1]);
const OTHER_ROUTER: MacAddr = MacAddr([0x02, 0xfe, 0, 0, 0, 2]);
const A: [u8; 4] = [10, 1, 0, 10];
const B: [u8; 4] = [10, 2, 0, 20];

fn mac(i: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, i])
}

/// Allows what matches `proto` to `port` (or any), denies the rest.
fn group(name: &str, rules: Vec<Rule>) -> Arc<Group> {
    let g = SecurityGroup {
        name: name.into(),
        rules,
        default: AclAction::Deny,
    };
    Arc::new(Group::new(&g, vec![0; g.rules.len()]))
}

struct Rig {
    pipe: Pipeline,
    counters: Vec<PortCounters>,
    d: Box<Decisions>,
}

/// VPC blue: bridge 0 (10.1.0.0/24, gw .1) with A's port 0, bridge 1
/// (10.2.0.0/24, gw .1) with B's port 1. VPC red: bridge 2 (10.2.0.0/24
/// too) with port 2 at 10.2.0.20 as well. A may send UDP and takes only
/// replies (an ingress group without rules: sessions only); B takes UDP
/// to port 53 and may send anything.
fn rig() -> Rig {
    let mut b = SwitchBuilder::new();
    let conf = |n: &str| BridgeConf {
        name: n.into(),
        mac_capacity: 256,
        mac_aging_secs: 300,
    };
    let (web, db, red) = (
        b.bridge(conf("web")),
        b.bridge(conf("db")),
        b.bridge(conf("red")),
    );
    b.attach(PortId(0), web)
        .attach(PortId(1), db)
        .attach(PortId(2), red)
        .routed(web, "blue", ROUTER)
        .routed(db, "blue", ROUTER)
        .routed(red, "red", OTHER_ROUTER);
    let mut r = RouterBuilder::new();
    let blue = r.vpc("blue", ROUTER);
    let redv = r.vpc("red", OTHER_ROUTER);
    let subnet = |bridge, gw: [u8; 4]| Subnet {
        bridge,
        gateway: Ipv4Addr::from(gw),
        prefix: 24,
    };
    r.subnet(blue, subnet(web, [10, 1, 0, 1])).unwrap();
    r.subnet(blue, subnet(db, [10, 2, 0, 1])).unwrap();
    r.subnet(redv, subnet(red, [10, 2, 0, 1])).unwrap();
    for (ip, port, bridge) in [(A, 0, web), (B, 1, db), (B, 2, red)] {
        assert!(r.endpoint(
            ip.into(),
            Endpoint {
                mac: mac(port as u8),
                port: PortId(port),
                bridge,
            }
        ));
    }
    let mut udp = Rule::any("udp", 1, AclAction::Allow);
    udp.proto = Proto::Udp;
    let mut dns = udp.clone();
    dns.dst_ports = acl::PortRange { lo: 53, hi: 53 };
    let ports = vec![
        PortPolicy {
            egress: Some(group("a-out", vec![udp])),
            ingress: Some(group("a-in", Vec::new())),
            ..Default::default()
        },
        PortPolicy {
            ingress: Some(group("b-in", vec![dns])),
            egress: Some(group("b-out", vec![Rule::any("all", 1, AclAction::Allow)])),
            ..Default::default()
        },
    ];
    let sessions = Arc::new(SessionTable::new(1024, Timeouts::default()));
    Rig {
        pipe: Pipeline::new(
            b.build(None).unwrap(),
            Security::new(ports, Vec::new(), sessions, 1),
            None,
        )
        .with_router(r.build(3)),
        counters: (0..MAX_PORTS).map(|_| PortCounters::default()).collect(),
        d: Box::default(),
    }
}

impl Rig {
    fn send(&mut self, port: u16, frame: Vec<u8>) -> (Fate, Edit) {
        self.pipe.decide(
            PortId(port),
            &[frame],
            Now::default(),
            &self.counters,
            &mut self.d,
        );
        (self.d.fate(0), self.d.edit(0))
    }

    fn drops(&self, port: usize, why: DropReason) -> u64 {
        self.counters[port].drops[why as usize].get()
    }
}

fn udp(src: MacAddr, dst: MacAddr, from: [u8; 4], to: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(from, to, 64)
        .udp(sport, dport)
        .write(&mut v, b"hello")
        .unwrap();
    v
}

fn tcp_syn(src: MacAddr, dst: MacAddr, from: [u8; 4], to: [u8; 4]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(from, to, 64)
        .tcp(4000, 80, 1, 1000)
        .syn()
        .write(&mut v, &[])
        .unwrap();
    v
}

fn arp_for(src: MacAddr, from: [u8; 4], asked: [u8; 4]) -> Vec<u8> {
    let mut v = vec![0xff; 6];
    v.extend_from_slice(&src.0);
    v.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    v.extend_from_slice(&src.0);
    v.extend_from_slice(&from);
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(&asked);
    v
}

#[test]
fn routed_between_subnets_with_the_reply_in_the_request_session() {
    let mut r = rig();
    // A asks for its gateway: answered although web has no other port.
    let (fate, edit) = r.send(0, arp_for(mac(0), A, [10, 1, 0, 1]));
    assert_eq!(fate, Fate::Local(PortId(0)));
    assert_eq!(edit, Edit::ArpReply { mac: ROUTER });

    // A -> B through the router: out of B's port, rewritten.
    let (fate, edit) = r.send(0, udp(mac(0), ROUTER, A, B, 5000, 53));
    assert_eq!(fate, Fate::Local(PortId(1)));
    assert_eq!(
        edit,
        Edit::Route {
            src: ROUTER,
            dst: mac(1)
        }
    );
    // B's reply, routed back: A's ingress group has no rule for it, only
    // the session A's request opened in the other subnet lets it through.
    let (fate, _) = r.send(1, udp(mac(1), ROUTER, B, A, 53, 5000));
    assert_eq!(fate, Fate::Local(PortId(0)), "the reply's session is found");
    // Without a session, the same from B is denied at A.
    let (fate, _) = r.send(1, udp(mac(1), ROUTER, B, A, 53, 6000));
    assert_eq!(fate, Fate::Drop(DropReason::AclDeny));
    // A's group allows only UDP: a TCP SYN routed to B is denied at A.
    let (fate, _) = r.send(0, tcp_syn(mac(0), ROUTER, A, B));
    assert_eq!(fate, Fate::Drop(DropReason::AclDeny));
    // B's group takes only port 53.
    let (fate, _) = r.send(0, udp(mac(0), ROUTER, A, B, 5001, 54));
    assert_eq!(fate, Fate::Drop(DropReason::AclDeny));
    assert_eq!(
        r.drops(0, DropReason::AclDeny) + r.drops(1, DropReason::AclDeny),
        3
    );
}

#[test]
fn a_vpc_with_the_same_addresses_is_never_reached() {
    let mut r = rig();
    // Red's container at 10.2.0.20 (B's address in blue) routes to A's
    // address: red has no subnet there and no way out, so it answers
    // "network unreachable", back to the sender alone.
    let (fate, edit) = r.send(2, udp(mac(2), OTHER_ROUTER, B, A, 1, 2));
    assert_eq!(fate, Fate::Local(PortId(2)));
    assert!(
        matches!(
            edit,
            Edit::IcmpError {
                mac: OTHER_ROUTER,
                kind: vswitch::router::IcmpError::NetUnreachable,
                ..
            }
        ),
        "{edit:?}"
    );
    assert_eq!(r.drops(2, DropReason::NoRoute), 1);
    // Through blue's router MAC from red: not red's router, an unknown
    // destination in red's bridge, with nowhere to flood.
    let (fate, _) = r.send(2, udp(mac(2), ROUTER, B, A, 1, 2));
    assert_eq!(fate, Fate::Drop(DropReason::NoOutput));
    // ARP in red for blue's gateway address is red's gateway: red's MAC.
    let (_, edit) = r.send(2, arp_for(mac(2), B, [10, 2, 0, 1]));
    assert_eq!(edit, Edit::ArpReply { mac: OTHER_ROUTER });
}
