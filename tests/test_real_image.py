"""Provisioning on the real image: lock.yml / unlock.yml through the collection as it is,
with the downburst stand-in booting the lab's Debian cloud image (meta-data
``lab: {image: cloud}``, given as ``downburst_extra_meta_data``): the seed ISO is a
volume of the vpshost's pool as downburst makes it, real cloud-init reads it, real
OpenSSH serves the keys, and --wait returns when the image ejects the CD-ROM.

Everything is checked from outside the collection too: ssh-keyscan one type at a
time with retries (lab.served_host_keys), ssh as ubuntu@ with strict host key
checking against exactly the scanned keys, the storage pools' volumes, the domains.

Two vpshosts, a slot on each; at most two VMs at once (each takes 1.5-3 minutes to
boot under software emulation), boot timeouts of 300 s. The slots are named vpm4xx,
names no other test uses: a concurrent run of another (test_provision's vpm001-vpm004,
Molecule's vpm101-vpm102) does not remove them.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from test_provision import OWNER, recorded

from lab import Lab as VMLab
from lab import guest_ssh, lab_domains, served_host_keys, write_known_hosts
from support.ansible_run import BIN, REPO, ansible_env, run_playbook
from support.vm_slots import DOMAIN, slots_database, start_vm_lab

SLOTS = {"vpm401": "vpshost1", "vpm402": "vpshost2"}
CLOUD = {"lab": {"image": "cloud"}}
# Two cloud-image VMs at once take up to ~3 minutes to boot on a loaded 2-core machine; then the role's scans.
PLAYBOOK_TIMEOUT = 900
ALL_TYPES = {"ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"}


@pytest.fixture(scope="module")
def cloud_lab(tmp_path_factory):
    yield from start_vm_lab(tmp_path_factory, SLOTS, "real-image", cloud_image=True)


@pytest.fixture
def slots(cloud_lab, tmp_path):
    """A fresh lock database with the two VM slots; every test leaves no domain and no volume behind."""
    yield from slots_database(*cloud_lab[:2], SLOTS, tmp_path)


def playbook(name: str, db: str, extra: Path, inventory: Path, **extra_vars):
    """ansible-playbook playbooks/NAME with these extra vars (JSON, so lists and mappings stay typed)."""
    pairs = [a for key, value in extra_vars.items() for a in ("-e", json.dumps({key: value}))]
    return run_playbook(REPO / "playbooks" / name, "-i", str(inventory), "-e", f"@{extra}", *pairs,
                        env={"TEUTHOLOGY_LAB_DB": db, "TEUTHOLOGY_LAB_OWNER": OWNER}, timeout=PLAYBOOK_TIMEOUT)


def vpshost(lab: VMLab, short: str):
    return next(host for host in lab.vpshosts if host.name == SLOTS[short])


def served(port: int) -> set[str]:
    """The host keys a VM serves, as ``TYPE BASE64`` lines, scanned one type at a time."""
    return {f"{key_type} {blob}" for key_type, blob in served_host_keys(port)}


def key_events(handle, short: str) -> list[set[str]]:
    """The host keys recorded for a node, each time they were recorded, oldest first."""
    return [set(e["details"]["new"].splitlines()) for e in handle.history([short + DOMAIN]) if e["action"] == "key"]


def as_ubuntu(lab: VMLab, port: int, known_hosts: Path, command: str) -> subprocess.CompletedProcess[str]:
    return guest_ssh(port, lab.client_key, known_hosts, command, user="ubuntu")


def assert_gone(lab: VMLab, shorts: list[str]) -> None:
    """No domain of these VMs, and nothing left in their vpshosts' pools (overlay, disks, seed ISO)."""
    assert not set(lab_domains()) & set(shorts)
    for short in shorts:
        assert lab.volumes(vpshost(lab, short)) == [], short


