//! The VTEP and the VNIs of bridge domains in the config file.
//!
//! ```toml
//! [vtep]
//! uplink = "uplink"          # a port in no bridge: the underlay NIC
//! ip = "10.99.0.1/24"        # the VTEP's address on the underlay
//! gateway = "10.99.0.254"    # optional: next hop to off-subnet VTEPs
//! udp_port = 4789            # default 4789 (IANA)
//! ttl = 64
//! df = true                  # outer Don't Fragment
//! mtu = 1500                 # underlay MTU: larger encapsulated frames drop
//! [[vtep.neighbour]]         # optional static ARP entries
//! ip = "10.99.0.2"
//! mac = "02:00:00:00:99:02"
//!
//! [[bridge]]
//! name = "vpc100"
//! vni = 100
//! remote_vteps = ["10.99.0.2"]   # head-end replication list (BUM)
//! learn_vteps = false            # accept VTEPs not listed (default false)
//! [[bridge.remote_mac]]          # optional static remote stations
//! mac = "02:00:00:00:01:02"
//! vtep = "10.99.0.2"
//! ```

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use serde::Deserialize;
use toml::Spanned;
use vswitch::MacAddr;

use super::{parse_cidr, BridgeFile, ConfigError, Ctx, PortSpec};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VtepFile {
    uplink: Spanned<String>,
    ip: Spanned<String>,
    gateway: Option<Spanned<String>>,
    #[serde(default = "default_udp_port")]
    udp_port: u16,
    #[serde(default = "default_ttl")]
    ttl: Spanned<u8>,
    #[serde(default = "default_true")]
    df: bool,
    #[serde(default = "default_mtu")]
    mtu: Spanned<u16>,
    #[serde(default, rename = "neighbour")]
    neighbours: Vec<NeighbourFile>,
    #[serde(default = "default_max_learned")]
    max_learned: u16,
}

fn default_max_learned() -> u16 {
    16
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NeighbourFile {
    ip: Spanned<String>,
    mac: Spanned<String>,
}

/// A static remote station of a bridge.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoteMacFile {
    mac: Spanned<String>,
    vtep: Spanned<String>,
    #[serde(default)]
    ips: Vec<Spanned<String>>,
}

fn default_udp_port() -> u16 {
    vxlan::VXLAN_PORT
}
fn default_ttl() -> Spanned<u8> {
    Spanned::new(0..0, 64)
}
fn default_true() -> bool {
    true
}
fn default_mtu() -> Spanned<u16> {
    Spanned::new(0..0, 1500)
}

/// The local VTEP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtepConf {
    /// Name of the uplink port.
    pub uplink: String,
    /// VTEP address.
    pub ip: Ipv4Addr,
    /// Its subnet's prefix length.
    pub prefix: u8,
    /// Next hop to VTEPs off the subnet.
    pub gateway: Option<Ipv4Addr>,
    /// UDP destination port.
    pub udp_port: u16,
    /// Outer TTL.
    pub ttl: u8,
    /// Outer DF bit.
    pub df: bool,
    /// Underlay MTU (outer IPv4 total length limit).
    pub mtu: u16,
    /// Static neighbours: underlay address -> MAC.
    pub neighbours: Vec<(Ipv4Addr, MacAddr)>,
    /// Remote VTEPs learned (bridges with `learn_vteps`) at most at a
    /// time, over all VNIs; a NIC takes a learned VTEP's switch port when
    /// it needs one.
    pub max_learned: u16,
}

/// A bridge domain's VNI and its remote VTEPs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VniConf {
    /// The bridge.
    pub bridge: String,
    /// Its VNI.
    pub vni: u32,
    /// Remote VTEPs that get broadcast and unknown unicast.
    pub remote_vteps: Vec<Ipv4Addr>,
    /// Whether VTEPs not listed become tunnel ports when they send to us.
    pub learn_vteps: bool,
    /// Stations pinned behind a remote VTEP.
    pub remote_macs: Vec<RemoteMac>,
}

