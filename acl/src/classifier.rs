//! The compiled classifier: tuple space search over a security group.
//!
//! Every rule is expanded into entries of exact-match form: address
//! prefixes stay prefixes, port ranges become the minimal set of port
//! prefixes covering them, and `any` fields become zero-length prefixes.
//! Entries with the same *shape* (family and the five prefix lengths) go
//! into one hash table keyed by the masked tuple; a packet is looked up in
//! each table of its family by masking it with the table's shape. Tables are
//! searched in order of the best rule they hold and the search stops as
//! soon as no later table can beat the match found, so the cost grows with
//! the number of distinct shapes actually reached, not with the number of
//! rules (the property OVS's dpcls relies on; benches/stages measures it for
//! 10 to 10,000 rules).
//!
//! Why not DPDK's rte_acl: it would bring DPDK into this crate (and EAL
//! hugepage memory into every unit test), its build over 10k rules takes
//! seconds of trie generation on every change, and its AVX2/AVX-512
//! speed-up is moot on the VMs this runs on; tuple space search builds in
//! milliseconds, classifies a burst table by table (one table's buckets
//! stay in cache for the whole burst), and is easy to check against the
//! linear reference.
//!
//! Hashing: FxHash (rustc-hash), a multiply-rotate hash a few cycles per
//! word; the keys are not attacker-chosen table indices an attacker could
//! collide at will beyond what the configured rules allow.

use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap;

use crate::rule::{prefix_mask, Action, Family, Proto, SecurityGroup, Tuple, Verdict};

/// A rule's rank: priority in the high half, then earlier-in-group wins.
/// 0 is "no match" (a real rank is at least 1).
type Rank = u64;

fn rank(priority: u32, index: usize) -> Rank {
    (u64::from(priority) << 32) | u64::from(u32::MAX - index as u32)
}

fn index_of(r: Rank) -> u32 {
    u32::MAX - (r & 0xffff_ffff) as u32
}

/// The masked fields of a tuple: the hash key of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: u128,
    dst: u128,
    sport: u16,
    dport: u16,
    proto: u8,
}

/// Prefix lengths of one table's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Shape {
    src: u8,
    dst: u8,
    proto: bool,
    sport: u8,
    dport: u8,
}

struct Table {
    src_mask: u128,
    dst_mask: u128,
    proto_mask: u8,
    sport_mask: u16,
    dport_mask: u16,
    best: Rank,
    map: FxHashMap<Key, Rank>,
}

impl Table {
    fn new(family: Family, s: Shape) -> Table {
        let port_mask = |len: u8| if len == 0 { 0 } else { u16::MAX << (16 - len) };
        Table {
            src_mask: prefix_mask(family, s.src),
            dst_mask: prefix_mask(family, s.dst),
            proto_mask: if s.proto { 0xff } else { 0 },
            sport_mask: port_mask(s.sport),
            dport_mask: port_mask(s.dport),
            best: 0,
            map: FxHashMap::default(),
        }
    }

    #[inline]
    fn key(&self, t: &Tuple) -> Key {
        Key {
            src: t.src & self.src_mask,
            dst: t.dst & self.dst_mask,
            sport: t.sport & self.sport_mask,
            dport: t.dport & self.dport_mask,
            proto: t.proto & self.proto_mask,
        }
    }
}

/// The minimal set of (value, prefix length) port prefixes covering
/// `lo..=hi`.
pub fn port_prefixes(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    let mut out = Vec::new();
    while lo <= hi {
        // The largest aligned block starting at lo that stays within hi.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            1 << lo.trailing_zeros()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push((lo as u16, 16 - size.trailing_zeros() as u8));
        lo += size;
    }
    out
}

/// A compiled security group.
pub struct Classifier {
    /// Tables per family (V4, V6), best rank first.
    tables: [Vec<Table>; 2],
    actions: Vec<Action>,
    default: Action,
    entries: usize,
}

