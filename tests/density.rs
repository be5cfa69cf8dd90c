//! Density: 200 container NICs on one vswitchd (issue 16's CI test):
//! 196 kernel containers on TAP NICs and 4 DPDK containers' vhost-user
//! ports, two of them with a testpmd attached. A broadcast reaches every
//! other NIC of the bridge exactly once, chosen pairs talk, and the stats
//! cover every port.

mod common;

use std::time::Duration;

use testbed::netns::Netns;
use testbed::testpmd::{Testpmd, TestpmdOpts};
use testbed::vswitchd::{TempDir, Vswitchd};
use testbed::{unique, wait_until};

const TAPS: usize = 196;
const VHOSTS: usize = 4;

/// The MAC and address of TAP NIC `i`.
fn tap_mac(i: usize) -> String {
    format!("02:00:00:d0:{:02x}:{:02x}", i >> 8, i & 0xff)
}

fn tap_ip(i: usize) -> String {
    format!("10.77.{}.{}", i / 200, 1 + i % 200)
}

#[test]
fn two_hundred_nics_flood_once_talk_in_pairs_and_are_all_counted() {
    let dir = TempDir::new("vs-dens");
    let tag = unique("dn");
    let nss: Vec<Netns> = (0..TAPS)
        .map(|i| Netns::create(&format!("{tag}-{i}")).unwrap())
        .collect();
    let sockets: Vec<_> = (0..VHOSTS)
        .map(|i| dir.join(&format!("v{i}.sock")))
        .collect();
    let mut cfg = Vswitchd::config_header(&dir, 512, "vpc1");
    for (i, ns) in nss.iter().enumerate() {
        cfg += &format!(
            "[[port]]\nname = \"t{i}\"\nkind = \"tap\"\nbridge = \"vpc1\"\nnetns = \"{}\"\n\
             mac = \"{}\"\nipv4 = \"{}/16\"\n",
            ns.name(),
            tap_mac(i),
            tap_ip(i)
        );
    }
    for (i, s) in sockets.iter().enumerate() {
        cfg += &format!(
            "[[port]]\nname = \"v{i}\"\nkind = \"vhost-user\"\nbridge = \"vpc1\"\nsocket = \"{}\"\n\
             rx_desc = 256\ntx_desc = 256\n",
            s.display()
        );
    }
    let vs = common::start(&dir, &cfg);
    let names: Vec<String> = (0..TAPS)
        .map(|i| format!("t{i}"))
        .chain((0..VHOSTS).map(|i| format!("v{i}")))
        .collect();

    // DPDK containers on v0 and v1; v2 and v3 have none.
    const MAC_A: &str = "02:00:00:00:0e:01";
    const MAC_B: &str = "02:00:00:00:0e:02";
    let dpdk = |name: &str, socket, mac, peer| {
        let o = TestpmdOpts {
            socket,
            mac,
            peer: Some(peer),
            ..Default::default()
        };
        Testpmd::start(name, &o).unwrap()
    };
    let mut ta = dpdk("tp-dens-a", &sockets[0], MAC_A, MAC_B);
    let mut tb = dpdk("tp-dens-b", &sockets[1], MAC_B, MAC_A);
    assert!(
        wait_until(Duration::from_secs(20), || vs.link_up("v0")
            && vs.link_up("v1")),
        "vhost links up"
    );
    ta.cmd("start");
    tb.cmd("start");

    // What the mbuf pool reserves for each NIC: nothing for either kind
    // (a vhost-user port's frames are copied in and out of mbufs per
    // burst by the vhost library, a TAP reads into the shared TAP pool),
    // against 512 mbufs of rings per vhost-user port through the net_vhost
    // ethdev before.
    let memory = |n: &str| {
        vs.request(serde_json::json!({"cmd": "port-show", "name": n}))
            .unwrap()["memory"]
            .clone()
    };
    for n in ["v2", "t5"] {
        assert_eq!(
            memory(n),
            serde_json::json!({"reserved_mbufs": 0, "reserved_hugepage_bytes": 0}),
            "{n}"
        );
    }

    // Every port appears in the stats, each once.
    let stats = vs.request(serde_json::json!({"cmd": "stats"})).unwrap();
    let listed: Vec<&str> = stats["ports"]
        .as_array()
        .expect("a port list")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for n in &names {
        assert_eq!(
            listed.iter().filter(|l| *l == n).count(),
            1,
            "{n} in the stats once"
        );
    }

    // A broadcast from t0 (three ARP requests for an address nobody
    // has, so nobody answers) reaches every other NIC exactly once: each
    // of the other 195 containers' kernel counts three more frames, each
    // testpmd three more, and the switch sends or drops three on every
    // other port.
    let rx = |i: usize| nss[i].if_counter("eth0", "rx_packets").unwrap();
    let kernel_before: Vec<u64> = (0..TAPS).map(rx).collect();
    let switch_out = |n: &str| {
        let p = vs.port_stats(n).unwrap();
        let drops: u64 = p["drops"]
            .as_object()
            .map_or(0, |d| d.values().filter_map(|v| v.as_u64()).sum());
        p["tx_packets"].as_u64().unwrap_or(0) + drops
    };
    let switch_before: Vec<u64> = names.iter().map(|n| switch_out(n)).collect();
    let (a_before, _) = ta.port_stats().unwrap();
    let (b_before, _) = tb.port_stats().unwrap();
    let send = format!(
        "import socket\n\
         s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
         s.bind(('eth0', 0))\n\
         mac = bytes.fromhex('{mac}')\n\
         arp = bytes.fromhex('0001080006040001') + mac + socket.inet_aton('{ip}') \
               + bytes(6) + socket.inet_aton('10.77.250.250')\n\
         f = b'\\xff' * 6 + mac + b'\\x08\\x06' + arp + bytes(18)\n\
         for _ in range(3): s.send(f)\n",
        mac = tap_mac(0).replace(':', ""),
        ip = tap_ip(0),
    );
    nss[0]
        .exec(&["/usr/bin/python3", "-c", &send])
        .unwrap_or_else(|e| panic!("sending the broadcast: {e}"));
    let every_other = || (1..names.len()).all(|i| switch_out(&names[i]) >= switch_before[i] + 3);
    if !wait_until(Duration::from_secs(10), every_other) {
        let short: Vec<String> = (1..names.len())
            .filter(|&i| switch_out(&names[i]) < switch_before[i] + 3)
            .map(|i| format!("{}: {}", names[i], vs.port_stats(&names[i]).unwrap()))
            .collect();
        vs.dump();
        panic!(
            "the switch did not send the broadcast to {} ports; t0: {}; {short:?}",
            short.len(),
            vs.port_stats("t0").unwrap()
        );
    }
    for (i, n) in names.iter().enumerate() {
        let want = if i == 0 { 0 } else { 3 };
        assert_eq!(
            switch_out(n) - switch_before[i],
            want,
            "{n}: sent or dropped on the switch side"
        );
    }
    for (i, before) in kernel_before.iter().enumerate().skip(1) {
        assert_eq!(rx(i) - before, 3, "container {i} received it once");
    }
    assert!(
        wait_until(Duration::from_secs(5), || ta.port_stats().unwrap().0
            == a_before + 3
            && tb.port_stats().unwrap().0 == b_before + 3),
        "each testpmd received the three frames"
    );

    // Chosen pairs talk: kernel containers far apart in the port space,
    // and the two DPDK containers.
    for (a, b) in [(17, 160), (195, 3)] {
        assert!(
            nss[a]
                .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", &tap_ip(b)])
                .is_ok(),
            "t{a} pings t{b}"
        );
    }
    let b_rx = vs.counter("v1", "tx_packets");
    ta.cmd("stop");
    ta.cmd("start tx_first 1");
    assert!(
        wait_until(Duration::from_secs(10), || vs.counter("v1", "tx_packets")
            >= b_rx + 32),
        "testpmd A's burst reached B"
    );
    assert_eq!(
        vs.port_stats("t0").unwrap()["drops"],
        serde_json::json!({}),
        "nothing dropped on the sender's port"
    );
    drop(ta);
    drop(tb);
    vs.stop();
}

