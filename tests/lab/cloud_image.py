"""A real Debian bookworm cloud image for the lab, built offline from Debian's packages, and how to boot it.

``ensure_cloud_image()`` builds (once, cached like ``image.py``'s image) a root
file system with mmdebstrap (variant minbase + systemd, udev, openssh-server,
cloud-init, the kernel, ifupdown, isc-dhcp-client, sudo, eject), tweaked by
``cloud-image-customize.sh``, made into an unpartitioned ext4 (``mke2fs -d``)
and converted to a qcow2 base image. The image's own kernel and initrd are
copied next to it for direct kernel boot (``root=/dev/vda``).

A VM boots as downburst boots a cloud image: a qcow2 overlay on the base
(``make_overlay``), a NoCloud seed ISO labelled ``cidata`` holding user-data and
meta-data (``make_seed_iso``) as an IDE CD-ROM, QEMU user-mode networking with
``restrict=on`` and one loopback hostfwd to port 22. ``boot_for_test`` runs
QEMU directly (no libvirt) for tests of the image itself.

Done signal: when cloud-init's final stage has finished, the image prints
``LAB-CLOUD-INIT-DONE status=<status> ejected=yes`` on the serial console and
ejects the seed CD-ROM, so its tray opens: QEMU's ``query-block`` (what
downburst's ``--wait`` polls through libvirt) reports ``tray_open: true``.

``make_seed_iso`` and ``make_overlay`` use only the standard library and
subprocess (no other lab module), so the stand-in can call them, or carry
copies, with whatever Python a vpshost has.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .config import LAB_DIR, cache_dir

log = logging.getLogger(__name__)

# Bump when the image changes in a way the hashed inputs don't capture.
FORMAT = 1
SUITE = "bookworm"
PACKAGES = (
    "systemd-sysv",
    "udev",
    "openssh-server",
    "cloud-init",
    "linux-image-amd64",
    "ifupdown",
    "isc-dhcp-client",
    "iproute2",
    "e2fsprogs",  # fsck of the root file system, resize2fs for cloud-init's resizefs
    "sudo",  # for user-data `users: [{sudo: ...}]`
    "eject",  # the done signal
    "dbus",  # systemctl as non-root, hostnamectl (Ansible's hostname module), as on real cloud images
)
# Kept out of the image: documentation and translations nobody reads on a test VM.
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
CUSTOMIZE_SCRIPT = LAB_DIR / "cloud-image-customize.sh"
# Size of the root file system (the qcow2's virtual size); the qcow2 file holds only what is used.
ROOTFS_BYTES = 3 * 1024**3
ROOT_LABEL = "cloudimg-rootfs"
BUILD_TIMEOUT = 45 * 60
# Printed on the guest's serial console by lab-cloud-init-done (see the customize script).
DONE_MARKER = re.compile(r"LAB-CLOUD-INIT-DONE status=(\S+) ejected=(\S+)")
# Tools the build needs, and the Debian package that has each.
BUILD_TOOLS = {"mmdebstrap": "mmdebstrap", "mke2fs": "e2fsprogs", "qemu-img": "qemu-utils", "unshare": "util-linux"}


@dataclass(frozen=True)
class CloudImage:
    directory: Path
    qcow2: Path
    kernel: Path
    initrd: Path
    manifest: dict[str, object]

    def cmdline(self, extra: str = "") -> str:
        """Kernel command line for a direct kernel boot of this image."""
        base = "root=/dev/vda rootfstype=ext4 ro console=ttyS0,115200"
        return f"{base} {extra}".strip()


def _run(cmd: list[str], timeout: float = 600, **kw: object) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout, **kw).stdout  # type: ignore[call-overload]


def _require_tools(tools: dict[str, str]) -> None:
    missing = [f"{tool} (Debian package {package})" for tool, package in tools.items() if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"missing tools: {', '.join(missing)}; install tests/lab/apt-packages.txt")


def _sources() -> list[str]:
    """mmdebstrap MIRROR arguments: none means deb.debian.org with bookworm-updates and -security.

    $TEUTHOLOGY_LAB_DEBIAN_SOURCES may name a sources.list (one-line or deb822) file to use instead.
    """
    path = os.environ.get("TEUTHOLOGY_LAB_DEBIAN_SOURCES")
    if not path:
        return []
    if not Path(path).is_file():
        raise RuntimeError(f"TEUTHOLOGY_LAB_DEBIAN_SOURCES={path} is not a file")
    return [path]


def _candidate_versions(packages: list[str]) -> dict[str, str]:
    """Candidate versions from the host's apt lists (same mirror and suite as the build)."""
    out = _run(["apt-cache", "policy", *packages])
    versions: dict[str, str] = {}
    name = None
    for line in out.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            name = line[:-1]
        m = re.match(r"\s+Candidate:\s*(\S+)", line)
        if m and name:
            versions[name] = m.group(1)
    missing = [p for p in packages if versions.get(p) in (None, "(none)")]
    if missing:
        raise RuntimeError(f"apt knows no candidate for {', '.join(missing)}; run `apt-get update` first")
    return versions


