//! Plumbing a TAP NIC into a container's network namespace, the way one
//! hot-plugs a NIC into a VM: the TAP is created inside the container
//! (the creating thread enters the namespace to open it, see
//! [`Entered`]) under its final name, made persistent, and given its MAC,
//! address, MTU and default route.
//!
//! Creating it in place rather than creating it here and moving it in
//! means the name never clashes with a host interface, and a persistent
//! TAP outlives vswitchd, so a restarted vswitchd re-attaches to the same
//! device (same name in the same namespace) and the container keeps its
//! eth0 and addresses across the restart.
//!
//! The configuration goes through rtnetlink from a socket opened inside
//! the container (see `rtnl`: a port add used to spend 25 ms in `ip`
//! processes); errors name the equivalent `ip` command, which is what an
//! operator knows. Moving a NIC between containers (rare) still runs `ip`.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use crate::config::{Netns, TapSpec};
use crate::rtnl::{LinkChange, Rtnl};

/// A plumbing step failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace does not exist.
    #[error("{0} does not exist: create it first (`ip netns add NAME`) or start the container")]
    Missing(Netns),
    /// The container already has an interface of that name.
    #[error(
        "{netns} already has an interface named {ifname:?}: choose another `ifname` or remove it"
    )]
    NameTaken {
        /// Namespace.
        netns: Netns,
        /// Interface name.
        ifname: String,
    },
    /// An `ip` command failed.
    #[error("`{cmd}` failed: {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// What it printed.
        stderr: String,
    },
}

/// Fails unless the namespace exists.
pub fn check_exists(ns: &Netns) -> Result<(), NetnsError> {
    if ns.path().exists() {
        Ok(())
    } else {
        Err(NetnsError::Missing(ns.clone()))
    }
}

