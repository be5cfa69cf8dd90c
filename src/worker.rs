//! The poll loop of one worker lcore: it moves mbufs where the pipeline
//! says and counts what it sends.
//!
//! Each round: pick up a new snapshot if one was published; for each rx
//! queue assigned to this worker, receive a burst of up to 32 frames, let
//! the pipeline ([`vswitch::Pipeline`]) decide each frame's fate, and
//! carry the fates out into per-port tx buffers; then flush every tx
//! buffer that holds frames. A buffer that fills up mid-round is flushed
//! at once. Frames a tx queue does not take are freed and counted as
//! `tx_full` on that port.
//!
//! What is left here is what needs the mbufs themselves: stripping outer
//! headers of decapsulated frames (an mbuf adj) and switching them per
//! tunnel port, prepending outer headers in the headroom of frames bound
//! for a tunnel port, copies of flooded frames for tunnels (each needs its
//! own outer headers; local outputs share the frame), DSCP rewrites and
//! policer trims, segmenting superframes and completing checksums for
//! ports that cannot take them, and punting to the VTEP's slow path.
//!
//! Nothing here allocates, locks, logs or makes a syscall per packet; the
//! only per-round syscall is the optional idle sleep.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vswitch::offload::{complete_checksum, trim_superframe, Segments};
use vswitch::security::{set_dscp, KEEP_ALL};
use vswitch::{Arrival, Decisions, DropReason, Fate, Frame, Now, Outcome, PortId, MAX_BURST};

use crate::datapath::{
    Datapath, RxQueue, RxSource, Shared, Stage, TxTarget, WorkerCounters, STAGES,
};
use crate::dpdk::mbuf::{Burst, Mbuf};
use crate::dpdk::{self, port, vhost};
use crate::tap::io_path as tap;
use crate::tap::uring::TapRx;
use crate::trace::live::{Live, Record};
use crate::vtep::{Punt, VtepPath};

/// An rx queue the worker polls itself, with how many polls in a row
/// found it empty.
struct Polled {
    q: RxQueue,
    quiet: u32,
}

/// A vhost-user queue found empty [`QUIET_AFTER`] polls in a row is
/// polled every [`QUIET_EVERY`]th round only, and every
/// [`SILENT_EVERY`]th once [`SILENT_AFTER`] polls found it empty, until a
/// poll finds frames. An empty dequeue takes the vhost library's ring lock
/// (a locked compare-and-swap) and reads a few cache lines of its device
/// and of the guest's ring: 40-50 cycles when done every round, over 100
/// when the lines have gone cold. A guest that is attached but silent
/// would otherwise cost that every round, and hundreds of them would slow
/// every busy port (harness D). The first frame after a quiet spell waits
/// at most QUIET_EVERY - 1 rounds (after a silent one SILENT_EVERY - 1: a
/// few microseconds when the worker is idle, up to about 80 when it is
/// busy); a queue that carries request/response traffic every few tens
/// of microseconds never turns quiet. (A vhost-user NIC without a guest is
/// not polled at all: see `Worker::take`.) Why not the guest's kick
/// (notifications and the kick eventfd, as kernel vhost-net and VPP's
/// adaptive mode do): the kick fd changes under vhost-user messages the
/// library handles on its own thread without telling us, and a missed
/// kick would stall the queue. Why not reading the avail index directly:
/// the guest can remap the ring's memory (SET_MEM_TABLE) at any time,
/// under the library's ring lock only, and a stale read would fault.
const QUIET_AFTER: u32 = 1024;
/// See [`QUIET_AFTER`].
const QUIET_EVERY: u32 = 8;
/// See [`QUIET_AFTER`].
const SILENT_AFTER: u32 = QUIET_AFTER + 16 * 1024;
/// See [`QUIET_AFTER`].
const SILENT_EVERY: u32 = 64;
const _: () = assert!(QUIET_EVERY.is_power_of_two() && SILENT_EVERY.is_power_of_two());

#[derive(Default)]
struct TxBuf {
    frames: Burst,
    bytes: u64,
    /// On the dirty list.
    listed: bool,
}

