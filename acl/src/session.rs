//! The session table: stateful security groups, as cloud security groups
//! behave. A packet the rules allow opens a session on its bidirectional
//! 5-tuple; later packets of the session, in either direction, pass without
//! rule lookup, so the replies of an allowed outbound connection come back
//! even where the inbound rules would deny them.
//!
//! Tracking: TCP through SYN, SYN-ACK, established, FIN and RST with a
//! timeout per state (no sequence-number window checks: this is a security
//! group, not a firewall scrubbing TCP); UDP and ICMP with an unreplied and a
//! replied timeout; any other protocol with one timeout. A TCP packet that
//! is not a SYN and finds no session opens one as established when the
//! rules allow it (loose pickup, so a reload or restart does not cut live
//! connections), but unconfirmed: it lives [`Timeouts::tcp_unconfirmed`]
//! seconds until the other side answers, so a flood of stray ACKs cannot
//! fill the table with hour-long sessions.
//!
//! Fair shares: every session is charged to its owner (the switch port
//! whose packet opened it) and its zone (bridge domain); [`Limits`] caps
//! both, and a session beyond a cap is refused ([`Open::Quota`]), so one
//! container cannot take the table from the others. When both candidate
//! buckets are full, the unreplied session with the nearest deadline is
//! evicted for the new one; sessions that saw a reply (established
//! connections, answered UDP flows) are never evicted. The counts are
//! exact for sessions that ended through `remove`, `sweep` or reuse; a
//! session that merely expired is counted until the next sweep (the
//! control thread runs one every second) or until its slot is reused.
//!
//! Concurrency: every worker reads and writes the table; the two directions
//! of a flow may be on different workers. No locks: a slot is atomics. Its
//! head word is a sequence number (odd while a writer fills the body) and
//! a hash tag. It is a seqlock (Boehm, "Can seqlocks get along with
//! programming language memory models?", 2012): the writer claims the slot
//! with a CAS to an odd sequence, issues a release fence, stores the body,
//! and publishes the even sequence with a release store; a reader loads the
//! head (acquire), the body, issues an acquire fence and re-loads the head:
//! if the body held anything the writer stored, the fences pair and the
//! second load sees the odd (or a later) sequence, so a torn read is never
//! taken for a session. Readers never block writers or each other.
//!
//! A session's packets change its state and deadline words in place (CAS);
//! both carry the slot's version (the sequence's low bits), so the update
//! of a session whose slot was reused since the lookup changes nothing
//! ([`SessionRef`]); versions repeat after 1024 reuses of one slot, far
//! more than can happen between a lookup and its update in one burst.
//!
//! Layout: a key hashes to two buckets (two choices, as in cuckoo
//! hashing without the moves); a bucket is one cache line of [`WAYS`] slot
//! heads, and each slot's body (key, state, deadline) is one more line, so
//! a lookup reads two lines in the common case.
//!
//! Capacity is fixed at creation. An expired
//! slot is free for reuse at once; [`SessionTable::sweep`] (control thread)
//! empties expired slots for accurate counts. When a new session finds its
//! buckets full of replied sessions the table fails closed: [`Open::Full`],
//! which the pipeline drops and counts as `session_full`, as Linux
//! conntrack drops when its table is full. Replied sessions are never
//! evicted for new ones, so a flood of new flows cannot cut established
//! connections.
//!
//! Why not a crate (dashmap, flurry) or DPDK's rte_hash: those lock shards
//! or allocate per entry, or need DPDK in this crate; a fixed table of
//! cache-line slots costs one line per lookup and never allocates after
//! creation.

use std::sync::atomic::{
    fence, AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};

use crate::rule::{Family, Tuple, ICMP, ICMPV6, TCP, UDP};

/// Slots per bucket: one cache line of slot heads.
pub const WAYS: usize = 8;

/// Timeouts in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP: SYN seen, no SYN-ACK yet.
    pub tcp_syn_sent: u32,
    /// TCP: SYN-ACK seen, handshake not done.
    pub tcp_syn_recv: u32,
    /// TCP: established.
    pub tcp_established: u32,
    /// TCP: a FIN seen.
    pub tcp_fin_wait: u32,
    /// TCP: FINs from both sides.
    pub tcp_time_wait: u32,
    /// TCP: reset.
    pub tcp_close: u32,
    /// UDP, no reply yet.
    pub udp: u32,
    /// UDP, replied (a stream).
    pub udp_stream: u32,
    /// ICMP.
    pub icmp: u32,
    /// Any other protocol.
    pub other: u32,
    /// TCP picked up mid-stream (not opened by a SYN), until the other
    /// side answers.
    pub tcp_unconfirmed: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_sent: 30,
            tcp_syn_recv: 30,
            tcp_established: 3600,
            tcp_fin_wait: 120,
            tcp_time_wait: 30,
            tcp_close: 10,
            udp: 30,
            udp_stream: 180,
            icmp: 30,
            other: 60,
            tcp_unconfirmed: 30,
        }
    }
}

/// TCP connection states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TcpState {
    /// Not TCP.
    None = 0,
    /// The originator's SYN.
    SynSent = 1,
    /// The responder's SYN-ACK.
    SynRecv = 2,
    /// Handshake complete (or picked up mid-stream).
    Established = 3,
    /// One side sent FIN.
    FinWait = 4,
    /// Both sides sent FIN.
    TimeWait = 5,
    /// RST seen.
    Close = 6,
}

impl TcpState {
    fn from_u8(v: u8) -> TcpState {
        match v {
            1 => TcpState::SynSent,
            2 => TcpState::SynRecv,
            3 => TcpState::Established,
            4 => TcpState::FinWait,
            5 => TcpState::TimeWait,
            6 => TcpState::Close,
            _ => TcpState::None,
        }
    }
}

/// TCP flag bits as the flow key carries them.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}
use tcp_flags::{ACK, FIN, RST, SYN};

