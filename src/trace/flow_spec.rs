//! The frame `vswitchctl trace PORT FLOW` sends through the pipeline,
//! described the way `ovs-appctl ofproto/trace` takes a flow:
//! comma-separated, a protocol word and `field=value` pairs, e.g.
//! `tcp,nw_dst=10.0.0.2,tp_dst=80` or `icmp6,ipv6_dst=fd00::2` or
//! `arp,arp_tpa=10.0.0.1`. What is left out comes from the port (its MAC
//! and address as source) and its bridge (the destination's MAC: the
//! port that owns `nw_dst`, else the VPC router's). The frame is built
//! with etherparse (checksums right), then tagged if `dl_vlan` asks.

use std::net::IpAddr;

use etherparse::PacketBuilder;
use vswitch::MacAddr;

/// The protocol words, and what each means.
const PROTOCOLS: &[&str] = &[
    "eth", "arp", "ip", "ipv6", "tcp", "udp", "icmp", "tcp6", "udp6", "icmp6",
];

/// The fields a flow may set.
const FIELDS: &[&str] = &[
    "dl_src",
    "dl_dst",
    "dl_vlan",
    "dl_type",
    "nw_src",
    "nw_dst",
    "ipv6_src",
    "ipv6_dst",
    "arp_spa",
    "arp_tpa",
    "nw_ttl",
    "nw_proto",
    "tp_src",
    "tp_dst",
    "tcp_flags",
    "icmp_type",
    "icmp_code",
    "len",
];

/// A parsed flow: what the operator gave.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlowSpec {
    /// The protocol word (`udp` when none is given).
    pub proto: String,
    dl_src: Option<MacAddr>,
    dl_dst: Option<MacAddr>,
    dl_vlan: Option<u16>,
    dl_type: Option<u16>,
    /// Source address (`nw_src`, `ipv6_src`, `arp_spa`).
    pub nw_src: Option<IpAddr>,
    /// Destination address (`nw_dst`, `ipv6_dst`, `arp_tpa`).
    pub nw_dst: Option<IpAddr>,
    nw_ttl: Option<u8>,
    nw_proto: Option<u8>,
    tp_src: Option<u16>,
    tp_dst: Option<u16>,
    tcp_flags: Option<u8>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    len: Option<usize>,
}

/// What the port and its bridge supply for what a flow leaves out.
pub struct Defaults<'a> {
    /// The port's MAC.
    pub mac: MacAddr,
    /// The port's addresses (either family).
    pub ips: &'a [IpAddr],
    /// The MAC that owns an address in the port's bridge, if any (a
    /// port's, a remote station's, or the VPC router's for what it
    /// routes).
    pub mac_of: &'a dyn Fn(IpAddr) -> Option<MacAddr>,
}

impl FlowSpec {
    /// Whether the flow is IPv6.
    pub fn is_v6(&self) -> bool {
        matches!(self.proto.as_str(), "ipv6" | "tcp6" | "udp6" | "icmp6")
    }

