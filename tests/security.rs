//! Security groups, sessions and policers between kernel-stack containers
//! (network namespaces on vswitchd TAP NICs), against the real kernel
//! stack: TCP with socat, UDP floods with iperf3, ICMP with ping.

mod common;

use std::time::Duration;

use testbed::netns::Netns;
use testbed::process::Proc;
use testbed::unique;
use testbed::vswitchd::{TempDir, Vswitchd};

const CLIENT: &str = "10.30.0.1";
const WEB: &str = "10.30.0.2";

/// Groups: the web NIC accepts TCP 80, iperf3 (TCP and UDP 5201) and
/// ping; the client NIC may send anything out and accepts nothing new.
/// `extra` is appended (QoS, alternative rules).
fn config(header: &str, client: &Netns, web: &Netns, web_rules: &str, extra: &str) -> String {
    format!(
        r#"{header}
[[security_group]]
name = "web"
default = "deny"
{web_rules}

[[security_group]]
name = "client-out"
default = "deny"
[[security_group.rule]]
name = "any"
priority = 1
action = "allow"

[[security_group]]
name = "client-in"
default = "deny"

{extra}

[[port]]
name = "client"
kind = "tap"
bridge = "vpc1"
netns = "{c}"
mac = "02:00:00:00:0c:01"
ipv4 = "{CLIENT}/24"
egress_group = "client-out"
ingress_group = "client-in"
{client_qos}

[[port]]
name = "web"
kind = "tap"
bridge = "vpc1"
netns = "{w}"
mac = "02:00:00:00:0c:02"
ipv4 = "{WEB}/24"
ingress_group = "web"
"#,
        header = header,
        c = client.name(),
        w = web.name(),
        client_qos = if extra.contains("[[qos_policy]]") {
            "egress_qos = \"limit\""
        } else {
            ""
        },
    )
}

const WEB_RULES: &str = r#"
[[security_group.rule]]
name = "http"
priority = 100
action = "allow"
proto = "tcp"
dst_ports = "80"
[[security_group.rule]]
name = "iperf"
priority = 90
action = "allow"
proto = "tcp"
dst_ports = "5201"
[[security_group.rule]]
name = "iperf-udp"
priority = 90
action = "allow"
proto = "udp"
dst_ports = "5201"
[[security_group.rule]]
name = "ping"
priority = 80
action = "allow"
proto = "icmp"
icmp_type = 8
"#;

/// The QoS policy "limit": srTCM at `rate` bit/s with a 30 KB burst
/// (smaller than one 64 KB superframe), red dropped.
fn limit_policy(rate: u64) -> String {
    format!(
        "[[qos_policy]]\nname = \"limit\"\nkind = \"srtcm\"\nunit = \"bits\"\ncir = {rate}\ncbs = 30000\nred = \"drop\"\n"
    )
}

struct Rig {
    client: Netns,
    web: Netns,
    dir: TempDir,
    /// EAL/control/bridge tables: one per test, so reloads see the same.
    header: String,
}

fn rig() -> Rig {
    let dir = TempDir::new("vs-sec");
    Rig {
        client: Netns::create(&unique("vsc")).unwrap(),
        web: Netns::create(&unique("vsw")).unwrap(),
        header: common::header(&dir),
        dir,
    }
}

#[test]
fn groups_allow_deny_and_track_sessions() {
    let r = rig();
    let vs = common::start(&r.dir, &config(&r.header, &r.client, &r.web, WEB_RULES, ""));
    let baseline = common::quiescent_mbufs(&vs);
    let _http = common::tcp_server(&r.web, 80);
    let _ssh = common::tcp_server(&r.web, 22);
    let _back = common::tcp_server(&r.client, 8080);

    // Allowed port: the connection works, and its replies reach the client
    // although the client's ingress group denies everything (stateful).
    assert!(
        common::tcp_works(&r.client, WEB, 80),
        "client -> web:80 allowed"
    );
    // Denied port on the web side.
    let denied_before = vs.counter("web", "drops");
    assert!(
        !common::tcp_works(&r.client, WEB, 22),
        "client -> web:22 denied"
    );
    // A new inbound connection to the client is refused.
    assert!(
        !common::tcp_works(&r.web, CLIENT, 8080),
        "web -> client:8080 denied"
    );
    let drops = |port: &str| -> u64 {
        vs.port_stats(port).unwrap()["drops"]["acl_deny"]
            .as_u64()
            .unwrap_or(0)
    };
    let _ = denied_before;
    assert!(drops("web") >= 1, "the SYN to :22 counted on web");
    assert!(drops("client") >= 1, "the SYN to :8080 counted on client");
    // Ping is allowed to web (and its reply comes back by session).
    let ping = r
        .client
        .exec(&["ping", "-c", "3", "-i", "0.1", "-W", "2", WEB]);
    assert!(ping.is_ok_and(|o| o.contains("3 received")));
    common::assert_mbufs_back_to(&vs, baseline);
    vs.stop();
}

