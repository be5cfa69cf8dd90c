//! `vswitch-cni` driven exactly as a container runtime drives a CNI plugin
//! (CNI_* environment, network config on stdin, result on stdout), with
//! Debian's host-local IPAM, against a running vswitchd and fresh network
//! namespaces. Needs root, DPDK, hugepages and containernetworking-plugins.

mod common;

use std::time::Duration;

use common::{addr_of, cni, cni_at, run_plugin};

use serde_json::{json, Value};
use testbed::netns::Netns;
use testbed::vswitchd::{TempDir, Vswitchd};
use testbed::{unique, wait_until};

#[test]
fn the_plugin_as_a_runtime_drives_it() {
    let dir = TempDir::new("vs-cni");
    let vs = common::start(&dir, &common::header(&dir));
    let baseline = common::quiescent_mbufs(&vs);
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
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
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

    // A second ADD with c1's interface name in c1's namespace (another
    // container ID) is refused, and c1's NIC is untouched.
    let (e, rc) = cni("ADD", Some(&c1), "intruder", &conf);
    assert_eq!(rc, 1, "{e}");
    assert!(
        e["details"]
            .as_str()
            .unwrap_or("")
            .contains("already has an interface"),
        "{e}"
    );
    assert!(
        c1.exec(&["ping", "-c", "1", "-W", "2", ip2]).is_ok(),
        "c1 still talks"
    );
    // GC without the list of valid attachments would remove everything:
    // refused.
    let (e, rc) = cni("GC", None, "", &conf);
    assert_eq!((rc, e["code"].as_u64()), (1, Some(7)), "{e}");
    assert!(c2.has_interface("eth0"));

    // GC keeps only the valid attachments and releases the others'
    // addresses (host-local keeps one file per leased address).
    let lease = |a: &str| {
        dir.join("ipam")
            .join(&net)
            .join(a.split('/').next().unwrap())
            .exists()
    };
    assert!(lease(&a2));
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([
        { "containerID": "container-one", "ifname": "eth0" },
        { "containerID": "container-three", "ifname": "eth0" },
    ]);
    assert_eq!(cni("GC", None, "", &gc).1, 0);
    // The NIC's device is destroyed just after the answer (off vswitchd's
    // control thread: unregistering a netdev takes 20-35 ms).
    assert!(
        wait_until(Duration::from_secs(5), || !c2.has_interface("eth0")),
        "GC removed container two's NIC"
    );
    assert!(!lease(&a2), "GC released container two's address");
    assert!(lease(&a1));
    assert!(c1.has_interface("eth0") && std::path::Path::new(&sock).exists());

    // DEL, twice.
    for _ in 0..2 {
        assert_eq!(cni("DEL", Some(&c1), "container-one", &conf).1, 0);
        assert_eq!(cni("DEL", Some(&c3), "container-three", &dpdk).1, 0);
    }
    assert!(
        wait_until(Duration::from_secs(5), || !c1.has_interface("eth0"))
            && !std::path::Path::new(&sock).exists()
    );
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
    old["cniVersion"] = json!("0.2.0");
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
    common::assert_mbufs_back_to(&vs, baseline);
    vs.stop();
}

