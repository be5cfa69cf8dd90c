//! The metrics endpoint: `GET /metrics` on the `[metrics] address` in
//! the OpenMetrics text format, which Prometheus scrapes.
//!
//! Off the workers' path by construction: workers only bump their
//! single-writer counters, as they do anyway. A scrape arrives on a
//! thread of its own (tiny_http), which asks the control thread for a
//! [`Snapshot`] through a channel (answered between the control loop's
//! other work, within its 10 ms wait) and encodes it with the Prometheus
//! project's Rust client (`prometheus-client`: names, escaping, units
//! and `# EOF` as the format wants them, none of it hand-written here).
//!
//! Names follow Prometheus conventions: `vswitchd_` prefix, counters end
//! in `_total`, units in the name (`_bytes`, `_seconds`), one family per
//! quantity with labels for ports (`port`, `kind`, `bridge`), drop
//! reasons (`reason`), workers (`worker`, `core`), VNIs and pools.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use crossbeam_channel::{Receiver, Sender};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::stats::Report;

/// What a scrape shows, gathered by the control thread.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Everything `vswitchctl stats` shows.
    pub report: Report,
    /// Per worker, beyond the report's.
    pub workers: Vec<WorkerExtra>,
}

/// A worker's flow cache and its poll rounds' processing times.
#[derive(Debug, Clone, Default)]
pub struct WorkerExtra {
    /// Flow cache hits (frames answered from it).
    pub cache_hits: u64,
    /// Flow cache misses.
    pub cache_misses: u64,
    /// Busy poll rounds' cycles as (bucket's lowest value, rounds); the
    /// buckets are within 25 % (`vswitch::CycleHistogram`).
    pub round_cycles: Vec<(u64, u64)>,
}

/// A scrape's request to the control thread: where to send the snapshot.
type Ask = Sender<Snapshot>;

/// The endpoint's thread and the control thread's end of its channel.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    asks: Receiver<Ask>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The address it listens on (the port chosen when the config's was 0).
    pub address: SocketAddr,
}

/// How long a scrape waits for the control thread (busy with a large
/// config change, say) before it answers 503.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);

