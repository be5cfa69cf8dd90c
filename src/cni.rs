//! `vswitch-cni`: the CNI plugin (spec 1.1.0, also answering 1.0.0, 0.4.0
//! and 0.3.1, as Multus attachments still often say) that
//! gives a container its own vswitchd NIC.
//!
//! Driven as a container runtime drives any plugin: the command and the
//! container in `CNI_*` environment variables, the network configuration
//! on stdin, the result (or an error with the spec's code) on stdout. The
//! plugin itself holds no state: it asks vswitchd over its control socket
//! (the same requests as `vswitchctl`), and names each port after a hash of
//! the network and the attachment (container ID, interface), so DEL, CHECK
//! and GC find the ports of ADD without a database.
//!
//! Network configuration (besides the standard `cniVersion`, `name`,
//! `type`, `ipam`, `runtimeConfig`, `prevResult`):
//!
//! | key | default | |
//! |---|---|---|
//! | `bridge` | required | vswitchd bridge domain (VPC segment, VNI) |
//! | `nic` | `tap` | `tap` (kernel container: NIC created in `CNI_NETNS` as `CNI_IFNAME`) or `vhost-user` (DPDK container: socket `socketDir/<id>/<ifname>.sock`, reported as the interface's `socketPath`) |
//! | `controlSocket` | /run/vswitchd/vswitchd.sock | vswitchd's control socket |
//! | `socketDir` | /run/vswitch-cni | where per-container vhost-user directories go |
//! | `vhostMode` | `server` | vswitchd's side of the vhost-user socket: `server` (it listens) or `client` (the container's virtio-user listens with `server=1` and vswitchd reconnects to it after a restart) |
//! | `portSecurity` | true | the NIC may send only from its MAC and the IPAM's addresses (see vswitchd's port security); false for a router or VM-like container |
//! | `allowedAddresses` | – | further source addresses or prefixes the NIC may use (virtual IPs) |
//! | `ingressGroup`, `egressGroup`, `ingressQos`, `egressQos` | – | security groups / QoS policies of vswitchd for the NIC (also from `args.cni`) |
//! | `mtu` | 1500 | the NIC's MTU (tap) |
//!
//! The `bandwidth` capability (`runtimeConfig.bandwidth`: `ingressRate`,
//! `ingressBurst`, `egressRate`, `egressBurst`, bits/s and bits, as the
//! standard bandwidth plugin reads them) becomes the NIC's srTCM policers.
//! IPAM is delegated to a standard plugin from `CNI_PATH` (e.g. host-local).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::control::{request, Request};
use vswitch::types::fnv;

/// Versions this plugin speaks.
pub const SUPPORTED: &[&str] = &["0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The oldest version that has `command` (CHECK came with 0.4.0, GC and
/// STATUS with 1.1.0; ADD, DEL and VERSION are in all).
fn since(command: &str) -> &'static str {
    match command {
        "CHECK" => "0.4.0",
        "GC" | "STATUS" => "1.1.0",
        _ => "0.3.1",
    }
}

/// A CNI version (`1.0.0`) as a comparable triple; only versions in
/// [`SUPPORTED`] reach it (a three-number parse: no semver crate for it).
fn version_key(v: &str) -> (u32, u32, u32) {
    let mut n = v.split('.').map(|x| x.parse().unwrap_or(0));
    (
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
    )
}

/// `result` (in 1.x form) as version `v` writes it: before 1.0.0 every
/// IP entry names its family (`"version": "4"` or `"6"`), as Multus and
/// runtimes speaking 0.3.1 and 0.4.0 read it.
fn in_version(mut result: Value, v: &str) -> Value {
    if v.starts_with("0.") {
        for ip in result["ips"].as_array_mut().into_iter().flatten() {
            let six = ip["address"].as_str().is_some_and(|a| a.contains(':'));
            ip["version"] = Value::from(if six { "6" } else { "4" });
        }
    }
    result
}

/// A CNI error result (spec section "Error").
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CniError {
    /// The version of the error format.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Code: 1-99 from the spec, 100+ ours.
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Details.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// Spec error codes used here.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN: u32 = 11;
    /// The plugin is not available (STATUS).
    pub const NOT_AVAILABLE: u32 = 50;
    /// vswitchd refused the NIC (ours).
    pub const REFUSED: u32 = 100;
    /// The attachment is not as ADD left it (CHECK; ours).
    pub const MISMATCH: u32 = 101;
}

