"""The teuthology "local lab": real libvirt/QEMU, real sshd vpshosts, a downburst stand-in.

Typical use (see tests/test_lab.py and README.md)::

    from lab import Lab

    with Lab() as lab:
        host1, host2 = lab.start_vpshosts(2)
        host1.run("downburst -c qemu:///system create --wait --nokey vpm001")
        lab.ensure_cloud_image()  # before asking for meta-data lab: {image: cloud}
"""

from __future__ import annotations

import contextlib
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
from typing import TYPE_CHECKING

from .config import LAB_DIR, LIBVIRT_URI, TESTS_DIR, cache_dir
from .daemons import start_daemons
from .image import Image, ensure_image
from .sshd import VPSHost, keygen, ssh_banner, start_vpshost, strict_ssh_options

if TYPE_CHECKING:
    from .cloud_image import CloudImage

__all__ = [
    "LAB_NS",
    "Image",
    "Lab",
    "VPSHost",
    "cleanup_domains",
    "ensure_image",
    "free_port",
    "guest_ssh",
    "install_downburst",
    "keyscan",
    "lab_domains",
    "lab_volumes",
    "served_host_keys",
    "start_daemons",
    "vm_ssh_port",
    "wait_for_ssh",
    "write_known_hosts",
]

log = logging.getLogger(__name__)

STANDIN = LAB_DIR / "bin" / "downburst"
# Must match LAB_NS in bin/downburst: marks domains the stand-in created.
LAB_NS = "urn:x-teuthology-lab:vm:1"


# Memory of the stand-in's guests: the busybox one lives in its initramfs; the
# cloud image boots systemd and cloud-init (as test_cloud_image boots it).
BUSYBOX_MEMORY_MIB = 192
CLOUD_MEMORY_MIB = 1024


def write_standin_config(
    path: Path,
    image: Image,
    slots_file: Path | None = None,
    pool: str | None = None,
    cloud_image: CloudImage | None = None,
    pools: dict[str, str] | None = None,
) -> Path:
    """The stand-in's config: image paths, state dir, and the vpshost's storage `pool`
    or, for a stand-in on the controller, the `pools` of the vpshosts by their names
    (what it is given with -c: a libvirt URI alias, or the host of a URI)."""
    config: dict[str, object] = {
        "kernel": str(image.kernel),
        "initrd": str(image.initrd),
        "state_dir": str(cache_dir() / "vms"),
        "dropbearconvert": shutil.which("dropbearconvert") or "/usr/bin/dropbearconvert",
        "memory_mib": BUSYBOX_MEMORY_MIB,
        # The stand-in imports lab.cloud_image (seed ISOs) and lab.cpio from here.
        "lab_package_parent": str(TESTS_DIR),
    }
    if slots_file is not None:
        config["slots_file"] = str(slots_file)
    if pool is not None:
        config["pool"] = pool
    if pools is not None:
        config["pools"] = pools
    if cloud_image is not None:
        config["cloud"] = {
            "qcow2": str(cloud_image.qcow2),
            "kernel": str(cloud_image.kernel),
            "initrd": str(cloud_image.initrd),
            "cmdline": cloud_image.cmdline(),
            "memory_mib": CLOUD_MEMORY_MIB,
        }
    tmp = path.with_suffix(".tmp")  # the stand-in may read it at any time: replace it whole
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    tmp.replace(path)
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


def _disk_sources(dom) -> list[str]:  # dom: libvirt.virDomain
    """Files of the domain's disks and CD-ROMs (the stand-in's volumes), not their backing files."""
    import libvirt

    return re.findall(r"<source file='([^']+)'", dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))


def _delete_volumes(conn, paths: list[str]) -> None:
    import libvirt

    for path in paths:
        # Not a pool's volume (any more): deleted by a destroy meanwhile, or its pool is gone.
        with contextlib.suppress(libvirt.libvirtError):
            conn.storageVolLookupByPath(path).delete(0)


def cleanup_domains(names: list[str] | None = None, run_dir: Path | None = None, stale: bool = False) -> list[str]:
    """Destroy and undefine lab domains and delete their volumes: all, or those in
    `names`, or those of the Lab whose run dir is `run_dir`, or `stale` ones whose
    Lab run dir is gone."""
    import libvirt

    removed = []
    conn = _connect()
    try:
        for name, attrs in lab_domains().items():
            if names is not None and name not in names:
                continue
            if run_dir is not None and not Path(attrs.get("config", "/")).is_relative_to(run_dir.resolve()):
                continue
            if stale and Path(attrs.get("config", "/")).exists():
                continue
            volumes: list[str] = []
            try:
                dom = conn.lookupByName(name)
                volumes = _disk_sources(dom)
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
            except libvirt.libvirtError:
                if name in lab_domains():  # not just removed by someone else meanwhile
                    raise
            _delete_volumes(conn, volumes)
            _stop_relay(cache_dir() / "vms" / name)
            shutil.rmtree(cache_dir() / "vms" / name, ignore_errors=True)
            removed.append(name)
    finally:
        conn.close()
    return removed


