//! Security groups, QoS policies and the session table in the config file.
//!
//! ```toml
//! [sessions]                 # stateful groups (optional table)
//! capacity = 65536
//!
//! [[security_group]]
//! name = "web"
//! default = "deny"
//! [[security_group.rule]]
//! name = "http"
//! priority = 100             # higher wins
//! action = "allow"
//! proto = "tcp"              # any, tcp, udp, icmp or a number
//! src = "10.0.0.0/8"         # IPv4 or IPv6 prefix; absent: any
//! dst_ports = "80-81"        # tcp/udp only
//! qos_class = "gold"         # optional: a [[qos_policy]] metering the matches
//!
//! [[qos_policy]]
//! name = "gold"
//! kind = "srtcm"             # RFC 2697; "trtcm" (RFC 2698) takes pir/pbs
//! unit = "bits"              # rates in bit/s, bursts in bytes; or "packets"
//! cir = 100_000_000
//! cbs = 150_000
//! ebs = 0
//! yellow = "dscp:10"         # pass | drop | dscp:N per color
//! red = "drop"
//! ```
//!
//! Ports name them with `ingress_group`, `egress_group`, `ingress_qos` and
//! `egress_qos` (directions from the container's side).

use std::collections::HashSet;

use acl::policer::{ColorAction, MeterConf, Policy, Unit};
use acl::session::Timeouts;
use acl::{Action, Cidr, PortRange, Proto, Rule, SecurityGroup};
use serde::Deserialize;
use toml::Spanned;

use super::units::{Measure, Quantity};
use super::{ConfigError, Ctx};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupFile {
    name: Spanned<String>,
    default: Option<Spanned<String>>,
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RuleFile>>,
}

impl GroupFile {
    /// The name the file gives it.
    pub(super) fn name(&self) -> &str {
        self.name.get_ref()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: Spanned<String>,
    priority: Spanned<u32>,
    action: Spanned<String>,
    proto: Option<Spanned<String>>,
    src: Option<Spanned<String>>,
    dst: Option<Spanned<String>>,
    src_ports: Option<Spanned<String>>,
    dst_ports: Option<Spanned<String>>,
    icmp_type: Option<Spanned<u8>>,
    icmp_code: Option<Spanned<u8>>,
    qos_class: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QosFile {
    name: Spanned<String>,
    kind: Spanned<String>,
    unit: Option<Spanned<String>>,
    cir: Spanned<Quantity>,
    cbs: Spanned<Quantity>,
    ebs: Option<Spanned<Quantity>>,
    pir: Option<Spanned<Quantity>>,
    pbs: Option<Spanned<Quantity>>,
    green: Option<Spanned<String>>,
    yellow: Option<Spanned<String>>,
    red: Option<Spanned<String>>,
}

impl QosFile {
    /// The name the file gives it.
    pub(super) fn name(&self) -> &str {
        self.name.get_ref()
    }
}

/// The `[sessions]` table.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConf {
    /// Sessions the table holds (a new one beyond is dropped and counted
    /// as `session_full`).
    pub capacity: usize,
    /// TCP established idle timeout, seconds.
    pub tcp_established_secs: u32,
    /// UDP timeout after a reply, seconds.
    pub udp_stream_secs: u32,
    /// Sessions one port may hold (opened by its packets); beyond, new
    /// ones are dropped as `session_quota`.
    pub per_port: u32,
    /// Sessions one bridge (VPC segment) may hold.
    pub per_bridge: u32,
}

impl Default for SessionsConf {
    fn default() -> Self {
        let t = Timeouts::default();
        SessionsConf {
            capacity: 65536,
            tcp_established_secs: t.tcp_established,
            udp_stream_secs: t.udp_stream,
            // A sixteenth of the table per container, half per VPC
            // segment: one tenant cannot starve the others.
            per_port: 4096,
            per_bridge: 32768,
        }
    }
}

impl SessionsConf {
    /// The table's shares.
    pub fn limits(&self) -> acl::session::Limits {
        acl::session::Limits {
            per_owner: self.per_port,
            per_zone: self.per_bridge,
        }
    }

    /// The table's timeouts.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            tcp_established: self.tcp_established_secs,
            udp_stream: self.udp_stream_secs,
            ..Timeouts::default()
        }
    }
}

/// A named QoS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QosPolicy {
    /// Name.
    pub name: String,
    /// Meter and color actions.
    pub policy: Policy,
}

fn action(cx: &Ctx, s: &Spanned<String>, field: &str) -> Result<Action, ConfigError> {
    match s.get_ref().as_str() {
        "allow" => Ok(Action::Allow),
        "deny" => Ok(Action::Deny),
        _ => Err(cx.err(s.span(), field, "expected \"allow\" or \"deny\"")),
    }
}

