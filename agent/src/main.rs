//! `vswitch-agent`: one per host, beside its vswitchd. It keeps the host's
//! VPC endpoints in etcd and gives its vswitchd the other hosts' (remote
//! VTEPs and stations with their addresses per VNI, through
//! `tunnel-set`), so a VPC spans hosts with no static tunnel config and
//! no flood-and-learn, and its router reaches remote endpoints.
//!
//! Keys (under `--prefix`, `/vswitch/v1` by default), each tied to the
//! host's lease, so a host that dies disappears from every other host
//! within the lease TTL:
//!
//! - `hosts/<host>`: `{"vtep": "10.0.0.1"}`;
//! - `endpoints/<vni>/<mac>`: `{"host", "vtep", "port", "ips"}`;
//! - `ips/<vpc>/<ip>`: `{"host", "vni", "mac"}`: an address belongs to one
//!   endpoint per VPC.
//!
//! Claims are transactions (see [`claims`]). Local endpoints come from
//! vswitchd itself (`port-list`, `bridge-list`): every NIC with a
//! configured MAC in a bridge that has a VNI. No second source of truth:
//! what changed while etcd was unreachable is simply what differs when
//! it is back. Remote state: the agent lists `endpoints/`, watches from
//! the list's revision, resumes a lost watch from the last revision it
//! saw (re-listing only when etcd compacted past it), and applies per
//! bridge only what changed. While etcd is unreachable nothing is
//! applied: vswitchd forwards on the last state.

mod claims;
mod vswitchd;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions, WatchResponse,
};
use serde_json::json;

use claims::{Claimant, Claims};
use vswitchd::{ask, local, Local};

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
    /// Log lines as text or JSON objects (timestamps and levels either
    /// way; `VSWITCHD_LOG` filters, as for vswitchd).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How log lines look (as vswitchd's `[log] format`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

/// Logs on stderr with timestamps and levels, filtered by `VSWITCHD_LOG`
/// (tracing's EnvFilter syntax; `info` when unset).
fn init_log(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VSWITCHD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

/// An endpoint as stored in etcd.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Endpoint {
    host: String,
    vtep: String,
    port: String,
    /// Its IPv4 and IPv6 addresses (what a VPC's router routes to).
    #[serde(default)]
    ips: Vec<String>,
}

/// A bridge's remote state: the VTEPs that get its floods and the
/// stations (MAC, VTEP, addresses) behind them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct BridgeRemote {
    vteps: BTreeSet<String>,
    stations: BTreeSet<(String, String, Vec<String>)>,
}

/// Entries of one bridge the agent leaves out of one application at most
/// before it gives up on the bridge until the next change.
const MAX_LEFT_OUT: usize = 16;

/// A remote entry vswitchd refused, by its position in the `tunnel-set`.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// The `k`-th VTEP.
    Vtep(usize),
    /// The `j`-th station.
    Station(usize),
}

/// Which entry a refused `tunnel-set` names: vswitchd validates the
/// bridge's new state as a config and its error names the field
/// (`bridge[0].remote_vteps[3]`, `bridge[0].remote_mac[7].ips`), in the
/// order the request listed them.
fn refused_entry(error: &str) -> Option<Refused> {
    let index = |key: &str| {
        let rest = &error[error.find(key)? + key.len()..];
        rest[..rest.find(']')?].parse().ok()
    };
    index("remote_vteps[")
        .map(Refused::Vtep)
        .or_else(|| index("remote_mac[").map(Refused::Station))
}

/// How long one etcd request may take before the session is given up
/// (and the agent reconnects, possibly to another member).
const DEADLINE: Duration = Duration::from_secs(5);

/// The agent's state between rounds and sessions.
struct Agent {
    args: Args,
    lease: i64,
    claims: Claims,
    /// Every endpoint in etcd, by key, as of `rev`.
    remote: BTreeMap<String, Endpoint>,
    /// The last revision seen (list or watch); a new session watches from
    /// the next one.
    rev: Option<i64>,
    /// What was applied per bridge.
    applied: BTreeMap<String, BridgeRemote>,
    /// Which of `args.etcd` the next session talks to.
    member: usize,
    /// Per bridge: remote entries vswitchd refused, with why.
    left_out: BTreeMap<String, Vec<String>>,
    /// vswitchd's `config-version` when its ports and bridges were last
    /// read: they are read again only when it moves (or every half
    /// second, which also retries refused claims).
    version: Option<u64>,
}

impl Agent {
    fn endpoints_prefix(&self) -> String {
        format!("{}/endpoints/", self.args.prefix)
    }

