#!/bin/sh
# Fetches QEMU 10.0 (x86) from Debian bookworm-backports and unpacks it beside the system's
# QEMU 7.2, for the tests' QEMU matrix (docs/qemu-versions.md). Debian's own tools only: a
# private apt list (the system's sources, lists and dpkg database are not touched),
# `apt-get download`, `dpkg-deb -x`. Called by scripts/install-test-deps.sh.
#
#   scripts/fetch-qemu10.sh [DEST]
#
# DEST (default $QMP_EXPORTER_QEMU10_ROOT, else /opt/qemu-10) receives usr/ from the packages
# and moddir/, the folder the tests give QEMU as QEMU_MODULE_DIR: the 10.0 modules plus an
# empty stub for every module name only the system's 7.2 has (Debian's QEMU is not
# relocatable: it falls back to the compiled-in module folder, the 7.2 one, and aborts on a
# 7.2 module; a stub stops the fall-back).
#
# Idempotent: the private apt state and the .debs stay in $QMP_EXPORTER_QEMU10_CACHE (default
# /var/cache/qmp-exporter-qemu10; keep it between CI runs, keyed on DEST/.debs); the index is
# refreshed at most every 6 hours; DEST is unpacked again only when the package versions change.
# Prints DEST on stdout (the only stdout line); progress goes to stderr.
# Env: QEMU10_MIRROR (default: the system sources' Debian mirror, else deb.debian.org),
#      QEMU10_VERSION_GLOB (default 1:10.0.*), QEMU10_NO_LIBS=1 to skip installing the
#      shared libraries the 10.0 build needs and the system lacks (from the system's sources).
set -eu

