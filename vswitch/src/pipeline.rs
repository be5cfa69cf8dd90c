//! The whole decision for a burst: a [`Pipeline`] takes the frames that
//! arrived on one port and gives each its complete fate ([`Fate`]) in a
//! worker's [`Decisions`]: dropped (and why), out of one local port, out
//! of one tunnel port, or flooded to a set of ports already admitted by
//! each one's ingress group; with the DSCP to write and, for a superframe
//! a policer cut, the segments that may leave. The worker (src/worker.rs
//! of the daemon) is left with moving mbufs where the fates say, applying
//! the edits, and counting what it sends.
//!
//! Stages, in order (see each module):
//! 1. uplink only ([`Pipeline::arrive`]): VXLAN decap classification
//!    ([`crate::overlay`]); the inner frames then come back here per
//!    tunnel port;
//! 2. the worker's flow cache ([`crate::flow_cache`]), when it has one:
//!    a burst whose every frame hits is decided from it (sessions still
//!    advanced, tunnels' MTU still checked) and goes on at 6; else the
//!    burst takes 3-5, and what they decide is cached;
//! 3. [`Switch::forward`]: port security, MAC learning and lookup, split
//!    horizon between tunnels;
//! 4. a unicast to a tunnel port must fit the underlay MTU and have a
//!    resolved next hop: what cannot leave is dropped before the groups
//!    open a session for it or a meter charges it;
//! 5. [`Security`]: security groups and sessions;
//! 6. meters, over the whole burst in frame order;
//! 7. output: a flood's set is the bridge's flood list
//!    for the ingress port (split horizon applied), each copy admitted by
//!    its port's ingress group, each tunnel copy checked like a unicast.
//!
//! Every drop decided here is counted here, on the port that caused it
//! (the ingress port, or the output port whose group, MTU or neighbour
//! refused). Nothing allocates: [`Decisions`] is sized once per worker.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::flow_cache::{CacheStats, Decision, FlowCache, Probe};
use crate::overlay::{Arrival, Overlay};
use crate::router::{Edit, Router};
use crate::security::{Scratch, Security, Via, KEEP_ALL};
use crate::stats::{DropReason, PortCounters};
use crate::switch::{Action, Frame, Switch};
use crate::types::{MacAddr, PortId, MAX_BURST};

/// The time a burst is processed at, on the workers' shared clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Now {
    /// Seconds (MAC aging, session deadlines).
    pub secs: u32,
    /// Nanoseconds (meters).
    pub ns: u64,
}

impl Now {
    /// The time `ns` nanoseconds after the epoch.
    #[inline]
    pub fn from_ns(ns: u64) -> Now {
        Now {
            secs: (ns / 1_000_000_000) as u32,
            ns,
        }
    }
}

/// Where one frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Freed; already counted.
    Drop(DropReason),
    /// Out of a local port (a NIC or the uplink).
    Local(PortId),
    /// Out of a tunnel port: encapsulated, then out of the uplink.
    Tunnel(PortId),
    /// To [`Decisions::flood_locals`] (sharing the frame) and a copy to
    /// each of [`Decisions::flood_tunnels`]; both may be empty (every
    /// copy was refused and counted on its port).
    Flood {
        /// Where its ports start in the decisions' output list.
        at: u32,
        /// How many local ports, then how many tunnel ports, follow.
        locals: u16,
        /// How many tunnel ports.
        tunnels: u16,
    },
}

/// One worker's decisions for its current burst (and the scratch the
/// stages share while deciding). Sized once: no allocation per burst.
pub struct Decisions {
    fates: [Fate; MAX_BURST],
    /// Flood sets, back to back.
    outputs: Vec<PortId>,
    /// Whether the security stage ran (else no remark, no trim).
    secured: bool,
    actions: [Action; MAX_BURST],
    scratch: Scratch,
    arrivals: [Arrival; MAX_BURST],
    /// Whether the router stage edited any frame of the burst.
    edited: bool,
    edits: [Edit; MAX_BURST],
    /// The worker's flow cache, if it has one.
    cache: Option<Box<FlowCache>>,
}

