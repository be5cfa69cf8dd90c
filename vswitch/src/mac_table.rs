//! The MAC learning table of one bridge domain: bounded, aged, lock-free.
//!
//! Layout: `buckets` of [`SLOTS`] 64-bit words, one cache line each. A word
//! holds the whole entry, `mac << 16 | (port + 1)`, so a reader always sees a
//! consistent (MAC, port) pair with one relaxed load: no seqlock, no lock,
//! no torn reads. 0 is an empty slot (port + 1 is never 0). The last-seen time
//! of each slot lives in a parallel array of u32 seconds; it is advisory (a
//! stale read only makes an entry look older or younger by one update).
//!
//! Writers (every worker learning source MACs) claim slots with a CAS: an
//! empty or expired slot in the MAC's bucket, or the MAC's own slot when the
//! station moved to another port. A full bucket of live entries is *overflow*:
//! the frame is still forwarded (flooded if its destination is unknown), the
//! MAC is not learned and [`Learn::Full`] lets the caller count it. That bounds
//! memory under MAC flooding attacks, as the fixed-size tables of hardware
//! switches do.
//!
//! Each port may hold a bounded number of learned entries (`learn`'s
//! `limit`): a container that sends from thousands of forged MACs fills
//! its own share, not the bridge's buckets, so every other station's
//! unicast stays unicast. The per-port counts follow new, moved, expired
//! (when their slot is reused or swept) and flushed entries.
//!
//! Static entries (configured stations, like OVS's `fdb/add`) carry a flag
//! bit in the word: they never age, and learning never moves them, so a
//! spoofed source MAC cannot steal a configured station's traffic.
//!
//! Two workers learning the same new MAC at the same instant may both claim a
//! slot; lookups and refreshes use the first match, the duplicate is never
//! refreshed and ages out. Aging is lazy (an expired entry is a miss) plus a
//! [`MacTable::sweep`] the control thread runs to empty expired slots.
//!
//! Why not DPDK's rte_hash: it needs the lock-free-read flag plus a writer
//! lock (or RW concurrency mode) for several learning lcores, it would drag
//! DPDK into this crate, and its key/value indirection costs two cache lines
//! per lookup where this layout costs one.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::types::{MacAddr, PortId, MAX_PORTS};

/// Slots per bucket: 8 x 8 bytes = one 64-byte cache line.
pub const SLOTS: usize = 8;

/// Flag bit of a static entry, above the port field (ports are < 2^15).
const STATIC: u64 = 1 << 15;

#[repr(align(64))]
struct Bucket([AtomicU64; SLOTS]);

/// What learning a source MAC did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// Already known on this port (its age was refreshed).
    Known,
    /// A new entry.
    New,
    /// The station moved from another port.
    Moved,
    /// Its bucket is full of live entries: not learned.
    Full,
    /// The port holds its limit of learned MACs: not learned.
    Limit,
}

/// A learned entry, as [`MacTable::entries`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The station's MAC.
    pub mac: MacAddr,
    /// The port it was last seen on.
    pub port: PortId,
    /// Seconds since it was last seen (0 for a static entry).
    pub age: u32,
    /// Configured, not learned: never ages or moves.
    pub is_static: bool,
}

/// See the module documentation.
pub struct MacTable {
    buckets: Box<[Bucket]>,
    /// Bumped whenever an entry appears, moves or is removed: what a
    /// lookup answers can change only with it (and with aging, in whole
    /// seconds). A flow cache that remembers a lookup compares it.
    generation: AtomicU32,
    stamps: Box<[AtomicU32]>,
    mask: usize,
    aging_secs: u32,
    /// Learned entries per port.
    learned: Box<[AtomicU32]>,
}

#[inline]
fn pack(mac: MacAddr, port: PortId) -> u64 {
    (mac.to_u64() << 16) | (u64::from(port.0) + 1)
}

#[inline]
fn word_mac(w: u64) -> u64 {
    w >> 16
}

#[inline]
fn word_port(w: u64) -> PortId {
    PortId(((w & (STATIC - 1)) - 1) as u16)
}

