#!/usr/bin/env bash
# install-criu.sh - give this node a CRIU that passes `criu check`, and record its path.
#
# Order of preference:
#   1. a `criu` on PATH (or the distro's own package, installed with apt if missing) that passes `criu check`;
#   2. otherwise CRIU 4.x plus its whole library closure (glibc included) from the next Debian release
#      (trixie), fetched and signature-checked by apt through a private, throw-away apt configuration,
#      unpacked with dpkg-deb into a private prefix and run through that prefix's own dynamic loader.
# The chosen path goes to $OMVIEW_CRIU_BASE/criu-path (default /opt/omview/criu/criu-path), which the
# omview agent reads when its config has no `criu` key. Idempotent; a second run takes well under 2 s.
# Details and rationale: docs/criu.md.
#
# Environment (all optional):
#   OMVIEW_CRIU_BASE     install base (default /opt/omview/criu)
#   OMVIEW_CRIU_SUITE    Debian suite to take CRIU 4.x from (default trixie)
#   OMVIEW_CRIU_ARCHIVE  Debian archive URI to use instead of the ones found in the apt sources
#   OMVIEW_CRIU_FORCE=1  skip the "already working" fast path and re-check / reinstall
#
# `install-criu.sh --print-archive` only prints the Debian archive URI(s) it would use, then exits.
set -euo pipefail

BASE=${OMVIEW_CRIU_BASE:-/opt/omview/criu}
SUITE=${OMVIEW_CRIU_SUITE:-trixie}
PREFIX=$BASE/root
WRAPPER=$BASE/bin/criu
PATHFILE=$BASE/criu-path
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
CHECK_TIMEOUT=60
# criu and the apt tools live in sbin; a non-login root shell may not have it on PATH.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}
export LC_ALL=C

log() { printf 'install-criu: %s\n' "$*" >&2; }
die() { printf 'install-criu: ERROR: %s\n' "$*" >&2; exit 1; }

# criu_works PATH: true when PATH is executable and `PATH check` succeeds (bounded by a timeout).
criu_works() {
    local c=$1
    [[ -n $c && -x $c ]] || return 1
    timeout "$CHECK_TIMEOUT" "$c" check >/dev/null 2>&1
}

# record PATH: write the one-line path file atomically, then report version and check result.
record() {
    local c=$1 cur=""
    mkdir -p "$BASE"
    [[ -r $PATHFILE ]] && cur=$(head -n1 "$PATHFILE")
    if [[ $cur != "$c" ]]; then
        printf '%s\n' "$c" >"$PATHFILE.tmp"
        mv -f "$PATHFILE.tmp" "$PATHFILE"
    fi
    log "criu path: $c (recorded in $PATHFILE)"
    "$c" --version
    local out rc=0
    out=$(timeout "$CHECK_TIMEOUT" "$c" check 2>&1) || rc=$?
    printf 'criu check: %s (rc=%d)\n' "$(printf '%s' "$out" | tail -n1)" "$rc"
    [[ $rc -eq 0 ]] || die "'$c check' failed after install; see its output above"
}

codename=$( . /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-}")