/// Bits of a slot's version (see the module documentation).
const VERSION_BITS: u32 = 10;
const VERSION_MASK: u64 = (1 << VERSION_BITS) - 1;

/// The version of a slot whose head is `head`.
fn version_of(head: u64) -> u16 {
    ((head & 0xffff_ffff) >> 1 & VERSION_MASK) as u16
}

/// The state word: TCP state, which sides sent FIN, whether the responder
/// replied, the slot's version, the QoS class of the rule that admitted
/// it, and the ruleset generation that admitted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    tcp: TcpState,
    fin_orig: bool,
    fin_reply: bool,
    replied: bool,
    version: u16,
    class: u16,
    generation: u32,
}

impl State {
    fn pack(self) -> u64 {
        u64::from(self.tcp as u8)
            | u64::from(self.fin_orig) << 3
            | u64::from(self.fin_reply) << 4
            | u64::from(self.replied) << 5
            | (u64::from(self.version) & VERSION_MASK) << 6
            | u64::from(self.class) << 16
            | u64::from(self.generation) << 32
    }

    fn unpack(w: u64) -> State {
        State {
            tcp: TcpState::from_u8(w as u8 & 7),
            fin_orig: w & 1 << 3 != 0,
            fin_reply: w & 1 << 4 != 0,
            replied: w & 1 << 5 != 0,
            version: (w >> 6 & VERSION_MASK) as u16,
            class: (w >> 16) as u16,
            generation: (w >> 32) as u32,
        }
    }

    /// The state after a packet with `flags`, from the originator if `orig`.
    fn advance(mut self, proto: u8, orig: bool, flags: u8) -> State {
        if !orig {
            self.replied = true;
        }
        if proto != TCP {
            return self;
        }
        use TcpState::*;
        if flags & RST != 0 {
            self.tcp = Close;
            return self;
        }
        if flags & SYN != 0 && flags & ACK == 0 && orig && matches!(self.tcp, TimeWait | Close) {
            // A new connection on the same ports.
            return State {
                tcp: SynSent,
                fin_orig: false,
                fin_reply: false,
                replied: false,
                ..self
            };
        }
        self.tcp = match self.tcp {
            SynSent if !orig && flags & SYN != 0 && flags & ACK != 0 => SynRecv,
            SynRecv if orig && flags & ACK != 0 && flags & SYN == 0 => Established,
            s => s,
        };
        if flags & FIN != 0 {
            if orig {
                self.fin_orig = true;
            } else {
                self.fin_reply = true;
            }
            if matches!(self.tcp, SynRecv | Established | FinWait) {
                self.tcp = if self.fin_orig && self.fin_reply {
                    TimeWait
                } else {
                    FinWait
                };
            }
        }
        self
    }

    fn timeout(&self, proto: u8, t: &Timeouts) -> u32 {
        use TcpState::*;
        match (proto, self.tcp) {
            (TCP, SynSent) => t.tcp_syn_sent,
            (TCP, SynRecv) => t.tcp_syn_recv,
            (TCP, FinWait) => t.tcp_fin_wait,
            (TCP, TimeWait) => t.tcp_time_wait,
            (TCP, Close) => t.tcp_close,
            (TCP, Established) if !self.replied => t.tcp_unconfirmed,
            (TCP, _) => t.tcp_established,
            (UDP, _) if self.replied => t.udp_stream,
            (UDP, _) => t.udp,
            (ICMP | ICMPV6, _) => t.icmp,
            _ => t.other,
        }
    }
}

/// A session's identity: the tuple in canonical order plus the zone
/// (bridge domain) so equal addresses in two VPCs stay apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    words: [u64; 5],
    /// Whether the packet's source is the canonical first endpoint.
    src_first: bool,
}

/// ICMP's "ports" are type and code, which differ between a request and
/// its reply: an ICMP session is keyed by the two addresses alone (one
/// session per host pair and zone), so echo replies find the request's.
fn canonical(t: &Tuple, zone: u16) -> Key {
    let icmp = t.proto == ICMP || t.proto == ICMPV6;
    let (sp, dp) = if icmp { (0, 0) } else { (t.sport, t.dport) };
    let (s, d) = ((t.src, sp), (t.dst, dp));
    let src_first = s <= d;
    let ((a, pa), (b, pb)) = if src_first { (s, d) } else { (d, s) };
    let fam = u64::from(t.family == Family::V6);
    Key {
        words: [
            a as u64,
            (a >> 64) as u64,
            b as u64,
            (b >> 64) as u64,
            u64::from(pa)
                | u64::from(pb) << 16
                | u64::from(t.proto) << 32
                | u64::from(zone) << 40
                | fam << 56,
        ],
        src_first,
    }
}

fn hash(k: &Key) -> u64 {
    crate::hash::words(&k.words)
}

/// The heads of one bucket's slots, one cache line: `tag << 32 | seq`
/// per slot; seq odd while the slot is being written; tag 0 = empty.
#[repr(align(64))]
#[derive(Default)]
struct Heads([AtomicU64; WAYS]);

/// A slot's body, one cache line: key words, state, and `deadline (secs)
/// | orig_first << 32 | owner << 33 | version << 49` (which endpoint
/// opened the session, the port it is charged to, the slot's version).
#[repr(align(64))]
#[derive(Default)]
struct Body {
    key: [AtomicU64; 5],
    state: AtomicU64,
    meta: AtomicU64,
}

/// Where a session found by [`SessionTable::lookup`] lives: its slot and
/// the slot's version then, so that changes through it touch that session
/// only, never one that took the slot over since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionRef {
    slot: u32,
    version: u16,
}

const META_VERSION_SHIFT: u32 = 49;

/// What a packet found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A live session; the packet is from its originator if `orig`.
    Hit {
        /// Direction of the packet.
        orig: bool,
        /// The ruleset generation that admitted the session.
        generation: u32,
        /// The QoS class given at [`SessionTable::open`] (0: none).
        class: u16,
        /// Where it lives, for [`SessionTable::update`].
        slot: SessionRef,
    },
    /// No live session.
    Miss,
}

