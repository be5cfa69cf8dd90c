//! The flow cache: a per-worker exact-match cache of the pipeline's
//! decisions, in front of the stages (the place OVS's EMC holds in
//! dpif-netdev, and for the same reason: a frame of a known flow should
//! cost one lookup, not a parse, a MAC lookup, a session-table probe and
//! a port-security check).
//!
//! **Key.** What decides a cached frame's fate: the ingress port, both
//! MACs, IPv4 or IPv6, both addresses, the protocol and both ports.
//! Only untagged TCP and UDP over IPv4 (without fragmentation) or IPv6
//! (without extension headers) is cached: for those, port security's
//! verdict, the MAC table's answers and the session the groups consult
//! are functions of the key. ARP, ICMP, fragments, tagged frames and IPv6
//! extension chains always take the stages (their checks read more than
//! the key; they are a small share of a container's traffic).
//! [`Key::extract`] reads fixed offsets and refuses exactly what
//! [`crate::FlowKey::parse`] would refuse (a property test checks it).
//!
//! **Value.** The output port (local or tunnel), the MAC table's
//! generation and the second the decision was made in, the ruleset
//! snapshot, and the session that let the frame through (a slot
//! reference, never a copy of its state). Drops and floods are not
//! cached: a denied frame passes once the other direction opens its
//! session, which only the session table can tell, and floods (unknown
//! or group destinations) are rare and judged per copy.
//!
//! **Validity, and what a hit still does.** An entry answers only while
//! (a) the pipeline snapshot is the one it was made under (any topology,
//! port, ruleset, guard, meter or tunnel change publishes a new one:
//! [`FlowCache::retarget`] then drops every entry at once by epoch),
//! (b) its bridge's [`crate::MacTable::generation`] is unchanged (no MAC
//! appeared, moved or left), (c) it is the same second (MAC aging and
//! stamps, and session deadlines, count whole seconds), and (d) its
//! session is still live in the same slot ([`acl::session::SessionTable::live`]).
//! A hit then does what the stages would have done for the frame:
//! counts it, advances a TCP session with the frame's own flags and
//! pushes its deadline ([`acl::session::SessionTable::update`]: TCP state
//! and timeouts stay exact), checks a tunnel's MTU per frame, and meets
//! the same meters in the same order. The one update a hit skips is a UDP
//! (or other non-TCP) session's: within the entry's second the stages
//! already made it, and a non-TCP packet never changes its own
//! direction's state, so the update would write the deadline it holds.
//! The bound: when the session's other direction is on another worker
//! whose poll round began in the previous second, its reply pushed the
//! deadline from that second, and the skipped update would have moved it
//! one second later; a UDP session may therefore expire up to 1 s early
//! (of its 30 s or 180 s). The MAC learning a hit skips changes nothing: within
//! the second the source's entry was refreshed by the frame that made the
//! entry, and an entry is made only when the source MAC is learned on the
//! ingress port (a source the bucket could not hold takes the stages and
//! counts `learn_full` every time, as without the cache). Each flow
//! therefore takes the stages once per second per worker.
//!
//! **Bursts.** A burst is answered from the cache only when every frame
//! of it hits; one miss sends the whole burst through the stages (which
//! then refresh the entries), so the stages always see whole bursts and
//! the cache never reorders what a frame sees against another's side
//! effects (learning, sessions opening, meters). The cache is therefore
//! exact: `vswitch/tests/flow_cache.rs` runs random traffic and changes
//! through two pipelines, with and without it, and compares every
//! decision, counter and session.
//!
//! **Tiers, capacity, replacement.** One tier: [`BUCKETS`] buckets of
//! [`WAYS`] entries (8192, as OVS's EMC), 128 bytes each (1 MB per worker),
//! with a 32-bit signature per entry kept apart (32 bytes per bucket), so
//! a probe reads one signature line and compares a key only on a
//! signature match. No second tier (OVS's SMC, dpcls): behind a miss the
//! stages' own tables (MAC table, session table, classifier) are the
//! lower tiers. An entry goes into a way holding its key, a free or stale
//! one; when all ways are live, it replaces a random one with probability
//! 1/[`REPLACE_ODDS`] (OVS's `emc-insert-inv-prob` idea), so a
//! flow set far larger than the cache does not churn it on every miss.
//! When it is of no use (the last [`BYPASS_AFTER`] bursts all missed),
//! the cache is probed on one burst in [`BYPASS_PROBE`] only, so a
//! thrashing cache costs close to nothing over no cache; one burst that
//! hits throughout ends the bypass.
//!
//! **Thread safety.** None needed: each worker owns its cache (in its
//! [`crate::Decisions`]); the tables it refers to are shared and
//! lock-free, and every reference is checked at use (generation, slot
//! version), never trusted.

