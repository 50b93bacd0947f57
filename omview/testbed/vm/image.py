"""Build (once) and cache the VM cluster's base image: kernel, initrd and root file system.

Everything comes from Debian's archive as configured in this machine's apt sources: the kernel is
Debian 12's own (``apt-get download`` of the linux-image package, the raw ``vmlinux`` taken out of
its bzImage so QEMU's microvm boots it without firmware), the initrd is the host's busybox-static
plus the few modules needed to mount the root and the 9p shares, the root is an ``mmdebstrap``
minbase of bookworm turned into one qcow2. The result lives in ``CACHE/<recipe hash>/`` and is
rebuilt only when the recipe (packages, kernel version, initrd script, builder version) changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import logging
import lzma
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from omview.testbed.api import ClusterError

log = logging.getLogger(__name__)

DEFAULT_CACHE = "/var/cache/omview/vm"
SUITE = "bookworm"
#: bump when the way the image is made changes in a way the other recipe fields do not show
BUILDER_VERSION = 1
#: root file system contents: sshd for the cluster, python3 for the agent (the venv's own Python is
#: /usr/bin/python3, Debian 12's 3.11, as on the host), bc/xz for the tests' real programs
ROOT_PACKAGES = (
    "openssh-server", "openssh-client", "python3", "iproute2", "kmod", "procps", "busybox",
    "iptables", "nftables", "bc", "xz-utils", "criu",
)  # fmt: skip
ROOT_SIZE = "2G"  # sparse: only what is written takes space in the qcow2
#: modules (and their dependencies, from modules.dep) the initrd loads before mounting the root
INITRD_MODULES = (
    "virtio_mmio", "virtio_blk", "virtio_net", "crc32c_generic", "crc32c_intel", "ext4", "9p", "9pnet_virtio",
    "overlay", "tun",
)  # fmt: skip
#: the initrd's /init: load modules, mount the root (a qcow2 overlay on /dev/vda) and the 9p shares
#: named on the kernel command line (omv9p=TAG:PATH:ro|rw,...), then hand over to omvinit=SCRIPT
#: (a script on one of the shares, so the boot sequence can change without a rebuild)
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done </lib/modules/load.order
cmdline=$(cat /proc/cmdline)
arg() { for w in $cmdline; do case $w in "$1"=*) echo "${w#*=}"; return;; esac; done; }
i=0
while [ ! -b /dev/vdb ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /newroot
# a VM that cannot boot powers off, so the host sees QEMU end instead of waiting for it
fail() { echo "omview-initrd: $*"; poweroff -f; }
root=$(findfs LABEL=omview-root) || fail "no disk labelled omview-root"
mount -t ext4 -o noatime "$root" /newroot || fail "cannot mount the root $root"
# the kernel's modules (a read-only disk shared by every VM): modprobe works, the kernel loads on demand
mkdir -p /newroot/lib/modules
mods=$(findfs LABEL=omview-mods) && mount -t ext4 -o ro "$mods" /newroot/lib/modules
for s in $(arg omv9p | tr , ' '); do
    tag=${s%%:*}; rest=${s#*:}; path=${rest%:*}; mode=${rest##*:}
    mkdir -p "/newroot$path"
    mount -t 9p -o "trans=virtio,version=9p2000.L,msize=262144,$mode" "$tag" "/newroot$path" \
        || echo "omview-initrd: cannot mount 9p share $tag on $path"
done
init=$(arg omvinit)
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /bin/sh "$init"
"""


@dataclass(frozen=True)
class Image:
    """The cached files of one built base image."""

    dir: Path
    kernel_version: str

    @property
    def vmlinux(self) -> Path:
        return self.dir / "vmlinux"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.cpio.gz"

    @property
    def modules(self) -> Path:
        return self.dir / "modules.ext4"

    @property
    def base(self) -> Path:
        return self.dir / "base.qcow2"

    @property
    def recipe_path(self) -> Path:
        return self.dir / "recipe.json"


def _run(argv: list[str], *, timeout: float, cwd: str | None = None) -> str:
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    except FileNotFoundError as e:
        raise ClusterError(f"{argv[0]} not found: run scripts/setup.sh (it installs the VM tools)") from e
    except subprocess.TimeoutExpired as e:
        raise ClusterError(f"{' '.join(argv[:3])} ... did not finish within {timeout:.0f} s") from e
    if cp.returncode != 0:
        tail = "\n".join((cp.stderr or cp.stdout).strip().splitlines()[-12:])
        raise ClusterError(f"{' '.join(argv[:4])} ... failed (exit {cp.returncode}):\n{tail}")
    return cp.stdout


def kernel_package() -> tuple[str, str]:
    """The linux-image package linux-image-amd64 points at in this machine's apt lists, and its version."""
    out = _run(["apt-cache", "depends", "linux-image-amd64"], timeout=60)
    names = [ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.strip().startswith("Depends:")]
    pkgs = [n for n in names if n.startswith("linux-image-")]
    if not pkgs:
        raise ClusterError("apt-cache knows no linux-image-amd64 dependency: run `apt-get update`")
    policy = _run(["apt-cache", "policy", pkgs[0]], timeout=60)
    version = next((ln.split()[1] for ln in policy.splitlines() if "Candidate:" in ln), "")
    if not version or version == "(none)":
        raise ClusterError(f"no installable version of {pkgs[0]} in the apt lists: run `apt-get update`")
    return pkgs[0], version


