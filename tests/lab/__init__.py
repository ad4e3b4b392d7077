"""The teuthology "local lab": real libvirt/QEMU, real sshd vpshosts, a downburst stand-in.

Typical use (see tests/test_lab.py and README.md)::

    from lab import Lab

    with Lab() as lab:
        host1, host2 = lab.start_vpshosts(2)
        host1.run("downburst -c qemu:///system create --wait --nokey vpm001")
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from .config import LAB_DIR, LIBVIRT_URI, cache_dir
from .daemons import start_daemons
from .image import Image, ensure_image
from .sshd import VPSHost, keygen, ssh_banner, start_vpshost

__all__ = [
    "LAB_NS",
    "Image",
    "Lab",
    "VPSHost",
    "cleanup_domains",
    "ensure_image",
    "free_port",
    "install_downburst",
    "keyscan",
    "lab_domains",
    "start_daemons",
    "vm_ssh_port",
    "wait_for_ssh",
]

log = logging.getLogger(__name__)

STANDIN = LAB_DIR / "bin" / "downburst"
# Must match LAB_NS in bin/downburst: marks domains the stand-in created.
LAB_NS = "urn:x-teuthology-lab:vm:1"


def write_standin_config(path: Path, image: Image, slots_file: Path | None = None) -> Path:
    config = {
        "kernel": str(image.kernel),
        "initrd": str(image.initrd),
        "state_dir": str(cache_dir() / "vms"),
        "dropbearconvert": shutil.which("dropbearconvert") or "/usr/bin/dropbearconvert",
        "memory_mib": 192,
    }
    if slots_file is not None:
        config["slots_file"] = str(slots_file)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def install_downburst(dest: Path, config: Path, python: str = os.path.normpath(sys.executable)) -> Path:
    """Copy the stand-in to `dest` with a shebang for `python` and `config` embedded."""
    check = subprocess.run([python, "-c", "import libvirt, yaml"], capture_output=True, check=False)
    if check.returncode != 0:
        raise RuntimeError(f"{python} lacks libvirt-python/PyYAML: pip install libvirt-python")
    text = STANDIN.read_text()
    text = re.sub(r"\A#![^\n]*", f"#!{python}", text)
    text = text.replace('INSTALLED_CONFIG = ""', f"INSTALLED_CONFIG = {str(config)!r}", 1)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    dest.chmod(0o755)
    return dest


def _connect():  # -> libvirt.virConnect; imported lazily so `lab` imports without it
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt.open(LIBVIRT_URI)


def lab_domains() -> dict[str, dict[str, str]]:
    """Domains created by the stand-in (any run), name → lab metadata attributes."""
    import libvirt

    found: dict[str, dict[str, str]] = {}
    conn = _connect()
    try:
        for dom in conn.listAllDomains():
            try:
                xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, LAB_NS)
            except libvirt.libvirtError:
                continue
            found[dom.name()] = dict(re.findall(r"([\w-]+)=\"([^\"]*)\"", xml))
    finally:
        conn.close()
    return found


def vm_ssh_port(name: str) -> int:
    """Loopback port forwarded to guest `name`'s SSH."""
    return int(lab_domains()[name]["ssh-port"])


def _stop_relay(state: Path) -> None:
    """SIGTERM the stand-in's per-VM SSH relay (it would exit by itself within seconds)."""
    try:
        pid = int((state / "relay.pid").read_text())
        if b"_relay" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
            os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass


def cleanup_domains(names: list[str] | None = None, config: Path | None = None, stale: bool = False) -> list[str]:
    """Destroy and undefine lab domains: all, or those in `names`, or those created
    with stand-in `config` (one Lab's), or `stale` ones whose Lab run dir is gone."""
    import libvirt

    removed = []
    conn = _connect()
    try:
        for name, attrs in lab_domains().items():
            if names is not None and name not in names:
                continue
            if config is not None and attrs.get("config") != str(config.resolve()):
                continue
            if stale and Path(attrs.get("config", "/")).exists():
                continue
            try:
                dom = conn.lookupByName(name)
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
            except libvirt.libvirtError:
                if name in lab_domains():  # not just removed by someone else meanwhile
                    raise
            _stop_relay(cache_dir() / "vms" / name)
            shutil.rmtree(cache_dir() / "vms" / name, ignore_errors=True)
            removed.append(name)
    finally:
        conn.close()
    return removed


