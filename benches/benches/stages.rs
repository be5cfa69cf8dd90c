//! Micro-benchmarks of each pipeline stage on 32-frame bursts (the
//! workers' burst size), over frames from the benchmark workloads.
//! Criterion reports time per burst and, with the element throughput set
//! to 32, frames per second; ns/packet = 1000 / (Melem/s).
//!
//! VXLAN encap and decap measure the header work (classification and
//! outer headers); the mbuf prepend and the VTEP lookups come with the
//! VXLAN stage in the workers.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use vsbench::workload::{Workload, DST_MAC};
use vswitch::{
    Action, BridgeConf, FlowKey, MacAddr, MacTable, PortCounters, PortId, SwitchBuilder, MAX_BURST,
};

/// A burst of the first 32 frames of `w`.
fn burst(w: Workload) -> Vec<Vec<u8>> {
    w.frames().into_iter().take(MAX_BURST).collect()
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(MAX_BURST as u64));
    for (name, w) in [
        ("udp4", Workload::Udp4 { flows: 1024 }),
        ("udp6", Workload::Udp6 { flows: 1024 }),
        ("tcp", Workload::Tcp { flows: 64 }),
        ("vxlan_outer", Workload::Vxlan { flows: 1024 }),
    ] {
        let frames = burst(w);
        g.bench_function(name, |b| {
            b.iter(|| {
                for f in &frames {
                    black_box(FlowKey::parse(black_box(f)).ok());
                }
            })
        });
    }
    g.finish();
}

fn mac(n: u64) -> MacAddr {
    MacAddr::from_u64(0x0200_0000_0000 | n)
}

