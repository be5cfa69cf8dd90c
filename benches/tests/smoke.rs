//! Smoke runs of every harness (CI): a few seconds each, against the real
//! peers. They assert that traffic flowed through every system and that
//! every figure was produced, never a speed.

use std::path::PathBuf;
use std::time::Duration;

use vsbench::report::Section;
use vsbench::{harness_c, harness_d, harness_k, harness_p, harness_v};

/// A binary of the workspace, next to this test's own profile directory.
fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let profile = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps");
    let p = profile.join(name);
    assert!(
        p.exists(),
        "{} is missing: cargo build --workspace first",
        p.display()
    );
    p
}

fn tsc_hz() -> u64 {
    vsbench::machine::tsc_hz()
}

/// Every row has every one of `columns`, each positive.
fn assert_figures(sec: &Section, systems: usize, columns: &[&str]) {
    assert_eq!(sec.rows.len(), systems, "{sec:#?}");
    for r in &sec.rows {
        for c in columns {
            let v = r.values.get(*c).copied();
            assert!(
                v.is_some_and(|v| v > 0.0),
                "{} {}: {c} = {v:?}",
                r.workload,
                r.system
            );
        }
    }
    assert!(!sec.ratios.is_empty(), "no ratios: {sec:#?}");
}

/// Harness P for seconds, one round, pcaps in `pcaps`.
fn p_opts(
    pcaps: &testbed::vswitchd::TempDir,
    smoke: bool,
    workload: Option<&str>,
) -> harness_p::Opts {
    harness_p::Opts {
        warmup: Duration::from_secs(1),
        window: Duration::from_secs(2),
        pcap_dir: pcaps.path().to_path_buf(),
        vswitchd: workspace_bin("vswitchd"),
        rounds: 1,
        smoke,
        workload: workload.map(str::to_string),
    }
}

#[test]
fn harness_p_smoke() {
    let pcaps = testbed::vswitchd::TempDir::new("pcaps");
    let o = p_opts(&pcaps, true, None);
    let sec = harness_p::run(&o, tsc_hz(), "smoke").unwrap_or_else(|e| panic!("{e:#}"));
    // testpmd io, vswitchd, one OVS configuration.
    assert_figures(&sec, 3, &["Mpps", "cycles/pkt"]);
    let vs = sec.rows.iter().find(|r| r.system == "vswitchd").unwrap();
    assert!(vs.values["own cycles/pkt"] > 0.0 && vs.values["busy %"] > 0.0);
}

/// The VXLAN rows: vswitchd's VTEP and OVS's native tunneling both carry
/// traffic, encap and decap.
#[test]
fn harness_p_vxlan_smoke() {
    let pcaps = testbed::vswitchd::TempDir::new("pcaps");
    let o = p_opts(&pcaps, false, Some("vxlan"));
    let sec = harness_p::run(&o, tsc_hz(), "smoke").unwrap_or_else(|e| panic!("{e:#}"));
    // Three workloads (encap bridged and routed, decap) x (testpmd io,
    // vswitchd, OVS).
    assert_figures(&sec, 9, &["Mpps", "cycles/pkt"]);
    for w in [
        "VXLAN encap, 1k flows",
        "VXLAN encap, routed, 1k flows",
        "VXLAN decap, 1k flows",
    ] {
        assert_eq!(
            sec.rows.iter().filter(|r| r.workload == w).count(),
            3,
            "{w}"
        );
    }
}

#[test]
fn harness_v_smoke() {
    let o = harness_v::Opts {
        warmup: Duration::from_secs(1),
        window: Duration::from_secs(2),
        vswitchd: workspace_bin("vswitchd"),
        latprobe: PathBuf::from(env!("CARGO_BIN_EXE_latprobe")),
        rounds: 1,
        smoke: true,
    };
    let sec = harness_v::run(&o, tsc_hz(), "smoke").unwrap_or_else(|e| panic!("{e:#}"));
    assert_figures(
        &sec,
        3,
        &[
            "Mpps",
            "gen busy %",
            "switch busy %",
            "RTT p50 us",
            "RTT p99.9 us",
        ],
    );
}

