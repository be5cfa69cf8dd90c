//! QoS policers: RFC 2697 single-rate (srTCM) and RFC 2698 two-rate
//! (trTCM) three-color markers, color-blind, over bytes or packets.
//!
//! Token arithmetic is exact: buckets hold tokens scaled by 10^9 (token
//! nanoseconds per second), so `elapsed_ns * rate` adds exactly the tokens
//! the RFCs accrue in that time with no rounding drift, and tests can
//! check colors against the RFC definitions to the byte.
//!
//! Why not DPDK's rte_meter: it would put DPDK into this crate, and its
//! fixed-point period/bytes-per-period approximation makes exact checks
//! against the RFCs impossible; the per-packet work here is a handful of
//! integer operations either way.
//!
//! Sharing: a port's policer sees frames from every worker that forwards to
//! it. [`SharedMeter`] takes no lock (Open vSwitch's userspace datapath
//! takes a meter's mutex once per batch; a worker preempted while holding
//! it would stall the others): its two buckets are one 128-bit word,
//! changed by one compare-and-swap per burst, and time is claimed with a
//! `fetch_max` on the instant up to which tokens were added, so every
//! nanosecond's tokens are added exactly once whichever worker adds them.
//! One worker policing a meter gets the RFC arithmetic exactly (the same
//! colors as [`Meter`]); with several, an interval claimed by one worker
//! may be added after a later one claimed by another (the time between a
//! claim and its swap, a few hundred nanoseconds), which can only differ
//! from a serial order when a bucket is at its cap: at most that interval's
//! tokens, never tokens created twice. Why not per-worker shares of the
//! rate: a flow on one worker would get 1/N of it.
//!
//! 128-bit compare-and-swap (cmpxchg16b) comes from the `portable-atomic`
//! crate: std has no stable `AtomicU128`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use portable_atomic::AtomicU128;

const NS: u128 = 1_000_000_000;

/// A frame's color.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Color {
    /// Within the committed rate.
    Green,
    /// Above committed, within the excess (srTCM) or peak (trTCM) allowance.
    Yellow,
    /// Above it all.
    Red,
}

/// What the meter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bits of the frame: rates in bit/s, bursts in bits (so a rate in
    /// bit/s needs no division and stays exact).
    Bits,
    /// Frames: rates in packets/s, bursts in packets.
    Packets,
}

/// A meter's parameters, rates in units per second, bursts in units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterConf {
    /// RFC 2697: committed rate and burst, excess burst.
    SrTcm {
        /// Committed information rate.
        cir: u64,
        /// Committed burst size.
        cbs: u64,
        /// Excess burst size.
        ebs: u64,
    },
    /// RFC 2698: committed and peak rates and bursts.
    TrTcm {
        /// Committed information rate.
        cir: u64,
        /// Committed burst size.
        cbs: u64,
        /// Peak information rate (>= cir).
        pir: u64,
        /// Peak burst size.
        pbs: u64,
    },
}

/// What happens to a frame of a color.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorAction {
    /// Forward unchanged.
    Pass,
    /// Forward with this DSCP.
    Remark(u8),
    /// Drop, counted as `policer_drop`.
    Drop,
}

/// A meter plus its per-color actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The meter.
    pub meter: MeterConf,
    /// Bytes or packets.
    pub unit: Unit,
    /// Actions for green, yellow, red.
    pub actions: [ColorAction; 3],
}

impl Policy {
    /// The action for a color.
    pub fn action(&self, c: Color) -> ColorAction {
        self.actions[c as usize]
    }
}

/// One meter's state (single-threaded; see [`SharedMeter`]).
#[derive(Debug, Clone)]
pub struct Meter {
    conf: MeterConf,
    /// Committed bucket (C), scaled by 10^9.
    c: u128,
    /// Excess (E, srTCM) or peak (P, trTCM) bucket, scaled.
    e: u128,
    last_ns: u64,
}

