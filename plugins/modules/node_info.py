#!/usr/bin/python
# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: node_info
short_description: Query the lab's nodes and their lock state
description:
  - Lists nodes matching every filter given, and per machine type counts of total, up, locked and free nodes (the
    table C(teuthology-lock --summary) prints).
  - Never changes anything, and never creates a database; a database that does not exist (a typo in a SQLite path,
    a PostgreSQL database without the lab's tables) is an error naming it.
version_added: 0.1.0
author: teuthology.lab contributors (@teuthology-lab)
extends_documentation_fragment:
  - teuthology.lab.lab
options:
  names:
    description: Only these nodes.
    type: list
    elements: str
  machine_type:
    description: Only nodes of these machine types (a list or a comma-separated string).
    type: list
    elements: str
  locked:
    description: Only locked (V(true)) or only unlocked (V(false)) nodes.
    type: bool
  owner:
    description: Only nodes locked by this owner (matches RV(nodes[].locked_by)).
    type: str
  up:
    description: Only nodes that are up (V(true)) or down (V(false)).
    type: bool
  vpshost:
    description: Only VM slots on this physical host.
    type: str
  description:
    description: Only nodes whose lock description contains this text (case-sensitive; C(%) and C(_) are plain characters).
    type: str
  expired:
    description: Only locked nodes whose lease has ended (V(true)), or only the others (V(false)).
    type: bool
  vm_state:
    description: Only VM slots whose VM is in one of these states; V(none) for slots without a VM.
    type: list
    elements: str
    choices: [creating, running, destroying, failed, none]
  history:
    description: Also return the history (RV(events)) of the nodes found.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: The module never changes anything; it runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
seealso:
  - module: teuthology.lab.lock
"""

EXAMPLES = r"""
- name: What does alice hold?
  teuthology.lab.node_info:
    owner: alice@laptop
  register: mine

- name: Free VM slots
  teuthology.lab.node_info:
    machine_type: vps
    locked: false
    up: true

- name: The pool summary
  teuthology.lab.node_info:
  register: lab

- name: Show it
  ansible.builtin.debug:
    var: lab.summary
"""

RETURN = r"""
nodes:
  description:
    - The nodes, as dicts with every field of the lock database.
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: "Unique node name, e.g. C(vpm001.front.sepia.ceph.com).", type: str, returned: always}
    machine_type: {description: "Machine type, e.g. C(smithi) or C(vps).", type: str, returned: always}
    arch: {description: "CPU architecture, e.g. C(x86_64).", type: str, returned: always}
    os_type: {description: "OS installed (or to be installed on a VM slot), e.g. C(ubuntu).", type: str, returned: always}
    os_version: {description: "OS version, e.g. C(22.04).", type: str, returned: always}
    up: {description: Whether the node is in the pool., type: bool, returned: always}
    locked: {description: Whether the node is locked., type: bool, returned: always}
    locked_by: {description: "The lock owner, or null.", type: str, returned: always}
    locked_since: {description: "When it was locked (ISO 8601, UTC), or null.", type: str, returned: always}
    description: {description: "The lock's description, or null.", type: str, returned: always}
    vpshost: {description: The physical host of a VM slot; null for a physical machine., type: str, returned: always}
    ssh_pub_key: {description: "The recorded SSH host keys, one C(TYPE BASE64) line each, or null.", type: str, returned: always}
    mac_address: {description: "MAC address, or null.", type: str, returned: always}
    ssh_host: {description: "Address to connect to instead of the name, or null.", type: str, returned: always}
    ssh_port: {description: "SSH port to connect to instead of 22, or null.", type: int, returned: always}
    lease_expires: {description: "When the lock's lease ends (ISO 8601, UTC), or null for no expiry.", type: str, returned: always}
    lock_token:
      description:
        - "The lock's identity: new with every lock, null when free. A run's writes about its slot name it
          (O(teuthology.lab.node#module:lock_token))."
      type: str
      returned: always
    vm_state:
      description: "What the slot's VM is doing: creating, running, destroying, failed, or null (no VM)."
      type: str
      returned: always
    vm_job: {description: "Where the VM's create runs (the vpshost's async job id), or null.", type: str, returned: always}
    vm_since: {description: "When vm_state last changed (ISO 8601, UTC), or null.", type: str, returned: always}
summary:
  description:
    - Per machine type, counts of the nodes found; V(free) counts nodes that are up and not locked, V(expired) locked
      nodes whose lease has ended, and V(creating), V(running), V(destroying), V(failed) VMs in each state.
  returned: always
  type: dict
  sample:
    smithi: {"total": 10, "up": 9, "locked": 4, "free": 5, "expired": 1, "creating": 0, "running": 0, "destroying": 0, "failed": 0}
    vps: {"total": 8, "up": 8, "locked": 2, "free": 6, "expired": 0, "creating": 1, "running": 1, "destroying": 0, "failed": 0}
events:
  description: With O(history=true), the history of the nodes found, oldest first.
  returned: when O(history=true)
  type: list
  elements: dict
  contains:
    node: {description: The node's name., type: str, returned: always}
    action:
      description: "What happened: add, update, remove, key, up, down, lock, extend, unlock, note, vm (VM state), reap."
      type: str
      returned: always
    actor: {description: Who did it (the owner or admin)., type: str, returned: always}
    time: {description: "When (ISO 8601, UTC).", type: str, returned: always}
    details: {description: What changed., type: dict, returned: always}
"""

from ansible_collections.teuthology.lab.plugins.module_utils.lab_module import LabModule
from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import VM_STATES, summarize


def main() -> None:
    module = LabModule(
        argument_spec={
            "names": {"type": "list", "elements": "str"},
            "machine_type": {"type": "list", "elements": "str"},
            "locked": {"type": "bool"},
            "owner": {"type": "str"},
            "up": {"type": "bool"},
            "vpshost": {"type": "str"},
            "description": {"type": "str"},
            "expired": {"type": "bool"},
            "vm_state": {"type": "list", "elements": "str", "choices": [*VM_STATES, "none"]},
            "history": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    params = module.params

    def query(lab):
        nodes = lab.query(
            names=params["names"],
            machine_types=params["machine_type"],
            locked=params["locked"],
            owner=params["owner"],
            up=params["up"],
            vpshost=params["vpshost"],
            description=params["description"],
            expired=params["expired"],
            vm_states=params["vm_state"],
        )
        result = {"changed": False, "nodes": nodes, "summary": summarize(nodes)}
        if params["history"]:
            result["events"] = lab.history([node["name"] for node in nodes]) if nodes else []
        return result

    module.run(query, read_only=True)


if __name__ == "__main__":
    main()
