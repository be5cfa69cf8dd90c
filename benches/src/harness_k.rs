//! Harness K, kernel-stack containers: the baseline of the multi-NIC
//! design. Two network namespaces talk over
//!
//! - veth pairs into a Linux bridge (in a namespace of its own), the
//!   classic container network;
//! - the same with receive packet steering to CPU 1 (`rps_cpus` on the
//!   container veths and the bridge ports), so that the bridge too may
//!   use the second CPU, as vswitchd's worker does;
//! - vswitchd TAP NICs, one per namespace (eth0, same addresses), the
//!   worker polling on CPU 1.
//!
//! In all three, the apps (client and server) are pinned to CPU 0
//! (`taskset`). Tests: TCP iperf3 with 1 and 4 streams (Gbit/s, and the
//! CPU time each CPU spent per GB), UDP iperf3 with 18-byte payloads
//! (60-byte frames) with 1 and 10 streams (pps sent and received),
//! sockperf ping-pong round-trip percentiles, and a KV store as the
//! multi-NIC design's article measured it: redis-server in one container,
//! redis-benchmark in the other (1 KB SET and GET, 50 clients, no
//! pipelining). Every test notes how busy each CPU was; vswitchd's rows add
//! the worker's cycles per frame and per byte and its syscalls per frame.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use testbed::netns::Netns;
use testbed::process::Proc;
use testbed::vswitchd::{TempDir, Vswitchd};

use crate::report::Section;
use crate::rounds::Rounds;

/// How long to run.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Seconds per test.
    pub seconds: u64,
    /// Rounds (every topology once per round; the median is reported).
    pub rounds: usize,
    /// The vswitchd binary.
    pub vswitchd: PathBuf,
}

const IP_A: &str = "10.20.0.1";
const IP_B: &str = "10.20.0.2";
const APP_CPU: &str = "0";

const COLUMNS: &[&str] = &[
    "Gbit/s",
    "kpps sent",
    "kpps rcvd",
    "p50 us",
    "p99 us",
    "p99.9 us",
    "kQPS",
    "avg ms",
    "p99 ms",
    "CPU0 s/GB",
    "CPU1 s/GB",
    "CPU0 %",
    "CPU1 %",
    "IPIs to CPU0 k/s",
    "ctx sw k/s",
    "cyc/frame",
    "cyc/byte",
    "syscalls/frame",
    "spread %",
];

/// The topologies, in the order each round measures them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    Bridge,
    BridgeRps,
    Vswitchd,
}

impl Topology {
    const ALL: [Topology; 3] = [Topology::Bridge, Topology::BridgeRps, Topology::Vswitchd];

    fn system(self) -> &'static str {
        match self {
            Topology::Bridge => "veth + Linux bridge",
            Topology::BridgeRps => "veth + bridge, RPS to CPU 1",
            Topology::Vswitchd => "vswitchd TAP NICs",
        }
    }
}

/// The tests, each with the column its rounds are ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    Tcp(u32),
    Udp(u32),
    PingPong,
    Redis,
}

impl Test {
    const ALL: [Test; 6] = [
        Test::Tcp(1),
        Test::Tcp(4),
        Test::Udp(1),
        Test::Udp(10),
        Test::PingPong,
        Test::Redis,
    ];

    /// The workloads it fills (redis: SET and GET).
    fn workloads(self) -> Vec<String> {
        match self {
            Test::Tcp(1) => vec!["TCP, 1 stream".into()],
            Test::Tcp(n) => vec![format!("TCP, {n} streams")],
            Test::Udp(1) => vec!["UDP 18 B, 1 stream".into()],
            Test::Udp(n) => vec![format!("UDP 18 B, {n} streams")],
            Test::PingPong => vec!["sockperf ping-pong 18 B".into()],
            Test::Redis => vec![
                "redis 1 KB SET, 50 clients".into(),
                "redis 1 KB GET, 50 clients".into(),
            ],
        }
    }

