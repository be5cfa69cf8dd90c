//! A [`Trace`] in the operator's terms: one line per stage with port,
//! bridge, group and rule names (what vswitchctl prints), and the same
//! facts as fields for `--json` (the deciding rules, the outcome).

use std::net::{Ipv4Addr, Ipv6Addr};

use acl::policer::Color;
use serde_json::{json, Value};
use vswitch::security::{Judged, MeterOf, RuleHit};
use vswitch::trace::{Outcome, Routed};
use vswitch::{Edit, FlowKey, MacAddr, Pipeline, PortId, Trace, L3};

/// Names for what a trace holds by id.
pub struct Names<'a> {
    /// The snapshot the trace ran on (bridges, VPCs).
    pub pipeline: &'a Pipeline,
    /// A NIC's or a tunnel's name.
    pub port: &'a dyn Fn(PortId) -> String,
}

/// One stage's line.
fn stage(out: &mut Vec<Value>, name: &str, text: String) {
    out.push(json!({ "stage": name, "result": text }));
}

/// `t` as JSON: `stages` (name and line each), `rules` (every rule
/// consulted), `outcome`.
pub fn describe(t: &Trace, n: &Names) -> Value {
    let port = |p: PortId| (n.port)(p);
    let mut s = Vec::new();
    let d_src = t.key.as_ref().map(|k| k.src_mac);
    let d_dst = t.key.as_ref().map(|k| k.dst_mac);
    stage(
        &mut s,
        "frame",
        match (d_src, d_dst) {
            (Ok(a), Ok(b)) => format!("{} bytes on {}, {a} > {b}", t.len, port(t.in_port)),
            _ => format!("{} bytes on {}", t.len, port(t.in_port)),
        },
    );
    stage(&mut s, "parse", flow_text(&t.key));
    let Some(b) = t.bridge else {
        return finish(t, n, s, Vec::new());
    };
    let bridge = &n.pipeline.switch.bridges()[b.index()].conf.name;
    stage(&mut s, "bridge", bridge.clone());
    if let Some(a) = t.admitted {
        let text = match (a, t.guarded) {
            (Ok(()), true) => "passed (MAC and addresses are the port's)".into(),
            (Ok(()), false) => "off".into(),
            (Err(r), true) => format!("refused: {}", r.name()),
            (Err(r), false) => format!("refused: {} (header, VLAN tags or source MAC)", r.name()),
        };
        stage(&mut s, "port security", text);
    }
    if let (Some(a), Ok(k)) = (t.bridge_action, &t.key) {
        let learned = match t.src_learned_on {
            Some(p) if p == t.in_port => format!("source {} is learned on {}", k.src_mac, port(p)),
            Some(p) => format!(
                "source {} is learned on {}: moves to {}",
                k.src_mac,
                port(p),
                port(t.in_port)
            ),
            None => format!(
                "source {} is learned on {} (new)",
                k.src_mac,
                port(t.in_port)
            ),
        };
        stage(&mut s, "mac learning", learned);
        let dst = k.dst_mac;
        let text = match a {
            vswitch::Action::Output(p) => format!("{dst} is behind {}", port(p)),
            vswitch::Action::Flood if dst.is_group() => format!("{dst} is a group address: flood"),
            vswitch::Action::Flood => format!("{dst} is not learned: flood"),
            vswitch::Action::Drop(r) => format!("dropped: {}", r.name()),
            vswitch::Action::Reply => "answered".into(),
        };
        stage(&mut s, "mac lookup", text);
    }
    if let Some(r) = t.routed {
        let vpc = n.pipeline.router.vpc_of(b).map_or("?", |v| v.name.as_str());
        let text = match r {
            Routed::Out { port: p, edit } => format!(
                "VPC {vpc} routes it to {} ({})",
                port(p),
                match edit {
                    Edit::Route { dst, .. } | Edit::Route6 { dst, .. } =>
                        format!("destination MAC {dst}, TTL/hop limit - 1"),
                    _ => "rewritten".into(),
                }
            ),
            Routed::Answered(e) => format!("VPC {vpc} answers: {}", answer(e)),
            Routed::Dropped { reason, icmp_error } => format!(
                "VPC {vpc} cannot route it: {}{}",
                reason.name(),
                if icmp_error {
                    "; answered with an ICMP error (within the VPC's rate)"
                } else {
                    ""
                }
            ),
        };
        stage(&mut s, "router", text);
    }
    if let Some((p, ok)) = t.tunnel {
        let text = match ok {
            Ok(()) => format!("out of {}: fits the underlay MTU, next hop known", port(p)),
            Err(r) => format!("cannot leave by {}: {}", port(p), r.name()),
        };
        stage(&mut s, "tunnel", text);
    }
    let mut rules = Vec::new();
    if let Some(j) = &t.security {
        let text = match j.judged {
            Judged::NoGroup => "no group on either side".into(),
            Judged::NotIp => "not IP: security groups let it through".into(),
            Judged::Malformed => "IP headers do not parse: dropped (malformed)".into(),
            Judged::LaterFragment { known: true } => {
                "a later fragment of an admitted first fragment".into()
            }
            Judged::LaterFragment { known: false } => {
                "a later fragment whose first fragment was not admitted: dropped".into()
            }
            Judged::Session { orig } => format!(
                "live session ({}): passes without rules",
                if orig {
                    "from its originator"
                } else {
                    "a reply"
                }
            ),
            Judged::Rejudged { kept } => format!(
                "session of an older ruleset, judged again: {}",
                if kept { "kept" } else { "ended" }
            ),
            Judged::Rules => "no session: the rules judge".into(),
        };
        stage(&mut s, "security", text);
        for h in [&j.egress, &j.ingress].into_iter().flatten() {
            let (line, fields) = rule_text(h, &port);
            stage(
                &mut s,
                if h.ingress {
                    "ingress group"
                } else {
                    "egress group"
                },
                line,
            );
            rules.push(fields);
        }
        if j.opens {
            stage(
                &mut s,
                "session",
                format!("opens a session (charged to {})", port(t.in_port)),
            );
        }
    }
    for m in t.meters.iter().flatten() {
        let of = match m.of {
            MeterOf::Egress(p) => format!("egress QoS of {}", port(p)),
            MeterOf::Ingress(p) => format!("ingress QoS of {}", port(p)),
            MeterOf::Class(c) => format!("QoS class {c} of the admitting rule"),
        };
        let color = match m.color {
            Color::Green => "green",
            Color::Yellow => "yellow",
            Color::Red => "red",
        };
        let does = match (m.policed.kept, m.policed.remark) {
            (0, _) => "drop".to_string(),
            (_, Some(d)) => format!("pass, DSCP {d}"),
            _ => "pass".into(),
        };
        stage(&mut s, "meter", format!("{of}: {color}, {does}"));
    }
    for c in t.flood.iter().flatten() {
        let judged = c.rule.as_ref().map(|h| (h.allows(), rule_text(h, &port)));
        let text = match (&c.verdict, judged) {
            (Ok(()), None) => format!("{}: sent", port(c.port)),
            (Ok(()), Some((_, (line, fields)))) => {
                rules.push(fields);
                format!("{}: sent ({line})", port(c.port))
            }
            (Err(_), Some((false, (line, fields)))) => {
                rules.push(fields);
                format!("{}: refused ({line})", port(c.port))
            }
            (Err(r), _) => format!("{}: refused ({})", port(c.port), r.name()),
        };
        stage(&mut s, "flood", text);
    }
    if t.flood_more != (0, 0) {
        stage(
            &mut s,
            "flood",
            format!(
                "{} more copies sent, {} refused",
                t.flood_more.0, t.flood_more.1
            ),
        );
    }
    finish(t, n, s, rules)
}

