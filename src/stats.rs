//! Gathering counters into a report: per port (ours summed over workers,
//! plus the PMD's) and per worker (busy/idle cycles, cycles per packet).

use std::fmt::Write as _;

use serde::Serialize;
use vswitch::{DropReason, PortId};

use crate::datapath::Shared;
use crate::dpdk::mempool::Mempool;
use crate::dpdk::port::EthStats;
use crate::ports::Port;
use crate::vtep::TunnelPort;

/// One port's counters.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PortReport {
    /// Config name.
    pub name: String,
    /// Port kind.
    pub kind: String,
    /// Bridge domain.
    pub bridge: Option<String>,
    /// Link state.
    pub link_up: bool,
    /// Frames received by the switch.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Drops by reason (only non-zero reasons).
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Source MACs not learned (table bucket full).
    pub learn_full: u64,
    /// Of rx_packets, superframes (a GSO frame of a TAP with offloads is
    /// counted once in packets, whatever its segments).
    #[serde(default)]
    pub rx_superframes: u64,
    /// Of tx_packets, superframes the port took whole.
    #[serde(default)]
    pub tx_superframes: u64,
    /// Superframes cut into segments for this port (the segments count in
    /// tx_packets).
    #[serde(default)]
    pub segmented: u64,
    /// Frames handed to the VTEP's host stack (uplink).
    #[serde(default)]
    pub punted: u64,
    /// Sessions charged to the port (opened by its packets), against
    /// `[sessions] per_port`.
    #[serde(default)]
    pub sessions: u32,
    /// The PMD's own counters.
    pub pmd: EthStats,
}

/// One worker's counters.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct WorkerReport {
    /// Worker index.
    pub worker: usize,
    /// CPU it runs on.
    pub core: u32,
    /// Frames received.
    pub packets: u64,
    /// Cycles in rounds with packets.
    pub busy_cycles: u64,
    /// Cycles in empty rounds.
    pub idle_cycles: u64,
    /// busy / (busy + idle), percent.
    pub busy_pct: f64,
    /// busy cycles / packets.
    pub cycles_per_packet: f64,
}

/// One VNI's tunnel traffic: the sums over its tunnel ports.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct VniReport {
    /// The VNI.
    pub vni: u32,
    /// Its bridge.
    pub bridge: String,
    /// Frames decapsulated into the bridge.
    pub decap_packets: u64,
    /// Their bytes (inner frames).
    pub decap_bytes: u64,
    /// Frames encapsulated out of the bridge.
    pub encap_packets: u64,
    /// Their bytes (inner frames).
    pub encap_bytes: u64,
    /// Drops on its tunnel ports by reason.
    pub drops: std::collections::BTreeMap<String, u64>,
}

/// One mbuf pool's occupancy (leaks show as `in_use` that never comes
/// back down when traffic stops).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct MempoolReport {
    /// Pool name.
    pub name: String,
    /// Mbufs in the pool.
    pub size: u32,
    /// Free (in the pool's ring and the lcore caches).
    pub free: u32,
    /// size - free: held by rings, bursts and tx buffers.
    pub in_use: u32,
}

/// DPDK's hugepage heap: the mbuf pools and what DPDK libraries allocate
/// (the vhost library: per guest device and ring).
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct HugepageReport {
    /// Bytes of hugepages the heap holds.
    pub total_bytes: u64,
    /// Bytes allocated from it.
    pub in_use_bytes: u64,
}

/// The session table's use and shares.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct SessionsReport {
    /// Slots.
    pub capacity: usize,
    /// Share of one port.
    pub per_port: u32,
    /// Share of one bridge.
    pub per_bridge: u32,
    /// Sessions charged per bridge (name, count), non-zero ones.
    pub bridges: Vec<(String, u32)>,
    /// Unreplied sessions evicted for new ones since start.
    pub evictions: u64,
}

