//! The TOML configuration: file model, validation, and the typed result.
//!
//! One file describes EAL options, workers, bridge domains and ports. Every
//! error names the file, line, column and field, because the person reading
//! it is editing that file. Ports are flat tables (`kind = "tap"` plus that
//! kind's options); a field that belongs to another kind is an error, not
//! silently ignored.
//!
//! Validation is pure: it touches no DPDK, network namespace or socket, so
//! `vswitchd check-config` runs anywhere. Checks that depend on the machine
//! (hugepages, a netns that exists, a socket in use) happen when the daemon
//! starts, in `preflight`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use vswitch::{GuardConf, MacAddr, Prefix};

mod policy;
mod units;
mod vpc;
mod vtep;
pub use policy::{QosPolicy, SessionsConf};
pub use vpc::{
    derived_router_mac, SnatConf, SubnetConf, VpcConf, SNAT_ADDR, SNAT_GATEWAY, SNAT_PREFIX,
};
pub use vtep::{RemoteMac, VniConf, VtepConf};

/// The demo configuration compiled into the binary: `vswitchd run` without
/// `--config` uses it.
pub const DEFAULT_CONFIG: &str = include_str!("../../configs/demo.toml");
/// How [`DEFAULT_CONFIG`] is named in error messages.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded configs/demo.toml>";

/// A configuration error, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File name as given.
    pub file: String,
    /// 1-based line (0 when the error has no position).
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// The field, as a path like `port[2].socket`.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
    /// Further errors of the same run (other ports'), each on a line of
    /// its own.
    pub also: Vec<ConfigError>,
}

impl ConfigError {
    /// The first of `errors` with the others as `also`; None if none.
    pub fn all(errors: Vec<ConfigError>) -> Option<ConfigError> {
        let mut it = errors.into_iter();
        let mut first = it.next()?;
        first.also.extend(it);
        Some(first)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: field `{}`: {}",
            self.file, self.line, self.col, self.field, self.message
        )?;
        for e in &self.also {
            write!(f, "\n{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------- file model

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileModel {
    #[serde(default)]
    eal: EalConf,
    #[serde(default)]
    workers: WorkersConf,
    #[serde(default)]
    control: ControlConf,
    #[serde(default)]
    stats: StatsConf,
    #[serde(default)]
    metrics: MetricsConf,
    log: Option<LogFile>,
    switch: Option<Spanned<SwitchFile>>,
    #[serde(default, rename = "bridge")]
    bridges: Vec<Spanned<BridgeFile>>,
    #[serde(default, rename = "port")]
    ports: Vec<Spanned<PortFile>>,
    #[serde(default)]
    sessions: SessionsConf,
    #[serde(default, rename = "security_group")]
    security_groups: Vec<Spanned<policy::GroupFile>>,
    #[serde(default, rename = "qos_policy")]
    qos_policies: Vec<Spanned<policy::QosFile>>,
    vtep: Option<Spanned<vtep::VtepFile>>,
    #[serde(default, rename = "vpc")]
    vpcs: Vec<Spanned<vpc::VpcFile>>,
}

/// EAL options, typed (never a free-form argument string).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EalConf {
    /// CPU of the main lcore (control thread, not polling).
    pub main_lcore: u32,
    /// Hugepage memory to reserve, MB.
    pub memory_mb: u32,
    /// `--file-prefix`: unique per DPDK process on the machine.
    pub file_prefix: String,
    /// `--in-memory`: no hugepage files or shared config left behind.
    pub in_memory: bool,
    /// `--huge-dir`, if not the default mount.
    pub huge_dir: Option<String>,
    /// `--log-level` (e.g. "notice", "pmd.net.vhost:debug").
    pub log_level: Option<String>,
}

impl Default for EalConf {
    fn default() -> Self {
        EalConf {
            main_lcore: 0,
            memory_mb: 512,
            file_prefix: "vswitchd".into(),
            in_memory: true,
            huge_dir: None,
            log_level: None,
        }
    }
}

/// Worker lcores.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConf {
    /// CPUs of the polling workers, one lcore each (EAL lcore ids 1, 2,
    /// ... mapped onto them; the main lcore is id 0).
    pub cores: Vec<u32>,
    /// After a poll round with no packets, sleep this long (0 = pure
    /// polling). Trades latency for CPU on shared or small machines.
    pub idle_sleep_us: u32,
    /// A flow cache per worker in front of the pipeline's stages
    /// (vswitch::flow_cache; like OVS's EMC). On unless switched off
    /// (for comparisons: the decisions are the same either way).
    pub flow_cache: bool,
    /// How rx queues without `rx_workers` are given to workers (see
    /// `rxq`).
    pub rxq_assign: RxqAssign,
    /// Moving rx queues off an overloaded worker.
    pub auto_lb: AutoLbConf,
}

impl Default for WorkersConf {
    fn default() -> Self {
        WorkersConf {
            cores: vec![1],
            idle_sleep_us: 0,
            flow_cache: true,
            rxq_assign: RxqAssign::Cycles,
            auto_lb: AutoLbConf::default(),
        }
    }
}

/// How rx queues are given to workers (Open vSwitch's `pmd-rxq-assign`).
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RxqAssign {
    /// To the worker whose queues measured the fewest cycles.
    Cycles,
    /// To each worker in turn.
    Roundrobin,
}

/// Automatic rx queue rebalancing (Open vSwitch's `pmd-auto-lb`, with its
/// thresholds; `[workers.auto_lb]`).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoLbConf {
    /// Whether the control thread rebalances by itself.
    pub enabled: bool,
    /// Seconds between checks.
    pub interval_secs: u32,
    /// A check acts only if some worker was at least this busy (%) over
    /// the measurement window.
    pub load_pct: u32,
    /// ... and the new placement lowers the variance of the workers'
    /// loads by at least this much (%).
    pub improvement_pct: u32,
}

impl Default for AutoLbConf {
    fn default() -> Self {
        AutoLbConf {
            enabled: true,
            interval_secs: 60,
            load_pct: 95,
            improvement_pct: 25,
        }
    }
}

/// The control socket.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConf {
    /// Path of the Unix socket `vswitchctl` talks to.
    pub socket: PathBuf,
    /// Where every committed runtime change is saved, and vswitchd starts
    /// from when it exists (see `state`).
    pub state_file: PathBuf,
}

impl Default for ControlConf {
    fn default() -> Self {
        ControlConf {
            socket: "/run/vswitchd/vswitchd.sock".into(),
            state_file: "/var/lib/vswitchd/state.toml".into(),
        }
    }
}

/// Stats output.
#[derive(Deserialize, Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConf {
    /// Print per-port and per-worker stats every N seconds (0 = only on
    /// SIGUSR1 and at exit).
    pub interval_secs: u32,
}

/// The metrics endpoint (see `crate::metrics`).
#[derive(Deserialize, Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConf {
    /// `ip:port` to serve Prometheus/OpenMetrics text on (`GET
    /// /metrics`); none: no endpoint. Counters are readable by anyone who
    /// reaches it: a loopback or management address, not a tenant's.
    pub address: Option<std::net::SocketAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogFile {
    level: Option<Spanned<String>>,
    format: Option<crate::log::LogFormat>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchFile {
    max_ports: Option<Spanned<usize>>,
}

/// The switch's port space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchConf {
    /// Switch port ids, NICs and tunnel ports together (`[switch]
    /// max_ports`, default and at most [`vswitch::MAX_PORTS`]). Tables on
    /// the data path are sized by the ports that exist, not by this: it
    /// is a bound an operator may lower, not a reservation. When every id
    /// is taken, a new NIC takes the port of the oldest learned VTEP.
    pub max_ports: usize,
}