/// Runtimes start pods at once: 50 CNI ADDs at the same time each get a
/// NIC and an address of their own, and 50 DELs at once leave nothing:
/// no port, no TAP, no IPAM lease, the mbufs back to where they were.
#[test]
fn fifty_concurrent_cni_adds_then_dels_leave_nothing_behind() {
    const N: usize = 50;
    let dir = TempDir::new("vs-dcni");
    let vs = common::start(&dir, &common::header(&dir));
    let baseline = common::quiescent_mbufs(&vs);
    let net = unique("dcni");
    let ipam_dir = dir.join("ipam");
    let conf = serde_json::json!({
        "cniVersion": "1.1.0",
        "name": net,
        "type": "vswitch-cni",
        "bridge": "vpc1",
        "controlSocket": Vswitchd::control_socket(&dir),
        "ipam": { "type": "host-local", "subnet": "10.95.0.0/24", "dataDir": ipam_dir },
    });
    let nss: Vec<Netns> = (0..N)
        .map(|i| Netns::create(&format!("{net}-{i}")).unwrap())
        .collect();
    let id = |i: usize| format!("container-{i}");
    let (conf, id) = (&conf, &id);
    let all = |cmd: &str| -> Vec<(serde_json::Value, i32)> {
        std::thread::scope(|s| {
            let running: Vec<_> = nss
                .iter()
                .enumerate()
                .map(|(i, ns)| s.spawn(move || common::cni(cmd, Some(ns), &id(i), conf)))
                .collect();
            running.into_iter().map(|t| t.join().unwrap()).collect()
        })
    };

    let added = all("ADD");
    let mut addresses = Vec::new();
    for (i, (r, rc)) in added.iter().enumerate() {
        assert_eq!(*rc, 0, "ADD {i}: {r}");
        let a = common::addr_of(r);
        let shown = nss[i]
            .exec(&["ip", "-4", "addr", "show", "dev", "eth0"])
            .unwrap();
        assert!(shown.contains(&a), "container {i} has {a}: {shown}");
        addresses.push(a);
    }
    let mut unique_addresses = addresses.clone();
    unique_addresses.sort();
    unique_addresses.dedup();
    assert_eq!(unique_addresses.len(), N, "every container its own address");
    let ports = || {
        vs.request(serde_json::json!({"cmd": "port-list"}))
            .unwrap()
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(ports(), N);
    let last = addresses[N - 1].split('/').next().unwrap().to_string();
    assert!(
        nss[0]
            .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", &last])
            .is_ok_and(|o| o.contains("2 received")),
        "the first container pings the last"
    );

    for (i, (r, rc)) in all("DEL").iter().enumerate() {
        assert_eq!(*rc, 0, "DEL {i}: {r}");
    }
    assert_eq!(ports(), 0, "no port left");
    assert!(
        wait_until(Duration::from_secs(10), || nss
            .iter()
            .all(|ns| !ns.has_interface("eth0"))),
        "every TAP destroyed"
    );
    // host-local keeps one file per leased address (named by it), besides
    // its bookkeeping files.
    let leases: Vec<String> = std::fs::read_dir(ipam_dir.join(&net))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(leases.is_empty(), "IPAM leases left: {leases:?}");
    common::assert_mbufs_back_to(&vs, baseline);
    vs.stop();
}

/// 100 NICs plugged (ten clients at once) and unplugged while two other
/// containers talk: not one of their datagrams is lost, and a plugged NIC
/// works while it is there.
#[test]
fn a_hundred_nics_plugged_and_unplugged_under_traffic_lose_nothing() {
    const N: usize = 100;
    let dir = TempDir::new("vs-dhp");
    let tag = unique("dhp");
    let a = Netns::create(&format!("{tag}-a")).unwrap();
    let b = Netns::create(&format!("{tag}-b")).unwrap();
    let cfg = common::header(&dir)
        + &common::tap_port("a", &a, "02:00:00:8a:00:01", "10.90.0.1/16")
        + &common::tap_port("b", &b, "02:00:00:8a:00:02", "10.90.0.2/16");
    let vs = common::start(&dir, &cfg);
    let baseline = common::quiescent_mbufs(&vs);
    let nss: Vec<Netns> = (0..N)
        .map(|i| Netns::create(&format!("{tag}-{i}")).unwrap())
        .collect();
    let traffic = common::CountedTraffic::start(&a, &b, "10.90.0.2", &dir);

    // Ten clients at once, each plugging ten NICs.
    std::thread::scope(|s| {
        for chunk in nss.chunks(N / 10).enumerate() {
            let vs = &vs;
            s.spawn(move || {
                let (c, nss) = chunk;
                for (j, ns) in nss.iter().enumerate() {
                    let i = c * (N / 10) + j;
                    let r = vs.request(serde_json::json!({"cmd": "port-add", "port": {
                        "name": format!("h{i}"), "kind": "tap", "bridge": "vpc1",
                        "netns": ns.name(), "ipv4": format!("10.90.1.{}/16", i + 1),
                    }}));
                    assert!(r.is_ok(), "plugging h{i}: {r:?}");
                }
            });
        }
    });
    assert!(
        nss[N - 1]
            .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.90.0.1"])
            .is_ok_and(|o| o.contains("2 received")),
        "the last NIC plugged talks"
    );
    std::thread::scope(|s| {
        for c in 0..10 {
            let vs = &vs;
            s.spawn(move || {
                for i in c * (N / 10)..(c + 1) * (N / 10) {
                    let r =
                        vs.request(serde_json::json!({"cmd": "port-del", "name": format!("h{i}")}));
                    assert!(r.is_ok(), "unplugging h{i}: {r:?}");
                }
            });
        }
    });
    // Plugging and unplugging take about a second: a few hundred
    // datagrams cross meanwhile.
    let (sent, answered) = traffic.finish();
    assert!(sent > 100, "too little traffic to judge: {sent}");
    assert_eq!(sent, answered, "datagrams lost while NICs came and went");
    assert!(
        wait_until(Duration::from_secs(10), || nss
            .iter()
            .all(|ns| !ns.has_interface("eth0"))),
        "every unplugged TAP destroyed"
    );
    common::assert_mbufs_back_to(&vs, baseline);
    vs.stop();
}
