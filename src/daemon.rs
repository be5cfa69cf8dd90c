//! Bringing the switch up, running it, and taking it down cleanly.
//!
//! Order matters: machine checks (preflight) before EAL, so a missing
//! hugepage reservation or netns gives a clear message instead of a DPDK
//! error; ports before workers; on exit workers stop first (their tx
//! buffers flushed), then ports are closed (TAPs vanish from their
//! containers, vhost sockets are removed), then the mempool and EAL go
//! (hugepage memory released).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vswitch::security::Security;
use vswitch::{BridgeId, Pipeline, PortId, SwitchBuilder, MAX_BURST};

use crate::config::{Config, PortKind};
use crate::control::ControlServer;
use crate::datapath::{Datapath, Pools, RxQueue, RxSource, Shared, TxTarget};
use crate::dpdk::eal::Eal;
use crate::dpdk::mempool::Mempool;
use crate::dpdk::{self, lcore};
use crate::ports::{self, Port, PortIo};
use crate::rxq::{Loads, Move, Placement, QueueId, Rebalance};
use crate::state::StateFile;
use crate::stats;
use crate::tap::uring::TapQueue;
use crate::vtep::Vtep;
use crate::worker::Worker;

/// mbuf data room: 2048 bytes of frame (MTU 1500 plus tags, in one segment)
/// behind DPDK's 128-byte headroom (room to prepend tunnel headers).
const MBUF_DATA_ROOM: u16 = 2048 + 128;
const MEMPOOL_CACHE: u32 = 256;

/// Data room of the mbufs TAP queues read into: the largest one-segment
/// mbuf (a u16 length), so a superframe of up to 65,407 bytes behind the
/// 128-byte headroom (where its virtio-net header lands) needs no chain.
/// TAPs are set to `gso_max_size` [`crate::netns::TAP_GSO_MAX_SIZE`] so
/// the kernel's superframes fit.
const TAP_DATA_ROOM: u16 = u16::MAX;
/// TAP rx mbufs: 511 x 64 KB = 33 MB of hugepages, whatever the number of
/// TAPs. A TAP read fills an mbuf that leaves the worker within its poll
/// round (every port but net_ring copies on tx), so a worker holds at most
/// its stash and one burst per TAP queue it polls in a round.
const TAP_POOL_MBUFS: u32 = 511;
const TAP_POOL_CACHE: u32 = 32;

