//! The security stage: per-port security groups (stateful, through the
//! session table) and QoS meters, applied to a burst after the bridge
//! decided where each frame goes.
//!
//! Directions are the container's: a frame from port P to port Q is judged
//! by P's *egress* group and Q's *ingress* group; both must allow it. A
//! frame of a live session passes without rule lookup in either direction.
//! Non-IP frames (ARP, LLDP) are not judged by groups, as cloud security
//! groups let ARP through; they are metered like any frame.
//!
//! Per burst (all frames came in on one port): one pass parses and looks
//! sessions up; the misses go through the ingress port's egress group in
//! one `classify_burst`; each miss then meets its output port's ingress
//! group; allowed misses open sessions; finally the meters color what is
//! left (the ingress port's egress meter once for the burst, then each
//! output port's ingress meter and the QoS class of the admitting rule).
//!
//! A ruleset change bumps the generation; a session admitted under an
//! older generation is judged again on its next packet (in its original
//! direction) and ended if the new rules deny it, so a deny takes effect
//! on live connections too.

mod explain;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use acl::policer::{Policed, SharedMeter, WireLen};
use acl::session::{Found, Open, SessionRef, SessionTable};
use acl::{Action as AclAction, Classifier, Family, SecurityGroup, Tuple, Verdict};

use crate::flow::{FlowKey, IPPROTO_TCP, L3};
use crate::stats::{DropReason, PortCounters};
use crate::switch::{Action, Frame};
use crate::types::{PortId, MAX_BURST};

pub use explain::{Judged, Judgement, MeterOf, MeterPeek, RuleHit};

/// A compiled security group, the QoS class of each of its rules, and
/// how many frames each rule decided.
pub struct Group {
    /// Its definition (rule names and matches, for `vswitchctl trace` and
    /// `acl show`).
    pub def: SecurityGroup,
    /// The classifier.
    pub classifier: Classifier,
    /// Per rule: index + 1 into [`Security`]'s class meters (0: none).
    pub rule_class: Vec<u16>,
    /// Per rule, then the default: frames it decided (a session's first
    /// frame, a denied frame, a session judged again after a ruleset
    /// change, a flooded copy). A live session's later frames pass without
    /// rules and are not counted here. Shared by the workers: only frames
    /// that miss the sessions reach a classifier, and a burst's run of
    /// frames decided by one rule is added at once.
    hits: Box<[AtomicU64]>,
}

