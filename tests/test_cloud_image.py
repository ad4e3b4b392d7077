"""The lab's Debian cloud image (lab/cloud_image.py), booted by QEMU directly with a NoCloud seed,
then by the downburst stand-in (lab: {image: cloud}) for its failure modes.

Real cloud-init reads the seed ISO and real sshd serves the keys: these tests
check what a downburst-made VM would serve, from the host side only (loopback):
ssh-keyscan, ssh with strict host key checking, and the done signal (the seed
CD-ROM's tray opens, seen through QMP). Four VMs, at most two at once; each
takes 1.5-3 minutes to boot under software emulation. No libvirt needed but for
the stand-in's.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from lab import Lab, free_port, guest_ssh, lab_domains, served_host_keys, write_known_hosts
from lab.cloud_image import DONE_MARKER, CloudImage, QemuVM, boot_for_test, ensure_cloud_image
from lab.config import cache_dir
from lab.daemons import virsh
from lab.sshd import keygen, ssh_banner

log = logging.getLogger(__name__)

FQDN = "vpm001.front.sepia.ceph.com"
BOOT_TIMEOUT = 300
KEY_TYPES = ("ed25519", "ecdsa", "rsa")


@pytest.fixture(scope="module")
def cloud_image() -> CloudImage:
    return ensure_cloud_image()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Host key pairs to inject (by type) and the client key, made with ssh-keygen."""
    d = tmp_path_factory.mktemp("keys")
    made = {t: keygen(d / f"host_{t}", t, f"lab-host-{t}") for t in KEY_TYPES}
    made["client"] = keygen(d / "client", "ed25519", "lab-client")
    return made


def pubkey(private: Path) -> tuple[str, str]:
    ktype, blob = Path(f"{private}.pub").read_text().split()[:2]
    return ktype, blob


def user_data(keys: dict[str, Path], host_key_types: tuple[str, ...]) -> str:
    ssh_keys: dict[str, str] = {}
    for t in host_key_types:
        ssh_keys[f"{t}_private"] = keys[t].read_text()
        ssh_keys[f"{t}_public"] = Path(f"{keys[t]}.pub").read_text().strip()
    config = {
        "ssh_deletekeys": True,
        "ssh_keys": ssh_keys,
        "users": [
            {
                "name": "ubuntu",
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "ssh_authorized_keys": [Path(f"{keys['client']}.pub").read_text().strip()],
            }
        ],
    }
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False)


def meta_data(instance_id: str, sshd_keygen: bool = False) -> str:
    data: dict[str, object] = {"instance-id": instance_id, "local-hostname": FQDN}
    if sshd_keygen:
        data["lab"] = {"sshd_keygen": True}  # the image's RHEL-like switch
    return yaml.safe_dump(data)


def vm_ssh(vm: QemuVM, keys: dict[str, Path], known_hosts: Path, command: str) -> subprocess.CompletedProcess[str]:
    return guest_ssh(vm.ssh_port, keys["client"], known_hosts, command, user="ubuntu")


def boot(cloud_image: CloudImage, directory: Path, name: str, keys: dict[str, Path], types: tuple[str, ...], sshd_keygen: bool) -> QemuVM:
    vm = boot_for_test(cloud_image, directory, user_data(keys, types), meta_data(name, sshd_keygen), name=name)
    # The done signal starts unset: the tray is closed until cloud-init is done.
    assert not vm.cdrom_tray_open()
    return vm


def wait_ready(vm: QemuVM) -> dict[str, float]:
    """Seconds from QEMU's start to SSH's banner and to the done signal."""
    ssh_s = vm.wait_for_ssh(BOOT_TIMEOUT)
    done_s = vm.wait_for_cloud_init_done(max(BOOT_TIMEOUT - vm.elapsed(), 10))
    timings = {"ssh": round(ssh_s, 1), "done": round(done_s, 1)}
    log.warning("%s: SSH after %.1fs, cloud-init done signal after %.1fs", vm.name, ssh_s, done_s)
    return timings


