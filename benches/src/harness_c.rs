//! Harness C, convergence of a VPC across hosts: how long a container NIC
//! added on one host takes to be reachable from another host through
//! etcd, and what the agent costs when the VPC holds many endpoints.
//!
//! Two vswitchd hosts (A, B) on an af-packet underlay (a veth), VTEP
//! learning off, one vswitch-agent each on a one-member etcd, VPC `blue`
//! with subnets `a` (VNI 100, 172.16.0.0/16) and `b` (VNI 200,
//! 172.17.0.0/16). B has one container in `b`. The other endpoints of a
//! population are written straight into etcd as simulated hosts would
//! (100 endpoints per host, half in each subnet, VTEPs that do not
//! exist): B's agent applies them all, and B's router holds them.
//!
//! One trial: B's container pings a new address of subnet `a` every 2 ms
//! (`ping -D`, routed by B's router, which knows an address only from
//! etcd: no flood can answer it); then `port-add` of a TAP NIC with that
//! address on A. Convergence is the time from just before `port-add` to
//! the first echo reply's timestamp: A's plumbing, A's agent noticing
//! (`config-version`, every 20 ms), the claim's transaction, B's watch,
//! B's `tunnel-set`, and up to one ping interval. Then the NIC is deleted
//! and the trial waits until B's agent has applied its withdrawal.
//!
//! Agent cost per population: the resident memory of B's agent and of
//! B's vswitchd, and a restart of B's agent (SIGKILL, then a new one): its
//! list of every endpoint, its `tunnel-set` of each bridge (vswitchd
//! validating, publishing and saving the whole remote state), and the
//! time from its start until both bridges are applied.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{Client, Txn, TxnOp};
use serde_json::json;
use testbed::etcd::Etcd;
use testbed::netns::{Netns, Veth};
use testbed::process::Proc;
use testbed::vswitchd::{TempDir, Vswitchd};
use testbed::{unique, wait_until};

use crate::report::Section;

/// What to run.
#[derive(Debug, Clone)]
pub struct Opts {
    /// The vswitchd binary.
    pub vswitchd: PathBuf,
    /// The vswitch-agent binary.
    pub agent: PathBuf,
    /// Trials per population.
    pub trials: usize,
    /// Endpoints in the VPC during each series of trials (B's container
    /// included), ascending.
    pub populations: Vec<usize>,
}

const COLUMNS: &[&str] = &[
    "p50 ms",
    "p99 ms",
    "max ms",
    "failed",
    "port-add p50 ms",
    "B apply p50 ms",
    "agent RSS MB",
    "vswitchd RSS MB",
    "re-list ms",
    "tunnel-set ms",
    "restart to applied ms",
];

/// Endpoints per simulated host.
const PER_HOST: usize = 100;
/// Key prefix of the run.
const PREFIX: &str = "/vsbench/v1";