    fn key(self) -> &'static str {
        match self {
            Test::Tcp(_) => "Gbit/s",
            Test::Udp(_) => "kpps rcvd",
            Test::PingPong => "p50 us",
            Test::Redis => "kQPS",
        }
    }

    /// The columns compared against the bridges.
    fn ratio_columns(self) -> &'static [&'static str] {
        match self {
            Test::Tcp(_) => &["Gbit/s"],
            Test::Udp(_) => &["kpps rcvd", "kpps sent"],
            Test::PingPong => &["p50 us", "p99 us", "p99.9 us"],
            Test::Redis => &["kQPS", "avg ms", "p99 ms"],
        }
    }
}

/// One workload's figures in one round.
type Sample = Vec<(&'static str, f64)>;

/// A command in `ns`, pinned to the apps' CPU.
fn pinned(ns: &Netns, program: &str) -> Command {
    let mut c = ns.command("taskset");
    c.args(["-c", APP_CPU, program]);
    c
}

/// Starts a server and waits (bounded) until it prints `ready`.
fn server(ns: &Netns, name: &str, args: &[&str], ready: &str) -> Result<Proc> {
    let mut c = pinned(ns, "stdbuf");
    c.arg("-oL").args(args);
    let mut p = Proc::spawn(name, c).with_context(|| format!("starting {name}"))?;
    if !p.wait_for_line(Duration::from_secs(10), |l| l.contains(ready)) {
        p.dump();
        bail!("{name} did not start");
    }
    Ok(p)
}

/// Runs a client to completion (bounded by its own duration plus a margin).
fn client(mut c: Command, secs: u64) -> Result<String> {
    let name = format!("{c:?}");
    let mut p = {
        c.stdin(std::process::Stdio::null());
        Proc::spawn("client", c).with_context(|| name.clone())?
    };
    let code = p.wait_exit(Duration::from_secs(secs + 30));
    let out = p.output().join("\n");
    if code != Some(0) {
        bail!("{name} failed ({code:?}):\n{out}");
    }
    Ok(out)
}

/// Busy and total jiffies of CPU 0 and CPU 1 (/proc/stat).
fn cpu_times() -> [(u64, u64); 2] {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut out = [(0, 0); 2];
    for (i, cpu) in ["cpu0 ", "cpu1 "].iter().enumerate() {
        if let Some(l) = stat.lines().find(|l| l.starts_with(cpu)) {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            // idle + iowait
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            out[i] = (total - idle, total);
        }
    }
    out
}

/// Inter-processor interrupts received by CPU 0 (rescheduling and
/// function-call IPIs: what a wakeup from the other CPU costs it) and
/// context switches, from /proc.
fn wakeup_counts() -> (u64, u64) {
    let irqs = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
    let ipis = irqs
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            t.starts_with("RES:") || t.starts_with("CAL:")
        })
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ctxt = stat
        .lines()
        .find_map(|l| l.strip_prefix("ctxt ")?.trim().parse().ok())
        .unwrap_or(0);
    (ipis, ctxt)
}

/// What a test window cost: per CPU, busy percent and busy seconds.
struct CpuUse {
    pct: [f64; 2],
    secs: [f64; 2],
}

fn cpu_use(a: [(u64, u64); 2], b: [(u64, u64); 2]) -> CpuUse {
    // USER_HZ: 100 on x86-64 Linux (ABI).
    let mut u = CpuUse {
        pct: [0.0; 2],
        secs: [0.0; 2],
    };
    for i in 0..2 {
        let busy = b[i].0.saturating_sub(a[i].0) as f64;
        let total = b[i].1.saturating_sub(a[i].1).max(1) as f64;
        u.pct[i] = 100.0 * busy / total;
        u.secs[i] = busy / 100.0;
    }
    u
}

/// The worker's figures over a test window (vswitchd only).
struct WorkerUse {
    cycles: f64,
    packets: f64,
    syscalls: f64,
    bytes: f64,
}

fn worker_clear(vs: &Vswitchd) -> Result<f64> {
    vs.request(serde_json::json!({"cmd": "pmd-perf", "clear": true}))
        .map_err(|e| anyhow!(e))?;
    port_bytes(vs)
}

