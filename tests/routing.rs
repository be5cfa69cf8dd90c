//! A VPC's router on one host, with kernel containers on TAP NICs: VPC
//! blue has subnets web (10.61.1.0/24) and db (10.61.2.0/24); VPC red
//! has a subnet with db's range, and a container at db's container's
//! address. Needs root, DPDK and hugepages.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use testbed::netns::Netns;
use testbed::vswitchd::TempDir;
use testbed::{unique, wait_until};

const ROUTER: &str = "02:fe:00:00:00:61";

/// A TAP NIC in `bridge` inside `ns` at `ip`/24 with default gateway `gw`.
fn nic(name: &str, bridge: &str, ns: &Netns, mac: &str, ip: &str, gw: &str) -> String {
    format!(
        "[[port]]\nname = \"{name}\"\nkind = \"tap\"\nbridge = \"{bridge}\"\nnetns = \"{}\"\n\
         mac = \"{mac}\"\nipv4 = \"{ip}/24\"\ngateway = \"{gw}\"\n",
        ns.name()
    )
}

struct World {
    vs: Checked,
    a: Netns,
    b: Netns,
    r: Netns,
    _dir: TempDir,
}

fn world() -> World {
    let dir = TempDir::new("vs-rt");
    let (a, b, r) = (
        Netns::create(&unique("rta")).unwrap(),
        Netns::create(&unique("rtb")).unwrap(),
        Netns::create(&unique("rtr")).unwrap(),
    );
    // The header's bridge vpc1 stays unused.
    let cfg =
        header(&dir)
            + &format!(
            "\n[[vpc]]\nname = \"blue\"\nrouter_mac = \"{ROUTER}\"\n\n[[vpc]]\nname = \"red\"\n\n\
             [[bridge]]\nname = \"web\"\nvpc = \"blue\"\ngateway = \"10.61.1.1/24\"\n\n\
             [[bridge]]\nname = \"db\"\nvpc = \"blue\"\ngateway = \"10.61.2.1/24\"\n\n\
             [[bridge]]\nname = \"red\"\nvpc = \"red\"\ngateway = \"10.61.2.1/24\"\n\n"
        ) + &nic(
            "a",
            "web",
            &a,
            "02:00:00:61:00:0a",
            "10.61.1.10",
            "10.61.1.1",
        ) + &nic(
            "b",
            "db",
            &b,
            "02:00:00:61:00:0b",
            "10.61.2.20",
            "10.61.2.1",
        ) + &nic(
            "r",
            "red",
            &r,
            "02:00:00:61:00:0c",
            "10.61.2.20",
            "10.61.2.1",
        );
    let vs = start_linked(&dir, &cfg, &["a", "b", "r"]);
    World {
        vs,
        a,
        b,
        r,
        _dir: dir,
    }
}

/// The TTL of the reply to one ping from `ns` to `ip`, if it came.
fn reply_ttl(ns: &Netns, ip: &str) -> Option<u32> {
    let out = ns.exec(&["ping", "-c", "1", "-W", "2", ip]).ok()?;
    let at = out.find("ttl=")? + 4;
    out[at..].split_whitespace().next()?.parse().ok()
}

