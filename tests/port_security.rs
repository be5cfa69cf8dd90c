//! Port security against hostile containers: a container (network
//! namespace on a vswitchd TAP NIC) crafts frames with scapy, as one with
//! CAP_NET_RAW can, and its neighbours' traffic, neighbour tables and
//! counters show what got through.

mod common;

use testbed::netns::Netns;
use testbed::unique;
use testbed::vswitchd::TempDir;

const A: &str = "10.40.0.1";
/// B is also A's default gateway.
const B: &str = "10.40.0.2";
const M: &str = "10.40.0.3";
const R: &str = "10.40.0.4";
const VIP: &str = "10.40.0.100";
const A_MAC: &str = "02:00:00:00:40:01";
const B_MAC: &str = "02:00:00:00:40:02";
const M_MAC: &str = "02:00:00:00:40:03";
const R_MAC: &str = "02:00:00:00:40:04";

/// Containers a, b (a's gateway), m (the attacker, with one virtual IP
/// allowed) and r (a router: port security off), each on a TAP in vpc1;
/// b accepts nothing but ping.
struct Rig {
    /// Checks the main mbuf pool is back where it started when dropped:
    /// first of the fields, so before the containers and the directory go.
    vs: common::Checked,
    a: Netns,
    b: Netns,
    m: Netns,
    r: Netns,
    dir: TempDir,
}

fn rig() -> Rig {
    let dir = TempDir::new("vs-psec");
    let a = Netns::create(&unique("vpa")).unwrap();
    let b = Netns::create(&unique("vpb")).unwrap();
    let m = Netns::create(&unique("vpm")).unwrap();
    let r = Netns::create(&unique("vpr")).unwrap();
    let config = format!(
        r#"{header}
[[security_group]]
name = "ping-only"
default = "deny"
[[security_group.rule]]
name = "ping"
priority = 1
action = "allow"
proto = "icmp"

{pa}gateway = "{B}"
{pb}ingress_group = "ping-only"
{pm}allowed_addresses = ["{VIP}"]
{pr}port_security = false
"#,
        header = common::header(&dir),
        pa = common::tap_port("a", &a, A_MAC, &format!("{A}/24")),
        pb = common::tap_port("b", &b, B_MAC, &format!("{B}/24")),
        pm = common::tap_port("m", &m, M_MAC, &format!("{M}/24")),
        pr = common::tap_port("r", &r, R_MAC, &format!("{R}/24")),
    );
    let vs = common::start_linked(&dir, &config, &["a", "b", "m", "r"]);
    Rig {
        a,
        b,
        m,
        r,
        dir,
        vs,
    }
}

impl Rig {
    fn drops(&self, port: &str, reason: &str) -> u64 {
        common::stat(&self.vs, port, &["drops", reason])
    }

    /// Which port the bridge has `mac` behind.
    fn fdb_port(&self, mac: &str) -> Option<String> {
        let fdb = self
            .vs
            .request(serde_json::json!({"cmd": "fdb-show", "bridge": "vpc1"}))
            .unwrap();
        fdb.as_array()?
            .iter()
            .find(|e| e["mac"] == mac)
            .and_then(|e| e["port"].as_str().map(String::from))
    }
}

fn ping(from: &Netns, to: &str) -> bool {
    from.exec(&["ping", "-c", "1", "-W", "2", to]).is_ok()
}