# --- storage pools: one per vpshost, as each real vpshost has its own libvirtd's 'default'


def pools_dir() -> Path:
    path = cache_dir() / "pools"
    path.mkdir(exist_ok=True)
    return path


def create_pool(name: str, run_dir: Path) -> Path:
    """Start a (transient) libvirt dir pool `name` in the cache's pools/ dir; `name.json`
    beside it names the run that owns it, for the removal of stale pools. Returns its dir."""
    import libvirt

    directory = pools_dir() / name
    directory.mkdir(mode=0o755, exist_ok=True)
    (pools_dir() / f"{name}.json").write_text(json.dumps({"run_dir": str(run_dir)}) + "\n")
    xml = f"<pool type='dir'><name>{name}</name><target><path>{directory}</path></target></pool>"
    conn = _connect()
    try:
        try:
            conn.storagePoolLookupByName(name)
        except libvirt.libvirtError:
            # Transient: nothing under /etc/libvirt, and it ends with libvirtd.
            conn.storagePoolCreateXML(xml, 0)
    finally:
        conn.close()
    return directory


def lab_volumes(pool: str) -> list[str]:
    """Names of the volumes in lab pool `pool`, sorted. (No refresh: only libvirt writes
    there, and a refresh fails while a volume is being made.)"""
    conn = _connect()
    try:
        return sorted(conn.storagePoolLookupByName(pool).listVolumes())
    finally:
        conn.close()


def remove_pool(name: str) -> None:
    """Stop pool `name` and delete its dir (volumes included) and its owner file."""
    import libvirt

    conn = _connect()
    try:
        try:
            pool = conn.storagePoolLookupByName(name)
            if pool.isActive():
                pool.destroy()  # transient: this removes it from libvirt
            if pool.isPersistent():
                pool.undefine()
        except libvirt.libvirtError:
            pass  # gone already (libvirtd restarted, or another cleanup)
    finally:
        conn.close()
    shutil.rmtree(pools_dir() / name, ignore_errors=True)
    (pools_dir() / f"{name}.json").unlink(missing_ok=True)


