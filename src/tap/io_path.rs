//! The workers' side of a TAP queue: a burst of reads into mbufs, a burst
//! of writes out of them, the virtio-net header translated to and from
//! the mbuf's offload flags.
//!
//! Rx reads each frame straight into an mbuf of the TAP pool, whose one
//! segment holds the largest superframe (see `daemon::TAP_DATA_ROOM`):
//! the virtio-net header lands in the headroom just before the frame, so
//! a read is one `read(2)` with no copy afterwards. Mbufs come from a
//! per-worker stash filled by bulk allocation; a read that finds the
//! queue empty (EAGAIN) or a frame that is dropped gives its mbuf back to
//! the stash, so nothing is allocated or freed per frame.
//!
//! Tx is one `writev(2)` per frame: the header from the mbuf's offload
//! flags, then the frame's segments. A TAP write never blocks: the kernel
//! takes the frame into the container's stack or drops it.
//!
//! One syscall per frame (plus one EAGAIN per queue and round) is what
//! the TAP interface offers: tun has no recvmmsg/sendmmsg. With offloads a
//! TCP frame carries up to 64 KB, so the syscall is amortised over ~44
//! wire segments.

use std::os::fd::RawFd;

use vswitch::offload::{complete_checksum, Offload, VnetHdr, VNET_HDR_LEN};
use vswitch::{Counter, DropReason, Frame, PortCounters};

use crate::dpdk::mbuf::{Burst, Mbuf};
use crate::dpdk::mempool::PoolHandle;

/// Reads up to [`vswitch::MAX_BURST`] frames from TAP queue `fd` into the empty
/// `burst`, taking mbufs from `stash` (refilled from `pool`); returns how
/// many. Frames whose virtio-net header does not describe them are
/// dropped and counted as `malformed` on `counters`; every read counts
/// in `syscalls`.
#[inline]
pub fn rx_burst(
    fd: RawFd,
    pool: PoolHandle,
    stash: &mut Burst,
    burst: &mut Burst,
    counters: &PortCounters,
    syscalls: &Counter,
) -> usize {
    let mut reads = 0;
    debug_assert!(burst.is_empty());
    while !burst.is_full() {
        if stash.is_empty() && !pool.alloc_bulk(stash) {
            break;
        }
        let mut m = stash.pop().expect("stash refilled");
        let area = m.read_area(VNET_HDR_LEN as u16);
        // SAFETY: area is writable memory of the mbuf we own, area.len()
        // bytes long; the kernel writes at most that much.
        let n = unsafe { libc::read(fd, area.as_mut_ptr().cast(), area.len()) };
        reads += 1;
        if n < 0 {
            // EAGAIN: the queue is empty. Other errors (the device went
            // away) end the burst the same way; the control plane sees the
            // port's state.
            stash.push(m);
            break;
        }
        match accept_frame(m, n as usize, counters) {
            Ok(m) => burst.push(m),
            Err(m) => stash.push(m),
        }
    }
    syscalls.add(reads);
    burst.len()
}

/// Takes a frame a TAP read put in `m` (`n` bytes: the virtio-net header,
/// then the frame): sets its length and offload flags. A frame too short or
/// whose header does not describe it is counted as `malformed` and handed
/// back (Err) reset, for the caller to reuse.
#[inline]
pub(crate) fn accept_frame(mut m: Mbuf, n: usize, counters: &PortCounters) -> Result<Mbuf, Mbuf> {
    if n < VNET_HDR_LEN + 14 {
        counters.drop(DropReason::Malformed, 1);
        return Err(m);
    }
    let hdr: [u8; VNET_HDR_LEN] = m.read_area(VNET_HDR_LEN as u16)[..VNET_HDR_LEN]
        .try_into()
        .expect("header bytes");
    m.set_len((n - VNET_HDR_LEN) as u16);
    let h = VnetHdr::parse(&hdr);
    if h.flags == 0 && h.gso_type == 0 {
        return Ok(m);
    }
    match Offload::from_vnet(&h, m.data()) {
        Ok(off) => {
            if off.gso.is_some() {
                counters.rx_superframes.add(1);
            }
            if !m.set_offload(&off) {
                // A partial checksum DPDK has no flag for (neither TCP nor
                // UDP): finish it now.
                if let Some(c) = off.csum {
                    complete_checksum(m.data_mut(), c);
                }
            }
            Ok(m)
        }
        Err(_) => {
            counters.drop(DropReason::Malformed, 1);
            m.set_len(0);
            Err(m)
        }
    }
}

/// Writes every frame of `burst` to TAP queue `fd` and frees them all;
/// returns (frames written, bytes written). A frame the kernel refuses
/// (the container set its link down, a header it rejects) is counted as
/// `tx_error` on `counters`. Every write counts in `syscalls`.
#[inline]
pub fn tx_burst(
    fd: RawFd,
    burst: &mut Burst,
    counters: &PortCounters,
    syscalls: &Counter,
) -> (u64, u64) {
    syscalls.add(burst.len() as u64);
    let (mut sent, mut bytes) = (0, 0);
    for m in burst.mbufs() {
        let mut hdr = [0u8; VNET_HDR_LEN];
        if m.has_offload() {
            m.offload().to_vnet(m.data()).emit(&mut hdr);
        }
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 1 + MAX_SEGS];
        iov[0] = libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: VNET_HDR_LEN,
        };
        let Some(k) = m.segments_iovec(&mut iov[1..]) else {
            counters.drop(DropReason::TxError, m.wire_packets());
            continue;
        };
        // SAFETY: iov[..1 + k] points at the header on our stack and at
        // the mbuf's segments, all live for the call; writev only reads.
        let n = unsafe { libc::writev(fd, iov.as_ptr(), (1 + k) as libc::c_int) };
        if n < 0 {
            counters.drop(DropReason::TxError, m.wire_packets());
        } else {
            sent += 1;
            bytes += u64::from(m.pkt_len());
        }
    }
    burst.free_all();
    (sent, bytes)
}

/// Segments of one mbuf chain a TAP write takes (frames from PMDs that
/// chain, e.g. vhost-user with mergeable buffers, rarely need more than
/// a few); longer chains are refused as `tx_error`.
const MAX_SEGS: usize = 16;
