//! Packet mbuf pools.

use std::ffi::CString;
use std::ptr::NonNull;

use super::ffi;

/// An `rte_mempool` of packet mbufs.
pub struct Mempool {
    raw: NonNull<ffi::rte_mempool>,
}

// SAFETY: rte_mempool is designed for concurrent use from every lcore
// (per-lcore caches over a lock-free ring); the handle is a plain pointer
// that stays valid until `Drop`, which runs after all workers stopped.
unsafe impl Send for Mempool {}
// SAFETY: as above, all mempool operations are multi-thread safe.
unsafe impl Sync for Mempool {}

/// Pool creation failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot create mbuf pool {name:?} of {count} mbufs: {reason}; give EAL more hugepage memory (eal.memory_mb)")]
pub struct MempoolError {
    name: String,
    count: u32,
    reason: String,
}

impl Mempool {
    /// A pool of `count` mbufs with `data_room` bytes each (headroom
    /// included) and a per-lcore cache of `cache`.
    pub fn new(
        name: &str,
        count: u32,
        cache: u32,
        data_room: u16,
    ) -> Result<Mempool, MempoolError> {
        let cname = CString::new(name).expect("pool name has no NUL");
        // SAFETY: cname is a valid C string for the call; socket -1 = any.
        let raw =
            unsafe { ffi::rte_pktmbuf_pool_create(cname.as_ptr(), count, cache, 0, data_room, -1) };
        NonNull::new(raw)
            .map(|raw| Mempool { raw })
            .ok_or_else(|| MempoolError {
                name: name.into(),
                count,
                reason: super::strerror(super::errno()),
            })
    }

    /// A new mbuf holding a copy of `frame`; see [`PoolHandle::alloc_frame`].
    pub fn alloc_frame(&self, frame: &[u8]) -> Option<super::mbuf::Mbuf> {
        self.handle().alloc_frame(frame)
    }

    /// Mbufs free in the pool (its ring and every lcore's cache) and its
    /// size: `size - free` are in use (in rings, bursts, or leaked).
    pub fn counts(&self) -> (u32, u32) {
        // SAFETY: read-only queries on a live pool; avail_count sums the
        // per-lcore caches without locking (a snapshot, racing benignly
        // with the workers).
        let free = unsafe { ffi::rte_mempool_avail_count(self.raw.as_ptr()) };
        // SAFETY: as above; `size` is set at creation.
        let size = unsafe { self.raw.as_ref().size };
        (free, size)
    }

    /// The pool's name.
    pub fn name(&self) -> String {
        // SAFETY: `name` is a NUL-terminated array set at creation.
        let n = unsafe { std::ffi::CStr::from_ptr(self.raw.as_ref().name.as_ptr()) };
        n.to_string_lossy().into_owned()
    }

    /// A non-owning handle for the data path (see [`PoolHandle`]).
    pub fn handle(&self) -> PoolHandle {
        PoolHandle(self.raw)
    }

    pub(crate) fn as_ptr(&self) -> *mut ffi::rte_mempool {
        self.raw.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: ports using the pool were closed before the pool is dropped.
        unsafe { ffi::rte_mempool_free(self.raw.as_ptr()) };
    }
}

/// A copyable reference to a [`Mempool`], carried in datapath snapshots so
/// workers can allocate (tunnel copies of flooded frames, frames the slow
/// path injects). Valid as long as the pool: the daemon drops the pool only
/// after every worker stopped and every snapshot is gone.
#[derive(Clone, Copy)]
pub struct PoolHandle(NonNull<ffi::rte_mempool>);

// SAFETY: as for Mempool: the pool's operations are multi-thread safe, and
// the handle is only a pointer whose lifetime the daemon guarantees.
unsafe impl Send for PoolHandle {}
// SAFETY: as above.
unsafe impl Sync for PoolHandle {}

impl PoolHandle {
    /// The pool, for DPDK calls that allocate from it.
    pub(crate) fn as_ptr(&self) -> *mut ffi::rte_mempool {
        self.0.as_ptr()
    }

    /// A handle to no pool, for snapshots in tests that never allocate
    /// (allocating from it would crash).
    #[cfg(test)]
    pub(crate) fn unusable() -> PoolHandle {
        PoolHandle(NonNull::dangling())
    }

    /// A new mbuf holding a copy of `frame` behind the pool's standard
    /// headroom (so tunnel headers can still be prepended); None when the
    /// pool is empty or the frame does not fit one segment.
    pub fn alloc_frame(&self, frame: &[u8]) -> Option<super::mbuf::Mbuf> {
        let mut mbuf = self.alloc_len(frame.len())?;
        mbuf.data_mut().copy_from_slice(frame);
        Some(mbuf)
    }

    /// A deep copy of `m`, every segment of its chain, in new mbufs of
    /// this pool (DPDK's `rte_pktmbuf_copy`: chained when the frame does
    /// not fit one); None when the pool runs out.
    pub fn copy_chain(&self, m: &super::mbuf::Mbuf) -> Option<super::mbuf::Mbuf> {
        // SAFETY: m is a valid mbuf the caller holds a reference to; the
        // copy is a new chain whose one reference the returned Mbuf owns.
        unsafe {
            let c = ffi::rte_pktmbuf_copy(m.as_raw(), self.0.as_ptr(), 0, u32::MAX);
            NonNull::new(c).map(|c| super::mbuf::Mbuf::from_raw(c))
        }
    }

    /// A new mbuf whose frame is `len` bytes (their content undefined: the
    /// caller writes them), behind the standard headroom; None when the
    /// pool is empty or `len` does not fit one segment.
    pub fn alloc_len(&self, len: usize) -> Option<super::mbuf::Mbuf> {
        let len = u16::try_from(len).ok()?;
        // SAFETY: the pool is valid for the handle's life (see the type doc).
        let m = NonNull::new(unsafe { ffi::rte_pktmbuf_alloc(self.0.as_ptr()) })?;
        // SAFETY: m is a fresh mbuf owned by us; append returns the start of
        // `len` writable bytes in its one segment, or null if they do not fit.
        let dst = unsafe { ffi::rte_pktmbuf_append(m.as_ptr(), len) } as *mut u8;
        // SAFETY: the fresh mbuf's one reference; dropped (freed) when
        // `len` did not fit.
        let mbuf = unsafe { super::mbuf::Mbuf::from_raw(m) };
        (!dst.is_null()).then_some(mbuf)
    }

    /// Fills `burst` up to [`vswitch::MAX_BURST`] fresh mbufs in one bulk
    /// allocation; false (burst unchanged) when the pool has too few.
    pub fn alloc_bulk(&self, burst: &mut super::mbuf::Burst) -> bool {
        let have = burst.len();
        let want = vswitch::MAX_BURST - have;
        if want == 0 {
            return true;
        }
        // SAFETY: the pool is valid (see the type doc); the burst has room
        // for `want` pointers after its `have` ones, which the call fills
        // with fresh mbufs the burst then owns (or none, on failure).
        unsafe {
            if ffi::rte_pktmbuf_alloc_bulk(self.0.as_ptr(), burst.raw_mut().add(have), want as u32)
                != 0
            {
                return false;
            }
            burst.set_len(vswitch::MAX_BURST);
        }
        true
    }
}
