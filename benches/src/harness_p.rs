//! Harness P, single-core capacity: a `net_pcap` port replaying a workload
//! forever (`infinite_rx=1`, a line-rate generator that needs no core of
//! its own) into the switch, which forwards to a `net_null` sink. The
//! switch gets exactly one forwarding core (CPU 1); its control thread
//! stays on CPU 0. The same pcap and ports go through:
//!
//! - dpdk-testpmd io forwarding: the ceiling of the harness (pcap rx copy
//!   plus null tx free, no switching at all);
//! - vswitchd, one worker, the sink's station as a static MAC;
//! - Open vSwitch with its DPDK datapath, one PMD thread, configured to do
//!   the same work.
//!
//! Mpps is the sink's tx counter delta over the window (after a warm-up);
//! cycles/packet is the forwarding core's TSC cycles over the window
//! divided by the packets (every one of these switches polls its core at
//! 100 %), plus each switch's own busy-cycle accounting where it has one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use testbed::ovs::{Ovs, OvsOpts};
use testbed::testpmd::Testpmd;
use testbed::vswitchd::{TempDir, Vswitchd};

use crate::report::Section;
use crate::rounds::Rounds;
use crate::workload::{
    Workload, DST_IP, DST_MAC, VNI, VTEP_LOCAL_IP, VTEP_LOCAL_MAC, VTEP_REMOTE_IP, VTEP_REMOTE_MAC,
};

/// How long to run.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Traffic before the window opens (caches, learning, EMC warm).
    pub warmup: Duration,
    /// The measurement window.
    pub window: Duration,
    /// Where the workload pcaps are (written if missing).
    pub pcap_dir: PathBuf,
    /// The vswitchd binary.
    pub vswitchd: PathBuf,
    /// Rounds of measurements (every system once per round).
    pub rounds: usize,
    /// Only the L2 workload with one OVS configuration (CI smoke).
    pub smoke: bool,
    /// Only the workloads whose name contains this (case-insensitive).
    pub workload: Option<String>,
}

/// What one system did over the window.
#[derive(Debug, Clone, Default)]
struct Measured {
    mpps: f64,
    /// TSC cycles of the forwarding core per packet.
    core_cycles: f64,
    /// The switch's own busy cycles per packet, if it reports them.
    own_cycles: Option<f64>,
    /// The switch's own busy share, if it reports it.
    busy_pct: Option<f64>,
    /// Other processes that used a CPU during the window.
    others: Vec<String>,
    /// vswitchd: its workers' cycles per frame in each stage, from a
    /// second window with stage metrics on (they cost a few cycles, so
    /// not during the first).
    stages: Option<String>,
}

const COLUMNS: &[&str] = &["Mpps", "spread %", "cycles/pkt", "own cycles/pkt", "busy %"];

