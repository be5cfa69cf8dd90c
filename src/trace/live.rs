//! `vswitchctl trace PORT --live`: the next frames a port receives,
//! each explained by the worker that switches it (before its burst is
//! decided: the trace sees the tables the burst met) and recorded with
//! the fate the burst really gave it. Records go to the control thread
//! through a crossbeam `ArrayQueue` sized when the trace starts: a
//! worker never allocates, locks or waits for it (a full queue counts
//! the record as dropped).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crossbeam_queue::ArrayQueue;
use vswitch::{Outcome, PortId, Trace};

/// The most frames one live trace follows.
pub const MAX_FRAMES: u64 = 1000;

/// One traced frame: what the pipeline was expected to do, and what it
/// did.
pub struct Record {
    /// The explanation, stage by stage.
    pub trace: Trace,
    /// The fate its burst gave it.
    pub actual: Outcome,
    /// The DSCP a meter wrote into it.
    pub remark: Option<u8>,
    /// The workers' clock when its burst was decided (ns).
    pub ts_ns: u64,
}

/// What workers see of a running live trace.
pub struct Live {
    /// The traced port.
    pub port: PortId,
    /// Frames still to trace.
    left: AtomicI64,
    records: ArrayQueue<Record>,
    /// Records the control thread had no room for.
    dropped: AtomicU64,
}

impl Live {
    /// A trace of the next `count` frames port `port` receives.
    pub fn new(port: PortId, count: u64) -> Live {
        let count = count.clamp(1, MAX_FRAMES);
        Live {
            port,
            left: AtomicI64::new(count as i64),
            records: ArrayQueue::new(count as usize),
            dropped: AtomicU64::new(0),
        }
    }

    /// How many of a burst of `n` frames to trace (claimed: workers
    /// sharing the port never trace more than asked between them).
    #[inline]
    pub fn claim(&self, n: usize) -> usize {
        if self.left.load(Relaxed) <= 0 {
            return 0;
        }
        let before = self.left.fetch_sub(n as i64, Relaxed);
        before.clamp(0, n as i64) as usize
    }

    /// Hands a record to the control thread.
    #[inline]
    pub fn push(&self, r: Record) {
        if self.records.push(r).is_err() {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    /// The next record, if any (control thread).
    pub fn pop(&self) -> Option<Record> {
        self.records.pop()
    }

    /// Whether every frame asked for was claimed.
    pub fn claimed_all(&self) -> bool {
        self.left.load(Relaxed) <= 0
    }

    /// Records lost to a full queue.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}
