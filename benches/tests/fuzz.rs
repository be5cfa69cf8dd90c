//! The structure-aware frame fuzzer of the DPDK-free pipeline, 100,000
//! frames per CI run (the 10-million-frame soak: `vsbench fuzz`).

#[test]
fn a_hundred_thousand_fuzzed_frames_keep_every_invariant() {
    for seed in [1, 2] {
        let soak = vsbench::fuzz::run(seed, 50_000);
        assert!(
            soak.violations.is_empty(),
            "seed {seed}: {:#?}",
            soak.violations
        );
        // The frames reached every stage: some passed, some went into
        // tunnels, some were refused by port security, the parser, the
        // groups, the meters and the tunnels' checks.
        assert!(soak.outputs > 0 && soak.floods > 0, "{soak:?}");
        assert!(
            soak.decapsulated > 0 && soak.segmented > 0 && soak.tunnelled > 0,
            "{soak:?}"
        );
        for reason in [
            "spoofed",
            "forbidden",
            "malformed",
            "acl_deny",
            "policer_drop",
            "mtu_exceeded",
            "no_neighbour",
            "split_horizon",
            "vxlan_unknown_vtep",
        ] {
            assert!(soak.drops.contains_key(reason), "no {reason}: {soak:?}");
        }
    }
}