#[test]
fn containers_of_two_subnets_reach_each_other_through_the_gateway() {
    let w = world();
    // The gateway answers pings, its MAC is the router's.
    assert_eq!(
        reply_ttl(&w.a, "10.61.1.1"),
        Some(64),
        "the gateway answers"
    );
    let neigh = w.a.exec(&["ip", "neigh", "show", "10.61.1.1"]).unwrap();
    assert!(neigh.contains(ROUTER), "router MAC learned by ARP: {neigh}");

    // Routed both ways: b's reply left b with TTL 64 and crossed the
    // router once.
    assert_eq!(reply_ttl(&w.a, "10.61.2.20"), Some(63), "a -> b routed");
    assert_eq!(reply_ttl(&w.b, "10.61.1.10"), Some(63), "b -> a routed");
    // b saw a's frames from the router MAC.
    let neigh = w.b.exec(&["ip", "neigh", "show", "10.61.2.1"]).unwrap();
    assert!(neigh.contains(ROUTER), "{neigh}");

    // TCP across the subnets.
    let _server = tcp_server(&w.b, 8061);
    assert!(tcp_works(&w.a, "10.61.2.20", 8061), "TCP a -> b");

    // A TTL of 1 is not routed, and counted; the gateway says why, as
    // traceroute needs it to; so it does for an address of a subnet that
    // no container has.
    let ping = |args: &[&str]| {
        let out = w.a.command("ping").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = ping(&["-c", "1", "-W", "2", "-t", "1", "10.61.2.20"]);
    assert!(
        out.contains("From 10.61.1.1") && out.contains("Time to live exceeded"),
        "{out}"
    );
    assert!(wait_until(Duration::from_secs(5), || stat(
        &w.vs,
        "a",
        &["drops", "ttl_exceeded"]
    ) >= 1));
    let out = ping(&["-c", "1", "-W", "2", "10.61.2.99"]);
    assert!(
        out.contains("From 10.61.1.1") && out.contains("Destination Host Unreachable"),
        "{out}"
    );

    // The router's view.
    let vpcs = w.vs.request(json!({"cmd": "vpc-list"})).unwrap();
    let blue = vpcs
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "blue")
        .unwrap();
    assert_eq!(blue["router_mac"], ROUTER);
    let ips: Vec<&str> = blue["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips, ["10.61.1.10", "10.61.2.20"]);
}

#[test]
fn a_vpc_with_the_same_range_reaches_neither_subnet_of_another() {
    let w = world();
    // r has b's address in red: its gateway is red's router.
    assert_eq!(reply_ttl(&w.r, "10.61.2.1"), Some(64));
    assert!(reply_ttl(&w.r, "10.61.1.10").is_none(), "red -> blue's a");
    // a reaches blue's 10.61.2.20 (b), never r.
    assert_eq!(reply_ttl(&w.a, "10.61.2.20"), Some(63));
    let b_rx = w.b.if_counter("eth0", "rx_packets").unwrap();
    let r_rx = w.r.if_counter("eth0", "rx_packets").unwrap();
    assert_eq!(reply_ttl(&w.a, "10.61.2.20"), Some(63));
    assert!(w.b.if_counter("eth0", "rx_packets").unwrap() > b_rx);
    assert_eq!(
        w.r.if_counter("eth0", "rx_packets").unwrap(),
        r_rx,
        "red saw nothing"
    );
    assert!(stat(&w.vs, "r", &["drops", "no_route"]) >= 1);
}

/// VPC green has `snat`: its container reaches an "outside" namespace
/// (joined to the host by a veth, as a host's uplink would be) through
/// its host's NAT, and the reply comes back; the outside sees the host's
/// address; the host itself stays out of reach; the namespace and the
/// host's rules go with vswitchd.
#[test]
fn a_container_reaches_the_outside_through_snat_and_never_the_host() {
    let dir = TempDir::new("vs-sn");
    let k = std::process::id() % 200 + 20;
    let g = Netns::create(&unique("sng")).unwrap();
    let o = Netns::create(&unique("sno")).unwrap();
    let host_end = unique("sno");
    let _wire = testbed::netns::Veth::create(&host_end, "eth0", Some(&o)).unwrap();
    let (host_ip, outside_ip) = (format!("10.62.{k}.1"), format!("10.62.{k}.2"));
    assert!(std::process::Command::new("ip")
        .args(["addr", "add", &format!("{host_ip}/24"), "dev", &host_end])
        .status()
        .unwrap()
        .success());
    o.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{outside_ip}/24"),
        "dev",
        "eth0",
    ])
    .unwrap();
    let cfg = header(&dir)
        + &format!(
            "\n[[vpc]]\nname = \"green\"\nsnat = true\nsnat_link = \"169.254.{k}.0/30\"\n\n\
             [[bridge]]\nname = \"g\"\nvpc = \"green\"\ngateway = \"10.63.1.1/24\"\n\n"
        )
        + &nic("g", "g", &g, "02:00:00:63:00:0a", "10.63.1.10", "10.63.1.1");
    let vs = start_linked(&dir, &cfg, &["g", "green-snat"]);
    let green = &vs.request(json!({"cmd": "vpc-list"})).unwrap()[0];
    let netns = green["snat"]["netns"].as_str().unwrap().to_string();
    assert_eq!(green["snat"]["link"], format!("169.254.{k}.1/30"));

    // Out and back: the reply crosses the host, the namespace and the
    // router (TTL 64 - 3).
    let mut ttl = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            ttl = reply_ttl(&g, &outside_ip);
            ttl.is_some()
        }),
        "g -> the outside: stats {}",
        vs.request(json!({"cmd": "stats"})).unwrap()
    );
    assert_eq!(ttl, Some(61));
    // TCP, seen by the outside as coming from the host's address.
    let _server = tcp_server_with(&o, 8062, "echo from $SOCAT_PEERADDR");
    let seen = tcp_fetch(&g, &outside_ip, 8062).expect("TCP through SNAT");
    assert!(seen.contains(&format!("from {host_ip}")), "{seen}");

    // The host's own addresses are not the outside.
    for ip in [host_ip.as_str(), &format!("169.254.{k}.1")] {
        assert!(reply_ttl(&g, ip).is_none(), "g reached the host at {ip}");
    }
    // Nor is the SNAT port changed by requests.
    let e = vs
        .request(json!({"cmd": "port-del", "name": "green-snat"}))
        .unwrap_err();
    assert!(e.contains("VPC \"green\"'s way out"), "{e}");

    let netns_exists = || std::path::Path::new("/run/netns").join(&netns).exists();
    let table_exists = || {
        std::process::Command::new("nft")
            .args(["list", "table", "ip", &netns])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(netns_exists() && table_exists());
    drop(vs);
    assert!(!netns_exists(), "namespace {netns} removed at stop");
    assert!(!table_exists(), "host table {netns} removed at stop");
}

