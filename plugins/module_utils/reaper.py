# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reaper's rules: what to do about slots whose state nobody owns any more.

``plan`` compares the lock database (node dicts) with the domains that really
run on each vpshost and says what to do; it changes nothing. The reap module
then claims each slot in the database (Lab.claim_for_reaping, which refuses a
slot that changed since) before anything is destroyed.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

# virsh list --name prints one domain per line.
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")


@dataclass
class Reaping:
    """What the reaper is to do. Each action names the node dict it is about."""

    # VMs to destroy: {"node": ..., "reason": ..., "unlock": bool (then free the slot)}.
    destroy: list[dict[str, Any]] = field(default_factory=list)
    # Locks to free that have no VM (physical nodes whose lease ended): {"node", "reason"}.
    unlock: list[dict[str, Any]] = field(default_factory=list)
    # Locked slots whose VM is recorded running but is gone from its vpshost: {"node", "reason"}.
    gone: list[dict[str, Any]] = field(default_factory=list)
    # Free slots with a VM state left over and no domain: the state is cleared. {"node", "reason"}.
    stale_states: list[dict[str, Any]] = field(default_factory=list)
    # Domains that are no slot of their vpshost: listed, never touched.
    unknown_domains: dict[str, list[str]] = field(default_factory=dict)
    # vpshosts whose domains could not be listed: their slots are left as they are.
    unreached: dict[str, str] = field(default_factory=dict)


def parse_domain_list(output: str) -> list[str]:
    """Domain names from ``virsh list --all --name`` (blank lines dropped)."""
    names = [line.strip() for line in output.splitlines() if line.strip()]
    bad = [name for name in names if not _DOMAIN_RE.match(name)]
    if bad:
        raise ValueError(f"virsh listed unexpected domain names: {bad[:3]}")
    return sorted(names)


def read_listings(listings: dict[str, Any], vpshosts: set[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The vm_domains results by vpshost (failed or unreachable ones included)
    -> (the domains of each vpshost listed, {vpshost: why} for the others of
    ``vpshosts``, the vpshosts of the database)."""
    domains: dict[str, list[str]] = {}
    unreached: dict[str, str] = {}
    for vpshost in sorted(vpshosts):
        listing = listings.get(vpshost)
        if not isinstance(listing, dict):
            unreached[vpshost] = "not in the inventory"
        elif listing.get("unreachable") or listing.get("failed") or not isinstance(listing.get("domains"), list):
            unreached[vpshost] = str(listing.get("msg") or "unreachable").strip()
        else:
            domains[vpshost] = sorted(str(name) for name in listing["domains"])
    return domains, unreached


def vm_name(node: dict[str, Any]) -> str:
    """A VM slot's domain name: its short name, as downburst names it."""
    return str(node["name"]).split(".", 1)[0]


def _ended(node: dict[str, Any], now: dt.datetime) -> bool:
    lease = node.get("lease_expires")
    return bool(node["locked"] and lease and dt.datetime.fromisoformat(lease) <= now)


def _under_way(node: dict[str, Any], now: dt.datetime, timeout: float) -> bool:
    """A create (of a locked slot: its run may be alive) or a destroy that has
    not run longer than a create may: left to the run doing it."""
    state, since = node.get("vm_state"), node.get("vm_since")
    if state not in ("creating", "destroying") or not since or (state == "creating" and not node["locked"]):
        return False
    return (now - dt.datetime.fromisoformat(since)).total_seconds() <= timeout


def plan(
    nodes: list[dict[str, Any]],
    domains: dict[str, list[str]],
    unreached: dict[str, str],
    create_timeout: float,
    now: dt.datetime,
) -> Reaping:
    """What to do, given every node of the lab, the domains listed on each
    reached vpshost ({vpshost: [names]}), the vpshosts that could not be
    listed ({vpshost: why}), how long a create may run, and the time (UTC)."""
    reaping = Reaping(unreached=dict(unreached))
    now = now.astimezone(dt.UTC)
    by_vpshost: dict[str, dict[str, dict[str, Any]]] = {}
    for node in nodes:
        if node.get("vpshost"):
            by_vpshost.setdefault(node["vpshost"], {})[vm_name(node)] = node
    handled: set[str] = set()

    for node in nodes:
        vpshost = node.get("vpshost")
        if vpshost and vpshost not in domains:
            continue  # not listed: nothing is known of its VMs
        if _ended(node, now):
            reason = f"lease of {node['locked_by']} ended at {node['lease_expires']}"
            if vpshost:
                reaping.destroy.append({"node": node, "reason": reason, "unlock": True})
            else:
                reaping.unlock.append({"node": node, "reason": reason})
            handled.add(node["name"])
        elif node["locked"] and node.get("vm_state") == "creating" and node.get("vm_since"):
            running = now - dt.datetime.fromisoformat(node["vm_since"])
            if running.total_seconds() > create_timeout:
                reason = f"create running since {node['vm_since']}, longer than the create timeout ({create_timeout:g} s): its run is gone"
                reaping.destroy.append({"node": node, "reason": reason, "unlock": True})
                handled.add(node["name"])

    for vpshost, listed in sorted(domains.items()):
        slots = by_vpshost.get(vpshost, {})
        present = set(listed)
        for name in listed:
            node = slots.get(name)
            if node is None:
                reaping.unknown_domains.setdefault(vpshost, []).append(name)
            elif node["name"] in handled or _under_way(node, now, create_timeout):
                continue
            elif not node["locked"]:
                reaping.destroy.append({"node": node, "reason": f"domain {name} runs on {vpshost} for a free slot", "unlock": False})
            elif not node.get("vm_state"):
                reason = f"domain {name} runs on {vpshost} for a slot {node['locked_by']} holds with no VM recorded"
                reaping.destroy.append({"node": node, "reason": reason, "unlock": False})
        for name, node in sorted(slots.items()):
            if name in present or node["name"] in handled:
                continue
            if node["locked"] and node.get("vm_state") == "running":
                reaping.gone.append({"node": node, "reason": f"its VM, recorded running, is gone from {vpshost}"})
            elif not node["locked"] and node.get("vm_state") in ("failed", "destroying", "running"):
                reason = f"free, with VM state {node['vm_state']} recorded but no domain on {vpshost}"
                reaping.stale_states.append({"node": node, "reason": reason})
    return reaping