impl Default for SwitchConf {
    fn default() -> Self {
        SwitchConf {
            max_ports: vswitch::MAX_PORTS,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BridgeFile {
    name: Spanned<String>,
    #[serde(default = "default_mac_table_size")]
    mac_table_size: Spanned<usize>,
    #[serde(default = "default_mac_aging")]
    mac_aging_secs: u32,
    vni: Option<Spanned<u32>>,
    #[serde(default)]
    remote_vteps: Vec<Spanned<String>>,
    learn_vteps: Option<Spanned<bool>>,
    #[serde(default, rename = "remote_mac")]
    remote_macs: Vec<vtep::RemoteMacFile>,
    vpc: Option<Spanned<String>>,
    gateway: Option<Spanned<String>>,
    gateway6: Option<Spanned<String>>,
}

fn default_mac_table_size() -> Spanned<usize> {
    Spanned::new(0..0, 4096)
}

fn default_mac_aging() -> u32 {
    300
}

/// Every field any port kind takes; [`validate_port`] checks each one set
/// belongs to the port's kind.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortFile {
    name: Spanned<String>,
    kind: Spanned<String>,
    bridge: Option<Spanned<String>>,
    rx_queues: Option<Spanned<u16>>,
    rx_desc: Option<Spanned<u16>>,
    tx_desc: Option<Spanned<u16>>,
    rx_workers: Option<Spanned<Vec<u32>>>,
    static_macs: Option<Vec<Spanned<String>>>,
    ingress_group: Option<Spanned<String>>,
    egress_group: Option<Spanned<String>>,
    ingress_qos: Option<Spanned<String>>,
    egress_qos: Option<Spanned<String>>,
    mac_limit: Option<Spanned<u32>>,
    cni: Option<Spanned<CniAttachment>>,
    // port security (container NICs: tap, vhost-user)
    port_security: Option<Spanned<bool>>,
    addresses: Option<Vec<Spanned<String>>>,
    allowed_addresses: Option<Vec<Spanned<String>>>,
    allowed_macs: Option<Vec<Spanned<String>>>,
    allow_vlan: Option<Spanned<bool>>,
    allowed_ethertypes: Option<Vec<Spanned<u16>>>,
    // vhost-user
    socket: Option<Spanned<PathBuf>>,
    client: Option<Spanned<bool>>,
    // tap
    netns: Option<Spanned<String>>,
    pid: Option<Spanned<u32>>,
    ifname: Option<Spanned<String>>,
    mac: Option<Spanned<String>>,
    ipv4: Option<Spanned<String>>,
    gateway: Option<Spanned<String>>,
    ipv6: Option<Spanned<String>>,
    gateway6: Option<Spanned<String>>,
    mtu: Option<Spanned<u16>>,
    // af-packet, af-xdp
    iface: Option<Spanned<String>>,
    queue: Option<Spanned<u16>>,
    // pci
    address: Option<Spanned<String>>,
    driver: Option<Spanned<String>>,
    // pcap
    rx_pcap: Option<Spanned<PathBuf>>,
    tx_pcap: Option<Spanned<PathBuf>>,
    infinite_rx: Option<Spanned<bool>>,
    // null
    size: Option<Spanned<u32>>,
    no_rx: Option<Spanned<bool>>,
}

// ------------------------------------------------------------- typed result

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// EAL options.
    pub eal: EalConf,
    /// Worker lcores.
    pub workers: WorkersConf,
    /// Control socket.
    pub control: ControlConf,
    /// Stats output.
    pub stats: StatsConf,
    /// The metrics endpoint.
    pub metrics: MetricsConf,
    /// Logs.
    pub log: crate::log::LogConf,
    /// The switch's port space.
    pub switch: SwitchConf,
    /// Bridge domains.
    pub bridges: Vec<vswitch::BridgeConf>,
    /// Ports, in file order (which is also their switch port index).
    pub ports: Vec<PortSpec>,
    /// The session table of stateful security groups.
    pub sessions: SessionsConf,
    /// Security groups.
    pub security_groups: Vec<acl::SecurityGroup>,
    /// QoS policies.
    pub qos_policies: Vec<QosPolicy>,
    /// The local VXLAN tunnel endpoint, if the bridges have VNIs.
    pub vtep: Option<VtepConf>,
    /// VNIs of bridge domains, with their remote VTEPs.
    pub vnis: Vec<VniConf>,
    /// VPCs and their subnets.
    pub vpcs: Vec<VpcConf>,
    /// Things that work but are probably not meant (shadowed rules).
    pub warnings: Vec<String>,
}

/// One port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Unique name.
    pub name: String,
    /// Bridge domain it belongs to (none: received frames are dropped).
    pub bridge: Option<String>,
    /// Rx queues to poll.
    pub rx_queues: u16,
    /// Rx descriptors per queue.
    pub rx_desc: u16,
    /// Tx descriptors per queue.
    pub tx_desc: u16,
    /// Worker index per rx queue (None: round robin).
    pub rx_workers: Option<Vec<usize>>,
    /// Stations known to be behind this port: static MAC-table entries that
    /// never age and that traffic cannot move.
    pub static_macs: Vec<MacAddr>,
    /// Security group judging frames to the container.
    pub ingress_group: Option<String>,
    /// Security group judging frames from the container.
    pub egress_group: Option<String>,
    /// QoS policy metering frames to the container.
    pub ingress_qos: Option<String>,
    /// QoS policy metering frames from the container.
    pub egress_qos: Option<String>,
    /// MACs the port may have learned at a time (None: no limit but the
    /// bridge table's); frames from further new MACs are dropped as
    /// `mac_limit`.
    pub mac_limit: Option<u32>,
    /// The CNI attachment that made the port (set by the CNI plugin): GC
    /// and DEL find their ports by it, not by a hash of names.
    pub cni: Option<CniAttachment>,
    /// Port security (`vswitch::port_security`), when on: the MAC and
    /// addresses the container owns and what else it may send.
    pub guard: Option<GuardConf>,
    /// What the port is.
    pub kind: PortKind,
}

/// The CNI attachment a port belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CniAttachment {
    /// The network's `name`.
    pub network: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

/// A container's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    /// Named, as `ip netns add` makes it (/run/netns/NAME).
    Name(String),
    /// The namespace of a process.
    Pid(u32),
    /// A namespace file bind-mounted anywhere, as container runtimes
    /// pin them (`/var/run/docker/netns/...`, `/run/user/1000/netns/...`).
    Path(PathBuf),
}

impl Netns {
    /// The namespace's file, for `nsenter --net=`.
    pub fn path(&self) -> PathBuf {
        match self {
            Netns::Name(n) => Path::new("/run/netns").join(n),
            Netns::Pid(p) => PathBuf::from(format!("/proc/{p}/ns/net")),
            Netns::Path(p) => p.clone(),
        }
    }

    /// The config's `netns` value: a name, or an absolute path to a
    /// namespace file; None if it is neither (empty, `..`, a relative
    /// path, a path through `.` or `..`).
    pub fn from_field(s: &str) -> Option<Netns> {
        if s.starts_with('/') {
            let clean = Path::new(s).components().all(|c| {
                matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )
            });
            return (clean && s.len() > 1).then(|| Netns::Path(PathBuf::from(s)));
        }
        let ok = !s.is_empty() && !s.contains('/') && s != "." && s != "..";
        ok.then(|| Netns::Name(s.to_string()))
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Netns::Name(n) => write!(f, "netns {n:?}"),
            Netns::Pid(p) => write!(f, "netns of pid {p}"),
            Netns::Path(p) => write!(f, "netns at {}", p.display()),
        }
    }
}

/// A kernel-stack container's NIC, as it should appear in its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSpec {
    /// The container's namespace.
    pub netns: Netns,
    /// Interface name inside it.
    pub ifname: String,
    /// MAC (default: derived from the port's name, so it is the same
    /// after every restart).
    pub mac: MacAddr,
    /// Address and prefix length.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 address and prefix length (no duplicate address detection:
    /// vswitchd and its agent keep addresses unique).
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// IPv6 default gateway.
    pub gateway6: Option<Ipv6Addr>,
    /// MTU.
    pub mtu: u16,
}

/// The kinds of port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortKind {
    /// A DPDK container's virtio-user NIC.
    VhostUser {
        /// Socket path.
        socket: PathBuf,
        /// Connect to the container's socket (and reconnect) rather than listen.
        client: bool,
    },
    /// A kernel-stack container's NIC.
    Tap(TapSpec),
    /// An existing kernel interface via AF_PACKET.
    AfPacket {
        /// Interface.
        iface: String,
    },
    /// An existing kernel interface via AF_XDP.
    AfXdp {
        /// Interface.
        iface: String,
        /// First queue of the interface to bind.
        queue: u16,
    },
    /// A PCI NIC (the VM's virtio_net or e1000) bound to vfio-pci/uio.
    Pci {
        /// PCI address, e.g. 0000:00:04.0.
        address: String,
    },
    /// Frames from/to pcap files (tests and benchmarks).
    Pcap {
        /// File replayed as rx.
        rx_pcap: Option<PathBuf>,
        /// File tx is written to.
        tx_pcap: Option<PathBuf>,
        /// Replay rx_pcap forever (a line-rate generator).
        infinite_rx: bool,
    },
    /// Discards tx; rx yields nothing or synthetic frames.
    Null {
        /// Size of synthetic rx frames.
        size: u32,
        /// No rx at all.
        no_rx: bool,
    },
    /// A DPDK ring pair (tests).
    Ring,
}

impl PortKind {
    /// The name used in the config's `kind` field.
    pub fn name(&self) -> &'static str {
        match self {
            PortKind::VhostUser { .. } => "vhost-user",
            PortKind::Tap(_) => "tap",
            PortKind::AfPacket { .. } => "af-packet",
            PortKind::AfXdp { .. } => "af-xdp",
            PortKind::Pci { .. } => "pci",
            PortKind::Pcap { .. } => "pcap",
            PortKind::Null { .. } => "null",
            PortKind::Ring => "ring",
        }
    }
}

/// `mac_limit` of a container NIC when the config says nothing: a
/// container is one station, or a few (VRRP, nested bridges).
pub const DEFAULT_NIC_MAC_LIMIT: u32 = 64;

/// The kinds and the kind-specific fields each accepts.
const KINDS: &[(&str, &[&str])] = &[
    ("vhost-user", &["socket", "client", "mac"]),
    (
        "tap",
        &[
            "netns", "pid", "ifname", "mac", "ipv4", "gateway", "ipv6", "gateway6", "mtu",
        ],
    ),
    ("af-packet", &["iface"]),
    ("af-xdp", &["iface", "queue"]),
    ("pci", &["address", "driver"]),
    ("pcap", &["rx_pcap", "tx_pcap", "infinite_rx"]),
    ("null", &["size", "no_rx"]),
    ("ring", &[]),
];

// ---------------------------------------------------------------- validation

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let field = field.into();
        // A check of a value without a span of its own (a list, a
        // default) still points at its key, or its table, when the file
        // has them.
        let at = if span == (0..0) {
            locate(self.text, &field)
        } else {
            Some(span.start)
        };
        let (line, col) = at.map_or((0, 0), |o| line_col(self.text, o));
        ConfigError {
            file: self.file.to_string(),
            line,
            col,
            field,
            message: message.into(),
            also: Vec::new(),
        }
    }
}

