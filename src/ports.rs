//! Port kinds: from a config [`PortSpec`] to a started DPDK port, and back.
//!
//! A container's NIC is vswitchd's own: a TAP (see `tap`) or a vhost-user
//! socket served through DPDK's vhost library (see `dpdk::vhost`); neither
//! takes an ethdev slot. Other kinds except PCI are virtual devices
//! hot-plugged with `rte_dev_probe`, which is also how ports are added at
//! run time. Each ethdev gets one tx queue per worker, so workers never
//! share a tx queue and never lock.

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::config::{PortKind, PortSpec};
use crate::datapath::{tx_queue_map, TxLock, TxLocks, TxTarget};
use crate::dpdk::mempool::Mempool;
use crate::dpdk::port::{EthPort, EthStats, PortError};
use crate::dpdk::vhost::{GuestOffloads, VhostPort};
use crate::netns::{self, NetnsError};
use crate::tap::TapDevice;

/// Why a port could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// DPDK refused.
    #[error(transparent)]
    Dpdk(#[from] PortError),
    /// Moving a TAP into its container failed.
    #[error("port {port:?}: {source}")]
    Netns {
        /// Port name.
        port: String,
        /// Cause.
        source: NetnsError,
    },
    /// Something on the machine is not as the config expects.
    #[error("port {port:?}: {message}")]
    Preflight {
        /// Port name.
        port: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// A running port.
pub struct Port {
    /// Its configuration.
    pub spec: PortSpec,
    /// What carries its frames.
    pub io: PortIo,
    /// Its TAP was created by this open, not re-attached after a restart.
    fresh: bool,
    /// Per tx queue, for a port whose workers may share queues (see
    /// `datapath::TxLock`).
    tx_locks: Option<TxLocks>,
    /// Its tx queues: one per worker, or fewer if the device has fewer.
    tx_queues: u16,
    /// Workers of the switch (each sends on one of its tx queues).
    n_workers: usize,
}

/// What carries a port's frames: a DPDK ethdev, vswitchd's own TAP (see
/// `tap` for why TAPs are not ethdevs), or a vhost-user socket of the
/// vhost library (see `dpdk::vhost`).
pub enum PortIo {
    /// An ethdev (vdev or PCI).
    Eth(EthPort),
    /// A TAP device with its queue fds.
    Tap(TapDevice),
    /// A vhost-user socket.
    Vhost(VhostPort),
}

/// The vdev devargs for a port; None for PCI (probed by EAL at start),
/// TAP and vhost-user (not ethdevs).
///
/// The device is named by a number unique in this process, not by the
/// port's name: PMDs derive internal object names from it within small
/// limits, and port names may be 32 characters long.
pub fn devargs(spec: &PortSpec, n_workers: usize) -> Option<String> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let queues = usize::from(spec.rx_queues).max(n_workers);
    Some(match &spec.kind {
        PortKind::AfPacket { iface } => {
            format!("net_af_packet_{name},iface={iface},qpairs={queues}")
        }
        PortKind::AfXdp { iface, queue } => {
            format!(
                "net_af_xdp_{name},iface={iface},start_queue={queue},queue_count={}",
                spec.rx_queues
            )
        }
        PortKind::Pcap {
            rx_pcap,
            tx_pcap,
            infinite_rx,
        } => {
            let mut s = format!("net_pcap_{name}");
            if let Some(rx) = rx_pcap {
                s.push_str(&format!(",rx_pcap={}", rx.display()));
            }
            if let Some(tx) = tx_pcap {
                s.push_str(&format!(",tx_pcap={}", tx.display()));
            }
            if *infinite_rx {
                s.push_str(",infinite_rx=1");
            }
            s
        }
        PortKind::Null { size, no_rx } => {
            format!("net_null_{name},size={size},no-rx={}", u8::from(*no_rx))
        }
        PortKind::Ring => format!("net_ring_{name}"),
        PortKind::Pci { .. } | PortKind::Tap(_) | PortKind::VhostUser { .. } => return None,
    })
}

/// Checks what a port needs from the machine before DPDK starts, so the
/// operator gets a message about the config rather than a PMD error.
pub fn preflight(spec: &PortSpec) -> Result<(), SetupError> {
    let fail = |message: String| SetupError::Preflight {
        port: spec.name.clone(),
        message,
    };
    match &spec.kind {
        PortKind::Tap(t) => netns::check_exists(&t.netns).map_err(|source| SetupError::Netns {
            port: spec.name.clone(),
            source,
        })?,
        PortKind::VhostUser {
            socket,
            client: false,
        } => {
            claim_socket_path(socket).map_err(fail)?;
        }
        PortKind::AfPacket { iface } | PortKind::AfXdp { iface, .. }
            if !netns::host_interface_exists(iface) =>
        {
            return Err(fail(format!(
                "interface {iface:?} does not exist on the host"
            )));
        }
        PortKind::Pcap {
            rx_pcap: Some(f), ..
        } if !f.exists() => {
            return Err(fail(format!("rx_pcap file {} does not exist", f.display())));
        }
        _ => {}
    }
    Ok(())
}

/// Mbufs a port holds on its own beyond its descriptor rings: net_pcap
/// with `infinite_rx` copies every frame of its file into an mbuf of the
/// port's pool at start and keeps them for the port's life.
pub fn extra_mbufs(spec: &PortSpec) -> u32 {
    match &spec.kind {
        PortKind::Pcap {
            rx_pcap: Some(f),
            infinite_rx: true,
            ..
        } => pcap_frames(f).unwrap_or(0),
        _ => 0,
    }
}

/// Number of records in a pcap file: walks the 16-byte record headers
/// (caplen at offset 8, in the file's byte order) without reading frames.
fn pcap_frames(path: &Path) -> std::io::Result<u32> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let mut hdr = [0u8; 24];
    f.read_exact(&mut hdr)?;
    let big = match u32::from_le_bytes(hdr[..4].try_into().expect("4 bytes")) {
        0xa1b2_c3d4 | 0xa1b2_3c4d => false,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => true,
        _ => {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                "not a pcap file",
            ))
        }
    };
    let mut n = 0;
    let mut rec = [0u8; 16];
    while f.read_exact(&mut rec).is_ok() {
        let b: [u8; 4] = rec[8..12].try_into().expect("4 bytes");
        let caplen = if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        };
        f.seek(SeekFrom::Current(i64::from(caplen)))?;
        n += 1;
    }
    Ok(n)
}