/// Bytes received by the switch on both ports.
fn port_bytes(vs: &Vswitchd) -> Result<f64> {
    Ok((vs.counter("a", "rx_bytes") + vs.counter("b", "rx_bytes")) as f64)
}

fn worker_read(vs: &Vswitchd, bytes_before: f64) -> Result<WorkerUse> {
    let p = vs
        .request(serde_json::json!({"cmd": "pmd-perf"}))
        .map_err(|e| anyhow!(e))?;
    let w = &p["workers"][0];
    Ok(WorkerUse {
        cycles: w["busy_cycles"].as_f64().unwrap_or(0.0),
        packets: w["packets"].as_f64().unwrap_or(0.0),
        syscalls: w["syscalls"].as_f64().unwrap_or(0.0),
        bytes: port_bytes(vs)? - bytes_before,
    })
}

/// A topology set up: two containers and whatever joins them.
struct Env {
    a: Netns,
    b: Netns,
    _bridge: Option<Netns>,
    vs: Option<Vswitchd>,
    _dir: Option<TempDir>,
}

fn containers() -> Result<(Netns, Netns)> {
    let a = Netns::create(&testbed::unique("vkA")).map_err(|e| anyhow!(e))?;
    let b = Netns::create(&testbed::unique("vkB")).map_err(|e| anyhow!(e))?;
    Ok((a, b))
}

fn linux_bridge(rps: bool) -> Result<Env> {
    let (a, b) = containers()?;
    let br = Netns::create(&testbed::unique("vkBr")).map_err(|e| anyhow!(e))?;
    let e = |e: String| anyhow!(e);
    br.exec(&["ip", "link", "add", "br0", "type", "bridge"])
        .map_err(e)?;
    br.exec(&["ip", "link", "set", "br0", "up"]).map_err(e)?;
    for (ns, port, ip) in [(&a, "va", IP_A), (&b, "vb", IP_B)] {
        br.exec(&[
            "ip",
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])
        .map_err(e)?;
        br.exec(&["ip", "link", "set", port, "master", "br0", "up"])
            .map_err(e)?;
        ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])
            .map_err(e)?;
        ns.exec(&["ip", "link", "set", "eth0", "up"]).map_err(e)?;
        if rps {
            // CPU mask 2 = CPU 1: frames a veth receives are processed
            // there, not on the sender's CPU 0.
            let set = |ns: &Netns, dev: &str| {
                ns.exec(&[
                    "sh",
                    "-c",
                    &format!("echo 2 > /sys/class/net/{dev}/queues/rx-0/rps_cpus"),
                ])
            };
            set(&br, port).map_err(e)?;
            set(ns, "eth0").map_err(e)?;
        }
    }
    Ok(Env {
        a,
        b,
        _bridge: Some(br),
        vs: None,
        _dir: None,
    })
}

fn vswitchd_taps(o: &Opts) -> Result<Env> {
    let (a, b) = containers()?;
    let dir = TempDir::new("vsk");
    let config = format!(
        r#"{header}
[[port]]
name = "a"
kind = "tap"
bridge = "b"
netns = "{na}"
mac = "02:00:00:00:0c:01"
ipv4 = "{IP_A}/24"

[[port]]
name = "b"
kind = "tap"
bridge = "b"
netns = "{nb}"
mac = "02:00:00:00:0c:02"
ipv4 = "{IP_B}/24"
"#,
        header = Vswitchd::config_header(&dir, 512, "b"),
        na = a.name(),
        nb = b.name(),
    );
    let vs = Vswitchd::start(&o.vswitchd, &dir, &config).map_err(|e| anyhow!(e))?;
    Ok(Env {
        a,
        b,
        _bridge: None,
        vs: Some(vs),
        _dir: Some(dir),
    })
}

fn iperf_server(b: &Netns) -> Result<Proc> {
    server(
        b,
        "iperf3-server",
        &["iperf3", "-s", "-1", "-B", IP_B],
        "Server listening",
    )
}

