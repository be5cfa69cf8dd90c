//! Building the security stage of a snapshot from the config: compiled
//! groups, one meter per port and direction with a QoS policy, one meter
//! per QoS class that rules name, and the session table (created once and
//! carried across reloads so live connections survive a ruleset change).

use std::collections::HashMap;
use std::sync::Arc;

use acl::policer::SharedMeter;
use acl::session::SessionTable;
use acl::Classifier;
use vswitch::security::{Group, PortPolicy, Security};

use crate::config::Config;

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
) -> Security {
    let sessions = sessions.unwrap_or_else(|| {
        Arc::new(SessionTable::new(
            cfg.sessions.capacity,
            cfg.sessions.timeouts(),
        ))
    });
    // Class meters: one per QoS policy some rule names, numbered from 1.
    let mut class_ids: HashMap<&str, u16> = HashMap::new();
    let mut class_meters = Vec::new();
    for g in &cfg.security_groups {
        for r in &g.rules {
            if let Some(c) = &r.qos_class {
                if !class_ids.contains_key(c.as_str()) {
                    let p = cfg
                        .qos_policies
                        .iter()
                        .find(|q| &q.name == c)
                        .expect("validated QoS class");
                    class_meters.push(Arc::new(SharedMeter::new(p.policy, now_ns)));
                    class_ids.insert(c.as_str(), class_meters.len() as u16);
                }
            }
        }
    }
    let groups: HashMap<&str, Arc<Group>> = cfg
        .security_groups
        .iter()
        .map(|g| {
            let rule_class = g
                .rules
                .iter()
                .map(|r| r.qos_class.as_deref().map_or(0, |c| class_ids[c]))
                .collect();
            let compiled = Group {
                name: g.name.clone(),
                classifier: Classifier::new(g),
                rule_class,
            };
            (g.name.as_str(), Arc::new(compiled))
        })
        .collect();
    let meter = |name: &Option<String>| {
        name.as_ref().map(|n| {
            let p = cfg
                .qos_policies
                .iter()
                .find(|q| &q.name == n)
                .expect("validated QoS policy");
            Arc::new(SharedMeter::new(p.policy, now_ns))
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
                ingress_meter: meter(&p.ingress_qos),
                egress_meter: meter(&p.egress_qos),
            }
        })
        .collect();
    Security::new(ports, class_meters, sessions, generation)
}
