"""The lock rules, through real ansible-playbook runs of the modules, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import socket

from support.ansible_run import run_tasks, task
from support.seed import seed, snapshot

ALICE = "alice@laptop"
BOB = "bob@desk"
NO_LEASE_ENDED_NO_VMS = {"expired": 0, "creating": 0, "running": 0, "destroying": 0, "failed": 0}


def test_lock_count_all_or_nothing_idempotent_and_unlock(db_url, lab):
    vps = seed(lab, "vps", 5, "vpm", vpshost="mira001.front.sepia.ceph.com")
    smithi = seed(lab, "smithi", 3)
    run = run_tasks(
        [
            task("lock", "first", db=db_url, count=2, machine_type="vps", os_type="ubuntu", os_version="22.04",
                 description="run-1", owner=ALICE, lease="4h"),
            task("lock", "again", db=db_url, count=2, machine_type="vps", description="run-1", owner=ALICE),
            task("lock", "too many", ignore_errors=True, db=db_url, count=4, machine_type="vps", description="run-2", owner=BOB),
            task("lock", "first type wins", db=db_url, count=3, machine_type="smithi,vps", owner=BOB, description="run-3"),
            task("lock", "falls through", db=db_url, count=2, machine_type=["smithi", "vps"], owner=BOB),
            task("lock", "none left", ignore_errors=True, db=db_url, count=2, machine_type="smithi,vps", owner=BOB),
        ]
    )
    first = run.result("first")
    assert first["changed"] is True
    assert first["locked"] == vps[:2]
    for node in first["nodes"]:
        assert (node["locked"], node["locked_by"], node["description"]) == (True, ALICE, "run-1")
        assert (node["os_type"], node["os_version"]) == ("ubuntu", "22.04")  # recorded for a VM slot
        expires = dt.datetime.fromisoformat(node["lease_expires"]) - dt.datetime.fromisoformat(node["locked_since"])
        assert expires == dt.timedelta(hours=4)
        assert set(node) >= {"name", "machine_type", "arch", "up", "vpshost", "ssh_pub_key", "mac_address", "ssh_host", "ssh_port"}

    again = run.result("again")
    assert again["changed"] is False and again["locked"] == vps[:2]

    too_many = run.result("too many")
    assert too_many["failed"] is True
    assert too_many["msg"] == "requested 4 vps nodes, 3 free"

    assert run.result("first type wins")["locked"] == smithi
    assert run.result("falls through")["locked"] == vps[2:4]
    assert run.result("none left")["msg"] == "requested 2 smithi nodes, 0 free; requested 2 vps nodes, 1 free"

    held = {node["name"]: node["locked_by"] for node in lab.query(locked=True)}
    assert held == {**dict.fromkeys(vps[:2], ALICE), **dict.fromkeys(smithi + vps[2:4], BOB)}

    run = run_tasks(
        [
            task("unlock", "not mine", ignore_errors=True, db=db_url, names=[vps[0], vps[2]], owner=BOB),
            task("unlock", "mine", db=db_url, names=[vps[2], vps[4]], owner=BOB),
            task("unlock", "forced", db=db_url, names=[vps[0]], owner=BOB, force=True),
            task("unlock", "all of alice", db=db_url, all=True, owner=ALICE),
            task("unlock", "all again", db=db_url, all=True, owner=ALICE),
        ]
    )
    not_mine = run.result("not mine")
    assert not_mine["failed"] is True
    assert f"node {vps[0]} is locked by {ALICE}" in not_mine["msg"]

    mine = run.result("mine")
    # All or none: the refused request left vps[2] locked; vps[4] was already free.
    assert mine["changed"] is True and mine["unlocked"] == [vps[2]]
    assert mine["nodes"][0]["locked_by"] == BOB  # as it was before unlocking
    assert run.result("forced")["unlocked"] == [vps[0]]
    alice = run.result("all of alice")
    assert alice["unlocked"] == [vps[1]] and alice["nodes"][0]["vpshost"] == "mira001.front.sepia.ceph.com"
    assert run.result("all again")["changed"] is False

    history = [(e["node"], e["action"], e["actor"]) for e in lab.history() if e["action"] in ("lock", "unlock")]
    assert history.count((vps[0], "lock", ALICE)) == 1
    assert (vps[0], "unlock", BOB) in history
    forced = next(e for e in lab.history([vps[0]]) if e["action"] == "unlock")
    assert forced["details"] == {"locked_by": ALICE, "forced": True}


def test_count_description_tops_up_what_the_owner_holds(db_url, lab):
    vps = seed(lab, "vps", 4, "vpm", vpshost="mira001.front.sepia.ceph.com")
    run = run_tasks(
        [
            task("lock", "two", db=db_url, count=2, machine_type="vps", description="run-9", owner=ALICE),
            task("unlock", "drop one", db=db_url, names=[vps[0]], owner=ALICE),
            task("lock", "converge", db=db_url, count=2, machine_type="vps", description="run-9", owner=ALICE),
            task("lock", "no description locks more", db=db_url, count=1, machine_type="vps", owner=ALICE),
        ]
    )
    assert run.result("two")["locked"] == vps[:2]
    converge = run.result("converge")
    assert converge["changed"] is True and converge["locked"] == vps[:2]  # vps[1] kept, vps[0] free again
    assert converge["newly_locked"] == [vps[0]]
    assert run.result("no description locks more")["locked"] == [vps[2]]


def test_lock_names(db_url, lab):
    names = seed(lab, "smithi", 5)
    lab.set_node(names[3], {"up": False}, actor="admin@lab")
    run = run_tasks(
        [
            task("lock", "lock two", db=db_url, names=names[:2], owner=ALICE, description="by name"),
            task("lock", "same again", db=db_url, names=names[:2], owner=ALICE),
            task("lock", "one held one free", db=db_url, names=names[1:3], owner=ALICE),
            task("lock", "held by alice", ignore_errors=True, db=db_url, names=[names[0]], owner=BOB),
            task("lock", "down", ignore_errors=True, db=db_url, names=[names[3]], owner=BOB),
            task("lock", "wrong os", ignore_errors=True, db=db_url, names=[names[4]], owner=BOB, os_type="centos"),
            task("lock", "wrong arch", ignore_errors=True, db=db_url, names=[names[4]], owner=BOB, arch="aarch64"),
            task("lock", "comma separated", db=db_url, names=f"{names[0]},{names[1]}", owner=ALICE),
        ]
    )
    assert run.result("lock two")["changed"] is True
    assert run.result("same again")["changed"] is False
    assert run.result("one held one free")["changed"] is True
    assert run.result("held by alice")["msg"] == f"names: node {names[0]} is locked by {ALICE}"
    assert run.result("down")["msg"] == f"names: node {names[3]} is down"
    assert run.result("wrong os")["msg"] == f"names: node {names[4]} has no os_type, not centos"
    assert run.result("wrong arch")["msg"] == f"names: node {names[4]} has arch x86_64, not aarch64"
    assert run.result("comma separated")["locked"] == names[:2]
    assert [n["name"] for n in lab.query(locked=True)] == names[:3]


def test_check_mode_reports_and_changes_nothing(db_url, lab):
    names = seed(lab, "smithi", 3)
    lab.lock(owner=ALICE, names=[names[2]])
    before = snapshot(lab)
    run = run_tasks(
        [
            task("lock", "lock", db=db_url, count=2, machine_type="smithi", owner=BOB),
            task("unlock", "unlock", db=db_url, names=[names[2]], owner=ALICE),
            task("node", "add", db=db_url, name="new001", machine_type="smithi"),
            task("node", "down", db=db_url, name=names[0], up=False),
            task("node", "remove", db=db_url, name=names[1], state="absent"),
        ],
        "--check",
    )
    assert run.returncode == 0, run.output
    assert run.result("lock")["changed"] is True and run.result("lock")["locked"] == names[:2]
    assert run.result("unlock")["changed"] is True
    assert run.result("add")["changed"] is True and run.result("add")["node"]["name"] == "new001"
    assert run.result("down")["node"]["up"] is False
    assert run.result("remove")["changed"] is True
    assert snapshot(lab) == before

    # check mode -> real -> check mode: changed, changed, not changed
    runs = [run_tasks([task("lock", "lock", db=db_url, names=names[:2], owner=BOB)], *flags) for flags in (["--check"], [], ["--check"])]
    assert [r.result("lock")["changed"] for r in runs] == [True, True, False]


def test_node_module_add_change_keys_remove(db_url, lab):
    ed25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@vpm001"
    run = run_tasks(
        [
            task("node", "add", db=db_url, name="vpm001.front", machine_type="vps", vpshost="mira001.front",
                 mac_address="52:54:00:AA:bb:01", ssh_host="127.0.0.1", ssh_port=2222, owner="admin@lab"),
            task("node", "same", db=db_url, name="vpm001.front", machine_type="vps", vpshost="mira001.front"),
            task("node", "key", db=db_url, name="vpm001.front", ssh_pub_key=ed25519),
            task("node", "down", db=db_url, name="vpm001.front", up=False),
            task("node", "clear port", db=db_url, name="vpm001.front", ssh_port=""),
        ],
        "--diff",
    )
    assert run.returncode == 0, run.output
    added = run.result("add")["node"]
    assert (added["up"], added["locked"], added["mac_address"], added["ssh_port"]) == (True, False, "52:54:00:aa:bb:01", 2222)
    assert run.result("same")["changed"] is False
    assert run.result("key")["node"]["ssh_pub_key"] == ed25519.rsplit(" ", 1)[0]  # comment dropped
    assert run.result("down")["diff"]["before"]["up"] is True
    assert run.result("clear port")["node"]["ssh_port"] is None
    actions = [e["action"] for e in lab.history(["vpm001.front"])]
    assert actions == ["add", "key", "down", "update"]

    lab.set_node("vpm001.front", {"up": True}, actor="admin@lab")
    lab.lock(owner=ALICE, names=["vpm001.front"])
    run = run_tasks(
        [
            task("node", "remove locked", ignore_errors=True, db=db_url, name="vpm001.front", state="absent"),
            task("node", "force", db=db_url, name="vpm001.front", state="absent", force=True),
            task("node", "gone", db=db_url, name="vpm001.front", state="absent"),
        ]
    )
    assert run.result("remove locked")["msg"] == f"name: node vpm001.front is locked by {ALICE}; unlock it first or use force: true"
    assert run.result("force")["changed"] is True and run.result("force")["node"] is None
    assert run.result("gone")["changed"] is False
    assert lab.query() == []
    # The history outlives the node, and says the forced removal freed a lock.
    last = lab.history(["vpm001.front"])[-3:]
    assert [e["action"] for e in last] == ["lock", "unlock", "remove"]
    assert last[1]["details"] == {"locked_by": ALICE, "forced": True}


def test_node_info_filters_and_summary(db_url, lab):
    vps = seed(lab, "vps", 3, "vpm", vpshost="mira001.front")
    seed(lab, "vps", 1, "vpx", vpshost="mira002.front")
    smithi = seed(lab, "smithi", 2)
    lab.set_node(smithi[1], {"up": False}, actor="admin@lab")
    lab.lock(owner=ALICE, names=vps[:2], description="teuthology-2026-11-25_run")
    run = run_tasks(
        [
            task("node_info", "all", db=db_url),
            task("node_info", "owner", db=db_url, owner=ALICE),
            task("node_info", "free vps", db=db_url, machine_type="vps", locked=False, up=True),
            task("node_info", "vpshost", db=db_url, vpshost="mira002.front"),
            task("node_info", "description", db=db_url, description="2026-11-25_r", history=True),
            task("node_info", "like is escaped", db=db_url, description="2026_11"),
            task("node_info", "down", db=db_url, up=False),
            task("node_info", "names", db=db_url, names=[smithi[0], vps[0]]),
        ]
    )
    assert run.result("all")["summary"] == {
        "smithi": {"total": 2, "up": 1, "locked": 0, "free": 1, **NO_LEASE_ENDED_NO_VMS},
        "vps": {"total": 4, "up": 4, "locked": 2, "free": 2, **NO_LEASE_ENDED_NO_VMS},
    }
    assert run.result("all")["changed"] is False
    assert [n["name"] for n in run.result("owner")["nodes"]] == vps[:2]
    assert [n["name"] for n in run.result("free vps")["nodes"]] == [vps[2], "vpx001.front.sepia.ceph.com"]
    assert [n["name"] for n in run.result("vpshost")["nodes"]] == ["vpx001.front.sepia.ceph.com"]
    described = run.result("description")
    assert [n["name"] for n in described["nodes"]] == vps[:2]
    assert {(e["node"], e["action"]) for e in described["events"]} == {(v, a) for v in vps[:2] for a in ("add", "lock")}
    assert run.result("like is escaped")["nodes"] == []
    assert [n["name"] for n in run.result("down")["nodes"]] == [smithi[1]]
    assert [n["name"] for n in run.result("names")["nodes"]] == sorted([smithi[0], vps[0]])


def test_module_defaults_group_sets_db_once(db_url, lab):
    names = seed(lab, "smithi", 2)
    run = run_tasks(
        [task("lock", "lock", count=2, machine_type="smithi", owner=ALICE), task("node_info", "info", locked=True)],
        module_defaults={"group/teuthology.lab.lab": {"db": db_url}},
    )
    assert run.result("lock")["locked"] == names
    assert [n["name"] for n in run.result("info")["nodes"]] == names


def test_db_and_owner_from_environment_and_defaults(tmp_path, pg_server):
    db = pg_server.create_database()
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

    seed(Lab(db), "smithi", 3)
    run = run_tasks(
        [task("lock", "env", count=1, machine_type="smithi")],
        env={"TEUTHOLOGY_LAB_DB": db, "TEUTHOLOGY_LAB_OWNER": "carol@awx"},
    )
    assert run.result("env")["nodes"][0]["locked_by"] == "carol@awx"

    # No db anywhere: the embedded SQLite file under the user's home, its directory created.
    home = tmp_path / "home"
    home.mkdir()
    run = run_tasks(
        [
            task("node", "add", name="smithi001", machine_type="smithi"),
            task("lock", "default owner", count=1, machine_type="smithi"),
        ],
        env={"HOME": str(home), "USER": "dave", "LOGNAME": "dave"},
    )
    assert run.returncode == 0, run.output
    assert run.result("default owner")["nodes"][0]["locked_by"] == f"dave@{socket.gethostname()}"
    assert (home / ".local/share/teuthology-lab/lab.db").is_file()
