//! Port kinds: from a config [`PortSpec`] to a started DPDK port, and back.
//!
//! Every kind except PCI is a virtual device hot-plugged with
//! `rte_dev_probe`, which is also how ports are added at run time. Each port
//! gets one tx queue per worker, so workers never share a tx queue and never
//! lock.

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::config::{PortKind, PortSpec};
use crate::dpdk::mempool::Mempool;
use crate::dpdk::port::{EthPort, PortError};
use crate::netns::{self, NetnsError};

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
    /// The DPDK port.
    pub eth: EthPort,
    /// Its TAP was created by this open, not re-attached after a restart.
    fresh: bool,
}

/// The vdev devargs for a port; None for PCI (probed by EAL at start).
///
/// The device is named by a number unique in this process, not by the
/// port's name: PMDs derive internal object names from it within small
/// limits (net_tap's queue setup fails with EPERM beyond about 24
/// characters), and port names may be 32 characters long.
pub fn devargs(spec: &PortSpec, n_workers: usize) -> Option<String> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let queues = usize::from(spec.rx_queues).max(n_workers);
    Some(match &spec.kind {
        PortKind::VhostUser { socket, client } => format!(
            "net_vhost_{name},iface={},queues={queues},client={}",
            socket.display(),
            u8::from(*client)
        ),
        PortKind::Tap(t) => {
            // Probed inside the container's namespace (Port::open).
            let mut s = format!("net_tap_{name},iface={}", t.ifname);
            if let Some(mac) = t.mac {
                s.push_str(&format!(",mac={mac}"));
            }
            s
        }
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
        PortKind::Pci { .. } => return None,
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
            // Nobody listens: a leftover of a process that died.
            std::fs::remove_file(path).map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))
        }
    }
}

impl Port {
    /// Attaches, configures and starts the port; plumbs TAPs into their
    /// container. On error nothing of the port is left behind.
    pub fn open(spec: &PortSpec, n_workers: usize, pool: &Mempool) -> Result<Port, SetupError> {
        let netns_err = |source| SetupError::Netns {
            port: spec.name.clone(),
            source,
        };
        let fresh = match &spec.kind {
            PortKind::Tap(t) => !netns::has_interface(&t.netns, &t.ifname),
            _ => true,
        };
        // A TAP is probed, configured and started inside its container:
        // net_tap opens the device by name for every queue.
        let inside = match &spec.kind {
            PortKind::Tap(t) => Some(netns::enter(&t.netns).map_err(netns_err)?),
            _ => None,
        };
        let mut eth = match (devargs(spec, n_workers), &spec.kind) {
            (Some(args), PortKind::Tap(t)) => EthPort::attach_vdev(&args).map_err(|e| {
                if fresh {
                    SetupError::Dpdk(e)
                } else {
                    // Not a TAP we can attach to: something else has the name.
                    netns_err(NetnsError::NameTaken {
                        netns: t.netns.clone(),
                        ifname: t.ifname.clone(),
                    })
                }
            })?,
            (Some(args), _) => EthPort::attach_vdev(&args)?,
            (None, PortKind::Pci { address }) => EthPort::lookup(address)?,
            (None, _) => unreachable!("only PCI ports have no devargs"),
        };
        eth.configure(
            spec.rx_queues,
            n_workers as u16,
            spec.rx_desc,
            spec.tx_desc,
            pool,
        )?;
        eth.start()?;
        if let PortKind::Tap(t) = &spec.kind {
            // Last, so a failure above leaves no TAP behind.
            netns::set_persist(&t.ifname, true).map_err(netns_err)?;
        }
        drop(inside);
        let port = Port {
            spec: spec.clone(),
            eth,
            fresh,
        };
        if let PortKind::Tap(t) = &spec.kind {
            if let Err(e) = netns::plumb(t) {
                port.remove();
                return Err(netns_err(e));
            }
        }
        Ok(port)
    }

    /// Stops and detaches the port at shutdown. A TAP stays in its
    /// container (persistent, carrier down) for the next vswitchd to
    /// re-attach; a vhost-user server socket file is removed.
    pub fn close(self) {
        self.eth.close();
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
        if let PortKind::Tap(t) = &self.spec.kind {
            // Best effort: if the container is gone, so is its TAP.
            if let Ok(_inside) = netns::enter(&t.netns) {
                let _ = netns::set_persist(&t.ifname, false);
            }
        }
        self.close();
    }
}
