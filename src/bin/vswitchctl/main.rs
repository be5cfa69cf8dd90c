//! `vswitchctl`: talk to a running vswitchd over its control socket.
//!
//! Every verb is one request of the JSON protocol (README, "Control
//! socket"; `show` is several); answers are printed for people (see
//! `human`: tables with units, `key: value` lines, TOML for configs and
//! policies), or as the raw JSON with `--json`. Exit status
//! ([`exit`]): 0 done, 1 refused by vswitchd, 2 a usage error or a local
//! input that cannot be read (nothing was sent), 3 vswitchd not reachable.

use std::path::PathBuf;
use std::process::ExitCode;

mod human;

use clap::{Parser, Subcommand};
use serde_json::{Map, Value};
use vswitchd::capture::Direction;
use vswitchd::control::{request, RemoteStation, Request};
use vswitchd::stats::Report;

#[derive(Parser)]
#[command(name = "vswitchctl", version, about = "Control a running vswitchd")]
struct Cli {
    /// Control socket of the vswitchd to talk to.
    #[arg(
        long,
        short,
        env = "VSWITCHCTL_SOCKET",
        default_value = "/run/vswitchd/vswitchd.sock"
    )]
    socket: PathBuf,
    /// Print the raw JSON answer.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    noun: Noun,
}

#[derive(Subcommand)]
enum Noun {
    /// Overview: bridges with their ports, VPCs, the VTEP's tunnels (as
    /// `ovs-vsctl show`).
    Show,
    /// Per-port, per-tunnel, per-VNI and per-worker counters.
    Stats {
        /// Only the N busiest ports (frames received, sent and dropped),
        /// busiest first; the totals still cover every port.
        #[arg(long, value_name = "N")]
        top: Option<usize>,
    },
    /// Per worker: cycles per packet and busy share.
    PmdPerf {
        /// Start a new measurement period after printing.
        #[arg(long)]
        clear: bool,
        /// Per-stage cycles (rx, decide, act, tx) on or off: each
        /// worker then reads the clock at every stage boundary (about a
        /// cycle per frame each), as Open vSwitch's pmd-perf-metrics.
        #[arg(long, value_name = "on|off", value_parser = on_off)]
        stages: Option<bool>,
    },
    /// Places every rx queue afresh by its measured load (pinned ones
    /// stay) and moves those that change worker.
    PmdRxqRebalance,
    /// Per worker: percentiles of the processing time of a poll round.
    Latency,
    /// Ports (container NICs, uplinks).
    Port {
        #[command(subcommand)]
        verb: PortVerb,
    },
    /// Bridge domains.
    Bridge {
        #[command(subcommand)]
        verb: BridgeVerb,
    },
    /// VPCs: subnets, gateways, router MAC and the endpoints routed to.
    Vpc {
        #[command(subcommand)]
        verb: VpcVerb,
    },
    /// The vswitch-agent of this host: etcd reachable, revision applied,
    /// endpoints local and remote, refused claims.
    Agent {
        #[command(subcommand)]
        verb: AgentVerb,
    },
    /// The MAC learning tables.
    Fdb {
        #[command(subcommand)]
        verb: FdbVerb,
    },
    /// Sessions of stateful security groups.
    Session {
        #[command(subcommand)]
        verb: SessionVerb,
    },
    /// Security groups and their attachment to ports.
    Acl {
        #[command(subcommand)]
        verb: PolicyVerb,
    },
    /// QoS policies and their attachment to ports.
    Qos {
        #[command(subcommand)]
        verb: PolicyVerb,
    },
    /// VXLAN tunnels: remote VTEPs per VNI, underlay neighbours.
    Tunnel {
        #[command(subcommand)]
        verb: TunnelVerb,
    },
    /// The running configuration.
    Config {
        #[command(subcommand)]
        verb: ConfigVerb,
    },
    /// Why a frame goes where it goes, stage by stage: a frame described
    /// as a flow (as `ovs-appctl ofproto/trace`; nothing is changed), or
    /// with --live the next frames a port receives (as VPP's `trace add`),
    /// each with the fate it got.
    Trace {
        /// The NIC the frames come in by.
        port: String,
        /// The frame, e.g. `tcp,nw_dst=10.0.0.2,tp_dst=80`: a protocol
        /// (eth, arp, ip, ipv6, tcp, udp, icmp, tcp6, udp6, icmp6) and
        /// fields (dl_src, dl_dst, dl_vlan, dl_type, nw_src, nw_dst,
        /// ipv6_src, ipv6_dst, arp_spa, arp_tpa, nw_ttl, nw_proto,
        /// tp_src, tp_dst, tcp_flags, icmp_type, icmp_code, len); the
        /// port's MAC and address are the source unless given.
        flow: Option<String>,
        /// The frame's bytes in hex instead of a flow.
        #[arg(long, conflicts_with = "flow")]
        frame: Option<String>,
        /// Trace the next N frames the port receives instead (1-1000).
        #[arg(long, value_name = "N", conflicts_with_all = ["flow", "frame"])]
        live: Option<u64>,
        /// With --live: stop waiting after this many seconds.
        #[arg(long, value_name = "SECS", default_value_t = 10.0, requires = "live")]
        timeout: f64,
    },
}