fn hex_mac(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// Counts packets out of `read` over the window after the warm-up.
fn window(o: &Opts, hz: u64, mut read: impl FnMut() -> Result<u64>) -> Result<Measured> {
    std::thread::sleep(o.warmup);
    let cpu0 = crate::contention::sample();
    let (c0, t0) = (read()?, Instant::now());
    std::thread::sleep(o.window);
    let (c1, dt) = (read()?, t0.elapsed().as_secs_f64());
    let others = crate::contention::others(
        &cpu0,
        &crate::contention::sample(),
        crate::contention::EXPECTED,
        2.0,
    );
    let pkts = c1.saturating_sub(c0);
    if pkts == 0 {
        bail!("no packets reached the sink in {dt:.1} s");
    }
    Ok(Measured {
        mpps: pkts as f64 / dt / 1e6,
        core_cycles: hz as f64 * dt / pkts as f64,
        others,
        ..Default::default()
    })
}

/// testpmd io forwarding `pairs` generator/sink pairs (ports 2i -> 2i+1),
/// one forwarding core per pair: CPU 1, then CPU 0 (which its idle
/// interactive main lcore shares, as vswitchd's second worker shares it
/// with the control thread).
fn testpmd_io(o: &Opts, hz: u64, pcap: &Path, pairs: usize) -> Result<Measured> {
    let left = crate::contention::settle();
    let vdevs: Vec<String> = (0..pairs)
        .flat_map(|i| {
            [
                format!("net_pcap{i},rx_pcap={},infinite_rx=1", pcap.display()),
                format!("net_null{i},no-rx=1"),
            ]
        })
        .collect();
    let (eal, mut app) = match pairs {
        1 => (vec!["-l", "0,1", "--main-lcore", "0"], vec![]),
        2 => (
            vec!["--lcores", "0@0,1@1,2@0", "--main-lcore", "0"],
            vec!["--nb-cores=2".to_string()],
        ),
        _ => bail!("harness P has two CPUs: at most two pairs"),
    };
    app.push("--forward-mode=io".into());
    let mut tp = Testpmd::spawn("testpmd-io", &eal, &vdevs, &app).map_err(|e| anyhow!(e))?;
    tp.cmd("start");
    let mut m = window(o, hz, || {
        (0..pairs)
            .map(|i| tp.stats_of(2 * i as u16 + 1).map(|s| s.1))
            .sum::<Result<u64, String>>()
            .map_err(|e| anyhow!(e))
    })?;
    m.core_cycles *= pairs as f64;
    m.others.extend(left);
    Ok(m)
}

/// vswitchd's configuration of a workload: fields of bridge "b" and extra
/// top-level tables, and the fields of the generator and sink ports (by
/// default both in "b", the sink's station a static MAC).
#[derive(Clone)]
struct VsConf {
    tables: String,
    gen_fields: String,
    sink_fields: String,
    note: String,
    /// Also measure it with the flow cache off (the cache serves only
    /// pipelines with security groups).
    cache_off_too: bool,
    /// Generator/sink pairs, each in a bridge of its own ("b", "b2").
    pairs: usize,
    /// Workers: CPU 1, then CPU 0 (shared with the control thread); pair
    /// i's generator pinned to worker i mod workers.
    workers: usize,
}

impl VsConf {
    fn l2(note: &str) -> VsConf {
        VsConf {
            tables: String::new(),
            gen_fields: "bridge = \"b\"\n".into(),
            sink_fields: format!("bridge = \"b\"\nstatic_macs = [\"{}\"]\n", hex_mac(DST_MAC)),
            note: note.into(),
            cache_off_too: false,
            pairs: 1,
            workers: 1,
        }
    }
}

/// VXLAN encap: frames from the generator (in VNI 100's bridge) to a
/// station pinned behind the remote VTEP; the sink is the uplink. The
/// next hop's MAC is a static neighbour (no ARP on a null port).
fn vs_vxlan_encap() -> VsConf {
    VsConf {
        tables: format!(
            "vni = {VNI}\nremote_vteps = [\"{VTEP_LOCAL_IP}\"]\n\
             [[bridge.remote_mac]]\nmac = \"{dst}\"\nvtep = \"{VTEP_LOCAL_IP}\"\n\n\
             [vtep]\nuplink = \"sink\"\nip = \"{VTEP_REMOTE_IP}/24\"\n\
             [[vtep.neighbour]]\nip = \"{VTEP_LOCAL_IP}\"\nmac = \"{nh}\"\n",
            dst = hex_mac(DST_MAC),
            nh = hex_mac(VTEP_LOCAL_MAC),
        ),
        gen_fields: "bridge = \"b\"\n".into(),
        sink_fields: String::new(),
        note:
            "VNI 100, static remote MAC and neighbour, outer headers prepended in place, 1 worker"
                .into(),
        cache_off_too: false,
        pairs: 1,
        workers: 1,
    }
}

/// Routed VXLAN encap: the generator's bridge "b" and bridge "r2" (VNI
/// 100) are subnets of VPC "r" whose router MAC is the workload's
/// destination MAC, so every frame is routed: to 10.1.0.1, a remote
/// endpoint behind the remote VTEP, MACs rewritten, TTL decremented,
/// then encapsulated. Compared with "VXLAN encap" (the same frames
/// bridged) it prices the router stage, and frames it routes skip the
/// flow cache.
fn vs_vxlan_routed() -> VsConf {
    VsConf {
        tables: format!(
            "vpc = \"r\"\ngateway = \"10.0.255.254/16\"\n\n\
             [[bridge]]\nname = \"r2\"\nvni = {VNI}\nvpc = \"r\"\ngateway = \"10.1.0.254/24\"\n\
             remote_vteps = [\"{VTEP_LOCAL_IP}\"]\n\
             [[bridge.remote_mac]]\nmac = \"{ROUTED_DST_MAC}\"\nvtep = \"{VTEP_LOCAL_IP}\"\nips = [\"{DST_IP}\"]\n\n\
             [[vpc]]\nname = \"r\"\nrouter_mac = \"{router}\"\n\n\
             [vtep]\nuplink = \"sink\"\nip = \"{VTEP_REMOTE_IP}/24\"\n\
             [[vtep.neighbour]]\nip = \"{VTEP_LOCAL_IP}\"\nmac = \"{nh}\"\n",
            router = hex_mac(DST_MAC),
            nh = hex_mac(VTEP_LOCAL_MAC),
        ),
        gen_fields: "bridge = \"b\"\n".into(),
        sink_fields: String::new(),
        note: "VPC of two subnets, router MAC = the frames' destination, remote endpoint from `ips`, VNI 100, 1 worker"
            .into(),
        cache_off_too: false,
        pairs: 1,
        workers: 1,
    }
}

/// The routed endpoint's MAC (the frames' new destination).
const ROUTED_DST_MAC: &str = "02:00:00:00:00:03";

/// OVS routing the same way before its native VXLAN encap: OpenFlow
/// rewrites the MACs and decrements the TTL (`dec_ttl`), as a router.
fn ovs_vxlan_routed() -> Vec<OvsConf> {
    let flow = format!(
        "in_port=1,ip,actions=mod_dl_src:{},mod_dl_dst:{ROUTED_DST_MAC},dec_ttl,output:3",
        hex_mac(DST_MAC)
    );
    let mut c = OvsConf::new(
        "OVS routed (mod_dl_src/dst, dec_ttl) + native VXLAN encap",
        &[flow.as_str()],
    );
    c.topology = Topology::VxlanEncap;
    vec![c]
}

/// VXLAN decap: the generator is the uplink replaying VXLAN from a known
/// remote VTEP; inner frames go to the sink's static MAC in VNI 100.
fn vs_vxlan_decap() -> VsConf {
    VsConf {
        tables: format!(
            "vni = {VNI}\nremote_vteps = [\"{VTEP_REMOTE_IP}\"]\n\n\
             [vtep]\nuplink = \"gen\"\nip = \"{VTEP_LOCAL_IP}/24\"\n\
             [[vtep.neighbour]]\nip = \"{VTEP_REMOTE_IP}\"\nmac = \"{nh}\"\n",
            nh = hex_mac(VTEP_REMOTE_MAC),
        ),
        gen_fields: String::new(),
        ..VsConf::l2(
            "VNI 100 from a configured remote VTEP, outer headers stripped in place, 1 worker",
        )
    }
}

/// The benchmark security group of `n` rules as a vswitchd config,
/// attached to the generator port's egress, for `flows` concurrent flows:
/// beyond the default per-port share (4096 sessions), the session table
/// and the generator port's share are sized for them (else most flows
/// would be refused as `session_quota`, which is what the share is for).
fn vs_security_group(n: u32, flows: u32, v6: bool) -> VsConf {
    let rules = crate::workload::security_group(n);
    let n = rules.len();
    let mut t = String::from("[[security_group]]\nname = \"sg\"\ndefault = \"deny\"\n");
    if flows > 4096 {
        t += &format!(
            "[sessions]\ncapacity = {}\nper_port = {}\nper_bridge = {}\n",
            4 * flows,
            2 * flows,
            2 * flows
        );
    }
    for (i, r) in rules.iter().enumerate() {
        t += &format!(
            "[[security_group.rule]]\nname = \"r{i}\"\npriority = {}\naction = \"allow\"\nproto = \"udp\"\nsrc = \"{}\"\ndst_ports = \"{}\"\n",
            10 + n - i,
            r.prefix(v6),
            r.dport
        );
    }
    VsConf {
        tables: t,
        gen_fields: "bridge = \"b\"\negress_group = \"sg\"\n".into(),
        cache_off_too: true,
        ..VsConf::l2(&format!(
            "{n}-rule group + sessions (stateful{}), 1 worker",
            if flows > 4096 {
                format!(
                    ", table of {} sessions, port share {}",
                    4 * flows,
                    2 * flows
                )
            } else {
                String::new()
            }
        ))
    }
}

/// An admit-everything policer (100 Gbit/s) on the generator's side.
fn vs_policer() -> VsConf {
    VsConf {
        tables: "[[qos_policy]]\nname = \"p\"\nkind = \"srtcm\"\nunit = \"bits\"\ncir = 100_000_000_000\ncbs = 10_000_000\n".into(),
        gen_fields: "bridge = \"b\"\negress_qos = \"p\"\n".into(),
        ..VsConf::l2("srTCM policer 100 Gbit/s on the generator port, 1 worker")
    }
}

/// vswitchd on `conf`, with its workers' flow caches or without (the
/// stages for every frame: what the cache saves, measured in the same
/// round).
fn vswitchd(o: &Opts, hz: u64, pcap: &Path, conf: &VsConf, cache: bool) -> Result<Measured> {
    let left = crate::contention::settle();
    let dir = TempDir::new("vsb");
    let mut header = Vswitchd::config_header(&dir, 1024, "b");
    if !cache {
        header = header.replace("[workers]\n", "[workers]\nflow_cache = false\n");
    }
    if conf.workers == 2 {
        header = header.replace("cores = [1]\n", "cores = [1, 0]\n");
    }
    let mut ports = String::new();
    for i in 0..conf.pairs {
        // Pair 0 keeps the names "gen", "sink" and bridge "b".
        let (n, bridge) = match i {
            0 => (String::new(), "b".to_string()),
            _ => ((i + 1).to_string(), format!("b{}", i + 1)),
        };
        let in_bridge = |f: &str| f.replace("bridge = \"b\"", &format!("bridge = \"{bridge}\""));
        if i > 0 {
            ports += &format!("[[bridge]]\nname = \"{bridge}\"\n\n");
        }
        let pin = match conf.workers {
            1 => String::new(),
            w => format!("rx_workers = [{}]\n", i % w),
        };
        ports += &format!(
            "[[port]]\nname = \"gen{n}\"\nkind = \"pcap\"\nrx_pcap = \"{pcap}\"\ninfinite_rx = true\n{pin}{gen}\n\
             [[port]]\nname = \"sink{n}\"\nkind = \"null\"\nno_rx = true\n{sink}\n",
            pcap = pcap.display(),
            gen = in_bridge(&conf.gen_fields),
            sink = in_bridge(&conf.sink_fields),
        );
    }
    let config = format!("{header}\n{tables}\n\n{ports}", tables = conf.tables);
    let vs = Vswitchd::start(&o.vswitchd, &dir, &config).map_err(|e| anyhow!(e))?;
    let stats = || -> Result<Value> { vs.request(json!({"cmd": "stats"})).map_err(|e| anyhow!(e)) };
    let sinks_tx = |s: &Value| -> u64 {
        s["ports"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("sink")))
                    .filter_map(|p| p["tx_packets"].as_u64())
                    .sum()
            })
            .unwrap_or(0)
    };
    let workers = |s: &Value, k: &str| -> u64 {
        s["workers"]
            .as_array()
            .map_or(0, |w| w.iter().filter_map(|w| w[k].as_u64()).sum())
    };
    let mut first = None;
    let mut last = None;
    let mut m = window(o, hz, || {
        let s = stats()?;
        let tx = sinks_tx(&s);
        if first.is_none() {
            first = Some(s);
        } else {
            last = Some(s);
        }
        Ok(tx)
    })?;
    let (a, b) = (first.expect("read twice"), last.expect("read twice"));
    let d = |k: &str| workers(&b, k).saturating_sub(workers(&a, k)) as f64;
    m.core_cycles *= conf.workers as f64;
    m.own_cycles = Some(d("busy_cycles") / d("packets").max(1.0));
    m.busy_pct = Some(100.0 * d("busy_cycles") / (d("busy_cycles") + d("idle_cycles")).max(1.0));
    m.others.extend(left);
    m.stages = Some(stage_cycles(o, stats, |r| {
        vs.request(r).map_err(|e| anyhow!(e))
    })?);
    vs.stop();
    Ok(m)
}

