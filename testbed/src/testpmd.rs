//! `dpdk-testpmd` as a DPDK container: a virtio-user NIC on a vhost-user
//! socket, driven through its interactive prompt.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::Proc;

/// A running testpmd (quit on drop).
pub struct Testpmd {
    proc: Proc,
    name: String,
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
    /// Descriptors per virtio ring (virtio-user's `queue_size`; its
    /// default is 256).
    pub queue_size: Option<u16>,
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
            queue_size: None,
        }
    }
}

impl Testpmd {
    /// Starts testpmd as a container with one virtio-user NIC and waits
    /// (bounded) until its port is up.
    pub fn start(name: &str, o: &TestpmdOpts) -> Result<Testpmd, String> {
        let mut t = Testpmd::launch(name, o)?;
        t.wait_up()?;
        Ok(t)
    }

    /// Starts it without waiting: a virtio-user NIC in server mode blocks
    /// testpmd's start until the switch connects to its socket, so the
    /// caller starts the switch, then calls [`Testpmd::wait_up`].
    pub fn launch(name: &str, o: &TestpmdOpts) -> Result<Testpmd, String> {
        let mut vdev = format!("net_virtio_user0,path={},mac={}", o.socket.display(), o.mac);
        if o.server {
            vdev.push_str(",server=1");
        }
        if let Some(n) = o.queue_size {
            vdev.push_str(&format!(",queue_size={n}"));
        }
        let mut app = vec![format!("--forward-mode={}", o.fwd)];
        if let Some(p) = o.peer {
            app.push(format!("--eth-peer=0,{p}"));
        }
        Testpmd::launch_with(name, &["--lcores", o.lcores], &[vdev], &app)
    }

    /// Starts testpmd with `eal` options (cores), these `vdevs` and extra
    /// application options, interactive, one forwarding core, bursts of 32.
    /// In-memory with single-file segments: no hugepage files left behind,
    /// and one fd per memory list that virtio-user can pass to vhost.
    pub fn spawn(
        name: &str,
        eal: &[&str],
        vdevs: &[String],
        app: &[String],
    ) -> Result<Testpmd, String> {
        let mut t = Testpmd::launch_with(name, eal, vdevs, app)?;
        t.wait_up()?;
        Ok(t)
    }

    /// [`Testpmd::spawn`] without waiting for its ports.
    fn launch_with(
        name: &str,
        eal: &[&str],
        vdevs: &[String],
        app: &[String],
    ) -> Result<Testpmd, String> {
        let prefix = crate::unique("tp");
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", "dpdk-testpmd"])
            .args(eal)
            .args(["--no-pci", "--in-memory", "--single-file-segments"])
            .args(["-m", "512", "--no-telemetry", "--file-prefix", &prefix]);
        for v in vdevs {
            cmd.args(["--vdev", v]);
        }
        cmd.args(["--", "-i", "--nb-cores=1", "--burst=32"])
            .args(app);
        let proc = Proc::spawn(name, cmd).map_err(|e| format!("cannot run dpdk-testpmd: {e}"))?;
        Ok(Testpmd {
            proc,
            name: name.to_string(),
        })
    }

    /// Waits (bounded) until its ports are up and its prompt answers.
    pub fn wait_up(&mut self) -> Result<(), String> {
        if !self.proc.wait_for_line(Duration::from_secs(30), |l| {
            l.contains("Checking link statuses...")
        }) {
            self.proc.dump();
            return Err(format!("testpmd {} did not come up", self.name));
        }
        Ok(())
    }

    /// Kills it with SIGKILL (a container that crashes) and waits for its
    /// exit.
    pub fn kill(&mut self) {
        self.proc.signal(libc::SIGKILL);
        self.proc.wait_exit(Duration::from_secs(10));
    }

    /// Sends a command to its prompt.
    pub fn cmd(&mut self, c: &str) {
        self.proc.send(c);
    }

    /// (RX-packets, TX-packets) of port 0, as testpmd counts them.
    pub fn port_stats(&mut self) -> Result<(u64, u64), String> {
        self.stats_of(0)
    }

    /// (RX-packets, TX-packets) of `port`.
    pub fn stats_of(&mut self, port: u16) -> Result<(u64, u64), String> {
        let v = self.counters(port, &["RX-packets:", "TX-packets:"])?;
        Ok((v[0], v[1]))
    }

    /// Frames port 0's receive ring had no room for (`RX-missed`).
    pub fn rx_missed(&mut self) -> Result<u64, String> {
        Ok(self.counters(0, &["RX-missed:"])?[0])
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// (RX-packets, RX-bytes) of `port`.
    pub fn rx_of(&mut self, port: u16) -> Result<(u64, u64), String> {
        let v = self.counters(port, &["RX-packets:", "RX-bytes:"])?;
        Ok((v[0], v[1]))
    }

    /// The counters `names` of `show port stats`.
    fn counters(&mut self, port: u16, names: &[&str]) -> Result<Vec<u64>, String> {
        let lines = self.query(&format!("show port stats {port}"), |l| {
            l.contains("TX-packets:")
        })?;
        names
            .iter()
            .map(|name| {
                lines
                    .iter()
                    .find_map(|l| {
                        let rest = &l[l.find(name)? + name.len()..];
                        rest.split_whitespace().next()?.parse().ok()
                    })
                    .ok_or_else(|| format!("testpmd printed no {name} for port {port}"))
            })
            .collect()
    }

    /// Sends `c` and returns the lines it printed once one matches `done`
    /// (bounded: 10 s).
    pub fn query(&mut self, c: &str, done: impl Fn(&str) -> bool) -> Result<Vec<String>, String> {
        let from = self.proc.line_count();
        self.proc.send(c);
        let mut lines = Vec::new();
        let ok = crate::wait_until(Duration::from_secs(10), || {
            let out = self.proc.output();
            lines = out[from.min(out.len())..].to_vec();
            lines.iter().any(|l| done(l))
        });
        if ok {
            Ok(lines)
        } else {
            self.proc.dump();
            Err(format!("testpmd did not answer {c:?}"))
        }
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