/// VPCs made at run time: two plain bridges become subnets of a VPC
/// added through the control socket (as `vswitchctl vpc add` / `vpc
/// subnet` send it) and their containers reach each other through the
/// gateway; the VPC goes again only once it has no subnet, and the
/// running config says all of it.
#[test]
fn a_vpc_made_at_run_time_routes_and_goes_only_when_empty() {
    let dir = TempDir::new("vs-rv");
    let (a, b) = (
        Netns::create(&unique("rva")).unwrap(),
        Netns::create(&unique("rvb")).unwrap(),
    );
    let cfg = header(&dir)
        + "\n[[bridge]]\nname = \"web\"\n\n[[bridge]]\nname = \"db\"\n\n"
        + &nic(
            "a",
            "web",
            &a,
            "02:00:00:64:00:0a",
            "10.64.1.10",
            "10.64.1.1",
        )
        + &nic(
            "b",
            "db",
            &b,
            "02:00:00:64:00:0b",
            "10.64.2.20",
            "10.64.2.1",
        );
    let vs = start_linked(&dir, &cfg, &["a", "b"]);
    assert!(reply_ttl(&a, "10.64.2.20").is_none(), "no router yet");

    vs.request(json!({"cmd": "vpc-add", "name": "green", "router_mac": ROUTER}))
        .unwrap();
    for (bridge, gw) in [("web", "10.64.1.1/24"), ("db", "10.64.2.1/24")] {
        vs.request(json!({"cmd": "bridge-vpc", "bridge": bridge, "vpc": "green", "gateway": gw}))
            .unwrap();
    }
    // The kernel keeps the gateway it failed to resolve as FAILED for a
    // while; a container that starts after its VPC would not have one.
    a.exec(&["ip", "neigh", "flush", "dev", "eth0"]).unwrap();
    assert_eq!(
        reply_ttl(&a, "10.64.2.20"),
        Some(63),
        "routed once made: {}",
        vs.port_stats("a").unwrap()
    );
    let e = vs
        .request(
            json!({"cmd": "bridge-vpc", "bridge": "db", "vpc": "green", "gateway": "10.64.1.1/16"}),
        )
        .unwrap_err();
    assert!(e.contains("overlaps"), "{e}");
    let e = vs
        .request(json!({"cmd": "vpc-del", "name": "green"}))
        .unwrap_err();
    assert!(e.contains("web, db"), "{e}");
    let dump = vs.request(json!({"cmd": "config-dump"})).unwrap()["toml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        dump.contains("[[vpc]]") && dump.contains("gateway = \"10.64.2.1/24\""),
        "{dump}"
    );

    for bridge in ["web", "db"] {
        vs.request(json!({"cmd": "bridge-vpc", "bridge": bridge}))
            .unwrap();
    }
    vs.request(json!({"cmd": "vpc-del", "name": "green"}))
        .unwrap();
    assert!(reply_ttl(&a, "10.64.2.20").is_none(), "no router any more");
    assert_eq!(vs.request(json!({"cmd": "vpc-list"})).unwrap(), json!([]));
}

