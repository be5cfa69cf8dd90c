//! Bringing the switch up, running it, and taking it down cleanly.
//!
//! Order matters: machine checks (preflight) before EAL, so a missing
//! hugepage reservation or netns gives a clear message instead of a DPDK
//! error; ports before workers; on exit workers stop first (their tx
//! buffers flushed), then ports are closed (TAPs vanish from their
//! containers, vhost sockets are removed), then the mempool and EAL go
//! (hugepage memory released).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vswitch::security::Security;
use vswitch::{BridgeId, MacAddr, PortId, SwitchBuilder, MAX_BURST, MAX_PORTS};

use crate::config::{Config, PortKind};
use crate::control::{ControlServer, Request};
use crate::datapath::{Datapath, RxQueue, Shared};
use crate::dpdk::eal::Eal;
use crate::dpdk::mempool::{Mempool, PoolHandle};
use crate::dpdk::{self, lcore};
use crate::ports::{self, Port};
use crate::stats;
use crate::vtep::Vtep;
use crate::worker::Worker;

/// mbuf data room: 2048 bytes of frame (MTU 1500 plus tags, in one segment)
/// behind DPDK's 128-byte headroom (room to prepend tunnel headers).
const MBUF_DATA_ROOM: u16 = 2048 + 128;
const MEMPOOL_CACHE: u32 = 256;

/// The EAL command line for a config.
pub fn eal_args(cfg: &Config) -> Vec<String> {
    let e = &cfg.eal;
    let mut lcores = vec![e.main_lcore.to_string()];
    lcores.extend(cfg.workers.cores.iter().map(|c| c.to_string()));
    let mut a = vec![
        "vswitchd".to_string(),
        "-l".into(),
        lcores.join(","),
        "--main-lcore".into(),
        e.main_lcore.to_string(),
        "--file-prefix".into(),
        e.file_prefix.clone(),
        "-m".into(),
        e.memory_mb.to_string(),
        "--no-telemetry".into(),
    ];
    if e.in_memory {
        a.push("--in-memory".into());
    }
    if let Some(d) = &e.huge_dir {
        a.extend(["--huge-dir".into(), d.clone()]);
    }
    if let Some(l) = &e.log_level {
        a.push(format!("--log-level={l}"));
    }
    let pci: Vec<&String> = cfg
        .ports
        .iter()
        .filter_map(|p| match &p.kind {
            PortKind::Pci { address } => Some(address),
            _ => None,
        })
        .collect();
    if pci.is_empty() {
        a.push("--no-pci".into());
    }
    for addr in pci {
        a.extend(["-a".into(), addr.clone()]);
    }
    a
}

/// Free 2 MB-or-larger hugepage memory in MB, from /proc/meminfo.
fn free_hugepage_mb() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    field("HugePages_Free:") * field("Hugepagesize:") / 1024
}

/// Checks the machine can run this config, before DPDK is touched.
pub fn preflight(cfg: &Config) -> Result<()> {
    let free = free_hugepage_mb();
    if free < u64::from(cfg.eal.memory_mb) {
        bail!(
            "vswitchd needs {} MB of hugepage memory (eal.memory_mb) but only {free} MB are free.\n\
             Reserve 2 MB hugepages with:\n  echo 1024 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages\n\
             and make sure hugetlbfs is mounted (mount -t hugetlbfs nodev /dev/hugepages), \
             or run scripts/setup.sh as root.",
            cfg.eal.memory_mb
        );
    }
    let n_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    for c in cfg
        .workers
        .cores
        .iter()
        .chain(std::iter::once(&cfg.eal.main_lcore))
    {
        if *c >= n_cpus {
            bail!("core {c} does not exist: this machine has CPUs 0-{} (workers.cores, eal.main_lcore)", n_cpus - 1);
        }
    }
    ports::claim_socket_path(&cfg.control.socket)
        .map_err(|e| anyhow::anyhow!("control socket: {e}"))?;
    for p in &cfg.ports {
        ports::preflight(p)?;
    }
    Ok(())
}

