"""The lock server speaks paddles' /nodes/ API as teuthology uses it (the
README's *Lock server* section), on SQLite and PostgreSQL, served by gunicorn
as ``make lock-server`` starts it.

teuthology's own client code (teuthology 1.3.0: teuthology.lock.ops and
query, in the cached venv of tests/support/teuthology_venv.py) makes the
requests wherever it has a function for them; the rest are made with
teuthology's bodies and headers (support.lockserver.PaddlesClient), without a
Content-Type where teuthology sends none.

Each check is a function of a served lab, so that
tests/test_lock_server_misbehaving.py runs it against servers that misbehave
the way it guards against and shows that it fails there.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid

import pytest

from support.lockserver import LockServer, PaddlesClient, Served, serve
from support.seed import ADMIN, seed

ALICE = "alice@laptop"
BOB = "bob@desk"
SCHEDULED = "scheduled_teuthworker@teuthology"
ARCHIVE = "/home/teuthworker/archive/teuthology-2026-11-30_12:00:00-rados-main-distro-default-smithi/{}"
PADDLES_KEYS = {"name", "description", "up", "machine_type", "is_vm", "vm_host", "os_type", "os_version", "arch",
                "locked", "locked_since", "locked_by", "mac_address", "ssh_pub_key"}
LOCKED_SINCE_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\Z")
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, tmp_path_factory):
    if request.param == "sqlite":
        db_url = f"sqlite:///{tmp_path_factory.mktemp('lock-server') / 'lab.db'}"
    else:
        db_url = request.getfixturevalue("pg_server").create_database()
    yield from serve(db_url)


@pytest.fixture
def kind():
    """A machine type of this test's own: tests share a server."""
    return "t" + uuid.uuid4().hex[:8]


# ---------------------------------------------------------------- the checks


def check_node_objects(served: Served, kind: str) -> None:
    """get_status and list_locks: paddles' 14 keys, JSON booleans, vm_host nested, is_vm, locked_since's format; 404 is {}."""
    host = f"{kind}host001.front.sepia.ceph.com"
    served.lab.set_node(host, {"machine_type": f"{kind}h", "arch": "x86_64"}, actor=ADMIN)
    (physical,) = seed(served.lab, kind, 1, ssh_pub_key=ED25519, mac_address="52:54:00:00:00:01", os_type="ubuntu", os_version="22.04")
    (vm,) = seed(served.lab, "vps", 1, prefix=f"{kind}vpm", vpshost=host)
    served.lab.lock(owner=SCHEDULED, names=[physical], description=ARCHIVE.format(1))
    out = served.teuthology("""
        out["physical"] = query.get_status(args["physical"])
        out["vm"] = query.get_status(args["vm"])
        out["unknown"] = query.get_status("nosuch001.front.sepia.ceph.com")
        out["is_vm"] = [query.is_vm(args["vm"]), query.is_vm(args["physical"])]
        out["listed"] = query.list_locks(machine_type=args["kind"])
        from teuthology.lock import util
        out["age"] = util.locked_since_seconds(out["physical"])
    """, physical=physical, vm=vm, kind=kind)
    node = out["physical"]
    assert set(node) == PADDLES_KEYS
    assert node["locked"] is True and node["up"] is True and node["is_vm"] is False and node["vm_host"] is None
    assert (node["locked_by"], node["description"]) == (SCHEDULED, ARCHIVE.format(1))
    assert (node["os_type"], node["os_version"], node["arch"]) == ("ubuntu", "22.04", "x86_64")
    assert (node["ssh_pub_key"], node["mac_address"]) == (ED25519, "52:54:00:00:00:01")
    assert LOCKED_SINCE_RE.match(node["locked_since"]), node["locked_since"]
    # teuthology compares it with its local now(): in UTC here, so a fresh lock is seconds old, not hours.
    assert -5 < out["age"] < 60, out["age"]
    assert out["listed"] == [node]
    vm_node = out["vm"]
    assert set(vm_node) == PADDLES_KEYS and vm_node["is_vm"] is True and vm_node["locked"] is False
    assert vm_node["locked_since"] is None
    assert set(vm_node["vm_host"]) == PADDLES_KEYS and vm_node["vm_host"]["name"] == host
    assert vm_node["vm_host"]["machine_type"] == f"{kind}h"
    assert out["is_vm"] == [True, False]
    assert out["unknown"] == {}