/// The EAL command line for a config.
pub fn eal_args(cfg: &Config) -> Vec<String> {
    let e = &cfg.eal;
    // Lcore ids are not CPU numbers: the main lcore is 0, workers 1, 2,
    // ... each on its CPU, so a worker may share the main lcore's CPU.
    let mut lcores = vec![format!("0@{}", e.main_lcore)];
    lcores.extend(
        cfg.workers
            .cores
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}@{c}", i + 1)),
    );
    let mut a = vec![
        "vswitchd".to_string(),
        "--lcores".into(),
        lcores.join(","),
        "--main-lcore".into(),
        "0".into(),
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
    // The vhost library logs every vhost-user message of every guest at
    // INFO; its warnings and errors stay (a configured level comes after
    // and wins).
    a.push("--log-level=lib.vhost.config:notice".into());
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

/// A CPU the config names (`workers.cores`, `eal.main_lcore`) that this
/// machine does not have, said as an error or a warning would.
pub fn missing_core(cfg: &Config) -> Option<String> {
    let n_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let mut cores = cfg
        .workers
        .cores
        .iter()
        .chain(std::iter::once(&cfg.eal.main_lcore));
    cores.find(|&&c| c >= n_cpus).map(|c| {
        format!(
            "core {c} does not exist: this machine has CPUs 0-{} (workers.cores, eal.main_lcore)",
            n_cpus - 1
        )
    })
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
    if let Some(m) = missing_core(cfg) {
        bail!("{m}");
    }
    ports::claim_socket_path(&cfg.control.socket)
        .map_err(|e| anyhow::anyhow!("control socket: {e}"))?;
    for p in &cfg.ports {
        ports::preflight(p)?;
    }
    Ok(())
}

/// Ports that can be hot-plugged beyond the config's, each with default
/// descriptor rings: the pool holds mbufs for them from the start (one
/// shared pool: an mbuf may sit in any port's tx ring, so per-port pools
/// could not be freed safely when their port goes).
const HOTPLUG_PORTS: u32 = 16;

/// See `pool_size`.
const BUFFERED_QUEUES: u32 = 64;

/// How long the control plane waits for every worker to take a new
/// snapshot (or begin a new round) before it reports a stuck worker.
pub(crate) const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Mbufs a port can hold: its rx rings filled, a tx ring per worker, and
/// what the PMD keeps on its own.
pub(crate) fn mbuf_demand(p: &crate::config::PortSpec, n_workers: u32) -> u32 {
    if matches!(p.kind, PortKind::Tap(_) | PortKind::VhostUser { .. }) {
        // No descriptor rings of mbufs: a TAP reads into the TAP pool per
        // burst, the vhost library copies a guest's frames into mbufs per
        // burst and ours out of them (see `dpdk::vhost`).
        return 0;
    }
    u32::from(p.rx_queues) * u32::from(p.rx_desc)
        + n_workers * u32::from(p.tx_desc)
        + ports::extra_mbufs(p)
}

/// What the mbuf pool reserves for port `p` (see [`mbuf_demand`]: its
/// descriptor rings, the most it can hold), in mbufs and hugepage bytes
/// (each mbuf is its 128-byte `rte_mbuf` header and [`MBUF_DATA_ROOM`]).
/// A TAP or vhost-user port needs none: their frames are in mbufs only
/// between rx and tx.
pub(crate) fn ring_memory(p: &crate::config::PortSpec, n_workers: u32) -> (u32, u64) {
    let mbufs = mbuf_demand(p, n_workers);
    (mbufs, u64::from(mbufs) * (128 + u64::from(MBUF_DATA_ROOM)))
}

/// The mbufs reserved for hot-plugged ports.
fn hotplug_reserve(n_workers: u32) -> u32 {
    HOTPLUG_PORTS * (1024 + n_workers * 1024)
}

fn pool_size(cfg: &Config) -> u32 {
    let n_workers = cfg.workers.cores.len() as u32;
    let mut n: u32 = cfg.ports.iter().map(|p| mbuf_demand(p, n_workers)).sum();
    n += hotplug_reserve(n_workers);
    // Frames between rx and tx, and per-lcore caches. What a worker holds
    // in its tx buffers at the end of a round is what it read that round
    // (MAX_BURST per busy rx queue; local floods share one mbuf) plus
    // tunnel copies and segments (each tx buffer flushes at MAX_BURST):
    // sized for BUFFERED_QUEUES busy queues a round, not for every port
    // (a copy beyond fails as a counted no_mbuf drop).
    n += n_workers * (BUFFERED_QUEUES + 2) * MAX_BURST as u32;
    n += (n_workers + 1) * MEMPOOL_CACHE * 2;
    // rte_mempool is most memory-efficient at 2^k - 1 elements.
    (n.max(8192) + 1).next_power_of_two() - 1
}

/// The rx queues of a set of open ports, each with the worker its port
/// pins it to (`rx_workers`), for [`Placement::sync`].
pub(crate) fn rx_wanted(ports: &[Option<Port>]) -> Vec<(QueueId, Option<usize>)> {
    let mut wanted = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let Some(port) = port else { continue };
        for q in 0..port.spec.rx_queues {
            let id = QueueId {
                port: PortId(i as u16),
                queue: q,
            };
            let pin = port.spec.rx_workers.as_ref().map(|l| l[usize::from(q)]);
            wanted.push((id, pin));
        }
    }
    wanted
}

