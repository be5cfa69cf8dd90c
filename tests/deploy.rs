//! The deployment files (deploy/) checked against the tree they deploy:
//! the systemd units pass `systemd-analyze verify` with the binaries the
//! build made; the container recipe copies binaries Cargo builds and
//! installs every package the built vswitchd links; the Kubernetes
//! manifests parse, their vswitchd config passes `check-config`, every
//! path a process uses is on a volume of its container, every command is
//! in the image, and the attachments' network configs are ones the CNI
//! plugin accepts, with keys the README documents. Needs systemd and
//! python3-yaml (scripts/setup.sh installs them).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use testbed::vswitchd::TempDir;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A built binary of the workspace (the agent is another package's, in
/// the same target directory).
fn binary(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_vswitchd"))
        .with_file_name(name)
        .canonicalize()
        .unwrap_or_else(|e| panic!("{name} is built: {e}"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every document of a YAML file, through Debian's PyYAML (safe_load).
fn yaml_docs(rel: &str) -> Vec<Value> {
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)",
        ])
        .arg(root().join(rel))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{rel}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(v) => v,
        v => panic!("{rel}: {v}"),
    }
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn the_systemd_units_verify_with_the_built_binaries() {
    let dir = TempDir::new("vs-units");
    let mut units = Vec::new();
    for unit in ["vswitchd.service", "vswitch-agent.service"] {
        let text = read(&format!("deploy/systemd/{unit}"));
        // The units name the installed paths; here the built ones.
        let mut local = text.clone();
        for bin in ["vswitchd", "vswitch-agent"] {
            local = local.replace(
                &format!("/usr/bin/{bin} "),
                &format!("{} ", binary(bin).display()),
            );
        }
        assert_ne!(local, text, "{unit} runs a binary of ours");
        let p = dir.join(unit);
        std::fs::write(&p, local).unwrap();
        units.push(p);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .expect("systemd-analyze runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");

    // What the unit starts is what vswitchd accepts.
    let unit = read("deploy/systemd/vswitchd.service");
    assert!(unit.contains("ExecStart=/usr/bin/vswitchd run --config ${VSWITCHD_CONFIG}"));
    assert!(unit.contains("ExecStartPre=/usr/bin/vswitchd check-config ${VSWITCHD_CONFIG}"));
    assert!(unit.contains("RuntimeDirectory=vswitchd") && unit.contains("StateDirectory=vswitchd"));
    let agent_help = Command::new(binary("vswitch-agent"))
        .arg("--help")
        .output()
        .unwrap();
    let agent_help = String::from_utf8_lossy(&agent_help.stdout);
    for flag in ["--control", "--etcd", "--host", "--vtep"] {
        assert!(agent_help.contains(flag), "vswitch-agent takes {flag}");
    }
}

/// Packages a Containerfile stage installs with apt-get.
fn apt_packages(stage: &str) -> BTreeSet<String> {
    let joined = stage.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.split("apt-get install").nth(1))
        .flat_map(|rest| {
            rest.split("&&")
                .next()
                .unwrap_or("")
                .split_whitespace()
                .filter(|w| !w.starts_with('-'))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The Debian package that holds `file` (usr-merged paths tried both ways).
fn package_of(file: &Path) -> String {
    let real = file.canonicalize().unwrap();
    let s = real.to_str().unwrap();
    let alt = s
        .strip_prefix("/usr")
        .map(str::to_string)
        .unwrap_or(format!("/usr{s}"));
    for p in [s.to_string(), alt] {
        let out = Command::new("dpkg").args(["-S", &p]).output().unwrap();
        if out.status.success() {
            let line = String::from_utf8_lossy(&out.stdout);
            return line.split(':').next().unwrap().to_string();
        }
    }
    panic!("no package holds {s}")
}

/// `pkgs` and everything they depend on (Depends and PreDepends).
fn closure(pkgs: &BTreeSet<String>) -> BTreeSet<String> {
    let out = Command::new("apt-cache")
        .args([
            "depends",
            "--recurse",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
        ])
        .args(pkgs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            l.trim()
                .trim_start_matches('|')
                .trim_start_matches("PreDepends:")
                .trim_start_matches("Depends:")
                .trim()
                .trim_matches(|c| c == '<' || c == '>')
                .split(':')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn the_container_recipe_builds_our_binaries_and_installs_what_they_link() {
    let recipe = read("deploy/container/Containerfile");
    // After the comments: a build stage and a runtime stage.
    let stages: Vec<&str> = recipe.split("\nFROM ").skip(1).collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let (build, runtime) = (stages[0], stages[1]);

    // The build stage installs what scripts/setup.sh installs to build.
    let setup = read("scripts/setup.sh");
    for pkg in apt_packages(build) {
        assert!(
            setup.contains(&pkg),
            "{pkg} is not a build package of setup.sh"
        );
    }
    for bin in ["vswitchd", "vswitchctl", "vswitch-cni"] {
        assert!(
            build.contains(&format!("--bin {bin}")),
            "the build makes {bin}"
        );
        assert!(
            runtime.contains(&format!("/src/target/release/{bin}")),
            "the image has {bin}"
        );
    }
    assert!(
        build.contains("-p vswitch-agent") && runtime.contains("/src/target/release/vswitch-agent")
    );
    for copied in ["README.md", "deploy/kubernetes/install-cni.sh"] {
        assert!(runtime.contains(&format!("COPY {copied} ")), "{copied}");
        assert!(root().join(copied).exists(), "{copied} exists");
    }

    // Every library the built vswitchd links, and every DPDK driver its
    // port kinds load, comes with the runtime stage's packages.
    let installed = apt_packages(runtime);
    let have = closure(&installed);
    let ldd = Command::new("ldd")
        .arg(binary("vswitchd"))
        .output()
        .unwrap();
    let ldd = String::from_utf8_lossy(&ldd.stdout).to_string();
    let libs: Vec<&str> = ldd
        .lines()
        .filter_map(|l| l.split("=> ").nth(1))
        .filter_map(|r| r.split_whitespace().next())
        .filter(|p| p.starts_with('/'))
        .collect();
    assert!(libs.iter().any(|l| l.contains("librte_eal")), "{ldd}");
    let pmds = Path::new("/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0");
    let drivers = [
        "librte_net_virtio.so.23",
        "librte_net_e1000.so.23",
        "librte_net_af_xdp.so.23",
        "librte_net_af_packet.so.23",
        "librte_net_pcap.so.23",
        "librte_net_null.so.23",
        "librte_net_ring.so.23",
        "librte_bus_pci.so.23",
        "librte_bus_vdev.so.23",
        "librte_mempool_ring.so.23",
    ];
    for file in libs
        .iter()
        .map(PathBuf::from)
        .chain(drivers.iter().map(|d| pmds.join(d)))
    {
        let pkg = package_of(&file);
        assert!(
            have.contains(&pkg),
            "{} is in {pkg}, which the runtime stage does not install",
            file.display()
        );
    }
}

/// The container of a pod spec named `name`.
fn container<'a>(spec: &'a Value, name: &str) -> &'a Value {
    spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(spec["initContainers"].as_array().into_iter().flatten())
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// Where `path` is inside container `c`: the volume mounted at it or at a
/// directory above it.
fn volume_of<'a>(c: &'a Value, path: &str) -> Option<&'a str> {
    c["volumeMounts"].as_array()?.iter().find_map(|m| {
        let at = m["mountPath"].as_str()?;
        (path == at || path.starts_with(&format!("{at}/"))).then(|| m["name"].as_str().unwrap())
    })
}

/// A hostPath volume's path.
fn host_path<'a>(spec: &'a Value, volume: &str) -> &'a str {
    spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == volume)
        .and_then(|v| v["hostPath"]["path"].as_str())
        .unwrap_or_else(|| panic!("volume {volume} is a hostPath"))
}

