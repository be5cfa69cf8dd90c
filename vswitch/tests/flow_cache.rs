//! The flow cache changes no decision: random traffic and random rule,
//! MAC, guard, meter and port changes through two identical pipelines,
//! one deciding with a flow cache and one without, give the same fate,
//! remark and cut for every frame, and the same counters, sessions and
//! MAC tables. And invalidation under traffic: a deny rule added to a
//! live cached flow stops it at the next burst, a MAC move redirects at
//! once, a removed port gets nothing more.

use std::net::Ipv4Addr;
use std::sync::Arc;

use acl::policer::{ColorAction, MeterConf, Policy, SharedMeter, Unit};
use acl::session::{SessionTable, Timeouts};
use acl::{Action as AclAction, PortRange, Proto, Rule, SecurityGroup};
use etherparse::PacketBuilder;
use vswitch::overlay::Encap;
use vswitch::security::{Group, PortPolicy, Security};
use vswitch::{
    BridgeConf, Decisions, DropReason, Fate, GuardConf, MacAddr, Now, Overlay, Pipeline,
    PortCounters, PortGuard, PortId, SwitchBuilder, MAX_PORTS,
};
use vxlan::encap::{Template, Tunnel};
use vxlan::tunnels::TunnelMap;

/// Deterministic xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// NIC ports 0-4 and tunnel port 5 in one bridge; uplink 6.
const NICS: u16 = 5;
const TUNNEL: u16 = 5;
const UPLINK: u16 = 6;
const HOSTS: u8 = 10;
const VTEP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);

fn mac(h: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, h]
}

/// What both worlds are configured with; changed at random.
#[derive(Clone)]
struct Spec {
    /// NIC ports attached (a removed one is not).
    attached: [bool; NICS as usize],
    /// Port 0's guard (its host 0's MAC and address) is on.
    guarded: bool,
    /// Per NIC port: egress and ingress rules (None: no group).
    egress: Vec<Option<Vec<Rule>>>,
    ingress: Vec<Option<Vec<Rule>>>,
    /// Port 1 has an ingress meter.
    metered: bool,
    generation: u32,
}

fn random_rules(rng: &mut Rng) -> Option<Vec<Rule>> {
    if rng.chance(40) {
        return None;
    }
    let mut rules = Vec::new();
    for i in 0..rng.below(4) {
        let mut r = Rule::any(
            &format!("r{i}"),
            (10 - i) as u32,
            if rng.chance(80) {
                AclAction::Allow
            } else {
                AclAction::Deny
            },
        );
        r.proto = [Proto::Any, Proto::Tcp, Proto::Udp][rng.below(3) as usize];
        let lo = [53u16, 80, 443, 1000][rng.below(4) as usize];
        r.dst_ports = PortRange {
            lo,
            hi: lo + rng.below(500) as u16,
        };
        rules.push(r);
    }
    Some(rules)
}

fn group(name: &str, rules: &[Rule]) -> Arc<Group> {
    let g = SecurityGroup {
        name: name.into(),
        rules: rules.to_vec(),
        default: AclAction::Deny,
    };
    // Every other rule is in QoS class 1.
    Arc::new(Group::new(
        &g,
        (0..rules.len()).map(|i| (i % 2) as u16).collect(),
    ))
}

/// A tight packet meter: 20 frames of burst, 1000 per second; yellow
/// is remarked to DSCP 10.
fn tight_meter() -> Arc<SharedMeter> {
    Arc::new(SharedMeter::new(
        Policy {
            meter: MeterConf::SrTcm {
                cir: 1000,
                cbs: 20,
                ebs: 20,
            },
            unit: Unit::Packets,
            actions: [
                ColorAction::Pass,
                ColorAction::Remark(10),
                ColorAction::Drop,
            ],
        },
        0,
    ))
}