/// The datapath snapshot for a set of open ports, with `security` as its
/// security stage and the VTEP's tunnel ports, each rx queue polled by
/// the worker `placement` gives it. With `prev`, MAC tables carry over.
pub(crate) fn build_datapath(
    cfg: &Config,
    ports: &[Option<Port>],
    placement: &Placement,
    prev: Option<&Datapath>,
    security: Security,
    vtep: Option<&Vtep>,
    pools: Pools,
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
    // Sized by the NICs' slots: frames leave by a NIC's tx target, or
    // by the uplink's once encapsulated for a tunnel port.
    let mut tx = vec![TxTarget::None; ports.len()];
    let mut rx_queues = vec![Vec::new(); placement.n_workers()];
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
        if let Some(g) = &port.spec.guard {
            b.guard(pid, vswitch::PortGuard::new(g));
        }
        if let Some(l) = port.spec.mac_limit {
            b.mac_limit(pid, l);
        }
        tx[i] = port.tx_target();
        let tap_fds = match &port.io {
            PortIo::Tap(d) => d.fds(),
            PortIo::Eth(_) | PortIo::Vhost(_) => Vec::new(),
        };
        for q in 0..port.spec.rx_queues {
            let id = QueueId {
                port: pid,
                queue: q,
            };
            // A queue that is moving is polled by no worker (see `rxq`).
            let Some(w) = placement.worker(id) else {
                continue;
            };
            let src = match &port.io {
                PortIo::Eth(e) => RxSource::Eth {
                    dpdk_port: e.id(),
                    queue: q,
                },
                PortIo::Tap(_) => RxSource::Tap(tap_fds[usize::from(q)]),
                PortIo::Vhost(v) => RxSource::Vhost {
                    state: v.state(),
                    queue: q,
                },
            };
            rx_queues[w].push(RxQueue { id, src });
        }
    }
    let router = crate::vpc::build(cfg, &mut b, &ids, ports, vtep)?;
    let switch = b
        .build(prev.map(|p| &p.pipeline.switch))
        .context("building the switch topology")?;
    Ok(Datapath {
        pipeline: Pipeline::new(switch, security, vtep.map(|v| v.overlay(cfg, &ids)))
            .with_router(router),
        tx: tx.into(),
        tap_queues: rx_queues
            .iter()
            .map(|qs| {
                qs.iter()
                    .filter_map(|q: &RxQueue| match q.src {
                        RxSource::Tap(fd) => Some(TapQueue { id: q.id, fd }),
                        RxSource::Eth { .. } | RxSource::Vhost { .. } => None,
                    })
                    .collect()
            })
            .collect(),
        rx_queues,
        pools,
        vtep: vtep.map(|v| v.path(pools.mbufs)),
    })
}

/// Which switch ports NICs occupy (tunnel ports take the others).
pub(crate) fn nic_ports(ports: &[Option<Port>]) -> Vec<bool> {
    ports.iter().map(Option::is_some).collect()
}

/// The running switch as the control thread sees it: the config (typed,
/// and as the TOML document runtime changes edit), the open ports by
/// switch port id, the VTEP, and where snapshots are published.
///
/// Every change follows one pattern, which makes it all-or-nothing: edit a
/// copy of the document, validate it with the same code as a config file
/// (so a runtime change can never produce a config `vswitchd run` would
/// refuse), do the side effects that can fail (open a port, move a NIC)
/// and undo them if a later step fails, publish the new snapshot, and only
/// then commit the new config, which saves it to the state file.
pub struct Daemon<'p> {
    pub(crate) cfg: Config,
    pub(crate) doc: toml::Table,
    config_path: Option<std::path::PathBuf>,
    state: StateFile,
    /// Removed ports a worker may still poll through a snapshot it has not
    /// left yet, with the generation that dropped them and their id.
    retired: Vec<(u64, PortId, Port)>,
    /// Destroys removed TAPs off this thread.
    pub(crate) reaper: crate::ports::Reaper,
    /// Counters of forgotten tunnel ports, for the per-VNI sums.
    retired_tunnels: Vec<stats::RetiredTunnel>,
    /// Snapshots a worker may still use (a publication it did not
    /// acknowledge in time), with the generation that replaced them:
    /// released here once every worker moved on.
    old_snapshots: Vec<(u64, Arc<Datapath>)>,
    pub(crate) ports: Vec<Option<Port>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) vtep: Option<Vtep>,
    pub(crate) pool: &'p Mempool,
    /// The pool TAP queues read superframes into.
    pub(crate) tap_pool: &'p Mempool,
    /// Ruleset generation: bumped when groups or their attachments change
    /// (live sessions are judged again).
    pub(crate) generation: u32,
    /// The workers' clock.
    clock: dpdk::TscClock,
    pub(crate) hz: u64,
    /// Mbufs of the pool's hot-plug reserve not taken by ports.
    pub(crate) reserve_left: u32,
    /// Worker counters at the last `pmd-perf --clear`.
    pub(crate) perf_base: Vec<[u64; PERF_FIELDS]>,
    /// QoS meters and compiled groups, carried from snapshot to snapshot.
    pub(crate) carried: crate::security::Carried,
    /// Which worker polls which rx queue, and their measured loads.
    pub(crate) rxq: Placement,
    /// The last state `vswitch-agent` reported, and when (not saved: the
    /// agent reports every half second).
    pub(crate) agent: Option<(serde_json::Value, Instant)>,
    /// Commits since start (`config-version`).
    pub(crate) config_version: u64,
    /// The running port capture.
    pub(crate) capture: Option<crate::capture::Job>,
    /// The last capture's status, once it ended.
    pub(crate) last_capture: Option<serde_json::Value>,
    /// The running live trace.
    pub(crate) live_trace: Option<crate::trace::LiveJob>,
}

