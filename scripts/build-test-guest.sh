#!/usr/bin/env bash
# Builds the tests' real Linux guest from Debian's own packages, unpacked and never installed
# on this host (`apt-get download`, `dpkg-deb -x`): the kernel of linux-image-amd64, an
# initramfs with busybox-static, the virtio, pvpanic and ext4 modules, and qemu-guest-agent
# with its shared libraries (this host's Debian 12 copies, found with ldd) and the dynamic
# loader; and a small ext4 data disk made with `mkfs.ext4 -d`. CONTRIBUTING.md, "The test
# guest"; tests/helpers/guest.py starts it.
#
#   scripts/build-test-guest.sh [DIR]
#
# DIR (default $QMP_EXPORTER_GUEST_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/qmp-exporter/test-guest)
# receives vmlinuz (the package's kernel), vmlinux (the same uncompressed, for a faster PVH
# boot), initrd.img, data.img and stamp (the package versions and this script's
# checksum); the .debs stay in DIR/debs. Idempotent: nothing is built when the stamp matches.
# Prints DIR on stdout (the only stdout line); progress goes to stderr.
#
# The guest: hostname qmp-test-guest; /data, the data disk (/dev/vda, ext4, label
# qmp-test-data, a few files); qemu-ga on the virtio-serial port named org.qemu.guest_agent.0
# (/dev/vport<N>p<M>, found in sysfs), restarted by busybox init when it exits; eth0
# (virtio-net) up with 10.0.2.15/24, the address `-netdev user` expects; /etc/os-release; the
# kernel's log on ttyS0.
set -euo pipefail

DIR=${1:-${QMP_EXPORTER_GUEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qmp-exporter/test-guest}}
case $DIR in /*) ;; *) DIR=$(pwd)/$DIR ;; esac
SELF=$(readlink -f "$0")

HOSTNAME_=qmp-test-guest
ADDRESS=10.0.2.15/24
GATEWAY=10.0.2.2
# The modules to load (their dependencies are found in the modules' own .modinfo and loaded
# first); crc32c_generic is what ext4's checksums need through the crypto API (no hard depends).
MODULES=(virtio_pci virtio_console virtio_balloon virtio_net virtio_blk pvpanic_pci pvpanic_mmio
    crc32c_generic ext4)

log() { echo "build-test-guest: $*" >&2; }
die() {
    log "$*"
    exit 1
}

APT=(apt-get -qq)
if [ "$(id -u)" -eq 0 ]; then
    # root: apt's sandbox user _apt may not write into DIR (under /root).
    APT+=(-o APT::Sandbox::User=root)
fi

# The host tools the build needs, installed with apt-get (as root) when missing.
need=()
command -v apt-get >/dev/null || die "needs apt-get and Debian's package lists (a Debian 12 host)"
command -v dpkg-deb >/dev/null || die "needs dpkg-deb (package dpkg)"
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v ldd >/dev/null || need+=(libc-bin)
command -v gzip >/dev/null || need+=(gzip)
command -v xz >/dev/null || need+=(xz-utils)
command -v flock >/dev/null || need+=(util-linux)
if ((${#need[@]})); then
    [ "$(id -u)" -eq 0 ] || die "needs ${need[*]}: run apt-get install ${need[*]} as root"
    log "apt-get install ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 ||
        {
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
        }
fi

mkdir -p "$DIR/debs"
exec 9>"$DIR/.lock"
flock 9 # one build at a time (test processes may ask at once)

# linux-image-amd64 is a metapackage: the kernel is the linux-image-* it depends on. SPEC:
# package=candidate version, for the three packages (one apt-cache run each step: quick).
resolve() {
    KERNEL_PKG=$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ {print $2; exit}' || true)
    [ -n "$KERNEL_PKG" ] || return 1
    mapfile -t SPEC < <(apt-cache policy "$KERNEL_PKG" busybox-static qemu-guest-agent 2>/dev/null |
        awk '/^[^ ]/ {p = $1; sub(/:$/, "", p)} /Candidate:/ && $2 != "(none)" {print p "=" $2}')
    [ "${#SPEC[@]}" -eq 3 ]
}
if ! resolve; then
    [ "$(id -u)" -eq 0 ] || die "apt knows no linux-image-amd64, busybox-static or qemu-guest-agent: run apt-get update as root"
    log "apt-get update (apt knows no linux-image-amd64, busybox-static or qemu-guest-agent)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    resolve || die "apt knows no linux-image-amd64, busybox-static or qemu-guest-agent after apt-get update"
fi

stamp=$(printf '%s\n' "${SPEC[@]}" "builder=$(sha256sum "$SELF" | cut -d' ' -f1)")
if [ "$(cat "$DIR/stamp" 2>/dev/null)" = "$stamp" ] &&
    [ -s "$DIR/vmlinuz" ] && [ -s "$DIR/vmlinux" ] && [ -s "$DIR/initrd.img" ] && [ -s "$DIR/data.img" ]; then
    log "$DIR already holds ${SPEC[*]}"
    echo "$DIR"
    exit 0
fi

debfile() { ls "$DIR/debs/${1}_${2/:/%3a}_"*.deb 2>/dev/null | head -n1; }
for s in "${SPEC[@]}"; do
    p=${s%%=*} v=${s#*=}
    [ -z "$(debfile "$p" "$v")" ] || continue
    log "apt-get download $s"
    if ! (cd "$DIR/debs" && "${APT[@]}" download "$s" >&2); then
        # The lists name a version the mirror no longer has (an old index): refresh, once.
        [ "$(id -u)" -eq 0 ] && [ -z "${_GUEST_BUILD_UPDATED:-}" ] ||
            die "apt-get download $s failed (run apt-get update as root?)"
        log "apt-get update, then again"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        exec 9>&-
        _GUEST_BUILD_UPDATED=1 exec bash "$SELF" "$DIR"
    fi
done
# Older .debs are not needed any more.
for f in "$DIR"/debs/*.deb; do
    keep=0
    for s in "${SPEC[@]}"; do [ "$f" != "$(debfile "${s%%=*}" "${s#*=}")" ] || keep=1; done
    ((keep)) || rm -f "$f"
done

work=$(mktemp -d "$DIR/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "unpacking ${SPEC[*]}"
for s in "${SPEC[@]}"; do
    mkdir -p "$work/pkg/${s%%=*}"
    dpkg-deb -x "$(debfile "${s%%=*}" "${s#*=}")" "$work/pkg/${s%%=*}"
done
kpkg=$work/pkg/$KERNEL_PKG
bbpkg=$work/pkg/busybox-static
gapkg=$work/pkg/qemu-guest-agent
kver=$(basename "$(ls -d "$kpkg"/lib/modules/*/ | head -n1)")
moddir=$kpkg/lib/modules/$kver
busybox=$bbpkg/bin/busybox
qemu_ga=$gapkg/usr/sbin/qemu-ga
[ -x "$busybox" ] && [ -x "$qemu_ga" ] && [ -s "$kpkg/boot/vmlinuz-$kver" ] ||
    die "the unpacked packages lack bin/busybox, usr/sbin/qemu-ga or boot/vmlinuz-$kver"

