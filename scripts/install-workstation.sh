#!/bin/sh
# Install openmosixview and the classic CLI for the user who runs this: a virtual environment in
# ~/.local/share/omview/venv and links in ~/.local/bin. No root, no apt, no CRIU, no agent: the
# nodes are reached over the user's own ssh (~/.ssh/config, keys, known_hosts).
#
#   scripts/install-workstation.sh [PIP-OPTION...]      e.g. --no-index --find-links DIR
#
# OMVIEW_VENV, OMVIEW_BIN and PYTHON override the venv, the link directory and the interpreter.
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
VENV=${OMVIEW_VENV:-$HOME/.local/share/omview/venv}
BIN=${OMVIEW_BIN:-$HOME/.local/bin}
PYTHON=${PYTHON:-python3}
# what a workstation runs; the node commands (omview-agent, mosrun, setpe, the collector) stay on the nodes
COMMANDS="openmosixview mosctl mps mosmon showmap migrate"

if [ "$(id -u)" = 0 ]; then
    echo "install-workstation.sh: this installs for one user; on a node, run scripts/setup.sh as root" >&2
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "install-workstation.sh: omview needs Python 3.11 or newer ($PYTHON is older)" >&2
    exit 1
}
"$PYTHON" -m venv "$VENV"
# build from a private copy: the checkout may be read-only to this user (setuptools writes its
# egg-info next to the sources), and the install must not depend on the checkout staying there
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
for part in pyproject.toml README.md omview docs resources; do
    cp -R "$SRC/$part" "$BUILD/"
done
rm -rf "$BUILD/omview.egg-info"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" "$BUILD"
mkdir -p "$BIN"
for cmd in $COMMANDS; do
    ln -sf "$VENV/bin/$cmd" "$BIN/$cmd"
done
# the desktop entry and icon, so the GUI shows up in the application menu
APPS=${XDG_DATA_HOME:-$HOME/.local/share}/applications
mkdir -p "$APPS"
sed -e "s|^Exec=.*|Exec=$VENV/bin/openmosixview|" -e "s|^Icon=.*|Icon=$VENV/share/icons/hicolor/scalable/apps/openmosixview.svg|" "$SRC/resources/openmosixview.desktop" >"$APPS/openmosixview.desktop"

echo "omview $("$VENV/bin/python" -c 'import omview; print(omview.__version__)') installed in $VENV"
echo "commands in $BIN: $COMMANDS"
case ":$PATH:" in
*":$BIN:"*) ;;
*) echo "add $BIN to your PATH (e.g. in ~/.profile: PATH=\"$BIN:\$PATH\")" ;;
esac
echo "reach a cluster over ssh: openmosixview --entry NODE, or OMVIEW_HOST=NODE mosctl status"
