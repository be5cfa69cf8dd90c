//! The rule model: what an operator writes in a security group.
//!
//! Directions are the container's view, as cloud security groups define
//! them: a port's *ingress* group judges frames the switch sends to the
//! container, its *egress* group frames the container sends.
//!
//! Priorities: a higher number wins; among equal priorities the earlier
//! rule in the group wins (the config check reports equal-priority rules
//! that overlap with different actions, since their order would then
//! matter silently).

use std::fmt;
use std::net::IpAddr;

/// What a matching rule (or a group's default) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Pass (and, when sessions are on, start a session).
    Allow,
    /// Drop, counted as `acl_deny`.
    Deny,
}

/// Address family of a packet or a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4: the address lives in the low 32 bits of a u128.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Address width in bits.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// An address prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// Family.
    pub family: Family,
    /// Address, host bits cleared (IPv4 in the low 32 bits).
    pub addr: u128,
    /// Prefix length (0..=32 or 0..=128).
    pub len: u8,
}

impl Cidr {
    /// `addr/len`, host bits cleared; None if `len` is too long.
    pub fn new(addr: IpAddr, len: u8) -> Option<Cidr> {
        let (family, a) = match addr {
            IpAddr::V4(a) => (Family::V4, u128::from(u32::from(a))),
            IpAddr::V6(a) => (Family::V6, u128::from(a)),
        };
        if len > family.bits() {
            return None;
        }
        let c = Cidr {
            family,
            addr: a,
            len,
        };
        Some(Cidr {
            addr: a & c.mask(),
            ..c
        })
    }

    /// The mask of the prefix within the family's width.
    pub fn mask(&self) -> u128 {
        prefix_mask(self.family, self.len)
    }

    /// Whether `addr` (of `family`) is inside.
    pub fn contains(&self, family: Family, addr: u128) -> bool {
        family == self.family && addr & self.mask() == self.addr
    }

    /// Whether every address of `other` is inside this prefix.
    pub fn covers(&self, other: &Cidr) -> bool {
        self.family == other.family
            && self.len <= other.len
            && other.addr & self.mask() == self.addr
    }
}

/// The mask of a `len`-bit prefix of a `family` address.
pub fn prefix_mask(family: Family, len: u8) -> u128 {
    let bits = u32::from(family.bits());
    let len = u32::from(len);
    if len == 0 {
        return 0;
    }
    let ones = u128::MAX >> (128 - len);
    ones << (bits - len)
}

impl std::str::FromStr for Cidr {
    type Err = String;

    /// `a.b.c.d/len`, `x::y/len`, or a bare address (a host prefix).
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("prefix length {l:?} is not 0..={max}"))?,
        };
        Cidr::new(addr, len).ok_or_else(|| "bad prefix".into())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.family {
            Family::V4 => write!(
                f,
                "{}/{}",
                std::net::Ipv4Addr::from(self.addr as u32),
                self.len
            ),
            Family::V6 => write!(f, "{}/{}", std::net::Ipv6Addr::from(self.addr), self.len),
        }
    }
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port.
    pub lo: u16,
    /// Last port.
    pub hi: u16,
}

impl PortRange {
    /// Every port.
    pub const ANY: PortRange = PortRange {
        lo: 0,
        hi: u16::MAX,
    };

    /// One port.
    pub fn one(p: u16) -> PortRange {
        PortRange { lo: p, hi: p }
    }

    /// Whether `p` is inside.
    pub fn contains(&self, p: u16) -> bool {
        (self.lo..=self.hi).contains(&p)
    }

    /// Whether `other` is inside.
    pub fn covers(&self, other: &PortRange) -> bool {
        self.lo <= other.lo && other.hi <= self.hi
    }

    /// Whether the ranges share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;

    /// `80`, `8000-8080`, or `any`.
    fn from_str(s: &str) -> Result<PortRange, String> {
        if s == "any" {
            return Ok(PortRange::ANY);
        }
        let p = |x: &str| {
            x.trim()
                .parse::<u16>()
                .map_err(|_| format!("{x:?} is not a port 0-65535"))
        };
        match s.split_once('-') {
            None => Ok(PortRange::one(p(s)?)),
            Some((a, b)) => {
                let (lo, hi) = (p(a)?, p(b)?);
                if lo > hi {
                    return Err(format!("range {s:?} is empty ({lo} > {hi})"));
                }
                Ok(PortRange { lo, hi })
            }
        }
    }
}

/// The protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// Any IP protocol (ports are then not matched).
    Any,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP for IPv4 (1), ICMPv6 for IPv6 (58).
    Icmp,
    /// Another IP protocol number.
    Number(u8),
}

/// IP protocol numbers.
pub const TCP: u8 = 6;
/// UDP.
pub const UDP: u8 = 17;
/// ICMP.
pub const ICMP: u8 = 1;
/// ICMPv6.
pub const ICMPV6: u8 = 58;

