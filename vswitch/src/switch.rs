//! Bridge domains and the L2 forwarding stage, over a burst of frames.
//!
//! A [`Switch`] is an immutable snapshot of the topology (which port is in
//! which bridge domain, each domain's flood list) plus shared handles to the
//! domains' MAC tables. The control plane builds a new snapshot for every
//! change and publishes it; workers pick it up between bursts. The MAC tables
//! outlive snapshots ([`SwitchBuilder::build`] carries them over by bridge
//! name) so a topology change does not forget what was learned.
//!
//! Forwarding rules, per bridge domain (one VPC segment):
//! - a frame's source MAC is learned against its ingress port (group and zero
//!   source MACs are never learned; a group source MAC is invalid and dropped);
//! - broadcast, multicast and unknown unicast are flooded to every other port
//!   of the domain, never back to the ingress port;
//! - known unicast goes to the learned port only; if that is the ingress port
//!   the frame is dropped (the destination is on the sender's own segment);
//! - tunnel ports (one per remote VTEP of the domain's VNI) keep split
//!   horizon: a frame that came out of a tunnel never goes into another
//!   tunnel, flooded or to a MAC learned there (every VTEP reaches the
//!   others itself; relaying would loop while their tables disagree),
//!   and a local
//!   frame is flooded only into the tunnels of the head-end replication
//!   list, not into VTEPs that were merely learned.

use std::collections::HashMap;
use std::sync::Arc;

use crate::flow::{FlowKey, ETH_P_8021AD, ETH_P_8021Q};
use crate::mac_table::{Learn, MacTable};
use crate::port_security::PortGuard;
use crate::stats::{DropReason, PortCounters};
use crate::types::{BridgeId, MacAddr, PortId, MAX_PORTS};

const ETH_HLEN: usize = 14;

/// A frame as the pipeline sees it: its bytes, starting at the Ethernet header.
/// The daemon implements it on DPDK mbufs; tests and benches on `Vec<u8>`.
pub trait Frame {
    /// The frame's bytes (first segment; headers never span segments).
    fn data(&self) -> &[u8];

    /// The frame's length, all segments (for byte counters).
    #[inline]
    fn frame_len(&self) -> usize {
        self.data().len()
    }

    /// The checksum and segmentation the frame still owes its receiver
    /// (a superframe from a TAP with offloads); none by default.
    #[inline]
    fn offload(&self) -> crate::offload::Offload {
        crate::offload::Offload::NONE
    }

    /// Packets the frame stands for on a wire: its segments if it is a
    /// superframe, else 1. Drops count these, so a dropped superframe
    /// counts as the segments it carried.
    #[inline]
    fn wire_packets(&self) -> u64 {
        u64::from(self.offload().segments(self.data().len()))
    }
}

impl Frame for Vec<u8> {
    #[inline]
    fn data(&self) -> &[u8] {
        self
    }
}

impl Frame for &[u8] {
    #[inline]
    fn data(&self) -> &[u8] {
        self
    }
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Out of one port.
    Output(PortId),
    /// To every port of [`Switch::flood_ports`] for the ingress port.
    Flood,
    /// Answered by the switch (a VPC's router: ARP, a ping to a gateway)
    /// and sent back out of the ingress port with its edit
    /// ([`crate::router`]); not judged by groups, not metered.
    Reply,
    /// Freed and counted.
    Drop(DropReason),
}

/// How a bridge domain is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConf {
    /// Unique name.
    pub name: String,
    /// Bound on learned MACs.
    pub mac_capacity: usize,
    /// Seconds a MAC entry lives without traffic.
    pub mac_aging_secs: u32,
}

/// A bridge domain in a snapshot.
#[derive(Clone)]
pub struct BridgeDomain {
    /// Its configuration.
    pub conf: BridgeConf,
    /// Member ports, in the order they were attached.
    pub ports: Vec<PortId>,
    /// Its MAC table, shared with the snapshots before and after this one.
    pub macs: Arc<MacTable>,
    /// Its session zone: the id that keeps its sessions apart from other
    /// bridges' in the shared session table. Stable for the bridge's life
    /// whatever bridges come and go around it (an index would hand a
    /// removed bridge's live sessions to the one that takes its place),
    /// and never reused for another bridge while the process runs. The
    /// bridges of a VPC share the VPC's zone.
    pub zone: u16,
    /// Whether it is a VPC's subnet (its zone is the VPC's).
    pub in_vpc: bool,
}

/// Session zones go up to here (the security stage keeps the top bit for
/// fragment tracking).
pub const MAX_ZONE: u16 = 0x7fff;

