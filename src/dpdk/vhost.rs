//! vhost-user ports through DPDK's vhost library, not the net_vhost ethdev.
//!
//! Why not the ethdev (what vswitchd used first): every net_vhost port is
//! one of the 32 ethdev slots Debian's DPDK is built with, so a switch
//! stopped at about 31 container NICs; and the PMD adds a layer per burst
//! (its own queue flags and counters, per-frame statistics walks) to the
//! library calls that do the work. Open vSwitch drives vhost-user the
//! same way (netdev-dpdk: `rte_vhost_enqueue_burst` /
//! `rte_vhost_dequeue_burst`). The library allows 1024 devices.
//!
//! The library runs the vhost-user protocol on its own thread
//! ("vhost-events") and tells us through callbacks ([`OPS`]) when a
//! guest's device is ready (`new_device`: from then on its id, the vid,
//! is used by the workers), gone (`destroy_device`), or when the guest
//! enables or disables a ring. A callback finds its port by socket path
//! in [`REGISTRY`].
//!
//! Before `destroy_device` returns, no worker may still use the vid (the
//! library frees the device after it): the callback clears the vid, then
//! waits for every worker to start a new poll round ([`set_workers`]:
//! the daemon's snapshot protocol, see `datapath::Shared::synchronize`),
//! after which a worker only sees the cleared vid. Workers pay nothing
//! for this beyond one atomic load per burst. `new_device` nudges the
//! workers the same way without waiting: they walk the queues of ready
//! devices only, so a NIC without a guest costs them nothing.
//!
//! Frames: the library copies a guest's transmitted frame into mbufs of
//! our pool on dequeue (chained for a jumbo frame), and copies ours into
//! the guest's receive buffers on enqueue (we free our mbufs after). A
//! port therefore holds no mbufs of its own: no descriptor rings of
//! mbufs, nothing to reserve per port in the pool. Offloads: "legacy"
//! offload flags (no `RTE_VHOST_USER_NET_COMPLIANT_OL_FLAGS`): a guest's
//! partial checksum arrives as the tx offload request the switch forwards
//! or finishes (as a TAP's virtio-net header does), and a frame we send
//! with tx offload flags reaches the guest as a virtio-net header (if it
//! negotiated the feature, see [`GuestOffloads`]). Guests may not send
//! TCP superframes (HOST_TSO4/6 are not offered, as net_vhost's default):
//! DPDK containers do not make them and the switch would segment them for
//! most ports.
//!
//! Workers do not ask guests to kick us (notifications off, as net_vhost
//! and OVS do): they poll.
//!
//! A new server socket is served at once, not within a second: the
//! library's thread polls its sockets with a one-second timeout and
//! notices a socket registered meanwhile only when that poll returns (DPDK
//! 22.11 wakes it for new connections, not for new sockets). After each
//! registration we wake it by connecting to a socket of our own it already
//! polls ([`init`]) and closing the connection at once. Without
//! this a DPDK container's first vhost-user request waited up to 1 s
//! (harness D: CNI ADD until the socket answered, 930 ms at the median).

use std::ffi::CString;
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::ffi;
use super::mbuf::Burst;
use super::mempool::PoolHandle;
use super::port::PortError;
use vswitch::MAX_BURST;

/// How the library's callbacks reach the workers (see the module doc).
pub struct Workers {
    /// Waits until every worker has begun a poll round after the call
    /// began.
    pub quiesce: Box<dyn Fn() + Send + Sync>,
    /// Tells every worker to take its rx queues afresh at its next round,
    /// without waiting.
    pub nudge: Box<dyn Fn() + Send + Sync>,
}

/// The ports whose sockets are registered with the library, by socket
/// path, for the callbacks.
static REGISTRY: Mutex<Vec<(CString, Arc<VhostState>)>> = Mutex::new(Vec::new());

/// The workers, once they run.
static WORKERS: Mutex<Option<Arc<Workers>>> = Mutex::new(None);

/// The socket that wakes the library's thread (see the module doc).
static WAKER: Mutex<Option<CString>> = Mutex::new(None);