/// Everything `vswitchctl stats` shows.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    /// Per port, in config order, then one per remote VTEP and VNI (kind
    /// `vxlan`: rx is decap, tx is encap, both in inner bytes).
    pub ports: Vec<PortReport>,
    /// Per VNI.
    #[serde(default)]
    pub vnis: Vec<VniReport>,
    /// Per worker.
    pub workers: Vec<WorkerReport>,
    /// Mbuf pools.
    #[serde(default)]
    pub mempools: Vec<MempoolReport>,
    /// DPDK's hugepage heap.
    #[serde(default)]
    pub hugepages: HugepageReport,
    /// The session table.
    #[serde(default)]
    pub sessions: SessionsReport,
    /// TSC frequency, to turn cycles into time.
    pub tsc_hz: u64,
}

/// A port's switch counters summed over workers; the caller fills in the
/// name, kind, bridge, link and PMD fields.
pub(crate) fn port_counters(shared: &Shared, id: PortId) -> PortReport {
    let sum = |f: &dyn Fn(&vswitch::PortCounters) -> u64| -> u64 {
        shared
            .workers
            .iter()
            .map(|w| f(&w.counters.ports[id.index()]))
            .sum()
    };
    let mut drops = std::collections::BTreeMap::new();
    for r in DropReason::ALL {
        let n = sum(&|c| c.drops[*r as usize].get());
        if n > 0 {
            drops.insert(r.name().to_string(), n);
        }
    }
    PortReport {
        name: String::new(),
        kind: String::new(),
        bridge: None,
        link_up: false,
        rx_packets: sum(&|c| c.rx_packets.get()),
        rx_bytes: sum(&|c| c.rx_bytes.get()),
        tx_packets: sum(&|c| c.tx_packets.get()),
        tx_bytes: sum(&|c| c.tx_bytes.get()),
        drops,
        learn_full: sum(&|c| c.learn_full.get()),
        rx_superframes: sum(&|c| c.rx_superframes.get()),
        tx_superframes: sum(&|c| c.tx_superframes.get()),
        segmented: sum(&|c| c.segmented.get()),
        punted: sum(&|c| c.punted.get()),
        sessions: 0,
        pmd: EthStats::default(),
    }
}

/// The counters of tunnel ports that are gone (learned VTEPs forgotten),
/// kept so that per-VNI sums never go down.
#[derive(Debug, Clone)]
pub struct RetiredTunnel {
    /// Its VNI.
    pub vni: u32,
    /// Its bridge.
    pub bridge: String,
    /// Its counters when it went, summed over workers.
    pub totals: PortReport,
}

/// Adds a tunnel port's counters `r` to VNI `vni`'s sums.
fn add_to_vni(vnis: &mut Vec<VniReport>, vni: u32, bridge: &str, r: &PortReport) {
    let i = match vnis.iter().position(|v| v.vni == vni) {
        Some(i) => i,
        None => {
            vnis.push(VniReport {
                vni,
                bridge: bridge.to_string(),
                decap_packets: 0,
                decap_bytes: 0,
                encap_packets: 0,
                encap_bytes: 0,
                drops: Default::default(),
            });
            vnis.len() - 1
        }
    };
    let v = &mut vnis[i];
    v.decap_packets += r.rx_packets;
    v.decap_bytes += r.rx_bytes;
    v.encap_packets += r.tx_packets;
    v.encap_bytes += r.tx_bytes;
    for (k, n) in &r.drops {
        *v.drops.entry(k.clone()).or_default() += n;
    }
}

/// The VTEP's tunnel ports as the report needs them.
pub struct Tunnels<'a> {
    /// The live ones.
    pub live: &'a [TunnelPort],
    /// Whether one's next hop has a MAC.
    pub resolved: &'a dyn Fn(&TunnelPort) -> bool,
    /// The counters of those that are gone.
    pub retired: &'a [RetiredTunnel],
}