use acl::session::SessionRef;

use crate::flow::{ETH_P_IPV4, ETH_P_IPV6, IPPROTO_TCP, IPPROTO_UDP};
use crate::types::{PortId, MAX_BURST};

/// Entries per bucket.
pub const WAYS: usize = 8;
/// Buckets.
pub const BUCKETS: usize = 1024;
/// A live entry is replaced by a missed flow with probability 1/this.
pub const REPLACE_ODDS: u32 = 8;
/// Bursts in a row without a full hit before the cache is bypassed.
pub const BYPASS_AFTER: u32 = 256;
/// While bypassed, one burst in this many is probed.
pub const BYPASS_PROBE: u32 = 32;

/// A cached frame's key (see the module documentation): 7 words, the
/// ingress port and MACs, protocol, ports, the first halves of the
/// addresses (an IPv4 address whole), then their second halves (0 for
/// IPv4: an IPv4 key is its first [`HEAD`] words).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Key([u64; 7]);

/// The IP protocol in a key's second word.
fn proto_in(w1: u64) -> u8 {
    (w1 >> 48) as u8
}

/// Words of a key held on an entry's first cache line.
const HEAD: usize = 5;
/// The IPv6 bit of a key's second word.
const V6: u64 = 1 << 56;

#[inline]
fn mac48(b: &[u8; 6]) -> u64 {
    u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

/// `N` bytes of `frame` from `at`, as an array (one bounds check; the
/// reads from it need none).
#[inline]
fn bytes<const N: usize>(frame: &[u8], at: usize) -> Option<&[u8; N]> {
    frame.get(at..at + N)?.try_into().ok()
}

impl Key {
    /// The key of `frame` received on `port` and its TCP flags, if the
    /// frame is of a cacheable kind (see the module documentation).
    #[inline]
    pub fn extract(port: PortId, frame: &[u8]) -> Option<(Key, u8)> {
        let eth: &[u8; 14] = bytes(frame, 0)?;
        let (v6, l4, proto, src, dst) = match u16::from_be_bytes([eth[12], eth[13]]) {
            ETH_P_IPV4 => {
                let ip: &[u8; 20] = bytes(frame, 14)?;
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                if ip[0] >> 4 != 4 || ihl < 20 || frame.len() < 14 + ihl || total < ihl {
                    return None;
                }
                if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                    return None; // a fragment
                }
                let a = |at: usize| {
                    u64::from(u32::from_be_bytes([
                        ip[at],
                        ip[at + 1],
                        ip[at + 2],
                        ip[at + 3],
                    ]))
                };
                (false, 14 + ihl, ip[9], [a(12), 0], [a(16), 0])
            }
            ETH_P_IPV6 => {
                let ip: &[u8; 40] = bytes(frame, 14)?;
                if ip[0] >> 4 != 6 {
                    return None;
                }
                let w = |at: usize| {
                    u64::from_be_bytes([
                        ip[at],
                        ip[at + 1],
                        ip[at + 2],
                        ip[at + 3],
                        ip[at + 4],
                        ip[at + 5],
                        ip[at + 6],
                        ip[at + 7],
                    ])
                };
                (true, 54, ip[6], [w(8), w(16)], [w(24), w(32)])
            }
            _ => return None,
        };
        let (ports, flags) = match proto {
            IPPROTO_TCP => {
                let t: &[u8; 20] = bytes(frame, l4)?;
                (u32::from_be_bytes([t[0], t[1], t[2], t[3]]), t[13])
            }
            IPPROTO_UDP => {
                let u: &[u8; 8] = bytes(frame, l4)?;
                (u32::from_be_bytes([u[0], u[1], u[2], u[3]]), 0)
            }
            _ => return None,
        };
        let macs = |at: usize| mac48(eth[at..at + 6].try_into().expect("6 bytes"));
        let key = Key([
            macs(0) | u64::from(port.0) << 48,
            macs(6) | u64::from(proto) << 48 | u64::from(v6) << 56,
            u64::from(ports),
            src[0],
            dst[0],
            src[1],
            dst[1],
        ]);
        Some((key, flags))
    }

    fn is_v6(&self) -> bool {
        self.0[1] & V6 != 0
    }

    fn hash(&self) -> u64 {
        acl::hash::words(if self.is_v6() {
            &self.0
        } else {
            &self.0[..HEAD]
        })
    }
}