fn pool_size(cfg: &Config) -> u32 {
    let n_workers = cfg.workers.cores.len() as u32;
    let mut n: u32 = cfg
        .ports
        .iter()
        .map(|p| {
            u32::from(p.rx_queues) * u32::from(p.rx_desc)
                + n_workers * u32::from(p.tx_desc)
                + ports::extra_mbufs(p)
        })
        .sum();
    // Tx buffers, rx bursts and per-lcore caches.
    n += n_workers * (MAX_PORTS as u32 + 2) * MAX_BURST as u32;
    n += (n_workers + 1) * MEMPOOL_CACHE * 2;
    // rte_mempool is most memory-efficient at 2^k - 1 elements.
    (n.max(8192) + 1).next_power_of_two() - 1
}

/// The datapath snapshot for a set of open ports, with `security` as its
/// security stage and the VTEP's tunnel ports. With `prev`, MAC tables
/// carry over.
fn build_datapath(
    cfg: &Config,
    ports: &[Option<Port>],
    n_workers: usize,
    prev: Option<&Datapath>,
    security: Security,
    vtep: Option<&Vtep>,
    pool: PoolHandle,
) -> Result<Datapath> {
    let mut b = SwitchBuilder::new();
    let ids: Vec<(String, BridgeId)> = cfg
        .bridges
        .iter()
        .map(|c| (c.name.clone(), b.bridge(c.clone())))
        .collect();
    if let Some(v) = vtep {
        v.attach(cfg, &mut b, &ids);
    }
    let mut tx_port = [None; MAX_PORTS];
    let mut rx_queues = vec![Vec::new(); n_workers];
    let mut rr = 0;
    for (i, port) in ports.iter().enumerate() {
        let Some(port) = port else { continue };
        let pid = PortId(i as u16);
        if let Some(name) = &port.spec.bridge {
            let (_, bid) = ids
                .iter()
                .find(|(n, _)| n == name)
                .expect("validated bridge name");
            b.attach(pid, *bid);
            for &mac in &port.spec.static_macs {
                b.static_mac(*bid, mac, pid);
            }
        }
        tx_port[i] = Some(port.eth.id());
        for q in 0..port.spec.rx_queues {
            let w = match &port.spec.rx_workers {
                Some(list) => list[usize::from(q)],
                None => {
                    rr += 1;
                    (rr - 1) % n_workers
                }
            };
            rx_queues[w].push(RxQueue {
                port: pid,
                dpdk_port: port.eth.id(),
                queue: q,
            });
        }
    }
    let switch = b
        .build(prev.map(|p| &p.switch))
        .context("building the switch topology")?;
    Ok(Datapath {
        switch,
        tx_port,
        rx_queues,
        security,
        vtep: vtep.map(|v| v.path(cfg, &ids, pool)),
    })
}

/// Which switch ports NICs occupy (tunnel ports take the others).
fn nic_ports(ports: &[Option<Port>]) -> Vec<bool> {
    ports.iter().map(Option::is_some).collect()
}

/// Nanoseconds since `epoch` (a TSC value) at `hz`.
fn ns_since(epoch: u64, hz: u64) -> u64 {
    (u128::from(dpdk::rdtsc().wrapping_sub(epoch)) * 1_000_000_000 / u128::from(hz.max(1))) as u64
}