#[derive(Subcommand)]
enum PortVerb {
    /// List ports.
    List,
    /// One port's config, counters and link.
    Show { name: String },
    /// Hot-plug a port: `[[port]]` fields as KEY=VALUE, e.g.
    /// `name=web kind=tap netns=c1 bridge=vpc1 ipv4=10.0.0.5/24`.
    Add {
        #[arg(required = true)]
        fields: Vec<String>,
    },
    /// Change a port's port security and MAC limit: `port_security`,
    /// `mac` (vhost-user), `addresses`, `allowed_addresses`,
    /// `allowed_macs`, `allow_vlan`, `allowed_ethertypes`, `mac_limit`
    /// as KEY=VALUE (lists comma-separated; `KEY=` removes the field).
    Set {
        name: String,
        #[arg(required = true)]
        fields: Vec<String>,
    },
    /// Unplug a port.
    Del { name: String },
    /// Move a TAP NIC into another container (keeps MAC, address, groups).
    Move {
        name: String,
        /// The new container's named netns.
        #[arg(long, conflicts_with = "pid", required_unless_present = "pid")]
        netns: Option<String>,
        /// A process of the new container.
        #[arg(long)]
        pid: Option<u32>,
        /// The interface name there (default: unchanged).
        #[arg(long)]
        ifname: Option<String>,
    },
    /// Copy a port's frames to a pcap file (any port kind, vhost-user
    /// too) until COUNT frames, SECS seconds, or Ctrl-C; traffic goes on.
    Capture {
        name: String,
        /// The pcap file (vswitchd writes it).
        #[arg(short = 'w', long = "write", value_name = "FILE")]
        file: PathBuf,
        /// Frames the port receives, is sent, or both.
        #[arg(long, value_enum, default_value_t = Dir::Both)]
        direction: Dir,
        /// Stop after this many frames.
        #[arg(short = 'c', long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Bytes kept of each frame (default 9216).
        #[arg(short = 's', long)]
        snaplen: Option<u32>,
    },
    /// End the running capture.
    CaptureStop,
}

/// Capture directions on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Dir {
    Rx,
    Tx,
    Both,
}

#[derive(Subcommand)]
enum BridgeVerb {
    /// List bridge domains.
    List,
}

#[derive(Subcommand)]
enum AgentVerb {
    /// Show the agent's last report.
    Show,
}

#[derive(Subcommand)]
enum VpcVerb {
    /// List VPCs with their subnets and endpoints.
    List,
    /// Add a VPC (no subnets yet).
    Add {
        name: String,
        /// Its router MAC (default: derived from the name, as on every host).
        #[arg(long)]
        router_mac: Option<String>,
    },
    /// Remove a VPC without subnets.
    Del { name: String },
    /// Make a bridge a subnet of a VPC with a gateway ("192.168.60.1/24"),
    /// or take it out of its VPC with --none.
    Subnet {
        bridge: String,
        #[arg(required_unless_present = "none")]
        vpc: Option<String>,
        #[arg(required_unless_present = "none")]
        gateway: Option<String>,
        /// Take the bridge out of its VPC.
        #[arg(long, conflicts_with_all = ["vpc", "gateway"])]
        none: bool,
    },
}

#[derive(Subcommand)]
enum FdbVerb {
    /// Show learned MACs.
    Show {
        /// Only this bridge.
        bridge: Option<String>,
    },
    /// Forget learned MACs (static ones stay).
    Flush {
        /// Only this bridge.
        #[arg(long)]
        bridge: Option<String>,
        /// Only those behind this port.
        #[arg(long)]
        port: Option<String>,
    },
}