/// A station pinned behind a remote VTEP (`[[bridge.remote_mac]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMac {
    /// Its MAC.
    pub mac: MacAddr,
    /// The VTEP it is behind.
    pub vtep: Ipv4Addr,
    /// Its addresses, IPv4 and IPv6, for the VPC's router (a VPC bridge
    /// only).
    pub ips: Vec<IpAddr>,
}

fn ipv4(cx: &Ctx, v: &Spanned<String>, field: String) -> Result<Ipv4Addr, ConfigError> {
    v.get_ref()
        .parse()
        .map_err(|_| cx.err(v.span(), field, "expected an IPv4 address like 10.0.0.2"))
}

pub(super) fn unicast_mac(
    cx: &Ctx,
    v: &Spanned<String>,
    field: String,
) -> Result<MacAddr, ConfigError> {
    let m: MacAddr = v
        .get_ref()
        .parse()
        .map_err(|e| cx.err(v.span(), field.clone(), format!("{e}")))?;
    if m.is_group() || m.is_zero() {
        return Err(cx.err(v.span(), field, "needs a unicast, non-zero MAC"));
    }
    Ok(m)
}

/// Validates `[vtep]` against the ports (the uplink must be a port in no
/// bridge).
pub(super) fn vtep(
    cx: &Ctx,
    v: &Spanned<VtepFile>,
    ports: &[PortSpec],
) -> Result<VtepConf, ConfigError> {
    let f = v.get_ref();
    let uplink = f.uplink.get_ref();
    match ports.iter().find(|p| &p.name == uplink) {
        None => {
            return Err(cx.err(
                f.uplink.span(),
                "vtep.uplink",
                format!("no port named {uplink:?}"),
            ))
        }
        Some(p) if p.bridge.is_some() => {
            return Err(cx.err(
                f.uplink.span(),
                "vtep.uplink",
                format!("port {uplink:?} is in a bridge; the uplink carries only the underlay"),
            ))
        }
        Some(_) => {}
    }
    let (ip, prefix) = parse_cidr(f.ip.get_ref()).ok_or_else(|| {
        cx.err(
            f.ip.span(),
            "vtep.ip",
            "expected an address with prefix length, like 10.99.0.1/24",
        )
    })?;
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
        return Err(cx.err(f.ip.span(), "vtep.ip", "needs a unicast address"));
    }
    let gateway = f
        .gateway
        .as_ref()
        .map(|g| ipv4(cx, g, "vtep.gateway".into()))
        .transpose()?;
    if *f.ttl.get_ref() == 0 {
        return Err(cx.err(f.ttl.span(), "vtep.ttl", "between 1 and 255"));
    }
    let mtu = *f.mtu.get_ref();
    if !(576..=9000).contains(&mtu) {
        return Err(cx.err(f.mtu.span(), "vtep.mtu", "between 576 and 9000"));
    }
    let mut neighbours = Vec::new();
    for (i, n) in f.neighbours.iter().enumerate() {
        neighbours.push((
            ipv4(cx, &n.ip, format!("vtep.neighbour[{i}].ip"))?,
            unicast_mac(cx, &n.mac, format!("vtep.neighbour[{i}].mac"))?,
        ));
    }
    let conf = VtepConf {
        uplink: uplink.clone(),
        ip,
        prefix,
        gateway,
        udp_port: f.udp_port,
        ttl: *f.ttl.get_ref(),
        df: f.df,
        mtu,
        neighbours,
        max_learned: f.max_learned,
    };
    if let Some(g) = gateway {
        if !conf.on_link(g) {
            let span = f.gateway.as_ref().map_or(0..0, |g| g.span());
            return Err(cx.err(
                span,
                "vtep.gateway",
                format!("{g} is not on the VTEP's subnet {ip}/{prefix}"),
            ));
        }
    }
    Ok(conf)
}

impl VtepConf {
    /// Whether `ip` is on the VTEP's subnet.
    pub fn on_link(&self, ip: Ipv4Addr) -> bool {
        vxlan::host::same_subnet(ip, self.ip, self.prefix)
    }
}