impl Meter {
    /// A meter with full buckets at time `now_ns` (RFC: Tc(0) = CBS, ...).
    pub fn new(conf: MeterConf, now_ns: u64) -> Meter {
        let (c, e) = match conf {
            MeterConf::SrTcm { cbs, ebs, .. } => (cbs, ebs),
            MeterConf::TrTcm { cbs, pbs, .. } => (cbs, pbs),
        };
        Meter {
            conf,
            c: u128::from(c) * NS,
            e: u128::from(e) * NS,
            last_ns: now_ns,
        }
    }

    fn refill(&mut self, now_ns: u64) {
        self.fill(now_ns.saturating_sub(self.last_ns));
        self.last_ns = self.last_ns.max(now_ns);
    }

    /// Adds the tokens of `dt` nanoseconds.
    fn fill(&mut self, dt: u64) {
        let dt = u128::from(dt);
        match self.conf {
            MeterConf::SrTcm { cir, cbs, ebs } => {
                // C fills at CIR; what overflows C fills E (RFC 2697 2.).
                let (cap_c, cap_e) = (u128::from(cbs) * NS, u128::from(ebs) * NS);
                let add = dt * u128::from(cir);
                let room = cap_c - self.c;
                if add <= room {
                    self.c += add;
                } else {
                    self.c = cap_c;
                    self.e = (self.e + (add - room)).min(cap_e);
                }
            }
            MeterConf::TrTcm { cir, cbs, pir, pbs } => {
                self.c = (self.c + dt * u128::from(cir)).min(u128::from(cbs) * NS);
                self.e = (self.e + dt * u128::from(pir)).min(u128::from(pbs) * NS);
            }
        }
    }

    /// Colors a frame of `size` units arriving at `now_ns` (color-blind)
    /// and takes its tokens.
    pub fn color(&mut self, now_ns: u64, size: u64) -> Color {
        self.refill(now_ns);
        self.take(size)
    }

    /// Colors a frame of `size` units against the buckets as they are
    /// and takes its tokens.
    fn take(&mut self, size: u64) -> Color {
        let b = u128::from(size) * NS;
        match self.conf {
            MeterConf::SrTcm { .. } => {
                if self.c >= b {
                    self.c -= b;
                    Color::Green
                } else if self.e >= b {
                    self.e -= b;
                    Color::Yellow
                } else {
                    Color::Red
                }
            }
            MeterConf::TrTcm { .. } => {
                if self.e < b {
                    Color::Red
                } else if self.c < b {
                    self.e -= b;
                    Color::Yellow
                } else {
                    self.e -= b;
                    self.c -= b;
                    Color::Green
                }
            }
        }
    }
}

/// Largest burst, in units, a [`SharedMeter`] holds (its buckets are
/// 64-bit halves scaled by 10^9): 10 Gbit, or 10^10 packets.
pub const MAX_BURST_UNITS: u64 = 10_000_000_000;

/// A meter shared by the workers that police one port or class, without a
/// lock (see the module documentation).
pub struct SharedMeter {
    /// The policy it applies.
    pub policy: Policy,
    /// The committed bucket in the low half, the excess (srTCM) or peak
    /// (trTCM) bucket in the high half, scaled as [`Meter`]'s.
    buckets: AtomicU128,
    /// Tokens were added up to this instant (ns).
    filled_to: AtomicU64,
}

impl SharedMeter {
    /// A meter for `policy`, buckets full at `now_ns`. Its bursts must be
    /// at most [`MAX_BURST_UNITS`] (the config refuses larger ones).
    pub fn new(policy: Policy, now_ns: u64) -> SharedMeter {
        let m = Meter::new(policy.meter, now_ns);
        let (b1, b2) = match policy.meter {
            MeterConf::SrTcm { cbs, ebs, .. } => (cbs, ebs),
            MeterConf::TrTcm { cbs, pbs, .. } => (cbs, pbs),
        };
        assert!(
            b1 <= MAX_BURST_UNITS && b2 <= MAX_BURST_UNITS,
            "meter bursts fit a 64-bit scaled bucket"
        );
        SharedMeter {
            policy,
            buckets: AtomicU128::new(m.c | m.e << 64),
            filled_to: AtomicU64::new(now_ns),
        }
    }