/// The paths the image has (deploy/container/Containerfile's COPY
/// destinations).
fn image_paths() -> Vec<String> {
    let recipe = read("deploy/container/Containerfile");
    let recipe = recipe.replace("\\\n", " ");
    let mut paths = Vec::new();
    for l in recipe.lines().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = l
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let dst = words.last().unwrap();
        for src in &words[1..words.len() - 1] {
            // `COPY . .` (the build context) names no file.
            let Some(file) = Path::new(src).file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            paths.push(if dst.ends_with('/') {
                format!("{dst}{file}")
            } else {
                dst.to_string()
            });
        }
    }
    paths
}

/// A CNI network config the plugin accepts, with documented keys only.
fn check_net_conf(conf: &Value) {
    vswitchd::cni::NetConf::parse(conf.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("the plugin refuses {conf}: {e:?}"));
    let readme = read("README.md");
    for key in conf.as_object().unwrap().keys() {
        assert!(
            readme.contains(&format!("`{key}`")),
            "README does not document CNI key {key}"
        );
    }
}

#[test]
fn the_kubernetes_manifests_fit_the_image_the_config_and_the_plugin() {
    let ds_docs = yaml_docs("deploy/kubernetes/vswitchd-daemonset.yaml");
    let ds = of_kind(&ds_docs, "DaemonSet")[0];
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    let images = image_paths();
    for c in spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(spec["initContainers"].as_array().unwrap())
    {
        assert_eq!(c["image"], "vswitchd:latest");
        let cmd = c["command"][0].as_str().unwrap();
        assert!(
            images.iter().any(|p| p == cmd),
            "{cmd} is not in the image: {images:?}"
        );
    }
    let install = container(spec, "install-cni");
    assert!(read("deploy/kubernetes/install-cni.sh").contains("/host/opt/cni/bin"));
    let cni_bin = volume_of(install, "/host/opt/cni/bin").expect("the CNI directory is mounted");
    assert_eq!(host_path(spec, cni_bin), "/opt/cni/bin");

    // The config passes check-config, and its socket and state file are
    // on host directories of the vswitchd container.
    let cm = of_kind(&ds_docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "vswitchd-config")
        .unwrap();
    let toml_text = cm["data"]["vswitchd.toml"].as_str().unwrap();
    let dir = TempDir::new("vs-k8s");
    let file = dir.join("vswitchd.toml");
    std::fs::write(&file, toml_text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vswitchd"))
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: toml::Value = toml::from_str(toml_text).unwrap();
    let vs = container(spec, "vswitchd");
    let args: Vec<&str> = vs["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["run", "--config", "/etc/vswitchd/vswitchd.toml"]);
    assert_eq!(volume_of(vs, "/etc/vswitchd/vswitchd.toml"), Some("config"));
    let socket = config["control"]["socket"].as_str().unwrap();
    let run = volume_of(vs, socket).expect("the control socket is on a volume");
    assert_eq!(
        host_path(spec, run),
        Path::new(socket).parent().unwrap().to_str().unwrap()
    );
    let state = config["control"]["state_file"].as_str().unwrap();
    let sv = volume_of(vs, state).expect("the state file is on a volume");
    assert!(
        spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == sv && v["hostPath"].is_object()),
        "the state file outlives the pod"
    );
    let probe: Vec<&str> = vs["readinessProbe"]["exec"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(probe[..3], ["/usr/bin/vswitchctl", "--socket", socket]);
    let agent = container(spec, "vswitch-agent");
    assert_eq!(
        volume_of(agent, socket),
        Some(run),
        "the agent reaches the socket"
    );
    // Pods' bind-mounted namespaces are visible to vswitchd as they come.
    let netns = vs["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/run/netns")
        .expect("pods' namespaces are mounted");
    assert_eq!(netns["mountPropagation"], "HostToContainer");
    assert_eq!(
        vs["resources"]["limits"]["hugepages-2Mi"],
        vs["resources"]["requests"]["hugepages-2Mi"]
    );

    // The attachments: configs the plugin takes, bridges the config has,
    // the socket it talks to, vhost-user sockets where vswitchd serves
    // them and where the DPDK pod mounts its own directory.
    let bridges: Vec<&str> = config["bridge"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    let mut socket_dir = None;
    for file in ["nad-tap.yaml", "nad-vhost-user.yaml"] {
        let docs = yaml_docs(&format!("deploy/kubernetes/{file}"));
        let nad = of_kind(&docs, "NetworkAttachmentDefinition")[0];
        let conf: Value = serde_json::from_str(nad["spec"]["config"].as_str().unwrap()).unwrap();
        check_net_conf(&conf);
        assert_eq!(conf["type"], "vswitch-cni");
        assert_eq!(conf["name"], nad["metadata"]["name"], "{file}");
        assert!(
            bridges.contains(&conf["bridge"].as_str().unwrap()),
            "{file}: bridge {}",
            conf["bridge"]
        );
        assert!(conf.get("controlSocket").map_or(true, |s| s == socket));
        if conf["nic"] == "vhost-user" {
            let d = conf["socketDir"]
                .as_str()
                .unwrap_or("/run/vswitch-cni")
                .to_string();
            let v =
                volume_of(vs, &format!("{d}/uid/net1.sock")).expect("vswitchd serves in socketDir");
            assert_eq!(host_path(spec, v), d);
            socket_dir = Some((d, nad["metadata"]["name"].as_str().unwrap().to_string()));
        }
        for pod in of_kind(&docs, "Pod") {
            let nets = pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"]
                .as_str()
                .unwrap();
            assert!(
                nets.starts_with(nad["metadata"]["name"].as_str().unwrap()),
                "{nets}"
            );
        }
    }
    let (socket_dir, nad_name) = socket_dir.expect("a vhost-user attachment");
    let docs = yaml_docs("deploy/kubernetes/dpdk-pod.yaml");
    let pod = of_kind(&docs, "Pod")[0];
    let nets = pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"]
        .as_str()
        .unwrap();
    let (net, ifname) = nets.split_once('@').expect("the pod names its interface");
    assert_eq!(net, nad_name);
    let pspec = &pod["spec"];
    let app = &pspec["containers"][0];
    let mount = app["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["subPathExpr"].is_string())
        .expect("the socket directory is mounted by the pod's UID");
    assert_eq!(mount["subPathExpr"], "$(POD_UID)");
    assert!(app["env"].as_array().unwrap().iter().any(
        |e| e["name"] == "POD_UID" && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
    ));
    assert_eq!(
        host_path(pspec, mount["name"].as_str().unwrap()),
        socket_dir
    );
    let sock = format!("{}/{ifname}.sock", mount["mountPath"].as_str().unwrap());
    assert!(
        app["args"].as_array().unwrap().iter().any(|a| a
            .as_str()
            .unwrap()
            .starts_with(&format!("--vdev=net_virtio_user0,path={sock},"))),
        "testpmd opens {sock}"
    );
    assert!(app["resources"]["limits"]["hugepages-2Mi"].is_string());
}
