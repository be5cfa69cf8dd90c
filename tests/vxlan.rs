//! VXLAN tunnels against real peers: the Linux kernel's VXLAN device, and a
//! second vswitchd. Containers are network namespaces on TAP NICs; the
//! uplink is an AF_PACKET port on a veth. Needs root, DPDK and hugepages.

mod common;

use std::time::Duration;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use testbed::netns::{Netns, Veth};
use testbed::vswitchd::{TempDir, Vswitchd};
use testbed::{unique, wait_until};

/// A small per-test number so concurrent tests use distinct subnets.
fn subnet_id() -> u8 {
    (std::process::id() % 200) as u8 + 20
}

fn tap(name: &str, bridge: &str, ns: &Netns, mac: &str, ip: &str) -> String {
    // MTU 1450: the underlay's 1500 minus the 50 bytes of VXLAN headers.
    format!(
        "[[port]]\nname = \"{name}\"\nkind = \"tap\"\nbridge = \"{bridge}\"\nnetns = \"{}\"\n\
         mac = \"{mac}\"\nipv4 = \"{ip}\"\nmtu = 1450\n",
        ns.name()
    )
}

/// The tunnel ports of a `tunnel-list` (or `tunnel-set`) answer.
fn listed(answer: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    answer["tunnels"].as_array().expect("a tunnels list").iter()
}

/// Pings until one answer comes (ARP and neighbour resolution may take a
/// moment after start), bounded; then whether `count` more all arrive.
fn pings(ns: &Netns, ip: &str, count: u32) -> bool {
    wait_until(Duration::from_secs(15), || {
        ns.exec(&["ping", "-c", "1", "-W", "1", ip]).is_ok()
    }) && ns
        .exec(&["ping", "-c", &count.to_string(), "-i", "0.2", "-W", "2", ip])
        .is_ok_and(|o| o.contains(&format!("{count} received")))
}

/// Whether no ping from `ns` to `ip` gets through in `tries` seconds.
fn unreachable(ns: &Netns, ip: &str, tries: u32) -> bool {
    ns.exec(&["ping", "-c", &tries.to_string(), "-i", "1", "-W", "1", ip])
        .is_err()
}

/// The kernel side: netns `k` is a host with a kernel VTEP (VNI 100 bridged
/// to host netns `h`; VNIs 200 and 300 with addresses on the devices), its
/// underlay NIC the peer of vswitchd's uplink veth.
struct KernelPeer {
    k: Netns,
    h: Netns,
    uplink: Veth,
}

fn kernel_peer(n: u8) -> KernelPeer {
    let k = Netns::create(&unique("vxk")).unwrap();
    let h = Netns::create(&unique("vxh")).unwrap();
    let uplink = Veth::create(&unique("vxu"), "up0", Some(&k)).unwrap();
    let under = |host: u8| format!("10.{n}.0.{host}");
    let sh = |ns: &Netns, cmd: &str| {
        let args: Vec<&str> = cmd.split_whitespace().collect();
        ns.exec(&args).unwrap_or_else(|e| panic!("{cmd}: {e}"));
    };
    sh(&k, &format!("ip addr add {}/24 dev up0", under(2)));
    for vni in [100, 200, 300] {
        sh(
            &k,
            &format!(
                "ip link add vx{vni} type vxlan id {vni} dstport 4789 local {} remote {} dev up0",
                under(2),
                under(1)
            ),
        );
    }
    sh(&k, "ip link add br0 type bridge");
    sh(&k, "ip link set vx100 master br0");
    sh(
        &k,
        &format!("ip link add hk type veth peer name eth0 netns {}", h.name()),
    );
    sh(&k, "ip link set hk master br0");
    sh(&k, "ip addr add 192.168.100.9/24 dev vx200");
    sh(&k, "ip addr add 192.168.101.9/24 dev vx300");
    for dev in ["vx100", "vx200", "vx300", "br0", "hk"] {
        sh(&k, &format!("ip link set {dev} up"));
    }
    // veth leaves checksums to "hardware" (CHECKSUM_PARTIAL) and AF_PACKET
    // hands such frames over as they are: compute them in the kernel, as
    // a real NIC on the underlay would receive them complete.
    sh(&h, "ethtool -K eth0 tx off");
    sh(&k, "ethtool -K up0 tx off");
    sh(&h, "ip link set eth0 mtu 1450 address 02:00:00:64:00:02");
    sh(&h, "ip addr add 192.168.100.2/24 dev eth0");
    sh(&h, "ip link set eth0 up");
    KernelPeer { k, h, uplink }
}

