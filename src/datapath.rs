//! The snapshot workers forward with, and how the control plane replaces it.
//!
//! Publication protocol (quiescent-state RCU, as DPDK's rte_rcu_qsbr):
//! 1. the control plane stores a new `Arc<Datapath>` in `current` and bumps
//!    `generation` (Release);
//! 2. each worker, at the top of every poll round (between bursts, with its
//!    tx buffers flushed), compares `generation` (Acquire) with the one it
//!    runs, loads the new snapshot if it changed, and stores the generation
//!    into its `ack` (Release);
//! 3. [`Shared::publish`] returns once every worker acked: from then on no
//!    worker polls a port the new snapshot dropped, and none holds an mbuf
//!    bound for it, so the port can be stopped and detached.
//!
//! Workers never block: the per-round cost is one atomic load.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use vswitch::offload::{GsoKind, Offload};
use vswitch::{CacheCounters, Counter, CycleHistogram, Pipeline, PortCounters, PortId, MAX_PORTS};

use crate::dpdk::mempool::PoolHandle;
use crate::dpdk::vhost::{GuestOffloads, VhostState};
use crate::dpdk::TscClock;
use crate::rxq::{QueueId, MAX_RXQ};
use crate::tap::uring::TapQueue;

/// One rx queue a worker polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxQueue {
    /// Switch port and queue index.
    pub id: QueueId,
    /// Where its frames come from.
    pub src: RxSource,
}

/// The device side of an rx queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RxSource {
    /// Queue `queue` of DPDK port `dpdk_port`.
    Eth {
        /// DPDK port id.
        dpdk_port: u16,
        /// Queue index.
        queue: u16,
    },
    /// A TAP queue's fd (owned by the control plane's port, which closes
    /// it only after a snapshot without it was published).
    Tap(RawFd),
    /// Queue pair `queue` of a vhost-user port (its guest's transmit ring).
    Vhost {
        /// The port's connection.
        state: Arc<VhostState>,
        /// Queue pair index.
        queue: u16,
    },
}

/// Where a switch port's frames leave.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TxTarget {
    /// Not a port (or a tunnel port: frames leave by the uplink).
    #[default]
    None,
    /// A DPDK port; worker `w` sends on tx queue `queues[w]`. It takes
    /// no offloads.
    Eth {
        /// DPDK port id.
        port: u16,
        /// Per worker: its tx queue. Queue w for worker w, except on a
        /// device with fewer tx queues than there are workers (pcap has
        /// one): there the queues there are, shared.
        queues: Box<[u16]>,
        /// Per tx queue: the lock workers take to send on it, when
        /// several may share it; None when each worker has its own.
        locks: Option<TxLocks>,
    },
    /// A vhost-user port; worker `w` sends on its guest's receive ring of
    /// queue pair `queues[w]`.
    Vhost {
        /// The port's connection.
        state: Arc<VhostState>,
        /// The offloads the guest takes (its negotiated GUEST_* features).
        takes: GuestOffloads,
        /// Per worker: its queue pair. Its own while the guest enabled
        /// enough receive rings, else the enabled ones in turn (a frame
        /// sent to a ring the guest did not enable would be lost). Workers
        /// sharing one need no lock: the library locks each ring.
        queues: Box<[u16]>,
    },
    /// A TAP; worker `w` writes on queue fd `w % len` (the kernel takes
    /// concurrent writes on one queue). It takes superframes and partial
    /// checksums through the virtio-net header.
    Tap(Box<[RawFd]>),
}

/// A tx queue's lock, for workers that share the queue: it spins (a
/// poll-mode lcore must not sleep) and is held across one tx burst.
/// Uncontended it costs one atomic swap and a store per burst. The locks
/// belong to the port, not to a snapshot, so workers on two snapshots
/// during a publication still exclude each other. (Open vSwitch locks a
/// vhost tx queue likewise when PMD threads outnumber the guest's
/// queues.)
#[derive(Debug, Default)]
pub struct TxLock(AtomicBool);

/// A port's tx queue locks (compared by identity: the same port's).
#[derive(Debug, Clone)]
pub struct TxLocks(pub Arc<[TxLock]>);

impl PartialEq for TxLocks {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for TxLocks {}

/// A held [`TxLock`].
pub struct TxGuard<'a>(&'a TxLock);

impl TxLock {
    /// Takes the lock, spinning while another worker holds it.
    #[inline]
    pub fn lock(&self) -> TxGuard<'_> {
        while self.0.swap(true, Ordering::Acquire) {
            while self.0.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        }
        TxGuard(self)
    }
}

impl Drop for TxGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0 .0.store(false, Ordering::Release);
    }
}

