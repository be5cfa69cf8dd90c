//! The VXLAN tunnel endpoint: its control-plane state and the read-only
//! part of it that workers forward with.
//!
//! Every remote VTEP of a VNI is a tunnel port of that VNI's bridge domain
//! (ids allocated from the top of the port space, so they never collide with
//! NIC ports). Remote VTEPs come from the config (`remote_vteps`,
//! `remote_mac`) or are learned: a worker that decapsulates a frame from a
//! VTEP that is not a port yet drops it (`vxlan_unknown_vtep`) and tells the
//! control thread, which adds the port and publishes a new snapshot; the
//! VTEP's next frames are switched and their MACs learned against it. A
//! learned VTEP behind which no MAC is left (they aged out) is removed
//! again, so the port space does not fill with VTEPs long gone.
//!
//! Frames for the VTEP's own address that are not VXLAN (ARP, ICMP) are
//! punted through a bounded channel to the control thread's smoltcp host
//! ([`vxlan::host::VtepHost`]); its answers and the ARP requests resolving
//! next hops come back through another channel that workers drain onto
//! the uplink. Once a next hop's MAC is known (or changes) the snapshot is
//! rebuilt with complete outer headers; until then encap drops
//! `no_neighbour`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use vswitch::overlay::Encap;
use vswitch::{BridgeId, MacAddr, Overlay, PortId, SwitchBuilder};
use vxlan::encap::{Template, Tunnel};
use vxlan::host::VtepHost;
use vxlan::tunnels::TunnelMap;

use crate::config::{Config, VtepConf};
use crate::dpdk::mempool::PoolHandle;

/// How long a learned neighbour is trusted before it is re-resolved.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(30);
/// A learned VTEP is kept at least this long, even with no MAC behind it
/// yet (its first frames are still on their way through the new snapshot).
const LEARNED_GRACE: Duration = Duration::from_secs(10);
/// Frames waiting for the slow path, at most (an ARP storm is dropped and
/// counted as `punt_full`, never queued without bound).
const PUNT_QUEUE: usize = 1024;
/// Punts the control thread handles per turn of its loop (10 ms at most
/// between turns).
pub const PUNT_BUDGET: usize = 256;

/// What workers send the control thread.
pub enum Punt {
    /// An uplink frame for the VTEP's host stack.
    Frame(Vec<u8>),
    /// A VTEP that is not a tunnel port of `vni` sent us a frame.
    Vtep {
        /// Its VNI.
        vni: u32,
        /// Its address.
        remote: Ipv4Addr,
    },
}

/// One tunnel port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelPort {
    /// Its switch port id.
    pub port: PortId,
    /// Its VNI.
    pub vni: u32,
    /// The bridge of that VNI.
    pub bridge: String,
    /// The remote VTEP.
    pub remote: Ipv4Addr,
    /// On the bridge's head-end replication list.
    pub flood: bool,
    /// When it was learned from traffic (None: configured).
    pub learned: Option<Instant>,
}

impl TunnelPort {
    /// Its name in stats and listings.
    pub fn name(&self) -> String {
        format!("vxlan{}@{}", self.vni, self.remote)
    }
}

/// The slow path's channels as workers see them (part of the datapath
/// snapshot; the tables they decide with are the pipeline's
/// [`vswitch::Overlay`]).
pub struct VtepPath {
    /// To the slow path.
    pub punt: Sender<Punt>,
    /// From the slow path, to send on the uplink.
    pub inject: Receiver<Vec<u8>>,
    /// For tunnel copies of flooded frames and injected frames.
    pub pool: PoolHandle,
}

impl VtepPath {
    /// Punts without blocking; false if the slow path's queue is full.
    #[inline]
    pub fn punt(&self, p: Punt) -> bool {
        !matches!(self.punt.try_send(p), Err(TrySendError::Full(_)))
    }
}

/// The control thread's VTEP (see the module documentation).
pub struct Vtep {
    conf: VtepConf,
    uplink: PortId,
    uplink_mac: MacAddr,
    host: VtepHost,
    tunnels: Vec<TunnelPort>,
    punt_tx: Sender<Punt>,
    punt_rx: Receiver<Punt>,
    inject_tx: Sender<Vec<u8>>,
    inject_rx: Receiver<Vec<u8>>,
    last_resolve: Option<Instant>,
    /// The learned-VTEP cap was logged (once per start, not per punt).
    cap_reported: bool,
}

