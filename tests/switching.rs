//! Frames between containers through vswitchd, against real components:
//! kernel network namespaces on TAP NICs, and dpdk-testpmd on virtio-user.
//! Needs root, DPDK and hugepages (scripts/setup.sh).

mod common;

use std::time::Duration;

use testbed::netns::Netns;
use testbed::testpmd::{Testpmd, TestpmdOpts};
use testbed::vswitchd::TempDir;
use testbed::{unique, wait_until};

const UDP_ECHO_SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9000)); s.settimeout(15)
n = 0
while n < int(sys.argv[1]):
    data, peer = s.recvfrom(2048); s.sendto(data, peer); n += 1
print(n)
"#;

const UDP_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
ok = 0
for i in range(int(sys.argv[2])):
    msg = b"vswitchd-%d" % i
    s.sendto(msg, (sys.argv[1], 9000))
    try:
        if s.recv(2048) == msg: ok += 1
    except socket.timeout:
        pass
print(ok)
"#;

#[test]
fn tap_containers_ping_and_exchange_udp_with_matching_counters() {
    let dir = TempDir::new("vs-tap");
    let a = Netns::create(&unique("vsa")).unwrap();
    let b = Netns::create(&unique("vsb")).unwrap();
    let cfg = common::header(&dir)
        + &common::tap_port("ca", &a, "02:00:00:00:0a:01", "10.77.0.1/24")
        + &common::tap_port("cb", &b, "02:00:00:00:0a:02", "10.77.0.2/24");
    let vs = common::start(&dir, &cfg);
    let baseline = common::quiescent_mbufs(&vs);
    assert!(
        a.has_interface("eth0") && b.has_interface("eth0"),
        "NICs plumbed as eth0"
    );
    let mac = a.exec(&["cat", "/sys/class/net/eth0/address"]).unwrap();
    assert_eq!(mac.trim(), "02:00:00:00:0a:01");

    let ping = a.exec(&["ping", "-c", "5", "-i", "0.1", "-W", "2", "10.77.0.2"]);
    assert!(ping.is_ok(), "ping failed: {ping:?}");
    assert!(ping.unwrap().contains("5 received"));

    const N: usize = 200;
    let server = b
        .command("python3")
        .args(["-c", UDP_ECHO_SERVER, &N.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The server is up once its socket is bound: poll for it, no sleep.
    assert!(wait_until(Duration::from_secs(10), || b
        .exec(&["ss", "-uln", "sport", "= :9000"])
        .is_ok_and(|o| o.contains("9000"))));
    let out = a
        .exec(&["python3", "-c", UDP_CLIENT, "10.77.0.2", &N.to_string()])
        .unwrap();
    assert_eq!(out.trim(), N.to_string(), "every datagram echoed");
    let server_out = server.wait_with_output().unwrap();
    assert!(server_out.status.success());

    // Every frame a container sent reached the switch and every frame the
    // switch sent reached the other container: kernel counters = ours.
    let settled = wait_until(Duration::from_secs(5), || {
        let (ka_tx, kb_rx) = (
            a.if_counter("eth0", "tx_packets").unwrap(),
            b.if_counter("eth0", "rx_packets").unwrap(),
        );
        let (kb_tx, ka_rx) = (
            b.if_counter("eth0", "tx_packets").unwrap(),
            a.if_counter("eth0", "rx_packets").unwrap(),
        );
        vs.counter("ca", "rx_packets") == ka_tx
            && vs.counter("cb", "tx_packets") == kb_rx
            && vs.counter("cb", "rx_packets") == kb_tx
            && vs.counter("ca", "tx_packets") == ka_rx
    });
    let ca = vs.port_stats("ca").unwrap();
    let cb = vs.port_stats("cb").unwrap();
    assert!(settled, "counters disagree: ca={ca} cb={cb}");
    // 5 pings + N datagrams each way, plus ARP.
    assert!(ca["rx_packets"].as_u64().unwrap() >= 5 + N as u64);
    assert_eq!(
        ca["rx_packets"], cb["tx_packets"],
        "nothing lost in the switch"
    );
    assert_eq!(cb["rx_packets"], ca["tx_packets"]);
    assert_eq!(ca["drops"], serde_json::json!({}));

    let fdb = vs
        .request(serde_json::json!({"cmd": "fdb-show", "bridge": "vpc1"}))
        .unwrap();
    let macs: Vec<_> = fdb
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["mac"].clone(), e["port"].clone()))
        .collect();
    assert!(
        macs.contains(&("02:00:00:00:0a:01".into(), "ca".into())),
        "{fdb}"
    );
    assert!(
        macs.contains(&("02:00:00:00:0a:02".into(), "cb".into())),
        "{fdb}"
    );
    common::assert_mbufs_back_to(&vs, baseline);

    assert_eq!(vs.stop(), Some(0), "clean exit on SIGTERM");
    // The NIC outlives vswitchd (persistent TAP, for a restart to
    // re-attach) with its address; it goes with its container.
    assert!(
        a.exec(&["ip", "-4", "addr", "show", "dev", "eth0"])
            .is_ok_and(|o| o.contains("10.77.0.1/24")),
        "TAP kept in the container at exit"
    );
}

