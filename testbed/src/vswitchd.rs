//! The daemon under test: started on a config, queried over its control
//! socket, stopped with SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::process::Proc;

/// A scratch directory removed on drop (configs, sockets, pcaps).
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory under /tmp.
    pub fn new(prefix: &str) -> TempDir {
        let p = std::env::temp_dir().join(crate::unique(prefix));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running vswitchd (stopped on drop).
pub struct Vswitchd {
    proc: Proc,
    socket: PathBuf,
    /// Its DPDK file prefix, when its config names one: what it leaves
    /// behind when killed is named after it.
    file_prefix: Option<String>,
}

impl Vswitchd {
    /// Writes `config` to `dir/vswitchd.toml`, runs `bin run --config` on
    /// it and waits (bounded) for the ready line. `config` must put the
    /// control socket at `dir/ctl.sock` (see [`Vswitchd::control_socket`]).
    pub fn start(bin: &Path, dir: &TempDir, config: &str) -> Result<Vswitchd, String> {
        let cfg = dir.join("vswitchd.toml");
        std::fs::write(&cfg, config).map_err(|e| e.to_string())?;
        let cfg = cfg.display().to_string();
        let mut vs = Self::spawn(bin, &["run", "--config", &cfg], &Self::control_socket(dir))?;
        vs.file_prefix = config
            .lines()
            .find_map(|l| l.strip_prefix("file_prefix = "))
            .map(|p| p.trim_matches('"').to_string());
        Ok(vs)
    }

    /// Runs `bin ARGS` and waits (bounded) for the ready line; `socket` is
    /// the control socket its config names.
    pub fn spawn(bin: &Path, args: &[&str], socket: &Path) -> Result<Vswitchd, String> {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        let mut proc = Proc::spawn("vswitchd", cmd)
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        if !proc.wait_for_line(Duration::from_secs(60), |l| {
            l.starts_with("vswitchd: ready")
        }) {
            let out = proc.output().join("\n");
            return Err(format!("vswitchd did not become ready:\n{out}"));
        }
        Ok(Vswitchd {
            proc,
            socket: socket.to_path_buf(),
            file_prefix: None,
        })
    }

    /// Where a test config puts the control socket.
    pub fn control_socket(dir: &TempDir) -> PathBuf {
        dir.join("ctl.sock")
    }

    /// The `[eal]`, `[workers]`, `[control]` tables and one bridge of a
    /// test or benchmark config: main lcore on CPU 0, one worker on CPU 1,
    /// a DPDK file prefix unique to this run, the control socket in `dir`.
    pub fn config_header(dir: &TempDir, memory_mb: u32, bridge: &str) -> String {
        Self::config_header_idle(dir, memory_mb, bridge, 0)
    }

    /// [`Vswitchd::config_header`] with the worker sleeping `idle_sleep_us`
    /// after empty polls: for several switches sharing CPU 1.
    pub fn config_header_idle(
        dir: &TempDir,
        memory_mb: u32,
        bridge: &str,
        idle_sleep_us: u32,
    ) -> String {
        format!(
            "[eal]\nmain_lcore = 0\nmemory_mb = {memory_mb}\nfile_prefix = \"{prefix}\"\nin_memory = true\n\n\
             [workers]\ncores = [1]\nidle_sleep_us = {idle_sleep_us}\n\n[control]\nsocket = \"{ctl}\"\nstate_file = \"{state}\"\n\n[[bridge]]\nname = \"{bridge}\"\n",
            prefix = crate::unique("vs"),
            ctl = Self::control_socket(dir).display(),
            state = dir.join("state.toml").display(),
        )
    }

    /// Sends one control request (a JSON object); its `result`, or its error.
    pub fn request(&self, req: Value) -> Result<Value, String> {
        let s = UnixStream::connect(&self.socket).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let mut w = s.try_clone().map_err(|e| e.to_string())?;
        writeln!(w, "{req}").map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line:?}"))?;
        if v["ok"] == Value::Bool(true) {
            Ok(v["result"].clone())
        } else {
            Err(v["error"].as_str().unwrap_or("?").to_string())
        }
    }

    /// The stats entry of port `name`.
    pub fn port_stats(&self, name: &str) -> Result<Value, String> {
        let s = self.request(serde_json::json!({"cmd": "stats"}))?;
        s["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned())
            .ok_or_else(|| format!("no port {name} in stats"))
    }

    /// A counter of port `name` (`rx_packets`, `tx_packets`, ...).
    pub fn counter(&self, name: &str, counter: &str) -> u64 {
        self.port_stats(name)
            .ok()
            .and_then(|p| p[counter].as_u64())
            .unwrap_or(0)
    }

    /// Whether port `name`'s link is up.
    pub fn link_up(&self, name: &str) -> bool {
        self.request(serde_json::json!({"cmd": "port-list"}))
            .ok()
            .and_then(|l| l.as_array().cloned())
            .is_some_and(|l| l.iter().any(|p| p["name"] == name && p["link_up"] == true))
    }

    /// SIGHUP (re-read the config file) and wait (bounded) for the
    /// daemon's answer: Ok once reloaded, Err with its reason if refused.
    pub fn reload(&mut self) -> Result<(), String> {
        // Its log line (after timestamp, level and target): "reloaded
        // FILE ..." or "reload of FILE refused ...".
        let is_answer = |l: &String| l.contains(": reloaded ") || l.contains(": reload of ");
        let before = self.proc.output().iter().filter(|l| is_answer(l)).count();
        self.proc.signal(libc::SIGHUP);
        let mut answer = None;
        crate::wait_until(Duration::from_secs(20), || {
            answer = self.proc.output().into_iter().filter(is_answer).nth(before);
            answer.is_some()
        });
        match answer {
            Some(l) if l.contains(": reloaded ") => Ok(()),
            Some(l) => Err(l),
            None => Err("vswitchd did not answer SIGHUP within 20 s".into()),
        }
    }

    /// SIGKILL, as a crash would end it, and wait for the exit. What it
    /// left (its VPCs' SNAT namespaces) goes when this is dropped.
    pub fn kill(mut self) {
        self.proc.signal(libc::SIGKILL);
        self.proc.wait_exit(Duration::from_secs(20));
    }

    /// SIGTERM and wait; the exit code.
    pub fn stop(mut self) -> Option<i32> {
        self.proc.stop(Duration::from_secs(20))
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Everything it printed so far.
    pub fn output(&self) -> Vec<String> {
        self.proc.output()
    }

    /// Prints its output (for a failing test's log).
    pub fn dump(&self) {
        self.proc.dump();
    }
}

impl Drop for Vswitchd {
    /// Stops it, then removes what a kill left: the network namespaces
    /// and nftables tables of its VPCs' SNAT (named
    /// `vsnat-<file_prefix>-<vpc>`, as vswitchd's `snat` module makes
    /// them; a restart of vswitchd would remove them too).
    fn drop(&mut self) {
        if self.proc.exit_code().is_none() {
            self.proc.stop(Duration::from_secs(20));
        }
        let Some(prefix) = &self.file_prefix else {
            return;
        };
        let ours = format!("vsnat-{prefix}-");
        for e in std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&ours) {
                let _ = Command::new("nft")
                    .args(["delete", "table", "ip", &name])
                    .output();
                let _ = Command::new("ip").args(["netns", "del", &name]).output();
            }
        }
    }
}
