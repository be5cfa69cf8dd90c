//! Shared set-up of the integration tests: configs with unique DPDK
//! prefixes and socket paths under a per-test temp dir.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;
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
    let mut c = ns.command("socat");
    c.args([
        &format!("TCP-LISTEN:{port},reuseaddr,fork"),
        &format!("SYSTEM:{reply}"),
    ]);
    let p = Proc::spawn("socat", c).unwrap();
    assert!(wait_until(Duration::from_secs(10), || ns
        .exec(&["ss", "-tln", "sport", &format!("= :{port}")])
        .is_ok_and(|o| o.contains(&port.to_string()))));
    p
}

/// A TCP server in `ns` on `port` answering each connection with "hello".
pub fn tcp_server(ns: &Netns, port: u16) -> Proc {
    tcp_server_with(ns, port, "echo hello")
}

/// What a TCP connection from `ns` to `ip:port` reads (5 s), if it connects.
pub fn tcp_fetch(ns: &Netns, ip: &str, port: u16) -> Option<String> {
    ns.exec(&[
        "socat",
        "-T5",
        "-",
        &format!("TCP:{ip}:{port},connect-timeout=2"),
    ])
    .ok()
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