#[test]
fn dpdk_containers_exchange_frames_and_learned_unicast_is_not_flooded() {
    let dir = TempDir::new("vs-vhost");
    let (sa, sb) = (dir.join("a.sock"), dir.join("b.sock"));
    let cfg = common::header(&dir)
        + &format!(
            "[[port]]\nname = \"da\"\nkind = \"vhost-user\"\nbridge = \"vpc1\"\nsocket = \"{}\"\n\
             [[port]]\nname = \"db\"\nkind = \"vhost-user\"\nbridge = \"vpc1\"\nsocket = \"{}\"\n\
             [[port]]\nname = \"sink\"\nkind = \"null\"\nbridge = \"vpc1\"\nno_rx = true\n",
            sa.display(),
            sb.display()
        );
    let vs = common::start(&dir, &cfg);
    let baseline = common::quiescent_mbufs(&vs);
    const MAC_A: &str = "02:00:00:00:0d:01";
    const MAC_B: &str = "02:00:00:00:0d:02";
    let mut tb = Testpmd::start(
        "tp-b",
        &TestpmdOpts {
            socket: &sb,
            mac: MAC_B,
            peer: Some(MAC_A),
            ..Default::default()
        },
    )
    .unwrap();
    let mut ta = Testpmd::start(
        "tp-a",
        &TestpmdOpts {
            socket: &sa,
            mac: MAC_A,
            peer: Some(MAC_B),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || vs.link_up("da")
            && vs.link_up("db")),
        "vhost links up"
    );
    ta.cmd("start");
    tb.cmd("start");

    // B speaks first (one burst of 32 to A, unknown yet: flooded to A and
    // the sink). The switch learns B's MAC from it.
    tb.cmd("stop");
    tb.cmd("start tx_first 1");
    assert!(
        wait_until(Duration::from_secs(10), || vs.counter("sink", "tx_packets")
            == 32),
        "B's burst flooded"
    );

    // A sends 4 bursts of 32 to B: known unicast, so B only.
    ta.cmd("stop");
    ta.cmd("start tx_first 4");
    let delivered = wait_until(Duration::from_secs(10), || {
        vs.counter("db", "tx_packets") == 128
    });
    let (_, a_tx) = ta.port_stats().unwrap();
    let (b_rx, _) = tb.port_stats().unwrap();
    let report = vs.request(serde_json::json!({"cmd": "stats"})).unwrap();
    assert!(delivered, "B's port did not send 128: {report}");
    assert_eq!(a_tx, 128, "testpmd A sent 4 bursts of 32");
    assert_eq!(
        vs.counter("da", "rx_packets"),
        128,
        "switch received all of A's frames"
    );
    assert_eq!(b_rx, 128, "testpmd B received all of them");
    assert_eq!(
        vs.counter("sink", "tx_packets"),
        32,
        "learned unicast was not flooded: {report}"
    );
    assert_eq!(
        vs.port_stats("da").unwrap()["drops"],
        serde_json::json!({}),
        "{report}"
    );
    drop(ta);
    drop(tb);
    common::assert_mbufs_back_to(&vs, baseline);
    assert_eq!(vs.stop(), Some(0));
    assert!(
        !sa.exists() && !sb.exists(),
        "vhost sockets removed at exit"
    );
}

