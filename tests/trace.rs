//! `vswitchctl trace`: a frame described on the command line is told
//! stage by stage and names the rule of the group that decides it,
//! changing nothing; the next frames a port receives, traced live, show
//! the verdicts the counters show; `acl show` counts each rule's hits.
//! Needs root, DPDK and hugepages.

mod common;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use testbed::netns::Netns;
use testbed::process::Proc;
use testbed::vswitchd::{TempDir, Vswitchd};
use testbed::{unique, wait_until};

use common::{ctl, ctl_ok};

const C1_MAC: &str = "02:00:00:8c:00:01";
const C2_MAC: &str = "02:00:00:8c:00:02";

/// c2 admits TCP 80 and syslog, never pings; c1 sends freely.
const GROUPS: &str = r#"
[[security_group]]
name = "web"
default = "deny"
[[security_group.rule]]
name = "http"
priority = 100
action = "allow"
proto = "tcp"
dst_ports = "80"
[[security_group.rule]]
name = "syslog"
priority = 80
action = "allow"
proto = "udp"
dst_ports = "514"
[[security_group.rule]]
name = "no-ping"
priority = 50
action = "deny"
proto = "icmp"
"#;

/// Sends `n` UDP datagrams from `ns` (source port 40000 + `port`: one
/// flow across calls) to `ip:port`.
fn send_udp(ns: &Netns, ip: &str, port: u16, n: usize) {
    let sport = 40000 + port;
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('', {sport}))\n\
         for i in range({n}): s.sendto(b'trace-%d' % i, ('{ip}', {port}))\n"
    );
    ns.exec(&["/usr/bin/python3", "-c", &script]).unwrap();
}

fn drops(vs: &Vswitchd, port: &str, reason: &str) -> u64 {
    common::stat(vs, port, &["drops", reason])
}

