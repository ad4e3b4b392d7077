#!/usr/bin/python
# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: reap
short_description: Reconcile the lock database with the VMs that really run
description:
  - The database side of the reaper; the playbook C(teuthology.lab.reap) runs it around the destroys on the vpshosts.
  - "O(step=begin): compares every node with the domains listed on each vpshost (M(teuthology.lab.vm_domains)) and
    decides:"
  - "1. a lock whose lease has ended: its VM is to be destroyed, then the slot unlocked (a physical node is unlocked at
    once);"
  - "2. a domain named like a VM slot of its vpshost whose slot is free, or locked with no VM recorded: an orphan, to be
    destroyed; a domain that is no slot's is listed, never touched;"
  - "3. a locked slot whose VM is recorded running but whose domain is gone: a note, and the slot marked down
    (O(on_gone=down)) or unlocked (O(on_gone=unlock));"
  - "4. a create running for longer than O(create_timeout) (its run is gone): like a killed run, its create ended, its VM
    destroyed, the slot unlocked;"
  - and a free slot with a VM state left over and no domain gets its state cleared.
  - Before a VM is destroyed, its slot is claimed in the database (VM state V(destroying)), only if the slot is still as
    it was read (the same lock, the same VM state); a slot that changed meanwhile is left alone. A claimed free slot is
    not handed out until its VM is gone.
  - O(step=finish) unlocks the slots of 1 and 4 whose VMs are gone, each only if it still holds the lock it had.
  - Every action is a history event (C(reap), with C(note), C(down) and C(unlock) as they apply).
  - The slots of a vpshost whose domains could not be listed are left as they are.
version_added: 0.1.0
author: teuthology.lab contributors (@teuthology-lab)
extends_documentation_fragment:
  - teuthology.lab.lab
  - teuthology.lab.lab.owner
options:
  step:
    description: V(begin) decides, claims and does what needs no vpshost; V(finish) unlocks what was reaped.
    type: str
    choices: [begin, finish]
    required: true
  listings:
    description:
      - With O(step=begin), what M(teuthology.lab.vm_domains) returned on each vpshost (as registered, failed or
        unreachable results included), by vpshost name.
      - A vpshost of the database that is not here (not in the inventory), or whose listing failed, is reported with why;
        its slots are left alone.
    type: dict
    default: {}
  create_timeout:
    description: Seconds a create may run; one that has run longer is stale (its run is gone).
    type: int
    default: 1810
  on_gone:
    description: With O(step=begin), what happens to a locked slot whose VM is gone, besides a note.
    type: str
    choices: [down, unlock]
    default: down
  destroy:
    description: With O(step=finish), the RV(destroy) list that O(step=begin) returned.
    type: list
    elements: dict
    default: []
  gone:
    description:
      - With O(step=finish), the names of the nodes of O(destroy) whose VMs are gone (destroyed); the others are reported
        under C(destroy_failed). Those to unlock are unlocked, each only if it still holds the lock it had.
    type: list
    elements: str
    default: []
  report:
    description: With O(step=finish), the RV(report) of O(step=begin), to which this step adds.
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
    description: Decides and reports the same; every write is rolled back, so nothing changes.
  diff_mode:
    support: none
    description: Returns no diff; RV(report) says what was (or would be) done.
seealso:
  - module: teuthology.lab.vm_domains
  - module: teuthology.lab.downburst
"""

EXAMPLES = r"""
- name: List the domains of a vpshost
  teuthology.lab.vm_domains:
  delegate_to: mira001.front.sepia.ceph.com
  register: listed

- name: Decide what to reap
  teuthology.lab.reap:
    step: begin
    listings:
      mira001.front.sepia.ceph.com: "{{ listed }}"
    owner: reaper@lab
  register: reaping

# ... destroy the VMs of reaping.destroy with the role teuthology.lab.downburst (downburst_state: absent) ...

- name: Unlock what was reaped
  teuthology.lab.reap:
    step: finish
    destroy: "{{ reaping.destroy }}"
    gone: "{{ reaping.destroy | map(attribute='name') | list }}"
    report: "{{ reaping.report }}"
    owner: reaper@lab
"""

RETURN = r"""
destroy:
  description:
    - With O(step=begin), the VMs to destroy, their slots claimed; each with C(node) (the node dict as claimed, for the
      role M(teuthology.lab.downburst) with C(downburst_state=absent)), C(name), C(lock_token), C(reason) and C(unlock)
      (whether the slot is to be unlocked once its VM is gone).
  returned: with O(step=begin)
  type: list
  elements: dict
report:
  description:
    - What was done (in check mode, what would be), by vpshost (C(-) for nodes without one); lists of node or domain
      names under C(destroy), C(destroy_failed), C(unlocked), C(marked_down), C(state_cleared), C(changed_meanwhile)
      (slots left alone because they changed since they were read), C(unknown_domains), and C(not_reached) with why.
  returned: always
  type: dict
  sample: {"mira001.front.sepia.ceph.com": {"destroy": ["vpm001.front.sepia.ceph.com"], "unknown_domains": ["test"]}}