impl MetricsServer {
    /// Listens on `address`; scrapes are answered once the control loop
    /// calls [`MetricsServer::serve`].
    pub fn start(address: SocketAddr) -> Result<MetricsServer> {
        let server = tiny_http::Server::http(address)
            .map_err(|e| anyhow!("metrics endpoint on {address}: {e}"))?;
        let address = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| anyhow!("metrics endpoint on {address}: not an IP address"))?;
        let server = Arc::new(server);
        let (ask_tx, asks) = crossbeam_channel::bounded::<Ask>(4);
        let s = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for req in s.incoming_requests() {
                    respond(req, &ask_tx);
                }
            })?;
        Ok(MetricsServer {
            server,
            asks,
            thread: Some(thread),
            address,
        })
    }

    /// Answers the scrapes waiting, each with `snapshot()` (called on
    /// the control thread, only when a scrape waits).
    pub fn serve(&self, snapshot: impl Fn() -> Snapshot) {
        while let Ok(reply) = self.asks.try_recv() {
            let _ = reply.send(snapshot());
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one HTTP request on the endpoint's thread.
fn respond(req: tiny_http::Request, asks: &Sender<Ask>) {
    let header = |v: &str| {
        tiny_http::Header::from_bytes(&b"Content-Type"[..], v.as_bytes()).expect("a valid header")
    };
    let path = req.url().split('?').next().unwrap_or("");
    if *req.method() != tiny_http::Method::Get || path != "/metrics" {
        let r = tiny_http::Response::from_string("vswitchd: GET /metrics\n")
            .with_status_code(404)
            .with_header(header("text/plain; charset=utf-8"));
        let _ = req.respond(r);
        return;
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    let snapshot = asks
        .try_send(tx)
        .ok()
        .and_then(|()| rx.recv_timeout(SNAPSHOT_WAIT).ok());
    let response = match snapshot.map(encode) {
        Some(Ok(text)) => tiny_http::Response::from_string(text).with_header(header(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )),
        Some(Err(e)) => tiny_http::Response::from_string(format!("encoding: {e}\n"))
            .with_status_code(500)
            .with_header(header("text/plain; charset=utf-8")),
        None => tiny_http::Response::from_string("vswitchd's control thread did not answer\n")
            .with_status_code(503)
            .with_header(header("text/plain; charset=utf-8")),
    };
    let _ = req.respond(response);
}

/// The OpenMetrics text of a snapshot.
pub fn encode(s: Snapshot) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(s)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// A snapshot as a collector: every family written at once.
#[derive(Debug)]
struct Scrape(Snapshot);

type Labels = Vec<(&'static str, Cow<'static, str>)>;

/// One family: its samples, each with its labels.
fn family<M: EncodeMetric>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let samples: Vec<(Labels, M)> = samples.into_iter().collect();
    let Some((_, first)) = samples.first() else {
        return Ok(());
    };
    let kind: MetricType = first.metric_type();
    let mut m = e.encode_descriptor(name, help, unit, kind)?;
    match &samples[..] {
        // One sample without labels: `name value`, not `name{} value`.
        [(labels, metric)] if labels.is_empty() => metric.encode(m),
        _ => {
            for (labels, metric) in &samples {
                metric.encode(m.encode_family(labels)?)?;
            }
            Ok(())
        }
    }
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn gauge(v: f64) -> ConstGauge<f64> {
    ConstGauge::new(v)
}

/// A label value, escaped as the text format wants (`\\`, `\"`, `\n`):
/// prometheus-client 0.24 writes label values as given.
fn label(v: impl Into<Cow<'static, str>>) -> Cow<'static, str> {
    let v = v.into();
    if v.contains(['\\', '"', '\n']) {
        Cow::Owned(
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n"),
        )
    } else {
        v
    }
}

/// Upper bounds (seconds) of the round-time histogram's buckets.
const ROUND_BOUNDS: [f64; 12] = [
    1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 1e-2, 1e-1,
];

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = &self.0.report;
        let hz = r.tsc_hz.max(1) as f64;
        family(
            &mut e,
            "vswitchd_tsc",
            "TSC frequency the cycle counters count in",
            Some(&Unit::Other("hertz".into())),
            [(Labels::new(), gauge(r.tsc_hz as f64))],
        )?;

        // Ports.
        let port = |p: &crate::stats::PortReport| -> Labels {
            vec![
                ("port", label(p.name.clone())),
                ("kind", label(p.kind.clone())),
                ("bridge", label(p.bridge.clone().unwrap_or_default())),
            ]
        };
        let per_port = |f: fn(&crate::stats::PortReport) -> u64| {
            r.ports.iter().map(move |p| (port(p), counter(f(p))))
        };
        family(
            &mut e,
            "vswitchd_port_rx_packets",
            "Frames the switch received on the port",
            None,
            per_port(|p| p.rx_packets),
        )?;
        family(
            &mut e,
            "vswitchd_port_rx",
            "Bytes the switch received on the port",
            Some(&Unit::Bytes),
            per_port(|p| p.rx_bytes),
        )?;
        family(
            &mut e,
            "vswitchd_port_tx_packets",
            "Frames the switch sent on the port",
            None,
            per_port(|p| p.tx_packets),
        )?;
        family(
            &mut e,
            "vswitchd_port_tx",
            "Bytes the switch sent on the port",
            Some(&Unit::Bytes),
            per_port(|p| p.tx_bytes),
        )?;
        family(
            &mut e,
            "vswitchd_port_learn_full",
            "Source MACs of the port not learned (table bucket full)",
            None,
            per_port(|p| p.learn_full),
        )?;
        family(
            &mut e,
            "vswitchd_port_rx_superframes",
            "Of the received frames, GSO superframes (counted once)",
            None,
            per_port(|p| p.rx_superframes),
        )?;
        family(
            &mut e,
            "vswitchd_port_tx_superframes",
            "Of the sent frames, superframes the port took whole",
            None,
            per_port(|p| p.tx_superframes),
        )?;
        family(
            &mut e,
            "vswitchd_port_segmented",
            "Superframes cut into segments for the port",
            None,
            per_port(|p| p.segmented),
        )?;
        family(
            &mut e,
            "vswitchd_port_punted",
            "Frames handed to the VTEP's host stack",
            None,
            per_port(|p| p.punted),
        )?;
        family(
            &mut e,
            "vswitchd_port_drops",
            "Frames dropped, by port and reason (see README, Drop reasons)",
            None,
            r.ports.iter().flat_map(|p| {
                p.drops.iter().map(move |(why, n)| {
                    let mut l = port(p);
                    l.push(("reason", label(why.clone())));
                    (l, counter(*n))
                })
            }),
        )?;
        family(
            &mut e,
            "vswitchd_port_link_up",
            "1 when the port's link is up",
            None,
            r.ports
                .iter()
                .map(|p| (port(p), gauge(f64::from(u8::from(p.link_up))))),
        )?;
        family(
            &mut e,
            "vswitchd_port_sessions",
            "Sessions charged to the port (against [sessions] per_port)",
            None,
            r.ports
                .iter()
                .map(|p| (port(p), gauge(f64::from(p.sessions)))),
        )?;
        family(
            &mut e,
            "vswitchd_port_pmd_rx_missed",
            "Frames the device dropped because its rx queues were full",
            None,
            per_port(|p| p.pmd.imissed),
        )?;
        family(
            &mut e,
            "vswitchd_port_pmd_rx_errors",
            "The device's rx errors",
            None,
            per_port(|p| p.pmd.ierrors),
        )?;
        family(
            &mut e,
            "vswitchd_port_pmd_tx_errors",
            "The device's tx errors",
            None,
            per_port(|p| p.pmd.oerrors),
        )?;
        family(
            &mut e,
            "vswitchd_port_pmd_rx_nombuf",
            "The device's rx mbuf allocation failures",
            None,
            per_port(|p| p.pmd.rx_nombuf),
        )?;

        // VNIs.
        let vni = |v: &crate::stats::VniReport| -> Labels {
            vec![
                ("vni", label(v.vni.to_string())),
                ("bridge", label(v.bridge.clone())),
            ]
        };
        let per_vni = |f: fn(&crate::stats::VniReport) -> u64| {
            r.vnis.iter().map(move |v| (vni(v), counter(f(v))))
        };
        family(
            &mut e,
            "vswitchd_vni_decap_packets",
            "Frames decapsulated into the VNI's bridge",
            None,
            per_vni(|v| v.decap_packets),
        )?;
        family(
            &mut e,
            "vswitchd_vni_decap",
            "Inner bytes decapsulated into the VNI's bridge",
            Some(&Unit::Bytes),
            per_vni(|v| v.decap_bytes),
        )?;
        family(
            &mut e,
            "vswitchd_vni_encap_packets",
            "Frames encapsulated out of the VNI's bridge",
            None,
            per_vni(|v| v.encap_packets),
        )?;
        family(
            &mut e,
            "vswitchd_vni_encap",
            "Inner bytes encapsulated out of the VNI's bridge",
            Some(&Unit::Bytes),
            per_vni(|v| v.encap_bytes),
        )?;
        family(
            &mut e,
            "vswitchd_vni_drops",
            "Frames dropped on the VNI's tunnel ports, by reason",
            None,
            r.vnis.iter().flat_map(|v| {
                v.drops.iter().map(move |(why, n)| {
                    let mut l = vni(v);
                    l.push(("reason", label(why.clone())));
                    (l, counter(*n))
                })
            }),
        )?;

        // Workers.
        let worker = |w: &crate::stats::WorkerReport| -> Labels {
            vec![
                ("worker", label(w.worker.to_string())),
                ("core", label(w.core.to_string())),
            ]
        };
        let per_worker = |f: fn(&crate::stats::WorkerReport) -> u64| {
            r.workers.iter().map(move |w| (worker(w), counter(f(w))))
        };
        family(
            &mut e,
            "vswitchd_worker_packets",
            "Frames the worker received",
            None,
            per_worker(|w| w.packets),
        )?;
        family(
            &mut e,
            "vswitchd_worker_busy_cycles",
            "TSC cycles of the worker's poll rounds that had frames",
            None,
            per_worker(|w| w.busy_cycles),
        )?;
        family(
            &mut e,
            "vswitchd_worker_idle_cycles",
            "TSC cycles of the worker's empty poll rounds",
            None,
            per_worker(|w| w.idle_cycles),
        )?;
        family(
            &mut e,
            "vswitchd_worker_cycles_per_packet",
            "Busy cycles per frame since start (rate(busy_cycles)/rate(packets) for a window)",
            None,
            r.workers
                .iter()
                .map(|w| (worker(w), gauge(w.cycles_per_packet))),
        )?;
        let none = WorkerExtra::default();
        let extra = |i: usize| self.0.workers.get(i).unwrap_or(&none);
        family(
            &mut e,
            "vswitchd_worker_flow_cache_hits",
            "Frames the worker's flow cache answered",
            None,
            r.workers
                .iter()
                .map(|w| (worker(w), counter(extra(w.worker).cache_hits))),
        )?;
        family(
            &mut e,
            "vswitchd_worker_flow_cache_misses",
            "Frames the worker's flow cache did not answer",
            None,
            r.workers
                .iter()
                .map(|w| (worker(w), counter(extra(w.worker).cache_misses))),
        )?;
        // Poll rounds' processing time as a histogram in seconds.
        let round_hist =
            |w: &crate::stats::WorkerReport| RoundHistogram::new(&extra(w.worker).round_cycles, hz);
        family(
            &mut e,
            "vswitchd_worker_round",
            "Processing time of the worker's poll rounds with frames (rx, switch, tx of a burst per queue; buckets within 25 %)",
            Some(&Unit::Seconds),
            r.workers.iter().map(|w| (worker(w), round_hist(w))),
        )?;

        // Sessions, pools, hugepages.
        let s = &r.sessions;
        family(
            &mut e,
            "vswitchd_sessions_capacity",
            "Slots of the session table",
            None,
            [(Labels::new(), gauge(s.capacity as f64))],
        )?;
        family(
            &mut e,
            "vswitchd_sessions_port_limit",
            "Sessions one port may hold ([sessions] per_port)",
            None,
            [(Labels::new(), gauge(f64::from(s.per_port)))],
        )?;
        family(
            &mut e,
            "vswitchd_sessions_bridge_limit",
            "Sessions one bridge may hold ([sessions] per_bridge)",
            None,
            [(Labels::new(), gauge(f64::from(s.per_bridge)))],
        )?;
        family(
            &mut e,
            "vswitchd_bridge_sessions",
            "Sessions charged to the bridge",
            None,
            s.bridges
                .iter()
                .map(|(b, n)| (vec![("bridge", label(b.clone()))], gauge(f64::from(*n)))),
        )?;
        family(
            &mut e,
            "vswitchd_sessions_evictions",
            "Unreplied sessions evicted for new ones",
            None,
            [(Labels::new(), counter(s.evictions))],
        )?;
        let pool = |p: &crate::stats::MempoolReport| vec![("pool", label(p.name.clone()))];
        family(
            &mut e,
            "vswitchd_mempool_size",
            "Mbufs in the pool",
            None,
            r.mempools
                .iter()
                .map(|p| (pool(p), gauge(f64::from(p.size)))),
        )?;
        family(
            &mut e,
            "vswitchd_mempool_in_use",
            "Mbufs of the pool held by rings, bursts and tx buffers",
            None,
            r.mempools
                .iter()
                .map(|p| (pool(p), gauge(f64::from(p.in_use)))),
        )?;
        family(
            &mut e,
            "vswitchd_hugepages",
            "Bytes of hugepages DPDK's heap holds",
            Some(&Unit::Bytes),
            [(Labels::new(), gauge(r.hugepages.total_bytes as f64))],
        )?;
        family(
            &mut e,
            "vswitchd_hugepages_in_use",
            "Bytes allocated from DPDK's heap",
            Some(&Unit::Bytes),
            [(Labels::new(), gauge(r.hugepages.in_use_bytes as f64))],
        )?;
        Ok(())
    }
}

/// A worker's round times as an OpenMetrics histogram (seconds), from
/// its cycle buckets: each bucket counted at its lowest value, so a
/// round lands in the bucket of a bound at most 25 % above its time.
#[derive(Debug)]
struct RoundHistogram {
    sum: f64,
    count: u64,
    /// (upper bound, rounds in this bucket alone); the last is +Inf.
    buckets: Vec<(f64, u64)>,
}

impl RoundHistogram {
    fn new(cycles: &[(u64, u64)], hz: f64) -> RoundHistogram {
        let mut buckets: Vec<(f64, u64)> = ROUND_BOUNDS
            .iter()
            .chain([f64::MAX].iter())
            .map(|&b| (b, 0))
            .collect();
        let (mut sum, mut count) = (0.0, 0);
        for &(lo, n) in cycles {
            let secs = lo as f64 / hz;
            sum += secs * n as f64;
            count += n;
            let i = buckets.iter().position(|&(b, _)| secs <= b).expect("+Inf");
            buckets[i].1 += n;
        }
        RoundHistogram {
            sum,
            count,
            buckets,
        }
    }
}

impl prometheus_client::metrics::TypedMetric for RoundHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for RoundHistogram {
    fn encode(
        &self,
        mut e: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        e.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum,
            self.count,
            &self.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{PortReport, WorkerReport};

    fn snapshot() -> Snapshot {
        let mut drops = std::collections::BTreeMap::new();
        drops.insert("spoofed".to_string(), 3);
        let port = PortReport {
            name: "c1".into(),
            kind: "tap".into(),
            bridge: Some("vpc\"1".into()),
            link_up: true,
            rx_packets: 10,
            rx_bytes: 1000,
            tx_packets: 7,
            tx_bytes: 700,
            drops,
            learn_full: 0,
            rx_superframes: 0,
            tx_superframes: 0,
            segmented: 0,
            punted: 0,
            sessions: 2,
            pmd: Default::default(),
        };
        Snapshot {
            report: Report {
                ports: vec![port],
                vnis: vec![],
                workers: vec![WorkerReport {
                    worker: 0,
                    core: 1,
                    packets: 10,
                    busy_cycles: 5000,
                    idle_cycles: 100,
                    busy_pct: 98.0,
                    cycles_per_packet: 500.0,
                }],
                mempools: vec![],
                hugepages: Default::default(),
                sessions: Default::default(),
                tsc_hz: 1_000_000_000,
            },
            workers: vec![WorkerExtra {
                cache_hits: 4,
                cache_misses: 6,
                // 3 rounds of 1.5 us, 1 of 300 us at 1 GHz.
                round_cycles: vec![(1500, 3), (300_000, 1)],
            }],
        }
    }

    #[test]
    fn the_text_is_openmetrics_with_escaped_labels_units_and_histograms() {
        let text = encode(snapshot()).unwrap();
        for line in [
            "# TYPE vswitchd_port_rx_packets counter",
            r#"vswitchd_port_rx_packets_total{port="c1",kind="tap",bridge="vpc\"1"} 10"#,
            "# UNIT vswitchd_port_rx_bytes bytes",
            r#"vswitchd_port_rx_bytes_total{port="c1",kind="tap",bridge="vpc\"1"} 1000"#,
            r#"vswitchd_port_drops_total{port="c1",kind="tap",bridge="vpc\"1",reason="spoofed"} 3"#,
            r#"vswitchd_port_link_up{port="c1",kind="tap",bridge="vpc\"1"} 1.0"#,
            r#"vswitchd_worker_flow_cache_misses_total{worker="0",core="1"} 6"#,
            "# TYPE vswitchd_worker_round_seconds histogram",
            r#"vswitchd_worker_round_seconds_count{worker="0",core="1"} 4"#,
            r#"vswitchd_worker_round_seconds_bucket{le="0.000001",worker="0",core="1"} 0"#,
            r#"vswitchd_worker_round_seconds_bucket{le="0.000002",worker="0",core="1"} 3"#,
            r#"vswitchd_worker_round_seconds_bucket{le="0.0005",worker="0",core="1"} 4"#,
            r#"vswitchd_worker_round_seconds_bucket{le="+Inf",worker="0",core="1"} 4"#,
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // A family without samples (no VNIs) is left out, not emitted empty.
        assert!(!text.contains("vswitchd_vni_"), "{text}");
    }
}
