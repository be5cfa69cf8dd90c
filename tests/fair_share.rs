//! Fair shares of the switch's tables: one container flooding the session
//! table or the MAC table (crafting frames with scapy, as any container
//! with CAP_NET_RAW can) while its neighbours keep working.

mod common;

use testbed::netns::Netns;
use testbed::unique;
use testbed::vswitchd::TempDir;

const A: &str = "10.41.0.1";
const B: &str = "10.41.0.2";
const M: &str = "10.41.0.3";
const A_MAC: &str = "02:00:00:00:41:01";
const B_MAC: &str = "02:00:00:00:41:02";
const M_MAC: &str = "02:00:00:00:41:03";

/// a (client), b (server: TCP 80 and any UDP in) and m (the attacker:
/// port security off, as for a router, so that it may forge MACs; any
/// egress allowed, so each of its datagrams opens a session). Sessions:
/// 200 per port; the bridge's MAC table: 256 entries.
struct Rig {
    /// Checks the main mbuf pool is back where it started when dropped:
    /// first of the fields, so before the containers and the directory go.
    vs: common::Checked,
    a: Netns,
    b: Netns,
    m: Netns,
    dir: TempDir,
}

fn rig() -> Rig {
    let dir = TempDir::new("vs-fair");
    let a = Netns::create(&unique("vfa")).unwrap();
    let b = Netns::create(&unique("vfb")).unwrap();
    let m = Netns::create(&unique("vfm")).unwrap();
    let config = format!(
        r#"{header}mac_table_size = 256

[sessions]
capacity = 4096
per_port = 200

[[security_group]]
name = "server"
default = "deny"
[[security_group.rule]]
name = "http"
priority = 2
action = "allow"
proto = "tcp"
dst_ports = "80"
[[security_group.rule]]
name = "udp"
priority = 1
action = "allow"
proto = "udp"

[[security_group]]
name = "any"
default = "allow"

{pa}egress_group = "any"
{pb}ingress_group = "server"
{pm}port_security = false
egress_group = "any"
"#,
        header = common::header(&dir),
        pa = common::tap_port("a", &a, A_MAC, &format!("{A}/24")),
        pb = common::tap_port("b", &b, B_MAC, &format!("{B}/24")),
        pm = common::tap_port("m", &m, M_MAC, &format!("{M}/24")),
    );
    let vs = common::start_linked(&dir, &config, &["a", "b", "m"]);
    Rig { a, b, m, dir, vs }
}

impl Rig {
    fn stat(&self, port: &str, path: &[&str]) -> u64 {
        common::stat(&self.vs, port, path)
    }
}

#[test]
fn one_container_exhausting_sessions_leaves_the_others_their_share() {
    let r = rig();
    let _server = common::tcp_server(&r.b, 80);
    assert!(common::tcp_works(&r.a, B, 80));
    // 1000 datagrams to distinct ports: 1000 sessions wanted, 200 allowed.
    common::scapy(
        &r.m,
        &format!(
            "sendp([Ether(src='{M_MAC}',dst='{B_MAC}')/IP(src='{M}',dst='{B}')/UDP(sport=7,dport=1000+i) for i in range(1000)], iface='eth0')"
        ),
    );
    assert_eq!(r.stat("m", &["drops", "session_quota"]), 800);
    assert_eq!(r.stat("m", &["sessions"]), 200);
    // Stray ACKs open only unconfirmed sessions, charged the same way.
    common::scapy(
        &r.m,
        &format!(
            "sendp([Ether(src='{M_MAC}',dst='{B_MAC}')/IP(src='{M}',dst='{B}')/TCP(sport=9,dport=80,flags='A',seq=i) for i in range(50)], iface='eth0')"
        ),
    );
    assert_eq!(r.stat("m", &["drops", "session_quota"]), 850);
    // a still opens new connections.
    for _ in 0..5 {
        assert!(common::tcp_works(&r.a, B, 80), "a's new connection");
    }
    assert!(r.stat("a", &["sessions"]) >= 5);
    assert_eq!(r.stat("a", &["drops", "session_quota"]), 0);
    let totals = r.vs.request(serde_json::json!({"cmd": "stats"})).unwrap();
    assert_eq!(
        totals["sessions"]["per_port"], 200,
        "{}",
        totals["sessions"]
    );
}

#[test]
fn one_container_flooding_mac_addresses_leaves_the_others_unicast() {
    let r = rig();
    let _server = common::tcp_server(&r.b, 80);
    assert!(common::tcp_works(&r.a, B, 80));
    // m's own MAC is known (one of its 64).
    assert!(r.m.exec(&["ping", "-c", "1", "-W", "2", A]).is_ok());
    // 500 forged source MACs: the bridge's table holds 256, m may hold 64.
    common::scapy(
        &r.m,
        "sendp([Ether(src='02:66:00:00:%02x:%02x' % (i // 256, i % 256),dst='ff:ff:ff:ff:ff:ff')/IP(src='10.41.0.3',dst='10.41.0.255')/UDP(dport=9) for i in range(500)], iface='eth0')",
    );
    let limited = r.stat("m", &["drops", "mac_limit"]);
    assert_eq!(limited, 500 - 63, "dropped as mac_limit");
    let fdb =
        r.vs.request(serde_json::json!({"cmd": "fdb-show", "bridge": "vpc1"}))
            .unwrap();
    let on_m = fdb
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["port"] == "m")
        .count();
    assert!(on_m <= 64, "{on_m} MACs behind m");
    // a's unicast to b is still unicast: m (which does see a's ping to
    // m itself) sees none of it.
    let got = common::captured(
        &r.m,
        &r.dir.join("m.pcap"),
        &["-i", "eth0", "icmp", "or", "tcp"],
        2,
        || {
            for _ in 0..3 {
                assert!(common::tcp_works(&r.a, B, 80));
            }
            assert!(r.a.exec(&["ping", "-c", "1", "-W", "2", M]).is_ok());
        },
    );
    assert_eq!(got.len(), 2, "m saw only its own echo request and reply");
    assert_eq!(
        r.stat("b", &["learn_full"]) + r.stat("a", &["learn_full"]),
        0
    );
}