def debian_archive() -> str:
    """The Debian archive of this machine's apt sources (the one scripts/install-criu.sh finds)."""
    script = Path(__file__).resolve().parents[3] / "scripts" / "install-criu.sh"
    out = _run(["bash", str(script), "--print-archive"], timeout=30) if script.exists() else ""
    uris = [u for u in out.split() if u]
    return uris[0] if uris else "http://deb.debian.org/debian"


def recipe() -> dict[str, object]:
    """Everything the base image depends on; its hash names the cache directory."""
    pkg, version = kernel_package()
    busybox = _run(["dpkg-query", "-W", "-f=${Version}", "busybox-static"], timeout=30).strip()
    return {
        "builder": BUILDER_VERSION, "suite": SUITE, "archive": debian_archive(),
        "kernel": [pkg, version], "busybox_static": busybox, "packages": sorted(ROOT_PACKAGES),
        "modules": list(INITRD_MODULES), "init": INIT, "root_size": ROOT_SIZE,
    }  # fmt: skip


def recipe_hash(rec: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:16]


#: the recipe fields the root file system (the slow part) depends on; an image of another recipe
#: with the same ones lends its base.qcow2 (e.g. when only the initrd changed)
ROOTFS_FIELDS = ("builder", "suite", "archive", "packages", "root_size")


def rootfs_hash(rec: dict[str, object]) -> str:
    return recipe_hash({k: rec[k] for k in ROOTFS_FIELDS})


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure_image(cache: str | os.PathLike[str] = DEFAULT_CACHE, *, timeout: float = 1800.0) -> tuple[Image, float]:
    """The base image for the current recipe, built first if the cache lacks it.

    Returns the image and the seconds spent building (0.0 when it was cached). Concurrent callers
    wait for each other (a lock in CACHE) instead of building twice.
    """
    if os.geteuid() != 0:
        raise ClusterError("building the VM image needs root (mmdebstrap, device nodes)")
    rec = recipe()
    root = Path(cache)
    img = Image(root / recipe_hash(rec), kernel_version="")
    with _locked(root / ".build.lock"):
        if img.recipe_path.exists():
            data = json.loads(img.recipe_path.read_text())
            return Image(img.dir, data["kernel_version"]), 0.0
        t0 = time.monotonic()
        built = _build(rec, img.dir, timeout=timeout)
        spent = time.monotonic() - t0
        # older images of other recipes are no longer used: keep the cache to one image
        for other in root.iterdir():
            if other.is_dir() and other != img.dir:
                shutil.rmtree(other, ignore_errors=True)
        log.info("VM image built in %.1f s: %s", spent, img.dir)
        return built, spent


