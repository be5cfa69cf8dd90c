//! A one-member etcd cluster on 127.0.0.1 ports of its own, in a
//! temporary data directory (Debian's etcd-server; its service stays
//! disabled, see scripts/setup.sh). Stopped and removed on drop.

use std::process::Command;
use std::time::Duration;

use crate::process::Proc;
use crate::vswitchd::TempDir;

/// A running etcd member.
pub struct Etcd {
    proc: Proc,
    /// Its client URL.
    pub url: String,
    peer_url: String,
    dir: TempDir,
}

/// A TCP port free on 127.0.0.1 right now (the kernel's choice).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Etcd {
    /// Starts a member and waits (bounded) until it serves clients.
    pub fn start() -> Result<Etcd, String> {
        let dir = TempDir::new("etcd");
        let url = format!("http://127.0.0.1:{}", free_port());
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let proc = Self::spawn(&dir, &url, &peer_url)?;
        Ok(Etcd {
            proc,
            url,
            peer_url,
            dir,
        })
    }

    fn spawn(dir: &TempDir, url: &str, peer_url: &str) -> Result<Proc, String> {
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "m0", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", url, "--advertise-client-urls", url])
            .args(["--listen-peer-urls", peer_url])
            .args(["--initial-advertise-peer-urls", peer_url])
            .args(["--initial-cluster", &format!("m0={peer_url}")]);
        let mut proc = Proc::spawn("etcd", cmd).map_err(|e| format!("cannot run etcd: {e}"))?;
        if !proc.wait_for_line(Duration::from_secs(30), |l| {
            l.contains("ready to serve client requests")
        }) {
            proc.dump();
            return Err("etcd did not come up in 30 s".into());
        }
        Ok(proc)
    }

    /// Writes `key` = `value` (etcdctl, v3 API), as another client would.
    pub fn put(&self, key: &str, value: &str) -> Result<(), String> {
        crate::run(Command::new("etcdctl").env("ETCDCTL_API", "3").args([
            "--endpoints",
            &self.url,
            "put",
            key,
            value,
        ]))
        .map(|_| ())
    }

    /// Kills the member (SIGKILL): clients see it unreachable.
    pub fn kill(&mut self) {
        self.proc.signal(libc::SIGKILL);
        self.proc.wait_exit(Duration::from_secs(10));
    }

    /// Starts it again on its data and ports (after [`Etcd::kill`]).
    pub fn restart(&mut self) -> Result<(), String> {
        self.proc = Self::spawn(&self.dir, &self.url, &self.peer_url)?;
        Ok(())
    }
}

/// A three-member etcd cluster on 127.0.0.1 ports of its own.
pub struct Cluster {
    /// Per member: its process while it runs, client and peer URLs.
    members: Vec<(Option<Proc>, String, String)>,
    initial: String,
    dir: TempDir,
}

impl Cluster {
    /// Starts three members and waits (bounded) until each serves clients.
    pub fn start() -> Result<Cluster, String> {
        let dir = TempDir::new("etcd3");
        let members: Vec<_> = (0..3)
            .map(|_| {
                (
                    None,
                    format!("http://127.0.0.1:{}", free_port()),
                    format!("http://127.0.0.1:{}", free_port()),
                )
            })
            .collect();
        let initial = members
            .iter()
            .enumerate()
            .map(|(i, (_, _, peer))| format!("m{i}={peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            members,
            initial,
            dir,
        };
        c.start_stopped()?;
        Ok(c)
    }

    /// Starts every member that is not running, on its data and ports,
    /// and waits (bounded) until each serves clients (all at once: a
    /// member alone has no quorum to become ready with).
    pub fn start_stopped(&mut self) -> Result<(), String> {
        let mut started = Vec::new();
        for (i, (p, url, peer)) in self.members.iter_mut().enumerate() {
            if p.is_some() {
                continue;
            }
            let mut cmd = Command::new("etcd");
            cmd.args(["--name", &format!("m{i}"), "--data-dir"])
                .arg(self.dir.join(&format!("m{i}")))
                .args(["--listen-client-urls", url, "--advertise-client-urls", url])
                .args(["--listen-peer-urls", peer])
                .args(["--initial-advertise-peer-urls", peer])
                .args(["--initial-cluster", &self.initial])
                .args(["--initial-cluster-state", "new"]);
            *p = Some(Proc::spawn("etcd", cmd).map_err(|e| format!("cannot run etcd: {e}"))?);
            started.push(i);
        }
        for i in started {
            let (p, url, _) = &mut self.members[i];
            let p = p.as_mut().expect("started");
            if !p.wait_for_line(Duration::from_secs(30), |l| {
                l.contains("ready to serve client requests")
            }) {
                p.dump();
                return Err(format!("etcd member {url} did not come up in 30 s"));
            }
        }
        Ok(())
    }

    /// Every member's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(|(_, u, _)| u.clone()).collect()
    }

    /// The index of the member that leads now, if one answers as leader.
    pub fn leader(&self) -> Option<usize> {
        self.members.iter().position(|(p, url, _)| {
            p.is_some()
                && crate::run(Command::new("etcdctl").env("ETCDCTL_API", "3").args([
                    "--endpoints",
                    url,
                    "endpoint",
                    "status",
                    "-w",
                    "json",
                ]))
                .is_ok_and(|o| {
                    let v: serde_json::Value = serde_json::from_str(&o).unwrap_or_default();
                    let s = &v[0]["Status"];
                    s["leader"].is_u64() && s["leader"] == s["header"]["member_id"]
                })
        })
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].0.take() {
            p.signal(libc::SIGKILL);
            p.wait_exit(Duration::from_secs(10));
        }
    }

    /// Stops every member (SIGTERM, as an operator's `systemctl stop`).
    pub fn stop(&mut self) {
        for (p, _, _) in &mut self.members {
            if let Some(mut p) = p.take() {
                p.stop(Duration::from_secs(10));
            }
        }
    }
}
