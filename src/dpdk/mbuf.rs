//! Mbufs as the pipeline sees them, and bursts of them.
//!
//! [`Mbuf`] is `repr(transparent)` over the `rte_mbuf` pointer that rx/tx
//! bursts exchange, so a burst array is handed to DPDK without conversion.
//! Field access (`data`, `len`, refcnt) is done here in Rust on the bindgen
//! struct: a C call per packet for `rte_pktmbuf_mtod` would cost more than the
//! access itself.

use std::ptr::NonNull;

use super::ffi;
use vswitch::offload::{CsumPartial, Gso, GsoKind, Offload, TCP_CSUM_OFFSET, UDP_CSUM_OFFSET};
use vswitch::{Frame, MAX_BURST};

/// The tx offload requests of `ol_flags` this switch reads and writes
/// (DPDK's names; the mbuf field layout is DPDK's `tx_offload` bitfield).
const TX_OFFLOADS: u64 = ffi::RTE_MBUF_F_TX_TCP_SEG | ffi::RTE_MBUF_F_TX_UDP_SEG | L4_MASK;
const L4_MASK: u64 = 3 << 52;
const L4_TCP: u64 = 1 << 52;
const L4_UDP: u64 = 3 << 52;

/// One reference to a packet buffer, owned by the worker holding it:
/// whatever takes an `Mbuf` by value (a tx buffer, the drop list, a
/// burst) takes that reference over; dropping it frees it. A fresh or
/// received mbuf is its only reference; [`Mbuf::share`] turns one into
/// several (a flooded frame), after which the frame is read-only: the
/// methods that change it check they hold the only reference.
///
/// Not `Send`: an mbuf stays on its lcore from rx to tx (or free).
#[repr(transparent)]
pub struct Mbuf(NonNull<ffi::rte_mbuf>);

impl Drop for Mbuf {
    fn drop(&mut self) {
        let mut p = self.0.as_ptr();
        // SAFETY: the reference this value owns, released once (its
        // pointer is not used again).
        unsafe { ffi::rte_pktmbuf_free_bulk(&mut p, 1) };
    }
}

/// The references [`Mbuf::share`] made of one frame, handed out one by
/// one; those not taken are released when it is dropped.
pub struct Shares {
    m: NonNull<ffi::rte_mbuf>,
    left: u16,
}

impl Iterator for Shares {
    type Item = Mbuf;

    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(Mbuf(self.m))
    }
}

impl Drop for Shares {
    fn drop(&mut self) {
        for m in self.by_ref() {
            drop(m);
        }
    }
}

impl Frame for Mbuf {
    /// The whole frame's length, all segments.
    #[inline]
    fn frame_len(&self) -> usize {
        self.pkt_len() as usize
    }

