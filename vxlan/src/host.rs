//! The VTEP's small host stack on the slow path: it answers ARP for the
//! VTEP address and ICMP echo to it, and keeps the underlay neighbour table
//! (next hop -> MAC) that encap needs.
//!
//! Workers punt the uplink frames that are for the VTEP but not VXLAN (ARP,
//! ICMP, anything else to its address) to the control thread, which hands
//! them to [`VtepHost::receive`] and injects the frames it returns back out
//! of the uplink.
//!
//! Why smoltcp: it is a complete, well-tested host stack (ARP, IPv4, ICMP
//! with the RFC 1122 answers a host owes its neighbours) that runs over a
//! caller-supplied frame queue, so the VTEP behaves like a proper host
//! without a kernel interface or a hand-written responder. Its neighbour
//! cache is private, though, and the data path needs the next hop's MAC in
//! its own snapshot; so ARP frames are also read here (with smoltcp's wire
//! parser) to keep [`VtepHost`]'s own table, and resolution requests are
//! built with smoltcp's wire emitter.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, IpAddress, IpCidr,
};

/// A neighbour's MAC and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// Its MAC.
    pub mac: [u8; 6],
    /// Configured (never replaced by ARP).
    pub is_static: bool,
    /// When ARP last confirmed it (None for static entries).
    pub confirmed: Option<Instant>,
}

/// The frame queue smoltcp runs over: punted frames in, answers out.
struct Queue {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    mtu: usize,
}

impl Device for Queue {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.mtu + 14;
        c.checksum = ChecksumCapabilities::default();
        c
    }

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((RxToken(frame), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }
}

struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct TxToken<'a>(&'a mut Vec<Vec<u8>>);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0; len];
        let r = f(&mut b);
        self.0.push(b);
        r
    }
}

/// Whether `a` and `b` share the `prefix`-bit subnet.
pub fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

/// What [`VtepHost::receive`] made of a punted frame.
#[derive(Debug, Default)]
pub struct Received {
    /// Frames to send out of the uplink (ARP and ICMP answers).
    pub send: Vec<Vec<u8>>,
    /// The neighbour table changed (a MAC appeared or moved): the data
    /// path's tunnel headers need rebuilding.
    pub neighbours_changed: bool,
}

/// The VTEP's host stack (see the module documentation).
pub struct VtepHost {
    iface: Interface,
    dev: Queue,
    sockets: SocketSet<'static>,
    mac: [u8; 6],
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    neighbours: HashMap<Ipv4Addr, Neighbour>,
    epoch: Instant,
}

