"""Smoke test of the local lab, end to end through real SSH, libvirt and QEMU.

Two vpshosts (real sshd on 127.0.1.x), the downburst stand-in on one's PATH and
under /home on the other, busybox guests booted with `create --wait` and checked
with the real ssh-keyscan; what the stand-in does as downburst does: volumes in
the vpshost's pool, the seed ISO, "exists" only for an inactive domain, --wait
for the CD-ROM's eject, destroy by downburst's volume name rules.  Guest boots
are ~5-10 s each under software emulation.  VMs are named vpm3xx (and vpm, vpm-2,
vpm-3), names no other test uses, so a concurrent run of another (test_provision's
vpm001-vpm004, Molecule's vpm101-vpm102) does not remove them.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from lab import Lab, VPSHost, free_port, guest_ssh, keyscan, lab_domains, write_known_hosts
from lab.daemons import virsh

HOME_DOWNBURST = "/home/ubuntu/src/downburst/virtualenv/bin/downburst"
ERROR_LINE = re.compile(r"^ERROR:downburst\.cli:", re.M)


@pytest.fixture(scope="module")
def local_lab():
    with Lab() as lab_:
        lab_.start_vpshosts(1)
        lab_.start_vpshosts(1, with_downburst=False)
        yield lab_


@pytest.fixture(scope="module")
def host1(local_lab: Lab) -> VPSHost:
    return local_lab.vpshosts[0]


@pytest.fixture(scope="module")
def host2(local_lab: Lab) -> VPSHost:
    return local_lab.vpshosts[1]


def downburst(
    host: VPSHost, *args: str, env: dict[str, str] | None = None, exe: str = "downburst", timeout: float = 360
) -> subprocess.CompletedProcess[str]:
    env = {"DOWNBURST_STANDIN_WAIT": "120", **(env or {})}  # fail faster than downburst's 300 s
    prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in env.items())
    return host.run(prefix + shlex.join([exe, *args]), timeout=timeout)


def write_meta(host: VPSHost, name: str, data: dict) -> str:
    path = f"/home/ubuntu/{name}"
    host.write_file(path, yaml.safe_dump(data))
    return path


def domain_names() -> list[str]:
    return virsh("list", "--all", "--name").stdout.split()


def pool_file(local_lab: Lab, host: VPSHost, volume: str) -> Path:
    return Path(virsh("vol-path", "--pool", local_lab.pool(host), volume).stdout.strip())


def tray_open(name: str) -> bool:
    """The seed CD-ROM's tray, as libvirt's live domain XML shows it."""
    return "tray='open'" in virsh("dumpxml", name).stdout


def test_vpshosts(local_lab: Lab, host1: VPSHost, host2: VPSHost) -> None:
    assert (host1.address, host2.address) == ("127.0.1.1", "127.0.1.2")
    assert host1.run("downburst --help").returncode == 0
    assert host2.run("command -v downburst").returncode != 0  # discovery tests need this
    # /home is private per vpshost.
    local_lab.install_downburst(host2, HOME_DOWNBURST)
    assert host2.run(f"test -x {HOME_DOWNBURST}").returncode == 0
    assert host1.run(f"test -e {HOME_DOWNBURST}").returncode != 0
    assert not Path(HOME_DOWNBURST).exists()
    # Strict host key checking works against the recorded host keys only.
    vars_ = host1.inventory_vars()
    assert "StrictHostKeyChecking=yes" in vars_["ansible_ssh_common_args"]
    # Port 22 when free there, else another ([addr]:port), e.g. while another run's vpshost1 is up.
    assert Path(vars_["lab_known_hosts_file"]).read_text().startswith(("127.0.1.1 ", "[127.0.1.1]:"))
    wrong = host2.ssh_command("true")
    wrong[wrong.index(f"root@{host2.address}")] = f"root@{host1.address}"
    assert subprocess.run(wrong, capture_output=True, timeout=60, check=False).returncode == 255


def test_create_destroy_fresh_host_keys(local_lab: Lab, host1: VPSHost, tmp_path: Path) -> None:
    port = free_port()
    meta = write_meta(
        host1,
        "vpm301.meta.yaml",
        {
            "public-keys": [local_lab.client_pubkey.read_text().strip()],
            "downburst": {"ram": "3.8G", "disk-size": "100G", "cpus": 1},
            "lab": {"ssh_port": port},
        },
    )
    user = "/home/ubuntu/vpm301.user.yaml"
    host1.write_file(user, "#cloud-config\npackages: [python3]\n")
    create = ["-c", "qemu:///system", "create", "--wait", "--nokey", f"--meta-data={meta}", f"--user-data={user}", "vpm301"]

    r = downburst(host1, *create)
    assert r.returncode == 0, r.stderr
    assert "vpm301" in domain_names()
    first = keyscan(port)
    assert {k for k, _ in first} == {"ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"}
    # Root login with the meta-data public key, host key pinned from the scan.
    known = write_known_hosts(tmp_path / "known_hosts", port, first)
    login = guest_ssh(port, local_lab.client_key, known, "hostname; id -u")
    assert login.stdout.split() == ["vpm301", "0"], login.stderr

    # A create for a running VM goes on, as downburst's (its check is for defined, inactive
    # domains only): libvirt refuses the system disk, which exists; the VM is untouched.
    again = downburst(host1, *create)
    assert again.returncode == 1, again.stderr
    assert again.stderr.rstrip().endswith("libvirt.libvirtError: storage volume 'vpm301.img' exists already"), again.stderr
    assert virsh("domstate", "vpm301").stdout.strip() == "running" and keyscan(port) == first
    # A defined, stopped one is "exists", in downburst's words.
    assert virsh("destroy", "vpm301").returncode == 0
    stopped = downburst(host1, *create)
    assert stopped.returncode == 1 and ERROR_LINE.search(stopped.stderr), stopped.stderr
    assert "Virtual machine with this name exists already: vpm301" in stopped.stderr

    assert downburst(host1, "destroy", "vpm301").returncode == 0
    assert "vpm301" not in domain_names()

    r = downburst(host1, *create)
    assert r.returncode == 0, r.stderr
    second = keyscan(port)
    assert second and not first & second  # every boot brings new host keys
    assert downburst(host1, "-c", "qemu:///system", "destroy", "vpm301").returncode == 0
    assert "vpm301" not in domain_names()


def _keypair(tmp_path: Path, ktype: str, pem: bool = False) -> tuple[str, str]:
    key = tmp_path / f"injected_{ktype}"
    cmd = ["ssh-keygen", "-q", "-t", ktype, "-N", "", "-f", str(key)] + (["-m", "PEM"] if pem else [])
    subprocess.run(cmd, check=True, timeout=60)
    return key.read_text(), Path(f"{key}.pub").read_text().strip()


def test_injected_ssh_keys(local_lab: Lab, host2: VPSHost, tmp_path: Path) -> None:
    ssh_keys: dict[str, str] = {}
    for ktype, pem in (("ed25519", False), ("ecdsa", False), ("rsa", True)):
        ssh_keys[f"{ktype}_private"], ssh_keys[f"{ktype}_public"] = _keypair(tmp_path, ktype, pem)
    injected = {tuple(ssh_keys[f"{k}_public"].split()[:2]) for k in ("ed25519", "ecdsa", "rsa")}
    user_text = "#cloud-config\n" + yaml.safe_dump({"ssh_keys": ssh_keys})
    local_file = tmp_path / "user.yaml"
    local_file.write_text(user_text)
    schema = subprocess.run(["cloud-init", "schema", "--config-file", str(local_file)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert schema.returncode == 0, schema.stdout + schema.stderr

    port = free_port()
    local_lab.set_slots({"vpm302": port})  # no lab.ssh_port: the slot map decides
    user = "/home/ubuntu/vpm302.user.yaml"
    host2.write_file(user, user_text, 0o600)
    meta = write_meta(host2, "vpm302.meta.yaml", {"public-keys": {"lab": local_lab.client_pubkey.read_text().strip()}})
    create = ["create", "--wait", "--nokey", "--meta-data", meta, "--user-data", user, "vpm302"]
    r = downburst(host2, *create, exe=HOME_DOWNBURST)
    assert r.returncode == 0, r.stderr
    assert keyscan(port) == injected
    assert downburst(host2, "destroy", "vpm302", exe=HOME_DOWNBURST).returncode == 0

    # An image that ignores cloud-init's ssh_keys serves keys of its own.
    ignoring = write_meta(host2, "vpm302.ignore.yaml", {"lab": {"ignore_ssh_keys": True}})
    r = downburst(host2, *create[:-1], "--meta-data", ignoring, "vpm302", exe=HOME_DOWNBURST)
    assert r.returncode == 0, r.stderr
    served = keyscan(port)
    assert served and not served & injected
    assert downburst(host2, "destroy", "vpm302", exe=HOME_DOWNBURST).returncode == 0


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["create", "--nokey", "vpm303"], {"DOWNBURST_STANDIN_FAIL": "create"}, "Injected failure"),
        (["create", "--nokey", "--meta-data", "/home/ubuntu/fail.yaml", "vpm303"], {}, "Injected failure"),
        (["create", "vpm303"], {}, "teuthology-ubuntu.pub"),
        (["create", "--nokey", "--meta-data", "/home/ubuntu/cpus.yaml", "vpm303"], {}, "cpus"),
        (["create", "--nokey", "--meta-data", "/home/ubuntu/ram.yaml", "vpm303"], {}, "ram"),
    ],
)
def test_create_failures(local_lab: Lab, host1: VPSHost, args: list[str], env: dict[str, str], needle: str) -> None:
    write_meta(host1, "fail.yaml", {"lab": {"fail": "create"}})
    write_meta(host1, "cpus.yaml", {"downburst": {"cpus": "1"}})
    write_meta(host1, "ram.yaml", {"downburst": {"ram": "lots"}})
    r = downburst(host1, *args, env=env)
    assert r.returncode == 1
    assert ERROR_LINE.search(r.stderr) and needle in r.stderr, r.stderr
    assert "vpm303" not in domain_names() and local_lab.volumes(host1) == []


def test_bad_arguments_and_missing_destroy(host1: VPSHost) -> None:
    assert downburst(host1, "create", "--nokey").returncode == 2
    assert downburst(host1, "create", "--bogus", "vpm304").returncode == 2
    assert downburst(host1, "destroy", "no-such-vm").returncode == 0
    r = downburst(host1, "-v", "-l", "/home/ubuntu/downburst.log", "destroy", "no-such-vm")
    assert r.returncode == 0
    assert "DEBUG:downburst" in host1.path("/home/ubuntu/downburst.log").read_text()


def test_boot_and_destroy_failures(local_lab: Lab, host1: VPSHost) -> None:
    port = free_port()
    meta = write_meta(host1, "vpm305.meta.yaml", {"lab": {"ssh_port": port}})
    r = downburst(
        host1,
        "create",
        "--wait",
        "--nokey",
        "--meta-data",
        meta,
        "vpm305",
        env={"DOWNBURST_STANDIN_FAIL": "boot", "DOWNBURST_STANDIN_WAIT": "8"},
    )
    assert r.returncode == 1 and ERROR_LINE.search(r.stderr), r.stderr
    assert "vpm305 never came up (cd tray open check failed after 8s)" in r.stderr
    assert virsh("domstate", "vpm305").stdout.strip() == "running"  # left running, like downburst
    assert lab_domains()["vpm305"]["ssh-port"] == str(port)
    assert not keyscan(port, timeout=3) and not tray_open("vpm305")

    r = downburst(host1, "destroy", "vpm305", env={"DOWNBURST_STANDIN_FAIL": "destroy"})
    assert r.returncode == 1 and ERROR_LINE.search(r.stderr)
    assert "vpm305" in domain_names()
    assert downburst(host1, "destroy", "vpm305").returncode == 0
    assert "vpm305" not in domain_names()


def test_wait_is_for_the_cdrom_eject_not_ssh(local_lab: Lab, host1: VPSHost) -> None:
    """--wait returns once the guest ejected its seed CD-ROM, SSH or not (failure mode "ssh")."""
    port = free_port()
    meta = write_meta(host1, "vpm306.meta.yaml", {"lab": {"ssh_port": port, "fail": "ssh"}})
    r = downburst(host1, "create", "--wait", "--nokey", "--meta-data", meta, "vpm306")
    assert r.returncode == 0, r.stderr
    assert tray_open("vpm306")
    assert not keyscan(port, timeout=3)
    assert downburst(host1, "destroy", "vpm306").returncode == 0


def test_volumes_and_seed_iso(local_lab: Lab, host1: VPSHost) -> None:
    """The volumes downburst makes, in the vpshost's pool: the system disk, the seed ISO
    (meta-data and user-data as downburst writes them) and the additional disks; destroy deletes them."""
    pubkey = local_lab.client_pubkey.read_text().strip()
    meta_data = {"public-keys": [pubkey], "downburst": {"disk-size": "20G", "additional-disks": 2, "additional-disks-size": "5G"}}
    meta = write_meta(host1, "vpm307.meta.yaml", meta_data)
    user_text = "#cloud-config\npackages: [python3]\n"
    host1.write_file("/home/ubuntu/vpm307.user.yaml", user_text)
    r = downburst(host1, "create", "--wait", "--nokey", "--meta-data", meta, "--user-data", "/home/ubuntu/vpm307.user.yaml", "vpm307")
    assert r.returncode == 0, r.stderr
    assert local_lab.volumes(host1) == ["cloud-init.vpm307.iso", "vpm307-2.img", "vpm307-3.img", "vpm307.img"]
    assert local_lab.volumes(local_lab.vpshosts[1]) == []  # one pool per vpshost

    def size(volume: str) -> tuple[str, int]:
        info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(pool_file(local_lab, host1, volume))],
                                         capture_output=True, text=True, check=True, timeout=60).stdout)
        return info["format"], info["virtual-size"]

    assert size("vpm307.img") == ("qcow2", 20 * 2**30)
    assert size("vpm307-2.img") == size("vpm307-3.img") == ("raw", 5 * 2**30)
    xml = virsh("dumpxml", "vpm307").stdout
    targets = re.findall(r"<source file='[^']*/([^/']+)'.*?<target dev='(\w+)' bus='(\w+)'", xml, re.S)
    assert targets == [("vpm307.img", "vda", "virtio"), ("vpm307-2.img", "vdb", "virtio"), ("vpm307-3.img", "vdc", "virtio"),
                       ("cloud-init.vpm307.iso", "hdc", "ide")]
    assert tray_open("vpm307")  # --wait returned: the guest has ejected it

    iso = str(pool_file(local_lab, host1, "cloud-init.vpm307.iso"))

    def iso_file(name: str) -> str:
        return subprocess.run(["isoinfo", "-R", "-i", iso, "-x", f"/{name}"], capture_output=True, text=True, check=True, timeout=60).stdout

    volume_id = subprocess.run(["isoinfo", "-d", "-i", iso], capture_output=True, text=True, check=True, timeout=60).stdout
    assert "Volume id: cidata" in volume_id
    # meta-data: downburst's own merged with the file; user-data: a cloud-config-archive
    # with the file as one part, then --wait's part that ejects the CD-ROM.
    assert yaml.safe_load(iso_file("meta-data")) == {"instance-id": "vpm307", "local-hostname": "vpm307", **meta_data}
    user_data = iso_file("user-data")
    assert user_data.startswith("#cloud-config-archive\n")
    parts = yaml.safe_load(user_data)
    assert len(parts) == 2 and parts[0] == user_text and "exec eject /dev/cdrom" in parts[1]

    assert downburst(host1, "destroy", "vpm307").returncode == 0
    assert local_lab.volumes(host1) == []


def test_destroy_deletes_volumes_by_downburst_rules(local_lab: Lab, host1: VPSHost, host2: VPSHost) -> None:
    """downburst's destroy deletes every volume named like the VM's, so on one vpshost the
    VMs vpm and vpm-2 collide: vpm's additional disk would be vpm-2.img, and destroying vpm
    deletes vpm-2's disks (not its seed ISO). Other vpshosts' pools are not touched."""
    meta = write_meta(host1, "one-disk.yaml", {"downburst": {"additional-disks": 1}})
    assert downburst(host1, "create", "--nokey", "--meta-data", meta, "vpm-2").returncode == 0
    local_lab.install_downburst(host2, HOME_DOWNBURST)
    assert downburst(host2, "create", "--nokey", "vpm-3", exe=HOME_DOWNBURST).returncode == 0
    assert local_lab.volumes(host1) == ["cloud-init.vpm-2.iso", "vpm-2-2.img", "vpm-2.img"]

    # vpm with an additional disk: that disk's name is taken by vpm-2's system disk. Like
    # downburst, the create fails there and leaves the volumes it made before.
    r = downburst(host1, "create", "--nokey", "--meta-data", meta, "vpm")
    assert r.returncode == 1 and "libvirt.libvirtError: storage volume 'vpm-2.img' exists already" in r.stderr, r.stderr
    assert "vpm" not in domain_names()
    assert local_lab.volumes(host1) == ["cloud-init.vpm-2.iso", "cloud-init.vpm.iso", "vpm-2-2.img", "vpm-2.img", "vpm.img"]

    r = downburst(host1, "-v", "destroy", "vpm")
    assert r.returncode == 0 and "No virtual machine found" in r.stderr, r.stderr
    assert local_lab.volumes(host1) == ["cloud-init.vpm-2.iso"]  # vpm-2's disks went with vpm's
    assert virsh("domstate", "vpm-2").stdout.strip() == "running"
    assert local_lab.volumes(host2) == ["cloud-init.vpm-3.iso", "vpm-3.img"]

    assert downburst(host1, "destroy", "vpm-2").returncode == 0
    assert downburst(host2, "destroy", "vpm-3", exe=HOME_DOWNBURST).returncode == 0
    assert local_lab.volumes(host1) == local_lab.volumes(host2) == []
    assert not {"vpm-2", "vpm-3"} & set(domain_names())