/// Makes `path` free for a listening socket: creates its directory, fails
/// if a live process listens there, removes a stale socket file.
pub fn claim_socket_path(path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(format!(
            "socket {} is in use by another process (another vswitchd?): stop it or choose another path",
            path.display()
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(_) => {
            // Nobody listens: a leftover of a process that died, if it is
            // a socket at all. Anything else is someone's file: refused,
            // never unlinked.
            use std::os::unix::fs::FileTypeExt;
            let meta = std::fs::symlink_metadata(path)
                .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
            if !meta.file_type().is_socket() {
                return Err(format!(
                    "{} exists and is not a socket: refusing to replace it",
                    path.display()
                ));
            }
            std::fs::remove_file(path).map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))
        }
    }
}

impl Port {
    /// Attaches, configures and starts the port; plumbs TAPs into their
    /// container. On error nothing of the port is left behind.
    pub fn open(spec: &PortSpec, n_workers: usize, pool: &Mempool) -> Result<Port, SetupError> {
        let io = match &spec.kind {
            PortKind::Tap(t) => return Self::open_tap(spec, t),
            PortKind::VhostUser { socket, client } => {
                return Ok(Port {
                    spec: spec.clone(),
                    io: PortIo::Vhost(VhostPort::register(socket, *client)?),
                    fresh: true,
                    tx_locks: None,
                    tx_queues: spec.rx_queues.max(n_workers as u16),
                    n_workers,
                })
            }
            PortKind::Pci { address } => EthPort::lookup(address)?,
            _ => EthPort::attach_vdev(&devargs(spec, n_workers).expect("a vdev"))?,
        };
        let mut eth = io;
        let tx_queues = eth.configure(
            spec.rx_queues,
            n_workers as u16,
            spec.rx_desc,
            spec.tx_desc,
            pool,
        )?;
        eth.start()?;
        // A device with fewer tx queues than there are workers (pcap has
        // one): workers share queues, under a lock (as OVS does when its
        // PMD threads outnumber a port's tx queues).
        let shareable = usize::from(tx_queues) < n_workers;
        Ok(Port {
            spec: spec.clone(),
            io: PortIo::Eth(eth),
            fresh: true,
            tx_locks: shareable
                .then(|| TxLocks((0..n_workers).map(|_| TxLock::default()).collect())),
            tx_queues,
            n_workers,
        })
    }