#[derive(Subcommand)]
enum SessionVerb {
    /// List live sessions.
    Show {
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// End every session.
    Flush,
}

#[derive(Subcommand)]
enum PolicyVerb {
    /// Define/replace (from a TOML file of `[[security_group]]` or
    /// `[[qos_policy]]` tables), remove, and attach to a port.
    Set {
        /// TOML file with the tables to define or replace.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Names to remove.
        #[arg(long)]
        remove: Vec<String>,
        /// The port to attach to.
        #[arg(long)]
        port: Option<String>,
        /// Ingress (towards the container) name; "" detaches.
        #[arg(long)]
        ingress: Option<String>,
        /// Egress (from the container) name; "" detaches.
        #[arg(long)]
        egress: Option<String>,
    },
    /// Show the definitions and attachments.
    Show,
}

#[derive(Subcommand)]
enum TunnelVerb {
    /// Add a remote VTEP to a bridge's flood list.
    Add { bridge: String, remote: String },
    /// Remove a remote VTEP from a bridge's flood list.
    Del { bridge: String, remote: String },
    /// List tunnel ports and neighbours.
    List,
    /// Replace a bridge's remote VTEPs and remote stations at once (what
    /// an agent following a shared store applies).
    Set {
        bridge: String,
        /// A remote VTEP of its flood list (repeatable).
        #[arg(long = "vtep")]
        vteps: Vec<String>,
        /// A remote station as MAC@VTEP, or MAC@VTEP@IP[,IP..] with its
        /// addresses in a VPC's bridge (repeatable).
        #[arg(long = "station")]
        stations: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ConfigVerb {
    /// Print the running config as TOML (loadable by `vswitchd run`).
    Dump,
}

/// A `KEY=VALUE` port field as JSON: booleans and integers typed, lists
/// (`static_macs`, `rx_workers`) split at commas, the rest strings.
/// `on` or `off`, as a flag's value.
fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected on or off, not {s:?}")),
    }
}

fn field(kv: &str) -> Result<(String, Value), String> {
    let (k, v) = kv
        .split_once('=')
        .ok_or_else(|| format!("{kv:?}: expected KEY=VALUE"))?;
    let scalar = |s: &str| -> Value {
        match s {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => s
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(s)),
        }
    };
    let value = match k {
        // An empty value removes the field (`port set`).
        _ if v.is_empty() => Value::Null,
        "static_macs" | "rx_workers" | "allowed_macs" | "allowed_ethertypes" => {
            Value::Array(v.split(',').filter(|s| !s.is_empty()).map(scalar).collect())
        }
        // Addresses stay strings.
        "addresses" | "allowed_addresses" => Value::Array(
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(Value::from)
                .collect(),
        ),
        // Names stay strings even when they look like numbers.
        "name" | "netns" | "ifname" | "iface" | "bridge" => Value::from(v),
        _ => scalar(v),
    };
    Ok((k.to_string(), value))
}

fn policy_request(acl: bool, verb: &PolicyVerb) -> Result<Request, String> {
    Ok(match verb {
        PolicyVerb::Show if acl => Request::AclShow,
        PolicyVerb::Show => Request::QosShow,
        PolicyVerb::Set {
            file,
            remove,
            port,
            ingress,
            egress,
        } => {
            let tables = match file {
                Some(f) => Some(
                    std::fs::read_to_string(f)
                        .map_err(|e| format!("cannot read {}: {e}", f.display()))?,
                ),
                None => None,
            };
            let (remove, port, ingress, egress) = (
                remove.clone(),
                port.clone(),
                ingress.clone(),
                egress.clone(),
            );
            if acl {
                Request::AclSet {
                    groups: tables,
                    remove,
                    port,
                    ingress,
                    egress,
                }
            } else {
                Request::QosSet {
                    policies: tables,
                    remove,
                    port,
                    ingress,
                    egress,
                }
            }
        }
    })
}