def _kernel_package() -> str:
    deps = _run(["apt-cache", "depends", "linux-image-amd64"])
    m = re.search(r"Depends:\s*(linux-image-\S+)", deps)
    if not m:
        raise RuntimeError("cannot resolve linux-image-amd64; run `apt-get update` first")
    return m.group(1)


def _inputs() -> dict[str, object]:
    # The builder: the customize hook, the code that runs mmdebstrap and makes the
    # image, and a sources file if given (not the boot helpers: editing those
    # must not cost a rebuild).
    builder = hashlib.sha256(CUSTOMIZE_SCRIPT.read_bytes())
    for function in (_mmdebstrap, _build):
        builder.update(inspect.getsource(function).encode())
    for path in _sources():
        builder.update(Path(path).read_bytes())
    return {
        "format": FORMAT,
        "suite": SUITE,
        "packages": list(PACKAGES),
        "dpkg_options": list(DPKG_EXCLUDES),
        "rootfs_bytes": ROOTFS_BYTES,
        "root_label": ROOT_LABEL,
        "versions": _candidate_versions([*PACKAGES, _kernel_package(), "systemd", "initramfs-tools", "libc6"]),
        "builder_sha256": builder.hexdigest(),
    }


def _key(inputs: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def _load(directory: Path) -> CloudImage | None:
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():  # written last: its presence marks a complete image
        return None
    manifest = json.loads(manifest_path.read_text())
    return CloudImage(directory, directory / "base.qcow2", directory / "vmlinuz", directory / "initrd.img", manifest)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(prefix)]


def _remove_build_dir(path: Path) -> None:
    # mmdebstrap runs in its own mount namespace, so nothing should be mounted
    # under its root; never walk into a mounted /dev or /proc of the host.
    mounts = _mounts_under(path)
    if mounts:
        raise RuntimeError(f"not removing {path}: mount points under it: {mounts}")
    shutil.rmtree(path, ignore_errors=True)


def _mmdebstrap(rootfs: Path, log_path: Path) -> None:
    cmd = [
        # A private mount namespace: mmdebstrap's /proc, /sys, /dev mounts in the
        # chroot vanish with it, even if it is killed.
        "unshare", "--mount", "--propagation", "private",
        "mmdebstrap", "--mode=root", "--variant=minbase", "--verbose",
        "--include=" + ",".join(PACKAGES),
        *[f"--dpkgopt={opt}" for opt in DPKG_EXCLUDES],
        # An executable path: mmdebstrap execs it with the root directory as $1.
        f"--customize-hook={CUSTOMIZE_SCRIPT}",
        SUITE, str(rootfs), *_sources(),
    ]  # fmt: skip
    if not os.access(CUSTOMIZE_SCRIPT, os.X_OK):
        raise RuntimeError(f"{CUSTOMIZE_SCRIPT} is not executable")
    with open(log_path, "w") as out:
        try:
            result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT, check=False)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"mmdebstrap did not finish in {BUILD_TIMEOUT}s; see {log_path}") from e
    if result.returncode != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"mmdebstrap failed (exit {result.returncode}); last lines of {log_path}:\n{tail}")


