//! Ethdev ports: attach (vdev hot-plug or PCI), configure, start, stop,
//! stats, and the per-burst rx/tx calls the workers make.

use std::ffi::CString;
use std::mem::MaybeUninit;

use super::ffi;
use super::mbuf::Burst;
use super::mempool::Mempool;
use vswitch::{MacAddr, MAX_BURST};

/// A port operation failed.
#[derive(Debug, thiserror::Error)]
#[error("port {port:?}: {op} failed: {reason}")]
pub struct PortError {
    /// Port name (config name or device name).
    pub port: String,
    /// What was being done.
    pub op: &'static str,
    /// DPDK's message.
    pub reason: String,
}

/// Counters the PMD keeps (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct EthStats {
    /// Frames received.
    pub ipackets: u64,
    /// Frames sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Frames the NIC dropped because rx queues were full.
    pub imissed: u64,
    /// Rx errors.
    pub ierrors: u64,
    /// Tx errors.
    pub oerrors: u64,
    /// Rx mbuf allocation failures.
    pub rx_nombuf: u64,
}

/// An attached ethdev port, owned by the control plane. Workers only see
/// its id and call [`rx_burst`]/[`tx_burst`].
pub struct EthPort {
    id: u16,
    name: String,
    /// Device name to `rte_dev_remove` on close (hot-plugged vdevs).
    hotplugged: Option<String>,
    started: bool,
}

fn port_err(port: &str, op: &'static str, rc: i32) -> PortError {
    PortError {
        port: port.to_string(),
        op,
        reason: super::strerror(rc),
    }
}

impl EthPort {
    /// Hot-plugs a virtual device from its devargs (`net_pcap_0,rx_pcap=...`).
    /// The device name is the devargs up to the first comma.
    pub fn attach_vdev(devargs: &str) -> Result<EthPort, PortError> {
        let dev_name = devargs.split(',').next().unwrap_or(devargs).to_string();
        let c = CString::new(devargs).expect("devargs have no NUL");
        // SAFETY: c is a valid C string for the call.
        let rc = unsafe { ffi::rte_dev_probe(c.as_ptr()) };
        if rc < 0 {
            return Err(port_err(&dev_name, "device probe", rc));
        }
        match Self::lookup(&dev_name) {
            Ok(mut p) => {
                p.hotplugged = Some(dev_name);
                Ok(p)
            }
            Err(e) => {
                remove_device(&dev_name);
                Err(e)
            }
        }
    }

