//! The security stage for one frame, told rather than done (what
//! `vswitchctl trace` shows): the same lookups as [`Security::judge`],
//! [`Security::admit_flood_copy`] and [`Security::meter`], in the same
//! order, read-only: no session is opened, updated or ended, no rule's
//! hit counter moves, no meter's tokens are taken.

use std::sync::Arc;

use acl::policer::{Color, Policed};
use acl::session::Found;
use acl::{Action as AclAction, Tuple, Verdict};

use super::{
    fragment_tuple, original_of_reply, rule_class, tuple_of, wire_len, Group, Security,
    FRAGMENT_ZONE, KEEP_ALL,
};
use crate::flow::{FlowKey, IPPROTO_TCP};
use crate::stats::DropReason;
use crate::switch::{Action, Frame};
use crate::types::PortId;

/// How the groups met a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    /// No group on either side: not judged.
    NoGroup,
    /// Not IP (ARP, LLDP...): groups let it through, as cloud security
    /// groups let ARP through.
    NotIp,
    /// IP that does not parse: dropped.
    Malformed,
    /// A later fragment: it follows its first fragment (`known`: that
    /// one passed, else it is dropped).
    LaterFragment {
        /// Whether its first fragment's entry exists.
        known: bool,
    },
    /// A live session of the current ruleset: passes without rules.
    Session {
        /// From the session's originator.
        orig: bool,
    },
    /// A session admitted under an older ruleset, judged again in the
    /// direction that opened it (`kept`: the rules still allow it; else
    /// it ends and the frame is judged as a new one).
    Rejudged {
        /// Whether the session goes on.
        kept: bool,
    },
    /// No live session: judged by the rules.
    Rules,
}

/// The rule (or default) of one group that decided a frame.
#[derive(Clone)]
pub struct RuleHit {
    /// The port the group is attached to.
    pub port: PortId,
    /// Its ingress group (else its egress group).
    pub ingress: bool,
    /// The group.
    pub group: Arc<Group>,
    /// The classifier's verdict: the rule's index in the group's
    /// definition (None: the group's default) and its action.
    pub verdict: Verdict,
}

impl RuleHit {
    /// Whether the rule allows.
    pub fn allows(&self) -> bool {
        self.verdict.action == AclAction::Allow
    }
}

/// What the groups decide for a frame that goes to one port (or is
/// flooded: then the ingress groups judge each copy, see
/// [`Security::explain_copy`]).
#[derive(Clone)]
pub struct Judgement {
    /// How the groups met it.
    pub judged: Judged,
    /// The egress group of the ingress port, if it judged.
    pub egress: Option<RuleHit>,
    /// The ingress group of the output port, if it judged.
    pub ingress: Option<RuleHit>,
    /// Dropped (and the port it is counted on), else passed.
    pub verdict: Result<(), (DropReason, PortId)>,
    /// It would open a session (counted against the ingress port's
    /// quota).
    pub opens: bool,
    /// Its QoS class (0: none): the session's or the rules'.
    pub class: u16,
}

/// One meter a frame meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterOf {
    /// The egress QoS policy of the port it came in by.
    Egress(PortId),
    /// The ingress QoS policy of the port it goes to.
    Ingress(PortId),
    /// The QoS class of the rule that admitted it.
    Class(u16),
}

/// What a meter would do with a frame now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterPeek {
    /// Which meter.
    pub of: MeterOf,
    /// The color of the frame (its first segment).
    pub color: Color,
    /// What policing it would decide.
    pub policed: Policed,
}