/// One pipeline with its own tables.
struct World {
    pipe: Pipeline,
    sessions: Arc<SessionTable>,
    port_meter: Arc<SharedMeter>,
    class_meter: Arc<SharedMeter>,
    counters: Vec<PortCounters>,
    d: Box<Decisions>,
}

impl World {
    fn new(spec: &Spec, cache: bool) -> World {
        let sessions = Arc::new(SessionTable::new(256, Timeouts::default()));
        let (port_meter, class_meter) = (tight_meter(), tight_meter());
        let pipe = build(spec, None, &sessions, &port_meter, &class_meter);
        World {
            pipe,
            sessions,
            port_meter,
            class_meter,
            counters: (0..MAX_PORTS).map(|_| PortCounters::default()).collect(),
            d: Box::new(if cache {
                Decisions::with_flow_cache()
            } else {
                Decisions::default()
            }),
        }
    }

    fn reconfigure(&mut self, spec: &Spec) {
        self.pipe = build(
            spec,
            Some(&self.pipe),
            &self.sessions,
            &self.port_meter,
            &self.class_meter,
        );
    }

    /// Decides a burst; each frame's fate with its flood sets, remark
    /// and cut.
    fn send(&mut self, port: u16, frames: &[Vec<u8>], now: Now) -> Vec<String> {
        self.pipe
            .decide(PortId(port), frames, now, &self.counters, &mut self.d);
        (0..frames.len())
            .map(|i| {
                let f = self.d.fate(i);
                let extra = match f {
                    Fate::Flood { .. } => format!(
                        " locals {:?} tunnels {:?}",
                        self.d.flood_locals(i),
                        self.d.flood_tunnels(i)
                    ),
                    _ => String::new(),
                };
                let edits = if self.d.has_edits() {
                    format!(" remark {:?} keep {}", self.d.remark(i), self.d.keep(i))
                } else {
                    String::new()
                };
                format!("{f:?}{extra}{edits}")
            })
            .collect()
    }

    /// Everything the pipeline's tables and counters hold, comparably.
    fn state(&self, now: u32) -> String {
        let mut out = String::new();
        for (p, c) in self
            .counters
            .iter()
            .enumerate()
            .take(usize::from(UPLINK) + 1)
        {
            let drops: Vec<u64> = c.drops.iter().map(|d| d.get()).collect();
            out += &format!(
                "port {p}: rx {} {} learn_full {} drops {drops:?}\n",
                c.rx_packets.get(),
                c.rx_bytes.get(),
                c.learn_full.get()
            );
        }
        let mut sessions: Vec<String> = self
            .sessions
            .entries(now, 10_000)
            .iter()
            .map(|s| format!("{s:?}"))
            .collect();
        sessions.sort();
        out += &sessions.join("\n");
        let mut macs: Vec<String> = self.pipe.switch.bridges()[0]
            .macs
            .entries(now)
            .iter()
            .map(|e| format!("{e:?}"))
            .collect();
        macs.sort();
        out += &macs.join("\n");
        out
    }
}

