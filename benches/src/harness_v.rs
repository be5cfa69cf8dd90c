//! Harness V, the container path: two DPDK containers, each a virtio-user
//! NIC on one of the switch's two vhost-user ports.
//!
//! - pps: one dpdk-testpmd plays both containers (2 virtio-user ports,
//!   `mac` forwarding, each port's frames addressed to the other's MAC,
//!   primed with `start tx_first 64`), so frames circulate A -> switch ->
//!   B -> switch -> A as fast as the slower side allows. Mpps is the sum of
//!   both ports' rx over the window.
//! - latency: `latprobe` (this crate) sends one timestamped probe at a time
//!   from A, turns it around at B, and records the round trip.
//!
//! The switch forwards on CPU 1; the container(s) run on CPU 0. Both
//! sides' busy shares are reported, and the row names the bottleneck: the
//! side that is busier (a poll-mode switch with idle rounds left is not
//! the limit).
//!
//! Switches: testpmd io between two net_vhost ports (the ceiling), vswitchd
//! (MAC learning), Open vSwitch with dpdkvhostuserclient ports (in_port
//! flows; NORMAL with static fdb entries).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use testbed::ovs::{Ovs, OvsOpts};
use testbed::testpmd::Testpmd;
use testbed::vswitchd::{TempDir, Vswitchd};

use crate::report::Section;
use crate::rounds::Rounds;

/// How long to run.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Traffic before the window opens.
    pub warmup: Duration,
    /// The measurement window (pps and latency each).
    pub window: Duration,
    /// The vswitchd binary.
    pub vswitchd: PathBuf,
    /// The latency probe binary.
    pub latprobe: PathBuf,
    /// Rounds of measurements (every system once per round).
    pub rounds: usize,
    /// One OVS configuration only (CI smoke).
    pub smoke: bool,
}

const MAC_A: &str = "02:00:00:00:0b:0a";
const MAC_B: &str = "02:00:00:00:0b:0b";
const COLUMNS: &[&str] = &[
    "Mpps",
    "spread %",
    "switch cycles/pkt",
    "switch busy %",
    "gen busy %",
    "RTT p50 us",
    "RTT p99 us",
    "RTT p99.9 us",
];

/// A switch under test, holding its two ports' sockets.
enum Switch {
    Testpmd(Testpmd, Instant),
    Vswitchd { vs: Vswitchd, _config: TempDir },
    Ovs(Ovs),
}

/// A snapshot of the switch's own busy accounting: (busy cycles, total
/// cycles, packets) where it has them.
type Busy = Option<(f64, f64, f64)>;

impl Switch {
    /// Whether the containers' NICs must listen (OVS's ports are clients).
    fn containers_listen(&self) -> bool {
        matches!(self, Switch::Ovs(_))
    }

    fn busy(&mut self, hz: u64) -> Result<Busy> {
        Ok(match self {
            Switch::Testpmd(tp, started) => {
                let (busy, pkts) = testpmd_busy_cycles(tp)?;
                let total = started.elapsed().as_secs_f64() * hz as f64;
                Some((busy, total, pkts))
            }
            Switch::Vswitchd { vs, .. } => {
                let s = vs
                    .request(json!({"cmd": "stats"}))
                    .map_err(|e| anyhow!(e))?;
                let w = |k: &str| s["workers"][0][k].as_u64().unwrap_or(0) as f64;
                Some((
                    w("busy_cycles"),
                    w("busy_cycles") + w("idle_cycles"),
                    w("packets"),
                ))
            }
            Switch::Ovs(_) => None,
        })
    }
}