#[test]
fn jumbo_chains_flooded_to_several_ports_leave_the_pool_as_it_was() {
    // A DPDK container sends 9000-byte broadcast frames in chains of five
    // segments; the switch floods each to two sinks, so every segment of
    // the chain is shared by two outputs.
    let dir = TempDir::new("vs-jumbo");
    let sock = dir.join("j.sock");
    let cfg = common::header(&dir)
        + &format!(
            "[[port]]\nname = \"dj\"\nkind = \"vhost-user\"\nbridge = \"vpc1\"\nsocket = \"{}\"\n\
             [[port]]\nname = \"s1\"\nkind = \"null\"\nbridge = \"vpc1\"\nno_rx = true\n\
             [[port]]\nname = \"s2\"\nkind = \"null\"\nbridge = \"vpc1\"\nno_rx = true\n",
            sock.display()
        );
    let vs = common::start(&dir, &cfg);
    let mut tp = Testpmd::start(
        "tp-jumbo",
        &TestpmdOpts {
            socket: &sock,
            mac: "02:00:00:00:0e:01",
            peer: Some("ff:ff:ff:ff:ff:ff"),
            fwd: "txonly",
            ..Default::default()
        },
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(20), || vs.link_up("dj")));
    let baseline = common::quiescent_mbufs(&vs);
    tp.cmd("set txpkts 2000,2000,2000,2000,1000");
    tp.cmd("start");
    assert!(
        wait_until(Duration::from_secs(20), || vs.counter("s2", "tx_packets")
            >= 1000),
        "{}",
        vs.port_stats("s2").unwrap()
    );
    tp.cmd("stop");
    let rx = vs.counter("dj", "rx_packets");
    assert!(wait_until(Duration::from_secs(5), || {
        let now = vs.counter("dj", "rx_packets");
        std::thread::sleep(Duration::from_millis(50));
        now == vs.counter("dj", "rx_packets")
    }));
    assert!(rx >= 1000);
    let s1 = vs.port_stats("s1").unwrap();
    assert!(
        s1["tx_bytes"].as_u64().unwrap() >= 9000 * vs.counter("s1", "tx_packets"),
        "byte counters cover every segment: {s1}"
    );
    // Every segment came back to the pool, none twice.
    common::assert_mbufs_back_to(&vs, baseline);
}

/// Two workers, each receiving one container's frames, both sending to a
/// DPDK container that enabled one queue pair (virtio-user's default):
/// the worker whose tx queue the guest did not enable sends on the one
/// it did, so every frame arrives (none lost as `tx_full`).
#[test]
fn a_dpdk_container_with_one_queue_pair_gets_every_workers_frames() {
    let dir = TempDir::new("vs-1q");
    let sock = dir.join("q.sock");
    let (a, b) = (
        Netns::create(&unique("vqa")).unwrap(),
        Netns::create(&unique("vqb")).unwrap(),
    );
    // Worker 0 shares CPU 0 with the control thread and testpmd: it
    // sleeps when idle.
    let cfg = common::header(&dir).replace(
        "cores = [1]\nidle_sleep_us = 0",
        "cores = [0, 1]\nidle_sleep_us = 50",
    ) + &common::tap_port("ca", &a, "02:00:00:00:1a:01", "10.79.0.1/24")
        + "rx_workers = [0]\n"
        + &common::tap_port("cb", &b, "02:00:00:00:1a:02", "10.79.0.2/24")
        + "rx_workers = [1]\n"
        + &format!(
            "[[port]]\nname = \"dq\"\nkind = \"vhost-user\"\nbridge = \"vpc1\"\nsocket = \"{}\"\n",
            sock.display()
        );
    assert!(cfg.contains("cores = [0, 1]"), "two workers");
    let vs = common::start(&dir, &cfg);
    const MAC: &str = "02:00:00:00:1a:09";
    let mut tp = Testpmd::start(
        "tp-1q",
        &TestpmdOpts {
            socket: &sock,
            mac: MAC,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(20), || vs.link_up("dq")));
    // The snapshot follows the guest's rings within the second's sweep.
    assert!(
        wait_until(Duration::from_secs(5), || {
            vs.request(serde_json::json!({"cmd": "port-show", "name": "dq"}))
                .is_ok_and(|p| p["tx_queues"] == serde_json::json!([0, 0]))
        }),
        "{:?}",
        vs.request(serde_json::json!({"cmd": "port-show", "name": "dq"}))
    );
    tp.cmd("start");
    for ns in [&a, &b] {
        ns.exec(&[
            "ip",
            "neigh",
            "replace",
            "10.79.0.9",
            "lladdr",
            MAC,
            "dev",
            "eth0",
        ])
        .unwrap();
    }
    let send = |ns: &Netns| {
        ns.exec(&[
            "ping",
            "-c",
            "200",
            "-i",
            "0.002",
            "-W",
            "0.01",
            "-q",
            "10.79.0.9",
        ])
        .ok();
    };
    std::thread::scope(|s| {
        s.spawn(|| send(&a));
        s.spawn(|| send(&b));
    });
    let (ca, cb) = (
        vs.counter("ca", "rx_packets"),
        vs.counter("cb", "rx_packets"),
    );
    assert!(ca >= 200 && cb >= 200, "both containers sent: {ca} {cb}");
    let dq = || vs.port_stats("dq").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let sent = dq()["tx_packets"].as_u64().unwrap();
            tp.rx_of(0).is_ok_and(|(rx, _)| rx == sent)
        }),
        "testpmd received what the switch sent: {} vs {:?}",
        dq(),
        tp.rx_of(0)
    );
    assert!(dq()["tx_packets"].as_u64().unwrap() >= 400, "{}", dq());
    assert_eq!(
        dq()["drops"],
        serde_json::json!({}),
        "nothing lost: {}",
        dq()
    );
    tp.cmd("stop");
}

