//! vswitchd's logs as an operator reads them: timestamped, levelled lines
//! (text or JSON), a normal start with a TAP NIC says nothing alarming,
//! and DPDK's own log comes through the same subscriber (target `dpdk`)
//! when asked for. Needs root, DPDK and hugepages.

mod common;

use serde_json::Value;
use testbed::netns::Netns;
use testbed::unique;
use testbed::vswitchd::TempDir;

/// Log lines (stderr's), without stdout's ready line and stats tables.
fn log_lines(out: &[String]) -> Vec<&String> {
    out.iter()
        .filter(|l| !l.starts_with("vswitchd: ready") && l.starts_with("20"))
        .collect()
}

#[test]
fn a_normal_start_logs_timestamped_levelled_lines_and_no_warning() {
    let c = Netns::create(&unique("lga")).unwrap();
    let dir = TempDir::new("vs-logs");
    let cfg =
        common::header(&dir) + &common::tap_port("c", &c, "02:00:00:8a:00:01", "10.90.0.1/24");
    let vs = common::start(&dir, &cfg);
    let out = vs.output();
    vs.stop();
    let lines = log_lines(&out);
    assert!(!lines.is_empty(), "{out:#?}");
    for l in &lines {
        // 2026-11-30T03:40:00.123456Z  INFO vswitchd::daemon: port c (tap) up
        let (ts, rest) = l.split_once(' ').unwrap();
        assert!(
            ts.len() >= 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{l}"
        );
        let level = rest.split_whitespace().next().unwrap();
        assert!(
            ["INFO", "DEBUG", "TRACE"].contains(&level),
            "nothing alarming on a normal start: {l}"
        );
        assert!(!l.contains("dpdk:"), "EAL's start-up lines are debug: {l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" INFO ") && l.contains("port c (tap)")),
        "{out:#?}"
    );
    // Every line up to ready is a log line or the ready line itself: no
    // bare DPDK output.
    for l in &out {
        assert!(
            l.starts_with("20") || l.starts_with("vswitchd: ready"),
            "an unformatted line: {l}"
        );
    }
}

#[test]
fn json_lines_and_dpdk_routed_at_debug() {
    let dir = TempDir::new("vs-logs-json");
    let cfg = common::header(&dir) + "\n[log]\nformat = \"json\"\nlevel = \"info,dpdk=debug\"\n";
    let vs = common::start(&dir, &cfg);
    let out = vs.output();
    vs.stop();
    let events: Vec<Value> = out
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!events.is_empty(), "{out:#?}");
    for e in &events {
        assert!(
            e["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{e}"
        );
        assert!(e["level"].is_string() && e["target"].is_string(), "{e}");
        assert!(e["fields"]["message"].is_string(), "{e}");
    }
    // EAL's own start-up lines, through tracing with DPDK's log type.
    assert!(
        events.iter().any(|e| e["target"] == "dpdk"
            && e["level"] == "DEBUG"
            && e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("EAL: "))
            && e["fields"]["logtype"].is_number()),
        "{out:#?}"
    );

    // A filter that is not one is refused with its location.
    let file = dir.join("bad.toml");
    std::fs::write(&file, common::header(&dir) + "\n[log]\nlevel = \"loud[\"\n").unwrap();
    let o = std::process::Command::new(common::bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad.toml:") && err.contains("log.level") && !err.contains(":0:0"),
        "{err}"
    );
}
