#!/usr/bin/env bash
# Build a qemu-system-x86_64 that has the `nitro-enclave` machine, from Debian's own source package.
#
# Debian's QEMU packages (bookworm-backports, trixie) are built without libcbor, so they lack the machine
# and its virtio-nsm device. This script fetches the pinned bookworm-backports source (apt checks the
# tarball against the signed Sources index), builds only the x86_64 system emulator with libcbor and
# gnutls, and installs it into a prefix that is reused when it already holds a working binary.
#
# Usage: eifbuild qemu build [--prefix DIR] [--version DEBIAN_VERSION] [--no-deps]
#    or: bash eifbuild/runtime/build-qemu-nitro.sh [the same options]   (the script ships in the wheel)
# Needs: Debian 12 with `deb` and `deb-src` lines for bookworm-backports; root (or sudo) to install the
# build dependencies unless --no-deps. Prints the path of the built binary as its last line.
set -euo pipefail

version='1:10.0.2+ds-2+deb13u1~bpo12+1'
prefix=''
install_deps=1
while (($#)); do
    case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --no-deps) install_deps=0; shift ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-qemu-nitro: unknown option $1" >&2; exit 2 ;;
    esac
done

upstream="${version#*:}"
upstream="${upstream%%-*}"
upstream_plain="${upstream%+ds}"
prefix="${prefix:-${XDG_CACHE_HOME:-$HOME/.cache}/eifbuild/qemu-nitro/${version//[:~]/_}}"
binary="$prefix/bin/qemu-system-x86_64"

has_nitro_enclave() {
    [[ -x "$1" ]] && grep -q '^nitro-enclave ' <<<"$("$1" -M help 2>/dev/null)"
}

# The binary looks for firmware in ../share/qemu: link Debian's there (qemu-system-data has qboot.rom
# and linuxboot_dma.bin, seabios the bios*.bin of -M pc/q35), as Debian's --firmwarepath does.
link_firmware() {
    local dir="$prefix/share/qemu" src file
    if [[ -L "$dir" ]]; then rm "$dir"; fi
    mkdir -p "$dir"
    for src in /usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu; do
        [[ -d "$src" ]] || continue
        for file in "$src"/*; do
            [[ -e "$dir/${file##*/}" ]] || ln -s "$file" "$dir/${file##*/}"
        done
    done
}

if has_nitro_enclave "$binary"; then
    link_firmware
    echo "build-qemu-nitro: reusing $binary" >&2
    echo "$binary"
    exit 0
fi

as_root() {
    if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

if ((install_deps)); then
    if ! grep -qxF "Version: $version" <<<"$(apt-cache showsrc qemu 2>/dev/null)"; then
        echo "build-qemu-nitro: apt knows no source qemu=$version; add bookworm-backports to apt's sources:" >&2
        echo "  deb http://deb.debian.org/debian bookworm-backports main" >&2
        echo "  deb-src http://deb.debian.org/debian bookworm-backports main" >&2
        echo "then run apt-get update" >&2
        exit 1
    fi
    apt_get=(apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends)
    as_root env DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" -t bookworm-backports \
        meson python3-pycotap >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" \
        ninja-build pkg-config gcc libc6-dev libcbor-dev libgnutls28-dev libglib2.0-dev libfdt-dev \
        zlib1g-dev python3-venv xz-utils qemu-system-data seabios >/dev/null
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/qemu-nitro.XXXXXX")"
trap 'rm -rf "$work"' EXIT  # set KEEP_WORK=1 to keep it for a look after a failure
[[ -n "${KEEP_WORK:-}" ]] && trap - EXIT
cd "$work"

# The .dsc and .debian.tar.xz have been seen to 404 on mirrors; the verified orig tarball is all we use.
apt-get source --download-only "qemu=$version" >apt-source.log 2>&1 || true
tarball="qemu_${upstream}.orig.tar.xz"
if [[ ! -f "$tarball" ]]; then
    echo "build-qemu-nitro: apt-get source did not fetch $tarball:" >&2
    tail -5 apt-source.log >&2
    exit 1
fi
tar -xf "$tarball"
src="$(find . -maxdepth 1 -type d -name "qemu-${upstream_plain}*" | head -1)"
cd "$src"

# The +ds tarball has no pc-bios/edk2-*.fd.bz2, so meson must not try to unpack them.
grep -q 'unpack_edk2_blobs = bzip2.found()' meson.build || {
    echo "build-qemu-nitro: meson.build has no 'unpack_edk2_blobs = bzip2.found()' line to turn off" >&2
    exit 1
}
sed -i 's/unpack_edk2_blobs = bzip2.found()/unpack_edk2_blobs = false/' meson.build

./configure --prefix="$prefix" --python=/usr/bin/python3 --target-list=x86_64-softmmu \
    --enable-libcbor --enable-gnutls --enable-fdt=system \
    --disable-download --disable-install-blobs --disable-rust --disable-docs --disable-tools --disable-werror \
    --disable-user --disable-gtk --disable-sdl --disable-vnc --disable-spice --disable-opengl \
    --disable-curl --disable-libssh --disable-libusb --disable-usb-redir --disable-smartcard \
    --disable-alsa --disable-pa --disable-jack --disable-oss --disable-pipewire --disable-sndio \
    --disable-slirp --disable-capstone --disable-guest-agent --disable-xen --disable-vde \
    --disable-rbd --disable-glusterfs --disable-libiscsi --disable-libnfs --disable-seccomp \
    --disable-virtfs --disable-bpf --disable-gcrypt --disable-nettle >configure.log 2>&1 || {
    tail -20 configure.log >&2
    exit 1
}
ninja -C build qemu-system-x86_64 >build.log 2>&1 || { tail -30 build.log >&2; exit 1; }
mkdir -p "$prefix/bin"
link_firmware
install -m 0755 build/qemu-system-x86_64 "$binary.tmp"
mv "$binary.tmp" "$binary"

if ! has_nitro_enclave "$binary"; then
    echo "build-qemu-nitro: the built $binary lists no nitro-enclave machine" >&2
    exit 1
fi
echo "$binary"