/// Worker counters `pmd-perf` reports since its last `--clear`: packets,
/// busy and idle cycles, syscalls, then the flow cache's hits, misses,
/// inserts, evictions and bypassed bursts, then the frames stage metrics
/// timed and their cycles per [`crate::datapath::Stage`].
pub(crate) const PERF_FIELDS: usize = 10 + crate::datapath::STAGES;

impl Daemon<'_> {
    /// Nanoseconds since the workers' epoch.
    pub(crate) fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// Seconds since the workers' epoch (MAC and session clocks).
    pub(crate) fn now_secs(&self) -> u32 {
        (self.now_ns() / 1_000_000_000) as u32
    }

    /// Publishes the snapshot of `cfg` for the current ports and tunnels.
    /// `new_rules`: groups or their attachments changed, so the ruleset
    /// generation moves on (on success).
    pub(crate) fn publish(&mut self, cfg: &Config, new_rules: bool) -> Result<()> {
        let generation = self.generation + u32::from(new_rules);
        let old = self.shared.load();
        let slots: Vec<Option<&str>> = self
            .ports
            .iter()
            .map(|p| p.as_ref().map(|p| p.spec.name.as_str()))
            .collect();
        let now_ns = self.now_ns();
        let security = crate::security::build(
            cfg,
            &slots,
            Some(Arc::clone(old.pipeline.security.sessions())),
            generation,
            now_ns,
            &mut self.carried,
        );
        self.rxq
            .sync(&rx_wanted(&self.ports), cfg.workers.rxq_assign);
        let dp = build_datapath(
            cfg,
            &self.ports,
            &self.rxq,
            Some(&old),
            security,
            self.vtep.as_ref(),
            Pools {
                mbufs: self.pool.handle(),
                tap: self.tap_pool.handle(),
            },
        )?;
        // The old snapshot is released here, not by the worker that drops
        // its reference last: freeing classifier tables takes a worker
        // off its queues.
        if !self.shared.publish(dp, PUBLISH_TIMEOUT) {
            // Live all the same: what older snapshots use is freed only
            // once every worker has moved on (see `retire`).
            tracing::warn!(
                "a worker did not pick up the new snapshot within 5 s; \
                 ports removed meanwhile are closed once it does"
            );
            self.old_snapshots.push((self.shared.generation(), old));
        }
        self.generation = generation;
        Ok(())
    }

    /// Closes a port the current snapshot no longer has, once no worker
    /// can still be using an older one (at once, unless a publication was
    /// not acknowledged in time; then a later sweep does it).
    /// Its counters go back to 0 with it, for the next port of its id.
    pub(crate) fn retire(&mut self, slot: PortId, port: Port) {
        let gen = self.shared.generation();
        if self.shared.acked(gen) {
            self.reaper.reap(port);
            self.shared.reset_port(slot);
        } else {
            self.retired.push((gen, slot, port));
        }
    }

    /// Makes `cfg` (validated from `doc`) the running config; the ports'
    /// own copies of their specs follow it; the state file saves it. The
    /// change is live whatever happens: an error says it could not be
    /// saved (and would be lost at a restart).
    pub(crate) fn commit(&mut self, cfg: Config, doc: toml::Table) -> Result<(), String> {
        for p in self.ports.iter_mut().flatten() {
            if let Some(s) = cfg.ports.iter().find(|s| s.name == p.spec.name) {
                p.spec = s.clone();
            }
        }
        self.cfg = cfg;
        self.doc = doc;
        self.config_version += 1;
        let saved = toml::to_string(&self.doc)
            .map_err(|e| e.to_string())
            .and_then(|t| self.state.save(&t).map_err(|e| e.to_string()));
        saved.map_err(|e| {
            let msg = format!(
                "the change is live but could not be saved to {}: {e}; it will be lost at a restart",
                self.state.path().display()
            );
            tracing::error!("{msg}");
            msg
        })
    }

    /// Applies a changed config file (SIGHUP): security groups, QoS
    /// policies, the ports' group and policy names, and
    /// `[workers.auto_lb]`. Anything else
    /// needs a restart (ports, bridges and tunnels change through the
    /// control socket; `[sessions]` is fixed when the session table is
    /// made, and the table lives as long as the process). The snapshot is built off the data
    /// path and published atomically; workers switch between bursts.
    fn reload(&mut self, path: &std::path::Path) -> Result<()> {
        let text = crate::config::read(path)?;
        let new = crate::config::parse(&path.display().to_string(), &text)?;
        let strip = |c: &Config| {
            let mut c = c.clone();
            for p in &mut c.ports {
                p.ingress_group = None;
                p.egress_group = None;
                p.ingress_qos = None;
                p.egress_qos = None;
            }
            c.ports.sort_by(|a, b| a.name.cmp(&b.name));
            // Read by the control thread at each check.
            c.workers.auto_lb = Default::default();
            (
                c.eal, c.workers, c.control, c.metrics, c.log, c.bridges, c.ports, c.vtep, c.vnis,
                c.sessions,
            )
        };
        if strip(&new) != strip(&self.cfg) {
            bail!(
                "only security groups, QoS policies, the ports' ingress/egress group and QoS \
                 fields and [workers.auto_lb] change at run time; restart vswitchd for the rest, [sessions] included (the \
                 session table is sized and set up at start) (after changes through vswitchctl, \
                 `vswitchctl config dump` writes the running config)"
            );
        }
        for w in &new.warnings {
            tracing::warn!("{w}");
        }
        let doc: toml::Table = toml::from_str(&text).context("re-reading the config")?;
        self.publish(&new, true)?;
        self.commit(new, doc).map_err(anyhow::Error::msg)
    }

    /// The stats report, tunnel ports included.
    pub(crate) fn report(&self) -> stats::Report {
        let vtep = self.vtep.as_ref();
        let tunnels = vtep.map_or(&[][..], |v| v.tunnels());
        let resolved = |t: &crate::vtep::TunnelPort| vtep.is_some_and(|v| v.resolved(t.remote));
        stats::collect(
            &self.ports,
            stats::Tunnels {
                live: tunnels,
                resolved: &resolved,
                retired: &self.retired_tunnels,
            },
            &self.shared,
            &self.cfg.workers.cores,
            self.hz,
            &[self.pool, self.tap_pool],
        )
    }

    /// What a metrics scrape shows (see `crate::metrics`).
    pub(crate) fn metrics_snapshot(&self) -> crate::metrics::Snapshot {
        crate::metrics::Snapshot {
            report: self.report(),
            workers: self
                .shared
                .workers
                .iter()
                .map(|w| {
                    let c = &w.counters;
                    crate::metrics::WorkerExtra {
                        cache_hits: c.flow_cache.hits.get(),
                        cache_misses: c.flow_cache.misses.get(),
                        round_cycles: c.burst_cycles.buckets().collect(),
                    }
                })
                .collect(),
        }
    }

    /// Keeps a forgotten tunnel port's counters for its VNI's sums and
    /// zeroes its id's counters for the next port, once no worker can
    /// still count on it (else they stay: a later port may inherit them,
    /// which only a stuck worker causes).
    pub(crate) fn forget_tunnel(&mut self, t: &crate::vtep::TunnelPort) {
        if !self.shared.acked(self.shared.generation()) {
            return;
        }
        self.retired_tunnels.push(stats::RetiredTunnel {
            vni: t.vni,
            bridge: t.bridge.clone(),
            totals: stats::port_counters(&self.shared, t.port),
        });
        self.shared.reset_port(t.port);
    }

    /// Handles punts for up to `timeout` (or sleeps it without a VTEP) and
    /// publishes what the VTEP learned.
    fn serve_vtep(&mut self, timeout: Duration, wake: &crossbeam_channel::Receiver<()>) {
        let used = nic_ports(&self.ports);
        let Some(v) = &mut self.vtep else {
            let _ = wake.recv_timeout(timeout);
            return;
        };
        if v.serve(&self.cfg, &used, timeout, wake).rebuild {
            let cfg = self.cfg.clone();
            if let Err(e) = self.publish(&cfg, false) {
                tracing::warn!("tunnel update not applied: {e:#}");
            }
        }
    }

    /// Once a second: ages MACs and sessions, forgets idle learned VTEPs.
    fn sweep(&mut self) {
        let now = self.now_secs();
        let shared = Arc::clone(&self.shared);
        for (_, slot, port) in extract(&mut self.retired, |(gen, _, _)| shared.acked(*gen)) {
            self.reaper.reap(port);
            shared.reset_port(slot);
        }
        self.old_snapshots.retain(|(gen, _)| !shared.acked(*gen));
        let dp = self.shared.load();
        // A vhost-user guest (re)connected with other offloads, or
        // enabled other receive rings: the workers learn it with the next
        // snapshot.
        let renegotiated = self
            .ports
            .iter()
            .enumerate()
            .any(|(i, p)| match (p, dp.tx.get(i)) {
                (Some(p), Some(t @ TxTarget::Vhost { .. })) => p.tx_target() != *t,
                _ => false,
            });
        if renegotiated {
            let cfg = self.cfg.clone();
            if let Err(e) = self.publish(&cfg, false) {
                tracing::warn!("guest offloads and queues not updated: {e:#}");
            }
        }
        for b in dp.pipeline.switch.bridges() {
            b.macs.sweep(now);
        }
        dp.pipeline.security.sessions().sweep(now);
        self.balance_rx_queues(now);
        let Some(v) = &mut self.vtep else { return };
        let behind: std::collections::HashSet<PortId> = dp
            .pipeline
            .switch
            .bridges()
            .iter()
            .flat_map(|b| b.macs.entries(now))
            .map(|e| e.port)
            .collect();
        let gone = v.expire_learned(|t| behind.contains(&t.port));
        if !gone.is_empty() {
            let cfg = self.cfg.clone();
            match self.publish(&cfg, false) {
                // No worker uses the ports any more: a MAC learned against
                // one meanwhile must not outlive it.
                Ok(()) => {
                    flush_ports(&dp, gone.iter().map(|t| t.port));
                    for t in &gone {
                        self.forget_tunnel(t);
                    }
                }
                Err(e) => tracing::warn!("tunnel update not applied: {e:#}"),
            }
        }
    }
}