fn mac_table(c: &mut Criterion) {
    let mut g = c.benchmark_group("mac_table");
    g.throughput(Throughput::Elements(MAX_BURST as u64));
    // A table of 4096 stations, half full: lookups spread over buckets.
    let t = MacTable::new(4096, 300);
    for i in 0..2048 {
        t.learn(mac(i), PortId((i % 8) as u16), 0, u32::MAX);
    }
    let hits: Vec<MacAddr> = (0..MAX_BURST as u64).map(|i| mac(i * 61 % 2048)).collect();
    let misses: Vec<MacAddr> = (0..MAX_BURST as u64).map(|i| mac(10_000 + i)).collect();
    g.bench_function("lookup_hit", |b| {
        b.iter(|| {
            for m in &hits {
                black_box(t.lookup(*m, 1));
            }
        })
    });
    g.bench_function("lookup_miss", |b| {
        b.iter(|| {
            for m in &misses {
                black_box(t.lookup(*m, 1));
            }
        })
    });
    g.bench_function("learn_known", |b| {
        b.iter(|| {
            for (i, m) in hits.iter().enumerate() {
                black_box(t.learn(*m, PortId((i % 8) as u16), 1, u32::MAX));
            }
        })
    });
    g.bench_function("learn_new", |b| {
        b.iter_batched(
            || MacTable::new(4096, 300),
            |t| {
                for m in &misses {
                    black_box(t.learn(*m, PortId(1), 1, u32::MAX));
                }
                t
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The whole switching stage as a worker runs it: parse, learn, look up,
/// decide, count, for one burst from the generator port.
/// Harness P's bridge: the generator on port 0, the sink's station a
/// static MAC behind port 1.
fn harness_bridge() -> (SwitchBuilder, vswitch::BridgeId) {
    let mut b = SwitchBuilder::new();
    let br = b.bridge(BridgeConf {
        name: "b".into(),
        mac_capacity: 4096,
        mac_aging_secs: 300,
    });
    b.attach(PortId(0), br).attach(PortId(1), br);
    b.static_mac(br, MacAddr(DST_MAC), PortId(1));
    (b, br)
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(MAX_BURST as u64));
    let (mut b, br) = harness_bridge();
    b.attach(PortId(2), br);
    // Port 2: the generator's stations behind port security (its MAC,
    // their /16 as an allowed prefix: one MAC and one prefix compared).
    b.guard(
        PortId(2),
        vswitch::PortGuard::new(&vswitch::GuardConf {
            mac: MacAddr(vsbench::workload::SRC_MAC),
            allowed_addresses: vec![vswitch::Prefix::parse("10.0.0.0/16").expect("a prefix")],
            ..vswitch::GuardConf::default()
        }),
    );
    let sw = b.build(None).expect("valid topology");
    let counters = PortCounters::default();
    let mut actions = [Action::Flood; MAX_BURST];
    // Every frame from a different station to a different unknown one:
    // no burst cache helps, every frame learns and floods.
    let distinct: Vec<Vec<u8>> = (0..MAX_BURST as u64)
        .map(|i| {
            let mut f = vsbench::workload::udp4(i as u32, 60);
            f[..6].copy_from_slice(&mac(5000 + i).0);
            f[6..12].copy_from_slice(&mac(100 + i).0);
            f
        })
        .collect();
    for (name, port, frames) in [
        (
            "forward_known_dst_udp4",
            0,
            burst(Workload::Udp4 { flows: 1024 }),
        ),
        (
            "forward_known_dst_udp4_port_security",
            2,
            burst(Workload::Udp4 { flows: 1024 }),
        ),
        (
            "forward_known_dst_imix",
            0,
            burst(Workload::Imix { flows: 1024 }),
        ),
        ("forward_distinct_stations", 0, distinct),
    ] {
        g.bench_function(name, |bch| {
            bch.iter(|| {
                sw.forward(
                    PortId(port),
                    black_box(&frames[..]),
                    1,
                    &counters,
                    &mut actions,
                );
                black_box(&actions);
            })
        });
    }
    g.finish();
}

/// `Pipeline::decide` with the benchmark's 1000-rule group and sessions
/// on the generator port, bursts rotating over the 1k-flow workload (as
/// harness P replays it): with the worker's flow cache, and without.
fn decide(c: &mut Criterion) {
    use std::sync::Arc;
    use vswitch::security::{Group, PortPolicy, Security};
    use vswitch::{Decisions, Now, Pipeline};
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(MAX_BURST as u64));
    let (b, _) = harness_bridge();
    let sg = group(1000);
    let n = sg.rules.len();
    let policy = PortPolicy {
        egress: Some(Arc::new(Group::new(&sg, vec![0; n]))),
        ..PortPolicy::default()
    };
    // Sized as harness P sizes them for 64k flows: 4 x the flows.
    let sessions = Arc::new(acl::session::SessionTable::new(
        4 * 65536,
        acl::session::Timeouts::default(),
    ));
    let pipe = Pipeline::new(
        b.build(None).expect("valid topology"),
        Security::new(vec![policy], Vec::new(), sessions, 1),
        None,
    );
    let counters: Vec<PortCounters> = (0..vswitch::MAX_PORTS)
        .map(|_| PortCounters::default())
        .collect();
    let now = Now::from_ns(1_000_000_000);
    for (name, flows, cache) in [
        ("security_group_1k_flows_cached", 1024, true),
        ("security_group_1k_flows_uncached", 1024, false),
        ("security_group_64k_flows_cached", 65536, true),
    ] {
        let frames = Workload::Udp4 { flows }.frames();
        let mut d = Box::new(if cache {
            Decisions::with_flow_cache()
        } else {
            Decisions::default()
        });
        let mut at = 0;
        g.bench_function(name, |bch| {
            bch.iter(|| {
                let burst = &frames[at..at + MAX_BURST];
                at = (at + MAX_BURST) % frames.len();
                pipe.decide(PortId(0), black_box(burst), now, &counters, &mut d);
                assert_eq!(d.fate(0), vswitch::Fate::Local(PortId(1)));
            })
        });
    }
    g.finish();
}

/// The benchmark security group as acl rules (see workload::security_group).
fn group(n: u32) -> acl::SecurityGroup {
    let rules = vsbench::workload::security_group(n)
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let mut rule = acl::Rule::any(&format!("r{i}"), n - i as u32, acl::Action::Allow);
            rule.proto = acl::Proto::Udp;
            rule.src = Some(acl::Cidr::new(r.src.into(), r.len).expect("valid prefix"));
            rule.dst_ports = acl::PortRange::one(r.dport);
            rule
        })
        .collect();
    acl::SecurityGroup {
        name: "bench".into(),
        rules,
        default: acl::Action::Deny,
    }
}

/// 32 tuples of the 1k-flow workload.
fn tuples() -> Vec<acl::Tuple> {
    burst(Workload::Udp4 { flows: 1024 })
        .iter()
        .map(|f| {
            let k = FlowKey::parse(f).expect("valid frame");
            vswitch::security::tuple_of(&k).expect("IP")
        })
        .collect()
}

/// Classification of a burst against 10 to 10,000 rules: every frame
/// passes all rules but the last (the worst case for a classifier).
fn acl_classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("acl_classify");
    g.throughput(Throughput::Elements(MAX_BURST as u64));
    let t = tuples();
    let mut out = vec![
        acl::Verdict {
            action: acl::Action::Deny,
            rule: None
        };
        MAX_BURST
    ];
    for n in [10, 100, 1000, 10_000] {
        let cls = acl::Classifier::new(&group(n));
        g.bench_function(format!("{n}_rules"), |b| {
            b.iter(|| {
                cls.classify_burst(black_box(&t), &mut out);
                assert_eq!(out[0].action, acl::Action::Allow);
            })
        });
    }
    g.finish();
}