/// Applies a changed config file (SIGHUP): security groups, QoS policies,
/// session timeouts and the ports' group and policy names. Anything else
/// needs a restart (ports and bridges are hot-plugged through the control
/// socket, not by editing the file). The new snapshot is built off the data
/// path and published atomically; workers switch between bursts.
fn reload(
    path: &std::path::Path,
    cfg: &mut Config,
    plant: &Plant,
    generation: &mut u32,
    now_ns: u64,
) -> Result<()> {
    let new = crate::config::load(path)?;
    let strip = |c: &Config| {
        let mut c = c.clone();
        for p in &mut c.ports {
            p.ingress_group = None;
            p.egress_group = None;
            p.ingress_qos = None;
            p.egress_qos = None;
        }
        (
            c.eal, c.workers, c.control, c.bridges, c.ports, c.vtep, c.vnis,
        )
    };
    if strip(&new) != strip(cfg) {
        bail!(
            "only security groups, QoS policies, [sessions] timeouts and the ports' \
             ingress/egress group and QoS fields change at run time; restart vswitchd for the rest"
        );
    }
    for w in &new.warnings {
        eprintln!("vswitchd: warning: {w}");
    }
    let sessions = Arc::clone(plant.shared.load().security.sessions());
    let security = crate::security::build(&new, Some(sessions), *generation + 1, now_ns);
    plant.publish(&new, security)?;
    *generation += 1;
    *cfg = new;
    Ok(())
}

/// What snapshots are built from besides the config: the open ports, the
/// VTEP's tunnels, the pool; and where they are published.
struct Plant<'a> {
    ports: &'a [Option<Port>],
    shared: &'a Shared,
    vtep: Option<&'a Vtep>,
    pool: PoolHandle,
}

impl Plant<'_> {
    /// Builds a snapshot of `cfg` with `security` and publishes it (MAC
    /// tables carry over).
    fn publish(&self, cfg: &Config, security: Security) -> Result<()> {
        let old = self.shared.load();
        let dp = build_datapath(
            cfg,
            self.ports,
            cfg.workers.cores.len(),
            Some(&old),
            security,
            self.vtep,
            self.pool,
        )?;
        drop(old);
        if !self.shared.publish(dp, Duration::from_secs(5)) {
            bail!("a worker did not pick up the new snapshot within 5 s");
        }
        Ok(())
    }
}

