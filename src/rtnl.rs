//! rtnetlink requests (links, addresses, routes) in the network namespace
//! the socket was opened in: how a TAP NIC is plumbed into its container
//! (see `netns`).
//!
//! Why netlink rather than iproute2 processes: a `nsenter ... ip` pair
//! costs 4-6 ms of process spawns here, and plumbing a NIC took six of
//! them (25-28 ms of a port add, most of a CNI ADD; harness D). A netlink
//! request is answered in tens of microseconds. Messages are built and
//! parsed by the rust-netlink crates (netlink-packet-route: the message
//! layer of the `rtnetlink` crate), used synchronously: the control thread
//! has no async runtime, and each request is one datagram and its ack.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use vswitch::MacAddr;

/// A NETLINK_ROUTE socket, bound to the network namespace of the thread
/// that opened it for its whole life (it may be used after the thread
/// went back: see `netns::enter`).
pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

/// What to change on a link in one request.
#[derive(Default)]
pub struct LinkChange<'a> {
    /// New name (the link must be down).
    pub name: Option<&'a str>,
    /// New MAC.
    pub mac: Option<MacAddr>,
    /// New MTU.
    pub mtu: Option<u32>,
    /// New largest GSO superframe the stack may build for it.
    pub gso_max_size: Option<u32>,
    /// Administratively up or down.
    pub up: Option<bool>,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Rtnl {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { sock, seq: 0 })
    }

    /// Sends `msg` and waits for the kernel's ack; the last message the
    /// kernel answered with before it (a GET's answer), if any.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Option<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        m.finalize();
        let mut out = vec![0; m.buffer_len()];
        m.serialize(&mut out);
        self.sock.send(&out, 0)?;
        let mut answer = None;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let mut space = &mut buf[..];
            let n = self.sock.recv(&mut space, 0)?.min(buf.len());
            let mut at = 0;
            while at < n {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[at..n])
                    .map_err(invalid)?;
                let len = reply.header.length as usize;
                if len == 0 {
                    return Err(invalid("a netlink message of length 0"));
                }
                at += (len + 3) & !3;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(answer),
                            Some(c) => Err(io::Error::from_raw_os_error(-c.get())),
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(answer),
                    NetlinkPayload::InnerMessage(m) => answer = Some(m),
                    _ => {}
                }
            }
        }
    }

    /// The index of link `name`, None if there is none.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(m), 0) {
            Ok(Some(RouteNetlinkMessage::NewLink(l))) => Ok(Some(l.header.index)),
            Ok(_) => Err(invalid(format!("no answer about link {name:?}"))),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Applies `change` to link `index` in one request (the kernel applies
    /// the name, MAC and MTU before the up/down flag).
    pub fn set_link(&mut self, index: u32, change: &LinkChange) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        if let Some(up) = change.up {
            m.header.change_mask = LinkFlags::Up;
            if up {
                m.header.flags = LinkFlags::Up;
            }
        }
        let a = &mut m.attributes;
        if let Some(n) = change.name {
            a.push(LinkAttribute::IfName(n.to_string()));
        }
        if let Some(mac) = change.mac {
            a.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        if let Some(mtu) = change.mtu {
            a.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(g) = change.gso_max_size {
            a.push(LinkAttribute::GsoMaxSize(g));
        }
        self.request(RouteNetlinkMessage::SetLink(m), 0).map(drop)
    }

    /// Gives link `index` address `addr/prefix` (`ip addr replace`; IPv6
    /// with `nodad`: the switch keeps a VPC's addresses unique, and an
    /// address in duplicate address detection is unusable for a second).
    pub fn replace_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(addr));
        m.attributes.push(AddressAttribute::Address(addr));
        if addr.is_ipv6() {
            m.header.flags = AddressHeaderFlags::Nodad;
        }
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// Routes the default destination through `gateway` on link `index`
    /// (`ip route replace default via GATEWAY dev LINK`).
    pub fn replace_default_route(&mut self, index: u32, gateway: IpAddr) -> io::Result<()> {
        let mut m = RouteMessage::default();
        let (family, via) = match gateway {
            IpAddr::V4(a) => (AddressFamily::Inet, RouteAddress::Inet(a)),
            IpAddr::V6(a) => (AddressFamily::Inet6, RouteAddress::Inet6(a)),
        };
        m.header.address_family = family;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes.push(RouteAttribute::Gateway(via));
        m.attributes.push(RouteAttribute::Oif(index));
        self.request(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link query in this namespace answers for `lo` and says "none"
    /// for a name nobody has.
    #[test]
    fn links_are_found_by_name() {
        let mut r = Rtnl::open().unwrap();
        assert_eq!(r.link_index("lo").unwrap(), Some(1));
        assert_eq!(r.link_index("no-such-nic0").unwrap(), None);
    }
}
