#!/bin/sh
# The DaemonSet's init container: puts the CNI plugin into the host's CNI
# directory (mounted at /host/opt/cni/bin) atomically, so a kubelet that
# runs the plugin meanwhile never finds half a file.
set -eu
dst=/host/opt/cni/bin
cp /usr/libexec/vswitchd/vswitch-cni "$dst/.vswitch-cni.new"
chmod 0755 "$dst/.vswitch-cni.new"
mv -f "$dst/.vswitch-cni.new" "$dst/vswitch-cni"
echo "install-cni: $dst/vswitch-cni installed"
