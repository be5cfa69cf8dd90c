//! VPCs: bridges grouped into one routed network, each bridge a subnet
//! with a gateway that every host answers (see `vswitch::router`).
//!
//! ```toml
//! [[vpc]]
//! name = "blue"
//! router_mac = "02:fe:00:00:00:01"   # optional; derived from the name
//!
//! [[bridge]]
//! name = "web"
//! vni = 100
//! vpc = "blue"
//! gateway = "192.168.60.1/24"        # the subnet and its gateway
//! gateway6 = "fd00:60::1/64"         # optional: its IPv6 prefix too
//!
//! [[vpc]]
//! name = "red"
//! snat = true                        # egress to the outside, see below
//! snat_link = "169.254.101.0/30"     # optional; the host side of it
//! ```
//!
//! `snat = true` gives the VPC a way out (see `crate::snat`): addresses
//! in none of its subnets are routed to a network namespace of this host
//! (`vsnat-<file_prefix>-<vpc>`) that masquerades them onto a veth to the
//! host, which masquerades them again onto its own address. It is made
//! of a hidden subnet (bridge and TAP port `<vpc>-snat`, 169.254.0.0/30:
//! the router .1, the namespace .2) that the config expands itself, so
//! the router, the counters and `port list` see an ordinary NIC.
//!
//! The router MAC must be the same on every host of a deployment (a
//! container keeps it in its ARP cache): derived from the VPC's name by
//! default, which every host agrees on. Endpoints are the VPC bridges'
//! NICs with their configured addresses (a TAP's `ipv4` and `ipv6`, port
//! security's `addresses`) and the remote stations' `ips`; an address
//! belongs to one endpoint per VPC, inside its bridge's subnet (IPv6: its
//! `gateway6` prefix), never a gateway.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;
use toml::Spanned;
use vswitch::MacAddr;

use super::{
    check_name, parse_cidr, parse_cidr6, BridgeFile, ConfigError, Ctx, PortKind, PortSpec, VniConf,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VpcFile {
    name: Spanned<String>,
    router_mac: Option<Spanned<String>>,
    snat: Option<Spanned<bool>>,
    snat_link: Option<Spanned<String>>,
}

/// A VPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcConf {
    /// Unique name; the same VPC has the same name on every host.
    pub name: String,
    /// Its router's MAC.
    pub router_mac: MacAddr,
    /// Its subnets, in bridge order (the SNAT link's last).
    pub subnets: Vec<SubnetConf>,
    /// Its way out, if it has one.
    pub snat: Option<SnatConf>,
}

/// A VPC's egress through source NAT on this host (`crate::snat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnatConf {
    /// The namespace that masquerades; also the name of its table in the
    /// host's nftables.
    pub netns: String,
    /// The host's end of the veth into it.
    pub host_if: String,
    /// The /30 of that veth: the host has its first address, the
    /// namespace the second.
    pub link: Ipv4Addr,
    /// The TAP port (and its bridge) the router sends egress to.
    pub port: String,
}

/// The VPC side of every SNAT namespace: a /30 in which the router is
/// the gateway and the namespace's TAP the one endpoint. The same in
/// every VPC (each namespace is its own).
pub const SNAT_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);
/// The SNAT namespace's address on the VPC side.
pub const SNAT_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 2);
/// The prefix length of both SNAT links.
pub const SNAT_PREFIX: u8 = 30;

impl SnatConf {
    /// The namespaces of the instance with DPDK file prefix `prefix`
    /// start with this: a restart (or a test's cleanup) finds those a
    /// crash left by it.
    pub fn netns_prefix(file_prefix: &str) -> String {
        format!("vsnat-{file_prefix}-")
    }

    /// The host's address on the link.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.link) + 1)
    }

    /// The namespace's address on the link.
    pub fn netns_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.link) + 2)
    }
}

/// A bridge as a VPC's subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetConf {
    /// The bridge.
    pub bridge: String,
    /// Its gateway address.
    pub gateway: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// Its IPv6 gateway and prefix length, if it has IPv6.
    pub v6: Option<(Ipv6Addr, u8)>,
}

