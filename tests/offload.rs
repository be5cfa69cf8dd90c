//! Offloads end to end: kernel containers on vswitchd's own TAP NICs hand
//! the switch 64 KB TCP superframes with partial checksums; TAP to TAP
//! they cross whole, towards a DPDK container on vhost-user (no TSO, no
//! checksum offload) they are cut into segments with valid checksums.
//! Checked with the kernels at both ends (which verify checksums and
//! reassemble the stream) and with etherparse on captures. Needs root,
//! DPDK and hugepages.

mod common;

use std::time::Duration;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use testbed::netns::Netns;
use testbed::testpmd::Testpmd;
use testbed::vswitchd::TempDir;
use testbed::{unique, wait_until};

#[test]
fn tcp_between_tap_containers_crosses_the_switch_as_superframes() {
    tap_to_tap_superframes(false);
}

/// The same through the fallback TAP rx path (read(2) per frame, for
/// kernels without io_uring's multishot read).
#[test]
fn tcp_between_tap_containers_crosses_the_switch_as_superframes_without_io_uring() {
    tap_to_tap_superframes(true);
}

fn tap_to_tap_superframes(read_path: bool) {
    // The switch inherits the environment; tests of this binary run one
    // at a time (scripts/test.sh), so the variable reaches this one only.
    if read_path {
        std::env::set_var("VSWITCHD_TAP_IO", "read");
    } else {
        std::env::remove_var("VSWITCHD_TAP_IO");
    }
    let dir = TempDir::new("vs-gso");
    let a = Netns::create(&unique("gsa")).unwrap();
    let b = Netns::create(&unique("gsb")).unwrap();
    let cfg = common::header(&dir)
        + &common::tap_port("ca", &a, "02:00:00:00:1a:01", "10.78.0.1/24")
        + &common::tap_port("cb", &b, "02:00:00:00:1a:02", "10.78.0.2/24");
    let vs = common::start(&dir, &cfg);
    let baseline = common::quiescent_mbufs(&vs);
    std::env::remove_var("VSWITCHD_TAP_IO");
    let path =
        |v: &testbed::vswitchd::Vswitchd| v.output().into_iter().find(|l| l.contains("TAP queues"));
    assert!(wait_until(Duration::from_secs(10), || path(&vs).is_some()));
    let line = path(&vs).unwrap();
    assert_eq!(
        line.contains("through io_uring"),
        !read_path,
        "TAP rx path: {line}"
    );
    let offloads = a.exec(&["ethtool", "-k", "eth0"]).unwrap();
    assert!(
        offloads.contains("tcp-segmentation-offload: on"),
        "the NIC offers TSO: {offloads}"
    );

    let data = common::test_data(8 << 20);
    let got = common::tcp_transfer(&dir, &a, &b, "10.78.0.2", 7001, &data);
    assert!(got == data, "8 MB arrived byte-exact ({} bytes)", got.len());

    let ca = vs.port_stats("ca").unwrap();
    let cb = vs.port_stats("cb").unwrap();
    let rx_super = vs.counter("ca", "rx_superframes");
    let tx_super = vs.counter("cb", "tx_superframes");
    assert!(rx_super > 0, "superframes from the sender: {ca}");
    assert_eq!(rx_super, tx_super, "every superframe left whole: {ca} {cb}");
    assert_eq!(vs.counter("cb", "segmented"), 0, "{cb}");
    // 8 MB in 1448-byte segments would be ~5800 frames; superframes
    // carry it in far fewer.
    let frames = vs.counter("cb", "tx_packets");
    assert!(
        frames < (8 << 20) / 1448 / 4,
        "{frames} frames for 8 MB: not superframes: {cb}"
    );
    assert_eq!(ca["drops"], serde_json::json!({}), "{ca}");
    assert_eq!(cb["drops"], serde_json::json!({}), "{cb}");
    // Every superframe, segment and copy went back to the pool.
    common::assert_mbufs_back_to(&vs, baseline);
}

/// Sends one UDP datagram from `ns` with scapy, its checksum as given.
fn send_udp_raw(ns: &Netns, dst_mac: &str, src: &str, dst: &str, chksum: u16) {
    common::scapy(
        ns,
        &format!(
            "sendp(Ether(dst='{dst_mac}')/IP(src='{src}',dst='{dst}')/UDP(sport=4444,dport=5555,chksum={chksum})/Raw(b'z'*200), iface='eth0')"
        ),
    );
}