fn run(args: &[&str]) -> Result<String, NetnsError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| NetnsError::Command {
            cmd: args.join(" "),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(NetnsError::Command {
            cmd: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip ARGS` inside the namespace.
fn ip_in(ns: &Netns, args: &[&str]) -> Result<String, NetnsError> {
    let net = format!("--net={}", ns.path().display());
    let mut full = vec!["nsenter", net.as_str(), "ip"];
    full.extend_from_slice(args);
    run(&full)
}

/// The `ip link set ... netns` argument naming a namespace.
fn netns_arg(ns: &Netns) -> String {
    match ns {
        Netns::Name(n) => n.clone(),
        Netns::Pid(p) => p.to_string(),
        // `ip` opens a name with a `/` as the namespace's file.
        Netns::Path(p) => p.display().to_string(),
    }
}

fn check_free(spec: &TapSpec) -> Result<(), NetnsError> {
    check_exists(&spec.netns)?;
    if interface_exists(&spec.netns, &spec.ifname) {
        return Err(NetnsError::NameTaken {
            netns: spec.netns.clone(),
            ifname: spec.ifname.clone(),
        });
    }
    Ok(())
}

/// The calling thread inside another network namespace until dropped
/// (then back in the one it came from). Only the calling thread moves:
/// workers and other threads are unaffected.
pub struct Entered {
    home: std::fs::File,
}

/// Moves the calling thread into `ns`.
pub fn enter(ns: &Netns) -> Result<Entered, NetnsError> {
    use std::os::fd::AsRawFd;
    let fail = |what: &str, e: std::io::Error| NetnsError::Command {
        cmd: format!("setns {what}"),
        stderr: e.to_string(),
    };
    let home = std::fs::File::open("/proc/thread-self/ns/net").map_err(|e| fail("(own)", e))?;
    let target = std::fs::File::open(ns.path()).map_err(|_| NetnsError::Missing(ns.clone()))?;
    // SAFETY: setns on a valid namespace fd; it only changes this thread's
    // network namespace.
    if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(fail(&ns.to_string(), std::io::Error::last_os_error()));
    }
    Ok(Entered { home })
}

impl Drop for Entered {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: as in `enter`, back to the namespace the thread was in.
        let r = unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "cannot return to vswitchd's network namespace");
    }
}

/// Configures a TAP created in its container (see the module documentation).
pub fn plumb(spec: &TapSpec) -> Result<(), NetnsError> {
    configure(&spec.ifname, spec)
}

/// Moves a container's NIC (as `from` describes it) into another
/// container (as `to` does), where it gets `to`'s name, address, MTU and
/// route; its MAC goes with the device. Moving flushes the NIC's addresses,
/// hence the full configuration. If that fails, the NIC is put back.
pub fn move_nic(from: &TapSpec, to: &TapSpec) -> Result<(), NetnsError> {
    check_free(to)?;
    ip_in(
        &from.netns,
        &[
            "link",
            "set",
            "dev",
            &from.ifname,
            "netns",
            &netns_arg(&to.netns),
        ],
    )?;
    configure(&from.ifname, to).inspect_err(|_| {
        let back = ip_in(
            &to.netns,
            &[
                "link",
                "set",
                "dev",
                &from.ifname,
                "netns",
                &netns_arg(&from.netns),
            ],
        )
        .or_else(|_| {
            ip_in(
                &to.netns,
                &[
                    "link",
                    "set",
                    "dev",
                    &to.ifname,
                    "netns",
                    &netns_arg(&from.netns),
                ],
            )
        });
        if back.is_ok() {
            let _ = configure(&from.ifname, from).or_else(|_| configure(&to.ifname, from));
        }
    })
}

/// The TAP's `gso_max_size`: the kernel builds no superframe longer, so
/// each fits one mbuf of the TAP pool (65,407 bytes of frame) with room
/// for an Ethernet header and VLAN tags.
pub const TAP_GSO_MAX_SIZE: u32 = 65_000;

/// Configures interface `dev`, already inside `spec.netns`, as `spec` says:
/// name, MAC, MTU, superframe size, address, up, default route. Through
/// rtnetlink (see `rtnl`): five requests on a socket opened inside the
/// namespace, no process.
fn configure(dev: &str, spec: &TapSpec) -> Result<(), NetnsError> {
    let ns = &spec.netns;
    let fail = |what: String| {
        move |e: std::io::Error| NetnsError::Command {
            cmd: format!("{what} (netlink, in {ns})"),
            stderr: e.to_string(),
        }
    };
    let mut nl = {
        let _inside = enter(ns)?;
        Rtnl::open().map_err(fail("opening a NETLINK_ROUTE socket".into()))?
    };
    let index = nl
        .link_index(dev)
        .map_err(fail(format!("ip link show dev {dev}")))?
        .ok_or_else(|| NetnsError::Command {
            cmd: format!("ip link show dev {dev} (netlink, in {ns})"),
            stderr: "no such interface".into(),
        })?;
    let down = LinkChange {
        up: Some(false),
        ..LinkChange::default()
    };
    nl.set_link(index, &down)
        .map_err(fail(format!("ip link set dev {dev} down")))?;
    let name = (dev != spec.ifname).then_some(spec.ifname.as_str());
    let shape = LinkChange {
        name,
        mac: Some(spec.mac),
        mtu: Some(u32::from(spec.mtu)),
        gso_max_size: Some(TAP_GSO_MAX_SIZE),
        up: None,
    };
    nl.set_link(index, &shape).map_err(fail(format!(
        "ip link set dev {dev} name {} address {} mtu {} gso_max_size {TAP_GSO_MAX_SIZE}",
        spec.ifname, spec.mac, spec.mtu
    )))?;
    let dev = spec.ifname.as_str();
    let v4 = spec.ipv4.map(|(a, len)| (a.into(), len));
    let v6 = spec.ipv6.map(|(a, len)| (a.into(), len));
    for (addr, len) in v4.into_iter().chain(v6) {
        nl.replace_address(index, addr, len).map_err(|e| {
            let e = match e.raw_os_error() {
                Some(libc::EACCES) if addr.is_ipv6() => std::io::Error::other(
                    "IPv6 is disabled in the container's namespace \
                     (net.ipv6.conf.default.disable_ipv6 = 1)",
                ),
                _ => e,
            };
            fail(format!("ip addr replace {addr}/{len} dev {dev}"))(e)
        })?;
    }
    let up = LinkChange {
        up: Some(true),
        ..LinkChange::default()
    };
    nl.set_link(index, &up)
        .map_err(fail(format!("ip link set dev {dev} up")))?;
    let gateways = spec.gateway.map(IpAddr::V4).into_iter();
    for gw in gateways.chain(spec.gateway6.map(IpAddr::V6)) {
        nl.replace_default_route(index, gw)
            .map_err(fail(format!("ip route replace default via {gw} dev {dev}")))?;
    }
    Ok(())
}

/// Whether interface `ifname` exists inside `ns` (false if `ns` does not).
pub fn interface_exists(ns: &Netns, ifname: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(ifname) else {
        return false;
    };
    let Ok(_inside) = enter(ns) else {
        return false;
    };
    // SAFETY: a NUL-terminated name; if_nametoindex opens its own socket,
    // in the namespace this thread just entered.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

/// Whether a host interface exists (for af-packet/af-xdp ports).
pub fn host_interface_exists(iface: &str) -> bool {
    Path::new("/sys/class/net").join(iface).exists()
}