/// A worker's private state. The snapshot it forwards with is a local of
/// [`Worker::run`], so a poll round costs no reference-count traffic on
/// it.
pub struct Worker {
    index: usize,
    decisions: Box<Decisions>,
    out: Output,
    /// Decapsulated frames of one uplink burst, grouped by tunnel port.
    decapped: Vec<(PortId, Burst)>,
    /// The last unknown VTEP reported to the slow path (not re-reported
    /// for every frame until the new snapshot arrives).
    last_unknown: (u32, u32),
    /// Fresh mbufs of the TAP pool for TAP reads (see `tap::io_path`).
    tap_stash: Burst,
    /// This worker's share of the slow path: frames for the VTEP's host
    /// stack beyond it are dropped (`punt_limit`) before they are copied.
    /// acl's single-owner srTCM meter in packets, rather than another
    /// hand-written token bucket.
    punts: acl::policer::Meter,
    /// Per-stage cycles, when `pmd-perf --stages on` asked for them.
    clock: StageClock,
    /// A running live trace, taken per round (see `crate::trace::live`).
    trace: Option<Arc<Live>>,
    /// The explanations of the traced frames of the burst being decided
    /// (room for a burst, made once).
    traced: Vec<Option<vswitch::Trace>>,
}

/// Opt-in cycle accounting per [`Stage`] (Open vSwitch's
/// pmd-perf-metrics): the clock is read at every stage boundary, about a
/// cycle per frame per boundary on full bursts and one read per empty
/// poll, so it is off unless asked for. Busy cycles outside the stages
/// (the round's own bookkeeping) are what `pmd-perf` shows as `other`.
#[derive(Default)]
struct StageClock {
    on: bool,
    last: u64,
    cycles: [u64; STAGES],
}

impl StageClock {
    /// A stage begins now.
    #[inline]
    fn start(&mut self) {
        if self.on {
            self.last = dpdk::rdtsc();
        }
    }

    /// Stage `s` ended now; the next one begins.
    #[inline]
    fn lap(&mut self, s: Stage) {
        if self.on {
            let t = dpdk::rdtsc();
            self.cycles[s as usize] += t - self.last;
            self.last = t;
        }
    }

    /// The end of a busy round of `frames` frames: its stage cycles go to
    /// the counters. Cycles of empty polls are dropped (idle, not a
    /// stage's).
    fn settle(&mut self, frames: usize, c: &WorkerCounters) {
        if self.on {
            for (counter, cycles) in c.stage_cycles.iter().zip(&mut self.cycles) {
                counter.add(std::mem::take(cycles));
            }
            c.stage_frames.add(frames as u64);
        }
    }
}

/// Where frames leave: per-port tx buffers, the list of references to
/// free, and what encapsulation needs.
struct Output {
    /// The worker's index: its tx queue on every DPDK port.
    queue: u16,
    /// Per NIC slot of the snapshot (grown when a snapshot has more).
    tx: Vec<TxBuf>,
    /// The ports whose tx buffer took frames this round, each once: the
    /// round's flush visits these, not every port.
    dirty: Vec<PortId>,
    drops: Burst,
    /// A running capture, taken per round; frames sent to its port are
    /// copied in `enqueue`.
    capture: Option<Arc<crate::capture::Capture>>,
    /// The round's time (a capture's timestamps).
    now_ns: u64,
    /// Outer IPv4 identification (meaningless with DF, RFC 6864, but
    /// varied for middleboxes that look at it anyway).
    ip_id: u16,
}

/// The busy rx queues of a poll round with the frames each brought, to
/// share the round's common cycles (the TAP queues' io_uring syscall, the
/// final tx flush) among them in proportion (see `rxq`). Beyond
/// [`SHARE_SLOTS`] busy queues in one round, the later ones get no share.
#[derive(Default)]
struct RoundShare {
    queues: [(u32, u32); SHARE_SLOTS],
    len: usize,
    frames: u64,
    /// Common cycles to share.
    overhead: u64,
}

const SHARE_SLOTS: usize = 16;

impl RoundShare {
    #[inline]
    fn add(&mut self, counter: usize, frames: usize) {
        if self.len < SHARE_SLOTS {
            self.queues[self.len] = (counter as u32, frames as u32);
            self.len += 1;
            self.frames += frames as u64;
        }
    }

    /// Adds each queue's share of `overhead` to its counter.
    #[inline]
    fn settle(&self, rxq_cycles: &[vswitch::Counter]) {
        match self.len {
            0 => return,
            // The common case, without a division.
            1 => return rxq_cycles[self.queues[0].0 as usize].add(self.overhead),
            _ => {}
        }
        for &(c, n) in &self.queues[..self.len] {
            rxq_cycles[c as usize].add(self.overhead * u64::from(n) / self.frames);
        }
    }
}

