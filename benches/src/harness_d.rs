//! Harness D, density: how long plugging a kernel container's NIC takes,
//! from the runtime's CNI ADD until the first packet through the new NIC
//! comes back, against the reference `bridge` CNI plugin (a veth into a
//! Linux bridge, the classic container network) doing the same.
//!
//! For each plugin: a peer container is added first (not measured); then
//! each measured container is created (`ip netns add`, not measured), the
//! plugin runs ADD for it (host-local IPAM in both), and the new container
//! pings the peer (`ping -c 1 -W 1`, repeated until one answer comes back,
//! at most 10 s): ADD + ping is the time from the plugin's start to that
//! answer. Then DEL runs (measured alone). Sequentially (each container
//! added, pinged and deleted before the next), and concurrently (all
//! containers created, then every ADD + ping started at once, as a node
//! starting many pods; then every DEL at once).
//!
//! Runtimes call plugins as processes, so every figure includes one
//! process start of the plugin (and host-local's, which it calls).
//!
//! Idle ports: what ports without traffic cost a worker. One worker
//! forwards a `net_pcap` generator (1k UDP flows, `infinite_rx`) to a
//! `net_null` sink, alone and with idle ports beside them in the same
//! bridge (`net_null` ethdevs without rx; TAP NICs each in a container of
//! its own, whose link is up and which send nothing; vhost-user NICs,
//! some with a DPDK container attached: one testpmd whose virtio-user
//! ports are started and do not send). Every round of that worker brings
//! a full burst of 32 frames, so the cost of an idle port per round is 32
//! x the growth of the worker's busy cycles per frame, divided by the
//! idle ports.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use testbed::netns::Netns;
use testbed::testpmd::Testpmd;
use testbed::vswitchd::{TempDir, Vswitchd};

use crate::report::Section;
use crate::rounds::Rounds;
use crate::workload::{Workload, DST_MAC};

/// What to run.
#[derive(Debug, Clone)]
pub struct Opts {
    /// The vswitchd binary.
    pub vswitchd: PathBuf,
    /// The vswitch-cni binary.
    pub cni: PathBuf,
    /// Containers added one after another.
    pub sequential: usize,
    /// Containers added at once.
    pub concurrent: usize,
    /// Where the workload pcap goes.
    pub pcap_dir: PathBuf,
    /// Rounds of the idle-port rows (each configuration once per round).
    pub rounds: usize,
    /// Warm-up and window of each idle-port measurement.
    pub warmup: Duration,
    /// See `warmup`.
    pub window: Duration,
    /// Idle container NICs beside the two active ports (498: 500 NICs),
    /// half TAPs, half vhost-user.
    pub idle_nics: usize,
}

const COLUMNS: &[&str] = &[
    "Mpps",
    "spread %",
    "own cycles/pkt",
    "cycles per idle port per round",
    "heap KB per idle port",
    "hugepage KB per idle port",
    "ADD+ping p50 ms",
    "ADD+ping p99 ms",
    "ADD+ping max ms",
    "ADD p50 ms",
    "DEL p50 ms",
    "DEL p99 ms",
    "DEL max ms",
];

/// The reference plugins' directory (containernetworking-plugins).
const CNI_PATH: &str = "/usr/lib/cni";

/// One plugin under test: how to call it, its network config, and when
/// the NIC it plugs is ready.
struct Plugin {
    name: &'static str,
    binary: PathBuf,
    conf: Value,
    ready: Ready,
}

/// When a plugged NIC counts as ready.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ready {
    /// A kernel container's: its first ping to the peer is answered.
    Ping,
    /// A DPDK container's: the switch answers a vhost-user request
    /// (`VHOST_USER_GET_FEATURES`) on the socket the result names, so a
    /// virtio-user device can attach (how long the container's DPDK takes
    /// to start is its own).
    Socket,
}