fn build(
    spec: &Spec,
    prev: Option<&Pipeline>,
    sessions: &Arc<SessionTable>,
    port_meter: &Arc<SharedMeter>,
    class_meter: &Arc<SharedMeter>,
) -> Pipeline {
    let mut b = SwitchBuilder::new();
    let br = b.bridge(BridgeConf {
        name: "vpc".into(),
        mac_capacity: 64,
        mac_aging_secs: 5,
    });
    for p in 0..NICS {
        if spec.attached[usize::from(p)] {
            b.attach(PortId(p), br);
        }
    }
    b.attach_tunnel(PortId(TUNNEL), br, true);
    if spec.guarded {
        b.guard(
            PortId(0),
            PortGuard::new(&GuardConf {
                mac: MacAddr(mac(0)),
                addresses: vec![Ipv4Addr::new(10, 0, 0, 0).into()],
                allowed_addresses: Vec::new(),
                allowed_macs: Vec::new(),
                allow_vlan: false,
                allowed_ethertypes: Vec::new(),
            }),
        );
    }
    let ports = (0..usize::from(NICS))
        .map(|p| PortPolicy {
            egress: spec.egress[p].as_deref().map(|r| group("e", r)),
            ingress: spec.ingress[p].as_deref().map(|r| group("i", r)),
            ingress_meter: (p == 1 && spec.metered).then(|| port_meter.clone()),
            egress_meter: None,
        })
        .collect();
    let mut map = TunnelMap::new();
    map.add_vni(100, 0);
    map.add_remote(100, Ipv4Addr::new(10, 9, 0, 2), TUNNEL);
    let mut encap = vec![None; MAX_PORTS].into_boxed_slice();
    encap[usize::from(TUNNEL)] = Some(Encap {
        template: Template::new(&Tunnel {
            src_mac: mac(0xaa),
            dst_mac: mac(0xbb),
            src_ip: VTEP,
            dst_ip: Ipv4Addr::new(10, 9, 0, 2),
            dst_port: vxlan::VXLAN_PORT,
            vni: 100,
            ttl: 64,
            df: true,
        }),
        resolved: true,
    });
    Pipeline::new(
        b.build(prev.map(|p| &p.switch)).expect("topology"),
        Security::new(
            ports,
            vec![class_meter.clone()],
            sessions.clone(),
            spec.generation,
        ),
        Some(Overlay {
            uplink: PortId(UPLINK),
            ip: VTEP,
            udp_port: vxlan::VXLAN_PORT,
            max_inner: 1464,
            map,
            learn: vec![true],
            encap,
        }),
    )
}

/// A flow of the traffic: from host `src` (MAC and address) to `dst`.
#[derive(Clone, Copy, Debug)]
struct Flow {
    src: u8,
    dst: u8,
    broadcast: bool,
    kind: u8,
    sport: u16,
    dport: u16,
}