fn to_request(noun: &Noun) -> Result<Request, String> {
    Ok(match noun {
        Noun::Show => unreachable!("main answers show with several requests"),
        Noun::Stats { .. } => Request::Stats,
        Noun::PmdPerf { clear, stages } => Request::PmdPerf {
            clear: *clear,
            stages: *stages,
        },
        Noun::PmdRxqRebalance => Request::PmdRxqRebalance,
        Noun::Latency => Request::Latency,
        Noun::Port { verb } => match verb {
            PortVerb::List => Request::PortList,
            PortVerb::Show { name } => Request::PortShow { name: name.clone() },
            PortVerb::Add { fields } => Request::PortAdd {
                port: fields
                    .iter()
                    .map(|f| field(f))
                    .collect::<Result<Map<_, _>, _>>()?,
            },
            PortVerb::Set { name, fields } => Request::PortSet {
                name: name.clone(),
                fields: fields
                    .iter()
                    .map(|f| field(f))
                    .collect::<Result<Map<_, _>, _>>()?,
            },
            PortVerb::Del { name } => Request::PortDel { name: name.clone() },
            PortVerb::Capture {
                name,
                file,
                direction,
                count,
                duration,
                snaplen,
            } => Request::PortCapture {
                name: name.clone(),
                // vswitchd writes it: a path of ours made whole.
                file: std::path::absolute(file).map_err(|e| format!("{}: {e}", file.display()))?,
                direction: match direction {
                    Dir::Rx => Direction::Rx,
                    Dir::Tx => Direction::Tx,
                    Dir::Both => Direction::Both,
                },
                count: *count,
                secs: *duration,
                snaplen: *snaplen,
            },
            PortVerb::CaptureStop => Request::CaptureStop,
            PortVerb::Move {
                name,
                netns,
                pid,
                ifname,
            } => Request::PortMove {
                name: name.clone(),
                netns: netns.clone(),
                pid: *pid,
                ifname: ifname.clone(),
            },
        },
        Noun::Bridge {
            verb: BridgeVerb::List,
        } => Request::BridgeList,
        Noun::Vpc { verb } => match verb {
            VpcVerb::List => Request::VpcList,
            VpcVerb::Add { name, router_mac } => Request::VpcAdd {
                name: name.clone(),
                router_mac: router_mac.clone(),
            },
            VpcVerb::Del { name } => Request::VpcDel { name: name.clone() },
            VpcVerb::Subnet {
                bridge,
                vpc,
                gateway,
                none: _,
            } => Request::BridgeVpc {
                bridge: bridge.clone(),
                vpc: vpc.clone(),
                gateway: gateway.clone(),
            },
        },
        Noun::Agent {
            verb: AgentVerb::Show,
        } => Request::AgentShow,
        Noun::Fdb { verb } => match verb {
            FdbVerb::Show { bridge } => Request::FdbShow {
                bridge: bridge.clone(),
            },
            FdbVerb::Flush { bridge, port } => Request::FdbFlush {
                bridge: bridge.clone(),
                port: port.clone(),
            },
        },
        Noun::Session { verb } => match verb {
            SessionVerb::Show { limit } => Request::SessionShow { limit: *limit },
            SessionVerb::Flush => Request::SessionFlush,
        },
        Noun::Acl { verb } => policy_request(true, verb)?,
        Noun::Qos { verb } => policy_request(false, verb)?,
        Noun::Tunnel { verb } => match verb {
            TunnelVerb::Add { bridge, remote } => Request::TunnelAdd {
                bridge: bridge.clone(),
                remote: remote.clone(),
            },
            TunnelVerb::Del { bridge, remote } => Request::TunnelDel {
                bridge: bridge.clone(),
                remote: remote.clone(),
            },
            TunnelVerb::List => Request::TunnelList,
            TunnelVerb::Set {
                bridge,
                vteps,
                stations,
            } => Request::TunnelSet {
                bridge: bridge.clone(),
                vteps: vteps.clone(),
                stations: stations
                    .iter()
                    .map(|s| {
                        let mut parts = s.split('@');
                        let (Some(mac), Some(vtep), ips) =
                            (parts.next(), parts.next(), parts.next())
                        else {
                            return Err(format!("--station {s:?}: expected MAC@VTEP[@IP,..]"));
                        };
                        Ok(RemoteStation {
                            mac: mac.into(),
                            vtep: vtep.into(),
                            ips: ips
                                .into_iter()
                                .flat_map(|l| l.split(','))
                                .map(String::from)
                                .collect(),
                        })
                    })
                    .collect::<Result<_, String>>()?,
            },
        },
        Noun::Config {
            verb: ConfigVerb::Dump,
        } => Request::ConfigDump,
        Noun::Trace {
            port,
            live: Some(count),
            ..
        } => Request::TraceStart {
            port: port.clone(),
            count: *count,
        },
        Noun::Trace {
            port, flow, frame, ..
        } => {
            if flow.is_none() && frame.is_none() {
                return Err("trace: give a FLOW, --frame HEX or --live N".into());
            }
            Request::Trace {
                port: port.clone(),
                flow: flow.clone(),
                frame: frame.clone(),
            }
        }
    })
}

