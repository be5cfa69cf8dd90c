//! The VTEP's part of the data path: which uplink frames are VXLAN for
//! us and which tunnel port each enters the switch by, and what a frame
//! switched to a tunnel port needs to leave (its outer headers, an
//! underlay MTU it fits, a resolved next hop).
//!
//! The control thread's VTEP (src/vtep.rs of the daemon) owns the tunnel
//! ports, the host stack and next-hop resolution; it builds an
//! [`Overlay`] into every snapshot. Header views, the decap rules and the
//! encap template are the `vxlan` crate's; this module only turns them
//! into per-frame decisions with drop reasons.

use std::net::Ipv4Addr;

use vxlan::decap::{decap, for_host, Decap, DecapError};
use vxlan::encap::Template;
use vxlan::tunnels::{Lookup, TunnelMap};
use vxlan::OUTER_LEN;

use crate::flow::{ETH_P_8021AD, ETH_P_8021Q};
use crate::stats::{DropReason, PortCounters};
use crate::switch::Frame;
use crate::types::PortId;

/// Per tunnel port: its outer headers and whether they can be sent.
#[derive(Debug, Clone, Copy)]
pub struct Encap {
    /// The outer headers (their destination MAC valid only if `resolved`).
    pub template: Template,
    /// The next hop's MAC is known.
    pub resolved: bool,
}

/// What workers need of the VTEP, in one snapshot.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// The uplink's switch port.
    pub uplink: PortId,
    /// Our VTEP address.
    pub ip: Ipv4Addr,
    /// Our VXLAN UDP port.
    pub udp_port: u16,
    /// Largest inner frame (Ethernet header included) that fits the
    /// underlay MTU once encapsulated.
    pub max_inner: u32,
    /// Decap lookup.
    pub map: TunnelMap,
    /// Per bridge index: whether it learns remote VTEPs.
    pub learn: Vec<bool>,
    /// Per switch port up to the highest tunnel port: its encap, for
    /// tunnel ports.
    pub encap: Box<[Option<Encap>]>,
}

/// What becomes of a frame received on the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// VXLAN for tunnel port `port`: switched as if received there once
    /// the outer headers (the first `inner` bytes) are stripped.
    Inner {
        /// The tunnel port of the sending VTEP.
        port: PortId,
        /// Where the inner Ethernet frame starts.
        inner: u16,
    },
    /// ARP or IP for the VTEP's own address: for the slow path's host
    /// stack (the worker rate-limits what it punts).
    Host,
    /// VXLAN from a VTEP that is not a tunnel port of its VNI yet, in a
    /// VNI that learns VTEPs: dropped (counted `vxlan_unknown_vtep`), and
    /// the worker reports the VTEP to the slow path.
    Learn {
        /// The VNI.
        vni: u32,
        /// The sending VTEP.
        remote: Ipv4Addr,
    },
    /// Dropped, and counted on the uplink.
    Drop(DropReason),
}

/// Whether the inner frame at `at` of a VXLAN packet carries a VLAN tag:
/// RFC 7348 (section 6.1) has a VTEP drop such frames unless configured
/// for them, and vswitchd's segments are untagged.
#[inline]
fn inner_tagged(d: &[u8], at: usize) -> bool {
    d.get(at + 12..at + 14).is_some_and(|t| {
        let t = u16::from_be_bytes([t[0], t[1]]);
        t == ETH_P_8021Q || t == ETH_P_8021AD
    })
}

/// The longest frame `f` puts on a wire: a superframe's largest segment,
/// else the frame.
#[inline]
pub fn wire_frame_len<F: Frame>(f: &F) -> u32 {
    let len = f.frame_len() as u32;
    match f.offload().gso {
        Some(g) => len.min(u32::from(g.hdr_len) + u32::from(g.size)),
        None => len,
    }
}