"""

import datetime as dt

from ansible_collections.teuthology.lab.plugins.module_utils import reaper
from ansible_collections.teuthology.lab.plugins.module_utils.lab_module import OWNER_ARGUMENT_SPEC, LabModule
from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import LabError


def main() -> None:
    module = LabModule(
        argument_spec={
            **OWNER_ARGUMENT_SPEC,
            "step": {"type": "str", "choices": ["begin", "finish"], "required": True},
            "listings": {"type": "dict", "default": {}},
            "create_timeout": {"type": "int", "default": 1810},
            "on_gone": {"type": "str", "choices": ["down", "unlock"], "default": "down"},
            "destroy": {"type": "list", "elements": "dict", "default": []},
            "gone": {"type": "list", "elements": "str", "default": []},
            "report": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    params = module.params
    actor = module.owner
    report: dict[str, dict[str, list[str] | str]] = params["report"]

    def note(vpshost: str | None, what: str, name: str) -> None:
        entry = report.setdefault(vpshost or "-", {})
        entry.setdefault(what, []).append(name)  # type: ignore[union-attr]

    def begin(lab):
        nodes = lab.query()
        domains, unreached = reaper.read_listings(params["listings"], {node["vpshost"] for node in nodes if node["vpshost"]})
        reaping = reaper.plan(nodes, domains, unreached, params["create_timeout"], dt.datetime.now(dt.UTC))
        for vpshost, why in reaping.unreached.items():
            report.setdefault(vpshost, {})["not_reached"] = str(why)
        for vpshost, names in reaping.unknown_domains.items():
            for name in names:
                note(vpshost, "unknown_domains", name)
        changed = False
        expired = {action["node"]["name"]: action for action in reaping.unlock}
        if expired:
            unlocked = lab.release_reaped(
                {name: action["node"]["lock_token"] for name, action in expired.items()},
                actor=actor,
                reason={name: action["reason"] for name, action in expired.items()},
            )
            for node in unlocked:
                note(None, "unlocked", node["name"])
            for name in set(expired) - {node["name"] for node in unlocked}:
                note(None, "changed_meanwhile", name)
            changed |= bool(unlocked)
        for action in reaping.gone:
            node = action["node"]
            try:
                lab.set_node(node["name"], {"vm_state": "", "up": False if params["on_gone"] == "down" else None},
                             actor=actor, note=action["reason"], lock_token=node["lock_token"])
                if params["on_gone"] == "unlock":
                    lab.release_reaped({node["name"]: node["lock_token"]}, actor=actor, reason={node["name"]: action["reason"]})
            except LabError:
                note(node["vpshost"], "changed_meanwhile", node["name"])
                continue
            note(node["vpshost"], "unlocked" if params["on_gone"] == "unlock" else "marked_down", node["name"])
            changed = True
        for action in reaping.stale_states:
            node = action["node"]
            lab.set_node(node["name"], {"vm_state": "", "vm_job": ""}, actor=actor, note=action["reason"])
            note(node["vpshost"], "state_cleared", node["name"])
            changed = True
        destroy = []
        for action in reaping.destroy:
            node = action["node"]
            claimed = lab.claim_for_reaping(
                node["name"], actor=actor, lock_token=node["lock_token"], vm_state=node["vm_state"], reason=action["reason"]
            )
            if claimed is None:
                note(node["vpshost"], "changed_meanwhile", node["name"])
                continue
            destroy.append({"node": claimed, "name": node["name"], "lock_token": node["lock_token"],
                            "reason": action["reason"], "unlock": action["unlock"]})
            note(node["vpshost"], "destroy", node["name"])
            changed = True
        return {"changed": changed, "destroy": destroy, "report": report}

    def finish(lab):
        gone = set(params["gone"])
        for entry in params["destroy"]:
            if entry["name"] not in gone:
                note(entry["node"]["vpshost"], "destroy_failed", entry["name"])
        reaped = {str(entry["name"]): entry for entry in params["destroy"] if entry["unlock"] and entry["name"] in gone}
        unlocked = lab.release_reaped(
            {name: str(entry["lock_token"]) for name, entry in reaped.items()},
            actor=actor,
            reason={name: str(entry["reason"]) for name, entry in reaped.items()},
        )
        for node in unlocked:
            note(node["vpshost"], "unlocked", node["name"])
        for name in set(reaped) - {node["name"] for node in unlocked}:
            note(reaped[name]["node"]["vpshost"], "changed_meanwhile", name)
        return {"changed": bool(unlocked), "report": report}

    module.run(begin if params["step"] == "begin" else finish)


if __name__ == "__main__":
    main()
