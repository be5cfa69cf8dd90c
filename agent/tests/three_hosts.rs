//! Three vswitchd hosts on one machine, their uplinks on an underlay
//! bridge in a network namespace, each with a vswitch-agent on a
//! three-member etcd cluster; no static tunnel config, VTEP learning off:
//! etcd is all that joins them. Host 1 has blue's c1 (192.168.60.1) and
//! red's r1 (192.168.60.2), host 2 blue's c2 (192.168.60.2) and d2 (db,
//! 192.168.61.2), host 3 blue's c3 (192.168.60.3) and red's r3
//! (192.168.60.1): red has blue's addresses. Needs root, DPDK,
//! hugepages, etcd.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use testbed::etcd::Cluster;
use testbed::netns::{Netns, Veth};
use testbed::{unique, wait_until};

/// The underlay: a bridge in its own namespace, one veth per host (the
/// host's end in this namespace, for its af-packet uplink).
struct Underlay {
    /// Holds the bridge; deleted (with it) when the test ends.
    _ns: Netns,
    uplinks: Vec<Veth>,
}

fn underlay(hosts: usize) -> Underlay {
    let ns = Netns::create(&unique("agu")).unwrap();
    ns.exec(&["ip", "link", "add", "br0", "type", "bridge"])
        .unwrap();
    ns.exec(&["ip", "link", "set", "br0", "up"]).unwrap();
    let uplinks = (0..hosts)
        .map(|i| {
            let port = format!("p{i}");
            let v = Veth::create(&unique("agl"), &port, Some(&ns)).unwrap();
            ns.exec(&["ip", "link", "set", &port, "master", "br0"])
                .unwrap();
            v
        })
        .collect();
    Underlay { _ns: ns, uplinks }
}

