//! Building the security stage of a snapshot from the config: compiled
//! groups, one meter per port and direction with a QoS policy, one meter
//! per QoS class that rules name, and the session table (created once and
//! carried across reloads so live connections survive a ruleset change).
//! Meters and compiled groups are carried too ([`Carried`]): a snapshot
//! rebuilt because a port came, a MAC sweep or a learned VTEP must not
//! refill everyone's token buckets, nor compile every group again (a
//! 10,000-rule group takes milliseconds; only a changed group is
//! compiled).

use std::collections::HashMap;
use std::sync::Arc;

use acl::policer::{Policy, SharedMeter};
use acl::session::SessionTable;
use vswitch::security::{Group, PortPolicy, Security};

use crate::config::Config;

/// Which way a port meter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Dir {
    Ingress,
    Egress,
}

/// What the running snapshot's security stage carries into the next.
/// Meters by what they meter: (port name, direction, policy name) for
/// port meters, the policy name for class meters; a meter is reused while
/// its key and its policy's parameters stay the same, a changed policy
/// starts a new one. Compiled groups by name, reused while the group and
/// its rules' QoS classes stay the same.
#[derive(Default)]
pub struct Carried {
    port: HashMap<(String, Dir, String), (Policy, Arc<SharedMeter>)>,
    class: HashMap<String, (Policy, Arc<SharedMeter>)>,
    groups: HashMap<String, Arc<Group>>,
}

impl Carried {
    /// The compiled group named `name` of the running snapshot (its
    /// rules' hit counters).
    pub fn group(&self, name: &str) -> Option<&Arc<Group>> {
        self.groups.get(name)
    }

    /// The meter for `key` with `policy`, reused or new; marks it used.
    fn get<K: std::hash::Hash + Eq + Clone>(
        map: &mut HashMap<K, (Policy, Arc<SharedMeter>)>,
        used: &mut Vec<K>,
        key: K,
        policy: Policy,
        now_ns: u64,
    ) -> Arc<SharedMeter> {
        used.push(key.clone());
        match map.get(&key) {
            Some((p, m)) if *p == policy => Arc::clone(m),
            _ => {
                let m = Arc::new(SharedMeter::new(policy, now_ns));
                map.insert(key, (policy, Arc::clone(&m)));
                m
            }
        }
    }
}