    /// Parses `FLOW` (see the module documentation).
    pub fn parse(text: &str) -> Result<FlowSpec, String> {
        let mut f = FlowSpec::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((k, v)) = item.split_once('=') else {
                if !PROTOCOLS.contains(&item) {
                    return Err(unknown("protocol", item, PROTOCOLS));
                }
                if !f.proto.is_empty() {
                    return Err(format!("two protocols: {} and {item}", f.proto));
                }
                f.proto = item.to_string();
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            let bad = |what: &str| format!("{k}={v}: not {what}");
            let num = |max: u64| -> Result<u64, String> {
                let n = match v.strip_prefix("0x") {
                    Some(h) => u64::from_str_radix(h, 16),
                    None => v.parse(),
                };
                n.ok()
                    .filter(|&n| n <= max)
                    .ok_or_else(|| bad(&format!("a number up to {max}")))
            };
            match k {
                "dl_src" => f.dl_src = Some(v.parse().map_err(|_| bad("a MAC address"))?),
                "dl_dst" => f.dl_dst = Some(v.parse().map_err(|_| bad("a MAC address"))?),
                "dl_vlan" => f.dl_vlan = Some(num(4095)? as u16),
                "dl_type" => f.dl_type = Some(num(0xffff)? as u16),
                "nw_src" | "ipv6_src" | "arp_spa" => {
                    f.nw_src = Some(v.parse().map_err(|_| bad("an IP address"))?)
                }
                "nw_dst" | "ipv6_dst" | "arp_tpa" => {
                    f.nw_dst = Some(v.parse().map_err(|_| bad("an IP address"))?)
                }
                "nw_ttl" => f.nw_ttl = Some(num(255)? as u8),
                "nw_proto" => f.nw_proto = Some(num(255)? as u8),
                "tp_src" => f.tp_src = Some(num(65535)? as u16),
                "tp_dst" => f.tp_dst = Some(num(65535)? as u16),
                "tcp_flags" => {
                    f.tcp_flags = Some(
                        tcp_flags(v)
                            .ok_or_else(|| bad("TCP flags (letters of FSRPAU, or a number)"))?,
                    )
                }
                "icmp_type" => f.icmp_type = Some(num(255)? as u8),
                "icmp_code" => f.icmp_code = Some(num(255)? as u8),
                "len" => f.len = Some(num(9216)? as usize),
                _ => return Err(unknown("field", k, FIELDS)),
            }
        }
        if f.proto.is_empty() {
            f.proto = if f.nw_dst.is_some_and(|a| a.is_ipv6()) {
                "udp6"
            } else {
                "udp"
            }
            .into();
        }
        let ported = matches!(f.proto.as_str(), "tcp" | "udp" | "tcp6" | "udp6");
        if !ported && (f.tp_src.is_some() || f.tp_dst.is_some()) {
            return Err(format!("{} has no ports (tp_src, tp_dst)", f.proto));
        }
        if f.tcp_flags.is_some() && !f.proto.starts_with("tcp") {
            return Err("tcp_flags needs tcp or tcp6".into());
        }
        if (f.icmp_type.is_some() || f.icmp_code.is_some()) && !f.proto.starts_with("icmp") {
            return Err("icmp_type and icmp_code need icmp or icmp6".into());
        }
        if f.dl_type.is_some() && f.proto != "eth" {
            return Err("dl_type goes with eth (other protocols set it)".into());
        }
        for a in [f.nw_src, f.nw_dst].into_iter().flatten() {
            if f.proto != "eth" && a.is_ipv6() != f.is_v6() {
                return Err(format!(
                    "{a} is not an {} address ({} is {})",
                    if f.is_v6() { "IPv6" } else { "IPv4" },
                    f.proto,
                    if f.is_v6() { "IPv6" } else { "IPv4" }
                ));
            }
        }
        Ok(f)
    }