/// Frames per second one worker punts to the VTEP's host stack (ARP and
/// ICMP for the underlay address: a handful per second in normal
/// operation), and the burst it may punt at once.
const PUNT_RATE: u64 = 2000;
const PUNT_BURST: u64 = 256;

impl Worker {
    /// Readies the worker for snapshot `dp`, when it takes it (every tx
    /// buffer is empty then): `polled` becomes the rx queues it polls
    /// itself each round (with the io_uring reader, `uring`, not the TAP
    /// queues: the reader's completions say which have frames, so an idle
    /// TAP costs no step of the round); a tx buffer per NIC slot, the
    /// dirty list and room for a burst's flood sets grow with the ports
    /// that exist, once per snapshot that has more; never per frame.
    fn take(&mut self, dp: &Datapath, uring: bool, polled: &mut Vec<Polled>) {
        polled.clear();
        polled.extend(
            dp.rx_queues[self.index]
                .iter()
                .filter(|q| match &q.src {
                    RxSource::Tap(_) => !uring,
                    // A guest's arrival is a new generation (see
                    // `dpdk::vhost`): until then its queues are not walked.
                    RxSource::Vhost { state, .. } => state.connected(),
                    RxSource::Eth { .. } => true,
                })
                .map(|q| Polled {
                    q: q.clone(),
                    quiet: 0,
                }),
        );
        let n = dp.tx.len();
        if self.out.tx.len() < n {
            self.out.tx.resize_with(n, TxBuf::default);
            self.out.dirty.reserve(n);
        }
        self.decisions.fit(&dp.pipeline);
    }

    /// Worker `index` of the [`Shared`] it will run on, with a flow
    /// cache if `flow_cache`.
    pub fn new(index: usize, flow_cache: bool) -> Worker {
        Worker {
            index,
            decisions: Box::new(if flow_cache {
                Decisions::with_flow_cache()
            } else {
                Decisions::default()
            }),
            out: Output {
                queue: index as u16,
                tx: Vec::new(),
                dirty: Vec::new(),
                drops: Burst::default(),
                capture: None,
                now_ns: 0,
                ip_id: 0,
            },
            decapped: (0..MAX_BURST)
                .map(|_| (PortId(0), Burst::default()))
                .collect(),
            last_unknown: (u32::MAX, 0),
            tap_stash: Burst::default(),
            punts: acl::policer::Meter::new(
                acl::policer::MeterConf::SrTcm {
                    cir: PUNT_RATE,
                    cbs: PUNT_BURST,
                    ebs: 0,
                },
                0,
            ),
            clock: StageClock::default(),
            trace: None,
            traced: (0..MAX_BURST).map(|_| None).collect(),
        }
    }