/// Runs `cmd` of `p` for container `id` in `ns`; the plugin's answer.
fn call(p: &Plugin, cmd: &str, ns: &Netns, id: &str) -> Result<Value> {
    let mut c = Command::new(&p.binary);
    c.env_clear()
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_PATH)
        .env("CNI_NETNS", format!("/var/run/netns/{}", ns.name()))
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .with_context(|| format!("running {}", p.binary.display()))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped");
        // DEL may answer before reading its stdin.
        let _ = stdin.write_all(p.conf.to_string().as_bytes());
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} {cmd} for {id}: {text} {}",
            p.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)?
    })
}

fn address(result: &Value) -> Result<String> {
    let a = result["ips"][0]["address"]
        .as_str()
        .ok_or_else(|| anyhow!("no address in {result}"))?;
    Ok(a.split('/').next().unwrap_or(a).to_string())
}

/// Pings `peer` from `ns` until one answer comes back (at most 10 s).
fn first_ping(ns: &Netns, peer: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let ok = ns
            .command("ping")
            .args(["-c", "1", "-W", "1", "-q", peer])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
    }
    bail!("no answer from {peer} in 10 s")
}

/// Per container: ADD + first ping, ADD alone, DEL (seconds).
#[derive(Default)]
struct Times {
    add_ping: Vec<f64>,
    add: Vec<f64>,
    del: Vec<f64>,
}

/// Asks the vhost-user socket of `result` for its features until it
/// answers (at most 10 s): a vhost-user message header (request 1,
/// GET_FEATURES; flags 1, protocol version 1; no payload), answered by a
/// header and a u64.
fn first_answer(result: &Value) -> Result<()> {
    use std::io::{Read, Write};
    let path = result["interfaces"]
        .as_array()
        .and_then(|i| i.iter().find_map(|i| i["socketPath"].as_str()))
        .ok_or_else(|| anyhow!("no socketPath in {result}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut request = [0u8; 12];
    request[0] = 1;
    request[4] = 1;
    loop {
        let answered = std::os::unix::net::UnixStream::connect(path).and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(1)))?;
            c.write_all(&request)?;
            let mut reply = [0u8; 20];
            c.read_exact(&mut reply)?;
            Ok(reply[0] == 1)
        });
        if answered.unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("vhost-user socket {path} did not answer in 10 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// ADD and the first proof that the NIC works (see [`Ready`]) for one
/// container; its ADD time and total.
fn plug(p: &Plugin, ns: &Netns, id: &str, peer: &str) -> Result<(f64, f64)> {
    let t0 = Instant::now();
    let result = call(p, "ADD", ns, id)?;
    let add = t0.elapsed().as_secs_f64();
    match p.ready {
        Ready::Ping => first_ping(ns, peer),
        Ready::Socket => first_answer(&result),
    }
    .with_context(|| format!("{} container {id}", p.name))?;
    Ok((add, t0.elapsed().as_secs_f64()))
}

fn unplug(p: &Plugin, ns: &Netns, id: &str) -> Result<f64> {
    let t0 = Instant::now();
    call(p, "DEL", ns, id)?;
    Ok(t0.elapsed().as_secs_f64())
}

fn sequential(p: &Plugin, n: usize, peer: &str) -> Result<Times> {
    let mut t = Times::default();
    for i in 0..n {
        let ns = Netns::create(&testbed::unique("vdS")).map_err(|e| anyhow!(e))?;
        let id = format!("seq-{i}");
        let (add, total) = plug(p, &ns, &id, peer)?;
        t.add.push(add);
        t.add_ping.push(total);
        t.del.push(unplug(p, &ns, &id)?);
    }
    Ok(t)
}

fn concurrent(p: &Plugin, n: usize, peer: &str) -> Result<Times> {
    let nss: Vec<Netns> = (0..n)
        .map(|_| Netns::create(&testbed::unique("vdC")).map_err(|e| anyhow!(e)))
        .collect::<Result<_>>()?;
    let mut t = Times::default();
    let plugged: Vec<Result<(f64, f64)>> = std::thread::scope(|s| {
        let hs: Vec<_> = nss
            .iter()
            .enumerate()
            .map(|(i, ns)| s.spawn(move || plug(p, ns, &format!("con-{i}"), peer)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("thread panicked"))))
            .collect()
    });
    for r in plugged {
        let (add, total) = r?;
        t.add.push(add);
        t.add_ping.push(total);
    }
    let unplugged: Vec<Result<f64>> = std::thread::scope(|s| {
        let hs: Vec<_> = nss
            .iter()
            .enumerate()
            .map(|(i, ns)| s.spawn(move || unplug(p, ns, &format!("con-{i}"))))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("thread panicked"))))
            .collect()
    });
    for r in unplugged {
        t.del.push(r?);
    }
    Ok(t)
}

