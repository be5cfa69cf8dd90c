//! Which worker polls which rx queue, and moving queues off an overloaded
//! worker: Open vSwitch's `pmd-rxq-assign` and `pmd-auto-lb`, for
//! vswitchd's workers.
//!
//! **Measure.** Each worker counts, per rx queue, the TSC cycles its
//! non-empty polls took: receiving (when the poll before it was busy
//! too; after empty polls the clock starts once frames arrived, so idle
//! ports cost no clock read), deciding, enqueueing, and a share of the
//! round's final tx flush in proportion to the frames the queue brought.
//! The control thread samples those counters once a second (summed over
//! workers: a queue that moved keeps its history) and keeps the last
//! [`WINDOW`] seconds.
//!
//! **Place.** A queue is placed once, when its port appears, and stays
//! where it is (placement is sticky: a port added or removed never moves
//! other ports' queues). A queue pinned by the port's `rx_workers` goes
//! to that worker. Otherwise, with `rxq_assign = "cycles"` (the default,
//! as OVS's), to the worker with the least measured load, then the
//! fewest queues; with `"roundrobin"`, to the next worker in turn.
//!
//! **Rebalance.** [`Placement::plan`] places every unpinned queue afresh:
//! busiest queue first, each onto the worker least loaded so far (pinned
//! queues' load counts where they are). `vswitchctl pmd-rxq-rebalance`
//! applies it at once; with `[workers.auto_lb] enabled` the control
//! thread checks every `interval_secs` and applies it when some worker
//! was at least `load_pct` busy over the window and the plan lowers the
//! variance of the workers' loads by at least `improvement_pct` (OVS's
//! pmd-auto-lb criteria and defaults: 95 % and 25 %; its interval is one
//! minute, ours too).
//!
//! **Move.** A DPDK rx queue must never be polled by two lcores at once,
//! and a publication reaches workers at different times, so a queue
//! changes worker in two publications: one in which no worker polls it
//! (acknowledged by every worker: the old one finished its last round
//! with it, tx flushed), then one that gives it to its new worker. Frames
//! wait in the queue's ring meanwhile (microseconds), and their order is
//! kept. A publication that a worker does not acknowledge in time aborts
//! the move: the queue goes back to the worker that had it.

use std::collections::BTreeMap;

use vswitch::PortId;

use crate::config::{AutoLbConf, RxqAssign};

/// Rx queues a port may have (the config's `rx_queues` bound).
pub const MAX_RXQ: usize = 16;

/// Seconds of load history a placement looks at.
pub const WINDOW: usize = 10;

/// An rx queue: its switch port and queue index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId {
    /// Switch port.
    pub port: PortId,
    /// Queue index on that port.
    pub queue: u16,
}

impl QueueId {
    /// Its slot among a worker's per-queue cycle counters.
    #[inline]
    pub fn counter(self) -> usize {
        self.port.index() * MAX_RXQ + usize::from(self.queue)
    }
}

#[derive(Debug)]
struct Entry {
    /// The worker that polls it; None while it moves.
    worker: Option<usize>,
    pinned: bool,
    /// Cycles spent on it in each of the last [`WINDOW`] seconds (a ring,
    /// indexed like [`Placement::slot`]).
    load: [u64; WINDOW],
    /// The summed cycle counter at the last sample; None before the first.
    seen: Option<u64>,
}

impl Entry {
    fn total(&self) -> u64 {
        self.load.iter().sum()
    }
}

#[derive(Debug, Clone, Default)]
struct WorkerLoad {
    busy: [u64; WINDOW],
    idle: [u64; WINDOW],
    seen: Option<(u64, u64)>,
}

/// A queue that changes worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// The queue.
    pub queue: QueueId,
    /// Worker that polled it.
    pub from: usize,
    /// Worker that will.
    pub to: usize,
}