/// Exit statuses, so that scripts tell a refusal from a mistake of their
/// own and from a switch that is down.
mod exit {
    /// vswitchd refused the request (the message says why; nothing
    /// changed).
    pub const REFUSED: u8 = 1;
    /// A usage error (clap exits with 2 as well) or a local input that
    /// cannot be read: nothing was sent.
    pub const USAGE: u8 = 2;
    /// vswitchd could not be asked (no socket, no answer).
    pub const UNREACHABLE: u8 = 3;
}

/// Set by Ctrl-C or SIGTERM while vswitchctl follows a capture or a live
/// trace (which then stops it rather than dying with it).
fn interrupt_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, std::sync::Arc::clone(&flag));
    }
    flag
}

/// One request of a follower's loop: its answer, or the exit status
/// (said on stderr) of a refusal or an unreachable vswitchd.
fn ask(cli: &Cli, req: &Request) -> Result<Value, ExitCode> {
    match request(&cli.socket, req) {
        Ok(r) if r.ok => Ok(r.result.unwrap_or_default()),
        Ok(r) => {
            eprintln!("vswitchctl: {}", r.error.unwrap_or_default());
            Err(ExitCode::from(exit::REFUSED))
        }
        Err(e) => {
            eprintln!("vswitchctl: {e}");
            Err(ExitCode::from(exit::UNREACHABLE))
        }
    }
}

/// After `port capture` started one: waits for its end (its count or
/// duration, or Ctrl-C, which stops it), then says what was written.
fn follow_capture(cli: &Cli, started: Value) -> ExitCode {
    let interrupted = interrupt_flag();
    if !cli.json {
        eprintln!(
            "capturing {} frames of port {} to {} (Ctrl-C stops)",
            started["direction"].as_str().unwrap_or("both"),
            started["port"].as_str().unwrap_or("?"),
            started["file"].as_str().unwrap_or("?")
        );
    }
    let status = loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let req = if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            Request::CaptureStop
        } else {
            Request::CaptureStatus
        };
        let s = match ask(cli, &req) {
            Ok(s) => s,
            Err(code) => return code,
        };
        if s["running"] != true && s["file"] == started["file"] {
            break s;
        }
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&status).expect("json"));
    } else {
        println!(
            "{} frames written to {} in {:.1} s ({} dropped){}",
            status["frames"],
            status["file"].as_str().unwrap_or("?"),
            status["secs"].as_f64().unwrap_or(0.0),
            status["dropped"],
            status["error"]
                .as_str()
                .map_or(String::new(), |e| format!("; error: {e}"))
        );
    }
    match status["error"].is_null() {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(exit::REFUSED),
    }
}

/// After `trace --live` started one: prints each traced frame as it
/// comes, until all were traced, `timeout` seconds, or Ctrl-C (which
/// stop the trace).
fn follow_trace(cli: &Cli, timeout: f64) -> ExitCode {
    let interrupted = interrupt_flag();
    let deadline = std::time::Instant::now()
        + std::time::Duration::from_secs_f64(timeout.clamp(0.0, 86_400.0));
    let mut all = Vec::new();
    let last = loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let stop = interrupted.load(std::sync::atomic::Ordering::Relaxed)
            || std::time::Instant::now() >= deadline;
        let answer = match ask(cli, &Request::TraceRead { stop }) {
            Ok(a) => a,
            Err(code) => return code,
        };
        for r in answer["records"].as_array().into_iter().flatten() {
            if !cli.json {
                println!("frame {} of {}:", all.len() + 1, answer["count"]);
                print!("{}", human::trace(r));
            }
            all.push(r.clone());
        }
        if answer["running"] != true {
            break answer;
        }
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&all).expect("json"));
    } else {
        println!(
            "{} of {} frames traced on {} in {:.1} s{}",
            all.len(),
            last["count"],
            last["port"].as_str().unwrap_or("?"),
            last["secs"].as_f64().unwrap_or(0.0),
            match last["dropped"].as_u64() {
                Some(0) | None => String::new(),
                Some(d) => format!(" ({d} records lost)"),
            }
        );
    }
    ExitCode::SUCCESS
}

