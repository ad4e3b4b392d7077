"""The VM half of `make demo`, on the local lab (tests/lab): two real sshd
vpshosts on loopback, libvirt with QEMU, the downburst stand-in. Locks two vps
slots (fresh VMs with injected host keys), prints the targets, runs a command
on the VMs through the dynamic inventory with strict host key checking, and
unlocks them (the VMs are destroyed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from lab import Lab as VMLab
from lab import cleanup_domains, free_port
from support.ansible_run import ansible_env, collections_root

sys.path.insert(0, str(collections_root()))

from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

SLOTS = {"vpm001": "vpshost1", "vpm002": "vpshost2", "vpm003": "vpshost1", "vpm004": "vpshost2"}


def step(title: str, *argv: str | Path, env: dict[str, str]) -> None:
    print(f"\n=== {title}\n$ {' '.join(str(a) for a in argv)}", flush=True)
    subprocess.run([str(a) for a in argv], env=ansible_env(**env), cwd=REPO, check=True)


def main() -> None:
    work = REPO / ".cache" / "demo"
    work.mkdir(parents=True, exist_ok=True)
    db = os.environ.get("TEUTHOLOGY_LAB_DB") or f"sqlite:///{work / 'lab.db'}"
    with VMLab() as lab:
        print("=== Start the local lab: 2 vpshosts (real sshd on 127.0.1.1, 127.0.1.2), libvirtd, the guest image", flush=True)
        lab.start_vpshosts(2)
        ports = {name: free_port() for name in SLOTS}
        lab.set_slots(ports)
        inventory = work / "vpshosts.yml"
        inventory.write_text(yaml.safe_dump({"all": {"hosts": lab.inventory()}}))
        handle = Lab(db)
        for short, vpshost in SLOTS.items():
            handle.set_node(f"{short}.front.sepia.ceph.com", {"machine_type": "vps", "arch": "x86_64", "vpshost": vpshost,
                                                              "ssh_host": "127.0.0.1", "ssh_port": ports[short]}, actor="demo@lab")
        handle.close()
        extra = work / "extra.json"
        extra.write_text(json.dumps({"downburst_authorized_keys": [lab.client_pubkey.read_text().strip()]}))
        locks = work / "locks.yml"
        locks.write_text("plugin: teuthology.lab.locks\nuser: root\n")
        env = {"TEUTHOLOGY_LAB_DB": db, "TEUTHOLOGY_LAB_OWNER": "demo@lab"}
        bin_dir = Path(sys.executable).parent
        try:
            step("Lock 2 vps slots: fresh VMs, fresh host keys, targets printed", bin_dir / "ansible-playbook",
                 "playbooks/lock.yml", "-i", inventory, "-e", f"@{extra}", "-e", "count=2", "-e", "machine_type=vps",
                 "-e", "os_type=debian", "-e", "os_version=12", "-e", "description=demo",
                 "-e", f"targets_file={work / 'targets.yml'}", env=env)
            step("The inventory: the locked VMs with their keys pinned", bin_dir / "ansible-inventory", "-i", locks, "--graph",
                 env=env)
            step("A command on each VM, strict host key checking against the recorded keys (global checking off, as AWX)",
                 bin_dir / "ansible", "all", "-i", locks, "-m", "raw", "-a", "echo hello from $(hostname); uname -r",
                 env={**env, "ANSIBLE_PRIVATE_KEY_FILE": str(lab.client_key), "ANSIBLE_HOST_KEY_CHECKING": "False"})
            step("Unlock: the VMs are destroyed, the slots freed", bin_dir / "ansible-playbook", "playbooks/unlock.yml",
                 "-i", inventory, "-e", "all=true", env=env)
            step("Summary", bin_dir / "ansible-playbook", "playbooks/summary.yml", env=env)
        finally:
            cleanup_domains(names=list(SLOTS))


if __name__ == "__main__":
    main()