/// Sends one UDP datagram from `ns` through its socket (the kernel leaves
/// the checksum partial for the NIC).
fn send_udp_socket(ns: &Netns, dst: &str) {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.sendto(b'y'*300, ('{dst}', 5556))\n"
    );
    ns.exec(&["/usr/bin/python3", "-c", &script]).unwrap();
}

#[test]
fn superframes_to_a_dpdk_container_are_segmented_with_valid_checksums() {
    // c1 (TAP) -- vpc1 -- d1 (vhost-user) == testpmd io == d2 -- vpc2 -- c2 (TAP):
    // every frame between the kernel containers crosses a DPDK container
    // whose virtio-user NICs negotiated no offloads.
    let dir = TempDir::new("vs-seg");
    let a = Netns::create(&unique("sga")).unwrap();
    let b = Netns::create(&unique("sgb")).unwrap();
    let (s1, s2) = (dir.join("d1.sock"), dir.join("d2.sock"));
    let cfg = common::header(&dir)
        + "[[bridge]]\nname = \"vpc2\"\n"
        + &common::tap_port("c1", &a, "02:00:00:00:1b:01", "10.79.0.1/24")
        + &format!(
            "[[port]]\nname = \"c2\"\nkind = \"tap\"\nbridge = \"vpc2\"\nnetns = \"{}\"\n\
             mac = \"02:00:00:00:1b:02\"\nipv4 = \"10.79.0.2/24\"\n\
             [[port]]\nname = \"d1\"\nkind = \"vhost-user\"\nbridge = \"vpc1\"\nsocket = \"{}\"\n\
             [[port]]\nname = \"d2\"\nkind = \"vhost-user\"\nbridge = \"vpc2\"\nsocket = \"{}\"\n",
            b.name(),
            s1.display(),
            s2.display()
        );
    let vs = common::start(&dir, &cfg);
    let baseline = common::quiescent_mbufs(&vs);
    let mut tp = Testpmd::spawn(
        "tp-wire",
        &["--lcores", "0@0,1@0"],
        &[
            format!(
                "net_virtio_user0,path={},mac=02:00:00:00:1b:0d",
                s1.display()
            ),
            format!(
                "net_virtio_user1,path={},mac=02:00:00:00:1b:0e",
                s2.display()
            ),
        ],
        &["--forward-mode=io".to_string()],
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || vs.link_up("d1")
            && vs.link_up("d2")),
        "vhost links up"
    );
    tp.cmd("start");

    // Capture what c2's kernel receives (before it checks anything).
    let pcap = dir.join("c2.pcap");
    let mut cap = common::capture(
        &b,
        &pcap,
        &[
            "-i",
            "eth0",
            "-s",
            "2000",
            "-c",
            "300",
            "src",
            "10.79.0.1",
            "and",
            "(tcp or udp)",
        ],
    );

    // A datagram with a checksum the container got wrong on purpose
    // (raw socket, no offload) must arrive as wrong as it left; one whose
    // checksum the kernel left to the NIC must arrive completed.
    send_udp_raw(&a, "02:00:00:00:1b:02", "10.79.0.1", "10.79.0.2", 0xbad1);
    send_udp_socket(&a, "10.79.0.2");
    let data = common::test_data(4 << 20);
    let got = common::tcp_transfer(&dir, &a, &b, "10.79.0.2", 7002, &data);
    assert!(got == data, "4 MB arrived byte-exact ({} bytes)", got.len());
    assert_eq!(
        cap.wait_exit(Duration::from_secs(20)),
        Some(0),
        "capture done"
    );

    let frames = common::pcap_records(&pcap);
    let (mut tcp, mut bad_udp, mut good_udp) = (0, 0, 0);
    for f in &frames {
        assert!(f.len() <= 1514, "a {}-byte frame: not segmented", f.len());
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4: {f:02x?}")
        };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
        match &p.transport {
            Some(TransportSlice::Tcp(t)) => {
                let want = t.calc_checksum_ipv4(h.source, h.destination).unwrap();
                assert_eq!(t.checksum(), want, "TCP checksum of {f:02x?}");
                assert!(t.payload().len() <= 1448, "MSS respected");
                tcp += 1;
            }
            Some(TransportSlice::Udp(u)) => {
                let want = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
                if u.checksum() == 0xbad1 {
                    bad_udp += 1;
                } else {
                    assert_eq!(u.checksum(), want, "UDP checksum completed");
                    good_udp += 1;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((bad_udp, good_udp), (1, 1), "both datagrams seen as sent");
    assert!(tcp > 200, "{tcp} TCP segments captured");

    let d1 = vs.port_stats("d1").unwrap();
    assert!(vs.counter("c1", "rx_superframes") > 0, "{d1}");
    assert!(
        vs.counter("d1", "segmented") > 0 && vs.counter("d1", "tx_superframes") == 0,
        "superframes cut for the vhost-user port: {d1}"
    );
    // The DPDK container shares CPU 0 with the TCP apps: its ring may fill
    // (tx_full, which TCP recovers from); a segment the switch got wrong
    // would show as malformed.
    assert!(d1["drops"].get("malformed").is_none(), "{d1}");
    drop(tp);
    // Every superframe, segment and copy went back to the pool.
    common::assert_mbufs_back_to(&vs, baseline);
}

/// Sends one frame from `ns`'s eth0 through a packet socket with a
/// virtio-net header of the caller's choosing (PACKET_VNET_HDR): what a
/// hostile container with CAP_NET_RAW can put in front of a frame.
const VNET_SENDER: &str = r#"
import socket, struct, sys
from scapy.all import Ether, IP, TCP, Raw
gso_size = int(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR
s.bind(('eth0', 0))
f = bytes(Ether(dst='02:00:00:00:1c:02', src='02:00:00:00:1c:01')/IP(src='10.81.0.1', dst='10.81.0.2')/TCP(sport=1, dport=2, flags='A')/Raw(b'h' * 3000))
# flags NEEDS_CSUM, gso TCPV4, hdr_len 54, gso_size, csum_start 34, csum_offset 16
hdr = struct.pack('<BBHHHH', 1, 1, 54, gso_size, 34, 16)
s.send(hdr + f)
"#;

#[test]
fn a_hostile_virtio_net_header_is_dropped_and_counted() {
    let dir = TempDir::new("vs-vnet");
    let a = Netns::create(&unique("vha")).unwrap();
    let b = Netns::create(&unique("vhb")).unwrap();
    let cfg = common::header(&dir)
        + &common::tap_port("ca", &a, "02:00:00:00:1c:01", "10.81.0.1/24")
        + &common::tap_port("cb", &b, "02:00:00:00:1c:02", "10.81.0.2/24");
    let vs = common::start(&dir, &cfg);
    let baseline = common::quiescent_mbufs(&vs);
    assert!(a.exec(&["ping", "-c", "1", "-W", "2", "10.81.0.2"]).is_ok());
    let b_rx = b.if_counter("eth0", "rx_packets").unwrap();
    // A superframe claiming 1-byte segments (3000 of them): refused.
    a.exec(&["/usr/bin/python3", "-c", VNET_SENDER, "1"])
        .unwrap_or_else(|e| panic!("sender: {e}"));
    assert!(
        wait_until(Duration::from_secs(5), || {
            vs.port_stats("ca").unwrap()["drops"]["malformed"].as_u64() == Some(1)
        }),
        "{}",
        vs.port_stats("ca").unwrap()
    );
    // A sane one (1448-byte segments) crosses.
    a.exec(&["/usr/bin/python3", "-c", VNET_SENDER, "1448"])
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || vs
            .counter("cb", "tx_superframes")
            == 1),
        "{}",
        vs.port_stats("cb").unwrap()
    );
    assert_eq!(b.if_counter("eth0", "rx_packets").unwrap(), b_rx + 1);
    // The switch is fine.
    assert!(a.exec(&["ping", "-c", "1", "-W", "2", "10.81.0.2"]).is_ok());
    // Every superframe, segment and copy went back to the pool.
    common::assert_mbufs_back_to(&vs, baseline);
}

/// A TCP superframe (3 segments of 1448 bytes, 3054 bytes in all) from
/// `ns`'s eth0 to `dst_mac`, sent through a packet socket with its
/// virtio-net header, as the container's TCP would hand it to its NIC.
const SUPERFRAME_SENDER: &str = r#"
import socket, struct, sys
from scapy.all import Ether, IP, TCP, Raw
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR
s.bind(('eth0', 0))
f = bytes(Ether(dst=sys.argv[1], src='02:00:00:00:1d:01')/IP(src='10.82.0.1', dst='10.82.0.2')/TCP(sport=1, dport=2, flags='A')/Raw(b'g' * 3000))
s.send(struct.pack('<BBHHHH', 1, 1, 54, 1448, 34, 16) + f)
"#;

#[test]
fn a_vhost_user_guest_that_negotiated_tso_gets_superframes_whole() {
    // d1's guest enables LRO and checksum offload (so it negotiates
    // GUEST_TSO4/6 and GUEST_CSUM); d2's guest negotiates nothing.
    let dir = TempDir::new("vs-gtso");
    let a = Netns::create(&unique("gta")).unwrap();
    let (s1, s2) = (dir.join("d1.sock"), dir.join("d2.sock"));
    let cfg = common::header(&dir)
        + &common::tap_port("c1", &a, "02:00:00:00:1d:01", "10.82.0.1/24")
        + &format!(
            "[[port]]\nname = \"d1\"\nkind = \"vhost-user\"\nbridge = \"vpc1\"\nsocket = \"{}\"\n\
             [[port]]\nname = \"d2\"\nkind = \"vhost-user\"\nbridge = \"vpc1\"\nsocket = \"{}\"\n",
            s1.display(),
            s2.display()
        );
    let vs = common::start(&dir, &cfg);
    let baseline = common::quiescent_mbufs(&vs);
    let guest = |name: &str, sock: &std::path::Path, mac: &str, lro: bool| {
        let mut app = vec!["--forward-mode=rxonly".to_string()];
        if lro {
            app.push("--rx-offloads=0x1c".into()); // UDP, TCP checksum; LRO
        }
        let mut t = Testpmd::spawn(
            name,
            &["--lcores", "0@0,1@0"],
            &[format!(
                "net_virtio_user0,path={},mac={mac}",
                sock.display()
            )],
            &app,
        )
        .unwrap();
        t.cmd("start");
        t
    };
    let mut lro = guest("tp-lro", &s1, "02:00:00:00:1d:0d", true);
    let mut plain = guest("tp-plain", &s2, "02:00:00:00:1d:0e", false);
    let offloads = |p: &str| {
        vs.request(serde_json::json!({"cmd": "port-show", "name": p}))
            .unwrap()["guest_offloads"]
            .clone()
    };
    assert!(
        wait_until(Duration::from_secs(20), || offloads("d1")["tso4"] == true),
        "d1's guest negotiated TSO: {}",
        offloads("d1")
    );
    assert_eq!(offloads("d2")["tso4"], false, "{}", offloads("d2"));

    // To an unknown MAC: flooded to both guests.
    a.exec(&[
        "/usr/bin/python3",
        "-c",
        SUPERFRAME_SENDER,
        "02:00:00:00:1d:ee",
    ])
    .unwrap_or_else(|e| panic!("sender: {e}"));
    assert!(wait_until(Duration::from_secs(10), || {
        lro.rx_of(0).is_ok_and(|r| r.0 >= 1) && plain.rx_of(0).is_ok_and(|r| r.0 >= 3)
    }));
    assert_eq!(lro.rx_of(0).unwrap(), (1, 3054), "one superframe, whole");
    // Three segments, each with the 54 bytes of headers.
    assert_eq!(plain.rx_of(0).unwrap(), (3, 3054 + 2 * 54), "cut in three");
    assert_eq!(vs.counter("d1", "tx_superframes"), 1);
    assert_eq!(vs.counter("d1", "segmented"), 0);
    assert_eq!(vs.counter("d2", "segmented"), 1);
    assert_eq!(vs.counter("d2", "tx_packets"), 3);
    // Every superframe, segment and copy went back to the pool.
    common::assert_mbufs_back_to(&vs, baseline);
}