/// Runs harness C.
pub fn run(o: &Opts, command: &str) -> Result<Section> {
    let mut sec = Section::new(
        "C",
        "convergence: a NIC added on host A until host B's first routed ping, through etcd",
        command,
        COLUMNS,
    );
    sec.notes = vec![
        "Two vswitchd hosts on one machine (af-packet uplinks on a veth, workers on CPU 1 with \
         idle_sleep_us = 200), one vswitch-agent each (lease TTL 10 s) on a one-member etcd 3.4; \
         VTEP learning off, nothing static. Population: endpoints of VPC blue in etcd, B's container \
         included; the others are written straight into etcd by simulated hosts of 100 endpoints \
         each (half per subnet), and B applies them all."
            .into(),
        "A trial: B's container pings a new address of subnet a every 2 ms (ping -D; routed by B, \
         whose router knows an address only from etcd, so no flood answers); port-add of a TAP NIC \
         with that address on A; convergence = first echo reply's timestamp - the time just before \
         port-add. Then port-del, and the next trial starts once B's agent applied the withdrawal. \
         failed = trials without a reply in 10 s. port-add = A's answer to port-add (TAP made and \
         plumbed, snapshot published, config saved); B apply = B's tunnel-set of subnet a in the \
         trial, as its agent times it; the rest is A's agent noticing (every 20 ms), its claim \
         (two etcd transactions), B's watch and B's reading of its own ports."
            .into(),
        "Agent cost: resident memory (VmRSS) of B's agent and B's vswitchd with the population \
         applied; then B's agent is killed and started again: re-list = its list of every endpoint \
         (as it logs it), tunnel-set = the sum over both subnets of its tunnel-set requests \
         (vswitchd validating, publishing and saving the whole remote state of a bridge, as the \
         agent times it), restart to applied = from its start until both subnets are applied \
         (polled every 20 ms)."
            .into(),
        "No peer: Calico, Flannel and OVN are not measured on this machine (OVN's southbound \
         database would be the comparable store; a two-chassis OVN here is future work)."
            .into(),
    ];
    let etcd = Etcd::start().map_err(|e| anyhow!(e))?;
    let n = (std::process::id() % 200) as u8 + 20;
    let (a_if, b_if) = (unique("cva"), unique("cvb"));
    let _wire = Veth::create(&a_if, &b_if, None).map_err(|e| anyhow!(e))?;
    let a = Host::start(o, n, 1, &a_if, None)?;
    let b_ns = Netns::create(&unique("cvp")).map_err(|e| anyhow!(e))?;
    let b = Host::start(o, n, 2, &b_if, Some(&b_ns))?;
    let _agent_a = agent(o, &a, n, 1, &etcd.url)?;
    let mut agent_b = agent(o, &b, n, 2, &etcd.url)?;
    let trial_ns = Netns::create(&unique("cvt")).map_err(|e| anyhow!(e))?;

    let mut seeded = 0usize;
    let mut trial = 0usize;
    for &pop in &o.populations {
        let others = pop.saturating_sub(1);
        seed(&etcd.url, n, seeded, others)?;
        seeded = seeded.max(others);
        let base_a = seeded.div_ceil(2);
        let base_b = seeded / 2;
        if !applied(&agent_b, base_a, base_b, Duration::from_secs(120)) {
            bail!(
                "B's agent did not apply {seeded} simulated endpoints in 120 s: {:?}",
                tail(&agent_b)
            );
        }
        let mut conv = Vec::new();
        let mut adds = Vec::new();
        let mut applies = Vec::new();
        let mut failed = 0usize;
        for _ in 0..o.trials {
            let seen = agent_b.line_count();
            let t = one_trial(&a, &b_ns, &trial_ns, trial)?;
            adds.push(t.port_add_ms);
            match t.converged_ms {
                Some(ms) => conv.push(ms),
                None => failed += 1,
            }
            // B's agent's first application of bridge a in the trial.
            if let Some(ms) = agent_b.output()[seen..]
                .iter()
                .filter_map(|l| message(l))
                .filter(|m| m.starts_with("a: "))
                .find_map(|m| logged_ms(m, ""))
            {
                applies.push(ms);
            }
            a.vs.request(json!({"cmd": "port-del", "name": format!("t{trial}")}))
                .map_err(|e| anyhow!("port-del t{trial}: {e}"))?;
            trial += 1;
            if !applied(&agent_b, base_a, base_b, Duration::from_secs(30)) {
                bail!("B's agent did not apply a withdrawal: {:?}", tail(&agent_b));
            }
        }
        if conv.is_empty() {
            bail!("population {pop}: no trial converged");
        }
        let agent_rss = rss_mb(agent_b.pid());
        let vs_rss = rss_mb(b.vs.pid());
        // A new agent for B: lists everything and applies it anew.
        agent_b.signal(libc::SIGKILL);
        agent_b.wait_exit(Duration::from_secs(5));
        let started = Instant::now();
        agent_b = agent(o, &b, n, 2, &etcd.url)?;
        let both = |p: &Proc| {
            let out = p.output();
            let said = |head: &str| {
                out.iter()
                    .filter_map(|l| message(l))
                    .any(|m| m.starts_with(head))
            };
            said("a: ") && said("b: ")
        };
        if !wait_until(Duration::from_secs(120), || both(&agent_b)) {
            bail!("restarted agent applied nothing: {:?}", tail(&agent_b));
        }
        let restart_ms = started.elapsed().as_secs_f64() * 1e3;
        let out = agent_b.output();
        let relist = out
            .iter()
            .filter_map(|l| message(l))
            .find_map(|m| logged_ms(m, "listed "))
            .ok_or_else(|| anyhow!("the agent logged no list: {out:?}"))?;
        let set: f64 = out
            .iter()
            .filter_map(|l| message(l))
            .filter(|m| m.starts_with("a: ") || m.starts_with("b: "))
            .filter_map(|m| logged_ms(m, ""))
            .sum();
        conv.sort_by(f64::total_cmp);
        adds.sort_by(f64::total_cmp);
        applies.sort_by(f64::total_cmp);
        sec.row(
            "NIC added on A -> first routed ping from B",
            &format!("vswitchd + vswitch-agent, {pop} endpoints"),
            &[
                ("p50 ms", percentile(&conv, 0.50)),
                ("p99 ms", percentile(&conv, 0.99)),
                ("max ms", *conv.last().expect("not empty")),
                ("failed", failed as f64),
                ("port-add p50 ms", percentile(&adds, 0.50)),
                ("B apply p50 ms", percentile(&applies, 0.50)),
                ("agent RSS MB", agent_rss),
                ("vswitchd RSS MB", vs_rss),
                ("re-list ms", relist),
                ("tunnel-set ms", set),
                ("restart to applied ms", restart_ms),
            ],
            &format!("{} trials", o.trials),
        );
    }
    Ok(sec)
}