    /// Polices a burst: `sizes[i]` is frame i on the wire, its verdict
    /// into `out[i]`; one compare-and-swap for the whole burst (repeated
    /// only if another worker changed the buckets meanwhile).
    ///
    /// A superframe (several wire packets) is policed as its segments
    /// would be, one after another at the same instant: the segments up to
    /// the first one whose color's action is drop pass, that one and every
    /// later one are cut (they take no tokens: they are not sent). The
    /// caller sends the kept segments (the superframe trimmed) and counts
    /// the others as dropped, so a policer holds the same rate in wire
    /// bytes whether the sender segmented or not.
    pub fn police_burst(&self, now_ns: u64, sizes: &[WireLen], out: &mut [Policed]) {
        let dt = now_ns.saturating_sub(self.filled_to.fetch_max(now_ns, Relaxed));
        let mut cur = self.buckets.load(Relaxed);
        loop {
            let mut m = Meter {
                conf: self.policy.meter,
                c: cur & u128::from(u64::MAX),
                e: cur >> 64,
                last_ns: now_ns,
            };
            m.fill(dt);
            self.color_burst(&mut m, sizes, out);
            let next = m.c | m.e << 64;
            if next == cur {
                return;
            }
            match self
                .buckets
                .compare_exchange_weak(cur, next, Relaxed, Relaxed)
            {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// The color a frame of `size` would get at `now_ns` (its first
    /// segment's, for a superframe) and what policing it would decide,
    /// without taking its tokens: what `vswitchctl trace` shows.
    pub fn peek(&self, now_ns: u64, size: WireLen) -> (Color, Policed) {
        let cur = self.buckets.load(Relaxed);
        let mut m = Meter {
            conf: self.policy.meter,
            c: cur & u128::from(u64::MAX),
            e: cur >> 64,
            last_ns: now_ns,
        };
        m.fill(now_ns.saturating_sub(self.filled_to.load(Relaxed)));
        let first = match self.policy.unit {
            Unit::Bits => u64::from(size.seg_bytes.min(size.bytes)) * 8,
            Unit::Packets => 1,
        };
        let color = m.clone().take(first);
        let mut out = [Policed::default()];
        self.color_burst(&mut m, &[size], &mut out);
        (color, out[0])
    }

    fn color_burst(&self, m: &mut Meter, sizes: &[WireLen], out: &mut [Policed]) {
        for (w, o) in sizes.iter().zip(out.iter_mut()) {
            *o = Policed {
                kept: 0,
                remark: None,
            };
            for seg in 0..w.packets {
                let bytes = if seg + 1 == w.packets {
                    w.bytes - (w.packets - 1) * w.seg_bytes
                } else {
                    w.seg_bytes
                };
                let units = match self.policy.unit {
                    Unit::Bits => u64::from(bytes) * 8,
                    Unit::Packets => 1,
                };
                match self.policy.action(m.take(units)) {
                    ColorAction::Drop => break,
                    ColorAction::Pass => {}
                    // The worst remark of the kept segments marks the frame.
                    ColorAction::Remark(d) => o.remark = Some(d),
                }
                o.kept += 1;
            }
        }
    }
}

/// What a policer decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policed {
    /// Wire packets that pass (all of them, or the first `kept` segments
    /// of a superframe; 0: the frame is dropped).
    pub kept: u32,
    /// DSCP the passing packets are re-marked with.
    pub remark: Option<u8>,
}

/// What a frame costs on the wire: its bytes and packets. A superframe
/// (a GSO frame from a TAP with offloads) stands for `packets` segments
/// of `seg_bytes` each (the last one shorter), headers included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WireLen {
    /// Bytes on the wire.
    pub bytes: u32,
    /// Packets on the wire.
    pub packets: u32,
    /// Bytes of each packet but the last.
    pub seg_bytes: u32,
}

impl WireLen {
    /// One plain frame of `bytes`.
    pub fn frame(bytes: u32) -> WireLen {
        WireLen {
            bytes,
            packets: 1,
            seg_bytes: bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2697 by the letter: integer tokens, incremented CIR times per
    /// second, one token at a time.
    struct Rfc2697 {
        cir: u64,
        cbs: u64,
        ebs: u64,
        tc: u64,
        te: u64,
        /// Accrued token-nanoseconds not yet a whole token.
        credit_ns: u128,
        last: u64,
    }

    impl Rfc2697 {
        fn color(&mut self, now: u64, b: u64) -> Color {
            self.credit_ns += u128::from(now - self.last) * u128::from(self.cir);
            self.last = now;
            while self.credit_ns >= NS {
                self.credit_ns -= NS;
                if self.tc < self.cbs {
                    self.tc += 1;
                } else if self.te < self.ebs {
                    self.te += 1;
                }
            }
            assert_eq!(self.credit_ns, 0, "frames arrive on whole-token times");
            if self.tc >= b {
                self.tc -= b;
                Color::Green
            } else if self.te >= b {
                self.te -= b;
                Color::Yellow
            } else {
                Color::Red
            }
        }
    }

    #[test]
    fn srtcm_matches_the_rfc_on_whole_token_traffic() {
        // Frames arriving on whole-token boundaries: the reference and the
        // scaled meter must agree exactly.
        let (cir, cbs, ebs) = (1_000_000u64, 3_000, 2_000);
        let mut m = Meter::new(MeterConf::SrTcm { cir, cbs, ebs }, 0);
        let mut r = Rfc2697 {
            cir,
            cbs,
            ebs,
            tc: cbs,
            te: ebs,
            credit_ns: 0,
            last: 0,
        };
        // A token per us; a frame every ms of 0..2199 tokens: offered
        // about what the rate allows, so all colors occur.
        let mut x: u64 = 12345;
        let mut seen = [0; 3];
        for i in 0..5_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let size = (x >> 33) % 2200;
            let now = i * 1_000_000;
            let (a, b) = (m.color(now, size), r.color(now, size));
            assert_eq!(a, b, "frame {i} of {size} B");
            seen[a as usize] += 1;
        }
        assert!(
            seen.iter().all(|&n| n > 50),
            "all three colors exercised: {seen:?}"
        );
    }

    #[test]
    fn srtcm_overflow_of_c_fills_e() {
        let mut m = Meter::new(
            MeterConf::SrTcm {
                cir: 100,
                cbs: 100,
                ebs: 100,
            },
            0,
        );
        assert_eq!(m.color(0, 100), Color::Green);
        assert_eq!(m.color(0, 100), Color::Yellow);
        assert_eq!(m.color(0, 1), Color::Red);
        // 1 s refills C (100); 1 more s overflows into E (100).
        assert_eq!(m.color(2_000_000_000, 100), Color::Green);
        assert_eq!(m.color(2_000_000_000, 100), Color::Yellow);
        assert_eq!(m.color(2_000_000_000, 1), Color::Red);
        // Half a second: 50 tokens in C exactly.
        assert_eq!(m.color(2_500_000_000, 51), Color::Red);
        assert_eq!(m.color(2_500_000_000, 50), Color::Green);
    }

    #[test]
    fn trtcm_follows_rfc_2698() {
        // CIR 1000/s CBS 1000, PIR 2000/s PBS 2000.
        let conf = MeterConf::TrTcm {
            cir: 1000,
            cbs: 1000,
            pir: 2000,
            pbs: 2000,
        };
        let mut m = Meter::new(conf, 0);
        assert_eq!(m.color(0, 1000), Color::Green); // Tp 1000, Tc 0
        assert_eq!(m.color(0, 1000), Color::Yellow); // Tp 0
        assert_eq!(m.color(0, 1), Color::Red); // Tp < 1
                                               // 0.25 s: Tc += 250, Tp += 500.
        assert_eq!(m.color(250_000_000, 501), Color::Red);
        assert_eq!(m.color(250_000_000, 251), Color::Yellow); // Tp 249, Tc 250
        assert_eq!(m.color(250_000_000, 249), Color::Green); // Tp 0, Tc 1
                                                             // Buckets cap at their burst sizes however long the pause.
        let mut m = Meter::new(conf, 0);
        assert_eq!(m.color(u64::MAX / 2, 2001), Color::Red);
        assert_eq!(m.color(u64::MAX / 2, 1001), Color::Yellow);
    }

    #[test]
    fn a_peek_foretells_the_next_verdict_and_takes_nothing() {
        // 10 frames of 1500 B in the committed burst, 5 in the excess.
        let policy = Policy {
            meter: MeterConf::SrTcm {
                cir: 1_000_000,
                cbs: 15_000 * 8,
                ebs: 7_500 * 8,
            },
            unit: Unit::Bits,
            actions: [
                ColorAction::Pass,
                ColorAction::Remark(10),
                ColorAction::Drop,
            ],
        };
        let sm = SharedMeter::new(policy, 0);
        let mut out = [Policed::default(); 1];
        let mut colors = Vec::new();
        for _ in 0..16 {
            let (c, p) = sm.peek(0, WireLen::frame(1500));
            assert_eq!(
                sm.peek(0, WireLen::frame(1500)),
                (c, p),
                "peeking took tokens"
            );
            sm.police_burst(0, &[WireLen::frame(1500)], &mut out);
            assert_eq!(p, out[0]);
            colors.push(c);
        }
        let count = |c| colors.iter().filter(|&&x| x == c).count();
        assert_eq!(
            (count(Color::Green), count(Color::Yellow), count(Color::Red)),
            (10, 5, 1)
        );
        // 12 ms later the committed bucket has 1500 B again.
        assert_eq!(sm.peek(12_000_000, WireLen::frame(1500)).0, Color::Green);
    }

    #[test]
    fn rate_holds_over_time() {
        // 1 Mbit/s, 1500-byte frames offered at 10x the rate for 10 s:
        // green bytes are CBS + 10 s of CIR, to the frame.
        let policy = Policy {
            meter: MeterConf::SrTcm {
                cir: 1_000_000,
                cbs: 15_000 * 8,
                ebs: 0,
            },
            unit: Unit::Bits,
            actions: [ColorAction::Pass, ColorAction::Drop, ColorAction::Drop],
        };
        let sm = SharedMeter::new(policy, 0);
        let mut green = 0u64;
        let gap = 1_200_000; // 1500 B every 1.2 ms = 1.25 MB/s
        let mut out = [Policed::default(); 1];
        for i in 0..(10_000_000_000 / gap) {
            sm.police_burst(i * gap, &[WireLen::frame(1500)], &mut out);
            if out[0].kept == 1 {
                green += 1500;
            }
        }
        let want = 15_000 + 10 * 125_000;
        assert!(green.abs_diff(want) <= 1500, "green {green} B, want {want}");
    }

    #[test]
    fn one_worker_on_a_shared_meter_gets_the_rfc_colors_exactly() {
        // The shared meter against the single-owner one (itself checked
        // against RFC 2697 above), frame by frame, bursts of 1-4 frames.
        for conf in [
            MeterConf::SrTcm {
                cir: 1000,
                cbs: 30,
                ebs: 20,
            },
            MeterConf::TrTcm {
                cir: 1000,
                cbs: 30,
                pir: 1500,
                pbs: 40,
            },
        ] {
            let policy = Policy {
                meter: conf,
                unit: Unit::Packets,
                actions: [ColorAction::Pass, ColorAction::Remark(1), ColorAction::Drop],
            };
            let (sm, mut m) = (SharedMeter::new(policy, 0), Meter::new(conf, 0));
            let mut x: u64 = 99;
            let mut now = 0;
            let mut seen = [0; 3];
            for _ in 0..5_000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Mostly faster than the rate, sometimes a pause that
                // fills C and lets it overflow into E.
                now += if x.is_multiple_of(5) {
                    (x >> 40) % 100_000_000
                } else {
                    (x >> 40) % 1_000_000
                };
                let n = 1 + (x >> 20) as usize % 4;
                let sizes: Vec<WireLen> = (0..n).map(|_| WireLen::frame(1)).collect();
                let mut out = vec![Policed::default(); n];
                sm.police_burst(now, &sizes, &mut out);
                for o in &out {
                    // In packets a frame is one unit; the reference colors it.
                    let c = m.color(now, 1);
                    seen[c as usize] += 1;
                    let want = match c {
                        Color::Green => (1, None),
                        Color::Yellow => (1, Some(1)),
                        Color::Red => (0, None),
                    };
                    assert_eq!((o.kept, o.remark), want);
                }
            }
            assert!(seen.iter().all(|&k| k > 50), "{seen:?}");
        }
    }