/// What the stages decided for a flow, and what makes it still true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    /// The output port.
    pub out: PortId,
    /// Whether it is a tunnel port.
    pub tunnel: bool,
    /// The session that let the flow through, and whether the flow is
    /// its originator's direction; None if no group judged it.
    pub session: Option<(SessionRef, bool)>,
    /// The bridge's MAC table generation when it was decided.
    pub mac_gen: u32,
}

/// An entry: everything an IPv4 flow needs on one cache line (its key,
/// validity and decision), the rest of an IPv6 key on the next.
#[repr(C, align(64))]
#[derive(Clone, Copy, Default)]
struct Entry {
    /// The key's first [`HEAD`] words.
    head: [u64; HEAD],
    /// [`FlowCache`]'s epoch when made (0: never).
    epoch: u32,
    /// The second it was decided in.
    secs: u32,
    mac_gen: u32,
    session: SessionRef,
    out: PortId,
    /// [`TUNNEL`], [`SESSION`], [`ORIG`].
    flags: u8,
    /// The key's last words (IPv6 only).
    tail: [u64; 2],
}

const TUNNEL: u8 = 1;
const SESSION: u8 = 2;
const ORIG: u8 = 4;

impl Entry {
    #[inline]
    fn holds(&self, k: &Key) -> bool {
        self.head == k.0[..HEAD] && (!k.is_v6() || self.tail == k.0[HEAD..])
    }

    fn decision(&self) -> Decision {
        Decision {
            out: self.out,
            tunnel: self.flags & TUNNEL != 0,
            session: (self.flags & SESSION != 0).then_some((self.session, self.flags & ORIG != 0)),
            mac_gen: self.mac_gen,
        }
    }

    fn proto(&self) -> u8 {
        proto_in(self.head[1])
    }
}

/// How a burst fared in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Not probed (bypassed, or the port is in no bridge).
    Skipped,
    /// Every frame has a valid entry (in [`FlowCache::hit`]).
    AllHit,
    /// Some frame missed; the keys are kept for [`FlowCache::insert`].
    Missed,
}

/// One frame's probe.
#[derive(Clone, Copy)]
struct Probed {
    /// The entry holding its key, valid or not ([`NONE`]: none).
    at: u32,
    /// Its TCP flags.
    flags: u8,
}

const NONE: u32 = u32::MAX;

/// Hits, misses and upkeep of one worker's cache (read by the worker,
/// which publishes them to `pmd-perf`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Frames answered from the cache.
    pub hits: u64,
    /// Frames probed that took the stages (theirs or a burst-mate's miss).
    pub misses: u64,
    /// Entries made or refreshed.
    pub inserts: u64,
    /// Live entries replaced by another flow's.
    pub evictions: u64,
    /// Bursts not probed (bypass; see the module documentation).
    pub bypassed: u64,
}