root=$work/root
mkdir -p "$root"/{bin,sbin,dev,proc,sys,run,tmp,data,etc,root,var/lib,var/log,usr/sbin,lib/modules}
ln -s ../run "$root/var/run"
cp "$busybox" "$root/bin/busybox"

# Modules: the closure of MODULES over their depends= (from each .ko's .modinfo), each after
# its dependencies; a module built into the kernel is skipped.
declare -A seen=()
order=()
modpath() { grep -E "/${1//_/[_-]}\.ko$" "$moddir/modules.order" | head -n1; }
add_module() {
    local name=${1//-/_} path dep
    [ -z "${seen[$name]:-}" ] || return 0
    seen[$name]=1
    path=$(modpath "$name")
    if [ -z "$path" ]; then
        grep -qE "/${name//_/[_-]}\.ko$" "$moddir/modules.builtin" ||
            die "kernel $kver has no module $name"
        return 0
    fi
    for dep in $(tr '\0' '\n' <"$moddir/$path" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '); do
        add_module "$dep"
    done
    order+=("$(basename "$path")")
    cp "$moddir/$path" "$root/lib/modules/"
}
for m in "${MODULES[@]}"; do add_module "$m"; done
printf '%s\n' "${order[@]}" >"$root/lib/modules/load-order"

# qemu-ga and the shared libraries it needs: the host's copies, which ldd finds (the same
# Debian 12 libraries as the package depends on), and the dynamic loader.
cp "$qemu_ga" "$root/usr/sbin/qemu-ga"
libs=$(ldd "$qemu_ga") || die "ldd $qemu_ga failed"
if grep -q 'not found' <<<"$libs"; then
    die "qemu-ga needs libraries this host lacks ($(awk '/not found/ {print $1}' <<<"$libs" | paste -sd' ')): apt-get install $(dpkg-deb -f "$(ls "$DIR"/debs/qemu-guest-agent_*.deb)" Depends | tr ',' '\n' | sed -E 's/\(.*\)//; s/ //g' | grep -v '^libc6' | paste -sd' ')"
fi
for lib in $(awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}' <<<"$libs"); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done

# /etc
echo "$HOSTNAME_" >"$root/etc/hostname"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf '/bin/sh\n' >"$root/etc/shells"
printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$HOSTNAME_" >"$root/etc/hosts"
ln -s ../proc/self/mounts "$root/etc/mtab"
cat >"$root/etc/os-release" <<EOF
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
VARIANT="qmp-exporter test guest"
VARIANT_ID=qmp-exporter-test-guest
HOME_URL="https://www.debian.org/"
EOF

# PID 1: a shell that gives init a console, then busybox init with this inittab: the agent, and
# root logged in on ttyS0 (a utmp entry for guest-get-users; its shell waits for input that
# never comes: the serial port only writes to a log).
cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec 0</dev/console 1>/dev/console 2>&1
/bin/busybox --install -s /bin
exec /bin/busybox init
EOF
cat >"$root/etc/inittab" <<'EOF'
::sysinit:/etc/rc
::respawn:/etc/qemu-ga.sh
ttyS0::respawn:/bin/login -f root
::ctrlaltdel:/bin/reboot
::shutdown:/bin/umount -a -r
EOF
cat >"$root/etc/rc" <<EOF
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /dev/pts /run/qemu-ga /var/log
touch /run/utmp /var/log/wtmp
mount -t devpts devpts /dev/pts
while read -r m; do insmod "/lib/modules/\$m" || echo "rc: insmod \$m failed"; done </lib/modules/load-order
hostname -F /etc/hostname
ip link set lo up
if ip link set eth0 up 2>/dev/null; then
    ip addr add $ADDRESS dev eth0
    ip route add default via $GATEWAY
fi
i=0
while [ ! -b /dev/vda ] && [ \$i -lt 50 ]; do sleep 0.1; i=\$((i + 1)); done
mount -t ext4 /dev/vda /data || echo "rc: no /data (/dev/vda)"
echo "rc: up: \$(hostname), kernel \$(uname -r)"
EOF
cat >"$root/etc/qemu-ga.sh" <<'EOF'
#!/bin/sh
# Run by init, again whenever it exits. The agent's port is the virtio-serial port named
# org.qemu.guest_agent.0: /dev/vport<virtio device index>p<port>, found by its name in sysfs.
for port in /sys/class/virtio-ports/*; do
    if [ "$(cat "$port/name" 2>/dev/null)" = org.qemu.guest_agent.0 ]; then
        /usr/sbin/qemu-ga -m virtio-serial -p "/dev/${port##*/}" -t /run/qemu-ga -f /run/qemu-ga.pid
        echo "qemu-ga on /dev/${port##*/} exited $?"
    fi
done
sleep 1
EOF
chmod 0755 "$root/init" "$root/etc/rc" "$root/etc/qemu-ga.sh"

# The data disk's files: used-bytes > 0 beyond the journal.
data=$work/data
mkdir -p "$data/dir"
echo "qmp-exporter test guest data disk ($kver)" >"$data/README"
yes "qmp-exporter test guest" | head -c 1048576 >"$data/dir/1MiB.txt" || true
printf '%s\n' "${SPEC[@]}" >"$data/packages"

log "initramfs (${#order[@]} modules, qemu-ga, busybox), data.img"
(cd "$root" && find . | sort | "$busybox" cpio -o -H newc 2>/dev/null | gzip -9n) >"$work/initrd.img"
truncate -s 16M "$work/data.img"
mkfs.ext4 -q -F -L qmp-test-data -d "$data" "$work/data.img" >&2
cp "$kpkg/boot/vmlinuz-$kver" "$work/vmlinuz"
# vmlinux: the same kernel uncompressed (the xz stream inside vmlinuz), an ELF that QEMU boots
# through PVH, skipping the decompression in the guest: about 4 s less per boot under TCG.
for off in $(LC_ALL=C grep -abo $'\xfd7zXZ' "$work/vmlinuz" | cut -d: -f1); do
    tail -c +$((off + 1)) "$work/vmlinuz" | xz -dc --single-stream >"$work/vmlinux" 2>/dev/null || true
    [ "$(head -c 4 "$work/vmlinux" | od -An -c | tr -d ' ')" != '177ELF' ] || break
    rm -f "$work/vmlinux"
done
[ -s "$work/vmlinux" ] || die "found no xz-compressed ELF kernel inside vmlinuz-$kver"
for f in vmlinuz vmlinux initrd.img data.img; do mv -f "$work/$f" "$DIR/$f"; done
echo "$stamp" >"$DIR/stamp"
log "built in $DIR: ${SPEC[*]}"
echo "$DIR"