impl Daemon<'_> {
    /// Once a second: samples the rx queues' and workers' cycles, and
    /// lets auto-lb move queues (see `rxq`).
    fn balance_rx_queues(&mut self, now_secs: u32) {
        let workers = &self.shared.workers;
        let totals: Vec<(u64, u64)> = workers
            .iter()
            .map(|w| (w.counters.busy_cycles.get(), w.counters.idle_cycles.get()))
            .collect();
        self.rxq.sample(
            |q| {
                workers
                    .iter()
                    .map(|w| w.counters.rxq_cycles[q.counter()].get())
                    .sum()
            },
            &totals,
        );
        let w = &self.cfg.workers;
        if let Some((plan, loads)) = self.rxq.auto_lb(&w.auto_lb, w.rxq_assign, now_secs) {
            if let Err(e) = self.rebalance(plan, "auto_lb", loads) {
                tracing::warn!("auto-lb: {e:#}");
            }
        }
    }

    /// Moves rx queues to the workers `plan` gives them, in two
    /// publications (see `rxq`: no queue is ever polled by two workers),
    /// and records the rebalance (`trigger`, the workers' loads).
    pub(crate) fn rebalance(
        &mut self,
        plan: std::collections::BTreeMap<QueueId, usize>,
        trigger: &'static str,
        loads: Loads,
    ) -> Result<Vec<Move>> {
        let moves = self.rxq.begin(&plan);
        if moves.is_empty() {
            return Ok(moves);
        }
        let cfg = self.cfg.clone();
        let parked = self.publish(&cfg, false);
        if parked.is_err() || !self.shared.acked(self.shared.generation()) {
            // The old worker may still poll them: they stay its.
            self.rxq.abort(&moves);
            self.publish(&cfg, false)?;
            parked?;
            bail!("a worker did not acknowledge the snapshot without the moving queues; nothing moved");
        }
        self.rxq.finish(&moves);
        self.publish(&cfg, false)?;
        let name = |q: QueueId| {
            self.ports[q.port.index()]
                .as_ref()
                .map_or("?", |p| p.spec.name.as_str())
        };
        tracing::info!(
            "rx queues rebalanced ({trigger}): {}; worker loads {:.0?} % -> {:.0?} %",
            moves
                .iter()
                .map(|m| format!(
                    "{} q{}: worker {} -> {}",
                    name(m.queue),
                    m.queue.queue,
                    m.from,
                    m.to
                ))
                .collect::<Vec<_>>()
                .join(", "),
            loads.before,
            loads.after,
        );
        self.rxq.rebalances += 1;
        self.rxq.last = Some(Rebalance {
            at_secs: self.now_secs(),
            trigger,
            moves: moves.clone(),
            loads,
        });
        Ok(moves)
    }
}

