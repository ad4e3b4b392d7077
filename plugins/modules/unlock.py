#!/usr/bin/python
# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: unlock
short_description: Unlock test nodes in the lab's lock database
description:
  - Unlocks nodes by name, or every node an owner holds, in one transaction; all of them or, on any error, none.
  - A node locked by someone else is refused (the error names the node and its holder) unless O(force=true).
  - Unlocking a node that is already free changes nothing.
  - Unlocking a C(vps) node does not destroy its VM; the playbook C(teuthology.lab.unlock) destroys the VMs first.
version_added: 0.1.0
author: teuthology.lab contributors (@teuthology-lab)
extends_documentation_fragment:
  - teuthology.lab.lab
  - teuthology.lab.lab.owner
options:
  names:
    description:
      - The nodes to unlock. Mutually exclusive with O(all).
    type: list
    elements: str
  all:
    description:
      - Unlock every node locked by O(owner).
    type: bool
    default: false
  force:
    description:
      - Unlock nodes even if someone other than O(owner) holds them. The history records who did it.
    type: bool
    default: false
  lock_tokens:
    description:
      - The lock each named node must still hold, a mapping of node name to the token a lock returned
        (RV(teuthology.lab.node_info#module:nodes[].lock_token)). If any of them was unlocked or locked again since, nothing
        is unlocked and the task fails saying which lock changed; so a run never frees a slot someone else holds now.
    type: dict
attributes:
  check_mode:
    support: full
    description: Runs the same statements in a transaction that is rolled back.
  diff_mode:
    support: none
    description: Returns no diff; RV(nodes) shows the nodes as they were before unlocking.
seealso:
  - module: teuthology.lab.lock
"""

EXAMPLES = r"""
- name: Unlock two nodes
  teuthology.lab.unlock:
    names:
      - smithi001.front.sepia.ceph.com
      - smithi002.front.sepia.ceph.com

- name: Unlock everything I hold
  teuthology.lab.unlock:
    all: true

- name: An admin frees a node someone forgot
  teuthology.lab.unlock:
    names: [smithi003.front.sepia.ceph.com]
    owner: admin@lab
    force: true
"""

RETURN = r"""
nodes:
  description:
    - The nodes that were unlocked, as they were before unlocking (with
      RV(teuthology.lab.node_info#module:nodes[].locked_by) and RV(teuthology.lab.node_info#module:nodes[].vpshost)),
      so that a caller can tear their VMs down; see the return values of M(teuthology.lab.node_info) for the fields.
  returned: always
  type: list
  elements: dict
unlocked:
  description: The names of RV(nodes).
  returned: always
  type: list
  elements: str
  sample: [smithi001.front.sepia.ceph.com]
"""

from ansible_collections.teuthology.lab.plugins.module_utils.lab_module import OWNER_ARGUMENT_SPEC, LabModule


def main() -> None:
    module = LabModule(
        argument_spec={
            **OWNER_ARGUMENT_SPEC,
            "names": {"type": "list", "elements": "str"},
            "all": {"type": "bool", "default": False},
            "force": {"type": "bool", "default": False},
            "lock_tokens": {"type": "dict", "no_log": False},
        },
        supports_check_mode=True,
    )
    params = module.params

    def unlock(lab):
        changed, nodes = lab.unlock(
            owner=module.owner, names=params["names"], all_nodes=params["all"], force=params["force"], lock_tokens=params["lock_tokens"]
        )
        return {"changed": changed, "nodes": nodes, "unlocked": [node["name"] for node in nodes]}

    module.run(unlock)


if __name__ == "__main__":
    main()