/// Registers the socket at `path` that wakes the library's thread after
/// each new server socket (see the module doc); before any port, so the
/// thread, which the first registration starts, polls it from the start.
pub fn init(path: &Path) -> Result<(), PortError> {
    let c = c_path(path)?;
    // SAFETY: c is a valid C string; WAKER_OPS is static.
    unsafe {
        if ffi::rte_vhost_driver_register(c.as_ptr(), 0) != 0 {
            return Err(vhost_err(path, "vhost-user wake-up socket register", -1));
        }
        if ffi::rte_vhost_driver_callback_register(c.as_ptr(), &WAKER_OPS.0) != 0
            || ffi::rte_vhost_driver_start(c.as_ptr()) != 0
        {
            ffi::rte_vhost_driver_unregister(c.as_ptr());
            return Err(vhost_err(path, "vhost-user wake-up socket start", -1));
        }
    }
    *WAKER.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
    Ok(())
}

/// Unregisters the wake-up socket (its file is removed).
pub fn shutdown() {
    if let Some(c) = WAKER.lock().unwrap_or_else(|e| e.into_inner()).take() {
        // SAFETY: registered by init.
        unsafe { ffi::rte_vhost_driver_unregister(c.as_ptr()) };
    }
}

/// Makes the library's thread look at its sockets again now.
fn wake() {
    let path = WAKER.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(p) = path {
        use std::os::unix::ffi::OsStrExt;
        let p = std::ffi::OsStr::from_bytes(p.as_bytes());
        // Closed at once: the library accepts it, sees it closed, and
        // forgets it.
        let _ = std::os::unix::net::UnixStream::connect(p);
    }
}

/// Sets how the callbacks reach the workers (the daemon does, once its
/// workers run; None once they stopped).
pub fn set_workers(w: Option<Workers>) {
    *WORKERS.lock().unwrap_or_else(|e| e.into_inner()) = w.map(Arc::new);
}

fn workers() -> Option<Arc<Workers>> {
    WORKERS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A vhost-user port's connection state, shared by the library's
/// callbacks (writers) and the workers (readers).
#[derive(Debug)]
pub struct VhostState {
    /// The guest's device id while it is ready, else -1.
    vid: AtomicI32,
    /// Rings the guest enabled: bit 2q is its receive ring of queue pair
    /// q (our tx queue q), bit 2q+1 its transmit ring (our rx queue q).
    rings: AtomicU64,
}

/// Compared by identity (the same port's), for snapshots that compare
/// tx targets.
impl PartialEq for VhostState {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for VhostState {}

impl VhostState {
    fn new() -> VhostState {
        VhostState {
            vid: AtomicI32::new(-1),
            rings: AtomicU64::new(0),
        }
    }

    /// Whether a guest's device is ready.
    pub fn connected(&self) -> bool {
        self.vid().is_some()
    }

    /// The ready device's id.
    #[inline]
    fn vid(&self) -> Option<i32> {
        // Acquire: pairs with new_device's Release, after which the
        // library's device is set up.
        let v = self.vid.load(Ordering::Acquire);
        (v >= 0).then_some(v)
    }
}

/// A registered vhost-user socket (server: we listen; client: we connect
/// to the container's and reconnect when it restarts).
pub struct VhostPort {
    path: CString,
    state: Arc<VhostState>,
}

/// A socket path as the library takes it.
fn c_path(path: &Path) -> Result<CString, PortError> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| PortError {
        port: path.display().to_string(),
        op: "register",
        reason: "socket path has a NUL byte".into(),
    })
}

fn vhost_err(path: &Path, op: &'static str, rc: i32) -> PortError {
    PortError {
        port: path.display().to_string(),
        op,
        reason: format!("rte_vhost returned {rc}"),
    }
}

const VIRTIO_NET_F_HOST_TSO4: u64 = 1 << 11;
const VIRTIO_NET_F_HOST_TSO6: u64 = 1 << 12;
const VIRTIO_NET_F_GUEST_CSUM: u64 = 1 << 1;
const VIRTIO_NET_F_GUEST_TSO4: u64 = 1 << 7;
const VIRTIO_NET_F_GUEST_TSO6: u64 = 1 << 8;
const VIRTIO_NET_F_MRG_RXBUF: u64 = 1 << 15;