/// Validates the VXLAN fields of bridge `i` named `name`.
pub(super) fn bridge_vni(
    cx: &Ctx,
    i: usize,
    b: &BridgeFile,
    vtep: Option<&VtepConf>,
    vnis: &mut HashSet<u32>,
) -> Result<Option<VniConf>, ConfigError> {
    let f = |n: &str| format!("bridge[{i}].{n}");
    let Some(vni) = &b.vni else {
        let stray = b
            .remote_vteps
            .first()
            .map(|v| ("remote_vteps", v.span()))
            .or(b.learn_vteps.as_ref().map(|v| ("learn_vteps", v.span())))
            .or(b.remote_macs.first().map(|m| ("remote_mac", m.mac.span())));
        return match stray {
            Some((field, span)) => Err(cx.err(span, f(field), "needs `vni` on the bridge")),
            None => Ok(None),
        };
    };
    let n = *vni.get_ref();
    if !(1..=vxlan::MAX_VNI).contains(&n) {
        return Err(cx.err(vni.span(), f("vni"), "between 1 and 16777215"));
    }
    let Some(vtep) = vtep else {
        return Err(cx.err(
            vni.span(),
            f("vni"),
            "a VNI needs a [vtep] section (local address and uplink)",
        ));
    };
    if !vnis.insert(n) {
        return Err(cx.err(
            vni.span(),
            f("vni"),
            format!("VNI {n} is already another bridge's"),
        ));
    }
    let check_remote = |v: &Spanned<String>, field: String| -> Result<Ipv4Addr, ConfigError> {
        let ip = ipv4(cx, v, field.clone())?;
        if ip == vtep.ip || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
            return Err(cx.err(
                v.span(),
                field,
                "a remote VTEP needs a unicast address other than ours",
            ));
        }
        if !vtep.on_link(ip) && vtep.gateway.is_none() {
            return Err(cx.err(
                v.span(),
                field,
                format!(
                    "{ip} is off the VTEP's subnet {}/{} and [vtep] has no gateway",
                    vtep.ip, vtep.prefix
                ),
            ));
        }
        Ok(ip)
    };
    let mut remote_vteps = Vec::new();
    for (j, r) in b.remote_vteps.iter().enumerate() {
        let ip = check_remote(r, f(&format!("remote_vteps[{j}]")))?;
        if remote_vteps.contains(&ip) {
            return Err(cx.err(r.span(), f(&format!("remote_vteps[{j}]")), "listed twice"));
        }
        remote_vteps.push(ip);
    }
    let mut remote_macs = Vec::new();
    for (j, m) in b.remote_macs.iter().enumerate() {
        let mac = unicast_mac(cx, &m.mac, f(&format!("remote_mac[{j}].mac")))?;
        let ip = check_remote(&m.vtep, f(&format!("remote_mac[{j}].vtep")))?;
        if remote_macs.iter().any(|x: &RemoteMac| x.mac == mac) {
            return Err(cx.err(
                m.mac.span(),
                f(&format!("remote_mac[{j}].mac")),
                "listed twice",
            ));
        }
        let ips = m
            .ips
            .iter()
            .enumerate()
            .map(|(k, a)| {
                a.get_ref().parse::<IpAddr>().map_err(|_| {
                    cx.err(
                        a.span(),
                        f(&format!("remote_mac[{j}].ips[{k}]")),
                        "expected an IPv4 or IPv6 address like 10.0.0.2 or fd00::2",
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        remote_macs.push(RemoteMac { mac, vtep: ip, ips });
    }
    Ok(Some(VniConf {
        bridge: b.name.get_ref().clone(),
        vni: n,
        remote_vteps,
        // Off unless asked: any underlay host could otherwise make itself
        // a tunnel port by sending VXLAN.
        learn_vteps: b.learn_vteps.as_ref().is_some_and(|v| *v.get_ref()),
        remote_macs,
    }))
}