def _build(work: Path, inputs: dict[str, object]) -> dict[str, object]:
    rootfs = work / "rootfs"
    _mmdebstrap(rootfs, work / "build.log")

    listing = _run(["dpkg-query", f"--admindir={rootfs / 'var/lib/dpkg'}", "-W", "-f=${Package}\t${Version}\n"])
    installed = dict(line.split("\t", 1) for line in listing.splitlines() if line)
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise RuntimeError(f"expected one kernel in the image's /boot, found {[k.name for k in kernels]}")
    release = kernels[0].name.removeprefix("vmlinuz-")
    initrd = rootfs / "boot" / f"initrd.img-{release}"
    if not initrd.is_file():
        raise RuntimeError(f"the image has no {initrd.name}")
    shutil.copyfile(kernels[0], work / "vmlinuz")
    shutil.copyfile(initrd, work / "initrd.img")
    used = int(_run(["du", "-s", "-x", "--block-size=1", str(rootfs)]).split()[0])

    raw = work / "rootfs.ext4"
    with open(raw, "wb") as f:
        f.truncate(ROOTFS_BYTES)
    # -d copies the tree with owners, modes, links and xattrs: no loop mount needed.
    _run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", ROOT_LABEL, "-d", str(rootfs), str(raw)], timeout=1200)
    _remove_build_dir(rootfs)
    _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", str(raw), str(work / "base.qcow2")], timeout=1200)
    raw.unlink()
    info = json.loads(_run(["qemu-img", "info", "--output=json", str(work / "base.qcow2")]))
    return {
        "inputs": inputs,
        "kernel_release": release,
        "packages": installed,
        "rootfs_used_bytes": used,
        "qcow2_bytes": (work / "base.qcow2").stat().st_size,
        "virtual_size": info.get("virtual-size"),
        "root_label": ROOT_LABEL,
        "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def ensure_cloud_image(force: bool = False) -> CloudImage:
    """Return the cached cloud image for the current package versions, building it if needed (as root)."""
    cache = cache_dir()
    images = cache / "cloud-images"
    images.mkdir(exist_ok=True)
    with open(cache / "cloud-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others then find its result
        inputs = _inputs()
        target = images / _key(inputs)
        image = None if force else _load(target)
        if image is not None:
            return image
        if os.geteuid() != 0:
            raise RuntimeError("building the cloud image needs root (mmdebstrap --mode=root, chroot)")
        _require_tools(BUILD_TOOLS)
        for stale in images.glob("build-*"):  # left by a killed build; we hold the lock
            _remove_build_dir(stale)
        started = time.monotonic()
        log.info("building the lab cloud image %s (mmdebstrap, a few minutes)", target.name)
        work = Path(tempfile.mkdtemp(prefix="build-", dir=images))
        try:
            manifest = _build(work, inputs)
            manifest["build_seconds"] = round(time.monotonic() - started, 1)
            (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            for p in work.iterdir():
                p.chmod(0o644)  # readable by libvirt-qemu when libvirt boots it
            work.chmod(0o755)
            if target.exists():
                _remove_build_dir(target)
            os.rename(work, target)  # atomic: a half-built image is never at `target`
        finally:
            if work.exists():
                _remove_build_dir(work)
        log.info(
            "built lab cloud image %s in %.1fs (qcow2 %.0f MiB)",
            target, manifest["build_seconds"], int(manifest["qcow2_bytes"]) / 2**20,  # type: ignore[call-overload]
        )
        # Older images are big; keep only the one in use.
        for old in images.iterdir():
            if old != target and old.is_dir() and not old.name.startswith("build-"):
                _remove_build_dir(old)
        loaded = _load(target)
        assert loaded is not None
        return loaded


def make_seed_iso(path: Path | str, user_data: str, meta_data: str, network_config: str | None = None) -> Path:
    """Write a NoCloud seed ISO (volume label cidata) with user-data, meta-data and optionally network-config."""
    path = Path(path)
    if shutil.which("genisoimage"):
        tool = ["genisoimage"]
    elif shutil.which("xorriso"):
        tool = ["xorriso", "-as", "genisoimage"]
    else:
        raise RuntimeError("neither genisoimage nor xorriso is installed; install tests/lab/apt-packages.txt")
    with tempfile.TemporaryDirectory(prefix="seed-") as tmp:
        files = {"user-data": user_data, "meta-data": meta_data}
        if network_config is not None:
            files["network-config"] = network_config
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
        # As downburst: Joliet + Rock Ridge, file names as given; the directory is the ISO's root.
        cmd = [*tool, "-quiet", "-input-charset", "utf-8", "-volid", "cidata", "-joliet", "-rock", "-output", str(path), tmp]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{tool[0]} failed (exit {result.returncode}): {result.stderr.strip()}")
    return path


def make_overlay(path: Path | str, base: Path | str, size: str | None = None) -> Path:
    """Create a qcow2 overlay backed by `base` (absolute path); `size` (e.g. "10G") may grow the disk."""
    path, base = Path(path), Path(base).resolve()
    if not base.is_file():
        raise RuntimeError(f"backing image {base} does not exist")
    if shutil.which("qemu-img") is None:
        raise RuntimeError("qemu-img missing (Debian package qemu-utils); install tests/lab/apt-packages.txt")
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(path)]
    if size is not None:
        cmd.append(size)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"qemu-img create failed: {result.stderr.strip()}")
    return path


def _qemu_value(value: object) -> str:
    # QEMU splits option strings at commas; a literal comma is written twice.
    return str(value).replace(",", ",,")


def qmp_command(socket_path: Path, command: str, arguments: dict[str, object] | None = None, timeout: float = 10) -> object:
    """Run one QMP command on QEMU's monitor socket and return its "return" value."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(socket_path))
        stream = s.makefile("rwb")

        def reply() -> dict[str, object]:
            for _message_number in range(1000):  # asynchronous events may come before the reply
                line = stream.readline()
                if not line:
                    raise RuntimeError("QMP connection closed")
                message = json.loads(line)
                if "return" in message or "error" in message or "QMP" in message:
                    return message
            raise RuntimeError("no QMP reply among 1000 messages")

        reply()  # greeting
        for execute, args in (("qmp_capabilities", None), (command, arguments)):
            request: dict[str, object] = {"execute": execute}
            if args:
                request["arguments"] = args
            stream.write(json.dumps(request).encode() + b"\n")
            stream.flush()
            message = reply()
            if "error" in message:
                raise RuntimeError(f"QMP {execute}: {message['error']}")
        return message["return"]


@dataclass
class QemuVM:
    """A cloud-image VM run by QEMU directly; see boot_for_test."""

    name: str
    directory: Path
    ssh_port: int
    process: subprocess.Popen[bytes]
    console_log: Path
    qmp_socket: Path
    started: float  # time.monotonic() just before QEMU started

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def console(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _check_running(self) -> None:
        if self.process.poll() is not None:
            tail = "\n".join(self.console().splitlines()[-40:])
            stderr = (self.directory / "qemu.stderr").read_text(errors="replace")
            raise RuntimeError(f"QEMU for {self.name} exited with {self.process.returncode}: {stderr}\nconsole tail:\n{tail}")

    def wait_for_ssh(self, timeout: float = 300) -> float:
        """Wait until sshd's banner answers on the forwarded port; return seconds since QEMU started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_running()
            if _ssh_banner("127.0.0.1", self.ssh_port):
                return self.elapsed()
            time.sleep(1)
        raise TimeoutError(f"{self.name}: no SSH banner on 127.0.0.1:{self.ssh_port} after {timeout}s; console: {self.console_log}")

    def cdrom_tray_open(self) -> bool:
        """True once the guest has ejected the seed CD-ROM (QMP query-block, as downburst's --wait)."""
        devices = qmp_command(self.qmp_socket, "query-block")
        assert isinstance(devices, list)
        trays = [d.get("tray_open") for d in devices if isinstance(d, dict) and "tray_open" in d]
        if not trays:
            raise RuntimeError(f"{self.name} has no CD-ROM drive")
        return any(trays)

    def wait_for_cloud_init_done(self, timeout: float = 300) -> float:
        """Wait for the done signal (the seed CD-ROM's tray opens); return seconds since QEMU started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_running()
            if self.cdrom_tray_open():
                return self.elapsed()
            time.sleep(2)
        raise TimeoutError(f"{self.name}: seed CD-ROM not ejected after {timeout}s; console: {self.console_log}")

    def done_marker(self) -> tuple[str, str] | None:
        """(status, ejected) from the console's LAB-CLOUD-INIT-DONE line, if printed yet."""
        m = DONE_MARKER.search(self.console())
        return (m.group(1), m.group(2)) if m else None

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)

    def __enter__(self) -> QemuVM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ssh_banner(address: str, port: int, timeout: float = 5.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def boot_for_test(
    image: CloudImage,
    directory: Path | str,
    user_data: str,
    meta_data: str,
    network_config: str | None = None,
    name: str = "vm",
    ssh_port: int | None = None,
    memory_mib: int = 1024,
    cpus: int = 1,
    extra_cmdline: str = "",
) -> QemuVM:
    """Start QEMU (TCG, no libvirt) on an overlay of `image` with a seed ISO; returns at once.

    Devices as downburst's domains: virtio disk, seed ISO on the IDE bus (hdc, so
    the guest's ata_piix/sr0 finds it), virtio-net on user-mode networking with
    restrict=on and one hostfwd 127.0.0.1:ssh_port -> :22; serial console to
    `directory`/console.log, QMP monitor socket `directory`/qmp.sock.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    overlay = make_overlay(directory / "disk.qcow2", image.qcow2)
    seed = make_seed_iso(directory / "seed.iso", user_data, meta_data, network_config)
    port = ssh_port or _free_port()
    console_log = directory / "console.log"
    qmp_socket = directory / "qmp.sock"
    if len(str(qmp_socket)) > 100:  # sun_path is 108 bytes
        raise ValueError(f"path too long for a UNIX socket: {qmp_socket}")
    cmd = [
        # The kernel kills QEMU when the test process dies (PR_SET_PDEATHSIG
        # survives the exec), so no orphan VM keeps burning CPU.
        "setpriv", "--pdeathsig", "KILL", "--",
        "qemu-system-x86_64",
        "-name", name,
        "-machine", "pc", "-accel", "tcg",
        "-m", str(memory_mib), "-smp", str(cpus),
        "-nodefaults", "-no-user-config", "-display", "none",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", image.cmdline(extra_cmdline),
        "-drive", f"file={_qemu_value(overlay)},if=virtio,format=qcow2",
        "-drive", f"file={_qemu_value(seed)},if=ide,index=2,media=cdrom,format=raw,readonly=on",
        "-netdev", f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-chardev", f"file,id=console,path={_qemu_value(console_log)}",
        "-serial", "chardev:console",
        "-chardev", f"socket,id=qmp,path={_qemu_value(qmp_socket)},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
    ]  # fmt: skip
    _require_tools({"qemu-system-x86_64": "qemu-system-x86", "setpriv": "util-linux"})
    started = time.monotonic()
    with open(directory / "qemu.stderr", "wb") as stderr:
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    vm = QemuVM(name, directory, port, process, console_log, qmp_socket, started)
    # The QMP socket appears once QEMU has parsed its options; fail fast on bad ones.
    deadline = time.monotonic() + 30
    while not qmp_socket.exists():
        vm._check_running()
        if time.monotonic() > deadline:
            vm.stop()
            raise RuntimeError(f"QEMU for {name} made no QMP socket in 30s")
        time.sleep(0.2)
    log.info("booting %s: QEMU pid %d, ssh 127.0.0.1:%d, console %s", name, process.pid, port, console_log)
    return vm
