//! Open vSwitch with its DPDK datapath (Debian's openvswitch-switch-dpdk),
//! the peer vswitchd is benchmarked against.
//!
//! Each instance is private: its own database, run directory (sockets,
//! pid files, logs) and network namespace (its bridge taps, routes and ARP
//! never touch the host), and its own DPDK file prefix. ovsdb-server and
//! ovs-vswitchd run in the foreground as children, so dropping the handle
//! stops them even when a benchmark fails.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::netns::Netns;
use crate::process::Proc;
use crate::run;
use crate::vswitchd::TempDir;

/// The DPDK build of ovs-vswitchd.
pub const OVS_VSWITCHD_DPDK: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// A running, private Open vSwitch.
pub struct Ovs {
    // Field order is drop order: vswitchd before its database, both before
    // the namespace and the directory they use.
    vswitchd: Proc,
    _db: Proc,
    ns: Netns,
    dir: TempDir,
}

/// How to start it.
pub struct OvsOpts<'a> {
    /// CPU mask of the PMD threads.
    pub pmd_cpu_mask: &'a str,
    /// CPU mask of the DPDK main lcore (OVS's own threads).
    pub lcore_mask: &'a str,
    /// Hugepage memory in MB (`dpdk-socket-mem` and `-limit`).
    pub socket_mem: u32,
}

impl Default for OvsOpts<'_> {
    fn default() -> Self {
        OvsOpts {
            pmd_cpu_mask: "0x2",
            lcore_mask: "0x1",
            socket_mem: 1024,
        }
    }
}

impl Ovs {
    /// Starts ovsdb-server and ovs-vswitchd-dpdk and waits (bounded) until
    /// DPDK is initialized.
    pub fn start(o: &OvsOpts) -> Result<Ovs, String> {
        if !std::path::Path::new(OVS_VSWITCHD_DPDK).exists() {
            return Err(format!(
                "{OVS_VSWITCHD_DPDK} is missing: apt-get install openvswitch-switch-dpdk"
            ));
        }
        let dir = TempDir::new("ovs");
        let ns = Netns::create(&crate::unique("ovs"))?;
        let db = dir.join("conf.db");
        run(Command::new("ovsdb-tool")
            .arg("create")
            .arg(&db)
            .arg(SCHEMA))?;
        let mut cmd = Command::new("ovsdb-server");
        cmd.arg(&db)
            .arg(format!("--remote=punix:{}", dir.join("db.sock").display()))
            .arg(format!(
                "--unixctl={}",
                dir.join("ovsdb-server.ctl").display()
            ))
            .arg(format!(
                "--log-file={}",
                dir.join("ovsdb-server.log").display()
            ))
            .arg("-vconsole:off");
        env(&mut cmd, &dir);
        let db_proc = Proc::spawn("ovsdb-server", cmd).map_err(|e| format!("ovsdb-server: {e}"))?;
        let sock = dir.join("db.sock");
        if !crate::wait_until(Duration::from_secs(10), || sock.exists()) {
            db_proc.dump();
            return Err("ovsdb-server did not create its socket".into());
        }
        // ovs-vswitchd is not running yet: nothing to wait for.
        let vsctl = |args: &[&str]| vsctl_in(&dir, "--no-wait", args);
        vsctl(&["init"])?;
        let prefix = crate::unique("ovs");
        vsctl(&[
            "set",
            "Open_vSwitch",
            ".",
            "other_config:dpdk-init=true",
            &format!("other_config:dpdk-lcore-mask={}", o.lcore_mask),
            &format!("other_config:pmd-cpu-mask={}", o.pmd_cpu_mask),
            &format!("other_config:dpdk-socket-mem={}", o.socket_mem),
            &format!("other_config:dpdk-socket-limit={}", o.socket_mem),
            &format!("other_config:dpdk-extra=\"--no-pci --no-telemetry --file-prefix={prefix}\""),
        ])?;
        let mut cmd = ns.command(OVS_VSWITCHD_DPDK);
        cmd.arg(format!("unix:{}", sock.display()))
            .arg(format!(
                "--pidfile={}",
                dir.join("ovs-vswitchd.pid").display()
            ))
            .arg(format!(
                "--log-file={}",
                dir.join("ovs-vswitchd.log").display()
            ))
            .arg(format!(
                "--unixctl={}",
                dir.join("ovs-vswitchd.ctl").display()
            ))
            .arg("-vconsole:off");
        env(&mut cmd, &dir);
        let vswitchd =
            Proc::spawn("ovs-vswitchd", cmd).map_err(|e| format!("ovs-vswitchd: {e}"))?;
        let ovs = Ovs {
            vswitchd,
            _db: db_proc,
            ns,
            dir,
        };
        let up = crate::wait_until(Duration::from_secs(60), || {
            ovs.vsctl(&["get", "Open_vSwitch", ".", "dpdk_initialized"])
                .is_ok_and(|v| v.trim() == "true")
        });
        if !up {
            return Err(format!(
                "ovs-vswitchd did not initialize DPDK:\n{}",
                ovs.log()
            ));
        }
        Ok(ovs)
    }

    /// `ovs-vsctl ARGS` (waiting for ovs-vswitchd to apply the change).
    pub fn vsctl(&self, args: &[&str]) -> Result<String, String> {
        vsctl_in(&self.dir, "--timeout=60", args)
    }

