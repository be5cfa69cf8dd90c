//! A VPC's way out: source NAT by the kernel, in a network namespace of
//! the VPC's own on this host, as OpenStack Neutron's L3 agent does with
//! its router namespaces.
//!
//! ```text
//!  VPC router ── TAP "vpc" 169.254.0.2/30 ─┐ netns vsnat-<prefix>-<vpc>
//!  (gateway 169.254.0.1, the router MAC)   │  routes: VPC subnets via .1,
//!                                          │  default via the host;
//!                                          │  masquerade out of "host"
//!  host: vsnXXXXXXXX <link>.1/30 ── veth ──┘ "host" <link>.2/30
//!  masquerade <link>/30 out of any other interface
//! ```
//!
//! Why the kernel's NAT and not NAT in the data path (the session table
//! could carry the translation): masquerade brings port allocation,
//! ICMP error translation, helpers and conntrack's timeouts, all long
//! proven, and egress to the outside is not the east-west path the
//! switch must make fast (a frame to the outside costs a TAP crossing
//! and two netfilter NATs; the switch's own NAT can replace this later
//! without changing the config).
//!
//! Why a namespace per VPC: VPCs may use the same addresses. Each
//! namespace has its own conntrack table, so two VPCs' identical flows
//! stay apart and each reply comes back through the namespace, hence the
//! VPC, it left by. The host sees only each VPC's link address, unique
//! on the host, which it masquerades onto its own like any routed source.
//!
//! What a container must not reach through it: the host itself (input
//! from the links is dropped in the host's table), another VPC's
//! namespace (forwarding from one link to another is dropped; each
//! namespace also drops all input and forwards from the host only what
//! answers a connection its VPC opened).
//!
//! Set up with `ip` and `nft` processes once per VPC at start, not per
//! port: a few milliseconds each, and their rulesets read as an operator
//! would write them. `net.ipv4.ip_forward` is set to 1 (replies from the
//! outside are forwarded from the host's uplink, so forwarding must be on
//! there, as on any Docker or Kubernetes node); a host whose forward
//! policy drops must accept the links' traffic itself.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::config::{Config, SnatConf, VpcConf, SNAT_GATEWAY};

/// The namespaces and host rules of every VPC's SNAT; removed on drop.
pub struct Egress {
    made: Vec<SnatConf>,
}

fn run(args: &[&str], stdin: Option<&str>) -> Result<()> {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {}", args[0]))?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `args` inside namespace `ns`.
fn run_in(ns: &str, args: &[&str], stdin: Option<&str>) -> Result<()> {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all, stdin)
}

/// The network `ip/prefix` is in, as `ip route` wants it.
fn network(ip: Ipv4Addr, prefix: u8) -> String {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    format!("{}/{prefix}", Ipv4Addr::from(u32::from(ip) & mask))
}

/// The host's nftables table of one VPC's SNAT (named as its namespace).
fn host_ruleset(s: &SnatConf) -> String {
    format!(
        "table ip {t} {{\n\
         \tchain input {{ type filter hook input priority 0; policy accept;\n\
         \t\tiifname \"{h}\" counter drop comment \"a container never reaches the host\"\n\t}}\n\
         \tchain forward {{ type filter hook forward priority 0; policy accept;\n\
         \t\tiifname \"{h}\" oifname \"vsn*\" counter drop comment \"nor another VPC's way out\"\n\t}}\n\
         \tchain postrouting {{ type nat hook postrouting priority 100; policy accept;\n\
         \t\tip saddr {link} oifname != \"{h}\" counter masquerade\n\t}}\n\
         }}\n",
        t = s.netns,
        h = s.host_if,
        link = network(s.link, crate::config::SNAT_PREFIX),
    )
}

/// The namespace's own: masquerade to the host, forward only what the
/// VPC opens and its answers, and accept nothing for itself.
const NETNS_RULESET: &str = "table ip egress {\n\
     \tchain input { type filter hook input priority 0; policy drop;\n\
     \t\tct state established,related accept\n\t}\n\
     \tchain forward { type filter hook forward priority 0; policy drop;\n\
     \t\tiifname \"vpc\" oifname \"host\" accept\n\
     \t\tiifname \"host\" oifname \"vpc\" ct state established,related accept\n\t}\n\
     \tchain postrouting { type nat hook postrouting priority 100; policy accept;\n\
     \t\toifname \"host\" masquerade\n\t}\n\
     }\n";