/// What opening a session did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// A new session.
    New,
    /// Another worker opened it at the same time; it is live.
    Exists,
    /// No free slot in its buckets: the packet must be dropped.
    Full,
    /// Its owner or zone holds its whole share ([`Limits`]): the packet
    /// must be dropped.
    Quota,
}

/// Shares of the table (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sessions one owner (switch port) may hold.
    pub per_owner: u32,
    /// Sessions one zone (bridge domain) may hold.
    pub per_zone: u32,
}

impl Limits {
    /// No share smaller than the table.
    pub const NONE: Limits = Limits {
        per_owner: u32::MAX,
        per_zone: u32::MAX,
    };
}

/// Owners and zones counted: ids are u16.
const IDS: usize = 1 << 16;

/// See the module documentation.
pub struct SessionTable {
    heads: Box<[Heads]>,
    bodies: Box<[Body]>,
    mask: usize,
    timeouts: Timeouts,
    limits: Limits,
    /// Sessions charged to each owner, and to each zone.
    owned: Box<[AtomicU32]>,
    zoned: Box<[AtomicU32]>,
    /// Unreplied sessions evicted for new ones.
    evictions: AtomicU64,
}

impl SessionTable {
    /// A table of at least `capacity` sessions, without shares.
    pub fn new(capacity: usize, timeouts: Timeouts) -> SessionTable {
        Self::with_limits(capacity, timeouts, Limits::NONE)
    }

    /// A table of at least `capacity` sessions shared as `limits` says.
    pub fn with_limits(capacity: usize, timeouts: Timeouts, limits: Limits) -> SessionTable {
        let buckets = capacity.div_ceil(WAYS).next_power_of_two().max(2);
        SessionTable {
            heads: (0..buckets).map(|_| Heads::default()).collect(),
            bodies: (0..buckets * WAYS).map(|_| Body::default()).collect(),
            mask: buckets - 1,
            timeouts,
            limits,
            owned: (0..IDS).map(|_| AtomicU32::new(0)).collect(),
            zoned: (0..IDS).map(|_| AtomicU32::new(0)).collect(),
            evictions: AtomicU64::new(0),
        }
    }

    /// Its shares.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sessions charged to `owner` (see the module documentation).
    pub fn owned_by(&self, owner: u16) -> u32 {
        self.owned[usize::from(owner)].load(Relaxed)
    }

    /// Sessions charged to `zone`.
    pub fn in_zone(&self, zone: u16) -> u32 {
        self.zoned[usize::from(zone)].load(Relaxed)
    }

