//! `vswitch-cni`: the CNI plugin (see `vswitchd::cni`). Install it in the
//! runtime's CNI_PATH (e.g. /opt/cni/bin or /usr/lib/cni).

fn main() {
    std::process::exit(vswitchd::cni::main());
}