#[test]
fn harness_k_smoke() {
    let o = harness_k::Opts {
        seconds: 2,
        rounds: 1,
        vswitchd: workspace_bin("vswitchd"),
    };
    let sec = harness_k::run(&o, "smoke").unwrap_or_else(|e| panic!("{e:#}"));
    // 7 workloads (TCP 1/4, UDP 1/10, ping-pong, redis SET/GET) x 3
    // topologies, and the cross-CPU floor of ping-pong.
    assert_eq!(sec.rows.len(), 22, "{sec:#?}");
    for r in &sec.rows {
        let want: &[&str] = match r.workload.as_str() {
            w if w.starts_with("TCP") => &["Gbit/s", "CPU0 s/GB"],
            w if w.starts_with("UDP") => &["kpps sent", "kpps rcvd"],
            w if w.starts_with("sockperf") => &["p50 us", "p99.9 us"],
            _ => &["kQPS", "avg ms", "p99 ms"],
        };
        let vs = r.system.starts_with("vswitchd");
        for c in want.iter().chain(if vs {
            &["cyc/frame", "syscalls/frame"][..]
        } else {
            &[]
        }) {
            let v = r.values.get(*c).copied();
            assert!(
                v.is_some_and(|v| v > 0.0),
                "{} {}: {c} = {v:?}",
                r.workload,
                r.system
            );
        }
    }
    assert!(!sec.ratios.is_empty(), "no ratios: {sec:#?}");
}

/// Harness D: the worker forwards beside idle ports; both plugins plug
/// containers that answer a ping, one by one and at once, and unplug them.
#[test]
fn harness_d_smoke() {
    let pcaps = testbed::vswitchd::TempDir::new("pcaps");
    let o = harness_d::Opts {
        vswitchd: workspace_bin("vswitchd"),
        cni: workspace_bin("vswitch-cni"),
        sequential: 3,
        concurrent: 3,
        pcap_dir: pcaps.path().to_path_buf(),
        rounds: 1,
        warmup: Duration::from_secs(1),
        window: Duration::from_secs(2),
        idle_nics: 10,
    };
    let sec = harness_d::run(&o, "smoke").unwrap_or_else(|e| panic!("{e:#}"));
    // Four idle-port configurations, then (sequential, concurrent) x
    // (vswitchd TAP, vswitchd vhost-user, Linux bridge).
    assert_eq!(sec.rows.len(), 10, "{sec:#?}");
    for r in sec.rows.iter().take(4) {
        assert!(
            r.values["Mpps"] > 0.0 && r.values["own cycles/pkt"] > 0.0,
            "{r:?}"
        );
    }
    for r in sec.rows.iter().skip(4) {
        for c in ["ADD+ping p50 ms", "ADD p50 ms", "DEL p50 ms"] {
            assert!(r.values[c] > 0.0, "{r:?}");
        }
    }
    assert!(!sec.ratios.is_empty());
}

#[test]
fn harness_c_smoke() {
    let o = harness_c::Opts {
        vswitchd: workspace_bin("vswitchd"),
        agent: workspace_bin("vswitch-agent"),
        trials: 3,
        populations: vec![1, 100],
    };
    let sec = harness_c::run(&o, "smoke").unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(sec.rows.len(), 2, "{sec:#?}");
    for r in &sec.rows {
        assert_eq!(r.values["failed"], 0.0, "{r:?}");
        for c in [
            "p50 ms",
            "p99 ms",
            "port-add p50 ms",
            "B apply p50 ms",
            "agent RSS MB",
            "re-list ms",
            "tunnel-set ms",
            "restart to applied ms",
        ] {
            assert!(
                r.values[c] > 0.0,
                "{} {}: {c} = {}",
                r.workload,
                r.system,
                r.values[c]
            );
        }
    }
}