    #[inline]
    fn data(&self) -> &[u8] {
        // SAFETY: the mbuf came from rx_burst and is owned by this worker
        // until it is sent or freed; buf_addr + data_off .. + data_len is
        // the first segment's data, inside the mbuf's buffer.
        unsafe {
            let m = self.0.as_ref();
            std::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    /// The offloads the frame carries, from its tx offload flags (set by
    /// [`Mbuf::set_offload`] on TAP rx, or by a PMD such as vhost's).
    #[inline]
    fn offload(&self) -> Offload {
        // SAFETY: see `data`.
        let m = unsafe { self.0.as_ref() };
        if m.ol_flags & TX_OFFLOADS == 0 {
            return Offload::NONE;
        }
        // SAFETY: tx_offload is a plain u64 view of the union.
        let t = unsafe { m.__bindgen_anon_3.tx_offload };
        let l2 = (t & 0x7f) as u16;
        let l3 = ((t >> 7) & 0x1ff) as u16;
        let l4 = ((t >> 16) & 0xff) as u16;
        let segsz = ((t >> 24) & 0xffff) as u16;
        let v4 = m.ol_flags & ffi::RTE_MBUF_F_TX_IPV4 != 0;
        let kind = if m.ol_flags & ffi::RTE_MBUF_F_TX_TCP_SEG != 0 {
            Some(if v4 { GsoKind::Tcp4 } else { GsoKind::Tcp6 })
        } else if m.ol_flags & ffi::RTE_MBUF_F_TX_UDP_SEG != 0 {
            Some(if v4 { GsoKind::Udp4 } else { GsoKind::Udp6 })
        } else {
            None
        };
        let offset = match (m.ol_flags & L4_MASK, kind) {
            (_, Some(GsoKind::Tcp4 | GsoKind::Tcp6)) | (L4_TCP, None) => TCP_CSUM_OFFSET,
            _ => UDP_CSUM_OFFSET,
        };
        Offload {
            csum: Some(CsumPartial {
                start: l2 + l3,
                offset,
            }),
            gso: kind.map(|kind| Gso {
                kind,
                size: segsz,
                hdr_len: l2 + l3 + l4,
            }),
        }
    }
}

impl Mbuf {
    /// The mbuf, for a change: checks this is its only reference (a shared
    /// frame's other references may be queued for other ports).
    #[inline]
    fn sole(&mut self) -> &mut ffi::rte_mbuf {
        // SAFETY: see `data`; &mut self and a reference count of 1 mean no
        // other reference to the mbuf exists anywhere.
        let m = unsafe { self.0.as_mut() };
        assert_eq!(m.refcnt, 1, "changing a shared mbuf");
        m
    }

    /// Whether the frame carries offloads (one flags test, for the hot
    /// path to skip [`Frame::offload`]).
    #[inline]
    pub fn has_offload(&self) -> bool {
        // SAFETY: see `data`.
        unsafe { self.0.as_ref().ol_flags & TX_OFFLOADS != 0 }
    }

    /// Whether the frame spans several segments (an mbuf chain).
    #[inline]
    pub fn is_chained(&self) -> bool {
        // SAFETY: see `data`.
        unsafe { !self.0.as_ref().next.is_null() }
    }

    /// Whether the frame is a superframe waiting for segmentation.
    #[inline]
    pub fn has_gso(&self) -> bool {
        // SAFETY: see `data`.
        unsafe {
            self.0.as_ref().ol_flags & (ffi::RTE_MBUF_F_TX_TCP_SEG | ffi::RTE_MBUF_F_TX_UDP_SEG)
                != 0
        }
    }

    /// Records `off` (checked against the frame by
    /// [`Offload::from_vnet`]) in the mbuf's tx offload flags and lengths,
    /// as DPDK PMDs with checksum/TSO offload expect them. Returns false,
    /// recording nothing, for a partial checksum of a protocol other than
    /// TCP or UDP, which has no DPDK flag: the caller completes it.
    pub fn set_offload(&mut self, off: &Offload) -> bool {
        let Some(c) = off.csum else {
            return true;
        };
        let l4_flag = match c.offset {
            TCP_CSUM_OFFSET => L4_TCP,
            UDP_CSUM_OFFSET => L4_UDP,
            _ => return false,
        };
        let Ok(k) = vswitch::FlowKey::parse_l2(self.data()) else {
            return false;
        };
        let (l3, v4) = (k.l3_offset, k.ethertype == vswitch::flow::ETH_P_IPV4);
        if c.start < l3 {
            return false;
        }
        let l3_len = c.start - l3;
        let (seg_flag, l4_len, segsz) = match off.gso {
            Some(g) => (
                match g.kind {
                    GsoKind::Tcp4 | GsoKind::Tcp6 => ffi::RTE_MBUF_F_TX_TCP_SEG,
                    GsoKind::Udp4 | GsoKind::Udp6 => ffi::RTE_MBUF_F_TX_UDP_SEG,
                },
                g.hdr_len - c.start,
                g.size,
            ),
            None => (0, 0, 0),
        };
        let ip_flag = if v4 {
            ffi::RTE_MBUF_F_TX_IPV4
        } else {
            ffi::RTE_MBUF_F_TX_IPV6
        };
        let m = self.sole();
        m.ol_flags |= l4_flag | seg_flag | ip_flag;
        // tx_offload is a plain u64 view of the union (a write needs no
        // unsafe).
        m.__bindgen_anon_3.tx_offload = u64::from(l3 & 0x7f)
            | u64::from(l3_len & 0x1ff) << 7
            | u64::from(l4_len & 0xff) << 16
            | u64::from(segsz) << 24;
        true
    }

    /// Fills `iov` with the frame's segments (the mbuf chain); None if
    /// the chain has more segments than `iov` has room for.
    #[inline]
    pub fn segments_iovec(&self, iov: &mut [libc::iovec]) -> Option<usize> {
        let mut k = 0;
        let mut seg = self.0.as_ptr();
        while !seg.is_null() {
            if k == iov.len() {
                return None;
            }
            // SAFETY: seg is this mbuf or a segment of its chain (next
            // pointers set by the PMD or allocator), owned with it.
            unsafe {
                let m = &*seg;
                iov[k] = libc::iovec {
                    iov_base: (m.buf_addr as *mut u8).add(usize::from(m.data_off)).cast(),
                    iov_len: usize::from(m.data_len),
                };
                seg = m.next;
            }
            k += 1;
        }
        Some(k)
    }

    /// Forgets the frame's offloads (its checksum was completed here).
    #[inline]
    pub fn clear_offload(&mut self) {
        self.sole().ol_flags &= !TX_OFFLOADS;
    }

    /// A fresh, empty mbuf's whole buffer from `before` bytes ahead of
    /// its data start (inside the headroom) to the buffer's end: where a
    /// TAP read puts the virtio-net header and the frame.
    #[inline]
    pub fn read_area(&mut self, before: u16) -> &mut [u8] {
        let m = self.sole();
        assert!(m.data_off >= before, "headroom holds the vnet header");
        // SAFETY: data_off >= before (the pool's headroom is
        // RTE_PKTMBUF_HEADROOM, 128) keeps the start inside the buffer,
        // which ends at buf_addr + buf_len.
        unsafe {
            let start = usize::from(m.data_off - before);
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(start),
                usize::from(m.buf_len) - start,
            )
        }
    }

    /// Sets the frame's length (one segment) after a read filled it or a
    /// trim shortened it; the length must fit the buffer.
    #[inline]
    pub fn set_len(&mut self, n: u16) {
        let m = self.sole();
        assert!(
            usize::from(m.data_off) + usize::from(n) <= usize::from(m.buf_len) && m.next.is_null(),
            "a one-segment frame inside its buffer"
        );
        m.data_len = n;
        m.pkt_len = u32::from(n);
    }

    /// Length of the whole packet (all segments), for byte counters.
    #[inline]
    pub fn pkt_len(&self) -> u32 {
        // SAFETY: see `data`.
        unsafe { self.0.as_ref().pkt_len }
    }

    /// Makes `n` references (n >= 1) of this one, for a frame flooded to
    /// `n` outputs: each tx queue it is sent to (or a free) releases one.
    /// Every segment of a chain gets the count: a free releases each
    /// segment once (`rte_pktmbuf_free`), so a chain shared by n outputs
    /// needs n on all of them, not only on the first.
    #[inline]
    pub fn share(mut self, n: u16) -> Shares {
        assert!(n >= 1, "a frame shared by no one");
        self.sole();
        let mut seg = self.0.as_ptr();
        while !seg.is_null() {
            // SAFETY: seg is this mbuf or a segment of its chain; this is
            // the only reference to all of them (checked above), so plain
            // stores cannot race.
            unsafe {
                (*seg).refcnt = n;
                seg = (*seg).next;
            }
        }
        let m = self.0;
        std::mem::forget(self);
        Shares { m, left: n }
    }

    /// The first segment's data, writable (to rewrite headers in place).
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let m = self.sole();
        // SAFETY: as in `data`; the only reference to the mbuf (checked)
        // borrowed mutably.
        unsafe {
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    /// The first segment's data and the room after it to the buffer's
    /// end, writable: for an edit that grows a frame in place (then
    /// [`Mbuf::set_len`]).
    #[inline]
    pub fn room_mut(&mut self) -> &mut [u8] {
        let m = self.sole();
        // SAFETY: data_off <= buf_len (an mbuf's data starts inside its
        // buffer), so the slice is the buffer's tail; the only reference
        // to the mbuf (checked) borrowed mutably.
        unsafe {
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(usize::from(m.data_off)),
                usize::from(m.buf_len - m.data_off),
            )
        }
    }

    /// Strips `n` bytes off the front (outer headers after decap), as
    /// `rte_pktmbuf_adj` does, in Rust; false (nothing stripped) unless
    /// the first segment holds more than `n` bytes.
    #[inline]
    pub fn adj(&mut self, n: u16) -> bool {
        let m = self.sole();
        if n >= m.data_len {
            return false;
        }
        m.data_off += n;
        m.data_len -= n;
        m.pkt_len -= u32::from(n);
        true
    }

    /// Grows the frame by `n` bytes at the front, into the headroom (for
    /// tunnel headers), as `rte_pktmbuf_prepend` does, in Rust; returns the
    /// new first `n` bytes to fill, or None if the headroom is too small.
    #[inline]
    pub fn prepend(&mut self, n: u16) -> Option<&mut [u8]> {
        let m = self.sole();
        // data_off >= n keeps the new start inside the buffer (the
        // headroom is buf_addr .. buf_addr + data_off).
        if m.data_off < n {
            return None;
        }
        m.data_off -= n;
        m.data_len += n;
        m.pkt_len += u32::from(n);
        // SAFETY: the first n bytes of the data, now inside the headroom
        // (checked above), of the only reference to the mbuf.
        Some(unsafe {
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(usize::from(m.data_off)),
                usize::from(n),
            )
        })
    }