/// The table header of `line` (`[a.b]` -> ("a.b", false), `[[port]]` ->
/// ("port", true)), if it is one.
fn header(line: &str) -> Option<(&str, bool)> {
    let l = line.trim();
    let l = l.split('#').next().unwrap_or("").trim_end();
    if let Some(n) = l.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
        return Some((n.trim(), true));
    }
    l.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .map(|n| (n.trim(), false))
}

/// Where field `path` (`workers.cores`, `port[2].socket`,
/// `sessions.capacity`) is written in `text`: its key's line, else its
/// table's header; None when the file has neither (a default). Only the
/// first level of arrays of tables is told apart (`port[2]`), which is
/// what validation names.
fn locate(text: &str, path: &str) -> Option<usize> {
    let (table, key) = match path.rsplit_once('.') {
        Some((t, k)) => (t, k),
        None => ("", path),
    };
    // `port[2]` -> ("port", Some(2)); `workers.auto_lb` -> (.., None).
    let (name, index) = match table.split_once('[') {
        Some((n, rest)) if !n.contains('.') => {
            let i = rest.split(']').next()?.parse::<usize>().ok()?;
            (n, Some(i))
        }
        _ => (table, None),
    };
    let mut in_table = table.is_empty();
    let mut seen = 0usize;
    let mut table_at = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let here = offset;
        offset += line.len();
        if let Some((h, array)) = header(line) {
            in_table = match index {
                Some(i) if array && h == name => {
                    seen += 1;
                    seen == i + 1
                }
                None if !array && h == name => true,
                _ => false,
            };
            if in_table {
                table_at = Some(here);
            }
            continue;
        }
        if in_table {
            let k = line
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            if line.contains('=') && k == key {
                return Some(here + (line.len() - line.trim_start().len()));
            }
        }
    }
    table_at
}

/// The table `offset` is in, as validation names it: `port[2]`,
/// `workers.auto_lb`, or "" at the top.
fn table_path_at(text: &str, offset: usize) -> String {
    let mut current = String::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if at > offset {
            break;
        }
        at += line.len();
        if let Some((h, array)) = header(line) {
            current = if array {
                let n = counts.entry(h.to_string()).or_default();
                *n += 1;
                format!("{h}[{}]", *n - 1)
            } else {
                h.to_string()
            };
        }
    }
    current
}

/// toml's "unknown field `brige`, expected one of `a`, `b`, ..." as
/// "unknown field `brige`: did you mean `bridge`?" when one known field is
/// close ([`nearest`]), else
/// with the known fields listed.
fn did_you_mean(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (unknown, rest) = rest.split_once('`')?;
    let known: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    if known.is_empty() {
        return None;
    }
    Some(match nearest(unknown, &known) {
        Some(k) => format!("unknown field `{unknown}`: did you mean `{k}`?"),
        None => format!(
            "unknown field `{unknown}` (known here: {})",
            known.join(", ")
        ),
    })
}

/// The one of `known` that `unknown` is most likely a typo of, if one is
/// close enough (strsim's optimal string alignment distance: Levenshtein's,
/// as clap suggests flags, with a swap of two letters one edit).
pub fn nearest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let (d, k) = known
        .iter()
        .map(|k| (strsim::osa_distance(unknown, k), *k))
        .min()?;
    (d <= 2.max(unknown.len() / 3)).then_some(k)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// Reads a config file's text.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        line: 0,
        col: 0,
        field: "-".into(),
        message: format!("cannot read the config file: {e}"),
        also: Vec::new(),
    })
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    parse(&path.display().to_string(), &read(path)?)
}

/// Validates config text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let cx = Ctx { file, text };
    let model: FileModel = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let msg = e.message().to_string();
        // toml names unknown or missing keys in the message; for a bad
        // value, the key is what precedes `=` on the value's line.
        let named = msg.split('`').nth(1).filter(|_| msg.contains("field"));
        let msg = did_you_mean(&msg).unwrap_or_else(|| msg.clone());
        let line_key = || {
            let start = text[..span.start.min(text.len())]
                .rfind('\n')
                .map_or(0, |i| i + 1);
            let line = &text[start..];
            let (key, _) = line.split_once('=')?;
            let key = key.trim();
            (!key.is_empty() && !key.starts_with('[') && !key.contains('\n')).then_some(key)
        };
        let field = named.or_else(line_key).unwrap_or("-");
        // The whole path: `port[2].brige`, not `brige`.
        let table = table_path_at(text, span.start);
        let field = if table.is_empty() || field == "-" {
            field.to_string()
        } else {
            format!("{table}.{field}")
        };
        cx.err(span, field, msg)
    })?;

    // Sections that do not depend on each other are all checked, so one
    // run names every mistake of workers, bridges, policies, sessions and
    // ports; the VTEP, VNIs and VPCs (which build on valid ports) after.
    let mut errors = Vec::new();
    if model.workers.cores.is_empty() {
        errors.push(cx.err(0..0, "workers.cores", "at least one worker core is needed"));
    }
    let mut seen = HashSet::new();
    if let Some(c) = model.workers.cores.iter().find(|c| !seen.insert(*c)) {
        errors.push(cx.err(0..0, "workers.cores", format!("core {c} is listed twice")));
    }
    let n_workers = model.workers.cores.len().max(1);
    let lb = &model.workers.auto_lb;
    for (field, v, range) in [
        (
            "workers.auto_lb.interval_secs",
            lb.interval_secs,
            1..=86_400,
        ),
        ("workers.auto_lb.load_pct", lb.load_pct, 1..=100),
        (
            "workers.auto_lb.improvement_pct",
            lb.improvement_pct,
            1..=100,
        ),
    ] {
        if !range.contains(&v) {
            errors.push(cx.err(
                0..0,
                field,
                format!("between {} and {}", range.start(), range.end()),
            ));
        }
    }

    let mut bridges = Vec::new();
    let mut bridge_names = HashSet::new();
    for (i, b) in model.bridges.iter().enumerate() {
        let b = b.get_ref();
        let name = b.name.get_ref();
        let mut check = || -> Result<(), ConfigError> {
            check_name(&cx, &b.name, &format!("bridge[{i}].name"))?;
            if !bridge_names.insert(name.clone()) {
                return Err(cx.err(
                    b.name.span(),
                    format!("bridge[{i}].name"),
                    format!("bridge {name:?} is defined twice"),
                ));
            }
            let size = *b.mac_table_size.get_ref();
            if !(8..=1 << 24).contains(&size) {
                return Err(cx.err(
                    b.mac_table_size.span(),
                    format!("bridge[{i}].mac_table_size"),
                    "must be between 8 and 16777216 entries",
                ));
            }
            Ok(())
        };
        if let Err(e) = check() {
            errors.push(e);
        }
        bridges.push(vswitch::BridgeConf {
            name: name.clone(),
            mac_capacity: *b.mac_table_size.get_ref(),
            mac_aging_secs: b.mac_aging_secs,
        });
    }

    // A group's rules are checked once the QoS policies they name are.
    let (qos_policies, security_groups, mut warnings) =
        match policy::qos_policies(&cx, &model.qos_policies) {
            Ok(q) => match policy::security_groups(&cx, &model.security_groups, &q) {
                Ok((g, w)) => (q, g, w),
                Err(e) => {
                    errors.push(e);
                    (q, Vec::new(), Vec::new())
                }
            },
            Err(e) => {
                errors.push(e);
                (Vec::new(), Vec::new(), Vec::new())
            }
        };
    if model.workers.cores.contains(&model.eal.main_lcore) {
        warnings.push(format!(
            "workers.cores: CPU {} is also the main lcore's: the control thread shares it with a \
             polling worker (set workers.idle_sleep_us, or give workers CPUs of their own)",
            model.eal.main_lcore
        ));
    }
    // Ports refer to groups and policies by the names the file gives them
    // (a group with a mistake of its own is not also unknown to its ports).
    let group_names: HashSet<&str> = model
        .security_groups
        .iter()
        .map(|g| g.get_ref().name())
        .collect();
    let qos_names: HashSet<&str> = model
        .qos_policies
        .iter()
        .map(|q| q.get_ref().name())
        .collect();
    if model.sessions.capacity == 0 || model.sessions.capacity > 1 << 26 {
        errors.push(cx.err(0..0, "sessions.capacity", "between 1 and 67108864 sessions"));
    }
    for (field, v) in [
        ("sessions.per_port", model.sessions.per_port),
        ("sessions.per_bridge", model.sessions.per_bridge),
    ] {
        if v == 0 {
            errors.push(cx.err(0..0, field, "at least 1 session"));
        }
    }

    let mut ports = Vec::new();
    let mut port_names = HashSet::new();
    let mut sockets = HashSet::new();
    let mut statics = HashSet::new();
    // Every port is checked, so one run names the mistakes of all.
    for (i, p) in model.ports.iter().enumerate() {
        let mut check = || -> Result<PortSpec, ConfigError> {
            let mut spec = validate_port(&cx, i, p.get_ref(), &bridge_names, n_workers)?;
            if let (PortKind::VhostUser { .. }, None) = (&spec.kind, &spec.guard) {
                if p.get_ref().port_security.is_none() {
                    warnings.push(format!(
                        "port {}: a vhost-user port without `mac` has port security off; give the \
                         container's MAC (and `addresses`), or say `port_security = false`",
                        spec.name
                    ));
                }
            }
            let pf = p.get_ref();
            let field = |n: &str| format!("port[{i}].{n}");
            let sg = "[[security_group]]";
            spec.ingress_group = policy::check_ref(
                &cx,
                &pf.ingress_group,
                field("ingress_group"),
                &group_names,
                sg,
            )?;
            spec.egress_group = policy::check_ref(
                &cx,
                &pf.egress_group,
                field("egress_group"),
                &group_names,
                sg,
            )?;
            let qp = "[[qos_policy]]";
            spec.ingress_qos =
                policy::check_ref(&cx, &pf.ingress_qos, field("ingress_qos"), &qos_names, qp)?;
            spec.egress_qos =
                policy::check_ref(&cx, &pf.egress_qos, field("egress_qos"), &qos_names, qp)?;
            for (j, mac) in spec.static_macs.iter().enumerate() {
                if !statics.insert((spec.bridge.clone(), *mac)) {
                    let span = p
                        .get_ref()
                        .static_macs
                        .as_ref()
                        .map_or(0..0, |v| v[j].span());
                    return Err(cx.err(
                        span,
                        format!("port[{i}].static_macs[{j}]"),
                        format!("{mac} is already a static MAC of another port in this bridge"),
                    ));
                }
            }
            if !port_names.insert(spec.name.clone()) {
                return Err(cx.err(
                    p.get_ref().name.span(),
                    format!("port[{i}].name"),
                    format!("port {:?} is defined twice", spec.name),
                ));
            }
            if let PortKind::VhostUser { socket, .. } = &spec.kind {
                if !sockets.insert(socket.clone()) {
                    let s = p
                        .get_ref()
                        .socket
                        .as_ref()
                        .map(|s| s.span())
                        .unwrap_or(0..0);
                    return Err(cx.err(
                        s,
                        format!("port[{i}].socket"),
                        "another port already uses this socket path",
                    ));
                }
            }
            Ok(spec)
        };
        match check() {
            Ok(spec) => ports.push(spec),
            Err(e) => errors.push(e),
        }
    }
    if let Some(e) = ConfigError::all(errors) {
        return Err(e);
    }
    // Container NICs (TAP, vhost-user) are not ethdevs: only the others
    // count against DPDK's ethdev table; vhost-user ports against the
    // vhost library's device table.
    type Counts = fn(&PortKind) -> bool;
    let limits: [(Counts, usize, &str); 2] = [
        (
            |k| !matches!(k, PortKind::Tap(_) | PortKind::VhostUser { .. }),
            32,
            "at most 32 ports other than TAP and vhost-user NICs (DPDK's RTE_MAX_ETHPORTS)",
        ),
        (
            |k| matches!(k, PortKind::VhostUser { .. }),
            1024,
            "at most 1024 vhost-user ports (DPDK's vhost library)",
        ),
    ];
    for (counts, max, what) in limits {
        if let Some((i, _)) = ports
            .iter()
            .enumerate()
            .filter(|(_, p)| counts(&p.kind))
            .nth(max)
        {
            return Err(cx.err(model.ports[i].span(), format!("port[{i}]"), what));
        }
    }
    let mut switch = SwitchConf::default();
    if let Some(m) = model
        .switch
        .as_ref()
        .and_then(|s| s.get_ref().max_ports.as_ref())
    {
        if !(2..=vswitch::MAX_PORTS).contains(m.get_ref()) {
            return Err(cx.err(
                m.span(),
                "switch.max_ports",
                format!("must be 2 to {}", vswitch::MAX_PORTS),
            ));
        }
        switch.max_ports = *m.get_ref();
    }
    if ports.len() > switch.max_ports {
        return Err(cx.err(
            model.ports[switch.max_ports].span(),
            format!("port[{}]", switch.max_ports),
            format!("at most {} ports ([switch] max_ports)", switch.max_ports),
        ));
    }
    let vtep = match &model.vtep {
        Some(v) => Some(vtep::vtep(&cx, v, &ports)?),
        None => None,
    };
    let mut vnis = Vec::new();
    let mut vni_seen = HashSet::new();
    for (i, b) in model.bridges.iter().enumerate() {
        if let Some(v) = vtep::bridge_vni(&cx, i, b.get_ref(), vtep.as_ref(), &mut vni_seen)? {
            vnis.push(v);
        }
    }
    let port_spans: Vec<_> = model.ports.iter().map(|p| p.span()).collect();
    let mut vpcs = vpc::vpcs(&cx, &model.vpcs, &model.bridges, &ports, &port_spans, &vnis)?;
    warnings.extend(vpc::shared_addresses(&ports, &vpcs));
    vpc::expand_snat(
        &cx,
        &model.vpcs,
        &model.eal.file_prefix,
        &mut vpcs,
        &mut bridges,
        &mut ports,
    )?;
    let tunnel_ports: usize = vnis
        .iter()
        .map(|v| {
            let mut r: Vec<Ipv4Addr> = v.remote_vteps.clone();
            r.extend(v.remote_macs.iter().map(|m| m.vtep));
            r.sort();
            r.dedup();
            r.len()
        })
        .sum();
    let mut log = crate::log::LogConf::default();
    if let Some(l) = &model.log {
        if let Some(level) = &l.level {
            crate::log::valid_level(level.get_ref())
                .map_err(|m| cx.err(level.span(), "log.level", m))?;
            log.level = level.get_ref().clone();
        }
        log.format = l.format.unwrap_or_default();
    }
    if ports.len() + tunnel_ports > switch.max_ports {
        return Err(cx.err(
            0..0,
            "remote_vteps",
            format!(
                "{} ports and {tunnel_ports} remote VTEPs (one tunnel port per VTEP and VNI) exceed the switch's {} ports ([switch] max_ports)",
                ports.len(),
                switch.max_ports
            ),
        ));
    }
    Ok(Config {
        eal: model.eal,
        workers: model.workers,
        control: model.control,
        stats: model.stats,
        metrics: model.metrics,
        log,
        switch,
        bridges,
        ports,
        sessions: model.sessions,
        security_groups,
        qos_policies,
        vtep,
        vnis,
        vpcs,
        warnings,
    })
}

