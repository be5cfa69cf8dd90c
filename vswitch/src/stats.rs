//! Counters: drop reasons and per-port packet/byte counts.
//!
//! Every counter has a single writer (the worker lcore that owns it) and any
//! number of readers (the control thread). [`Counter::add`] is therefore a
//! relaxed load + store, which compiles to a plain add: no `lock` prefix, no
//! cache-line ping-pong. Totals are per worker; readers sum over workers.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A single-writer counter (see the module documentation).
#[derive(Default, Debug)]
#[repr(transparent)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    /// Sets the value. Only the owning worker may call this.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    /// Back to 0. Only while no worker writes it: its port is in no
    /// snapshot a worker may still use (the next publication orders the
    /// store before the writer's next add).
    pub fn reset(&self) {
        self.0.store(0, Relaxed);
    }
}

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $name:ident => $text:literal,)*) => {
        /// Why the switch dropped a frame. Each one is a counter per port.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[$doc])* $name,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            /// Number of reasons (length of a drop-counter array).
            pub const COUNT: usize = Self::ALL.len();

            /// The counter's name in stats output.
            pub fn name(self) -> &'static str {
                match self {
                    $(DropReason::$name => $text,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Too short for its Ethernet/VLAN headers (or L3/L4 where they are needed).
    Malformed => "malformed",
    /// Received on a port that belongs to no bridge domain.
    NoBridge => "no_bridge",
    /// Destination learned on the port it came in on (would hairpin).
    SamePort => "same_port",
    /// Flooded in a domain with no other port.
    NoOutput => "no_output",
    /// Sent to a VPC's router for an address no endpoint of the VPC has
    /// (or to a gateway, for anything but a ping); see `crate::router`.
    NoRoute => "no_route",
    /// Sent to a VPC's router with a TTL that would leave at 0.
    TtlExceeded => "ttl_exceeded",
    /// The output port's tx queue took no more.
    TxFull => "tx_full",
    /// The output port refused the frame (a TAP whose container set the
    /// link down, a vhost-user port without a guest, or a frame the
    /// kernel rejects).
    TxError => "tx_error",
    /// Denied by a security group (counted on the port the group is on).
    AclDeny => "acl_deny",
    /// A TCP segment of no known connection (not a SYN) that the rules
    /// deny: typically a reply whose session expired or never existed.
    NoSession => "no_session",
    /// Allowed, but the session table had no room for its session.
    SessionFull => "session_full",
    /// An IP fragment after the first whose first fragment was not let
    /// through (denied, or not seen yet): it has no ports to judge.
    FragmentUnknown => "fragment_unknown",
    /// Allowed, but its port or bridge holds its whole share of the
    /// session table (`[sessions] per_port`, `per_bridge`).
    SessionQuota => "session_quota",
    /// Colored by a policer whose action for that color is drop.
    PolicerDrop => "policer_drop",
    /// VXLAN to our VTEP with a VNI no bridge domain carries.
    VxlanUnknownVni => "vxlan_unknown_vni",
    /// VXLAN from a remote VTEP not (yet) a port of its VNI: learned on the
    /// slow path when the VNI learns VTEPs, else refused.
    VxlanUnknownVtep => "vxlan_unknown_vtep",
    /// VXLAN to our VTEP cut short: in its headers, or shorter than its
    /// outer IPv4 length says (cut on the way, e.g. by a capture ring).
    VxlanTruncated => "vxlan_truncated",
    /// VXLAN to our VTEP with an invalid outer IPv4 header.
    VxlanBadIp => "vxlan_bad_ip",
    /// VXLAN to our VTEP in IP fragments (VTEPs do not reassemble).
    VxlanFragment => "vxlan_fragment",
    /// VXLAN to our VTEP without the I flag.
    VxlanBadFlags => "vxlan_bad_flags",
    /// VXLAN whose inner frame is VLAN-tagged (RFC 7348 6.1: dropped,
    /// segments are untagged).
    VxlanInnerVlan => "vxlan_inner_vlan",
    /// Uplink traffic that is neither VXLAN nor for the VTEP's host stack.
    NotForVtep => "not_for_vtep",
    /// The slow path's queue was full (ARP/ICMP flood): punt dropped.
    PuntFull => "punt_full",
    /// Beyond the worker's share of the slow path (a flood at the VTEP's
    /// address): dropped before it is copied.
    PuntLimit => "punt_limit",
    /// Encapsulated, the frame would exceed the uplink MTU.
    MtuExceeded => "mtu_exceeded",
    /// The remote VTEP's next hop has no MAC yet (ARP pending).
    NoNeighbour => "no_neighbour",
    /// From one remote VTEP to another: every VTEP reaches the others
    /// directly, so a frame is never relayed between tunnels (it would
    /// loop while two VTEPs' MAC tables disagree).
    SplitHorizon => "split_horizon",
    /// No mbuf for a flooded frame's tunnel copy (pool exhausted).
    NoMbuf => "no_mbuf",
    /// Port security: a source MAC or IP address the port does not own, an
    /// ARP or neighbour advertisement claiming an address it does not own,
    /// or a DHCP server reply or router advertisement from a container.
    Spoofed => "spoofed",
    /// From a source MAC the port may not add: it holds its limit of
    /// learned MACs (`mac_limit`).
    MacLimit => "mac_limit",
    /// Port security: a kind of frame the port may not send (VLAN-tagged,
    /// or an EtherType other than ARP, IPv4 and IPv6, unless allowed).
    Forbidden => "forbidden",
}

/// Counters of one port on one worker, a cache line apart from the next
/// port's so that workers never share a written line.
#[derive(Default, Debug)]
#[repr(align(64))]
pub struct PortCounters {
    /// Frames received.
    pub rx_packets: Counter,
    /// Bytes received.
    pub rx_bytes: Counter,
    /// Frames the port's tx queue accepted.
    pub tx_packets: Counter,
    /// Bytes the port's tx queue accepted.
    pub tx_bytes: Counter,
    /// Source MACs not learned because their bucket was full.
    pub learn_full: Counter,
    /// Of `rx_packets`, superframes (GSO frames from a TAP with offloads,
    /// each standing for many wire segments; packet counters count the
    /// superframe once).
    pub rx_superframes: Counter,
    /// Of `tx_packets`, superframes the port took whole.
    pub tx_superframes: Counter,
    /// Superframes cut into segments for this port, which cannot take
    /// them (the segments count in `tx_packets`).
    pub segmented: Counter,
    /// Frames handed to the VTEP's host stack (ARP, ICMP for the VTEP's
    /// address; uplink only).
    pub punted: Counter,
    /// Frames dropped, by reason. Rx-side reasons count on the ingress
    /// port, [`DropReason::TxFull`] on the egress port.
    pub drops: [Counter; DropReason::COUNT],
}

impl PortCounters {
    /// Every counter back to 0, for a switch port id given to a new port
    /// (see [`Counter::reset`] for when).
    pub fn reset(&self) {
        for c in [
            &self.rx_packets,
            &self.rx_bytes,
            &self.tx_packets,
            &self.tx_bytes,
            &self.learn_full,
            &self.rx_superframes,
            &self.tx_superframes,
            &self.segmented,
            &self.punted,
        ]
        .into_iter()
        .chain(&self.drops)
        {
            c.reset();
        }
    }

    /// Counts one dropped frame.
    #[inline]
    pub fn drop(&self, why: DropReason, n: u64) {
        self.drops[why as usize].add(n);
    }
}

/// Sub-buckets per power of two in a [`CycleHistogram`] (2 bits of
/// mantissa: values are kept to within 25 %).
const SUB: usize = 4;

/// A histogram of cycle counts (per-burst processing time) that a worker
/// records into and the control thread reads, without locks: log-linear
/// buckets of single-writer counters. Why not hdrhistogram here: its
/// recording is not safe against a concurrent reader, and per-worker
/// copies would have to be handed over; the reader turns these buckets
/// into an hdrhistogram for percentiles instead.
#[derive(Debug)]
pub struct CycleHistogram {
    buckets: [Counter; 63 * SUB],
}

impl Default for CycleHistogram {
    fn default() -> Self {
        CycleHistogram {
            buckets: std::array::from_fn(|_| Counter::default()),
        }
    }
}

impl CycleHistogram {
    fn index(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros() as usize;
        let mant = ((v >> (msb - 2)) & (SUB as u64 - 1)) as usize;
        (msb - 1) * SUB + mant
    }

    /// The smallest value of bucket `i` (the inverse of `index`).
    fn lower(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let msb = i / SUB + 1;
        ((SUB + i % SUB) as u64) << (msb - 2)
    }

    /// Records one value. Only the owning worker may call this.
    #[inline]
    pub fn record(&self, v: u64) {
        self.buckets[Self::index(v)].add(1);
    }

    /// (bucket's lowest value, count) of every non-empty bucket.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, c)| (Self::lower(i), c.get()))
            .filter(|&(_, n)| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_bound_their_values_within_a_quarter() {
        for v in (0..5000u64).chain([1 << 20, (1 << 40) + 12345, u64::MAX]) {
            let i = CycleHistogram::index(v);
            let lo = CycleHistogram::lower(i);
            assert!(lo <= v, "{v}: bucket {i} starts at {lo}");
            if i + 1 < 63 * SUB {
                assert!(CycleHistogram::lower(i + 1) > v, "{v}: next bucket");
            }
            assert!(v - lo <= v / 4, "{v} vs {lo}");
        }
        let h = CycleHistogram::default();
        for v in [10, 11, 1000, 1000, 1000] {
            h.record(v);
        }
        let b: Vec<_> = h.buckets().collect();
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 5);
        assert_eq!(
            b.last().unwrap(),
            &(CycleHistogram::lower(CycleHistogram::index(1000)), 3)
        );
    }

    #[test]
    fn reasons_have_unique_names_in_order() {
        let names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn a_reset_port_starts_from_zero() {
        let c = PortCounters::default();
        c.rx_packets.add(3);
        c.punted.add(1);
        c.drop(DropReason::Spoofed, 2);
        c.reset();
        assert_eq!(
            (
                c.rx_packets.get(),
                c.punted.get(),
                c.drops[DropReason::Spoofed as usize].get()
            ),
            (0, 0, 0)
        );
    }

    #[test]
    fn counters_add() {
        let c = PortCounters::default();
        c.rx_packets.add(3);
        c.rx_packets.add(4);
        c.drop(DropReason::TxFull, 2);
        assert_eq!(c.rx_packets.get(), 7);
        assert_eq!(c.drops[DropReason::TxFull as usize].get(), 2);
    }
}

/// One worker's flow cache counters ([`crate::flow_cache::CacheStats`]),
/// published by the worker after each busy poll round for `pmd-perf`.
#[derive(Default, Debug)]
pub struct CacheCounters {
    /// Frames answered from the cache.
    pub hits: Counter,
    /// Frames probed that took the stages.
    pub misses: Counter,
    /// Entries made or refreshed.
    pub inserts: Counter,
    /// Live entries replaced.
    pub evictions: Counter,
    /// Bursts not probed (the cache was of no use).
    pub bypassed: Counter,
}

impl CacheCounters {
    /// Publishes the worker's cache counters. Only the owning worker.
    #[inline]
    pub fn publish(&self, s: &crate::flow_cache::CacheStats) {
        self.hits.set(s.hits);
        self.misses.set(s.misses);
        self.inserts.set(s.inserts);
        self.evictions.set(s.evictions);
        self.bypassed.set(s.bypassed);
    }
}
