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