/// Dual stack, asked in CNI 0.4.0 (as many Multus attachments still are):
/// host-local hands out an IPv4 and an IPv6 address; the TAP gets both
/// (the IPv6 one without duplicate address detection), the containers
/// reach each other over IPv6 too, and the result is in 0.4.0's form.
#[test]
fn a_dual_stack_ipam_result_configures_both_families() {
    let dir = TempDir::new("vs-cn6");
    let vs = common::start(&dir, &common::header(&dir));
    let conf = json!({
        "cniVersion": "0.4.0",
        "name": unique("cni6"),
        "type": "vswitch-cni",
        "bridge": "vpc1",
        "controlSocket": Vswitchd::control_socket(&dir),
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.94.0.0/24"}], [{"subnet": "fd94::/64"}]],
            "dataDir": dir.join("ipam"),
        },
    });
    let c1 = Netns::create(&unique("c61")).unwrap();
    let c2 = Netns::create(&unique("c62")).unwrap();
    for ns in [&c1, &c2] {
        ns.enable_ipv6().unwrap();
    }
    let (r1, rc) = cni("ADD", Some(&c1), "dual-one", &conf);
    assert_eq!(rc, 0, "{r1}");
    let (r2, rc) = cni("ADD", Some(&c2), "dual-two", &conf);
    assert_eq!(rc, 0, "{r2}");
    assert_eq!(r1["cniVersion"], "0.4.0");
    let families: Vec<&str> = r1["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| ip["version"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(families, ["4", "6"], "{r1}");
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = r1.clone();
    assert_eq!(cni("CHECK", Some(&c1), "dual-one", &with_prev).1, 0);
    let v6_of = |r: &Value| {
        r["ips"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|ip| ip["address"].as_str())
            .find(|a| a.contains(':'))
            .expect("an IPv6 address")
            .to_string()
    };
    let (a1, a2) = (v6_of(&r1), v6_of(&r2));
    let shown = c1
        .exec(&["ip", "-6", "addr", "show", "dev", "eth0"])
        .unwrap();
    assert!(
        shown.contains(&format!("{a1} scope global nodad")),
        "usable at once, no duplicate address detection: {shown}"
    );
    let ip2 = a2.split('/').next().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || c1
            .exec(&["ping", "-c", "1", "-W", "1", ip2])
            .is_ok()),
        "IPv6 between the containers: {}",
        vs.request(json!({"cmd": "stats"})).unwrap()
    );
    for (ns, id) in [(&c1, "dual-one"), (&c2, "dual-two")] {
        assert_eq!(cni("DEL", Some(ns), id, &conf).1, 0);
    }
}

/// Under Kubernetes (`K8S_POD_UID` in `CNI_ARGS`) a vhost-user NIC's
/// socket is in the pod's own directory, which the pod mounts by its UID
/// (deploy/kubernetes/dpdk-pod.yaml); DEL removes socket and directory; a
/// UID that is not one (a path) is not used as a directory name.
#[test]
fn a_pods_vhost_user_socket_is_in_a_directory_named_by_its_uid() {
    let dir = TempDir::new("vs-cni-uid");
    let vs = common::start(&dir, &common::header(&dir));
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": unique("cnipod"),
        "type": "vswitch-cni",
        "bridge": "vpc1",
        "nic": "vhost-user",
        "controlSocket": Vswitchd::control_socket(&dir),
        "socketDir": dir.join("vhost"),
    });
    let uid = "0f8c2c1e-5d2a-4b7e-9a43-2f6f3f1d9b10";
    let env = |cmd: &str, id: &str, args: &str| {
        vec![
            ("CNI_COMMAND", cmd.to_string()),
            ("CNI_CONTAINERID", id.to_string()),
            ("CNI_IFNAME", "net1".to_string()),
            ("CNI_PATH", "/usr/lib/cni".to_string()),
            // This test's own namespace: the host's.
            ("CNI_NETNS", format!("/proc/{}/ns/net", std::process::id())),
            (
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=dpdk;{args}"),
            ),
        ]
    };
    let body = conf.to_string();
    let (r, rc) = run_plugin(
        &env("ADD", "sandbox-a", &format!("K8S_POD_UID={uid}")),
        body.as_bytes(),
    );
    assert_eq!(rc, 0, "{r}");
    let sock = dir.join("vhost").join(uid).join("net1.sock");
    assert_eq!(r["interfaces"][0]["socketPath"], sock.to_str().unwrap());
    assert!(sock.exists(), "vswitchd listens on {}", sock.display());
    let (e, rc) = run_plugin(
        &env("DEL", "sandbox-a", &format!("K8S_POD_UID={uid}")),
        body.as_bytes(),
    );
    assert_eq!(rc, 0, "{e}");
    assert!(
        !dir.join("vhost").join(uid).exists(),
        "DEL removes the pod's directory"
    );
    assert!(vs
        .request(json!({"cmd": "port-list"}))
        .unwrap()
        .as_array()
        .unwrap()
        .is_empty());

    // A "UID" that is a path: the container's directory instead.
    let (r, rc) = run_plugin(
        &env("ADD", "sandbox-b", "K8S_POD_UID=../../etc"),
        body.as_bytes(),
    );
    assert_eq!(rc, 0, "{r}");
    assert_eq!(
        r["interfaces"][0]["socketPath"],
        dir.join("vhost")
            .join("sandbox-b")
            .join("net1.sock")
            .to_str()
            .unwrap()
    );
    assert_eq!(
        run_plugin(&env("DEL", "sandbox-b", ""), body.as_bytes()).1,
        0
    );
}