/// What the last rebalance did.
#[derive(Debug, Clone)]
pub struct Rebalance {
    /// Seconds since the workers' epoch when it was applied.
    pub at_secs: u32,
    /// `auto_lb` or `manual`.
    pub trigger: &'static str,
    /// Queues it moved.
    pub moves: Vec<Move>,
    /// Each worker's estimated load before and after (% of one worker).
    pub loads: Loads,
}

/// Each worker's estimated load (the sum of its queues' over the window,
/// in % of one worker) as placed and as a plan would place them.
#[derive(Debug, Clone, PartialEq)]
pub struct Loads {
    /// As placed.
    pub before: Vec<f64>,
    /// As planned.
    pub after: Vec<f64>,
}

impl Loads {
    /// By how much (%) the plan lowers the variance of the loads.
    pub fn improvement_pct(&self) -> f64 {
        let (b, a) = (variance(&self.before), variance(&self.after));
        if b > 0.0 {
            100.0 * (b - a) / b
        } else {
            0.0
        }
    }
}

/// Every rx queue's worker, with the load history that places them.
#[derive(Debug)]
pub struct Placement {
    n_workers: usize,
    /// TSC cycles per second.
    hz: u64,
    queues: BTreeMap<QueueId, Entry>,
    /// Where the next sample goes in every ring.
    slot: usize,
    /// Samples taken (saturates at [`WINDOW`]).
    samples: usize,
    /// Round-robin cursor for `rxq_assign = "roundrobin"`.
    next_rr: usize,
    /// Per worker: busy and idle cycles in each of the last [`WINDOW`]
    /// seconds, and the counters at the last sample.
    workers: Vec<WorkerLoad>,
    /// Seconds (workers' epoch) of the last auto-lb check.
    last_check: u32,
    /// Rebalances applied since start.
    pub rebalances: u64,
    /// The last of them.
    pub last: Option<Rebalance>,
}

impl Placement {
    /// No queues yet, for `n_workers` workers whose cycles run at `hz`.
    pub fn new(n_workers: usize, hz: u64) -> Placement {
        Placement {
            n_workers,
            hz,
            queues: BTreeMap::new(),
            slot: 0,
            samples: 0,
            next_rr: 0,
            workers: vec![WorkerLoad::default(); n_workers],
            last_check: 0,
            rebalances: 0,
            last: None,
        }
    }

    /// Makes the placed queues those of `wanted` (each with its pinned
    /// worker, if any): queues that left are forgotten, new ones placed
    /// by `assign`, the others stay where they are.
    pub fn sync(&mut self, wanted: &[(QueueId, Option<usize>)], assign: RxqAssign) {
        self.queues
            .retain(|q, _| wanted.iter().any(|(w, _)| w == q));
        for &(q, pin) in wanted {
            if self.queues.contains_key(&q) {
                continue;
            }
            let worker = match pin {
                Some(w) => w,
                None => match assign {
                    RxqAssign::Cycles => self.least_loaded(),
                    RxqAssign::Roundrobin => {
                        self.next_rr += 1;
                        (self.next_rr - 1) % self.n_workers
                    }
                },
            };
            self.queues.insert(
                q,
                Entry {
                    worker: Some(worker),
                    pinned: pin.is_some(),
                    load: [0; WINDOW],
                    seen: None,
                },
            );
        }
    }

    /// The worker polling `q` (None: unknown, or moving).
    pub fn worker(&self, q: QueueId) -> Option<usize> {
        self.queues.get(&q).and_then(|e| e.worker)
    }

    /// The worker whose queues measured the least load, then the one with
    /// the fewest queues, then the lowest index.
    fn least_loaded(&self) -> usize {
        let mut load = vec![(0u64, 0usize); self.n_workers];
        for e in self.queues.values() {
            if let Some(w) = e.worker {
                load[w].0 += e.total();
                load[w].1 += 1;
            }
        }
        (0..self.n_workers)
            .min_by_key(|&w| (load[w], w))
            .unwrap_or(0)
    }

    /// The number of workers.
    pub fn n_workers(&self) -> usize {
        self.n_workers
    }

