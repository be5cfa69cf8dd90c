//! Shared set-up of the integration tests: configs with unique DPDK
//! prefixes and socket paths under a per-test temp dir.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use std::time::Duration;

use testbed::netns::Netns;
use testbed::process::Proc;
use testbed::vswitchd::{TempDir, Vswitchd};
use testbed::wait_until;

/// The daemon binary cargo built for these tests.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vswitchd"))
}

/// `[eal]`, `[workers]`, `[control]` and one bridge `vpc1`, unique to `dir`.
pub fn header(dir: &TempDir) -> String {
    Vswitchd::config_header(dir, 256, "vpc1")
}

/// Starts vswitchd or fails the test with its output.
pub fn start(dir: &TempDir, config: &str) -> Vswitchd {
    Vswitchd::start(bin(), dir, config).unwrap_or_else(|e| panic!("{e}"))
}

/// A `[[port]]` table: a TAP NIC in bridge `vpc1` (the header's) inside
/// container `ns`.
pub fn tap_port(name: &str, ns: &Netns, mac: &str, ip: &str) -> String {
    format!(
        "[[port]]\nname = \"{name}\"\nkind = \"tap\"\nbridge = \"vpc1\"\nnetns = \"{}\"\nmac = \"{mac}\"\nipv4 = \"{ip}\"\n",
        ns.name()
    )
}

/// A TCP server in `ns` on `port` answering each connection with the
/// output of the shell command `reply`.
pub fn tcp_server_with(ns: &Netns, port: u16, reply: &str) -> Proc {
    ns.tcp_server(port, reply)
}

/// A TCP server in `ns` on `port` answering each connection with "hello".
pub fn tcp_server(ns: &Netns, port: u16) -> Proc {
    ns.tcp_server(port, "echo hello")
}

/// What a TCP connection from `ns` to `ip:port` reads (5 s), if it connects.
pub fn tcp_fetch(ns: &Netns, ip: &str, port: u16) -> Option<String> {
    ns.tcp_fetch(ip, port)
}

/// Whether a TCP connection from `ns` to `ip:port` gets "hello".
pub fn tcp_works(ns: &Netns, ip: &str, port: u16) -> bool {
    tcp_fetch(ns, ip, port).is_some_and(|o| o.contains("hello"))
}

/// Deterministic, incompressible-looking test data.
pub fn test_data(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Sends `data` over one TCP connection from `from` to `ip:port` in `to`,
/// written in 64 KB writes; returns what the receiver read (bounded: 60 s).
pub fn tcp_transfer(
    dir: &TempDir,
    from: &Netns,
    to: &Netns,
    ip: &str,
    port: u16,
    data: &[u8],
) -> Vec<u8> {
    let src = dir.join(&format!("tcp-{port}.src"));
    let dst = dir.join(&format!("tcp-{port}.dst"));
    std::fs::write(&src, data).unwrap();
    let mut c = to.command("socat");
    c.args([
        "-u",
        "-b",
        "65536",
        &format!("TCP-LISTEN:{port},reuseaddr"),
        &format!("OPEN:{},creat,trunc", dst.display()),
    ]);
    let mut server = Proc::spawn("socat-server", c).unwrap();
    assert!(wait_until(Duration::from_secs(10), || to
        .exec(&["ss", "-tln", "sport", &format!("= :{port}")])
        .is_ok_and(|o| o.contains(&port.to_string()))));
    let sent = from.exec(&[
        "timeout",
        "60",
        "socat",
        "-u",
        "-b",
        "65536",
        &format!("OPEN:{}", src.display()),
        &format!("TCP:{ip}:{port},connect-timeout=5"),
    ]);
    assert!(sent.is_ok(), "sender failed: {sent:?}");
    assert_eq!(
        server.wait_exit(Duration::from_secs(60)),
        Some(0),
        "receiver did not finish"
    );
    std::fs::read(&dst).unwrap()
}

/// Records from a classic pcap file (tcpdump -w).
pub fn pcap_records(path: &std::path::Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap();
    assert!(b.len() >= 24, "pcap header");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let caplen = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16;
        out.push(b[at..at + caplen].to_vec());
        at += caplen;
    }
    out
}