/// The stage for `cfg`, numbered `generation`; `slots[i]` names the port
/// with switch port id i (None: no NIC there); `sessions` is the table of
/// the previous snapshot, if any. `now_ns` starts the meters' clocks (the
/// workers' time base).
pub fn build(
    cfg: &Config,
    slots: &[Option<&str>],
    sessions: Option<Arc<SessionTable>>,
    generation: u32,
    now_ns: u64,
    carried: &mut Carried,
) -> Security {
    let sessions = sessions.unwrap_or_else(|| {
        Arc::new(SessionTable::with_limits(
            cfg.sessions.capacity,
            cfg.sessions.timeouts(),
            cfg.sessions.limits(),
        ))
    });
    // Class meters: one per QoS policy some rule names, numbered from 1.
    let mut class_ids: HashMap<&str, u16> = HashMap::new();
    let mut class_meters = Vec::new();
    let (mut used_class, mut used_port) = (Vec::new(), Vec::new());
    for g in &cfg.security_groups {
        for r in &g.rules {
            if let Some(c) = &r.qos_class {
                if !class_ids.contains_key(c.as_str()) {
                    let p = cfg
                        .qos_policies
                        .iter()
                        .find(|q| &q.name == c)
                        .expect("validated QoS class");
                    class_meters.push(Carried::get(
                        &mut carried.class,
                        &mut used_class,
                        c.clone(),
                        p.policy,
                        now_ns,
                    ));
                    class_ids.insert(c.as_str(), class_meters.len() as u16);
                }
            }
        }
    }
    let groups: HashMap<&str, Arc<Group>> = cfg
        .security_groups
        .iter()
        .map(|g| {
            let rule_class: Vec<u16> = g
                .rules
                .iter()
                .map(|r| r.qos_class.as_deref().map_or(0, |c| class_ids[c]))
                .collect();
            let compiled = match carried.groups.get(&g.name) {
                Some(c) if c.def == *g && c.rule_class == rule_class => Arc::clone(c),
                _ => {
                    let c = Arc::new(Group::new(g, rule_class));
                    carried.groups.insert(g.name.clone(), Arc::clone(&c));
                    c
                }
            };
            (g.name.as_str(), compiled)
        })
        .collect();
    let mut meter = |port: &str, dir: Dir, name: &Option<String>| {
        name.as_ref().map(|n| {
            let p = cfg
                .qos_policies
                .iter()
                .find(|q| &q.name == n)
                .expect("validated QoS policy");
            let key = (port.to_string(), dir, n.clone());
            Carried::get(&mut carried.port, &mut used_port, key, p.policy, now_ns)
        })
    };
    let ports = slots
        .iter()
        .map(|slot| {
            let Some(p) = slot.and_then(|n| cfg.ports.iter().find(|p| p.name == n)) else {
                return PortPolicy::default();
            };
            PortPolicy {
                ingress: p.ingress_group.as_deref().map(|g| Arc::clone(&groups[g])),
                egress: p.egress_group.as_deref().map(|g| Arc::clone(&groups[g])),
                ingress_meter: meter(&p.name, Dir::Ingress, &p.ingress_qos),
                egress_meter: meter(&p.name, Dir::Egress, &p.egress_qos),
            }
        })
        .collect();
    // Meters and groups nothing uses any more go.
    carried.port.retain(|k, _| used_port.contains(k));
    carried.class.retain(|k, _| used_class.contains(k));
    carried
        .groups
        .retain(|k, _| groups.contains_key(k.as_str()));
    Security::new(ports, class_meters, sessions, generation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch::PortId;

    const CFG: &str = r#"
[[bridge]]
name = "b"
[[qos_policy]]
name = "slow"
kind = "srtcm"
cir = 1000000
cbs = 10000
[[qos_policy]]
name = "gold"
kind = "srtcm"
cir = 5000000
cbs = 10000
[[security_group]]
name = "g"
default = "allow"
[[security_group.rule]]
name = "r"
priority = 1
action = "allow"
qos_class = "gold"
[[port]]
name = "a"
kind = "ring"
bridge = "b"
egress_qos = "slow"
egress_group = "g"
[[port]]
name = "c"
kind = "ring"
bridge = "b"
"#;

    fn ptrs(m: &Carried) -> Vec<*const SharedMeter> {
        let mut v: Vec<_> = m
            .port
            .values()
            .chain(m.class.values())
            .map(|(_, a)| Arc::as_ptr(a))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn meters_survive_rebuilds_unless_their_policy_or_port_changes() {
        let cfg = crate::config::parse("t", CFG).unwrap();
        let mut m = Carried::default();
        build(&cfg, &[Some("a"), Some("c")], None, 1, 0, &mut m);
        let a = ptrs(&m);
        // Rebuilt with the ports in other slots and a new rules generation:
        // the same meters.
        build(&cfg, &[None, Some("c"), Some("a")], None, 2, 5, &mut m);
        assert_eq!(a, ptrs(&m));
        assert_eq!(m.port.len(), 1);
        assert_eq!(m.class.len(), 1);
        // A changed policy is a new meter; a port gone drops its meter.
        let changed =
            crate::config::parse("t", &CFG.replace("cir = 1000000", "cir = 2000000")).unwrap();
        build(&changed, &[Some("a"), Some("c")], None, 3, 9, &mut m);
        let c = ptrs(&m);
        assert_ne!(a[..], c[..]);
        assert!(
            c.contains(&a[0]) || c.contains(&a[1]),
            "the unchanged class meter stays"
        );
        build(&changed, &[Some("c")], None, 4, 9, &mut m);
        assert!(m.port.is_empty());
    }

    #[test]
    fn a_group_is_compiled_again_only_when_it_changed() {
        let cfg = crate::config::parse("t", CFG).unwrap();
        let mut m = Carried::default();
        let group = |sec: &Security| Arc::as_ptr(sec.port(PortId(0)).egress.as_ref().unwrap());
        let first = build(&cfg, &[Some("a"), Some("c")], None, 1, 0, &mut m);
        let again = build(&cfg, &[Some("a"), Some("c")], None, 2, 0, &mut m);
        assert_eq!(
            group(&first),
            group(&again),
            "unchanged: the same compiled group"
        );
        let changed =
            crate::config::parse("t", &CFG.replace("priority = 1", "priority = 2")).unwrap();
        let other = build(&changed, &[Some("a"), Some("c")], None, 3, 0, &mut m);
        assert_ne!(group(&first), group(&other));
        assert_eq!(m.groups.len(), 1);
    }
}