/// The lowest switch port id below `max` used by neither a NIC (`used`)
/// nor one of `tunnels` (the lowest: tables on the data path reach the
/// highest id in use).
fn free_port(tunnels: &[TunnelPort], used: &[bool], max: usize) -> Option<PortId> {
    let mut taken = vec![false; max];
    for t in tunnels {
        if let Some(x) = taken.get_mut(t.port.index()) {
            *x = true;
        }
    }
    (0..max)
        .find(|&i| !used.get(i).copied().unwrap_or(false) && !taken[i])
        .map(|i| PortId(i as u16))
}

/// Whether switch port `port` is free for a NIC: no tunnel port holds it.
pub fn free_for_nic(tunnels: &[TunnelPort], port: PortId) -> bool {
    !tunnels.iter().any(|t| t.port == port)
}

/// What handling punts changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The snapshot must be rebuilt (a tunnel port or a neighbour changed).
    pub rebuild: bool,
}

impl Vtep {
    /// The VTEP of `cfg` (None if it has none) on uplink port `uplink`
    /// whose MAC is `uplink_mac`, with tunnel ports for every configured
    /// remote VTEP. `used` marks the switch ports NICs occupy.
    pub fn new(
        cfg: &Config,
        uplink: PortId,
        uplink_mac: MacAddr,
        used: &[bool],
    ) -> anyhow::Result<Vtep> {
        let conf = cfg.vtep.clone().expect("caller checked [vtep]");
        if uplink_mac.is_group() || uplink_mac.is_zero() {
            anyhow::bail!(
                "the uplink {:?} has no unicast MAC ({uplink_mac})",
                conf.uplink
            );
        }
        let statics: Vec<(Ipv4Addr, [u8; 6])> =
            conf.neighbours.iter().map(|(ip, m)| (*ip, m.0)).collect();
        let host = VtepHost::new(
            uplink_mac.0,
            conf.ip,
            conf.prefix,
            conf.gateway,
            conf.mtu,
            &statics,
        );
        let (punt_tx, punt_rx) = crossbeam_channel::bounded(PUNT_QUEUE);
        let (inject_tx, inject_rx) = crossbeam_channel::bounded(PUNT_QUEUE);
        let mut v = Vtep {
            conf,
            uplink,
            uplink_mac,
            host,
            tunnels: Vec::new(),
            punt_tx,
            punt_rx,
            inject_tx,
            inject_rx,
            last_resolve: None,
            cap_reported: false,
        };
        v.sync(cfg, used)?;
        Ok(v)
    }

    /// Makes the tunnel ports match `cfg`: one per remote VTEP a VNI lists
    /// in `remote_vteps` (flooded to) or `remote_mac` (not); learned ones
    /// stay (and become configured when listed); configured ones no longer
    /// listed go. Returns the ports removed (the caller publishes, then
    /// flushes their MACs). On error (no port id left) nothing changed.
    pub fn sync(&mut self, cfg: &Config, used: &[bool]) -> anyhow::Result<Vec<TunnelPort>> {
        let mut want: Vec<(u32, &str, Ipv4Addr, bool)> = Vec::new();
        for n in &cfg.vnis {
            for &r in &n.remote_vteps {
                want.push((n.vni, &n.bridge, r, true));
            }
            for r in n.remote_macs.iter().map(|m| m.vtep) {
                if !want.iter().any(|w| w.0 == n.vni && w.2 == r) {
                    want.push((n.vni, &n.bridge, r, false));
                }
            }
        }
        let mut next = self.tunnels.clone();
        let mut gone = Vec::new();
        next.retain(|t| {
            let listed = want.iter().find(|w| w.0 == t.vni && w.2 == t.remote);
            let vni_kept = cfg
                .vnis
                .iter()
                .any(|n| n.vni == t.vni && n.bridge == t.bridge);
            let keep = vni_kept && (listed.is_some() || t.learned.is_some());
            if !keep {
                gone.push(t.clone());
            }
            keep
        });
        for t in &mut next {
            if let Some(w) = want.iter().find(|w| w.0 == t.vni && w.2 == t.remote) {
                t.flood = w.3;
                t.learned = None;
            }
        }
        for &(vni, bridge, remote, flood) in &want {
            if next.iter().any(|t| t.vni == vni && t.remote == remote) {
                continue;
            }
            let port = free_port(&next, used, cfg.switch.max_ports)
                .ok_or_else(|| anyhow::anyhow!("no switch port left for remote VTEP {remote}"))?;
            next.push(TunnelPort {
                port,
                vni,
                bridge: bridge.to_string(),
                remote,
                flood,
                learned: None,
            });
        }
        self.tunnels = next;
        self.last_resolve = None;
        Ok(gone)
    }