/// Builds the report. `ports[i]` is switch port i.
pub fn collect(
    ports: &[Option<Port>],
    tunnels: Tunnels<'_>,
    shared: &Shared,
    cores: &[u32],
    tsc_hz: u64,
    pools: &[&Mempool],
) -> Report {
    let Tunnels {
        live: tunnels,
        resolved,
        retired,
    } = tunnels;
    let dp = shared.load();
    let table = dp.pipeline.security.sessions();
    let mut out = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let Some(port) = port else { continue };
        out.push(PortReport {
            name: port.spec.name.clone(),
            kind: port.spec.kind.name().to_string(),
            bridge: port.spec.bridge.clone(),
            link_up: port.link_up(),
            pmd: port.pmd_stats(),
            sessions: table.owned_by(i as u16),
            ..port_counters(shared, PortId(i as u16))
        });
    }
    let limits = table.limits();
    let sessions = SessionsReport {
        capacity: table.capacity(),
        per_port: limits.per_owner,
        per_bridge: limits.per_zone,
        bridges: dp
            .pipeline
            .switch
            .bridges()
            .iter()
            .map(|b| (b.conf.name.clone(), table.in_zone(b.zone)))
            .filter(|(_, n)| *n > 0)
            .collect(),
        evictions: table.evictions(),
    };
    let mut vnis: Vec<VniReport> = Vec::new();
    for t in tunnels {
        let r = PortReport {
            name: t.name(),
            kind: "vxlan".into(),
            bridge: Some(t.bridge.clone()),
            link_up: resolved(t),
            ..port_counters(shared, t.port)
        };
        add_to_vni(&mut vnis, t.vni, &t.bridge, &r);
        out.push(r);
    }
    for gone in retired {
        add_to_vni(&mut vnis, gone.vni, &gone.bridge, &gone.totals);
    }
    let workers = shared
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let c = &w.counters;
            let (busy, idle, pkts) = (c.busy_cycles.get(), c.idle_cycles.get(), c.packets.get());
            WorkerReport {
                worker: i,
                core: cores.get(i).copied().unwrap_or(0),
                packets: pkts,
                busy_cycles: busy,
                idle_cycles: idle,
                busy_pct: if busy + idle == 0 {
                    0.0
                } else {
                    100.0 * busy as f64 / (busy + idle) as f64
                },
                cycles_per_packet: if pkts == 0 {
                    0.0
                } else {
                    busy as f64 / pkts as f64
                },
            }
        })
        .collect();
    Report {
        ports: out,
        vnis,
        workers,
        mempools: pools
            .iter()
            .map(|p| {
                let (free, size) = p.counts();
                MempoolReport {
                    name: p.name(),
                    size,
                    free,
                    in_use: size.saturating_sub(free),
                }
            })
            .collect(),
        hugepages: {
            let (total_bytes, in_use_bytes) = crate::dpdk::hugepage_heap();
            HugepageReport {
                total_bytes,
                in_use_bytes,
            }
        },
        sessions,
        tsc_hz,
    }
}