/// A host of the run.
struct Host {
    vs: Vswitchd,
    dir: TempDir,
    me: u8,
}

impl Host {
    /// Host `me` (1: A, 2: B) of underlay 10.`n`.2.0/24 on `uplink`; with
    /// a container in subnet b at 172.17.0.`me` in `container`.
    fn start(o: &Opts, n: u8, me: u8, uplink: &str, container: Option<&Netns>) -> Result<Host> {
        let dir = TempDir::new("vs-cv");
        let mut cfg = Vswitchd::config_header_idle(&dir, 256, "a", 200)
            + &format!(
                "vni = 100\nlearn_vteps = false\nvpc = \"blue\"\ngateway = \"172.16.255.254/16\"\n\n\
                 [[bridge]]\nname = \"b\"\nvni = 200\nlearn_vteps = false\nvpc = \"blue\"\n\
                 gateway = \"172.17.255.254/16\"\n\n[[vpc]]\nname = \"blue\"\n\n\
                 [vtep]\nuplink = \"uplink\"\nip = \"10.{n}.2.{me}/24\"\n\n\
                 [[port]]\nname = \"uplink\"\nkind = \"af-packet\"\niface = \"{uplink}\"\n"
            );
        if let Some(ns) = container {
            cfg += &format!(
                "\n[[port]]\nname = \"p\"\nkind = \"tap\"\nbridge = \"b\"\nnetns = \"{}\"\n\
                 mac = \"02:00:00:0c:00:{me:02x}\"\nipv4 = \"172.17.0.{me}/16\"\n\
                 gateway = \"172.17.255.254\"\nmtu = 1450\n",
                ns.name()
            );
        }
        let vs = Vswitchd::start(&o.vswitchd, &dir, &cfg).map_err(|e| anyhow!(e))?;
        Ok(Host { vs, dir, me })
    }
}

/// Starts `h`'s agent on `etcd`.
fn agent(o: &Opts, h: &Host, n: u8, me: u8, etcd: &str) -> Result<Proc> {
    let mut cmd = Command::new(&o.agent);
    cmd.args([
        "--etcd",
        etcd,
        "--host",
        &format!("host-{me}"),
        "--ttl",
        "10",
    ])
    .args(["--vtep", &format!("10.{n}.2.{}", h.me), "--prefix", PREFIX])
    .arg("--control")
    .arg(Vswitchd::control_socket(&h.dir));
    Proc::spawn(&format!("agent-{me}"), cmd).context("starting vswitch-agent")
}

/// Writes simulated endpoints `from..to` into etcd (transactions of 128
/// puts, etcd's default limit per transaction).
fn seed(url: &str, n: u8, from: usize, to: usize) -> Result<()> {
    if from >= to {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut c = Client::connect([url], None).await?;
        let all: Vec<usize> = (from..to).collect();
        for chunk in all.chunks(128) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|&i| {
                    let (k, v) = simulated(n, i);
                    TxnOp::put(k, v, None)
                })
                .collect();
            c.txn(Txn::new().and_then(ops)).await?;
        }
        Ok::<_, anyhow::Error>(())
    })
}

/// Simulated endpoint `i`: its key and value, as its host's agent would
/// write them. Even ones in subnet a, odd ones in b; host `i / 100`, whose
/// VTEP is on the underlay's subnet (10.`n`.2.10 and up), where nothing
/// answers.
fn simulated(n: u8, i: usize) -> (String, String) {
    let (vni, net) = if i % 2 == 0 { (100, 16) } else { (200, 17) };
    let j = i / 2;
    let host = i / PER_HOST;
    let mac = format!(
        "02:5e:00:{:02x}:{:02x}:{:02x}",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    );
    let value = json!({
        "host": format!("sim-{host}"),
        "vtep": format!("10.{n}.2.{}", 10 + host),
        "port": format!("sim{i}"),
        "ips": [format!("172.{net}.{}.{}", 1 + j / 250, 1 + j % 250)],
    });
    (format!("{PREFIX}/endpoints/{vni}/{mac}"), value.to_string())
}

