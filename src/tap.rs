//! vswitchd's own TAP port: a kernel container's NIC, opened with the
//! virtio-net header and offloads, read and written by the workers.
//!
//! Why not DPDK's net_tap: it opens each queue with O_ASYNC and an RT
//! signal, so every frame a container sends signals vswitchd's main
//! thread (on the containers' CPU); it has no virtio-net header, so the
//! container's TCP is segmented and checksummed in software before it
//! reaches the TAP and every 1448-byte segment crosses the switch on its
//! own; and each TAP takes one of Debian DPDK's 32 ethdev slots.
//!
//! Why a second kind of port behind the worker's rx/tx rather than an
//! ethdev written in Rust: Debian's libdpdk-dev ships no driver SDK
//! headers (ethdev_driver.h), so a Rust PMD would rebuild DPDK's private
//! structures by hand and break with its ABI; and ethdev ports are the
//! 32-slot table a TAP port should not need. The worker keeps one loop:
//! an rx queue is an ethdev queue or a TAP queue fd, a tx target an
//! ethdev or a TAP (see `datapath`).
//!
//! The device: `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE`,
//! a 12-byte little-endian virtio-net header (TUNSETVNETHDRSZ,
//! TUNSETVNETLE), TUNSETOFFLOAD with checksum, TSO4/6 with ECN and UDP
//! segmentation (USO, where the kernel has it), non-blocking, no O_ASYNC.
//! One fd per queue: with IFF_MULTI_QUEUE the kernel spreads the
//! container's flows over the queues, so every queue is read by a worker;
//! any queue may be written, and workers write on queue `w % n`.
//!
//! It is created inside the container's namespace (the calling thread
//! enters it, see `netns::enter`) under its final name, made persistent
//! and re-attached by the next vswitchd, as `netns` describes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use vswitch::offload::VNET_HDR_LEN;
use vswitch::MacAddr;

pub mod io_path;
pub mod uring;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUNSETVNETLE: libc::c_ulong = 0x4004_54dc;

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;

const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_TSO_ECN: libc::c_uint = 0x08;
const TUN_F_USO4: libc::c_uint = 0x20;
const TUN_F_USO6: libc::c_uint = 0x40;

/// `struct ifreq`: a name and a 24-byte union (flags, or a sockaddr).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

impl IfReq {
    fn new(ifname: &str) -> IfReq {
        let mut r = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: [0; 24],
        };
        let n = ifname.len().min(libc::IFNAMSIZ - 1);
        r.name[..n].copy_from_slice(&ifname.as_bytes()[..n]);
        r
    }

    fn flags(&self) -> libc::c_short {
        libc::c_short::from_ne_bytes([self.data[0], self.data[1]])
    }

    fn set_flags(&mut self, f: libc::c_short) {
        self.data[..2].copy_from_slice(&f.to_ne_bytes());
    }

    fn name(&self) -> String {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.name.len());
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