/// TCP: Gbit/s received, and the bytes (for CPU time per GB).
fn tcp(env: &Env, streams: u32, secs: u64) -> Result<(Sample, f64)> {
    let _srv = iperf_server(&env.b)?;
    let mut c = pinned(&env.a, "iperf3");
    c.args([
        "-c",
        IP_B,
        "-t",
        &secs.to_string(),
        "-P",
        &streams.to_string(),
        "-J",
    ]);
    let json: Value = serde_json::from_str(&client(c, secs)?).context("iperf3 -J output")?;
    let r = &json["end"]["sum_received"];
    let bytes = r["bytes"].as_f64().unwrap_or(0.0);
    let bps = r["bits_per_second"].as_f64().unwrap_or(0.0);
    if bytes == 0.0 {
        bail!("iperf3 TCP moved nothing: {json}");
    }
    Ok((vec![("Gbit/s", bps / 1e9)], bytes))
}

/// UDP 18-byte datagrams at full speed: kpps sent and received.
fn udp(env: &Env, streams: u32, secs: u64) -> Result<Sample> {
    let _srv = iperf_server(&env.b)?;
    let mut c = pinned(&env.a, "iperf3");
    c.args([
        "-c",
        IP_B,
        "-u",
        "-l",
        "18",
        "-b",
        "0",
        "-t",
        &secs.to_string(),
    ])
    .args(["-P", &streams.to_string(), "-J"]);
    let json: Value = serde_json::from_str(&client(c, secs)?).context("iperf3 -J output")?;
    let sum = &json["end"]["sum"];
    let (pk, lost, s) = (
        sum["packets"].as_f64().unwrap_or(0.0),
        sum["lost_packets"].as_f64().unwrap_or(0.0),
        sum["seconds"].as_f64().unwrap_or(1.0),
    );
    if pk == 0.0 {
        bail!("iperf3 UDP sent nothing: {json}");
    }
    Ok(vec![
        ("kpps sent", pk / s / 1e3),
        ("kpps rcvd", (pk - lost) / s / 1e3),
    ])
}