/// See the module documentation.
pub struct FlowCache {
    sigs: Box<[[u32; WAYS]]>,
    entries: Box<[Entry]>,
    epoch: u32,
    /// The pipeline snapshot the epoch belongs to.
    pipeline: u64,
    probes: [Probed; MAX_BURST],
    /// Bursts in a row without a full hit (up to [`BYPASS_AFTER`]).
    useless: u32,
    /// Bursts seen while bypassed.
    tick: u32,
    rng: u32,
    stats: CacheStats,
}

impl Default for FlowCache {
    fn default() -> Self {
        FlowCache::new()
    }
}

impl FlowCache {
    /// An empty cache of [`BUCKETS`] x [`WAYS`] entries.
    pub fn new() -> FlowCache {
        FlowCache {
            sigs: vec![[0; WAYS]; BUCKETS].into_boxed_slice(),
            entries: vec![Entry::default(); BUCKETS * WAYS].into_boxed_slice(),
            epoch: 1,
            pipeline: 0,
            probes: [Probed { at: NONE, flags: 0 }; MAX_BURST],
            useless: 0,
            tick: 0,
            rng: 0x9e37_79b9,
            stats: CacheStats::default(),
        }
    }

    /// Its counters so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Makes the cache answer for pipeline snapshot `id`: a new snapshot
    /// drops every entry (by epoch, without touching them).
    #[inline]
    pub(crate) fn retarget(&mut self, id: u64) {
        if id != self.pipeline {
            self.pipeline = id;
            self.epoch = self.epoch.wrapping_add(1);
            if self.epoch == 0 {
                // Wrapped: forget for real, so no entry's old epoch comes back.
                self.entries.iter_mut().for_each(|e| e.epoch = 0);
                self.epoch = 1;
            }
        }
    }

    #[inline]
    fn bucket(hash: u64) -> usize {
        hash as usize & (BUCKETS - 1)
    }

    #[inline]
    fn sig(hash: u64) -> u32 {
        (hash >> 32) as u32 | 1
    }

    /// The entry of bucket `b` holding `key` (signature `sig`), valid or
    /// not; [`NONE`].
    #[inline]
    fn find(&self, b: usize, sig: u32, key: &Key) -> u32 {
        // The ways whose signature matches, as a bit mask (one vector
        // compare), then their keys.
        (0..WAYS)
            .find(|&w| self.sigs[b][w] == sig && self.entries[b * WAYS + w].holds(key))
            .map_or(NONE, |w| (b * WAYS + w) as u32)
    }

    /// Probes a burst received on `port` at second `secs`, whose bridge's
    /// MAC table is at generation `mac_gen`.
    pub(crate) fn probe<F: crate::Frame>(
        &mut self,
        port: PortId,
        frames: &[F],
        secs: u32,
        mac_gen: u32,
    ) -> Probe {
        if self.useless >= BYPASS_AFTER {
            self.tick = self.tick.wrapping_add(1);
            if !self.tick.is_multiple_of(BYPASS_PROBE) {
                self.stats.bypassed += 1;
                return Probe::Skipped;
            }
        }
        // Two passes: every frame's key and hash, then every lookup, so
        // that the lookups' cache misses overlap.
        let mut keys = [None; MAX_BURST];
        for (i, f) in frames.iter().enumerate() {
            let k = Key::extract(port, f.data());
            self.probes[i] = Probed {
                at: NONE,
                flags: k.map_or(0, |(_, flags)| flags),
            };
            keys[i] = k.map(|(key, _)| (key, key.hash()));
        }
        let mut all = true;
        for (i, k) in keys[..frames.len()].iter().enumerate() {
            let Some((key, hash)) = k else {
                all = false;
                continue;
            };
            let at = self.find(Self::bucket(*hash), Self::sig(*hash), key);
            all &= at != NONE && {
                let e = &self.entries[at as usize];
                e.epoch == self.epoch && e.secs == secs && e.mac_gen == mac_gen
            };
            self.probes[i].at = at;
        }
        if all {
            self.useless = 0;
            Probe::AllHit
        } else {
            self.useless = (self.useless + 1).min(BYPASS_AFTER);
            self.stats.misses += frames.len() as u64;
            Probe::Missed
        }
    }

