//! Which bridge domain a VNI is, and which tunnel port a remote VTEP is in
//! it: the decap lookup, read by every worker from the immutable snapshot.
//!
//! Each remote VTEP of a VNI is a port of that VNI's bridge domain, so MAC
//! learning ("this inner MAC lives behind VTEP 10.0.0.2"), aging, flooding
//! with split horizon, counters and the security stage all reuse the
//! bridge. This map is how a decapsulated frame finds its ingress port.
//! FxHash (rustc-hash), as in the ACL classifier: the keys are two
//! integers, hashed in a couple of cycles, and the tables hold a few dozen
//! entries built once per snapshot, so neither DPDK's rte_hash (EAL memory,
//! C calls per lookup) nor a hand-written table would buy anything.

use std::net::Ipv4Addr;

use rustc_hash::FxHashMap;

/// What the decap lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The tunnel port of that remote VTEP in that VNI.
    Port(u16),
    /// The VNI is served (bridge index given) but this remote VTEP is not
    /// a port of it yet: learn it on the slow path.
    UnknownRemote(u16),
    /// No bridge domain carries this VNI.
    UnknownVni,
}

/// VNI -> bridge, (VNI, remote VTEP) -> tunnel port.
#[derive(Debug, Clone, Default)]
pub struct TunnelMap {
    vnis: FxHashMap<u32, u16>,
    remotes: FxHashMap<u64, u16>,
}

fn key(vni: u32, remote: Ipv4Addr) -> u64 {
    u64::from(vni) << 32 | u64::from(u32::from(remote))
}

impl TunnelMap {
    /// An empty map.
    pub fn new() -> TunnelMap {
        TunnelMap::default()
    }

    /// Serves `vni` with bridge `bridge`.
    pub fn add_vni(&mut self, vni: u32, bridge: u16) {
        self.vnis.insert(vni, bridge);
    }

    /// Makes `remote` in `vni` tunnel port `port`.
    pub fn add_remote(&mut self, vni: u32, remote: Ipv4Addr, port: u16) {
        self.remotes.insert(key(vni, remote), port);
    }

    /// The decap lookup.
    #[inline]
    pub fn lookup(&self, vni: u32, remote: Ipv4Addr) -> Lookup {
        if let Some(&p) = self.remotes.get(&key(vni, remote)) {
            return Lookup::Port(p);
        }
        match self.vnis.get(&vni) {
            Some(&b) => Lookup::UnknownRemote(b),
            None => Lookup::UnknownVni,
        }
    }

    /// The bridge serving `vni`.
    pub fn bridge_of(&self, vni: u32) -> Option<u16> {
        self.vnis.get(&vni).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_vni_and_unknowns() {
        let mut m = TunnelMap::new();
        let a = Ipv4Addr::new(10, 0, 0, 2);
        let b = Ipv4Addr::new(10, 0, 0, 3);
        m.add_vni(100, 0);
        m.add_vni(200, 1);
        m.add_remote(100, a, 5);
        m.add_remote(200, a, 6);
        assert_eq!(m.lookup(100, a), Lookup::Port(5));
        assert_eq!(m.lookup(200, a), Lookup::Port(6));
        assert_eq!(m.lookup(100, b), Lookup::UnknownRemote(0));
        assert_eq!(m.lookup(300, a), Lookup::UnknownVni);
        assert_eq!(m.bridge_of(200), Some(1));
    }
}