class TestTwoAtOnce:
    """All three key types injected, and the RHEL-like switch with ed25519 only: two VMs booting together."""

    @pytest.fixture(scope="class")
    def vms(self, cloud_image: CloudImage, keys: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, QemuVM]]:
        started: dict[str, QemuVM] = {}
        try:
            started["three"] = boot(cloud_image, tmp_path_factory.mktemp("vm-three"), "vpm001", keys, KEY_TYPES, False)
            started["rhel"] = boot(cloud_image, tmp_path_factory.mktemp("vm-rhel"), "vpm002", keys, ("ed25519",), True)
            # Wait for both at once, so each one's timings are its own.
            with ThreadPoolExecutor(max_workers=2) as pool:
                for future in [pool.submit(wait_ready, vm) for vm in started.values()]:
                    future.result()
            yield started
        finally:
            for vm in started.values():
                vm.stop()

    def test_injected_keys_served_exactly(self, vms: dict[str, QemuVM], keys: dict[str, Path], tmp_path: Path) -> None:
        vm = vms["three"]
        injected = {pubkey(keys[t]) for t in KEY_TYPES}
        assert served_host_keys(vm.ssh_port) == injected

        # The done signal: the tray opened (waited for by the fixture) and the console says why.
        assert vm.cdrom_tray_open()
        assert vm.done_marker() == ("done", "yes"), vm.console()[-3000:]

        known_hosts = write_known_hosts(tmp_path / "known_hosts", vm.ssh_port, injected)
        r = vm_ssh(vm, keys, known_hosts, "hostname -f")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == FQDN

        r = vm_ssh(vm, keys, known_hosts, "cloud-init status --wait --long")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "status: done" in r.stdout
        assert "DataSourceNoCloud" in r.stdout and "/dev/sr0" in r.stdout, r.stdout

        # Passwordless sudo from the users: entry; cloud-init's own account of errors.
        r = vm_ssh(vm, keys, known_hosts, "sudo -n cat /run/cloud-init/result.json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["v1"]["errors"] == []

        r = vm_ssh(vm, keys, known_hosts, "sudo -n cat /var/log/cloud-init.log")
        assert r.returncode == 0, r.stderr
        assert "Running module ssh" in r.stdout
        # The RHEL-like switch is off without lab: {sshd_keygen: true} in meta-data.
        assert vm_ssh(vm, keys, known_hosts, "sudo -n systemctl is-active lab-sshd-keygen.service").stdout.strip() == "inactive"

    def test_rhel_like_switch_adds_key_types(self, vms: dict[str, QemuVM], keys: dict[str, Path]) -> None:
        vm = vms["rhel"]
        served = served_host_keys(vm.ssh_port)
        assert pubkey(keys["ed25519"]) in served
        # ssh-keygen -A makes whichever of rsa, ecdsa (nistp256) and ed25519 is missing.
        assert {ktype for ktype, _blob in served} == {"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256"}, served
        # Only the injected ed25519 key; the others were generated in the VM.
        assert {k for k in served if k[0] == "ssh-ed25519"} == {pubkey(keys["ed25519"])}


# How long, after the VM in failure mode "ssh" ejected, its twin in mode "boot" (started with it) is watched.
NEVER_UP_WATCH = 60


def test_standin_failure_modes() -> None:
    """The stand-in's failure modes on this image (lab: {image: cloud}), two VMs started together.
    "ssh": the guest comes up and ejects the CD-ROM, sshd never runs: --wait returns, no SSH.
    "boot": the guest never comes up: long after its twin ejected, no eject, no SSH, no done line."""
    with Lab() as lab:
        (host,) = lab.start_vpshosts(1)
        lab.ensure_cloud_image()
        ports = {"ssh": free_port(), "boot": free_port()}
        names = {"ssh": "vpm311", "boot": "vpm312"}
        for mode, name in names.items():
            host.write_file(f"/home/ubuntu/{name}.yaml", yaml.safe_dump({"lab": {"image": "cloud", "fail": mode, "ssh_port": ports[mode]}}))
        never_up = host.run(["downburst", "create", "--nokey", "--meta-data=/home/ubuntu/vpm312.yaml", "vpm312"])
        assert never_up.returncode == 0, never_up.stderr
        started = time.monotonic()
        create_and_wait = ["downburst", "create", "--wait", "--nokey", "--meta-data=/home/ubuntu/vpm311.yaml", "vpm311"]
        up = host.run(create_and_wait, timeout=BOOT_TIMEOUT + 60)
        assert up.returncode == 0, up.stderr
        log.warning("failure mode ssh: create --wait returned after %.1fs", time.monotonic() - started)
        # (Ejected by --wait's user-data part, in cloud-init's final stage: the image's own done line may come later.)
        assert "tray='open'" in virsh("dumpxml", "vpm311").stdout
        assert ssh_banner("127.0.0.1", ports["ssh"]) is None

        deadline = time.monotonic() + NEVER_UP_WATCH
        while time.monotonic() < deadline:
            assert "tray='open'" not in virsh("dumpxml", "vpm312").stdout
            assert ssh_banner("127.0.0.1", ports["boot"]) is None
            time.sleep(5)
        assert not DONE_MARKER.search((cache_dir() / "vms" / "vpm312" / "console.log").read_text(errors="replace"))

        for name in names.values():
            assert host.run(["downburst", "destroy", name]).returncode == 0
        assert not set(lab_domains()) & set(names.values())
        assert lab.volumes(host) == []
