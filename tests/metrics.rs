//! The metrics endpoint scraped as Prometheus would, during traffic
//! between two kernel containers and after it: the text parses with the
//! Prometheus project's own OpenMetrics parser (python3-prometheus-client),
//! and its counters are `vswitchctl stats`'s. Needs root, DPDK, hugepages.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use testbed::netns::Netns;
use testbed::process::Proc;
use testbed::vswitchd::TempDir;
use testbed::{unique, wait_until};

/// A port nobody listens on now (the kernel's choice, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over HTTP/1.0: (status, headers and body as text).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("the endpoint listens");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The samples of a scrape, parsed by prometheus_client's OpenMetrics
/// parser: sample name -> [(labels, value)].
type Samples = BTreeMap<String, Vec<(BTreeMap<String, String>, f64)>>;

fn parse(body: &str) -> Samples {
    let script = "import json, sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        out = {}\n\
        for f in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in f.samples:\n\
        \x20       out.setdefault(s.name, []).append([s.labels, s.value])\n\
        json.dump(out, sys.stdout)\n";
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refuses the scrape: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A scrape's body, parsed.
fn scrape(addr: SocketAddr) -> Samples {
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("Content-Type: application/openmetrics-text"),
        "{text}"
    );
    let body = text.split_once("\r\n\r\n").expect("a body").1;
    parse(body)
}

/// The value of `name` whose labels include `want`.
fn value(s: &Samples, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    s.get(name)?
        .iter()
        .find(|(l, _)| {
            want.iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
}

#[test]
fn a_scrape_during_traffic_parses_and_its_counters_are_the_stats() {
    let a = Netns::create(&unique("mta")).unwrap();
    let b = Netns::create(&unique("mtb")).unwrap();
    let dir = TempDir::new("vs-metrics");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = common::header(&dir)
        + &format!("\n[metrics]\naddress = \"{addr}\"\n\n")
        + &common::tap_port("a", &a, "02:00:00:89:00:01", "10.89.0.1/24")
        + &common::tap_port("b", &b, "02:00:00:89:00:02", "10.89.0.2/24");
    let vs = common::start(&dir, &cfg);

    // During traffic: a UDP stream from a to b while we scrape.
    let mut cmd = b.command("iperf3");
    cmd.args(["-s", "-1", "-p", "5301"]);
    let mut server = Proc::spawn("iperf3 -s", cmd).unwrap();
    assert!(wait_until(Duration::from_secs(5), || b
        .exec(&["ss", "-ltn", "sport = :5301"])
        .is_ok_and(|o| o.contains("5301"))));
    let mut cmd = a.command("iperf3");
    cmd.args([
        "-c",
        "10.89.0.2",
        "-p",
        "5301",
        "-u",
        "-b",
        "50M",
        "-t",
        "3",
    ]);
    let mut client = Proc::spawn("iperf3 -c", cmd).unwrap();
    let mut during = 0;
    let mut last_rx = 0.0;
    while client.exit_code().is_none() {
        let s = scrape(addr);
        let rx = value(
            &s,
            "vswitchd_port_rx_packets_total",
            &[("port", "a"), ("kind", "tap"), ("bridge", "vpc1")],
        )
        .expect("a's rx counter");
        assert!(
            rx >= last_rx,
            "a counter never goes down: {last_rx} -> {rx}"
        );
        last_rx = rx;
        during += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        client.wait_exit(Duration::from_secs(10)),
        Some(0),
        "iperf3 ran"
    );
    server.stop(Duration::from_secs(2));
    assert!(during >= 3, "scraped {during} times during traffic");
    assert!(last_rx > 1000.0, "a sent: {last_rx}");

    // Quiet: the scrape's counters are the stats' (read until two stats
    // agree, then the scrape, then the stats again).
    let stats = || vs.request(serde_json::json!({"cmd": "stats"})).unwrap();
    let mut st = stats();
    assert!(wait_until(Duration::from_secs(10), || {
        let now = stats();
        let same = now["ports"] == st["ports"];
        st = now;
        same
    }));
    let s = scrape(addr);
    assert_eq!(stats()["ports"], st["ports"], "traffic stopped");
    for p in st["ports"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let l = [("port", name)];
        for (metric, field) in [
            ("vswitchd_port_rx_packets_total", "rx_packets"),
            ("vswitchd_port_tx_packets_total", "tx_packets"),
            ("vswitchd_port_rx_bytes_total", "rx_bytes"),
            ("vswitchd_port_tx_bytes_total", "tx_bytes"),
        ] {
            assert_eq!(
                value(&s, metric, &l),
                p[field].as_f64(),
                "{metric} of {name}"
            );
        }
        for (reason, n) in p["drops"].as_object().unwrap() {
            assert_eq!(
                value(
                    &s,
                    "vswitchd_port_drops_total",
                    &[("port", name), ("reason", reason)]
                ),
                n.as_f64(),
                "{name} drops {reason}"
            );
        }
        assert_eq!(
            value(&s, "vswitchd_port_link_up", &l),
            Some(if p["link_up"] == Value::Bool(true) {
                1.0
            } else {
                0.0
            })
        );
    }
    for w in st["workers"].as_array().unwrap() {
        let worker = w["worker"].to_string();
        let l = [("worker", worker.as_str())];
        assert_eq!(
            value(&s, "vswitchd_worker_packets_total", &l),
            w["packets"].as_f64()
        );
        let rounds = value(&s, "vswitchd_worker_round_seconds_count", &l).unwrap();
        let inf = value(
            &s,
            "vswitchd_worker_round_seconds_bucket",
            &[("worker", worker.as_str()), ("le", "+Inf")],
        )
        .unwrap();
        assert!(
            rounds >= 1.0 && rounds == inf,
            "{rounds} rounds, +Inf bucket {inf}"
        );
    }
    assert!(value(&s, "vswitchd_mempool_in_use", &[]).is_some());
    assert!(value(&s, "vswitchd_sessions_capacity", &[]).unwrap() > 0.0);

    // Anything but GET /metrics: 404.
    assert_eq!(get(addr, "/").0, 404);
}

/// An address that is not one is a config error with its location; one
/// that is taken makes `run` fail with a clear message.
#[test]
fn a_bad_or_taken_metrics_address_is_refused() {
    let dir = TempDir::new("vs-metrics-bad");
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        common::header(&dir) + "\n[metrics]\naddress = \"localhost\"\n",
    )
    .unwrap();
    let out = Command::new(common::bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad.toml:") && err.contains("address"),
        "{err}"
    );

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = common::header(&dir) + &format!("\n[metrics]\naddress = \"{addr}\"\n");
    let err = testbed::vswitchd::Vswitchd::start(common::bin(), &dir, &cfg)
        .err()
        .expect("vswitchd refuses to start");
    assert!(
        err.contains(&format!("metrics endpoint on {addr}")),
        "{err}"
    );
}
