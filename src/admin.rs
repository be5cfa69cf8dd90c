//! What each control request does to the running switch.
//!
//! Changes follow the pattern of [`Daemon`]: edit a copy of the config
//! document, validate it as a config file, do the fallible side effects
//! (open a port, move a NIC), publish, commit; any error on the way undoes
//! what was done and leaves the switch as it was.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;

use serde_json::{json, Map, Value};
use vswitch::{MacAddr, PortId};

use crate::config::{self, Config, Netns, PortKind};
use crate::control::Request;
use crate::daemon::{flush_ports, mbuf_demand, nic_ports, Daemon, PERF_FIELDS};
use crate::datapath::Stage;
use crate::netns;
use crate::ports::{self, Port};

/// The spec of port `name` in `cfg`, validated with it.
fn spec_of(cfg: &Config, name: &str) -> crate::config::PortSpec {
    cfg.ports
        .iter()
        .find(|p| p.name == name)
        .expect("validated with it")
        .clone()
}

/// How validation errors of a changed running config name their source.
const RUNNING: &str = "<running config>";

/// The TOML text of a document.
fn text_of(doc: &toml::Table) -> Result<String, String> {
    toml::to_string(doc).map_err(|e| format!("cannot write the config as TOML: {e}"))
}

/// Validates a changed document exactly as a config file; errors name
/// things as the user does (`port "c2": ingress_group`), not by their
/// index in the document (`port[1].ingress_group`).
fn validate(doc: &toml::Table) -> Result<Config, String> {
    config::parse(RUNNING, &text_of(doc)?).map_err(|e| {
        std::iter::once(&e)
            .chain(&e.also)
            .map(|e| format!("{}: {}", user_terms(doc, &e.field), e.message))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// A field path of the document (`port[1].ingress_group`) with its
/// first table named (`port "c2": ingress_group`).
fn user_terms(doc: &toml::Table, field: &str) -> String {
    let Some((table, rest)) = field.split_once('[') else {
        return field.to_string();
    };
    let Some((index, rest)) = rest.split_once(']') else {
        return field.to_string();
    };
    let name = index.parse::<usize>().ok().and_then(|i| {
        doc.get(table)?
            .as_array()?
            .get(i)?
            .get("name")?
            .as_str()
            .map(str::to_string)
    });
    let what = table.replace('_', " ");
    match (name, rest.strip_prefix('.')) {
        (Some(n), Some(f)) => format!("{what} {n:?}: {f}"),
        (Some(n), None) => format!("{what} {n:?}{rest}"),
        (None, _) => field.to_string(),
    }
}

/// The array of tables `key` (`port`, `security_group`, ...), created empty.
fn tables<'a>(doc: &'a mut toml::Table, key: &str) -> &'a mut Vec<toml::Value> {
    let v = doc
        .entry(key.to_string())
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    if !v.is_array() {
        *v = toml::Value::Array(Vec::new());
    }
    v.as_array_mut().expect("made an array above")
}

/// The table of `key` named `name`.
fn named<'a>(doc: &'a mut toml::Table, key: &str, name: &str) -> Option<&'a mut toml::Table> {
    tables(doc, key)
        .iter_mut()
        .filter_map(|v| v.as_table_mut())
        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
}

/// Removes the table of `key` named `name`; whether there was one.
fn remove_named(doc: &mut toml::Table, key: &str, name: &str) -> bool {
    let arr = tables(doc, key);
    let before = arr.len();
    arr.retain(|v| v.get("name").and_then(|n| n.as_str()) != Some(name));
    arr.len() != before
}

/// An address of a session tuple as text.
fn addr(family: acl::Family, a: u128) -> String {
    match family {
        acl::Family::V4 => IpAddr::V4(Ipv4Addr::from(a as u32)).to_string(),
        acl::Family::V6 => IpAddr::V6(Ipv6Addr::from(a)).to_string(),
    }
}

/// Security groups or QoS policies: the request shapes are the same.
#[derive(Clone, Copy)]
enum Policy {
    Acl,
    Qos,
}

impl Policy {
    /// The config's array of tables.
    fn key(self) -> &'static str {
        match self {
            Policy::Acl => "security_group",
            Policy::Qos => "qos_policy",
        }
    }

    /// The port fields attaching one: (ingress, egress).
    fn fields(self) -> (&'static str, &'static str) {
        match self {
            Policy::Acl => ("ingress_group", "egress_group"),
            Policy::Qos => ("ingress_qos", "egress_qos"),
        }
    }
}

/// What an `acl set` / `qos set` asks.
struct PolicyChange {
    tables: Option<String>,
    remove: Vec<String>,
    port: Option<String>,
    ingress: Option<String>,
    egress: Option<String>,
}