fn finish(t: &Trace, n: &Names, mut s: Vec<Value>, rules: Vec<Value>) -> Value {
    let answered = matches!(
        t.routed,
        Some(Routed::Answered(_))
            | Some(Routed::Dropped {
                icmp_error: true,
                ..
            })
    );
    let (text, outcome) = outcome(t.outcome, t.in_port, answered, n);
    stage(&mut s, "outcome", text);
    json!({
        "port": (n.port)(t.in_port),
        "len": t.len,
        "stages": s,
        "rules": rules,
        "outcome": outcome,
    })
}

/// An outcome as a line and as fields (`answered`: a router's answer
/// goes back out of the ingress port).
pub fn outcome(o: Outcome, in_port: PortId, answered: bool, n: &Names) -> (String, Value) {
    let port = |p: PortId| (n.port)(p);
    match o {
        Outcome::Drop {
            reason,
            port: Some(p),
        } => (
            format!("dropped: {} (counted on {})", reason.name(), port(p)),
            json!({ "action": "drop", "reason": reason.name(), "port": port(p) }),
        ),
        Outcome::Drop { reason, port: None } => (
            format!("dropped: {}", reason.name()),
            json!({ "action": "drop", "reason": reason.name() }),
        ),
        Outcome::Local(p) if p == in_port && answered => (
            format!("answered back out of {}", port(p)),
            json!({ "action": "reply", "port": port(p) }),
        ),
        Outcome::Local(p) => (
            format!("output to {}", port(p)),
            json!({ "action": "output", "port": port(p) }),
        ),
        Outcome::Tunnel(p) => (
            format!("encapsulated out of {}", port(p)),
            json!({ "action": "tunnel", "port": port(p) }),
        ),
        Outcome::Flood { locals, tunnels } => (
            format!("flooded to {locals} ports and {tunnels} tunnels"),
            json!({ "action": "flood", "ports": locals, "tunnels": tunnels }),
        ),
    }
}

