//! The compiled classifier against the linear reference, on random rule
//! sets and random packets drawn from the same small pools of addresses
//! and ports (so that rules and packets actually meet), with the edges
//! that break classifiers: ports 0 and 65535, /0 and /32 (/128) prefixes,
//! IPv6, both-family rules, equal priorities.

use proptest::prelude::*;

use crate::reference::Linear;
use crate::rule::*;
use crate::Classifier;

const V4: [&str; 6] = [
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.3/32",
    "192.168.0.0/24",
    "10.1.2.0/31",
];
const V6: [&str; 4] = ["::/0", "fd00::/8", "fd00::1/128", "fd00:0:0:1::/64"];
const HOSTS4: [u32; 5] = [0x0a01_0203, 0x0a01_0202, 0xc0a8_0005, 0x0b00_0001, 0];
const HOSTS6: [u128; 4] = [
    0xfd00 << 112 | 1,
    (0xfd00 << 112) | (1 << 64) | 7,
    1,
    u128::MAX,
];
const PORTS: [u16; 7] = [0, 1, 80, 443, 1024, 65534, 65535];

fn cidr() -> impl Strategy<Value = Option<Cidr>> {
    prop_oneof![
        Just(None),
        (0..V4.len()).prop_map(|i| Some(V4[i].parse().unwrap())),
        (0..V6.len()).prop_map(|i| Some(V6[i].parse().unwrap())),
    ]
}

fn range() -> impl Strategy<Value = PortRange> {
    (0..PORTS.len(), 0..PORTS.len()).prop_map(|(a, b)| {
        let (lo, hi) = (PORTS[a].min(PORTS[b]), PORTS[a].max(PORTS[b]));
        PortRange { lo, hi }
    })
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        0u32..4,
        cidr(),
        cidr(),
        prop_oneof![
            Just(Proto::Any),
            Just(Proto::Tcp),
            Just(Proto::Udp),
            Just(Proto::Icmp),
            Just(Proto::Number(47))
        ],
        range(),
        range(),
        proptest::option::of(0u8..3),
        proptest::option::of(0u8..2),
        any::<bool>(),
    )
        .prop_map(|(prio, src, dst, proto, sp, dp, it, ic, allow)| {
            let mut r = Rule::any("r", prio, if allow { Action::Allow } else { Action::Deny });
            r.src = src;
            // Keep the families consistent (inconsistent rules are
            // rejected by the config check): a v6 src with a v4 dst
            // becomes any dst.
            r.dst = dst.filter(|d| src.is_none_or(|s| s.family == d.family));
            r.proto = proto;
            if proto.has_ports() {
                r.src_ports = sp;
                r.dst_ports = dp;
            }
            if proto == Proto::Icmp {
                r.icmp_type = it;
                r.icmp_code = ic;
            }
            r
        })
}

fn tuple() -> impl Strategy<Value = Tuple> {
    (
        any::<bool>(),
        0..HOSTS6.len().max(HOSTS4.len()),
        0..HOSTS6.len().max(HOSTS4.len()),
        prop_oneof![Just(TCP), Just(UDP), Just(ICMP), Just(ICMPV6), Just(47)],
        0..PORTS.len(),
        0..PORTS.len(),
    )
        .prop_map(|(v6, s, d, proto, sp, dp)| {
            let (family, src, dst) = if v6 {
                (
                    Family::V6,
                    HOSTS6[s % HOSTS6.len()],
                    HOSTS6[d % HOSTS6.len()],
                )
            } else {
                (
                    Family::V4,
                    u128::from(HOSTS4[s % HOSTS4.len()]),
                    u128::from(HOSTS4[d % HOSTS4.len()]),
                )
            };
            // ICMP type/code are small numbers in real packets.
            let small = |p: u16| {
                if proto == ICMP || proto == ICMPV6 {
                    p % 3
                } else {
                    p
                }
            };
            Tuple {
                family,
                src,
                dst,
                proto,
                sport: small(PORTS[sp]),
                dport: small(PORTS[dp]),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn compiled_agrees_with_the_reference(
        rules in proptest::collection::vec(rule(), 0..40),
        default_allow in any::<bool>(),
        packets in proptest::collection::vec(tuple(), 1..64),
    ) {
        let mut rules = rules;
        for (i, r) in rules.iter_mut().enumerate() {
            r.name = format!("r{i}");
        }
        let g = SecurityGroup {
            name: "g".into(),
            rules,
            default: if default_allow { Action::Allow } else { Action::Deny },
        };
        let reference = Linear::new(&g);
        let c = Classifier::new(&g);
        let mut burst = vec![Verdict { action: Action::Deny, rule: None }; packets.len()];
        c.classify_burst(&packets, &mut burst);
        for (t, b) in packets.iter().zip(&burst) {
            let want = reference.classify(t);
            prop_assert_eq!(c.classify(t), want, "packet {:?}", t);
            prop_assert_eq!(*b, want, "burst, packet {:?}", t);
        }
    }
}
