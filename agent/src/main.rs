//! `vswitch-agent`: one per host, beside its vswitchd. It keeps the host's
//! VPC endpoints in etcd and gives its vswitchd the other hosts' (remote
//! VTEPs and stations per VNI, through `tunnel-set`), so a VPC spans
//! hosts with no static tunnel config and no flood-and-learn.
//!
//! Keys (under `--prefix`, `/vswitch/v1` by default), each tied to the
//! host's lease, so a host that dies disappears from every other host
//! within the lease TTL:
//!
//! - `hosts/<host>`: `{"vtep": "10.0.0.1"}`;
//! - `endpoints/<vni>/<mac>`: `{"host": "h1", "vtep": "10.0.0.1",
//!   "port": "c1"}`. A claim is a transaction: created if absent, rewritten
//!   if this host owns it, refused (and logged) if another host does.
//!
//! Local endpoints come from vswitchd itself (`port-list`, `bridge-list`):
//! every NIC with a MAC in a bridge that has a VNI. No second source of
//! truth. Remote state: the agent lists `endpoints/`, watches from the
//! list's revision, re-lists after a lost watch, and applies per bridge
//! only what changed. While etcd is unreachable nothing is applied:
//! vswitchd forwards on the last state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

#[derive(Parser, Debug)]
#[command(
    about = "Shares this host's VPC endpoints through etcd and applies the others' to vswitchd"
)]
struct Args {
    /// etcd client URL (repeatable: the cluster's members).
    #[arg(long = "etcd", required = true)]
    etcd: Vec<String>,
    /// This host's name (unique in the deployment).
    #[arg(long)]
    host: String,
    /// This host's VTEP address (vswitchd's `[vtep] ip`).
    #[arg(long)]
    vtep: String,
    /// vswitchd's control socket.
    #[arg(long, default_value = "/run/vswitchd/vswitchd.sock")]
    control: PathBuf,
    /// Key prefix.
    #[arg(long, default_value = "/vswitch/v1")]
    prefix: String,
    /// Lease TTL in seconds: how long a dead host's endpoints outlive it.
    #[arg(long, default_value_t = 10)]
    ttl: i64,
}

/// An endpoint as stored in etcd.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Endpoint {
    host: String,
    vtep: String,
    port: String,
}

/// One request to vswitchd's control socket; its `result`.
async fn ask(control: &Path, req: Value) -> Result<Value> {
    let s = UnixStream::connect(control)
        .await
        .with_context(|| format!("vswitchd at {}", control.display()))?;
    let (r, mut w) = s.into_split();
    w.write_all(format!("{req}\n").as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    let v: Value = serde_json::from_str(&line)?;
    if v["ok"] == true {
        Ok(v["result"].clone())
    } else {
        bail!("vswitchd: {}", v["error"].as_str().unwrap_or("?"))
    }
}

/// This host's endpoints: (VNI, MAC) -> port, and VNI -> bridge, from
/// vswitchd's ports and bridges.
async fn local(control: &Path) -> Result<(BTreeMap<(u32, String), String>, BTreeMap<u32, String>)> {
    let bridges = ask(control, json!({"cmd": "bridge-list"})).await?;
    let mut vni_of = BTreeMap::new();
    let mut bridge_of = BTreeMap::new();
    for b in bridges.as_array().into_iter().flatten() {
        if let (Some(name), Some(vni)) = (b["name"].as_str(), b["vni"].as_u64()) {
            vni_of.insert(name.to_string(), vni as u32);
            bridge_of.insert(vni as u32, name.to_string());
        }
    }
    let ports = ask(control, json!({"cmd": "port-list"})).await?;
    let mut eps = BTreeMap::new();
    for p in ports.as_array().into_iter().flatten() {
        let (Some(name), Some(bridge), Some(mac)) =
            (p["name"].as_str(), p["bridge"].as_str(), p["mac"].as_str())
        else {
            continue;
        };
        let Some(&vni) = vni_of.get(bridge) else {
            continue;
        };
        if mac == "00:00:00:00:00:00" {
            continue;
        }
        eps.insert((vni, mac.to_string()), name.to_string());
    }
    Ok((eps, bridge_of))
}

/// A bridge's remote state: the VTEPs that get its floods and the
/// stations (MAC, VTEP) behind them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct BridgeRemote {
    vteps: BTreeSet<String>,
    stations: BTreeSet<(String, String)>,
}

