//! `vswitchctl trace`: why a frame goes where it goes.
//!
//! - `trace PORT FLOW` (or `--frame HEX`): a frame described on the
//!   command line ([`flow_spec`]) runs through the live snapshot's
//!   pipeline on the control thread, told stage by stage and changing
//!   nothing (`vswitch::trace`), like `ovs-appctl ofproto/trace`.
//! - `trace PORT --live N`: the next N frames the port receives, each
//!   explained by its worker before its burst is decided and recorded
//!   with the fate the burst gave it ([`live`]), like VPP's `trace add`.
//!
//! Both answer in the operator's terms ([`describe`]).

pub mod describe;
pub mod flow_spec;
pub mod live;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use vswitch::{MacAddr, Now, PortId};

use crate::daemon::Daemon;
use describe::{describe, outcome, vpc_mac_of, Names};
use flow_spec::{Defaults, FlowSpec};
use live::Live;

/// A running live trace, on the control thread.
pub(crate) struct LiveJob {
    live: Arc<Live>,
    name: String,
    count: u64,
    /// Records handed to vswitchctl so far.
    read: u64,
    started: Instant,
    last_read: Instant,
}

/// A live trace not read for this long is abandoned (vswitchctl reads
/// every 50 ms while it follows one).
const ABANDONED: std::time::Duration = std::time::Duration::from_secs(3);

impl Daemon<'_> {
    /// `trace PORT FLOW`: the frame `flow` (or the raw `frame`, hex)
    /// describes, sent by NIC `name`, through the pipeline.
    pub(crate) fn trace_frame(
        &self,
        name: &str,
        flow: Option<&str>,
        frame: Option<&str>,
    ) -> Result<Value, String> {
        let slot = self.slot_or_err(name)?;
        let port = self.ports[slot].as_ref().expect("slot_of found it");
        let dp = self.shared.load();
        let pipeline = &dp.pipeline;
        refuse_uplink(pipeline, name, PortId(slot as u16))?;
        let bytes = match (flow, frame) {
            (Some(f), None) => {
                let spec = FlowSpec::parse(f)?;
                let (_, ips) = port.spec.endpoint().unwrap_or((port.mac(), Vec::new()));
                let bridge = pipeline.switch.bridge_of(PortId(slot as u16));
                let mac_of = |ip: IpAddr| -> Option<MacAddr> {
                    let owner = self.ports.iter().flatten().find(|q| {
                        q.spec.bridge == port.spec.bridge
                            && q.spec.endpoint().is_some_and(|(_, ips)| ips.contains(&ip))
                    });
                    owner
                        .map(|q| q.mac())
                        .or_else(|| vpc_mac_of(pipeline, bridge?, ip))
                };
                spec.build(&Defaults {
                    mac: port.mac(),
                    ips: &ips,
                    mac_of: &mac_of,
                })?
            }
            (None, Some(hex)) => parse_hex(hex)?,
            _ => return Err("give a flow or a frame (hex), not both".into()),
        };
        let now = Now::from_ns(self.now_ns());
        let t = pipeline.trace(PortId(slot as u16), &bytes, now);
        let label = |p| self.port_label(p);
        let mut v = describe(
            &t,
            &Names {
                pipeline,
                port: &label,
            },
        );
        v["frame"] = Value::from(hex(&bytes));
        Ok(v)
    }

    /// `trace PORT --live N`: arms a live trace of NIC `name`.
    pub(crate) fn trace_start(&mut self, name: &str, count: u64) -> Result<Value, String> {
        if let Some(job) = &self.live_trace {
            // A trace nobody reads any more (its vswitchctl was killed)
            // gives way; a followed one does not.
            if job.last_read.elapsed() < ABANDONED {
                return Err(format!(
                    "a live trace of port {} is running (one at a time)",
                    job.name
                ));
            }
            self.trace_read(true)?;
        }
        if !(1..=live::MAX_FRAMES).contains(&count) {
            return Err(format!("count {count}: between 1 and {}", live::MAX_FRAMES));
        }
        let port = PortId(self.slot_or_err(name)? as u16);
        refuse_uplink(&self.shared.load().pipeline, name, port)?;
        let live = Arc::new(Live::new(port, count));
        self.shared.trace.arm(Arc::clone(&live));
        self.live_trace = Some(LiveJob {
            live,
            name: name.to_string(),
            count,
            read: 0,
            started: Instant::now(),
            last_read: Instant::now(),
        });
        tracing::info!("tracing the next {count} frames of port {name}");
        Ok(json!({ "port": name, "count": count }))
    }

    /// The live trace's records since the last read; it ends once every
    /// frame asked for was traced and read (or when `stop`).
    pub(crate) fn trace_read(&mut self, stop: bool) -> Result<Value, String> {
        let Some(job) = &self.live_trace else {
            return Err("no live trace is running".into());
        };
        let done = stop || job.live.claimed_all();
        if done {
            // Workers let go of it; what they recorded is in the queue.
            self.shared.trace.disarm();
            if !self.shared.synchronize(crate::daemon::PUBLISH_TIMEOUT) {
                tracing::warn!("a worker did not start a new round: a trace record may be missing");
            }
        }
        let dp = self.shared.load();
        let label = |p| self.port_label(p);
        let names = Names {
            pipeline: &dp.pipeline,
            port: &label,
        };
        let job = self.live_trace.as_ref().expect("checked");
        let mut records = Vec::new();
        while let Some(r) = job.live.pop() {
            let mut v = describe(&r.trace, &names);
            let in_port = r.trace.in_port;
            let answered = v["outcome"]["action"] == "reply";
            let (text, fields) = outcome(r.actual, in_port, answered, &names);
            v["actual"] = fields;
            v["actual_text"] = Value::from(match r.remark {
                Some(d) => format!("{text}, DSCP {d}"),
                None => text,
            });
            v["ts_ns"] = Value::from(r.ts_ns);
            records.push(v);
        }
        let job = self.live_trace.as_mut().expect("checked");
        job.read += records.len() as u64;
        job.last_read = Instant::now();
        let answer = json!({
            "port": job.name,
            "count": job.count,
            "traced": job.read,
            "dropped": job.live.dropped(),
            "secs": job.started.elapsed().as_secs_f64(),
            "running": !done,
            "records": records,
        });
        if done {
            tracing::info!("live trace of port {} ended: {} frames", job.name, job.read);
            self.live_trace = None;
        }
        Ok(answer)
    }

    /// Port `p`'s name for a trace (a NIC's or a tunnel's).
    fn port_label(&self, p: PortId) -> String {
        self.port_name(p).unwrap_or_else(|| format!("port {}", p.0))
    }
}

/// The VTEP's uplink is not switched (its frames are the tunnels'):
/// traces start at the container NICs.
fn refuse_uplink(p: &vswitch::Pipeline, name: &str, port: PortId) -> Result<(), String> {
    if p.is_uplink(port) {
        return Err(format!(
            "{name} is the VTEP's uplink: its frames are decapsulated for the tunnels, not \
             switched; trace the NICs that send them (or capture the uplink)"
        ));
    }
    Ok(())
}

/// A frame given as hex digits (separators `:`, `-`, spaces allowed).
fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | ' '))
        .collect();
    if digits.len() % 2 != 0 {
        return Err("the frame's hex has an odd number of digits".into());
    }
    let bytes = (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| "the frame is not hex".to_string())?;
    if !(14..=9216).contains(&bytes.len()) {
        return Err(format!("a frame of {} bytes: 14 to 9216", bytes.len()));
    }
    Ok(bytes)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