#[test]
fn a_policer_holds_a_udp_flood_to_its_rate() {
    const RATE: u64 = 10_000_000;
    let r = rig();
    let qos = limit_policy(RATE);
    let vs = common::start(
        &r.dir,
        &config(&r.header, &r.client, &r.web, WEB_RULES, &qos),
    );
    let baseline = common::quiescent_mbufs(&vs);
    let mut srv = r.web.command("stdbuf");
    srv.args(["-oL", "iperf3", "-s", "-1", "-B", WEB]);
    let mut server = Proc::spawn("iperf3-s", srv).unwrap();
    assert!(server.wait_for_line(Duration::from_secs(10), |l| l.contains("Server listening")));
    let tx0 = vs.counter("web", "tx_bytes");
    let t0 = std::time::Instant::now();
    // 50 Mbit/s offered, 5x the policer's rate, for 4 s.
    let out = r
        .client
        .exec(&[
            "iperf3", "-c", WEB, "-u", "-b", "50M", "-l", "1400", "-t", "4",
        ])
        .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let sent_bits = (vs.counter("web", "tx_bytes") - tx0) * 8;
    let _ = out;
    // Frames delivered to web, over the time the flood ran (the iperf3
    // control connection adds a few frames; the burst adds cbs).
    let rate = sent_bits as f64 / 4.0;
    assert!(
        (rate - RATE as f64).abs() <= 0.1 * RATE as f64,
        "delivered {:.2} Mbit/s (over {secs:.1} s), policer at {} Mbit/s",
        rate / 1e6,
        RATE / 1_000_000
    );
    let dropped = vs.port_stats("client").unwrap()["drops"]["policer_drop"]
        .as_u64()
        .unwrap_or(0);
    assert!(dropped > 1000, "the policer dropped the excess: {dropped}");
    server.wait_exit(Duration::from_secs(10));
    common::assert_mbufs_back_to(&vs, baseline);
    vs.stop();
}

#[test]
fn replacing_the_ruleset_under_traffic_loses_nothing_both_allow() {
    let r = rig();
    let path = r.dir.join("vswitchd.toml");
    // Ruleset B allows ICMP echo by a different rule (and no TCP 80).
    let rules_b = "[[security_group.rule]]\nname = \"icmp-any\"\npriority = 5\naction = \"allow\"\nproto = \"icmp\"\n";
    let a = config(&r.header, &r.client, &r.web, WEB_RULES, "");
    let b = config(&r.header, &r.client, &r.web, rules_b, "");
    let mut vs = common::start(&r.dir, &a);
    let baseline = common::quiescent_mbufs(&vs);
    // 3000 pings 1 ms apart (about 3 s) while the ruleset flips 100 times.
    let mut ping = r.client.command("ping");
    ping.args(["-c", "3000", "-i", "0.001", "-W", "2", "-q", WEB]);
    let mut ping = Proc::spawn("ping", ping).unwrap();
    for i in 0..100 {
        std::fs::write(&path, if i % 2 == 0 { &b } else { &a }).unwrap();
        vs.reload().unwrap_or_else(|e| panic!("reload {i}: {e}"));
    }
    let code = ping.wait_exit(Duration::from_secs(30));
    let out = ping.output().join("\n");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("3000 received"), "{out}");
    let reloads = vs
        .output()
        .iter()
        .filter(|l| l.contains(": reloaded "))
        .count();
    assert_eq!(reloads, 100);
    // The reloads really changed the rules: with B, TCP 80 is denied.
    std::fs::write(&path, &b).unwrap();
    vs.reload().unwrap();
    let _http = common::tcp_server(&r.web, 80);
    assert!(!common::tcp_works(&r.client, WEB, 80));
    std::fs::write(&path, &a).unwrap();
    vs.reload().unwrap();
    assert!(common::tcp_works(&r.client, WEB, 80));
    common::assert_mbufs_back_to(&vs, baseline);
    vs.stop();
}