/// Runs the switch until SIGINT/SIGTERM. Prints a `vswitchd: ready` line on
/// stdout once the ports are up and the workers run (the demo and tests wait
/// for it).
pub fn run(mut cfg: Config, config_path: Option<std::path::PathBuf>) -> Result<()> {
    preflight(&cfg)?;
    let n_workers = cfg.workers.cores.len();
    let eal = Eal::init(&eal_args(&cfg))?;
    let lcores = lcore::worker_lcores();
    if lcores.len() != n_workers {
        bail!(
            "EAL started {} worker lcores, the config asks for {n_workers}",
            lcores.len()
        );
    }
    let pool = Mempool::new(
        "vswitchd_mbufs",
        pool_size(&cfg),
        MEMPOOL_CACHE,
        MBUF_DATA_ROOM,
    )?;

    let mut ports: Vec<Option<Port>> = Vec::new();
    for (i, spec) in cfg.ports.iter().enumerate() {
        let p = Port::open(spec, i, n_workers, &pool)?;
        eprintln!(
            "vswitchd: port {} ({}) up as DPDK port {}",
            spec.name,
            spec.kind.name(),
            p.eth.id()
        );
        ports.push(Some(p));
    }
    let hz = dpdk::tsc_hz();
    let epoch = dpdk::rdtsc();
    let generation = 1;
    let mut vtep = match &cfg.vtep {
        Some(v) => {
            let i = cfg
                .ports
                .iter()
                .position(|p| p.name == v.uplink)
                .expect("validated uplink");
            let mac = ports[i].as_ref().expect("uplink is open").eth.mac();
            Some(Vtep::new(&cfg, PortId(i as u16), mac, &nic_ports(&ports))?)
        }
        None => None,
    };
    let security = crate::security::build(&cfg, None, generation, 0);
    let dp = build_datapath(
        &cfg,
        &ports,
        n_workers,
        None,
        security,
        vtep.as_ref(),
        pool.handle(),
    )?;
    let shared = Arc::new(Shared::new(dp, n_workers, cfg.workers.idle_sleep_us, epoch));
    for (i, &l) in lcores.iter().enumerate() {
        let s = Arc::clone(&shared);
        lcore::launch(l, move || Worker::new(i).run(&s)).map_err(anyhow::Error::msg)?;
    }

    let term = Arc::new(AtomicBool::new(false));
    let dump = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&term))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&dump))?;
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))?;
    let control = ControlServer::bind(&cfg.control.socket)
        .with_context(|| format!("control socket {}", cfg.control.socket.display()))?;
    println!(
        "vswitchd: ready: {} ports, {} workers, control socket {}",
        ports.len(),
        n_workers,
        cfg.control.socket.display()
    );

    let interval = Duration::from_secs(u64::from(cfg.stats.interval_secs));
    let mut last_stats = Instant::now();
    let mut last_sweep = Instant::now();
    let mut generation = generation;
    while !term.load(Ordering::Relaxed) {
        match &mut vtep {
            Some(v) => {
                if v.serve(&cfg, &nic_ports(&ports), Duration::from_millis(10))
                    .rebuild
                {
                    let plant = Plant {
                        ports: &ports,
                        shared: &shared,
                        vtep: Some(v),
                        pool: pool.handle(),
                    };
                    // Tunnels changed, not the rules: the stage is kept.
                    if let Err(e) = plant.publish(&cfg, shared.load().security.clone()) {
                        eprintln!("vswitchd: tunnel update not applied: {e:#}");
                    }
                }
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
        let now_secs = (ns_since(epoch, hz) / 1_000_000_000) as u32;
        if hup.swap(false, Ordering::Relaxed) {
            match &config_path {
                Some(path) => match reload(path, &mut cfg, &Plant { ports: &ports, shared: &shared, vtep: vtep.as_ref(), pool: pool.handle() }, &mut generation, ns_since(epoch, hz)) {
                    Ok(()) => eprintln!("vswitchd: reloaded {} (ruleset generation {generation})", path.display()),
                    Err(e) => eprintln!("vswitchd: reload of {} refused, still running the old config: {e:#}", path.display()),
                },
                None => eprintln!("vswitchd: SIGHUP ignored: running the embedded config, there is no file to reload"),
            }
        }
        if dump.swap(false, Ordering::Relaxed)
            || (!interval.is_zero() && last_stats.elapsed() >= interval)
        {
            print!(
                "{}",
                report(&ports, vtep.as_ref(), &shared, &cfg.workers.cores, hz).to_table()
            );
            last_stats = Instant::now();
        }
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            let dp = shared.load();
            for b in dp.switch.bridges() {
                b.macs.sweep(now_secs);
            }
            dp.security.sessions().sweep(now_secs);
            if let Some(v) = &mut vtep {
                let behind: std::collections::HashSet<PortId> = dp
                    .switch
                    .bridges()
                    .iter()
                    .flat_map(|b| b.macs.entries(now_secs))
                    .map(|e| e.port)
                    .collect();
                let gone = v.expire_learned(|t| behind.contains(&t.port));
                if !gone.is_empty() {
                    let plant = Plant {
                        ports: &ports,
                        shared: &shared,
                        vtep: Some(v),
                        pool: pool.handle(),
                    };
                    match plant.publish(&cfg, dp.security.clone()) {
                        // No worker uses the ports any more: a MAC learned
                        // against one meanwhile must not outlive it.
                        Ok(()) => {
                            for b in dp.switch.bridges() {
                                for t in &gone {
                                    b.macs.flush_port(t.port);
                                }
                            }
                        }
                        Err(e) => eprintln!("vswitchd: tunnel update not applied: {e:#}"),
                    }
                }
            }
            last_sweep = Instant::now();
        }
        control.poll(|req| handle(req, &ports, vtep.as_ref(), &shared, &cfg, hz, now_secs));
    }

    eprintln!("vswitchd: stopping");
    shared.running.store(false, Ordering::Relaxed);
    lcore::wait_all();
    print!(
        "{}",
        report(&ports, vtep.as_ref(), &shared, &cfg.workers.cores, hz).to_table()
    );
    drop(control);
    for p in ports.into_iter().flatten() {
        p.eth.close();
        if let PortKind::VhostUser {
            socket,
            client: false,
        } = &p.spec.kind
        {
            let _ = std::fs::remove_file(socket);
        }
    }
    drop(pool);
    drop(eal);
    eprintln!("vswitchd: stopped");
    Ok(())
}