/// Starts tcpdump in `ns` writing to `pcap` with `args` (interface,
/// counts, filter) and waits (bounded) until it listens.
pub fn capture(ns: &Netns, pcap: &Path, args: &[&str]) -> Proc {
    let mut c = ns.command("tcpdump");
    c.arg("-U").arg("-w").arg(pcap).args(args);
    let cap = Proc::spawn("tcpdump", c).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || cap
            .output()
            .iter()
            .any(|l| l.contains("listening on"))),
        "tcpdump did not start"
    );
    cap
}

/// A vswitchd whose main mbuf pool must be back where it was at start
/// when the test ends (checked on drop, unless the test already failed).
pub struct Checked {
    vs: Vswitchd,
    baseline: u64,
}

impl std::ops::Deref for Checked {
    type Target = Vswitchd;
    fn deref(&self) -> &Vswitchd {
        &self.vs
    }
}

impl Drop for Checked {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_mbufs_back_to(&self.vs, self.baseline);
        }
    }
}

/// Starts vswitchd and waits (bounded) until every port of `up` has its
/// link up (a TAP NIC: its container set it up); its pool is checked at
/// the end.
pub fn start_linked(dir: &TempDir, config: &str, up: &[&str]) -> Checked {
    let vs = start(dir, config);
    for p in up {
        assert!(
            wait_until(Duration::from_secs(10), || vs.link_up(p)),
            "{p} up"
        );
    }
    Checked {
        baseline: mbufs_in_use(&vs),
        vs,
    }
}

/// A counter of port `name` at `path` in its stats entry (`["drops",
/// "spoofed"]`), 0 when absent.
pub fn stat(vs: &Vswitchd, name: &str, path: &[&str]) -> u64 {
    let mut v = vs.port_stats(name).unwrap();
    for k in path {
        v = v[*k].clone();
    }
    v.as_u64().unwrap_or(0)
}

/// The frames `tcpdump` in `ns` (with `args`) records while `act` runs,
/// once at least `min` arrived (bounded wait): a capture that saw its
/// expected frames, so that the absence of others means something.
pub fn captured(
    ns: &Netns,
    pcap: &Path,
    args: &[&str],
    min: usize,
    act: impl FnOnce(),
) -> Vec<Vec<u8>> {
    let cap = capture(ns, pcap, args);
    act();
    assert!(
        wait_until(Duration::from_secs(5), || pcap_records(pcap).len() >= min),
        "fewer than {min} frames captured in {}",
        ns.name()
    );
    drop(cap);
    pcap_records(pcap)
}

/// The mbufs of the switch's main pool in use, from `vswitchctl stats`.
pub fn mbufs_in_use(vs: &Vswitchd) -> u64 {
    let s = vs.request(serde_json::json!({"cmd": "stats"})).unwrap();
    s["mempools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "vswitchd_mbufs")
        .unwrap()["in_use"]
        .as_u64()
        .unwrap()
}

/// The main pool's mbufs in use when nothing is in flight, for
/// [`assert_mbufs_back_to`]: the least of ten samples 20 ms apart (frames
/// in flight only add, and some wait for the control thread up to 10 ms:
/// those punted to the VTEP's slow path; a single sample at start-up may
/// catch a container's first IPv6 and ARP frames).
pub fn quiescent_mbufs(vs: &Vswitchd) -> u64 {
    (0..10)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            mbufs_in_use(vs)
        })
        .min()
        .expect("ten samples")
}

/// Waits (bounded) until the main pool is back to `baseline` mbufs in use
/// (traffic over: every frame freed once, none leaked, none twice). The
/// TAP pool is not compared: a worker keeps a varying stash of it.
pub fn assert_mbufs_back_to(vs: &Vswitchd, baseline: u64) {
    assert!(
        wait_until(Duration::from_secs(5), || mbufs_in_use(vs) == baseline),
        "mbufs in use: {} after, {baseline} before",
        mbufs_in_use(vs)
    );
}

/// Runs a scapy script in `ns` with Debian's Python (the one with scapy);
/// `from scapy.all import *` comes first.
pub fn scapy(ns: &Netns, script: &str) {
    let code = format!("from scapy.all import *\nconf.verb = 0\n{script}\n");
    ns.exec(&["/usr/bin/python3", "-c", &code])
        .unwrap_or_else(|e| panic!("scapy in {}: {e}", ns.name()));
}

// ------------------------------------------------------------ CNI plugin