/// The "outside": a namespace joined to the machine's own by a veth (the
/// hosts' shared uplink to the world) at 10.`n`.9.2, the machine at .1.
fn outside(n: u8) -> (Netns, Veth) {
    let o = Netns::create(&unique("ago")).unwrap();
    let v = Veth::create(&unique("ago"), "eth0", Some(&o)).unwrap();
    let ok = Command::new("ip")
        .args(["addr", "add", &format!("10.{n}.9.1/24"), "dev", v.name()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    o.exec(&[
        "ip",
        "addr",
        "add",
        &format!("10.{n}.9.2/24"),
        "dev",
        "eth0",
    ])
    .unwrap();
    (o, v)
}

fn rx_packets(ns: &Netns) -> u64 {
    ns.if_counter("eth0", "rx_packets").unwrap()
}

#[test]
fn three_hosts_share_vpcs_through_etcd_and_survive_its_failures() {
    let n = underlay_number();
    let mut etcd = Cluster::start().unwrap();
    let urls = etcd.urls();
    let under = underlay(3);
    let hosts: Vec<Host> = (0..3u8)
        .map(|i| host(n, i + 1, i + 1, under.uplinks[usize::from(i)].name()))
        .collect();
    let prefix = format!("/{}", unique("t3"));
    let mut agents: Vec<_> = (0..3u8)
        .map(|i| {
            agent(
                &hosts[usize::from(i)],
                &format!("host-{}", i + 1),
                n,
                i + 1,
                &prefix,
                &urls,
            )
        })
        .collect();
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    let (c1, c2, c3) = (&h1.c, &h2.c, &h3.c);
    let d2 = Netns::create(&unique("agd")).unwrap();
    add_nic(&h2.vs, "d2", "db", &d2, "02:00:00:06:01:02", "192.168.61.2");
    let r1 = Netns::create(&unique("agr")).unwrap();
    add_nic(
        &h1.vs,
        "r1",
        "red",
        &r1,
        "02:00:00:06:03:01",
        "192.168.60.2",
    );
    let r3 = Netns::create(&unique("agr")).unwrap();
    add_nic(
        &h3.vs,
        "r3",
        "red",
        &r3,
        "02:00:00:06:03:03",
        "192.168.60.1",
    );

    // One subnet across hosts: ping and TCP.
    assert!(pings(c1, "192.168.60.2"), "c1 -> c2");
    assert!(pings(c1, "192.168.60.3"), "c1 -> c3");
    assert!(pings(c3, "192.168.60.2"), "c3 -> c2");
    let _web = c3.tcp_server(8063, "echo hello");
    assert_eq!(
        c1.tcp_fetch("192.168.60.3", 8063).as_deref(),
        Some("hello\n"),
        "TCP c1 -> c3"
    );

    // Two subnets of blue across hosts: routed by each sender's host,
    // the router MAC as the gateway's.
    assert_eq!(reply_ttl(c1, "192.168.61.2"), Some(63), "c1 -> d2 routed");
    assert_eq!(reply_ttl(&d2, "192.168.60.3"), Some(63), "d2 -> c3 routed");
    let router = h1.vs.request(json!({"cmd": "vpc-list"})).unwrap()[0]["router_mac"]
        .as_str()
        .unwrap()
        .to_string();
    let neigh = c1.exec(&["ip", "neigh", "show", "192.168.60.254"]).unwrap();
    assert!(neigh.contains(&router), "router MAC {router}: {neigh}");
    let _db = d2.tcp_server(8064, "echo hello");
    assert_eq!(
        c3.tcp_fetch("192.168.61.2", 8064).as_deref(),
        Some("hello\n"),
        "TCP c3 -> d2 routed"
    );

    // Red, with blue's addresses: r3 reaches red's r1 across hosts at
    // c2's address and blue sees none of it; blue's other subnet is not
    // red's.
    let (c2_rx, c1_rx) = (rx_packets(c2), rx_packets(c1));
    assert!(pings(&r3, "192.168.60.2"), "r3 -> r1, red across hosts");
    assert!(
        r3.exec(&["ping", "-c", "2", "-W", "1", "192.168.61.2"])
            .is_err(),
        "red reaches blue's db"
    );
    assert_eq!(
        rx_packets(c2),
        c2_rx,
        "c2 (blue, red's r1's address) saw nothing"
    );
    assert_eq!(
        rx_packets(c1),
        c1_rx,
        "c1 (blue, r3's own address) saw nothing"
    );

    // Out through host 2's SNAT, seen from the machine's address.
    let (o, _o_wire) = outside(n);
    let _out = o.tcp_server(8065, "echo from $SOCAT_PEERADDR");
    let seen = c2.tcp_fetch(&format!("10.{n}.9.2"), 8065);
    assert!(
        seen.as_deref()
            .is_some_and(|s| s.contains(&format!("from 10.{n}.9.1"))),
        "c2 -> outside through SNAT: {seen:?}"
    );
    assert!(
        r3.exec(&["ping", "-c", "1", "-W", "1", &format!("10.{n}.9.2")])
            .is_err(),
        "red has no way out"
    );

    // A container added on host 1: reachable from hosts 2 and 3.
    let c4 = Netns::create(&unique("agc")).unwrap();
    let added = Instant::now();
    add_nic(
        &h1.vs,
        "c4",
        "vpc100",
        &c4,
        "02:00:00:06:00:04",
        "192.168.60.4",
    );
    assert!(
        pings(c2, "192.168.60.4") && pings(c3, "192.168.60.4"),
        "c4 from hosts 2 and 3"
    );
    eprintln!(
        "c4 reachable from hosts 2 and 3 {:?} after port-add",
        added.elapsed()
    );

    // etcd stopped for 30 s: the 30 s of pings between hosts all come
    // back; a container added meanwhile on host 3 is reachable once
    // etcd is back.
    etcd.stop();
    let c5 = Netns::create(&unique("agc")).unwrap();
    add_nic(
        &h3.vs,
        "c5",
        "vpc100",
        &c5,
        "02:00:00:06:00:05",
        "192.168.60.5",
    );
    let out = c1
        .exec(&["ping", "-c", "30", "-i", "1", "-W", "1", "192.168.60.3"])
        .unwrap_or_else(|e| e);
    assert!(
        out.contains("30 received"),
        "c1 -> c3 while etcd is down: {out}"
    );
    assert_eq!(agent_state(&h1.vs)["etcd"], "unreachable");
    assert!(!has_station(&h1.vs, "02:00:00:06:00:05"));
    etcd.start_stopped().unwrap();
    assert!(
        pings(c1, "192.168.60.5"),
        "c5, added while etcd was down, from host 1"
    );
    assert!(pings(c2, "192.168.60.5"), "and from host 2");

    // Host 1 killed (agent and daemon, SIGKILL): its endpoints leave
    // hosts 2 and 3 once etcd revokes its lease (TTL 3 s). Bounded at
    // TTL + 3 s: etcd alone took 3.1-3.3 s after a kill on a quiet
    // cluster but 4.1-5.0 s in this test's load after the cluster's
    // restart (measured with etcdctl; the agents applied the deletion
    // within 50 ms of the watch event), so TTL + 1 s would flake here.
    let gone = |h: &Host| {
        !knows_endpoint(&h.vs, "blue", "192.168.60.1")
            && !knows_endpoint(&h.vs, "blue", "192.168.60.4")
            && !knows_endpoint(&h.vs, "red", "192.168.60.2")
    };
    assert!(!gone(h2) && !gone(h3));
    agents[0].signal(libc::SIGKILL);
    let killed = Instant::now();
    let mut hosts = hosts;
    hosts.remove(0).vs.kill();
    let (h2, h3) = (&hosts[0], &hosts[1]);
    assert!(
        wait_until(Duration::from_secs(6), || gone(h2) && gone(h3)),
        "host 1's endpoints still on hosts 2/3 after {:?}: host 2's VPCs {}, its agent said {:?}",
        killed.elapsed(),
        h2.vs.request(json!({"cmd": "vpc-list"})).unwrap(),
        agents[1].output(),
    );
    eprintln!(
        "host 1 gone from hosts 2 and 3 {:?} after SIGKILL",
        killed.elapsed()
    );
    assert!(pings(&hosts[0].c, "192.168.60.3"), "hosts 2 and 3 carry on");
    // The leader killed: traffic goes on, a NIC added afterwards is shared.
    let leader = etcd.leader().expect("a leader");
    etcd.kill(leader);
    let out = hosts[0]
        .c
        .exec(&["ping", "-c", "5", "-i", "0.2", "-W", "1", "192.168.60.3"])
        .unwrap_or_else(|e| e);
    assert!(
        out.contains("5 received"),
        "c2 -> c3 while etcd elects: {out}"
    );
    let c6 = Netns::create(&unique("agc")).unwrap();
    add_nic(
        &hosts[0].vs,
        "c6",
        "vpc100",
        &c6,
        "02:00:00:06:00:06",
        "192.168.60.6",
    );
    // Shared through etcd (not found by a flood): host 3's router knows it.
    assert!(
        wait_until(Duration::from_secs(20), || knows_endpoint(
            &hosts[1].vs,
            "blue",
            "192.168.60.6"
        )),
        "c6, added after the leader died, is an endpoint on host 3"
    );
    assert!(pings(&hosts[1].c, "192.168.60.6"), "c3 -> c6");
}
