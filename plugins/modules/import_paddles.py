#!/usr/bin/python
# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: import_paddles
short_description: Import a paddles lock server's nodes into the lab's lock database
description:
  - Reads C(GET /nodes/) of a live paddles (teuthology's C(lock_server)) and creates or updates the lab's nodes from
    it, every field; paddles' C(vm_host) becomes RV(teuthology.lab.node_info#module:nodes[].vpshost).
  - A node whose C(up) is null in paddles (which paddles never hands out) is imported down, out of the pool.
  - A node locked in paddles is imported locked as it is, with its owner, description and C(locked_since). A node
    locked in the lab keeps its lock whatever paddles says, and is listed in RV(lock_conflicts) when paddles differs;
    the import never unlocks a node and never hands a lock to another owner. Nodes the lab has and paddles does not
    are left alone.
  - Every node is checked first, as M(teuthology.lab.node) checks its fields; if any node fails, the error names
    each one and nothing changes. Each node is then written in a transaction of its own, so a run cut short is
    completed by running it again.
  - Idempotent; run it before pointing teuthology's C(lock_server) at the lab's lock server (see the collection's
    README), since from then on the lab, not paddles, holds the locks.
version_added: 0.1.0
author: teuthology.lab contributors (@teuthology-lab)
extends_documentation_fragment:
  - teuthology.lab.lab
  - teuthology.lab.lab.owner
options:
  url:
    description:
      - The paddles server, e.g. V(http://paddles.front.sepia.ceph.com/), as teuthology's C(lock_server) names it.
      - An C(http) or C(https) URL with a host and no query or fragment; C(nodes/) is appended.
    type: str
    required: true
  timeout:
    description: Seconds to wait for paddles' answer.
    type: int
    default: 60
  validate_certs:
    description: Check the server's TLS certificate (C(https)).
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: Reads paddles and runs the same statements in transactions that are rolled back.
  diff_mode:
    support: full
    description: Returns each changed node's fields before and after.
notes:
  - The history names O(owner) as the actor of each change.
seealso:
  - module: teuthology.lab.node
"""

EXAMPLES = r"""
- name: See what an import would change
  teuthology.lab.import_paddles:
    url: http://paddles.front.sepia.ceph.com/
  check_mode: true
  diff: true

- name: Import paddles' nodes into the shared lab database
  teuthology.lab.import_paddles:
    url: http://paddles.front.sepia.ceph.com/
    db: postgresql+psycopg://lab@db.example/lab
    owner: admin@lab
"""

RETURN = r"""
created:
  description: The nodes added to the lab.
  returned: always
  type: list
  elements: str
  sample: [smithi001.front.sepia.ceph.com]
updated:
  description: The nodes of the lab whose fields changed.
  returned: always
  type: list
  elements: str
unchanged:
  description: How many nodes were already as paddles has them.
  returned: always
  type: int
lock_conflicts:
  description:
    - Nodes locked in the lab whose lock paddles sees otherwise (free, another owner or another description); the
      lab's lock was kept.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The node.
      type: str
    lab:
      description: The lab's lock, C(OWNER DESCRIPTION).
      type: str
    paddles:
      description: paddles' lock, C(OWNER DESCRIPTION), or V(free).
      type: str
"""

from typing import Any
from urllib.parse import urlsplit

from ansible.module_utils.urls import fetch_url

from ansible_collections.teuthology.lab.plugins.module_utils.lab_module import OWNER_ARGUMENT_SPEC, LabModule
from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import LabError, mask_url
from ansible_collections.teuthology.lab.plugins.module_utils.paddles import imported_node


def check_url(url: str) -> str:
    """paddles' base URL as given (http or https, a host, no query or fragment)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment or any(c.isspace() for c in url):
        raise LabError(f"url: {mask_url(url)!r} is not a paddles URL (http:// or https://, a host, no query)")
    return url


def _lock_text(locked: bool, owner: str | None, description: str | None) -> str:
    return f"{owner} {description}" if locked else "free"


def main() -> None:
    module = LabModule(
        argument_spec={
            **OWNER_ARGUMENT_SPEC,
            "url": {"type": "str", "required": True},
            "timeout": {"type": "int", "default": 60},
            "validate_certs": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    try:
        url = check_url(module.params["url"])
    except LabError as error:
        module.fail_json(msg=str(error))
    nodes_url = url.rstrip("/") + "/nodes/"
    response, info = fetch_url(module, nodes_url, headers={"Accept": "application/json"}, timeout=module.params["timeout"])
    if info["status"] != 200 or response is None:
        module.fail_json(msg=f"url: GET {mask_url(nodes_url)} answered {info['status']}: {info.get('msg', '')}")
    try:
        listed = module.from_json(response.read())
    except ValueError:
        module.fail_json(msg=f"url: GET {mask_url(nodes_url)} did not answer JSON")
    if not isinstance(listed, list):
        module.fail_json(msg=f"url: GET {mask_url(nodes_url)} did not answer a list of nodes")

    imported, bad = [], []
    for obj in listed:
        try:
            imported.append(imported_node(obj))
        except LabError as error:
            bad.append(f"{obj.get('name') if isinstance(obj, dict) else obj!r}: {error}")
    if bad:
        module.fail_json(msg=f"paddles at {mask_url(url)} has nodes the lab cannot take; nothing was imported: " + "; ".join(bad))

    def apply(lab: Any) -> dict[str, Any]:
        result: dict[str, Any] = {"created": [], "updated": [], "unchanged": 0, "lock_conflicts": []}
        diff: dict[str, dict[str, Any]] = {"before": {}, "after": {}}
        for name, fields, since in imported:
            changed, before, after = lab.set_node(name, fields, actor=module.owner, keep_lock=True, locked_since=since)
            if before is None:
                result["created"].append(name)
            elif changed:
                result["updated"].append(name)
            else:
                result["unchanged"] += 1
            if changed:
                diff["before"][name], diff["after"][name] = before or {}, after
            theirs = _lock_text(fields["locked"], fields["locked_by"], fields["description"] or None)
            ours = _lock_text(after["locked"], after["locked_by"], after["description"])
            if after["locked"] and ours != theirs:
                result["lock_conflicts"].append({"name": name, "lab": ours, "paddles": theirs})
        return {"changed": bool(result["created"] or result["updated"]), "diff": diff, **result}

    module.run(apply)


if __name__ == "__main__":
    main()