def check_list_filters(served: Served, kind: str) -> None:
    """list_locks as the dispatcher, find_stale_locks and get_arch call it: machine_type with ',' (sent as |),
    up/locked as 1/0, count; locked_by, os_type, os_version; true/false spelled out; unknown parameters ignored."""
    first = seed(served.lab, kind, 3, os_type="ubuntu", os_version="22.04")
    second = seed(served.lab, f"{kind}b", 2, os_type="centos", os_version="9")
    served.lab.lock(owner=ALICE, names=[first[0]], description="manual")
    served.lab.set_node(first[1], {"up": False}, actor=ADMIN)
    out = served.teuthology("""
        k = args["kind"]
        names = lambda nodes: sorted(n["name"] for n in nodes)
        out["both"] = names(query.list_locks(machine_type=f"{k},{k}b"))
        out["free"] = names(query.list_locks(machine_type=f"{k},{k}b", up=True, locked=False))
        out["count"] = len(query.list_locks(machine_type=f"{k},{k}b", up=True, locked=False, count=2))
        out["locked"] = names(query.list_locks(machine_type=k, locked=True))
        out["down"] = names(query.list_locks(machine_type=k, up=False))
        out["keyed"] = sorted(query.list_locks(keyed_by_name=True, machine_type=k))
        out["arch"] = query.list_locks(machine_type=k, count=1)[0]["arch"]
    """, kind=kind)
    assert out["both"] == sorted(first + second)
    assert out["free"] == sorted([first[2], *second])
    assert out["count"] == 2
    assert out["locked"] == [first[0]]
    assert out["down"] == [first[1]]
    assert out["keyed"] == first
    assert out["arch"] == "x86_64"
    with served.client() as client:
        def names(query: str) -> list[str]:
            status, nodes = client.request("GET", "/nodes/?" + query)
            assert status == 200, nodes
            return sorted(node["name"] for node in nodes)

        assert names(f"machine_type={kind}&locked=true&up=TRUE&color=blue") == [first[0]]
        assert names(f"machine_type={kind}&locked_by={ALICE}") == [first[0]]
        assert names(f"machine_type={kind}%7C{kind}b&os_type=centos") == second
        assert names(f"machine_type={kind}%7C{kind}b&os_version=22.04&locked=f") == first[1:]
        status, answer = client.request("GET", f"/nodes/?machine_type={kind}&count=two")
        assert (status, answer) == (400, {"message": "count must be an integer"})
        status, answer = client.request("GET", f"/nodes/?machine_type={kind}&locked=maybe")
        assert status == 400 and "locked" in answer["message"]


def check_lock_many(served: Served, kind: str) -> None:
    """ops.lock_many: exactly count nodes, as targets with their keys; a|b takes the first type that can
    satisfy all, never a mix; 503 'only N nodes available' locks nothing; os_type/arch filter; count 2.0."""
    first = seed(served.lab, kind, 2, ssh_pub_key=ED25519, os_type="ubuntu", os_version="22.04")
    second = seed(served.lab, f"{kind}b", 3, os_type="centos", os_version="9")
    out = served.teuthology("""
        k = args["kind"]
        ctx = argparse.Namespace(machine_type=k)
        out["first"] = ops.lock_many(ctx, 2, k + "," + k + "b", args["owner"], args["desc"])
        out["short"] = ops.lock_many(ctx, 4, k + "b", args["owner"], args["desc"])
        out["second"] = ops.lock_many(ctx, 3, k + "," + k + "b", args["owner"], args["desc"], os_type="centos", arch="x86_64")
        out["none_left"] = ops.lock_many(ctx, 1, k + "," + k + "b", args["owner"], args["desc"])
    """, kind=kind, owner=SCHEDULED, desc=ARCHIVE.format(2))
    assert out["first"] == {name: ED25519 for name in first}
    assert out["short"] == []
    assert sorted(out["second"]) == second
    assert out["none_left"] == []
    held = served.lab.query(owner=SCHEDULED, description=ARCHIVE.format(2))
    assert sorted(node["name"] for node in held) == sorted(first + second)
    with served.client() as client:
        served.lab.unlock(owner=SCHEDULED, names=second)
        status, answer = client.lock_many(BOB, 4, f"{kind}b", None)
        assert (status, answer) == (503, {"message": "only 3 nodes available"})
        assert served.lab.query(owner=BOB) == []
        status, answer = client.lock_many(BOB, 2.0, f"{kind}b", None, os_version="22.04")
        assert (status, answer) == (503, {"message": "only 0 nodes available"})  # a filter, not a choice
        status, answer = client.lock_many(BOB, 2.0, f"{kind}b", None)
        assert status == 200 and [node["name"] for node in answer] == second[:2]
        assert all(set(node) == PADDLES_KEYS and node["locked_by"] == BOB and node["locked"] is True for node in answer)
        for body, message in (
            ({"locked_by": BOB, "count": 1, "machine_type": kind}, "must pass these fields: count, locked_by, machine_type, description"),
            ({"locked_by": BOB, "count": 0, "machine_type": kind, "description": None}, "cannot lock less than 1 node"),
            ({"locked_by": BOB, "count": 1.5, "machine_type": kind, "description": None}, "count: 1.5 is not a whole number"),
            ({"locked_by": BOB, "count": 1, "machine_type": "", "description": None}, "must specify machine_type"),
            ({"locked_by": "", "count": 1, "machine_type": kind, "description": None}, "Cannot lock without specifying locked_by"),
        ):
            assert client.request("POST", "/nodes/lock_many/", body, "application/json") == (400, {"message": message})


