//! `vswitchctl port capture` during traffic: the pcap of a kernel
//! container's TAP NIC and of a DPDK container's vhost-user NIC holds
//! exactly the frames sent, read back with a pcap reader, while the
//! traffic itself loses nothing. Needs root, DPDK, hugepages, testpmd.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use etherparse::{SlicedPacket, TransportSlice};
use serde_json::json;
use testbed::netns::Netns;
use testbed::process::Proc;
use testbed::testpmd::{Testpmd, TestpmdOpts};
use testbed::vswitchd::{TempDir, Vswitchd};
use testbed::{unique, wait_until};

/// Every record of a pcap: (original length, captured bytes).
fn records(file: &Path) -> Vec<(u32, Vec<u8>)> {
    let mut r = pcap_file::pcap::PcapReader::new(File::open(file).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        out.push((p.orig_len, p.data.into_owned()));
    }
    out
}

/// The UDP payloads to `port` among `frames`, in order.
fn udp_payloads(frames: &[(u32, Vec<u8>)], port: u16) -> Vec<String> {
    frames
        .iter()
        .filter_map(|(_, f)| {
            let p = SlicedPacket::from_ethernet(f).ok()?;
            match p.transport? {
                TransportSlice::Udp(u) if u.destination_port() == port => {
                    Some(String::from_utf8_lossy(u.payload()).into_owned())
                }
                _ => None,
            }
        })
        .collect()
}

/// Sends `n` numbered UDP datagrams from `ns` to `ip:port`.
fn send_udp(ns: &Netns, ip: &str, port: u16, n: usize) {
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for i in range({n}): s.sendto(b'cap-%03d' % i, ('{ip}', {port}))\n"
    );
    ns.exec(&["/usr/bin/python3", "-c", &script]).unwrap();
}

/// Runs `vswitchctl port capture ARGS` in the background.
fn capture(socket: &Path, args: &[&str]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vswitchctl"));
    cmd.arg("--socket")
        .arg(socket)
        .args(["port", "capture"])
        .args(args);
    Proc::spawn("vswitchctl port capture", cmd).unwrap()
}

fn running(vs: &Vswitchd) -> bool {
    vs.request(json!({"cmd": "capture-status"})).unwrap()["running"] == true
}