    /// A port probed by EAL at start (PCI devices on the allow list).
    pub fn lookup(dev_name: &str) -> Result<EthPort, PortError> {
        let c = CString::new(dev_name).expect("device name has no NUL");
        let mut id = 0u16;
        // SAFETY: c is valid for the call; id is a valid out pointer.
        let rc = unsafe { ffi::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
        if rc < 0 {
            return Err(port_err(dev_name, "ethdev lookup", rc));
        }
        Ok(EthPort {
            id,
            name: dev_name.to_string(),
            hotplugged: None,
            started: false,
        })
    }

    /// DPDK's port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Configures `nb_rxq` rx queues taking mbufs from `pool` and up to
    /// `nb_txq` tx queues (fewer if the device has fewer: the caller
    /// shares them), with descriptor counts adjusted to the device's
    /// limits. Returns the number of tx queues set up.
    pub fn configure(
        &self,
        nb_rxq: u16,
        nb_txq: u16,
        rx_desc: u16,
        tx_desc: u16,
        pool: &Mempool,
    ) -> Result<u16, PortError> {
        let mut info = MaybeUninit::<ffi::rte_eth_dev_info>::zeroed();
        // SAFETY: info is a valid out pointer of the right type.
        let rc = unsafe { ffi::rte_eth_dev_info_get(self.id, info.as_mut_ptr()) };
        if rc < 0 {
            return Err(port_err(&self.name, "device info", rc));
        }
        // SAFETY: rte_eth_dev_info_get filled the struct.
        let info = unsafe { info.assume_init() };
        let nb_txq = nb_txq.min(info.max_tx_queues);
        if nb_rxq > info.max_rx_queues || nb_txq == 0 {
            return Err(PortError {
                port: self.name.clone(),
                op: "configure",
                reason: format!(
                    "needs {nb_rxq} rx queues and a tx queue, device has {} / {}",
                    info.max_rx_queues, info.max_tx_queues
                ),
            });
        }
        let mut conf = ffi::rte_eth_conf::default();
        // Several rx queues: let a device that hashes flows spread them
        // (RSS over addresses and ports, the driver's default key); other
        // PMDs (virtio-user without a hashing backend, pcap,
        // af_packet) fill each queue from its own source.
        let hf = info.flow_type_rss_offloads & RSS_FLOWS;
        if nb_rxq > 1 && hf != 0 {
            conf.rxmode.mq_mode = ffi::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = hf;
        }
        // SAFETY: conf is a valid, zero-initialised config the call copies.
        let rc = unsafe { ffi::rte_eth_dev_configure(self.id, nb_rxq, nb_txq, &conf) };
        if rc < 0 {
            return Err(port_err(&self.name, "configure", rc));
        }
        let (mut nrx, mut ntx) = (rx_desc, tx_desc);
        // SAFETY: valid pointers to two u16s.
        let rc = unsafe { ffi::rte_eth_dev_adjust_nb_rx_tx_desc(self.id, &mut nrx, &mut ntx) };
        if rc < 0 {
            return Err(port_err(&self.name, "descriptor adjust", rc));
        }
        // SAFETY: a query on a configured port.
        let socket = unsafe { ffi::rte_eth_dev_socket_id(self.id) }.max(0) as u32;
        for q in 0..nb_rxq {
            // SAFETY: the port is configured with nb_rxq queues; a null rxconf
            // means the driver defaults; the pool outlives the port.
            let rc = unsafe {
                ffi::rte_eth_rx_queue_setup(
                    self.id,
                    q,
                    nrx,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            if rc < 0 {
                return Err(port_err(&self.name, "rx queue setup", rc));
            }
        }
        for q in 0..nb_txq {
            // SAFETY: as above, for tx queues.
            let rc =
                unsafe { ffi::rte_eth_tx_queue_setup(self.id, q, ntx, socket, std::ptr::null()) };
            if rc < 0 {
                return Err(port_err(&self.name, "tx queue setup", rc));
            }
        }
        Ok(nb_txq)
    }

    /// The flow types the device hashes over its rx queues (names from
    /// [`RSS_NAMES`]), read back from the driver; None when RSS is off.
    pub fn rss(&self) -> Option<Vec<&'static str>> {
        let mut conf = ffi::rte_eth_rss_conf::default();
        // SAFETY: a valid out struct; a null key pointer asks for no key.
        let rc = unsafe { ffi::rte_eth_dev_rss_hash_conf_get(self.id, &mut conf) };
        (rc == 0 && conf.rss_hf != 0).then(|| {
            RSS_NAMES
                .iter()
                .filter(|(bit, _)| conf.rss_hf & bit != 0)
                .map(|&(_, n)| n)
                .collect()
        })
    }

    /// Starts the port and turns on promiscuous mode (a switch port must see
    /// every destination MAC).
    pub fn start(&mut self) -> Result<(), PortError> {
        // SAFETY: the port is configured.
        let rc = unsafe { ffi::rte_eth_dev_start(self.id) };
        if rc < 0 {
            return Err(port_err(&self.name, "start", rc));
        }
        self.started = true;
        // Not every PMD supports it (null is promiscuous by nature).
        // SAFETY: the port is started.
        unsafe { ffi::rte_eth_promiscuous_enable(self.id) };
        Ok(())
    }

    /// The port's MAC address.
    pub fn mac(&self) -> MacAddr {
        let mut a = ffi::rte_ether_addr::default();
        // SAFETY: a is a valid out pointer.
        unsafe { ffi::rte_eth_macaddr_get(self.id, &mut a) };
        MacAddr(a.addr_bytes)
    }

    /// Link up?
    pub fn link_up(&self) -> bool {
        let mut l = ffi::rte_eth_link::default();
        // SAFETY: l is a valid out pointer; nowait does not block.
        unsafe { ffi::rte_eth_link_get_nowait(self.id, &mut l) };
        l.link_status() != 0
    }

    /// The PMD's counters.
    pub fn stats(&self) -> EthStats {
        let mut s = ffi::rte_eth_stats::default();
        // SAFETY: s is a valid out pointer.
        unsafe { ffi::rte_eth_stats_get(self.id, &mut s) };
        EthStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// Stops, closes and (for hot-plugged vdevs) detaches the device. Workers
    /// must no longer poll it.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.started {
            // SAFETY: the port is started and no worker uses it any more.
            unsafe { ffi::rte_eth_dev_stop(self.id) };
            self.started = false;
        }
        // SAFETY: the port is stopped; close frees its queues.
        unsafe { ffi::rte_eth_dev_close(self.id) };
        if let Some(dev) = self.hotplugged.take() {
            remove_device(&dev);
        }
    }
}

impl Drop for EthPort {
    fn drop(&mut self) {
        if self.started || self.hotplugged.is_some() {
            self.shutdown();
        }
    }
}

fn remove_device(dev_name: &str) {
    let c = CString::new(dev_name).expect("device name has no NUL");
    // SAFETY: the vdev bus's name; rte_eal_hotplug_remove detaches by name.
    unsafe { ffi::rte_eal_hotplug_remove(c"vdev".as_ptr(), c.as_ptr()) };
}

/// RSS flow types (rte_ethdev.h's `RTE_ETH_RSS_*`, function-like
/// macros bindgen does not expand) with the names `port show` gives them.
pub const RSS_NAMES: [(u64, &str); 8] = [
    (1 << 2, "ipv4"),
    (1 << 3, "ipv4-frag"),
    (1 << 4, "ipv4-tcp"),
    (1 << 5, "ipv4-udp"),
    (1 << 8, "ipv6"),
    (1 << 9, "ipv6-frag"),
    (1 << 10, "ipv6-tcp"),
    (1 << 11, "ipv6-udp"),
];

/// The flow types a switch asks a device to hash: every one of
/// [`RSS_NAMES`] (addresses for all IP, ports too for TCP and UDP).
const RSS_FLOWS: u64 = {
    let mut m = 0;
    let mut i = 0;
    while i < RSS_NAMES.len() {
        m |= RSS_NAMES[i].0;
        i += 1;
    }
    m
};

/// Receives up to [`MAX_BURST`] frames into an empty `burst`; returns how many.
#[inline]
pub fn rx_burst(port: u16, queue: u16, burst: &mut Burst) -> usize {
    assert!(burst.is_empty(), "rx into a burst that holds mbufs");
    // SAFETY: the port and queue were configured and started by the control
    // plane and are polled only by this worker; the burst has room for
    // MAX_BURST pointers, and owns the n mbufs the PMD put there.
    unsafe {
        let n = ffi::rte_eth_rx_burst(port, queue, burst.raw_mut(), MAX_BURST as u16) as usize;
        burst.set_len(n);
        n
    }
}

/// Sends the burst's frames, retrying while the queue makes progress;
/// returns how many were sent (they leave the burst; the rest stay at its
/// front for the caller to free and count).
#[inline]
pub fn tx_burst(port: u16, queue: u16, burst: &mut Burst) -> usize {
    let mut sent = 0;
    while !burst.is_empty() {
        // SAFETY: this worker owns tx queue `queue` of the started port; the
        // burst holds `len` owned references, which the PMD takes over for
        // the first n.
        let n = unsafe { ffi::rte_eth_tx_burst(port, queue, burst.raw_mut(), burst.len() as u16) }
            as usize;
        if n == 0 {
            break;
        }
        burst.consume_front(n);
        sent += n;
    }
    sent
}