/// The `q` quantile (0..=1) of `v`, in milliseconds (nearest rank).
fn ms(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return 0.0;
    }
    let i = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    1000.0 * s[i]
}

fn row(sec: &mut Section, workload: &str, system: &str, t: &Times, note: &str) {
    sec.row(
        workload,
        system,
        &[
            ("ADD+ping p50 ms", ms(&t.add_ping, 0.5)),
            ("ADD+ping p99 ms", ms(&t.add_ping, 0.99)),
            ("ADD+ping max ms", ms(&t.add_ping, 1.0)),
            ("ADD p50 ms", ms(&t.add, 0.5)),
            ("DEL p50 ms", ms(&t.del, 0.5)),
            ("DEL p99 ms", ms(&t.del, 0.99)),
            ("DEL max ms", ms(&t.del, 1.0)),
        ],
        note,
    );
}

fn ipam(dir: &Path, subnet: &str) -> Value {
    json!({ "type": "host-local", "subnet": subnet, "dataDir": dir.join("ipam") })
}

/// What one idle-port configuration did.
#[derive(Clone, Default)]
struct Forwarded {
    mpps: f64,
    /// The worker's busy cycles per frame.
    cycles: f64,
    /// vswitchd's anonymous resident memory (heap; hugepages are not in
    /// it), KB.
    heap_kb: u64,
    /// Bytes in use in DPDK's hugepage heap (mbuf pools, the vhost
    /// library's devices), KB.
    hugepage_kb: u64,
}

/// `RssAnon` of process `pid`, KB.
fn rss_anon_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no RssAnon in /proc/{pid}/status"))
}

/// The idle ports of one configuration.
#[derive(Clone, Copy)]
struct Idle {
    /// net_null ethdevs without rx.
    null: usize,
    /// TAP NICs, each in a container of its own.
    tap: usize,
    /// vhost-user NICs.
    vhost: usize,
    /// Of those, how many have a DPDK container attached (one testpmd
    /// with that many virtio-user ports, at most 30: its ethdev table).
    guests: usize,
}

impl Idle {
    fn ports(&self) -> usize {
        self.null + self.tap + self.vhost
    }
}