impl SubnetConf {
    fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => vxlan::host::same_subnet(ip, self.gateway, self.prefix),
            IpAddr::V6(ip) => self
                .v6
                .is_some_and(|(gw, len)| vswitch::router::same_prefix6(ip, gw, len)),
        }
    }

    fn is_gateway(&self, ip: IpAddr) -> bool {
        ip == IpAddr::V4(self.gateway) || self.v6.is_some_and(|(gw, _)| ip == IpAddr::V6(gw))
    }

    /// The subnet of `ip`'s family, as written.
    fn range_of(&self, ip: IpAddr) -> String {
        match (ip, self.v6) {
            (IpAddr::V6(_), Some((gw, len))) => format!("{gw}/{len}"),
            (IpAddr::V6(_), None) => "(no gateway6: no IPv6)".into(),
            (IpAddr::V4(_), _) => format!("{}/{}", self.gateway, self.prefix),
        }
    }
}

impl PortSpec {
    /// The MAC and addresses (IPv4, then IPv6) the port's container owns,
    /// as the config says (port security's, or the TAP's): what a VPC's
    /// router routes to and what an agent publishes.
    pub fn endpoint(&self) -> Option<(MacAddr, Vec<IpAddr>)> {
        let mut ips: Vec<IpAddr> = Vec::new();
        let mut mac = None;
        if let PortKind::Tap(t) = &self.kind {
            mac = Some(t.mac);
            ips.extend(t.ipv4.map(|(ip, _)| IpAddr::V4(ip)));
            ips.extend(t.ipv6.map(|(ip, _)| IpAddr::V6(ip)));
        }
        if let Some(g) = &self.guard {
            mac = Some(g.mac);
            for a in &g.addresses {
                if !ips.contains(a) {
                    ips.push(*a);
                }
            }
        }
        ips.sort_by_key(|a| a.is_ipv6());
        mac.map(|m| (m, ips))
    }
}

/// Addresses two NICs of one plain bridge (in no VPC, where `vpcs`
/// refuses them) both claim: the config stands, but the containers race
/// for the address's ARP and neighbour answers.
pub(super) fn shared_addresses(ports: &[PortSpec], vpcs: &[VpcConf]) -> Vec<String> {
    let routed = |b: &str| vpcs.iter().any(|v| v.subnets.iter().any(|s| s.bridge == b));
    let mut owner: HashMap<(&str, IpAddr), &str> = HashMap::new();
    let mut warnings = Vec::new();
    for p in ports {
        let (Some(bridge), Some((_, ips))) = (p.bridge.as_deref(), p.endpoint()) else {
            continue;
        };
        if routed(bridge) {
            continue;
        }
        for ip in ips {
            if let Some(first) = owner.insert((bridge, ip), &p.name) {
                warnings.push(format!(
                    "port {:?}: address {ip} is port {first:?}'s too (bridge {bridge:?}): the \
                     containers will race for it",
                    p.name
                ));
                owner.insert((bridge, ip), first);
            }
        }
    }
    warnings
}

/// The router MAC of VPC `name` when the config gives none.
pub fn derived_router_mac(name: &str) -> MacAddr {
    MacAddr::derived(&["vpc-router", name])
}