/// Where a frame's cycles go in vswitchd: `pmd-perf` with stage metrics
/// on over a window as long as the measurement's, summed over workers,
/// as "stage cycles/pkt rx a, decide b, act c, tx d, other e".
fn stage_cycles(
    o: &Opts,
    stats: impl Fn() -> Result<Value>,
    request: impl Fn(Value) -> Result<Value>,
) -> Result<String> {
    request(json!({"cmd": "pmd-perf", "stages": true, "clear": true}))?;
    std::thread::sleep(o.window);
    let perf = request(json!({"cmd": "pmd-perf", "stages": false}))?;
    stats()?; // the switch is still answering: the window was not a stall
    let workers = perf["workers"].as_array().cloned().unwrap_or_default();
    let stage = |k: &str| -> f64 {
        // Per frame over all workers: weight each by the frames it timed.
        let (cycles, frames) = workers.iter().fold((0.0, 0.0), |(c, f), w| {
            let s = &w["stage_cycles_per_packet"];
            let n = s["frames"].as_f64().unwrap_or(0.0);
            (c + s[k].as_f64().unwrap_or(0.0) * n, f + n)
        });
        if frames == 0.0 {
            0.0
        } else {
            cycles / frames
        }
    };
    Ok(format!(
        "stage cycles/pkt rx {:.1}, decide {:.1}, act {:.1}, tx {:.1}, other {:.1}",
        stage("rx"),
        stage("decide"),
        stage("act"),
        stage("tx"),
        stage("other")
    ))
}

