//! The control socket: a Unix stream socket speaking one JSON object per
//! line. Each request is `{"cmd": "...", ...}`; each answer is
//! `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`.
//!
//! Served from the daemon's main loop, so requests are handled one at a
//! time against the control plane's state without any locking; clients
//! are served side by side (see [`ControlServer`]), so a slow or hostile
//! client never holds the others up. The socket
//! file is created owner-only (0600): it controls the switch.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use serde::{Deserialize, Serialize};

/// Requests `vswitchctl` (and the CNI plugin) send. The protocol, one JSON
/// object per line each way, is documented in the README ("Control
/// socket"). Requests that change something are all-or-nothing: on an
/// error reply nothing changed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Counters of every port, tunnel, VNI and worker.
    Stats,
    /// Per worker: packets, busy/idle cycles, cycles per packet, busy %
    /// (since start or the last `clear`).
    PmdPerf {
        /// Start a new measurement period after answering.
        #[serde(default)]
        clear: bool,
        /// Turn the workers' per-stage cycle accounting on or off (it
        /// costs a clock read per stage and burst) before answering.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stages: Option<bool>,
    },
    /// Places every rx queue afresh by its measured cycles (or in turn,
    /// with `rxq_assign = "roundrobin"`) and moves those that change
    /// worker (`rxq`).
    PmdRxqRebalance,
    /// Per worker: percentiles of the processing time of poll rounds
    /// that had packets (one burst per rx queue), in cycles and ns.
    Latency,
    /// Ports with their kind and bridge.
    PortList,
    /// One port: its config, counters and link.
    PortShow {
        /// Port name.
        name: String,
    },
    /// Hot-plugs a port: `port` holds the fields of a `[[port]]` table.
    PortAdd {
        /// The port's fields (name, kind, bridge, kind options, groups...).
        port: serde_json::Map<String, serde_json::Value>,
    },
    /// Changes a port's port security (its MAC and addresses, what else
    /// it may send) and MAC limit; a null value removes a field.
    PortSet {
        /// Port name.
        name: String,
        /// The fields and their new values.
        fields: serde_json::Map<String, serde_json::Value>,
    },
    /// Unplugs a port (after a grace period no worker polls it).
    PortDel {
        /// Port name.
        name: String,
    },
    /// Moves a TAP NIC into another container, keeping its MAC, address,
    /// groups and QoS.
    PortMove {
        /// Port name.
        name: String,
        /// The new container's named netns ...
        #[serde(default)]
        netns: Option<String>,
        /// ... or a process in it.
        #[serde(default)]
        pid: Option<u32>,
        /// Interface name there (default: the current one).
        #[serde(default)]
        ifname: Option<String>,
    },
    /// Bridge domains with their ports, VNI and MAC table use.
    BridgeList,
    /// VPCs: router MAC, subnets with their gateways, endpoints (address,
    /// MAC, and the NIC or remote VTEP behind which each is).
    VpcList,
    /// Adds a VPC, without subnets yet (`bridge-vpc` gives it some).
    VpcAdd {
        /// Its name, the same on every host.
        name: String,
        /// Its router MAC (default: derived from the name).
        #[serde(default)]
        router_mac: Option<String>,
    },
    /// Removes a VPC that has no subnet left.
    VpcDel {
        /// Its name.
        name: String,
    },
    /// Makes a bridge a subnet of a VPC with a gateway, or takes it out
    /// of its VPC (`vpc` absent).
    BridgeVpc {
        /// The bridge.
        bridge: String,
        /// The VPC; absent: none.
        #[serde(default)]
        vpc: Option<String>,
        /// The gateway with the subnet's prefix length, like
        /// "192.168.60.1/24" (with `vpc`).
        #[serde(default)]
        gateway: Option<String>,
    },
    /// Learned MACs of one bridge (or all).
    FdbShow {
        /// Bridge name; all bridges when absent.
        #[serde(default)]
        bridge: Option<String>,
    },
    /// Forgets learned MACs (static ones stay) of a bridge, a port, or all.
    FdbFlush {
        /// Only this bridge.
        #[serde(default)]
        bridge: Option<String>,
        /// Only those behind this port.
        #[serde(default)]
        port: Option<String>,
    },
    /// Live sessions of stateful groups.
    SessionShow {
        /// At most this many (default 1000).
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Ends every session (later packets are judged by the rules again).
    SessionFlush,
    /// Defines, replaces or removes security groups and attaches them to a
    /// port.
    AclSet {
        /// `[[security_group]]` tables (TOML, as in the config file); each
        /// replaces the group of its name or is added.
        #[serde(default)]
        groups: Option<String>,
        /// Groups to remove (no port may still use them).
        #[serde(default)]
        remove: Vec<String>,
        /// A port whose attachments change.
        #[serde(default)]
        port: Option<String>,
        /// Its ingress group ("" detaches).
        #[serde(default)]
        ingress: Option<String>,
        /// Its egress group ("" detaches).
        #[serde(default)]
        egress: Option<String>,
    },
    /// The security groups (as TOML) and which port uses which.
    AclShow,
    /// Defines, replaces or removes QoS policies and attaches them to a
    /// port.
    QosSet {
        /// `[[qos_policy]]` tables (TOML).
        #[serde(default)]
        policies: Option<String>,
        /// Policies to remove.
        #[serde(default)]
        remove: Vec<String>,
        /// A port whose policies change.
        #[serde(default)]
        port: Option<String>,
        /// Its ingress policy ("" detaches).
        #[serde(default)]
        ingress: Option<String>,
        /// Its egress policy ("" detaches).
        #[serde(default)]
        egress: Option<String>,
    },
    /// The QoS policies (as TOML) and which port uses which.
    QosShow,
    /// Adds a remote VTEP to a bridge's head-end replication list.
    TunnelAdd {
        /// The bridge (it has a VNI).
        bridge: String,
        /// The remote VTEP's address.
        remote: String,
    },
    /// Removes a remote VTEP from a bridge's list.
    TunnelDel {
        /// The bridge.
        bridge: String,
        /// The remote VTEP's address.
        remote: String,
    },
    /// The VTEP's tunnel ports (remote VTEPs per VNI) and neighbours.
    TunnelList,
    /// Replaces a bridge's whole remote state at once, as an agent that
    /// follows a shared store applies it: the remote VTEPs that get its
    /// floods and the remote stations (a MAC behind a VTEP). One
    /// publication, whatever the number of entries.
    TunnelSet {
        /// The bridge (it has a VNI).
        bridge: String,
        /// Remote VTEPs of its head-end replication list.
        #[serde(default)]
        vteps: Vec<String>,
        /// Remote stations.
        #[serde(default)]
        stations: Vec<RemoteStation>,
    },
    /// The running config as TOML, loadable by `vswitchd run`.
    ConfigDump,
    /// What `vswitch-agent` reports of itself (etcd reachable, revision,
    /// endpoints): kept in memory for `agent-show`.
    AgentReport {
        /// Its state, shown as given.
        state: serde_json::Map<String, serde_json::Value>,
    },
    /// The agent's last report and its age.
    AgentShow,
    /// How many changes the running config has had since vswitchd
    /// started: a client that follows the config (vswitch-agent) polls
    /// this cheap counter and reads ports and bridges only when it moves.
    ConfigVersion,
    /// Starts copying a port's frames to a pcap file that vswitchd
    /// writes (one capture at a time; see `crate::capture`).
    PortCapture {
        /// The port.
        name: String,
        /// The pcap file (an absolute path; replaced if it exists).
        file: PathBuf,
        /// Frames it receives, is sent, or both.
        #[serde(default = "both")]
        direction: crate::capture::Direction,
        /// Stop after this many frames.
        #[serde(default)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[serde(default)]
        secs: Option<f64>,
        /// Bytes kept of each frame (default 9216, at most 65535).
        #[serde(default)]
        snaplen: Option<u32>,
    },
    /// The running capture, or the last one: frames written, dropped.
    CaptureStatus,
    /// Ends the running capture (its frames so far stay in the file).
    CaptureStop,
    /// What the pipeline does with a frame port `port` sends, stage by
    /// stage, changing nothing (see `crate::trace`).
    Trace {
        /// The NIC it comes in by.
        port: String,
        /// The frame, as `ofproto/trace` takes a flow
        /// (`tcp,nw_dst=10.0.0.2,tp_dst=80`).
        #[serde(default)]
        flow: Option<String>,
        /// Or the frame's bytes in hex.
        #[serde(default)]
        frame: Option<String>,
    },
    /// Traces the next `count` frames port `port` receives (one live
    /// trace at a time).
    TraceStart {
        /// The NIC.
        port: String,
        /// Frames to trace (1-1000).
        count: u64,
    },
    /// The live trace's records since the last read (`stop`: ends it).
    TraceRead {
        /// End the trace now.
        #[serde(default)]
        stop: bool,
    },
}