    /// Polls until `shared.running` is cleared.
    pub fn run(mut self, shared: &Shared) {
        let sleep = std::time::Duration::from_micros(u64::from(shared.idle_sleep_us));
        let slot = &shared.workers[self.index];
        let counters: &WorkerCounters = &slot.counters;
        let mut gen = shared.generation();
        let mut dp: Arc<Datapath> = shared.load();
        let mut rx = Burst::default();
        // TAP queues through io_uring where the kernel has it (at most one
        // syscall per round for all of them, none in a round without
        // frames), else one read per frame.
        let mut tap_rx = match TapRx::new_unless_disabled() {
            Ok(t) => {
                tracing::info!("worker {}: TAP queues read through io_uring", self.index);
                Some(t)
            }
            Err(e) => {
                tracing::warn!(
                    "worker {}: io_uring unavailable ({e}): TAP queues are read with read(2)",
                    self.index
                );
                None
            }
        };
        let mut polled: Vec<Polled> = Vec::new();
        let mut round: u32 = 0;
        let uring = tap_rx.is_some();
        self.take(&dp, uring, &mut polled);
        if let Some(t) = &mut tap_rx {
            t.set_queues(&dp.tap_queues[self.index], &counters.ports);
        }
        while shared.running.load(Ordering::Relaxed) {
            let g = shared.generation();
            if g != gen {
                dp = shared.load();
                gen = g;
                self.take(&dp, uring, &mut polled);
                // Before the ack: no read may hold a queue that left.
                if let Some(t) = &mut tap_rx {
                    t.set_queues(&dp.tap_queues[self.index], &counters.ports);
                }
            }
            slot.ack.store(gen, Ordering::Release);

            let t0 = dpdk::rdtsc();
            let now = Now::from_ns(shared.clock.ns_at(t0));
            let mut got = 0;
            // Per-queue cycles (see `rxq`): `mark` is when the current poll
            // began if known without reading the clock (the round's start,
            // or the end of a busy poll right before); after an empty poll
            // the clock is read only once frames arrived.
            let mut mark = Some(t0);
            let mut share = RoundShare::default();
            round = round.wrapping_add(1);
            self.clock.on = shared.stage_metrics.load(Ordering::Relaxed);
            self.out.now_ns = now.ns;
            shared.capture.follow(&mut self.out.capture);
            shared.trace.follow(&mut self.trace);
            self.clock.cycles = [0; STAGES];
            for (i, p) in polled.iter_mut().enumerate() {
                let q = &p.q;
                self.clock.start();
                let n = match &q.src {
                    RxSource::Eth { dpdk_port, queue } => {
                        port::rx_burst(*dpdk_port, *queue, &mut rx)
                    }
                    RxSource::Vhost { state, queue } => {
                        // Quiet queues take turns (staggered by position).
                        // Powers of two: a mask, not a division.
                        let skip = match p.quiet {
                            q if q >= SILENT_AFTER => SILENT_EVERY - 1,
                            q if q >= QUIET_AFTER => QUIET_EVERY - 1,
                            _ => 0,
                        };
                        if round.wrapping_add(i as u32) & skip != 0 {
                            continue;
                        }
                        let n = vhost::rx_burst(state, *queue, dp.pools.mbufs, &mut rx);
                        p.quiet = if n == 0 { p.quiet.saturating_add(1) } else { 0 };
                        n
                    }
                    RxSource::Tap(fd) => tap::rx_burst(
                        *fd,
                        dp.pools.tap,
                        &mut self.tap_stash,
                        &mut rx,
                        &counters.ports[q.id.port.index()],
                        &counters.syscalls,
                    ),
                };
                if n == 0 {
                    mark = None;
                    continue;
                }
                let start = mark.unwrap_or_else(dpdk::rdtsc);
                got += n;
                self.clock.lap(Stage::Rx);
                self.received(&dp, q.id.port, &mut rx, now, counters);
                let end = dpdk::rdtsc();
                counters.rxq_cycles[q.id.counter()].add(end - start);
                share.add(q.id.counter(), n);
                mark = Some(end);
            }
            if let Some(t) = tap_rx
                .as_mut()
                .filter(|_| !dp.tap_queues[self.index].is_empty())
            {
                // One syscall for every TAP queue: its cycles are shared
                // like the final flush's.
                let start = dpdk::rdtsc();
                self.clock.start();
                t.poll(
                    dp.pools.tap,
                    &mut self.tap_stash,
                    &counters.ports,
                    &counters.syscalls,
                );
                let mut last = dpdk::rdtsc();
                let poll_cycles = last - start;
                let before = got;
                while let Some(q) = t.next_burst(&mut rx) {
                    self.clock.lap(Stage::Rx);
                    got += rx.len();
                    share.add(q.counter(), rx.len());
                    self.received(&dp, q.port, &mut rx, now, counters);
                    let end = dpdk::rdtsc();
                    counters.rxq_cycles[q.counter()].add(end - last);
                    last = end;
                }
                if got > before {
                    share.overhead += poll_cycles;
                    mark = Some(last);
                }
            }
            let tail = if got > 0 {
                mark.unwrap_or_else(dpdk::rdtsc)
            } else {
                0
            };
            self.clock.start();
            if let Some(vt) = &dp.vtep {
                self.out.inject(&dp, vt, counters);
            }
            self.out.flush_all(&dp, counters);
            self.clock.lap(Stage::Tx);
            let t1 = dpdk::rdtsc();
            if got > 0 {
                self.clock.settle(got, counters);
                share.overhead += t1 - tail;
                share.settle(&counters.rxq_cycles);
                counters.busy_cycles.add(t1 - t0);
                counters.burst_cycles.record(t1 - t0);
                counters.packets.add(got as u64);
                if let Some(s) = self.decisions.flow_cache_stats() {
                    counters.flow_cache.publish(&s);
                }
            } else {
                counters.idle_cycles.add(t1 - t0);
                if !sleep.is_zero() {
                    std::thread::sleep(sleep);
                }
            }
        }
    }