/// The tx queue of each of `n_workers` workers on a port of `queues` tx
/// queues whose peer takes frames on those of `enabled` (a bitmap; 0:
/// not known, every queue): each worker its own while there are enough,
/// else the enabled ones in turn.
pub fn tx_queue_map(n_workers: usize, queues: u16, enabled: u64) -> Box<[u16]> {
    let on: Vec<u16> = (0..queues.min(64))
        .filter(|&q| enabled & 1 << q != 0)
        .collect();
    (0..n_workers)
        .map(|w| match on.len() {
            0 => w as u16,
            n => on[w % n],
        })
        .collect()
}

impl TxTarget {
    /// Whether the port takes a frame with offloads `off` as it is (a
    /// partial checksum, a superframe); for others the worker finishes
    /// them.
    #[inline]
    pub fn takes(&self, off: &Offload) -> bool {
        match self {
            TxTarget::Tap(_) => true,
            TxTarget::Vhost { takes, .. } => match off.gso {
                Some(g) => match g.kind {
                    GsoKind::Tcp4 => takes.tso4,
                    GsoKind::Tcp6 => takes.tso6,
                    // No virtio-net feature for UDP segmentation in DPDK 22.11.
                    GsoKind::Udp4 | GsoKind::Udp6 => false,
                },
                None => takes.csum,
            },
            TxTarget::Eth { .. } | TxTarget::None => false,
        }
    }
}

/// The mbuf pools workers allocate from.
#[derive(Clone, Copy)]
pub struct Pools {
    /// Standard mbufs: segments cut from superframes for ports without
    /// offloads, tunnel copies.
    pub mbufs: PoolHandle,
    /// One superframe per mbuf: what TAP queues read into.
    pub tap: PoolHandle,
}

/// What workers forward with.
pub struct Datapath {
    /// What decides each frame's fate: topology, MAC tables, security
    /// groups, sessions, meters, the VTEP's tables.
    pub pipeline: Pipeline,
    /// Per NIC slot (as many as the control thread's port table has):
    /// where its frames leave.
    pub tx: Box<[TxTarget]>,
    /// Per worker: its rx queues.
    pub rx_queues: Vec<Vec<RxQueue>>,
    /// Per worker: its TAP rx queues (those of `rx_queues`), for its
    /// io_uring reader.
    pub tap_queues: Vec<Vec<TapQueue>>,
    /// Where workers take mbufs from.
    pub pools: Pools,
    /// The VTEP's slow path, if configured.
    pub vtep: Option<crate::vtep::VtepPath>,
}

/// Counters of one worker (single writer: that worker).
pub struct WorkerCounters {
    /// Per switch port id ([`MAX_PORTS`] entries, 256 bytes each: 1 MB
    /// per worker, allocated once; ids are reused, counters outlive
    /// snapshots, so they are not resized with the ports).
    pub ports: Box<[PortCounters]>,
    /// TSC cycles of poll rounds that got packets.
    pub busy_cycles: Counter,
    /// TSC cycles of poll rounds that got none.
    pub idle_cycles: Counter,
    /// Frames received.
    pub packets: Counter,
    /// System calls made for TAP queues (reads, including those that found
    /// the queue empty, and writes).
    pub syscalls: Counter,
    /// Cycles of each poll round that had packets (`vswitchctl latency`).
    pub burst_cycles: CycleHistogram,
    /// Its flow cache's hits and misses.
    pub flow_cache: CacheCounters,
    /// Per rx queue ([`QueueId::counter`]): cycles its non-empty polls
    /// took (see `rxq`).
    pub rxq_cycles: Box<[Counter]>,
    /// Cycles per [`Stage`] while stage metrics are on, and the frames
    /// of the rounds they timed.
    pub stage_cycles: [Counter; STAGES],
    /// Frames of the rounds [`WorkerCounters::stage_cycles`] timed.
    pub stage_frames: Counter,
}

/// Where a busy round's cycles go, when stage metrics are on: receiving
/// (the PMD's or the TAP's rx), deciding (the pipeline: decap
/// classification, bridge, router, groups, meters, flow cache), acting
/// (carrying the decisions out: edits, encap, flood copies, tx
/// buffering) and sending (the round's tx bursts and the slow path's
/// injected frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The PMD's, vhost library's or TAP's receive.
    Rx,
    /// The pipeline's decisions.
    Decide,
    /// Carrying them out, up to the tx buffers.
    Act,
    /// The tx bursts.
    Tx,
}

/// How many [`Stage`]s there are.
pub const STAGES: usize = 4;

impl Stage {
    /// Every stage, in the order of [`WorkerCounters::stage_cycles`].
    pub const ALL: [Stage; STAGES] = [Stage::Rx, Stage::Decide, Stage::Act, Stage::Tx];

