#!/usr/bin/env bash
# Install everything (scripts/setup.sh), then open openmosixview on a local 4-node demo cluster.
# Run as root on Debian 12. With no X display (a server, a CI box) the window runs on a private
# Xvfb and its screenshots are written to ./demo-screenshots instead. Extra arguments go to
# openmosixview (e.g. --keep-demo to leave the cluster running after the window closes).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: run as root (the demo cluster uses network namespaces and its own sshds)" >&2
    exit 2
fi
bash scripts/setup.sh
if [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; then
    exec .venv/bin/openmosixview --demo "$@"
fi
echo "demo.sh: no display found; rendering the demo under Xvfb into ./demo-screenshots"
display=:$((90 + RANDOM % 50))
Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp >/dev/null 2>&1 &
xvfb=$!
trap 'kill "$xvfb" 2>/dev/null || true; wait "$xvfb" 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X${display#:}" ] && break; sleep 0.1; done
DISPLAY=$display QT_QPA_PLATFORM=xcb .venv/bin/openmosixview --demo --screenshot demo-screenshots "$@"
ls -1 demo-screenshots/*.png