#[test]
fn interop_with_the_kernel_vxlan_device() {
    let n = subnet_id();
    let peer = kernel_peer(n);
    let c = Netns::create(&unique("vxc")).unwrap();
    let d = Netns::create(&unique("vxd")).unwrap();
    let dir = TempDir::new("vs-vxlan");
    let cfg = Vswitchd::config_header(&dir, 256, "vpc100")
        + &format!(
            "vni = 100\nremote_vteps = [\"10.{n}.0.2\"]\n\n\
             [[bridge]]\nname = \"vpc200\"\nvni = 200\nremote_vteps = [\"10.{n}.0.2\"]\n\n\
             [vtep]\nuplink = \"uplink\"\nip = \"10.{n}.0.1/24\"\n\n\
             [[port]]\nname = \"uplink\"\nkind = \"af-packet\"\niface = \"{}\"\n",
            peer.uplink.name()
        )
        + &tap("c", "vpc100", &c, "02:00:00:64:00:01", "192.168.100.1/24")
        + &tap("d", "vpc200", &d, "02:00:00:c8:00:05", "192.168.100.5/24");
    let vs = common::start(&dir, &cfg);
    let baseline = common::quiescent_mbufs(&vs);
    let k = &peer.k;
    let h = &peer.h;

    // Capture the first VXLAN frames on the kernel's underlay NIC.
    let pcap = dir.join("underlay.pcap");
    let vtep_src = format!("10.{n}.0.1");
    let cap = common::capture(
        k,
        &pcap,
        &[
            "-i", "up0", "-c", "4", "udp", "port", "4789", "and", "src", &vtep_src,
        ],
    );

    // A container behind vswitchd pings the host behind the kernel VTEP.
    assert!(pings(&c, "192.168.100.2", 5), "ping across the tunnel");
    assert!(
        wait_until(Duration::from_secs(10), || common::pcap_records(&pcap)
            .len()
            >= 4),
        "4 VXLAN frames captured"
    );
    drop(cap);

    // What vswitchd put on the wire is well-formed VXLAN.
    let uplink_mac = peer.uplink.mac().unwrap();
    for f in common::pcap_records(&pcap) {
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4")
        };
        let hdr = ip.header().to_header();
        assert_eq!(hdr.header_checksum, hdr.calc_header_checksum());
        assert_eq!(hdr.source, [10, n, 0, 1]);
        assert_eq!(hdr.destination, [10, n, 0, 2]);
        assert!(hdr.dont_fragment);
        let Some(TransportSlice::Udp(u)) = &p.transport else {
            panic!("not UDP")
        };
        assert_eq!(u.destination_port(), 4789);
        assert!(u.source_port() >= 49152);
        assert_eq!(u.checksum(), 0);
        assert_eq!(usize::from(u.length()), f.len() - 34);
        let vx = u.payload();
        assert_eq!(vx[0], 0x08, "I flag");
        assert_eq!(u32::from_be_bytes([0, vx[4], vx[5], vx[6]]), 100);
        let mac = f[6..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(mac, uplink_mac, "outer source MAC is the uplink's");
        // The inner frame is the container's.
        let inner = SlicedPacket::from_ethernet(&vx[8..]).unwrap();
        assert_eq!(
            inner
                .link
                .unwrap()
                .to_header()
                .unwrap()
                .ethernet2()
                .unwrap()
                .source,
            [2, 0, 0, 0x64, 0, 1]
        );
    }

    // The inner MAC of the kernel's host is learned against the tunnel.
    let fdb = vs
        .request(serde_json::json!({"cmd": "fdb-show", "bridge": "vpc100"}))
        .unwrap();
    assert!(
        fdb.as_array().unwrap().iter().any(|e| e["mac"] == "02:00:00:64:00:02"
            && e["port"] == format!("vxlan100@10.{n}.0.2")),
        "{fdb}"
    );

    // TCP both ways, with full-size frames (the replies are ~290 kB).
    let _srv_h = common::tcp_server_with(h, 8080, "seq 1 50000");
    let _srv_c = common::tcp_server_with(&c, 8081, "seq 1 50000");
    for (from, to, port) in [(&c, "192.168.100.2", 8080), (h, "192.168.100.1", 8081)] {
        let got = common::tcp_fetch(from, to, port).unwrap_or_default();
        assert_eq!(got.lines().count(), 50000, "TCP to {to}:{port}");
        assert_eq!(got.lines().last(), Some("50000"));
    }

    // vswitchd answers the kernel's ARP for its VTEP address, and ping.
    k.exec(&["ip", "neigh", "flush", "dev", "up0"]).unwrap();
    let vtep = format!("10.{n}.0.1");
    assert!(pings(k, &vtep, 3), "ping to the VTEP address");
    let neigh = k
        .exec(&["ip", "neigh", "show", &vtep, "dev", "up0"])
        .unwrap();
    assert!(
        neigh.contains(&uplink_mac),
        "ARP answered with the uplink MAC: {neigh}"
    );

    // VNI 200 is another domain: the kernel's vx200 reaches D, never C.
    assert!(pings(k, "192.168.100.5", 3), "VNI 200 to its own container");
    assert!(
        unreachable(k, "192.168.100.1", 3),
        "VNI 200 reached VNI 100"
    );
    let vx200_mac = k.exec(&["cat", "/sys/class/net/vx200/address"]).unwrap();
    let fdb100 = vs
        .request(serde_json::json!({"cmd": "fdb-show", "bridge": "vpc100"}))
        .unwrap();
    assert!(
        !fdb100.to_string().contains(vx200_mac.trim()),
        "VNI 200 MAC leaked: {fdb100}"
    );
    // VNI 300 is served by no bridge: dropped and counted on the uplink.
    assert!(unreachable(k, "192.168.101.1", 2));
    let up = vs.port_stats("uplink").unwrap();
    assert!(
        up["drops"]["vxlan_unknown_vni"].as_u64().unwrap_or(0) >= 1,
        "{up}"
    );

    // Per-VNI and per-VTEP counters add up.
    let stats = vs.request(serde_json::json!({"cmd": "stats"})).unwrap();
    let vni100 = stats["vnis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vni"] == 100)
        .cloned()
        .unwrap();
    let tunnel = vs.port_stats(&format!("vxlan100@10.{n}.0.2")).unwrap();
    assert!(vni100["decap_packets"].as_u64().unwrap() > 100, "{vni100}");
    assert_eq!(vni100["decap_packets"], tunnel["rx_packets"]);
    assert_eq!(vni100["encap_packets"], tunnel["tx_packets"]);
    // Every decapsulated frame, tunnel copy and segment went back.
    common::assert_mbufs_back_to(&vs, baseline);
    vs.stop();
}