fn frame(f: &Flow, flags: u8, len: usize) -> Vec<u8> {
    let dst_mac = if f.broadcast { [0xff; 6] } else { mac(f.dst) };
    let eth = PacketBuilder::ethernet2(mac(f.src), dst_mac);
    let (s4, d4) = ([10, 0, 0, f.src], [10, 0, 0, f.dst]);
    let mut s6 = [0u8; 16];
    s6[0] = 0xfd;
    let mut d6 = s6;
    s6[15] = f.src;
    d6[15] = f.dst;
    let mut v = Vec::new();
    let payload = vec![0u8; len];
    match f.kind {
        0 | 1 => {
            let mut b = if f.kind == 0 {
                eth.ipv4(s4, d4, 64).tcp(f.sport, f.dport, 1, 1000)
            } else {
                eth.ipv6(s6, d6, 64).tcp(f.sport, f.dport, 1, 1000)
            };
            if flags & 0x02 != 0 {
                b = b.syn();
            }
            if flags & 0x10 != 0 {
                b = b.ack(1);
            }
            if flags & 0x01 != 0 {
                b = b.fin();
            }
            if flags & 0x04 != 0 {
                b = b.rst();
            }
            b.write(&mut v, &payload).unwrap();
        }
        2 => eth
            .ipv4(s4, d4, 64)
            .udp(f.sport, f.dport)
            .write(&mut v, &payload)
            .unwrap(),
        3 => eth
            .ipv6(s6, d6, 64)
            .udp(f.sport, f.dport)
            .write(&mut v, &payload)
            .unwrap(),
        4 => eth
            .ipv4(s4, d4, 64)
            .icmpv4_echo_request(1, f.sport)
            .write(&mut v, &payload)
            .unwrap(),
        _ => {
            // ARP request for dst from src.
            v = vec![0; 42];
            v[0..6].copy_from_slice(&[0xff; 6]);
            v[6..12].copy_from_slice(&mac(f.src));
            v[12..14].copy_from_slice(&[0x08, 0x06]);
            v[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            v[22..28].copy_from_slice(&mac(f.src));
            v[28..32].copy_from_slice(&s4);
            v[38..42].copy_from_slice(&d4);
        }
    }
    v
}

const FLAGS: [u8; 6] = [0x02, 0x12, 0x10, 0x10, 0x11, 0x04];

#[test]
fn the_cache_changes_no_decision_counter_or_session() {
    let (mut hits, mut misses) = (0, 0);
    for seed in 1..=6u64 {
        let s = differential(seed, 3000);
        assert!(s.hits > 0 && s.inserts > 0, "seed {seed}: {s:?}");
        hits += s.hits;
        misses += s.misses;
    }
    // Misses count every frame of a burst one frame missed in.
    assert!(
        hits * 10 > misses,
        "the cache must answer often: {hits} hits, {misses} misses"
    );
}

/// Runs `bursts` random bursts through both worlds; the cache's counters.
fn differential(seed: u64, bursts: usize) -> vswitch::CacheStats {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut spec = Spec {
        attached: [true; NICS as usize],
        guarded: true,
        egress: vec![None; NICS as usize],
        ingress: vec![None; NICS as usize],
        metered: false,
        generation: 1,
    };
    let mut cached = World::new(&spec, true);
    let mut plain = World::new(&spec, false);
    // Host h lives behind port h % 5 (host 0 behind the guarded port 0;
    // hosts 5 and 6 behind the tunnel).
    let mut home: Vec<u16> = (0..HOSTS).map(|h| u16::from(h) % 5).collect();
    home[5] = TUNNEL;
    home[6] = TUNNEL;
    let flows: Vec<Flow> = (0..40)
        .map(|_| {
            let src = rng.below(u64::from(HOSTS)) as u8;
            Flow {
                src,
                dst: (src + 1 + rng.below(u64::from(HOSTS) - 1) as u8) % HOSTS,
                broadcast: rng.chance(3),
                kind: [0, 0, 1, 2, 2, 2, 3, 4, 5][rng.below(9) as usize],
                sport: 1000 + rng.below(4) as u16,
                dport: [53, 80, 443, 1000, 1300][rng.below(5) as usize],
            }
        })
        .collect();
    let (mut secs, mut ns) = (1u32, 1_000_000_000u64);
    let mut last: Vec<Option<Vec<Vec<u8>>>> = vec![None; usize::from(UPLINK)];
    for b in 0..bursts {
        // Time: mostly within the second, sometimes into the next.
        ns += rng.below(2_000_000);
        if rng.below(200) == 0 {
            ns += 1_000_000_000;
        }
        secs = secs.max((ns / 1_000_000_000) as u32);
        let now = Now { secs, ns };
        // A change now and then, to both worlds.
        if rng.below(100) == 0 {
            match rng.below(6) {
                0 => {
                    let p = rng.below(u64::from(NICS)) as usize;
                    spec.egress[p] = random_rules(&mut rng);
                    spec.ingress[p] = random_rules(&mut rng);
                    spec.generation += 1;
                }
                1 => {
                    let p = 1 + rng.below(u64::from(NICS) - 1) as usize;
                    spec.attached[p] = !spec.attached[p];
                }
                2 => spec.guarded = !spec.guarded,
                3 => spec.metered = !spec.metered,
                4 => {
                    // A host moves to another port (its traffic will say).
                    let h = 1 + rng.below(u64::from(HOSTS) - 1) as usize;
                    home[h] = rng.below(u64::from(NICS) + 1) as u16;
                }
                _ => {
                    assert_eq!(cached.sessions.flush(), plain.sessions.flush());
                }
            }
            cached.reconfigure(&spec);
            plain.reconfigure(&spec);
        }
        // A burst from one port: its hosts' flows, the same burst again
        // half the time (so that whole bursts hit the cache).
        let port = if rng.chance(10) {
            TUNNEL
        } else {
            rng.below(u64::from(NICS)) as u16
        };
        let frames = match &last[usize::from(port)] {
            Some(f) if rng.chance(60) => f.clone(),
            _ => {
                let n = 1 + rng.below(32) as usize;
                let mut v = Vec::new();
                // Half the bursts are TCP and UDP unicast only: the
                // kinds the cache holds.
                let clean = rng.chance(50);
                let mine: Vec<&Flow> = flows
                    .iter()
                    .filter(|f| home[usize::from(f.src)] == port)
                    .filter(|f| !clean || (f.kind < 4 && !f.broadcast))
                    .collect();
                for _ in 0..n {
                    let f = if mine.is_empty() || (!clean && rng.chance(3)) {
                        &flows[rng.below(flows.len() as u64) as usize]
                    } else {
                        mine[rng.below(mine.len() as u64) as usize]
                    };
                    let flags = FLAGS[rng.below(FLAGS.len() as u64) as usize];
                    let len = if rng.chance(5) {
                        1450
                    } else {
                        rng.below(100) as usize
                    };
                    v.push(frame(f, flags, len));
                }
                last[usize::from(port)] = Some(v.clone());
                v
            }
        };
        let a = cached.send(port, &frames, now);
        let p = plain.send(port, &frames, now);
        assert_eq!(a, p, "seed {seed}, burst {b} from port {port}");
        if b % 100 == 0 {
            assert_eq!(
                cached.state(secs),
                plain.state(secs),
                "seed {seed}, burst {b}"
            );
        }
    }
    assert_eq!(
        cached.state(secs),
        plain.state(secs),
        "seed {seed}, at the end"
    );
    assert!(plain.d.flow_cache_stats().is_none());
    cached.d.flow_cache_stats().expect("a cache")
}

/// A two-port world for the invalidation tests: hosts 1 and 2 behind
/// ports 1 and 2, UDP from 1 to 2.
struct Pair {
    spec: Spec,
    w: World,
    now: Now,
}

impl Pair {
    /// Port 1 sends through a group that allows everything (the cache
    /// serves pipelines with groups).
    fn new() -> Pair {
        let mut all = Rule::any("all", 1, AclAction::Allow);
        all.proto = Proto::Udp;
        let mut egress = vec![None; NICS as usize];
        egress[1] = Some(vec![all]);
        let spec = Spec {
            attached: [true; NICS as usize],
            guarded: false,
            egress,
            ingress: vec![None; NICS as usize],
            metered: false,
            generation: 1,
        };
        let mut p = Pair {
            w: World::new(&spec, true),
            spec,
            now: Now {
                secs: 1,
                ns: 1_000_000_000,
            },
        };
        // Both hosts speak once: learned.
        p.send(2, &udp(2, 1));
        p
    }

    fn send(&mut self, port: u16, f: &[u8]) -> Vec<String> {
        self.now.ns += 1000;
        self.w.send(port, &[f.to_vec(), f.to_vec()], self.now)
    }

    fn hits(&self) -> u64 {
        self.w.d.flow_cache_stats().unwrap().hits
    }
}

fn udp(src: u8, dst: u8) -> Vec<u8> {
    frame(
        &Flow {
            src,
            dst,
            broadcast: false,
            kind: 2,
            sport: 1000,
            dport: 53,
        },
        0,
        10,
    )
}

/// Both frames of a burst meeting `fate`, unedited.
fn both(fate: Fate) -> Vec<String> {
    vec![format!("{fate:?} remark None keep {}", u32::MAX); 2]
}

/// Both frames of a burst out of port `p`, unedited.
fn local(p: u16) -> Vec<String> {
    both(Fate::Local(PortId(p)))
}

impl Pair {
    /// Sends `f` from `port` until it is answered from the cache (out of
    /// port `to`); the cache's hits then.
    fn cache(&mut self, port: u16, f: &[u8], to: u16) -> u64 {
        for _ in 0..3 {
            assert_eq!(self.send(port, f), local(to));
        }
        let hits = self.hits();
        assert!(hits >= 2, "answered from the cache");
        hits
    }
}

#[test]
fn a_deny_rule_on_a_cached_flow_stops_it_at_the_next_burst() {
    let mut t = Pair::new();
    // Allowed by port 1's egress group: a session, then cached.
    let allow = |lo| {
        let mut r = Rule::any("dns", 1, AclAction::Allow);
        r.proto = Proto::Udp;
        r.dst_ports = PortRange { lo, hi: lo };
        vec![r]
    };
    t.spec.egress[1] = Some(allow(53));
    t.w.reconfigure(&t.spec);
    let f = udp(1, 2);
    let hits = t.cache(1, &f, 2);
    // The group now allows port 54 only: the session and the cache
    // entry are judged again, the flow stops at once.
    t.spec.egress[1] = Some(allow(54));
    t.spec.generation += 1;
    t.w.reconfigure(&t.spec);
    let denied = both(Fate::Drop(DropReason::AclDeny));
    assert_eq!(t.send(1, &f), denied);
    assert_eq!(t.send(1, &f), denied);
    assert_eq!(t.hits(), hits, "no hit after the change");
}

#[test]
fn a_mac_move_redirects_a_cached_flow_at_once() {
    let mut t = Pair::new();
    let f = udp(1, 2);
    let hits = t.cache(1, &f, 2);
    // Host 2 now speaks from port 3: the next burst to it goes there.
    t.send(3, &udp(2, 1));
    assert_eq!(t.send(1, &f), local(3));
    assert_eq!(t.send(1, &f), local(3));
    assert!(t.hits() > hits, "cached again, at its new port");
}

#[test]
fn a_removed_port_gets_nothing_more() {
    let mut t = Pair::new();
    let f = udp(1, 2);
    t.cache(1, &f, 2);
    let rx_before = t.w.counters[1].rx_packets.get();
    t.spec.attached[2] = false;
    t.w.reconfigure(&t.spec);
    // Its MACs are gone with it (the daemon flushes them too): the flow
    // floods to the ports that remain, never to port 2.
    t.w.pipe.switch.bridges()[0].macs.flush_port(PortId(2));
    let fates = t.send(1, &f);
    assert!(
        fates
            .iter()
            .all(|f| f.starts_with("Flood") && !f.contains("PortId(2)")),
        "{fates:?}"
    );
    assert_eq!(t.w.counters[1].rx_packets.get(), rx_before + 2);
}

#[test]
fn a_session_that_ends_is_not_answered_from_the_cache() {
    let mut t = Pair::new();
    // Port 1 opens sessions by its egress group and accepts nothing new:
    // the replies it gets (and their cache entries) stand on the session
    // alone.
    let mut any = Rule::any("all", 1, AclAction::Allow);
    any.proto = Proto::Udp;
    t.spec.egress[1] = Some(vec![any]);
    t.spec.ingress[1] = Some(Vec::new());
    t.w.reconfigure(&t.spec);
    t.send(1, &udp(1, 2));
    let reply = udp(2, 1);
    // The reply (1000 <- 53) is the session's.
    let mut r = reply.clone();
    r[34..36].copy_from_slice(&53u16.to_be_bytes());
    r[36..38].copy_from_slice(&1000u16.to_be_bytes());
    r[40..42].fill(0); // no UDP checksum
    let hits = t.cache(2, &r, 1);
    assert_eq!(t.w.sessions.flush(), 1);
    let denied = both(Fate::Drop(DropReason::AclDeny));
    assert_eq!(
        t.send(2, &r),
        denied,
        "no session: port 1's ingress group judges"
    );
    assert_eq!(t.hits(), hits);
}