fn err(c: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError {
        cni_version: "1.1.0".into(),
        code: c,
        msg: msg.into(),
        details: details.into(),
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: String,
    /// `CNI_PATH`.
    pub path: String,
}

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> Env {
        let v = |k: &str| std::env::var(k).unwrap_or_default();
        Env {
            command: v("CNI_COMMAND"),
            container_id: v("CNI_CONTAINERID"),
            netns: v("CNI_NETNS"),
            ifname: v("CNI_IFNAME"),
            args: v("CNI_ARGS"),
            path: v("CNI_PATH"),
        }
    }

    /// `K8S_POD_UID` of `CNI_ARGS` (kubelet and Multus pass it), if it
    /// has a UID's form: hex digits and dashes, so it can name a
    /// directory and never reach outside one.
    fn pod_uid(&self) -> Option<&str> {
        self.args
            .split(';')
            .find_map(|kv| kv.strip_prefix("K8S_POD_UID="))
            .filter(|u| {
                (1..=64).contains(&u.len()) && u.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            })
    }

    fn need(&self, name: &str, v: &str) -> Result<(), CniError> {
        if v.is_empty() {
            Err(err(code::INVALID_ENV, format!("{name} is not set"), ""))
        } else {
            Ok(())
        }
    }

    /// CNI_CONTAINERID and CNI_IFNAME present and of the spec's forms
    /// (CNI 1.1 "Parameters"), checked before anything uses them: they name
    /// ports and socket paths (`socketDir/<id>/<ifname>.sock`), so `..` or
    /// `/` would reach outside the socket directory.
    fn need_ids(&self) -> Result<(), CniError> {
        self.need("CNI_CONTAINERID", &self.container_id)?;
        self.need("CNI_IFNAME", &self.ifname)?;
        let id = &self.container_id;
        let id_ok = id.len() <= MAX_CONTAINER_ID
            && id.starts_with(|c: char| c.is_ascii_alphanumeric())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !id_ok {
            return Err(err(
                code::INVALID_ENV,
                "CNI_CONTAINERID is not a container ID",
                format!(
                    "it must start with a letter or digit, hold only letters, digits, '_', '.' and '-', \
                     and be at most {MAX_CONTAINER_ID} characters"
                ),
            ));
        }
        let n = &self.ifname;
        let if_ok = n.len() < libc::IFNAMSIZ
            && n != "."
            && n != ".."
            && !n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
        if !if_ok {
            return Err(err(
                code::INVALID_ENV,
                "CNI_IFNAME is not an interface name",
                "at most 15 characters, not '.' or '..', without '/', ':' or whitespace",
            ));
        }
        Ok(())
    }
}

/// Longest container ID taken (the spec sets none; runtimes use 64 hex
/// digits). A bound keeps names and paths built from it bounded.
const MAX_CONTAINER_ID: usize = 128;

/// The kind of NIC a network gives its containers.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Nic {
    /// A TAP NIC in the container's namespace.
    #[default]
    Tap,
    /// A vhost-user socket for a DPDK container.
    VhostUser,
}

/// vswitchd's side of a vhost-user socket.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum VhostMode {
    /// vswitchd creates the socket and listens; the container's
    /// virtio-user connects (and must reconnect after a vswitchd restart).
    #[default]
    Server,
    /// The container's virtio-user listens on the socket (`server=1`);
    /// vswitchd connects, and reconnects after its own restart, so the
    /// container's DPDK app never notices.
    Client,
}

/// The bandwidth capability.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    /// Bits/s towards the container.
    #[serde(default)]
    pub ingress_rate: u64,
    /// Burst, bits.
    #[serde(default)]
    pub ingress_burst: u64,
    /// Bits/s from the container.
    #[serde(default)]
    pub egress_rate: u64,
    /// Burst, bits.
    #[serde(default)]
    pub egress_burst: u64,
}

#[derive(Debug, Clone, Deserialize, Default)]
struct RuntimeConfig {
    #[serde(default)]
    bandwidth: Option<Bandwidth>,
}

/// One attachment GC must keep.
#[derive(Debug, Clone, Deserialize)]
struct Attachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

/// The network configuration (see the module documentation).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    cni_version: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    nic: Nic,
    #[serde(default = "default_control")]
    control_socket: PathBuf,
    #[serde(default = "default_socket_dir")]
    socket_dir: PathBuf,
    #[serde(default)]
    vhost_mode: VhostMode,
    #[serde(default)]
    ingress_group: Option<String>,
    #[serde(default)]
    egress_group: Option<String>,
    #[serde(default)]
    ingress_qos: Option<String>,
    #[serde(default)]
    egress_qos: Option<String>,
    #[serde(default)]
    mtu: Option<u16>,
    /// Port security (on unless false): the NIC may send only from its
    /// MAC and the IPAM's addresses, plus `allowedAddresses`.
    #[serde(default)]
    port_security: Option<bool>,
    #[serde(default)]
    allowed_addresses: Vec<String>,
    #[serde(default)]
    ipam: Option<Value>,
    #[serde(default)]
    runtime_config: RuntimeConfig,
    #[serde(default)]
    args: Option<Value>,
    #[serde(default)]
    prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
}

