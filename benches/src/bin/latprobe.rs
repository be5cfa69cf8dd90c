//! `latprobe`: round-trip latency through a switch between two DPDK
//! containers, with the timestamp carried in the frame.
//!
//! One process plays both containers on one core: it opens two
//! virtio-user NICs (A and B) on the switch's vhost-user sockets, sends a
//! probe from A to B holding its sequence number and the TSC at send, turns
//! each probe arriving at B around (MACs swapped, sent back from B), and
//! on its return to A records TSC-now minus TSC-at-send in an hdrhistogram.
//! One probe is in flight at a time, so this is the unloaded round trip
//! A -> switch -> B -> switch -> A, free of queueing behind other probes.
//! Both ends share one TSC, so no clock sync is involved.
//!
//! Prints one JSON line: samples, lost, mean and percentiles in us.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use vswitch::Frame;
use vswitchd::dpdk::eal::Eal;
use vswitchd::dpdk::mbuf::Burst;
use vswitchd::dpdk::mempool::Mempool;
use vswitchd::dpdk::port::{rx_burst, tx_burst, EthPort};
use vswitchd::dpdk::{rdtsc, tsc_hz};

#[derive(Parser)]
#[command(about = "Round-trip latency between two virtio-user NICs through a switch")]
struct Cli {
    /// vhost-user socket of container A's port.
    #[arg(long)]
    a: String,
    /// vhost-user socket of container B's port.
    #[arg(long)]
    b: String,
    /// The virtio-user side listens (the switch's ports are vhost clients,
    /// as OVS's dpdkvhostuserclient).
    #[arg(long)]
    server: bool,
    /// Seconds of probing after the warm-up.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Probes sent (and not recorded) first: MAC learning, caches.
    #[arg(long, default_value_t = 1000)]
    warmup: u64,
    /// CPU to run on.
    #[arg(long, default_value_t = 0)]
    cpu: u32,
}

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x0b];
/// IEEE 802 local experimental ethertype: nothing else on the switch uses it.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
const MAGIC: u32 = 0x5653_4c54;
/// A probe unanswered this long is lost.
const TIMEOUT: Duration = Duration::from_millis(5);

fn probe(seq: u64, tsc: u64) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[..6].copy_from_slice(&MAC_B);
    f[6..12].copy_from_slice(&MAC_A);
    f[12..14].copy_from_slice(&ETHERTYPE);
    f[14..18].copy_from_slice(&MAGIC.to_be_bytes());
    f[18..26].copy_from_slice(&seq.to_be_bytes());
    f[26..34].copy_from_slice(&tsc.to_be_bytes());
    f
}

/// (seq, tsc) of a probe frame.
fn parse(f: &[u8]) -> Option<(u64, u64)> {
    if f.len() < 34 || f[12..14] != ETHERTYPE || f[14..18] != MAGIC.to_be_bytes() {
        return None;
    }
    Some((
        u64::from_be_bytes(f[18..26].try_into().ok()?),
        u64::from_be_bytes(f[26..34].try_into().ok()?),
    ))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let server = if cli.server { ",server=1" } else { "" };
    let eal = Eal::init(&[
        "latprobe".into(),
        "--lcores".into(),
        format!("0@{}", cli.cpu),
        "--no-pci".into(),
        "--in-memory".into(),
        "--single-file-segments".into(),
        "-m".into(),
        "128".into(),
        "--no-telemetry".into(),
        "--file-prefix".into(),
        format!("latprobe{}", std::process::id()),
        "--log-level".into(),
        "6".into(),
    ])?;
    let pool = Mempool::new("latprobe", 4095, 0, 2176)?;
    let fmt_mac = |m: [u8; 6]| m.map(|b| format!("{b:02x}")).join(":");
    let open = |name: &str, path: &str, mac: [u8; 6]| -> Result<EthPort> {
        let devargs = format!("{name},path={path},mac={}{server}", fmt_mac(mac));
        let mut p = EthPort::attach_vdev(&devargs)?;
        p.configure(1, 1, 256, 256, &pool)?;
        p.start()?;
        Ok(p)
    };
    let a = open("net_virtio_user_a", &cli.a, MAC_A).context("port A")?;
    let b = open("net_virtio_user_b", &cli.b, MAC_B).context("port B")?;
    let up = Instant::now();
    while !(a.link_up() && b.link_up()) {
        if up.elapsed() > Duration::from_secs(30) {
            bail!("the switch did not bring both vhost-user links up in 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let hz = tsc_hz();
    let timeout_cycles = hz / 1000 * TIMEOUT.as_millis() as u64;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3)?;
    let (mut lost, mut seq) = (0u64, 0u64);
    let mut rx = Burst::default();
    let mut tx = Burst::default();
    let mut junk = Burst::default();
    let mut deadline: Option<Instant> = None;
    loop {
        if seq == cli.warmup {
            deadline = Some(Instant::now() + Duration::from_secs(cli.seconds));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let sent = rdtsc();
        let m = pool
            .alloc_frame(&probe(seq, sent))
            .ok_or_else(|| anyhow!("pool empty"))?;
        tx.push(m);
        if tx_burst(a.id(), 0, &mut tx) == 0 {
            tx.free_all();
        }
        let mut back = false;
        while !back && rdtsc() - sent < timeout_cycles {
            // B turns probes around; anything else (none expected) is freed.
            if rx_burst(b.id(), 0, &mut rx) > 0 {
                for mut m in rx.drain() {
                    if parse(m.data()).is_some() {
                        let d = m.data_mut();
                        d[..6].copy_from_slice(&MAC_A);
                        d[6..12].copy_from_slice(&MAC_B);
                        tx.push(m);
                    } else {
                        junk.push(m);
                    }
                }
                tx_burst(b.id(), 0, &mut tx);
                tx.free_all();
                junk.free_all();
            }
            // A collects returns.
            if rx_burst(a.id(), 0, &mut rx) > 0 {
                let now = rdtsc();
                for m in rx.mbufs() {
                    if let Some((s, t)) = parse(m.data()) {
                        if s == seq {
                            back = true;
                            if seq >= cli.warmup {
                                let ns = (now - t) as u128 * 1_000_000_000 / u128::from(hz);
                                hist.record(ns as u64)?;
                            }
                        }
                    }
                }
                rx.free_all();
            }
        }
        if !back && seq >= cli.warmup {
            lost += 1;
        }
        seq += 1;
    }
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "samples": hist.len(),
            "lost": lost,
            "mean_us": hist.mean() / 1000.0,
            "p50_us": us(0.5),
            "p99_us": us(0.99),
            "p999_us": us(0.999),
            "max_us": hist.max() as f64 / 1000.0,
        })
    );
    drop((a, b));
    drop(pool);
    drop(eal);
    Ok(())
}