impl Egress {
    /// Makes every VPC's SNAT namespace, veth and rules, after removing
    /// what a crash of this instance (same DPDK file prefix) left. The
    /// TAP of each namespace is the VPC's SNAT port, which the daemon
    /// opens afterwards; then [`Egress::route`].
    pub fn prepare(cfg: &Config) -> Result<Egress> {
        remove_leftovers(&cfg.eal.file_prefix);
        let mut e = Egress { made: Vec::new() };
        for v in &cfg.vpcs {
            let Some(s) = &v.snat else { continue };
            e.made.push(s.clone());
            make(s).with_context(|| format!("VPC {:?}'s SNAT namespace {}", v.name, s.netns))?;
        }
        if !e.made.is_empty() {
            let forward = Path::new("/proc/sys/net/ipv4/ip_forward");
            if std::fs::read_to_string(forward)?.trim() != "1" {
                std::fs::write(forward, "1").context("net.ipv4.ip_forward")?;
                tracing::info!("net.ipv4.ip_forward set to 1 for the VPCs' SNAT");
            }
        }
        Ok(e)
    }

    /// Routes the VPCs' subnets from their SNAT namespaces to the router
    /// (the namespaces' TAPs, the SNAT ports, must be up).
    pub fn route(&self, vpcs: &[VpcConf]) -> Result<()> {
        for s in &self.made {
            let v = vpcs
                .iter()
                .find(|v| v.snat.as_ref() == Some(s))
                .expect("made from these VPCs");
            for sub in v.subnets.iter().filter(|sub| sub.bridge != s.port) {
                let net = network(sub.gateway, sub.prefix);
                let gw = SNAT_GATEWAY.to_string();
                run_in(
                    &s.netns,
                    &["ip", "route", "replace", &net, "via", &gw, "dev", "vpc"],
                    None,
                )
                .with_context(|| format!("VPC {:?}: route to {net}", v.name))?;
            }
        }
        Ok(())
    }
}

fn make(s: &SnatConf) -> Result<()> {
    let host = format!("{}/30", s.host_ip());
    let inside = format!("{}/30", s.netns_ip());
    run(&["ip", "netns", "add", &s.netns], None)?;
    run(
        &[
            "ip", "link", "add", &s.host_if, "type", "veth", "peer", "name", "host", "netns",
            &s.netns,
        ],
        None,
    )?;
    run(&["ip", "addr", "add", &host, "dev", &s.host_if], None)?;
    run(&["ip", "link", "set", &s.host_if, "up"], None)?;
    for args in [
        &["ip", "addr", "add", &inside, "dev", "host"][..],
        &["ip", "link", "set", "host", "up"],
        &["ip", "link", "set", "lo", "up"],
        &[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &s.host_ip().to_string(),
        ],
        &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
    ] {
        run_in(&s.netns, args, None)?;
    }
    run_in(&s.netns, &["nft", "-f", "-"], Some(NETNS_RULESET))?;
    run(&["nft", "-f", "-"], Some(&host_ruleset(s)))
}

/// Removes one VPC's SNAT: its host table, and its namespace with the
/// veth in it. Best effort (some may not exist).
fn unmake(netns: &str) {
    let _ = run(&["nft", "delete", "table", "ip", netns], None);
    let _ = run(&["ip", "netns", "del", netns], None);
}

/// Removes the SNAT namespaces (and host tables) named for DPDK file
/// prefix `file_prefix`: what a crashed instance left.
pub fn remove_leftovers(file_prefix: &str) {
    let prefix = SnatConf::netns_prefix(file_prefix);
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            unmake(&name);
        }
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        for s in &self.made {
            unmake(&s.netns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_the_network_of_a_subnet() {
        assert_eq!(
            network(Ipv4Addr::new(192, 168, 60, 254), 24),
            "192.168.60.0/24"
        );
        assert_eq!(network(Ipv4Addr::new(10, 1, 2, 3), 0), "0.0.0.0/0");
    }
}