impl Group {
    /// `def` compiled, its rules in the QoS classes `rule_class`, no hits.
    pub fn new(def: &SecurityGroup, rule_class: Vec<u16>) -> Group {
        assert_eq!(rule_class.len(), def.rules.len(), "a class per rule");
        Group {
            classifier: Classifier::new(def),
            hits: (0..=def.rules.len()).map(|_| AtomicU64::new(0)).collect(),
            def: def.clone(),
            rule_class,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// Frames each rule decided, in the definition's order, then the
    /// default's.
    pub fn hits(&self) -> Vec<u64> {
        self.hits.iter().map(|h| h.load(Relaxed)).collect()
    }

    /// The verdict for `t`, counted on its rule.
    #[inline]
    fn judge(&self, t: &Tuple) -> Verdict {
        let v = self.classifier.classify(t);
        self.count(v.rule, 1);
        v
    }

    /// The verdicts for `tuples` into `out`, counted on their rules.
    #[inline]
    fn judge_burst(&self, tuples: &[Tuple], out: &mut [Verdict]) {
        self.classifier.classify_burst(tuples, out);
        let mut run = (out[0].rule, 0);
        for v in &out[..tuples.len()] {
            if v.rule != run.0 {
                self.count(run.0, run.1);
                run = (v.rule, 0);
            }
            run.1 += 1;
        }
        self.count(run.0, run.1);
    }

    #[inline]
    fn count(&self, rule: Option<u32>, n: u64) {
        let i = rule.map_or(self.hits.len() - 1, |r| r as usize);
        self.hits[i].fetch_add(n, Relaxed);
    }
}

/// What one port has attached.
#[derive(Clone, Default)]
pub struct PortPolicy {
    /// Judges frames to the container.
    pub ingress: Option<Arc<Group>>,
    /// Judges frames from the container.
    pub egress: Option<Arc<Group>>,
    /// Meters frames to the container.
    pub ingress_meter: Option<Arc<SharedMeter>>,
    /// Meters frames from the container.
    pub egress_meter: Option<Arc<SharedMeter>>,
}

impl PortPolicy {
    /// Whether it has a group in either direction.
    #[inline]
    fn grouped(&self) -> bool {
        self.ingress.is_some() || self.egress.is_some()
    }

    fn is_empty(&self) -> bool {
        self.ingress.is_none()
            && self.egress.is_none()
            && self.ingress_meter.is_none()
            && self.egress_meter.is_none()
    }
}

/// The stage's tables in one snapshot. Cloning shares every table (a
/// snapshot that changes only the topology keeps its meters and sessions).
#[derive(Clone)]
pub struct Security {
    ports: Vec<PortPolicy>,
    class_meters: Vec<Arc<SharedMeter>>,
    sessions: Arc<SessionTable>,
    generation: u32,
    active: bool,
    /// Some port or QoS class has a meter (else [`Security::meter`] has
    /// nothing to do).
    metered: bool,
    /// Some port has a group.
    grouped: bool,
    /// Some port has an ingress group (a flooded frame may meet one).
    any_ingress: bool,
}

/// Per-burst scratch the stage fills and the pipeline reads back (the
/// flow keys of flooded frames, DSCP rewrites). Lives in a worker's
/// [`crate::Decisions`]: no allocation per burst.
pub(crate) struct Scratch {
    tuples: [Option<(Tuple, u8)>; MAX_BURST],
    /// DSCP to write into frame i before it is sent.
    pub(crate) remark: [Option<u8>; MAX_BURST],
    /// Wire segments of superframe i that may leave ([`KEEP_ALL`]: all);
    /// a policer cut the rest (see `acl::policer::SharedMeter::police_burst`).
    pub(crate) keep: [u32; MAX_BURST],
    class: [u16; MAX_BURST],
    /// The fragment entry of frame i if it is a first fragment.
    first_fragment: [Option<Tuple>; MAX_BURST],
    /// How the groups let frame i pass, for the flow cache.
    pub(crate) via: [Via; MAX_BURST],
}

/// How the security stage let a frame through: what a flow cache entry
/// for it must re-check on each hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// No group judged it (none on either side).
    Plain,
    /// A live session of the current ruleset, found by lookup.
    Session {
        /// Where it lives.
        r: SessionRef,
        /// Whether the frame is from its originator.
        orig: bool,
    },
    /// Anything else (it opened a session, was denied, is not a TCP or
    /// UDP first fragment...): never cached.
    Uncached,
}

/// Fragment tracking: a first fragment the groups let through records
/// (addresses, protocol, IP identification) in the session table, in its
/// bridge's zone with this bit set (bridges are numbered far below it);
/// later fragments, which carry no ports to judge, pass if their entry
/// exists and are dropped (`fragment_unknown`) if not. The entry lives
/// as an unreplied session (30 s), charged to the sender's port.
const FRAGMENT_ZONE: u16 = 0x8000;

/// A fragment entry's key: the fragment's addresses and protocol, its
/// identification where the ports go.
fn fragment_tuple(t: &Tuple, id: u32) -> Tuple {
    Tuple {
        sport: (id >> 16) as u16,
        dport: id as u16,
        ..*t
    }
}

/// [`Scratch::keep`] of a frame no policer cut.
pub const KEEP_ALL: u32 = u32::MAX;

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            tuples: [None; MAX_BURST],
            remark: [None; MAX_BURST],
            keep: [KEEP_ALL; MAX_BURST],
            class: [0; MAX_BURST],
            first_fragment: [None; MAX_BURST],
            via: [Via::Uncached; MAX_BURST],
        }
    }
}

impl Scratch {
    /// Frame `i` is a flow cache hit of QoS class `class`: no remark or
    /// cut yet (the meters decide). A hit is a unicast, so flood
    /// admission never reads its other fields.
    #[inline]
    pub(crate) fn hit(&mut self, i: usize, class: u16) {
        self.remark[i] = None;
        self.keep[i] = KEEP_ALL;
        self.class[i] = class;
    }
}

/// The 5-tuple of an IP frame's key.
pub fn tuple_of(k: &FlowKey) -> Option<Tuple> {
    let family = match k.l3 {
        L3::V4 => Family::V4,
        L3::V6 => Family::V6,
        L3::Other => return None,
    };
    Some(Tuple {
        family,
        src: k.src_ip,
        dst: k.dst_ip,
        proto: k.proto,
        sport: k.src_port,
        dport: k.dst_port,
    })
}

/// The packet that opened the session a reply `t` belongs to, as the
/// rules saw it: addresses and ports swapped, and for ICMP the echo reply
/// turned back into its request (type 0 -> 8, ICMPv6 129 -> 128; ICMP's
/// "ports" are type and code, which a reply does not mirror).
fn original_of_reply(t: &Tuple) -> Tuple {
    let (sport, dport) = match (t.proto, t.sport) {
        (acl::rule::ICMP, 0) => (8, t.dport),
        (acl::rule::ICMPV6, 129) => (128, t.dport),
        (acl::rule::ICMP | acl::rule::ICMPV6, _) => (t.sport, t.dport),
        _ => (t.dport, t.sport),
    };
    Tuple {
        src: t.dst,
        dst: t.src,
        sport,
        dport,
        ..*t
    }
}