/// An immutable topology snapshot (see the module documentation).
///
/// Per-port tables are sized by the highest port id in use, not by
/// [`MAX_PORTS`]; flood lists are per bridge (two of them), not per port,
/// so a bridge of n ports costs O(n) to build and hold, not O(n²).
pub struct Switch {
    bridges: Vec<BridgeDomain>,
    /// Per bridge: its flood lists.
    floods: Vec<FloodLists>,
    port_bridge: Vec<Option<BridgeId>>,
    tunnel: Vec<bool>,
    /// Per port: its port security, if on.
    guards: Vec<Option<PortGuard>>,
    /// Per port: MACs it may have learned at a time.
    mac_limits: Vec<u32>,
    /// Per bridge: its VPC's router MAC, if it is a VPC's subnet.
    routers: Vec<Option<MacAddr>>,
    /// Each VPC's session zone, kept while the process runs.
    vpc_zones: HashMap<String, u16>,
    /// The zone the next new bridge gets.
    next_zone: u16,
}

/// Where a bridge's floods go. A frame from a local port goes to `all`
/// but its ingress port; a frame from a tunnel to `locals` (split
/// horizon). Local ports come first in `all`, then the tunnels on the
/// head-end replication list, so a flood's copies come out in that order.
#[derive(Default)]
struct FloodLists {
    all: Vec<PortId>,
    locals: Vec<PortId>,
}

/// Where a frame from one port is flooded: the ports of a list but its
/// ingress port (see [`Switch::flood_ports`]).
#[derive(Clone, Copy)]
pub struct FloodPorts<'a> {
    list: &'a [PortId],
    skip: PortId,
}

impl<'a> FloodPorts<'a> {
    /// The ports, local ones first.
    #[inline]
    pub fn iter(self) -> impl Iterator<Item = PortId> + 'a {
        let skip = self.skip;
        self.list.iter().copied().filter(move |&p| p != skip)
    }

    /// Whether the flood reaches no port.
    #[inline]
    pub fn is_empty(self) -> bool {
        self.list.iter().all(|&p| p == self.skip)
    }
}

/// Builds a [`Switch`].
#[derive(Default)]
pub struct SwitchBuilder {
    bridges: Vec<(BridgeConf, Vec<PortId>)>,
    static_macs: Vec<(BridgeId, MacAddr, PortId)>,
    /// Tunnel ports, and whether each is on its domain's flood list.
    tunnels: Vec<(PortId, bool)>,
    guards: Vec<(PortId, PortGuard)>,
    mac_limits: Vec<(PortId, u32)>,
    /// Bridges that are a VPC's subnets: the VPC's name and router MAC.
    routed: Vec<(BridgeId, String, MacAddr)>,
}