    /// Records one second: `cycles(q)` is queue q's cycle counter summed
    /// over the workers (monotonic while the queue exists), `workers`
    /// each worker's busy and idle cycle counters.
    pub fn sample(&mut self, cycles: impl Fn(QueueId) -> u64, workers: &[(u64, u64)]) {
        for (&q, e) in &mut self.queues {
            let now = cycles(q);
            e.load[self.slot] = e.seen.map_or(0, |s| now.saturating_sub(s));
            e.seen = Some(now);
        }
        for (l, &(busy, idle)) in self.workers.iter_mut().zip(workers) {
            let (b, i) = l.seen.unwrap_or((busy, idle));
            l.busy[self.slot] = busy.saturating_sub(b);
            l.idle[self.slot] = idle.saturating_sub(i);
            l.seen = Some((busy, idle));
        }
        self.slot = (self.slot + 1) % WINDOW;
        self.samples = (self.samples + 1).min(WINDOW);
    }

    /// Queue `q`'s load over the window, in % of one worker.
    pub fn queue_pct(&self, q: QueueId) -> f64 {
        self.queues.get(&q).map_or(0.0, |e| self.pct(e.total()))
    }

    /// `cycles` over the window in % of one worker.
    fn pct(&self, cycles: u64) -> f64 {
        if self.hz == 0 || self.samples == 0 {
            return 0.0;
        }
        100.0 * cycles as f64 / (self.hz as f64 * self.samples as f64)
    }

    /// Each worker's busy share over the window (% of its polling
    /// cycles: rounds that found frames against all rounds).
    pub fn busy_pct(&self) -> Vec<f64> {
        self.workers
            .iter()
            .map(|l| {
                let busy: u64 = l.busy.iter().sum();
                let all = busy + l.idle.iter().sum::<u64>();
                if all == 0 {
                    0.0
                } else {
                    100.0 * busy as f64 / all as f64
                }
            })
            .collect()
    }

    /// Each worker's queues, in queue order.
    pub fn by_worker(&self) -> Vec<Vec<(QueueId, bool)>> {
        let mut out = vec![Vec::new(); self.n_workers];
        for (&q, e) in &self.queues {
            if let Some(w) = e.worker {
                out[w].push((q, e.pinned));
            }
        }
        out
    }

    /// Estimated load of each worker (the sum of its queues', % of one
    /// worker) under `placement`.
    fn worker_loads(&self, placement: impl Fn(QueueId, &Entry) -> Option<usize>) -> Vec<f64> {
        let mut loads = vec![0; self.n_workers];
        for (&q, e) in &self.queues {
            if let Some(w) = placement(q, e) {
                loads[w] += e.total();
            }
        }
        loads.into_iter().map(|c| self.pct(c)).collect()
    }

    /// Every queue placed afresh (see the module doc): by measured cycles
    /// for `Cycles`, in turn for `Roundrobin`; pinned queues stay.
    pub fn plan(&self, assign: RxqAssign) -> BTreeMap<QueueId, usize> {
        let mut plan = BTreeMap::new();
        let mut loads = vec![(0u64, 0usize); self.n_workers];
        for (&q, e) in self.queues.iter().filter(|(_, e)| e.pinned) {
            if let Some(w) = e.worker {
                plan.insert(q, w);
                loads[w].0 += e.total();
                loads[w].1 += 1;
            }
        }
        let mut free: Vec<(QueueId, u64, Option<usize>)> = self
            .queues
            .iter()
            .filter(|(_, e)| !e.pinned)
            .map(|(&q, e)| (q, e.total(), e.worker))
            .collect();
        match assign {
            RxqAssign::Cycles => {
                // Busiest first; equal loads in queue order (stable sort).
                free.sort_by_key(|f| std::cmp::Reverse(f.1));
                for (q, load, current) in free {
                    // On a tie a queue stays where it is; one that measured
                    // nothing does not move at all (it weighs nothing).
                    let w = match current {
                        Some(w) if load == 0 => w,
                        _ => (0..self.n_workers)
                            .min_by_key(|&w| (loads[w].0, Some(w) != current, loads[w].1, w))
                            .unwrap_or(0),
                    };
                    loads[w].0 += load;
                    loads[w].1 += 1;
                    plan.insert(q, w);
                }
            }
            RxqAssign::Roundrobin => {
                for (i, (q, _, _)) in free.into_iter().enumerate() {
                    plan.insert(q, i % self.n_workers);
                }
            }
        }
        plan
    }