/// The rows with two generator/sink pairs: testpmd io on two forwarding
/// cores (the ceiling), vswitchd with one worker for both pairs, and with
/// two workers, one pair each; the ratio of the last two is how vswitchd
/// scales (the issue's goal: 1.8x).
fn two_workers(o: &Opts, hz: u64, sec: &mut Section) -> Result<()> {
    let pairs = [
        (
            "2 pairs: L2 forward, known MAC, 1k flows each",
            VsConf::l2("MAC learning + static MAC lookup"),
        ),
        (
            "2 pairs: security group, 1000 rules + sessions, 1k flows each",
            vs_security_group(1000, 1024, false),
        ),
    ];
    let pcap = Workload::Udp4 { flows: 1024 }.write_to(&o.pcap_dir)?;
    for (name, conf) in pairs {
        if o.workload
            .as_ref()
            .is_some_and(|w| !name.to_ascii_lowercase().contains(&w.to_ascii_lowercase()))
        {
            continue;
        }
        let one = VsConf {
            pairs: 2,
            workers: 1,
            ..conf.clone()
        };
        let two = VsConf {
            workers: 2,
            ..one.clone()
        };
        let mut rounds = Rounds::default();
        let mut others = crate::contention::PerRound::default();
        let mut push = |system: &str, m: Measured| {
            others.push(system, &m.others);
            rounds.push(system, m);
        };
        for _ in 0..o.rounds {
            push(
                "testpmd io, 2 cores (ceiling)",
                testpmd_io(o, hz, &pcap, 2).context("testpmd io, 2 cores")?,
            );
            push(
                "vswitchd, 1 worker",
                vswitchd(o, hz, &pcap, &one, true).context("vswitchd, 1 worker")?,
            );
            push(
                "vswitchd, 2 workers",
                vswitchd(o, hz, &pcap, &two, true).context("vswitchd, 2 workers")?,
            );
        }
        for r in rounds.medians(|m| m.mpps) {
            let mut note = format!("{}; {}", r.rounds_note(), others.note(&r.system));
            if r.system.starts_with("vswitchd") {
                note = format!(
                    "{}, each pair in a bridge of its own; the 2-worker run pins pair i's generator \
                     to worker i (CPU 1, and CPU 0 shared with the control thread); {note}",
                    conf.note.trim_end_matches(", 1 worker")
                );
            }
            add(sec, name, &r.system, &r.sample, r.spread, &note);
        }
        sec.ratios_against_all(name, "vswitchd, 2 workers", "Mpps");
    }
    Ok(())
}