#[test]
fn tcp_superframes_into_a_kernel_vxlan_tunnel_are_segmented() {
    let n = subnet_id();
    let peer = kernel_peer(n);
    let c = Netns::create(&unique("vxs")).unwrap();
    let dir = TempDir::new("vs-vxgso");
    let cfg = Vswitchd::config_header(&dir, 256, "vpc100")
        + &format!(
            "vni = 100\nremote_vteps = [\"10.{n}.0.2\"]\n\n\
             [vtep]\nuplink = \"uplink\"\nip = \"10.{n}.0.1/24\"\n\n\
             [[port]]\nname = \"uplink\"\nkind = \"af-packet\"\niface = \"{}\"\n",
            peer.uplink.name()
        )
        + &tap("c", "vpc100", &c, "02:00:00:64:00:01", "192.168.100.1/24");
    let vs = common::start(&dir, &cfg);
    let baseline = common::quiescent_mbufs(&vs);
    let h = &peer.h;
    assert!(pings(&c, "192.168.100.2", 2), "ping across the tunnel");
    // The first frames may wait for ARP (no_neighbour); none after.
    let tunnel_name = format!("vxlan100@10.{n}.0.2");
    let drops_before = vs.port_stats(&tunnel_name).unwrap()["drops"].clone();

    // What the host behind the kernel VTEP receives, inner frames.
    let pcap = dir.join("inner.pcap");
    let mut cap = common::capture(
        h,
        &pcap,
        &[
            "-i",
            "eth0",
            "-s",
            "2000",
            "-c",
            "200",
            "tcp",
            "and",
            "src",
            "192.168.100.1",
        ],
    );
    let data = common::test_data(4 << 20);
    let got = common::tcp_transfer(&dir, &c, h, "192.168.100.2", 7003, &data);
    assert!(got == data, "4 MB arrived byte-exact ({} bytes)", got.len());
    assert_eq!(
        cap.wait_exit(Duration::from_secs(20)),
        Some(0),
        "capture done"
    );

    // MTU 1450 on the container: MSS 1410, 1398 bytes of payload beside
    // the timestamp option; no inner frame above 1464 bytes.
    for f in common::pcap_records(&pcap) {
        assert!(f.len() <= 1464, "a {}-byte inner frame", f.len());
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(TransportSlice::Tcp(t)) = &p.transport else {
            panic!("not TCP")
        };
        assert!(t.payload().len() <= 1410, "MSS respected");
    }
    let tunnel = vs.port_stats(&tunnel_name).unwrap();
    assert!(vs.counter("c", "rx_superframes") > 0);
    assert!(
        tunnel["segmented"].as_u64().unwrap() > 0,
        "superframes cut for the tunnel: {tunnel}"
    );
    assert_eq!(tunnel["drops"], drops_before, "{tunnel}");
    // Every decapsulated frame, tunnel copy and segment went back.
    common::assert_mbufs_back_to(&vs, baseline);
    vs.stop();
}

