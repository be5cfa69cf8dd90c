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

/// Requests `vswitchctl` sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Counters of every port and worker.
    Stats,
    /// Ports with their kind and bridge.
    PortList,
    /// The VTEP's tunnel ports (remote VTEPs per VNI) and neighbours.
    TunnelList,
    /// Learned MACs of one bridge (or all).
    FdbShow {
        /// Bridge name; all bridges when absent.
        #[serde(default)]
        bridge: Option<String>,
    },
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