def check_lock_one_and_unlock_one(served: Served, kind: str) -> None:
    """teuthology-lock --lock / --unlock (ops.lock_one, unlock_one; no Content-Type): the short object; another owner's
    unlock is 403, at once (teuthology stops retrying only on 403); another job's description is 403; unknown is 404."""
    node, other = seed(served.lab, kind, 2)
    served.lab.lock(owner=SCHEDULED, names=[other], description=ARCHIVE.format(3))
    out = served.teuthology("""
        r = ops.lock_one(args["node"], args["alice"], "manual")
        out["lock"] = [r.status_code, r.json()]
        r = ops.lock_one(args["other"], args["alice"], "manual")
        out["taken"] = [r.status_code, r.json()]
        r = ops.lock_one("nosuch001.front.sepia.ceph.com", args["alice"], "manual")
        out["unknown"] = r.status_code
        started = time.monotonic()
        out["not_owner"] = ops.unlock_one(args["other"], args["alice"])
        out["another_job"] = ops.unlock_one(args["other"], args["scheduled"], "/archive/another-run/9")
        out["refusals_took"] = time.monotonic() - started
        status = query.get_status(args["other"])
        out["same_job"] = ops.unlock_one(args["other"], args["scheduled"], status["description"], status)
        out["own"] = ops.unlock_one(args["node"], args["alice"])
        out["again"] = ops.unlock_one(args["node"], args["alice"])
    """, node=node, other=other, alice=ALICE, scheduled=SCHEDULED)
    assert out["lock"] == [200, {"name": node, "locked": True, "locked_by": ALICE, "machine_type": kind, "is_vm": False}]
    assert out["taken"][0] == 403
    assert out["unknown"] == 404
    assert out["not_owner"] is False and out["another_job"] is False
    assert out["refusals_took"] < 5, "teuthology retried a refusal: not a 403"
    assert out["same_job"] is True and out["own"] is True
    assert out["again"] is False  # not locked: 403, as paddles
    assert served.lab.query(names=[node, other], locked=True) == []


def check_unlock_many_is_all_or_nothing(served: Served, kind: str) -> None:
    """ops.unlock_many; one node of the list held by another owner: 403 and nothing unlocked
    (paddles unlocks node by node up to that one); unknown names: 400; the short objects."""
    mine = seed(served.lab, kind, 3)
    served.lab.lock(owner=ALICE, names=mine[:2], description="d")
    served.lab.lock(owner=BOB, names=[mine[2]], description="d")
    with served.client() as client:
        status, answer = client.unlock_many(mine, ALICE)
        assert status == 403, answer
        assert sorted(node["name"] for node in served.lab.query(names=mine, locked=True)) == mine
        status, answer = client.unlock_many([mine[0], f"{kind}999.front.sepia.ceph.com"], ALICE)
        assert status == 400 and answer["message"].startswith("Could not find all nodes!")
        assert client.request("POST", "/nodes/unlock_many/", {"names": mine[:1], "locked_by": ALICE, "description": "d"},
                              "application/json") == (400, {"message": "must pass these fields: names, locked_by"})
    out = served.teuthology("""
        out["unlocked"] = ops.unlock_many(args["names"], args["alice"])
    """, names=mine[:2], alice=ALICE)
    assert out["unlocked"] is True
    assert [node["name"] for node in served.lab.query(names=mine, locked=True)] == [mine[2]]
    with served.client() as client:
        served.lab.lock(owner=ALICE, names=mine[:2])
        status, answer = client.unlock_many(mine[:2], ALICE)
        assert status == 200
        assert answer == [{"name": name, "locked": False, "locked_by": None, "machine_type": kind, "is_vm": False} for name in mine[:2]]