/// IPv6 beside IPv4: subnets web and db of VPC blue with prefixes
/// fd61:1::/64 and fd61:2::/64 (gateways ::1), containers with an address
/// of each family. The gateway's neighbour solicitation is answered by
/// the router (router flag), routing decrements the hop limit, TCP
/// crosses the subnets, and ICMPv6 errors say why what cannot go does
/// not.
#[test]
fn ipv6_containers_of_two_subnets_reach_each_other_through_the_gateway() {
    let dir = TempDir::new("vs-r6");
    let (a, b) = (
        Netns::create(&unique("r6a")).unwrap(),
        Netns::create(&unique("r6b")).unwrap(),
    );
    for ns in [&a, &b] {
        ns.enable_ipv6().unwrap();
    }
    let nic6 = |name: &str, bridge: &str, ns: &Netns, n: u8| {
        nic(
            name,
            bridge,
            ns,
            &format!("02:00:00:64:00:{n:02x}"),
            &format!("10.64.{n}.10"),
            &format!("10.64.{n}.1"),
        ) + &format!("ipv6 = \"fd61:{n}::10/64\"\ngateway6 = \"fd61:{n}::1\"\n")
    };
    let cfg = header(&dir)
        + &format!(
            "\n[[vpc]]\nname = \"blue\"\nrouter_mac = \"{ROUTER}\"\n\n\
             [[bridge]]\nname = \"web\"\nvpc = \"blue\"\ngateway = \"10.64.1.1/24\"\n\
             gateway6 = \"fd61:1::1/64\"\n\n\
             [[bridge]]\nname = \"db\"\nvpc = \"blue\"\ngateway = \"10.64.2.1/24\"\n\
             gateway6 = \"fd61:2::1/64\"\n\n"
        )
        + &nic6("a", "web", &a, 1)
        + &nic6("b", "db", &b, 2);
    let vs = start_linked(&dir, &cfg, &["a", "b"]);

    // The gateway answers; its neighbour entry is the router MAC, marked
    // a router.
    assert_eq!(reply_ttl(&a, "fd61:1::1"), Some(64), "the gateway answers");
    let neigh = a.exec(&["ip", "-6", "neigh", "show", "fd61:1::1"]).unwrap();
    assert!(
        neigh.contains(ROUTER) && neigh.contains("router"),
        "router MAC learned by neighbour discovery: {neigh}"
    );
    // Routed both ways, one hop each.
    assert_eq!(reply_ttl(&a, "fd61:2::10"), Some(63), "a -> b routed");
    assert_eq!(reply_ttl(&b, "fd61:1::10"), Some(63), "b -> a routed");
    // TCP over IPv6 across the subnets.
    let mut server = b.command("socat");
    server.args(["TCP6-LISTEN:8064,reuseaddr,fork", "SYSTEM:echo hello6"]);
    let _server = testbed::process::Proc::spawn("socat6", server).unwrap();
    assert!(wait_until(Duration::from_secs(10), || b
        .exec(&["ss", "-tln", "sport", "= :8064"])
        .is_ok_and(|o| o.contains("8064"))));
    let got = a
        .exec(&[
            "socat",
            "-T5",
            "-",
            "TCP6:[fd61:2::10]:8064,connect-timeout=2",
        ])
        .unwrap_or_default();
    assert!(got.contains("hello6"), "TCP a -> b over IPv6: {got:?}");

    // What cannot go: hop limit 1, an address no container has, an
    // address outside every prefix (IPv6 has no way out of a VPC).
    let ping = |args: &[&str]| {
        let out = a.command("ping").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for (args, why) in [
        (
            &["-c", "1", "-W", "2", "-t", "1", "fd61:2::10"][..],
            "Time exceeded: Hop limit",
        ),
        (
            &["-c", "1", "-W", "2", "fd61:2::99"][..],
            "Destination unreachable: Address unreachable",
        ),
        (
            &["-c", "1", "-W", "2", "2001:db8::1"][..],
            "Destination unreachable: No route",
        ),
    ] {
        let out = ping(args);
        assert!(
            out.contains("From fd61:1::1") && out.contains(why),
            "{args:?}: {out}"
        );
    }
    assert!(wait_until(Duration::from_secs(5), || stat(
        &vs,
        "a",
        &["drops", "ttl_exceeded"]
    ) >= 1));

    // The router's view: both families.
    let vpcs = vs.request(json!({"cmd": "vpc-list"})).unwrap();
    let blue = &vpcs[0];
    assert_eq!(blue["subnets"][0]["gateway6"], "fd61:1::1/64");
    let ips: Vec<&str> = blue["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ip"].as_str().unwrap())
        .collect();
    assert_eq!(
        ips,
        ["10.64.1.10", "10.64.2.10", "fd61:1::10", "fd61:2::10"]
    );
}
