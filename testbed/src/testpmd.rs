//! `dpdk-testpmd` as a DPDK container: a virtio-user NIC on a vhost-user
//! socket, driven through its interactive prompt.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::Proc;

/// A running testpmd (quit on drop).
pub struct Testpmd {
    proc: Proc,
}

/// How to start one.
pub struct TestpmdOpts<'a> {
    /// vhost-user socket of the switch port.
    pub socket: &'a Path,
    /// Its NIC's MAC.
    pub mac: &'a str,
    /// Destination MAC of the frames `start tx_first` sends.
    pub peer: Option<&'a str>,
    /// Forwarding mode (rxonly, io, macswap, ...).
    pub fwd: &'a str,
    /// `--lcores` map; the default puts both lcores on CPU 0 so the
    /// switch's worker keeps CPU 1 to itself.
    pub lcores: &'a str,
    /// The virtio-user side listens (vswitchd port in client mode).
    pub server: bool,
}

impl Default for TestpmdOpts<'_> {
    fn default() -> Self {
        TestpmdOpts {
            socket: Path::new(""),
            mac: "02:00:00:00:00:01",
            peer: None,
            fwd: "rxonly",
            lcores: "0@0,1@0",
            server: false,
        }
    }
}

impl Testpmd {
    /// Starts testpmd and waits (bounded) until its port is up.
    pub fn start(name: &str, o: &TestpmdOpts) -> Result<Testpmd, String> {
        let prefix = crate::unique("tp");
        let mut vdev = format!("net_virtio_user0,path={},mac={}", o.socket.display(), o.mac);
        if o.server {
            vdev.push_str(",server=1");
        }
        let mut cmd = Command::new("stdbuf");
        // In-memory with single-file segments: no hugepage files left behind,
        // and one fd per memory list that virtio-user can pass to vhost.
        cmd.args([
            "-oL",
            "dpdk-testpmd",
            "--lcores",
            o.lcores,
            "--no-pci",
            "--in-memory",
        ])
        .args([
            "--single-file-segments",
            "-m",
            "256",
            "--no-telemetry",
            "--file-prefix",
            &prefix,
        ])
        .args(["--vdev", &vdev, "--", "-i", "--nb-cores=1", "--burst=32"])
        .arg(format!("--forward-mode={}", o.fwd));
        if let Some(p) = o.peer {
            cmd.arg(format!("--eth-peer=0,{p}"));
        }
        let mut proc =
            Proc::spawn(name, cmd).map_err(|e| format!("cannot run dpdk-testpmd: {e}"))?;
        if !proc.wait_for_line(Duration::from_secs(30), |l| {
            l.contains("Checking link statuses...")
        }) {
            proc.dump();
            return Err(format!("testpmd {name} did not come up"));
        }
        Ok(Testpmd { proc })
    }

    /// Sends a command to its prompt.
    pub fn cmd(&mut self, c: &str) {
        self.proc.send(c);
    }

    /// (RX-packets, TX-packets) of port 0, as testpmd counts them.
    pub fn port_stats(&mut self) -> Result<(u64, u64), String> {
        let from = self.proc.line_count();
        self.proc.send("show port stats 0");
        let mut found = None;
        crate::wait_until(Duration::from_secs(10), || {
            let out = self.proc.output();
            let new = &out[from.min(out.len())..];
            let field = |name: &str| -> Option<u64> {
                new.iter().find_map(|l| {
                    let rest = &l[l.find(name)? + name.len()..];
                    rest.split_whitespace().next()?.parse().ok()
                })
            };
            if let (Some(rx), Some(tx)) = (field("RX-packets:"), field("TX-packets:")) {
                found = Some((rx, tx));
            }
            found.is_some()
        });
        found.ok_or_else(|| {
            self.proc.dump();
            "testpmd did not print port stats".to_string()
        })
    }

    /// Prints its output (for a failing test's log).
    pub fn dump(&self) {
        self.proc.dump();
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        self.proc.send("quit");
        if self.proc.wait_exit(Duration::from_secs(10)).is_none() {
            self.proc.stop(Duration::from_secs(2));
        }
    }
}