    /// Unreplied sessions evicted for new ones so far.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Relaxed)
    }

    /// Uncharges the session in slot `i`, which the caller just took
    /// (claimed or emptied): it may no longer be read by anyone else.
    fn uncharge(&self, i: usize) {
        let b = &self.bodies[i];
        let owner = (b.meta.load(Relaxed) >> 33) as u16;
        let zone = (b.key[4].load(Relaxed) >> 40) as u16;
        let dec = |c: &AtomicU32| {
            let _ = c.fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
        };
        dec(&self.owned[usize::from(owner)]);
        dec(&self.zoned[usize::from(zone)]);
    }

    /// Slots (the hard bound on sessions).
    pub fn capacity(&self) -> usize {
        self.bodies.len()
    }

    /// The two candidate buckets of a hash (two choices keep buckets
    /// from overflowing until the table is nearly full).
    fn buckets(&self, h: u64) -> [usize; 2] {
        let b1 = (h as usize) & self.mask;
        let mut b2 = ((h >> 32).wrapping_mul(0x9e37_79b9) as usize) & self.mask;
        if b2 == b1 {
            b2 = b1 ^ 1;
        }
        [b1, b2]
    }

    fn head(&self, slot: usize) -> &AtomicU64 {
        &self.heads[slot / WAYS].0[slot % WAYS]
    }

    fn slots(&self, h: u64) -> impl Iterator<Item = usize> {
        self.buckets(h)
            .into_iter()
            .flat_map(|b| b * WAYS..(b + 1) * WAYS)
    }

    fn tag(h: u64) -> u64 {
        (h >> 32) | 1
    }

    /// Reads slot `i` if it holds `key` and is live at `now`: (orig first?, state word).
    fn read(&self, i: usize, tag: u64, key: &Key, now: u32) -> Option<(bool, u64)> {
        let head = self.head(i).load(Acquire);
        if head >> 32 != tag || head & 1 == 1 {
            return None;
        }
        let body = &self.bodies[i];
        if body
            .key
            .iter()
            .zip(key.words)
            .any(|(a, w)| a.load(Relaxed) != w)
        {
            return None;
        }
        let (state, meta) = (body.state.load(Relaxed), body.meta.load(Relaxed));
        fence(Acquire);
        if self.head(i).load(Relaxed) != head {
            return None; // rewritten while we read
        }
        if (meta as u32) < now {
            return None; // expired
        }
        Some((meta >> 32 & 1 != 0, state))
    }

    /// Prefetches the two bucket lines the session of `t` in `zone`
    /// would be looked up in: a burst prefetches every frame's, then
    /// looks them up, and the cache misses of a table larger than the
    /// caches overlap.
    #[inline]
    pub fn prefetch(&self, t: &Tuple, zone: u16) {
        for b in self.buckets(hash(&canonical(t, zone))) {
            crate::prefetch::line(&self.heads[b]);
        }
    }

    /// Looks up the session of `t` in `zone`.
    #[inline]
    pub fn lookup(&self, t: &Tuple, zone: u16, now: u32) -> Found {
        let key = canonical(t, zone);
        let h = hash(&key);
        let tag = Self::tag(h);
        for i in self.slots(h) {
            if let Some((orig_first, state)) = self.read(i, tag, &key, now) {
                let st = State::unpack(state);
                return Found::Hit {
                    orig: orig_first == key.src_first,
                    generation: st.generation,
                    class: st.class,
                    slot: SessionRef {
                        slot: i as u32,
                        version: st.version,
                    },
                };
            }
        }
        Found::Miss
    }

    /// Whether the session `r` refers to is still live at `now` in its
    /// slot (not ended, expired or replaced since it was found): its QoS
    /// class if so. A flow cache holding `r` asks this instead of a
    /// [`lookup`](Self::lookup): the same answer without hashing the
    /// tuple or comparing keys, from the slot's head and body lines.
    #[inline]
    pub fn live(&self, r: SessionRef, now: u32) -> Option<u16> {
        let head = self.head(r.slot as usize).load(Acquire);
        if head >> 32 == 0 || head & 1 == 1 || version_of(head) != r.version {
            return None;
        }
        let body = &self.bodies[r.slot as usize];
        let (state, meta) = (body.state.load(Relaxed), body.meta.load(Relaxed));
        fence(Acquire);
        if self.head(r.slot as usize).load(Relaxed) != head || (meta as u32) < now {
            return None;
        }
        let st = State::unpack(state);
        (st.version == r.version).then_some(st.class)
    }

    /// Records a packet of a session found by [`lookup`](Self::lookup):
    /// advances the TCP state and pushes the deadline out. Nothing changes
    /// if the session ended and its slot went to another since.
    #[inline]
    pub fn update(&self, r: SessionRef, proto: u8, orig: bool, tcp_flags: u8, now: u32) {
        let b = &self.bodies[r.slot as usize];
        let mut cur = b.state.load(Relaxed);
        let next = loop {
            let st = State::unpack(cur);
            if st.version != r.version {
                return;
            }
            let next = st.advance(proto, orig, tcp_flags);
            let packed = next.pack();
            if packed == cur {
                break next;
            }
            match b.state.compare_exchange_weak(cur, packed, Relaxed, Relaxed) {
                Ok(_) => break next,
                Err(c) => cur = c,
            }
        };
        let deadline = now.saturating_add(next.timeout(proto, &self.timeouts));
        let meta = b.meta.load(Relaxed);
        if meta as u32 != deadline
            && (meta >> META_VERSION_SHIFT & VERSION_MASK) as u16 == r.version
        {
            // Lost to a newer deadline or to the slot's reuse: either way
            // the word is right as it is.
            let _ = b.meta.compare_exchange(
                meta,
                (meta & !0xffff_ffff) | u64::from(deadline),
                Relaxed,
                Relaxed,
            );
        }
    }

    /// Re-stamps a session with the generation (and QoS class) of the
    /// ruleset that just re-admitted it.
    pub fn readmit(&self, r: SessionRef, generation: u32, class: u16) {
        let b = &self.bodies[r.slot as usize];
        let mut cur = b.state.load(Relaxed);
        loop {
            let mut st = State::unpack(cur);
            if st.version != r.version {
                return;
            }
            st.generation = generation;
            st.class = class;
            match b
                .state
                .compare_exchange_weak(cur, st.pack(), Relaxed, Relaxed)
            {
                Ok(_) => return,
                Err(c) => cur = c,
            }
        }
    }

    /// Ends a session at once (its ruleset no longer admits it).
    pub fn remove(&self, r: SessionRef) {
        let head = self.head(r.slot as usize);
        let h = head.load(Relaxed);
        if h & 1 == 0
            && h >> 32 != 0
            && version_of(h) == r.version
            && head
                .compare_exchange(h, (h & 0xffff_ffff) + 2, Release, Relaxed)
                .is_ok()
        {
            self.uncharge(r.slot as usize);
        }
    }

    /// Opens a session for `t` (from its originator, whose packet came in
    /// on switch port `owner`) admitted by ruleset `generation` with QoS
    /// class `class` (0: none).
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &self,
        t: &Tuple,
        zone: u16,
        owner: u16,
        tcp_flags: u8,
        generation: u32,
        class: u16,
        now: u32,
    ) -> Open {
        let key = canonical(t, zone);
        let h = hash(&key);
        let tag = Self::tag(h);
        for _ in 0..3 {
            // The first free slot and the free count of each candidate
            // bucket; the emptier bucket gets the session (two choices
            // balance the buckets). Failing that, the unreplied session
            // nearest its deadline.
            let mut free = [(None, 0usize); 2];
            let mut victim: Option<(usize, u64, u32)> = None;
            for (k, b) in self.buckets(h).into_iter().enumerate() {
                for i in b * WAYS..(b + 1) * WAYS {
                    if self.read(i, tag, &key, now).is_some() {
                        return Open::Exists;
                    }
                    let head = self.head(i).load(Acquire);
                    if head & 1 == 1 {
                        continue;
                    }
                    let body = &self.bodies[i];
                    let deadline = body.meta.load(Relaxed) as u32;
                    if head >> 32 == 0 || deadline < now {
                        free[k].1 += 1;
                        free[k].0.get_or_insert((i, head));
                    } else if !State::unpack(body.state.load(Relaxed)).replied
                        && victim.is_none_or(|(_, _, d)| deadline < d)
                    {
                        victim = Some((i, head, deadline));
                    }
                }
            }
            let free = if free[1].1 > free[0].1 {
                free[1].0
            } else {
                free[0].0
            };
            let Some((i, head)) = free.or(victim.map(|(i, h, _)| (i, h))) else {
                return Open::Full;
            };
            if self.owned_by(owner) >= self.limits.per_owner
                || self.in_zone(zone) >= self.limits.per_zone
            {
                return Open::Quota;
            }
            let seq = head & 0xffff_ffff;
            // Claim: odd sequence with our tag; readers skip the slot. The
            // release fence orders the claim before the body's stores for
            // any reader that sees one of them (see the module doc).
            if self
                .head(i)
                .compare_exchange(head, tag << 32 | (seq + 1), Acquire, Relaxed)
                .is_err()
            {
                continue;
            }
            fence(Release);
            let version = version_of(seq + 2);
            if head >> 32 != 0 {
                // An expired or evicted session's slot: uncharge it.
                if free.is_none() {
                    self.evictions.fetch_add(1, Relaxed);
                }
                self.uncharge(i);
            }
            self.owned[usize::from(owner)].fetch_add(1, Relaxed);
            self.zoned[usize::from(zone)].fetch_add(1, Relaxed);
            let body = &self.bodies[i];
            for (a, w) in body.key.iter().zip(key.words) {
                a.store(w, Relaxed);
            }
            let st = State {
                tcp: TcpState::None,
                fin_orig: false,
                fin_reply: false,
                replied: false,
                version,
                class,
                generation,
            };
            let st = if t.proto == TCP {
                let first = if tcp_flags & SYN != 0 && tcp_flags & ACK == 0 {
                    TcpState::SynSent
                } else {
                    TcpState::Established
                };
                State { tcp: first, ..st }.advance(TCP, true, tcp_flags & (FIN | RST))
            } else {
                st
            };
            body.state.store(st.pack(), Relaxed);
            let deadline = now.saturating_add(st.timeout(t.proto, &self.timeouts));
            body.meta.store(
                u64::from(deadline)
                    | u64::from(key.src_first) << 32
                    | u64::from(owner) << 33
                    | u64::from(version) << META_VERSION_SHIFT,
                Relaxed,
            );
            self.head(i).store(tag << 32 | (seq + 2), Release);
            return Open::New;
        }
        Open::Full
    }

    /// Empties every expired slot; returns (emptied, live).
    pub fn sweep(&self, now: u32) -> (usize, usize) {
        let (mut emptied, mut live) = (0, 0);
        for i in 0..self.bodies.len() {
            let head = self.head(i);
            let h = head.load(Acquire);
            if h >> 32 == 0 || h & 1 == 1 {
                continue;
            }
            if (self.bodies[i].meta.load(Relaxed) as u32) < now {
                if head
                    .compare_exchange(h, (h & 0xffff_ffff) + 2, Release, Relaxed)
                    .is_ok()
                {
                    self.uncharge(i);
                    emptied += 1;
                }
            } else {
                live += 1;
            }
        }
        (emptied, live)
    }

    /// The TCP state of a session (tests).
    pub fn tcp_state(&self, r: SessionRef) -> TcpState {
        State::unpack(self.bodies[r.slot as usize].state.load(Relaxed)).tcp
    }

    /// Up to `limit` live sessions at `now`, for `session show` (a scan
    /// of the table on the control thread; slots being rewritten are
    /// skipped).
    pub fn entries(&self, now: u32, limit: usize) -> Vec<SessionInfo> {
        let mut out = Vec::new();
        for i in 0..self.bodies.len() {
            if out.len() >= limit {
                break;
            }
            let head = self.head(i).load(Acquire);
            if head >> 32 == 0 || head & 1 == 1 {
                continue;
            }
            let body = &self.bodies[i];
            let w: Vec<u64> = body.key.iter().map(|k| k.load(Relaxed)).collect();
            let (state, meta) = (body.state.load(Relaxed), body.meta.load(Relaxed));
            fence(Acquire);
            if self.head(i).load(Relaxed) != head || (meta as u32) < now {
                continue;
            }
            let st = State::unpack(state);
            let (a, b) = (
                u128::from(w[0]) | u128::from(w[1]) << 64,
                u128::from(w[2]) | u128::from(w[3]) << 64,
            );
            let (pa, pb) = (w[4] as u16, (w[4] >> 16) as u16);
            // The originator is the canonical first endpoint if meta says so.
            let ((src, sport), (dst, dport)) = if meta >> 32 & 1 != 0 {
                ((a, pa), (b, pb))
            } else {
                ((b, pb), (a, pa))
            };
            let proto = (w[4] >> 32) as u8;
            out.push(SessionInfo {
                tuple: Tuple {
                    family: if (w[4] >> 56) & 1 == 1 {
                        Family::V6
                    } else {
                        Family::V4
                    },
                    src,
                    dst,
                    proto,
                    sport,
                    dport,
                },
                zone: (w[4] >> 40) as u16,
                tcp: (proto == TCP).then_some(st.tcp),
                replied: st.replied,
                expires_in: (meta as u32).saturating_sub(now),
                generation: st.generation,
                class: st.class,
            });
        }
        out
    }

    /// Ends every session (`session flush`): later packets are judged by
    /// the rules again. Returns how many were live.
    pub fn flush(&self) -> usize {
        (0..self.bodies.len())
            .filter(|&i| {
                let h = self.head(i).load(Acquire);
                h >> 32 != 0
                    && h & 1 == 0
                    && self
                        .head(i)
                        .compare_exchange(h, (h & 0xffff_ffff) + 2, Release, Relaxed)
                        .is_ok()
                    && {
                        self.uncharge(i);
                        true
                    }
            })
            .count()
    }
}