# archive_uris: URIs of the main Debian archive in this machine's apt sources, i.e. enabled `deb`
# entries with component `main` whose suite is the release codename itself or a Debian alias. That
# excludes the security archive (suite codename-security) and third-party repos (own suites/components).
# The source files' locations come from apt's own configuration (Dir::Etc::sourcelist/sourceparts).
archive_uris() {
    local f SL SP
    eval "$(apt-config shell SL Dir::Etc::sourcelist/f SP Dir::Etc::sourceparts/d)"
    SL=${SL:-/etc/apt/sources.list}; SP=${SP:-/etc/apt/sources.list.d/}
    for f in "$SP"*.sources; do
        [[ -r $f ]] || continue
        awk -v cn="$codename" '
            function flush(   i, n, t, s, c, u, okt, oks, okc) {
                if (en != "no") {
                    okt = 0; n = split(ty, t, /[ \t]+/); for (i = 1; i <= n; i++) if (t[i] == "deb") okt = 1
                    oks = 0; n = split(su, s, /[ \t]+/)
                    for (i = 1; i <= n; i++)
                        if (s[i] == cn || s[i] ~ /^(stable|oldstable|testing|unstable|sid)$/) oks = 1
                    okc = 0; n = split(co, c, /[ \t]+/); for (i = 1; i <= n; i++) if (c[i] == "main") okc = 1
                    if (okt && oks && okc) { n = split(ur, u, /[ \t]+/); for (i = 1; i <= n; i++) if (u[i] != "") print u[i] }
                }
                ty = su = co = ur = en = ""; key = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]/ { val = $0; sub(/^[ \t]+/, "", val)       # continuation of the previous field
                       if (key == "uris") ur = ur " " val; else if (key == "suites") su = su " " val
                       else if (key == "components") co = co " " val; else if (key == "types") ty = ty " " val
                       next }
            { key = tolower($0); sub(/:.*/, "", key); val = $0; sub(/^[^:]*:[ \t]*/, "", val)
              if (key == "types") ty = val; else if (key == "uris") ur = val; else if (key == "suites") su = val
              else if (key == "components") co = val; else if (key == "enabled") en = tolower(val) }
            END { flush() }' "$f"
    done
    for f in "$SL" "$SP"*.list; do
        [[ -r $f ]] || continue
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk -v cn="$codename" '
            $1 == "deb" && ($3 == cn || $3 ~ /^(stable|oldstable|testing|unstable|sid)$/) {
                for (i = 4; i <= NF; i++) if ($i == "main") { print $2; break } }'
    done
}

# debian_archives: archive_uris without cdroms, trailing slashes and duplicates (order kept).
debian_archives() {
    if [[ -n ${OMVIEW_CRIU_ARCHIVE:-} ]]; then printf '%s\n' "$OMVIEW_CRIU_ARCHIVE"; return; fi
    archive_uris | grep -v '^cdrom:' | sed 's:/*$::' | awk '!seen[$0]++'
}

if [[ ${1:-} == --print-archive ]]; then
    debian_archives
    exit 0
