//! The control plane against a running vswitchd: every `vswitchctl` verb
//! with its error replies, and NICs hot-plugged, moved and removed while
//! other containers talk. Containers are network namespaces on TAP NICs.
//! Needs root, DPDK and hugepages.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use testbed::netns::Netns;
use testbed::vswitchd::{TempDir, Vswitchd};
use testbed::{unique, wait_until};

use common::{ctl, ctl_ok as ok};

/// A verb that vswitchd must refuse (exit 1) with `needle` in the message.
fn refused(socket: &Path, args: &[&str], needle: &str) {
    let (code, _, err) = ctl(socket, args);
    assert_eq!(code, 1, "vswitchctl {args:?} should be refused: {err}");
    assert!(
        err.contains(needle),
        "vswitchctl {args:?}: {err:?} lacks {needle:?}"
    );
}

fn pings(ns: &Netns, ip: &str) -> bool {
    ns.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", ip])
        .is_ok_and(|o| o.contains("2 received"))
}

const GROUPS: &str = r#"
[[security_group]]
name = "web"
default = "deny"
[[security_group.rule]]
name = "http"
priority = 10
action = "allow"
proto = "tcp"
dst_ports = "80"
"#;

const POLICIES: &str = r#"
[[qos_policy]]
name = "slow"
kind = "srtcm"
cir = 1_000_000
cbs = 100_000
"#;