impl Security {
    /// The stage for `ports` (indexed by port id), sharing `sessions` with
    /// the snapshots before and after; `generation` numbers the ruleset.
    pub fn new(
        mut ports: Vec<PortPolicy>,
        class_meters: Vec<Arc<SharedMeter>>,
        sessions: Arc<SessionTable>,
        generation: u32,
    ) -> Security {
        // Sized by the ports given (per-port tables grow with the ports
        // that exist, not with MAX_PORTS; `port` answers beyond).
        while ports.last().is_some_and(PortPolicy::is_empty) {
            ports.pop();
        }
        let active = ports.iter().any(|p| !p.is_empty());
        let any_ingress = ports.iter().any(|p| p.ingress.is_some());
        let grouped = ports.iter().any(PortPolicy::grouped);
        let metered = !class_meters.is_empty()
            || ports
                .iter()
                .any(|p| p.ingress_meter.is_some() || p.egress_meter.is_some());
        Security {
            ports,
            class_meters,
            sessions,
            generation,
            active,
            metered,
            grouped,
            any_ingress,
        }
    }

    /// A stage that passes everything.
    pub fn none(sessions: Arc<SessionTable>) -> Security {
        Security::new(Vec::new(), Vec::new(), sessions, 0)
    }

    /// What port `p` has attached (nothing, for a port beyond the
    /// table: a tunnel port, or one with nothing attached at the top of the
    /// id space).
    #[inline]
    pub fn port(&self, p: PortId) -> &PortPolicy {
        static NOTHING: PortPolicy = PortPolicy {
            ingress: None,
            egress: None,
            ingress_meter: None,
            egress_meter: None,
        };
        self.ports.get(p.index()).unwrap_or(&NOTHING)
    }

    /// The session table.
    pub fn sessions(&self) -> &Arc<SessionTable> {
        &self.sessions
    }