    /// A burst received on `port`: the uplink's goes to the VTEP, any
    /// other port's is switched. `rx` ends empty.
    #[inline]
    fn received(
        &mut self,
        dp: &Datapath,
        port: PortId,
        rx: &mut Burst,
        now: Now,
        counters: &WorkerCounters,
    ) {
        if let Some(c) = self.out.capture.as_ref().filter(|c| c.rx && c.port == port) {
            for m in rx.mbufs() {
                c.copy(m.data(), m.pkt_len(), now.ns);
            }
        }
        if dp.pipeline.is_uplink(port) {
            self.rx_uplink(dp, rx, now, counters)
        } else {
            self.switch(dp, port, rx, now, counters)
        }
    }

    /// Hands the first `n` frames' traces of the burst just decided to
    /// the control thread, each with the fate it got.
    #[cold]
    fn record_traces(&mut self, n: usize, now: Now) {
        let Some(live) = self.trace.as_ref() else {
            return;
        };
        let d = &*self.decisions;
        for (i, slot) in self.traced[..n].iter_mut().enumerate() {
            if let Some(trace) = slot.take() {
                live.push(Record {
                    trace,
                    actual: Outcome::of(d, i),
                    remark: d.remark(i),
                    ts_ns: now.ns,
                });
            }
        }
    }

    /// Switches a burst received on `in_port`: the pipeline decides, the
    /// fates are carried out. `rx` ends empty.
    #[inline]
    fn switch(
        &mut self,
        dp: &Datapath,
        in_port: PortId,
        rx: &mut Burst,
        now: Now,
        counters: &WorkerCounters,
    ) {
        // A live trace explains its frames before the burst changes the
        // tables they are judged by.
        let traced = match self.trace.as_ref().filter(|t| t.port == in_port) {
            Some(t) => {
                let n = t.claim(rx.len());
                for (slot, m) in self.traced.iter_mut().zip(&rx.mbufs()[..n]) {
                    *slot = Some(dp.pipeline.trace(in_port, m, now));
                }
                n
            }
            None => 0,
        };
        dp.pipeline.decide(
            in_port,
            rx.mbufs(),
            now,
            &counters.ports,
            &mut self.decisions,
        );
        if traced > 0 {
            self.record_traces(traced, now);
        }
        self.clock.lap(Stage::Decide);
        let d = &*self.decisions;
        let out = &mut self.out;
        let edits = d.has_edits();
        let routed = d.has_router_edits();
        for (i, mut m) in rx.drain().enumerate() {
            let fate = d.fate(i);
            if let Fate::Drop(_) = fate {
                out.drop_frame(m);
                continue;
            }
            if routed {
                // Routed or answered by a VPC's router (headers checked
                // by the pipeline, in the first segment).
                let e = d.edit(i);
                if e.resizes() {
                    if m.is_chained() {
                        // An ICMP error about a chained frame: the chain
                        // would have to go; the drop is counted already.
                        out.drop_frame(m);
                        continue;
                    }
                    m.clear_offload();
                }
                let len = m.data_mut().len();
                let n = e.apply(m.room_mut(), len);
                if n != len {
                    m.set_len(n as u16);
                }
            }
            if edits {
                if let Some(dscp) = d.remark(i) {
                    set_dscp(m.data_mut(), dscp);
                }
                let keep = d.keep(i);
                if keep != KEEP_ALL && !m.is_chained() {
                    // A policer let only the first segments through.
                    let off = m.offload();
                    if let Some(len) = trim_superframe(m.data_mut(), &off, keep) {
                        m.set_len(len as u16);
                    }
                }
            }
            match fate {
                Fate::Local(p) => out.enqueue(dp, p, m, counters),
                Fate::Tunnel(p) => out.encap(dp, p, m, counters),
                Fate::Flood { .. } => {
                    for &p in d.flood_tunnels(i) {
                        out.encap_copy(dp, p, &m, counters);
                    }
                    let locals = d.flood_locals(i);
                    if locals.is_empty() {
                        out.drop_frame(m);
                        continue;
                    }
                    // Shared, the frame is read-only: a partial checksum
                    // some output cannot take is completed first, for all.
                    if m.has_offload()
                        && !m.has_gso()
                        && locals.iter().any(|p| !dp.tx[p.index()].takes(&m.offload()))
                    {
                        Output::complete_checksum(&mut m);
                    }
                    for (m, &p) in m.share(locals.len() as u16).zip(locals) {
                        out.enqueue(dp, p, m, counters);
                    }
                }
                Fate::Drop(_) => unreachable!("handled above"),
            }
        }
        out.drops.free_all();
        self.clock.lap(Stage::Act);
    }

