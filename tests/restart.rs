//! vswitchd restarts under running containers: a kernel container on a
//! TAP NIC (persistent, re-attached) and a DPDK container (testpmd on
//! virtio-user in server mode, vswitchd's vhost-user port in client mode)
//! both regain connectivity without being restarted. The gap is measured
//! and printed. Needs root, DPDK and hugepages.

mod common;

use std::time::Duration;

use testbed::netns::Netns;
use testbed::process::Proc;
use testbed::testpmd::{Testpmd, TestpmdOpts};
use testbed::vswitchd::{TempDir, Vswitchd};
use testbed::{unique, wait_until};

/// Timestamps (s) of the replies a `ping -D` printed.
fn reply_times(p: &Proc) -> Vec<f64> {
    p.output()
        .iter()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect()
}

/// The longest silence between two replies, in ms.
fn longest_gap_ms(t: &[f64]) -> f64 {
    t.windows(2)
        .map(|w| (w[1] - w[0]) * 1000.0)
        .fold(0.0, f64::max)
}

/// `ping -D` every 10 ms from `ns` to `ip`, until stopped.
fn pinger(ns: &Netns, ip: &str) -> Proc {
    let mut c = ns.command("ping");
    c.args(["-D", "-i", "0.01", "-W", "1", ip]);
    Proc::spawn("ping", c).unwrap()
}

#[test]
fn containers_regain_connectivity_after_a_vswitchd_restart() {
    let k = Netns::create(&unique("rsk")).unwrap();
    let k2 = Netns::create(&unique("rsl")).unwrap();
    let dir = TempDir::new("vs-restart");
    let sock = dir.join("dpdk.sock");
    // The DPDK container owns its socket (server) and answers ARP and ping;
    // it finishes starting once vswitchd connected.
    let mut tp = Testpmd::launch(
        "tp-echo",
        &TestpmdOpts {
            socket: &sock,
            mac: "02:00:00:91:00:09",
            fwd: "icmpecho",
            server: true,
            ..Default::default()
        },
    )
    .unwrap();
    let cfg = common::header(&dir)
        + &common::tap_port("k", &k, "02:00:00:91:00:01", "10.91.0.1/24")
        + &common::tap_port("l", &k2, "02:00:00:91:00:02", "10.91.0.2/24")
        + &format!(
            "[[port]]\nname = \"d\"\nkind = \"vhost-user\"\nbridge = \"vpc1\"\nsocket = \"{}\"\nclient = true\n",
            sock.display()
        );
    let vs = common::start(&dir, &cfg);
    tp.wait_up().unwrap();
    tp.cmd("start");
    let ok = |ip: &str| {
        wait_until(Duration::from_secs(20), || {
            k.exec(&["ping", "-c", "1", "-W", "1", ip]).is_ok()
        })
    };
    assert!(ok("10.91.0.2"), "kernel container to kernel container");
    assert!(ok("10.91.0.9"), "kernel container to DPDK container");

    let to_tap = pinger(&k, "10.91.0.2");
    let to_dpdk = pinger(&k, "10.91.0.9");
    assert!(wait_until(Duration::from_secs(10), || reply_times(&to_tap)
        .len()
        > 20
        && reply_times(&to_dpdk).len() > 20));
    let (tap_before, dpdk_before) = (reply_times(&to_tap).len(), reply_times(&to_dpdk).len());
    let (rx_before, _) = tp.port_stats().unwrap();

    assert_eq!(vs.stop(), Some(0));
    assert!(
        k.exec(&["ip", "-4", "addr", "show", "dev", "eth0"])
            .is_ok_and(|o| o.contains("10.91.0.1/24")),
        "the kernel container kept its NIC and address"
    );
    let vs = common::start(&dir, &cfg);
    assert!(
        wait_until(Duration::from_secs(30), || reply_times(&to_tap).len()
            > tap_before + 20
            && reply_times(&to_dpdk).len() > dpdk_before + 20),
        "connectivity did not come back"
    );
    let (rx_after, _) = tp.port_stats().unwrap();
    assert!(rx_after > rx_before, "the same testpmd kept receiving");
    let (gap_tap, gap_dpdk) = (
        longest_gap_ms(&reply_times(&to_tap)),
        longest_gap_ms(&reply_times(&to_dpdk)),
    );
    // Printed for the README's restart figure (cargo test -- --nocapture).
    eprintln!("restart gap: TAP NIC {gap_tap:.0} ms, vhost-user client {gap_dpdk:.0} ms");
    assert!(gap_tap > 0.0 && gap_dpdk > 0.0);
    drop(to_tap);
    drop(to_dpdk);
    vs.stop();
}

