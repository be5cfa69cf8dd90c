//! This host's claims in etcd: one key per endpoint (VNI, MAC) and, in a
//! VPC, one per address (`ips/<vpc>/<ip>`), all under the host's lease.
//!
//! A claim is optimistic: the keys are read, and written in one
//! transaction only if none changed since (each key's mod revision, or
//! absence, compared). A key another host holds refuses the claim, which
//! is logged once and retried every round: the holder keeps it until it
//! releases it (its NIC deleted) or dies (its lease expires), so a
//! container moving between hosts lands once the old host lets go (a
//! Kubernetes move is a delete, then an add). Not "the newer claim wins":
//! that would let any host, or a hostile tenant's CNI request there, take
//! a live container's MAC or address.

use std::collections::BTreeMap;

use anyhow::Result;
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde_json::json;

use crate::vswitchd::{Local, LocalNic};
use crate::Endpoint;

/// What this host holds in etcd, per (VNI, MAC).
#[derive(Default)]
pub struct Claims {
    /// The NIC each claim was made for, and the VPC its addresses were
    /// claimed in.
    held: BTreeMap<(u32, String), (LocalNic, Option<String>)>,
    /// Claims refused, with why (logged when it changes).
    refused: BTreeMap<(u32, String), String>,
}

/// The host, VTEP and key prefix claims are made with.
pub struct Claimant<'a> {
    /// This host.
    pub host: &'a str,
    /// Its VTEP.
    pub vtep: &'a str,
    /// The key prefix.
    pub prefix: &'a str,
    /// The lease every key is tied to.
    pub lease: i64,
}

impl Claimant<'_> {
    fn endpoint_key(&self, vni: u32, mac: &str) -> String {
        format!("{}/endpoints/{vni}/{mac}", self.prefix)
    }

    fn ip_key(&self, vpc: &str, ip: &str) -> String {
        format!("{}/ips/{vpc}/{ip}", self.prefix)
    }
}

impl Claims {
    /// Forgets every claim (a new lease holds none of them).
    pub fn clear(&mut self) {
        self.held.clear();
    }

    /// How many claims are held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The refused claims, with why.
    pub fn refused(&self) -> impl Iterator<Item = (&(u32, String), &String)> {
        self.refused.iter()
    }

    /// Claims `local`'s NICs that are new or changed, releases those that
    /// left.
    pub async fn publish(
        &mut self,
        c: &mut Client,
        who: &Claimant<'_>,
        local: &Local,
    ) -> Result<()> {
        for ((vni, mac), nic) in &local.nics {
            let vpc = local.bridges.get(vni).and_then(|b| b.vpc.clone());
            let key = (*vni, mac.clone());
            let old = self.held.get(&key);
            if old.is_some_and(|(n, v)| n == nic && *v == vpc) {
                continue;
            }
            // Addresses this claim no longer has, in the VPC they were in.
            let dropped: Vec<String> = match old {
                Some((n, Some(v))) => n
                    .ips
                    .iter()
                    .filter(|ip| vpc.as_ref() != Some(v) || !nic.ips.contains(ip))
                    .map(|ip| who.ip_key(v, ip))
                    .collect(),
                _ => Vec::new(),
            };
            match claim(c, who, *vni, mac, nic, vpc.as_deref(), &dropped).await? {
                Ok(()) => {
                    self.refused.remove(&key);
                    self.held.insert(key, (nic.clone(), vpc));
                }
                Err(why) => {
                    if self.refused.get(&key) != Some(&why) {
                        tracing::warn!("{why}");
                        self.refused.insert(key, why);
                    }
                }
            }
        }
        self.refused.retain(|k, _| local.nics.contains_key(k));
        let gone: Vec<_> = self
            .held
            .keys()
            .filter(|k| !local.nics.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            let (nic, vpc) = self.held.remove(&key).expect("listed");
            let mut ops = vec![TxnOp::delete(who.endpoint_key(key.0, &key.1), None)];
            if let Some(v) = &vpc {
                ops.extend(
                    nic.ips
                        .iter()
                        .map(|ip| TxnOp::delete(who.ip_key(v, ip), None)),
                );
            }
            c.txn(Txn::new().and_then(ops)).await?;
        }
        Ok(())
    }
}