/// One Open vSwitch configuration: OpenFlow flows, EMC on or off, and an
/// optional ingress policer on the generator port.
struct OvsConf {
    name: String,
    flows: Vec<String>,
    emc: bool,
    police_kbps: Option<u64>,
    topology: Topology,
}

impl OvsConf {
    fn new(name: &str, flows: &[&str]) -> OvsConf {
        OvsConf {
            name: name.into(),
            flows: flows.iter().map(|f| f.to_string()).collect(),
            emc: true,
            police_kbps: None,
            topology: Topology::L2,
        }
    }

    fn emc_off(mut self) -> OvsConf {
        self.name.push_str(", EMC off");
        self.emc = false;
        self
    }
}

/// OVS doing L2 forwarding: one flow, or NORMAL with the sink's station
/// as a static fdb entry (as vswitchd's static MAC).
fn ovs_l2(smoke: bool) -> Vec<OvsConf> {
    let mut v = vec![OvsConf::new(
        "OVS single flow in_port=1,output:2",
        &["in_port=1,actions=output:2"],
    )];
    if !smoke {
        v.push(OvsConf::new("OVS NORMAL, static fdb", &["actions=NORMAL"]));
        v.push(OvsConf::new("OVS NORMAL, static fdb", &["actions=NORMAL"]).emc_off());
    }
    v
}

/// OVS applying the benchmark security group as OpenFlow rules.
fn ovs_security_group(n: u32, v6: bool) -> Vec<OvsConf> {
    let rules = crate::workload::security_group(n);
    let n = rules.len();
    let mut flows: Vec<String> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                "priority={},{},tp_dst={},actions=output:2",
                10 + n - i,
                if v6 {
                    format!("udp6,ipv6_src={}", r.prefix(true))
                } else {
                    format!("udp,nw_src={}", r.prefix(false))
                },
                r.dport
            )
        })
        .collect();
    flows.push("priority=0,actions=drop".into());
    let flows: Vec<&str> = flows.iter().map(String::as_str).collect();
    let name = format!("OVS {n} OpenFlow rules");
    vec![
        OvsConf::new(&name, &flows),
        OvsConf::new(&name, &flows).emc_off(),
    ]
}

/// OVS userspace conntrack: track, commit new, pass established.
fn ovs_conntrack() -> Vec<OvsConf> {
    vec![OvsConf::new(
        "OVS conntrack (ct, recirc, commit)",
        &[
            "table=0,priority=10,udp,ct_state=-trk,actions=ct(table=1)",
            "table=1,priority=10,udp,ct_state=+trk+new,actions=ct(commit),output:2",
            "table=1,priority=10,udp,ct_state=+trk+est,actions=output:2",
        ],
    )]
}

/// OVS with an ingress policer that admits everything (100 Gbit/s): the
/// cost of policing, not of dropping.
fn ovs_policer() -> Vec<OvsConf> {
    let mut c = OvsConf::new(
        "OVS ingress policing 100 Gbit/s + single flow",
        &["in_port=1,actions=output:2"],
    );
    c.police_kbps = Some(100_000_000);
    vec![c]
}