/// A runtime's view: NICs added through the CNI plugin (two TAP
/// containers and a DPDK container whose virtio-user listens, vswitchd
/// connecting as client) and a security group added through the control
/// socket exist only as runtime changes. They all come back after SIGTERM
/// and a new start, and after SIGKILL (a crash) and a new start; CHECK
/// passes each time.
#[test]
fn cni_nics_and_runtime_groups_survive_sigterm_and_sigkill() {
    let dir = TempDir::new("vs-rcni");
    let header = common::header(&dir);
    let vs = common::start(&dir, &header);
    let conf = serde_json::json!({
        "cniVersion": "1.1.0",
        "name": unique("rnet"),
        "type": "vswitch-cni",
        "bridge": "vpc1",
        "controlSocket": Vswitchd::control_socket(&dir),
        "socketDir": dir.join("vhost"),
        "vhostMode": "client",
        "ipam": { "type": "host-local", "subnet": "10.94.0.0/24", "dataDir": dir.join("ipam") },
    });
    let c1 = Netns::create(&unique("rc1")).unwrap();
    let c2 = Netns::create(&unique("rc2")).unwrap();
    let (r1, rc) = common::cni("ADD", Some(&c1), "restart-one", &conf);
    assert_eq!(rc, 0, "{r1}");
    let (r2, rc) = common::cni("ADD", Some(&c2), "restart-two", &conf);
    assert_eq!(rc, 0, "{r2}");
    let mut dpdk = conf.clone();
    dpdk["nic"] = serde_json::json!("vhost-user");
    let c3 = Netns::create(&unique("rc3")).unwrap();
    let (r3, rc) = common::cni("ADD", Some(&c3), "restart-three", &dpdk);
    assert_eq!(rc, 0, "{r3}");
    let sock = std::path::PathBuf::from(r3["interfaces"][0]["socketPath"].as_str().unwrap());
    let mut tp = Testpmd::launch(
        "tp-cni",
        &TestpmdOpts {
            socket: &sock,
            mac: r3["interfaces"][0]["mac"].as_str().unwrap(),
            fwd: "icmpecho",
            server: true,
            ..Default::default()
        },
    )
    .unwrap();
    tp.wait_up().unwrap();
    tp.cmd("start");
    vs.request(serde_json::json!({"cmd": "acl-set", "groups":
        "[[security_group]]\nname = \"runtime-group\"\ndefault = \"allow\"\n"}))
        .unwrap();

    let ip = |r: &serde_json::Value| common::addr_of(r).split('/').next().unwrap().to_string();
    let (ip2, ip3) = (ip(&r2), ip(&r3));
    let reachable = |what: &str| {
        for to in [&ip2, &ip3] {
            assert!(
                wait_until(Duration::from_secs(20), || c1
                    .exec(&["ping", "-c", "1", "-W", "1", to])
                    .is_ok()),
                "{what}: c1 cannot reach {to}"
            );
        }
    };
    let check = |what: &str| {
        for (ns, id, r, c) in [
            (&c1, "restart-one", &r1, &conf),
            (&c3, "restart-three", &r3, &dpdk),
        ] {
            let mut with_prev = c.clone();
            with_prev["prevResult"] = r.clone();
            let (e, rc) = common::cni("CHECK", Some(ns), id, &with_prev);
            assert_eq!(rc, 0, "{what}: CHECK of {id}: {e}");
        }
    };
    let ports = |vs: &Vswitchd| {
        let l = vs.request(serde_json::json!({"cmd": "port-list"})).unwrap();
        l.as_array().unwrap().len()
    };
    reachable("before");
    check("before");
    assert_eq!(ports(&vs), 3);

    assert_eq!(vs.stop(), Some(0));
    let vs = common::start(&dir, &header);
    assert_eq!(ports(&vs), 3, "the CNI ports are back after SIGTERM");
    reachable("after SIGTERM");
    check("after SIGTERM");

    vs.kill();
    let vs = common::start(&dir, &header);
    assert_eq!(ports(&vs), 3, "the CNI ports are back after SIGKILL");
    reachable("after SIGKILL");
    check("after SIGKILL");
    let groups = vs.request(serde_json::json!({"cmd": "acl-show"})).unwrap();
    assert!(groups.to_string().contains("runtime-group"), "{groups}");

    // A DEL is committed too: gone for good after a restart.
    assert_eq!(common::cni("DEL", Some(&c2), "restart-two", &conf).1, 0);
    assert_eq!(vs.stop(), Some(0));
    let vs = common::start(&dir, &header);
    assert_eq!(ports(&vs), 2);
    for (ns, id, c) in [(&c1, "restart-one", &conf), (&c3, "restart-three", &dpdk)] {
        assert_eq!(common::cni("DEL", Some(ns), id, c).1, 0);
    }
    drop(tp);
    vs.stop();
}