impl VtepHost {
    /// A host with address `ip/prefix` on an uplink with MAC `mac` (unicast)
    /// and MTU `mtu`, routing off-subnet VTEPs via `gateway`, with `statics`
    /// as configured neighbours.
    pub fn new(
        mac: [u8; 6],
        ip: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
        mtu: u16,
        statics: &[(Ipv4Addr, [u8; 6])],
    ) -> VtepHost {
        let mut dev = Queue {
            rx: VecDeque::new(),
            tx: Vec::new(),
            mtu: usize::from(mtu),
        };
        let epoch = Instant::now();
        let mut cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        cfg.random_seed =
            u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]);
        let mut iface = Interface::new(cfg, &mut dev, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(ip), prefix))
                .expect("one address fits");
        });
        if let Some(gw) = gateway {
            iface
                .routes_mut()
                .add_default_ipv4_route(gw)
                .expect("one route fits");
        }
        let neighbours = statics
            .iter()
            .map(|&(ip, mac)| {
                (
                    ip,
                    Neighbour {
                        mac,
                        is_static: true,
                        confirmed: None,
                    },
                )
            })
            .collect();
        VtepHost {
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            mac,
            ip,
            prefix,
            gateway,
            neighbours,
            epoch,
        }
    }

    fn on_link(&self, ip: Ipv4Addr) -> bool {
        same_subnet(ip, self.ip, self.prefix)
    }

    /// The underlay next hop towards a remote VTEP: itself when on the
    /// VTEP's subnet, else the gateway (None: unreachable, no gateway).
    pub fn next_hop(&self, remote: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.on_link(remote) {
            Some(remote)
        } else {
            self.gateway
        }
    }

    /// The MAC of a neighbour, if known.
    pub fn neighbour(&self, ip: Ipv4Addr) -> Option<Neighbour> {
        self.neighbours.get(&ip).copied()
    }

    /// Every known neighbour.
    pub fn neighbours(&self) -> impl Iterator<Item = (Ipv4Addr, Neighbour)> + '_ {
        self.neighbours.iter().map(|(&ip, &n)| (ip, n))
    }

    /// A broadcast ARP request for `target`, to send out of the uplink.
    pub fn arp_request(&self, target: Ipv4Addr) -> Vec<u8> {
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(self.mac),
            source_protocol_addr: self.ip,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress(self.mac),
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Arp,
        };
        // Padded to the 60-byte Ethernet minimum.
        let mut buf = vec![0u8; 60];
        let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut frame);
        arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
        buf
    }

    /// Learns from an ARP frame for us (request or reply from a neighbour
    /// on our subnet); true if a MAC appeared or moved.
    fn learn(&mut self, frame: &[u8], now: Instant) -> bool {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return false;
        };
        if eth.ethertype() != EthernetProtocol::Arp {
            return false;
        }
        let Ok(pkt) = ArpPacket::new_checked(eth.payload()) else {
            return false;
        };
        let Ok(ArpRepr::EthernetIpv4 {
            source_hardware_addr,
            source_protocol_addr: sip,
            target_protocol_addr: tip,
            ..
        }) = ArpRepr::parse(&pkt)
        else {
            return false;
        };
        let mac = source_hardware_addr.0;
        if tip != self.ip || !self.on_link(sip) || sip == self.ip || mac[0] & 1 == 1 {
            return false;
        }
        match self.neighbours.get_mut(&sip) {
            Some(n) if n.is_static => false,
            Some(n) => {
                n.confirmed = Some(now);
                std::mem::replace(&mut n.mac, mac) != mac
            }
            None => {
                self.neighbours.insert(
                    sip,
                    Neighbour {
                        mac,
                        is_static: false,
                        confirmed: Some(now),
                    },
                );
                true
            }
        }
    }

    /// Handles one punted frame at `now`.
    pub fn receive(&mut self, frame: Vec<u8>, now: Instant) -> Received {
        let neighbours_changed = self.learn(&frame, now);
        self.dev.rx.push_back(frame);
        let ts = smoltcp::time::Instant::from_micros(
            now.saturating_duration_since(self.epoch).as_micros() as i64,
        );
        self.iface.poll(ts, &mut self.dev, &mut self.sockets);
        Received {
            send: std::mem::take(&mut self.dev.tx),
            neighbours_changed,
        }
    }

    /// Next hops to (re-)resolve at `now`: those of `remotes` with no MAC,
    /// and learned ones not confirmed for `refresh`.
    pub fn to_resolve(
        &self,
        remotes: impl IntoIterator<Item = Ipv4Addr>,
        now: Instant,
        refresh: Duration,
    ) -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> = remotes
            .into_iter()
            .filter_map(|r| self.next_hop(r))
            .filter(|h| match self.neighbours.get(h) {
                None => true,
                Some(n) => n
                    .confirmed
                    .is_some_and(|t| now.saturating_duration_since(t) >= refresh),
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

    const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const OUR_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
    const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);

    fn host() -> VtepHost {
        VtepHost::new(
            OUR_MAC,
            OUR_IP,
            24,
            Some(Ipv4Addr::new(10, 9, 0, 254)),
            1500,
            &[(Ipv4Addr::new(10, 9, 0, 7), [2, 0, 0, 0, 0, 7])],
        )
    }

    fn arp(op: ArpOperation, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
        let mut buf = vec![0u8; 42];
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        EthernetRepr {
            src_addr: EthernetAddress(sha),
            dst_addr: if op == ArpOperation::Request {
                EthernetAddress::BROADCAST
            } else {
                EthernetAddress(tha)
            },
            ethertype: EthernetProtocol::Arp,
        }
        .emit(&mut f);
        ArpRepr::EthernetIpv4 {
            operation: op,
            source_hardware_addr: EthernetAddress(sha),
            source_protocol_addr: spa,
            target_hardware_addr: EthernetAddress(tha),
            target_protocol_addr: tpa,
        }
        .emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
        buf
    }

    fn parse_arp(frame: &[u8]) -> ArpRepr {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        assert_eq!(eth.ethertype(), EthernetProtocol::Arp);
        ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap()
    }

    #[test]
    fn answers_arp_for_its_address_and_learns_the_asker() {
        let mut h = host();
        let req = arp(ArpOperation::Request, PEER_MAC, PEER_IP, [0; 6], OUR_IP);
        let r = h.receive(req, Instant::now());
        assert!(r.neighbours_changed);
        assert_eq!(h.neighbour(PEER_IP).unwrap().mac, PEER_MAC);
        assert_eq!(r.send.len(), 1);
        assert_eq!(&r.send[0][0..6], &PEER_MAC);
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } = parse_arp(&r.send[0])
        else {
            unreachable!()
        };
        assert_eq!(operation, ArpOperation::Reply);
        assert_eq!(source_hardware_addr.0, OUR_MAC);
        assert_eq!(source_protocol_addr, OUR_IP);
        assert_eq!(target_protocol_addr, PEER_IP);
    }

    #[test]
    fn ignores_arp_for_other_addresses() {
        let mut h = host();
        let req = arp(
            ArpOperation::Request,
            PEER_MAC,
            PEER_IP,
            [0; 6],
            Ipv4Addr::new(10, 9, 0, 3),
        );
        let r = h.receive(req, Instant::now());
        assert!(r.send.is_empty());
        assert!(!r.neighbours_changed);
        assert!(h.neighbour(PEER_IP).is_none());
    }

    #[test]
    fn answers_icmp_echo_to_its_address() {
        let mut h = host();
        let mut ping = Vec::new();
        PacketBuilder::ethernet2(PEER_MAC, OUR_MAC)
            .ipv4(PEER_IP.octets(), OUR_IP.octets(), 64)
            .icmpv4_echo_request(7, 3)
            .write(&mut ping, b"vtep-ping")
            .unwrap();
        // The asker is known (it ARPed first), so the reply needs no ARP.
        h.receive(
            arp(ArpOperation::Request, PEER_MAC, PEER_IP, [0; 6], OUR_IP),
            Instant::now(),
        );
        let r = h.receive(ping, Instant::now());
        assert_eq!(r.send.len(), 1, "one echo reply");
        let p = SlicedPacket::from_ethernet(&r.send[0]).unwrap();
        let Some(NetSlice::Ipv4(ip)) = p.net else {
            panic!("not IPv4")
        };
        assert_eq!(ip.header().source_addr(), OUR_IP);
        assert_eq!(ip.header().destination_addr(), PEER_IP);
        let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
            panic!("not ICMP")
        };
        assert!(matches!(icmp.icmp_type(), Icmpv4Type::EchoReply(e) if e.id == 7 && e.seq == 3));
        assert_eq!(icmp.payload(), b"vtep-ping");
    }

    #[test]
    fn resolves_next_hops_and_keeps_static_entries() {
        let mut h = host();
        let t0 = Instant::now();
        let far = Ipv4Addr::new(172, 16, 0, 9);
        // On-link VTEPs are their own next hop; others go via the gateway.
        assert_eq!(h.next_hop(PEER_IP), Some(PEER_IP));
        assert_eq!(h.next_hop(far), Some(Ipv4Addr::new(10, 9, 0, 254)));
        let statik = Ipv4Addr::new(10, 9, 0, 7);
        assert_eq!(
            h.to_resolve([PEER_IP, far, statik, PEER_IP], t0, Duration::from_secs(60)),
            [PEER_IP, Ipv4Addr::new(10, 9, 0, 254)]
        );
        let req = h.arp_request(PEER_IP);
        assert_eq!(req.len(), 60);
        let ArpRepr::EthernetIpv4 {
            operation,
            target_protocol_addr,
            source_protocol_addr,
            ..
        } = parse_arp(&req)
        else {
            unreachable!()
        };
        assert_eq!(operation, ArpOperation::Request);
        assert_eq!(
            (source_protocol_addr, target_protocol_addr),
            (OUR_IP, PEER_IP)
        );

        // The reply fills the table; a second one with the same MAC changes nothing.
        let reply = arp(ArpOperation::Reply, PEER_MAC, PEER_IP, OUR_MAC, OUR_IP);
        assert!(h.receive(reply.clone(), t0).neighbours_changed);
        assert!(!h.receive(reply, t0).neighbours_changed);
        assert!(h
            .to_resolve(
                [PEER_IP],
                t0 + Duration::from_secs(1),
                Duration::from_secs(60)
            )
            .is_empty());
        assert_eq!(
            h.to_resolve(
                [PEER_IP],
                t0 + Duration::from_secs(61),
                Duration::from_secs(60)
            ),
            [PEER_IP]
        );
        // ARP cannot overwrite a configured neighbour.
        let spoof = arp(ArpOperation::Reply, PEER_MAC, statik, OUR_MAC, OUR_IP);
        assert!(!h.receive(spoof, t0).neighbours_changed);
        assert_eq!(h.neighbour(statik).unwrap().mac, [2, 0, 0, 0, 0, 7]);
    }
}