    /// `ovs-ofctl ARGS`.
    pub fn ofctl(&self, args: &[&str]) -> Result<String, String> {
        let mut c = Command::new("ovs-ofctl");
        c.args(args);
        env(&mut c, &self.dir);
        run(&mut c)
    }

    /// `ovs-appctl ARGS` to ovs-vswitchd.
    pub fn appctl(&self, args: &[&str]) -> Result<String, String> {
        let mut c = Command::new("ovs-appctl");
        c.arg("-t")
            .arg(self.dir.join("ovs-vswitchd.ctl"))
            .args(args);
        env(&mut c, &self.dir);
        run(&mut c)
    }

    /// Adds a userspace (netdev) bridge.
    pub fn add_bridge(&self, name: &str) -> Result<(), String> {
        self.vsctl(&[
            "add-br",
            name,
            "--",
            "set",
            "bridge",
            name,
            "datapath_type=netdev",
        ])
        .map(drop)
    }

    /// Adds a DPDK port on `devargs` (a vdev) with OpenFlow port `ofport`.
    pub fn add_dpdk_port(
        &self,
        bridge: &str,
        name: &str,
        devargs: &str,
        ofport: u16,
    ) -> Result<(), String> {
        self.add_port(
            bridge,
            name,
            "dpdk",
            &[&format!("options:dpdk-devargs=\"{devargs}\"")],
            ofport,
        )
    }

    /// Adds a port of `kind` with extra Interface `settings`, and checks
    /// ovs-vswitchd accepted it (its `error` column is empty).
    pub fn add_port(
        &self,
        bridge: &str,
        name: &str,
        kind: &str,
        settings: &[&str],
        ofport: u16,
    ) -> Result<(), String> {
        let mut args = vec![
            "add-port".to_string(),
            bridge.into(),
            name.into(),
            "--".into(),
            "set".into(),
            "Interface".into(),
            name.into(),
            format!("type={kind}"),
            format!("ofport_request={ofport}"),
        ];
        args.extend(settings.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.vsctl(&args)?;
        let err = self.vsctl(&["get", "Interface", name, "error"])?;
        if err.trim() != "[]" {
            return Err(format!(
                "OVS refused port {name}: {}\n{}",
                err.trim(),
                self.log()
            ));
        }
        Ok(())
    }

    /// (rx, tx) packets of an OpenFlow port, read live (`dump-ports`; the
    /// database's statistics column lags by 5 s).
    pub fn port_packets(&self, bridge: &str, ofport: u16) -> Result<(u64, u64), String> {
        let out = self.ofctl(&["dump-ports", bridge, &ofport.to_string()])?;
        let field = |dir: &str| -> Option<u64> {
            let line = out
                .lines()
                .find(|l| l.trim_start().starts_with(dir) || l.contains(&format!(": {dir}")))?;
            let rest = &line[line.find("pkts=")? + 5..];
            rest.split(',').next()?.trim().parse().ok()
        };
        field("rx")
            .zip(field("tx"))
            .ok_or_else(|| format!("cannot read dump-ports output:\n{out}"))
    }

    /// The PMD threads' "avg processing cycles per packet" and busy share
    /// (processing cycles %) since the last [`Ovs::clear_pmd_stats`].
    pub fn pmd_stats(&self) -> Result<(Option<f64>, Option<f64>), String> {
        let out = self.appctl(&["dpif-netdev/pmd-stats-show"])?;
        let num_after = |key: &str| -> Option<f64> {
            let l = out.lines().find(|l| l.contains(key))?;
            let rest = &l[l.find(key)? + key.len()..];
            rest.trim_start_matches([':', ' '])
                .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .next()?
                .parse()
                .ok()
        };
        let busy = out
            .lines()
            .find(|l| l.contains("processing cycles"))
            .and_then(|l| {
                let pct = &l[l.find('(')? + 1..l.find('%')?];
                pct.trim().parse().ok()
            });
        Ok((num_after("avg processing cycles per packet"), busy))
    }

    /// Zeroes the PMD statistics.
    pub fn clear_pmd_stats(&self) -> Result<(), String> {
        self.appctl(&["dpif-netdev/pmd-stats-clear"]).map(drop)
    }

    /// The namespace it runs in.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Its private run directory (vhost-user client sockets can go here).
    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The last lines of ovs-vswitchd's log (for error messages).
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("ovs-vswitchd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        // A graceful exit lets DPDK release its ports and hugepages.
        let _ = self.appctl(&["exit"]);
        self.vswitchd.wait_exit(Duration::from_secs(20));
    }
}

/// `ovs-vsctl` on the database in `dir`, with one wait option.
fn vsctl_in(dir: &TempDir, wait: &str, args: &[&str]) -> Result<String, String> {
    let mut c = Command::new("ovs-vsctl");
    c.arg(format!("--db=unix:{}", dir.join("db.sock").display()))
        .arg(wait)
        .args(args);
    env(&mut c, dir);
    run(&mut c)
}

/// Points OVS's tools at the private run directory.
fn env(c: &mut Command, dir: &TempDir) {
    for var in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
        c.env(var, dir.path());
    }
}