impl Overlay {
    /// Classifies a burst received on the uplink into `out[..frames.len()]`,
    /// counting it received on the uplink (`counters`) and its drops.
    pub fn arrive<F: Frame>(&self, frames: &[F], counters: &PortCounters, out: &mut [Arrival]) {
        counters.rx_packets.add(frames.len() as u64);
        counters
            .rx_bytes
            .add(frames.iter().map(|f| f.frame_len() as u64).sum());
        // A burst usually comes from one VTEP: look it up once.
        let mut last: Option<(u32, Ipv4Addr, Lookup)> = None;
        for (f, a) in frames.iter().zip(out.iter_mut()) {
            let d = f.data();
            *a = match decap(d, self.ip, self.udp_port) {
                Decap::Tunnel(o) => {
                    let l = match last {
                        Some((vni, ip, l)) if vni == o.vni && ip == o.src_ip => l,
                        _ => {
                            let l = self.map.lookup(o.vni, o.src_ip);
                            last = Some((o.vni, o.src_ip, l));
                            l
                        }
                    };
                    match l {
                        Lookup::Port(_) if inner_tagged(d, o.inner_offset) => {
                            Arrival::Drop(DropReason::VxlanInnerVlan)
                        }
                        Lookup::Port(p) => Arrival::Inner {
                            port: PortId(p),
                            inner: o.inner_offset as u16,
                        },
                        Lookup::UnknownRemote(b) if self.learn[usize::from(b)] => Arrival::Learn {
                            vni: o.vni,
                            remote: o.src_ip,
                        },
                        Lookup::UnknownRemote(_) => Arrival::Drop(DropReason::VxlanUnknownVtep),
                        Lookup::UnknownVni => Arrival::Drop(DropReason::VxlanUnknownVni),
                    }
                }
                Decap::NotOurs if for_host(d, self.ip) => Arrival::Host,
                Decap::NotOurs => Arrival::Drop(DropReason::NotForVtep),
                Decap::Bad(DecapError::Truncated) => Arrival::Drop(DropReason::VxlanTruncated),
                Decap::Bad(DecapError::BadIpHeader) => Arrival::Drop(DropReason::VxlanBadIp),
                Decap::Bad(DecapError::Fragment) => Arrival::Drop(DropReason::VxlanFragment),
                Decap::Bad(DecapError::BadFlags) => Arrival::Drop(DropReason::VxlanBadFlags),
            };
            match *a {
                Arrival::Drop(r) => counters.drop(r, 1),
                Arrival::Learn { .. } => counters.drop(DropReason::VxlanUnknownVtep, 1),
                _ => {}
            }
        }
    }

    /// Whether `f` can leave by tunnel port `p`: it (each of its segments,
    /// for a superframe) fits the underlay MTU once encapsulated, and the
    /// next hop is resolved.
    #[inline]
    pub fn egress<F: Frame>(&self, p: PortId, f: &F) -> Result<(), DropReason> {
        if wire_frame_len(f) > self.max_inner {
            Err(DropReason::MtuExceeded)
        } else if !self
            .encap
            .get(p.index())
            .and_then(Option::as_ref)
            .is_some_and(|e| e.resolved)
        {
            Err(DropReason::NoNeighbour)
        } else {
            Ok(())
        }
    }

    /// Writes the outer headers of tunnel port `p` for an inner frame of
    /// `inner_len` bytes (all segments) into `out` (in place, in the
    /// frame's headroom), with UDP source port `sport`
    /// (`vxlan::encap::source_port` of the inner frame) and outer IPv4
    /// identification `ip_id`.
    #[inline]
    pub fn write_outer(
        &self,
        p: PortId,
        sport: u16,
        inner_len: u32,
        ip_id: u16,
        out: &mut [u8; OUTER_LEN],
    ) {
        let e = self.encap[p.index()]
            .as_ref()
            .expect("a tunnel port has its encap");
        e.template.write(out, inner_len as usize, sport, ip_id);
    }
}