fn check_name(cx: &Ctx, name: &Spanned<String>, field: &str) -> Result<(), ConfigError> {
    let n = name.get_ref();
    let ok = !n.is_empty()
        && n.len() <= 32
        && n.starts_with(|c: char| c.is_ascii_alphabetic())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(cx.err(
            name.span(),
            field,
            "names are 1-32 characters: a letter, then letters, digits, '_' or '-'",
        ))
    }
}

fn validate_port(
    cx: &Ctx,
    i: usize,
    p: &PortFile,
    bridges: &HashSet<String>,
    n_workers: usize,
) -> Result<PortSpec, ConfigError> {
    let f = |name: &str| format!("port[{i}].{name}");
    check_name(cx, &p.name, &f("name"))?;
    let kind = p.kind.get_ref().as_str();
    let Some((_, allowed)) = KINDS.iter().find(|(k, _)| *k == kind) else {
        let names: Vec<_> = KINDS.iter().map(|(k, _)| *k).collect();
        return Err(cx.err(
            p.kind.span(),
            f("kind"),
            format!(
                "unknown port kind {kind:?}; the kinds are: {}",
                names.join(", ")
            ),
        ));
    };
    // Every kind-specific field that is set must belong to this kind.
    let set: [(&str, Option<Range<usize>>); 20] = [
        ("socket", p.socket.as_ref().map(|v| v.span())),
        ("client", p.client.as_ref().map(|v| v.span())),
        ("netns", p.netns.as_ref().map(|v| v.span())),
        ("pid", p.pid.as_ref().map(|v| v.span())),
        ("ifname", p.ifname.as_ref().map(|v| v.span())),
        ("mac", p.mac.as_ref().map(|v| v.span())),
        ("ipv4", p.ipv4.as_ref().map(|v| v.span())),
        ("gateway", p.gateway.as_ref().map(|v| v.span())),
        ("ipv6", p.ipv6.as_ref().map(|v| v.span())),
        ("gateway6", p.gateway6.as_ref().map(|v| v.span())),
        ("mtu", p.mtu.as_ref().map(|v| v.span())),
        ("iface", p.iface.as_ref().map(|v| v.span())),
        ("queue", p.queue.as_ref().map(|v| v.span())),
        ("address", p.address.as_ref().map(|v| v.span())),
        ("driver", p.driver.as_ref().map(|v| v.span())),
        ("rx_pcap", p.rx_pcap.as_ref().map(|v| v.span())),
        ("tx_pcap", p.tx_pcap.as_ref().map(|v| v.span())),
        ("infinite_rx", p.infinite_rx.as_ref().map(|v| v.span())),
        ("size", p.size.as_ref().map(|v| v.span())),
        ("no_rx", p.no_rx.as_ref().map(|v| v.span())),
    ];
    for (name, span) in set {
        if let Some(span) = span {
            if !allowed.contains(&name) {
                return Err(cx.err(
                    span,
                    f(name),
                    format!("`{name}` is not an option of a {kind} port"),
                ));
            }
        }
    }
    let required = |v: Option<&Spanned<String>>, name: &str| -> Result<String, ConfigError> {
        v.map(|s| s.get_ref().clone()).ok_or_else(|| {
            cx.err(
                p.kind.span(),
                f(name),
                format!("a {kind} port needs `{name}`"),
            )
        })
    };

    // Values that end up in a DPDK device argument string (`key=value`
    // pairs separated by commas) or in a kernel interface name: a comma
    // or `=` would smuggle in another argument (`in.pcap,tx_pcap=/etc/x`).
    type Located = Option<(String, Range<usize>)>;
    let devarg_fields: [(&str, Located); 5] = [
        (
            "socket",
            p.socket
                .as_ref()
                .map(|v| (v.get_ref().display().to_string(), v.span())),
        ),
        (
            "iface",
            p.iface.as_ref().map(|v| (v.get_ref().clone(), v.span())),
        ),
        (
            "ifname",
            p.ifname.as_ref().map(|v| (v.get_ref().clone(), v.span())),
        ),
        (
            "rx_pcap",
            p.rx_pcap
                .as_ref()
                .map(|v| (v.get_ref().display().to_string(), v.span())),
        ),
        (
            "tx_pcap",
            p.tx_pcap
                .as_ref()
                .map(|v| (v.get_ref().display().to_string(), v.span())),
        ),
    ];
    for (name, v) in devarg_fields {
        if let Some((text, span)) = v {
            if text.is_empty()
                || text
                    .chars()
                    .any(|c| c == ',' || c == '=' || c.is_whitespace() || c.is_control())
            {
                return Err(cx.err(
                    span,
                    f(name),
                    "no commas, `=`, spaces or control characters (they would change DPDK's device arguments)",
                ));
            }
        }
    }
    let kind = match kind {
        "vhost-user" => {
            let socket = p.socket.as_ref().ok_or_else(|| {
                cx.err(
                    p.kind.span(),
                    f("socket"),
                    "a vhost-user port needs `socket`",
                )
            })?;
            // sun_path is 108 bytes including the NUL.
            if socket.get_ref().as_os_str().len() > 107 {
                return Err(cx.err(
                    socket.span(),
                    f("socket"),
                    "socket paths are limited to 107 bytes (sun_path)",
                ));
            }
            if !socket.get_ref().is_absolute() {
                return Err(cx.err(socket.span(), f("socket"), "use an absolute path"));
            }
            PortKind::VhostUser {
                socket: socket.get_ref().clone(),
                client: p.client.as_ref().is_some_and(|c| *c.get_ref()),
            }
        }
        "tap" => PortKind::Tap(validate_tap(cx, i, p)?),
        "af-packet" => PortKind::AfPacket {
            iface: required(p.iface.as_ref(), "iface")?,
        },
        "af-xdp" => PortKind::AfXdp {
            iface: required(p.iface.as_ref(), "iface")?,
            queue: p.queue.as_ref().map_or(0, |q| *q.get_ref()),
        },
        "pci" => {
            let address = required(p.address.as_ref(), "address")?;
            if !is_pci_address(&address) {
                let span = p.address.as_ref().map(|a| a.span()).unwrap_or(0..0);
                return Err(cx.err(
                    span,
                    f("address"),
                    "expected a PCI address like 0000:00:04.0",
                ));
            }
            if let Some(d) = &p.driver {
                if !["virtio_net", "e1000", "e1000e", "igb"].contains(&d.get_ref().as_str()) {
                    return Err(cx.err(
                        d.span(),
                        f("driver"),
                        "supported: virtio_net, e1000, e1000e, igb",
                    ));
                }
            }
            PortKind::Pci { address }
        }
        "pcap" => {
            let infinite_rx = p.infinite_rx.as_ref().is_some_and(|v| *v.get_ref());
            if infinite_rx && p.rx_pcap.is_none() {
                let span = p.infinite_rx.as_ref().map(|v| v.span()).unwrap_or(0..0);
                return Err(cx.err(
                    span,
                    f("infinite_rx"),
                    "infinite_rx replays `rx_pcap`: set it",
                ));
            }
            PortKind::Pcap {
                rx_pcap: p.rx_pcap.as_ref().map(|v| v.get_ref().clone()),
                tx_pcap: p.tx_pcap.as_ref().map(|v| v.get_ref().clone()),
                infinite_rx,
            }
        }
        "null" => PortKind::Null {
            size: p.size.as_ref().map_or(64, |v| *v.get_ref()),
            no_rx: p.no_rx.as_ref().is_some_and(|v| *v.get_ref()),
        },
        _ => PortKind::Ring,
    };

    if let Some(b) = &p.bridge {
        if !bridges.contains(b.get_ref()) {
            let mut known: Vec<_> = bridges.iter().cloned().collect();
            known.sort();
            return Err(cx.err(
                b.span(),
                f("bridge"),
                format!(
                    "no bridge named {:?} (bridges: {})",
                    b.get_ref(),
                    known.join(", ")
                ),
            ));
        }
    }
    let rx_queues = p.rx_queues.as_ref().map_or(1, |v| *v.get_ref());
    if !(1..=16).contains(&rx_queues) {
        let span = p.rx_queues.as_ref().map(|v| v.span()).unwrap_or(0..0);
        return Err(cx.err(span, f("rx_queues"), "between 1 and 16"));
    }
    let desc = |v: &Option<Spanned<u16>>, name: &str| -> Result<u16, ConfigError> {
        let d = v.as_ref().map_or(1024, |v| *v.get_ref());
        if !(64..=4096).contains(&d) || !d.is_power_of_two() {
            let span = v.as_ref().map(|v| v.span()).unwrap_or(0..0);
            return Err(cx.err(span, f(name), "a power of two between 64 and 4096"));
        }
        Ok(d)
    };
    let rx_workers = match &p.rx_workers {
        None => None,
        Some(w) => {
            let list = w.get_ref();
            if list.len() != usize::from(rx_queues) || list.iter().any(|&x| x as usize >= n_workers)
            {
                return Err(cx.err(
                    w.span(),
                    f("rx_workers"),
                    format!(
                        "one worker index per rx queue ({rx_queues}), each below the number of workers ({n_workers})"
                    ),
                ));
            }
            Some(list.iter().map(|&x| x as usize).collect())
        }
    };
    let mut static_macs = Vec::new();
    for (j, m) in p.static_macs.iter().flatten().enumerate() {
        let field = f(&format!("static_macs[{j}]"));
        let mac: MacAddr = m
            .get_ref()
            .parse()
            .map_err(|e| cx.err(m.span(), field.clone(), format!("{e}")))?;
        if mac.is_group() || mac.is_zero() {
            return Err(cx.err(m.span(), field, "a station's MAC is unicast and non-zero"));
        }
        if p.bridge.is_none() {
            return Err(cx.err(m.span(), field, "static MACs need the port in a `bridge`"));
        }
        static_macs.push(mac);
    }
    Ok(PortSpec {
        name: p.name.get_ref().clone(),
        bridge: p.bridge.as_ref().map(|b| b.get_ref().clone()),
        static_macs,
        ingress_group: None,
        egress_group: None,
        ingress_qos: None,
        egress_qos: None,
        guard: validate_guard(cx, i, p, &kind)?,
        cni: match &p.cni {
            Some(c) => {
                let a = c.get_ref();
                if [&a.network, &a.container_id, &a.ifname]
                    .iter()
                    .any(|v| v.is_empty() || v.len() > 256 || v.chars().any(char::is_control))
                {
                    return Err(cx.err(
                        c.span(),
                        f("cni"),
                        "network, container_id and ifname: 1-256 printable characters",
                    ));
                }
                Some(a.clone())
            }
            None => None,
        },
        mac_limit: match &p.mac_limit {
            Some(v) if *v.get_ref() == 0 => {
                return Err(cx.err(v.span(), f("mac_limit"), "at least 1 MAC"))
            }
            Some(v) => Some(*v.get_ref()),
            // A container NIC is one station (a few with VRRP).
            None if matches!(kind, PortKind::Tap(_) | PortKind::VhostUser { .. }) => {
                Some(DEFAULT_NIC_MAC_LIMIT)
            }
            None => None,
        },
        rx_queues,
        rx_desc: desc(&p.rx_desc, "rx_desc")?,
        tx_desc: desc(&p.tx_desc, "tx_desc")?,
        rx_workers,
        kind,
    })
}

