"""VM slots on the local lab, set up as the tests that lock and provision them need:
the lab's vpshosts with a loopback port per slot, and a fresh lock database holding the slots."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from lab import Lab as VMLab
from lab import cleanup_domains, free_port

DOMAIN = ".front.sepia.ceph.com"


def start_vm_lab(
    tmp_path_factory: Any, slots: dict[str, str], label: str, cloud_image: bool = False
) -> Iterator[tuple[VMLab, dict[str, int], Path]]:
    """The lab with one vpshost per vpshost that ``slots`` ({short name: vpshost}) names: (lab, ports, inventory)."""
    with VMLab() as lab:
        lab.start_vpshosts(len(set(slots.values())))
        if cloud_image:
            lab.ensure_cloud_image()
        ports = {name: free_port() for name in slots}
        lab.set_slots(ports)
        inventory = tmp_path_factory.mktemp(label) / "vpshosts.yml"
        inventory.write_text(yaml.safe_dump({"all": {"hosts": lab.inventory()}}))
        yield lab, ports, inventory


def slots_database(lab: VMLab, ports: dict[str, int], slots: dict[str, str], tmp_path: Path) -> Iterator[tuple[Any, str, Path]]:
    """A fresh lock database with the slots, and the extra vars file authorizing the lab's client key:
    (handle, db URL, extra vars file). Afterwards the slots' domains are gone."""
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

    db = f"sqlite:///{tmp_path / 'lab.db'}"
    handle = Lab(db)
    for short, vpshost in slots.items():
        handle.set_node(short + DOMAIN, {"machine_type": "vps", "arch": "x86_64", "vpshost": vpshost,
                                         "ssh_host": "127.0.0.1", "ssh_port": ports[short]}, actor="admin@lab")
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"downburst_authorized_keys": [lab.client_pubkey.read_text().strip()]}))
    yield handle, db, extra
    cleanup_domains(names=list(slots))
    handle.close()