/// One host of the two-host test: a vswitchd whose uplink is `uplink`,
/// VTEP `10.N.1.<host>`, with a container in VNI 100 and one in VNI 200.
struct Host {
    vs: Vswitchd,
    vni100: Netns,
    vni200: Netns,
    _dir: TempDir,
}

fn host(n: u8, me: u8, other: u8, uplink: &str, learn_only_100: bool) -> Host {
    host_learning(n, me, other, uplink, learn_only_100, true)
}

/// [`host`], with VTEP learning on VNI 100 as `learn100` says.
fn host_learning(
    n: u8,
    me: u8,
    other: u8,
    uplink: &str,
    learn_only_100: bool,
    learn100: bool,
) -> Host {
    let dir = TempDir::new("vs-vxh");
    let vni100 = Netns::create(&unique("vx1")).unwrap();
    let vni200 = Netns::create(&unique("vx2")).unwrap();
    // With `learn_only_100`, VNI 100 lists no remote VTEP: the other host
    // becomes a tunnel port when its first frame arrives (if `learn100`).
    let remotes100 = if learn_only_100 {
        String::new()
    } else {
        format!("\"10.{n}.1.{other}\"")
    };
    // MACs age in 3 s, so a learned VTEP falls idle quickly.
    let cfg =
        Vswitchd::config_header_idle(&dir, 256, "vpc100", 20)
            + &format!(
            "mac_aging_secs = 3\nvni = 100\nremote_vteps = [{remotes100}]\nlearn_vteps = {learn100}\n\n\
             [[bridge]]\nname = \"vpc200\"\nvni = 200\nremote_vteps = [\"10.{n}.1.{other}\"]\n\n\
             [vtep]\nuplink = \"uplink\"\nip = \"10.{n}.1.{me}/24\"\n\n\
             [[port]]\nname = \"uplink\"\nkind = \"af-packet\"\niface = \"{uplink}\"\n"
        ) + &tap(
            "c100",
            "vpc100",
            &vni100,
            &format!("02:00:00:01:00:{me:02x}"),
            &format!("192.168.50.{me}/24"),
        ) + &tap(
            "c200",
            "vpc200",
            &vni200,
            &format!("02:00:00:02:00:{me:02x}"),
            &format!("192.168.50.{}/24", 10 + me),
        );
    Host {
        vs: common::start(&dir, &cfg),
        vni100,
        vni200,
        _dir: dir,
    }
}