/// OVS doing VXLAN with its native (userspace) tunneling: a `vxlan` port
/// in br0 and the underlay on br-phy, whose internal port holds the VTEP
/// address (in OVS's private netns) with a static tunnel ARP entry.
/// Encap: br0 sends the generator's frames into the tunnel, OVS pushes
/// the outer headers and outputs through br-phy to the sink. Decap:
/// br-phy hands VXLAN from the generator to its LOCAL port, where OVS
/// pops it and recirculates the inner frame into br0, to the sink.
fn ovs_vxlan(encap: bool) -> Vec<OvsConf> {
    let (name, flow) = if encap {
        (
            "OVS native VXLAN encap (tnl_push via br-phy)",
            "in_port=1,actions=output:3",
        )
    } else {
        (
            "OVS native VXLAN decap (tnl_pop + recirc)",
            "in_port=3,actions=output:2",
        )
    };
    let mut c = OvsConf::new(name, &[flow]);
    c.topology = if encap {
        Topology::VxlanEncap
    } else {
        Topology::VxlanDecap
    };
    vec![c]
}

/// Where OVS's generator (OpenFlow port 1) and sink (port 2) sit.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Topology {
    /// Both in br0.
    L2,
    /// Generator in br0 with tunnel port 3; sink on br-phy.
    VxlanEncap,
    /// Generator on br-phy; tunnel port 3 and sink in br0.
    VxlanDecap,
}

/// Builds `topology` in `ovs` for `pcap`; the sink's (bridge, ofport).
fn ovs_topology(ovs: &Ovs, topology: Topology, pcap: &Path) -> Result<(&'static str, u16)> {
    let e = |e: String| anyhow!(e);
    let gen = format!("net_pcap0,rx_pcap={},infinite_rx=1", pcap.display());
    let sink = "net_null0,no-rx=1";
    ovs.add_bridge("br0").map_err(e)?;
    if topology == Topology::L2 {
        ovs.add_dpdk_port("br0", "p0", &gen, 1).map_err(e)?;
        ovs.add_dpdk_port("br0", "p1", sink, 2).map_err(e)?;
        ovs.appctl(&["fdb/add", "br0", "p1", "0", &hex_mac(DST_MAC)])
            .map_err(e)?;
        return Ok(("br0", 2));
    }
    let encap = topology == Topology::VxlanEncap;
    // Our VTEP is the workload's remote one when encapsulating, its local
    // one when decapsulating (the pcap's outer headers are addressed so).
    let (ours, our_mac, theirs, their_mac) = if encap {
        (
            VTEP_REMOTE_IP,
            VTEP_REMOTE_MAC,
            VTEP_LOCAL_IP,
            VTEP_LOCAL_MAC,
        )
    } else {
        (
            VTEP_LOCAL_IP,
            VTEP_LOCAL_MAC,
            VTEP_REMOTE_IP,
            VTEP_REMOTE_MAC,
        )
    };
    ovs.add_bridge("br-phy").map_err(e)?;
    ovs.vsctl(&[
        "set",
        "bridge",
        "br-phy",
        &format!("other_config:hwaddr={}", hex_mac(our_mac)),
    ])
    .map_err(e)?;
    ovs.add_port(
        "br0",
        "vx0",
        "vxlan",
        &[
            &format!("options:remote_ip={theirs}"),
            &format!("options:local_ip={ours}"),
            &format!("options:key={VNI}"),
        ],
        3,
    )
    .map_err(e)?;
    let ns = ovs.netns();
    ns.exec(&["ip", "addr", "add", &format!("{ours}/24"), "dev", "br-phy"])
        .map_err(e)?;
    ns.exec(&["ip", "link", "set", "br-phy", "up"]).map_err(e)?;
    ovs.appctl(&[
        "tnl/arp/set",
        "br-phy",
        &theirs.to_string(),
        &hex_mac(their_mac),
    ])
    .map_err(e)?;
    if encap {
        ovs.add_dpdk_port("br0", "p0", &gen, 1).map_err(e)?;
        ovs.add_dpdk_port("br-phy", "p1", sink, 2).map_err(e)?;
        ovs.ofctl(&["del-flows", "br-phy"]).map_err(e)?;
        ovs.ofctl(&["add-flow", "br-phy", "in_port=LOCAL,actions=output:2"])
            .map_err(e)?;
        Ok(("br-phy", 2))
    } else {
        ovs.add_dpdk_port("br-phy", "p0", &gen, 1).map_err(e)?;
        ovs.add_dpdk_port("br0", "p1", sink, 2).map_err(e)?;
        ovs.ofctl(&["del-flows", "br-phy"]).map_err(e)?;
        ovs.ofctl(&["add-flow", "br-phy", "in_port=1,actions=LOCAL"])
            .map_err(e)?;
        Ok(("br0", 2))
    }
}

