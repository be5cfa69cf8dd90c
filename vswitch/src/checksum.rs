//! Incremental update of an Internet checksum (RFC 1624) after one 16-bit
//! word of what it covers changed: what a DSCP remark, a TTL decrement or
//! an ICMP type change needs. etherparse sums whole buffers
//! (`crate::offload` uses it for those) but has no incremental update;
//! this is the three-line equation, kept in one place.

/// The checksum `check` after a covered word went from `old` to `new`:
/// HC' = ~(~HC + ~m + m') (RFC 1624, eqn. 3).
#[inline]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::checksum::u64_16bit_word as sum16;

    fn full(words: &[u16]) -> u16 {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        // etherparse's sum is in native byte order.
        u16::from_be_bytes(sum16::ones_complement(sum16::add_slice(0, &bytes)).to_ne_bytes())
    }

    #[test]
    fn matches_a_full_recomputation() {
        let mut words = [
            0x4500, 0x0054, 0x1c46, 0x4000, 0x4001, 0, 0xc0a8, 0x3c01, 0xc0a8,
        ];
        let check = full(&words);
        for (at, new) in [(4, 0x3f01), (0, 0x45b8), (7, 0xffff), (8, 0)] {
            let old = words[at];
            words[at] = new;
            let before = full(&{
                let mut w = words;
                w[at] = old;
                w
            });
            assert_eq!(replace16(before, old, new), full(&words), "word {at}");
        }
        assert_ne!(check, full(&words));
    }
}