impl Daemon<'_> {
    /// Answers one request.
    pub fn handle(&mut self, req: Request) -> Result<Value, String> {
        match req {
            Request::Stats => Ok(serde_json::to_value(self.report()).expect("reports serialize")),
            Request::PmdPerf { clear, stages } => Ok(self.pmd_perf(clear, stages)),
            Request::PmdRxqRebalance => self.rxq_rebalance(),
            Request::Latency => Ok(self.latency()),
            Request::PortList => Ok(self.port_list()),
            Request::PortShow { name } => self.port_show(&name),
            Request::PortAdd { port } => self.port_add(port),
            Request::PortSet { name, fields } => self.port_set(&name, fields),
            Request::PortDel { name } => self.port_del(&name),
            Request::PortMove {
                name,
                netns,
                pid,
                ifname,
            } => self.port_move(&name, netns, pid, ifname),
            Request::BridgeList => Ok(self.bridge_list()),
            Request::FdbShow { bridge } => self.fdb_show(bridge),
            Request::FdbFlush { bridge, port } => self.fdb_flush(bridge, port),
            Request::SessionShow { limit } => Ok(self.session_show(limit.unwrap_or(1000))),
            Request::SessionFlush => {
                Ok(json!({ "flushed": self.shared.load().pipeline.security.sessions().flush() }))
            }
            Request::AclSet {
                groups,
                remove,
                port,
                ingress,
                egress,
            } => self.policy_set(
                Policy::Acl,
                PolicyChange {
                    tables: groups,
                    remove,
                    port,
                    ingress,
                    egress,
                },
            ),
            Request::AclShow => Ok(self.policy_show(Policy::Acl)),
            Request::QosSet {
                policies,
                remove,
                port,
                ingress,
                egress,
            } => self.policy_set(
                Policy::Qos,
                PolicyChange {
                    tables: policies,
                    remove,
                    port,
                    ingress,
                    egress,
                },
            ),
            Request::QosShow => Ok(self.policy_show(Policy::Qos)),
            Request::TunnelAdd { bridge, remote } => self.tunnel_edit(&bridge, &remote, true),
            Request::TunnelDel { bridge, remote } => self.tunnel_edit(&bridge, &remote, false),
            Request::TunnelList => self.tunnel_list(),
            Request::VpcList => Ok(self.vpc_list()),
            Request::VpcAdd { name, router_mac } => self.vpc_add(&name, router_mac),
            Request::VpcDel { name } => self.vpc_del(&name),
            Request::BridgeVpc {
                bridge,
                vpc,
                gateway,
            } => self.bridge_vpc(&bridge, vpc, gateway),
            Request::TunnelSet {
                bridge,
                vteps,
                stations,
            } => self.tunnel_set(&bridge, &vteps, &stations),
            Request::ConfigDump => Ok(json!({ "toml": text_of(&self.doc)? })),
            Request::AgentReport { state } => {
                self.agent = Some((Value::Object(state), std::time::Instant::now()));
                Ok(Value::Null)
            }
            Request::AgentShow => match &self.agent {
                Some((state, at)) => Ok(json!({
                    "state": state,
                    "reported_secs_ago": at.elapsed().as_secs_f64(),
                })),
                None => Err("no vswitch-agent has reported to this vswitchd".into()),
            },
            Request::ConfigVersion => Ok(json!({ "version": self.config_version })),
            Request::PortCapture {
                name,
                file,
                direction,
                count,
                secs,
                snaplen,
            } => self.capture_start(name, file, direction, count, secs, snaplen),
            Request::CaptureStatus => Ok(match &self.capture {
                Some(job) => job.status(true),
                None => self
                    .last_capture
                    .clone()
                    .unwrap_or_else(|| json!({ "running": false })),
            }),
            Request::CaptureStop => {
                self.capture_end();
                Ok(self.last_capture.clone().unwrap_or(Value::Null))
            }
            Request::Trace { port, flow, frame } => {
                self.trace_frame(&port, flow.as_deref(), frame.as_deref())
            }
            Request::TraceStart { port, count } => self.trace_start(&port, count),
            Request::TraceRead { stop } => self.trace_read(stop),
        }
    }

    /// Starts a capture of port `name` (validated before anything opens).
    fn capture_start(
        &mut self,
        name: String,
        file: std::path::PathBuf,
        direction: crate::capture::Direction,
        count: Option<u64>,
        secs: Option<f64>,
        snaplen: Option<u32>,
    ) -> Result<Value, String> {
        use crate::capture::{Job, DEFAULT_SNAPLEN, MAX_SNAPLEN};
        if let Some(job) = &self.capture {
            return Err(format!(
                "a capture of port {} is running; `vswitchctl port capture-stop` ends it",
                job.status(true)["port"].as_str().unwrap_or("?")
            ));
        }
        let port = PortId(self.slot_or_err(&name)? as u16);
        let snaplen = snaplen.unwrap_or(DEFAULT_SNAPLEN);
        if !(64..=MAX_SNAPLEN).contains(&snaplen) {
            return Err(format!(
                "snaplen {snaplen}: between 64 and {MAX_SNAPLEN} bytes"
            ));
        }
        if count == Some(0) {
            return Err("count 0 would capture nothing".into());
        }
        let duration = match secs {
            None => None,
            Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => {
                Some(std::time::Duration::from_secs_f64(s))
            }
            Some(s) => return Err(format!("secs {s}: between 0 and 86400")),
        };
        let job = Job::start(
            crate::capture::Request {
                name,
                port,
                file,
                direction,
                count,
                duration,
                snaplen,
            },
            self.now_ns(),
        )?;
        self.shared.capture.arm(job.capture());
        let status = job.status(true);
        tracing::info!(
            "capturing port {} ({:?}) to {}",
            status["port"].as_str().unwrap_or("?"),
            direction,
            status["file"].as_str().unwrap_or("?")
        );
        self.capture = Some(job);
        Ok(status)
    }

    /// Ends the running capture: workers stop copying (the next round of
    /// each), then the last frames are written and the file closed.
    pub(crate) fn capture_end(&mut self) {
        let Some(job) = self.capture.take() else {
            return;
        };
        self.shared.capture.disarm();
        if !self.shared.synchronize(crate::daemon::PUBLISH_TIMEOUT) {
            tracing::warn!(
                "a worker did not start a new round: the capture's last frames may be missing"
            );
        }
        let status = job.finish();
        tracing::info!(
            "capture of port {} ended: {} frames written, {} dropped",
            status["port"].as_str().unwrap_or("?"),
            status["frames"],
            status["dropped"]
        );
        self.last_capture = Some(status);
    }

    /// Writes what workers captured; ends the capture at its limit.
    pub(crate) fn serve_capture(&mut self) {
        if let Some(job) = &mut self.capture {
            job.drain();
            if job.done() {
                self.capture_end();
            }
        }
    }

    /// The switch port id of the NIC named `name`.
    fn slot_of(&self, name: &str) -> Option<usize> {
        self.ports
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.spec.name == name))
    }

    pub(crate) fn slot_or_err(&self, name: &str) -> Result<usize, String> {
        self.slot_of(name)
            .ok_or_else(|| format!("no port named {name:?}"))
    }

    /// The switch port id of the NIC named `name`, if a request may
    /// change it: a VPC's SNAT port is the config's own (`snat`).
    fn changeable_slot(&self, name: &str) -> Result<usize, String> {
        if let Some(v) = self.snat_owner(name) {
            return Err(format!(
                "port {name:?} is VPC {:?}'s way out: it comes and goes with the VPC's `snat` \
                 (edit the config and restart)",
                v.name
            ));
        }
        self.slot_or_err(name)
    }

    /// The VPC whose SNAT port (and bridge: they share the name) is
    /// `name`.
    fn snat_owner(&self, name: &str) -> Option<&crate::config::VpcConf> {
        self.cfg
            .vpcs
            .iter()
            .find(|v| v.snat.as_ref().is_some_and(|s| s.port == name))
    }

    /// The name of whatever holds switch port `p` (a NIC or a tunnel).
    pub(crate) fn port_name(&self, p: PortId) -> Option<String> {
        match self.ports.get(p.index()).and_then(|x| x.as_ref()) {
            Some(port) => Some(port.spec.name.clone()),
            None => self
                .vtep
                .as_ref()?
                .tunnels()
                .iter()
                .find(|t| t.port == p)
                .map(|t| t.name()),
        }
    }

    fn port_json(&self, i: usize, p: &Port) -> Value {
        // What the workers apply (the snapshot's), not what the guest
        // negotiated a moment ago: the sweep publishes a change within 1 s.
        let (offloads, tx_queues) = match self.shared.load().tx.get(i) {
            Some(crate::datapath::TxTarget::Vhost { takes, queues, .. }) => {
                (*takes, Some(queues.to_vec()))
            }
            Some(crate::datapath::TxTarget::Eth { queues, .. }) => {
                (p.guest_offloads(), Some(queues.to_vec()))
            }
            _ => (p.guest_offloads(), None),
        };
        let n_workers = self.cfg.workers.cores.len() as u32;
        let (ring_mbufs, ring_bytes) = crate::daemon::ring_memory(&p.spec, n_workers);
        json!({
            "index": i,
            "name": p.spec.name,
            "kind": p.spec.kind.name(),
            "bridge": p.spec.bridge,
            "dpdk_port": p.dpdk_id(),
            "mac": p.mac().to_string(),
            // What the config says the container owns (what a VPC's
            // router routes to, what an agent publishes).
            "endpoint": p.spec.endpoint().map(|(mac, ips)| json!({
                "mac": mac.to_string(),
                "ips": ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
            })),
            "link_up": p.link_up(),
            "guest_offloads": offloads,
            "tx_queues": tx_queues,
            "rx_queues": p.spec.rx_queues,
            "rss": p.rss(),
            "cni": p.spec.cni,
            "memory": {
                "reserved_mbufs": ring_mbufs,
                "reserved_hugepage_bytes": ring_bytes,
            },
        })
    }

    fn port_list(&self) -> Value {
        Value::Array(
            self.ports
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().map(|p| self.port_json(i, p)))
                .collect(),
        )
    }

    fn port_show(&self, name: &str) -> Result<Value, String> {
        let slot = self.slot_or_err(name)?;
        let p = self.ports[slot].as_ref().expect("slot_of found it");
        let mut v = self.port_json(slot, p);
        let mut doc = self.doc.clone();
        v["config"] = serde_json::to_value(named(&mut doc, "port", name).cloned())
            .map_err(|e| e.to_string())?;
        v["stats"] = self
            .report()
            .ports
            .into_iter()
            .find(|r| r.name == name)
            .map(|r| serde_json::to_value(r).expect("reports serialize"))
            .unwrap_or(Value::Null);
        Ok(v)
    }

    /// The lowest switch port id free for a NIC. A NIC takes precedence
    /// over a learned VTEP (soft state: learned again from its next
    /// frame), so spoofed VXLAN sources never use up the ids containers
    /// need: the oldest learned tunnel port is dropped, and its MACs
    /// forgotten once no worker uses it, before its id is reused.
    fn free_slot(&mut self) -> Result<usize, String> {
        let tunnels = self.vtep.as_ref().map_or(&[][..], |v| v.tunnels());
        let max = self.cfg.switch.max_ports;
        let free = (0..max).find(|&i| {
            self.ports.get(i).map_or(true, |p| p.is_none())
                && crate::vtep::free_for_nic(tunnels, PortId(i as u16))
        });
        if let Some(i) = free {
            return Ok(i);
        }
        let Some(t) = self.vtep.as_mut().and_then(|v| v.evict_learned()) else {
            return Err(format!(
                "all {max} switch ports are in use ([switch] max_ports)"
            ));
        };
        let cfg = self.cfg.clone();
        if let Err(e) = self.publish(&cfg, false) {
            if let Some(v) = &mut self.vtep {
                let mut back = v.tunnels().to_vec();
                back.push(t);
                v.restore(back);
            }
            return Err(format!("{e:#}"));
        }
        flush_ports(&self.shared.load(), std::iter::once(t.port));
        self.forget_tunnel(&t);
        tracing::info!(
            "learned VTEP {} of VNI {} dropped: a NIC needs its switch port {}",
            t.remote,
            t.vni,
            t.port
        );
        Ok(t.port.index())
    }

    fn port_add(&mut self, fields: Map<String, Value>) -> Result<Value, String> {
        let name = fields
            .get("name")
            .and_then(|v| v.as_str())
            .ok_or("a port needs a `name`")?
            .to_string();
        if self.slot_of(&name).is_some() {
            return Err(format!("port name {name:?} is in use"));
        }
        let table = toml::Value::try_from(Value::Object(fields))
            .map_err(|e| format!("the port's fields do not make a TOML table: {e}"))?;
        let mut doc = self.doc.clone();
        tables(&mut doc, "port").push(table);
        let cfg = validate(&doc)?;
        let spec = spec_of(&cfg, &name);
        ports::preflight(&spec).map_err(|e| e.to_string())?;
        if let PortKind::Tap(t) = &spec.kind {
            // A restart re-attaches the TAPs it finds; a new port must not
            // take over an interface that exists (another container's NIC).
            // A TAP of that name just removed may still be being destroyed.
            if netns::interface_exists(&t.netns, &t.ifname)
                && (!self.reaper.drain(std::time::Duration::from_secs(5))
                    || netns::interface_exists(&t.netns, &t.ifname))
            {
                return Err(format!(
                    "{} already has an interface {:?}: refusing to take it over",
                    t.netns, t.ifname
                ));
            }
        }
        let n_workers = cfg.workers.cores.len();
        let demand = mbuf_demand(&spec, n_workers as u32);
        if demand > self.reserve_left {
            return Err(format!(
                "not enough mbufs for port {name:?}: it needs {demand}, the hot-plug reserve has {} left; \
                 give it fewer descriptors (rx_desc, tx_desc) or put it in the config file and restart",
                self.reserve_left
            ));
        }
        let slot = self.free_slot()?;
        let port = Port::open(&spec, n_workers, self.pool).map_err(|e| e.to_string())?;
        if self.ports.len() <= slot {
            self.ports.resize_with(slot + 1, || None);
        }
        self.ports[slot] = Some(port);
        if let Err(e) = self.publish(&cfg, false) {
            if let Some(p) = self.ports[slot].take() {
                p.remove();
            }
            return Err(format!("{e:#}"));
        }
        self.reserve_left -= demand;
        self.commit(cfg, doc)?;
        let p = self.ports[slot].as_ref().expect("just added");
        tracing::info!(
            "port {name} ({}) added as switch port {slot}",
            p.spec.kind.name()
        );
        Ok(self.port_json(slot, p))
    }

    /// Changes what port security knows of a port (`vswitchctl port set`).
    /// The port's entries in its bridge's MAC table go first (its pinned
    /// MAC may change) and come back with the new snapshot.
    fn port_set(&mut self, name: &str, fields: Map<String, Value>) -> Result<Value, String> {
        const SETTABLE: [&str; 8] = [
            "port_security",
            "mac",
            "addresses",
            "allowed_addresses",
            "allowed_macs",
            "allow_vlan",
            "allowed_ethertypes",
            "mac_limit",
        ];
        let slot = self.changeable_slot(name)?;
        if let Some(k) = fields.keys().find(|k| !SETTABLE.contains(&k.as_str())) {
            return Err(format!(
                "`{k}` cannot change on a running port (settable: {}); remove and add the port",
                SETTABLE.join(", ")
            ));
        }
        let mut doc = self.doc.clone();
        let t = named(&mut doc, "port", name).ok_or("the port is not in the config document")?;
        for (k, v) in fields {
            if v.is_null() {
                t.remove(&k);
            } else {
                let v = toml::Value::try_from(v).map_err(|e| format!("field `{k}`: {e}"))?;
                t.insert(k, v);
            }
        }
        let cfg = validate(&doc)?;
        // The snapshot is built from the ports' specs.
        let spec = spec_of(&cfg, name);
        let port = self.ports[slot].as_mut().expect("slot_of found it");
        let old = std::mem::replace(&mut port.spec, spec);
        flush_ports(&self.shared.load(), std::iter::once(PortId(slot as u16)));
        if let Err(e) = self.publish(&cfg, false) {
            self.ports[slot].as_mut().expect("still there").spec = old;
            return Err(format!("{e:#}"));
        }
        self.commit(cfg, doc)?;
        self.port_show(name)
    }

    fn port_del(&mut self, name: &str) -> Result<Value, String> {
        let slot = self.changeable_slot(name)?;
        if self.cfg.vtep.as_ref().is_some_and(|v| v.uplink == name) {
            return Err(format!(
                "port {name:?} is the VTEP's uplink; it goes only with [vtep] (edit the config and restart)"
            ));
        }
        let mut doc = self.doc.clone();
        remove_named(&mut doc, "port", name);
        let cfg = validate(&doc)?;
        let port = self.ports[slot].take();
        if let Err(e) = self.publish(&cfg, false) {
            self.ports[slot] = port;
            return Err(format!("{e:#}"));
        }
        // Published: no worker polls the port or holds a frame for it.
        flush_ports(&self.shared.load(), std::iter::once(PortId(slot as u16)));
        let port = port.expect("slot_of found it");
        self.reserve_left += mbuf_demand(&port.spec, cfg.workers.cores.len() as u32);
        self.retire(PortId(slot as u16), port);
        self.commit(cfg, doc)?;
        tracing::info!("port {name} removed");
        Ok(json!({ "removed": name }))
    }

    fn port_move(
        &mut self,
        name: &str,
        netns: Option<String>,
        pid: Option<u32>,
        ifname: Option<String>,
    ) -> Result<Value, String> {
        let slot = self.changeable_slot(name)?;
        let port = self.ports[slot].as_ref().expect("slot_of found it");
        let PortKind::Tap(from) = port.spec.kind.clone() else {
            return Err(format!(
                "port {name:?} is a {} port: only TAP NICs move between containers \
                 (a DPDK container opens its vhost-user socket itself)",
                port.spec.kind.name()
            ));
        };
        let (key, value, target) = match (netns, pid) {
            (Some(n), None) => {
                let ns = Netns::from_field(&n).ok_or_else(|| {
                    format!("netns {n:?}: a name, or the absolute path of a namespace file")
                })?;
                ("netns", toml::Value::from(n), ns)
            }
            (None, Some(p)) => ("pid", toml::Value::from(i64::from(p)), Netns::Pid(p)),
            _ => return Err("give the new container as either `netns` or `pid`".into()),
        };
        netns::check_exists(&target).map_err(|e| e.to_string())?;
        let mut doc = self.doc.clone();
        let t = named(&mut doc, "port", name).ok_or("the port is not in the config document")?;
        t.remove("netns");
        t.remove("pid");
        t.insert(key.into(), value);
        if let Some(i) = &ifname {
            t.insert("ifname".into(), toml::Value::from(i.clone()));
        }
        let cfg = validate(&doc)?;
        let spec = cfg
            .ports
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .expect("validated with it");
        let PortKind::Tap(to) = spec.kind.clone() else {
            unreachable!("a TAP port stays a TAP port");
        };
        netns::move_nic(&from, &to).map_err(|e| e.to_string())?;
        self.commit(cfg, doc)?;
        // The port finds its NIC (link, MAC) in the new namespace now.
        if let Some(p) = self.ports[slot].as_mut() {
            p.spec = spec;
        }
        tracing::info!("port {name} moved from {} to {}", from.netns, to.netns);
        let (netns, pid) = match &to.netns {
            Netns::Name(n) => (Some(n.clone()), None),
            Netns::Path(p) => (Some(p.display().to_string()), None),
            Netns::Pid(p) => (None, Some(*p)),
        };
        Ok(json!({ "moved": name, "netns": netns, "pid": pid, "ifname": to.ifname }))
    }

    fn bridge_list(&self) -> Value {
        let dp = self.shared.load();
        let now = self.now_secs();
        Value::Array(
            dp.pipeline.switch
                .bridges()
                .iter()
                .map(|b| {
                    let vni = self.cfg.vnis.iter().find(|v| v.bridge == b.conf.name);
                    let subnet = self.cfg.vpcs.iter().find_map(|v| {
                        let s = v.subnets.iter().find(|s| s.bridge == b.conf.name)?;
                        Some((v.name.clone(), format!("{}/{}", s.gateway, s.prefix)))
                    });
                    json!({
                        "name": b.conf.name,
                        "vni": vni.map(|v| v.vni),
                        "vpc": subnet.as_ref().map(|s| &s.0),
                        "gateway": subnet.as_ref().map(|s| &s.1),
                        "ports": b.ports.iter().filter_map(|p| self.port_name(*p)).collect::<Vec<_>>(),
                        "macs": b.macs.entries(now).len(),
                        "mac_capacity": b.macs.capacity(),
                        "mac_aging_secs": b.conf.mac_aging_secs,
                    })
                })
                .collect(),
        )
    }

    fn vpc_list(&self) -> Value {
        let dp = self.shared.load();
        let bridges = dp.pipeline.switch.bridges();
        let name = |b: vswitch::BridgeId| bridges[b.index()].conf.name.clone();
        let vpcs = dp.pipeline.router.vpcs().iter().map(|v| {
            let mut endpoints: Vec<(std::net::IpAddr, _)> = v
                .endpoints()
                .map(|(ip, e)| (ip.into(), e))
                .chain(v.endpoints6().map(|(ip, e)| (ip.into(), e)))
                .collect();
            endpoints.sort_by_key(|(ip, _)| *ip);
            let snat = self
                .cfg
                .vpcs
                .iter()
                .find(|c| c.name == v.name)
                .and_then(|c| c.snat.as_ref());
            json!({
                "name": v.name,
                "router_mac": v.mac.to_string(),
                "snat": snat.map(|s| json!({
                    "netns": s.netns,
                    "host_interface": s.host_if,
                    "link": format!("{}/{}", s.host_ip(), crate::config::SNAT_PREFIX),
                    "port": s.port,
                })),
                "subnets": v.subnets().iter().map(|s| json!({
                    "bridge": name(s.bridge),
                    "gateway": format!("{}/{}", s.gateway, s.prefix),
                    "gateway6": v.subnets6().iter().find(|s6| s6.bridge == s.bridge)
                        .map(|s6| format!("{}/{}", s6.gateway, s6.prefix)),
                })).collect::<Vec<_>>(),
                "endpoints": endpoints.iter().map(|(ip, e)| json!({
                    "ip": ip.to_string(),
                    "mac": e.mac.to_string(),
                    "bridge": name(e.bridge),
                    "port": self.port_name(e.port),
                    "remote": dp.pipeline.switch.is_tunnel(e.port),
                })).collect::<Vec<_>>(),
            })
        });
        Value::Array(vpcs.collect())
    }

    fn vpc_add(&mut self, name: &str, router_mac: Option<String>) -> Result<Value, String> {
        if self.cfg.vpcs.iter().any(|v| v.name == name) {
            return Err(format!("VPC {name:?} exists"));
        }
        let mut t = toml::Table::new();
        t.insert("name".into(), toml::Value::from(name));
        if let Some(m) = router_mac {
            t.insert("router_mac".into(), toml::Value::from(m));
        }
        let mut doc = self.doc.clone();
        tables(&mut doc, "vpc").push(toml::Value::Table(t));
        self.apply_vpcs(doc)
    }

    fn vpc_del(&mut self, name: &str) -> Result<Value, String> {
        let v = self
            .cfg
            .vpcs
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| format!("no VPC named {name:?}"))?;
        if v.snat.is_some() {
            return Err(format!(
                "VPC {name:?} has `snat`: its namespace goes with a restart (edit the config)"
            ));
        }
        if !v.subnets.is_empty() {
            let names: Vec<&str> = v.subnets.iter().map(|s| s.bridge.as_str()).collect();
            return Err(format!(
                "bridges {} are still subnets of VPC {name:?} (`vswitchctl vpc subnet BRIDGE --none` first)",
                names.join(", ")
            ));
        }
        let mut doc = self.doc.clone();
        remove_named(&mut doc, "vpc", name);
        self.apply_vpcs(doc)
    }

    /// Makes `bridge` a subnet of `vpc` (or of none). Its session zone
    /// becomes the VPC's (or its own again): the sessions its ports had
    /// opened stay in the old zone until they time out, so a stateful
    /// group judges the next frame of a flow as new (a reply it would
    /// have let in by its session is judged by the rules).
    fn bridge_vpc(
        &mut self,
        bridge: &str,
        vpc: Option<String>,
        gateway: Option<String>,
    ) -> Result<Value, String> {
        if self.snat_owner(bridge).is_some() {
            return Err(format!("bridge {bridge:?} is a VPC's way out (`snat`)"));
        }
        let mut doc = self.doc.clone();
        let b = named(&mut doc, "bridge", bridge)
            .ok_or_else(|| format!("no bridge named {bridge:?}"))?;
        match (vpc, gateway) {
            (Some(v), Some(g)) => {
                b.insert("vpc".into(), toml::Value::from(v));
                b.insert("gateway".into(), toml::Value::from(g));
            }
            (None, None) => {
                b.remove("vpc");
                b.remove("gateway");
            }
            _ => return Err("give both `vpc` and `gateway`, or neither".into()),
        }
        self.apply_vpcs(doc)
    }

    /// Makes `doc`'s VPCs the running ones: validated as a config,
    /// published, committed; on an error nothing changed.
    fn apply_vpcs(&mut self, doc: toml::Table) -> Result<Value, String> {
        let cfg = validate(&doc)?;
        let snat = |c: &Config| {
            c.vpcs
                .iter()
                .filter_map(|v| v.snat.clone())
                .collect::<Vec<_>>()
        };
        if snat(&cfg) != snat(&self.cfg) {
            return Err("`snat` changes with a restart (its namespace is made at start)".into());
        }
        self.publish(&cfg, false).map_err(|e| format!("{e:#}"))?;
        self.commit(cfg, doc)?;
        Ok(self.vpc_list())
    }

    fn fdb_show(&self, bridge: Option<String>) -> Result<Value, String> {
        let dp = self.shared.load();
        let now = self.now_secs();
        let mut out = Vec::new();
        let mut found = bridge.is_none();
        for b in dp.pipeline.switch.bridges() {
            if bridge.as_ref().is_some_and(|n| *n != b.conf.name) {
                continue;
            }
            found = true;
            for e in b.macs.entries(now) {
                out.push(json!({
                    "bridge": b.conf.name, "mac": e.mac.to_string(), "port": self.port_name(e.port),
                    "age": e.age, "static": e.is_static,
                }));
            }
        }
        if !found {
            return Err(format!("no bridge named {:?}", bridge.unwrap_or_default()));
        }
        Ok(Value::Array(out))
    }

    fn fdb_flush(&self, bridge: Option<String>, port: Option<String>) -> Result<Value, String> {
        let dp = self.shared.load();
        if let Some(b) = &bridge {
            if !dp
                .pipeline
                .switch
                .bridges()
                .iter()
                .any(|x| x.conf.name == *b)
            {
                return Err(format!("no bridge named {b:?}"));
            }
        }
        let port = match &port {
            Some(n) => Some(PortId(self.slot_or_err(n)? as u16)),
            None => None,
        };
        let mut n = 0;
        for b in dp.pipeline.switch.bridges() {
            if bridge.as_ref().is_some_and(|x| *x != b.conf.name) {
                continue;
            }
            n += match port {
                Some(p) => b.macs.flush_learned_on(p),
                None => b.macs.flush(),
            };
        }
        Ok(json!({ "flushed": n }))
    }

    fn session_show(&self, limit: usize) -> Value {
        let dp = self.shared.load();
        let sessions = dp.pipeline.security.sessions();
        let bridge_of_zone = |z: u16| {
            dp.pipeline
                .switch
                .bridges()
                .iter()
                .find(|b| b.zone == z)
                .map(|b| b.conf.name.clone())
        };
        let list: Vec<Value> = sessions
            .entries(self.now_secs(), limit)
            .into_iter()
            .map(|s| {
                let t = s.tuple;
                json!({
                    "bridge": bridge_of_zone(s.zone),
                    "proto": t.proto,
                    "src": addr(t.family, t.src),
                    "sport": t.sport,
                    "dst": addr(t.family, t.dst),
                    "dport": t.dport,
                    "tcp_state": s.tcp.map(|st| format!("{st:?}")),
                    "replied": s.replied,
                    "expires_in": s.expires_in,
                    "generation": s.generation,
                })
            })
            .collect();
        json!({ "capacity": sessions.capacity(), "shown": list.len(), "sessions": list })
    }

    fn policy_set(&mut self, kind: Policy, change: PolicyChange) -> Result<Value, String> {
        let key = kind.key();
        let mut doc = self.doc.clone();
        let mut changed = false;
        if let Some(text) = &change.tables {
            let parsed: toml::Table =
                toml::from_str(text).map_err(|e| format!("not TOML: {}", e.message()))?;
            let items = match parsed.get(key) {
                Some(toml::Value::Array(a)) if parsed.len() == 1 => a.clone(),
                _ => return Err(format!("expected only [[{key}]] tables")),
            };
            for item in items {
                let name = item
                    .get("name")
                    .and_then(|n| n.as_str())
                    .ok_or_else(|| format!("every [[{key}]] needs a `name`"))?
                    .to_string();
                match named(&mut doc, key, &name) {
                    Some(t) => *t = item.as_table().cloned().unwrap_or_default(),
                    None => tables(&mut doc, key).push(item),
                }
                changed = true;
            }
        }
        for r in &change.remove {
            if !remove_named(&mut doc, key, r) {
                return Err(format!("no [[{key}]] named {r:?}"));
            }
            changed = true;
        }
        match &change.port {
            Some(p) => {
                let t = named(&mut doc, "port", p).ok_or_else(|| format!("no port named {p:?}"))?;
                let (fin, fout) = kind.fields();
                for (field, v) in [(fin, &change.ingress), (fout, &change.egress)] {
                    match v.as_deref() {
                        Some("") => {
                            t.remove(field);
                        }
                        Some(g) => {
                            t.insert(field.into(), toml::Value::from(g));
                        }
                        None => continue,
                    }
                    changed = true;
                }
            }
            None if change.ingress.is_some() || change.egress.is_some() => {
                return Err("`ingress` and `egress` need the `port` they attach to".into())
            }
            None => {}
        }
        if !changed {
            return Err("nothing to change".into());
        }
        let cfg = validate(&doc)?;
        for w in &cfg.warnings {
            tracing::warn!("{w}");
        }
        self.publish(&cfg, true).map_err(|e| format!("{e:#}"))?;
        let warnings = cfg.warnings.clone();
        self.commit(cfg, doc)?;
        Ok(json!({ "generation": self.generation, "warnings": warnings }))
    }

    fn policy_show(&self, kind: Policy) -> Value {
        let key = kind.key();
        let mut only = toml::Table::new();
        if let Some(v) = self.doc.get(key) {
            only.insert(key.into(), v.clone());
        }
        let (fin, fout) = kind.fields();
        let ports: Vec<Value> = self
            .cfg
            .ports
            .iter()
            .map(|p| {
                let (i, o) = match kind {
                    Policy::Acl => (&p.ingress_group, &p.egress_group),
                    Policy::Qos => (&p.ingress_qos, &p.egress_qos),
                };
                json!({ "port": p.name, fin: i, fout: o })
            })
            .collect();
        let mut v = json!({ "toml": toml::to_string(&only).unwrap_or_default(), "ports": ports });
        if let Policy::Acl = kind {
            v["hits"] = self.rule_hits();
        }
        v
    }

    /// Per group, the frames each rule and the default decided.
    fn rule_hits(&self) -> Value {
        let groups = self.cfg.security_groups.iter().filter_map(|g| {
            let compiled = self.carried.group(&g.name)?;
            let hits = compiled.hits();
            let mut rules: Vec<Value> = compiled
                .def
                .rules
                .iter()
                .zip(&hits)
                .map(|(r, h)| {
                    json!({
                        "group": g.name,
                        "rule": r.name,
                        "priority": r.priority,
                        "action": action_name(r.action),
                        "hits": h,
                    })
                })
                .collect();
            rules.push(json!({
                "group": g.name,
                "rule": "(default)",
                "priority": Value::Null,
                "action": action_name(compiled.def.default),
                "hits": hits.last().copied().unwrap_or(0),
            }));
            Some(rules)
        });
        Value::Array(groups.flatten().collect())
    }

    fn tunnel_edit(&mut self, bridge: &str, remote: &str, add: bool) -> Result<Value, String> {
        if self.vtep.is_none() {
            return Err("no [vtep] in the running config".into());
        }
        let ip: Ipv4Addr = remote
            .parse()
            .map_err(|_| format!("{remote:?} is not an IPv4 address"))?;
        let mut doc = self.doc.clone();
        let b = named(&mut doc, "bridge", bridge)
            .ok_or_else(|| format!("no bridge named {bridge:?}"))?;
        let list = b
            .entry("remote_vteps")
            .or_insert_with(|| toml::Value::Array(Vec::new()))
            .as_array_mut()
            .ok_or("remote_vteps is not a list")?;
        let listed = list.iter().position(|v| v.as_str() == Some(remote));
        match (add, listed) {
            (true, Some(_)) => return Err(format!("{ip} is already a remote VTEP of {bridge:?}")),
            (true, None) => list.push(toml::Value::from(ip.to_string())),
            (false, Some(i)) => {
                list.remove(i);
            }
            (false, None) => return Err(format!("{ip} is not a remote VTEP of {bridge:?}")),
        }
        self.apply_tunnels(doc)
    }

    /// Replaces bridge `bridge`'s remote VTEPs and remote stations (see
    /// `Request::TunnelSet`); validated like the config file's
    /// `remote_vteps` and `[[bridge.remote_mac]]`, all or nothing.
    fn tunnel_set(
        &mut self,
        bridge: &str,
        vteps: &[String],
        stations: &[crate::control::RemoteStation],
    ) -> Result<Value, String> {
        if self.vtep.is_none() {
            return Err("no [vtep] in the running config".into());
        }
        let mut doc = self.doc.clone();
        let b = named(&mut doc, "bridge", bridge)
            .ok_or_else(|| format!("no bridge named {bridge:?}"))?;
        b.insert(
            "remote_vteps".into(),
            toml::Value::Array(
                vteps
                    .iter()
                    .map(|v| toml::Value::from(v.as_str()))
                    .collect(),
            ),
        );
        if stations.is_empty() {
            b.remove("remote_mac");
        } else {
            let tables = stations
                .iter()
                .map(|s| {
                    let mut t = toml::Table::new();
                    t.insert("mac".into(), toml::Value::from(s.mac.as_str()));
                    t.insert("vtep".into(), toml::Value::from(s.vtep.as_str()));
                    if !s.ips.is_empty() {
                        let ips = s.ips.iter().map(|a| toml::Value::from(a.as_str()));
                        t.insert("ips".into(), toml::Value::Array(ips.collect()));
                    }
                    toml::Value::Table(t)
                })
                .collect();
            b.insert("remote_mac".into(), toml::Value::Array(tables));
        }
        self.apply_tunnels(doc)
    }

    /// Makes `doc`'s tunnels the running ones: validated as a config,
    /// tunnel ports added and removed, published, committed; on an error
    /// nothing changed.
    fn apply_tunnels(&mut self, doc: toml::Table) -> Result<Value, String> {
        let cfg = validate(&doc)?;
        let used = nic_ports(&self.ports);
        let v = self
            .vtep
            .as_mut()
            .ok_or("no [vtep] in the running config")?;
        let before = v.tunnels().to_vec();
        let gone = v.sync(&cfg, &used).map_err(|e| format!("{e:#}"))?;
        if let Err(e) = self.publish(&cfg, false) {
            self.vtep.as_mut().expect("checked above").restore(before);
            return Err(format!("{e:#}"));
        }
        flush_ports(&self.shared.load(), gone.iter().map(|t| t.port));
        for t in &gone {
            self.forget_tunnel(t);
        }
        self.commit(cfg, doc)?;
        self.tunnel_list()
    }

    fn tunnel_list(&self) -> Result<Value, String> {
        let v = self
            .vtep
            .as_ref()
            .ok_or("no [vtep] in the running config")?;
        let tunnels: Vec<_> = v
            .tunnels()
            .iter()
            .map(|t| {
                json!({
                    "name": t.name(),
                    "port": t.port.0,
                    "vni": t.vni,
                    "bridge": t.bridge,
                    "remote": t.remote.to_string(),
                    "next_hop": v.host().next_hop(t.remote).map(|h| h.to_string()),
                    "next_hop_mac": v.next_hop_mac(t.remote).map(|m| MacAddr(m).to_string()),
                    "flood": t.flood,
                    "learned": t.learned.is_some(),
                    // How long ago it was learned (the oldest gives way to a NIC).
                    "learned_ms_ago": t.learned.map(|at| at.elapsed().as_millis() as u64),
                })
            })
            .collect();
        let neighbours: Vec<_> = v
            .host()
            .neighbours()
            .map(|(ip, n)| {
                json!({ "ip": ip.to_string(), "mac": MacAddr(n.mac).to_string(), "static": n.is_static })
            })
            .collect();
        Ok(json!({ "tunnels": tunnels, "neighbours": neighbours }))
    }

    fn pmd_perf(&mut self, clear: bool, stages: Option<bool>) -> Value {
        if let Some(on) = stages {
            self.shared.stage_metrics.store(on, Ordering::Relaxed);
        }
        let now: Vec<[u64; PERF_FIELDS]> = self
            .shared
            .workers
            .iter()
            .map(|w| {
                let c = &w.counters;
                let f = &c.flow_cache;
                [
                    c.packets.get(),
                    c.busy_cycles.get(),
                    c.idle_cycles.get(),
                    c.syscalls.get(),
                    f.hits.get(),
                    f.misses.get(),
                    f.inserts.get(),
                    f.evictions.get(),
                    f.bypassed.get(),
                    c.stage_frames.get(),
                    c.stage_cycles[0].get(),
                    c.stage_cycles[1].get(),
                    c.stage_cycles[2].get(),
                    c.stage_cycles[3].get(),
                ]
            })
            .collect();
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let rx_queues = self.rx_queues_json();
        let busy_window = self.rxq.busy_pct();
        let workers: Vec<Value> = now
            .iter()
            .zip(&self.perf_base)
            .enumerate()
            .map(|(i, (n, b))| {
                let d: Vec<u64> = n.iter().zip(b).map(|(n, b)| n - b).collect();
                let [pkts, busy, idle, sys, hits, misses, inserts, evictions, bypassed, timed, ref stage @ ..] =
                    d[..]
                else {
                    unreachable!("PERF_FIELDS")
                };
                json!({
                    "worker": i,
                    "core": self.cfg.workers.cores.get(i),
                    "rx_queues": rx_queues[i],
                    "load_busy_pct": busy_window[i],
                    "packets": pkts,
                    "busy_cycles": busy,
                    "idle_cycles": idle,
                    "busy_pct": 100.0 * ratio(busy, busy + idle),
                    "cycles_per_packet": ratio(busy, pkts),
                    "syscalls": sys,
                    "syscalls_per_packet": ratio(sys, pkts),
                    "flow_cache": {
                        "enabled": self.shared.flow_cache,
                        "hits": hits,
                        "misses": misses,
                        "hit_pct": 100.0 * ratio(hits, hits + misses),
                        "inserts": inserts,
                        "evictions": evictions,
                        "bypassed_bursts": bypassed,
                    },
                    "stage_cycles_per_packet": stage_json(stage, timed, busy, pkts),
                })
            })
            .collect();
        if clear {
            self.perf_base = now;
        }
        let w = &self.cfg.workers;
        json!({
            "tsc_hz": self.hz,
            "stage_metrics": self.shared.stage_metrics.load(Ordering::Relaxed),
            "workers": workers,
            "rxq_assign": w.rxq_assign,
            "auto_lb": {
                "enabled": w.auto_lb.enabled,
                "interval_secs": w.auto_lb.interval_secs,
                "load_pct": w.auto_lb.load_pct,
                "improvement_pct": w.auto_lb.improvement_pct,
                "rebalances": self.rxq.rebalances,
                "last": self.rxq.last.as_ref().map(|r| json!({
                    "secs_ago": self.now_secs().saturating_sub(r.at_secs),
                    "trigger": r.trigger,
                    "moves": self.moves_json(&r.moves),
                    "worker_load_pct_before": r.loads.before,
                    "worker_load_pct_after": r.loads.after,
                })),
            },
        })
    }

    /// Each worker's rx queues with their load over the last
    /// `rxq::WINDOW` seconds (% of one worker's cycles).
    fn rx_queues_json(&self) -> Vec<Value> {
        self.rxq
            .by_worker()
            .iter()
            .map(|qs| {
                Value::Array(
                    qs.iter()
                        .map(|&(q, pinned)| {
                            json!({
                                "port": self.port_name(q.port),
                                "queue": q.queue,
                                "pinned": pinned,
                                "load_pct": self.rxq.queue_pct(q),
                            })
                        })
                        .collect(),
                )
            })
            .collect()
    }

    fn moves_json(&self, moves: &[crate::rxq::Move]) -> Value {
        moves
            .iter()
            .map(|m| {
                json!({
                    "port": self.port_name(m.queue.port),
                    "queue": m.queue.queue,
                    "from": m.from,
                    "to": m.to,
                })
            })
            .collect()
    }

    fn rxq_rebalance(&mut self) -> Result<Value, String> {
        let plan = self.rxq.plan(self.cfg.workers.rxq_assign);
        let loads = self.rxq.loads(&plan);
        let moves = self
            .rebalance(plan, "manual", loads)
            .map_err(|e| format!("{e:#}"))?;
        Ok(json!({ "moves": self.moves_json(&moves) }))
    }

    fn latency(&self) -> Value {
        let hz = self.hz.max(1) as f64;
        let workers: Vec<Value> = self
            .shared
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("3 significant digits");
                for (lo, n) in w.counters.burst_cycles.buckets() {
                    let _ = h.record_n(lo.max(1), n);
                }
                let q = |p: f64| h.value_at_quantile(p);
                let ns = |c: u64| c as f64 * 1e9 / hz;
                json!({
                    "worker": i,
                    "rounds": h.len(),
                    "cycles": { "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p99.9": q(0.999), "max": h.max() },
                    "ns": { "p50": ns(q(0.5)), "p90": ns(q(0.9)), "p99": ns(q(0.99)), "p99.9": ns(q(0.999)), "max": ns(h.max()) },
                })
            })
            .collect();
        json!({
            "what": "processing time of poll rounds with packets (rx, switch, tx of one burst per rx queue); \
                     buckets are within 25 %",
            "workers": workers,
        })
    }
}

/// A worker's cycles per frame in each [`Stage`] over the `frames` its
/// stage metrics timed, and `other` (the round's own bookkeeping: busy
/// cycles per frame beyond the stages') when they timed nearly all the
/// period's `packets` (the round that turned them on or off is partly
/// timed).
fn stage_json(cycles: &[u64], frames: u64, busy: u64, packets: u64) -> Value {
    let per = |c: u64| {
        if frames == 0 {
            0.0
        } else {
            c as f64 / frames as f64
        }
    };
    let mut m: Map<String, Value> = Stage::ALL
        .iter()
        .zip(cycles)
        .map(|(s, &c)| (s.name().to_string(), json!(per(c))))
        .collect();
    m.insert("frames".into(), json!(frames));
    if frames > 0 && frames * 100 >= packets * 99 {
        let staged = cycles.iter().sum::<u64>() as f64 / frames as f64;
        let other = (busy as f64 / packets as f64 - staged).max(0.0);
        m.insert("other".into(), json!(other));
    }
    Value::Object(m)
}

fn action_name(a: acl::Action) -> &'static str {
    match a {
        acl::Action::Allow => "allow",
        acl::Action::Deny => "deny",
    }
}