impl Default for Decisions {
    fn default() -> Self {
        Decisions {
            fates: [Fate::Drop(DropReason::NoOutput); MAX_BURST],
            // Grown by `fit` to what the topology needs.
            outputs: Vec::with_capacity(MAX_BURST * 64),
            secured: false,
            actions: [Action::Flood; MAX_BURST],
            scratch: Scratch::default(),
            arrivals: [Arrival::Host; MAX_BURST],
            edited: false,
            edits: [Edit::None; MAX_BURST],
            cache: None,
        }
    }
}

impl Decisions {
    /// A worker's decisions with a flow cache in front of the stages
    /// (see [`crate::flow_cache`]); [`Decisions::default`] has none.
    pub fn with_flow_cache() -> Decisions {
        Decisions {
            cache: Some(Box::default()),
            ..Decisions::default()
        }
    }

    /// Makes room for the flood sets of a burst through `pipeline` (a
    /// burst of frames each flooded to a whole bridge), so that deciding
    /// never allocates: called when a worker takes a new snapshot.
    pub fn fit(&mut self, pipeline: &Pipeline) {
        let need = MAX_BURST * pipeline.switch.max_flood();
        self.outputs
            .reserve(need.saturating_sub(self.outputs.len()));
    }

    /// The flow cache's counters, if there is one.
    pub fn flow_cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(|c| c.stats())
    }

    /// Frame `i`'s fate.
    #[inline]
    pub fn fate(&self, i: usize) -> Fate {
        self.fates[i]
    }

    /// Whether any frame of the burst may have a remark or a trim (the
    /// security stage ran): else [`Decisions::remark`] and
    /// [`Decisions::keep`] need not be asked per frame.
    #[inline]
    pub fn has_edits(&self) -> bool {
        self.secured
    }

    /// Whether any frame of the burst was routed or answered: else
    /// [`Decisions::edit`] need not be asked per frame.
    #[inline]
    pub fn has_router_edits(&self) -> bool {
        self.edited
    }

    /// What to write into frame `i` before it leaves (routed: MACs and
    /// TTL; answered: the reply), applied with [`Edit::apply`] before any
    /// [`Decisions::remark`].
    #[inline]
    pub fn edit(&self, i: usize) -> Edit {
        if self.edited {
            self.edits[i]
        } else {
            Edit::None
        }
    }

    /// The DSCP to write into frame `i` before it leaves (a meter's
    /// remark), if any.
    #[inline]
    pub fn remark(&self, i: usize) -> Option<u8> {
        if self.secured {
            self.scratch.remark[i]
        } else {
            None
        }
    }

    /// How many wire segments of superframe `i` may leave ([`KEEP_ALL`]:
    /// all; a policer cut the rest).
    #[inline]
    pub fn keep(&self, i: usize) -> u32 {
        if self.secured {
            self.scratch.keep[i]
        } else {
            KEEP_ALL
        }
    }

    /// The local ports flooded frame `i` goes to (empty unless flooded).
    #[inline]
    pub fn flood_locals(&self, i: usize) -> &[PortId] {
        match self.fates[i] {
            Fate::Flood { at, locals, .. } => {
                let at = at as usize;
                &self.outputs[at..at + usize::from(locals)]
            }
            _ => &[],
        }
    }

    /// The tunnel ports that get a copy of flooded frame `i`.
    #[inline]
    pub fn flood_tunnels(&self, i: usize) -> &[PortId] {
        match self.fates[i] {
            Fate::Flood {
                at,
                locals,
                tunnels,
            } => {
                let from = at as usize + usize::from(locals);
                &self.outputs[from..from + usize::from(tunnels)]
            }
            _ => &[],
        }
    }

    /// Uplink frame `i`'s arrival (after [`Pipeline::arrive`]).
    #[inline]
    pub fn arrival(&self, i: usize) -> Arrival {
        self.arrivals[i]
    }
}