def _build(rec: dict[str, object], dest: Path, *, timeout: float) -> Image:
    tmp = Path(tempfile.mkdtemp(prefix="omview-vm-build.", dir=dest.parent))
    try:
        work = tmp / "work"
        work.mkdir()
        pkg = rec["kernel"][0]  # type: ignore[index]
        kdir = work / "kernel"
        kdir.mkdir()
        _run(["apt-get", "download", "-q", str(pkg)], timeout=timeout, cwd=str(work))
        deb = next(work.glob("linux-image-*.deb"))
        _run(["dpkg-deb", "-x", str(deb), str(kdir)], timeout=timeout)
        vmlinuz = next((kdir / "boot").glob("vmlinuz-*"))
        kver = vmlinuz.name.removeprefix("vmlinuz-")
        # the package ships no modules.dep (its postinst runs depmod): make one for the initrd
        _run(["depmod", "-b", str(kdir), kver], timeout=timeout)
        out = tmp / "out"
        out.mkdir()
        (out / "vmlinux").write_bytes(extract_vmlinux(vmlinuz.read_bytes()))
        _make_initrd(kdir / "lib" / "modules" / kver, out / "initrd.cpio.gz", work / "initrd")
        # all modules on a disk of their own, so the root file system does not depend on the kernel
        _run(["mke2fs", "-q", "-t", "ext4", "-L", "omview-mods", "-d", str(kdir / "lib" / "modules"),
              str(out / "modules.ext4"), "1G"], timeout=timeout)  # fmt: skip
        same = _same_rootfs(dest.parent, rootfs_hash(rec))
        if same is not None:
            os.link(same, out / "base.qcow2")
        else:
            rootfs = work / "rootfs"
            _make_rootfs(rec, rootfs, timeout=timeout)
            ext4 = work / "base.ext4"
            _run(["mke2fs", "-q", "-t", "ext4", "-L", "omview-root", "-d", str(rootfs), str(ext4), ROOT_SIZE],
                 timeout=timeout)  # fmt: skip
            _run(["qemu-img", "convert", "-O", "qcow2", str(ext4), str(out / "base.qcow2")], timeout=timeout)
        data = dict(rec, kernel_version=kver, rootfs_hash=rootfs_hash(rec),
                    built=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))  # fmt: skip
        (out / "recipe.json").write_text(json.dumps(data, indent=2) + "\n")  # written last: marks "complete"
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(out, dest)
        return Image(dest, kver)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _same_rootfs(cache: Path, want: str) -> Path | None:
    """base.qcow2 of a complete cached image whose root file system recipe is WANT."""
    for rec_path in cache.glob("*/recipe.json"):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(rec_path.read_text())
            have = data.get("rootfs_hash") or rootfs_hash(data)
            if have == want and (rec_path.parent / "base.qcow2").is_file():
                return rec_path.parent / "base.qcow2"
    return None


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel inside a bzImage (as the kernel's scripts/extract-vmlinux finds it)."""
    for magic, how in ((b"\x28\xb5\x2f\xfd", "zstd"), (b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip")):
        pos = bzimage.find(magic)
        while pos >= 0:
            data = _decompress(bzimage[pos:], how)
            if data.startswith(b"\x7fELF"):
                return data
            pos = bzimage.find(magic, pos + 1)
    raise ClusterError("no ELF kernel found inside the bzImage (unknown compression)")


def _decompress(blob: bytes, how: str) -> bytes:
    try:
        if how == "xz":
            return lzma.LZMADecompressor().decompress(blob)
        if how == "gzip":
            return gzip.GzipFile(fileobj=io.BytesIO(blob)).read()
        cp = subprocess.run(["zstd", "-dc"], input=blob, capture_output=True, timeout=120)
        return cp.stdout  # zstd complains about trailing garbage after the frame, the output is whole
    except (lzma.LZMAError, OSError, EOFError, subprocess.TimeoutExpired):
        return b""


def _module_order(moddir: Path) -> list[str]:
    """Paths (relative to MODDIR) of INITRD_MODULES and their dependencies, dependencies first;
    names built into the kernel are skipped."""
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(p).name.split(".ko")[0].replace("-", "_"): p for p in deps}
    order: list[str] = []

    def add(path: str) -> None:
        if path in order:
            return
        for d in deps.get(path, []):
            add(d)
        order.append(path)

    for name in INITRD_MODULES:
        path = by_name.get(name.replace("-", "_"))
        if path is not None:
            add(path)
    return order


def _make_initrd(moddir: Path, dest: Path, work: Path) -> None:
    busybox = "/bin/busybox"  # busybox-static: the initrd has no libraries
    for d in ("bin", "dev", "proc", "sys", "newroot", "lib/modules"):
        (work / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, work / "bin" / "busybox")
    loads = []
    for rel in _module_order(moddir):
        raw = (moddir / rel).read_bytes()
        name = Path(rel).name
        if name.endswith(".xz"):  # busybox insmod wants plain .ko
            raw, name = lzma.decompress(raw), name.removesuffix(".xz")
        (work / "lib" / "modules" / name).write_bytes(raw)
        loads.append(name)
    (work / "lib" / "modules" / "load.order").write_text("\n".join(loads) + "\n")
    init = work / "init"
    init.write_text(INIT)
    init.chmod(0o755)
    files = _run(["find", ".", "-mindepth", "1"], timeout=60, cwd=str(work))
    cp = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"], input=files.encode(),
                        capture_output=True, cwd=str(work), timeout=120)  # fmt: skip
    if cp.returncode != 0:
        raise ClusterError(f"cpio failed: {cp.stderr.decode(errors='replace')}")
    dest.write_bytes(gzip.compress(cp.stdout, compresslevel=6))


def _make_rootfs(rec: dict[str, object], rootfs: Path, *, timeout: float) -> None:
    excludes = ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*"]
    argv = ["mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", "--format=directory",
            f"--include={','.join(ROOT_PACKAGES)}",
            *[f"--dpkgopt=path-exclude={p}" for p in excludes],
            # a host sshd would not start from a postinst anyway (no init in the chroot); be sure
            "--customize-hook=rm -f \"$1\"/etc/ssh/ssh_host_*",
            "--customize-hook=mkdir -p \"$1\"/var/lib/omview \"$1\"/etc/omview \"$1\"/run/sshd",
            SUITE, str(rootfs), f"deb {rec['archive']} {SUITE} main"]  # fmt: skip
    _run(argv, timeout=timeout)


def main() -> int:
    """`python -m omview.testbed.vm.image [CACHE]`: build the base image unless cached (scripts/setup.sh)."""
    import sys

    cache = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_CACHE
    try:
        img, spent = ensure_image(cache)
    except ClusterError as e:
        sys.stderr.write(f"omview VM image: error: {e}\n")
        return 1
    how = f"built in {spent:.1f} s" if spent else "cached"
    sys.stdout.write(f"omview VM image: {img.dir} (kernel {img.kernel_version}, {how})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