DEST=${1:-${QMP_EXPORTER_QEMU10_ROOT:-/opt/qemu-10}}
case $DEST in /*) ;; *) DEST=$(pwd)/$DEST ;; esac
APTDIR=${QMP_EXPORTER_QEMU10_CACHE:-/var/cache/qmp-exporter-qemu10}
VGLOB=${QEMU10_VERSION_GLOB:-1:10.0.*}
# package:version-glob. qemu-system-modules-spice needs -opengl (ui-spice-core needs the
# ui-opengl module); the 10.0 package Depends on seabios >> 1.16.3-1~ (bookworm has 1.16.2).
# ipxe-qemu: bookworm's is the same version as backports'.
PKGS="qemu-system-x86:$VGLOB qemu-system-common:$VGLOB qemu-system-data:$VGLOB
      qemu-system-modules-spice:$VGLOB qemu-system-modules-opengl:$VGLOB seabios:*"
SYSMOD=/usr/lib/x86_64-linux-gnu/qemu

log() { echo "fetch-qemu10: $*" >&2; }

if [ -z "${QEMU10_MIRROR:-}" ]; then   # the system's mirror host; only the suite changes
    QEMU10_MIRROR=$( { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
                       grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
                           sed 's/\[[^]]*\]//' | awk '{print $2}'; } | grep -E '/debian/?$' | head -n1 || true)
    QEMU10_MIRROR=${QEMU10_MIRROR:-http://deb.debian.org/debian}
fi

mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/debs" "$APTDIR/sources.list.d"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${QEMU10_MIRROR%/} bookworm-backports main" \
    > "$APTDIR/sources.list"
APT_OPTS="-o Dir::Etc::sourcelist=$APTDIR/sources.list -o Dir::Etc::sourceparts=$APTDIR/sources.list.d
          -o Dir::State::Lists=$APTDIR/lists -o Dir::Cache=$APTDIR/cache -o APT::Sandbox::User=root
          -o Acquire::Retries=3"

idx=$(ls "$APTDIR"/lists/*bookworm-backports*Packages* 2>/dev/null | head -n1 || true)
if [ -z "$idx" ] || [ -n "$(find "$idx" -mmin +360 2>/dev/null)" ]; then
    log "apt-get update (private list: ${QEMU10_MIRROR%/} bookworm-backports)"
    # shellcheck disable=SC2086
    apt-get $APT_OPTS -qq update >&2
fi

spec=""
for pg in $PKGS; do
    p=${pg%%:*}; g=${pg#*:}
    # shellcheck disable=SC2086
    v=$(apt-cache $APT_OPTS madison "$p" | awk -F'|' '/bookworm-backports/ {gsub(/ /,"",$2); print $2}' |
        while read -r ver; do case $ver in $g) echo "$ver";; esac; done | head -n1)
    [ -n "$v" ] || { log "no $p matching $g in bookworm-backports"; exit 1; }
    spec="$spec $p=$v"
done

debfile() { ls "$APTDIR/debs/${1}_$(echo "$2" | sed 's/:/%3a/')_"*.deb 2>/dev/null | head -n1; }
stamp=$(echo "$spec" | tr ' ' '\n' | sed '/^$/d' | sort)
if [ -x "$DEST/usr/bin/qemu-system-x86_64" ] && [ "$(cat "$DEST/.debs" 2>/dev/null)" = "$stamp" ]; then
    log "$DEST already holds$spec"
else
    for s in $spec; do
        if [ -z "$(debfile "${s%%=*}" "${s#*=}")" ]; then
            log "apt-get download $s"
            # shellcheck disable=SC2086
            (cd "$APTDIR/debs" && apt-get $APT_OPTS -qq download "$s" >&2)
        fi
    done
    log "unpacking$spec into $DEST"
    tmp="$DEST.tmp.$$"
    rm -rf "$tmp"; mkdir -p "$tmp"
    for s in $spec; do dpkg-deb -x "$(debfile "${s%%=*}" "${s#*=}")" "$tmp"; done
    echo "$stamp" > "$tmp/.debs"
    rm -rf "$DEST"; mv "$tmp" "$DEST"
fi

# The module folder: made again only when it misses a 10.0 module or a stub for a 7.2 one
# (a test run may be using it right now).
mod="$DEST/usr/lib/x86_64-linux-gnu/qemu"
moddir_complete() {
    [ -d "$DEST/moddir" ] || return 1
    for f in "$mod"/*.so "$SYSMOD"/*.so; do
        [ ! -e "$f" ] || [ -e "$DEST/moddir/${f##*/}" ] || return 1
    done
}
if ! moddir_complete; then
    log "module folder $DEST/moddir"
    rm -rf "$DEST/moddir.new"; mkdir "$DEST/moddir.new"
    for f in "$mod"/*.so; do ln -s "$f" "$DEST/moddir.new/"; done
    for f in "$SYSMOD"/*.so; do
        [ -e "$f" ] && [ ! -e "$DEST/moddir.new/${f##*/}" ] && : > "$DEST/moddir.new/${f##*/}"
    done
    rm -rf "$DEST/moddir"; mv "$DEST/moddir.new" "$DEST/moddir"
fi

# Shared libraries the unpacked build needs and the system lacks: the unpacked packages'
# lib* Depends that are not installed, from the system's own (bookworm) sources.
if [ "${QEMU10_NO_LIBS:-0}" != 1 ]; then
    nf=$(for f in "$DEST/usr/bin/qemu-system-x86_64" "$mod"/*.so; do ldd "$f" 2>/dev/null; done |
         awk '/not found/ {print $1}' | sort -u)
    if [ -n "$nf" ]; then
        log "missing shared libraries: $(echo $nf)"
        need=""
        for s in $spec; do
            dpkg-deb -f "$(debfile "${s%%=*}" "${s#*=}")" Depends | tr ',' '\n' |
                sed -E 's/\(.*\)//; s/\|.*//; s/ //g' | grep -E '^lib' || true
        done | sort -u > "$APTDIR/deps.txt"
        for p in $(cat "$APTDIR/deps.txt"); do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need="$need $p"
        done
        if [ -n "$need" ]; then
            log "apt-get install$need (system sources)"
            # shellcheck disable=SC2086
            DEBIAN_FRONTEND=noninteractive apt-get -y -qq install --no-install-recommends $need >&2
        fi
    fi
fi
still=$(ldd "$DEST/usr/bin/qemu-system-x86_64" | awk '/not found/ {print $1}')
[ -z "$still" ] || { log "still missing for the main binary: $still"; exit 1; }

echo "$DEST"