    /// A burst from the uplink: VXLAN to our VTEP is decapsulated and
    /// switched per tunnel port; ARP and other traffic for the VTEP's
    /// address goes to the slow path; the rest was dropped and counted by
    /// the pipeline.
    fn rx_uplink(&mut self, dp: &Datapath, rx: &mut Burst, now: Now, counters: &WorkerCounters) {
        let vt = dp.vtep.as_ref().expect("an uplink has a VTEP");
        dp.pipeline
            .arrive(rx.mbufs(), &counters.ports, &mut self.decisions);
        let uplink = dp.pipeline.overlay.as_ref().expect("a VTEP").uplink;
        let c = &counters.ports[uplink.index()];
        let mut groups = 0;
        for (i, mut m) in rx.drain().enumerate() {
            match self.decisions.arrival(i) {
                Arrival::Inner { port, inner } if m.adj(inner) => {
                    let g = match self.decapped[..groups].iter().position(|(q, _)| *q == port) {
                        Some(g) => g,
                        None => {
                            self.decapped[groups].0 = port;
                            groups += 1;
                            groups - 1
                        }
                    };
                    self.decapped[g].1.push(m);
                    continue;
                }
                Arrival::Inner { .. } => {
                    // Its inner frame is in a later segment of a chain.
                    c.drop(DropReason::VxlanTruncated, 1);
                }
                Arrival::Host => {
                    // The slow path: a copy (ARP and ICMP are small and
                    // rare, and rate-limited before the copy), so the
                    // mbuf never leaves this lcore.
                    if self.punts.color(now.ns, 1) != acl::policer::Color::Green {
                        c.drop(DropReason::PuntLimit, 1);
                    } else if vt.punt(Punt::Frame(m.data().to_vec())) {
                        c.punted.add(1);
                    } else {
                        c.drop(DropReason::PuntFull, 1);
                    }
                }
                Arrival::Learn { vni, remote } => {
                    let key = (vni, u32::from(remote));
                    if self.last_unknown != key {
                        self.last_unknown = key;
                        vt.punt(Punt::Vtep { vni, remote });
                    }
                }
                Arrival::Drop(_) => {}
            }
            self.out.drop_frame(m);
        }
        self.out.drops.free_all();
        self.clock.lap(Stage::Decide);
        for g in 0..groups {
            let (port, mut burst) = std::mem::take(&mut self.decapped[g]);
            self.switch(dp, port, &mut burst, now, counters);
            self.decapped[g].1 = burst;
        }
    }
}

impl Output {
    /// Sends what the slow path queued for the uplink.
    fn inject(&mut self, dp: &Datapath, vt: &VtepPath, counters: &WorkerCounters) {
        let uplink = dp.pipeline.overlay.as_ref().expect("a VTEP").uplink;
        while let Ok(frame) = vt.inject.try_recv() {
            match vt.pool.alloc_frame(&frame) {
                Some(m) => self.enqueue(dp, uplink, m, counters),
                None => counters.ports[uplink.index()].drop(DropReason::NoMbuf, 1),
            }
        }
    }

    /// Sends a frame out of tunnel port `p` (the pipeline checked it fits
    /// and the next hop is known): offloads finished first, as no tunnel
    /// takes them.
    #[inline]
    fn encap(&mut self, dp: &Datapath, p: PortId, m: Mbuf, counters: &WorkerCounters) {
        let m = if m.has_offload() {
            match self.finish_offloads(dp, p, m, true, counters) {
                Some(m) => m,
                None => return,
            }
        } else {
            m
        };
        self.encap_now(dp, p, m, counters);
    }

