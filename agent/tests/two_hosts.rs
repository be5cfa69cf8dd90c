//! Two vswitchd hosts joined by their uplinks (a veth), with no static
//! tunnel config and VTEP learning off on their VPC: each runs a
//! vswitch-agent on one etcd member. Needs root, DPDK, hugepages, etcd.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use testbed::etcd::Etcd;
use testbed::netns::{Netns, Veth};
use testbed::process::Proc;
use testbed::{unique, wait_until};

/// Two hosts on a veth underlay, each with its agent on `etcd`: (host a,
/// host b, agent a, agent b, the veth).
fn pair(etcd: &[String]) -> (Host, Host, Proc, Proc, Veth, String) {
    let n = underlay_number();
    let (a_if, b_if) = (unique("aga"), unique("agb"));
    let wire = Veth::create(&a_if, &b_if, None).unwrap();
    let a = host(n, 1, 1, &a_if);
    let b = host(n, 2, 2, &b_if);
    // Both agents share one prefix (one deployment).
    let prefix = format!("/{}", unique("t"));
    let agent_a = agent(&a, "host-a", n, 1, &prefix, etcd);
    let agent_b = agent(&b, "host-b", n, 2, &prefix, etcd);
    (a, b, agent_a, agent_b, wire, prefix)
}

#[test]
fn hosts_find_each_other_through_etcd_and_forget_a_dead_one() {
    let etcd = Etcd::start().unwrap();
    let (a, b, mut agent_a, agent_b, _wire, prefix) = pair(std::slice::from_ref(&etcd.url));

    // Nothing static, no learning: only etcd can join them.
    assert!(pings(&a.c, "192.168.60.2"), "a -> b through etcd's state");
    assert!(pings(&b.c, "192.168.60.1"), "b -> a");
    assert_eq!(vni_tunnels(&b.vs, 100), 1);
    let state = agent_state(&a.vs);
    assert_eq!(state["etcd"], "connected", "{state}");
    assert_eq!(
        (
            state["local_endpoints"].as_u64(),
            state["remote_endpoints"].as_u64()
        ),
        (Some(1), Some(1)),
        "{state}"
    );

    // Another subnet of the VPC on host b: host a routes to it through
    // the tunnel of VNI 200 (the remote endpoint's address from etcd),
    // host b routes the reply back; each crossing of a router is one hop.
    let d = Netns::create(&unique("agd")).unwrap();
    add_nic(&b.vs, "d", "db", &d, "02:00:00:06:01:02", "192.168.61.2");
    assert_eq!(
        reply_ttl(&a.c, "192.168.61.2"),
        Some(63),
        "a -> d routed on a, reply routed on b: a's VPCs {}, b's {}, agent b {:?}, stats a {}",
        a.vs.request(json!({"cmd": "vpc-list"})).unwrap(),
        b.vs.request(json!({"cmd": "vpc-list"})).unwrap(),
        agent_b.output(),
        a.vs.request(json!({"cmd": "stats"})).unwrap(),
    );
    assert_eq!(reply_ttl(&d, "192.168.60.1"), Some(63), "d -> a");

    // IPv6 the same way: its addresses claimed in etcd and routed by the
    // sender's host into the other subnet's VNI.
    let (e6, f6) = (
        Netns::create(&unique("age")).unwrap(),
        Netns::create(&unique("agf")).unwrap(),
    );
    add_nic6(
        &a.vs,
        "e6",
        "vpc100",
        &e6,
        "02:00:00:06:00:16",
        "192.168.60.16",
        "fd60:60::16",
    );
    add_nic6(
        &b.vs,
        "f6",
        "db",
        &f6,
        "02:00:00:06:01:16",
        "192.168.61.16",
        "fd60:61::16",
    );
    assert_eq!(
        reply_ttl(&e6, "fd60:61::16"),
        Some(63),
        "IPv6 a -> b routed: a's VPCs {}",
        a.vs.request(json!({"cmd": "vpc-list"})).unwrap()
    );
    assert!(knows_endpoint(&b.vs, "blue", "fd60:60::16"));

    // An address another host holds in the VPC: the claim is refused (a
    // holder written straight into etcd, as a host that is not ours).
    let held = format!("{prefix}/ips/blue/192.168.60.7");
    etcd.put(
        &held,
        r#"{"host": "host-z", "vni": 100, "mac": "02:00:00:06:00:77"}"#,
    )
    .unwrap();
    let z = Netns::create(&unique("agz")).unwrap();
    add_nic(
        &b.vs,
        "z",
        "vpc100",
        &z,
        "02:00:00:06:00:07",
        "192.168.60.7",
    );
    assert!(
        wait_until(Duration::from_secs(10), || agent_b.output().iter().any(
            |l| l.contains("address 192.168.60.7") && l.contains("host host-z claims it")
        )),
        "address claim refused: {:?}",
        agent_b.output()
    );
    assert!(
        wait_until(Duration::from_secs(5), || agent_state(&b.vs)["refused"]
            .as_array()
            .is_some_and(|r| r.len() == 1)),
        "shown: {}, agent: {:?}",
        agent_state(&b.vs),
        agent_b.output()
    );
    assert!(
        !has_station(&a.vs, "02:00:00:06:00:07"),
        "a refused endpoint is not published"
    );
    b.vs.request(json!({"cmd": "port-del", "name": "z"}))
        .unwrap();

    // A second NIC on b with a's container's MAC: refused by b's agent.
    let dup = Netns::create(&unique("agd")).unwrap();
    add_nic(
        &b.vs,
        "dup",
        "vpc100",
        &dup,
        "02:00:00:06:00:01",
        "192.168.60.9",
    );
    assert!(
        wait_until(Duration::from_secs(10), || agent_b.output().iter().any(
            |l| l.contains("02:00:00:06:00:01") && l.contains("host-a claims it")
        )),
        "duplicate claim refused: {:?}",
        agent_b.output()
    );

    // A record no host of this underlay can use (a VTEP off its subnet,
    // written straight into etcd): left out and named by b's agent, and
    // the bridge's other endpoints still come and go.
    etcd.put(
        &format!("{prefix}/endpoints/100/02:00:00:06:00:66"),
        r#"{"host": "host-x", "vtep": "10.250.250.250", "port": "x", "ips": []}"#,
    )
    .unwrap();
    let g = Netns::create(&unique("agg")).unwrap();
    add_nic(
        &a.vs,
        "g",
        "vpc100",
        &g,
        "02:00:00:06:00:17",
        "192.168.60.17",
    );
    assert!(
        wait_until(Duration::from_secs(10), || knows_endpoint(
            &b.vs,
            "blue",
            "192.168.60.17"
        )),
        "a new endpoint beside a bad record: {:?}",
        agent_b.output()
    );
    assert!(
        wait_until(Duration::from_secs(5), || agent_state(&b.vs)["left_out"]
            .to_string()
            .contains("VTEP 10.250.250.250")),
        "shown: {}",
        agent_state(&b.vs)
    );

    // Host a dies (daemon and agent, SIGKILL): b forgets it within the
    // lease TTL (3 s) plus a second, bounded here at 10 s.
    agent_a.signal(libc::SIGKILL);
    a.vs.kill();
    assert!(
        wait_until(Duration::from_secs(10), || vni_tunnels(&b.vs, 100) == 0),
        "host a's endpoints gone from b: {}",
        b.vs.request(json!({"cmd": "tunnel-list"})).unwrap()
    );
    b.vs.stop();
}