/// The agent's state between rounds.
struct Agent {
    args: Args,
    lease: i64,
    /// What this host claimed: (VNI, MAC).
    claimed: BTreeSet<(u32, String)>,
    /// Every endpoint in etcd, by key.
    remote: BTreeMap<String, Endpoint>,
    /// What was applied per bridge.
    applied: BTreeMap<String, BridgeRemote>,
}

impl Agent {
    fn key(&self, vni: u32, mac: &str) -> String {
        format!("{}/endpoints/{vni}/{mac}", self.args.prefix)
    }

    /// Claims this host's endpoints and releases those that left.
    async fn publish(
        &mut self,
        c: &mut Client,
        eps: &BTreeMap<(u32, String), String>,
    ) -> Result<()> {
        for ((vni, mac), port) in eps {
            if self.claimed.contains(&(*vni, mac.clone())) {
                continue;
            }
            let key = self.key(*vni, mac);
            let value = serde_json::to_string(&Endpoint {
                host: self.args.host.clone(),
                vtep: self.args.vtep.clone(),
                port: port.clone(),
            })?;
            let put = TxnOp::put(
                key.clone(),
                value,
                Some(PutOptions::new().with_lease(self.lease)),
            );
            // Created if absent; someone else's is refused.
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([put])
                .or_else([TxnOp::get(key.clone(), None)]);
            let r = c.txn(txn).await?;
            if r.succeeded() {
                self.claimed.insert((*vni, mac.clone()));
                continue;
            }
            let owner = r.op_responses().into_iter().find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .and_then(|kv| serde_json::from_slice::<Endpoint>(kv.value()).ok()),
                _ => None,
            });
            match owner {
                Some(e) if e.host == self.args.host => {
                    // Ours from before a restart: take it under this lease.
                    let v = serde_json::to_string(&Endpoint { port: port.clone(), ..e })?;
                    c.put(key, v, Some(PutOptions::new().with_lease(self.lease))).await?;
                    self.claimed.insert((*vni, mac.clone()));
                }
                Some(e) => eprintln!(
                    "vswitch-agent: MAC {mac} of port {port} (VNI {vni}) refused: host {} claims it",
                    e.host
                ),
                None => {}
            }
        }
        let gone: Vec<(u32, String)> = self
            .claimed
            .iter()
            .filter(|k| !eps.contains_key(*k))
            .cloned()
            .collect();
        for (vni, mac) in gone {
            c.delete(self.key(vni, &mac), None).await?;
            self.claimed.remove(&(vni, mac));
        }
        Ok(())
    }

    /// Gives vswitchd the remote state of every bridge whose state changed.
    async fn apply(&mut self, bridge_of: &BTreeMap<u32, String>) -> Result<()> {
        let mut want: BTreeMap<String, BridgeRemote> = bridge_of
            .values()
            .map(|b| (b.clone(), Default::default()))
            .collect();
        let base = format!("{}/endpoints/", self.args.prefix);
        for (key, e) in &self.remote {
            if e.host == self.args.host {
                continue;
            }
            let Some((vni, mac)) = key.strip_prefix(&base).and_then(|k| k.split_once('/')) else {
                continue;
            };
            let Some(bridge) = vni.parse().ok().and_then(|v: u32| bridge_of.get(&v)) else {
                continue;
            };
            let w = want.get_mut(bridge).expect("every bridge has an entry");
            w.vteps.insert(e.vtep.clone());
            w.stations.insert((mac.to_string(), e.vtep.clone()));
        }
        for (bridge, w) in want {
            if self.applied.get(&bridge) == Some(&w) {
                continue;
            }
            let req = json!({
                "cmd": "tunnel-set",
                "bridge": bridge,
                "vteps": w.vteps,
                "stations": w.stations.iter().map(|(m, v)| json!({"mac": m, "vtep": v})).collect::<Vec<_>>(),
            });
            ask(&self.args.control, req).await?;
            eprintln!(
                "vswitch-agent: {bridge}: {} remote VTEPs, {} remote stations",
                w.vteps.len(),
                w.stations.len()
            );
            self.applied.insert(bridge, w);
        }
        Ok(())
    }
}