/// A DPDK container killed (SIGKILL) while frames flow both ways through
/// its vhost-user NIC: the switch stays up, counts what it can no longer
/// deliver as `tx_error`, and the next container on the same socket gets
/// the traffic; no mbuf is lost on the way. (The vhost library destroys
/// the device on its own thread while a worker may be in the middle of a
/// burst to it: the worker must have let go of it first.)
#[test]
fn a_dpdk_container_killed_under_traffic_is_replaced_on_its_socket() {
    let dir = TempDir::new("vs-kill");
    let (ss, sg) = (dir.join("s.sock"), dir.join("g.sock"));
    let cfg = common::header(&dir)
        + &format!(
            "[[port]]\nname = \"src\"\nkind = \"vhost-user\"\nbridge = \"vpc1\"\nsocket = \"{}\"\n\
             [[port]]\nname = \"dg\"\nkind = \"vhost-user\"\nbridge = \"vpc1\"\nsocket = \"{}\"\n",
            ss.display(),
            sg.display()
        );
    let vs = common::start(&dir, &cfg);
    let baseline = common::quiescent_mbufs(&vs);
    const MAC_S: &str = "02:00:00:00:0f:01";
    const MAC_G: &str = "02:00:00:00:0f:02";
    let guest = |name: &str, fwd: &'static str| {
        Testpmd::start(
            name,
            &TestpmdOpts {
                socket: &sg,
                mac: MAC_G,
                peer: Some(MAC_S),
                fwd,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let mut s = Testpmd::start(
        "tp-src",
        &TestpmdOpts {
            socket: &ss,
            mac: MAC_S,
            peer: Some(MAC_G),
            fwd: "txonly",
            ..Default::default()
        },
    )
    .unwrap();
    // The guest returns what it gets (MACs swapped) to src.
    let mut g = guest("tp-guest", "macswap");
    assert!(
        wait_until(Duration::from_secs(20), || vs.link_up("src")
            && vs.link_up("dg")),
        "vhost links up"
    );
    // Both send: the switch dequeues from the guest and enqueues to it.
    g.cmd("start");
    s.cmd("start");
    assert!(
        wait_until(Duration::from_secs(20), || vs.counter("dg", "tx_packets")
            > 10_000
            && vs.counter("dg", "rx_packets") > 10_000),
        "traffic both ways: {}",
        vs.port_stats("dg").unwrap()
    );
    g.kill();
    assert!(
        wait_until(Duration::from_secs(10), || !vs.link_up("dg")),
        "the guest's device is gone"
    );
    let refused = |vs: &testbed::vswitchd::Vswitchd| {
        vs.port_stats("dg").unwrap()["drops"]["tx_error"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(10), || refused(&vs) > 1000),
        "frames for the dead guest are refused and counted: {}",
        vs.port_stats("dg").unwrap()
    );

    // The next container on the same socket receives the traffic.
    let mut g2 = guest("tp-guest2", "rxonly");
    g2.cmd("start");
    assert!(
        wait_until(Duration::from_secs(20), || g2
            .port_stats()
            .is_ok_and(|(rx, _)| rx > 10_000)),
        "the new guest receives: {}",
        vs.port_stats("dg").unwrap()
    );
    s.cmd("stop");
    drop(s);
    drop(g2);
    common::assert_mbufs_back_to(&vs, baseline);
    assert_eq!(vs.stop(), Some(0));
}