/// A topology mistake found while building a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// Two bridges with one name.
    DuplicateBridge(String),
    /// A port id beyond [`MAX_PORTS`].
    PortOutOfRange(PortId),
    /// A port attached to two bridges.
    PortInTwoBridges(PortId),
    /// A static MAC whose table bucket is full of static entries.
    NoRoomForStaticMac(MacAddr),
    /// Every session zone was handed out (bridges created over the
    /// process's life).
    NoZoneLeft,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::DuplicateBridge(n) => write!(f, "bridge {n:?} is defined twice"),
            BuildError::PortOutOfRange(p) => {
                write!(f, "port index {p} is beyond the limit of {MAX_PORTS}")
            }
            BuildError::PortInTwoBridges(p) => {
                write!(f, "port index {p} is attached to two bridges")
            }
            BuildError::NoRoomForStaticMac(m) => write!(
                f,
                "no room for static MAC {m}: its MAC-table bucket is full of static entries \
                 (raise mac_table_size)"
            ),
            BuildError::NoZoneLeft => write!(
                f,
                "{MAX_ZONE} bridges were created since start: no session zone is left (restart)"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

impl SwitchBuilder {
    /// An empty topology.
    pub fn new() -> SwitchBuilder {
        SwitchBuilder::default()
    }

    /// Adds a bridge domain and returns its id.
    pub fn bridge(&mut self, conf: BridgeConf) -> BridgeId {
        self.bridges.push((conf, Vec::new()));
        BridgeId((self.bridges.len() - 1) as u16)
    }

    /// Makes `port` a member of `bridge`.
    pub fn attach(&mut self, port: PortId, bridge: BridgeId) -> &mut Self {
        self.bridges[bridge.index()].1.push(port);
        self
    }

    /// Makes tunnel port `port` (a remote VTEP) a member of `bridge`;
    /// `flood`: local broadcast and unknown unicast are replicated to it.
    pub fn attach_tunnel(&mut self, port: PortId, bridge: BridgeId, flood: bool) -> &mut Self {
        self.tunnels.push((port, flood));
        self.attach(port, bridge)
    }

    /// Pins `mac` behind `port` in `bridge`'s MAC table (never aged or moved).
    pub fn static_mac(&mut self, bridge: BridgeId, mac: MacAddr, port: PortId) -> &mut Self {
        self.static_macs.push((bridge, mac, port));
        self
    }

    /// Turns port security on for `port` (see [`crate::port_security`]);
    /// its MAC is pinned in its bridge's table like a static MAC.
    pub fn guard(&mut self, port: PortId, guard: PortGuard) -> &mut Self {
        self.guards.push((port, guard));
        self
    }

    /// Lets `port` have at most `limit` learned MACs in its bridge's table
    /// at a time (default: no limit but the table's).
    pub fn mac_limit(&mut self, port: PortId, limit: u32) -> &mut Self {
        self.mac_limits.push((port, limit));
        self
    }

    /// Makes `bridge` a subnet of VPC `vpc` whose router answers at
    /// `router_mac` ([`crate::router`]): the bridge shares the VPC's
    /// session zone (a routed reply finds its request's session), never
    /// learns the router MAC, and hands the router stage what it floods
    /// even when it has no other port (an ARP for the gateway).
    pub fn routed(&mut self, bridge: BridgeId, vpc: &str, router_mac: MacAddr) -> &mut Self {
        self.routed.push((bridge, vpc.to_string(), router_mac));
        self
    }

    /// The snapshot. MAC tables of `previous` are carried over for bridges
    /// with the same name and table size, so learning survives the change;
    /// session zones for bridges with the same name, so sessions do.
    pub fn build(self, previous: Option<&Switch>) -> Result<Switch, BuildError> {
        let mut old: HashMap<&str, &BridgeDomain> = HashMap::new();
        let mut next_zone = 0;
        let mut vpc_zones = HashMap::new();
        if let Some(p) = previous {
            for b in &p.bridges {
                old.insert(b.conf.name.as_str(), b);
            }
            next_zone = p.next_zone;
            vpc_zones = p.vpc_zones.clone();
        }
        let mut routers = vec![None; self.bridges.len()];
        let mut vpc_of = vec![None; self.bridges.len()];
        for (b, vpc, mac) in &self.routed {
            routers[b.index()] = Some(*mac);
            vpc_of[b.index()] = Some(vpc.as_str());
        }
        let mut new_zone = || {
            if next_zone > MAX_ZONE {
                return Err(BuildError::NoZoneLeft);
            }
            next_zone += 1;
            Ok(next_zone - 1)
        };
        // Per-port tables reach the highest port id in use.
        let n_ports = self
            .bridges
            .iter()
            .flat_map(|(_, ports)| ports.iter())
            .chain(self.tunnels.iter().map(|(p, _)| p))
            .chain(self.guards.iter().map(|(p, _)| p))
            .chain(self.mac_limits.iter().map(|(p, _)| p))
            .map(|p| p.index() + 1)
            .max()
            .unwrap_or(0);
        if n_ports > MAX_PORTS {
            return Err(BuildError::PortOutOfRange(PortId((n_ports - 1) as u16)));
        }
        let mut port_bridge = vec![None; n_ports];
        let mut tunnel = vec![false; n_ports];
        let mut flood_target = vec![true; n_ports];
        for &(p, f) in &self.tunnels {
            tunnel[p.index()] = true;
            flood_target[p.index()] = f;
        }
        let mut bridges = Vec::with_capacity(self.bridges.len());
        let mut floods = Vec::with_capacity(self.bridges.len());
        let mut names = HashMap::new();
        for (i, (conf, ports)) in self.bridges.into_iter().enumerate() {
            if names.insert(conf.name.clone(), i).is_some() {
                return Err(BuildError::DuplicateBridge(conf.name));
            }
            for &p in &ports {
                let slot = &mut port_bridge[p.index()];
                if slot.is_some() {
                    return Err(BuildError::PortInTwoBridges(p));
                }
                *slot = Some(BridgeId(i as u16));
            }
            let locals: Vec<PortId> = ports
                .iter()
                .copied()
                .filter(|p| !tunnel[p.index()])
                .collect();
            let mut all = locals.clone();
            all.extend(
                ports
                    .iter()
                    .copied()
                    .filter(|p| tunnel[p.index()] && flood_target[p.index()]),
            );
            floods.push(FloodLists { all, locals });
            let before = old.get(conf.name.as_str());
            // A table that grew for its static entries (see
            // `install_statics`) stays grown.
            let macs = match before.map(|b| &b.macs) {
                Some(t)
                    if t.capacity() >= MacTable::new(conf.mac_capacity, 0).capacity()
                        && t.aging_secs() == conf.mac_aging_secs =>
                {
                    Arc::clone(t)
                }
                _ => Arc::new(MacTable::new(conf.mac_capacity, conf.mac_aging_secs)),
            };
            // A VPC's bridges share its zone; a bridge that leaves its
            // VPC takes a zone of its own.
            let zone = match (vpc_of[i], before) {
                (Some(v), _) => match vpc_zones.get(v) {
                    Some(&z) => z,
                    None => {
                        let z = new_zone()?;
                        vpc_zones.insert(v.to_string(), z);
                        z
                    }
                },
                (None, Some(b)) if !b.in_vpc => b.zone,
                (None, _) => new_zone()?,
            };
            bridges.push(BridgeDomain {
                conf,
                ports,
                macs,
                zone,
                in_vpc: vpc_of[i].is_some(),
            });
        }
        let mut mac_limits = vec![u32::MAX; n_ports];
        for (p, l) in self.mac_limits {
            mac_limits[p.index()] = l;
        }
        let mut guards = vec![None; n_ports];
        let mut statics = self.static_macs;
        for (p, g) in self.guards {
            if let Some(b) = port_bridge[p.index()] {
                statics.push((b, g.mac(), p));
            }
            guards[p.index()] = Some(g);
        }
        let mut by_bridge = vec![Vec::new(); bridges.len()];
        for (b, mac, port) in statics {
            by_bridge[b.index()].push((mac, port));
        }
        for (b, want) in bridges.iter_mut().zip(&by_bridge) {
            install_statics(b, want)?;
        }
        Ok(Switch {
            bridges,
            floods,
            port_bridge,
            tunnel,
            guards,
            mac_limits,
            routers,
            vpc_zones,
            next_zone,
        })
    }
}

/// A bridge's MAC table holds at least this many slots per static entry:
/// at a quarter full, an 8-slot bucket overflows with static entries about
/// once in 4000 buckets (Poisson, 2 per bucket on average), and a table
/// that still overflows doubles (see [`install_statics`]).
const STATIC_HEADROOM: usize = 4;

/// Makes `want` the static entries of `b`'s MAC table (which may be the
/// previous snapshot's): stations no longer configured go, the others are
/// added or moved in place (a moved station is never unknown meanwhile).
/// Remote stations an agent applies can outnumber the configured
/// `mac_table_size`: the table grows to [`STATIC_HEADROOM`] slots per
/// static entry, and doubles while a bucket has no room for one (up to
/// three times; learned entries are learned again in the new table),
/// rather than refusing a VPC's endpoints for an unlucky hash.
fn install_statics(b: &mut BridgeDomain, want: &[(MacAddr, PortId)]) -> Result<(), BuildError> {
    let aging = b.conf.mac_aging_secs;
    let need = b.conf.mac_capacity.max(want.len() * STATIC_HEADROOM);
    if b.macs.capacity() < need {
        b.macs = Arc::new(MacTable::new(need, aging));
    }
    let keep: std::collections::HashSet<MacAddr> = want.iter().map(|&(m, _)| m).collect();
    b.macs.remove_statics_except(&keep);
    for doublings in 0.. {
        match want.iter().find(|&&(m, p)| !b.macs.add_static(m, p)) {
            None => return Ok(()),
            Some(&(m, _)) if doublings == 3 => return Err(BuildError::NoRoomForStaticMac(m)),
            Some(_) => b.macs = Arc::new(MacTable::new(b.macs.capacity() * 2, aging)),
        }
    }
    unreachable!("the loop returns by its fourth turn")
}

impl Switch {
    /// The bridge domains.
    pub fn bridges(&self) -> &[BridgeDomain] {
        &self.bridges
    }

    /// The domain `port` belongs to.
    #[inline]
    pub fn bridge_of(&self, port: PortId) -> Option<BridgeId> {
        self.port_bridge.get(port.index()).copied().flatten()
    }

    /// The MAC table of `port`'s bridge, if it is in one.
    #[inline]
    pub fn macs_of(&self, port: PortId) -> Option<&MacTable> {
        self.bridge_of(port).map(|b| &*self.bridges[b.index()].macs)
    }

    /// The session zone of `port`'s bridge (0 for a port in none: its
    /// frames are dropped before sessions are looked up).
    #[inline]
    pub fn zone_of(&self, port: PortId) -> u16 {
        self.bridge_of(port)
            .map_or(0, |b| self.bridges[b.index()].zone)
    }

    /// The router MAC of `bridge`'s VPC, if it is a VPC's subnet.
    #[inline]
    pub fn router_mac(&self, bridge: BridgeId) -> Option<MacAddr> {
        self.routers.get(bridge.index()).copied().flatten()
    }

    /// Whether `port` is a tunnel port (a remote VTEP).
    #[inline]
    pub fn is_tunnel(&self, port: PortId) -> bool {
        self.tunnel.get(port.index()).copied().unwrap_or(false)
    }

    /// `port`'s port security, if on.
    pub fn guard_of(&self, port: PortId) -> Option<&PortGuard> {
        self.guards.get(port.index()).and_then(Option::as_ref)
    }

    /// Where a frame from `in_port` is flooded: the other ports of its
    /// domain, minus tunnels as split horizon requires and tunnels off the
    /// head-end replication list.
    #[inline]
    pub fn flood_ports(&self, in_port: PortId) -> FloodPorts<'_> {
        let list = match self.bridge_of(in_port) {
            Some(b) if self.is_tunnel(in_port) => &self.floods[b.index()].locals[..],
            Some(b) => &self.floods[b.index()].all[..],
            None => &[],
        };
        FloodPorts {
            list,
            skip: in_port,
        }
    }

    /// The most ports one frame can be flooded to.
    pub fn max_flood(&self) -> usize {
        self.floods.iter().map(|f| f.all.len()).max().unwrap_or(0)
    }

    /// One more than the highest port id the snapshot knows (the length
    /// of its per-port tables).
    pub fn port_count(&self) -> usize {
        self.port_bridge.len()
    }

    /// Decides the fate of a burst of frames received on `in_port` at time
    /// `now` (seconds, for MAC aging), writing one action per frame into
    /// `actions[..frames.len()]` and counting rx and drops in `counters`
    /// (the ingress port's counters of the calling worker).
    ///
    /// Learning and lookup are cached across the burst: a run of frames from
    /// one source learns once, a run to one destination looks up once.
    #[inline]
    pub fn forward<F: Frame>(
        &self,
        in_port: PortId,
        frames: &[F],
        now: u32,
        counters: &PortCounters,
        actions: &mut [Action],
    ) {
        let n = frames.len();
        let actions = &mut actions[..n];
        counters.rx_packets.add(n as u64);

        let Some(bd) = self.bridge_of(in_port) else {
            let bytes: usize = frames.iter().map(|f| f.frame_len()).sum();
            counters.rx_bytes.add(bytes as u64);
            actions.fill(Action::Drop(DropReason::NoBridge));
            counters.drop(
                DropReason::NoBridge,
                frames.iter().map(Frame::wire_packets).sum(),
            );
            return;
        };
        let macs = &*self.bridges[bd.index()].macs;
        let guard = self.guard_of(in_port);
        let mac_limit = self.mac_limits[in_port.index()];
        let from_tunnel = self.tunnel[in_port.index()];
        let router = self.routers[bd.index()];
        let flood = self.flood_action(in_port, bd);

        // The last source learned (never a group address: those are
        // dropped before, whatever their place in the burst).
        let mut last_src: Option<MacAddr> = None;
        let mut last_dst = (MacAddr::BROADCAST, flood);
        let mut learn_full = 0;
        let mut bytes = 0;
        for (f, action) in frames.iter().zip(actions.iter_mut()) {
            let d = f.data();
            bytes += f.frame_len() as u64;
            if let Err(why) = admit(guard, d) {
                *action = Action::Drop(why);
                continue;
            }
            let dst = MacAddr::from_slice(&d[0..6]);
            let src = MacAddr::from_slice(&d[6..12]);
            if Some(src) != last_src {
                if src.is_group() {
                    *action = Action::Drop(DropReason::Malformed);
                    continue;
                }
                if !src.is_zero() && Some(src) != router {
                    match macs.learn(src, in_port, now, mac_limit) {
                        Learn::Full => learn_full += 1,
                        Learn::Limit => {
                            *action = Action::Drop(DropReason::MacLimit);
                            continue;
                        }
                        _ => {}
                    }
                }
                last_src = Some(src);
            }
            if dst != last_dst.0 {
                last_dst = (
                    dst,
                    self.destination(macs, in_port, from_tunnel, dst, now, flood),
                );
            }
            *action = last_dst.1;
        }
        counters.rx_bytes.add(bytes);
        counters.learn_full.add(learn_full);
        // A dropped superframe counts the packets it carried.
        for (f, a) in frames.iter().zip(actions.iter()) {
            if let Action::Drop(r) = *a {
                counters.drop(r, f.wire_packets());
            }
        }
    }
}