#[test]
fn two_vswitchd_hosts_joined_by_their_uplinks() {
    let n = subnet_id();
    let a_if = unique("vxa");
    let b_if = unique("vxb");
    let _wire = Veth::create(&a_if, &b_if, None).unwrap();
    let a = host(n, 1, 2, &a_if, false);
    let b = host(n, 2, 1, &b_if, true);
    let baselines = [&a, &b].map(|h| common::quiescent_mbufs(&h.vs));

    // Same VNI: reachable across the tunnel, both ways.
    assert!(pings(&a.vni100, "192.168.50.2", 3), "VNI 100 a -> b");
    assert!(pings(&b.vni100, "192.168.50.1", 3), "VNI 100 b -> a");
    assert!(pings(&a.vni200, "192.168.50.12", 3), "VNI 200 a -> b");
    // B learned A as a VTEP of VNI 100 from its traffic.
    let tunnels =
        b.vs.request(serde_json::json!({"cmd": "tunnel-list"}))
            .unwrap();
    assert!(
        listed(&tunnels).any(|t| t["vni"] == 100
            && t["remote"] == format!("10.{n}.1.1")
            && t["learned"] == true),
        "{tunnels}"
    );
    // Different VNIs: not reachable, though the addresses share a subnet.
    assert!(
        unreachable(&a.vni100, "192.168.50.12", 3),
        "VNI 100 reached VNI 200"
    );
    assert!(
        unreachable(&b.vni200, "192.168.50.1", 3),
        "VNI 200 reached VNI 100"
    );
    for (h, baseline) in [&a, &b].into_iter().zip(baselines) {
        common::assert_mbufs_back_to(&h.vs, baseline);
    }
    a.vs.stop();
    b.vs.stop();
}

/// A hostile underlay: VXLAN from 20 spoofed VTEP addresses makes at most
/// `max_learned` tunnel ports, and a UDP flood at the VTEP's own address
/// is rate-limited before the slow path copies it, while the control
/// socket keeps answering at once.
#[test]
fn spoofed_vteps_and_floods_at_the_vtep_are_contained() {
    let n = subnet_id();
    let peer = kernel_peer(n);
    let c = Netns::create(&unique("vxf")).unwrap();
    let dir = TempDir::new("vs-vxf");
    let cfg = Vswitchd::config_header(&dir, 256, "vpc100")
        + &format!(
            "vni = 100\nlearn_vteps = true\n\n\
             [vtep]\nuplink = \"uplink\"\nip = \"10.{n}.0.1/24\"\nmax_learned = 4\n\n\
             [[port]]\nname = \"uplink\"\nkind = \"af-packet\"\niface = \"{}\"\n",
            peer.uplink.name()
        )
        + &tap("c", "vpc100", &c, "02:00:00:64:00:01", "192.168.100.1/24");
    let vs = common::start(&dir, &cfg);
    let baseline = common::quiescent_mbufs(&vs);
    let k = &peer.k;
    common::scapy(
        k,
        &format!(
            "sendp([Ether(dst='ff:ff:ff:ff:ff:ff')/IP(src='10.{n}.0.%d' % (100 + i),dst='10.{n}.0.1')/UDP(sport=4789,dport=4789)/VXLAN(vni=100,flags=0x08)/Ether(src='02:77:00:00:00:%02x' % i,dst='ff:ff:ff:ff:ff:ff')/ARP() for i in range(20)], iface='up0')"
        ),
    );
    let learned = || {
        let t = vs
            .request(serde_json::json!({"cmd": "tunnel-list"}))
            .unwrap();
        t["tunnels"]
            .as_array()
            .map_or(0, |l| l.iter().filter(|t| t["learned"] == true).count())
    };
    assert!(wait_until(Duration::from_secs(5), || learned() == 4));
    assert_eq!(learned(), 4, "the cap holds");

    let script = format!(
        "import socket, time\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         end = time.time() + 3\n\
         n = 0\n\
         while time.time() < end:\n\
         \x20   s.sendto(b'x' * 64, ('10.{n}.0.1', 9999))\n\
         \x20   n += 1\n\
         print(n)\n"
    );
    let mut flood = k.command("/usr/bin/python3");
    flood.args(["-c", &script]);
    let mut flood = testbed::process::Proc::spawn("flood", flood).unwrap();
    let mut slowest = Duration::ZERO;
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        let t = std::time::Instant::now();
        vs.request(serde_json::json!({"cmd": "stats"})).unwrap();
        slowest = slowest.max(t.elapsed());
    }
    assert_eq!(flood.wait_exit(Duration::from_secs(10)), Some(0));
    let sent: u64 = flood.output().last().unwrap().trim().parse().unwrap();
    eprintln!("flood: {sent} datagrams at the VTEP in 3 s; slowest stats answer {slowest:?}");
    assert!(
        slowest < Duration::from_millis(500),
        "stats took {slowest:?} during the flood"
    );
    let up = vs.port_stats("uplink").unwrap();
    let limited = up["drops"]["punt_limit"].as_u64().unwrap_or(0);
    let punted = up["punted"].as_u64().unwrap();
    assert!(limited > 0 && punted > 0, "{up}");
    assert!(punted <= 2000 * 5 + 256, "punts stay within the rate: {up}");
    // Every decapsulated frame, tunnel copy and segment went back.
    common::assert_mbufs_back_to(&vs, baseline);
}

