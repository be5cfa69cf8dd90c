//! `vswitch-cni` driven exactly as a container runtime drives a CNI plugin
//! (CNI_* environment, network config on stdin, result on stdout), with
//! Debian's host-local IPAM, against a running vswitchd and fresh network
//! namespaces. Needs root, DPDK, hugepages and containernetworking-plugins.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use testbed::netns::Netns;
use testbed::unique;
use testbed::vswitchd::{TempDir, Vswitchd};

/// Runs the plugin with only `env` set and `stdin` on its standard input:
/// (stdout as JSON or Null, exit code).
fn run_plugin(env: &[(&str, String)], stdin: &[u8]) -> (Value, i32) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vswitch-cni"));
    c.env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("vswitch-cni runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
    };
    (v, out.status.code().unwrap_or(-1))
}

/// The plugin as a runtime calls it for container `id`'s eth0, in netns
/// `netns` (a path under /var/run/netns), with `conf` on stdin.
fn cni_at(cmd: &str, netns: Option<String>, id: &str, conf: &Value) -> (Value, i32) {
    let mut env = vec![
        ("CNI_COMMAND", cmd.to_string()),
        ("CNI_CONTAINERID", id.to_string()),
        ("CNI_IFNAME", "eth0".to_string()),
        ("CNI_PATH", "/usr/lib/cni".to_string()),
    ];
    if let Some(name) = netns {
        env.push(("CNI_NETNS", format!("/var/run/netns/{name}")));
    }
    run_plugin(&env, conf.to_string().as_bytes())
}

/// [`cni_at`] for a namespace that exists.
fn cni(cmd: &str, netns: Option<&Netns>, id: &str, conf: &Value) -> (Value, i32) {
    cni_at(cmd, netns.map(|n| n.name().to_string()), id, conf)
}

fn addr_of(result: &Value) -> String {
    result["ips"][0]["address"].as_str().unwrap().to_string()
}