fn validate_tap(cx: &Ctx, i: usize, p: &PortFile) -> Result<TapSpec, ConfigError> {
    let f = |name: &str| format!("port[{i}].{name}");
    let netns = match (&p.netns, &p.pid) {
        (Some(n), None) => Netns::from_field(n.get_ref()).ok_or_else(|| {
            cx.err(
                n.span(),
                f("netns"),
                "a netns name as `ip netns add` takes it, or the absolute path of a \
                 namespace file (as a container runtime bind-mounts it)",
            )
        })?,
        (None, Some(pid)) => Netns::Pid(*pid.get_ref()),
        (Some(n), Some(_)) => {
            return Err(cx.err(
                n.span(),
                f("netns"),
                "give either `netns` or `pid`, not both",
            ));
        }
        (None, None) => {
            return Err(cx.err(
                p.kind.span(),
                f("netns"),
                "a tap port needs `netns` (a name) or `pid`",
            ));
        }
    };
    let ifname = p
        .ifname
        .as_ref()
        .map_or("eth0".to_string(), |v| v.get_ref().clone());
    if ifname.is_empty() || ifname.len() > 15 || ifname.contains(['/', ' ', ':']) {
        let span = p.ifname.as_ref().map(|v| v.span()).unwrap_or(0..0);
        return Err(cx.err(
            span,
            f("ifname"),
            "an interface name of 1-15 characters without '/', ':' or spaces",
        ));
    }
    let mac = nic_mac(cx, i, p)?.unwrap_or_else(|| MacAddr::derived(&["port", p.name.get_ref()]));
    let ipv4 = match &p.ipv4 {
        None => None,
        Some(v) => Some(parse_cidr(v.get_ref()).ok_or_else(|| {
            cx.err(
                v.span(),
                f("ipv4"),
                "expected an address with prefix length, like 10.0.0.1/24",
            )
        })?),
    };
    let gateway = match &p.gateway {
        None => None,
        Some(g) => Some(
            g.get_ref()
                .parse::<Ipv4Addr>()
                .map_err(|_| cx.err(g.span(), f("gateway"), "expected an IPv4 address"))?,
        ),
    };
    if gateway.is_some() && ipv4.is_none() {
        let span = p.gateway.as_ref().map(|v| v.span()).unwrap_or(0..0);
        return Err(cx.err(span, f("gateway"), "a gateway needs `ipv4` on the NIC"));
    }
    let ipv6 = match &p.ipv6 {
        None => None,
        Some(v) => Some(
            parse_cidr6(v.get_ref())
                .filter(|(a, _)| !a.is_unspecified() && !a.is_multicast() && !a.is_loopback())
                .ok_or_else(|| {
                    cx.err(
                        v.span(),
                        f("ipv6"),
                        "expected a unicast IPv6 address with prefix length, like fd00:60::2/64",
                    )
                })?,
        ),
    };
    let gateway6 = match &p.gateway6 {
        None => None,
        Some(g) => Some(
            g.get_ref()
                .parse::<Ipv6Addr>()
                .map_err(|_| cx.err(g.span(), f("gateway6"), "expected an IPv6 address"))?,
        ),
    };
    if gateway6.is_some() && ipv6.is_none() {
        let span = p.gateway6.as_ref().map(|v| v.span()).unwrap_or(0..0);
        return Err(cx.err(
            span,
            f("gateway6"),
            "an IPv6 gateway needs `ipv6` on the NIC",
        ));
    }
    let mtu = p.mtu.as_ref().map_or(1500, |v| *v.get_ref());
    if !(68..=9000).contains(&mtu) {
        let span = p.mtu.as_ref().map(|v| v.span()).unwrap_or(0..0);
        return Err(cx.err(span, f("mtu"), "between 68 and 9000"));
    }
    Ok(TapSpec {
        netns,
        ifname,
        mac,
        ipv4,
        gateway,
        ipv6,
        gateway6,
        mtu,
    })
}