/// Runs OVS once on `pcap` and measures every configuration in `confs`
/// (which share one topology).
fn ovs(o: &Opts, hz: u64, pcap: &Path, confs: &[OvsConf]) -> Result<Vec<(String, Measured)>> {
    let mut left = crate::contention::settle();
    let ovs = Ovs::start(&OvsOpts::default()).map_err(|e| anyhow!(e))?;
    let e = |e: String| anyhow!(e);
    let topology = confs.first().map_or(Topology::L2, |c| c.topology);
    let (sink_bridge, sink_port) = ovs_topology(&ovs, topology, pcap)?;
    let mut out = Vec::new();
    for conf in confs {
        let prob = if conf.emc { "100" } else { "0" };
        ovs.vsctl(&[
            "set",
            "Open_vSwitch",
            ".",
            &format!("other_config:emc-insert-inv-prob={prob}"),
        ])
        .map_err(e)?;
        let (rate, burst) = conf.police_kbps.map_or((0, 0), |r| (r, r / 10));
        ovs.vsctl(&[
            "set",
            "Interface",
            "p0",
            &format!("ingress_policing_rate={rate}"),
            &format!("ingress_policing_burst={burst}"),
        ])
        .map_err(e)?;
        ovs.ofctl(&["del-flows", "br0"]).map_err(e)?;
        let file = ovs.run_dir().join("flows.txt");
        std::fs::write(&file, conf.flows.join("\n")).context("writing the flow file")?;
        ovs.ofctl(&["add-flows", "br0", &file.display().to_string()])
            .map_err(e)?;
        // Old datapath flows and EMC entries must not serve the new config.
        ovs.appctl(&["dpctl/del-flows"]).map_err(e)?;
        let mut cleared = false;
        let mut m = window(o, hz, || {
            if !cleared {
                ovs.clear_pmd_stats().map_err(|e| anyhow!(e))?;
                cleared = true;
            }
            ovs.port_packets(sink_bridge, sink_port)
                .map(|p| p.1)
                .map_err(|e| anyhow!(e))
        })
        .with_context(|| format!("{}:\n{}", conf.name, ovs.log()))?;
        let (own, busy) = ovs.pmd_stats().map_err(e)?;
        m.own_cycles = own;
        m.busy_pct = busy;
        // Only the first configuration runs after another system.
        m.others.append(&mut left);
        out.push((conf.name.clone(), m));
    }
    Ok(out)
}

fn add(sec: &mut Section, workload: &str, system: &str, m: &Measured, spread: f64, note: &str) {
    let mut v = vec![
        ("Mpps", m.mpps),
        ("spread %", spread),
        ("cycles/pkt", m.core_cycles),
    ];
    if let Some(c) = m.own_cycles {
        v.push(("own cycles/pkt", c));
    }
    if let Some(b) = m.busy_pct {
        v.push(("busy %", b));
    }
    match &m.stages {
        Some(s) => sec.row(workload, system, &v, &format!("{s}; {note}")),
        None => sec.row(workload, system, &v, note),
    }
}