/// Everything a worker decides with, in one immutable snapshot.
pub struct Pipeline {
    /// Topology, port security and MAC tables.
    pub switch: Switch,
    /// Security groups, sessions and meters.
    pub security: Security,
    /// The VXLAN tunnel endpoint, if configured.
    pub overlay: Option<Overlay>,
    /// The VPCs' routers (none by default).
    pub router: Router,
    /// Unique per snapshot in the process: what flow cache entries were
    /// decided under.
    id: u64,
}

impl Pipeline {
    /// A snapshot of these tables.
    pub fn new(switch: Switch, security: Security, overlay: Option<Overlay>) -> Pipeline {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Pipeline {
            switch,
            security,
            overlay,
            router: Router::default(),
            id: NEXT.fetch_add(1, Relaxed),
        }
    }

    /// This snapshot with `router` routing its VPCs' bridges.
    pub fn with_router(self, router: Router) -> Pipeline {
        Pipeline { router, ..self }
    }

    /// Whether `port` is the uplink of the VTEP (its bursts go through
    /// [`Pipeline::arrive`]).
    #[inline]
    pub fn is_uplink(&self, port: PortId) -> bool {
        self.overlay.as_ref().is_some_and(|o| o.uplink == port)
    }

    /// Classifies a burst received on the uplink into
    /// [`Decisions::arrival`]s (counted on the uplink).
    pub fn arrive<F: Frame>(&self, frames: &[F], counters: &[PortCounters], d: &mut Decisions) {
        let o = self.overlay.as_ref().expect("only a VTEP has an uplink");
        o.arrive(
            frames,
            &counters[o.uplink.index()],
            &mut d.arrivals[..frames.len()],
        );
    }

    /// Decides the fate of every frame of a burst received on `in_port`
    /// (a NIC, or a tunnel port for decapsulated frames), counting its
    /// receipt and every drop in `counters` (indexed by port): from the
    /// worker's flow cache when every frame hits it, else through the
    /// stages (whose decisions then refresh the cache).
    pub fn decide<F: Frame>(
        &self,
        in_port: PortId,
        frames: &[F],
        now: Now,
        counters: &[PortCounters],
        d: &mut Decisions,
    ) {
        let n = frames.len();
        d.secured = self.security.is_active();
        d.edited = false;
        let macs = self.switch.macs_of(in_port);
        // Without groups the stages cost less than a probe (no sessions,
        // no classifier; forward decides runs of a burst at once).
        let probe = match (d.cache.as_deref_mut(), macs) {
            (Some(c), Some(m)) if self.security.has_groups() => {
                c.retarget(self.id);
                c.probe(in_port, frames, now.secs, m.generation())
            }
            _ => Probe::Skipped,
        };
        let answered = probe == Probe::AllHit && self.answer(in_port, frames, now, counters, d);
        if !answered {
            if probe == Probe::AllHit {
                d.cache.as_deref_mut().expect("probed").missed(n);
            }
            let mac_gen = macs.map(|m| m.generation());
            self.stages(in_port, frames, now, counters, d);
            if probe != Probe::Skipped {
                self.remember(in_port, frames, now, mac_gen, d);
            }
        }
        if d.secured && self.security.is_metered() {
            self.security.meter(
                in_port,
                frames,
                &mut d.actions[..n],
                &mut d.scratch,
                now.ns,
                counters,
            );
        }
        let zone = self.switch.zone_of(in_port);
        d.outputs.clear();
        for (i, f) in frames.iter().enumerate() {
            d.fates[i] = match d.actions[i] {
                Action::Drop(r) => Fate::Drop(r),
                Action::Output(p) if self.switch.is_tunnel(p) => {
                    if d.secured {
                        Fate::Tunnel(p) // checked before the groups
                    } else {
                        match self.tunnel_egress(p, f, counters, KEEP_ALL) {
                            Ok(()) => Fate::Tunnel(p),
                            Err(r) => Fate::Drop(r),
                        }
                    }
                }
                Action::Output(p) => Fate::Local(p),
                Action::Reply => Fate::Local(in_port),
                Action::Flood => self.flood(in_port, zone, i, f, now, counters, d),
            };
        }
    }

