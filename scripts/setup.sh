#!/usr/bin/env bash
# Idempotent machine set-up for vswitchd on Debian 12, as root:
# apt packages (DPDK 22.11, bindgen's libclang, test peers) and 2 MB hugepages.
# Safe to run again: installs only what is missing, never shrinks hugepages.
set -euo pipefail

PKGS=(
  # build: DPDK 22.11 headers/libs (pkg-config libdpdk), bindgen's libclang
  libdpdk-dev dpdk pkg-config libclang-dev clang libpcap-dev libbsd-dev libnuma-dev
  # runtime peers and test tools
  dpdk-dev iproute2 procps nftables iputils-ping ethtool tcpdump tshark socat python3-scapy python3-yaml python3-prometheus-client systemd iperf3 sockperf
  openvswitch-switch-dpdk containernetworking-plugins redis-server redis-tools
  # VPCs across hosts: etcd (the tests start their own members), and what
  # the etcd-client crate's build needs (protoc and the well-known types)
  etcd-server etcd-client protobuf-compiler libprotobuf-dev
)
HUGEPAGES=${VSWITCHD_HUGEPAGES:-2048}

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: must run as root (apt packages, hugepages)" >&2
    exit 1
  fi
}

install_packages() {
  local missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return
  fi
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root may capture: answer once, non-interactively.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian OVS service must not start on its own and grab hugepages/cores;
  # the benchmark harness starts its own ovs-vswitchd with a private run dir.
  systemctl disable --now openvswitch-switch >/dev/null 2>&1 || true
  # Likewise etcd: tests and benches run their own members on 127.0.0.1
  # ports; Debian's service would hold 2379/2380.
  systemctl disable --now etcd >/dev/null 2>&1 || true
  # Harness K starts its own redis-server inside a container namespace.
  systemctl disable --now redis-server >/dev/null 2>&1 || true
}

reserve_hugepages() {
  local f=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
  local cur
  cur=$(cat "$f")
  if [ "$cur" -lt "$HUGEPAGES" ]; then
    echo "$HUGEPAGES" >"$f"
    cur=$(cat "$f")
    if [ "$cur" -lt "$HUGEPAGES" ]; then
      echo "setup.sh: only $cur of $HUGEPAGES 2 MB hugepages could be reserved (memory fragmented?)" >&2
    fi
  fi
  if ! mountpoint -q /dev/hugepages; then
    mkdir -p /dev/hugepages
    mount -t hugetlbfs nodev /dev/hugepages
  fi
}

need_root
install_packages
reserve_hugepages