    /// Whether any port has a group or meter (else the stage is skipped).
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Whether any port has a security group (the flow cache is worth
    /// its probe only then).
    #[inline]
    pub fn has_groups(&self) -> bool {
        self.grouped
    }

    /// Whether any meter exists (else [`Security::meter`] is skipped).
    #[inline]
    pub fn is_metered(&self) -> bool {
        self.metered
    }

    /// Whether the groups judge (and sessions track) a frame from the
    /// port whose policy is `inp` (looked up once per burst) to `out`
    /// (None: flooded): when either port has a group, in either
    /// direction. A port with only an ingress group so gets the replies
    /// to what it sends (its own frames open sessions), as a cloud
    /// security group does; a flooded frame meets its copies' ingress
    /// groups.
    #[inline]
    fn judges(&self, inp: &PortPolicy, out: Option<PortId>) -> bool {
        inp.grouped()
            || match out {
                Some(q) => self.port(q).grouped(),
                None => self.any_ingress,
            }
    }

    /// Whether `src`'s egress and `dst`'s ingress groups allow `t`; the
    /// verdict that decided (for its QoS class) and the port whose group
    /// denied.
    fn rules(&self, src: Option<PortId>, dst: Option<PortId>, t: &Tuple) -> Result<u16, PortId> {
        let mut class = 0;
        for (p, ingress) in [(src, false), (dst, true)] {
            let Some(p) = p else { continue };
            let pp = &self.port(p);
            let g = if ingress { &pp.ingress } else { &pp.egress };
            if let Some(g) = g {
                let v = g.judge(t);
                if v.action == AclAction::Deny {
                    return Err(p);
                }
                class = class.max(rule_class(g, &v));
            }
        }
        Ok(class)
    }

    /// Judges a burst received on `in_port` in bridge `zone` by the
    /// groups and sessions: turns the actions of denied frames into drops
    /// (counted in `counters`, indexed by port) and fills `scratch`.
    /// [`Security::meter`] then colors what is left.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn judge<F: Frame>(
        &self,
        in_port: PortId,
        zone: u16,
        frames: &[F],
        actions: &mut [Action],
        scratch: &mut Scratch,
        now: u32,
        counters: &[PortCounters],
    ) {
        let n = frames.len();
        if !self.active {
            return;
        }
        let inp = &self.port(in_port);
        let drop = |actions: &mut [Action], i: usize, why: DropReason, port: PortId| {
            actions[i] = Action::Drop(why);
            counters[port.index()].drop(why, frames[i].wire_packets());
        };
        // 1. Parse what a group will judge; sessions first.
        let mut miss = [0u8; MAX_BURST];
        let mut misses = 0;
        for i in 0..n {
            scratch.remark[i] = None;
            scratch.keep[i] = KEEP_ALL;
            scratch.first_fragment[i] = None;
            scratch.tuples[i] = None;
            scratch.class[i] = 0;
            scratch.via[i] = Via::Uncached;
            let out = match actions[i] {
                Action::Output(q) => Some(q),
                Action::Flood => None,
                // The router's answers (see `Action::Reply`).
                Action::Drop(_) | Action::Reply => continue,
            };
            if !self.judges(inp, out) {
                scratch.via[i] = Via::Plain;
                continue;
            }
            let key = match FlowKey::parse(frames[i].data()) {
                Ok(k) => k,
                Err(_) => {
                    drop(actions, i, DropReason::Malformed, in_port);
                    continue;
                }
            };
            let Some(t) = tuple_of(&key) else { continue };
            if let Some(id) = key.fragment {
                let f = fragment_tuple(&t, id);
                if key.later_fragment {
                    // No ports to judge: it follows its first fragment.
                    if self.sessions.lookup(&f, zone | FRAGMENT_ZONE, now) == Found::Miss {
                        drop(actions, i, DropReason::FragmentUnknown, in_port);
                    }
                    continue;
                }
                scratch.first_fragment[i] = Some(f);
            }
            scratch.tuples[i] = Some((t, key.tcp_flags));
            self.sessions.prefetch(&t, zone);
        }
        // The session lookups, once their lines are on their way.
        for (i, a) in actions[..n].iter().enumerate() {
            let Some((t, flags)) = scratch.tuples[i] else {
                continue;
            };
            let out = match *a {
                Action::Output(q) => Some(q),
                _ => None,
            };
            match self.sessions.lookup(&t, zone, now) {
                Found::Hit {
                    orig,
                    generation,
                    mut class,
                    slot,
                } => {
                    if generation != self.generation {
                        // Judge again in the direction that opened it.
                        let verdict = if orig {
                            self.rules(Some(in_port), out, &t)
                        } else {
                            self.rules(out, Some(in_port), &original_of_reply(&t))
                        };
                        match verdict {
                            Ok(c) => {
                                self.sessions.readmit(slot, self.generation, c);
                                class = c;
                            }
                            Err(_) => {
                                self.sessions.remove(slot);
                                miss[misses] = i as u8;
                                misses += 1;
                                continue;
                            }
                        }
                    }
                    self.sessions.update(slot, t.proto, orig, flags, now);
                    scratch.class[i] = class;
                    if scratch.first_fragment[i].is_none() {
                        scratch.via[i] = Via::Session { r: slot, orig };
                    }
                }
                Found::Miss => {
                    miss[misses] = i as u8;
                    misses += 1;
                }
            }
        }
        // 2. The ingress port's egress group over all misses at once.
        let mut verdicts = [Verdict {
            action: AclAction::Allow,
            rule: None,
        }; MAX_BURST];
        if let (Some(g), true) = (&inp.egress, misses > 0) {
            let mut tuples = [Tuple {
                family: Family::V4,
                src: 0,
                dst: 0,
                proto: 0,
                sport: 0,
                dport: 0,
            }; MAX_BURST];
            for (k, &i) in miss[..misses].iter().enumerate() {
                tuples[k] = scratch.tuples[usize::from(i)].expect("parsed").0;
            }
            g.judge_burst(&tuples[..misses], &mut verdicts[..misses]);
        }
        // 3. Output ports' ingress groups, then sessions for what passed.
        for (k, &i) in miss[..misses].iter().enumerate() {
            let i = usize::from(i);
            let (t, flags) = scratch.tuples[i].expect("parsed");
            let deny_reason = if t.proto == IPPROTO_TCP && flags & 0x02 == 0 {
                DropReason::NoSession
            } else {
                DropReason::AclDeny
            };
            let mut class = 0;
            if let Some(g) = &inp.egress {
                if verdicts[k].action == AclAction::Deny {
                    drop(actions, i, deny_reason, in_port);
                    continue;
                }
                class = rule_class(g, &verdicts[k]);
            }
            if let Action::Output(q) = actions[i] {
                if let Some(g) = &self.port(q).ingress {
                    let v = g.judge(&t);
                    if v.action == AclAction::Deny {
                        drop(actions, i, deny_reason, q);
                        continue;
                    }
                    class = class.max(rule_class(g, &v));
                }
            }
            // A flooded frame's session opens when a copy is admitted.
            let opened = matches!(actions[i], Action::Output(_)).then(|| {
                self.sessions
                    .open(&t, zone, in_port.0, flags, self.generation, class, now)
            });
            match opened {
                Some(Open::Full) => {
                    drop(actions, i, DropReason::SessionFull, in_port);
                    continue;
                }
                Some(Open::Quota) => {
                    drop(actions, i, DropReason::SessionQuota, in_port);
                    continue;
                }
                _ => {}
            }
            scratch.class[i] = class;
        }
        // 4. First fragments that pass let their later fragments through.
        for (f, a) in scratch.first_fragment[..n].iter().zip(&actions[..n]) {
            if let (Some(f), Action::Output(_)) = (f, a) {
                self.sessions.open(
                    f,
                    zone | FRAGMENT_ZONE,
                    in_port.0,
                    0,
                    self.generation,
                    0,
                    now,
                );
            }
        }
    }