/// Takes the elements of `v` for which `pred` holds out of it.
fn extract<T>(v: &mut Vec<T>, pred: impl Fn(&T) -> bool) -> Vec<T> {
    let (out, keep) = std::mem::take(v).into_iter().partition(|x| pred(x));
    *v = keep;
    out
}

/// Forgets every MAC (static ones included) behind `ports`, which the
/// published snapshot no longer has.
pub(crate) fn flush_ports(dp: &Datapath, ports: impl Iterator<Item = PortId> + Clone) {
    for b in dp.pipeline.switch.bridges() {
        for p in ports.clone() {
            b.macs.flush_port(p);
        }
    }
}

/// Runs the switch until SIGINT/SIGTERM. `text` is the config file's
/// content (the document runtime changes edit). Prints a `vswitchd: ready`
/// line on stdout once the ports are up and the workers run (the demo and
/// tests wait for it).
pub fn run(
    cfg: Config,
    text: &str,
    config_path: Option<std::path::PathBuf>,
    state: StateFile,
) -> Result<()> {
    // Before the ports' checks: the SNAT ports are TAPs in its namespaces.
    let egress = crate::snat::Egress::prepare(&cfg)?;
    preflight(&cfg)?;
    let doc: toml::Table = toml::from_str(text).context("the config as a TOML document")?;
    let n_workers = cfg.workers.cores.len();
    if let Err(e) = crate::dpdk::log::route() {
        tracing::warn!("{e}; DPDK writes its own log to stderr");
    }
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
    let tap_pool = Mempool::new(
        "vswitchd_tap",
        TAP_POOL_MBUFS,
        TAP_POOL_CACHE,
        TAP_DATA_ROOM,
    )?;

    // Beside the control socket: the socket that wakes the vhost
    // library's thread for each new vhost-user socket (see dpdk::vhost).
    let mut waker = cfg.control.socket.clone().into_os_string();
    waker.push(".vhost-wake");
    ports::claim_socket_path(Path::new(&waker)).map_err(anyhow::Error::msg)?;
    crate::dpdk::vhost::init(Path::new(&waker))?;

    let mut ports: Vec<Option<Port>> = Vec::new();
    for spec in &cfg.ports {
        match Port::open(spec, n_workers, &pool) {
            Ok(p) => {
                match p.dpdk_id() {
                    Some(id) => tracing::info!(
                        "port {} ({}) up as DPDK port {id}",
                        spec.name,
                        spec.kind.name(),
                    ),
                    None => tracing::info!("port {} ({}) up", spec.name, spec.kind.name()),
                }
                ports.push(Some(p));
            }
            Err(e) => {
                ports.into_iter().flatten().for_each(Port::abandon);
                crate::dpdk::vhost::shutdown();
                return Err(e.into());
            }
        }
    }
    let hz = dpdk::tsc_hz();
    let clock = dpdk::TscClock::start();
    // Everything that can still fail before the workers start; on error
    // the ports opened above are undone.
    let mut carried = crate::security::Carried::default();
    let mut placement = Placement::new(n_workers, hz);
    let prepared = (|| -> Result<_> {
        egress.route(&cfg.vpcs)?;
        let vtep = match &cfg.vtep {
            Some(v) => {
                let i = cfg
                    .ports
                    .iter()
                    .position(|p| p.name == v.uplink)
                    .expect("validated uplink");
                let mac = ports[i].as_ref().expect("uplink is open").mac();
                Some(Vtep::new(&cfg, PortId(i as u16), mac, &nic_ports(&ports))?)
            }
            None => None,
        };
        let slots: Vec<Option<&str>> = cfg.ports.iter().map(|p| Some(p.name.as_str())).collect();
        let security = crate::security::build(&cfg, &slots, None, 1, 0, &mut carried);
        placement.sync(&rx_wanted(&ports), cfg.workers.rxq_assign);
        let dp = build_datapath(
            &cfg,
            &ports,
            &placement,
            None,
            security,
            vtep.as_ref(),
            Pools {
                mbufs: pool.handle(),
                tap: tap_pool.handle(),
            },
        )?;
        let control = ControlServer::bind(&cfg.control.socket)
            .with_context(|| format!("control socket {}", cfg.control.socket.display()))?;
        let metrics = cfg
            .metrics
            .address
            .map(crate::metrics::MetricsServer::start)
            .transpose()?;
        Ok((vtep, dp, control, metrics))
    })();
    let (vtep, dp, mut control, metrics) = match prepared {
        Ok(x) => x,
        Err(e) => {
            ports.into_iter().flatten().for_each(Port::abandon);
            crate::dpdk::vhost::shutdown();
            return Err(e);
        }
    };
    let mut shared = Shared::new(dp, n_workers, cfg.workers.idle_sleep_us, clock);
    shared.flow_cache = cfg.workers.flow_cache;
    let shared = Arc::new(shared);
    let (quiesced, nudged) = (Arc::clone(&shared), Arc::clone(&shared));
    crate::dpdk::vhost::set_workers(Some(crate::dpdk::vhost::Workers {
        quiesce: Box::new(move || {
            if !quiesced.synchronize(PUBLISH_TIMEOUT) {
                tracing::warn!("a worker did not start a new round: a vhost-user guest left while it may poll it");
            }
        }),
        nudge: Box::new(move || {
            nudged.nudge();
        }),
    }));
    for (i, &l) in lcores.iter().enumerate() {
        let s = Arc::clone(&shared);
        lcore::launch(l, move || Worker::new(i, s.flow_cache).run(&s))
            .map_err(anyhow::Error::msg)?;
    }

    let term = Arc::new(AtomicBool::new(false));
    let dump = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&term))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&dump))?;
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))?;
    println!(
        "vswitchd: ready: {} ports, {} workers, control socket {}{}",
        ports.len(),
        n_workers,
        cfg.control.socket.display(),
        metrics.as_ref().map_or(String::new(), |m| format!(
            ", metrics on http://{}/metrics",
            m.address
        ))
    );

    let mut d = Daemon {
        reserve_left: hotplug_reserve(n_workers as u32),
        perf_base: vec![[0; PERF_FIELDS]; n_workers],
        carried,
        rxq: placement,
        cfg,
        doc,
        config_path,
        state,
        retired: Vec::new(),
        reaper: crate::ports::Reaper::new().context("starting the TAP reaping thread")?,
        retired_tunnels: Vec::new(),
        old_snapshots: Vec::new(),
        ports,
        shared,
        vtep,
        pool: &pool,
        tap_pool: &tap_pool,
        generation: 1,
        clock,
        hz,
        agent: None,
        config_version: 0,
        capture: None,
        last_capture: None,
        live_trace: None,
    };
    let interval = Duration::from_secs(u64::from(d.cfg.stats.interval_secs));
    let mut last_stats = Instant::now();
    let mut last_sweep = Instant::now();
    while !term.load(Ordering::Relaxed) {
        // Wakes for a punted frame, a control client, or after 10 ms.
        d.serve_vtep(Duration::from_millis(10), control.woken());
        if hup.swap(false, Ordering::Relaxed) {
            match d.config_path.clone() {
                Some(path) => match d.reload(&path) {
                    Ok(()) => tracing::info!(
                        "reloaded {} (ruleset generation {})",
                        path.display(),
                        d.generation
                    ),
                    Err(e) => tracing::warn!(
                        "reload of {} refused, still running the old config: {e:#}",
                        path.display()
                    ),
                },
                None => tracing::warn!(
                    "SIGHUP ignored: running the embedded config, there is no file to reload"
                ),
            }
        }
        if dump.swap(false, Ordering::Relaxed)
            || (!interval.is_zero() && last_stats.elapsed() >= interval)
        {
            print!("{}", d.report().to_table(None));
            last_stats = Instant::now();
        }
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            d.sweep();
            last_sweep = Instant::now();
        }
        control.poll(|req| d.handle(req));
        d.serve_capture();
        if let Some(m) = &metrics {
            m.serve(|| d.metrics_snapshot());
        }
    }

    tracing::info!("stopping");
    // A capture running at exit keeps what it has.
    d.capture_end();
    d.shared.running.store(false, Ordering::Relaxed);
    lcore::wait_all();
    crate::dpdk::vhost::set_workers(None);
    crate::dpdk::vhost::shutdown();
    print!("{}", d.report().to_table(None));
    drop(control);
    for p in std::mem::take(&mut d.ports).into_iter().flatten() {
        p.close();
    }
    drop(d);
    drop(egress);
    drop(pool);
    drop(eal);
    tracing::info!("stopped");
    Ok(())
}
