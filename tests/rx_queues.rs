//! Rx queues on several workers: placement by measured cycles, automatic
//! and manual rebalancing (moving a queue without two workers ever
//! polling it), RSS on a device that offers it.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use testbed::vswitchd::{TempDir, Vswitchd};
use testbed::wait_until;

/// Two workers (worker 0 shares CPU 0 with the control thread, so it
/// sleeps when idle), two ports that receive without pause (net_null's
/// rx side generates frames) and two that receive nothing, in that
/// order: placed by count at start (nothing measured yet), both busy
/// ports land on worker 0.
fn config(dir: &TempDir, extra: &str) -> String {
    let mut cfg = common::header(dir).replace(
        "cores = [1]\nidle_sleep_us = 0",
        "cores = [0, 1]\nidle_sleep_us = 50",
    );
    assert!(cfg.contains("cores = [0, 1]"), "two workers");
    for (name, rx) in [
        ("busy1", true),
        ("idle1", false),
        ("busy2", true),
        ("idle2", false),
    ] {
        cfg += &format!(
            "[[port]]\nname = \"{name}\"\nkind = \"null\"\nbridge = \"vpc1\"\nno_rx = {}\n",
            !rx
        );
    }
    cfg + extra
}

fn perf(vs: &Vswitchd) -> Value {
    vs.request(json!({"cmd": "pmd-perf"})).unwrap()
}

/// The worker polling queue 0 of `port`, per `pmd-perf`.
fn worker_of(perf: &Value, port: &str) -> Option<usize> {
    perf["workers"].as_array()?.iter().position(|w| {
        w["rx_queues"]
            .as_array()
            .is_some_and(|qs| qs.iter().any(|q| q["port"] == port && q["queue"] == 0))
    })
}

fn packets(perf: &Value, worker: usize) -> u64 {
    perf["workers"][worker]["packets"].as_u64().unwrap()
}

/// Auto-lb sees worker 0 saturated by two busy queues while worker 1
/// idles, moves one busy queue to worker 1 (once), and from then on both
/// workers forward.
#[test]
fn auto_lb_moves_a_busy_queue_off_an_overloaded_worker() {
    let dir = TempDir::new("vs-alb");
    let vs = common::start(
        &dir,
        &config(&dir, "[workers.auto_lb]\ninterval_secs = 1\n"),
    );
    let p = perf(&vs);
    assert_eq!(worker_of(&p, "busy1"), Some(0), "{p}");
    assert_eq!(worker_of(&p, "busy2"), Some(0), "{p}");
    assert_eq!(worker_of(&p, "idle1"), Some(1), "{p}");
    assert_eq!(p["auto_lb"]["rebalances"], 0);
    // A whole measurement window (10 s) first, then the next check.
    assert!(
        wait_until(Duration::from_secs(40), || perf(&vs)["auto_lb"]
            ["rebalances"]
            == 1),
        "{}",
        perf(&vs)
    );
    let p = perf(&vs);
    let (w1, w2) = (worker_of(&p, "busy1"), worker_of(&p, "busy2"));
    assert!(w1.is_some() && w2.is_some() && w1 != w2, "{p}");
    let last = &p["auto_lb"]["last"];
    assert_eq!(last["trigger"], "auto_lb");
    // Estimated loads: everything on worker 0 before, shared after.
    let load = |k: &str, w: usize| last[k][w].as_f64().unwrap();
    assert!(load("worker_load_pct_before", 1) < 1.0, "{last}");
    assert!(load("worker_load_pct_after", 1) > 10.0, "{last}");
    let moved = last["moves"].as_array().unwrap();
    assert!(
        moved
            .iter()
            .any(|m| m["port"].as_str().unwrap().starts_with("busy")),
        "{last}"
    );
    // The queue's new worker polls it: both workers forward.
    let before = perf(&vs);
    assert!(wait_until(Duration::from_secs(10), || {
        let now = perf(&vs);
        (0..2).all(|w| packets(&now, w) > packets(&before, w) + 10_000)
    }));
    // Balanced: no further move (checked each second for a few).
    let n = perf(&vs)["auto_lb"]["rebalances"].clone();
    assert!(!wait_until(Duration::from_secs(3), || perf(&vs)["auto_lb"]
        ["rebalances"]
        != n));
}