impl MacTable {
    /// A table for at least `capacity` entries (rounded up to whole,
    /// power-of-two buckets) whose entries expire `aging_secs` after they
    /// were last seen.
    pub fn new(capacity: usize, aging_secs: u32) -> MacTable {
        let nb = capacity.div_ceil(SLOTS).next_power_of_two().max(1);
        MacTable {
            buckets: (0..nb).map(|_| Bucket(Default::default())).collect(),
            generation: AtomicU32::new(0),
            stamps: (0..nb * SLOTS).map(|_| AtomicU32::new(0)).collect(),
            mask: nb - 1,
            aging_secs,
            learned: (0..MAX_PORTS).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// The table's change count (see the field): equal counts at two
    /// instants of the same second mean every lookup answers the same.
    #[inline]
    pub fn generation(&self) -> u32 {
        self.generation.load(Relaxed)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Relaxed);
    }

    /// Learned entries behind `port` (see the module documentation).
    pub fn learned_on(&self, port: PortId) -> u32 {
        self.learned
            .get(port.index())
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Counts a learned entry word `w` that left its slot.
    fn uncount(&self, w: u64) {
        if w != 0 && w & STATIC == 0 {
            if let Some(c) = self.learned.get(word_port(w).index()) {
                let _ = c.fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
            }
        }
    }

    /// Counts a learned entry of `port`, unless it holds `limit` already.
    fn count(&self, port: PortId, limit: u32) -> bool {
        self.learned.get(port.index()).is_some_and(|c| {
            c.fetch_update(Relaxed, Relaxed, |v| (v < limit).then_some(v + 1))
                .is_ok()
        })
    }

    /// Number of slots (the hard bound on entries).
    pub fn capacity(&self) -> usize {
        self.buckets.len() * SLOTS
    }

    /// Seconds an entry lives without being seen.
    pub fn aging_secs(&self) -> u32 {
        self.aging_secs
    }

    #[inline]
    fn bucket_of(&self, mac: u64) -> usize {
        // Fibonacci hashing: the OUI in the high bytes is shared by many
        // stations, the multiply spreads the low bytes over the index.
        (mac.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & self.mask
    }

    /// Whether the entry `w` in `slot` has aged out (static ones never do).
    #[inline]
    fn expired(&self, w: u64, slot: usize, now: u32) -> bool {
        w & STATIC == 0 && now.wrapping_sub(self.stamps[slot].load(Relaxed)) > self.aging_secs
    }

    /// The port `mac` was last seen on, unless unknown or aged out.
    #[inline]
    pub fn lookup(&self, mac: MacAddr, now: u32) -> Option<PortId> {
        let m = mac.to_u64();
        let b = self.bucket_of(m);
        for (i, word) in self.buckets[b].0.iter().enumerate() {
            let w = word.load(Relaxed);
            if w != 0 && word_mac(w) == m {
                if self.expired(w, b * SLOTS + i, now) {
                    return None;
                }
                return Some(word_port(w));
            }
        }
        None
    }

    /// Records that `mac` was seen on `port` at time `now` (seconds),
    /// unless `port` holds `limit` learned MACs already. The caller never
    /// passes group or zero MACs.
    #[inline]
    pub fn learn(&self, mac: MacAddr, port: PortId, now: u32, limit: u32) -> Learn {
        let m = mac.to_u64();
        let b = self.bucket_of(m);
        let want = pack(mac, port);
        let slots = &self.buckets[b].0;
        // Retry only when another writer changed a slot under us.
        for _ in 0..3 {
            let mut free = None;
            for (i, word) in slots.iter().enumerate() {
                let w = word.load(Relaxed);
                let s = b * SLOTS + i;
                if w != 0 && word_mac(w) == m {
                    if w & STATIC != 0 {
                        return Learn::Known;
                    }
                    if w == want {
                        // Write the stamp only when it changes: one store per
                        // MAC per second keeps the line shared, not bouncing.
                        if self.stamps[s].load(Relaxed) != now {
                            self.stamps[s].store(now, Relaxed);
                        }
                        return Learn::Known;
                    }
                    if !self.count(port, limit) {
                        return Learn::Limit;
                    }
                    if word.compare_exchange(w, want, Relaxed, Relaxed).is_ok() {
                        self.stamps[s].store(now, Relaxed);
                        self.uncount(w);
                        self.changed();
                        return Learn::Moved;
                    }
                    self.uncount(want);
                    free = None;
                    break;
                }
                if free.is_none() && (w == 0 || self.expired(w, s, now)) {
                    free = Some((i, w));
                }
            }
            let Some((i, old)) = free else {
                continue;
            };
            if !self.count(port, limit) {
                return Learn::Limit;
            }
            if slots[i]
                .compare_exchange(old, want, Relaxed, Relaxed)
                .is_ok()
            {
                self.stamps[b * SLOTS + i].store(now, Relaxed);
                self.uncount(old);
                self.changed();
                return Learn::New;
            }
            self.uncount(want);
        }
        Learn::Full
    }

    /// Installs a static entry: `mac` lives behind `port` until the port is
    /// flushed, whatever traffic says. Replaces a learned entry for `mac`.
    /// Returns false when the MAC's bucket is full of static entries.
    pub fn add_static(&self, mac: MacAddr, port: PortId) -> bool {
        let m = mac.to_u64();
        let b = self.bucket_of(m);
        let want = pack(mac, port) | STATIC;
        let slots = &self.buckets[b].0;
        // The control thread is the only writer of static entries; a
        // learner may race for the same slot, so every store is a CAS.
        for _ in 0..SLOTS * 2 {
            let own = slots.iter().position(|w| {
                let w = w.load(Relaxed);
                w != 0 && word_mac(w) == m
            });
            let pick = own.or_else(|| slots.iter().position(|w| w.load(Relaxed) & STATIC == 0));
            let Some(i) = pick else { return false };
            let old = slots[i].load(Relaxed);
            if old & STATIC != 0 && word_mac(old) != m {
                continue;
            }
            if slots[i]
                .compare_exchange(old, want, Relaxed, Relaxed)
                .is_ok()
            {
                self.uncount(old);
                self.changed();
                return true;
            }
        }
        false
    }

    /// Removes the static entries whose MAC is not in `keep` (stations
    /// the config no longer has: a table shared with the next snapshot
    /// must not keep them, nor their slots); returns how many.
    pub fn remove_statics_except(&self, keep: &std::collections::HashSet<MacAddr>) -> usize {
        self.remove_where(|_, w| w & STATIC != 0 && !keep.contains(&MacAddr::from_u64(word_mac(w))))
    }

    /// Empties every expired slot; returns how many. Run by the control
    /// thread so that listings and counts do not show dead entries.
    pub fn sweep(&self, now: u32) -> usize {
        self.remove_where(|slot, w| self.expired(w, slot, now))
    }

    /// Removes every entry pointing at `port` (the port was removed).
    pub fn flush_port(&self, port: PortId) -> usize {
        self.remove_where(|_, w| word_port(w) == port)
    }

    /// Removes every learned entry (`fdb flush`); static ones stay.
    pub fn flush(&self) -> usize {
        self.remove_where(|_, w| w & STATIC == 0)
    }

    /// Removes the learned entries pointing at `port`.
    pub fn flush_learned_on(&self, port: PortId) -> usize {
        self.remove_where(|_, w| w & STATIC == 0 && word_port(w) == port)
    }

    fn remove_where(&self, pred: impl Fn(usize, u64) -> bool) -> usize {
        let mut n = 0;
        for (b, bucket) in self.buckets.iter().enumerate() {
            for (i, word) in bucket.0.iter().enumerate() {
                let w = word.load(Relaxed);
                if w != 0
                    && pred(b * SLOTS + i, w)
                    && word.compare_exchange(w, 0, Relaxed, Relaxed).is_ok()
                {
                    self.uncount(w);
                    n += 1;
                }
            }
        }
        if n > 0 {
            self.changed();
        }
        n
    }

    /// Live entries, for `fdb show`.
    pub fn entries(&self, now: u32) -> Vec<Entry> {
        let mut out = Vec::new();
        for (b, bucket) in self.buckets.iter().enumerate() {
            for (i, word) in bucket.0.iter().enumerate() {
                let w = word.load(Relaxed);
                let s = b * SLOTS + i;
                if w != 0 && !self.expired(w, s, now) {
                    let is_static = w & STATIC != 0;
                    out.push(Entry {
                        mac: MacAddr::from_u64(word_mac(w)),
                        port: word_port(w),
                        age: if is_static {
                            0
                        } else {
                            now.wrapping_sub(self.stamps[s].load(Relaxed))
                        },
                        is_static,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn mac(i: u64) -> MacAddr {
        MacAddr::from_u64(0x0200_0000_0000 | i)
    }

    #[test]
    fn learns_looks_up_and_moves() {
        let t = MacTable::new(64, 300);
        assert_eq!(t.lookup(mac(1), 0), None);
        assert_eq!(t.learn(mac(1), PortId(3), 0, u32::MAX), Learn::New);
        assert_eq!(t.learn(mac(1), PortId(3), 1, u32::MAX), Learn::Known);
        assert_eq!(t.lookup(mac(1), 1), Some(PortId(3)));
        assert_eq!(t.learn(mac(1), PortId(0), 2, u32::MAX), Learn::Moved);
        assert_eq!(t.lookup(mac(1), 2), Some(PortId(0)));
        assert_eq!(t.entries(2).len(), 1);
    }

    #[test]
    fn the_generation_counts_every_change_a_lookup_can_see() {
        let t = MacTable::new(64, 300);
        let g = |t: &MacTable| t.generation();
        let g0 = g(&t);
        t.learn(mac(1), PortId(3), 0, u32::MAX);
        let g1 = g(&t);
        assert_ne!(g1, g0, "new");
        t.learn(mac(1), PortId(3), 1, u32::MAX);
        assert_eq!(g(&t), g1, "a refresh changes no lookup");
        t.learn(mac(1), PortId(0), 2, u32::MAX);
        let g2 = g(&t);
        assert_ne!(g2, g1, "moved");
        assert!(t.add_static(mac(2), PortId(1)));
        let g3 = g(&t);
        assert_ne!(g3, g2, "static");
        assert_eq!(t.flush_port(PortId(5)), 0);
        assert_eq!(g(&t), g3, "nothing removed");
        assert_eq!(t.flush_port(PortId(0)), 1);
        assert_ne!(g(&t), g3, "removed");
    }

    #[test]
    fn entries_age_out_and_are_refreshed_by_traffic() {
        let t = MacTable::new(64, 10);
        t.learn(mac(1), PortId(1), 100, u32::MAX);
        t.learn(mac(2), PortId(2), 100, u32::MAX);
        // mac(2) is seen again at 105: it lives until 115.
        t.learn(mac(2), PortId(2), 105, u32::MAX);
        assert_eq!(t.lookup(mac(1), 110), Some(PortId(1)));
        assert_eq!(t.lookup(mac(1), 111), None, "aged out after 10 s");
        assert_eq!(t.lookup(mac(2), 111), Some(PortId(2)));
        assert_eq!(t.sweep(111), 1);
        assert_eq!(t.entries(111).len(), 1);
        // A slot that aged out is reused.
        assert_eq!(t.learn(mac(1), PortId(4), 112, u32::MAX), Learn::New);
        assert_eq!(t.lookup(mac(1), 112), Some(PortId(4)));
    }

    #[test]
    fn table_is_bounded_and_counts_overflow() {
        let t = MacTable::new(16, 300);
        assert_eq!(t.capacity(), 16);
        let mut learned = 0;
        let mut full = 0;
        for i in 0..1000 {
            match t.learn(mac(i), PortId(1), 0, u32::MAX) {
                Learn::New => learned += 1,
                Learn::Full => full += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(learned, 16, "exactly the capacity is learned");
        assert_eq!(full, 1000 - 16);
        assert_eq!(t.entries(0).len(), 16);
        // Everything learned is still found; nothing else is.
        let found = (0..1000).filter(|&i| t.lookup(mac(i), 0).is_some()).count();
        assert_eq!(found, 16);
    }

    #[test]
    fn static_entries_never_age_nor_move() {
        let t = MacTable::new(64, 10);
        assert_eq!(t.learn(mac(1), PortId(1), 0, u32::MAX), Learn::New);
        assert!(
            t.add_static(mac(1), PortId(2)),
            "replaces the learned entry"
        );
        assert!(t.add_static(mac(3), PortId(3)));
        // Traffic from the MAC on another port does not move it.
        assert_eq!(t.learn(mac(1), PortId(5), 1, u32::MAX), Learn::Known);
        assert_eq!(t.lookup(mac(1), 1_000_000), Some(PortId(2)));
        assert_eq!(t.sweep(1_000_000), 0);
        let mut e = t.entries(1_000_000);
        e.sort_by_key(|e| e.port.0);
        assert_eq!(e.len(), 2, "one slot per MAC: {e:?}");
        assert!(e.iter().all(|e| e.is_static && e.age == 0));
        assert_eq!(t.flush_port(PortId(3)), 1);
        assert_eq!(t.lookup(mac(3), 0), None);
    }

    #[test]
    fn static_entries_fill_a_bucket_at_most() {
        // One bucket: the ninth static MAC has no room, learned ones get none.
        let t = MacTable::new(SLOTS, 300);
        assert!((0..SLOTS as u64).all(|i| t.add_static(mac(i), PortId(1))));
        assert!(!t.add_static(mac(100), PortId(1)));
        assert_eq!(t.learn(mac(101), PortId(1), 0, u32::MAX), Learn::Full);
    }

    #[test]
    fn a_port_learns_up_to_its_limit_and_gets_its_share_back() {
        let t = MacTable::new(1024, 10);
        for i in 0..4 {
            assert_eq!(t.learn(mac(i), PortId(1), 0, 4), Learn::New);
        }
        assert_eq!(t.learn(mac(9), PortId(1), 0, 4), Learn::Limit);
        assert_eq!(t.lookup(mac(9), 0), None);
        // Others are not affected; known MACs stay known.
        assert_eq!(t.learn(mac(9), PortId(2), 0, 4), Learn::New);
        assert_eq!(t.learn(mac(0), PortId(1), 1, 4), Learn::Known);
        // A station moving away, aging out or a flush frees the share.
        assert_eq!(t.learn(mac(0), PortId(2), 1, 4), Learn::Moved);
        assert_eq!((t.learned_on(PortId(1)), t.learned_on(PortId(2))), (3, 2));
        assert_eq!(t.learn(mac(10), PortId(1), 1, 4), Learn::New);
        assert_eq!(t.learn(mac(11), PortId(1), 1, 4), Learn::Limit);
        assert_eq!(t.sweep(20), 6);
        assert_eq!((t.learned_on(PortId(1)), t.learned_on(PortId(2))), (0, 0));
        assert_eq!(t.learn(mac(11), PortId(1), 20, 4), Learn::New);
        assert_eq!(t.flush_learned_on(PortId(1)), 1);
        assert_eq!(t.learned_on(PortId(1)), 0);
    }

    #[test]
    fn flush_port_removes_only_that_port() {
        let t = MacTable::new(64, 300);
        for i in 0..10 {
            t.learn(mac(i), PortId((i % 2) as u16), 0, u32::MAX);
        }
        assert_eq!(t.flush_port(PortId(0)), 5);
        assert!(
            (0..10).all(|i| t.lookup(mac(i), 0) == if i % 2 == 1 { Some(PortId(1)) } else { None })
        );
        assert_eq!(t.flush(), 5);
        // Static entries survive a flush; flush_learned_on spares them too.
        assert!(t.add_static(mac(50), PortId(1)));
        t.learn(mac(51), PortId(1), 0, u32::MAX);
        assert_eq!(t.flush_learned_on(PortId(1)), 1);
        assert_eq!(t.flush(), 0);
        assert_eq!(t.lookup(mac(50), 0), Some(PortId(1)));
    }

    #[test]
    fn concurrent_learners_never_see_torn_entries() {
        // Four threads move the same 64 MACs between their own ports while a
        // reader checks every answer is a port some writer used.
        let t = Arc::new(MacTable::new(1024, 300));
        let writers: Vec<_> = (0..4u16)
            .map(|p| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for round in 0..2000 {
                        for i in 0..64 {
                            t.learn(mac(i), PortId(p), round / 100, u32::MAX);
                        }
                    }
                })
            })
            .collect();
        for _ in 0..2000 {
            for i in 0..64 {
                if let Some(p) = t.lookup(mac(i), 20) {
                    assert!(p.0 < 4, "torn read: port {p}");
                }
            }
        }
        for w in writers {
            w.join().unwrap();
        }
        for i in 0..64 {
            assert!(t.lookup(mac(i), 20).is_some());
        }
    }
}