    /// Gives vswitchd the remote state of every bridge whose state
    /// changed; a station's addresses only in a VPC's bridge. A VPC's
    /// bridge also takes the VTEP of every host with an endpoint anywhere
    /// in the VPC: routing is asymmetric, so such a host sends into this
    /// subnet's VNI (and must be a tunnel port of it here) even when it
    /// has no endpoint in it.
    async fn apply(&mut self, local: &Local) -> Result<()> {
        let mut want: BTreeMap<&str, BridgeRemote> = local
            .bridges
            .values()
            .map(|b| (b.name.as_str(), Default::default()))
            .collect();
        let base = self.endpoints_prefix();
        let mut vpc_vteps: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for (key, e) in &self.remote {
            if e.host == self.args.host {
                continue;
            }
            let Some((vni, mac)) = key.strip_prefix(&base).and_then(|k| k.split_once('/')) else {
                continue;
            };
            let Some(b) = vni.parse().ok().and_then(|v: u32| local.bridges.get(&v)) else {
                continue;
            };
            let w = want
                .get_mut(b.name.as_str())
                .expect("every bridge has an entry");
            w.vteps.insert(e.vtep.clone());
            if let Some(v) = &b.vpc {
                vpc_vteps.entry(v).or_default().insert(e.vtep.clone());
            }
            let ips = if b.vpc.is_some() {
                e.ips.clone()
            } else {
                Vec::new()
            };
            w.stations.insert((mac.to_string(), e.vtep.clone(), ips));
        }
        for b in local.bridges.values() {
            if let Some(vteps) = b.vpc.as_deref().and_then(|v| vpc_vteps.get(v)) {
                let w = want
                    .get_mut(b.name.as_str())
                    .expect("every bridge has an entry");
                w.vteps.extend(vteps.iter().cloned());
            }
        }
        for (bridge, w) in want {
            if self.applied.get(bridge) == Some(&w) {
                continue;
            }
            let t = std::time::Instant::now();
            let (set, left_out) = match self.set_bridge(bridge, &w).await {
                Ok(r) => r,
                // Retried at the next change or round; the other bridges
                // go on.
                Err(e) => {
                    tracing::warn!("{bridge}: {e:#}");
                    continue;
                }
            };
            tracing::info!(
                "{bridge}: {} remote VTEPs, {} remote stations (applied in {:.1} ms)",
                set.vteps.len(),
                set.stations.len(),
                t.elapsed().as_secs_f64() * 1e3
            );
            if self.left_out.get(bridge) != Some(&left_out) {
                for why in &left_out {
                    tracing::warn!("{bridge}: left out {why}");
                }
            }
            self.left_out.insert(bridge.to_string(), left_out);
            self.applied.insert(bridge.to_string(), w);
        }
        Ok(())
    }

    /// Gives vswitchd `w` as `bridge`'s remote state (`tunnel-set`). An
    /// entry vswitchd refuses (a VTEP it cannot reach, an address outside
    /// the subnet: another host's mistake, or a forged record in etcd) is
    /// left out and the rest applied again, up to [`MAX_LEFT_OUT`] times:
    /// one bad record must not hold back every other endpoint of the
    /// bridge on every host. What was set, and what was left out and why.
    async fn set_bridge(
        &self,
        bridge: &str,
        w: &BridgeRemote,
    ) -> Result<(BridgeRemote, Vec<String>)> {
        let mut w = w.clone();
        let mut left_out = Vec::new();
        loop {
            let req = json!({
                "cmd": "tunnel-set",
                "bridge": bridge,
                "vteps": w.vteps,
                "stations": w.stations.iter().map(|(m, v, ips)| json!({"mac": m, "vtep": v, "ips": ips})).collect::<Vec<_>>(),
            });
            let e = match ask(&self.args.control, req).await {
                Ok(_) => return Ok((w, left_out)),
                Err(e) => e,
            };
            let why = format!("{e:#}");
            if left_out.len() >= MAX_LEFT_OUT {
                return Err(e);
            }
            match refused_entry(&why) {
                Some(Refused::Vtep(k)) => {
                    let Some(v) = w.vteps.iter().nth(k).cloned() else {
                        return Err(e);
                    };
                    w.vteps.remove(&v);
                    w.stations.retain(|s| s.1 != v);
                    left_out.push(format!("VTEP {v} and its stations: {why}"));
                }
                Some(Refused::Station(j)) => {
                    let Some(s) = w.stations.iter().nth(j).cloned() else {
                        return Err(e);
                    };
                    w.stations.remove(&s);
                    left_out.push(format!("station {} behind {}: {why}", s.0, s.1));
                }
                None => return Err(e),
            }
        }
    }