/// Validates `[[vpc]]` and the bridges' `vpc` / `gateway` against each
/// other, the ports and the remote stations.
pub(super) fn vpcs(
    cx: &Ctx,
    files: &[Spanned<VpcFile>],
    bridges: &[Spanned<BridgeFile>],
    ports: &[PortSpec],
    port_spans: &[std::ops::Range<usize>],
    vnis: &[VniConf],
) -> Result<Vec<VpcConf>, ConfigError> {
    let mut vpcs: Vec<VpcConf> = Vec::new();
    for (i, v) in files.iter().enumerate() {
        let v = v.get_ref();
        check_name(cx, &v.name, &format!("vpc[{i}].name"))?;
        let name = v.name.get_ref();
        if vpcs.iter().any(|o| &o.name == name) {
            return Err(cx.err(
                v.name.span(),
                format!("vpc[{i}].name"),
                format!("VPC {name:?} is defined twice"),
            ));
        }
        let router_mac = match &v.router_mac {
            Some(m) => super::vtep::unicast_mac(cx, m, format!("vpc[{i}].router_mac"))?,
            None => derived_router_mac(name),
        };
        vpcs.push(VpcConf {
            name: name.clone(),
            router_mac,
            subnets: Vec::new(),
            snat: None,
        });
    }
    for (i, b) in bridges.iter().enumerate() {
        let b = b.get_ref();
        let f = |field: &str| format!("bridge[{i}].{field}");
        if let (Some(g), None) = (&b.gateway6, &b.gateway) {
            return Err(cx.err(
                g.span(),
                f("gateway6"),
                "needs `vpc` and `gateway` on the bridge (a subnet has IPv4, and IPv6 besides)",
            ));
        }
        let (vpc, gw) = match (&b.vpc, &b.gateway) {
            (None, None) => continue,
            (Some(v), None) => {
                return Err(cx.err(
                    v.span(),
                    f("vpc"),
                    "a VPC's bridge needs its `gateway` (like \"192.168.60.1/24\")",
                ))
            }
            (None, Some(g)) => {
                return Err(cx.err(g.span(), f("gateway"), "needs `vpc` on the bridge"))
            }
            (Some(v), Some(g)) => (v, g),
        };
        let Some(k) = vpcs.iter().position(|x| &x.name == vpc.get_ref()) else {
            return Err(cx.err(
                vpc.span(),
                f("vpc"),
                format!("no [[vpc]] named {:?}", vpc.get_ref()),
            ));
        };
        let (gateway, prefix) = parse_cidr(gw.get_ref())
            .filter(|(ip, p)| (1..=30).contains(p) && !ip.is_unspecified() && !ip.is_multicast())
            .ok_or_else(|| cx.err(gw.span(), f("gateway"), "expected the gateway's address with the subnet's prefix length (1-30), like 192.168.60.1/24"))?;
        let v6 = match &b.gateway6 {
            None => None,
            Some(g) => Some(
                parse_cidr6(g.get_ref())
                    .filter(|(ip, p)| {
                        (1..=126).contains(p)
                            && !ip.is_unspecified()
                            && !ip.is_multicast()
                            && !vswitch::router::is_link_local(*ip)
                    })
                    .ok_or_else(|| {
                        cx.err(
                            g.span(),
                            f("gateway6"),
                            "expected the IPv6 gateway's address with the prefix length                              (1-126), like fd00:60::1/64",
                        )
                    })?,
            ),
        };
        let s = SubnetConf {
            bridge: b.name.get_ref().clone(),
            gateway,
            prefix,
            v6,
        };
        if let Some((gw6, _)) = s.v6 {
            if let Some(o) = vpcs[k].subnets.iter().find(|o| {
                o.v6.is_some_and(|(o6, _)| o.contains(gw6.into()) || s.contains(o6.into()))
            }) {
                let g = b.gateway6.as_ref().expect("parsed from it");
                return Err(cx.err(
                    g.span(),
                    f("gateway6"),
                    format!(
                        "overlaps bridge {:?}'s IPv6 prefix in VPC {:?}",
                        o.bridge, vpcs[k].name
                    ),
                ));
            }
        }
        if let Some(o) = vpcs[k]
            .subnets
            .iter()
            .find(|o| o.contains(gateway.into()) || s.contains(o.gateway.into()))
        {
            return Err(cx.err(
                gw.span(),
                f("gateway"),
                format!(
                    "overlaps bridge {:?}'s subnet in VPC {:?}",
                    o.bridge, vpcs[k].name
                ),
            ));
        }
        vpcs[k].subnets.push(s);
    }
    // One endpoint per address in a VPC, in its bridge's subnet.
    let mut owners: HashMap<(usize, IpAddr), String> = HashMap::new();
    let subnet_of = |bridge: &str| {
        vpcs.iter().enumerate().find_map(|(k, v)| {
            v.subnets
                .iter()
                .find(|s| s.bridge == bridge)
                .map(|s| (k, s))
        })
    };
    for (i, p) in ports.iter().enumerate() {
        let (Some(bridge), Some((_, ips))) = (&p.bridge, p.endpoint()) else {
            continue;
        };
        let Some((k, s)) = subnet_of(bridge) else {
            continue;
        };
        for ip in ips {
            let what = format!("port {:?}: address {ip}", p.name);
            let wrong = if !s.contains(ip) {
                Some(format!(
                    "{what} is outside bridge {bridge:?}'s subnet {}",
                    s.range_of(ip)
                ))
            } else if s.is_gateway(ip) {
                Some(format!("{what} is the gateway's"))
            } else {
                owners
                    .insert((k, ip), format!("port {:?}", p.name))
                    .map(|o| {
                        format!(
                            "{what} is {o}'s too (one endpoint per address in VPC {:?})",
                            vpcs[k].name
                        )
                    })
            };
            if let Some(m) = wrong {
                return Err(cx.err(port_spans[i].clone(), format!("port[{i}]"), m));
            }
        }
    }
    for v in vnis {
        let sub = subnet_of(&v.bridge);
        let (i, b) = bridges
            .iter()
            .enumerate()
            .find(|(_, b)| b.get_ref().name.get_ref() == &v.bridge)
            .expect("a VNI's bridge exists");
        for (j, st) in v.remote_macs.iter().enumerate() {
            let field = format!("bridge[{i}].remote_mac[{j}].ips");
            let span = b.span();
            for &ip in &st.ips {
                let Some((k, s)) = sub else {
                    return Err(cx.err(
                        span,
                        field,
                        "`ips` needs the bridge in a VPC (`vpc`, `gateway`)",
                    ));
                };
                if !s.contains(ip) || s.is_gateway(ip) {
                    return Err(cx.err(
                        span,
                        field,
                        format!(
                            "{ip} is not an endpoint address of subnet {}",
                            s.range_of(ip)
                        ),
                    ));
                }
                if let Some(o) = owners.insert((k, ip), format!("remote station {}", st.mac)) {
                    return Err(cx.err(
                        span,
                        field,
                        format!(
                            "{ip} is {o}'s too (one endpoint per address in VPC {:?})",
                            vpcs[k].name
                        ),
                    ));
                }
            }
        }
    }
    Ok(vpcs)
}