fn fam_index(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl Classifier {
    /// Compiles `group` (already validated: rule families consistent).
    pub fn new(group: &SecurityGroup) -> Classifier {
        let mut by_shape: [FxHashMap<Shape, Table>; 2] = Default::default();
        let mut entries = 0;
        for (i, r) in group.rules.iter().enumerate() {
            let families: &[Family] = match r.family() {
                Ok(Some(Family::V4)) => &[Family::V4],
                Ok(Some(Family::V6)) => &[Family::V6],
                Ok(None) => &[Family::V4, Family::V6],
                Err(_) => &[], // never matches; the config check reports it
            };
            let rk = rank(r.priority, i);
            for &f in families {
                let proto = r.proto.number(f);
                let exact = |v: Option<u8>| match v {
                    Some(v) => vec![(u16::from(v), 16)],
                    None => vec![(0, 0)],
                };
                let (sports, dports) = if r.proto.has_ports() {
                    (
                        port_prefixes(r.src_ports.lo, r.src_ports.hi),
                        port_prefixes(r.dst_ports.lo, r.dst_ports.hi),
                    )
                } else if r.proto == Proto::Icmp {
                    (exact(r.icmp_type), exact(r.icmp_code))
                } else {
                    (vec![(0, 0)], vec![(0, 0)])
                };
                let (src, src_len) = r.src.map_or((0, 0), |c| (c.addr, c.len));
                let (dst, dst_len) = r.dst.map_or((0, 0), |c| (c.addr, c.len));
                for &(sp, sl) in &sports {
                    for &(dp, dl) in &dports {
                        let shape = Shape {
                            src: src_len,
                            dst: dst_len,
                            proto: proto.is_some(),
                            sport: sl,
                            dport: dl,
                        };
                        let t = by_shape[fam_index(f)]
                            .entry(shape)
                            .or_insert_with(|| Table::new(f, shape));
                        let key = Key {
                            src,
                            dst,
                            sport: sp,
                            dport: dp,
                            proto: proto.unwrap_or(0),
                        };
                        match t.map.entry(key) {
                            Entry::Vacant(v) => {
                                v.insert(rk);
                                entries += 1;
                            }
                            Entry::Occupied(mut o) => {
                                let old = o.get_mut();
                                *old = (*old).max(rk);
                            }
                        }
                        t.best = t.best.max(rk);
                    }
                }
            }
        }
        let tables = by_shape.map(|m| {
            let mut v: Vec<Table> = m.into_values().collect();
            v.sort_by_key(|t| std::cmp::Reverse(t.best));
            v
        });
        Classifier {
            tables,
            actions: group.rules.iter().map(|r| r.action).collect(),
            default: group.default,
            entries,
        }
    }

    /// Hash-table entries after range expansion (memory is about 64
    /// bytes each).
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Distinct shapes (tables) per family: the worst-case lookups.
    pub fn tables(&self) -> (usize, usize) {
        (self.tables[0].len(), self.tables[1].len())
    }

    fn verdict(&self, best: Rank) -> Verdict {
        if best == 0 {
            Verdict {
                action: self.default,
                rule: None,
            }
        } else {
            let i = index_of(best);
            Verdict {
                action: self.actions[i as usize],
                rule: Some(i),
            }
        }
    }

    /// The verdict for one packet.
    #[inline]
    pub fn classify(&self, t: &Tuple) -> Verdict {
        let mut best = 0;
        for table in &self.tables[fam_index(t.family)] {
            if table.best <= best {
                break;
            }
            if let Some(&r) = table.map.get(&table.key(t)) {
                best = best.max(r);
            }
        }
        self.verdict(best)
    }

    /// Verdicts for a burst, table by table: each table is probed for every
    /// packet that can still improve on its match while the table is hot.
    /// `out[..tuples.len()]` receives the verdicts.
    pub fn classify_burst(&self, tuples: &[Tuple], out: &mut [Verdict]) {
        const MAX: usize = 64;
        debug_assert!(tuples.len() <= MAX);
        let mut best = [0 as Rank; MAX];
        for fam in [Family::V4, Family::V6] {
            for table in &self.tables[fam_index(fam)] {
                let mut live = false;
                for (t, b) in tuples.iter().zip(best.iter_mut()) {
                    if t.family != fam || table.best <= *b {
                        continue;
                    }
                    live = true;
                    if let Some(&r) = table.map.get(&table.key(t)) {
                        *b = (*b).max(r);
                    }
                }
                // Tables are in descending best order: once no packet can
                // gain from this one, none can gain from the rest.
                if !live {
                    break;
                }
            }
        }
        for (o, &b) in out.iter_mut().zip(&best[..tuples.len()]) {
            *o = self.verdict(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_prefixes_cover_exactly() {
        for (lo, hi) in [
            (0, 65535),
            (0, 0),
            (80, 80),
            (1000, 2000),
            (1, 65534),
            (65535, 65535),
            (1024, 65535),
        ] {
            let ps = port_prefixes(lo, hi);
            let mut covered = vec![false; 65536];
            for (v, len) in &ps {
                let size = 1u32 << (16 - len);
                assert_eq!(u32::from(*v) % size, 0, "aligned");
                for p in u32::from(*v)..u32::from(*v) + size {
                    assert!(!covered[p as usize], "no overlap");
                    covered[p as usize] = true;
                }
            }
            for p in 0..=65535u32 {
                assert_eq!(
                    covered[p as usize],
                    (u32::from(lo)..=u32::from(hi)).contains(&p)
                );
            }
            assert!(ps.len() <= 30, "{lo}-{hi}: {}", ps.len());
        }
        assert_eq!(port_prefixes(0, 65535), [(0, 0)]);
    }
}