/// Claims one NIC: its endpoint key and, in VPC `vpc`, its addresses'
/// keys, releasing `dropped` address keys; Err(why) if another host
/// holds one of them.
async fn claim(
    c: &mut Client,
    who: &Claimant<'_>,
    vni: u32,
    mac: &str,
    nic: &LocalNic,
    vpc: Option<&str>,
    dropped: &[String],
) -> Result<std::result::Result<(), String>> {
    let ep_key = who.endpoint_key(vni, mac);
    let ip_keys: Vec<(String, &String)> = match vpc {
        Some(v) => nic.ips.iter().map(|ip| (who.ip_key(v, ip), ip)).collect(),
        None => Vec::new(),
    };
    let keys: Vec<&String> = std::iter::once(&ep_key)
        .chain(ip_keys.iter().map(|(k, _)| k))
        .collect();
    // 1. Who holds them now.
    let r = c
        .txn(
            Txn::new().and_then(
                keys.iter()
                    .map(|k| TxnOp::get(k.as_str(), None))
                    .collect::<Vec<_>>(),
            ),
        )
        .await?;
    let mut seen = Vec::with_capacity(keys.len());
    for (k, op) in keys.iter().zip(r.op_responses()) {
        let TxnOpResponse::Get(g) = op else {
            unreachable!("gets answer gets")
        };
        let kv = g.kvs().first();
        if let Some(kv) = kv {
            let holder = serde_json::from_slice::<serde_json::Value>(kv.value())
                .ok()
                .and_then(|v| v["host"].as_str().map(String::from))
                .unwrap_or_default();
            if holder != who.host {
                let what = match ip_keys.iter().find(|(ik, _)| ik == *k) {
                    Some((_, ip)) => format!("address {ip}"),
                    None => format!("MAC {mac}"),
                };
                return Ok(Err(format!(
                    "{what} of port {} (VNI {vni}) refused: host {holder} claims it",
                    nic.port
                )));
            }
        }
        seen.push(kv.map_or(0, |kv| kv.mod_revision()));
    }
    // 2. Written only if nothing changed since.
    let lease = Some(PutOptions::new().with_lease(who.lease));
    let compares: Vec<Compare> = keys
        .iter()
        .zip(&seen)
        .map(|(k, &rev)| match rev {
            0 => Compare::create_revision(k.as_str(), CompareOp::Equal, 0),
            r => Compare::mod_revision(k.as_str(), CompareOp::Equal, r),
        })
        .collect();
    let endpoint = serde_json::to_string(&Endpoint {
        host: who.host.into(),
        vtep: who.vtep.into(),
        port: nic.port.clone(),
        ips: nic.ips.clone(),
    })?;
    let mut puts = vec![TxnOp::put(ep_key.as_str(), endpoint, lease.clone())];
    for (k, _) in &ip_keys {
        let v = json!({"host": who.host, "vni": vni, "mac": mac}).to_string();
        puts.push(TxnOp::put(k.as_str(), v, lease.clone()));
    }
    puts.extend(
        dropped
            .iter()
            .filter(|k| !ip_keys.iter().any(|(ik, _)| ik == *k))
            .map(|k| TxnOp::delete(k.as_str(), None)),
    );
    let r = c.txn(Txn::new().when(compares).and_then(puts)).await?;
    if r.succeeded() {
        Ok(Ok(()))
    } else {
        // Someone wrote meanwhile: the next round reads again.
        Ok(Err(format!(
            "port {} (VNI {vni}): claim raced, retrying",
            nic.port
        )))
    }
}