fn default_control() -> PathBuf {
    "/run/vswitchd/vswitchd.sock".into()
}

fn default_socket_dir() -> PathBuf {
    "/run/vswitch-cni".into()
}

/// The prefix of every port of network `net`.
fn net_prefix(net: &str) -> String {
    format!("cni-{:04x}-", fnv(&[net]) & 0xffff)
}

/// The vswitchd port of an attachment: `cni-NNNN-AAAAAAAAAA` (network and
/// attachment hashes), a valid port name.
pub fn port_name(net: &str, container_id: &str, ifname: &str) -> String {
    format!(
        "{}{:010x}",
        net_prefix(net),
        fnv(&[container_id, ifname]) & 0xff_ffff_ffff
    )
}

/// The NIC's MAC: locally administered, unicast, from the attachment.
pub fn mac_of(container_id: &str, ifname: &str) -> String {
    vswitch::MacAddr::derived(&["mac", container_id, ifname]).to_string()
}

/// Whether the namespace file `path` is the one this process runs in
/// (the host's, for a plugin the runtime runs): the same nsfs inode.
fn is_own_netns(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(path),
        std::fs::metadata("/proc/self/ns/net"),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// `CNI_NETNS` as vswitchd names a namespace: a name under /run/netns (or
/// /var/run/netns), a process's namespace (/proc/PID/ns/net), or any
/// other namespace file by its path (runtimes bind-mount them where they
/// like: /var/run/docker/netns/..., /run/user/UID/netns/...).
fn netns_field(path: &str) -> Result<(&'static str, Value), CniError> {
    let p = Path::new(path);
    let parent = p.parent().and_then(|d| d.to_str());
    if matches!(parent, Some("/run/netns" | "/var/run/netns")) {
        if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
            return Ok(("netns", Value::from(n)));
        }
    }
    let parts: Vec<&str> = path.split('/').collect();
    if let ["", "proc", pid, "ns", "net"] = parts.as_slice() {
        if let Ok(pid) = pid.parse::<u32>() {
            return Ok(("pid", Value::from(pid)));
        }
    }
    match crate::config::Netns::from_field(path) {
        Some(crate::config::Netns::Path(_)) => Ok(("netns", Value::from(path))),
        _ => Err(err(
            code::INVALID_ENV,
            "unsupported CNI_NETNS",
            format!("{path}: vswitch-cni takes the absolute path of a network namespace file"),
        )),
    }
}

impl NetConf {
    /// Parses stdin's configuration and checks its version and fields.
    pub fn parse(text: &[u8]) -> Result<NetConf, CniError> {
        let c: NetConf = serde_json::from_slice(text).map_err(|e| {
            err(
                code::DECODE,
                "cannot decode the network configuration",
                e.to_string(),
            )
        })?;
        if !SUPPORTED.contains(&c.cni_version.as_str()) {
            return Err(err(
                code::INCOMPATIBLE_VERSION,
                format!("CNI version {} is not supported", c.cni_version),
                format!("supported: {}", SUPPORTED.join(", ")),
            ));
        }
        if c.name.is_empty() {
            return Err(err(code::INVALID_CONFIG, "the network has no `name`", ""));
        }
        Ok(c)
    }

    /// A policy name from the config or `args.cni` (the runtime's args).
    fn policy(&self, key: &str, own: &Option<String>) -> Option<String> {
        own.clone().or_else(|| {
            self.args
                .as_ref()?
                .get("cni")?
                .get(key)?
                .as_str()
                .map(str::to_string)
        })
    }

    fn bridge(&self) -> Result<&str, CniError> {
        self.bridge.as_deref().ok_or_else(|| {
            err(
                code::INVALID_CONFIG,
                "the network config needs `bridge`",
                "",
            )
        })
    }
}

/// The executable of plugin `kind` in one of CNI_PATH's directories.
fn plugin_path(env: &Env, kind: &str) -> Option<PathBuf> {
    env.path
        .split(':')
        .map(|d| Path::new(d).join(kind))
        .find(|p| p.is_file())
}