/// Gives each VPC with `snat = true` its way out (see the module
/// documentation): the hidden subnet, its TAP port in the VPC's SNAT
/// namespace, and the host link. Runs after [`vpcs`]: the VPC's own
/// subnets must stay clear of the link.
pub(super) fn expand_snat(
    cx: &Ctx,
    files: &[Spanned<VpcFile>],
    file_prefix: &str,
    vpcs: &mut [VpcConf],
    bridges: &mut Vec<vswitch::BridgeConf>,
    ports: &mut Vec<PortSpec>,
) -> Result<(), ConfigError> {
    let mut links: Vec<Ipv4Addr> = Vec::new();
    for (i, (v, f)) in vpcs.iter_mut().zip(files).enumerate() {
        let f = f.get_ref();
        let field = |n: &str| format!("vpc[{i}].{n}");
        let on = f.snat.as_ref().is_some_and(|s| *s.get_ref());
        if !on {
            if let Some(l) = &f.snat_link {
                return Err(cx.err(l.span(), field("snat_link"), "needs `snat = true`"));
            }
            continue;
        }
        let span = f.snat.as_ref().expect("on").span();
        let name = format!("{}-snat", v.name);
        if bridges.iter().any(|b| b.name == name) || ports.iter().any(|p| p.name == name) {
            return Err(cx.err(
                span,
                field("snat"),
                format!(
                    "SNAT makes a bridge and a port named {name:?}: rename the one the config has"
                ),
            ));
        }
        let vpc_side = SubnetConf {
            bridge: name.clone(),
            gateway: SNAT_GATEWAY,
            prefix: SNAT_PREFIX,
            v6: None,
        };
        if let Some(o) = v
            .subnets
            .iter()
            .find(|o| o.contains(SNAT_GATEWAY.into()) || vpc_side.contains(o.gateway.into()))
        {
            return Err(cx.err(
                span,
                field("snat"),
                format!(
                    "bridge {:?}'s subnet overlaps {SNAT_GATEWAY}/{SNAT_PREFIX}, the VPC side of SNAT",
                    o.bridge
                ),
            ));
        }
        let link = match &f.snat_link {
            Some(l) => parse_cidr(l.get_ref())
                .filter(|&(_, p)| p == SNAT_PREFIX)
                .map(|(ip, _)| Ipv4Addr::from(u32::from(ip) & !3))
                .ok_or_else(|| {
                    cx.err(
                        l.span(),
                        field("snat_link"),
                        "a /30 for the veth between the host and the SNAT namespace, like \"169.254.100.0/30\"",
                    )
                })?,
            None => Ipv4Addr::new(169, 254, 100 + links.len() as u8, 0),
        };
        let at = f.snat_link.as_ref().map_or(span, |l| l.span());
        if vpc_side.contains(link.into()) || links.contains(&link) {
            return Err(cx.err(
                at,
                field("snat_link"),
                format!(
                    "{link}/{SNAT_PREFIX} is taken (the VPC side of SNAT, or another VPC's link)"
                ),
            ));
        }
        links.push(link);
        let netns = format!("{}{}", SnatConf::netns_prefix(file_prefix), v.name);
        bridges.push(vswitch::BridgeConf {
            name: name.clone(),
            mac_capacity: 8,
            mac_aging_secs: 300,
        });
        ports.push(PortSpec {
            name: name.clone(),
            bridge: Some(name.clone()),
            rx_queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            rx_workers: None,
            static_macs: Vec::new(),
            ingress_group: None,
            egress_group: None,
            ingress_qos: None,
            egress_qos: None,
            // Ours, not a tenant's: it forwards the outside's replies,
            // whose sources are no address of its own.
            mac_limit: None,
            cni: None,
            guard: None,
            kind: PortKind::Tap(super::TapSpec {
                netns: super::Netns::Name(netns.clone()),
                ifname: "vpc".into(),
                mac: MacAddr::derived(&["vpc-snat", &v.name]),
                ipv4: Some((SNAT_ADDR, SNAT_PREFIX)),
                gateway: None,
                ipv6: None,
                gateway6: None,
                mtu: 1500,
            }),
        });
        v.subnets.push(vpc_side);
        v.snat = Some(SnatConf {
            host_if: format!(
                "vsn{:08x}",
                vswitch::types::fnv(&[file_prefix, &v.name]) as u32
            ),
            netns,
            link,
            port: name,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    const BLUE: &str = "[[vpc]]\nname = \"blue\"\n";

    fn bridge(name: &str, vpc: &str, gw: &str) -> String {
        format!("[[bridge]]\nname = \"{name}\"\nvpc = \"{vpc}\"\ngateway = \"{gw}\"\n")
    }

    fn tap(name: &str, bridge: &str, ip: &str) -> String {
        format!(
            "[[port]]\nname = \"{name}\"\nkind = \"tap\"\nbridge = \"{bridge}\"\nnetns = \"x\"\nipv4 = \"{ip}\"\n"
        )
    }

    fn err(text: &str) -> ConfigError {
        parse("t.toml", text).expect_err("should fail")
    }

    #[test]
    fn ipv6_prefixes_and_addresses_are_checked_like_ipv4() {
        let web6 = bridge("web", "blue", "10.1.0.1/24") + "gateway6 = \"fd00:1::1/64\"\n";
        let tap6 = |ip6: &str| tap("a", "web", "10.1.0.5/24") + &format!("ipv6 = \"{ip6}\"\n");
        let c = parse("t.toml", &format!("{BLUE}{web6}{}", tap6("fd00:1::5/64"))).unwrap();
        let web = &c.vpcs[0].subnets[0];
        assert_eq!(web.v6, Some(("fd00:1::1".parse().unwrap(), 64)));
        let (_, ips) = c.ports[0].endpoint().unwrap();
        assert_eq!(
            ips,
            [
                "10.1.0.5".parse::<IpAddr>().unwrap(),
                "fd00:1::5".parse().unwrap()
            ]
        );
        for (text, field, says) in [
            (
                format!("{BLUE}{web6}{}", tap6("fd00:2::5/64")),
                "port[0]",
                "outside bridge \"web\"'s subnet fd00:1::1/64",
            ),
            (
                format!("{BLUE}{web6}{}", tap6("fd00:1::1/64")),
                "port[0]",
                "the gateway's",
            ),
            (
                format!(
                    "{BLUE}{web6}{}",
                    bridge("db", "blue", "10.2.0.1/24") + "gateway6 = \"fd00:1::80/120\"\n"
                ),
                "bridge[1].gateway6",
                "overlaps bridge \"web\"'s IPv6 prefix",
            ),
            (
                "[[bridge]]\nname = \"w\"\ngateway6 = \"fd00::1/64\"\n".to_string(),
                "bridge[0].gateway6",
                "needs `vpc` and `gateway`",
            ),
            (
                format!(
                    "{BLUE}{}gateway6 = \"fe80::1/64\"\n",
                    bridge("web", "blue", "10.1.0.1/24")
                ),
                "bridge[0].gateway6",
                "like fd00:60::1/64",
            ),
        ] {
            let e = err(&text);
            assert_eq!(e.field, field, "{e}");
            assert!(e.message.contains(says), "{e}");
        }
    }

    #[test]
    fn a_vpc_groups_bridges_as_subnets_with_a_router_mac_every_host_derives_alike() {
        let c = parse(
            "t.toml",
            &format!(
                "{BLUE}[[vpc]]\nname = \"red\"\nrouter_mac = \"02:fe:00:00:00:09\"\n{}{}{}{}",
                bridge("web", "blue", "10.1.0.1/24"),
                bridge("db", "blue", "10.2.0.1/24"),
                bridge("r", "red", "10.1.0.1/24"),
                tap("a", "web", "10.1.0.5/24") + &tap("b", "r", "10.1.0.5/24"),
            ),
        )
        .unwrap();
        assert_eq!(c.vpcs.len(), 2);
        assert_eq!(c.vpcs[0].router_mac, derived_router_mac("blue"));
        assert_eq!(
            c.vpcs[0].router_mac,
            MacAddr::derived(&["vpc-router", "blue"])
        );
        assert_eq!(c.vpcs[1].router_mac.to_string(), "02:fe:00:00:00:09");
        let web = &c.vpcs[0].subnets[0];
        assert_eq!((web.bridge.as_str(), web.prefix), ("web", 24));
        assert_eq!(web.gateway, Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(c.vpcs[0].subnets[1].bridge, "db");
    }

    #[test]
    fn the_example_config_loads() {
        let c = super::super::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/vpc.toml"
        )))
        .unwrap();
        let names: Vec<_> = c.vpcs.iter().map(|v| v.subnets.len()).collect();
        assert_eq!(names, [3, 1], "shop's two subnets and its SNAT link");
        assert_eq!(
            c.vnis[0].remote_macs[0].ips,
            [Ipv4Addr::new(192, 168, 100, 2)]
        );
    }

    #[test]
    fn mistakes_name_their_field_and_line() {
        let e = err(&bridge("web", "blue", "10.1.0.1/24"));
        assert_eq!((e.line, e.field.as_str()), (3, "bridge[0].vpc"));
        assert!(e.message.contains("no [[vpc]]"), "{e}");
        let e = err(&format!("{BLUE}[[bridge]]\nname = \"w\"\nvpc = \"blue\"\n"));
        assert!(e.message.contains("needs its `gateway`"), "{e}");
        let e = err("[[bridge]]\nname = \"w\"\ngateway = \"10.1.0.1/24\"\n");
        assert_eq!(e.field, "bridge[0].gateway");
        let e = err(&format!("{BLUE}{}", bridge("w", "blue", "10.1.0.1")));
        assert_eq!((e.line, e.field.as_str()), (6, "bridge[0].gateway"));
        let e = err(&format!(
            "{BLUE}{}{}",
            bridge("w", "blue", "10.1.0.1/16"),
            bridge("d", "blue", "10.1.9.1/24")
        ));
        assert_eq!(e.field, "bridge[1].gateway");
        assert!(e.message.contains("overlaps bridge \"w\""), "{e}");
        let e = err(&format!("{BLUE}{BLUE}"));
        assert_eq!((e.line, e.field.as_str()), (4, "vpc[1].name"));
        let e = err("[[vpc]]\nname = \"v\"\nrouter_mac = \"ff:ff:ff:ff:ff:ff\"\n");
        assert_eq!(e.field, "vpc[0].router_mac");
    }

    #[test]
    fn an_address_is_one_endpoint_of_its_subnet() {
        let w = bridge("web", "blue", "10.1.0.1/24");
        let e = err(&format!("{BLUE}{w}{}", tap("a", "web", "10.9.0.5/24")));
        assert_eq!(e.field, "port[0]");
        assert!(e.message.contains("outside bridge \"web\"'s subnet"), "{e}");
        let e = err(&format!("{BLUE}{w}{}", tap("a", "web", "10.1.0.1/24")));
        assert!(e.message.contains("the gateway's"), "{e}");
        let e = err(&format!(
            "{BLUE}{w}{}{}",
            bridge("db", "blue", "10.2.0.1/24"),
            tap("a", "web", "10.1.0.5/24") + &tap("b", "web", "10.1.0.5/24")
        ));
        assert_eq!((e.field.as_str(), e.line), ("port[1]", 17));
        assert!(e.message.contains("port \"a\"'s too"), "{e}");
    }

    #[test]
    fn snat_adds_the_way_out_as_a_subnet_with_one_tap_and_checks_its_room() {
        let w = bridge("web", "blue", "10.1.0.1/24");
        let snat = "[[vpc]]\nname = \"blue\"\nsnat = true\n";
        let c = parse("t.toml", &format!("{snat}{w}")).unwrap();
        let s = c.vpcs[0].snat.as_ref().unwrap();
        assert_eq!(s.netns, "vsnat-vswitchd-blue");
        assert_eq!(
            (s.host_ip(), s.netns_ip()),
            (
                "169.254.100.1".parse().unwrap(),
                "169.254.100.2".parse().unwrap()
            )
        );
        assert_eq!(s.host_if.len(), 11, "an interface name: {}", s.host_if);
        let sub = c.vpcs[0].subnets.last().unwrap();
        assert_eq!(
            (sub.bridge.as_str(), sub.gateway, sub.prefix),
            ("blue-snat", SNAT_GATEWAY, 30)
        );
        let p = c.ports.iter().find(|p| p.name == "blue-snat").unwrap();
        assert_eq!(p.bridge.as_deref(), Some("blue-snat"));
        assert_eq!(p.endpoint().unwrap().1, [SNAT_ADDR]);
        assert!(c.bridges.iter().any(|b| b.name == "blue-snat"));

        // The VPC's subnets keep clear of the VPC side, links are unique,
        // names are free, `snat_link` needs `snat`.
        let e = err(&format!("{snat}{}", bridge("ll", "blue", "169.254.0.1/16")));
        assert_eq!((e.field.as_str(), e.line), ("vpc[0].snat", 3));
        assert!(e.message.contains("overlaps 169.254.0.1/30"), "{e}");
        let e = err(&format!(
            "{snat}snat_link = \"169.254.7.1/30\"\n[[vpc]]\nname = \"red\"\nsnat = true\nsnat_link = \"169.254.7.2/30\"\n"
        ));
        assert_eq!((e.field.as_str(), e.line), ("vpc[1].snat_link", 8));
        let e = err(&format!("{snat}snat_link = \"169.254.7.0/24\"\n"));
        assert_eq!(e.field, "vpc[0].snat_link");
        let e = err(&format!(
            "{snat}{}",
            bridge("blue-snat", "blue", "10.2.0.1/24")
        ));
        assert!(e.message.contains("rename"), "{e}");
        let e = err(&format!("{BLUE}snat_link = \"169.254.7.0/30\"\n"));
        assert!(e.message.contains("needs `snat = true`"), "{e}");
    }

    #[test]
    fn remote_stations_carry_addresses_only_in_a_vpc() {
        let up = "[[port]]\nname = \"up\"\nkind = \"ring\"\n[vtep]\nuplink = \"up\"\nip = \"10.0.0.1/24\"\n";
        let station = |ip: &str| {
            format!(
                "vni = 7\n[[bridge.remote_mac]]\nmac = \"02:00:00:00:00:07\"\nvtep = \"10.0.0.2\"\nips = [\"{ip}\"]\n"
            )
        };
        let c = parse(
            "t.toml",
            &format!(
                "{BLUE}{}{}{up}",
                bridge("web", "blue", "10.1.0.1/24"),
                station("10.1.0.7")
            ),
        )
        .unwrap();
        assert_eq!(c.vnis[0].remote_macs[0].ips, [Ipv4Addr::new(10, 1, 0, 7)]);
        let e = err(&format!(
            "[[bridge]]\nname = \"w\"\n{}{up}",
            station("10.1.0.7")
        ));
        assert_eq!(e.field, "bridge[0].remote_mac[0].ips");
        assert!(e.message.contains("needs the bridge in a VPC"), "{e}");
        let e = err(&format!(
            "{BLUE}{}{}{up}{}",
            bridge("web", "blue", "10.1.0.1/24"),
            station("10.1.0.5"),
            tap("a", "web", "10.1.0.5/24")
        ));
        assert!(e.message.contains("port \"a\"'s too"), "{e}");
    }
}