    /// Whether auto-lb wants a new plan applied now: called once a
    /// second; it checks every `conf.interval_secs` (`now_secs`: the
    /// workers' clock) that a whole window was measured, some worker's
    /// busy share over it ([`Placement::busy_pct`]) reached `load_pct`,
    /// and the plan lowers the variance of the workers' loads by
    /// `improvement_pct`. Returns the plan with the loads before and
    /// after.
    pub fn auto_lb(
        &mut self,
        conf: &AutoLbConf,
        assign: RxqAssign,
        now_secs: u32,
    ) -> Option<(BTreeMap<QueueId, usize>, Loads)> {
        if !conf.enabled || self.n_workers < 2 || assign != RxqAssign::Cycles {
            return None;
        }
        if now_secs.saturating_sub(self.last_check) < conf.interval_secs {
            return None;
        }
        self.last_check = now_secs;
        let overloaded = self
            .busy_pct()
            .iter()
            .any(|&b| b >= f64::from(conf.load_pct));
        if self.samples < WINDOW || !overloaded {
            return None;
        }
        let plan = self.plan(assign);
        let loads = self.loads(&plan);
        (loads.improvement_pct() >= f64::from(conf.improvement_pct)).then_some((plan, loads))
    }

    /// The workers' loads as placed now and under `plan`.
    pub fn loads(&self, plan: &BTreeMap<QueueId, usize>) -> Loads {
        Loads {
            before: self.worker_loads(|_, e| e.worker),
            after: self.worker_loads(|q, _| plan.get(&q).copied()),
        }
    }

    /// First step of applying `plan`: every queue it moves is taken off
    /// its worker (publish, wait for every worker, then [`finish`]).
    ///
    /// [`finish`]: Placement::finish
    pub fn begin(&mut self, plan: &BTreeMap<QueueId, usize>) -> Vec<Move> {
        let mut moves = Vec::new();
        for (&q, &to) in plan {
            if let Some(e) = self.queues.get_mut(&q) {
                if let Some(from) = e.worker.filter(|&w| w != to) {
                    e.worker = None;
                    moves.push(Move { queue: q, from, to });
                }
            }
        }
        moves
    }

    /// Second step: each moved queue goes to its new worker.
    pub fn finish(&mut self, moves: &[Move]) {
        for m in moves {
            if let Some(e) = self.queues.get_mut(&m.queue) {
                e.worker = Some(m.to);
            }
        }
    }

    /// A move that could not complete: each queue back where it was.
    pub fn abort(&mut self, moves: &[Move]) {
        for m in moves {
            if let Some(e) = self.queues.get_mut(&m.queue) {
                e.worker = Some(m.from);
            }
        }
    }
}