/// Runs the IPAM plugin of `conf` for `command`, with the network
/// configuration as it came (at a version the IPAM speaks).
fn ipam(conf: &NetConf, raw: &Value, env: &Env, command: &str) -> Result<Option<Value>, CniError> {
    let Some(ipam) = &conf.ipam else {
        return Ok(None);
    };
    let kind = ipam
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| err(code::INVALID_CONFIG, "ipam needs a `type`", ""))?;
    let bin = plugin_path(env, kind).ok_or_else(|| {
        err(
            code::INVALID_CONFIG,
            format!("IPAM plugin {kind:?} not found"),
            format!("searched CNI_PATH={}", env.path),
        )
    })?;
    let mut stdin = raw.clone();
    // Standard IPAM plugins of Debian 12 speak up to 1.0.0, whose ADD/DEL/
    // CHECK results are the same as 1.1.0's.
    stdin["cniVersion"] = Value::from("1.0.0");
    let mut child = Command::new(&bin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_NETNS", &env.netns)
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_ARGS", &env.args)
        .env("CNI_PATH", &env.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            err(
                code::IO,
                format!("cannot run {}", bin.display()),
                e.to_string(),
            )
        })?;
    use std::io::Write;
    let _ = child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.to_string().as_bytes());
    let out = child
        .wait_with_output()
        .map_err(|e| err(code::IO, "IPAM plugin failed", e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Pass the IPAM plugin's error result on.
        return Err(serde_json::from_str::<Value>(&text)
            .ok()
            .map(|v| {
                err(
                    v["code"].as_u64().unwrap_or(u64::from(code::IO)) as u32,
                    format!("IPAM {kind}: {}", v["msg"].as_str().unwrap_or("failed")),
                    v["details"].as_str().unwrap_or_default().to_string(),
                )
            })
            .unwrap_or_else(|| {
                err(
                    code::IO,
                    format!("IPAM {kind} failed"),
                    format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
                )
            }));
    }
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| err(code::DECODE, "cannot decode the IPAM result", e.to_string()))
}

/// Asks vswitchd; a refusal is code 100, an unreachable vswitchd 11.
fn ask(conf: &NetConf, req: &Request) -> Result<Value, CniError> {
    let r = request(&conf.control_socket, req)
        .map_err(|e| err(code::TRY_AGAIN, "vswitchd is not reachable", e))?;
    if r.ok {
        Ok(r.result.unwrap_or_default())
    } else {
        Err(err(
            code::REFUSED,
            "vswitchd refused",
            r.error.unwrap_or_default(),
        ))
    }
}

/// The vhost-user socket of an attachment: in a directory per pod
/// (`socketDir/<K8S_POD_UID>/`, which the pod can mount by its own UID
/// through the downward API and `subPathExpr`, and so sees no other pod's
/// sockets), or per container outside Kubernetes (the container ID's
/// first 12 characters).
fn socket_path(conf: &NetConf, env: &Env) -> Result<PathBuf, CniError> {
    let dir = match env.pod_uid() {
        Some(uid) => uid.to_string(),
        None => env.container_id.chars().take(12).collect(),
    };
    let p = conf
        .socket_dir
        .join(dir)
        .join(format!("{}.sock", env.ifname));
    if p.as_os_str().len() > 107 {
        return Err(err(
            code::INVALID_CONFIG,
            "vhost-user socket path too long",
            format!(
                "{} is over the 107-byte limit: shorten socketDir",
                p.display()
            ),
        ));
    }
    Ok(p)
}