/// `ioctl(fd, req, arg)` with the error as an io::Error.
///
/// # Safety
/// `arg` must be what `req` expects: a pointer to a live object of the
/// request's type, or an integer for requests that take one.
unsafe fn ioctl<T>(fd: RawFd, req: libc::c_ulong, arg: T) -> io::Result<()> {
    // SAFETY: the caller's contract.
    if unsafe { libc::ioctl(fd, req, arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A TAP device's queues, owned by the control plane. Workers get the raw
/// fds through the datapath snapshot; the fds close (and the queues
/// detach) when this is dropped, which the control plane does only after
/// a snapshot without them was published.
pub struct TapDevice {
    queues: Vec<OwnedFd>,
    ifname: String,
}

impl TapDevice {
    /// Creates TAP `ifname`, or attaches to the persistent one of that
    /// name, in the calling thread's network namespace, with `n_queues`
    /// queues and the offloads of the module documentation.
    pub fn open(ifname: &str, n_queues: usize) -> io::Result<TapDevice> {
        let mut queues = Vec::with_capacity(n_queues);
        for _ in 0..n_queues.max(1) {
            queues.push(open_queue(ifname)?);
        }
        Ok(TapDevice {
            queues,
            ifname: ifname.to_string(),
        })
    }

    /// The queue fds, for the workers.
    pub fn fds(&self) -> Vec<RawFd> {
        self.queues.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Sets or clears the persist flag: a persistent TAP outlives vswitchd
    /// (so a restart finds it), a cleared one vanishes with its last fd.
    pub fn set_persist(&self, on: bool) -> io::Result<()> {
        // SAFETY: TUNSETPERSIST takes an integer.
        unsafe {
            ioctl(
                self.queues[0].as_raw_fd(),
                TUNSETPERSIST,
                libc::c_ulong::from(on),
            )
        }
    }

    /// The interface's name now (a move may have renamed it).
    fn current_name(&self) -> String {
        let mut r = IfReq::new("");
        // SAFETY: TUNGETIFF fills the ifreq we own.
        match unsafe { ioctl(self.queues[0].as_raw_fd(), TUNGETIFF, &mut r as *mut IfReq) } {
            Ok(()) => r.name(),
            Err(_) => self.ifname.clone(),
        }
    }

    /// Whether the container has the link up (IFF_UP and IFF_RUNNING),
    /// read in the calling thread's namespace, which must be the
    /// container's.
    pub fn link_up(&self) -> bool {
        let mut r = IfReq::new(&self.current_name());
        link_ioctl(libc::SIOCGIFFLAGS, &mut r).is_ok_and(|()| {
            let f = r.flags() as libc::c_int;
            f & libc::IFF_UP != 0 && f & libc::IFF_RUNNING != 0
        })
    }

    /// The container side's MAC, read in the container's namespace (as for
    /// [`TapDevice::link_up`]).
    pub fn mac(&self) -> MacAddr {
        let mut r = IfReq::new(&self.current_name());
        match link_ioctl(libc::SIOCGIFHWADDR, &mut r) {
            // struct sockaddr: a 2-byte family, then the address.
            Ok(()) => MacAddr::from_slice(&r.data[2..8]),
            Err(_) => MacAddr::default(),
        }
    }
}

/// An interface ioctl through a datagram socket of the calling thread's
/// namespace.
fn link_ioctl(req: libc::c_ulong, r: &mut IfReq) -> io::Result<()> {
    // SAFETY: a plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new socket nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCGIF* read and write the ifreq we own.
    unsafe { ioctl(sock.as_raw_fd(), req, r as *mut IfReq) }
}

/// Opens one queue of TAP `ifname` with the vnet header and offloads.
fn open_queue(ifname: &str) -> io::Result<OwnedFd> {
    let f: File = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let fd = f.as_raw_fd();
    let mut r = IfReq::new(ifname);
    r.set_flags(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE);
    // SAFETY: TUNSETIFF reads and writes the ifreq we own.
    unsafe { ioctl(fd, TUNSETIFF, &mut r as *mut IfReq) }
        .map_err(|e| io::Error::new(e.kind(), format!("TUNSETIFF {ifname}: {e}")))?;
    let hdr: libc::c_int = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads an int we own.
    unsafe { ioctl(fd, TUNSETVNETHDRSZ, &hdr as *const libc::c_int) }?;
    let le: libc::c_int = 1;
    // SAFETY: TUNSETVNETLE reads an int we own. Little endian is what
    // x86 uses anyway; kernels without the cross-endian option refuse
    // it, which changes nothing there.
    let _ = unsafe { ioctl(fd, TUNSETVNETLE, &le as *const libc::c_int) };
    let base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
    // SAFETY: TUNSETOFFLOAD takes an integer. USO came with Linux 6.2:
    // without it, the container segments UDP itself.
    unsafe {
        ioctl(
            fd,
            TUNSETOFFLOAD,
            libc::c_ulong::from(base | TUN_F_USO4 | TUN_F_USO6),
        )
        .or_else(|_| ioctl(fd, TUNSETOFFLOAD, libc::c_ulong::from(base)))
    }?;
    Ok(f.into())
}