    /// Prepends tunnel port `p`'s outer headers to a frame without
    /// offloads and queues it on the uplink.
    #[inline]
    fn encap_now(&mut self, dp: &Datapath, p: PortId, mut m: Mbuf, counters: &WorkerCounters) {
        let o = dp
            .pipeline
            .overlay
            .as_ref()
            .expect("tunnel ports exist only with a VTEP");
        let c = &counters.ports[p.index()];
        let inner_len = m.pkt_len();
        let sport = vxlan::encap::source_port(m.data());
        let id = self.ip_id;
        self.ip_id = id.wrapping_add(1);
        match m.prepend(vxlan::OUTER_LEN as u16) {
            Some(hdr) => {
                let hdr: &mut [u8; vxlan::OUTER_LEN] = hdr.try_into().expect("OUTER_LEN bytes");
                o.write_outer(p, sport, inner_len, id, hdr);
                c.tx_packets.add(1);
                c.tx_bytes.add(u64::from(inner_len));
                self.enqueue(dp, o.uplink, m, counters);
            }
            None => {
                c.drop(DropReason::NoMbuf, 1);
                self.drop_frame(m);
            }
        }
    }

    /// A copy of a flooded frame for tunnel port `p`.
    fn encap_copy(&mut self, dp: &Datapath, p: PortId, m: &Mbuf, counters: &WorkerCounters) {
        let vt = dp
            .vtep
            .as_ref()
            .expect("tunnel ports exist only with a VTEP");
        if m.has_offload() {
            if m.is_chained() {
                // See finish_offloads.
                counters.ports[p.index()].drop(DropReason::Malformed, 1);
                return;
            }
            if let Some(s) = Segments::new(m.data(), &m.offload()) {
                self.segment(dp, p, &s, true, counters);
                return;
            }
        }
        // A chained frame (a jumbo from a vhost-user guest) is copied
        // whole, every segment.
        let copy = if m.is_chained() {
            vt.pool.copy_chain(m)
        } else {
            vt.pool.alloc_frame(m.data())
        };
        match copy {
            Some(mut copy) => {
                if let Some(c) = m.offload().csum {
                    complete_checksum(copy.data_mut(), c);
                }
                self.encap_now(dp, p, copy, counters)
            }
            None => counters.ports[p.index()].drop(DropReason::NoMbuf, 1),
        }
    }

    #[inline]
    fn drop_frame(&mut self, m: Mbuf) {
        if self.drops.is_full() {
            self.drops.free_all();
        }
        self.drops.push(m);
    }

    /// Queues `m` for port `p` (or drops it). Offloads the port cannot
    /// take are finished first.
    #[inline]
    fn enqueue(&mut self, dp: &Datapath, p: PortId, m: Mbuf, counters: &WorkerCounters) {
        let target = &dp.tx[p.index()];
        if *target == TxTarget::None {
            counters.ports[p.index()].drop(DropReason::NoOutput, m.wire_packets());
            self.drop_frame(m);
            return;
        }
        let m = if m.has_offload() && !target.takes(&m.offload()) {
            match self.finish_offloads(dp, p, m, false, counters) {
                Some(m) => m,
                None => return,
            }
        } else {
            m
        };
        if let Some(c) = self.capture.as_ref().filter(|c| c.tx && c.port == p) {
            c.copy(m.data(), m.pkt_len(), self.now_ns);
        }
        if self.tx[p.index()].frames.is_full() {
            self.flush(dp, p.index(), counters);
        }
        let b = &mut self.tx[p.index()];
        b.bytes += u64::from(m.pkt_len());
        b.frames.push(m);
        if !b.listed {
            b.listed = true;
            self.dirty.push(p);
        }
    }

    /// Completes a frame's partial checksum in place and forgets its
    /// offloads (the frame must not be shared yet).
    fn complete_checksum(m: &mut Mbuf) {
        if let Some(c) = m.offload().csum {
            complete_checksum(m.data_mut(), c);
        }
        m.clear_offload();
    }

    /// Finishes the offloads of `m` for port `p`, which cannot take them
    /// (a tunnel when `tunnel`). A superframe is cut into segments that
    /// go to `p` in its place, and `m` is released: None. A partial
    /// checksum is completed in place (`m` is not shared: a flood
    /// completes it before sharing) and `m` goes on: Some.
    #[cold]
    #[inline(never)]
    fn finish_offloads(
        &mut self,
        dp: &Datapath,
        p: PortId,
        mut m: Mbuf,
        tunnel: bool,
        counters: &WorkerCounters,
    ) -> Option<Mbuf> {
        if m.is_chained() {
            // A chained frame with offloads (a vhost-user guest's jumbo
            // frame with a partial checksum): finishing it would need its
            // segments linearised; it is dropped and counted rather than
            // sent with a wrong checksum.
            counters.ports[p.index()].drop(DropReason::Malformed, 1);
            self.drop_frame(m);
            return None;
        }
        if let Some(s) = Segments::new(m.data(), &m.offload()) {
            self.segment(dp, p, &s, tunnel, counters);
            self.drop_frame(m);
            return None;
        }
        Self::complete_checksum(&mut m);
        Some(m)
    }