/// Learned VTEPs are soft state: once spoofed VXLAN sources have taken
/// every free switch port, a hot-plugged NIC still gets one, the oldest
/// learned VTEP giving up its port, and the new NIC forwards at once.
#[test]
fn a_nic_takes_the_switch_port_of_the_oldest_learned_vtep() {
    let n = subnet_id();
    let peer = kernel_peer(n);
    let c = Netns::create(&unique("vxn")).unwrap();
    let d = Netns::create(&unique("vxn")).unwrap();
    let dir = TempDir::new("vs-vxn");
    let cfg = Vswitchd::config_header(&dir, 256, "vpc100")
        + &format!(
            "vni = 100\nlearn_vteps = true\n\n\
             [switch]\nmax_ports = 64\n\n\
             [vtep]\nuplink = \"uplink\"\nip = \"10.{n}.0.1/24\"\nmax_learned = 200\n\n\
             [[port]]\nname = \"uplink\"\nkind = \"af-packet\"\niface = \"{}\"\n",
            peer.uplink.name()
        )
        + &tap("c", "vpc100", &c, "02:00:00:64:00:01", "192.168.100.1/24");
    let vs = common::start(&dir, &cfg);
    let baseline = common::mbufs_in_use(&vs);
    // One frame per source, in order, so the first is the oldest.
    common::scapy(
        &peer.k,
        &format!(
            "import time\n\
             for i in range(80):\n\
             \x20   sendp(Ether(dst='ff:ff:ff:ff:ff:ff')/IP(src='10.{n}.0.%d' % (100 + i),dst='10.{n}.0.1')/UDP(sport=4789,dport=4789)/VXLAN(vni=100,flags=0x08)/Ether(src='02:77:00:00:00:%02x' % i,dst='ff:ff:ff:ff:ff:ff')/ARP(), iface='up0', verbose=False)\n\
             \x20   time.sleep(0.002)\n"
        ),
    );
    // The learned VTEPs, oldest first.
    let learned_by_age = || -> Vec<String> {
        let t = vs
            .request(serde_json::json!({"cmd": "tunnel-list"}))
            .unwrap();
        let mut l: Vec<(u64, String)> = t["tunnels"].as_array().map_or(Vec::new(), |l| {
            l.iter()
                .filter(|t| t["learned"] == true)
                .map(|t| {
                    let age = t["learned_ms_ago"].as_u64().expect("a learned VTEP's age");
                    (age, t["remote"].as_str().unwrap_or_default().to_string())
                })
                .collect()
        });
        l.sort_by_key(|e| std::cmp::Reverse(e.0));
        l.into_iter().map(|(_, r)| r).collect()
    };
    // 64 switch ports ([switch] max_ports): the uplink and c hold two,
    // the learned VTEPs the rest.
    let full = wait_until(Duration::from_secs(10), || learned_by_age().len() == 62);
    let before = learned_by_age();
    assert!(full, "learned VTEPs fill the port space: {}", before.len());
    // Usually 10.n.0.100, the first sent; but the peer's own VXLAN device
    // (10.n.0.2) may have been learned first, from its bridge's IPv6
    // multicast listener reports into VNI 100.
    let oldest = before[0].clone();
    assert!(
        [format!("10.{n}.0.100"), format!("10.{n}.0.2")].contains(&oldest),
        "{before:?}"
    );

    let add = vs.request(serde_json::json!({"cmd": "port-add", "port": {
        "name": "d", "kind": "tap", "bridge": "vpc100", "netns": d.name(),
        "mac": "02:00:00:64:00:03", "ipv4": "192.168.100.3/24", "mtu": 1450,
    }}));
    assert!(add.is_ok(), "the NIC gets a port: {add:?}");
    let after = learned_by_age();
    assert_eq!(after.len(), 61, "{after:?}");
    assert!(
        !after.contains(&oldest),
        "the oldest VTEP gave way: {after:?}"
    );
    assert!(pings(&c, "192.168.100.3", 2), "the new NIC forwards");
    common::assert_mbufs_back_to(&vs, baseline);
}