#[test]
fn a_container_cannot_take_its_neighbours_mac() {
    let r = rig();
    assert!(ping(&r.a, B));
    assert_eq!(r.fdb_port(B_MAC).as_deref(), Some("b"));
    // m claims b's MAC: as a source, and with m's own address.
    common::scapy(
        &r.m,
        &format!(
            "sendp(Ether(src='{B_MAC}',dst='ff:ff:ff:ff:ff:ff')/IP(src='{M}',dst='{A}')/UDP(dport=9)/Raw(b'x'*20), iface='eth0', count=20)"
        ),
    );
    assert_eq!(r.drops("m", "spoofed"), 20);
    assert_eq!(r.fdb_port(B_MAC).as_deref(), Some("b"), "b's MAC stays b's");
    // a's traffic to b still reaches b, and none of it reaches m (whose
    // capture does see a's ping to m itself).
    let got = common::captured(
        &r.m,
        &r.dir.join("m.pcap"),
        &["-i", "eth0", "icmp"],
        2,
        || {
            for _ in 0..3 {
                assert!(ping(&r.a, B));
            }
            assert!(ping(&r.a, M));
        },
    );
    let b_mac: Vec<u8> = B_MAC
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    assert!(
        got.iter().all(|f| f[0..6] != b_mac[..]),
        "m saw b's traffic"
    );
    assert_eq!(got.len(), 2, "m saw only its own echo request and reply");
    // An unguarded port (a router) cannot move a guarded port's MAC either.
    common::scapy(
        &r.r,
        &format!(
            "sendp(Ether(src='{B_MAC}',dst='ff:ff:ff:ff:ff:ff')/IP(src='{R}',dst='{A}')/UDP(dport=9), iface='eth0', count=3)"
        ),
    );
    assert!(ping(&r.a, B));
    assert_eq!(r.fdb_port(B_MAC).as_deref(), Some("b"));
    assert_eq!(r.drops("b", "spoofed") + r.drops("a", "spoofed"), 0);
}

#[test]
fn forged_addresses_arp_for_the_gateway_and_dhcp_servers_are_dropped() {
    let r = rig();
    // a learns its gateway b.
    assert!(ping(&r.a, B));
    let got = common::captured(
        &r.a,
        &r.dir.join("a.pcap"),
        &["-i", "eth0", "udp", "port", "5555"],
        6,
        || {
            common::scapy(
            &r.m,
            &format!(
                "\
# b's address as the source of a datagram to a
sendp(Ether(src='{M_MAC}',dst='{A_MAC}')/IP(src='{B}',dst='{A}')/UDP(dport=5555), iface='eth0', count=5)
# ARP replies and requests saying the gateway is at m
sendp(Ether(src='{M_MAC}',dst='ff:ff:ff:ff:ff:ff')/ARP(op=2,hwsrc='{M_MAC}',psrc='{B}',hwdst='ff:ff:ff:ff:ff:ff',pdst='{B}'), iface='eth0', count=5)
sendp(Ether(src='{M_MAC}',dst='{A_MAC}')/ARP(op=1,hwsrc='{M_MAC}',psrc='{B}',pdst='{A}'), iface='eth0', count=5)
# an ARP reply with m's address but b's MAC inside
sendp(Ether(src='{M_MAC}',dst='{A_MAC}')/ARP(op=2,hwsrc='{B_MAC}',psrc='{M}',hwdst='{A_MAC}',pdst='{A}'), iface='eth0', count=1)
# a DHCP offer
sendp(Ether(src='{M_MAC}',dst='ff:ff:ff:ff:ff:ff')/IP(src='{M}',dst='255.255.255.255')/UDP(sport=67,dport=68)/BOOTP(op=2,yiaddr='{A}'), iface='eth0', count=1)
"
            ),
        );
            assert_eq!(r.drops("m", "spoofed"), 17);
            let neigh = r.a.exec(&["ip", "neigh", "show", B]).unwrap();
            assert!(neigh.contains(B_MAC), "a's gateway entry: {neigh}");
            assert!(ping(&r.a, B), "a still reaches its gateway");
            // What m may send does arrive: its own and its virtual address; and
            // a router (port security off) sends from anything.
            common::scapy(
            &r.m,
            &format!(
                "sendp(Ether(src='{M_MAC}',dst='{A_MAC}')/IP(src='{VIP}',dst='{A}')/UDP(dport=5555), iface='eth0', count=2)\n\
                 sendp(Ether(src='{M_MAC}',dst='{A_MAC}')/IP(src='{M}',dst='{A}')/UDP(dport=5555), iface='eth0', count=2)"
            ),
        );
            common::scapy(
            &r.r,
            &format!(
                "sendp(Ether(src='{R_MAC}',dst='{A_MAC}')/IP(src='192.0.2.7',dst='{A}')/UDP(dport=5555), iface='eth0', count=2)"
            ),
        );
        },
    );
    let sources: Vec<[u8; 4]> = got.iter().map(|f| f[26..30].try_into().unwrap()).collect();
    let (vip, own, other) = ([10, 40, 0, 100], [10, 40, 0, 3], [192, 0, 2, 7]);
    assert_eq!(
        sources,
        [vip, vip, own, own, other, other],
        "a got only the allowed datagrams, none from b's address"
    );
    assert_eq!(r.drops("m", "spoofed"), 17);

    // An address given at run time (vswitchctl port set) is m's to use.
    let from_77 = || {
        common::scapy(
            &r.m,
            &format!(
                "sendp(Ether(src='{M_MAC}',dst='{A_MAC}')/IP(src='10.40.0.77',dst='{A}')/UDP(dport=5555), iface='eth0')"
            ),
        )
    };
    from_77();
    assert_eq!(r.drops("m", "spoofed"), 18);
    let set = |fields: serde_json::Value| {
        r.vs.request(serde_json::json!({"cmd": "port-set", "name": "m", "fields": fields}))
    };
    set(serde_json::json!({"allowed_addresses": [VIP, "10.40.0.77"]})).unwrap();
    from_77();
    assert_eq!(r.drops("m", "spoofed"), 18, "10.40.0.77 is allowed now");
    assert_eq!(
        r.fdb_port(M_MAC).as_deref(),
        Some("m"),
        "m's MAC is pinned again"
    );
    let e = set(serde_json::json!({"kind": "pcap"})).unwrap_err();
    assert!(e.contains("cannot change"), "{e}");
    let e = set(serde_json::json!({"addresses": ["not-an-ip"]})).unwrap_err();
    assert!(e.contains("addresses[0]"), "{e}");
}