    /// The tunnel ports.
    pub fn tunnels(&self) -> &[TunnelPort] {
        &self.tunnels
    }

    /// The host stack (for listings).
    pub fn host(&self) -> &VtepHost {
        &self.host
    }

    /// The MAC of the next hop towards `remote`, if resolved.
    pub fn next_hop_mac(&self, remote: Ipv4Addr) -> Option<[u8; 6]> {
        self.host
            .next_hop(remote)
            .and_then(|h| self.host.neighbour(h))
            .map(|n| n.mac)
    }

    /// Whether the next hop towards `remote` has a MAC.
    pub fn resolved(&self, remote: Ipv4Addr) -> bool {
        self.next_hop_mac(remote).is_some()
    }

    /// Attaches the tunnel ports to their bridges in `b` and pins the
    /// configured remote stations behind them.
    pub fn attach(&self, cfg: &Config, b: &mut SwitchBuilder, bridges: &[(String, BridgeId)]) {
        let bid = |name: &str| bridges.iter().find(|(n, _)| n == name).map(|(_, id)| *id);
        for t in &self.tunnels {
            let id = bid(&t.bridge).expect("validated bridge name");
            b.attach_tunnel(t.port, id, t.flood);
        }
        for n in &cfg.vnis {
            let id = bid(&n.bridge).expect("validated bridge name");
            for m in &n.remote_macs {
                let port = self
                    .tunnel_port(n.vni, m.vtep)
                    .expect("a tunnel port per remote_mac VTEP");
                b.static_mac(id, m.mac, port);
            }
        }
    }

    /// The tunnel port to `remote` in VNI `vni`, if there is one.
    pub fn tunnel_port(&self, vni: u32, remote: Ipv4Addr) -> Option<PortId> {
        self.tunnels
            .iter()
            .find(|t| t.vni == vni && t.remote == remote)
            .map(|t| t.port)
    }

    /// The data-path tables of the VTEP, for a snapshot's pipeline.
    pub fn overlay(&self, cfg: &Config, bridges: &[(String, BridgeId)]) -> Overlay {
        let mut map = TunnelMap::new();
        let mut learn = vec![false; bridges.len()];
        for n in &cfg.vnis {
            let (_, id) = bridges
                .iter()
                .find(|(name, _)| *name == n.bridge)
                .expect("validated bridge name");
            map.add_vni(n.vni, id.0);
            learn[id.index()] = n.learn_vteps;
        }
        let top = self.tunnels.iter().map(|t| t.port.index() + 1).max();
        let mut encap = vec![None; top.unwrap_or(0)].into_boxed_slice();
        for t in &self.tunnels {
            map.add_remote(t.vni, t.remote, t.port.0);
            let mac = self.next_hop_mac(t.remote);
            encap[t.port.index()] = Some(Encap {
                template: Template::new(&Tunnel {
                    src_mac: self.uplink_mac.0,
                    dst_mac: mac.unwrap_or([0; 6]),
                    src_ip: self.conf.ip,
                    dst_ip: t.remote,
                    dst_port: self.conf.udp_port,
                    vni: t.vni,
                    ttl: self.conf.ttl,
                    df: self.conf.df,
                }),
                resolved: mac.is_some(),
            });
        }
        Overlay {
            uplink: self.uplink,
            ip: self.conf.ip,
            udp_port: self.conf.udp_port,
            // Outer IPv4 + UDP + VXLAN headers ride inside the MTU.
            max_inner: u32::from(self.conf.mtu) - 36,
            map,
            learn,
            encap,
        }
    }

    /// The slow path's channels for workers, with `pool` for the frames
    /// they copy.
    pub fn path(&self, pool: PoolHandle) -> VtepPath {
        VtepPath {
            punt: self.punt_tx.clone(),
            inject: self.inject_rx.clone(),
            pool,
        }
    }