    /// The stages, up to the meters: bridge, the router of a VPC's
    /// bridge, then tunnel checks and groups when any port has a group or
    /// meter.
    fn stages<F: Frame>(
        &self,
        in_port: PortId,
        frames: &[F],
        now: Now,
        counters: &[PortCounters],
        d: &mut Decisions,
    ) {
        let n = frames.len();
        self.switch.forward(
            in_port,
            frames,
            now.secs,
            &counters[in_port.index()],
            &mut d.actions,
        );
        self.route(in_port, frames, now.secs, counters, d);
        if !d.secured {
            return;
        }
        // A unicast that cannot leave by its tunnel is dropped before
        // the groups judge it (no session for what never left, no
        // tokens); without groups or meters the output pass checks it.
        if self.overlay.is_some() {
            for (f, a) in frames.iter().zip(&mut d.actions[..n]) {
                if let Action::Output(p) = *a {
                    if !self.switch.is_tunnel(p) {
                        continue;
                    }
                    if let Err(r) = self.tunnel_egress(p, f, counters, KEEP_ALL) {
                        *a = Action::Drop(r);
                    }
                }
            }
        }
        self.security.judge(
            in_port,
            self.switch.zone_of(in_port),
            frames,
            &mut d.actions,
            &mut d.scratch,
            now.secs,
            counters,
        );
    }

    /// The router stage, for a burst from a port of a VPC's bridge (see
    /// [`crate::router`]); what the bridge would flood but has nowhere to
    /// is then dropped as `no_output`, as [`Switch::forward`] does for
    /// other bridges.
    fn route<F: Frame>(
        &self,
        in_port: PortId,
        frames: &[F],
        now_secs: u32,
        counters: &[PortCounters],
        d: &mut Decisions,
    ) {
        let Some(b) = self.switch.bridge_of(in_port) else {
            return;
        };
        let Some(vpc) = self.router.vpc_of(b) else {
            return;
        };
        let n = frames.len();
        let c = &counters[in_port.index()];
        d.edited = self.router.stage(
            vpc,
            b,
            in_port,
            self.switch.is_tunnel(in_port),
            |p| self.switch.is_tunnel(p),
            frames,
            &mut d.actions[..n],
            &mut d.edits[..n],
            c,
            now_secs,
        );
        if self.switch.flood_ports(in_port).is_empty() {
            for (f, a) in frames.iter().zip(&mut d.actions[..n]) {
                if *a == Action::Flood {
                    *a = Action::Drop(DropReason::NoOutput);
                    c.drop(DropReason::NoOutput, f.wire_packets());
                }
            }
        }
    }