    /// A TAP NIC: created (or re-attached after a restart) inside its
    /// container, persistent, then given its MAC, address and route.
    fn open_tap(spec: &PortSpec, t: &crate::config::TapSpec) -> Result<Port, SetupError> {
        let netns_err = |source| SetupError::Netns {
            port: spec.name.clone(),
            source,
        };
        let fresh = !netns::interface_exists(&t.netns, &t.ifname);
        let inside = netns::enter(&t.netns).map_err(netns_err)?;
        let dev = TapDevice::open(&t.ifname, usize::from(spec.rx_queues)).map_err(|e| {
            if fresh {
                SetupError::Preflight {
                    port: spec.name.clone(),
                    message: format!("cannot create TAP {:?} in {}: {e}", t.ifname, t.netns),
                }
            } else {
                // Not a TAP we can attach to: something else has the name.
                netns_err(NetnsError::NameTaken {
                    netns: t.netns.clone(),
                    ifname: t.ifname.clone(),
                })
            }
        })?;
        // Last, so a failure above leaves no TAP behind.
        dev.set_persist(true).map_err(|e| SetupError::Preflight {
            port: spec.name.clone(),
            message: format!("TUNSETPERSIST {}: {e}", t.ifname),
        })?;
        drop(inside);
        let port = Port {
            spec: spec.clone(),
            io: PortIo::Tap(dev),
            fresh,
            tx_locks: None,
            tx_queues: 0,
            n_workers: 0,
        };
        if let Err(e) = netns::plumb(t) {
            port.remove();
            return Err(netns_err(e));
        }
        Ok(port)
    }

    /// The DPDK port id (None for a TAP or vhost-user port).
    pub fn dpdk_id(&self) -> Option<u16> {
        match &self.io {
            PortIo::Eth(e) => Some(e.id()),
            PortIo::Tap(_) | PortIo::Vhost(_) => None,
        }
    }