fi
[[ $# -eq 0 ]] || die "unknown argument '$1' (usage: install-criu.sh [--print-archive])"

[[ $(id -u) -eq 0 ]] || die "must run as root (criu check and apt need it); try: sudo bash $0"

# fast_path: exit 0 when the recorded criu, or our own wrapper, still passes `criu check`.
fast_path() {
    [[ ${OMVIEW_CRIU_FORCE:-0} != 1 ]] || return 0
    if [[ -r $PATHFILE ]]; then
        local rec
        rec=$(head -n1 "$PATHFILE")
        if criu_works "$rec"; then record "$rec"; exit 0; fi
        log "recorded criu '$rec' does not pass 'criu check'; looking again"
    fi
    if criu_works "$WRAPPER"; then record "$WRAPPER"; exit 0; fi
}
fast_path

for tool in apt-get apt-cache dpkg dpkg-deb dpkg-query timeout flock; do
    command -v "$tool" >/dev/null || die "'$tool' not found; this script needs a Debian-based system with apt"
done

mkdir -p "$BASE"
# One installer at a time (setup.sh may be run twice in parallel on the same node).
exec 9>"$BASE/.install.lock"
flock -w 600 9 || die "another install-criu.sh holds $BASE/.install.lock for over 10 minutes"
fast_path   # a parallel run may have finished the job while we waited for the lock

# ---- step 1: the criu on PATH, or the distro package -----------------------------------------------
sys_criu=$(command -v criu || true)
if [[ -n $sys_criu ]] && criu_works "$sys_criu"; then
    log "the system criu passes 'criu check'; using it"
    record "$sys_criu"; exit 0
fi
if ! dpkg-query -W -f='${Status}' criu 2>/dev/null | grep -q 'install ok installed'; then
    log "trying the distro criu package"
    export DEBIAN_FRONTEND=noninteractive
    # Other setup steps may be running apt at the same moment: wait for the dpkg lock, do not fail on it.
    lock=(-o DPkg::Lock::Timeout=600)
    if ! apt-get "${lock[@]}" install -y -q --no-install-recommends criu >&2; then
        # Stale package lists are the usual cause; refresh once and retry.
        apt-get "${lock[@]}" update -q >&2 || true
        apt-get "${lock[@]}" install -y -q --no-install-recommends criu >&2 \
            || log "could not install the distro criu package"
    fi
    sys_criu=$(command -v criu || true)
    if [[ -n $sys_criu ]] && criu_works "$sys_criu"; then
        log "the distro criu passes 'criu check'; using it"
        record "$sys_criu"; exit 0
    fi
fi
if [[ -n $sys_criu ]]; then
    log "system criu $sys_criu ($("$sys_criu" --version 2>/dev/null | head -n1)) fails 'criu check':"
    timeout "$CHECK_TIMEOUT" "$sys_criu" check 2>&1 | tail -n3 | sed 's/^/    /' >&2 || true
fi
log "falling back to CRIU 4.x from Debian '$SUITE' in a private prefix ($PREFIX)"

# ---- step 2: CRIU 4.x from the next Debian release, via a private apt configuration -------------
arch=$(dpkg --print-architecture)
[[ -r $KEYRING ]] || die "$KEYRING is missing; install it with: apt-get install debian-archive-keyring"
# The suite's signing key must be in the keyring, or apt will (rightly) refuse the archive. bookworm's
# debian-archive-keyring (2023.3+deb12u2 and later) ships trixie's keys as separate files too.
if ! compgen -G "/usr/share/keyrings/debian-archive-${SUITE}-*.gpg" >/dev/null; then
    die "debian-archive-keyring has no key for '$SUITE' (no /usr/share/keyrings/debian-archive-${SUITE}-*.gpg);" \
        "update it with: apt-get update && apt-get install debian-archive-keyring"
fi

mapfile -t uris < <(debian_archives)
[[ ${#uris[@]} -gt 0 ]] || die "no Debian archive found in /etc/apt/sources.list{,.d/*.sources,.d/*.list}" \
    "(need an enabled 'deb' entry for suite '$codename' with component 'main'); set OMVIEW_CRIU_ARCHIVE=URI"

work=$(mktemp -d /tmp/omview-criu-install.XXXXXX)
cleanup() { rm -rf "$work" "$BASE/root.new" "$BASE/root.old"; }
trap cleanup EXIT
# apt drops to the _apt user for downloads; it must be able to reach the private dirs.
chmod 755 "$work"
mkdir -p "$work"/{lists/partial,cache/archives/partial,sources.d,preferences.d,debs}
: >"$work/status"                 # empty dpkg status: apt resolves the *full* closure, glibc included
: >"$work/preferences"
chown _apt "$work/debs" 2>/dev/null || true
# Everything apt would otherwise take from the system (sources, pins, lists, cache, dpkg status) points
# into $work, so the system's apt state is untouched. /etc/apt/apt.conf.d is still read on purpose:
# proxy and mirror settings there must apply to this download too.
cat >"$work/apt.conf" <<EOF
Dir::Etc::sourcelist "$work/sources.list";
Dir::Etc::sourceparts "$work/sources.d";
Dir::Etc::preferences "$work/preferences";
Dir::Etc::preferencesparts "$work/preferences.d";
Dir::State::Lists "$work/lists";
Dir::State::status "$work/status";
Dir::Cache "$work/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Architecture "$arch";
APT::Architectures { "$arch"; };
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
papt() { APT_CONFIG="$work/apt.conf" "$@"; }

archive=""
for uri in "${uris[@]}"; do
    printf 'deb [signed-by=%s] %s %s main\n' "$KEYRING" "$uri" "$SUITE" >"$work/sources.list"
    log "apt-get update on a private config: $uri $SUITE main"
    if papt apt-get update -q --error-on=any >"$work/update.log" 2>&1; then
        archive=$uri; break
    fi
    tail -n5 "$work/update.log" | sed 's/^/    /' >&2
done
[[ -n $archive ]] || die "could not fetch a verified '$SUITE' index from: ${uris[*]}"

cand=$(papt apt-cache policy criu | awk '/Candidate:/ {print $2}')
[[ -n $cand && $cand != "(none)" ]] || die "no criu package in $archive $SUITE main for $arch"
dpkg --compare-versions "$cand" ge 4 || die "criu in $SUITE is $cand, need 4.x; set OMVIEW_CRIU_SUITE"

# With an empty dpkg status, a simulated install lists criu's complete dependency closure.
mapfile -t pkgs < <(papt apt-get -s -q install --no-install-recommends criu 2>"$work/sim.err" |
                    awk '$1 == "Inst" { v = $3; sub(/^\(/, "", v); print $2 "=" v }')
[[ ${#pkgs[@]} -gt 0 ]] || { cat "$work/sim.err" >&2; die "could not resolve criu's dependencies in $SUITE"; }
printf '%s\n' "${pkgs[@]}" | grep -q '^criu=' || die "dependency resolution did not include criu itself"
log "downloading ${#pkgs[@]} packages: ${pkgs[*]}"
# apt-get download checks every .deb against the hashes in the signed index.
(cd "$work/debs" && papt apt-get download -q "${pkgs[@]}") >&2 \
    || die "apt-get download failed (see above)"

stage=$BASE/root.new
rm -rf "$stage"; mkdir -p "$stage"
for deb in "$work"/debs/*.deb; do
    dpkg-deb -x "$deb" "$stage"
done
[[ -x $stage/usr/sbin/criu ]] || die "unpacked packages contain no usr/sbin/criu"

# Library dirs: where libc.so.6 landed (the multiarch dir), plus the generic lib dirs if present.
libc=$(find "$stage" -name libc.so.6 \( -type f -o -type l \) -print -quit)
[[ -n $libc ]] || die "libc6 from $SUITE was not unpacked; cannot build the private loader path"
libdir_rel=$(dirname "${libc#"$stage"}")
loader_rel=""
for cand_ld in "$stage$libdir_rel"/ld-linux*.so.* "$stage$libdir_rel"/ld-*.so.*; do
    if [[ -e $cand_ld ]]; then loader_rel=${cand_ld#"$stage"}; break; fi
done
[[ -n $loader_rel ]] || die "no dynamic loader (ld-*.so.*) next to $libc"
libpath=$PREFIX$libdir_rel
for d in /lib${libdir_rel#/usr/lib} /usr/lib /lib; do
    [[ -d $stage$d && $PREFIX$d != "$PREFIX$libdir_rel" ]] && libpath+=:$PREFIX$d
done
{
    printf '# packages unpacked into %s by install-criu.sh from %s %s main, %s\n' \
        "$PREFIX" "$archive" "$SUITE" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf '%s\n' "${pkgs[@]}"
} >"$stage/.omview-packages"

# Swap the new prefix in (the old one stays usable until the rename).
if [[ -d $PREFIX ]]; then mv "$PREFIX" "$BASE/root.old"; fi
mv "$stage" "$PREFIX"
rm -rf "$BASE/root.old"
cp "$PREFIX/.omview-packages" "$BASE/packages.txt"

mkdir -p "$BASE/bin"
cat >"$WRAPPER.tmp" <<EOF
#!/bin/sh
# Generated by omview scripts/install-criu.sh - do not edit.
# Runs CRIU $cand from Debian $SUITE (unpacked in $PREFIX) through that release's own dynamic loader
# with its own libraries. --library-path, unlike LD_LIBRARY_PATH, is not inherited by programs criu
# runs (ip, iptables, the restored job), so they keep using the system's libraries.
exec $PREFIX$loader_rel --library-path $libpath $PREFIX/usr/sbin/criu "\$@"
EOF
chmod 755 "$WRAPPER.tmp"
mv -f "$WRAPPER.tmp" "$WRAPPER"

if ! criu_works "$WRAPPER"; then
    timeout "$CHECK_TIMEOUT" "$WRAPPER" check >&2 || true
    die "$WRAPPER was installed but 'criu check' fails with it (output above)"
fi
record "$WRAPPER"