    /// Colors the frames of a burst received on `in_port` that are still
    /// going somewhere, by the meters they meet (see the module doc):
    /// red frames become drops, yellow ones may get a remark in
    /// `scratch`, a superframe may be cut.
    pub(crate) fn meter<F: Frame>(
        &self,
        in_port: PortId,
        frames: &[F],
        actions: &mut [Action],
        scratch: &mut Scratch,
        now_ns: u64,
        counters: &[PortCounters],
    ) {
        let n = frames.len();
        let mut sizes = [WireLen::default(); MAX_BURST];
        let mut verdicts = [Policed::default(); MAX_BURST];
        let mut idx = [0u8; MAX_BURST];
        // Runs one meter over the live frames selected by `pick`.
        let mut run = |m: &SharedMeter,
                       actions: &mut [Action],
                       scratch: &mut Scratch,
                       charge: PortId,
                       pick: &dyn Fn(usize, &Action) -> bool| {
            let mut k = 0;
            for i in 0..n {
                if !matches!(actions[i], Action::Drop(_)) && pick(i, &actions[i]) {
                    sizes[k] = wire_len(&frames[i], scratch.keep[i]);
                    idx[k] = i as u8;
                    k += 1;
                }
            }
            if k == 0 {
                return;
            }
            m.police_burst(now_ns, &sizes[..k], &mut verdicts[..k]);
            for j in 0..k {
                let i = usize::from(idx[j]);
                let (v, segs) = (verdicts[j], sizes[j].packets);
                if let Some(d) = v.remark {
                    scratch.remark[i] = Some(d);
                }
                if v.kept < segs {
                    // A superframe's cut segments count as dropped packets.
                    counters[charge.index()]
                        .drop(DropReason::PolicerDrop, u64::from(segs - v.kept));
                    if v.kept == 0 {
                        actions[i] = Action::Drop(DropReason::PolicerDrop);
                    } else {
                        scratch.keep[i] = v.kept;
                    }
                }
            }
        };
        // Only the meters the burst's frames meet: its output ports'
        // ingress meters and its QoS classes, each once.
        let (mut outs, mut n_outs) = ([PortId(0); MAX_BURST], 0);
        let (mut classes, mut n_classes) = ([0u16; MAX_BURST], 0);
        for (a, &c) in actions[..n].iter().zip(&scratch.class[..n]) {
            if let Action::Output(q) = *a {
                if self.port(q).ingress_meter.is_some() && !outs[..n_outs].contains(&q) {
                    outs[n_outs] = q;
                    n_outs += 1;
                }
            }
            if c != 0 && !classes[..n_classes].contains(&c) {
                classes[n_classes] = c;
                n_classes += 1;
            }
        }
        if let Some(m) = &self.port(in_port).egress_meter {
            run(m, actions, scratch, in_port, &|_, _| true);
        }
        for &q in &outs[..n_outs] {
            let m = self.port(q).ingress_meter.as_ref().expect("metered");
            run(m, actions, scratch, q, &|_, a| *a == Action::Output(q));
        }
        for &class in &classes[..n_classes] {
            let m = &self.class_meters[usize::from(class) - 1];
            let of = scratch.class;
            run(m, actions, scratch, in_port, &|i, _| of[i] == class);
        }
    }

    /// Whether the copy of flooded frame `i` (`packets` on a wire) from
    /// `in_port` may go to port `q`: `q`'s ingress group judges it
    /// (opening its session, charged to `in_port`, when allowed). Counts a
    /// denial on `q`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn admit_flood_copy(
        &self,
        in_port: PortId,
        q: PortId,
        i: usize,
        packets: u64,
        zone: u16,
        scratch: &Scratch,
        now: u32,
        counters: &[PortCounters],
    ) -> bool {
        let Some(g) = &self.port(q).ingress else {
            return true;
        };
        let Some((t, flags)) = scratch.tuples[i] else {
            return true; // not IP
        };
        if matches!(self.sessions.lookup(&t, zone, now), Found::Hit { .. }) {
            return true;
        }
        let v = g.judge(&t);
        if v.action == AclAction::Deny {
            counters[q.index()].drop(DropReason::AclDeny, packets);
            return false;
        }
        // A copy passes even when the table has no room for its session
        // (the reply is judged by the rules then), as floods are rare.
        self.sessions.open(
            &t,
            zone,
            in_port.0,
            flags,
            self.generation,
            rule_class(g, &v),
            now,
        );
        true
    }
}

/// What `f`, or its first `keep` segments, costs on the wire.
fn wire_len<F: Frame>(f: &F, keep: u32) -> WireLen {
    let len = f.data().len();
    let off = f.offload();
    match off.gso {
        Some(g) => {
            let packets = off.segments(len).min(keep);
            let seg_bytes = u32::from(g.hdr_len) + u32::from(g.size);
            let bytes = if packets < off.segments(len) {
                packets * seg_bytes
            } else {
                off.wire_bytes(len) as u32
            };
            WireLen {
                bytes,
                packets,
                seg_bytes,
            }
        }
        None => WireLen::frame(len as u32),
    }
}

fn rule_class(g: &Group, v: &Verdict) -> u16 {
    v.rule.map_or(0, |r| g.rule_class[r as usize])
}

