//! Hosts of a multi-host test on one machine: vswitchd processes whose
//! uplinks meet on an underlay, each with a vswitch-agent on etcd.
//! Needs root, DPDK, hugepages, etcd.

#![allow(dead_code)] // each test binary uses its part

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use testbed::netns::Netns;
use testbed::process::Proc;
use testbed::vswitchd::{TempDir, Vswitchd};
use testbed::{unique, wait_until};

/// A binary of the workspace's target directory (vswitchd is another
/// package's).
pub fn workspace_bin(name: &str) -> PathBuf {
    let agent = PathBuf::from(env!("CARGO_BIN_EXE_vswitch-agent"));
    agent.with_file_name(name)
}

/// One host: its vswitchd, its first container `c`.
pub struct Host {
    pub vs: Vswitchd,
    pub c: Netns,
    pub dir: TempDir,
}

/// Host `me` of underlay `n` (10.`n`.2.0/24): a VTEP on `uplink`, nothing
/// remote, no learning, and two VPCs:
/// - blue: subnets vpc100 (VNI 100, 192.168.60.0/24, fd60:60::/64) and db
///   (VNI 200, 192.168.61.0/24, fd60:61::/64), gateways .254 and ::254,
///   SNAT on link 169.254.`n`.4*`me`/30;
/// - red: subnet red (VNI 300) with blue's vpc100 ranges.
///
/// Container `c` is in vpc100 at 192.168.60.`me`, MAC
/// 02:00:00:06:00:`mac`.
pub fn host(n: u8, me: u8, mac: u8, uplink: &str) -> Host {
    let dir = TempDir::new("vs-ag");
    let c = Netns::create(&unique("agc")).unwrap();
    let cfg = Vswitchd::config_header_idle(&dir, 256, "vpc100", 200)
        + &format!(
            "vni = 100\nlearn_vteps = false\nvpc = \"blue\"\ngateway = \"192.168.60.254/24\"\n\
             gateway6 = \"fd60:60::254/64\"\n\n\
             [[bridge]]\nname = \"db\"\nvni = 200\nlearn_vteps = false\nvpc = \"blue\"\ngateway = \"192.168.61.254/24\"\n\
             gateway6 = \"fd60:61::254/64\"\n\n\
             [[bridge]]\nname = \"red\"\nvni = 300\nlearn_vteps = false\nvpc = \"red\"\ngateway = \"192.168.60.254/24\"\n\
             gateway6 = \"fd60:60::254/64\"\n\n\
             [[vpc]]\nname = \"blue\"\nsnat = true\nsnat_link = \"169.254.{n}.{link}/30\"\n\n\
             [[vpc]]\nname = \"red\"\n\n\
             [vtep]\nuplink = \"uplink\"\nip = \"10.{n}.2.{me}/24\"\n\n\
             [[port]]\nname = \"uplink\"\nkind = \"af-packet\"\niface = \"{uplink}\"\n\n\
             [[port]]\nname = \"c\"\nkind = \"tap\"\nbridge = \"vpc100\"\nnetns = \"{}\"\n\
             mac = \"02:00:00:06:00:{mac:02x}\"\nipv4 = \"192.168.60.{me}/24\"\n\
             gateway = \"192.168.60.254\"\nmtu = 1450\n",
            c.name(),
            link = 4 * u32::from(me),
        );
    let vs =
        Vswitchd::start(&workspace_bin("vswitchd"), &dir, &cfg).unwrap_or_else(|e| panic!("{e}"));
    Host { vs, c, dir }
}

/// Starts host `me`'s agent as `name` on `etcd` under `prefix`, with a
/// 3 s lease.
pub fn agent(h: &Host, name: &str, n: u8, me: u8, prefix: &str, etcd: &[String]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vswitch-agent"));
    for url in etcd {
        cmd.args(["--etcd", url]);
    }
    cmd.args(["--host", name, "--ttl", "3"])
        .args(["--vtep", &format!("10.{n}.2.{me}"), "--prefix", prefix])
        .arg("--control")
        .arg(Vswitchd::control_socket(&h.dir));
    Proc::spawn(name, cmd).unwrap()
}