/// Runs harness P; `command` is what reproduces it (for the report).
pub fn run(o: &Opts, hz: u64, command: &str) -> Result<Section> {
    let mut sec = Section::new(
        "P",
        "single-core capacity, net_pcap -> 1 core -> net_null",
        command,
        COLUMNS,
    );
    sec.notes = vec![
        format!(
            "The switch's forwarding core is CPU {}; its control thread, the main lcore and the generator \
             (net_pcap infinite_rx, polled by the forwarding core itself) use no other core.",
            crate::SWITCH_CPU
        ),
        format!(
            "{} rounds, each system once per round; the row is the round with the median Mpps, spread % is \
             (max - min) / median over the rounds. Mpps: sink tx delta over a {:.0} s window after {:.0} s of \
             warm-up. cycles/pkt: the forwarding \
             core's TSC cycles in the window / packets (on the \"2 pairs\" rows with two forwarding cores, \
             both cores' cycles). own cycles/pkt: vswitchd's workers' busy cycles / packets, \
             OVS's `pmd-stats-show` avg processing cycles per packet.",
            o.rounds,
            o.window.as_secs_f64(),
            o.warmup.as_secs_f64()
        ),
        "Frames are 60 bytes in the pcap (64 on the wire with FCS).".into(),
        "The security-group workload compares vswitchd's stateful group (every frame: a flow cache hit \
         whose session is checked live; the group is consulted once per flow) with OVS stateless 1000 \
         OpenFlow rules and with OVS conntrack. \"vswitchd, flow cache off\" (security-group workloads) is \
         the same vswitchd with `[workers] flow_cache = false`, in the same rounds: every frame through \
         the stages."
            .into(),
        "VXLAN encap: the generator's 60-byte frames leave the sink encapsulated (110 bytes); vswitchd \
         prepends the outer headers in the mbuf's headroom, OVS pushes them (native tunneling via br-phy, \
         static tunnel ARP). VXLAN decap: the generator replays 110-byte VXLAN frames of VNI 100 from one \
         remote VTEP; the sink gets the 60-byte inner frames. testpmd io forwards the same pcap unchanged \
         (the ceiling of moving those frames)."
            .into(),
    ];
    let udp1k = Workload::Udp4 { flows: 1024 };
    // (workload, pcap, vswitchd measured, OVS configurations)
    let l2 = VsConf::l2("MAC learning + static MAC lookup, 1 worker");
    // (workload, pcap, vswitchd's config, OVS configurations)
    let mut workloads = vec![(
        "L2 forward, known MAC, 1k flows",
        udp1k,
        l2.clone(),
        ovs_l2(o.smoke),
    )];
    if !o.smoke {
        let mut acl = ovs_security_group(1000, false);
        acl.extend(ovs_conntrack());
        workloads.extend([
            (
                "L2 forward, known MAC, 64k flows",
                Workload::Udp4 { flows: 65536 },
                l2.clone(),
                ovs_l2(false),
            ),
            (
                "L2 forward, IMIX, 1k flows",
                Workload::Imix { flows: 1024 },
                l2,
                ovs_l2(true),
            ),
            (
                "security group, 1000 rules + sessions, 1k flows",
                udp1k,
                vs_security_group(1000, 1024, false),
                acl,
            ),
            (
                "security group, 10,000 rules + sessions, 1k flows",
                udp1k,
                vs_security_group(10_000, 1024, false),
                ovs_security_group(10_000, false),
            ),
            (
                "security group, 1000 rules + sessions, 64k flows",
                Workload::Udp4 { flows: 65536 },
                vs_security_group(1000, 65536, false),
                ovs_security_group(1000, false),
            ),
            (
                "security group on IPv6, 1000 rules + sessions, 1k flows",
                Workload::Udp6 { flows: 1024 },
                vs_security_group(1000, 1024, true),
                ovs_security_group(1000, true),
            ),
            (
                "ingress policer, 1k flows",
                udp1k,
                vs_policer(),
                ovs_policer(),
            ),
            (
                "VXLAN encap, 1k flows",
                udp1k,
                vs_vxlan_encap(),
                ovs_vxlan(true),
            ),
            (
                "VXLAN encap, routed, 1k flows",
                udp1k,
                vs_vxlan_routed(),
                ovs_vxlan_routed(),
            ),
            (
                "VXLAN decap, 1k flows",
                Workload::Vxlan { flows: 1024 },
                vs_vxlan_decap(),
                ovs_vxlan(false),
            ),
        ]);
    }
    if let Some(only) = &o.workload {
        let only = only.to_ascii_lowercase();
        workloads.retain(|(name, ..)| name.to_ascii_lowercase().contains(&only));
    }
    std::fs::create_dir_all(&o.pcap_dir)?;
    for (name, w, vs_conf, confs) in workloads {
        let pcap = w.write_to(&o.pcap_dir)?;
        let mut rounds = Rounds::default();
        let mut others = crate::contention::PerRound::default();
        let mut push = |system: &str, m: Measured| {
            others.push(system, &m.others);
            rounds.push(system, m);
        };
        for _ in 0..o.rounds {
            push(
                "testpmd io (ceiling)",
                testpmd_io(o, hz, &pcap, 1).context("testpmd io")?,
            );
            push(
                "vswitchd",
                vswitchd(o, hz, &pcap, &vs_conf, true).context("vswitchd")?,
            );
            if vs_conf.cache_off_too {
                push(
                    "vswitchd, flow cache off",
                    vswitchd(o, hz, &pcap, &vs_conf, false).context("vswitchd, no cache")?,
                );
            }
            for (system, m) in ovs(o, hz, &pcap, &confs).context("Open vSwitch")? {
                push(&system, m);
            }
        }
        for r in rounds.medians(|m| m.mpps) {
            let mut note = format!("{}; {}", r.rounds_note(), others.note(&r.system));
            if r.system.starts_with("vswitchd") {
                note = format!("{}; {note}", vs_conf.note);
            }
            add(&mut sec, name, &r.system, &r.sample, r.spread, &note);
        }
        sec.ratios_against_all(name, "vswitchd", "Mpps");
    }
    if !o.smoke {
        two_workers(o, hz, &mut sec)?;
    }
    Ok(sec)
}