    /// Takes a watch response's events into `remote`; false if the watch
    /// was canceled because etcd compacted past its revision.
    fn take(&mut self, w: &WatchResponse) -> bool {
        if w.canceled() {
            if w.compact_revision() > 0 {
                // What we missed is gone from etcd's history: list anew.
                self.rev = None;
            }
            return false;
        }
        let base = self.endpoints_prefix();
        for ev in w.events() {
            let Some(kv) = ev.kv() else { continue };
            let Ok(k) = kv.key_str() else { continue };
            if !k.starts_with(&base) {
                continue;
            }
            match ev.event_type() {
                EventType::Put => {
                    if let Ok(e) = serde_json::from_slice::<Endpoint>(kv.value()) {
                        self.remote.insert(k.to_string(), e);
                    }
                }
                EventType::Delete => {
                    self.remote.remove(k);
                }
            }
            self.rev = Some(self.rev.unwrap_or(0).max(kv.mod_revision()));
        }
        if let Some(h) = w.header() {
            self.rev = Some(self.rev.unwrap_or(0).max(h.revision()));
        }
        true
    }

    /// Tells vswitchd what the agent is doing (`vswitchctl agent show`).
    async fn report(&self, etcd: &str) {
        let held = self.claims.held();
        let state = json!({
            "host": self.args.host,
            "vtep": self.args.vtep,
            "etcd": etcd,
            "revision": self.rev,
            "lease": format!("{:x}", self.lease),
            "local_endpoints": held,
            "remote_endpoints": self.remote.values().filter(|e| e.host != self.args.host).count(),
            "refused": self.claims.refused().map(|(_, why)| why.clone()).collect::<Vec<_>>(),
            "left_out": self.left_out.values().flatten().collect::<Vec<_>>(),
        });
        // An older vswitchd without the verb: nothing to show there.
        let _ = ask(
            &self.args.control,
            json!({"cmd": "agent-report", "state": state}),
        )
        .await;
    }
}

/// How often the agent asks vswitchd whether its config changed: what a
/// new NIC waits at most before its claim goes to etcd. One short request
/// on the control socket (vswitchd serves it every 10 ms anyway).
const CHANGES_POLL: Duration = Duration::from_millis(20);

/// vswitchd's `config-version`, if it answers.
async fn config_version(control: &std::path::Path) -> Option<u64> {
    ask(control, json!({"cmd": "config-version"}))
        .await
        .ok()
        .and_then(|v| v["version"].as_u64())
}

/// Reads this host's NICs and bridges from vswitchd, publishes their
/// claims and applies the remote state to them; `version` is vswitchd's
/// `config-version` read just before (a change after it is seen next
/// time). vswitchd unreachable: nothing to publish or apply now. Fails
/// only if etcd does.
async fn sync_local(agent: &mut Agent, c: &mut Client, version: Option<u64>) -> Result<()> {
    let Ok(l) = local(&agent.args.control).await else {
        return Ok(());
    };
    let who = Claimant {
        host: &agent.args.host,
        vtep: &agent.args.vtep,
        prefix: &agent.args.prefix,
        lease: agent.lease,
    };
    tokio::time::timeout(DEADLINE, agent.claims.publish(c, &who, &l))
        .await
        .map_err(|_| anyhow!("etcd: publishing claims took over {DEADLINE:?}"))??;
    if let Err(e) = agent.apply(&l).await {
        tracing::warn!("{e:#}");
    }
    agent.version = version;
    Ok(())
}

/// Lists the endpoints; the revision the list is at.
async fn list(c: &mut Client, prefix: &str) -> Result<(BTreeMap<String, Endpoint>, i64)> {
    let r = c.get(prefix, Some(GetOptions::new().with_prefix())).await?;
    let rev = r.header().map_or(0, |h| h.revision());
    let mut m = BTreeMap::new();
    for kv in r.kvs() {
        if let (Ok(k), Ok(e)) = (kv.key_str(), serde_json::from_slice::<Endpoint>(kv.value())) {
            m.insert(k.to_string(), e);
        }
    }
    Ok((m, rev))
}