/// Runs the plugin with only `env` set and `stdin` on its standard input:
/// (stdout as JSON or Null, exit code).
pub fn run_plugin(env: &[(&str, String)], stdin: &[u8]) -> (Value, i32) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vswitch-cni"));
    c.env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("vswitch-cni runs");
    match child.stdin.take().unwrap().write_all(stdin) {
        Ok(()) => {}
        // A plugin may answer without reading its stdin (VERSION does)
        // and be gone before the write.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => panic!("writing the plugin's stdin: {e}"),
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
    };
    (v, out.status.code().unwrap_or(-1))
}

/// The plugin as a runtime calls it for container `id`'s eth0, in netns
/// `netns` (a path under /var/run/netns), with `conf` on stdin.
pub fn cni_at(cmd: &str, netns: Option<String>, id: &str, conf: &Value) -> (Value, i32) {
    let mut env = vec![
        ("CNI_COMMAND", cmd.to_string()),
        ("CNI_CONTAINERID", id.to_string()),
        ("CNI_IFNAME", "eth0".to_string()),
        ("CNI_PATH", "/usr/lib/cni".to_string()),
    ];
    if let Some(name) = netns {
        env.push(("CNI_NETNS", format!("/var/run/netns/{name}")));
    }
    run_plugin(&env, conf.to_string().as_bytes())
}

/// [`cni_at`] for a namespace that exists.
pub fn cni(cmd: &str, netns: Option<&Netns>, id: &str, conf: &Value) -> (Value, i32) {
    cni_at(cmd, netns.map(|n| n.name().to_string()), id, conf)
}

pub fn addr_of(result: &Value) -> String {
    result["ips"][0]["address"].as_str().unwrap().to_string()
}

// ------------------------------------------------ traffic that counts loss

/// UDP echo client: sends a numbered datagram every 2 ms until STOP
/// exists, then waits 2 s for the last answers; prints "sent received".
const COUNTING_CLIENT: &str = r#"
import os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setblocking(False)
dst, stop = (sys.argv[1], 9000), sys.argv[2]
sent, got, seen = 0, 0, set()
def drain():
    global got
    while True:
        try: d = s.recv(64)
        except BlockingIOError: return
        if d not in seen: seen.add(d); got += 1
end = None
while end is None or time.time() < end:
    if end is None:
        s.sendto(b"%d" % sent, dst); sent += 1
        if os.path.exists(stop): end = time.time() + 2
    drain(); time.sleep(0.002)
print(sent, got)
"#;

const ECHO_SERVER: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 9000))
while True:
    d, p = s.recvfrom(64); s.sendto(d, p)
"#;

/// Numbered UDP datagrams from one container to an echo server in
/// another, every 2 ms, while a test changes the switch: every one must
/// come back.
pub struct CountedTraffic {
    _server: Proc,
    client: Proc,
    stop: std::path::PathBuf,
}

impl CountedTraffic {
    /// Starts the echo server in `server` (at `ip`) and the client in
    /// `client`; `dir` holds the stop file.
    pub fn start(client: &Netns, server: &Netns, ip: &str, dir: &TempDir) -> CountedTraffic {
        let mut s = server.command("python3");
        s.args(["-c", ECHO_SERVER]);
        let s = Proc::spawn("echo", s).unwrap();
        assert!(wait_until(Duration::from_secs(10), || server
            .exec(&["ss", "-uln", "sport", "= :9000"])
            .is_ok_and(|o| o.contains("9000"))));
        let stop = dir.join(&testbed::unique("stop"));
        let mut c = client.command("python3");
        c.args(["-c", COUNTING_CLIENT, ip, stop.to_str().unwrap()]);
        CountedTraffic {
            _server: s,
            client: Proc::spawn("client", c).unwrap(),
            stop,
        }
    }

    /// Stops the client: (datagrams sent, answers received).
    pub fn finish(mut self) -> (u64, u64) {
        std::fs::write(&self.stop, "").unwrap();
        assert!(
            self.client.wait_exit(Duration::from_secs(30)).is_some(),
            "client did not finish"
        );
        let out = self.client.output().join(" ");
        let n: Vec<u64> = out
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        assert_eq!(n.len(), 2, "client printed {out:?}");
        (n[0], n[1])
    }
}

/// `vswitchctl --socket S ARGS`: (exit code, stdout, stderr).
pub fn ctl(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vswitchctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("vswitchctl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A verb that must succeed; its JSON answer.
pub fn ctl_ok(socket: &Path, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let (code, out, err) = ctl(socket, &full);
    assert_eq!(code, 0, "vswitchctl {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}