def check_update_and_inventory(served: Served, kind: str) -> None:
    """ops.update_lock (description, up, ssh_pub_key; no Content-Type) and update_inventory (PUT, then POST on 404)."""
    (node,) = seed(served.lab, kind, 1)
    new = f"{kind}002.front.sepia.ceph.com"
    out = served.teuthology("""
        out["down"] = ops.update_lock(args["node"], description="reimage failed 10 times", status="down")
        out["key"] = ops.update_lock(args["node"], ssh_pub_key=args["key"])
        ops.update_inventory({"name": args["new"], "user": "ubuntu", "arch": "aarch64", "os_type": "centos",
                              "os_version": "9", "ssh_pub_key": args["key"], "up": True, "machine_type": args["kind"]})
        out["new"] = query.get_status(args["new"])
        ops.update_inventory({"name": args["new"], "os_type": "", "os_version": ""})
        out["reset"] = query.get_status(args["new"])
    """, node=node, new=new, key=ED25519, kind=kind)
    assert out["down"] is True and out["key"] is True
    (stored,) = served.lab.query(names=[node])
    assert (stored["up"], stored["description"], stored["ssh_pub_key"]) == (False, "reimage failed 10 times", ED25519)
    assert out["new"], "update_inventory did not create the node (a PUT of an unknown node must be 404)"
    assert (out["new"]["arch"], out["new"]["os_type"], out["new"]["up"], out["new"]["ssh_pub_key"]) == ("aarch64", "centos", True, ED25519)
    assert (out["reset"]["os_type"], out["reset"]["os_version"]) == (None, None)


def check_update_cannot_take_a_lock(served: Served, kind: str) -> None:
    """PUT /nodes/NAME/ never changes a lock (paddles lets anyone rewrite another owner's locked_by there)."""
    (node,) = seed(served.lab, kind, 1)
    served.lab.lock(owner=ALICE, names=[node], description="mine")
    with served.client() as client:
        status, answer = client.request("PUT", f"/nodes/{node}/", '{"locked_by": "mallory@evil"}')
        assert status == 400 and answer["message"].startswith("locked_by:"), answer
        status, answer = client.request("PUT", f"/nodes/{node}/", '{"locked": false, "locked_by": "mallory@evil"}')
        assert status == 403, answer
        status, answer = client.request("PUT", f"/nodes/{node}/", '{"locked": true, "locked_by": "mallory@evil", "description": "x"}')
        assert status == 403, answer
    (stored,) = served.lab.query(names=[node])
    assert (stored["locked"], stored["locked_by"], stored["description"]) == (True, ALICE, "mine")


def check_create(served: Served, kind: str) -> None:
    """POST /nodes/ (lab scripts, curl -d: a form Content-Type, a JSON body): 200 {}; again: 400; a node
    created without up is out of the pool (paddles' null); name required."""
    name = f"{kind}001.front.sepia.ceph.com"
    with served.client() as client:
        body = {"name": name, "machine_type": kind, "up": True, "locked": False, "os_type": "ubuntu", "os_version": "22.04"}
        assert client.request("POST", "/nodes/", body, "application/x-www-form-urlencoded") == (200, {})
        status, answer = client.request("POST", "/nodes/", body, "application/x-www-form-urlencoded")
        assert status == 400 and "already exists" in answer["message"]
        second = f"{kind}002.front.sepia.ceph.com"
        held = {"name": second, "machine_type": kind, "locked": True, "locked_by": "initial@setup", "description": "Initial node creation"}
        assert client.request("POST", "/nodes/", held, "application/json") == (200, {})
        third = f"{kind}003.front.sepia.ceph.com"
        assert client.request("POST", "/nodes/", {"name": third, "machine_type": kind}) == (200, {})
        assert client.request("POST", "/nodes/", {"machine_type": kind}) == (400, {"message": "could not find required key: 'name'"})
        assert client.request("POST", "/nodes/", "{not json") == (400, {"message": "could not decode JSON body"})
    nodes = {node["name"]: node for node in served.lab.query(machine_types=[kind])}
    assert (nodes[name]["up"], nodes[name]["os_type"]) == (True, "ubuntu")
    assert (nodes[second]["locked"], nodes[second]["locked_by"]) == (True, "initial@setup")
    assert nodes[third]["up"] is False