/// With auto-lb off, nothing moves by itself; `pmd-rxq-rebalance` places
/// the queues by their measured load at once. A device with RSS spreads
/// its two queues over the two workers and hashes addresses and ports.
#[test]
fn a_manual_rebalance_spreads_the_busy_queues_and_rss_is_on_where_offered() {
    let dir = TempDir::new("vs-mlb");
    let vs = common::start(
        &dir,
        &config(
            &dir,
            "[[port]]\nname = \"multi\"\nkind = \"null\"\nbridge = \"vpc1\"\nno_rx = true\nrx_queues = 2\n\
             [workers.auto_lb]\nenabled = false\n",
        ),
    );
    let show = vs
        .request(json!({"cmd": "port-show", "name": "multi"}))
        .unwrap();
    let rss = show["rss"].as_array().expect("net_null offers RSS");
    for f in ["ipv4-tcp", "ipv4-udp", "ipv6-tcp", "ipv6-udp"] {
        assert!(rss.iter().any(|x| x == f), "{show}");
    }
    let single = vs
        .request(json!({"cmd": "port-show", "name": "busy1"}))
        .unwrap();
    assert_eq!(single["rss"], Value::Null, "one queue, no RSS: {single}");
    let p = perf(&vs);
    let on: Vec<usize> = (0..2)
        .map(|w| {
            p["workers"][w]["rx_queues"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|q| q["port"] == "multi")
                .count()
        })
        .collect();
    assert_eq!(on, [1, 1], "{p}");
    // Measured: the busy queues show a load.
    assert!(wait_until(Duration::from_secs(10), || {
        let p = perf(&vs);
        p["workers"][0]["rx_queues"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|q| q["port"].as_str().unwrap().starts_with("busy"))
            .all(|q| q["load_pct"].as_f64().unwrap() > 1.0)
    }));
    assert_eq!(perf(&vs)["auto_lb"]["rebalances"], 0);
    let r = vs.request(json!({"cmd": "pmd-rxq-rebalance"})).unwrap();
    let moves = r["moves"].as_array().unwrap();
    assert!(
        moves
            .iter()
            .any(|m| m["port"].as_str().unwrap().starts_with("busy")),
        "{r}"
    );
    let p = perf(&vs);
    assert_ne!(worker_of(&p, "busy1"), worker_of(&p, "busy2"), "{p}");
    assert_eq!(p["auto_lb"]["last"]["trigger"], "manual");
    // Idle queues did not move (they weigh nothing).
    assert!(
        moves
            .iter()
            .all(|m| !m["port"].as_str().unwrap().starts_with("idle")),
        "{r}"
    );
    let before = perf(&vs);
    assert!(wait_until(Duration::from_secs(10), || {
        let now = perf(&vs);
        (0..2).all(|w| packets(&now, w) > packets(&before, w) + 10_000)
    }));
    // Balanced: a second rebalance moves nothing.
    let again = vs.request(json!({"cmd": "pmd-rxq-rebalance"})).unwrap();
    assert_eq!(again["moves"], json!([]), "{again}");
}

/// A device with one tx queue (net_pcap) on a switch with two workers:
/// both workers send on it, taking turns under its lock, and nothing is
/// lost as tx_full (pcap writes every frame).
#[test]
fn two_workers_share_a_device_with_one_tx_queue() {
    let dir = TempDir::new("vs-1txq");
    let cfg = common::header(&dir).replace(
        "cores = [1]\nidle_sleep_us = 0",
        "cores = [0, 1]\nidle_sleep_us = 50",
    ) + "[[port]]\nname = \"g0\"\nkind = \"null\"\nbridge = \"vpc1\"\nrx_workers = [0]\n\
         [[port]]\nname = \"g1\"\nkind = \"null\"\nbridge = \"vpc1\"\nrx_workers = [1]\n\
         [[port]]\nname = \"out\"\nkind = \"pcap\"\nbridge = \"vpc1\"\ntx_pcap = \"/dev/null\"\n";
    let vs = common::start(&dir, &cfg);
    let show = vs
        .request(json!({"cmd": "port-show", "name": "out"}))
        .unwrap();
    assert_eq!(show["tx_queues"], json!([0, 0]), "{show}");
    let before = vs.counter("out", "tx_packets");
    assert!(wait_until(Duration::from_secs(10), || {
        let p = perf(&vs);
        (0..2).all(|w| packets(&p, w) > 100_000)
            && vs.counter("out", "tx_packets") > before + 100_000
    }));
    let stats = vs.port_stats("out").unwrap();
    assert_eq!(
        stats["drops"]["tx_full"].as_u64().unwrap_or(0),
        0,
        "{stats}"
    );
}