/// etcd killed: nothing changes in the data plane (traffic between the
/// hosts keeps flowing); a NIC added meanwhile is published and applied
/// on the other host once etcd is back.
#[test]
fn forwarding_outlives_etcd_and_a_nic_added_meanwhile_is_shared_when_it_returns() {
    let mut etcd = Etcd::start().unwrap();
    let (a, b, _agent_a, _agent_b, _wire, _) = pair(std::slice::from_ref(&etcd.url));
    assert!(pings(&a.c, "192.168.60.2"), "a -> b through etcd's state");

    etcd.kill();
    assert!(
        wait_until(Duration::from_secs(20), || agent_state(&a.vs)["etcd"]
            == "unreachable"),
        "the agent says etcd is unreachable: {}",
        agent_state(&a.vs)
    );
    assert!(
        a.c.exec(&["ping", "-c", "10", "-i", "0.2", "-W", "1", "192.168.60.2"])
            .is_ok_and(|o| o.contains("10 received")),
        "traffic between the hosts while etcd is down"
    );
    let c2 = Netns::create(&unique("agn")).unwrap();
    add_nic(
        &b.vs,
        "c2",
        "vpc100",
        &c2,
        "02:00:00:06:00:03",
        "192.168.60.3",
    );
    let station_on_a = || has_station(&a.vs, "02:00:00:06:00:03");
    assert!(!station_on_a(), "nothing reaches host a while etcd is down");

    etcd.restart().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), station_on_a),
        "host b's new NIC is a station on host a once etcd is back"
    );
    assert!(pings(&a.c, "192.168.60.3"), "a -> b's new container");
    assert!(pings(&a.c, "192.168.60.2"), "a -> b still");
}