    /// Answers a burst whose every frame hit the flow cache, doing what
    /// the stages would have done for it (see [`crate::flow_cache`]);
    /// false, before changing anything, if a frame's session has ended
    /// since (the stages then decide).
    fn answer<F: Frame>(
        &self,
        in_port: PortId,
        frames: &[F],
        now: Now,
        counters: &[PortCounters],
        d: &mut Decisions,
    ) -> bool {
        let n = frames.len();
        let Decisions {
            cache,
            actions,
            scratch,
            secured,
            ..
        } = d;
        let c = cache.as_deref_mut().expect("probed");
        let sessions = self.security.sessions();
        let mut class = [0u16; MAX_BURST];
        for (i, k) in class[..n].iter_mut().enumerate() {
            if let Some((r, _)) = c.hit(i).0.session {
                match sessions.live(r, now.secs) {
                    Some(c) => *k = c,
                    None => return false,
                }
            }
        }
        let pc = &counters[in_port.index()];
        pc.rx_packets.add(n as u64);
        pc.rx_bytes
            .add(frames.iter().map(|f| f.frame_len() as u64).sum());
        for (i, f) in frames.iter().enumerate() {
            let (hit, proto, flags) = c.hit(i);
            actions[i] = Action::Output(hit.out);
            if !*secured {
                continue;
            }
            scratch.hit(i, class[i]);
            if hit.tunnel {
                if let Err(r) = self.tunnel_egress(hit.out, f, counters, KEEP_ALL) {
                    actions[i] = Action::Drop(r);
                    continue;
                }
            }
            // A non-TCP session's update is a no-op within the entry's
            // second (see crate::flow_cache for the 1 s bound).
            if let (Some((r, orig)), crate::flow::IPPROTO_TCP) = (hit.session, proto) {
                sessions.update(r, proto, orig, flags, now.secs);
            }
        }
        c.hits(n);
        true
    }

    /// Caches what the stages decided for the frames of a probed burst
    /// that can be cached: a unicast that passed port security and the
    /// groups by a live session or without any, from a source MAC
    /// learned on `in_port`, while no MAC changed in its bridge
    /// (`mac_gen`: the generation before the burst).
    fn remember<F: Frame>(
        &self,
        in_port: PortId,
        frames: &[F],
        now: Now,
        mac_gen: Option<u32>,
        d: &mut Decisions,
    ) {
        let Some(macs) = self.switch.macs_of(in_port) else {
            return;
        };
        let gen = macs.generation();
        if mac_gen != Some(gen) {
            return;
        }
        let c = d.cache.as_deref_mut().expect("probed");
        let mut learned: Option<(MacAddr, bool)> = None;
        for (i, f) in frames.iter().enumerate() {
            let Action::Output(out) = d.actions[i] else {
                continue;
            };
            // A routed frame's rewrite is not part of a cached decision.
            if d.edited && d.edits[i] != Edit::None {
                continue;
            }
            let session = match (d.secured, d.scratch.via[i]) {
                (false, _) | (true, Via::Plain) => None,
                (true, Via::Session { r, orig }) => Some((r, orig)),
                (true, Via::Uncached) => continue,
            };
            let src = MacAddr::from_slice(&f.data()[6..12]);
            let ok = match learned {
                Some((m, ok)) if m == src => ok,
                _ => {
                    let ok = src.is_zero() || macs.lookup(src, now.secs) == Some(in_port);
                    learned = Some((src, ok));
                    ok
                }
            };
            if ok {
                c.insert(
                    i,
                    in_port,
                    f.data(),
                    now.secs,
                    Decision {
                        out,
                        tunnel: self.switch.is_tunnel(out),
                        session,
                        mac_gen: gen,
                    },
                );
            }
        }
    }

    /// Whether `f` may leave by tunnel port `p` (else the reason, counted
    /// on `p` as the packets it carries: its first `keep` segments when a
    /// policer cut it).
    #[inline]
    fn tunnel_egress<F: Frame>(
        &self,
        p: PortId,
        f: &F,
        counters: &[PortCounters],
        keep: u32,
    ) -> Result<(), DropReason> {
        let o = self
            .overlay
            .as_ref()
            .expect("tunnel ports exist only with a VTEP");
        o.egress(p, f).inspect_err(|&r| {
            let packets = match keep {
                KEEP_ALL => f.wire_packets(),
                k => u64::from(k),
            };
            counters[p.index()].drop(r, packets);
        })
    }