/// (busy cycles, packets) of a testpmd's forwarding core since `start`
/// (`--record-core-cycles` counts only rounds that received packets).
fn testpmd_busy_cycles(tp: &mut Testpmd) -> Result<(f64, f64)> {
    let lines = tp
        .query("show fwd stats all", |l| l.contains("CPU cycles/packet"))
        .map_err(|e| anyhow!(e))?;
    let after = |key: &str| -> Option<f64> {
        lines.iter().find_map(|l| {
            let rest = &l[l.find(key)? + key.len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
    };
    after("total cycles=")
        .zip(after("packets="))
        .ok_or_else(|| anyhow!("testpmd printed no cycle counts"))
}

fn start_switch(kind: &str, o: &Opts, dir: &Path) -> Result<Switch> {
    let (sa, sb) = (dir.join("a.sock"), dir.join("b.sock"));
    Ok(match kind {
        "testpmd" => {
            let vdevs = [
                format!("net_vhost0,iface={},queues=1", sa.display()),
                format!("net_vhost1,iface={},queues=1", sb.display()),
            ];
            let mut tp = Testpmd::spawn(
                "testpmd-switch",
                &["-l", "0,1", "--main-lcore", "0"],
                &vdevs,
                &["--forward-mode=io".into(), "--record-core-cycles".into()],
            )
            .map_err(|e| anyhow!(e))?;
            tp.cmd("start");
            Switch::Testpmd(tp, Instant::now())
        }
        "vswitchd" => {
            let tmp = TempDir::new("vsv");
            let config = format!(
                r#"{header}
[[port]]
name = "a"
kind = "vhost-user"
bridge = "b"
socket = "{sa}"

[[port]]
name = "b"
kind = "vhost-user"
bridge = "b"
socket = "{sb}"
"#,
                header = Vswitchd::config_header(&tmp, 512, "b"),
                sa = sa.display(),
                sb = sb.display(),
            );
            let vs = Vswitchd::start(&o.vswitchd, &tmp, &config).map_err(|e| anyhow!(e))?;
            Switch::Vswitchd { vs, _config: tmp }
        }
        flows => {
            let ovs = Ovs::start(&OvsOpts::default()).map_err(|e| anyhow!(e))?;
            let e = |e: String| anyhow!(e);
            ovs.add_bridge("br0").map_err(e)?;
            for (name, sock, ofport) in [("va", &sa, 1), ("vb", &sb, 2)] {
                let opt = format!("options:vhost-server-path={}", sock.display());
                ovs.add_port("br0", name, "dpdkvhostuserclient", &[&opt], ofport)
                    .map_err(e)?;
            }
            ovs.ofctl(&["del-flows", "br0"]).map_err(e)?;
            if flows == "ovs-flows" {
                ovs.ofctl(&["add-flow", "br0", "in_port=1,actions=output:2"])
                    .map_err(e)?;
                ovs.ofctl(&["add-flow", "br0", "in_port=2,actions=output:1"])
                    .map_err(e)?;
            } else {
                ovs.ofctl(&["add-flow", "br0", "actions=NORMAL"])
                    .map_err(e)?;
                ovs.appctl(&["fdb/add", "br0", "va", "0", MAC_A])
                    .map_err(e)?;
                ovs.appctl(&["fdb/add", "br0", "vb", "0", MAC_B])
                    .map_err(e)?;
            }
            Switch::Ovs(ovs)
        }
    })
}

struct Figures {
    mpps: f64,
    switch_cycles: Option<f64>,
    switch_busy: Option<f64>,
    gen_busy: f64,
    latency: Value,
    /// Other processes that used a CPU during the window.
    others: Vec<String>,
    /// Frames in flight and the container's empty polls.
    circulation: String,
}

fn measure(o: &Opts, hz: u64, sw: &mut Switch, dir: &Path) -> Result<Figures> {
    let (sa, sb) = (dir.join("a.sock"), dir.join("b.sock"));
    let server = if sw.containers_listen() {
        ",server=1"
    } else {
        ""
    };
    let vdevs = [
        format!("net_virtio_user0,path={},mac={MAC_A}{server}", sa.display()),
        format!("net_virtio_user1,path={},mac={MAC_B}{server}", sb.display()),
    ];
    let mut gen = Testpmd::spawn(
        "container-gen",
        &["--lcores", "0@0,1@0"],
        &vdevs,
        &[
            "--forward-mode=mac".into(),
            format!("--eth-peer=0,{MAC_B}"),
            format!("--eth-peer=1,{MAC_A}"),
            "--record-core-cycles".into(),
            "--record-burst-stats".into(),
        ],
    )
    .map_err(|e| anyhow!(e))?;
    let gen_started = Instant::now();
    gen.cmd("start tx_first 64");
    std::thread::sleep(o.warmup);
    let rx = |gen: &mut Testpmd| -> Result<u64> {
        let a = gen.stats_of(0).map_err(|e| anyhow!(e))?.0;
        let b = gen.stats_of(1).map_err(|e| anyhow!(e))?.0;
        Ok(a + b)
    };
    if let Switch::Ovs(ovs) = sw {
        ovs.clear_pmd_stats().map_err(|e| anyhow!(e))?;
    }
    let busy0 = sw.busy(hz)?;
    let cpu0 = crate::contention::sample();
    let (c0, t0) = (rx(&mut gen)?, Instant::now());
    std::thread::sleep(o.window);
    let (c1, dt) = (rx(&mut gen)?, t0.elapsed().as_secs_f64());
    let cpu1 = crate::contention::sample();
    let busy1 = sw.busy(hz)?;
    // The generator and the switches are expected to poll at 100 %.
    let others = crate::contention::others(&cpu0, &cpu1, crate::contention::EXPECTED, 2.0);
    let circulation = gen_circulation(&mut gen)?;
    let gen_busy = 100.0 * testpmd_busy_cycles(&mut gen)?.0
        / (gen_started.elapsed().as_secs_f64() * hz as f64);
    let pkts = c1.saturating_sub(c0);
    if pkts == 0 {
        gen.dump();
        bail!("no frames circulated between the containers in {dt:.1} s");
    }
    let mpps = pkts as f64 / dt / 1e6;
    let (switch_cycles, switch_busy) = match (sw, busy0, busy1) {
        (Switch::Ovs(ovs), _, _) => ovs.pmd_stats().map_err(|e| anyhow!(e))?,
        (_, Some((b0, t0, p0)), Some((b1, t1, p1))) => {
            let cyc = if p1 > p0 {
                Some((b1 - b0) / (p1 - p0))
            } else {
                None
            };
            (cyc, Some(100.0 * (b1 - b0) / (t1 - t0).max(1.0)))
        }
        _ => (None, None),
    };
    drop(gen);
    let latency = latprobe(o, &sa, &sb, server.is_empty())?;
    Ok(Figures {
        mpps,
        switch_cycles,
        switch_busy,
        gen_busy,
        latency,
        others,
        circulation,
    })
}

/// How the frames circulate, seen from the container: frames in flight
/// (sent minus received: the loop keeps the 4096 primed ones unless
/// something drops them, and fewer in flight means smaller bursts
/// everywhere) and the share of its rx polls that found nothing (high:
/// the container waits on the switch).
fn gen_circulation(gen: &mut Testpmd) -> Result<String> {
    let lines = gen
        .query("show fwd stats all", |l| l.contains("CPU cycles/packet"))
        .map_err(|e| anyhow!(e))?;
    // The accumulated block comes last: its RX-total and TX-total.
    let total = |key: &str| -> Option<u64> {
        lines.iter().rev().find_map(|l| {
            let rest = &l[l.find(key)? + key.len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
    };
    // "RX-bursts : N [95% of 0 pkts + 5% of 32 pkts]", per stream.
    let empty: Vec<String> = lines
        .iter()
        .filter_map(|l| {
            let rest = &l[l.find("RX-bursts")?..];
            let pct = rest[rest.find('[')? + 1..].split('%').next()?;
            rest.contains("% of 0 pkts").then(|| pct.trim().to_string())
        })
        .collect();
    Ok(format!(
        "gen: {} frames in flight, rx polls empty {} %",
        match (total("TX-total:"), total("RX-total:")) {
            (Some(t), Some(r)) => (t as i64 - r as i64).to_string(),
            _ => "?".into(),
        },
        if empty.is_empty() {
            "?".into()
        } else {
            empty.join("/")
        }
    ))
}

fn latprobe(o: &Opts, sa: &Path, sb: &Path, client: bool) -> Result<Value> {
    let mut c = std::process::Command::new(&o.latprobe);
    c.arg("--a").arg(sa).arg("--b").arg(sb);
    c.args([
        "--seconds",
        &o.window.as_secs().max(1).to_string(),
        "--cpu",
        "0",
    ]);
    if !client {
        c.arg("--server");
    }
    let out = c
        .output()
        .with_context(|| format!("running {}", o.latprobe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{'));
    match (out.status.success(), line) {
        (true, Some(l)) => Ok(serde_json::from_str(l)?),
        _ => bail!(
            "latprobe failed:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Runs harness V; `command` is what reproduces it.
pub fn run(o: &Opts, hz: u64, command: &str) -> Result<Section> {
    let mut sec = Section::new(
        "V",
        "DPDK containers on vhost-user: pps and round-trip latency",
        command,
        COLUMNS,
    );
    sec.notes = vec![
        format!(
            "Switch forwarding core: CPU {}. Containers (testpmd with 2 virtio-user ports, mac forwarding, \
             `start tx_first 64`; then latprobe) on CPU {}.",
            crate::SWITCH_CPU,
            crate::APP_CPU
        ),
        format!(
            "{} rounds, each system once per round; the row is the round with the median Mpps (its RTT \
             is that round's), spread % is (max - min) / median Mpps over the rounds. \
             Mpps: both container ports' rx summed over a {:.0} s window after {:.0} s warm-up. RTT: latprobe, \
             one 60-byte probe in flight, A -> switch -> B -> switch -> A, for {:.0} s.",
            o.rounds,
            o.window.as_secs_f64(),
            o.warmup.as_secs_f64(),
            o.window.as_secs_f64()
        ),
        "Ratios are vswitchd / peer: above 1 is better for Mpps, below 1 is better for RTT. \
         switch busy %: vswitchd worker busy cycles, OVS pmd-stats processing cycles, testpmd \
         --record-core-cycles; gen busy %: the container testpmd's. The bottleneck is the busier side."
            .into(),
    ];
    let systems: &[(&str, &str)] = if o.smoke {
        &[
            ("testpmd", "testpmd io, 2 x net_vhost (ceiling)"),
            ("vswitchd", "vswitchd"),
            ("ovs-flows", "OVS dpdkvhostuserclient, in_port flows"),
        ]
    } else {
        &[
            ("testpmd", "testpmd io, 2 x net_vhost (ceiling)"),
            ("vswitchd", "vswitchd"),
            ("ovs-flows", "OVS dpdkvhostuserclient, in_port flows"),
            ("ovs-normal", "OVS dpdkvhostuserclient, NORMAL + static fdb"),
        ]
    };
    let workload = "container <-> container, 60 B";
    let mut rounds = Rounds::default();
    let mut others = crate::contention::PerRound::default();
    for _ in 0..o.rounds {
        for (kind, name) in systems {
            let dir = TempDir::new("vsv");
            let left = crate::contention::settle();
            let mut sw = start_switch(kind, o, dir.path()).with_context(|| name.to_string())?;
            let mut f = measure(o, hz, &mut sw, dir.path()).with_context(|| name.to_string())?;
            f.others.extend(left);
            others.push(name, &f.others);
            rounds.push(name, f);
        }
    }
    for r in rounds.medians(|f| f.mpps) {
        let (name, f, spread) = (&r.system, &r.sample, r.spread);
        let mut v = vec![
            ("Mpps", f.mpps),
            ("spread %", spread),
            ("gen busy %", f.gen_busy),
        ];
        if let Some(c) = f.switch_cycles {
            v.push(("switch cycles/pkt", c));
        }
        if let Some(b) = f.switch_busy {
            v.push(("switch busy %", b));
        }
        for (col, key) in [
            ("RTT p50 us", "p50_us"),
            ("RTT p99 us", "p99_us"),
            ("RTT p99.9 us", "p999_us"),
        ] {
            if let Some(x) = f.latency[key].as_f64() {
                v.push((col, x));
            }
        }
        let bound = match f.switch_busy {
            Some(b) if b >= f.gen_busy => "bound by the switch",
            Some(_) => "bound by the containers",
            None => "bound by ?",
        };
        let note = format!(
            "{bound}; {}; {} probes, {} lost; Mpps {}; {}",
            f.circulation,
            f.latency["samples"],
            f.latency["lost"],
            r.rounds_note(),
            others.note(name)
        );
        sec.row(workload, name, &v, &note);
    }
    sec.ratios_against_all(workload, "vswitchd", "Mpps");
    sec.ratios_against_all(workload, "vswitchd", "RTT p50 us");
    Ok(sec)
}