/// A rule's verdict as a line and as fields.
fn rule_text(h: &RuleHit, port: &dyn Fn(PortId) -> String) -> (String, Value) {
    let g = &h.group;
    let verb = if h.allows() { "allows" } else { "denies" };
    let dir = if h.ingress { "ingress" } else { "egress" };
    let (line, rule, priority) = match h.verdict.rule.and_then(|i| g.def.rules.get(i as usize)) {
        Some(r) => (
            format!(
                "{} on {}: rule {} (priority {}) {verb}",
                g.name(),
                port(h.port),
                r.name,
                r.priority
            ),
            Value::from(r.name.clone()),
            Value::from(r.priority),
        ),
        None => (
            format!(
                "{} on {}: no rule matches, the default {verb}",
                g.name(),
                port(h.port)
            ),
            Value::Null,
            Value::Null,
        ),
    };
    let fields = json!({
        "port": port(h.port),
        "direction": dir,
        "group": g.name(),
        "rule": rule,
        "priority": priority,
        "action": if h.allows() { "allow" } else { "deny" },
    });
    (line, fields)
}

fn answer(e: Edit) -> &'static str {
    match e {
        Edit::ArpReply { .. } => "ARP reply",
        Edit::NeighbourAdvert { .. } => "neighbour advertisement",
        Edit::EchoReply { .. } | Edit::Echo6Reply { .. } => "echo reply",
        Edit::IcmpError { .. } | Edit::Icmp6Error { .. } => "ICMP error",
        _ => "answer",
    }
}

/// A parsed key in a line: `tcp 10.0.0.1:40000 > 10.0.0.2:80 flags S`.
fn flow_text(k: &Result<FlowKey, vswitch::ParseError>) -> String {
    let k = match k {
        Ok(k) => k,
        Err(e) => return format!("malformed: {e:?}"),
    };
    let vlan = k.vlan.map_or(String::new(), |v| format!("vlan {v}, "));
    let (src, dst) = match k.l3 {
        L3::V4 => (
            Ipv4Addr::from(k.src_ip as u32).to_string(),
            Ipv4Addr::from(k.dst_ip as u32).to_string(),
        ),
        L3::V6 => (
            Ipv6Addr::from(k.src_ip).to_string(),
            Ipv6Addr::from(k.dst_ip).to_string(),
        ),
        L3::Other if k.ethertype == 0x0806 => return format!("{vlan}arp"),
        L3::Other => return format!("{vlan}ethertype 0x{:04x}", k.ethertype),
    };
    let frag = match (k.fragment, k.later_fragment) {
        (Some(id), true) => format!(", later fragment (id {id})"),
        (Some(id), false) => format!(", first fragment (id {id})"),
        _ => String::new(),
    };
    let l4 = match k.proto {
        6 | 17 => {
            let name = if k.proto == 6 { "tcp" } else { "udp" };
            let flags = if k.proto == 6 {
                format!(" flags {}", tcp_flags(k.tcp_flags))
            } else {
                String::new()
            };
            format!("{name} {src}:{} > {dst}:{}{flags}", k.src_port, k.dst_port)
        }
        1 | 58 => format!(
            "{} {src} > {dst} type {} code {}",
            if k.proto == 1 { "icmp" } else { "icmp6" },
            k.src_port,
            k.dst_port
        ),
        p => format!("ip proto {p} {src} > {dst}"),
    };
    format!("{vlan}{l4}{frag}, dscp {}", k.dscp)
}

fn tcp_flags(f: u8) -> String {
    let s: String = [
        (0x02, 'S'),
        (0x10, 'A'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x20, 'U'),
    ]
    .iter()
    .filter(|(b, _)| f & b != 0)
    .map(|(_, c)| *c)
    .collect();
    if s.is_empty() {
        "none".into()
    } else {
        s
    }
}

/// The MAC a synthetic frame to `ip` in `bridge` goes to: a station the
/// VPC knows in that bridge, else the VPC's router.
pub fn vpc_mac_of(
    p: &Pipeline,
    bridge: vswitch::BridgeId,
    ip: std::net::IpAddr,
) -> Option<MacAddr> {
    let vpc = p.router.vpc_of(bridge)?;
    let known = match ip {
        std::net::IpAddr::V4(a) => vpc.endpoint(a),
        std::net::IpAddr::V6(a) => vpc.endpoint6(a),
    };
    Some(match known {
        Some(e) if e.bridge == bridge => e.mac,
        _ => vpc.mac,
    })
}
