#!/usr/bin/python
# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: node
short_description: Add, change or remove a node (slot) of the lab
description:
  - An admin's way to manage the lab's slots; physical machines and VM slots (C(vps), with O(vpshost)).
  - Sets only the fields given; an empty string clears a field (sets it to null).
  - Also the way a host key is recorded (O(ssh_pub_key)), after validation.
  - Every change is recorded in the history; adding, changing, removing, a new key, up/down, lock/unlock, VM state.
version_added: 0.1.0
author: teuthology.lab contributors (@teuthology-lab)
extends_documentation_fragment:
  - teuthology.lab.lab
  - teuthology.lab.lab.owner
options:
  name:
    description:
      - The node's unique name, e.g. V(vpm001.front.sepia.ceph.com). Letters, digits, C(.), C(-) and C(_).
    type: str
    required: true
  state:
    description:
      - V(present) adds the node or changes the given fields; V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  force:
    description:
      - With O(state=absent), remove the node even if it is locked.
    type: bool
    default: false
  machine_type:
    description: Machine type, e.g. V(smithi), or V(vps) for a VM slot. Required to add a node.
    type: str
  arch:
    description: CPU architecture, e.g. V(x86_64).
    type: str
  os_type:
    description: OS installed, e.g. V(ubuntu).
    type: str
  os_version:
    description: OS version, e.g. V(22.04).
    type: str
  up:
    description:
      - Whether the node is in the pool. V(false) takes it out; it is no longer handed out by
        M(teuthology.lab.lock). A new node is up unless this says otherwise.
    type: bool
  locked:
    description:
      - Lock or unlock the node directly, bypassing the lock rules; for repairs. Locking needs O(locked_by).
    type: bool
  locked_by:
    description: The lock owner, with O(locked=true).
    type: str
  description:
    description: The lock's description.
    type: str
  vpshost:
    description: The physical host of a VM slot; empty for a physical machine.
    type: str
  ssh_pub_key:
    description:
      - The node's SSH host keys, one or more lines of C(TYPE BASE64 [comment]).
      - Each is validated; a known key type, base64 data that decodes to a key blob naming the same type. Anything else
        is an error. Comments are dropped; what is stored is one C(TYPE BASE64) line per key.
    type: str
  mac_address:
    description: MAC address, e.g. V(52:54:00:12:34:56).
    type: str
  ssh_host:
    description: Address to connect to instead of O(name).
    type: str
  ssh_port:
    description: SSH port to connect to instead of 22 (1-65535); an empty string clears it.
    type: raw
  lease_expires:
    description: When the lock's lease ends, ISO 8601 (e.g. V(2026-11-25T18:00:00Z)).
    type: str
  vm_state:
    description:
      - What the VM of a C(vps) slot is doing; the role M(teuthology.lab.downburst) sets it as it goes, the reaper (playbook
        C(teuthology.lab.reap)) reads it. An empty string clears it (no VM). Setting it records when (C(vm_since)).
    type: str
    choices: [creating, running, destroying, failed, ""]
  vm_job:
    description: Where the VM's create runs, the vpshost's async job id; an empty string clears it.
    type: str
  note:
    description:
      - Add this text to the node's history (action C(note)), e.g. why it was taken down. Always a change.
    type: str
  lock_token:
    description:
      - The token of the lock this write is about (RV(teuthology.lab.node_info#module:nodes[].lock_token)), as a run that locked
        the node gives it. If the node was unlocked or locked again since, nothing changes and the task fails saying the
        lock changed.
      - Without it the write is an admin's, and the history says so (C(admin=true)).
    type: str
attributes:
  check_mode:
    support: full
    description: Runs the same statements in a transaction that is rolled back.
  diff_mode:
    support: full
    description: Returns the node's fields before and after the change.
seealso:
  - module: teuthology.lab.node_info
"""

EXAMPLES = r"""
- name: Add a VM slot on mira001
  teuthology.lab.node:
    name: vpm001.front.sepia.ceph.com
    machine_type: vps
    arch: x86_64
    vpshost: mira001.front.sepia.ceph.com
    mac_address: "52:54:00:00:00:01"

- name: Take a broken machine out of the pool
  teuthology.lab.node:
    name: smithi042.front.sepia.ceph.com
    up: false
    note: disk errors on /dev/sdb

- name: Record a node's host keys
  teuthology.lab.node:
    name: vpm001.front.sepia.ceph.com
    ssh_pub_key: "{{ lookup('ansible.builtin.pipe', 'ssh-keyscan -t ed25519 vpm001.front.sepia.ceph.com') }}"

- name: Remove a slot
  teuthology.lab.node:
    name: vpm009.front.sepia.ceph.com
    state: absent
"""

RETURN = r"""
node:
  description:
    - The node after the change, with every field of the lock database (see M(teuthology.lab.node_info)); null once
      removed.
  returned: always
  type: dict
"""

from ansible_collections.teuthology.lab.plugins.module_utils.lab_module import OWNER_ARGUMENT_SPEC, LabModule
from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import SETTABLE_FIELDS, VM_STATES

_FIELD_SPECS = {
    "up": {"type": "bool"},
    "locked": {"type": "bool"},
    "ssh_port": {"type": "raw"},
    "vm_state": {"type": "str", "choices": [*VM_STATES, ""]},
}


def main() -> None:
    module = LabModule(
        argument_spec={
            **OWNER_ARGUMENT_SPEC,
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "force": {"type": "bool", "default": False},
            "note": {"type": "str"},
            "lock_token": {"type": "str", "no_log": False},
            **{field: _FIELD_SPECS.get(field, {"type": "str"}) for field in SETTABLE_FIELDS},
        },
        supports_check_mode=True,
    )
    params = module.params

    def apply(lab):
        if params["state"] == "absent":
            changed, before = lab.remove_node(params["name"], actor=module.owner, force=params["force"])
            after = None
        else:
            fields = {field: params[field] for field in SETTABLE_FIELDS}
            changed, before, after = lab.set_node(
                params["name"], fields, actor=module.owner, note=params["note"], lock_token=params["lock_token"]
            )
        return {"changed": changed, "node": after, "diff": {"before": before or {}, "after": after or {}}}

    module.run(apply)


if __name__ == "__main__":
    main()