/// The stats report, tunnel ports included.
fn report(
    ports: &[Option<Port>],
    vtep: Option<&Vtep>,
    shared: &Shared,
    cores: &[u32],
    hz: u64,
) -> stats::Report {
    let tunnels = vtep.map_or(&[][..], |v| v.tunnels());
    let resolved = |t: &crate::vtep::TunnelPort| vtep.is_some_and(|v| v.resolved(t.remote));
    stats::collect(ports, tunnels, &resolved, shared, cores, hz)
}

fn handle(
    req: Request,
    ports: &[Option<Port>],
    vtep: Option<&Vtep>,
    shared: &Shared,
    cfg: &Config,
    hz: u64,
    now: u32,
) -> Result<serde_json::Value, String> {
    match req {
        Request::Stats => {
            Ok(
                serde_json::to_value(report(ports, vtep, shared, &cfg.workers.cores, hz))
                    .expect("reports serialize"),
            )
        }
        Request::PortList => Ok(serde_json::json!(ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| serde_json::json!({
                "index": i,
                "name": p.spec.name,
                "kind": p.spec.kind.name(),
                "bridge": p.spec.bridge,
                "dpdk_port": p.eth.id(),
                "mac": p.eth.mac().to_string(),
                "link_up": p.eth.link_up(),
            })))
            .collect::<Vec<_>>())),
        Request::TunnelList => {
            let Some(v) = vtep else {
                return Err("no [vtep] in the running config".into());
            };
            let tunnels: Vec<_> = v
                .tunnels()
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "name": t.name(),
                        "port": t.port.0,
                        "vni": t.vni,
                        "bridge": t.bridge,
                        "remote": t.remote.to_string(),
                        "next_hop": v.host().next_hop(t.remote).map(|h| h.to_string()),
                        "next_hop_mac": v.next_hop_mac(t.remote).map(|m| MacAddr(m).to_string()),
                        "flood": t.flood,
                        "learned": t.learned.is_some(),
                    })
                })
                .collect();
            let neighbours: Vec<_> = v
                .host()
                .neighbours()
                .map(|(ip, n)| {
                    serde_json::json!({
                        "ip": ip.to_string(), "mac": MacAddr(n.mac).to_string(), "static": n.is_static,
                    })
                })
                .collect();
            Ok(serde_json::json!({ "tunnels": tunnels, "neighbours": neighbours }))
        }
        Request::FdbShow { bridge } => {
            let dp = shared.load();
            let mut out = Vec::new();
            let mut found = bridge.is_none();
            for b in dp.switch.bridges() {
                if bridge.as_ref().is_some_and(|n| *n != b.conf.name) {
                    continue;
                }
                found = true;
                for e in b.macs.entries(now) {
                    let port = ports
                        .get(e.port.index())
                        .and_then(|p| p.as_ref())
                        .map(|p| p.spec.name.clone())
                        .or_else(|| {
                            vtep?
                                .tunnels()
                                .iter()
                                .find(|t| t.port == e.port)
                                .map(|t| t.name())
                        });
                    out.push(serde_json::json!({
                        "bridge": b.conf.name, "mac": e.mac.to_string(), "port": port, "age": e.age, "static": e.is_static,
                    }));
                }
            }
            if !found {
                return Err(format!("no bridge named {:?}", bridge.unwrap_or_default()));
            }
            Ok(serde_json::Value::Array(out))
        }
    }
}
