#!/usr/bin/env bash
# Installs everything the test suite needs, without pip-installing into the system Python
# (PEP 668): QEMU (the system's 7.2, and 10.0 from bookworm-backports unpacked beside it by
# scripts/fetch-qemu10.sh: docs/qemu-versions.md), Prometheus + promtool, Alertmanager,
# Chromium, systemd-analyze, lintian, libvirt (daemon, QEMU driver, virsh and the Python
# binding; no system service; D-Bus and polkitd for its system mode, none of them started; the
# libvirt-qemu user), and the Python libraries from the distribution (apt-get, as root), then a
# virtual environment .venv that sees them (--system-site-packages) and holds only the test
# tools from PyPI.
# Where python3 is not the distribution's (no apt-get), .venv gets everything from PyPI.
# scripts/test.sh runs the tests with .venv/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

# The Python whose libraries the tests use: the distribution's on Debian/Ubuntu (even when a
# pyenv/conda python3 comes first in PATH), else python3. QMP_EXPORTER_PYTHON overrides it.
PYTHON=${QMP_EXPORTER_PYTHON:-}
if [ -z "$PYTHON" ]; then
    if command -v apt-get >/dev/null && [ -x /usr/bin/python3 ]; then
        PYTHON=/usr/bin/python3
    else
        PYTHON=$(command -v python3)
    fi
fi

need_apt=()
if command -v apt-get >/dev/null; then
    command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
    command -v promtool >/dev/null || need_apt+=(prometheus)
    command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null \
        || need_apt+=(prometheus-alertmanager)
    command -v chromium >/dev/null || need_apt+=(chromium)
    command -v tmux >/dev/null || need_apt+=(tmux)
    command -v curl >/dev/null || need_apt+=(curl)
    command -v man >/dev/null || need_apt+=(man-db)
    command -v lintian >/dev/null || need_apt+=(lintian)  # tests/test_debian_package.py
    command -v systemd-analyze >/dev/null || need_apt+=(systemd)
    # libvirt for tests/test_libvirt_side_by_side.py, which runs libvirtd in session mode as its
    # own child: the daemon and its QEMU driver without libvirt-daemon-system (no service, no
    # socket units, no default network, no users). tests/test_libvirt_system.py runs it in
    # system mode in a private mount namespace (tests/helpers/libvirt_system.py), with a system
    # bus and polkitd of its own (dbus, polkitd: nothing started here) and a read-only client
    # in the distribution's Python (python3-libvirt).
    for pkg in libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients dbus polkitd \
        python3-libvirt; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || need_apt+=("$pkg")
    done
    if [ "$PYTHON" = /usr/bin/python3 ]; then
        for pkg in python3-venv python3-prometheus-client python3-yaml python3-requests \
            python3-bcrypt; do
            dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
                || need_apt+=("$pkg")
        done
    fi
fi
if ((${#need_apt[@]})); then
    echo "install-test-deps: apt-get install ${need_apt[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The user and group that system-mode libvirtd runs QEMU as (Debian's build default; the
# libvirt-daemon-system package, not installed here, would create them): tests/helpers/libvirt_system.py.
if command -v apt-get >/dev/null; then
    getent group libvirt-qemu >/dev/null || "${SUDO[@]}" groupadd --system libvirt-qemu
    getent passwd libvirt-qemu >/dev/null || "${SUDO[@]}" useradd --system --gid libvirt-qemu \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin libvirt-qemu
fi

# The second QEMU of the tests' matrix (docs/qemu-versions.md): 10.0 from bookworm-backports,
# unpacked into $QMP_EXPORTER_QEMU10_ROOT (default /opt/qemu-10); nothing when it is there.
if command -v apt-get >/dev/null; then
    "${SUDO[@]}" env ${QMP_EXPORTER_QEMU10_ROOT:+QMP_EXPORTER_QEMU10_ROOT="$QMP_EXPORTER_QEMU10_ROOT"} \
        ${QMP_EXPORTER_QEMU10_CACHE:+QMP_EXPORTER_QEMU10_CACHE="$QMP_EXPORTER_QEMU10_CACHE"} \
        sh scripts/fetch-qemu10.sh >/dev/null
fi

# A .venv made from another Python (or an old one) is made again.
home=$(dirname "$(readlink -f "$PYTHON")")
if [ ! -x .venv/bin/python ] || ! grep -qx "home = $home" .venv/pyvenv.cfg; then
    rm -rf .venv
    "$PYTHON" -m venv --system-site-packages .venv
fi
# The package itself (editable, so the tests and the `qmp-exporter` command use this checkout)
# and its test extra: pip takes the distribution's prometheus_client, PyYAML, requests and
# bcrypt when they meet the floors in pyproject.toml, and fetches only the rest. With the
# distribution's Python, every library it ships is pinned to its version: a test tool may not
# shadow one (types-requests would bring urllib3 2 over Debian 12's 1.26); pip picks tool
# versions that fit, or fails naming the conflict.
constraints=()
if [ "$PYTHON" = /usr/bin/python3 ] && [ -d /usr/lib/python3/dist-packages ]; then
    .venv/bin/python -m pip list --format=freeze --disable-pip-version-check \
        --path /usr/lib/python3/dist-packages 2>/dev/null \
        | grep -E '^[A-Za-z0-9._-]+==' >.venv/distribution-constraints.txt || true
    constraints=(--constraint .venv/distribution-constraints.txt)
fi
.venv/bin/python -m pip install -q --disable-pip-version-check "${constraints[@]}" -e ".[test]"