#[test]
fn a_reload_that_changes_ports_is_refused_and_the_old_config_keeps_running() {
    let r = rig();
    let path = r.dir.join("vswitchd.toml");
    let a = config(&r.header, &r.client, &r.web, WEB_RULES, "");
    let mut vs: Vswitchd = common::start(&r.dir, &a);
    let baseline = common::quiescent_mbufs(&vs);
    std::fs::write(&path, a.replace("02:00:00:00:0c:02", "02:00:00:00:0c:03")).unwrap();
    let e = vs.reload().unwrap_err();
    assert!(e.contains("restart"), "{e}");
    // The session table is made at start: a [sessions] change is
    // refused, not silently ignored.
    std::fs::write(
        &path,
        format!("{a}\n[sessions]\ntcp_established_secs = 60\n"),
    )
    .unwrap();
    let e = vs.reload().unwrap_err();
    assert!(e.contains("[sessions]") && e.contains("restart"), "{e}");
    std::fs::write(&path, a.replace("priority = 100", "priority = \"x\"")).unwrap();
    let e = vs.reload().unwrap_err();
    assert!(
        e.contains("vswitchd.toml:") && e.contains("priority"),
        "{e}"
    );
    let ping = r
        .client
        .exec(&["ping", "-c", "2", "-i", "0.1", "-W", "2", WEB]);
    assert!(ping.is_ok_and(|o| o.contains("2 received")));
    common::assert_mbufs_back_to(&vs, baseline);
    vs.stop();
}

/// Sends UDP superframes (UDP_SEGMENT, `seg`-byte datagrams, 40 per
/// send) to `dst:5201` for `secs` seconds at `mbit` Mbit/s of payload.
const USO_SENDER: &str = r#"
import socket, sys, time
dst, seg, secs, mbit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, seg)  # UDP_SEGMENT
buf = b'u' * (seg * 40)
gap = len(buf) * 8 / (mbit * 1e6)
start = time.time()
n = 0
while time.time() - start < secs:
    s.sendto(buf, (dst, 5201))
    n += 1
    time.sleep(max(0.0, start + n * gap - time.time()))
"#;

/// Counts datagrams on :5201 until none came for 2 s; prints the count.
const UDP_COUNTER: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 23)
s.bind(('0.0.0.0', 5201))
s.settimeout(2)
n = 0
try:
    while True:
        s.recv(65536); n += 1
except socket.timeout:
    pass
print(n, flush=True)
"#;

#[test]
fn superframes_are_judged_and_policed_like_their_segments() {
    const RATE: u64 = 20_000_000;
    const SEG: u64 = 1400;
    let r = rig();
    // A burst smaller than one superframe: superframes are cut, not
    // passed or dropped whole.
    let qos = limit_policy(RATE);
    let vs = common::start(
        &r.dir,
        &config(&r.header, &r.client, &r.web, WEB_RULES, &qos),
    );
    let baseline = common::quiescent_mbufs(&vs);

    // TCP superframes: the allowed port carries a stream (its replies by
    // session), the denied one nothing.
    let _ssh = common::tcp_server(&r.web, 22);
    assert!(!common::tcp_works(&r.client, WEB, 22), "web:22 denied");
    let mut srv = r.web.command("stdbuf");
    srv.args(["-oL", "iperf3", "-s", "-1", "-B", WEB]);
    let mut server = Proc::spawn("iperf3-s", srv).unwrap();
    assert!(server.wait_for_line(Duration::from_secs(10), |l| l.contains("Server listening")));
    let out = r
        .client
        .exec(&["iperf3", "-c", WEB, "-t", "3", "-J"])
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tcp_bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    // A policer with a burst this small throttles TCP hard whether it is
    // segmented or not (the same run with TSO off on the client measured
    // the same 1.1 Mbit/s): the stream flows, never above the rate.
    assert!(
        tcp_bps > 0.0 && tcp_bps < 1.1 * RATE as f64,
        "TCP through the policer: {:.1} Mbit/s of payload, policer at {} Mbit/s",
        tcp_bps / 1e6,
        RATE / 1_000_000
    );
    server.wait_exit(Duration::from_secs(10));
    assert!(
        vs.counter("client", "rx_superframes") > 0,
        "TCP came as superframes"
    );

    // UDP superframes at 5x the rate: what arrives, in wire bytes (each
    // datagram SEG bytes + 42 of headers), is the policer's rate.
    let mut counter = r.web.command("/usr/bin/python3");
    counter.args(["-c", UDP_COUNTER]);
    let mut receiver = Proc::spawn("udp-counter", counter).unwrap();
    assert!(testbed::wait_until(Duration::from_secs(10), || r
        .web
        .exec(&["ss", "-uln", "sport", "= :5201"])
        .is_ok_and(|o| o.contains("5201"))));
    let uso0 = vs.counter("client", "rx_superframes");
    let secs = 4.0;
    r.client
        .exec(&[
            "/usr/bin/python3",
            "-c",
            USO_SENDER,
            WEB,
            &SEG.to_string(),
            &secs.to_string(),
            &(5 * RATE / 1_000_000).to_string(),
        ])
        .unwrap();
    assert_eq!(receiver.wait_exit(Duration::from_secs(20)), Some(0));
    let got: u64 = receiver.output().last().unwrap().trim().parse().unwrap();
    assert!(
        vs.counter("client", "rx_superframes") - uso0 > 100,
        "UDP came as superframes"
    );
    let wire_bps = (got * (SEG + 42) * 8) as f64 / secs;
    assert!(
        (wire_bps - RATE as f64).abs() <= 0.1 * RATE as f64,
        "UDP superframes through the policer: {:.2} Mbit/s on the wire, policer at {} Mbit/s",
        wire_bps / 1e6,
        RATE / 1_000_000
    );
    let dropped = vs.port_stats("client").unwrap()["drops"]["policer_drop"]
        .as_u64()
        .unwrap_or(0);
    assert!(dropped > 1000, "the cut segments count as drops: {dropped}");
    common::assert_mbufs_back_to(&vs, baseline);
    vs.stop();
}

