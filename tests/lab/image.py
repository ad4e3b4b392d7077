"""Build (once) and cache the tiny guest image: Debian kernel + busybox/dropbear initramfs.

The kernel comes from the linux-image-amd64 dependency, fetched with
``apt-get download`` and unpacked with ``dpkg-deb -x`` (never installed).  The
initramfs holds busybox-static, dropbear with the shared libraries it links,
the virtio network modules and ``init.sh``.  The cache is keyed by the package
versions and the builder's own inputs, so an apt upgrade triggers a rebuild.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .config import LAB_DIR, cache_dir
from .cpio import NewcWriter

log = logging.getLogger(__name__)

# Bump when the image layout changes in a way the hashed inputs don't capture.
FORMAT = 1
# Insertion order matters (dependencies first); built-ins are skipped.
MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    # The seed CD-ROM (IDE, as downburst attaches it), for the done signal: the
    # guest ejects it once SSH listens, and the stand-in's --wait sees the tray open.
    "scsi_common",
    "scsi_mod",
    "libata",
    "ata_piix",
    "cdrom",
    "sr_mod",
)
# Copied with the shared libraries they link; eject is util-linux's (busybox-static has none).
GUEST_BINARIES = ("/usr/sbin/dropbear", "/usr/bin/dropbearkey", "/usr/bin/dropbearconvert", "/usr/bin/eject")
INIT_SCRIPT = LAB_DIR / "init.sh"


@dataclass(frozen=True)
class Image:
    directory: Path
    kernel: Path
    initrd: Path
    manifest: dict[str, object]


def _run(cmd: list[str], **kw: object) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600, **kw).stdout  # type: ignore[call-overload]


def _installed_version(package: str) -> str:
    try:
        return _run(["dpkg-query", "-W", "-f=${Version}", package]).strip()
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{package} is not installed (see tests/lab/apt-packages.txt)") from e


def _kernel_package() -> tuple[str, str]:
    """Name and candidate version of the versioned kernel linux-image-amd64 depends on."""
    deps = _run(["apt-cache", "depends", "linux-image-amd64"])
    m = re.search(r"Depends:\s*(linux-image-\S+)", deps)
    if not m:
        raise RuntimeError("cannot resolve linux-image-amd64; run `apt-get update` first")
    name = m.group(1)
    show = _run(["apt-cache", "show", "--no-all-versions", name])
    vm = re.search(r"^Version:\s*(\S+)", show, re.M)
    if not vm:
        raise RuntimeError(f"no candidate version for {name}")
    return name, vm.group(1)


def _inputs() -> dict[str, str]:
    kname, kver = _kernel_package()
    digest = hashlib.sha256(INIT_SCRIPT.read_bytes() + Path(__file__).read_bytes()).hexdigest()
    return {
        "format": str(FORMAT),
        "kernel_package": kname,
        "kernel_version": kver,
        "busybox-static": _installed_version("busybox-static"),
        "dropbear-bin": _installed_version("dropbear-bin"),
        "eject": _installed_version("eject"),
        "builder_sha256": digest,
    }


def _key(inputs: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def _load(directory: Path) -> Image | None:
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    return Image(directory, directory / "vmlinuz", directory / "initrd.img", manifest)


def _download_kernel(cache: Path, name: str, version: str) -> Path:
    debs = cache / "debs"
    debs.mkdir(exist_ok=True)
    found = sorted(debs.glob(f"{name}_{version.replace(':', '%3a')}_*.deb"))
    if found:
        return found[0]
    # Sandbox user root: the cache dir need not be readable by _apt.
    _run(["apt-get", "download", "-o", "APT::Sandbox::User=root", f"{name}={version}"], cwd=debs)
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        raise RuntimeError(f"apt-get download {name} produced no .deb")
    return found[-1]


def _library_deps(binary: str) -> list[str]:
    """Absolute paths of the shared objects a binary loads, from ldd."""
    libs: list[str] = []
    for line in _run(["ldd", binary]).splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


def _module_bytes(path: Path) -> bytes:
    # insmod in busybox may not handle compressed modules: decompress here.
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc"], input=data, check=True, capture_output=True, timeout=120).stdout
    return data


def _busybox_path() -> str:
    for line in _run(["dpkg", "-L", "busybox-static"]).splitlines():
        if line.endswith("bin/busybox"):
            return line
    raise RuntimeError("busybox-static provides no busybox binary?")


def _build(work: Path, deb: Path, inputs: dict[str, str]) -> dict[str, object]:
    root = work / "kernel"
    _run(["dpkg-deb", "-x", str(deb), str(root)])
    vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise RuntimeError(f"{deb.name} has no /boot/vmlinuz-*")
    kver = vmlinuz[0].name.removeprefix("vmlinuz-")
    moddir = next(p for p in (root / "lib/modules", root / "usr/lib/modules") if p.is_dir()) / kver
    shutil.copyfile(vmlinuz[0], work / "vmlinuz")

    by_name: dict[str, Path] = {}
    for p in (moddir / "kernel").rglob("*.ko*"):
        by_name[re.sub(r"\.ko(\.(xz|gz|zst))?$", "", p.name).replace("-", "_")] = p
    builtin = (moddir / "modules.builtin").read_text() if (moddir / "modules.builtin").exists() else ""
    modules: list[str] = []
    for mod in MODULES:
        if mod in by_name:
            modules.append(mod)
        elif re.search(rf"/{mod}\.ko$", builtin, re.M):
            log.info("module %s is built into %s", mod, kver)
        else:
            raise RuntimeError(f"kernel {kver} has neither module nor built-in {mod}")

    with gzip.open(work / "initrd.img", "wb", compresslevel=6) as gz:
        w = NewcWriter(gz)  # type: ignore[arg-type]
        for d in (
            "bin",
            "sbin",
            "usr",
            "usr/bin",
            "usr/sbin",
            "lib",
            "lib/modules",
            "lib64",
            "lib/x86_64-linux-gnu",
            "etc",
            "etc/dropbear",
            "dev",
            "proc",
            "sys",
            "tmp",
            "run",
            "var",
            "var/log",
            "lab",
            "lab/hostkeys",
        ):
            w.directory(d)
        w.directory("root", 0o700)
        w.chardev("dev/console", 5, 1)
        w.chardev("dev/null", 1, 3, 0o666)
        w.file("init", INIT_SCRIPT.read_bytes(), 0o755)
        w.file("bin/busybox", Path(_busybox_path()).read_bytes(), 0o755)
        w.symlink("bin/sh", "busybox")
        libs: set[str] = set()
        for binary in GUEST_BINARIES:
            w.file(binary, Path(binary).read_bytes(), 0o755)
            libs.update(_library_deps(binary))
        for lib in sorted(libs):
            # ldd names the path the loader uses; store the resolved file there.
            w.file(lib, Path(lib).resolve().read_bytes(), 0o755)
        for mod in modules:
            w.file(f"lib/modules/{mod}.ko", _module_bytes(by_name[mod]))
        w.file("etc/lab-modules", "\n".join(modules).encode() + b"\n")
        w.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        w.file("etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o600)
        w.file("etc/group", b"root:x:0:\ntty:x:5:\n")
        w.file("etc/shells", b"/bin/sh\n")
        w.close()
    return {
        "inputs": inputs,
        "kernel_release": kver,
        "modules": modules,
        "libraries": sorted(libs),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def ensure_image(force: bool = False) -> Image:
    """Return the cached image for the current package versions, building it if needed."""
    cache = cache_dir()
    images = cache / "images"
    images.mkdir(exist_ok=True)
    with open(cache / "image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; others reuse its result
        inputs = _inputs()
        target = images / _key(inputs)
        image = None if force else _load(target)
        if image is not None:
            return image
        started = time.monotonic()
        deb = _download_kernel(cache, inputs["kernel_package"], inputs["kernel_version"])
        work = Path(tempfile.mkdtemp(prefix="build-", dir=images))
        try:
            manifest = _build(work, deb, inputs)
            shutil.rmtree(work / "kernel")
            manifest["build_seconds"] = round(time.monotonic() - started, 1)
            (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            for p in work.iterdir():
                p.chmod(0o644)
            work.chmod(0o755)
            if target.exists():
                shutil.rmtree(target)
            os.rename(work, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        # Old kernels' .debs are big; keep only the one in use.
        for old in (cache / "debs").glob("*.deb"):
            if old != deb:
                old.unlink()
        log.info("built lab image %s in %.1fs", target, manifest["build_seconds"])
        loaded = _load(target)
        assert loaded is not None
        return loaded
