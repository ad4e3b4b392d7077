"""Start virtlogd and libvirtd by hand (the machine has no systemd), idempotently."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from .config import LIBVIRT_URI

log = logging.getLogger(__name__)

# The lab must never bring up libvirt's NAT network: drop its autostart link
# before libvirtd starts, and never start any network.
DEFAULT_NET_AUTOSTART = Path("/etc/libvirt/qemu/networks/autostart/default.xml")
PIDFILES = {"virtlogd": Path("/run/virtlogd.pid"), "libvirtd": Path("/run/libvirtd.pid")}


def _running(name: str) -> bool:
    try:
        pid = int(PIDFILES[name].read_text().strip())
        return Path(f"/proc/{pid}/comm").read_text().strip() == name
    except (OSError, ValueError):
        return False


def _kvm_group_access() -> None:
    """Give /dev/kvm Debian's usual root:kvm 0660 when it is root-only.

    libvirt probes QEMU as root (KVM "enabled") but then checks /dev/kvm as
    the libvirt-qemu user; when that check fails it deems its capability
    cache stale and re-probes QEMU on every call (~45 s per domain start).
    The lab still never uses KVM: domains are type 'qemu' (TCG).
    """
    kvm = Path("/dev/kvm")
    if not kvm.exists() or kvm.stat().st_mode & 0o060 == 0o060:
        return
    if shutil.which("getent") and subprocess.run(["getent", "group", "kvm"], capture_output=True, check=False).returncode == 0:
        shutil.chown(kvm, group="kvm")
        kvm.chmod(0o660)


def virsh(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", LIBVIRT_URI, *args], capture_output=True, text=True, timeout=timeout, check=False)


def start_daemons(timeout: float = 60) -> None:
    """Make sure virtlogd and libvirtd run and answer; safe to call repeatedly."""
    if DEFAULT_NET_AUTOSTART.is_symlink() or DEFAULT_NET_AUTOSTART.exists():
        DEFAULT_NET_AUTOSTART.unlink()
    _kvm_group_access()
    for name in ("virtlogd", "libvirtd"):
        if not _running(name):
            if shutil.which(name) is None:
                raise RuntimeError(f"{name} missing: install tests/lab/apt-packages.txt")
            log.info("starting %s -d", name)
            subprocess.run([name, "-d"], check=True, timeout=30)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if virsh("list", timeout=10).returncode == 0:
                break
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"libvirtd does not answer on {LIBVIRT_URI} after {timeout}s")
        time.sleep(0.5)
    active = virsh("net-list", "--name").stdout.split()
    for net in active:  # something else started one: the lab's rule is all off
        log.warning("stopping libvirt network %s (the lab uses user-mode networking only)", net)
        virsh("net-destroy", net)


def daemons_running() -> bool:
    return all(_running(n) for n in PIDFILES) and os.path.exists("/run/libvirt/libvirt-sock")
