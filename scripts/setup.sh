#!/usr/bin/env bash
# Prepare this machine (Debian 12, root) for developing and testing omview:
# system packages, CRIU (via install-criu.sh), the venv at <repo>/.venv and
# /usr/local/bin wrappers for the entry points. Idempotent; a second run only checks.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$REPO/.venv"
SYSPY=/usr/bin/python3

say() { printf 'setup: %s\n' "$*"; }
DIED=0
die() { printf 'setup: ERROR: %s\n' "$*" >&2; DIED=1; exit 1; }
# Anything failing without die() (set -e) still gets a line saying where.
trap 'rc=$?; [ $rc -eq 0 ] || [ $DIED -eq 1 ] || printf "setup: FAILED (exit %s) near line %s: %s\n" "$rc" "$LINENO" "$BASH_COMMAND" >&2' EXIT

[ "$(id -u)" -eq 0 ] || die "run me as root (I install packages and write /usr/local/bin)"
command -v dpkg-query >/dev/null || die "dpkg-query not found: this script is for Debian 12"

# ---------------------------------------------------------------- system packages
PACKAGES=(
    openssh-server openssh-client iproute2 util-linux procps python3-venv xvfb xauth tmux
    fonts-dejavu-core
    # what the Qt xcb platform plugin of PySide6 links against (checked with ldd below)
    libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0 libxkbcommon0
    libxcb-render-util0 libxcb-image0 libxcb-shape0 libxcb-randr0 libxcb-xkb1 libxcb-xfixes0
    libxcb-shm0 libxcb-sync1 libxcb-render0 libxcb-xinput0 libx11-xcb1
    libegl1 libgl1 libopengl0 libfontconfig1 libfreetype6 libdbus-1-3 libglib2.0-0
    libxtst6  # real X pointer events (XTEST) for migmon's drag test under Xvfb
)

missing_packages() {
    local p st
    for p in "$@"; do
        st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [ "$st" = installed ] || printf '%s\n' "$p"
    done
}

apt_install() {
    # Update the lists only when they are stale (>1 day) or have never been fetched.
    local newest
    newest=$(find /var/lib/apt/lists -maxdepth 1 -name '*_InRelease' -mmin -1440 2>/dev/null | head -n1)
    if [ -z "$newest" ]; then
        say "apt-get update"
        apt-get -o DPkg::Lock::Timeout=300 update -qq || die "apt-get update failed (network? mirror?)"
    fi
    say "installing: $*"
    # No service may start from a postinst (a container has no init; a host sshd on :22 is not
    # wanted either): policy-rc.d exit 101 forbids it. Only add it for this run if absent.
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends "$@" || rc=$?
    if [ "$made_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    [ "$rc" -eq 0 ] || die "apt-get install failed (exit $rc) for: $*"
}

mapfile -t need < <(missing_packages "${PACKAGES[@]}")
if [ "${#need[@]}" -gt 0 ]; then
    apt_install "${need[@]}"
else
    say "system packages: all present"
fi
[ -x /usr/sbin/sshd ] || die "/usr/sbin/sshd missing after installing openssh-server"
getent passwd sshd >/dev/null || die "user 'sshd' (privilege separation) missing: reinstall openssh-server"

# ---------------------------------------------------------------- CRIU
if [ "${OMVIEW_SKIP_CRIU:-}" = 1 ]; then
    say "CRIU: skipped (OMVIEW_SKIP_CRIU=1)"
elif [ -f "$REPO/scripts/install-criu.sh" ]; then
    say "CRIU: scripts/install-criu.sh"
    bash "$REPO/scripts/install-criu.sh" || die "scripts/install-criu.sh failed"
else
    say "CRIU: scripts/install-criu.sh not present, skipped"
fi

# ---------------------------------------------------------------- Python venv
# Built from Debian's python (not a pyenv one under /root, which other users cannot read).
if [ -x "$VENV/bin/python" ] && ! grep -qx 'home = /usr/bin' "$VENV/pyvenv.cfg" 2>/dev/null; then
    die "$VENV exists but was not made from $SYSPY (see $VENV/pyvenv.cfg); remove it and run me again"
fi
if [ ! -x "$VENV/bin/python" ]; then
    say "creating venv $VENV from $SYSPY"
    "$SYSPY" -m venv "$VENV" || die "python3 -m venv failed (is python3-venv installed?)"
fi
STAMP="$VENV/.omview-setup-stamp"
want=$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)
have=$(cat "$STAMP" 2>/dev/null || true)
if [ "$want" != "$have" ] || ! "$VENV/bin/python" -c 'import omview' 2>/dev/null; then
    say "pip install -e '.[test]' (pyproject.toml changed or first run)"
    PIPLOG="$VENV/.omview-pip.log"
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -e "$REPO[test]" >"$PIPLOG" 2>&1; then
        tail -n 25 "$PIPLOG" >&2
        die "pip install -e '.[test]' failed (full log: $PIPLOG)"
    fi
    printf '%s\n' "$want" >"$STAMP"