/// The `mac` field of a container NIC, checked.
fn nic_mac(cx: &Ctx, i: usize, p: &PortFile) -> Result<Option<MacAddr>, ConfigError> {
    let Some(m) = &p.mac else { return Ok(None) };
    let field = format!("port[{i}].mac");
    let mac: MacAddr = m
        .get_ref()
        .parse()
        .map_err(|e| cx.err(m.span(), field.clone(), format!("{e}")))?;
    if mac.is_group() || mac.is_zero() {
        return Err(cx.err(m.span(), field, "a NIC needs a unicast, non-zero MAC"));
    }
    Ok(Some(mac))
}

/// Port security of a container NIC (see `vswitch::port_security`): on by
/// default for a TAP (vswitchd knows its MAC and address) and for a
/// vhost-user port given its container's `mac`.
fn validate_guard(
    cx: &Ctx,
    i: usize,
    p: &PortFile,
    kind: &PortKind,
) -> Result<Option<GuardConf>, ConfigError> {
    let f = |name: &str| format!("port[{i}].{name}");
    let options: [(&str, Option<Range<usize>>); 6] = [
        ("port_security", p.port_security.as_ref().map(|v| v.span())),
        ("addresses", list_span(&p.addresses)),
        ("allowed_addresses", list_span(&p.allowed_addresses)),
        ("allowed_macs", list_span(&p.allowed_macs)),
        ("allow_vlan", p.allow_vlan.as_ref().map(|v| v.span())),
        ("allowed_ethertypes", list_span(&p.allowed_ethertypes)),
    ];
    let (mac, mut addresses) = match kind {
        PortKind::Tap(t) => (
            Some(t.mac),
            t.ipv4
                .map(|(a, _)| a.into())
                .into_iter()
                .chain(t.ipv6.map(|(a, _)| a.into()))
                .collect(),
        ),
        PortKind::VhostUser { .. } => (nic_mac(cx, i, p)?, Vec::new()),
        _ => {
            if let Some((name, span)) = options.iter().find(|(_, s)| s.is_some()) {
                return Err(cx.err(
                    span.clone().unwrap_or(0..0),
                    f(name),
                    format!(
                        "`{name}` is an option of container NICs (tap, vhost-user), not of a {} port",
                        kind.name()
                    ),
                ));
            }
            return Ok(None);
        }
    };
    let on = p.port_security.as_ref().map(|v| *v.get_ref());
    let Some(mac) = mac.filter(|_| on != Some(false)) else {
        if on == Some(true) {
            let span = p.port_security.as_ref().map_or(0..0, |v| v.span());
            return Err(cx.err(
                span,
                f("port_security"),
                "port security needs the container's `mac`",
            ));
        }
        if let Some((name, span)) = options[1..].iter().find(|(_, s)| s.is_some()) {
            return Err(cx.err(
                span.clone().unwrap_or(0..0),
                f(name),
                format!("`{name}` has no effect with port security off"),
            ));
        }
        return Ok(None);
    };
    for (j, a) in p.addresses.iter().flatten().enumerate() {
        let ip = a.get_ref().parse::<std::net::IpAddr>().map_err(|_| {
            cx.err(
                a.span(),
                f(&format!("addresses[{j}]")),
                "expected an IPv4 or IPv6 address (no prefix length)",
            )
        })?;
        addresses.push(ip);
    }
    let mut allowed_addresses = Vec::new();
    for (j, a) in p.allowed_addresses.iter().flatten().enumerate() {
        allowed_addresses.push(Prefix::parse(a.get_ref()).ok_or_else(|| {
            cx.err(
                a.span(),
                f(&format!("allowed_addresses[{j}]")),
                "expected an address or prefix, like 10.0.0.100 or fd00::/64",
            )
        })?);
    }
    let mut allowed_macs = Vec::new();
    for (j, m) in p.allowed_macs.iter().flatten().enumerate() {
        let field = f(&format!("allowed_macs[{j}]"));
        let mac: MacAddr = m
            .get_ref()
            .parse()
            .map_err(|e| cx.err(m.span(), field.clone(), format!("{e}")))?;
        if mac.is_group() || mac.is_zero() {
            return Err(cx.err(m.span(), field, "a source MAC is unicast and non-zero"));
        }
        allowed_macs.push(mac);
    }
    let mut allowed_ethertypes = Vec::new();
    for (j, t) in p.allowed_ethertypes.iter().flatten().enumerate() {
        let v = *t.get_ref();
        let governed = [0x0800, 0x0806, 0x86dd, 0x8100, 0x88a8];
        if v < 0x0600 || governed.contains(&v) {
            return Err(cx.err(
                t.span(),
                f(&format!("allowed_ethertypes[{j}]")),
                "an EtherType of 0x0600 or more other than IPv4, ARP, IPv6 and VLAN tags \
                 (those have their own rules; tags: allow_vlan)",
            ));
        }
        allowed_ethertypes.push(v);
    }
    Ok(Some(GuardConf {
        mac,
        addresses,
        allowed_addresses,
        allowed_macs,
        allow_vlan: p.allow_vlan.as_ref().is_some_and(|v| *v.get_ref()),
        allowed_ethertypes,
    }))
}

fn list_span<T>(v: &Option<Vec<Spanned<T>>>) -> Option<Range<usize>> {
    v.as_ref().map(|l| l.first().map_or(0..0, |x| x.span()))
}

/// `10.0.0.1/24` -> (10.0.0.1, 24).
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, l) = s.split_once('/')?;
    let len: u8 = l.parse().ok()?;
    (len <= 32).then_some((a.parse().ok()?, len))
}

/// `fd00::1/64` -> (fd00::1, 64).
pub fn parse_cidr6(s: &str) -> Option<(Ipv6Addr, u8)> {
    let (a, l) = s.split_once('/')?;
    let len: u8 = l.parse().ok()?;
    (len <= 128).then_some((a.parse().ok()?, len))
}