impl Report {
    /// A human-readable table: every port in config order, or with `top`
    /// the `top` busiest (frames received, sent and dropped) busiest
    /// first, then how many are left out; then the ports' totals.
    pub fn to_table(&self, top: Option<usize>) -> String {
        let mut s = String::new();
        let mut ports: Vec<&PortReport> = self.ports.iter().collect();
        let busy = |p: &PortReport| p.rx_packets + p.tx_packets + p.drops.values().sum::<u64>();
        if top.is_some() {
            ports.sort_by_key(|p| std::cmp::Reverse(busy(p)));
        }
        let shown = top.unwrap_or(ports.len()).min(ports.len());
        let (shown, hidden) = ports.split_at(shown);
        let w = shown.iter().map(|p| p.name.len()).max().unwrap_or(4).max(4);
        let bw = shown
            .iter()
            .map(|p| p.bridge.as_deref().map_or(1, str::len))
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(
            s,
            "{:<w$} {:<10} {:<bw$} {:>4} {:>12} {:>12} {:>12} {:>12}  drops",
            "port", "kind", "bridge", "link", "rx_pkts", "tx_pkts", "rx_bytes", "tx_bytes"
        );
        for p in shown {
            let drops: Vec<String> = p.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(
                s,
                "{:<w$} {:<10} {:<bw$} {:>4} {:>12} {:>12} {:>12} {:>12}  {}",
                p.name,
                p.kind,
                p.bridge.as_deref().unwrap_or("-"),
                if p.link_up { "up" } else { "down" },
                p.rx_packets,
                p.tx_packets,
                p.rx_bytes,
                p.tx_bytes,
                if drops.is_empty() {
                    "-".to_string()
                } else {
                    drops.join(" ")
                }
            );
        }
        if !hidden.is_empty() {
            let idle = hidden.iter().filter(|p| busy(p) == 0).count();
            let _ = writeln!(
                s,
                "... {} more ports ({idle} with no traffic)",
                hidden.len()
            );
        }
        let sum = |f: &dyn Fn(&PortReport) -> u64| -> u64 { self.ports.iter().map(f).sum() };
        let _ = writeln!(
            s,
            "total: {} ports ({} up), {} rx_pkts, {} tx_pkts, {} drops",
            self.ports.len(),
            self.ports.iter().filter(|p| p.link_up).count(),
            sum(&|p| p.rx_packets),
            sum(&|p| p.tx_packets),
            sum(&|p| p.drops.values().sum()),
        );
        for v in &self.vnis {
            let drops: Vec<String> = v.drops.iter().map(|(k, n)| format!("{k}={n}")).collect();
            let _ = writeln!(
                s,
                "vni {} ({}): decap {} pkts {} bytes, encap {} pkts {} bytes, drops {}",
                v.vni,
                v.bridge,
                v.decap_packets,
                v.decap_bytes,
                v.encap_packets,
                v.encap_bytes,
                if drops.is_empty() {
                    "-".into()
                } else {
                    drops.join(" ")
                }
            );
        }
        for w in &self.workers {
            let _ = writeln!(
                s,
                "worker {} (core {}): {} packets, busy {:.1}%, {:.1} cycles/packet",
                w.worker, w.core, w.packets, w.busy_pct, w.cycles_per_packet
            );
        }
        for m in &self.mempools {
            let _ = writeln!(
                s,
                "mempool {}: {} of {} mbufs in use",
                m.name, m.in_use, m.size
            );
        }
        if self.hugepages.total_bytes > 0 {
            let _ = writeln!(
                s,
                "hugepage heap: {:.1} of {:.1} MB in use",
                self.hugepages.in_use_bytes as f64 / 1048576.0,
                self.hugepages.total_bytes as f64 / 1048576.0
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ports: &[(&str, u64, u64, u64)]) -> Report {
        let ports: Vec<serde_json::Value> = ports
            .iter()
            .map(|&(name, rx, tx, dropped)| {
                let drops = if dropped > 0 {
                    serde_json::json!({ "tx_full": dropped })
                } else {
                    serde_json::json!({})
                };
                serde_json::json!({
                    "name": name, "kind": "tap", "bridge": "vpc1", "link_up": true,
                    "rx_packets": rx, "rx_bytes": rx * 100, "tx_packets": tx,
                    "tx_bytes": tx * 100, "drops": drops, "learn_full": 0,
                    "pmd": serde_json::to_value(EthStats::default()).unwrap(),
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "ports": ports, "workers": [], "tsc_hz": 1,
        }))
        .unwrap()
    }

    #[test]
    fn the_table_can_show_only_the_busiest_ports_and_totals_cover_all() {
        let r = report(&[
            ("quiet", 0, 0, 0),
            ("a-container-with-a-long-port-name", 5, 5, 0),
            ("busy", 900, 800, 0),
            ("lossy", 10, 0, 50),
        ]);
        let all = r.to_table(None);
        let names: Vec<&str> = all
            .lines()
            .skip(1)
            .take(4)
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "quiet",
                "a-container-with-a-long-port-name",
                "busy",
                "lossy"
            ]
        );
        assert!(all.contains("total: 4 ports (4 up), 915 rx_pkts, 805 tx_pkts, 50 drops"));
        let top = r.to_table(Some(2));
        let lines: Vec<&str> = top.lines().collect();
        assert!(
            lines[1].starts_with("busy ") && lines[2].starts_with("lossy "),
            "{top}"
        );
        assert_eq!(lines[3], "... 2 more ports (1 with no traffic)");
        assert!(lines[4].starts_with("total: 4 ports"), "{top}");
        // Columns line up whatever the names' lengths.
        let col = |l: &str| l.find("tap").unwrap();
        assert_eq!(col(lines[1]), col(lines[2]));
    }
}