/// The number after `key` on the first line that has it.
fn after(text: &str, key: &str) -> Result<f64> {
    text.lines()
        .find_map(|l| {
            let rest = &l[l.find(key)? + key.len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .ok_or_else(|| anyhow!("no {key:?} in:\n{text}"))
}

/// p50, p99 and p99.9 of a sockperf ping-pong run's output.
fn percentiles(pp: &str) -> Result<Sample> {
    Ok(vec![
        ("p50 us", after(pp, "percentile 50.000 =")?),
        ("p99 us", after(pp, "percentile 99.000 =")?),
        ("p99.9 us", after(pp, "percentile 99.900 =")?),
    ])
}

fn ping_pong(env: &Env, secs: u64) -> Result<Sample> {
    let _srv = server(
        &env.b,
        "sockperf-server",
        &["sockperf", "sr", "-i", IP_B, "-p", "11111"],
        "listen on",
    )?;
    let mut c = pinned(&env.a, "sockperf");
    c.args([
        "pp",
        "-i",
        IP_B,
        "-p",
        "11111",
        "-m",
        "18",
        "-t",
        &secs.to_string(),
    ]);
    let pp = client(c, secs)?;
    percentiles(&pp)
}

/// redis-benchmark's CSV: per test, rps, average and p99 latency (ms).
fn redis(env: &Env, secs: u64) -> Result<(Sample, Sample)> {
    let _srv = server(
        &env.b,
        "redis-server",
        &[
            "redis-server",
            "--bind",
            IP_B,
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ],
        "Ready to accept connections",
    )?;
    // About `secs` seconds per test at the rates this machine reaches.
    let n = (secs * 30_000).to_string();
    let mut c = pinned(&env.a, "redis-benchmark");
    c.args([
        "-h", IP_B, "-p", "6379", "-t", "set,get", "-d", "1024", "-c", "50",
    ])
    .args(["-P", "1", "-n", &n, "--csv"]);
    let out = client(c, secs * 4)?;
    let row = |test: &str| -> Result<Sample> {
        let l = out
            .lines()
            .find(|l| l.starts_with(&format!("\"{test}\"")))
            .ok_or_else(|| anyhow!("no {test} row in redis-benchmark output:\n{out}"))?;
        let v: Vec<f64> = l
            .split(',')
            .skip(1)
            .filter_map(|x| x.trim_matches('"').parse().ok())
            .collect();
        // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
        // "p95_latency_ms","p99_latency_ms","max_latency_ms"
        if v.len() < 6 {
            bail!("short redis-benchmark row: {l}");
        }
        Ok(vec![
            ("kQPS", v[0] / 1e3),
            ("avg ms", v[1]),
            ("p99 ms", v[5]),
        ])
    };
    Ok((row("SET")?, row("GET")?))
}

/// Runs one test in `env`, adding CPU and worker figures; one sample per
/// workload of the test.
fn measure(env: &Env, t: Test, secs: u64) -> Result<Vec<Sample>> {
    let base = match &env.vs {
        Some(vs) => Some(worker_clear(vs)?),
        None => None,
    };
    let c0 = cpu_times();
    let (w0, t0) = (wakeup_counts(), std::time::Instant::now());
    let (mut samples, gb) = match t {
        Test::Tcp(n) => {
            let (s, bytes) = tcp(env, n, secs)?;
            (vec![s], bytes / 1e9)
        }
        Test::Udp(n) => (vec![udp(env, n, secs)?], 0.0),
        Test::PingPong => (vec![ping_pong(env, secs)?], 0.0),
        Test::Redis => {
            let (set, get) = redis(env, secs)?;
            (vec![set, get], 0.0)
        }
    };
    let cpu = cpu_use(c0, cpu_times());
    let (w1, secs_taken) = (wakeup_counts(), t0.elapsed().as_secs_f64());
    let worker = match (&env.vs, base) {
        (Some(vs), Some(b)) => Some(worker_read(vs, b)?),
        _ => None,
    };
    for s in &mut samples {
        s.push(("CPU0 %", cpu.pct[0]));
        s.push(("CPU1 %", cpu.pct[1]));
        s.push(("IPIs to CPU0 k/s", (w1.0 - w0.0) as f64 / secs_taken / 1e3));
        s.push(("ctx sw k/s", (w1.1 - w0.1) as f64 / secs_taken / 1e3));
        if gb > 0.0 {
            s.push(("CPU0 s/GB", cpu.secs[0] / gb));
            s.push(("CPU1 s/GB", cpu.secs[1] / gb));
        }
        if let Some(w) = &worker {
            if w.packets > 0.0 {
                s.push(("cyc/frame", w.cycles / w.packets));
                s.push(("syscalls/frame", w.syscalls / w.packets));
            }
            if w.bytes > 0.0 {
                s.push(("cyc/byte", w.cycles / w.bytes));
            }
        }
    }
    Ok(samples)
}

/// The floor of any design that hands frames between the two CPUs:
/// sockperf ping-pong over one namespace's loopback, client on CPU 0,
/// server on CPU 1, so every round trip wakes a sleeping task on the other
/// CPU twice and does nothing else.
fn cross_cpu_floor(secs: u64) -> Result<Sample> {
    let ns = Netns::create(&testbed::unique("vkLo")).map_err(|e| anyhow!(e))?;
    let mut srv = ns.command("taskset");
    srv.args([
        "-c",
        "1",
        "stdbuf",
        "-oL",
        "sockperf",
        "sr",
        "-i",
        "127.0.0.1",
        "-p",
        "11112",
    ]);
    let mut p = Proc::spawn("sockperf-server", srv).context("sockperf server")?;
    if !p.wait_for_line(Duration::from_secs(10), |l| l.contains("listen on")) {
        p.dump();
        bail!("sockperf server did not start");
    }
    let mut c = pinned(&ns, "sockperf");
    c.args([
        "pp",
        "-i",
        "127.0.0.1",
        "-p",
        "11112",
        "-m",
        "18",
        "-t",
        &secs.to_string(),
    ]);
    let pp = client(c, secs)?;
    percentiles(&pp)
}

/// The system name of [`cross_cpu_floor`]'s rows.
const FLOOR: &str = "loopback, client CPU 0, server CPU 1 (2 cross-CPU wakeups, no switch)";

fn set_up(t: Topology, o: &Opts) -> Result<Env> {
    match t {
        Topology::Bridge => linux_bridge(false),
        Topology::BridgeRps => linux_bridge(true),
        Topology::Vswitchd => vswitchd_taps(o),
    }
}

/// Runs harness K; `command` is what reproduces it.
pub fn run(o: &Opts, command: &str) -> Result<Section> {
    let mut sec = Section::new(
        "K",
        "kernel-stack containers: vswitchd TAP NICs vs veth + Linux bridge",
        command,
        COLUMNS,
    );
    sec.notes = vec![
        format!(
            "Apps pinned to CPU {APP_CPU} in every topology; vswitchd's worker polls CPU {}. The plain \
             bridge forwards in softirq on the sender's CPU; with RPS the receive side runs on CPU 1.",
            crate::SWITCH_CPU
        ),
        format!(
            "{} rounds, each measuring every topology in turn; a row is the round with the median of \
             its workload's key figure (Gbit/s, kpps rcvd, p50, kQPS), spread % is (max - min) / median \
             of it. {} s per test. TCP: iperf3 -P 1 / 4. UDP: iperf3 -u -l 18 -b 0 -P 1 / 10. \
             Ping-pong: sockperf pp, 18-byte messages, blocking sockets. KV: redis-server and \
             redis-benchmark -d 1024 -c 50 -P 1.",
            o.rounds, o.seconds
        ),
        "CPU % is each CPU's busy share during the test (/proc/stat); s/GB is its busy seconds per GB \
         received. cyc/frame and cyc/byte are the worker's busy cycles (syscalls included) per frame \
         and per byte it received (a TCP superframe is one frame); syscalls/frame counts its TAP reads \
         (empty ones included) and writes."
            .into(),
        "IPIs to CPU 0 are its rescheduling and function-call interrupts (/proc/interrupts): what waking a \
         task there from CPU 1 costs; ctx sw counts context switches on both CPUs (/proc/stat)."
            .into(),
        format!("The ping-pong row \"{FLOOR}\" is the floor of any design that moves frames between the CPUs."),
        "Ratios are vswitchd / each bridge: above 1 is better for rates, below 1 for latencies.".into(),
    ];
    let mut rounds: Vec<(String, &'static str, Rounds<Sample>)> = Test::ALL
        .iter()
        .flat_map(|t| {
            t.workloads()
                .into_iter()
                .map(|w| (w, t.key(), Rounds::default()))
        })
        .collect();
    for _ in 0..o.rounds {
        for topo in Topology::ALL {
            let env = set_up(topo, o).with_context(|| topo.system())?;
            for t in Test::ALL {
                let samples = measure(&env, t, o.seconds)
                    .with_context(|| format!("{} {t:?}", topo.system()))?;
                for (w, s) in t.workloads().into_iter().zip(samples) {
                    let r = rounds
                        .iter_mut()
                        .find(|r| r.0 == w)
                        .expect("known workload");
                    r.2.push(topo.system(), s);
                }
            }
            if let Some(vs) = env.vs {
                vs.stop();
            }
        }
        let pp = Test::PingPong.workloads().remove(0);
        let r = rounds.iter_mut().find(|r| r.0 == pp).expect("ping-pong");
        r.2.push(
            FLOOR,
            cross_cpu_floor(o.seconds).context("cross-CPU floor")?,
        );
    }
    for (workload, key, r) in rounds {
        let get = |s: &Sample| s.iter().find(|(c, _)| *c == key).map_or(0.0, |(_, v)| *v);
        for m in r.medians(get) {
            let mut values = m.sample.clone();
            values.push(("spread %", m.spread));
            sec.row(
                &workload,
                &m.system,
                &values,
                &format!("{key} {}", m.rounds_note()),
            );
        }
    }
    for t in Test::ALL {
        for w in t.workloads() {
            for col in t.ratio_columns() {
                sec.ratios_against_all(&w, Topology::Vswitchd.system(), col);
            }
        }
    }
    Ok(sec)
}
