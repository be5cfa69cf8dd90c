//! The poll loop of one worker lcore.
//!
//! Each round: pick up a new snapshot if one was published; for each rx
//! queue assigned to this worker, receive a burst of up to 32 frames, let the
//! pipeline decide their fate, and spread them over per-port tx buffers;
//! then flush every tx buffer that holds frames. A buffer that fills up
//! mid-round is flushed at once. Frames a tx queue does not take are freed
//! and counted as `tx_full` on that port.
//!
//! Nothing here allocates, locks, logs or makes a syscall per packet; the
//! only per-round syscall is the optional idle sleep.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vswitch::security::{set_dscp, Scratch};
use vswitch::{Action, DropReason, PortId, MAX_BURST, MAX_PORTS};

use crate::datapath::{Datapath, Shared, WorkerCounters};
use crate::dpdk::mbuf::{Burst, Mbuf};
use crate::dpdk::{self, port};

struct TxBuf {
    frames: Burst,
    bytes: u64,
}

/// A worker's private state: tx buffers and scratch arrays. The snapshot
/// it forwards with is a local of [`Worker::run`], so a poll round costs no
/// reference-count traffic on it.
pub struct Worker {
    index: usize,
    tx: Vec<TxBuf>,
    /// Bit p set: tx buffer of port p holds frames.
    dirty: u64,
    drops: Burst,
    actions: [Action; MAX_BURST],
    scratch: Box<Scratch>,
}

const _: () = assert!(MAX_PORTS <= 64, "dirty is a u64 bitmap");

impl Worker {
    /// Worker `index` of the [`Shared`] it will run on.
    pub fn new(index: usize) -> Worker {
        Worker {
            index,
            tx: (0..MAX_PORTS)
                .map(|_| TxBuf {
                    frames: Burst::default(),
                    bytes: 0,
                })
                .collect(),
            dirty: 0,
            drops: Burst::default(),
            actions: [Action::Flood; MAX_BURST],
            scratch: Box::default(),
        }
    }

    /// Polls until `shared.running` is cleared.
    pub fn run(mut self, shared: &Shared) {
        let hz = u128::from(dpdk::tsc_hz().max(1));
        let start = shared.epoch_tsc;
        let sleep = std::time::Duration::from_micros(u64::from(shared.idle_sleep_us));
        let slot = &shared.workers[self.index];
        let counters: &WorkerCounters = &slot.counters;
        let mut gen = shared.generation();
        let mut dp: Arc<Datapath> = shared.load();
        let mut rx = Burst::default();
        while shared.running.load(Ordering::Relaxed) {
            let g = shared.generation();
            if g != gen {
                dp = shared.load();
                gen = g;
            }
            slot.ack.store(gen, Ordering::Release);

            let t0 = dpdk::rdtsc();
            let now_ns = (u128::from(t0.wrapping_sub(start)) * 1_000_000_000 / hz) as u64;
            let now = (now_ns / 1_000_000_000) as u32;
            let mut got = 0;
            for q in &dp.rx_queues[self.index] {
                let n = port::rx_burst(q.dpdk_port, q.queue, &mut rx);
                if n == 0 {
                    continue;
                }
                got += n;
                dp.switch.forward(
                    q.port,
                    rx.mbufs(),
                    now,
                    &counters.ports[q.port.index()],
                    &mut self.actions,
                );
                let zone = dp.switch.bridge_of(q.port).map_or(0, |b| b.0);
                if dp.security.is_active() {
                    dp.security.filter(
                        q.port,
                        zone,
                        rx.mbufs(),
                        &mut self.actions,
                        &mut self.scratch,
                        now,
                        now_ns,
                        &counters.ports,
                    );
                }
                self.dispatch(&dp, q.port, zone, now, &mut rx, counters);
            }
            self.flush_all(&dp, counters);
            let t1 = dpdk::rdtsc();
            if got > 0 {
                counters.busy_cycles.add(t1 - t0);
                counters.packets.add(got as u64);
            } else {
                counters.idle_cycles.add(t1 - t0);
                if !sleep.is_zero() {
                    std::thread::sleep(sleep);
                }
            }
        }
    }

