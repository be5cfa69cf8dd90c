//! The control socket: a Unix stream socket speaking one JSON object per
//! line. Each request is `{"cmd": "...", ...}`; each answer is
//! `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`.
//!
//! Served from the daemon's main loop, so requests are handled one at a
//! time against the control plane's state without any locking. The socket
//! file is created owner-only (0600): it controls the switch.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    },
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
    /// The running config as TOML, loadable by `vswitchd run`.
    ConfigDump,
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

/// The listening socket.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Listens on `path` (which `ports::claim_socket_path` freed).
    pub fn bind(path: &Path) -> std::io::Result<ControlServer> {
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Serves every connection waiting now; `handle` answers each request.
    pub fn poll(&self, mut handle: impl FnMut(Request) -> Result<serde_json::Value, String>) {
        while let Ok((stream, _)) = self.listener.accept() {
            let _ = serve(stream, &mut handle);
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(
    stream: UnixStream,
    handle: &mut impl FnMut(Request) -> Result<serde_json::Value, String>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    // A client that connects and says nothing must not stall the daemon.
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        let resp = match serde_json::from_str::<Request>(line.trim()) {
            Ok(req) => match handle(req) {
                Ok(v) => Response {
                    ok: true,
                    result: Some(v),
                    error: None,
                },
                Err(e) => Response {
                    ok: false,
                    result: None,
                    error: Some(e),
                },
            },
            Err(e) => Response {
                ok: false,
                result: None,
                error: Some(format!("bad request: {e}")),
            },
        };
        let mut out = serde_json::to_string(&resp).expect("responses serialize");
        out.push('\n');
        writer.write_all(out.as_bytes())?;
        line.clear();
    }
    Ok(())
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
