# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The teuthology.lab.targets filter: node dicts -> a teuthology ``targets:`` mapping."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError


def targets(nodes: list[dict[str, Any]], user: str = "ubuntu", bare: bool = False) -> dict[str, str | None]:
    """``USER@NAME: KEYS`` (or ``NAME: KEYS`` when bare) for each node, in name order.

    Every recorded key is kept (one ``TYPE BASE64`` line each), not only the first.
    """
    if not isinstance(nodes, list) or not all(isinstance(node, dict) and "name" in node for node in nodes):
        raise AnsibleFilterError("targets: expects a list of node dicts (as returned by teuthology.lab.lock or node_info)")
    return {
        (node["name"] if bare else f"{user}@{node['name']}"): node.get("ssh_pub_key")
        for node in sorted(nodes, key=lambda node: node["name"])
    }


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"targets": targets}