fn is_pci_address(s: &str) -> bool {
    // DDDD:BB:DD.F
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && s.chars()
            .enumerate()
            .all(|(i, c)| [4, 7, 10].contains(&i) || c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        parse("t.toml", text).expect_err("should fail")
    }

    #[test]
    fn errors_point_at_their_key_name_their_table_and_suggest() {
        // A list checked as a whole: at its key.
        let e = err("[workers]\nidle_sleep_us = 0\ncores = [1, 1]\n");
        assert_eq!(
            (e.line, e.col, e.field.as_str()),
            (3, 1, "workers.cores"),
            "{e}"
        );
        // A misspelt key: its table's path and the near name.
        let e = err("[[bridge]]\nname = \"b\"\n[[port]]\nname = \"a\"\nkind = \"null\"\n[[port]]\nname = \"c\"\nkind = \"null\"\nbrige = \"b\"\n");
        assert_eq!(e.field, "port[1].brige", "{e}");
        assert!(e.message.contains("did you mean `bridge`?"), "{e}");
        assert_eq!(e.line, 9, "{e}");
        // Far from every name: the known ones listed instead.
        assert!(
            did_you_mean("unknown field `zzzzzzzz`, expected one of `name`, `kind`")
                .unwrap()
                .contains("known here: name, kind")
        );
        // Every port's mistakes in one run.
        let e = err("[[bridge]]\nname = \"b\"\n[[port]]\nname = \"a\"\nkind = \"tap\"\nbridge = \"nope\"\nnetns = \"x\"\n[[port]]\nname = \"c\"\nkind = \"null\"\nbridge = \"nope2\"\n");
        assert_eq!(e.also.len(), 1, "{e}");
        let text = e.to_string();
        assert!(
            text.contains("nope") && text.contains("nope2") && text.lines().count() == 2,
            "{text}"
        );
        assert!(
            text.lines()
                .all(|l| l.starts_with("t.toml:") && !l.starts_with("t.toml:0:0")),
            "{text}"
        );
    }

    #[test]
    fn embedded_default_config_is_valid() {
        let c = parse(DEFAULT_CONFIG_NAME, DEFAULT_CONFIG).unwrap();
        assert!(c.ports.iter().any(|p| matches!(p.kind, PortKind::Tap(_))));
        assert!(c
            .ports
            .iter()
            .any(|p| matches!(p.kind, PortKind::VhostUser { .. })));
    }

    #[test]
    fn the_port_space_is_bounded_by_max_ports_with_the_place_named() {
        let tap = |i: usize| {
            format!("[[port]]\nname = \"t{i}\"\nkind = \"tap\"\nbridge = \"b\"\nnetns = \"c{i}\"\n")
        };
        let bridge = "[[bridge]]\nname = \"b\"\n";
        let three: String = (0..3).map(tap).collect();
        let ok = parse(
            "t.toml",
            &format!("[switch]\nmax_ports = 3\n{bridge}{three}"),
        )
        .unwrap();
        assert_eq!(ok.switch.max_ports, 3);
        assert_eq!(
            parse("t.toml", &format!("{bridge}{three}"))
                .unwrap()
                .switch
                .max_ports,
            vswitch::MAX_PORTS
        );
        let e = err(&format!("[switch]\nmax_ports = 2\n{bridge}{three}"));
        assert_eq!((e.field.as_str(), e.line), ("port[2]", 15), "{e}");
        assert!(e.message.contains("at most 2 ports"), "{e}");
        let e = err(&format!("[switch]\nmax_ports = 5000\n{bridge}"));
        assert_eq!((e.field.as_str(), e.line), ("switch.max_ports", 2), "{e}");
        let e = err("[switch]\nmax_port = 5\n");
        assert!(e.to_string().contains("max_port"), "{e}");
    }

    #[test]
    fn only_ethdevs_count_against_dpdk_s_table_and_the_33rd_is_named() {
        let port = |i: usize, kind: &str| {
            let extra = match kind {
                "vhost-user" => format!("socket = \"/run/v{i}.sock\"\n"),
                _ => "no_rx = true\n".to_string(),
            };
            format!("[[port]]\nname = \"p{i}\"\nkind = \"{kind}\"\nbridge = \"b\"\n{extra}")
        };
        let bridge = "[[bridge]]\nname = \"b\"\n";
        // 40 vhost-user NICs and 32 ethdevs: fine.
        let ok: String = (0..40)
            .map(|i| port(i, "vhost-user"))
            .chain((40..72).map(|i| port(i, "null")))
            .collect();
        parse("t.toml", &format!("{bridge}{ok}")).unwrap();
        // A 33rd ethdev is refused where it is written.
        let e = err(&format!("{bridge}{ok}{}", port(72, "null")));
        assert_eq!(e.field, "port[72]", "{e}");
        assert_eq!(e.line, 3 + 72 * 5, "{e}");
        assert!(e.message.contains("RTE_MAX_ETHPORTS"), "{e}");
    }

    #[test]
    fn every_example_config_is_valid() {
        for e in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/configs")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                load(&p).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let e = err("[eal]\nmemory_mb = \"lots\"\n");
        assert_eq!((e.line, e.field.as_str()), (2, "eal.memory_mb"));
        assert!(e.message.contains("invalid type"), "{e}");
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = err(
            "[[bridge]]\nname = \"a\"\n\n[[port]]\nname = \"p\"\nkind = \"null\"\nsockt = \"/x\"\n",
        );
        assert_eq!(e.line, 7, "{e}");
        assert_eq!(e.field, "port[0].sockt");
        assert!(e.message.contains("did you mean `socket`?"), "{e}");
    }

    #[test]
    fn rx_queue_placement_settings_are_checked() {
        let e = err("[workers]\nrxq_assign = \"group\"\n");
        assert_eq!((e.line, e.field.as_str()), (2, "workers.rxq_assign"), "{e}");
        assert!(
            e.message.contains("cycles") && e.message.contains("roundrobin"),
            "{e}"
        );
        let e = err("[workers.auto_lb]\nload_pct = 150\n");
        assert_eq!(e.field, "workers.auto_lb.load_pct", "{e}");
        assert!(e.message.contains("between 1 and 100"), "{e}");
        let c = parse(
            "t.toml",
            "[workers.auto_lb]\nenabled = false\ninterval_secs = 5\n",
        )
        .unwrap();
        assert!(!c.workers.auto_lb.enabled);
        assert_eq!(c.workers.auto_lb.interval_secs, 5);
        assert_eq!(c.workers.auto_lb.load_pct, 95, "OVS's default");
        assert_eq!(c.workers.rxq_assign, RxqAssign::Cycles);
    }

    #[test]
    fn unknown_kind_lists_the_kinds() {
        let e = err("[[port]]\nname = \"p\"\nkind = \"veth\"\n");
        assert_eq!((e.line, e.field.as_str()), (3, "port[0].kind"));
        assert!(e.message.contains("vhost-user, tap"), "{e}");
        assert_eq!(e.to_string().split(':').next(), Some("t.toml"));
    }

    #[test]
    fn option_of_another_kind_is_rejected() {
        let e = err("[[port]]\nname = \"p\"\nkind = \"tap\"\nnetns = \"c1\"\nsocket = \"/s\"\n");
        assert_eq!((e.line, e.field.as_str()), (5, "port[0].socket"));
    }

    #[test]
    fn unknown_bridge_and_duplicates() {
        let e = err(
            "[[bridge]]\nname = \"a\"\n[[port]]\nname = \"p\"\nkind = \"ring\"\nbridge = \"b\"\n",
        );
        assert_eq!((e.line, e.field.as_str()), (6, "port[0].bridge"));
        assert!(e.message.contains("bridges: a"), "{e}");
        let e = err(
            "[[port]]\nname = \"p\"\nkind = \"ring\"\n[[port]]\nname = \"p\"\nkind = \"ring\"\n",
        );
        assert_eq!((e.line, e.field.as_str()), (5, "port[1].name"));
    }

    #[test]
    fn device_arguments_cannot_be_smuggled_in_through_names() {
        for (field, value) in [
            ("rx_pcap", "\"/tmp/in.pcap,tx_pcap=/etc/passwd\""),
            ("tx_pcap", "\"/tmp/out pcap\""),
        ] {
            let e = err(&format!(
                "[[port]]\nname = \"p\"\nkind = \"pcap\"\n{field} = {value}\n"
            ));
            assert_eq!(e.field, format!("port[0].{field}"), "{e}");
        }
        let e = err("[[port]]\nname = \"p\"\nkind = \"vhost-user\"\nsocket = \"/tmp/s,client=1,queues=8\"\n");
        assert_eq!(e.field, "port[0].socket", "{e}");
        let e = err(
            "[[port]]\nname = \"p\"\nkind = \"tap\"\nnetns = \"c\"\nifname = \"e2,iface=zz9\"\n",
        );
        assert_eq!(e.field, "port[0].ifname", "{e}");
        let e = err("[[port]]\nname = \"p\"\nkind = \"af-packet\"\niface = \"eth0,qpairs=9\"\n");
        assert_eq!(e.field, "port[0].iface", "{e}");
    }

    #[test]
    fn port_security_options_are_checked() {
        // Not on uplinks; not without a MAC; nothing allowed with it off.
        let e = err("[[port]]\nname = \"p\"\nkind = \"pcap\"\nport_security = true\n");
        assert_eq!(e.field, "port[0].port_security", "{e}");
        let e = err("[[port]]\nname = \"p\"\nkind = \"vhost-user\"\nsocket = \"/s\"\nport_security = true\n");
        assert!(e.message.contains("needs the container's `mac`"), "{e}");
        let e = err("[[port]]\nname = \"p\"\nkind = \"tap\"\nnetns = \"c\"\nport_security = false\nallowed_addresses = [\"10.0.0.9\"]\n");
        assert_eq!(e.field, "port[0].allowed_addresses", "{e}");
        let e = err("[[port]]\nname = \"p\"\nkind = \"tap\"\nnetns = \"c\"\nallowed_ethertypes = [0x0800]\n");
        assert_eq!(e.field, "port[0].allowed_ethertypes[0]", "{e}");
        let e = err("[[port]]\nname = \"p\"\nkind = \"tap\"\nnetns = \"c\"\naddresses = [\"10.0.0.0/24\"]\n");
        assert_eq!(e.field, "port[0].addresses[0]", "{e}");
        // A TAP is guarded by default with its derived MAC and address;
        // a vhost-user port without a MAC is not, and is warned about.
        let c = parse(
            "t.toml",
            "[[port]]\nname = \"t\"\nkind = \"tap\"\nnetns = \"c\"\nipv4 = \"10.0.0.2/24\"\n\
             [[port]]\nname = \"v\"\nkind = \"vhost-user\"\nsocket = \"/s\"\n",
        )
        .unwrap();
        let g = c.ports[0].guard.as_ref().expect("guarded");
        assert_eq!(g.mac, vswitch::MacAddr::derived(&["port", "t"]));
        assert_eq!(
            g.addresses,
            ["10.0.0.2".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(c.ports[0].mac_limit, Some(DEFAULT_NIC_MAC_LIMIT));
        assert!(c.ports[1].guard.is_none());
        assert!(
            c.warnings.iter().any(|w| w.contains("port v")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn tap_fields_are_checked() {
        let e = err("[[port]]\nname = \"p\"\nkind = \"tap\"\n");
        assert_eq!(e.field, "port[0].netns");
        let e = err("[[port]]\nname = \"p\"\nkind = \"tap\"\nnetns = \"c\"\nipv4 = \"10.0.0.1\"\n");
        assert_eq!((e.line, e.field.as_str()), (5, "port[0].ipv4"));
        let e = err(
            "[[port]]\nname = \"p\"\nkind = \"tap\"\nnetns = \"c\"\nmac = \"01:00:00:00:00:01\"\n",
        );
        assert_eq!(e.field, "port[0].mac");
        // A namespace file anywhere, by its absolute path; nothing that
        // climbs out of one.
        let c = parse(
            "t.toml",
            "[[port]]\nname = \"p\"\nkind = \"tap\"\nnetns = \"/var/run/docker/netns/3f2a\"\n",
        )
        .unwrap();
        let PortKind::Tap(t) = &c.ports[0].kind else {
            panic!("a tap")
        };
        assert_eq!(t.netns, Netns::Path("/var/run/docker/netns/3f2a".into()));
        for bad in ["../x", "/run/netns/../../etc", "/", "a/b"] {
            let e = err(&format!(
                "[[port]]\nname = \"p\"\nkind = \"tap\"\nnetns = \"{bad}\"\n"
            ));
            assert_eq!(e.field, "port[0].netns", "{bad}");
        }
    }

    #[test]
    fn vhost_socket_is_bounded_and_unique() {
        let long = format!("/{}", "s".repeat(120));
        let e = err(&format!(
            "[[port]]\nname = \"p\"\nkind = \"vhost-user\"\nsocket = \"{long}\"\n"
        ));
        assert_eq!(e.field, "port[0].socket");
        let e = err(
            "[[port]]\nname = \"p\"\nkind = \"vhost-user\"\nsocket = \"/a\"\n\
             [[port]]\nname = \"q\"\nkind = \"vhost-user\"\nsocket = \"/a\"\n",
        );
        assert_eq!((e.line, e.field.as_str()), (8, "port[1].socket"));
    }

    #[test]
    fn a_worker_on_the_main_cores_cpu_is_a_warning() {
        let c = parse(
            "t.toml",
            "[eal]\nmain_lcore = 1\n[workers]\ncores = [0, 1]\n",
        )
        .unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("CPU 1 is also the main lcore's")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn static_macs_are_checked() {
        let head = "[[bridge]]\nname = \"a\"\n[[port]]\nname = \"p\"\nkind = \"ring\"\n";
        let ok = parse(
            "t.toml",
            &format!("{head}bridge = \"a\"\nstatic_macs = [\"02:00:00:00:00:02\"]\n"),
        )
        .unwrap();
        assert_eq!(
            ok.ports[0].static_macs,
            ["02:00:00:00:00:02".parse().unwrap()]
        );
        let e = err(&format!(
            "{head}bridge = \"a\"\nstatic_macs = [\"02:00:00:00:00:02\", \"ff:ff:ff:ff:ff:ff\"]\n"
        ));
        assert_eq!((e.line, e.field.as_str()), (7, "port[0].static_macs[1]"));
        let e = err(&format!("{head}static_macs = [\"02:00:00:00:00:02\"]\n"));
        assert!(e.message.contains("bridge"), "{e}");
        let e = err(&format!(
            "{head}bridge = \"a\"\nstatic_macs = [\"02:00:00:00:00:02\"]\n\
             [[port]]\nname = \"q\"\nkind = \"ring\"\nbridge = \"a\"\nstatic_macs = [\"02:00:00:00:00:02\"]\n"
        ));
        assert_eq!((e.line, e.field.as_str()), (12, "port[1].static_macs[0]"));
    }

    #[test]
    fn vtep_and_vnis_are_checked() {
        let c = load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/vxlan.toml"
        )))
        .unwrap();
        let v = c.vtep.as_ref().unwrap();
        assert_eq!(
            (v.ip, v.prefix, v.udp_port, v.mtu),
            ("10.99.0.1".parse().unwrap(), 24, 4789, 1500)
        );
        assert_eq!(c.vnis.len(), 2);
        assert_eq!(c.vnis[0].remote_vteps.len(), 2);
        assert!(c.vnis[0].learn_vteps && !c.vnis[1].learn_vteps);
        assert_eq!(
            c.vnis[0].remote_macs[0].vtep,
            "10.99.0.2".parse::<Ipv4Addr>().unwrap()
        );

        let up = "[[port]]\nname = \"up\"\nkind = \"ring\"\n";
        let vtep = "[vtep]\nuplink = \"up\"\nip = \"10.0.0.1/24\"\n";
        let e = err(&format!("[[bridge]]\nname = \"a\"\nvni = 5\n{up}"));
        assert_eq!((e.line, e.field.as_str()), (3, "bridge[0].vni"));
        assert!(e.message.contains("[vtep]"), "{e}");
        let e = err(&format!(
            "[[bridge]]\nname = \"a\"\nvni = 16777216\n{up}{vtep}"
        ));
        assert_eq!(e.field, "bridge[0].vni");
        let e = err(&format!(
            "[[bridge]]\nname = \"a\"\nvni = 5\n[[bridge]]\nname = \"b\"\nvni = 5\n{up}{vtep}"
        ));
        assert_eq!((e.line, e.field.as_str()), (6, "bridge[1].vni"));
        let e = err(&format!(
            "[[bridge]]\nname = \"a\"\nvni = 5\nremote_vteps = [\"172.16.0.1\"]\n{up}{vtep}"
        ));
        assert_eq!((e.line, e.field.as_str()), (4, "bridge[0].remote_vteps[0]"));
        assert!(e.message.contains("no gateway"), "{e}");
        let e = err(&format!(
            "[[bridge]]\nname = \"a\"\nremote_vteps = [\"10.0.0.2\"]\n{up}"
        ));
        assert!(e.message.contains("needs `vni`"), "{e}");
        let e = err(&format!(
            "{up}[vtep]\nuplink = \"nope\"\nip = \"10.0.0.1/24\"\n"
        ));
        assert_eq!((e.line, e.field.as_str()), (5, "vtep.uplink"));
        let e = err(&format!(
            "[[bridge]]\nname = \"a\"\n{up}bridge = \"a\"\n[vtep]\nuplink = \"up\"\nip = \"10.0.0.1/24\"\n"
        ));
        assert!(e.message.contains("in a bridge"), "{e}");
        let e = err(&format!("{up}[vtep]\nuplink = \"up\"\nip = \"10.0.0.1\"\n"));
        assert_eq!(e.field, "vtep.ip");
        let e = err(&format!("{up}{vtep}gateway = \"10.1.0.1\"\n"));
        assert!(e.message.contains("not on the VTEP's subnet"), "{e}");
        let e = err(&format!("{up}{vtep}mtu = 100\n"));
        assert_eq!(e.field, "vtep.mtu");
        let e = err(&format!(
            "{up}{vtep}[[vtep.neighbour]]\nip = \"10.0.0.9\"\nmac = \"ff:ff:ff:ff:ff:ff\"\n"
        ));
        assert_eq!(e.field, "vtep.neighbour[0].mac");
    }

    const SG: &str = "[[security_group]]\nname = \"g\"\n[[security_group.rule]]\nname = \"r\"\npriority = 1\naction = \"allow\"\n";

    #[test]
    fn security_groups_and_qos_are_checked() {
        let c = load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/security.toml"
        )))
        .unwrap();
        assert_eq!(c.security_groups.len(), 3);
        assert_eq!(c.ports[0].egress_qos.as_deref(), Some("10mbit"));
        assert_eq!(c.ports[1].ingress_group.as_deref(), Some("web"));
        let e = err(&format!("{SG}proto = \"udp\"\ndst_ports = \"90-80\"\n"));
        assert_eq!(
            (e.line, e.field.as_str()),
            (8, "security_group[0].rule[0].dst_ports")
        );
        assert!(e.message.contains("empty"), "{e}");
        let e = err(&format!("{SG}dst_ports = \"80\"\n"));
        assert!(e.message.contains("tcp"), "{e}");
        let e = err(&format!("{SG}src = \"10.0.0.0/33\"\n"));
        assert_eq!(e.field, "security_group[0].rule[0].src");
        let e = err(&format!("{SG}src = \"10.0.0.0/8\"\ndst = \"fd00::/8\"\n"));
        assert!(e.message.contains("different families"), "{e}");
        let e = err(&format!("{SG}qos_class = \"gold\"\n"));
        assert!(e.message.contains("no [[qos_policy]]"), "{e}");
        // Equal priority, overlapping, different actions: ambiguous.
        let e = err(&format!(
            "{SG}[[security_group.rule]]\nname = \"d\"\npriority = 1\naction = \"deny\"\nproto = \"tcp\"\n"
        ));
        assert_eq!(e.field, "security_group[0]");
        assert!(e.message.contains("overlap"), "{e}");
        // A shadowed rule is a warning, not an error.
        let c = parse(
            "t.toml",
            &format!("{SG}[[security_group.rule]]\nname = \"d\"\npriority = 0\naction = \"deny\"\nproto = \"tcp\"\n"),
        )
        .unwrap();
        assert!(
            c.warnings[0].contains("can never match"),
            "{:?}",
            c.warnings
        );
        let e = err("[[port]]\nname = \"p\"\nkind = \"ring\"\ningress_group = \"nope\"\n");
        assert_eq!((e.line, e.field.as_str()), (4, "port[0].ingress_group"));
        let e = err("[[qos_policy]]\nname = \"q\"\nkind = \"trtcm\"\ncir = 10\ncbs = 10\npir = 5\npbs = 10\n");
        assert_eq!(e.field, "qos_policy[0].pir");
        let e = err("[[qos_policy]]\nname = \"q\"\nkind = \"srtcm\"\ncir = 10\ncbs = 10\nred = \"dscp:64\"\n");
        assert_eq!(e.field, "qos_policy[0].red");
    }
}
