#!/usr/bin/env bash
# Builds and installs SPDK v25.09 for the datanode's `spdk` feature on Debian 12, from an
# SPDK source tree outside this repository (README, "The SPDK backend"):
#   git clone --branch v25.09 https://github.com/spdk/spdk /opt/spdk-src
#   scripts/spdk-build.sh /opt/spdk-src [/opt/spdk]
# The second argument is the install prefix (default /opt/spdk); build the datanode with
# SPDK_DIR set to it. SPDK's git submodules are neither needed nor used: DPDK is
# Debian's (22.11), and ISA-L and intel-ipsec-mb, which only SPDK's crypto and
# compression use (Strata uses neither), are left out. The edits below make SPDK's
# build agree; each is idempotent, so the script can run again on the same tree.
set -euo pipefail
src="${1:?usage: scripts/spdk-build.sh SPDK_SOURCE_DIR [PREFIX]}"
prefix="${2:-/opt/spdk}"
cd "$src"
[ "$(cat VERSION 2>/dev/null)" = 25.09.0 ] || { echo "spdk-build: $src is not SPDK v25.09 (VERSION says '$(cat VERSION 2>/dev/null)')" >&2; exit 1; }

need_apt=()
for p in libdpdk-dev libaio-dev liburing-dev uuid-dev libssl-dev libnuma-dev libkeyutils-dev \
  libbsd-dev libarchive-dev libfuse3-dev \
  python3-pyelftools nasm pkg-config build-essential libclang-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "spdk-build: installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi

# 1. ISA-L off. `configure` turns it on for x86_64 and then stops when the isa-l
#    submodule is missing ("ISA-L is required but was not found"): start it off and make
#    that check apply only when it is on (the same for isa-l-crypto below it).
sed -i -e 's/^\tCONFIG\[ISAL\]=y$/\tCONFIG[ISAL]=n/' \
  -e 's|^\tif \[ ! -f "\$rootdir"/isa-l/autogen.sh \]; then$|\tif [[ "${CONFIG[ISAL]}" = y \&\& ! -f "$rootdir"/isa-l/autogen.sh ]]; then|' \
  configure
grep -q $'^\tCONFIG\\[ISAL\\]=n$' configure && grep -q 'CONFIG\[ISAL\]}" = y && ! -f "$rootdir"/isa-l/autogen.sh' configure \
  || { echo "spdk-build: configure's ISA-L lines are not where v25.09 has them" >&2; exit 1; }

# 2. DPDK's version check at run time (lib/env_dpdk/pci_dpdk.c) refuses 22.11 point
#    releases above .4, and Debian 12 ships 22.11.11. The check guards the layout of
#    DPDK's private PCI structures, which LTS point releases keep; with AIO or io_uring
#    bdevs (no PCI) they are not used at all.
sed -i 's/^\t\tif (minor > 4) {$/\t\tif (0 \&\& minor > 4) {/' lib/env_dpdk/pci_dpdk.c
grep -q $'^\t\tif (0 && minor > 4) {$' lib/env_dpdk/pci_dpdk.c \
  || { echo "spdk-build: pci_dpdk.c's 22.11 check is not where v25.09 has it" >&2; exit 1; }

./configure --prefix="$prefix" --with-dpdk=/usr --with-uring --without-crypto \
  --without-vfio-user --without-xnvme --without-rdma --without-fio --without-vhost \
  --without-virtio --without-ublk --without-ocf --without-fsdev --without-idxd \
  --disable-tests --disable-unit-tests --disable-examples --disable-apps --without-shared

# 3. IPSec_MB off: `configure` turns it on because Debian's DPDK links libIPSec_MB, and
#    then `make` would build the empty intel-ipsec-mb submodule. Crypto is off, so
#    nothing needs it.
sed -i 's/^CONFIG_IPSEC_MB?=y$/CONFIG_IPSEC_MB?=n/' mk/config.mk
grep -q '^CONFIG_IPSEC_MB?=n$' mk/config.mk || { echo "spdk-build: mk/config.mk has no CONFIG_IPSEC_MB line" >&2; exit 1; }

make -j"$(nproc)"
SUDO=""; [ -w "$(dirname "$prefix")" ] || SUDO=sudo
$SUDO make install
echo "spdk-build: SPDK $(cat VERSION) installed in $prefix; build the datanode with:"
echo "  SPDK_DIR=$prefix cargo build --release -p datanode --features spdk"