else
    say "venv: up to date"
fi

# ---------------------------------------------------------------- Qt xcb plugin libraries
QXCB=$("$VENV/bin/python" - <<'EOF'
import importlib.util, pathlib
spec = importlib.util.find_spec("PySide6")
if spec and spec.origin:
    print(pathlib.Path(spec.origin).parent / "Qt/plugins/platforms/libqxcb.so")
EOF
)
if [ -n "$QXCB" ] && [ -f "$QXCB" ]; then
    notfound=$(ldd "$QXCB" | awk '/not found/ {print $1}' | sort -u)
    if [ -n "$notfound" ]; then
        # Debian names a library package after its soname: libfoo.so.N -> libfooN (libfoo-N if
        # the name ends in a digit).
        extra=()
        for so in $notfound; do
            base=${so%%.so.*}; ver=${so##*.so.}; ver=${ver%%.*}
            if [[ $base =~ [0-9]$ ]]; then pkg="$base-$ver"; else pkg="$base$ver"; fi
            extra+=("$pkg")
        done
        say "libqxcb.so lacks: $notfound"
        apt_install "${extra[@]}"
        left=$(ldd "$QXCB" | awk '/not found/ {print $1}' | sort -u)
        [ -z "$left" ] || die "libqxcb.so still lacks: $left (find the package with apt-file search)"
    fi
    say "Qt xcb plugin: all libraries found"
else
    die "PySide6 xcb plugin not found in the venv (expected .../PySide6/Qt/plugins/platforms/libqxcb.so)"
fi

# ---------------------------------------------------------------- wrappers in /usr/local/bin
# One per [project.scripts] / [project.gui-scripts] entry, so that `ssh node omview-agent bridge`
# works without activating the venv.
mapfile -t SCRIPTS < <("$VENV/bin/python" - "$REPO/pyproject.toml" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f).get("project", {})
for table in ("scripts", "gui-scripts"):
    for name in project.get(table, {}):
        print(name)
EOF
)
MARK="# omview wrapper (written by scripts/setup.sh)"
made=0
for name in "${SCRIPTS[@]}"; do
    [[ $name =~ ^[A-Za-z0-9._-]+$ ]] || die "odd entry point name in pyproject.toml: '$name'"
    dst="/usr/local/bin/$name"
    body=$(printf '#!/bin/sh\n%s\nexec %q "$@"\n' "$MARK" "$VENV/bin/$name")
    if [ -e "$dst" ] && ! grep -qxF "$MARK" "$dst"; then
        die "$dst exists and is not an omview wrapper; remove or rename it, then run me again"
    fi
    if [ "$(cat "$dst" 2>/dev/null || true)" != "$body" ]; then
        printf '%s\n' "$body" >"$dst.tmp.$$"
        chmod 755 "$dst.tmp.$$"
        mv -f "$dst.tmp.$$" "$dst"
        made=$((made + 1))
    fi
done
say "wrappers: ${#SCRIPTS[@]} entry points in /usr/local/bin ($made written)"

# ---------------------------------------------------------------- desktop entry and icon
# openmosixview in the desktop's application menu, with its icon (resources/). install(1) only
# rewrites a file whose content changed, so running this again changes nothing.
DESTDIR=${DESTDIR:-}
for pair in "openmosixview.desktop:/usr/share/applications" \
            "openmosixview.svg:/usr/share/icons/hicolor/scalable/apps"; do
    src="$REPO/resources/${pair%%:*}"
    dir="$DESTDIR${pair#*:}"
    [ -f "$src" ] || die "$src missing: the checkout is incomplete"
    if ! cmp -s "$src" "$dir/${pair%%:*}"; then
        install -D -m 644 "$src" "$dir/${pair%%:*}"
        say "installed $dir/${pair%%:*}"
    fi