#[test]
fn the_plugin_as_a_runtime_drives_it() {
    let dir = TempDir::new("vs-cni");
    let vs = common::start(&dir, &common::header(&dir));
    let socket = Vswitchd::control_socket(&dir);
    let net = unique("cninet");
    let conf = json!({
        "cniVersion": "1.1.0",
        "name": net,
        "type": "vswitch-cni",
        "bridge": "vpc1",
        "controlSocket": socket,
        "socketDir": dir.join("vhost"),
        "ipam": {
            "type": "host-local",
            "subnet": "10.93.0.0/24",
            "dataDir": dir.join("ipam"),
        },
    });
    let c1 = Netns::create(&unique("cn1")).unwrap();
    let c2 = Netns::create(&unique("cn2")).unwrap();

    let (v, rc) = cni("VERSION", None, "", &Value::Null);
    assert_eq!(rc, 0);
    assert_eq!(v["supportedVersions"], json!(["1.0.0", "1.1.0"]));
    assert_eq!(cni("STATUS", None, "", &conf).1, 0);

    // Two containers get NICs and addresses and talk.
    let (r1, rc) = cni("ADD", Some(&c1), "container-one", &conf);
    assert_eq!(rc, 0, "{r1}");
    let (r2, rc) = cni("ADD", Some(&c2), "container-two", &conf);
    assert_eq!(rc, 0, "{r2}");
    assert_eq!(r1["cniVersion"], "1.1.0");
    assert_eq!(r1["interfaces"][0]["name"], "eth0");
    assert_eq!(r1["ips"][0]["interface"], 0);
    let (a1, a2) = (addr_of(&r1), addr_of(&r2));
    assert!(a1.starts_with("10.93.0.") && a1 != a2, "{a1} {a2}");
    let shown = c1
        .exec(&["ip", "-4", "addr", "show", "dev", "eth0"])
        .unwrap();
    assert!(shown.contains(&a1), "{shown}");
    let mac = c1.exec(&["cat", "/sys/class/net/eth0/address"]).unwrap();
    assert_eq!(mac.trim(), r1["interfaces"][0]["mac"]);
    let ip2 = a2.split('/').next().unwrap();
    assert!(
        c1.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", ip2])
            .is_ok_and(|o| o.contains("3 received")),
        "containers added by the plugin ping each other"
    );

    // CHECK: as ADD left it; a wrong prevResult is a mismatch.
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = r1.clone();
    let (e, rc) = cni("CHECK", Some(&c1), "container-one", &with_prev);
    assert_eq!(rc, 0, "{e}");
    let mut wrong = with_prev.clone();
    wrong["prevResult"]["interfaces"][0]["mac"] = json!("02:00:00:00:00:99");
    let (e, rc) = cni("CHECK", Some(&c1), "container-one", &wrong);
    assert_eq!((rc, e["code"].as_u64()), (1, Some(101)), "{e}");

    // A DPDK container gets a vhost-user socket in its own directory, and
    // the bandwidth capability becomes its policers.
    let mut dpdk = conf.clone();
    dpdk["nic"] = json!("vhost-user");
    dpdk["runtimeConfig"] = json!({ "bandwidth": {
        "ingressRate": 10_000_000, "ingressBurst": 800_000, "egressRate": 5_000_000, "egressBurst": 400_000 } });
    let c3 = Netns::create(&unique("cn3")).unwrap();
    let (r3, rc) = cni("ADD", Some(&c3), "container-three", &dpdk);
    assert_eq!(rc, 0, "{r3}");
    let sock = r3["interfaces"][0]["socketPath"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(sock.starts_with(dir.join("vhost").to_str().unwrap()) && sock.len() < 108);
    assert!(
        std::path::Path::new(&sock).exists(),
        "vswitchd listens on {sock}"
    );
    let qos = vs.request(json!({"cmd": "qos-show"})).unwrap();
    let policies = qos["toml"].as_str().unwrap();
    assert!(
        policies.contains("cir = 10000000") && policies.contains("cir = 5000000"),
        "{qos}"
    );

    // GC keeps only the valid attachments.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([
        { "containerID": "container-one", "ifname": "eth0" },
        { "containerID": "container-three", "ifname": "eth0" },
    ]);
    assert_eq!(cni("GC", None, "", &gc).1, 0);
    assert!(!c2.has_interface("eth0"), "GC removed container two's NIC");
    assert!(c1.has_interface("eth0") && std::path::Path::new(&sock).exists());

    // DEL, twice.
    for _ in 0..2 {
        assert_eq!(cni("DEL", Some(&c1), "container-one", &conf).1, 0);
        assert_eq!(cni("DEL", Some(&c3), "container-three", &dpdk).1, 0);
    }
    assert!(!c1.has_interface("eth0") && !std::path::Path::new(&sock).exists());
    assert!(!vs.request(json!({"cmd": "qos-show"})).unwrap()["toml"]
        .as_str()
        .unwrap()
        .contains("cir"));
    let ports = vs.request(json!({"cmd": "port-list"})).unwrap();
    assert_eq!(ports, json!([]), "every plugin port is gone");

    // Malformed input gets the spec's codes, and changes nothing.
    let code = |v: &(Value, i32)| (v.1, v.0["code"].as_u64().unwrap_or(0));
    let (out, _) = run_plugin(&[("CNI_COMMAND", "ADD".into())], b"{\"cniVersion\": ");
    assert_eq!(out["code"], 6, "undecodable config");
    let mut old = conf.clone();
    old["cniVersion"] = json!("0.3.1");
    assert_eq!(
        code(&cni("ADD", Some(&c1), "x", &old)),
        (1, 1),
        "incompatible version"
    );
    let mut nobridge = conf.clone();
    nobridge.as_object_mut().unwrap().remove("bridge");
    assert_eq!(
        code(&cni("ADD", Some(&c1), "x", &nobridge)),
        (1, 7),
        "invalid config"
    );
    assert_eq!(code(&cni("ADD", None, "x", &conf)), (1, 4), "no CNI_NETNS");
    let gone = Netns::create(&unique("cn4")).unwrap();
    let name = gone.name().to_string();
    drop(gone);
    let (out, _) = cni_at("ADD", Some(name), "x", &conf);
    assert_eq!(out["code"], 3, "unknown container: {out}");
    let mut down = conf.clone();
    down["controlSocket"] = json!(dir.join("nobody.sock"));
    assert_eq!(
        code(&cni("STATUS", None, "", &down)),
        (1, 50),
        "plugin not available"
    );
    assert_eq!(vs.request(json!({"cmd": "port-list"})).unwrap(), json!([]));
    vs.stop();
}
