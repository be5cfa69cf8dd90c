//! `vswitchctl trace`: what the pipeline does with one frame, stage by
//! stage, like Open vSwitch's `ofproto/trace` (a frame given by the
//! operator) and VPP's `trace add` (the next frames a port receives).
//!
//! [`Pipeline::trace`] asks each stage the questions its burst code asks,
//! through the same functions ([`crate::switch`]'s admission and MAC
//! lookup, [`crate::router`]'s decision, [`Security::explain`],
//! [`crate::overlay::Overlay::egress`], the meters' `peek`), in the
//! order [`Pipeline::decide`] runs them, and changes nothing: no MAC
//! learned, no session opened or advanced, no token taken, nothing
//! counted. So a trace may run on the control thread against the live
//! snapshot while workers switch, and a worker tracing a port's frames
//! explains each before deciding its burst (then records the fate the
//! burst really got, [`Outcome`], beside it).
//!
//! A trace is a value of fixed size (a flood's copies beyond
//! [`FLOOD_SHOWN`] are counted, not listed): a worker builds it without
//! allocating; naming ports, groups and tunnels is left to the daemon.

use crate::flow::{FlowKey, ParseError};
use crate::pipeline::{Decisions, Fate, Now, Pipeline};
use crate::router::{self, Edit, Ingress};
use crate::security::{Judgement, MeterPeek, RuleHit, Security};
use crate::stats::DropReason;
use crate::switch::{self, Action, Frame};
use crate::types::{BridgeId, MacAddr, PortId};

/// Flood copies a trace describes one by one.
pub const FLOOD_SHOWN: usize = 8;

/// The meters one frame can meet (its port's egress, its output's
/// ingress, its rule's class).
pub const METERS: usize = 3;

/// What the router of a VPC's bridge does with a frame it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Routed (MACs rewritten, TTL or hop limit decremented) out of a
    /// port.
    Out {
        /// The port (a NIC, or a tunnel to the endpoint's host).
        port: PortId,
        /// The rewrite.
        edit: Edit,
    },
    /// Answered on the spot (ARP, neighbour advertisement, echo reply)
    /// back out of the ingress port.
    Answered(Edit),
    /// Dropped; `icmp_error`: the sender is owed an ICMP error (sent
    /// back instead, within the VPC's rate).
    Dropped {
        /// Why.
        reason: DropReason,
        /// Whether an ICMP error answers it.
        icmp_error: bool,
    },
}

/// One copy of a flooded frame.
#[derive(Clone)]
pub struct FloodCopy {
    /// Where it goes.
    pub port: PortId,
    /// The port's ingress group's verdict, when it judged the copy.
    pub rule: Option<RuleHit>,
    /// Sent, or refused (by the group, or a tunnel's MTU or neighbour).
    pub verdict: Result<(), DropReason>,
}

/// A frame's fate, as a trace tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Dropped, counted on `port` (when known: a burst's fates do not
    /// say which port's counters took a drop, a trace does).
    Drop {
        /// Why.
        reason: DropReason,
        /// The port whose counters hold the drop.
        port: Option<PortId>,
    },
    /// Out of a local port.
    Local(PortId),
    /// Encapsulated out of a tunnel port.
    Tunnel(PortId),
    /// Flooded: copies to local ports and tunnels (0 and 0: every copy
    /// was refused).
    Flood {
        /// Local copies.
        locals: u16,
        /// Tunnel copies.
        tunnels: u16,
    },
}

impl Outcome {
    /// The outcome of a frame of a burst as [`Pipeline::decide`] left it
    /// in `d` (frame `i`).
    pub fn of(d: &Decisions, i: usize) -> Outcome {
        match d.fate(i) {
            Fate::Drop(reason) => Outcome::Drop { reason, port: None },
            Fate::Local(p) => Outcome::Local(p),
            Fate::Tunnel(p) => Outcome::Tunnel(p),
            Fate::Flood {
                locals, tunnels, ..
            } => Outcome::Flood { locals, tunnels },
        }
    }
}