impl VhostPort {
    /// Registers the socket at `path` and starts serving it (a server
    /// socket is created; a client connects in the background).
    pub fn register(path: &Path, client: bool) -> Result<VhostPort, PortError> {
        let c = c_path(path)?;
        let flags = if client {
            u64::from(ffi::RTE_VHOST_USER_CLIENT)
        } else {
            0
        };
        // SAFETY: c is a valid C string; the library copies the path.
        let rc = unsafe { ffi::rte_vhost_driver_register(c.as_ptr(), flags) };
        if rc != 0 {
            return Err(vhost_err(path, "vhost-user socket register", rc));
        }
        let port = VhostPort {
            path: c,
            state: Arc::new(VhostState::new()),
        };
        // Registered from here: dropping `port` unregisters.
        REGISTRY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((port.path.clone(), Arc::clone(&port.state)));
        // SAFETY: the path was registered above; OPS is static.
        let rc = unsafe {
            ffi::rte_vhost_driver_disable_features(
                port.path.as_ptr(),
                VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_TSO6,
            )
        };
        if rc != 0 {
            return Err(vhost_err(path, "vhost-user feature setup", rc));
        }
        // SAFETY: as above.
        let rc = unsafe { ffi::rte_vhost_driver_callback_register(port.path.as_ptr(), &OPS.0) };
        if rc != 0 {
            return Err(vhost_err(path, "vhost-user callback register", rc));
        }
        // SAFETY: as above; starts listening (or connecting).
        let rc = unsafe { ffi::rte_vhost_driver_start(port.path.as_ptr()) };
        if rc != 0 {
            return Err(vhost_err(path, "vhost-user socket start", rc));
        }
        if !client {
            wake();
        }
        Ok(port)
    }

    /// The state workers read.
    pub fn state(&self) -> Arc<VhostState> {
        Arc::clone(&self.state)
    }

    /// Whether a guest's device is ready.
    pub fn connected(&self) -> bool {
        self.state.connected()
    }

    /// Our tx queues whose guest receive ring is enabled, as a bitmap
    /// (bit q: queue q); 0 while no guest is ready.
    pub fn enabled_tx_queues(&self) -> u64 {
        if !self.connected() {
            return 0;
        }
        let rings = self.state.rings.load(Ordering::Acquire);
        (0..32)
            .filter(|q| rings & 1 << (2 * q) != 0)
            .fold(0, |m, q| m | 1 << q)
    }

    /// The offloads the guest negotiated for the frames it receives,
    /// none while no guest is ready.
    pub fn guest_offloads(&self) -> GuestOffloads {
        let Some(vid) = self.state.vid() else {
            return GuestOffloads::default();
        };
        let mut f = 0u64;
        // SAFETY: f is a valid out pointer; a stale vid is refused by the
        // library (it checks its device table).
        if unsafe { ffi::rte_vhost_get_negotiated_features(vid, &mut f) } != 0 {
            return GuestOffloads::default();
        }
        let csum = f & VIRTIO_NET_F_GUEST_CSUM != 0;
        // A 64 KB superframe spans many of the guest's receive buffers.
        let big = csum && f & VIRTIO_NET_F_MRG_RXBUF != 0;
        GuestOffloads {
            csum,
            tso4: big && f & VIRTIO_NET_F_GUEST_TSO4 != 0,
            tso6: big && f & VIRTIO_NET_F_GUEST_TSO6 != 0,
        }
    }
}

impl Drop for VhostPort {
    /// Unregisters the socket: a connected guest's device is destroyed
    /// first (`destroy_device`), a server socket file is removed.
    fn drop(&mut self) {
        // SAFETY: the path is registered; the call waits for the
        // library's thread to let go of the socket's connections.
        unsafe { ffi::rte_vhost_driver_unregister(self.path.as_ptr()) };
        REGISTRY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(p, _)| *p != self.path);
    }
}

/// What a vhost-user guest takes in the frames it receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GuestOffloads {
    /// Partial checksums (GUEST_CSUM).
    pub csum: bool,
    /// TCP/IPv4 superframes (GUEST_TSO4, with mergeable buffers).
    pub tso4: bool,
    /// TCP/IPv6 superframes (GUEST_TSO6, with mergeable buffers).
    pub tso6: bool,
}

/// The port state of the device `vid` (by its socket path).
fn state_of(vid: i32) -> Option<Arc<VhostState>> {
    let mut buf = [0 as libc::c_char; 4096];
    // SAFETY: buf is writable for its length; the library NUL-terminates.
    if unsafe { ffi::rte_vhost_get_ifname(vid, buf.as_mut_ptr(), buf.len()) } != 0 {
        return None;
    }
    // SAFETY: NUL-terminated by the call above.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(p, _)| p.as_c_str() == name)
        .map(|(_, s)| Arc::clone(s))
}