fn both() -> crate::capture::Direction {
    crate::capture::Direction::Both
}

/// A remote station of [`Request::TunnelSet`]: a MAC behind a VTEP.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RemoteStation {
    /// The station's MAC.
    pub mac: String,
    /// The VTEP it is behind.
    pub vtep: String,
    /// Its addresses, for its VPC's router (a bridge of a VPC only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
}

/// An answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// The answer's payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Longest request line taken; a longer one is answered with an error and
/// the connection closed (the biggest real request, a set of security
/// groups as TOML, is far below).
pub const MAX_LINE: usize = 1 << 20;
/// Connections served at once; one more is told to come back later.
pub const MAX_CLIENTS: usize = 64;
/// Answers a client may leave unread before its requests are no longer read.
const MAX_PENDING_OUT: usize = 1 << 16;
/// A connection that sends no complete request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that does not read its answers for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// One client connection: what it sent that is not a whole line yet, and
/// answers it has not read yet.
struct Conn {
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// Since when it has been waiting on the client: a partial request,
    /// or unread answers.
    since: Instant,
    /// Answer what is buffered, then close.
    closing: bool,
}

/// The listening socket and its clients. Served from the daemon's main
/// loop without ever blocking on a client: every socket is non-blocking,
/// requests are read as whole lines as they arrive, answers are written
/// as far as the client reads them. A client that sends half a line and
/// stops, or stops reading its answers, or opens many idle connections,
/// costs a buffer until its timeout, never another client's turn or the
/// daemon's attention to signals.
pub struct ControlServer {
    /// First: dropped (its thread joined) before the listener it polls.
    waker: Waker,
    listener: UnixListener,
    path: PathBuf,
    conns: Vec<Conn>,
}

