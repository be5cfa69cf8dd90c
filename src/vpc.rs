//! The VPCs' routers of a datapath snapshot (see `vswitch::router`),
//! built from the config's `[[vpc]]` and VPC bridges, the ports that
//! exist (local endpoints: a NIC's configured MAC and addresses) and the
//! VTEP's tunnel ports (remote endpoints: `[[bridge.remote_mac]]` with
//! `ips`, which an agent sets with `tunnel-set`); a VPC with `snat` sends
//! what leaves it to its SNAT port (`crate::snat`).

use std::net::IpAddr;

use vswitch::router::{Endpoint, Subnet, Subnet6};
use vswitch::{BridgeId, PortId, Router, RouterBuilder, SwitchBuilder};

use crate::config::Config;
use crate::ports::Port;
use crate::vtep::Vtep;

/// Marks the VPC bridges in `b` and builds the router of every VPC;
/// `bridges` maps bridge names to their ids in `b`.
pub fn build(
    cfg: &Config,
    b: &mut SwitchBuilder,
    bridges: &[(String, BridgeId)],
    ports: &[Option<Port>],
    vtep: Option<&Vtep>,
) -> anyhow::Result<Router> {
    let id = |name: &str| {
        bridges
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
            .expect("validated bridge name")
    };
    let mut r = RouterBuilder::new();
    for v in &cfg.vpcs {
        let k = r.vpc(&v.name, v.router_mac);
        for s in &v.subnets {
            let bridge = id(&s.bridge);
            b.routed(bridge, &v.name, v.router_mac);
            r.subnet(
                k,
                Subnet {
                    bridge,
                    gateway: s.gateway,
                    prefix: s.prefix,
                },
            )?;
            if let Some((gateway, prefix)) = s.v6 {
                r.subnet6(
                    k,
                    Subnet6 {
                        bridge,
                        gateway,
                        prefix,
                    },
                )?;
            }
        }
    }
    if cfg.vpcs.is_empty() {
        return Ok(r.build(bridges.len()));
    }
    // Local endpoints first: a local NIC's address wins over a remote
    // claim of it (config validation refuses both at once anyway).
    for (i, p) in ports.iter().enumerate() {
        let Some(p) = p else { continue };
        let (Some(bridge), Some((mac, ips))) = (&p.spec.bridge, p.spec.endpoint()) else {
            continue;
        };
        let bridge = id(bridge);
        for ip in ips {
            add(
                &mut r,
                ip,
                Endpoint {
                    mac,
                    port: PortId(i as u16),
                    bridge,
                },
            );
        }
    }
    for (k, v) in cfg.vpcs.iter().enumerate() {
        if v.snat.is_some() && !r.egress(k, crate::config::SNAT_ADDR) {
            anyhow::bail!("VPC {:?}: its SNAT port is not open", v.name);
        }
    }
    if let Some(v) = vtep {
        for n in &cfg.vnis {
            let bridge = id(&n.bridge);
            for m in &n.remote_macs {
                let port = v
                    .tunnel_port(n.vni, m.vtep)
                    .expect("a tunnel port per remote_mac VTEP");
                for &ip in &m.ips {
                    add(
                        &mut r,
                        ip,
                        Endpoint {
                            mac: m.mac,
                            port,
                            bridge,
                        },
                    );
                }
            }
        }
    }
    Ok(r.build(bridges.len()))
}

/// Adds endpoint `e` with address `ip` of either family.
fn add(r: &mut RouterBuilder, ip: IpAddr, e: Endpoint) -> bool {
    match ip {
        IpAddr::V4(ip) => r.endpoint(ip, e),
        IpAddr::V6(ip) => r.endpoint6(ip, e),
    }
}
