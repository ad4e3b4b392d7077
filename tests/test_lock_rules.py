"""Lock rules a review found wrong or unsaid, through real ansible-playbook
runs of the modules on SQLite and PostgreSQL: VM slots of another OS, more
held than asked for, leases, description filters, databases that do not
exist, two callers adding one node, SQLite without RETURNING."""

from __future__ import annotations

import subprocess
import threading

import pytest
import sqlalchemy as sa

from support.ansible_run import BIN, ansible_env, run_tasks, task
from support.seed import seed, snapshot

ALICE = "alice@laptop"
VPSHOST = "mira001.front.sepia.ceph.com"


def _timeless(node):
    return {k: v for k, v in node.items() if k not in ("locked_since", "lease_expires", "lock_token")}


def names_of(result):
    return [node["name"] for node in result["nodes"]]


def test_a_held_vm_of_another_os_is_not_already_held(db_url, lab):
    vps = seed(lab, "vps", 4, "vpm", vpshost=VPSHOST)
    ubuntu = {"os_type": "ubuntu", "os_version": "22.04"}
    centos = {"os_type": "centos", "os_version": "9.stream"}
    run = run_tasks(
        [
            task("lock", "ubuntu", db=db_url, count=2, machine_type="vps", description="run-1", owner=ALICE, **ubuntu),
            task("lock", "centos", db=db_url, count=2, machine_type="vps", description="run-1", owner=ALICE, **centos),
            task("lock", "ubuntu again", db=db_url, count=2, machine_type="vps", description="run-1", owner=ALICE, **ubuntu),
            task("lock", "rename to centos", db=db_url, names=[vps[0]], owner=ALICE, description="run-1", **centos),
            task("lock", "rename again", db=db_url, names=[vps[0]], owner=ALICE, description="run-1", **centos),
        ]
    )
    assert names_of(run.result("ubuntu")) == vps[:2]
    centos_run = run.result("centos")
    # The ubuntu VMs are not counted toward a centos request: two other slots, to install.
    assert centos_run["changed"] is True and centos_run["newly_locked"] == vps[2:]
    assert [(n["os_type"], n["os_version"]) for n in centos_run["nodes"]] == [("centos", "9.stream")] * 2
    assert run.result("ubuntu again")["changed"] is False and names_of(run.result("ubuntu again")) == vps[:2]

    # By name, a held VM of another OS is locked again for that OS: a VM to reinstall.
    renamed = run.result("rename to centos")
    assert renamed["changed"] is True and renamed["newly_locked"] == [vps[0]]
    assert (renamed["nodes"][0]["os_type"], renamed["nodes"][0]["os_version"]) == ("centos", "9.stream")
    assert run.result("rename again")["changed"] is False
    locks = [e for e in lab.history([vps[0]]) if e["action"] == "lock"]
    assert locks[-1]["details"] == {
        "description": "run-1",
        "lease_expires": None,
        "os_type": ["ubuntu", "centos"],
        "os_version": ["22.04", "9.stream"],
    }
    assert locks[0]["details"]["os_type"] == [None, "ubuntu"]


def test_holding_more_than_count_returns_every_held_node(db_url, lab):
    smithi = seed(lab, "smithi", 4)
    run = run_tasks(
        [
            task("lock", "three", db=db_url, count=3, machine_type="smithi", description="run-2", owner=ALICE),
            task("lock", "ask two", db=db_url, count=2, machine_type="smithi", description="run-2", owner=ALICE),
        ]
    )
    asked = run.result("ask two")
    assert asked["changed"] is False
    assert asked["locked"] == smithi[:3], "a held node left out would stay locked, invisible to the run"


@pytest.mark.parametrize("lease", ["366d", "52w"])
def test_the_longest_lease_is_accepted(db_url, lab, lease):
    seed(lab, "smithi", 1)
    run = run_tasks([task("lock", "lock", db=db_url, count=1, machine_type="smithi", owner=ALICE, lease=lease)])
    assert run.result("lock")["changed"] is True


def test_description_filter_is_a_case_sensitive_substring_on_both_databases(db_url, lab):
    smithi = seed(lab, "smithi", 3)
    lab.lock(owner=ALICE, names=[smithi[0]], description="Run-1234 nightly")
    lab.lock(owner=ALICE, names=[smithi[1]], description="run-1234 rerun")
    lab.lock(owner=ALICE, names=[smithi[2]], description="100% done_")
    run = run_tasks(
        [
            task("node_info", "lower", db=db_url, description="run-1234"),
            task("node_info", "upper", db=db_url, description="Run-1234"),
            task("node_info", "other case", db=db_url, description="RUN"),
            task("node_info", "wildcards are text", db=db_url, description="0% done_"),
            task("node_info", "percent alone", db=db_url, description="%"),
        ]
    )
    assert names_of(run.result("lower")) == [smithi[1]]
    assert names_of(run.result("upper")) == [smithi[0]]
    assert names_of(run.result("other case")) == []
    assert names_of(run.result("wildcards are text")) == [smithi[2]]
    assert names_of(run.result("percent alone")) == [smithi[2]]