/// Whether B's agent's latest applications hold `a` and `b` remote
/// stations in subnets a and b, waiting up to `timeout`.
fn applied(agent: &Proc, a: usize, b: usize, timeout: Duration) -> bool {
    let last = |out: &[String], bridge: &str| {
        let head = format!("{bridge}: ");
        out.iter()
            .rev()
            .filter_map(|l| message(l))
            .find(|m| m.starts_with(&head))
            .and_then(|l| {
                l.split(" remote VTEPs, ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
    };
    wait_until(timeout, || {
        let out = agent.output();
        last(&out, "a") == Some(a) && last(&out, "b").unwrap_or(0) == b
    })
}

/// What one trial measured.
struct Trial {
    /// From just before `port-add` to the first echo reply; None if none
    /// came in 10 s.
    converged_ms: Option<f64>,
    /// How long A's `port-add` took (its answer).
    port_add_ms: f64,
}

/// One trial: `t`'s NIC added on A.
fn one_trial(a: &Host, pinger: &Netns, ns: &Netns, t: usize) -> Result<Trial> {
    let ip = format!("172.16.{}.{}", 200 + t / 250, 1 + t % 250);
    let mut ping = pinger.command("ping");
    ping.args(["-D", "-n", "-i", "0.002", "-c", "5000", &ip]);
    let mut ping = Proc::spawn("ping", ping)?;
    // ping prints a line once it starts; the target does not exist yet,
    // so B's router answers Destination Host Unreachable (with `-w`,
    // ping would exit at the first error: `-c` instead, 10 s of pings).
    if !ping.wait_for_line(Duration::from_secs(5), |l| l.starts_with("PING")) {
        bail!("ping did not start: {:?}", ping.output());
    }
    let t0 = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    let added = Instant::now();
    a.vs.request(json!({"cmd": "port-add", "port": {
        "name": format!("t{t}"), "kind": "tap", "bridge": "a", "netns": ns.name(),
        "mac": format!("02:00:00:0d:{:02x}:{:02x}", t >> 8, t & 0xff),
        "ipv4": format!("{ip}/16"), "gateway": "172.16.255.254", "mtu": 1450,
    }}))
    .map_err(|e| anyhow!("port-add t{t}: {e}"))?;
    let port_add_ms = added.elapsed().as_secs_f64() * 1e3;
    let replied = ping.wait_for_line(Duration::from_secs(10), |l| l.contains("bytes from"));
    let out = ping.output();
    ping.signal(libc::SIGKILL);
    if !replied {
        return Ok(Trial {
            converged_ms: None,
            port_add_ms,
        });
    }
    let at = out
        .iter()
        .find(|l| l.contains("bytes from"))
        .and_then(|l| l.strip_prefix('[')?.split(']').next()?.parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no timestamp in {out:?}"))?;
    Ok(Trial {
        converged_ms: Some((at - t0) * 1e3),
        port_add_ms,
    })
}

/// An agent log line's message, after its timestamp, level and target
/// (`2026-11-30T04:19:35.198122Z  INFO vswitch_agent: a: ...`).
fn message(line: &str) -> Option<&str> {
    line.split_once(" vswitch_agent: ").map(|(_, m)| m)
}

/// The milliseconds a log line of the agent ends with ("... (applied in
/// 12.3 ms)", "... in 4.5 ms"), for lines starting with `head`.
fn logged_ms(line: &str, head: &str) -> Option<f64> {
    let rest = line.strip_prefix(head)?;
    let before = rest.trim_end_matches(')').strip_suffix(" ms")?;
    before.rsplit(' ').next()?.parse().ok()
}

/// The `q` quantile of sorted `v` (nearest rank; 0 if empty).
fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// VmRSS of `pid` in MB (0 if unknown).
fn rss_mb(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The last lines of an agent's log, for an error.
fn tail(p: &Proc) -> Vec<String> {
    let out = p.output();
    out[out.len().saturating_sub(10)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_figures_parse() {
        let line = "2026-11-30T04:19:35.198122Z  INFO vswitch_agent: a: 3 remote VTEPs, 7 remote stations (applied in 12.5 ms)";
        let m = message(line).unwrap();
        assert!(m.starts_with("a: "), "{m}");
        assert_eq!(logged_ms(m, ""), Some(12.5));
        assert_eq!(
            logged_ms("listed 10000 endpoints at revision 9 in 41.0 ms", "listed "),
            Some(41.0)
        );
        assert_eq!(logged_ms("a: nothing", ""), None);
        assert_eq!(message("vswitch-agent: a: old format"), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn simulated_endpoints_are_distinct_and_in_their_subnet() {
        let keys: std::collections::BTreeSet<String> =
            (0..10_000).map(|i| simulated(30, i).0).collect();
        assert_eq!(keys.len(), 10_000);
        let (k, v) = simulated(30, 9_999);
        assert!(k.ends_with("/endpoints/200/02:5e:00:00:27:0f"), "{k}");
        let v: serde_json::Value = serde_json::from_str(&v).unwrap();
        assert_eq!(v["ips"][0], "172.17.20.250");
        assert_eq!(v["vtep"], "10.30.2.109");
    }
}