done
if [ -z "$DESTDIR" ]; then
    # menus and icon caches pick the new files up at once where the tools exist
    command -v update-desktop-database >/dev/null && update-desktop-database -q /usr/share/applications || true
    command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -f -t /usr/share/icons/hicolor || true
fi
say "desktop entry and icon: installed"

# ---------------------------------------------------------------- admin tools (issue 14)
# Debian's prometheus for the collector's scrape test (tests/collector/test_prometheus.py; its
# service is not started: apt_install forbids service starts), man-db/groff for the manuals,
# bash-completion for the completions.
ADMIN_PACKAGES=(prometheus man-db groff-base bash-completion)
mapfile -t need < <(missing_packages "${ADMIN_PACKAGES[@]}")
if [ "${#need[@]}" -gt 0 ]; then
    apt_install "${need[@]}"
else
    say "admin packages: all present"
fi

# Man pages built from the commands' parsers (scripts/build-manpages.py); only changed pages are
# copied, so a second run writes nothing.
install_changed() {  # install_changed SRC_DIR DST_DIR MODE: copy files that differ; prints how many
    local src=$1 dst=$2 mode=$3 f n=0
    mkdir -p "$dst"
    for f in "$src"/*; do
        if ! cmp -s "$f" "$dst/${f##*/}"; then
            install -m "$mode" "$f" "$dst/${f##*/}"
            n=$((n + 1))
        fi
    done
    printf '%s\n' "$n"
}
MANDIR=/usr/local/share/man/man1
BUILT=$(mktemp -d)
"$VENV/bin/python" "$REPO/scripts/build-manpages.py" --man "$BUILT/man" >/dev/null \
    || die "scripts/build-manpages.py failed"
made=$(install_changed "$BUILT/man" "$MANDIR" 644)
[ "$made" -eq 0 ] || mandb -q >/dev/null 2>&1 || true  # whatis/apropos (incremental); man works without
rm -rf "$BUILT"
say "man pages: $(ls "$MANDIR" | wc -l) in $MANDIR ($made written)"

# bash completions (shtab, from the same parsers); bash-completion loads them by command name.
COMPDIR=/usr/share/bash-completion/completions
BUILT=$(mktemp -d)
"$VENV/bin/python" "$REPO/scripts/build-manpages.py" --completions "$BUILT" >/dev/null \
    || die "scripts/build-manpages.py --completions failed"
made=0 total=0
for f in "$BUILT"/*; do
    total=$((total + 1))
    dst="$COMPDIR/${f##*/}"
    if [ -e "$dst" ] && ! head -n1 "$dst" | grep -q '^# omview bash completion '; then
        die "$dst exists and is not an omview completion; remove or rename it, then run me again"
    fi
    if ! cmp -s "$f" "$dst"; then
        install -D -m 644 "$f" "$dst"
        made=$((made + 1))
    fi
done
rm -rf "$BUILT"
say "bash completions: $total commands in $COMPDIR ($made written)"

# ---------------------------------------------------------------- VM cluster (issue 15)
# `omview-cluster up --vm`: QEMU (software emulation where KVM cannot run Debian's kernel), the
# tools that build its base image from Debian's archive (omview/testbed/vm/image.py), and the image
# itself, cached in /var/cache/omview/vm and rebuilt only when its recipe changes (a cached image
# costs a few apt-cache look-ups). OMVIEW_SKIP_VM=1 skips both.
if [ "${OMVIEW_SKIP_VM:-}" = 1 ]; then
    say "VM cluster: skipped (OMVIEW_SKIP_VM=1)"
else
    VM_PACKAGES=(qemu-system-x86 qemu-utils mmdebstrap busybox-static cpio kmod zstd e2fsprogs)
    mapfile -t need < <(missing_packages "${VM_PACKAGES[@]}")
    if [ "${#need[@]}" -gt 0 ]; then
        apt_install "${need[@]}"
    else
        say "VM packages: all present"
    fi
    "$VENV/bin/python" -c "from omview.testbed.vm.image import main; raise SystemExit(main())" || die "building the VM base image failed (see above)"
fi

# The netns cluster bind-mounts per-node directories over these; they stay empty on the host.
mkdir -p /etc/omview /var/lib/omview
say "done"