    /// Frame `i`'s cached decision, its protocol and TCP flags, after a
    /// [`Probe::AllHit`].
    #[inline]
    pub(crate) fn hit(&self, i: usize) -> (Decision, u8, u8) {
        let p = &self.probes[i];
        let e = &self.entries[p.at as usize];
        (e.decision(), e.proto(), p.flags)
    }

    /// Counts a burst of `n` answered from the cache.
    #[inline]
    pub(crate) fn hits(&mut self, n: usize) {
        self.stats.hits += n as u64;
    }

    /// A burst that probed [`Probe::AllHit`] went through the stages
    /// after all (a session had ended): it was all misses.
    #[inline]
    pub(crate) fn missed(&mut self, n: usize) {
        self.stats.misses += n as u64;
        self.useless = (self.useless + 1).min(BYPASS_AFTER);
    }

    /// Frame `i` of the probed burst, `frame` received on `port`, went
    /// through the stages at second `secs` and `d` is what they decided:
    /// remember it (if it is of a kind the cache holds).
    pub(crate) fn insert(&mut self, i: usize, port: PortId, frame: &[u8], secs: u32, d: Decision) {
        let Some((key, _)) = Key::extract(port, frame) else {
            return;
        };
        let hash = key.hash();
        let (b, sig) = (Self::bucket(hash), Self::sig(hash));
        // Its probe's entry, or one an earlier frame of the burst with
        // the same key made.
        let held = match self.probes[i].at {
            NONE => self.find(b, sig, &key),
            at => at,
        };
        let way = match held {
            NONE => {
                let stale = (0..WAYS).find(|&w| {
                    let e = &self.entries[b * WAYS + w];
                    self.sigs[b][w] == 0 || e.epoch != self.epoch || e.secs != secs
                });
                match stale {
                    Some(w) => w,
                    None => {
                        // xorshift32: which way, and whether at all.
                        self.rng ^= self.rng << 13;
                        self.rng ^= self.rng >> 17;
                        self.rng ^= self.rng << 5;
                        if !self.rng.is_multiple_of(REPLACE_ODDS) {
                            return;
                        }
                        self.stats.evictions += 1;
                        (self.rng >> 8) as usize % WAYS
                    }
                }
            }
            at => at as usize - b * WAYS,
        };
        let at = b * WAYS + way;
        self.sigs[b][way] = sig;
        let (s, o) = d.session.unwrap_or_default();
        self.entries[at] = Entry {
            head: key.0[..HEAD].try_into().expect("HEAD words"),
            epoch: self.epoch,
            secs,
            mac_gen: d.mac_gen,
            session: s,
            out: d.out,
            flags: if d.tunnel { TUNNEL } else { 0 }
                | if d.session.is_some() { SESSION } else { 0 }
                | if o { ORIG } else { 0 },
            tail: key.0[HEAD..].try_into().expect("2 words"),
        };
        self.stats.inserts += 1;
    }
}

#[cfg(test)]
mod tests {
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    use super::*;
    use crate::flow::{FlowKey, L3};