    /// Its name in `pmd-perf`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Rx => "rx",
            Stage::Decide => "decide",
            Stage::Act => "act",
            Stage::Tx => "tx",
        }
    }
}

impl Default for WorkerCounters {
    fn default() -> Self {
        WorkerCounters {
            ports: (0..MAX_PORTS).map(|_| PortCounters::default()).collect(),
            busy_cycles: Counter::default(),
            idle_cycles: Counter::default(),
            packets: Counter::default(),
            syscalls: Counter::default(),
            burst_cycles: CycleHistogram::default(),
            flow_cache: CacheCounters::default(),
            rxq_cycles: (0..MAX_PORTS * MAX_RXQ)
                .map(|_| Counter::default())
                .collect(),
            stage_cycles: Default::default(),
            stage_frames: Counter::default(),
        }
    }
}

/// A worker's slot in [`Shared`], alone on its cache lines (128 bytes:
/// the adjacent-line prefetcher pairs lines), so one worker's ack does
/// not invalidate the line another worker reads its own from.
#[repr(align(128))]
pub struct WorkerSlot {
    /// Last generation the worker switched to.
    pub ack: AtomicU64,
    /// Its counters.
    pub counters: Box<WorkerCounters>,
}

/// State shared between the control plane and the workers.
pub struct Shared {
    current: ArcSwap<Datapath>,
    generation: AtomicU64,
    /// Cleared to stop the workers.
    pub running: AtomicBool,
    /// One per worker, by worker index.
    pub workers: Vec<WorkerSlot>,
    /// Microseconds a worker sleeps after an empty poll round.
    pub idle_sleep_us: u32,
    /// Whether workers keep a flow cache.
    pub flow_cache: bool,
    /// Whether workers time their stages (`pmd-perf --stages on`; see
    /// `StageClock` in the worker): read once per poll round.
    pub stage_metrics: AtomicBool,
    /// A running port capture (see `crate::capture`).
    pub capture: Handoff<crate::capture::Capture>,
    /// A running live trace (see `crate::trace::live`).
    pub trace: Handoff<crate::trace::live::Live>,
    /// The time base of every worker and the control thread (MAC ages,
    /// session deadlines, meters), so shared tables see one clock.
    pub clock: TscClock,
}

/// Something the control thread hands every worker while it runs (a
/// capture, a live trace): a flag workers read once per poll round, and
/// the thing itself, which a worker takes when the flag rises and lets go
/// at its first round after the flag falls (the control thread waits for
/// that round, [`Shared::synchronize`], before it finishes the job).
pub struct Handoff<T> {
    on: AtomicBool,
    it: arc_swap::ArcSwapOption<T>,
}

impl<T> Default for Handoff<T> {
    fn default() -> Self {
        Handoff {
            on: AtomicBool::new(false),
            it: arc_swap::ArcSwapOption::empty(),
        }
    }
}

impl<T> Handoff<T> {
    /// Hands `it` to the workers.
    pub fn arm(&self, it: Arc<T>) {
        self.it.store(Some(it));
        self.on.store(true, Ordering::Release);
    }

    /// Takes it back (workers let go at their next round).
    pub fn disarm(&self) {
        self.on.store(false, Ordering::Release);
        self.it.store(None);
    }

    /// A worker's round: `mine` follows what is handed out.
    #[inline]
    pub fn follow(&self, mine: &mut Option<Arc<T>>) {
        match (self.on.load(Ordering::Acquire), mine.is_some()) {
            (true, false) => *mine = self.it.load_full(),
            (false, true) => *mine = None,
            _ => {}
        }
    }
}

