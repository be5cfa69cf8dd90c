//! Plumbing a TAP NIC into a container's network namespace, the way one
//! hot-plugs a NIC into a VM: the TAP is created inside the container
//! (the creating thread enters the namespace for the DPDK probe, see
//! [`Entered`]) under its final name, made persistent, and given its MAC,
//! address, MTU and default route.
//!
//! Creating it in place rather than creating it here and moving it in has
//! two consequences the multi-NIC design wants: net_tap's ioctl socket
//! lives in the container's namespace, so link state and link up/down
//! work; and a persistent TAP outlives vswitchd, so a restarted vswitchd
//! re-attaches to the same device (same probe in the same namespace) and
//! the container keeps its eth0 and addresses across the restart.
//!
//! Why `ip` (iproute2) rather than netlink from Rust: this is control-plane
//! work done once per port, iproute2's messages are what an operator knows,
//! and it avoids a netlink dependency for a handful of requests. The cost is
//! a few ms of process spawns per port.

use std::path::Path;
use std::process::Command;

use crate::config::{Netns, TapSpec};

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

/// Whether `ifname` exists inside the namespace.
pub fn has_interface(ns: &Netns, ifname: &str) -> bool {
    ip_in(ns, &["link", "show", "dev", ifname]).is_ok()
}

/// The `ip link set ... netns` argument naming a namespace.
fn netns_arg(ns: &Netns) -> String {
    match ns {
        Netns::Name(n) => n.clone(),
        Netns::Pid(p) => p.to_string(),
    }
}

fn check_free(spec: &TapSpec) -> Result<(), NetnsError> {
    check_exists(&spec.netns)?;
    if has_interface(&spec.netns, &spec.ifname) {
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

/// Sets or clears the persist flag of TAP `ifname` in the calling thread's
/// namespace: a persistent TAP outlives the descriptors DPDK holds (so a
/// restart finds it), a cleared one vanishes with them.
pub fn set_persist(ifname: &str, on: bool) -> Result<(), NetnsError> {
    use std::os::fd::AsRawFd;
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
    const IFF_TAP: libc::c_short = 0x0002;
    const IFF_NO_PI: libc::c_short = 0x1000;
    const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
    let fail = |e: std::io::Error| NetnsError::Command {
        cmd: format!("TUNSETPERSIST {ifname} {}", u8::from(on)),
        stderr: e.to_string(),
    };
    // struct ifreq: the name, then the flags (a union of 24 bytes).
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    let n = ifname.len().min(libc::IFNAMSIZ - 1);
    req.name[..n].copy_from_slice(&ifname.as_bytes()[..n]);
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(fail)?;
    // net_tap opens its TAPs multi-queue; attaching needs the same flags.
    for flags in [IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE, IFF_TAP | IFF_NO_PI] {
        req.flags = flags;
        // SAFETY: TUNSETIFF reads and writes the ifreq we own.
        if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req) } == 0 {
            // SAFETY: TUNSETPERSIST takes an int argument.
            if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETPERSIST, libc::c_ulong::from(on)) } != 0
            {
                return Err(fail(std::io::Error::last_os_error()));
            }
            return Ok(());
        }
    }
    Err(fail(std::io::Error::last_os_error()))
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

/// Configures interface `dev`, already inside `spec.netns`, as `spec` says:
/// name, MAC, MTU, address, up, default route.
fn configure(dev: &str, spec: &TapSpec) -> Result<(), NetnsError> {
    let ns = &spec.netns;
    ip_in(ns, &["link", "set", "dev", dev, "down"])?;
    if dev != spec.ifname {
        ip_in(ns, &["link", "set", "dev", dev, "name", &spec.ifname])?;
    }
    let dev = spec.ifname.as_str();
    if let Some(mac) = spec.mac {
        ip_in(
            ns,
            &["link", "set", "dev", dev, "address", &mac.to_string()],
        )?;
    }
    ip_in(
        ns,
        &["link", "set", "dev", dev, "mtu", &spec.mtu.to_string()],
    )?;
    if let Some((addr, len)) = spec.ipv4 {
        ip_in(
            ns,
            &["addr", "replace", &format!("{addr}/{len}"), "dev", dev],
        )?;
    }
    ip_in(ns, &["link", "set", "dev", dev, "up"])?;
    if let Some(gw) = spec.gateway {
        ip_in(
            ns,
            &[
                "route",
                "replace",
                "default",
                "via",
                &gw.to_string(),
                "dev",
                dev,
            ],
        )?;
    }
    Ok(())
}

/// Whether a host interface exists (for af-packet/af-xdp ports).
pub fn host_interface_exists(iface: &str) -> bool {
    Path::new("/sys/class/net").join(iface).exists()
}
