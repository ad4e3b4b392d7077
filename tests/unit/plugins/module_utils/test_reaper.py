# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reaper's rules, on node dicts and domain lists (the lab tests run them for real)."""

from __future__ import annotations

import datetime as dt

import pytest

from ansible_collections.teuthology.lab.plugins.module_utils.reaper import parse_domain_list, plan, read_listings

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
H1, H2 = "mira001.front", "mira002.front"


def node(name, vpshost=H1, locked=False, vm_state=None, lease=None, vm_since=None, owner="alice@laptop"):
    return {"name": f"{name}.front.sepia.ceph.com", "vpshost": vpshost, "locked": locked, "locked_by": owner if locked else None,
            "lease_expires": lease, "vm_state": vm_state, "vm_since": vm_since, "lock_token": "t" * 32 if locked else None}


def ago(seconds):
    return (NOW - dt.timedelta(seconds=seconds)).isoformat()


def names(actions):
    return [action["node"]["name"].split(".")[0] for action in actions]


def test_each_rule():
    nodes = [
        node("vpm001", locked=True, vm_state="running", lease=ago(1)),  # lease ended: destroy, unlock
        node("vpm002"),  # free, domain runs: orphan
        node("vpm003", locked=True),  # locked, no VM recorded, domain runs: orphan
        node("vpm004", locked=True, vm_state="running"),  # recorded running, domain gone
        node("vpm005", locked=True, vm_state="creating", vm_since=ago(4000)),  # stale create
        node("vpm006", locked=True, vm_state="creating", vm_since=ago(60)),  # a create under way: left alone
        node("vpm007", vm_state="failed"),  # free, state left over, no domain
        node("vpm008", locked=True, vm_state="running"),  # all well
        node("smithi001", vpshost=None, locked=True, lease=ago(5)),  # physical, lease ended: unlock
        node("vpm009", vpshost=H2, locked=True, vm_state="running", lease=ago(5)),  # its vpshost not reached: untouched
    ]
    domains = {H1: ["stranger", "vpm001", "vpm002", "vpm003", "vpm005", "vpm006", "vpm008"]}
    reaping = plan(nodes, domains, {H2: "unreachable"}, 1800, NOW)
    assert [(n, a["unlock"]) for n, a in zip(names(reaping.destroy), reaping.destroy, strict=True)] == [
        ("vpm001", True), ("vpm005", True), ("vpm002", False), ("vpm003", False)]
    assert names(reaping.unlock) == ["smithi001"]
    assert names(reaping.gone) == ["vpm004"]
    assert names(reaping.stale_states) == ["vpm007"]
    assert reaping.unknown_domains == {H1: ["stranger"]}
    assert reaping.unreached == {H2: "unreachable"}
    assert reaping.destroy[0]["reason"] == f"lease of alice@laptop ended at {ago(1)}"


def test_under_way_and_stale_destroys():
    nodes = [
        node("vpm001", vm_state="destroying", vm_since=ago(30)),  # an unlock destroying it now
        node("vpm002", vm_state="destroying", vm_since=ago(4000)),  # a destroy whose run died
        node("vpm003", vm_state="creating", vm_since=ago(5)),  # free with a create: its run is gone
    ]
    reaping = plan(nodes, {H1: ["vpm001", "vpm002", "vpm003"]}, {}, 1800, NOW)
    assert names(reaping.destroy) == ["vpm002", "vpm003"]


def test_listings_as_registered():
    listings = {
        H1: {"changed": False, "domains": ["vpm002", "vpm001"]},
        H2: {"unreachable": True, "msg": "Failed to connect to the host via ssh"},
        "mira003.front": {"failed": True, "msg": "virsh could not list the domains"},
    }
    domains, unreached = read_listings(listings, {H1, H2, "mira003.front", "mira004.front"})
    assert domains == {H1: ["vpm001", "vpm002"]}
    assert unreached == {H2: "Failed to connect to the host via ssh", "mira003.front": "virsh could not list the domains",
                         "mira004.front": "not in the inventory"}


def test_domain_lists_are_checked():
    assert parse_domain_list("vpm001\nvpm002\n\n") == ["vpm001", "vpm002"]
    with pytest.raises(ValueError, match="unexpected domain names"):
        parse_domain_list("vpm001\n-rf /\n")
