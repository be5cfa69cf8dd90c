//! Mbufs as the pipeline sees them, and bursts of them.
//!
//! [`Mbuf`] is `repr(transparent)` over the `rte_mbuf` pointer that rx/tx
//! bursts exchange, so a burst array is handed to DPDK without conversion.
//! Field access (`data`, `len`, refcnt) is done here in Rust on the bindgen
//! struct: a C call per packet for `rte_pktmbuf_mtod` would cost more than the
//! access itself.

use std::ptr::NonNull;

use super::ffi;
use vswitch::{Frame, MAX_BURST};

/// A received packet buffer owned by the worker holding it.
///
/// Not `Send`: an mbuf stays on its lcore from rx to tx (or free).
#[repr(transparent)]
pub struct Mbuf(NonNull<ffi::rte_mbuf>);

impl Frame for Mbuf {
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
}

impl Mbuf {
    /// Length of the whole packet (all segments), for byte counters.
    #[inline]
    pub fn pkt_len(&self) -> u32 {
        // SAFETY: see `data`.
        unsafe { self.0.as_ref().pkt_len }
    }

    /// Gives the mbuf `n` owners (n >= 1): each tx queue it is sent to (or a
    /// free) releases one. Only valid while this worker is the sole owner,
    /// i.e. right after rx, which is when flooding uses it.
    #[inline]
    pub fn set_owners(&mut self, n: u16) {
        // SAFETY: the worker is the only owner (refcnt 1, nothing else holds
        // it), so a plain store cannot race.
        unsafe { self.0.as_mut().refcnt = n };
    }

    /// The first segment's data, writable (to rewrite headers in place).
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`; &mut self means no other reference to the
        // data exists in this worker, and the mbuf is not shared while a
        // worker owns it alone (refcnt 1, not yet sent).
        unsafe {
            let m = self.0.as_mut();
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    /// Strips `n` bytes off the front (outer headers after decap), as
    /// `rte_pktmbuf_adj` does, in Rust. The caller checked that the first
    /// segment holds more than `n` bytes.
    #[inline]
    pub fn adj(&mut self, n: u16) {
        // SAFETY: sole owner (see data_mut); the caller's check keeps
        // data_len and pkt_len from underflowing.
        unsafe {
            let m = self.0.as_mut();
            debug_assert!(n < m.data_len);
            m.data_off += n;
            m.data_len -= n;
            m.pkt_len -= u32::from(n);
        }
    }

    /// Grows the frame by `n` bytes at the front, into the headroom (for
    /// tunnel headers), as `rte_pktmbuf_prepend` does, in Rust; returns the
    /// new first `n` bytes to fill, or None if the headroom is too small.
    /// Only for an mbuf this worker owns alone (refcnt 1).
    #[inline]
    pub fn prepend(&mut self, n: u16) -> Option<&mut [u8]> {
        // SAFETY: sole owner; data_off >= n keeps the new start inside the
        // buffer (the headroom is buf_addr .. buf_addr + data_off).
        unsafe {
            let m = self.0.as_mut();
            if m.data_off < n {
                return None;
            }
            m.data_off -= n;
            m.data_len += n;
            m.pkt_len += u32::from(n);
        }
        Some(&mut self.data_mut()[..usize::from(n)])
    }

    pub(crate) fn from_raw(m: NonNull<ffi::rte_mbuf>) -> Mbuf {
        Mbuf(m)
    }

    /// The raw pointer, for tx buffers.
    #[inline]
    pub(crate) fn as_raw(&self) -> *mut ffi::rte_mbuf {
        self.0.as_ptr()
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

    /// The mbufs, mutable (to set owners before flooding).
    #[inline]
    pub fn mbufs_mut(&mut self) -> &mut [Mbuf] {
        // SAFETY: as in `mbufs`.
        unsafe { std::slice::from_raw_parts_mut(self.ptrs.as_mut_ptr() as *mut Mbuf, self.len) }
    }

    /// Appends one reference. The caller checked `!is_full()`.
    #[inline]
    pub fn push(&mut self, m: &Mbuf) {
        self.ptrs[self.len] = m.as_raw();
        self.len += 1;
    }

    pub(crate) fn raw_mut(&mut self) -> *mut *mut ffi::rte_mbuf {
        self.ptrs.as_mut_ptr()
    }

    /// Empties the burst without freeing: every reference it held was
    /// [`push`](Burst::push)ed into another burst, which now owns it.
    #[inline]
    pub fn handed_over(&mut self) {
        self.len = 0;
    }

    pub(crate) fn set_len(&mut self, n: usize) {
        debug_assert!(n <= MAX_BURST);
        self.len = n;
    }

    /// Drops the first `n` entries (they were sent), keeping the rest in order.
    pub(crate) fn consume_front(&mut self, n: usize) {
        self.ptrs.copy_within(n..self.len, 0);
        self.len -= n;
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