/// One frame through the pipeline, stage by stage (a stage that did not
/// see the frame is None).
#[derive(Clone)]
pub struct Trace {
    /// The port it came in by.
    pub in_port: PortId,
    /// Its length in bytes.
    pub len: u32,
    /// Its headers as the flow parser reads them.
    pub key: Result<FlowKey, ParseError>,
    /// Its bridge.
    pub bridge: Option<BridgeId>,
    /// Whether the ingress port has port security.
    pub guarded: bool,
    /// Whether it may enter: header, port security, VLAN tags, a unicast
    /// source MAC.
    pub admitted: Option<Result<(), DropReason>>,
    /// The port its source MAC is learned on now (None: not learned;
    /// the frame would teach it).
    pub src_learned_on: Option<PortId>,
    /// The bridge's decision: out of a port, flood, or drop.
    pub bridge_action: Option<Action>,
    /// The router's, when the frame is its.
    pub routed: Option<Routed>,
    /// A unicast out of a tunnel: whether it may leave (MTU, next hop).
    pub tunnel: Option<(PortId, Result<(), DropReason>)>,
    /// The security groups' decision (None: no group or meter anywhere,
    /// or the frame did not get that far).
    pub security: Option<Judgement>,
    /// The meters it meets.
    pub meters: [Option<MeterPeek>; METERS],
    /// A flood's first copies.
    pub flood: [Option<FloodCopy>; FLOOD_SHOWN],
    /// A flood's copies beyond those: (sent, refused).
    pub flood_more: (u32, u32),
    /// Where it would go.
    pub outcome: Outcome,
}

impl Trace {
    fn new(in_port: PortId, d: &[u8]) -> Trace {
        Trace {
            in_port,
            len: d.len() as u32,
            key: FlowKey::parse(d),
            bridge: None,
            guarded: false,
            admitted: None,
            src_learned_on: None,
            bridge_action: None,
            routed: None,
            tunnel: None,
            security: None,
            meters: [None; METERS],
            flood: Default::default(),
            flood_more: (0, 0),
            outcome: Outcome::Drop {
                reason: DropReason::NoOutput,
                port: Some(in_port),
            },
        }
    }

    fn dropped(mut self, reason: DropReason, port: PortId) -> Trace {
        self.outcome = Outcome::Drop {
            reason,
            port: Some(port),
        };
        self
    }
}

