//! TAP rx through io_uring: one multishot read per TAP queue, frames
//! landing in TAP-pool mbufs that the worker hands the kernel as a ring of
//! provided buffers. One `io_uring_enter` collects the frames of every TAP
//! queue of the worker, however many there are, and only in rounds where
//! frames arrived: a queue without traffic costs nothing (no empty read
//! per round), a busy one no syscall per frame.
//!
//! The ring is the worker's own (`IORING_SETUP_SINGLE_ISSUER |
//! DEFER_TASKRUN`): the kernel copies arriving frames into our buffers
//! only inside that enter, on the worker's CPU, so a buffer changes hands
//! only at points the worker chooses. With `TASKRUN_FLAG` the kernel sets
//! IORING_SQ_TASKRUN in the ring's shared flags when it has such work
//! pending: a round reads that flag and enters only when it is set or
//! requests wait to be submitted (an idle round costs a memory read, not
//! a syscall: harness D measured 60 idle TAPs at 14.3 cycles each per
//! round with an enter every round, 2.7 without, 1.2 once the worker also
//! left TAP queues out of the rx queues it walks each round).
//!
//! Ownership: an mbuf whose buffer the kernel holds sits in `held[bid]`
//! until a completion names `bid`; then it is the worker's like any
//! received mbuf, and a fresh one takes its place in the ring. Frames wait
//! in `ready` (at most [`BUFFERS`], as many as there are buffers) until the
//! worker takes them a burst per queue. A multishot read ends (a completion
//! without `IORING_CQE_F_MORE`) when the ring ran out of buffers or on an
//! error; it is armed again in the next round.
//!
//! Queue set changes follow the snapshot: a queue that left is cancelled
//! (its file reference dropped) before the worker acknowledges the
//! snapshot, so the control plane may close the fd then.
//!
//! Needs Linux 6.7 (IORING_OP_READ_MULTISHOT); where io_uring is missing
//! or disabled the worker reads each queue itself (`io_path::rx_burst`).

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, types, IoUring};
use vswitch::offload::VNET_HDR_LEN;
use vswitch::{Counter, PortCounters, PortId, MAX_BURST};

use super::io_path::accept_frame;
use crate::dpdk::mbuf::{Burst, Mbuf};
use crate::dpdk::mempool::PoolHandle;
use crate::rxq::QueueId;

/// Provided buffers per worker, shared by all its TAP queues: two bursts
/// (64 x 64 KB = 4 MB of the TAP pool), whatever the number of queues.
pub const BUFFERS: usize = 64;
const BGID: u16 = 0;
/// `io_uring_enter` flag: wait for / run completions (include/uapi/linux/io_uring.h).
const IORING_ENTER_GETEVENTS: u32 = 1;
/// user_data of cancel requests (read requests carry queue << 48 | port << 32 | fd).
const CANCEL: u64 = u64::MAX;

/// A TAP queue this reader serves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TapQueue {
    /// Its switch port and queue index.
    pub id: QueueId,
    /// Its fd.
    pub fd: RawFd,
}

impl TapQueue {
    fn token(self) -> u64 {
        u64::from(self.id.queue) << 48 | u64::from(self.id.port.0) << 32 | u64::from(self.fd as u32)
    }

    fn from_token(t: u64) -> TapQueue {
        TapQueue {
            id: QueueId {
                port: PortId((t >> 32) as u16),
                queue: (t >> 48) as u16,
            },
            fd: t as u32 as RawFd,
        }
    }
}

/// A worker's TAP reader.
pub struct TapRx {
    ring: IoUring,
    /// The provided-buffer ring: BUFFERS entries, page aligned.
    bufs: NonNull<types::BufRingEntry>,
    tail: u16,
    /// The mbuf whose area the kernel holds, by buffer id.
    held: Vec<Option<Mbuf>>,
    /// Queues with a multishot read armed (or to re-arm).
    armed: Vec<TapQueue>,
    /// Queues whose read ended, to arm again in the next round.
    rearm: Vec<TapQueue>,
    /// Frames read, in arrival order, with their queue.
    ready: Vec<(TapQueue, Mbuf)>,
    /// Slots of `held` without an mbuf (their buffer is not the kernel's).
    empty: usize,
}

fn ring_layout() -> std::alloc::Layout {
    let size = BUFFERS * std::mem::size_of::<types::BufRingEntry>();
    std::alloc::Layout::from_size_align(size.max(4096), 4096).expect("page-aligned layout")
}