    /// The frame, what the flow leaves out taken from `d`.
    pub fn build(&self, d: &Defaults) -> Result<Vec<u8>, String> {
        let src = self.dl_src.unwrap_or(d.mac);
        let v6 = self.is_v6();
        let nw_src = match self.nw_src {
            Some(a) => Some(a),
            None => d.ips.iter().copied().find(|a| a.is_ipv6() == v6),
        };
        let need = |what: &str| format!("the port has no {what}: give it in the flow");
        let mut frame = match self.proto.as_str() {
            "eth" => {
                let dst = self.dl_dst.unwrap_or(MacAddr::BROADCAST);
                let mut v = Vec::with_capacity(60);
                v.extend_from_slice(&dst.0);
                v.extend_from_slice(&src.0);
                v.extend_from_slice(&self.dl_type.unwrap_or(0x88b5).to_be_bytes());
                v
            }
            "arp" => {
                let (IpAddr::V4(spa), IpAddr::V4(tpa)) = (
                    nw_src.ok_or_else(|| need("IPv4 address (arp_spa)"))?,
                    self.nw_dst
                        .ok_or("arp needs arp_tpa, the address asked for")?,
                ) else {
                    return Err("arp addresses are IPv4".into());
                };
                let dst = self.dl_dst.unwrap_or(MacAddr::BROADCAST);
                let mut v = Vec::with_capacity(60);
                v.extend_from_slice(&dst.0);
                v.extend_from_slice(&src.0);
                v.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
                v.extend_from_slice(&src.0);
                v.extend_from_slice(&spa.octets());
                v.extend_from_slice(&[0; 6]);
                v.extend_from_slice(&tpa.octets());
                v
            }
            _ => {
                let nw_src = nw_src.ok_or_else(|| {
                    need(if v6 {
                        "IPv6 address (ipv6_src)"
                    } else {
                        "IPv4 address (nw_src)"
                    })
                })?;
                let nw_dst = self.nw_dst.ok_or("the flow needs a destination (nw_dst)")?;
                let dst = match self.dl_dst {
                    Some(m) => m,
                    None => group_mac(nw_dst)
                        .or_else(|| (d.mac_of)(nw_dst))
                        .ok_or_else(|| {
                            format!("nothing in the port's bridge owns {nw_dst}: give dl_dst")
                        })?,
                };
                self.ip_frame(src, dst, nw_src, nw_dst)?
            }
        };
        if let Some(len) = self.len {
            if len < frame.len() {
                return Err(format!(
                    "len={len}: the headers alone take {} bytes",
                    frame.len()
                ));
            }
            frame.resize(len, 0);
        }
        if frame.len() < 60 {
            frame.resize(60, 0); // Ethernet's minimum (without FCS)
        }
        if let Some(vid) = self.dl_vlan {
            let tag = [0x81, 0x00, (vid >> 8) as u8, vid as u8];
            frame.splice(12..12, tag);
        }
        Ok(frame)
    }

    fn ip_frame(
        &self,
        src: MacAddr,
        dst: MacAddr,
        nw_src: IpAddr,
        nw_dst: IpAddr,
    ) -> Result<Vec<u8>, String> {
        let eth = PacketBuilder::ethernet2(src.0, dst.0);
        let ttl = self.nw_ttl.unwrap_or(64);
        let ip = match (nw_src, nw_dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), ttl),
            (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), ttl),
            _ => return Err(format!("{nw_src} and {nw_dst} are of two families")),
        };
        let mut v = Vec::new();
        let (sport, dport) = (self.tp_src.unwrap_or(40000), self.tp_dst.unwrap_or(0));
        let written = match self.proto.as_str() {
            "tcp" | "tcp6" => {
                // A connection's first frame unless told otherwise.
                let flags = self.tcp_flags.unwrap_or(0x02);
                let mut t = ip.tcp(sport, dport, 1, 64240);
                for (bit, set) in [(0x01, 0), (0x02, 1), (0x04, 2), (0x08, 3)] {
                    if flags & bit != 0 {
                        t = match set {
                            0 => t.fin(),
                            1 => t.syn(),
                            2 => t.rst(),
                            _ => t.psh(),
                        };
                    }
                }
                if flags & 0x10 != 0 {
                    t = t.ack(1);
                }
                if flags & 0x20 != 0 {
                    t = t.urg(0);
                }
                t.write(&mut v, &[])
            }
            "udp" | "udp6" => ip.udp(sport, dport).write(&mut v, &[]),
            // An echo request unless told otherwise.
            "icmp" => ip
                .icmpv4_raw(
                    self.icmp_type.unwrap_or(8),
                    self.icmp_code.unwrap_or(0),
                    [0, 1, 0, 1],
                )
                .write(&mut v, &[]),
            "icmp6" => ip
                .icmpv6_raw(
                    self.icmp_type.unwrap_or(128),
                    self.icmp_code.unwrap_or(0),
                    [0, 1, 0, 1],
                )
                .write(&mut v, &[]),
            _ => {
                let proto = self.nw_proto.unwrap_or(253); // RFC 3692 experiments
                ip.write(&mut v, proto.into(), &[])
            }
        };
        written.map_err(|e| format!("cannot build the frame: {e}"))?;
        Ok(v)
    }
}

