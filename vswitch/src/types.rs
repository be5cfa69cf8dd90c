//! Small newtypes shared by the pipeline: MAC addresses, port and bridge ids.

use std::fmt;
use std::str::FromStr;

/// Frames per rx burst and per pipeline call. 32 is what DPDK's examples,
/// OVS (`NETDEV_MAX_BURST`) and VPP's vector size settle on: large enough to
/// amortise per-burst costs, small enough that a burst's mbuf headers stay
/// in L1.
pub const MAX_BURST: usize = 32;

/// Switch ports per vswitchd instance. Debian's DPDK is built with
/// `RTE_MAX_ETHPORTS = 32`; tunnel ports (one per remote VTEP) come on top,
/// so the switch's own index space is larger.
pub const MAX_PORTS: usize = 4096;

/// Index of a switch port (not a DPDK port id: the daemon maps between them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct PortId(pub u16);

impl PortId {
    /// The port as an index into per-port arrays.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Index of a bridge domain (one VPC segment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct BridgeId(pub u16);

impl BridgeId {
    /// The bridge as an index into per-bridge arrays.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A 48-bit Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Reads a MAC from the first six bytes of `b` (the caller checked the length).
    #[inline]
    pub fn from_slice(b: &[u8]) -> MacAddr {
        MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// Group bit set: broadcast or multicast; never learned, always flooded.
    #[inline]
    pub fn is_group(self) -> bool {
        self.0[0] & 1 == 1
    }

    /// 00:00:00:00:00:00, which no station may use as its source.
    #[inline]
    pub fn is_zero(self) -> bool {
        self.0 == [0; 6]
    }

    /// The address as the low 48 bits of a u64 (network byte order preserved).
    #[inline]
    pub fn to_u64(self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// A locally administered unicast MAC derived from `parts` (a port
    /// name; a container id and interface name): the same parts give the
    /// same MAC on every host and every restart. FNV-1a is hand-written on
    /// purpose: std's hasher does not promise stable output across Rust
    /// releases, and these MACs outlive builds.
    pub fn derived(parts: &[&str]) -> MacAddr {
        let h = fnv(parts).to_be_bytes();
        MacAddr([0x02, h[0], h[1], h[2], h[3], h[4]])
    }

    /// Inverse of [`MacAddr::to_u64`]; the high 16 bits are ignored.
    #[inline]
    pub fn from_u64(v: u64) -> MacAddr {
        let b = v.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

/// FNV-1a, 64 bits, over `parts` each followed by a NUL (so that
/// `["ab", "c"]` and `["a", "bc"]` differ). Stable across builds: names and
/// MACs derived from it must not change with an upgrade.
pub fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacParseError;

impl fmt::Display for MacParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected a MAC address like 02:00:00:00:00:01")
    }
}

impl std::error::Error for MacParseError {}

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let p = parts.next().ok_or(MacParseError)?;
            if p.len() != 2 {
                return Err(MacParseError);
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| MacParseError)?;
        }
        if parts.next().is_some() {
            return Err(MacParseError);
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_through_text_and_u64() {
        let m: MacAddr = "02:00:5e:10:ff:01".parse().unwrap();
        assert_eq!(m.to_string(), "02:00:5e:10:ff:01");
        assert_eq!(MacAddr::from_u64(m.to_u64()), m);
        assert_eq!(m.to_u64(), 0x0200_5e10_ff01);
    }

    #[test]
    fn mac_rejects_malformed_text() {
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "2:00:00:00:00:00",
            "zz:00:00:00:00:00",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn group_bit() {
        assert!(MacAddr::BROADCAST.is_group());
        assert!("01:00:5e:00:00:01".parse::<MacAddr>().unwrap().is_group());
        assert!(!"02:00:00:00:00:01".parse::<MacAddr>().unwrap().is_group());
    }
}