/// Lists the endpoints; the revision the list is at.
async fn list(c: &mut Client, prefix: &str) -> Result<(BTreeMap<String, Endpoint>, i64)> {
    let r = c
        .get(
            format!("{prefix}/endpoints/"),
            Some(GetOptions::new().with_prefix()),
        )
        .await?;
    let rev = r.header().map_or(0, |h| h.revision());
    let mut m = BTreeMap::new();
    for kv in r.kvs() {
        if let (Ok(k), Ok(e)) = (kv.key_str(), serde_json::from_slice::<Endpoint>(kv.value())) {
            m.insert(k.to_string(), e);
        }
    }
    Ok((m, rev))
}

/// One session with etcd: register, list, then watch and reconcile until
/// something fails (the caller reconnects).
async fn session(agent: &mut Agent) -> Result<()> {
    let mut c = Client::connect(agent.args.etcd.clone(), None).await?;
    agent.lease = c.lease_grant(agent.args.ttl, None).await?.id();
    agent.claimed.clear();
    let (mut keeper, mut acks) = c.lease_keep_alive(agent.lease).await?;
    c.put(
        format!("{}/hosts/{}", agent.args.prefix, agent.args.host),
        json!({"vtep": agent.args.vtep}).to_string(),
        Some(PutOptions::new().with_lease(agent.lease)),
    )
    .await?;
    let (remote, rev) = list(&mut c, &agent.args.prefix).await?;
    agent.remote = remote;
    let (_watcher, mut events) = c
        .watch(
            format!("{}/endpoints/", agent.args.prefix),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(rev + 1),
            ),
        )
        .await?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let keep_every = Duration::from_secs((agent.args.ttl / 3).max(1) as u64);
    let mut keep = tokio::time::interval(keep_every);
    let base = format!("{}/endpoints/", agent.args.prefix);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // vswitchd unreachable: nothing to publish or apply now.
                let Ok((eps, bridge_of)) = local(&agent.args.control).await else { continue };
                agent.publish(&mut c, &eps).await?;
                if let Err(e) = agent.apply(&bridge_of).await {
                    eprintln!("vswitch-agent: {e:#}");
                }
            }
            _ = keep.tick() => {
                keeper.keep_alive().await?;
                if let Some(a) = acks.message().await? {
                    if a.ttl() <= 0 {
                        bail!("lease {} expired", agent.lease);
                    }
                }
            }
            m = events.message() => {
                let Some(w) = m? else { bail!("watch ended") };
                if w.canceled() {
                    bail!("watch canceled (compacted at {})", w.compact_revision());
                }
                for ev in w.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let Ok(k) = kv.key_str() else { continue };
                    if !k.starts_with(&base) {
                        continue;
                    }
                    match ev.event_type() {
                        EventType::Put => {
                            if let Ok(e) = serde_json::from_slice::<Endpoint>(kv.value()) {
                                agent.remote.insert(k.to_string(), e);
                            }
                        }
                        EventType::Delete => {
                            agent.remote.remove(k);
                        }
                    }
                }
                if let Ok((_, bridge_of)) = local(&agent.args.control).await {
                    if let Err(e) = agent.apply(&bridge_of).await {
                        eprintln!("vswitch-agent: {e:#}");
                    }
                }
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.host.contains('/') {
        return Err(anyhow!("--host {:?}: no '/' in a host name", args.host));
    }
    let mut agent = Agent {
        args,
        lease: 0,
        claimed: BTreeSet::new(),
        remote: BTreeMap::new(),
        applied: BTreeMap::new(),
    };
    loop {
        tokio::select! {
            r = session(&mut agent) => {
                if let Err(e) = r {
                    eprintln!("vswitch-agent: etcd session ended: {e:#}; reconnecting (vswitchd keeps its state)");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