impl Security {
    /// What [`Security::judge`] would decide for frame `f` received on
    /// `in_port` in session zone `zone`, which the bridge (and router)
    /// sends as `action`, at second `now`. None for a frame the stage
    /// does not judge (dropped already, or a router's answer).
    pub fn explain<F: Frame>(
        &self,
        in_port: PortId,
        zone: u16,
        f: &F,
        action: Action,
        now: u32,
    ) -> Option<Judgement> {
        let out = match action {
            Action::Output(q) => Some(q),
            Action::Flood => None,
            Action::Drop(_) | Action::Reply => return None,
        };
        let mut j = Judgement {
            judged: Judged::NoGroup,
            egress: None,
            ingress: None,
            verdict: Ok(()),
            opens: false,
            class: 0,
        };
        if !self.active {
            return Some(j);
        }
        if !self.judges(self.port(in_port), out) {
            return Some(j);
        }
        let key = match FlowKey::parse(f.data()) {
            Ok(k) => k,
            Err(_) => {
                j.judged = Judged::Malformed;
                j.verdict = Err((DropReason::Malformed, in_port));
                return Some(j);
            }
        };
        let Some(t) = tuple_of(&key) else {
            j.judged = Judged::NotIp;
            return Some(j);
        };
        if let (Some(id), true) = (key.fragment, key.later_fragment) {
            let known = self
                .sessions
                .lookup(&fragment_tuple(&t, id), zone | FRAGMENT_ZONE, now)
                != Found::Miss;
            j.judged = Judged::LaterFragment { known };
            if !known {
                j.verdict = Err((DropReason::FragmentUnknown, in_port));
            }
            return Some(j);
        }
        if let Found::Hit {
            orig,
            generation,
            class,
            ..
        } = self.sessions.lookup(&t, zone, now)
        {
            if generation == self.generation {
                j.judged = Judged::Session { orig };
                j.class = class;
                return Some(j);
            }
            let (src, dst, t) = if orig {
                (Some(in_port), out, t)
            } else {
                (out, Some(in_port), original_of_reply(&t))
            };
            let (egress, ingress) = (self.hit(src, false, &t), self.hit(dst, true, &t));
            let kept = [&egress, &ingress]
                .iter()
                .all(|h| h.as_ref().is_none_or(RuleHit::allows));
            j.judged = Judged::Rejudged { kept };
            if kept {
                j.class = [&egress, &ingress]
                    .into_iter()
                    .flatten()
                    .map(class_of)
                    .max()
                    .unwrap_or(0);
                (j.egress, j.ingress) = (egress, ingress);
                return Some(j);
            }
        } else {
            j.judged = Judged::Rules;
        }
        // A miss (or a session the new rules end): the rules judge.
        let deny = if t.proto == IPPROTO_TCP && key.tcp_flags & 0x02 == 0 {
            DropReason::NoSession
        } else {
            DropReason::AclDeny
        };
        j.egress = self.hit(Some(in_port), false, &t);
        if j.egress.as_ref().is_some_and(|h| !h.allows()) {
            j.verdict = Err((deny, in_port));
            return Some(j);
        }
        j.ingress = self.hit(out, true, &t);
        if let (Some(h), Some(q)) = (&j.ingress, out) {
            if !h.allows() {
                j.verdict = Err((deny, q));
                return Some(j);
            }
        }
        j.class = [&j.egress, &j.ingress]
            .into_iter()
            .flatten()
            .map(class_of)
            .max()
            .unwrap_or(0);
        // A flooded frame's session opens when a copy is admitted.
        j.opens = out.is_some();
        Some(j)
    }

    /// What [`Security::admit_flood_copy`] would decide for the copy of
    /// flooded frame `f` (from `in_port`, in `zone`) that goes to `q`:
    /// None if `q` has no ingress group or the frame is not IP or has a
    /// live session (it passes), else the rule of `q`'s ingress group.
    pub fn explain_copy<F: Frame>(&self, q: PortId, zone: u16, f: &F, now: u32) -> Option<RuleHit> {
        self.port(q).ingress.as_ref()?;
        let t = tuple_of(&FlowKey::parse(f.data()).ok()?)?;
        if matches!(self.sessions.lookup(&t, zone, now), Found::Hit { .. }) {
            return None;
        }
        self.hit(Some(q), true, &t)
    }

    /// The meters frame `f` from `in_port` meets on its way to `action`
    /// with QoS class `class`, in the order [`Security::meter`] runs
    /// them, each with what it would decide at `now_ns` (without taking
    /// tokens).
    pub fn peek_meters<F: Frame>(
        &self,
        in_port: PortId,
        f: &F,
        action: Action,
        class: u16,
        now_ns: u64,
    ) -> impl Iterator<Item = MeterPeek> + '_ {
        if matches!(action, Action::Drop(_)) || !self.metered {
            return [None, None, None].into_iter().flatten();
        }
        let size = wire_len(f, KEEP_ALL);
        let peek = |of, m: &Option<Arc<acl::policer::SharedMeter>>| {
            m.as_ref().map(|m| {
                let (color, policed) = m.peek(now_ns, size);
                MeterPeek { of, color, policed }
            })
        };
        let egress = peek(MeterOf::Egress(in_port), &self.port(in_port).egress_meter);
        let ingress = match action {
            Action::Output(q) => peek(MeterOf::Ingress(q), &self.port(q).ingress_meter),
            _ => None,
        };
        let class = (class != 0)
            .then(|| {
                let m = self.class_meters.get(usize::from(class) - 1).cloned();
                peek(MeterOf::Class(class), &m)
            })
            .flatten();
        [egress, ingress, class].into_iter().flatten()
    }

    /// The verdict of port `p`'s ingress (else egress) group on `t`, if
    /// it has one; nothing counted.
    fn hit(&self, p: Option<PortId>, ingress: bool, t: &Tuple) -> Option<RuleHit> {
        let p = p?;
        let pp = self.port(p);
        let g = if ingress { &pp.ingress } else { &pp.egress };
        let g = g.as_ref()?;
        Some(RuleHit {
            port: p,
            ingress,
            verdict: g.classifier.classify(t),
            group: Arc::clone(g),
        })
    }
}

fn class_of(h: &RuleHit) -> u16 {
    rule_class(&h.group, &h.verdict)
}