impl Proto {
    /// The protocol number for a `family` packet (None: any).
    pub fn number(self, family: Family) -> Option<u8> {
        match self {
            Proto::Any => None,
            Proto::Tcp => Some(TCP),
            Proto::Udp => Some(UDP),
            Proto::Icmp => Some(if family == Family::V4 { ICMP } else { ICMPV6 }),
            Proto::Number(n) => Some(n),
        }
    }

    /// Whether the protocol has ports (TCP, UDP) in the key's port fields.
    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp)
    }
}

impl std::str::FromStr for Proto {
    type Err = String;

    /// `any`, `tcp`, `udp`, `icmp`, or a number.
    fn from_str(s: &str) -> Result<Proto, String> {
        Ok(match s {
            "any" => Proto::Any,
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "icmp" => Proto::Icmp,
            n => match n.parse::<u8>() {
                Ok(TCP) => Proto::Tcp,
                Ok(UDP) => Proto::Udp,
                Ok(n) => Proto::Number(n),
                Err(_) => return Err(format!("{s:?}: expected any, tcp, udp, icmp or 0-255")),
            },
        })
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Name, unique in its group (reported in stats and lint messages).
    pub name: String,
    /// Higher wins.
    pub priority: u32,
    /// Source prefix (None: any address of either family).
    pub src: Option<Cidr>,
    /// Destination prefix (None: any).
    pub dst: Option<Cidr>,
    /// Protocol.
    pub proto: Proto,
    /// TCP/UDP source ports.
    pub src_ports: PortRange,
    /// TCP/UDP destination ports.
    pub dst_ports: PortRange,
    /// ICMP type (None: any); only with `Proto::Icmp`.
    pub icmp_type: Option<u8>,
    /// ICMP code (None: any); only with `Proto::Icmp`.
    pub icmp_code: Option<u8>,
    /// What a match does.
    pub action: Action,
    /// Meter class the matching frames go through (see the QoS policies).
    pub qos_class: Option<String>,
}

impl Rule {
    /// A rule matching everything, to be narrowed by the caller.
    pub fn any(name: &str, priority: u32, action: Action) -> Rule {
        Rule {
            name: name.into(),
            priority,
            src: None,
            dst: None,
            proto: Proto::Any,
            src_ports: PortRange::ANY,
            dst_ports: PortRange::ANY,
            icmp_type: None,
            icmp_code: None,
            action,
            qos_class: None,
        }
    }

    /// The single family the rule is restricted to by its prefixes, or
    /// None if it applies to both. Err if its prefixes disagree.
    pub fn family(&self) -> Result<Option<Family>, String> {
        match (self.src, self.dst) {
            (Some(s), Some(d)) if s.family != d.family => Err(format!(
                "rule {:?}: source {s} and destination {d} are of different families",
                self.name
            )),
            (Some(c), _) | (_, Some(c)) => Ok(Some(c.family)),
            (None, None) => Ok(None),
        }
    }

    /// Whether the rule matches `t` (the reference semantics every
    /// classifier must agree with).
    pub fn matches(&self, t: &Tuple) -> bool {
        let addr_ok = |c: &Option<Cidr>, a: u128| c.is_none_or(|c| c.contains(t.family, a));
        if !addr_ok(&self.src, t.src) || !addr_ok(&self.dst, t.dst) {
            return false;
        }
        let Some(p) = self.proto.number(t.family) else {
            return true;
        };
        if t.proto != p {
            return false;
        }
        if self.proto.has_ports() {
            return self.src_ports.contains(t.sport) && self.dst_ports.contains(t.dport);
        }
        if self.proto == Proto::Icmp {
            return self.icmp_type.is_none_or(|x| u16::from(x) == t.sport)
                && self.icmp_code.is_none_or(|x| u16::from(x) == t.dport);
        }
        true
    }
}

/// A named, ordered set of rules with a default action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroup {
    /// Name.
    pub name: String,
    /// Rules (any order; priority decides, then this order).
    pub rules: Vec<Rule>,
    /// What happens when no rule matches.
    pub default: Action,
}

/// What a classifier sees of a packet: its 5-tuple. ICMP type and code ride
/// in `sport` and `dport`, as in the switch's flow key. Frames without an
/// L4 header (later fragments, other protocols) have ports 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Family.
    pub family: Family,
    /// Source address (IPv4 in the low 32 bits).
    pub src: u128,
    /// Destination address.
    pub dst: u128,
    /// IP protocol.
    pub proto: u8,
    /// Source port or ICMP type.
    pub sport: u16,
    /// Destination port or ICMP code.
    pub dport: u16,
}

/// A classifier's answer for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Allow or deny.
    pub action: Action,
    /// Index of the matching rule in the group, None for the default.
    pub rule: Option<u32>,
}