def test_read_only_paths_never_create_a_sqlite_database(tmp_path):
    typo = tmp_path / "lab.bd"
    db = f"sqlite:///{typo}"
    run = run_tasks([task("node_info", "list", ignore_errors=True, db=db)])
    expected = f"db: no lab database at {typo}; lock or add a node to create it"
    assert run.result("list")["msg"] == expected
    assert not typo.exists()
    run = run_tasks(
        [
            task("lock", "check mode", ignore_errors=True, db=db, count=1, machine_type="smithi", owner=ALICE),
            task("node", "check mode add", ignore_errors=True, db=db, name="smithi001", machine_type="smithi"),
        ],
        "--check",
    )
    assert run.result("check mode")["msg"] == expected
    assert run.result("check mode add")["msg"] == expected
    assert not typo.exists()

    (tmp_path / "locks.yml").write_text(f"plugin: teuthology.lab.locks\ndb: {db}\n")
    proc = subprocess.run(
        [BIN / "ansible-inventory", "-i", tmp_path / "locks.yml", "--list"],
        env=ansible_env(ANSIBLE_INVENTORY_UNPARSED_FAILED="1"),
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode != 0 and expected in " ".join(proc.stderr.split()), proc.stderr
    assert not typo.exists()


def test_read_only_paths_never_create_the_tables_in_postgresql(pg_server):
    db = pg_server.create_database()
    run = run_tasks([task("node_info", "list", ignore_errors=True, db=db)])
    masked = db.replace(db.split(":")[2].split("@")[0], "***")
    assert run.result("list")["msg"] == f"db: no lab database at {masked} (no lab tables); lock or add a node to create it"
    run = run_tasks([task("node", "add", ignore_errors=True, db=db, name="smithi001", machine_type="smithi")], "--check")
    assert "no lab database" in run.result("add")["msg"]
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == []
    engine.dispose()


def test_two_callers_adding_one_node(db_url, lab):
    """The other caller's insert is in flight when ours runs; ours reports no change."""
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import nodes

    engine = sa.create_engine(lab.engine.url)
    conn = engine.connect()
    if lab.is_postgres:
        tx = conn.begin()
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    conn.execute(nodes.insert().values(name="smithi009", machine_type="smithi", up=True, locked=False))
    timer = threading.Timer(2.0, lambda: tx.commit() if lab.is_postgres else conn.exec_driver_sql("COMMIT"))
    timer.start()
    try:
        run = run_tasks([task("node", "add", db=db_url, name="smithi009", machine_type="smithi")])
    finally:
        timer.join()
        conn.close()
        engine.dispose()
    assert run.returncode == 0, run.output
    add = run.result("add")
    assert add["changed"] is False and add["node"]["machine_type"] == "smithi"
    assert len(lab.query(names=["smithi009"])) == 1


def test_sqlite_without_returning_keeps_the_rules(tmp_path):
    """SQLite before 3.35 (EL9's) has no UPDATE ... RETURNING; the engine then
    reads the rows again. Forced here on today's SQLite, same results."""
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab, LabError

    results = {}
    for returning in (True, False):
        lab = Lab(f"sqlite:///{tmp_path / f'lab-{returning}.db'}")
        lab.returning = returning
        names = seed(lab, "vps", 3, "vpm", vpshost=VPSHOST)
        steps = [
            lab.lock(owner=ALICE, count=2, machine_types=["vps"], os_type="ubuntu", description="run-1", lease="1h"),
            lab.lock(owner=ALICE, count=2, machine_types=["vps"], os_type="ubuntu", description="run-1"),
            lab.lock(owner=ALICE, names=[names[2]], os_type="centos"),
            lab.unlock(owner=ALICE, names=names[:2]),
        ]
        with pytest.raises(LabError, match="requested 4 vps nodes, 2 free"):
            lab.lock(owner=ALICE, count=4, machine_types=["vps"])
        results[returning] = [(first, [_timeless(node) for node in nodes]) for first, nodes, *_ in steps]
        assert [n["os_type"] for n in lab.query()] == ["ubuntu", "ubuntu", "centos"]
        assert snapshot(lab)[0][2]["locked_by"] == ALICE
        lab.close()
    assert results[False] == results[True]


def test_vm_names_that_collide_on_a_vpshost_are_refused(db_url, lab):
    """downburst destroy deletes every volume whose name starts with the VM's: no slot's
    short name on one vpshost may start with another's."""
    seed(lab, "vps", 1, "vpm", vpshost=VPSHOST)  # vpm001
    before = snapshot(lab)
    run = run_tasks(
        [
            task("node", "prefix of", ignore_errors=True, db=db_url, name="vpm00.front.sepia.ceph.com", machine_type="vps",
                 vpshost=VPSHOST),
            task("node", "starts with", ignore_errors=True, db=db_url, name="vpm001-2.front.sepia.ceph.com", machine_type="vps",
                 vpshost=VPSHOST),
            task("node", "same short name", ignore_errors=True, db=db_url, name="vpm001.other.example.com", machine_type="vps",
                 vpshost=VPSHOST),
        ]
    )
    for step, other in (("prefix of", "vpm00"), ("starts with", "vpm001-2"), ("same short name", "vpm001")):
        message = run.result(step)["msg"]
        assert message.startswith(f"name: the VM names {other} (") and "collide: downburst destroy of one deletes the volumes" in message
    assert snapshot(lab) == before
    run = run_tasks(
        [
            task("node", "other vpshost", db=db_url, name="vpm001-2.front.sepia.ceph.com", machine_type="vps", vpshost="mira002.front"),
            task("node", "moved onto it", ignore_errors=True, db=db_url, name="vpm001-2.front.sepia.ceph.com", vpshost=VPSHOST),
        ]
    )
    assert run.result("other vpshost")["changed"] is True
    assert "collide" in run.result("moved onto it")["msg"]
