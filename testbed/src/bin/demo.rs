//! The demo (README's first command): vswitchd on its embedded default
//! config (configs/demo.toml) with two kernel-stack containers on TAP NICs
//! and two DPDK containers (dpdk-testpmd on virtio-user). It shows what a
//! user would check first, with the commands it runs: the kernel
//! containers' ping, latency and data without loss; the DPDK containers'
//! lossless rate with each side's CPU share; a security group's verdicts
//! told by `vswitchctl trace`; the counters. Everything it creates is
//! removed when it ends.
//!
//! Usage: demo PATH/TO/vswitchd

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::netns::Netns;
use testbed::process::Proc;
use testbed::testpmd::{Testpmd, TestpmdOpts};
use testbed::vswitchd::Vswitchd;
use testbed::wait_until;

const CONTROL: &str = "/run/vswitchd/vswitchd.sock";
const D1: &str = "/run/vswitchd/demo/d1.sock";
const D2: &str = "/run/vswitchd/demo/d2.sock";
const MAC_D1: &str = "02:00:00:00:02:01";
const MAC_D2: &str = "02:00:00:00:02:02";
/// configs/demo.toml's state file: the demo starts from the config alone
/// and leaves no state behind.
const STATE: &str = "/run/vswitchd/demo/state.toml";
/// Frames the DPDK loop carries: 16 bursts of 32, half of what one of
/// its 1024-descriptor rings holds.
const IN_FLIGHT: u64 = 512;

/// The group the demo attaches to c2 at run time.
const GROUPS: &str = r#"[[security_group]]
name = "web"
default = "deny"
[[security_group.rule]]
name = "iperf"
priority = 100
action = "allow"
proto = "tcp"
dst_ports = "5201"
[[security_group.rule]]
name = "ping"
priority = 90
action = "allow"
proto = "icmp"
"#;

fn main() {
    let bin = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| "target/release/vswitchd".into());
    if let Err(e) = demo(&bin) {
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
}

fn step(s: &str) {
    println!("\n== {s}\n");
}

