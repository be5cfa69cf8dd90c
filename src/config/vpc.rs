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
//! ```
//!
//! The router MAC must be the same on every host of a deployment (a
//! container keeps it in its ARP cache): derived from the VPC's name by
//! default, which every host agrees on. Endpoints are the VPC bridges'
//! NICs with their configured addresses (a TAP's `ipv4`, port security's
//! `addresses`) and the remote stations' `ips`; an address belongs to one
//! endpoint per VPC, inside its bridge's subnet, never the gateway.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::Deserialize;
use toml::Spanned;
use vswitch::MacAddr;

use super::{check_name, parse_cidr, BridgeFile, ConfigError, Ctx, PortKind, PortSpec, VniConf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VpcFile {
    name: Spanned<String>,
    router_mac: Option<Spanned<String>>,
}

/// A VPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcConf {
    /// Unique name; the same VPC has the same name on every host.
    pub name: String,
    /// Its router's MAC.
    pub router_mac: MacAddr,
    /// Its subnets, in bridge order.
    pub subnets: Vec<SubnetConf>,
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
}

impl SubnetConf {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        vxlan::host::same_subnet(ip, self.gateway, self.prefix)
    }
}

impl PortSpec {
    /// The MAC and IPv4 addresses the port's container owns, as the
    /// config says (port security's, or the TAP's): what a VPC's router
    /// routes to and what an agent publishes.
    pub fn endpoint(&self) -> Option<(MacAddr, Vec<Ipv4Addr>)> {
        let mut ips = Vec::new();
        let mut mac = None;
        if let PortKind::Tap(t) = &self.kind {
            mac = Some(t.mac);
            ips.extend(t.ipv4.map(|(ip, _)| ip));
        }
        if let Some(g) = &self.guard {
            mac = Some(g.mac);
            for a in &g.addresses {
                if let IpAddr::V4(ip) = a {
                    if !ips.contains(ip) {
                        ips.push(*ip);
                    }
                }
            }
        }
        mac.map(|m| (m, ips))
    }
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
        });
    }
    for (i, b) in bridges.iter().enumerate() {
        let b = b.get_ref();
        let f = |field: &str| format!("bridge[{i}].{field}");
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
        let s = SubnetConf {
            bridge: b.name.get_ref().clone(),
            gateway,
            prefix,
        };
        if let Some(o) = vpcs[k]
            .subnets
            .iter()
            .find(|o| o.contains(gateway) || s.contains(o.gateway))
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
    let mut owners: HashMap<(usize, Ipv4Addr), String> = HashMap::new();
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
                    "{what} is outside bridge {bridge:?}'s subnet {}/{}",
                    s.gateway, s.prefix
                ))
            } else if ip == s.gateway {
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
                if !s.contains(ip) || ip == s.gateway {
                    return Err(cx.err(
                        span,
                        field,
                        format!(
                            "{ip} is not an endpoint address of subnet {}/{}",
                            s.gateway, s.prefix
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
        assert_eq!(names, [2, 1]);
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