/// A live session as `session show` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The tuple as its originator sent it (ICMP: ports 0).
    pub tuple: Tuple,
    /// Its zone (bridge domain index).
    pub zone: u16,
    /// TCP state (None for other protocols).
    pub tcp: Option<TcpState>,
    /// Whether the responder has answered.
    pub replied: bool,
    /// Seconds until it expires without traffic.
    pub expires_in: u32,
    /// The ruleset generation that admitted it.
    pub generation: u32,
    /// Its QoS class (0: none).
    pub class: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_list_sessions_from_their_originator_and_flush_ends_them() {
        let tab = SessionTable::new(64, Timeouts::default());
        // Opened by the higher address, so the canonical order is reversed.
        let orig = t(0x0a00_0009, 40000, 0x0a00_0001, 80, TCP);
        assert_eq!(tab.open(&orig, 3, 0, SYN, 7, 2, 100), Open::New);
        let udp = t(0x0a00_0001, 5000, 0x0a00_0002, 53, UDP);
        assert_eq!(tab.open(&udp, 3, 0, 0, 7, 0, 100), Open::New);
        let mut e = tab.entries(100, 10);
        e.sort_by_key(|s| s.tuple.proto);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].tuple, orig);
        assert_eq!(
            (e[0].zone, e[0].tcp, e[0].generation, e[0].class),
            (3, Some(TcpState::SynSent), 7, 2)
        );
        assert_eq!(e[1].tuple, udp);
        assert_eq!((e[1].tcp, e[1].replied), (None, false));
        assert_eq!(e[1].expires_in, Timeouts::default().udp);
        assert_eq!(tab.entries(100, 1).len(), 1, "limit");
        assert!(
            tab.entries(100 + 3600, 10).is_empty(),
            "expired ones are not listed"
        );
        assert_eq!(tab.flush(), 2);
        assert!(tab.entries(100, 10).is_empty());
        assert_eq!(tab.lookup(&orig, 3, 100), Found::Miss);
    }

    fn t(src: u32, sport: u16, dst: u32, dport: u16, proto: u8) -> Tuple {
        Tuple {
            family: Family::V4,
            src: src.into(),
            dst: dst.into(),
            proto,
            sport,
            dport,
        }
    }

    fn rev(x: &Tuple) -> Tuple {
        Tuple {
            src: x.dst,
            dst: x.src,
            sport: x.dport,
            dport: x.sport,
            ..*x
        }
    }

    fn hit(tb: &SessionTable, x: &Tuple, now: u32) -> (bool, SessionRef) {
        match tb.lookup(x, 0, now) {
            Found::Hit { orig, slot, .. } => (orig, slot),
            Found::Miss => panic!("no session for {x:?}"),
        }
    }

    #[test]
    fn tcp_handshake_data_and_close() {
        let tb = SessionTable::new(64, Timeouts::default());
        let c = t(1, 40000, 2, 80, TCP);
        assert_eq!(tb.lookup(&c, 0, 0), Found::Miss);
        assert_eq!(tb.open(&c, 0, 0, SYN, 1, 0, 0), Open::New);
        let (orig, slot) = hit(&tb, &c, 0);
        assert!(orig);
        assert_eq!(tb.tcp_state(slot), TcpState::SynSent);
        let (orig, _) = hit(&tb, &rev(&c), 0);
        assert!(!orig, "the reply is seen as the reply");
        tb.update(slot, TCP, false, SYN | ACK, 1);
        assert_eq!(tb.tcp_state(slot), TcpState::SynRecv);
        tb.update(slot, TCP, true, ACK, 1);
        assert_eq!(tb.tcp_state(slot), TcpState::Established);
        // Established lives an hour.
        assert!(matches!(tb.lookup(&c, 0, 3000), Found::Hit { .. }));
        tb.update(slot, TCP, true, FIN | ACK, 3000);
        assert_eq!(tb.tcp_state(slot), TcpState::FinWait);
        tb.update(slot, TCP, false, FIN | ACK, 3001);
        assert_eq!(tb.tcp_state(slot), TcpState::TimeWait);
        assert!(matches!(tb.lookup(&c, 0, 3031), Found::Hit { .. }));
        assert_eq!(
            tb.lookup(&c, 0, 3032),
            Found::Miss,
            "time-wait expires after 30 s"
        );
    }

    #[test]
    fn a_held_reference_is_live_exactly_while_lookup_finds_its_session() {
        let tb = SessionTable::new(64, Timeouts::default());
        let u = t(1, 5, 2, 53, UDP);
        tb.open(&u, 0, 0, 0, 1, 4, 100);
        let (_, r) = hit(&tb, &u, 100);
        assert_eq!(tb.live(r, 100), Some(4), "its class");
        assert_eq!(tb.live(r, 130), Some(4));
        assert_eq!(tb.live(r, 131), None, "expired, as lookup says");
        assert_eq!(tb.lookup(&u, 0, 131), Found::Miss);
        // Ended: the slot empty, then reused by another flow.
        tb.remove(r);
        assert_eq!(tb.live(r, 100), None);
        tb.open(&u, 0, 0, 0, 1, 0, 100);
        let (_, again) = hit(&tb, &u, 100);
        assert_eq!(tb.live(again, 100), Some(0));
        assert_eq!(tb.live(r, 100), None, "a stale reference stays dead");
        assert_eq!(tb.flush(), 1);
        assert_eq!(tb.live(again, 100), None, "flushed");
    }

    #[test]
    fn timeouts_per_state_and_protocol() {
        let tb = SessionTable::new(64, Timeouts::default());
        let syn = t(1, 1, 2, 2, TCP);
        tb.open(&syn, 0, 0, SYN, 1, 0, 100);
        assert!(matches!(tb.lookup(&syn, 0, 130), Found::Hit { .. }));
        assert_eq!(tb.lookup(&syn, 0, 131), Found::Miss, "unanswered SYN: 30 s");
        let u = t(1, 5, 2, 53, UDP);
        tb.open(&u, 0, 0, 0, 1, 0, 0);
        assert_eq!(tb.lookup(&u, 0, 31), Found::Miss, "unreplied UDP: 30 s");
        tb.open(&u, 0, 0, 0, 1, 0, 100);
        let (_, slot) = hit(&tb, &rev(&u), 100);
        tb.update(slot, UDP, false, 0, 100);
        assert!(
            matches!(tb.lookup(&u, 0, 280), Found::Hit { .. }),
            "replied UDP: 180 s"
        );
        let r = t(3, 1, 4, 1, TCP);
        tb.open(&r, 0, 0, SYN, 1, 0, 0);
        let (_, slot) = hit(&tb, &r, 0);
        tb.update(slot, TCP, false, RST, 0);
        assert_eq!(tb.tcp_state(slot), TcpState::Close);
        assert_eq!(tb.lookup(&r, 0, 11), Found::Miss, "reset: 10 s");
        // Loose pickup: a mid-stream segment opens an established session.
        let m = t(5, 1, 6, 1, TCP);
        tb.open(&m, 0, 0, ACK, 1, 0, 0);
        assert_eq!(tb.tcp_state(hit(&tb, &m, 0).1), TcpState::Established);
    }

    #[test]
    fn icmp_replies_find_the_request_session() {
        let tb = SessionTable::new(64, Timeouts::default());
        // Echo request: type 8 code 0; reply: type 0 code 0.
        tb.open(&t(1, 8, 2, 0, ICMP), 0, 0, 0, 1, 0, 0);
        let (orig, _) = hit(&tb, &t(2, 0, 1, 0, ICMP), 0);
        assert!(!orig);
    }

    #[test]
    fn zones_keep_equal_tuples_apart() {
        let tb = SessionTable::new(64, Timeouts::default());
        let u = t(1, 5, 2, 53, UDP);
        tb.open(&u, 7, 0, 0, 1, 0, 0);
        assert!(matches!(tb.lookup(&u, 7, 0), Found::Hit { .. }));
        assert_eq!(tb.lookup(&u, 8, 0), Found::Miss);
    }

    #[test]
    fn a_full_table_evicts_unreplied_sessions_only_and_reuses_expired_slots() {
        // The smallest table: 2 buckets, both candidates of every key.
        let tb = SessionTable::new(1, Timeouts::default());
        let cap = tb.capacity() as u32;
        assert_eq!(cap, 2 * WAYS as u32);
        // Every session replied: nothing may be evicted.
        for i in 0..cap {
            let u = t(i, 1, 99, 1, UDP);
            assert_eq!(tb.open(&u, 0, 0, 0, 1, 0, 0), Open::New);
            let (_, slot) = hit(&tb, &rev(&u), 0);
            tb.update(slot, UDP, false, 0, 0);
        }
        assert_eq!(
            tb.open(&t(500, 1, 99, 1, UDP), 0, 0, 0, 1, 0, 0),
            Open::Full
        );
        assert_eq!(
            tb.open(&t(0, 1, 99, 1, UDP), 0, 0, 0, 1, 0, 0),
            Open::Exists
        );
        assert_eq!(tb.evictions(), 0);
        // After the UDP stream timeout every slot is free again.
        assert_eq!(
            tb.open(&t(500, 1, 99, 1, UDP), 0, 0, 0, 1, 0, 181),
            Open::New
        );
        assert_eq!(tb.owned_by(0), cap, "one charge moved to the new session");
        assert_eq!(tb.sweep(181), (cap as usize - 1, 1));
        assert_eq!(tb.owned_by(0), 1, "charges follow the sweep");
        let (_, slot) = hit(&tb, &rev(&t(500, 1, 99, 1, UDP)), 181);
        tb.update(slot, UDP, false, 0, 181);

        // Unreplied sessions (a flood) give way to new ones, nearest
        // deadline first; the replied one stays.
        for i in 0..cap - 1 {
            let now = 200 + i;
            assert_eq!(
                tb.open(&t(1000 + i, 1, 99, 1, UDP), 0, 1, 0, 1, 0, now),
                Open::New
            );
        }
        assert_eq!(
            tb.open(&t(5000, 1, 99, 1, UDP), 0, 2, 0, 1, 0, 230),
            Open::New
        );
        assert_eq!(tb.evictions(), 1);
        assert!(matches!(
            tb.lookup(&t(1000, 1, 99, 1, UDP), 0, 230),
            Found::Miss
        ));
        assert!(matches!(
            tb.lookup(&t(500, 1, 99, 1, UDP), 0, 230),
            Found::Hit { .. }
        ));
        assert_eq!(
            (tb.owned_by(0), tb.owned_by(1), tb.owned_by(2)),
            (1, cap - 2, 1)
        );
    }

    #[test]
    fn owners_and_zones_get_their_share_only() {
        let tb = SessionTable::with_limits(
            1024,
            Timeouts::default(),
            Limits {
                per_owner: 10,
                per_zone: 15,
            },
        );
        for i in 0..10 {
            assert_eq!(tb.open(&t(i, 1, 99, 1, UDP), 0, 1, 0, 1, 0, 0), Open::New);
        }
        assert_eq!(
            tb.open(&t(10, 1, 99, 1, UDP), 0, 1, 0, 1, 0, 0),
            Open::Quota
        );
        // Another owner still opens, until the zone's share is used.
        for i in 0..5 {
            assert_eq!(
                tb.open(&t(100 + i, 1, 99, 1, UDP), 0, 2, 0, 1, 0, 0),
                Open::New
            );
        }
        assert_eq!(
            tb.open(&t(200, 1, 99, 1, UDP), 0, 2, 0, 1, 0, 0),
            Open::Quota
        );
        assert_eq!(tb.open(&t(200, 1, 99, 1, UDP), 1, 2, 0, 1, 0, 0), Open::New);
        assert_eq!((tb.owned_by(1), tb.in_zone(0), tb.in_zone(1)), (10, 15, 1));
        // Ended sessions give the share back.
        let (_, slot) = hit(&tb, &t(0, 1, 99, 1, UDP), 0);
        tb.remove(slot);
        assert_eq!(tb.open(&t(10, 1, 99, 1, UDP), 0, 1, 0, 1, 0, 0), Open::New);
        assert_eq!(
            tb.open(&t(11, 1, 99, 1, UDP), 0, 1, 0, 1, 0, 0),
            Open::Quota
        );
        assert_eq!(tb.flush(), 16);
        assert_eq!((tb.owned_by(1), tb.in_zone(0), tb.in_zone(1)), (0, 0, 0));
    }

    #[test]
    fn a_stray_ack_opens_an_unconfirmed_session_until_answered() {
        let tb = SessionTable::new(1024, Timeouts::default());
        let to = Timeouts::default();
        let ack = t(1, 1000, 2, 80, TCP);
        assert_eq!(tb.open(&ack, 0, 0, ACK, 1, 0, 0), Open::New);
        // Unanswered, it ends after tcp_unconfirmed.
        assert!(matches!(
            tb.lookup(&ack, 0, to.tcp_unconfirmed),
            Found::Hit { .. }
        ));
        assert_eq!(tb.lookup(&ack, 0, to.tcp_unconfirmed + 1), Found::Miss);
        // Answered, it is an established connection.
        let ack2 = t(3, 1000, 2, 80, TCP);
        tb.open(&ack2, 0, 0, ACK, 1, 0, 0);
        let (_, slot) = hit(&tb, &rev(&ack2), 0);
        tb.update(slot, TCP, false, ACK, 0);
        assert!(matches!(
            tb.lookup(&ack2, 0, to.tcp_established),
            Found::Hit { .. }
        ));
    }

    #[test]
    fn two_choices_fill_the_table_before_refusing() {
        let tb = SessionTable::new(1 << 14, Timeouts::default());
        let cap = tb.capacity();
        let mut refused = 0;
        for i in 0..cap as u32 {
            if tb.open(&t(i, 1, 99, 1, UDP), 0, 0, 0, 1, 0, 0) == Open::Full {
                refused += 1;
            }
            let load = i as usize + 1;
            if load == cap * 3 / 4 {
                assert_eq!(refused, 0, "refused at 75 % load");
            }
            if load == cap * 9 / 10 {
                assert!(refused * 100 < load, "{refused} refused by 90 % load");
            }
        }
    }

    #[test]
    fn a_stale_reference_changes_nothing_after_the_slot_is_reused() {
        // One bucket pair: the new session takes the removed one's slot.
        let tb = SessionTable::new(1, Timeouts::default());
        let old = t(1, 40000, 2, 80, TCP);
        tb.open(&old, 0, 0, SYN, 1, 0, 0);
        let (_, stale) = hit(&tb, &old, 0);
        tb.remove(stale);
        let new = t(3, 5000, 4, 53, UDP);
        assert_eq!(tb.open(&new, 0, 0, 0, 1, 0, 0), Open::New);
        let (_, fresh) = hit(&tb, &new, 0);
        assert_eq!(fresh.slot, stale.slot, "the slot was reused");
        // The old flow's late packets: a reply (would mark it replied and
        // give it the stream timeout), a readmission, a removal.
        tb.update(stale, UDP, false, 0, 0);
        tb.readmit(stale, 9, 3);
        tb.remove(stale);
        let e = tb.entries(0, 10);
        assert_eq!(e.len(), 1, "still there");
        assert_eq!(
            (e[0].replied, e[0].generation, e[0].class, e[0].expires_in),
            (false, 1, 0, Timeouts::default().udp)
        );
        assert_eq!(tb.lookup(&new, 0, Timeouts::default().udp + 1), Found::Miss);
    }

    /// A writer keeps reusing the slots of a tiny table for sessions whose
    /// QoS class is a function of their key; readers look keys up and
    /// check every hit's class. A read that mixed two sessions' words (a
    /// torn read the seqlock failed to catch) would show as a wrong class.
    #[test]
    fn readers_never_see_a_torn_session_while_a_writer_reuses_slots() {
        use std::sync::atomic::AtomicBool;
        let tb = std::sync::Arc::new(SessionTable::new(1, Timeouts::default()));
        let keys: Vec<Tuple> = (0..64).map(|i| t(i, 1000 + i as u16, 7, 53, UDP)).collect();
        let class_of = |x: &Tuple| (x.src as u16).wrapping_mul(7) + 1;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..1)
            .map(|r| {
                let (tb, keys, stop) = (tb.clone(), keys.clone(), stop.clone());
                std::thread::spawn(move || {
                    let (mut hits, mut n) = (0u64, r);
                    while !stop.load(Relaxed) {
                        n = (n + 1) % keys.len();
                        let x = &keys[n];
                        if let Found::Hit {
                            class, generation, ..
                        } = tb.lookup(x, 0, 0)
                        {
                            assert_eq!(class, class_of(x), "torn read of {x:?}");
                            assert_eq!(generation, x.src as u32);
                            hits += 1;
                        }
                    }
                    hits
                })
            })
            .collect();
        for round in 0..2_000_000u32 {
            let x = &keys[(round as usize * 7) % keys.len()];
            tb.open(x, 0, 0, 0, x.src as u32, class_of(x), 0);
            if let Found::Hit { slot, .. } =
                tb.lookup(&keys[(round as usize * 13) % keys.len()], 0, 0)
            {
                tb.remove(slot);
            }
        }
        stop.store(true, Relaxed);
        let hits: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(hits > 0, "the readers saw sessions");
    }

    #[test]
    fn directions_on_different_threads() {
        // Two workers: one opens and sends originals, the other sees only
        // replies; every reply finds the session.
        let tb = std::sync::Arc::new(SessionTable::new(4096, Timeouts::default()));
        let flows: Vec<Tuple> = (0..1000)
            .map(|i| t(i, 1000, 1_000_000 + i, 53, UDP))
            .collect();
        let opener = {
            let (tb, flows) = (tb.clone(), flows.clone());
            std::thread::spawn(move || {
                for f in &flows {
                    assert_ne!(tb.open(f, 0, 0, 0, 1, 0, 0), Open::Full);
                }
            })
        };
        opener.join().unwrap();
        let replier = {
            let (tb, flows) = (tb.clone(), flows.clone());
            std::thread::spawn(move || {
                for f in &flows {
                    let (orig, slot) = hit(&tb, &rev(f), 0);
                    assert!(!orig);
                    tb.update(slot, UDP, false, 0, 1);
                }
            })
        };
        for f in &flows {
            let (orig, slot) = hit(&tb, f, 0);
            assert!(orig);
            tb.update(slot, UDP, true, 0, 1);
        }
        replier.join().unwrap();
        assert_eq!(tb.sweep(1).1, 1000);
    }
}