    /// Moves each frame of `rx` where its action says; `rx` ends empty.
    /// With the security stage on, DSCP rewrites are applied and each
    /// flood copy must pass its port's ingress group.
    #[inline]
    fn dispatch(
        &mut self,
        dp: &Datapath,
        in_port: PortId,
        zone: u16,
        now: u32,
        rx: &mut Burst,
        counters: &WorkerCounters,
    ) {
        let n = rx.len();
        let secure = dp.security.is_active();
        for i in 0..n {
            if secure {
                if let Some(d) = self.scratch.remark[i] {
                    set_dscp(rx.mbufs_mut()[i].data_mut(), d);
                }
            }
            match self.actions[i] {
                Action::Output(p) => self.enqueue(dp, p, &rx.mbufs()[i], counters),
                Action::Flood if secure => {
                    let mut to = [PortId(0); MAX_PORTS];
                    let mut k = 0;
                    for &p in dp.switch.flood_ports(in_port) {
                        if dp.security.admit_flood_copy(
                            p,
                            i,
                            zone,
                            &self.scratch,
                            now,
                            &counters.ports,
                        ) {
                            to[k] = p;
                            k += 1;
                        }
                    }
                    if k == 0 {
                        self.drop_frame(&rx.mbufs()[i]);
                        continue;
                    }
                    rx.mbufs_mut()[i].set_owners(k as u16);
                    for &p in &to[..k] {
                        self.enqueue(dp, p, &rx.mbufs()[i], counters);
                    }
                }
                Action::Flood => {
                    let ports = dp.switch.flood_ports(in_port);
                    rx.mbufs_mut()[i].set_owners(ports.len() as u16);
                    for &p in ports {
                        self.enqueue(dp, p, &rx.mbufs()[i], counters);
                    }
                }
                Action::Drop(_) => self.drop_frame(&rx.mbufs()[i]),
            }
        }
        // Every reference moved to a tx buffer or the drop list.
        rx.handed_over();
        self.drops.free_all();
    }

    #[inline]
    fn drop_frame(&mut self, m: &Mbuf) {
        if self.drops.is_full() {
            self.drops.free_all();
        }
        self.drops.push(m);
    }

    #[inline]
    fn enqueue(&mut self, dp: &Datapath, p: PortId, m: &Mbuf, counters: &WorkerCounters) {
        if dp.tx_port[p.index()].is_none() {
            counters.ports[p.index()].drop(DropReason::NoOutput, 1);
            self.drop_frame(m);
            return;
        }
        if self.tx[p.index()].frames.is_full() {
            self.flush(dp, p.index(), counters);
        }
        let b = &mut self.tx[p.index()];
        b.frames.push(m);
        b.bytes += u64::from(m.pkt_len());
        self.dirty |= 1 << p.index();
    }

    fn flush_all(&mut self, dp: &Datapath, counters: &WorkerCounters) {
        while self.dirty != 0 {
            let p = self.dirty.trailing_zeros() as usize;
            self.flush(dp, p, counters);
        }
    }

    #[inline]
    fn flush(&mut self, dp: &Datapath, p: usize, counters: &WorkerCounters) {
        self.dirty &= !(1 << p);
        let b = &mut self.tx[p];
        if b.frames.is_empty() {
            return;
        }
        let c = &counters.ports[p];
        let queued = b.frames.len();
        let sent = match dp.tx_port[p] {
            Some(dpdk_port) => port::tx_burst(dpdk_port, self.index as u16, &mut b.frames),
            None => 0,
        };
        let mut bytes = b.bytes;
        if sent < queued {
            bytes -= b
                .frames
                .mbufs()
                .iter()
                .map(|m| u64::from(m.pkt_len()))
                .sum::<u64>();
            b.frames.free_all();
            c.drop(DropReason::TxFull, (queued - sent) as u64);
        }
        c.tx_packets.add(sent as u64);
        c.tx_bytes.add(bytes);
        b.bytes = 0;
    }
}