/// Writes `dscp` into an IPv4 or IPv6 frame's header in place (IPv4 header
/// checksum updated incrementally, RFC 1624). False if the frame is not IP.
pub fn set_dscp(frame: &mut [u8], dscp: u8) -> bool {
    let Ok(k) = FlowKey::parse_l2(frame) else {
        return false;
    };
    let at = usize::from(k.l3_offset);
    match k.ethertype {
        crate::flow::ETH_P_IPV4 if frame.len() >= at + 20 => {
            let old = u16::from_be_bytes([frame[at], frame[at + 1]]);
            frame[at + 1] = (dscp << 2) | (frame[at + 1] & 0x03);
            let new = u16::from_be_bytes([frame[at], frame[at + 1]]);
            let hc = u16::from_be_bytes([frame[at + 10], frame[at + 11]]);
            frame[at + 10..at + 12]
                .copy_from_slice(&crate::checksum::replace16(hc, old, new).to_be_bytes());
            true
        }
        crate::flow::ETH_P_IPV6 if frame.len() >= at + 40 => {
            // Traffic class: low nibble of byte 0, high nibble of byte 1.
            let tc = (dscp << 2) | ((frame[at] & 0x0f) << 4 | frame[at + 1] >> 4) & 0x03;
            frame[at] = (frame[at] & 0xf0) | (tc >> 4);
            frame[at + 1] = (frame[at + 1] & 0x0f) | (tc << 4);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{compiled, Superframe};
    use acl::policer::{ColorAction, MeterConf, Policy, Unit};
    use acl::session::Timeouts;
    use acl::{Proto, Rule};
    use etherparse::PacketBuilder;

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];

    impl Security {
        /// Both passes, as the pipeline runs them.
        #[allow(clippy::too_many_arguments)]
        fn filter<F: Frame>(
            &self,
            in_port: PortId,
            zone: u16,
            frames: &[F],
            actions: &mut [Action],
            scratch: &mut Scratch,
            now: u32,
            now_ns: u64,
            counters: &[PortCounters],
        ) {
            self.judge(in_port, zone, frames, actions, scratch, now, counters);
            self.meter(in_port, frames, actions, scratch, now_ns, counters);
        }
    }

    fn tcp(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, syn: bool, ack: bool) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, 1, 1000);
        if syn {
            b = b.syn();
        }
        if ack {
            b = b.ack(1);
        }
        let mut v = Vec::new();
        b.write(&mut v, &[]).unwrap();
        v
    }

    fn udp(src: [u8; 4], dst: [u8; 4], len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .udp(1, 2)
            .write(&mut v, &vec![0; len - 42])
            .unwrap();
        v
    }

    struct Rig {
        sec: Security,
        counters: Vec<PortCounters>,
        scratch: Scratch,
    }

    impl Rig {
        fn new(ports: Vec<PortPolicy>) -> Rig {
            let sessions = Arc::new(SessionTable::new(1024, Timeouts::default()));
            Rig {
                sec: Security::new(ports, Vec::new(), sessions, 1),
                counters: (0..4).map(|_| PortCounters::default()).collect(),
                scratch: Scratch::default(),
            }
        }

        /// One frame from `from` to `to`: its action after the stage.
        fn send<F: Frame>(&mut self, from: u16, to: u16, frame: F, now_ns: u64) -> Action {
            let mut actions = [Action::Output(PortId(to))];
            self.sec.filter(
                PortId(from),
                0,
                &[frame],
                &mut actions,
                &mut self.scratch,
                0,
                now_ns,
                &self.counters,
            );
            actions[0]
        }

        fn drops(&self, port: usize, why: DropReason) -> u64 {
            self.counters[port].drops[why as usize].get()
        }
    }

    #[test]
    fn egress_only_rules_are_stateful() {
        // Port 0 may open TCP to port 80 only; nothing may come in.
        let mut http = Rule::any("http", 10, AclAction::Allow);
        http.proto = Proto::Tcp;
        http.dst_ports = acl::PortRange::one(80);
        let p0 = PortPolicy {
            egress: Some(compiled("out", vec![http])),
            ingress: Some(compiled("in", vec![])),
            ..PortPolicy::default()
        };
        let mut r = Rig::new(vec![p0]);
        let out = Action::Output(PortId(1));
        let back = Action::Output(PortId(0));
        // Outbound connection: SYN passes, the SYN-ACK comes back.
        assert_eq!(r.send(0, 1, tcp(A, B, 40000, 80, true, false), 0), out);
        assert_eq!(r.send(1, 0, tcp(B, A, 80, 40000, true, true), 0), back);
        assert_eq!(r.send(0, 1, tcp(A, B, 40000, 80, false, true), 0), out);
        // Other outbound traffic is denied by the egress group.
        assert_eq!(
            r.send(0, 1, udp(A, B, 60), 0),
            Action::Drop(DropReason::AclDeny)
        );
        assert_eq!(r.drops(0, DropReason::AclDeny), 1);
        // A new inbound connection is refused by port 0's ingress group
        // and counted on port 0; a stray ACK counts as no_session.
        assert_eq!(
            r.send(1, 0, tcp(B, A, 5555, 22, true, false), 0),
            Action::Drop(DropReason::AclDeny)
        );
        assert_eq!(
            r.send(1, 0, tcp(B, A, 5555, 23, false, true), 0),
            Action::Drop(DropReason::NoSession)
        );
        assert_eq!(r.drops(0, DropReason::AclDeny), 2);
        assert_eq!(r.drops(0, DropReason::NoSession), 1);
        // ARP is not judged.
        let mut arp = tcp(A, B, 1, 2, false, false);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(r.send(1, 0, arp, 0), back);
    }

    #[test]
    fn later_fragments_follow_their_first_fragment() {
        // Port 0 may send UDP to port 53 only.
        let mut dns = Rule::any("dns", 1, AclAction::Allow);
        dns.proto = Proto::Udp;
        dns.dst_ports = acl::PortRange::one(53);
        let mut r = Rig::new(vec![PortPolicy {
            egress: Some(compiled("dns-only", vec![dns])),
            ..PortPolicy::default()
        }]);
        let frag = |dport: u16, id: u16, offset8: u16, more: bool| {
            let mut f = Vec::new();
            PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4(A, B, 64)
                .udp(4000, dport)
                .write(&mut f, &[0; 64])
                .unwrap();
            f[18..20].copy_from_slice(&id.to_be_bytes());
            let flags = u16::from(more) << 13 | offset8;
            f[20..22].copy_from_slice(&flags.to_be_bytes());
            f
        };
        let out = Action::Output(PortId(1));
        assert_eq!(r.send(0, 1, frag(53, 7, 0, true), 0), out);
        // The rest of datagram 7 passes, though it has no port 53 to show.
        assert_eq!(r.send(0, 1, frag(53, 7, 9, true), 0), out);
        assert_eq!(r.send(0, 1, frag(53, 7, 18, false), 0), out);
        // A datagram whose first fragment was denied, or never seen.
        assert_eq!(
            r.send(0, 1, frag(80, 8, 0, true), 0),
            Action::Drop(DropReason::AclDeny)
        );
        let unknown = Action::Drop(DropReason::FragmentUnknown);
        assert_eq!(r.send(0, 1, frag(80, 8, 9, false), 0), unknown);
        assert_eq!(r.send(0, 1, frag(53, 9, 9, false), 0), unknown);
        assert_eq!(r.drops(0, DropReason::FragmentUnknown), 2);
    }

    #[test]
    fn a_new_ruleset_ends_sessions_it_denies() {
        let allow_all = || compiled("all", vec![Rule::any("all", 1, AclAction::Allow)]);
        let sessions = Arc::new(SessionTable::new(1024, Timeouts::default()));
        let counters: Vec<PortCounters> = (0..2).map(|_| PortCounters::default()).collect();
        let mut scratch = Scratch::default();
        let mut send = |sec: &Security, frame: Vec<u8>| {
            let mut a = [Action::Output(PortId(1))];
            sec.filter(
                PortId(0),
                0,
                &[frame],
                &mut a,
                &mut scratch,
                0,
                0,
                &counters,
            );
            a[0]
        };
        let p = |g: Arc<Group>| PortPolicy {
            egress: Some(g),
            ..PortPolicy::default()
        };
        let v1 = Security::new(vec![p(allow_all())], Vec::new(), sessions.clone(), 1);
        assert_eq!(send(&v1, udp(A, B, 60)), Action::Output(PortId(1)));
        // Generation 2 denies everything: the live session ends too.
        let v2 = Security::new(
            vec![p(compiled("none", vec![]))],
            Vec::new(),
            sessions.clone(),
            2,
        );
        assert_eq!(send(&v2, udp(A, B, 60)), Action::Drop(DropReason::AclDeny));
        // Generation 3 allows again; a fresh session opens.
        let v3 = Security::new(vec![p(allow_all())], Vec::new(), sessions, 3);
        assert_eq!(send(&v3, udp(A, B, 60)), Action::Output(PortId(1)));
    }

    #[test]
    fn an_echo_reply_first_after_a_reload_keeps_its_session() {
        // web accepts echo requests only; the client accepts nothing new.
        let mut ping = Rule::any("ping", 1, AclAction::Allow);
        ping.proto = Proto::Icmp;
        ping.icmp_type = Some(8);
        let ports = || {
            vec![
                PortPolicy {
                    ingress: Some(compiled("client-in", vec![])),
                    ..PortPolicy::default()
                },
                PortPolicy {
                    ingress: Some(compiled("web", vec![ping.clone()])),
                    ..PortPolicy::default()
                },
            ]
        };
        let icmp = |src: [u8; 4], dst: [u8; 4], ty: u8| {
            let mut v = Vec::new();
            let b =
                PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src, dst, 64);
            let b = if ty == 8 {
                b.icmpv4_echo_request(1, 1)
            } else {
                b.icmpv4_echo_reply(1, 1)
            };
            b.write(&mut v, &[0; 8]).unwrap();
            v
        };
        let sessions = Arc::new(SessionTable::new(1024, Timeouts::default()));
        let counters: Vec<PortCounters> = (0..2).map(|_| PortCounters::default()).collect();
        let mut scratch = Scratch::default();
        let mut send = |sec: &Security, from: u16, to: u16, frame: Vec<u8>| {
            let mut a = [Action::Output(PortId(to))];
            sec.filter(
                PortId(from),
                0,
                &[frame],
                &mut a,
                &mut scratch,
                0,
                0,
                &counters,
            );
            a[0]
        };
        let v1 = Security::new(ports(), Vec::new(), sessions.clone(), 1);
        assert_eq!(send(&v1, 0, 1, icmp(A, B, 8)), Action::Output(PortId(1)));
        // The ruleset is replaced between the request and its reply.
        let v2 = Security::new(ports(), Vec::new(), sessions, 2);
        assert_eq!(send(&v2, 1, 0, icmp(B, A, 0)), Action::Output(PortId(0)));
    }

    #[test]
    fn meters_drop_and_remark_by_color() {
        // 8000 bit/s committed, 100-byte burst: one 100-byte frame is
        // green, the next yellow (remarked to DSCP 10), then red.
        let policy = Policy {
            meter: MeterConf::TrTcm {
                cir: 8000,
                cbs: 800,
                pir: 16000,
                pbs: 1600,
            },
            unit: Unit::Bits,
            actions: [
                ColorAction::Pass,
                ColorAction::Remark(10),
                ColorAction::Drop,
            ],
        };
        let p0 = PortPolicy {
            egress_meter: Some(Arc::new(SharedMeter::new(policy, 0))),
            ..PortPolicy::default()
        };
        let mut r = Rig::new(vec![p0]);
        let out = Action::Output(PortId(1));
        assert_eq!(r.send(0, 1, udp(A, B, 100), 0), out);
        assert_eq!(r.scratch.remark[0], None);
        assert_eq!(r.send(0, 1, udp(A, B, 100), 0), out);
        assert_eq!(r.scratch.remark[0], Some(10));
        assert_eq!(
            r.send(0, 1, udp(A, B, 100), 0),
            Action::Drop(DropReason::PolicerDrop)
        );
        assert_eq!(r.drops(0, DropReason::PolicerDrop), 1);
        // 0.1 s later: 800 more committed bits, 1600 peak: green again.
        assert_eq!(r.send(0, 1, udp(A, B, 100), 100_000_000), out);
        assert_eq!(r.scratch.remark[0], None);
    }

    #[test]
    fn set_dscp_keeps_the_ipv4_checksum_valid() {
        let mut f = udp(A, B, 60);
        assert!(set_dscp(&mut f, 46));
        let p = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            panic!()
        };
        let h = ip.header().to_header();
        assert_eq!(h.dscp.value(), 46);
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let mut v6 = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv6([1; 16], [2; 16], 64)
            .udp(1, 2)
            .write(&mut v6, &[0; 8])
            .unwrap();
        assert!(set_dscp(&mut v6, 46));
        let p = etherparse::SlicedPacket::from_ethernet(&v6).unwrap();
        let Some(etherparse::NetSlice::Ipv6(ip)) = p.net else {
            panic!()
        };
        assert_eq!(ip.header().traffic_class() >> 2, 46);
        let mut arp = udp(A, B, 60);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!set_dscp(&mut arp, 46));
    }

    /// A TCP superframe of `segs` 1000-byte segments from A:40000 to B:80.
    fn superframe(segs: usize) -> Superframe {
        crate::test_support::superframe(A, B, segs, 1000)
    }

    #[test]
    fn superframes_are_denied_and_policed_as_their_segments() {
        // Denied: the drop counts the 10 segments it carried.
        let p0 = PortPolicy {
            egress: Some(compiled("none", vec![])),
            ..PortPolicy::default()
        };
        let mut r = Rig::new(vec![p0]);
        // (A mid-stream segment of no session: no_session.)
        assert_eq!(
            r.send(0, 1, superframe(10), 0),
            Action::Drop(DropReason::NoSession)
        );
        assert_eq!(r.drops(0, DropReason::NoSession), 10);

        // A policer whose burst holds 4 of its 1054-byte segments lets
        // those through and cuts the other 6, counted as drops.
        let policy = Policy {
            meter: MeterConf::SrTcm {
                cir: 8000,
                cbs: 4 * 1054 * 8,
                ebs: 0,
            },
            unit: Unit::Bits,
            actions: [ColorAction::Pass, ColorAction::Drop, ColorAction::Drop],
        };
        let p0 = PortPolicy {
            egress_meter: Some(Arc::new(SharedMeter::new(policy, 0))),
            ..PortPolicy::default()
        };
        let mut r = Rig::new(vec![p0]);
        assert_eq!(r.send(0, 1, superframe(10), 0), Action::Output(PortId(1)));
        assert_eq!(r.scratch.keep[0], 4);
        assert_eq!(r.drops(0, DropReason::PolicerDrop), 6);
        // The next one finds the bucket empty: dropped whole, 10 counted.
        let actions = [r.send(0, 1, superframe(10), 0)];
        assert_eq!(actions[0], Action::Drop(DropReason::PolicerDrop));
        assert_eq!(r.drops(0, DropReason::PolicerDrop), 16);
    }
}