/// Wakes the daemon's main loop when a client connects, so that a
/// request is answered at once rather than at the loop's next turn (up to
/// 10 ms later: a client that sends several requests, as vswitch-agent
/// does for every change, waited that much for each). A thread blocks in
/// `poll(2)` on the listening socket, signals [`ControlServer::woken`],
/// and waits for the main loop to have accepted before it polls again.
/// Requests on a connection already accepted are read at the loop's next
/// turn; vswitchctl and vswitch-agent open one connection per request.
struct Waker {
    woken: Receiver<()>,
    rearm: Sender<()>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Waker {
    fn start(fd: RawFd) -> std::io::Result<Waker> {
        let (wake_tx, woken) = crossbeam_channel::bounded(1);
        let (rearm, rearm_rx) = crossbeam_channel::bounded::<()>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let halt = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("control-waker".into())
            .spawn(move || {
                while !halt.load(Ordering::Relaxed) {
                    let mut p = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one pollfd, valid for the call; the fd is
                    // the listener's, which outlives this thread (joined
                    // before the listener is dropped). A timeout, so that
                    // `stop` is seen.
                    let n = unsafe { libc::poll(&mut p, 1, 100) };
                    if n > 0 && p.revents & libc::POLLIN != 0 {
                        let _ = wake_tx.try_send(());
                        // Until the main loop accepted (the socket stays
                        // readable until then).
                        let _ = rearm_rx.recv_timeout(Duration::from_millis(100));
                    }
                }
            })?;
        Ok(Waker {
            woken,
            rearm,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl ControlServer {
    /// Listens on `path` (which `ports::claim_socket_path` freed).
    pub fn bind(path: &Path) -> std::io::Result<ControlServer> {
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let waker = Waker::start(listener.as_raw_fd())?;
        Ok(ControlServer {
            waker,
            listener,
            path: path.to_path_buf(),
            conns: Vec::new(),
        })
    }

    /// Signalled when a client is waiting to be accepted: the main loop
    /// waits on it (with its other work) and then calls [`Self::poll`].
    pub fn woken(&self) -> &Receiver<()> {
        &self.waker.woken
    }

    /// Accepts new clients, answers every complete request received, and
    /// writes what the clients will take; `handle` answers each request.
    pub fn poll(&mut self, mut handle: impl FnMut(Request) -> Result<serde_json::Value, String>) {
        let now = Instant::now();
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let mut c = Conn {
                stream,
                inbuf: Vec::new(),
                outbuf: Vec::new(),
                since: now,
                closing: false,
            };
            if self.conns.len() >= MAX_CLIENTS {
                c.answer(&refusal(format!(
                    "busy: {MAX_CLIENTS} control clients connected; try again"
                )));
                c.closing = true;
            }
            self.conns.push(c);
        }
        let _ = self.waker.rearm.try_send(());
        self.conns.retain_mut(|c| c.serve(now, &mut handle));
    }
}

fn refusal(e: String) -> Response {
    Response {
        ok: false,
        result: None,
        error: Some(e),
    }
}

impl Conn {
    fn answer(&mut self, r: &Response) {
        if self.outbuf.is_empty() {
            self.since = Instant::now();
        }
        serde_json::to_writer(&mut self.outbuf, r).expect("responses serialize");
        self.outbuf.push(b'\n');
    }

    /// One turn: read, answer whole lines, write. False: drop it.
    fn serve(
        &mut self,
        now: Instant,
        handle: &mut impl FnMut(Request) -> Result<serde_json::Value, String>,
    ) -> bool {
        let mut eof = false;
        // Backpressure: a client that does not read its answers is not
        // read from either, so its buffers stay bounded.
        if !self.closing && self.outbuf.len() < MAX_PENDING_OUT {
            let mut buf = [0u8; 4096];
            loop {
                match self.stream.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        if self.inbuf.is_empty() {
                            self.since = now;
                        }
                        self.inbuf.extend_from_slice(&buf[..n]);
                        if self.inbuf.len() > MAX_LINE && !self.inbuf.contains(&b'\n') {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return false,
                }
            }
            while let Some(end) = self.inbuf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.inbuf.drain(..=end).collect();
                let resp = respond(&line[..end], handle);
                self.answer(&resp);
                self.since = now;
            }
            if self.inbuf.len() > MAX_LINE {
                self.answer(&refusal(format!(
                    "request line longer than {MAX_LINE} bytes"
                )));
                self.closing = true;
            } else if !self.inbuf.is_empty() && now - self.since > IDLE_TIMEOUT {
                self.answer(&refusal(format!(
                    "no complete request line within {} s",
                    IDLE_TIMEOUT.as_secs()
                )));
                self.closing = true;
            }
        }
        while !self.outbuf.is_empty() {
            match self.stream.write(&self.outbuf) {
                Ok(0) => return false,
                Ok(n) => {
                    self.outbuf.drain(..n);
                    self.since = now;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        if !self.outbuf.is_empty() {
            return now - self.since <= WRITE_TIMEOUT;
        }
        let idle = self.inbuf.is_empty() && now - self.since > IDLE_TIMEOUT;
        !(eof || self.closing || idle)
    }
}

/// The answer to one request line.
fn respond(
    line: &[u8],
    handle: &mut impl FnMut(Request) -> Result<serde_json::Value, String>,
) -> Response {
    let Ok(text) = std::str::from_utf8(line) else {
        return refusal("bad request: not UTF-8".into());
    };
    match parse_request(text.trim()) {
        Ok(req) => match handle(req) {
            Ok(v) => Response {
                ok: true,
                result: Some(v),
                error: None,
            },
            Err(e) => refusal(e),
        },
        Err(e) => refusal(format!("bad request: {e}")),
    }
}

/// A request line, every field known: serde's `deny_unknown_fields` does
/// not reach the variants of an internally tagged enum without fields
/// (`{"cmd": "stats", "typo": 1}` would pass), so the keys are checked
/// against the request as it serializes back (every field, set or not).
fn parse_request(text: &str) -> Result<Request, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let req: Request = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let known = serde_json::to_value(&req).expect("requests serialize");
    if let (Some(given), Some(known)) = (v.as_object(), known.as_object()) {
        if let Some(k) = given.keys().find(|k| !known.contains_key(*k)) {
            return Err(format!("unknown field `{k}`"));
        }
    }
    Ok(req)
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Client side: sends one request, returns the response.
pub fn request(socket: &Path, req: &Request) -> Result<Response, String> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot connect to {}: {e} (is vswitchd running?)",
            socket.display()
        )
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut w = stream.try_clone().map_err(|e| e.to_string())?;
    let mut line = serde_json::to_string(req).expect("requests serialize");
    line.push('\n');
    w.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = String::new();
    BufReader::new(stream)
        .read_line(&mut resp)
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&resp).map_err(|e| format!("bad response {resp:?}: {e}"))
}