    /// `extract` answers exactly for the frames `FlowKey::parse` reads
    /// the same way, and its key holds what the parse found.
    fn agrees(frame: &[u8]) {
        let Some((key, flags)) = Key::extract(PortId(3), frame) else {
            // Refused: then it is not untagged TCP/UDP without fragments
            // and extension headers that parses.
            if let Ok(k) = FlowKey::parse(frame) {
                let plain = k.tags == 0
                    && k.l3 != L3::Other
                    && k.fragment.is_none()
                    && (k.proto == IPPROTO_TCP || k.proto == IPPROTO_UDP)
                    && (k.l3 == L3::V4 || k.l4_offset == 54);
                assert!(!plain, "refused a cacheable frame: {k:?}");
            }
            return;
        };
        let k = FlowKey::parse(frame).expect("a cacheable frame parses");
        assert_eq!(k.tags, 0);
        assert!(k.fragment.is_none());
        assert_eq!(proto_in(key.0[1]), k.proto);
        assert_eq!(flags, k.tcp_flags);
        let mut again = Key::default();
        let v6 = k.l3 == L3::V6;
        again.0[0] = k.dst_mac.to_u64() | 3 << 48;
        again.0[1] = k.src_mac.to_u64() | u64::from(k.proto) << 48 | u64::from(v6) << 56;
        again.0[2] = u64::from(k.src_port) << 16 | u64::from(k.dst_port);
        let split = |a: u128| {
            if v6 {
                [(a >> 64) as u64, a as u64]
            } else {
                [a as u64, 0]
            }
        };
        let (s, d) = (split(k.src_ip), split(k.dst_ip));
        again.0[3..7].copy_from_slice(&[s[0], d[0], s[1], d[1]]);
        assert_eq!(key, again);
    }