/// The population variance of `loads` (OVS compares these before and
/// after a rebalance).
fn variance(loads: &[f64]) -> f64 {
    if loads.is_empty() {
        return 0.0;
    }
    let n = loads.len() as f64;
    let mean = loads.iter().sum::<f64>() / n;
    loads.iter().map(|&l| (l - mean).powi(2)).sum::<f64>() / n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(port: u16, queue: u16) -> QueueId {
        QueueId {
            port: PortId(port),
            queue,
        }
    }

    const ON: AutoLbConf = AutoLbConf {
        enabled: true,
        interval_secs: 1,
        load_pct: 95,
        improvement_pct: 25,
    };

    /// Feeds `secs` seconds in which each queue's counter grows by its
    /// `rate` cycles per second, and each worker's busy share is `busy`
    /// (in % of 1000 cycles a second).
    fn run(p: &mut Placement, rates: &[(QueueId, u64)], busy: &[u64], secs: u64, start: u64) {
        for s in 0..=secs {
            let t = start + s;
            let workers: Vec<(u64, u64)> = busy
                .iter()
                .map(|&b| (b * 10 * t, (100 - b) * 10 * t))
                .collect();
            p.sample(
                |x| {
                    rates
                        .iter()
                        .find(|(y, _)| *y == x)
                        .map_or(0, |&(_, r)| r * t)
                },
                &workers,
            );
        }
    }

    #[test]
    fn new_queues_go_to_the_least_loaded_worker_and_stay_there() {
        let mut p = Placement::new(2, 1000);
        p.sync(&[(q(0, 0), None), (q(1, 0), None)], RxqAssign::Cycles);
        assert_eq!((p.worker(q(0, 0)), p.worker(q(1, 0))), (Some(0), Some(1)));
        // Port 1 is busy: the next queue goes to worker 0.
        run(&mut p, &[(q(1, 0), 1000)], &[0, 100], WINDOW as u64, 0);
        p.sync(
            &[(q(0, 0), None), (q(1, 0), None), (q(2, 0), None)],
            RxqAssign::Cycles,
        );
        assert_eq!(p.worker(q(2, 0)), Some(0));
        // A port leaving moves nobody else.
        p.sync(&[(q(1, 0), None), (q(2, 0), None)], RxqAssign::Cycles);
        assert_eq!((p.worker(q(1, 0)), p.worker(q(2, 0))), (Some(1), Some(0)));
        assert_eq!(p.worker(q(0, 0)), None);
    }

    #[test]
    fn pinned_queues_go_where_pinned_and_count_in_plans() {
        let mut p = Placement::new(2, 1000);
        p.sync(
            &[(q(0, 0), Some(1)), (q(1, 0), None), (q(2, 0), None)],
            RxqAssign::Roundrobin,
        );
        assert_eq!(p.worker(q(0, 0)), Some(1));
        assert_eq!((p.worker(q(1, 0)), p.worker(q(2, 0))), (Some(0), Some(1)));
        // The pinned queue is the busiest: the others share worker 0.
        run(
            &mut p,
            &[(q(0, 0), 900), (q(1, 0), 300), (q(2, 0), 200)],
            &[50, 90],
            12,
            0,
        );
        let plan = p.plan(RxqAssign::Cycles);
        assert_eq!(plan[&q(0, 0)], 1);
        assert_eq!((plan[&q(1, 0)], plan[&q(2, 0)]), (0, 0));
    }

    #[test]
    fn the_cycles_plan_puts_the_busiest_queue_first_on_the_least_loaded_worker() {
        let mut p = Placement::new(3, 1000);
        let qs: Vec<_> = (0..6).map(|i| (q(i, 0), None)).collect();
        p.sync(&qs, RxqAssign::Roundrobin);
        let rates = [500, 400, 300, 200, 100, 100];
        let r: Vec<_> = (0..6).map(|i| (q(i, 0), rates[usize::from(i)])).collect();
        run(&mut p, &r, &[90, 60, 40], WINDOW as u64, 0);
        let plan = p.plan(RxqAssign::Cycles);
        // 500 -> w0, 400 -> w1, 300 -> w2, 200 -> w2 (the least loaded),
        // 100 -> w1 (400 against 500 and 500), 100 -> w2 (all at 500: it
        // stays where it was).
        let w: Vec<usize> = (0..6).map(|i| plan[&q(i, 0)]).collect();
        assert_eq!(w, [0, 1, 2, 2, 1, 2]);
        let mut loads = [0u64; 3];
        for i in 0..6 {
            loads[w[i]] += rates[i];
        }
        assert_eq!(loads, [500, 500, 600]);
    }

    #[test]
    fn auto_lb_moves_a_busy_queue_off_an_overloaded_worker_once() {
        let mut p = Placement::new(2, 1000);
        // Two busy ports and two idle ones, round robin: both busy ones on 0.
        let qs: Vec<_> = (0..4).map(|i| (q(i, 0), None)).collect();
        p.sync(&qs, RxqAssign::Roundrobin);
        assert_eq!(p.worker(q(2, 0)), Some(0));
        let rates = [(q(0, 0), 1000), (q(2, 0), 1000)];
        // Not a whole window yet: nothing.
        run(&mut p, &rates, &[99, 1], 3, 0);
        assert!(p.auto_lb(&ON, RxqAssign::Cycles, 5).is_none());
        // Not overloaded: nothing.
        run(&mut p, &rates, &[90, 1], WINDOW as u64, 4);
        assert!(p.auto_lb(&ON, RxqAssign::Cycles, 20).is_none());
        run(&mut p, &rates, &[99, 1], WINDOW as u64, 15);
        // Checked at most every interval_secs.
        assert!(p.auto_lb(&ON, RxqAssign::Cycles, 20).is_none());
        let (plan, loads) = p
            .auto_lb(&ON, RxqAssign::Cycles, 21)
            .expect("an overloaded worker with a better plan");
        // 1000 cycles a second of 1000 Hz: each busy queue is a whole worker.
        assert_eq!(loads.before, [200.0, 0.0]);
        assert_eq!(loads.after, [100.0, 100.0]);
        assert_eq!(loads.improvement_pct(), 100.0);
        let moves = p.begin(&plan);
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert_eq!(p.worker(moves[0].queue), None, "parked while it moves");
        p.finish(&moves);
        assert_ne!(p.worker(q(0, 0)), p.worker(q(2, 0)));
        // Balanced now: both workers busy, but no plan improves on it.
        run(&mut p, &rates, &[99, 99], WINDOW as u64, 26);
        assert!(p.auto_lb(&ON, RxqAssign::Cycles, 40).is_none());
        // Switched off, or round robin: never (even unbalanced again).
        p.finish(&[Move {
            queue: moves[0].queue,
            from: moves[0].to,
            to: moves[0].from,
        }]);
        run(&mut p, &rates, &[99, 1], WINDOW as u64, 37);
        let off = AutoLbConf {
            enabled: false,
            ..ON
        };
        assert!(p.auto_lb(&off, RxqAssign::Cycles, 80).is_none());
        assert!(p.auto_lb(&ON, RxqAssign::Roundrobin, 90).is_none());
        assert!(p.auto_lb(&ON, RxqAssign::Cycles, 100).is_some());
    }

    #[test]
    fn an_aborted_move_puts_queues_back() {
        let mut p = Placement::new(2, 1000);
        p.sync(&[(q(0, 0), None), (q(1, 0), None)], RxqAssign::Cycles);
        let plan = BTreeMap::from([(q(0, 0), 1), (q(1, 0), 0)]);
        let moves = p.begin(&plan);
        assert_eq!(moves.len(), 2);
        assert_eq!((p.worker(q(0, 0)), p.worker(q(1, 0))), (None, None));
        p.abort(&moves);
        assert_eq!((p.worker(q(0, 0)), p.worker(q(1, 0))), (Some(0), Some(1)));
    }

    #[test]
    fn loads_are_a_share_of_one_worker_over_the_window() {
        let mut p = Placement::new(1, 1000);
        p.sync(&[(q(3, 1), None)], RxqAssign::Cycles);
        run(&mut p, &[(q(3, 1), 250)], &[25], WINDOW as u64, 0);
        assert!((p.queue_pct(q(3, 1)) - 25.0).abs() < 1e-9);
        assert!((p.busy_pct()[0] - 25.0).abs() < 1e-9);
        assert_eq!(p.by_worker(), vec![vec![(q(3, 1), false)]]);
    }
}