fn sessions(c: &mut Criterion) {
    use acl::session::{SessionTable, Timeouts};
    let mut g = c.benchmark_group("session");
    g.throughput(Throughput::Elements(MAX_BURST as u64));
    let table = SessionTable::new(65536, Timeouts::default());
    // 16k live sessions; the burst's flows among them.
    let all: Vec<acl::Tuple> = (0..16_384u32)
        .map(|i| acl::Tuple {
            src: u128::from(u32::from(vsbench::workload::flow_src_ip(i))),
            ..tuples()[0]
        })
        .collect();
    for t in &all {
        table.open(t, 0, 0, 0, 1, 0, 0);
    }
    let hits: Vec<acl::Tuple> = all.iter().step_by(509).take(MAX_BURST).copied().collect();
    let misses: Vec<acl::Tuple> = hits.iter().map(|t| acl::Tuple { dport: 9, ..*t }).collect();
    g.bench_function("lookup_hit", |b| {
        b.iter(|| {
            for t in &hits {
                black_box(table.lookup(black_box(t), 0, 1));
            }
        })
    });
    g.bench_function("lookup_miss", |b| {
        b.iter(|| {
            for t in &misses {
                black_box(table.lookup(black_box(t), 0, 1));
            }
        })
    });
    g.bench_function("lookup_hit_update", |b| {
        b.iter(|| {
            for t in &hits {
                if let acl::session::Found::Hit { orig, slot, .. } = table.lookup(t, 0, 1) {
                    table.update(slot, t.proto, orig, 0, 1);
                }
            }
        })
    });
    g.finish();
}

fn policer(c: &mut Criterion) {
    use acl::policer::{ColorAction, MeterConf, Policy, SharedMeter, Unit};
    let mut g = c.benchmark_group("policer");
    g.throughput(Throughput::Elements(MAX_BURST as u64));
    for (name, meter) in [
        (
            "srtcm",
            MeterConf::SrTcm {
                cir: 10_000_000_000,
                cbs: 1_000_000,
                ebs: 1_000_000,
            },
        ),
        (
            "trtcm",
            MeterConf::TrTcm {
                cir: 10_000_000_000,
                cbs: 1_000_000,
                pir: 20_000_000_000,
                pbs: 1_000_000,
            },
        ),
    ] {
        let m = SharedMeter::new(
            Policy {
                meter,
                unit: Unit::Bits,
                actions: [ColorAction::Pass; 3],
            },
            0,
        );
        let sizes = [acl::policer::WireLen::frame(60); MAX_BURST];
        let mut colors = [acl::policer::Policed::default(); MAX_BURST];
        let mut now = 0u64;
        g.bench_function(format!("{name}_burst"), |b| {
            b.iter(|| {
                now += 1000;
                m.police_burst(now, black_box(&sizes), &mut colors);
                black_box(&colors);
            })
        });
    }
    g.finish();
}

fn vxlan_headers(c: &mut Criterion) {
    use vsbench::workload::{VTEP_LOCAL_IP, VTEP_LOCAL_MAC, VTEP_REMOTE_IP, VTEP_REMOTE_MAC};
    let mut g = c.benchmark_group("vxlan");
    g.throughput(Throughput::Elements(MAX_BURST as u64));
    let tunneled = burst(Workload::Vxlan { flows: 1024 });
    g.bench_function("decap_classify", |b| {
        b.iter(|| {
            for f in &tunneled {
                let d = vxlan::decap::decap(black_box(f), VTEP_LOCAL_IP, vxlan::VXLAN_PORT);
                assert!(matches!(d, vxlan::decap::Decap::Tunnel(_)));
            }
        })
    });
    let inner = burst(Workload::Udp4 { flows: 1024 });
    let t = vxlan::encap::Template::new(&vxlan::encap::Tunnel {
        src_mac: VTEP_LOCAL_MAC,
        dst_mac: VTEP_REMOTE_MAC,
        src_ip: VTEP_LOCAL_IP,
        dst_ip: VTEP_REMOTE_IP,
        dst_port: vxlan::VXLAN_PORT,
        vni: 100,
        ttl: 64,
        df: true,
    });
    let mut outer = [0u8; vxlan::OUTER_LEN];
    g.bench_function("encap_headers", |b| {
        b.iter(|| {
            for f in &inner {
                let sport = vxlan::encap::source_port(black_box(f));
                t.write(&mut outer, f.len(), sport, 0);
                black_box(&outer);
            }
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    parse,
    mac_table,
    pipeline,
    decide,
    acl_classify,
    sessions,
    policer,
    vxlan_headers
);
criterion_main!(benches);