impl Pipeline {
    /// What [`Pipeline::decide`] would do with frame `f` received on
    /// `in_port` (a NIC or a tunnel port) at `now`, stage by stage,
    /// changing nothing (see the module documentation).
    pub fn trace<F: Frame>(&self, in_port: PortId, f: &F, now: Now) -> Trace {
        let d = f.data();
        let mut t = Trace::new(in_port, d);
        let sw = &self.switch;
        let Some(b) = sw.bridge_of(in_port) else {
            return t.dropped(DropReason::NoBridge, in_port);
        };
        t.bridge = Some(b);
        let guard = sw.guard_of(in_port);
        t.guarded = guard.is_some();
        let admitted = switch::admit(guard, d).and_then(|()| {
            if MacAddr::from_slice(&d[6..12]).is_group() {
                Err(DropReason::Malformed)
            } else {
                Ok(())
            }
        });
        t.admitted = Some(admitted);
        if let Err(r) = admitted {
            return t.dropped(r, in_port);
        }
        let macs = sw.macs_of(in_port).expect("a bridge has a MAC table");
        t.src_learned_on = macs.lookup(MacAddr::from_slice(&d[6..12]), now.secs);
        let from_tunnel = sw.is_tunnel(in_port);
        let dst = MacAddr::from_slice(&d[0..6]);
        let flood = sw.flood_action(in_port, b);
        let mut a = sw.destination(macs, in_port, from_tunnel, dst, now.secs, flood);
        t.bridge_action = Some(a);
        if let Some(vpc) = self.router.vpc_of(b) {
            let at = Ingress {
                bridge: b,
                in_port,
                from_tunnel,
            };
            let is_tunnel = |p| sw.is_tunnel(p);
            match router::decide(vpc, at, &is_tunnel, a, &mut None, d) {
                None => {}
                Some(Ok((Action::Output(port), edit))) => {
                    t.routed = Some(Routed::Out { port, edit });
                    a = Action::Output(port);
                }
                Some(Ok((action, edit))) => {
                    t.routed = Some(Routed::Answered(edit));
                    a = action;
                }
                Some(Err(reason)) => {
                    let icmp_error = !from_tunnel
                        && f.wire_packets() == 1
                        && router::icmp_error_for(vpc, b, reason, d).is_some();
                    t.routed = Some(Routed::Dropped { reason, icmp_error });
                    a = if icmp_error {
                        Action::Reply
                    } else {
                        Action::Drop(reason)
                    };
                }
            }
            if a == Action::Flood && sw.flood_ports(in_port).is_empty() {
                a = Action::Drop(DropReason::NoOutput);
            }
        }
        if let Action::Output(p) = a {
            if sw.is_tunnel(p) {
                let ok = self.overlay.as_ref().map_or(Ok(()), |o| o.egress(p, f));
                t.tunnel = Some((p, ok));
                if let Err(r) = ok {
                    return t.dropped(r, p);
                }
            }
        }
        let security = &self.security;
        let zone = sw.zone_of(in_port);
        let mut class = 0;
        if security.is_active() {
            t.security = security.explain(in_port, zone, f, a, now.secs);
            if let Some(j) = &t.security {
                if let Err((r, p)) = j.verdict {
                    return t.dropped(r, p);
                }
                class = j.class;
            }
            for (slot, m) in t
                .meters
                .iter_mut()
                .zip(security.peek_meters(in_port, f, a, class, now.ns))
            {
                *slot = Some(m);
            }
            if let Some(m) = t.meters.iter().flatten().find(|m| m.policed.kept == 0) {
                let charged = match m.of {
                    crate::security::MeterOf::Ingress(q) => q,
                    _ => in_port,
                };
                return t.dropped(DropReason::PolicerDrop, charged);
            }
        }
        t.outcome = match a {
            Action::Drop(r) => Outcome::Drop {
                reason: r,
                port: Some(in_port),
            },
            Action::Output(p) if sw.is_tunnel(p) => Outcome::Tunnel(p),
            Action::Output(p) => Outcome::Local(p),
            Action::Reply => Outcome::Local(in_port),
            Action::Flood => self.trace_flood(&mut t, security, zone, f, now),
        };
        t
    }