def check_paths(served: Served, kind: str) -> None:
    """Trailing slashes, as pecan: GET /nodes and /nodes/NAME redirect (302); /lock, /lock_many without the
    slash work; the action URIs refuse other methods with paddles' 400; every error body is {"message": ...}."""
    (node,) = seed(served.lab, kind, 1)
    with served.client() as client:
        assert client.request("GET", f"/nodes?machine_type={kind}")[0] == 302
        assert client.request("GET", f"/nodes/{node}")[0] == 302
        status, answer = client.request("PUT", f"/nodes/{node}/lock", {"locked": True, "locked_by": ALICE, "description": None})
        assert status == 200 and answer["locked"] is True
        status, answer = client.request("POST", "/nodes/unlock_many", {"names": [node], "locked_by": ALICE})
        assert status == 200, answer
        assert client.request("GET", "/nodes/lock_many/") == (400, {"message": "this URI only supports POST requests"})
        status, answer = client.request("GET", f"/nodes/{node}/lock/")
        assert (status, answer) == (400, {"message": "this URI only supports PUT and POST requests but GET was attempted"})
        status, answer = client.request("GET", f"/nodes/{kind}999.front.sepia.ceph.com/")
        assert status == 404 and set(answer) == {"message"}
        status, answer = client.request("GET", "/nodes/machine_types/")
        assert status == 200 and kind in answer and answer == sorted(answer)


# ---------------------------------------------------------------- the tests

CHECKS = [
    check_node_objects,
    check_list_filters,
    check_lock_many,
    check_lock_one_and_unlock_one,
    check_unlock_many_is_all_or_nothing,
    check_update_and_inventory,
    check_update_cannot_take_a_lock,
    check_create,
    check_paths,
]


@pytest.mark.parametrize("check", CHECKS, ids=[check.__name__ for check in CHECKS])
def test_contract(served, kind, check):
    check(served, kind)


def test_a_lock_through_either_is_a_lock_for_both(served, kind):
    """The modules' engine and the server see the same rows."""
    (node, other) = seed(served.lab, kind, 2)
    served.lab.lock(owner=ALICE, names=[node], description="by a playbook")
    with served.client() as client:
        assert client.lock_one(node, BOB, None)[0] == 403
        status, answer = client.lock_many(BOB, 2, kind, None)
        assert (status, answer) == (503, {"message": "only 1 nodes available"})
        assert client.lock_many(BOB, 1, kind, "by teuthology")[0] == 200
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import LabError

    with pytest.raises(LabError, match="locked by bob@desk"):
        served.lab.lock(owner=ALICE, names=[other])
    assert [e["actor"] for e in served.lab.history([other]) if e["action"] == "lock"] == [BOB]


@pytest.mark.parametrize("interrupt", [False, True], ids=["sigterm", "ctrl-c"])
def test_the_server_stops_on_sigterm_and_ctrl_c(tmp_path, interrupt):
    """make lock-server, then SIGTERM to make (make passes it on) or SIGINT to the foreground group (Ctrl-C):
    gunicorn shuts down cleanly, its workers exit, nothing listens."""
    with LockServer(f"sqlite:///{tmp_path / 'lab.db'}") as server:
        started = time.monotonic()
        server.stop(interrupt=interrupt)
        assert time.monotonic() - started < 30
        assert "Shutting down: Master" in server.output(), server.output()
        with pytest.raises(ProcessLookupError):
            os.killpg(server.proc.pid, 0)  # no process of the group is left: make, gunicorn, its workers
        with pytest.raises(ConnectionRefusedError), served_client(server) as client:
            client.request("GET", "/nodes/machine_types/")


def served_client(server: LockServer) -> PaddlesClient:
    return PaddlesClient(server.url, timeout=5)


def test_a_database_that_fails_is_503_and_its_password_shows_nowhere():
    """teuthology retries a 503 (and logs it); the URL's password is neither in the answer nor in the server's log."""
    from support.pgserver import PASSWORD, free_port

    unreachable = f"postgresql+psycopg://lab:{PASSWORD}@127.0.0.1:{free_port()}/lab"
    with LockServer(unreachable) as server, served_client(server) as client:
        assert client.request("GET", "/nodes/") == (503, {"message": "encountered a DB error; please retry"})
        status, answer = client.lock_many(ALICE, 1, "smithi", None)
        assert status == 503 and PASSWORD not in json.dumps(answer)
        server.stop()
        assert "cannot use database postgresql+psycopg://lab:***@" in server.output()
        assert PASSWORD not in server.output()