    /// The flood set of frame `i`, appended to the decisions' outputs:
    /// local ports first, then tunnel ports; each copy admitted by its
    /// port's ingress group, each tunnel copy able to leave.
    #[allow(clippy::too_many_arguments)]
    fn flood<F: Frame>(
        &self,
        in_port: PortId,
        zone: u16,
        i: usize,
        f: &F,
        now: Now,
        counters: &[PortCounters],
        d: &mut Decisions,
    ) -> Fate {
        let at = d.outputs.len();
        let (mut locals, mut tunnels) = (0, 0);
        // A refused copy counts what it would have carried: the segments
        // a policer left of a superframe.
        let keep = d.keep(i);
        let packets = || match keep {
            KEEP_ALL => f.wire_packets(),
            k => u64::from(k),
        };
        // Local ports come first in the list, so the copies that pass
        // are in the outputs as [`Fate::Flood`] describes them.
        for p in self.switch.flood_ports(in_port).iter() {
            if d.secured
                && !self.security.admit_flood_copy(
                    in_port,
                    p,
                    i,
                    packets(),
                    zone,
                    &d.scratch,
                    now.secs,
                    counters,
                )
            {
                continue;
            }
            if !self.switch.is_tunnel(p) {
                debug_assert_eq!(tunnels, 0, "local ports first");
                d.outputs.push(p);
                locals += 1;
            } else if self.tunnel_egress(p, f, counters, keep).is_ok() {
                d.outputs.push(p);
                tunnels += 1;
            }
        }
        Fate::Flood {
            at: at as u32,
            locals,
            tunnels,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use acl::policer::{ColorAction, MeterConf, Policy, SharedMeter, Unit};
    use acl::{Action as AclAction, Proto, Rule};
    use etherparse::PacketBuilder;
    use vxlan::OUTER_LEN;

    use super::*;
    use crate::security::PortPolicy;
    use crate::test_support::{compiled, mac, remote, superframe, udp, Rig, VTEP};

    #[test]
    fn unicast_goes_to_its_local_or_tunnel_port() {
        let mut r = Rig::plain();
        r.learn(1, 11);
        r.learn(2, 12);
        assert_eq!(
            r.send(0, &[udp(10, mac(11), 60), udp(10, mac(12), 60)]),
            [Fate::Local(PortId(1)), Fate::Tunnel(PortId(2))]
        );
        // From one tunnel to another: never relayed.
        assert_eq!(
            r.send(5, &[udp(15, mac(12), 60)]),
            [Fate::Drop(DropReason::SplitHorizon)]
        );
        assert_eq!(r.drops(5, DropReason::SplitHorizon), 1);
        // The destination behind the sender's own port: not sent back.
        assert_eq!(
            r.send(1, &[udp(11, mac(11), 60)]),
            [Fate::Drop(DropReason::SamePort)]
        );
    }

    #[test]
    fn floods_keep_split_horizon() {
        let mut r = Rig::plain();
        let bcast = [udp(10, [0xff; 6], 60)];
        // From a NIC: the other NICs, and the tunnels of the head-end
        // replication list that can send (4's next hop is unresolved: its
        // copy is counted there), never the learned VTEP 5.
        assert!(matches!(r.send(0, &bcast)[0], Fate::Flood { .. }));
        assert_eq!(r.d.flood_locals(0), [PortId(1), PortId(3)]);
        assert_eq!(r.d.flood_tunnels(0), [PortId(2)]);
        assert_eq!(r.drops(4, DropReason::NoNeighbour), 1);
        assert_eq!(r.drops(5, DropReason::NoNeighbour), 0);
        // From a tunnel: the NICs only (every VTEP floods to the others).
        r.send(2, &[udp(12, [0xff; 6], 60)]);
        assert_eq!(r.d.flood_locals(0), [PortId(0), PortId(1), PortId(3)]);
        assert_eq!(r.d.flood_tunnels(0), []);
        // Several floods in a burst each get their own set.
        r.send(1, &[udp(11, [0xff; 6], 60), udp(11, [0xff; 6], 60)]);
        assert_eq!(r.d.flood_locals(1), [PortId(0), PortId(3)]);
        assert_eq!(r.d.flood_tunnels(1), [PortId(2)]);
    }

    #[test]
    fn a_tunnel_takes_what_fits_the_underlay_mtu_segment_by_segment() {
        let mut r = Rig::plain();
        r.learn(2, 12);
        r.learn(4, 14);
        // 1464 bytes fit once encapsulated, 1465 do not.
        assert_eq!(
            r.send(0, &[udp(10, mac(12), 1464), udp(10, mac(12), 1465)]),
            [Fate::Tunnel(PortId(2)), Fate::Drop(DropReason::MtuExceeded)]
        );
        assert_eq!(r.drops(2, DropReason::MtuExceeded), 1);
        // A superframe is judged by its segments: 54 + 1410 fit, 54 + 1411
        // do not (and its drop counts the 3 segments it carried).
        let dst = |mut f: crate::test_support::Superframe| {
            f.0[0..6].copy_from_slice(&mac(12));
            f
        };
        let fits = dst(superframe([10, 0, 0, 10], [10, 0, 0, 12], 3, 1410));
        let too_big = dst(superframe([10, 0, 0, 10], [10, 0, 0, 12], 3, 1411));
        assert_eq!(
            r.send(0, &[fits, too_big]),
            [Fate::Tunnel(PortId(2)), Fate::Drop(DropReason::MtuExceeded)]
        );
        assert_eq!(r.drops(2, DropReason::MtuExceeded), 4);
        // An unresolved next hop.
        assert_eq!(
            r.send(0, &[udp(10, mac(14), 60)]),
            [Fate::Drop(DropReason::NoNeighbour)]
        );
        // A local port has no such limit here (its NIC's MTU is the
        // container's business).
        r.learn(1, 11);
        assert_eq!(
            r.send(0, &[udp(10, mac(11), 9000)]),
            [Fate::Local(PortId(1))]
        );
    }

    #[test]
    fn each_flood_copy_meets_its_ports_ingress_group() {
        // Ports 0 and 1 accept nothing new; port 3 accepts DNS.
        let mut dns = Rule::any("dns", 1, AclAction::Allow);
        dns.proto = Proto::Udp;
        dns.dst_ports = acl::PortRange::one(53);
        let ports = vec![
            PortPolicy {
                ingress: Some(compiled("closed", vec![])),
                ..PortPolicy::default()
            },
            PortPolicy {
                ingress: Some(compiled("closed", vec![])),
                ..PortPolicy::default()
            },
            PortPolicy::default(),
            PortPolicy {
                ingress: Some(compiled("dns", vec![dns])),
                ..PortPolicy::default()
            },
        ];
        let mut r = Rig::new(ports, Vec::new());
        // To a MAC not learned yet: flooded.
        r.send(0, &[udp(10, mac(13), 60)]);
        assert_eq!(r.d.flood_locals(0), [PortId(3)]);
        assert_eq!(r.d.flood_tunnels(0), [PortId(2)]);
        assert_eq!(r.drops(1, DropReason::AclDeny), 1);
        // The copy port 3 admitted opened a session: its reply passes
        // port 0's closed group, and only the reply does.
        r.learn(0, 10);
        let mut reply = Vec::new();
        PacketBuilder::ethernet2(mac(13), mac(10))
            .ipv4([10, 0, 0, 13], [10, 0, 0, 10], 64)
            .udp(53, 1000)
            .write(&mut reply, &[0; 18])
            .unwrap();
        let mut other = reply.clone();
        other[37] = 54; // UDP source port 54: no session
        assert_eq!(
            r.send(3, &[reply, other]),
            [Fate::Local(PortId(0)), Fate::Drop(DropReason::AclDeny)]
        );
        // A burst whose every copy is refused floods to no port at all.
        let ports = vec![
            PortPolicy::default(),
            PortPolicy {
                ingress: Some(compiled("closed", vec![])),
                ..PortPolicy::default()
            },
        ];
        let mut r = Rig::new(ports, Vec::new());
        r.send(3, &[udp(13, [0xff; 6], 60)]);
        assert_eq!(r.d.flood_locals(0), [PortId(0)]);
        r.send(1, &[udp(11, [0xff; 6], 60)]);
        assert_eq!(r.d.flood_locals(0), [PortId(0), PortId(3)]);
    }

    #[test]
    fn meters_remark_and_drop_per_frame() {
        // Port 0's egress meter: one frame committed, one more excess;
        // green passes, yellow is remarked to DSCP 10, red dropped.
        let policy = Policy {
            meter: MeterConf::SrTcm {
                cir: 1,
                cbs: 1,
                ebs: 1,
            },
            unit: Unit::Packets,
            actions: [
                ColorAction::Pass,
                ColorAction::Remark(10),
                ColorAction::Drop,
            ],
        };
        let ports = vec![PortPolicy {
            egress_meter: Some(Arc::new(SharedMeter::new(policy, 0))),
            ..PortPolicy::default()
        }];
        let mut r = Rig::new(ports, Vec::new());
        r.learn(1, 11);
        let f = || udp(10, mac(11), 100);
        let fates = r.send(0, &[f(), f(), f()]);
        assert_eq!(
            fates,
            [
                Fate::Local(PortId(1)),
                Fate::Local(PortId(1)),
                Fate::Drop(DropReason::PolicerDrop)
            ]
        );
        assert_eq!(
            [r.d.remark(0), r.d.remark(1)],
            [None, Some(10)],
            "green kept, yellow remarked"
        );
        assert_eq!(r.drops(0, DropReason::PolicerDrop), 1);
    }

    #[test]
    fn uplink_frames_arrive_by_their_tunnel_port_or_go_to_the_host() {
        let r = Rig::plain();
        let o = r.pipe.overlay.as_ref().unwrap();
        let inner = udp(12, [0xff; 6], 60);
        let encap = |p: u16, from: Ipv4Addr| {
            let mut hdr = [0u8; OUTER_LEN];
            let sport = vxlan::encap::source_port(&inner);
            o.write_outer(PortId(p), sport, inner.len() as u32, 7, &mut hdr);
            // Seen from the other side: swap the addresses.
            hdr[26..30].copy_from_slice(&from.octets());
            hdr[30..34].copy_from_slice(&VTEP.octets());
            let mut f = hdr.to_vec();
            f.extend_from_slice(&inner);
            f
        };
        let mut arp = vec![0u8; 42];
        arp[0..6].fill(0xff);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        arp[38..42].copy_from_slice(&VTEP.octets());
        let mut d = Box::<Decisions>::default();
        let frames = [
            encap(2, remote(2)),
            encap(2, Ipv4Addr::new(10, 9, 0, 77)),
            arp,
            udp(1, mac(2), 60),
        ];
        r.pipe.arrive(&frames, &r.counters, &mut d);
        assert_eq!(
            (0..4).map(|i| d.arrival(i)).collect::<Vec<_>>(),
            [
                Arrival::Inner {
                    port: PortId(2),
                    inner: OUTER_LEN as u16
                },
                Arrival::Learn {
                    vni: 100,
                    remote: Ipv4Addr::new(10, 9, 0, 77)
                },
                Arrival::Host,
                Arrival::Drop(DropReason::NotForVtep),
            ]
        );
        assert_eq!(r.counters[6].rx_packets.get(), 4);
        assert_eq!(r.drops(6, DropReason::VxlanUnknownVtep), 1);
        assert_eq!(r.drops(6, DropReason::NotForVtep), 1);
        assert!(r.pipe.is_uplink(PortId(6)) && !r.pipe.is_uplink(PortId(2)));
    }
}