impl TapRx {
    /// A reader, unless the environment says `VSWITCHD_TAP_IO=read` (to
    /// compare the two paths, or to steer clear of a kernel's io_uring).
    pub fn new_unless_disabled() -> io::Result<TapRx> {
        if std::env::var("VSWITCHD_TAP_IO").is_ok_and(|v| v == "read") {
            return Err(io::Error::other("VSWITCHD_TAP_IO=read"));
        }
        Self::new()
    }

    /// A reader, or why io_uring cannot serve (the caller then reads each
    /// queue itself).
    pub fn new() -> io::Result<TapRx> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            // IORING_SQ_TASKRUN in the SQ ring's flags says when reads
            // completed: a round without frames reads a flag instead of
            // entering the kernel (see `poll`).
            .setup_taskrun_flag()
            .setup_cqsize(4 * BUFFERS as u32)
            .build(64)?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::ReadMulti::CODE) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring has no multishot read (Linux < 6.7)",
            ));
        }
        // SAFETY: a non-zero-sized, page-aligned layout.
        let raw = unsafe { std::alloc::alloc_zeroed(ring_layout()) } as *mut types::BufRingEntry;
        let bufs = NonNull::new(raw).ok_or(io::ErrorKind::OutOfMemory)?;
        // SAFETY: the memory holds BUFFERS entries and lives until Drop,
        // which unregisters it before freeing it.
        if let Err(e) = unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(raw as u64, BUFFERS as u16, BGID, 0)
        } {
            // SAFETY: allocated above with this layout, not registered.
            unsafe { std::alloc::dealloc(raw.cast(), ring_layout()) };
            return Err(e);
        }
        Ok(TapRx {
            ring,
            bufs,
            tail: 0,
            held: (0..BUFFERS).map(|_| None).collect(),
            armed: Vec::new(),
            rearm: Vec::new(),
            ready: Vec::with_capacity(BUFFERS),
            empty: BUFFERS,
        })
    }

    /// Gives buffer `bid`, the read area of `m`, to the kernel.
    fn provide(&mut self, bid: usize, mut m: Mbuf) {
        let area = m.read_area(VNET_HDR_LEN as u16);
        let (addr, len) = (area.as_mut_ptr() as u64, area.len() as u32);
        // SAFETY: the index is masked into the ring's BUFFERS entries; the
        // kernel reads entries only up to the tail, published below.
        let e = unsafe {
            &mut *self
                .bufs
                .as_ptr()
                .add(usize::from(self.tail) & (BUFFERS - 1))
        };
        e.set_addr(addr);
        e.set_len(len);
        e.set_bid(bid as u16);
        self.held[bid] = Some(m);
        self.empty -= 1;
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field of the ring's first entry: an aligned u16
        // the kernel reads concurrently, hence atomic, stored with Release
        // after the entry.
        let tail = unsafe { &*(types::BufRingEntry::tail(self.bufs.as_ptr()) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Fills the buffer slots the kernel used from `stash` (refilled from
    /// `pool`); a slot left empty when the pool is dry is filled later.
    fn refill(&mut self, pool: PoolHandle, stash: &mut Burst) {
        if self.empty == 0 {
            return;
        }
        for bid in 0..BUFFERS {
            if self.held[bid].is_some() {
                continue;
            }
            if stash.is_empty() && !pool.alloc_bulk(stash) {
                return;
            }
            let m = stash.pop().expect("stash refilled");
            self.provide(bid, m);
        }
    }

    fn push(&mut self, sqe: &io_uring::squeue::Entry) {
        // SAFETY: reads refer to no memory of ours but the provided
        // buffers, which outlive them (see Drop); cancels to none.
        while unsafe { self.ring.submission().push(sqe) }.is_err() {
            let _ = self.ring.submit();
        }
    }

    fn arm(&mut self, q: TapQueue) {
        let sqe = opcode::ReadMulti::new(types::Fd(q.fd), 0, BGID)
            .build()
            .user_data(q.token());
        self.push(&sqe);
    }

    /// Makes the served set `queues` (this worker's TAP queues in a new
    /// snapshot): new ones armed, gone ones cancelled and their waiting
    /// frames freed. Once this returns no request holds a gone queue's
    /// file, so the worker may acknowledge the snapshot.
    pub fn set_queues(&mut self, queues: &[TapQueue], counters: &[PortCounters]) {
        let gone: Vec<TapQueue> = self
            .armed
            .iter()
            .copied()
            .filter(|q| !queues.contains(q))
            .collect();
        for q in &gone {
            let sqe = opcode::AsyncCancel::new(q.token())
                .build()
                .user_data(CANCEL);
            self.push(&sqe);
        }
        self.armed.retain(|q| queues.contains(q));
        self.rearm.retain(|q| queues.contains(q));
        for &q in queues {
            if !self.armed.contains(&q) {
                self.armed.push(q);
                self.arm(q);
            }
        }
        self.enter();
        self.reap(counters);
        // Frames of queues that left are freed (dropped) here.
        self.ready.retain(|(q, _)| queues.contains(q));
    }

    /// Submits what is queued and runs the kernel's deferred work: the
    /// reads of every frame that arrived since the last call.
    fn enter(&mut self) -> usize {
        let n = self.ring.submission().len() as u32;
        // SAFETY: GETEVENTS with no argument: submits the queued entries
        // (which refer to provided buffers only) and runs deferred work.
        let _ = unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(n, 0, IORING_ENTER_GETEVENTS, None)
        };
        self.ring.completion().len()
    }

    /// Moves completions into `ready`; frames whose header lies are
    /// dropped and counted on their port.
    fn reap(&mut self, counters: &[PortCounters]) {
        let mut cq = self.ring.completion();
        cq.sync();
        for c in &mut cq {
            let (ud, res, flags) = (c.user_data(), c.result(), c.flags());
            if ud == CANCEL {
                continue;
            }
            let q = TapQueue::from_token(ud);
            let live = self.armed.contains(&q);
            if let Some(bid) = cqueue::buffer_select(flags) {
                if let Some(m) = self.held[usize::from(bid)].take() {
                    self.empty += 1;
                    if !live || res <= 0 {
                        drop(m);
                    } else {
                        match accept_frame(m, res as usize, &counters[q.id.port.index()]) {
                            Ok(m) => self.ready.push((q, m)),
                            Err(m) => drop(m),
                        }
                    }
                }
            }
            if !cqueue::more(flags) && live && !self.rearm.contains(&q) {
                self.rearm.push(q);
            }
        }
    }

    /// One round's reads: re-arms ended reads, refills the buffers, and
    /// collects every frame that arrived. It enters the kernel (one
    /// syscall, counted) only when there is something to submit or the
    /// kernel flagged completed reads (IORING_SQ_TASKRUN): an idle round
    /// costs a flag read whatever the number of TAP queues.
    #[inline]
    pub fn poll(
        &mut self,
        pool: PoolHandle,
        stash: &mut Burst,
        counters: &[PortCounters],
        syscalls: &Counter,
    ) {
        self.refill(pool, stash);
        while let Some(q) = self.rearm.pop() {
            self.arm(q);
        }
        let due = {
            let sq = self.ring.submission();
            !sq.is_empty() || sq.taskrun()
        };
        if due {
            self.enter();
            syscalls.add(1);
        }
        self.reap(counters);
    }

    /// Takes up to [`MAX_BURST`] waiting frames of one queue (the queue of
    /// the oldest frame), in order, into the empty `burst`; that queue, or
    /// None when no frame waits.
    #[inline]
    pub fn next_burst(&mut self, burst: &mut Burst) -> Option<QueueId> {
        let q = self.ready.first()?.0;
        let mut taken = 0;
        let mut i = 0;
        while i < self.ready.len() {
            if self.ready[i].0 == q && taken < MAX_BURST {
                let (_, m) = self.ready.remove(i);
                burst.push(m);
                taken += 1;
            } else {
                i += 1;
            }
        }
        Some(q.id)
    }
}

impl Drop for TapRx {
    fn drop(&mut self) {
        // Cancel every read and let the cancellations complete, so the
        // kernel writes into no buffer freed below.
        let sqe = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(CANCEL);
        self.push(&sqe);
        self.enter();
        for (_, m) in self.ready.drain(..) {
            drop(m);
        }
        let _ = self.ring.submitter().unregister_buf_ring(BGID);
        for m in self.held.iter_mut().filter_map(Option::take) {
            drop(m);
        }
        // SAFETY: allocated in `new` with this layout, unregistered above.
        unsafe { std::alloc::dealloc(self.bufs.as_ptr().cast(), ring_layout()) };
    }
}