/// The MAC a frame to a broadcast or multicast address goes to.
fn group_mac(a: IpAddr) -> Option<MacAddr> {
    match a {
        IpAddr::V4(v) if v.is_broadcast() => Some(MacAddr::BROADCAST),
        IpAddr::V4(v) if v.is_multicast() => {
            let o = v.octets();
            Some(MacAddr([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]))
        }
        IpAddr::V6(v) if v.is_multicast() => {
            let o = v.octets();
            Some(MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]]))
        }
        _ => None,
    }
}

/// TCP flags as letters (`S`, `SA`, `FA`, `R`...) or a number.
fn tcp_flags(v: &str) -> Option<u8> {
    if let Ok(n) = v.parse::<u8>() {
        return Some(n);
    }
    v.chars().try_fold(0u8, |acc, c| {
        let bit = match c.to_ascii_uppercase() {
            'F' => 0x01,
            'S' => 0x02,
            'R' => 0x04,
            'P' => 0x08,
            'A' => 0x10,
            'U' => 0x20,
            _ => return None,
        };
        Some(acc | bit)
    })
}

fn unknown(what: &str, word: &str, known: &[&str]) -> String {
    match crate::config::nearest(word, known) {
        Some(k) => format!("unknown {what} {word:?}: did you mean {k:?}?"),
        None => format!("unknown {what} {word:?} (known: {})", known.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use vswitch::{FlowKey, L3};

    use super::*;

    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const PEER: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn build(flow: &str) -> Result<Vec<u8>, String> {
        let ips = ["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()];
        let mac_of = |a: IpAddr| (a == IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))).then_some(PEER);
        FlowSpec::parse(flow)?.build(&Defaults {
            mac: MAC,
            ips: &ips,
            mac_of: &mac_of,
        })
    }

    #[test]
    fn flows_become_the_frames_they_describe() {
        let f = build("tcp,nw_dst=10.0.0.2,tp_dst=80").unwrap();
        let k = FlowKey::parse(&f).unwrap();
        assert_eq!(
            (k.src_mac, k.dst_mac),
            (MAC, PEER),
            "defaults from the port"
        );
        assert_eq!(
            (k.l3, k.proto, k.dst_port, k.tcp_flags),
            (L3::V4, 6, 80, 0x02)
        );
        assert_eq!(k.src_ip as u32, u32::from(Ipv4Addr::new(10, 0, 0, 1)));
        let f = build("tcp,nw_dst=10.0.0.2,tcp_flags=FA,dl_vlan=7,len=200").unwrap();
        let k = FlowKey::parse(&f).unwrap();
        assert_eq!((k.tcp_flags, k.vlan, f.len()), (0x11, Some(7), 204));
        let f = build("icmp6,ipv6_dst=fd00::9,dl_dst=02:00:00:00:00:09").unwrap();
        let k = FlowKey::parse(&f).unwrap();
        assert_eq!(
            (k.l3, k.proto, k.src_port),
            (L3::V6, 58, 128),
            "an echo request"
        );
        let f = build("arp,arp_tpa=10.0.0.2").unwrap();
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[38..42], &[10, 0, 0, 2]);
        let f = build("udp,nw_dst=255.255.255.255,tp_dst=67").unwrap();
        assert_eq!(&f[0..6], &[0xff; 6]);
    }

    #[test]
    fn mistakes_are_named() {
        let err = |flow: &str| build(flow).unwrap_err();
        assert!(err("tpc,nw_dst=10.0.0.2").contains("did you mean \"tcp\""));
        assert!(err("tcp,nw_dts=10.0.0.2").contains("did you mean \"nw_dst\""));
        assert!(err("tcp,tp_dst=70000,nw_dst=10.0.0.2").contains("tp_dst=70000"));
        assert!(err("icmp,tp_dst=1,nw_dst=10.0.0.2").contains("no ports"));
        assert!(err("tcp,nw_dst=fd00::2").contains("not an IPv4 address"));
        assert!(err("udp,nw_dst=10.0.0.3").contains("give dl_dst"));
        assert!(err("udp").contains("destination"));
        assert!(err("tcp,nw_dst=10.0.0.2,len=20").contains("headers alone"));
    }
}
