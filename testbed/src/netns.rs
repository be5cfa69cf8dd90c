//! Network namespaces standing in for containers.

use std::process::Command;

/// A namespace deleted on drop (with every interface still in it).
pub struct Netns {
    name: String,
}

fn run(args: &[&str]) -> Result<String, String> {
    let mut c = Command::new(args[0]);
    c.args(&args[1..]);
    crate::run(&mut c)
}

impl Netns {
    /// Creates `name` with loopback up and IPv6 off, so the only frames its
    /// NICs send are the ones a test causes (no router solicitations or MLD
    /// reports muddying exact counter checks).
    pub fn create(name: &str) -> Result<Netns, String> {
        let _ = run(&["ip", "netns", "del", name]);
        run(&["ip", "netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
        Ok(ns)
    }

    /// Turns IPv6 on for the NICs it gets from now on (a test of IPv6).
    pub fn enable_ipv6(&self) -> Result<(), String> {
        self.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0"])?;
        self.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=0"])?;
        Ok(())
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside it; its stdout, or an error with its stderr.
    pub fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run(&full)
    }

    /// A command that runs inside it (for spawning).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// A TCP server inside it on `port` answering each connection with
    /// the output of the shell command `reply` (socat; `$SOCAT_PEERADDR`
    /// is the client's address), once it listens (bounded wait).
    pub fn tcp_server(&self, port: u16, reply: &str) -> crate::process::Proc {
        let mut c = self.command("socat");
        c.args([
            &format!("TCP-LISTEN:{port},reuseaddr,fork"),
            &format!("SYSTEM:{reply}"),
        ]);
        let p = crate::process::Proc::spawn("socat", c).unwrap();
        assert!(crate::wait_until(
            std::time::Duration::from_secs(10),
            || self
                .exec(&["ss", "-tln", "sport", &format!("= :{port}")])
                .is_ok_and(|o| o.contains(&port.to_string()))
        ));
        p
    }

    /// What a TCP connection from inside it to `ip:port` reads (5 s), if
    /// it connects.
    pub fn tcp_fetch(&self, ip: &str, port: u16) -> Option<String> {
        self.exec(&[
            "socat",
            "-T5",
            "-",
            &format!("TCP:{ip}:{port},connect-timeout=2"),
        ])
        .ok()
    }

    /// A counter of an interface inside it (`rx_packets`, `tx_packets`, ...).
    pub fn if_counter(&self, ifname: &str, counter: &str) -> Result<u64, String> {
        let path = format!("/sys/class/net/{ifname}/statistics/{counter}");
        self.exec(&["cat", &path])?
            .trim()
            .parse()
            .map_err(|e| format!("{path}: {e}"))
    }

    /// Whether the interface exists inside it.
    pub fn has_interface(&self, ifname: &str) -> bool {
        self.exec(&["ip", "link", "show", "dev", ifname]).is_ok()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// A veth pair, deleted on drop (deleting one end deletes both).
pub struct Veth {
    name: String,
}

impl Veth {
    /// Creates `name` in the current namespace and its peer `peer`, in
    /// `ns` if given (else here too), both up.
    pub fn create(name: &str, peer: &str, ns: Option<&Netns>) -> Result<Veth, String> {
        let _ = run(&["ip", "link", "del", name]);
        let mut args = vec![
            "ip", "link", "add", name, "type", "veth", "peer", "name", peer,
        ];
        if let Some(ns) = ns {
            args.extend(["netns", ns.name()]);
        }
        run(&args)?;
        let veth = Veth {
            name: name.to_string(),
        };
        run(&["ip", "link", "set", name, "up"])?;
        match ns {
            Some(ns) => ns.exec(&["ip", "link", "set", peer, "up"])?,
            None => run(&["ip", "link", "set", peer, "up"])?,
        };
        Ok(veth)
    }

    /// The name of this end.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The MAC of this end.
    pub fn mac(&self) -> Result<String, String> {
        std::fs::read_to_string(format!("/sys/class/net/{}/address", self.name))
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("{}: {e}", self.name))
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.name]);
    }
}