    fn frames() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let eth = || PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut v = Vec::new();
        eth()
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut v, &[0; 8])
            .unwrap();
        out.push(v);
        let mut v = Vec::new();
        eth()
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1, 2, 3, 4)
            .syn()
            .write(&mut v, &[])
            .unwrap();
        out.push(v);
        let mut v = Vec::new();
        eth()
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(5, 6, 7, 8)
            .ack(1)
            .write(&mut v, &[0; 3])
            .unwrap();
        out.push(v);
        let mut v = Vec::new();
        eth()
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .udp(5, 6)
            .write(&mut v, &[])
            .unwrap();
        out.push(v);
        let mut v = Vec::new();
        eth()
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut v, &[])
            .unwrap();
        out.push(v);
        out
    }

    #[test]
    fn keys_hold_what_the_parser_reads() {
        for f in frames() {
            agrees(&f);
        }
        let f = frames();
        assert!(Key::extract(PortId(0), &f[0]).is_some());
        assert!(Key::extract(PortId(0), &f[4]).is_none(), "ICMP");
        // A fragment, a cut TCP header, a tag: the stages decide.
        let mut frag = f[0].clone();
        frag[20] = 0x20;
        assert!(Key::extract(PortId(0), &frag).is_none());
        assert!(Key::extract(PortId(0), &f[1][..14 + 20 + 19]).is_none());
        let mut tagged = f[0][..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0, 0, 7]);
        tagged.extend_from_slice(&f[0][12..]);
        assert!(Key::extract(PortId(0), &tagged).is_none());
        // The ingress port is part of the key.
        assert_ne!(
            Key::extract(PortId(0), &f[0]).unwrap().0,
            Key::extract(PortId(1), &f[0]).unwrap().0
        );
    }

    proptest! {
        #[test]
        fn extract_agrees_with_the_parser_on_mutated_frames(
            base in 0usize..5,
            edits in proptest::collection::vec((0usize..80, any::<u8>()), 0..6),
            cut in 0usize..100,
        ) {
            let mut f = frames()[base].clone();
            for (at, b) in edits {
                if at < f.len() {
                    f[at] = b;
                }
            }
            f.truncate(f.len().saturating_sub(cut % 40));
            agrees(&f);
        }
    }

    fn decision(out: u16) -> Decision {
        Decision {
            out: PortId(out),
            tunnel: false,
            session: None,
            mac_gen: 7,
        }
    }

    #[test]
    fn entries_answer_in_their_second_snapshot_and_mac_generation() {
        let f = frames();
        let burst = [f[0].clone(), f[2].clone()];
        let mut c = FlowCache::new();
        c.retarget(1);
        assert_eq!(c.probe(PortId(0), &burst, 10, 7), Probe::Missed);
        c.insert(0, PortId(0), &burst[0], 10, decision(1));
        assert_eq!(
            c.probe(PortId(0), &burst, 10, 7),
            Probe::Missed,
            "one of two"
        );
        c.insert(1, PortId(0), &burst[1], 10, decision(2));
        assert_eq!(c.probe(PortId(0), &burst, 10, 7), Probe::AllHit);
        assert_eq!(c.hit(1).0.out, PortId(2));
        assert_eq!(
            c.probe(PortId(1), &burst, 10, 7),
            Probe::Missed,
            "another port"
        );
        assert_eq!(
            c.probe(PortId(0), &burst, 11, 7),
            Probe::Missed,
            "next second"
        );
        assert_eq!(
            c.probe(PortId(0), &burst, 10, 8),
            Probe::Missed,
            "a MAC moved"
        );
        c.retarget(1);
        assert_eq!(
            c.probe(PortId(0), &burst, 10, 7),
            Probe::AllHit,
            "same snapshot"
        );
        c.retarget(2);
        assert_eq!(
            c.probe(PortId(0), &burst, 10, 7),
            Probe::Missed,
            "new snapshot"
        );
        let s = c.stats();
        assert_eq!((s.inserts, s.evictions, s.bypassed), (2, 0, 0));
    }

    #[test]
    fn a_full_bucket_is_replaced_rarely_and_a_useless_cache_is_bypassed() {
        let mut c = FlowCache::new();
        c.retarget(1);
        // UDP flows by source port: many more than one bucket holds.
        let flow = |sport: u16| {
            let mut v = Vec::new();
            PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(sport, 53)
                .write(&mut v, &[])
                .unwrap();
            v
        };
        let mut by_bucket = vec![Vec::new(); BUCKETS];
        for sport in 0..u16::MAX {
            let (k, _) = Key::extract(PortId(0), &flow(sport)).unwrap();
            by_bucket[FlowCache::bucket(k.hash())].push(sport);
        }
        let crowded = by_bucket.iter().max_by_key(|b| b.len()).unwrap();
        assert!(crowded.len() > 4 * WAYS);
        for &sport in crowded {
            c.probe(PortId(0), &[flow(sport)], 5, 0);
            c.insert(0, PortId(0), &flow(sport), 5, decision(1));
        }
        let s = c.stats();
        assert_eq!(s.inserts - s.evictions, WAYS as u64, "the free ways first");
        let rest = (crowded.len() - WAYS) as u64;
        assert!(
            s.evictions > 0 && s.evictions < rest / 2,
            "{} of {rest} misses replaced a live entry",
            s.evictions
        );
        // Bursts that never hit: after BYPASS_AFTER, one in BYPASS_PROBE.
        let mut c = FlowCache::new();
        c.retarget(1);
        let burst = [flow(1), flow(2)];
        for _ in 0..BYPASS_AFTER + 10 * BYPASS_PROBE {
            c.probe(PortId(9), &burst, 5, 0);
        }
        let bypassed = c.stats().bypassed;
        assert!(
            bypassed >= 9 * u64::from(BYPASS_PROBE - 1) && bypassed <= 10 * u64::from(BYPASS_PROBE),
            "{bypassed}"
        );
        // A burst that hits ends it (the next second: every way is stale).
        let one = [flow(crowded[0])];
        let mut ended = false;
        for _ in 0..2 * BYPASS_PROBE {
            match c.probe(PortId(0), &one, 6, 7) {
                Probe::Skipped => {}
                Probe::Missed => c.insert(0, PortId(0), &one[0], 6, decision(1)),
                Probe::AllHit => {
                    ended = true;
                    break;
                }
            }
        }
        assert!(ended);
        let before = c.stats().bypassed;
        assert_eq!(
            c.probe(PortId(0), &one, 6, 7),
            Probe::AllHit,
            "probed again"
        );
        assert_eq!(c.stats().bypassed, before);
    }
}