/// Validates the `[[qos_policy]]` tables.
pub(super) fn qos_policies(
    cx: &Ctx,
    files: &[Spanned<QosFile>],
) -> Result<Vec<QosPolicy>, ConfigError> {
    let mut out: Vec<QosPolicy> = Vec::new();
    for (i, q) in files.iter().enumerate() {
        let q = q.get_ref();
        let f = |n: &str| format!("qos_policy[{i}].{n}");
        let name = q.name.get_ref();
        if out.iter().any(|p| &p.name == name) {
            return Err(cx.err(
                q.name.span(),
                f("name"),
                format!("QoS policy {name:?} is defined twice"),
            ));
        }
        let unit = match q.unit.as_ref().map(|u| u.get_ref().as_str()) {
            None | Some("bits") => Unit::Bits,
            Some("packets") => Unit::Packets,
            Some(_) => {
                let u = q.unit.as_ref().expect("some");
                return Err(cx.err(
                    u.span(),
                    f("unit"),
                    "expected \"bits\" (rates in bit/s) or \"packets\"",
                ));
            }
        };
        // Bursts are written in bytes for a bit-rate policy.
        let burst = |v: u64| {
            if unit == Unit::Bits {
                v.saturating_mul(8)
            } else {
                v
            }
        };
        // Rates and bursts as written, with their units (see `units`).
        let (rate, size) = match unit {
            Unit::Bits => (Measure::BitRate, Measure::Bytes),
            _ => (Measure::PacketRate, Measure::Packets),
        };
        let value = |v: &Spanned<Quantity>, n: &str, m: Measure| {
            v.get_ref().value(m).map_err(|e| cx.err(v.span(), f(n), e))
        };
        let need = |v: &Option<Spanned<Quantity>>, n: &str, m: Measure| match v {
            Some(v) => value(v, n, m),
            None => Err(cx.err(
                q.kind.span(),
                f(n),
                format!("a {} policy needs `{n}`", q.kind.get_ref()),
            )),
        };
        let (cir, cbs) = (value(&q.cir, "cir", rate)?, value(&q.cbs, "cbs", size)?);
        let meter = match q.kind.get_ref().as_str() {
            "srtcm" => {
                if let Some(p) = q.pir.as_ref().or(q.pbs.as_ref()) {
                    return Err(cx.err(p.span(), f("pir"), "pir/pbs belong to a trtcm policy"));
                }
                MeterConf::SrTcm {
                    cir,
                    cbs: burst(cbs),
                    ebs: burst(match &q.ebs {
                        Some(e) => value(e, "ebs", size)?,
                        None => 0,
                    }),
                }
            }
            "trtcm" => {
                if let Some(e) = &q.ebs {
                    return Err(cx.err(e.span(), f("ebs"), "ebs belongs to an srtcm policy"));
                }
                let (pir, pbs) = (need(&q.pir, "pir", rate)?, need(&q.pbs, "pbs", size)?);
                if pir < cir {
                    let span = q.pir.as_ref().expect("checked").span();
                    return Err(cx.err(
                        span,
                        f("pir"),
                        "the peak rate must be at least cir (RFC 2698)",
                    ));
                }
                MeterConf::TrTcm {
                    cir,
                    cbs: burst(cbs),
                    pir,
                    pbs: burst(pbs),
                }
            }
            _ => return Err(cx.err(q.kind.span(), f("kind"), "expected \"srtcm\" or \"trtcm\"")),
        };
        if cbs == 0 {
            return Err(cx.err(
                q.cbs.span(),
                f("cbs"),
                "a zero committed burst colors every frame red",
            ));
        }
        let (b1, b2) = match meter {
            MeterConf::SrTcm { cbs, ebs, .. } => (cbs, ebs),
            MeterConf::TrTcm { cbs, pbs, .. } => (cbs, pbs),
        };
        if b1.max(b2) > acl::policer::MAX_BURST_UNITS {
            return Err(cx.err(
                q.cbs.span(),
                f("cbs"),
                if unit == Unit::Bits {
                    format!(
                        "a burst is at most {} bytes",
                        acl::policer::MAX_BURST_UNITS / 8
                    )
                } else {
                    format!(
                        "a burst is at most {} packets",
                        acl::policer::MAX_BURST_UNITS
                    )
                },
            ));
        }
        let color = |v: &Option<Spanned<String>>,
                     n: &str,
                     dflt: ColorAction|
         -> Result<ColorAction, ConfigError> {
            let Some(v) = v else { return Ok(dflt) };
            match v.get_ref().as_str() {
                "pass" => Ok(ColorAction::Pass),
                "drop" => Ok(ColorAction::Drop),
                s => s
                    .strip_prefix("dscp:")
                    .and_then(|d| d.parse::<u8>().ok())
                    .filter(|d| *d < 64)
                    .map(ColorAction::Remark)
                    .ok_or_else(|| {
                        cx.err(v.span(), f(n), "expected pass, drop or dscp:N (N < 64)")
                    }),
            }
        };
        out.push(QosPolicy {
            name: name.clone(),
            policy: Policy {
                meter,
                unit,
                actions: [
                    color(&q.green, "green", ColorAction::Pass)?,
                    color(&q.yellow, "yellow", ColorAction::Pass)?,
                    color(&q.red, "red", ColorAction::Drop)?,
                ],
            },
        });
    }
    Ok(out)
}