/// The flow cache under real traffic: an allowed UDP flood (iperf3) is
/// answered from the worker's cache (`pmd-perf` counts the hits), and a
/// ruleset that denies it, loaded mid-flood, stops it at once: the
/// cached entries die with the old snapshot, the session is judged again
/// and ended, web's ingress group counts the flood's frames as denied and
/// web receives nothing more of it.
#[test]
fn a_flow_cache_answers_a_udp_flood_and_a_new_deny_stops_it_at_once() {
    let r = rig();
    let path = r.dir.join("vswitchd.toml");
    let icmp_only = "[[security_group.rule]]\nname = \"icmp-any\"\npriority = 5\naction = \"allow\"\nproto = \"icmp\"\n";
    let a = config(&r.header, &r.client, &r.web, WEB_RULES, "");
    let b = config(&r.header, &r.client, &r.web, icmp_only, "");
    let mut vs = common::start(&r.dir, &a);
    let baseline = common::quiescent_mbufs(&vs);
    let mut srv = r.web.command("stdbuf");
    srv.args(["-oL", "iperf3", "-s", "-1", "-B", WEB]);
    let mut server = Proc::spawn("iperf3-s", srv).unwrap();
    assert!(server.wait_for_line(Duration::from_secs(10), |l| l.contains("Server listening")));
    let mut cli = r.client.command("iperf3");
    cli.args(["-c", WEB, "-u", "-b", "20M", "-l", "1000", "-t", "8"]);
    let client = Proc::spawn("iperf3-c", cli).unwrap();
    let perf = |vs: &Vswitchd| vs.request(serde_json::json!({"cmd": "pmd-perf"})).unwrap();
    let hits = |vs: &Vswitchd| {
        perf(vs)["workers"][0]["flow_cache"]["hits"]
            .as_u64()
            .unwrap()
    };
    // 5000 datagrams (2 s of the flood) delivered, most from the cache.
    let rx0 = vs.counter("web", "tx_packets");
    assert!(
        testbed::wait_until(Duration::from_secs(10), || vs.counter("web", "tx_packets")
            > rx0 + 5000),
        "the flood reaches web"
    );
    let p = perf(&vs);
    let fc = &p["workers"][0]["flow_cache"];
    assert_eq!(fc["enabled"], true, "{p}");
    assert!(hits(&vs) >= 2500, "answered from the cache: {p}");
    // Deny it: nothing of it reaches web after the first denials.
    let denied = |vs: &Vswitchd| common::stat(vs, "web", &["drops", "acl_deny"]);
    let d0 = denied(&vs);
    std::fs::write(&path, &b).unwrap();
    vs.reload().unwrap();
    assert!(
        testbed::wait_until(Duration::from_secs(5), || denied(&vs) > d0 + 100),
        "web's group denies the flood"
    );
    let (tx1, d1, h1) = (vs.counter("web", "tx_packets"), denied(&vs), hits(&vs));
    assert!(
        testbed::wait_until(Duration::from_secs(5), || denied(&vs) > d1 + 1000),
        "the flood goes on, denied"
    );
    // ARP may still pass (groups let it through); the flood does not.
    assert!(
        vs.counter("web", "tx_packets") <= tx1 + 5,
        "web received {} frames after the deny",
        vs.counter("web", "tx_packets") - tx1
    );
    assert_eq!(
        hits(&vs),
        h1,
        "denied frames are never answered from the cache"
    );
    // Its control connection is denied too: stopped, not awaited.
    drop(client);
    drop(server);
    common::assert_mbufs_back_to(&vs, baseline);
    vs.stop();
}