def wait_for_ssh(port: int, address: str = "127.0.0.1", timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ssh_banner(address, port) is not None:
            return True
        time.sleep(0.5)
    return False


def keyscan(port: int, address: str = "127.0.0.1", timeout: int = 20) -> set[tuple[str, str]]:
    """(type, base64) host keys served at address:port, via the real ssh-keyscan."""
    out = subprocess.run(
        ["ssh-keyscan", "-T", str(timeout), "-p", str(port), address],
        capture_output=True, text=True, timeout=timeout * 4, check=False,
    ).stdout
    return {
        tuple(line.split()[1:3])
        for line in out.splitlines()  # type: ignore[misc]
        if line and not line.startswith("#")
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """Context manager owning one run: image, daemons, vpshosts, and their cleanup."""

    def __init__(self) -> None:
        self.run_dir = Path(tempfile.mkdtemp(prefix="teuthology-lab-"))
        self.vpshosts: list[VPSHost] = []
        self.image: Image | None = None
        self.client_key = keygen(self.run_dir / "client_key", "ed25519", "teuthology-lab-client")
        self.client_pubkey = self.run_dir / "client_key.pub"
        self.slots_file = self.run_dir / "slots.json"
        self.standin_config = self.run_dir / "downburst-standin.json"

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def ensure_image(self) -> Image:
        if self.image is None:
            self.image = ensure_image()
            write_standin_config(self.standin_config, self.image, self.slots_file)
        return self.image

    def start_daemons(self) -> None:
        start_daemons()
        stale = cleanup_domains(stale=True)  # left by runs that died before their cleanup
        if stale:
            log.info("removed stale lab domains %s", stale)

    def set_slots(self, slots: dict[str, int]) -> None:
        """NAME → forwarded port map the stand-in uses when meta-data has no lab.ssh_port."""
        self.slots_file.write_text(json.dumps(slots, indent=2) + "\n")

    def install_downburst(self, host: VPSHost, path: str | None = None) -> Path:
        """Install the stand-in on `host`: in its PATH dir, or at `path` in its namespace."""
        self.ensure_image()
        dest = host.bin_dir / "downburst" if path is None else host.path(path)
        return install_downburst(dest, self.standin_config)

    def start_vpshosts(self, n: int, with_downburst: bool = True, private_root: bool = False) -> list[VPSHost]:
        """Start `n` more vpshosts (127.0.1.N); with_downburst puts the stand-in on PATH;
        private_root gives each an empty /root of its own (see start_vpshost)."""
        if with_downburst:
            self.ensure_image()
            self.start_daemons()
        started = []
        for _ in range(n):
            host = start_vpshost(len(self.vpshosts) + 1, self.run_dir, self.client_pubkey, self.client_key,
                                 private_root=private_root)
            self.vpshosts.append(host)
            started.append(host)
            if with_downburst:
                self.install_downburst(host)
        return started

    def inventory(self) -> dict[str, dict[str, str | int]]:
        return {h.name: h.inventory_vars() for h in self.vpshosts}

    def known_hosts(self) -> Path:
        """One known_hosts file covering every vpshost started so far."""
        path = self.run_dir / "known_hosts"
        path.write_text("".join(h.known_hosts.read_text() for h in self.vpshosts))
        return path

    def stop(self) -> None:
        for host in self.vpshosts:
            host.stop()
        self.vpshosts.clear()
        if Path("/run/libvirt/libvirt-sock").exists():
            try:
                removed = cleanup_domains(config=self.standin_config)
                if removed:
                    log.info("removed lab domains %s", removed)
            except Exception:  # cleanup must not mask the test's own error
                log.exception("lab domain cleanup failed; see `virsh list --all`")
        shutil.rmtree(self.run_dir, ignore_errors=True)
