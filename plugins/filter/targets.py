# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The teuthology.lab.targets filter: node dicts -> a teuthology ``targets:`` mapping."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.teuthology.lab.plugins.module_utils.host_keys import HostKeyError, target_host_key


def targets(nodes: list[dict[str, Any]], user: str = "ubuntu", bare: bool = False) -> dict[str, str | None]:
    """``USER@NAME: KEY`` (or ``NAME: KEY`` when bare) for each node, in name order.

    KEY is the one recorded key teuthology can read (``target_host_key``: ed25519 first).
    """
    if not isinstance(nodes, list) or not all(isinstance(node, dict) and "name" in node for node in nodes):
        raise AnsibleFilterError("targets: expects a list of node dicts (as returned by teuthology.lab.lock or node_info)")
    mapping = {}
    for node in sorted(nodes, key=lambda node: node["name"]):
        try:
            key = target_host_key(node.get("ssh_pub_key"))
        except HostKeyError as e:
            raise AnsibleFilterError(f"targets: the recorded host key of {node['name']} is not valid: {e}") from None
        mapping[node["name"] if bare else f"{user}@{node['name']}"] = key
    return mapping


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"targets": targets}
