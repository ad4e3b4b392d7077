#!/usr/bin/python
# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: lock
short_description: Lock test nodes in the lab's lock database
description:
  - Locks nodes by name, or a number of free nodes (up and not locked) of a machine type, all or nothing.
  - If the request cannot be met in full nothing is locked, and the error says how many nodes were asked for and how many
    are free, e.g. C(requested 5 vps nodes, 3 free).
  - Safe under any number of simultaneous callers, on SQLite and on PostgreSQL; no node is ever locked twice.
  - Locking a C(vps) node does not create its VM; the role M(teuthology.lab.downburst) or the playbook
    C(teuthology.lab.lock) does.
version_added: 0.1.0
author: teuthology.lab contributors (@teuthology-lab)
extends_documentation_fragment:
  - teuthology.lab.lab
  - teuthology.lab.lab.owner
options:
  names:
    description:
      - Lock exactly these nodes. Nodes the O(owner) already holds count as locked.
      - Mutually exclusive with O(count).
    type: list
    elements: str
  count:
    description:
      - Lock this many free nodes of O(machine_type). Must be at least 1.
    type: int
  machine_type:
    description:
      - With O(count), the machine types to lock, tried in order; the first type that can satisfy the whole request wins
        (nodes of different types are never mixed). A list or a comma-separated string, e.g. V(smithi,vps).
    type: list
    elements: str
  arch:
    description:
      - Only nodes of this architecture, e.g. V(x86_64).
    type: str
  os_type:
    description:
      - For C(vps) nodes, the OS to install on the VM, recorded on the node. Locking by O(names) a C(vps) node the
        O(owner) holds with another OS locks it again for this one; it is in RV(newly_locked), its VM is to be
        reinstalled.
      - For other machine types, only nodes with this OS.
    type: str
  os_version:
    description:
      - Like O(os_type), for the OS version.
    type: str
  description:
    description:
      - What the nodes are locked for, e.g. a run name. Recorded on the nodes.
      - With O(count), makes the request idempotent; if the owner already holds nodes of a requested type with exactly
        this description, they count towards O(count), and if they are enough they are all returned unchanged (all of
        them, also when they are more than O(count)).
      - A held C(vps) node counts only if its recorded O(os_type) and O(os_version) are the ones asked for.
    type: str
  lease:
    description:
      - How long the lock is meant to last, recorded as RV(teuthology.lab.node_info#module:nodes[].lease_expires);
        V(30m), V(4h), V(2d), V(1w) or a number of seconds, at most 366 days. Default is no expiry.
      - Locking O(names) the O(owner) already holds with a O(lease) extends it to this long from now (history event
        C(extend)); RV(extended) names them.
      - The reaper (playbook C(teuthology.lab.reap)) frees nodes whose lease has ended, destroying their VMs first.
    type: str
  extend:
    description:
      - Only extend leases; every node of O(names) must be held by O(owner) already, else nothing changes and the task
        fails naming the node. Needs O(names) and O(lease).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Runs the same statements in a transaction that is rolled back, so the result shows what would be locked.
  diff_mode:
    support: none
    description: Returns no diff; RV(nodes) shows the nodes as locked.
notes:
  - Runs where the database is reachable, normally the controller (C(delegate_to=localhost)), with its Python.
seealso:
  - module: teuthology.lab.unlock
  - module: teuthology.lab.node_info
"""

EXAMPLES = r"""
- name: Lock three VM slots running Ubuntu 22.04 for a run
  teuthology.lab.lock:
    count: 3
    machine_type: vps
    os_type: ubuntu
    os_version: "22.04"
    description: run-1234
    lease: 4h
  register: locked

- name: Lock two nodes of the first type that has two free
  teuthology.lab.lock:
    count: 2
    machine_type: smithi,mira
    arch: x86_64

- name: Four more hours on the nodes I hold
  teuthology.lab.lock:
    names: [vpm001.front.sepia.ceph.com]
    lease: 4h
    extend: true

- name: Lock these nodes, on a shared PostgreSQL lock database
  teuthology.lab.lock:
    db: postgresql+psycopg://lab@db.example.com/lab
    names:
      - smithi001.front.sepia.ceph.com
      - smithi002.front.sepia.ceph.com
    owner: alice@laptop
"""

RETURN = r"""
nodes:
  description:
    - The locked nodes (including those the owner already held), with every field of the lock database; see the
      return values of M(teuthology.lab.node_info).
  returned: always
  type: list
  elements: dict
locked:
  description: The names of RV(nodes).
  returned: always
  type: list
  elements: str
  sample: [vpm001.front.sepia.ceph.com, vpm002.front.sepia.ceph.com]
extended:
  description:
    - The names of the nodes the owner held whose lease this call extended (O(names) with O(lease)); the new end is in
      RV(nodes[].lease_expires).
  returned: always
  type: list
  elements: str
  sample: [vpm001.front.sepia.ceph.com]
newly_locked:
  description:
    - The names of the nodes this call locked (not those the owner already held); VMs to provision.
    - Includes a C(vps) node the owner held with another OS and locked again by name for the OS asked for.
  returned: always
  type: list
  elements: str
  sample: [vpm002.front.sepia.ceph.com]
"""

from ansible_collections.teuthology.lab.plugins.module_utils.lab_module import OWNER_ARGUMENT_SPEC, LabModule


def main() -> None:
    module = LabModule(
        argument_spec={
            **OWNER_ARGUMENT_SPEC,
            "names": {"type": "list", "elements": "str"},
            "count": {"type": "int"},
            "machine_type": {"type": "list", "elements": "str"},
            "arch": {"type": "str"},
            "os_type": {"type": "str"},
            "os_version": {"type": "str"},
            "description": {"type": "str"},
            "lease": {"type": "str"},
            "extend": {"type": "bool", "default": False},
        },
        mutually_exclusive=[("names", "count"), ("names", "machine_type")],
        required_one_of=[("names", "count")],
        required_together=[("count", "machine_type")],
        supports_check_mode=True,
    )
    params = module.params

    def lock(lab):
        newly_locked, nodes, extended = lab.lock(
            owner=module.owner,
            names=params["names"],
            count=params["count"],
            machine_types=params["machine_type"],
            arch=params["arch"],
            os_type=params["os_type"],
            os_version=params["os_version"],
            description=params["description"],
            lease=params["lease"],
            extend_only=params["extend"],
        )
        return {
            "changed": bool(newly_locked or extended),
            "nodes": nodes,
            "locked": [node["name"] for node in nodes],
            "newly_locked": newly_locked,
            "extended": extended,
        }

    module.run(lock)


if __name__ == "__main__":
    main()