/// One worker forwarding the generator to the sink beside `idle` ports.
fn with_idle(o: &Opts, pcap: &Path, idle: Idle) -> Result<Forwarded> {
    let dir = TempDir::new("vsdi");
    let mut config = Vswitchd::config_header(&dir, 1024, "b");
    config += &format!(
        "[[port]]\nname = \"gen\"\nkind = \"pcap\"\nrx_pcap = \"{}\"\ninfinite_rx = true\nbridge = \"b\"\n\n\
         [[port]]\nname = \"sink\"\nkind = \"null\"\nno_rx = true\nbridge = \"b\"\nstatic_macs = [\"{}\"]\n\n",
        pcap.display(),
        DST_MAC.map(|b| format!("{b:02x}")).join(":"),
    );
    for i in 0..idle.null {
        config += &format!(
            "[[port]]\nname = \"n{i}\"\nkind = \"null\"\nno_rx = true\nbridge = \"b\"\n\n"
        );
    }
    let nss: Vec<Netns> = (0..idle.tap)
        .map(|_| Netns::create(&testbed::unique("vdI")).map_err(|e| anyhow!(e)))
        .collect::<Result<_>>()?;
    for (i, ns) in nss.iter().enumerate() {
        config += &format!(
            "[[port]]\nname = \"t{i}\"\nkind = \"tap\"\nnetns = \"{}\"\nbridge = \"b\"\nipv4 = \"10.96.{}.{}/16\"\n\n",
            ns.name(),
            i / 200,
            i % 200 + 1
        );
    }
    let socket = |i: usize| dir.path().join(format!("v{i}.sock"));
    for i in 0..idle.vhost {
        config += &format!(
            "[[port]]\nname = \"v{i}\"\nkind = \"vhost-user\"\nsocket = \"{}\"\nbridge = \"b\"\n\n",
            socket(i).display()
        );
    }
    let vs = Vswitchd::start(&o.vswitchd, &dir, &config).map_err(|e| anyhow!(e))?;
    let _guests = (idle.guests > 0)
        .then(|| -> Result<Testpmd> {
            let vdevs: Vec<String> = (0..idle.guests)
                .map(|i| {
                    format!(
                        "net_virtio_user{i},path={},mac=02:00:00:00:0d:{i:02x}",
                        socket(i).display()
                    )
                })
                .collect();
            let tp = Testpmd::spawn("idle-guests", &["--lcores", "0@0,1@0"], &vdevs, &[])
                .map_err(|e| anyhow!(e))?;
            // Attached: each port's guest device is ready on the switch.
            let deadline = Instant::now() + Duration::from_secs(20);
            for i in 0..idle.guests {
                while vs
                    .request(json!({"cmd": "port-show", "name": format!("v{i}")}))
                    .map_err(|e| anyhow!(e))?["link_up"]
                    != true
                {
                    if Instant::now() > deadline {
                        bail!("vhost-user port v{i}: no guest device after 20 s");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Ok(tp)
        })
        .transpose()?;
    let read = || -> Result<(u64, u64, u64)> {
        let s = vs
            .request(json!({"cmd": "stats"}))
            .map_err(|e| anyhow!(e))?;
        let sink = s["ports"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "sink"))
            .and_then(|p| p["tx_packets"].as_u64())
            .unwrap_or(0);
        let w = |k: &str| s["workers"][0][k].as_u64().unwrap_or(0);
        Ok((sink, w("busy_cycles"), w("packets")))
    };
    std::thread::sleep(o.warmup);
    let (s0, b0, p0, t0) = {
        let (s, b, p) = read()?;
        (s, b, p, Instant::now())
    };
    std::thread::sleep(o.window);
    let (s1, b1, p1) = read()?;
    let dt = t0.elapsed().as_secs_f64();
    let heap_kb = rss_anon_kb(vs.pid().ok_or_else(|| anyhow!("vswitchd exited"))?)?;
    let hugepage_kb = vs
        .request(json!({"cmd": "stats"}))
        .map_err(|e| anyhow!(e))?["hugepages"]["in_use_bytes"]
        .as_u64()
        .ok_or_else(|| anyhow!("no hugepage figure in stats"))?
        / 1024;
    vs.stop();
    let pkts = p1.saturating_sub(p0);
    if s1 <= s0 || pkts == 0 {
        bail!("nothing forwarded beside {} idle ports", idle.ports());
    }
    Ok(Forwarded {
        mpps: (s1 - s0) as f64 / dt / 1e6,
        cycles: b1.saturating_sub(b0) as f64 / pkts as f64,
        heap_kb,
        hugepage_kb,
    })
}

/// The idle-port rows: the two-port rate alone and beside idle ports.
fn idle_rows(o: &Opts, sec: &mut Section) -> Result<()> {
    let pcap = Workload::Udp4 { flows: 1024 }.write_to(&o.pcap_dir)?;
    let guests = 30.min(o.idle_nics / 2);
    let mixed = format!(
        "2 ports + {} idle TAP + {} idle vhost-user NICs ({} NICs; {guests} vhost-user with a DPDK guest)",
        o.idle_nics - o.idle_nics / 2,
        o.idle_nics / 2,
        o.idle_nics + 2
    );
    let attached = format!("2 ports + {guests} idle vhost-user NICs, each with a DPDK guest");
    let none = Idle {
        null: 0,
        tap: 0,
        vhost: 0,
        guests: 0,
    };
    let configs: [(&str, Idle); 4] = [
        ("2 ports, none idle", none),
        (
            "2 ports + 30 idle net_null ethdevs",
            Idle { null: 30, ..none },
        ),
        (
            &attached,
            Idle {
                vhost: guests,
                guests,
                ..none
            },
        ),
        (
            &mixed,
            Idle {
                tap: o.idle_nics - o.idle_nics / 2,
                vhost: o.idle_nics / 2,
                guests,
                ..none
            },
        ),
    ];
    let workload = "one worker, 2 active ports beside idle ones";
    let mut rounds = Rounds::default();
    for _ in 0..o.rounds {
        for (name, idle) in configs {
            rounds.push(
                name,
                with_idle(o, &pcap, idle).with_context(|| name.to_string())?,
            );
        }
    }
    let medians = rounds.medians(|f: &Forwarded| f.mpps);
    let (base, base_heap, base_huge) = medians
        .iter()
        .find(|r| r.system == configs[0].0)
        .map_or((0.0, 0, 0), |r| {
            (r.sample.cycles, r.sample.heap_kb, r.sample.hugepage_kb)
        });
    for r in &medians {
        let idle = configs
            .iter()
            .find(|c| c.0 == r.system)
            .map_or(0, |c| c.1.ports());
        let mut v = vec![
            ("Mpps", r.sample.mpps),
            ("spread %", r.spread),
            ("own cycles/pkt", r.sample.cycles),
        ];
        if idle > 0 {
            v.push((
                "cycles per idle port per round",
                32.0 * (r.sample.cycles - base) / idle as f64,
            ));
            v.push((
                "heap KB per idle port",
                r.sample.heap_kb.saturating_sub(base_heap) as f64 / idle as f64,
            ));
            v.push((
                "hugepage KB per idle port",
                r.sample.hugepage_kb.saturating_sub(base_huge) as f64 / idle as f64,
            ));
        }
        sec.row(workload, &r.system, &v, &r.rounds_note());
    }
    sec.ratios_against_all(workload, &mixed, "Mpps");
    sec.ratios_against_all(workload, "2 ports + 30 idle net_null ethdevs", "Mpps");
    Ok(())
}

/// Runs harness D; `command` is what reproduces it.
pub fn run(o: &Opts, command: &str) -> Result<Section> {
    let mut sec = Section::new(
        "D",
        "density: idle ports beside two active ones, and plugging a container's NIC (CNI ADD until the first ping, or until its vhost-user socket answers)",
        command,
        COLUMNS,
    );
    sec.notes = vec![
        "Per plugin: a peer container first (not measured), then each container: `ip netns add` (not \
         measured), the plugin's ADD (host-local IPAM), and `ping -c 1 -W 1` to the peer from the new \
         container, repeated until an answer: ADD+ping is the time from the plugin's start to that \
         answer. DEL measured alone. Sequential: one container at a time (added, pinged, deleted). \
         Concurrent: every ADD+ping started at once (threads), then every DEL."
            .into(),
        "vswitchd: vswitch-cni with a TAP NIC (`nic = \"tap\"`), one worker on CPU 1; Linux bridge: the \
         reference `bridge` plugin (containernetworking-plugins), a veth into bridge cnibr-d. Each \
         figure includes the plugin's process start, as runtimes call it. vhost-user NIC: the same \
         plugin with `nic = \"vhost-user\"`; ready when its socket answers a vhost-user GET_FEATURES \
         request (the ADD+ping columns), so that a DPDK container can attach."
            .into(),
        "Idle ports: one worker (CPU 1) forwards a net_pcap generator (1k UDP flows) to a net_null sink, \
         alone and beside idle ports of the same bridge; Mpps is the sink's rate over the window, own \
         cycles/pkt the worker's busy cycles per frame; vhost-user NICs with a DPDK guest: one testpmd with \
         that many virtio-user ports, started, not forwarding; cycles per idle port per round = 32 x (own \
         cycles/pkt - the 2-port row's) / idle ports (every round brings a full burst of 32); heap KB per \
         idle port = (vswitchd's RssAnon - the 2-port row's) / idle ports (hugepages are not in it); \
         hugepage KB per idle port likewise from DPDK's hugepage heap in use (`vswitchctl stats`: mbuf \
         pools, the vhost library's devices)."
            .into(),
    ];
    idle_rows(o, &mut sec)?;
    let dir = TempDir::new("vsd");
    let header = Vswitchd::config_header(&dir, 512, "vpc1");
    let vs = Vswitchd::start(&o.vswitchd, &dir, &header).map_err(|e| anyhow!(e))?;
    let plugins = [
        Plugin {
            name: "vswitchd (vswitch-cni, TAP NIC)",
            binary: o.cni.clone(),
            conf: json!({
                "cniVersion": "1.0.0",
                "name": "density-vs",
                "type": "vswitch-cni",
                "bridge": "vpc1",
                "controlSocket": Vswitchd::control_socket(&dir),
                "ipam": ipam(&dir.join("vs"), "10.97.0.0/16"),
            }),
            ready: Ready::Ping,
        },
        Plugin {
            name: "vswitchd (vswitch-cni, vhost-user NIC)",
            binary: o.cni.clone(),
            conf: json!({
                "cniVersion": "1.0.0",
                "name": "density-vu",
                "type": "vswitch-cni",
                "bridge": "vpc1",
                "nic": "vhost-user",
                "socketDir": dir.path().join("vu"),
                "controlSocket": Vswitchd::control_socket(&dir),
                "ipam": ipam(&dir.join("vu"), "10.99.0.0/16"),
            }),
            ready: Ready::Socket,
        },
        Plugin {
            name: "Linux bridge (bridge plugin, veth)",
            binary: PathBuf::from(CNI_PATH).join("bridge"),
            conf: json!({
                "cniVersion": "1.0.0",
                "name": "density-br",
                "type": "bridge",
                "bridge": "cnibr-d",
                "ipam": ipam(&dir.join("br"), "10.98.0.0/16"),
            }),
            ready: Ready::Ping,
        },
    ];
    for p in &plugins {
        let peer_ns = Netns::create(&testbed::unique("vdP")).map_err(|e| anyhow!(e))?;
        let peer = call(p, "ADD", &peer_ns, "peer")?;
        let peer = match p.ready {
            Ready::Ping => address(&peer)?,
            Ready::Socket => String::new(),
        };
        // The peer answers once its NIC is up (its own first ping: the
        // peer to itself through the stack is not what is measured).
        let seq = sequential(p, o.sequential, &peer)?;
        row(
            &mut sec,
            &format!("{} sequential ADDs", o.sequential),
            p.name,
            &seq,
            "",
        );
        let con = concurrent(p, o.concurrent, &peer)?;
        row(
            &mut sec,
            &format!("{} concurrent ADDs", o.concurrent),
            p.name,
            &con,
            "",
        );
        call(p, "DEL", &peer_ns, "peer")?;
    }
    let _ = Command::new("ip")
        .args(["link", "del", "cnibr-d"])
        .stderr(Stdio::null())
        .status();
    vs.stop();
    for w in [
        format!("{} sequential ADDs", o.sequential),
        format!("{} concurrent ADDs", o.concurrent),
    ] {
        sec.ratios_against_all(&w, "vswitchd (vswitch-cni, TAP NIC)", "ADD+ping p50 ms");
    }
    Ok(sec)
}