    /// Waits up to `timeout` for punts, then handles up to
    /// [`PUNT_BUDGET`] of those queued: a flood at the VTEP's address
    /// leaves the control thread its turns for the control socket,
    /// signals and sweeps (the queue's overflow is counted `punt_full`).
    /// `used` marks the switch ports NICs occupy (for learned VTEPs).
    pub fn serve(
        &mut self,
        cfg: &Config,
        used: &[bool],
        timeout: Duration,
        wake: &Receiver<()>,
    ) -> Changes {
        let mut ch = Changes::default();
        // Also back at once when `wake` says a control client waits.
        let first = crossbeam_channel::select! {
            recv(self.punt_rx) -> p => p.ok(),
            recv(wake) -> _ => None,
            default(timeout) => None,
        };
        let now = Instant::now();
        let rx = self.punt_rx.clone();
        for p in first.into_iter().chain(rx.try_iter()).take(PUNT_BUDGET) {
            match p {
                Punt::Frame(f) => {
                    let r = self.host.receive(f, now);
                    ch.rebuild |= r.neighbours_changed;
                    for out in r.send {
                        self.inject(out);
                    }
                }
                Punt::Vtep { vni, remote } => {
                    if self.learn_vtep(cfg, used, vni, remote) {
                        ch.rebuild = true;
                        self.last_resolve = None;
                    }
                }
            }
        }
        self.resolve(now);
        ch
    }

    /// Puts back the tunnel ports [`Vtep::sync`] replaced (a publish failed).
    pub fn restore(&mut self, tunnels: Vec<TunnelPort>) {
        self.tunnels = tunnels;
    }

    fn learn_vtep(&mut self, cfg: &Config, used: &[bool], vni: u32, remote: Ipv4Addr) -> bool {
        if self
            .tunnels
            .iter()
            .any(|t| t.vni == vni && t.remote == remote)
        {
            return false;
        }
        let Some(n) = cfg.vnis.iter().find(|n| n.vni == vni && n.learn_vteps) else {
            return false;
        };
        if self.host.next_hop(remote).is_none() || remote == self.conf.ip {
            return false;
        }
        let learned = self.tunnels.iter().filter(|t| t.learned.is_some()).count();
        if learned >= usize::from(self.conf.max_learned) {
            if !self.cap_reported {
                tracing::warn!(
                    "not learning VTEP {remote} in VNI {vni}: {learned} learned VTEPs is the cap \
                     ([vtep] max_learned); list remote VTEPs in remote_vteps instead"
                );
                self.cap_reported = true;
            }
            return false;
        }
        let Some(port) = free_port(&self.tunnels, used, cfg.switch.max_ports) else {
            tracing::warn!("cannot learn VTEP {remote} in VNI {vni}: no switch port left");
            return false;
        };
        tracing::info!("learned VTEP {remote} in VNI {vni} as tunnel port {port}");
        self.tunnels.push(TunnelPort {
            port,
            vni,
            bridge: n.bridge.clone(),
            remote,
            flood: false,
            learned: Some(Instant::now()),
        });
        true
    }

    /// Drops the oldest learned VTEP (a NIC needs its switch port).
    pub fn evict_learned(&mut self) -> Option<TunnelPort> {
        let i = self
            .tunnels
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.learned.map(|at| (i, at)))
            .min_by_key(|&(_, at)| at)?
            .0;
        Some(self.tunnels.remove(i))
    }

    /// Removes learned VTEPs older than the grace period that no MAC
    /// lives behind (`has_macs`); returns the removed ones (the caller
    /// publishes a snapshot without them, then flushes their MACs).
    pub fn expire_learned(&mut self, has_macs: impl Fn(&TunnelPort) -> bool) -> Vec<TunnelPort> {
        let now = Instant::now();
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.tunnels)
            .into_iter()
            .partition(|t| {
                t.learned
                    .is_some_and(|at| now.duration_since(at) >= LEARNED_GRACE && !has_macs(t))
            });
        self.tunnels = kept;
        for t in &gone {
            tracing::info!(
                "forgot VTEP {} in VNI {}: no MAC behind it",
                t.remote,
                t.vni
            );
        }
        gone
    }

    /// Sends ARP requests for next hops that need (re-)resolving, at most
    /// once a second.
    fn resolve(&mut self, now: Instant) {
        if self
            .last_resolve
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_resolve = Some(now);
        let remotes: Vec<Ipv4Addr> = self.tunnels.iter().map(|t| t.remote).collect();
        for hop in self.host.to_resolve(remotes, now, NEIGHBOUR_REFRESH) {
            let req = self.host.arp_request(hop);
            self.inject(req);
        }
    }

    fn inject(&self, frame: Vec<u8>) {
        // A full queue means workers are not draining it; dropping an
        // answer is what a congested host does too.
        let _ = self.inject_tx.try_send(frame);
    }
}