    /// A flood's copies: each admitted by its port's ingress group, each
    /// tunnel copy able to leave (as [`Pipeline::decide`]'s flood).
    fn trace_flood<F: Frame>(
        &self,
        t: &mut Trace,
        security: &Security,
        zone: u16,
        f: &F,
        now: Now,
    ) -> Outcome {
        let (mut locals, mut tunnels) = (0u16, 0u16);
        for (n, port) in self.switch.flood_ports(t.in_port).iter().enumerate() {
            let rule = if security.is_active() {
                security.explain_copy(port, zone, f, now.secs)
            } else {
                None
            };
            let verdict = match &rule {
                Some(h) if !h.allows() => Err(DropReason::AclDeny),
                _ if self.switch.is_tunnel(port) => {
                    self.overlay.as_ref().map_or(Ok(()), |o| o.egress(port, f))
                }
                _ => Ok(()),
            };
            match (verdict, self.switch.is_tunnel(port)) {
                (Ok(()), false) => locals += 1,
                (Ok(()), true) => tunnels += 1,
                (Err(_), _) => {}
            }
            match t.flood.get_mut(n) {
                Some(slot) => {
                    *slot = Some(FloodCopy {
                        port,
                        rule,
                        verdict,
                    })
                }
                None if verdict.is_ok() => t.flood_more.0 += 1,
                None => t.flood_more.1 += 1,
            }
        }
        Outcome::Flood { locals, tunnels }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use acl::policer::{ColorAction, MeterConf, Policy, SharedMeter, Unit};
    use acl::{Action as AclAction, PortRange, Proto, Rule};
    use etherparse::PacketBuilder;

    use super::*;
    use crate::security::{Judged, PortPolicy};
    use crate::test_support::{compiled, mac, udp, Rig};

    fn rule(name: &str, prio: u32, action: AclAction, proto: Proto, port: Option<u16>) -> Rule {
        let mut r = Rule::any(name, prio, action);
        r.proto = proto;
        if let Some(p) = port {
            r.dst_ports = PortRange::one(p);
        }
        r
    }

    /// Port 0's egress group allows DNS and TCP but SSH; port 1 admits
    /// TCP 80 only and meters what it is sent (3 frames committed, 2
    /// excess remarked to DSCP 10, then red drops); port 3 is open.
    fn rig() -> Rig {
        let out = compiled(
            "out",
            vec![
                rule("dns", 10, AclAction::Allow, Proto::Udp, Some(53)),
                rule("no-ssh", 20, AclAction::Deny, Proto::Tcp, Some(22)),
                rule("tcp", 5, AclAction::Allow, Proto::Tcp, None),
            ],
        );
        let web = compiled(
            "web",
            vec![rule("http", 1, AclAction::Allow, Proto::Tcp, Some(80))],
        );
        let meter = Policy {
            meter: MeterConf::SrTcm {
                cir: 1,
                cbs: 3,
                ebs: 2,
            },
            unit: Unit::Packets,
            actions: [
                ColorAction::Pass,
                ColorAction::Remark(10),
                ColorAction::Drop,
            ],
        };
        let ports = vec![
            PortPolicy {
                egress: Some(out),
                ..PortPolicy::default()
            },
            PortPolicy {
                ingress: Some(web),
                ingress_meter: Some(Arc::new(SharedMeter::new(meter, 0))),
                ..PortPolicy::default()
            },
        ];
        let mut r = Rig::new(ports, Vec::new());
        for p in [0u8, 1, 2, 3, 4, 5] {
            r.learn(u16::from(p), 10 + p);
        }
        r
    }

    /// A TCP frame from MAC/IP `src` to MAC/IP `dst`, port 40000 ->
    /// `dport`, SYN or ACK, `len` bytes.
    fn tcp(src: u8, dst: u8, dport: u16, syn: bool, len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        let b = PacketBuilder::ethernet2(mac(src), mac(dst))
            .ipv4([10, 0, 0, src], [10, 0, 0, dst], 64)
            .tcp(40000, dport, 1, 1000);
        let b = if syn { b.syn() } else { b.ack(1) };
        b.write(&mut v, &vec![0; len.saturating_sub(54)]).unwrap();
        v
    }

    fn hits(r: &Rig) -> Vec<Vec<u64>> {
        let s = &r.pipe.security;
        vec![
            s.port(PortId(0)).egress.as_ref().unwrap().hits(),
            s.port(PortId(1)).ingress.as_ref().unwrap().hits(),
        ]
    }

    #[test]
    fn a_trace_names_the_deciding_rules_and_changes_nothing() {
        let mut r = rig();
        let sessions = r.pipe.security.sessions().owned_by(0);
        let before = hits(&r);
        let syn = tcp(10, 11, 80, true, 60);
        let t = r.pipe.trace(PortId(0), &syn, Now::default());
        assert_eq!(t.admitted, Some(Ok(())));
        assert_eq!(t.src_learned_on, Some(PortId(0)));
        assert_eq!(t.bridge_action, Some(Action::Output(PortId(1))));
        let j = t.security.as_ref().unwrap();
        assert_eq!(j.judged, Judged::Rules);
        let (e, i) = (j.egress.as_ref().unwrap(), j.ingress.as_ref().unwrap());
        assert_eq!((e.group.name(), e.verdict.rule), ("out", Some(2)));
        assert_eq!((i.group.name(), i.verdict.rule), ("web", Some(0)));
        assert!(j.opens && e.allows() && i.allows());
        let m = t.meters[0].unwrap();
        assert_eq!(m.of, crate::security::MeterOf::Ingress(PortId(1)));
        assert_eq!(m.color, acl::policer::Color::Green);
        assert_eq!(t.outcome, Outcome::Local(PortId(1)));
        // Nothing learned, opened, counted or charged.
        assert_eq!(r.pipe.security.sessions().owned_by(0), sessions);
        assert_eq!(hits(&r), before);
        assert_eq!(r.counters[0].rx_packets.get(), 1, "the learning frame only");
        // SSH: the egress group's higher-priority deny decides.
        let t = r
            .pipe
            .trace(PortId(0), &tcp(10, 11, 22, true, 60), Now::default());
        let e = t.security.as_ref().unwrap().egress.clone().unwrap();
        assert_eq!((e.verdict.rule, e.allows()), (Some(1), false));
        assert_eq!(
            t.outcome,
            Outcome::Drop {
                reason: DropReason::AclDeny,
                port: Some(PortId(0))
            }
        );
        // Once the SYN went through, the connection's next frames ride
        // its session: no rule is asked.
        r.send(0, &[syn]);
        // The rules that decided it count it (rules, then the default;
        // the stations' first broadcasts counted before: port 0's by
        // "dns", the copies port 1's group refused by its default).
        let delta = |r: &Rig| -> Vec<Vec<u64>> {
            let now = hits(r);
            let sub = |a: &[u64], b: &[u64]| a.iter().zip(b).map(|(x, y)| x - y).collect();
            vec![sub(&now[0], &before[0]), sub(&now[1], &before[1])]
        };
        assert_eq!(before, [vec![1, 0, 0, 0], vec![0, 5]]);
        assert_eq!(delta(&r), [vec![0, 0, 1, 0], vec![1, 0]]);
        r.send(0, &[tcp(10, 11, 22, true, 60), tcp(10, 11, 22, true, 60)]);
        r.send(0, &[tcp(10, 13, 22, true, 60), udp(10, mac(11), 60)]);
        assert_eq!(delta(&r), [vec![1, 3, 1, 0], vec![1, 1]]);
        let t = r
            .pipe
            .trace(PortId(0), &tcp(10, 11, 80, false, 60), Now::default());
        let j = t.security.as_ref().unwrap();
        assert_eq!(j.judged, Judged::Session { orig: true });
        assert!(j.egress.is_none() && j.ingress.is_none());
        assert_eq!(t.outcome, Outcome::Local(PortId(1)));
        // Its reply rides it the other way.
        let mut reply = Vec::new();
        PacketBuilder::ethernet2(mac(11), mac(10))
            .ipv4([10, 0, 0, 11], [10, 0, 0, 10], 64)
            .tcp(80, 40000, 1, 1000)
            .syn()
            .ack(2)
            .write(&mut reply, &[])
            .unwrap();
        let t = r.pipe.trace(PortId(1), &reply, Now::default());
        assert_eq!(
            t.security.as_ref().unwrap().judged,
            Judged::Session { orig: false }
        );
        assert_eq!(t.outcome, Outcome::Local(PortId(0)));
        // Between ports without groups, nothing is judged.
        let t = r
            .pipe
            .trace(PortId(3), &udp(13, mac(12), 60), Now::default());
        assert_eq!(t.security.as_ref().unwrap().judged, Judged::NoGroup);
    }

    /// The trace's outcome is the fate [`Pipeline::decide`] gives the
    /// same frame right after, for frames of every kind: unicast and
    /// floods, local and tunnel ports (one unresolved, MTU limits),
    /// allowed, denied, session replies, metered to red, malformed.
    #[test]
    fn traces_foretell_what_decide_does() {
        let mut r = rig();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        let (mut seen, mut reasons) = (HashSet::new(), HashSet::new());
        let mut previous: Vec<Vec<u8>> = Vec::new();
        for round in 0..3000 {
            let from = [0u16, 1, 3, 2, 5][next(5) as usize];
            let src = 10 + from as u8;
            let dst = [10, 11, 12, 13, 14, 15, 99][next(7) as usize];
            let len = [60, 200, 1464, 1465][next(4) as usize];
            let mut f = match next(6) {
                0 => udp(src, mac(dst), len),
                1 => udp(src, [0xff; 6], 60),
                2 | 3 => tcp(src, dst, [80, 22, 443][next(3) as usize], next(2) == 0, len),
                4 => match previous.get(next(previous.len().max(1) as u64) as usize) {
                    // A reply to an earlier frame: MACs, IPs, ports swapped.
                    Some(p) if p.len() >= 38 => {
                        let mut v = p.clone();
                        v.copy_within(6..12, 0);
                        v[6..12].copy_from_slice(&p[0..6]);
                        v[26..30].copy_from_slice(&p[30..34]);
                        v[30..34].copy_from_slice(&p[26..30]);
                        v[34..36].copy_from_slice(&p[36..38]);
                        v[36..38].copy_from_slice(&p[34..36]);
                        v
                    }
                    _ => udp(src, mac(dst), 60),
                },
                _ => {
                    let mut v = udp(src, mac(dst), 60);
                    v[14] = 0x41; // IHL 1: malformed
                    v
                }
            };
            if next(50) == 0 {
                f[6] = 0x01; // a group source MAC
            }
            let in_port = PortId(u16::from_be_bytes([0, f[11].wrapping_sub(10)]));
            let in_port = if [0, 1, 2, 3, 5].contains(&in_port.0) {
                in_port
            } else {
                PortId(from)
            };
            let hits = hits(&r);
            let t = r.pipe.trace(in_port, &f, Now::default());
            assert_eq!(hits, super::tests::hits(&r), "a trace counts no rule hit");
            let drops_before: Vec<u64> = (0..7)
                .map(|p| r.counters[p].drops.iter().map(|c| c.get()).sum())
                .collect();
            r.pipe
                .decide(in_port, &[&f[..]], Now::default(), &r.counters, &mut r.d);
            let actual = Outcome::of(&r.d, 0);
            match (t.outcome, actual) {
                (Outcome::Drop { reason, port }, Outcome::Drop { reason: why, .. }) => {
                    assert_eq!(reason, why, "round {round}: {f:02x?}");
                    let port = port.expect("a trace knows").index();
                    let after: u64 = r.counters[port].drops.iter().map(|c| c.get()).sum();
                    assert!(after > drops_before[port], "counted on port {port}");
                }
                (a, b) => assert_eq!(a, b, "round {round}: {f:02x?}"),
            }
            seen.insert(std::mem::discriminant(&t.outcome));
            match t.outcome {
                Outcome::Drop { reason, .. } => _ = reasons.insert(reason),
                _ => previous.push(f),
            }
        }
        assert_eq!(
            seen.len(),
            4,
            "drops, locals, tunnels and floods all traced"
        );
        for r in [
            DropReason::AclDeny,
            DropReason::NoSession,
            DropReason::PolicerDrop,
            DropReason::MtuExceeded,
            DropReason::NoNeighbour,
            DropReason::Malformed,
            DropReason::SplitHorizon,
            DropReason::SamePort,
        ] {
            assert!(reasons.contains(&r), "{r:?} traced: {reasons:?}");
        }
    }
}