    /// What the device hashes over its rx queues (None: no RSS; a TAP's
    /// queues are chosen by the kernel's flow hash, see `tap`).
    pub fn rss(&self) -> Option<Vec<&'static str>> {
        match &self.io {
            PortIo::Eth(e) => e.rss(),
            PortIo::Tap(_) | PortIo::Vhost(_) => None,
        }
    }

    /// Link up? For a TAP: the container set it up (read in its netns);
    /// for vhost-user: a guest's device is ready.
    pub fn link_up(&self) -> bool {
        match (&self.io, &self.spec.kind) {
            (PortIo::Eth(e), _) => e.link_up(),
            (PortIo::Vhost(v), _) => v.connected(),
            (PortIo::Tap(d), PortKind::Tap(t)) => {
                netns::enter(&t.netns).is_ok_and(|_inside| d.link_up())
            }
            (PortIo::Tap(_), _) => false,
        }
    }

    /// The port's MAC: the ethdev's, or the container side's of a TAP;
    /// none for vhost-user (the guest's virtio device has its own, which
    /// the switch learns).
    pub fn mac(&self) -> vswitch::MacAddr {
        match (&self.io, &self.spec.kind) {
            (PortIo::Eth(e), _) => e.mac(),
            (PortIo::Vhost(_), _) => vswitch::MacAddr::default(),
            (PortIo::Tap(d), PortKind::Tap(t)) => netns::enter(&t.netns)
                .map(|_inside| d.mac())
                .unwrap_or_default(),
            (PortIo::Tap(_), _) => vswitch::MacAddr::default(),
        }
    }

    /// Where each of the workers sends this port's frames.
    pub fn tx_target(&self) -> TxTarget {
        match &self.io {
            PortIo::Eth(e) => TxTarget::Eth {
                port: e.id(),
                queues: tx_queue_map(
                    self.n_workers,
                    self.tx_queues,
                    (1u64 << self.tx_queues.min(63)) - 1,
                ),
                locks: self.tx_locks.clone(),
            },
            PortIo::Tap(d) => TxTarget::Tap(d.fds().into()),
            PortIo::Vhost(v) => TxTarget::Vhost {
                state: v.state(),
                takes: v.guest_offloads(),
                queues: tx_queue_map(self.n_workers, self.tx_queues, v.enabled_tx_queues()),
            },
        }
    }

    /// The offloads the port's peer takes in what it receives: a
    /// vhost-user guest's negotiated ones; none for ethdevs (a TAP takes
    /// all, see `datapath::TxTarget`).
    pub fn guest_offloads(&self) -> GuestOffloads {
        match &self.io {
            PortIo::Vhost(v) => v.guest_offloads(),
            _ => GuestOffloads::default(),
        }
    }

    /// The PMD's counters (none for a TAP or vhost-user port: the switch
    /// counts their frames).
    pub fn pmd_stats(&self) -> EthStats {
        match &self.io {
            PortIo::Eth(e) => e.stats(),
            PortIo::Tap(_) | PortIo::Vhost(_) => EthStats::default(),
        }
    }

    /// Stops and detaches the port at shutdown. A TAP stays in its
    /// container (persistent, carrier down) for the next vswitchd to
    /// re-attach; a vhost-user server socket file is removed.
    pub fn close(self) {
        match self.io {
            PortIo::Eth(e) => e.close(),
            // Unregisters: a connected guest's device is destroyed.
            PortIo::Vhost(v) => drop(v),
            PortIo::Tap(_) => {}
        }
        if let PortKind::VhostUser {
            socket,
            client: false,
        } = &self.spec.kind
        {
            let _ = std::fs::remove_file(socket);
        }
    }

    /// Undoes an open when the daemon fails to start: what this start
    /// created is removed, a TAP it re-attached stays for the next try.
    pub fn abandon(self) {
        if self.fresh {
            self.remove();
        } else {
            self.close();
        }
    }

    /// Unplugs the port for good: a TAP vanishes from its container too.
    pub fn remove(self) {
        if let PortIo::Tap(d) = &self.io {
            // Best effort: if the container is gone, so is its TAP. It
            // vanishes when its fds close.
            let _ = d.set_persist(false);
        }
        self.close();
    }
}

/// Destroys removed TAP NICs off the control thread. Closing a TAP's
/// last fd unregisters its netdev, which waits for RCU grace periods: 20
/// to 35 ms here, the same for a veth. On the control thread that wait
/// serialized concurrent CNI DELs (50 at once took a second; harness D);
/// here it overlaps with the next requests. A port add whose interface
/// name is still being destroyed waits for it ([`Reaper::drain`]).
pub struct Reaper {
    tx: crossbeam_channel::Sender<TapDevice>,
    /// TAPs handed over and not yet closed.
    pending: std::sync::Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>,
}

impl Reaper {
    /// Starts the reaping thread.
    pub fn new() -> std::io::Result<Reaper> {
        let (tx, rx) = crossbeam_channel::unbounded::<TapDevice>();
        let pending = std::sync::Arc::new((std::sync::Mutex::new(0), std::sync::Condvar::new()));
        let done = std::sync::Arc::clone(&pending);
        std::thread::Builder::new()
            .name("tap-reaper".into())
            .spawn(move || {
                for dev in rx {
                    drop(dev);
                    let (n, cv) = &*done;
                    *n.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                    cv.notify_all();
                }
            })?;
        Ok(Reaper { tx, pending })
    }

    /// Removes `port` (see [`Port::remove`]); a TAP's device is destroyed
    /// by the reaping thread.
    pub fn reap(&self, port: Port) {
        let d = match port.io {
            PortIo::Tap(d) => d,
            io => return Port { io, ..port }.remove(),
        };
        let _ = d.set_persist(false);
        *self.pending.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        if let Err(e) = self.tx.send(d) {
            // The thread is gone: close here.
            drop(e.into_inner());
            *self.pending.0.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        }
    }

    /// Waits (up to `timeout`) until every TAP handed over is destroyed;
    /// whether they are.
    pub fn drain(&self, timeout: std::time::Duration) -> bool {
        let (n, cv) = &*self.pending;
        let guard = n.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cv
            .wait_timeout_while(guard, timeout, |n| *n > 0)
            .unwrap_or_else(|e| e.into_inner());
        *guard == 0
    }
}
