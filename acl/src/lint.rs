//! Config-time checks of a security group: mistakes that the classifier
//! would silently accept.
//!
//! - errors: duplicate rule names; rules whose prefixes are of different
//!   families (they can never match); two rules of equal priority that
//!   overlap with different actions (their file order would decide,
//!   silently).
//! - warnings: rules that can never match because a rule ranked above
//!   them covers everything they match (shadowed).
//!
//! Quadratic in the rules: 10,000 rules take well under a second, once,
//! off the data path.

use std::collections::HashSet;

use crate::rule::{Cidr, Proto, Rule, SecurityGroup};

/// What the check found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// The group must not be used.
    pub errors: Vec<String>,
    /// The group works but probably not as meant.
    pub warnings: Vec<String>,
}

/// A prefix field: None is any address of either family.
fn addr_covers(a: &Option<Cidr>, b: &Option<Cidr>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a.covers(b),
    }
}

fn addr_overlaps(a: &Option<Cidr>, b: &Option<Cidr>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(a), Some(b)) => a.covers(b) || b.covers(a),
    }
}

fn opt_covers(a: Option<u8>, b: Option<u8>) -> bool {
    a.is_none() || a == b
}

fn opt_overlaps(a: Option<u8>, b: Option<u8>) -> bool {
    a.is_none() || b.is_none() || a == b
}

/// Whether `a` matches every packet `b` matches.
pub fn covers(a: &Rule, b: &Rule) -> bool {
    if !addr_covers(&a.src, &b.src) || !addr_covers(&a.dst, &b.dst) {
        return false;
    }
    // A family-restricted rule does not cover a both-families one through
    // its other field.
    if let (Ok(Some(fa)), Ok(fb)) = (a.family(), b.family()) {
        if fb != Some(fa) {
            return false;
        }
    }
    match (a.proto, b.proto) {
        (Proto::Any, _) => true,
        (pa, pb) if pa != pb => false,
        (p, _) if p.has_ports() => {
            a.src_ports.covers(&b.src_ports) && a.dst_ports.covers(&b.dst_ports)
        }
        (Proto::Icmp, _) => {
            opt_covers(a.icmp_type, b.icmp_type) && opt_covers(a.icmp_code, b.icmp_code)
        }
        _ => true,
    }
}

/// Whether some packet matches both.
pub fn overlaps(a: &Rule, b: &Rule) -> bool {
    if let (Ok(Some(fa)), Ok(Some(fb))) = (a.family(), b.family()) {
        if fa != fb {
            return false;
        }
    }
    if !addr_overlaps(&a.src, &b.src) || !addr_overlaps(&a.dst, &b.dst) {
        return false;
    }
    match (a.proto, b.proto) {
        (Proto::Any, _) | (_, Proto::Any) => true,
        (pa, pb) if pa != pb => false,
        (p, _) if p.has_ports() => {
            a.src_ports.overlaps(&b.src_ports) && a.dst_ports.overlaps(&b.dst_ports)
        }
        (Proto::Icmp, _) => {
            opt_overlaps(a.icmp_type, b.icmp_type) && opt_overlaps(a.icmp_code, b.icmp_code)
        }
        _ => true,
    }
}

/// Checks `g`.
pub fn check(g: &SecurityGroup) -> Findings {
    let mut f = Findings::default();
    let mut names = HashSet::new();
    for r in &g.rules {
        if !names.insert(r.name.as_str()) {
            f.errors.push(format!(
                "group {:?}: rule name {:?} is used twice",
                g.name, r.name
            ));
        }
        if let Err(e) = r.family() {
            f.errors
                .push(format!("group {:?}: {e}; it can never match", g.name));
        }
    }
    let mut order: Vec<usize> = (0..g.rules.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(g.rules[i].priority), i));
    for (k, &i) in order.iter().enumerate() {
        let r = &g.rules[i];
        for &j in &order[..k] {
            let above = &g.rules[j];
            if above.priority == r.priority && above.action != r.action && overlaps(above, r) {
                f.errors.push(format!(
                    "group {:?}: rules {:?} and {:?} have priority {} and overlap with different actions; \
                     give them different priorities",
                    g.name, above.name, r.name, r.priority
                ));
            } else if covers(above, r) {
                f.warnings.push(format!(
                    "group {:?}: rule {:?} can never match: rule {:?} above it matches everything it does",
                    g.name, r.name, above.name
                ));
                break;
            }
        }
    }
    f
}
