//! Micro-benchmarks of each pipeline stage on 32-frame bursts (the
//! workers' burst size), over frames from the benchmark workloads.
//! Criterion reports time per burst and, with the element throughput set
//! to 32, frames per second; ns/packet = 1000 / (Melem/s).
//!
//! Stages not built yet (ACL classify, sessions, policer, VXLAN encap and
//! decap) get their benchmarks with the code that implements them.

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
        t.learn(mac(i), PortId((i % 8) as u16), 0);
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
                black_box(t.learn(*m, PortId((i % 8) as u16), 1));
            }
        })
    });
    g.bench_function("learn_new", |b| {
        b.iter_batched(
            || MacTable::new(4096, 300),
            |t| {
                for m in &misses {
                    black_box(t.learn(*m, PortId(1), 1));
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
fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(MAX_BURST as u64));
    let mut b = SwitchBuilder::new();
    let br = b.bridge(BridgeConf {
        name: "b".into(),
        mac_capacity: 4096,
        mac_aging_secs: 300,
    });
    b.attach(PortId(0), br).attach(PortId(1), br);
    b.static_mac(br, MacAddr(DST_MAC), PortId(1));
    let sw = b.build(None).expect("valid topology");
    let counters = PortCounters::default();
    let mut actions = [Action::Flood; MAX_BURST];
    for (name, w) in [
        ("forward_known_dst_udp4", Workload::Udp4 { flows: 1024 }),
        ("forward_known_dst_imix", Workload::Imix { flows: 1024 }),
    ] {
        let frames = burst(w);
        g.bench_function(name, |bch| {
            bch.iter(|| {
                sw.forward(
                    PortId(0),
                    black_box(&frames[..]),
                    1,
                    &counters,
                    &mut actions,
                );
                black_box(&actions);
            })
        });
    }
    // Every frame from a different station to a different unknown one:
    // no burst cache helps, every frame learns and floods.
    let frames: Vec<Vec<u8>> = (0..MAX_BURST as u64)
        .map(|i| {
            let mut f = vsbench::workload::udp4(i as u32, 60);
            f[..6].copy_from_slice(&mac(5000 + i).0);
            f[6..12].copy_from_slice(&mac(100 + i).0);
            f
        })
        .collect();
    g.bench_function("forward_distinct_stations", |bch| {
        bch.iter(|| {
            sw.forward(
                PortId(0),
                black_box(&frames[..]),
                1,
                &counters,
                &mut actions,
            );
            black_box(&actions);
        })
    });
    g.finish();
}

criterion_group!(benches, parse, mac_table, pipeline);
criterion_main!(benches);