#[test]
fn tagged_frames_stacks_and_other_ethertypes_are_refused() {
    let r = rig();
    // Three tags around an IPv4 ping to b, which accepts pings: from the
    // guarded m (forbidden) and from the unguarded r (malformed), plus
    // one tag and an LLDP frame from m.
    let inner = format!("IP(src='{{src}}',dst='{B}')/ICMP()");
    let three = |mac: &str, src: &str| {
        format!(
            "sendp(Ether(src='{mac}',dst='{B_MAC}')/Dot1Q(vlan=0)/Dot1Q(vlan=0)/Dot1Q(vlan=0)/{}, iface='eth0', count=3)",
            inner.replace("{src}", src)
        )
    };
    // b received none of them; a plain ping from m still works.
    let got = common::captured(
        &r.b,
        &r.dir.join("b.pcap"),
        &["-i", "eth0", "not", "arp"],
        2,
        || {
            common::scapy(
            &r.m,
            &format!(
                "{}\nsendp(Ether(src='{M_MAC}',dst='{B_MAC}')/Dot1Q(vlan=7)/{}, iface='eth0', count=2)\n\
                 sendp(Ether(src='{M_MAC}',dst='01:80:c2:00:00:0e',type=0x88cc)/Raw(b'\\x02\\x07\\x04'*10), iface='eth0', count=1)",
                three(M_MAC, M),
                inner.replace("{src}", M)
            ),
        );
            common::scapy(&r.r, &three(R_MAC, R));
            assert!(ping(&r.m, B));
        },
    );
    assert_eq!(r.drops("m", "forbidden"), 6);
    assert_eq!(r.drops("r", "malformed"), 3);
    assert!(
        got.iter().all(|f| f[12..14] == [0x08, 0x00]),
        "only untagged IPv4 reached b: {} frames",
        got.len()
    );
    assert_eq!(got.len(), 2, "the echo request and its reply");
}