    /// Sends the segments of a superframe to port `p` (through encap for
    /// a tunnel port), each in a fresh mbuf: from the standard pool, or
    /// the TAP pool for a segment larger than its data room (jumbo MSS).
    #[cold]
    #[inline(never)]
    fn segment(
        &mut self,
        dp: &Datapath,
        p: PortId,
        s: &Segments<'_>,
        tunnel: bool,
        counters: &WorkerCounters,
    ) {
        let c = &counters.ports[p.index()];
        c.segmented.add(1);
        for i in 0..s.count() {
            let len = s.len(i);
            let pools = dp.pools;
            let Some(mut seg) = pools
                .mbufs
                .alloc_len(len)
                .or_else(|| pools.tap.alloc_len(len))
            else {
                c.drop(DropReason::NoMbuf, (s.count() - i) as u64);
                return;
            };
            s.write(i, seg.data_mut());
            if tunnel {
                self.encap_now(dp, p, seg, counters);
            } else {
                self.enqueue(dp, p, seg, counters);
            }
        }
    }

    fn flush_all(&mut self, dp: &Datapath, counters: &WorkerCounters) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &p in &dirty {
            self.tx[p.index()].listed = false;
            self.flush(dp, p.index(), counters);
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// After a tx burst that sent `sent` of `queued` frames: the frames
    /// left in `b` are freed and counted as drops for `why`; returns what
    /// was sent, in frames and bytes.
    #[inline]
    fn count_unsent(
        b: &mut TxBuf,
        sent: usize,
        queued: usize,
        c: &vswitch::PortCounters,
        why: DropReason,
    ) -> (u64, u64) {
        let mut bytes = b.bytes;
        if sent < queued {
            bytes -= b
                .frames
                .mbufs()
                .iter()
                .map(|m| u64::from(m.pkt_len()))
                .sum::<u64>();
            let lost = b.frames.mbufs().iter().map(Frame::wire_packets).sum();
            b.frames.free_all();
            c.drop(why, lost);
        }
        (sent as u64, bytes)
    }

    #[inline]
    fn flush(&mut self, dp: &Datapath, p: usize, counters: &WorkerCounters) {
        let b = &mut self.tx[p];
        if b.frames.is_empty() {
            return;
        }
        let c = &counters.ports[p];
        let queued = b.frames.len();
        let superframes = b.frames.mbufs().iter().filter(|m| m.has_gso()).count() as u64;
        let (sent, bytes) = match &dp.tx[p] {
            TxTarget::Eth {
                port: dpdk_port,
                queues,
                locks,
            } => {
                let q = queues[usize::from(self.queue)];
                let _shared = locks.as_ref().map(|l| l.0[usize::from(q)].lock());
                let sent = port::tx_burst(*dpdk_port, q, &mut b.frames);
                Self::count_unsent(b, sent, queued, c, DropReason::TxFull)
            }
            TxTarget::Vhost { state, queues, .. } => {
                match vhost::tx_burst(state, queues[usize::from(self.queue)], &mut b.frames) {
                    Some(sent) => Self::count_unsent(b, sent, queued, c, DropReason::TxFull),
                    // No guest: the port refuses them, as a TAP whose
                    // link is down.
                    None => Self::count_unsent(b, 0, queued, c, DropReason::TxError),
                }
            }
            TxTarget::Tap(fds) => tap::tx_burst(
                fds[usize::from(self.queue) % fds.len()],
                &mut b.frames,
                c,
                &counters.syscalls,
            ),
            TxTarget::None => {
                let lost = b.frames.mbufs().iter().map(Frame::wire_packets).sum();
                b.frames.free_all();
                c.drop(DropReason::NoOutput, lost);
                (0, 0)
            }
        };
        c.tx_packets.add(sent);
        c.tx_bytes.add(bytes);
        c.tx_superframes.add(superframes);
        b.bytes = 0;
    }
}
