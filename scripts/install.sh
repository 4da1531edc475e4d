#!/usr/bin/env bash
# Installs qmp-exporter the way the host's administrators install software, never with pip into
# the system Python (PEP 668):
#   Debian, Ubuntu: builds the .deb from this checkout with Debian's tools and installs it with
#                   apt-get: /usr/bin/qmp-exporter, the systemd unit (enabled and started), the
#                   qmp-exporter user, the qemu-monitor group, /etc/qmp-exporter/qmp-exporter.yml.
#   elsewhere:      a virtual environment in /opt/qmp-exporter (QMP_EXPORTER_VENV), linked from
#                   /usr/local/bin/qmp-exporter.
# With --demo it then runs the exporter on its built-in demo VMs at http://localhost:10144/:
# through the service when systemd runs (a runtime drop-in, gone at reboot or with
# `systemctl revert qmp-exporter`), else in the foreground (Ctrl-C stops it).
# Run as root, or as a user who may sudo (it asks sudo itself): bash scripts/install.sh --demo
# QMP_EXPORTER_KEEP_DEB=DIR also copies the built .deb into DIR (for lintian; the tests use it).
set -euo pipefail
cd "$(dirname "$0")/.."

demo=0
for arg in "$@"; do
    case "$arg" in
        --demo) demo=1 ;;
        -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then
        exec sudo bash "$PWD/scripts/install.sh" "$@" # cd above: $0 may be relative
    fi
    echo "install.sh: run as root (no sudo here): su -c 'bash scripts/install.sh $*'" >&2
    exit 1
fi

# Debian's build tools must see Debian's Python, not a pyenv/conda one earlier in PATH.
SYSTEM_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export DEBIAN_FRONTEND=noninteractive
CONFIG=/etc/qmp-exporter/qmp-exporter.yml
PORT=10144

install_deb() {
    # debian/control's Build-Depends less the <!nocheck> ones: the build below skips the tests
    # (DEB_BUILD_PROFILES=nocheck, which dpkg-checkbuilddeps honours; DEB_BUILD_OPTIONS alone
    # does not drop them from the check).
    local build_deps=(debhelper dh-python python3-all python3-setuptools pybuild-plugin-pyproject
        python3-yaml)
    local missing=()
    for pkg in "${build_deps[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        echo "install.sh: apt-get install ${missing[*]}"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends dpkg-dev "${missing[@]}" >/dev/null
    fi
    local work
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # Build in a copy: the checkout stays clean and owned by its user.
    mkdir "$work/src"
    tar --exclude=./.git --exclude=./.venv --exclude=./.venv-pypi --exclude='__pycache__' -cf - . | tar -C "$work/src" -xf -
    echo "install.sh: building the package (dpkg-buildpackage)"
    (cd "$work/src" && env PATH="$SYSTEM_PATH" DEB_BUILD_OPTIONS=nocheck \
        DEB_BUILD_PROFILES=nocheck dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) || {
        tail -40 "$work/build.log" >&2
        echo "install.sh: the package build failed (log above)" >&2
        exit 1
    }
    echo "install.sh: apt-get install ./$(basename "$work"/qmp-exporter_*_all.deb)"
    # Another apt-get (unattended-upgrades, an admin) may hold dpkg's lock for a while.
    env PATH="$SYSTEM_PATH" apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        "$work"/qmp-exporter_*_all.deb >/dev/null
    if [ -n "${QMP_EXPORTER_KEEP_DEB:-}" ]; then
        mkdir -p "$QMP_EXPORTER_KEEP_DEB"
        cp "$work"/qmp-exporter_*_all.deb "$QMP_EXPORTER_KEEP_DEB/"
        echo "install.sh: kept the package in $QMP_EXPORTER_KEEP_DEB"
    fi
    rm -rf "$work" # now, not at EXIT: --demo may exec the exporter
    trap - EXIT
    EXPORTER=/usr/bin/qmp-exporter
}

install_venv() {
    local venv=${QMP_EXPORTER_VENV:-/opt/qmp-exporter}
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check ".[tls]"
    ln -sf "$venv/bin/qmp-exporter" /usr/local/bin/qmp-exporter
    if [ ! -e "$CONFIG" ]; then
        # The packaged config: nothing to watch until sockets appear in /run/qemu-exporter.
        install -D -m 0644 debian/conf/qmp-exporter.yml "$CONFIG"
    fi
    EXPORTER=$venv/bin/qmp-exporter
    echo "install.sh: installed in $venv (the systemd unit runs /usr/bin/qmp-exporter:" \
        "see the README for the ExecStart drop-in)"
}

if [ -f /etc/debian_version ] && command -v apt-get >/dev/null; then
    install_deb
else
    install_venv
fi
"$EXPORTER" --version

if ((demo)); then
    if [ -d /run/systemd/system ] && [ "$EXPORTER" = /usr/bin/qmp-exporter ]; then
        dropin=/run/systemd/system/qmp-exporter.service.d
        mkdir -p "$dropin"
        cat >"$dropin/demo.conf" <<EOF2
# Written by scripts/install.sh --demo; gone at reboot or with: systemctl revert qmp-exporter
[Service]
ExecStart=
ExecStart=$EXPORTER --config.file=$CONFIG --demo \$ARGS
EOF2
        systemctl daemon-reload
        systemctl restart qmp-exporter
        for _ in $(seq 50); do
            curl -fsS -o /dev/null "http://127.0.0.1:$PORT/metrics" 2>/dev/null && break
            sleep 0.2
        done
        echo "install.sh: qmp-exporter runs its demo VMs: http://localhost:$PORT/ and /metrics"
        echo "            (back to the packaged config: systemctl revert qmp-exporter)"
    else
        echo "install.sh: no systemd here: running the demo in the foreground on :$PORT (Ctrl-C stops)"
        if id qmp-exporter >/dev/null 2>&1; then
            exec setpriv --reuid=qmp-exporter --regid=qmp-exporter --init-groups \
                "$EXPORTER" --config.file="$CONFIG" --demo
        fi
        exec "$EXPORTER" --config.file="$CONFIG" --demo
    fi
fi