    #[test]
    fn workers_sharing_a_meter_never_create_tokens_twice() {
        // Four threads police one meter (1000 packets/s, bursts of 100)
        // on a shared clock for 2 simulated seconds, offering 20x the
        // rate: what passes is the bursts plus 2 s of rate, to within the
        // frames in flight at the end.
        let policy = Policy {
            meter: MeterConf::SrTcm {
                cir: 1000,
                cbs: 100,
                ebs: 100,
            },
            unit: Unit::Packets,
            actions: [ColorAction::Pass, ColorAction::Pass, ColorAction::Drop],
        };
        let sm = std::sync::Arc::new(SharedMeter::new(policy, 0));
        let clock = std::sync::Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (sm, clock) = (sm.clone(), clock.clone());
                std::thread::spawn(move || {
                    let mut passed = 0;
                    let mut out = [Policed::default(); 2];
                    loop {
                        // 40,000 bursts of 2 frames over 2 s, shared.
                        let now = clock.fetch_add(50_000, Relaxed);
                        if now > 2_000_000_000 {
                            return passed;
                        }
                        sm.police_burst(now, &[WireLen::frame(1); 2], &mut out);
                        passed += out.iter().map(|o| u64::from(o.kept)).sum::<u64>();
                    }
                })
            })
            .collect();
        let passed: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let want = 100 + 100 + 2 * 1000;
        assert!(
            passed <= want && passed + 8 >= want,
            "passed {passed}, want {want}"
        );
    }

    #[test]
    fn a_superframe_is_policed_segment_by_segment() {
        // 10 segments of 1000 bytes against a 4500-byte committed burst:
        // the first 4 pass, the rest are cut and take no tokens.
        let policy = Policy {
            meter: MeterConf::SrTcm {
                cir: 8_000, // 1000 bytes/s
                cbs: 4500 * 8,
                ebs: 0,
            },
            unit: Unit::Bits,
            actions: [ColorAction::Pass, ColorAction::Drop, ColorAction::Drop],
        };
        let sm = SharedMeter::new(policy, 0);
        let sf = WireLen {
            bytes: 10_000,
            packets: 10,
            seg_bytes: 1000,
        };
        let mut out = [Policed::default(); 2];
        sm.police_burst(0, &[sf, WireLen::frame(500)], &mut out);
        assert_eq!(out[0].kept, 4);
        // The cut segments took nothing: 500 bytes were left for a frame.
        assert_eq!(out[1].kept, 1);
        // In packets: 2 green, 3 yellow (re-marked), then red: 5 kept.
        let policy = Policy {
            meter: MeterConf::SrTcm {
                cir: 1,
                cbs: 2,
                ebs: 3,
            },
            unit: Unit::Packets,
            actions: [
                ColorAction::Pass,
                ColorAction::Remark(10),
                ColorAction::Drop,
            ],
        };
        let sm = SharedMeter::new(policy, 0);
        sm.police_burst(0, &[sf], &mut out[..1]);
        assert_eq!(
            out[0],
            Policed {
                kept: 5,
                remark: Some(10)
            }
        );
    }
}
