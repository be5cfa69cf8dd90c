//! Generates Rust bindings for the system's DPDK (Debian's libdpdk-dev 22.11)
//! and compiles C wrappers for its `static inline` functions.
//!
//! Why not the crates.io `dpdk-sys`: it bundles DPDK 18.05 sources and cannot
//! build against the system DPDK. Everything here comes from `pkg-config
//! libdpdk`, so the bindings match the installed headers and libraries.
//!
//! bindgen's `wrap_static_fns` writes a C file with an exported wrapper for
//! each static inline function (`rte_eth_rx_burst__extern`, ...). The hot path
//! crosses the FFI once per burst through those; per-packet helpers
//! (`rte_pktmbuf_mtod`, refcnt) are rewritten in Rust over the struct fields.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/dpdk/wrapper.h");
    println!("cargo:rerun-if-changed=src/dpdk/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let dpdk = match pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => panic!(
            "DPDK >= 22.11 not found by pkg-config ({e}).\n\
             Install it with `apt-get install libdpdk-dev` (or run scripts/setup.sh as root)."
        ),
    };
    // `-include rte_config.h` and `-march=...` come from the .pc file's Cflags;
    // pkg-config-rs keeps only -I and -D, so read the rest ourselves.
    let cflags = pkg_config_cflags();
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let wrappers_c = out.join("static_wrappers.c");

    let mut builder = bindgen::Builder::default()
        .header("src/dpdk/wrapper.h")
        .clang_args(&cflags)
        .allowlist_function("rte_.*|vs_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        // Packed protocol headers that bindgen cannot lay out in Rust.
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .opaque_type("rte_gtp_psc_type0_hdr")
        .opaque_type("rte_gtp_psc_type1_hdr")
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .wrap_static_fns(true)
        .wrap_static_fns_path(&wrappers_c)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for inc in &dpdk.include_paths {
        builder = builder.clang_arg(format!("-I{}", inc.display()));
    }
    let bindings = builder
        .generate()
        .expect("bindgen failed on the DPDK headers");
    bindings
        .write_to_file(out.join("dpdk_bindings.rs"))
        .expect("write bindings");

    let mut cc = cc::Build::new();
    cc.file(&wrappers_c)
        .file("src/dpdk/shim.c")
        .include("src/dpdk")
        .warnings(false);
    for f in &cflags {
        cc.flag(f);
    }
    for inc in &dpdk.include_paths {
        cc.include(inc);
    }
    // The wrapper file includes the header by its path relative to the crate.
    cc.include(env::var("CARGO_MANIFEST_DIR").unwrap());
    cc.compile("vswitchd_dpdk_shim");

    // Link every DPDK library the .pc file lists. PMDs (net_vhost, net_pcap, ...)
    // are plugins EAL dlopens from RTE_EAL_PMD_PATH, so --as-needed must not
    // drop the libraries they rely on being loaded already.
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    for lib in &dpdk.libs {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
}

/// The cflags of `libdpdk.pc` that bindgen and cc need besides -I/-D.
fn pkg_config_cflags() -> Vec<String> {
    let out = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("run pkg-config");
    let s = String::from_utf8(out.stdout).expect("utf-8 cflags");
    let mut flags = Vec::new();
    let mut it = s.split_whitespace();
    while let Some(f) = it.next() {
        if f == "-include" {
            if let Some(h) = it.next() {
                flags.push("-include".to_string());
                flags.push(h.to_string());
            }
        } else if f.starts_with("-I") || f.starts_with("-D") || f.starts_with("-march") {
            flags.push(f.to_string());
        }
    }
    flags
}