/// One session with etcd: register, list (or resume), then watch and
/// reconcile until something fails (the caller reconnects, to the next
/// member).
///
/// A session talks to one member, as etcd's own Go client does between
/// failovers: the etcd-client crate's balanced channel over all members
/// keeps sending a new session's requests to a dead one too ("tcp connect
/// error" on every attempt while one member of three is down: found by
/// the three-host test), whereas any live member of a quorum serves
/// every request (it forwards to the leader), and one without a quorum
/// fails the request's deadline, which moves the agent on.
async fn session(agent: &mut Agent) -> Result<()> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    let member = agent.args.etcd[agent.member % agent.args.etcd.len()].clone();
    let mut c = tokio::time::timeout(DEADLINE, Client::connect([member.as_str()], Some(opts)))
        .await
        .map_err(|_| anyhow!("etcd {member}: no connection within {DEADLINE:?}"))?
        .with_context(|| format!("etcd {member}"))?;
    let within = |what: &'static str| move |_| anyhow!("etcd: {what} took over {DEADLINE:?}");
    agent.lease = tokio::time::timeout(DEADLINE, c.lease_grant(agent.args.ttl, None))
        .await
        .map_err(within("lease grant"))??
        .id();
    agent.claims.clear();
    let (mut keeper, mut acks) = c.lease_keep_alive(agent.lease).await?;
    c.put(
        format!("{}/hosts/{}", agent.args.prefix, agent.args.host),
        json!({"vtep": agent.args.vtep}).to_string(),
        Some(PutOptions::new().with_lease(agent.lease)),
    )
    .await?;
    let from = match agent.rev {
        Some(rev) => rev + 1,
        None => {
            let t = std::time::Instant::now();
            let (remote, rev) = list(&mut c, &agent.endpoints_prefix()).await?;
            tracing::info!(
                "listed {} endpoints at revision {rev} in {:.1} ms",
                remote.len(),
                t.elapsed().as_secs_f64() * 1e3
            );
            agent.remote = remote;
            agent.rev = Some(rev);
            rev + 1
        }
    };
    let (_watcher, mut events) = c
        .watch(
            agent.endpoints_prefix(),
            Some(WatchOptions::new().with_prefix().with_start_revision(from)),
        )
        .await?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut changes = tokio::time::interval(CHANGES_POLL);
    changes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut keep = tokio::time::interval(Duration::from_secs((agent.args.ttl / 3).max(1) as u64));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = config_version(&agent.args.control).await;
                sync_local(agent, &mut c, now).await?;
                agent.report("connected").await;
            }
            _ = changes.tick() => {
                let now = config_version(&agent.args.control).await;
                if now.is_some() && now != agent.version {
                    sync_local(agent, &mut c, now).await?;
                    agent.report("connected").await;
                }
            }
            _ = keep.tick() => {
                keeper.keep_alive().await?;
                let ack = tokio::time::timeout(DEADLINE, acks.message())
                    .await
                    .map_err(within("lease keep-alive"))??;
                if ack.is_some_and(|a| a.ttl() <= 0) {
                    bail!("lease {:x} expired", agent.lease);
                }
            }
            m = events.message() => {
                let Some(w) = m? else { bail!("watch ended") };
                if !agent.take(&w) {
                    bail!("watch canceled (compacted at {})", w.compact_revision());
                }
                if let Ok(l) = local(&agent.args.control).await {
                    if let Err(e) = agent.apply(&l).await {
                        tracing::warn!("{e:#}");
                    }
                }
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    init_log(args.log_format);
    if args.host.contains('/') {
        return Err(anyhow!("--host {:?}: no '/' in a host name", args.host));
    }
    let mut agent = Agent {
        args,
        lease: 0,
        claims: Claims::default(),
        remote: BTreeMap::new(),
        rev: None,
        applied: BTreeMap::new(),
        member: 0,
        left_out: BTreeMap::new(),
        version: None,
    };
    loop {
        tokio::select! {
            r = session(&mut agent) => {
                if let Err(e) = r {
                    let member = &agent.args.etcd[agent.member % agent.args.etcd.len()];
                    tracing::warn!("etcd session with {member} ended: {e:#}; reconnecting (vswitchd keeps its state)");
                    agent.report("unreachable").await;
                    agent.member += 1;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_entry_is_found_by_its_field() {
        assert_eq!(
            refused_entry(
                "vswitchd: field `bridge[0].remote_vteps[3]`: 10.73.3.1 is off the VTEP's subnet"
            ),
            Some(Refused::Vtep(3))
        );
        assert_eq!(
            refused_entry("vswitchd: field `bridge[2].remote_mac[17].ips`: 10.9.9.9 is not"),
            Some(Refused::Station(17))
        );
        assert_eq!(refused_entry("vswitchd: no bridge named \"x\""), None);
        assert_eq!(refused_entry("field `bridge[0].remote_vteps[x]`"), None);
    }
}