impl Switch {
    /// What a bridge does with a frame from `in_port` (in bridge `bd`)
    /// it floods: flood it, or drop it when there is nowhere to flood
    /// (the router stage takes a routed bridge's floods, and drops what
    /// it leaves of them if there is nowhere to flood).
    #[inline]
    pub(crate) fn flood_action(&self, in_port: PortId, bd: BridgeId) -> Action {
        if self.flood_ports(in_port).is_empty() && self.routers[bd.index()].is_none() {
            Action::Drop(DropReason::NoOutput)
        } else {
            Action::Flood
        }
    }

    /// Where a frame from `in_port` to `dst` goes by the bridge's MAC
    /// table `macs` at second `now` (`flood`: [`Switch::flood_action`]).
    #[inline]
    pub(crate) fn destination(
        &self,
        macs: &MacTable,
        in_port: PortId,
        from_tunnel: bool,
        dst: MacAddr,
        now: u32,
        flood: Action,
    ) -> Action {
        if dst.is_group() {
            return flood;
        }
        match macs.lookup(dst, now) {
            Some(p) if p == in_port => Action::Drop(DropReason::SamePort),
            Some(p) if from_tunnel && self.is_tunnel(p) => Action::Drop(DropReason::SplitHorizon),
            Some(p) => Action::Output(p),
            None => flood,
        }
    }
}