#[test]
fn a_tap_nics_capture_holds_exactly_the_frames_sent() {
    let a = Netns::create(&unique("cpa")).unwrap();
    let b = Netns::create(&unique("cpb")).unwrap();
    let dir = TempDir::new("vs-cap");
    let cfg = common::header(&dir)
        + &common::tap_port("a", &a, "02:00:00:8b:00:01", "10.91.0.1/24")
        + &common::tap_port("b", &b, "02:00:00:8b:00:02", "10.91.0.2/24");
    let vs = common::start(&dir, &cfg);
    let socket = Vswitchd::control_socket(&dir);
    // a knows b's MAC for good: no ARP among the captured frames.
    a.exec(&[
        "ip",
        "neigh",
        "replace",
        "10.91.0.2",
        "lladdr",
        "02:00:00:8b:00:02",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])
    .unwrap();
    // b counts what it receives while a's NIC is captured.
    let mut cmd = b.command("/usr/bin/python3");
    cmd.args([
        "-c",
        "import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('10.91.0.2', 9999)); s.settimeout(5); n = 0\n\
         try:\n    while True: s.recv(64); n += 1\nexcept socket.timeout: pass\nprint('received', n)\n",
    ]);
    let mut receiver = Proc::spawn("udp receiver", cmd).unwrap();
    assert!(wait_until(Duration::from_secs(5), || b
        .exec(&["ss", "-lun", "sport = :9999"])
        .is_ok_and(|o| o.contains("9999"))));

    // What a sends, as a's NIC receives it (vswitchctl runs until stopped).
    let rx_file = dir.join("a-rx.pcap");
    let mut cap = capture(
        &socket,
        &["a", "-w", rx_file.to_str().unwrap(), "--direction", "rx"],
    );
    assert!(wait_until(Duration::from_secs(5), || running(&vs)));
    let before = vs.counter("b", "tx_packets");
    send_udp(&a, "10.91.0.2", 9999, 50);
    // Every datagram reached b's NIC, then the capture ends.
    assert!(wait_until(Duration::from_secs(5), || vs
        .counter("b", "tx_packets")
        == before + 50));
    let stopped = Command::new(env!("CARGO_BIN_EXE_vswitchctl"))
        .arg("--socket")
        .arg(&socket)
        .args(["port", "capture-stop"])
        .output()
        .unwrap();
    assert!(stopped.status.success(), "{stopped:?}");
    assert_eq!(cap.wait_exit(Duration::from_secs(10)), Some(0));
    let said = cap.output().join("\n");
    assert!(
        said.contains("frames written to") && said.contains("(0 dropped)"),
        "{said}"
    );
    let frames = records(&rx_file);
    let want: Vec<String> = (0..50).map(|i| format!("cap-{i:03}")).collect();
    assert_eq!(
        udp_payloads(&frames, 9999),
        want,
        "exactly the datagrams sent, in order"
    );
    assert!(
        frames.iter().all(|(len, f)| *len as usize == f.len()),
        "small frames whole"
    );

    // Sent to b's NIC, a counted capture that ends by itself.
    let tx_file = dir.join("b-tx.pcap");
    let mut cap = capture(
        &socket,
        &[
            "b",
            "-w",
            tx_file.to_str().unwrap(),
            "--direction",
            "tx",
            "--count",
            "50",
        ],
    );
    assert!(wait_until(Duration::from_secs(5), || running(&vs)));
    send_udp(&a, "10.91.0.2", 9999, 50);
    assert_eq!(
        cap.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{:?}",
        cap.output()
    );
    let frames = records(&tx_file);
    assert_eq!(frames.len(), 50);
    assert_eq!(udp_payloads(&frames, 9999), want);

    assert_eq!(receiver.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(
        receiver.output().iter().any(|l| l == "received 100"),
        "the captured traffic lost nothing: {:?}",
        receiver.output()
    );
    // One capture at a time; paths vswitchd cannot write are refused.
    let (code, _, err) = {
        let o = Command::new(env!("CARGO_BIN_EXE_vswitchctl"))
            .arg("--socket")
            .arg(&socket)
            .args(["port", "capture", "nope", "-w", "/tmp/x.pcap"])
            .output()
            .unwrap();
        (
            o.status.code(),
            o.stdout,
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no port named \"nope\""), "{err}");
    let e = vs
        .request(json!({"cmd": "port-capture", "name": "a", "file": "/nonexistent-dir/x.pcap"}))
        .unwrap_err();
    assert!(e.contains("directory does not exist"), "{e}");
}

#[test]
fn a_vhost_user_nics_capture_holds_exactly_the_frames_its_guest_sent() {
    let dir = TempDir::new("vs-capv");
    let (sa, sb) = (dir.join("a.sock"), dir.join("b.sock"));
    let cfg = common::header(&dir)
        + &format!(
            "[[port]]\nname = \"da\"\nkind = \"vhost-user\"\nbridge = \"vpc1\"\nsocket = \"{}\"\n\
             [[port]]\nname = \"db\"\nkind = \"vhost-user\"\nbridge = \"vpc1\"\nsocket = \"{}\"\n",
            sa.display(),
            sb.display()
        );
    let vs = common::start(&dir, &cfg);
    const MAC_A: &str = "02:00:00:00:0e:01";
    const MAC_B: &str = "02:00:00:00:0e:02";
    let mut tb = Testpmd::start(
        "tp-cap-b",
        &TestpmdOpts {
            socket: &sb,
            mac: MAC_B,
            peer: Some(MAC_A),
            ..Default::default()
        },
    )
    .unwrap();
    let mut ta = Testpmd::start(
        "tp-cap-a",
        &TestpmdOpts {
            socket: &sa,
            mac: MAC_A,
            peer: Some(MAC_B),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(20), || vs.link_up("da")
        && vs.link_up("db")));
    tb.cmd("start");
    // B first, so the switch knows where B is (A's frames then go to B
    // alone).
    tb.cmd("stop");
    tb.cmd("start tx_first 1");
    assert!(wait_until(Duration::from_secs(10), || vs
        .counter("da", "tx_packets")
        == 32));

    let file = dir.join("da.pcap");
    let started = vs
        .request(json!({"cmd": "port-capture", "name": "da", "file": file, "direction": "rx"}))
        .unwrap();
    assert_eq!(started["running"], true, "{started}");
    ta.cmd("start tx_first 4");
    assert!(
        wait_until(Duration::from_secs(10), || vs.counter("db", "tx_packets")
            == 128),
        "B's NIC was sent A's 128 frames"
    );
    let status = vs.request(json!({"cmd": "capture-stop"})).unwrap();
    assert_eq!(
        (status["frames"].as_u64(), status["dropped"].as_u64()),
        (Some(128), Some(0)),
        "{status}"
    );
    let frames = records(&file);
    assert_eq!(frames.len(), 128);
    for (_, f) in &frames {
        assert_eq!(&f[..6], &[2, 0, 0, 0, 0x0e, 2], "to B");
        assert_eq!(&f[6..12], &[2, 0, 0, 0, 0x0e, 1], "from A");
    }
    let (_, a_tx) = ta.port_stats().unwrap();
    let (b_rx, _) = tb.port_stats().unwrap();
    assert_eq!(
        (a_tx, b_rx),
        (128, 128),
        "the captured traffic lost nothing"
    );
}