#[test]
fn every_vswitchctl_verb_against_a_running_vswitchd() {
    let a = Netns::create(&unique("cta")).unwrap();
    let b = Netns::create(&unique("ctb")).unwrap();
    let c = Netns::create(&unique("ctc")).unwrap();
    let d = Netns::create(&unique("ctd")).unwrap();
    let dir = TempDir::new("vs-ctl");
    let cfg = common::header(&dir)
        + "vni = 100\n\n[vtep]\nuplink = \"up\"\nip = \"10.66.0.1/24\"\n\
           [[vtep.neighbour]]\nip = \"10.66.0.9\"\nmac = \"02:00:00:66:00:09\"\n\n\
           [[security_group]]\nname = \"all\"\ndefault = \"allow\"\n\
           [[port]]\nname = \"up\"\nkind = \"null\"\nno_rx = true\n"
        + &common::tap_port("a", &a, "02:00:00:88:00:01", "10.88.0.1/24")
        + "ingress_group = \"all\"\n"
        + &common::tap_port("b", &b, "02:00:00:88:00:02", "10.88.0.2/24")
        + "port_security = false\n";
    let vs = common::start(&dir, &cfg);
    let baseline = common::quiescent_mbufs(&vs);
    let s = Vswitchd::control_socket(&dir);
    let s = s.as_path();
    assert!(pings(&a, "10.88.0.2"));

    // Read-only verbs.
    let (code, table, _) = ctl(s, &["stats"]);
    assert_eq!(code, 0);
    assert!(
        table.lines().any(|l| l.starts_with("a ")) && table.contains("worker 0"),
        "{table}"
    );
    let ports = ok(s, &["port", "list"]);
    assert_eq!(ports.as_array().unwrap().len(), 3, "{ports}");
    // The socket from the environment; exit statuses that tell a mistake
    // of the caller's (2) from a switch that is not there (3).
    let out = Command::new(env!("CARGO_BIN_EXE_vswitchctl"))
        .env("VSWITCHCTL_SOCKET", s)
        .args(["--json", "bridge", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("vpc1"));
    assert_eq!(ctl(s, &["port", "frobnicate"]).0, 2, "a usage error");
    let (code, _, err) = ctl(s, &["acl", "set", "--file", "/nonexistent/groups.toml"]);
    assert_eq!(code, 2, "a local file that cannot be read: {err}");
    let (code, _, err) = ctl(&dir.join("no.sock"), &["stats"]);
    assert_eq!(code, 3, "vswitchd not reachable: {err}");
    let show = ok(s, &["port", "show", "a"]);
    assert_eq!(show["config"]["netns"], a.name());
    assert!(show["stats"]["rx_packets"].as_u64().unwrap() >= 2, "{show}");
    refused(s, &["port", "show", "nope"], "no port named \"nope\"");
    let bridges = ok(s, &["bridge", "list"]);
    assert_eq!(bridges[0]["vni"], 100);
    assert_eq!(bridges[0]["ports"], serde_json::json!(["a", "b"]));
    let fdb = ok(s, &["fdb", "show", "vpc1"]);
    assert!(fdb.to_string().contains("02:00:00:88:00:02"), "{fdb}");
    refused(s, &["fdb", "show", "nope"], "no bridge");
    // a's MAC is pinned by port security; b (port security off) learned.
    assert!(
        ok(s, &["fdb", "flush", "--bridge", "vpc1"])["flushed"]
            .as_u64()
            .unwrap()
            >= 1
    );
    let fdb = ok(s, &["fdb", "show", "vpc1"]);
    let macs: Vec<_> = fdb
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["mac"].as_str().unwrap(), e["static"].as_bool().unwrap()))
        .collect();
    assert_eq!(macs, [("02:00:00:88:00:01", true)], "{fdb}");
    refused(s, &["fdb", "flush", "--port", "nope"], "no port named");
    let sessions = ok(s, &["session", "show"]);
    assert!(
        sessions["sessions"]
            .as_array()
            .unwrap()
            .iter()
            // a's pings opened it (a has a group: what it sends is
            // tracked, so the replies pass its ingress group).
            .any(|x| x["proto"] == 1 && x["src"] == "10.88.0.1" && x["dst"] == "10.88.0.2"),
        "{sessions}"
    );
    assert!(ok(s, &["session", "flush"])["flushed"].as_u64().unwrap() >= 1);
    let perf = ok(s, &["pmd-perf", "--clear"]);
    assert!(
        perf["workers"][0]["packets"].as_u64().unwrap() >= 4,
        "{perf}"
    );
    assert!(
        ok(s, &["pmd-perf"])["workers"][0]["packets"]
            .as_u64()
            .unwrap()
            < 4
    );
    // Stage metrics (opt-in): every stage of a ping's rounds timed, and
    // no more than the busy cycles; off again, nothing is timed.
    ok(s, &["pmd-perf", "--stages", "on", "--clear"]);
    assert!(pings(&a, "10.88.0.2"));
    let perf = ok(s, &["pmd-perf"]);
    let w = &perf["workers"][0];
    let st = &w["stage_cycles_per_packet"];
    assert_eq!(perf["stage_metrics"], true, "{perf}");
    assert!(st["frames"].as_u64().unwrap() >= 2, "{perf}");
    let staged: f64 = ["rx", "decide", "act", "tx"]
        .iter()
        .map(|k| {
            let c = st[k].as_f64().unwrap();
            assert!(c > 0.0, "{k}: {perf}");
            c
        })
        .sum();
    if st["frames"] == w["packets"] {
        // Every busy round timed: the stages are within its cycles.
        assert!(
            staged <= w["cycles_per_packet"].as_f64().unwrap() * 1.001,
            "{perf}"
        );
        assert!(st["other"].as_f64().is_some(), "{perf}");
    }
    ok(s, &["pmd-perf", "--stages", "off", "--clear"]);
    assert!(pings(&a, "10.88.0.2"));
    let perf = ok(s, &["pmd-perf"]);
    assert_eq!(
        perf["workers"][0]["stage_cycles_per_packet"]["frames"], 0,
        "{perf}"
    );
    assert_eq!(perf["stage_metrics"], false);
    // For people: every listing verb prints a table or aligned lines
    // with units, never JSON (which `--json` gives).
    let human = |args: &[&str]| {
        let (code, out, err) = ctl(s, args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            serde_json::from_str::<Value>(&out).is_err(),
            "{args:?} printed JSON:\n{out}"
        );
        out
    };
    let overview = human(&["show"]);
    assert!(overview.contains("bridge vpc1 (vni 100"), "{overview}");
    assert!(
        overview
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..3] == ["a", "tap", "up"]),
        "{overview}"
    );
    assert!(overview.contains("vtep:"), "{overview}");
    let perf = human(&["pmd-perf"]);
    assert!(
        perf.contains("cycles/pkt") && perf.contains(" %") && perf.contains("auto-lb:"),
        "{perf}"
    );
    let lat = human(&["latency"]);
    assert!(
        lat.contains("p99.9") && (lat.contains(" us") || lat.contains(" ns")),
        "{lat}"
    );
    let sessions = human(&["session", "show"]);
    assert!(
        sessions.contains("icmp") && sessions.contains("10.88.0.1"),
        "{sessions}"
    );
    let ports = human(&["port", "list"]);
    assert!(ports.starts_with("port  "), "{ports}");
    assert!(
        ports.lines().any(|l| l.starts_with("a ")
            && l.contains("02:00:00:88:00:01")
            && l.contains("10.88.0.1")),
        "{ports}"
    );
    let one = human(&["port", "show", "a"]);
    assert!(
        one.lines()
            .any(|l| l.starts_with("name:") && l.ends_with(" a")),
        "{one}"
    );
    for args in [
        &["bridge", "list"][..],
        &["fdb", "show", "vpc1"],
        &["vpc", "list"],
        &["tunnel", "list"],
        &["stats"],
        &["config", "dump"],
    ] {
        human(args);
    }
    // Those pings' sessions would let the next ones through web's group.
    ok(s, &["session", "flush"]);
    let lat = ok(s, &["latency"]);
    let w = &lat["workers"][0];
    assert!(w["rounds"].as_u64().unwrap() >= 4, "{lat}");
    assert!(w["cycles"]["p50"].as_u64().unwrap() <= w["cycles"]["p99"].as_u64().unwrap());

    // Security groups: define and attach (ICMP then denied), detach.
    let groups = dir.join("groups.toml");
    std::fs::write(&groups, GROUPS).unwrap();
    let gfile = groups.to_str().unwrap();
    let set = ok(
        s,
        &[
            "acl",
            "set",
            "--file",
            gfile,
            "--port",
            "b",
            "--ingress",
            "web",
        ],
    );
    assert!(set["generation"].as_u64().unwrap() >= 2);
    assert!(!pings(&a, "10.88.0.2"), "web admits only TCP 80");
    let (_, shown, _) = ctl(s, &["acl", "show"]);
    assert!(
        shown.contains("name = \"web\"") && shown.contains("\"ingress_group\":\"web\""),
        "{shown}"
    );
    ok(s, &["acl", "set", "--port", "b", "--ingress", ""]);
    assert!(pings(&a, "10.88.0.2"), "detached");
    refused(
        s,
        &["acl", "set", "--port", "b", "--ingress", "nope"],
        "nope",
    );
    refused(
        s,
        &["acl", "set", "--remove", "nope"],
        "no [[security_group]] named",
    );
    // Named as the user names it: the port that still uses the group.
    refused(
        s,
        &["acl", "set", "--remove", "all"],
        "port \"a\": ingress_group",
    );
    refused(s, &["acl", "set", "--ingress", "web"], "need the `port`");
    refused(s, &["acl", "set"], "nothing to change");

    // QoS policies.
    let pol = dir.join("qos.toml");
    std::fs::write(&pol, POLICIES).unwrap();
    ok(
        s,
        &[
            "qos",
            "set",
            "--file",
            pol.to_str().unwrap(),
            "--port",
            "a",
            "--egress",
            "slow",
        ],
    );
    let (_, shown, _) = ctl(s, &["qos", "show"]);
    assert!(
        shown.contains("name = \"slow\"") && shown.contains("\"egress_qos\":\"slow\""),
        "{shown}"
    );
    refused(
        s,
        &["qos", "set", "--remove", "slow"],
        "port \"a\": egress_qos",
    );
    ok(s, &["qos", "set", "--port", "a", "--egress", ""]);
    ok(s, &["qos", "set", "--remove", "slow"]);

    // Tunnels.
    let t = ok(s, &["tunnel", "add", "vpc1", "10.66.0.9"]);
    assert!(
        t["tunnels"].to_string().contains("vxlan100@10.66.0.9"),
        "{t}"
    );
    assert_eq!(t["tunnels"][0]["next_hop_mac"], "02:00:00:66:00:09");
    refused(s, &["tunnel", "add", "vpc1", "10.66.0.9"], "already");
    refused(s, &["tunnel", "add", "nope", "10.66.0.9"], "no bridge");
    refused(s, &["tunnel", "add", "vpc1", "172.16.0.1"], "no gateway");
    ok(s, &["tunnel", "del", "vpc1", "10.66.0.9"]);
    assert!(ok(s, &["tunnel", "list"])["tunnels"]
        .as_array()
        .unwrap()
        .is_empty());
    refused(
        s,
        &["tunnel", "del", "vpc1", "10.66.0.9"],
        "not a remote VTEP",
    );

    // A VPC at run time: vpc1 (a at 10.88.0.1, b at .2) as its subnet.
    let v = ok(
        s,
        &["vpc", "add", "green", "--router-mac", "02:fe:00:00:00:42"],
    );
    assert_eq!(v[0]["router_mac"], "02:fe:00:00:00:42", "{v}");
    refused(s, &["vpc", "add", "green"], "exists");
    refused(
        s,
        &["vpc", "subnet", "vpc1", "green", "10.88.0.2/24"],
        "gateway's",
    );
    let v = ok(s, &["vpc", "subnet", "vpc1", "green", "10.88.0.254/24"]);
    let ips: Vec<&str> = v[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips, ["10.88.0.1", "10.88.0.2"], "{v}");
    refused(s, &["vpc", "del", "green"], "still subnets");
    ok(s, &["vpc", "subnet", "vpc1", "--none"]);
    ok(s, &["vpc", "del", "green"]);
    refused(s, &["vpc", "del", "green"], "no VPC named");
    assert!(pings(&a, "10.88.0.2"), "switched as before");

    // Hot plug a third container's NIC, move it, remove it.
    let add = ok(
        s,
        &[
            "port",
            "add",
            "name=c",
            "kind=tap",
            "bridge=vpc1",
            &format!("netns={}", c.name()),
            "mac=02:00:00:88:00:03",
            "ipv4=10.88.0.3/24",
        ],
    );
    assert_eq!(add["mac"], "02:00:00:88:00:03");
    assert!(c.has_interface("eth0"));
    assert!(pings(&a, "10.88.0.3"), "the hot-plugged NIC works at once");
    refused(s, &["port", "add", "name=c", "kind=null"], "in use");
    refused(
        s,
        &["port", "add", "name=e", "kind=tap", "netns=vs-no-such-ns"],
        "does not exist",
    );
    refused(s, &["port", "add", "name=e", "kind=tap"], "netns");
    refused(
        s,
        &[
            "port",
            "add",
            "name=e",
            "kind=tap",
            &format!("netns={}", c.name()),
            "bridge=nope",
        ],
        "bridge",
    );
    assert_eq!(
        ok(s, &["port", "list"]).as_array().unwrap().len(),
        4,
        "refusals changed nothing"
    );

    let moved = ok(s, &["port", "move", "c", "--netns", d.name()]);
    assert_eq!(
        moved["netns"],
        d.name(),
        "the namespace by its name: {moved}"
    );
    assert!(!c.has_interface("eth0") && d.has_interface("eth0"));
    let mac = d.exec(&["cat", "/sys/class/net/eth0/address"]).unwrap();
    assert_eq!(
        mac.trim(),
        "02:00:00:88:00:03",
        "the MAC moved with the NIC"
    );
    assert!(pings(&d, "10.88.0.1"), "the moved NIC talks at once");
    let show = ok(s, &["port", "show", "c"]);
    assert_eq!(
        show["link_up"], true,
        "its link is seen in its new namespace: {show}"
    );
    assert_eq!(show["mac"], "02:00:00:88:00:03", "{show}");
    refused(
        s,
        &["port", "move", "c", "--netns", "vs-no-such-ns"],
        "does not exist",
    );
    refused(
        s,
        &["port", "move", "a", "--netns", b.name()],
        "already has an interface",
    );
    refused(
        s,
        &["port", "move", "up", "--netns", d.name()],
        "only TAP NICs",
    );
    assert!(pings(&a, "10.88.0.2"), "a refused move changed nothing");

    // The running config, dumped, is a valid config with the changes.
    let (code, dump, _) = ctl(s, &["config", "dump"]);
    assert_eq!(code, 0);
    assert!(
        dump.contains(&format!("netns = \"{}\"", d.name())),
        "{dump}"
    );
    let file = dir.join("dump.toml");
    std::fs::write(&file, &dump).unwrap();
    let check = Command::new(common::bin())
        .args(["check-config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let c_index = ok(s, &["port", "show", "c"])["index"].clone();
    assert!(vs.counter("c", "rx_packets") > 0, "c talked");
    ok(s, &["port", "del", "c"]);
    // The TAP is destroyed just after the answer, off the control thread;
    // a NIC of the same name added at once waits for that, then comes.
    let netns = format!("netns={}", d.name());
    ok(s, &["port", "add", "name=c", "kind=tap", &netns]);
    assert!(d.has_interface("eth0"), "the new NIC took eth0");
    ok(s, &["port", "del", "c"]);
    assert!(wait_until(Duration::from_secs(5), || !d.has_interface("eth0")));
    refused(s, &["port", "del", "c"], "no port named");
    // The next port takes c's switch port id, not c's counters.
    ok(s, &["port", "add", "name=e", "kind=null", "no_rx=true"]);
    assert_eq!(ok(s, &["port", "show", "e"])["index"], c_index);
    assert_eq!(vs.counter("e", "rx_packets"), 0);
    assert_eq!(vs.counter("e", "tx_packets"), 0);
    ok(s, &["port", "del", "e"]);
    refused(s, &["port", "del", "up"], "uplink");

    // Bad requests on the wire.
    let raw = vs.request(serde_json::json!({"cmd": "nope"}));
    assert!(raw.is_err_and(|e| e.contains("bad request")));
    let raw = vs.request(serde_json::json!({"cmd": "port-del"}));
    assert!(raw.is_err_and(|e| e.contains("missing field `name`")));
    assert!(pings(&a, "10.88.0.2"));
    common::assert_mbufs_back_to(&vs, baseline);
    vs.stop();
}

#[test]
fn hot_plug_under_traffic_loses_nothing() {
    let a = Netns::create(&unique("hpa")).unwrap();
    let b = Netns::create(&unique("hpb")).unwrap();
    let c = Netns::create(&unique("hpc")).unwrap();
    let d = Netns::create(&unique("hpd")).unwrap();
    let dir = TempDir::new("vs-hp");
    let cfg = common::header(&dir)
        + &common::tap_port("a", &a, "02:00:00:89:00:01", "10.89.0.1/24")
        + &common::tap_port("b", &b, "02:00:00:89:00:02", "10.89.0.2/24");
    let vs = common::start(&dir, &cfg);
    let baseline = common::quiescent_mbufs(&vs);
    let s = Vswitchd::control_socket(&dir);
    let s = s.as_path();
    assert!(pings(&a, "10.89.0.2"));

    let traffic = common::CountedTraffic::start(&a, &b, "10.89.0.2", &dir);

    for i in 0..50 {
        ok(
            s,
            &[
                "port",
                "add",
                "name=c",
                "kind=tap",
                "bridge=vpc1",
                &format!("netns={}", c.name()),
                "mac=02:00:00:89:00:03",
                "ipv4=10.89.0.3/24",
            ],
        );
        ok(s, &["port", "move", "c", "--netns", d.name()]);
        if i == 0 || i == 49 {
            // The moved NIC keeps its MAC and address and works.
            let mac = d.exec(&["cat", "/sys/class/net/eth0/address"]).unwrap();
            assert_eq!(mac.trim(), "02:00:00:89:00:03");
            assert!(d
                .exec(&["ip", "-4", "addr", "show", "eth0"])
                .unwrap()
                .contains("10.89.0.3/24"));
            assert!(pings(&d, "10.89.0.1"), "iteration {i}: the moved NIC talks");
        }
        ok(s, &["port", "del", "c"]);
    }
    let (sent, answered) = traffic.finish();
    assert!(sent > 500, "too little traffic to judge: {sent}");
    assert_eq!(sent, answered, "datagrams lost while NICs were hot-plugged");
    common::assert_mbufs_back_to(&vs, baseline);
    vs.stop();
}

/// Hostile control clients: ten idle connections, a client that sends
/// requests and never reads the answers, one that sends a byte at a time,
/// one with an endless line, invalid UTF-8 and unknown fields. Every other
/// client is answered at once throughout, and SIGTERM ends vswitchd
/// promptly with the non-reader still connected.
#[test]
fn hostile_control_clients_hold_nobody_up() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    let dir = TempDir::new("vs-ctlh");
    let vs = common::start(&dir, &common::header(&dir));
    let baseline = common::quiescent_mbufs(&vs);
    let s = Vswitchd::control_socket(&dir);
    let idle: Vec<UnixStream> = (0..10).map(|_| UnixStream::connect(&s).unwrap()).collect();
    let mut deaf = UnixStream::connect(&s).unwrap();
    deaf.set_nonblocking(true).unwrap();
    // Requests until its socket takes no more: it never reads.
    let mut sent = 0;
    while sent < 100_000 {
        match deaf.write_all(b"{\"cmd\": \"stats\"}\n") {
            Ok(_) => sent += 1,
            Err(_) => break,
        }
    }
    let mut slow = UnixStream::connect(&s).unwrap();
    slow.write_all(b"{\"cmd\"").unwrap();
    let answered_fast = || {
        let t = Instant::now();
        vs.request(serde_json::json!({"cmd": "port-list"})).unwrap();
        t.elapsed()
    };
    for _ in 0..5 {
        let took = answered_fast();
        assert!(
            took < Duration::from_secs(1),
            "an honest client waited {took:?}"
        );
        slow.write_all(b" ").unwrap();
    }
    // One line per answer, whatever the line held.
    let ask = |bytes: &[u8]| -> String {
        let mut c = UnixStream::connect(&s).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(bytes).unwrap();
        let mut line = String::new();
        BufReader::new(c).read_line(&mut line).unwrap();
        line
    };
    assert!(ask(b"\xff\xfe{}\n").contains("not UTF-8"));
    assert!(ask(b"{\"cmd\": \"stats\", \"extra\": 1}\n").contains("unknown field"));
    assert!(
        ask(b"{\"cmd\": \"port-show\", \"name\": \"a\", \"x\": 2}\n").contains("unknown field")
    );
    let mut long = UnixStream::connect(&s).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let chunk = vec![b' '; 1 << 16];
    let mut answer = String::new();
    for _ in 0..40 {
        if long.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = long.read_to_string(&mut answer);
    assert!(answer.contains("longer than"), "{answer:?}");
    assert!(answered_fast() < Duration::from_secs(1));
    drop(idle);
    common::assert_mbufs_back_to(&vs, baseline);
    let t = Instant::now();
    assert_eq!(vs.stop(), Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?} with a deaf client connected",
        t.elapsed()
    );
    drop(deaf);
}