def cleanup_pools(run_dir: Path | None = None, stale: bool = False) -> list[str]:
    """Remove the cache's lab pools: those of the run in `run_dir`, or `stale` ones whose run dir is gone."""
    removed = []
    for owner_file in sorted(pools_dir().glob("*.json")):
        try:
            owner = Path(json.loads(owner_file.read_text())["run_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if (run_dir is not None and owner != run_dir) or (stale and owner.exists()):
            continue
        remove_pool(owner_file.stem)
        removed.append(owner_file.stem)
    return removed


def wait_for_ssh(port: int, address: str = "127.0.0.1", timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ssh_banner(address, port) is not None:
            return True
        time.sleep(0.5)
    return False


def keyscan(port: int, address: str = "127.0.0.1", timeout: int = 20, key_type: str | None = None) -> set[tuple[str, str]]:
    """(type, base64) host keys served at address:port, via the real ssh-keyscan (one
    connection per type it asks for: all it knows, or `key_type` only)."""
    types = ["-t", key_type] if key_type else []
    out = subprocess.run(
        ["ssh-keyscan", "-T", str(timeout), *types, "-p", str(port), address],
        capture_output=True, text=True, timeout=timeout * 4, check=False,
    ).stdout
    return {
        tuple(line.split()[1:3])
        for line in out.splitlines()  # type: ignore[misc]
        if line and not line.startswith("#")
    }


# ssh-keyscan -t names; "ecdsa" covers the nistp256/384/521 variants.
SCAN_TYPES = ("rsa", "ecdsa", "ed25519", "dsa")


def served_host_keys(port: int, address: str = "127.0.0.1", attempts: int = 3) -> set[tuple[str, str]]:
    """Every host key served at address:port, asking one type at a time, each up to `attempts`
    times until it answers: right after a boot, one ssh-keyscan for all types at once has come
    back without the ed25519 key (twice, with the cloud image); a type not served costs a retry."""
    found: set[tuple[str, str]] = set()
    for key_type in SCAN_TYPES:
        for attempt in range(attempts):
            answer = keyscan(port, address, key_type=key_type)
            if answer:
                found |= answer
                break
            if attempt + 1 < attempts:
                time.sleep(2)
    return found


def write_known_hosts(path: Path, port: int, host_keys: set[tuple[str, str]], address: str = "127.0.0.1") -> Path:
    """A known_hosts file pinning exactly `host_keys` ((type, base64)) for address:port."""
    path.write_text("".join(f"[{address}]:{port} {key_type} {blob}\n" for key_type, blob in sorted(host_keys)))
    return path


def guest_ssh(
    port: int, client_key: Path, known_hosts: Path, command: str, user: str = "root", timeout: float = 300, address: str = "127.0.0.1"
) -> subprocess.CompletedProcess[str]:
    """Run `command` on a guest as `user` over real ssh, host keys checked strictly against `known_hosts` only."""
    argv = ["ssh", *strict_ssh_options(known_hosts, connect_timeout=30), "-i", str(client_key), "-p", str(port),
            f"{user}@{address}", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """Context manager owning one run: images, daemons, vpshosts, their storage pools, and their cleanup."""

    def __init__(self) -> None:
        self.run_dir = Path(tempfile.mkdtemp(prefix="teuthology-lab-"))
        self.vpshosts: list[VPSHost] = []
        self.image: Image | None = None
        self.cloud_image: CloudImage | None = None
        self.client_key = keygen(self.run_dir / "client_key", "ed25519", "teuthology-lab-client")
        self.client_pubkey = self.run_dir / "client_key.pub"
        self.slots_file = self.run_dir / "slots.json"
        self.pools: dict[str, str] = {}  # vpshost name -> its storage pool
        # The config of a stand-in on the controller (downburst -c VPSHOST): every vpshost's pool.
        self.standin_config = self.run_dir / "downburst-standin.json"
        self._daemons_started = False

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def ensure_image(self) -> Image:
        if self.image is None:
            self.image = ensure_image()
            self._write_configs()
        return self.image

    def ensure_cloud_image(self) -> CloudImage:
        """Build or reuse the Debian cloud image (minutes, the first time), so that the stand-ins
        boot it for meta-data `lab: {image: cloud}`."""
        if self.cloud_image is None:
            from .cloud_image import ensure_cloud_image

            self.cloud_image = ensure_cloud_image()
            self._write_configs()
        return self.cloud_image

    def start_daemons(self) -> None:
        start_daemons()
        if not self._daemons_started:
            # Left by runs that died before their cleanup.
            stale = cleanup_domains(stale=True)
            stale_pools = cleanup_pools(stale=True)
            if stale or stale_pools:
                log.info("removed stale lab domains %s and pools %s", stale, stale_pools)
            self._daemons_started = True

    def set_slots(self, slots: dict[str, int]) -> None:
        """NAME → forwarded port map the stand-in uses when meta-data has no lab.ssh_port."""
        self.slots_file.write_text(json.dumps(slots, indent=2) + "\n")

    def host_config(self, host: VPSHost) -> Path:
        """The config of `host`'s stand-in (which names the host's pool)."""
        return self.run_dir / f"downburst-standin.{host.name}.json"

    def pool(self, host: VPSHost) -> str:
        """The name of `host`'s storage pool (made by install_downburst)."""
        return self.pools[host.name]

    def volumes(self, host: VPSHost) -> list[str]:
        """The volumes in `host`'s storage pool."""
        return lab_volumes(self.pool(host))

    def _write_configs(self) -> None:
        """Each vpshost's stand-in config, and the controller's (standin_config)."""
        assert self.image is not None
        for host in self.vpshosts:
            if host.name in self.pools:
                write_standin_config(self.host_config(host), self.image, self.slots_file, self.pools[host.name], self.cloud_image)
        write_standin_config(self.standin_config, self.image, self.slots_file, cloud_image=self.cloud_image, pools=dict(self.pools))

    def install_downburst(self, host: VPSHost, path: str | None = None) -> Path:
        """Install the stand-in on `host`: in its PATH dir, or at `path` in its namespace;
        and give the host its storage pool (libvirtd is started if needed)."""
        self.start_daemons()
        if host.name not in self.pools:
            name = f"{self.run_dir.name}-{host.name}"
            create_pool(name, self.run_dir)
            self.pools[host.name] = name
        self.ensure_image()
        self._write_configs()
        dest = host.bin_dir / "downburst" if path is None else host.path(path)
        return install_downburst(dest, self.host_config(host))

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
                removed = cleanup_domains(run_dir=self.run_dir)
                if removed:
                    log.info("removed lab domains %s", removed)
                cleanup_pools(run_dir=self.run_dir)
            except Exception:  # cleanup must not mask the test's own error
                log.exception("lab domain or pool cleanup failed; see `virsh list --all`, `virsh pool-list`")
        shutil.rmtree(self.run_dir, ignore_errors=True)