/// `show`: the answers of the listing verbs, as one overview (or one
/// JSON object of them with `--json`).
fn show(cli: &Cli) -> ExitCode {
    let ask = |req: Request| -> Result<Value, (u8, String)> {
        let r = request(&cli.socket, &req).map_err(|e| (exit::UNREACHABLE, e))?;
        match r.ok {
            true => Ok(r.result.unwrap_or_default()),
            false => Err((exit::REFUSED, r.error.unwrap_or_default())),
        }
    };
    let answers = (|| {
        Ok::<_, (u8, String)>((
            ask(Request::BridgeList)?,
            ask(Request::PortList)?,
            ask(Request::VpcList)?,
            // No [vtep]: refused, and nothing to show.
            ask(Request::TunnelList).ok(),
        ))
    })();
    match answers {
        Ok((bridges, ports, vpcs, tunnels)) => {
            if cli.json {
                let all = serde_json::json!({"bridges": bridges, "ports": ports, "vpcs": vpcs, "tunnels": tunnels});
                println!("{}", serde_json::to_string_pretty(&all).expect("json"));
            } else {
                print!(
                    "{}",
                    human::overview(&bridges, &ports, &vpcs, tunnels.as_ref())
                );
            }
            ExitCode::SUCCESS
        }
        Err((code, e)) => {
            eprintln!("vswitchctl: {e}");
            ExitCode::from(code)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Noun::Show = cli.noun {
        return show(&cli);
    }
    let req = match to_request(&cli.noun) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vswitchctl: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let resp = match request(&cli.socket, &req) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vswitchctl: {e}");
            return ExitCode::from(exit::UNREACHABLE);
        }
    };
    if !resp.ok {
        eprintln!("vswitchctl: {}", resp.error.unwrap_or_default());
        return ExitCode::from(exit::REFUSED);
    }
    let result = resp.result.unwrap_or_default();
    if let Noun::Port {
        verb: PortVerb::Capture { .. },
    } = &cli.noun
    {
        return follow_capture(&cli, result);
    }
    if let Noun::Trace {
        live: Some(_),
        timeout,
        ..
    } = &cli.noun
    {
        return follow_trace(&cli, *timeout);
    }
    if !cli.json {
        match &cli.noun {
            Noun::Stats { top } => {
                if let Ok(report) = serde_json::from_value::<Report>(result.clone()) {
                    print!("{}", report.to_table(*top));
                    return ExitCode::SUCCESS;
                }
            }
            Noun::Config { .. }
            | Noun::Acl {
                verb: PolicyVerb::Show,
            }
            | Noun::Qos {
                verb: PolicyVerb::Show,
            } => {
                if let Some(t) = result["toml"].as_str() {
                    print!("{t}");
                    if let Some(ports) = result.get("ports") {
                        println!(
                            "# attachments: {}",
                            serde_json::to_string(ports).expect("json")
                        );
                    }
                    // As comments: the output stays a file `acl set` takes.
                    if let Some(hits) = result["hits"].as_array().filter(|h| !h.is_empty()) {
                        println!(
                            "# rule hits: frames each rule decided (a session's first \
                             frame, a denied frame; a session's later frames pass \
                             without rules)"
                        );
                        for line in human::list(hits).lines() {
                            println!("#   {line}");
                        }
                    }
                    return ExitCode::SUCCESS;
                }
            }
            Noun::PmdPerf { .. } => {
                print!("{}", human::pmd_perf(&result));
                return ExitCode::SUCCESS;
            }
            Noun::Trace { .. } => {
                print!("{}", human::trace(&result));
                return ExitCode::SUCCESS;
            }
            Noun::Port {
                verb: PortVerb::List,
            } => {
                print!("{}", human::ports(&result));
                return ExitCode::SUCCESS;
            }
            Noun::Latency => {
                print!("{}", human::latency(&result));
                return ExitCode::SUCCESS;
            }
            Noun::Session {
                verb: SessionVerb::Show { .. },
            } => {
                print!("{}", human::sessions(&result));
                return ExitCode::SUCCESS;
            }
            _ => {
                print!("{}", human::generic(&result));
                return ExitCode::SUCCESS;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&result).expect("json"));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_fields_are_typed() {
        assert_eq!(
            field("mtu=1450").unwrap(),
            ("mtu".into(), Value::from(1450))
        );
        assert_eq!(field("client=true").unwrap().1, Value::Bool(true));
        assert_eq!(field("netns=123").unwrap().1, Value::from("123"));
        assert_eq!(
            field("static_macs=02:00:00:00:00:01,02:00:00:00:00:02")
                .unwrap()
                .1,
            serde_json::json!(["02:00:00:00:00:01", "02:00:00:00:00:02"])
        );
        assert!(field("mtu").is_err());
    }
}