/// Whether a frame may enter the bridge at all: an Ethernet header, port
/// security's verdict (`guard`, the ingress port's), else no more than
/// two VLAN tags (see `flow::ParseError::VlanStack`).
#[inline]
pub(crate) fn admit(guard: Option<&PortGuard>, d: &[u8]) -> Result<(), DropReason> {
    if d.len() < ETH_HLEN {
        return Err(DropReason::Malformed);
    }
    match guard {
        Some(g) => g.check(d),
        None if is_tagged(d) && FlowKey::parse_l2(d).is_err() => Err(DropReason::Malformed),
        None => Ok(()),
    }
}

/// Whether an Ethernet frame (at least a header long) carries a VLAN tag.
#[inline]
fn is_tagged(d: &[u8]) -> bool {
    let t = u16::from_be_bytes([d[12], d[13]]);
    t == ETH_P_8021Q || t == ETH_P_8021AD
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u8) -> [u8; 6] {
        [2, 0, 0, 0, 0, i]
    }

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[0..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f
    }

    fn flooded(sw: &Switch, p: PortId) -> Vec<PortId> {
        sw.flood_ports(p).iter().collect()
    }

    fn conf(name: &str) -> BridgeConf {
        BridgeConf {
            name: name.into(),
            mac_capacity: 1024,
            mac_aging_secs: 300,
        }
    }

    /// Ports 0,1,2 in "a"; 3,4 in "b"; 5 in none.
    fn two_bridges() -> Switch {
        let mut b = SwitchBuilder::new();
        let a = b.bridge(conf("a"));
        let bb = b.bridge(conf("b"));
        b.attach(PortId(0), a)
            .attach(PortId(1), a)
            .attach(PortId(2), a);
        b.attach(PortId(3), bb).attach(PortId(4), bb);
        b.build(None).unwrap()
    }

    fn run(sw: &Switch, port: u16, frames: &[Vec<u8>], now: u32) -> Vec<Action> {
        let c = PortCounters::default();
        let mut a = vec![Action::Flood; frames.len()];
        sw.forward(PortId(port), frames, now, &c, &mut a);
        a
    }

    /// Remote stations as an agent applies them: more than the configured
    /// table holds, then most of them withdrawn.
    #[test]
    fn static_stations_outgrow_the_table_and_leave_with_their_config() {
        let station = |i: u32| MacAddr::from_u64(0x02_5e_00_00_00_00 | u64::from(i));
        let build = |n: u32, previous: Option<&Switch>| {
            let mut b = SwitchBuilder::new();
            let a = b.bridge(conf("a"));
            b.attach(PortId(0), a).attach(PortId(1), a);
            for i in 0..n {
                b.static_mac(a, station(i), PortId(1));
            }
            b.build(previous).unwrap()
        };
        // 5000 stations in a table configured for 1024 entries.
        let big = build(5000, None);
        let t = &big.bridges()[0].macs;
        assert!(t.capacity() >= 5000 * STATIC_HEADROOM, "{}", t.capacity());
        assert!((0..5000).all(|i| t.lookup(station(i), 0) == Some(PortId(1))));
        // Down to 10: the table is reused (learned entries stay), the 4990
        // others are gone from it.
        let small = build(10, Some(&big));
        let t = &small.bridges()[0].macs;
        assert!(Arc::ptr_eq(t, &big.bridges()[0].macs));
        assert!((0..10).all(|i| t.lookup(station(i), 0) == Some(PortId(1))));
        assert!((10..5000).all(|i| t.lookup(station(i), 0).is_none()));
        assert_eq!(t.entries(0).len(), 10);
    }

    #[test]
    fn unknown_unicast_floods_then_learned_unicast_does_not() {
        let sw = two_bridges();
        assert_eq!(run(&sw, 0, &[frame(mac(2), mac(1))], 0), [Action::Flood]);
        assert_eq!(flooded(&sw, PortId(0)), [PortId(1), PortId(2)]);
        // Reply from port 1 goes straight to port 0, learned above.
        assert_eq!(
            run(&sw, 1, &[frame(mac(1), mac(2))], 0),
            [Action::Output(PortId(0))]
        );
        // And now 1 -> 2 is known too.
        assert_eq!(
            run(&sw, 0, &[frame(mac(2), mac(1))], 0),
            [Action::Output(PortId(1))]
        );
    }

    #[test]
    fn session_zones_follow_bridges_by_name_and_are_never_reused() {
        let first = two_bridges();
        assert_eq!((first.zone_of(PortId(0)), first.zone_of(PortId(3))), (0, 1));
        // "a" goes, "c" comes before "b": "b" keeps its zone, "c" gets a
        // new one, not "a"'s (its sessions may still be live).
        let mut b = SwitchBuilder::new();
        let c = b.bridge(conf("c"));
        let bb = b.bridge(conf("b"));
        b.attach(PortId(0), c).attach(PortId(3), bb);
        let second = b.build(Some(&first)).unwrap();
        assert_eq!(second.zone_of(PortId(3)), 1);
        assert_eq!(second.zone_of(PortId(0)), 2);
        // And "a" back later is a new bridge with a new zone.
        let mut b = SwitchBuilder::new();
        let a = b.bridge(conf("a"));
        b.attach(PortId(1), a);
        assert_eq!(b.build(Some(&second)).unwrap().zone_of(PortId(1)), 3);
    }

    #[test]
    fn broadcast_and_multicast_flood_never_back_to_ingress() {
        let sw = two_bridges();
        let bc = frame([0xff; 6], mac(1));
        let mc = frame([0x01, 0, 0x5e, 0, 0, 1], mac(1));
        assert_eq!(run(&sw, 2, &[bc, mc], 0), [Action::Flood, Action::Flood]);
        assert!(!flooded(&sw, PortId(2)).contains(&PortId(2)));
    }

    #[test]
    fn domains_are_isolated() {
        let sw = two_bridges();
        run(&sw, 0, &[frame([0xff; 6], mac(1))], 0);
        // mac(1) lives in "a": from "b" it is unknown, so flooded within "b" only.
        assert_eq!(run(&sw, 3, &[frame(mac(1), mac(9))], 0), [Action::Flood]);
        assert_eq!(flooded(&sw, PortId(3)), [PortId(4)]);
    }

    #[test]
    fn drops_are_counted_by_reason() {
        let sw = two_bridges();
        let c = PortCounters::default();
        let frames = vec![
            vec![0u8; 10],                        // truncated
            frame(mac(2), [0x01, 0, 0, 0, 0, 1]), // group source MAC
            frame(mac(7), mac(7)),                // learned on port 0 then sent to itself
        ];
        let mut a = vec![Action::Flood; 3];
        sw.forward(PortId(0), &frames, 0, &c, &mut a);
        assert_eq!(a[0], Action::Drop(DropReason::Malformed));
        assert_eq!(a[1], Action::Drop(DropReason::Malformed));
        assert_eq!(a[2], Action::Drop(DropReason::SamePort));
        assert_eq!(c.rx_packets.get(), 3);
        assert_eq!(c.rx_bytes.get(), 10 + 60 + 60);
        assert_eq!(c.drops[DropReason::Malformed as usize].get(), 2);
        assert_eq!(c.drops[DropReason::SamePort as usize].get(), 1);

        let c5 = PortCounters::default();
        let mut a = vec![Action::Flood; 1];
        sw.forward(PortId(5), &[frame(mac(1), mac(2))], 0, &c5, &mut a);
        assert_eq!(a, [Action::Drop(DropReason::NoBridge)]);
        assert_eq!(c5.drops[DropReason::NoBridge as usize].get(), 1);
    }

    #[test]
    fn a_broadcast_source_is_dropped_wherever_it_is_in_the_burst() {
        let sw = two_bridges();
        let c = PortCounters::default();
        // First of its burst, then after a good frame.
        for frames in [
            vec![frame(mac(2), [0xff; 6])],
            vec![frame(mac(2), mac(1)), frame(mac(2), [0xff; 6])],
        ] {
            let mut a = vec![Action::Flood; frames.len()];
            sw.forward(PortId(0), &frames, 0, &c, &mut a);
            assert_eq!(*a.last().unwrap(), Action::Drop(DropReason::Malformed));
        }
        assert_eq!(c.drops[DropReason::Malformed as usize].get(), 2);
    }

    #[test]
    fn a_guarded_port_cannot_take_a_neighbours_mac() {
        use crate::port_security::GuardConf;
        let mut b = SwitchBuilder::new();
        let a = b.bridge(conf("a"));
        b.attach(PortId(0), a)
            .attach(PortId(1), a)
            .attach(PortId(2), a);
        for p in [0u8, 1] {
            b.guard(
                PortId(p.into()),
                PortGuard::new(&GuardConf {
                    mac: MacAddr(mac(p + 1)),
                    addresses: vec![std::net::IpAddr::from([10, 0, 0, p + 1])],
                    ..GuardConf::default()
                }),
            );
        }
        let sw = b.build(None).unwrap();
        let c = PortCounters::default();
        let mut a = [Action::Flood];
        // Port 1 claims port 0's MAC: dropped, and port 0 keeps it.
        let mut f = frame(mac(3), mac(1));
        f[26..30].copy_from_slice(&[10, 0, 0, 2]);
        sw.forward(PortId(1), &[f], 0, &c, &mut a);
        assert_eq!(a, [Action::Drop(DropReason::Spoofed)]);
        assert_eq!(c.drops[DropReason::Spoofed as usize].get(), 1);
        // Even an unguarded port cannot move a guarded port's MAC.
        sw.forward(PortId(2), &[frame([0xff; 6], mac(1))], 0, &c, &mut a);
        assert_eq!(
            run(&sw, 2, &[frame(mac(1), mac(9))], 0),
            [Action::Output(PortId(0))]
        );
        // Three VLAN tags from an unguarded port: malformed.
        let mut three = frame(mac(1), mac(9));
        three.splice(12..12, [0x81, 0, 0, 1, 0x81, 0, 0, 1, 0x81, 0, 0, 1]);
        assert_eq!(
            run(&sw, 2, &[three], 0),
            [Action::Drop(DropReason::Malformed)]
        );
    }

    #[test]
    fn tunnels_keep_split_horizon() {
        // Local ports 0, 1; tunnels 10 and 11 on the flood list, 12 learned only.
        let mut b = SwitchBuilder::new();
        let a = b.bridge(conf("vni100"));
        b.attach(PortId(0), a).attach(PortId(1), a);
        b.attach_tunnel(PortId(10), a, true)
            .attach_tunnel(PortId(11), a, true)
            .attach_tunnel(PortId(12), a, false);
        let sw = b.build(None).unwrap();
        assert_eq!(flooded(&sw, PortId(0)), [PortId(1), PortId(10), PortId(11)]);
        assert_eq!(flooded(&sw, PortId(10)), [PortId(0), PortId(1)]);
        assert_eq!(flooded(&sw, PortId(12)), [PortId(0), PortId(1)]);
        assert!(sw.is_tunnel(PortId(12)) && !sw.is_tunnel(PortId(1)));
        // A MAC learned from tunnel 12 is reached by unicast, not flooding.
        run(&sw, 12, &[frame([0xff; 6], mac(9))], 0);
        assert_eq!(
            run(&sw, 0, &[frame(mac(9), mac(1))], 0),
            [Action::Output(PortId(12))]
        );
    }

    #[test]
    fn lone_port_floods_nowhere() {
        let mut b = SwitchBuilder::new();
        let a = b.bridge(conf("solo"));
        b.attach(PortId(0), a);
        let sw = b.build(None).unwrap();
        assert_eq!(
            run(&sw, 0, &[frame([0xff; 6], mac(1))], 0),
            [Action::Drop(DropReason::NoOutput)]
        );
    }

    #[test]
    fn aged_destination_is_flooded_again() {
        let mut b = SwitchBuilder::new();
        let a = b.bridge(BridgeConf {
            name: "a".into(),
            mac_capacity: 64,
            mac_aging_secs: 5,
        });
        b.attach(PortId(0), a).attach(PortId(1), a);
        let sw = b.build(None).unwrap();
        run(&sw, 1, &[frame([0xff; 6], mac(2))], 100);
        assert_eq!(
            run(&sw, 0, &[frame(mac(2), mac(1))], 105),
            [Action::Output(PortId(1))]
        );
        assert_eq!(run(&sw, 0, &[frame(mac(2), mac(1))], 106), [Action::Flood]);
    }

    #[test]
    fn rebuild_keeps_learned_macs_and_topology_errors_are_caught() {
        let sw = two_bridges();
        run(&sw, 1, &[frame([0xff; 6], mac(2))], 0);
        let mut b = SwitchBuilder::new();
        let a = b.bridge(conf("a"));
        b.attach(PortId(0), a).attach(PortId(1), a);
        let sw2 = b.build(Some(&sw)).unwrap();
        assert_eq!(
            run(&sw2, 0, &[frame(mac(2), mac(1))], 0),
            [Action::Output(PortId(1))]
        );

        let mut b = SwitchBuilder::new();
        let a = b.bridge(conf("a"));
        let c = b.bridge(conf("c"));
        b.attach(PortId(0), a).attach(PortId(0), c);
        assert_eq!(
            b.build(None).err(),
            Some(BuildError::PortInTwoBridges(PortId(0)))
        );
        let mut b = SwitchBuilder::new();
        b.bridge(conf("a"));
        b.bridge(conf("a"));
        assert!(matches!(b.build(None), Err(BuildError::DuplicateBridge(_))));
    }
}