impl Shared {
    /// State for `n_workers` workers starting with `dp`, on `clock`
    /// (with flow caches; see [`Shared::flow_cache`]).
    pub fn new(dp: Datapath, n_workers: usize, idle_sleep_us: u32, clock: TscClock) -> Shared {
        Shared {
            current: ArcSwap::from_pointee(dp),
            generation: AtomicU64::new(1),
            running: AtomicBool::new(true),
            workers: (0..n_workers)
                .map(|_| WorkerSlot {
                    ack: AtomicU64::new(0),
                    counters: Box::default(),
                })
                .collect(),
            idle_sleep_us,
            flow_cache: true,
            stage_metrics: AtomicBool::new(false),
            capture: Handoff::default(),
            trace: Handoff::default(),
            clock,
        }
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Datapath> {
        self.current.load_full()
    }

    /// The current generation (workers poll this once per round).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Zeroes switch port `port`'s counters on every worker, for a port id
    /// that no acknowledged snapshot has (a removed port's, before another
    /// port takes it).
    pub fn reset_port(&self, port: PortId) {
        for w in &self.workers {
            w.counters.ports[port.index()].reset();
            let first = port.index() * MAX_RXQ;
            for c in &w.counters.rxq_cycles[first..first + MAX_RXQ] {
                c.reset();
            }
        }
    }

    /// Whether every worker has switched to snapshot generation `gen` (or
    /// a later one): nothing older is in use.
    pub fn acked(&self, gen: u64) -> bool {
        self.workers
            .iter()
            .all(|w| w.ack.load(Ordering::Acquire) >= gen)
    }

    /// Publishes `dp` and waits up to `timeout` for every running worker to
    /// switch to it. Returns false if a worker did not ack in time (it is
    /// stuck or stopped): `dp` is live all the same, and what the older
    /// snapshots used must not be freed until [`Shared::acked`] says so.
    pub fn publish(&self, dp: Datapath, timeout: Duration) -> bool {
        self.current.store(Arc::new(dp));
        self.synchronize(timeout)
    }

    /// Makes every worker take the current snapshot afresh at its next
    /// round (its rx queues: a vhost-user guest became ready), without
    /// waiting; the new generation.
    pub fn nudge(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Waits up to `timeout` for every running worker to begin a poll
    /// round (it takes the same snapshot again): what a worker read before
    /// the call, outside a snapshot, it no longer uses (a vhost-user
    /// guest's device id; see `dpdk::vhost`). False as for
    /// [`Shared::publish`].
    pub fn synchronize(&self, timeout: Duration) -> bool {
        let gen = self.nudge();
        let deadline = Instant::now() + timeout;
        loop {
            if self.acked(gen) {
                return true;
            }
            if Instant::now() >= deadline || !self.running.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch::security::Security;
    use vswitch::SwitchBuilder;

    fn snapshot(rx_port: u16) -> Datapath {
        Datapath {
            pipeline: Pipeline::new(
                SwitchBuilder::new().build(None).unwrap(),
                Security::none(Arc::new(acl::session::SessionTable::new(
                    16,
                    Default::default(),
                ))),
                None,
            ),
            tx: vec![TxTarget::None; usize::from(rx_port) + 1].into(),
            rx_queues: vec![vec![RxQueue {
                id: QueueId {
                    port: PortId(rx_port),
                    queue: 0,
                },
                src: RxSource::Eth {
                    dpdk_port: rx_port,
                    queue: 0,
                },
            }]],
            tap_queues: vec![Vec::new()],
            pools: Pools {
                mbufs: PoolHandle::unusable(),
                tap: PoolHandle::unusable(),
            },
            vtep: None,
        }
    }

    #[test]
    fn publish_waits_for_the_worker_to_switch() {
        let shared = Arc::new(Shared::new(snapshot(0), 1, 0, TscClock::new(0, 1)));
        // A stand-in for a worker's poll loop: switch snapshots between
        // rounds and ack the generation, as Worker::run does.
        let w = Arc::clone(&shared);
        let worker = std::thread::spawn(move || {
            let mut seen = 0;
            while w.running.load(Ordering::Relaxed) {
                let g = w.generation();
                let dp = w.load();
                seen = dp.rx_queues[0][0].id.port.0;
                w.workers[0].ack.store(g, Ordering::Release);
                std::thread::yield_now();
            }
            seen
        });
        assert!(shared.publish(snapshot(7), Duration::from_secs(10)));
        // Once publish returned, the worker polls the new port only.
        assert_eq!(shared.load().rx_queues[0][0].id.port, PortId(7));
        shared.running.store(false, Ordering::Relaxed);
        assert_eq!(worker.join().unwrap(), 7);
    }

    #[test]
    fn workers_share_the_queues_a_guest_enabled() {
        // Two workers, two queues: each its own while both are enabled
        // (or nothing is known yet); both on queue 0 when only it is.
        assert_eq!(*tx_queue_map(2, 2, 0b11), [0, 1]);
        assert_eq!(*tx_queue_map(2, 2, 0), [0, 1]);
        assert_eq!(*tx_queue_map(2, 2, 0b01), [0, 0]);
        assert_eq!(*tx_queue_map(3, 4, 0b1010), [1, 3, 1]);
    }

    #[test]
    fn a_tx_lock_excludes_the_other_workers() {
        let lock = Arc::new(TxLock::default());
        let inside = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (lock, inside) = (lock.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let _g = lock.lock();
                        assert_eq!(inside.fetch_add(1, Ordering::Relaxed), 0, "alone");
                        inside.fetch_sub(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
    }

    #[test]
    fn publish_reports_a_worker_that_never_acks() {
        let shared = Shared::new(snapshot(0), 1, 0, TscClock::new(0, 1));
        assert!(!shared.publish(snapshot(1), Duration::from_millis(50)));
    }
}