    /// Takes over the reference `m` (a fresh mbuf from an allocation).
    ///
    /// # Safety
    /// `m` is a valid mbuf and the caller hands over its one reference.
    pub(crate) unsafe fn from_raw(m: NonNull<ffi::rte_mbuf>) -> Mbuf {
        Mbuf(m)
    }

    /// The raw pointer, for DPDK calls that read the mbuf.
    #[inline]
    pub(crate) fn as_raw(&self) -> *mut ffi::rte_mbuf {
        self.0.as_ptr()
    }

    /// Gives up the reference without releasing it: the caller stored
    /// the pointer where something else releases it.
    #[inline]
    fn into_raw(self) -> *mut ffi::rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
}

/// A fixed array of mbuf pointers: an rx burst, a tx buffer or a drop list.
/// Never allocates; holds at most [`MAX_BURST`].
pub struct Burst {
    ptrs: [*mut ffi::rte_mbuf; MAX_BURST],
    len: usize,
}

impl Default for Burst {
    fn default() -> Self {
        Burst {
            ptrs: [std::ptr::null_mut(); MAX_BURST],
            len: 0,
        }
    }
}

impl Burst {
    /// Number of mbufs held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether it is full.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == MAX_BURST
    }

    /// The mbufs.
    #[inline]
    pub fn mbufs(&self) -> &[Mbuf] {
        // SAFETY: the first `len` pointers are non-null mbufs (set by
        // rx_burst or push), and Mbuf is repr(transparent) over the pointer.
        unsafe { std::slice::from_raw_parts(self.ptrs.as_ptr() as *const Mbuf, self.len) }
    }

    /// Takes the last mbuf out: the caller owns it now.
    #[inline]
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        NonNull::new(self.ptrs[self.len]).map(Mbuf)
    }

    /// Takes `m` over. The caller checked `!is_full()` (pushing into a
    /// full burst panics on the index).
    #[inline]
    pub fn push(&mut self, m: Mbuf) {
        self.ptrs[self.len] = m.into_raw();
        self.len += 1;
    }

    /// Hands every mbuf out, in order, leaving the burst empty; those not
    /// taken when the iterator is dropped are freed.
    #[inline]
    pub fn drain(&mut self) -> Drain<'_> {
        let end = self.len;
        self.len = 0;
        Drain {
            burst: self,
            next: 0,
            end,
        }
    }

    pub(crate) fn raw_mut(&mut self) -> *mut *mut ffi::rte_mbuf {
        self.ptrs.as_mut_ptr()
    }

    /// Makes the first `n` pointers the burst's mbufs.
    ///
    /// # Safety
    /// A DPDK call filled them with valid mbufs whose references the
    /// burst now owns.
    pub(crate) unsafe fn set_len(&mut self, n: usize) {
        assert!(n <= MAX_BURST);
        self.len = n;
    }

    /// Drops the first `n` entries (they were sent), keeping the rest in order.
    pub(crate) fn consume_front(&mut self, n: usize) {
        self.ptrs.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// Releases the first `n` references (a device copied those frames)
    /// and keeps the rest in order.
    pub(crate) fn free_front(&mut self, n: usize) {
        assert!(n <= self.len);
        if n > 0 {
            // SAFETY: the first n pointers are references this burst owns;
            // they leave it right after.
            unsafe { ffi::rte_pktmbuf_free_bulk(self.ptrs.as_mut_ptr(), n as u32) };
            self.consume_front(n);
        }
    }

    /// Releases every held reference with one `rte_pktmbuf_free_bulk`.
    #[inline]
    pub fn free_all(&mut self) {
        if self.len > 0 {
            // SAFETY: each pointer is a reference this burst owns; after the
            // call none is used again (len is reset).
            unsafe { ffi::rte_pktmbuf_free_bulk(self.ptrs.as_mut_ptr(), self.len as u32) };
            self.len = 0;
        }
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.free_all();
    }
}

/// The mbufs of a [`Burst`], handed out by value ([`Burst::drain`]).
pub struct Drain<'a> {
    burst: &'a mut Burst,
    next: usize,
    end: usize,
}

impl Iterator for Drain<'_> {
    type Item = Mbuf;

    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        if self.next == self.end {
            return None;
        }
        let p = self.burst.ptrs[self.next];
        self.next += 1;
        // SAFETY: pointers below the burst's length at drain() are mbufs
        // it owned; each is handed out once.
        Some(Mbuf(unsafe { NonNull::new_unchecked(p) }))
    }
}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        for m in self.by_ref() {
            drop(m);
        }
    }
}