/// Adds a TAP NIC `name` in `bridge` into `ns` at `ip`/24 with gateway
/// `.254` of its /24, MTU 1450.
pub fn add_nic(vs: &Vswitchd, name: &str, bridge: &str, ns: &Netns, mac: &str, ip: &str) {
    let gw = format!("{}.254", ip.rsplit_once('.').unwrap().0);
    vs.request(json!({"cmd": "port-add", "port": {
        "name": name, "kind": "tap", "bridge": bridge, "netns": ns.name(),
        "mac": mac, "ipv4": format!("{ip}/24"), "gateway": gw, "mtu": 1450,
    }}))
    .unwrap_or_else(|e| panic!("port-add {name}: {e}"));
}

/// [`add_nic`] with IPv6 besides: `ip6`/64 with gateway `::254` of its
/// /64, in `ns` (whose IPv6 it turns on).
pub fn add_nic6(
    vs: &Vswitchd,
    name: &str,
    bridge: &str,
    ns: &Netns,
    mac: &str,
    ip: &str,
    ip6: &str,
) {
    ns.enable_ipv6().unwrap();
    let gw = format!("{}.254", ip.rsplit_once('.').unwrap().0);
    let gw6 = format!("{}::254", ip6.split_once("::").unwrap().0);
    vs.request(json!({"cmd": "port-add", "port": {
        "name": name, "kind": "tap", "bridge": bridge, "netns": ns.name(),
        "mac": mac, "ipv4": format!("{ip}/24"), "gateway": gw, "mtu": 1450,
        "ipv6": format!("{ip6}/64"), "gateway6": gw6,
    }}))
    .unwrap_or_else(|e| panic!("port-add {name}: {e}"));
}

/// Whether `ns` gets a ping reply from `ip` within 20 s.
pub fn pings(ns: &Netns, ip: &str) -> bool {
    wait_until(Duration::from_secs(20), || {
        ns.exec(&["ping", "-c", "1", "-W", "1", ip]).is_ok()
    })
}

/// The TTL of the reply to one ping from `ns` to `ip`, waiting (bounded)
/// until one comes.
pub fn reply_ttl(ns: &Netns, ip: &str) -> Option<u32> {
    let mut ttl = None;
    wait_until(Duration::from_secs(20), || {
        let Ok(out) = ns.exec(&["ping", "-c", "1", "-W", "1", ip]) else {
            return false;
        };
        ttl = out
            .split("ttl=")
            .nth(1)
            .and_then(|t| t.split_whitespace().next()?.parse().ok());
        true
    });
    ttl
}

/// The agent's last report to its vswitchd.
pub fn agent_state(vs: &Vswitchd) -> Value {
    vs.request(json!({"cmd": "agent-show"}))
        .map(|v| v["state"].clone())
        .unwrap_or_default()
}

/// How many tunnel ports `vs` has for `vni`.
pub fn vni_tunnels(vs: &Vswitchd, vni: u64) -> usize {
    vs.request(json!({"cmd": "tunnel-list"})).unwrap()["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["vni"] == vni)
        .count()
}

/// Whether `vs`'s router knows `ip` in VPC `vpc`.
pub fn knows_endpoint(vs: &Vswitchd, vpc: &str, ip: &str) -> bool {
    vs.request(json!({"cmd": "vpc-list"}))
        .ok()
        .and_then(|l| l.as_array().cloned())
        .into_iter()
        .flatten()
        .filter(|v| v["name"] == vpc)
        .flat_map(|v| v["endpoints"].as_array().cloned().unwrap_or_default())
        .any(|e| e["ip"] == ip)
}

/// Whether `vs`'s running config names `mac` (a station the agent set).
pub fn has_station(vs: &Vswitchd, mac: &str) -> bool {
    vs.request(json!({"cmd": "config-dump"})).unwrap()["toml"]
        .as_str()
        .unwrap()
        .contains(mac)
}

/// The underlay number of this test process: 10.`n`.2.0/24 and the SNAT
/// links 169.254.`n`.0/24 are its own.
pub fn underlay_number() -> u8 {
    (std::process::id() % 200) as u8 + 20
}