/// A namespace file bind-mounted outside /run/netns (as docker, rootless
/// runtimes or a custom CRI do), unmounted when dropped.
struct Pinned(std::path::PathBuf);

impl Pinned {
    fn new(ns: &Netns, at: std::path::PathBuf) -> Pinned {
        std::fs::write(&at, "").unwrap();
        let src = format!("/run/netns/{}", ns.name());
        let st = std::process::Command::new("mount")
            .args(["--bind", &src])
            .arg(&at)
            .status()
            .unwrap();
        assert!(st.success(), "bind-mounting {src}");
        Pinned(at)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// CNI_NETNS may be any namespace file: the NIC is created in it, talks,
/// and leaves with DEL.
#[test]
fn a_netns_bind_mounted_anywhere_gets_its_nic() {
    let dir = TempDir::new("vs-cni-pin");
    let vs = common::start(&dir, &common::header(&dir));
    let conf = json!({
        "cniVersion": "1.1.0",
        "name": unique("cnipin"),
        "type": "vswitch-cni",
        "bridge": "vpc1",
        "controlSocket": Vswitchd::control_socket(&dir),
        "ipam": { "type": "host-local", "subnet": "10.94.0.0/24", "dataDir": dir.join("ipam") },
    });
    let c1 = Netns::create(&unique("cnp1")).unwrap();
    let c2 = Netns::create(&unique("cnp2")).unwrap();
    // The host's own namespace is never a container's, by any path.
    let (e, rc) = run_plugin(
        &[
            ("CNI_COMMAND", "ADD".to_string()),
            ("CNI_CONTAINERID", "intruder".to_string()),
            ("CNI_IFNAME", "eth9".to_string()),
            ("CNI_PATH", "/usr/lib/cni".to_string()),
            // This test's own namespace: the host's.
            ("CNI_NETNS", format!("/proc/{}/ns/net", std::process::id())),
        ],
        conf.to_string().as_bytes(),
    );
    assert_eq!((rc, e["code"].as_u64()), (1, Some(4)), "{e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or("")
            .contains("host's network namespace"),
        "{e}"
    );
    assert!(!dir.join("ipam").exists(), "refused before IPAM: {e}");
    let pinned = Pinned::new(&c2, dir.join("pinned-netns"));
    let (r1, rc) = cni("ADD", Some(&c1), "pin-one", &conf);
    assert_eq!(rc, 0, "{r1}");
    let env = |cmd: &str| {
        vec![
            ("CNI_COMMAND", cmd.to_string()),
            ("CNI_CONTAINERID", "pin-two".to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", "/usr/lib/cni".to_string()),
            ("CNI_NETNS", pinned.0.display().to_string()),
        ]
    };
    let (r2, rc) = run_plugin(&env("ADD"), conf.to_string().as_bytes());
    assert_eq!(rc, 0, "{r2}");
    assert!(
        c2.has_interface("eth0"),
        "the NIC is in the pinned namespace"
    );
    let ip2 = addr_of(&r2);
    let ip2 = ip2.split('/').next().unwrap();
    assert!(
        c1.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", ip2])
            .is_ok_and(|o| o.contains("2 received")),
        "the pinned container talks"
    );
    let (e, rc) = run_plugin(&env("DEL"), conf.to_string().as_bytes());
    assert_eq!(rc, 0, "{e}");
    assert!(!c2.has_interface("eth0"));
    assert_eq!(cni("DEL", Some(&c1), "pin-one", &conf).1, 0);
    assert_eq!(vs.request(json!({"cmd": "port-list"})).unwrap(), json!([]));
}