/// Two hosts that neither list nor learn each other on VNI 100 (what an
/// agent following a shared store starts from): isolated until each gets
/// its remote state in one `tunnel-set`, which also replaces it whole (an
/// empty one isolates them again) and refuses a bad entry without
/// changing anything.
#[test]
fn remote_state_set_in_one_request_joins_and_separates_two_hosts() {
    let n = subnet_id();
    let a_if = unique("vxa");
    let b_if = unique("vxb");
    let _wire = Veth::create(&a_if, &b_if, None).unwrap();
    let a = host_learning(n, 1, 2, &a_if, true, false);
    let b = host_learning(n, 2, 1, &b_if, true, false);
    let baselines = [&a, &b].map(|h| common::quiescent_mbufs(&h.vs));
    assert!(
        unreachable(&a.vni100, "192.168.50.2", 2),
        "no remote state yet"
    );

    let set = |h: &Host, me: u8, other: u8| {
        h.vs.request(serde_json::json!({
            "cmd": "tunnel-set",
            "bridge": "vpc100",
            "vteps": [format!("10.{n}.1.{other}")],
            "stations": [{
                "mac": format!("02:00:00:01:00:{other:02x}"),
                "vtep": format!("10.{n}.1.{other}"),
            }],
        }))
        .unwrap_or_else(|e| panic!("host {me}: {e}"))
    };
    let tunnels = set(&a, 1, 2);
    set(&b, 2, 1);
    assert!(
        listed(&tunnels).any(|t| t["vni"] == 100
            && t["remote"] == format!("10.{n}.1.2")
            && t["learned"] == false
            && t["flood"] == true),
        "{tunnels}"
    );
    assert!(pings(&a.vni100, "192.168.50.2", 3), "VNI 100 a -> b");
    assert!(pings(&b.vni100, "192.168.50.1", 3), "VNI 100 b -> a");

    // A bad station: refused, nothing changed.
    let e =
        a.vs.request(serde_json::json!({
            "cmd": "tunnel-set",
            "bridge": "vpc100",
            "vteps": [],
            "stations": [{"mac": "not-a-mac", "vtep": format!("10.{n}.1.2")}],
        }))
        .unwrap_err();
    assert!(e.contains("remote_mac"), "{e}");
    assert!(pings(&a.vni100, "192.168.50.2", 2), "still joined");

    // Emptied: isolated again, the tunnel port gone.
    let tunnels =
        a.vs.request(serde_json::json!({"cmd": "tunnel-set", "bridge": "vpc100"}))
            .unwrap();
    assert!(!listed(&tunnels).any(|t| t["vni"] == 100), "{tunnels}");
    assert!(unreachable(&a.vni100, "192.168.50.2", 2), "separated again");
    for (h, baseline) in [&a, &b].into_iter().zip(baselines) {
        common::assert_mbufs_back_to(&h.vs, baseline);
    }
    a.vs.stop();
    b.vs.stop();
}