def test_inject_two_vms(cloud_lab, slots, tmp_path):
    """Two VMs on two vpshosts in inject mode: each serves exactly the three keys injected and
    recorded before boot; cloud-init consumed downburst's seed; ubuntu@FQDN over the pinned inventory."""
    lab, ports, inventory = cloud_lab
    handle, db, extra = slots
    run = playbook("lock.yml", db, extra, inventory, count=2, machine_type="vps", os_type="ubuntu", os_version="22.04",
                   description="real-image", downburst_host_keys="inject", downburst_extra_meta_data=CLOUD)
    assert run.returncode == 0, run.output
    assert set(lab_domains()) & set(SLOTS) == set(SLOTS)
    for short, port in ports.items():
        assert lab.volumes(vpshost(lab, short)) == sorted([f"cloud-init.{short}.iso", f"{short}.img",
                                                           *(f"{short}-{n}.img" for n in range(2, 6))])
        keys = served(port)
        # Recorded once, before boot (the injected keys), and not again: the VM serves exactly them.
        assert key_events(handle, short) == [keys], short
        assert {key.split()[0] for key in keys} == ALL_TYPES
        assert recorded(handle, short) == keys

        known_hosts = write_known_hosts(tmp_path / f"{short}.known_hosts", port, {tuple(k.split()) for k in keys})
        fqdn = as_ubuntu(lab, port, known_hosts, "hostname -f")
        assert (fqdn.returncode, fqdn.stdout.strip()) == (0, short + DOMAIN), fqdn.stderr
        # Real cloud-init read downburst's seed: the NoCloud CD-ROM, its cloud-config-archive user-data
        # (the collection's #cloud-config part, then --wait's eject script), and its ssh module ran.
        status = as_ubuntu(lab, port, known_hosts, "cloud-init status --long")
        assert "status: done" in status.stdout and "DataSourceNoCloud [seed=/dev/sr0]" in status.stdout, status.stdout
        user_data = as_ubuntu(lab, port, known_hosts, "sudo -n cat /var/lib/cloud/instance/user-data.txt")
        assert user_data.stdout.startswith("#cloud-config-archive\n"), user_data.stdout[:200] + user_data.stderr
        assert "exec eject /dev/cdrom" in user_data.stdout
        log = as_ubuntu(lab, port, known_hosts, "sudo -n cat /var/log/cloud-init.log")
        assert log.returncode == 0 and "Running module ssh" in log.stdout, log.stderr
        result = as_ubuntu(lab, port, known_hosts, "sudo -n cat /run/cloud-init/result.json")
        assert json.loads(result.stdout)["v1"]["errors"] == [], result.stdout

    # A command on each VM through the inventory plugin, host keys pinned from the database, strict checking.
    source = tmp_path / "locks.yml"
    source.write_text("plugin: teuthology.lab.locks\n")  # user: ubuntu, as teuthology's targets
    ran = subprocess.run(
        [BIN / "ansible", "all", "-i", source, "-m", "ansible.builtin.command", "-a", "hostname -f"],
        env=ansible_env(TEUTHOLOGY_LAB_DB=db, TEUTHOLOGY_LAB_OWNER=OWNER, ANSIBLE_PRIVATE_KEY_FILE=str(lab.client_key)),
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    for short in SLOTS:
        assert f"{short}{DOMAIN} | CHANGED | rc=0 >>\n{short}{DOMAIN}\n" in ran.stdout, ran.stdout

    run = playbook("unlock.yml", db, extra, inventory, all="true")
    assert run.returncode == 0, run.output
    assert handle.query(locked=True) == []
    assert_gone(lab, list(SLOTS))


def test_inject_ed25519_only_and_an_image_that_makes_other_keys(cloud_lab, slots):
    """downburst_host_key_types [ed25519]: a VM serves exactly that key and the node records exactly it.
    An image that makes the missing types at boot (the RHEL-like switch) serves keys nobody injected:
    the role refuses it, destroys it and unlocks the slot (downburst_on_failure: unlock)."""
    lab, ports, inventory = cloud_lab
    handle, db, extra = slots
    rhel_like = "{{ {'lab': {'image': 'cloud', 'sshd_keygen': true}} if inventory_hostname is match('vpm402') else " \
                "{'lab': {'image': 'cloud'}} }}"
    run = playbook("lock.yml", db, extra, inventory, names=f"vpm401{DOMAIN},vpm402{DOMAIN}",
                   downburst_host_keys="inject", downburst_host_key_types=["ed25519"], downburst_extra_meta_data=rhel_like)
    assert run.returncode != 0, run.output  # vpm402 failed

    keys = served(ports["vpm401"])
    assert [key.split()[0] for key in keys] == ["ssh-ed25519"]
    assert key_events(handle, "vpm401") == [keys] and recorded(handle, "vpm401") == keys

    message = f"provisioning vpm402{DOMAIN} on vpshost vpshost2 failed at step"
    assert message in run.output, run.output
    # The keys nobody injected, as the role names them: those ssh-keygen -A made.
    refused = re.search(r"serves host keys that were not injected: ([^\n]*)", run.output)
    assert refused, run.output
    assert sorted(key.split()[0] for key in refused.group(1).split("; ")) == ["ecdsa-sha2-nistp256", "ssh-rsa"], refused.group(1)
    note = next(e["details"]["note"] for e in handle.history([f"vpm402{DOMAIN}"]) if e["action"] == "note")
    assert message in note and note.endswith("slot unlocked"), note
    node = handle.query(names=[f"vpm402{DOMAIN}"])[0]
    assert (node["locked"], node["up"]) == (False, True)
    assert_gone(lab, ["vpm402"])

    run = playbook("unlock.yml", db, extra, inventory, names=f"vpm401{DOMAIN}")
    assert run.returncode == 0, run.output
    assert_gone(lab, ["vpm401"])


def test_scan_records_what_the_image_serves(cloud_lab, slots):
    """scan mode: no keys injected, cloud-init makes the VM's own; the node records exactly what it serves."""
    lab, ports, inventory = cloud_lab
    handle, db, extra = slots
    run = playbook("lock.yml", db, extra, inventory, names=f"vpm401{DOMAIN}", downburst_host_keys="scan",
                   downburst_extra_meta_data=CLOUD)
    assert run.returncode == 0, run.output
    keys = served(ports["vpm401"])
    assert {key.split()[0] for key in keys} == ALL_TYPES  # cloud-init's ssh_genkeytypes
    assert recorded(handle, "vpm401") == keys and key_events(handle, "vpm401") == [keys]

    run = playbook("unlock.yml", db, extra, inventory, names=f"vpm401{DOMAIN}")
    assert run.returncode == 0, run.output
    assert_gone(lab, ["vpm401"])
