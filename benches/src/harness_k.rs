//! Harness K, kernel-stack containers: the baseline of the multi-NIC
//! design. Two network namespaces talk UDP over
//!
//! - veth pairs into a Linux bridge (in a namespace of its own), the
//!   classic container network, and
//! - vswitchd TAP NICs, one per namespace (eth0, same addresses), with the
//!   worker polling on CPU 1.
//!
//! In both, the sender and the receiver are pinned to CPU 0 (`taskset`),
//! so the traffic apps never share vswitchd's worker core and the two
//! topologies give the apps the same CPU. Tests: iperf3 UDP with 18-byte
//! payloads (60-byte frames) for pps sent and received, sockperf
//! throughput (msg/s) and sockperf ping-pong round-trip latency
//! percentiles.

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
    /// Rounds (both topologies once per round; the median is reported).
    pub rounds: usize,
    /// The vswitchd binary.
    pub vswitchd: PathBuf,
}

const IP_A: &str = "10.20.0.1";
const IP_B: &str = "10.20.0.2";
const COLUMNS: &[&str] = &[
    "iperf3 kpps sent",
    "iperf3 kpps rcvd",
    "spread %",
    "sockperf tp kmsg/s",
    "RTT p50 us",
    "RTT p99 us",
    "RTT p99.9 us",
];
const APP_CPU: &str = "0";

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

/// Runs a client to completion (bounded by its own -t plus a margin).
fn client(mut c: Command, secs: u64) -> Result<String> {
    let name = format!("{c:?}");
    let mut p = {
        c.stdin(std::process::Stdio::null());
        Proc::spawn("client", c).with_context(|| name.clone())?
    };
    let code = p.wait_exit(Duration::from_secs(secs + 20));
    let out = p.output().join("\n");
    if code != Some(0) {
        bail!("{name} failed ({code:?}):\n{out}");
    }
    Ok(out)
}

struct Figures {
    sent_kpps: f64,
    rcvd_kpps: f64,
    tp_kmsgs: f64,
    p50: f64,
    p99: f64,
    p999: f64,
}

fn measure(a: &Netns, b: &Netns, secs: u64) -> Result<Figures> {
    let t = secs.to_string();
    // iperf3: UDP, 18-byte payload, unlimited rate.
    let srv = server(
        b,
        "iperf3-server",
        &["iperf3", "-s", "-1", "-B", IP_B],
        "Server listening",
    )?;
    let mut c = pinned(a, "iperf3");
    c.args(["-c", IP_B, "-u", "-l", "18", "-b", "0", "-t", &t, "-J"]);
    let json: Value = serde_json::from_str(&client(c, secs)?).context("iperf3 -J output")?;
    drop(srv);
    let sum = &json["end"]["sum"];
    let (pk, lost, s) = (
        sum["packets"].as_f64().unwrap_or(0.0),
        sum["lost_packets"].as_f64().unwrap_or(0.0),
        sum["seconds"].as_f64().unwrap_or(1.0),
    );
    if pk == 0.0 {
        bail!("iperf3 sent nothing: {json}");
    }
    // sockperf: throughput, then ping-pong latency.
    let srv = server(
        b,
        "sockperf-server",
        &["sockperf", "sr", "-i", IP_B, "-p", "11111"],
        "listen on",
    )?;
    let mut c = pinned(a, "sockperf");
    c.args(["tp", "-i", IP_B, "-p", "11111", "-m", "18", "-t", &t]);
    let tp = client(c, secs)?;
    let mut c = pinned(a, "sockperf");
    c.args(["pp", "-i", IP_B, "-p", "11111", "-m", "18", "-t", &t]);
    let pp = client(c, secs)?;
    drop(srv);
    let after = |text: &str, key: &str| -> Option<f64> {
        text.lines().find_map(|l| {
            let rest = &l[l.find(key)? + key.len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
    };
    let get = |text: &str, key: &str| {
        after(text, key).ok_or_else(|| anyhow!("no {key:?} in sockperf output:\n{text}"))
    };
    Ok(Figures {
        sent_kpps: pk / s / 1e3,
        rcvd_kpps: (pk - lost) / s / 1e3,
        tp_kmsgs: get(&tp, "Message Rate is")? / 1e3,
        p50: get(&pp, "percentile 50.000 =")?,
        p99: get(&pp, "percentile 99.000 =")?,
        p999: get(&pp, "percentile 99.900 =")?,
    })
}

/// Two namespaces with eth0 at IP_A / IP_B, or an error.
fn containers() -> Result<(Netns, Netns)> {
    let a = Netns::create(&testbed::unique("vkA")).map_err(|e| anyhow!(e))?;
    let b = Netns::create(&testbed::unique("vkB")).map_err(|e| anyhow!(e))?;
    Ok((a, b))
}

fn linux_bridge(secs: u64) -> Result<Figures> {
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
    }
    measure(&a, &b, secs)
}

fn vswitchd_taps(o: &Opts) -> Result<Figures> {
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
    let f = measure(&a, &b, o.seconds);
    vs.stop();
    f
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
            "Sender and receiver pinned to CPU {APP_CPU} in both topologies; vswitchd's worker polls CPU {}. \
             The Linux bridge forwards in softirq on the sender's CPU.",
            crate::SWITCH_CPU
        ),
        format!(
            "{} rounds, the row is the round with the median iperf3 kpps received, spread % is \
             (max - min) / median of it. {} s per test. iperf3 -u -l 18 -b 0 (60-byte frames); sockperf tp and pp with 18-byte \
             messages, blocking sockets, both ends on one CPU.",
            o.rounds,
            o.seconds
        ),
        "Ratios are vswitchd / Linux bridge: above 1 is better for rates, below 1 is better for RTT.".into(),
    ];
    let workload = "UDP 18 B, netns <-> netns";
    let mut rounds = Rounds::default();
    for _ in 0..o.rounds {
        rounds.push(
            "veth + Linux bridge",
            linux_bridge(o.seconds).context("Linux bridge")?,
        );
        rounds.push(
            "vswitchd TAP NICs",
            vswitchd_taps(o).context("vswitchd TAP NICs")?,
        );
    }
    for r in rounds.medians(|f| f.rcvd_kpps) {
        let (f, spread) = (&r.sample, r.spread);
        sec.row(
            workload,
            &r.system,
            &[
                ("iperf3 kpps sent", f.sent_kpps),
                ("spread %", spread),
                ("iperf3 kpps rcvd", f.rcvd_kpps),
                ("sockperf tp kmsg/s", f.tp_kmsgs),
                ("RTT p50 us", f.p50),
                ("RTT p99 us", f.p99),
                ("RTT p99.9 us", f.p999),
            ],
            &format!("kpps rcvd {}", r.rounds_note()),
        );
    }
    for col in ["iperf3 kpps rcvd", "sockperf tp kmsg/s", "RTT p50 us"] {
        sec.ratios_against_all(workload, "vswitchd TAP NICs", col);
    }
    Ok(sec)
}
