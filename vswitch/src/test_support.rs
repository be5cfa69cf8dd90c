//! Frames and groups the crate's unit tests share.

use std::sync::Arc;

use acl::{Action as AclAction, Classifier, Rule, SecurityGroup};
use etherparse::PacketBuilder;

use crate::offload::{CsumPartial, Gso, GsoKind, Offload};
use crate::security::Group;
use crate::switch::Frame;

/// A compiled group of `rules` that denies what they do not allow.
pub fn compiled(name: &str, rules: Vec<Rule>) -> Arc<Group> {
    let n = rules.len();
    let g = SecurityGroup {
        name: name.into(),
        rules,
        default: AclAction::Deny,
    };
    Arc::new(Group {
        name: name.into(),
        classifier: Classifier::new(&g),
        rule_class: vec![0; n],
    })
}

/// A superframe as a TAP hands it over: its bytes and offloads.
pub struct Superframe(pub Vec<u8>, pub Offload);

impl Frame for Superframe {
    fn data(&self) -> &[u8] {
        &self.0
    }
    fn offload(&self) -> Offload {
        self.1
    }
}

/// A TCP superframe of `segs` segments of `mss` bytes from `src`:40000 to
/// `dst`:80, between MACs 02::1 and 02::2.
pub fn superframe(src: [u8; 4], dst: [u8; 4], segs: usize, mss: u16) -> Superframe {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(40000, 80, 1, 1000)
        .ack(1)
        .write(&mut v, &vec![7; segs * usize::from(mss)])
        .unwrap();
    let off = Offload {
        csum: Some(CsumPartial {
            start: 34,
            offset: 16,
        }),
        gso: Some(Gso {
            kind: GsoKind::Tcp4,
            size: mss,
            hdr_len: 54,
        }),
    };
    Superframe(v, off)
}