/// The (rule, action) pairs a trace consulted.
fn rules(t: &Value) -> Vec<(String, String)> {
    t["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap_or("(default)").to_string(),
                r["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn traces_name_the_deciding_rule_and_match_the_counters() {
    let a = Netns::create(&unique("tra")).unwrap();
    let b = Netns::create(&unique("trb")).unwrap();
    let dir = TempDir::new("vs-trace");
    let cfg = common::header(&dir)
        + GROUPS
        + &common::tap_port("c1", &a, C1_MAC, "10.93.0.1/24")
        + &common::tap_port("c2", &b, C2_MAC, "10.93.0.2/24")
        + "ingress_group = \"web\"\n";
    let vs = common::start(&dir, &cfg);
    let socket = Vswitchd::control_socket(&dir);
    // No ARP among the traced frames: each side knows the other's MAC.
    for (ns, ip, mac) in [(&a, "10.93.0.2", C2_MAC), (&b, "10.93.0.1", C1_MAC)] {
        ns.exec(&[
            "ip",
            "neigh",
            "replace",
            ip,
            "lladdr",
            mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])
        .unwrap();
    }
    // c2 speaks first: the switch learns its MAC (a datagram, not a
    // ping: ICMP sessions are keyed by type and code, and c1's pings would
    // ride the session of c2's).
    let learned = vs.counter("c2", "rx_packets");
    send_udp(&b, "10.93.0.1", 9, 1);
    assert!(wait_until(Duration::from_secs(5), || vs
        .counter("c2", "rx_packets")
        > learned));

    // A synthetic frame, as a person reads it.
    let (code, text, err) = ctl(&socket, &["trace", "c1", "tcp,nw_dst=10.93.0.2,tp_dst=80"]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "tcp 10.93.0.1:40000 > 10.93.0.2:80 flags S",
        "02:00:00:8c:00:02 is behind c2",
        "no session: the rules judge",
        "web on c2: rule http (priority 100) allows",
        "opens a session (charged to c1)",
        "output to c2",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    let deny_before = drops(&vs, "c2", "acl_deny");
    let hits_before = ctl_ok(&socket, &["acl", "show"])["hits"].clone();
    // The same as fields; the default and a deny rule decide others.
    let t = ctl_ok(&socket, &["trace", "c1", "tcp,nw_dst=10.93.0.2,tp_dst=80"]);
    assert_eq!(rules(&t), [("http".into(), "allow".into())]);
    assert_eq!(t["outcome"]["action"], "output");
    assert_eq!(t["outcome"]["port"], "c2");
    let t = ctl_ok(&socket, &["trace", "c1", "udp,nw_dst=10.93.0.2,tp_dst=53"]);
    assert_eq!(rules(&t), [("(default)".into(), "deny".into())]);
    assert_eq!(t["outcome"]["reason"], "acl_deny");
    assert_eq!(t["outcome"]["port"], "c2", "counted where the group denied");
    let t = ctl_ok(&socket, &["trace", "c1", "icmp,nw_dst=10.93.0.2"]);
    assert_eq!(rules(&t), [("no-ping".into(), "deny".into())]);
    // A raw frame: the same SYN as bytes.
    let hex = t["frame"].as_str().unwrap().to_string();
    let raw = ctl_ok(&socket, &["trace", "c1", "--frame", &hex]);
    assert_eq!(raw["stages"], t["stages"]);
    // Tracing changed nothing: no drop counted, no rule hit.
    assert_eq!(drops(&vs, "c2", "acl_deny"), deny_before);
    assert_eq!(ctl_ok(&socket, &["acl", "show"])["hits"], hits_before);
    // Mistakes are refusals in the user's terms.
    let (code, _, err) = ctl(&socket, &["trace", "c1", "tcp,nw_dts=10.93.0.2"]);
    assert_eq!(code, 1);
    assert!(err.contains("did you mean \"nw_dst\""), "{err}");
    let (code, _, err) = ctl(&socket, &["trace", "nope", "tcp,nw_dst=10.93.0.2"]);
    assert_eq!(code, 1);
    assert!(err.contains("no port named \"nope\""), "{err}");
    let (code, _, err) = ctl(&socket, &["trace", "c1"]);
    assert_eq!(code, 2, "{err}");

    // The next frames c1 receives: 3 pings (denied), 2 datagrams to 53
    // (denied by the default), 3 to syslog (the first opens a session,
    // the others ride it).
    let rx_before = vs.counter("c1", "rx_packets");
    let (deny_before, c2_tx_before) =
        (drops(&vs, "c2", "acl_deny"), vs.counter("c2", "tx_packets"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vswitchctl"));
    cmd.arg("--socket").arg(&socket).args([
        "--json",
        "trace",
        "c1",
        "--live",
        "100",
        "--timeout",
        "60",
    ]);
    let mut live = Proc::spawn("vswitchctl trace --live", cmd).unwrap();
    assert!(wait_until(Duration::from_secs(5), || vs
        .output()
        .iter()
        .any(|l| l.contains("tracing the next 100 frames of port c1"))));
    // `ping` fails: no reply comes.
    let _ = a.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "1", "10.93.0.2"]);
    send_udp(&a, "10.93.0.2", 53, 2);
    // The first syslog datagram alone (two in one burst are both judged
    // by the rules: the session opens as the burst is decided).
    send_udp(&a, "10.93.0.2", 514, 1);
    assert!(wait_until(Duration::from_secs(5), || vs
        .counter("c1", "rx_packets")
        == rx_before + 6));
    send_udp(&a, "10.93.0.2", 514, 2);
    assert!(wait_until(Duration::from_secs(5), || vs
        .counter("c1", "rx_packets")
        == rx_before + 8));
    live.signal(libc::SIGINT);
    assert_eq!(live.wait_exit(Duration::from_secs(10)), Some(0));
    let records: Vec<Value> = serde_json::from_str(&live.output().join("\n")).unwrap();
    assert_eq!(records.len(), 8, "every frame c1 received was traced");
    // Each traced frame got the fate its trace foretold.
    // (A burst's fate does not say on which port a drop was counted.)
    for r in &records {
        let mut foretold = r["outcome"].clone();
        if foretold["action"] == "drop" {
            foretold.as_object_mut().unwrap().remove("port");
        }
        assert_eq!(r["actual"], foretold, "{r:#}");
    }
    let denied = records
        .iter()
        .filter(|r| r["actual"]["reason"] == "acl_deny")
        .count() as u64;
    let to_c2 = records
        .iter()
        .filter(|r| r["actual"]["action"] == "output" && r["actual"]["port"] == "c2")
        .count() as u64;
    assert_eq!((denied, to_c2), (5, 3));
    assert_eq!(
        drops(&vs, "c2", "acl_deny") - deny_before,
        denied,
        "the counters agree"
    );
    assert_eq!(vs.counter("c2", "tx_packets") - c2_tx_before, to_c2);
    let deciding: Vec<Vec<(String, String)>> = records.iter().map(rules).collect();
    let deny = |r: &str| vec![(r.to_string(), "deny".to_string())];
    assert_eq!(
        deciding,
        [
            deny("no-ping"),
            deny("no-ping"),
            deny("no-ping"),
            deny("(default)"),
            deny("(default)"),
            vec![("syslog".into(), "allow".into())],
            vec![],
            vec![],
        ]
    );
    let session = |r: &Value| {
        r["stages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["result"] == "live session (from its originator): passes without rules")
    };
    assert!(records[6..].iter().all(session), "{:#}", records[6]);

    // `acl show` counts what decided: 3 for no-ping, 1 for syslog (the
    // session carried the rest), 2 for the default.
    let hits = ctl_ok(&socket, &["acl", "show"])["hits"].clone();
    let hit = |rule: &str| {
        let of = |h: &Value| {
            h.as_array()
                .unwrap()
                .iter()
                .find(|r| r["rule"] == rule)
                .unwrap()["hits"]
                .as_u64()
                .unwrap()
        };
        of(&hits) - of(&hits_before)
    };
    assert_eq!(
        [hit("http"), hit("syslog"), hit("no-ping"), hit("(default)")],
        [0, 1, 3, 2]
    );
    let (_, shown, _) = ctl(&socket, &["acl", "show"]);
    assert!(shown.contains("# rule hits"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("#") && l.contains("no-ping") && l.contains("deny")),
        "{shown}"
    );
}