/// The callbacks, in a static the library keeps a pointer to.
struct Ops(ffi::rte_vhost_device_ops);

// SAFETY: function pointers and a null reserved pointer, never written.
unsafe impl Sync for Ops {}

static OPS: Ops = Ops(ffi::rte_vhost_device_ops {
    new_device: Some(new_device),
    destroy_device: Some(destroy_device),
    vring_state_changed: Some(vring_state_changed),
    features_changed: None,
    new_connection: None,
    destroy_connection: None,
    guest_notified: None,
    reserved: [std::ptr::null_mut(); 1],
});

/// The wake-up socket's callbacks: none (the library needs the table;
/// its connections never become devices).
static WAKER_OPS: Ops = Ops(ffi::rte_vhost_device_ops {
    new_device: None,
    destroy_device: None,
    vring_state_changed: None,
    features_changed: None,
    new_connection: None,
    destroy_connection: None,
    guest_notified: None,
    reserved: [std::ptr::null_mut(); 1],
});

/// The guest's device is ready: workers may use it.
unsafe extern "C" fn new_device(vid: i32) -> i32 {
    let Some(s) = state_of(vid) else { return -1 };
    // SAFETY: vid is the library's live device (it calls us with it).
    let rings = unsafe { ffi::rte_vhost_get_vring_num(vid) };
    for r in 0..rings {
        // Workers poll: the guest need not kick (one syscall per burst
        // it sends, otherwise).
        // SAFETY: as above, r < the device's ring count.
        unsafe { ffi::rte_vhost_enable_guest_notification(vid, r, 0) };
    }
    s.vid.store(vid, Ordering::Release);
    // Workers walk only the queues of ready devices: they take theirs
    // afresh. Not waited for: the library may hold the device's ring
    // locks while it calls us, and a worker may already be sending to it.
    if let Some(w) = workers() {
        (w.nudge)();
    }
    0
}

/// The guest is gone (or stopped its device): no worker may use the vid
/// once this returns.
unsafe extern "C" fn destroy_device(vid: i32) {
    let Some(s) = state_of(vid) else { return };
    s.vid.store(-1, Ordering::Release);
    s.rings.store(0, Ordering::Release);
    if let Some(w) = workers() {
        (w.quiesce)();
    }
}

/// The guest enabled or disabled one of its rings.
unsafe extern "C" fn vring_state_changed(vid: i32, ring: u16, enable: i32) -> i32 {
    let Some(s) = state_of(vid) else { return 0 };
    if ring < 64 {
        if enable != 0 {
            s.rings.fetch_or(1 << ring, Ordering::AcqRel);
        } else {
            s.rings.fetch_and(!(1 << ring), Ordering::AcqRel);
        }
    }
    0
}

/// Receives up to [`MAX_BURST`] frames the guest sent on its queue
/// `queue` into an empty `burst`, in mbufs of `pool`; returns how many.
#[inline]
pub fn rx_burst(state: &VhostState, queue: u16, pool: PoolHandle, burst: &mut Burst) -> usize {
    assert!(burst.is_empty(), "rx into a burst that holds mbufs");
    let Some(vid) = state.vid() else { return 0 };
    // SAFETY: vid stays a live device until this worker's next round (see
    // the module doc); the library takes the ring's lock and refuses a
    // disabled or absent ring; the burst has room for MAX_BURST pointers
    // and owns the n mbufs the call put there.
    unsafe {
        let n = ffi::rte_vhost_dequeue_burst(
            vid,
            2 * queue + 1,
            pool.as_ptr(),
            burst.raw_mut(),
            MAX_BURST as u16,
        ) as usize;
        burst.set_len(n);
        n
    }
}

/// Copies the burst's frames into the guest's receive ring of queue
/// `queue`; returns how many it took (those are freed and leave the
/// burst; the rest stay at its front for the caller to free and count),
/// None when no guest is attached.
#[inline]
pub fn tx_burst(state: &VhostState, queue: u16, burst: &mut Burst) -> Option<usize> {
    let vid = state.vid()?;
    // SAFETY: as in rx_burst; the library copies the first n frames and
    // takes no reference to any (its ring lock makes workers sharing a
    // queue safe).
    let n = unsafe {
        ffi::rte_vhost_enqueue_burst(vid, 2 * queue, burst.raw_mut(), burst.len() as u16)
    } as usize;
    burst.free_front(n);
    Some(n)
}