/// Validates the `[[security_group]]` tables; returns the groups and the
/// warnings of the lint (fatal findings are errors).
pub(super) fn security_groups(
    cx: &Ctx,
    files: &[Spanned<GroupFile>],
    qos: &[QosPolicy],
) -> Result<(Vec<SecurityGroup>, Vec<String>), ConfigError> {
    let mut groups: Vec<SecurityGroup> = Vec::new();
    let mut warnings = Vec::new();
    for (i, g) in files.iter().enumerate() {
        let g = g.get_ref();
        let name = g.name.get_ref();
        if groups.iter().any(|x| &x.name == name) {
            return Err(cx.err(
                g.name.span(),
                format!("security_group[{i}].name"),
                format!("security group {name:?} is defined twice"),
            ));
        }
        let default = match &g.default {
            Some(d) => action(cx, d, &format!("security_group[{i}].default"))?,
            None => Action::Deny,
        };
        let mut rules = Vec::with_capacity(g.rules.len());
        for (j, r) in g.rules.iter().enumerate() {
            let r = r.get_ref();
            let f = |n: &str| format!("security_group[{i}].rule[{j}].{n}");
            let mut rule = Rule::any(
                r.name.get_ref(),
                *r.priority.get_ref(),
                action(cx, &r.action, &f("action"))?,
            );
            if let Some(p) = &r.proto {
                rule.proto = p
                    .get_ref()
                    .parse::<Proto>()
                    .map_err(|e| cx.err(p.span(), f("proto"), e))?;
            }
            for (v, slot, n) in [
                (&r.src, &mut rule.src, "src"),
                (&r.dst, &mut rule.dst, "dst"),
            ] {
                if let Some(v) = v {
                    *slot = Some(
                        v.get_ref()
                            .parse::<Cidr>()
                            .map_err(|e| cx.err(v.span(), f(n), e))?,
                    );
                }
            }
            if let Err(e) = rule.family() {
                let span = r.dst.as_ref().map_or(0..0, |d| d.span());
                return Err(cx.err(span, f("dst"), format!("{e}; it could never match")));
            }
            for (v, slot, n) in [
                (&r.src_ports, &mut rule.src_ports, "src_ports"),
                (&r.dst_ports, &mut rule.dst_ports, "dst_ports"),
            ] {
                if let Some(v) = v {
                    if !rule.proto.has_ports() {
                        return Err(cx.err(
                            v.span(),
                            f(n),
                            "ports need proto = \"tcp\" or \"udp\"",
                        ));
                    }
                    *slot = v
                        .get_ref()
                        .parse::<PortRange>()
                        .map_err(|e| cx.err(v.span(), f(n), e))?;
                }
            }
            for (v, slot, n) in [
                (&r.icmp_type, &mut rule.icmp_type, "icmp_type"),
                (&r.icmp_code, &mut rule.icmp_code, "icmp_code"),
            ] {
                if let Some(v) = v {
                    if rule.proto != Proto::Icmp {
                        return Err(cx.err(
                            v.span(),
                            f(n),
                            "ICMP type and code need proto = \"icmp\"",
                        ));
                    }
                    *slot = Some(*v.get_ref());
                }
            }
            if let Some(c) = &r.qos_class {
                if !qos.iter().any(|q| &q.name == c.get_ref()) {
                    return Err(cx.err(
                        c.span(),
                        f("qos_class"),
                        format!("no [[qos_policy]] named {:?}", c.get_ref()),
                    ));
                }
                rule.qos_class = Some(c.get_ref().clone());
            }
            rules.push(rule);
        }
        let group = SecurityGroup {
            name: name.clone(),
            rules,
            default,
        };
        let findings = acl::lint::check(&group);
        if let Some(e) = findings.errors.first() {
            return Err(cx.err(g.name.span(), format!("security_group[{i}]"), e.clone()));
        }
        warnings.extend(findings.warnings);
        groups.push(group);
    }
    Ok((groups, warnings))
}

/// Checks a port's reference to a group or policy by name.
pub(super) fn check_ref(
    cx: &Ctx,
    v: &Option<Spanned<String>>,
    field: String,
    known: &HashSet<&str>,
    what: &str,
) -> Result<Option<String>, ConfigError> {
    let Some(v) = v else { return Ok(None) };
    if known.contains(v.get_ref().as_str()) {
        Ok(Some(v.get_ref().clone()))
    } else {
        Err(cx.err(
            v.span(),
            field,
            format!("no {what} named {:?}", v.get_ref()),
        ))
    }
}