/// The QoS policies the bandwidth capability asks for, as TOML, and the
/// port fields naming them.
fn bandwidth_policies(port: &str, b: &Bandwidth) -> (String, Vec<(&'static str, String)>) {
    let mut toml = String::new();
    let mut fields = Vec::new();
    for (dir, rate, burst, field) in [
        ("in", b.ingress_rate, b.ingress_burst, "ingress_qos"),
        ("out", b.egress_rate, b.egress_burst, "egress_qos"),
    ] {
        if rate == 0 {
            continue;
        }
        let name = format!("{port}-{dir}");
        // The bandwidth plugin's burst is in bits; our buckets in bytes,
        // at least one full-size frame.
        let cbs = (burst / 8).max(1518);
        toml += &format!(
            "[[qos_policy]]\nname = \"{name}\"\nkind = \"srtcm\"\nunit = \"bits\"\ncir = {rate}\ncbs = {cbs}\nred = \"drop\"\n"
        );
        fields.push((field, name));
    }
    (toml, fields)
}

/// ADD: IPAM, then the NIC; on a failure after IPAM, the address is
/// released again.
fn add(conf: &NetConf, raw: &Value, env: &Env) -> Result<Value, CniError> {
    env.need_ids()?;
    let bridge = conf.bridge()?.to_string();
    if conf.nic == Nic::Tap {
        env.need("CNI_NETNS", &env.netns)?;
        if !Path::new(&env.netns).exists() {
            return Err(err(
                code::UNKNOWN_CONTAINER,
                "the container's netns does not exist",
                env.netns.clone(),
            ));
        }
        netns_field(&env.netns)?;
        if is_own_netns(Path::new(&env.netns)) {
            return Err(err(
                code::INVALID_ENV,
                "CNI_NETNS is the host's network namespace",
                format!(
                    "{}: a container NIC is never put into the namespace the plugin (and the host) runs in",
                    env.netns
                ),
            ));
        }
    }
    let ipam_result = ipam(conf, raw, env, "ADD")?;
    let undo_ipam = || {
        let _ = ipam(conf, raw, env, "DEL");
    };
    let added = add_nic(conf, env, &bridge, ipam_result.as_ref());
    if added.is_err() {
        undo_ipam();
    }
    let iface = added?;
    let mut result = json!({
        "cniVersion": conf.cni_version,
        "interfaces": [iface],
        "ips": [],
    });
    let legacy = |r: Value| in_version(r, &conf.cni_version);
    if let Some(r) = ipam_result {
        let ips: Vec<Value> = r["ips"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut ip| {
                ip["interface"] = Value::from(0);
                ip
            })
            .collect();
        result["ips"] = Value::Array(ips);
        for k in ["routes", "dns"] {
            if let Some(v) = r.get(k) {
                result[k] = v.clone();
            }
        }
    }
    Ok(legacy(result))
}

/// Plugs the NIC; returns the result's interface entry.
fn add_nic(
    conf: &NetConf,
    env: &Env,
    bridge: &str,
    ipam: Option<&Value>,
) -> Result<Value, CniError> {
    let name = port_name(&conf.name, &env.container_id, &env.ifname);
    let mac = mac_of(&env.container_id, &env.ifname);
    let mut port = Map::new();
    port.insert("name".into(), Value::from(name.clone()));
    port.insert("bridge".into(), Value::from(bridge));
    port.insert(
        "cni".into(),
        json!({ "network": conf.name, "container_id": env.container_id, "ifname": env.ifname }),
    );
    // The IPAM's addresses: the first IPv4 and the first IPv6 one
    // configure a TAP, and all of them are what port security lets the
    // NIC send from.
    let ips: Vec<Value> = ipam
        .and_then(|r| r["ips"].as_array().cloned())
        .unwrap_or_default();
    let addr_of = |ip: &Value| {
        ip["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse::<std::net::IpAddr>().ok())
    };
    let first = |v6: bool| {
        ips.iter()
            .find(|ip| addr_of(ip).is_some_and(|a| a.is_ipv6() == v6))
            .cloned()
    };
    let (v4, v6) = (first(false), first(true));
    if conf.port_security == Some(false) {
        port.insert("port_security".into(), Value::from(false));
    } else {
        let others: Vec<Value> = ips
            .iter()
            .filter(|ip| {
                conf.nic == Nic::VhostUser || (Some(*ip) != v4.as_ref() && Some(*ip) != v6.as_ref())
            })
            .filter_map(|ip| addr_of(ip).map(|a| Value::from(a.to_string())))
            .collect();
        if !others.is_empty() {
            port.insert("addresses".into(), Value::Array(others));
        }
        if !conf.allowed_addresses.is_empty() {
            port.insert(
                "allowed_addresses".into(),
                Value::from(conf.allowed_addresses.clone()),
            );
        }
    }
    let mut iface = json!({ "name": env.ifname, "mac": mac });
    match conf.nic {
        Nic::Tap => {
            let (key, ns) = netns_field(&env.netns)?;
            port.insert("kind".into(), Value::from("tap"));
            port.insert(key.into(), ns);
            port.insert("ifname".into(), Value::from(env.ifname.clone()));
            port.insert("mac".into(), Value::from(mac.clone()));
            for (ip, key, gateway) in [(&v4, "ipv4", "gateway"), (&v6, "ipv6", "gateway6")] {
                if let Some(ip) = ip {
                    port.insert(key.into(), ip["address"].clone());
                    if let Some(gw) = ip.get("gateway") {
                        port.insert(gateway.into(), gw.clone());
                    }
                }
            }
            if let Some(m) = conf.mtu {
                port.insert("mtu".into(), Value::from(m));
            }
            iface["sandbox"] = Value::from(env.netns.clone());
        }
        Nic::VhostUser => {
            let sock = socket_path(conf, env)?;
            let dir = sock.parent().expect("a file in a directory");
            std::fs::create_dir_all(dir).map_err(|e| {
                err(
                    code::IO,
                    format!("cannot create {}", dir.display()),
                    e.to_string(),
                )
            })?;
            port.insert("kind".into(), Value::from("vhost-user"));
            port.insert("socket".into(), Value::from(sock.display().to_string()));
            if conf.vhost_mode == VhostMode::Client {
                port.insert("client".into(), Value::from(true));
            }
            port.insert("mac".into(), Value::from(mac.clone()));
            iface["socketPath"] = Value::from(sock.display().to_string());
        }
    }
    for (key, own) in [
        (
            "ingress_group",
            conf.policy("ingressGroup", &conf.ingress_group),
        ),
        (
            "egress_group",
            conf.policy("egressGroup", &conf.egress_group),
        ),
        ("ingress_qos", conf.policy("ingressQos", &conf.ingress_qos)),
        ("egress_qos", conf.policy("egressQos", &conf.egress_qos)),
    ] {
        if let Some(v) = own {
            port.insert(key.into(), Value::from(v));
        }
    }
    let bw = conf.runtime_config.bandwidth.unwrap_or_default();
    let (policies, fields) = bandwidth_policies(&name, &bw);
    if !policies.is_empty() {
        ask(
            conf,
            &Request::QosSet {
                policies: Some(policies),
                remove: Vec::new(),
                port: None,
                ingress: None,
                egress: None,
            },
        )?;
        for (k, v) in &fields {
            port.insert((*k).into(), Value::from(v.clone()));
        }
    }
    if let Err(e) = ask(conf, &Request::PortAdd { port }) {
        remove_policies(conf, &name);
        return Err(e);
    }
    Ok(iface)
}

/// Removes the bandwidth policies of port `name`, if any.
fn remove_policies(conf: &NetConf, name: &str) {
    for dir in ["in", "out"] {
        let _ = ask(
            conf,
            &Request::QosSet {
                policies: None,
                remove: vec![format!("{name}-{dir}")],
                port: None,
                ingress: None,
                egress: None,
            },
        );
    }
}

/// Unplugs port `name` and its policies; a port already gone is fine.
fn remove_port(conf: &NetConf, name: &str) -> Result<(), CniError> {
    match ask(conf, &Request::PortDel { name: name.into() }) {
        Ok(_) => {}
        Err(e) if e.code == code::REFUSED && e.details.contains("no port named") => {}
        Err(e) => return Err(e),
    }
    remove_policies(conf, name);
    Ok(())
}

/// DEL: idempotent; with vswitchd down there is no port to remove.
fn del(conf: &NetConf, raw: &Value, env: &Env) -> Result<Value, CniError> {
    env.need_ids()?;
    let name = port_name(&conf.name, &env.container_id, &env.ifname);
    match remove_port(conf, &name) {
        Err(e) if e.code == code::TRY_AGAIN && !conf.control_socket.exists() => {}
        other => other?,
    }
    if conf.nic == Nic::VhostUser {
        if let Ok(sock) = socket_path(conf, env) {
            // vswitchd's own socket (server mode) goes; the container's
            // (client mode) is the container's. Only sockets are unlinked.
            use std::os::unix::fs::FileTypeExt;
            let is_socket =
                std::fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket());
            if conf.vhost_mode == VhostMode::Server && is_socket {
                let _ = std::fs::remove_file(&sock);
            }
            let _ = std::fs::remove_dir(sock.parent().expect("a file in a directory"));
        }
    }
    ipam(conf, raw, env, "DEL")?;
    Ok(Value::Null)
}

/// CHECK: the port exists as ADD made it, the TAP is in the container
/// with its MAC, and the IPAM agrees.
fn check(conf: &NetConf, raw: &Value, env: &Env) -> Result<Value, CniError> {
    env.need_ids()?;
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| err(code::INVALID_CONFIG, "CHECK needs prevResult", ""))?;
    let name = port_name(&conf.name, &env.container_id, &env.ifname);
    let show = ask(conf, &Request::PortShow { name: name.clone() }).map_err(|e| {
        err(
            code::MISMATCH,
            format!("no vswitchd port {name} for this attachment"),
            e.details,
        )
    })?;
    let bridge = conf.bridge()?;
    if show["bridge"] != bridge {
        return Err(err(
            code::MISMATCH,
            format!("port {name} is not in bridge {bridge}"),
            show.to_string(),
        ));
    }
    let mac = mac_of(&env.container_id, &env.ifname);
    if prev["interfaces"][0]["mac"] != mac {
        return Err(err(
            code::MISMATCH,
            "prevResult has another MAC",
            prev.to_string(),
        ));
    }
    if conf.nic == Nic::Tap {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", env.netns))
            .args(["ip", "-o", "link", "show", "dev", &env.ifname])
            .output()
            .map_err(|e| err(code::IO, "cannot look into the container", e.to_string()))?;
        if !String::from_utf8_lossy(&out.stdout).contains(&format!("link/ether {mac} ")) {
            return Err(err(
                code::MISMATCH,
                format!(
                    "{} in the container is not the NIC of port {name}",
                    env.ifname
                ),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
    }
    ipam(conf, raw, env, "CHECK")?;
    Ok(Value::Null)
}

/// GC: removes this network's ports whose attachment is not valid.
fn gc(conf: &NetConf, raw: &Value, env: &Env) -> Result<Value, CniError> {
    // Without the list, GC would remove every attachment of the network.
    let Some(valid) = conf.valid_attachments.as_deref() else {
        return Err(err(
            code::INVALID_CONFIG,
            "GC needs cni.dev/valid-attachments",
            "refusing to remove every attachment of the network",
        ));
    };
    let valid: BTreeSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let ports = ask(conf, &Request::PortList)?;
    for p in ports.as_array().cloned().unwrap_or_default() {
        // Ports are matched on the attachment they record (the network's
        // full name, container ID and interface), not on a name hash.
        let (Some(name), Some(cni)) = (p["name"].as_str(), p.get("cni")) else {
            continue;
        };
        let field = |k: &str| cni[k].as_str().unwrap_or_default().to_string();
        if field("network") != conf.name
            || valid.contains(&(field("container_id").as_str(), field("ifname").as_str()))
        {
            continue;
        }
        remove_port(conf, name)?;
        // Its address goes back to the IPAM (host-local releases by
        // container ID and interface).
        let gone = Env {
            container_id: field("container_id"),
            ifname: field("ifname"),
            ..env.clone()
        };
        ipam(conf, raw, &gone, "DEL")?;
    }
    // Delegated to IPAM too if it speaks 1.1.0 (Debian 12's host-local
    // stops at 1.0.0 and has no GC).
    if ipam_speaks(conf, env, "1.1.0") {
        let mut r = raw.clone();
        r["cniVersion"] = Value::from("1.1.0");
        ipam(conf, &r, env, "GC")?;
    }
    Ok(Value::Null)
}

/// Whether the IPAM plugin lists `version` in its VERSION answer.
fn ipam_speaks(conf: &NetConf, env: &Env, version: &str) -> bool {
    let Some(kind) = conf.ipam.as_ref().and_then(|i| i["type"].as_str()) else {
        return false;
    };
    let Some(bin) = plugin_path(env, kind) else {
        return false;
    };
    Command::new(bin)
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        .is_some_and(|v| {
            v["supportedVersions"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == version))
        })
}

/// Runs one invocation: `stdin` and `env` in, (stdout JSON, exit code) out.
pub fn run(env: &Env, stdin: &[u8]) -> (Value, i32) {
    if env.command == "VERSION" {
        return (
            json!({ "cniVersion": "1.1.0", "supportedVersions": SUPPORTED }),
            0,
        );
    }
    let outcome = (|| -> Result<Value, CniError> {
        let conf = NetConf::parse(stdin)?;
        let raw: Value = serde_json::from_slice(stdin).expect("parsed above");
        if conf.kind != "vswitch-cni" {
            return Err(err(
                code::INVALID_CONFIG,
                format!("type is {:?}, not vswitch-cni", conf.kind),
                "",
            ));
        }
        let needs = since(&env.command);
        if version_key(&conf.cni_version) < version_key(needs) {
            return Err(err(
                code::INCOMPATIBLE_VERSION,
                format!("{} needs cniVersion {needs} or later", env.command),
                format!("the network config says {}", conf.cni_version),
            ));
        }
        match env.command.as_str() {
            "ADD" => add(&conf, &raw, env),
            "DEL" => del(&conf, &raw, env),
            "CHECK" => check(&conf, &raw, env),
            "GC" => gc(&conf, &raw, env),
            "STATUS" => ask(&conf, &Request::PortList)
                .map(|_| Value::Null)
                .map_err(|e| err(code::NOT_AVAILABLE, "vswitchd is not available", e.details)),
            "" => Err(err(code::INVALID_ENV, "CNI_COMMAND is not set", "")),
            c => Err(err(
                code::INVALID_ENV,
                format!("unknown CNI_COMMAND {c:?}"),
                "",
            )),
        }
    })();
    match outcome {
        Ok(v) => (v, 0),
        Err(e) => (serde_json::to_value(e).expect("errors serialize"), 1),
    }
}

/// The plugin's main: reads stdin, prints the result, returns the exit code.
pub fn main() -> i32 {
    let env = Env::from_process();
    let mut stdin = Vec::new();
    if env.command != "VERSION" {
        if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
            let e = err(code::IO, "cannot read stdin", e.to_string());
            println!("{}", serde_json::to_string(&e).expect("errors serialize"));
            return 1;
        }
    }
    let (out, rc) = run(&env, &stdin);
    if !out.is_null() {
        println!("{out}");
    }
    rc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(cmd: &str) -> Env {
        Env {
            command: cmd.into(),
            container_id: "abc123".into(),
            netns: "/run/netns/c1".into(),
            ifname: "eth0".into(),
            ..Env::default()
        }
    }

    #[test]
    fn names_and_macs_are_stable_valid_and_distinct() {
        let a = port_name("vpc", "abc", "eth0");
        assert_eq!(a, port_name("vpc", "abc", "eth0"));
        assert_ne!(a, port_name("vpc", "abc", "eth1"));
        assert_ne!(a, port_name("other", "abc", "eth0"));
        assert!(a.starts_with(&net_prefix("vpc")) && a.len() <= 32);
        let m: vswitch::MacAddr = mac_of("abc", "eth0").parse().unwrap();
        assert!(
            !m.is_group() && m.0[0] & 2 == 2,
            "locally administered unicast"
        );
    }

    #[test]
    fn netns_paths() {
        assert_eq!(
            netns_field("/var/run/netns/c1").unwrap(),
            ("netns", Value::from("c1"))
        );
        assert_eq!(netns_field("/run/netns/c1").unwrap().0, "netns");
        assert_eq!(
            netns_field("/proc/42/ns/net").unwrap(),
            ("pid", Value::from(42))
        );
        // Bind-mounted anywhere (containerd, CRI-O, rootless runtimes).
        assert_eq!(
            netns_field("/var/run/docker/netns/3f2a").unwrap(),
            ("netns", Value::from("/var/run/docker/netns/3f2a"))
        );
        for bad in ["tmp/x", "/run/netns/../../etc/passwd", "/", ""] {
            assert_eq!(
                netns_field(bad).unwrap_err().code,
                code::INVALID_ENV,
                "{bad}"
            );
        }
    }

    #[test]
    fn results_before_1_0_name_each_address_family() {
        let r = json!({"cniVersion": "0.4.0", "interfaces": [{"name": "eth0"}], "ips": [
            {"address": "10.0.0.2/24", "interface": 0},
            {"address": "fd00::2/64", "interface": 0},
        ]});
        let old = in_version(r.clone(), "0.4.0");
        assert_eq!(
            (&old["ips"][0]["version"], &old["ips"][1]["version"]),
            (&json!("4"), &json!("6"))
        );
        assert_eq!(
            in_version(r.clone(), "1.1.0"),
            r,
            "1.x has no version field"
        );
        assert!(version_key("0.4.0") < version_key("1.0.0"));
        assert!(version_key("0.3.1") < version_key("0.4.0"));
    }

    #[test]
    fn errors_carry_the_spec_codes() {
        let (v, rc) = run(&env("VERSION"), b"");
        assert_eq!(rc, 0);
        assert_eq!(
            v["supportedVersions"],
            json!(["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        let (v, rc) = run(&env("ADD"), b"{not json");
        assert_eq!((rc, v["code"].as_u64()), (1, Some(6)));
        let old = br#"{"cniVersion":"0.2.0","name":"n","type":"vswitch-cni","bridge":"b"}"#;
        assert_eq!(run(&env("ADD"), old).0["code"], 1);
        // Commands a version does not have.
        let v031 = br#"{"cniVersion":"0.3.1","name":"n","type":"vswitch-cni","bridge":"b"}"#;
        let v040 = br#"{"cniVersion":"0.4.0","name":"n","type":"vswitch-cni","bridge":"b"}"#;
        assert_eq!(run(&env("CHECK"), v031).0["code"], 1);
        assert_eq!(run(&env("GC"), v040).0["code"], 1);
        assert_eq!(run(&env("STATUS"), v040).0["code"], 1);
        let no_bridge = br#"{"cniVersion":"1.1.0","name":"n","type":"vswitch-cni"}"#;
        assert_eq!(run(&env("ADD"), no_bridge).0["code"], 7);
        let ok = br#"{"cniVersion":"1.1.0","name":"n","type":"vswitch-cni","bridge":"b"}"#;
        assert_eq!(run(&env("FROB"), ok).0["code"], 4);
        let mut e = env("ADD");
        e.container_id.clear();
        assert_eq!(run(&e, ok).0["code"], 4);
        // Names that would escape the socket directory or break the spec.
        for (id, ifname) in [
            ("../../escape", "eth0"),
            ("a/b", "eth0"),
            ("-leading", "eth0"),
            (&"x".repeat(300)[..], "eth0"),
            ("abc", "../../x"),
            ("abc", ".."),
            ("abc", "eth 0"),
            ("abc", "a:b"),
            ("abc", "sixteen-chars-xx"),
        ] {
            for cmd in ["ADD", "DEL", "CHECK"] {
                let mut e = env(cmd);
                e.container_id = id.to_string();
                e.ifname = ifname.to_string();
                let (v, rc) = run(&e, ok);
                assert_eq!(
                    (rc, v["code"].as_u64()),
                    (1, Some(4)),
                    "{cmd} {id:?} {ifname:?}: {v}"
                );
            }
        }
        let (v, _) = run(&env("CHECK"), ok);
        assert_eq!(v["code"], 7, "CHECK without prevResult");
    }

    #[test]
    fn bandwidth_becomes_policers() {
        let (toml, fields) = bandwidth_policies(
            "cni-1",
            &Bandwidth {
                ingress_rate: 10_000_000,
                ingress_burst: 80_000,
                egress_rate: 0,
                egress_burst: 0,
            },
        );
        assert!(
            toml.contains("name = \"cni-1-in\"")
                && toml.contains("cir = 10000000")
                && toml.contains("cbs = 10000")
        );
        assert_eq!(fields, [("ingress_qos", "cni-1-in".to_string())]);
    }
}