/// Runs vswitchctl (next to vswitchd) with `args`, printing the command
/// and what it printed.
fn ctl(bin: &Path, args: &[&str]) -> Result<String, String> {
    println!("$ vswitchctl {}", args.join(" "));
    let o = Command::new(bin.with_file_name("vswitchctl"))
        .args(["--socket", CONTROL])
        .args(args)
        .output()
        .map_err(|e| format!("vswitchctl: {e}"))?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    print!("{out}");
    if !o.status.success() {
        return Err(format!(
            "vswitchctl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(out)
}

/// Runs `args` in `ns`, printing the command.
fn run_in(ns: &Netns, args: &[&str]) -> Result<String, String> {
    println!("$ ip netns exec {} {}", ns.name(), args.join(" "));
    ns.exec(args)
}

/// CPU time a process has had (user + system), in seconds.
fn cpu_secs(pid: Option<u32>) -> f64 {
    let Some(stat) = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
    else {
        return 0.0;
    };
    // Fields after the command's closing parenthesis: utime is the 12th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11..13).map_or(0.0, |t| {
        t.iter().filter_map(|x| x.parse::<f64>().ok()).sum()
    });
    ticks / 100.0 // USER_HZ
}

fn demo(bin: &Path) -> Result<(), String> {
    step("two kernel-stack containers (netns vsd-c1, vsd-c2), vswitchd on configs/demo.toml");
    let c1 = Netns::create("vsd-c1")?;
    let c2 = Netns::create("vsd-c2")?;
    let _ = std::fs::remove_file(STATE);
    println!("$ vswitchd run");
    let vs = Vswitchd::spawn(bin, &["run"], Path::new(CONTROL))?;
    ctl(bin, &["show"])?;

    step("kernel containers: ping, latency and a TCP stream through their own NICs");
    let ping = run_in(&c1, &["ping", "-c", "5", "-i", "0.2", "10.10.0.2"])?;
    for l in ping
        .lines()
        .filter(|l| l.contains("transmitted") || l.contains("rtt"))
    {
        println!("{l}");
    }
    let mut server = c2.command("sockperf");
    server.args(["server", "-i", "10.10.0.2", "-p", "11111"]);
    let sockperf = Proc::spawn("sockperf server", server).map_err(|e| e.to_string())?;
    wait_until(Duration::from_secs(5), || {
        c2.exec(&["ss", "-uln", "sport", "= :11111"])
            .is_ok_and(|o| o.contains("11111"))
    });
    println!("$ ip netns exec vsd-c1 sockperf ping-pong -i 10.10.0.2 -p 11111 -t 3");
    // sockperf writes its summary to stdout or stderr by version.
    let lat = c1.exec(&[
        "sh",
        "-c",
        "sockperf ping-pong -i 10.10.0.2 -p 11111 -t 3 2>&1",
    ])?;
    if !lat.contains("percentile") {
        return Err(format!("sockperf: {lat}"));
    }
    for l in lat.lines().filter(|l| {
        l.contains("avg-latency")
            || l.contains("Summary: Latency")
            || l.contains("percentile 50.000")
            || l.contains("percentile 99.000")
    }) {
        let plain: String = l
            .split('\u{1b}')
            .map(|part| {
                part.find('m')
                    .filter(|_| part.starts_with('['))
                    .map_or(part, |i| &part[i + 1..])
            })
            .collect();
        println!("{}", plain.trim_start_matches("sockperf: ").trim());
    }
    drop(sockperf);
    let mut server = c2.command("iperf3");
    server.args(["-s", "-1", "-B", "10.10.0.2"]);
    let _iperf = Proc::spawn("iperf3 server", server).map_err(|e| e.to_string())?;
    wait_until(Duration::from_secs(5), || {
        c2.exec(&["ss", "-tln", "sport", "= :5201"])
            .is_ok_and(|o| o.contains("5201"))
    });
    let j = run_in(&c1, &["iperf3", "-c", "10.10.0.2", "-t", "3", "-J"])?;
    let j: Value = serde_json::from_str(&j).map_err(|e| format!("iperf3: {e}"))?;
    let (sent, got) = (&j["end"]["sum_sent"], &j["end"]["sum_received"]);
    println!(
        "TCP vsd-c1 -> vsd-c2 for 3 s: {:.2} Gbit/s, {} bytes sent, {} received, {} retransmitted segments",
        sent["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9,
        sent["bytes"],
        got["bytes"],
        sent["retransmits"]
    );

    step("DPDK containers: 512 frames looping d1 -> vswitchd -> d2 -> vswitchd -> d1 for 5 s");
    println!(
        "(testpmd macswap on both. On this 2-core VM vswitchd's worker has CPU 1 and both\n\
         testpmds busy-poll CPU 0 in turns: each holds the loop's frames for its time slice,\n\
         so the rate is what CPU 0 turns around, not what the switch can carry)"
    );
    let opts = |socket, mac, peer| TestpmdOpts {
        socket: Path::new(socket),
        mac,
        peer: Some(peer),
        fwd: "macswap",
        queue_size: Some(1024),
        ..Default::default()
    };
    for (sock, mac, peer) in [(D2, MAC_D2, MAC_D1), (D1, MAC_D1, MAC_D2)] {
        println!(
            "$ dpdk-testpmd --lcores 0@0,1@0 --no-pci --in-memory --single-file-segments \\\n    \
             --vdev net_virtio_user0,path={sock},mac={mac},queue_size=1024 \\\n    \
             -- -i --forward-mode=macswap --eth-peer=0,{peer}"
        );
    }
    let mut d2 = Testpmd::start("d2", &opts(D2, MAC_D2, MAC_D1))?;
    let mut d1 = Testpmd::start("d1", &opts(D1, MAC_D1, MAC_D2))?;
    if !wait_until(Duration::from_secs(20), || {
        vs.link_up("d1") && vs.link_up("d2")
    }) {
        return Err("the DPDK containers' NICs did not come up".into());
    }
    let drops_of = |s: &Value, port: &str| -> u64 {
        s["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["name"] == port)
            .flat_map(|p| p["drops"].as_object().into_iter().flatten())
            .filter_map(|(_, v)| v.as_u64())
            .sum()
    };
    println!("testpmd d2> start");
    d2.cmd("start");
    let before = vs.request(serde_json::json!({"cmd": "stats"}))?;
    vs.request(serde_json::json!({"cmd": "pmd-perf", "clear": true}))?;
    let (cpu1, cpu2) = (cpu_secs(d1.pid()), cpu_secs(d2.pid()));
    let t0 = Instant::now();
    println!("testpmd d1> start tx_first {}", IN_FLIGHT / 32);
    d1.cmd(&format!("start tx_first {}", IN_FLIGHT / 32));
    std::thread::sleep(Duration::from_secs(5)); // the measurement window
    let secs = t0.elapsed().as_secs_f64();
    let (cpu1, cpu2) = (
        (cpu_secs(d1.pid()) - cpu1) / secs,
        (cpu_secs(d2.pid()) - cpu2) / secs,
    );
    d1.cmd("stop");
    d2.cmd("stop");
    let after = vs.request(serde_json::json!({"cmd": "stats"}))?;
    let rx = |s: &Value| {
        ["d1", "d2"]
            .iter()
            .map(|n| {
                s["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["name"] == *n)
                    .and_then(|p| p["rx_packets"].as_u64())
                    .unwrap_or(0)
            })
            .sum::<u64>()
    };
    let switched = rx(&after) - rx(&before);
    let dropped = drops_of(&after, "d1") + drops_of(&after, "d2")
        - drops_of(&before, "d1")
        - drops_of(&before, "d2");
    let missed = d1.rx_missed()? + d2.rx_missed()?;
    println!(
        "vswitchd switched {switched} frames between d1 and d2 in {secs:.1} s: {:.2} Mpps",
        switched as f64 / secs / 1e6
    );
    println!(
        "lost: {dropped} dropped by vswitchd, {missed} missed by the testpmds' rings (of {IN_FLIGHT} in flight)"
    );
    println!(
        "CPU: testpmd d1 {:.0} % and d2 {:.0} % of a core (sharing CPU 0); vswitchd's worker \
         over the same 5 s:",
        cpu1 * 100.0,
        cpu2 * 100.0
    );
    ctl(bin, &["pmd-perf"])?;
    println!(
        "(what one worker carries when it is the bottleneck, against testpmd and Open vSwitch:\n\
         benches/RESULTS.md, harnesses P and V)"
    );
    drop(d1);
    drop(d2);

    step("a security group on c2, and what `vswitchctl trace` says it does");
    let groups = Path::new("/run/vswitchd/demo/groups.toml");
    std::fs::write(groups, GROUPS).map_err(|e| e.to_string())?;
    println!("(groups.toml: group \"web\" admits TCP 5201 and ICMP, denies the rest)");
    ctl(
        bin,
        &[
            "acl",
            "set",
            "--file",
            groups.to_str().unwrap_or_default(),
            "--port",
            "c2",
            "--ingress",
            "web",
        ],
    )?;
    ctl(bin, &["trace", "c1", "tcp,nw_dst=10.10.0.2,tp_dst=5201"])?;
    ctl(bin, &["trace", "c1", "tcp,nw_dst=10.10.0.2,tp_dst=22"])?;
    let ssh = run_in(
        &c1,
        &["socat", "-T1", "-", "TCP:10.10.0.2:22,connect-timeout=1"],
    );
    println!(
        "{}",
        if ssh.is_err() {
            "(no answer: denied)"
        } else {
            "(connected?)"
        }
    );

    step("counters");
    ctl(bin, &["stats"])?;

    step("stopping vswitchd (SIGTERM): sockets and hugepages are released; TAP NICs stay");
    let code = vs.stop();
    let _ = std::fs::remove_file(STATE);
    println!(
        "vswitchd exited with {code:?}; eth0 still in vsd-c1 (persistent, for a restart to \
         re-attach): {}; the demo's containers and their NICs go now",
        c1.has_interface("eth0")
    );
    Ok(())
}
